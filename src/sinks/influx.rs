//! The InfluxDB sink: line protocol in batches, v2 API through the influxdb2 crate
//! (InfluxDB 2.x/3.x, VictoriaMetrics) or the v1 `/write` API over plain HTTP (InfluxDB 1.x,
//! which the influxdb2 crate cannot talk to).
//!
//! A batch leaves the log only after a 2xx. 5xx, 429 and connection errors are retried with
//! back-off; so are 401/403/404 (a wrong token or database is an operator's mistake, and
//! dropping the data would make it a loss). A 400/422 means a bad point: InfluxDB wrote the
//! good ones of the batch and names the bad one; it is logged, counted and skipped.

use std::{
    sync::{atomic::Ordering, Arc},
    time::{Duration, SystemTime},
};

use tokio::sync::watch;
use tracing::{error, info, info_span, warn, Instrument};

use crate::backoff::Backoff;
use crate::{
    config::{InfluxAuth, InfluxConfig},
    contract::{alert_line, status_lines},
    exception::{Filter, Pick},
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

    async fn write(&self, body: impl Into<reqwest::Body>) -> Result<(), WriteError> {
        let body = body.into();
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

/// A write's body is sent in pieces of about this size, each written only when hyper asks
/// for more. Written whole, a batch of 5,000 SDM630 readings was a 2.5 MB string, and hyper
/// kept a copy as large with the pooled connection: it flattens a body into its connection
/// buffer when the connection cannot take vectored writes, which reqwest's rustls connector
/// cannot. In pieces, offered one per turn ([`crate::body::PieceByPiece`]), hyper holds
/// about one.
pub const PIECE: usize = 64 * 1024;

/// How a reading of a batch is written: whole, or only some of its values (report by
/// exception).
enum Lines {
    All,
    Only(Pick),
}

/// The lines of `batch` (one per reading, with the values `lines` says) in pieces of about
/// [`PIECE`] bytes, each written when it is asked for.
fn pieces(
    gateway: Arc<str>,
    batch: Vec<(u64, Arc<crate::reading::Reading>)>,
    lines: Vec<Option<Lines>>,
) -> impl Iterator<Item = String> {
    let mut next = 0;
    std::iter::from_fn(move || {
        let mut out = String::new();
        while next < batch.len() && out.len() < PIECE {
            if out.capacity() == 0 {
                // A piece and the line that passes PIECE, without doubling.
                out.reserve_exact(PIECE + 16 * 1024);
            }
            let r = &batch[next].1;
            match &lines[next] {
                Some(Lines::All) => r.write_line(&gateway, &mut out),
                Some(Lines::Only(pick)) => r.write_line_only(&gateway, &mut out, |i| pick.keeps(i)),
                None => {}
            }
            next += 1;
        }
        (!out.is_empty()).then_some(out)
    })
}

/// The body of a write: [`pieces`], sent as they are written.
fn streamed_body(
    gateway: Arc<str>,
    batch: Vec<(u64, Arc<crate::reading::Reading>)>,
    lines: Vec<Option<Lines>>,
) -> reqwest::Body {
    reqwest::Body::wrap_stream(crate::body::PieceByPiece::new(pieces(
        gateway, batch, lines,
    )))
}

/// Whether `r` gives a line: some value kept is a number (the line protocol has no NaN).
fn has_line(r: &crate::reading::Reading, keep: impl Fn(usize) -> bool) -> bool {
    r.values
        .iter()
        .enumerate()
        .any(|(i, (_, v))| v.is_finite() && keep(i))
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
    let gateway: Arc<str> = gateway.into();
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
        // Report by exception: judged once per reading, in journal order (a batch sent again
        // after a failure goes whole).
        let mut filter = cfg.exception.clone().map(Filter::new);
        loop {
            // Give way on the daemon's single thread, whatever the branches below do.
            tokio::task::consume_budget().await;
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
            let batch = match log.take(cursor, pos, cfg.batch_size) {
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
            // The sampling times of the readings written (report by exception may leave
            // some out), and how each is written.
            let mut written = Vec::with_capacity(batch.len());
            let mut lines = Vec::with_capacity(batch.len());
            let mut any_line = false;
            for (pos, r) in &batch {
                let how = match filter.as_mut().map(|f| f.pick(*pos, r)) {
                    None | Some(Pick::All) => {
                        any_line |= has_line(r, |_| true);
                        Lines::All
                    }
                    Some(pick) => {
                        stats.left_out(r, &pick);
                        if pick == Pick::Nothing {
                            lines.push(None);
                            continue;
                        }
                        any_line |= has_line(r, |i| pick.keeps(i));
                        Lines::Only(pick)
                    }
                };
                lines.push(Some(how));
                written.push(r.ts);
            }
            if !any_line {
                // Nothing moved in the whole batch: nothing to write, nothing to wait for. (Not
                // a write that worked either: a failing InfluxDB stays failing.)
                log.ack(cursor, upto);
                continue;
            }
            let readings = batch.len();
            let body = streamed_body(gateway.clone(), batch, lines);
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
                    log.ack(cursor, upto);
                    stats.confirmed(written);
                }
                Err(WriteError::Rejected(msg)) => {
                    stats.rejected.fetch_add(1, Ordering::Relaxed);
                    error!(readings, reason = %msg, "InfluxDB rejected points of a batch; the rest of the batch was written, the rejected points are skipped");
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
    fn a_batch_is_written_in_pieces_that_join_into_its_lines() {
        let reading = |i: u64| {
            Arc::new(crate::reading::Reading {
                meter: format!("m{i}").into(),
                bus: "b".into(),
                profile: "eastron-sdm630".into(),
                ts: SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_768_205_000 + i),
                seq: i,
                values: (0..32)
                    .map(|q| (format!("quantity_{q}").into(), 230.0 + (i * q) as f64 / 7.0))
                    .collect(),
                on_demand: false,
            })
        };
        for n in [1, 10, 500, 3000] {
            let batch: Vec<(u64, Arc<crate::reading::Reading>)> =
                (0..n).map(|i| (i, reading(i))).collect();
            // Every third reading whole, every third with two values, every third not at all.
            let how = |i: u64| match i % 3 {
                0 => Some(Lines::All),
                1 => Some(Lines::Only(Pick::Some(
                    (0..32).map(|q| q == 3 || q == 30).collect(),
                ))),
                _ => None,
            };
            let mut expected = String::new();
            for (i, r) in &batch {
                match how(*i) {
                    Some(Lines::All) => r.write_line("gw", &mut expected),
                    Some(Lines::Only(p)) => r.write_line_only("gw", &mut expected, |q| p.keeps(q)),
                    None => {}
                }
            }
            let lines = (0..n).map(how).collect();
            let written: Vec<String> = pieces("gw".into(), batch, lines).collect();
            assert_eq!(written.concat(), expected, "{n} readings");
            for p in &written {
                assert!(p.ends_with('\n'), "a piece ends with a whole line");
                assert!(p.len() < PIECE + 2048, "a piece of {} bytes", p.len());
            }
            // Every piece but the last is full.
            for p in &written[..written.len() - 1] {
                assert!(p.len() >= PIECE, "a piece of {} bytes", p.len());
            }
            if expected.len() > 3 * PIECE {
                assert!(
                    written.len() >= 3,
                    "{n} readings in {} pieces",
                    written.len()
                );
            }
        }
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
