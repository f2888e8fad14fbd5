//! meterd: smart-meter data acquisition. Buses poll meters, readings go through a log with a
//! cursor per sink, sinks deliver to MQTT and InfluxDB and acknowledge only what their far end
//! confirmed. See ARCHITECTURE.md for the map.

pub mod alerts;
pub mod backoff;
pub mod body;
pub mod bus;
pub mod config;
pub mod contract;
pub mod daemon;
pub mod exception;
pub mod failing;
pub mod files;
pub mod history;
pub mod http;
pub mod journal;
pub mod reading;
pub mod redact;
pub mod remote;
pub mod sim;
pub mod sinks;
pub mod state;
#[doc(hidden)]
pub mod testing;

pub use meterd_protocols as protocols;
