//! `meterd run`: wires buses, the journal and the sinks, applies reloaded configs, and stops
//! them in order.
//!
//! Every long-lived task runs under [`supervise`] (started again with back-off if it ends
//! early) and its own stop signal, so a reload can stop and restart exactly what changed
//! ([`reconcile`]): an untouched bus keeps its task, its links and its schedule; a restarted
//! sink resumes from its journal cursor, so nothing journaled is lost.

mod reconcile;
pub mod supervise;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::{
    alerts::{
        outbox::Outbox,
        rules::{Alert, Engine, MeterInfo, Rule},
        task::{AlertTask, Reconfigure},
        Notifier,
    },
    bus,
    config::{BusConfig, Config, ConfigErrors, InfluxConfig, MqttConfig, RemoteConfig},
    journal::{self, Journal},
    sinks::{self, SinkCtx, SinkStats},
    state::{LiveState, OutboxList, SinkInfo, SinkList},
};
use reconcile::{reconcile, Changes, Running};
pub use supervise::supervise;

/// Start `start` supervised as `name`, with its own stop signal.
fn spawn<C, F, Fut>(name: String, config: C, live: &Arc<LiveState>, start: F) -> Running<C>
where
    F: FnMut(watch::Receiver<bool>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (stop_tx, stop) = watch::channel(false);
    let mut start = start;
    let stop2 = stop.clone();
    let task = supervise(name, live.tasks.clone(), stop, move || start(stop2.clone()));
    Running {
        config,
        stop: stop_tx,
        task,
    }
}

/// What the alert engine is built from; kept current by reloads, so an engine started again
/// after a crash gets the rules and meters in effect.
struct AlertSettings {
    gateway: String,
    rules: Vec<Rule>,
    meters: Vec<Arc<MeterInfo>>,
    outboxes: Vec<Arc<Outbox>>,
}

/// The alert engine's shared parts: its settings, its control channel (a new one for each
/// instance), the firing set notifiers watch, and where its state is kept.
struct AlertEngine {
    settings: Mutex<AlertSettings>,
    control: Mutex<Option<mpsc::UnboundedSender<Reconfigure>>>,
    firing: Arc<watch::Sender<Vec<Alert>>>,
    state_file: Option<PathBuf>,
}

impl AlertEngine {
    /// A new instance's task: the engine from the current settings, restored from its file.
    fn instance(
        self: &Arc<Self>,
        live: &Arc<LiveState>,
        log: &Arc<Journal>,
        sinks: &SinkList,
        stop: watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.control.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        let s = self.settings.lock().unwrap_or_else(|e| e.into_inner());
        let task = AlertTask {
            engine: Engine::new(
                &s.gateway,
                s.rules.clone(),
                s.meters.clone(),
                std::time::SystemTime::now(),
            ),
            state_file: self.state_file.clone(),
            outboxes: s.outboxes.clone(),
            firing: self.firing.clone(),
            save_failing: Default::default(),
            saved: Vec::new(),
        };
        crate::alerts::task::run(
            task,
            live.clone(),
            log.clone(),
            sinks.clone(),
            live.readings(),
            rx,
            stop,
        )
    }

    /// New rules, meters and outboxes: kept for later instances, and sent to the running one.
    fn reconfigure(
        &self,
        rules: Vec<Rule>,
        meters: Vec<Arc<MeterInfo>>,
        outboxes: Vec<Arc<Outbox>>,
    ) {
        let mut s = self.settings.lock().unwrap_or_else(|e| e.into_inner());
        s.rules = rules.clone();
        s.meters = meters.clone();
        s.outboxes = outboxes.clone();
        if let Some(tx) = &*self.control.lock().unwrap_or_else(|e| e.into_inner()) {
            let _ = tx.send(Reconfigure {
                rules,
                meters,
                outboxes,
            });
        }
    }
}

/// A sink's settings, the gateway id and whether alert events go through it.
#[derive(Clone, PartialEq)]
enum SinkConfig {
    Mqtt(MqttConfig, String, bool),
    Influx(InfluxConfig, String, bool),
    /// No sink configured: acknowledge everything so the journal does not fill.
    Null,
}

/// The remote-commands task's settings: restarted when any of them changes on reload.
#[derive(Clone, PartialEq)]
struct RemoteTask {
    remote: RemoteConfig,
    mqtt: MqttConfig,
    gateway: String,
    meters: Vec<crate::remote::task::MeterRef>,
    state_dir: PathBuf,
}

