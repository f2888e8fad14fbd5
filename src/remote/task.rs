//! The MQTT side of remote operations: a connection of its own (client id `{client_id}-cmd`,
//! persistent session, so commands sent while the gateway was offline arrive once it is back),
//! subscribed to `{prefix}/{gateway}/cmd/+` at QoS 1. Each request is parsed, checked
//! (enabled, signature, window, nonce, duplicate id, rate limit, meter), executed, and answered
//! on `…/cmd/{command}/reply`; every request, accepted or refused, is published as an audit
//! event on `{prefix}/{gateway}/audit` and counted in `meterd_commands_total`.

use std::{sync::Arc, time::Duration};

use rumqttc::{AsyncClient, Event, Incoming, QoS};
use tokio::sync::watch;
use tracing::{error, info, info_span, warn, Instrument};

use super::{
    auth::{Guard, Verdict},
    limit::RateLimit,
    reply::{Reply, Status},
    request::{id_of, Args, Command, Refusal, Request, Scope},
};
use crate::{
    backoff::Backoff,
    config::{MqttConfig, RemoteConfig},
    state::{LiveState, OnDemandKind, OnDemandRead, OnDemandResult},
};

/// What executes commands: the gateway's state and its buses.
pub struct Executor {
    pub live: Arc<LiveState>,
    /// The meters configured on this gateway.
    pub meters: Vec<MeterRef>,
    /// Meters whose relay may be commanded, and the credentials to do it with.
    pub relay_meters: Vec<String>,
    pub relay_credentials: Option<meterd_protocols::dlt645::request::Credentials>,
}

/// A configured meter as commands see it.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterRef {
    pub id: String,
    pub bus: String,
    /// Its profile reads a clock (DL/T 645 and 698.45 meters).
    pub clock: bool,
    /// Its profile reads daily freezes.
    pub freezes: bool,
}

/// How long an on-demand read may wait for its line and take.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a long command sends its progress replies (`"status":"progress"`).
pub type Progress = Arc<dyn Fn(Reply) + Send + Sync>;

type Work = std::pin::Pin<Box<dyn std::future::Future<Output = Reply> + Send>>;

/// A command's reply: at once, or when its work on a bus is done (with progress on the way).
pub enum Outcome {
    Now(Option<Reply>),
    Later(Box<dyn FnOnce(Progress) -> Work + Send>),
}

/// Work that reports no progress.
fn later(work: impl std::future::Future<Output = Reply> + Send + 'static) -> Outcome {
    Outcome::Later(Box::new(move |_| Box::pin(work)))
}

impl Executor {
    /// The meters `scope` names that `can` do what is asked.
    fn in_scope(&self, scope: &Scope, can: impl Fn(&MeterRef) -> bool) -> Vec<MeterRef> {
        self.meters
            .iter()
            .filter(|m| can(m))
            .filter(|m| match scope {
                Scope::Meter(id) => &m.id == id,
                Scope::Bus(b) => &m.bus == b,
                Scope::All => true,
            })
            .cloned()
            .collect()
    }

