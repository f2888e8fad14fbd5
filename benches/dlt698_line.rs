//! Line utilisation on a simulated DL/T 698.45 bus: `meterd run` polls 16 three-phase meters
//! as often as it can over a pty paced at 9600 baud 8E1, each meter replying 20 ms after a
//! request. The simulator counts the time the line is busy (request and reply on the wire, the
//! meter's delay); meterd keeps 33 bit times of silence before each request. Reported: busy
//! share of the wall time, and that share against the most the baud rate, reply delay and gap
//! allow.
//!
//! `cargo bench --bench dlt698_line` (env: METERS=16 SECS=20)
use std::{sync::atomic::Ordering, time::Duration};

use meterd::{
    config::{BusProtocol, Link, Parity, ProfileSet, SerialConfig},
    protocols::dlt698::ServerAddress,
    sim::{self, dlt698::Dlt698Sim},
};

use meterd_testkit::{harness, line};

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let (meters, secs) = (harness::env_or("METERS", 16), harness::env_or("SECS", 20));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let sim = Dlt698Sim::new(Some(9600));
    let profile = ProfileSet::builtin()
        .get("dlt698-three-phase")
        .cloned()
        .expect("profile");
    let dir = tempfile::tempdir().expect("tempdir");
    let (master, _keep, pty) = rt.block_on(async { sim::pty_pair() }).expect("pty");
    let gap = BusProtocol::Dlt698.default_frame_gap(&Link::Serial(SerialConfig {
        device: pty.clone().into(),
        baud: 9600,
        parity: Parity::Even,
        data_bits: 8,
        stop_bits: 1,
    }));
    let mut cfg = format!(
        "[gateway]\nid = \"bench\"\nstate_dir = \"{}\"\n[[bus]]\nname = \"p698\"\nprotocol = \"dlt698\"\nserial = {{ device = \"{pty}\" }}\n",
        dir.path().display()
    );
    for m in 1..=meters {
        let address = ServerAddress::single(&format!("{m:012}")).expect("address");
        sim.add_meter(address.clone(), profile.clone(), false);
        cfg += &format!("[[bus.meter]]\nid = \"m{m}\"\naddress = \"{address}\"\nprofile = \"dlt698-three-phase\"\ninterval = \"100ms\"\n");
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
        &format!(
            "dlt698 line: {meters} meters, 9600 baud 8E1, 20 ms reply delay, {:.2} ms gap, {secs} s window",
            gap.as_secs_f64() * 1000.0
        ),
        gap,
    );
}
