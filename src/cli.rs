//! Commands: run, validate, configfile, profiles, read, scan, simulate, demo.

use std::{
    io::IsTerminal,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

/// Print to stdout like `print!`; when the reader went away (`meterd profiles | head`), end
/// quietly with exit 0 as other tools do, instead of panicking on the broken pipe.
macro_rules! out {
    ($($t:tt)*) => { emit(format_args!($($t)*), false) };
}

/// [`out!`] with a newline.
macro_rules! outln {
    () => { emit(format_args!(""), true) };
    ($($t:tt)*) => { emit(format_args!($($t)*), true) };
}

fn emit(args: std::fmt::Arguments, newline: bool) {
    use std::io::Write as _;
    let mut o = std::io::stdout().lock();
    let r = o
        .write_fmt(args)
        .and_then(|()| if newline { o.write_all(b"\n") } else { Ok(()) });
    if let Err(e) = r {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

use anyhow::{anyhow, bail, Context as _};
use clap::{Args, Parser, Subcommand};
use meterd::{
    bus::modbus::{open_serial, ModbusLink},
    config::{self, raw::BusProtocol, raw::Parity, Link, ProfileSet, SerialConfig},
    protocols::{modbus::RegisterKind, profile::Profile, quantity},
    sim::{self, Simulator},
    state::LiveState,
};
use tokio::sync::watch;

/// Exit code for a bad config (sysexits EX_CONFIG); systemd's RestartPreventExitStatus.
const EXIT_CONFIG: i32 = 78;

#[derive(Parser)]
#[command(
    name = "meterd",
    version,
    about = "Smart-meter data acquisition: Modbus meters to MQTT and InfluxDB"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run(ConfigArg),
    /// Check a config without touching hardware; prints every problem.
    Validate(ConfigArg),
    /// Print a complete, commented example config.
    Configfile,
    /// List meter profiles, or print one.
    Profiles {
        name: Option<String>,
        /// Also list the user profiles in this directory.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Read one meter once and print every quantity.
    Read(ReadArgs),
    /// Find Modbus meters on a bus by probing unit ids.
    Scan(ScanArgs),
    /// Run simulated meters.
    Simulate(SimArgs),
    /// Simulated meters and the whole pipeline on loopback: a first look at meterd.
    Demo,
    /// Broadcast the gateway's time to the DL/T 645 meters on a line (C=08 to 99..99).
    Timesync {
        #[command(flatten)]
        bus: BusArgs,
        /// The meters' local time zone.
        #[arg(long, default_value = "+08:00")]
        utc_offset: String,
    },
    /// Decode captured DL/T 645 frames: every field, values with units, what is wrong.
    Decode {
        /// dlt645-2007 or dlt645-1997.
        #[arg(long)]
        protocol: String,
        /// One JSON object per frame.
        #[arg(long)]
        json: bool,
        /// Frames as hex, one per argument (spaces inside a quoted argument are fine).
        #[arg(required = true)]
        frames: Vec<String>,
    },
}

#[derive(Args)]
struct ConfigArg {
    #[arg(short, long, default_value = "/etc/meterd/meterd.toml")]
    config: PathBuf,
}

#[derive(Args, Clone)]
struct BusArgs {
    /// modbus-tcp, modbus-rtu or modbus-rtu-over-tcp.
    #[arg(long)]
    protocol: Option<String>,
    /// HOST:PORT of a Modbus TCP device or serial server.
    #[arg(long)]
    addr: Option<String>,
    /// Serial device of an RS-485 adapter.
    #[arg(long)]
    serial: Option<PathBuf>,
    /// Default: 9600 for Modbus, 2400 for DL/T 645-2007, 1200 for DL/T 645-1997.
    #[arg(long)]
    baud: Option<u32>,
    /// none, even or odd. Default: none for Modbus, even for DL/T 645.
    #[arg(long)]
    parity: Option<String>,
    #[arg(long, default_value_t = 8)]
    data_bits: u8,
    #[arg(long, default_value_t = 1)]
    stop_bits: u8,
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Args)]
struct ReadArgs {
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Meter id in the config.
    #[arg(long)]
    meter: Option<String>,
    #[command(flatten)]
    bus: BusArgs,
    /// Modbus unit id.
    #[arg(long)]
    unit: Option<u8>,
    /// DL/T 645 meter address (12 digits as on the nameplate).
    #[arg(long)]
    address: Option<String>,
    /// DL/T 645: read these identifiers (hex, as the standard prints them) instead of a
    /// profile's; repeatable. Blocks (FF) print every member.
    #[arg(long = "di")]
    dis: Vec<String>,
    #[arg(long)]
    profile: Option<String>,
    /// One JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ScanArgs {
    #[command(flatten)]
    bus: BusArgs,
    /// Unit ids to try, e.g. 1-247 or 1-10.
    #[arg(long, default_value = "1-247")]
    units: String,
    /// DL/T 645: addresses to probe, e.g. 000000000001-000000000032 or a comma list.
    /// Without it, only the read-address broadcast (AA..AA) is tried.
    #[arg(long)]
    addresses: Option<String>,
    /// Probe with this profile's first point instead of holding register 0.
    #[arg(long)]
    profile: Option<String>,
    /// holding or input.
    #[arg(long, default_value = "holding")]
    register: String,
    #[arg(long, default_value_t = 0)]
    address: u16,
}

#[derive(Args)]
struct SimArgs {
    /// modbus, dlt645-2007 or dlt645-1997.
    #[arg(long, default_value = "modbus")]
    protocol: String,
    /// Serve on TCP at this address (e.g. 127.0.0.1:5020): Modbus TCP, or DL/T 645 frames.
    #[arg(long)]
    tcp: Option<String>,
    /// Serve on a new pty; prints the path for the master.
    #[arg(long)]
    pty: bool,
    /// Serve on this serial device.
    #[arg(long)]
    serial: Option<PathBuf>,
    /// Line rate; DL/T 645 replies take the wire time of this rate.
    #[arg(long)]
    baud: Option<u32>,
    /// Profile of the meters made by --count (default: eastron-sdm630, or the DL/T 645
    /// three-phase profile of the protocol).
    #[arg(long)]
    profile: Option<String>,
    /// Number of meters, at unit ids from --first-unit on.
    #[arg(long, default_value_t = 1)]
    count: u16,
    #[arg(long, default_value_t = 1)]
    first_unit: u8,
    /// A meter as UNIT=PROFILE, or ADDRESS=PROFILE for DL/T 645 (repeatable; replaces --count).
    #[arg(long = "meter")]
    meters: Vec<String>,
    /// A fault as UNIT=FAULT: silent, exception[:CODE], garbage, bad-crc, slow:DURATION, more-frames[:DURATION] (DL/T 645).
    #[arg(long = "fault")]
    faults: Vec<String>,
    /// Hold values fixed.
    #[arg(long)]
    frozen: bool,
    /// DL/T 645: value bytes per reply frame; longer values are sent in follow-up frames.
    #[arg(long)]
    max_frame_values: Option<usize>,
}

pub fn main() -> i32 {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meterd: cannot start the runtime: {e}");
            return 1;
        }
    };
    let result = runtime.block_on(dispatch(cli.command));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("meterd: {e:#}");
            1
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Under systemd stderr goes to the journal: prefix each line with its syslog priority
    // (<3> error … <7> debug) so journald files it at the right level; systemd adds the time.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .without_time()
            .event_format(JournalPriority(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_ansi(false),
            ))
            .init();
        return;
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// An event format that puts the syslog priority in front of the usual line.
struct JournalPriority<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for JournalPriority<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            tracing::Level::DEBUG | tracing::Level::TRACE => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}

