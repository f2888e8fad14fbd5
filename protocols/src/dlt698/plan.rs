//! What a bus does with a DL/T 698.45 meter, as pure functions: the requests for a point group
//! (one GET-Request-NormalList, or one GET per OAD for a meter that refuses lists), the values
//! in a reply (matched by OAD, scalers applied, a DAR per refused OAD), the clock (read 4000,
//! set it with SET-Request-Normal) and the daily freeze (GET-Request-Record on 5004 by its
//! freeze time 2021, or the newest with selector 9). The bus in the daemon only executes this.

use std::sync::Arc;

use super::{
    apdu::{
        Apdu, ClientService, GetRecord, GetRequest, GetResponse, GetResult, NextResult,
        RecordResult, ResultNormal, ResultRecord, ServerService, SetRequest, SetResponse,
    },
    catalogue,
    dar::Dar,
    data::{Csd, Data, DateTimeS, Oad, Rsd},
};
use crate::profile::OadPoint;

/// The meter's date-time (4000, attribute 2).
pub const CLOCK: Oad = Oad::new(0x4000, 2, 0);
/// The communication address (4001, attribute 2): what `scan` reads.
pub const ADDRESS: Oad = Oad::new(0x4001, 2, 0);
/// The daily freeze record table (5004, attribute 2).
pub const DAILY_FREEZE: Oad = Oad::new(0x5004, 2, 0);
/// The freeze time column of freeze records (2021, attribute 2).
pub const FREEZE_TIME: Oad = Oad::new(0x2021, 2, 0);
/// Forward active energy, total and tariffs: the freeze column meterd publishes.
pub const FORWARD_ACTIVE: Oad = Oad::new(0x0010, 2, 0);

/// Why a value could not be taken from a reply.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValueError {
    #[error("{oad}: {dar}")]
    Refused { oad: Oad, dar: Dar },
    #[error("{oad}: not in the reply")]
    Missing { oad: Oad },
    #[error("{oad}: {what}")]
    Shape { oad: Oad, what: String },
}

impl ValueError {
    /// A refusal that a SECURITY-wrapped request might lift.
    pub fn wants_security(&self) -> bool {
        matches!(self, ValueError::Refused { dar, .. } if dar.wants_security())
    }
}

/// One GET-Request-NormalList for the group's OADs.
pub fn list_request(piid: u8, points: &[OadPoint]) -> Apdu {
    Apdu::get_list(piid, points.iter().map(|p| p.oad).collect())
}

/// `raw` as the point's quantities: a whole array by element, or one value.
pub fn point_values(p: &OadPoint, data: &Data) -> Result<Vec<(Arc<str>, f64)>, ValueError> {
    let shape = |what: &str| ValueError::Shape {
        oad: p.oad,
        what: what.to_string(),
    };
    let number = |d: &Data| -> Result<f64, ValueError> {
        let raw = match (p.demand, d) {
            (true, Data::Structure(v)) => v.first().and_then(Data::as_f64),
            (_, d) => d.as_f64(),
        };
        raw.map(|r| catalogue::scale(r, p.exp))
            .ok_or_else(|| shape(&format!("{d:?} is not a number")))
    };
    match data {
        Data::Array(items) if p.names.len() > 1 || p.oad.index == 0 => p
            .names
            .iter()
            .zip(items)
            .filter_map(|(n, d)| n.as_ref().map(|n| number(d).map(|v| (n.clone(), v))))
            .collect(),
        d => match p.names.first() {
            Some(Some(n)) => Ok(vec![(n.clone(), number(d)?)]),
            _ => Err(shape("no quantity for a single value")),
        },
    }
}

/// The values of `points` among `results` (matched by OAD: meters may answer fewer, or in
/// another order), and what went wrong per OAD.
pub fn list_values(
    points: &[OadPoint],
    results: &[ResultNormal],
) -> (Vec<(Arc<str>, f64)>, Vec<ValueError>) {
    let mut values = Vec::new();
    let mut errors = Vec::new();
    for p in points {
        match results.iter().find(|r| r.oad == p.oad) {
            None => errors.push(ValueError::Missing { oad: p.oad }),
            Some(ResultNormal {
                result: GetResult::Dar(dar),
                ..
            }) => errors.push(ValueError::Refused {
                oad: p.oad,
                dar: *dar,
            }),
            Some(ResultNormal {
                result: GetResult::Data(d),
                ..
            }) => match point_values(p, d) {
                Ok(v) => values.extend(v),
                Err(e) => errors.push(e),
            },
        }
    }
    (values, errors)
}

