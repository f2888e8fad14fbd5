//! Live state of every meter and bus, for availability messages, the CLI and the HTTP API.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
};

use tokio::{
    sync::{mpsc, watch},
    task::AbortHandle,
};

use crate::{alerts::rules::Alert, reading::Reading};

/// An on-demand read as its bus's queue holds it. Boxed: tokio's bounded channel allocates
/// its slots 32 at a time when it is made, and an `OnDemandRead` is 80 bytes, so every bus
/// held 2.6 KB for a queue that is nearly always empty (5.2 MB at 2,000 buses of one meter).
pub type OnDemandQueued = Box<OnDemandRead>;

/// Work on one meter now, for the task that owns its bus (the remote commands).
pub struct OnDemandRead {
    pub meter: String,
    pub kind: OnDemandKind,
    pub reply: tokio::sync::oneshot::Sender<OnDemandResult>,
}

/// What to do with the meter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnDemandKind {
    /// Read one point group by name (every group when `None` and no identifiers), and these
    /// identifiers (DL/T 645 DIs, DL/T 698.45 OADs).
    Read {
        group: Option<String>,
        identifiers: Vec<String>,
    },
    /// Set the meter's clock: read it, set it to the gateway's time (DL/T 645: broadcast;
    /// DL/T 698.45: SET 4000), read it again.
    SyncClock,
    /// Read back its daily freezes from `from` to `to` (days since the epoch, the meter's
    /// local calendar), journaled with their freeze times.
    Recollect { from: i64, to: i64 },
    /// Remote control of its supply relay, and the state read back.
    Relay {
        command: meterd_protocols::dlt645::request::RelayCommand,
        creds: meterd_protocols::dlt645::request::Credentials,
    },
}

/// A daily freeze's values, by quantity.
pub type FreezeValues = Vec<(Arc<str>, f64)>;

/// What an on-demand read got: the values (journaled like any reading, with this `seq`) and
/// the errors met, per group.
#[derive(Debug, Clone, Default)]
pub struct OnDemandResult {
    pub ts: Option<std::time::SystemTime>,
    pub seq: Option<u64>,
    pub values: Vec<(Arc<str>, f64)>,
    pub errors: Vec<String>,
    /// With `SyncClock`: the meter's clock offset before and after, in seconds.
    pub clock_before: Option<f64>,
    pub clock_after: Option<f64>,
    /// With identifiers: each one's decoded value (name, value, unit), or its error.
    pub identifiers: Vec<(String, serde_json::Value)>,
    /// With `Relay`: the relay's state read back after the command.
    pub relay: Option<meterd_protocols::dlt645::request::RelayState>,
    /// With `Recollect`: the freezes found, by freeze time.
    pub freezes: Vec<(std::time::SystemTime, FreezeValues)>,
}

/// Requests waiting per bus, at most: a master cannot queue more reads than a line could
/// answer in a few seconds.
pub const ON_DEMAND_QUEUE: usize = 16;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct MeterState {
    /// Shared by the meters of a bus.
    pub bus: Arc<str>,
    /// `None` until the first poll decided it.
    pub online: Option<bool>,
    pub polls: u64,
    pub timeouts: u64,
    pub link_errors: u64,
    pub exceptions: u64,
    /// The meter answers, but its last poll was refused in every request (exception or
    /// abnormal reply, no value): alive, yet it gives nothing (a wrong register map or
    /// identifiers it does not have).
    pub refusing: bool,
    pub last_error: Option<String>,
    pub last_reading: Option<Arc<Reading>>,
    /// The latest reading of each point group (by the group's index in the profile); see
    /// [`MeterState::last_values`]. Keeping the readings costs a pointer per poll, where a map
    /// of values cost an insert per value.
    pub last_by_group: Vec<Option<Arc<Reading>>>,
    /// How long polls of this meter held the bus (request to last reply, retries included).
    pub latency: Histogram,
}