async fn dispatch(command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Run(c) => run(&c.config).await,
        Command::Validate(c) => Ok(validate(&c.config)),
        Command::Configfile => {
            out!("{}", config::TEMPLATE);
            Ok(0)
        }
        Command::Profiles { name, dir } => profiles(name.as_deref(), dir.as_deref()),
        Command::Read(a) => read(a).await,
        Command::Scan(a) => scan(a).await,
        Command::Simulate(a) => simulate(a).await,
        Command::Demo => demo().await,
        Command::Decode {
            protocol,
            json,
            frames,
        } => decode(&protocol, json, &frames),
        Command::Timesync { bus, utc_offset } => timesync(&bus, &utc_offset).await,
    }
}

fn validate(path: &Path) -> i32 {
    match config::load(path) {
        Ok(c) => {
            let meters: usize = c.buses.iter().map(|b| b.meters.len()).sum();
            outln!(
                "{}: ok ({} buses, {meters} meters, {} alert rules, {} alert notifiers)",
                path.display(),
                c.buses.len(),
                c.alerts.rules.len(),
                c.alerts.notifiers.len()
            );
            0
        }
        Err(errors) => {
            for e in &errors.0 {
                outln!("{e}");
            }
            EXIT_CONFIG
        }
    }
}

/// A watch that turns true on SIGTERM or Ctrl-C.
fn stop_signal() -> anyhow::Result<watch::Receiver<bool>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let _ = tx.send(true);
        // Keep the sender alive so receivers do not see a closed channel.
        std::future::pending::<()>().await;
    });
    Ok(rx)
}

async fn run(path: &Path) -> anyhow::Result<i32> {
    // First: a SIGTERM during start-up must still mean a clean stop, and a SIGHUP (whose
    // default action would end the process) a reload.
    let stop = stop_signal()?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let config = match config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            return Ok(EXIT_CONFIG);
        }
    };
    // `systemctl reload` sends SIGHUP: re-read and validate the file, hand the result over.
    let (reload_tx, reloads) = tokio::sync::mpsc::unbounded_channel();
    let path_owned = path.to_path_buf();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!(config = %path_owned.display(), "SIGHUP: reloading the config");
            let p = path_owned.clone();
            let loaded = tokio::task::spawn_blocking(move || config::load(&p))
                .await
                .unwrap_or_else(|e| {
                    Err(config::ConfigErrors(vec![config::ConfigError {
                        file: path_owned.display().to_string(),
                        position: None,
                        key: String::new(),
                        message: format!("loading failed: {e}"),
                    }]))
                });
            if reload_tx.send(loaded).is_err() {
                break;
            }
        }
    });
    meterd::daemon::run(config, Arc::new(LiveState::default()), stop, reloads).await;
    Ok(0)
}

