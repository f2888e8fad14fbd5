//! The data-identifier catalogue: what a DI's value bytes mean.
//!
//! 2007 identifiers are four bytes DI3 DI2 DI1 DI0 (sent DI0 first); 1997 identifiers two
//! (DI1 DI0, sent DI0 first). `FF` in a member position of a 2007 DI (or `F` in the low nibble
//! of a 1997 DI) is a block: the members concatenated in order.

use super::{bcd, error::Dlt645Error};

/// How a value is laid out.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Format {
    /// Packed BCD number: bytes, decimals, sign-magnitude or not.
    Number {
        bytes: usize,
        decimals: u32,
        signed: bool,
    },
    /// `WW DD MM YY` on the wire (YYMMDDWW).
    DateWeekday,
    /// `ss mm hh` on the wire (hhmmss).
    Time,
    /// `mm hh DD MM YY` on the wire (YYMMDDhhmm).
    DateTimeMinutes,
    /// 12 BCD digits (an address or meter number).
    Digits12,
    /// A bit field of this many bytes (status words), shown in hex.
    Bits(usize),
    /// Max demand `XX.XXXX` (3 bytes) then its time `mm hh DD MM YY` (5 bytes).
    DemandWithTime,
    /// Two times `ss mm hh DD MM YY` (a start and an end, e.g. a power-down record).
    TwoTimes,
}

impl Format {
    /// Bytes on the wire.
    pub fn byte_len(self) -> usize {
        match self {
            Format::Number { bytes, .. } => bytes,
            Format::DateWeekday => 4,
            Format::Time => 3,
            Format::DateTimeMinutes => 5,
            Format::Digits12 => 6,
            Format::Bits(n) => n,
            Format::DemandWithTime => 8,
            Format::TwoTimes => 12,
        }
    }
}

/// One catalogue entry.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Item {
    pub di: u32,
    pub name: &'static str,
    pub format: Format,
    pub unit: &'static str,
    /// The contract's quantity name and the factor from the meter's unit to it (kW → W: 1000).
    pub quantity: Option<(&'static str, f64)>,
    /// The value repeats (a total then one per tariff, as many as the reply holds).
    pub repeats: bool,
}

const fn num(bytes: usize, decimals: u32, signed: bool) -> Format {
    Format::Number {
        bytes,
        decimals,
        signed,
    }
}

