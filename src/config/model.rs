//! The runtime config: what the daemon and the CLI use once a file is validated.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use meterd_protocols::{dlt645::Address, profile::Profile};

use serde::Deserialize;

use super::ProfileSet;

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
    pub remote: Option<RemoteConfig>,
}

/// `[remote]`: which commands the master station may send, and the keys they are signed with.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    pub commands: Vec<crate::remote::Command>,
    pub keys: crate::remote::Keys,
    pub window: Duration,
    pub rate_limit: std::collections::HashMap<crate::remote::Command, u32>,
    /// Meters whose relay may be commanded.
    pub relay_meters: Vec<String>,
    /// Password and operator code for relay commands.
    pub relay_credentials: Option<meterd_protocols::dlt645::request::Credentials>,
}

impl PartialEq for RemoteConfig {
    fn eq(&self, other: &RemoteConfig) -> bool {
        self.relay_meters == other.relay_meters
            && self.relay_credentials == other.relay_credentials
            && self.commands == other.commands
            && self.keys.command == other.keys.command
            && self.keys.relay == other.keys.relay
            && self.window == other.window
            && self.rate_limit == other.rate_limit
    }
}

impl Config {
    /// What the alert engine needs to know of every configured meter.
    /// Shared: the alert engine's settings (kept for an engine started again) and the
    /// running engine hold the same ones.
    pub fn meter_infos(&self) -> Vec<Arc<crate::alerts::rules::MeterInfo>> {
        self.buses
            .iter()
            .flat_map(|b| b.meters.iter().map(move |m| Arc::new(m.info(b))))
            .collect()
    }

    pub fn meter(&self, id: &str) -> Option<(&BusConfig, &MeterConfig)> {
        self.buses
            .iter()
            .find_map(|b| b.meters.iter().find(|m| m.id == id).map(|m| (b, m)))
    }
}

/// A bus's protocol (`bus.protocol`; `--protocol` on the command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum BusProtocol {
    ModbusRtu,
    ModbusTcp,
    ModbusRtuOverTcp,
    #[serde(rename = "dlt645-2007")]
    #[value(name = "dlt645-2007")]
    Dlt645_2007,
    #[serde(rename = "dlt645-1997")]
    #[value(name = "dlt645-1997")]
    Dlt645_1997,
    /// DL/T 698.45 on a serial line or through a transparent serial server.
    #[serde(rename = "dlt698")]
    #[value(name = "dlt698")]
    Dlt698,
}

impl BusProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            BusProtocol::ModbusRtu => "modbus-rtu",
            BusProtocol::ModbusTcp => "modbus-tcp",
            BusProtocol::ModbusRtuOverTcp => "modbus-rtu-over-tcp",
            BusProtocol::Dlt645_2007 => "dlt645-2007",
            BusProtocol::Dlt645_1997 => "dlt645-1997",
            BusProtocol::Dlt698 => "dlt698",
        }
    }

    pub fn is_dlt645(self) -> bool {
        self.dlt645_version().is_some()
    }

    /// DL/T 645 or 698.45: meters by address, on a serial line or a serial server.
    pub fn is_addressed(self) -> bool {
        self.is_dlt645() || self == BusProtocol::Dlt698
    }

    /// The DL/T 645 edition the protocol speaks, if it is DL/T 645.
    pub fn dlt645_version(self) -> Option<meterd_protocols::dlt645::Version> {
        use meterd_protocols::dlt645::Version;
        match self {
            BusProtocol::Dlt645_2007 => Some(Version::V2007),
            BusProtocol::Dlt645_1997 => Some(Version::V1997),
            _ => None,
        }
    }

    // The one home of each protocol's defaults, for configs and the command line alike.

    /// 9600 for Modbus; DL/T 645-2007 meters ship at 2400, -1997 meters at 1200.
    pub fn default_baud(self) -> u32 {
        match self {
            BusProtocol::Dlt645_2007 => 2400,
            BusProtocol::Dlt645_1997 => 1200,
            _ => 9600,
        }
    }

    /// DL/T 645 and 698.45 lines run 8E1; Modbus 8N1.
    pub fn default_parity(self) -> Parity {
        if self.is_addressed() {
            Parity::Even
        } else {
            Parity::None
        }
    }

    /// DL/T 645 meters may take 500 ms to start replying, plus the transfer at 1200-2400 baud.
    pub fn default_timeout(self) -> Duration {
        Duration::from_millis(if self.is_addressed() { 1000 } else { 500 })
    }

    /// Silence before a request: DL/T 645 asks for 20 ms; RTU 3.5 characters on a serial line
    /// and 5 ms through a serial server; none on Modbus TCP.
    pub fn default_frame_gap(self, link: &Link) -> Duration {
        match link {
            _ if self.is_dlt645() => Duration::from_millis(20),
            // 698.45 meters want at least 33 bit times of silence (notes §11).
            Link::Serial(s) if self == BusProtocol::Dlt698 => {
                Duration::from_secs_f64(33.0 / f64::from(s.baud.max(1)))
                    .max(Duration::from_millis(2))
            }
            Link::Tcp(_) if self == BusProtocol::Dlt698 => Duration::from_millis(5),
            Link::Serial(s) => s.rtu_frame_gap(),
            _ if self == BusProtocol::ModbusRtuOverTcp => Duration::from_millis(5),
            Link::Tcp(_) => Duration::ZERO,
        }
    }
}

/// Serial parity (`serial.parity`; `--parity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

/// Request coalescing: the most registers one Modbus read may ask for (the protocol's limit)
/// and the widest gap of unwanted registers read to save a request.
pub const DEFAULT_MAX_REGISTERS: u16 = 125;
pub const DEFAULT_MAX_GAP: u16 = 16;
/// DL/T 645 meters keep local time; Chinese meters China Standard Time.
pub const DEFAULT_UTC_OFFSET_S: i64 = 8 * 3600;

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
    /// Shared, not copied, by the bus's task and the daemon's view of what runs (at 2,000
    /// meters each copy held 0.4 MB).
    pub meters: Arc<[MeterConfig]>,
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
    /// DL/T 645 address (None for other meters).
    pub address: Option<Address>,
    /// DL/T 698.45 server address (None for other meters).
    pub server_address: Option<meterd_protocols::dlt698::ServerAddress>,
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
    /// Report by exception (`[mqtt.exception]`); `None`: every value of every reading.
    pub exception: Option<Arc<crate::exception::Exception>>,
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
    /// Report by exception (`[influxdb.exception]`); `None`: every value of every reading.
    pub exception: Option<Arc<crate::exception::Exception>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JournalConfig {
    pub max_size: u64,
    /// Bytes of readings held in memory (recent ones, and what a failing disk cannot take).
    pub memory: u64,
    pub fsync: Duration,
    /// How often moved sink cursors are written to disk (a clean stop always writes them).
    pub cursor_sync: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    pub listen: SocketAddr,
}
