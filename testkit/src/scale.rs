//! The scale bench's run, shared by `benches/scale.rs` and its smoke test: N simulated Modbus
//! TCP meters served by `meterd simulate` processes of their own (so their CPU is not
//! meterd's), meterd polling them into its journal and delivering to a real Mosquitto (QoS 1)
//! and InfluxDB (1.x `/write`, or VictoriaMetrics through the v2 write API). Measured over a
//! window after a warm-up: meterd's CPU (utime + stime from `/proc`), its peak RSS
//! (`VmHWM`), readings made against readings scheduled, readings each sink confirmed and the
//! delivery lag (meterd's `meterd_sink_delivery_lag_seconds`), and the simulators' CPU.

use std::{
    path::Path,
    process::{Child, Command},
    time::{Duration, Instant},
};

use crate::{harness, servers};

/// Where readings go besides MQTT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Influx {
    None,
    /// InfluxDB 1.x, `/write`.
    V1,
    /// VictoriaMetrics, `/api/v2/write`.
    V2,
}

/// A meter model for the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// Eastron SDM630, every point of both groups (32 values in 5 requests).
    Sdm630,
    /// Eight float32 input registers read in one FC4 request (the issue's workload).
    Eight,
}

impl Model {
    fn profile(self) -> &'static str {
        match self {
            Model::Sdm630 => "eastron-sdm630",
            Model::Eight => "bench-eight-f32",
        }
    }
    /// Readings per meter per interval, and values per reading.
    pub fn shape(self) -> (u64, f64) {
        match self {
            Model::Sdm630 => (2, 16.0),
            Model::Eight => (1, 8.0),
        }
    }
}

/// The issue's workload as a user profile: 8 float32 values in one block of input registers.
pub(crate) const EIGHT_F32: &str = r#"
name = "bench-eight-f32"
manufacturer = "bench"
model = "eight float32 input registers"
document = "meterd benches: 8 float32 values read with one FC4 request"
protocol = "modbus"
register = "input"
type = "f32"
order = "ABCD"

[[group]]
name = "realtime"
interval = "1s"
points = [
  { quantity = "voltage_l1_v", address = 0 },
  { quantity = "voltage_l2_v", address = 2 },
  { quantity = "voltage_l3_v", address = 4 },
  { quantity = "current_l1_a", address = 6 },
  { quantity = "current_l2_a", address = 8 },
  { quantity = "current_l3_a", address = 10 },
  { quantity = "power_w", address = 12 },
  { quantity = "frequency_hz", address = 14 },
]
"#;

#[derive(Debug, Clone)]
pub struct Scenario {
    pub meters: usize,
    pub model: Model,
    pub interval: Duration,
    pub warmup: Duration,
    pub window: Duration,
    pub mqtt: bool,
    pub influx: Influx,
    /// Meters per simulator process (one Modbus TCP port each, one bus in meterd).
    pub per_sim: usize,
    /// Meters polled at once per bus.
    pub concurrency: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub meters: usize,
    pub window_s: f64,
    /// Readings made in the window, and how many the schedule asked for.
    pub readings: u64,
    pub scheduled: u64,
    pub failures: u64,
    pub values: f64,
    /// meterd's CPU seconds (user + system) in the window.
    pub cpu_s: f64,
    pub rss_peak_kib: u64,
    pub rss_end_kib: u64,
    /// The simulators' CPU seconds in the window, all processes, and the busiest one's.
    pub sim_cpu_s: f64,
    pub sim_cpu_max_s: f64,
    /// Context switches of meterd's threads in the window (each sleep that ends is one).
    pub wakeups: u64,
    /// Per sink: (name, readings confirmed in the window, lag p99 upper bound in seconds).
    pub sinks: Vec<(String, u64, f64)>,
}

impl Report {
    pub fn cpu_share(&self) -> f64 {
        self.cpu_s / self.window_s
    }
    pub fn us_per_reading(&self) -> f64 {
        self.cpu_s * 1e6 / self.readings.max(1) as f64
    }
    pub fn cpu_s_per_1000_values(&self) -> f64 {
        self.cpu_s * 1000.0 / self.values.max(1.0)
    }
    pub fn on_time(&self) -> f64 {
        self.readings as f64 / self.scheduled.max(1) as f64
    }
}

