//! Packed BCD as DL/T 645 sends it: least significant byte first, two digits per byte.
//! Signed items are sign-magnitude: bit 7 of the most significant (last) byte is the sign.

use super::error::Dlt645Error;

/// The decimal value of little-endian packed BCD `bytes` with `decimals` implied decimals.
/// A nibble above 9 is an error naming the byte, never a wrong number.
pub fn decode(bytes: &[u8], decimals: u32, signed: bool) -> Result<f64, Dlt645Error> {
    let mut negative = false;
    let mut v: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().rev() {
        let mut b = b;
        if signed && i + 1 == bytes.len() {
            negative = b & 0x80 != 0;
            b &= 0x7F;
        }
        let (hi, lo) = (b >> 4, b & 0x0F);
        if hi > 9 || lo > 9 {
            return Err(Dlt645Error::NotBcd {
                index: i,
                byte: bytes[i],
            });
        }
        v = v * 100 + u64::from(hi) * 10 + u64::from(lo);
    }
    let x = v as f64 / 10f64.powi(decimals as i32);
    Ok(if negative { -x } else { x })
}

/// Digits of little-endian packed BCD, most significant first (for dates, addresses, numbers).
pub fn digits(bytes: &[u8]) -> Result<String, Dlt645Error> {
    let mut s = String::with_capacity(bytes.len() * 2);
    for (i, &b) in bytes.iter().enumerate().rev() {
        if b >> 4 > 9 || b & 0x0F > 9 {
            return Err(Dlt645Error::NotBcd { index: i, byte: b });
        }
        s.push(char::from(b'0' + (b >> 4)));
        s.push(char::from(b'0' + (b & 0x0F)));
    }
    Ok(s)
}

/// Encode `value` into `n` bytes of little-endian packed BCD; `None` when it does not fit.
pub fn encode(value: f64, n: usize, decimals: u32, signed: bool) -> Option<Vec<u8>> {
    let scaled = (value.abs() * 10f64.powi(decimals as i32)).round();
    let max_digits = 2 * n - usize::from(signed);
    if !scaled.is_finite() || scaled >= 10f64.powi(max_digits as i32) {
        return None;
    }
    let mut v = scaled as u64;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let lo = (v % 10) as u8;
        v /= 10;
        let hi = (v % 10) as u8;
        v /= 10;
        out.push(hi << 4 | lo);
    }
    if signed && value < 0.0 && scaled > 0.0 {
        if let Some(last) = out.last_mut() {
            *last |= 0x80;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_values_decode() {
        assert_eq!(decode(&[0x78, 0x56, 0x34, 0x12], 2, false), Ok(123456.78));
        assert_eq!(decode(&[0x34, 0x12, 0x80], 3, true), Ok(-1.234));
        assert_eq!(decode(&[0x12, 0x94], 2, true), Ok(-14.12));
        assert_eq!(decode(&[0x03, 0x50], 2, false), Ok(50.03));
        assert_eq!(
            decode(&[0x1F], 0, false),
            Err(Dlt645Error::NotBcd {
                index: 0,
                byte: 0x1F
            })
        );
        assert_eq!(
            digits(&[0x12, 0x90, 0x78, 0x56, 0x34, 0x12]).as_deref(),
            Ok("123456789012")
        );
    }

    proptest! {
        #[test]
        fn encode_then_decode_round_trips(v in -999_999i64..999_999, decimals in 0u32..4, signed in any::<bool>()) {
            let value = if signed { v as f64 } else { v.unsigned_abs() as f64 } / 10f64.powi(decimals as i32);
            let bytes = encode(value, 4, decimals, signed).expect("fits");
            let back = decode(&bytes, decimals, signed).unwrap();
            prop_assert!((back - value).abs() < 1e-9, "{} -> {:02x?} -> {}", value, bytes, back);
        }
    }
}
