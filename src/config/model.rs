//! The runtime config: what the daemon and the CLI use once a file is validated.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use meterd_protocols::{dlt645::Address, profile::Profile};

use super::{raw::*, ProfileSet};

#[derive(Debug, Clone)]
pub struct Config {
    pub gateway_id: String,
    pub state_dir: PathBuf,
    pub buses: Vec<BusConfig>,
    pub mqtt: Option<MqttConfig>,
    pub influx: Option<InfluxConfig>,
    pub journal: JournalConfig,
    pub http: HttpConfig,
    pub profiles: Arc<ProfileSet>,
    pub alerts: crate::alerts::AlertsConfig,
}

impl Config {
    /// What the alert engine needs to know of every configured meter.
    pub fn meter_infos(&self) -> Vec<crate::alerts::rules::MeterInfo> {
        self.buses
            .iter()
            .flat_map(|b| b.meters.iter().map(move |m| m.info(b)))
            .collect()
    }

    pub fn meter(&self, id: &str) -> Option<(&BusConfig, &MeterConfig)> {
        self.buses
            .iter()
            .find_map(|b| b.meters.iter().find(|m| m.id == id).map(|m| (b, m)))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SerialConfig {
    pub device: PathBuf,
    pub baud: u32,
    pub parity: Parity,
    pub data_bits: u8,
    pub stop_bits: u8,
}

impl SerialConfig {
    /// Bits on the wire per character: start, data, parity, stop.
    pub fn bits_per_char(&self) -> u32 {
        1 + u32::from(self.data_bits)
            + u32::from(self.parity != Parity::None)
            + u32::from(self.stop_bits)
    }

    /// The Modbus RTU inter-frame silence: 3.5 character times, at least 1.75 ms.
    pub fn rtu_frame_gap(&self) -> Duration {
        let secs = 3.5 * f64::from(self.bits_per_char()) / f64::from(self.baud.max(1));
        Duration::from_secs_f64(secs).max(Duration::from_micros(1750))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Link {
    Serial(SerialConfig),
    Tcp(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct BusConfig {
    pub name: String,
    pub protocol: BusProtocol,
    pub link: Link,
    pub timeout: Duration,
    pub retries: u32,
    pub concurrency: usize,
    pub frame_gap: Duration,
    pub max_gap: u16,
    pub max_registers: u16,
    pub offline_after: u32,
    pub backoff: Duration,
    pub backoff_max: Duration,
    /// Seconds the meters' local clocks are ahead of UTC (DL/T 645).
    pub utc_offset_s: i64,
    /// DL/T 645 broadcast time sync: at most once per this, for offsets up to `time_sync_max`.
    pub time_sync: Option<Duration>,
    pub time_sync_max: Duration,
    pub meters: Vec<MeterConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MeterGroup {
    pub name: String,
    pub interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MeterConfig {
    pub id: String,
    /// Modbus unit id (0 for DL/T 645 meters).
    pub unit: u8,
    /// DL/T 645 address (None for Modbus meters).
    pub address: Option<Address>,
    pub profile: Arc<Profile>,
    pub groups: Vec<MeterGroup>,
    pub labels: BTreeMap<String, String>,
}

impl MeterConfig {
    /// The meter as the alert engine knows it (its shortest polling interval decides when it
    /// counts as offline).
    pub fn info(&self, bus: &BusConfig) -> crate::alerts::rules::MeterInfo {
        crate::alerts::rules::MeterInfo {
            id: self.id.clone(),
            bus: bus.name.clone(),
            profile: self.profile.name.clone(),
            labels: self.labels.clone(),
            interval: self
                .groups
                .iter()
                .map(|g| g.interval)
                .min()
                .unwrap_or(Duration::from_secs(60)),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub topic_prefix: String,
    pub qos: u8,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    pub keep_alive: Duration,
    pub inflight: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub enum InfluxAuth {
    V2 {
        org: String,
        bucket: String,
        token: String,
    },
    V1 {
        database: String,
        retention_policy: Option<String>,
        username: Option<String>,
        password: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct InfluxConfig {
    pub url: String,
    pub auth: InfluxAuth,
    pub batch_size: usize,
    pub batch_interval: Duration,
    pub status_interval: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JournalConfig {
    pub max_size: u64,
    /// Bytes of readings held in memory (recent ones, and what a failing disk cannot take).
    pub memory: u64,
    pub fsync: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    pub listen: SocketAddr,
}
