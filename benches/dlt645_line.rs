//! Line utilisation on a simulated DL/T 645-2007 bus: `meterd run` polls 16 meters as often as
//! it can over a pty paced at 2400 baud, each meter replying after 30 ms. The simulator counts
//! the time the line is busy (request and reply on the wire, the meter's reply delay); the
//! standard also wants ≥ 20 ms of silence before each request. Reported: busy share of the
//! wall time, and that share against the most the baud rate, reply delay and gap allow.
//!
//! `cargo bench --bench dlt645_line` (env: METERS=16 SECS=20)
use std::{sync::atomic::Ordering, time::Duration};

use meterd::{
    config::ProfileSet,
    protocols::dlt645::{Address, Version},
    sim::{self, dlt645::Dlt645Sim},
};

use meterd_testkit::harness;

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let (meters, secs) = (harness::env_or("METERS", 16), harness::env_or("SECS", 20));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let sim = Dlt645Sim::new(Version::V2007, Some(2400));
    let profile = ProfileSet::builtin()
        .get("dlt645-2007-three-phase")
        .cloned()
        .expect("profile");
    let dir = tempfile::tempdir().expect("tempdir");
    let (master, _keep, pty) = rt.block_on(async { sim::pty_pair() }).expect("pty");
    let mut cfg = format!(
        "[gateway]\nid = \"bench\"\nstate_dir = \"{}\"\n[[bus]]\nname = \"dl\"\nprotocol = \"dlt645-2007\"\nserial = {{ device = \"{pty}\" }}\n",
        dir.path().display()
    );
    for m in 1..=meters {
        let address: Address = m.to_string().parse().expect("address");
        sim.add_meter(address, profile.clone(), false);
        cfg += &format!("[[bus.meter]]\nid = \"m{m}\"\naddress = \"{address}\"\nprofile = \"dlt645-2007-three-phase\"\ninterval = \"100ms\"\n");
    }
    rt.spawn(sim.clone().serve(master));
    let (mut child, log) = harness::start_for_bench(dir.path(), &cfg);
    // Measure a window after start-up.
    std::thread::sleep(Duration::from_secs(2));
    let (r0, b0) = (
        sim.requests.load(Ordering::Relaxed),
        sim.busy_ns.load(Ordering::Relaxed),
    );
    let t0 = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let wall = t0.elapsed().as_secs_f64();
    let (r1, b1) = (
        sim.requests.load(Ordering::Relaxed),
        sim.busy_ns.load(Ordering::Relaxed),
    );
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    let readings =
        harness::readings_at_stop(&std::fs::read_to_string(&log).unwrap_or_default()).unwrap_or(0);
    let (requests, busy) = ((r1 - r0) as f64, (b1 - b0) as f64 / 1e9);
    let gap = 0.020 * requests;
    let share = busy / wall;
    let allowed = busy / (busy + gap);
    println!("dlt645 line: {meters} meters, 2400 baud 8E1, 30 ms reply delay, 20 ms gap, {secs} s window");
    println!(
        "  transactions: {requests} ({:.1}/s), readings journaled overall: {readings}",
        requests / wall
    );
    println!(
        "  line busy: {:.1} % of wall time; the most the gap allows: {:.1} %",
        share * 100.0,
        allowed * 100.0
    );
    println!(
        "  achieved: {:.1} % of the possible",
        share / allowed * 100.0
    );
}
