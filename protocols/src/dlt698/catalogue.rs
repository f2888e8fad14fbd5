//! The objects a concentrator reads, as data (notes §7): each attribute's scaler and unit as
//! the standard's tables give them, the factor to the contract's unit (kW → W), and the
//! contract's quantity name of each element (index 1 = first element: the total for energy
//! and power, phase A for voltage and current). A profile may add any OAD with its own scaler
//! and name; a meter's own Scaler_Unit (attribute 3) wins where it is read.

use super::data::{Data, Oad};

/// How attribute 2 is built.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Shape {
    /// One number.
    Single,
    /// An array of numbers (total and tariffs, or phases).
    Array,
    /// An array of structure {value, time} (maximum demand): the value is taken.
    Demand,
}

/// One object attribute.
#[derive(Clone, Copy, Debug)]
pub struct Object {
    pub oi: u16,
    pub attribute: u8,
    pub name: &'static str,
    pub shape: Shape,
    /// value = raw × 10^scaler, in `unit`.
    pub scaler: i8,
    pub unit: &'static str,
    /// Power of ten from `unit` to the contract's unit (kW → W: 3).
    pub shift: i8,
    /// Quantity names by element (index 1 first); an empty name is not mapped.
    pub elements: &'static [&'static str],
}

const fn obj(
    oi: u16,
    name: &'static str,
    shape: Shape,
    scaler: i8,
    unit: &'static str,
    shift: i8,
    elements: &'static [&'static str],
) -> Object {
    Object {
        oi,
        attribute: 2,
        name,
        shape,
        scaler,
        unit,
        shift,
        elements,
    }
}

use Shape::*;

