//! Every long-lived task is supervised: the daemon runs in this process, and each of its tasks
//! (a bus, the MQTT and InfluxDB sinks, a webhook notifier, the alert engine, the group commit,
//! HTTP) is aborted in turn, as a crash would end it. Each is started again, counted in
//! `/metrics`, and the pipeline goes on: readings reach MQTT and InfluxDB with no `seq` gap,
//! alerts reach the webhook, HTTP answers, cursors are persisted.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use meterd::state::LiveState;
use tokio::sync::{mpsc, watch};

use crate::{
    harness::{http_get, tcp_sim, Collector},
    receiver::Receiver,
    servers,
};

async fn until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_task_that_dies_is_started_again_and_nothing_is_lost() {
    let broker = servers::mosquitto();
    let influx = servers::influxdb1();
    servers::influxql(&influx, "", "CREATE DATABASE meters").await;
    let hook = Receiver::start().await;
    let (_sim, addr) = tcp_sim(&[(1, "eastron-sdm120")], false).await;
    let http = servers::free_port();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[gateway]\nid = \"gw-sup\"\nstate_dir = \"{}\"\n\
         [[bus]]\nname = \"b\"\nprotocol = \"modbus-tcp\"\ntcp = \"{addr}\"\n\
         [[bus.meter]]\nid = \"m1\"\nunit = 1\nprofile = \"eastron-sdm120\"\ninterval = \"200ms\"\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n\
         [influxdb]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"meters\"\nbatch_interval = \"100ms\"\n\
         [journal]\nfsync = \"100ms\"\n\
         [[alerts.rule]]\nname = \"AnyVoltage\"\nquantity = \"voltage_l1_v\"\nabove = 1.0\n\
         [[alerts.webhook]]\nurl = \"{}\"\n\
         [http]\nlisten = \"127.0.0.1:{http}\"\n",
        dir.path().join("state").display(),
        broker.port,
        influx.url(),
        hook.url("/hook"),
    );
    let config = meterd::config::load_str(&text, "t.toml").expect("config");
    let mqtt = Collector::start(broker.port, "meterd/gw-sup/meter/m1/reading").await;
    let live = Arc::new(LiveState::default());
    let (stop_tx, stop) = watch::channel(false);
    let (_reload_tx, reloads) = mpsc::unbounded_channel();
    let daemon = tokio::spawn(meterd::daemon::run(config, live.clone(), stop, reloads));

    let kinds = [
        "bus b",
        "sink mqtt",
        "sink influxdb",
        "notifier webhook",
        "alert engine",
        "group commit",
        "http",
    ];
    until("every task running", Duration::from_secs(10), || {
        let running = live.tasks.running();
        kinds.iter().all(|k| running.iter().any(|r| r == k))
    })
    .await;
    mqtt.wait_for("readings", Duration::from_secs(10), |m| m.len() >= 3)
        .await;
    hook.wait_for("the alert", Duration::from_secs(10), |_| true)
        .await;

    for kind in kinds {
        let seen = mqtt.all().len();
        assert!(live.tasks.abort(kind), "{kind} was running");
        until(
            &format!("{kind} started again"),
            Duration::from_secs(10),
            || {
                live.tasks.restarts().get(kind) == Some(&1)
                    && live.tasks.running().iter().any(|r| r == kind)
            },
        )
        .await;
        mqtt.wait_for(
            &format!("readings after {kind} was started again"),
            Duration::from_secs(10),
            |m| m.len() >= seen + 2,
        )
        .await;
    }

    // HTTP answers again, and counts each restart.
    let (_, metrics) = crate::harness::eventually("/metrics", Duration::from_secs(5), || {
        http_get(http, "/metrics")
    })
    .await;
    for kind in kinds {
        assert!(
            metrics.contains(&format!("meterd_task_restarts_total{{task=\"{kind}\"}} 1")),
            "{kind}:\n{metrics}"
        );
    }
    // The alert engine, started again, still knows its alert (restored, not raised twice).
    let (_, alerts) = http_get(http, "/api/alerts").await.unwrap();
    assert!(alerts.contains("AnyVoltage"), "{alerts}");
    assert_eq!(
        hook.requests().len(),
        1,
        "the alert was delivered once, not raised again by the restarted engine"
    );

    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(15), daemon)
        .await
        .expect("stops")
        .unwrap();
    // Nothing lost: every seq on MQTT, and the same readings in InfluxDB.
    let mut seqs: BTreeMap<u64, i64> = BTreeMap::new();
    for m in mqtt.all() {
        let v: serde_json::Value = serde_json::from_str(&m.payload).unwrap();
        let ts = humantime::parse_rfc3339(v["ts"].as_str().unwrap())
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        seqs.insert(v["seq"].as_u64().unwrap(), ts);
    }
    let last = *seqs.keys().last().unwrap();
    let missing: Vec<u64> = (1..=last).filter(|s| !seqs.contains_key(s)).collect();
    assert!(missing.is_empty(), "MQTT never saw {missing:?}");
    let a = servers::influxql(&influx, "meters", "SELECT * FROM meter").await;
    let times: std::collections::BTreeSet<i64> = a["results"][0]["series"][0]["values"]
        .as_array()
        .map(|rows| rows.iter().filter_map(|r| r[0].as_i64()).collect())
        .unwrap_or_default();
    let absent: Vec<u64> = seqs
        .iter()
        .filter(|(_, t)| !times.contains(t))
        .map(|(s, _)| *s)
        .collect();
    assert!(absent.is_empty(), "InfluxDB lacks {absent:?}");
    let cursor = std::fs::read_to_string(dir.path().join("state/journal/mqtt.cursor")).unwrap();
    assert!(
        cursor
            .split_whitespace()
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
}
