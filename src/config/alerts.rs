//! `[alerts]`: built-in rules with defaults, threshold rules, notifiers.

use std::{collections::BTreeMap, path::Path, time::Duration};

use super::{
    report::{k, Reporter, Seg},
    secret::secret,
};
use crate::{
    alerts::{
        rules::{glob, Kind, Rule, Scope, Severity},
        AlertsConfig, Notifier, NotifierKind,
    },
    config::{
        raw::{RawAlerts, RawBuiltin},
        BusConfig,
    },
};

/// The built-in rules: config key, alertname, severity, `for`, and the parameters it takes.
const BUILTINS: &[(&str, &str, Severity, u64, &[&str])] = &[
    (
        "meter_offline",
        "MeterOffline",
        Severity::Warning,
        0,
        &["intervals"],
    ),
    ("bus_down", "BusDown", Severity::Critical, 0, &[]),
    (
        "phase_loss",
        "PhaseLoss",
        Severity::Critical,
        10,
        &["below_v", "others_above_v"],
    ),
    (
        "reverse_power",
        "ReversePower",
        Severity::Warning,
        60,
        &["below_w", "clear_w"],
    ),
    (
        "energy_counter",
        "EnergyCounterImplausible",
        Severity::Warning,
        0,
        &["max_rate_kw", "tolerance_kwh", "hold"],
    ),
    (
        "clock_drift",
        "MeterClockDrift",
        Severity::Warning,
        0,
        &["max_s", "clear_s"],
    ),
    (
        "journal_filling",
        "JournalFilling",
        Severity::Warning,
        0,
        &["above_percent", "clear_percent"],
    ),
    (
        "journal_dropping",
        "JournalDropping",
        Severity::Critical,
        0,
        &["hold"],
    ),
    (
        "journal_unwritable",
        "JournalUnwritable",
        Severity::Critical,
        0,
        &[],
    ),
    (
        "relay_refused",
        "RelayCommandRefused",
        Severity::Critical,
        0,
        &["hold"],
    ),
    (
        "sink_unreachable",
        "SinkUnreachable",
        Severity::Warning,
        300,
        &[],
    ),
];

/// Builtins that judge meters: the others take no meter scope.
const PER_METER: &[&str] = &[
    "meter_offline",
    "bus_down",
    "phase_loss",
    "reverse_power",
    "energy_counter",
    "clock_drift",
];

fn given_params(b: &RawBuiltin) -> Vec<&'static str> {
    let mut v = Vec::new();
    let mut add = |name: &'static str, set: bool| {
        if set {
            v.push(name);
        }
    };
    add("intervals", b.intervals.is_some());
    add("below_v", b.below_v.is_some());
    add("others_above_v", b.others_above_v.is_some());
    add("below_w", b.below_w.is_some());
    add("clear_w", b.clear_w.is_some());
    add("max_rate_kw", b.max_rate_kw.is_some());
    add("tolerance_kwh", b.tolerance_kwh.is_some());
    add("hold", b.hold.is_some());
    add("max_s", b.max_s.is_some());
    add("clear_s", b.clear_s.is_some());
    add("above_percent", b.above_percent.is_some());
    add("clear_percent", b.clear_percent.is_some());
    v
}

fn check_name(r: &mut Reporter, path: &[Seg], what: &str, v: &str) {
    let ok = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !ok {
        r.error(
            path,
            format!("{v:?}: a {what} uses letters, digits, '_', '-' or '.'"),
        );
    }
}

fn check_labels(r: &mut Reporter, path: &[Seg], labels: &BTreeMap<String, String>) {
    for key in labels.keys() {
        let ok = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            r.error(
                &[path, &[k(key)]].concat(),
                "a label name is letters, digits and '_', not starting with a digit (Prometheus label rules)",
            );
        }
    }
}

/// A notifier's name: given, or its kind (numbered when there are several of that kind).
fn notifier_name(given: Option<String>, kind: &str, several: bool, i: usize) -> String {
    given.unwrap_or_else(|| {
        if several {
            format!("{kind}-{}", i + 1)
        } else {
            kind.to_string()
        }
    })
}