/// The catalogue (attribute 2 unless noted). Scalers and units from the notes' §7 table.
pub const OBJECTS: &[Object] = &[
    obj(0x0000, "combined active energy", Array, -2, "kWh", 0, &[]),
    obj(
        0x0010,
        "forward active energy",
        Array,
        -2,
        "kWh",
        0,
        &[
            "energy_import_kwh",
            "energy_import_t1_kwh",
            "energy_import_t2_kwh",
            "energy_import_t3_kwh",
            "energy_import_t4_kwh",
        ],
    ),
    Object {
        attribute: 4,
        name: "forward active energy, high precision",
        scaler: -4,
        shape: Array,
        ..obj(
            0x0010,
            "",
            Array,
            -4,
            "kWh",
            0,
            &[
                "energy_import_kwh",
                "energy_import_t1_kwh",
                "energy_import_t2_kwh",
                "energy_import_t3_kwh",
                "energy_import_t4_kwh",
            ],
        )
    },
    obj(
        0x0011,
        "forward active energy, phase A",
        Array,
        -2,
        "kWh",
        0,
        &["energy_import_l1_kwh"],
    ),
    obj(
        0x0012,
        "forward active energy, phase B",
        Array,
        -2,
        "kWh",
        0,
        &["energy_import_l2_kwh"],
    ),
    obj(
        0x0013,
        "forward active energy, phase C",
        Array,
        -2,
        "kWh",
        0,
        &["energy_import_l3_kwh"],
    ),
    obj(
        0x0020,
        "reverse active energy",
        Array,
        -2,
        "kWh",
        0,
        &[
            "energy_export_kwh",
            "energy_export_t1_kwh",
            "energy_export_t2_kwh",
            "energy_export_t3_kwh",
            "energy_export_t4_kwh",
        ],
    ),
    obj(
        0x0021,
        "reverse active energy, phase A",
        Array,
        -2,
        "kWh",
        0,
        &["energy_export_l1_kwh"],
    ),
    obj(
        0x0022,
        "reverse active energy, phase B",
        Array,
        -2,
        "kWh",
        0,
        &["energy_export_l2_kwh"],
    ),
    obj(
        0x0023,
        "reverse active energy, phase C",
        Array,
        -2,
        "kWh",
        0,
        &["energy_export_l3_kwh"],
    ),
    obj(
        0x0030,
        "combined reactive energy 1",
        Array,
        -2,
        "kvarh",
        0,
        &["reactive_energy_import_kvarh"],
    ),
    obj(
        0x0040,
        "combined reactive energy 2",
        Array,
        -2,
        "kvarh",
        0,
        &["reactive_energy_export_kvarh"],
    ),
    obj(
        0x0050,
        "quadrant I reactive energy",
        Array,
        -2,
        "kvarh",
        0,
        &["reactive_energy_q1_kvarh"],
    ),
    obj(
        0x0060,
        "quadrant II reactive energy",
        Array,
        -2,
        "kvarh",
        0,
        &["reactive_energy_q2_kvarh"],
    ),
    obj(
        0x0070,
        "quadrant III reactive energy",
        Array,
        -2,
        "kvarh",
        0,
        &["reactive_energy_q3_kvarh"],
    ),
    obj(
        0x0080,
        "quadrant IV reactive energy",
        Array,
        -2,
        "kvarh",
        0,
        &["reactive_energy_q4_kvarh"],
    ),
    obj(0x0090, "forward apparent energy", Array, -2, "kVAh", 0, &[]),
    obj(0x00A0, "reverse apparent energy", Array, -2, "kVAh", 0, &[]),
    obj(
        0x1010,
        "forward active maximum demand",
        Demand,
        -4,
        "kW",
        3,
        &["max_demand_import_w"],
    ),
    obj(
        0x1020,
        "reverse active maximum demand",
        Demand,
        -4,
        "kW",
        3,
        &["max_demand_export_w"],
    ),
    obj(
        0x1030,
        "combined reactive 1 maximum demand",
        Demand,
        -4,
        "kvar",
        3,
        &["max_demand_import_var"],
    ),
    obj(
        0x1040,
        "combined reactive 2 maximum demand",
        Demand,
        -4,
        "kvar",
        3,
        &["max_demand_export_var"],
    ),
    obj(
        0x2000,
        "voltage",
        Array,
        -1,
        "V",
        0,
        &["voltage_l1_v", "voltage_l2_v", "voltage_l3_v"],
    ),
    obj(
        0x2001,
        "current",
        Array,
        -3,
        "A",
        0,
        &["current_l1_a", "current_l2_a", "current_l3_a"],
    ),
    Object {
        attribute: 4,
        ..obj(
            0x2001,
            "neutral current",
            Single,
            -3,
            "A",
            0,
            &["current_n_a"],
        )
    },
    obj(
        0x2004,
        "active power",
        Array,
        -1,
        "W",
        0,
        &["power_w", "power_l1_w", "power_l2_w", "power_l3_w"],
    ),
    obj(
        0x2005,
        "reactive power",
        Array,
        -1,
        "var",
        0,
        &[
            "reactive_power_var",
            "reactive_power_l1_var",
            "reactive_power_l2_var",
            "reactive_power_l3_var",
        ],
    ),
    obj(
        0x2006,
        "apparent power",
        Array,
        -1,
        "VA",
        0,
        &[
            "apparent_power_va",
            "apparent_power_l1_va",
            "apparent_power_l2_va",
            "apparent_power_l3_va",
        ],
    ),
    obj(
        0x200A,
        "power factor",
        Array,
        -3,
        "",
        0,
        &[
            "power_factor",
            "power_factor_l1",
            "power_factor_l2",
            "power_factor_l3",
        ],
    ),
    obj(
        0x200F,
        "grid frequency",
        Single,
        -2,
        "Hz",
        0,
        &["frequency_hz"],
    ),
    obj(
        0x2010,
        "meter temperature",
        Single,
        -1,
        "°C",
        0,
        &["meter_temperature_c"],
    ),
    obj(
        0x2017,
        "current active demand",
        Single,
        -4,
        "kW",
        3,
        &["demand_w"],
    ),
    obj(
        0x2018,
        "current reactive demand",
        Single,
        -4,
        "kvar",
        3,
        &["demand_var"],
    ),
    obj(
        0x2019,
        "current apparent demand",
        Single,
        -4,
        "kVA",
        3,
        &["demand_va"],
    ),
];

