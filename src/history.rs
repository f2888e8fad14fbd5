//! The last hour, for the status page's trends: per meter its main quantities (power, voltage
//! and current per phase), per bus its utilisation, poll latency and failures, per sink its
//! backlog and the age of its oldest undelivered reading, and the alert timeline.
//!
//! Pure and clock-injected: [`History::sample`] is given the time and what to record, once
//! per [`STEP`] at most per series (a later sample in the same step replaces the earlier).
//! Bounded: [`KEPT`] steps per series, as f16 (see [`SCALE`]), NaN where nothing was sampled,
//! allocated at once and only for quantities a meter has, at most [`MAIN`]'s seven per meter:
//! 840 bytes of values per meter, about 1.7 MB at 2,000 meters; the timeline keeps [`EVENTS`].
//! A point a minute is as much as a sparkline of an hour shows, and half of what 30 s steps
//! cost.

use std::{
    collections::{BTreeMap, VecDeque},
    time::{Duration, SystemTime},
};

use half::f16;
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

/// Values are kept as f16 of the value / 1024: 11 significant bits, a relative error below
/// 0.05 % (finer than a class 0.2S meter measures; below 0.0625 an absolute error below
/// 0.00003), exact for what f16 holds exactly (whole numbers to 2,048 and halves to 1,024
/// among them), and a range to ±67 million (beyond it, the largest is kept).
/// Half of what f32 costs: at 2,000 meters 1.7 MB instead of 3.4 MB. `half` rather than
/// hand-made packing: it is already in the tree, and rounds correctly.
const SCALE: f64 = 1024.0;

fn pack(v: f64) -> f16 {
    let max = f64::from(f16::MAX);
    f16::from_f64((v / SCALE).clamp(-max, max))
}

fn unpack(v: f16) -> f64 {
    f64::from(v) * SCALE
}

/// Series that are sampled together, as rows: one row per step, `width` values in each
/// (NaN where nothing was sampled), oldest first, at most [`KEPT`] rows, in one allocation
/// made once.
#[derive(Debug, Default, Clone)]
pub struct Trend {
    /// The step of the newest row.
    last: u64,
    width: usize,
    cells: VecDeque<f16>,
}

impl Trend {
    fn new(width: usize) -> Trend {
        Trend {
            last: 0,
            width,
            cells: VecDeque::new(),
        }
    }

    fn rows(&self) -> usize {
        self.cells.len().checked_div(self.width).unwrap_or(0)
    }

    /// Make the newest row that of step `at` (rows for the steps between hold nothing, rows
    /// that fall out of the hour go first), and set `column` in it.
    fn put(&mut self, at: u64, column: usize, v: f64) {
        let w = self.width;
        if column >= w {
            return;
        }
        if self.cells.is_empty() || at < self.last || at - self.last >= KEPT as u64 {
            // Nothing kept, the clock went back (start again rather than draw a tangle), or
            // all of it is out of the hour.
            self.cells.clear();
            // All of it at once, exactly: growing by doubling would end at 2 × KEPT.
            self.cells.reserve_exact(KEPT * w);
            self.cells.extend(std::iter::repeat_n(f16::NAN, w));
            self.last = at;
        }
        while self.last < at {
            if self.rows() >= KEPT {
                self.cells.drain(..w);
            }
            self.cells.extend(std::iter::repeat_n(f16::NAN, w));
            self.last += 1;
        }
        let i = self.cells.len() - w + column;
        self.cells[i] = pack(v);
    }

