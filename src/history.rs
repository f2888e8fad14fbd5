//! The last hour, for the status page's trends: per meter its main quantities (power, voltage
//! and current per phase), per bus its utilisation, poll latency and failures, per sink its
//! backlog and the age of its oldest undelivered reading, and the alert timeline.
//!
//! Pure and clock-injected: [`History::sample`] is given the time and what to record, once
//! per [`STEP`] at most per series (a later sample in the same step replaces the earlier).
//! Bounded: [`KEPT`] steps of f32 per series (NaN where nothing was sampled), allocated at
//! once and only for quantities a meter has, at most [`MAIN`]'s seven per meter: 1.7 KB of
//! values per meter, about 4 MB at 2,000 meters; the timeline keeps [`EVENTS`]. A point a
//! minute is as much as a sparkline of an hour shows, and half of what 30 s steps cost.

use std::{
    collections::{BTreeMap, VecDeque},
    time::{Duration, SystemTime},
};

use serde::Serialize;

use crate::alerts::rules::Alert;

/// One point per step and series.
pub const STEP: Duration = Duration::from_secs(60);
/// An hour of steps.
pub const KEPT: usize = 60;
/// Alert events kept for the timeline.
pub const EVENTS: usize = 200;
/// The quantities a meter's trend shows, those it has.
pub const MAIN: [&str; 7] = [
    "power_w",
    "voltage_l1_v",
    "voltage_l2_v",
    "voltage_l3_v",
    "current_l1_a",
    "current_l2_a",
    "current_l3_a",
];

/// Where `q` sits in [`MAIN`].
pub fn main_index(q: &str) -> Option<usize> {
    MAIN.iter().position(|m| *m == q)
}

fn slot(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        / STEP.as_secs()
}

/// One series: a value per step, NaN where nothing was sampled (four bytes a step, where an
/// `Option<f32>` takes eight).
#[derive(Debug, Default, Clone)]
pub struct Series {
    /// The step of `values[0]`.
    first: u64,
    values: VecDeque<f32>,
}

impl Series {
    fn put(&mut self, at: u64, v: f64) {
        if self.values.is_empty() {
            self.first = at;
            // All of it at once, exactly: growing by doubling would end at 2 × KEPT.
            self.values.reserve_exact(KEPT);
        }
        if at < self.first {
            // The clock went back: start again rather than draw a tangle.
            self.values.clear();
            self.first = at;
        }
        // Drop what falls out of the window before adding (after a long gap, all of it), so
        // the length never passes KEPT.
        let keep_from = at.saturating_sub(KEPT as u64 - 1);
        while self.first < keep_from && !self.values.is_empty() {
            self.values.pop_front();
            self.first += 1;
        }
        if self.values.is_empty() {
            self.first = at;
        }
        let i = (at - self.first) as usize;
        while self.values.len() <= i {
            self.values.push_back(f32::NAN);
        }
        self.values[i] = v as f32;
    }

    /// `[unix ms, value]` per sampled step, oldest first, within the hour before `now`.
    pub fn points(&self, now: SystemTime) -> Vec<(u64, f64)> {
        let oldest = slot(now).saturating_sub(KEPT as u64 - 1);
        self.values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let at = self.first + i as u64;
                let v = Some(f64::from(*v)).filter(|v| !v.is_nan())?;
                Some((at * STEP.as_millis() as u64, v)).filter(|_| at >= oldest)
            })
            .collect()
    }
}

/// A bus at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct BusSample {
    pub utilisation: f64,
    /// Polls and failures so far, and the summed poll time (seconds) of the bus's meters.
    pub polls: u64,
    pub failures: u64,
    pub poll_seconds: f64,
}

/// A sink at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct SinkSample {
    pub waiting: u64,
    pub oldest_age_s: f64,
}

#[derive(Debug, Default, Clone)]
struct BusSeries {
    utilisation: Series,
    latency_ms: Series,
    failures: Series,
    last: Option<BusSample>,
}

#[derive(Debug, Default, Clone)]
struct SinkSeries {
    waiting: Series,
    oldest_age_s: Series,
}

/// One alert event on the timeline.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Event {
    pub at: String,
    pub name: String,
    /// pending, firing, resolved.
    pub state: String,
    pub severity: String,
    /// meter, bus or sink it is about ("gateway" for none).
    pub target: String,
    pub summary: String,
}

#[derive(Debug, Default, Clone)]
pub struct History {
    /// Per meter a series per [`MAIN`] quantity, in its order; a quantity the meter never had
    /// stays empty, and takes no space beyond the array's (a map per meter took 632 bytes).
    meters: BTreeMap<String, [Series; MAIN.len()]>,
    buses: BTreeMap<String, BusSeries>,
    sinks: BTreeMap<String, SinkSeries>,
    events: VecDeque<Event>,
    /// The active alerts as last seen.
    last_alerts: Vec<Alert>,
}

/// What [`History::sample`] records.
pub struct Sample {
    /// Per meter: its latest values of the [`MAIN`] quantities.
    pub meters: Vec<(std::sync::Arc<str>, crate::state::MainValues)>,
    pub buses: Vec<(String, BusSample)>,
    pub sinks: Vec<(String, SinkSample)>,
}

