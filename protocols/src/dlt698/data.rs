//! The Data CHOICE of DL/T 698.45 (A-XDR): every tag of the notes' §6, and the types that
//! APDUs use untagged (OAD, ROAD, OMD, TSA, RSD, RCSD, date-times…). Decoding refuses unknown
//! tags (their length is unknowable), non-minimal lengths, out-of-range dates and nesting past
//! [`MAX_DEPTH`](super::axdr::MAX_DEPTH); every decoded value re-encodes to the same bytes.

use std::fmt;

use super::{
    axdr::{Reader, Writer},
    error::Dlt698Error,
};

type R<T> = Result<T, Dlt698Error>;

/// OAD: object identifier, attribute (bits 0-4; bits 5-7 "feature") and element index.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Oad {
    pub oi: u16,
    pub attribute: u8,
    pub index: u8,
}

impl Oad {
    pub const fn new(oi: u16, attribute: u8, index: u8) -> Oad {
        Oad {
            oi,
            attribute,
            index,
        }
    }
    pub fn to_u32(self) -> u32 {
        u32::from(self.oi) << 16 | u32::from(self.attribute) << 8 | u32::from(self.index)
    }
    pub fn from_u32(v: u32) -> Oad {
        Oad::new((v >> 16) as u16, (v >> 8) as u8, v as u8)
    }
    /// The same object and attribute, whole (index 0).
    pub fn whole(self) -> Oad {
        Oad::new(self.oi, self.attribute, 0)
    }
    /// `0010-02-00`, as the notes print it.
    pub fn dashed(self) -> String {
        format!("{:04X}-{:02X}-{:02X}", self.oi, self.attribute, self.index)
    }
    fn read(r: &mut Reader) -> R<Oad> {
        Ok(Oad::from_u32(r.u32("OAD")?))
    }
    fn write(self, w: &mut Writer) {
        w.u32(self.to_u32());
    }
}

/// `00100200`: 8 hex digits, as in JSON and the config.
impl fmt::Display for Oad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}", self.to_u32())
    }
}

impl fmt::Debug for Oad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Oad({})", self.dashed())
    }
}

impl std::str::FromStr for Oad {
    type Err = Dlt698Error;
    /// 8 hex digits, dashes allowed (`00100200`, `0010-02-00`).
    fn from_str(s: &str) -> R<Oad> {
        let t: String = s.chars().filter(|c| *c != '-').collect();
        if t.len() != 8 {
            return Err(Dlt698Error::BadOad(s.to_string()));
        }
        u32::from_str_radix(&t, 16)
            .map(Oad::from_u32)
            .map_err(|_| Dlt698Error::BadOad(s.to_string()))
    }
}

/// OMD: object, method, operation mode.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Omd {
    pub oi: u16,
    pub method: u8,
    pub mode: u8,
}

impl Omd {
    pub fn dashed(self) -> String {
        format!("{:04X}-{:02X}-{:02X}", self.oi, self.method, self.mode)
    }
    pub(crate) fn read(r: &mut Reader) -> R<Omd> {
        let b: [u8; 4] = r.array("OMD")?;
        Ok(Omd {
            oi: u16::from_be_bytes([b[0], b[1]]),
            method: b[2],
            mode: b[3],
        })
    }
    pub(crate) fn write(self, w: &mut Writer) {
        w.u16(self.oi);
        w.u8(self.method);
        w.u8(self.mode);
    }
}

/// ROAD: an OAD and the OADs related to it (a record's columns).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Road {
    pub oad: Oad,
    pub related: Vec<Oad>,
}

/// CSD: a column, an OAD or a ROAD.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Csd {
    Oad(Oad),
    Road(Road),
}

/// TI: a time interval.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Ti {
    /// 0 s, 1 min, 2 h, 3 day, 4 month, 5 year.
    pub unit: u8,
    pub value: u16,
}

impl Ti {
    pub fn unit_name(self) -> &'static str {
        match self.unit {
            0 => "s",
            1 => "min",
            2 => "h",
            3 => "day",
            4 => "month",
            5 => "year",
            _ => "?",
        }
    }
}

