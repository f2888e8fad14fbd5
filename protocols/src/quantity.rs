//! Canonical quantity names. The unit is in the name's suffix (`voltage_l1_v` is in volts), so a
//! profile can add names "of the same form" and the unit still follows from the name.

/// Suffixes and their units, longest first so `_kvarh` wins over `_h`-like shorter matches.
const SUFFIXES: &[(&str, &str)] = &[
    ("_kvarh", "kvarh"),
    ("_kwh", "kWh"),
    ("_var", "var"),
    ("_va", "VA"),
    ("_hz", "Hz"),
    ("_w", "W"),
    ("_v", "V"),
    ("_a", "A"),
    ("_c", "°C"),
    ("_s", "s"),
];

/// The unit of a quantity name, or `None` when the name is not of the canonical form
/// (lowercase `a-z0-9_`, ending in a unit suffix, or a `power_factor*` name which is unitless).
pub fn unit_of(name: &str) -> Option<&'static str> {
    let well_formed = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.contains("__");
    if !well_formed {
        return None;
    }
    if name == "power_factor" || name.starts_with("power_factor_") {
        return Some("1");
    }
    SUFFIXES
        .iter()
        .find(|(suffix, _)| name.len() > suffix.len() && name.ends_with(suffix))
        .map(|(_, unit)| *unit)
}

/// True for cumulative counters, which only ever increase on a healthy meter.
pub fn is_counter(name: &str) -> bool {
    name.ends_with("_kwh") || name.ends_with("_kvarh")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, expected: Option<&str>) {
        assert_eq!(unit_of(name), expected, "unit of {name}");
    }

    #[test]
    fn units_follow_from_the_name_suffix() {
        for (name, unit) in [
            ("energy_import_kwh", Some("kWh")),
            ("reactive_energy_export_kvarh", Some("kvarh")),
            ("voltage_l1_v", Some("V")),
            ("voltage_l1_l2_v", Some("V")),
            ("current_n_a", Some("A")),
            ("power_w", Some("W")),
            ("reactive_power_l2_var", Some("var")),
            ("apparent_power_va", Some("VA")),
            ("power_factor", Some("1")),
            ("power_factor_l3", Some("1")),
            ("frequency_hz", Some("Hz")),
            ("meter_temperature_c", Some("°C")),
            ("meter_clock_offset_s", Some("s")),
            ("Voltage_v", None),
            ("voltage", None),
            ("_v", None),
            ("voltage__v", None),
            ("volt-age_v", None),
        ] {
            check(name, unit);
        }
    }
}
