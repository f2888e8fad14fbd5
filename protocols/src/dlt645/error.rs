//! Errors that carry what was wrong.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Dlt645Error {
    #[error("no frame start: expected 68 at offset {offset}, found {found:02X}")]
    NoStart { offset: usize, found: u8 },
    #[error("second 68 missing: found {found:02X} at offset {offset}")]
    NoSecondStart { offset: usize, found: u8 },
    #[error("frame cut short: {have} of {need} bytes")]
    Truncated { have: usize, need: usize },
    #[error("checksum mismatch: frame says {got:02X}, bytes sum to {expected:02X}")]
    BadChecksum { expected: u8, got: u8 },
    #[error("frame does not end in 16 (found {found:02X} at offset {offset})")]
    BadEnd { offset: usize, found: u8 },
    #[error("{extra} bytes after the end of the frame")]
    TrailingBytes { extra: usize },
    #[error("byte {byte:02X} at value offset {index} is not packed BCD")]
    NotBcd { index: usize, byte: u8 },
    #[error("data too short for {what}: {have} of {need} bytes")]
    ShortData {
        what: String,
        have: usize,
        need: usize,
    },
    #[error("data field longer than 255 bytes ({len})")]
    TooLong { len: usize },
    #[error("not a hex string: {0}")]
    Hex(String),
    #[error("address {0:?}: use 12 digits (or AA pairs as wildcards)")]
    BadAddress(String),
}
