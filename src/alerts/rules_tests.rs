//! The alert state machine on a virtual clock: every rule kind, `for`, hysteresis, events,
//! restarts and reloads.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use super::rules::*;
use crate::reading::Reading;

pub(super) fn t(s: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
}

pub(super) fn meter(id: &str, bus: &str) -> MeterInfo {
    MeterInfo {
        id: id.into(),
        bus: bus.into(),
        profile: "eastron-sdm630".into(),
        labels: BTreeMap::from([("feeder".to_string(), "F1".to_string())]),
        interval: Duration::from_secs(10),
    }
}

pub(super) fn rule(name: &str, kind: Kind, for_s: u64) -> Rule {
    Rule {
        name: name.into(),
        kind,
        for_: Duration::from_secs(for_s),
        severity: Severity::Warning,
        scope: Scope::default(),
        labels: BTreeMap::new(),
        summary: None,
    }
}

pub(super) fn overvoltage(for_s: u64) -> Rule {
    rule(
        "Overvoltage",
        Kind::Threshold {
            quantity: "voltage_l*_v".into(),
            above: Some(235.4),
            below: None,
            clear: 233.0,
        },
        for_s,
    )
}

pub(super) fn engine(rules: Vec<Rule>) -> Engine {
    Engine::new(
        "gw",
        rules,
        vec![meter("m1", "b1"), meter("m2", "b1")],
        t(0),
    )
}

pub(super) fn reading(meter: &str, at: u64, values: &[(&str, f64)]) -> Reading {
    Reading {
        meter: meter.into(),
        bus: "b1".into(),
        profile: "eastron-sdm630".into(),
        ts: t(at),
        seq: 0,
        values: values.iter().map(|(q, v)| (Arc::from(*q), *v)).collect(),
        on_demand: false,
    }
}

/// Feed readings of one quantity at the given times; return the events as (time, state).
pub(super) fn drive(e: &mut Engine, q: &str, series: &[(u64, f64)]) -> Vec<(u64, State)> {
    let mut out = Vec::new();
    for (at, v) in series {
        for a in e.on_reading(&reading("m1", *at, &[(q, *v)]), t(*at)) {
            out.push((*at, a.state));
        }
    }
    out
}

#[test]
fn a_threshold_fires_only_after_its_for_duration_and_resolves_below_the_clear_level() {
    use State::*;
    // (case, for, series, expected events)
    type Case<'a> = (&'a str, u64, &'a [(u64, f64)], &'a [(u64, State)]);
    let cases: &[Case] = &[
        (
            "no for: fires at once",
            0,
            &[(0, 236.0), (10, 232.0)],
            &[(0, Firing), (10, Resolved)],
        ),
        (
            "above for 60 s fires at 60 s",
            60,
            &[(0, 236.0), (30, 236.0), (60, 236.0)],
            &[(60, Firing)],
        ),
        (
            "a dip below the threshold restarts the for",
            60,
            &[
                (0, 236.0),
                (30, 234.0),
                (60, 236.0),
                (90, 236.0),
                (120, 236.0),
            ],
            &[(120, Firing)],
        ),
        (
            "inside the band a firing alert stays firing",
            0,
            &[(0, 236.0), (10, 234.0), (20, 233.5), (30, 235.0)],
            &[(0, Firing)],
        ),
        (
            "flapping around the threshold pages once",
            0,
            &[
                (0, 235.5),
                (10, 235.3),
                (20, 235.6),
                (30, 235.2),
                (40, 235.9),
            ],
            &[(0, Firing)],
        ),
        (
            "below the clear level it resolves",
            0,
            &[(0, 236.0), (10, 234.0), (20, 232.9)],
            &[(0, Firing), (20, Resolved)],
        ),
        (
            "exactly at the threshold is not above it",
            0,
            &[(0, 235.4)],
            &[],
        ),
        (
            "fires again after a resolve",
            0,
            &[(0, 236.0), (10, 230.0), (20, 236.0)],
            &[(0, Firing), (10, Resolved), (20, Firing)],
        ),
    ];
    for (case, for_s, series, expected) in cases {
        let mut e = engine(vec![overvoltage(*for_s)]);
        assert_eq!(&drive(&mut e, "voltage_l1_v", series), expected, "{case}");
    }
}

#[test]
fn a_below_threshold_clears_above_its_clear_level() {
    let mut e = engine(vec![rule(
        "Undervoltage",
        Kind::Threshold {
            quantity: "voltage_l1_v".into(),
            above: None,
            below: Some(207.0),
            clear: 210.0,
        },
        0,
    )]);
    let got = drive(
        &mut e,
        "voltage_l1_v",
        &[(0, 206.0), (10, 209.0), (20, 210.5)],
    );
    assert_eq!(got, vec![(0, State::Firing), (20, State::Resolved)]);
}