impl History {
    /// Record `s` at `now`; meters, buses and sinks no longer present are forgotten.
    pub fn sample(&mut self, now: SystemTime, s: Sample) {
        let at = slot(now);
        let mut meters = BTreeMap::new();
        for (id, values) in s.meters {
            let mut series = self.meters.remove(&*id).unwrap_or_default();
            for (one, v) in series.iter_mut().zip(values) {
                if let Some(v) = v.filter(|v| v.is_finite()) {
                    one.put(at, v);
                }
            }
            meters.insert(id.to_string(), series);
        }
        self.meters = meters;
        let mut buses = BTreeMap::new();
        for (name, b) in s.buses {
            let mut series = self.buses.remove(&name).unwrap_or_default();
            series.utilisation.put(at, b.utilisation);
            if let Some(last) = series.last {
                // Between two samples: the mean poll time and the failures.
                let polls = b.polls.saturating_sub(last.polls);
                if polls > 0 {
                    let ms = (b.poll_seconds - last.poll_seconds).max(0.0) * 1000.0;
                    series.latency_ms.put(at, ms / polls as f64);
                }
                series
                    .failures
                    .put(at, b.failures.saturating_sub(last.failures) as f64);
            }
            series.last = Some(b);
            buses.insert(name, series);
        }
        self.buses = buses;
        let mut sinks = BTreeMap::new();
        for (name, k) in s.sinks {
            let mut series = self.sinks.remove(&name).unwrap_or_default();
            series.waiting.put(at, k.waiting as f64);
            series.oldest_age_s.put(at, k.oldest_age_s);
            sinks.insert(name, series);
        }
        self.sinks = sinks;
    }

    /// The alert engine's active alerts now: each new one, each change of state and each
    /// that went away (told by the alert as last seen) becomes an event. An alert is known by
    /// its labels.
    pub fn alerts(&mut self, now: SystemTime, active: &[Alert]) {
        let same = |a: &Alert, b: &Alert| a.labels == b.labels;
        for a in active {
            let before = self.last_alerts.iter().find(|b| same(a, b));
            if before.is_none_or(|b| b.state != a.state) {
                self.push(event(a, a.state.as_str(), a.at.unwrap_or(now)));
            }
        }
        let last = std::mem::replace(&mut self.last_alerts, active.to_vec());
        for gone in last.iter().filter(|b| !active.iter().any(|a| same(a, b))) {
            self.push(event(gone, "resolved", now));
        }
    }

    fn push(&mut self, e: Event) {
        self.events.push_back(e);
        while self.events.len() > EVENTS {
            self.events.pop_front();
        }
    }

    /// The JSON behind the page's charts (`/api/history`), for one meter or all.
    pub fn json(&self, now: SystemTime, meter: Option<&str>) -> serde_json::Value {
        let series = |s: &Series| s.points(now);
        let meters: serde_json::Map<String, serde_json::Value> = self
            .meters
            .iter()
            .filter(|(id, _)| meter.is_none_or(|m| m == id.as_str()))
            .map(|(id, qs)| {
                let qs: serde_json::Map<String, serde_json::Value> = MAIN
                    .iter()
                    .zip(qs)
                    .filter(|(_, s)| !s.values.is_empty())
                    .map(|(q, s)| (q.to_string(), serde_json::json!(series(s))))
                    .collect();
                (id.clone(), serde_json::Value::Object(qs))
            })
            .collect();
        let buses: serde_json::Map<String, serde_json::Value> = self
            .buses
            .iter()
            .map(|(name, b)| {
                (
                    name.clone(),
                    serde_json::json!({
                        "utilisation": series(&b.utilisation),
                        "latency_ms": series(&b.latency_ms),
                        "failures": series(&b.failures),
                    }),
                )
            })
            .collect();
        let sinks: serde_json::Map<String, serde_json::Value> = self
            .sinks
            .iter()
            .map(|(name, k)| {
                (
                    name.clone(),
                    serde_json::json!({
                        "waiting": series(&k.waiting),
                        "oldest_age_s": series(&k.oldest_age_s),
                    }),
                )
            })
            .collect();
        serde_json::json!({
            "step_s": STEP.as_secs(),
            "meters": meters,
            "buses": buses,
            "sinks": sinks,
            "alerts": self.events,
        })
    }
}

