//! Meter profiles: a meter model's register map as data.
//!
//! Built-in profiles are the TOML files in `protocols/profiles/`, embedded at build time; users
//! add their own files in the directory named by `profiles_dir` in the config. Both use the same
//! format (see any built-in file):
//!
//! ```toml
//! name = "eastron-sdm120"
//! manufacturer = "Eastron"
//! model = "SDM120-Modbus"
//! document = "where the register map comes from"
//! protocol = "modbus"
//! register = "input"     # default register kind for points: input | holding
//! type = "f32"           # default point type: u16 i16 u32 i32 u64 i64 f32 f64
//! order = "ABCD"         # default byte order: ABCD CDAB BADC DCBA
//!
//! [[group]]
//! name = "realtime"      # groups are polled on their own interval
//! interval = "5s"
//! points = [
//!   { quantity = "voltage_l1_v", address = 0x0000 },
//!   { quantity = "power_w", address = 0x000C, scale = 1.0 },
//! ]
//! ```
//!
//! Reading a profile never touches the file system: the caller hands in the text.

use std::{fmt, time::Duration};

/// How often a point group may be polled: no meter answers faster than 10 ms, and a month is
/// the longest useful poll (freezes cover longer). Meter intervals in a config are held to it.
pub const INTERVAL_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(10)..=Duration::from_secs(31 * 86_400);

use serde::Deserialize;

use crate::{
    modbus::{plan_reads, ByteOrder, Point, PointType, ReadBlock, RegisterKind},
    quantity,
};

include!(concat!(env!("OUT_DIR"), "/builtin_profiles.rs"));

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProfileProtocol {
    Modbus,
    #[serde(rename = "dlt645-2007")]
    Dlt645_2007,
    #[serde(rename = "dlt645-1997")]
    Dlt645_1997,
    Dlt698,
}

impl ProfileProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileProtocol::Modbus => "Modbus",
            ProfileProtocol::Dlt645_2007 => "DL/T 645-2007",
            ProfileProtocol::Dlt645_1997 => "DL/T 645-1997",
            ProfileProtocol::Dlt698 => "DL/T 698.45",
        }
    }

    pub fn dlt645_version(self) -> Option<crate::dlt645::Version> {
        match self {
            ProfileProtocol::Modbus | ProfileProtocol::Dlt698 => None,
            ProfileProtocol::Dlt645_2007 => Some(crate::dlt645::Version::V2007),
            ProfileProtocol::Dlt645_1997 => Some(crate::dlt645::Version::V1997),
        }
    }
}

/// A DL/T 645 data identifier read into a quantity.
#[derive(Debug, Clone, PartialEq)]
pub struct DiPoint {
    pub di: u32,
    /// Shared: every reading of the point carries this one name, not a copy.
    pub quantity: std::sync::Arc<str>,
    /// Layout of the value bytes: the catalogue's, or the profile's for identifiers it adds.
    pub format: crate::dlt645::di::Format,
    /// value = decoded × factor (kW → W: 1000).
    pub factor: f64,
}

/// A DL/T 698.45 attribute (or one element of it) read into quantities.
#[derive(Debug, Clone, PartialEq)]
pub struct OadPoint {
    pub oad: crate::dlt698::Oad,
    /// value = raw × 10^exp in the contract's unit (the scaler, plus 3 for kW → W).
    pub exp: i32,
    /// Maximum demand: each element is {value, time}; the value is taken.
    pub demand: bool,
    /// Quantity names by element (index 1 first) for a whole array; one name for a single
    /// value or one element. Unmapped elements are `None`.
    pub names: Vec<Option<std::sync::Arc<str>>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub name: String,
    pub interval: Duration,
    /// Modbus registers (Modbus profiles).
    pub points: Vec<Point>,
    /// Data identifiers (DL/T 645 profiles).
    pub dis: Vec<DiPoint>,
    /// Object attributes (DL/T 698.45 profiles).
    pub oads: Vec<OadPoint>,
    /// DL/T 645 and 698.45: read the meter's date and time and report `meter_clock_offset_s`.
    pub clock: bool,
    /// DL/T 645-2007 and 698.45: read the last daily freeze when the meter has a new one.
    pub daily_freeze: bool,
}

