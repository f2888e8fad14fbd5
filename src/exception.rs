//! Report by exception: a sink sends a value only when it moved by more than its deadband
//! since the value last sent, or when its heartbeat interval passed; the journal still keeps
//! every reading. Pure and clock-free: time is the readings' sampling time, so a backlog
//! drained after an outage is thinned exactly as it would have been live, and a value sent
//! late still carries the time it was sampled.
//!
//! A value is judged against the last value *sent* (not the last read), so a slow drift is
//! reported once it adds up to the deadband. After a lost connection a sink sends again from
//! its cursor: readings it had already judged are then sent whole (at least once, as ever),
//! since which of their values went out the first time is not kept.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use crate::{alerts::rules::glob, reading::Reading};

/// How far a value must move from the last one sent to be sent again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Deadband {
    /// In the quantity's unit (kWh for energy counters: their own step).
    Absolute(f64),
    /// Percent of the last value sent (any change, when that was 0).
    Percent(f64),
}

impl Deadband {
    fn moved(self, last: f64, now: f64) -> bool {
        let change = (now - last).abs();
        match self {
            Deadband::Absolute(band) => change > band,
            Deadband::Percent(p) => change > last.abs() * p / 100.0,
        }
    }
}

/// One `[[….exception.rule]]`: where it applies, and its deadband and heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Empty: every meter (and likewise buses, profiles).
    pub meters: Vec<String>,
    pub buses: Vec<String>,
    pub profiles: Vec<String>,
    /// Quantity names or `*` patterns; empty: every quantity.
    pub quantities: Vec<String>,
    pub deadband: Deadband,
    pub heartbeat: Duration,
}

impl Rule {
    fn covers(&self, r: &Reading, quantity: &str) -> bool {
        let listed = |list: &[String], s: &str| list.is_empty() || list.iter().any(|x| x == s);
        listed(&self.meters, &r.meter)
            && listed(&self.buses, &r.bus)
            && listed(&self.profiles, &r.profile)
            && (self.quantities.is_empty() || self.quantities.iter().any(|p| glob(p, quantity)))
    }
}

/// A sink's `exception` section: rules tried in order, then the section's own deadband and
/// heartbeat for any value no rule covers.
#[derive(Debug, Clone, PartialEq)]
pub struct Exception {
    pub rules: Vec<Rule>,
    pub deadband: Deadband,
    pub heartbeat: Duration,
}

impl Exception {
    /// The deadband and heartbeat that apply to `quantity` of `r`.
    fn band(&self, r: &Reading, quantity: &str) -> (Deadband, Duration) {
        self.rules
            .iter()
            .find(|rule| rule.covers(r, quantity))
            .map_or((self.deadband, self.heartbeat), |rule| {
                (rule.deadband, rule.heartbeat)
            })
    }
}

/// Which values of a reading to send.
#[derive(Debug, Clone, PartialEq)]
pub enum Pick {
    All,
    /// Nothing moved and no heartbeat is due: the reading is not sent at all.
    Nothing,
    /// `true` at the index of each value to send.
    Some(Vec<bool>),
}

impl Pick {
    /// Whether the value at `i` is sent.
    pub fn keeps(&self, i: usize) -> bool {
        match self {
            Pick::All => true,
            Pick::Nothing => false,
            Pick::Some(keep) => keep.get(i).copied().unwrap_or(false),
        }
    }
}

/// Per meter and quantity: its deadband and heartbeat (found once: the rules' patterns are
/// not matched again for every value of every reading), and the value last sent with its
/// sampling time.
type Sent = HashMap<Arc<str>, HashMap<Arc<str>, Judged>>;

#[derive(Debug)]
struct Judged {
    band: Deadband,
    heartbeat: Duration,
    last: Option<(f64, SystemTime)>,
}

/// One sink's judge: what it sent last, per meter and quantity.
#[derive(Debug)]
pub struct Filter {
    cfg: Arc<Exception>,
    sent: Sent,
    /// Readings below this position were judged before (a retry or a reconnection sends
    /// them again): they go whole.
    judged_upto: u64,
}

