//! Command-line arguments shared by several commands, and turning them into links.

use super::*;

#[derive(Args, Clone)]
pub(super) struct BusArgs {
    /// Default: modbus-rtu with --serial, modbus-tcp with --addr.
    #[arg(long, value_enum)]
    pub(super) protocol: Option<BusProtocol>,
    /// HOST:PORT of a Modbus TCP device or serial server.
    #[arg(long)]
    pub(super) addr: Option<String>,
    /// Serial device of an RS-485 adapter.
    #[arg(long)]
    pub(super) serial: Option<PathBuf>,
    /// Default: 9600 for Modbus and DL/T 698.45, 2400 for DL/T 645-2007, 1200 for DL/T 645-1997.
    #[arg(long)]
    pub(super) baud: Option<u32>,
    /// Default: none for Modbus, even for DL/T 645 and 698.45.
    #[arg(long, value_enum)]
    pub(super) parity: Option<Parity>,
    #[arg(long, default_value_t = 8)]
    pub(super) data_bits: u8,
    #[arg(long, default_value_t = 1)]
    pub(super) stop_bits: u8,
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub(super) timeout: Duration,
}

#[derive(Args)]
pub(super) struct ReadArgs {
    #[arg(short, long)]
    pub(super) config: Option<PathBuf>,
    /// Meter id in the config.
    #[arg(long)]
    pub(super) meter: Option<String>,
    #[command(flatten)]
    pub(super) bus: BusArgs,
    /// Modbus unit id.
    #[arg(long)]
    pub(super) unit: Option<u8>,
    /// DL/T 645 or 698.45 meter address (the digits on the nameplate).
    #[arg(long)]
    pub(super) address: Option<String>,
    /// DL/T 698.45: read these object attributes (8 hex digits such as 00100200) instead of
    /// a profile's; repeatable. Values print scaled, with their quantity names.
    #[arg(long = "oad")]
    pub(super) oads: Vec<String>,
    /// DL/T 645: read these identifiers (hex, as the standard prints them) instead of a
    /// profile's; repeatable. Blocks (FF) print every member.
    #[arg(long = "di")]
    pub(super) dis: Vec<String>,
    #[arg(long)]
    pub(super) profile: Option<String>,
    /// One JSON object instead of a table.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Args)]
pub(super) struct ScanArgs {
    #[command(flatten)]
    pub(super) bus: BusArgs,
    /// Unit ids to try, e.g. 1-247 or 1-10.
    #[arg(long, default_value = "1-247")]
    pub(super) units: String,
    /// DL/T 645: addresses to probe, e.g. 000000000001-000000000032 or a comma list.
    /// Without it, only the read-address broadcast (AA..AA) is tried.
    #[arg(long)]
    pub(super) addresses: Option<String>,
    /// Probe with this profile's first point instead of holding register 0.
    #[arg(long)]
    pub(super) profile: Option<String>,
    /// holding or input.
    #[arg(long, default_value = "holding")]
    pub(super) register: String,
    #[arg(long, default_value_t = 0)]
    pub(super) address: u16,
}

#[derive(Args)]
pub(super) struct SimArgs {
    #[arg(long, value_enum, default_value_t = SimProtocol::Modbus)]
    pub(super) protocol: SimProtocol,
    /// Serve on TCP at this address (e.g. 127.0.0.1:5020): Modbus TCP, or DL/T 645 frames.
    #[arg(long)]
    pub(super) tcp: Option<String>,
    /// Serve on a new pty; prints the path for the master.
    #[arg(long)]
    pub(super) pty: bool,
    /// Serve on this serial device.
    #[arg(long)]
    pub(super) serial: Option<PathBuf>,
    /// Line rate; DL/T 645 replies take the wire time of this rate.
    #[arg(long)]
    pub(super) baud: Option<u32>,
    /// Profile of the meters made by --count (default: eastron-sdm630, or the DL/T 645
    /// three-phase profile of the protocol).
    #[arg(long)]
    pub(super) profile: Option<String>,
    /// Also take profiles from this directory (as the config's `profiles_dir`).
    #[arg(long)]
    pub(super) profiles_dir: Option<PathBuf>,
    /// Number of meters, at unit ids from --first-unit on.
    #[arg(long, default_value_t = 1)]
    pub(super) count: u16,
    #[arg(long, default_value_t = 1)]
    pub(super) first_unit: u8,
    /// A meter as UNIT=PROFILE, or ADDRESS=PROFILE for DL/T 645 and 698.45 (repeatable;
    /// replaces --count).
    #[arg(long = "meter")]
    pub(super) meters: Vec<String>,
    /// A fault as UNIT=FAULT: silent, exception[:CODE], garbage, bad-crc, slow:DURATION, more-frames[:DURATION] (DL/T 645).
    #[arg(long = "fault")]
    pub(super) faults: Vec<String>,
    /// Hold values fixed.
    #[arg(long)]
    pub(super) frozen: bool,
    /// DL/T 645: value bytes per reply frame; longer values are sent in follow-up frames.
    #[arg(long)]
    pub(super) max_frame_values: Option<usize>,
    /// DL/T 698.45 meter behaviour as ADDRESS=QUIRK (repeatable): no-lists (refuses
    /// GET-Request-NormalList), secure (answers only SECURITY-wrapped reads), fragments:N
    /// (splits replies into link fragments of N bytes), blocks:N (answers lists in
    /// GET-Response-Next blocks of N results), drift:SECONDS (its clock's offset).
    #[arg(long = "quirk")]
    pub(super) quirks: Vec<String>,
}

/// What `meterd simulate` serves.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum SimProtocol {
    Modbus,
    #[value(name = "dlt645-2007")]
    Dlt645_2007,
    #[value(name = "dlt645-1997")]
    Dlt645_1997,
    #[value(name = "dlt698")]
    Dlt698,
}