/// TSA: a server address inside an APDU, most significant byte first.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Tsa {
    /// The flag byte: low nibble = address length - 1, high bits as in AF.
    pub flag: u8,
    pub address: Vec<u8>,
}

impl Tsa {
    pub fn printed(&self) -> String {
        self.address.iter().map(|b| format!("{b:02X}")).collect()
    }
}

/// date_time: year, month, day, weekday, hour, minute, second, milliseconds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DateTime {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub weekday: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    pub millis: u16,
}

/// date_time_s: year, month, day, hour, minute, second (`FF`/`FFFF`: unspecified).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct DateTimeS {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

impl fmt::Display for DateTimeS {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

impl fmt::Display for DateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02} wd{} {:02}:{:02}:{:02}.{:03}",
            self.year,
            self.month,
            self.day,
            self.weekday,
            self.hour,
            self.minute,
            self.second,
            self.millis
        )
    }
}

/// date: year, month, day, weekday.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Date {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub weekday: u8,
}

/// time: hour, minute, second.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Time {
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

/// MS: a meter set.
#[derive(Clone, PartialEq, Debug)]
pub enum Ms {
    None,
    All,
    UserTypes(Vec<u8>),
    Addresses(Vec<Tsa>),
    Serials(Vec<u16>),
    UserTypeRegions(Vec<Region>),
    AddressRegions(Vec<Region>),
    SerialRegions(Vec<Region>),
}

/// Region: kind (0 [a,b), 1 (a,b], 2 [a,b], 3 (a,b)) and its two ends.
#[derive(Clone, PartialEq, Debug)]
pub struct Region {
    pub kind: u8,
    pub start: Box<Data>,
    pub end: Box<Data>,
}

/// RSD: which records (selectors 0 to 10).
#[derive(Clone, PartialEq, Debug)]
pub enum Rsd {
    None,
    /// Rows whose column `oad` equals `value` (a daily freeze by its freeze time).
    Equal {
        oad: Oad,
        value: Data,
    },
    /// Rows with `start` ≤ column < `end`, every `interval` (a TI, or null).
    Range(Selector2),
    Ranges(Vec<Selector2>),
    /// Collection start time (4) or store time (5), for the meters of `ms`.
    Collected {
        selector: u8,
        time: DateTimeS,
        ms: Ms,
    },
    /// Between two times every TI, for the meters of `ms` (selectors 6, 7, 8).
    Between {
        selector: u8,
        start: DateTimeS,
        end: DateTimeS,
        interval: Ti,
        ms: Ms,
    },
    /// The `n`-th most recent record.
    Last(u8),
    /// The last `n` records of the meters of `ms`.
    LastOf {
        n: u8,
        ms: Ms,
    },
}

#[derive(Clone, PartialEq, Debug)]
pub struct Selector2 {
    pub oad: Oad,
    pub start: Data,
    pub end: Data,
    pub interval: Data,
}

/// SID: security identifier.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Sid {
    pub ident: u32,
    pub extra: Vec<u8>,
}

/// One Data value.
#[derive(Clone, PartialEq, Debug)]
pub enum Data {
    Null,
    Array(Vec<Data>),
    Structure(Vec<Data>),
    Bool(bool),
    /// `bits` bits, first bit the most significant of the first byte.
    BitString {
        bits: usize,
        bytes: Vec<u8>,
    },
    DoubleLong(i32),
    DoubleLongUnsigned(u32),
    OctetString(Vec<u8>),
    /// Bytes as sent (meters put non-ASCII in them).
    VisibleString(Vec<u8>),
    Utf8String(Vec<u8>),
    Integer(i8),
    Long(i16),
    Unsigned(u8),
    LongUnsigned(u16),
    Long64(i64),
    Long64Unsigned(u64),
    Enum(u8),
    Float32(f32),
    Float64(f64),
    DateTime(DateTime),
    Date(Date),
    Time(Time),
    DateTimeS(DateTimeS),
    Oi(u16),
    Oad(Oad),
    Road(Road),
    Omd(Omd),
    Ti(Ti),
    Tsa(Tsa),
    Mac(Vec<u8>),
    Rn(Vec<u8>),
    Region(Region),
    ScalerUnit {
        scaler: i8,
        unit: u8,
    },
    Rsd(Box<Rsd>),
    Csd(Csd),
    Ms(Ms),
    Sid(Sid),
    SidMac {
        sid: Sid,
        mac: Vec<u8>,
    },
    /// baud, parity, data bits, stop bits, flow control.
    Comdcb([u8; 5]),
    Rcsd(Vec<Csd>),
}

