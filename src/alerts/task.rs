//! The alert task: feeds the engine readings and a status sample every second, hands each
//! event to every outbox, keeps the engine's state on disk, and shows active alerts.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::{mpsc, watch};
use tracing::{error, info, info_span, warn, Instrument};

use super::{
    outbox::Outbox,
    rules::{Alert, Engine, MeterInfo, Rule, Saved, State, Status},
};
use crate::{
    failing::Change,
    journal::Journal,
    state::{LiveState, SinkList},
};

/// A reload: new rules and meters, and the outboxes events now go to.
pub struct Reconfigure {
    pub rules: Vec<Rule>,
    pub meters: Vec<Arc<MeterInfo>>,
    pub outboxes: Vec<Arc<Outbox>>,
}

pub struct AlertTask {
    pub engine: Engine,
    /// Where the engine's state is kept (None: no usable state directory).
    pub state_file: Option<PathBuf>,
    pub outboxes: Vec<Arc<Outbox>>,
    /// The firing set, for notifiers that re-send it.
    pub firing: Arc<watch::Sender<Vec<Alert>>>,
    /// Saving the state fails (a full disk): logged when it starts and when it ends.
    pub save_failing: crate::failing::FailingSince,
    /// What the state file holds (as last written): an unchanged state is not written again
    /// (an idle gateway, flash that need not be rewritten every minute).
    pub saved: Vec<u8>,
}

impl AlertTask {
    /// Take back the previous run's state; resolves for alerts whose rule is gone go out.
    pub fn restore(&mut self) {
        let Some(path) = &self.state_file else { return };
        let saved = match std::fs::read(path) {
            Ok(b) => match serde_json::from_slice::<Saved>(&b) {
                Ok(s) => s,
                Err(e) => {
                    error!(file = %path.display(), error = %e, "alert state damaged; starting without it");
                    return;
                }
            },
            Err(_) => return,
        };
        let n = saved.alerts.len();
        let events = self.engine.restore(saved, SystemTime::now());
        if n > 0 {
            info!(firing = self.engine.firing().len(), "alert state restored");
        }
        self.deliver(events);
        // Restored alerts fire on without an event: Alertmanager must keep getting them.
        self.firing.send_replace(self.engine.firing());
    }

    fn save(&mut self) {
        let Some(path) = &self.state_file else { return };
        let bytes = match serde_json::to_vec(&self.engine.save()) {
            Ok(b) if b == self.saved => return,
            Ok(b) => Ok(b),
            Err(e) => Err(std::io::Error::other(e)),
        };
        let write = bytes.and_then(|b| {
            crate::files::write_atomically(path, &b)?;
            self.saved = b;
            Ok(())
        });
        match self.save_failing.record(&write) {
            Change::Failing => {
                error!(file = %path.display(), error = %self.save_failing.reason().unwrap_or_default(), "cannot save the alert state; it is kept in memory and saved when it can be")
            }
            Change::Recovered => info!(file = %path.display(), "alert state saved again"),
            Change::Same => {}
        }
    }

    /// Outboxes first, then the state: a crash in between repeats an event, never loses one.
    fn deliver(&mut self, events: Vec<Alert>) {
        if events.is_empty() {
            return;
        }
        for a in &events {
            match a.state {
                State::Firing => {
                    warn!(alert = a.name(), labels = %a.fingerprint(), summary = %a.summary, "alert firing")
                }
                _ => {
                    info!(alert = a.name(), labels = %a.fingerprint(), summary = %a.summary, "alert resolved")
                }
            }
        }
        for o in &self.outboxes {
            o.push(&events);
        }
        self.save();
        self.firing.send_replace(self.engine.firing());
    }
}

