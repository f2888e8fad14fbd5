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
    /// How to start it again (same port, same data).
    program: PathBuf,
    args: Vec<std::ffi::OsString>,
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

    /// SIGTERM and wait: the server saves what it persists.
    pub fn stop_gracefully(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }

    /// Start it again on the same port with the same data.
    pub fn restart(&mut self) {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        self.child = spawn(&mut cmd, self._dir.path(), "restarted server");
        wait_for_port(
            self.port,
            "restarted server",
            &mut self.child,
            self._dir.path(),
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_for_port(port: u16, name: &str, child: &mut Child, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            panic!("{name} exited at start-up: {status}\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{name} did not listen on 127.0.0.1:{port} within 30 s");
}

fn spawn(cmd: &mut Command, dir: &Path, name: &str) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .expect("log file");
    let err = log.try_clone().expect("log file");
    cmd.stdout(log).stderr(err).stdin(Stdio::null());
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"))
}

/// Start `program args` with its data in `dir` and wait for `port` (and `more` ports).
fn start(
    name: &str,
    program: PathBuf,
    args: Vec<std::ffi::OsString>,
    dir: tempfile::TempDir,
    port: u16,
    more: &[u16],
) -> Server {
    let mut child = spawn(Command::new(&program).args(&args), dir.path(), name);
    for p in std::iter::once(&port).chain(more) {
        wait_for_port(*p, name, &mut child, dir.path());
    }
    Server {
        port,
        child,
        program,
        args,
        _dir: dir,
    }
}

pub fn mosquitto() -> Server {
    mosquitto_on(free_port())
}

pub fn mosquitto_on(port: u16) -> Server {
    mosquitto_with(port, false)
}

/// Mosquitto; with `persistent`, sessions and queued messages survive a graceful restart.
pub fn mosquitto_with(port: u16, persistent: bool) -> Server {
    let bin = binary("mosquitto", "mosquitto");
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("mosquitto.conf");
    let persistence = if persistent {
        // Mosquitto started as root drops to its own user, which must write its database here.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        format!(
            "persistence true\npersistence_location {}/\nautosave_interval 1\n",
            dir.path().display()
        )
    } else {
        "persistence false\n".to_string()
    };
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\n{persistence}max_queued_messages 1000000\nmax_inflight_messages 1000\n"),
    )
    .expect("write mosquitto.conf");
    start(
        "mosquitto",
        bin,
        vec!["-c".into(), conf.into()],
        dir,
        port,
        &[],
    )
}

pub fn influxdb1() -> Server {
    influxdb1_with("")
}

/// InfluxDB 1.x with authentication on and one admin, `user` with `password`, who owns a
/// database `meters`.
pub async fn influxdb1_auth(user: &str, password: &str) -> Server {
    let server = influxdb1_with("  auth-enabled = true\n");
    // With no user yet, InfluxDB takes the first admin without credentials.
    let q = format!("CREATE USER \"{user}\" WITH PASSWORD '{password}' WITH ALL PRIVILEGES");
    let client = reqwest::Client::new();
    let created = client
        .post(format!("{}/query", server.url()))
        .query(&[("q", q.as_str())])
        .send()
        .await
        .expect("create the admin");
    assert!(created.status().is_success(), "{:?}", created.text().await);
    let db = client
        .post(format!("{}/query", server.url()))
        .basic_auth(user, Some(password))
        .query(&[("q", "CREATE DATABASE meters")])
        .send()
        .await
        .expect("create the database");
    assert!(db.status().is_success(), "{:?}", db.text().await);
    server
}

fn influxdb1_with(http_extra: &str) -> Server {
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
             [http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n  max-row-limit = 0\n{http_extra}\
             [monitor]\n  store-enabled = false\n\
             [subscriber]\n  enabled = false\n\
             [continuous_queries]\n  enabled = false\n"
        ),
    )
    .expect("write influxdb.conf");
    start(
        "influxd",
        bin,
        vec!["run".into(), "-config".into(), conf.into()],
        dir,
        port,
        &[],
    )
}

pub fn victoria_metrics() -> Server {
    let bin = binary("victoria-metrics", "victoria-metrics");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let args = vec![
        format!("-httpListenAddr=127.0.0.1:{port}").into(),
        format!("-storageDataPath={}", dir.path().join("data").display()).into(),
    ];
    start("victoria-metrics", bin, args, dir, port, &[])
}