struct Daemon {
    log: Arc<Journal>,
    live: Arc<LiveState>,
    buses: BTreeMap<String, Running<BusConfig>>,
    sinks: BTreeMap<&'static str, Running<SinkConfig>>,
    stats: Mutex<BTreeMap<&'static str, Arc<SinkStats>>>,
    sink_list: SinkList,
    config: Config,
    /// Where alert outboxes and state live; None when the state directory is unusable.
    alert_dir: Option<PathBuf>,
    outboxes: OutboxList,
    notifiers: BTreeMap<String, Running<Notifier>>,
    alerts: Arc<AlertEngine>,
    remote: BTreeMap<&'static str, Running<RemoteTask>>,
}

/// Run one bus under supervision.
fn spawn_bus(b: BusConfig, log: Arc<Journal>, live: Arc<LiveState>) -> Running<BusConfig> {
    let l = live.clone();
    spawn(format!("bus {}", b.name), b.clone(), &l, move |stop| {
        bus::run_bus(b.clone(), log.clone(), live.clone(), stop)
    })
}

/// The null sink: acknowledges everything so the journal does not fill.
async fn null_sink(log: Arc<Journal>, cursor: journal::CursorId, mut stop: watch::Receiver<bool>) {
    loop {
        log.ack(cursor, log.end());
        tokio::select! {
            _ = log.wait_beyond(log.end()) => {}
            _ = stop.changed() => break,
        }
    }
}

