//! Real servers for tests, started on free loopback ports and stopped on drop.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// The path of a server binary, or a panic naming the Debian package that has it.
pub fn binary(name: &str, package: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/bin", "/sbin", "/usr/local/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` not found: install the Debian package `{package}` (the README's test command does)")
        })
}

pub struct Server {
    pub port: u16,
    child: Child,
    /// Data and logs; removed when the server is dropped.
    _dir: tempfile::TempDir,
}

impl Server {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_for_port(port: u16, name: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{name} exited at start-up: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{name} did not listen on 127.0.0.1:{port} within 30 s");
}

fn spawn(cmd: &mut Command, dir: &Path, name: &str) -> Child {
    let log = std::fs::File::create(dir.join("server.log")).expect("log file");
    let err = log.try_clone().expect("log file");
    cmd.stdout(log).stderr(err).stdin(Stdio::null());
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"))
}

pub fn mosquitto() -> Server {
    mosquitto_on(free_port())
}

pub fn mosquitto_on(port: u16) -> Server {
    let bin = binary("mosquitto", "mosquitto");
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\n"),
    )
    .expect("write mosquitto.conf");
    let mut child = spawn(
        Command::new(bin).arg("-c").arg(&conf),
        dir.path(),
        "mosquitto",
    );
    wait_for_port(port, "mosquitto", &mut child);
    Server {
        port,
        child,
        _dir: dir,
    }
}

pub fn influxdb1() -> Server {
    let bin = binary("influxd", "influxdb");
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, rpc) = (free_port(), free_port());
    let d = dir.path().display();
    let conf = dir.path().join("influxdb.conf");
    std::fs::write(
        &conf,
        format!(
            "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n\
             [meta]\n  dir = \"{d}/meta\"\n\
             [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
             [http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n\
             [monitor]\n  store-enabled = false\n\
             [subscriber]\n  enabled = false\n\
             [continuous_queries]\n  enabled = false\n"
        ),
    )
    .expect("write influxdb.conf");
    let mut child = spawn(
        Command::new(bin).arg("run").arg("-config").arg(&conf),
        dir.path(),
        "influxd",
    );
    wait_for_port(port, "influxd", &mut child);
    Server {
        port,
        child,
        _dir: dir,
    }
}

pub fn victoria_metrics() -> Server {
    let bin = binary("victoria-metrics", "victoria-metrics");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut child = spawn(
        Command::new(bin)
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!(
                "-storageDataPath={}",
                dir.path().join("data").display()
            )),
        dir.path(),
        "victoria-metrics",
    );
    wait_for_port(port, "victoria-metrics", &mut child);
    Server {
        port,
        child,
        _dir: dir,
    }
}

/// InfluxQL against InfluxDB 1.x; returns the JSON answer.
pub async fn influxql(server: &Server, db: &str, q: &str) -> serde_json::Value {
    reqwest::Client::new()
        .post(format!("{}/query", server.url()))
        .query(&[("db", db), ("q", q)])
        .send()
        .await
        .expect("influx query")
        .json()
        .await
        .expect("influx json")
}