impl Data {
    /// The value as a number, for the integer and float types.
    pub fn as_f64(&self) -> Option<f64> {
        Some(match *self {
            Data::DoubleLong(v) => f64::from(v),
            Data::DoubleLongUnsigned(v) => f64::from(v),
            Data::Integer(v) => f64::from(v),
            Data::Long(v) => f64::from(v),
            Data::Unsigned(v) => f64::from(v),
            Data::LongUnsigned(v) => f64::from(v),
            Data::Long64(v) => v as f64,
            Data::Long64Unsigned(v) => v as f64,
            Data::Enum(v) => f64::from(v),
            Data::Float32(v) => f64::from(v),
            Data::Float64(v) => v,
            Data::Bool(b) => f64::from(u8::from(b)),
            _ => return None,
        })
    }

    /// The elements of an array or structure.
    pub fn items(&self) -> Option<&[Data]> {
        match self {
            Data::Array(v) | Data::Structure(v) => Some(v),
            _ => None,
        }
    }

    /// The tag byte.
    pub fn tag(&self) -> u8 {
        match self {
            Data::Null => 0,
            Data::Array(_) => 1,
            Data::Structure(_) => 2,
            Data::Bool(_) => 3,
            Data::BitString { .. } => 4,
            Data::DoubleLong(_) => 5,
            Data::DoubleLongUnsigned(_) => 6,
            Data::OctetString(_) => 9,
            Data::VisibleString(_) => 10,
            Data::Utf8String(_) => 12,
            Data::Integer(_) => 15,
            Data::Long(_) => 16,
            Data::Unsigned(_) => 17,
            Data::LongUnsigned(_) => 18,
            Data::Long64(_) => 20,
            Data::Long64Unsigned(_) => 21,
            Data::Enum(_) => 22,
            Data::Float32(_) => 23,
            Data::Float64(_) => 24,
            Data::DateTime(_) => 25,
            Data::Date(_) => 26,
            Data::Time(_) => 27,
            Data::DateTimeS(_) => 28,
            Data::Oi(_) => 80,
            Data::Oad(_) => 81,
            Data::Road(_) => 82,
            Data::Omd(_) => 83,
            Data::Ti(_) => 84,
            Data::Tsa(_) => 85,
            Data::Mac(_) => 86,
            Data::Rn(_) => 87,
            Data::Region(_) => 88,
            Data::ScalerUnit { .. } => 89,
            Data::Rsd(_) => 90,
            Data::Csd(_) => 91,
            Data::Ms(_) => 92,
            Data::Sid(_) => 93,
            Data::SidMac { .. } => 94,
            Data::Comdcb(_) => 95,
            Data::Rcsd(_) => 96,
        }
    }

    /// Decodes exactly one Data from `bytes`.
    pub fn decode(bytes: &[u8]) -> R<Data> {
        let mut r = Reader::new(bytes);
        let d = read_data(&mut r)?;
        r.finish()?;
        Ok(d)
    }

    pub fn encode(&self) -> R<Vec<u8>> {
        let mut w = Writer::default();
        write_data(&mut w, self)?;
        Ok(w.out)
    }
}

fn check_range(what: &'static str, at: usize, v: u32, ok: bool) -> R<()> {
    if ok {
        Ok(())
    } else {
        Err(Dlt698Error::OutOfRange {
            what,
            offset: at,
            value: v,
        })
    }
}

/// `v` within `lo..=hi`, or the "unspecified" `FF`.
fn field(what: &'static str, at: usize, v: u8, lo: u8, hi: u8) -> R<()> {
    check_range(what, at, u32::from(v), v == 0xFF || (lo..=hi).contains(&v))
}

