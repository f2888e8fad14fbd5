//! A connection flood on the HTTP port, with meterd limited to 256 open files: 1,000 idle
//! connections, 300 slowloris clients (a header byte a second) and 50 silent ones. meterd keeps
//! its descriptors for buses, journal and sinks (a meter that garbles every reply forces a
//! reconnect per poll), closes the slow and silent connections within the header timeout, and
//! answers again once the flood's connections are gone.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use meterd::sim::Fault;

use crate::{
    harness::{http_get, tcp_sim, Collector, Meterd},
    servers,
};

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Whether the server has closed this connection (EOF or reset; any bytes it sent before,
/// such as an error response, are read first).
fn closed_by_server(s: &TcpStream) -> bool {
    let _ = s.set_nonblocking(true);
    let mut s = s;
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_on_the_http_port_never_starves_polling_or_the_journal() {
    // The test holds 1,350 sockets itself.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let broker = servers::mosquitto();
    let (sim, addr) = tcp_sim(
        &[
            (1, "eastron-sdm120"),
            (2, "eastron-sdm120"),
            (3, "eastron-sdm120"),
        ],
        false,
    )
    .await;
    // Every reply garbled: the link is dropped and opened again for each poll of it.
    sim.set_fault(3, Fault::Garbage);
    let http = servers::free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("meterd.toml");
    let mut text = format!(
        "[gateway]\nid = \"gw-flood\"\nstate_dir = \"{}\"\n[[bus]]\nname = \"b\"\nprotocol = \"modbus-tcp\"\ntcp = \"{addr}\"\nconcurrency = 3\nbackoff = \"200ms\"\nbackoff_max = \"200ms\"\n",
        dir.path().join("state").display()
    );
    for u in 1..=3 {
        text += &format!(
            "[[bus.meter]]\nid = \"m{u}\"\nunit = {u}\nprofile = \"eastron-sdm120\"\nintervals = {{ realtime = \"200ms\", energy = \"1h\" }}\n"
        );
    }
    text += &format!(
        "[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n[journal]\nfsync = \"200ms\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n",
        broker.port
    );
    std::fs::write(&cfg, text).unwrap();
    let mqtt = Collector::start(broker.port, "meterd/gw-flood/meter/+/reading").await;
    let meterd = Meterd::run_with_nofile(&cfg, 256);
    meterd.ready().await;
    mqtt.wait_for("readings", Duration::from_secs(10), |m| m.len() > 10)
        .await;
    let files_before = open_files(meterd.pid());

    let target = format!("127.0.0.1:{http}");
    let t = target.clone();
    let (idle, mut slow, silent) = tokio::task::spawn_blocking(move || {
        let addr: std::net::SocketAddr = t.parse().expect("address");
        let connect = || {
            TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .expect("meterd takes connections (or closes them) during a flood")
        };
        let idle: Vec<TcpStream> = (0..1000).map(|_| connect()).collect();
        let slow: Vec<TcpStream> = (0..300)
            .map(|_| {
                let mut s = connect();
                let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n");
                s
            })
            .collect();
        let silent: Vec<TcpStream> = (0..50).map(|_| connect()).collect();
        (idle, slow, silent)
    })
    .await
    .unwrap();
    let flood_start = Instant::now();
    let readings_at_start = mqtt.all().len();
    let mut files_max = 0;
    while flood_start.elapsed() < Duration::from_secs(14) {
        // Slowloris: one more header byte a second on every slow connection.
        for s in slow.iter_mut() {
            let _ = s.write_all(b"X");
        }
        files_max = files_max.max(open_files(meterd.pid()));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let published = mqtt.all().len() - readings_at_start;
    assert!(
        published >= 70 * 2,
        "polling went on during the flood: {published} readings in 14 s (two good meters every 200 ms)"
    );
    assert!(
        files_max <= files_before + meterd::http::MAX_CONNECTIONS + 8,
        "HTTP holds at most {} connections: {files_max} open files (were {files_before})",
        meterd::http::MAX_CONNECTIONS
    );
    let still_open = |v: &[TcpStream]| v.iter().filter(|s| !closed_by_server(s)).count();
    assert_eq!(
        still_open(&slow),
        0,
        "slowloris connections closed within the header timeout"
    );
    assert_eq!(still_open(&silent), 0, "silent connections closed");
    assert_eq!(still_open(&idle), 0, "idle connections closed");
    drop((idle, slow, silent));
    let asked = Instant::now();
    let health = tokio::time::timeout(Duration::from_secs(5), http_get(http, "/healthz"))
        .await
        .ok()
        .flatten();
    assert_eq!(
        health.map(|h| h.0),
        Some(200),
        "answers again ({:?})",
        asked.elapsed()
    );
    let log = meterd.log_text();
    assert!(
        !log.contains("Too many open files"),
        "no descriptor ran out:\n{log}"
    );
    let (_, metrics) = http_get(http, "/metrics").await.unwrap();
    assert!(metrics.contains("meterd_journal_ok 1"), "{metrics}");
    let failures: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("meterd_meter_failures_total{bus=\"b\",meter=\"m3\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        failures >= 10.0,
        "the garbled meter's link was rebuilt throughout: {failures} failures\n{metrics}"
    );
}
