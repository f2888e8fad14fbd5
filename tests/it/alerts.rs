//! Alerts end to end: simulated meters driven out of range and silent, a real Prometheus
//! Alertmanager routing to a webhook served by the test, meterd's own webhook and the MQTT
//! alert topic on a real Mosquitto; and a crash while an alert is undelivered.

use std::time::Duration;

use crate::{
    harness::{http_get, http_json, tcp_sim, Collector, Meterd},
    receiver::{Receiver, Request},
    servers,
};

fn config(
    dir: &std::path::Path,
    sim: &str,
    meters: &[(u8, &str)],
    extra: &str,
) -> std::path::PathBuf {
    let mut s = format!(
        "[gateway]\nid = \"gw-a\"\nstate_dir = \"{}\"\n\
         [[bus]]\nname = \"b\"\nprotocol = \"modbus-tcp\"\ntcp = \"{sim}\"\ntimeout = \"200ms\"\nbackoff = \"300ms\"\nbackoff_max = \"300ms\"\n",
        dir.join("state").display()
    );
    for (unit, id) in meters {
        s += &format!(
            "[[bus.meter]]\nid = \"{id}\"\nunit = {unit}\nprofile = \"eastron-sdm120\"\ninterval = \"200ms\"\n"
        );
    }
    s += "[alerts]\nresend = \"2s\"\n\
          [[alerts.rule]]\nname = \"Overvoltage\"\nquantity = \"voltage_l*_v\"\nabove = 235.4\nclear = 233.0\nfor = \"1s\"\n\
          severity = \"critical\"\nsummary = \"{meter}: {quantity} {value} V above {threshold} V\"\n";
    s += extra;
    let path = dir.join("meterd.toml");
    std::fs::write(&path, s).unwrap();
    path
}

/// Alerts in Alertmanager's webhook payloads: (status, labels).
fn am_alerts(reqs: &[Request]) -> Vec<(String, serde_json::Value)> {
    reqs.iter()
        .filter(|r| r.path == "/am")
        .flat_map(|r| r.body["alerts"].as_array().cloned().unwrap_or_default())
        .map(|a| {
            (
                a["status"].as_str().unwrap_or("").to_string(),
                a["labels"].clone(),
            )
        })
        .collect()
}

