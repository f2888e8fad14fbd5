//! SIGHUP: a running meterd re-reads its config, refuses a bad one and applies a good one
//! without losing readings or disturbing what did not change.

use std::{collections::BTreeMap, time::Duration};

use crate::{
    harness::{eventually, http_get, http_json, readings_at_stop, tcp_sim, Collector, Meterd},
    servers,
};

fn config(state: &std::path::Path, sim: &str, broker: u16, http: u16, extra: &str) -> String {
    format!(
        "[gateway]\nid = \"gw-r\"\nstate_dir = \"{}\"\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{broker}\"\n\
         [http]\nlisten = \"127.0.0.1:{http}\"\n\
         [[bus]]\nname = \"a\"\nprotocol = \"modbus-tcp\"\ntcp = \"{sim}\"\n\
         [[bus.meter]]\nid = \"m1\"\nunit = 1\nprofile = \"eastron-sdm120\"\ninterval = \"200ms\"\n\
         {extra}",
        state.display()
    )
}

fn bus_b(sim: &str, meters: &[(u8, &str)]) -> String {
    let mut s = format!("[[bus]]\nname = \"b\"\nprotocol = \"modbus-tcp\"\ntcp = \"{sim}\"\n");
    for (unit, id) in meters {
        s += &format!(
            "[[bus.meter]]\nid = \"{id}\"\nunit = {unit}\nprofile = \"eastron-sdm120\"\ninterval = \"200ms\"\n"
        );
    }
    s
}

/// Sequence numbers seen per meter on the reading topics.
fn seqs(mqtt: &Collector) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for m in mqtt.all() {
        if m.topic.ends_with("/reading") {
            let v: serde_json::Value = serde_json::from_str(&m.payload).unwrap();
            out.entry(v["meter"].as_str().unwrap().to_string())
                .or_default()
                .push(v["seq"].as_u64().unwrap());
        }
    }
    out
}

fn count(log: &str, what: &str) -> usize {
    log.lines().filter(|l| l.contains(what)).count()
}

