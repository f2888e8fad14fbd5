//! Buses: one task owns each bus and schedules every meter on it.

pub mod modbus;
pub mod scheduler;

pub use modbus::{run_bus, ModbusLink, PollError};
