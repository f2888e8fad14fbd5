//! The journal on a real file system: recovery from each kind of damage, cursors, size bound,
//! and a property test against an in-memory model.

use std::{path::Path, time::Duration};

use proptest::prelude::*;

use super::*;
use std::{
    fs::{self, OpenOptions},
    io::Write,
};

pub(super) fn reading(meter: &str, i: u64) -> Reading {
    Reading {
        meter: meter.into(),
        bus: "rs485-1".into(),
        profile: "eastron-sdm120".into(),
        ts: SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_768_205_000 + i),
        seq: 0,
        values: vec![
            ("voltage_l1_v".into(), 230.0 + (i % 10) as f64 / 10.0),
            ("energy_import_kwh".into(), 12345678.91 + i as f64),
        ]
        .into(),
        on_demand: false,
    }
}

pub(super) fn opts() -> Options {
    Options {
        max_size: 64 << 20,
        segment_size: 4096,
        memory: 8 * footprint(&reading("a", 0)),
        retry: Duration::ZERO,
        cursor_every: crate::journal::DEFAULT_CURSOR_SYNC,
    }
}

fn open(dir: &Path) -> (Journal, OpenReport) {
    Journal::open(dir, opts()).expect("open")
}

fn fill(j: &Journal, n: u64) {
    for i in 0..n {
        j.append(reading(if i % 2 == 0 { "a" } else { "b" }, i));
    }
    j.sync().expect("sync");
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

pub(super) fn positions(j: &Journal, from: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut pos = from;
    loop {
        let batch = j.read_from(pos, 7).unwrap();
        let Some(last) = batch.last() else { return out };
        pos = last.0 + 1;
        out.extend(batch.iter().map(|(p, _)| *p));
    }
}

#[test]
fn readings_survive_a_reopen_with_their_positions_seqs_and_values() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (j, _) = open(dir.path());
        fill(&j, 100);
    }
    let (j, _) = open(dir.path());
    let all = j.read_from(0, 1000).unwrap();
    assert_eq!(all.len(), 100);
    assert_eq!(positions(&j, 0), (0..100).collect::<Vec<_>>());
    let r = &j.read_from(41, 1).unwrap()[0].1;
    assert_eq!(&*r.meter, "b");
    assert_eq!(r.seq, 21);
    assert_eq!(r.values.nums()[0], 230.1);
    assert_eq!(r.values.nums()[1], 12345678.91 + 41.0);
    assert_eq!(
        r.ts,
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_768_205_041)
    );
    // New readings continue the positions and each meter's seq.
    assert_eq!(j.end(), 100);
    assert_eq!(j.append(reading("a", 100)).seq, 51);
}

#[test]
fn a_truncated_last_record_is_cut_off_and_the_rest_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (j, _) = open(dir.path());
        fill(&j, 10);
    }
    let seg = segments(dir.path()).pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let (j, report) = open(dir.path());
    assert_eq!(
        report.truncated_bytes,
        len - 5 - fs::metadata(&seg).unwrap().len()
    );
    assert!(report.truncated_bytes > 0);
    assert_eq!(positions(&j, 0), (0..9).collect::<Vec<_>>());
    assert_eq!(j.end(), 9, "the torn reading's position is given again");
}

#[test]
fn a_bad_checksum_mid_segment_skips_only_that_record() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (j, _) = open(dir.path());
        fill(&j, 10);
    }
    let seg = segments(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    // Find the 5th reading record (position 4) and flip a byte of its payload.
    let mut offset = format::FILE_HEADER.len();
    let mut readings = 0;
    loop {
        let (payload, len) = format::read_frame(&bytes[offset..]).unwrap();
        if payload[0] == 2 {
            if readings == 4 {
                bytes[offset + format::FRAME_HEADER + 3] ^= 0xFF;
                break;
            }
            readings += 1;
        }
        offset += len;
    }
    fs::write(&seg, &bytes).unwrap();
    let (j, report) = open(dir.path());
    assert_eq!(report.skipped_regions, 1);
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(positions(&j, 0), [0, 1, 2, 3, 5, 6, 7, 8, 9]);
    assert_eq!(j.end(), 10);
}

