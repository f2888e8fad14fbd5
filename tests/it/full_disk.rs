//! A full disk while the broker is down, on a real tmpfs (needs root to mount; the test says so
//! and fails otherwise): meterd keeps polling and answering, tries one segment with back-off
//! instead of a file per reading, logs the failure and the recovery once, holds what fits in
//! its memory bound, counts every reading it had to drop, and delivers everything it kept once
//! space and broker are back. The MQTT gap must equal the dropped count exactly: nothing is
//! lost behind anyone's back.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use meterd::testing::Tmpfs;

use crate::{
    harness::{http_get, tcp_sim, Collector, Meterd},
    servers,
};

const METERS: u8 = 20;

fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_with_the_broker_down_keeps_meterd_working_and_loses_nothing_uncounted() {
    let gateway = "gw-full";
    let disk = Tmpfs::mount(2 << 20);
    let port = servers::free_port();
    let mut broker = servers::mosquitto_with(port, true);
    let mqtt = Collector::start_with(
        port,
        &format!("meterd/{gateway}/meter/+/reading"),
        Some("gw-full-collector"),
    )
    .await;
    broker.stop_gracefully();

    let meters: Vec<(u8, &str)> = (1..=METERS).map(|u| (u, "eastron-sdm120")).collect();
    let (_sim, addr) = tcp_sim(&meters, false).await;
    let http = servers::free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("meterd.toml");
    let mut text = format!(
        "[gateway]\nid = \"{gateway}\"\nstate_dir = \"{}\"\n[[bus]]\nname = \"b\"\nprotocol = \"modbus-tcp\"\ntcp = \"{addr}\"\nconcurrency = 4\n",
        disk.path().join("state").display()
    );
    for u in 1..=METERS {
        text += &format!(
            "[[bus.meter]]\nid = \"m{u}\"\nunit = {u}\nprofile = \"eastron-sdm120\"\nintervals = {{ realtime = \"100ms\", energy = \"1h\" }}\n"
        );
    }
    text += &format!(
        "[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\n[journal]\nmemory = \"256KiB\"\nfsync = \"200ms\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n"
    );
    std::fs::write(&cfg, text).unwrap();
    let mut meterd = Meterd::run(&cfg);
    meterd.ready().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before = meterd.rss_kib().unwrap_or(0);
    let journal = disk.path().join("state").join("journal");
    let files_before = std::fs::read_dir(&journal).unwrap().count();

    disk.fill();
    let full_since = Instant::now();
    let mut polls_during = Vec::new();
    let mut rss_max = rss_before;
    while full_since.elapsed() < Duration::from_secs(12) {
        let asked = Instant::now();
        let health = tokio::time::timeout(Duration::from_secs(2), http_get(http, "/healthz"))
            .await
            .expect("/healthz answers while the disk is full")
            .expect("/healthz reachable");
        assert!(asked.elapsed() < Duration::from_secs(2));
        if full_since.elapsed() > Duration::from_secs(2) {
            assert_eq!(health.0, 503, "{}", health.1);
            assert!(health.1.contains("journal"), "{}", health.1);
        }
        let (_, metrics) = http_get(http, "/metrics").await.expect("/metrics");
        polls_during.push(
            metric(&metrics, "meterd_meter_polls_total{bus=\"b\",meter=\"m1\"}").unwrap_or(0.0),
        );
        rss_max = rss_max.max(meterd.rss_kib().unwrap_or(0));
        let files = std::fs::read_dir(&journal).unwrap().count();
        assert!(
            files <= files_before + 2,
            "no file per reading while the disk is full: {files} files (was {files_before})"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        polls_during.last() > polls_during.first(),
        "polling goes on: {polls_during:?}"
    );
    let (_, metrics) = http_get(http, "/metrics").await.unwrap();
    assert_eq!(metric(&metrics, "meterd_journal_ok"), Some(0.0));
    let dropped = metric(&metrics, "meterd_sink_dropped_total{sink=\"mqtt\"}").unwrap_or(0.0);
    assert!(
        dropped > 0.0,
        "memory (256 KiB) filled and readings were dropped:\n{metrics}"
    );
    let memory = metric(&metrics, "meterd_journal_memory_bytes").expect("memory metric");
    assert!(memory <= 256.0 * 1024.0, "memory bound kept: {memory}");
    let alerts = http_get(http, "/api/alerts").await.unwrap().1;
    for name in ["JournalDropping", "JournalUnwritable"] {
        assert!(alerts.contains(name), "{name} not active: {alerts}");
    }
    assert!(
        rss_max < rss_before + 20 * 1024,
        "memory stays bounded: RSS {rss_before} KiB before, {rss_max} KiB at most while full"
    );

    // Space and broker come back: what was kept is journaled again and delivered.
    disk.free();
    broker.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, m) = http_get(http, "/metrics").await.unwrap();
        let depth = metric(&m, "meterd_sink_depth{sink=\"mqtt\"}").unwrap_or(f64::MAX);
        if metric(&m, "meterd_journal_ok") == Some(1.0) && depth < 100.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the backlog was not delivered after space and broker returned (depth {depth}):\n{}",
            meterd.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (_, metrics) = http_get(http, "/metrics").await.unwrap();
    let dropped = metric(&metrics, "meterd_sink_dropped_total{sink=\"mqtt\"}").unwrap_or(0.0);
    let asked = Instant::now();
    let status = meterd.terminate(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM stops meterd cleanly (after {:?}):\n{}",
        asked.elapsed(),
        meterd.log_text()
    );
    let log = meterd.log_text();
    let log_has = |what: &str| log.matches(what).count();
    assert_eq!(
        log_has("journal cannot write"),
        1,
        "the failure is logged once:\n{log}"
    );
    assert_eq!(
        log_has("journal writes again"),
        1,
        "the recovery is logged once:\n{log}"
    );
    assert_eq!(
        log_has("journal cannot be written and its memory is full"),
        1,
        "dropping is logged once:\n{log}"
    );
    // Alert state and outboxes are small files written on events: one line each, not one
    // per attempt.
    assert!(
        log_has("cannot save the alert state") <= 1,
        "alert state failure logged once:\n{log}"
    );
    assert!(
        log_has("cannot write the alert outbox") <= 2,
        "one line per outbox:\n{log}"
    );
    assert!(
        !log.lines().any(|l| l.contains(" ERROR ")
            && ![
                "journal cannot",
                "alert state",
                "alert outbox",
                "journal sync failed"
            ]
            .iter()
            .any(|known| l.contains(known))),
        "no other errors:\n{log}"
    );

    // What was left undelivered at the stop is in the journal: a drain run delivers it. Then
    // every seq either reached MQTT or was counted as dropped, nothing else.
    let drain_cfg = dir.path().join("drain.toml");
    std::fs::write(
        &drain_cfg,
        format!(
            "[gateway]\nid = \"{gateway}\"\nstate_dir = \"{}\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\n[http]\nlisten = \"127.0.0.1:{}\"\n",
            disk.path().join("state").display(),
            servers::free_port()
        ),
    )
    .unwrap();
    let mut drain = Meterd::run(&drain_cfg);
    drain.ready().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let missing = loop {
        let mut seqs: BTreeMap<String, std::collections::BTreeSet<u64>> = BTreeMap::new();
        for m in mqtt.all() {
            let v: serde_json::Value = serde_json::from_str(&m.payload).expect("json");
            seqs.entry(v["meter"].as_str().unwrap_or_default().to_string())
                .or_default()
                .insert(v["seq"].as_u64().expect("seq"));
        }
        assert_eq!(seqs.len(), METERS as usize, "every meter reached MQTT");
        let missing: usize = seqs
            .values()
            .map(|s| {
                let last = s.iter().next_back().copied().unwrap_or(0);
                (1..=last).filter(|q| !s.contains(q)).count()
            })
            .sum();
        if missing as f64 == dropped || Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        missing as f64, dropped,
        "the readings MQTT never saw are exactly those counted as dropped"
    );
    assert!(drain.terminate(Duration::from_secs(10)).is_some());
}