impl Group {
    /// The read requests for this group.
    pub fn plan(&self, max_registers: u16, max_gap: u16) -> Vec<ReadBlock> {
        plan_reads(&self.points, max_registers, max_gap)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    pub manufacturer: String,
    pub model: String,
    pub document: String,
    pub protocol: ProfileProtocol,
    pub groups: Vec<Group>,
    /// Where it came from: `builtin:FILE` or a path.
    pub origin: String,
}

impl Profile {
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    pub fn points(&self) -> impl Iterator<Item = &Point> {
        self.groups.iter().flat_map(|g| g.points.iter())
    }

    /// Every quantity the profile reads, whatever the protocol.
    pub fn quantities(&self) -> impl Iterator<Item = &str> {
        self.groups.iter().flat_map(|g| {
            g.points
                .iter()
                .map(|p| &*p.quantity)
                .chain(g.dis.iter().map(|d| &*d.quantity))
                .chain(
                    g.oads
                        .iter()
                        .flat_map(|o| o.names.iter().flatten().map(|n| &**n)),
                )
                .chain(g.clock.then_some("meter_clock_offset_s"))
        })
    }
}

/// Why a profile was refused; every problem of one file at once.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ProfileError {
    pub origin: String,
    pub problems: Vec<String>,
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {p}", self.origin)?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: String,
    manufacturer: String,
    model: String,
    document: String,
    protocol: ProfileProtocol,
    #[serde(default = "default_kind")]
    register: RegisterKind,
    #[serde(default = "default_type", rename = "type")]
    ty: PointType,
    #[serde(default)]
    order: ByteOrder,
    group: Vec<RawGroup>,
}

fn default_kind() -> RegisterKind {
    RegisterKind::Holding
}
fn default_type() -> PointType {
    PointType::F32
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: String,
    interval: String,
    #[serde(default)]
    points: Vec<RawPoint>,
    #[serde(default)]
    dis: Vec<RawDi>,
    #[serde(default)]
    oads: Vec<RawOad>,
    #[serde(default)]
    clock: bool,
    #[serde(default)]
    daily_freeze: bool,
}

/// `{ di = "02010100" }` takes everything from the catalogue; an identifier the catalogue does
/// not know needs `quantity`, `bytes` and `decimals` (and `signed`, `factor` if they apply).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDi {
    di: String,
    quantity: Option<String>,
    bytes: Option<usize>,
    decimals: Option<u32>,
    signed: Option<bool>,
    factor: Option<f64>,
}

/// `{ oad = "20000200" }` takes names, scaler and unit from the catalogue; an OAD the
/// catalogue does not know needs `quantity` (one value) or `quantities` (an array's elements,
/// "" for one not wanted), and `scaler` if it has one; `factor_exp = 3` turns kW into W.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOad {
    oad: String,
    quantity: Option<String>,
    quantities: Option<Vec<String>>,
    scaler: Option<i8>,
    factor_exp: Option<i8>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPoint {
    quantity: String,
    address: u16,
    register: Option<RegisterKind>,
    #[serde(rename = "type")]
    ty: Option<PointType>,
    order: Option<ByteOrder>,
    #[serde(default = "one")]
    scale: f64,
    #[serde(default)]
    offset: f64,
}

fn one() -> f64 {
    1.0
}

