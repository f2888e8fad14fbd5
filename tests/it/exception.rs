//! Report by exception, end to end: a simulated meter whose values the test moves, a real
//! Mosquitto that gets only what moved (or whose heartbeat is due), and a real InfluxDB 1.x
//! without an exception section that gets every reading.

use std::{collections::BTreeSet, time::Duration};

use serde_json::Value;

use crate::{
    harness::{eventually, http_get, one_meter_config, tcp_sim, Collector, Meterd},
    servers,
};

fn readings(mqtt: &Collector) -> Vec<Value> {
    mqtt.on("meterd/gw-x/meter/m1/reading")
        .iter()
        .filter_map(|m| serde_json::from_str(&m.payload).ok())
        .collect()
}

fn sampled_ms(r: &Value) -> i64 {
    let ts = r["ts"].as_str().unwrap_or_default();
    let t = humantime::parse_rfc3339(ts).unwrap_or_else(|e| panic!("{ts}: {e}"));
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_gets_a_value_only_when_it_moved_past_its_deadband_or_its_heartbeat_is_due_and_influxdb_gets_every_reading(
) {
    let broker = servers::mosquitto();
    let influx = servers::influxdb1();
    servers::influxql(&influx, "", "CREATE DATABASE meters").await;
    let (sim, addr) = tcp_sim(&[(1, "eastron-sdm120")], true).await;
    let mqtt = Collector::start(broker.port, "meterd/gw-x/meter/m1/reading").await;
    let http = servers::free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = one_meter_config(
        dir.path(),
        "gw-x",
        &dir.path().join("state"),
        &addr,
        "200ms",
        &format!(
            "[http]\nlisten = \"127.0.0.1:{http}\"\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n\
             [mqtt.exception]\ndeadband = \"1%\"\nheartbeat = \"1h\"\n\
             [[mqtt.exception.rule]]\nquantities = [\"frequency_hz\"]\nheartbeat = \"2s\"\n\
             [[mqtt.exception.rule]]\nquantities = [\"energy_*\"]\ndeadband = 0.5\n\
             [influxdb]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"meters\"\nbatch_interval = \"200ms\"\n",
            broker.port,
            influx.url()
        ),
    );
    let mut meterd = Meterd::run(&cfg);
    let within = Duration::from_secs(20);
    // The first reading of each point group goes whole (7 and 4 values).
    let first_energy = |r: &Value| r["values"].get("energy_import_kwh").is_some();
    mqtt.wait_for("the first reading of both groups", within, |_| {
        readings(&mqtt).iter().any(first_energy)
    })
    .await;
    let sent = readings(&mqtt);
    let e = sent.iter().position(first_energy).unwrap();
    let size = |r: &Value| r["values"].as_object().map(|v| v.len());
    assert_eq!(size(&sent[0]), Some(7), "{}", sent[0]);
    assert_eq!(size(&sent[e]), Some(4), "{}", sent[e]);
    let energy = sent[e]["values"]["energy_import_kwh"].as_f64().unwrap();

    // 4 % up: sent. Then 0.2 % more (within 1 % of the 240 V sent) and 0.3 kWh (within the
    // energy counters' own 0.5 kWh step): not sent. Then 0.6 kWh: sent.
    sim.set_value(1, "voltage_l1_v", Some(240.0));
    mqtt.wait_for("voltage_l1_v at 240 V", within, |_| {
        readings(&mqtt)
            .iter()
            .any(|r| r["values"]["voltage_l1_v"] == 240.0)
    })
    .await;
    sim.set_value(1, "voltage_l1_v", Some(240.5));
    sim.set_value(1, "energy_import_kwh", Some(energy + 0.3));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sim.set_value(1, "energy_import_kwh", Some(energy + 0.6));
    mqtt.wait_for("energy_import_kwh 0.6 kWh up", within, |_| {
        readings(&mqtt)
            .iter()
            .any(|r| r["values"]["energy_import_kwh"].as_f64() == Some(energy + 0.6))
    })
    .await;
    // Two heartbeats of frequency_hz after the first reading.
    mqtt.wait_for("two frequency heartbeats", within, |_| {
        readings(&mqtt)
            .iter()
            .filter(|r| r["values"].get("frequency_hz").is_some())
            .count()
            >= 3
    })
    .await;

    let sent = readings(&mqtt);
    for (_, r) in sent.iter().enumerate().filter(|(i, _)| *i != 0 && *i != e) {
        let names: BTreeSet<&str> = r["values"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert!(
            names.is_subset(&BTreeSet::from([
                "voltage_l1_v",
                "energy_import_kwh",
                "frequency_hz"
            ])),
            "only what moved or is due: {r}"
        );
    }
    let volts: Vec<f64> = sent
        .iter()
        .filter_map(|r| r["values"]["voltage_l1_v"].as_f64())
        .collect();
    assert_eq!(
        volts[1..],
        [240.0],
        "240.5 V is within 1 % of the 240 V sent"
    );
    let energies: Vec<f64> = sent
        .iter()
        .filter_map(|r| r["values"]["energy_import_kwh"].as_f64())
        .collect();
    assert_eq!(
        energies,
        [energy, energy + 0.6],
        "0.3 kWh is within its step"
    );
    // The heartbeat is by sampling time: 2 s apart, give or take one 200 ms poll.
    let beats: Vec<i64> = sent
        .iter()
        .filter(|r| r["values"].get("frequency_hz").is_some())
        .map(sampled_ms)
        .collect();
    for pair in beats.windows(2) {
        let gap = pair[1] - pair[0];
        assert!((2000..=2600).contains(&gap), "heartbeats {beats:?}");
    }

    // The sink's counters say what was left out.
    let metrics = eventually("metrics", within, || async {
        http_get(http, "/metrics").await.map(|(_, body)| body)
    })
    .await;
    let counter = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{sink=\"mqtt\"}}")))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{name} for mqtt in {metrics}"))
    };
    assert!(
        counter("meterd_sink_left_out_readings_total") > 5.0,
        "{metrics}"
    );
    assert!(
        counter("meterd_sink_left_out_values_total") > 50.0,
        "{metrics}"
    );

    // InfluxDB, without an exception section, has every reading; each MQTT message carries
    // its reading's sampling time.
    assert!(meterd.terminate(Duration::from_secs(10)).is_some());
    // (Both point groups' readings count in `seq`; a field query gives one group's rows.)
    let mut times = BTreeSet::new();
    let mut stored = 0;
    for field in ["voltage_l1_v", "energy_import_kwh"] {
        let q = format!("SELECT {field} FROM meter");
        let rows = servers::influxql(&influx, "meters", &q).await;
        let group: Vec<i64> = rows["results"][0]["series"][0]["values"]
            .as_array()
            .map(|rows| rows.iter().filter_map(|r| r[0].as_i64()).collect())
            .unwrap_or_default();
        stored += group.len();
        times.extend(group);
    }
    let last_seq = sent.iter().filter_map(|r| r["seq"].as_u64()).max().unwrap();
    assert!(
        stored as u64 >= last_seq,
        "InfluxDB has {stored} readings, MQTT's last seq is {last_seq}"
    );
    assert!(
        sent.len() * 3 < stored,
        "{} of {stored} readings sent on MQTT",
        sent.len()
    );
    for r in &sent {
        assert!(times.contains(&sampled_ms(r)), "{r}: not a sampling time");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb_with_an_exception_section_stores_only_what_moved_at_its_sampling_time() {
    let influx = servers::influxdb1();
    servers::influxql(&influx, "", "CREATE DATABASE meters").await;
    let (sim, addr) = tcp_sim(&[(1, "eastron-sdm120")], true).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = one_meter_config(
        dir.path(),
        "gw-y",
        &dir.path().join("state"),
        &addr,
        "200ms",
        &format!(
            "[influxdb]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"meters\"\nbatch_interval = \"200ms\"\n\
             [influxdb.exception]\ndeadband = \"1%\"\nheartbeat = \"1h\"\n",
            influx.url()
        ),
    );
    let mut meterd = Meterd::run(&cfg);
    let count = |field: &'static str| {
        let influx = &influx;
        async move {
            let q = format!("SELECT {field} FROM meter");
            let rows = servers::influxql(influx, "meters", &q).await;
            rows["results"][0]["series"][0]["values"]
                .as_array()
                .map(|r| r.iter().map(|row| row[1].clone()).collect::<Vec<Value>>())
                .unwrap_or_default()
        }
    };
    eventually(
        "the first reading in InfluxDB",
        Duration::from_secs(20),
        || async { (!count("voltage_l1_v").await.is_empty()).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    sim.set_value(1, "voltage_l1_v", Some(240.0));
    let volts = eventually("240 V in InfluxDB", Duration::from_secs(20), || async {
        let v = count("voltage_l1_v").await;
        v.iter().any(|x| x == 240.0).then_some(v)
    })
    .await;
    // Several polls of a frozen meter, but only the first value and the one that moved.
    assert_eq!(volts.len(), 2, "{volts:?}");
    assert_eq!(
        count("frequency_hz").await.len(),
        1,
        "frequency never moved"
    );
    assert!(meterd.terminate(Duration::from_secs(10)).is_some());
}
