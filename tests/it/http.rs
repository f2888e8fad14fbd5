//! The HTTP endpoints of a running meterd.

use std::time::Duration;

use crate::{
    harness::{eventually, http_get as get, one_meter_config, tcp_sim, Meterd},
    servers,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_the_meter_api_describe_a_running_gateway() {
    let (_sim, addr) = tcp_sim(&[(1, "eastron-sdm120")], true).await;
    let port = servers::free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = one_meter_config(
        dir.path(),
        "gw-http",
        &dir.path().join("state"),
        &addr,
        "300ms",
        &format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let _meterd = Meterd::run(&cfg);
    let api = eventually(
        "the meter online in the API",
        Duration::from_secs(10),
        || async {
            let (_, body) = get(port, "/api/meters").await?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            (v["meters"][0]["online"] == true).then_some(v)
        },
    )
    .await;
    let m = &api["meters"][0];
    assert_eq!(m["meter"], "m1");
    assert_eq!(m["bus"], "b");
    assert!(m["values"]["voltage_l1_v"].as_f64().is_some(), "{m}");
    assert!(m["last_reading"]["seq"].as_u64().unwrap() >= 1);

    let (status, metrics) = get(port, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    for line in [
        "meterd_meter_up{bus=\"b\",meter=\"m1\"} 1",
        "meterd_journal_ok 1",
        "# TYPE meterd_meter_polls_total counter",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    assert!(
        metrics.contains("meterd_meter_failures_total{bus=\"b\",meter=\"m1\",kind=\"timeout\"} 0"),
        "{metrics}"
    );
    // The body is sent in pieces; each family is still declared once, its lines together.
    let mut declared: Vec<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .collect();
    let n = declared.len();
    declared.sort();
    declared.dedup();
    assert_eq!(declared.len(), n, "a family declared twice:\n{metrics}");
    assert!(n >= 20, "{metrics}");
    // Latency: a histogram whose +Inf bucket counts every poll, and the bus's busy time.
    let value = |prefix: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{prefix} missing:\n{metrics}"))
    };
    let count = value("meterd_poll_duration_seconds_count{bus=\"b\",meter=\"m1\"}");
    assert!(count >= 1.0, "{metrics}");
    assert_eq!(
        value("meterd_poll_duration_seconds_bucket{bus=\"b\",meter=\"m1\",le=\"+Inf\"}"),
        count
    );
    assert!(value("meterd_poll_duration_seconds_sum{bus=\"b\",meter=\"m1\"}") > 0.0);
    assert!(
        value("meterd_bus_busy_seconds_total{bus=\"b\"}") > 0.0,
        "{metrics}"
    );
    let u = value("meterd_bus_utilisation{bus=\"b\"}");
    assert!((0.0..=1.0).contains(&u), "{metrics}");
    assert_eq!(
        get(port, "/healthz").await.unwrap(),
        (200, "ok\n".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_fails_when_the_journal_cannot_be_written() {
    let (_sim, addr) = tcp_sim(&[(1, "eastron-sdm120")], true).await;
    let port = servers::free_port();
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-directory");
    std::fs::write(&blocker, "x").unwrap();
    let cfg = one_meter_config(
        dir.path(),
        "gw-h",
        &blocker.join("state"),
        &addr,
        "300ms",
        &format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let _meterd = Meterd::run(&cfg);
    let (status, body) = eventually("a health answer", Duration::from_secs(10), || {
        get(port, "/healthz")
    })
    .await;
    assert_eq!(status, 503);
    assert!(
        body.contains("journal cannot be written") && body.contains("not-a-directory"),
        "{body}"
    );
    let (_, metrics) = get(port, "/metrics").await.unwrap();
    assert!(metrics.contains("meterd_journal_ok 0"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_fails_when_every_bus_is_down() {
    let (sim, addr) = tcp_sim(&[(1, "eastron-sdm120")], true).await;
    sim.set_fault(1, meterd::sim::Fault::Silent);
    let port = servers::free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("meterd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[gateway]\nid = \"gw-down\"\nstate_dir = \"{}\"\n[[bus]]\nname = \"b\"\nprotocol = \"modbus-tcp\"\ntcp = \"{addr}\"\n\
             timeout = \"200ms\"\nretries = 0\noffline_after = 1\n\
             [[bus.meter]]\nid = \"m1\"\nunit = 1\nprofile = \"eastron-sdm120\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let _meterd = Meterd::run(&cfg);
    let body = eventually("an unhealthy answer", Duration::from_secs(10), || async {
        let (status, body) = get(port, "/healthz").await?;
        (status == 503).then_some(body)
    })
    .await;
    assert_eq!(body, "every bus is down: no meter answers\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_http_port_is_said_once_and_taken_when_it_frees() {
    let (_sim, addr) = tcp_sim(&[(1, "eastron-sdm120")], true).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = one_meter_config(
        dir.path(),
        "gw-busy",
        &dir.path().join("state"),
        &addr,
        "300ms",
        &format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let meterd = Meterd::run(&cfg);
    meterd.ready().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(taken);
    let (status, _) = eventually(
        "/healthz once the port is free",
        Duration::from_secs(40),
        || get(port, "/healthz"),
    )
    .await;
    assert_eq!(status, 200);
    let log = meterd.log_text();
    assert_eq!(
        log.matches("cannot serve HTTP").count(),
        1,
        "said once, not per attempt:\n{log}"
    );
    assert!(
        !log.contains("task ended unexpectedly"),
        "a busy port is not a crash:\n{log}"
    );
}
