//! Configuration in two stages: [`raw`] parses the TOML into strict structs, then [`load`]
//! checks meaning section by section (`bus`, `mqtt`, `influx`, `alerts`, with `bounds` for
//! every duration and `secret` for credentials) and builds the runtime [`model`]. Every problem
//! is collected with the file, line and key it belongs to ([`report`]), so `meterd validate`
//! reports them all at once.

mod alerts;
pub mod bounds;
mod bus;
mod exception;
mod influx;
mod load;
pub mod model;
mod mqtt;
mod profiles;
pub mod raw;
mod remote;
mod report;
mod secret;
mod values;

pub use load::{load, load_str};
pub use model::{
    BusConfig, BusProtocol, Config, HttpConfig, InfluxAuth, InfluxConfig, JournalConfig, Link,
    MeterConfig, MeterGroup, MqttConfig, Parity, RemoteConfig, SerialConfig, DEFAULT_MAX_GAP,
    DEFAULT_MAX_REGISTERS, DEFAULT_UTC_OFFSET_S,
};
pub use profiles::ProfileSet;
pub use report::{ConfigError, ConfigErrors};
pub use values::parse_utc_offset;

/// The commented example config printed by `meterd configfile`; a test checks it validates.
pub const TEMPLATE: &str = include_str!("../../config/meterd.example.toml");
