//! Running `meterd` as a real process, collecting MQTT messages, simulated meters.

use std::{
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use meterd::{config::ProfileSet, sim::Simulator};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};

pub struct Meterd {
    child: Child,
    pub log: std::path::PathBuf,
}

impl Meterd {
    pub fn run(config: &Path) -> Meterd {
        Meterd::run_with_env(config, &[])
    }

    /// Run with extra environment variables (e.g. NOTIFY_SOCKET).
    pub fn run_with_env(config: &Path, env: &[(&str, &str)]) -> Meterd {
        Meterd::start(config, env, "")
    }

    /// Run with at most `n` open files (soft and hard limit), as a shell's `ulimit -n` sets.
    pub fn run_with_nofile(config: &Path, n: u32) -> Meterd {
        Meterd::start(config, &[], &format!("ulimit -n {n}; "))
    }

    fn start(config: &Path, env: &[(&str, &str)], shell_prefix: &str) -> Meterd {
        let log = config.with_extension("log");
        // Appended: several runs on one config (restarts) keep one log to read afterwards.
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        // Through `sh … exec` so the process can know its own pid as WATCHDOG_PID, as systemd
        // sets it; exec keeps the pid, so signals still reach meterd itself.
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("{shell_prefix}WATCHDOG_PID=$$ exec \"$@\""))
            .arg("sh")
            .arg(crate::meterd_bin())
            .arg("run")
            .arg("-c")
            .arg(config)
            .env("RUST_LOG", "info,meterd=debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("start meterd");
        Meterd { child, log }
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory in KiB (`VmRSS`), while it runs.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until it says it is running (config loaded, journal open, tasks started).
    pub async fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.log_text().contains("meterd running") {
            assert!(
                Instant::now() < deadline,
                "meterd did not start:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGHUP: reload the config.
    pub fn hup(&self) {
        let _ = Command::new("kill")
            .arg("-HUP")
            .arg(self.child.id().to_string())
            .status();
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait up to `within` for the exit.
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Meterd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: String,
    pub retain: bool,
}

/// Subscribes to `filter` and keeps every message.
#[derive(Clone)]
pub struct Collector {
    pub messages: Arc<Mutex<Vec<Message>>>,
}

impl Collector {
    pub async fn start(port: u16, filter: &str) -> Collector {
        Collector::start_with(port, filter, None).await
    }

    /// With `session`, a persistent session under that client id: the broker queues messages
    /// while the collector is away (a broker restart included, with persistence on).
    pub async fn start_with(port: u16, filter: &str, session: Option<&str>) -> Collector {
        let id = session.map_or_else(
            || format!("test-{}", crate::servers::free_port()),
            String::from,
        );
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_max_packet_size(1 << 20, 1 << 20);
        o.set_clean_session(session.is_none());
        let filter = filter.to_string();
        let (client, mut el) = AsyncClient::new(o, 100);
        client
            .subscribe(&filter, QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let m = messages.clone();
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        let mut subscribed_tx = Some(subscribed_tx);
        tokio::spawn(async move {
            let mut connected_before = false;
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                        // A reconnect without a kept session has lost the subscription.
                        if connected_before && !ack.session_present {
                            let _ = client.try_subscribe(&filter, QoS::AtLeastOnce);
                        }
                        connected_before = true;
                    }
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        if let Some(tx) = subscribed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => m.lock().unwrap().push(Message {
                        topic: p.topic.clone(),
                        payload: String::from_utf8_lossy(&p.payload).into_owned(),
                        retain: p.retain,
                    }),
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        let _ = tokio::time::timeout(Duration::from_secs(10), subscribed_rx).await;
        Collector { messages }
    }

    pub fn all(&self) -> Vec<Message> {
        self.messages.lock().unwrap().clone()
    }

    pub fn on(&self, topic: &str) -> Vec<Message> {
        self.all()
            .into_iter()
            .filter(|m| m.topic == topic)
            .collect()
    }

    /// Wait until `pred` holds for the messages so far.
    pub async fn wait_for(&self, what: &str, within: Duration, pred: impl Fn(&[Message]) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            if pred(&self.all()) {
                return;
            }
            if Instant::now() > deadline {
                let topics: std::collections::BTreeSet<String> =
                    self.all().into_iter().map(|m| m.topic).collect();
                panic!("timed out waiting for {what}; topics seen: {topics:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Simulated Modbus TCP meters on a free loopback port.
pub async fn tcp_sim(meters: &[(u8, &str)], frozen: bool) -> (Arc<Simulator>, String) {
    let set = ProfileSet::builtin();
    let sim = Simulator::new();
    for (unit, profile) in meters {
        sim.add_meter(*unit, set.get(profile).cloned().expect("profile"), frozen);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(sim.clone().serve_tcp(listener));
    (sim, addr)
}

/// GET `path` from meterd's HTTP endpoints on `port`: status and body, None when unreachable.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let r = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .ok()?;
    Some((r.status().as_u16(), r.text().await.ok()?))
}

/// GET a JSON document from meterd's HTTP endpoints.
pub async fn http_json(port: u16, path: &str) -> Option<serde_json::Value> {
    serde_json::from_str(&http_get(port, path).await?.1).ok()
}

/// Wait until `f` returns Some, polling every 200 ms.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The tolerance for comparing a reported value with the simulated one: the point's
/// resolution (its scale for integer registers; float precision for float registers).
pub fn tolerance(profile: &str, quantity: &str, expected: f64) -> f64 {
    let set = ProfileSet::builtin();
    let p = set.get(profile).expect("profile");
    let point = p
        .points()
        .find(|pt| &*pt.quantity == quantity)
        .expect("point");
    if point.ty.is_float() {
        expected.abs() * 1e-6 * point.scale.abs().max(1.0) + 1e-9
    } else {
        point.scale.abs()
    }
}

/// The number of readings a stopped meterd reports in its last line ("stopped readings=N").
pub fn readings_at_stop(log: &str) -> Option<u64> {
    log.lines().rev().find_map(|l| {
        l.split("readings=")
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// A config with one SDM120 (`m1`, unit 1) on a Modbus TCP bus at `sim`, polled every
/// `interval`, its journal in `state`, and `sinks` (TOML sections) appended.
pub fn one_meter_config(
    dir: &Path,
    gateway: &str,
    state: &Path,
    sim: &str,
    interval: &str,
    sinks: &str,
) -> std::path::PathBuf {
    one_meter_config_with(
        dir,
        gateway,
        state,
        sim,
        &format!("interval = \"{interval}\""),
        sinks,
    )
}

/// The same with the meter's polling given as a TOML line (`intervals = { … }`).
pub fn one_meter_config_with(
    dir: &Path,
    gateway: &str,
    state: &Path,
    sim: &str,
    polling: &str,
    sinks: &str,
) -> std::path::PathBuf {
    let cfg = dir.join("meterd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[gateway]\nid = \"{gateway}\"\nstate_dir = \"{}\"\n[[bus]]\nname = \"b\"\nprotocol = \"modbus-tcp\"\ntcp = \"{sim}\"\n\
             [[bus.meter]]\nid = \"m1\"\nunit = 1\nprofile = \"eastron-sdm120\"\n{polling}\n{sinks}",
            state.display()
        ),
    )
    .expect("write config");
    cfg
}

/// `[[bus.meter]]` tables, one per `(unit, profile)`: id `m{unit}`, with `polling` (say
/// `interval = "1s"`) in each.
pub fn meter_tables(meters: &[(u8, &str)], polling: &str) -> String {
    meters
        .iter()
        .map(|(unit, profile)| {
            format!("[[bus.meter]]\nid = \"m{unit}\"\nunit = {unit}\nprofile = \"{profile}\"\n{polling}\n")
        })
        .collect()
}

/// For the benches: write `config` to `dir/bench.toml` and start `meterd run` on it with its
/// default log level (no debug lines to skew the measurement), stderr to `dir/meterd.log`.
/// Returns the process and the log's path.
pub fn start_for_bench(dir: &Path, config: &str) -> (Child, std::path::PathBuf) {
    let path = dir.join("bench.toml");
    std::fs::write(&path, config).expect("config");
    let log = dir.join("meterd.log");
    let child = Command::new(crate::meterd_bin())
        .args(["run", "-c"])
        .arg(&path)
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("meterd");
    (child, log)
}

/// A number from the environment (bench settings), or `default`. Used by the benches, which
/// include this file.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `meterd simulate --tcp 127.0.0.1:0 ARGS`: the process and the address it serves on.
pub fn simulate_tcp(args: &[&str]) -> (Child, String) {
    let mut all = vec!["--tcp", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let (child, line) = simulate(&all);
    // "modbus-tcp 127.0.0.1:PORT units [...]"
    let addr = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("simulator said {line:?}"))
        .to_string();
    (child, addr)
}

/// `meterd simulate ARGS` in the background (the binary Cargo built, whatever `METERD_BIN`
/// says: simulators are test equipment) and the first line it prints (where it serves).
pub fn simulate(args: &[&str]) -> (Child, String) {
    use std::io::BufRead;
    let mut child = Command::new(crate::built_bin())
        .arg("simulate")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("meterd simulate");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the simulator's first line");
    (child, line)
}
