//! `meterd timesync`: broadcast the gateway's time on a DL/T 645 line.

use super::*;

pub(super) async fn timesync(b: &BusArgs, utc_offset: Option<&str>) -> anyhow::Result<i32> {
    let (protocol, l, timeout) = link_from(b)?;
    let version = dlt645_version(protocol, "timesync")?;
    let offset = match utc_offset {
        Some(text) => config::parse_utc_offset(text)
            .ok_or_else(|| anyhow!("--utc-offset {text:?}: use +HH:MM"))?,
        None => config::DEFAULT_UTC_OFFSET_S,
    };
    let mut link = meterd::bus::dlt645::Dlt645Link::new(version, l, timeout);
    link.broadcast_time(offset).await?;
    // Let the frame leave the adapter before the port closes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (h, m) = (offset.abs() / 3600, offset.abs() % 3600 / 60);
    let sign = if offset < 0 { '-' } else { '+' };
    outln!("broadcast the time (UTC{sign}{h:02}:{m:02}) to every meter on the line");
    Ok(0)
}