async fn api_meters(port: u16) -> Option<Vec<String>> {
    let v = http_json(port, "/api/meters").await?;
    Some(
        v["meters"]
            .as_array()?
            .iter()
            .filter_map(|m| Some(m["meter"].as_str()?.to_string()))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_refuses_a_bad_config_and_applies_a_good_one_without_losing_a_reading() {
    let broker = servers::mosquitto();
    let (_sim, addr) = tcp_sim(
        &[
            (1, "eastron-sdm120"),
            (2, "eastron-sdm120"),
            (3, "eastron-sdm120"),
        ],
        true,
    )
    .await;
    let http = servers::free_port();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = dir.path().join("meterd.toml");
    // The config with `extra` appended, passed through `change`.
    let edit = |extra: &str, change: &dyn Fn(String) -> String| {
        let text = config(&state, &addr, broker.port, http, extra);
        std::fs::write(&cfg, change(text)).unwrap();
    };
    let write = |extra: &str| edit(extra, &|t| t);
    write(&bus_b(&addr, &[(2, "m2")]));
    let mqtt = Collector::start(broker.port, "meterd/gw-r/#").await;
    let mut meterd = Meterd::run(&cfg);
    meterd.ready().await;
    mqtt.wait_for("readings of m1 and m2", Duration::from_secs(10), |_| {
        let s = seqs(&mqtt);
        s.get("m1").is_some_and(|v| v.len() >= 3) && s.get("m2").is_some_and(|v| v.len() >= 3)
    })
    .await;

    // A config with errors: refused with every problem named; polling goes on untouched.
    edit(&bus_b(&addr, &[(2, "m2")]), &|t| {
        t.replace("interval = \"200ms\"", "interval = \"soon\"") + "[bogus]\n"
    });
    meterd.hup();
    eventually("the reload refused", Duration::from_secs(5), || async {
        meterd.log_text().contains("reload refused").then_some(())
    })
    .await;
    let log = meterd.log_text();
    assert!(
        log.contains("meterd.toml:"),
        "errors carry the file:\n{log}"
    );
    assert!(log.contains("bogus"), "every problem is named:\n{log}");
    let m1_before = seqs(&mqtt)["m1"].len();
    mqtt.wait_for(
        "m1 still polled after the refused reload",
        Duration::from_secs(5),
        |_| seqs(&mqtt)["m1"].len() >= m1_before + 3,
    )
    .await;

    // A good config: bus b gains a meter, the MQTT sink's settings change; bus a is untouched.
    // It also changes settings that apply only at a restart (gateway id, HTTP address): those
    // are logged and keep their running values, so topics and the API stay where they were.
    let other_port = servers::free_port();
    edit(&bus_b(&addr, &[(2, "m2"), (3, "m3")]), &|t| {
        t.replace("url = ", "keep_alive = \"20s\"\nurl = ")
            .replace("id = \"gw-r\"", "id = \"gw-renamed\"")
            .replace(
                &format!("127.0.0.1:{http}"),
                &format!("127.0.0.1:{other_port}"),
            )
    });
    meterd.hup();
    eventually("the reload applied", Duration::from_secs(10), || async {
        meterd.log_text().contains("config reloaded").then_some(())
    })
    .await;
    mqtt.wait_for(
        "readings of the added meter m3",
        Duration::from_secs(10),
        |_| seqs(&mqtt).get("m3").is_some_and(|v| v.len() >= 3),
    )
    .await;
    let log = meterd.log_text();
    for what in ["gateway.id changes only at a restart", "section=\"http\""] {
        assert!(log.contains(what), "{what} not logged:\n{log}");
    }
    assert!(http_get(http, "/healthz").await.is_some(), "the API moved");
    assert!(
        http_get(other_port, "/healthz").await.is_none(),
        "the API moved"
    );
    assert!(
        !mqtt.all().iter().any(|m| m.topic.contains("gw-renamed")),
        "topics followed a gateway id that applies only at a restart"
    );
    assert_eq!(
        count(&log, "bus{bus=a}: meterd::bus::task: bus started"),
        1,
        "bus a kept its task:\n{log}"
    );
    assert_eq!(
        count(&log, "bus{bus=b}: meterd::bus::task: bus started"),
        2,
        "bus b restarted:\n{log}"
    );

    // Remove bus b (its meters leave the API), add an alert rule and a webhook notifier:
    // both take effect.
    let hook = crate::receiver::Receiver::start().await;
    write(&format!(
        "[[alerts.rule]]\nname = \"Live\"\nquantity = \"voltage_l1_v\"\nabove = 1.0\n\
         [[alerts.webhook]]\nurl = \"{}\"\n",
        hook.url("/hook")
    ));
    meterd.hup();
    eventually(
        "m2 and m3 gone from the API",
        Duration::from_secs(10),
        || async { (api_meters(http).await? == vec!["m1".to_string()]).then_some(()) },
    )
    .await;
    eventually("the new rule firing", Duration::from_secs(10), || async {
        let v = http_json(http, "/api/alerts").await?;
        (v["alerts"][0]["name"] == "Live" && v["alerts"][0]["meter"] == "m1").then_some(())
    })
    .await;
    hook.wait_for(
        "the new rule's alert at the new webhook",
        Duration::from_secs(10),
        |r| r.body["name"] == "Live" && r.body["state"] == "firing",
    )
    .await;

    // The MQTT sink's counters went on across its restart.
    let (_, metrics) = http_get(http, "/metrics").await.unwrap();
    let delivered: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("meterd_sink_delivered_total{sink=\"mqtt\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no delivered count:\n{metrics}"));
    let published: usize = seqs(&mqtt).values().map(Vec::len).sum();
    assert!(
        delivered > 0 && delivered as usize <= published,
        "{delivered} of {published}"
    );
    assert!(
        metrics.contains("meterd_sink_oldest_undelivered_age_seconds{sink=\"mqtt\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("meterd_sink_retries_total{sink=\"mqtt\"}"),
        "{metrics}"
    );

    // A clean stop, then every reading the journal took was published: no seq is missing.
    let status = meterd.terminate(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (meter, mut got) in seqs(&mqtt) {
        got.sort_unstable();
        got.dedup();
        let max = *got.last().unwrap();
        assert_eq!(
            got,
            (1..=max).collect::<Vec<_>>(),
            "{meter}: a reading went missing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_in_quick_succession_restart_sinks_and_buses_without_losing_a_reading() {
    let broker = servers::mosquitto();
    let (_sim, addr) = tcp_sim(&[(1, "eastron-sdm120"), (2, "eastron-sdm120")], true).await;
    let http = servers::free_port();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = dir.path().join("meterd.toml");
    let mqtt = Collector::start(broker.port, "meterd/gw-r/#").await;
    let variant = |i: usize| {
        let mut text = config(
            &state,
            &addr,
            broker.port,
            http,
            &bus_b(&addr, &[(2, "m2")])
                .replace("200ms", if i % 3 == 0 { "300ms" } else { "200ms" }),
        );
        if i % 2 == 1 {
            text = text.replace("url = ", &format!("keep_alive = \"{}s\"\nurl = ", 20 + i));
        }
        if i % 4 == 2 {
            text += "[[alerts.rule]]\nname = \"Live\"\nquantity = \"voltage_l1_v\"\nabove = 1.0\n";
        }
        text
    };
    std::fs::write(&cfg, variant(0)).unwrap();
    let mut meterd = Meterd::run(&cfg);
    meterd.ready().await;
    for i in 1..=8 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        std::fs::write(&cfg, variant(i)).unwrap();
        meterd.hup();
    }
    eventually(
        "the eighth reload applied",
        Duration::from_secs(30),
        || async { (count(&meterd.log_text(), "config reloaded") == 8).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(meterd
        .terminate(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seqs = seqs(&mqtt);
    assert_eq!(seqs.len(), 2, "{:?}", seqs.keys());
    // Every reading the journal took (a fresh one: positions = readings) reached MQTT.
    let journaled = readings_at_stop(&meterd.log_text()).expect("the stop line");
    let published: u64 = seqs
        .values()
        .map(|v| v.iter().max().copied().unwrap_or(0))
        .sum();
    assert_eq!(published, journaled, "published vs journaled");
    for (meter, mut got) in seqs {
        got.sort_unstable();
        got.dedup();
        let max = *got.last().unwrap();
        assert!(max >= 10, "{meter}: only {max} readings");
        assert_eq!(
            got,
            (1..=max).collect::<Vec<_>>(),
            "{meter}: a reading went missing"
        );
    }
}
