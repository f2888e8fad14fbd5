//! Cursor files: a sink's position as decimal text and a CRC-32C of it, replaced atomically.

use std::{fs, path::Path};

use super::{io, JournalError};
use crate::files::write_atomically;

/// Cursor file: the position as decimal text, then a CRC-32C of that text.
pub(super) fn read_cursor(path: &Path) -> Result<Option<u64>, String> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut parts = text.split_whitespace();
    let (Some(pos), Some(crc)) = (parts.next(), parts.next()) else {
        return Err(format!("{}: malformed", path.display()));
    };
    let expected = format!(
        "{:08x}",
        crc::Crc::<u32>::new(&crc::CRC_32_ISCSI).checksum(pos.as_bytes())
    );
    if crc != expected {
        return Err(format!("{}: checksum mismatch", path.display()));
    }
    pos.parse()
        .map(Some)
        .map_err(|_| format!("{}: malformed", path.display()))
}

pub(super) fn write_cursor(dir: &Path, name: &str, pos: u64) -> Result<(), JournalError> {
    let path = dir.join(format!("{name}.cursor"));
    let text = pos.to_string();
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI).checksum(text.as_bytes());
    write_atomically(&path, format!("{text} {crc:08x}\n").as_bytes()).map_err(io(&path))
}
