//! `[mqtt.exception]` and `[influxdb.exception]`: report by exception (see
//! [`crate::exception`]).

use std::{sync::Arc, time::Duration};

use super::{
    alerts::{check_quantity, check_scope},
    raw::{RawDeadband, RawException},
    report::{k, Reporter, Seg},
    BusConfig,
};
use crate::{
    alerts::rules::Scope,
    exception::{Deadband, Exception, Rule},
};

/// A value is sent at least this often when no heartbeat is given.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15 * 60);

pub(super) fn check_exception(
    r: &mut Reporter,
    sink: &str,
    raw: RawException,
    buses: &[BusConfig],
) -> Arc<Exception> {
    let default_band = raw
        .deadband
        .and_then(|d| deadband(r, &[k(sink), k("exception"), k("deadband")], d))
        .unwrap_or(Deadband::Absolute(0.0));
    let heartbeat = raw.heartbeat.unwrap_or(DEFAULT_HEARTBEAT);
    let meter_ids: Vec<String> = buses
        .iter()
        .flat_map(|b| b.meters.iter().map(|m| m.id.clone()))
        .collect();
    let bus_names: Vec<String> = buses.iter().map(|b| b.name.clone()).collect();
    let mut rules = Vec::new();
    for (i, rule) in raw.rule.into_iter().enumerate() {
        let at = |key: &str| vec![k(sink), k("exception"), k("rule"), Seg::Index(i), k(key)];
        if rule.deadband.is_none() && rule.heartbeat.is_none() {
            r.error(
                &at("deadband"),
                "give deadband, heartbeat or both (a rule without them changes nothing)",
            );
        }
        check_scope(
            r,
            &at(""),
            &rule.meters,
            &rule.buses,
            &meter_ids,
            &bus_names,
        );
        for p in &rule.profiles {
            let used = buses
                .iter()
                .any(|b| b.meters.iter().any(|m| &m.profile.name == p));
            if !used {
                r.error(
                    &at("profiles"),
                    format!("no meter in this config uses the profile {p:?}"),
                );
            }
        }
        let scope = Scope {
            meters: rule.meters.clone(),
            buses: rule.buses.clone(),
            profiles: rule.profiles.clone(),
            labels: Default::default(),
        };
        for q in &rule.quantities {
            check_quantity(r, &at("quantities"), q, &scope, buses);
        }
        let band = rule.deadband.and_then(|d| deadband(r, &at("deadband"), d));
        rules.push(Rule {
            meters: rule.meters,
            buses: rule.buses,
            profiles: rule.profiles,
            quantities: rule.quantities,
            deadband: band.unwrap_or(default_band),
            heartbeat: rule.heartbeat.unwrap_or(heartbeat),
        });
    }
    Arc::new(Exception {
        rules,
        deadband: default_band,
        heartbeat,
    })
}

/// `0.5` (the quantity's unit) or `"1%"` (of the last value sent).
fn deadband(r: &mut Reporter, at: &[Seg], raw: RawDeadband) -> Option<Deadband> {
    const HOW: &str =
        "give a change in the quantity's unit (0.5) or a percent of the last value sent (\"1%\")";
    let (number, percent) = match &raw {
        RawDeadband::Number(n) => (Some(*n), false),
        RawDeadband::Text(t) => match t.trim().strip_suffix('%') {
            Some(p) => (p.trim().parse::<f64>().ok(), true),
            None => (t.trim().parse::<f64>().ok(), false),
        },
    };
    let shown = match &raw {
        RawDeadband::Number(n) => n.to_string(),
        RawDeadband::Text(t) => format!("{t:?}"),
    };
    match number {
        Some(n) if percent && (0.0..=100.0).contains(&n) => Some(Deadband::Percent(n)),
        Some(_) if percent => {
            r.error(at, format!("{shown}: a percent deadband is 0 to 100"));
            None
        }
        Some(n) if n.is_finite() && n >= 0.0 => Some(Deadband::Absolute(n)),
        Some(_) => {
            r.error(at, format!("{shown}: a deadband is zero or more"));
            None
        }
        None => {
            r.error(at, format!("{shown}: {HOW}"));
            None
        }
    }
}
