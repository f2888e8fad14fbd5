//! HTTP endpoints (default 127.0.0.1:9645): a status page at `/`, `/metrics` in Prometheus text
//! format, `/healthz`, `/api/meters` (JSON: each meter's state and last values),
//! `/api/alerts` (JSON: alerts pending and firing) and `/api/sinks` (JSON: each sink and
//! notifier, failing or not and why).
//!
//! The Prometheus text is written by hand: a handful of gauges and counters read from the live
//! state on each scrape, where a metrics registry crate would duplicate that state.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    sync::{atomic::Ordering, Arc, Mutex},
    time::Duration,
};

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::{
    journal::Journal,
    state::{LiveState, SinkList},
};

#[derive(Clone)]
pub struct HttpState {
    pub live: Arc<LiveState>,
    pub journal: Arc<Journal>,
    /// The running sinks, their journal cursors and counters.
    pub sinks: SinkList,
    /// Alert outboxes: events waiting for their receiver.
    pub outboxes: crate::state::OutboxList,
    /// The last hour, for the status page's trends (sampled while the server runs).
    pub history: Arc<Mutex<crate::history::History>>,
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// What `/metrics` prints of one meter, copied under the live state's lock: about 250 bytes a
/// meter, where the text is about 1.7 KB (the latency histogram alone is 14 lines).
struct MeterMetrics {
    /// `bus="…",meter="…"`, escaped.
    labels: String,
    online: Option<bool>,
    refusing: bool,
    polls: u64,
    failures: [(&'static str, u64); 3],
    latency: crate::state::Histogram,
}

impl MeterMetrics {
    fn of(id: &str, m: &crate::state::MeterState) -> MeterMetrics {
        MeterMetrics {
            labels: format!("bus=\"{}\",meter=\"{}\"", label(&m.bus), label(id)),
            online: m.online,
            refusing: m.refusing,
            polls: m.polls,
            failures: [
                ("timeout", m.timeouts),
                ("link", m.link_errors),
                ("refused", m.exceptions),
            ],
            latency: m.latency.clone(),
        }
    }
}

/// A metric family with a line or more per meter: its HELP and TYPE, and its lines of a meter.
type MeterFamily = (&'static str, fn(&mut String, &MeterMetrics));

const METER_FAMILIES: [MeterFamily; 5] = [
    (
        "# HELP meterd_meter_up Whether the meter answers (1) or is offline (0).\n# TYPE meterd_meter_up gauge\n",
        |out, m| {
            if let Some(up) = m.online {
                let _ = writeln!(out, "meterd_meter_up{{{}}} {}", m.labels, u8::from(up));
            }
        },
    ),
    (
        "# HELP meterd_meter_refusing Whether the meter answers but refused every request of its last poll (1): alive, yet no values.\n# TYPE meterd_meter_refusing gauge\n",
        |out, m| {
            let _ = writeln!(out, "meterd_meter_refusing{{{}}} {}", m.labels, u8::from(m.refusing));
        },
    ),
    (
        "# HELP meterd_meter_polls_total Polls of a meter's point groups.\n# TYPE meterd_meter_polls_total counter\n",
        |out, m| {
            let _ = writeln!(out, "meterd_meter_polls_total{{{}}} {}", m.labels, m.polls);
        },
    ),
    (
        "# HELP meterd_meter_failures_total Failed requests by kind: timeout, link (garbled, broken), refused (exception or abnormal reply).\n# TYPE meterd_meter_failures_total counter\n",
        |out, m| {
            for (kind, n) in m.failures {
                let _ = writeln!(
                    out,
                    "meterd_meter_failures_total{{{},kind=\"{kind}\"}} {n}",
                    m.labels
                );
            }
        },
    ),
    (
        "# HELP meterd_poll_duration_seconds How long a poll of a point group held the bus, retries included.\n# TYPE meterd_poll_duration_seconds histogram\n",
        |out, m| histogram(out, "meterd_poll_duration_seconds", &m.labels, &m.latency),
    ),
];

/// Meters per piece of the `/metrics` body.
const METERS_PER_PIECE: usize = 64;

/// The per-meter families of `/metrics`, in pieces of [`METERS_PER_PIECE`] meters, each
/// written only when the body is sent that far. Written whole, the text took 1.7 KB per
/// meter at once (3.4 MB at 2,000 meters, more while the string doubled), on every scrape.
fn meter_metrics(meters: Vec<MeterMetrics>) -> impl Iterator<Item = String> {
    // Shared by the families' pieces as it is: `Arc<[_]>` from the `Vec` would copy it.
    let meters = Arc::new(meters);
    METER_FAMILIES.into_iter().flat_map(move |(head, line)| {
        let meters = meters.clone();
        let pieces = meters.len().div_ceil(METERS_PER_PIECE).max(1);
        (0..pieces).map(move |piece| {
            let slice = meters
                .chunks(METERS_PER_PIECE)
                .nth(piece)
                .unwrap_or_default();
            let mut out =
                String::with_capacity(if piece == 0 { head.len() } else { 0 } + 128 * slice.len());
            if piece == 0 {
                out.push_str(head);
            }
            for m in slice {
                line(&mut out, m);
            }
            out
        })
    })
}

/// Prometheus text: the per-meter families a piece at a time (see [`meter_metrics`]), then
/// the rest (buses, sinks, alerts, the journal), written when the body gets there.
async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    let meters = s.live.each_meter(MeterMetrics::of);
    let pieces = meter_metrics(meters).chain(std::iter::once_with(move || other_metrics(&s)));
    (
        [("content-type", "text/plain; version=0.0.4")],
        axum::body::Body::from_stream(crate::body::PieceByPiece::new(pieces)),
    )
}

/// Everything in `/metrics` but the per-meter families.
fn other_metrics(s: &HttpState) -> String {
    let mut out = String::new();
    out.push_str("# HELP meterd_commands_total Remote commands from the master station, by command and how they ended.\n# TYPE meterd_commands_total counter\n");
    for ((command, status), n) in s.live.commands() {
        let _ = writeln!(
            out,
            "meterd_commands_total{{command=\"{command}\",status=\"{status}\"}} {n}"
        );
    }
    let buses = s.live.buses();
    out.push_str("# HELP meterd_bus_utilisation Share of the last 10 s the bus was busy with requests (0 to 1).\n# TYPE meterd_bus_utilisation gauge\n");
    for (name, b) in &buses {
        let _ = writeln!(
            out,
            "meterd_bus_utilisation{{bus=\"{}\"}} {:.4}",
            label(name),
            b.utilisation
        );
    }
    out.push_str("# HELP meterd_bus_busy_seconds_total Time the bus was busy with requests (per link).\n# TYPE meterd_bus_busy_seconds_total counter\n");
    for (name, b) in &buses {
        let _ = writeln!(
            out,
            "meterd_bus_busy_seconds_total{{bus=\"{}\"}} {:.3}",
            label(name),
            b.busy_seconds
        );
    }
    let sinks = s.sinks.read().unwrap_or_else(|e| e.into_inner()).clone();
    let now = std::time::SystemTime::now();
    type SinkMetric = (
        &'static str,
        &'static str,
        &'static str,
        fn(&HttpState, &crate::state::SinkInfo, std::time::SystemTime) -> String,
    );
    let per_sink: [SinkMetric; 8] = [
        (
            "meterd_sink_depth",
            "gauge",
            "Readings in the journal not yet confirmed by the sink.",
            |s, k, _| s.journal.depth(k.cursor).to_string(),
        ),
        (
            "meterd_sink_oldest_undelivered_age_seconds",
            "gauge",
            "Age (by sampling time) of the oldest reading the sink has not delivered; 0 when none.",
            |s, k, now| {
                let age = s
                    .journal
                    .oldest_undelivered(k.cursor)
                    .and_then(|ts| now.duration_since(ts).ok());
                format!("{:.3}", age.map_or(0.0, |a| a.as_secs_f64()))
            },
        ),
        (
            "meterd_sink_delivered_total",
            "counter",
            "Readings the sink's far end confirmed.",
            |_, k, _| k.stats.delivered.load(Ordering::Relaxed).to_string(),
        ),
        (
            "meterd_sink_retries_total",
            "counter",
            "Failed delivery attempts (writes, connections) that are retried.",
            |_, k, _| k.stats.retries.load(Ordering::Relaxed).to_string(),
        ),
        (
            "meterd_sink_rejected_total",
            "counter",
            "Readings (InfluxDB: batches) refused for good by the far end and skipped.",
            |_, k, _| k.stats.rejected.load(Ordering::Relaxed).to_string(),
        ),
        (
            "meterd_sink_left_out_values_total",
            "counter",
            "Report by exception: values not sent because they had not moved past their deadband and no heartbeat was due.",
            |_, k, _| k.stats.values_left_out.load(Ordering::Relaxed).to_string(),
        ),
        (
            "meterd_sink_left_out_readings_total",
            "counter",
            "Report by exception: readings of which no value was sent (the cursor passes them; the journal keeps them).",
            |_, k, _| k.stats.readings_left_out.load(Ordering::Relaxed).to_string(),
        ),
        (
            "meterd_sink_dropped_total",
            "counter",
            "Readings dropped undelivered: the journal reached journal.max_size, or the disk could not be written and journal.memory was full.",
            |s, k, _| s.journal.dropped(k.cursor).to_string(),
        ),
    ];
    for (name, kind, help, value) in per_sink {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for k in &sinks {
            let _ = writeln!(
                out,
                "{name}{{sink=\"{}\"}} {}",
                label(&k.name),
                value(s, k, now)
            );
        }
    }
    out.push_str("# HELP meterd_sink_delivery_lag_seconds From a reading's sampling time to its confirmation by the sink's far end (PUBACK, HTTP 2xx).\n# TYPE meterd_sink_delivery_lag_seconds histogram\n");
    for k in &sinks {
        let lag = k
            .stats
            .lag
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let labels = format!("sink=\"{}\"", label(&k.name));
        histogram(&mut out, "meterd_sink_delivery_lag_seconds", &labels, &lag);
    }
    let alerts = s.live.alerts();
    out.push_str("# HELP meterd_alert An active alert (1), labelled as notifiers see it, with its state (pending or firing).\n# TYPE meterd_alert gauge\n");
    for a in &alerts {
        let mut labels: Vec<String> = a
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
            .collect();
        labels.push(format!("alertstate=\"{}\"", a.state.as_str()));
        let _ = writeln!(out, "meterd_alert{{{}}} 1", labels.join(","));
    }
    let firing = alerts
        .iter()
        .filter(|a| a.state == crate::alerts::rules::State::Firing)
        .count();
    out.push_str("# HELP meterd_alert_outbox_pending Alert events waiting for their receiver (a notifier, the MQTT or InfluxDB sink).\n# TYPE meterd_alert_outbox_pending gauge\n");
    for (name, o) in s.outboxes.read().unwrap_or_else(|e| e.into_inner()).iter() {
        let _ = writeln!(
            out,
            "meterd_alert_outbox_pending{{outbox=\"{}\"}} {}",
            label(name),
            o.len()
        );
    }
    let _ = writeln!(
        out,
        "# HELP meterd_alerts_firing Alerts firing now.\n# TYPE meterd_alerts_firing gauge\nmeterd_alerts_firing {firing}"
    );
    let _ = writeln!(
        out,
        "# HELP meterd_journal_ok Whether the journal can be written.\n# TYPE meterd_journal_ok gauge\nmeterd_journal_ok {}",
        u8::from(s.journal.failure().is_none())
    );
    let _ = writeln!(
        out,
        "# HELP meterd_journal_unjournaled_total Readings appended while the journal could not be written (held in memory, written when it can be again).\n# TYPE meterd_journal_unjournaled_total counter\nmeterd_journal_unjournaled_total {}",
        s.journal.unjournaled()
    );
    out.push_str("# HELP meterd_task_restarts_total Times a long-lived task ended unexpectedly and was started again.\n# TYPE meterd_task_restarts_total counter\n");
    for (task, n) in s.live.tasks.restarts() {
        let _ = writeln!(
            out,
            "meterd_task_restarts_total{{task=\"{}\"}} {n}",
            label(&task)
        );
    }
    let _ = writeln!(
        out,
        "# HELP meterd_journal_memory_bytes Readings held in memory (bounded by journal.memory).\n# TYPE meterd_journal_memory_bytes gauge\nmeterd_journal_memory_bytes {}",
        s.journal.memory_bytes()
    );
    out
}

/// The status page: every meter, online or not, last values and errors, refreshed live from
/// `/api/meters`. Embedded in the binary.
async fn status_page() -> impl IntoResponse {
    (
        [("content-type", "text/html; charset=utf-8")],
        include_str!("status.html"),
    )
}

async fn healthz(State(s): State<HttpState>) -> impl IntoResponse {
    if let Some(why) = s.journal.failure() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("journal cannot be written: {why}\n"),
        );
    }
    let known: Vec<bool> = s
        .live
        .each_meter(|_, m| m.online)
        .into_iter()
        .flatten()
        .collect();
    if !known.is_empty() && known.iter().all(|up| !up) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "every bus is down: no meter answers\n".to_string(),
        );
    }
    (StatusCode::OK, "ok\n".to_string())
}