fn check_notifier_name(r: &mut Reporter, path: &[Seg], name: &str) {
    check_name(r, path, "notifier name", name);
    if matches!(name, "mqtt" | "influxdb") {
        r.error(
            path,
            format!("a notifier cannot be named {name:?}: the sink of that name has its own alert outbox"),
        );
    }
}

fn check_url(r: &mut Reporter, path: &[Seg], url: &str) {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        // Not the URL itself: a webhook's path often is its secret, and reload errors are logged.
        r.error(path, "use http://… or https://…");
    }
}

pub(super) fn check_alerts(
    r: &mut Reporter,
    raw: RawAlerts,
    buses: &[BusConfig],
    base: &Path,
) -> AlertsConfig {
    let top = [k("alerts")];
    let meter_ids: Vec<String> = buses
        .iter()
        .flat_map(|b| b.meters.iter().map(|m| m.id.clone()))
        .collect();
    let bus_names: Vec<String> = buses.iter().map(|b| b.name.clone()).collect();
    let (meter_ids, bus_names) = (&meter_ids[..], &bus_names[..]);
    let mut rules = Vec::new();
    for key in raw.builtin.keys() {
        if !BUILTINS.iter().any(|(name, ..)| name == key) {
            let known: Vec<&str> = BUILTINS.iter().map(|b| b.0).collect();
            r.error(
                &[k("alerts"), k("builtin"), k(key)],
                format!("unknown built-in rule; known: {}", known.join(", ")),
            );
        }
    }
    for (key, alertname, severity, for_s, params) in BUILTINS {
        let b = raw.builtin.get(*key).cloned().unwrap_or_default();
        let at = |name: &str| vec![k("alerts"), k("builtin"), k(key), k(name)];
        for p in given_params(&b) {
            if !params.contains(&p) {
                r.error(
                    &at(p),
                    format!(
                        "{key} takes no {p}; its parameters: {}",
                        if params.is_empty() {
                            "none".to_string()
                        } else {
                            params.join(", ")
                        }
                    ),
                );
            }
        }
        let scoped = !(b.meters.is_empty()
            && b.buses.is_empty()
            && b.profiles.is_empty()
            && b.match_labels.is_empty());
        if scoped && !PER_METER.contains(key) {
            r.error(&at("meters"), format!("{key} is about the gateway, not meters: it takes no meters, buses, profiles or match_labels"));
        }
        check_scope(r, &at(""), &b.meters, &b.buses, meter_ids, bus_names);
        check_labels(r, &at("labels"), &b.labels);
        if !b.enabled.unwrap_or(true) {
            continue;
        }
        let positive = |r: &mut Reporter, name: &str, v: Option<f64>, default: f64| -> f64 {
            let v = v.unwrap_or(default);
            if !(v.is_finite() && v > 0.0) {
                r.error(&at(name), "must be a number above 0");
            }
            v
        };
        let kind = match *key {
            "meter_offline" => {
                let intervals = b.intervals.unwrap_or(3);
                if intervals == 0 {
                    r.error(&at("intervals"), "must be at least 1");
                }
                Kind::MeterOffline {
                    intervals: intervals.max(1),
                }
            }
            "bus_down" => Kind::BusDown,
            "phase_loss" => {
                let below_v = positive(r, "below_v", b.below_v, 20.0);
                let others_above_v = positive(r, "others_above_v", b.others_above_v, 100.0);
                if others_above_v <= below_v {
                    r.error(&at("others_above_v"), "must be above below_v");
                }
                Kind::PhaseLoss {
                    below_v,
                    others_above_v,
                }
            }
            "reverse_power" => {
                let below_w = b.below_w.unwrap_or(-50.0);
                let clear_w = b.clear_w.unwrap_or(0.0);
                if below_w > clear_w {
                    r.error(
                        &at("clear_w"),
                        "must be at or above below_w (it is where the alert resolves)",
                    );
                }
                Kind::ReversePower { below_w, clear_w }
            }
            "energy_counter" => Kind::EnergyCounter {
                max_rate_kw: positive(r, "max_rate_kw", b.max_rate_kw, 10_000.0),
                tolerance: b.tolerance_kwh.unwrap_or(0.1).abs(),
                hold: b.hold.unwrap_or(Duration::from_secs(3600)),
            },
            "clock_drift" => {
                let max_s = positive(r, "max_s", b.max_s, 60.0);
                let clear_s = b.clear_s.unwrap_or(max_s / 2.0);
                if clear_s > max_s || clear_s < 0.0 {
                    r.error(&at("clear_s"), "must be 0 to max_s");
                }
                Kind::ClockDrift { max_s, clear_s }
            }
            "journal_filling" => {
                let above = positive(r, "above_percent", b.above_percent, 80.0);
                let clear = b.clear_percent.unwrap_or(above - 10.0);
                if above > 100.0 {
                    r.error(&at("above_percent"), "must be at most 100");
                }
                if clear > above {
                    r.error(&at("clear_percent"), "must be at or below above_percent");
                }
                Kind::JournalFilling {
                    above_percent: above,
                    clear_percent: clear,
                }
            }
            "journal_dropping" => Kind::JournalDropping {
                hold: b.hold.unwrap_or(Duration::from_secs(3600)),
            },
            "journal_unwritable" => Kind::JournalUnwritable,
            "relay_refused" => Kind::RelayRefused {
                hold: b.hold.unwrap_or(Duration::from_secs(3600)),
            },
            _ => Kind::SinkUnreachable,
        };
        rules.push(Rule {
            name: alertname.to_string(),
            kind,
            for_: b.for_.unwrap_or(Duration::from_secs(*for_s)),
            severity: b.severity.unwrap_or(*severity),
            scope: Scope {
                meters: b.meters,
                buses: b.buses,
                profiles: b.profiles,
                labels: b.match_labels,
            },
            labels: b.labels,
            summary: b.summary,
        });
    }

    for (i, t) in raw.rule.into_iter().enumerate() {
        let at = |name: &str| vec![k("alerts"), k("rule"), Seg::Index(i), k(name)];
        check_name(r, &at("name"), "rule name", &t.name);
        if rules.iter().any(|x: &Rule| x.name == t.name) {
            r.error(
                &at("name"),
                format!(
                    "{:?} is already a rule's name (built-in names included)",
                    t.name
                ),
            );
        }
        if t.quantity.is_empty() {
            r.error(
                &at("quantity"),
                "name a quantity, e.g. \"voltage_l1_v\" or \"voltage_l*_v\"",
            );
        }
        check_scope(r, &at(""), &t.meters, &t.buses, meter_ids, bus_names);
        check_labels(r, &at("labels"), &t.labels);
        let threshold = match (t.above, t.below) {
            (Some(a), None) => a,
            (None, Some(b)) => b,
            _ => {
                r.error(&at("above"), "give exactly one of above and below");
                continue;
            }
        };
        let clear = t.clear.unwrap_or(threshold);
        if t.above.is_some() && clear > threshold {
            r.error(&at("clear"), format!("{clear} is above the threshold {threshold}: an alert above a level clears below it"));
        }
        if t.below.is_some() && clear < threshold {
            r.error(&at("clear"), format!("{clear} is below the threshold {threshold}: an alert below a level clears above it"));
        }
        let scope = Scope {
            meters: t.meters.clone(),
            buses: t.buses.clone(),
            profiles: t.profiles.clone(),
            labels: t.match_labels.clone(),
        };
        check_quantity(r, &at("quantity"), &t.quantity, &scope, buses);
        rules.push(Rule {
            name: t.name,
            kind: Kind::Threshold {
                quantity: t.quantity.as_str().into(),
                above: t.above,
                below: t.below,
                clear,
            },
            for_: t.for_.unwrap_or_default(),
            severity: t.severity.unwrap_or(Severity::Warning),
            scope: Scope {
                meters: t.meters,
                buses: t.buses,
                profiles: t.profiles,
                labels: t.match_labels,
            },
            labels: t.labels,
            summary: t.summary,
        });
    }

    let mut notifiers: Vec<Notifier> = Vec::new();
    let many_am = raw.alertmanager.len() > 1;
    for (i, a) in raw.alertmanager.into_iter().enumerate() {
        let at = |name: &str| vec![k("alerts"), k("alertmanager"), Seg::Index(i), k(name)];
        check_url(r, &at("url"), &a.url);
        let name = notifier_name(a.name, "alertmanager", many_am, i);
        check_notifier_name(r, &at("name"), &name);
        notifiers.push(Notifier {
            name,
            timeout: a.timeout.unwrap_or(Duration::from_secs(10)),
            kind: NotifierKind::Alertmanager {
                url: a.url.trim_end_matches('/').to_string(),
            },
        });
    }
    let many_wh = raw.webhook.len() > 1;
    for (i, w) in raw.webhook.into_iter().enumerate() {
        let prefix = [k("alerts"), k("webhook"), Seg::Index(i)];
        let at = |name: &str| [&prefix[..], &[k(name)]].concat();
        check_url(r, &at("url"), &w.url);
        let bearer = secret(
            r,
            &prefix,
            "bearer_token",
            w.bearer_token,
            w.bearer_token_file,
            w.bearer_token_env,
            base,
        );
        let hmac = secret(
            r,
            &prefix,
            "hmac_secret",
            w.hmac_secret,
            w.hmac_secret_file,
            w.hmac_secret_env,
            base,
        );
        let name = notifier_name(w.name, "webhook", many_wh, i);
        check_notifier_name(r, &at("name"), &name);
        notifiers.push(Notifier {
            name,
            timeout: w.timeout.unwrap_or(Duration::from_secs(10)),
            kind: NotifierKind::Webhook {
                url: w.url,
                bearer,
                hmac,
            },
        });
    }
    let mut seen = std::collections::HashSet::new();
    for n in &notifiers {
        if !seen.insert(n.name.clone()) {
            r.error(
                &top,
                format!(
                    "two notifiers are named {:?}: names keep their outboxes apart",
                    n.name
                ),
            );
        }
    }
    AlertsConfig {
        rules,
        resend: raw.resend.unwrap_or(Duration::from_secs(60)),
        mqtt: raw.mqtt.unwrap_or(true),
        influxdb: raw.influxdb.unwrap_or(true),
        notifiers,
    }
}

