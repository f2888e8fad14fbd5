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

/// The DL/T 698.45 address from `--address`.
fn server_address(a: &ReadArgs) -> anyhow::Result<meterd::protocols::dlt698::ServerAddress> {
    let digits = a.address.as_deref().ok_or_else(|| {
        anyhow!("a DL/T 698.45 read needs --address (the digits on the nameplate)")
    })?;
    // Shorter numbers are padded to the usual 12 digits, as for DL/T 645.
    meterd::protocols::dlt698::ServerAddress::single(&format!("{digits:0>12}"))
        .map_err(|e| anyhow!("--address: {e}"))
}

/// `meterd read --protocol dlt698 --address A --oad OAD…`: one GET-Request-NormalList, each
/// result scaled and named through the catalogue, others as text, refusals by their DAR.
pub(super) async fn read_oads(a: &ReadArgs) -> anyhow::Result<i32> {
    use meterd::bus::dlt698::{read_oads, Dlt698Link, Dlt698Meter};
    use meterd::protocols::dlt698::{apdu::ResultNormal, describe, Oad};
    let (protocol, l, timeout) = link_from(&a.bus)?;
    if protocol != BusProtocol::Dlt698 {
        bail!("--oad is for --protocol dlt698");
    }
    let address = server_address(a)?;
    let oads = a
        .oads
        .iter()
        .map(|t| t.parse::<Oad>().map_err(|e| anyhow!("--oad: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let gap = protocol.default_frame_gap(&l);
    let mut link = Dlt698Link::new(l, timeout);
    let meter = Dlt698Meter::new(address.clone(), config::DEFAULT_UTC_OFFSET_S, None);
    let results: Vec<ResultNormal> = match read_oads(&mut link, &meter, &oads, 1, gap).await {
        Ok(r) => r,
        Err(e) => {
            outln!("meter at address {address}: {e}");
            return Ok(1);
        }
    };
    let apdu = describe::describe_apdu(&meterd::protocols::dlt698::Apdu::Server {
        piid: 0,
        service: meterd::protocols::dlt698::apdu::ServerService::Get(
            meterd::protocols::dlt698::apdu::GetResponse::NormalList(results.clone()),
        ),
        follow: None,
        time_tag: None,
    });
    if a.json {
        outln!(
            "{}",
            serde_json::json!({"address": address.to_string(), "results": apdu.items})
        );
    } else {
        outln!("meter at address {address}");
        for it in &apdu.items {
            let mut line = format!("  {}", it.oad.as_deref().unwrap_or(""));
            if let Some(n) = it.name {
                line += &format!(" {n}");
            }
            if let Some(v) = &it.value {
                line += &format!(" = {}", describe::show(v));
                if let Some(u) = it.unit.filter(|u| !u.is_empty()) {
                    line += &format!(" {u}");
                }
            }
            if let Some(d) = &it.dar {
                line += &format!(" -> {d}");
            }
            outln!("{line}");
        }
    }
    let refused = apdu.items.iter().filter(|i| i.dar.is_some()).count();
    Ok(if refused == apdu.items.len() { 1 } else { 0 })
}

pub(super) async fn read(a: ReadArgs) -> anyhow::Result<i32> {
    use meterd::bus::{poll, BusLink, MeterOnBus, PollTarget};
    if !a.dis.is_empty() {
        return read_dis(&a).await;
    }
    if !a.oads.is_empty() {
        return read_oads(&a).await;
    }
    let mut server: Option<meterd::protocols::dlt698::ServerAddress> = None;
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
                server = m.server_address.clone();
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
                if protocol == BusProtocol::Dlt698 {
                    server = Some(server_address(&a)?);
                }
                let address: Option<Address> = match (&a.address, dlt645) {
                    (Some(s), true) => Some(s.parse().map_err(|e| anyhow!("--address: {e}"))?),
                    (None, true) => bail!("a DL/T 645 read needs --address (12 digits)"),
                    (_, false) => None,
                };
                let gap = protocol.default_frame_gap(&l);
                let id = match (address, &server) {
                    (Some(a), _) => format!("addr-{a}"),
                    (None, Some(s)) => format!("addr-{s}"),
                    (None, None) => format!("unit-{}", a.unit.unwrap_or(1)),
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
        server_address: server.clone(),
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
    let shown_address = address
        .map(|a| a.to_string())
        .or_else(|| server.as_ref().map(ToString::to_string));
    let who = match &shown_address {
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
            serde_json::json!({"meter": meter_id, "unit": unit, "address": shown_address, "profile": profile.name, "requests": requests, "values": v, "errors": errors})
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
