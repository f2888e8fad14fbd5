//! DL/T 698.45 link frames:
//! `[FE..] 68 L(2, LE) C AF SA(1..16) CA HCS(2, LE) user-data FCS(2, LE) 16`.
//!
//! L counts the bytes between `68` and `16` (bits 14-15 reserved, rejected when set); HCS is
//! CRC-16/X-25 over L..CA, FCS over L..the last user-data byte (HCS included), both over the
//! bytes as sent. With SC set in C, every user-data byte (a fragment's format word included)
//! is sent +0x33; [`Frame::data`] holds them as meant. [`scan`] checks the header as soon as
//! it is complete, so a forged length never makes a reader wait, and resynchronises one byte
//! on after any failure.

use std::fmt;

use super::error::Dlt698Error;

/// CRC-16/X-25 (the `crc` crate's CRC_16_IBM_SDLC: poly 0x1021 reflected, init and xorout
/// 0xFFFF; check("123456789") = 0x906E).
pub const X25: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_IBM_SDLC);

/// The largest L the 14-bit field allows.
pub const MAX_L: usize = 0x3FFF;

/// SA address type, AF bits 6-7.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum AddressKind {
    Single,
    Wildcard,
    Group,
    Broadcast,
}

impl AddressKind {
    pub fn name(self) -> &'static str {
        match self {
            AddressKind::Single => "single",
            AddressKind::Wildcard => "wildcard",
            AddressKind::Group => "group",
            AddressKind::Broadcast => "broadcast",
        }
    }
}

/// The server address (SA) with its flags. `bytes` are in printed order, most significant
/// first (the wire has them reversed): two BCD digits a byte, an `A` digit a wildcard.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ServerAddress {
    pub kind: AddressKind,
    /// Logical address 0..3 (AF bits 4-5).
    pub logical: u8,
    pub bytes: Vec<u8>,
}

impl ServerAddress {
    /// A single meter's address as printed on its nameplate.
    pub fn single(printed: &str) -> Result<ServerAddress, Dlt698Error> {
        let mut a: ServerAddress = printed.parse()?;
        a.kind = AddressKind::Single;
        Ok(a)
    }

    /// The wildcard address of `len` bytes (`AA…`), to read 4001 on a point-to-point line.
    pub fn wildcard(len: usize) -> ServerAddress {
        ServerAddress {
            kind: AddressKind::Wildcard,
            logical: 0,
            bytes: vec![0xAA; len.clamp(1, 16)],
        }
    }

    /// The broadcast address (`AF` = C0, `SA` = AA).
    pub fn broadcast() -> ServerAddress {
        ServerAddress {
            kind: AddressKind::Broadcast,
            logical: 0,
            bytes: vec![0xAA],
        }
    }

    /// The AF byte.
    pub fn flags(&self) -> u8 {
        let kind = match self.kind {
            AddressKind::Single => 0,
            AddressKind::Wildcard => 1,
            AddressKind::Group => 2,
            AddressKind::Broadcast => 3,
        };
        kind << 6 | (self.logical & 3) << 4 | (self.bytes.len().clamp(1, 16) as u8 - 1)
    }

    /// Does a reply from `real` answer a request to `self`? Wildcard digits (`A`) match any.
    pub fn matches(&self, real: &ServerAddress) -> bool {
        match self.kind {
            AddressKind::Single | AddressKind::Wildcard => {
                self.bytes.len() == real.bytes.len()
                    && self.bytes.iter().zip(&real.bytes).all(|(w, r)| {
                        (w >> 4 == 0xA || w >> 4 == r >> 4)
                            && (w & 0xF == 0xA || w & 0xF == r & 0xF)
                    })
            }
            AddressKind::Group | AddressKind::Broadcast => true,
        }
    }

    /// Frames to group and broadcast addresses get no reply.
    pub fn expects_reply(&self) -> bool {
        matches!(self.kind, AddressKind::Single | AddressKind::Wildcard)
    }
}

impl fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.bytes {
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerAddress({self}, {}", self.kind.name())?;
        if self.logical != 0 {
            write!(f, ", logical {}", self.logical)?;
        }
        write!(f, ")")
    }
}

