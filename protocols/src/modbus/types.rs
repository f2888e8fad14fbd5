//! Point types and byte orders.
//!
//! A value's bytes, most significant first, are called A B C D (… H for 64 bits). Orders:
//! - `ABCD`: big-endian words, most significant word first (the Modbus default);
//! - `CDAB`: least significant word first, bytes big-endian in each word ("word swap");
//! - `BADC`: most significant word first, bytes swapped in each word ("byte swap");
//! - `DCBA`: fully little-endian.
//!
//! The same names apply to 64-bit values (e.g. `CDAB` means the word order is reversed).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PointType {
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
}

impl PointType {
    pub const ALL: [PointType; 8] = [
        PointType::U16,
        PointType::I16,
        PointType::U32,
        PointType::I32,
        PointType::U64,
        PointType::I64,
        PointType::F32,
        PointType::F64,
    ];

    /// Number of 16-bit registers the type occupies.
    pub fn words(self) -> u16 {
        match self {
            PointType::U16 | PointType::I16 => 1,
            PointType::U32 | PointType::I32 | PointType::F32 => 2,
            PointType::U64 | PointType::I64 | PointType::F64 => 4,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, PointType::F32 | PointType::F64)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum ByteOrder {
    #[default]
    ABCD,
    CDAB,
    BADC,
    DCBA,
}

impl ByteOrder {
    pub const ALL: [ByteOrder; 4] = [
        ByteOrder::ABCD,
        ByteOrder::CDAB,
        ByteOrder::BADC,
        ByteOrder::DCBA,
    ];

    fn words_reversed(self) -> bool {
        matches!(self, ByteOrder::CDAB | ByteOrder::DCBA)
    }

    fn bytes_swapped(self) -> bool {
        matches!(self, ByteOrder::BADC | ByteOrder::DCBA)
    }
}

/// A value as it sits in the registers, before scaling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RawValue {
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
}

impl RawValue {
    pub fn point_type(self) -> PointType {
        match self {
            RawValue::U16(_) => PointType::U16,
            RawValue::I16(_) => PointType::I16,
            RawValue::U32(_) => PointType::U32,
            RawValue::I32(_) => PointType::I32,
            RawValue::U64(_) => PointType::U64,
            RawValue::I64(_) => PointType::I64,
            RawValue::F32(_) => PointType::F32,
            RawValue::F64(_) => PointType::F64,
        }
    }

    pub fn to_f64(self) -> f64 {
        match self {
            RawValue::U16(v) => v.into(),
            RawValue::I16(v) => v.into(),
            RawValue::U32(v) => v.into(),
            RawValue::I32(v) => v.into(),
            RawValue::U64(v) => v as f64,
            RawValue::I64(v) => v as f64,
            RawValue::F32(v) => v.into(),
            RawValue::F64(v) => v,
        }
    }

    /// The raw value of type `ty` nearest to `v` (rounded and saturated for integers).
    pub fn from_f64(ty: PointType, v: f64) -> RawValue {
        let r = v.round();
        match ty {
            PointType::U16 => RawValue::U16(r as u16),
            PointType::I16 => RawValue::I16(r as i16),
            PointType::U32 => RawValue::U32(r as u32),
            PointType::I32 => RawValue::I32(r as i32),
            PointType::U64 => RawValue::U64(r as u64),
            PointType::I64 => RawValue::I64(r as i64),
            PointType::F32 => RawValue::F32(v as f32),
            PointType::F64 => RawValue::F64(v),
        }
    }

    fn to_be_bytes(self) -> Vec<u8> {
        match self {
            RawValue::U16(v) => v.to_be_bytes().to_vec(),
            RawValue::I16(v) => v.to_be_bytes().to_vec(),
            RawValue::U32(v) => v.to_be_bytes().to_vec(),
            RawValue::I32(v) => v.to_be_bytes().to_vec(),
            RawValue::U64(v) => v.to_be_bytes().to_vec(),
            RawValue::I64(v) => v.to_be_bytes().to_vec(),
            RawValue::F32(v) => v.to_be_bytes().to_vec(),
            RawValue::F64(v) => v.to_be_bytes().to_vec(),
        }
    }

    /// The registers holding this value in the given order.
    pub fn encode(self, order: ByteOrder) -> Vec<u16> {
        let mut words: Vec<u16> = self
            .to_be_bytes()
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        if order.bytes_swapped() {
            words.iter_mut().for_each(|w| *w = w.swap_bytes());
        }
        if order.words_reversed() {
            words.reverse();
        }
        words
    }