#[test]
fn a_zero_filled_tail_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (j, _) = open(dir.path());
        fill(&j, 10);
    }
    let seg = segments(dir.path()).pop().unwrap();
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[0u8; 4096]).unwrap();
    drop(f);
    let (j, report) = open(dir.path());
    assert_eq!(report.truncated_bytes, 4096);
    assert_eq!(positions(&j, 0), (0..10).collect::<Vec<_>>());
}

#[test]
fn a_missing_cursor_file_replays_from_the_oldest_reading() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (j, _) = open(dir.path());
        let c = j.cursor("mqtt");
        fill(&j, 10);
        j.ack(c, 6);
        j.sync().unwrap();
    }
    {
        let (j, _) = open(dir.path());
        assert_eq!(j.position(j.cursor("mqtt")), 6, "the cursor file says 6");
    }
    fs::remove_file(dir.path().join("mqtt.cursor")).unwrap();
    let (j, _) = open(dir.path());
    assert_eq!(
        j.position(j.cursor("mqtt")),
        0,
        "without it: everything again, nothing lost"
    );
}

#[test]
fn the_group_commit_writes_moved_cursors_every_cursor_sync_and_a_clean_stop_always() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = open(dir.path());
    let file = dir.path().join("mqtt.cursor");
    let on_disk = || super::cursor::read_cursor(&file).unwrap();
    let c = j.cursor("mqtt");
    fill(&j, 10); // and a full sync, which writes the cursor at 0
    let t0 = Instant::now();
    let every = opts().cursor_every;
    // (acknowledged up to, commit at (after the full sync), cursor file after)
    for (acked, at, expected) in [
        (3, Duration::ZERO, Some(0)),
        (6, Duration::from_secs(1), Some(0)),
        (7, every, Some(7)),
        (8, every + Duration::from_secs(1), Some(7)),
        (8, every * 2, Some(8)),
        (9, every * 2 + Duration::from_secs(1), Some(8)),
    ] {
        j.ack(c, acked);
        j.commit_at(t0 + at).unwrap();
        assert_eq!(on_disk(), expected, "acked {acked}, commit at {at:?}");
    }
    j.sync().unwrap();
    assert_eq!(on_disk(), Some(9), "a clean stop writes every moved cursor");
}

#[test]
fn a_cursor_pointing_past_the_end_is_clamped() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (j, _) = open(dir.path());
        fill(&j, 10);
    }
    write_cursor(dir.path(), "influxdb", 5000).unwrap();
    let (j, _) = open(dir.path());
    let c = j.cursor("influxdb");
    assert_eq!(j.position(c), 10);
    assert!(j.read_from(j.position(c), 10).unwrap().is_empty());
    j.append(reading("a", 10));
    assert_eq!(
        j.read_from(j.position(c), 10).unwrap()[0].0,
        10,
        "new readings reach it"
    );
}

#[test]
fn a_corrupt_cursor_file_replays_from_the_oldest_reading() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (j, _) = open(dir.path());
        fill(&j, 10);
    }
    fs::write(dir.path().join("mqtt.cursor"), "7 deadbeef\n").unwrap();
    let (j, _) = open(dir.path());
    assert_eq!(j.position(j.cursor("mqtt")), 0);
}

#[test]
fn a_segment_deleted_under_a_reader_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = open(dir.path());
    fill(&j, 600);
    let segs = segments(dir.path());
    assert!(segs.len() >= 3, "{segs:?}");
    fs::remove_file(&segs[1]).unwrap();
    let got = positions(&j, 0);
    assert_eq!(got.first(), Some(&0));
    assert_eq!(got.last(), Some(&599));
    let second_first: u64 = segs[2]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(got.windows(2).all(|w| w[1] > w[0]), "in order");
    assert!(got.contains(&second_first));
    assert!(got.len() < 600, "the deleted segment's readings are gone");
}

