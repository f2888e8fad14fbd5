//! Sans-IO meter protocols for meterd.
//!
//! This crate turns bytes and registers into values and back. It never does I/O, never reads a
//! clock and never depends on tokio: the daemon (`meterd`) owns sockets, serial lines and time.
//!
//! - [`modbus`]: register-map decoding (point types, word/byte order, scaling), request
//!   coalescing, and the small slave-side codec the simulator uses.
//! - [`profile`]: meter profiles as data (TOML), built-in ones embedded at build time.
//! - [`quantity`]: the canonical quantity names of the external contract and their units.

pub mod dlt645;
pub mod dlt698;
pub mod modbus;
pub mod profile;
pub mod quantity;
