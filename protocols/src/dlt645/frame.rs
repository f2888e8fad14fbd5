//! DL/T 645 frames (2007 and 1997 share the framing):
//! `[FE..] 68 A0..A5 68 C L D0..D(L-1) CS 16`, address low byte first, every data byte +0x33
//! on the wire, CS = sum of the bytes from the first 68 through the data, mod 256.
//!
//! The receiver never ends a frame at the first 0x16 and never drops FE inside one: the length
//! field decides. [`scan`] finds frames in a byte stream and resynchronises on junk.

use std::fmt;

use super::error::Dlt645Error;

/// A meter address in wire order (A0 first). Printed most significant byte first, as on the
/// meter's nameplate; `AA` bytes are wildcards.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Address(pub [u8; 6]);

impl Address {
    pub const BROADCAST: Address = Address([0x99; 6]);
    pub const WILDCARD: Address = Address([0xAA; 6]);

    /// True if every byte is a wildcard or a broadcast byte.
    pub fn is_broadcast(&self) -> bool {
        *self == Address::BROADCAST
    }

    /// Does a reply from `real` answer a request sent to `self` (which may hold AA wildcards)?
    pub fn matches(&self, real: &Address) -> bool {
        self.0
            .iter()
            .zip(real.0.iter())
            .all(|(w, r)| *w == 0xAA || w == r)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0.iter().rev() {
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

impl std::str::FromStr for Address {
    type Err = Dlt645Error;
    /// Up to 12 digits as printed (shorter numbers are padded with leading zeros); `AA`
    /// pairs are wildcards.
    fn from_str(s: &str) -> Result<Address, Dlt645Error> {
        let bad = || Dlt645Error::BadAddress(s.to_string());
        let t = s.trim();
        if t.is_empty()
            || t.len() > 12
            || !t
                .chars()
                .all(|c| c.is_ascii_digit() || c == 'A' || c == 'a')
        {
            return Err(bad());
        }
        let padded = format!("{t:0>12}").to_ascii_uppercase();
        let mut out = [0u8; 6];
        for (i, pair) in padded.as_bytes().chunks(2).enumerate() {
            let b = match pair {
                [b'A', b'A'] => 0xAA,
                [h, l] if h.is_ascii_digit() && l.is_ascii_digit() => (h - b'0') << 4 | (l - b'0'),
                _ => return Err(bad()),
            };
            out[5 - i] = b;
        }
        Ok(Address(out))
    }
}

/// The control byte.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Control(pub u8);

impl Control {
    /// D7: set in replies from the meter.
    pub fn is_reply(self) -> bool {
        self.0 & 0x80 != 0
    }
    /// D6: an abnormal reply; the data is one error byte.
    pub fn is_abnormal(self) -> bool {
        self.0 & 0x40 != 0
    }
    /// D5: more frames follow (read follow-up with 0x12).
    pub fn has_follow_up(self) -> bool {
        self.0 & 0x20 != 0
    }
    /// D4..D0.
    pub fn function(self) -> u8 {
        self.0 & 0x1F
    }
}

/// A frame; `data` is the data field with 0x33 already subtracted.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Frame {
    pub address: Address,
    pub control: Control,
    pub data: Vec<u8>,
}

impl Frame {
    pub fn new(address: Address, control: u8, data: Vec<u8>) -> Frame {
        Frame {
            address,
            control: Control(control),
            data,
        }
    }

    /// The frame on the wire, with `preamble` FE bytes in front (masters usually send 4).
    pub fn encode(&self, preamble: usize) -> Result<Vec<u8>, Dlt645Error> {
        if self.data.len() > 255 {
            return Err(Dlt645Error::TooLong {
                len: self.data.len(),
            });
        }
        let mut out = vec![0xFE; preamble];
        let start = out.len();
        out.push(0x68);
        out.extend_from_slice(&self.address.0);
        out.push(0x68);
        out.push(self.control.0);
        out.push(self.data.len() as u8);
        out.extend(self.data.iter().map(|b| b.wrapping_add(0x33)));
        let cs = checksum(&out[start..]);
        out.push(cs);
        out.push(0x16);
        Ok(out)
    }
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
}

/// Parse exactly one frame (after any number of FE bytes), reporting precisely what is wrong.
/// Returns the frame and the number of FE bytes before it.
pub fn parse(bytes: &[u8]) -> Result<(Frame, usize), Dlt645Error> {
    let pre = bytes.iter().take_while(|b| **b == 0xFE).count();
    let f = &bytes[pre..];
    let need_header = 10;
    let at = |i: usize| f.get(i).copied();
    match at(0) {
        Some(0x68) => {}
        Some(found) => return Err(Dlt645Error::NoStart { offset: pre, found }),
        None => {
            return Err(Dlt645Error::Truncated {
                have: 0,
                need: need_header,
            })
        }
    }
    match at(7) {
        Some(0x68) => {}
        Some(found) => {
            return Err(Dlt645Error::NoSecondStart {
                offset: pre + 7,
                found,
            })
        }
        None => {
            return Err(Dlt645Error::Truncated {
                have: f.len(),
                need: need_header,
            })
        }
    }
    let Some(len) = at(9).map(usize::from) else {
        return Err(Dlt645Error::Truncated {
            have: f.len(),
            need: need_header,
        });
    };
    let need = 12 + len;
    if f.len() < need {
        return Err(Dlt645Error::Truncated {
            have: f.len(),
            need,
        });
    }
    let expected = checksum(&f[..10 + len]);
    let got = f[10 + len];
    if expected != got {
        return Err(Dlt645Error::BadChecksum { expected, got });
    }
    if f[11 + len] != 0x16 {
        return Err(Dlt645Error::BadEnd {
            offset: pre + 11 + len,
            found: f[11 + len],
        });
    }
    if f.len() > need {
        return Err(Dlt645Error::TrailingBytes {
            extra: f.len() - need,
        });
    }
    let mut address = [0u8; 6];
    address.copy_from_slice(&f[1..7]);
    Ok((
        Frame {
            address: Address(address),
            control: Control(f[8]),
            data: f[10..10 + len]
                .iter()
                .map(|b| b.wrapping_sub(0x33))
                .collect(),
        },
        pre,
    ))
}

/// What the front of a receive buffer holds.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Scan {
    /// A frame, and how many bytes (junk and preamble included) it took from the buffer.
    Frame(Frame, usize),
    /// No complete frame yet; `skip` leading bytes are junk and can be dropped.
    Incomplete { skip: usize },
    /// Bytes that looked like a frame start but are not one: drop `skip` bytes and scan on.
    Invalid { skip: usize, error: Dlt645Error },
}

/// Find the first frame in `buf`. Junk before it (noise, a half frame) is skipped; a candidate
/// with a bad checksum or end byte slides one byte and tries again.
pub fn scan(buf: &[u8]) -> Scan {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] != 0x68 {
            i += 1;
            continue;
        }
        let f = &buf[i..];
        if f.len() < 10 {
            return Scan::Incomplete { skip: i };
        }
        if f[7] != 0x68 {
            i += 1;
            continue;
        }
        let need = 12 + usize::from(f[9]);
        if f.len() < need {
            return Scan::Incomplete { skip: i };
        }
        return match parse(&f[..need]) {
            Ok((frame, _)) => Scan::Frame(frame, i + need),
            Err(error) => Scan::Invalid { skip: i + 1, error },
        };
    }
    Scan::Incomplete { skip: buf.len() }
}