    fn execute(&self, request: &Request) -> Outcome {
        match &request.args {
            Args::Status { meter } => {
                let meters: Vec<serde_json::Value> = self
                    .live
                    .each_meter(|id, m| {
                        meter
                            .as_deref()
                            .is_none_or(|want| want == id)
                            .then(|| crate::contract::meter_json(id, m))
                    })
                    .into_iter()
                    .flatten()
                    .collect();
                Outcome::Now(Some(Reply::ok(
                    &request.id,
                    serde_json::json!({ "meters": meters }),
                )))
            }
            Args::Read {
                meter,
                group,
                points,
            } => {
                let (id, live, meter) = (request.id.clone(), self.live.clone(), meter.clone());
                let bus = self.bus_of(&meter);
                // Points that are hex identifiers (DL/T 645 DIs, DL/T 698.45 OADs) are read by
                // hand; the others name quantities of the groups read.
                let (identifiers, quantities): (Vec<String>, Vec<String>) =
                    points.iter().cloned().partition(|p| is_identifier(p));
                let kind = OnDemandKind::Read {
                    group: group.clone(),
                    identifiers,
                };
                later(async move {
                    match on_bus(&live, &bus, &meter, kind, READ_TIMEOUT).await {
                        Ok(r) => read_reply(&id, &meter, &quantities, r),
                        Err(missed) => missed.reply(&id),
                    }
                })
            }
            Args::Timesync(scope) => {
                let chosen = self.in_scope(scope, |m| m.clock);
                let id = request.id.clone();
                if chosen.is_empty() {
                    return Outcome::Now(Some(Reply::failed(
                        &id,
                        "no meter in that scope reads a clock (DL/T 645 and 698.45 meters do)",
                    )));
                }
                let live = self.live.clone();
                later(async move { timesync(&id, &live, chosen).await })
            }
            Args::Recollect { scope, from, to } => {
                let chosen = self.in_scope(scope, |m| m.freezes);
                let id = request.id.clone();
                if chosen.is_empty() {
                    return Outcome::Now(Some(Reply::failed(
                        &id,
                        "no meter in that scope keeps daily freezes (DL/T 645-2007 and 698.45 meters do)",
                    )));
                }
                let (live, from, to) = (self.live.clone(), *from, *to);
                Outcome::Later(Box::new(move |progress| {
                    Box::pin(
                        async move { recollect(&id, &live, chosen, (from, to), progress).await },
                    )
                }))
            }
            Args::Relay { meter, action } => {
                let id = request.id.clone();
                let (Some(creds), true) = (
                    self.relay_credentials,
                    self.relay_meters.iter().any(|m| m == meter),
                ) else {
                    return Outcome::Now(Some(Reply::refused(
                        &id,
                        Refusal::NotRelayCapable(meter.clone()),
                    )));
                };
                use crate::remote::request::RelayAction;
                use meterd_protocols::dlt645::request::RelayCommand;
                let command = match action {
                    RelayAction::Trip => RelayCommand::Trip,
                    RelayAction::ClosePermit => RelayCommand::ClosePermit,
                    RelayAction::Alarm => RelayCommand::Alarm,
                    RelayAction::AlarmRelease => RelayCommand::AlarmRelease,
                };
                let bus = self.bus_of(meter);
                let (live, meter) = (self.live.clone(), meter.clone());
                later(async move {
                    let kind = OnDemandKind::Relay { command, creds };
                    match on_bus(&live, &bus, &meter, kind, READ_TIMEOUT).await {
                        Err(missed) => missed.reply(&id),
                        Ok(r) => match r.relay {
                            Some(state) => Reply::ok(
                                &id,
                                serde_json::json!({
                                    "meter": meter,
                                    "command": format!("{command:?}"),
                                    "relay": {
                                        "open": state.open,
                                        "trip_commanded": state.trip_commanded,
                                        "alarm": state.alarm,
                                    },
                                }),
                            ),
                            None => Reply::failed(&id, r.errors.join("; ")),
                        },
                    }
                })
            }
        }
    }

    /// The bus `meter` is on (the handler has checked that it is configured).
    fn bus_of(&self, meter: &str) -> String {
        self.meters
            .iter()
            .find(|m| m.id == meter)
            .map(|m| m.bus.clone())
            .unwrap_or_default()
    }
}

/// Why work put on a bus brought no result.
#[derive(Debug, Clone, PartialEq)]
enum Missed {
    /// No task owns that bus.
    NotRunning(String),
    /// Its queue is full (reads only: the master may retry).
    Busy,
    /// The bus task went away before answering.
    Stopped,
    /// No answer within this long.
    TimedOut(Duration),
}

impl std::fmt::Display for Missed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Missed::NotRunning(bus) => write!(f, "bus {bus} is not running"),
            Missed::Busy => f.write_str("the bus has too many reads waiting; try again"),
            Missed::Stopped => f.write_str("the bus stopped before it was done"),
            Missed::TimedOut(d) => write!(f, "no result within {d:?}"),
        }
    }
}

