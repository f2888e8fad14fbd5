//! Alert rules and their state: pure logic, time passed in.
//!
//! Every rule turns what it sees into a condition per alert key (a meter, a meter's quantity,
//! a bus, a sink): `Bad` (outside the threshold), `Good` (back inside the clear level) or
//! `Hold` (inside the hysteresis band, or nothing to judge by). One state machine serves all
//! rules:
//!
//! ```text
//!   inactive ──Bad──► pending ──Bad for `for`──► firing ──Good──► resolved (removed)
//!       ▲                │ Good/Hold                 │ Bad/Hold: stays firing
//!       └────────────────┘                           │
//! ```
//!
//! Events (a counter that went backwards, readings dropped) fire at once and resolve by
//! themselves after `hold` without a new occurrence. An event is emitted only on the
//! transitions into firing and out of it: nothing is repeated while a condition persists.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};

use crate::reading::Reading;

mod judge;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// Which meters a rule looks at. Empty lists match everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scope {
    pub meters: Vec<String>,
    pub buses: Vec<String>,
    pub profiles: Vec<String>,
    /// Every one of these must be among the meter's labels.
    pub labels: BTreeMap<String, String>,
}

impl Scope {
    pub fn matches(&self, m: &MeterInfo) -> bool {
        (self.meters.is_empty() || self.meters.contains(&m.id))
            && (self.buses.is_empty() || self.buses.contains(&m.bus))
            && (self.profiles.is_empty() || self.profiles.contains(&m.profile))
            && self.labels.iter().all(|(k, v)| m.labels.get(k) == Some(v))
    }
}

/// What the engine knows of a configured meter.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterInfo {
    pub id: String,
    pub bus: String,
    pub profile: String,
    pub labels: BTreeMap<String, String>,
    /// Its shortest polling interval.
    pub interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A quantity (a `*` pattern matches several, each its own alert) above or below a level;
    /// it clears on the other side of `clear`.
    Threshold {
        quantity: Arc<str>,
        above: Option<f64>,
        below: Option<f64>,
        clear: f64,
    },
    /// No reading for `intervals` polling intervals.
    MeterOffline { intervals: u32 },
    /// No meter on the bus answers.
    BusDown,
    /// One phase voltage below `below_v` while another is above `others_above_v`.
    PhaseLoss { below_v: f64, others_above_v: f64 },
    /// `power_w` below `below_w` (export where there should be none); clears at `clear_w`.
    ReversePower { below_w: f64, clear_w: f64 },
    /// An `energy_*` counter went backwards by more than `tolerance` or grew faster than
    /// `max_rate_kw` (kWh per hour) would allow.
    EnergyCounter {
        max_rate_kw: f64,
        tolerance: f64,
        hold: Duration,
    },
    /// `meter_clock_offset_s` beyond `max_s` either way; clears inside `clear_s`.
    ClockDrift { max_s: f64, clear_s: f64 },
    /// The journal holds more than `above_percent` of `journal.max_size`.
    JournalFilling {
        above_percent: f64,
        clear_percent: f64,
    },
    /// The journal was full and dropped undelivered readings.
    JournalDropping { hold: Duration },
    /// The journal cannot be written (readings only in memory).
    JournalUnwritable,
    /// A sink has failed to deliver for longer than the rule's `for`.
    SinkUnreachable,
    /// A remote relay command was refused (forged, replayed, for a meter not listed…).
    RelayRefused { hold: Duration },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// The `alertname` label.
    pub name: String,
    pub kind: Kind,
    /// How long the condition must hold before the alert fires.
    pub for_: Duration,
    pub severity: Severity,
    pub scope: Scope,
    /// Extra labels on every alert of the rule.
    pub labels: BTreeMap<String, String>,
    /// `{meter}`, `{bus}`, `{quantity}`, `{value}`, `{threshold}`, `{alertname}`,
    /// `{severity}`, `{gateway}`, `{sink}`, `{phase}` are replaced.
    pub summary: Option<String>,
}