impl std::str::FromStr for ServerAddress {
    type Err = Dlt698Error;
    /// 1 to 32 digits as printed; an odd count gets a leading 0. `A` digits are wildcards
    /// (and make the address a wildcard one).
    fn from_str(s: &str) -> Result<ServerAddress, Dlt698Error> {
        let t = s.trim().to_ascii_uppercase();
        if t.is_empty() || t.len() > 32 || !t.chars().all(|c| c.is_ascii_digit() || c == 'A') {
            return Err(Dlt698Error::BadAddress(s.to_string()));
        }
        let padded = if t.len() % 2 == 1 { format!("0{t}") } else { t };
        let nibble = |c: u8| if c == b'A' { 0xA } else { c - b'0' };
        let bytes: Vec<u8> = padded
            .as_bytes()
            .chunks(2)
            .map(|p| nibble(p[0]) << 4 | nibble(p[1]))
            .collect();
        let kind = if padded.contains('A') {
            AddressKind::Wildcard
        } else {
            AddressKind::Single
        };
        Ok(ServerAddress {
            kind,
            logical: 0,
            bytes,
        })
    }
}

/// The control byte C.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Control(pub u8);

impl Control {
    /// A client request (DIR 0, PRM 1), user data.
    pub const REQUEST: Control = Control(0x43);
    /// A server's reply (DIR 1, PRM 1), user data.
    pub const REPLY: Control = Control(0xC3);

    /// DIR: sent by the server (meter, terminal).
    pub fn from_server(self) -> bool {
        self.0 & 0x80 != 0
    }
    /// PRM: the exchange was started by the client.
    pub fn client_started(self) -> bool {
        self.0 & 0x40 != 0
    }
    /// The user data is a link fragment.
    pub fn is_fragment(self) -> bool {
        self.0 & 0x20 != 0
    }
    /// SC: user data sent +0x33.
    pub fn scrambled(self) -> bool {
        self.0 & 0x08 != 0
    }
    /// 1 link management, 3 user data.
    pub fn function(self) -> u8 {
        self.0 & 0x07
    }

    fn check(self) -> Result<(), Dlt698Error> {
        let why = if self.0 & 0x10 != 0 {
            "reserved bit 4 is set"
        } else if !matches!(self.function(), 1 | 3) {
            "function is neither 1 (link management) nor 3 (user data)"
        } else {
            return Ok(());
        };
        Err(Dlt698Error::BadControl {
            control: self.0,
            why,
        })
    }

    pub fn describe(self) -> String {
        let mut s = format!(
            "DIR={} PRM={} {}",
            u8::from(self.from_server()),
            u8::from(self.client_started()),
            match (self.from_server(), self.client_started()) {
                (false, true) => "client request",
                (true, true) => "server response",
                (true, false) => "server-initiated",
                (false, false) => "client answer to server-initiated",
            }
        );
        s += if self.function() == 1 {
            ", link management"
        } else {
            ", user data"
        };
        if self.is_fragment() {
            s += ", fragment";
        }
        if self.scrambled() {
            s += ", SC(+33H)";
        }
        s
    }
}

/// Link fragment type, format-word bits 14-15.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum FragmentKind {
    First,
    Last,
    Confirm,
    Middle,
}

impl FragmentKind {
    pub fn name(self) -> &'static str {
        match self {
            FragmentKind::First => "first",
            FragmentKind::Last => "last",
            FragmentKind::Confirm => "confirm",
            FragmentKind::Middle => "middle",
        }
    }
}

/// The 2-byte little-endian format word in front of a fragment's data.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct FragmentWord {
    /// 0..4095, wrapping.
    pub seq: u16,
    pub kind: FragmentKind,
    /// Bits 12-13, 0 by the standard; kept (not rejected: captures have them set) so the
    /// frame re-encodes to the same bytes.
    pub reserved: u8,
}

impl FragmentWord {
    pub fn from_word(w: u16) -> FragmentWord {
        FragmentWord {
            seq: w & 0x0FFF,
            reserved: ((w >> 12) & 3) as u8,
            kind: match w >> 14 {
                0 => FragmentKind::First,
                1 => FragmentKind::Last,
                2 => FragmentKind::Confirm,
                _ => FragmentKind::Middle,
            },
        }
    }
    pub fn word(self) -> u16 {
        let kind = match self.kind {
            FragmentKind::First => 0,
            FragmentKind::Last => 1,
            FragmentKind::Confirm => 2,
            FragmentKind::Middle => 3,
        };
        kind << 14 | u16::from(self.reserved & 3) << 12 | (self.seq & 0x0FFF)
    }
}

