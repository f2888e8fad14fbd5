//! The InfluxDB sink: line protocol in batches, v2 API through the influxdb2 crate
//! (InfluxDB 2.x/3.x, VictoriaMetrics) or the v1 `/write` API over plain HTTP (InfluxDB 1.x,
//! which the influxdb2 crate cannot talk to).
//!
//! A batch leaves the log only after a 2xx. 5xx, 429 and connection errors are retried with
//! back-off; so are 401/403/404 (a wrong token or database is an operator's mistake, and
//! dropping the data would make it a loss). A 400/422 means a bad point: InfluxDB wrote the
//! good ones of the batch and names the bad one; it is logged, counted and skipped.

use std::{
    fmt::Write as _,
    sync::atomic::Ordering,
    time::{Duration, SystemTime},
};

fn unix_ms(t: SystemTime) -> u128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// An alert event as measurement `alert`: its labels as tags, `firing` 1/0, value,
/// threshold and summary as fields, at the time of the event.
pub fn alert_line(gateway: &str, a: &Alert, out: &mut String) {
    out.push_str("alert,gateway=");
    escape_tag(gateway, out);
    for (k, v) in &a.labels {
        if k == "gateway" || v.is_empty() {
            continue;
        }
        out.push(',');
        escape_tag(k, out);
        out.push('=');
        escape_tag(v, out);
    }
    let summary = a.summary.replace('\\', "\\\\").replace('"', "\\\"");
    let firing = if a.state == State::Firing { 1.0 } else { 0.0 };
    let _ = writeln!(
        out,
        " firing={firing:?},value={:?},threshold={:?},summary=\"{summary}\" {}",
        a.value,
        a.threshold,
        unix_ms(a.at.unwrap_or(a.since))
    );
}

/// Status points: `meter_status` (online, polls, failures per meter), `bus_status`
/// (utilisation, meters, meters online) and `gateway_status` (alerts firing and pending).
/// All fields are floats, so a later change of value can never conflict with a field type.
pub fn status_lines(gateway: &str, live: &LiveState, now: SystemTime, out: &mut String) {
    let ts = unix_ms(now);
    let meters = live.snapshot();
    let mut per_bus: std::collections::BTreeMap<&str, (f64, f64)> = Default::default();
    for (id, m) in &meters {
        let online = m.online.unwrap_or(false);
        let e = per_bus.entry(m.bus.as_str()).or_default();
        e.0 += 1.0;
        e.1 += f64::from(u8::from(online));
        out.push_str("meter_status,gateway=");
        escape_tag(gateway, out);
        out.push_str(",bus=");
        escape_tag(&m.bus, out);
        out.push_str(",meter=");
        escape_tag(id, out);
        let _ = writeln!(
            out,
            " online={:?},polls={:?},failures={:?} {ts}",
            f64::from(u8::from(online)),
            m.polls as f64,
            (m.timeouts + m.link_errors + m.exceptions) as f64
        );
    }
    let buses = live.buses();
    for (bus, (n, up)) in per_bus {
        out.push_str("bus_status,gateway=");
        escape_tag(gateway, out);
        out.push_str(",bus=");
        escape_tag(bus, out);
        let u = buses.get(bus).map_or(0.0, |b| b.utilisation);
        let _ = writeln!(
            out,
            " utilisation={u:?},meters={n:?},meters_online={up:?} {ts}"
        );
    }
    let alerts = live.alerts();
    let firing = alerts.iter().filter(|a| a.state == State::Firing).count() as f64;
    let pending = alerts.len() as f64 - firing;
    out.push_str("gateway_status,gateway=");
    escape_tag(gateway, out);
    let _ = writeln!(
        out,
        " alerts_firing={firing:?},alerts_pending={pending:?} {ts}"
    );
}

use tokio::sync::watch;
use tracing::{error, info, info_span, warn, Instrument};

use crate::backoff::Backoff;
use crate::{
    alerts::rules::{Alert, State},
    config::{InfluxAuth, InfluxConfig},
    reading::escape_tag,
    state::LiveState,
};

#[derive(Debug, PartialEq)]
pub enum WriteError {
    /// Try again later.
    Retry(String),
    /// The server refused the data itself; do not send it again.
    Rejected(String),
}

