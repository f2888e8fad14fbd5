//! The alert engine's cost: judging one reading against the example config's rules (every
//! built-in plus two threshold rules over three voltages), and one status tick of 1,000 meters.
use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use meterd::{
    alerts::rules::{Engine, MeterInfo, Status},
    config::{self, ProfileSet},
    reading::Reading,
    sim::MeterModel,
};

fn engine(meters: usize) -> Engine {
    let cfg = config::load_str(config::TEMPLATE, "meterd.example.toml").expect("example config");
    let infos: Vec<MeterInfo> = (0..meters)
        .map(|i| MeterInfo {
            id: format!("m-{i:04}"),
            bus: format!("b-{}", i / 100),
            profile: "eastron-sdm630".into(),
            labels: BTreeMap::from([("feeder".to_string(), "F12".to_string())]),
            interval: Duration::from_secs(5),
        })
        .collect();
    Engine::new("gw", cfg.alerts.rules, infos, SystemTime::now())
}

fn alerts(c: &mut Criterion) {
    let set = ProfileSet::builtin();
    let profile = set.get("eastron-sdm630").cloned().expect("profile");
    let values: Vec<(Arc<str>, f64)> = MeterModel::new(profile.clone(), 1, true)
        .values(Instant::now())
        .into_iter()
        .filter(|(q, _)| profile.quantities().any(|p| p == *q))
        .map(|(q, v)| (Arc::from(q), v))
        .collect();
    let mut e = engine(1000);
    let mut t = SystemTime::now();
    c.bench_function(
        &format!(
            "judge one SDM630 reading ({} values, example rules)",
            values.len()
        ),
        |b| {
            b.iter(|| {
                t += Duration::from_secs(5);
                let r = Reading {
                    meter: "m-0042".into(),
                    bus: "b-0".into(),
                    profile: "eastron-sdm630".into(),
                    ts: t,
                    seq: 0,
                    values: values.clone().into(),
                    on_demand: false,
                };
                black_box(e.on_reading(&r, t))
            })
        },
    );
    let now = SystemTime::now();
    let status = Status {
        meters: Some(
            (0..1000)
                .map(|i| (format!("m-{i:04}").into(), (Some(now), Some(true))))
                .collect(),
        ),
        journal_used: 0.1,
        ..Default::default()
    };
    let mut e = engine(1000);
    c.bench_function("status tick, 1,000 meters", |b| {
        b.iter(|| black_box(e.tick(&status, now)))
    });
}

criterion_group!(benches, alerts);
criterion_main!(benches);