/// A frame. `data` is the user data as meant (SC already undone), without a fragment's
/// format word: an APDU, or a slice of one.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Frame {
    pub control: Control,
    pub address: ServerAddress,
    /// CA, the client address (0: don't care). Replies need not echo it.
    pub client: u8,
    pub fragment: Option<FragmentWord>,
    pub data: Vec<u8>,
}

impl Frame {
    /// A client request carrying `apdu` to `address`.
    pub fn request(address: ServerAddress, client: u8, apdu: Vec<u8>) -> Frame {
        Frame {
            control: Control::REQUEST,
            address,
            client,
            fragment: None,
            data: apdu,
        }
    }

    /// The frame on the wire with `preamble` FE bytes in front (serial masters send 4).
    pub fn encode(&self, preamble: usize) -> Result<Vec<u8>, Dlt698Error> {
        let sa = self.address.bytes.len();
        if sa == 0 || sa > 16 {
            return Err(Dlt698Error::BadAddress(self.address.to_string()));
        }
        let mut user = Vec::with_capacity(self.data.len() + 2);
        if let Some(w) = self.fragment {
            user.extend_from_slice(&w.word().to_le_bytes());
        }
        user.extend_from_slice(&self.data);
        if self.control.scrambled() {
            for b in &mut user {
                *b = b.wrapping_add(0x33);
            }
        }
        let l = 9 + sa + user.len();
        if l > MAX_L {
            return Err(Dlt698Error::TooLong {
                what: "frame",
                len: l + 2,
            });
        }
        let mut out = vec![0xFE; preamble];
        let start = out.len();
        out.push(0x68);
        out.extend_from_slice(&(l as u16).to_le_bytes());
        out.push(self.control.0);
        out.push(self.address.flags());
        out.extend(self.address.bytes.iter().rev());
        out.push(self.client);
        let hcs = X25.checksum(&out[start + 1..]);
        out.extend_from_slice(&hcs.to_le_bytes());
        out.extend_from_slice(&user);
        let fcs = X25.checksum(&out[start + 1..]);
        out.extend_from_slice(&fcs.to_le_bytes());
        out.push(0x16);
        Ok(out)
    }
}

/// What [`scan`] found at the front of a buffer.
#[derive(Debug)]
pub enum Scan {
    /// A frame, and how many bytes (junk and preamble included) it took from the buffer.
    Frame(Frame, usize),
    /// No complete frame yet; `skip` leading bytes are junk and can be dropped.
    Incomplete { skip: usize },
    /// Bytes that looked like a frame start but are not one: drop `skip` bytes and scan on.
    Invalid { skip: usize, error: Dlt698Error },
}

/// Find the first frame in `buf`: junk before it (FE preamble, noise, a half frame) is skipped;
/// a candidate that fails a check slides one byte and tries again.
pub fn scan(buf: &[u8]) -> Scan {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] != 0x68 {
            i += 1;
            continue;
        }
        return match frame_at(&buf[i..]) {
            Ok((f, n)) => Scan::Frame(f, i + n),
            Err(Dlt698Error::Truncated { .. }) => Scan::Incomplete { skip: i },
            Err(error) => Scan::Invalid { skip: i + 1, error },
        };
    }
    Scan::Incomplete { skip: buf.len() }
}

/// Exactly one frame, with any number of FE in front and nothing after it; returns the frame
/// and the preamble length.
pub fn parse(bytes: &[u8]) -> Result<(Frame, usize), Dlt698Error> {
    let pre = bytes.iter().take_while(|b| **b == 0xFE).count();
    match bytes.get(pre) {
        Some(0x68) => {}
        Some(&found) => return Err(Dlt698Error::NoStart { offset: pre, found }),
        None => {
            return Err(Dlt698Error::Truncated {
                have: bytes.len(),
                need: pre + 1,
            })
        }
    }
    let (f, n) = frame_at(&bytes[pre..])?;
    if pre + n != bytes.len() {
        return Err(Dlt698Error::TrailingBytes {
            extra: bytes.len() - pre - n,
        });
    }
    Ok((f, pre))
}