pub(crate) fn read_dts(r: &mut Reader) -> R<DateTimeS> {
    let at = r.pos();
    let b: [u8; 7] = r.array("date_time_s")?;
    let d = DateTimeS {
        year: u16::from_be_bytes([b[0], b[1]]),
        month: b[2],
        day: b[3],
        hour: b[4],
        minute: b[5],
        second: b[6],
    };
    field("month", at + 2, d.month, 1, 12)?;
    field("day", at + 3, d.day, 1, 31)?;
    field("hour", at + 4, d.hour, 0, 23)?;
    field("minute", at + 5, d.minute, 0, 59)?;
    field("second", at + 6, d.second, 0, 59)?;
    Ok(d)
}

pub(crate) fn write_dts(w: &mut Writer, d: &DateTimeS) {
    w.u16(d.year);
    w.bytes(&[d.month, d.day, d.hour, d.minute, d.second]);
}

pub(crate) fn read_date_time(r: &mut Reader) -> R<DateTime> {
    let at = r.pos();
    let b: [u8; 10] = r.array("date_time")?;
    let d = DateTime {
        year: u16::from_be_bytes([b[0], b[1]]),
        month: b[2],
        day: b[3],
        weekday: b[4],
        hour: b[5],
        minute: b[6],
        second: b[7],
        millis: u16::from_be_bytes([b[8], b[9]]),
    };
    field("month", at + 2, d.month, 1, 12)?;
    field("day", at + 3, d.day, 1, 31)?;
    field("weekday", at + 4, d.weekday, 0, 6)?;
    field("hour", at + 5, d.hour, 0, 23)?;
    field("minute", at + 6, d.minute, 0, 59)?;
    field("second", at + 7, d.second, 0, 59)?;
    check_range(
        "milliseconds",
        at + 8,
        u32::from(d.millis),
        d.millis == 0xFFFF || d.millis < 1000,
    )?;
    Ok(d)
}

pub(crate) fn write_date_time(w: &mut Writer, d: &DateTime) {
    w.u16(d.year);
    w.bytes(&[d.month, d.day, d.weekday, d.hour, d.minute, d.second]);
    w.u16(d.millis);
}

pub(crate) fn read_oad(r: &mut Reader) -> R<Oad> {
    Oad::read(r)
}

pub(crate) fn write_oad(w: &mut Writer, o: &Oad) {
    o.write(w);
}

pub(crate) fn read_road(r: &mut Reader) -> R<Road> {
    Ok(Road {
        oad: Oad::read(r)?,
        related: r.seq("ROAD columns", Oad::read)?,
    })
}

fn write_road(w: &mut Writer, road: &Road) -> R<()> {
    road.oad.write(w);
    w.seq(&road.related, |w, o| {
        o.write(w);
        Ok(())
    })
}

pub(crate) fn read_csd(r: &mut Reader) -> R<Csd> {
    match r.u8("CSD")? {
        0 => Ok(Csd::Oad(Oad::read(r)?)),
        1 => Ok(Csd::Road(read_road(r)?)),
        c => Err(r.unknown("CSD", c)),
    }
}

pub(crate) fn write_csd(w: &mut Writer, c: &Csd) -> R<()> {
    match c {
        Csd::Oad(o) => {
            w.u8(0);
            o.write(w);
            Ok(())
        }
        Csd::Road(road) => {
            w.u8(1);
            write_road(w, road)
        }
    }
}

pub(crate) fn read_rcsd(r: &mut Reader) -> R<Vec<Csd>> {
    r.seq("RCSD", read_csd)
}

pub(crate) fn write_rcsd(w: &mut Writer, cols: &[Csd]) -> R<()> {
    w.seq(cols, write_csd)
}

pub(crate) fn read_ti(r: &mut Reader) -> R<Ti> {
    Ok(Ti {
        unit: r.u8("TI unit")?,
        value: r.u16("TI")?,
    })
}

pub(crate) fn write_ti(w: &mut Writer, t: &Ti) {
    w.u8(t.unit);
    w.u16(t.value);
}

pub(crate) fn read_tsa(r: &mut Reader) -> R<Tsa> {
    let at = r.pos();
    let n = r.len("TSA")?;
    if n == 0 {
        return Err(Dlt698Error::OutOfRange {
            what: "TSA length",
            offset: at,
            value: 0,
        });
    }
    let b = r.bytes(n, "TSA")?;
    Ok(Tsa {
        flag: b[0],
        address: b[1..].to_vec(),
    })
}

