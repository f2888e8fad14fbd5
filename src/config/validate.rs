//! Stage two: meaning. Turns raw structs into the runtime config, collecting every problem.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use meterd_protocols::{
    dlt645::Address,
    profile::{Profile, ProfileProtocol},
};
use serde::de::DeserializeOwned;

use super::raw::*;

#[path = "alerts.rs"]
mod alerts;

/// One problem, located as precisely as the file allows.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: String,
    /// 1-based line and column, when the key exists in the file.
    pub position: Option<(usize, usize)>,
    /// Dotted key path, e.g. `bus[0].meter[1].unit`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.position, self.key.is_empty()) {
            (Some((l, c)), false) => {
                write!(f, "{}:{l}:{c}: {}: {}", self.file, self.key, self.message)
            }
            (Some((l, c)), true) => write!(f, "{}:{l}:{c}: {}", self.file, self.message),
            (None, false) => write!(f, "{}: {}: {}", self.file, self.key, self.message),
            (None, true) => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Every problem found in a config.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

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

/// Built-in profiles plus those from `profiles_dir` (a user file overrides a built-in one of
/// the same name).
#[derive(Debug, Default)]
pub struct ProfileSet {
    pub profiles: BTreeMap<String, Arc<Profile>>,
}

impl ProfileSet {
    pub fn builtin() -> ProfileSet {
        let mut set = ProfileSet::default();
        for p in Profile::builtin() {
            match p {
                Ok(p) => {
                    set.profiles.insert(p.name.clone(), Arc::new(p));
                }
                // The protocols crate's tests reject a broken built-in; never drop one silently.
                Err(e) => tracing::error!(error = %e, "built-in profile skipped"),
            }
        }
        set
    }

    /// Built-ins plus every `*.toml` in `dir`; problems come back as strings naming the file.
    pub fn with_dir(dir: &Path) -> (ProfileSet, Vec<String>) {
        let mut set = ProfileSet::builtin();
        let mut problems = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                problems.push(format!("cannot read {}: {e}", dir.display()));
                return (set, problems);
            }
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        for f in files {
            let origin = f.display().to_string();
            match super::files::read_text(&f, super::files::MAX_TEXT) {
                Ok(text) => match Profile::parse(&text, &origin) {
                    Ok(p) => {
                        set.profiles.insert(p.name.clone(), Arc::new(p));
                    }
                    Err(e) => problems.extend(e.to_string().lines().map(String::from)),
                },
                Err(e) => problems.push(format!("{origin}: {e}")),
            }
        }
        (set, problems)
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Profile>> {
        self.profiles.get(name)
    }
}

/// A key path segment.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

fn path_string(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Collects problems and finds where each key sits in the file.
struct Reporter<'a> {
    file: String,
    text: &'a str,
    line_starts: std::cell::OnceCell<Vec<usize>>,
    doc: Option<toml_edit::ImDocument<&'a str>>,
    errors: Vec<ConfigError>,
}

