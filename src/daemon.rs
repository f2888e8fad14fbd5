//! `meterd run`: wires buses, the journal and the sinks, applies reloaded configs, and stops
//! them in order.
//!
//! Each bus and each sink runs under its own stop signal, so a reload can stop and restart
//! exactly what changed: an untouched bus keeps its task, its links and its schedule; a
//! restarted sink resumes from its journal cursor, so nothing journaled is lost.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tracing::{error, info, warn};

use crate::{
    alerts::{
        outbox::Outbox,
        rules::Engine,
        task::{AlertTask, Reconfigure},
        Notifier,
    },
    bus,
    config::{BusConfig, Config, ConfigErrors, InfluxConfig, MqttConfig},
    journal::{self, Journal},
    sinks::{self, SinkCtx, SinkStats},
    state::{LiveState, OutboxList, SinkInfo, SinkList},
};

/// A task with its own stop signal.
struct Running<C> {
    config: C,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl<C> Running<C> {
    /// Tell it to stop and wait until it has (a sink flushes for a few seconds first).
    async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            error!(error = %e, "task failed while stopping");
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

struct Daemon {
    log: Arc<Journal>,
    live: Arc<LiveState>,
    buses: BTreeMap<String, Running<BusConfig>>,
    sinks: BTreeMap<&'static str, Running<SinkConfig>>,
    stats: BTreeMap<&'static str, Arc<SinkStats>>,
    sink_list: SinkList,
    config: Config,
    /// Where alert outboxes and state live; None when the state directory is unusable.
    alert_dir: Option<PathBuf>,
    outboxes: OutboxList,
    notifiers: BTreeMap<String, Running<Notifier>>,
    firing: watch::Receiver<Vec<crate::alerts::rules::Alert>>,
    alert_ctl: mpsc::UnboundedSender<Reconfigure>,
}

/// Run one bus, restarting its task if it ever ends (a bug) before `stop`.
fn spawn_bus(b: BusConfig, log: Arc<Journal>, live: Arc<LiveState>) -> Running<BusConfig> {
    let (stop_tx, stop) = watch::channel(false);
    let config = b.clone();
    let name = b.name.clone();
    let stop2 = stop.clone();
    let task = supervise(name, stop, Duration::from_secs(1), move || {
        bus::run_bus(b.clone(), log.clone(), live.clone(), stop2.clone())
    });
    Running {
        config,
        stop: stop_tx,
        task,
    }
}

/// Run the task `start` makes until `stop`; if it ends before (returns, or panics where
/// panics unwind), log it at ERROR and start it again after `pause`.
fn supervise<F, Fut>(
    bus: String,
    stop: watch::Receiver<bool>,
    pause: Duration,
    mut start: F,
) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let r = tokio::spawn(start()).await;
            if *stop.borrow() {
                break;
            }
            let why = match r {
                Ok(()) => "returned".to_string(),
                Err(e) => e.to_string(),
            };
            error!(%bus, reason = %why, "bus task ended unexpectedly; restarting it");
            tokio::time::sleep(pause).await;
        }
    })
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

    fn start_sink(&mut self, name: &'static str, config: SinkConfig) {
        let cursor = self.log.cursor(name);
        let stats = self.stats.entry(name).or_default().clone();
        let (stop_tx, stop) = watch::channel(false);
        let log = self.log.clone();
        let live = self.live.clone();
        let ctx = |gateway: String, alerts: Option<Arc<Outbox>>| SinkCtx {
            gateway,
            log: log.clone(),
            cursor,
            stats: stats.clone(),
            alerts,
            live: live.clone(),
        };
        let task = match config.clone() {
            SinkConfig::Mqtt(m, gw, alerts) => {
                let outbox = alerts.then(|| self.outbox("mqtt"));
                tokio::spawn(sinks::mqtt::run(m, ctx(gw, outbox), stop))
            }
            SinkConfig::Influx(i, gw, alerts) => {
                let outbox = alerts.then(|| self.outbox("influxdb"));
                tokio::spawn(sinks::influx::run(i, ctx(gw, outbox), stop))
            }
            SinkConfig::Null => tokio::spawn(async move {
                let mut stop = stop;
                loop {
                    log.ack(cursor, log.end());
                    tokio::select! {
                        _ = log.wait_beyond(log.end()) => {}
                        _ = stop.changed() => break,
                    }
                }
            }),
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
        self.sinks.insert(
            name,
            Running {
                config,
                stop: stop_tx,
                task,
            },
        );
    }

    /// The outbox `name`, opened once and shared by whoever delivers it.
    fn outbox(&mut self, name: &str) -> Arc<Outbox> {
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
    fn alert_outboxes(&mut self, c: &Config) -> Vec<Arc<Outbox>> {
        let mut names: Vec<String> = c.alerts.notifiers.iter().map(|n| n.name.clone()).collect();
        if c.mqtt.is_some() && c.alerts.mqtt {
            names.push("mqtt".into());
        }
        if c.influx.is_some() && c.alerts.influxdb {
            names.push("influxdb".into());
        }
        names.iter().map(|n| self.outbox(n)).collect()
    }

    fn start_notifier(&mut self, n: Notifier, resend: Duration) {
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(crate::alerts::notify::run(
            n.clone(),
            self.outbox(&n.name),
            self.firing.clone(),
            resend,
            stop,
        ));
        self.notifiers.insert(
            n.name.clone(),
            Running {
                config: n,
                stop: stop_tx,
                task,
            },
        );
    }

    async fn stop_sink(&mut self, name: &'static str, removed: bool) {
        if let Some(r) = self.sinks.remove(name) {
            r.stop().await;
        }
        if removed {
            let cursor = self.log.cursor(name);
            self.log.release(cursor);
            self.sink_list
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|s| s.name != name);
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
        let mut kept = 0;
        let (mut started, mut restarted, mut stopped) = (Vec::new(), Vec::new(), Vec::new());
        let new_buses: BTreeMap<String, BusConfig> = new
            .buses
            .iter()
            .map(|b| (b.name.clone(), b.clone()))
            .collect();
        let names: Vec<String> = self.buses.keys().cloned().collect();
        for name in names {
            match new_buses.get(&name) {
                Some(b) if self.buses.get(&name).is_some_and(|r| r.config == *b) => kept += 1,
                other => {
                    if let Some(r) = self.buses.remove(&name) {
                        r.stop().await;
                    }
                    if other.is_some() {
                        restarted.push(name);
                    } else {
                        stopped.push(name);
                    }
                }
            }
        }
        // Meters and buses that are gone leave the API and metrics.
        self.live
            .retain(&|m| new.meter(m).is_some(), &|b| new_buses.contains_key(b));
        for (name, b) in new_buses {
            if !self.buses.contains_key(&name) {
                if !restarted.contains(&name) {
                    started.push(name.clone());
                }
                self.buses
                    .insert(name, spawn_bus(b, self.log.clone(), self.live.clone()));
            }
        }

        let new_sinks = Self::sink_configs(&new);
        let old_names: Vec<&'static str> = self.sinks.keys().copied().collect();
        for name in old_names {
            match new_sinks.get(name) {
                Some(c) if self.sinks.get(name).is_some_and(|r| r.config == *c) => {}
                Some(_) => {
                    self.stop_sink(name, false).await;
                    restarted.push(format!("sink {name}"));
                }
                None => {
                    self.stop_sink(name, true).await;
                    stopped.push(format!("sink {name}"));
                }
            }
        }
        for (name, c) in new_sinks {
            if !self.sinks.contains_key(name) {
                if !restarted.iter().any(|r| r == &format!("sink {name}")) {
                    started.push(format!("sink {name}"));
                }
                self.start_sink(name, c);
            }
        }
        // Alerts: notifiers whose settings changed restart; the engine gets the new rules.
        let resend_changed = self.config.alerts.resend != new.alerts.resend;
        let names: Vec<String> = self.notifiers.keys().cloned().collect();
        for name in names {
            let same = new
                .alerts
                .notifiers
                .iter()
                .any(|n| self.notifiers.get(&name).is_some_and(|r| r.config == *n));
            if !same || resend_changed {
                if let Some(r) = self.notifiers.remove(&name) {
                    r.stop().await;
                }
                let kept_name = new.alerts.notifiers.iter().any(|n| n.name == name);
                if kept_name {
                    restarted.push(format!("notifier {name}"));
                } else {
                    stopped.push(format!("notifier {name}"));
                }
            }
        }
        for n in new.alerts.notifiers.clone() {
            if !self.notifiers.contains_key(&n.name) {
                let name = format!("notifier {}", n.name);
                if !restarted.contains(&name) {
                    started.push(name);
                }
                self.start_notifier(n, new.alerts.resend);
            }
        }
        let outboxes = self.alert_outboxes(&new);
        let _ = self.alert_ctl.send(Reconfigure {
            rules: new.alerts.rules.clone(),
            meters: new.meter_infos(),
            outboxes,
        });
        info!(
            unchanged_buses = kept,
            started = ?started,
            restarted = ?restarted,
            stopped = ?stopped,
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
    let opts = journal::Options::new(config.journal.max_size, config.journal.memory as usize);
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
    let (firing_tx, firing) = watch::channel(Vec::new());
    let (alert_ctl, alert_ctl_rx) = mpsc::unbounded_channel();
    let mut d = Daemon {
        log: log.clone(),
        live: live.clone(),
        buses: BTreeMap::new(),
        sinks: BTreeMap::new(),
        stats: BTreeMap::new(),
        sink_list: SinkList::default(),
        config: config.clone(),
        alert_dir: alert_dir.clone(),
        outboxes: OutboxList::default(),
        notifiers: BTreeMap::new(),
        firing,
        alert_ctl,
    };
    let outboxes = d.alert_outboxes(&config);
    let (alerts_stop_tx, alerts_stop) = watch::channel(false);
    let alert_task = tokio::spawn(crate::alerts::task::run(
        AlertTask {
            engine: Engine::new(
                &config.gateway_id,
                config.alerts.rules.clone(),
                config.meter_infos(),
                std::time::SystemTime::now(),
            ),
            state_file: alert_dir.map(|d| d.join("state.json")),
            outboxes,
            firing: firing_tx,
            save_failing: Default::default(),
        },
        live.clone(),
        log.clone(),
        d.sink_list.clone(),
        live.readings(),
        alert_ctl_rx,
        alerts_stop,
    ));
    for n in config.alerts.notifiers.clone() {
        d.start_notifier(n, config.alerts.resend);
    }
    for (name, c) in Daemon::sink_configs(&config) {
        d.start_sink(name, c);
    }
    let (http_stop_tx, http_stop) = watch::channel(false);
    let http = tokio::spawn(crate::http::serve(
        config.http.listen,
        crate::http::HttpState {
            live: live.clone(),
            journal: log.clone(),
            sinks: d.sink_list.clone(),
            outboxes: d.outboxes.clone(),
        },
        http_stop,
    ));
    for b in config.buses.clone() {
        d.buses
            .insert(b.name.clone(), spawn_bus(b, log.clone(), live.clone()));
    }
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
    // Group commit in a task of its own (`journal::commit`).
    let (commit_stop_tx, commit_stop) = watch::channel(false);
    let group_commit = tokio::spawn(journal::commit::run(
        log.clone(),
        config.journal.fsync,
        commit_stop,
    ));
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
    let _ = alerts_stop_tx.send(true);
    let _ = alert_task.await;
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
    let _ = http_stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), http).await;
    // Never two syncs at once: the group commit ends before the final one.
    let _ = commit_stop_tx.send(true);
    let _ = group_commit.await;
    if let Err(e) = log.sync() {
        error!(error = %e, "final journal sync failed");
    }
    info!(readings = log.end(), "stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn a_bus_task_that_ends_or_panics_is_started_again_until_stopped() {
        let runs = Arc::new(AtomicU32::new(0));
        let (stop_tx, stop) = watch::channel(false);
        let (r, mut s) = (runs.clone(), stop.clone());
        let task = supervise("b".into(), stop, Duration::from_millis(1), move || {
            let n = r.fetch_add(1, Ordering::SeqCst);
            let mut s2 = s.clone();
            s = s.clone();
            async move {
                match n {
                    0 => {}
                    1 => panic!("a bug in the bus task"),
                    _ => {
                        let _ = s2.wait_for(|stop| *stop).await;
                    }
                }
            }
        });
        while runs.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops when told")
            .unwrap();
        assert_eq!(
            runs.load(Ordering::SeqCst),
            3,
            "returned, panicked, then ran until stopped"
        );
    }
}