#[test]
fn delivered_segments_are_deleted_once_every_sink_is_past_them() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = open(dir.path());
    let (a, b) = (j.cursor("a"), j.cursor("b"));
    fill(&j, 200);
    let before = segments(dir.path()).len();
    j.ack(a, 200);
    assert_eq!(
        segments(dir.path()).len(),
        before,
        "b has not delivered them"
    );
    j.ack(b, 200);
    assert_eq!(
        segments(dir.path()).len(),
        1,
        "only the segment being written stays"
    );
}

#[test]
fn a_sink_removed_by_a_reload_holds_nothing_back_and_a_restarted_one_keeps_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = open(dir.path());
    let (a, b) = (j.cursor("a"), j.cursor("b"));
    fill(&j, 200);
    j.ack(a, 150);
    assert_eq!(j.cursor("a"), a, "asking again gives the same cursor");
    assert_eq!(j.position(j.cursor("a")), 150);
    // On disk: the earliest time in the segment holding it, never younger than the truth.
    let on_disk = j.oldest_undelivered(a).unwrap();
    assert!(on_disk <= reading("a", 150).ts && on_disk >= reading("a", 0).ts);
    let before = segments(dir.path()).len();
    j.release(b);
    let after = segments(dir.path()).len();
    assert!(
        after < before,
        "b no longer holds segments: {before} → {after}"
    );
    j.ack(a, 197);
    assert_eq!(
        j.oldest_undelivered(a),
        Some(reading("a", 197).ts),
        "in memory: exact"
    );
    j.ack(a, 200);
    assert_eq!(segments(dir.path()).len(), 1);
    assert_eq!(j.oldest_undelivered(a), None);
}

#[test]
fn the_age_of_a_backlog_is_known_after_a_reopen_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = open(dir.path());
    let _a = j.cursor("a");
    fill(&j, 200);
    drop(j);
    let (j, _) = open(dir.path());
    let a = j.cursor("a");
    assert_eq!(j.position(a), 0);
    assert_eq!(j.oldest_undelivered(a), Some(reading("a", 0).ts));
}

#[test]
fn a_full_journal_drops_the_oldest_segment_and_counts_it_per_sink() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(
        dir.path(),
        Options {
            max_size: 16 << 10,
            segment_size: 4096,
            memory: 8 * footprint(&reading("a", 0)),
            retry: Duration::ZERO,
            cursor_every: crate::journal::DEFAULT_CURSOR_SYNC,
        },
    )
    .unwrap();
    let (fast, slow) = (j.cursor("fast"), j.cursor("slow"));
    for i in 0..1000 {
        j.append(reading("a", i));
        j.ack(fast, i + 1);
    }
    let total: u64 = segments(dir.path())
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert!(total <= (16 << 10) + 4096, "{total} bytes on disk");
    assert_eq!(j.dropped(fast), 0);
    assert!(j.dropped(slow) > 0);
    assert_eq!(
        j.position(slow),
        j.dropped(slow),
        "it lost exactly the dropped readings"
    );
    let got = positions(&j, j.position(slow));
    assert_eq!(got.len() as u64, 1000 - j.dropped(slow));
}

#[test]
fn an_unwritable_directory_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    fs::write(&file, "x").unwrap();
    let err = Journal::open(&file.join("journal"), opts()).unwrap_err();
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

