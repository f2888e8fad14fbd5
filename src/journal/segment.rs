//! Writing segments: the newest segment's buffer and file, rotation, the failed state with its
//! retry schedule and recovery from memory, and deleting what every sink has confirmed.

use std::{
    collections::{HashMap, VecDeque},
    fs::{self, File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use tracing::{error, info, warn};

use super::{
    format::{self, Record, Shape},
    io, JournalError, Options, RETRY_MAX,
};
use crate::reading::Reading;

/// Encoded records are handed to the file once this many bytes wait.
pub(super) const WRITE_CHUNK: usize = 64 << 10;

#[derive(Debug)]
pub(super) struct Segment {
    pub(super) first: u64,
    pub(super) path: PathBuf,
    /// Bytes in it, including records still in the writer's buffer.
    pub(super) bytes: u64,
    /// The earliest sampling time in it (for the age of a backlog without reading the file).
    pub(super) oldest_ts: Option<SystemTime>,
}

/// The newest segment, being written.
#[derive(Debug)]
pub(super) struct Writer {
    /// Shared so `sync` can fsync it outside the lock without a second descriptor.
    pub(super) file: Arc<File>,
    pub(super) path: PathBuf,
    /// Encoded records not yet handed to the file.
    pub(super) buf: Vec<u8>,
    /// The position after the last record in `buf`.
    pub(super) buf_upto: u64,
    /// The shapes written to this segment, by meter: `(id, shape)`. Looked up by the reading's
    /// meter, then compared (`Arc` pointers first: a reading's names are the profile's), so a
    /// known shape costs no allocation and no hashing of every quantity name.
    pub(super) shapes: HashMap<Arc<str>, Vec<(u32, Shape)>>,
    /// The distinct quantity lists of those shapes, each kept once (a profile's point group
    /// names the same quantities for every meter): 0.5 KB per SDM630 meter when each shape had
    /// its own. Few enough to search in order.
    pub(super) lists: Vec<Arc<[Arc<str>]>>,
    pub(super) shape_count: u32,
    /// Bytes the file accepted, and how many of them are the header.
    pub(super) len: u64,
    pub(super) head: u64,
    /// Bytes known to be on the medium (fsynced): the group commit skips an fsync that would
    /// have nothing to do (an idle gateway, flash that need not be flushed every second).
    pub(super) synced: u64,
}

/// The disk refused a write: readings are kept in memory until a retry succeeds.
#[derive(Debug)]
pub(super) struct Failed {
    pub(super) reason: String,
    pub(super) retry_at: Instant,
    pub(super) wait: Duration,
    /// Readings dropped from memory during this outage (for the recovery's log line).
    pub(super) dropped: u64,
}

#[derive(Debug)]
pub(super) struct Disk {
    pub(super) dir: PathBuf,
    pub(super) segments: VecDeque<Segment>,
    /// None exactly while `failed` is set.
    pub(super) writer: Option<Writer>,
    /// The first position not yet handed to a segment file (everything from here on is in
    /// the writer's buffer or only in memory).
    pub(super) written_upto: u64,
    pub(super) opts: Options,
    pub(super) failed: Option<Failed>,
    /// When the group commit next replaces moved cursor files (`None`: at the next one).
    pub(super) cursors_due: Option<Instant>,
}

pub(super) fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.seg"))
}

pub(super) use crate::contract::unix_ms as ts_ms;

impl Disk {
    pub(super) fn total(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Enter (or stay in) the failed state. True when this starts an outage (log it then);
    /// a failed retry only moves the next attempt further away.
    pub(super) fn fail(&mut self, now: Instant, reason: String) -> bool {
        self.close_writer();
        match self.failed.as_mut() {
            Some(f) => {
                f.wait = (f.wait * 2).min(RETRY_MAX);
                f.retry_at = now + f.wait;
                f.reason = reason;
                false
            }
            None => {
                let wait = self.opts.retry.min(RETRY_MAX);
                self.failed = Some(Failed {
                    reason,
                    retry_at: now + wait,
                    wait,
                    dropped: 0,
                });
                true
            }
        }
    }

    /// The disk refused a write: enter the failed state, and say so when it starts an outage.
    pub(super) fn refused(&mut self, now: Instant, why: String) {
        if self.fail(now, why.clone()) {
            error!(error = %why, "journal cannot write: readings are kept in memory only until it can");
        }
    }

    /// Stop writing the current segment: cut it back to what the file accepted (a partial
    /// record never stays), and forget it if it holds no reading.
    pub(super) fn close_writer(&mut self) {
        let Some(w) = self.writer.take() else { return };
        if let Some(s) = self.segments.back_mut().filter(|s| s.path == w.path) {
            s.bytes = w.len;
        }
        if w.len <= w.head {
            let _ = fs::remove_file(&w.path);
            if self.segments.back().is_some_and(|s| s.path == w.path) {
                self.segments.pop_back();
            }
        } else if let Err(e) = w.file.set_len(w.len) {
            warn!(segment = %w.path.display(), error = %e, "cannot cut back a segment after a failed write; readers skip the damage");
        }
    }

    /// Hand the buffer to the file. On an error the caller fails the disk.
    pub(super) fn flush(&mut self) -> Result<(), String> {
        let Some(w) = self.writer.as_mut() else {
            return Ok(());
        };
        if w.buf.is_empty() {
            return Ok(());
        }
        match (&*w.file).write_all(&w.buf) {
            Ok(()) => {
                w.len += w.buf.len() as u64;
                w.buf.clear();
                self.written_upto = self.written_upto.max(w.buf_upto);
                Ok(())
            }
            Err(e) => Err(format!("{}: {e}", w.path.display())),
        }
    }

    pub(super) fn start_segment(
        &mut self,
        first: u64,
        seqs: &HashMap<Arc<str>, u64>,
    ) -> Result<(), JournalError> {
        let path = segment_path(&self.dir, first);
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        let mut head = format::FILE_HEADER.to_vec();
        head.extend(Record::Seqs(seqs.iter().map(|(m, s)| (m.clone(), *s)).collect()).encode());
        if let Err(e) = (&file).write_all(&head) {
            // No empty or half-written files left behind by a failed attempt.
            drop(file);
            let _ = fs::remove_file(&path);
            return Err(io(&path)(e));
        }
        self.writer = Some(Writer {
            file: Arc::new(file),
            path: path.clone(),
            buf: Vec::with_capacity(WRITE_CHUNK),
            buf_upto: first,
            shapes: HashMap::new(),
            lists: Vec::new(),
            shape_count: 0,
            len: head.len() as u64,
            head: head.len() as u64,
            synced: 0,
        });
        self.segments.push_back(Segment {
            first,
            path,
            bytes: head.len() as u64,
            oldest_ts: None,
        });
        Ok(())
    }

    /// Encode one reading into the newest segment (starting the next one when it is full).
    /// A refusal puts the disk in the failed state (logged when it starts an outage).
    pub(super) fn encode(&mut self, pos: u64, r: &Reading, seqs: &HashMap<Arc<str>, u64>) {
        if let Err(why) = self.try_encode(pos, r, seqs) {
            self.refused(Instant::now(), why);
        }
    }

    pub(super) fn try_encode(
        &mut self,
        pos: u64,
        r: &Reading,
        seqs: &HashMap<Arc<str>, u64>,
    ) -> Result<(), String> {
        let full = self
            .segments
            .back()
            .is_some_and(|s| s.bytes >= self.opts.segment_size);
        if full || self.writer.is_none() {
            self.flush()?;
            if let Some(w) = self.writer.as_ref() {
                // The finished segment is fsynced before the next one starts.
                w.file
                    .sync_data()
                    .map_err(|e| format!("{}: fsync: {e}", w.path.display()))?;
            }
            self.writer = None;
            self.start_segment(pos, seqs).map_err(|e| e.to_string())?;
        }
        let Some(w) = self.writer.as_mut() else {
            return Err("no segment to write".into());
        };
        let before = w.buf.len();
        let known = w.shapes.get(&r.meter).and_then(|known| {
            known
                .iter()
                .find(|(_, s)| s.describes(r))
                .map(|(id, _)| *id)
        });
        let id = match known {
            Some(id) => id,
            None => {
                let id = w.shape_count;
                w.shape_count += 1;
                let quantities = match w.lists.iter().find(|l| format::names(l, r)) {
                    Some(l) => l.clone(),
                    None => {
                        let l = r.values.names().clone();
                        w.lists.push(l.clone());
                        l
                    }
                };
                let shape = Shape {
                    meter: r.meter.clone(),
                    bus: r.bus.clone(),
                    profile: r.profile.clone(),
                    quantities,
                };
                w.buf.extend(Record::Shape(id, shape.clone()).encode());
                let known = w.shapes.entry(r.meter.clone()).or_default();
                // A meter has a shape or two (one per point group): grown one at a time,
                // not to Vec's first four (72 bytes each, 288 KB at 2,000 meters).
                known.reserve_exact(1);
                known.push((id, shape));
                id
            }
        };
        format::encode_reading(
            &mut w.buf,
            pos,
            id,
            ts_ms(r.ts),
            r.seq,
            r.on_demand,
            r.values.nums().iter().copied(),
        );
        w.buf_upto = pos + 1;
        let added = (w.buf.len() - before) as u64;
        let flush_now = w.buf.len() >= WRITE_CHUNK;
        if let Some(s) = self.segments.back_mut() {
            s.bytes += added;
            s.oldest_ts = Some(s.oldest_ts.map_or(r.ts, |o| o.min(r.ts)));
        }
        if flush_now {
            self.flush()?;
        }
        Ok(())
    }

    /// Try the disk again: a new segment with every reading still held only in memory.
    /// Logs the recovery once; a failure only moves the next attempt further away.
    pub(super) fn resume(
        &mut self,
        now: Instant,
        cache: &VecDeque<Arc<Reading>>,
        cache_first: u64,
        next: u64,
        seqs: &HashMap<Arc<str>, u64>,
    ) {
        let from = self.written_upto.max(cache_first).min(next);
        self.written_upto = from;
        if let Err(e) = self.start_segment(from, seqs) {
            self.fail(now, e.to_string());
            return;
        }
        let skip = (from - cache_first) as usize;
        for (i, r) in cache.iter().enumerate().skip(skip) {
            if let Err(why) = self.try_encode(cache_first + i as u64, r, seqs) {
                self.fail(now, why);
                return;
            }
        }
        if let Err(why) = self.flush() {
            self.fail(now, why);
            return;
        }
        if let Some(f) = self.failed.take() {
            info!(
                written_from_memory = next - from,
                dropped = f.dropped,
                "journal writes again: the readings kept in memory are in it now"
            );
        }
    }

    /// Delete segments every cursor is past (never the one being written).
    pub(super) fn delete_delivered(&mut self, min_cursor: u64) {
        while self.segments.len() > 1
            && self
                .segments
                .get(1)
                .is_some_and(|next| next.first <= min_cursor)
        {
            if let Some(old) = self.segments.pop_front() {
                if let Err(e) = fs::remove_file(&old.path) {
                    warn!(segment = %old.path.display(), error = %e, "cannot delete a delivered segment");
                }
            }
        }
    }
}