/// The status sample; every meter's last reading and availability only if `meters`.
fn status(
    live: &LiveState,
    log: &Journal,
    sinks: &SinkList,
    outboxes: &[Arc<Outbox>],
    meters: bool,
) -> Status {
    let mut sinks: std::collections::BTreeMap<String, Option<SystemTime>> = sinks
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|s| (s.name.clone(), s.stats.failing.since()))
        .collect();
    // Notifiers count as sinks of alerts: when Alertmanager is down, the others say so.
    for o in outboxes {
        sinks
            .entry(o.name.clone())
            .or_insert_with(|| o.failing.since());
    }
    Status {
        meters: meters.then(|| live.last_seen()),
        journal_used: log.used_fraction(),
        journal_dropped: log.dropped_total(),
        relay_refused: live
            .commands()
            .iter()
            .filter(|((c, st), _)| *c == "relay" && *st == "refused")
            .map(|(_, n)| *n)
            .sum(),
        journal_failure: log.failure(),
        sinks,
    }
}

/// At most this many readings judged in one turn of the alert task, so that its timers and
/// reconfiguration are never kept waiting behind a long queue.
const JUDGED_PER_TURN: usize = 256;

pub async fn run(
    mut t: AlertTask,
    live: Arc<LiveState>,
    log: Arc<Journal>,
    sinks: SinkList,
    mut readings: mpsc::Receiver<Arc<crate::reading::Reading>>,
    mut control: mpsc::UnboundedReceiver<Reconfigure>,
    mut stop: watch::Receiver<bool>,
) {
    async move {
        t.restore();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut save = tokio::time::interval(Duration::from_secs(60));
        let mut skipped_seen = 0;
        let mut meters_checked: Option<Instant> = None;
        loop {
            // Give way on the daemon's single thread, whatever the branches below do.
            tokio::task::consume_budget().await;
            let events = tokio::select! {
                Some(r) = readings.recv() => {
                    let now = SystemTime::now();
                    let mut ev = t.engine.on_reading(&r, now);
                    // Readings already waiting are judged in the same turn: a bus's burst
                    // costs one pass through this loop, not one each.
                    for _ in 0..JUDGED_PER_TURN {
                        let Ok(r) = readings.try_recv() else { break };
                        ev.extend(t.engine.on_reading(&r, now));
                    }
                    ev
                }
                _ = tick.tick() => {
                    let skipped = live.readings_skipped();
                    if skipped > skipped_seen {
                        warn!(skipped = skipped - skipped_seen, "alert engine fell behind the readings; some were not judged");
                        skipped_seen = skipped;
                    }
                    let sample = meters_checked
                        .is_none_or(|at: Instant| at.elapsed() >= t.engine.meter_check_every());
                    if sample {
                        meters_checked = Some(Instant::now());
                    }
                    let ev = t.engine.tick(&status(&live, &log, &sinks, &t.outboxes, sample), SystemTime::now());
                    live.set_alerts(t.engine.active());
                    ev
                }
                _ = save.tick() => {
                    // Counter baselines move with every reading; keep them every minute.
                    t.save();
                    continue;
                }
                Some(c) = control.recv() => {
                    t.outboxes = c.outboxes;
                    let ev = t.engine.reconfigure(c.rules, c.meters, SystemTime::now());
                    t.firing.send_replace(t.engine.firing());
                    ev
                }
                r = stop.changed() => {
                    if r.is_err() || *stop.borrow() {
                        break;
                    }
                    continue;
                }
            };
            if !events.is_empty() {
                t.deliver(events);
                live.set_alerts(t.engine.active());
            }
        }
        t.save();
    }
    .instrument(info_span!("alerts"))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn an_unchanged_alert_state_is_not_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut t = AlertTask {
            engine: Engine::new("gw", vec![], Vec::<MeterInfo>::new(), SystemTime::now()),
            state_file: Some(path.clone()),
            outboxes: vec![],
            firing: Arc::new(watch::channel(Vec::new()).0),
            save_failing: Default::default(),
            saved: Vec::new(),
        };
        t.save();
        // Each write replaces the file (write, then rename): a new inode.
        let first = std::fs::metadata(&path).unwrap().ino();
        t.save();
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), first);
        std::fs::remove_file(&path).unwrap();
        t.saved.clear();
        t.save();
        assert!(path.exists(), "a changed state is written");
    }
}
