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
//! - Appends go to the newest segment through a buffer; `sync()` (every `journal.fsync`, and
//!   at a clean stop) writes the buffer and fsyncs. That interval bounds the loss at power
//!   failure; a clean stop loses nothing.
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

pub mod format;

use std::{
    collections::{HashMap, VecDeque},
    fs::{self, File, OpenOptions},
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime},
};

use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::reading::Reading;
use format::{RawReading, Record, Shape};

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

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub max_size: u64,
    pub segment_size: u64,
    /// Readings kept in memory for sinks that keep up (older ones are read from disk).
    pub cache: usize,
}

impl Options {
    pub fn with_max_size(max_size: u64) -> Options {
        Options {
            max_size,
            segment_size: (max_size / 8).clamp(64 << 10, 16 << 20),
            cache: 20_000,
        }
    }
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
struct Segment {
    first: u64,
    path: PathBuf,
    bytes: u64,
    /// The earliest sampling time in it (for the age of a backlog without reading the file).
    oldest_ts: Option<SystemTime>,
}

#[derive(Debug)]
struct Writer {
    file: BufWriter<File>,
    shapes: HashMap<Shape, u32>,
}

#[derive(Debug)]
struct CursorState {
    name: String,
    pos: u64,
    persisted: Option<u64>,
    dropped: u64,
    /// A released cursor (its sink was removed by a reload) holds nothing back.
    active: bool,
}

#[derive(Debug)]
struct Disk {
    dir: PathBuf,
    segments: VecDeque<Segment>,
    writer: Option<Writer>,
    opts: Options,
    /// Set while the disk refuses writes; readings then live only in memory.
    failed: Option<String>,
}

#[derive(Debug)]
struct Inner {
    next: u64,
    cache_first: u64,
    cache: VecDeque<Arc<Reading>>,
    cache_max: usize,
    cursors: Vec<CursorState>,
    seqs: HashMap<Arc<str>, u64>,
    disk: Option<Disk>,
    /// Set when the journal could not be opened at all (memory only for this run).
    open_failure: Option<String>,
    unjournaled: u64,
}

/// Reading state kept between `read_from` calls so a sink draining a backlog reads each
/// segment once, not once per batch.
#[derive(Debug, Clone)]
struct ReadState {
    seg_first: u64,
    offset: usize,
    shapes: HashMap<u32, Shape>,
}

#[derive(Debug)]
pub struct Journal {
    inner: Mutex<Inner>,
    readers: Mutex<HashMap<u64, ReadState>>,
    appended: Notify,
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.seg"))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn ts_ms(ts: SystemTime) -> u64 {
    ts.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Decode records from `offset` (a file offset; `bytes` holds the file from offset `base`),
/// calling `f` for each reading until it returns false. Damaged regions are skipped (logged);
/// bytes that end inside a record end the scan. Returns the file offset after the last
/// record decoded and the number of skipped regions.
fn scan(
    path: &Path,
    bytes: &[u8],
    base: usize,
    mut offset: usize,
    shapes: &mut HashMap<u32, Shape>,
    seqs: &mut HashMap<Arc<str>, u64>,
    mut f: impl FnMut(RawReading, &Shape, usize) -> bool,
) -> (usize, usize, bool) {
    let mut skipped = 0;
    if offset < format::FILE_HEADER.len() {
        offset = format::FILE_HEADER.len();
    }
    while offset < base + bytes.len() {
        let Some(rest) = bytes.get(offset - base..) else {
            break;
        };
        let frame = format::read_frame(rest).and_then(|(payload, len)| {
            Record::decode_payload(payload, |id| shapes.get(&id).map(|s| s.quantities.len()))
                .map(|r| (r, len))
        });
        match frame {
            Ok((Record::Shape(id, s), len)) => {
                shapes.insert(id, s);
                offset += len;
            }
            Ok((Record::Seqs(list), len)) => {
                for (m, seq) in list {
                    let e = seqs.entry(m).or_insert(0);
                    *e = (*e).max(seq);
                }
                offset += len;
            }
            Ok((Record::Reading(r), len)) => {
                offset += len;
                let Some(shape) = shapes.get(&r.shape) else {
                    continue;
                };
                if !f(r, shape, offset) {
                    return (offset, skipped, false);
                }
            }
            Err(e) => match format::resync(rest) {
                Some(skip) => {
                    warn!(segment = %path.display(), offset, bytes = skip, error = %e, "damaged journal record skipped");
                    skipped += 1;
                    offset += skip;
                }
                None => return (offset, skipped, true),
            },
        }
    }
    (offset, skipped, true)
}

/// The sampling time of the first reading in a segment file, from its first 64 KiB.
fn first_ts(path: &Path) -> Option<SystemTime> {
    use std::io::Read;
    let mut bytes = Vec::new();
    File::open(path)
        .ok()?
        .take(64 << 10)
        .read_to_end(&mut bytes)
        .ok()?;
    let mut found = None;
    scan(
        path,
        &bytes,
        0,
        0,
        &mut HashMap::new(),
        &mut HashMap::new(),
        |r, _, _| {
            found = Some(SystemTime::UNIX_EPOCH + Duration::from_millis(r.ts_ms));
            false
        },
    );
    found
}

fn to_reading(r: RawReading, s: &Shape) -> Reading {
    Reading {
        meter: s.meter.clone(),
        bus: s.bus.clone(),
        profile: s.profile.clone(),
        ts: SystemTime::UNIX_EPOCH + Duration::from_millis(r.ts_ms),
        seq: r.seq,
        values: s.quantities.iter().cloned().zip(r.values).collect(),
    }
}

impl Journal {
    /// A journal that lives in memory only, bounded to `capacity` readings (unit tests).
    pub fn memory(capacity: usize) -> Journal {
        Journal::with(None, capacity, 0)
    }

