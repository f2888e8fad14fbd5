//! DL/T 698.45 end to end: `meterd run` polls simulated meters on a real pty at 9600 baud 8E1
//! (replies paced at that rate, after a meter-like delay). One meter refuses lists, one
//! answers only SECURITY-wrapped reads, one splits its replies into link fragments, one is
//! silent; readings reach the real Mosquitto and InfluxDB in the contract's units, clocks are
//! set, daily freezes arrive with their freeze time.

use std::{collections::BTreeSet, time::Duration};

use meterd::{
    config::ProfileSet,
    protocols::dlt698::ServerAddress,
    sim::{
        self,
        dlt698::{Dlt698Sim, Quirk},
        Fault,
    },
};

use crate::{
    harness::{eventually, Collector, Meterd},
    servers,
};

/// (meter id, address, profile, quirk)
const METERS: &[(&str, &str, &str, Option<Quirk>)] = &[
    (
        "m-3p",
        "000000000321",
        "dlt698-three-phase",
        Some(Quirk::NoLists),
    ),
    (
        "m-1p",
        "000000000322",
        "dlt698-single-phase",
        Some(Quirk::Secure),
    ),
    (
        "m-frag",
        "201605190907",
        "dlt698-three-phase",
        Some(Quirk::Fragments(40)),
    ),
];
const DEAD: &str = "000000000999";

fn addr(s: &str) -> ServerAddress {
    ServerAddress::single(s).unwrap()
}