impl Filter {
    pub fn new(cfg: Arc<Exception>) -> Filter {
        Filter {
            cfg,
            sent: HashMap::new(),
            judged_upto: 0,
        }
    }

    /// Judge the reading at journal position `pos`, and remember what is sent as sent.
    /// On-demand readings (the master station asked for them) always go whole.
    pub fn pick(&mut self, pos: u64, r: &Reading) -> Pick {
        if pos < self.judged_upto {
            return Pick::All;
        }
        self.judged_upto = pos + 1;
        let per_meter = self.sent.entry(r.meter.clone()).or_default();
        let mut keep = Vec::with_capacity(r.values.len());
        for (q, v) in &r.values {
            if !v.is_finite() {
                // Not a number: no sink sends it anyway.
                keep.push(false);
                continue;
            }
            let judged = per_meter.entry(q.clone()).or_insert_with(|| {
                let (band, heartbeat) = self.cfg.band(r, q);
                Judged {
                    band,
                    heartbeat,
                    last: None,
                }
            });
            let send = r.on_demand
                || judged.last.is_none_or(|(last, at)| {
                    judged.band.moved(last, v)
                        || r.ts.duration_since(at).unwrap_or_default() >= judged.heartbeat
                });
            if send {
                judged.last = Some((v, r.ts));
            }
            keep.push(send);
        }
        let sent = keep.iter().filter(|k| **k).count();
        let finite = r.values.iter().filter(|(_, v)| v.is_finite()).count();
        if sent == 0 && finite > 0 {
            Pick::Nothing
        } else if sent == finite {
            Pick::All
        } else {
            Pick::Some(keep)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(meter: &str, secs: u64, values: &[(&str, f64)]) -> Reading {
        Reading {
            meter: meter.into(),
            bus: "rs485-1".into(),
            profile: "eastron-sdm630".into(),
            ts: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            seq: secs,
            values: values.iter().map(|(q, v)| ((*q).into(), *v)).collect(),
            on_demand: false,
        }
    }

    fn exception() -> Arc<Exception> {
        Arc::new(Exception {
            rules: vec![
                Rule {
                    meters: vec![],
                    buses: vec![],
                    profiles: vec![],
                    quantities: vec!["energy_*".into()],
                    deadband: Deadband::Absolute(0.1),
                    heartbeat: Duration::from_secs(3600),
                },
                Rule {
                    meters: vec!["m2".into()],
                    buses: vec![],
                    profiles: vec![],
                    quantities: vec![],
                    deadband: Deadband::Absolute(0.0),
                    heartbeat: Duration::from_secs(3600),
                },
            ],
            deadband: Deadband::Percent(1.0),
            heartbeat: Duration::from_secs(900),
        })
    }

    #[test]
    fn a_value_is_sent_when_it_moved_past_its_deadband_or_its_heartbeat_is_due() {
        // (meter, sampled at s, values, what is sent)
        #[rustfmt::skip]
        type Step<'a> = (&'a str, u64, &'a [(&'a str, f64)], &'a [&'a str]);
        let steps: &[Step] = &[
            (
                "m1",
                0,
                &[("voltage_l1_v", 230.0), ("energy_import_kwh", 100.0)],
                &["voltage_l1_v", "energy_import_kwh"],
            ),
            // 1 % of 230 V is 2.3 V: 232 V is within it; 0.05 kWh is within 0.1 kWh.
            (
                "m1",
                5,
                &[("voltage_l1_v", 232.0), ("energy_import_kwh", 100.05)],
                &[],
            ),
            // Judged against the value last *sent* (230), not the last read: a drift adds up.
            (
                "m1",
                10,
                &[("voltage_l1_v", 232.4), ("energy_import_kwh", 100.11)],
                &["voltage_l1_v", "energy_import_kwh"],
            ),
            (
                "m1",
                15,
                &[("voltage_l1_v", 230.2), ("energy_import_kwh", 100.12)],
                &[],
            ),
            // Another meter has its own history; m2's rule sends every change.
            ("m2", 15, &[("voltage_l1_v", 230.0)], &["voltage_l1_v"]),
            ("m2", 20, &[("voltage_l1_v", 230.0)], &[]),
            ("m2", 25, &[("voltage_l1_v", 230.01)], &["voltage_l1_v"]),
            // The voltage's heartbeat (15 min after it was last sent, at 10 s) is due; the
            // energy counter's (1 h) is not.
            (
                "m1",
                910,
                &[("voltage_l1_v", 232.4), ("energy_import_kwh", 100.12)],
                &["voltage_l1_v"],
            ),
            (
                "m1",
                3610,
                &[("voltage_l1_v", 232.4), ("energy_import_kwh", 100.12)],
                &["voltage_l1_v", "energy_import_kwh"],
            ),
            // Not a number is never sent, and does not count as left out.
            ("m1", 3615, &[("voltage_l1_v", f64::NAN)], &[]),
        ];
        let mut f = Filter::new(exception());
        // The sink's counters (`/metrics`), as the sinks feed them.
        let stats = crate::state::SinkStats::default();
        for (pos, (meter, at, values, expected)) in steps.iter().enumerate() {
            let r = reading(meter, *at, values);
            let pick = f.pick(pos as u64, &r);
            stats.left_out(&r, &pick);
            let sent: Vec<&str> = r
                .values
                .iter()
                .enumerate()
                .filter(|(i, (_, v))| pick.keeps(*i) && v.is_finite())
                .map(|(_, (q, _))| &**q)
                .collect();
            assert_eq!(&sent, expected, "{meter} at {at} s");
            let all = expected.len() == values.iter().filter(|(_, v)| v.is_finite()).count();
            assert_eq!(pick == Pick::All, all, "{meter} at {at} s: {pick:?}");
        }
        let count = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            (
                count(&stats.readings_left_out),
                count(&stats.values_left_out)
            ),
            (3, 6)
        );
    }

    #[test]
    fn a_reading_judged_before_goes_whole_when_a_sink_sends_it_again() {
        let mut f = Filter::new(exception());
        let a = reading("m1", 0, &[("voltage_l1_v", 230.0)]);
        let b = reading("m1", 5, &[("voltage_l1_v", 230.1)]);
        assert_eq!(f.pick(7, &a), Pick::All);
        assert_eq!(f.pick(8, &b), Pick::Nothing);
        // The connection broke; the sink rewinds to its cursor (7) and reads again.
        assert_eq!(f.pick(7, &a), Pick::All);
        assert_eq!(f.pick(8, &b), Pick::All, "sent again: at least once");
        let c = reading("m1", 10, &[("voltage_l1_v", 230.2)]);
        assert_eq!(
            f.pick(9, &c),
            Pick::Nothing,
            "new readings are judged again"
        );
    }

    #[test]
    fn an_on_demand_reading_always_goes_whole() {
        let mut f = Filter::new(exception());
        let mut r = reading("m1", 0, &[("voltage_l1_v", 230.0)]);
        assert_eq!(f.pick(0, &r), Pick::All);
        r.on_demand = true;
        assert_eq!(f.pick(1, &r), Pick::All);
    }

    #[test]
    fn a_percent_deadband_around_zero_sends_any_change() {
        for (band, last, now, moved) in [
            (Deadband::Percent(1.0), 0.0, 0.001, true),
            (Deadband::Percent(1.0), 0.0, 0.0, false),
            (Deadband::Percent(1.0), -100.0, -101.5, true),
            (Deadband::Percent(1.0), -100.0, -100.5, false),
            (Deadband::Absolute(0.1), 100.0, 100.1, false),
            (Deadband::Absolute(0.1), 100.0, 100.2, true),
        ] {
            assert_eq!(band.moved(last, now), moved, "{band:?} {last} → {now}");
        }
    }
}
