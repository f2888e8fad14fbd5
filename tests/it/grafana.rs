//! The Grafana dashboards against real data: meterd writes readings, status points and an
//! alert into a real InfluxDB 1.x; every panel's query, with Grafana's macros and the
//! dashboard variables expanded, must return data there.

use std::time::Duration;

use crate::{
    harness::{eventually, tcp_sim, Meterd},
    servers,
};

const DASHBOARDS: &[&str] = &["fleet-overview.json", "meter-detail.json"];

fn dashboard(name: &str) -> serde_json::Value {
    let path = format!(
        "{}/config/grafana/dashboards/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every panel, rows' nested panels included.
fn panels(d: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        out.push(p.clone());
        out.extend(p["panels"].as_array().into_iter().flatten().cloned());
    }
    out
}

/// What Grafana does to a query before sending it, for one gateway and one meter.
fn expand(q: &str, gateway: &str, meter: &str) -> String {
    q.replace("$timeFilter", "time > now() - 1h")
        .replace("$__interval", "1s")
        .replace("$energy_interval", "2s")
        .replace("$gateway", gateway)
        .replace("$meter", meter)
}

/// True when some series of the answer has a row with a non-null value besides the time.
fn has_data(answer: &serde_json::Value) -> bool {
    answer["results"][0]["series"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["values"].as_array().cloned().unwrap_or_default())
        .any(|row| {
            row.as_array()
                .is_some_and(|r| r.iter().skip(1).any(|v| !v.is_null()))
        })
}

#[test]
fn the_provisioned_datasource_is_the_one_every_panel_and_variable_uses() {
    let ds = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/grafana/provisioning/datasources/meterd.yml"
    ))
    .unwrap();
    assert!(
        ds.contains("type: influxdb") && ds.contains("uid: meterd-influxdb"),
        "{ds}"
    );
    for name in DASHBOARDS {
        let d = dashboard(name);
        for p in panels(&d) {
            assert_eq!(
                p["datasource"]["uid"], "meterd-influxdb",
                "{name}: {}",
                p["title"]
            );
            for t in p["targets"].as_array().unwrap() {
                assert_eq!(
                    t["datasource"]["uid"], "meterd-influxdb",
                    "{name}: {}",
                    p["title"]
                );
                assert_eq!(
                    t["rawQuery"], true,
                    "{name}: {}: InfluxQL as written",
                    p["title"]
                );
            }
        }
        for v in d["templating"]["list"].as_array().unwrap() {
            if v["type"] == "query" {
                assert_eq!(
                    v["datasource"]["uid"], "meterd-influxdb",
                    "{name}: ${}",
                    v["name"]
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_panel_query_returns_data_from_influxdb_1x() {
    let influx = servers::influxdb1();
    servers::influxql(&influx, "", "CREATE DATABASE meters").await;
    let (_sim, addr) = tcp_sim(&[(1, "eastron-sdm630"), (2, "chint-dtsu666")], false).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("meterd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[gateway]\nid = \"gw-g\"\nstate_dir = \"{}\"\n\
             [[bus]]\nname = \"tcp-1\"\nprotocol = \"modbus-tcp\"\ntcp = \"{addr}\"\n\
             [[bus.meter]]\nid = \"m-sdm630\"\nunit = 1\nprofile = \"eastron-sdm630\"\ninterval = \"250ms\"\n\
             [[bus.meter]]\nid = \"m-dtsu\"\nunit = 2\nprofile = \"chint-dtsu666\"\ninterval = \"250ms\"\n\
             [influxdb]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"meters\"\nbatch_interval = \"100ms\"\nstatus_interval = \"500ms\"\n\
             [[alerts.rule]]\nname = \"FrequencyHigh\"\nquantity = \"frequency_hz\"\nabove = 1.0\nmeters = [\"m-sdm630\"]\n",
            dir.path().join("state").display(),
            influx.url()
        ),
    )
    .unwrap();
    let _meterd = Meterd::run(&cfg);
    // Enough for several status samples, energy differences over 2 s buckets, and the alert.
    eventually("readings, status points and an alert in InfluxDB", Duration::from_secs(30), || async {
        let q = "SELECT count(\"frequency_hz\") FROM \"meter\"; SELECT count(\"online\") FROM \"meter_status\" WHERE \"online\" = 1; SELECT count(\"firing\") FROM \"alert\"";
        let a = servers::influxql(&influx, "meters", q).await;
        let n = |i: usize| a["results"][i]["series"][0]["values"][0][1].as_u64().unwrap_or(0);
        (n(0) >= 40 && n(1) >= 4 && n(2) >= 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut failed = Vec::new();
    let mut ran = 0;
    for name in DASHBOARDS {
        let d = dashboard(name);
        for v in d["templating"]["list"].as_array().unwrap() {
            if v["type"] != "query" {
                continue;
            }
            let q = expand(v["query"].as_str().unwrap(), "gw-g", "m-sdm630");
            let a = servers::influxql(&influx, "meters", &q).await;
            let values = a["results"][0]["series"][0]["values"].to_string();
            let want = if v["name"] == "meter" {
                "m-sdm630"
            } else {
                "gw-g"
            };
            if !values.contains(want) {
                failed.push(format!("{name}: variable ${}: {q}\n  → {a}", v["name"]));
            }
        }
        for p in panels(&d) {
            for t in p["targets"].as_array().into_iter().flatten() {
                let q = expand(t["query"].as_str().unwrap(), "gw-g", "m-sdm630");
                let a = servers::influxql(&influx, "meters", &q).await;
                ran += 1;
                if !has_data(&a) {
                    failed.push(format!("{name}: panel {:?}: {q}\n  → {a}", p["title"]));
                }
            }
        }
    }
    assert!(ran >= 15, "only {ran} queries");
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
