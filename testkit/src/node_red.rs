//! The issue-12 comparison, run beside meterd in the same bench: Node-RED 4 with
//! node-red-contrib-modbus on target 1's workload, as a new user would build it. Per meter a
//! `modbus-read` node (FC 4, 16 registers from 0, every interval) on one shared `modbus-client`
//! per simulator, a `function` node that decodes the 8 float32 values and sends one message per
//! value, and an `mqtt out` node at QoS 0 to the same Mosquitto. Its CPU and peak RSS are
//! measured like meterd's; its values are the messages a subscriber received in the window.
//!
//! Node-RED comes from npm into `target/node-red` on first use (or `NODE_RED_DIR`).
//! node-red-contrib-modbus is pinned at 5.23.3: its later releases fetch their Modbus library
//! from a download host outside the npm registry.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use serde_json::{json, Value};

use crate::{
    harness::Collector,
    scale::{
        cpu_between, cpu_ticks, simulator, status_kib, wakeups, Model, Procs, Report, Scenario,
    },
    servers,
};

/// The quantities of target 1's profile ([`crate::scale::EIGHT_F32`]), in register order
/// (two registers each); a test keeps the two the same.
const QUANTITIES: [&str; 8] = [
    "voltage_l1_v",
    "voltage_l2_v",
    "voltage_l3_v",
    "current_l1_a",
    "current_l2_a",
    "current_l3_a",
    "power_w",
    "frequency_hz",
];

/// `red.js` of a Node-RED installed with node-red-contrib-modbus: `NODE_RED_DIR`, or
/// `target/node-red`, installed there with npm when missing. Panics naming the Debian
/// package when `npm` or `node` is missing, and with npm's words when it fails.
pub fn install() -> PathBuf {
    let dir = std::env::var_os("NODE_RED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let bin = crate::built_bin();
            // target/<profile>/meterd → target/node-red
            bin.parent()
                .and_then(Path::parent)
                .map(|t| t.join("node-red"))
                .expect("the target directory")
        });
    let red = dir.join("node_modules/node-red/red.js");
    let modbus = dir.join("node_modules/node-red-contrib-modbus/package.json");
    if red.is_file() && modbus.is_file() {
        return red;
    }
    servers::binary("node", "nodejs");
    let npm = servers::binary("npm", "npm");
    std::fs::create_dir_all(&dir).expect("the Node-RED directory");
    eprintln!("installing Node-RED into {} ...", dir.display());
    let out = Command::new(npm)
        .args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(&dir)
        .args(["node-red@4", "node-red-contrib-modbus@5.23.3"])
        .output()
        .expect("npm");
    assert!(
        out.status.success() && red.is_file(),
        "npm could not install Node-RED into {}:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    red
}