impl Missed {
    /// The reply to a one-meter command that missed: `timeout` or `failed`.
    fn reply(&self, id: &str) -> Reply {
        let status = match self {
            Missed::TimedOut(_) => Status::Timeout,
            _ => Status::Failed,
        };
        Reply {
            reason: Some(self.to_string()),
            ..Reply::new(id, status)
        }
    }
}

/// Puts `kind` for `meter` on its bus's queue and returns where its result will come. A read
/// finding the queue full is refused at once (the master may retry); the other commands wait
/// for room.
async fn enqueue(
    live: &LiveState,
    bus: &str,
    meter: &str,
    kind: OnDemandKind,
) -> Result<tokio::sync::oneshot::Receiver<OnDemandResult>, Missed> {
    use tokio::sync::mpsc::error::TrySendError;
    let queue = live
        .on_demand(bus)
        .ok_or_else(|| Missed::NotRunning(bus.to_string()))?;
    let (reply, rx) = tokio::sync::oneshot::channel();
    let refuse_when_full = matches!(kind, OnDemandKind::Read { .. });
    let job = Box::new(OnDemandRead {
        meter: meter.to_string(),
        kind,
        reply,
    });
    if refuse_when_full {
        queue.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => Missed::Busy,
            TrySendError::Closed(_) => Missed::Stopped,
        })?;
    } else {
        queue.send(job).await.map_err(|_| Missed::Stopped)?;
    }
    Ok(rx)
}

/// The result of queued work, waited for at most `limit`.
async fn result(
    rx: tokio::sync::oneshot::Receiver<OnDemandResult>,
    limit: Duration,
) -> Result<OnDemandResult, Missed> {
    match tokio::time::timeout(limit, rx).await {
        Err(_) => Err(Missed::TimedOut(limit)),
        Ok(Err(_)) => Err(Missed::Stopped),
        Ok(Ok(r)) => Ok(r),
    }
}

/// Queued work's result: [`enqueue`] then [`result`].
async fn on_bus(
    live: &LiveState,
    bus: &str,
    meter: &str,
    kind: OnDemandKind,
    limit: Duration,
) -> Result<OnDemandResult, Missed> {
    result(enqueue(live, bus, meter, kind).await?, limit).await
}

/// Set the clocks of `meters`, each through its bus's queue (one after another on a line,
/// lines side by side), and report each one's offset before and after.
async fn timesync(id: &str, live: &LiveState, meters: Vec<MeterRef>) -> Reply {
    let mut waiting = Vec::new();
    for m in &meters {
        let queued = enqueue(live, &m.bus, &m.id, OnDemandKind::SyncClock).await;
        waiting.push((m.id.clone(), queued));
    }
    let mut report = Vec::new();
    let mut synced = 0;
    for (meter, queued) in waiting {
        let r = match queued {
            Ok(rx) => result(rx, READ_TIMEOUT).await,
            Err(e) => Err(e),
        };
        report.push(match r {
            Ok(r) => {
                if r.clock_after.is_some() && r.errors.is_empty() {
                    synced += 1;
                }
                serde_json::json!({
                    "meter": meter,
                    "offset_before_s": r.clock_before,
                    "offset_after_s": r.clock_after,
                    "errors": r.errors,
                })
            }
            Err(e) => serde_json::json!({"meter": meter, "errors": [e.to_string()]}),
        });
    }
    let result = serde_json::json!({ "meters": report });
    if synced == meters.len() {
        Reply::ok(id, result)
    } else {
        Reply {
            reason: Some(format!("{synced} of {} meters set", meters.len())),
            result: Some(result),
            ..Reply::new(id, Status::Failed)
        }
    }
}