impl Daemon {
    fn sink_configs(c: &Config) -> BTreeMap<&'static str, SinkConfig> {
        let mut out = BTreeMap::new();
        if let Some(m) = &c.mqtt {
            out.insert(
                "mqtt",
                SinkConfig::Mqtt(m.clone(), c.gateway_id.clone(), c.alerts.mqtt),
            );
        }
        if let Some(i) = &c.influx {
            out.insert(
                "influxdb",
                SinkConfig::Influx(i.clone(), c.gateway_id.clone(), c.alerts.influxdb),
            );
        }
        if out.is_empty() {
            warn!("no [mqtt] and no [influxdb] section: readings are polled but go nowhere");
            out.insert("none", SinkConfig::Null);
        }
        out
    }

    /// Start sink `name`, supervised, at its journal cursor; list it for `/metrics`.
    fn start_sink(&self, name: &'static str, config: SinkConfig) -> Running<SinkConfig> {
        let cursor = self.log.cursor(name);
        let stats = self
            .stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name)
            .or_default()
            .clone();
        let outbox = match &config {
            SinkConfig::Mqtt(_, _, true) | SinkConfig::Influx(_, _, true) => {
                Some(self.outbox(name))
            }
            _ => None,
        };
        let (log, live) = (self.log.clone(), self.live.clone());
        let ctx = {
            let stats = stats.clone();
            move |gateway: &str| SinkCtx {
                gateway: gateway.to_string(),
                log: log.clone(),
                cursor,
                stats: stats.clone(),
                alerts: outbox.clone(),
                live: live.clone(),
            }
        };
        let task_name = format!("sink {name}");
        let running = match config.clone() {
            SinkConfig::Mqtt(m, gw, _) => {
                spawn(task_name, config.clone(), &self.live, move |stop| {
                    sinks::mqtt::run(m.clone(), ctx(&gw), stop)
                })
            }
            SinkConfig::Influx(i, gw, _) => {
                spawn(task_name, config.clone(), &self.live, move |stop| {
                    sinks::influx::run(i.clone(), ctx(&gw), stop)
                })
            }
            SinkConfig::Null => {
                let log = self.log.clone();
                spawn(task_name, config.clone(), &self.live, move |stop| {
                    null_sink(log.clone(), cursor, stop)
                })
            }
        };
        let mut list = self.sink_list.write().unwrap_or_else(|e| e.into_inner());
        list.retain(|s| s.name != name);
        if !matches!(config, SinkConfig::Null) {
            list.push(SinkInfo {
                name: name.to_string(),
                cursor,
                stats,
            });
        }
        running
    }

    /// Sink `name` is gone for good: its cursor holds nothing back, `/metrics` forgets it.
    fn remove_sink(&self, name: &'static str) {
        let cursor = self.log.cursor(name);
        self.log.release(cursor);
        self.sink_list
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|s| s.name != name);
    }

    /// The outbox `name`, opened once and shared by whoever delivers it.
    fn outbox(&self, name: &str) -> Arc<Outbox> {
        let dir = self.alert_dir.clone();
        self.outboxes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(match &dir {
                    Some(d) => Outbox::open(d, name),
                    None => Outbox::memory(name),
                })
            })
            .clone()
    }

    /// The outboxes alert events go to under config `c`.
    fn alert_outboxes(&self, c: &Config) -> Vec<Arc<Outbox>> {
        let mut names: Vec<String> = c.alerts.notifiers.iter().map(|n| n.name.clone()).collect();
        if c.mqtt.is_some() && c.alerts.mqtt {
            names.push("mqtt".into());
        }
        if c.influx.is_some() && c.alerts.influxdb {
            names.push("influxdb".into());
        }
        names.iter().map(|n| self.outbox(n)).collect()
    }

    fn start_remote(&self, t: RemoteTask) -> Running<RemoteTask> {
        let (task, live) = (t.clone(), self.live.clone());
        spawn("remote commands".into(), t, &self.live, move |stop| {
            let executor = crate::remote::task::Executor {
                live: live.clone(),
                meters: task.meters.clone(),
                relay_meters: task.remote.relay_meters.clone(),
                relay_credentials: task.remote.relay_credentials,
            };
            crate::remote::task::run(
                task.remote.clone(),
                task.mqtt.clone(),
                task.gateway.clone(),
                executor,
                crate::remote::task::AuditLog::new(&task.state_dir),
                stop,
            )
        })
    }

    fn start_notifier(&self, n: Notifier, resend: Duration) -> Running<Notifier> {
        let outbox = self.outbox(&n.name);
        let firing = self.alerts.firing.subscribe();
        let notifier = n.clone();
        spawn(format!("notifier {}", n.name), n, &self.live, move |stop| {
            crate::alerts::notify::run(
                notifier.clone(),
                outbox.clone(),
                firing.clone(),
                resend,
                stop,
            )
        })
    }

    /// Make what runs match `new` (at start-up: start everything). Sinks and notifiers
    /// first, buses last, so nothing polled waits long for a sink.
    async fn reconcile_all(&mut self, new: &Config, changes: &mut Changes) {
        let mut sinks = std::mem::take(&mut self.sinks);
        let mut sink_changes = Changes::default();
        reconcile(
            &mut sinks,
            Self::sink_configs(new),
            "sink",
            false,
            &mut sink_changes,
            |name, c| self.start_sink(name, c),
            |name| self.remove_sink(name),
        )
        .await;
        self.sinks = sinks;

        // Notifiers restart when their settings change, or all of them when `resend` does.
        let mut notifiers = std::mem::take(&mut self.notifiers);
        let mut notifier_changes = Changes::default();
        let resend = new.alerts.resend;
        reconcile(
            &mut notifiers,
            new.alerts
                .notifiers
                .iter()
                .map(|n| (n.name.clone(), n.clone()))
                .collect(),
            "notifier",
            self.config.alerts.resend != resend,
            &mut notifier_changes,
            |_, n| self.start_notifier(n, resend),
            |_| {},
        )
        .await;
        self.notifiers = notifiers;

        let mut remote = std::mem::take(&mut self.remote);
        let mut remote_changes = Changes::default();
        let wanted: BTreeMap<&'static str, RemoteTask> = match (&new.remote, &new.mqtt) {
            (Some(r), Some(m)) if !r.commands.is_empty() => [(
                "commands",
                RemoteTask {
                    remote: r.clone(),
                    mqtt: m.clone(),
                    gateway: new.gateway_id.clone(),
                    state_dir: new.state_dir.clone(),
                    meters: new
                        .buses
                        .iter()
                        .flat_map(|b| {
                            b.meters.iter().map(|m| crate::remote::task::MeterRef {
                                id: m.id.clone(),
                                bus: b.name.clone(),
                                clock: m.profile.groups.iter().any(|g| g.clock),
                                freezes: m.profile.groups.iter().any(|g| g.daily_freeze),
                            })
                        })
                        .collect(),
                },
            )]
            .into(),
            _ => BTreeMap::new(),
        };
        reconcile(
            &mut remote,
            wanted,
            "remote",
            false,
            &mut remote_changes,
            |_, t| self.start_remote(t),
            |_| {},
        )
        .await;
        self.remote = remote;

        let mut buses = std::mem::take(&mut self.buses);
        let wanted: BTreeMap<String, BusConfig> = new
            .buses
            .iter()
            .map(|b| (b.name.clone(), b.clone()))
            .collect();
        reconcile(
            &mut buses,
            wanted,
            "",
            false,
            changes,
            |_, b| spawn_bus(b, self.log.clone(), self.live.clone()),
            |_| {},
        )
        .await;
        self.buses = buses;
        for c in [sink_changes, notifier_changes, remote_changes] {
            changes.started.extend(c.started);
            changes.restarted.extend(c.restarted);
            changes.stopped.extend(c.stopped);
        }
    }

    /// Apply a reloaded config: restart what changed, leave the rest running.
    async fn apply(&mut self, mut new: Config) {
        let old = &self.config;
        if old.gateway_id != new.gateway_id {
            warn!(
                running = %old.gateway_id,
                new = %new.gateway_id,
                "reload: gateway.id changes only at a restart (topics, tags and alert labels follow it); the old one stays in effect"
            );
            new.gateway_id = old.gateway_id.clone();
        }
        for (what, same) in [
            ("state_dir", old.state_dir == new.state_dir),
            ("journal", old.journal == new.journal),
            ("http", old.http == new.http),
        ] {
            if !same {
                warn!(
                    section = what,
                    "reload: this setting changes only at a restart; the old one stays in effect"
                );
            }
        }
        // Meters and buses that are gone leave the API and metrics.
        self.live.retain(&|m| new.meter(m).is_some(), &|b| {
            new.buses.iter().any(|x| x.name == b)
        });
        let mut changes = Changes::default();
        self.reconcile_all(&new, &mut changes).await;
        self.alerts.reconfigure(
            new.alerts.rules.clone(),
            new.meter_infos(),
            self.alert_outboxes(&new),
        );
        info!(
            unchanged_buses = changes.kept,
            started = ?changes.started,
            restarted = ?changes.restarted,
            stopped = ?changes.stopped,
            "config reloaded"
        );
        let Config {
            state_dir,
            journal,
            http,
            ..
        } = std::mem::replace(&mut self.config, new);
        // What needs a restart keeps its running value, so a later reload compares with it.
        self.config.state_dir = state_dir;
        self.config.journal = journal;
        self.config.http = http;
    }
}