/// A threshold rule whose quantity no meter in its scope reports would never fire: most
/// likely a typo. Not checked when no meter is in scope (a config without buses yet).
pub(super) fn check_quantity(
    r: &mut Reporter,
    at: &[Seg],
    pattern: &str,
    scope: &Scope,
    buses: &[BusConfig],
) {
    let mut known = std::collections::BTreeSet::new();
    for b in buses {
        for m in b.meters.iter() {
            if scope.matches(&m.info(b)) {
                known.extend(m.profile.quantities().map(str::to_string));
            }
        }
    }
    if !known.is_empty() && !known.iter().any(|q| glob(pattern, q)) {
        let list: Vec<&str> = known.iter().map(String::as_str).collect();
        r.error(
            at,
            format!(
                "no meter in the rule's scope reports {pattern:?}; their quantities: {}",
                list.join(", ")
            ),
        );
    }
}

pub(super) fn check_scope(
    r: &mut Reporter,
    at: &[Seg],
    meters: &[String],
    buses: &[String],
    meter_ids: &[String],
    bus_names: &[String],
) {
    let base = &at[..at.len() - 1];
    for m in meters {
        if !meter_ids.contains(m) {
            r.error(
                &[base, &[k("meters")]].concat(),
                format!("no meter {m:?} in this config"),
            );
        }
    }
    for b in buses {
        if !bus_names.contains(b) {
            r.error(
                &[base, &[k("buses")]].concat(),
                format!("no bus {b:?} in this config"),
            );
        }
    }
}
