//! The server (slave) side of the Modbus wire, for the simulator.
//!
//! The simulator needs what tokio-modbus's server does not expose: staying silent for one unit
//! id on a shared line, corrupting a CRC, answering with garbage. So it parses requests itself
//! with this small codec (function codes 3, 4, 6 and 16; anything else gets an "illegal
//! function" exception), frames RTU here and Modbus TCP with [`super::tcp`].

use crc::{Crc, CRC_16_MODBUS};

const MODBUS_CRC: Crc<u16> = Crc::<u16>::new(&CRC_16_MODBUS);

/// CRC-16/MODBUS of `bytes`, transmitted low byte first.
pub fn crc16(bytes: &[u8]) -> u16 {
    MODBUS_CRC.checksum(bytes)
}

/// Exception codes a slave may answer with.
pub mod exception {
    pub const ILLEGAL_FUNCTION: u8 = 1;
    pub const ILLEGAL_DATA_ADDRESS: u8 = 2;
    pub const ILLEGAL_DATA_VALUE: u8 = 3;
    pub const SERVER_DEVICE_FAILURE: u8 = 4;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    ReadHolding {
        start: u16,
        count: u16,
    },
    ReadInput {
        start: u16,
        count: u16,
    },
    WriteSingle {
        address: u16,
        value: u16,
    },
    WriteMultiple {
        start: u16,
        values: Vec<u16>,
    },
    /// A function code this codec does not serve.
    Unsupported {
        function: u8,
    },
}

/// Parse a request PDU (function code and data). `Err(exception code)` for a malformed one.
pub fn parse_pdu(pdu: &[u8]) -> Result<Request, u8> {
    let be = |i: usize| -> Result<u16, u8> {
        pdu.get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or(exception::ILLEGAL_DATA_VALUE)
    };
    let function = *pdu.first().ok_or(exception::ILLEGAL_FUNCTION)?;
    Ok(match function {
        3 | 4 => {
            let (start, count) = (be(1)?, be(3)?);
            if count == 0 || count > 125 {
                return Err(exception::ILLEGAL_DATA_VALUE);
            }
            if function == 3 {
                Request::ReadHolding { start, count }
            } else {
                Request::ReadInput { start, count }
            }
        }
        6 => Request::WriteSingle {
            address: be(1)?,
            value: be(3)?,
        },
        16 => {
            let (start, count) = (be(1)?, be(3)?);
            let n = usize::from(*pdu.get(5).ok_or(exception::ILLEGAL_DATA_VALUE)?);
            if n != usize::from(count) * 2 || pdu.len() < 6 + n {
                return Err(exception::ILLEGAL_DATA_VALUE);
            }
            let values = (0..usize::from(count))
                .map(|i| be(6 + 2 * i))
                .collect::<Result<_, _>>()?;
            Request::WriteMultiple { start, values }
        }
        function => Request::Unsupported { function },
    })
}

/// The PDU answering a read with `words`.
pub fn read_response(function: u8, words: &[u16]) -> Vec<u8> {
    let mut pdu = Vec::with_capacity(2 + words.len() * 2);
    pdu.push(function);
    pdu.push((words.len() * 2) as u8);
    for w in words {
        pdu.extend_from_slice(&w.to_be_bytes());
    }
    pdu
}

/// The PDU of an exception reply.
pub fn exception_response(function: u8, code: u8) -> Vec<u8> {
    vec![function | 0x80, code]
}

/// An RTU frame: unit id, PDU, CRC (low byte first).
pub fn rtu_frame(unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(pdu.len() + 3);
    f.push(unit);
    f.extend_from_slice(pdu);
    let crc = crc16(&f);
    f.extend_from_slice(&crc.to_le_bytes());
    f
}

/// What the front of an RTU receive buffer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtuScan {
    /// More bytes are needed.
    Incomplete,
    /// A request frame of `len` bytes with a good CRC.
    Frame { unit: u8, pdu: Vec<u8>, len: usize },
    /// `skip` bytes at the front are not a request (bad CRC or unknown framing): drop them.
    Junk { skip: usize },
}

/// Find a request frame at the front of `buf`. RTU has no length field; request lengths
/// follow from the function code (and byte count for function 16).
pub fn scan_rtu_request(buf: &[u8]) -> RtuScan {
    let (Some(&unit), Some(&function)) = (buf.first(), buf.get(1)) else {
        return RtuScan::Incomplete;
    };
    let len = match function {
        1..=6 => 8,
        15 | 16 => match buf.get(6) {
            Some(&n) => 9 + usize::from(n),
            None => return RtuScan::Incomplete,
        },
        _ => return RtuScan::Junk { skip: 1 },
    };
    let Some(frame) = buf.get(..len) else {
        return RtuScan::Incomplete;
    };
    let (body, crc) = frame.split_at(len - 2);
    if crc16(body).to_le_bytes() != [crc[0], crc[1]] {
        return RtuScan::Junk { skip: 1 };
    }
    RtuScan::Frame {
        unit,
        pdu: body[1..].to_vec(),
        len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crc_matches_the_specification_example() {
        // Modbus over serial line spec: 01 03 00 00 00 0A → CRC C5 CD (low byte first).
        let f = rtu_frame(1, &[3, 0, 0, 0, 0x0A]);
        assert_eq!(f, [1, 3, 0, 0, 0, 0x0A, 0xC5, 0xCD]);
    }

    #[test]
    fn a_read_request_is_framed_and_parsed() {
        let f = rtu_frame(7, &[4, 0x00, 0x48, 0x00, 0x04]);
        let RtuScan::Frame { unit, pdu, len } = scan_rtu_request(&f) else {
            panic!("no frame");
        };
        assert_eq!((unit, len), (7, 8));
        assert_eq!(
            parse_pdu(&pdu),
            Ok(Request::ReadInput {
                start: 0x48,
                count: 4
            })
        );
    }

    #[test]
    fn a_bad_crc_is_junk_and_a_partial_frame_waits() {
        let mut f = rtu_frame(7, &[3, 0, 0, 0, 2]);
        assert_eq!(scan_rtu_request(&f[..5]), RtuScan::Incomplete);
        f[7] ^= 0xFF;
        assert_eq!(scan_rtu_request(&f), RtuScan::Junk { skip: 1 });
    }

    #[test]
    fn a_write_multiple_request_carries_its_values() {
        let f = rtu_frame(1, &[16, 0, 10, 0, 2, 4, 0, 1, 0, 2]);
        let RtuScan::Frame { pdu, len, .. } = scan_rtu_request(&f) else {
            panic!("no frame");
        };
        assert_eq!(len, f.len());
        assert_eq!(
            parse_pdu(&pdu),
            Ok(Request::WriteMultiple {
                start: 10,
                values: vec![1, 2]
            })
        );
    }

    proptest! {
        #[test]
        fn scanning_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = scan_rtu_request(&bytes);
            let _ = parse_pdu(&bytes);
        }
    }
}