impl MeterState {
    /// The latest value of every quantity, across point groups (a newer reading wins).
    pub fn last_values(&self) -> BTreeMap<Arc<str>, f64> {
        let mut latest: Vec<&Arc<Reading>> = self.last_by_group.iter().flatten().collect();
        latest.sort_by_key(|r| r.ts);
        latest
            .iter()
            .flat_map(|r| r.values.iter().map(|(q, v)| (q.clone(), v)))
            .collect()
    }

    /// Keep `r` as the latest reading of `group`.
    pub fn keep_reading(&mut self, group: usize, r: Arc<Reading>) {
        if self.last_by_group.len() <= group {
            self.last_by_group.resize(group + 1, None);
        }
        self.last_by_group[group] = Some(r.clone());
        self.last_reading = Some(r);
    }
}

/// Upper bounds of the poll latency buckets, in seconds (Prometheus `le`).
pub const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A Prometheus-style histogram: a count per bucket (not cumulative), the sum and the count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    pub buckets: [u64; LATENCY_BUCKETS.len()],
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&mut self, seconds: f64) {
        if let Some(i) = LATENCY_BUCKETS.iter().position(|le| seconds <= *le) {
            self.buckets[i] += 1;
        }
        self.sum += seconds;
        self.count += 1;
    }

    /// `(le, cumulative count)` per bucket, then `+Inf`.
    pub fn cumulative(&self) -> impl Iterator<Item = (String, u64)> + '_ {
        let mut acc = 0;
        LATENCY_BUCKETS
            .iter()
            .zip(self.buckets)
            .map(move |(le, n)| {
                acc += n;
                (le.to_string(), acc)
            })
            .chain(std::iter::once(("+Inf".to_string(), self.count)))
    }
}

// The long-lived tasks (see `daemon::supervise`), by name: restarts, and the running instance.

#[derive(Debug, Default)]
struct Entry {
    restarts: u64,
    running: Option<AbortHandle>,
}

/// The supervised tasks by name.
#[derive(Debug, Default)]
pub struct Tasks(Mutex<BTreeMap<String, Entry>>);

impl Tasks {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Restarts of each task since meterd started.
    pub fn restarts(&self) -> BTreeMap<String, u64> {
        self.lock()
            .iter()
            .map(|(k, e)| (k.clone(), e.restarts))
            .collect()
    }

    /// Names of the tasks running now.
    pub fn running(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, e)| e.running.is_some())
            .map(|(k, _)| k.clone())
            .collect()
    }

    pub(crate) fn started(&self, name: &str, running: AbortHandle) {
        self.lock().entry(name.to_string()).or_default().running = Some(running);
    }

    pub(crate) fn ended(&self, name: &str) {
        if let Some(e) = self.lock().get_mut(name) {
            e.running = None;
        }
    }

    pub(crate) fn restarted(&self, name: &str) {
        if let Some(e) = self.lock().get_mut(name) {
            e.restarts += 1;
        }
    }

    /// Abort the running instance of `name` (as a crash would end it); false if none runs.
    pub fn abort(&self, name: &str) -> bool {
        match self.lock().get(name).and_then(|e| e.running.as_ref()) {
            Some(h) => {
                h.abort();
                true
            }
            None => false,
        }
    }
}

// The sink registry: what is running, for the HTTP endpoints and the alert engine.

/// What a sink did, for `/metrics`.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Readings the far end confirmed.
    pub delivered: std::sync::atomic::AtomicU64,
    /// Readings (InfluxDB: batches) the far end refused for good and that were skipped.
    pub rejected: std::sync::atomic::AtomicU64,
    /// Failed attempts that will be retried (writes, connections).
    pub retries: std::sync::atomic::AtomicU64,
    /// Since when delivery has been failing, if it is.
    pub failing: crate::failing::FailingSince,
    /// From sampling time to confirmation, per reading.
    pub lag: Mutex<Histogram>,
    /// Report by exception: values not sent because they had not moved, and readings of
    /// which nothing was sent.
    pub values_left_out: std::sync::atomic::AtomicU64,
    pub readings_left_out: std::sync::atomic::AtomicU64,
}

