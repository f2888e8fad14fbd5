//! The InfluxDB sink: line protocol in batches, v2 API through the influxdb2 crate
//! (InfluxDB 2.x/3.x, VictoriaMetrics) or the v1 `/write` API over plain HTTP (InfluxDB 1.x,
//! which the influxdb2 crate cannot talk to).
//!
//! A batch leaves the log only after a 2xx. 5xx, 429 and connection errors are retried with
//! back-off; so are 401/403/404 (a wrong token or database is an operator's mistake, and
//! dropping the data would make it a loss). A 400/422 means a bad point: InfluxDB wrote the
//! good ones of the batch and names the bad one; it is logged, counted and skipped.

use std::{
    sync::atomic::Ordering,
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
/// A write's body stops growing once it reaches this, whatever `batch_size` allows. The body
/// and hyper's copy of it are what a write holds in memory: hyper flattens a body into its
/// connection buffer when the connection cannot take vectored writes, which reqwest's rustls
/// connector cannot, and keeps that buffer with the pooled connection. A reading is one line of
/// 8 to 40 fields, 300 to 1,000 bytes, so 5,000 of them made 4 MB, held twice, at 2,000
/// meters. InfluxDB's advice of 5,000 lines a write assumes lines of about 100 bytes; 512 KiB
/// is about that size, and at 2,000 SDM630 meters it still means only about 7 writes a second.
pub const MAX_BODY: usize = 512 * 1024;

/// How many readings to read for the next write: `batch_size`, or fewer when the last
/// readings' lines say that `MAX_BODY` fills first (so a backlog is not read from disk only to
/// be left for the next write).
fn readings_per_write(batch_size: usize, bytes: usize, readings: usize) -> usize {
    if bytes == 0 || readings == 0 {
        return batch_size;
    }
    let per_reading = bytes.div_ceil(readings);
    (MAX_BODY / per_reading + 1).clamp(1, batch_size)
}

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
        // Report by exception: judged once per reading, in journal order (a batch sent again
        // after a failure goes whole).
        let mut filter = cfg.exception.clone().map(Filter::new);
        let mut per_write = cfg.batch_size;
        // Bytes of line protocol per reading, from the last write (before it, a guess on the
        // high side: a body too small at first doubles, up to twice MAX_BODY).
        let mut line_bytes = 1024;
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
                if !stopping && log.end() - pos < per_write as u64 {
                    tokio::select! {
                        _ = tokio::time::sleep(cfg.batch_interval) => {}
                        _ = shutdown.changed() => { stopping = *shutdown.borrow(); }
                    }
                }
            }
            let batch = match log.read_from(pos, per_write) {
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
            // Room for the batch as the last one's lines go, a quarter more, at most for
            // MAX_BODY and the line that passes it: the body seldom has to grow.
            let guess = batch.len() * line_bytes;
            let mut body = String::with_capacity((guess + guess / 4).min(MAX_BODY + 16384));
            // The sampling times of the readings written (report by exception may leave
            // some out).
            let mut written = Vec::with_capacity(batch.len());
            // Past the last reading this write takes.
            let mut upto = pos;
            let mut taken = 0;
            for (pos, r) in &batch {
                if body.len() >= MAX_BODY {
                    break;
                }
                upto = pos + 1;
                taken += 1;
                match filter.as_mut().map(|f| f.pick(*pos, r)) {
                    None | Some(Pick::All) => r.write_line(&gateway, &mut body),
                    Some(pick) => {
                        stats.left_out(r, &pick);
                        if pick == Pick::Nothing {
                            continue;
                        }
                        r.write_line_only(&gateway, &mut body, |i| pick.keeps(i));
                    }
                }
                written.push(r.ts);
            }
            if !body.is_empty() {
                line_bytes = body.len().div_ceil(taken);
            }
            per_write = readings_per_write(cfg.batch_size, body.len(), taken);
            if body.is_empty() {
                // Nothing moved in the whole batch: nothing to write, nothing to wait for. (Not
                // a write that worked either: a failing InfluxDB stays failing.)
                log.ack(cursor, upto);
                continue;
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
                    log.ack(cursor, upto);
                    stats.confirmed(written);
                }
                Err(WriteError::Rejected(msg)) => {
                    stats.rejected.fetch_add(1, Ordering::Relaxed);
                    error!(readings = taken, reason = %msg, "InfluxDB rejected points of a batch; the rest of the batch was written, the rejected points are skipped");
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
    fn a_write_reads_as_many_readings_as_fill_its_body_and_never_more_than_the_batch_size() {
        for (batch_size, bytes, readings, want) in [
            // Nothing written yet, or nothing to go by: the batch size.
            (5000, 0, 0, 5000),
            (5000, 0, 40, 5000),
            // SDM630 lines of about 800 bytes: 656 fill 512 KiB.
            (5000, 800 * 100, 100, MAX_BODY / 800 + 1),
            // Short lines: the batch size is reached first.
            (5000, 50 * 1000, 1000, 5000),
            (200, 800 * 100, 100, 200),
            // A line larger than the whole body still goes, one at a time.
            (5000, 2 * MAX_BODY, 1, 1),
        ] {
            assert_eq!(
                readings_per_write(batch_size, bytes, readings),
                want,
                "{batch_size} {bytes} {readings}"
            );
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
