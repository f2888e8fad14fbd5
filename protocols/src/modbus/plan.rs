//! Points and request coalescing.
//!
//! A meter's points of one group are read with as few requests as possible: neighbouring points
//! of the same register kind share a request as long as it stays within
//! [`MAX_READ_REGISTERS`] and the unused registers between two points do not exceed `max_gap`.
//! Reading a small gap costs a few bytes on the wire; a separate request costs a full round trip
//! and on RS-485 an inter-frame gap.

use serde::{Deserialize, Serialize};

use super::types::{ByteOrder, PointType, RawValue};

/// The Modbus limit for one read of holding or input registers (function codes 3 and 4).
pub const MAX_READ_REGISTERS: u16 = 125;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegisterKind {
    /// Function code 3.
    Holding,
    /// Function code 4.
    Input,
}

impl RegisterKind {
    pub fn function_code(self) -> u8 {
        match self {
            RegisterKind::Holding => 3,
            RegisterKind::Input => 4,
        }
    }
}

/// One value in a register map.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    /// Shared: every reading of the point carries this one name, not a copy.
    pub quantity: std::sync::Arc<str>,
    pub kind: RegisterKind,
    /// Protocol address (0-based; register 30001 or 40001 in a manual is address 0).
    pub address: u16,
    pub ty: PointType,
    pub order: ByteOrder,
    /// value = raw × scale + offset
    pub scale: f64,
    pub offset: f64,
}

impl Point {
    pub fn end(&self) -> u32 {
        u32::from(self.address) + u32::from(self.ty.words())
    }

    /// The engineering value for a raw value. Non-finite results (NaN/∞ floats, which many
    /// meters use as "not available") are `None`.
    ///
    /// A float register keeps every digit it holds: its value is the shortest decimal that
    /// reads back as the same float (a register holding 1234567.9 reads 1234567.9, not
    /// 1234568 or 1234567.875), so the published number parsed as f32 is the register, bit
    /// for bit. Scaled, it keeps 15 significant digits (f64's, without the binary noise of
    /// the multiplication). An integer in 0.01 units keeps two decimals.
    pub fn scale_raw(&self, raw: RawValue) -> Option<f64> {
        let unscaled = self.scale == 1.0 && self.offset == 0.0;
        let exact = match raw {
            RawValue::F32(f) => shortest_f32(f)?,
            other => other.to_f64(),
        };
        let v = exact * self.scale + self.offset;
        if !v.is_finite() {
            return None;
        }
        Some(match raw {
            RawValue::F32(_) | RawValue::F64(_) if unscaled => v,
            RawValue::F32(_) | RawValue::F64(_) => round_significant(v, 15),
            _ => {
                let decimals = (-self.scale.abs().log10()).ceil().clamp(0.0, 9.0) as i32;
                v.round_to(decimals)
            }
        })
    }

    /// The raw value a meter holds for an engineering value (the simulator's direction).
    pub fn raw_for(&self, value: f64) -> RawValue {
        let scale = if self.scale == 0.0 { 1.0 } else { self.scale };
        RawValue::from_f64(self.ty, (value - self.offset) / scale)
    }
}

/// The f64 nearest the shortest decimal that reads back as `f` (`None` for NaN and ±∞,
/// which meters use for "not available"). Its own shortest form is that same decimal.
///
/// Every float register goes through here twice (decoding, and the journal checking that a
/// value fits in four bytes), 64,000 times a second at 2,000 meters. Ryu gives the decimal as
/// digits `m` (at most 9, so exact in an f64) and exponent `e`; with `10^|e|` also exact
/// (|e| ≤ 22) one multiplication or division is correctly rounded (Clinger's fast path), the
/// same f64 that printing the decimal and parsing it gives (checked for all 2^32 bit
/// patterns, and by a property test) at under half the time. Other exponents (below 1e-13 or
/// above 1e31, not a meter's values) print and parse.
pub fn shortest_f32(f: f32) -> Option<f64> {
    /// The powers of ten an f64 holds exactly.
    const EXACT: [f64; 23] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ];
    if !f.is_finite() {
        return None;
    }
    if f == 0.0 {
        return Some(f64::from(f));
    }
    let d = ryu_floating_decimal::f2d(f);
    let m = f64::from(d.mantissa);
    let m = if f.is_sign_negative() { -m } else { m };
    let p = EXACT.get(d.exponent.unsigned_abs() as usize);
    match p {
        Some(p) if d.exponent >= 0 => Some(m * p),
        Some(p) => Some(m / p),
        None => format!("{m}e{}", d.exponent).parse().ok(),
    }
}

