//! `[[bus]]` and `[[bus.meter]]`: links, timing, addresses, profiles and intervals.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use meterd_protocols::{dlt645::Address, dlt698::ServerAddress, profile::ProfileProtocol};

use super::{
    model::*,
    raw::*,
    report::{k, Reporter, Seg},
    values::{parse_utc_offset, valid_id, ID_RULE},
    ProfileSet,
};

/// Every bus, with each problem reported; buses with problems are left out.
pub(super) fn check_buses(
    r: &mut Reporter,
    raw_buses: Vec<(usize, RawBus, Vec<usize>)>,
    profiles: &Arc<ProfileSet>,
) -> Vec<BusConfig> {
    let mut buses = Vec::new();
    let mut bus_names = HashSet::new();
    let mut meter_ids: HashMap<String, String> = HashMap::new();
    let mut devices: HashMap<PathBuf, String> = HashMap::new();
    for (i, b, meter_index) in raw_buses {
        let bp = |rest: &[&str]| {
            let mut p = vec![k("bus"), Seg::Index(i)];
            p.extend(rest.iter().map(|s| k(s)));
            p
        };
        if !valid_id(&b.name) {
            r.error(&bp(&["name"]), format!("{:?}: {ID_RULE}", b.name));
        } else if !bus_names.insert(b.name.clone()) {
            r.error(
                &bp(&["name"]),
                format!("bus name {:?} is used twice", b.name),
            );
        }
        let dlt645 = matches!(
            b.protocol,
            BusProtocol::Dlt645_2007 | BusProtocol::Dlt645_1997
        );
        let dlt698 = b.protocol == BusProtocol::Dlt698;
        // DL/T 645 and 698.45 run on a serial line or through a transparent serial server (TCP).
        let serial_bus = b.protocol == BusProtocol::ModbusRtu
            || (b.protocol.is_addressed() && b.serial.is_some());
        let (default_baud, default_parity) =
            (b.protocol.default_baud(), b.protocol.default_parity());
        let link = match (&b.serial, &b.tcp, serial_bus) {
            (Some(s), None, true) => {
                let s = SerialConfig {
                    device: s.device.clone(),
                    baud: s.baud.unwrap_or(default_baud),
                    parity: s.parity.unwrap_or(default_parity),
                    data_bits: s.data_bits,
                    stop_bits: s.stop_bits,
                };
                if s.baud == 0 {
                    r.error(&bp(&["serial", "baud"]), "must be more than 0");
                }
                if !(5..=8).contains(&s.data_bits) {
                    r.error(&bp(&["serial", "data_bits"]), "must be 5, 6, 7 or 8");
                }
                if !(1..=2).contains(&s.stop_bits) {
                    r.error(&bp(&["serial", "stop_bits"]), "must be 1 or 2");
                }
                if let Some(other) = devices.insert(s.device.clone(), b.name.clone()) {
                    r.error(
                        &bp(&["serial", "device"]),
                        format!(
                            "{} is already used by bus {other:?}: one task owns a serial line",
                            s.device.display()
                        ),
                    );
                }
                Some(Link::Serial(s))
            }
            (None, Some(addr), false) => {
                let ok = addr
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
                if !ok {
                    r.error(&bp(&["tcp"]), format!("{addr:?} is not HOST:PORT"));
                }
                Some(Link::Tcp(addr.clone()))
            }
            (None, None, false) if b.protocol.is_addressed() => {
                r.error(
                    &bp(&["serial"]),
                    format!(
                        "a {} bus needs serial = {{ device = ... }} or tcp = \"HOST:PORT\"",
                        b.protocol.as_str()
                    ),
                );
                None
            }
            (_, _, true) => {
                r.error(
                    &bp(&["serial"]),
                    format!(
                        "a {} bus needs serial = {{ device = ... }} and no tcp",
                        b.protocol.as_str()
                    ),
                );
                None
            }
            (_, _, false) => {
                r.error(
                    &bp(&["tcp"]),
                    format!(
                        "a {} bus needs tcp = \"HOST:PORT\" and no serial",
                        b.protocol.as_str()
                    ),
                );
                None
            }
        };
        let timeout = b.timeout.unwrap_or(b.protocol.default_timeout());
        // Its range is checked with every other duration (bounds.rs).
        let concurrency = b.concurrency.unwrap_or(1);
        if concurrency == 0 || concurrency > 64 {
            r.error(&bp(&["concurrency"]), "must be 1 to 64");
        } else if concurrency > 1 && b.protocol != BusProtocol::ModbusTcp {
            r.error(
                &bp(&["concurrency"]),
                "only modbus-tcp buses poll meters concurrently: a serial line carries one transaction at a time",
            );
        }
        let max_registers = b.max_registers.unwrap_or(DEFAULT_MAX_REGISTERS);
        if !(1..=125).contains(&max_registers) {
            r.error(&bp(&["max_registers"]), "must be 1 to 125");
        }
        let offline_after = b.offline_after.unwrap_or(3);
        if offline_after == 0 {
            r.error(&bp(&["offline_after"]), "must be at least 1");
        }
        let backoff = b.backoff.unwrap_or(Duration::from_secs(10));
        let backoff_max = b
            .backoff_max
            .unwrap_or(Duration::from_secs(300))
            .max(backoff);
        let frame_gap = b.frame_gap.unwrap_or_else(|| match &link {
            Some(l) => b.protocol.default_frame_gap(l),
            None => Duration::ZERO,
        });

        let utc_offset_s = match b.utc_offset.as_deref() {
            None => DEFAULT_UTC_OFFSET_S,
            Some(text) => match parse_utc_offset(text) {
                Some(v) => v,
                None => {
                    r.error(
                        &bp(&["utc_offset"]),
                        format!("{text:?}: use +HH:MM or -HH:MM, e.g. \"+08:00\""),
                    );
                    0
                }
            },
        };
        let mut meters = Vec::new();
        let mut units = HashMap::new();
        let mut addresses = HashMap::new();
        let mut server_addresses = HashMap::new();
        for (m, j) in b.meter.into_iter().zip(meter_index) {
            let mp = |key: &str| vec![k("bus"), Seg::Index(i), k("meter"), Seg::Index(j), k(key)];
            if !valid_id(&m.id) {
                r.error(&mp("id"), format!("{:?}: {ID_RULE}", m.id));
            } else if let Some(other) = meter_ids.insert(m.id.clone(), b.name.clone()) {
                r.error(&mp("id"), format!("meter id {:?} is already used on bus {other:?}; ids are unique per gateway", m.id));
            }
            let mut address = None;
            let mut server_address = None;
            if dlt645 {
                if m.unit.is_some() {
                    r.error(
                        &mp("unit"),
                        "unit is for Modbus meters; DL/T 645 meters use address = \"123456789012\"",
                    );
                }
                match m.address.as_deref().map(str::parse::<Address>) {
                    None => r.error(&mp("id"), "a DL/T 645 meter needs address = \"123456789012\" (12 digits as on the nameplate)"),
                    Some(Err(e)) => r.error(&mp("address"), e.to_string()),
                    Some(Ok(a)) if a.is_broadcast() || a.0.contains(&0xAA) => {
                        r.error(&mp("address"), format!("{a}: broadcast and wildcard addresses are for scanning, not polling"))
                    }
                    Some(Ok(a)) => {
                        if let Some(other) = addresses.insert(a, m.id.clone()) {
                            r.error(&mp("address"), format!("address {a} is already meter {other:?} on this bus"));
                        }
                        address = Some(a);
                    }
                }
            } else if dlt698 {
                if m.unit.is_some() {
                    r.error(
                        &mp("unit"),
                        "unit is for Modbus meters; DL/T 698.45 meters use address = \"000000000001\"",
                    );
                }
                match m.address.as_deref().map(ServerAddress::single) {
                    None => r.error(&mp("id"), "a DL/T 698.45 meter needs address = \"000000000001\" (the digits on the nameplate)"),
                    Some(Err(e)) => r.error(&mp("address"), e.to_string()),
                    Some(Ok(a)) if a.bytes.iter().any(|b| b >> 4 == 0xA || b & 0xF == 0xA) => {
                        r.error(&mp("address"), format!("{a}: wildcard addresses are for scanning, not polling"))
                    }
                    Some(Ok(a)) => {
                        if let Some(other) = server_addresses.insert(a.to_string(), m.id.clone()) {
                            r.error(&mp("address"), format!("address {a} is already meter {other:?} on this bus"));
                        }
                        server_address = Some(a);
                    }
                }
            } else if m.address.is_some() {
                r.error(
                    &mp("address"),
                    "address is for DL/T 645 and 698.45 meters; Modbus meters use unit",
                );
            }
            let unit = match m.unit {
                None if b.protocol.is_addressed() => 0,
                None => {
                    r.error(&mp("id"), "a Modbus meter needs unit = 1..247");
                    0
                }
                Some(u) if serial_bus && !(1..=247).contains(&u) => {
                    r.error(
                        &mp("unit"),
                        format!("{u}: unit ids on a serial line are 1 to 247 (0 is broadcast)"),
                    );
                    u
                }
                Some(u) => {
                    if let Some(other) = units.insert(u, m.id.clone()) {
                        r.error(
                            &mp("unit"),
                            format!("unit {u} is already meter {other:?} on this bus"),
                        );
                    }
                    u
                }
            };
            let wanted = match b.protocol {
                BusProtocol::Dlt645_2007 => ProfileProtocol::Dlt645_2007,
                BusProtocol::Dlt645_1997 => ProfileProtocol::Dlt645_1997,
                BusProtocol::Dlt698 => ProfileProtocol::Dlt698,
                _ => ProfileProtocol::Modbus,
            };
            let Some(profile) = profiles.get(&m.profile).cloned() else {
                let known: Vec<&str> = profiles
                    .profiles
                    .values()
                    .filter(|p| p.protocol == wanted)
                    .map(|p| p.name.as_str())
                    .collect();
                r.error(
                    &mp("profile"),
                    format!(
                        "unknown profile {:?}; known: {}",
                        m.profile,
                        known.join(", ")
                    ),
                );
                continue;
            };
            if profile.protocol != wanted {
                r.error(
                    &mp("profile"),
                    format!(
                        "profile {} is for {} meters; this is a {} bus",
                        profile.name,
                        profile.protocol.as_str(),
                        b.protocol.as_str()
                    ),
                );
            }
            for g in m.intervals.keys() {
                if profile.group(g).is_none() {
                    let groups: Vec<&str> =
                        profile.groups.iter().map(|g| g.name.as_str()).collect();
                    r.error(
                        &mp("intervals"),
                        format!(
                            "profile {} has no point group {g:?}; it has {}",
                            profile.name,
                            groups.join(", ")
                        ),
                    );
                }
            }
            let groups = profile
                .groups
                .iter()
                .map(|g| MeterGroup {
                    name: g.name.clone(),
                    interval: m
                        .intervals
                        .get(&g.name)
                        .map(|d| d.0)
                        .or(m.interval)
                        .unwrap_or(g.interval),
                })
                .collect();
            meters.push(MeterConfig {
                id: m.id,
                unit,
                address,
                server_address,
                profile,
                groups,
                labels: m.labels,
            });
        }
        if let Some(link) = link {
            buses.push(BusConfig {
                name: b.name,
                protocol: b.protocol,
                link,
                timeout,
                retries: b.retries.unwrap_or(1),
                concurrency: concurrency.max(1),
                frame_gap,
                max_gap: b.max_gap.unwrap_or(DEFAULT_MAX_GAP),
                max_registers,
                offline_after: offline_after.max(1),
                backoff,
                backoff_max,
                utc_offset_s,
                time_sync: b.time_sync,
                time_sync_max: b.time_sync_max.unwrap_or(Duration::from_secs(300)),
                meters: meters.into(),
            });
        }
    }
    buses
}