/// The flow: per simulator a client, per meter a read, a decode and a publish.
pub fn flow(sims: &[(String, usize)], interval_ms: u128, mqtt_port: u16) -> Value {
    let mut nodes = vec![
        json!({"id": "tab", "type": "tab", "label": "meters"}),
        json!({
            "id": "broker", "type": "mqtt-broker", "name": "mosquitto",
            "broker": "127.0.0.1", "port": mqtt_port.to_string(), "clientid": "",
            "autoConnect": true, "usetls": false, "protocolVersion": "4",
            "keepalive": "60", "cleansession": true
        }),
    ];
    let names = serde_json::to_string(&QUANTITIES).unwrap_or_default();
    for (s, (addr, count)) in sims.iter().enumerate() {
        let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "502"));
        let client = format!("client{s}");
        nodes.push(json!({
            "id": client, "type": "modbus-client", "name": "", "clienttype": "tcp",
            "bufferCommands": true, "stateLogEnabled": false, "queueLogEnabled": false,
            "failureLogEnabled": true, "tcpHost": host, "tcpPort": port, "tcpType": "DEFAULT",
            "serialPort": "/dev/ttyUSB", "serialType": "RTU-BUFFERD", "serialBaudrate": "9600",
            "serialDatabits": "8", "serialStopbits": "1", "serialParity": "none",
            "serialConnectionDelay": "100", "serialAsciiResponseStartDelimiter": "0x3A",
            "unit_id": "1", "commandDelay": "1", "clientTimeout": "1000",
            "reconnectOnTimeout": true, "reconnectTimeout": "2000",
            "parallelUnitIdsAllowed": true
        }));
        for unit in 1..=*count {
            let (read, decode, publish) = (
                format!("read{s}-{unit}"),
                format!("decode{s}-{unit}"),
                format!("publish{s}-{unit}"),
            );
            nodes.push(json!({
                "id": read, "type": "modbus-read", "z": "tab", "name": "", "topic": "",
                "showStatusActivities": false, "logIOActivities": false, "showErrors": false,
                "unitid": unit.to_string(), "dataType": "InputRegister", "adr": "0",
                "quantity": "16", "rate": interval_ms.to_string(), "rateUnit": "ms",
                "delayOnStart": false, "startDelayTime": "", "server": client,
                "useIOFile": false, "ioFile": "", "useIOForPayload": false,
                "emptyMsgOnFail": false, "x": 100, "y": 40 * unit,
                "wires": [[decode], []]
            }));
            nodes.push(json!({
                "id": decode, "type": "function", "z": "tab", "name": "",
                "func": format!(
                    "const names = {names};\n\
                     const b = Buffer.alloc(msg.payload.length * 2);\n\
                     msg.payload.forEach((r, i) => b.writeUInt16BE(r, i * 2));\n\
                     return [names.map((n, i) => ({{ topic: 'nr/s{s}m{unit}/' + n, payload: b.readFloatBE(i * 4) }}))];"
                ),
                "outputs": 1, "noerr": 0, "initialize": "", "finalize": "", "libs": [],
                "x": 300, "y": 40 * unit, "wires": [[publish]]
            }));
            nodes.push(json!({
                "id": publish, "type": "mqtt out", "z": "tab", "name": "", "topic": "",
                "qos": "0", "retain": "false", "broker": "broker",
                "x": 500, "y": 40 * unit, "wires": []
            }));
        }
    }
    Value::Array(nodes)
}