/// Read back the daily freezes of `meters` for a range of days, meter after meter (their
/// buses queue them behind nothing but the reads already waiting, and take turns with the
/// scheduled polls); a progress reply after each meter, the freezes in the final one.
async fn recollect(
    id: &str,
    live: &LiveState,
    meters: Vec<MeterRef>,
    (from, to): (i64, i64),
    progress: Progress,
) -> Reply {
    let mut report = Vec::new();
    let mut found = 0;
    let total = meters.len();
    for (i, m) in meters.into_iter().enumerate() {
        // A month of freezes on a slow line: a generous bound.
        let kind = OnDemandKind::Recollect { from, to };
        let r = on_bus(live, &m.bus, &m.id, kind, READ_TIMEOUT * 4).await;
        let entry = match r {
            Ok(r) => {
                found += r.freezes.len();
                serde_json::json!({
                    "meter": m.id,
                    "freezes": r.freezes.iter().map(|(ts, values)| serde_json::json!({
                        "ts": crate::contract::rfc3339(*ts),
                        "values": values.iter().map(|(q, v)| (q.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
                    })).collect::<Vec<_>>(),
                    "errors": r.errors,
                })
            }
            Err(e) => serde_json::json!({"meter": m.id, "freezes": [], "errors": [e.to_string()]}),
        };
        if total > 1 {
            progress(Reply {
                result: Some(serde_json::json!({"done": i + 1, "of": total, "meter": entry})),
                ..Reply::new(id, Status::Progress)
            });
        }
        report.push(entry);
    }
    let result = serde_json::json!({ "meters": report, "freezes": found });
    if found > 0 {
        Reply::ok(id, result)
    } else {
        Reply {
            reason: Some("no daily freezes in that range".into()),
            result: Some(result),
            ..Reply::new(id, Status::Failed)
        }
    }
}

/// A DL/T 645 DI (4 or 8 hex digits) or DL/T 698.45 OAD (8), as opposed to a quantity name.
fn is_identifier(p: &str) -> bool {
    matches!(p.len(), 4 | 8) && p.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The reply to a `read`: the values (only the named ones when `points` are given), the errors
/// met, the reading's time and `seq` in the journal.
fn read_reply(id: &str, meter: &str, points: &[String], r: OnDemandResult) -> Reply {
    let mut values = serde_json::Map::new();
    for (q, v) in &r.values {
        if (points.is_empty() || points.iter().any(|p| p == &**q)) && v.is_finite() {
            values.insert(q.to_string(), (*v).into());
        }
    }
    let mut errors = r.errors.clone();
    for p in points {
        if !r.values.iter().any(|(q, _)| &**q == p) {
            errors.push(format!("{p}: not among the meter's quantities"));
        }
    }
    let identifiers: serde_json::Map<String, serde_json::Value> =
        r.identifiers.iter().cloned().collect();
    let identified = r
        .identifiers
        .iter()
        .any(|(_, v)| v.get("error").is_none() && v.get("dar").is_none());
    let result = serde_json::json!({
        "meter": meter,
        "ts": r.ts.map(crate::contract::rfc3339),
        "seq": r.seq,
        "values": values,
        "identifiers": identifiers,
        "errors": errors,
    });
    if values.is_empty() && !identified {
        Reply {
            reason: Some(if errors.is_empty() {
                "no values".into()
            } else {
                errors.join("; ")
            }),
            result: Some(result),
            ..Reply::new(id, Status::Failed)
        }
    } else {
        Reply::ok(id, result)
    }
}

/// Everything one gateway decides about incoming commands, without the connection: the unit
/// the MQTT loop drives and tests drive directly.
pub struct Handler {
    enabled: Vec<Command>,
    guard: Guard,
    limit: RateLimit,
    executor: Executor,
    /// Duplicates that arrived while their first copy was still running, by id: each gets
    /// the reply when it is ready.
    waiting: std::collections::HashMap<String, u32>,
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
            waiting: std::collections::HashMap::new(),
        }
    }

    /// The reply to a payload that arrived for `command` at `now` (Unix seconds), and the
    /// parsed request when it could be parsed. `Now(None)`: a duplicate still being executed.
    pub fn handle(
        &mut self,
        command: &str,
        payload: &[u8],
        now: i64,
        now_instant: std::time::Instant,
    ) -> (Option<Request>, Outcome) {
        let request = match Request::parse(command, payload) {
            Ok(r) => r,
            Err(e) => {
                let id = id_of(payload).unwrap_or_default();
                return (None, Outcome::Now(Some(Reply::refused(&id, e))));
            }
        };
        let refuse = |r: &Request, e: Refusal| Outcome::Now(Some(Reply::refused(&r.id, e)));
        if !self.enabled.contains(&request.command) {
            let reply = refuse(&request, Refusal::Disabled(request.command.as_str()));
            return (Some(request), reply);
        }
        match self.guard.check(&request, now) {
            Err(e) => {
                let reply = refuse(&request, e);
                return (Some(request), reply);
            }
            Ok(Verdict::Duplicate(None)) => {
                *self.waiting.entry(request.id.clone()).or_insert(0) += 1;
                return (Some(request), Outcome::Now(None));
            }
            Ok(Verdict::Duplicate(reply)) => return (Some(request), Outcome::Now(reply)),
            Ok(Verdict::Execute) => {}
        }
        if let Err(e) = self.limit.take(request.command, now_instant) {
            let reply = refuse(&request, e);
            return (Some(request), reply);
        }
        if let Some(m) = request.meter() {
            if !self.executor.meters.iter().any(|r| r.id == m) {
                let reply = Reply::refused(&request.id, Refusal::UnknownMeter(m.to_string()));
                self.guard.finished(&request.id, &reply);
                return (Some(request), Outcome::Now(Some(reply)));
            }
        }
        let outcome = self.executor.execute(&request);
        if let Outcome::Now(Some(reply)) = &outcome {
            self.guard.finished(&request.id, reply);
        }
        (Some(request), outcome)
    }

    /// A command that ran on a bus has its reply: kept for duplicates. Returns how many
    /// duplicates were waiting for it (each is answered with it too).
    pub fn finished(&mut self, reply: &Reply) -> u32 {
        self.guard.finished(&reply.id, reply);
        self.waiting.remove(&reply.id).unwrap_or(0)
    }
}

/// The audit trail on disk: one JSON line per command, written and synced before the reply
/// goes out; at 8 MiB the file becomes `audit.jsonl.1` (the one before is dropped).
pub struct AuditLog {
    pub path: std::path::PathBuf,
    failed: bool,
}

/// The size at which the audit file is rotated.
const AUDIT_MAX: u64 = 8 << 20;

impl AuditLog {
    pub fn new(state_dir: &std::path::Path) -> AuditLog {
        AuditLog {
            path: state_dir.join("audit.jsonl"),
            failed: false,
        }
    }

    /// Appends and syncs `line`. A failure (a full disk) is logged once, and once more when
    /// the file takes lines again; a line the disk took only part of is cut off again, so
    /// every line in the file stays whole JSON.
    fn append(&mut self, line: &str) {
        use std::io::Write;
        let r = (|| -> std::io::Result<()> {
            if std::fs::metadata(&self.path).is_ok_and(|m| m.len() > AUDIT_MAX) {
                std::fs::rename(&self.path, self.path.with_extension("jsonl.1"))?;
            }
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            let before = f.metadata()?.len();
            let written = f
                .write_all(format!("{line}\n").as_bytes())
                .and_then(|()| f.sync_data());
            if written.is_err() {
                let _ = f.set_len(before);
            }
            written
        })();
        match r {
            Ok(()) if self.failed => {
                info!(path = %self.path.display(), "audit file written again");
                self.failed = false;
            }
            Ok(()) => {}
            Err(e) if !self.failed => {
                error!(path = %self.path.display(), error = %e, "cannot write the audit file; audit events still go to MQTT");
                self.failed = true;
            }
            Err(_) => {}
        }
    }

    /// [`AuditLog::append`] on the blocking pool: the daemon's runtime has one thread, and an
    /// fsync per command (a flood of refused ones included) must not stall polling and sinks.
    async fn append_off_runtime(log: &Arc<std::sync::Mutex<AuditLog>>, line: String) {
        let log = log.clone();
        let r = tokio::task::spawn_blocking(move || {
            log.lock().unwrap_or_else(|e| e.into_inner()).append(&line)
        })
        .await;
        if let Err(e) = r {
            error!(error = %e, "audit file writer failed");
        }
    }
}

/// Publish `reply` on the request topic's `/reply` and its audit event (after writing it to
/// the audit file), and count it.
#[allow(clippy::too_many_arguments)]
async fn answer(
    client: &AsyncClient,
    live: &LiveState,
    audit_log: &Arc<std::sync::Mutex<AuditLog>>,
    audit_topic: &str,
    request_topic: &str,
    command: &str,
    request: Option<&Request>,
    reply: &Reply,
) {
    let known = Command::from_name(command).map_or("unknown", Command::as_str);
    live.count_command(known, status_name(reply.status));
    if reply.status == Status::Refused {
        warn!(command = %command, id = %reply.id, reason = reply.reason.as_deref().unwrap_or(""), "remote command refused");
    } else {
        info!(command = %command, id = %reply.id, status = status_name(reply.status), "remote command");
    }
    let event = audit_json(std::time::SystemTime::now(), command, request, reply);
    let audit = event.to_string();
    AuditLog::append_off_runtime(audit_log, audit.clone()).await;
    live.push_audit(event);
    let _ = client.try_publish(
        format!("{request_topic}/reply"),
        QoS::AtLeastOnce,
        false,
        reply.to_json(),
    );
    let _ = client.try_publish(audit_topic, QoS::AtLeastOnce, false, audit);
}

/// Runs until shutdown.
pub async fn run(
    cfg: RemoteConfig,
    mqtt: MqttConfig,
    gateway: String,
    executor: Executor,
    audit_log: AuditLog,
    mut shutdown: watch::Receiver<bool>,
) {
    let span = info_span!("remote", broker = %format!("{}:{}", mqtt.host, mqtt.port));
    async move {
        let live = executor.live.clone();
        let audit_log = Arc::new(std::sync::Mutex::new(audit_log));
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
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(String, String, Option<Request>, Reply)>();
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
                        let (request, outcome) =
                            handler.handle(&command, &p.payload, secs, std::time::Instant::now());
                        match outcome {
                            Outcome::Now(Some(reply)) => {
                                answer(&client, &live, &audit_log, &audit_topic, &p.topic, &command, request.as_ref(), &reply).await;
                            }
                            Outcome::Now(None) => {}
                            Outcome::Later(start) => {
                                let done = done_tx.clone();
                                let topic = p.topic.clone();
                                let (progress_client, reply_topic) = (client.clone(), format!("{topic}/reply"));
                                let progress: Progress = Arc::new(move |r: Reply| {
                                    let _ = progress_client.try_publish(&reply_topic, QoS::AtLeastOnce, false, r.to_json());
                                });
                                let work = start(progress);
                                tokio::spawn(async move {
                                    let reply = work.await;
                                    let _ = done.send((topic, command, request, reply));
                                });
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        warn!(error = %e, "remote commands: broker connection failed");
                        pause = Some(tokio::time::Instant::now() + backoff.next_delay());
                    }
                },
                Some((topic, command, request, reply)) = done_rx.recv() => {
                    let duplicates = handler.finished(&reply);
                    for _ in 0..=duplicates {
                        answer(&client, &live, &audit_log, &audit_topic, &topic, &command, request.as_ref(), &reply).await;
                    }
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What the task owning bus `b` does with the work queued on it.
    #[derive(Debug, Clone, Copy)]
    enum Bus {
        /// No task owns it.
        Absent,
        /// Its queue is full and it takes nothing.
        Full,
        /// It takes work and drops it unanswered (a task that died).
        DropsWork,
        /// It takes work and never answers (a line stuck on a stalling meter).
        Stalls,
        /// It answers: 230 V, the clock 5 s off and then set.
        Answers,
    }

    fn job() -> OnDemandRead {
        OnDemandRead {
            meter: "m1".into(),
            kind: OnDemandKind::SyncClock,
            reply: tokio::sync::oneshot::channel().0,
        }
    }

    /// The gateway's state with bus `b` behaving as told; what keeps it so is returned.
    fn gateway(bus: Bus) -> (Arc<LiveState>, Option<tokio::task::JoinHandle<()>>) {
        let live = Arc::new(LiveState::default());
        let task = match bus {
            Bus::Absent => None,
            Bus::Full => {
                let rx = live.on_demand_queue("b");
                let tx = live.on_demand("b").unwrap();
                while tx.try_send(Box::new(job())).is_ok() {}
                Some(tokio::spawn(async move {
                    let _taking_nothing = rx;
                    std::future::pending::<()>().await
                }))
            }
            Bus::DropsWork => {
                let mut rx = live.on_demand_queue("b");
                Some(tokio::spawn(
                    async move { while rx.recv().await.is_some() {} },
                ))
            }
            Bus::Stalls => {
                let mut rx = live.on_demand_queue("b");
                Some(tokio::spawn(async move {
                    let mut held = Vec::new();
                    while let Some(work) = rx.recv().await {
                        held.push(work);
                    }
                }))
            }
            Bus::Answers => {
                let mut rx = live.on_demand_queue("b");
                Some(tokio::spawn(async move {
                    while let Some(work) = rx.recv().await {
                        let _ = work.reply.send(OnDemandResult {
                            values: vec![("voltage_l1_v".into(), 230.0)],
                            clock_before: Some(5.0),
                            clock_after: Some(0.0),
                            ..OnDemandResult::default()
                        });
                    }
                }))
            }
        };
        (live, task)
    }

    fn executor(live: Arc<LiveState>) -> Executor {
        let meter = |id: &str, bus: &str| MeterRef {
            id: id.into(),
            bus: bus.into(),
            clock: true,
            freezes: true,
        };
        Executor {
            live,
            meters: vec![meter("m1", "b"), meter("m2", "gone")],
            relay_meters: vec![],
            relay_credentials: None,
        }
    }

    async fn reply_to(executor: &Executor, command: &str, args: &str) -> Reply {
        let request = Request::parse(
            command,
            format!(r#"{{"id":"r-1","ts":1764511200,"nonce":"0123456789abcdef","by":"ms","args":{args},"sig":"00"}}"#)
                .as_bytes(),
        )
        .unwrap();
        match executor.execute(&request) {
            Outcome::Now(reply) => reply.unwrap(),
            Outcome::Later(start) => start(Arc::new(|_| {})).await,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn work_a_bus_cannot_do_is_answered_with_the_reason_and_never_left_hanging() {
        let cases: Vec<(Bus, &str, &str, Status, &str)> = vec![
            (Bus::Answers, "read", r#"{"meter":"m1"}"#, Status::Ok, ""),
            (
                Bus::Absent,
                "read",
                r#"{"meter":"m1"}"#,
                Status::Failed,
                "bus b is not running",
            ),
            (
                Bus::Full,
                "read",
                r#"{"meter":"m1"}"#,
                Status::Failed,
                "too many reads waiting; try again",
            ),
            (
                Bus::DropsWork,
                "read",
                r#"{"meter":"m1"}"#,
                Status::Failed,
                "the bus stopped before it was done",
            ),
            (
                Bus::Stalls,
                "read",
                r#"{"meter":"m1"}"#,
                Status::Timeout,
                "no result within 30s",
            ),
            (
                Bus::Stalls,
                "recollect",
                r#"{"meter":"m1","from":"2026-11-20","to":"2026-11-26"}"#,
                Status::Failed,
                "no daily freezes in that range",
            ),
            // Two meters, one on a bus that is gone: the other is still set.
            (
                Bus::Answers,
                "timesync",
                r#"{"all":true}"#,
                Status::Failed,
                "1 of 2 meters set",
            ),
            (
                Bus::Stalls,
                "timesync",
                r#"{"meter":"m1"}"#,
                Status::Failed,
                "0 of 1 meters set",
            ),
        ];
        for (bus, command, args, status, reason) in cases {
            let (live, _task) = gateway(bus);
            let started = tokio::time::Instant::now();
            let reply = reply_to(&executor(live), command, args).await;
            let what = format!("{command} {args} with bus {bus:?}: {reply:?}");
            assert_eq!(reply.status, status, "{what}");
            assert!(
                reply.reason.as_deref().unwrap_or("").contains(reason),
                "{what}"
            );
            // Nothing waits longer than its bound (a recollect's is four reads').
            assert!(started.elapsed() <= READ_TIMEOUT * 4, "{what}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_meter_of_a_timesync_reports_its_own_outcome() {
        let (live, _task) = gateway(Bus::Answers);
        let reply = reply_to(&executor(live), "timesync", r#"{"all":true}"#).await;
        let result = reply.result.unwrap();
        assert_eq!(
            result["meters"],
            serde_json::json!([
                {"meter": "m1", "offset_before_s": 5.0, "offset_after_s": 0.0, "errors": []},
                {"meter": "m2", "errors": ["bus gone is not running"]},
            ])
        );
        // A stalled line: the error says how long was waited.
        let (live, _task) = gateway(Bus::Stalls);
        let reply = reply_to(
            &executor(live),
            "recollect",
            r#"{"all":true,"from":"2026-11-20","to":"2026-11-26"}"#,
        )
        .await;
        let meters = &reply.result.unwrap()["meters"];
        assert_eq!(
            meters[0]["errors"],
            serde_json::json!(["no result within 120s"])
        );
        assert_eq!(
            meters[1]["errors"],
            serde_json::json!(["bus gone is not running"])
        );
    }

    #[test]
    fn the_audit_file_past_8_mib_becomes_audit_jsonl_1_and_a_new_one_begins() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = AuditLog::new(dir.path());
        let old = dir.path().join("audit.jsonl.1");
        std::fs::write(&old, "the rotation before\n").unwrap();
        std::fs::File::create(&log.path)
            .unwrap()
            .set_len(AUDIT_MAX + 1)
            .unwrap();
        log.append("{\"id\":\"r-1\"}");
        assert_eq!(std::fs::metadata(&old).unwrap().len(), AUDIT_MAX + 1);
        assert_eq!(
            std::fs::read_to_string(&log.path).unwrap(),
            "{\"id\":\"r-1\"}\n"
        );
        assert!(!log.failed);
    }

    #[test]
    fn the_audit_file_survives_a_full_disk_with_whole_lines_and_takes_lines_again_after() {
        let disk = crate::testing::Tmpfs::mount(64 << 10);
        let mut log = AuditLog::new(disk.path());
        let first = serde_json::json!({"id": "r-1", "status": "ok"}).to_string();
        log.append(&first);
        assert!(!log.failed);
        disk.fill();
        // Longer than what is left of the file's last page: the disk takes part of it.
        let long = serde_json::json!({"id": "r-2", "reason": "x".repeat(8000)}).to_string();
        log.append(&long);
        assert!(log.failed, "the full disk is noticed");
        let text = std::fs::read_to_string(&log.path).unwrap();
        assert_eq!(text, format!("{first}\n"), "no torn line is left behind");
        disk.free();
        let third = serde_json::json!({"id": "r-3", "status": "ok"}).to_string();
        log.append(&third);
        assert!(!log.failed, "written again once there is room");
        let text = std::fs::read_to_string(&log.path).unwrap();
        assert_eq!(text, format!("{first}\n{third}\n"));
    }
}
