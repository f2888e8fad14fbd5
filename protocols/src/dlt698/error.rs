//! Errors that carry what was wrong: which check failed, what was expected and what came.

use super::dar::Dar;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Dlt698Error {
    // Frame checks.
    #[error("no frame start: expected 68 at offset {offset}, found {found:02X}")]
    NoStart { offset: usize, found: u8 },
    #[error("frame cut short: {have} of {need} bytes")]
    Truncated { have: usize, need: usize },
    #[error("length field {word:04X} has reserved bits 14-15 set")]
    LengthReserved { word: u16 },
    #[error("length field {len} is too small for a header with a {sa_len}-byte server address")]
    LengthTooSmall { len: usize, sa_len: usize },
    #[error("bad HCS: frame says {got:04X}, header computes to {expected:04X}")]
    BadHcs { expected: u16, got: u16 },
    #[error("bad FCS: frame says {got:04X}, frame computes to {expected:04X}")]
    BadFcs { expected: u16, got: u16 },
    #[error("frame does not end in 16 (found {found:02X} at offset {offset})")]
    BadEnd { offset: usize, found: u8 },
    #[error("control byte {control:02X}: {why}")]
    BadControl { control: u8, why: &'static str },
    #[error("{extra} bytes after the end of the frame")]
    TrailingBytes { extra: usize },
    #[error("fragment frame without its 2-byte format word")]
    NoFragmentWord,

    // APDU and Data.
    #[error("APDU cut short at offset {offset}: {what} needs {need} more bytes")]
    ShortApdu {
        what: &'static str,
        offset: usize,
        need: usize,
    },
    #[error("unknown APDU tag {tag:02X}")]
    UnknownApdu { tag: u8 },
    #[error("unknown {what} choice {choice} at offset {offset}")]
    UnknownChoice {
        what: &'static str,
        choice: u8,
        offset: usize,
    },
    #[error("unknown Data tag {tag} at offset {offset}")]
    UnknownDataTag { tag: u8, offset: usize },
    #[error("bad length encoding at offset {offset}: {why}")]
    BadLength { offset: usize, why: &'static str },
    #[error("{what} at offset {offset}: {value} is out of range")]
    OutOfRange {
        what: &'static str,
        offset: usize,
        value: u32,
    },
    #[error("nesting deeper than {limit} levels at offset {offset}")]
    TooDeep { limit: usize, offset: usize },
    #[error("{extra} trailing byte(s) after the APDU at offset {offset}")]
    TrailingApdu { extra: usize, offset: usize },
    #[error("{what}: {len} bytes do not fit a length field")]
    TooLong { what: &'static str, len: usize },

    // Results and user input.
    #[error("{oad}: {dar}")]
    Refused { oad: String, dar: Dar },
    #[error("not a hex string: {0}")]
    Hex(String),
    #[error("address {0:?}: use 1 to 32 digits as on the nameplate (A for a wildcard digit)")]
    BadAddress(String),
    #[error("OAD {0:?}: use 8 hex digits such as 00100200 (OI, attribute, index)")]
    BadOad(String),
}