/// Run until `stop` turns true: stop polling, let the sinks flush for a few seconds, publish
/// the gateway offline, return. Each item from `reloads` is the result of re-reading the
/// config (SIGHUP): a valid one is applied, an invalid one is logged and the old one kept.
pub async fn run(
    config: Config,
    live: Arc<LiveState>,
    mut stop: watch::Receiver<bool>,
    mut reloads: mpsc::UnboundedReceiver<Result<Config, ConfigErrors>>,
) {
    // The soft descriptor limit up to the hard one (systemd's default soft limit is 1,024;
    // the unit sets LimitNOFILE). Best effort: where it is not allowed the limit stays.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => info!(limit = n, "open files"),
        Err(e) => warn!(error = %e, "cannot raise the open-files limit"),
    }
    let journal_dir = config.state_dir.join("journal");
    let opts = journal::Options {
        cursor_every: config.journal.cursor_sync,
        ..journal::Options::new(config.journal.max_size, config.journal.memory as usize)
    };
    let log = match Journal::open(&journal_dir, opts.clone()) {
        Ok((j, report)) => {
            if report.truncated_bytes > 0 || report.skipped_regions > 0 {
                warn!(
                    truncated_bytes = report.truncated_bytes,
                    skipped_regions = report.skipped_regions,
                    "journal recovered from damage (see the lines above)"
                );
            }
            Arc::new(j)
        }
        Err(e) => {
            // Not fatal: a crash loop would stop polling too. Polling and delivery go on from
            // memory; the state is visible (and alertable) until the directory is fixed.
            error!(error = %e, "journal unavailable: readings are kept in memory only; fix the state directory");
            Arc::new(Journal::unavailable(opts.memory, e.to_string()))
        }
    };

    let alert_dir = config.state_dir.join("alerts");
    let alert_dir = match std::fs::create_dir_all(&alert_dir) {
        Ok(()) => Some(alert_dir),
        Err(e) => {
            error!(dir = %alert_dir.display(), error = %e, "alert state kept in memory only");
            None
        }
    };
    let mut d = Daemon {
        log: log.clone(),
        live: live.clone(),
        buses: BTreeMap::new(),
        sinks: BTreeMap::new(),
        stats: Mutex::new(BTreeMap::new()),
        sink_list: SinkList::default(),
        config: config.clone(),
        alert_dir: alert_dir.clone(),
        outboxes: OutboxList::default(),
        notifiers: BTreeMap::new(),
        remote: BTreeMap::new(),
        alerts: Arc::new(AlertEngine {
            settings: Mutex::new(AlertSettings {
                gateway: config.gateway_id.clone(),
                rules: config.alerts.rules.clone(),
                meters: config.meter_infos(),
                outboxes: Vec::new(),
            }),
            control: Mutex::new(None),
            firing: Arc::new(watch::channel(Vec::new()).0),
            state_file: alert_dir.map(|d| d.join("state.json")),
        }),
    };
    d.alerts
        .settings
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .outboxes = d.alert_outboxes(&config);
    let alert_task = {
        let (alerts, live, log, sinks) = (
            d.alerts.clone(),
            live.clone(),
            log.clone(),
            d.sink_list.clone(),
        );
        spawn("alert engine".into(), (), &d.live, move |stop| {
            alerts.instance(&live, &log, &sinks, stop)
        })
    };
    let mut changes = Changes::default();
    d.reconcile_all(&config, &mut changes).await;
    let http = {
        let state = crate::http::HttpState {
            history: Default::default(),
            live: live.clone(),
            journal: log.clone(),
            sinks: d.sink_list.clone(),
            outboxes: d.outboxes.clone(),
        };
        let listen = config.http.listen;
        spawn("http".into(), (), &d.live, move |stop| {
            crate::http::serve(listen, state.clone(), stop)
        })
    };
    // Group commit in a task of its own (`journal::commit`).
    let group_commit = {
        let (log, every) = (log.clone(), config.journal.fsync);
        spawn("group commit".into(), (), &d.live, move |stop| {
            journal::commit::run(log.clone(), every, stop)
        })
    };
    info!(
        gateway = %config.gateway_id,
        buses = config.buses.len(),
        meters = config.buses.iter().map(|b| b.meters.len()).sum::<usize>(),
        "meterd running"
    );

    // systemd: ready once the journal is open and the buses and sinks are started; then
    // WATCHDOG=1 from this loop at half the watchdog interval.
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let mut watchdog_usec = 0;
    let watchdog = sd_notify::watchdog_enabled(false, &mut watchdog_usec);
    let mut watchdog_tick =
        tokio::time::interval(Duration::from_micros((watchdog_usec / 2).max(100_000)));
    loop {
        tokio::select! {
            _ = watchdog_tick.tick(), if watchdog => {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            }
            Some(reloaded) = reloads.recv() => match reloaded {
                Ok(new) => {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
                    d.apply(new).await;
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
                }
                Err(errors) => {
                    for e in &errors.0 {
                        error!(problem = %e, "reload: config invalid");
                    }
                    error!(problems = errors.0.len(), "reload refused: the config has errors; still running the previous one");
                }
            },
            r = stop.changed() => {
                if r.is_err() || *stop.borrow() {
                    break;
                }
            }
        }
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    info!("stopping: polling ends, sinks flush");
    for r in d.buses.values() {
        let _ = r.stop.send(true);
    }
    for (_, r) in std::mem::take(&mut d.buses) {
        let _ = r.task.await;
    }
    alert_task.stop().await;
    for r in d.sinks.values() {
        let _ = r.stop.send(true);
    }
    for r in d.notifiers.values() {
        let _ = r.stop.send(true);
    }
    for (_, r) in std::mem::take(&mut d.notifiers) {
        let _ = r.task.await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(6), async {
        for (_, r) in std::mem::take(&mut d.sinks) {
            let _ = r.task.await;
        }
    })
    .await;
    let _ = http.stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), http.task).await;
    // Never two syncs at once: the group commit ends before the final one.
    group_commit.stop().await;
    if let Err(e) = log.sync() {
        error!(error = %e, "final journal sync failed");
    }
    info!(readings = log.end(), "stopped");
}