#[test]
fn an_alert_carries_the_labels_value_threshold_and_a_filled_in_summary() {
    let mut r = overvoltage(0);
    r.labels.insert("team".into(), "grid".into());
    r.summary = Some("{meter} on {bus}: {quantity} {value} V > {threshold} V".into());
    let mut e = engine(vec![r]);
    let a = e
        .on_reading(&reading("m1", 0, &[("voltage_l2_v", 236.25)]), t(0))
        .pop()
        .unwrap();
    let labels: Vec<(&str, &str)> = a
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        labels,
        vec![
            ("alertname", "Overvoltage"),
            ("bus", "b1"),
            ("gateway", "gw"),
            ("meter", "m1"),
            ("quantity", "voltage_l2_v"),
            ("severity", "warning"),
            ("team", "grid"),
        ]
    );
    assert_eq!((a.value, a.threshold), (236.25, 235.4));
    assert_eq!(a.summary, "m1 on b1: voltage_l2_v 236.25 V > 235.4 V");
    assert_eq!((a.since, a.at), (t(0), Some(t(0))));
}

#[test]
fn each_matching_quantity_and_meter_is_its_own_alert() {
    let mut e = engine(vec![overvoltage(0)]);
    let a = e.on_reading(
        &reading(
            "m1",
            0,
            &[
                ("voltage_l1_v", 236.0),
                ("voltage_l2_v", 236.0),
                ("current_l1_a", 999.0),
            ],
        ),
        t(0),
    );
    let b = e.on_reading(&reading("m2", 0, &[("voltage_l1_v", 236.0)]), t(0));
    assert_eq!(a.len(), 2);
    assert_eq!(b.len(), 1);
    assert_eq!(e.firing().len(), 3);
}

#[test]
fn scope_limits_a_rule_to_meters_buses_profiles_and_labels() {
    let scopes = [
        (
            Scope {
                meters: vec!["m2".into()],
                ..Default::default()
            },
            false,
        ),
        (
            Scope {
                meters: vec!["m1".into()],
                ..Default::default()
            },
            true,
        ),
        (
            Scope {
                buses: vec!["other".into()],
                ..Default::default()
            },
            false,
        ),
        (
            Scope {
                profiles: vec!["eastron-sdm630".into()],
                ..Default::default()
            },
            true,
        ),
        (
            Scope {
                labels: BTreeMap::from([("feeder".into(), "F2".into())]),
                ..Default::default()
            },
            false,
        ),
        (
            Scope {
                labels: BTreeMap::from([("feeder".into(), "F1".into())]),
                ..Default::default()
            },
            true,
        ),
    ];
    for (scope, fires) in scopes {
        let mut r = overvoltage(0);
        r.scope = scope.clone();
        let mut e = engine(vec![r]);
        let got = e.on_reading(&reading("m1", 0, &[("voltage_l1_v", 240.0)]), t(0));
        assert_eq!(!got.is_empty(), fires, "{scope:?}");
    }
}

#[test]
fn phase_loss_is_one_phase_near_zero_while_another_is_live() {
    let cases: &[(&str, [f64; 3], Option<&str>)] = &[
        ("L2 lost", [230.0, 3.0, 231.0], Some("l2")),
        ("all normal", [230.0, 229.0, 231.0], None),
        (
            "the whole supply is off: an outage, not phase loss",
            [0.0, 0.0, 0.0],
            None,
        ),
    ];
    for (case, v, phase) in cases {
        let mut e = engine(vec![rule(
            "PhaseLoss",
            Kind::PhaseLoss {
                below_v: 20.0,
                others_above_v: 100.0,
            },
            0,
        )]);
        let got = e.on_reading(
            &reading(
                "m1",
                0,
                &[
                    ("voltage_l1_v", v[0]),
                    ("voltage_l2_v", v[1]),
                    ("voltage_l3_v", v[2]),
                ],
            ),
            t(0),
        );
        assert_eq!(
            got.first().map(|a| a.labels["phase"].as_str()),
            *phase,
            "{case}"
        );
    }
}

#[test]
fn reverse_power_fires_after_its_for_and_clears_at_the_clear_level() {
    let mut e = engine(vec![rule(
        "ReversePower",
        Kind::ReversePower {
            below_w: -50.0,
            clear_w: 0.0,
        },
        60,
    )]);
    let got = drive(
        &mut e,
        "power_w",
        &[
            (0, -500.0),
            (30, -400.0),
            (60, -450.0),
            (70, -10.0),
            (80, 5.0),
        ],
    );
    assert_eq!(got, vec![(60, State::Firing), (80, State::Resolved)]);
}

