//! Both ends of a DL/T 645-2007 read, as pure state machines.
//!
//! [`ReadSession`] is the master: it builds the read request, checks that a reply answers it,
//! and reassembles follow-up frames (C=B1 → 0x12 with SEQ 1, 2, … → C=92). [`SimMeter`] is a
//! meter for the simulator: it answers reads (single identifiers and blocks), follow-ups,
//! read-address and ignores what is not addressed to it, as real meters do.

use std::collections::HashMap;

use super::{
    di::{self, Version},
    frame::{Address, Frame},
};

/// What one identifier can carry: its value bytes at most. A meter may split them into
/// follow-up frames, each with at least one byte, and never into more than [`MAX_FRAMES`]:
/// beyond either bound a meter is misbehaving, not sending a long answer, and the read fails
/// instead of holding the line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    pub bytes: usize,
}

/// Most frames one read may take, follow-ups included. Catalogue values are a few bytes; a
/// 2007 frame carries up to 200, so 16 frames leave room for any split a meter makes.
pub const MAX_FRAMES: usize = 16;

impl Capacity {
    /// An identifier the catalogue does not know (a load record, a vendor extension): up to
    /// [`MAX_FRAMES`] full frames (a 2007 frame carries at most 200 data bytes).
    pub const UNKNOWN: Capacity = Capacity {
        bytes: MAX_FRAMES * 200,
    };

    /// The most frames a read of this capacity may take.
    pub fn frames(self) -> usize {
        self.bytes.clamp(1, MAX_FRAMES)
    }

