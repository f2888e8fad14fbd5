//! Live state of every meter, for availability messages, the CLI and (later) the HTTP API.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
};

use tokio::sync::watch;

use crate::reading::Reading;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct MeterState {
    pub bus: String,
    /// `None` until the first poll decided it.
    pub online: Option<bool>,
    pub polls: u64,
    pub timeouts: u64,
    pub link_errors: u64,
    pub exceptions: u64,
    pub last_error: Option<String>,
    pub last_reading: Option<Arc<Reading>>,
    /// The latest value of every quantity, across point groups.
    pub last_values: BTreeMap<String, f64>,
}

/// Shared state; `changed()` wakes whoever watches availability.
#[derive(Debug)]
pub struct LiveState {
    meters: Mutex<BTreeMap<String, MeterState>>,
    version: watch::Sender<u64>,
}

impl Default for LiveState {
    fn default() -> Self {
        LiveState {
            meters: Mutex::new(BTreeMap::new()),
            version: watch::channel(0).0,
        }
    }
}

impl LiveState {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, MeterState>> {
        self.meters.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn update(&self, meter: &str, f: impl FnOnce(&mut MeterState)) {
        let changed = {
            let mut g = self.lock();
            let s = g.entry(meter.to_string()).or_default();
            let before = s.online;
            f(s);
            s.online != before
        };
        if changed {
            self.version.send_modify(|v| *v += 1);
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, MeterState> {
        self.lock().clone()
    }

    /// Meters whose availability is known.
    pub fn availability(&self) -> BTreeMap<String, bool> {
        self.lock()
            .iter()
            .filter_map(|(m, s)| Some((m.clone(), s.online?)))
            .collect()
    }

    /// A receiver that is marked changed whenever some meter's availability changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}
