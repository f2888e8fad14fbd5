//! Reading a backlog from segment files, outside the journal's lock, in chunks from where the
//! last read stopped (a sink draining an outage reads each segment once).

use std::{
    collections::HashMap,
    fs::File,
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use super::{
    format::{self, RawReading, Shape},
    io, lock,
    recover::scan,
    Journal, JournalError,
};
use crate::reading::Reading;

/// Reading state kept between `read_from` calls so a sink draining a backlog reads each
/// segment once, not once per batch.
#[derive(Debug, Clone)]
pub(super) struct ReadState {
    pub(super) seg_first: u64,
    pub(super) offset: usize,
    pub(super) shapes: HashMap<u32, Shape>,
}

pub(super) fn to_reading(r: RawReading, s: &Shape) -> Reading {
    Reading {
        meter: s.meter.clone(),
        bus: s.bus.clone(),
        profile: s.profile.clone(),
        ts: SystemTime::UNIX_EPOCH + Duration::from_millis(r.ts_ms),
        seq: r.seq,
        values: crate::reading::Values::new(s.quantities.clone(), r.values),
        on_demand: r.on_demand,
    }
}

impl Journal {
    /// Read older readings from segment files, outside the lock.
    pub(super) fn read_disk(
        &self,
        pos: u64,
        max: usize,
        cache_first: u64,
        segments: &[(u64, PathBuf)],
    ) -> Result<Vec<(u64, Arc<Reading>)>, JournalError> {
        use std::io::{Read, Seek, SeekFrom};
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
            let mut file = match File::open(path) {
                Ok(f) => f,
                // Deleted under us (delivered by all, or dropped for size): go on with the next.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                // Anything else (no descriptors left, an I/O error) may pass: never skip
                // readings because of it.
                Err(e) if out.is_empty() => return Err(io(path)(e)),
                Err(_) => break,
            };
            let len = file.metadata().map(|m| m.len() as usize).unwrap_or(0);
            let mut chunk = (max.saturating_mul(256)).clamp(64 << 10, 4 << 20);
            let mut done_here = false;
            while out.len() < max && offset < len && !done_here {
                let end = (offset.max(format::FILE_HEADER.len()) + chunk).min(len);
                let start = offset.min(end);
                let mut bytes = vec![0u8; end - start];
                let read = file
                    .seek(SeekFrom::Start(start as u64))
                    .and_then(|_| file.read_exact(&mut bytes));
                if let Err(e) = read {
                    if out.is_empty() {
                        return Err(io(path)(e));
                    }
                    return Ok(out);
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
        Ok(out)
    }
}
