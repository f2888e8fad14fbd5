//! Every duration a config can set, with the range it must fall in and why. A duration outside
//! its range is a config error, so no value that `validate` accepts can overflow time
//! arithmetic at run time (`"300000000000y"` once did), and none is absurd for what it does.

use std::time::Duration;

use super::report::Seg;
use meterd_protocols::profile::INTERVAL_RANGE as INTERVAL;

const S: Duration = Duration::from_secs(1);
const MIN: Duration = Duration::from_secs(60);
const H: Duration = Duration::from_secs(3600);
const D: Duration = Duration::from_secs(86_400);

/// A duration key (its path, `*` for any key or index at that place), its range, and why.
pub struct Bound {
    pub path: &'static str,
    pub min: Duration,
    pub max: Duration,
    pub why: &'static str,
}

const fn b(path: &'static str, min: Duration, max: Duration, why: &'static str) -> Bound {
    Bound {
        path,
        min,
        max,
        why,
    }
}

pub const BOUNDS: &[Bound] = &[
    b("bus.*.timeout", Duration::from_millis(10), MIN, "a meter answers within 500 ms by the standard; beyond a minute a request only holds the line"),
    b("bus.*.frame_gap", Duration::ZERO, Duration::from_secs(10), "the silence between frames is milliseconds; seconds only slow the line"),
    b("bus.*.backoff", Duration::from_millis(100), D, "a meter that failed is tried again at least daily"),
    b("bus.*.backoff_max", Duration::from_millis(100), D, "a meter that failed is tried again at least daily"),
    b("bus.*.time_sync", S, Duration::from_secs(30 * 86_400), "clocks are synced at least once a month (a demo may sync every second; a line usually hourly or daily)"),
    b("bus.*.time_sync_max", S, D, "a clock off by more than a day needs a person, not a broadcast"),
    b("bus.*.meter.*.interval", *INTERVAL.start(), *INTERVAL.end(), "no meter answers faster than 10 ms; a month is the longest useful poll (freezes cover longer)"),
    b("bus.*.meter.*.intervals.*", *INTERVAL.start(), *INTERVAL.end(), "no meter answers faster than 10 ms; a month is the longest useful poll (freezes cover longer)"),
    b("mqtt.keep_alive", Duration::from_secs(5), Duration::from_secs(65_535), "MQTT carries the keep-alive in 16 bits of seconds"),
    b("influxdb.batch_interval", Duration::from_millis(10), H, "a batch waits at most an hour for more readings"),
    b("influxdb.status_interval", Duration::from_millis(100), D, "status points at least daily, at most ten a second"),
    b("influxdb.timeout", Duration::from_millis(100), Duration::from_secs(600), "a write that takes ten minutes has failed"),
    b("remote.window", Duration::from_secs(10), H, "a signed command is valid this long either way of the gateway's clock: clocks drift seconds, and a replay window of more than an hour is an invitation"),
    b("mqtt.exception.heartbeat", S, D, "a quiet value is sent at least daily, or dashboards lose it; more often than every second is every reading"),
    b("mqtt.exception.rule.*.heartbeat", S, D, "a quiet value is sent at least daily, or dashboards lose it; more often than every second is every reading"),
    b("influxdb.exception.heartbeat", S, D, "a quiet value is sent at least daily, or dashboards lose it; more often than every second is every reading"),
    b("influxdb.exception.rule.*.heartbeat", S, D, "a quiet value is sent at least daily, or dashboards lose it; more often than every second is every reading"),
    b("journal.fsync", Duration::from_millis(10), H, "the bound on what a power failure loses: an hour is already much"),
    b("journal.cursor_sync", Duration::from_millis(10), H, "the bound on what a power failure makes a sink send twice: an hour of duplicates is already much"),
    b("alerts.resend", S, D, "Alertmanager forgets a firing alert that is not sent again before it expires"),
    b("alerts.rule.*.for", Duration::ZERO, Duration::from_secs(30 * 86_400), "a condition held for a month is long past alerting"),
    b("alerts.builtin.*.for", Duration::ZERO, Duration::from_secs(30 * 86_400), "a condition held for a month is long past alerting"),
    b("alerts.builtin.*.hold", Duration::ZERO, Duration::from_secs(365 * 86_400), "an event alert resolves within a year"),
    b("alerts.webhook.*.timeout", Duration::from_millis(100), Duration::from_secs(600), "a delivery that takes ten minutes has failed"),
    b("alerts.alertmanager.*.timeout", Duration::from_millis(100), Duration::from_secs(600), "a delivery that takes ten minutes has failed"),
];

