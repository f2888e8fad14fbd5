//! `meterd run` against simulated meters, real Mosquitto, InfluxDB 1.x and VictoriaMetrics.

use std::{collections::HashMap, time::Duration};

use crate::{
    harness::{eventually, one_meter_config, tcp_sim, tolerance, Collector, Meterd},
    servers,
};

const METERS: &[(u8, &str, &str)] = &[
    (1, "m-sdm630", "eastron-sdm630"),
    (2, "m-dtsu666", "chint-dtsu666"),
    (3, "m-abb", "abb-b23"),
    (4, "m-em24", "carlo-gavazzi-em24"),
];

fn bus_config(addr: &str) -> String {
    let mut s = format!(
        "[[bus]]\nname = \"tcp-1\"\nprotocol = \"modbus-tcp\"\ntcp = \"{addr}\"\ntimeout = \"500ms\"\nconcurrency = 2\n"
    );
    for (unit, id, profile) in METERS {
        s += &format!("[[bus.meter]]\nid = \"{id}\"\nunit = {unit}\nprofile = \"{profile}\"\ninterval = \"1s\"\n");
    }
    s
}

fn check_values(
    profile: &str,
    unit_values: &HashMap<&'static str, f64>,
    got: &serde_json::Map<String, serde_json::Value>,
) {
    for (q, v) in got {
        let v = v.as_f64().unwrap_or_else(|| panic!("{q} is not a number"));
        let expected = unit_values[q.as_str()];
        let tol = tolerance(profile, q, expected);
        assert!(
            (v - expected).abs() <= tol,
            "{profile} {q}: got {v}, simulated {expected} (±{tol})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_reach_mqtt_and_influxdb_1x_with_the_contracts_topics_schema_and_values() {
    let broker = servers::mosquitto();
    let influx = servers::influxdb1();
    let created = servers::influxql(&influx, "", "CREATE DATABASE meters").await;
    assert!(created["results"].is_array(), "{created}");
    let (sim, addr) = tcp_sim(
        &METERS.iter().map(|(u, _, p)| (*u, *p)).collect::<Vec<_>>(),
        true,
    )
    .await;
    let mqtt = Collector::start(broker.port, "meterd/#").await;

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("meterd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[gateway]\nid = \"gw-it\"\nstate_dir = \"{}\"\n{}\n[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n\
             [influxdb]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"meters\"\nbatch_interval = \"200ms\"\n",
            dir.path().join("state").display(),
            bus_config(&addr),
            broker.port,
            influx.url()
        ),
    )
    .unwrap();
    let mut meterd = Meterd::run(&cfg);

    // Every meter's readings, availability and the gateway status arrive on MQTT.
    mqtt.wait_for(
        "a reading with energy from every meter",
        Duration::from_secs(20),
        |msgs| {
            METERS.iter().all(|(_, id, _)| {
                msgs.iter().any(|m| {
                    m.topic == format!("meterd/gw-it/meter/{id}/reading")
                        && m.payload.contains("energy_import_kwh")
                })
            })
        },
    )
    .await;
    let status = mqtt.on("meterd/gw-it/status");
    assert_eq!(status.first().map(|m| m.payload.as_str()), Some("online"));
    for (unit, id, profile) in METERS {
        let avail = mqtt.on(&format!("meterd/gw-it/meter/{id}/availability"));
        assert_eq!(
            avail.last().map(|m| m.payload.as_str()),
            Some("online"),
            "{id} availability"
        );
        let readings = mqtt.on(&format!("meterd/gw-it/meter/{id}/reading"));
        let simulated = sim.values(*unit).unwrap();
        let mut seqs = Vec::new();
        let mut quantities = std::collections::BTreeSet::new();
        for m in &readings {
            assert!(!m.retain, "readings are not retained");
            let v: serde_json::Value = serde_json::from_str(&m.payload).expect("reading is JSON");
            assert_eq!(v["meter"], *id);
            assert_eq!(v["bus"], "tcp-1");
            let ts = v["ts"].as_str().expect("ts");
            assert!(
                humantime::parse_rfc3339(ts).is_ok() && ts.ends_with('Z'),
                "ts {ts}"
            );
            seqs.push(v["seq"].as_u64().expect("seq"));
            let values = v["values"].as_object().expect("values");
            quantities.extend(values.keys().cloned());
            check_values(profile, &simulated, values);
        }
        let expected: std::collections::BTreeSet<String> = meterd::config::ProfileSet::builtin()
            .get(profile)
            .unwrap()
            .points()
            .map(|p| p.quantity.to_string())
            .collect();
        assert_eq!(
            quantities, expected,
            "{id} reports every quantity of its profile"
        );
        let mut sorted = seqs.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "{id} seq runs 1, 2, 3 …"
        );
    }

    // The same readings are in InfluxDB with the contract's measurement, tags and fields.
    for (unit, id, profile) in METERS {
        let q = format!("SELECT * FROM meter WHERE meter = '{id}' AND energy_import_kwh > 0");
        let answer = eventually("lines in InfluxDB", Duration::from_secs(15), || {
            let influx = &influx;
            let q = q.clone();
            async move {
                let a = servers::influxql(influx, "meters", &q).await;
                let has_rows = a["results"][0]["series"][0]["values"]
                    .as_array()
                    .is_some_and(|v| !v.is_empty());
                has_rows.then_some(a)
            }
        })
        .await;
        let series = &answer["results"][0]["series"][0];
        let columns: Vec<&str> = series["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let row = &series["values"][0];
        let col = |name: &str| {
            &row[columns
                .iter()
                .position(|c| *c == name)
                .unwrap_or_else(|| panic!("no column {name}"))]
        };
        assert_eq!(col("gateway"), "gw-it");
        assert_eq!(col("bus"), "tcp-1");
        assert_eq!(col("meter"), *id);
        assert_eq!(col("profile"), *profile);
        let simulated = sim.values(*unit).unwrap();
        let mut fields = serde_json::Map::new();
        for q in ["energy_import_kwh", "energy_export_kwh"] {
            fields.insert(q.into(), col(q).clone());
        }
        check_values(profile, &simulated, &fields);
    }

    // Availability is retained: a late subscriber sees it at once.
    let late = Collector::start(broker.port, "meterd/gw-it/meter/+/availability").await;
    late.wait_for(
        "retained availability of every meter",
        Duration::from_secs(5),
        |m| {
            m.iter()
                .filter(|m| m.retain && m.payload == "online")
                .map(|m| m.topic.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                == METERS.len()
        },
    )
    .await;

    // SIGTERM: exits 0 within a few seconds and leaves the gateway offline (retained).
    let status = meterd.terminate(Duration::from_secs(8));
    assert!(
        status.is_some_and(|s| s.success()),
        "exit: {status:?}\n{}",
        meterd.log_text()
    );
    mqtt.wait_for(
        "the gateway's offline status",
        Duration::from_secs(5),
        |msgs| {
            msgs.iter()
                .rfind(|m| m.topic == "meterd/gw-it/status")
                .is_some_and(|m| m.payload == "offline")
        },
    )
    .await;
    // A new subscriber sees the retained offline status.
    let later = Collector::start(broker.port, "meterd/gw-it/status").await;
    later
        .wait_for("retained offline status", Duration::from_secs(5), |m| {
            m.iter().any(|m| m.retain && m.payload == "offline")
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_reach_victoria_metrics_through_the_influxdb_v2_write_api() {
    let vm = servers::victoria_metrics();
    let (sim, addr) = tcp_sim(
        &METERS.iter().map(|(u, _, p)| (*u, *p)).collect::<Vec<_>>(),
        true,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("meterd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[gateway]\nid = \"gw-vm\"\nstate_dir = \"{}\"\n{}\n\
             [influxdb]\nurl = \"{}\"\napi = \"v2\"\norg = \"utility\"\nbucket = \"meters\"\ntoken = \"secret\"\nbatch_interval = \"200ms\"\n",
            dir.path().join("state").display(),
            bus_config(&addr),
            vm.url()
        ),
    )
    .unwrap();
    let _meterd = Meterd::run(&cfg);
    let series = eventually(
        "every meter's energy in VictoriaMetrics",
        Duration::from_secs(20),
        || async {
            let series = servers::vm_export(&vm, "{__name__=\"meter_energy_import_kwh\"}").await?;
            (series.len() == METERS.len()).then_some(series)
        },
    )
    .await;
    for s in &series {
        let metric = &s["metric"];
        assert_eq!(metric["gateway"], "gw-vm");
        assert_eq!(metric["bus"], "tcp-1");
        let (unit, _, profile) = METERS
            .iter()
            .find(|(_, id, _)| metric["meter"] == *id)
            .expect("known meter");
        assert_eq!(metric["profile"], *profile);
        let v = s["values"][0].as_f64().unwrap();
        let expected = sim.values(*unit).unwrap()["energy_import_kwh"];
        assert!(
            (v - expected).abs() <= tolerance(profile, "energy_import_kwh", expected),
            "{v} vs {expected}"
        );
        let ts = s["timestamps"][0].as_i64().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert!(
            (now - ts).abs() < 60_000,
            "timestamp is the sampling time in ms"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_is_down_at_start_up_is_not_fatal_and_buffered_readings_follow() {
    let port = servers::free_port();
    let (_sim, addr) = tcp_sim(&[(1, "eastron-sdm120")], false).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = one_meter_config(
        dir.path(),
        "gw-late",
        &dir.path().join("state"),
        &addr,
        "300ms",
        &format!("[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\n"),
    );
    let _meterd = Meterd::run(&cfg);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let broker = servers::mosquitto_on(port);
    let mqtt = Collector::start(broker.port, "meterd/gw-late/meter/m1/reading").await;
    // Readings polled while the broker was down arrive, oldest first, with their seq from 1.
    mqtt.wait_for("the reading with seq 1", Duration::from_secs(20), |msgs| {
        msgs.iter().any(|m| m.payload.contains("\"seq\":1,"))
    })
    .await;
}

fn seq_of(m: &crate::harness::Message) -> u64 {
    serde_json::from_str::<serde_json::Value>(&m.payload).expect("json")["seq"]
        .as_u64()
        .expect("seq")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seq_continues_across_a_restart() {
    let broker = servers::mosquitto();
    let (_sim, addr) = tcp_sim(&[(1, "eastron-sdm120")], true).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = one_meter_config(
        dir.path(),
        "gw-seq",
        &dir.path().join("state"),
        &addr,
        "200ms",
        &format!("[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n", broker.port),
    );
    let topic = "meterd/gw-seq/meter/m1/reading";
    let mqtt = Collector::start(broker.port, topic).await;
    let mut first = Meterd::run(&cfg);
    mqtt.wait_for("a few readings", Duration::from_secs(10), |m| m.len() >= 5)
        .await;
    assert!(first
        .terminate(Duration::from_secs(8))
        .is_some_and(|s| s.success()));
    let before = mqtt.on(topic);
    let last = before.iter().map(seq_of).max().unwrap();
    assert_eq!(
        last as usize,
        before.len(),
        "every reading of the first run was delivered once"
    );

    let _second = Meterd::run(&cfg);
    mqtt.wait_for(
        "a reading of the second run",
        Duration::from_secs(10),
        |m| m.len() > before.len(),
    )
    .await;
    let next = seq_of(&mqtt.on(topic)[before.len()]);
    assert_eq!(next, last + 1, "the second run goes on from {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_reach_a_broker_over_tls_with_a_password_from_a_file() {
    let (broker, plain_port, ca) = servers::mosquitto_tls("meterd", "s3cret pass");
    let (_sim, addr) = tcp_sim(&[(1, "eastron-sdm120")], true).await;
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("mqtt-password");
    std::fs::write(&pw, "s3cret pass\n").unwrap();
    let cfg = one_meter_config(
        dir.path(),
        "gw-tls",
        &dir.path().join("state"),
        &addr,
        "300ms",
        &format!(
            "[mqtt]\nurl = \"mqtts://127.0.0.1:{}\"\nca_file = \"{}\"\nusername = \"meterd\"\npassword_file = \"{}\"\n",
            broker.port,
            ca.display(),
            pw.display()
        ),
    );
    let mqtt = Collector::start(plain_port, "meterd/gw-tls/#").await;
    let meterd = Meterd::run(&cfg);
    mqtt.wait_for("readings over TLS", Duration::from_secs(15), |m| {
        m.iter().filter(|m| m.topic.ends_with("/reading")).count() >= 3
    })
    .await;
    assert!(meterd.log_text().contains("connected to broker"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_state_directory_is_a_loud_error_but_polling_and_delivery_go_on() {
    let broker = servers::mosquitto();
    let (_sim, addr) = tcp_sim(&[(1, "eastron-sdm120")], true).await;
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-directory");
    std::fs::write(&blocker, "x").unwrap();
    let cfg = one_meter_config(
        dir.path(),
        "gw-ro",
        &blocker.join("state"),
        &addr,
        "300ms",
        &format!("[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n", broker.port),
    );
    let mqtt = Collector::start(broker.port, "meterd/gw-ro/meter/m1/reading").await;
    let mut meterd = Meterd::run(&cfg);
    mqtt.wait_for(
        "readings despite the broken state dir",
        Duration::from_secs(10),
        |m| m.len() >= 3,
    )
    .await;
    let log = meterd.log_text();
    assert!(
        log.contains("ERROR")
            && log.contains("journal unavailable")
            && log.contains("not-a-directory"),
        "{log}"
    );
    assert!(meterd
        .terminate(Duration::from_secs(8))
        .is_some_and(|s| s.success()));
}

/// A billing-grade counter keeps every digit its float register holds, on MQTT and in
/// InfluxDB: 1234567.9 kWh is not published as 1234568, nor 105901.26 as 105901.3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_float_register_reaches_mqtt_and_influxdb_with_every_digit() {
    let broker = servers::mosquitto();
    let influx = servers::influxdb1();
    servers::influxql(&influx, "", "CREATE DATABASE meters").await;
    let (sim, addr) = tcp_sim(&[(1, "eastron-sdm120")], true).await;
    sim.set_value(1, "energy_import_kwh", Some(1234567.9));
    sim.set_value(1, "energy_export_kwh", Some(105901.26));
    let dir = tempfile::tempdir().unwrap();
    let cfg = one_meter_config(
        dir.path(),
        "gw-digits",
        &dir.path().join("state"),
        &addr,
        "300ms",
        &format!(
            "[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n[influxdb]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"meters\"\nbatch_interval = \"200ms\"\n",
            broker.port,
            influx.url()
        ),
    );
    let mqtt = Collector::start(broker.port, "meterd/gw-digits/meter/m1/reading").await;
    let _meterd = Meterd::run(&cfg);
    mqtt.wait_for("an energy reading", Duration::from_secs(15), |m| {
        m.iter().any(|m| m.payload.contains("energy_import_kwh"))
    })
    .await;
    let payload = mqtt
        .all()
        .into_iter()
        .find(|m| m.payload.contains("energy_import_kwh"))
        .unwrap()
        .payload;
    // The JSON text itself, as a consumer reads it.
    assert!(
        payload.contains("\"energy_import_kwh\":1234567.9"),
        "{payload}"
    );
    assert!(
        payload.contains("\"energy_export_kwh\":105901.26"),
        "{payload}"
    );
    let stored = eventually("the counter in InfluxDB", Duration::from_secs(15), || async {
        let a = servers::influxql(
            &influx,
            "meters",
            "SELECT energy_import_kwh, energy_export_kwh FROM meter WHERE energy_import_kwh > 0 LIMIT 1",
        )
        .await;
        let row = a["results"][0]["series"][0]["values"][0].clone();
        row[1].as_f64().map(|_| row)
    })
    .await;
    assert_eq!(stored[1].as_f64(), Some(1234567.9), "{stored}");
    assert_eq!(stored[2].as_f64(), Some(105901.26), "{stored}");
}

/// With rumqttc's window full (availability of many meters, `inflight = 4`) the MQTT sink waits
/// for PUBACKs; it must never spin on readings it cannot send yet: on the daemon's single
/// thread that would starve every poll and the HTTP API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mqtt_window_stalls_neither_the_daemon_nor_delivery() {
    // The broker comes up once every meter is online: the connection starts with 200
    // availability messages and a backlog of readings.
    let port = servers::free_port();
    let units: Vec<(u8, &str)> = (1..=200).map(|u| (u, "eastron-sdm120")).collect();
    let (_sim, addr) = tcp_sim(&units, false).await;
    let dir = tempfile::tempdir().unwrap();
    let http = servers::free_port();
    let mut cfg = format!(
        "[gateway]\nid = \"gw-window\"\nstate_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\ninflight = 4\n\
         [[bus]]\nname = \"b\"\nprotocol = \"modbus-tcp\"\ntcp = \"{addr}\"\nconcurrency = 4\n",
        dir.path().join("state").display(),
    );
    cfg += &crate::harness::meter_tables(&units, "interval = \"1s\"");
    let path = dir.path().join("meterd.toml");
    std::fs::write(&path, cfg).unwrap();
    let meterd = Meterd::run(&path);
    meterd.ready().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let broker = servers::mosquitto_on(port);
    let mqtt = Collector::start(broker.port, "meterd/gw-window/meter/+/reading").await;
    let (t0, cpu0) = (
        std::time::Instant::now(),
        meterd_testkit::scale::cpu_ticks(meterd.pid()),
    );
    for _ in 0..10 {
        let answered = tokio::time::timeout(
            Duration::from_secs(2),
            crate::harness::http_get(http, "/healthz"),
        )
        .await;
        assert!(
            matches!(answered, Ok(Some((200, _)))),
            "the HTTP API stalled: {answered:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // A busy loop shows as a whole core; 200 polls a second take a small part of one.
    let cpu = (meterd_testkit::scale::cpu_ticks(meterd.pid()) - cpu0) as f64 / 100.0;
    let share = cpu / t0.elapsed().as_secs_f64();
    assert!(share < 0.6, "meterd used {:.0} % of a core", share * 100.0);
    mqtt.wait_for("readings of every meter", Duration::from_secs(20), |msgs| {
        let meters: std::collections::HashSet<&str> =
            msgs.iter().map(|m| m.topic.as_str()).collect();
        meters.len() == units.len()
    })
    .await;
}
