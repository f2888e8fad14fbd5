//! DL/T 698.45, the object-oriented meter protocol: link frames (with SC scrambling and link
//! fragments), the A-XDR Data model, APDUs and DAR codes. Sans-IO: bytes in, frames, APDUs
//! and values out. `../shared/protocols/dlt698-notes.md` is the reference; what it marks as
//! unverified is marked so here too.

pub mod apdu;
pub mod axdr;
pub mod catalogue;
pub mod dar;
pub mod data;
pub mod describe;
pub mod error;
pub mod frame;
pub mod plan;

pub use apdu::Apdu;
pub use dar::Dar;
pub use data::{Data, Oad};
pub use error::Dlt698Error;
pub use frame::{Control, Frame, Scan, ServerAddress};

/// Hex text (spaces, colons and dashes ignored) to bytes.
pub fn from_hex(s: &str) -> Result<Vec<u8>, Dlt698Error> {
    crate::dlt645::frame::from_hex(s).map_err(|e| Dlt698Error::Hex(e.to_string()))
}