pub(crate) fn write_tsa(w: &mut Writer, t: &Tsa) -> R<()> {
    w.len(t.address.len() + 1)?;
    w.u8(t.flag);
    w.bytes(&t.address);
    Ok(())
}

fn read_region(r: &mut Reader) -> R<Region> {
    Ok(Region {
        kind: r.u8("Region")?,
        start: Box::new(read_data(r)?),
        end: Box::new(read_data(r)?),
    })
}

fn write_region(w: &mut Writer, g: &Region) -> R<()> {
    w.u8(g.kind);
    write_data(w, &g.start)?;
    write_data(w, &g.end)
}

pub(crate) fn read_ms(r: &mut Reader) -> R<Ms> {
    Ok(match r.u8("MS")? {
        0 => Ms::None,
        1 => Ms::All,
        2 => Ms::UserTypes(r.seq("MS user types", |r| r.u8("user type"))?),
        3 => Ms::Addresses(r.seq("MS addresses", read_tsa)?),
        4 => Ms::Serials(r.seq("MS serials", |r| r.u16("serial"))?),
        5 => Ms::UserTypeRegions(r.seq("MS regions", read_region)?),
        6 => Ms::AddressRegions(r.seq("MS regions", read_region)?),
        7 => Ms::SerialRegions(r.seq("MS regions", read_region)?),
        c => return Err(r.unknown("MS", c)),
    })
}

pub(crate) fn write_ms(w: &mut Writer, ms: &Ms) -> R<()> {
    match ms {
        Ms::None => w.u8(0),
        Ms::All => w.u8(1),
        Ms::UserTypes(v) => {
            w.u8(2);
            w.seq(v, |w, t| {
                w.u8(*t);
                Ok(())
            })?;
        }
        Ms::Addresses(v) => {
            w.u8(3);
            w.seq(v, write_tsa)?;
        }
        Ms::Serials(v) => {
            w.u8(4);
            w.seq(v, |w, s| {
                w.u16(*s);
                Ok(())
            })?;
        }
        Ms::UserTypeRegions(v) | Ms::AddressRegions(v) | Ms::SerialRegions(v) => {
            w.u8(match ms {
                Ms::UserTypeRegions(_) => 5,
                Ms::AddressRegions(_) => 6,
                _ => 7,
            });
            w.seq(v, write_region)?;
        }
    }
    Ok(())
}

fn read_selector2(r: &mut Reader) -> R<Selector2> {
    Ok(Selector2 {
        oad: Oad::read(r)?,
        start: read_data(r)?,
        end: read_data(r)?,
        interval: read_data(r)?,
    })
}

fn write_selector2(w: &mut Writer, s: &Selector2) -> R<()> {
    s.oad.write(w);
    write_data(w, &s.start)?;
    write_data(w, &s.end)?;
    write_data(w, &s.interval)
}

pub(crate) fn read_rsd(r: &mut Reader) -> R<Rsd> {
    r.nested(|r| {
        Ok(match r.u8("RSD")? {
            0 => Rsd::None,
            1 => Rsd::Equal {
                oad: Oad::read(r)?,
                value: read_data(r)?,
            },
            2 => Rsd::Range(read_selector2(r)?),
            3 => Rsd::Ranges(r.seq("RSD ranges", read_selector2)?),
            s @ (4 | 5) => Rsd::Collected {
                selector: s,
                time: read_dts(r)?,
                ms: read_ms(r)?,
            },
            s @ (6..=8) => Rsd::Between {
                selector: s,
                start: read_dts(r)?,
                end: read_dts(r)?,
                interval: read_ti(r)?,
                ms: read_ms(r)?,
            },
            9 => Rsd::Last(r.u8("RSD 9")?),
            10 => Rsd::LastOf {
                n: r.u8("RSD 10")?,
                ms: read_ms(r)?,
            },
            c => return Err(r.unknown("RSD selector", c)),
        })
    })
}

