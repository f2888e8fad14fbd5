//! Notifiers: Prometheus Alertmanager (API v2) and a generic JSON webhook. Each drains its
//! own outbox, removing an event only after a 2xx, retrying with back-off otherwise.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::watch;
use tracing::{error, info, info_span, warn, Instrument};

use super::{outbox::Outbox, rules::Alert, Notifier, NotifierKind};
use crate::{
    backoff::Backoff,
    contract::{alertmanager_json, event_json},
};

/// HMAC-SHA256 of the body, hex: the `X-Meterd-Signature: sha256=…` header.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        // HMAC takes keys of any length; this cannot happen.
        Err(_) => return String::new(),
    };
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

enum Outcome {
    Delivered,
    /// The receiver refused the content (400/422): retrying cannot help.
    Refused(String),
    Retry(String),
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    headers: &[(&str, String)],
) -> Outcome {
    let mut req = http
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    match req.send().await {
        Ok(r) if r.status().is_success() => Outcome::Delivered,
        Ok(r) => {
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            let msg = format!("{status}: {}", text.trim());
            if matches!(status.as_u16(), 400 | 422) {
                Outcome::Refused(msg)
            } else {
                Outcome::Retry(msg)
            }
        }
        Err(e) => Outcome::Retry(crate::redact::http_error(e)),
    }
}

/// Deliver `outbox` to the notifier until `stop`. `firing` is the engine's current firing
/// set: Alertmanager gets it again every `resend` so it keeps the alerts active.
pub async fn run(
    n: Notifier,
    outbox: Arc<Outbox>,
    mut firing: watch::Receiver<Vec<Alert>>,
    resend: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let span = info_span!("notifier", name = %n.name);
    async move {
        let http = match reqwest::Client::builder().timeout(n.timeout).build() {
            Ok(c) => c,
            Err(e) => {
                error!(error = %e, "cannot set up the HTTP client; alerts stay in the outbox");
                return;
            }
        };
        let mut backoff = Backoff::default();
        let mut failing = false;
        let mut next_resend = tokio::time::Instant::now();
        loop {
            // Give way on the daemon's single thread, whatever the branches below do.
            tokio::task::consume_budget().await;
            let pending = outbox.pending();
            let now = SystemTime::now();
            let resend_due = tokio::time::Instant::now() >= next_resend;
            let mut delivered_ids = Vec::new();
            let mut outcome = None;
            match &n.kind {
                NotifierKind::Alertmanager { url } => {
                    let current = firing.borrow().clone();
                    if !pending.is_empty() || (resend_due && !current.is_empty()) {
                        let mut body: Vec<serde_json::Value> = pending
                            .iter()
                            .map(|(_, a)| alertmanager_json(a, resend, now))
                            .collect();
                        for a in &current {
                            if !pending.iter().any(|(_, p)| p.fingerprint() == a.fingerprint()) {
                                body.push(alertmanager_json(a, resend, now));
                            }
                        }
                        let bytes = serde_json::to_vec(&body).unwrap_or_default();
                        let o = post(&http, &format!("{url}/api/v2/alerts"), bytes, &[]).await;
                        if !matches!(o, Outcome::Retry(_)) {
                            delivered_ids.extend(pending.iter().map(|(id, _)| *id));
                            next_resend = tokio::time::Instant::now() + resend;
                        }
                        outcome = Some(o);
                    } else if resend_due {
                        next_resend = tokio::time::Instant::now() + resend;
                    }
                }
                NotifierKind::Webhook { url, bearer, hmac } => {
                    for (id, a) in &pending {
                        let bytes = serde_json::to_vec(&event_json(a)).unwrap_or_default();
                        let mut headers = Vec::new();
                        if let Some(t) = bearer {
                            headers.push(("authorization", format!("Bearer {t}")));
                        }
                        if let Some(s) = hmac {
                            headers.push(("x-meterd-signature", format!("sha256={}", signature(s, &bytes))));
                        }
                        let o = post(&http, url, bytes, &headers).await;
                        let retry = matches!(o, Outcome::Retry(_));
                        if !retry {
                            delivered_ids.push(*id);
                        }
                        outcome = Some(o);
                        if retry {
                            break;
                        }
                    }
                }
            }
            outbox.ack(&delivered_ids);
            match &outcome {
                Some(Outcome::Retry(why)) => {
                    outbox.failing.fail(why.clone());
                }
                Some(_) => outbox.failing.ok(),
                None => {}
            }
            let wait = match outcome {
                Some(Outcome::Retry(msg)) => {
                    if !failing {
                        warn!(error = %msg, pending = outbox.len(), "alert delivery failed; retrying with back-off, events stay in the outbox");
                        failing = true;
                    }
                    backoff.next_delay()
                }
                other => {
                    if let Some(Outcome::Refused(msg)) = other {
                        error!(error = %msg, "the receiver refused an alert event; it is dropped");
                    }
                    if failing {
                        info!("alert delivery works again");
                        failing = false;
                    }
                    backoff.reset();
                    if !outbox.is_empty() {
                        continue;
                    }
                    match n.kind {
                        NotifierKind::Alertmanager { .. } => {
                            next_resend.saturating_duration_since(tokio::time::Instant::now())
                        }
                        NotifierKind::Webhook { .. } => Duration::from_secs(3600),
                    }
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = outbox.changed(), if !failing => {}
                r = firing.changed() => { if r.is_err() { break; } }
                r = stop.changed() => { if r.is_err() || *stop.borrow() { break; } }
            }
        }
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::rfc3339;

    #[test]
    fn alertmanager_gets_ends_at_four_resends_ahead_while_firing_and_the_resolve_time_after() {
        use crate::alerts::rules::State;
        let t = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s);
        let mut a = Alert {
            labels: [("alertname".to_string(), "Overvoltage".to_string())].into(),
            state: State::Firing,
            value: 240.0,
            threshold: 235.4,
            since: t(0),
            at: Some(t(1)),
            summary: "m1: high".into(),
            until: None,
        };
        let firing = alertmanager_json(&a, Duration::from_secs(60), t(100));
        assert_eq!(firing["startsAt"], rfc3339(t(0)));
        assert_eq!(firing["endsAt"], rfc3339(t(340)));
        assert_eq!(firing["labels"]["alertname"], "Overvoltage");
        assert_eq!(firing["annotations"]["summary"], "m1: high");
        a.state = State::Resolved;
        a.at = Some(t(200));
        let resolved = alertmanager_json(&a, Duration::from_secs(60), t(300));
        assert_eq!(resolved["endsAt"], rfc3339(t(200)));
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body_in_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
