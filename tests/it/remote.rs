//! Remote operations through a real Mosquitto: `meterd cmd status` end to end, and every
//! refused case (disabled command, bad signature, replayed nonce, stale timestamp, unknown
//! meter, malformed and oversized payloads) answered `refused` with its audit event, nothing
//! executed, the daemon unharmed.

use std::{process::Command, time::Duration};

use meterd::remote::{request::Request, sign};

use crate::{
    harness::{self, Collector, Meterd},
    servers,
};

const KEY: &str = "a test key of plenty of bytes";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A request for `command` signed with `key` for gateway `gw-rc`.
fn signed(
    command: &str,
    id: &str,
    nonce: &str,
    ts: i64,
    args: serde_json::Value,
    key: &str,
) -> String {
    let mut body = serde_json::json!({"id": id, "ts": ts, "nonce": nonce, "by": "test", "args": args, "sig": "00"});
    let r = Request::parse(command, body.to_string().as_bytes()).unwrap();
    body["sig"] = sign(key.as_bytes(), "gw-rc", &r).into();
    body.to_string()
}

/// Publishes `payload` to `meterd/gw-rc/cmd/{command}` at QoS 1 with `mosquitto_pub`, as a
/// master station would.
fn publish(pub_bin: &std::path::Path, port: u16, command: &str, payload: &str) {
    let ok = Command::new(pub_bin)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", &format!("meterd/gw-rc/cmd/{command}"), "-m", payload])
        .status()
        .unwrap();
    assert!(ok.success(), "mosquitto_pub {command}");
}