    /// Decode `ty` from exactly `ty.words()` registers; `None` when the slice is too short.
    pub fn decode(words: &[u16], ty: PointType, order: ByteOrder) -> Option<RawValue> {
        let n = usize::from(ty.words());
        let words = words.get(..n)?;
        let mut bytes = [0u8; 8];
        for (i, &w) in words.iter().enumerate() {
            let w = if order.bytes_swapped() {
                w.swap_bytes()
            } else {
                w
            };
            let slot = if order.words_reversed() { n - 1 - i } else { i };
            bytes[2 * slot..2 * slot + 2].copy_from_slice(&w.to_be_bytes());
        }
        let b2 = [bytes[0], bytes[1]];
        let b4 = [bytes[0], bytes[1], bytes[2], bytes[3]];
        Some(match ty {
            PointType::U16 => RawValue::U16(u16::from_be_bytes(b2)),
            PointType::I16 => RawValue::I16(i16::from_be_bytes(b2)),
            PointType::U32 => RawValue::U32(u32::from_be_bytes(b4)),
            PointType::I32 => RawValue::I32(i32::from_be_bytes(b4)),
            PointType::U64 => RawValue::U64(u64::from_be_bytes(bytes)),
            PointType::I64 => RawValue::I64(i64::from_be_bytes(bytes)),
            PointType::F32 => RawValue::F32(f32::from_be_bytes(b4)),
            PointType::F64 => RawValue::F64(f64::from_be_bytes(bytes)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(value: RawValue, order: ByteOrder, expected_words: &[u16]) {
        assert_eq!(
            value.encode(order),
            expected_words,
            "{value:?} in {order:?}"
        );
        assert_eq!(
            RawValue::decode(expected_words, value.point_type(), order),
            Some(value)
        );
    }

    #[test]
    fn known_layouts_match_the_order_names() {
        // 0x11223344: A=11 B=22 C=33 D=44.
        check(
            RawValue::U32(0x1122_3344),
            ByteOrder::ABCD,
            &[0x1122, 0x3344],
        );
        check(
            RawValue::U32(0x1122_3344),
            ByteOrder::CDAB,
            &[0x3344, 0x1122],
        );
        check(
            RawValue::U32(0x1122_3344),
            ByteOrder::BADC,
            &[0x2211, 0x4433],
        );
        check(
            RawValue::U32(0x1122_3344),
            ByteOrder::DCBA,
            &[0x4433, 0x2211],
        );
        // 230.0 as an IEEE-754 float is 0x43660000.
        check(RawValue::F32(230.0), ByteOrder::ABCD, &[0x4366, 0x0000]);
        check(RawValue::F32(230.0), ByteOrder::CDAB, &[0x0000, 0x4366]);
        check(RawValue::I16(-2), ByteOrder::ABCD, &[0xFFFE]);
        check(RawValue::U16(0x1234), ByteOrder::BADC, &[0x3412]);
        check(
            RawValue::U64(0x1122_3344_5566_7788),
            ByteOrder::CDAB,
            &[0x7788, 0x5566, 0x3344, 0x1122],
        );
    }

    #[test]
    fn decoding_from_too_few_registers_is_none() {
        assert_eq!(
            RawValue::decode(&[1], PointType::U32, ByteOrder::ABCD),
            None
        );
    }

    fn any_order() -> impl Strategy<Value = ByteOrder> {
        prop::sample::select(ByteOrder::ALL.to_vec())
    }

    fn any_raw() -> impl Strategy<Value = RawValue> {
        prop_oneof![
            any::<u16>().prop_map(RawValue::U16),
            any::<i16>().prop_map(RawValue::I16),
            any::<u32>().prop_map(RawValue::U32),
            any::<i32>().prop_map(RawValue::I32),
            any::<u64>().prop_map(RawValue::U64),
            any::<i64>().prop_map(RawValue::I64),
            any::<f32>()
                .prop_filter("NaN never equals itself", |f| !f.is_nan())
                .prop_map(RawValue::F32),
            any::<f64>()
                .prop_filter("NaN never equals itself", |f| !f.is_nan())
                .prop_map(RawValue::F64),
        ]
    }

    proptest! {
        #[test]
        fn every_type_and_order_round_trips(value in any_raw(), order in any_order()) {
            let words = value.encode(order);
            prop_assert_eq!(words.len(), usize::from(value.point_type().words()));
            prop_assert_eq!(RawValue::decode(&words, value.point_type(), order), Some(value));
        }

        #[test]
        fn nan_bit_patterns_survive_every_order(bits in any::<u32>(), order in any_order()) {
            let value = RawValue::F32(f32::from_bits(bits));
            let back = RawValue::decode(&value.encode(order), PointType::F32, order);
            prop_assert!(matches!(back, Some(RawValue::F32(f)) if f.to_bits() == bits));
        }
    }
}
