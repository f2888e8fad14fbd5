//! Typed builders for every request of the notes (dlt645-notes.md §3, §5), both versions.
//! Each returns a [`Frame`]; `Frame::encode` puts it on the wire.

use super::{
    clock,
    di::Version,
    frame::{Address, Frame},
};

/// Password level and password (`PA P0 P1 P2`), and operator code (`C0..C3`), as sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Credentials {
    pub password: [u8; 4],
    pub operator: [u8; 4],
}

fn di_bytes(version: Version, di: u32) -> Vec<u8> {
    match version {
        Version::V2007 => di.to_le_bytes().to_vec(),
        Version::V1997 => (di as u16).to_le_bytes().to_vec(),
    }
}

/// Read data: 2007 C=11 with a 4-byte DI, 1997 C=01 with a 2-byte DI.
pub fn read(version: Version, address: Address, di: u32) -> Frame {
    let c = if version == Version::V2007 {
        0x11
    } else {
        0x01
    };
    Frame::new(address, c, di_bytes(version, di))
}

/// Read follow-up: 2007 C=12 `DI SEQ`, 1997 C=02.
pub fn read_follow_up(version: Version, address: Address, di: u32, seq: u8) -> Frame {
    let c = if version == Version::V2007 {
        0x12
    } else {
        0x02
    };
    let mut data = di_bytes(version, di);
    data.push(seq);
    Frame::new(address, c, data)
}

/// Read the communication address (2007 C=13 to AA..AA).
pub fn read_address() -> Frame {
    Frame::new(Address::WILDCARD, 0x13, Vec::new())
}

/// Write data. 2007 C=14: `DI PA P0 P1 P2 C0..C3 data`; 1997 C=04: `DI password data`.
pub fn write(
    version: Version,
    address: Address,
    di: u32,
    creds: Credentials,
    value: &[u8],
) -> Frame {
    let mut data = di_bytes(version, di);
    data.extend_from_slice(&creds.password);
    let c = match version {
        Version::V2007 => {
            data.extend_from_slice(&creds.operator);
            0x14
        }
        Version::V1997 => 0x04,
    };
    data.extend_from_slice(value);
    Frame::new(address, c, data)
}

/// Write a new communication address (2007 C=15, 1997 C=0A) to the only meter on the line.
pub fn write_address(version: Version, new: Address) -> Frame {
    let c = if version == Version::V2007 {
        0x15
    } else {
        0x0A
    };
    Frame::new(Address::WILDCARD, c, new.0.to_vec())
}

/// Broadcast time sync (C=08 to 99..99): `ss mm hh DD MM YY` of the meters' local time.
pub fn broadcast_time(local_secs: i64) -> Frame {
    Frame::new(
        Address::BROADCAST,
        0x08,
        clock::sync_data(local_secs).to_vec(),
    )
}

/// When to freeze: now, or periodically at `mm hh DD MM` where `None` fields are periodic
/// (sent as 99).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freeze {
    Now,
    At {
        minute: Option<u8>,
        hour: Option<u8>,
        day: Option<u8>,
        month: Option<u8>,
    },
}

/// Freeze (2007 C=16): `mm hh DD MM`, 99 for periodic fields, `99999999` = now. To 99..99 it
/// is a broadcast freeze (no reply).
pub fn freeze(address: Address, when: Freeze) -> Frame {
    let bcd = |v: Option<u8>| v.map_or(0x99, |v| (v / 10) << 4 | (v % 10));
    let data = match when {
        Freeze::Now => vec![0x99; 4],
        Freeze::At {
            minute,
            hour,
            day,
            month,
        } => vec![bcd(minute), bcd(hour), bcd(day), bcd(month)],
    };
    Frame::new(address, 0x16, data)
}

/// The feature word Z of a baud rate (2007: one bit, 600 … 19200); `None` for other rates.
pub fn baud_feature_word(baud: u32) -> Option<u8> {
    Some(match baud {
        600 => 0x02,
        1200 => 0x04,
        2400 => 0x08,
        4800 => 0x10,
        9600 => 0x20,
        19200 => 0x40,
        _ => return None,
    })
}

