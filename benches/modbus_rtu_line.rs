//! Line utilisation on a simulated Modbus RTU bus: `meterd run` polls 16 SDM630 meters (both
//! point groups, five block reads per meter) as often as it can over a pty paced at 9600 baud
//! 8N1, each meter replying after 20 ms. The simulator counts the time the line is busy
//! (request and reply on the wire, the meter's turnaround); Modbus RTU also wants 3.5
//! characters of silence between frames. Reported: busy share of the wall time, and that share
//! against the most the baud rate, reply delay and silence allow.
//!
//! `cargo bench --bench modbus_rtu_line` (env: METERS=16 SECS=20)
use std::{sync::atomic::Ordering, time::Duration};

use meterd::{
    config::{Parity, ProfileSet, SerialConfig},
    sim::{self, Pacing, Simulator},
};

use meterd_testkit::{harness, line};

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let (meters, secs) = (harness::env_or("METERS", 16), harness::env_or("SECS", 20));
    let serial = SerialConfig {
        device: "unused".into(),
        baud: 9600,
        parity: Parity::None,
        data_bits: 8,
        stop_bits: 1,
    };
    let gap = serial.rtu_frame_gap();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let sim = Simulator::paced(Pacing {
        baud: serial.baud,
        bits_per_char: serial.bits_per_char(),
        reply_delay: Duration::from_millis(20),
    });
    let profile = ProfileSet::builtin()
        .get("eastron-sdm630")
        .cloned()
        .expect("profile");
    let dir = tempfile::tempdir().expect("tempdir");
    let (master, _keep, pty) = rt.block_on(async { sim::pty_pair() }).expect("pty");
    let mut cfg = format!(
        "[gateway]\nid = \"bench\"\nstate_dir = \"{}\"\n[[bus]]\nname = \"rtu\"\nprotocol = \"modbus-rtu\"\nserial = {{ device = \"{pty}\", baud = 9600 }}\n",
        dir.path().display()
    );
    for unit in 1..=meters.min(247) {
        sim.add_meter(unit as u8, profile.clone(), false);
        cfg += &format!("[[bus.meter]]\nid = \"m{unit}\"\nunit = {unit}\nprofile = \"eastron-sdm630\"\ninterval = \"100ms\"\n");
    }
    rt.spawn(sim.clone().serve_rtu(master));
    let (child, log) = harness::start_for_bench(dir.path(), &cfg);
    let window = line::measure(child, &log, Duration::from_secs(2), secs, || {
        (
            sim.requests.load(Ordering::Relaxed),
            sim.busy_ns.load(Ordering::Relaxed),
        )
    });
    window.print(
        &format!(
            "modbus rtu line: {meters} SDM630 meters, 9600 baud 8N1, 20 ms reply delay, {:.2} ms gap (3.5 characters), {secs} s window",
            gap.as_secs_f64() * 1000.0
        ),
        gap,
    );
}
