//! End to end: `meterd run` polls N simulated Modbus TCP meters (Eastron SDM630 profile, both
//! point groups every second) for a while; reports readings per second and the daemon's CPU
//! time. No sink (the null sink acknowledges), so this measures polling, decoding and the log.
//!
//! `cargo bench --bench e2e` (env: METERS=100 SECS=30 CONCURRENCY=8)
use std::{process::Command, time::Duration};

use meterd::{config::ProfileSet, sim::Simulator};

use meterd_testkit::harness;

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15; after the ")" they are at 11 and 12.
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let (meters, secs, conc) = (
        harness::env_or("METERS", 100),
        harness::env_or("SECS", 30),
        harness::env_or("CONCURRENCY", 8),
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let sim = Simulator::new();
    let profile = ProfileSet::builtin()
        .get("eastron-sdm630")
        .cloned()
        .expect("profile");
    for u in 1..=meters {
        sim.add_meter(u as u8, profile.clone(), false);
    }
    let addr = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let a = l.local_addr().expect("addr");
        tokio::spawn(sim.clone().serve_tcp(l));
        a
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = format!(
        "[gateway]\nid = \"bench\"\nstate_dir = \"{}\"\n[[bus]]\nname = \"tcp\"\nprotocol = \"modbus-tcp\"\ntcp = \"{addr}\"\nconcurrency = {conc}\n",
        dir.path().display()
    );
    for u in 1..=meters {
        cfg += &format!("[[bus.meter]]\nid = \"m{u}\"\nunit = {u}\nprofile = \"eastron-sdm630\"\ninterval = \"1s\"\n");
    }
    let (mut child, log) = harness::start_for_bench(dir.path(), &cfg);
    std::thread::sleep(Duration::from_secs(secs));
    let ticks = cpu_ticks(child.id());
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let readings = harness::readings_at_stop(&text).unwrap_or(0);
    let requests = sim.requests.load(std::sync::atomic::Ordering::Relaxed);
    let cpu = ticks as f64 / 100.0;
    println!(
        "e2e: {meters} Modbus TCP meters (SDM630, 2 groups at 1 s), concurrency {conc}, {secs} s"
    );
    println!(
        "  readings: {readings} ({:.1}/s; ideal {}/s)",
        readings as f64 / secs as f64,
        meters * 2
    );
    println!(
        "  requests: {requests} ({:.2} per reading)",
        requests as f64 / readings.max(1) as f64
    );
    println!(
        "  meterd CPU: {cpu:.2} s user+sys = {:.1}% of one core; {:.1} µs per reading",
        cpu / secs as f64 * 100.0,
        cpu * 1e6 / readings.max(1) as f64
    );
}
