//! One dead meter never stalls a bus.

use std::time::{Duration, Instant};

use meterd::sim::Fault;

use crate::{
    harness::{tcp_sim, Collector, Meterd},
    servers,
};

fn readings_of(c: &Collector, meter: &str) -> usize {
    c.on(&format!("meterd/gw-s/meter/{meter}/reading")).len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_meter_goes_offline_without_slowing_the_others_and_comes_back_online() {
    let broker = servers::mosquitto();
    let (sim, addr) = tcp_sim(
        &[
            (1, "eastron-sdm120"),
            (2, "eastron-sdm120"),
            (3, "eastron-sdm120"),
        ],
        false,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("meterd.toml");
    let mut text = format!(
        "[gateway]\nid = \"gw-s\"\nstate_dir = \"{}\"\n[[bus]]\nname = \"b\"\nprotocol = \"modbus-tcp\"\ntcp = \"{addr}\"\n\
         timeout = \"300ms\"\nretries = 1\nconcurrency = 1\noffline_after = 2\nbackoff = \"1s\"\nbackoff_max = \"2s\"\n",
        dir.path().join("state").display()
    );
    for u in 1..=3 {
        text += &format!("[[bus.meter]]\nid = \"m{u}\"\nunit = {u}\nprofile = \"eastron-sdm120\"\nintervals = {{ realtime = \"500ms\", energy = \"1h\" }}\n");
    }
    text += &format!("[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n", broker.port);
    std::fs::write(&cfg, text).unwrap();
    let mqtt = Collector::start(broker.port, "meterd/gw-s/#").await;
    let meterd = Meterd::run(&cfg);
    let avail = |m: &str| format!("meterd/gw-s/meter/{m}/availability");
    mqtt.wait_for("all three online", Duration::from_secs(15), |msgs| {
        (1..=3).all(|u| {
            msgs.iter()
                .any(|m| m.topic == avail(&format!("m{u}")) && m.payload == "online")
        })
    })
    .await;

    sim.set_fault(2, Fault::Silent);
    mqtt.wait_for("m2 offline", Duration::from_secs(10), |msgs| {
        msgs.iter()
            .rfind(|m| m.topic == avail("m2"))
            .is_some_and(|m| m.payload == "offline")
    })
    .await;
    // While m2 is silent, m1 and m3 keep (nearly) their 2 readings per second: each probe of
    // m2 costs one 300 ms timeout per back-off period.
    let (a1, a3) = (readings_of(&mqtt, "m1"), readings_of(&mqtt, "m3"));
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let secs = t.elapsed().as_secs_f64();
    let (r1, r3) = (readings_of(&mqtt, "m1") - a1, readings_of(&mqtt, "m3") - a3);
    let expected = secs * 2.0;
    assert!(
        r1 as f64 >= expected * 0.8 && r3 as f64 >= expected * 0.8,
        "m1 {r1}, m3 {r3} readings in {secs:.1}s (expected ~{expected:.0})"
    );

    sim.set_fault(2, Fault::None);
    mqtt.wait_for("m2 online again", Duration::from_secs(10), |msgs| {
        msgs.iter()
            .rfind(|m| m.topic == avail("m2"))
            .is_some_and(|m| m.payload == "online")
    })
    .await;
    let log = meterd.log_text();
    assert_eq!(
        log.matches("meter offline").count(),
        1,
        "one line when it goes offline:\n{log}"
    );
    assert_eq!(
        log.matches("meter online").count(),
        4,
        "one line per meter coming online, and m2 again:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exception_replies_are_counted_apart_from_link_failures_and_keep_the_meter_online() {
    let (sim, addr) = tcp_sim(&[(1, "eastron-sdm120")], true).await;
    sim.set_fault(1, Fault::Exception(2));
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_meterd"))
            .args([
                "read",
                "--addr",
                &addr,
                "--unit",
                "1",
                "--profile",
                "eastron-sdm120",
                "--json",
                "--timeout",
                "300ms",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    let set = meterd::config::ProfileSet::builtin();
    let blocks: usize = set
        .get("eastron-sdm120")
        .unwrap()
        .groups
        .iter()
        .map(|g| g.plan(125, 16).len())
        .sum();
    assert_eq!(errors.len(), blocks, "{v}");
    assert!(
        errors
            .iter()
            .all(|e| e.contains("exception reply 2 (illegal data address)")),
        "{errors:?}"
    );
    assert_eq!(
        v["requests"], blocks,
        "an exception is answered once per request, never retried"
    );
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meter_that_refuses_every_request_is_shown_as_refusing_not_as_a_healthy_meter() {
    let (sim, addr) = tcp_sim(&[(1, "eastron-sdm120"), (2, "eastron-sdm120")], true).await;
    sim.set_fault(2, Fault::Exception(2));
    let port = crate::servers::free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("meterd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[gateway]\nid = \"gw-refusing\"\nstate_dir = \"{}\"\n[[bus]]\nname = \"b\"\nprotocol = \"modbus-tcp\"\ntcp = \"{addr}\"\n\
             [[bus.meter]]\nid = \"good\"\nunit = 1\nprofile = \"eastron-sdm120\"\ninterval = \"200ms\"\n\
             [[bus.meter]]\nid = \"wrong-map\"\nunit = 2\nprofile = \"eastron-sdm120\"\ninterval = \"200ms\"\n\
             [alerts.builtin.meter_offline]\nintervals = 3\n[http]\nlisten = \"127.0.0.1:{port}\"\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let meterd = crate::harness::Meterd::run(&cfg);
    meterd.ready().await;
    let api = crate::harness::eventually("the refusing meter", Duration::from_secs(10), || async {
        let v = crate::harness::http_json(port, "/api/meters").await?;
        let m = v["meters"]
            .as_array()?
            .iter()
            .find(|m| m["meter"] == "wrong-map")?
            .clone();
        (m["refusing"] == true).then_some(v)
    })
    .await;
    let meter = |id: &str| {
        api["meters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["meter"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(meter("wrong-map")["online"], true, "it does answer");
    assert!(meter("wrong-map")["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("exception reply 2")));
    assert_eq!(meter("good")["refusing"], false);
    let (_, metrics) = crate::harness::http_get(port, "/metrics").await.unwrap();
    assert!(
        metrics.contains("meterd_meter_refusing{bus=\"b\",meter=\"wrong-map\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("meterd_meter_refusing{bus=\"b\",meter=\"good\"} 0"));
    // It gives no readings, so the on-call engineer hears of it.
    crate::harness::eventually("MeterOffline for it", Duration::from_secs(10), || async {
        let (_, a) = crate::harness::http_get(port, "/api/alerts").await?;
        (a.contains("MeterOffline") && a.contains("wrong-map")).then_some(())
    })
    .await;
    let log = meterd.log_text();
    assert_eq!(
        log.matches("refuses every request").count(),
        1,
        "said once:\n{log}"
    );
}
