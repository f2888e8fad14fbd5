//! A broker that refuses meterd says why, at the default log level: the first failure and each
//! change of reason at WARN with the broker's or TLS's own words, the same reason in
//! `/api/sinks`; and `validate` loads the TLS files, so an empty CA file is found before a run.

use std::time::Duration;

use crate::{
    harness::{eventually, http_json, tcp_sim, Meterd},
    servers,
};

/// The `[mqtt]` section, given the TLS port, the plain port and the right CA.
type MqttSection = Box<dyn Fn(u16, u16, &str) -> String>;

struct Case {
    what: &'static str,
    mqtt: MqttSection,
    /// Any of these in the reason.
    reason: &'static [&'static str],
}

async fn refused(case: &Case, tls_port: u16, plain_port: u16, ca: &str, dir: &std::path::Path) {
    let (_sim, addr) = tcp_sim(&[(1, "eastron-sdm120")], true).await;
    let http = servers::free_port();
    let cfg = crate::harness::one_meter_config(
        dir,
        "gw-refused",
        &dir.join("state"),
        &addr,
        "1s",
        &format!(
            "{}keep_alive = \"5s\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n",
            (case.mqtt)(tls_port, plain_port, ca)
        ),
    );
    // The default level: what an engineer sees without asking for more.
    let meterd = Meterd::run_with_env(&cfg, &[("RUST_LOG", "info")]);
    meterd.ready().await;
    let line = eventually(
        &format!("{}: a WARN line saying why", case.what),
        Duration::from_secs(10),
        || {
            let log = meterd.log_text();
            async move {
                log.lines()
                    .find(|l| l.contains("WARN") && l.contains("cannot connect to the broker"))
                    .map(String::from)
            }
        },
    )
    .await;
    assert!(
        case.reason.iter().any(|r| line.contains(r)),
        "{}: the reason ({:?}) in: {line}",
        case.what,
        case.reason
    );
    let api = http_json(http, "/api/sinks").await.expect("/api/sinks");
    let mqtt = api["sinks"]
        .as_array()
        .and_then(|s| s.iter().find(|k| k["name"] == "mqtt").cloned())
        .expect("the mqtt sink");
    let error = mqtt["error"].as_str().unwrap_or_default();
    assert!(
        case.reason.iter().any(|r| error.contains(r)),
        "{}: /api/sinks says {mqtt}",
        case.what
    );
    assert!(mqtt["failing_since"].is_string(), "{mqtt}");
    // Retries with the same reason say nothing more.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let log = meterd.log_text();
    let warns = log
        .lines()
        .filter(|l| l.contains("cannot connect to the broker"))
        .count();
    assert_eq!(warns, 1, "{}: logged once per reason:\n{log}", case.what);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_broker_refusal_is_logged_once_at_warn_with_its_reason_and_shown_in_the_api()
{
    let (_broker, plain, ca) = servers::mosquitto_tls("meterd", "right");
    let tls = _broker.port;
    let (_other, _, _) = servers::mosquitto_tls_for("meterd", "right", "DNS:meterd.invalid");
    let other_tls = _other.port;
    let other_ca_dir = tempfile::tempdir().unwrap();
    let stranger = servers::certs(other_ca_dir.path()).ca;
    let stranger = stranger.display().to_string();
    let pw_dir = tempfile::tempdir().unwrap();
    let wrong = pw_dir.path().join("wrong");
    std::fs::write(&wrong, "wrong").unwrap();
    let wrong = wrong.display().to_string();
    let cases = vec![
        Case {
            what: "a wrong password",
            mqtt: Box::new(move |tls, _, ca| {
                format!("[mqtt]\nurl = \"mqtts://127.0.0.1:{tls}\"\nca_file = \"{ca}\"\nusername = \"meterd\"\npassword_file = \"{wrong}\"\n")
            }),
            reason: &["NotAuthorized", "BadUserNamePassword"],
        },
        Case {
            what: "no user",
            mqtt: Box::new(|tls, _, ca| {
                format!("[mqtt]\nurl = \"mqtts://127.0.0.1:{tls}\"\nca_file = \"{ca}\"\n")
            }),
            reason: &["NotAuthorized", "BadUserNamePassword"],
        },
        Case {
            what: "a CA that did not sign the broker's certificate",
            mqtt: Box::new(move |tls, _, _| {
                format!("[mqtt]\nurl = \"mqtts://127.0.0.1:{tls}\"\nca_file = \"{stranger}\"\nusername = \"meterd\"\npassword = \"right\"\n")
            }),
            // Both test CAs are called the same: rustls finds the issuer by name, then the
            // signature fails (BadSignature); a CA of another name gives UnknownIssuer.
            reason: &["UnknownIssuer", "BadSignature"],
        },
        Case {
            what: "a certificate for another name",
            mqtt: Box::new(move |_, _, _| {
                // Signed by its own CA, which is not ours either: the name is checked all the same.
                format!("[mqtt]\nurl = \"mqtts://127.0.0.1:{other_tls}\"\nusername = \"meterd\"\npassword = \"right\"\n")
            }),
            reason: &["invalid peer certificate"],
        },
        Case {
            what: "TLS to a plain port",
            mqtt: Box::new(|_, plain, ca| {
                format!("[mqtt]\nurl = \"mqtts://127.0.0.1:{plain}\"\nca_file = \"{ca}\"\n")
            }),
            reason: &["TLS", "corrupt", "InvalidContentType", "tls"],
        },
        Case {
            what: "plain MQTT to a TLS port",
            mqtt: Box::new(|tls, _, _| {
                format!("[mqtt]\nurl = \"mqtt://127.0.0.1:{tls}\"\nusername = \"meterd\"\npassword = \"right\"\n")
            }),
            reason: &["closed", "reset", "Connection", "I/O", "Mqtt state"],
        },
    ];
    let ca = ca.display().to_string();
    for case in &cases {
        let dir = tempfile::tempdir().unwrap();
        refused(case, tls, plain, &ca, dir.path()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_on_another_name_is_refused_for_its_name() {
    // Our own CA signed it, so only the name is wrong.
    let dir = tempfile::tempdir().unwrap();
    let (broker, _, ca) = servers::mosquitto_tls_for("meterd", "right", "DNS:meterd.invalid");
    let case = Case {
        what: "a certificate for another name, signed by a CA we trust",
        mqtt: Box::new(|tls, _, ca| {
            format!("[mqtt]\nurl = \"mqtts://127.0.0.1:{tls}\"\nca_file = \"{ca}\"\nusername = \"meterd\"\npassword = \"right\"\n")
        }),
        reason: &["not valid for name"],
    };
    refused(&case, broker.port, 0, &ca.display().to_string(), dir.path()).await;
}

#[test]
fn validate_loads_the_tls_files_and_names_one_without_a_certificate_or_key() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "no certificate here\n").unwrap();
    let cfg = dir.path().join("meterd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[gateway]\nid = \"gw\"\nstate_dir = \"state\"\n[mqtt]\nurl = \"mqtts://127.0.0.1\"\nca_file = \"{e}\"\nclient_cert_file = \"{e}\"\nclient_key_file = \"{e}\"\n",
            e = empty.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meterd"))
        .args(["validate", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{text}");
    for key in ["mqtt.ca_file", "mqtt.client_cert_file"] {
        assert!(
            text.lines()
                .any(|l| l.contains(key) && l.contains("holds no certificate")),
            "{key}: {text}"
        );
    }
    assert!(
        text.lines()
            .any(|l| l.contains("mqtt.client_key_file") && l.contains("holds no private key")),
        "{text}"
    );
}