impl Profile {
    /// Parse and check a profile. `origin` names it in errors (a path, or `builtin:FILE`).
    pub fn parse(text: &str, origin: &str) -> Result<Profile, ProfileError> {
        let fail = |problems| ProfileError {
            origin: origin.to_string(),
            problems,
        };
        let raw: RawProfile = toml::from_str(text).map_err(|e| {
            let msg = e.message().to_string();
            let line = e.span().map(|s| {
                text.as_bytes()[..s.start.min(text.len())]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count()
                    + 1
            });
            fail(vec![match line {
                Some(l) => format!("line {l}: {msg}"),
                None => msg,
            }])
        })?;
        let mut problems = Vec::new();
        if quantity_name_invalid(&raw.name) {
            problems.push(format!(
                "name {:?}: use lowercase letters, digits and '-'",
                raw.name
            ));
        }
        if raw.group.is_empty() {
            problems.push("no [[group]]: a profile needs at least one point group".into());
        }
        let mut groups = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for g in raw.group {
            let interval = match humantime::parse_duration(&g.interval) {
                Ok(d) if INTERVAL_RANGE.contains(&d) => d,
                Ok(_) => {
                    problems.push(format!(
                        "group {:?}: interval {:?} is outside 10ms to 31d: no meter answers faster, and a month is the longest useful poll",
                        g.name, g.interval
                    ));
                    Duration::from_secs(1)
                }
                Err(_) => {
                    problems.push(format!(
                        "group {:?}: interval {:?} is not a duration like \"5s\" or \"15m\"",
                        g.name, g.interval
                    ));
                    Duration::from_secs(1)
                }
            };

            let mut points = Vec::new();
            for p in g.points {
                if quantity::unit_of(&p.quantity).is_none() {
                    problems.push(format!(
                        "group {:?}: quantity {:?} is not a quantity name with a unit suffix \
                         (like voltage_l1_v, energy_import_kwh)",
                        g.name, p.quantity
                    ));
                }
                if !seen.insert(p.quantity.clone()) {
                    problems.push(format!("quantity {:?} is mapped twice", p.quantity));
                }
                let ty = p.ty.unwrap_or(raw.ty);
                if u32::from(p.address) + u32::from(ty.words()) > 0x1_0000 {
                    problems.push(format!(
                        "quantity {:?}: a {ty:?} at address {} runs past register 65535",
                        p.quantity, p.address
                    ));
                }
                if !p.scale.is_finite() || p.scale == 0.0 || !p.offset.is_finite() {
                    problems.push(format!(
                        "quantity {:?}: scale must be a non-zero number and offset a number",
                        p.quantity
                    ));
                }
                points.push(Point {
                    quantity: p.quantity.into(),
                    kind: p.register.unwrap_or(raw.register),
                    address: p.address,
                    ty,
                    order: p.order.unwrap_or(raw.order),
                    scale: p.scale,
                    offset: p.offset,
                });
            }
            let mut dis = Vec::new();
            let version = raw.protocol.dlt645_version();
            match version {
                None if !g.dis.is_empty() => problems.push(format!(
                    "group {:?}: dis are for DL/T 645 profiles; {}",
                    g.name,
                    if raw.protocol == ProfileProtocol::Dlt698 {
                        "DL/T 698.45 profiles have oads"
                    } else {
                        "Modbus profiles have points"
                    }
                )),
                Some(_) if !points.is_empty() => problems.push(format!(
                    "group {:?}: points are Modbus registers; DL/T 645 profiles have dis",
                    g.name
                )),
                _ => {}
            }
            let dlt698 = raw.protocol == ProfileProtocol::Dlt698;
            if dlt698 && !points.is_empty() {
                problems.push(format!(
                    "group {:?}: points are Modbus registers; DL/T 698.45 profiles have oads",
                    g.name
                ));
            }
            if !dlt698 && !g.oads.is_empty() {
                problems.push(format!(
                    "group {:?}: oads are for DL/T 698.45 profiles",
                    g.name
                ));
            }
            let mut oads = Vec::new();
            for o in g.oads {
                if !dlt698 {
                    break;
                }
                match parse_oad_point(o) {
                    Ok(p) => {
                        for n in p.names.iter().flatten() {
                            if !seen.insert(n.to_string()) {
                                problems.push(format!("quantity {n:?} is mapped twice"));
                            }
                        }
                        oads.push(p);
                    }
                    Err(e) => problems.push(format!("group {:?}: {e}", g.name)),
                }
            }
            for d in g.dis {
                let Some(version) = version else { break };
                match parse_di_point(version, d) {
                    Ok(p) => {
                        if !seen.insert(p.quantity.to_string()) {
                            problems.push(format!("quantity {:?} is mapped twice", p.quantity));
                        }
                        dis.push(p);
                    }
                    Err(e) => problems.push(format!("group {:?}: {e}", g.name)),
                }
            }
            if g.clock && version.is_none() && !dlt698 {
                problems.push(format!(
                    "group {:?}: clock = true is for DL/T 645 and 698.45 profiles",
                    g.name
                ));
            }
            if g.daily_freeze && version != Some(crate::dlt645::Version::V2007) && !dlt698 {
                problems.push(format!(
                    "group {:?}: daily_freeze = true is for DL/T 645-2007 and 698.45 profiles",
                    g.name
                ));
            }
            if points.is_empty()
                && dis.is_empty()
                && oads.is_empty()
                && !g.clock
                && !g.daily_freeze
                && problems.is_empty()
            {
                problems.push(format!("group {:?} has no points", g.name));
            }
            groups.push(Group {
                name: g.name,
                interval,
                points,
                dis,
                oads,
                clock: g.clock,
                daily_freeze: g.daily_freeze,
            });
        }
        if !problems.is_empty() {
            return Err(fail(problems));
        }
        Ok(Profile {
            name: raw.name,
            manufacturer: raw.manufacturer,
            model: raw.model,
            document: raw.document,
            protocol: raw.protocol,
            groups,
            origin: origin.to_string(),
        })
    }