    /// `column` within the hour before `now`, as the page's charts take it:
    /// `{"start": unix ms of its first sampled step, "values": [a value, or null for a step
    /// with none, per step from there]}` (a third of the size of `[ms, value]` pairs: at
    /// 2,000 meters the whole history is still about 10 MB of JSON).
    pub fn series(&self, column: usize, now: SystemTime) -> serde_json::Value {
        let rows = self.rows() as u64;
        let first = (self.last + 1).saturating_sub(rows);
        let oldest = slot(now).saturating_sub(KEPT as u64 - 1);
        let value = |step: u64| {
            let r = (step - first) as usize;
            let v = unpack(*self.cells.get(r * self.width + column)?);
            (!v.is_nan()).then_some(v)
        };
        let mut steps = first.max(oldest)..first + rows;
        let Some(from) = steps.find(|s| value(*s).is_some()) else {
            return serde_json::json!({ "start": 0, "values": [] });
        };
        // What `find` left: the steps after `from`.
        let to = steps.rfind(|s| value(*s).is_some()).unwrap_or(from);
        let values: Vec<Option<f64>> = (from..=to).map(value).collect();
        serde_json::json!({ "start": from * STEP.as_millis() as u64, "values": values })
    }
}

/// A meter's trend: a column per [`MAIN`] quantity it has had a value of, only those.
#[derive(Debug, Default, Clone)]
struct MeterTrend {
    /// Bit `i` for `MAIN[i]`.
    columns: u8,
    trend: Trend,
}

impl MeterTrend {
    fn column(&self, q: usize) -> Option<usize> {
        (self.columns & (1 << q) != 0)
            .then(|| (self.columns & ((1 << q) - 1)).count_ones() as usize)
    }

    fn put(&mut self, at: u64, values: &crate::state::MainValues) {
        let finite = |i: usize| values[i].filter(|v| v.is_finite());
        let seen = (0..MAIN.len())
            .filter(|&i| finite(i).is_some())
            .fold(0u8, |m, i| m | 1 << i);
        if seen & !self.columns != 0 {
            self.widen(self.columns | seen);
        }
        for (i, v) in (0..MAIN.len()).filter_map(|i| Some((i, finite(i)?))) {
            if let Some(c) = self.column(i) {
                self.trend.put(at, c, v);
            }
        }
    }