/// Per meter: when its last reading was taken, and whether it answers (None: not yet known).
pub type MeterSample = BTreeMap<Arc<str>, (Option<SystemTime>, Option<bool>)>;

/// The state of the world that readings do not carry, sampled every tick.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// Per meter: when its last reading was taken, and whether it answers (None: not yet known).
    /// `None` for the whole map: not sampled this time ([`Engine::meter_check_every`]); the
    /// meter and bus rules are left as they are.
    pub meters: Option<MeterSample>,
    /// Share of `journal.max_size` in use, 0 to 1.
    pub journal_used: f64,
    /// Readings dropped by the journal since the start, over all sinks.
    pub journal_dropped: u64,
    /// Remote relay commands refused since the start.
    pub relay_refused: u64,
    pub journal_failure: Option<String>,
    /// Per sink: failing since when, if failing.
    pub sinks: BTreeMap<String, Option<SystemTime>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Firing,
    Resolved,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Firing => "firing",
            State::Resolved => "resolved",
        }
    }
}

/// An alert as notifiers and the API see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// gateway, alertname, severity, and meter/bus/quantity/phase/sink where they apply,
    /// plus the rule's own labels.
    pub labels: BTreeMap<String, String>,
    pub state: State,
    pub value: f64,
    pub threshold: f64,
    /// When the condition began.
    #[serde(with = "humantime_serde")]
    pub since: SystemTime,
    /// When it fired (firing) or resolved (resolved).
    #[serde(with = "humantime_serde")]
    pub at: Option<SystemTime>,
    pub summary: String,
    /// Events: resolves by itself at this time without a new occurrence.
    #[serde(default, with = "humantime_serde")]
    pub until: Option<SystemTime>,
}

impl Alert {
    pub fn name(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }

    /// A stable identity: the labels, as Alertmanager identifies an alert.
    pub fn fingerprint(&self) -> String {
        self.labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

enum Cond {
    Bad { value: f64, threshold: f64 },
    Good,
    Hold,
}

/// Persisted between runs: active alerts and counter baselines.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    pub alerts: Vec<(String, Alert)>,
    /// (meter, quantity) → last value and when it was read, unix ms.
    pub counters: Vec<(String, String, f64, u64)>,
}

/// A meter's energy counters: each one's last value and its time. A list searched in order
/// (a meter has a handful; names that are the profile's `Arc` compare by pointer), in space
/// of exactly its length: a `BTreeMap` took a 456-byte node per meter whatever the count.
#[derive(Debug, Default, Clone)]
pub(crate) struct Counters(Vec<(Arc<str>, (f64, SystemTime))>);

impl Counters {
    pub(crate) fn get_mut(&mut self, q: &str) -> Option<&mut (f64, SystemTime)> {
        self.0
            .iter_mut()
            .find(|(name, _)| {
                (std::ptr::eq(name.as_ptr(), q.as_ptr()) && name.len() == q.len()) || &**name == q
            })
            .map(|(_, last)| last)
    }