/// Objects that are not quantities: (OI, name, what attribute 2 holds). Freezes and events
/// are record tables read with GET-Request-Record (see [`super::plan`] for the daily freeze).
pub const OTHER_OBJECTS: &[(u16, &str, &str)] = &[
    (
        0x2014,
        "running status words",
        "array of 7 bit-string(16); bit meanings not verified",
    ),
    (0x2015, "follow-report status word", "bit-string(32)"),
    (0x2021, "data freeze time", "date_time_s (a record column)"),
    (
        0x2022,
        "event record number",
        "double-long-unsigned (an event column)",
    ),
    (0x201E, "event start time", "date_time_s (an event column)"),
    (0x2020, "event end time", "date_time_s (an event column)"),
    (0x2024, "event source", "varies by event (an event column)"),
    (
        0x3011,
        "meter power-down event",
        "record table: 2022, 201E, 2020, 2024, 3300",
    ),
    (0x3100, "terminal initialisation event", "record table"),
    (0x3106, "terminal power off/on event", "record table"),
    (0x3320, "new-event list", "array OAD"),
    (0x4000, "date-time", "date_time_s, the meter's local time"),
    (
        0x4001,
        "communication address",
        "octet-string, most significant byte first",
    ),
    (0x4002, "meter number", "octet-string"),
    (0x4003, "customer number", "octet-string"),
    (0x4005, "group addresses", "array octet-string"),
    (0x4104, "rated voltage", "visible-string"),
    (0x4300, "electrical device", "device information"),
    (0x4500, "public network module", "communication parameters"),
    (
        0x5002,
        "minute freeze",
        "record table: 2021 freeze time + the frozen OADs",
    ),
    (
        0x5004,
        "daily freeze",
        "record table: 2021 freeze time + the frozen OADs",
    ),
    (
        0x5006,
        "monthly freeze",
        "record table: 2021 freeze time + the frozen OADs",
    ),
    (0x6012, "task configuration table", "record table"),
    (
        0xF100,
        "ESAM",
        "security module data (serial 2, key version 4, counters 7)",
    ),
    (0xF101, "security mode parameters", "structure"),
    (0xF201, "RS-485 port", "proxy port (PROXY TransCommand)"),
    (0xF205, "relay unit", "control"),
    (
        0xF209,
        "carrier / micro-power wireless port",
        "proxy port (PROXY TransCommand)",
    ),
];

/// The name of an object, quantity or not (shown by `decode`).
pub fn object_name(oi: u16) -> Option<&'static str> {
    OTHER_OBJECTS
        .iter()
        .find(|(o, ..)| *o == oi)
        .map(|(_, name, _)| *name)
        .or_else(|| OBJECTS.iter().find(|o| o.oi == oi).map(|o| o.name))
}

/// The catalogue entry of `oad`'s object and attribute.
pub fn lookup(oad: Oad) -> Option<&'static Object> {
    OBJECTS
        .iter()
        .find(|o| o.oi == oad.oi && o.attribute == oad.attribute & 0x1F)
}

/// `raw` × 10^`exp`, rounded as the decimal it stands for (dividing by a power of ten keeps
/// 123456 × 10^-2 at 1234.56, where multiplying by 0.01 would not).
pub fn scale(raw: f64, exp: i32) -> f64 {
    if exp < 0 {
        raw / 10f64.powi(-exp)
    } else {
        raw * 10f64.powi(exp)
    }
}