    /// Every built-in profile. A broken built-in file is a bug caught by this crate's tests.
    pub fn builtin() -> Vec<Result<Profile, ProfileError>> {
        BUILTIN
            .iter()
            .map(|(file, text)| Profile::parse(text, &format!("builtin:{file}")))
            .collect()
    }
}

fn parse_di_point(version: crate::dlt645::Version, d: RawDi) -> Result<DiPoint, String> {
    use crate::dlt645::{di, Version};
    let digits = match version {
        Version::V2007 => 8,
        Version::V1997 => 4,
    };
    let di = (d.di.len() == digits)
        .then(|| u32::from_str_radix(&d.di, 16).ok())
        .flatten()
        .ok_or_else(|| {
            format!(
                "di {:?}: use {digits} hex digits as the standard prints them (e.g. {})",
                d.di,
                if digits == 8 { "02010100" } else { "B611" }
            )
        })?;
    let known = di::lookup(version, di);
    let format = match (d.bytes, d.decimals, known) {
        (Some(bytes), decimals, _) if (1..=8).contains(&bytes) => di::Format::Number {
            bytes,
            decimals: decimals.unwrap_or(0),
            signed: d.signed.unwrap_or(false),
        },
        (Some(bytes), _, _) => return Err(format!("di {}: bytes = {bytes}: use 1 to 8", d.di)),
        (None, _, Some(item)) => item.format,
        (None, _, None) => {
            return Err(format!(
                "di {}: not in the catalogue; give quantity, bytes and decimals",
                d.di
            ))
        }
    };
    if !matches!(format, di::Format::Number { .. }) {
        return Err(format!(
            "di {}: dates, times and addresses are not quantities",
            d.di
        ));
    }
    let (quantity, factor) = match (d.quantity, known.and_then(|i| i.quantity)) {
        (Some(q), Some((_, f))) => (q, d.factor.unwrap_or(f)),
        (Some(q), None) => (q, d.factor.unwrap_or(1.0)),
        (None, Some((q, f))) => (q.to_string(), d.factor.unwrap_or(f)),
        (None, None) => {
            return Err(format!(
                "di {}: no quantity name in the catalogue; give quantity",
                d.di
            ))
        }
    };
    if quantity::unit_of(&quantity).is_none() {
        return Err(format!(
            "di {}: quantity {quantity:?} is not a quantity name with a unit suffix",
            d.di
        ));
    }
    if !factor.is_finite() || factor == 0.0 {
        return Err(format!("di {}: factor must be a non-zero number", d.di));
    }
    Ok(DiPoint {
        di,
        quantity: quantity.into(),
        format,
        factor,
    })
}