    pub(crate) fn insert(&mut self, q: Arc<str>, v: f64, at: SystemTime) {
        self.0.reserve_exact(1);
        self.0.push((q, (v, at)));
    }
}

pub struct Engine {
    gateway: String,
    rules: Vec<Rule>,
    /// By id: looked up for every reading (a hash, not a dozen string comparisons).
    meters: HashMap<String, Arc<MeterInfo>>,
    /// Key: rule name plus the target's labels.
    active: BTreeMap<String, (usize, Alert)>,
    /// meter → its counters' last values and their times (nested so a lookup allocates
    /// nothing; by hash: looked up for every reading with energy counters).
    counters: HashMap<String, Counters>,
    started: SystemTime,
    dropped_seen: u64,
    relay_refused_seen: u64,
    /// Reused for alert keys (see `observe`).
    key_buf: String,
}

use crate::contract::unix_ms as ms;

fn by_id(
    meters: impl IntoIterator<Item = impl Into<Arc<MeterInfo>>>,
) -> HashMap<String, Arc<MeterInfo>> {
    meters
        .into_iter()
        .map(|m| {
            let m = m.into();
            (m.id.clone(), m)
        })
        .collect()
}

/// `*` matches any run of characters.
pub fn glob(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((head, rest)) => {
            let Some(tail) = s.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len())
                .filter(|i| tail.is_char_boundary(*i))
                .any(|i| glob(rest, &tail[i..]))
        }
    }
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn default_summary(kind: &Kind) -> &'static str {
    match kind {
        Kind::Threshold { above: Some(_), .. } => {
            "{meter}: {quantity} is {value}, above {threshold}"
        }
        Kind::Threshold { .. } => "{meter}: {quantity} is {value}, below {threshold}",
        Kind::MeterOffline { .. } => {
            "{meter} on {bus}: no reading for {value} s (limit {threshold} s)"
        }
        Kind::BusDown => "bus {bus}: none of its {threshold} meters answers",
        Kind::PhaseLoss { .. } => "{meter}: phase {phase} at {value} V while the others are live",
        Kind::ReversePower { .. } => "{meter}: power flows backwards, {value} W",
        Kind::EnergyCounter { .. } => "{meter}: {quantity} went from {threshold} to {value}",
        Kind::ClockDrift { .. } => "{meter}: clock off by {value} s (limit {threshold} s)",
        Kind::JournalFilling { .. } => {
            "journal {value} % full (limit {threshold} %): a sink is not keeping up"
        }
        Kind::JournalDropping { .. } => "journal dropped {value} undelivered readings (full, or unwritable with its memory full)",
        Kind::JournalUnwritable => "journal cannot be written: readings are only in memory",
        Kind::SinkUnreachable => "sink {sink} has failed to deliver for {value} s",
        Kind::RelayRefused { .. } => "{value} remote relay command(s) refused: see the audit topic",
    }
}

impl Engine {
    /// `meters` as they are or shared (`Arc`s, as the daemon keeps them).
    pub fn new(
        gateway: &str,
        rules: Vec<Rule>,
        meters: impl IntoIterator<Item = impl Into<Arc<MeterInfo>>>,
        now: SystemTime,
    ) -> Engine {
        Engine {
            gateway: gateway.to_string(),
            rules,
            meters: by_id(meters),
            active: BTreeMap::new(),
            counters: HashMap::new(),
            started: now,
            dropped_seen: 0,
            relay_refused_seen: 0,
            key_buf: String::new(),
        }
    }

    /// Alerts pending and firing, ordered by key.
    pub fn active(&self) -> Vec<Alert> {
        self.active.values().map(|(_, a)| a.clone()).collect()
    }

    pub fn firing(&self) -> Vec<Alert> {
        self.active
            .values()
            .filter(|(_, a)| a.state == State::Firing)
            .map(|(_, a)| a.clone())
            .collect()
    }

    pub fn save(&self) -> Saved {
        let mut saved = Saved {
            alerts: self
                .active
                .iter()
                .filter(|(_, (_, a))| a.state == State::Firing)
                .map(|(k, (_, a))| (k.clone(), a.clone()))
                .collect(),
            counters: self
                .counters
                .iter()
                .flat_map(|(m, qs)| {
                    qs.0.iter()
                        .map(move |(q, (v, t))| (m.clone(), q.to_string(), *v, ms(*t)))
                })
                .collect(),
        };
        // In meter order, whatever the map's: the file reads the same for the same state.
        saved
            .counters
            .sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        saved
    }