/// meterd's own webhook events: (name, state, meter).
fn hook_events(reqs: &[Request]) -> Vec<(String, String, String)> {
    reqs.iter()
        .filter(|r| r.path == "/hook")
        .map(|r| {
            let s = |k: &str| r.body[k].as_str().unwrap_or("").to_string();
            (s("name"), s("state"), s("meter"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_range_and_a_silent_meter_reach_alertmanager_the_webhook_and_mqtt_and_resolve() {
    let broker = servers::mosquitto();
    let receiver = Receiver::start().await;
    let am = servers::alertmanager(&receiver.url("/am"));
    let (sim, addr) = tcp_sim(&[(1, "eastron-sdm120"), (2, "eastron-sdm120")], true).await;
    sim.set_fault(2, meterd::sim::Fault::Silent);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &addr,
        &[(1, "m1"), (2, "m2")],
        &format!(
            "[alerts.builtin.meter_offline]\nintervals = 3\n\
             [[alerts.alertmanager]]\nurl = \"{}\"\n\
             [[alerts.webhook]]\nurl = \"{}\"\nbearer_token = \"s3cret\"\nhmac_secret = \"k3y\"\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n",
            am.url(),
            receiver.url("/hook"),
            broker.port
        ),
    );
    let mqtt = Collector::start(broker.port, "meterd/gw-a/alert").await;
    let meterd = Meterd::run(&cfg);
    meterd.ready().await;
    sim.set_value(1, "voltage_l1_v", Some(240.0));

    // Alertmanager passes the alert on with every label meterd gave it.
    let within = Duration::from_secs(20);
    receiver
        .wait_for("Overvoltage firing through Alertmanager", within, |r| {
            am_alerts(std::slice::from_ref(r))
                .iter()
                .any(|(s, l)| s == "firing" && l["alertname"] == "Overvoltage")
        })
        .await;
    let (_, labels) = am_alerts(&receiver.requests())
        .into_iter()
        .find(|(s, l)| s == "firing" && l["alertname"] == "Overvoltage")
        .unwrap();
    for (k, v) in [
        ("gateway", "gw-a"),
        ("meter", "m1"),
        ("bus", "b"),
        ("severity", "critical"),
        ("quantity", "voltage_l1_v"),
    ] {
        assert_eq!(labels[k], v, "{labels}");
    }

    // The webhook: the contract's fields, a bearer token and an HMAC of the exact body.
    let hook = receiver
        .wait_for("Overvoltage on the webhook", within, |r| {
            r.path == "/hook" && r.body["name"] == "Overvoltage"
        })
        .await;
    assert_eq!(hook.body["state"], "firing");
    assert_eq!(hook.body["meter"], "m1");
    assert_eq!(hook.body["value"], 240.0);
    assert_eq!(hook.body["threshold"], 235.4);
    assert!(hook.body["since"]
        .as_str()
        .is_some_and(|s| s.ends_with('Z')));
    assert_eq!(hook.body["summary"], "m1: voltage_l1_v 240 V above 235.4 V");
    assert_eq!(hook.headers["authorization"], "Bearer s3cret");
    assert_eq!(
        hook.headers["x-meterd-signature"],
        format!(
            "sha256={}",
            meterd::alerts::notify::signature("k3y", &hook.raw)
        )
    );

    // MQTT: the alert topic of the contract.
    mqtt.wait_for("Overvoltage on MQTT", within, |msgs| {
        msgs.iter().any(|m| {
            m.payload.contains("\"name\":\"Overvoltage\"")
                && m.payload.contains("\"state\":\"firing\"")
        })
    })
    .await;

    // The silent meter: offline, through every notifier.
    receiver
        .wait_for("MeterOffline for m2 on the webhook", within, |r| {
            r.path == "/hook" && r.body["name"] == "MeterOffline" && r.body["meter"] == "m2"
        })
        .await;
    receiver
        .wait_for("MeterOffline through Alertmanager", within, |r| {
            am_alerts(std::slice::from_ref(r)).iter().any(|(s, l)| {
                s == "firing" && l["alertname"] == "MeterOffline" && l["meter"] == "m2"
            })
        })
        .await;

    // Inside the hysteresis band: still firing, nothing resolves.
    sim.set_value(1, "voltage_l1_v", Some(234.0));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !hook_events(&receiver.requests())
            .iter()
            .any(|(n, s, _)| n == "Overvoltage" && s == "resolved"),
        "resolved inside the band"
    );

    // Back to normal, and the meter answers again: both resolve everywhere.
    sim.set_value(1, "voltage_l1_v", None);
    sim.set_fault(2, meterd::sim::Fault::None);
    for name in ["Overvoltage", "MeterOffline"] {
        receiver
            .wait_for(&format!("{name} resolved on the webhook"), within, |r| {
                r.path == "/hook" && r.body["name"] == name && r.body["state"] == "resolved"
            })
            .await;
        receiver
            .wait_for(
                &format!("{name} resolved through Alertmanager"),
                within,
                |r| {
                    am_alerts(std::slice::from_ref(r))
                        .iter()
                        .any(|(s, l)| s == "resolved" && l["alertname"] == name)
                },
            )
            .await;
        mqtt.wait_for(&format!("{name} resolved on MQTT"), within, |msgs| {
            msgs.iter().any(|m| {
                m.payload.contains(&format!("\"name\":\"{name}\""))
                    && m.payload.contains("\"state\":\"resolved\"")
            })
        })
        .await;
    }
    // Once each: one firing and one resolve per alert on the webhook.
    let events = hook_events(&receiver.requests());
    for name in ["Overvoltage", "MeterOffline"] {
        for state in ["firing", "resolved"] {
            let n = events
                .iter()
                .filter(|(a, s, _)| a == name && s == state)
                .count();
            assert_eq!(n, 1, "{name} {state}: {events:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_raised_while_the_receiver_is_down_survives_a_crash_and_a_restart_pages_once_and_still_resolves(
) {
    let receiver = Receiver::start().await;
    let am = servers::alertmanager(&receiver.url("/am"));
    receiver.answer(503);
    let (sim, addr) = tcp_sim(&[(1, "eastron-sdm120")], true).await;
    let dir = tempfile::tempdir().unwrap();
    let port = servers::free_port();
    let cfg = config(
        dir.path(),
        &addr,
        &[(1, "m1")],
        &format!(
            "[[alerts.webhook]]\nurl = \"{}\"\n[[alerts.alertmanager]]\nurl = \"{}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n",
            receiver.url("/hook"),
            am.url()
        ),
    );
    // Re-sent every second, so Alertmanager would let the alert expire 4 s after the last one.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("resend = \"2s\"", "resend = \"1s\"");
    std::fs::write(&cfg, text).unwrap();
    let mut meterd = Meterd::run(&cfg);
    meterd.ready().await;
    sim.set_value(1, "voltage_l1_v", Some(240.0));
    crate::harness::eventually(
        "the alert firing in meterd",
        Duration::from_secs(15),
        || async { meterd.log_text().contains("alert firing").then_some(()) },
    )
    .await;
    // It is in the API and the metrics while it cannot be delivered (the API follows the log
    // line by the time the event is in the outboxes).
    let api = crate::harness::eventually(
        "the alert firing in the API",
        Duration::from_secs(5),
        || async {
            let api = http_json(port, "/api/alerts").await?;
            (api["alerts"][0]["state"] == "firing").then_some(api)
        },
    )
    .await;
    assert_eq!(api["alerts"][0]["name"], "Overvoltage", "{api}");
    let (_, metrics) = http_get(port, "/metrics").await.unwrap();
    assert!(metrics.contains("meterd_alerts_firing 1"), "{metrics}");
    assert!(
        metrics.contains("meterd_alert_outbox_pending{outbox=\"webhook\"} 1"),
        "the undelivered event is visible:\n{metrics}"
    );
    assert!(metrics.contains("alertname=\"Overvoltage\""), "{metrics}");

    // Crash with the event undelivered; come back with the receiver up.
    meterd.kill9();
    receiver.answer(200);
    let meterd = Meterd::run(&cfg);
    meterd.ready().await;
    receiver
        .wait_for(
            "the firing delivered after the crash",
            Duration::from_secs(15),
            |r| r.body["name"] == "Overvoltage" && r.body["state"] == "firing",
        )
        .await;
    // A clean restart while it fires, still above the threshold: no second page, and
    // Alertmanager keeps the alert active (meterd re-sends what it restored) past its endsAt.
    let mut meterd = meterd;
    assert!(meterd
        .terminate(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    let meterd = Meterd::run(&cfg);
    meterd.ready().await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let active: serde_json::Value = reqwest::get(format!("{}/api/v2/alerts?active=true", am.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        active
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["labels"]["alertname"] == "Overvoltage" && a["status"]["state"] == "active"),
        "{active}"
    );
    sim.set_value(1, "voltage_l1_v", None);
    receiver
        .wait_for("the resolve", Duration::from_secs(15), |r| {
            r.body["name"] == "Overvoltage" && r.body["state"] == "resolved"
        })
        .await;
    let events = hook_events(&receiver.requests());
    assert_eq!(
        events,
        vec![
            (
                "Overvoltage".to_string(),
                "firing".to_string(),
                "m1".to_string()
            ),
            (
                "Overvoltage".to_string(),
                "resolved".to_string(),
                "m1".to_string()
            ),
        ]
    );
    drop(meterd);
}

#[test]
fn the_alertmanager_route_example_is_valid_and_pages_only_for_critical_alerts() {
    let amtool = servers::binary("amtool", "prometheus-alertmanager");
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/alertmanager/alertmanager.yml"
    );
    let check = std::process::Command::new(&amtool)
        .args(["check-config", file])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    for (labels, receivers) in [
        (
            ["severity=critical", "alertname=BusDown"],
            "on-call-pager,operators-chat",
        ),
        (
            ["severity=warning", "alertname=MeterOffline"],
            "operators-chat",
        ),
    ] {
        let out = std::process::Command::new(&amtool)
            .args(["config", "routes", "test", &format!("--config.file={file}")])
            .args(labels)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            receivers,
            "{labels:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_one_notifier_is_down_the_others_say_so() {
    let pager = Receiver::start().await;
    pager.answer(503);
    let chat = Receiver::start().await;
    let (sim, addr) = tcp_sim(&[(1, "eastron-sdm120")], true).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &addr,
        &[(1, "m1")],
        &format!(
            "[alerts.builtin.sink_unreachable]\nfor = \"1s\"\n\
             [[alerts.webhook]]\nname = \"pager\"\nurl = \"{}\"\n\
             [[alerts.webhook]]\nname = \"chat\"\nurl = \"{}\"\n",
            pager.url("/hook"),
            chat.url("/hook")
        ),
    );
    let meterd = Meterd::run(&cfg);
    meterd.ready().await;
    sim.set_value(1, "voltage_l1_v", Some(240.0));
    let r = chat
        .wait_for(
            "SinkUnreachable for the pager on the chat webhook",
            Duration::from_secs(20),
            |r| r.body["name"] == "SinkUnreachable" && r.body["labels"]["sink"] == "pager",
        )
        .await;
    assert_eq!(r.body["state"], "firing");
    pager.answer(200);
    chat.wait_for("the pager back: resolved", Duration::from_secs(40), |r| {
        r.body["name"] == "SinkUnreachable" && r.body["state"] == "resolved"
    })
    .await;
    // The pager gets what it missed, its own outage included.
    pager
        .wait_for(
            "the Overvoltage the pager missed",
            Duration::from_secs(5),
            |r| r.body["name"] == "Overvoltage",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_receiver_refuses_is_dropped_and_later_ones_still_go_out() {
    let receiver = Receiver::start().await;
    receiver.answer(400);
    let (sim, addr) = tcp_sim(&[(1, "eastron-sdm120")], true).await;
    let dir = tempfile::tempdir().unwrap();
    let port = servers::free_port();
    let cfg = config(
        dir.path(),
        &addr,
        &[(1, "m1")],
        &format!(
            "[[alerts.webhook]]\nurl = \"{}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n",
            receiver.url("/hook")
        ),
    );
    let meterd = Meterd::run(&cfg);
    meterd.ready().await;
    sim.set_value(1, "voltage_l1_v", Some(240.0));
    crate::harness::eventually("the refusal logged", Duration::from_secs(15), || async {
        meterd
            .log_text()
            .contains("the receiver refused an alert event")
            .then_some(())
    })
    .await;
    let (_, metrics) = http_get(port, "/metrics").await.unwrap();
    assert!(
        metrics.contains("meterd_alert_outbox_pending{outbox=\"webhook\"} 0"),
        "a refused event leaves the outbox:\n{metrics}"
    );
    receiver.answer(200);
    sim.set_value(1, "voltage_l1_v", None);
    receiver
        .wait_for("the resolve", Duration::from_secs(15), |r| {
            r.body["state"] == "resolved"
        })
        .await;
    assert_eq!(
        hook_events(&receiver.requests()),
        vec![(
            "Overvoltage".to_string(),
            "resolved".to_string(),
            "m1".to_string()
        )],
        "the refused firing event is not sent again"
    );
}
