//! The journal's state under its lock: recent readings in memory (bounded in bytes), the
//! cursors, and what happens to readings that leave memory or disk: released once delivered,
//! dropped and counted when memory or the disk bound runs out, gaps remembered.

use std::{
    collections::{HashMap, VecDeque},
    fs,
    sync::Arc,
    time::Instant,
};

use tracing::error;

use super::{footprint, segment::Disk};
use crate::reading::Reading;

#[derive(Debug)]
pub(super) struct CursorState {
    pub(super) name: String,
    pub(super) pos: u64,
    pub(super) persisted: Option<u64>,
    pub(super) dropped: u64,
    /// A released cursor (its sink was removed by a reload) holds nothing back.
    pub(super) active: bool,
    /// The end of what the sink last took ([`super::Journal::take`]): readings it may have
    /// sent and be waiting to hear about.
    pub(super) taken: u64,
    /// Readings let go while the sink had them in flight: they count as dropped only if the
    /// sink gives them up (takes again from below them, see `took`); a confirmation clears
    /// them.
    pub(super) in_flight_lost: Vec<(u64, u64)>,
}

impl CursorState {
    pub(super) fn new(name: &str, pos: u64, persisted: Option<u64>) -> CursorState {
        CursorState {
            name: name.to_string(),
            pos,
            persisted,
            dropped: 0,
            active: true,
            taken: pos,
            in_flight_lost: Vec::new(),
        }
    }

    /// The far end confirmed everything before `upto`: readings in flight there arrived.
    pub(super) fn confirmed(&mut self, upto: u64) {
        self.in_flight_lost.retain_mut(|(a, b)| {
            *a = (*a).max(upto);
            a < b
        });
    }

    /// The sink takes readings from `pos` on, up to `most`: while the read runs, all of them
    /// count as in flight.
    pub(super) fn takes_from(&mut self, most: u64) {
        self.taken = most;
    }

    /// The take from `pos` returned `got`. What was let go from `pos` on and is not among it
    /// is dropped: it went before this read, or the sink gave it up by taking again from
    /// below it (a new connection, a failed write). What was let go below `pos` is still in
    /// flight. (A position let go is never read again, so only one let go during the read can
    /// be in `got`.)
    pub(super) fn took(&mut self, pos: u64, got: &[(u64, Arc<Reading>)]) {
        let mut kept: Vec<(u64, u64)> = Vec::new();
        for (a, b) in std::mem::take(&mut self.in_flight_lost) {
            if b <= pos {
                kept.push((a, b));
                continue;
            }
            if a < pos {
                kept.push((a, pos));
            }
            let a = a.max(pos);
            let (lo, hi) = (
                got.partition_point(|r| r.0 < a),
                got.partition_point(|r| r.0 < b),
            );
            self.dropped += (b - a) - (hi - lo) as u64;
            for (p, _) in &got[lo..hi] {
                push_merged(&mut kept, *p, p + 1);
            }
        }
        self.in_flight_lost = kept;
        self.taken = got.last().map_or(pos, |r| r.0 + 1);
    }
}

/// Add `a..b` to ranges kept in order, joined to the last one when they touch.
fn push_merged(ranges: &mut Vec<(u64, u64)>, a: u64, b: u64) {
    match ranges.last_mut() {
        Some(last) if last.1 == a => last.1 = b,
        _ => ranges.push((a, b)),
    }
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) next: u64,
    /// Readings `cache_first..next`, consecutive.
    pub(super) cache: VecDeque<Arc<Reading>>,
    pub(super) cache_first: u64,
    /// Their [`footprint`], bounded by `memory_max` (but the newest is always kept).
    pub(super) cache_bytes: usize,
    pub(super) memory_max: usize,
    pub(super) cursors: Vec<CursorState>,
    pub(super) seqs: HashMap<Arc<str>, u64>,
    pub(super) disk: Option<Disk>,
    /// Positions that will never be read: dropped while only in memory. Kept so that a
    /// segment deleted later does not count them again.
    pub(super) holes: Vec<(u64, u64)>,
    /// Set when the journal could not be opened at all (memory only for this run).
    pub(super) open_failure: Option<String>,
    pub(super) unjournaled: u64,
}

impl Inner {
    /// The oldest position still held (on disk or in memory).
    pub(super) fn oldest(&self) -> u64 {
        match &self.disk {
            Some(d) => d
                .segments
                .front()
                .map_or(self.cache_first, |s| s.first.min(self.cache_first)),
            None => self.cache_first,
        }
    }

    /// How many positions in `from..to` are gaps.
    pub(super) fn holes_within(&self, from: u64, to: u64) -> u64 {
        self.holes
            .iter()
            .map(|&(a, b)| b.min(to).saturating_sub(a.max(from)))
            .sum()
    }

