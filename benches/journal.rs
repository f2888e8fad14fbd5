//! Journal append throughput and bytes per reading on disk.
//! `cargo bench --bench journal`
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use meterd::{
    config::ProfileSet,
    journal::{Journal, Options},
    reading::Reading,
};

/// An SDM630 realtime reading: 27 values as a meter reports them.
fn sdm630_reading(i: u64) -> Reading {
    let set = ProfileSet::builtin();
    let profile = set.get("eastron-sdm630").expect("profile");
    let values = profile.groups[0]
        .points
        .iter()
        .enumerate()
        .map(|(k, p)| {
            (
                p.quantity.clone(),
                230.1 + k as f64 * 1.7 + (i % 50) as f64 / 10.0,
            )
        })
        .collect();
    Reading {
        meter: format!("m-{:04}", i % 1000).into(),
        bus: "rs485-1".into(),
        profile: "eastron-sdm630".into(),
        ts: SystemTime::now(),
        seq: 0,
        values,
        on_demand: false,
    }
}

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (journal, _) = Journal::open(dir.path(), Options::new(1 << 30, 8 << 20)).expect("journal");
    let readings: Vec<Reading> = (0..1000).map(sdm630_reading).collect();
    let mut group = c.benchmark_group("journal");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(5));
    let mut i = 0usize;
    group.bench_function("append one SDM630 reading (27 values)", |b| {
        b.iter(|| {
            journal.append(readings[i % readings.len()].clone());
            i += 1;
        })
    });
    group.finish();
    journal.sync().expect("sync");
    let bytes: u64 = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "journal: {} readings, {bytes} bytes on disk = {:.1} bytes per reading (27 values)",
        journal.end(),
        bytes as f64 / journal.end().max(1) as f64
    );
}

criterion_group!(benches, append);
criterion_main!(benches);