fn profiles(name: Option<&str>, dir: Option<&Path>) -> anyhow::Result<i32> {
    let set = match dir {
        Some(d) => {
            let (set, problems) = ProfileSet::with_dir(d);
            for p in problems {
                eprintln!("{p}");
            }
            set
        }
        None => ProfileSet::builtin(),
    };
    match name {
        None => {
            outln!(
                "{:<22} {:<18} {:<28} {:>6}  origin",
                "name",
                "manufacturer",
                "model",
                "points"
            );
            for p in set.profiles.values() {
                outln!(
                    "{:<22} {:<18} {:<28} {:>6}  {}",
                    p.name,
                    p.manufacturer,
                    p.model,
                    p.points().count(),
                    p.origin
                );
            }
        }
        Some(n) => {
            let p = set
                .get(n)
                .ok_or_else(|| anyhow!("no profile {n:?}; `meterd profiles` lists them"))?;
            outln!("# {} {} — {}", p.manufacturer, p.model, p.document);
            outln!("# origin: {}", p.origin);
            for g in &p.groups {
                outln!(
                    "\n[{}] every {}",
                    g.name,
                    humantime::format_duration(g.interval)
                );
                for pt in &g.points {
                    outln!(
                        "  {:<32} {:<7} 0x{:04X} {:>4} {:?} scale {} {}",
                        pt.quantity,
                        format!("{:?}", pt.kind).to_lowercase(),
                        pt.address,
                        format!("{:?}", pt.ty).to_lowercase(),
                        pt.order,
                        pt.scale,
                        quantity::unit_of(&pt.quantity).unwrap_or("")
                    );
                }
                for d in &g.dis {
                    let width =
                        if p.protocol == meterd::protocols::profile::ProfileProtocol::Dlt645_1997 {
                            4
                        } else {
                            8
                        };
                    let layout = match d.format {
                        meterd::protocols::dlt645::di::Format::Number {
                            bytes,
                            decimals,
                            signed,
                        } => {
                            format!(
                                "BCD {bytes} bytes, {decimals} decimals{}",
                                if signed { ", signed" } else { "" }
                            )
                        }
                        other => format!("{other:?}"),
                    };
                    outln!(
                        "  {:<32} DI {:0width$X}  {layout:<30} x {} {}",
                        d.quantity,
                        d.di,
                        d.factor,
                        quantity::unit_of(&d.quantity).unwrap_or("")
                    );
                }
                if g.dis.is_empty() {
                    let blocks = g.plan(125, 16);
                    outln!(
                        "  ({} points in {} read requests)",
                        g.points.len(),
                        blocks.len()
                    );
                }
            }
        }
    }
    Ok(0)
}

fn parse_protocol(s: Option<&str>, serial: bool) -> anyhow::Result<BusProtocol> {
    Ok(match s {
        None if serial => BusProtocol::ModbusRtu,
        None => BusProtocol::ModbusTcp,
        Some("modbus-tcp") => BusProtocol::ModbusTcp,
        Some("modbus-rtu") => BusProtocol::ModbusRtu,
        Some("modbus-rtu-over-tcp") => BusProtocol::ModbusRtuOverTcp,
        Some("dlt645-2007") => BusProtocol::Dlt645_2007,
        Some("dlt645-1997") => BusProtocol::Dlt645_1997,
        Some(other) => bail!(
            "protocol {other:?}: use modbus-tcp, modbus-rtu, modbus-rtu-over-tcp, dlt645-2007 or dlt645-1997"
        ),
    })
}

fn link_from(b: &BusArgs) -> anyhow::Result<(BusProtocol, Link, Duration)> {
    let protocol = parse_protocol(b.protocol.as_deref(), b.serial.is_some())?;
    let link = match (&b.addr, &b.serial) {
        (Some(a), None) => Link::Tcp(a.clone()),
        (None, Some(dev)) => Link::Serial(SerialConfig {
            device: dev.clone(),
            baud: b.baud.unwrap_or(match protocol {
                BusProtocol::Dlt645_2007 => 2400,
                BusProtocol::Dlt645_1997 => 1200,
                _ => 9600,
            }),
            parity: match b.parity.as_deref() {
                None if matches!(
                    protocol,
                    BusProtocol::Dlt645_2007 | BusProtocol::Dlt645_1997
                ) =>
                {
                    Parity::Even
                }
                None | Some("none") => Parity::None,
                Some("even") => Parity::Even,
                Some("odd") => Parity::Odd,
                Some(p) => bail!("parity {p:?}: use none, even or odd"),
            },
            data_bits: b.data_bits,
            stop_bits: b.stop_bits,
        }),
        _ => bail!("give --addr HOST:PORT or --serial DEVICE"),
    };
    Ok((protocol, link, b.timeout))
}

fn frame_gap(link: &Link) -> Duration {
    match link {
        Link::Serial(s) => s.rtu_frame_gap(),
        Link::Tcp(_) => Duration::ZERO,
    }
}

/// `meterd read --protocol dlt645-… --address A --di DI…`: each identifier decoded through
/// the catalogue, unknown ones as raw bytes.
async fn read_dis(a: &ReadArgs) -> anyhow::Result<i32> {
    use meterd::bus::dlt645::Dlt645Link;
    use meterd::protocols::dlt645::{di, Address, Version};
    let (protocol, l, timeout) = link_from(&a.bus)?;
    let version = match protocol {
        BusProtocol::Dlt645_2007 => Version::V2007,
        BusProtocol::Dlt645_1997 => Version::V1997,
        _ => bail!("--di is for DL/T 645: give --protocol dlt645-2007 or dlt645-1997"),
    };
    let address: Address = a
        .address
        .as_deref()
        .ok_or_else(|| anyhow!("a DL/T 645 read needs --address (12 digits)"))?
        .parse()
        .map_err(|e| anyhow!("--address: {e}"))?;
    let mut link = Dlt645Link::new(version, l, timeout);
    let mut failed = 0;
    let mut out = Vec::new();
    for text in &a.dis {
        let id = u32::from_str_radix(text, 16)
            .map_err(|_| anyhow!("--di {text:?}: hex digits as the standard prints them"))?;
        let r = link.read(address, id).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        match r {
            Ok(bytes) => match di::decode_values(version, id, &bytes) {
                Ok(values) if !values.is_empty() => {
                    for v in values {
                        let value = match &v.value {
                            di::Value::Number(x) => serde_json::json!(x),
                            di::Value::Text(t) => serde_json::json!(t),
                        };
                        out.push(serde_json::json!({"di": format!("{:0w$X}", v.di, w = if version == Version::V2007 { 8 } else { 4 }), "name": v.name, "value": value, "unit": v.unit}));
                    }
                }
                Ok(_) => out.push(serde_json::json!({"di": text, "raw": bytes.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(" ")})),
                Err(e) => {
                    failed += 1;
                    out.push(serde_json::json!({"di": text, "error": e.to_string()}));
                }
            },
            Err(e) => {
                failed += 1;
                out.push(serde_json::json!({"di": text, "error": e.to_string()}));
            }
        }
    }
    if a.json {
        outln!(
            "{}",
            serde_json::json!({"address": address.to_string(), "values": out})
        );
    } else {
        outln!("meter at address {address}");
        for v in &out {
            match (v.get("name"), v.get("raw"), v.get("error")) {
                (Some(name), _, _) => outln!(
                    "  {} {:<46} {} {}",
                    v["di"].as_str().unwrap_or(""),
                    name.as_str().unwrap_or(""),
                    v["value"],
                    v["unit"].as_str().unwrap_or("")
                ),
                (_, Some(raw), _) => outln!(
                    "  {} (not in the catalogue) {}",
                    v["di"].as_str().unwrap_or(""),
                    raw.as_str().unwrap_or("")
                ),
                (_, _, Some(e)) => outln!(
                    "  {} error: {}",
                    v["di"].as_str().unwrap_or(""),
                    e.as_str().unwrap_or("")
                ),
                _ => {}
            }
        }
    }
    Ok(if failed == a.dis.len() { 1 } else { 0 })
}

