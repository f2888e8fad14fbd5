//! `meterd simulate`: simulated meters on TCP, a pty or a serial device, with faults.

use super::*;

pub(super) fn build_sim(a: &SimArgs) -> anyhow::Result<Arc<Simulator>> {
    let set = super::profiles::profile_set(a.profiles_dir.as_deref());
    let sim = Simulator::new();
    let profile = |n: &str| builtin_profile(&set, n);
    if a.meters.is_empty() {
        let p = profile(a.profile.as_deref().unwrap_or("eastron-sdm630"))?;
        for k in 0..a.count {
            let unit = u8::try_from(u16::from(a.first_unit) + k)
                .map_err(|_| anyhow!("unit ids run past 255"))?;
            sim.add_meter(unit, p.clone(), a.frozen);
        }
    } else {
        let unit = |k: &str| k.parse::<u8>().map_err(anyhow::Error::from);
        for (u, p) in pairs(&a.meters, "--meter", "UNIT=PROFILE", unit)? {
            sim.add_meter(u, profile(p)?, a.frozen);
        }
    }
    let unit = |k: &str| k.parse::<u8>().map_err(anyhow::Error::from);
    for (u, fault) in pairs(&a.faults, "--fault", "UNIT=FAULT", unit)? {
        sim.set_fault(u, fault.parse().map_err(|e: String| anyhow!(e))?);
    }
    Ok(sim)
}

pub(super) async fn simulate(a: SimArgs) -> anyhow::Result<i32> {
    match a.protocol {
        SimProtocol::Modbus => {}
        SimProtocol::Dlt698 => return simulate_dlt698(a).await,
        _ => return simulate_dlt645(a).await,
    }
    let sim = build_sim(&a)?;
    let units = format!("units {:?}", sim.units());
    let (tcp_sim, port_sim) = (sim.clone(), sim);
    serve_on(
        &a,
        a.protocol.bus(),
        ("modbus-tcp", "modbus-rtu"),
        &units,
        move |listener| tcp_sim.serve_tcp(listener),
        move |port| port_sim.clone().serve_rtu(port),
    )
    .await
}

/// Serve where the flags say: `--tcp` (a listener for `tcp`), `--pty` and `--serial` (a port
/// for `port`, with the line settings of `bus`); one line each says where, as
/// `{tcp_label} ADDR {what}` or `{port_label} pty PATH BAUD baud {what}`. Then run until
/// Ctrl-C/SIGTERM.
async fn serve_on<T, TF, P, PF>(
    a: &SimArgs,
    bus: BusProtocol,
    (tcp_label, port_label): (&str, &str),
    what: &str,
    tcp: T,
    port: P,
) -> anyhow::Result<i32>
where
    T: FnOnce(tokio::net::TcpListener) -> TF,
    TF: std::future::Future<Output = ()> + Send + 'static,
    P: Fn(tokio_serial::SerialStream) -> PF,
    PF: std::future::Future<Output = ()> + Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    let mut keep = Vec::new();
    let baud = a.baud.unwrap_or(bus.default_baud());
    if let Some(addr) = &a.tcp {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("bind {addr}"))?;
        outln!("{tcp_label} {} {what}", listener.local_addr()?);
        tasks.spawn(tcp(listener));
    }
    if a.pty {
        let (master, other, path) = sim::pty_pair()?;
        outln!("{port_label} pty {path} {baud} baud {what}");
        keep.push(other);
        tasks.spawn(port(master));
    }
    if let Some(dev) = &a.serial {
        let serial = open_serial(&SerialConfig {
            device: dev.clone(),
            baud,
            parity: bus.default_parity(),
            data_bits: 8,
            stop_bits: 1,
        })?;
        outln!("{port_label} serial {} {baud} baud {what}", dev.display());
        tasks.spawn(port(serial));
    }
    serve_until_stopped(tasks, keep).await
}

/// [`serve_on`] for a DL/T 645 or 698.45 simulator: every TCP connection and every port gets
/// the same serving loop; labels `{protocol} tcp ADDR` and `{protocol} pty PATH`.
async fn serve_frames_on<T: meterd::sim::LineSimulator>(
    a: &SimArgs,
    bus: BusProtocol,
    what: &str,
    sim: Arc<T>,
) -> anyhow::Result<i32> {
    let (tcp_sim, port_sim) = (sim.clone(), sim);
    let tcp_label = format!("{} tcp", a.protocol);
    let port_label = a.protocol.to_string();
    serve_on(
        a,
        bus,
        (&tcp_label, &port_label),
        what,
        move |listener| async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(tcp_sim.clone().serve_port(sock));
            }
        },
        move |port| port_sim.clone().serve_port(port),
    )
    .await
}

