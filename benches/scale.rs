//! meterd at scale, with real Mosquitto and InfluxDB, simulators in processes of their own
//! (see `meterd_testkit::scale`). Prints one Markdown table; BENCHMARKS.md holds it.
//!
//! `cargo bench --bench scale` runs, in order:
//! 1. the workload of issue 12: 100 meters of 8 float32 values (one FC4 read) every second,
//!    journal + MQTT QoS 1 + InfluxDB 1.x;
//! 2. and 3. SDM630 meters (32 values, both groups every second) at 10, 100, 1,000 and 2,000
//!    meters, journal + MQTT QoS 1 + VictoriaMetrics (InfluxDB v2 write API);
//! 4. idle: 1,000 SDM630 meters at 15 minutes, measured between polls;
//! 5. opt-in (`TARGETS=1,5`): Node-RED 4 + node-red-contrib-modbus on target 1's workload, one
//!    MQTT message per value at QoS 0, right after target 1 for the ratio the issue asks for
//!    (installed with npm into `target/node-red` on first use; see `meterd_testkit::node_red`);
//! 6. opt-in (`TARGETS=1,6`): where target 1's CPU goes, stage by stage: the same workload
//!    into the journal only, then with MQTT (target 1 adds InfluxDB).
//!
//! Environment: `TARGETS=1,2,4` (which to run), `METERS=10,100,1000,2000` (target 2's
//! sizes), `SECS=30` (window), `WARMUP=10`, `IDLE_SECS=60`, `MQTT_INFLIGHT` (`mqtt.inflight`;
//! meterd's default when unset). `METERD_BIN` runs another build (see `meterd_testkit`).
//!
//! Without `METERD_BIN`, the bench first builds meterd as it ships (`cargo build --release`,
//! into `target/shipped`) and measures that. The binary `cargo bench` builds beside the
//! bench is not it: there, the dev-dependencies' features join the build's (tokio's
//! `test-util`, more of regex, …), and that binary was 0.5 MB larger, 0.6 MiB more RSS
//! and its CPU differed by about 10 % from the shipped one's (BENCHMARKS.md, "Seventh session").
use std::{path::PathBuf, process::Command, time::Duration};

use meterd_testkit::{
    harness::env_or,
    node_red,
    scale::{self, Influx, Model, Scenario},
};

fn list(name: &str, default: &str) -> Vec<u64> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect()
}

/// meterd as `cargo build --release` builds it, in a target directory of its own so that
/// `cargo bench` does not replace it with its own build of the binary.
fn shipped_build() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("shipped");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "building meterd as it ships (cargo build --release) into {}",
        target.display()
    );
    let status = Command::new(cargo)
        .current_dir(&root)
        .args(["build", "--release", "--bin", "meterd", "--target-dir"])
        .arg(&target)
        .status();
    match status {
        Ok(s) if s.success() => target.join("release").join("meterd"),
        other => panic!("cargo build --release failed: {other:?}"),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    if std::env::var_os("METERD_BIN").is_none() {
        // Set before any thread starts.
        std::env::set_var("METERD_BIN", shipped_build());
    }
    let targets = list("TARGETS", "1,2,4");
    let window = Duration::from_secs(env_or("SECS", 30));
    let warmup = Duration::from_secs(env_or("WARMUP", 10));
    let base = Scenario {
        meters: 100,
        model: Model::Eight,
        interval: Duration::from_secs(1),
        warmup,
        window,
        mqtt: true,
        influx: Influx::V1,
        per_sim: 200,
        concurrency: 8,
    };
    let mut runs = Vec::new();
    if targets.contains(&1) {
        runs.push(("1: issue workload, MQTT + InfluxDB 1.x", base.clone()));
    }
    if targets.contains(&5) {
        runs.push((
            "5: Node-RED on target 1's workload, MQTT QoS 0",
            base.clone(),
        ));
    }
    if targets.contains(&6) {
        runs.push((
            "6: target 1's workload, journal only",
            Scenario {
                mqtt: false,
                influx: Influx::None,
                ..base.clone()
            },
        ));
        runs.push((
            "6: target 1's workload, journal + MQTT",
            Scenario {
                influx: Influx::None,
                ..base.clone()
            },
        ));
    }
    if targets.contains(&2) || targets.contains(&3) {
        for n in list("METERS", "10,100,1000,2000") {
            runs.push((
                "2/3: SDM630, MQTT + VictoriaMetrics",
                Scenario {
                    meters: n as usize,
                    model: Model::Sdm630,
                    influx: Influx::V2,
                    ..base.clone()
                },
            ));
        }
    }
    if targets.contains(&4) {
        runs.push((
            "4: idle, 1,000 SDM630 at 15 min",
            Scenario {
                meters: 1000,
                model: Model::Sdm630,
                influx: Influx::V2,
                interval: Duration::from_secs(900),
                // Past the first poll of every meter (all are first due at start).
                warmup: warmup.max(Duration::from_secs(20)),
                window: Duration::from_secs(env_or("IDLE_SECS", 60)),
                ..base.clone()
            },
        ));
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut rows = Vec::new();
    let mut per_1000 = Vec::new();
    for (what, s) in &runs {
        eprintln!("running {what}: {} meters ...", s.meters);
        let r = if what.starts_with("5:") {
            rt.block_on(node_red::run(s))
        } else {
            rt.block_on(scale::run(s))
        };
        let row = format!("| {what} {}", scale::row(s, &r));
        eprintln!("{row}");
        rows.push(row);
        per_1000.push((
            what.split(':').next().unwrap_or(""),
            r.cpu_s_per_1000_values(),
        ));
    }
    let (names, rule) = scale::HEADER
        .split_once('\n')
        .unwrap_or((scale::HEADER, ""));
    println!("| target {names}\n|---{rule}");
    for r in rows {
        println!("{r}");
    }
    let of = |t: &str| per_1000.iter().find(|(w, _)| *w == t).map(|(_, v)| *v);
    if let (Some(meterd), Some(red)) = (of("1"), of("5")) {
        println!(
            "\nNode-RED used {:.1}× meterd's CPU per value (target 1: at least 20×).",
            red / meterd
        );
    }
}