async fn read(a: ReadArgs) -> anyhow::Result<i32> {
    use meterd::bus::{poll, BusLink, PollTarget};
    if !a.dis.is_empty() {
        return read_dis(&a).await;
    }
    use meterd::protocols::dlt645::Address;
    // What to read and how: from the config, or from the flags.
    let (mut link, unit, address, profile, retries, gap, max_regs, max_gap, meter_id, utc_offset_s) =
        match (&a.config, &a.meter) {
            (Some(path), Some(id)) => {
                let cfg = match config::load(path) {
                    Ok(c) => c,
                    Err(errors) => {
                        for e in &errors.0 {
                            eprintln!("{e}");
                        }
                        return Ok(EXIT_CONFIG);
                    }
                };
                let (bus, m) = cfg
                    .meter(id)
                    .ok_or_else(|| anyhow!("no meter {id:?} in {}", path.display()))?;
                (
                    BusLink::new(bus),
                    m.unit,
                    m.address,
                    m.profile.clone(),
                    bus.retries,
                    bus.frame_gap,
                    bus.max_registers,
                    bus.max_gap,
                    id.clone(),
                    bus.utc_offset_s,
                )
            }
            (None, None) => {
                let (protocol, l, timeout) = link_from(&a.bus)?;
                let name = a
                    .profile
                    .as_deref()
                    .ok_or_else(|| anyhow!("give --profile NAME (see `meterd profiles`)"))?;
                let profile = ProfileSet::builtin()
                    .get(name)
                    .cloned()
                    .ok_or_else(|| anyhow!("no profile {name:?}"))?;
                let dlt645 = matches!(
                    protocol,
                    BusProtocol::Dlt645_2007 | BusProtocol::Dlt645_1997
                );
                let address: Option<Address> = match (&a.address, dlt645) {
                    (Some(s), true) => Some(s.parse().map_err(|e| anyhow!("--address: {e}"))?),
                    (None, true) => bail!("a DL/T 645 read needs --address (12 digits)"),
                    (_, false) => None,
                };
                let gap = if dlt645 {
                    Duration::from_millis(20)
                } else {
                    frame_gap(&l)
                };
                let id = match address {
                    Some(a) => format!("addr-{a}"),
                    None => format!("unit-{}", a.unit.unwrap_or(1)),
                };
                (
                    BusLink::for_protocol(protocol, l, timeout),
                    a.unit.unwrap_or(1),
                    address,
                    profile,
                    1,
                    gap,
                    125,
                    16,
                    id,
                    // DL/T 645 meters keep local time: China Standard Time without a config.
                    8 * 3600,
                )
            }
            _ => bail!(
            "give -c FILE --meter ID, or --addr/--serial with --unit (or --address) and --profile"
        ),
        };
    let mut values = Vec::new();
    let mut errors = Vec::new();
    let mut requests = 0;
    let no_blocks = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for (gi, g) in profile.groups.iter().enumerate() {
        let target = PollTarget {
            unit,
            address,
            profile: profile.clone(),
            group: gi,
            blocks: g.plan(max_regs, max_gap),
            no_blocks: no_blocks.clone(),
            retries,
            frame_gap: gap,
            utc_offset_s,
            time_sync: None,
            last_freeze: Default::default(),
        };
        let r = poll(&mut link, &target).await;
        requests += r.requests;
        values.extend(r.values);
        for (when, v) in r.dated {
            let at = humantime::format_rfc3339(when);
            values.extend(
                v.into_iter()
                    .map(|(q, x)| (Arc::<str>::from(format!("{q} (daily freeze {at})")), x)),
            );
        }
        errors.extend(r.errors.into_iter().map(|e| format!("{}: {e}", g.name)));
    }
    let who = match address {
        Some(a) => format!("address {a}"),
        None => format!("unit {unit}"),
    };
    if a.json {
        let v: serde_json::Map<String, serde_json::Value> = values
            .iter()
            .filter_map(|(q, v)| Some((q.to_string(), serde_json::Number::from_f64(*v)?.into())))
            .collect();
        outln!(
            "{}",
            serde_json::json!({"meter": meter_id, "unit": unit, "address": address.map(|a| a.to_string()), "profile": profile.name, "requests": requests, "values": v, "errors": errors})
        );
    } else {
        outln!(
            "meter {meter_id} ({who}, {}), {requests} requests",
            profile.name
        );
        for (q, v) in &values {
            outln!("  {q:<32} {v:>14} {}", quantity::unit_of(q).unwrap_or(""));
        }
        for e in &errors {
            outln!("  error: {e}");
        }
    }
    Ok(if values.is_empty() { 1 } else { 0 })
}

