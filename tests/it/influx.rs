//! The InfluxDB sink against a real InfluxDB 1.x: retries on 500/429, skips what it rejects.

use std::{
    sync::{
        atomic::{AtomicU16, AtomicU32, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    harness::{eventually, one_meter_config_with, readings_at_stop, tcp_sim, Meterd},
    servers,
};

/// An HTTP proxy in front of a real server that answers with `mode`'s status instead while
/// `mode` is not 0, or with [`STALL`] takes a request's head and then neither reads its body
/// nor answers until `mode` changes. Counts what it answered (a stalled request as failed).
struct FaultProxy {
    port: u16,
    mode: Arc<AtomicU16>,
    failed: Arc<AtomicU32>,
    passed: Arc<AtomicU32>,
    /// The largest body passed on.
    largest: Arc<AtomicUsize>,
    /// The most pieces a body came in (sent with `Transfer-Encoding: chunked`).
    pieces: Arc<AtomicUsize>,
}

/// `mode` for a server that stops reading after a request's headers.
const STALL: u16 = 1;

async fn fault_proxy(upstream: String) -> FaultProxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mode = Arc::new(AtomicU16::new(0));
    let (failed, passed) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let (largest, pieces) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (m, f, p, l, pc) = (
        mode.clone(),
        failed.clone(),
        passed.clone(),
        largest.clone(),
        pieces.clone(),
    );
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        while let Ok((mut sock, _)) = listener.accept().await {
            let (m, f, p, l, pc, http, upstream) = (
                m.clone(),
                f.clone(),
                p.clone(),
                l.clone(),
                pc.clone(),
                http.clone(),
                upstream.clone(),
            );
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    // One request: head, then Content-Length bytes of body.
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    if m.load(Ordering::SeqCst) == STALL {
                        f.fetch_add(1, Ordering::SeqCst);
                        while m.load(Ordering::SeqCst) == STALL {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        return;
                    }
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let header = |name: &str| {
                        head.lines().find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix(&format!("{name}:"))
                                .map(|v| v.trim().to_string())
                        })
                    };
                    let body = if header("transfer-encoding").is_some_and(|v| v == "chunked") {
                        // Pieces: a hex size line, the bytes, CRLF; a size of 0 ends it.
                        let (mut body, mut at, mut pieces) = (Vec::new(), head_end, 0);
                        loop {
                            let line_end = loop {
                                if let Some(i) = buf[at..].windows(2).position(|w| w == b"\r\n") {
                                    break at + i;
                                }
                                match sock.read(&mut chunk).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                                }
                            };
                            let size = usize::from_str_radix(
                                String::from_utf8_lossy(&buf[at..line_end]).trim(),
                                16,
                            )
                            .unwrap_or(0);
                            while buf.len() < line_end + 2 + size + 2 {
                                match sock.read(&mut chunk).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                                }
                            }
                            body.extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
                            at = line_end + 2 + size + 2;
                            if size == 0 {
                                break;
                            }
                            pieces += 1;
                        }
                        pc.fetch_max(pieces, Ordering::SeqCst);
                        buf.drain(..at);
                        body
                    } else {
                        let len: usize = header("content-length")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        while buf.len() < head_end + len {
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let body = buf[head_end..head_end + len].to_vec();
                        buf.drain(..head_end + len);
                        body
                    };
                    let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let status = m.load(Ordering::SeqCst);
                    let (code, text) = if status != 0 {
                        f.fetch_add(1, Ordering::SeqCst);
                        (status, "{\"error\":\"injected\"}".to_string())
                    } else {
                        p.fetch_add(1, Ordering::SeqCst);
                        l.fetch_max(body.len(), Ordering::SeqCst);
                        match http
                            .post(format!("{upstream}{target}"))
                            .body(body)
                            .send()
                            .await
                        {
                            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                            Err(_) => (502, String::new()),
                        }
                    };
                    let resp = format!(
                        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
                        text.len()
                    );
                    if sock.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    FaultProxy {
        port,
        mode,
        failed,
        passed,
        largest,
        pieces,
    }
}

