//! Helpers for tests that need a real resource this process must set up: a small tmpfs that
//! can be filled to the last byte (a full disk, without touching the machine's disks).

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Command,
};

/// A tmpfs of a given size mounted on a fresh temporary directory; unmounted on drop.
/// Mounting needs root: without it, `mount` panics saying so (never a silent skip).
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    pub fn mount(bytes: u64) -> Tmpfs {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "meterd-tmpfs-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("mount point");
        let out = as_root(
            &[
                "mount",
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes},mode=1777"),
                "tmpfs",
            ],
            &dir,
        );
        assert!(
            out.status.success(),
            "this test mounts a {bytes}-byte tmpfs to fill a disk for real, which needs root \
             or password-less sudo (as scripts/test installs packages): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs { dir }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn filler(&self) -> PathBuf {
        self.dir.join("filler")
    }

    /// Fill every free byte (a file written until the disk refuses).
    pub fn fill(&self) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.filler())
            .expect("filler file");
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        // The last partial page too.
        while f.write_all(&[0]).is_ok() {}
    }

    /// Give the space back.
    pub fn free(&self) {
        let _ = std::fs::remove_file(self.filler());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = as_root(&["umount", "-l"], &self.dir);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Run `args` followed by `path` as root: directly when we are root, else through
/// `sudo -n` (never prompting).
fn as_root(args: &[&str], path: &Path) -> std::process::Output {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let mut cmd = if root {
        Command::new(args[0])
    } else {
        let mut c = Command::new("sudo");
        c.arg("-n").arg(args[0]);
        c
    };
    cmd.args(&args[1..]).arg(path);
    cmd.output().unwrap_or_else(|e| std::process::Output {
        status: std::os::unix::process::ExitStatusExt::from_raw(1 << 8),
        stdout: Vec::new(),
        stderr: format!("cannot run {}: {e}", args[0]).into_bytes(),
    })
}
