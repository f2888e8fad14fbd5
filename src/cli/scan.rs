//! `meterd scan`: find the meters on a bus.

use super::*;

pub(super) async fn scan_dlt645(
    a: &ScanArgs,
    protocol: BusProtocol,
    l: Link,
    timeout: Duration,
) -> anyhow::Result<i32> {
    use meterd::bus::{dlt645::Dlt645Link, PollError};
    use meterd::protocols::dlt645::Version;
    let version = dlt645_version(protocol, "a DL/T 645 scan")?;
    let gap = protocol.default_frame_gap(&l);
    let mut link = Dlt645Link::new(version, l, timeout);
    let mut found = Vec::new();
    if version == Version::V2007 {
        match link.read_address().await {
            Ok(addr) => {
                outln!("read-address (AA..AA): {addr} answered");
                found.push(addr);
            }
            Err(PollError::Timeout(_)) => outln!("read-address (AA..AA): no answer (no meter, or several colliding)"),
            Err(e) => outln!("read-address (AA..AA): {e} (several meters answering at once collide: probe addresses with --addresses)"),
        }
        tokio::time::sleep(gap).await;
    }
    if let Some(list) = &a.addresses {
        let addresses = parse_addresses(list)?;
        let bar = progress(addresses.len() as u64, "addresses");
        let probe = if version == Version::V2007 {
            0x0001_0000
        } else {
            0x9010
        };
        for addr in addresses {
            let r = link.read(addr, probe).await;
            tokio::time::sleep(gap).await;
            let line = match r {
                Ok(_) => Some(format!("{addr}: answers")),
                Err(PollError::Refused { err, .. }) => Some(format!(
                    "{addr}: answers (refused the probe, error {err:02X})"
                )),
                Err(_) => None,
            };
            if let Some(line) = line {
                if !found.contains(&addr) {
                    found.push(addr);
                }
                bar.suspend(|| outln!("{line}"));
            }
            bar.set_message(format!("{} found", found.len()));
            bar.inc(1);
        }
        bar.finish_and_clear();
    }
    outln!("{} meter(s) found", found.len());
    Ok(0)
}

/// DL/T 698.45: a GET of 4001 (communication address) to the wildcard address, then, with
/// `--addresses`, the same GET to each address (several meters on one line collide on the
/// wildcard).
pub(super) async fn scan_dlt698(a: &ScanArgs, l: Link, timeout: Duration) -> anyhow::Result<i32> {
    use meterd::bus::{
        dlt698::{read_oads, Dlt698Link, Dlt698Meter},
        PollError,
    };
    use meterd::protocols::dlt698::{plan, ServerAddress};
    let gap = BusProtocol::Dlt698.default_frame_gap(&l);
    let mut link = Dlt698Link::new(l, timeout);
    let mut found: Vec<String> = Vec::new();
    match link.read_address().await {
        Ok(addr) => {
            outln!("wildcard read of 4001 (AA..AA): {addr} answered");
            found.push(addr.to_string());
        }
        Err(PollError::Timeout(_)) => {
            outln!("wildcard read of 4001 (AA..AA): no answer (no meter, or several colliding)")
        }
        Err(e) => outln!("wildcard read of 4001 (AA..AA): {e} (several meters answering at once collide: probe addresses with --addresses)"),
    }
    tokio::time::sleep(gap).await;
    if let Some(list) = &a.addresses {
        let addresses = parse_addresses(list)?;
        let bar = progress(addresses.len() as u64, "addresses");
        for addr in addresses {
            let printed = addr.to_string();
            let server = ServerAddress::single(&printed).map_err(|e| anyhow!("{e}"))?;
            let meter = Dlt698Meter::new(server, config::DEFAULT_UTC_OFFSET_S, None);
            let r = read_oads(&mut link, &meter, &[plan::ADDRESS], 0, gap).await;
            if r.is_ok() && !found.contains(&printed) {
                found.push(printed.clone());
                bar.suspend(|| outln!("{printed}: answers"));
            }
            bar.set_message(format!("{} found", found.len()));
            bar.inc(1);
        }
        bar.finish_and_clear();
    }
    outln!("{} meter(s) found", found.len());
    Ok(0)
}

pub(super) async fn scan(a: ScanArgs) -> anyhow::Result<i32> {
    let (protocol, l, timeout) = link_from(&a.bus)?;
    if protocol.is_dlt645() {
        return scan_dlt645(&a, protocol, l, timeout).await;
    }
    if protocol == BusProtocol::Dlt698 {
        return scan_dlt698(&a, l, timeout).await;
    }
    let gap = protocol.default_frame_gap(&l);
    let mut link = ModbusLink::new(protocol, l, timeout);
    let (kind, address, count) = match &a.profile {
        Some(name) => {
            let p: Arc<Profile> = ProfileSet::builtin()
                .get(name)
                .cloned()
                .ok_or_else(|| anyhow!("no profile {name:?}"))?;
            let pt = p
                .points()
                .next()
                .ok_or_else(|| anyhow!("profile {name} has no points"))?;
            (pt.kind, pt.address, pt.ty.words())
        }
        None => (
            match a.register.as_str() {
                "holding" => RegisterKind::Holding,
                "input" => RegisterKind::Input,
                r => bail!("register {r:?}: use holding or input"),
            },
            a.address,
            1,
        ),
    };
    let units = parse_range(&a.units)?;
    let bar = progress(units.clone().count() as u64, "unit ids");
    let mut found = 0;
    for unit in units {
        let r = link.read(unit, kind, address, count).await;
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
        let line = match r {
            Ok(words) => Some(format!(
                "unit {unit:>3}: answers ({kind:?} {address}: {words:04X?})"
            )),
            Err(meterd::bus::PollError::Exception { code }) => Some(format!(
                "unit {unit:>3}: answers with exception {code} (present, register not served)"
            )),
            Err(_) => None,
        };
        if let Some(line) = line {
            found += 1;
            bar.suspend(|| outln!("{line}"));
        }
        bar.set_message(format!("{found} found"));
        bar.inc(1);
    }
    bar.finish_and_clear();
    outln!("{found} meter(s) answered");
    Ok(0)
}