impl SimProtocol {
    /// The bus protocol whose line settings the simulator takes (Modbus: RTU's).
    pub(super) fn bus(self) -> BusProtocol {
        match self {
            SimProtocol::Modbus => BusProtocol::ModbusRtu,
            SimProtocol::Dlt645_2007 => BusProtocol::Dlt645_2007,
            SimProtocol::Dlt645_1997 => BusProtocol::Dlt645_1997,
            SimProtocol::Dlt698 => BusProtocol::Dlt698,
        }
    }
}

impl std::fmt::Display for SimProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SimProtocol::Modbus => "modbus",
            SimProtocol::Dlt645_2007 => "dlt645-2007",
            SimProtocol::Dlt645_1997 => "dlt645-1997",
            SimProtocol::Dlt698 => "dlt698",
        })
    }
}

/// The DL/T 645 editions, for commands that speak only DL/T 645.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Dlt645Protocol {
    #[value(name = "dlt645-2007")]
    Dlt645_2007,
    #[value(name = "dlt645-1997")]
    Dlt645_1997,
}

/// What `decode` reads: the DL/T 645 editions and DL/T 698.45.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum DecodeProtocol {
    #[value(name = "dlt645-2007")]
    Dlt645_2007,
    #[value(name = "dlt645-1997")]
    Dlt645_1997,
    #[value(name = "dlt698")]
    Dlt698,
}

/// The bus the flags describe: its protocol (Modbus RTU on a serial device, Modbus TCP on an
/// address, unless given), its link with the protocol's defaults, and the timeout.
pub(super) fn link_from(b: &BusArgs) -> anyhow::Result<(BusProtocol, Link, Duration)> {
    let protocol = b.protocol.unwrap_or(if b.serial.is_some() {
        BusProtocol::ModbusRtu
    } else {
        BusProtocol::ModbusTcp
    });
    let link = match (&b.addr, &b.serial) {
        (Some(a), None) => Link::Tcp(a.clone()),
        (None, Some(dev)) => Link::Serial(SerialConfig {
            device: dev.clone(),
            baud: b.baud.unwrap_or(protocol.default_baud()),
            parity: b.parity.unwrap_or(protocol.default_parity()),
            data_bits: b.data_bits,
            stop_bits: b.stop_bits,
        }),
        _ => bail!("give --addr HOST:PORT or --serial DEVICE"),
    };
    Ok((protocol, link, b.timeout))
}

/// The DL/T 645 edition of a bus the flags describe, or an error naming `what` needs it.
pub(super) fn dlt645_version(
    protocol: BusProtocol,
    what: &str,
) -> anyhow::Result<meterd::protocols::dlt645::Version> {
    protocol.dlt645_version().ok_or_else(|| {
        anyhow!("{what} is for DL/T 645: give --protocol dlt645-2007 or dlt645-1997")
    })
}

/// `KEY=VALUE` arguments (`--meter 3=eastron-sdm630`, `--fault 3=silent`), keys parsed by
/// `parse`; `what` names the form in errors.
pub(super) fn pairs<'a, K>(
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
pub(super) fn builtin_profile(set: &ProfileSet, name: &str) -> anyhow::Result<Arc<Profile>> {
    set.get(name)
        .cloned()
        .ok_or_else(|| anyhow!("no profile {name:?}"))
}

pub(super) fn parse_range(s: &str) -> anyhow::Result<std::ops::RangeInclusive<u8>> {
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

/// Addresses as a range (`000000000001-000000000032`) or a comma list.
pub(super) fn parse_addresses(s: &str) -> anyhow::Result<Vec<meterd::protocols::dlt645::Address>> {
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

pub(super) fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
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