enum Writer {
    V2 {
        client: influxdb2::Client,
        org: String,
        bucket: String,
    },
    V1 {
        http: reqwest::Client,
        url: String,
        query: Vec<(&'static str, String)>,
        /// User and password, sent as HTTP Basic auth (InfluxDB 1.x takes either), never
        /// in the query string, where error messages and proxies would show them.
        auth: Option<(String, String)>,
    },
}

fn classify(status: u16, text: &str) -> WriteError {
    let msg = format!("HTTP {status}: {}", text.trim());
    match status {
        400 | 422 => WriteError::Rejected(msg),
        _ => WriteError::Retry(msg),
    }
}

impl Writer {
    fn new(cfg: &InfluxConfig) -> Result<Writer, String> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(match &cfg.auth {
            InfluxAuth::V2 { org, bucket, token } => Writer::V2 {
                client: influxdb2::ClientBuilder::with_builder(
                    reqwest::Client::builder().timeout(cfg.timeout),
                    &cfg.url,
                    org,
                    token,
                )
                .build()
                .map_err(|e| e.to_string())?,
                org: org.clone(),
                bucket: bucket.clone(),
            },
            InfluxAuth::V1 {
                database,
                retention_policy,
                username,
                password,
            } => {
                let mut query = vec![("db", database.clone()), ("precision", "ms".to_string())];
                if let Some(rp) = retention_policy {
                    query.push(("rp", rp.clone()));
                }
                Writer::V1 {
                    http,
                    url: format!("{}/write", cfg.url),
                    query,
                    auth: username
                        .as_ref()
                        .map(|u| (u.clone(), password.clone().unwrap_or_default())),
                }
            }
        })
    }

    async fn write(&self, body: String) -> Result<(), WriteError> {
        match self {
            Writer::V2 {
                client,
                org,
                bucket,
            } => client
                .write_line_protocol_with_precision(
                    org,
                    bucket,
                    body,
                    influxdb2::api::write::TimestampPrecision::Milliseconds,
                )
                .await
                .map_err(|e| match e {
                    influxdb2::RequestError::Http { status, text } => {
                        classify(status.as_u16(), &text)
                    }
                    influxdb2::RequestError::ReqwestProcessing { source } => {
                        WriteError::Retry(crate::redact::http_error(source))
                    }
                    other => WriteError::Retry(other.to_string()),
                }),
            Writer::V1 {
                http,
                url,
                query,
                auth,
            } => {
                let mut req = http.post(url).query(query).body(body);
                if let Some((user, password)) = auth {
                    req = req.basic_auth(user, Some(password));
                }
                let resp = req
                    .send()
                    .await
                    .map_err(|e| WriteError::Retry(crate::redact::http_error(e)))?;
                let status = resp.status();
                if status.is_success() {
                    Ok(())
                } else {
                    let text = resp.text().await.unwrap_or_default();
                    Err(classify(status.as_u16(), &text))
                }
            }
        }
    }
}

