//! The systemd unit and the daemon's side of it (sd_notify).

use std::{os::unix::net::UnixDatagram, process::Command, time::Duration};

use crate::{
    harness::{one_meter_config, tcp_sim, Meterd},
    servers,
};

#[test]
fn the_unit_is_hardened_to_an_exposure_of_2_or_lower() {
    let analyze = servers::binary("systemd-analyze", "systemd");
    let out = Command::new(analyze)
        .args(["security", "--offline=yes", "systemd/meterd.service"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let level: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for meterd.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no exposure level in:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(level <= 2.0, "exposure {level}:\n{text}");
}

#[test]
fn the_unit_has_what_a_gateway_service_needs() {
    let unit = std::fs::read_to_string("systemd/meterd.service").unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "ExecStartPre=/usr/bin/meterd validate",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "RestartPreventExitStatus=78",
        "StateDirectory=meterd",
        "ConfigurationDirectory=meterd",
        "LoadCredential=meterd:/etc/meterd/credentials\n",
        "DynamicUser=yes",
        "SupplementaryGroups=dialout",
        "DeviceAllow=char-ttyUSB rw",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "SystemCallFilter=@system-service",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    ] {
        assert!(unit.contains(line), "{line:?} missing");
    }
    assert!(
        !unit.lines().any(|l| l.starts_with("PrivateDevices=")),
        "PrivateDevices= would hide the serial ports"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meterd_tells_systemd_it_is_ready_pets_the_watchdog_survives_a_reload_signal_and_says_it_stops(
) {
    let (_sim, addr) = tcp_sim(&[(1, "eastron-sdm120")], true).await;
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let port = servers::free_port();
    let cfg = one_meter_config(
        dir.path(),
        "gw-sd",
        &dir.path().join("state"),
        &addr,
        "1s",
        &format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let mut meterd = Meterd::run_with_env(
        &cfg,
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !(seen.iter().any(|m: &String| m.contains("READY=1"))
        && seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2)
    {
        let n = socket.recv(&mut buf).expect("a notification from meterd");
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    meterd.hup();
    // A reload is announced to systemd and followed by READY=1 again.
    let mut reloading = false;
    loop {
        let n = socket.recv(&mut buf).expect("RELOADING=1 and READY=1");
        let m = String::from_utf8_lossy(&buf[..n]).into_owned();
        reloading |= m.contains("RELOADING=1");
        if reloading && m.contains("READY=1") {
            break;
        }
    }
    assert!(
        meterd.log_text().contains("config reloaded"),
        "{}",
        meterd.log_text()
    );
    let status = meterd.terminate(Duration::from_secs(8));
    assert!(
        status.is_some_and(|s| s.success()),
        "still running after SIGHUP, then a clean stop"
    );
    loop {
        let n = socket.recv(&mut buf).expect("STOPPING=1");
        if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_systemd_each_log_line_carries_its_journald_priority() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("meterd.toml");
    let port = servers::free_port();
    // No sink: a warning; no bus: nothing else to do.
    std::fs::write(
        &cfg,
        format!(
            "[gateway]\nid = \"gw-j\"\nstate_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let mut meterd = Meterd::run_with_env(&cfg, &[("JOURNAL_STREAM", "8:12345")]);
    meterd.ready().await;
    assert!(meterd
        .terminate(Duration::from_secs(8))
        .is_some_and(|s| s.success()));
    let log = meterd.log_text();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.iter().all(|l| l.starts_with('<')), "{log}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<4>") && l.contains("no [mqtt] and no [influxdb]")),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<6>") && l.contains("meterd running")),
        "{log}"
    );
}

#[test]
fn the_debian_package_ships_binary_unit_example_config_dashboards_and_alert_routes() {
    let manifest: toml::Table = std::fs::read_to_string("Cargo.toml")
        .unwrap()
        .parse()
        .unwrap();
    let deb = &manifest["package"]["metadata"]["deb"];
    let assets = deb["assets"].as_array().expect("assets");
    let targets: Vec<&str> = assets.iter().map(|a| a[1].as_str().unwrap()).collect();
    for wanted in [
        "usr/bin/",
        "lib/systemd/system/",
        "etc/meterd/meterd.toml",
        "usr/share/meterd/grafana/dashboards/",
        "usr/share/meterd/grafana/provisioning/datasources/",
        "usr/share/meterd/alertmanager/",
    ] {
        assert!(
            targets.contains(&wanted),
            "{wanted} not packaged: {targets:?}"
        );
    }
    for a in assets {
        let source = a[0].as_str().unwrap();
        if source != "target/release/meterd" {
            assert!(
                std::path::Path::new(source).exists(),
                "{source} is packaged but missing"
            );
        }
    }
    // The unit runs as a dynamic user, not root: it must be able to read its config.
    let config = assets
        .iter()
        .find(|a| a[1].as_str() == Some("etc/meterd/meterd.toml"))
        .expect("the config is packaged");
    let mode = u32::from_str_radix(config[2].as_str().unwrap(), 8).unwrap();
    assert_eq!(
        mode & 0o004,
        0o004,
        "the config must be world-readable: {mode:o}"
    );
    assert_eq!(
        deb["conf-files"][0].as_str(),
        Some("/etc/meterd/meterd.toml"),
        "the config survives upgrades"
    );
}
