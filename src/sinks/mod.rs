//! Sinks: each reads the log at its own cursor and acknowledges only what its far end
//! confirmed (PUBACK, HTTP 2xx).

pub mod influx;
pub mod mqtt;

pub use crate::state::SinkStats;

use crate::{
    alerts::outbox::Outbox,
    journal::{CursorId, Journal},
    state::LiveState,
};
use std::sync::Arc;

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
