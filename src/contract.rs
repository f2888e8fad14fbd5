//! meterd's external formats, in one place: MQTT topics, the reading and alert JSON, InfluxDB
//! line protocol (readings, alert events, status points) and its escaping, Alertmanager's
//! alert JSON, and time stamps. What `../shared/design/contract.md` and the README promise is
//! written here and nowhere else.

use std::{
    fmt::Write as _,
    time::{Duration, SystemTime},
};

use crate::{
    alerts::rules::{Alert, State},
    reading::Reading,
    state::LiveState,
};

/// Milliseconds since the Unix epoch (0 before it): InfluxDB time stamps.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `2026-11-27T08:30:05.123Z`: times in JSON.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// `fmt::Write` into a byte buffer.
struct VecWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

pub struct Topics {
    prefix: String,
}

impl Topics {
    pub fn new(prefix: &str, gateway: &str) -> Topics {
        Topics {
            prefix: format!("{prefix}/{gateway}"),
        }
    }
    /// `prefix/gateway` and `parts`, in one allocation of the exact size (a topic is made
    /// for every reading; `format!` grew its string twice on the way).
    fn topic(&self, parts: &[&str]) -> String {
        let mut t =
            String::with_capacity(self.prefix.len() + parts.iter().map(|p| p.len()).sum::<usize>());
        t.push_str(&self.prefix);
        for p in parts {
            t.push_str(p);
        }
        t
    }
    pub fn status(&self) -> String {
        self.topic(&["/status"])
    }
    pub fn reading(&self, meter: &str) -> String {
        self.topic(&["/meter/", meter, "/reading"])
    }
    pub fn alert(&self) -> String {
        self.topic(&["/alert"])
    }
    pub fn availability(&self, meter: &str) -> String {
        self.topic(&["/meter/", meter, "/availability"])
    }
}

impl Reading {
    /// The MQTT payload of the contract:
    /// `{"ts":"…Z","meter":"…","bus":"…","seq":1,"values":{"voltage_l1_v":230.1}}`.
    ///
    /// Written straight into one buffer, keys in that order and values in the reading's order;
    /// a value that is not a finite number is left out (JSON has none). Strings are escaped and
    /// numbers formatted by serde_json. (Building a `serde_json::Value` first cost a map, a key
    /// string and a node per value: a large share of a reading's CPU.)
    pub fn to_json(&self) -> Vec<u8> {
        self.to_json_only(|_| true)
    }

    /// [`Reading::to_json`] with only the values at the indices `keep` accepts (report by
    /// exception).
    pub fn to_json_only(&self, keep: impl Fn(usize) -> bool) -> Vec<u8> {
        use serde_json::ser::Formatter as _;
        let mut out = Vec::with_capacity(96 + self.values.len() * 32);
        let mut f = serde_json::ser::CompactFormatter;
        // Writing into a Vec cannot fail, nor can serialising a str.
        let string = |out: &mut Vec<u8>, s: &str| {
            let _ = serde_json::to_writer(&mut *out, s);
        };
        out.extend_from_slice(b"{\"ts\":\"");
        let _ = write!(
            VecWriter(&mut out),
            "{}",
            humantime::format_rfc3339_millis(self.ts)
        );
        out.extend_from_slice(b"\",\"meter\":");
        string(&mut out, &self.meter);
        out.extend_from_slice(b",\"bus\":");
        string(&mut out, &self.bus);
        out.extend_from_slice(b",\"seq\":");
        let _ = f.write_u64(&mut out, self.seq);
        out.extend_from_slice(b",\"values\":{");
        let mut first = true;
        let kept = self.values.iter().enumerate();
        for (_, (q, v)) in kept.filter(|(i, (_, v))| v.is_finite() && keep(*i)) {
            if !first {
                out.push(b',');
            }
            first = false;
            string(&mut out, q);
            out.push(b':');
            let _ = f.write_f64(&mut out, v);
        }
        out.push(b'}');
        if self.on_demand {
            // Not in the contract's example: readings a remote `read` made say so.
            out.extend_from_slice(b",\"on_demand\":true");
        }
        out.push(b'}');
        out
    }