fn parse_range(s: &str) -> anyhow::Result<std::ops::RangeInclusive<u8>> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: u8 = a
        .trim()
        .parse()
        .with_context(|| format!("bad unit range {s:?}"))?;
    let b: u8 = b
        .trim()
        .parse()
        .with_context(|| format!("bad unit range {s:?}"))?;
    if a > b {
        bail!("bad unit range {s:?}");
    }
    Ok(a..=b)
}

fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    if std::io::stderr().is_terminal() {
        bar.set_style(
            indicatif::ProgressStyle::with_template(&format!(
                "{{bar:40}} {{pos}}/{{len}} {what}, {{msg}}"
            ))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar
}

/// Addresses as a range (`000000000001-000000000032`) or a comma list.
fn parse_addresses(s: &str) -> anyhow::Result<Vec<meterd::protocols::dlt645::Address>> {
    let parse = |t: &str| {
        t.trim()
            .parse::<meterd::protocols::dlt645::Address>()
            .map_err(|e| anyhow!("{e}"))
    };
    if let Some((lo, hi)) = s.split_once('-') {
        let (lo, hi): (u64, u64) = (lo.trim().parse()?, hi.trim().parse()?);
        if hi < lo || hi - lo > 100_000 {
            bail!("address range {s:?}: at most 100000 addresses, low to high");
        }
        return (lo..=hi).map(|n| parse(&n.to_string())).collect();
    }
    s.split(',').map(parse).collect()
}

async fn scan_dlt645(
    a: &ScanArgs,
    protocol: BusProtocol,
    l: Link,
    timeout: Duration,
) -> anyhow::Result<i32> {
    use meterd::bus::{dlt645::Dlt645Link, PollError};
    use meterd::protocols::dlt645::Version;
    let version = if protocol == BusProtocol::Dlt645_1997 {
        Version::V1997
    } else {
        Version::V2007
    };
    let mut link = Dlt645Link::new(version, l, timeout);
    let mut found = Vec::new();
    if version == Version::V2007 {
        match link.read_address().await {
            Ok(addr) => {
                outln!("read-address (AA..AA): {addr} answered");
                found.push(addr);
            }
            Err(PollError::Timeout(_)) => outln!("read-address (AA..AA): no answer (no meter, or several colliding)"),
            Err(e) => outln!("read-address (AA..AA): {e} (several meters answering at once collide: probe addresses with --addresses)"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Some(list) = &a.addresses {
        let addresses = parse_addresses(list)?;
        let bar = progress(addresses.len() as u64, "addresses");
        let probe = if version == Version::V2007 {
            0x0001_0000
        } else {
            0x9010
        };
        for addr in addresses {
            let r = link.read(addr, probe).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            let line = match r {
                Ok(_) => Some(format!("{addr}: answers")),
                Err(PollError::Refused { err, .. }) => Some(format!(
                    "{addr}: answers (refused the probe, error {err:02X})"
                )),
                Err(_) => None,
            };
            if let Some(line) = line {
                if !found.contains(&addr) {
                    found.push(addr);
                }
                bar.suspend(|| outln!("{line}"));
            }
            bar.set_message(format!("{} found", found.len()));
            bar.inc(1);
        }
        bar.finish_and_clear();
    }
    outln!("{} meter(s) found", found.len());
    Ok(0)
}

async fn scan(a: ScanArgs) -> anyhow::Result<i32> {
    let (protocol, l, timeout) = link_from(&a.bus)?;
    if matches!(
        protocol,
        BusProtocol::Dlt645_2007 | BusProtocol::Dlt645_1997
    ) {
        return scan_dlt645(&a, protocol, l, timeout).await;
    }
    let gap = frame_gap(&l);
    let mut link = ModbusLink::new(protocol, l, timeout);
    let (kind, address, count) = match &a.profile {
        Some(name) => {
            let p: Arc<Profile> = ProfileSet::builtin()
                .get(name)
                .cloned()
                .ok_or_else(|| anyhow!("no profile {name:?}"))?;
            let pt = p
                .points()
                .next()
                .ok_or_else(|| anyhow!("profile {name} has no points"))?;
            (pt.kind, pt.address, pt.ty.words())
        }
        None => (
            match a.register.as_str() {
                "holding" => RegisterKind::Holding,
                "input" => RegisterKind::Input,
                r => bail!("register {r:?}: use holding or input"),
            },
            a.address,
            1,
        ),
    };
    let units = parse_range(&a.units)?;
    let bar = progress(units.clone().count() as u64, "unit ids");
    let mut found = 0;
    for unit in units {
        let r = link.read(unit, kind, address, count).await;
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
        let line = match r {
            Ok(words) => Some(format!(
                "unit {unit:>3}: answers ({kind:?} {address}: {words:04X?})"
            )),
            Err(meterd::bus::PollError::Exception { code }) => Some(format!(
                "unit {unit:>3}: answers with exception {code} (present, register not served)"
            )),
            Err(_) => None,
        };
        if let Some(line) = line {
            found += 1;
            bar.suspend(|| outln!("{line}"));
        }
        bar.set_message(format!("{found} found"));
        bar.inc(1);
    }
    bar.finish_and_clear();
    outln!("{found} meter(s) answered");
    Ok(0)
}

/// `KEY=VALUE` arguments (`--meter 3=eastron-sdm630`, `--fault 3=silent`), keys parsed by
/// `parse`; `what` names the form in errors.
fn pairs<'a, K>(
    items: &'a [String],
    flag: &str,
    what: &str,
    parse: impl Fn(&str) -> anyhow::Result<K>,
) -> anyhow::Result<Vec<(K, &'a str)>> {
    items
        .iter()
        .map(|item| {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| anyhow!("{flag} {item:?}: use {what}"))?;
            Ok((parse(k).with_context(|| format!("{flag} {item:?}"))?, v))
        })
        .collect()
}

/// A built-in profile by name, for the simulators.
fn builtin_profile(set: &ProfileSet, name: &str) -> anyhow::Result<Arc<Profile>> {
    set.get(name)
        .cloned()
        .ok_or_else(|| anyhow!("no profile {name:?}"))
}

fn build_sim(a: &SimArgs) -> anyhow::Result<Arc<Simulator>> {
    let set = ProfileSet::builtin();
    let sim = Simulator::new();
    let profile = |n: &str| builtin_profile(&set, n);
    if a.meters.is_empty() {
        let p = profile(a.profile.as_deref().unwrap_or("eastron-sdm630"))?;
        for k in 0..a.count {
            let unit = u8::try_from(u16::from(a.first_unit) + k)
                .map_err(|_| anyhow!("unit ids run past 255"))?;
            sim.add_meter(unit, p.clone(), a.frozen);
        }
    } else {
        let unit = |k: &str| k.parse::<u8>().map_err(anyhow::Error::from);
        for (u, p) in pairs(&a.meters, "--meter", "UNIT=PROFILE", unit)? {
            sim.add_meter(u, profile(p)?, a.frozen);
        }
    }
    let unit = |k: &str| k.parse::<u8>().map_err(anyhow::Error::from);
    for (u, fault) in pairs(&a.faults, "--fault", "UNIT=FAULT", unit)? {
        sim.set_fault(u, fault.parse().map_err(|e: String| anyhow!(e))?);
    }
    Ok(sim)
}

async fn simulate(a: SimArgs) -> anyhow::Result<i32> {
    if a.protocol.starts_with("dlt645") {
        return simulate_dlt645(a).await;
    }
    if a.protocol != "modbus" {
        bail!(
            "--protocol {:?}: use modbus, dlt645-2007 or dlt645-1997",
            a.protocol
        );
    }
    let sim = build_sim(&a)?;
    let units = sim.units();
    let mut tasks = tokio::task::JoinSet::new();
    let mut keep = Vec::new();
    if let Some(addr) = &a.tcp {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("bind {addr}"))?;
        outln!("modbus-tcp {} units {:?}", listener.local_addr()?, units);
        tasks.spawn(sim.clone().serve_tcp(listener));
    }
    if a.pty {
        let (master, other, path) = sim::pty_pair()?;
        outln!("modbus-rtu pty {path} units {units:?}");
        keep.push(other);
        tasks.spawn(sim.clone().serve_rtu(master));
    }
    if let Some(dev) = &a.serial {
        let port = open_serial(&SerialConfig {
            device: dev.clone(),
            baud: a.baud.unwrap_or(9600),
            parity: Parity::None,
            data_bits: 8,
            stop_bits: 1,
        })?;
        outln!("modbus-rtu serial {} units {units:?}", dev.display());
        tasks.spawn(sim.clone().serve_rtu(port));
    }
    serve_until_stopped(tasks, keep).await
}

/// Run the simulator's servers until Ctrl-C/SIGTERM or one of them ends. `keep` holds the far
/// ends of ptys open meanwhile.
async fn serve_until_stopped(
    mut tasks: tokio::task::JoinSet<()>,
    keep: Vec<std::fs::File>,
) -> anyhow::Result<i32> {
    if tasks.is_empty() {
        bail!("give --tcp ADDR, --pty or --serial DEVICE");
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let mut stop = stop_signal()?;
    tokio::select! {
        _ = stop.changed() => {}
        _ = tasks.join_next() => {}
    }
    drop(keep);
    Ok(0)
}

async fn simulate_dlt645(a: SimArgs) -> anyhow::Result<i32> {
    use meterd::{
        protocols::dlt645::{Address, Version},
        sim::dlt645::Dlt645Sim,
    };
    let (version, default_profile, default_baud) = match a.protocol.as_str() {
        "dlt645-2007" => (Version::V2007, "dlt645-2007-three-phase", 2400),
        "dlt645-1997" => (Version::V1997, "dlt645-1997-three-phase", 1200),
        p => bail!("--protocol {p:?}: use modbus, dlt645-2007 or dlt645-1997"),
    };
    let baud = a.baud.unwrap_or(default_baud);
    let sim = Dlt645Sim::new(version, Some(baud));
    let set = ProfileSet::builtin();
    let profile = |n: &str| builtin_profile(&set, n);
    if a.meters.is_empty() {
        let p = profile(a.profile.as_deref().unwrap_or(default_profile))?;
        for k in 0..a.count {
            let address: Address = format!("{}", u64::from(a.first_unit) + u64::from(k))
                .parse()
                .map_err(|e| anyhow!("{e}"))?;
            sim.add_meter(address, p.clone(), a.frozen);
        }
    } else {
        let address = |k: &str| k.parse::<Address>().map_err(|e| anyhow!("{e}"));
        for (addr, p) in pairs(&a.meters, "--meter", "ADDRESS=PROFILE", address)? {
            sim.add_meter(addr, profile(p)?, a.frozen);
        }
    }
    let address = |k: &str| k.parse::<Address>().map_err(|e| anyhow!("{e}"));
    for (addr, fault) in pairs(&a.faults, "--fault", "ADDRESS=FAULT", address)? {
        sim.set_fault(addr, fault.parse().map_err(|e: String| anyhow!(e))?);
    }
    if let Some(n) = a.max_frame_values {
        for addr in sim.addresses() {
            sim.set_max_value_bytes(addr, n);
        }
    }
    let addresses: Vec<String> = sim.addresses().iter().map(ToString::to_string).collect();
    let mut tasks = tokio::task::JoinSet::new();
    let mut keep = Vec::new();
    if let Some(addr) = &a.tcp {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("bind {addr}"))?;
        outln!(
            "{} tcp {} addresses {addresses:?}",
            a.protocol,
            listener.local_addr()?
        );
        let sim = sim.clone();
        tasks.spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(sim.clone().serve(sock));
            }
        });
    }
    if a.pty {
        let (master, other, path) = sim::pty_pair()?;
        outln!(
            "{} pty {path} {baud} baud addresses {addresses:?}",
            a.protocol
        );
        keep.push(other);
        tasks.spawn(sim.clone().serve(master));
    }
    if let Some(dev) = &a.serial {
        let port = open_serial(&SerialConfig {
            device: dev.clone(),
            baud,
            parity: Parity::Even,
            data_bits: 8,
            stop_bits: 1,
        })?;
        outln!(
            "{} serial {} {baud} baud addresses {addresses:?}",
            a.protocol,
            dev.display()
        );
        tasks.spawn(sim.clone().serve(port));
    }
    serve_until_stopped(tasks, keep).await
}