    /// What `di` can carry, from the catalogue: one item, a repeating item (a total and up to
    /// 63 tariffs), or a block of items.
    pub fn of(version: Version, di: u32) -> Capacity {
        let item_bytes = |i: di::Item| i.format.byte_len() * if i.repeats { 64 } else { 1 };
        if let Some(i) = di::lookup(version, di) {
            return Capacity {
                bytes: item_bytes(i),
            };
        }
        let bytes: usize = (0..64)
            .map_while(|k| di::block_member(version, di, k).and_then(|m| di::lookup(version, m)))
            .map(item_bytes)
            .sum();
        if bytes == 0 {
            Capacity::UNKNOWN
        } else {
            Capacity { bytes }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this frame next (a follow-up request).
    Send(Frame),
    /// The value bytes of the identifier, reassembled.
    Done(Vec<u8>),
    /// The meter refused: the error byte of its abnormal reply.
    Refused(u8),
    /// The frame does not answer this read (an echo of our request, another meter, another
    /// identifier): keep listening.
    Ignore,
    /// Too many follow-ups, or a reply that makes no sense for this read.
    Failed(String),
}

/// One read of one identifier from one meter (2007).
#[derive(Clone, Debug)]
pub struct ReadSession {
    version: Version,
    address: Address,
    di: u32,
    seq: u8,
    value: Vec<u8>,
    capacity: Capacity,
}

impl ReadSession {
    /// The session and its first request (2007).
    pub fn new(address: Address, di: u32) -> (ReadSession, Frame) {
        ReadSession::for_version(Version::V2007, address, di)
    }

    /// The session and its first request: 2007 reads with C=11 and a 4-byte DI, 1997 with
    /// C=01 and a 2-byte DI.
    pub fn for_version(version: Version, address: Address, di: u32) -> (ReadSession, Frame) {
        let s = ReadSession {
            version,
            address,
            di,
            seq: 0,
            value: Vec::new(),
            capacity: Capacity::of(version, di),
        };
        let req = super::request::read(version, address, di);
        (s, req)
    }

    /// Bound the read by `capacity` instead of what the catalogue says of the identifier.
    pub fn with_capacity(mut self, capacity: Capacity) -> ReadSession {
        self.capacity = capacity;
        self
    }

    /// The most frames this read may take: the master's time budget is this many timeouts.
    pub fn max_frames(&self) -> usize {
        self.capacity.frames()
    }

    fn read_fn(&self) -> u8 {
        match self.version {
            Version::V2007 => 0x11,
            Version::V1997 => 0x01,
        }
    }

    fn di_bytes(&self) -> Vec<u8> {
        match self.version {
            Version::V2007 => self.di.to_le_bytes().to_vec(),
            Version::V1997 => (self.di as u16).to_le_bytes().to_vec(),
        }
    }

    /// What a received frame means for this read.
    pub fn on_frame(&mut self, f: &Frame) -> Step {
        let c = f.control;
        if !c.is_reply() || !self.address.matches(&f.address) {
            return Step::Ignore;
        }
        let expected_fn = if self.seq == 0 {
            self.read_fn()
        } else {
            self.read_fn() + 1
        };
        if c.function() != expected_fn {
            return Step::Ignore;
        }
        if c.is_abnormal() {
            return Step::Refused(f.data.first().copied().unwrap_or(0));
        }
        let di = self.di_bytes();
        let Some(di_bytes) = f.data.get(..di.len()) else {
            return Step::Failed(format!("reply of {} bytes has no identifier", f.data.len()));
        };
        if di_bytes != di.as_slice() {
            return Step::Ignore;
        }
        let mut body = &f.data[di.len()..];
        if self.seq > 0 {
            // Follow-up replies end with their SEQ.
            match body.split_last() {
                Some((&seq, rest)) if seq == self.seq => body = rest,
                _ => return Step::Failed(format!("follow-up reply without SEQ {}", self.seq)),
            }
        }
        self.value.extend_from_slice(body);
        if self.value.len() > self.capacity.bytes {
            return Step::Failed(format!(
                "{} bytes for {:08X}, which carries at most {}",
                self.value.len(),
                self.di,
                self.capacity.bytes
            ));
        }
        if c.has_follow_up() {
            let frames = usize::from(self.seq) + 1;
            if frames >= self.max_frames() || self.value.len() >= self.capacity.bytes {
                return Step::Failed(format!(
                    "meter announces more frames for {:08X} after {frames} frame(s) and {} bytes, more than it can carry ({} bytes)",
                    self.di,
                    self.value.len(),
                    self.capacity.bytes
                ));
            }
            self.seq += 1;
            return Step::Send(super::request::read_follow_up(
                self.version,
                self.address,
                self.di,
                self.seq,
            ));
        }
        Step::Done(std::mem::take(&mut self.value))
    }
}

/// A simulated 2007 meter. `values` holds each identifier's value bytes (already encoded).
#[derive(Clone, Debug)]
pub struct SimMeter {
    pub version: Version,
    pub address: Address,
    pub values: HashMap<u32, Vec<u8>>,
    /// Whether block reads (FF) are answered; if not, they get "no requested data".
    pub blocks: bool,
    /// Value bytes per reply frame; longer values are split into follow-up frames.
    pub max_value_bytes: usize,
    pending: Option<(u32, Vec<u8>)>,
    /// The remote-control password (`PA P0 P1 P2`) the meter accepts for C=1C; `None`:
    /// it has no relay and refuses.
    pub relay_password: Option<[u8; 4]>,
    /// Its supply relay, as status word 3 (04000503) reports it.
    pub relay: super::request::RelayState,
}

impl SimMeter {
    pub fn new(address: Address) -> SimMeter {
        SimMeter {
            version: Version::V2007,
            address,
            values: HashMap::new(),
            blocks: true,
            max_value_bytes: 200,
            pending: None,
            relay_password: None,
            relay: super::request::RelayState {
                open: false,
                trip_commanded: false,
                alarm: false,
            },
        }
    }

    /// A meter with a supply relay that obeys C=1C given this password.
    pub fn with_relay(mut self, password: [u8; 4]) -> SimMeter {
        self.relay_password = Some(password);
        self.values.insert(
            super::request::STATUS_WORD_3,
            self.relay.status_word().to_vec(),
        );
        self
    }

    /// The value bytes of `di`, a block concatenated from its members.
    fn value_of(&self, di: u32) -> Option<Vec<u8>> {
        if let Some(v) = self.values.get(&di) {
            return Some(v.clone());
        }
        if !self.blocks {
            return None;
        }
        let mut out = Vec::new();
        let mut k = 0;
        while let Some(member) = di::block_member(self.version, di, k) {
            match self.values.get(&member) {
                Some(v) => out.extend_from_slice(v),
                None => break,
            }
            k += 1;
        }
        (!out.is_empty()).then_some(out)
    }

    fn reply(&self, control: u8, data: Vec<u8>) -> Option<Frame> {
        Some(Frame::new(self.address, control, data))
    }

    /// The reply to a request, or `None` (not for this meter, a broadcast, or nothing to say).
    pub fn respond(&mut self, req: &Frame) -> Option<Frame> {
        if req.control.is_reply()
            || req.address.is_broadcast()
            || !req.address.matches(&self.address)
        {
            return None;
        }
        let (read, n_di) = match self.version {
            Version::V2007 => (0x11, 4),
            Version::V1997 => (0x01, 2),
        };
        let di_of = |d: &[u8]| d.iter().rev().fold(0u32, |a, b| a << 8 | u32::from(*b));
        match req.control.0 {
            0x13 if self.version == Version::V2007 && req.address == Address::WILDCARD => {
                self.reply(0x93, self.address.0.to_vec())
            }
            c if c == read => {
                let d = req.data.get(..n_di)?;
                let di = di_of(d);
                let Some(value) = self.value_of(di) else {
                    return self.reply(read | 0xC0, vec![0x02]);
                };
                let n = value.len().min(self.max_value_bytes);
                let mut data = d.to_vec();
                data.extend_from_slice(&value[..n]);
                if n < value.len() {
                    self.pending = Some((di, value[n..].to_vec()));
                    self.reply(read | 0xA0, data)
                } else {
                    self.pending = None;
                    self.reply(read | 0x80, data)
                }
            }
            c if c == read + 1 => {
                let d = req.data.get(..n_di + 1)?;
                let di = di_of(&d[..n_di]);
                let seq = d[n_di];
                let Some((_, rest)) = self.pending.take().filter(|(p, _)| *p == di) else {
                    return self.reply((read + 1) | 0xC0, vec![0x01]);
                };
                let n = rest.len().min(self.max_value_bytes);
                let mut data = d[..n_di].to_vec();
                data.extend_from_slice(&rest[..n]);
                data.push(seq);
                if n < rest.len() {
                    self.pending = Some((di, rest[n..].to_vec()));
                    self.reply((read + 1) | 0xA0, data)
                } else {
                    self.reply((read + 1) | 0x80, data)
                }
            }
            0x1C if self.version == Version::V2007 => {
                // PA P0 P1 P2 C0..C3 N1 N2 + 6 bytes of validity.
                let (Some(pw), Some(&n1)) = (self.relay_password, req.data.get(8)) else {
                    return self.reply(0xDC, vec![0x01]);
                };
                if req.data.get(..4) != Some(&pw[..]) {
                    // Error bit 2: password error / unauthorized.
                    return self.reply(0xDC, vec![0x04]);
                }
                match n1 {
                    0x1A => {
                        self.relay.open = true;
                        self.relay.trip_commanded = true;
                    }
                    0x1B => {
                        // Close permitted: the simulated customer closes it at once.
                        self.relay.open = false;
                        self.relay.trip_commanded = false;
                    }
                    0x2A => self.relay.alarm = true,
                    0x2B => self.relay.alarm = false,
                    _ => return self.reply(0xDC, vec![0x01]),
                }
                self.values.insert(
                    super::request::STATUS_WORD_3,
                    self.relay.status_word().to_vec(),
                );
                self.reply(0x9C, Vec::new())
            }
            _ => self.reply(req.control.0 | 0xC0, vec![0x01]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlt645::bcd;

    fn meter() -> SimMeter {
        let mut m = SimMeter::new("123456789012".parse().unwrap());
        for (k, v) in [12345.67, 3000.0, 4000.0, 5000.0, 345.67]
            .into_iter()
            .enumerate()
        {
            m.values.insert(
                0x0001_0000 | ((k as u32) << 8),
                bcd::encode(v, 4, 2, false).unwrap(),
            );
        }
        m.values
            .insert(0x0201_0100, bcd::encode(229.7, 2, 1, false).unwrap());
        m
    }

    /// Run a read between a master session and a simulated meter, over encoded bytes.
    fn read(m: &mut SimMeter, address: &str, di: u32) -> (Step, usize) {
        let (mut s, mut req) = ReadSession::new(address.parse().unwrap(), di);
        for frames in 1..=300 {
            let wire = req.encode(4).unwrap();
            let (f, _) = crate::dlt645::frame::parse(&wire).unwrap();
            let Some(reply) = m.respond(&f) else {
                return (Step::Failed("silence".into()), frames);
            };
            let (reply, _) = crate::dlt645::frame::parse(&reply.encode(2).unwrap()).unwrap();
            match s.on_frame(&reply) {
                Step::Send(next) => req = next,
                other => return (other, frames),
            }
        }
        unreachable!()
    }

    #[test]
    fn a_block_split_into_follow_up_frames_is_reassembled() {
        let mut m = meter();
        m.max_value_bytes = 12;
        let (step, frames) = read(&mut m, "123456789012", 0x0001_FF00);
        let Step::Done(bytes) = step else {
            panic!("{step:?}")
        };
        assert_eq!(frames, 2, "B1 then 92");
        let values = di::decode_values(Version::V2007, 0x0001_FF00, &bytes).unwrap();
        let numbers: Vec<String> = values.iter().map(|v| format!("{:?}", v.value)).collect();
        assert_eq!(
            numbers,
            [
                "Number(12345.67)",
                "Number(3000.0)",
                "Number(4000.0)",
                "Number(5000.0)",
                "Number(345.67)"
            ]
        );
    }

    #[test]
    fn what_an_identifier_can_carry_comes_from_the_catalogue() {
        for (di, bytes) in [
            (0x0201_0100, 2),        // one voltage
            (0x0201_FF00, 6),        // the three voltages
            (0x0001_0000, 4),        // forward active energy, total
            (0x0506_0101, 4 * 64),   // a daily freeze's energy: total and tariffs
            (0x0612_3456, 16 * 200), // not in the catalogue
        ] {
            assert_eq!(
                Capacity::of(Version::V2007, di),
                Capacity { bytes },
                "{di:08X}"
            );
        }
    }

    /// A meter that answers every read and follow-up with "more frames follow".
    fn endless(req: &Frame) -> Frame {
        let mut data = req.data[..4].to_vec();
        data.extend_from_slice(&[0x12, 0x34]);
        if req.control.0 == 0x12 {
            data.push(req.data[4]);
        }
        Frame::new(req.address, req.control.0 | 0xA0, data)
    }

    #[test]
    fn endless_follow_ups_end_where_the_identifier_can_carry_no_more() {
        // Each reply carries 2 value bytes: a voltage is complete after one frame, three after
        // three; an unknown identifier gets at most 16 frames.
        for (di, frames) in [
            (0x0201_0100u32, 1usize),
            (0x0201_FF00, 3),
            (0x0612_3456, 16),
        ] {
            let (mut s, mut req) = ReadSession::new("123456789012".parse().unwrap(), di);
            let mut sent = 1;
            let failed = loop {
                match s.on_frame(&endless(&req)) {
                    Step::Send(next) => {
                        req = next;
                        sent += 1;
                    }
                    Step::Failed(why) => break why,
                    other => panic!("{other:?}"),
                }
                assert!(sent <= 300);
            };
            assert!(sent <= frames, "{di:08X}: {sent} requests");
            assert!(
                failed.contains("frame") || failed.contains("bytes"),
                "{failed}"
            );
        }
    }

    #[test]
    fn more_bytes_than_an_identifier_can_carry_fail_the_read() {
        let (mut s, req) = ReadSession::new("123456789012".parse().unwrap(), 0x0201_0100);
        let mut data = req.data.clone();
        data.extend_from_slice(&[1, 2, 3, 4, 5, 6]);
        let reply = Frame::new(req.address, 0x91, data);
        assert!(matches!(s.on_frame(&reply), Step::Failed(m) if m.contains("at most 2")));
    }

    #[test]
    fn an_unknown_identifier_is_refused_with_no_requested_data() {
        assert_eq!(
            read(&mut meter(), "123456789012", 0x0280_0002).0,
            Step::Refused(0x02)
        );
    }

    #[test]
    fn a_meter_without_block_support_refuses_blocks_so_the_master_can_fall_back() {
        let mut m = meter();
        m.blocks = false;
        assert_eq!(
            read(&mut m, "123456789012", 0x0001_FF00).0,
            Step::Refused(0x02)
        );
        assert!(matches!(
            read(&mut m, "123456789012", 0x0001_0000).0,
            Step::Done(_)
        ));
    }

    #[test]
    fn a_wrong_address_is_silence_and_a_wildcard_is_answered() {
        assert_eq!(
            read(&mut meter(), "123456789013", 0x0201_0100).0,
            Step::Failed("silence".into())
        );
        let (step, _) = read(&mut meter(), "AAAAAAAAAAAA", 0x0201_0100);
        assert_eq!(step, Step::Done(vec![0x97, 0x22]));
    }

    #[test]
    fn the_echo_of_our_own_request_and_other_meters_are_ignored() {
        let (mut s, req) = ReadSession::new("123456789012".parse().unwrap(), 0x0201_0100);
        assert_eq!(s.on_frame(&req), Step::Ignore, "our echo");
        let other = Frame::new(
            "999999999998".parse().unwrap(),
            0x91,
            vec![0, 1, 1, 2, 0x97, 0x22],
        );
        assert_eq!(s.on_frame(&other), Step::Ignore);
        let wrong_di = Frame::new(
            "123456789012".parse().unwrap(),
            0x91,
            vec![0, 2, 1, 2, 0x97, 0x22],
        );
        assert_eq!(s.on_frame(&wrong_di), Step::Ignore);
    }

    #[test]
    fn a_1997_read_uses_its_own_control_codes_and_two_byte_identifiers() {
        let mut m = SimMeter::new("000000063295".parse().unwrap());
        m.version = Version::V1997;
        m.values
            .insert(0x9010, bcd::encode(0.15, 4, 2, false).unwrap());
        let (mut s, req) = ReadSession::for_version(Version::V1997, m.address, 0x9010);
        assert_eq!(
            req.encode(0).unwrap(),
            crate::dlt645::frame::from_hex("68 95 32 06 00 00 00 68 01 02 43 C3 A6 16").unwrap()
        );
        let reply = m.respond(&req).unwrap();
        assert_eq!(
            reply.encode(0).unwrap(),
            crate::dlt645::frame::from_hex("68 95 32 06 00 00 00 68 81 06 43 C3 48 33 33 33 0B 16")
                .unwrap(),
            "vector A2"
        );
        assert_eq!(s.on_frame(&reply), Step::Done(vec![0x15, 0, 0, 0]));
    }

    #[test]
    fn read_address_answers_only_the_full_wildcard() {
        let mut m = meter();
        let r = m
            .respond(&Frame::new(Address::WILDCARD, 0x13, vec![]))
            .unwrap();
        assert_eq!((r.control.0, r.data.clone()), (0x93, m.address.0.to_vec()));
        assert_eq!(
            m.respond(&Frame::new(Address::BROADCAST, 0x13, vec![])),
            None,
            "no reply to 99..99"
        );
    }
}