/// The A-ResultNormals of a GET reply (Normal or NormalList), if it is one.
pub fn get_results(reply: &Apdu) -> Option<Vec<ResultNormal>> {
    match reply {
        Apdu::Server {
            service: ServerService::Get(GetResponse::Normal(r)),
            ..
        } => Some(vec![r.clone()]),
        Apdu::Server {
            service: ServerService::Get(GetResponse::NormalList(v)),
            ..
        } => Some(v.clone()),
        _ => None,
    }
}

/// A GET result split into application blocks (GET-Response-Next): whether this is the last
/// block, its number, and its results (or the DAR that ended the transfer).
pub type Block = (bool, u16, Result<Vec<ResultNormal>, Dar>);

/// The block a GET-Response-Next carries; `None` for any other reply.
pub fn next_block(reply: &Apdu) -> Option<Block> {
    match reply {
        Apdu::Server {
            service:
                ServerService::Get(GetResponse::Next {
                    last,
                    block,
                    result,
                }),
            ..
        } => Some((
            *last,
            *block,
            match result {
                NextResult::Dar(d) => Err(*d),
                NextResult::Normal(v) => Ok(v.clone()),
                // Record blocks are not asked for by meterd (freezes fit in one reply).
                NextResult::Record(_) => Err(Dar(9)),
            },
        )),
        _ => None,
    }
}

/// GET-Request-Next after block `received`.
pub fn next_request(piid: u8, received: u16) -> Apdu {
    Apdu::Client {
        piid,
        service: ClientService::Get(GetRequest::Next(received)),
        time_tag: None,
    }
}

/// The reply a whole block transfer amounts to: a GET-Response-NormalList of every block's
/// results.
pub fn joined(piid: u8, results: Vec<ResultNormal>) -> Apdu {
    Apdu::Server {
        piid,
        service: ServerService::Get(GetResponse::NormalList(results)),
        follow: None,
        time_tag: None,
    }
}

/// A meter's refusal of a whole service (ERROR-Response): it does not do NormalList, say.
pub fn is_service_refusal(reply: &Apdu) -> bool {
    matches!(
        reply,
        Apdu::Server {
            service: ServerService::Error { .. },
            ..
        }
    )
}

/// Does `reply` answer a request sent with `piid`? The service number and priority must
/// match; the ACD bit (6) is the server's own.
pub fn answers(piid: u8, reply: &Apdu) -> bool {
    reply.piid().is_some_and(|p| p & 0xBF == piid & 0xBF)
}

/// Seconds since the epoch of a local date-time, `None` if a field is unspecified.
pub fn dts_seconds(t: &DateTimeS) -> Option<i64> {
    if t.year == 0xFFFF || [t.month, t.day, t.hour, t.minute, t.second].contains(&0xFF) {
        return None;
    }
    let days = crate::dlt645::clock::days_from_civil(
        i64::from(t.year),
        u32::from(t.month),
        u32::from(t.day),
    );
    Some(days * 86_400 + i64::from(t.hour) * 3600 + i64::from(t.minute) * 60 + i64::from(t.second))
}

/// The date-time of local seconds.
pub fn dts_of(local: i64) -> DateTimeS {
    let days = local.div_euclid(86_400);
    let rem = local.rem_euclid(86_400);
    let (y, m, d) = crate::dlt645::clock::civil_from_days(days);
    DateTimeS {
        year: u16::try_from(y).unwrap_or(0),
        month: m as u8,
        day: d as u8,
        hour: (rem / 3600) as u8,
        minute: (rem % 3600 / 60) as u8,
        second: (rem % 60) as u8,
    }
}

/// The meter's clock minus the gateway's in whole seconds: `reply` to a GET of 4000-02-00,
/// the meter's local time `utc_offset_s` ahead of UTC, `now` the gateway's Unix time when the
/// reply arrived.
pub fn clock_offset_s(reply: &Apdu, utc_offset_s: i64, now: f64) -> Result<f64, ValueError> {
    let results = get_results(reply).unwrap_or_default();
    let r = results
        .iter()
        .find(|r| r.oad == CLOCK)
        .ok_or(ValueError::Missing { oad: CLOCK })?;
    match &r.result {
        GetResult::Dar(dar) => Err(ValueError::Refused {
            oad: CLOCK,
            dar: *dar,
        }),
        GetResult::Data(Data::DateTimeS(t)) => dts_seconds(t)
            .map(|local| ((local - utc_offset_s) as f64 - now).round())
            .ok_or_else(|| ValueError::Shape {
                oad: CLOCK,
                what: format!("{t} has unspecified fields"),
            }),
        GetResult::Data(d) => Err(ValueError::Shape {
            oad: CLOCK,
            what: format!("{d:?} is not a date_time_s"),
        }),
    }
}