async fn api_meters(State(s): State<HttpState>) -> impl IntoResponse {
    // Each meter's JSON written under the lock, the body sent a meter at a time: no tree of
    // values, no copy of the whole document.
    let mut first = true;
    let meters = s.live.each_meter(|id, m| {
        let mut piece = Vec::with_capacity(1024);
        if !std::mem::take(&mut first) {
            piece.push(b',');
        }
        let at = piece.len();
        if serde_json::to_writer(&mut piece, &crate::contract::MeterJson::of(id, m)).is_err() {
            piece.truncate(at);
            piece.extend_from_slice(b"null");
        }
        axum::body::Bytes::from(piece)
    });
    let pieces = std::iter::once(axum::body::Bytes::from_static(b"{\"meters\":["))
        .chain(meters)
        .chain(std::iter::once(axum::body::Bytes::from_static(b"]}")))
        .map(Ok::<_, std::convert::Infallible>);
    (
        [("content-type", "application/json")],
        axum::body::Body::from_stream(futures::stream::iter(pieces)),
    )
}

/// Remote commands: the latest audit events (newest last) and the counts by command and status.
async fn api_commands(State(s): State<HttpState>) -> impl IntoResponse {
    let counts: Vec<serde_json::Value> = s
        .live
        .commands()
        .into_iter()
        .map(|((command, status), n)| serde_json::json!({"command": command, "status": status, "count": n}))
        .collect();
    Json(serde_json::json!({ "recent": s.live.audit(), "counts": counts }))
}

