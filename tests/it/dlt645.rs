//! DL/T 645-2007 end to end: `meterd run` polls simulated meters on a real pty at 2400 baud
//! (replies paced at that rate, after a meter-like delay); readings reach the real Mosquitto
//! and InfluxDB with the right values and units.

use std::time::Duration;

use meterd::{
    config::ProfileSet,
    protocols::dlt645::{di::Format, Address, Version},
    sim::{self, dlt645::Dlt645Sim},
};

use crate::{
    harness::{eventually, Collector, Meterd},
    servers,
};

const METERS: &[(&str, &str, &str)] = &[
    ("dl-3p", "123456789012", "dlt645-2007-three-phase"),
    ("dl-1p", "000000001111", "dlt645-2007-single-phase"),
];

/// The resolution of `quantity` in `profile`: one unit of its last BCD digit, in the
/// contract's unit.
fn resolution(profile: &str, quantity: &str) -> f64 {
    let set = ProfileSet::builtin();
    let p = set.get(profile).expect("profile");
    let d = p
        .groups
        .iter()
        .flat_map(|g| g.dis.iter())
        .find(|d| &*d.quantity == quantity)
        .expect("quantity");
    let Format::Number { decimals, .. } = d.format else {
        panic!("not a number")
    };
    d.factor / 10f64.powi(decimals as i32) + 1e-9
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meters_on_a_2400_baud_line_reach_mqtt_and_influxdb_with_their_values_and_units() {
    let broker = servers::mosquitto();
    let influx = servers::influxdb1();
    servers::influxql(&influx, "", "CREATE DATABASE meters").await;
    let set = ProfileSet::builtin();
    let sim = Dlt645Sim::new(Version::V2007, Some(2400));
    for (_, addr, profile) in METERS {
        sim.add_meter(
            addr.parse().unwrap(),
            set.get(profile).cloned().unwrap(),
            true,
        );
    }
    // The three-phase meter does not do block reads: meterd must fall back and remember.
    sim.set_blocks("123456789012".parse().unwrap(), false);
    // The single-phase meter sends every value over two frames: follow-ups (B1 → 12 → 92).
    sim.set_max_value_bytes("000000001111".parse().unwrap(), 2);
    let drifts: Vec<i64> = METERS
        .iter()
        .map(|(_, a, _)| sim.clock_drift(a.parse().unwrap()).unwrap())
        .collect();
    assert!(
        drifts.iter().all(|d| d.abs() >= 2),
        "the simulated clocks start off: {drifts:?}"
    );
    let (master, _keep, pty) = sim::pty_pair().expect("pty");
    tokio::spawn(sim.clone().serve(master));

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("meterd.toml");
    let mut text = format!(
        "[gateway]\nid = \"gw-dl\"\nstate_dir = \"{}\"\n[[bus]]\nname = \"rs485-dl\"\nprotocol = \"dlt645-2007\"\n\
         serial = {{ device = \"{pty}\" }}\ntime_sync = \"1s\"\n",
        dir.path().join("state").display()
    );
    for (id, addr, profile) in METERS {
        text += &format!(
            "[[bus.meter]]\nid = \"{id}\"\naddress = \"{addr}\"\nprofile = \"{profile}\"\nintervals = {{ realtime = \"3s\", energy = \"3s\", clock = \"2s\", daily = \"2s\" }}\n"
        );
    }
    text += &format!(
        "[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n[influxdb]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"meters\"\nbatch_interval = \"200ms\"\n",
        broker.port,
        influx.url()
    );
    std::fs::write(&cfg, text).unwrap();
    let mqtt = Collector::start(broker.port, "meterd/gw-dl/#").await;
    let meterd = Meterd::run(&cfg);

    mqtt.wait_for(
        "realtime and energy readings of both meters",
        Duration::from_secs(30),
        |msgs| {
            METERS.iter().all(|(id, _, _)| {
                let topic = format!("meterd/gw-dl/meter/{id}/reading");
                msgs.iter()
                    .any(|m| m.topic == topic && m.payload.contains("energy_import_kwh"))
                    && msgs
                        .iter()
                        .any(|m| m.topic == topic && m.payload.contains("voltage_l1_v"))
                    && msgs
                        .iter()
                        .any(|m| m.topic == topic && m.payload.contains("meter_clock_offset_s"))
            })
        },
    )
    .await;
    for (id, addr, profile) in METERS {
        let expected = sim.values(addr.parse::<Address>().unwrap()).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for m in mqtt.on(&format!("meterd/gw-dl/meter/{id}/reading")) {
            let v: serde_json::Value = serde_json::from_str(&m.payload).unwrap();
            assert_eq!(v["bus"], "rs485-dl");
            for (q, got) in v["values"].as_object().unwrap() {
                let got = got.as_f64().unwrap();
                if q == "meter_clock_offset_s"
                    || v["ts"]
                        .as_str()
                        .is_some_and(|t| t.ends_with("T16:00:00.000Z"))
                {
                    seen.insert(q.clone());
                    continue;
                }
                let want = expected[q.as_str()];
                assert!(
                    (got - want).abs() <= resolution(profile, q),
                    "{id} {q}: {got} vs {want}"
                );
                seen.insert(q.clone());
            }
        }
        let wanted: std::collections::BTreeSet<String> = set
            .get(profile)
            .unwrap()
            .quantities()
            .map(String::from)
            .collect();
        assert_eq!(seen, wanted, "{id}: every quantity of its profile");
    }
    // Units: power in W (the meter says kW), energy in kWh.
    let p = expected_power(&mqtt);
    assert!(p > 1000.0, "power_w is in W: {p}");

    for (id, _, profile) in METERS {
        let q = format!(
            "SELECT energy_import_kwh FROM meter WHERE meter = '{id}' AND energy_import_kwh > 0 ORDER BY time DESC LIMIT 1"
        );
        let a = eventually(
            "DL/T 645 lines in InfluxDB",
            Duration::from_secs(15),
            || {
                let q = q.clone();
                let influx = &influx;
                async move {
                    let a = servers::influxql(influx, "meters", &q).await;
                    a["results"][0]["series"][0]["values"][0][1]
                        .as_f64()
                        .map(|v| (v, a))
                }
            },
        )
        .await;
        let addr: Address = METERS
            .iter()
            .find(|m| m.0 == *id)
            .unwrap()
            .1
            .parse()
            .unwrap();
        let want = sim.values(addr).unwrap()["energy_import_kwh"];
        assert!(
            (a.0 - want).abs() <= resolution(profile, "energy_import_kwh"),
            "{id}: {} vs {want}",
            a.0
        );
    }
    let log = meterd.log_text();
    assert_eq!(
        log.matches("meter refuses block reads").count(),
        1,
        "the fallback is remembered:\n{log}"
    );
}

fn expected_power(mqtt: &Collector) -> f64 {
    mqtt.on("meterd/gw-dl/meter/dl-3p/reading")
        .iter()
        .filter_map(|m| {
            serde_json::from_str::<serde_json::Value>(&m.payload).ok()?["values"]["power_w"]
                .as_f64()
        })
        .next()
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_gap_the_missed_daily_freezes_are_read_back_oldest_first() {
    use meterd::bus::{dlt645::Dlt645Link, poll, BusLink, MeterOnBus, MeterTarget, PollTarget};
    use meterd::config::{raw::Parity, Link, SerialConfig};
    let set = ProfileSet::builtin();
    let profile = set.get("dlt645-2007-single-phase").cloned().unwrap();
    let sim = Dlt645Sim::new(Version::V2007, None);
    let address: Address = "000000001111".parse().unwrap();
    sim.add_meter(address, profile.clone(), true);
    let (master, _keep, pty) = sim::pty_pair().expect("pty");
    tokio::spawn(sim.clone().serve(master));
    let link = Link::Serial(SerialConfig {
        device: pty.into(),
        baud: 9600,
        parity: Parity::Even,
        data_bits: 8,
        stop_bits: 1,
    });
    let mut link = BusLink::Dlt645(Dlt645Link::new(
        Version::V2007,
        link,
        Duration::from_secs(1),
    ));
    // The gateway last published the freeze of three days before the newest.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let drift = sim.clock_drift(address).unwrap();
    let newest = (now + 8 * 3600 + drift).div_euclid(86_400) * 86_400;
    let targets = PollTarget::for_meter(MeterOnBus {
        profile: &profile,
        unit: 0,
        address: Some(address),
        server_address: None,
        frame_gap: Duration::from_millis(20),
        max_registers: 125,
        max_gap: 16,
        utc_offset_s: 8 * 3600,
        time_sync: None,
    });
    let target = &targets[profile.groups.iter().position(|g| g.daily_freeze).unwrap()];
    let MeterTarget::Dlt645(meter) = &target.meter else {
        panic!("a DL/T 645 target")
    };
    *meter.last_freeze.lock().unwrap() = Some(newest - 3 * 86_400);
    let r = poll(&mut link, target, 0).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let stamps: Vec<i64> = r
        .dated
        .iter()
        .map(|(t, _)| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 + 8 * 3600)
        .collect();
    assert_eq!(
        stamps,
        [newest - 2 * 86_400, newest - 86_400, newest],
        "the three missed days, oldest first"
    );
    let totals: Vec<f64> = r.dated.iter().map(|(_, v)| v[0].1).collect();
    assert!(
        totals.windows(2).all(|w| w[0] < w[1]),
        "energy grows day by day: {totals:?}"
    );
    // Polled again: nothing new.
    assert!(poll(&mut link, target, 0).await.dated.is_empty());
}

/// A meter that answers every read with "more frames follow", just inside the timeout (0.7 s
/// of delay, plus the meter's own delay and the wire time at 2400 baud), shares a line with
/// two good meters. Its reads end where the identifier can carry no more, it is backed off
/// like a timeout, its error is visible in the API, the metrics and the log, and the good
/// meters keep their schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meter_that_always_has_more_frames_cannot_silence_its_line() {
    let broker = servers::mosquitto();
    let set = ProfileSet::builtin();
    let profile = set.get("dlt645-2007-single-phase").cloned().unwrap();
    let sim = Dlt645Sim::new(Version::V2007, Some(2400));
    let meters = [
        ("good-1", "000000000001"),
        ("good-2", "000000000002"),
        ("culprit", "000000000003"),
    ];
    for (_, a) in meters {
        sim.add_meter(a.parse().unwrap(), profile.clone(), true);
    }
    sim.set_fault(
        "000000000003".parse().unwrap(),
        sim::Fault::MoreFrames(Duration::from_millis(700)),
    );
    let (master, _keep, pty) = sim::pty_pair().expect("pty");
    tokio::spawn(sim.clone().serve(master));
    let http = servers::free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("meterd.toml");
    let mut text = format!(
        "[gateway]\nid = \"gw-more\"\nstate_dir = \"{}\"\n[[bus]]\nname = \"rs485\"\nprotocol = \"dlt645-2007\"\n\
         serial = {{ device = \"{pty}\" }}\noffline_after = 1\n",
        dir.path().join("state").display()
    );
    for (id, a) in meters {
        text += &format!(
            "[[bus.meter]]\nid = \"{id}\"\naddress = \"{a}\"\nprofile = \"dlt645-2007-single-phase\"\nintervals = {{ realtime = \"2s\", energy = \"1h\", clock = \"1h\", daily = \"1h\" }}\n"
        );
    }
    text += &format!(
        "[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n",
        broker.port
    );
    std::fs::write(&cfg, text).unwrap();
    let mqtt = Collector::start(broker.port, "meterd/gw-more/meter/+/reading").await;
    let meterd = Meterd::run(&cfg);
    meterd.ready().await;
    let window = Duration::from_secs(20);
    tokio::time::sleep(window).await;

    let readings = |id: &str| mqtt.on(&format!("meterd/gw-more/meter/{id}/reading")).len();
    for id in ["good-1", "good-2"] {
        // Every 2 s for 20 s is 10 polls; the culprit may cost a few of them.
        assert!(
            readings(id) >= 6,
            "{id} kept its schedule: {} readings in {window:?}\n{}",
            readings(id),
            meterd.log_text()
        );
    }
    assert_eq!(readings("culprit"), 0);
    let api = crate::harness::http_json(http, "/api/meters")
        .await
        .unwrap();
    let culprit = api["meters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["meter"] == "culprit")
        .cloned()
        .unwrap();
    assert!(culprit["polls"].as_u64().unwrap() >= 1, "{culprit}");
    assert_eq!(culprit["online"], false, "{culprit}");
    assert!(
        culprit["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("more frames")),
        "{culprit}"
    );
    let (_, metrics) = crate::harness::http_get(http, "/metrics").await.unwrap();
    let link_failures: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "meterd_meter_failures_total{bus=\"rs485\",meter=\"culprit\",kind=\"link\"}",
            )?
            .trim()
            .parse()
            .ok()
        })
        .unwrap_or(0.0);
    assert!(link_failures >= 1.0, "{metrics}");
    let log = meterd.log_text();
    assert!(
        log.lines().any(|l| l.contains("meter offline")
            && l.contains("culprit")
            && l.contains("more frames")),
        "{log}"
    );
    // Backed off: a handful of polls in 20 s, not one per interval.
    assert!(culprit["polls"].as_u64().unwrap() <= 4, "{culprit}");
}
