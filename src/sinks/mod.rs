//! Sinks: each reads the log at its own cursor and acknowledges only what its far end
//! confirmed (PUBACK, HTTP 2xx).

pub mod influx;
pub mod mqtt;

use crate::{
    alerts::outbox::Outbox,
    journal::{CursorId, Journal},
    state::{FailingSince, LiveState},
};
use std::{
    sync::{atomic::AtomicU64, Arc},
    time::Duration,
};

/// What every sink task is given besides its own settings.
pub struct SinkCtx {
    pub gateway: String,
    pub log: Arc<Journal>,
    /// Its place in the journal.
    pub cursor: CursorId,
    pub stats: Arc<SinkStats>,
    /// Alert events to deliver along with the readings, if alerts go through this sink.
    pub alerts: Option<Arc<Outbox>>,
    pub live: Arc<LiveState>,
}

/// What a sink did, for `/metrics`.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Readings the far end confirmed.
    pub delivered: AtomicU64,
    /// Readings (InfluxDB: batches) the far end refused for good and that were skipped.
    pub rejected: AtomicU64,
    /// Failed attempts that will be retried (writes, connections).
    pub retries: AtomicU64,
    /// Since when delivery has been failing, if it is.
    pub failing: FailingSince,
}

/// Exponential back-off between attempts: 0.5 s doubling to 30 s.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: Duration::from_millis(500),
        }
    }
}

impl Backoff {
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(30));
        d
    }

    pub fn reset(&mut self) {
        *self = Backoff::default();
    }
}
