//! What a poll of a DL/T 645 point group asks and what the answers mean, without I/O: a
//! group's identifiers into reads (one block read where several identifiers share a block),
//! reply bytes into values, and the identifiers and records of the meter's clock and its
//! daily freezes. The bus executes the plan: it sends each read, and hands back the bytes.
//!
//! The seam, as for Modbus (`modbus::plan`): plan → requests → replies → values.

use std::sync::Arc;

use super::{
    bcd, clock,
    di::{self, Format},
    session::Capacity,
    Version,
};
use crate::profile::DiPoint;

/// The "no requested data" bit of an abnormal reply (2007; 1997's "data identifier error" is
/// the same bit): the meter does not have this identifier, or does not read this block.
pub const NO_SUCH_DATA: u8 = 0x02;

/// Most daily freezes a 2007 meter keeps (050600nn, nn = 01..3E).
pub const MAX_FREEZES: u32 = 62;

/// A value that is not what its format says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{di:08X}: {why}")]
pub struct ValueError {
    pub di: u32,
    pub why: String,
}

fn value_error(di: u32, why: impl std::fmt::Display) -> ValueError {
    ValueError {
        di,
        why: why.to_string(),
    }
}

/// One read request of a plan: its identifier (a block or a single one), the group's points
/// it carries with their member index in the block, and what the identifier can carry.
#[derive(Debug, Clone, PartialEq)]
pub struct Read {
    pub di: u32,
    /// (index of the point in the group, member index in the block; 0 for a single read)
    pub points: Vec<(usize, u32)>,
    pub capacity: Capacity,
}

/// The block a DI belongs to, if reading it as a block makes sense.
fn block_of(version: Version, di: u32) -> u32 {
    match version {
        Version::V2007 => di | 0x0000_FF00,
        Version::V1997 => di | 0x000F,
    }
}

/// A single read of point `i`: bounded by the catalogue, or by the profile's size for an
/// identifier the catalogue does not know.
fn single(version: Version, dis: &[DiPoint], i: usize) -> Read {
    let p = &dis[i];
    let capacity = match di::lookup(version, p.di) {
        Some(_) => Capacity::of(version, p.di),
        None => Capacity {
            bytes: p.format.byte_len(),
        },
    };
    Read {
        di: p.di,
        points: vec![(i, 0)],
        capacity,
    }
}

/// The reads of a group: identifiers that share a block in one block read (unless `blocks`
/// is false: the meter refused block reads before), every other one on its own.
pub fn plan_reads(version: Version, dis: &[DiPoint], blocks: bool) -> Vec<Read> {
    let mut by_block: std::collections::BTreeMap<u32, Vec<(usize, u32)>> = Default::default();
    for (i, p) in dis.iter().enumerate() {
        let b = block_of(version, p.di);
        match (0..64).find(|k| di::block_member(version, b, *k) == Some(p.di)) {
            Some(k) => by_block.entry(b).or_default().push((i, k)),
            None => by_block.entry(p.di).or_default().push((i, 0)),
        }
    }
    let mut out = Vec::new();
    for (block, members) in by_block {
        if members.len() > 1 && blocks {
            out.push(Read {
                di: block,
                points: members,
                capacity: Capacity::of(version, block),
            });
        } else {
            out.extend(members.into_iter().map(|(i, _)| single(version, dis, i)));
        }
    }
    out
}

/// A refused block read as single reads of its points.
pub fn singles(version: Version, dis: &[DiPoint], read: &Read) -> Vec<Read> {
    read.points
        .iter()
        .map(|&(i, _)| single(version, dis, i))
        .collect()
}

/// Whether a read is a block read (its identifier is not its only point's).
pub fn is_block(read: &Read, dis: &[DiPoint]) -> bool {
    read.points.len() != 1
        || read
            .points
            .first()
            .is_some_and(|&(i, _)| dis[i].di != read.di)
}

