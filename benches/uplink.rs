//! Report by exception: bytes on the uplink per hour, before and after, on a realistic load.
//!
//! One `meterd simulate` process serves `METERS` (default 20) SDM630 meters whose values move
//! as real ones do (voltages wander around 230 V with noise, currents follow a slow swing,
//! energy counters integrate the power). Two `meterd run` processes poll them with the
//! profile's own intervals (realtime every 5 s, energy every minute) into a real Mosquitto,
//! side by side in the same window: one sends every reading, the other has the README's
//! `[mqtt.exception]` (deadband 1 %, energy counters 0.1 kWh, heartbeat `HEARTBEAT`, default
//! 2 minutes: stricter than the 15-minute default, so the saving shown is a floor). Each
//! meterd talks to the broker through a loopback proxy that counts the bytes it sends: the
//! MQTT bytes of the uplink (TCP/IP and TLS overhead come on top, per packet).
//!
//! `cargo bench --bench uplink`; environment: `METERS`, `WARMUP` (s, default 20), `SECS`
//! (window, default 240), `HEARTBEAT` (default `2m`), `DEADBAND` (default `1%`).
use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use meterd_testkit::{
    harness::{self, env_or},
    scale::metric_sum,
    servers,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// A loopback proxy to the broker at `upstream`; returns its port and the count of bytes
/// clients sent through it.
async fn counting_proxy(upstream: u16) -> (u16, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
    let port = listener.local_addr().expect("proxy address").port();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                continue;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = async {
                    let mut buf = vec![0u8; 64 << 10];
                    while let Ok(n) = cr.read(&mut buf).await {
                        if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        counter.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    let _ = sw.shutdown().await;
                };
                let down = async {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    let _ = cw.shutdown().await;
                };
                tokio::join!(up, down);
            });
        }
    });
    (port, sent)
}

async fn metrics(port: u16) -> String {
    match harness::http_get(port, "/metrics").await {
        Some((200, body)) => body,
        other => panic!("/metrics on {port}: {other:?}"),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let meters = env_or("METERS", 20);
    let warmup = Duration::from_secs(env_or("WARMUP", 20));
    let window = Duration::from_secs(env_or("SECS", 240));
    let heartbeat = std::env::var("HEARTBEAT").unwrap_or_else(|_| "2m".into());
    let deadband = std::env::var("DEADBAND").unwrap_or_else(|_| "1%".into());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let broker = servers::mosquitto();
        let (mut sim, addr) = harness::simulate_tcp(&[
            "--profile",
            "eastron-sdm630",
            "--count",
            &meters.to_string(),
        ]);
        let exception = format!(
            "[mqtt.exception]\ndeadband = \"{deadband}\"\nheartbeat = \"{heartbeat}\"\n\
             [[mqtt.exception.rule]]\nquantities = [\"energy_*\", \"reactive_energy_*\"]\ndeadband = 0.1\n"
        );
        let mut runs = Vec::new();
        for (name, extra) in [("every reading", String::new()), ("by exception", exception)] {
            let dir = tempfile::tempdir().expect("tempdir");
            let (proxy, sent) = counting_proxy(broker.port).await;
            let http = servers::free_port();
            let mut cfg = format!(
                "[gateway]\nid = \"uplink\"\nstate_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n\
                 [mqtt]\nurl = \"mqtt://127.0.0.1:{proxy}\"\nqos = 1\n{extra}\
                 [[bus]]\nname = \"tcp\"\nprotocol = \"modbus-tcp\"\ntcp = \"{addr}\"\nconcurrency = 4\n",
                dir.path().join("state").display()
            );
            for u in 1..=meters {
                cfg += &format!(
                    "[[bus.meter]]\nid = \"m{u}\"\nunit = {u}\nprofile = \"eastron-sdm630\"\n"
                );
            }
            let (child, _log) = harness::start_for_bench(dir.path(), &cfg);
            runs.push((name, dir, child, sent, http));
        }
        tokio::time::sleep(warmup).await;
        let mut before = Vec::new();
        for (_, _, _, sent, http) in &runs {
            before.push((sent.load(Ordering::Relaxed), metrics(*http).await));
        }
        tokio::time::sleep(window).await;
        println!(
            "| {meters} SDM630, realtime 5 s, energy 1 min, {} s window; deadband {deadband}, heartbeat {heartbeat} | readings made | readings sent | values left out | uplink bytes (MQTT) | per hour | per meter per hour |\n|---|---|---|---|---|---|---|",
            window.as_secs()
        );
        let per_hour = 3600.0 / window.as_secs_f64();
        for ((name, _dir, child, sent, http), (bytes0, m0)) in runs.iter_mut().zip(before) {
            let bytes = sent.load(Ordering::Relaxed) - bytes0;
            let m1 = metrics(*http).await;
            let delta = |name: &str, filter: &str| {
                metric_sum(&m1, name, filter) - metric_sum(&m0, name, filter)
            };
            let made = delta("meterd_meter_polls_total", "");
            let published = delta("meterd_sink_delivered_total", "sink=\"mqtt\"");
            let left_out = delta("meterd_sink_left_out_values_total", "sink=\"mqtt\"");
            println!(
                "| {name} | {made:.0} | {published:.0} | {left_out:.0} | {bytes} | {:.2} MB | {:.1} kB |",
                bytes as f64 * per_hour / 1e6,
                bytes as f64 * per_hour / 1e3 / meters as f64
            );
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
        let _ = sim.kill();
        let _ = sim.wait();
    });
}
