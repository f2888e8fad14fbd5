//! Meter clocks: the date (04000101, `WW DD MM YY` on the wire), the time (04000102,
//! `ss mm hh`) and the broadcast time sync (C=08, `ss mm hh DD MM YY`), all packed BCD in the
//! meter's local time. Pure: times are seconds since the Unix epoch, passed in.

use super::bcd;

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day number: (year, month, day).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

fn bcd2(v: u32) -> u8 {
    ((v / 10) << 4 | (v % 10)) as u8
}

/// Local broken-down time of `secs` (already shifted to the meter's time zone).
fn parts(secs: i64) -> (i64, u32, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let weekday = (days + 4).rem_euclid(7) as u32; // 1970-01-01 was a Thursday; 0 = Sunday
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
        weekday,
    )
}

/// The broadcast time-sync data field: `ss mm hh DD MM YY`.
pub fn sync_data(local_secs: i64) -> [u8; 6] {
    let (y, mo, d, h, mi, s, _) = parts(local_secs);
    [
        bcd2(s),
        bcd2(mi),
        bcd2(h),
        bcd2(d),
        bcd2(mo),
        bcd2((y % 100) as u32),
    ]
}

/// The value bytes of 04000101 (`WW DD MM YY`) and 04000102 (`ss mm hh`).
pub fn date_time_values(local_secs: i64) -> ([u8; 4], [u8; 3]) {
    let (y, mo, d, h, mi, s, wd) = parts(local_secs);
    (
        [bcd2(wd), bcd2(d), bcd2(mo), bcd2((y % 100) as u32)],
        [bcd2(s), bcd2(mi), bcd2(h)],
    )
}

/// Local seconds from the value bytes of 04000101 and 04000102; `None` if not a valid time.
pub fn from_date_time(date: &[u8], time: &[u8]) -> Option<i64> {
    let dd = bcd::digits(date.get(..4)?).ok()?; // YYMMDDWW
    let tt = bcd::digits(time.get(..3)?).ok()?; // hhmmss
    let n = |s: &str, i: usize| s[i..i + 2].parse::<u32>().ok();
    let (y, mo, d) = (2000 + i64::from(n(&dd, 0)?), n(&dd, 2)?, n(&dd, 4)?);
    let (h, mi, s) = (n(&tt, 0)?, n(&tt, 2)?, n(&tt, 4)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    if civil_from_days(days) != (y, mo, d) {
        return None; // 31 February and the like
    }
    Some(days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s))
}

/// Local seconds from a freeze or demand time, `mm hh DD MM YY` on the wire (YYMMDDhhmm).
pub fn from_minutes(bytes: &[u8]) -> Option<i64> {
    let b = bytes.get(..5)?;
    let date = [0, b[2], b[3], b[4]];
    from_date_time(&date, &[0, b[0], b[1]])
}

/// The wire bytes `mm hh DD MM YY` of a local time (seconds are dropped).
pub fn minutes_value(local_secs: i64) -> [u8; 5] {
    let (y, mo, d, h, mi, _, _) = parts(local_secs);
    [bcd2(mi), bcd2(h), bcd2(d), bcd2(mo), bcd2((y % 100) as u32)]
}

/// Local seconds from a time-sync data field `ss mm hh DD MM YY`.
pub fn from_sync_data(data: &[u8]) -> Option<i64> {
    let d = data.get(..6)?;
    let date = [0, d[3], d[4], d[5]];
    from_date_time(&date, &d[..3])
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2025-01-02 12:34:56 (a Thursday) as seconds.
    const T: i64 = 1_735_821_296;

    #[test]
    fn the_time_sync_field_is_seconds_first() {
        // The vectors' ss-first example: 68 99.. 68 08 06 89 67 45 35 34 58 → −0x33.
        assert_eq!(sync_data(T), [0x56, 0x34, 0x12, 0x02, 0x01, 0x25]);
        assert_eq!(from_sync_data(&sync_data(T)), Some(T));
    }

    #[test]
    fn date_and_time_round_trip_with_the_weekday() {
        let (date, time) = date_time_values(T);
        assert_eq!(date, [0x04, 0x02, 0x01, 0x25], "Thursday = 4");
        assert_eq!(time, [0x56, 0x34, 0x12]);
        assert_eq!(from_date_time(&date, &time), Some(T));
        assert_eq!(
            from_date_time(&[0, 0x31, 0x02, 0x25], &time),
            None,
            "31 February"
        );
        assert_eq!(
            from_date_time(&[0, 0x02, 0x13, 0x25], &time),
            None,
            "month 13"
        );
    }

    #[test]
    fn freeze_times_are_minutes_first() {
        let midnight = T - (12 * 3600 + 34 * 60 + 56);
        assert_eq!(minutes_value(midnight), [0x00, 0x00, 0x02, 0x01, 0x25]);
        assert_eq!(from_minutes(&minutes_value(midnight)), Some(midnight));
    }

    #[test]
    fn civil_dates_round_trip_over_centuries() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