impl<'a> Reporter<'a> {
    /// Line and column (from 1) of a byte offset: a binary search in the line starts, found
    /// once, so reporting many errors stays linear (it was a scan from the top per error).
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let starts = self.line_starts.get_or_init(|| {
            std::iter::once(0)
                .chain(self.text.match_indices('\n').map(|(i, _)| i + 1))
                .collect()
        });
        let offset = offset.min(self.text.len());
        let line = starts.partition_point(|&s| s <= offset).max(1);
        let start = starts[line - 1];
        let col = self
            .text
            .get(start..offset)
            .map_or(0, |l| l.chars().count())
            + 1;
        (line, col)
    }

    /// The position of the deepest part of `path` that exists in the file.
    fn locate(&self, path: &[Seg]) -> Option<(usize, usize)> {
        self.locate_in_table(self.doc.as_ref()?.as_table(), path, None)
    }

    fn locate_in_table(
        &self,
        table: &toml_edit::Table,
        rest: &[Seg],
        mut best: Option<std::ops::Range<usize>>,
    ) -> Option<(usize, usize)> {
        let mut item_ref: Option<&toml_edit::Item> = None;
        let mut table_like: Option<&dyn toml_edit::TableLike> = Some(table);
        for (n, seg) in rest.iter().enumerate() {
            match seg {
                Seg::Key(k) => {
                    let Some(t) = table_like else { break };
                    if let Some((key, _)) = t.get_key_value(k) {
                        best = key.span().or(best);
                    }
                    let Some(next) = t.get(k) else { break };
                    item_ref = Some(next);
                    table_like = next.as_table_like();
                }
                Seg::Index(i) => match item_ref {
                    Some(toml_edit::Item::ArrayOfTables(a)) => {
                        let Some(t) = a.get(*i) else { break };
                        best = t.span().or(best);
                        return self.locate_in_table(t, &rest[n + 1..], best);
                    }
                    Some(toml_edit::Item::Value(toml_edit::Value::Array(arr))) => {
                        if let Some(v) = arr.get(*i) {
                            best = v.span().or(best);
                        }
                        break;
                    }
                    _ => break,
                },
            }
        }
        best.map(|r| self.line_col(r.start))
    }

    fn error(&mut self, path: &[Seg], message: impl Into<String>) {
        let position = self.locate(path);
        self.errors.push(ConfigError {
            file: self.file.clone(),
            position,
            key: path_string(path),
            message: message.into(),
        });
    }

    /// Deserialize one part of the file; on failure report it at the offending key.
    fn parse<T: DeserializeOwned>(&mut self, path: &[Seg], value: toml::Value) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(e) => {
                let mut full = path.to_vec();
                for seg in e.path().iter() {
                    match seg {
                        serde_path_to_error::Segment::Seq { index } => {
                            full.push(Seg::Index(*index))
                        }
                        serde_path_to_error::Segment::Map { key } => {
                            full.push(Seg::Key(key.clone()))
                        }
                        serde_path_to_error::Segment::Enum { variant } => {
                            full.push(Seg::Key(variant.clone()))
                        }
                        serde_path_to_error::Segment::Unknown => {}
                    }
                }
                // toml appends "in `key`" on a second line; the key path already says where.
                let msg = e.into_inner().to_string();
                self.error(&full, msg.lines().next().unwrap_or("").trim().to_string());
                None
            }
        }
    }
}

fn k(s: &str) -> Seg {
    Seg::Key(s.to_string())
}

/// Read and validate a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    match super::files::read_text(path, super::files::MAX_TEXT) {
        Ok(text) => load_str(&text, &file),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            file,
            position: None,
            key: String::new(),
            message: format!("cannot read the config: {e}"),
        }])),
    }
}

/// Validate config text; `file` names it in errors. Relative paths in the config are taken
/// relative to the config file's directory.
pub fn load_str(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    let mut r = Reporter {
        file: file.to_string(),
        text,
        line_starts: Default::default(),
        doc: None,
        errors: Vec::new(),
    };
    let doc = match toml_edit::ImDocument::parse(text) {
        Ok(d) => d,
        Err(e) => {
            let position = e.span().map(|s| r.line_col(s.start));
            let message = e.message().trim().replace('\n', ": ");
            return Err(ConfigErrors(vec![ConfigError {
                file: file.into(),
                position,
                key: String::new(),
                message,
            }]));
        }
    };
    r.doc = Some(doc);
    let value: toml::Table = match toml::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            r.error(&[], e.message().to_string());
            return Err(ConfigErrors(r.errors));
        }
    };
    let base = Path::new(file)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    for (path, message) in super::bounds::check(&value) {
        r.error(&path, message);
    }
    let raw = parse_sections(&mut r, value);
    let config = raw.and_then(|raw| check(&mut r, raw, &base));
    match config {
        Some(c) if r.errors.is_empty() => Ok(c),
        _ => Err(ConfigErrors(r.errors)),
    }
}

