//! The journal when its disk fills: readings kept in memory, dropped only when memory is full
//! (counted per sink and stepped over), and written once space returns. Each test mounts its
//! own small tmpfs.

use std::{
    fs,
    path::Path,
    time::{Duration, Instant},
};

use super::disk_tests::{opts, positions, reading};
use super::*;

/// A journal in a tmpfs of `size` bytes, holding `memory` readings in memory.
fn on_tmpfs(size: u64, memory: usize) -> (crate::testing::Tmpfs, Journal) {
    let fs = crate::testing::Tmpfs::mount(size);
    let (j, _) = Journal::open(
        &fs.path().join("journal"),
        Options {
            max_size: 64 << 20,
            segment_size: 8 << 10,
            memory: memory * footprint(&reading("a", 0)),
            retry: Duration::from_secs(1),
            cursor_every: crate::journal::DEFAULT_CURSOR_SYNC,
        },
    )
    .expect("open");
    (fs, j)
}

fn files_in(dir: &Path) -> usize {
    fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn a_full_disk_keeps_readings_in_memory_tries_no_file_per_reading_and_writes_them_when_space_returns(
) {
    let (disk, j) = on_tmpfs(1 << 20, 100_000);
    let dir = disk.path().join("journal");
    let c = j.cursor("mqtt");
    for i in 0..100 {
        j.append(reading("a", i));
    }
    j.sync().unwrap();
    disk.fill();
    for i in 100..3000 {
        j.append(reading("a", i));
    }
    let failure = j.failure().expect("the journal reports the full disk");
    assert!(failure.contains("No space left on device"), "{failure}");
    let files = files_in(&dir);
    let t0 = Instant::now();
    for s in 0..10 {
        // Retries come from the group commit only, with back-off: 1 s, 2 s, 4 s …
        let _ = j.sync_at(t0 + Duration::from_millis(300 * s));
        for i in 0..100 {
            j.append(reading("a", 3000 + s * 100 + i));
        }
    }
    assert!(
        files_in(&dir) <= files,
        "no new files while the disk is full: {} then {}",
        files,
        files_in(&dir)
    );
    assert_eq!(j.dropped(c), 0, "everything fits in memory");
    assert_eq!(
        positions(&j, 0),
        (0..4000).collect::<Vec<_>>(),
        "all deliverable"
    );

    disk.free();
    // Not yet due (the last failed try was at most 3 s ago with a 4 s wait): still failed.
    j.sync_at(t0).unwrap();
    assert!(j.failure().is_some());
    j.sync_at(t0 + Duration::from_secs(60)).unwrap();
    assert_eq!(j.failure(), None, "writing resumed");
    for i in 4000..4010 {
        j.append(reading("a", i));
    }
    j.sync().unwrap();
    drop(j);
    let (j, report) = Journal::open(&dir, opts()).unwrap();
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(
        positions(&j, 0),
        (0..4010).collect::<Vec<_>>(),
        "what was kept in memory is on disk now"
    );
    let seqs: Vec<u64> = j
        .read_from(0, 5000)
        .unwrap()
        .iter()
        .map(|(_, r)| r.seq)
        .collect();
    assert_eq!(seqs, (1..=4010).collect::<Vec<_>>());
}

#[test]
fn when_memory_fills_during_an_outage_the_oldest_unwritten_readings_are_dropped_counted_per_sink_and_stepped_over(
) {
    let (disk, j) = on_tmpfs(1 << 20, 50);
    let dir = disk.path().join("journal");
    let (mqtt, influx) = (j.cursor("mqtt"), j.cursor("influxdb"));
    for i in 0..20 {
        j.append(reading("a", i));
    }
    j.sync().unwrap();
    disk.fill();
    j.ack(influx, 30);
    for i in 20..400 {
        j.append(reading("a", i));
    }
    assert!(j.failure().is_some());
    // The segment's last page may still take a few records; then memory holds the newest 50
    // and what came between is gone.
    let kept = positions(&j, 0);
    let lost: Vec<u64> = (0..400).filter(|p| !kept.contains(p)).collect();
    assert!(!lost.is_empty());
    assert!(kept.ends_with(&(350..400).collect::<Vec<_>>()), "{kept:?}");
    assert!(
        lost.windows(2).all(|w| w[1] == w[0] + 1),
        "one gap: {lost:?}"
    );
    assert_eq!(
        j.dropped(mqtt),
        lost.len() as u64,
        "every lost reading counted"
    );
    assert_eq!(
        j.dropped(influx),
        lost.iter().filter(|&&p| p >= 30).count() as u64,
        "influxdb had delivered up to 30"
    );
    assert_eq!(j.dropped_total(), j.dropped(mqtt) + j.dropped(influx));
    assert!(
        !lost.contains(&j.position(influx)),
        "a cursor never points into the gap"
    );
    assert_eq!(
        j.depth(mqtt),
        kept.len() as u64,
        "the gap is not counted as undelivered"
    );
    assert_eq!(
        positions(&j, lost[0]),
        (350..400).collect::<Vec<_>>(),
        "readers step over the gap"
    );

    let from = j.position(influx);
    assert_eq!(
        j.ack(influx, 400),
        kept.iter().filter(|&&p| p >= from).count() as u64,
        "a confirmation over the gap counts only the readings"
    );

    disk.free();
    j.sync_at(Instant::now() + Duration::from_secs(60)).unwrap();
    assert_eq!(j.failure(), None);
    drop(j);
    let (j, _) = Journal::open(&dir, opts()).unwrap();
    let mqtt = j.cursor("mqtt");
    assert_eq!(positions(&j, j.position(mqtt)), kept, "after a restart too");
    assert_eq!(
        j.dropped(mqtt),
        0,
        "counted once, in the run that dropped them"
    );
}

#[test]
fn a_disk_full_at_start_opens_in_memory_and_writes_when_space_returns() {
    let disk = crate::testing::Tmpfs::mount(256 << 10);
    let dir = disk.path().join("journal");
    fs::create_dir_all(&dir).unwrap();
    disk.fill();
    let (j, _) = Journal::open(
        &dir,
        Options {
            memory: 1 << 20,
            ..opts()
        },
    )
    .expect("a full disk is not a reason to refuse");
    let _c = j.cursor("mqtt");
    assert!(j.failure().is_some());
    for i in 0..10 {
        j.append(reading("a", i));
    }
    disk.free();
    j.sync_at(Instant::now() + Duration::from_secs(60)).unwrap();
    assert_eq!(j.failure(), None);
    drop(j);
    let (j, _) = Journal::open(&dir, opts()).unwrap();
    assert_eq!(positions(&j, 0), (0..10).collect::<Vec<_>>());
}

#[test]
fn memory_is_bounded_in_bytes_whatever_the_size_of_a_reading() {
    let dir = tempfile::tempdir().unwrap();
    let memory = 200 << 10;
    let (j, _) = Journal::open(
        dir.path(),
        Options {
            memory,
            ..Options::new(64 << 20, memory)
        },
    )
    .unwrap();
    let _stalled = j.cursor("mqtt");
    let wide = |i: u64| Reading {
        values: (0..60)
            .map(|q| (Arc::from(format!("q{q}_v").as_str()), i as f64))
            .collect(),
        ..reading("a", i)
    };
    for i in 0..5000 {
        j.append(wide(i));
        assert!(
            j.memory_bytes() <= memory,
            "{} > {memory}",
            j.memory_bytes()
        );
    }
    assert_eq!(j.dropped_total(), 0, "on disk, so nothing is lost");
    assert_eq!(positions(&j, 0).len(), 5000);
}