    /// Delete what every active sink has confirmed, on disk and in memory.
    pub(super) fn release_delivered(&mut self) {
        let min = self
            .cursors
            .iter()
            .filter(|c| c.active)
            .map(|c| c.pos)
            .min()
            .unwrap_or(self.next);
        if let Some(d) = self.disk.as_mut() {
            d.delete_delivered(min);
        }
        // Readings every sink has confirmed need no memory.
        while self.cache_first < min {
            let Some(r) = self.cache.pop_front() else {
                break;
            };
            self.cache_bytes -= footprint(&r);
            self.cache_first += 1;
        }
        let oldest = self.oldest();
        self.holes.retain(|&(_, b)| b > oldest);
    }

    /// Keep the memory within its bound. A reading already in a segment file just leaves
    /// memory; one that is not (the disk refuses writes, or there is no disk) is dropped and
    /// counted for every sink that had not delivered it.
    pub(super) fn trim_memory(&mut self) {
        while self.cache_bytes > self.memory_max && self.cache.len() > 1 {
            let p = self.cache_first;
            let on_disk = match self.disk.as_mut() {
                Some(d) => {
                    if p >= d.written_upto && d.failed.is_none() {
                        // Still in the write buffer: hand it to the file first.
                        if let Err(why) = d.flush() {
                            d.refused(Instant::now(), why);
                        }
                    }
                    p < d.written_upto
                }
                None => false,
            };
            let Some(r) = self.cache.pop_front() else {
                break;
            };
            self.cache_bytes -= footprint(&r);
            self.cache_first += 1;
            if !on_disk {
                self.lose(p, p + 1);
            }
        }
    }

    /// Positions `from..to`, held nowhere, are lost: count them for every active sink that
    /// had not delivered them (those a sink has in flight once it gives them up), move cursors
    /// out of the gap, remember the gap.
    pub(super) fn lose(&mut self, from: u64, to: u64) {
        let mut needed = false;
        for c in self.cursors.iter_mut().filter(|c| c.active && c.pos < to) {
            needed = true;
            // What the sink has in flight is counted only if it never gets confirmed.
            let start = c.pos.max(from);
            let in_flight = c.taken.clamp(start, to);
            if in_flight > start {
                push_merged(&mut c.in_flight_lost, start, in_flight);
            }
            c.dropped += to - in_flight;
            // Out of the gap, but not past what is in flight: a sink that starts again from
            // its cursor gives those up, and they are counted then.
            if c.pos >= from && in_flight == start {
                c.pos = to;
            }
        }
        match self.holes.last_mut() {
            Some(last) if last.1 == from => last.1 = to,
            _ => self.holes.push((from, to)),
        }
        let mut first_drop = false;
        if let Some(d) = self.disk.as_mut() {
            d.written_upto = d.written_upto.max(to);
            if let Some(f) = d.failed.as_mut() {
                first_drop = needed && f.dropped == 0;
                if needed {
                    f.dropped += to - from;
                }
            }
        } else if needed && self.holes.len() == 1 && self.holes[0] == (from, to) {
            first_drop = true;
        }
        if first_drop {
            error!(
                memory_bytes = self.memory_max,
                "journal cannot be written and its memory is full: the oldest readings held only in memory are dropped (counted per sink in meterd_sink_dropped_total)"
            );
        }
    }

    /// Everything before `first` is gone from disk: move cursors up, count what they lose
    /// (gaps already counted are not counted again).
    pub(super) fn drop_before(&mut self, first: u64) {
        let lost: Vec<(usize, u64)> = self
            .cursors
            .iter()
            .enumerate()
            .filter(|(_, c)| c.pos < first)
            .map(|(i, c)| (i, first - c.pos - self.holes_within(c.pos, first)))
            .collect();
        for (i, lost) in lost {
            let c = &mut self.cursors[i];
            c.dropped += lost;
            if lost > 0 {
                error!(sink = %c.name, lost, dropped_total = c.dropped, "journal full: oldest undelivered readings dropped");
            }
            c.pos = first;
        }
    }

    pub(super) fn enforce_size(&mut self) {
        let Some(d) = self.disk.as_mut() else { return };
        let mut dropped_to = None;
        while d.total() > d.opts.max_size && d.segments.len() > 1 {
            let Some(old) = d.segments.pop_front() else {
                break;
            };
            let _ = fs::remove_file(&old.path);
            dropped_to = d.segments.front().map(|s| s.first);
        }
        if let Some(first) = dropped_to {
            self.drop_before(first);
        }
    }
}