struct RawAll {
    gateway: Option<RawGateway>,
    profiles_dir: Option<PathBuf>,
    /// (index in the file, bus, file index of each meter that parsed)
    buses: Vec<(usize, RawBus, Vec<usize>)>,
    mqtt: Option<RawMqtt>,
    influx: Option<RawInflux>,
    journal: RawJournal,
    http: RawHttp,
    alerts: RawAlerts,
}

/// `journal.memory` when not set: about 25,000 readings of 8 values, or 5,000 of 60.
pub const DEFAULT_JOURNAL_MEMORY: u64 = 8 << 20;

const SECTIONS: &[&str] = &[
    "gateway",
    "profiles_dir",
    "bus",
    "mqtt",
    "influxdb",
    "journal",
    "http",
    "alerts",
];

/// Deserialize section by section, and each bus and meter on its own, so one bad meter does
/// not hide the problems of the next.
fn parse_sections(r: &mut Reporter, mut top: toml::Table) -> Option<RawAll> {
    for key in top.keys() {
        if !SECTIONS.contains(&key.as_str()) {
            r.error(
                &[k(key)],
                format!(
                    "unknown section `{key}`, expected one of {}",
                    SECTIONS.join(", ")
                ),
            );
        }
    }
    let mut take = |name: &str| top.remove(name);
    let gateway = match take("gateway") {
        Some(v) => r.parse(&[k("gateway")], v),
        None => {
            r.error(&[], "missing [gateway] section (id and state_dir)");
            None
        }
    };
    let profiles_dir = take("profiles_dir").and_then(|v| r.parse(&[k("profiles_dir")], v));
    let mqtt = take("mqtt").and_then(|v| r.parse(&[k("mqtt")], v));
    let influx = take("influxdb").and_then(|v| r.parse(&[k("influxdb")], v));
    let journal = take("journal")
        .and_then(|v| r.parse(&[k("journal")], v))
        .unwrap_or_default();
    let http = take("http")
        .and_then(|v| r.parse(&[k("http")], v))
        .unwrap_or_default();
    let alerts = take("alerts")
        .and_then(|v| r.parse(&[k("alerts")], v))
        .unwrap_or_default();
    let mut buses = Vec::new();
    match take("bus") {
        None => {}
        Some(toml::Value::Array(items)) => {
            for (i, item) in items.into_iter().enumerate() {
                let path = [k("bus"), Seg::Index(i)];
                let toml::Value::Table(mut t) = item else {
                    r.error(&path, "a bus must be a table ([[bus]])");
                    continue;
                };
                let meters = t.remove("meter");
                let Some(mut bus) = r.parse::<RawBus>(&path, toml::Value::Table(t)) else {
                    continue;
                };
                let mut indices = Vec::new();
                match meters {
                    None => {}
                    Some(toml::Value::Array(ms)) => {
                        for (j, m) in ms.into_iter().enumerate() {
                            let mp = [k("bus"), Seg::Index(i), k("meter"), Seg::Index(j)];
                            if let Some(m) = r.parse::<RawMeter>(&mp, m) {
                                bus.meter.push(m);
                                indices.push(j);
                            }
                        }
                    }
                    Some(_) => r.error(
                        &[k("bus"), Seg::Index(i), k("meter")],
                        "meters are [[bus.meter]] tables",
                    ),
                }
                buses.push((i, bus, indices));
            }
        }
        Some(_) => r.error(&[k("bus")], "buses are [[bus]] tables"),
    }
    Some(RawAll {
        gateway,
        profiles_dir,
        buses,
        mqtt,
        influx,
        journal,
        http,
        alerts,
    })
}

/// "+08:00" → 28800.
pub fn parse_utc_offset(s: &str) -> Option<i64> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    ((0..=14).contains(&h) && (0..60).contains(&m)).then_some(sign * (h * 3600 + m * 60))
}

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

const ID_RULE: &str =
    "use 1 to 64 letters, digits, '-', '_' or '.' (it is an MQTT topic level and an InfluxDB tag)";

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// A secret from inline text, a file (systemd `LoadCredential=`) or an environment variable;
/// exactly one may be given.
#[derive(Clone, Copy)]
enum Pem {
    Certificates,
    PrivateKey,
}

