//! Stage one: the TOML file as strict structs. Unknown keys are errors, durations and sizes are
//! human-readable. Nothing here checks meaning; `validate.rs` does.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use bytesize::ByteSize;
use serde::Deserialize;

pub use super::model::{BusProtocol, Parity};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    pub id: String,
    pub state_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSerial {
    pub device: PathBuf,
    /// Default by protocol: Modbus RTU 9600, DL/T 645-2007 2400, DL/T 645-1997 1200.
    pub baud: Option<u32>,
    /// Default by protocol: none for Modbus RTU, even for DL/T 645.
    pub parity: Option<Parity>,
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
}

fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBus {
    pub name: String,
    pub protocol: BusProtocol,
    pub serial: Option<RawSerial>,
    pub tcp: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    pub retries: Option<u32>,
    /// Meters polled at once (TCP buses only).
    pub concurrency: Option<usize>,
    /// Silence between frames on a serial line; default 3.5 character times (at least 1.75 ms).
    #[serde(default, with = "humantime_serde")]
    pub frame_gap: Option<Duration>,
    /// Unused registers a read may span to join two points.
    pub max_gap: Option<u16>,
    /// Registers per read request, at most 125.
    pub max_registers: Option<u16>,
    /// Consecutive failed polls before a meter is reported offline.
    pub offline_after: Option<u32>,
    /// First and longest wait between probes of an offline meter.
    #[serde(default, with = "humantime_serde")]
    pub backoff: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub backoff_max: Option<Duration>,
    /// DL/T 645 meters keep local time: their offset from UTC, "+08:00" unless given.
    pub utc_offset: Option<String>,
    /// DL/T 645: broadcast the gateway's time at most this often when a meter's clock is off.
    #[serde(default, with = "humantime_serde")]
    pub time_sync: Option<Duration>,
    /// DL/T 645: a meter off by more than this is reported, not corrected (default 5m).
    #[serde(default, with = "humantime_serde")]
    pub time_sync_max: Option<Duration>,
    #[serde(default)]
    pub meter: Vec<RawMeter>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMeter {
    pub id: String,
    pub unit: Option<u8>,
    pub address: Option<String>,
    pub profile: String,
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    #[serde(default)]
    pub intervals: BTreeMap<String, HumanDuration>,
    /// Free labels (feeder, site, …) that alert rules can select on and alerts carry.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct HumanDuration(#[serde(with = "humantime_serde")] pub Duration);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMqtt {
    pub url: String,
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    #[serde(default = "default_qos")]
    pub qos: u8,
    pub client_id: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    #[serde(default, with = "humantime_serde")]
    pub keep_alive: Option<Duration>,
    /// Publishes awaiting PUBACK at once.
    pub inflight: Option<u16>,
    pub exception: Option<RawException>,
}

/// `[mqtt.exception]`, `[influxdb.exception]`: send a value only when it moved by more than
/// its deadband or its heartbeat is due; `rule`s (first match) refine it per meter, bus,
/// profile and quantity.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawException {
    pub deadband: Option<RawDeadband>,
    #[serde(default, with = "humantime_serde")]
    pub heartbeat: Option<Duration>,
    #[serde(default)]
    pub rule: Vec<RawExceptionRule>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawExceptionRule {
    #[serde(default)]
    pub meters: Vec<String>,
    #[serde(default)]
    pub buses: Vec<String>,
    #[serde(default)]
    pub profiles: Vec<String>,
    #[serde(default)]
    pub quantities: Vec<String>,
    pub deadband: Option<RawDeadband>,
    #[serde(default, with = "humantime_serde")]
    pub heartbeat: Option<Duration>,
}

/// A deadband as written: a number (the quantity's unit) or text (`"1%"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawDeadband {
    Number(f64),
    Text(String),
}

