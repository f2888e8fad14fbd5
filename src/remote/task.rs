//! The MQTT side of remote operations: a connection of its own (client id `{client_id}-cmd`,
//! persistent session, so commands sent while the gateway was offline arrive once it is back),
//! subscribed to `{prefix}/{gateway}/cmd/+` at QoS 1. Each request is parsed, checked
//! (enabled, signature, window, nonce, duplicate id, rate limit, meter), executed, and answered
//! on `…/cmd/{command}/reply`; every request, accepted or refused, is published as an audit
//! event on `{prefix}/{gateway}/audit` and counted in `meterd_commands_total`.

use std::{sync::Arc, time::Duration};

use rumqttc::{AsyncClient, Event, Incoming, QoS};
use tokio::sync::watch;
use tracing::{info, info_span, warn, Instrument};

use super::{
    auth::{Guard, Verdict},
    limit::RateLimit,
    reply::{Reply, Status},
    request::{id_of, Args, Command, Refusal, Request},
};
use crate::{
    backoff::Backoff,
    config::{MqttConfig, RemoteConfig},
    state::LiveState,
};

/// What executes commands: the gateway's state (and, as the commands land, its buses).
pub struct Executor {
    pub live: Arc<LiveState>,
    /// Meter ids configured on this gateway.
    pub meters: Vec<String>,
}

impl Executor {
    fn execute(&self, request: &Request) -> Reply {
        match &request.args {
            Args::Status { meter } => {
                let snapshot = self.live.snapshot();
                let meters: Vec<serde_json::Value> = snapshot
                    .iter()
                    .filter(|(id, _)| meter.as_deref().is_none_or(|m| m == id.as_str()))
                    .map(|(id, m)| crate::contract::meter_json(id, m))
                    .collect();
                Reply::ok(&request.id, serde_json::json!({ "meters": meters }))
            }
            // Validation lets only the commands above be enabled (config/remote.rs).
            _ => Reply::refused(&request.id, Refusal::Disabled(request.command.as_str())),
        }
    }
}

/// Everything one gateway decides about incoming commands, without the connection: the unit
/// the MQTT loop drives and tests drive directly.
pub struct Handler {
    enabled: Vec<Command>,
    guard: Guard,
    limit: RateLimit,
    executor: Executor,
}

/// One audit record: who asked what, when, and how it ended.
pub fn audit_json(
    at: std::time::SystemTime,
    command: &str,
    request: Option<&Request>,
    reply: &Reply,
) -> serde_json::Value {
    serde_json::json!({
        "at": crate::contract::rfc3339(at),
        "command": command,
        "id": reply.id,
        "by": request.map(|r| r.by.as_str()).unwrap_or(""),
        "meter": request.and_then(Request::meter),
        "status": reply.status,
        "reason": reply.reason,
    })
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::Refused => "refused",
        Status::Failed => "failed",
        Status::Timeout => "timeout",
        Status::Progress => "progress",
    }
}

impl Handler {
    pub fn new(gateway: &str, cfg: &RemoteConfig, executor: Executor) -> Handler {
        Handler {
            enabled: cfg.commands.clone(),
            guard: Guard::new(gateway, cfg.keys.clone(), cfg.window.as_secs()),
            limit: RateLimit::new(cfg.rate_limit.clone()),
            executor,
        }
    }

    /// The reply to a payload that arrived for `command` at `now` (Unix seconds), and the
    /// parsed request when it could be parsed. `None`: a duplicate still being executed.
    pub fn handle(
        &mut self,
        command: &str,
        payload: &[u8],
        now: i64,
        now_instant: std::time::Instant,
    ) -> (Option<Request>, Option<Reply>) {
        let request = match Request::parse(command, payload) {
            Ok(r) => r,
            Err(e) => {
                let id = id_of(payload).unwrap_or_default();
                return (None, Some(Reply::refused(&id, e)));
            }
        };
        let refuse = |r: &Request, e: Refusal| Some(Reply::refused(&r.id, e));
        if !self.enabled.contains(&request.command) {
            let reply = refuse(&request, Refusal::Disabled(request.command.as_str()));
            return (Some(request), reply);
        }
        match self.guard.check(&request, now) {
            Err(e) => {
                let reply = refuse(&request, e);
                return (Some(request), reply);
            }
            Ok(Verdict::Duplicate(reply)) => return (Some(request), reply),
            Ok(Verdict::Execute) => {}
        }
        if let Err(e) = self.limit.take(request.command, now_instant) {
            let reply = refuse(&request, e);
            return (Some(request), reply);
        }
        if let Some(m) = request.meter() {
            if !self.executor.meters.iter().any(|id| id == m) {
                let reply = refuse(&request, Refusal::UnknownMeter(m.to_string()));
                self.guard.finished(
                    &request.id,
                    reply.as_ref().unwrap_or(&Reply::new("", Status::Refused)),
                );
                return (Some(request), reply);
            }
        }
        let reply = self.executor.execute(&request);
        self.guard.finished(&request.id, &reply);
        (Some(request), Some(reply))
    }
}