fn parse_oad_point(o: RawOad) -> Result<OadPoint, String> {
    use crate::dlt698::catalogue::{self, Shape};
    let oad: crate::dlt698::Oad = o.oad.parse().map_err(|_| {
        format!(
            "oad {:?}: use 8 hex digits such as 20000200 (OI, attribute, index)",
            o.oad
        )
    })?;
    let known = catalogue::lookup(oad);
    let exp = match (o.scaler, known) {
        (Some(s), _) => i32::from(s) + i32::from(o.factor_exp.unwrap_or(0)),
        (None, Some(k)) => i32::from(k.scaler) + i32::from(o.factor_exp.unwrap_or(k.shift)),
        (None, None) => i32::from(o.factor_exp.unwrap_or(0)),
    };
    let given: Option<Vec<String>> = match (o.quantity, o.quantities) {
        (Some(_), Some(_)) => {
            return Err(format!("oad {oad}: give quantity or quantities, not both"))
        }
        (Some(q), None) => Some(vec![q]),
        (None, qs) => qs,
    };
    let names: Vec<String> = match (given, known) {
        (Some(v), _) => v,
        (None, Some(k)) if k.shape == Shape::Single || oad.index == 0 => {
            k.elements.iter().map(|s| s.to_string()).collect()
        }
        (None, Some(k)) => vec![k
            .elements
            .get(usize::from(oad.index) - 1)
            .map(|s| s.to_string())
            .unwrap_or_default()],
        (None, None) => {
            return Err(format!(
                "oad {oad}: not in the catalogue; give quantity (or quantities) and scaler"
            ))
        }
    };
    if names.iter().all(String::is_empty) {
        return Err(format!("oad {oad}: no quantity name to read it into"));
    }
    for n in names.iter().filter(|n| !n.is_empty()) {
        if quantity::unit_of(n).is_none() {
            return Err(format!(
                "oad {oad}: quantity {n:?} is not a quantity name with a unit suffix"
            ));
        }
    }
    Ok(OadPoint {
        oad,
        exp,
        demand: known.is_some_and(|k| k.shape == Shape::Demand),
        names: names
            .into_iter()
            .map(|n| (!n.is_empty()).then(|| n.into()))
            .collect(),
    })
}