/// A PEM file with at least one certificate, or with a private key.
fn check_pem(path: &Path, what: Pem) -> Result<(), String> {
    use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let bytes = super::files::read_limited(path, super::files::MAX_SECRET)?;
    match what {
        Pem::Certificates => {
            let certs = CertificateDer::pem_slice_iter(&bytes)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("not a PEM certificate file: {e}"))?;
            if certs.is_empty() {
                return Err("holds no certificate (PEM, -----BEGIN CERTIFICATE-----)".into());
            }
        }
        Pem::PrivateKey => {
            PrivateKeyDer::from_pem_slice(&bytes)
                .map_err(|e| format!("holds no private key (PEM): {e}"))?;
        }
    }
    Ok(())
}

fn secret(
    r: &mut Reporter,
    section: &[Seg],
    name: &str,
    inline: Option<String>,
    file: Option<PathBuf>,
    env: Option<String>,
    base: &Path,
) -> Option<String> {
    let given = inline.is_some() as u8 + file.is_some() as u8 + env.is_some() as u8;
    if given > 1 {
        r.error(
            &[section, &[k(name)]].concat(),
            format!("give one of {name}, {name}_file and {name}_env, not several"),
        );
        return None;
    }
    if let Some(f) = file {
        let path = resolve(base, &f);
        return match super::files::read_text(&path, super::files::MAX_SECRET) {
            Ok(s) => Some(s.trim_end_matches(['\r', '\n']).to_string()),
            Err(e) => {
                r.error(
                    &[section, &[k(&format!("{name}_file"))]].concat(),
                    format!("cannot read {}: {e}", path.display()),
                );
                None
            }
        };
    }
    if let Some(var) = env {
        return match std::env::var(&var) {
            Ok(s) => Some(s),
            Err(_) => {
                r.error(
                    &[section, &[k(&format!("{name}_env"))]].concat(),
                    format!("environment variable {var} is not set"),
                );
                None
            }
        };
    }
    inline
}