fn config(
    dir: &std::path::Path,
    gateway: &str,
    sim: &str,
    influx_url: &str,
    intervals: &str,
) -> std::path::PathBuf {
    one_meter_config_with(
        dir,
        gateway,
        &dir.join("state"),
        sim,
        &format!("intervals = {intervals}"),
        &format!("[influxdb]\nurl = \"{influx_url}\"\napi = \"v1\"\ndatabase = \"meters\"\nbatch_interval = \"100ms\"\n"),
    )
}

/// Stop meterd cleanly: the readings it made, by its stop line, and its log.
fn stop(meterd: &mut Meterd) -> (u64, String) {
    assert!(meterd
        .terminate(Duration::from_secs(8))
        .is_some_and(|s| s.success()));
    let log = meterd.log_text();
    let total = readings_at_stop(&log).expect("stop line with the reading count");
    (total, log)
}

async fn count(influx: &servers::Server, field: &str, gateway: &str) -> u64 {
    let a = servers::influxql(
        influx,
        "meters",
        &format!("SELECT count({field}) FROM meter WHERE gateway = '{gateway}'"),
    )
    .await;
    a["results"][0]["series"][0]["values"][0][1]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_500_and_429_are_retried_with_backoff_and_no_reading_is_lost() {
    let influx = servers::influxdb1();
    servers::influxql(&influx, "", "CREATE DATABASE meters").await;
    let proxy = fault_proxy(influx.url()).await;
    let (_sim, addr) = tcp_sim(&[(1, "eastron-sdm120")], true).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "gw-retry",
        &addr,
        &format!("http://127.0.0.1:{}", proxy.port),
        "{ realtime = \"200ms\", energy = \"1h\" }",
    );
    proxy.mode.store(500, Ordering::SeqCst);
    let mut meterd = Meterd::run(&cfg);
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.mode.store(429, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let failed = proxy.failed.load(Ordering::SeqCst);
    assert!(failed >= 3, "the sink kept trying: {failed} failed writes");
    assert!(
        failed <= 12,
        "with back-off, not hammering: {failed} writes in 6 s"
    );
    assert_eq!(count(&influx, "voltage_l1_v", "gw-retry").await, 0);
    proxy.mode.store(0, Ordering::SeqCst);
    eventually(
        "the backlog in InfluxDB",
        Duration::from_secs(40),
        || async { (count(&influx, "voltage_l1_v", "gw-retry").await >= 25).then_some(()) },
    )
    .await;
    let (total, log) = stop(&mut meterd);
    // SDM120: one energy reading (interval 1 h), the rest realtime.
    assert_eq!(count(&influx, "energy_import_kwh", "gw-retry").await, 1);
    assert_eq!(
        count(&influx, "voltage_l1_v", "gw-retry").await,
        total - 1,
        "every reading arrived:\n{log}"
    );
    assert!(proxy.passed.load(Ordering::SeqCst) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_influxdb_rejects_are_logged_and_skipped_and_the_rest_keeps_flowing() {
    let influx = servers::influxdb1();
    servers::influxql(&influx, "", "CREATE DATABASE meters").await;
    // power_w as a string: from now on this shard refuses float power_w (a field type conflict).
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let r = reqwest::Client::new()
        .post(format!("{}/write?db=meters&precision=ms", influx.url()))
        .body(format!(
            "meter,gateway=gw-bad,bus=b,meter=m0,profile=x power_w=\"broken\" {now_ms}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let (_sim, addr) = tcp_sim(&[(1, "eastron-sdm120")], true).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "gw-bad",
        &addr,
        &influx.url(),
        "{ realtime = \"300ms\", energy = \"300ms\" }",
    );
    let meterd = Meterd::run(&cfg);
    // Energy lines carry no power_w: they keep arriving after realtime lines were refused.
    eventually(
        "energy lines after rejected batches",
        Duration::from_secs(20),
        || async { (count(&influx, "energy_import_kwh", "gw-bad").await >= 5).then_some(()) },
    )
    .await;
    assert_eq!(count(&influx, "voltage_l1_v", "gw-bad").await, 0);
    let log = meterd.log_text();
    assert!(
        log.contains("InfluxDB rejected points") && log.contains("field type conflict"),
        "{log}"
    );
}

/// The line protocol meterd writes prints very large and very small values with an exponent
/// (`1.5e+300`, `1e-7`, the shortest decimal that reads back as the value): both databases
/// read them back as the same numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb_1x_and_victoria_metrics_read_values_in_exponent_notation_exactly() {
    let cases = [
        ("huge", 1.5e300),
        ("tiny", 1e-7),
        ("negative_tiny", -2.5e-12),
        ("big", 2.5e16),
        ("plain", 231.7),
    ];
    let reading = meterd::reading::Reading {
        meter: "m-exp".into(),
        bus: "b".into(),
        profile: "p".into(),
        ts: std::time::SystemTime::now(),
        seq: 1,
        values: cases.iter().map(|(q, v)| (Arc::from(*q), *v)).collect(),
        on_demand: false,
    };
    let mut line = String::new();
    reading.write_line("gw-exp", &mut line);
    assert!(
        line.contains("huge=1.5e+300") && line.contains("tiny=1e-7"),
        "{line}"
    );
    let http = reqwest::Client::new();

    let influx = servers::influxdb1();
    servers::influxql(&influx, "", "CREATE DATABASE exp").await;
    let r = http
        .post(format!("{}/write?db=exp&precision=ms", influx.url()))
        .body(line.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204, "{}", r.text().await.unwrap());
    let fields = cases.map(|(q, _)| q).join(", ");
    let a = servers::influxql(&influx, "exp", &format!("SELECT {fields} FROM meter")).await;
    let row = &a["results"][0]["series"][0]["values"][0];
    for (i, (q, v)) in cases.iter().enumerate() {
        assert_eq!(row[i + 1].as_f64(), Some(*v), "InfluxDB 1.x, {q}: {a}");
    }

    let vm = servers::victoria_metrics();
    let r = http
        .post(format!(
            "{}/api/v2/write?org=o&bucket=b&precision=ms",
            vm.url()
        ))
        .body(line)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    for (q, v) in cases {
        let selector = format!("{{__name__=\"meter_{q}\"}}");
        let values = eventually(
            "the value in VictoriaMetrics",
            Duration::from_secs(10),
            || async {
                let series = servers::vm_export(&vm, &selector).await?;
                Some(series.first()?["values"].clone())
            },
        )
        .await;
        assert_eq!(values[0].as_f64(), Some(v), "VictoriaMetrics, {q}");
    }
}

/// After an outage the backlog goes in large writes, each sent in pieces as it is written (so
/// a write never holds its whole body in memory); nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_goes_in_bodies_sent_in_pieces_and_no_reading_is_lost() {
    use meterd::sinks::influx::PIECE;
    let influx = servers::influxdb1();
    servers::influxql(&influx, "", "CREATE DATABASE meters").await;
    let proxy = fault_proxy(influx.url()).await;
    let meters: Vec<(u8, &str)> = (1..=40).map(|u| (u, "eastron-sdm630")).collect();
    let (_sim, addr) = tcp_sim(&meters, true).await;
    let dir = tempfile::tempdir().unwrap();
    let http = servers::free_port();
    let mut cfg = format!(
        "[gateway]\nid = \"gw-big\"\nstate_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n\
         [influxdb]\nurl = \"http://127.0.0.1:{}\"\napi = \"v1\"\ndatabase = \"meters\"\nbatch_interval = \"100ms\"\n\
         [[bus]]\nname = \"b\"\nprotocol = \"modbus-tcp\"\ntcp = \"{addr}\"\nconcurrency = 8\n",
        dir.path().join("state").display(),
        proxy.port
    );
    cfg += &crate::harness::meter_tables(&meters, "interval = \"100ms\"");
    let path = dir.path().join("meterd.toml");
    std::fs::write(&path, cfg).unwrap();
    proxy.mode.store(503, Ordering::SeqCst);
    let mut meterd = Meterd::run(&path);
    // A backlog of several full writes (5,000 readings each by default).
    let depth = |metrics: &str| -> Option<u64> {
        metrics.lines().find_map(|l| {
            l.strip_prefix("meterd_sink_depth{sink=\"influxdb\"} ")?
                .parse()
                .ok()
        })
    };
    eventually(
        "a backlog of several writes",
        Duration::from_secs(60),
        || async {
            let (_, m) = crate::harness::http_get(http, "/metrics").await?;
            (depth(&m)? >= 12_000).then_some(())
        },
    )
    .await;
    proxy.mode.store(0, Ordering::SeqCst);
    eventually("the backlog delivered", Duration::from_secs(60), || async {
        let (_, m) = crate::harness::http_get(http, "/metrics").await?;
        (depth(&m)? < 500).then_some(())
    })
    .await;
    let (total, log) = stop(&mut meterd);
    // Every SDM630 reading has one of these: the realtime group's voltage, the energy group's
    // import.
    let arrived = count(&influx, "voltage_l1_v", "gw-big").await
        + count(&influx, "energy_import_kwh", "gw-big").await;
    assert_eq!(arrived, total, "every reading arrived:\n{log}");
    let (largest, pieces) = (
        proxy.largest.load(Ordering::SeqCst),
        proxy.pieces.load(Ordering::SeqCst),
    );
    assert!(
        largest > 4 * PIECE,
        "the backlog went in large writes: the largest was {largest} bytes"
    );
    assert!(
        pieces >= largest / (PIECE + 16 * 1024),
        "a body of {largest} bytes came in {pieces} pieces"
    );
    assert!(proxy.passed.load(Ordering::SeqCst) >= 3);
}

/// A stuck InfluxDB: it takes a write's headers and then reads nothing more and never answers.
/// `influxdb.timeout` ends each attempt, the batch goes again, and once the server reads again
/// every reading is there exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_stalled_after_its_headers_times_out_and_goes_again_and_no_reading_is_lost() {
    let influx = servers::influxdb1();
    servers::influxql(&influx, "", "CREATE DATABASE meters").await;
    let proxy = fault_proxy(influx.url()).await;
    let meters: Vec<(u8, &str)> = (1..=10).map(|u| (u, "eastron-sdm630")).collect();
    let (_sim, addr) = tcp_sim(&meters, true).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = format!(
        "[gateway]\nid = \"gw-stall\"\nstate_dir = \"{}\"\n\
         [influxdb]\nurl = \"http://127.0.0.1:{}\"\napi = \"v1\"\ndatabase = \"meters\"\nbatch_interval = \"100ms\"\ntimeout = \"1s\"\n\
         [[bus]]\nname = \"b\"\nprotocol = \"modbus-tcp\"\ntcp = \"{addr}\"\nconcurrency = 4\n",
        dir.path().join("state").display(),
        proxy.port
    );
    cfg += &crate::harness::meter_tables(&meters, "interval = \"200ms\"");
    let path = dir.path().join("meterd.toml");
    std::fs::write(&path, cfg).unwrap();
    proxy.mode.store(STALL, Ordering::SeqCst);
    let mut meterd = Meterd::run(&path);
    // The status points' write and the readings' first write stall and time out; the
    // readings' second write is held too.
    eventually(
        "a write of readings again after one timed out",
        Duration::from_secs(30),
        || async { (proxy.failed.load(Ordering::SeqCst) >= 3).then_some(()) },
    )
    .await;
    assert_eq!(
        count(&influx, "voltage_l1_v", "gw-stall").await,
        0,
        "nothing passed the stalled server"
    );
    proxy.mode.store(0, Ordering::SeqCst);
    eventually("readings in InfluxDB", Duration::from_secs(30), || async {
        (count(&influx, "voltage_l1_v", "gw-stall").await > 0).then_some(())
    })
    .await;
    let (total, log) = stop(&mut meterd);
    let arrived = count(&influx, "voltage_l1_v", "gw-stall").await
        + count(&influx, "energy_import_kwh", "gw-stall").await;
    assert_eq!(arrived, total, "every reading arrived once:\n{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("InfluxDB write failed") && l.contains("timed out")),
        "the log says a write of readings timed out:\n{log}"
    );
}