/// `v` rounded to `digits` significant decimal digits, as the nearest f64 to that decimal.
///
/// Arithmetic, not formatting: an integer divided by an exact power of ten is correctly
/// rounded, so 230.1 comes out as the f64 nearest 230.1. Formatting with `{:.6e}` gave the same
/// values but was the largest share of a poll's CPU (the exact float-to-decimal path).
fn round_significant(v: f64, digits: usize) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let exponent = v.abs().log10().floor() as i32;
    let decimals = digits as i32 - 1 - exponent;
    if (0..=22).contains(&decimals) {
        // Ties to even, as the decimal formatting does.
        let f = 10f64.powi(decimals);
        (v * f).round_ties_even() / f
    } else {
        // At or above 10^digits a product with a power of ten need not be exact: format.
        round_significant_by_formatting(v, digits)
    }
}

/// The reference: the decimal form with `digits` significant digits, parsed back.
fn round_significant_by_formatting(v: f64, digits: usize) -> f64 {
    format!("{:.*e}", digits.saturating_sub(1), v)
        .parse()
        .unwrap_or(v)
}

trait RoundTo {
    fn round_to(self, decimals: i32) -> f64;
}

impl RoundTo for f64 {
    fn round_to(self, decimals: i32) -> f64 {
        let f = 10f64.powi(decimals);
        let r = (self * f).round() / f;
        if r.is_finite() {
            r
        } else {
            self
        }
    }
}

/// One read request and the points it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBlock {
    pub kind: RegisterKind,
    pub start: u16,
    pub count: u16,
    /// Indices into the point slice given to [`plan_reads`].
    pub points: Vec<usize>,
}

impl ReadBlock {
    /// Decode every point of this block from the registers the meter returned.
    /// Yields `(point index, value)`; a point whose value is not finite is left out, and a
    /// reply shorter than requested leaves out the points it does not cover.
    pub fn decode<'a>(
        &'a self,
        points: &'a [Point],
        words: &'a [u16],
    ) -> impl Iterator<Item = (usize, f64)> + 'a {
        self.points.iter().filter_map(move |&i| {
            let p = points.get(i)?;
            let off = usize::from(p.address - self.start);
            let raw = RawValue::decode(words.get(off..)?, p.ty, p.order)?;
            Some((i, p.scale_raw(raw)?))
        })
    }
}