fn event(a: &Alert, state: &str, at: SystemTime) -> Event {
    let label = |k: &str| a.labels.get(k).cloned();
    Event {
        at: humantime::format_rfc3339_seconds(at).to_string(),
        name: a.name().to_string(),
        state: state.to_string(),
        severity: label("severity").unwrap_or_default(),
        target: label("meter")
            .or_else(|| label("bus"))
            .or_else(|| label("sink"))
            .unwrap_or_else(|| "gateway".into()),
        summary: a.summary.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn t(s: u64) -> SystemTime {
        // 1,800,000,000 is a whole number of 60 s steps: `s` counts seconds into a step.
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
    }

    /// A meter's values as the live state hands them over: the main quantities only.
    fn values(pairs: &[(&str, f64)]) -> crate::state::MainValues {
        let mut main = crate::state::MainValues::default();
        for (q, v) in pairs {
            if let Some(i) = main_index(q) {
                main[i] = Some(*v);
            }
        }
        main
    }

    #[test]
    fn every_main_quantity_has_its_own_index() {
        for (i, q) in MAIN.iter().enumerate() {
            assert_eq!(main_index(q), Some(i), "{q}");
        }
        assert_eq!(main_index("energy_import_kwh"), None);
    }

    fn sample(meters: Vec<(&str, crate::state::MainValues)>, bus: BusSample) -> Sample {
        Sample {
            meters: meters
                .into_iter()
                .map(|(id, v)| (Arc::from(id), v))
                .collect(),
            buses: vec![("rs485-1".into(), bus)],
            sinks: vec![(
                "mqtt".into(),
                SinkSample {
                    waiting: 3,
                    oldest_age_s: 1.5,
                },
            )],
        }
    }

    #[test]
    fn a_series_keeps_one_point_per_step_the_latest_and_only_the_last_hour() {
        let mut h = History::default();
        // (seconds, voltage): two samples in the first step (the later wins), a step with
        // none, then one far later (the hour before it is all that is shown).
        for (at, v) in [(0, 230.0), (10, 231.0), (65, 232.0), (3600 + 60, 233.0)] {
            h.sample(
                t(at),
                sample(
                    vec![(
                        "m1",
                        values(&[("voltage_l1_v", v), ("energy_import_kwh", 1.0)]),
                    )],
                    BusSample::default(),
                ),
            );
            if at == 65 {
                let j = h.json(t(at), None);
                let ms = |s: u64| {
                    t(s).duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap()
                        .as_millis() as u64
                };
                assert_eq!(
                    j["meters"]["m1"]["voltage_l1_v"],
                    serde_json::json!([[ms(0), 231.0], [ms(60), 232.0]])
                );
                assert!(
                    j["meters"]["m1"].get("energy_import_kwh").is_none(),
                    "only the main quantities"
                );
            }
        }
        let j = h.json(t(3660), None);
        let points = j["meters"]["m1"]["voltage_l1_v"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(points.len(), 1, "{points:?}");
        assert_eq!(points[0][1], 233.0);
    }

    #[test]
    fn a_series_never_holds_more_than_an_hour_of_steps() {
        let mut s = Series::default();
        // Every step for three hours, then a gap of ten steps, then a step back in time.
        let steps = (0..180).chain(190..200).chain([150]);
        for at in steps {
            s.put(1_000 + at, at as f64);
            assert!(s.values.len() <= KEPT, "{} at {at}", s.values.len());
            assert_eq!(s.values.capacity(), KEPT, "allocated once, exactly");
        }
    }

    #[test]
    fn a_bus_shows_its_mean_poll_time_and_failures_between_samples_and_gone_meters_are_forgotten() {
        let mut h = History::default();
        let bus = |polls, failures, secs| BusSample {
            utilisation: 0.5,
            polls,
            failures,
            poll_seconds: secs,
        };
        h.sample(
            t(0),
            sample(vec![("m1", values(&[("power_w", 1.0)]))], bus(10, 1, 1.0)),
        );
        h.sample(t(60), sample(vec![], bus(30, 4, 2.0)));
        let j = h.json(t(60), None);
        let b = &j["buses"]["rs485-1"];
        assert_eq!(b["latency_ms"][0][1], 50.0, "1 s over 20 polls");
        assert_eq!(b["failures"][0][1], 3.0);
        assert_eq!(b["utilisation"].as_array().unwrap().len(), 2);
        assert_eq!(j["sinks"]["mqtt"]["waiting"][1][1], 3.0);
        assert!(
            j["meters"].get("m1").is_none(),
            "m1 is no longer configured"
        );
    }

    #[test]
    fn the_timeline_has_an_event_per_new_alert_change_of_state_and_resolution() {
        use crate::alerts::rules::State;
        let alert = |state: State| Alert {
            labels: BTreeMap::from([
                ("alertname".to_string(), "Overvoltage".to_string()),
                ("meter".to_string(), "m1".to_string()),
                ("severity".to_string(), "critical".to_string()),
            ]),
            state,
            value: 240.0,
            threshold: 235.0,
            since: t(0),
            at: None,
            summary: "m1: voltage_l1_v 240 V above 235 V".into(),
            until: None,
        };
        let mut h = History::default();
        for (at, active) in [
            (0, vec![alert(State::Pending)]),
            (1, vec![alert(State::Pending)]),
            (5, vec![alert(State::Firing)]),
            (9, vec![]),
            (10, vec![]),
        ] {
            h.alerts(t(at), &active);
        }
        let states: Vec<(String, String)> = h
            .events
            .iter()
            .map(|e| (e.state.clone(), e.target.clone()))
            .collect();
        assert_eq!(
            states,
            [("pending", "m1"), ("firing", "m1"), ("resolved", "m1")]
                .map(|(s, m)| (s.to_string(), m.to_string()))
        );
    }
}