async fn api_alerts(State(s): State<HttpState>) -> impl IntoResponse {
    let alerts: Vec<serde_json::Value> = s
        .live
        .alerts()
        .iter()
        .map(crate::contract::event_json)
        .collect();
    Json(serde_json::json!({ "alerts": alerts }))
}

/// Each sink and alert notifier: failing or not, why (the broker's or server's own words,
/// URLs reduced to scheme, host and port), and what waits for it.
async fn api_sinks(State(s): State<HttpState>) -> impl IntoResponse {
    let since = |t: Option<std::time::SystemTime>| {
        t.map(|t| humantime::format_rfc3339_seconds(t).to_string())
    };
    let sinks = s.sinks.read().unwrap_or_else(|e| e.into_inner()).clone();
    let mut out: Vec<serde_json::Value> = sinks
        .iter()
        .map(|k| {
            serde_json::json!({
                "name": k.name,
                "kind": "sink",
                "failing_since": since(k.stats.failing.since()),
                "error": k.stats.failing.reason(),
                "waiting": s.journal.depth(k.cursor),
                "delivered": k.stats.delivered.load(Ordering::Relaxed),
                "dropped": s.journal.dropped(k.cursor),
            })
        })
        .collect();
    for (name, o) in s.outboxes.read().unwrap_or_else(|e| e.into_inner()).iter() {
        // The MQTT and InfluxDB sinks deliver their own alert outboxes: listed above.
        if sinks.iter().any(|k| &k.name == name) {
            continue;
        }
        out.push(serde_json::json!({
            "name": name,
            "kind": "notifier",
            "failing_since": since(o.failing.since()),
            "error": o.failing.reason(),
            "waiting": o.len(),
        }));
    }
    Json(serde_json::json!({ "sinks": out }))
}