    /// One InfluxDB line (measurement `meter`, tags gateway/bus/meter/profile, a float field per
    /// quantity, millisecond timestamp), appended to `out` with a trailing newline. A reading
    /// without values writes nothing.
    pub fn write_line(&self, gateway: &str, out: &mut String) {
        self.write_line_only(gateway, out, |_| true)
    }

    /// [`Reading::write_line`] with only the fields at the indices `keep` accepts (report by
    /// exception); with none left it writes nothing.
    pub fn write_line_only(&self, gateway: &str, out: &mut String, keep: impl Fn(usize) -> bool) {
        let start = out.len();
        out.push_str("meter,gateway=");
        escape_tag(gateway, out);
        out.push_str(",bus=");
        escape_tag(&self.bus, out);
        out.push_str(",meter=");
        escape_tag(&self.meter, out);
        out.push_str(",profile=");
        escape_tag(&self.profile, out);
        // `zmij` (the shortest decimal that reads back as the value, as in the JSON; large
        // and tiny ones as `1e+20`, `1e-7`, which line protocol reads) rather than `Display`,
        // which took 3 % of the daemon's CPU at 2,000 meters, or `ryu` (2 %, two to three
        // times zmij's time per value). A value that is not a finite number is left out: line
        // protocol has none, and one would fail the whole batch.
        let mut digits = zmij::Buffer::new();
        let mut sep = ' ';
        let kept = self.values.iter().enumerate();
        for (_, (q, v)) in kept.filter(|(i, (_, v))| v.is_finite() && keep(*i)) {
            out.push(sep);
            sep = ',';
            escape_tag(q, out);
            out.push('=');
            out.push_str(digits.format_finite(v));
        }
        if sep == ' ' {
            out.truncate(start);
            return;
        }
        out.push(' ');
        out.push_str(itoa::Buffer::new().format(unix_ms(self.ts)));
        out.push('\n');
    }
}

/// One meter as `/api/meters` and the remote `status` command show it: state, counters, last
/// error, last reading and its latest values. Serialized straight from the live state: built
/// as a `serde_json::Value` first, 2,000 meters' took 20 MB and 64 ms on every refresh of the
/// status page (every 2 s).
#[derive(serde::Serialize)]
pub struct MeterJson<'a> {
    meter: &'a str,
    bus: &'a str,
    online: Option<bool>,
    refusing: bool,
    polls: u64,
    failures: Failures,
    last_error: Option<&'a str>,
    last_reading: Option<LastReading>,
    values: std::collections::BTreeMap<std::sync::Arc<str>, f64>,
}

#[derive(serde::Serialize)]
struct Failures {
    timeout: u64,
    link: u64,
    refused: u64,
}

#[derive(serde::Serialize)]
struct LastReading {
    ts: String,
    seq: u64,
}

impl<'a> MeterJson<'a> {
    pub fn of(id: &'a str, m: &'a crate::state::MeterState) -> MeterJson<'a> {
        MeterJson {
            meter: id,
            bus: &m.bus,
            online: m.online,
            refusing: m.refusing,
            polls: m.polls,
            failures: Failures {
                timeout: m.timeouts,
                link: m.link_errors,
                refused: m.exceptions,
            },
            last_error: m.last_error.as_deref(),
            last_reading: m.last_reading.as_ref().map(|r| LastReading {
                ts: humantime::format_rfc3339_millis(r.ts).to_string(),
                seq: r.seq,
            }),
            values: m.last_values(),
        }
    }
}

/// [`MeterJson`] as a JSON value (the remote `status` reply, which is built whole).
pub fn meter_json(id: &str, m: &crate::state::MeterState) -> serde_json::Value {
    serde_json::to_value(MeterJson::of(id, m)).unwrap_or(serde_json::Value::Null)
}

