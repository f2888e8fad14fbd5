//! Small-file primitives. Reading the files a config names (the config itself, secrets,
//! certificates, profiles): only regular files, and only up to a size, so a FIFO, `/dev/zero`
//! or `/dev/urandom` given by mistake is an error instead of a hang or gigabytes of memory.
//! Replacing a state file (cursors, alert state, outboxes) atomically.

use std::{
    fs::{self, File},
    io::{Read, Write},
    path::{Path, PathBuf},
};

/// The config file, a profile: far below this.
pub const MAX_TEXT: u64 = 4 << 20;
/// A password, a token, a certificate or key file.
pub const MAX_SECRET: u64 = 1 << 20;

/// The bytes of `path`, refused when it is not a regular file or larger than `max` bytes.
pub fn read_limited(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    // Checked before opening: opening a FIFO for reading would wait for a writer.
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > max {
        return Err(format!("larger than {max} bytes"));
    }
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > max {
        return Err(format!("larger than {max} bytes"));
    }
    Ok(bytes)
}

/// [`read_limited`] as UTF-8 text.
pub fn read_text(path: &Path, max: u64) -> Result<String, String> {
    String::from_utf8(read_limited(path, max)?).map_err(|_| "not UTF-8 text".to_string())
}

/// Replace `path` so that a crash leaves the old or the new content, never a mix: write a
/// temporary file, fsync it, rename it over, fsync the directory. A failed attempt (a full
/// disk) removes its temporary file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if let Some(d) = path.parent().and_then(|d| File::open(d).ok()) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_fifos_directories_and_huge_files_are_refused_without_reading_them() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 2048]).unwrap();
        for (path, why) in [
            (Path::new("/dev/zero"), "not a regular file"),
            (Path::new("/dev/urandom"), "not a regular file"),
            (fifo.as_path(), "not a regular file"),
            (dir.path(), "not a regular file"),
            (big.as_path(), "larger than 1024 bytes"),
        ] {
            assert_eq!(
                read_limited(path, 1024),
                Err(why.to_string()),
                "{}",
                path.display()
            );
        }
        std::fs::write(&big, "ok").unwrap();
        assert_eq!(read_text(&big, 1024).as_deref(), Ok("ok"));
    }
}