fn check(r: &mut Reporter, raw: RawAll, base: &Path) -> Option<Config> {
    let gateway = raw.gateway;
    if let Some(g) = &gateway {
        if !valid_id(&g.id) {
            r.error(&[k("gateway"), k("id")], format!("{:?}: {ID_RULE}", g.id));
        }
        if g.state_dir.as_os_str().is_empty() {
            r.error(&[k("gateway"), k("state_dir")], "must not be empty");
        }
    }
    let profiles = match &raw.profiles_dir {
        Some(dir) => {
            let (set, problems) = ProfileSet::with_dir(&resolve(base, dir));
            for p in problems {
                r.error(&[k("profiles_dir")], p);
            }
            set
        }
        None => ProfileSet::builtin(),
    };
    let profiles = Arc::new(profiles);

    let mut buses = Vec::new();
    let mut bus_names = HashSet::new();
    let mut meter_ids: HashMap<String, String> = HashMap::new();
    let mut devices: HashMap<PathBuf, String> = HashMap::new();
    for (i, b, meter_index) in raw.buses {
        let bp = |rest: &[&str]| {
            let mut p = vec![k("bus"), Seg::Index(i)];
            p.extend(rest.iter().map(|s| k(s)));
            p
        };
        if !valid_id(&b.name) {
            r.error(&bp(&["name"]), format!("{:?}: {ID_RULE}", b.name));
        } else if !bus_names.insert(b.name.clone()) {
            r.error(
                &bp(&["name"]),
                format!("bus name {:?} is used twice", b.name),
            );
        }
        let dlt645 = matches!(
            b.protocol,
            BusProtocol::Dlt645_2007 | BusProtocol::Dlt645_1997
        );
        // DL/T 645 runs on a serial line or through a transparent serial server (TCP).
        let serial_bus = b.protocol == BusProtocol::ModbusRtu || (dlt645 && b.serial.is_some());
        let (default_baud, default_parity) = match b.protocol {
            BusProtocol::Dlt645_2007 => (2400, Parity::Even),
            BusProtocol::Dlt645_1997 => (1200, Parity::Even),
            _ => (9600, Parity::None),
        };
        let link = match (&b.serial, &b.tcp, serial_bus) {
            (Some(s), None, true) => {
                let s = SerialConfig {
                    device: s.device.clone(),
                    baud: s.baud.unwrap_or(default_baud),
                    parity: s.parity.unwrap_or(default_parity),
                    data_bits: s.data_bits,
                    stop_bits: s.stop_bits,
                };
                if s.baud == 0 {
                    r.error(&bp(&["serial", "baud"]), "must be more than 0");
                }
                if !(5..=8).contains(&s.data_bits) {
                    r.error(&bp(&["serial", "data_bits"]), "must be 5, 6, 7 or 8");
                }
                if !(1..=2).contains(&s.stop_bits) {
                    r.error(&bp(&["serial", "stop_bits"]), "must be 1 or 2");
                }
                if let Some(other) = devices.insert(s.device.clone(), b.name.clone()) {
                    r.error(
                        &bp(&["serial", "device"]),
                        format!(
                            "{} is already used by bus {other:?}: one task owns a serial line",
                            s.device.display()
                        ),
                    );
                }
                Some(Link::Serial(s))
            }
            (None, Some(addr), false) => {
                let ok = addr
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
                if !ok {
                    r.error(&bp(&["tcp"]), format!("{addr:?} is not HOST:PORT"));
                }
                Some(Link::Tcp(addr.clone()))
            }
            (None, None, false) if dlt645 => {
                r.error(
                    &bp(&["serial"]),
                    format!(
                        "a {} bus needs serial = {{ device = ... }} or tcp = \"HOST:PORT\"",
                        b.protocol.as_str()
                    ),
                );
                None
            }
            (_, _, true) => {
                r.error(
                    &bp(&["serial"]),
                    format!(
                        "a {} bus needs serial = {{ device = ... }} and no tcp",
                        b.protocol.as_str()
                    ),
                );
                None
            }
            (_, _, false) => {
                r.error(
                    &bp(&["tcp"]),
                    format!(
                        "a {} bus needs tcp = \"HOST:PORT\" and no serial",
                        b.protocol.as_str()
                    ),
                );
                None
            }
        };
        // DL/T 645 meters may take 500 ms to start replying, plus the transfer at 1200-2400 baud.
        let timeout = b
            .timeout
            .unwrap_or(Duration::from_millis(if dlt645 { 1000 } else { 500 }));
        // Its range is checked with every other duration (bounds.rs).
        let concurrency = b.concurrency.unwrap_or(1);
        if concurrency == 0 || concurrency > 64 {
            r.error(&bp(&["concurrency"]), "must be 1 to 64");
        } else if concurrency > 1 && b.protocol != BusProtocol::ModbusTcp {
            r.error(
                &bp(&["concurrency"]),
                "only modbus-tcp buses poll meters concurrently: a serial line carries one transaction at a time",
            );
        }
        let max_registers = b.max_registers.unwrap_or(125);
        if !(1..=125).contains(&max_registers) {
            r.error(&bp(&["max_registers"]), "must be 1 to 125");
        }
        let offline_after = b.offline_after.unwrap_or(3);
        if offline_after == 0 {
            r.error(&bp(&["offline_after"]), "must be at least 1");
        }
        let backoff = b.backoff.unwrap_or(Duration::from_secs(10));
        let backoff_max = b
            .backoff_max
            .unwrap_or(Duration::from_secs(300))
            .max(backoff);
        let frame_gap = b.frame_gap.unwrap_or(match &link {
            _ if dlt645 => Duration::from_millis(20),
            Some(Link::Serial(s)) => s.rtu_frame_gap(),
            _ if b.protocol == BusProtocol::ModbusRtuOverTcp => Duration::from_millis(5),
            _ => Duration::ZERO,
        });

        let utc_offset_s = match b.utc_offset.as_deref() {
            None => 8 * 3600,
            Some(text) => match parse_utc_offset(text) {
                Some(v) => v,
                None => {
                    r.error(
                        &bp(&["utc_offset"]),
                        format!("{text:?}: use +HH:MM or -HH:MM, e.g. \"+08:00\""),
                    );
                    0
                }
            },
        };
        let mut meters = Vec::new();
        let mut units = HashMap::new();
        let mut addresses = HashMap::new();
        for (m, j) in b.meter.into_iter().zip(meter_index) {
            let mp = |key: &str| vec![k("bus"), Seg::Index(i), k("meter"), Seg::Index(j), k(key)];
            if !valid_id(&m.id) {
                r.error(&mp("id"), format!("{:?}: {ID_RULE}", m.id));
            } else if let Some(other) = meter_ids.insert(m.id.clone(), b.name.clone()) {
                r.error(&mp("id"), format!("meter id {:?} is already used on bus {other:?}; ids are unique per gateway", m.id));
            }
            let mut address = None;
            if dlt645 {
                if m.unit.is_some() {
                    r.error(
                        &mp("unit"),
                        "unit is for Modbus meters; DL/T 645 meters use address = \"123456789012\"",
                    );
                }
                match m.address.as_deref().map(str::parse::<Address>) {
                    None => r.error(&mp("id"), "a DL/T 645 meter needs address = \"123456789012\" (12 digits as on the nameplate)"),
                    Some(Err(e)) => r.error(&mp("address"), e.to_string()),
                    Some(Ok(a)) if a.is_broadcast() || a.0.contains(&0xAA) => {
                        r.error(&mp("address"), format!("{a}: broadcast and wildcard addresses are for scanning, not polling"))
                    }
                    Some(Ok(a)) => {
                        if let Some(other) = addresses.insert(a, m.id.clone()) {
                            r.error(&mp("address"), format!("address {a} is already meter {other:?} on this bus"));
                        }
                        address = Some(a);
                    }
                }
            } else if m.address.is_some() {
                r.error(
                    &mp("address"),
                    "address is for DL/T 645 meters; Modbus meters use unit",
                );
            }
            let unit = match m.unit {
                None if dlt645 => 0,
                None => {
                    r.error(&mp("id"), "a Modbus meter needs unit = 1..247");
                    0
                }
                Some(u) if serial_bus && !(1..=247).contains(&u) => {
                    r.error(
                        &mp("unit"),
                        format!("{u}: unit ids on a serial line are 1 to 247 (0 is broadcast)"),
                    );
                    u
                }
                Some(u) => {
                    if let Some(other) = units.insert(u, m.id.clone()) {
                        r.error(
                            &mp("unit"),
                            format!("unit {u} is already meter {other:?} on this bus"),
                        );
                    }
                    u
                }
            };
            let wanted = match b.protocol {
                BusProtocol::Dlt645_2007 => ProfileProtocol::Dlt645_2007,
                BusProtocol::Dlt645_1997 => ProfileProtocol::Dlt645_1997,
                _ => ProfileProtocol::Modbus,
            };
            let Some(profile) = profiles.get(&m.profile).cloned() else {
                let known: Vec<&str> = profiles
                    .profiles
                    .values()
                    .filter(|p| p.protocol == wanted)
                    .map(|p| p.name.as_str())
                    .collect();
                r.error(
                    &mp("profile"),
                    format!(
                        "unknown profile {:?}; known: {}",
                        m.profile,
                        known.join(", ")
                    ),
                );
                continue;
            };
            if profile.protocol != wanted {
                r.error(
                    &mp("profile"),
                    format!(
                        "profile {} is for {} meters; this is a {} bus",
                        profile.name,
                        profile.protocol.as_str(),
                        b.protocol.as_str()
                    ),
                );
            }
            for g in m.intervals.keys() {
                if profile.group(g).is_none() {
                    let groups: Vec<&str> =
                        profile.groups.iter().map(|g| g.name.as_str()).collect();
                    r.error(
                        &mp("intervals"),
                        format!(
                            "profile {} has no point group {g:?}; it has {}",
                            profile.name,
                            groups.join(", ")
                        ),
                    );
                }
            }
            let groups = profile
                .groups
                .iter()
                .map(|g| MeterGroup {
                    name: g.name.clone(),
                    interval: m
                        .intervals
                        .get(&g.name)
                        .map(|d| d.0)
                        .or(m.interval)
                        .unwrap_or(g.interval),
                })
                .collect();
            meters.push(MeterConfig {
                id: m.id,
                unit,
                address,
                profile,
                groups,
                labels: m.labels,
            });
        }
        if let Some(link) = link {
            buses.push(BusConfig {
                name: b.name,
                protocol: b.protocol,
                link,
                timeout,
                retries: b.retries.unwrap_or(1),
                concurrency: concurrency.max(1),
                frame_gap,
                max_gap: b.max_gap.unwrap_or(16),
                max_registers,
                offline_after: offline_after.max(1),
                backoff,
                backoff_max,
                utc_offset_s,
                time_sync: b.time_sync,
                time_sync_max: b.time_sync_max.unwrap_or(Duration::from_secs(300)),
                meters,
            });
        }
    }

    let gateway_id = gateway.as_ref().map(|g| g.id.clone()).unwrap_or_default();
    let mqtt = raw.mqtt.and_then(|m| check_mqtt(r, m, &gateway_id, base));
    let influx = raw.influx.and_then(|i| check_influx(r, i, base));

    let max_size = raw.journal.max_size.map_or(1 << 30, |s| s.as_u64());
    if max_size < 1 << 20 {
        r.error(&[k("journal"), k("max_size")], "must be at least 1MiB");
    }
    let memory = raw
        .journal
        .memory
        .map_or(DEFAULT_JOURNAL_MEMORY, |s| s.as_u64());
    if !(64 << 10..=1 << 30).contains(&memory) {
        // Below 64 KiB not even one write buffer of readings fits; above 1 GiB it is no
        // longer a small gateway's memory.
        r.error(
            &[k("journal"), k("memory")],
            "must be between 64KiB and 1GiB",
        );
    }
    let fsync = raw.journal.fsync.unwrap_or(Duration::from_secs(1));
    let alerts = alerts::check_alerts(r, raw.alerts, &buses, base);
    let gateway = gateway?;
    Some(Config {
        gateway_id: gateway.id,
        state_dir: resolve(base, &gateway.state_dir),
        buses,
        mqtt,
        influx,
        journal: JournalConfig {
            max_size,
            memory,
            fsync,
        },
        http: HttpConfig {
            listen: raw
                .http
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9645))),
        },
        profiles,
        alerts,
    })
}

