//! Modbus register maps: how a meter's registers become quantities.
//!
//! - [`types`]: point types (u16 … f64) and the four byte/word orders.
//! - [`plan`]: points, request coalescing into as few reads as possible, block decoding.
//! - [`tcp`]: Modbus TCP framing (the MBAP header), for both sides of the wire.
//! - [`master`]: a register read's request and the checks on its reply.
//! - [`slave`]: the server side of the wire (requests, replies, RTU framing, CRC), for the
//!   simulator.

pub mod master;
pub mod plan;
pub mod slave;
pub mod tcp;
pub mod types;

pub use plan::{plan_reads, shortest_f32, Point, ReadBlock, RegisterKind, MAX_READ_REGISTERS};
pub use types::{ByteOrder, PointType, RawValue};
