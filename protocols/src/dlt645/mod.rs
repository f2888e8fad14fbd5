//! DL/T 645-2007 and -1997: frames, BCD values and the data-identifier catalogue. Sans-IO:
//! bytes in, frames and values out. `../shared/protocols/dlt645-notes.md` is the reference.

pub mod bcd;
pub mod clock;
pub mod describe;
pub mod di;
pub mod error;
pub mod frame;
pub mod plan;
pub mod request;
pub mod session;

pub use di::Version;
pub use error::Dlt645Error;
pub use frame::{Address, Control, Frame, Scan};

/// The name of a control code's function, per version.
pub fn function_name(version: Version, control: Control) -> &'static str {
    let f = control.function();
    match version {
        Version::V2007 => match f {
            0x08 => "broadcast time sync",
            0x11 => "read data",
            0x12 => "read follow-up",
            0x13 => "read address",
            0x14 => "write data",
            0x15 => "write address",
            0x16 => "freeze",
            0x17 => "change baud rate",
            0x18 => "change password",
            0x19 => "max-demand reset",
            0x1A => "meter clear",
            0x1B => "event clear",
            0x1C => "trip/close/alarm",
            _ => "unknown function",
        },
        Version::V1997 => match f {
            0x08 => "broadcast time sync",
            0x01 => "read data",
            0x02 => "read follow-up",
            0x03 => "re-read",
            0x04 => "write data",
            0x0A => "write address",
            0x0C => "change baud rate",
            0x0F => "change password",
            0x10 => "max-demand reset",
            0x11..=0x1C => "not a 1997 function (a 2007 control code)",
            _ => "unknown function",
        },
    }
}

/// The meaning of the error byte of an abnormal reply (data already −0x33).
pub fn error_bits(version: Version, err: u8) -> Vec<&'static str> {
    let names: [&str; 8] = match version {
        Version::V2007 => [
            "other error",
            "no requested data",
            "password error / unauthorized",
            "baud rate cannot be changed",
            "year time-zone count exceeded",
            "daily time-slot count exceeded",
            "tariff count exceeded",
            "reserved bit set",
        ],
        Version::V1997 => [
            "illegal data",
            "data identifier error",
            "password error",
            "reserved bit set",
            "year time-zone count exceeded",
            "daily time-slot count exceeded",
            "tariff count exceeded",
            "reserved bit set",
        ],
    };
    (0..8)
        .filter(|b| err & (1 << b) != 0)
        .map(|b| names[b])
        .collect()
}

/// The DI at the front of a read/write data field, and its length (4 for 2007, 2 for 1997).
pub fn data_identifier(version: Version, data: &[u8]) -> Option<(u32, usize)> {
    match version {
        Version::V2007 => data
            .get(..4)
            .map(|d| (u32::from_le_bytes([d[0], d[1], d[2], d[3]]), 4)),
        Version::V1997 => data
            .get(..2)
            .map(|d| (u32::from(u16::from_le_bytes([d[0], d[1]])), 2)),
    }
}
