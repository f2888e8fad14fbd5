//! `meterd demo`: simulated meters, the whole pipeline and a live table.

use super::*;

pub(super) async fn demo() -> anyhow::Result<i32> {
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
    let sim698 = meterd::sim::dlt698::Dlt698Sim::new(Some(9600));
    for (addr, p) in [
        ("000000000321", "dlt698-three-phase"),
        ("000000000322", "dlt698-single-phase"),
    ] {
        let address =
            meterd::protocols::dlt698::ServerAddress::single(addr).map_err(|e| anyhow!("{e}"))?;
        sim698.add_meter(
            address,
            set.get(p)
                .cloned()
                .ok_or_else(|| anyhow!("no profile {p}"))?,
            false,
        );
    }
    let (p698_master, _p698_other_end, pty698) = sim::pty_pair()?;
    tokio::spawn(sim698.serve(p698_master));
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
         [[bus]]\nname = \"rs485-698\"\nprotocol = \"dlt698\"\nserial = {{ device = \"{pty698}\" }}\n\
         [[bus.meter]]\nid = \"p698-3p\"\naddress = \"000000000321\"\nprofile = \"dlt698-three-phase\"\n\
         intervals = {{ realtime = \"3s\", energy = \"10s\" }}\n\
         [[bus.meter]]\nid = \"p698-1p\"\naddress = \"000000000322\"\nprofile = \"dlt698-single-phase\"\n\
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
    outln!("  simulated DL/T 698.45 meters on pty {pty698} (000000000321, 000000000322; 9600 8E1)");
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

pub(super) fn print_live(live: &LiveState) {
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
        let values = s.last_values();
        let get = |q: &str| {
            values
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