/// Change the line rate (2007 C=17, 1997 C=0C) with feature word Z; the meter echoes it, then
/// switches.
pub fn change_baud(version: Version, address: Address, baud: u32) -> Option<Frame> {
    let c = if version == Version::V2007 {
        0x17
    } else {
        0x0C
    };
    Some(Frame::new(address, c, vec![baud_feature_word(baud)?]))
}

/// Max-demand reset (2007 C=19: `PA P0 P1 P2 C0..C3`; 1997 C=10: the password).
pub fn max_demand_reset(version: Version, address: Address, creds: Credentials) -> Frame {
    let mut data = creds.password.to_vec();
    let c = match version {
        Version::V2007 => {
            data.extend_from_slice(&creds.operator);
            0x19
        }
        Version::V1997 => 0x10,
    };
    Frame::new(address, c, data)
}

/// What a remote-control command (2007 C=1C) asks of the meter's supply relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayCommand {
    /// 1A: open the relay (跳闸).
    Trip,
    /// 1B: allow closing (合闸允许): the customer closes it at the meter.
    ClosePermit,
    /// 2A: alarm (报警).
    Alarm,
    /// 2B: alarm release (报警解除).
    AlarmRelease,
}

impl RelayCommand {
    /// The N1 byte.
    pub fn code(self) -> u8 {
        match self {
            RelayCommand::Trip => 0x1A,
            RelayCommand::ClosePermit => 0x1B,
            RelayCommand::Alarm => 0x2A,
            RelayCommand::AlarmRelease => 0x2B,
        }
    }
}

/// Remote control of the supply relay (2007 C=1C, a later amendment; notes §3):
/// `PA P0 P1 P2 C0..C3 N1 N2 ss mm hh DD MM YY`, N2 reserved (00), the command valid until
/// `valid_until_local` (the meter's local time). The meter answers 9C (done) or DC with an
/// error byte (bit 2: password error / unauthorized).
pub fn relay_control(
    address: Address,
    creds: Credentials,
    command: RelayCommand,
    valid_until_local: i64,
) -> Frame {
    let mut data = creds.password.to_vec();
    data.extend_from_slice(&creds.operator);
    data.push(command.code());
    data.push(0x00);
    data.extend_from_slice(&clock::sync_data(valid_until_local));
    Frame::new(address, 0x1C, data)
}

/// Running status word 3 (04000503), which carries the relay's state.
pub const STATUS_WORD_3: u32 = 0x0400_0503;

/// The relay as status word 3 shows it. Bit positions from the 2007 amendment's table as
/// commonly implemented (unverified: the shared notes do not cover status words): bit 4 relay
/// open, bit 6 a trip commanded, bit 7 pre-trip alarm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayState {
    pub open: bool,
    pub trip_commanded: bool,
    pub alarm: bool,
}

impl RelayState {
    /// From the word's two data bytes (low byte first, after −0x33).
    pub fn from_status_word(bytes: &[u8]) -> Option<RelayState> {
        let w = u16::from_le_bytes([*bytes.first()?, *bytes.get(1)?]);
        Some(RelayState {
            open: w & 1 << 4 != 0,
            trip_commanded: w & 1 << 6 != 0,
            alarm: w & 1 << 7 != 0,
        })
    }