fn matches(pattern: &str, path: &[Seg]) -> bool {
    let parts: Vec<&str> = pattern.split('.').collect();
    parts.len() == path.len()
        && parts.iter().zip(path).all(|(p, s)| match s {
            Seg::Key(k) => *p == "*" || p == k,
            Seg::Index(_) => *p == "*",
        })
}

/// A bound as a config would write it ("31d", "100ms"), in its largest whole unit.
fn show(d: Duration) -> String {
    let s = d.as_secs();
    match (s, d.subsec_nanos()) {
        (0, 0) => "0s".into(),
        (s, 0) if s % 86_400 == 0 => format!("{}d", s / 86_400),
        (s, 0) if s % 3600 == 0 => format!("{}h", s / 3600),
        (s, 0) if s % 60 == 0 => format!("{}m", s / 60),
        (s, 0) => format!("{s}s"),
        _ => format!("{}ms", d.as_millis()),
    }
}

/// Every duration in `table` outside its range: its path and the message.
pub(super) fn check(table: &toml::Table) -> Vec<(Vec<Seg>, String)> {
    let mut out = Vec::new();
    for (path, s) in strings(table) {
        let Some(bound) = BOUNDS.iter().find(|b| matches(b.path, &path)) else {
            continue;
        };
        // One that does not parse is reported by the typed parse.
        let Ok(d) = humantime::parse_duration(s) else {
            continue;
        };
        if d < bound.min || d > bound.max {
            out.push((
                path,
                format!(
                    "{s:?} is outside {} to {}: {}",
                    show(bound.min),
                    show(bound.max),
                    bound.why
                ),
            ));
        }
    }
    out
}

/// Every string in `table`, with its path.
fn strings(table: &toml::Table) -> Vec<(Vec<Seg>, &str)> {
    fn walk<'a>(v: &'a toml::Value, path: &mut Vec<Seg>, out: &mut Vec<(Vec<Seg>, &'a str)>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    path.push(Seg::Key(k.clone()));
                    walk(v, path, out);
                    path.pop();
                }
            }
            toml::Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    path.push(Seg::Index(i));
                    walk(v, path, out);
                    path.pop();
                }
            }
            toml::Value::String(s) => out.push((path.clone(), s)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    let mut path = Vec::new();
    for (k, v) in table {
        path.push(Seg::Key(k.clone()));
        walk(v, &mut path, &mut out);
        path.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_duration_key_of_the_example_config_has_a_bound() {
        let table: toml::Table = toml::from_str(super::super::TEMPLATE).unwrap();
        let unbounded: Vec<String> = strings(&table)
            .into_iter()
            .filter(|(_, s)| humantime::parse_duration(s).is_ok() && s.parse::<f64>().is_err())
            .filter(|(p, _)| !BOUNDS.iter().any(|b| matches(b.path, p)))
            .map(|(p, _)| format!("{p:?}"))
            .collect();
        assert!(unbounded.is_empty(), "no bound for {unbounded:?}");
    }

    #[test]
    fn a_duration_outside_its_range_names_the_range_and_why() {
        let table: toml::Table = toml::from_str(
            "[[bus]]\ntimeout = \"18446744073709551615s\"\n[[bus.meter]]\ninterval = \"300000000000y\"\n\
             [journal]\nfsync = \"1s\"\n[mqtt]\nkeep_alive = \"1d\"\n",
        )
        .unwrap();
        let problems: Vec<String> = check(&table).into_iter().map(|(_, m)| m).collect();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems.iter().any(|p| p.contains("outside 10ms to 1m:")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("16 bits")),
            "{problems:?}"
        );
    }
}