/// Runs `meterd cmd -c CFG ARGS…` off the runtime and returns its output.
async fn meterd_cmd(cfg: &std::path::Path, args: &[&str]) -> std::process::Output {
    let cfg = cfg.to_path_buf();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_meterd"))
            .args(["cmd", "-c"])
            .arg(&cfg)
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// The JSON reply `meterd cmd` printed, or `null` when it printed none.
fn reply_of(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_answered_when_signed_and_refused_with_an_audit_event_otherwise() {
    let broker = servers::mosquitto();
    let pub_bin = servers::binary("mosquitto_pub", "mosquitto-clients");
    let (_sim, addr) = harness::tcp_sim(&[(1, "eastron-sdm120")], true).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("remote.key"), format!("{KEY}\n")).unwrap();
    let http = servers::free_port();
    let cfg = harness::one_meter_config(
        dir.path(),
        "gw-rc",
        &dir.path().join("state"),
        &addr,
        "1s",
        &format!(
            "[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n\
             [remote]\ncommands = [\"status\"]\nkey_file = \"remote.key\"\nwindow = \"1m\"\nrate_limit = {{ status = 100 }}\n",
            broker.port
        ),
    );
    let replies = Collector::start(broker.port, "meterd/gw-rc/cmd/+/reply").await;
    let audit = Collector::start(broker.port, "meterd/gw-rc/audit").await;
    let _meterd = Meterd::run(&cfg);
    let readings = Collector::start(broker.port, "meterd/gw-rc/meter/m1/reading").await;
    readings
        .wait_for("a reading", Duration::from_secs(15), |m| !m.is_empty())
        .await;

    // The operator's path: meterd cmd signs with the config's key and waits for the reply.
    let out = meterd_cmd(&cfg, &["status", "--meter", "m1", "--timeout", "10s"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["result"]["meters"][0]["meter"], "m1");
    assert!(
        v["result"]["meters"][0]["values"]["voltage_l1_v"]
            .as_f64()
            .unwrap()
            > 200.0,
        "{v}"
    );

    // Every way a request can be wrong: (what, command topic, payload, reason in the reply).
    let t = now();
    let status = |id: &str, nonce: &str, ts: i64, key: &str| {
        signed(
            "status",
            id,
            nonce,
            ts,
            serde_json::json!({"meter": "m1"}),
            key,
        )
    };
    let cases: Vec<(&str, &str, String, &str)> = vec![
        (
            "a disabled command",
            "read",
            signed(
                "read",
                "r-read",
                "nonce-000000000001",
                t,
                serde_json::json!({"meter": "m1"}),
                KEY,
            ),
            "not enabled",
        ),
        (
            "a bad signature",
            "status",
            status("r-sig", "nonce-000000000002", t, "not the key at all here"),
            "bad signature",
        ),
        (
            "a stale timestamp",
            "status",
            status("r-old", "nonce-000000000003", t - 3600, KEY),
            "from the gateway's clock",
        ),
        (
            "an unknown meter",
            "status",
            signed(
                "status",
                "r-meter",
                "nonce-000000000004",
                t,
                serde_json::json!({"meter": "m9"}),
                KEY,
            ),
            "no meter \"m9\"",
        ),
        (
            "malformed JSON",
            "status",
            "{\"id\":\"r-json\",".to_string(),
            "not a JSON object",
        ),
        (
            "an oversized payload",
            "status",
            format!("{{\"id\":\"r-big\",\"pad\":\"{}\"}}", "x".repeat(20_000)),
            "larger than",
        ),
        (
            "an unknown command",
            "explode",
            status("r-cmd", "nonce-000000000005", t, KEY),
            "unknown command",
        ),
        (
            "a first good request",
            "status",
            status("r-ok", "nonce-000000000006", t, KEY),
            "",
        ),
        (
            "its nonce replayed under a new id",
            "status",
            status("r-replay", "nonce-000000000006", t, KEY),
            "nonce already used",
        ),
    ];
    for (_, command, payload, _) in &cases {
        publish(&pub_bin, broker.port, command, payload);
    }
    let n = cases.len() + 1; // the cases and meterd cmd's request
    replies
        .wait_for("a reply to every request", Duration::from_secs(10), |m| {
            m.len() >= n
        })
        .await;
    audit
        .wait_for(
            "an audit event for every request",
            Duration::from_secs(10),
            |m| m.len() >= n,
        )
        .await;
    let replies: Vec<serde_json::Value> = replies
        .all()
        .iter()
        .map(|m| serde_json::from_str(&m.payload).unwrap())
        .collect();
    for (what, _, payload, reason) in &cases {
        // An oversized payload is refused unread: its reply has no id.
        let id = serde_json::from_str::<serde_json::Value>(payload)
            .ok()
            .filter(|_| payload.len() <= meterd::remote::request::MAX_BYTES)
            .and_then(|v| v["id"].as_str().map(String::from))
            .unwrap_or_default();
        let r = replies
            .iter()
            .find(|r| {
                r["id"] == id.as_str()
                    && (reason.is_empty()
                        || r["reason"].as_str().is_some_and(|s| s.contains(reason)))
            })
            .unwrap_or_else(|| panic!("{what}: no reply with {reason:?} among {replies:#?}"));
        let wanted = if reason.is_empty() { "ok" } else { "refused" };
        assert_eq!(r["status"], wanted, "{what}: {r}");
    }
    let audits: Vec<serde_json::Value> = audit
        .all()
        .iter()
        .map(|m| serde_json::from_str(&m.payload).unwrap())
        .collect();
    assert!(
        audits.iter().any(|a| a["id"] == "r-sig"
            && a["status"] == "refused"
            && a["reason"] == "bad signature"
            && a["by"] == "test"),
        "{audits:#?}"
    );
    assert!(audits
        .iter()
        .all(|a| a["at"].as_str().is_some_and(|t| t.ends_with('Z'))));

    // The same request again (a QoS 1 redelivery): answered with the same reply, not re-run.
    let again = status("r-ok", "nonce-000000000006", t, KEY);
    publish(&pub_bin, broker.port, "status", &again);
    let metrics = harness::eventually(
        "the commands in /metrics",
        Duration::from_secs(10),
        || async {
            let (_, text) = harness::http_get(http, "/metrics").await?;
            let ok = text
                .lines()
                .find(|l| l.starts_with("meterd_commands_total{command=\"status\",status=\"ok\"}"))?
                .rsplit(' ')
                .next()?
                .parse::<u64>()
                .ok()?;
            (ok >= 3).then_some(text)
        },
    )
    .await;
    assert!(
        metrics.contains("meterd_commands_total{command=\"read\",status=\"refused\"} 1"),
        "{metrics}"
    );
    // Still serving after all of it.
    let (code, _) = harness::http_get(http, "/healthz").await.unwrap();
    assert_eq!(code, 200);
    // Every command is in the audit file (synced before its reply went out) and on the
    // status page's API.
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(dir.path().join("state/audit.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    assert!(lines.len() > cases.len(), "{} audit lines", lines.len());
    for id in ["r-read", "r-sig", "r-old", "r-meter", "r-ok", "r-replay"] {
        assert!(
            lines.iter().any(|l| l["id"] == id),
            "{id} not in the audit file"
        );
    }
    let api = harness::http_json(http, "/api/commands").await.unwrap();
    assert!(
        api["recent"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == "r-sig" && e["status"] == "refused"),
        "{api}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_demand_read_overtakes_a_busy_lines_poll_queue() {
    use meterd::sim::{self, Pacing, Simulator};
    let broker = servers::mosquitto();
    let set = meterd::config::ProfileSet::builtin();
    // Ten meters on a 9600-baud line, each polled every 100 ms: the line is never idle and
    // the poll queue is always long.
    let sim = Simulator::paced(Pacing {
        baud: 9600,
        bits_per_char: 10,
        reply_delay: Duration::from_millis(10),
    });
    for unit in 1..=10 {
        sim.add_meter(unit, set.get("eastron-sdm120").cloned().unwrap(), true);
    }
    let (master, _keep, pty) = sim::pty_pair().expect("pty");
    tokio::spawn(sim.clone().serve_rtu(master));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("remote.key"), KEY).unwrap();
    let mut text = format!(
        "[gateway]\nid = \"gw-rc\"\nstate_dir = \"{}\"\n[[bus]]\nname = \"rtu\"\nprotocol = \"modbus-rtu\"\n\
         serial = {{ device = \"{pty}\", baud = 9600 }}\ntimeout = \"300ms\"\n",
        dir.path().join("state").display()
    );
    for unit in 1..=10 {
        text += &format!("[[bus.meter]]\nid = \"m{unit}\"\nunit = {unit}\nprofile = \"eastron-sdm120\"\ninterval = \"100ms\"\n");
    }
    text += &format!(
        "[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n[http]\nlisten = \"127.0.0.1:{}\"\n[remote]\ncommands = [\"read\", \"status\"]\nkey_file = \"remote.key\"\n",
        broker.port,
        servers::free_port()
    );
    let cfg = dir.path().join("meterd.toml");
    std::fs::write(&cfg, text).unwrap();
    let readings = Collector::start(broker.port, "meterd/gw-rc/meter/+/reading").await;
    let _meterd = Meterd::run(&cfg);
    readings
        .wait_for("the line busy", Duration::from_secs(15), |m| m.len() >= 10)
        .await;

    let before = sim.requests.load(std::sync::atomic::Ordering::Relaxed);
    let out = meterd_cmd(&cfg, &["read", "--meter", "m10", "--group", "realtime"]).await;
    let after = sim.requests.load(std::sync::atomic::Ordering::Relaxed);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(v["result"]["meter"], "m10");
    assert!(
        v["result"]["values"]["voltage_l1_v"].as_f64().unwrap() > 200.0,
        "{v}"
    );
    assert!(
        v["result"]["seq"].as_u64().is_some(),
        "journaled like any reading: {v}"
    );
    // Between the request and its reply the line served the read, the transaction already
    // on the wire and at most one scheduled poll taking its turn; queued behind all ten
    // meters it would have waited for every one of them.
    let served = after - before;
    assert!(
        served <= 8,
        "{served} transactions between the request and its reply"
    );
    // The reading it made is journaled and published like any other, marked as on demand.
    let seq = v["result"]["seq"].as_u64().unwrap();
    readings
        .wait_for(
            "the on-demand reading on MQTT",
            Duration::from_secs(10),
            |msgs| {
                msgs.iter().any(|m| {
                    m.topic.ends_with("/m10/reading")
                        && m.payload.contains(&format!("\"seq\":{seq},"))
                        && m.payload.ends_with(",\"on_demand\":true}")
                })
            },
        )
        .await;

    // Named points only; a name the meter does not have is reported.
    let out = meterd_cmd(
        &cfg,
        &[
            "read",
            "--meter",
            "m3",
            "--point",
            "voltage_l1_v",
            "--point",
            "volts",
        ],
    )
    .await;
    let v = reply_of(&out);
    let values = v["result"]["values"].as_object().unwrap();
    assert_eq!(values.keys().collect::<Vec<_>>(), ["voltage_l1_v"], "{v}");
    assert_eq!(
        v["result"]["errors"],
        serde_json::json!(["volts: not among the meter's quantities"])
    );
    // A group the profile lacks: failed, with the groups it has.
    let out = meterd_cmd(&cfg, &["read", "--meter", "m3", "--group", "fast"]).await;
    let v = reply_of(&out);
    assert_eq!(v["status"], "failed", "{v}");
    assert!(
        v["reason"].as_str().unwrap().contains("no group \"fast\""),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_sent_while_the_gateway_is_away_is_executed_once_when_it_is_back() {
    let broker = servers::mosquitto();
    let pub_bin = servers::binary("mosquitto_pub", "mosquitto-clients");
    let (_sim, addr) = harness::tcp_sim(&[(1, "eastron-sdm120")], true).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("remote.key"), KEY).unwrap();
    let cfg = harness::one_meter_config(
        dir.path(),
        "gw-rc",
        &dir.path().join("state"),
        &addr,
        "1s",
        &format!(
            "[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n[http]\nlisten = \"127.0.0.1:{}\"\n\
             [remote]\ncommands = [\"status\", \"read\"]\nkey_file = \"remote.key\"\n",
            broker.port,
            servers::free_port()
        ),
    );
    let replies = Collector::start(broker.port, "meterd/gw-rc/cmd/+/reply").await;
    let audit = Collector::start(broker.port, "meterd/gw-rc/audit").await;
    // A first run subscribes (the broker keeps the session), then the gateway goes away.
    let meterd = Meterd::run(&cfg);
    let readings = Collector::start(broker.port, "meterd/gw-rc/meter/m1/reading").await;
    readings
        .wait_for("a reading", Duration::from_secs(15), |m| !m.is_empty())
        .await;
    drop(meterd);
    let request = signed(
        "read",
        "r-away",
        "nonce-away-0000001",
        now(),
        serde_json::json!({"meter": "m1"}),
        KEY,
    );
    for _ in 0..2 {
        // Sent twice while away (a master retrying): one execution.
        publish(&pub_bin, broker.port, "read", &request);
    }
    let _meterd = Meterd::run(&cfg);
    replies
        .wait_for("both replies", Duration::from_secs(20), |m| m.len() >= 2)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let replies: Vec<serde_json::Value> = replies
        .all()
        .iter()
        .map(|m| serde_json::from_str(&m.payload).unwrap())
        .collect();
    assert_eq!(replies.len(), 2, "{replies:#?}");
    assert!(
        replies
            .iter()
            .all(|r| r["id"] == "r-away" && r["status"] == "ok"),
        "{replies:#?}"
    );
    assert_eq!(replies[0], replies[1], "the duplicate gets the first reply");
    // One read went to the meter: one seq.
    let seqs: std::collections::BTreeSet<u64> = replies
        .iter()
        .filter_map(|r| r["result"]["seq"].as_u64())
        .collect();
    assert_eq!(seqs.len(), 1, "{replies:#?}");
    audit
        .wait_for("two audit events", Duration::from_secs(5), |m| m.len() >= 2)
        .await;
}

/// A gateway with one DL/T 645-2007 meter (`d645`, 123456789012) and one DL/T 698.45 meter
/// (`d698`, 000000000321, its clock `drift698` s off) on ptys, `commands` enabled, running
/// until dropped, both meters already read once.
struct TwoProtocols {
    broker: servers::Server,
    dl: std::sync::Arc<meterd::sim::dlt645::Dlt645Sim>,
    p698: std::sync::Arc<meterd::sim::dlt698::Dlt698Sim>,
    a645: meterd::protocols::dlt645::Address,
    a698: meterd::protocols::dlt698::ServerAddress,
    cfg: std::path::PathBuf,
    readings: Collector,
    _dir: tempfile::TempDir,
    _ptys: Vec<std::fs::File>,
    _meterd: Meterd,
}

impl TwoProtocols {
    async fn start(commands: &[&str], drift698: i64) -> TwoProtocols {
        use meterd::{
            protocols::dlt645::Version,
            sim::{self, dlt645::Dlt645Sim, dlt698::Dlt698Sim},
        };
        let broker = servers::mosquitto();
        let set = meterd::config::ProfileSet::builtin();
        let dl = Dlt645Sim::new(Version::V2007, None);
        let a645 = "123456789012".parse().unwrap();
        dl.add_meter(
            a645,
            set.get("dlt645-2007-single-phase").cloned().unwrap(),
            true,
        );
        let (m1, k1, pty645) = sim::pty_pair().expect("pty");
        tokio::spawn(dl.clone().serve(m1));
        let p698 = Dlt698Sim::new(None);
        let a698 = meterd::protocols::dlt698::ServerAddress::single("000000000321").unwrap();
        p698.add_meter(
            a698.clone(),
            set.get("dlt698-single-phase").cloned().unwrap(),
            true,
        );
        p698.set_drift(&a698, drift698);
        let (m2, k2, pty698) = sim::pty_pair().expect("pty");
        tokio::spawn(p698.clone().serve(m2));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("remote.key"), KEY).unwrap();
        let cfg = dir.path().join("meterd.toml");
        let commands: Vec<String> = commands.iter().map(|c| format!("\"{c}\"")).collect();
        std::fs::write(
            &cfg,
            format!(
                "[gateway]\nid = \"gw-rc\"\nstate_dir = \"{}\"\n\
                 [[bus]]\nname = \"dl\"\nprotocol = \"dlt645-2007\"\nserial = {{ device = \"{pty645}\" }}\n\
                 [[bus.meter]]\nid = \"d645\"\naddress = \"123456789012\"\nprofile = \"dlt645-2007-single-phase\"\n\
                 [[bus]]\nname = \"p\"\nprotocol = \"dlt698\"\nserial = {{ device = \"{pty698}\" }}\n\
                 [[bus.meter]]\nid = \"d698\"\naddress = \"000000000321\"\nprofile = \"dlt698-single-phase\"\n\
                 [mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n[http]\nlisten = \"127.0.0.1:{}\"\n\
                 [remote]\ncommands = [{}]\nkey_file = \"remote.key\"\n",
                dir.path().join("state").display(),
                broker.port,
                servers::free_port(),
                commands.join(", ")
            ),
        )
        .unwrap();
        let readings = Collector::start(broker.port, "meterd/gw-rc/meter/+/reading").await;
        let meterd = Meterd::run(&cfg);
        readings
            .wait_for("readings of both meters", Duration::from_secs(20), |m| {
                ["d645", "d698"]
                    .iter()
                    .all(|id| m.iter().any(|r| r.topic.contains(id)))
            })
            .await;
        TwoProtocols {
            broker,
            dl,
            p698,
            a645,
            a698,
            cfg,
            readings,
            _dir: dir,
            _ptys: vec![k1, k2],
            _meterd: meterd,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timesync_sets_dlt645_and_dlt698_clocks_and_reports_each_offset_before_and_after() {
    let g = TwoProtocols::start(&["timesync", "read"], -75).await;
    let (dl, p698, a645, a698, cfg) = (&g.dl, &g.p698, g.a645, &g.a698, g.cfg.clone());
    let drift645 = dl.clock_drift(a645).unwrap();
    assert!(
        drift645.abs() >= 2,
        "the simulated DL/T 645 clock starts off: {drift645}"
    );
    let out = meterd_cmd(&cfg, &["timesync", "--all", "--timeout", "30s"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    let meters = v["result"]["meters"].as_array().unwrap();
    let by = |id: &str| meters.iter().find(|m| m["meter"] == id).unwrap().clone();
    for (id, drift) in [("d645", drift645 as f64), ("d698", -75.0)] {
        let m = by(id);
        let before = m["offset_before_s"].as_f64().unwrap();
        let after = m["offset_after_s"].as_f64().unwrap();
        assert!(
            (before - drift).abs() <= 2.0,
            "{id}: before {before} vs drift {drift}: {m}"
        );
        assert!(after.abs() <= 2.0, "{id}: after {after}: {m}");
    }
    assert!(dl.clock_drift(a645).unwrap().abs() <= 2);
    assert!(p698.clock_drift(a698).unwrap().abs() <= 2);

    // Identifiers by hand: a DL/T 645 DI and a DL/T 698.45 OAD, decoded and scaled.
    let read = |meter: &'static str, points: &'static [&'static str]| {
        let mut args = vec!["read", "--meter", meter];
        for p in points {
            args.extend(["--point", p]);
        }
        let cfg = cfg.clone();
        async move { reply_of(&meterd_cmd(&cfg, &args).await) }
    };
    let v = read("d645", &["02010100", "0201FF00"]).await;
    assert_eq!(v["status"], "ok", "{v}");
    let volts = &v["result"]["identifiers"]["02010100"][0];
    assert_eq!(volts["unit"], "V", "{v}");
    assert!(volts["value"].as_f64().unwrap() > 200.0, "{v}");
    let v = read("d698", &["20000201", "40010200"]).await;
    assert_eq!(v["status"], "ok", "{v}");
    let ids = &v["result"]["identifiers"];
    assert!(ids["20000201"]["value"].as_f64().unwrap() > 200.0, "{v}");
    assert_eq!(
        ids["20000201"]["quantities"]["voltage_l1_v"],
        ids["20000201"]["value"]
    );
    assert_eq!(ids["40010200"]["value"], "000000000321");
}

/// `YYYY-MM-DD` of a day number.
fn date(day: i64) -> String {
    humantime::format_rfc3339(std::time::UNIX_EPOCH + Duration::from_secs(day as u64 * 86_400))
        .to_string()[..10]
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recollect_reads_a_week_of_daily_freezes_back_from_dlt645_and_dlt698_meters() {
    let g = TwoProtocols::start(&["recollect"], 0).await;
    let cfg = g.cfg.clone();
    let readings = &g.readings;
    let replies = Collector::start(g.broker.port, "meterd/gw-rc/cmd/recollect/reply").await;
    // The meters keep China Standard Time: their "today" begins at 16:00 UTC.
    let today = (now() + 8 * 3600).div_euclid(86_400);
    let (from, to) = (date(today - 6), date(today));
    let out = meterd_cmd(
        &cfg,
        &[
            "recollect",
            "--all",
            "--from",
            &from,
            "--to",
            &to,
            "--timeout",
            "60s",
        ],
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(v["result"]["freezes"], 14, "{v}");
    for m in v["result"]["meters"].as_array().unwrap() {
        let times: Vec<&str> = m["freezes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["ts"].as_str().unwrap())
            .collect();
        assert_eq!(times.len(), 7, "{m}");
        assert!(
            times.windows(2).all(|w| w[0] < w[1]),
            "oldest first: {times:?}"
        );
        assert!(
            times.iter().all(|t| t.ends_with("T16:00:00.000Z")),
            "{times:?}"
        );
    }
    // Progress after each meter, then the final reply; the freezes reach MQTT like readings.
    let statuses: Vec<String> = replies
        .all()
        .iter()
        .map(|m| {
            serde_json::from_str::<serde_json::Value>(&m.payload).unwrap()["status"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(statuses, ["progress", "progress", "ok"]);
    readings
        .wait_for(
            "a week of freezes of each meter on MQTT",
            Duration::from_secs(10),
            |msgs| {
                ["d645", "d698"].iter().all(|id| {
                    let days: std::collections::BTreeSet<String> = msgs
                        .iter()
                        .filter(|m| m.topic.contains(id) && m.payload.contains("T16:00:00.000Z"))
                        .map(|m| m.payload[..40].to_string())
                        .collect();
                    days.len() >= 7
                })
            },
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_trips_and_closes_a_listed_meter_and_refuses_everything_else() {
    use meterd::{
        protocols::dlt645::Version,
        sim::{self, dlt645::Dlt645Sim},
    };
    let broker = servers::mosquitto();
    let pub_bin = servers::binary("mosquitto_pub", "mosquitto-clients");
    let set = meterd::config::ProfileSet::builtin();
    let dl = Dlt645Sim::new(Version::V2007, None);
    let profile = set.get("dlt645-2007-single-phase").cloned().unwrap();
    // r1: relay, our password; r2: relay, another password; plain: no relay, not listed.
    let (r1, r2, plain) = (
        "000000000001".parse().unwrap(),
        "000000000002".parse().unwrap(),
        "000000000003".parse().unwrap(),
    );
    for a in [r1, r2, plain] {
        dl.add_meter(a, profile.clone(), true);
    }
    dl.set_relay_password(r1, [0x02, 0x56, 0x34, 0x12]);
    dl.set_relay_password(r2, [0x02, 0x11, 0x11, 0x11]);
    let (master, _keep, pty) = sim::pty_pair().expect("pty");
    tokio::spawn(dl.clone().serve(master));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("remote.key"), KEY).unwrap();
    std::fs::write(
        dir.path().join("relay.key"),
        "the relay's own key, long enough",
    )
    .unwrap();
    std::fs::write(dir.path().join("relay.password"), "02123456\n").unwrap();
    let cfg = dir.path().join("meterd.toml");
    let mut text = format!(
        "[gateway]\nid = \"gw-rc\"\nstate_dir = \"{}\"\n\
         [[bus]]\nname = \"dl\"\nprotocol = \"dlt645-2007\"\nserial = {{ device = \"{pty}\" }}\n",
        dir.path().join("state").display()
    );
    for (id, addr) in [
        ("r1", "000000000001"),
        ("r2", "000000000002"),
        ("plain", "000000000003"),
    ] {
        text += &format!("[[bus.meter]]\nid = \"{id}\"\naddress = \"{addr}\"\nprofile = \"dlt645-2007-single-phase\"\n");
    }
    text += &format!(
        "[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n[http]\nlisten = \"127.0.0.1:{}\"\n\
         [remote]\ncommands = [\"relay\"]\nkey_file = \"remote.key\"\nrelay_key_file = \"relay.key\"\n\
         relay_meters = [\"r1\", \"r2\"]\nrelay_password_file = \"relay.password\"\nrelay_operator = \"00000001\"\n",
        broker.port,
        servers::free_port()
    );
    std::fs::write(&cfg, text).unwrap();
    let readings = Collector::start(broker.port, "meterd/gw-rc/meter/+/reading").await;
    let audit = Collector::start(broker.port, "meterd/gw-rc/audit").await;
    let alerts = Collector::start(broker.port, "meterd/gw-rc/alert").await;
    let _meterd = Meterd::run(&cfg);
    readings
        .wait_for("a reading", Duration::from_secs(20), |m| !m.is_empty())
        .await;
    let relay = |meter: &'static str, action: &'static str| {
        let cfg = cfg.clone();
        async move {
            let out = meterd_cmd(&cfg, &["relay", "--meter", meter, "--action", action]).await;
            (out.status.code(), reply_of(&out))
        }
    };
    let (code, v) = relay("r1", "trip").await;
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["result"]["relay"]["open"], true, "read back: {v}");
    assert_eq!(dl.relay_open(r1), Some(true));
    let (code, v) = relay("r1", "close-permit").await;
    assert_eq!(
        (code, &v["result"]["relay"]["open"]),
        (Some(0), &serde_json::json!(false)),
        "{v}"
    );
    assert_eq!(dl.relay_open(r1), Some(false));

    // Refused: a meter not listed; failed: the meter refuses our password.
    let (code, v) = relay("plain", "trip").await;
    assert_eq!(code, Some(1));
    assert_eq!(v["status"], "refused");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("not listed as relay-capable"),
        "{v}"
    );
    let (code, v) = relay("r2", "trip").await;
    assert_eq!(code, Some(1));
    assert_eq!(v["status"], "failed", "{v}");
    assert!(
        v["reason"].as_str().unwrap().contains("password error"),
        "{v}"
    );
    assert_eq!(dl.relay_open(r2), Some(false), "nothing done");

    // A relay command signed with the commands' key is refused: relay has a key of its own.
    let forged = signed(
        "relay",
        "r-forged",
        "nonce-relay-000001",
        now(),
        serde_json::json!({"meter": "r1", "action": "trip"}),
        KEY,
    );
    publish(&pub_bin, broker.port, "relay", &forged);
    audit
        .wait_for(
            "the forged relay's audit event",
            Duration::from_secs(10),
            |m| {
                m.iter()
                    .any(|a| a.payload.contains("r-forged") && a.payload.contains("bad signature"))
            },
        )
        .await;
    assert_eq!(dl.relay_open(r1), Some(false), "nothing done");
    // A refused relay command reaches the on-call engineer.
    alerts
        .wait_for("RelayCommandRefused firing", Duration::from_secs(10), |m| {
            m.iter().any(|a| {
                a.payload.contains("RelayCommandRefused") && a.payload.contains("\"firing\"")
            })
        })
        .await;
}