#[test]
fn an_energy_counter_going_backwards_or_jumping_fires_once_and_resolves_after_the_hold() {
    let kind = Kind::EnergyCounter {
        max_rate_kw: 1000.0,
        tolerance: 0.1,
        hold: Duration::from_secs(3600),
    };
    type Case<'a> = (&'a str, &'a [(u64, f64)], Option<&'a str>);
    let cases: &[Case] = &[
        (
            "steady growth",
            &[(0, 100.0), (10, 100.5), (20, 101.0)],
            None,
        ),
        ("rounding noise", &[(0, 100.0), (10, 99.95)], None),
        // A meter's counter read back by 0.009 kWh (its float register, every digit kept).
        (
            "a tiny step back",
            &[(0, 105901.259), (10, 105901.25)],
            None,
        ),
        (
            "back by exactly the tolerance",
            &[(0, 105901.3), (10, 105901.2)],
            None,
        ),
        (
            "back by just over the tolerance",
            &[(0, 105901.3), (10, 105901.199)],
            Some("backwards"),
        ),
        ("backwards", &[(0, 100.0), (10, 90.0)], Some("backwards")),
        // 500 kWh in 10 s is 180 MW.
        ("a jump", &[(0, 100.0), (10, 600.0)], Some("jump")),
    ];
    for (case, series, change) in cases {
        let mut e = engine(vec![rule("EnergyCounterImplausible", kind.clone(), 0)]);
        let mut events = Vec::new();
        for (at, v) in *series {
            events.extend(e.on_reading(&reading("m1", *at, &[("energy_import_kwh", *v)]), t(*at)));
        }
        assert_eq!(
            events.first().map(|a| a.labels["change"].as_str()),
            *change,
            "{case}"
        );
        if change.is_some() {
            assert_eq!(events.len(), 1, "{case}");
            assert!(
                e.tick(&Status::default(), t(1800)).is_empty(),
                "{case}: held"
            );
            let r = e.tick(&Status::default(), t(3700));
            assert_eq!(r[0].state, State::Resolved, "{case}");
        }
    }
}

#[test]
fn an_energy_counter_is_judged_against_its_last_value_across_a_restart() {
    let kind = Kind::EnergyCounter {
        max_rate_kw: 1000.0,
        tolerance: 0.1,
        hold: Duration::from_secs(3600),
    };
    let counters =
        |import: f64, export: f64| [("energy_import_kwh", import), ("energy_export_kwh", export)];
    let mut e = engine(vec![rule("EnergyCounterImplausible", kind.clone(), 0)]);
    assert!(e
        .on_reading(&reading("m1", 0, &counters(100.0, 50.0)), t(0))
        .is_empty());
    assert!(e
        .on_reading(&reading("m1", 10, &counters(100.5, 50.2)), t(10))
        .is_empty());
    let saved: Saved = serde_json::from_str(&serde_json::to_string(&e.save()).unwrap()).unwrap();
    assert_eq!(
        saved
            .counters
            .iter()
            .map(|c| (c.1.as_str(), c.2))
            .collect::<Vec<_>>(),
        vec![("energy_export_kwh", 50.2), ("energy_import_kwh", 100.5)],
        "saved in order, each at its last value"
    );
    let mut again = engine(vec![rule("EnergyCounterImplausible", kind, 0)]);
    assert!(again.restore(saved, t(20)).is_empty());
    // The export counter went back while meterd was down; the import counter grew.
    let events = again.on_reading(&reading("m1", 30, &counters(101.0, 40.0)), t(30));
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].labels["quantity"], "energy_export_kwh");
    assert_eq!(events[0].labels["change"], "backwards");
}

#[test]
fn clock_drift_counts_either_direction() {
    let mut e = engine(vec![rule(
        "MeterClockDrift",
        Kind::ClockDrift {
            max_s: 60.0,
            clear_s: 30.0,
        },
        0,
    )]);
    let got = drive(
        &mut e,
        "meter_clock_offset_s",
        &[(0, -90.0), (10, -45.0), (20, 10.0), (30, 61.0)],
    );
    assert_eq!(
        got,
        vec![
            (0, State::Firing),
            (20, State::Resolved),
            (30, State::Firing)
        ]
    );
}

#[test]
fn glob_patterns_match_quantities() {
    for (p, s, m) in [
        ("voltage_l*_v", "voltage_l1_v", true),
        ("voltage_l*_v", "voltage_l1_l2_v", true),
        ("voltage_l*_v", "current_l1_a", false),
        ("power_w", "power_w", true),
        ("*", "anything", true),
        ("power_*_w", "power_w", false),
    ] {
        assert_eq!(glob(p, s), m, "{p} {s}");
    }
}

proptest::proptest! {
    /// For any series of values, one alert's events alternate firing, resolved, firing, …;
    /// it fires only above the threshold after `for` of readings above it, and resolves only
    /// below the clear level.
    #[test]
    fn events_alternate_and_respect_the_threshold_the_clear_level_and_the_for(
        values in proptest::collection::vec(225.0f64..245.0, 1..200),
        for_s in 0u64..40,
    ) {
        let mut e = engine(vec![overvoltage(for_s)]);
        let mut last = State::Resolved;
        let mut above_since: Option<u64> = None;
        for (i, v) in values.iter().enumerate() {
            let at = i as u64 * 10;
            if *v > 235.4 {
                above_since.get_or_insert(at);
            } else {
                above_since = None;
            }
            for a in e.on_reading(&reading("m1", at, &[("voltage_l1_v", *v)]), t(at)) {
                proptest::prop_assert_ne!(a.state, last, "two {:?} in a row at {}", a.state, at);
                match a.state {
                    State::Firing => {
                        proptest::prop_assert!(*v > 235.4);
                        proptest::prop_assert!(at - above_since.unwrap_or(at) >= for_s);
                    }
                    _ => proptest::prop_assert!(*v < 233.0),
                }
                last = a.state;
            }
        }
    }
}