#[derive(serde::Deserialize)]
struct HistoryQuery {
    meter: Option<String>,
}

/// One whole-history answer built at a time (see `api_history`).
static HISTORY_BUILDS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// The trends as JSON. One meter's is small and built at once (`?meter=` with no name: the
/// buses, sinks and alert timeline only, which the status page asks for every 10 s). The
/// whole hour of every meter is not: at 2,000 meters about 10 MB (30 MB as `[ms, value]`
/// pairs, 0.37 s to build), asked for by every open status page once a minute (a point is
/// added once a minute). So it is built from a copy (the lock is held only to copy, a few milliseconds)
/// on a blocking thread, never on the daemon's one runtime thread where the buses run, and
/// one at a time, so a flood of requests queues instead of building many copies at once.
async fn api_history(
    State(s): State<HttpState>,
    axum::extract::Query(q): axum::extract::Query<HistoryQuery>,
) -> Response {
    let now = std::time::SystemTime::now();
    if let Some(meter) = q.meter.as_deref() {
        let h = s.history.lock().unwrap_or_else(|e| e.into_inner());
        return Json(h.json(now, Some(meter))).into_response();
    }
    let Ok(_turn) = HISTORY_BUILDS.acquire().await else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let history = s.history.clone();
    let built = tokio::task::spawn_blocking(move || {
        let copy = history.lock().unwrap_or_else(|e| e.into_inner()).clone();
        serde_json::to_vec(&copy.json(now, None))
    })
    .await;
    match built {
        Ok(Ok(body)) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Sample the trends: alerts every second (a short-lived one still makes the timeline),
/// meters, buses and sinks every [`crate::history::STEP`] (and once at the start). Nothing
/// per reading: the polling path pays nothing for the page.
async fn sample_history(s: HttpState) {
    let mut alerts = tokio::time::interval(Duration::from_secs(1));
    alerts.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut series = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(2),
        crate::history::STEP,
    );
    series.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let now = std::time::SystemTime::now();
        tokio::select! {
            _ = alerts.tick() => {
                let active = s.live.alerts();
                s.history.lock().unwrap_or_else(|e| e.into_inner()).alerts(now, &active);
            }
            _ = series.tick() => {
                let (meters, buses) = s.live.history_sample();
                let sinks: Vec<(String, crate::history::SinkSample)> = s
                    .sinks
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .map(|k| {
                        let age = s
                            .journal
                            .oldest_undelivered(k.cursor)
                            .and_then(|ts| now.duration_since(ts).ok());
                        let sample = crate::history::SinkSample {
                            waiting: s.journal.depth(k.cursor),
                            oldest_age_s: age.map_or(0.0, |a| a.as_secs_f64()),
                        };
                        (k.name.clone(), sample)
                    })
                    .collect();
                let sample = crate::history::Sample {
                    meters,
                    buses: buses.into_iter().collect(),
                    sinks,
                };
                s.history.lock().unwrap_or_else(|e| e.into_inner()).sample(now, sample);
            }
        }
    }
}