/// Runs until shutdown; on shutdown writes what is buffered (one attempt, a few seconds).
pub async fn run(cfg: InfluxConfig, ctx: super::SinkCtx, mut shutdown: watch::Receiver<bool>) {
    let super::SinkCtx {
        gateway,
        log,
        cursor,
        stats,
        alerts,
        live,
    } = ctx;
    let span = info_span!("influxdb", url = %crate::redact::url(&cfg.url));
    async move {
        let writer = match Writer::new(&cfg) {
            Ok(w) => w,
            Err(e) => {
                error!(error = %e, "cannot set up the InfluxDB client; readings stay buffered");
                return;
            }
        };
        let mut backoff = Backoff::default();
        let mut failing = false;
        let mut stopping = false;
        // Gateway, bus and meter status points every `status_interval`, for the fleet dashboard.
        let mut status_tick = tokio::time::interval(cfg.status_interval);
        let mut status_due = false;
        loop {
            let pos = log.position(cursor);
            if !stopping {
                // Wait for a first reading, then up to batch_interval for the batch to fill.
                tokio::select! {
                    _ = log.wait_beyond(pos) => {}
                    _ = shutdown.changed() => { stopping = *shutdown.borrow(); }
                    _ = status_tick.tick() => status_due = true,
                    _ = crate::alerts::outbox::changed(&alerts), if !failing => {}
                }
                if let Some(outbox) = &alerts {
                    let pending = outbox.pending();
                    if !pending.is_empty() {
                        let mut body = String::new();
                        for (_, a) in &pending {
                            alert_line(&gateway, a, &mut body);
                        }
                        match writer.write(body).await {
                            Ok(()) | Err(WriteError::Rejected(_)) => {
                                let ids: Vec<u64> = pending.iter().map(|(id, _)| *id).collect();
                                outbox.ack(&ids);
                            }
                            Err(WriteError::Retry(msg)) => {
                                tracing::debug!(error = %msg, "alert events not written; they stay in the outbox");
                            }
                        }
                    }
                }
                if status_due {
                    status_due = false;
                    let mut body = String::new();
                    status_lines(&gateway, &live, SystemTime::now(), &mut body);
                    if let Err(e) = writer.write(body).await {
                        // Status is the present moment: a lost sample is not worth a retry.
                        tracing::debug!(error = ?e, "status points not written");
                    }
                }
                if log.end() <= pos && !stopping {
                    continue;
                }
                if !stopping && log.end() - pos < cfg.batch_size as u64 {
                    tokio::select! {
                        _ = tokio::time::sleep(cfg.batch_interval) => {}
                        _ = shutdown.changed() => { stopping = *shutdown.borrow(); }
                    }
                }
            }
            let batch = match log.read_from(pos, cfg.batch_size) {
                Ok(b) => b,
                Err(e) => {
                    // The journal could not be read (no descriptors, an I/O error): wait,
                    // never skip.
                    warn!(error = %e, "cannot read the journal; trying again in a second");
                    if stopping {
                        break;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.changed() => { stopping = *shutdown.borrow(); }
                    }
                    continue;
                }
            };
            if batch.is_empty() {
                if stopping {
                    break;
                }
                // Nothing held at or after the cursor although the journal is longer: it
                // cannot happen (gaps are stepped over); never spin on it.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let upto = batch.last().map_or(pos, |(p, _)| p + 1);
            let mut body = String::with_capacity(batch.len() * 400);
            for (_, r) in &batch {
                r.write_line(&gateway, &mut body);
            }
            let result = if stopping {
                tokio::time::timeout(Duration::from_secs(3), writer.write(body))
                    .await
                    .unwrap_or_else(|_| Err(WriteError::Retry("timed out while stopping".into())))
            } else {
                writer.write(body).await
            };
            match result {
                Ok(()) => {
                    if failing {
                        info!("InfluxDB accepts writes again");
                        failing = false;
                    }
                    backoff.reset();
                    stats.failing.ok();
                    stats.delivered.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    log.ack(cursor, upto);
                }
                Err(WriteError::Rejected(msg)) => {
                    stats.rejected.fetch_add(1, Ordering::Relaxed);
                    error!(readings = batch.len(), reason = %msg, "InfluxDB rejected points of a batch; the rest of the batch was written, the rejected points are skipped");
                    log.ack(cursor, upto);
                }
                Err(WriteError::Retry(msg)) => {
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    let new_reason = stats.failing.fail(msg.clone());
                    if stopping {
                        warn!(error = %msg, "stopping with readings undelivered to InfluxDB");
                        break;
                    }
                    if new_reason {
                        // The first failure, and each change of reason.
                        warn!(error = %msg, "InfluxDB write failed; retrying with back-off, readings stay buffered");
                    }
                    failing = true;
                    let delay = backoff.next_delay();
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.changed() => { stopping = *shutdown.borrow(); }
                    }
                }
            }
            if stopping && log.position(cursor) >= log.end() {
                break;
            }
        }
        info!(delivered_upto = log.position(cursor), "influxdb sink stopped");
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_event_is_one_line_with_labels_as_tags_and_an_escaped_summary() {
        let a = Alert {
            labels: [
                ("gateway", "gw 1"),
                ("alertname", "Overvoltage"),
                ("severity", "critical"),
                ("meter", "m1"),
                ("bus", "rs485-1"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            state: State::Resolved,
            value: 230.5,
            threshold: 235.0,
            since: SystemTime::UNIX_EPOCH,
            at: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1500)),
            summary: "m1 says \"hi\" \\ back".into(),
            until: None,
        };
        let mut out = String::new();
        alert_line("gw 1", &a, &mut out);
        assert_eq!(
            out,
            "alert,gateway=gw\\ 1,alertname=Overvoltage,bus=rs485-1,meter=m1,severity=critical \
             firing=0.0,value=230.5,threshold=235.0,summary=\"m1 says \\\"hi\\\" \\\\ back\" 1500\n"
        );
    }

    #[test]
    fn a_bad_point_is_rejected_but_an_outage_or_a_wrong_token_is_retried() {
        for (status, rejected) in [
            (400, true),
            (422, true),
            (401, false),
            (404, false),
            (429, false),
            (500, false),
            (503, false),
        ] {
            assert_eq!(
                matches!(classify(status, ""), WriteError::Rejected(_)),
                rejected,
                "{status}"
            );
        }
    }
}