fn quantity_name_invalid(name: &str) -> bool {
    name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtins() -> Vec<Profile> {
        Profile::builtin()
            .into_iter()
            .map(|p| p.unwrap_or_else(|e| panic!("{e}")))
            .collect()
    }

    #[test]
    fn every_builtin_profile_parses_and_names_its_source_document() {
        let all = builtins();
        assert!(all.len() >= 8, "only {} built-in profiles", all.len());
        for p in &all {
            assert!(p.document.len() > 10, "{} names no document", p.name);
            assert_eq!(format!("builtin:{}.toml", p.name), p.origin);
        }
    }

    #[test]
    fn the_required_meter_models_are_built_in() {
        let names: Vec<String> = builtins().into_iter().map(|p| p.name).collect();
        for required in [
            "eastron-sdm630",
            "eastron-sdm120",
            "eastron-sdm72",
            "chint-dtsu666",
            "chint-ddsu666",
            "abb-b23",
            "carlo-gavazzi-em24",
            "schneider-iem3255",
            "dlt645-2007-three-phase",
            "dlt645-2007-single-phase",
            "dlt645-1997-three-phase",
            "dlt698-three-phase",
            "dlt698-single-phase",
        ] {
            assert!(names.iter().any(|n| n == required), "{required} missing");
        }
    }

    #[test]
    fn a_full_sdm630_read_takes_a_handful_of_requests() {
        let p = builtins()
            .into_iter()
            .find(|p| p.name == "eastron-sdm630")
            .unwrap();
        let requests: usize = p.groups.iter().map(|g| g.plan(125, 16).len()).sum();
        let points = p.points().count();
        assert!(points >= 30, "{points} points");
        assert!(requests <= 5, "{requests} requests for {points} points");
    }

    fn problems(text: &str) -> Vec<String> {
        Profile::parse(text, "t.toml").unwrap_err().problems
    }

    const HEAD: &str = "name = \"x\"\nmanufacturer = \"m\"\nmodel = \"x\"\ndocument = \"doc\"\nprotocol = \"modbus\"\n";

    #[test]
    fn a_profile_with_several_mistakes_reports_them_all() {
        let text = format!(
            "{HEAD}[[group]]\nname = \"g\"\ninterval = \"soon\"\npoints = [\n\
             {{ quantity = \"volts\", address = 0 }},\n\
             {{ quantity = \"power_w\", address = 65535, type = \"u32\" }},\n\
             {{ quantity = \"power_w\", address = 2, scale = 0.0 }},\n]\n"
        );
        let p = problems(&text);
        assert_eq!(p.len(), 5, "{p:#?}");
        assert!(p[0].contains("interval \"soon\""));
        assert!(p[1].contains("\"volts\""));
        assert!(p[2].contains("runs past register 65535"));
        assert!(p[3].contains("mapped twice"));
        assert!(p[4].contains("scale"));
    }

    #[test]
    fn dlt645_identifiers_take_format_and_quantity_from_the_catalogue_or_the_profile() {
        let head = HEAD.replace("\"modbus\"", "\"dlt645-2007\"");
        let ok = format!(
            "{head}[[group]]\nname = \"g\"\ninterval = \"30s\"\ndis = [\n\
             {{ di = \"02030000\" }},\n\
             {{ di = \"02800008\", quantity = \"clock_battery_v\", bytes = 2, decimals = 2 }},\n]\n"
        );
        let p = Profile::parse(&ok, "t.toml").unwrap();
        let dis = &p.groups[0].dis;
        assert_eq!((&*dis[0].quantity, dis[0].factor), ("power_w", 1000.0));
        assert_eq!(dis[1].di, 0x0280_0008);
        let bad = format!(
            "{head}[[group]]\nname = \"g\"\ninterval = \"30s\"\ndis = [\n\
             {{ di = \"0201010\" }},\n{{ di = \"0280000B\" }},\n{{ di = \"04000101\" }},\n]\n"
        );
        let p = problems(&bad);
        assert_eq!(p.len(), 3, "{p:#?}");
        assert!(p[0].contains("use 8 hex digits"));
        assert!(p[1].contains("not in the catalogue"));
        assert!(p[2].contains("not quantities"));
    }

    #[test]
    fn dlt698_oads_take_names_and_scalers_from_the_catalogue_or_the_profile() {
        let head = HEAD.replace("\"modbus\"", "\"dlt698\"");
        let ok = format!(
            "{head}[[group]]\nname = \"g\"\ninterval = \"30s\"\noads = [\n\
             {{ oad = \"20000200\" }},\n\
             {{ oad = \"2004-02-02\" }},\n\
             {{ oad = \"20170200\" }},\n\
             {{ oad = \"26000200\", quantity = \"battery_v\", scaler = -2 }},\n]\n"
        );
        let p = Profile::parse(&ok, "t.toml").unwrap();
        let oads = &p.groups[0].oads;
        let names = |i: usize| -> Vec<Option<&str>> {
            oads[i].names.iter().map(|n| n.as_deref()).collect()
        };
        assert_eq!(
            names(0),
            [
                Some("voltage_l1_v"),
                Some("voltage_l2_v"),
                Some("voltage_l3_v")
            ]
        );
        assert_eq!(oads[0].exp, -1);
        assert_eq!(
            names(1),
            [Some("power_l1_w")],
            "element 2 of 2004 is phase A"
        );
        assert_eq!(
            (names(2), oads[2].exp),
            (vec![Some("demand_w")], -1),
            "kW at 10^-4 is W at 10^-1"
        );
        assert_eq!((names(3), oads[3].exp), (vec![Some("battery_v")], -2));

        let bad = format!(
            "{head}[[group]]\nname = \"g\"\ninterval = \"30s\"\noads = [\n\
             {{ oad = \"2000020\" }},\n{{ oad = \"26000200\" }},\n\
             {{ oad = \"26010200\", quantity = \"volts\" }},\n\
             {{ oad = \"20000200\" }},\n{{ oad = \"20000201\" }},\n]\n\
             dis = [{{ di = \"02010100\" }}]\n"
        );
        let p = problems(&bad);
        assert_eq!(p.len(), 5, "{p:#?}");
        assert!(
            p[0].contains("dis are for DL/T 645 profiles; DL/T 698.45 profiles have oads"),
            "{p:?}"
        );
        assert!(p[1].contains("8 hex digits"), "{p:?}");
        assert!(p[2].contains("not in the catalogue"), "{p:?}");
        assert!(p[3].contains("\"volts\""), "{p:?}");
        assert!(
            p[4].contains("quantity \"voltage_l1_v\" is mapped twice"),
            "{p:?}"
        );
        let modbus = format!("{HEAD}[[group]]\nname = \"g\"\ninterval = \"30s\"\noads = [{{ oad = \"20000200\" }}]\n");
        assert!(problems(&modbus)[0].contains("oads are for DL/T 698.45 profiles"));
    }

    #[test]
    fn an_unknown_key_is_reported_with_its_line() {
        let p = problems(&format!("{HEAD}colour = \"red\"\n"));
        assert!(p[0].starts_with("line 6:"), "{p:?}");
        assert!(p[0].contains("unknown field `colour`"), "{p:?}");
    }
}
