//! Configuration in two stages: [`raw`] parses the TOML into strict structs, [`validate`] checks
//! meaning and builds the runtime [`Config`]. Every problem is collected, with the file, line and
//! key it belongs to, so `meterd validate` reports them all at once.

pub mod bounds;
pub mod files;
pub mod raw;
mod validate;

pub use validate::{
    load, load_str, parse_utc_offset, BusConfig, Config, ConfigError, ConfigErrors, HttpConfig,
    InfluxAuth, InfluxConfig, JournalConfig, Link, MeterConfig, MeterGroup, MqttConfig, ProfileSet,
    SerialConfig,
};

/// The commented example config printed by `meterd configfile`; a test checks it validates.
pub const TEMPLATE: &str = include_str!("../../config/meterd.example.toml");