fn check_mqtt(r: &mut Reporter, m: RawMqtt, gateway: &str, base: &Path) -> Option<MqttConfig> {
    let at = |key: &str| [k("mqtt"), k(key)];
    let (tls, rest) = if let Some(rest) = m.url.strip_prefix("mqtts://") {
        (true, rest)
    } else if let Some(rest) = m.url.strip_prefix("mqtt://") {
        (false, rest)
    } else {
        r.error(
            &at("url"),
            // Not the URL itself: it may carry a password, and reload errors are logged.
            "use mqtt://HOST[:PORT] or mqtts://HOST[:PORT]",
        );
        return None;
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => match p.parse::<u16>() {
            Ok(p) => (h.to_string(), p),
            Err(_) => {
                r.error(&at("url"), format!("{p:?} is not a port"));
                return None;
            }
        },
        None => (rest.to_string(), if tls { 8883 } else { 1883 }),
    };
    if host.is_empty() {
        r.error(&at("url"), "no host");
    }
    if m.qos > 1 {
        r.error(
            &at("qos"),
            "must be 0 or 1 (QoS 1: at least once, confirmed by PUBACK)",
        );
    }
    if m.topic_prefix.is_empty() || m.topic_prefix.contains(['+', '#']) {
        r.error(
            &at("topic_prefix"),
            "must be non-empty and contain no MQTT wildcards",
        );
    }
    let password = secret(
        r,
        &[k("mqtt")],
        "password",
        m.password,
        m.password_file,
        m.password_env,
        base,
    );
    if !tls && (m.ca_file.is_some() || m.client_cert_file.is_some()) {
        r.error(&at("ca_file"), "TLS files need an mqtts:// url");
    }
    if m.client_cert_file.is_some() != m.client_key_file.is_some() {
        r.error(
            &at("client_cert_file"),
            "client_cert_file and client_key_file go together",
        );
    }
    // Load what the TLS handshake will need, so a wrong file is found now, not at connect.
    for (key, file, what) in [
        ("ca_file", &m.ca_file, Pem::Certificates),
        ("client_cert_file", &m.client_cert_file, Pem::Certificates),
        ("client_key_file", &m.client_key_file, Pem::PrivateKey),
    ] {
        if let Some(f) = file {
            let path = resolve(base, f);
            if let Err(e) = check_pem(&path, what) {
                r.error(&at(key), format!("{}: {e}", path.display()));
            }
        }
    }
    Some(MqttConfig {
        host,
        port,
        tls,
        topic_prefix: m.topic_prefix.trim_end_matches('/').to_string(),
        qos: m.qos.min(1),
        client_id: m.client_id.unwrap_or_else(|| format!("meterd-{gateway}")),
        username: m.username,
        password,
        ca_file: m.ca_file.map(|p| resolve(base, &p)),
        client_cert_file: m.client_cert_file.map(|p| resolve(base, &p)),
        client_key_file: m.client_key_file.map(|p| resolve(base, &p)),
        keep_alive: m.keep_alive.unwrap_or(Duration::from_secs(30)),
        inflight: m.inflight.unwrap_or(100).clamp(1, 1000),
    })
}