    pub fn status_word(self) -> [u8; 2] {
        let w = u16::from(self.open) << 4
            | u16::from(self.trip_commanded) << 6
            | u16::from(self.alarm) << 7;
        w.to_le_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlt645::frame::from_hex;

    #[test]
    fn a_relay_trip_carries_credentials_command_and_validity() {
        let creds = Credentials {
            password: [0x02, 0x56, 0x34, 0x12],
            operator: [0x01, 0x00, 0x00, 0x00],
        };
        // Valid until 2026-11-30 12:34:56 local.
        let f = relay_control(a("123456789012"), creds, RelayCommand::Trip, 1_796_042_096);
        assert_eq!(f.control.0, 0x1C);
        assert_eq!(
            f.data,
            [
                0x02, 0x56, 0x34, 0x12, 0x01, 0x00, 0x00, 0x00, 0x1A, 0x00, 0x56, 0x34, 0x12, 0x30,
                0x11, 0x26
            ]
        );
        // On the wire every data byte is +0x33.
        let w = wire(&f, 0);
        assert_eq!(w[9], 16);
        assert_eq!(w[10], 0x02 + 0x33);
    }

    #[test]
    fn the_relay_state_round_trips_through_status_word_3() {
        for (open, trip, alarm) in [
            (false, false, false),
            (true, true, false),
            (false, false, true),
        ] {
            let s = RelayState {
                open,
                trip_commanded: trip,
                alarm,
            };
            assert_eq!(RelayState::from_status_word(&s.status_word()), Some(s));
        }
        assert_eq!(RelayState::from_status_word(&[0x10]), None);
    }

    fn wire(f: &Frame, pre: usize) -> Vec<u8> {
        f.encode(pre).unwrap()
    }

    fn a(s: &str) -> Address {
        s.parse().unwrap()
    }

    #[test]
    fn builders_produce_the_public_vectors() {
        assert_eq!(
            wire(&read(Version::V2007, a("123456789012"), 0x0001_0000), 0),
            from_hex("68 12 90 78 56 34 12 68 11 04 33 33 34 33 68 16").unwrap(),
            "Q8"
        );
        assert_eq!(
            wire(&read_address(), 4),
            from_hex("FE FE FE FE 68 AA AA AA AA AA AA 68 13 00 DF 16").unwrap(),
            "R1"
        );
        assert_eq!(
            wire(
                &read_follow_up(Version::V2007, a("123456789012"), 0x0001_FF00, 1),
                0
            ),
            from_hex("68 12 90 78 56 34 12 68 12 05 33 32 34 33 34 9D 16").unwrap(),
            "M2"
        );
        assert_eq!(
            wire(&read(Version::V1997, Address::BROADCAST, 0x9010), 0),
            from_hex("68 99 99 99 99 99 99 68 01 02 43 C3 6F 16").unwrap(),
            "A1"
        );
        let creds = Credentials::default();
        assert_eq!(
            wire(
                &write(
                    Version::V1997,
                    Address::BROADCAST,
                    0xC010,
                    creds,
                    &[0x06, 0x06, 0x07, 0x19]
                ),
                0
            ),
            from_hex("68 99 99 99 99 99 99 68 04 0A 43 F3 33 33 33 33 39 39 3A 4C 6E 16").unwrap(),
            "A9"
        );
        // 2025-01-02 12:34:56, ss first.
        assert_eq!(
            wire(&broadcast_time(1_735_821_296), 0),
            from_hex("68 99 99 99 99 99 99 68 08 06 89 67 45 35 34 58 6A 16").unwrap()
        );
    }

    #[test]
    fn freeze_baud_and_demand_reset_carry_what_the_notes_say() {
        assert_eq!(freeze(Address::BROADCAST, Freeze::Now).data, [0x99; 4]);
        let daily = freeze(
            a("1"),
            Freeze::At {
                minute: Some(0),
                hour: Some(0),
                day: None,
                month: None,
            },
        );
        assert_eq!(
            (daily.control.0, daily.data),
            (0x16, vec![0x00, 0x00, 0x99, 0x99])
        );
        assert_eq!(
            change_baud(Version::V2007, a("1"), 9600).map(|f| (f.control.0, f.data)),
            Some((0x17, vec![0x20])),
            "bit 5, not 0x32"
        );
        assert_eq!(change_baud(Version::V2007, a("1"), 1234), None);
        let creds = Credentials {
            password: [0x02, 0x11, 0x22, 0x33],
            operator: [1, 2, 3, 4],
        };
        let r = max_demand_reset(Version::V2007, a("1"), creds);
        assert_eq!((r.control.0, r.data.len()), (0x19, 8));
        assert_eq!(
            max_demand_reset(Version::V1997, a("1"), creds).control.0,
            0x10
        );
        assert_eq!(
            write_address(Version::V2007, a("123456789012")).data,
            a("123456789012").0
        );
    }
}