pub(crate) fn write_rsd(w: &mut Writer, rsd: &Rsd) -> R<()> {
    match rsd {
        Rsd::None => w.u8(0),
        Rsd::Equal { oad, value } => {
            w.u8(1);
            oad.write(w);
            write_data(w, value)?;
        }
        Rsd::Range(s) => {
            w.u8(2);
            write_selector2(w, s)?;
        }
        Rsd::Ranges(v) => {
            w.u8(3);
            w.seq(v, write_selector2)?;
        }
        Rsd::Collected { selector, time, ms } => {
            w.u8(*selector);
            write_dts(w, time);
            write_ms(w, ms)?;
        }
        Rsd::Between {
            selector,
            start,
            end,
            interval,
            ms,
        } => {
            w.u8(*selector);
            write_dts(w, start);
            write_dts(w, end);
            write_ti(w, interval);
            write_ms(w, ms)?;
        }
        Rsd::Last(n) => {
            w.u8(9);
            w.u8(*n);
        }
        Rsd::LastOf { n, ms } => {
            w.u8(10);
            w.u8(*n);
            write_ms(w, ms)?;
        }
    }
    Ok(())
}

fn read_sid(r: &mut Reader) -> R<Sid> {
    Ok(Sid {
        ident: r.u32("SID")?,
        extra: r.octets("SID data")?,
    })
}

fn write_sid(w: &mut Writer, s: &Sid) -> R<()> {
    w.u32(s.ident);
    w.octets(&s.extra)
}

pub(crate) fn read_sid_mac(r: &mut Reader) -> R<(Sid, Vec<u8>)> {
    Ok((read_sid(r)?, r.octets("MAC")?))
}

pub(crate) fn write_sid_mac(w: &mut Writer, sid: &Sid, mac: &[u8]) -> R<()> {
    write_sid(w, sid)?;
    w.octets(mac)
}

/// One tagged Data.
pub(crate) fn read_data(r: &mut Reader) -> R<Data> {
    let at = r.pos();
    let tag = r.u8("Data tag")?;
    Ok(match tag {
        0 => Data::Null,
        1 => Data::Array(r.seq("array", read_data)?),
        2 => Data::Structure(r.seq("structure", read_data)?),
        3 => {
            let v = r.u8("bool")?;
            check_range("bool", at + 1, u32::from(v), v <= 1)?;
            Data::Bool(v == 1)
        }
        4 => {
            let bits = r.count("bit-string")?;
            let bytes = r.bytes(bits.div_ceil(8), "bit-string")?.to_vec();
            Data::BitString { bits, bytes }
        }
        5 => Data::DoubleLong(r.u32("double-long")? as i32),
        6 => Data::DoubleLongUnsigned(r.u32("double-long-unsigned")?),
        9 => Data::OctetString(r.octets("octet-string")?),
        10 => Data::VisibleString(r.octets("visible-string")?),
        12 => Data::Utf8String(r.octets("UTF8-string")?),
        15 => Data::Integer(r.u8("integer")? as i8),
        16 => Data::Long(r.u16("long")? as i16),
        17 => Data::Unsigned(r.u8("unsigned")?),
        18 => Data::LongUnsigned(r.u16("long-unsigned")?),
        20 => Data::Long64(r.u64("long64")? as i64),
        21 => Data::Long64Unsigned(r.u64("long64-unsigned")?),
        22 => Data::Enum(r.u8("enum")?),
        23 => Data::Float32(f32::from_bits(r.u32("float32")?)),
        24 => Data::Float64(f64::from_bits(r.u64("float64")?)),
        25 => Data::DateTime(read_date_time(r)?),
        26 => {
            let at = r.pos();
            let b: [u8; 5] = r.array("date")?;
            let d = Date {
                year: u16::from_be_bytes([b[0], b[1]]),
                month: b[2],
                day: b[3],
                weekday: b[4],
            };
            field("month", at + 2, d.month, 1, 12)?;
            field("day", at + 3, d.day, 1, 31)?;
            field("weekday", at + 4, d.weekday, 0, 6)?;
            Data::Date(d)
        }
        27 => {
            let at = r.pos();
            let b: [u8; 3] = r.array("time")?;
            field("hour", at, b[0], 0, 23)?;
            field("minute", at + 1, b[1], 0, 59)?;
            field("second", at + 2, b[2], 0, 59)?;
            Data::Time(Time {
                hour: b[0],
                minute: b[1],
                second: b[2],
            })
        }
        28 => Data::DateTimeS(read_dts(r)?),
        80 => Data::Oi(r.u16("OI")?),
        81 => Data::Oad(Oad::read(r)?),
        82 => Data::Road(read_road(r)?),
        83 => Data::Omd(Omd::read(r)?),
        84 => Data::Ti(read_ti(r)?),
        85 => Data::Tsa(read_tsa(r)?),
        86 => Data::Mac(r.octets("MAC")?),
        87 => Data::Rn(r.octets("RN")?),
        88 => Data::Region(r.nested(read_region)?),
        89 => Data::ScalerUnit {
            scaler: r.u8("scaler")? as i8,
            unit: r.u8("unit")?,
        },
        90 => Data::Rsd(Box::new(read_rsd(r)?)),
        91 => Data::Csd(read_csd(r)?),
        92 => Data::Ms(r.nested(read_ms)?),
        93 => Data::Sid(read_sid(r)?),
        94 => {
            let (sid, mac) = read_sid_mac(r)?;
            Data::SidMac { sid, mac }
        }
        95 => Data::Comdcb(r.array("COMDCB")?),
        96 => Data::Rcsd(read_rcsd(r)?),
        _ => return Err(Dlt698Error::UnknownDataTag { tag, offset: at }),
    })
}