/// SET-Request-Normal of the meter's clock to `local` seconds.
pub fn set_clock(piid: u8, local: i64) -> Apdu {
    Apdu::Client {
        piid,
        service: ClientService::Set(SetRequest::Normal(CLOCK, Data::DateTimeS(dts_of(local)))),
        time_tag: None,
    }
}

/// The DAR of a SET reply for `oad`.
pub fn set_result(reply: &Apdu, oad: Oad) -> Option<Dar> {
    match reply {
        Apdu::Server {
            service: ServerService::Set(SetResponse::Normal(o, dar)),
            ..
        } if *o == oad => Some(*dar),
        _ => None,
    }
}

/// GET-Request-Record of the daily freeze: the record whose freeze time is `day` 00:00:00
/// (`Some`), or the newest (`None`, selector 9 n = 1); columns freeze time and forward active
/// energy.
pub fn freeze_request(piid: u8, day_local: Option<i64>) -> Apdu {
    let rsd = match day_local {
        Some(day) => Rsd::Equal {
            oad: FREEZE_TIME,
            value: Data::DateTimeS(dts_of(day - day.rem_euclid(86_400))),
        },
        None => Rsd::Last(1),
    };
    Apdu::Client {
        piid,
        service: ClientService::Get(GetRequest::Record(GetRecord {
            oad: DAILY_FREEZE,
            rsd,
            columns: vec![Csd::Oad(FREEZE_TIME), Csd::Oad(FORWARD_ACTIVE)],
        })),
        time_tag: None,
    }
}

/// A daily freeze: its time in local seconds and the forward active energy by tariff.
pub type Freeze = (i64, Vec<(Arc<str>, f64)>);