/// CPU ticks (utime + stime, in 1/100 s) of a process.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15; after the ")" they are at 11 and 12.
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// Context switches (voluntary and not) summed over a process's threads.
pub fn wakeups(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| t.ok())
        .map(|t| {
            std::fs::read_to_string(t.path().join("status"))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("ctxt_switches"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

/// A `VmHWM`/`VmRSS`-style field of `/proc/PID/status`, in KiB.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| {
            v.trim_start_matches(':')
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Processes killed on drop.
pub(crate) struct Procs(pub(crate) Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `meterd simulate` serving `count` meters on a free port; returns the process and address.
pub(crate) fn simulator(model: Model, count: usize, profiles: &Path) -> (Child, String) {
    harness::simulate_tcp(&[
        "--profile",
        model.profile(),
        "--profiles-dir",
        &profiles.display().to_string(),
        "--count",
        &count.to_string(),
    ])
}

/// Sum of a metric's samples whose labels contain `filter`, from `/metrics` text.
pub fn metric_sum(text: &str, name: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A histogram's cumulative buckets `(le, count)` for the samples matching `filter`.
fn buckets(text: &str, name: &str, filter: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    let mut out: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.starts_with(&prefix) && l.contains(filter))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The smallest bucket bound below which 99 % of the window's observations fall.
fn p99(before: &[(f64, f64)], after: &[(f64, f64)]) -> f64 {
    let window: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, n)| {
            let old = before
                .iter()
                .find(|(l, _)| l == le)
                .map_or(0.0, |(_, n)| *n);
            (*le, n - old)
        })
        .collect();
    let total = window.last().map_or(0.0, |(_, n)| *n);
    if total == 0.0 {
        return f64::NAN;
    }
    window
        .iter()
        .find(|(_, n)| *n >= 0.99 * total)
        .map_or(f64::INFINITY, |(le, _)| *le)
}

async fn scrape(port: u16) -> String {
    harness::http_get(port, "/metrics")
        .await
        .map(|(_, body)| body)
        .unwrap_or_default()
}

/// Run one scenario and measure it.
pub async fn run(s: &Scenario) -> Report {
    let dir = tempfile::tempdir().expect("tempdir");
    let profiles = dir.path().join("profiles");
    std::fs::create_dir_all(&profiles).expect("profiles dir");
    std::fs::write(profiles.join("bench-eight-f32.toml"), EIGHT_F32).expect("profile");

    let mosquitto = s.mqtt.then(servers::mosquitto);
    let influx = match s.influx {
        Influx::None => None,
        Influx::V1 => {
            let server = servers::influxdb1();
            servers::influxql(&server, "", "CREATE DATABASE meters").await;
            Some(server)
        }
        Influx::V2 => Some(servers::victoria_metrics()),
    };

    let mut sims = Procs(Vec::new());
    let mut cfg = format!(
        "profiles_dir = \"{}\"\n[gateway]\nid = \"bench\"\nstate_dir = \"{}\"\n",
        profiles.display(),
        dir.path().join("state").display()
    );
    let http = servers::free_port();
    cfg += &format!("[http]\nlisten = \"127.0.0.1:{http}\"\n");
    if let Some(m) = &mosquitto {
        cfg += &format!("[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\nqos = 1\n", m.port);
        // `MQTT_INFLIGHT=N`: publishes awaiting PUBACK at once (meterd's default otherwise).
        if let Ok(n) = std::env::var("MQTT_INFLIGHT") {
            cfg += &format!("inflight = {}\n", n.trim());
        }
    }
    match (&influx, s.influx) {
        (Some(i), Influx::V1) => {
            cfg += &format!(
                "[influxdb]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"meters\"\n",
                i.url()
            )
        }
        (Some(i), Influx::V2) => {
            cfg += &format!(
                "[influxdb]\nurl = \"{}\"\napi = \"v2\"\norg = \"bench\"\nbucket = \"meters\"\ntoken = \"bench\"\n",
                i.url()
            )
        }
        _ => {}
    }
    let per_sim = s.per_sim.clamp(1, 247);
    let mut left = s.meters;
    let mut bus = 0;
    while left > 0 {
        let n = left.min(per_sim);
        let (child, addr) = simulator(s.model, n, &profiles);
        sims.0.push(child);
        bus += 1;
        cfg += &format!(
            "[[bus]]\nname = \"tcp{bus}\"\nprotocol = \"modbus-tcp\"\ntcp = \"{addr}\"\nconcurrency = {}\n",
            s.concurrency
        );
        for u in 1..=n {
            cfg += &format!(
                "[[bus.meter]]\nid = \"b{bus}m{u}\"\nunit = {u}\nprofile = \"{}\"\ninterval = \"{}ms\"\n",
                s.model.profile(),
                s.interval.as_millis()
            );
        }
        left -= n;
    }
    let (child, log) = harness::start_for_bench(dir.path(), &cfg);
    let pid = child.id();
    let mut meterd = Procs(vec![child]);
    tokio::time::sleep(s.warmup).await;
    if let Ok(Some(status)) = meterd.0[0].try_wait() {
        panic!(
            "meterd ended early ({status}):\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    let scraped0 = Instant::now();
    let before = scrape(http).await;
    let (t0, cpu0, woken0) = (Instant::now(), cpu_ticks(pid), wakeups(pid));
    let sim0: Vec<u64> = sims.0.iter().map(|c| cpu_ticks(c.id())).collect();
    tokio::time::sleep(s.window).await;
    let (cpu1, woken1) = (cpu_ticks(pid), wakeups(pid));
    let sim1: Vec<u64> = sims.0.iter().map(|c| cpu_ticks(c.id())).collect();
    let window_s = t0.elapsed().as_secs_f64();
    let after = scrape(http).await;
    // Readings are counted between the two scrapes' answers: about from the first's start to
    // the second's end.
    let counted_s = scraped0.elapsed().as_secs_f64();

    let rss_peak_kib = status_kib(pid, "VmHWM");
    let rss_end_kib = status_kib(pid, "VmRSS");
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let _ = meterd.0[0].wait();

    let (groups, per_reading) = s.model.shape();
    let polls = metric_sum(&after, "meterd_meter_polls_total", "")
        - metric_sum(&before, "meterd_meter_polls_total", "");
    let failures = metric_sum(&after, "meterd_meter_failures_total", "")
        - metric_sum(&before, "meterd_meter_failures_total", "");
    let scheduled =
        (s.meters as f64 * groups as f64 * counted_s / s.interval.as_secs_f64()).round() as u64;
    let mut sinks = Vec::new();
    for name in ["mqtt", "influxdb"] {
        let filter = format!("sink=\"{name}\"");
        if !after.contains(&filter) {
            continue;
        }
        let delivered = metric_sum(&after, "meterd_sink_delivered_total", &filter)
            - metric_sum(&before, "meterd_sink_delivered_total", &filter);
        let lag = p99(
            &buckets(&before, "meterd_sink_delivery_lag_seconds", &filter),
            &buckets(&after, "meterd_sink_delivery_lag_seconds", &filter),
        );
        sinks.push((name.to_string(), delivered as u64, lag));
    }
    let (sim_cpu_s, sim_cpu_max_s) = cpu_between(&sim0, &sim1);
    Report {
        meters: s.meters,
        window_s,
        readings: polls as u64,
        scheduled,
        failures: failures as u64,
        values: polls * per_reading,
        cpu_s: (cpu1 - cpu0) as f64 / 100.0,
        rss_peak_kib,
        rss_end_kib,
        sim_cpu_s,
        sim_cpu_max_s,
        wakeups: woken1.saturating_sub(woken0),
        sinks,
    }
}

/// CPU seconds of several processes between two readings of their [`cpu_ticks`]: all of
/// them, and the busiest one's.
pub(crate) fn cpu_between(before: &[u64], after: &[u64]) -> (f64, f64) {
    let each: Vec<f64> = before
        .iter()
        .zip(after)
        .map(|(a, b)| b.saturating_sub(*a) as f64 / 100.0)
        .collect();
    (each.iter().sum(), each.iter().cloned().fold(0.0, f64::max))
}

/// The report as one Markdown table row (see [`HEADER`]).
pub fn row(s: &Scenario, r: &Report) -> String {
    let sinks = r
        .sinks
        .iter()
        .map(|(n, d, lag)| {
            if !lag.is_nan() {
                format!("{n} {d} (p99 ≤ {lag} s)")
            } else {
                format!("{n} {d}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    format!(
        "| {} | {:?} | {:.1} % | {:.4} | {:.1} | {:.2} % | {:.1} | {:.1} | {:.0} | {:.1} % (max {:.1} %) | {} |",
        r.meters,
        s.model,
        r.on_time() * 100.0,
        r.cpu_s_per_1000_values(),
        r.us_per_reading(),
        r.cpu_share() * 100.0,
        r.rss_peak_kib as f64 / 1024.0,
        r.rss_end_kib as f64 / 1024.0,
        r.wakeups as f64 / r.window_s,
        r.sim_cpu_s / r.window_s * 100.0,
        r.sim_cpu_max_s / r.window_s * 100.0,
        sinks
    )
}

pub const HEADER: &str = "| meters | model | readings on time | CPU-s per 1,000 values | CPU µs per reading | meterd CPU (one core) | peak RSS MiB | RSS at end MiB | wake-ups/s | simulators' CPU (busiest) | confirmed in window (lag p99) |\n|---|---|---|---|---|---|---|---|---|---|---|";
