//! A faulty meter on a shared RS-485 line (a real pty) never stalls its neighbour; the link is
//! rebuilt after every timeout or garbled reply, and the faulty meter comes back when healthy.

use std::time::{Duration, Instant};

use meterd::{
    config::ProfileSet,
    sim::{self, Fault, Simulator},
};

use crate::{
    harness::{Collector, Meterd},
    servers,
};

/// `goes_offline`: whether the faulty meter must be reported offline. A meter that answers
/// late still answers now and then (see the slow test), so it need not.
async fn a_faulty_meter_on_a_shared_serial_line(fault: Fault, gateway: &str, goes_offline: bool) {
    let broker = servers::mosquitto();
    let set = ProfileSet::builtin();
    let sim = Simulator::new();
    for unit in [1, 2] {
        sim.add_meter(unit, set.get("eastron-sdm120").cloned().unwrap(), false);
    }
    let (master, _keep, pty) = sim::pty_pair().expect("pty");
    tokio::spawn(sim.clone().serve_rtu(master));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("meterd.toml");
    let mut text = format!(
        "[gateway]\nid = \"{gateway}\"\nstate_dir = \"{}\"\n[[bus]]\nname = \"rs485\"\nprotocol = \"modbus-rtu\"\n\
         serial = {{ device = \"{pty}\", baud = 9600 }}\ntimeout = \"300ms\"\nretries = 1\noffline_after = 2\n\
         backoff = \"1s\"\nbackoff_max = \"2s\"\n",
        dir.path().join("state").display()
    );
    for u in [1, 2] {
        text += &format!(
            "[[bus.meter]]\nid = \"m{u}\"\nunit = {u}\nprofile = \"eastron-sdm120\"\nintervals = {{ realtime = \"500ms\", energy = \"1h\" }}\n"
        );
    }
    text += &format!("[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n", broker.port);
    std::fs::write(&cfg, text).unwrap();
    let mqtt = Collector::start(broker.port, &format!("meterd/{gateway}/#")).await;
    let meterd = Meterd::run(&cfg);
    let avail = |m: &str| format!("meterd/{gateway}/meter/{m}/availability");
    let last_avail = |msgs: &[crate::harness::Message], m: &str| {
        msgs.iter()
            .rfind(|x| x.topic == avail(m))
            .map(|x| x.payload.clone())
    };
    mqtt.wait_for("both meters online", Duration::from_secs(15), |msgs| {
        ["m1", "m2"]
            .iter()
            .all(|m| last_avail(msgs, m).as_deref() == Some("online"))
    })
    .await;

    sim.set_fault(1, fault);
    if goes_offline {
        let deadline = Instant::now() + Duration::from_secs(10);
        while last_avail(&mqtt.all(), "m1").as_deref() != Some("offline") {
            assert!(
                Instant::now() < deadline,
                "{fault:?}: m1 never went offline:\n{}",
                meterd.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    } else {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let readings = |m: &str| {
        mqtt.on(&format!("meterd/{gateway}/meter/{m}/reading"))
            .len()
    };
    let before = readings("m2");
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rate = (readings("m2") - before) as f64 / t.elapsed().as_secs_f64();
    assert!(
        rate >= 2.0 * 0.75,
        "{fault:?}: m2 read {rate:.2}/s while m1 was faulty (expected ~2/s)"
    );
    assert_eq!(
        last_avail(&mqtt.all(), "m2").as_deref(),
        Some("online"),
        "{fault:?}: m2 stayed online"
    );

    sim.set_fault(1, Fault::None);
    mqtt.wait_for("m1 online again", Duration::from_secs(10), |msgs| {
        last_avail(msgs, "m1").as_deref() == Some("online")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_meter_on_a_serial_line_does_not_stall_its_neighbour() {
    a_faulty_meter_on_a_shared_serial_line(Fault::Silent, "gw-silent", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meter_answering_garbage_does_not_stall_its_neighbour() {
    a_faulty_meter_on_a_shared_serial_line(Fault::Garbage, "gw-garbage", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meter_with_a_corrupted_crc_does_not_stall_its_neighbour() {
    a_faulty_meter_on_a_shared_serial_line(Fault::BadCrc, "gw-crc", true).await;
}

/// RTU frames carry no transaction id: a reply that arrives after its request timed out but
/// while the same request is being asked again is a valid answer to it (the values are right,
/// just late), so a slow meter alternates between failing and answering and need not go
/// offline. Its neighbour must not suffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meter_answering_after_the_timeout_does_not_stall_its_neighbour() {
    a_faulty_meter_on_a_shared_serial_line(
        Fault::Slow(Duration::from_millis(1500)),
        "gw-slow",
        false,
    )
    .await;
}
