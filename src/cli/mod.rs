//! The command line: one file per command; anyhow lives here and in `main.rs` only.

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

mod args;
mod cmd;
mod decode;
mod demo;
mod profiles;
mod read;
mod run;
mod scan;
mod simulate;
mod timesync;

use args::*;
use cmd::*;
use decode::*;
use demo::*;
use meterd::protocols::dlt645::Version as Dlt645Version;
use profiles::*;
use read::*;
use run::*;
use scan::*;
use simulate::*;
use timesync::*;

use anyhow::{anyhow, bail, Context as _};
use clap::{Args, Parser, Subcommand};
use meterd::{
    bus::{link::open_serial, modbus::ModbusLink},
    config::{self, BusProtocol, Link, Parity, ProfileSet, SerialConfig},
    protocols::{modbus::RegisterKind, profile::Profile, quantity},
    sim::{self, Simulator},
    state::LiveState,
};
use tokio::sync::watch;

/// Exit code for a bad config (sysexits EX_CONFIG); systemd's RestartPreventExitStatus.
const EXIT_CONFIG: i32 = 78;

/// The config at `path`, or every problem printed to stderr and the exit code for a bad config.
fn load_config(path: &Path) -> Result<config::Config, i32> {
    config::load(path).map_err(|errors| {
        for e in &errors.0 {
            eprintln!("{e}");
        }
        EXIT_CONFIG
    })
}

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
        /// The meters' local time zone, as +HH:MM (default: China Standard Time, +08:00).
        #[arg(long)]
        utc_offset: Option<String>,
    },
    /// Send a signed command to a running gateway through its broker and print the reply.
    Cmd(CmdArgs),
    /// Decode captured DL/T 645 or DL/T 698.45 frames: every field, values with units, what
    /// is wrong. Exit 1 if any frame is invalid.
    Decode {
        #[arg(long, value_enum)]
        protocol: DecodeProtocol,
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

pub fn main() -> i32 {
    let cli = Cli::parse();
    init_logging();
    // The daemon runs on one thread: its work is many small steps (a request, a reading, a
    // publish), and handing them between worker threads cost more than the work (futex
    // wake-ups, cache misses; BENCHMARKS.md, "Lean at scale"). What blocks (fsync, backlog
    // reads) goes to the blocking pool. The other commands keep two workers.
    let mut builder = if matches!(cli.command, Command::Run(_)) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    };
    let runtime = match builder.enable_all().build() {
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
        Command::Cmd(a) => cmd(a).await,
        Command::Decode {
            protocol,
            json,
            frames,
        } => match protocol {
            DecodeProtocol::Dlt645_2007 => decode(Dlt645Version::V2007, json, &frames),
            DecodeProtocol::Dlt645_1997 => decode(Dlt645Version::V1997, json, &frames),
            DecodeProtocol::Dlt698 => decode_698(json, &frames),
        },
        Command::Timesync { bus, utc_offset } => timesync(&bus, utc_offset.as_deref()).await,
    }
}