impl SinkStats {
    /// Report by exception judged `r` and sends what `pick` keeps of it.
    pub fn left_out(&self, r: &crate::reading::Reading, pick: &crate::exception::Pick) {
        use std::sync::atomic::Ordering::Relaxed;
        let dropped = r
            .values
            .iter()
            .enumerate()
            .filter(|(i, (_, v))| v.is_finite() && !pick.keeps(*i))
            .count();
        self.values_left_out.fetch_add(dropped as u64, Relaxed);
        if *pick == crate::exception::Pick::Nothing {
            self.readings_left_out.fetch_add(1, Relaxed);
        }
    }

    /// The far end confirmed readings sampled at `sampled`, now: count them and their lag.
    pub fn confirmed(&self, sampled: impl IntoIterator<Item = std::time::SystemTime>) {
        let now = std::time::SystemTime::now();
        let mut lag = self.lag.lock().unwrap_or_else(|e| e.into_inner());
        let mut n = 0;
        for ts in sampled {
            lag.observe(now.duration_since(ts).map_or(0.0, |d| d.as_secs_f64()));
            n += 1;
        }
        drop(lag);
        self.delivered
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A sink as `/metrics` sees it.
#[derive(Clone)]
pub struct SinkInfo {
    pub name: String,
    pub cursor: crate::journal::CursorId,
    pub stats: Arc<SinkStats>,
}

/// The sinks currently running, shared with the HTTP endpoints.
pub type SinkList = Arc<std::sync::RwLock<Vec<SinkInfo>>>;

/// Every alert outbox opened, by name, shared with the HTTP endpoints.
pub type OutboxList = Arc<std::sync::RwLock<BTreeMap<String, Arc<crate::alerts::outbox::Outbox>>>>;

/// Fresh readings waiting for the alert engine, at most.
const READINGS_QUEUE: usize = 4096;

/// A bus as a whole.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BusState {
    /// Seconds the bus's links were busy, summed over links and divided by their number.
    pub busy_seconds: f64,
    /// Share of the last measuring window (10 s) the bus was busy, 0 to 1.
    pub utilisation: f64,
}

/// A meter's latest values of the quantities the status page's trends show.
pub type MainValues = [Option<f64>; crate::history::MAIN.len()];
/// Per bus, what the status page's trends record.
pub type BusSamples = BTreeMap<String, crate::history::BusSample>;

/// Shared state; `changed()` wakes whoever watches availability.
#[derive(Debug)]
pub struct LiveState {
    /// By meter id (`Arc<str>`: the alert engine's status sample copies every key). Boxed:
    /// the tree's nodes are about half full, and empty slots of a pointer cost less than
    /// empty slots of a `MeterState` (about 230 bytes).
    meters: Mutex<BTreeMap<Arc<str>, Box<MeterState>>>,
    buses: Mutex<BTreeMap<String, BusState>>,
    version: watch::Sender<u64>,
    /// Fresh readings, for the alert engine. A bounded queue, not a broadcast ring: a ring
    /// would keep its last few thousand readings alive in memory.
    readings: Mutex<Option<mpsc::Sender<Arc<Reading>>>>,
    /// Readings the alert engine could not take because its queue was full.
    readings_skipped: std::sync::atomic::AtomicU64,
    /// Alerts pending and firing, as the alert engine last saw them.
    alerts: Mutex<Vec<Alert>>,
    /// The long-lived tasks and their restarts.
    pub tasks: Arc<Tasks>,
    /// Remote commands by (command, status): `meterd_commands_total`.
    commands: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Each running bus's queue of on-demand reads.
    on_demand: Mutex<BTreeMap<String, mpsc::Sender<OnDemandQueued>>>,
    /// The latest remote-command audit events, newest last (the status page shows them).
    audit: Mutex<std::collections::VecDeque<serde_json::Value>>,
}

/// Audit events kept in memory for the status page (the file keeps them all).
pub const AUDIT_KEPT: usize = 50;

impl Default for LiveState {
    fn default() -> Self {
        LiveState {
            meters: Mutex::new(BTreeMap::new()),
            buses: Mutex::new(BTreeMap::new()),
            version: watch::channel(0).0,
            readings: Mutex::new(None),
            readings_skipped: Default::default(),
            tasks: Default::default(),
            alerts: Mutex::new(Vec::new()),
            commands: Mutex::new(BTreeMap::new()),
            on_demand: Mutex::new(BTreeMap::new()),
            audit: Mutex::new(std::collections::VecDeque::new()),
        }
    }
}

impl LiveState {
    /// A bus task takes its queue of on-demand reads (a new one each time it starts).
    pub fn on_demand_queue(&self, bus: &str) -> mpsc::Receiver<OnDemandQueued> {
        let (tx, rx) = mpsc::channel(ON_DEMAND_QUEUE);
        self.on_demand
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(bus.to_string(), tx);
        rx
    }