/// Coalesce points into read requests. `max_registers` is clamped to 1..=125.
pub fn plan_reads(points: &[Point], max_registers: u16, max_gap: u16) -> Vec<ReadBlock> {
    let max = u32::from(max_registers.clamp(1, MAX_READ_REGISTERS));
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by_key(|&i| (points[i].kind, points[i].address, points[i].ty.words()));
    let mut blocks: Vec<ReadBlock> = Vec::new();
    let mut end = 0u32;
    for i in order {
        let p = &points[i];
        if let Some(b) = blocks.last_mut() {
            let start = u32::from(b.start);
            let fits = b.kind == p.kind
                && u32::from(p.address) <= end + u32::from(max_gap)
                && p.end().max(end) - start <= max;
            if fits {
                end = end.max(p.end());
                b.count = (end - start) as u16;
                b.points.push(i);
                continue;
            }
        }
        end = p.end();
        blocks.push(ReadBlock {
            kind: p.kind,
            start: p.address,
            count: p.ty.words(),
            points: vec![i],
        });
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The arithmetic rounding agrees with formatting and parsing back, but for the last
        /// bit where the two sit on either side of a decimal halfway point.
        #[test]
        fn significant_digit_rounding_matches_the_decimal_form(
            bits in proptest::num::f32::NORMAL,
            scale in proptest::sample::select(vec![1.0, 0.001, 0.01, 0.1, 10.0, 1000.0]),
        ) {
            let v = f64::from(bits) * scale;
            for digits in [7usize, 15] {
                let fast = round_significant(v, digits);
                let reference = round_significant_by_formatting(v, digits);
                // One unit in the last significant digit.
                let exponent = reference.abs().log10().floor() as i32;
                let tolerance = 10f64.powi(exponent - digits as i32 + 1) * 1.5;
                proptest::prop_assert!(
                    fast == reference || (fast - reference).abs() <= tolerance,
                    "{v} to {digits} digits: {fast} vs {reference}"
                );
            }
        }
    }

    #[test]
    fn float_registers_keep_every_digit_they_hold() {
        for (register, published) in [
            (230.1f32, "230.1"),
            (49.99, "49.99"),
            (1234567.9, "1234567.9"),
            (105901.26, "105901.26"),
            (16777216.0, "16777216"),
            (0.000_123_456_79, "0.00012345679"),
            (-1.5, "-1.5"),
            (0.0, "0"),
        ] {
            let v = shortest_f32(register).unwrap();
            assert_eq!(format!("{v}"), published, "{register}");
        }
        assert_eq!(shortest_f32(f32::NAN), None);
        assert_eq!(shortest_f32(f32::INFINITY), None);
    }

    /// What `shortest_f32` must equal: the shortest decimal of the register, printed (by zmij,
    /// as serde_json prints; on a tie, such as 2387858.25, it rounds to even, where std's
    /// `Display` rounds up) and parsed.
    fn printed_and_parsed(f: f32) -> Option<f64> {
        f.is_finite()
            .then(|| zmij::Buffer::new().format_finite(f).parse().unwrap())
    }

    #[test]
    fn the_fast_path_of_float_registers_equals_printing_and_parsing_at_the_edges() {
        let edges = [
            0.0f32,
            -0.0,
            f32::MIN_POSITIVE,
            f32::from_bits(1),
            -f32::from_bits(1),
            f32::MAX,
            f32::MIN,
            1e-13,
            1e-14,
            1e22,
            1e23,
            9.999_999e30,
            16_777_217.0,
            0.1,
            230.1,
            -49.99,
            f32::NAN,
            f32::INFINITY,
        ];
        for f in edges {
            let (got, want) = (shortest_f32(f), printed_and_parsed(f));
            assert_eq!(got.map(f64::to_bits), want.map(f64::to_bits), "{f:e}");
        }
    }

    proptest::proptest! {
        /// Any f32 bit pattern: the same f64, bit for bit, as std's shortest decimal parsed.
        #[test]
        fn the_fast_path_of_float_registers_equals_printing_and_parsing(bits in proptest::num::u32::ANY) {
            let f = f32::from_bits(bits);
            proptest::prop_assert_eq!(
                shortest_f32(f).map(f64::to_bits),
                printed_and_parsed(f).map(f64::to_bits),
                "{:e}", f
            );
        }

        /// Any f32 bit pattern: the published decimal, parsed back as f32, is the register.
        #[test]
        fn a_published_float_reads_back_as_the_register_bit_for_bit(bits in proptest::num::u32::ANY) {
            let f = f32::from_bits(bits);
            let p = Point {
                quantity: "x_v".into(),
                kind: RegisterKind::Holding,
                address: 0,
                ty: PointType::F32,
                order: ByteOrder::ABCD,
                scale: 1.0,
                offset: 0.0,
            };
            match p.scale_raw(RawValue::F32(f)) {
                None => proptest::prop_assert!(!f.is_finite()),
                Some(v) => {
                    let text = serde_json_like(v);
                    let back: f32 = text.parse().unwrap();
                    proptest::prop_assert_eq!(back.to_bits(), f.to_bits(), "{} -> {}", f, text);
                }
            }
        }
    }

    /// How a value leaves meterd: Rust's shortest f64 form (serde_json and line protocol).
    fn serde_json_like(v: f64) -> String {
        format!("{v}")
    }

    fn point(kind: RegisterKind, address: u16, ty: PointType) -> Point {
        Point {
            quantity: format!("q{address}_v").into(),
            kind,
            address,
            ty,
            order: ByteOrder::ABCD,
            scale: 1.0,
            offset: 0.0,
        }
    }

    fn spans(points: &[Point], max: u16, gap: u16) -> Vec<(RegisterKind, u16, u16)> {
        plan_reads(points, max, gap)
            .into_iter()
            .map(|b| (b.kind, b.start, b.count))
            .collect()
    }

    use PointType::*;
    use RegisterKind::*;

    #[test]
    fn neighbouring_points_share_one_request() {
        let pts = [
            point(Input, 0, F32),
            point(Input, 2, F32),
            point(Input, 4, F32),
        ];
        assert_eq!(spans(&pts, 125, 0), [(Input, 0, 6)]);
    }

    #[test]
    fn a_gap_wider_than_allowed_starts_a_new_request() {
        // Registers 2..12 are unused: a gap of 10.
        let pts = [point(Input, 0, F32), point(Input, 12, F32)];
        assert_eq!(spans(&pts, 125, 9), [(Input, 0, 2), (Input, 12, 2)]);
        assert_eq!(spans(&pts, 125, 10), [(Input, 0, 14)]);
        assert_eq!(spans(&pts, 13, 10), [(Input, 0, 2), (Input, 12, 2)]);
    }

    #[test]
    fn holding_and_input_registers_are_never_mixed() {
        let pts = [point(Input, 0, U16), point(Holding, 1, U16)];
        assert_eq!(spans(&pts, 125, 10), [(Holding, 1, 1), (Input, 0, 1)]);
    }

    #[test]
    fn no_request_exceeds_the_register_limit() {
        let pts: Vec<Point> = (0..100).map(|i| point(Input, i * 2, F32)).collect();
        let blocks = plan_reads(&pts, 125, 0);
        assert!(blocks.iter().all(|b| b.count <= 125));
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks.iter().map(|b| b.points.len()).sum::<usize>(), 100);
        assert_eq!(spans(&pts, 10, 0)[0], (Input, 0, 10));
    }

    #[test]
    fn overlapping_points_are_read_once() {
        let pts = [point(Holding, 0, U64), point(Holding, 2, U32)];
        assert_eq!(spans(&pts, 125, 0), [(Holding, 0, 4)]);
    }

    #[test]
    fn a_block_decodes_each_point_at_its_offset() {
        let mut pts = vec![point(Input, 10, F32), point(Input, 14, I16)];
        pts[1].scale = 0.1;
        let blocks = plan_reads(&pts, 125, 4);
        assert_eq!(blocks.len(), 1);
        let mut words = RawValue::F32(230.5).encode(ByteOrder::ABCD);
        words.extend([0, 0]);
        words.extend(RawValue::I16(-15).encode(ByteOrder::ABCD));
        let got: Vec<(usize, f64)> = blocks[0].decode(&pts, &words).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], (0, 230.5));
        assert!((got[1].1 - -1.5).abs() < 1e-9);
    }

    #[test]
    fn a_short_reply_leaves_out_points_it_does_not_cover() {
        let pts = [point(Input, 0, F32), point(Input, 2, F32)];
        let blocks = plan_reads(&pts, 125, 0);
        let got: Vec<_> = blocks[0].decode(&pts, &[0x4366, 0, 0x4366]).collect();
        assert_eq!(got, [(0, 230.0)]);
    }

    #[test]
    fn values_are_rounded_to_the_points_resolution() {
        let mut p = point(Input, 0, F32);
        assert_eq!(p.scale_raw(RawValue::F32(230.1)), Some(230.1));
        p.scale = 0.1;
        assert_eq!(p.scale_raw(RawValue::F32(2301.0)), Some(230.1));
        let mut q = point(Holding, 0, U32);
        q.scale = 0.01;
        assert_eq!(q.scale_raw(RawValue::U32(1234567)), Some(12345.67));
        q.scale = 0.1;
        assert_eq!(q.scale_raw(RawValue::U32(2301)), Some(230.1));
    }

    #[test]
    fn not_a_number_is_not_a_reading() {
        let pts = [point(Input, 0, F32)];
        let words = RawValue::F32(f32::NAN).encode(ByteOrder::ABCD);
        assert_eq!(plan_reads(&pts, 125, 0)[0].decode(&pts, &words).count(), 0);
    }
}