/// Run target 1's workload (`s.model` must be [`Model::Eight`]) through Node-RED and measure
/// it like [`crate::scale::run`] measures meterd.
pub async fn run(s: &Scenario) -> Report {
    assert_eq!(
        s.model,
        Model::Eight,
        "the comparison is on target 1's workload"
    );
    let red = install();
    let dir = tempfile::tempdir().expect("tempdir");
    let profiles = dir.path().join("profiles");
    std::fs::create_dir_all(&profiles).expect("profiles dir");
    std::fs::write(
        profiles.join("bench-eight-f32.toml"),
        crate::scale::EIGHT_F32,
    )
    .expect("profile");
    let mosquitto = servers::mosquitto();
    let collector = Collector::start(mosquitto.port, "nr/#").await;

    let mut procs = Procs(Vec::new());
    let mut sims = Vec::new();
    let per_sim = s.per_sim.clamp(1, 247);
    let mut left = s.meters;
    while left > 0 {
        let n = left.min(per_sim);
        let (child, addr) = simulator(s.model, n, &profiles);
        procs.0.push(child);
        sims.push((addr, n));
        left -= n;
    }
    let flows = dir.path().join("flows.json");
    std::fs::write(
        &flows,
        flow(&sims, s.interval.as_millis(), mosquitto.port).to_string(),
    )
    .expect("flows.json");
    let log = dir.path().join("node-red.log");
    let node = Command::new(servers::binary("node", "nodejs"))
        .arg(&red)
        .arg("--userDir")
        .arg(dir.path())
        .args(["--port", &servers::free_port().to_string()])
        .arg(&flows)
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(Stdio::null())
        .spawn()
        .expect("node");
    let pid = node.id();
    let sims_pids: Vec<u32> = procs.0.iter().map(|c| c.id()).collect();
    procs.0.push(node);
    // Node-RED takes a few seconds to load before its flows start.
    tokio::time::sleep(s.warmup.max(std::time::Duration::from_secs(20))).await;
    let count = || collector.messages.lock().map(|m| m.len()).unwrap_or(0);
    assert!(
        count() > 0,
        "Node-RED published nothing during the warm-up; its log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    let (t0, n0, cpu0, woken0) = (Instant::now(), count(), cpu_ticks(pid), wakeups(pid));
    let sim0: Vec<u64> = sims_pids.iter().map(|p| cpu_ticks(*p)).collect();
    tokio::time::sleep(s.window).await;
    let (n1, cpu1, woken1) = (count(), cpu_ticks(pid), wakeups(pid));
    let sim1: Vec<u64> = sims_pids.iter().map(|p| cpu_ticks(*p)).collect();
    let window_s = t0.elapsed().as_secs_f64();
    let rss_peak_kib = status_kib(pid, "VmHWM");
    let rss_end_kib = status_kib(pid, "VmRSS");
    drop(procs);

    let values = (n1 - n0) as f64;
    let (sim_cpu_s, sim_cpu_max_s) = cpu_between(&sim0, &sim1);
    Report {
        meters: s.meters,
        window_s,
        readings: (values / QUANTITIES.len() as f64).round() as u64,
        scheduled: (s.meters as f64 * window_s / s.interval.as_secs_f64()).round() as u64,
        failures: 0,
        values,
        cpu_s: (cpu1 - cpu0) as f64 / 100.0,
        rss_peak_kib,
        rss_end_kib,
        sim_cpu_s,
        sim_cpu_max_s,
        wakeups: woken1.saturating_sub(woken0),
        sinks: vec![("mqtt QoS 0".to_string(), values as u64, f64::NAN)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of_type<'a>(flow: &'a Value, kind: &str) -> Vec<&'a Value> {
        flow.as_array()
            .map(|a| a.iter().filter(|n| n["type"] == kind).collect())
            .unwrap_or_default()
    }

    #[test]
    fn the_decoded_names_are_the_bench_profiles_quantities_in_register_order() {
        for (i, q) in QUANTITIES.iter().enumerate() {
            let point = format!("{{ quantity = \"{q}\", address = {} }}", 2 * i);
            assert!(crate::scale::EIGHT_F32.contains(&point), "{point}");
        }
        assert_eq!(
            crate::scale::EIGHT_F32.matches("quantity =").count(),
            QUANTITIES.len()
        );
    }

    #[test]
    fn each_meter_gets_a_read_a_decode_and_a_publish_wired_in_order_on_its_simulators_client() {
        let sims = [
            ("127.0.0.1:5020".to_string(), 2),
            ("127.0.0.1:5021".to_string(), 3),
        ];
        let flow = flow(&sims, 1000, 1883);
        let clients = of_type(&flow, "modbus-client");
        assert_eq!(clients.len(), 2);
        assert_eq!(clients[1]["tcpPort"], "5021");
        let reads = of_type(&flow, "modbus-read");
        let decodes = of_type(&flow, "function");
        let publishes = of_type(&flow, "mqtt out");
        assert_eq!((reads.len(), decodes.len(), publishes.len()), (5, 5, 5));
        for (i, read) in reads.iter().enumerate() {
            let (sim, unit) = if i < 2 { (0, i + 1) } else { (1, i - 1) };
            assert_eq!(read["server"], format!("client{sim}"));
            assert_eq!(read["unitid"], unit.to_string());
            assert_eq!(
                (
                    &read["dataType"],
                    &read["adr"],
                    &read["quantity"],
                    &read["rate"]
                ),
                (
                    &json!("InputRegister"),
                    &json!("0"),
                    &json!("16"),
                    &json!("1000")
                )
            );
            assert_eq!(read["wires"][0][0], decodes[i]["id"]);
            assert_eq!(decodes[i]["wires"][0][0], publishes[i]["id"]);
            let code = decodes[i]["func"].as_str().unwrap_or_default();
            assert!(code.contains(&format!("'nr/s{sim}m{unit}/'")), "{code}");
            assert!(QUANTITIES.iter().all(|q| code.contains(q)), "{code}");
            assert_eq!(
                (&publishes[i]["qos"], &publishes[i]["broker"]),
                (&json!("0"), &json!("broker"))
            );
        }
        assert_eq!(of_type(&flow, "mqtt-broker")[0]["port"], "1883");
    }
}
