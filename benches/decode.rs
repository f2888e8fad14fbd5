//! Register-map decoding and request planning, per full meter read.
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use meterd::{config::ProfileSet, sim::MeterModel};
use std::time::Instant;

fn sdm630_full_read(c: &mut Criterion) {
    let set = ProfileSet::builtin();
    let profile = set.get("eastron-sdm630").cloned().expect("profile");
    let mut model = MeterModel::new(profile.clone(), 1, true);
    let now = Instant::now();
    let plans: Vec<_> = profile.groups.iter().map(|g| g.plan(125, 16)).collect();
    let replies: Vec<Vec<Vec<u16>>> = plans
        .iter()
        .map(|blocks| {
            blocks
                .iter()
                .map(|b| {
                    model
                        .registers(b.kind, b.start, b.count, now)
                        .expect("registers")
                })
                .collect()
        })
        .collect();
    c.bench_function("plan SDM630 (all groups)", |b| {
        b.iter(|| {
            profile
                .groups
                .iter()
                .map(|g| g.plan(125, 16).len())
                .sum::<usize>()
        })
    });
    c.bench_function("decode SDM630 full read (32 values)", |b| {
        b.iter(|| {
            let mut n = 0;
            for (g, blocks) in plans.iter().enumerate() {
                for (block, words) in blocks.iter().zip(&replies[g]) {
                    n += block
                        .decode(&profile.groups[g].points, black_box(words))
                        .count();
                }
            }
            n
        })
    });
}

fn dlt645_frames(c: &mut Criterion) {
    use meterd::protocols::dlt645::{di, frame, Version};
    // A reply to 0201FF00 (three phase voltages) with a 4-byte FE preamble.
    let reply = frame::Frame::new(
        "123456789012".parse().expect("address"),
        0x91,
        vec![0x00, 0xFF, 0x01, 0x02, 0x01, 0x23, 0x05, 0x23, 0x99, 0x22],
    )
    .encode(4)
    .expect("encode");
    c.bench_function("dlt645: scan + decode a block reply (3 values)", |b| {
        b.iter(|| {
            let frame::Scan::Frame(f, _) = frame::scan(black_box(&reply)) else {
                unreachable!()
            };
            di::decode_values(Version::V2007, 0x0201_FF00, &f.data[4..])
                .expect("values")
                .len()
        })
    });
}

criterion_group!(benches, sdm630_full_read, dlt645_frames);
criterion_main!(benches);
