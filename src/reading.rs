//! A reading: one poll of one meter's point group, and its encodings for the sinks.

use std::{sync::Arc, time::SystemTime};

/// One meter, one poll. `ts` is the sampling time (when the request went out), kept as is
/// when the reading is delivered late.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub meter: Arc<str>,
    pub bus: Arc<str>,
    pub profile: Arc<str>,
    pub ts: SystemTime,
    /// Per meter, +1 per reading; assigned when the reading enters the log.
    pub seq: u64,
    pub values: Vec<(Arc<str>, f64)>,
    /// Read on demand (a remote `read`), not on the meter's schedule.
    pub on_demand: bool,
}