/// Run the simulator's servers until Ctrl-C/SIGTERM or one of them ends. `keep` holds the far
/// ends of ptys open meanwhile.
pub(super) async fn serve_until_stopped(
    mut tasks: tokio::task::JoinSet<()>,
    keep: Vec<std::fs::File>,
) -> anyhow::Result<i32> {
    if tasks.is_empty() {
        bail!("give --tcp ADDR, --pty or --serial DEVICE");
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let mut stop = stop_signal()?;
    tokio::select! {
        _ = stop.changed() => {}
        _ = tasks.join_next() => {}
    }
    drop(keep);
    Ok(0)
}

pub(super) async fn simulate_dlt645(a: SimArgs) -> anyhow::Result<i32> {
    use meterd::{
        protocols::dlt645::{Address, Version},
        sim::dlt645::Dlt645Sim,
    };
    let bus = a.protocol.bus();
    let (version, default_profile) = match bus {
        BusProtocol::Dlt645_1997 => (Version::V1997, "dlt645-1997-three-phase"),
        _ => (Version::V2007, "dlt645-2007-three-phase"),
    };
    let baud = a.baud.unwrap_or(bus.default_baud());
    let sim = Dlt645Sim::new(version, Some(baud));
    let set = super::profiles::profile_set(a.profiles_dir.as_deref());
    let profile = |n: &str| builtin_profile(&set, n);
    if a.meters.is_empty() {
        let p = profile(a.profile.as_deref().unwrap_or(default_profile))?;
        for k in 0..a.count {
            let address: Address = format!("{}", u64::from(a.first_unit) + u64::from(k))
                .parse()
                .map_err(|e| anyhow!("{e}"))?;
            sim.add_meter(address, p.clone(), a.frozen);
        }
    } else {
        let address = |k: &str| k.parse::<Address>().map_err(|e| anyhow!("{e}"));
        for (addr, p) in pairs(&a.meters, "--meter", "ADDRESS=PROFILE", address)? {
            sim.add_meter(addr, profile(p)?, a.frozen);
        }
    }
    let address = |k: &str| k.parse::<Address>().map_err(|e| anyhow!("{e}"));
    for (addr, fault) in pairs(&a.faults, "--fault", "ADDRESS=FAULT", address)? {
        sim.set_fault(addr, fault.parse().map_err(|e: String| anyhow!(e))?);
    }
    if let Some(n) = a.max_frame_values {
        for addr in sim.addresses() {
            sim.set_max_value_bytes(addr, n);
        }
    }
    let addresses: Vec<String> = sim.addresses().iter().map(ToString::to_string).collect();
    serve_frames_on(&a, bus, &format!("addresses {addresses:?}"), sim).await
}

/// One `--quirk ADDRESS=QUIRK` of a DL/T 698.45 meter.
enum Quirk698 {
    Quirk(meterd::sim::dlt698::Quirk),
    Drift(i64),
}

fn parse_quirk(text: &str) -> anyhow::Result<Quirk698> {
    use meterd::sim::dlt698::Quirk;
    Ok(match text.split_once(':') {
        None if text == "no-lists" => Quirk698::Quirk(Quirk::NoLists),
        None if text == "secure" => Quirk698::Quirk(Quirk::Secure),
        Some(("fragments", n)) => Quirk698::Quirk(Quirk::Fragments(
            n.parse()
                .map_err(|_| anyhow!("fragments:{n}: a byte count"))?,
        )),
        Some(("drift", s)) => {
            Quirk698::Drift(s.parse().map_err(|_| anyhow!("drift:{s}: whole seconds"))?)
        }
        _ => bail!(
            "unknown quirk {text:?}: use no-lists, secure, fragments:N, blocks:N or drift:SECONDS"
        ),
    })
}

pub(super) async fn simulate_dlt698(a: SimArgs) -> anyhow::Result<i32> {
    use meterd::{protocols::dlt698::ServerAddress, sim::dlt698::Dlt698Sim};
    let bus = a.protocol.bus();
    let baud = a.baud.unwrap_or(bus.default_baud());
    let sim = Dlt698Sim::new(Some(baud));
    let set = super::profiles::profile_set(a.profiles_dir.as_deref());
    let profile = |n: &str| builtin_profile(&set, n);
    let address = |k: &str| ServerAddress::single(&format!("{k:0>12}")).map_err(|e| anyhow!("{e}"));
    if a.meters.is_empty() {
        let p = profile(a.profile.as_deref().unwrap_or("dlt698-three-phase"))?;
        for k in 0..a.count {
            sim.add_meter(
                address(&(u64::from(a.first_unit) + u64::from(k)).to_string())?,
                p.clone(),
                a.frozen,
            );
        }
    } else {
        for (addr, p) in pairs(&a.meters, "--meter", "ADDRESS=PROFILE", address)? {
            sim.add_meter(addr, profile(p)?, a.frozen);
        }
    }
    for (addr, fault) in pairs(&a.faults, "--fault", "ADDRESS=FAULT", address)? {
        sim.set_fault(&addr, fault.parse().map_err(|e: String| anyhow!(e))?);
    }
    for (addr, q) in pairs(&a.quirks, "--quirk", "ADDRESS=QUIRK", address)? {
        match parse_quirk(q)? {
            Quirk698::Quirk(q) => sim.set_quirk(&addr, q),
            Quirk698::Drift(s) => sim.set_drift(&addr, s),
        }
    }
    let addresses: Vec<String> = sim.addresses().iter().map(ToString::to_string).collect();
    serve_frames_on(&a, bus, &format!("addresses {addresses:?}"), sim).await
}