/// One tagged Data.
pub(crate) fn write_data(w: &mut Writer, d: &Data) -> R<()> {
    w.u8(d.tag());
    match d {
        Data::Null => {}
        Data::Array(v) | Data::Structure(v) => w.seq(v, write_data)?,
        Data::Bool(b) => w.u8(u8::from(*b)),
        Data::BitString { bits, bytes } => {
            if bytes.len() != bits.div_ceil(8) {
                return Err(Dlt698Error::TooLong {
                    what: "bit-string bytes for its bit count",
                    len: bytes.len(),
                });
            }
            w.len(*bits)?;
            w.bytes(bytes);
        }
        Data::DoubleLong(v) => w.u32(*v as u32),
        Data::DoubleLongUnsigned(v) => w.u32(*v),
        Data::OctetString(b) | Data::VisibleString(b) | Data::Utf8String(b) => w.octets(b)?,
        Data::Mac(b) | Data::Rn(b) => w.octets(b)?,
        Data::Integer(v) => w.u8(*v as u8),
        Data::Long(v) => w.u16(*v as u16),
        Data::Unsigned(v) | Data::Enum(v) => w.u8(*v),
        Data::LongUnsigned(v) => w.u16(*v),
        Data::Long64(v) => w.u64(*v as u64),
        Data::Long64Unsigned(v) => w.u64(*v),
        Data::Float32(v) => w.u32(v.to_bits()),
        Data::Float64(v) => w.u64(v.to_bits()),
        Data::DateTime(t) => write_date_time(w, t),
        Data::Date(t) => {
            w.u16(t.year);
            w.bytes(&[t.month, t.day, t.weekday]);
        }
        Data::Time(t) => w.bytes(&[t.hour, t.minute, t.second]),
        Data::DateTimeS(t) => write_dts(w, t),
        Data::Oi(v) => w.u16(*v),
        Data::Oad(o) => o.write(w),
        Data::Road(road) => write_road(w, road)?,
        Data::Omd(o) => o.write(w),
        Data::Ti(t) => write_ti(w, t),
        Data::Tsa(t) => write_tsa(w, t)?,
        Data::Region(g) => write_region(w, g)?,
        Data::ScalerUnit { scaler, unit } => {
            w.u8(*scaler as u8);
            w.u8(*unit);
        }
        Data::Rsd(rsd) => write_rsd(w, rsd)?,
        Data::Csd(c) => write_csd(w, c)?,
        Data::Ms(ms) => write_ms(w, ms)?,
        Data::Sid(s) => write_sid(w, s)?,
        Data::SidMac { sid, mac } => write_sid_mac(w, sid, mac)?,
        Data::Comdcb(b) => w.bytes(b),
        Data::Rcsd(cols) => write_rcsd(w, cols)?,
    }
    Ok(())
}
