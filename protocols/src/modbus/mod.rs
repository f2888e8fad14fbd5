//! Modbus register maps: how a meter's registers become quantities.
//!
//! - [`types`]: point types (u16 … f64) and the four byte/word orders.
//! - [`plan`]: points, request coalescing into as few reads as possible, block decoding.
//! - [`slave`]: the server side of the wire (RTU and TCP framing, CRC), for the simulator.

pub mod plan;
pub mod slave;
pub mod types;

pub use plan::{plan_reads, shortest_f32, Point, ReadBlock, RegisterKind, MAX_READ_REGISTERS};
pub use types::{ByteOrder, PointType, RawValue};
