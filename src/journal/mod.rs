//! The journal: every reading is appended here before any sink sees it, and leaves only when
//! every sink's far end confirmed it.
//!
//! # Layout
//! `{state_dir}/journal/` holds segment files `{first position:020}.seg` (record format in
//! [`format`]) and one cursor file per sink, `{sink}.cursor`.
//!
//! # Invariants
//! - A reading gets the next *position* (a u64 that only grows) when appended; the position is
//!   stored in the record, so skipping a damaged record leaves a gap, never shifts others.
//! - Appends are encoded into the newest segment's buffer, handed to the file when it holds
//!   64 KiB, and at `sync()` (every `journal.fsync`, and at a clean stop), which also fsyncs.
//!   That interval bounds the loss at power failure; a clean stop loses nothing.
//! - Recent readings are also kept in memory (bounded in bytes by `Options::memory`), so sinks
//!   that keep up never read the disk. A reading that is not yet in a segment file is never
//!   evicted from memory without being counted as dropped for every sink that still needed it.
//! - When the disk refuses a write (full, read-only, I/O error) the segment is cut back to what
//!   it held, the failure is logged once, and readings live in memory only. Nothing is tried
//!   per reading: `sync()` tries again with back-off (1 s doubling to 30 s); when a segment can
//!   be written again, every reading still in memory goes into it, and the recovery is logged
//!   once. If memory fills first, the oldest readings held only in memory are dropped: counted
//!   per sink, logged at ERROR once per outage, and the positions become a gap that cursors and
//!   readers step over (they never wait for a reading that will not come).
//! - Each sink reads at its own cursor and moves it only by `ack` (far end confirmed). Cursor
//!   files are replaced atomically (write, fsync, rename) at `sync()`; after a crash a cursor
//!   may be behind, so readings may be delivered twice, never skipped.
//! - A segment is deleted once every cursor is past it. When the segments exceed
//!   `journal.max_size`, the oldest is deleted even if undelivered: counted per sink and
//!   logged at ERROR.
//! - Opening never fails on damaged data: a torn or zero-filled tail of the newest segment is
//!   truncated and reported; a damaged record elsewhere is skipped with its segment and offset
//!   logged. Each run starts a new segment, so a damaged file is never appended to.
//! - A cursor file that is missing or unreadable starts the sink at the oldest reading (send
//!   again rather than lose); one past the end is clamped to the end.

pub mod commit;
mod cursor;
pub mod format;
mod memory;
mod reader;
mod recover;
mod segment;

use std::{
    collections::{HashMap, VecDeque},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::reading::Reading;
use cursor::{read_cursor, write_cursor};
use memory::{CursorState, Inner};
use reader::ReadState;
use segment::Disk;

/// A sink's handle on the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorId(usize);

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The thread doing the write died (a panic where panics unwind).
    #[error("journal writer task failed: {0}")]
    Task(String),
}

pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub max_size: u64,
    pub segment_size: u64,
    /// Bytes of readings kept in memory: recent ones for sinks that keep up (older ones are
    /// read from disk), and those the disk could not take (see the module doc).
    pub memory: usize,
    /// The first wait before a disk that refused a write is tried again; it doubles up to
    /// [`RETRY_MAX`].
    pub retry: Duration,
    /// How often the group commit replaces moved cursor files (`journal.cursor_sync`); a
    /// clean stop always does. A power failure can only make a sink send again what it
    /// delivered in the last interval, never skip anything.
    pub cursor_every: Duration,
}

/// The longest wait between attempts to write to a disk that refused.
pub const RETRY_MAX: Duration = Duration::from_secs(30);

impl Options {
    pub fn new(max_size: u64, memory: usize) -> Options {
        Options {
            max_size,
            segment_size: (max_size / 8).clamp(64 << 10, 16 << 20),
            memory,
            retry: Duration::from_secs(1),
            cursor_every: DEFAULT_CURSOR_SYNC,
        }
    }
}

/// The default `journal.cursor_sync`.
pub const DEFAULT_CURSOR_SYNC: Duration = Duration::from_secs(5);

/// What a reading costs in memory, as the journal counts it: the shared block with the
/// reading, and its values (quantity names are shared among readings of a point group). A
/// few allocator words are included, so the bound holds in resident memory too. On 64-bit,
/// 160 bytes and 8 a value: 224 for 8 values (344 when each value carried its name).
pub fn footprint(r: &Reading) -> usize {
    const ALLOC: usize = 16;
    2 * std::mem::size_of::<usize>()
        + std::mem::size_of::<Reading>()
        + ALLOC
        + r.values.heap_bytes()
        + ALLOC
}

