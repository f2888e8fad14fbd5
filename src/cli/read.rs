//! `meterd read`: one meter once, from a config or from flags; DL/T 645 identifiers by hand.

use super::*;

/// `meterd read --protocol dlt645-… --address A --di DI…`: each identifier decoded through
/// the catalogue, unknown ones as raw bytes.
pub(super) async fn read_dis(a: &ReadArgs) -> anyhow::Result<i32> {
    use meterd::bus::dlt645::Dlt645Link;
    use meterd::protocols::dlt645::{di, Address, Version};
    let (protocol, l, timeout) = link_from(&a.bus)?;
    let version = dlt645_version(protocol, "--di")?;
    let address: Address = a
        .address
        .as_deref()
        .ok_or_else(|| anyhow!("a DL/T 645 read needs --address (12 digits)"))?
        .parse()
        .map_err(|e| anyhow!("--address: {e}"))?;
    let gap = protocol.default_frame_gap(&l);
    let mut link = Dlt645Link::new(version, l, timeout);
    let mut failed = 0;
    let mut out = Vec::new();
    for text in &a.dis {
        let id = u32::from_str_radix(text, 16)
            .map_err(|_| anyhow!("--di {text:?}: hex digits as the standard prints them"))?;
        let r = link.read(address, id).await;
        tokio::time::sleep(gap).await;
        match r {
            Ok(bytes) => match di::decode_values(version, id, &bytes) {
                Ok(values) if !values.is_empty() => {
                    for v in values {
                        let value = match &v.value {
                            di::Value::Number(x) => serde_json::json!(x),
                            di::Value::Text(t) => serde_json::json!(t),
                        };
                        out.push(serde_json::json!({"di": format!("{:0w$X}", v.di, w = if version == Version::V2007 { 8 } else { 4 }), "name": v.name, "value": value, "unit": v.unit}));
                    }
                }
                Ok(_) => out.push(serde_json::json!({"di": text, "raw": bytes.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(" ")})),
                Err(e) => {
                    failed += 1;
                    out.push(serde_json::json!({"di": text, "error": e.to_string()}));
                }
            },
            Err(e) => {
                failed += 1;
                out.push(serde_json::json!({"di": text, "error": e.to_string()}));
            }
        }
    }
    if a.json {
        outln!(
            "{}",
            serde_json::json!({"address": address.to_string(), "values": out})
        );
    } else {
        outln!("meter at address {address}");
        for v in &out {
            match (v.get("name"), v.get("raw"), v.get("error")) {
                (Some(name), _, _) => outln!(
                    "  {} {:<46} {} {}",
                    v["di"].as_str().unwrap_or(""),
                    name.as_str().unwrap_or(""),
                    v["value"],
                    v["unit"].as_str().unwrap_or("")
                ),
                (_, Some(raw), _) => outln!(
                    "  {} (not in the catalogue) {}",
                    v["di"].as_str().unwrap_or(""),
                    raw.as_str().unwrap_or("")
                ),
                (_, _, Some(e)) => outln!(
                    "  {} error: {}",
                    v["di"].as_str().unwrap_or(""),
                    e.as_str().unwrap_or("")
                ),
                _ => {}
            }
        }
    }
    Ok(if failed == a.dis.len() { 1 } else { 0 })
}

pub(super) async fn read(a: ReadArgs) -> anyhow::Result<i32> {
    use meterd::bus::{poll, BusLink, MeterOnBus, PollTarget};
    if !a.dis.is_empty() {
        return read_dis(&a).await;
    }
    use meterd::protocols::dlt645::Address;
    // What to read and how: from the config, or from the flags.
    let (mut link, unit, address, profile, retries, gap, max_regs, max_gap, meter_id, utc_offset_s) =
        match (&a.config, &a.meter) {
            (Some(path), Some(id)) => {
                let cfg = match load_config(path) {
                    Ok(c) => c,
                    Err(code) => return Ok(code),
                };
                let (bus, m) = cfg
                    .meter(id)
                    .ok_or_else(|| anyhow!("no meter {id:?} in {}", path.display()))?;
                (
                    BusLink::new(bus),
                    m.unit,
                    m.address,
                    m.profile.clone(),
                    bus.retries,
                    bus.frame_gap,
                    bus.max_registers,
                    bus.max_gap,
                    id.clone(),
                    bus.utc_offset_s,
                )
            }
            (None, None) => {
                let (protocol, l, timeout) = link_from(&a.bus)?;
                let name = a
                    .profile
                    .as_deref()
                    .ok_or_else(|| anyhow!("give --profile NAME (see `meterd profiles`)"))?;
                let profile = ProfileSet::builtin()
                    .get(name)
                    .cloned()
                    .ok_or_else(|| anyhow!("no profile {name:?}"))?;
                let dlt645 = protocol.is_dlt645();
                let address: Option<Address> = match (&a.address, dlt645) {
                    (Some(s), true) => Some(s.parse().map_err(|e| anyhow!("--address: {e}"))?),
                    (None, true) => bail!("a DL/T 645 read needs --address (12 digits)"),
                    (_, false) => None,
                };
                let gap = protocol.default_frame_gap(&l);
                let id = match address {
                    Some(a) => format!("addr-{a}"),
                    None => format!("unit-{}", a.unit.unwrap_or(1)),
                };
                (
                    BusLink::for_protocol(protocol, l, timeout),
                    a.unit.unwrap_or(1),
                    address,
                    profile,
                    1,
                    gap,
                    config::DEFAULT_MAX_REGISTERS,
                    config::DEFAULT_MAX_GAP,
                    id,
                    config::DEFAULT_UTC_OFFSET_S,
                )
            }
            _ => bail!(
            "give -c FILE --meter ID, or --addr/--serial with --unit (or --address) and --profile"
        ),
        };
    let mut values = Vec::new();
    let mut errors = Vec::new();
    let mut requests = 0;
    let targets = PollTarget::for_meter(MeterOnBus {
        profile: &profile,
        unit,
        address,
        frame_gap: gap,
        max_registers: max_regs,
        max_gap,
        utc_offset_s,
        time_sync: None,
    });
    for (g, target) in profile.groups.iter().zip(&targets) {
        let r = poll(&mut link, target, retries).await;
        requests += r.requests;
        values.extend(r.values);
        for (when, v) in r.dated {
            let at = humantime::format_rfc3339(when);
            values.extend(
                v.into_iter()
                    .map(|(q, x)| (Arc::<str>::from(format!("{q} (daily freeze {at})")), x)),
            );
        }
        errors.extend(r.errors.into_iter().map(|e| format!("{}: {e}", g.name)));
    }
    let who = match address {
        Some(a) => format!("address {a}"),
        None => format!("unit {unit}"),
    };
    if a.json {
        let v: serde_json::Map<String, serde_json::Value> = values
            .iter()
            .filter_map(|(q, v)| Some((q.to_string(), serde_json::Number::from_f64(*v)?.into())))
            .collect();
        outln!(
            "{}",
            serde_json::json!({"meter": meter_id, "unit": unit, "address": address.map(|a| a.to_string()), "profile": profile.name, "requests": requests, "values": v, "errors": errors})
        );
    } else {
        outln!(
            "meter {meter_id} ({who}, {}), {requests} requests",
            profile.name
        );
        for (q, v) in &values {
            outln!("  {q:<32} {v:>14} {}", quantity::unit_of(q).unwrap_or(""));
        }
        for e in &errors {
            outln!("  error: {e}");
        }
    }
    Ok(if values.is_empty() { 1 } else { 0 })
}
