//! Secrets never reach a log line or an HTTP answer: a run at debug level where every sink
//! fails (InfluxDB 1.x, a broker, a webhook and Alertmanager that are not there) is searched
//! for each secret. And InfluxDB 1.x credentials travel in an
//! `Authorization` header, which a real InfluxDB with authentication on accepts.

use std::time::Duration;

use crate::{
    harness::{eventually, http_get, tcp_sim, Meterd},
    servers,
};

const INFLUX_PASSWORD: &str = "influx-pw-7c1e";
const MQTT_PASSWORD: &str = "mqtt-pw-93ab";
const HOOK_PATH_TOKEN: &str = "hook-path-token-55d2";
const BEARER: &str = "bearer-tok-0f3a";
const HMAC: &str = "hmac-key-61b9";
const ALERTMANAGER_PATH_TOKEN: &str = "am-path-tok-c4d0";
const REMOTE_KEY: &str = "remote-cmd-key-8e27-long-enough";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_any_log_line_or_http_answer_while_every_sink_fails() {
    let (_sim, addr) = tcp_sim(&[(1, "eastron-sdm120")], false).await;
    let closed = servers::free_port();
    let influx = format!("http://127.0.0.1:{}", servers::free_port());
    let http = servers::free_port();
    let dir = tempfile::tempdir().unwrap();
    let secret_file = |name: &str, value: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, value).unwrap();
        p.display().to_string()
    };
    let cfg = dir.path().join("meterd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[gateway]\nid = \"gw-secrets\"\nstate_dir = \"{state}\"\n\
             [[bus]]\nname = \"b\"\nprotocol = \"modbus-tcp\"\ntcp = \"{addr}\"\n\
             [[bus.meter]]\nid = \"m1\"\nunit = 1\nprofile = \"eastron-sdm120\"\ninterval = \"300ms\"\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{closed}\"\nusername = \"meterd\"\npassword_file = \"{mqtt}\"\n\
             [influxdb]\nurl = \"{influx}\"\napi = \"v1\"\ndatabase = \"meters\"\nusername = \"admin\"\npassword_file = \"{influx_pw}\"\nbatch_interval = \"200ms\"\n\
             [alerts]\nresend = \"1s\"\n\
             [[alerts.rule]]\nname = \"AnyVoltage\"\nquantity = \"voltage_l1_v\"\nabove = 1.0\n\
             [[alerts.webhook]]\nurl = \"http://127.0.0.1:{closed}/hooks/{HOOK_PATH_TOKEN}\"\nbearer_token_file = \"{bearer}\"\nhmac_secret_file = \"{hmac}\"\n\
             [[alerts.alertmanager]]\nurl = \"http://127.0.0.1:{closed}/{ALERTMANAGER_PATH_TOKEN}\"\n\
             [http]\nlisten = \"127.0.0.1:{http}\"\n\
             [remote]\ncommands = [\"status\"]\nkey_file = \"{remote}\"\n",
            state = dir.path().join("state").display(),
            influx = influx,
            mqtt = secret_file("mqtt-password", MQTT_PASSWORD),
            influx_pw = secret_file("influx-password", INFLUX_PASSWORD),
            bearer = secret_file("bearer", BEARER),
            hmac = secret_file("hmac", HMAC),
            remote = secret_file("remote-key", REMOTE_KEY),
        ),
    )
    .unwrap();
    let meterd = Meterd::run_with_env(&cfg, &[("RUST_LOG", "debug")]);
    meterd.ready().await;
    // Long enough for every sink and notifier to fail and retry.
    eventually(
        "every sink's and notifier's failure in the log",
        Duration::from_secs(20),
        || {
            let log = meterd.log_text();
            async move {
                (log.contains("InfluxDB write failed")
                    && log.contains("alert delivery failed")
                    && log.contains("broker"))
                .then_some(())
            }
        },
    )
    .await;
    let mut seen = meterd.log_text();
    for path in [
        "/",
        "/metrics",
        "/healthz",
        "/api/meters",
        "/api/alerts",
        "/api/commands",
    ] {
        let (_, body) = http_get(http, path).await.expect("HTTP answers");
        seen += &body;
    }
    for secret in [
        INFLUX_PASSWORD,
        MQTT_PASSWORD,
        HOOK_PATH_TOKEN,
        BEARER,
        HMAC,
        ALERTMANAGER_PATH_TOKEN,
        REMOTE_KEY,
    ] {
        let line = seen.lines().find(|l| l.contains(secret));
        assert!(line.is_none(), "{secret} shown: {}", line.unwrap_or(""));
    }
    // The failures are there, naming where they went wrong.
    assert!(seen.contains(&influx), "the InfluxDB host is named");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb_1x_with_authentication_takes_the_credentials_from_a_header() {
    let influx = servers::influxdb1_auth("meterd", "pa55-w0rd").await;
    let (_sim, addr) = tcp_sim(&[(1, "eastron-sdm120")], true).await;
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("influx-password");
    std::fs::write(&pw, "pa55-w0rd\n").unwrap();
    let cfg = crate::harness::one_meter_config(
        dir.path(),
        "gw-auth",
        &dir.path().join("state"),
        &addr,
        "300ms",
        &format!(
            "[influxdb]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"meters\"\nusername = \"meterd\"\npassword_file = \"{}\"\nbatch_interval = \"200ms\"\n",
            influx.url(),
            pw.display()
        ),
    );
    let meterd = Meterd::run(&cfg);
    meterd.ready().await;
    let client = reqwest::Client::new();
    let rows = eventually("readings in InfluxDB", Duration::from_secs(15), || {
        let req = client
            .post(format!("{}/query", influx.url()))
            .basic_auth("meterd", Some("pa55-w0rd"))
            .query(&[
                ("db", "meters"),
                ("q", "SELECT count(voltage_l1_v) FROM meter"),
            ]);
        async move {
            let v: serde_json::Value = req.send().await.ok()?.json().await.ok()?;
            v["results"][0]["series"][0]["values"][0][1]
                .as_f64()
                .filter(|n| *n > 0.0)
        }
    })
    .await;
    assert!(rows >= 1.0);
    // Refused credentials would be logged as `HTTP 401: …` (a bare "401" can be a port or
    // a timestamp's milliseconds).
    assert!(
        !meterd.log_text().contains("HTTP 401"),
        "{}",
        meterd.log_text()
    );
}