/// The freezes in a record reply: (freeze time in local seconds, forward active energy by
/// tariff). Zero rows is "no freeze that day".
pub fn freeze_rows(reply: &Apdu) -> Result<Vec<Freeze>, ValueError> {
    let record: &ResultRecord = match reply {
        Apdu::Server {
            service: ServerService::Get(GetResponse::Record(r)),
            ..
        } => r,
        _ => return Err(ValueError::Missing { oad: DAILY_FREEZE }),
    };
    let rows = match &record.result {
        RecordResult::Dar(dar) => {
            return Err(ValueError::Refused {
                oad: DAILY_FREEZE,
                dar: *dar,
            })
        }
        RecordResult::Rows(rows) => rows,
    };
    let col = |oad: Oad| record.columns.iter().position(|c| *c == Csd::Oad(oad));
    let (Some(t), Some(e)) = (col(FREEZE_TIME), col(FORWARD_ACTIVE)) else {
        return Err(ValueError::Shape {
            oad: DAILY_FREEZE,
            what: "the reply lacks the freeze time or energy column".into(),
        });
    };
    let energy = OadPoint {
        oad: FORWARD_ACTIVE,
        exp: -2,
        demand: false,
        names: catalogue::lookup(FORWARD_ACTIVE)
            .map(|o| o.elements.iter().map(|n| Some(Arc::from(*n))).collect())
            .unwrap_or_default(),
    };
    rows.iter()
        .map(|row| {
            let time = match row.get(t) {
                Some(Data::DateTimeS(ts)) => dts_seconds(ts),
                _ => None,
            }
            .ok_or_else(|| ValueError::Shape {
                oad: FREEZE_TIME,
                what: "freeze time is not a date_time_s".into(),
            })?;
            let values = point_values(&energy, row.get(e).unwrap_or(&Data::Null))?;
            Ok((time, values))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlt698::{frame, from_hex};

    fn apdu(hex: &str) -> Apdu {
        let (f, _) = frame::parse(&from_hex(hex).unwrap()).unwrap();
        Apdu::decode(&f.data).unwrap()
    }

    fn point(oad: u32) -> OadPoint {
        let oad = Oad::from_u32(oad);
        let k = catalogue::lookup(oad).unwrap();
        OadPoint {
            oad,
            exp: i32::from(k.scaler + k.shift),
            demand: false,
            names: if oad.index == 0 {
                k.elements.iter().map(|n| Some(Arc::from(*n))).collect()
            } else {
                vec![Some(Arc::from(k.elements[usize::from(oad.index) - 1]))]
            },
        }
    }

    #[test]
    fn a_list_reply_gives_every_quantity_scaled() {
        // G04: 3 x 241.3 V, 3 x 1.000 A.
        let reply = apdu("68 3B 00 C3 05 07 09 19 05 16 20 00 B7 A4 85 02 02 02 20 00 02 00 01 01 03 12 09 6D 12 09 6D 12 09 6D 20 01 02 00 01 01 03 05 00 00 03 E8 05 00 00 03 E8 05 00 00 03 E8 00 00 10 86 16");
        let (values, errors) = list_values(
            &[point(0x2000_0200), point(0x2001_0200)],
            &get_results(&reply).unwrap(),
        );
        assert!(errors.is_empty(), "{errors:?}");
        let v: Vec<(&str, f64)> = values.iter().map(|(q, v)| (&**q, *v)).collect();
        assert_eq!(
            v,
            [
                ("voltage_l1_v", 241.3),
                ("voltage_l2_v", 241.3),
                ("voltage_l3_v", 241.3),
                ("current_l1_a", 1.0),
                ("current_l2_a", 1.0),
                ("current_l3_a", 1.0)
            ]
        );
    }

    #[test]
    fn a_refused_or_missing_oad_is_named_and_the_others_still_count() {
        let results = vec![
            ResultNormal {
                oad: Oad::from_u32(0x200F_0200),
                result: GetResult::Data(Data::LongUnsigned(5002)),
            },
            ResultNormal {
                oad: Oad::from_u32(0x2000_0200),
                result: GetResult::Dar(Dar::UNDEFINED),
            },
        ];
        let (values, errors) = list_values(
            &[point(0x2000_0200), point(0x200F_0200), point(0x2001_0200)],
            &results,
        );
        assert_eq!(values, vec![(Arc::from("frequency_hz"), 50.02)]);
        assert_eq!(
            errors,
            vec![
                ValueError::Refused {
                    oad: Oad::from_u32(0x2000_0200),
                    dar: Dar::UNDEFINED
                },
                ValueError::Missing {
                    oad: Oad::from_u32(0x2001_0200)
                },
            ]
        );
    }

    #[test]
    fn the_clock_offset_is_the_meters_local_time_against_the_gateways() {
        // G32: 2016-09-11 18:30:21 in UTC+8 = 10:30:21 UTC = 1473589821.
        let reply = apdu("68 21 00 C3 05 01 00 00 00 00 00 10 49 54 85 01 05 40 00 02 00 01 1C 07 E0 09 0B 12 1E 15 00 00 2A FB 16");
        assert_eq!(clock_offset_s(&reply, 8 * 3600, 1_473_589_821.0), Ok(0.0));
        assert_eq!(clock_offset_s(&reply, 8 * 3600, 1_473_589_800.4), Ok(21.0));
    }

    #[test]
    fn setting_the_clock_is_the_standards_set_request() {
        // G08: SET 4000-02-00 := 2016-01-20 16:27:11, PIID 02.
        let local = dts_seconds(&dts_of(1_453_307_231)).unwrap();
        assert_eq!(local, 1_453_307_231);
        let bytes = set_clock(2, 1_453_307_231).encode().unwrap();
        assert_eq!(
            bytes,
            from_hex("06 01 02 40 00 02 00 1C 07 E0 01 14 10 1B 0B 00").unwrap()
        );
    }

    #[test]
    fn a_daily_freeze_is_read_by_its_freeze_time_and_its_rows_dated() {
        // G05's request shape; G06's reply: 2016-01-20 00:00:00 with zero energy.
        let bytes = freeze_request(3, Some(1_453_248_000 + 3600))
            .encode()
            .unwrap();
        assert_eq!(bytes, from_hex("05 03 03 50 04 02 00 01 20 21 02 00 1C 07 E0 01 14 00 00 00 02 00 20 21 02 00 00 00 10 02 00 00").unwrap());
        let reply = apdu("68 48 00 C3 05 07 09 19 05 16 20 00 CE 04 85 03 03 50 04 02 00 02 00 20 21 02 00 00 00 10 02 00 01 01 1C 07 E0 01 14 00 00 00 01 05 06 00 00 00 00 06 00 00 00 00 06 00 00 00 00 06 00 00 00 00 06 00 00 00 00 00 00 26 7D 16");
        let rows = freeze_rows(&reply).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].0, 1_453_248_000);
        assert_eq!(rows[0].1[0], (Arc::from("energy_import_kwh"), 0.0));
        assert_eq!(rows[0].1.len(), 5);
    }

    #[test]
    fn replies_are_matched_by_piid_whatever_the_acd_bit() {
        let reply = apdu("68 21 00 C3 05 01 00 00 00 00 00 10 49 54 85 01 05 40 00 02 00 01 1C 07 E0 09 0B 12 1E 15 00 00 2A FB 16");
        assert!(answers(0x05, &reply));
        assert!(answers(0x45, &reply));
        assert!(!answers(0x06, &reply));
    }
}