    /// Take back what a previous run saved. Firing alerts stay firing without a new event
    /// (no second page after a restart); those whose rule or meter is gone are resolved.
    pub fn restore(&mut self, saved: Saved, now: SystemTime) -> Vec<Alert> {
        for (m, q, v, t) in saved.counters {
            let at = SystemTime::UNIX_EPOCH + Duration::from_millis(t);
            let counters = self.counters.entry(m).or_default();
            match counters.get_mut(&q) {
                Some(last) => *last = (v, at),
                None => counters.insert(q.into(), v, at),
            }
        }
        let mut out = Vec::new();
        for (key, a) in saved.alerts {
            match self.rules.iter().position(|r| r.name == a.name()) {
                Some(i) if self.target_exists(&a) => {
                    self.active.insert(key, (i, a));
                }
                _ => out.push(resolved(a, now)),
            }
        }
        out
    }

    /// New rules and meters (a reload). Alerts of rules or meters that are gone resolve.
    pub fn reconfigure(
        &mut self,
        rules: Vec<Rule>,
        meters: impl IntoIterator<Item = impl Into<Arc<MeterInfo>>>,
        now: SystemTime,
    ) -> Vec<Alert> {
        self.rules = rules;
        self.meters = by_id(meters);
        let meters = &self.meters;
        self.counters.retain(|m, _| meters.contains_key(m));
        let active = std::mem::take(&mut self.active);
        let mut out = Vec::new();
        for (key, (_, a)) in active {
            match self.rules.iter().position(|r| r.name == a.name()) {
                Some(i) if self.target_exists(&a) => {
                    self.active.insert(key, (i, a));
                }
                _ if a.state == State::Firing => out.push(resolved(a, now)),
                _ => {}
            }
        }
        out
    }

    fn target_exists(&self, a: &Alert) -> bool {
        match a.labels.get("meter") {
            Some(m) => self.meters.contains_key(m),
            None => match a.labels.get("bus") {
                Some(b) => self.meters.values().any(|m| &m.bus == b),
                None => true,
            },
        }
    }

    fn labels(&self, rule: &Rule, target: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut l: BTreeMap<String, String> = rule.labels.clone();
        l.insert("gateway".into(), self.gateway.clone());
        l.insert("alertname".into(), rule.name.clone());
        l.insert("severity".into(), rule.severity.as_str().into());
        for (k, v) in target {
            l.insert((*k).into(), (*v).into());
        }
        l
    }

    /// Move one alert along its state machine. `target` names what the alert is about
    /// (meter, bus, quantity, …); labels are built only when an alert starts.
    fn observe(
        &mut self,
        rule: usize,
        target: &[(&str, &str)],
        cond: Cond,
        now: SystemTime,
        out: &mut Vec<Alert>,
    ) {
        if self.active.is_empty() && !matches!(cond, Cond::Bad { .. }) {
            // Nothing pending or firing, and nothing starts: the usual case, decided without
            // building a key.
            return;
        }
        // The key is built in a buffer kept for the purpose: no allocation per value judged.
        let mut key = std::mem::take(&mut self.key_buf);
        self.key_into(rule, target, &mut key);
        self.observe_keyed(rule, target, &key, cond, now, out);
        self.key_buf = key;
    }

    /// The key of an alert: its rule's name and its target's labels.
    fn key_into(&self, rule: usize, target: &[(&str, &str)], key: &mut String) {
        key.clear();
        key.push_str(&self.rules[rule].name);
        key.push('|');
        for (i, (k, v)) in target.iter().enumerate() {
            if i > 0 {
                key.push(',');
            }
            key.push_str(k);
            key.push('=');
            key.push_str(v);
        }
    }

