//! Reading a config: the file, its sections, then meaning, with every problem collected.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use super::{
    alerts,
    exception::check_exception,
    influx::check_influx,
    model::*,
    mqtt::check_mqtt,
    raw::*,
    report::{k, ConfigError, ConfigErrors, Reporter, Seg},
    values::{resolve, valid_id, ID_RULE},
    ProfileSet,
};

/// Read and validate a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    match crate::files::read_text(path, crate::files::MAX_TEXT) {
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
    read(&mut Reporter::new(text, file))
}

fn read(r: &mut Reporter) -> Result<Config, ConfigErrors> {
    let value: toml::Table = match toml::from_str(r.text) {
        Ok(v) => v,
        Err(e) => {
            let position = e.span().map(|s| r.line_col(s.start));
            let message = e.message().trim().replace('\n', ": ");
            return Err(ConfigErrors(vec![ConfigError {
                file: r.file.clone(),
                position,
                key: String::new(),
                message,
            }]));
        }
    };
    let base = Path::new(&r.file)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    for (path, message) in super::bounds::check(&value) {
        r.error(&path, message);
    }
    let raw = parse_sections(r, value);
    let config = raw.and_then(|raw| check(r, raw, &base));
    match config {
        Some(c) if r.errors.is_empty() => Ok(c),
        _ => Err(ConfigErrors(std::mem::take(&mut r.errors))),
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
    remote: Option<RawRemote>,
}

/// `journal.memory` when not set: about 37,000 readings of 8 values, or 13,000 of 60 (64-bit).
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
    "remote",
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
    let remote = take("remote").and_then(|v| r.parse(&[k("remote")], v));
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
        remote,
    })
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

    let buses = super::bus::check_buses(r, raw.buses, &profiles);

    let gateway_id = gateway.as_ref().map(|g| g.id.clone()).unwrap_or_default();
    let mqtt = raw.mqtt.and_then(|mut m| {
        let exception = m.exception.take();
        let mut c = check_mqtt(r, m, &gateway_id, base)?;
        c.exception = exception.map(|e| check_exception(r, "mqtt", e, &buses));
        Some(c)
    });
    let influx = raw.influx.and_then(|mut i| {
        let exception = i.exception.take();
        let mut c = check_influx(r, i, base)?;
        c.exception = exception.map(|e| check_exception(r, "influxdb", e, &buses));
        Some(c)
    });

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
    let cursor_sync = raw
        .journal
        .cursor_sync
        .unwrap_or(crate::journal::DEFAULT_CURSOR_SYNC);
    let alerts = alerts::check_alerts(r, raw.alerts, &buses, base);
    let meter_protocols: Vec<(String, BusProtocol)> = buses
        .iter()
        .flat_map(|b| b.meters.iter().map(|m| (m.id.clone(), b.protocol)))
        .collect();
    let remote = raw
        .remote
        .and_then(|rm| super::remote::check_remote(r, rm, mqtt.is_some(), &meter_protocols, base));
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
            cursor_sync,
        },
        http: HttpConfig {
            listen: raw
                .http
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9645))),
        },
        profiles,
        alerts,
        remote,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "[gateway]\nid = \"gw\"\nstate_dir = \"/tmp/s\"\n[[bus]]\nname = \"b\"\nprotocol = \"modbus-tcp\"\ntcp = \"127.0.0.1:502\"\n[[bus.meter]]\nid = \"m1\"\nunit = 1\nprofile = \"eastron-sdm630\"\n";

    #[test]
    fn a_good_config_is_read_without_building_the_document_that_locates_problems() {
        let mut r = Reporter::new(GOOD, "t.toml");
        if let Err(e) = read(&mut r) {
            panic!("{e}");
        }
        assert!(r.doc.get().is_none(), "the located document was built");
    }

    #[test]
    fn a_problem_is_still_located_at_its_line_and_column() {
        let text = GOOD.replace("unit = 1", "unit = 300");
        let mut r = Reporter::new(&text, "t.toml");
        let errors = read(&mut r).expect_err("unit 300 is out of range").0;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].key, "bus[0].meter[0].unit");
        assert_eq!(errors[0].position, Some((10, 1)), "{}", errors[0]);
        assert!(r.doc.get().is_some_and(Option::is_some));
    }
}
