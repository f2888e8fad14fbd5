//! Modbus RTU over real ptys: the simulator's own pty, and a pair made by socat.

use std::{path::Path, process::Command, time::Duration};

use meterd::{
    config::{raw::Parity, ProfileSet, SerialConfig},
    sim::{self, Pacing, Simulator},
};

use crate::{harness::tolerance, servers};

fn read_json(device: &Path, unit: u8, profile: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_meterd"))
        .args(["read", "--serial"])
        .arg(device)
        .args([
            "--baud",
            "9600",
            "--timeout",
            "500ms",
            "--unit",
            &unit.to_string(),
            "--profile",
            profile,
            "--json",
        ])
        .output()
        .expect("run meterd read");
    assert!(
        out.status.success(),
        "meterd read failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

fn check(sim: &Simulator, unit: u8, profile: &str, got: &serde_json::Value) {
    let simulated = sim.values(unit).unwrap();
    let values = got["values"].as_object().expect("values");
    assert!(values.len() >= 7, "{got}");
    for (q, v) in values {
        let expected = simulated[q.as_str()];
        let v = v.as_f64().unwrap();
        assert!(
            (v - expected).abs() <= tolerance(profile, q, expected),
            "{q}: {v} vs {expected}"
        );
    }
    assert_eq!(got["errors"].as_array().map(Vec::len), Some(0), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meterd_reads_rtu_meters_on_the_simulators_own_pty() {
    let set = ProfileSet::builtin();
    let sim = Simulator::new();
    sim.add_meter(1, set.get("eastron-sdm120").cloned().unwrap(), true);
    sim.add_meter(2, set.get("chint-ddsu666").cloned().unwrap(), true);
    let (master, _keep, path) = sim::pty_pair().expect("pty");
    tokio::spawn(sim.clone().serve_rtu(master));
    let path = std::path::PathBuf::from(path);
    let got = tokio::task::spawn_blocking(move || {
        (
            read_json(&path, 1, "eastron-sdm120"),
            read_json(&path, 2, "chint-ddsu666"),
        )
    })
    .await
    .unwrap();
    check(&sim, 1, "eastron-sdm120", &got.0);
    check(&sim, 2, "chint-ddsu666", &got.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_simulator_answers_at_line_speed_and_counts_the_line_busy() {
    // 9600 baud 8N1 with a 30 ms turnaround: a request is 8 bytes and a reply at least 5, so
    // each transaction keeps the line busy for at least 30 ms + 13 × 10 / 9600 s.
    let pacing = Pacing {
        baud: 9600,
        bits_per_char: 10,
        reply_delay: Duration::from_millis(30),
    };
    assert_eq!(pacing.wire_time(960), Duration::from_secs(1));
    let sim = Simulator::paced(pacing);
    sim.add_meter(
        1,
        ProfileSet::builtin()
            .get("eastron-sdm120")
            .cloned()
            .unwrap(),
        true,
    );
    let (master, _keep, path) = sim::pty_pair().expect("pty");
    tokio::spawn(sim.clone().serve_rtu(master));
    let path = std::path::PathBuf::from(path);
    let started = std::time::Instant::now();
    let got = tokio::task::spawn_blocking(move || read_json(&path, 1, "eastron-sdm120"))
        .await
        .unwrap();
    let elapsed = started.elapsed();
    check(&sim, 1, "eastron-sdm120", &got);
    let requests = sim.requests.load(std::sync::atomic::Ordering::Relaxed);
    let busy = Duration::from_nanos(sim.busy_ns.load(std::sync::atomic::Ordering::Relaxed));
    let least = (pacing.reply_delay + pacing.wire_time(8 + 5)) * u32::try_from(requests).unwrap();
    assert!(requests >= 1);
    assert!(
        busy >= least,
        "{requests} transactions busy for only {busy:?}"
    );
    assert!(
        elapsed >= busy,
        "the reads took {elapsed:?}, less than the line time {busy:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meterd_reads_rtu_meters_through_a_socat_pty_pair() {
    let socat = servers::binary("socat", "socat");
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("meters"), dir.path().join("gateway"));
    let mut child = Command::new(socat)
        .arg(format!("pty,raw,echo=0,link={}", a.display()))
        .arg(format!("pty,raw,echo=0,link={}", b.display()))
        .spawn()
        .expect("start socat");
    for _ in 0..100 {
        if a.exists() && b.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let set = ProfileSet::builtin();
    let sim = Simulator::new();
    sim.add_meter(7, set.get("eastron-sdm120").cloned().unwrap(), true);
    let port = meterd::bus::link::open_serial(&SerialConfig {
        device: a.clone(),
        baud: 9600,
        parity: Parity::None,
        data_bits: 8,
        stop_bits: 1,
    })
    .expect("open the simulator's end");
    tokio::spawn(sim.clone().serve_rtu(port));
    let got = tokio::task::spawn_blocking(move || read_json(&b, 7, "eastron-sdm120"))
        .await
        .unwrap();
    check(&sim, 7, "eastron-sdm120", &got);
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meterd_reads_rtu_frames_through_a_serial_device_server_over_tcp() {
    let set = ProfileSet::builtin();
    let sim = Simulator::new();
    sim.add_meter(3, set.get("chint-dtsu666").cloned().unwrap(), true);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = sim.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(server.clone().serve_rtu(sock));
        }
    });
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_meterd"))
            .args([
                "read",
                "--protocol",
                "modbus-rtu-over-tcp",
                "--addr",
                &addr,
                "--unit",
                "3",
            ])
            .args(["--profile", "chint-dtsu666", "--json", "--timeout", "500ms"])
            .output()
            .expect("run meterd read")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    check(&sim, 3, "chint-dtsu666", &got);
}
