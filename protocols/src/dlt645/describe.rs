//! A frame explained field by field: what `meterd decode` prints for an engineer holding a
//! capture, and what the test vectors are checked against.

use super::{
    bcd, data_identifier,
    di::{self, Value, Version},
    error_bits, frame, function_name, Dlt645Error, Frame,
};

#[derive(Clone, PartialEq, Debug, Default, serde::Serialize)]
pub struct Described {
    pub preamble: usize,
    pub address: String,
    pub control: u8,
    pub reply: bool,
    pub abnormal: bool,
    pub follow_up: bool,
    pub function: &'static str,
    pub length: usize,
    /// The data field after −0x33, as hex.
    pub data: String,
    pub di: Option<String>,
    pub values: Vec<(String, String, &'static str)>,
    pub seq: Option<u8>,
    pub error: Option<(u8, Vec<&'static str>)>,
    /// Every checksum and structure check passed (a `Described` only exists for such frames).
    pub checksum_ok: bool,
    /// What looks wrong although the frame is well formed.
    pub notes: Vec<String>,
}

impl Described {
    /// One line, as the test vectors are written.
    pub fn summary(&self) -> String {
        let mut s = format!("{} C={:02X} {}", self.address, self.control, self.function);
        if self.reply {
            s += " reply";
        }
        if self.abnormal {
            s += " abnormal";
        }
        if self.follow_up {
            s += " more";
        }
        s += &format!("; L={}", self.length);
        if let Some(di) = &self.di {
            s += &format!("; DI {di}");
        }
        for (name, value, unit) in &self.values {
            s += &format!("; {name} = {value}");
            if !unit.is_empty() {
                s += &format!(" {unit}");
            }
        }
        if let Some(seq) = self.seq {
            s += &format!("; SEQ {seq}");
        }
        if let Some((err, bits)) = &self.error {
            s += &format!("; error {err:02X}: {}", bits.join(", "));
        }
        for n in &self.notes {
            s += &format!("; note: {n}");
        }
        s
    }
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn fmt_value(v: &Value) -> String {
    match v {
        Value::Number(x) => format!("{x}"),
        Value::Text(t) => t.clone(),
    }
}

/// `ss mm hh DD MM YY` as a time, if it is one.
fn time_ss_first(d: &[u8]) -> Option<String> {
    if d.len() != 6 {
        return None;
    }
    let digits = bcd::digits(d).ok()?; // YYMMDDhhmmss
    let n = |i: usize| digits[i..i + 2].parse::<u32>().ok();
    let (yy, mo, dd, hh, mi, ss) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?, n(10)?);
    ((1..=12).contains(&mo) && (1..=31).contains(&dd) && hh < 24 && mi < 60 && ss < 60)
        .then(|| format!("20{yy:02}-{mo:02}-{dd:02} {hh:02}:{mi:02}:{ss:02}"))
}

/// Parse and explain one frame.
pub fn describe(version: Version, bytes: &[u8]) -> Result<Described, Dlt645Error> {
    let (f, preamble) = frame::parse(bytes)?;
    Ok(explain(version, &f, preamble))
}

pub fn explain(version: Version, f: &Frame, preamble: usize) -> Described {
    let c = f.control;
    let mut d = Described {
        preamble,
        address: f.address.to_string(),
        control: c.0,
        reply: c.is_reply(),
        abnormal: c.is_abnormal(),
        follow_up: c.has_follow_up(),
        function: function_name(version, c),
        length: f.data.len(),
        data: hex(&f.data),
        checksum_ok: true,
        ..Described::default()
    };
    if version == Version::V1997 && (0x11..=0x1C).contains(&c.function()) {
        d.notes.push(format!(
            "C={:02X} is a 2007 control code; a 1997 meter expects {:02X}",
            c.0,
            match c.function() {
                0x11 => 0x01,
                0x12 => 0x02,
                0x14 => 0x04,
                _ => c.function(),
            }
        ));
    }
    if c.is_abnormal() {
        if let Some(&err) = f.data.first() {
            let bits = error_bits(version, err);
            if err & 0x80 != 0 {
                d.notes.push(
                    "error byte has the reserved bit 7 set: not a meaningful error code".into(),
                );
            }
            d.error = Some((err, bits));
        }
        return d;
    }
    let di_read = matches!(
        (version, c.function()),
        (Version::V2007, 0x11 | 0x12 | 0x14) | (Version::V1997, 0x01..=0x04)
    );
    match c.function() {
        0x08 => {
            // Broadcast time sync: ss mm hh DD MM YY.
            match time_ss_first(&f.data) {
                Some(t) if f.data.len() == 6 => d.values.push(("time".into(), t, "")),
                _ => {
                    let natural =
                        bcd::digits(&f.data.iter().rev().copied().collect::<Vec<_>>()).ok();
                    d.notes.push(format!(
                        "not a valid ss mm hh DD MM YY time{}",
                        natural.map(|n| format!(" (read in natural YY MM DD hh mm ss order it would be {n}: a known implementation mistake)")).unwrap_or_default()
                    ));
                }
            }
        }
        0x13 | 0x15 if version == Version::V2007 && f.data.len() == 6 => {
            let mut a = [0u8; 6];
            a.copy_from_slice(&f.data);
            d.values
                .push(("address".into(), frame::Address(a).to_string(), ""));
        }
        0x0A if version == Version::V1997 && f.data.len() == 6 => {
            let mut a = [0u8; 6];
            a.copy_from_slice(&f.data);
            d.values
                .push(("address".into(), frame::Address(a).to_string(), ""));
        }
        _ if di_read
            || (c.is_reply()
                && matches!(
                    (version, c.function()),
                    (Version::V2007, 0x11 | 0x12) | (Version::V1997, 0x01 | 0x02)
                )) =>
        {
            if let Some((di, n)) = data_identifier(version, &f.data) {
                d.di = Some(match version {
                    Version::V2007 => format!("{di:08X}"),
                    Version::V1997 => format!("{di:04X}"),
                });
                let follow =
                    c.function() == 0x12 || (version == Version::V1997 && c.function() == 0x02);
                let mut rest = &f.data[n..];
                if follow && !rest.is_empty() {
                    d.seq = rest.last().copied();
                    rest = &rest[..rest.len() - 1];
                }
                if c.is_reply() && !rest.is_empty() {
                    match di::decode_values(version, di, rest) {
                        Ok(vals) if vals.is_empty() => d.notes.push(format!(
                            "DI not in the catalogue; value bytes {}",
                            hex(rest)
                        )),
                        Ok(vals) => {
                            for (k, v) in vals.into_iter().enumerate() {
                                let name = if follow {
                                    format!("continued value {k}")
                                } else {
                                    v.name
                                };
                                d.values.push((name, fmt_value(&v.value), v.unit));
                            }
                        }
                        Err(e) => d.notes.push(format!("value bytes {}: {e}", hex(rest))),
                    }
                } else if !c.is_reply() && !rest.is_empty() && !follow {
                    d.notes.push(format!("request parameters {}", hex(rest)));
                }
            }
        }
        _ => {}
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlt645::frame::Address;
    use proptest::prelude::*;

    #[test]
    fn a_time_sync_frame_with_too_few_bytes_is_explained_not_a_panic() {
        let f = Frame::new(Address::BROADCAST, 0x08, vec![0x12, 0x34]);
        let d = explain(Version::V2007, &f, 0);
        assert!(
            d.notes
                .iter()
                .any(|n| n.contains("not a valid ss mm hh DD MM YY time")),
            "{d:?}"
        );
    }

    proptest! {
        /// Every well-formed frame, whatever its control code and data, is explained.
        #[test]
        fn any_frame_is_explained_in_both_versions(
            c in prop_oneof![
                any::<u8>(),
                // The codes with their own decoders, requests and replies.
                prop::sample::select(vec![0x01u8, 0x02, 0x04, 0x08, 0x0A, 0x11, 0x12, 0x13, 0x14, 0x15, 0x81, 0x82, 0x91, 0x92, 0x93, 0xB1, 0xB2, 0xC1, 0xD1]),
            ],
            data in proptest::collection::vec(any::<u8>(), 0..12),
        ) {
            let f = Frame::new(Address([0x11; 6]), c, data);
            let _ = explain(Version::V2007, &f, 0);
            let _ = explain(Version::V1997, &f, 0);
        }
    }
}
