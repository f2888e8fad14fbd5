//! The alert rules that judge status rather than readings, on a virtual clock: meters offline,
//! buses down, the journal, unreachable sinks; and alerts across restarts and reloads.

use std::{collections::BTreeMap, time::Duration};

use super::rules::*;
use super::rules_tests::{drive, engine, meter, overvoltage, rule, t};

fn status(meters: &[(&str, Option<u64>, Option<bool>)]) -> Status {
    Status {
        meters: Some(
            meters
                .iter()
                .map(|(m, last, online)| (std::sync::Arc::from(*m), (last.map(t), *online)))
                .collect(),
        ),
        ..Default::default()
    }
}

#[test]
fn a_meter_is_offline_after_n_intervals_without_a_reading_and_back_with_the_next() {
    let mut e = Engine::new(
        "gw",
        vec![rule("MeterOffline", Kind::MeterOffline { intervals: 3 }, 0)],
        vec![meter("m1", "b1")],
        t(0),
    );
    // Interval 10 s × 3: silent for more than 30 s.
    assert!(e
        .tick(&status(&[("m1", Some(0), Some(true))]), t(30))
        .is_empty());
    let fired = e.tick(&status(&[("m1", Some(0), Some(false))]), t(31));
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].state, State::Firing);
    assert_eq!(fired[0].labels["meter"], "m1");
    assert!(
        e.tick(&status(&[("m1", Some(0), Some(false))]), t(60))
            .is_empty(),
        "no repeat"
    );
    let back = e.tick(&status(&[("m1", Some(61), Some(true))]), t(62));
    assert_eq!(back[0].state, State::Resolved);
}

#[test]
fn a_tick_without_a_meter_sample_leaves_meter_and_bus_alerts_as_they_are() {
    let mut e = Engine::new(
        "gw",
        vec![
            rule("MeterOffline", Kind::MeterOffline { intervals: 3 }, 0),
            rule("BusDown", Kind::BusDown, 0),
        ],
        vec![meter("m1", "b1")],
        t(0),
    );
    let fired = e.tick(&status(&[("m1", Some(0), Some(false))]), t(31));
    assert_eq!(fired.len(), 2, "{fired:?}");
    // Journal and sink rules still run every second; meter and bus rules keep their state.
    assert!(e.tick(&Status::default(), t(32)).is_empty());
    assert_eq!(e.active().len(), 2);
    let back = e.tick(&status(&[("m1", Some(32), Some(true))]), t(33));
    assert_eq!(back.len(), 2, "both resolve with the next sample");
}

#[test]
fn meters_are_sampled_every_polling_interval_but_at_most_every_second_and_at_least_every_ten() {
    let engine_with = |every: &[u64]| {
        let meters: Vec<MeterInfo> = every
            .iter()
            .enumerate()
            .map(|(i, s)| MeterInfo {
                interval: Duration::from_secs(*s),
                ..meter(&format!("m{i}"), "b1")
            })
            .collect();
        Engine::new("gw", vec![], meters, t(0))
    };
    for (intervals, every) in [
        (vec![900, 900], 10),
        (vec![900, 5], 5),
        (vec![1], 1),
        (vec![0], 1),
        (vec![], 10),
    ] {
        assert_eq!(
            engine_with(&intervals).meter_check_every(),
            Duration::from_secs(every),
            "{intervals:?}"
        );
    }
}

#[test]
fn a_meter_never_read_since_the_start_is_offline_once_the_limit_passes() {
    let mut e = Engine::new(
        "gw",
        vec![rule("MeterOffline", Kind::MeterOffline { intervals: 3 }, 0)],
        vec![meter("m1", "b1")],
        t(0),
    );
    assert!(e.tick(&status(&[]), t(20)).is_empty());
    assert_eq!(e.tick(&status(&[]), t(31)).len(), 1);
}

#[test]
fn a_bus_is_down_when_every_meter_on_it_is_offline() {
    use State::*;
    type Case<'a> = (&'a str, &'a [Option<bool>], &'a [State]);
    let cases: &[Case] = &[
        ("all offline", &[Some(false), Some(false)], &[Firing]),
        ("one answers", &[Some(false), Some(true)], &[]),
        ("not yet known", &[None, Some(false)], &[]),
    ];
    for (case, online, expected) in cases {
        let mut e = engine(vec![rule("BusDown", Kind::BusDown, 0)]);
        let s = status(&[("m1", None, online[0]), ("m2", None, online[1])]);
        let got: Vec<State> = e.tick(&s, t(5)).iter().map(|a| a.state).collect();
        assert_eq!(&got, expected, "{case}");
    }
    let mut e = engine(vec![rule("BusDown", Kind::BusDown, 0)]);
    let down = e.tick(
        &status(&[("m1", None, Some(false)), ("m2", None, Some(false))]),
        t(0),
    );
    assert_eq!(down[0].labels.get("meter"), None);
    assert_eq!(down[0].labels["bus"], "b1");
    let up = e.tick(
        &status(&[("m1", None, Some(true)), ("m2", None, Some(false))]),
        t(9),
    );
    assert_eq!(up[0].state, Resolved);
}

