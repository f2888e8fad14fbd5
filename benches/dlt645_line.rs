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

use meterd_testkit::{harness, line};

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
    let (child, log) = harness::start_for_bench(dir.path(), &cfg);
    let window = line::measure(child, &log, Duration::from_secs(2), secs, || {
        (
            sim.requests.load(Ordering::Relaxed),
            sim.busy_ns.load(Ordering::Relaxed),
        )
    });
    window.print(
        &format!("dlt645 line: {meters} meters, 2400 baud 8E1, 30 ms reply delay, 20 ms gap, {secs} s window"),
        Duration::from_millis(20),
    );
}