    /// Where to send an on-demand read for a meter on `bus`.
    pub fn on_demand(&self, bus: &str) -> Option<mpsc::Sender<OnDemandQueued>> {
        self.on_demand
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(bus)
            .cloned()
    }

    /// Keep a remote-command audit event for the status page.
    pub fn push_audit(&self, event: serde_json::Value) {
        let mut a = self.audit.lock().unwrap_or_else(|e| e.into_inner());
        if a.len() == AUDIT_KEPT {
            a.pop_front();
        }
        a.push_back(event);
    }

    /// The latest audit events, newest last.
    pub fn audit(&self) -> Vec<serde_json::Value> {
        self.audit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Count one remote command and how it ended.
    pub fn count_command(&self, command: &'static str, status: &'static str) {
        *self
            .commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((command, status))
            .or_insert(0) += 1;
    }

    /// Remote commands counted so far, by (command, status).
    pub fn commands(&self) -> Vec<((&'static str, &'static str), u64)> {
        self.commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<Arc<str>, Box<MeterState>>> {
        self.meters.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn update(&self, meter: &str, f: impl FnOnce(&mut MeterState)) {
        let changed = {
            let mut g = self.lock();
            let apply = |s: &mut MeterState| {
                let before = s.online;
                f(s);
                s.online != before
            };
            // One lookup on the hot path, and no key allocated.
            match g.get_mut(meter) {
                Some(s) => apply(s),
                None => apply(g.entry(meter.into()).or_default()),
            }
        };
        if changed {
            self.version.send_modify(|v| *v += 1);
        }
    }

    pub fn update_bus(&self, bus: &str, f: impl FnOnce(&mut BusState)) {
        let mut g = self.buses.lock().unwrap_or_else(|e| e.into_inner());
        match g.get_mut(bus) {
            Some(b) => f(b),
            None => f(g.entry(bus.to_string()).or_default()),
        }
    }

    pub fn buses(&self) -> BTreeMap<String, BusState> {
        self.buses.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Forget meters and buses a reload removed, so the API and metrics stop showing them.
    pub fn retain(&self, meters: &dyn Fn(&str) -> bool, buses: &dyn Fn(&str) -> bool) {
        self.lock().retain(|m, _| meters(m));
        self.buses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|b, _| buses(b));
        self.version.send_modify(|v| *v += 1);
    }

    /// A fresh reading (not one read back from a meter's memory) for whoever judges them.
    pub fn publish_reading(&self, r: Arc<Reading>) {
        let g = self.readings.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = g.as_ref() {
            if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(r) {
                self.readings_skipped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// The queue of fresh readings (one consumer: a new call replaces the previous queue).
    pub fn readings(&self) -> mpsc::Receiver<Arc<Reading>> {
        let (tx, rx) = mpsc::channel(READINGS_QUEUE);
        *self.readings.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        rx
    }

    /// Readings the alert engine did not judge because it fell behind.
    pub fn readings_skipped(&self) -> u64 {
        self.readings_skipped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn set_alerts(&self, alerts: Vec<Alert>) {
        *self.alerts.lock().unwrap_or_else(|e| e.into_inner()) = alerts;
    }

    pub fn alerts(&self) -> Vec<Alert> {
        self.alerts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// For the status page's trends: each meter's latest main values, and per bus its
    /// utilisation and its meters' polls, failures and summed poll time. One pass under the
    /// lock, copying only the few values the trends show.
    pub fn history_sample(&self) -> (Vec<(Arc<str>, MainValues)>, BusSamples) {
        let mut buses: BusSamples = self
            .buses()
            .into_iter()
            .map(|(name, b)| {
                let s = crate::history::BusSample {
                    utilisation: b.utilisation,
                    ..Default::default()
                };
                (name, s)
            })
            .collect();
        let meters_in = self.lock();
        let mut meters = Vec::with_capacity(meters_in.len());
        for (id, m) in meters_in.iter() {
            // A copy of seven numbers per meter, without allocating: this runs over every
            // meter every 30 s, also on a gateway that is otherwise idle.
            let mut main: MainValues = Default::default();
            let values = m
                .last_by_group
                .iter()
                .flatten()
                .flat_map(|r| r.values.iter());
            for (q, v) in values {
                if let Some(i) = crate::history::main_index(q) {
                    main[i] = Some(v);
                }
            }
            meters.push((id.clone(), main));
            let b = match buses.get_mut(&*m.bus) {
                Some(b) => b,
                None => buses.entry(m.bus.to_string()).or_default(),
            };
            b.polls += m.polls;
            b.failures += m.timeouts + m.link_errors + m.exceptions;
            b.poll_seconds += m.latency.sum;
        }
        (meters, buses)
    }

    /// `f` of every meter, in the order of their ids, under the lock: a copy of only what the
    /// caller needs, where [`LiveState::snapshot`] copies every meter whole.
    pub fn each_meter<T>(&self, mut f: impl FnMut(&str, &MeterState) -> T) -> Vec<T> {
        self.lock().iter().map(|(id, m)| f(id, m)).collect()
    }

    pub fn snapshot(&self) -> BTreeMap<String, MeterState> {
        self.lock()
            .iter()
            .map(|(m, s)| (m.to_string(), MeterState::clone(s)))
            .collect()
    }

    /// Per meter: when its last reading was taken and whether it answers (for the alert
    /// engine's status sample, without copying every meter's values).
    pub fn last_seen(&self) -> crate::alerts::rules::MeterSample {
        self.lock()
            .iter()
            .map(|(m, s)| (m.clone(), (s.last_reading.as_ref().map(|r| r.ts), s.online)))
            .collect()
    }

    /// A receiver that is marked changed whenever some meter's availability changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_values_span_point_groups_and_a_newer_reading_wins() {
        let reading = |secs: u64, values: &[(&str, f64)]| {
            Arc::new(Reading {
                meter: "m1".into(),
                bus: "b".into(),
                profile: "p".into(),
                ts: std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs),
                seq: 0,
                values: values.iter().map(|(q, v)| (Arc::from(*q), *v)).collect(),
                on_demand: false,
            })
        };
        let mut m = MeterState::default();
        m.keep_reading(0, reading(1, &[("voltage_l1_v", 1.0)]));
        m.keep_reading(
            1,
            reading(2, &[("voltage_l1_v", 2.0), ("energy_import_kwh", 5.0)]),
        );
        assert_eq!(m.last_values()["voltage_l1_v"], 2.0);
        m.keep_reading(0, reading(3, &[("voltage_l1_v", 3.0)]));
        let v = m.last_values();
        assert_eq!(v["voltage_l1_v"], 3.0);
        assert_eq!(v["energy_import_kwh"], 5.0);
        assert_eq!(
            m.last_reading.as_ref().map(|r| r.values.nums()[0]),
            Some(3.0)
        );
    }

    #[test]
    fn the_latency_histogram_counts_cumulatively_with_an_infinite_bucket() {
        let mut h = Histogram::default();
        for s in [0.003, 0.2, 0.2, 20.0] {
            h.observe(s);
        }
        let c: BTreeMap<String, u64> = h.cumulative().collect();
        assert_eq!(c["0.005"], 1);
        assert_eq!(c["0.1"], 1);
        assert_eq!(c["0.25"], 3);
        assert_eq!(c["10"], 3);
        assert_eq!(c["+Inf"], 4);
        assert!((h.sum - 20.403).abs() < 1e-9);
    }
}