#[test]
fn the_journal_alerts_on_filling_dropping_and_failing() {
    let mut e = engine(vec![
        rule(
            "JournalFilling",
            Kind::JournalFilling {
                above_percent: 80.0,
                clear_percent: 70.0,
            },
            0,
        ),
        rule(
            "JournalDropping",
            Kind::JournalDropping {
                hold: Duration::from_secs(600),
            },
            0,
        ),
        rule("JournalUnwritable", Kind::JournalUnwritable, 0),
    ]);
    let s = |used: f64, dropped: u64, failure: Option<&str>| Status {
        journal_used: used,
        journal_dropped: dropped,
        journal_failure: failure.map(String::from),
        ..Default::default()
    };
    let names = |v: Vec<Alert>| -> Vec<(String, State)> {
        v.into_iter()
            .map(|a| (a.name().to_string(), a.state))
            .collect()
    };
    assert_eq!(names(e.tick(&s(0.5, 0, None), t(0))), vec![]);
    assert_eq!(
        names(e.tick(&s(0.85, 0, None), t(1))),
        vec![("JournalFilling".into(), State::Firing)]
    );
    assert_eq!(
        names(e.tick(&s(0.75, 0, None), t(2))),
        vec![],
        "inside the band"
    );
    assert_eq!(
        names(e.tick(&s(0.99, 40, None), t(3))),
        vec![("JournalDropping".into(), State::Firing)]
    );
    assert_eq!(
        names(e.tick(&s(0.99, 80, None), t(100))),
        vec![],
        "still firing, hold renewed"
    );
    assert_eq!(
        names(e.tick(&s(0.6, 80, Some("ENOSPC")), t(200))),
        vec![
            ("JournalFilling".into(), State::Resolved),
            ("JournalUnwritable".into(), State::Firing)
        ]
    );
    assert_eq!(
        names(e.tick(&s(0.6, 80, None), t(701))),
        vec![
            ("JournalUnwritable".into(), State::Resolved),
            ("JournalDropping".into(), State::Resolved)
        ]
    );
}

#[test]
fn a_sink_is_unreachable_once_it_has_failed_for_longer_than_the_for() {
    let mut e = engine(vec![rule("SinkUnreachable", Kind::SinkUnreachable, 300)]);
    let failing = |since: Option<u64>| Status {
        sinks: BTreeMap::from([("mqtt".to_string(), since.map(t))]),
        ..Default::default()
    };
    assert!(e.tick(&failing(Some(0)), t(0)).is_empty());
    assert!(e.tick(&failing(Some(0)), t(299)).is_empty());
    let fired = e.tick(&failing(Some(0)), t(300));
    assert_eq!(fired[0].labels["sink"], "mqtt");
    assert_eq!(fired[0].value, 300.0);
    assert_eq!(e.tick(&failing(None), t(301))[0].state, State::Resolved);
}

#[test]
fn after_a_restart_a_firing_alert_stays_firing_without_a_new_event_and_still_resolves() {
    let mut e = engine(vec![overvoltage(0)]);
    assert_eq!(drive(&mut e, "voltage_l1_v", &[(0, 240.0)]).len(), 1);
    let saved: Saved = serde_json::from_str(&serde_json::to_string(&e.save()).unwrap()).unwrap();

    let mut again = engine(vec![overvoltage(0)]);
    assert!(again.restore(saved, t(100)).is_empty());
    assert_eq!(again.firing().len(), 1);
    assert!(
        drive(&mut again, "voltage_l1_v", &[(110, 241.0)]).is_empty(),
        "no second page"
    );
    assert_eq!(
        drive(&mut again, "voltage_l1_v", &[(120, 230.0)]),
        vec![(120, State::Resolved)]
    );
}

#[test]
fn an_alert_whose_rule_or_meter_is_gone_is_resolved_on_restore_and_on_reload() {
    let mut e = engine(vec![overvoltage(0)]);
    drive(&mut e, "voltage_l1_v", &[(0, 240.0)]);
    let saved = e.save();
    let mut without_rule = engine(vec![]);
    let r = without_rule.restore(saved.clone(), t(5));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].state, State::Resolved);

    let resolved = e.reconfigure(vec![overvoltage(0)], vec![meter("m2", "b1")], t(6));
    assert_eq!(resolved.len(), 1, "m1 is gone");
    assert!(e.firing().is_empty());
}
