//! Modbus TCP framing (the MBAP header), for both sides of the wire: the master's requests
//! and the simulator's replies are framed by [`frame`], and either side finds the frame at the
//! front of what it has received with [`scan`].
//!
//! A frame is at most 260 bytes (a 7-byte header and a PDU of at most 253), so a reader needs
//! no more buffer than that; see `bus/modbus.rs` for why meterd's master frames Modbus TCP
//! itself.

/// The longest Modbus TCP frame: the MBAP header's length field counts at most 254 bytes (the
/// unit id and a PDU of at most 253), after the 6 bytes before it.
pub const MAX_FRAME: usize = 6 + 254;

/// The MBAP header of a frame whose PDU is `pdu_len` bytes (at most 253): transaction id,
/// protocol 0, the length of what follows it, unit id.
pub fn header(transaction: u16, unit: u8, pdu_len: usize) -> [u8; 7] {
    let [t0, t1] = transaction.to_be_bytes();
    let [l0, l1] = ((pdu_len + 1) as u16).to_be_bytes();
    [t0, t1, 0, 0, l0, l1, unit]
}

/// A Modbus TCP frame: MBAP header and PDU.
pub fn frame(transaction: u16, unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(pdu.len() + 7);
    f.extend_from_slice(&header(transaction, unit, pdu.len()));
    f.extend_from_slice(pdu);
    f
}

/// A Modbus TCP frame found in a receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    pub transaction: u16,
    pub unit: u8,
    pub pdu: &'a [u8],
    /// Bytes the frame took from the buffer.
    pub len: usize,
}

/// An MBAP header no device would send: the connection should be dropped, as real devices do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad MBAP header: protocol id {protocol}, length {length}")]
pub struct BadHeader {
    pub protocol: u16,
    pub length: usize,
}

/// The frame at the front of a Modbus TCP receive buffer; `Ok(None)` when more bytes are
/// needed.
pub fn scan(buf: &[u8]) -> Result<Option<Frame<'_>>, BadHeader> {
    let Some(header) = buf.get(..7) else {
        return Ok(None);
    };
    let transaction = u16::from_be_bytes([header[0], header[1]]);
    let protocol = u16::from_be_bytes([header[2], header[3]]);
    let length = usize::from(u16::from_be_bytes([header[4], header[5]]));
    if protocol != 0 || !(2..=254).contains(&length) {
        return Err(BadHeader { protocol, length });
    }
    let len = 6 + length;
    let Some(pdu) = buf.get(7..len) else {
        return Ok(None);
    };
    Ok(Some(Frame {
        transaction,
        unit: header[6],
        pdu,
        len,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_frame_is_found_whole_and_waits_when_cut_short() {
        let f = frame(0x1234, 5, &[3, 0, 1, 0, 2]);
        assert_eq!(f, [0x12, 0x34, 0, 0, 0, 6, 5, 3, 0, 1, 0, 2]);
        assert_eq!(
            scan(&f),
            Ok(Some(Frame {
                transaction: 0x1234,
                unit: 5,
                pdu: &[3, 0, 1, 0, 2],
                len: f.len()
            }))
        );
        for cut in 0..f.len() {
            assert_eq!(scan(&f[..cut]), Ok(None), "{cut} bytes");
        }
    }

    #[test]
    fn a_frame_is_found_at_the_front_of_what_follows_it() {
        let mut f = frame(1, 1, &[4, 2, 0, 7]);
        let len = f.len();
        f.extend_from_slice(&frame(2, 1, &[4, 2, 0, 8]));
        let found = scan(&f)
            .ok()
            .flatten()
            .map(|fr| (fr.transaction, fr.pdu, fr.len));
        assert_eq!(found, Some((1, &[4u8, 2, 0, 7][..], len)));
    }

    #[test]
    fn headers_no_device_sends_are_refused() {
        // (header bytes, protocol, length): a protocol id other than 0, a length that cannot
        // hold a unit id and a function code, a length longer than a PDU can be.
        let cases: [([u8; 7], u16, usize); 4] = [
            ([0, 1, 1, 0, 0, 6, 1], 256, 6),
            ([0, 1, 0, 0, 0, 1, 1], 0, 1),
            ([0, 1, 0, 0, 0, 0, 1], 0, 0),
            ([0, 1, 0, 0, 0, 255, 1], 0, 255),
        ];
        for (header, protocol, length) in cases {
            assert_eq!(
                scan(&header),
                Err(BadHeader { protocol, length }),
                "{header:?}"
            );
        }
    }

    #[test]
    fn the_longest_frame_fits_the_largest_buffer_a_reader_needs() {
        let f = frame(7, 1, &[0u8; 253]);
        assert_eq!(f.len(), MAX_FRAME);
        assert_eq!(scan(&f).ok().flatten().map(|fr| fr.len), Some(MAX_FRAME));
    }

    proptest! {
        #[test]
        fn scanning_random_bytes_never_panics_and_never_overruns(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(Some(f)) = scan(&bytes) {
                prop_assert!(f.len <= bytes.len() && f.len <= MAX_FRAME);
            }
        }
    }
}
