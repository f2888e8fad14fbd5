//! Opening the journal: find the segments, scan the newest for a torn tail (truncated and
//! reported), take every meter's last `seq`, and know each older segment's earliest reading
//! without reading it all.

use std::{
    collections::{HashMap, VecDeque},
    fs::{self, File, OpenOptions},
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime},
};

use tracing::warn;

use super::{
    format::{self, RawReading, Record, Shape},
    io,
    segment::{segment_path, Segment},
    JournalError, OpenReport,
};

/// What opening found on disk: the segments, the next position, every meter's last `seq`,
/// and the report.
pub(super) type Recovered = (VecDeque<Segment>, u64, HashMap<Arc<str>, u64>, OpenReport);

/// The segments in `dir`, the next position, every meter's last `seq`, and what was found.
pub(super) fn recover(dir: &Path) -> Result<Recovered, JournalError> {
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
            let mut readings = 0u64;
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
                        readings += 1;
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
            report.readings += readings;
            report.skipped_regions += skipped;
            for (m, seq) in snapshot {
                let e = seqs.entry(m).or_insert(0);
                *e = (*e).max(seq);
            }
            if readings == 0 {
                // Nothing in it: it will be replaced by this run's segment.
                let _ = fs::remove_file(&path);
                continue;
            }
            if (end as u64) < bytes.len() as u64 {
                let cut = bytes.len() as u64 - end as u64;
                warn!(segment = %path.display(), offset = end, bytes = cut, "journal tail damaged (torn write?): truncated");
                report.truncated_bytes += cut;
                // Truncating needs no space; should it fail, readers skip the damage.
                let cut_back = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(end as u64).and_then(|()| f.sync_all()));
                match cut_back {
                    Ok(()) => bytes_len = end as u64,
                    Err(e) => {
                        warn!(segment = %path.display(), error = %e, "cannot truncate the damaged tail; readers skip it")
                    }
                }
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
    Ok((segments, next, seqs, report))
}

/// Decode records from `offset` (a file offset; `bytes` holds the file from offset `base`),
/// calling `f` for each reading until it returns false. Damaged regions are skipped (logged);
/// bytes that end inside a record end the scan. Returns the file offset after the last
/// record decoded and the number of skipped regions.
pub(super) fn scan(
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
pub(super) fn first_ts(path: &Path) -> Option<SystemTime> {
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