async fn demo() -> anyhow::Result<i32> {
    let set = ProfileSet::builtin();
    let sim = Simulator::new();
    for (unit, p) in [
        (1, "eastron-sdm630"),
        (2, "chint-dtsu666"),
        (3, "abb-b23"),
        (4, "carlo-gavazzi-em24"),
    ] {
        sim.add_meter(
            unit,
            set.get(p)
                .cloned()
                .ok_or_else(|| anyhow!("no profile {p}"))?,
            false,
        );
    }
    let serial_sim = Simulator::new();
    for (unit, p) in [(1, "eastron-sdm120"), (2, "chint-ddsu666")] {
        serial_sim.add_meter(
            unit,
            set.get(p)
                .cloned()
                .ok_or_else(|| anyhow!("no profile {p}"))?,
            false,
        );
    }
    let dl_sim =
        meterd::sim::dlt645::Dlt645Sim::new(meterd::protocols::dlt645::Version::V2007, Some(2400));
    for (addr, p) in [
        ("123456789012", "dlt645-2007-three-phase"),
        ("000000001111", "dlt645-2007-single-phase"),
    ] {
        let address = addr.parse().map_err(|e| anyhow!("{e}"))?;
        dl_sim.add_meter(
            address,
            set.get(p)
                .cloned()
                .ok_or_else(|| anyhow!("no profile {p}"))?,
            false,
        );
    }
    let (dl_master, _dl_other_end, dl_pty) = sim::pty_pair()?;
    tokio::spawn(dl_sim.serve(dl_master));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let tcp_addr = listener.local_addr()?;
    tokio::spawn(sim.clone().serve_tcp(listener));
    let (master, _other_end, pty) = sim::pty_pair()?;
    tokio::spawn(serial_sim.clone().serve_rtu(master));

    let state_dir = std::env::temp_dir().join(format!("meterd-demo-{}", std::process::id()));
    let broker_up = tokio::net::TcpStream::connect("127.0.0.1:1883")
        .await
        .is_ok();
    let meters = |list: &[(&str, u8, &str)]| -> String {
        list.iter()
            .map(|(id, unit, profile)| {
                format!(
                    "[[bus.meter]]\nid = \"{id}\"\nunit = {unit}\nprofile = \"{profile}\"\n\
                     intervals = {{ realtime = \"2s\", energy = \"10s\" }}\n"
                )
            })
            .collect()
    };
    let text = format!(
        "[gateway]\nid = \"demo\"\nstate_dir = \"{state}\"\n\n\
         [[bus]]\nname = \"tcp-1\"\nprotocol = \"modbus-tcp\"\ntcp = \"{tcp_addr}\"\nconcurrency = 2\n{tcp_meters}\n\
         [[bus]]\nname = \"rs485-pty\"\nprotocol = \"modbus-rtu\"\n\
         serial = {{ device = \"{pty}\", baud = 9600 }}\ntimeout = \"300ms\"\n{rtu_meters}\n\
         [[bus]]\nname = \"rs485-dl\"\nprotocol = \"dlt645-2007\"\nserial = {{ device = \"{dl_pty}\" }}\n\
         [[bus.meter]]\nid = \"dl-3p\"\naddress = \"123456789012\"\nprofile = \"dlt645-2007-three-phase\"\n\
         intervals = {{ realtime = \"3s\", energy = \"10s\" }}\n\
         [[bus.meter]]\nid = \"dl-1p\"\naddress = \"000000001111\"\nprofile = \"dlt645-2007-single-phase\"\n\
         intervals = {{ realtime = \"3s\", energy = \"10s\" }}\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n\
         [[alerts.rule]]\nname = \"PowerFactorLow\"\nquantity = \"power_factor\"\nbelow = 0.95\nclear = 0.96\nfor = \"4s\"\n\
         summary = \"{{meter}}: power factor {{value}}, below {{threshold}}\"\n",
        state = state_dir.display(),
        tcp_meters = meters(&[
            ("sdm630-1", 1, "eastron-sdm630"),
            ("dtsu666-2", 2, "chint-dtsu666"),
            ("abb-b23-3", 3, "abb-b23"),
            ("em24-4", 4, "carlo-gavazzi-em24"),
        ]),
        rtu_meters = meters(&[("sdm120-1", 1, "eastron-sdm120"), ("ddsu666-2", 2, "chint-ddsu666")]),
    );
    let cfg = config::load_str(&text, "demo.toml").map_err(|e| anyhow!("demo config: {e}"))?;
    outln!("meterd demo");
    outln!("  simulated Modbus TCP meters on {tcp_addr} (units 1-4)");
    outln!("  simulated Modbus RTU meters on pty {pty} (units 1-2, 9600 8N1)");
    outln!(
        "  simulated DL/T 645-2007 meters on pty {dl_pty} (123456789012, 000000001111; 2400 8E1)"
    );
    outln!("  journal in {}", state_dir.display());
    if broker_up {
        outln!("  publishing to mqtt://127.0.0.1:1883 — try: mosquitto_sub -v -t 'meterd/demo/#'");
    } else {
        outln!("  no MQTT broker on 127.0.0.1:1883: readings are buffered and published when one appears");
    }
    outln!("  status page and metrics on http://127.0.0.1:9645/ (if the port is free)");
    outln!("  alert rule: power factor below 0.95 for 4 s (some simulated meters have one)");
    outln!("  Ctrl-C stops\n");
    let live = Arc::new(LiveState::default());
    let stop = stop_signal()?;
    let mut show_stop = stop.clone();
    let (_reload_tx, reloads) = tokio::sync::mpsc::unbounded_channel();
    let daemon = tokio::spawn(meterd::daemon::run(cfg, live.clone(), stop, reloads));
    let mut tick = tokio::time::interval(Duration::from_secs(3));
    loop {
        tokio::select! {
            _ = tick.tick() => print_live(&live),
            _ = show_stop.changed() => break,
        }
    }
    daemon.await?;
    let _ = std::fs::remove_dir_all(&state_dir);
    Ok(0)
}