/// The frame starting with the `68` at `f[0]` and its length. `Truncated` only once the
/// header checked out (or is itself incomplete).
fn frame_at(f: &[u8]) -> Result<(Frame, usize), Dlt698Error> {
    let short = |need: usize| Dlt698Error::Truncated {
        have: f.len(),
        need,
    };
    if f.len() < 5 {
        return Err(short(5));
    }
    let word = u16::from_le_bytes([f[1], f[2]]);
    if word & 0xC000 != 0 {
        return Err(Dlt698Error::LengthReserved { word });
    }
    let sa_len = usize::from(f[4] & 0x0F) + 1;
    let header = 8 + sa_len; // 68 L L C AF SA.. CA HCS HCS
    if f.len() < header {
        return Err(short(header));
    }
    let got = u16::from_le_bytes([f[header - 2], f[header - 1]]);
    let expected = X25.checksum(&f[1..header - 2]);
    if got != expected {
        return Err(Dlt698Error::BadHcs { expected, got });
    }
    let l = usize::from(word);
    if l < 9 + sa_len {
        return Err(Dlt698Error::LengthTooSmall { len: l, sa_len });
    }
    let total = l + 2;
    if f.len() < total {
        return Err(short(total));
    }
    if f[total - 1] != 0x16 {
        return Err(Dlt698Error::BadEnd {
            offset: total - 1,
            found: f[total - 1],
        });
    }
    let got = u16::from_le_bytes([f[total - 3], f[total - 2]]);
    let expected = X25.checksum(&f[1..total - 3]);
    if got != expected {
        return Err(Dlt698Error::BadFcs { expected, got });
    }
    let control = Control(f[3]);
    control.check()?;
    let kind = match f[4] >> 6 {
        0 => AddressKind::Single,
        1 => AddressKind::Wildcard,
        2 => AddressKind::Group,
        _ => AddressKind::Broadcast,
    };
    let address = ServerAddress {
        kind,
        logical: (f[4] >> 4) & 3,
        bytes: f[5..5 + sa_len].iter().rev().copied().collect(),
    };
    let mut user = f[header..total - 3].to_vec();
    if control.scrambled() {
        for b in &mut user {
            *b = b.wrapping_sub(0x33);
        }
    }
    let fragment = if control.is_fragment() {
        if user.len() < 2 {
            return Err(Dlt698Error::NoFragmentWord);
        }
        let w = FragmentWord::from_word(u16::from_le_bytes([user[0], user[1]]));
        user.drain(..2);
        Some(w)
    } else {
        None
    };
    Ok((
        Frame {
            control,
            address,
            client: f[5 + sa_len],
            fragment,
            data: user,
        },
        total,
    ))
}

/// Collects link fragments into the APDU they carry. Feed every fragment frame's word and
/// data in order; a confirm to send back is returned for first and middle fragments.
#[derive(Debug, Default)]
pub struct Reassembly {
    next: Option<u16>,
    apdu: Vec<u8>,
}

/// What one fragment did to a [`Reassembly`].
#[derive(Debug, PartialEq, Eq)]
pub enum Reassembled {
    /// More to come: answer with this confirm word.
    Confirm(FragmentWord),
    /// The whole APDU.
    Done(Vec<u8>),
}

impl Reassembly {
    /// At most this many bytes are gathered (a hostile peer cannot grow the buffer without
    /// bound): the largest APDU a CONNECT negotiates is 64 KiB.
    pub const LIMIT: usize = 65_536;

    pub fn push(&mut self, word: FragmentWord, data: &[u8]) -> Result<Reassembled, Dlt698Error> {
        let out_of_order = |expected: u16| Dlt698Error::OutOfRange {
            what: "fragment sequence",
            offset: 0,
            value: u32::from(word.seq) | u32::from(expected) << 16,
        };
        match word.kind {
            FragmentKind::First => {
                self.apdu.clear();
            }
            FragmentKind::Middle | FragmentKind::Last => match self.next {
                Some(n) if n == word.seq => {}
                Some(n) => return Err(out_of_order(n)),
                None => return Err(out_of_order(0)),
            },
            FragmentKind::Confirm => {
                return Err(Dlt698Error::UnknownChoice {
                    what: "fragment to reassemble (a confirm carries no data)",
                    choice: 2,
                    offset: 0,
                })
            }
        }
        if self.apdu.len() + data.len() > Self::LIMIT {
            self.next = None;
            return Err(Dlt698Error::TooLong {
                what: "reassembled APDU",
                len: self.apdu.len() + data.len(),
            });
        }
        self.apdu.extend_from_slice(data);
        if word.kind == FragmentKind::Last {
            self.next = None;
            return Ok(Reassembled::Done(std::mem::take(&mut self.apdu)));
        }
        self.next = Some((word.seq + 1) & 0x0FFF);
        Ok(Reassembled::Confirm(FragmentWord {
            seq: word.seq,
            kind: FragmentKind::Confirm,
            reserved: 0,
        }))
    }
}
