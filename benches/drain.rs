//! Backlog drain after an outage: a one-hour backlog of 1,000 meters at 15 s intervals
//! (240,000 SDM630 readings of 27 values) sits in the journal; `meterd run` starts with live
//! polling of 1,000 simulated meters (5 Modbus TCP buses of 200) and delivers to a real
//! Mosquitto and InfluxDB 1.x. Measures how long until both sinks' cursors pass the backlog.
//!
//! `cargo bench --bench drain` (env: METERS=1000 MINUTES=60 INTERVAL_S=15)
use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use meterd::{
    config::ProfileSet,
    journal::{Journal, Options},
    reading::Reading,
    sim::Simulator,
};

use meterd_testkit::harness;
use meterd_testkit::servers;

fn cursor(path: &std::path::Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let (meters, minutes, interval) = (
        harness::env_or("METERS", 1000),
        harness::env_or("MINUTES", 60),
        harness::env_or("INTERVAL_S", 15),
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let broker = servers::mosquitto();
    let influx = servers::influxdb1();
    rt.block_on(servers::influxql(&influx, "", "CREATE DATABASE meters"));

    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let set = ProfileSet::builtin();
    let profile = set.get("eastron-sdm630").cloned().expect("profile");
    let quantities: Vec<Arc<str>> = profile.groups[0]
        .points
        .iter()
        .map(|p| p.quantity.clone())
        .collect();
    // The backlog: what the meters would have delivered during the outage.
    let per_meter = minutes * 60 / interval;
    let backlog = meters * per_meter;
    let t_fill = Instant::now();
    {
        let (journal, _) =
            Journal::open(&state.join("journal"), Options::new(1 << 30, 8 << 20)).expect("journal");
        let start = SystemTime::now() - Duration::from_secs(minutes * 60);
        for k in 0..per_meter {
            for m in 0..meters {
                let bus = m / 200;
                journal.append(Reading {
                    meter: format!("m{m}").into(),
                    bus: format!("tcp-{bus}").into(),
                    profile: "eastron-sdm630".into(),
                    ts: start + Duration::from_secs(k * interval) + Duration::from_millis(m),
                    seq: 0,
                    values: quantities
                        .iter()
                        .enumerate()
                        .map(|(i, q)| (q.clone(), 230.0 + i as f64 + (k % 10) as f64 / 10.0))
                        .collect(),
                    on_demand: false,
                });
            }
        }
        journal.sync().expect("sync");
    }
    println!(
        "backlog: {backlog} readings written in {:.1} s",
        t_fill.elapsed().as_secs_f64()
    );

    // Live meters, polled while the backlog drains.
    let mut cfg = format!(
        "[gateway]\nid = \"bench\"\nstate_dir = \"{}\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n\
         [influxdb]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"meters\"\n[journal]\nfsync = \"100ms\"\n",
        state.display(),
        broker.port,
        influx.url()
    );
    let sims: Vec<String> = (0..meters.div_ceil(200))
        .map(|b| {
            let sim = Simulator::new();
            for u in 0..200.min(meters - b * 200) {
                sim.add_meter(u as u8 + 1, profile.clone(), false);
            }
            rt.block_on(async {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let a = l.local_addr().expect("addr").to_string();
                tokio::spawn(sim.serve_tcp(l));
                a
            })
        })
        .collect();
    for (b, addr) in sims.iter().enumerate() {
        cfg += &format!("[[bus]]\nname = \"tcp-{b}\"\nprotocol = \"modbus-tcp\"\ntcp = \"{addr}\"\nconcurrency = 4\n");
        for u in 0..200.min(meters - b as u64 * 200) {
            cfg += &format!(
                "[[bus.meter]]\nid = \"m{}\"\nunit = {}\nprofile = \"eastron-sdm630\"\nintervals = {{ realtime = \"{interval}s\", energy = \"15m\" }}\n",
                b as u64 * 200 + u,
                u + 1
            );
        }
    }
    let t0 = Instant::now();
    let (mut child, log) = harness::start_for_bench(dir.path(), &cfg);
    let jdir = state.join("journal");
    let (mut mqtt_done, mut influx_done) = (None, None);
    while (mqtt_done.is_none() || influx_done.is_none()) && t0.elapsed() < Duration::from_secs(900)
    {
        std::thread::sleep(Duration::from_millis(100));
        if mqtt_done.is_none() && cursor(&jdir.join("mqtt.cursor")) >= backlog {
            mqtt_done = Some(t0.elapsed());
        }
        if influx_done.is_none() && cursor(&jdir.join("influxdb.cursor")) >= backlog {
            influx_done = Some(t0.elapsed());
        }
    }
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let total = harness::readings_at_stop(&text).unwrap_or(0);
    let outage = (minutes * 60) as f64;
    println!("drain: {backlog} readings of a {minutes} min outage, {meters} meters at {interval} s, live polling on");
    for (sink, done) in [("mqtt", mqtt_done), ("influxdb", influx_done)] {
        match done {
            Some(d) => println!(
                "  {sink}: drained in {:.1} s = {:.0} readings/s = {:.0}x real time",
                d.as_secs_f64(),
                backlog as f64 / d.as_secs_f64(),
                outage / d.as_secs_f64()
            ),
            None => println!("  {sink}: did not drain within 900 s"),
        }
    }
    println!(
        "  live readings journaled meanwhile: {}",
        total.saturating_sub(backlog)
    );
}