/// The values a reply carries: for each point of the read, its value or why not. A block
/// holds the members the meter has (its tariffs, say): members beyond the reply's end are
/// left out, not errors.
pub fn decode_read(
    read: &Read,
    dis: &[DiPoint],
    bytes: &[u8],
) -> Vec<(usize, Result<f64, ValueError>)> {
    let block = is_block(read, dis);
    let mut out = Vec::new();
    for &(i, k) in &read.points {
        let p = &dis[i];
        let n = p.format.byte_len();
        let offset = if block { k as usize * n } else { 0 };
        if block && bytes.len() < offset + n {
            continue;
        }
        out.push((i, decode_point(p, bytes.get(offset..).unwrap_or(&[]))));
    }
    out
}

/// A point's value from its bytes, in the contract's unit, keeping the resolution the meter
/// has (2.2718 kvar is 2271.8 var, not 2271.7999999999997).
pub fn decode_point(p: &DiPoint, bytes: &[u8]) -> Result<f64, ValueError> {
    let Format::Number {
        bytes: n,
        decimals,
        signed,
    } = p.format
    else {
        return Err(value_error(p.di, "not a number"));
    };
    let b = bytes
        .get(..n)
        .ok_or_else(|| value_error(p.di, format!("{} of {n} bytes", bytes.len())))?;
    let v = bcd::decode(b, decimals, signed).map_err(|e| value_error(p.di, e))?;
    let places = (decimals as i32 - p.factor.abs().log10().round() as i32).clamp(0, 9);
    let scale = 10f64.powi(places);
    Ok((v * p.factor * scale).round() / scale)
}

/// The identifiers of the meter's date and time.
pub fn clock_dis(version: Version) -> (u32, u32) {
    match version {
        Version::V2007 => (0x0400_0101, 0x0400_0102),
        Version::V1997 => (0xC010, 0xC011),
    }
}

/// The meter's clock minus the gateway's, in whole seconds (the meter reports seconds):
/// `date` and `time` as the meter sent them, its local time `utc_offset_s` ahead of UTC,
/// `now` the gateway's Unix time when the time reply arrived.
pub fn clock_offset_s(
    date: &[u8],
    time: &[u8],
    utc_offset_s: i64,
    now: f64,
) -> Result<f64, ValueError> {
    let local = clock::from_date_time(date, time).ok_or_else(|| {
        value_error(
            clock_dis(Version::V2007).1,
            format!("meter clock {date:02X?} {time:02X?} is not a date and time"),
        )
    })?;
    Ok(((local - utc_offset_s) as f64 - now).round())
}

/// The identifier of the time of the `n`th newest daily freeze (1 = newest).
pub fn freeze_time_di(n: u32) -> u32 {
    0x0506_0000 | n
}

/// The identifier of the forward active energy of the `n`th newest daily freeze.
pub fn freeze_energy_di(n: u32) -> u32 {
    0x0506_0100 | n
}

/// A freeze time (meter-local seconds) from its bytes.
pub fn freeze_time(n: u32, bytes: &[u8]) -> Result<i64, ValueError> {
    clock::from_minutes(bytes)
        .ok_or_else(|| value_error(freeze_time_di(n), format!("freeze time {bytes:02X?}")))
}