/// Line-protocol escaping for tag keys, tag values and field keys.
pub fn escape_tag(s: &str, out: &mut String) {
    // Names seldom need escaping: copied whole, not char by char (1.4 % of the daemon's CPU
    // at 2,000 meters).
    if !s.bytes().any(|b| matches!(b, b',' | b'=' | b' ' | b'\\')) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        if matches!(c, ',' | '=' | ' ' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// The JSON of an alert event, for the MQTT alert topic and the webhook: the contract's
/// name, state, meter, value, threshold, since, plus severity, bus, summary and all labels.
pub fn event_json(a: &Alert) -> serde_json::Value {
    serde_json::json!({
        "name": a.name(),
        "state": a.state.as_str(),
        "severity": a.labels.get("severity"),
        "gateway": a.labels.get("gateway"),
        "meter": a.labels.get("meter"),
        "bus": a.labels.get("bus"),
        "value": a.value,
        "threshold": a.threshold,
        "since": rfc3339(a.since),
        "at": a.at.map(rfc3339),
        "summary": a.summary,
        "labels": a.labels,
    })
}

/// One alert in Alertmanager's v2 format. A firing alert gets `endsAt` a few re-send periods
/// ahead (as Prometheus does), so Alertmanager resolves it by itself if meterd goes silent;
/// a resolved one gets its resolve time.
pub fn alertmanager_json(a: &Alert, resend: Duration, now: SystemTime) -> serde_json::Value {
    let ends = match a.state {
        State::Resolved => a.at.unwrap_or(now),
        // Saturating: a resend of years must not overflow the clock arithmetic.
        _ => resend
            .checked_mul(4)
            .and_then(|d| now.checked_add(d))
            .unwrap_or(now + Duration::from_secs(86400 * 365)),
    };
    serde_json::json!({
        "labels": a.labels,
        "annotations": {
            "summary": a.summary,
            "value": a.value.to_string(),
            "threshold": a.threshold.to_string(),
        },
        "startsAt": rfc3339(a.since),
        "endsAt": rfc3339(ends),
    })
}

/// An alert event as measurement `alert`: its labels as tags, `firing` 1/0, value,
/// threshold and summary as fields, at the time of the event.
pub fn alert_line(gateway: &str, a: &Alert, out: &mut String) {
    out.push_str("alert,gateway=");
    escape_tag(gateway, out);
    for (k, v) in &a.labels {
        if k == "gateway" || v.is_empty() {
            continue;
        }
        out.push(',');
        escape_tag(k, out);
        out.push('=');
        escape_tag(v, out);
    }
    let summary = a.summary.replace('\\', "\\\\").replace('"', "\\\"");
    let firing = if a.state == State::Firing { 1.0 } else { 0.0 };
    let _ = writeln!(
        out,
        " firing={firing:?},value={:?},threshold={:?},summary=\"{summary}\" {}",
        a.value,
        a.threshold,
        unix_ms(a.at.unwrap_or(a.since))
    );
}

/// Status points: `meter_status` (online, polls, failures per meter), `bus_status`
/// (utilisation, meters, meters online) and `gateway_status` (alerts firing and pending).
/// All fields are floats, so a later change of value can never conflict with a field type.
pub fn status_lines(gateway: &str, live: &LiveState, now: SystemTime, out: &mut String) {
    let ts = unix_ms(now);
    let mut per_bus: std::collections::BTreeMap<std::sync::Arc<str>, (f64, f64)> =
        Default::default();
    // Written under the live state's lock, rather than from a copy of every meter.
    live.each_meter(|id, m| {
        let online = m.online.unwrap_or(false);
        // The key is the bus's shared name: taking it costs a count, not a copy.
        let e = per_bus.entry(m.bus.clone()).or_default();
        e.0 += 1.0;
        e.1 += f64::from(u8::from(online));
        out.push_str("meter_status,gateway=");
        escape_tag(gateway, out);
        out.push_str(",bus=");
        escape_tag(&m.bus, out);
        out.push_str(",meter=");
        escape_tag(id, out);
        let _ = writeln!(
            out,
            " online={:?},polls={:?},failures={:?} {ts}",
            f64::from(u8::from(online)),
            m.polls as f64,
            (m.timeouts + m.link_errors + m.exceptions) as f64
        );
    });
    let buses = live.buses();
    for (bus, (n, up)) in per_bus {
        out.push_str("bus_status,gateway=");
        escape_tag(gateway, out);
        out.push_str(",bus=");
        escape_tag(&bus, out);
        let u = buses.get(&*bus).map_or(0.0, |b| b.utilisation);
        let _ = writeln!(
            out,
            " utilisation={u:?},meters={n:?},meters_online={up:?} {ts}"
        );
    }
    let alerts = live.alerts();
    let firing = alerts.iter().filter(|a| a.state == State::Firing).count() as f64;
    let pending = alerts.len() as f64 - firing;
    out.push_str("gateway_status,gateway=");
    escape_tag(gateway, out);
    let _ = writeln!(
        out,
        " alerts_firing={firing:?},alerts_pending={pending:?} {ts}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{sync::Arc, time::Duration};

    fn reading() -> Reading {
        Reading {
            meter: "m-0001".into(),
            bus: "rs485 1".into(),
            profile: "eastron-sdm630".into(),
            ts: SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_768_205_123),
            seq: 1234,
            values: vec![
                ("voltage_l1_v".into(), 230.1),
                ("energy_import_kwh".into(), 12345.67),
            ]
            .into(),
            on_demand: false,
        }
    }

    #[test]
    fn a_meter_in_the_api_has_its_state_counters_last_reading_and_latest_values() {
        let mut older = reading();
        older.ts -= Duration::from_secs(60);
        older.values = vec![("power_w".into(), f64::NAN), ("voltage_l1_v".into(), 229.0)].into();
        let mut m = crate::state::MeterState {
            bus: "rs485 1".into(),
            online: Some(true),
            polls: 3,
            timeouts: 1,
            link_errors: 2,
            last_error: Some("timeout \"after\" 1 s".into()),
            ..Default::default()
        };
        m.keep_reading(1, Arc::new(older));
        m.keep_reading(0, Arc::new(reading()));
        let expected = serde_json::json!({
            "meter": "m-0001",
            "bus": "rs485 1",
            "online": true,
            "refusing": false,
            "polls": 3,
            "failures": {"timeout": 1, "link": 2, "refused": 0},
            "last_error": "timeout \"after\" 1 s",
            "last_reading": {"ts": "2026-11-27T08:30:05.123Z", "seq": 1234},
            // The newer reading's voltage wins; a non-number is null.
            "values": {"energy_import_kwh": 12345.67, "power_w": null, "voltage_l1_v": 230.1},
        });
        assert_eq!(meter_json("m-0001", &m), expected);
        // Written straight to bytes (`/api/meters`), it reads back the same.
        let bytes = serde_json::to_vec(&MeterJson::of("m-0001", &m)).unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(),
            expected
        );
        let fresh = crate::state::MeterState::default();
        assert_eq!(
            meter_json("m2", &fresh)["last_reading"],
            serde_json::Value::Null
        );
        assert_eq!(meter_json("m2", &fresh)["online"], serde_json::Value::Null);
    }

    #[test]
    fn the_mqtt_payload_is_the_contracts_json() {
        let v: serde_json::Value = serde_json::from_slice(&reading().to_json()).unwrap();
        assert_eq!(v["ts"], "2026-11-27T08:30:05.123Z");
        assert_eq!(v["meter"], "m-0001");
        assert_eq!(v["bus"], "rs485 1");
        assert_eq!(v["seq"], 1234);
        assert_eq!(v["values"]["voltage_l1_v"], 230.1);
        assert_eq!(v["values"]["energy_import_kwh"], 12345.67);
    }

    #[test]
    fn the_mqtt_payload_keeps_the_contracts_key_order_escapes_strings_and_leaves_out_non_numbers() {
        let mut r = reading();
        r.meter = "m \"7\"".into();
        r.values = r
            .values
            .iter()
            .map(|(q, v)| (q.clone(), v))
            .chain([("power_w".into(), f64::NAN), ("frequency_hz".into(), 50.0)])
            .collect();
        assert_eq!(
            String::from_utf8(r.to_json()).unwrap(),
            r#"{"ts":"2026-11-27T08:30:05.123Z","meter":"m \"7\"","bus":"rs485 1","seq":1234,"values":{"voltage_l1_v":230.1,"energy_import_kwh":12345.67,"frequency_hz":50.0}}"#
        );
    }

    #[test]
    fn a_reading_made_on_demand_says_so_after_the_contracts_keys() {
        let mut r = reading();
        r.on_demand = true;
        let json = String::from_utf8(r.to_json()).unwrap();
        assert!(
            json.ends_with(r#""energy_import_kwh":12345.67},"on_demand":true}"#),
            "{json}"
        );
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["on_demand"], true);
    }

    #[test]
    fn the_influx_line_has_the_contracts_measurement_tags_and_fields() {
        let mut out = String::new();
        reading().write_line("gw-1", &mut out);
        assert_eq!(
            out,
            "meter,gateway=gw-1,bus=rs485\\ 1,meter=m-0001,profile=eastron-sdm630 \
             voltage_l1_v=230.1,energy_import_kwh=12345.67 1795768205123\n"
        );
    }

    #[test]
    fn tag_escaping_puts_a_backslash_before_commas_equals_spaces_and_backslashes_only() {
        for (name, escaped) in [
            ("m-0001", "m-0001"),
            ("rs485 1", "rs485\\ 1"),
            ("a,b=c", "a\\,b\\=c"),
            ("c:\\x", "c:\\\\x"),
            ("站 1", "站\\ 1"),
            ("", ""),
        ] {
            let mut out = String::from(">");
            escape_tag(name, &mut out);
            assert_eq!(out, format!(">{escaped}"), "{name}");
        }
    }

    #[test]
    fn influx_fields_are_the_shortest_decimal_and_non_numbers_are_left_out() {
        // (value, field text): every text parses back to the value in InfluxDB (Go's ParseFloat).
        let cases = [
            (50.0, "50.0"),
            (-0.5, "-0.5"),
            (1e-7, "1e-7"),
            (1.5e300, "1.5e+300"),
            (f64::from(231.7_f32), "231.6999969482422"),
        ];
        for (v, text) in cases {
            let mut r = reading();
            r.values = vec![
                ("x".into(), f64::NAN),
                ("power_w".into(), v),
                ("y".into(), f64::INFINITY),
            ]
            .into();
            let mut out = String::new();
            r.write_line("gw", &mut out);
            let field = out.trim_end().rsplit(' ').nth(1).unwrap();
            assert_eq!(field, format!("power_w={text}"), "{v}");
            assert_eq!(field["power_w=".len()..].parse::<f64>().unwrap(), v);
        }
    }

    #[test]
    fn a_reading_with_only_non_numbers_writes_no_line() {
        let mut r = reading();
        r.values = vec![("x".into(), f64::NAN)].into();
        let mut out = String::from("before\n");
        r.write_line("gw", &mut out);
        assert_eq!(out, "before\n");
    }

    #[test]
    fn an_alert_event_is_one_line_with_labels_as_tags_and_an_escaped_summary() {
        let a = Alert {
            labels: [
                ("gateway", "gw 1"),
                ("alertname", "Overvoltage"),
                ("severity", "critical"),
                ("meter", "m1"),
                ("bus", "rs485-1"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            state: State::Resolved,
            value: 230.5,
            threshold: 235.0,
            since: SystemTime::UNIX_EPOCH,
            at: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1500)),
            summary: "m1 says \"hi\" \\ back".into(),
            until: None,
        };
        let mut out = String::new();
        alert_line("gw 1", &a, &mut out);
        assert_eq!(
            out,
            "alert,gateway=gw\\ 1,alertname=Overvoltage,bus=rs485-1,meter=m1,severity=critical \
             firing=0.0,value=230.5,threshold=235.0,summary=\"m1 says \\\"hi\\\" \\\\ back\" 1500\n"
        );
    }
}
