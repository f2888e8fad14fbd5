//! A reading: one poll of one meter's point group, and its encodings for the sinks.

use std::{fmt::Write as _, sync::Arc, time::SystemTime};

/// One meter, one poll. `ts` is the sampling time (when the request went out), kept as is
/// when the reading is delivered late.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub meter: Arc<str>,
    pub bus: Arc<str>,
    pub profile: Arc<str>,
    pub ts: SystemTime,
    /// Per meter, +1 per reading; assigned when the reading enters the log.
    pub seq: u64,
    pub values: Vec<(Arc<str>, f64)>,
}

fn unix_ms(ts: SystemTime) -> u128 {
    ts.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

impl Reading {
    /// The MQTT payload of the contract:
    /// `{"ts":"…Z","meter":"…","bus":"…","seq":1,"values":{"voltage_l1_v":230.1}}`.
    pub fn to_json(&self) -> String {
        let values: serde_json::Map<String, serde_json::Value> = self
            .values
            .iter()
            .filter_map(|(q, v)| Some((q.to_string(), serde_json::Number::from_f64(*v)?.into())))
            .collect();
        serde_json::json!({
            "ts": humantime::format_rfc3339_millis(self.ts).to_string(),
            "meter": &*self.meter,
            "bus": &*self.bus,
            "seq": self.seq,
            "values": values,
        })
        .to_string()
    }

    /// One InfluxDB line (measurement `meter`, tags gateway/bus/meter/profile, a float field per
    /// quantity, millisecond timestamp), appended to `out` with a trailing newline. A reading
    /// without values writes nothing.
    pub fn write_line(&self, gateway: &str, out: &mut String) {
        if self.values.is_empty() {
            return;
        }
        out.push_str("meter,gateway=");
        escape_tag(gateway, out);
        out.push_str(",bus=");
        escape_tag(&self.bus, out);
        out.push_str(",meter=");
        escape_tag(&self.meter, out);
        out.push_str(",profile=");
        escape_tag(&self.profile, out);
        for (i, (q, v)) in self.values.iter().enumerate() {
            out.push(if i == 0 { ' ' } else { ',' });
            escape_tag(q, out);
            let _ = write!(out, "={v}");
        }
        let _ = writeln!(out, " {}", unix_ms(self.ts));
    }
}

/// Line-protocol escaping for tag keys, tag values and field keys.
pub fn escape_tag(s: &str, out: &mut String) {
    for c in s.chars() {
        if matches!(c, ',' | '=' | ' ' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
            ],
        }
    }

    #[test]
    fn the_mqtt_payload_is_the_contracts_json() {
        let v: serde_json::Value = serde_json::from_str(&reading().to_json()).unwrap();
        assert_eq!(v["ts"], "2026-11-27T08:30:05.123Z");
        assert_eq!(v["meter"], "m-0001");
        assert_eq!(v["bus"], "rs485 1");
        assert_eq!(v["seq"], 1234);
        assert_eq!(v["values"]["voltage_l1_v"], 230.1);
        assert_eq!(v["values"]["energy_import_kwh"], 12345.67);
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
}