/// One unit of the last digit the meter sends for `quantity`, in the contract's unit.
fn resolution(profile: &str, quantity: &str) -> f64 {
    let set = ProfileSet::builtin();
    let p = set.get(profile).expect("profile");
    let point = p
        .groups
        .iter()
        .flat_map(|g| g.oads.iter())
        .find(|o| o.names.iter().flatten().any(|n| &**n == quantity))
        .unwrap_or_else(|| panic!("{profile}: no point for {quantity}"));
    10f64.powi(point.exp) + 1e-9
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlt698_meters_reach_mqtt_and_influxdb_in_contract_units_whatever_their_quirks() {
    let broker = servers::mosquitto();
    let influx = servers::influxdb1();
    servers::influxql(&influx, "", "CREATE DATABASE meters").await;
    let set = ProfileSet::builtin();
    let sim = Dlt698Sim::new(Some(9600));
    for (_, a, profile, quirk) in METERS {
        sim.add_meter(addr(a), set.get(profile).cloned().unwrap(), true);
        if let Some(q) = quirk {
            sim.set_quirk(&addr(a), *q);
        }
        sim.set_drift(&addr(a), 42);
    }
    sim.add_meter(
        addr(DEAD),
        set.get("dlt698-three-phase").cloned().unwrap(),
        true,
    );
    sim.set_fault(&addr(DEAD), Fault::Silent);
    let (master, _keep, pty) = sim::pty_pair().expect("pty");
    tokio::spawn(sim.clone().serve(master));

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("meterd.toml");
    let mut text = format!(
        "[gateway]\nid = \"gw-698\"\nstate_dir = \"{}\"\n[[bus]]\nname = \"rs485-698\"\nprotocol = \"dlt698\"\n\
         serial = {{ device = \"{pty}\" }}\ntimeout = \"500ms\"\nbackoff = \"1s\"\ntime_sync = \"1h\"\n",
        dir.path().join("state").display()
    );
    for (id, a, profile, _) in
        METERS
            .iter()
            .copied()
            .chain([("m-dead", DEAD, "dlt698-three-phase", None)])
    {
        text += &format!(
            "[[bus.meter]]\nid = \"{id}\"\naddress = \"{a}\"\nprofile = \"{profile}\"\nintervals = {{ realtime = \"2s\", energy = \"3s\", clock = \"2s\", daily = \"3s\" }}\n"
        );
    }
    text += &format!(
        "[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n[influxdb]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"meters\"\nbatch_interval = \"200ms\"\n",
        broker.port,
        influx.url()
    );
    std::fs::write(&cfg, text).unwrap();
    let mqtt = Collector::start(broker.port, "meterd/gw-698/#").await;
    let meterd = Meterd::run(&cfg);

    let has = |msgs: &[crate::harness::Message], id: &str, what: &str| {
        let topic = format!("meterd/gw-698/meter/{id}/reading");
        msgs.iter()
            .any(|m| m.topic == topic && m.payload.contains(what))
    };
    mqtt.wait_for(
        "realtime, energy, clock and freeze readings of every answering meter, the silent one offline",
        Duration::from_secs(60),
        |msgs| {
            METERS.iter().all(|(id, ..)| {
                has(msgs, id, "voltage_l1_v")
                    && has(msgs, id, "energy_export_kwh")
                    && has(msgs, id, "meter_clock_offset_s")
                    && has(msgs, id, "T16:00:00.000Z")
            }) && msgs.iter().any(|m| {
                m.topic == "meterd/gw-698/meter/m-dead/availability" && m.payload == "offline"
            })
        },
    )
    .await;

    for (id, a, profile, _) in METERS {
        let expected = sim.values(&addr(a)).unwrap();
        let mut seen = BTreeSet::new();
        for m in mqtt.on(&format!("meterd/gw-698/meter/{id}/reading")) {
            let v: serde_json::Value = serde_json::from_str(&m.payload).unwrap();
            assert_eq!(v["bus"], "rs485-698");
            let freeze = v["ts"]
                .as_str()
                .is_some_and(|t| t.ends_with("T16:00:00.000Z"));
            for (q, got) in v["values"].as_object().unwrap() {
                seen.insert(q.clone());
                let got = got.as_f64().unwrap();
                match expected.get(q.as_str()) {
                    Some(want) if !freeze && q != "meter_clock_offset_s" => assert!(
                        (got - want).abs() <= resolution(profile, q),
                        "{id} {q}: {got} vs {want}"
                    ),
                    _ => {}
                }
            }
        }
        let wanted: BTreeSet<String> = set
            .get(profile)
            .unwrap()
            .quantities()
            .map(String::from)
            .collect();
        assert_eq!(seen, wanted, "{id}: every quantity of its profile");
    }
    // Units: power in W, as the contract says.
    let power = mqtt
        .on("meterd/gw-698/meter/m-3p/reading")
        .iter()
        .find_map(|m| {
            serde_json::from_str::<serde_json::Value>(&m.payload).ok()?["values"]["power_w"]
                .as_f64()
        })
        .unwrap();
    assert!(power > 100.0, "power_w in W: {power}");

    // The clocks were 42 s off and the bus sets them: the meters now keep the gateway's time.
    for (_, a, ..) in METERS {
        let drift = sim.clock_drift(&addr(a)).unwrap();
        assert!(drift.abs() <= 2, "{a}: clock still {drift} s off");
    }

    let q = "SELECT energy_import_kwh FROM meter WHERE meter = 'm-frag' AND energy_import_kwh > 0 ORDER BY time DESC LIMIT 1";
    let stored = eventually(
        "DL/T 698.45 lines in InfluxDB",
        Duration::from_secs(15),
        || {
            let influx = &influx;
            async move {
                servers::influxql(influx, "meters", q).await["results"][0]["series"][0]["values"][0]
                    [1]
                .as_f64()
            }
        },
    )
    .await;
    let want = sim.values(&addr("201605190907")).unwrap()["energy_import_kwh"];
    assert!((stored - want).abs() <= 0.01 + 1e-9, "{stored} vs {want}");

    let log = meterd.log_text();
    for (what, n) in [
        ("meter refuses GET-Request-NormalList", 1),
        ("meter refuses plain reads", 1),
        ("meter clock off: set to the gateway's time", 3),
    ] {
        assert_eq!(log.matches(what).count(), n, "{what}:\n{log}");
    }
}

/// A bus link straight onto the simulator's pty, for polls driven by the test.
fn direct_link(pty: String) -> meterd::bus::BusLink {
    use meterd::config::{Link, Parity, SerialConfig};
    meterd::bus::BusLink::Dlt698(meterd::bus::dlt698::Dlt698Link::new(
        Link::Serial(SerialConfig {
            device: pty.into(),
            baud: 9600,
            parity: Parity::Even,
            data_bits: 8,
            stop_bits: 1,
        }),
        Duration::from_millis(500),
    ))
}

/// Every group of one meter, as a bus polls them.
fn targets_of(
    profile: &std::sync::Arc<meterd::protocols::profile::Profile>,
    address: &ServerAddress,
) -> Vec<std::sync::Arc<meterd::bus::PollTarget>> {
    meterd::bus::PollTarget::for_meter(meterd::bus::MeterOnBus {
        profile,
        unit: 0,
        address: None,
        server_address: Some(address.clone()),
        frame_gap: Duration::from_millis(5),
        max_registers: 125,
        max_gap: 16,
        utc_offset_s: 8 * 3600,
        time_sync: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_gap_the_missed_dlt698_daily_freezes_are_read_back_oldest_first() {
    use meterd::bus::{poll, MeterTarget};
    let set = ProfileSet::builtin();
    let profile = set.get("dlt698-single-phase").cloned().unwrap();
    let sim = Dlt698Sim::new(None);
    let address = addr("000000000322");
    sim.add_meter(address.clone(), profile.clone(), true);
    sim.set_drift(&address, 0);
    let (master, _keep, pty) = sim::pty_pair().expect("pty");
    tokio::spawn(sim.clone().serve(master));
    let mut link = direct_link(pty);
    let targets = targets_of(&profile, &address);
    let target = &targets[profile.groups.iter().position(|g| g.daily_freeze).unwrap()];
    let MeterTarget::Dlt698(meter) = &target.meter else {
        panic!("a DL/T 698.45 target")
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let today = (now + 8 * 3600).div_euclid(86_400) * 86_400;
    *meter.last_freeze.lock().unwrap() = Some(today - 3 * 86_400);
    let r = poll(&mut link, target, 0).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let days: Vec<i64> = r
        .dated
        .iter()
        .map(|(t, _)| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 + 8 * 3600)
        .collect();
    assert_eq!(
        days,
        vec![today - 2 * 86_400, today - 86_400, today],
        "the three missed days, oldest first"
    );
    // Energy only grows from one freeze to the next.
    let energy: Vec<f64> = r
        .dated
        .iter()
        .map(|(_, v)| {
            v.iter()
                .find(|(q, _)| &**q == "energy_import_kwh")
                .unwrap()
                .1
        })
        .collect();
    assert!(energy.windows(2).all(|w| w[0] <= w[1]), "{energy:?}");
    assert_eq!(*meter.last_freeze.lock().unwrap(), Some(today));
    // Nothing new: the next poll reads nothing and publishes nothing.
    let again = poll(&mut link, target, 0).await;
    assert!(again.dated.is_empty() && again.errors.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_answered_in_application_blocks_is_followed_to_its_last_block() {
    use meterd::bus::poll;
    let set = ProfileSet::builtin();
    let profile = set.get("dlt698-three-phase").cloned().unwrap();
    let sim = Dlt698Sim::new(None);
    let address = addr("000000000777");
    sim.add_meter(address.clone(), profile.clone(), true);
    // Six OADs in the real-time group, two per block: three blocks.
    sim.set_quirk(&address, Quirk::Blocks(2));
    let (master, _keep, pty) = sim::pty_pair().expect("pty");
    tokio::spawn(sim.clone().serve(master));
    let mut link = direct_link(pty);
    let targets = targets_of(&profile, &address);
    let realtime = profile
        .groups
        .iter()
        .position(|g| g.name == "realtime")
        .unwrap();
    let r = poll(&mut link, &targets[realtime], 0).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(
        r.requests, 3,
        "one GET-Request-NormalList and two GET-Request-Next"
    );
    let got: BTreeSet<&str> = r.values.iter().map(|(q, _)| &**q).collect();
    let wanted: BTreeSet<&str> = profile.groups[realtime]
        .oads
        .iter()
        .flat_map(|o| o.names.iter().flatten().map(|n| &**n))
        .collect();
    assert_eq!(got, wanted);
    let expected = sim.values(&address).unwrap();
    let v = r
        .values
        .iter()
        .find(|(q, _)| &**q == "voltage_l2_v")
        .unwrap()
        .1;
    assert!((v - expected["voltage_l2_v"]).abs() <= 0.1 + 1e-9, "{v}");
}