const fn item(
    di: u32,
    name: &'static str,
    format: Format,
    unit: &'static str,
    quantity: Option<(&'static str, f64)>,
) -> Item {
    Item {
        di,
        name,
        format,
        unit,
        quantity,
        repeats: false,
    }
}

/// DL/T 645-2007 identifiers (dlt645-notes.md §8).
pub const CATALOGUE_2007: &[Item] = &[
    item(
        0x0000_0000,
        "combined active energy, total",
        num(4, 2, true),
        "kWh",
        None,
    ),
    item(
        0x0001_0000,
        "forward active energy, total",
        num(4, 2, false),
        "kWh",
        Some(("energy_import_kwh", 1.0)),
    ),
    item(
        0x0001_0100,
        "forward active energy, tariff 1",
        num(4, 2, false),
        "kWh",
        Some(("energy_import_t1_kwh", 1.0)),
    ),
    item(
        0x0001_0200,
        "forward active energy, tariff 2",
        num(4, 2, false),
        "kWh",
        Some(("energy_import_t2_kwh", 1.0)),
    ),
    item(
        0x0001_0300,
        "forward active energy, tariff 3",
        num(4, 2, false),
        "kWh",
        Some(("energy_import_t3_kwh", 1.0)),
    ),
    item(
        0x0001_0400,
        "forward active energy, tariff 4",
        num(4, 2, false),
        "kWh",
        Some(("energy_import_t4_kwh", 1.0)),
    ),
    item(
        0x0002_0000,
        "reverse active energy, total",
        num(4, 2, false),
        "kWh",
        Some(("energy_export_kwh", 1.0)),
    ),
    item(
        0x0003_0000,
        "combined reactive energy 1, total",
        num(4, 2, true),
        "kvarh",
        Some(("reactive_energy_import_kvarh", 1.0)),
    ),
    item(
        0x0004_0000,
        "combined reactive energy 2, total",
        num(4, 2, true),
        "kvarh",
        Some(("reactive_energy_export_kvarh", 1.0)),
    ),
    item(
        0x0201_0100,
        "voltage, phase A",
        num(2, 1, false),
        "V",
        Some(("voltage_l1_v", 1.0)),
    ),
    item(
        0x0201_0200,
        "voltage, phase B",
        num(2, 1, false),
        "V",
        Some(("voltage_l2_v", 1.0)),
    ),
    item(
        0x0201_0300,
        "voltage, phase C",
        num(2, 1, false),
        "V",
        Some(("voltage_l3_v", 1.0)),
    ),
    item(
        0x0202_0100,
        "current, phase A",
        num(3, 3, true),
        "A",
        Some(("current_l1_a", 1.0)),
    ),
    item(
        0x0202_0200,
        "current, phase B",
        num(3, 3, true),
        "A",
        Some(("current_l2_a", 1.0)),
    ),
    item(
        0x0202_0300,
        "current, phase C",
        num(3, 3, true),
        "A",
        Some(("current_l3_a", 1.0)),
    ),
    item(
        0x0203_0000,
        "active power, total",
        num(3, 4, true),
        "kW",
        Some(("power_w", 1000.0)),
    ),
    item(
        0x0203_0100,
        "active power, phase A",
        num(3, 4, true),
        "kW",
        Some(("power_l1_w", 1000.0)),
    ),
    item(
        0x0203_0200,
        "active power, phase B",
        num(3, 4, true),
        "kW",
        Some(("power_l2_w", 1000.0)),
    ),
    item(
        0x0203_0300,
        "active power, phase C",
        num(3, 4, true),
        "kW",
        Some(("power_l3_w", 1000.0)),
    ),
    item(
        0x0204_0000,
        "reactive power, total",
        num(3, 4, true),
        "kvar",
        Some(("reactive_power_var", 1000.0)),
    ),
    item(
        0x0204_0100,
        "reactive power, phase A",
        num(3, 4, true),
        "kvar",
        Some(("reactive_power_l1_var", 1000.0)),
    ),
    item(
        0x0204_0200,
        "reactive power, phase B",
        num(3, 4, true),
        "kvar",
        Some(("reactive_power_l2_var", 1000.0)),
    ),
    item(
        0x0204_0300,
        "reactive power, phase C",
        num(3, 4, true),
        "kvar",
        Some(("reactive_power_l3_var", 1000.0)),
    ),
    item(
        0x0205_0000,
        "apparent power, total",
        num(3, 4, true),
        "kVA",
        Some(("apparent_power_va", 1000.0)),
    ),
    item(
        0x0205_0100,
        "apparent power, phase A",
        num(3, 4, true),
        "kVA",
        Some(("apparent_power_l1_va", 1000.0)),
    ),
    item(
        0x0205_0200,
        "apparent power, phase B",
        num(3, 4, true),
        "kVA",
        Some(("apparent_power_l2_va", 1000.0)),
    ),
    item(
        0x0205_0300,
        "apparent power, phase C",
        num(3, 4, true),
        "kVA",
        Some(("apparent_power_l3_va", 1000.0)),
    ),
    item(
        0x0206_0000,
        "power factor, total",
        num(2, 3, true),
        "",
        Some(("power_factor", 1.0)),
    ),
    item(
        0x0206_0100,
        "power factor, phase A",
        num(2, 3, true),
        "",
        Some(("power_factor_l1", 1.0)),
    ),
    item(
        0x0206_0200,
        "power factor, phase B",
        num(2, 3, true),
        "",
        Some(("power_factor_l2", 1.0)),
    ),
    item(
        0x0206_0300,
        "power factor, phase C",
        num(2, 3, true),
        "",
        Some(("power_factor_l3", 1.0)),
    ),
    item(
        0x0280_0001,
        "neutral current",
        num(3, 3, true),
        "A",
        Some(("current_n_a", 1.0)),
    ),
    item(
        0x0280_0002,
        "grid frequency",
        num(2, 2, false),
        "Hz",
        Some(("frequency_hz", 1.0)),
    ),
    item(
        0x0280_0007,
        "meter temperature",
        num(2, 1, true),
        "°C",
        Some(("meter_temperature_c", 1.0)),
    ),
    item(0x0311_0000, "power-down count", num(3, 0, false), "", None),
    item(0x0330_0100, "meter-clear count", num(3, 0, false), "", None),
    item(
        0x0400_0101,
        "date and weekday",
        Format::DateWeekday,
        "",
        None,
    ),
    item(0x0400_0102, "time", Format::Time, "", None),
    item(
        0x0400_0401,
        "communication address",
        Format::Digits12,
        "",
        None,
    ),
    item(0x0400_0402, "meter number", Format::Digits12, "", None),
    item(
        0x0400_0409,
        "active constant",
        num(3, 0, false),
        "imp/kWh",
        None,
    ),
    item(
        0x0400_040A,
        "reactive constant",
        num(3, 0, false),
        "imp/kvarh",
        None,
    ),
    item(0x0400_0501, "run status word 1", Format::Bits(2), "", None),
    item(0x0400_0502, "run status word 2", Format::Bits(2), "", None),
    item(0x0400_0503, "run status word 3", Format::Bits(2), "", None),
    item(0x0400_0504, "run status word 4", Format::Bits(2), "", None),
    item(0x0400_0505, "run status word 5", Format::Bits(2), "", None),
    item(0x0400_0506, "run status word 6", Format::Bits(2), "", None),
    item(0x0400_0507, "run status word 7", Format::Bits(2), "", None),
    item(
        0x0005_0000,
        "reactive energy quadrant I, total",
        num(4, 2, false),
        "kvarh",
        Some(("reactive_energy_q1_kvarh", 1.0)),
    ),
    item(
        0x0006_0000,
        "reactive energy quadrant II, total",
        num(4, 2, false),
        "kvarh",
        Some(("reactive_energy_q2_kvarh", 1.0)),
    ),
    item(
        0x0007_0000,
        "reactive energy quadrant III, total",
        num(4, 2, false),
        "kvarh",
        Some(("reactive_energy_q3_kvarh", 1.0)),
    ),
    item(
        0x0008_0000,
        "reactive energy quadrant IV, total",
        num(4, 2, false),
        "kvarh",
        Some(("reactive_energy_q4_kvarh", 1.0)),
    ),
    item(
        0x0009_0000,
        "forward apparent energy, total",
        num(4, 2, false),
        "kVAh",
        None,
    ),
    item(
        0x000A_0000,
        "reverse apparent energy, total",
        num(4, 2, false),
        "kVAh",
        None,
    ),
    item(
        0x0015_0000,
        "forward active energy, phase A",
        num(4, 2, false),
        "kWh",
        Some(("energy_import_l1_kwh", 1.0)),
    ),
    item(
        0x0029_0000,
        "forward active energy, phase B",
        num(4, 2, false),
        "kWh",
        Some(("energy_import_l2_kwh", 1.0)),
    ),
    item(
        0x003D_0000,
        "forward active energy, phase C",
        num(4, 2, false),
        "kWh",
        Some(("energy_import_l3_kwh", 1.0)),
    ),
    item(
        0x0101_0000,
        "forward active max demand and its time",
        Format::DemandWithTime,
        "kW",
        None,
    ),
    item(
        0x0102_0000,
        "reverse active max demand and its time",
        Format::DemandWithTime,
        "kW",
        None,
    ),
    item(
        0x0207_0100,
        "phase angle, phase A",
        num(2, 1, false),
        "°",
        None,
    ),
    item(
        0x0207_0200,
        "phase angle, phase B",
        num(2, 1, false),
        "°",
        None,
    ),
    item(
        0x0207_0300,
        "phase angle, phase C",
        num(2, 1, false),
        "°",
        None,
    ),
    item(
        0x0208_0100,
        "voltage distortion, phase A",
        num(2, 2, false),
        "%",
        None,
    ),
    item(
        0x0208_0200,
        "voltage distortion, phase B",
        num(2, 2, false),
        "%",
        None,
    ),
    item(
        0x0208_0300,
        "voltage distortion, phase C",
        num(2, 2, false),
        "%",
        None,
    ),
    item(
        0x0209_0100,
        "current distortion, phase A",
        num(2, 2, false),
        "%",
        None,
    ),
    item(
        0x0209_0200,
        "current distortion, phase B",
        num(2, 2, false),
        "%",
        None,
    ),
    item(
        0x0209_0300,
        "current distortion, phase C",
        num(2, 2, false),
        "%",
        None,
    ),
    item(
        0x0280_0003,
        "one-minute average active power",
        num(3, 4, true),
        "kW",
        Some(("power_avg_1min_w", 1000.0)),
    ),
    item(
        0x0280_0004,
        "current active demand",
        num(3, 4, true),
        "kW",
        Some(("demand_w", 1000.0)),
    ),
    item(
        0x0280_0005,
        "current reactive demand",
        num(3, 4, true),
        "kvar",
        Some(("demand_var", 1000.0)),
    ),
    item(
        0x0280_0006,
        "current apparent demand",
        num(3, 4, true),
        "kVA",
        Some(("demand_va", 1000.0)),
    ),
];

/// DL/T 645-1997 identifiers (dlt645-notes.md §9): the same quantities at other scales.
pub const CATALOGUE_1997: &[Item] = &[
    item(
        0x9010,
        "forward active energy, total",
        num(4, 2, false),
        "kWh",
        Some(("energy_import_kwh", 1.0)),
    ),
    item(
        0x9011,
        "forward active energy, tariff 1",
        num(4, 2, false),
        "kWh",
        Some(("energy_import_t1_kwh", 1.0)),
    ),
    item(
        0x9012,
        "forward active energy, tariff 2",
        num(4, 2, false),
        "kWh",
        Some(("energy_import_t2_kwh", 1.0)),
    ),
    item(
        0x9013,
        "forward active energy, tariff 3",
        num(4, 2, false),
        "kWh",
        Some(("energy_import_t3_kwh", 1.0)),
    ),
    item(
        0x9014,
        "forward active energy, tariff 4",
        num(4, 2, false),
        "kWh",
        Some(("energy_import_t4_kwh", 1.0)),
    ),
    item(
        0x9020,
        "reverse active energy, total",
        num(4, 2, false),
        "kWh",
        Some(("energy_export_kwh", 1.0)),
    ),
    item(
        0x9110,
        "forward reactive energy, total",
        num(4, 2, false),
        "kvarh",
        Some(("reactive_energy_import_kvarh", 1.0)),
    ),
    item(
        0x9120,
        "reverse reactive energy, total",
        num(4, 2, false),
        "kvarh",
        Some(("reactive_energy_export_kvarh", 1.0)),
    ),
    item(
        0xB611,
        "voltage, phase A",
        num(2, 0, false),
        "V",
        Some(("voltage_l1_v", 1.0)),
    ),
    item(
        0xB612,
        "voltage, phase B",
        num(2, 0, false),
        "V",
        Some(("voltage_l2_v", 1.0)),
    ),
    item(
        0xB613,
        "voltage, phase C",
        num(2, 0, false),
        "V",
        Some(("voltage_l3_v", 1.0)),
    ),
    item(
        0xB621,
        "current, phase A",
        num(2, 2, false),
        "A",
        Some(("current_l1_a", 1.0)),
    ),
    item(
        0xB622,
        "current, phase B",
        num(2, 2, false),
        "A",
        Some(("current_l2_a", 1.0)),
    ),
    item(
        0xB623,
        "current, phase C",
        num(2, 2, false),
        "A",
        Some(("current_l3_a", 1.0)),
    ),
    item(
        0xB630,
        "active power, total",
        num(3, 4, false),
        "kW",
        Some(("power_w", 1000.0)),
    ),
    item(
        0xB631,
        "active power, phase A",
        num(3, 4, false),
        "kW",
        Some(("power_l1_w", 1000.0)),
    ),
    item(
        0xB632,
        "active power, phase B",
        num(3, 4, false),
        "kW",
        Some(("power_l2_w", 1000.0)),
    ),
    item(
        0xB633,
        "active power, phase C",
        num(3, 4, false),
        "kW",
        Some(("power_l3_w", 1000.0)),
    ),
    item(
        0xB640,
        "reactive power, total",
        num(2, 2, false),
        "kvar",
        Some(("reactive_power_var", 1000.0)),
    ),
    item(
        0xB650,
        "power factor, total",
        num(2, 3, false),
        "",
        Some(("power_factor", 1.0)),
    ),
    item(0xC010, "date and weekday", Format::DateWeekday, "", None),
    item(0xC011, "time", Format::Time, "", None),
    item(0xC032, "meter number", Format::Digits12, "", None),
    item(
        0xB641,
        "reactive power, phase A",
        num(2, 2, false),
        "kvar",
        Some(("reactive_power_l1_var", 1000.0)),
    ),
    item(
        0xB642,
        "reactive power, phase B",
        num(2, 2, false),
        "kvar",
        Some(("reactive_power_l2_var", 1000.0)),
    ),
    item(
        0xB643,
        "reactive power, phase C",
        num(2, 2, false),
        "kvar",
        Some(("reactive_power_l3_var", 1000.0)),
    ),
    item(
        0xB651,
        "power factor, phase A",
        num(2, 3, false),
        "",
        Some(("power_factor_l1", 1.0)),
    ),
    item(
        0xB652,
        "power factor, phase B",
        num(2, 3, false),
        "",
        Some(("power_factor_l2", 1.0)),
    ),
    item(
        0xB653,
        "power factor, phase C",
        num(2, 3, false),
        "",
        Some(("power_factor_l3", 1.0)),
    ),
    item(
        0x9410,
        "forward active energy, total, last month",
        num(4, 2, false),
        "kWh",
        None,
    ),
    item(
        0xA010,
        "forward active max demand",
        num(3, 4, false),
        "kW",
        None,
    ),
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Version {
    V2007,
    V1997,
}

/// The catalogue entry of `di`, if known: listed, or one of the numbered families of the
/// notes (harmonics by phase and order, the last n power-down records, timed and daily freezes).
pub fn lookup(version: Version, di: u32) -> Option<Item> {
    let cat = match version {
        Version::V2007 => CATALOGUE_2007,
        Version::V1997 => CATALOGUE_1997,
    };
    if let Some(i) = cat.iter().find(|i| i.di == di) {
        return Some(*i);
    }
    if version == Version::V1997 {
        return None;
    }
    let [d3, d2, d1, d0] = di.to_be_bytes();
    let energy_block = |name| Item {
        repeats: true,
        ..item(di, name, num(4, 2, false), "kWh", None)
    };
    Some(match (d3, d2, d1, d0) {
        (0x02, 0x0A, 1..=3, 1..=0x15) => item(
            di,
            "voltage harmonic content (phase DI1, order DI0)",
            num(2, 2, false),
            "%",
            None,
        ),
        (0x02, 0x0B, 1..=3, 1..=0x15) => item(
            di,
            "current harmonic content (phase DI1, order DI0)",
            num(2, 2, false),
            "%",
            None,
        ),
        (0x03, 0x11, 0x00, 1..=0x0A) => item(
            di,
            "power-down record (last n = DI0): start and end",
            Format::TwoTimes,
            "",
            None,
        ),
        (0x05, 0x00, 0x00, 1..=0x3C) => item(
            di,
            "timed freeze (last n = DI0): time",
            Format::DateTimeMinutes,
            "",
            None,
        ),
        (0x05, 0x00, 0x01, 1..=0x3C) => {
            energy_block("timed freeze (last n = DI0): forward active energy")
        }
        (0x05, 0x06, 0x00, 1..=0x3E) => item(
            di,
            "daily freeze (last n = DI0): time",
            Format::DateTimeMinutes,
            "",
            None,
        ),
        (0x05, 0x06, 0x01, 1..=0x3E) => {
            energy_block("daily freeze (last n = DI0): forward active energy")
        }
        (0x05, 0x06, 0x02, 1..=0x3E) => {
            energy_block("daily freeze (last n = DI0): reverse active energy")
        }
        _ => return None,
    })
}

/// Member `k` of a block DI: the FF position (2007: DI1; 1997: the low nibble) counts from 0
/// where a total exists (energy, power) and from 1 otherwise (per-phase voltage, current).
/// `None` when `di` is not a block.
pub fn block_member(version: Version, di: u32, k: u32) -> Option<u32> {
    let member = |n: u32| match version {
        Version::V2007 => (di & 0xFFFF_00FF) | (n << 8),
        Version::V1997 => (di & 0xFFF0) | n,
    };
    let is_block = match version {
        Version::V2007 => (di >> 8) & 0xFF == 0xFF,
        Version::V1997 => di & 0xF == 0xF,
    };
    if !is_block {
        return None;
    }
    let start = u32::from(lookup(version, member(0)).is_none());
    Some(member(start + k))
}

/// A decoded value.
#[derive(Clone, PartialEq, Debug)]
pub enum Value {
    Number(f64),
    Text(String),
}

/// One decoded member of a reply.
#[derive(Clone, PartialEq, Debug)]
pub struct Decoded {
    pub di: u32,
    pub name: String,
    pub value: Value,
    pub unit: &'static str,
    pub quantity: Option<(&'static str, f64)>,
}

fn decode_one(item: &Item, bytes: &[u8]) -> Result<Value, Dlt645Error> {
    Ok(match item.format {
        Format::Number {
            decimals, signed, ..
        } => Value::Number(bcd::decode(bytes, decimals, signed)?),
        Format::DateWeekday => {
            let d = bcd::digits(bytes)?; // YYMMDDWW
            Value::Text(format!(
                "20{}-{}-{} weekday {}",
                &d[0..2],
                &d[2..4],
                &d[4..6],
                &d[7..8]
            ))
        }
        Format::Time => {
            let d = bcd::digits(bytes)?; // hhmmss
            Value::Text(format!("{}:{}:{}", &d[0..2], &d[2..4], &d[4..6]))
        }
        Format::DateTimeMinutes => {
            let d = bcd::digits(bytes)?;
            Value::Text(format!(
                "20{}-{}-{} {}:{}",
                &d[0..2],
                &d[2..4],
                &d[4..6],
                &d[6..8],
                &d[8..10]
            ))
        }
        Format::Digits12 => Value::Text(bcd::digits(bytes)?),
        Format::Bits(_) => Value::Text(
            bytes
                .iter()
                .rev()
                .map(|b| format!("{b:02X}"))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        Format::TwoTimes => {
            let t = |b: &[u8]| -> Result<String, Dlt645Error> {
                let d = bcd::digits(b)?; // YYMMDDhhmmss
                Ok(format!(
                    "20{}-{}-{} {}:{}:{}",
                    &d[0..2],
                    &d[2..4],
                    &d[4..6],
                    &d[6..8],
                    &d[8..10],
                    &d[10..12]
                ))
            };
            Value::Text(format!("{} to {}", t(&bytes[..6])?, t(&bytes[6..12])?))
        }
        Format::DemandWithTime => {
            let demand = bcd::decode(&bytes[..3], 4, false)?;
            let d = bcd::digits(&bytes[3..8])?; // YYMMDDhhmm
            Value::Text(format!(
                "{demand} at 20{}-{}-{} {}:{}",
                &d[0..2],
                &d[2..4],
                &d[4..6],
                &d[6..8],
                &d[8..10]
            ))
        }
    })
}

/// Decode the value bytes of a reply to `di`: one item, or every member of a block. Members
/// beyond the catalogue (tariffs 5 and up) take the first member's format. An unknown DI
/// decodes to nothing (the caller shows the raw bytes).
pub fn decode_values(version: Version, di: u32, bytes: &[u8]) -> Result<Vec<Decoded>, Dlt645Error> {
    if let Some(item) = lookup(version, di) {
        let n = item.format.byte_len();
        if bytes.len() < n {
            return Err(Dlt645Error::ShortData {
                what: item.name.to_string(),
                have: bytes.len(),
                need: n,
            });
        }
        if item.repeats {
            // A total, then one value per tariff: as many as the reply holds.
            return bytes
                .chunks_exact(n)
                .enumerate()
                .map(|(k, chunk)| {
                    let name = if k == 0 {
                        format!("{}, total", item.name)
                    } else {
                        format!("{}, tariff {k}", item.name)
                    };
                    decoded(&item, di, name, chunk)
                })
                .collect();
        }
        return Ok(vec![decoded(
            &item,
            di,
            item.name.to_string(),
            &bytes[..n],
        )?]);
    }
    let Some(first) = block_member(version, di, 0).and_then(|m| lookup(version, m)) else {
        return Ok(Vec::new());
    };
    let n = first.format.byte_len();
    let mut out = Vec::new();
    for (k, chunk) in bytes.chunks(n).enumerate() {
        if chunk.len() < n {
            return Err(Dlt645Error::ShortData {
                what: format!("block member {k}"),
                have: chunk.len(),
                need: n,
            });
        }
        let member = block_member(version, di, k as u32).unwrap_or(first.di);
        let out_item = match lookup(version, member) {
            Some(item) => decoded(&item, member, item.name.to_string(), chunk)?,
            None => {
                let mut d = decoded(
                    &first,
                    member,
                    format!("{} (member {k})", first.name),
                    chunk,
                )?;
                d.quantity = None;
                d
            }
        };
        out.push(out_item);
    }
    Ok(out)
}

fn decoded(item: &Item, di: u32, name: String, bytes: &[u8]) -> Result<Decoded, Dlt645Error> {
    Ok(Decoded {
        di,
        name,
        value: decode_one(item, bytes)?,
        unit: item.unit,
        quantity: item.quantity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalogue_quantity_has_the_contracts_form() {
        for item in CATALOGUE_2007.iter().chain(CATALOGUE_1997) {
            if let Some((q, factor)) = item.quantity {
                assert!(
                    crate::quantity::unit_of(q).is_some(),
                    "{:08X}: {q}",
                    item.di
                );
                assert!(factor > 0.0);
            }
        }
    }

    #[test]
    fn numbered_families_are_known_and_freeze_blocks_split_per_tariff() {
        assert!(
            lookup(Version::V2007, 0x020A_0315).is_some(),
            "phase C voltage harmonic 21"
        );
        assert!(
            lookup(Version::V2007, 0x020A_0316).is_none(),
            "order 22 does not exist"
        );
        let block: Vec<u8> = [12345.67, 5000.0, 4000.0]
            .iter()
            .flat_map(|v| crate::dlt645::bcd::encode(*v, 4, 2, false).unwrap())
            .collect();
        let v = decode_values(Version::V2007, 0x0506_0103, &block).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(
            v[0].name,
            "daily freeze (last n = DI0): forward active energy, total"
        );
        assert_eq!(v[2].value, Value::Number(4000.0));
        let rec = decode_values(
            Version::V2007,
            0x0311_0001,
            &[
                0x00, 0x30, 0x08, 0x02, 0x01, 0x25, 0x10, 0x45, 0x08, 0x02, 0x01, 0x25,
            ],
        )
        .unwrap();
        assert_eq!(
            rec[0].value,
            Value::Text("2025-01-02 08:30:00 to 2025-01-02 08:45:10".into())
        );
    }

    #[test]
    fn max_demand_decodes_with_its_time_and_status_words_as_bits() {
        let v = decode_values(
            Version::V2007,
            0x0101_0000,
            &[0x56, 0x34, 0x12, 0x34, 0x12, 0x02, 0x01, 0x25],
        )
        .unwrap();
        assert_eq!(
            v[0].value,
            Value::Text("12.3456 at 2025-01-02 12:34".into())
        );
        let s = decode_values(Version::V2007, 0x0400_0501, &[0x10, 0x00]).unwrap();
        assert_eq!(s[0].value, Value::Text("00 10".into()));
    }
}