fn check_influx(r: &mut Reporter, i: RawInflux, base: &Path) -> Option<InfluxConfig> {
    let at = |key: &str| [k("influxdb"), k(key)];
    if !(i.url.starts_with("http://") || i.url.starts_with("https://")) {
        r.error(
            &at("url"),
            "use http://HOST:PORT or https://HOST:PORT (the URL is not repeated: it may carry a secret)",
        );
    }
    let token = secret(
        r,
        &[k("influxdb")],
        "token",
        i.token,
        i.token_file,
        i.token_env,
        base,
    );
    let password = secret(
        r,
        &[k("influxdb")],
        "password",
        i.password,
        i.password_file,
        i.password_env,
        base,
    );
    let auth = match i.api {
        InfluxApi::V2 => {
            for (key, missing) in [("org", i.org.is_none()), ("bucket", i.bucket.is_none())] {
                if missing {
                    r.error(&at("api"), format!("api = \"v2\" needs {key}"));
                }
            }
            if i.database.is_some() {
                r.error(
                    &at("database"),
                    "database is for api = \"v1\"; v2 uses org and bucket",
                );
            }
            InfluxAuth::V2 {
                org: i.org.unwrap_or_default(),
                bucket: i.bucket.unwrap_or_default(),
                token: token.unwrap_or_default(),
            }
        }
        InfluxApi::V1 => {
            let Some(database) = i.database else {
                r.error(&at("api"), "api = \"v1\" needs database");
                return None;
            };
            InfluxAuth::V1 {
                database,
                retention_policy: i.retention_policy,
                username: i.username,
                password,
            }
        }
    };
    let batch_size = i.batch_size.unwrap_or(5000);
    if batch_size == 0 {
        r.error(&at("batch_size"), "must be at least 1");
    }
    Some(InfluxConfig {
        url: i.url.trim_end_matches('/').to_string(),
        auth,
        batch_size: batch_size.max(1),
        batch_interval: i.batch_interval.unwrap_or(Duration::from_secs(1)),
        status_interval: i
            .status_interval
            .unwrap_or(Duration::from_secs(30))
            .max(Duration::from_millis(100)),
        timeout: i.timeout.unwrap_or(Duration::from_secs(10)),
    })
}