/// Connections served at once. Well below any descriptor limit (systemd's default soft limit
/// is 1,024; the unit sets 16,384): a flood of connections never takes the descriptors that
/// buses, the journal and the sinks need. A connection beyond it is closed at once.
pub const MAX_CONNECTIONS: usize = 64;
/// A client must send a request's headers within this time, also on a kept-alive connection
/// that waits for its next request (so an idle connection is closed after it too).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// No connection lives longer (a client that does not read its response): it is asked to
/// close, then cut after a few seconds.
pub const MAX_LIFETIME: Duration = Duration::from_secs(60);

/// Serve until `stop`. A port that cannot be bound is logged and tried again, not fatal:
/// polling goes on.
///
/// The accept loop is ours rather than `axum::serve`: it caps concurrent connections, and
/// hyper's HTTP/1 builder gives the header read timeout (axum's serve sets neither).
pub async fn serve(listen: SocketAddr, state: HttpState, mut stop: watch::Receiver<bool>) {
    let app = Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/api/meters", get(api_meters))
        .route("/api/commands", get(api_commands))
        .route("/api/alerts", get(api_alerts))
        .route("/api/sinks", get(api_sinks))
        .route("/api/history", get(api_history))
        .with_state(state.clone());
    // The trends are sampled while the server runs, and stop with it.
    let _sampler = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(sample_history(state)));
    // A port that cannot be bound is retried with back-off, said once when it fails and once
    // when it works (the task does not end: that would be a restart per attempt).
    let mut backoff = crate::backoff::Backoff::default();
    let mut failed = false;
    let listener = loop {
        match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => {
                if failed {
                    info!(%listen, "HTTP port bound at last");
                }
                break l;
            }
            Err(e) => {
                if !failed {
                    error!(%listen, error = %e, "cannot serve HTTP; polling and delivery go on; trying again");
                    failed = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    r = stop.wait_for(|s| *s) => { let _ = r; return; }
                }
            }
        }
    };
    info!(%listen, "HTTP endpoints: / (status page) /metrics /healthz /api/meters /api/alerts /api/sinks /api/commands /api/history");
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let (closing_tx, closing) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut refused_logged = false;
    let mut accept_failing = false;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            r = stop.changed() => {
                if r.is_err() || *stop.borrow() {
                    break;
                }
                continue;
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                if accept_failing {
                    info!("HTTP accepts connections again");
                    accept_failing = false;
                }
                stream
            }
            Err(e) => {
                // Out of descriptors or memory: never spin on it.
                if !accept_failing {
                    warn!(error = %e, "HTTP cannot accept connections; trying again");
                    accept_failing = true;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            if !refused_logged {
                warn!(
                    max = MAX_CONNECTIONS,
                    "too many HTTP connections: new ones are closed at once until some end"
                );
                refused_logged = true;
            }
            drop(stream);
            continue;
        };
        if slots.available_permits() > MAX_CONNECTIONS / 2 {
            refused_logged = false;
        }
        let app = app.clone();
        let mut closing = closing.clone();
        connections.spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            let service = hyper_util::service::TowerToHyperService::new(app);
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(conn);
            let lifetime = tokio::time::sleep(MAX_LIFETIME);
            tokio::pin!(lifetime);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = &mut lifetime => {}
                _ = closing.changed() => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(3), conn).await;
        });
    }
    let _ = closing_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
}