/// Parse a hex string with any spacing ("68 AA AA …" or "68AAAA…").
pub fn from_hex(s: &str) -> Result<Vec<u8>, Dlt645Error> {
    let clean: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':' && *c != '-')
        .collect();
    if !clean.len().is_multiple_of(2) {
        return Err(Dlt645Error::Hex(format!(
            "odd number of hex digits in {s:?}"
        )));
    }
    (0..clean.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&clean[i..i + 2], 16)
                .map_err(|_| Dlt645Error::Hex(format!("{:?} in {s:?}", &clean[i..i + 2])))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_printed_address_is_reversed_on_the_wire() {
        let a: Address = "123456789012".parse().unwrap();
        assert_eq!(a.0, [0x12, 0x90, 0x78, 0x56, 0x34, 0x12]);
        assert_eq!(a.to_string(), "123456789012");
        let short: Address = "1111".parse().unwrap();
        assert_eq!(short.to_string(), "000000001111");
        let wild: Address = "AAAAAA789012".parse().unwrap();
        assert!(wild.matches(&a));
        assert!(!wild.matches(&"123456789013".parse().unwrap()));
        assert!("12345678901X".parse::<Address>().is_err());
    }

    #[test]
    fn a_frame_is_never_ended_at_an_inner_16_or_fe() {
        // Data containing 0x16 and 0xFE after +0x33 (E3 - 33 = B0; 16 on the wire = E3 data).
        let f = Frame::new(
            "161616161616".parse().unwrap(),
            0x91,
            vec![0xE3, 0xCB, 0x16, 0xFE],
        );
        let bytes = f.encode(2).unwrap();
        assert_eq!(parse(&bytes).unwrap().0, f);
        assert_eq!(scan(&bytes), Scan::Frame(f, bytes.len()));
    }

    #[test]
    fn an_echo_of_our_request_and_noise_come_before_the_reply() {
        let req = Frame::new("123456789012".parse().unwrap(), 0x11, vec![0, 0, 1, 0]);
        let rep = Frame::new(
            "123456789012".parse().unwrap(),
            0x91,
            vec![0, 0, 1, 0, 0x78, 0x56, 0x34, 0x12],
        );
        let mut bus = vec![0x00, 0x68, 0x13];
        bus.extend(req.encode(4).unwrap());
        bus.extend([0xFF, 0x68]);
        bus.extend(rep.encode(4).unwrap());
        let mut frames = Vec::new();
        let mut buf = &bus[..];
        loop {
            match scan(buf) {
                Scan::Frame(f, n) => {
                    frames.push(f);
                    buf = &buf[n..];
                }
                Scan::Invalid { skip, .. } => buf = &buf[skip..],
                Scan::Incomplete { .. } => break,
            }
        }
        assert_eq!(frames, [req, rep]);
    }

    fn any_frame() -> impl Strategy<Value = Frame> {
        (
            any::<[u8; 6]>(),
            any::<u8>(),
            proptest::collection::vec(any::<u8>(), 0..60),
        )
            .prop_map(|(a, c, d)| Frame::new(Address(a), c, d))
    }

    proptest! {
        #[test]
        fn frames_round_trip(f in any_frame(), pre in 0usize..5) {
            let bytes = f.encode(pre).unwrap();
            prop_assert_eq!(parse(&bytes), Ok((f.clone(), pre)));
        }

        #[test]
        fn a_frame_is_found_in_random_junk(f in any_frame(), before in proptest::collection::vec(any::<u8>(), 0..40), after in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut bus = before;
            bus.extend(f.encode(4).unwrap());
            bus.extend(after);
            let mut buf = &bus[..];
            let mut found = false;
            for _ in 0..1000 {
                match scan(buf) {
                    Scan::Frame(g, n) => {
                        if g == f { found = true; break; }
                        buf = &buf[n..];
                    }
                    Scan::Invalid { skip, .. } => buf = &buf[skip..],
                    // No more bytes will come: a master's inter-byte timeout drops the candidate.
                    Scan::Incomplete { skip } if skip < buf.len() => buf = &buf[skip + 1..],
                    Scan::Incomplete { .. } => break,
                }
            }
            prop_assert!(found);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&bytes);
            let _ = scan(&bytes);
        }
    }
}