    /// A quantity had its first value: every row gets its column (empty before).
    fn widen(&mut self, columns: u8) {
        let old = std::mem::replace(
            self,
            MeterTrend {
                columns,
                trend: Trend::new(columns.count_ones() as usize),
            },
        );
        if old.trend.cells.is_empty() {
            return;
        }
        self.trend.last = old.trend.last;
        self.trend.cells.reserve_exact(KEPT * self.trend.width);
        for r in 0..old.trend.rows() {
            for q in (0..MAIN.len()).filter(|&q| columns & (1 << q) != 0) {
                let v = old
                    .column(q)
                    .and_then(|c| old.trend.cells.get(r * old.trend.width + c))
                    .copied()
                    .unwrap_or(f16::NAN);
                self.trend.cells.push_back(v);
            }
        }
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

/// Per bus: utilisation, mean poll time (ms) and failures per step, in that order.
#[derive(Debug, Clone)]
struct BusSeries {
    trend: Trend,
    last: Option<BusSample>,
}

impl Default for BusSeries {
    fn default() -> BusSeries {
        BusSeries {
            trend: Trend::new(3),
            last: None,
        }
    }
}

/// Per sink: readings waiting and the age of the oldest (s), in that order.
#[derive(Debug, Clone)]
struct SinkSeries(Trend);

impl Default for SinkSeries {
    fn default() -> SinkSeries {
        SinkSeries(Trend::new(2))
    }
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
    /// Per meter a column per [`MAIN`] quantity it has had: at most 7 × 60 × 2 bytes, in one
    /// allocation, and the name shared with the live state (an array of seven f32 series
    /// cost 2.2 KB per meter, a map of them 632 bytes more).
    meters: BTreeMap<std::sync::Arc<str>, MeterTrend>,
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
            let mut trend = self.meters.remove(&*id).unwrap_or_default();
            trend.put(at, &values);
            meters.insert(id, trend);
        }
        self.meters = meters;
        let mut buses = BTreeMap::new();
        for (name, b) in s.buses {
            let mut series = self.buses.remove(&name).unwrap_or_default();
            series.trend.put(at, 0, b.utilisation);
            if let Some(last) = series.last {
                // Between two samples: the mean poll time and the failures.
                let polls = b.polls.saturating_sub(last.polls);
                if polls > 0 {
                    let ms = (b.poll_seconds - last.poll_seconds).max(0.0) * 1000.0;
                    series.trend.put(at, 1, ms / polls as f64);
                }
                series
                    .trend
                    .put(at, 2, b.failures.saturating_sub(last.failures) as f64);
            }
            series.last = Some(b);
            buses.insert(name, series);
        }
        self.buses = buses;
        let mut sinks = BTreeMap::new();
        for (name, k) in s.sinks {
            let mut series = self.sinks.remove(&name).unwrap_or_default();
            series.0.put(at, 0, k.waiting as f64);
            series.0.put(at, 1, k.oldest_age_s);
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
        let meters: serde_json::Map<String, serde_json::Value> = self
            .meters
            .iter()
            .filter(|(id, _)| meter.is_none_or(|m| m == &***id))
            .map(|(id, m)| {
                let qs: serde_json::Map<String, serde_json::Value> = MAIN
                    .iter()
                    .enumerate()
                    .filter_map(|(i, q)| {
                        let c = m.column(i)?;
                        Some((q.to_string(), m.trend.series(c, now)))
                    })
                    .collect();
                (id.to_string(), serde_json::Value::Object(qs))
            })
            .collect();
        let buses: serde_json::Map<String, serde_json::Value> = self
            .buses
            .iter()
            .map(|(name, b)| {
                (
                    name.clone(),
                    serde_json::json!({
                        "utilisation": b.trend.series(0, now),
                        "latency_ms": b.trend.series(1, now),
                        "failures": b.trend.series(2, now),
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
                        "waiting": k.0.series(0, now),
                        "oldest_age_s": k.0.series(1, now),
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

    /// A series as `[[unix ms, value], …]`, the sampled steps only, as the page's charts
    /// draw it.
    fn pts(series: &serde_json::Value) -> serde_json::Value {
        let start = series["start"].as_u64().unwrap();
        let step = STEP.as_millis() as u64;
        series["values"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_null())
            .map(|(i, v)| serde_json::json!([start + i as u64 * step, v]))
            .collect()
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
                    pts(&j["meters"]["m1"]["voltage_l1_v"]),
                    serde_json::json!([[ms(0), 231.0], [ms(60), 232.0]])
                );
                assert!(
                    j["meters"]["m1"].get("energy_import_kwh").is_none(),
                    "only the main quantities"
                );
            }
        }
        let j = h.json(t(3660), None);
        let points = pts(&j["meters"]["m1"]["voltage_l1_v"])
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(points.len(), 1, "{points:?}");
        assert_eq!(points[0][1], 233.0);
    }

    #[test]
    fn a_trend_never_holds_more_than_an_hour_of_steps_and_allocates_once() {
        let mut s = Trend::new(3);
        // Every step for three hours, then a gap of ten steps, then a step back in time.
        let steps = (0..180).chain(190..200).chain([150]);
        for at in steps {
            s.put(1_000 + at, (at % 3) as usize, at as f64);
            assert!(s.rows() <= KEPT, "{} at {at}", s.rows());
            assert_eq!(s.cells.capacity(), 3 * KEPT, "allocated once, exactly");
        }
        assert_eq!(s.rows(), 1, "the step back in time starts again");
    }

    #[test]
    fn values_come_back_within_half_a_thousandth_small_ones_within_0_00003_huge_ones_as_the_largest_kept(
    ) {
        // (value, what comes back, or None for "within 0.05 %, or 0.00003 below 0.0625")
        let cases: [(f64, Option<f64>); 9] = [
            (230.0, Some(230.0)),
            (0.5, Some(0.5)),
            (231.37, None),
            (0.0123, None),
            (-1_234.5, None),
            (49_999.9, None),
            (1_000_000.0, None),
            (0.0, Some(0.0)),
            (1e12, Some(f64::from(f16::MAX) * SCALE)),
        ];
        for (v, want) in cases {
            let back = unpack(pack(v));
            match want {
                Some(w) => assert_eq!(back, w, "{v}"),
                None => assert!(
                    ((back - v) / v).abs() < 5e-4
                        || (v.abs() < 0.0625 && (back - v).abs() < 3.1e-5),
                    "{v} came back as {back}"
                ),
            }
        }
    }

    #[test]
    fn a_quantity_a_meter_reports_later_gets_its_column_and_earlier_points_stay() {
        let mut h = History::default();
        let ms = |s: u64| {
            t(s).duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64
        };
        // (seconds, values): voltage alone, then current appears, then voltage is missing.
        for (at, vs) in [
            (0, vec![("voltage_l1_v", 230.0)]),
            (60, vec![("voltage_l1_v", 231.0), ("current_l1_a", 5.0)]),
            (120, vec![("current_l1_a", 6.0)]),
        ] {
            h.sample(
                t(at),
                sample(vec![("m1", values(&vs))], BusSample::default()),
            );
        }
        let j = h.json(t(120), Some("m1"));
        assert_eq!(
            pts(&j["meters"]["m1"]["voltage_l1_v"]),
            serde_json::json!([[ms(0), 230.0], [ms(60), 231.0]])
        );
        assert_eq!(
            pts(&j["meters"]["m1"]["current_l1_a"]),
            serde_json::json!([[ms(60), 5.0], [ms(120), 6.0]])
        );
        assert!(j["meters"]["m1"].get("power_w").is_none(), "never had it");
        assert_eq!(h.meters["m1"].trend.cells.capacity(), 2 * KEPT);
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
        assert_eq!(pts(&b["latency_ms"])[0][1], 50.0, "1 s over 20 polls");
        assert_eq!(pts(&b["failures"])[0][1], 3.0);
        assert_eq!(pts(&b["utilisation"]).as_array().unwrap().len(), 2);
        assert_eq!(pts(&j["sinks"]["mqtt"]["waiting"])[1][1], 3.0);
        assert_eq!(
            b["latency_ms"],
            serde_json::json!({"start": 1_800_000_060_000u64, "values": [50.0]}),
            "starts at its first sampled step"
        );
        assert!(
            j["meters"].get("m1").is_none(),
            "m1 is no longer configured"
        );
    }

    #[test]
    fn a_series_is_its_first_sampled_step_and_a_value_or_null_per_step_from_there() {
        let mut h = History::default();
        // (seconds, power): a step with none between two, then only voltage.
        for (at, vs) in [
            (0, vec![("power_w", 1.0)]),
            (120, vec![("power_w", 3.0)]),
            (180, vec![("voltage_l1_v", 230.0)]),
        ] {
            h.sample(
                t(at),
                sample(vec![("m1", values(&vs))], BusSample::default()),
            );
        }
        let j = h.json(t(180), None);
        assert_eq!(
            j["meters"]["m1"]["power_w"],
            serde_json::json!({"start": 1_800_000_000_000u64, "values": [1.0, null, 3.0]})
        );
        assert_eq!(
            j["meters"]["m1"]["voltage_l1_v"],
            serde_json::json!({"start": 1_800_000_180_000u64, "values": [230.0]})
        );
    }

    #[test]
    fn asking_for_no_meter_gives_the_buses_sinks_and_timeline_only() {
        let mut h = History::default();
        h.sample(
            t(0),
            sample(
                vec![("m1", values(&[("power_w", 1.0)]))],
                BusSample::default(),
            ),
        );
        let j = h.json(t(0), Some(""));
        assert_eq!(j["meters"], serde_json::json!({}));
        assert_eq!(
            pts(&j["buses"]["rs485-1"]["utilisation"])
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(pts(&j["sinks"]["mqtt"]["waiting"])[0][1], 3.0);
        assert!(j["alerts"].is_array());
        assert!(h.json(t(0), None)["meters"].get("m1").is_some());
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