fn default_prefix() -> String {
    "meterd".into()
}
fn default_qos() -> u8 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum InfluxApi {
    V1,
    #[default]
    V2,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInflux {
    pub url: String,
    #[serde(default)]
    pub api: InfluxApi,
    pub org: Option<String>,
    pub bucket: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub token_env: Option<String>,
    pub database: Option<String>,
    pub retention_policy: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
    pub batch_size: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    pub batch_interval: Option<Duration>,
    /// How often gateway, bus and meter status points are written (default 30s).
    #[serde(default, with = "humantime_serde")]
    pub status_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    pub exception: Option<RawException>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawJournal {
    pub max_size: Option<ByteSize>,
    pub memory: Option<ByteSize>,
    #[serde(default, with = "humantime_serde")]
    pub fsync: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub cursor_sync: Option<Duration>,
}

/// `[remote]`: commands from the master station over MQTT (off unless listed). Keys come
/// from a file or the environment only: there is no inline `key`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRemote {
    #[serde(default)]
    pub commands: Vec<String>,
    pub key_file: Option<PathBuf>,
    pub key_env: Option<String>,
    pub relay_key_file: Option<PathBuf>,
    pub relay_key_env: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub window: Option<Duration>,
    /// Requests per minute, by command.
    #[serde(default)]
    pub rate_limit: std::collections::BTreeMap<String, u32>,
    /// Meters whose supply relay may be commanded (DL/T 645-2007 meters of this config).
    #[serde(default)]
    pub relay_meters: Vec<String>,
    /// The meters' remote-control password: 8 digits, the level then the password
    /// (`02123456`), from a file or the environment.
    pub relay_password_file: Option<PathBuf>,
    pub relay_password_env: Option<String>,
    /// The operator code sent with relay commands (8 digits).
    pub relay_operator: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub listen: Option<SocketAddr>,
}

/// `[alerts]`: built-in rules (on by default), threshold rules and notifiers.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    /// Re-send interval of firing alerts to Alertmanager (default 1m).
    #[serde(default, with = "humantime_serde")]
    pub resend: Option<Duration>,
    /// Publish alert events on `{prefix}/{gateway}/alert` when `[mqtt]` is set (default true).
    pub mqtt: Option<bool>,
    /// Write alert events to InfluxDB as measurement `alert` when `[influxdb]` is set (default true).
    pub influxdb: Option<bool>,
    #[serde(default)]
    pub builtin: BTreeMap<String, RawBuiltin>,
    #[serde(default)]
    pub rule: Vec<RawRule>,
    #[serde(default)]
    pub alertmanager: Vec<RawAlertmanager>,
    #[serde(default)]
    pub webhook: Vec<RawWebhook>,
}

/// One built-in rule's settings. Parameters that do not apply to the rule are reported.
///
/// The fields every rule takes (severity … match_labels) are repeated in [`RawRule`] rather
/// than shared through `#[serde(flatten)]`: serde cannot combine `flatten` with
/// `deny_unknown_fields`, and an unknown key must stay an error.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawBuiltin {
    pub enabled: Option<bool>,
    pub severity: Option<crate::alerts::rules::Severity>,
    #[serde(default, rename = "for", with = "humantime_serde")]
    pub for_: Option<Duration>,
    pub summary: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub meters: Vec<String>,
    #[serde(default)]
    pub buses: Vec<String>,
    #[serde(default)]
    pub profiles: Vec<String>,
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    pub intervals: Option<u32>,
    pub below_v: Option<f64>,
    pub others_above_v: Option<f64>,
    pub below_w: Option<f64>,
    pub clear_w: Option<f64>,
    pub max_rate_kw: Option<f64>,
    pub tolerance_kwh: Option<f64>,
    #[serde(default, with = "humantime_serde")]
    pub hold: Option<Duration>,
    pub max_s: Option<f64>,
    pub clear_s: Option<f64>,
    pub above_percent: Option<f64>,
    pub clear_percent: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: String,
    pub quantity: String,
    pub above: Option<f64>,
    pub below: Option<f64>,
    /// The level at which a firing alert resolves (hysteresis); default the threshold itself.
    pub clear: Option<f64>,
    #[serde(default, rename = "for", with = "humantime_serde")]
    pub for_: Option<Duration>,
    pub severity: Option<crate::alerts::rules::Severity>,
    pub summary: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub meters: Vec<String>,
    #[serde(default)]
    pub buses: Vec<String>,
    #[serde(default)]
    pub profiles: Vec<String>,
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlertmanager {
    pub name: Option<String>,
    pub url: String,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub name: Option<String>,
    pub url: String,
    pub bearer_token: Option<String>,
    pub bearer_token_file: Option<PathBuf>,
    pub bearer_token_env: Option<String>,
    pub hmac_secret: Option<String>,
    pub hmac_secret_file: Option<PathBuf>,
    pub hmac_secret_env: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}