/// What opening found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct OpenReport {
    pub segments: usize,
    pub readings: u64,
    pub truncated_bytes: u64,
    pub skipped_regions: usize,
}

#[derive(Debug)]
pub struct Journal {
    inner: Mutex<Inner>,
    readers: Mutex<HashMap<u64, ReadState>>,
    appended: Notify,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Journal {
    /// A journal that lives in memory only, bounded to `memory` bytes of readings.
    pub fn memory(memory: usize) -> Journal {
        Journal::with(None, memory, 0)
    }

    /// The stand-in when the journal directory cannot be used: memory only, and `failure()`
    /// says why, so the state is visible and alertable rather than a crash loop.
    pub fn unavailable(memory: usize, why: String) -> Journal {
        let j = Journal::with(None, memory, 0);
        j.lock().open_failure = Some(why);
        j
    }

    fn with(disk: Option<Disk>, memory_max: usize, next: u64) -> Journal {
        Journal {
            inner: Mutex::new(Inner {
                next,
                cache_first: next,
                cache: VecDeque::new(),
                cache_bytes: 0,
                memory_max,
                cursors: Vec::new(),
                seqs: HashMap::new(),
                disk,
                holes: Vec::new(),
                open_failure: None,
                unjournaled: 0,
            }),
            readers: Mutex::new(HashMap::new()),
            appended: Notify::new(),
        }
    }

    /// Open (or create) the journal in `dir`, recovering from whatever a crash left. A
    /// directory that can be read but not written (a full disk) opens: readings are kept in
    /// memory until it can be written (see the module doc).
    pub fn open(dir: &Path, opts: Options) -> Result<(Journal, OpenReport), JournalError> {
        let (segments, next, seqs, mut report) = recover::recover(dir)?;
        report.segments = segments.len();
        let disk = Disk {
            dir: dir.to_path_buf(),
            segments,
            writer: None,
            written_upto: next,
            opts: opts.clone(),
            failed: None,
            cursors_due: None,
        };
        let journal = Journal::with(Some(disk), opts.memory, next);
        {
            let mut g = journal.lock();
            g.seqs = seqs;
            let inner = &mut *g;
            if let Some(d) = inner.disk.as_mut() {
                if let Err(e) = d.start_segment(next, &inner.seqs) {
                    d.refused(Instant::now(), e.to_string());
                }
            }
        }
        info!(dir = %dir.display(), segments = report.segments, readings = report.readings, next, "journal opened");
        Ok((journal, report))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// The cursor of sink `name`, from its file if there is one. Asking again for the same
    /// name (a sink restarted by a reload) gives the same cursor, where it stands.
    pub fn cursor(&self, name: &str) -> CursorId {
        let mut g = self.lock();
        if let Some(i) = g.cursors.iter().position(|c| c.name == name) {
            g.cursors[i].active = true;
            return CursorId(i);
        }
        let oldest = g.oldest();
        let end = g.next;
        let mut persisted = None;
        let pos = match g
            .disk
            .as_ref()
            .map(|d| d.dir.join(format!("{name}.cursor")))
        {
            None => oldest,
            Some(path) => match read_cursor(&path) {
                Ok(Some(p)) if p > end => {
                    warn!(
                        sink = name,
                        cursor = p,
                        end,
                        "cursor is past the end of the journal; clamped"
                    );
                    end
                }
                Ok(Some(p)) => {
                    persisted = Some(p);
                    p.max(oldest)
                }
                Ok(None) => oldest,
                Err(e) => {
                    warn!(sink = name, error = %e, "cursor file unreadable; the sink starts at the oldest reading");
                    oldest
                }
            },
        };
        info!(sink = name, cursor = pos, oldest, end, "sink cursor");
        g.cursors.push(CursorState::new(name, pos, persisted));
        CursorId(g.cursors.len() - 1)
    }

    pub fn restore_seqs(&self, seqs: HashMap<String, u64>) {
        let mut g = self.lock();
        for (m, s) in seqs {
            let e = g.seqs.entry(m.into()).or_insert(0);
            *e = (*e).max(s);
        }
    }

    pub fn seqs(&self) -> HashMap<String, u64> {
        self.lock()
            .seqs
            .iter()
            .map(|(m, s)| (m.to_string(), *s))
            .collect()
    }

    /// Append a reading with the meter's next `seq`; returns it as stored. Never blocks on a
    /// disk that refused writes: the reading is then kept in memory (see the module doc).
    pub fn append(&self, mut reading: Reading) -> Arc<Reading> {
        let stored = {
            let mut g = self.lock();
            let seq = g.seqs.entry(reading.meter.clone()).or_insert(0);
            *seq += 1;
            reading.seq = *seq;
            let pos = g.next;
            g.next += 1;
            let stored = Arc::new(reading);
            let inner = &mut *g;
            if let Some(d) = inner.disk.as_mut() {
                if d.failed.is_none() {
                    d.encode(pos, &stored, &inner.seqs);
                }
                if d.failed.is_some() {
                    inner.unjournaled += 1;
                }
            }
            g.cache_bytes += footprint(&stored);
            g.cache.push_back(stored.clone());
            g.trim_memory();
            g.enforce_size();
            stored
        };
        self.appended.notify_waiters();
        stored
    }

    pub fn end(&self) -> u64 {
        self.lock().next
    }

    pub fn position(&self, c: CursorId) -> u64 {
        self.lock().cursors[c.0].pos
    }

    pub fn dropped(&self, c: CursorId) -> u64 {
        self.lock().cursors[c.0].dropped
    }

    /// Share of the journal's bound in use, 0 to 1: bytes on disk over `max_size`, or the
    /// memory's fill when there is no disk.
    pub fn used_fraction(&self) -> f64 {
        let g = self.lock();
        match &g.disk {
            Some(d) => d.total() as f64 / d.opts.max_size.max(1) as f64,
            None => g.cache_bytes as f64 / g.memory_max.max(1) as f64,
        }
    }

    /// Bytes of readings held in memory (bounded by `Options::memory`).
    pub fn memory_bytes(&self) -> usize {
        self.lock().cache_bytes
    }

    /// Readings dropped undelivered since the start, over all sinks.
    pub fn dropped_total(&self) -> u64 {
        self.lock().cursors.iter().map(|c| c.dropped).sum()
    }

    /// Readings appended while the disk refused writes (kept in memory, written when it
    /// takes them again).
    pub fn unjournaled(&self) -> u64 {
        self.lock().unjournaled
    }

    /// Why the journal cannot write, if it cannot.
    pub fn failure(&self) -> Option<String> {
        let g = self.lock();
        g.open_failure.clone().or_else(|| {
            g.disk
                .as_ref()
                .and_then(|d| d.failed.as_ref().map(|f| f.reason.clone()))
        })
    }

    /// Undelivered readings of a sink.
    pub fn depth(&self, c: CursorId) -> u64 {
        let g = self.lock();
        let pos = g.cursors[c.0].pos;
        g.next - pos - g.holes_within(pos, g.next)
    }

    /// Up to `max` readings from `pos` on (or from the oldest held, if `pos` is gone),
    /// stepping over gaps. Empty only when nothing is held at or after `pos`. An error
    /// (a segment that cannot be read, other than deleted) leaves the caller's place as it
    /// was: try again later.
    pub fn read_from(
        &self,
        pos: u64,
        max: usize,
    ) -> Result<Vec<(u64, Arc<Reading>)>, JournalError> {
        let (cache_first, segments) = {
            let g = self.lock();
            let start = pos.max(g.oldest());
            if start >= g.cache_first {
                let skip = (start - g.cache_first) as usize;
                return Ok(g
                    .cache
                    .iter()
                    .skip(skip)
                    .take(max)
                    .enumerate()
                    .map(|(i, r)| (start + i as u64, r.clone()))
                    .collect());
            }
            // Below the memory everything was handed to a file (or is a gap).
            let segs: Vec<(u64, PathBuf)> = g
                .disk
                .as_ref()
                .map(|d| {
                    d.segments
                        .iter()
                        .map(|s| (s.first, s.path.clone()))
                        .collect()
                })
                .unwrap_or_default();
            (g.cache_first, segs)
        };
        let out = self.read_disk(pos, max, cache_first, &segments)?;
        if out.is_empty() {
            // Nothing left on disk below the memory: a gap (dropped or damaged); go on above it.
            return self.read_from(cache_first, max);
        }
        Ok(out)
    }

    /// What sink `c` sends next: [`Journal::read_from`], remembered as in flight, so that
    /// a reading let go from memory before its confirmation is counted as dropped only if the
    /// confirmation never comes (the sink takes again from below it).
    pub fn take(
        &self,
        c: CursorId,
        pos: u64,
        max: usize,
    ) -> Result<Vec<(u64, Arc<Reading>)>, JournalError> {
        // While the read runs, all it may return counts as in flight; then exactly what it did.
        self.lock().cursors[c.0].takes_from(pos.saturating_add(max as u64));
        let batch = self.read_from(pos, max);
        let got = batch.as_deref().unwrap_or_default();
        self.lock().cursors[c.0].took(pos, got);
        batch
    }

    /// The sink's far end confirmed everything before `upto`.
    /// Returns how many readings that newly confirms (gaps stepped over are not readings).
    pub fn ack(&self, c: CursorId, upto: u64) -> u64 {
        let mut g = self.lock();
        let (oldest, end) = (g.oldest(), g.next);
        let before = g.cursors[c.0].pos;
        let after = before.max(upto.max(oldest)).min(end);
        g.cursors[c.0].pos = after;
        g.cursors[c.0].confirmed(upto);
        let confirmed = after - before - g.holes_within(before, after);
        g.release_delivered();
        confirmed
    }

    /// The sink of `c` is gone (removed by a reload): its cursor no longer holds readings
    /// back. Its file stays, so a sink added again later resumes where it was.
    pub fn release(&self, c: CursorId) {
        let mut g = self.lock();
        g.cursors[c.0].active = false;
        g.release_delivered();
    }

    /// The sampling time of the oldest reading a sink has not delivered: exact while it is
    /// in memory; for a backlog on disk, the earliest in the segment holding it (so never
    /// younger than the truth). No file is read: `/metrics` asks on every scrape.
    pub fn oldest_undelivered(&self, c: CursorId) -> Option<SystemTime> {
        let g = self.lock();
        let pos = g.cursors[c.0].pos;
        if pos >= g.next {
            return None;
        }
        if pos >= g.cache_first {
            return g.cache.get((pos - g.cache_first) as usize).map(|r| r.ts);
        }
        g.disk.as_ref().and_then(|d| {
            d.segments
                .iter()
                .rev()
                .find(|s| s.first <= pos)
                .and_then(|s| s.oldest_ts)
        })
    }

    /// Hand buffered records to the file, fsync, and persist every moved cursor; if the disk
    /// refused writes and its retry is due, try to write again. Called at a clean stop.
    pub fn sync(&self) -> Result<(), JournalError> {
        self.sync_at(Instant::now())
    }

    /// [`Journal::sync`] at time `now` (for the retry schedule).
    pub fn sync_at(&self, now: Instant) -> Result<(), JournalError> {
        self.write_out(now, true)
    }

    /// The group commit, every `journal.fsync`: as [`Journal::sync`], but moved cursors are
    /// persisted only every `journal.cursor_sync`. Each cursor file replaced costs two
    /// fsyncs and a rename, which was a tenth of the daemon's CPU at 100 meters (and flash
    /// wear on a gateway); the readings themselves are fsynced every time.
    pub fn commit(&self) -> Result<(), JournalError> {
        self.commit_at(Instant::now())
    }

    /// [`Journal::commit`] at time `now`.
    pub fn commit_at(&self, now: Instant) -> Result<(), JournalError> {
        self.write_out(now, false)
    }

    fn write_out(&self, now: Instant, all_cursors: bool) -> Result<(), JournalError> {
        let (file, dir, cursors) = {
            let mut g = self.lock();
            let inner = &mut *g;
            let Some(d) = inner.disk.as_mut() else {
                return Ok(());
            };
            let cursors: Vec<(String, u64)> =
                if all_cursors || d.cursors_due.is_none_or(|due| now >= due) {
                    inner
                        .cursors
                        .iter()
                        .filter(|c| c.persisted != Some(c.pos))
                        .map(|c| (c.name.clone(), c.pos))
                        .collect()
                } else {
                    Vec::new()
                };
            if !cursors.is_empty() {
                d.cursors_due = Some(now + d.opts.cursor_every);
            }
            if d.failed.as_ref().is_some_and(|f| now >= f.retry_at) {
                d.resume(
                    now,
                    &inner.cache,
                    inner.cache_first,
                    inner.next,
                    &inner.seqs,
                );
            }
            let file = match d.flush() {
                Ok(()) => d
                    .writer
                    .as_ref()
                    .filter(|w| w.len != w.synced)
                    .map(|w| (w.file.clone(), w.path.clone(), w.len)),
                Err(why) => {
                    d.refused(now, why);
                    None
                }
            };
            let dir = d.dir.clone();
            inner.trim_memory();
            (file, dir, cursors)
        };
        if let Some((f, path, len)) = file {
            if let Err(e) = f.sync_data() {
                // What the file accepted since the last fsync may not be on the medium: the
                // power-loss window. The segment is closed; the next write starts a new one.
                let mut g = self.lock();
                if let Some(d) = g.disk.as_mut() {
                    if d.writer.as_ref().is_some_and(|w| Arc::ptr_eq(&w.file, &f)) {
                        let why = format!("{}: fsync: {e}", path.display());
                        if d.fail(now, why.clone()) {
                            error!(error = %why, "journal cannot sync: readings since the last sync would not survive a power failure; kept in memory until the disk takes them");
                        }
                    }
                }
                return Err(io(&path)(e));
            }
            let mut g = self.lock();
            if let Some(w) = g.disk.as_mut().and_then(|d| d.writer.as_mut()) {
                if Arc::ptr_eq(&w.file, &f) {
                    w.synced = w.synced.max(len);
                }
            }
        }
        for (name, pos) in cursors {
            write_cursor(&dir, &name, pos)?;
            let mut g = self.lock();
            if let Some(c) = g.cursors.iter_mut().find(|c| c.name == name) {
                c.persisted = Some(pos);
            }
        }
        Ok(())
    }

    /// Wait until there is a reading at or after `pos`.
    pub async fn wait_beyond(&self, pos: u64) {
        loop {
            let notified = self.appended.notified();
            if self.end() > pos {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn reading(meter: &str) -> Reading {
        Reading {
            meter: meter.into(),
            bus: "b".into(),
            profile: "p".into(),
            ts: SystemTime::now(),
            seq: 0,
            values: vec![].into(),
            on_demand: false,
        }
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_reading_costs_160_bytes_and_8_a_value_in_memory() {
        for n in [0usize, 8, 60] {
            let mut r = reading("m");
            r.values = (0..n).map(|i| (Arc::from(format!("q{i}")), 1.0)).collect();
            assert_eq!(footprint(&r), 160 + 8 * n, "{n} values");
        }
    }

    #[test]
    fn each_meter_gets_its_own_consecutive_seq() {
        let log = Journal::memory(1 << 20);
        log.restore_seqs(HashMap::from([("a".to_string(), 41)]));
        let seqs: Vec<u64> = ["a", "b", "a"]
            .iter()
            .map(|m| log.append(reading(m)).seq)
            .collect();
        assert_eq!(seqs, [42, 1, 43]);
    }

    #[test]
    fn a_slow_sink_does_not_hold_back_a_fast_one() {
        let log = Journal::memory(1 << 20);
        let fast = log.cursor("mqtt");
        let slow = log.cursor("influxdb");
        for _ in 0..5 {
            log.append(reading("a"));
        }
        log.ack(fast, 5);
        assert_eq!(log.position(fast), 5);
        assert_eq!(log.position(slow), 0);
        assert_eq!(log.read_from(log.position(slow), 100).unwrap().len(), 5);
    }

    #[test]
    fn records_are_released_once_every_sink_is_past_them() {
        let log = Journal::memory(1 << 20);
        let a = log.cursor("a");
        let b = log.cursor("b");
        for _ in 0..4 {
            log.append(reading("m"));
        }
        log.ack(a, 4);
        log.ack(b, 2);
        assert_eq!(log.read_from(0, 100).unwrap()[0].0, 2);
    }

    #[test]
    fn a_full_buffer_drops_the_oldest_and_counts_it_per_sink() {
        let log = Journal::memory(3 * footprint(&reading("m")));
        let a = log.cursor("a");
        let b = log.cursor("b");
        for _ in 0..3 {
            log.append(reading("m"));
        }
        log.ack(a, 3);
        for _ in 0..2 {
            log.append(reading("m"));
        }
        assert_eq!(log.dropped(a), 0);
        assert_eq!(log.dropped(b), 2);
        assert_eq!(log.position(b), 2);
    }

    /// What the sink does after it took (sent) readings 0..5 and memory let 0..4 go before
    /// any confirmation came.
    enum Then {
        /// The far end confirms what was sent.
        Confirmed,
        /// A new connection: it starts again from its cursor.
        StartsAgain,
        /// It had sent 0..3 only (its window was full) and takes on from 3.
        TakesOnFrom3,
        /// It had sent 0..3, takes on from 3, then the far end confirms 0..3.
        TakesOnFrom3AndIsConfirmed,
    }

    #[test]
    fn readings_let_go_while_in_flight_count_as_dropped_only_if_the_sink_gives_them_up() {
        for (then, dropped) in [
            (Then::Confirmed, 0),
            (Then::StartsAgain, 4),
            (Then::TakesOnFrom3, 1),
            (Then::TakesOnFrom3AndIsConfirmed, 1),
        ] {
            let log = Journal::memory(5 * footprint(&reading("m")));
            let sink = log.cursor("mqtt");
            for _ in 0..5 {
                log.append(reading("m"));
            }
            let sent: Vec<u64> = log.take(sink, 0, 5).unwrap().iter().map(|r| r.0).collect();
            assert_eq!(sent, [0, 1, 2, 3, 4]);
            for _ in 0..4 {
                log.append(reading("m"));
            }
            assert_eq!(log.read_from(0, 1).unwrap()[0].0, 4, "0..4 were let go");
            assert_eq!(log.dropped(sink), 0, "in flight: not yet dropped");
            match then {
                Then::Confirmed => {
                    log.ack(sink, 5);
                }
                Then::StartsAgain => {
                    let again = log.take(sink, log.position(sink), 100).unwrap();
                    assert_eq!(again[0].0, 4, "it goes on past the gap");
                }
                Then::TakesOnFrom3 => {
                    log.take(sink, 3, 100).unwrap();
                }
                Then::TakesOnFrom3AndIsConfirmed => {
                    log.take(sink, 3, 100).unwrap();
                    log.ack(sink, 3);
                }
            }
            assert_eq!(log.dropped(sink), dropped);
            // Whatever came before, a new start from the cursor counts the rest, never twice.
            log.take(sink, log.position(sink), 100).unwrap();
            let rest = match then {
                Then::Confirmed | Then::StartsAgain => dropped,
                Then::TakesOnFrom3 => 4,
                Then::TakesOnFrom3AndIsConfirmed => 1,
            };
            assert_eq!(log.dropped(sink), rest);
        }
    }

    #[test]
    fn readings_let_go_while_a_take_ran_count_as_dropped_unless_the_take_returned_them() {
        // (in flight and let go before, taken from, positions returned) → (dropped, still
        // pending)
        for (pending, from, got, dropped, left) in [
            (vec![(2, 6)], 2, vec![4, 5, 6, 7], 2, vec![(4, 6)]),
            (vec![(2, 6)], 2, vec![2, 3, 4, 5, 6], 0, vec![(2, 6)]),
            (vec![(2, 6)], 2, vec![], 4, vec![]),
            (vec![(0, 2), (3, 5)], 3, vec![6], 2, vec![(0, 2)]),
            (vec![(0, 4)], 2, vec![2, 3], 0, vec![(0, 4)]),
            (vec![(0, 4)], 2, vec![3], 1, vec![(0, 2), (3, 4)]),
        ] {
            let mut c = memory::CursorState::new("s", 0, None);
            c.in_flight_lost = pending.clone();
            let got: Vec<(u64, Arc<Reading>)> =
                got.iter().map(|p| (*p, Arc::new(reading("m")))).collect();
            c.took(from, &got);
            assert_eq!(
                (c.dropped, &c.in_flight_lost),
                (dropped, &left),
                "{pending:?} taken from {from}, got {got:?}"
            );
            assert_eq!(c.taken, got.last().map_or(from, |p| p.0 + 1));
        }
    }

    #[test]
    fn readings_let_go_before_the_sink_took_them_are_dropped_at_once() {
        let log = Journal::memory(2 * footprint(&reading("m")));
        let sink = log.cursor("influxdb");
        for _ in 0..5 {
            log.append(reading("m"));
        }
        assert_eq!(log.dropped(sink), 3);
        assert_eq!(log.position(sink), 3, "the cursor steps out of the gap");
    }
}

#[cfg(test)]
mod disk_tests;
#[cfg(test)]
mod full_disk_tests;