async fn timesync(b: &BusArgs, utc_offset: &str) -> anyhow::Result<i32> {
    use meterd::protocols::dlt645::Version;
    let (protocol, l, timeout) = link_from(b)?;
    let version = match protocol {
        BusProtocol::Dlt645_2007 => Version::V2007,
        BusProtocol::Dlt645_1997 => Version::V1997,
        _ => bail!("timesync is for DL/T 645: give --protocol dlt645-2007 or dlt645-1997"),
    };
    let offset = config::parse_utc_offset(utc_offset)
        .ok_or_else(|| anyhow!("--utc-offset {utc_offset:?}: use +HH:MM"))?;
    let mut link = meterd::bus::dlt645::Dlt645Link::new(version, l, timeout);
    link.broadcast_time(offset).await?;
    // Let the frame leave the adapter before the port closes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    outln!("broadcast the time (UTC{utc_offset}) to every meter on the line");
    Ok(0)
}

fn decode(protocol: &str, json: bool, frames: &[String]) -> anyhow::Result<i32> {
    use meterd::protocols::dlt645::{describe::describe, frame::from_hex, Version};
    let version = match protocol {
        "dlt645-2007" => Version::V2007,
        "dlt645-1997" => Version::V1997,
        p => bail!("decode knows dlt645-2007 and dlt645-1997, not {p:?}"),
    };
    let mut invalid = 0;
    for (i, text) in frames.iter().enumerate() {
        let result = from_hex(text).and_then(|bytes| describe(version, &bytes).map(|d| (bytes, d)));
        match (result, json) {
            (Ok((_, d)), true) => outln!(
                "{}",
                serde_json::json!({"frame": i + 1, "valid": true, "decoded": d})
            ),
            (Err(e), true) => {
                invalid += 1;
                outln!(
                    "{}",
                    serde_json::json!({"frame": i + 1, "valid": false, "error": e.to_string(), "detail": format!("{e:?}")})
                );
            }
            (Ok((bytes, d)), false) => {
                outln!("frame {}: {} bytes", i + 1, bytes.len());
                if d.preamble > 0 {
                    outln!("  preamble   {} x FE", d.preamble);
                }
                outln!("  address    {}", d.address);
                outln!(
                    "  control    {:02X}: {}, {}{}, function {:02X} {}",
                    d.control,
                    if d.reply {
                        "meter -> master"
                    } else {
                        "master -> meter"
                    },
                    if d.abnormal { "abnormal" } else { "normal" },
                    if d.follow_up {
                        ", more frames follow"
                    } else {
                        ""
                    },
                    d.control & 0x1F,
                    d.function
                );
                outln!("  length     {}", d.length);
                if d.length > 0 {
                    outln!("  data       {}   (after -0x33)", d.data);
                }
                if let Some(di) = &d.di {
                    outln!("  DI         {di}");
                }
                for (name, value, unit) in &d.values {
                    outln!("  value      {name} = {value} {unit}");
                }
                if let Some(seq) = d.seq {
                    outln!("  SEQ        {seq}");
                }
                if let Some((err, bits)) = &d.error {
                    outln!("  error      {err:02X}: {}", bits.join(", "));
                }
                for n in &d.notes {
                    outln!("  note       {n}");
                }
                outln!("  checksum   ok, end 16");
            }
            (Err(e), false) => {
                invalid += 1;
                outln!("frame {}: invalid: {e}", i + 1);
            }
        }
    }
    Ok(if invalid > 0 { 1 } else { 0 })
}

fn print_live(live: &LiveState) {
    let snap = live.snapshot();
    if snap.is_empty() {
        return;
    }
    outln!(
        "{:<12} {:<10} {:<8} {:>9} {:>9} {:>12} {:>14}",
        "meter",
        "bus",
        "state",
        "V L1",
        "A L1",
        "W",
        "kWh import"
    );
    for (id, s) in &snap {
        let get = |q: &str| {
            s.last_values
                .get(q)
                .map_or_else(|| "-".into(), |v| format!("{v:.2}"))
        };
        let state = match s.online {
            Some(true) => "online",
            Some(false) => "OFFLINE",
            None => "…",
        };
        outln!(
            "{:<12} {:<10} {:<8} {:>9} {:>9} {:>12} {:>14}",
            id,
            s.bus,
            state,
            get("voltage_l1_v"),
            get("current_l1_a"),
            get("power_w"),
            get("energy_import_kwh")
        );
    }
    for a in live.alerts() {
        outln!(
            "ALERT {:<8} {:<16} {}",
            a.state.as_str(),
            a.name(),
            a.summary
        );
    }
    outln!();
}