/// Runs until shutdown.
pub async fn run(
    cfg: RemoteConfig,
    mqtt: MqttConfig,
    gateway: String,
    executor: Executor,
    mut shutdown: watch::Receiver<bool>,
) {
    let span = info_span!("remote", broker = %format!("{}:{}", mqtt.host, mqtt.port));
    async move {
        let live = executor.live.clone();
        let mut handler = Handler::new(&gateway, &cfg, executor);
        let prefix = format!("{}/{gateway}", mqtt.topic_prefix);
        let subscription = format!("{prefix}/cmd/+");
        let audit_topic = format!("{prefix}/audit");
        let client_id = format!("{}-cmd", mqtt.client_id);
        let mut backoff = Backoff::default();
        let opts = loop {
            match crate::sinks::mqtt::options(&mqtt, &client_id, None, false) {
                Ok(o) => break o,
                Err(e) => {
                    warn!(error = %e, "cannot read TLS files; remote commands wait");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = shutdown.wait_for(|s| *s) => return,
                    }
                }
            }
        };
        let (client, mut el) = AsyncClient::new(opts, 256);
        info!(commands = ?cfg.commands.iter().map(|c| c.as_str()).collect::<Vec<_>>(), topic = %subscription, "remote commands enabled");
        let mut pause: Option<tokio::time::Instant> = None;
        loop {
            if let Some(until) = pause.take() {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => {}
                    _ = shutdown.wait_for(|s| *s) => break,
                }
            }
            tokio::select! {
                ev = el.poll() => match ev {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        backoff.reset();
                        if let Err(e) = client.try_subscribe(&subscription, QoS::AtLeastOnce) {
                            warn!(error = %e, "cannot subscribe to commands");
                        }
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        let Some(command) = p.topic.strip_prefix(&format!("{prefix}/cmd/")).map(str::to_string) else {
                            continue;
                        };
                        let now = std::time::SystemTime::now();
                        let secs = now
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs() as i64);
                        let (request, reply) =
                            handler.handle(&command, &p.payload, secs, std::time::Instant::now());
                        let Some(reply) = reply else { continue };
                        let known = Command::from_name(&command).map_or("unknown", Command::as_str);
                        live.count_command(known, status_name(reply.status));
                        if reply.status == Status::Refused {
                            warn!(command = %command, id = %reply.id, reason = reply.reason.as_deref().unwrap_or(""), "remote command refused");
                        } else {
                            info!(command = %command, id = %reply.id, status = status_name(reply.status), "remote command");
                        }
                        let audit = audit_json(now, &command, request.as_ref(), &reply).to_string();
                        let _ = client.try_publish(format!("{}/reply", p.topic), QoS::AtLeastOnce, false, reply.to_json());
                        let _ = client.try_publish(&audit_topic, QoS::AtLeastOnce, false, audit);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        warn!(error = %e, "remote commands: broker connection failed");
                        pause = Some(tokio::time::Instant::now() + backoff.next_delay());
                    }
                },
                changed = shutdown.changed() => {
                    let stop = changed.is_err() || *shutdown.borrow();
                    if stop {
                        let _ = client.try_disconnect();
                        let _ = tokio::time::timeout(Duration::from_millis(300), el.poll()).await;
                        break;
                    }
                }
            }
        }
    }
    .instrument(span)
    .await
}