    /// The stand-in when the journal directory cannot be used: memory only, and `failure()`
    /// says why, so the state is visible and alertable rather than a crash loop.
    pub fn unavailable(capacity: usize, why: String) -> Journal {
        let j = Journal::with(None, capacity, 0);
        j.lock().open_failure = Some(why);
        j
    }

    fn with(disk: Option<Disk>, cache_max: usize, next: u64) -> Journal {
        Journal {
            inner: Mutex::new(Inner {
                next,
                cache_first: next,
                cache: VecDeque::new(),
                cache_max: cache_max.max(1),
                cursors: Vec::new(),
                seqs: HashMap::new(),
                disk,
                open_failure: None,
                unjournaled: 0,
            }),
            readers: Mutex::new(HashMap::new()),
            appended: Notify::new(),
        }
    }

    /// Open (or create) the journal in `dir`, recovering from whatever a crash left.
    pub fn open(dir: &Path, opts: Options) -> Result<(Journal, OpenReport), JournalError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let mut firsts: Vec<u64> = fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".seg")?.parse::<u64>().ok()
            })
            .collect();
        firsts.sort_unstable();
        let mut report = OpenReport::default();
        let mut segments = VecDeque::new();
        let mut next = 0u64;
        let mut seqs: HashMap<Arc<str>, u64> = HashMap::new();
        let count = firsts.len();
        for (i, first) in firsts.into_iter().enumerate() {
            let path = segment_path(dir, first);
            let newest = i + 1 == count;
            let mut bytes_len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            next = next.max(first);
            let mut oldest_ts: Option<SystemTime> = None;
            if !newest {
                oldest_ts = first_ts(&path);
            }
            if newest {
                // The newest segment may end in a torn write: scan it, truncate the damage.
                let bytes = fs::read(&path).map_err(io(&path))?;
                let mut shapes = HashMap::new();
                let mut snapshot = HashMap::new();
                let header_ok = bytes.starts_with(&format::FILE_HEADER);
                let (end, skipped, _) = if header_ok {
                    scan(
                        &path,
                        &bytes,
                        0,
                        0,
                        &mut shapes,
                        &mut snapshot,
                        |r, s, _| {
                            next = next.max(r.pos + 1);
                            report.readings += 1;
                            let ts = SystemTime::UNIX_EPOCH + Duration::from_millis(r.ts_ms);
                            oldest_ts = Some(oldest_ts.map_or(ts, |o: SystemTime| o.min(ts)));
                            let e = seqs.entry(s.meter.clone()).or_insert(0);
                            *e = (*e).max(r.seq);
                            true
                        },
                    )
                } else {
                    (0, 0, true)
                };
                report.skipped_regions += skipped;
                for (m, seq) in snapshot {
                    let e = seqs.entry(m).or_insert(0);
                    *e = (*e).max(seq);
                }
                if (end as u64) < bytes.len() as u64 {
                    let cut = bytes.len() as u64 - end as u64;
                    warn!(segment = %path.display(), offset = end, bytes = cut, "journal tail damaged (torn write?): truncated");
                    report.truncated_bytes += cut;
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(io(&path))?;
                    f.set_len(end as u64).map_err(io(&path))?;
                    f.sync_all().map_err(io(&path))?;
                    bytes_len = end as u64;
                }
                if report.readings == 0 {
                    // Nothing in it: it will be replaced by this run's segment.
                    let _ = fs::remove_file(&path);
                    continue;
                }
            }
            segments.push_back(Segment {
                first,
                path,
                bytes: bytes_len,
                oldest_ts,
            });
        }
        report.segments = segments.len();
        let disk = Disk {
            dir: dir.to_path_buf(),
            segments,
            writer: None,
            opts: opts.clone(),
            failed: None,
        };
        let journal = Journal::with(Some(disk), opts.cache, next);
        {
            let mut g = journal.lock();
            g.seqs = seqs;
            let inner = &mut *g;
            if let Some(d) = inner.disk.as_mut() {
                d.start_segment(next, &inner.seqs)?;
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
        g.cursors.push(CursorState {
            name: name.to_string(),
            pos,
            persisted,
            dropped: 0,
            active: true,
        });
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

    /// Append a reading with the meter's next `seq`; returns it as stored.
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
            let written = match inner.disk.as_mut() {
                Some(d) => d.write(pos, &stored, &inner.seqs),
                None => false,
            };
            if g.disk.is_some() && !written {
                g.unjournaled += 1;
            }
            g.cache.push_back(stored.clone());
            while g.cache.len() > g.cache_max {
                g.cache.pop_front();
                g.cache_first += 1;
                if g.disk.is_none() {
                    let first = g.cache_first;
                    g.drop_before(first);
                }
            }
            if g.disk.is_some() {
                g.enforce_size();
            }
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
    /// memory buffer's fill when there is no disk.
    pub fn used_fraction(&self) -> f64 {
        let g = self.lock();
        match &g.disk {
            Some(d) => d.total() as f64 / d.opts.max_size.max(1) as f64,
            None => g.cache.len() as f64 / g.cache_max.max(1) as f64,
        }
    }

    /// Readings dropped undelivered since the start, over all sinks.
    pub fn dropped_total(&self) -> u64 {
        self.lock().cursors.iter().map(|c| c.dropped).sum()
    }

    /// Readings appended while the disk refused writes (they were only in memory).
    pub fn unjournaled(&self) -> u64 {
        self.lock().unjournaled
    }

    /// Why the journal cannot write, if it cannot.
    pub fn failure(&self) -> Option<String> {
        let g = self.lock();
        g.open_failure
            .clone()
            .or_else(|| g.disk.as_ref().and_then(|d| d.failed.clone()))
    }

    /// Undelivered readings of a sink.
    pub fn depth(&self, c: CursorId) -> u64 {
        let g = self.lock();
        g.next - g.cursors[c.0].pos
    }

    /// Up to `max` readings from `pos` on (or from the oldest held, if `pos` is gone).
    pub fn read_from(&self, pos: u64, max: usize) -> Vec<(u64, Arc<Reading>)> {
        let (cache_first, segments) = {
            let g = self.lock();
            let start = pos.max(g.oldest());
            if start >= g.cache_first {
                let skip = (start - g.cache_first) as usize;
                return g
                    .cache
                    .iter()
                    .skip(skip)
                    .take(max)
                    .enumerate()
                    .map(|(i, r)| (start + i as u64, r.clone()))
                    .collect();
            }
            let mut g = g;
            let segs: Vec<(u64, PathBuf)> = match g.disk.as_mut() {
                Some(d) => {
                    // What is read from disk must be on disk, not in the write buffer.
                    if let Some(w) = d.writer.as_mut() {
                        let _ = w.file.flush();
                    }
                    d.segments
                        .iter()
                        .map(|s| (s.first, s.path.clone()))
                        .collect()
                }
                None => Vec::new(),
            };
            (g.cache_first, segs)
        };
        self.read_disk(pos, max, cache_first, &segments)
    }

    /// Read older readings from segment files, outside the lock (the buffer was flushed).
    fn read_disk(
        &self,
        pos: u64,
        max: usize,
        cache_first: u64,
        segments: &[(u64, PathBuf)],
    ) -> Vec<(u64, Arc<Reading>)> {
        let mut out = Vec::new();
        let mut want = pos;
        let start_idx = segments
            .iter()
            .rposition(|(first, _)| *first <= want)
            .unwrap_or(0);
        for (idx, (first, path)) in segments.iter().enumerate().skip(start_idx) {
            if out.len() >= max || want >= cache_first {
                break;
            }
            let resume = lock(&self.readers)
                .remove(&want)
                .filter(|s| s.seg_first == *first);
            let (mut offset, mut shapes) = match resume {
                Some(s) => (s.offset, s.shapes),
                None => (0, HashMap::new()),
            };
            // Read in chunks from where the last read stopped, not the whole file each time.
            let Ok(mut file) = File::open(path) else {
                // Deleted under us (delivered by all, or dropped for size): go on with the next.
                continue;
            };
            let len = file.metadata().map(|m| m.len() as usize).unwrap_or(0);
            let mut chunk = (max.saturating_mul(256)).clamp(64 << 10, 4 << 20);
            let mut done_here = false;
            while out.len() < max && offset < len && !done_here {
                let end = (offset.max(format::FILE_HEADER.len()) + chunk).min(len);
                let start = offset.min(end);
                let mut bytes = vec![0u8; end - start];
                use std::io::{Read, Seek, SeekFrom};
                if file
                    .seek(SeekFrom::Start(start as u64))
                    .and_then(|_| file.read_exact(&mut bytes))
                    .is_err()
                {
                    break;
                }
                let (after, _, _) = scan(
                    path,
                    &bytes,
                    start,
                    offset,
                    &mut shapes,
                    &mut HashMap::new(),
                    |r, s, _| {
                        if r.pos < want {
                            return true;
                        }
                        if r.pos >= cache_first {
                            done_here = true;
                            return false;
                        }
                        want = r.pos + 1;
                        out.push((r.pos, Arc::new(to_reading(r, s))));
                        out.len() < max
                    },
                );
                if after == offset.max(format::FILE_HEADER.len()) && end < len {
                    // A record larger than the chunk: read more at once.
                    chunk = chunk.saturating_mul(4);
                    continue;
                }
                if after <= offset && end >= len {
                    break;
                }
                offset = after;
            }
            let last_offset = offset;
            if out.len() >= max {
                let mut readers = lock(&self.readers);
                if readers.len() > 16 {
                    readers.clear();
                }
                readers.insert(
                    want,
                    ReadState {
                        seg_first: *first,
                        offset: last_offset,
                        shapes,
                    },
                );
                break;
            }
            if let Some((next_first, _)) = segments.get(idx + 1) {
                want = want.max(*next_first);
            }
        }
        if out.is_empty() && want < cache_first {
            // Nothing left on disk below the cache: a gap (dropped or damaged); go on above it.
            return self.read_from(cache_first, max);
        }
        out
    }

    /// The sink's far end confirmed everything before `upto`.
    pub fn ack(&self, c: CursorId, upto: u64) {
        let mut g = self.lock();
        let (oldest, end) = (g.oldest(), g.next);
        let cur = &mut g.cursors[c.0];
        cur.pos = cur.pos.max(upto.max(oldest)).min(end);
        g.release_delivered();
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
}

impl Inner {
    /// Delete what every active sink has confirmed, on disk and in memory.
    fn release_delivered(&mut self) {
        let g = self;
        let min = g
            .cursors
            .iter()
            .filter(|c| c.active)
            .map(|c| c.pos)
            .min()
            .unwrap_or(g.next);
        if let Some(d) = g.disk.as_mut() {
            d.delete_delivered(min);
        }
        // Readings every sink has confirmed need no memory.
        while g.cache_first < min && !g.cache.is_empty() {
            g.cache.pop_front();
            g.cache_first += 1;
        }
    }
}

impl Journal {
    /// Write the buffer out, fsync, and persist moved cursors. Called every `journal.fsync`
    /// and at a clean stop.
    pub fn sync(&self) -> Result<(), JournalError> {
        let (file, dir, cursors) = {
            let mut g = self.lock();
            let cursors: Vec<(String, u64)> = g
                .cursors
                .iter()
                .filter(|c| c.persisted != Some(c.pos))
                .map(|c| (c.name.clone(), c.pos))
                .collect();
            let Some(d) = g.disk.as_mut() else {
                return Ok(());
            };
            let file = match d.writer.as_mut() {
                Some(w) => {
                    let path = d
                        .segments
                        .back()
                        .map(|s| s.path.clone())
                        .unwrap_or_default();
                    match w.file.flush().and_then(|()| w.file.get_ref().try_clone()) {
                        Ok(f) => Some((f, path)),
                        Err(e) => {
                            d.fail(&path, &e);
                            None
                        }
                    }
                }
                None => None,
            };
            (file, d.dir.clone(), cursors)
        };
        if let Some((f, path)) = file {
            f.sync_data().map_err(io(&path))?;
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

impl Inner {
    /// The oldest position still held (on disk or in memory).
    fn oldest(&self) -> u64 {
        match &self.disk {
            Some(d) => d
                .segments
                .front()
                .map_or(self.cache_first, |s| s.first.min(self.cache_first)),
            None => self.cache_first,
        }
    }

    /// Everything before `first` is gone: move cursors up, count what they lose.
    fn drop_before(&mut self, first: u64) {
        for c in self.cursors.iter_mut().filter(|c| c.pos < first) {
            let lost = first - c.pos;
            c.dropped += lost;
            error!(sink = %c.name, lost, dropped_total = c.dropped, "journal full: oldest undelivered readings dropped");
            c.pos = first;
        }
    }

    fn enforce_size(&mut self) {
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

impl Disk {
    fn total(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    fn fail(&mut self, path: &Path, e: &std::io::Error) {
        let msg = format!("{}: {e}", path.display());
        if self.failed.as_deref() != Some(msg.as_str()) {
            error!(error = %msg, "journal cannot write: readings are kept in memory only until it can");
        }
        self.failed = Some(msg);
        self.writer = None;
    }

    fn start_segment(
        &mut self,
        first: u64,
        seqs: &HashMap<Arc<str>, u64>,
    ) -> Result<(), JournalError> {
        if let Some(w) = self.writer.as_mut() {
            let _ = w.file.flush();
            let _ = w.file.get_ref().sync_data();
        }
        self.writer = None;
        let path = segment_path(&self.dir, first);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        let mut head = format::FILE_HEADER.to_vec();
        head.extend(Record::Seqs(seqs.iter().map(|(m, s)| (m.clone(), *s)).collect()).encode());
        file.write_all(&head).map_err(io(&path))?;
        self.writer = Some(Writer {
            file: BufWriter::with_capacity(64 << 10, file),
            shapes: HashMap::new(),
        });
        self.segments.push_back(Segment {
            first,
            path,
            bytes: head.len() as u64,
            oldest_ts: None,
        });
        Ok(())
    }

    /// Write one reading; false when the disk refused (the failure is logged once).
    fn write(&mut self, pos: u64, r: &Reading, seqs: &HashMap<Arc<str>, u64>) -> bool {
        if self.writer.is_none()
            || self
                .segments
                .back()
                .is_some_and(|s| s.bytes >= self.opts.segment_size)
        {
            if let Err(JournalError::Io { path, source }) = self.start_segment(pos, seqs) {
                self.fail(&path, &source);
                return false;
            }
            if self.failed.take().is_some() {
                info!("journal writes again");
            }
        }
        let shape = Shape {
            meter: r.meter.clone(),
            bus: r.bus.clone(),
            profile: r.profile.clone(),
            quantities: r.values.iter().map(|(q, _)| q.clone()).collect(),
        };
        let Some(w) = self.writer.as_mut() else {
            return false;
        };
        let mut bytes = Vec::new();
        let id = match w.shapes.get(&shape) {
            Some(id) => *id,
            None => {
                let id = w.shapes.len() as u32;
                bytes.extend(Record::Shape(id, shape.clone()).encode());
                w.shapes.insert(shape, id);
                id
            }
        };
        bytes.extend(
            Record::Reading(RawReading {
                pos,
                shape: id,
                ts_ms: ts_ms(r.ts),
                seq: r.seq,
                values: r.values.iter().map(|(_, v)| *v).collect(),
            })
            .encode(),
        );
        let path = self
            .segments
            .back()
            .map(|s| s.path.clone())
            .unwrap_or_default();
        if let Err(e) = w.file.write_all(&bytes) {
            self.fail(&path, &e);
            return false;
        }
        if let Some(s) = self.segments.back_mut() {
            s.bytes += bytes.len() as u64;
            s.oldest_ts = Some(s.oldest_ts.map_or(r.ts, |o| o.min(r.ts)));
        }
        true
    }

    /// Delete segments every cursor is past (never the one being written).
    fn delete_delivered(&mut self, min_cursor: u64) {
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

/// Cursor file: the position as decimal text, then a CRC-32C of that text.
fn read_cursor(path: &Path) -> Result<Option<u64>, String> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut parts = text.split_whitespace();
    let (Some(pos), Some(crc)) = (parts.next(), parts.next()) else {
        return Err(format!("{}: malformed", path.display()));
    };
    let expected = format!(
        "{:08x}",
        crc::Crc::<u32>::new(&crc::CRC_32_ISCSI).checksum(pos.as_bytes())
    );
    if crc != expected {
        return Err(format!("{}: checksum mismatch", path.display()));
    }
    pos.parse()
        .map(Some)
        .map_err(|_| format!("{}: malformed", path.display()))
}

fn write_cursor(dir: &Path, name: &str, pos: u64) -> Result<(), JournalError> {
    let path = dir.join(format!("{name}.cursor"));
    let text = pos.to_string();
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI).checksum(text.as_bytes());
    write_atomically(&path, format!("{text} {crc:08x}\n").as_bytes()).map_err(io(&path))
}

/// Replace `path` so that a crash leaves the old or the new content, never a mix: write a
/// temporary file, fsync it, rename it over, fsync the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(d) = path.parent().and_then(|d| File::open(d).ok()) {
        let _ = d.sync_all();
    }
    Ok(())
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
            values: vec![],
        }
    }

    #[test]
    fn each_meter_gets_its_own_consecutive_seq() {
        let log = Journal::memory(10);
        log.restore_seqs(HashMap::from([("a".to_string(), 41)]));
        let seqs: Vec<u64> = ["a", "b", "a"]
            .iter()
            .map(|m| log.append(reading(m)).seq)
            .collect();
        assert_eq!(seqs, [42, 1, 43]);
    }

    #[test]
    fn a_slow_sink_does_not_hold_back_a_fast_one() {
        let log = Journal::memory(10);
        let fast = log.cursor("mqtt");
        let slow = log.cursor("influxdb");
        for _ in 0..5 {
            log.append(reading("a"));
        }
        log.ack(fast, 5);
        assert_eq!(log.position(fast), 5);
        assert_eq!(log.position(slow), 0);
        assert_eq!(log.read_from(log.position(slow), 100).len(), 5);
    }

    #[test]
    fn records_are_released_once_every_sink_is_past_them() {
        let log = Journal::memory(10);
        let a = log.cursor("a");
        let b = log.cursor("b");
        for _ in 0..4 {
            log.append(reading("m"));
        }
        log.ack(a, 4);
        log.ack(b, 2);
        assert_eq!(log.read_from(0, 100)[0].0, 2);
    }

    #[test]
    fn a_full_buffer_drops_the_oldest_and_counts_it_per_sink() {
        let log = Journal::memory(3);
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
}

#[cfg(test)]
mod disk_tests;
