//! The journal's on-disk records: pure encoding and decoding, no I/O.
//!
//! ```text
//! segment  := header record*
//! header   := "MTRJ" version:u8 0 0 0                       (8 bytes)
//! record   := magic:u16=0x4A52 len:u32 crc:u32 payload[len]  (little-endian; crc = CRC-32C of payload)
//! payload  := 1 shape | 2 reading | 3 seqs | 4 reading (read on demand)
//! shape    := id:var meter:str bus:str profile:str n:var quantity:str{n}
//! seqs     := n:var (meter:str seq:var){n}        (first record of a segment)
//! reading  := pos:var shape:var ts_ms:var seq:var kinds:u8{ceil(n/8)} value{n}
//! value    := f32 (kind bit 1) | f64 (kind bit 0), little-endian
//! str      := len:var utf8[len]          var := LEB128 unsigned
//! ```
//!
//! The seqs record at the start of each segment carries every meter's last `seq`, so the
//! newest segment alone tells where each meter's numbering goes on after a restart.
//!
//! A shape names a reading's meter, bus, profile and quantities once per segment; readings of
//! that shape then carry only numbers. A value is stored as f32 when that keeps its shortest
//! decimal form (230.1 stays 230.1), else as f64, so nothing is rounded.

use std::sync::Arc;

use crc::{Crc, CRC_32_ISCSI};
use meterd_protocols::modbus::shortest_f32;

pub const FILE_HEADER: [u8; 8] = *b"MTRJ\x01\0\0\0";
pub const MAGIC: [u8; 2] = 0x4A52u16.to_le_bytes();
pub const FRAME_HEADER: usize = 10;
/// No record is larger (a reading of 1,000 values is about 9 kB).
pub const MAX_PAYLOAD: usize = 1 << 20;

const CRC32C: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);

const KIND_SHAPE: u8 = 1;
const KIND_READING: u8 = 2;
const KIND_SEQS: u8 = 3;
/// A reading made on demand (a remote `read`): the same layout as [`KIND_READING`].
const KIND_READING_ON_DEMAND: u8 = 4;

/// What a group of readings has in common.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Shape {
    pub meter: Arc<str>,
    pub bus: Arc<str>,
    pub profile: Arc<str>,
    /// Shared by the shapes of a segment that name the same quantities (every meter of a
    /// profile, per point group), rather than a list per meter.
    pub quantities: Arc<[Arc<str>]>,
}

impl Shape {
    /// Whether `r` has this shape; names that are the same `Arc` compare without reading them.
    pub fn describes(&self, r: &crate::reading::Reading) -> bool {
        use crate::reading::same_name as same;
        same(&self.meter, &r.meter)
            && same(&self.bus, &r.bus)
            && same(&self.profile, &r.profile)
            && names(&self.quantities, r)
    }
}

/// Whether `quantities` are `r`'s quantities, in order.
pub fn names(quantities: &Arc<[Arc<str>]>, r: &crate::reading::Reading) -> bool {
    let theirs = r.values.names();
    Arc::ptr_eq(quantities, theirs) || crate::reading::same_names(quantities, theirs.iter())
}