impl Object {
    /// Numbers from attribute 2 as read at `index` (0: the whole attribute), in the contract's
    /// unit, each with its quantity name where the catalogue has one. `None` when the value is
    /// not the shape the catalogue expects.
    pub fn values(&self, index: u8, data: &Data) -> Option<Vec<(Option<&'static str>, f64)>> {
        let exp = i32::from(self.scaler) + i32::from(self.shift);
        let number = |d: &Data| -> Option<f64> {
            match (self.shape, d) {
                (Shape::Demand, Data::Structure(v)) => v.first()?.as_f64(),
                (_, d) => d.as_f64(),
            }
            .map(|raw| scale(raw, exp))
        };
        let name = |i: usize| self.elements.get(i).copied().filter(|n| !n.is_empty());
        match (self.shape, index, data) {
            (Shape::Single, _, d) => Some(vec![(name(0), number(d)?)]),
            (_, 0, Data::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, d)| Some((name(i), number(d)?)))
                .collect(),
            (_, 0, _) => None,
            (_, i, d) => Some(vec![(name(usize::from(i) - 1), number(d)?)]),
        }
    }
}

/// Unit names of the enum in Scaler_Unit (those the notes list as agreed).
pub fn unit_name(code: u8) -> Option<&'static str> {
    Some(match code {
        27 => "W",
        28 => "kW",
        29 => "VA",
        30 => "kVA",
        31 => "var",
        32 => "kvar",
        33 => "kWh",
        34 => "kVAh",
        35 => "kvarh",
        36 => "A",
        38 => "V",
        47 => "Hz",
        255 => "",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalogue_quantity_has_the_contracts_form() {
        for o in OBJECTS {
            for q in o.elements.iter().filter(|q| !q.is_empty()) {
                assert!(crate::quantity::unit_of(q).is_some(), "{:04X}: {q}", o.oi);
            }
        }
    }

    #[test]
    fn scaled_values_are_the_decimals_the_meter_meant() {
        type Case = (u32, Data, &'static [(Option<&'static str>, f64)]);
        let cases: &[Case] = &[
            (
                0x0010_0201,
                Data::DoubleLongUnsigned(123_456),
                &[(Some("energy_import_kwh"), 1234.56)],
            ),
            (
                0x0010_0401,
                Data::Long64Unsigned(12_345_678),
                &[(Some("energy_import_kwh"), 1234.5678)],
            ),
            (
                0x2000_0200,
                Data::Array(vec![
                    Data::LongUnsigned(2413),
                    Data::LongUnsigned(2414),
                    Data::LongUnsigned(2415),
                ]),
                &[
                    (Some("voltage_l1_v"), 241.3),
                    (Some("voltage_l2_v"), 241.4),
                    (Some("voltage_l3_v"), 241.5),
                ],
            ),
            (
                0x2001_0202,
                Data::DoubleLong(-1500),
                &[(Some("current_l2_a"), -1.5)],
            ),
            (
                0x200F_0200,
                Data::LongUnsigned(5003),
                &[(Some("frequency_hz"), 50.03)],
            ),
            (
                0x2017_0200,
                Data::DoubleLong(12_345),
                &[(Some("demand_w"), 1234.5)],
            ),
            (
                0x1010_0201,
                Data::Structure(vec![Data::DoubleLongUnsigned(25_000), Data::Null]),
                &[(Some("max_demand_import_w"), 2500.0)],
            ),
        ];
        for (oad, data, expected) in cases {
            let oad = Oad::from_u32(*oad);
            let got = lookup(oad).unwrap().values(oad.index, data).unwrap();
            assert_eq!(got, expected.to_vec(), "{oad}");
        }
    }

    #[test]
    fn a_value_of_the_wrong_shape_is_not_a_number() {
        let oad = Oad::from_u32(0x2000_0200);
        assert!(lookup(oad)
            .unwrap()
            .values(0, &Data::VisibleString(b"x".to_vec()))
            .is_none());
        assert!(lookup(oad)
            .unwrap()
            .values(0, &Data::Array(vec![Data::Null]))
            .is_none());
    }
}