/// A daily freeze's forward active energy: the total and up to four tariffs.
pub fn freeze_energy(n: u32, bytes: &[u8]) -> Result<Vec<(Arc<str>, f64)>, ValueError> {
    let mut values = Vec::new();
    for (k, chunk) in bytes.chunks_exact(4).enumerate().take(5) {
        let q = if k == 0 {
            "energy_import_kwh".to_string()
        } else {
            format!("energy_import_t{k}_kwh")
        };
        let v = bcd::decode(chunk, 2, false).map_err(|e| value_error(freeze_energy_di(n), e))?;
        values.push((Arc::<str>::from(q), v));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(di: u32, quantity: &str) -> DiPoint {
        let item = di::lookup(Version::V2007, di).expect("in the catalogue");
        let (_, factor) = item.quantity.unwrap_or(("", 1.0));
        DiPoint {
            di,
            quantity: quantity.into(),
            format: item.format,
            factor,
        }
    }

    fn three_phase() -> Vec<DiPoint> {
        vec![
            point(0x0201_0100, "voltage_l1_v"),
            point(0x0201_0200, "voltage_l2_v"),
            point(0x0201_0300, "voltage_l3_v"),
            point(0x0280_0002, "frequency_hz"),
        ]
    }

    #[test]
    fn identifiers_that_share_a_block_are_read_together_unless_the_meter_refuses_blocks() {
        let dis = three_phase();
        let reads = plan_reads(Version::V2007, &dis, true);
        let ids: Vec<u32> = reads.iter().map(|r| r.di).collect();
        assert_eq!(ids, [0x0201_FF00, 0x0280_0002]);
        assert_eq!(reads[0].points, [(0, 0), (1, 1), (2, 2)]);
        assert_eq!(reads[0].capacity, Capacity { bytes: 6 });
        let ids: Vec<u32> = plan_reads(Version::V2007, &dis, false)
            .iter()
            .map(|r| r.di)
            .collect();
        assert_eq!(ids, [0x0201_0100, 0x0201_0200, 0x0201_0300, 0x0280_0002]);
        let fallback: Vec<u32> = singles(Version::V2007, &dis, &reads[0])
            .iter()
            .map(|r| r.di)
            .collect();
        assert_eq!(fallback, [0x0201_0100, 0x0201_0200, 0x0201_0300]);
    }

    #[test]
    fn a_block_reply_gives_each_member_its_value_and_a_short_one_only_those_it_holds() {
        let dis = three_phase();
        let reads = plan_reads(Version::V2007, &dis, true);
        let bytes = [
            bcd::encode(229.7, 2, 1, false).unwrap(),
            bcd::encode(230.1, 2, 1, false).unwrap(),
        ]
        .concat();
        let got: Vec<(usize, f64)> = decode_read(&reads[0], &dis, &bytes)
            .into_iter()
            .map(|(i, v)| (i, v.unwrap()))
            .collect();
        assert_eq!(got, [(0, 229.7), (1, 230.1)], "l3 is not in the reply");
    }

    #[test]
    fn a_value_that_is_not_bcd_is_a_typed_error_naming_its_identifier() {
        let p = point(0x0201_0100, "voltage_l1_v");
        let e = decode_point(&p, &[0xAB, 0xCD]).unwrap_err();
        assert_eq!(e.di, 0x0201_0100);
        assert!(e.to_string().starts_with("02010100: "), "{e}");
        assert!(decode_point(&p, &[0x01]).is_err(), "too short");
    }

    #[test]
    fn kw_become_w_with_the_meters_resolution() {
        let p = point(0x0203_0000, "power_w");
        let v = decode_point(&p, &bcd::encode(2.2718, 3, 4, true).unwrap()).unwrap();
        assert_eq!(v, 2271.8);
    }

    #[test]
    fn the_clock_offset_is_the_meters_time_minus_the_gateways() {
        let local = 1_795_768_205 + 8 * 3600;
        let (date, time) = clock::date_time_values(local);
        let now = 1_795_768_205.0 - 42.0;
        assert_eq!(clock_offset_s(&date, &time, 8 * 3600, now).unwrap(), 42.0);
        assert!(clock_offset_s(&[0xFF; 4], &time, 0, now).is_err());
        assert_eq!(clock_dis(Version::V1997), (0xC010, 0xC011));
    }

    #[test]
    fn a_daily_freeze_carries_the_total_and_up_to_four_tariffs() {
        let bytes: Vec<u8> = [100.5, 20.0, 30.0, 40.0, 10.5, 99.0]
            .iter()
            .flat_map(|v| bcd::encode(*v, 4, 2, false).unwrap())
            .collect();
        let values = freeze_energy(1, &bytes).unwrap();
        let names: Vec<&str> = values.iter().map(|(q, _)| &**q).collect();
        assert_eq!(
            names,
            [
                "energy_import_kwh",
                "energy_import_t1_kwh",
                "energy_import_t2_kwh",
                "energy_import_t3_kwh",
                "energy_import_t4_kwh"
            ]
        );
        assert_eq!(values[0].1, 100.5);
        assert_eq!(freeze_time_di(3), 0x0506_0003);
        assert_eq!(freeze_energy_di(3), 0x0506_0103);
    }
}