/// A reading record, framed, appended to `out` as [`Record::encode`] would write it, without
/// building the record or its payload first (this is the journal's per-reading path).
pub fn encode_reading(
    out: &mut Vec<u8>,
    pos: u64,
    shape: u32,
    ts_ms: u64,
    seq: u64,
    on_demand: bool,
    values: impl ExactSizeIterator<Item = f64>,
) {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[0; 8]); // length and checksum, filled in below
    let payload = out.len();
    out.push(if on_demand {
        KIND_READING_ON_DEMAND
    } else {
        KIND_READING
    });
    put_var(out, pos);
    put_var(out, u64::from(shape));
    put_var(out, ts_ms);
    put_var(out, seq);
    let kinds = out.len();
    out.resize(kinds + values.len().div_ceil(8), 0);
    for (i, v) in values.enumerate() {
        if fits_f32(v) {
            out[kinds + i / 8] |= 1 << (i % 8);
            out.extend_from_slice(&(v as f32).to_le_bytes());
        } else {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    let len = (out.len() - payload) as u32;
    let crc = CRC32C.checksum(&out[payload..]);
    out[start + MAGIC.len()..start + MAGIC.len() + 4].copy_from_slice(&len.to_le_bytes());
    out[start + MAGIC.len() + 4..payload].copy_from_slice(&crc.to_le_bytes());
}

#[derive(Debug, Clone, PartialEq)]
pub struct RawReading {
    pub pos: u64,
    pub shape: u32,
    pub ts_ms: u64,
    pub seq: u64,
    pub values: Vec<f64>,
    pub on_demand: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Shape(u32, Shape),
    Reading(RawReading),
    Seqs(Vec<(Arc<str>, u64)>),
}

/// Why bytes are not a record. `Torn` means the bytes end inside a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("record cut short: {have} of {need} bytes")]
    Torn { have: usize, need: usize },
    #[error("no record marker (found {found:02x?})")]
    BadMagic { found: [u8; 2] },
    #[error("record length {len} is implausible")]
    BadLength { len: usize },
    #[error("checksum mismatch: stored {stored:08x}, computed {computed:08x}")]
    BadChecksum { stored: u32, computed: u32 },
    #[error("malformed payload: {0}")]
    Malformed(&'static str),
}

fn put_var(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_var(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn var(&mut self) -> Result<u64, FrameError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .b
                .get(self.i)
                .ok_or(FrameError::Malformed("varint runs past the end"))?;
            self.i += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(FrameError::Malformed("varint too long"))
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        let s = self
            .b
            .get(
                self.i
                    ..self
                        .i
                        .checked_add(n)
                        .ok_or(FrameError::Malformed("length overflow"))?,
            )
            .ok_or(FrameError::Malformed("field runs past the end"))?;
        self.i += n;
        Ok(s)
    }

    fn str(&mut self) -> Result<Arc<str>, FrameError> {
        let n = usize::try_from(self.var()?).map_err(|_| FrameError::Malformed("string length"))?;
        std::str::from_utf8(self.bytes(n)?)
            .map(Arc::from)
            .map_err(|_| FrameError::Malformed("string is not UTF-8"))
    }
}

/// True when `v` survives a trip through f32 with its shortest decimal form intact (a float
/// register's value always does).
fn fits_f32(v: f64) -> bool {
    shortest_f32(v as f32) == Some(v)
}

fn f32_to_f64(f: f32) -> f64 {
    shortest_f32(f).unwrap_or(f64::from(f))
}

impl Record {
    pub fn encode_payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        match self {
            Record::Shape(id, s) => {
                out.push(KIND_SHAPE);
                put_var(&mut out, u64::from(*id));
                put_str(&mut out, &s.meter);
                put_str(&mut out, &s.bus);
                put_str(&mut out, &s.profile);
                put_var(&mut out, s.quantities.len() as u64);
                for q in s.quantities.iter() {
                    put_str(&mut out, q);
                }
            }
            Record::Seqs(seqs) => {
                out.push(KIND_SEQS);
                put_var(&mut out, seqs.len() as u64);
                for (m, seq) in seqs {
                    put_str(&mut out, m);
                    put_var(&mut out, *seq);
                }
            }
            Record::Reading(r) => {
                out.push(if r.on_demand {
                    KIND_READING_ON_DEMAND
                } else {
                    KIND_READING
                });
                put_var(&mut out, r.pos);
                put_var(&mut out, u64::from(r.shape));
                put_var(&mut out, r.ts_ms);
                put_var(&mut out, r.seq);
                let mut kinds = vec![0u8; r.values.len().div_ceil(8)];
                let small: Vec<bool> = r.values.iter().map(|v| fits_f32(*v)).collect();
                for (i, s) in small.iter().enumerate() {
                    if *s {
                        kinds[i / 8] |= 1 << (i % 8);
                    }
                }
                out.extend_from_slice(&kinds);
                for (v, s) in r.values.iter().zip(&small) {
                    if *s {
                        out.extend_from_slice(&(*v as f32).to_le_bytes());
                    } else {
                        out.extend_from_slice(&v.to_le_bytes());
                    }
                }
            }
        }
        out
    }

    /// The record framed for disk.
    pub fn encode(&self) -> Vec<u8> {
        let payload = self.encode_payload();
        let mut out = Vec::with_capacity(FRAME_HEADER + payload.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&CRC32C.checksum(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// `n_of(shape)` gives the number of values of a known shape (a reading's values are
    /// only decodable with its shape); `None` for an unknown shape.
    pub fn decode_payload(
        payload: &[u8],
        n_of: impl Fn(u32) -> Option<usize>,
    ) -> Result<Record, FrameError> {
        let mut c = Cursor { b: payload, i: 1 };
        match payload.first() {
            Some(&KIND_SHAPE) => {
                let id = u32::try_from(c.var()?).map_err(|_| FrameError::Malformed("shape id"))?;
                let (meter, bus, profile) = (c.str()?, c.str()?, c.str()?);
                let n = c.var()?;
                if n > 10_000 {
                    return Err(FrameError::Malformed("too many quantities"));
                }
                let quantities = (0..n).map(|_| c.str()).collect::<Result<_, _>>()?;
                Ok(Record::Shape(
                    id,
                    Shape {
                        meter,
                        bus,
                        profile,
                        quantities,
                    },
                ))
            }
            Some(&KIND_SEQS) => {
                let n = c.var()?;
                if n > 1_000_000 {
                    return Err(FrameError::Malformed("too many meters"));
                }
                let seqs = (0..n)
                    .map(|_| Ok((c.str()?, c.var()?)))
                    .collect::<Result<_, _>>()?;
                Ok(Record::Seqs(seqs))
            }
            Some(&kind @ (KIND_READING | KIND_READING_ON_DEMAND)) => {
                let pos = c.var()?;
                let shape =
                    u32::try_from(c.var()?).map_err(|_| FrameError::Malformed("shape id"))?;
                let ts_ms = c.var()?;
                let seq = c.var()?;
                let n = n_of(shape).ok_or(FrameError::Malformed("reading of an unknown shape"))?;
                let kinds = c.bytes(n.div_ceil(8))?.to_vec();
                let mut values = Vec::with_capacity(n);
                for i in 0..n {
                    if kinds[i / 8] & (1 << (i % 8)) != 0 {
                        let b = c.bytes(4)?;
                        values.push(f32_to_f64(f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
                    } else {
                        let b = c.bytes(8)?;
                        let mut a = [0u8; 8];
                        a.copy_from_slice(b);
                        values.push(f64::from_le_bytes(a));
                    }
                }
                Ok(Record::Reading(RawReading {
                    pos,
                    shape,
                    ts_ms,
                    seq,
                    values,
                    on_demand: kind == KIND_READING_ON_DEMAND,
                }))
            }
            _ => Err(FrameError::Malformed("unknown record kind")),
        }
    }
}

/// The frame at the front of `buf`: its payload and total length.
pub fn read_frame(buf: &[u8]) -> Result<(&[u8], usize), FrameError> {
    if buf.len() < FRAME_HEADER {
        return Err(FrameError::Torn {
            have: buf.len(),
            need: FRAME_HEADER,
        });
    }
    let found = [buf[0], buf[1]];
    if found != MAGIC {
        return Err(FrameError::BadMagic { found });
    }
    let len = u32::from_le_bytes([buf[2], buf[3], buf[4], buf[5]]) as usize;
    if len == 0 || len > MAX_PAYLOAD {
        return Err(FrameError::BadLength { len });
    }
    let need = FRAME_HEADER + len;
    let Some(payload) = buf.get(FRAME_HEADER..need) else {
        return Err(FrameError::Torn {
            have: buf.len(),
            need,
        });
    };
    let stored = u32::from_le_bytes([buf[6], buf[7], buf[8], buf[9]]);
    let computed = CRC32C.checksum(payload);
    if stored != computed {
        return Err(FrameError::BadChecksum { stored, computed });
    }
    Ok((payload, need))
}

/// The offset of the next valid frame after a bad one at the front of `buf`, if any.
pub fn resync(buf: &[u8]) -> Option<usize> {
    (1..buf.len()).find(|&i| buf[i..].starts_with(&MAGIC) && read_frame(&buf[i..]).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn shape() -> Shape {
        Shape {
            meter: "m-0001".into(),
            bus: "rs485-1".into(),
            profile: "eastron-sdm630".into(),
            quantities: ["voltage_l1_v", "energy_import_kwh", "power_w"]
                .map(Arc::from)
                .into(),
        }
    }

    fn roundtrip(r: &Record, n: usize) -> Record {
        let bytes = r.encode();
        let (payload, len) = read_frame(&bytes).unwrap();
        assert_eq!(len, bytes.len());
        Record::decode_payload(payload, |_| Some(n)).unwrap()
    }

    #[test]
    fn shapes_and_readings_round_trip() {
        let s = Record::Shape(3, shape());
        assert_eq!(roundtrip(&s, 0), s);
        let r = Record::Reading(RawReading {
            pos: 1 << 40,
            shape: 3,
            ts_ms: 1_795_768_205_123,
            seq: 99,
            values: vec![230.1, 12345678.91, -0.5],
            on_demand: false,
        });
        assert_eq!(roundtrip(&r, 3), r);
        let od = Record::Reading(RawReading {
            pos: 5,
            shape: 3,
            ts_ms: 1_795_768_205_123,
            seq: 100,
            values: vec![230.1, 1.0, 2.0],
            on_demand: true,
        });
        assert_eq!(
            roundtrip(&od, 3),
            od,
            "a reading made on demand stays marked"
        );
        let q = Record::Seqs(vec![("m-1".into(), 7), ("m-2".into(), 1 << 50)]);
        assert_eq!(roundtrip(&q, 0), q);
    }

    #[test]
    fn a_reading_encoded_in_place_is_the_record_encoded() {
        for n in [0usize, 1, 8, 9, 32] {
            let values: Vec<f64> = (0..n)
                .map(|i| {
                    if i % 3 == 0 {
                        0.1 * i as f64
                    } else {
                        230.1 + i as f64
                    }
                })
                .collect();
            let record = Record::Reading(RawReading {
                pos: 1 << 33,
                shape: 7,
                ts_ms: 1_795_768_205_123,
                seq: 42,
                values: values.clone(),
                on_demand: n == 9,
            });
            let mut out = vec![1, 2, 3];
            encode_reading(
                &mut out,
                1 << 33,
                7,
                1_795_768_205_123,
                42,
                n == 9,
                values.into_iter(),
            );
            assert_eq!(out[..3], [1, 2, 3]);
            assert_eq!(out[3..], record.encode(), "{n} values");
        }
    }

    #[test]
    fn a_typical_reading_is_compact() {
        let values: Vec<f64> = (0..32).map(|i| 230.1 + f64::from(i)).collect();
        let r = Record::Reading(RawReading {
            pos: 123_456,
            shape: 1,
            ts_ms: 1_795_768_205_123,
            seq: 12_345,
            values,
            on_demand: false,
        });
        assert!(r.encode().len() <= 160, "{} bytes", r.encode().len());
    }

    #[test]
    fn damage_is_detected() {
        let bytes = Record::Shape(1, shape()).encode();
        assert!(matches!(
            read_frame(&bytes[..bytes.len() - 1]),
            Err(FrameError::Torn { .. })
        ));
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert!(matches!(
            read_frame(&flipped),
            Err(FrameError::BadChecksum { .. })
        ));
        assert!(matches!(
            read_frame(&[0; 16]),
            Err(FrameError::BadMagic { .. })
        ));
        let mut junk = vec![0u8; 7];
        junk.extend_from_slice(&bytes);
        assert_eq!(resync(&junk), Some(7));
    }

    proptest! {
        #[test]
        fn any_reading_round_trips_exactly(pos in any::<u64>(), ts in any::<u64>(), seq in any::<u64>(),
                                           values in proptest::collection::vec(any::<f64>().prop_filter("finite", |v| v.is_finite()), 0..40)) {
            let n = values.len();
            let r = Record::Reading(RawReading { pos, shape: 7, ts_ms: ts, seq, values, on_demand: seq % 2 == 0 });
            prop_assert_eq!(roundtrip(&r, n), r);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok((p, _)) = read_frame(&bytes) {
                let _ = Record::decode_payload(p, |_| Some(3));
            }
            let _ = Record::decode_payload(&bytes, |_| Some(3));
            let _ = resync(&bytes);
        }
    }
}