    fn observe_keyed(
        &mut self,
        rule: usize,
        target: &[(&str, &str)],
        key: &str,
        cond: Cond,
        now: SystemTime,
        out: &mut Vec<Alert>,
    ) {
        let for_ = self.rules[rule].for_;
        match (cond, self.active.get_mut(key)) {
            (Cond::Bad { value, threshold }, None) => {
                let mut a = Alert {
                    labels: self.labels(&self.rules[rule], target),
                    state: State::Pending,
                    value,
                    threshold,
                    since: now,
                    at: None,
                    summary: String::new(),
                    until: None,
                };
                if for_.is_zero() {
                    a.state = State::Firing;
                    a.at = Some(now);
                }
                a.summary = self.summary(rule, &a);
                if a.state == State::Firing {
                    out.push(a.clone());
                }
                self.active.insert(key.to_string(), (rule, a));
            }
            (Cond::Bad { value, threshold }, Some((_, a))) => {
                a.value = value;
                a.threshold = threshold;
                let due = now.duration_since(a.since).unwrap_or_default() >= for_;
                let fires = a.state == State::Pending && due;
                if fires {
                    a.state = State::Firing;
                    a.at = Some(now);
                }
                // The summary follows the value (the API and re-sends show the current one).
                let a2 = a.clone();
                let summary = self.summary(rule, &a2);
                if let Some((_, a)) = self.active.get_mut(key) {
                    a.summary = summary;
                    if fires {
                        out.push(a.clone());
                    }
                }
            }
            (Cond::Good, Some((_, a))) if a.state == State::Firing => {
                let a = a.clone();
                self.active.remove(key);
                out.push(resolved(a, now));
            }
            (Cond::Good | Cond::Hold, Some((_, a))) if a.state == State::Pending => {
                self.active.remove(key);
            }
            _ => {}
        }
    }

    /// An event: fires at once (or stays firing, its hold renewed).
    fn event(
        &mut self,
        rule: usize,
        target: &[(&str, &str)],
        (value, threshold): (f64, f64),
        hold: Duration,
        now: SystemTime,
        out: &mut Vec<Alert>,
    ) {
        let before = out.len();
        self.observe(rule, target, Cond::Bad { value, threshold }, now, out);
        let mut key = String::new();
        self.key_into(rule, target, &mut key);
        if let Some((_, a)) = self.active.get_mut(&key) {
            a.until = Some(
                now.checked_add(hold)
                    .unwrap_or(now + Duration::from_secs(86400 * 365 * 100)),
            );
            if out.len() > before {
                if let Some(last) = out.last_mut() {
                    last.until = a.until;
                }
            }
        }
    }

    fn summary(&self, rule: usize, a: &Alert) -> String {
        let r = &self.rules[rule];
        let mut s = r
            .summary
            .clone()
            .unwrap_or_else(|| default_summary(&r.kind).to_string());
        s = s
            .replace("{value}", &fmt_num(a.value))
            .replace("{threshold}", &fmt_num(a.threshold));
        for (k, v) in &a.labels {
            s = s.replace(&format!("{{{k}}}"), v);
        }
        s
    }

    /// How often the meter and bus rules need a fresh sample: the shortest polling interval,
    /// between 1 s and 10 s. Sampling every meter each second cost an idle gateway of 1,000
    /// meters at 15 minutes most of its CPU; a meter offline after three 15-minute intervals
    /// is no worse for being noticed up to 10 s later.
    pub fn meter_check_every(&self) -> Duration {
        self.meters
            .values()
            .map(|m| m.interval)
            .min()
            .unwrap_or(Duration::MAX)
            .clamp(Duration::from_secs(1), Duration::from_secs(10))
    }

    /// The meters a rule covers, in id order (events come out in a stable order).
    fn meters_in(&self, rule: usize) -> Vec<Arc<MeterInfo>> {
        let mut meters: Vec<Arc<MeterInfo>> = self
            .meters
            .values()
            .filter(|m| self.rules[rule].scope.matches(m))
            .cloned()
            .collect();
        meters.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        meters
    }
}

fn resolved(mut a: Alert, now: SystemTime) -> Alert {
    a.state = State::Resolved;
    a.at = Some(now);
    a.until = None;
    a
}