#[derive(Debug, Clone)]
enum Op {
    Append(u8),
    Ack(usize, u8),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..3).prop_map(Op::Append),
        2 => (0usize..2, 0u8..20).prop_map(|(c, n)| Op::Ack(c, n)),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn the_journal_behaves_like_a_list_with_cursors(ops in proptest::collection::vec(op(), 1..150)) {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = open(dir.path());
        let mut cursors = [j.cursor("s0"), j.cursor("s1")];
        // The model: every reading ever appended, and each sink's position.
        let mut model: Vec<(String, u64, u64)> = Vec::new();
        let mut model_pos = [0u64; 2];
        let mut seqs = std::collections::HashMap::new();
        for op in ops {
            match op {
                Op::Append(m) => {
                    let meter = format!("m{m}");
                    let seq = seqs.entry(meter.clone()).or_insert(0u64);
                    *seq += 1;
                    let i = model.len() as u64;
                    let stored = j.append(reading(&meter, i));
                    prop_assert_eq!(stored.seq, *seq);
                    model.push((meter, *seq, i));
                }
                Op::Ack(c, n) => {
                    let upto = (model_pos[c] + u64::from(n)).min(model.len() as u64);
                    j.ack(cursors[c], upto);
                    model_pos[c] = upto;
                }
                Op::Reopen => {
                    j.sync().unwrap();
                    drop(j);
                    let (nj, _) = open(dir.path());
                    j = nj;
                    cursors = [j.cursor("s0"), j.cursor("s1")];
                }
            }
            for c in 0..2 {
                prop_assert_eq!(j.position(cursors[c]), model_pos[c]);
                let got = positions(&j, j.position(cursors[c]));
                let expected: Vec<u64> = (model_pos[c]..model.len() as u64).collect();
                prop_assert_eq!(&got, &expected);
                if let Some(&p) = got.first() {
                    let r = &j.read_from(p, 1).unwrap()[0].1;
                    let (meter, seq, i) = &model[p as usize];
                    prop_assert_eq!(&*r.meter, meter.as_str());
                    prop_assert_eq!(r.seq, *seq);
                    prop_assert_eq!(r.values.nums()[1], 12345678.91 + *i as f64);
                }
            }
        }
    }
}

#[test]
fn a_sink_that_was_down_gets_its_backlog_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (j, _) = open(dir.path());
        let (mqtt, influx) = (j.cursor("mqtt"), j.cursor("influxdb"));
        fill(&j, 60);
        j.ack(mqtt, 60);
        j.ack(influx, 60);
        j.sync().unwrap();
    }
    {
        // MQTT is down during this run; InfluxDB delivers everything.
        let (j, _) = open(dir.path());
        let (mqtt, influx) = (j.cursor("mqtt"), j.cursor("influxdb"));
        assert_eq!(j.position(mqtt), 60);
        for i in 60..78 {
            j.append(reading("a", i));
        }
        j.ack(influx, 78);
        j.sync().unwrap();
    }
    let (j, _) = open(dir.path());
    let (mqtt, _influx) = (j.cursor("mqtt"), j.cursor("influxdb"));
    assert_eq!(j.position(mqtt), 60);
    assert_eq!(positions(&j, 60), (60..78).collect::<Vec<_>>());
}

#[test]
fn the_group_commit_fsyncs_only_what_was_written_since_the_last_one() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = open(dir.path());
    let state = |j: &Journal| {
        let g = j.lock();
        let w = g
            .disk
            .as_ref()
            .and_then(|d| d.writer.as_ref())
            .expect("writer");
        (w.len, w.synced)
    };
    fill(&j, 3);
    let (len, synced) = state(&j);
    assert_eq!(synced, len, "everything written is on the medium");
    j.sync().unwrap();
    assert_eq!(state(&j), (len, len), "nothing new: nothing to fsync");
    j.append(reading("a", 9));
    j.sync().unwrap();
    let (len2, synced2) = state(&j);
    assert!(len2 > len);
    assert_eq!(synced2, len2);
}

#[test]
fn the_shapes_of_meters_with_the_same_quantities_share_one_list_of_names() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(
        dir.path(),
        Options {
            segment_size: 1 << 20,
            ..opts()
        },
    )
    .expect("open");
    for (i, meter) in ["a", "b", "c"].into_iter().enumerate() {
        // Each reading names its quantities with strings of its own, as after a reload.
        j.append(reading(meter, i as u64));
    }
    let mut other = reading("d", 9);
    other.values = other
        .values
        .iter()
        .take(1)
        .map(|(q, v)| (q.clone(), v))
        .collect();
    j.append(other);
    let g = j.lock();
    let w = g
        .disk
        .as_ref()
        .and_then(|d| d.writer.as_ref())
        .expect("a segment being written");
    assert_eq!(w.shapes.len(), 4);
    assert_eq!(w.lists.len(), 2, "one list per distinct set of quantities");
    let list = |m: &str| w.shapes[m][0].1.quantities.clone();
    assert!(Arc::ptr_eq(&list("a"), &list("c")));
    assert_eq!(&*list("d"), &[Arc::<str>::from("voltage_l1_v")]);
}