/// VictoriaMetrics' series that match `selector` (a series selector such as
/// `{__name__="meter_power_w"}`), after a flush that makes fresh samples visible: one JSON
/// object per series (`metric`, `values`, `timestamps`); `None` if it did not answer.
pub async fn vm_export(vm: &Server, selector: &str) -> Option<Vec<serde_json::Value>> {
    let http = reqwest::Client::new();
    let url = vm.url();
    let _ = http.get(format!("{url}/internal/force_flush")).send().await;
    let text = http
        .get(format!("{url}/api/v1/export"))
        .query(&[("match[]", selector)])
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect(),
    )
}

/// InfluxQL against InfluxDB 1.x; returns the JSON answer (times as epoch milliseconds).
pub async fn influxql(server: &Server, db: &str, q: &str) -> serde_json::Value {
    reqwest::Client::new()
        .post(format!("{}/query", server.url()))
        .query(&[("db", db), ("q", q), ("epoch", "ms")])
        .send()
        .await
        .expect("influx query")
        .json()
        .await
        .expect("influx json")
}

/// A CA and a server certificate for 127.0.0.1/localhost, made with openssl.
pub struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn certs(dir: &Path) -> Certs {
    certs_for(dir, "DNS:localhost,IP:127.0.0.1")
}

/// A CA and a server certificate whose subjectAltName is `san`.
pub fn certs_for(dir: &Path, san: &str) -> Certs {
    let openssl = binary("openssl", "openssl");
    let run = |args: &[&str]| {
        let out = Command::new(&openssl)
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(dir.join("san.ext"), format!("subjectAltName={san}\n")).expect("san.ext");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=meterd-test-ca",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    for f in ["ca.pem", "server.pem", "server.key"] {
        world_readable(&dir.join(f));
    }
    Certs {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    }
}

/// Mosquitto started as root drops to its own user: let it read these throwaway test files.
fn world_readable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = if path.is_dir() { 0o755 } else { 0o644 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Mosquitto with a TLS listener that requires `user`/`password`, and a plain anonymous
/// listener (returned second) for test subscribers.
pub fn mosquitto_tls(user: &str, password: &str) -> (Server, u16, PathBuf) {
    mosquitto_tls_for(user, password, "DNS:localhost,IP:127.0.0.1")
}

/// The same with a server certificate for `san`.
pub fn mosquitto_tls_for(user: &str, password: &str, san: &str) -> (Server, u16, PathBuf) {
    let bin = binary("mosquitto", "mosquitto");
    let passwd = binary("mosquitto_passwd", "mosquitto");
    let dir = tempfile::tempdir().expect("tempdir");
    let c = certs_for(dir.path(), san);
    let pwfile = dir.path().join("passwd");
    let out = Command::new(passwd)
        .arg("-b")
        .arg("-c")
        .arg(&pwfile)
        .arg(user)
        .arg(password)
        .output()
        .expect("mosquitto_passwd");
    assert!(
        out.status.success(),
        "mosquitto_passwd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    world_readable(&pwfile);
    world_readable(dir.path());
    let (tls_port, plain_port) = (free_port(), free_port());
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "per_listener_settings true\npersistence false\n\
             listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nallow_anonymous false\npassword_file {}\n\
             listener {plain_port} 127.0.0.1\nallow_anonymous true\n",
            c.ca.display(),
            c.cert.display(),
            c.key.display(),
            pwfile.display()
        ),
    )
    .expect("write mosquitto.conf");
    let ca = c.ca.clone();
    let server = start(
        "mosquitto",
        bin,
        vec!["-c".into(), conf.into()],
        dir,
        tls_port,
        &[plain_port],
    );
    (server, plain_port, ca)
}

/// Prometheus Alertmanager on a free port, routing every alert to `webhook` (a URL the test
/// serves), with resolved notifications and short group timings so tests see them at once.
pub fn alertmanager(webhook: &str) -> Server {
    let bin = binary("prometheus-alertmanager", "prometheus-alertmanager");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let conf = dir.path().join("alertmanager.yml");
    std::fs::write(
        &conf,
        format!(
            "route:\n  receiver: test\n  group_by: ['alertname', 'meter']\n  group_wait: 100ms\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: test\n    webhook_configs:\n      - url: '{webhook}'\n        send_resolved: true\n"
        ),
    )
    .expect("write alertmanager.yml");
    let args = vec![
        format!("--config.file={}", conf.display()).into(),
        format!("--storage.path={}", dir.path().join("data").display()).into(),
        format!("--web.listen-address=127.0.0.1:{port}").into(),
        // No cluster: no gossip port, no peers.
        "--cluster.listen-address=".into(),
    ];
    start("prometheus-alertmanager", bin, args, dir, port, &[])
}
