//! Line-utilisation benches (`benches/dlt645_line.rs`, `benches/modbus_rtu_line.rs`): a paced
//! simulator on a pty counts the time its line is busy; `meterd run` polls it as often as it
//! can; the window's busy share is set against the most that the protocol's silence between
//! frames allows.

use std::{
    path::Path,
    process::Child,
    time::{Duration, Instant},
};

use crate::harness;

/// One measured window.
pub struct Window {
    pub wall_s: f64,
    pub requests: u64,
    pub busy_s: f64,
    /// Readings journaled over the whole run (from meterd's log at stop).
    pub readings: u64,
}

impl Window {
    /// Busy share of the wall time.
    pub fn share(&self) -> f64 {
        self.busy_s / self.wall_s
    }
    /// The most the line can be busy when each request is preceded by `gap` of silence.
    pub fn allowed(&self, gap: Duration) -> f64 {
        self.busy_s / (self.busy_s + gap.as_secs_f64() * self.requests as f64)
    }
    /// Prints the window under `title`.
    pub fn print(&self, title: &str, gap: Duration) {
        println!("{title}");
        println!(
            "  transactions: {} ({:.1}/s), readings journaled overall: {}",
            self.requests,
            self.requests as f64 / self.wall_s,
            self.readings
        );
        println!(
            "  line busy: {:.1} % of wall time; the most the gap allows: {:.1} %",
            self.share() * 100.0,
            self.allowed(gap) * 100.0
        );
        println!(
            "  achieved: {:.1} % of the possible",
            self.share() / self.allowed(gap) * 100.0
        );
    }
}

/// Waits `warmup`, measures `secs` with `counters` (requests, busy nanoseconds), then stops
/// `child` and reads its readings from `log`.
pub fn measure(
    mut child: Child,
    log: &Path,
    warmup: Duration,
    secs: u64,
    counters: impl Fn() -> (u64, u64),
) -> Window {
    std::thread::sleep(warmup);
    let (r0, b0) = counters();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let wall_s = t0.elapsed().as_secs_f64();
    let (r1, b1) = counters();
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    let readings =
        harness::readings_at_stop(&std::fs::read_to_string(log).unwrap_or_default()).unwrap_or(0);
    Window {
        wall_s,
        requests: r1 - r0,
        busy_s: (b1 - b0) as f64 / 1e9,
        readings,
    }
}