/// One Prometheus histogram's lines: cumulative buckets, the sum and the count.
fn histogram(out: &mut String, name: &str, labels: &str, h: &crate::state::Histogram) {
    for (le, n) in h.cumulative() {
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// The sample lines of `text` by the family (`# TYPE`) they follow, checking that each
    /// family is declared once and its lines all carry its name.
    fn families(text: &str) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut current = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap().to_string();
                assert!(!out.contains_key(&name), "{name} declared twice");
                out.insert(name.clone(), Vec::new());
                current = Some(name);
            } else if !line.starts_with('#') {
                let family = current.clone().expect("a sample before any # TYPE");
                let metric = line.split(['{', ' ']).next().unwrap();
                assert!(
                    metric == family
                        || ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|s| metric == format!("{family}{s}")),
                    "{line} under {family}"
                );
                out.get_mut(&family).unwrap().push(line.to_string());
            }
        }
        out
    }

    #[test]
    fn the_per_meter_metrics_written_in_pieces_join_into_one_family_each() {
        for meters in [0, 1, METERS_PER_PIECE, METERS_PER_PIECE + 1, 150] {
            let state = |i: usize| crate::state::MeterState {
                bus: format!("bus{}", i % 3).into(),
                online: (i % 5 != 0).then_some(i % 2 == 0),
                polls: i as u64,
                timeouts: 1,
                ..Default::default()
            };
            let all: Vec<MeterMetrics> = (0..meters)
                .map(|i| MeterMetrics::of(&format!("m{i:03}"), &state(i)))
                .collect();
            let pieces: Vec<String> = meter_metrics(all).collect();
            assert_eq!(
                pieces.len(),
                METER_FAMILIES.len() * meters.div_ceil(METERS_PER_PIECE).max(1),
                "{meters} meters"
            );
            let text = pieces.concat();
            let f = families(&text);
            assert_eq!(f.len(), METER_FAMILIES.len(), "{meters} meters:\n{text}");
            let known = (0..meters).filter(|i| i % 5 != 0).count();
            for (family, lines) in [
                ("meterd_meter_up", known),
                ("meterd_meter_refusing", meters),
                ("meterd_meter_polls_total", meters),
                ("meterd_meter_failures_total", 3 * meters),
                // 11 buckets, +Inf, the sum and the count.
                ("meterd_poll_duration_seconds", 14 * meters),
            ] {
                assert_eq!(f[family].len(), lines, "{family} of {meters} meters");
            }
            if meters == 150 {
                assert!(
                    text.contains("meterd_meter_polls_total{bus=\"bus1\",meter=\"m148\"} 148\n")
                );
                assert!(text.contains(
                    "meterd_meter_failures_total{bus=\"bus0\",meter=\"m099\",kind=\"timeout\"} 1\n"
                ));
            }
        }
    }
}
