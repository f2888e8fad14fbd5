//! The command line as a user meets it: real processes, real output.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

fn meterd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meterd"))
}

use crate::harness::simulate;

/// `meterd simulate` serving DL/T 645 on a pty: the process and the pty's path.
fn dlt645_sim(args: &[&str]) -> (Child, String) {
    let (child, line) = simulate(&[&["--protocol", "dlt645-2007", "--pty"], args].concat());
    // "dlt645-2007 pty /dev/pts/N 2400 baud addresses [...]"
    let pty = line
        .split_whitespace()
        .nth(2)
        .expect("pty path")
        .to_string();
    (child, pty)
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn simulate_prints_where_it_listens_and_read_and_scan_find_its_meters() {
    let (sim, line) = simulate(&[
        "--tcp",
        "127.0.0.1:0",
        "--count",
        "3",
        "--first-unit",
        "5",
        "--profile",
        "abb-b23",
        "--fault",
        "6=exception:4",
    ]);
    // "modbus-tcp 127.0.0.1:PORT units [5, 6, 7]"
    let addr = line.split_whitespace().nth(1).expect("address").to_string();
    assert!(line.contains("units [5, 6, 7]"), "{line}");

    let out = meterd()
        .args([
            "read",
            "--addr",
            &addr,
            "--unit",
            "5",
            "--profile",
            "abb-b23",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("voltage_l1_v")
            && text.contains(" V\n")
            && text.contains("energy_import_kwh"),
        "{text}"
    );

    let out = meterd()
        .args([
            "scan",
            "--addr",
            &addr,
            "--units",
            "1-8",
            "--profile",
            "abb-b23",
            "--timeout",
            "200ms",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("unit   5: answers") && text.contains("unit   7: answers"),
        "{text}"
    );
    assert!(
        text.contains("unit   6: answers with exception 4"),
        "{text}"
    );
    assert!(text.contains("3 meter(s) answered"), "{text}");
    stop(sim);
}

#[test]
fn read_takes_a_meter_from_the_config() {
    let (sim, line) = simulate(&["--tcp", "127.0.0.1:0", "--meter", "2=chint-dtsu666"]);
    let addr = line.split_whitespace().nth(1).expect("address").to_string();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("meterd.toml");
    std::fs::write(
        &cfg,
        format!("[gateway]\nid = \"g\"\nstate_dir = \"{}\"\n[[bus]]\nname = \"b\"\nprotocol = \"modbus-tcp\"\ntcp = \"{addr}\"\n[[bus.meter]]\nid = \"dtsu\"\nunit = 2\nprofile = \"chint-dtsu666\"\n", dir.path().display()),
    )
    .unwrap();
    let out = meterd()
        .args(["read", "-c"])
        .arg(&cfg)
        .args(["--meter", "dtsu", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["meter"], "dtsu");
    let volts = v["values"]["voltage_l1_v"].as_f64().unwrap();
    assert!((220.0..240.0).contains(&volts), "{v}");
    let out = meterd()
        .args(["read", "-c"])
        .arg(&cfg)
        .args(["--meter", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no meter \"nope\""));
    stop(sim);
}

#[test]
fn profiles_lists_the_built_in_ones_and_prints_one_with_its_requests() {
    let out = meterd().arg("profiles").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for name in [
        "eastron-sdm630",
        "eastron-sdm120",
        "eastron-sdm72",
        "chint-dtsu666",
        "chint-ddsu666",
        "abb-b23",
        "carlo-gavazzi-em24",
        "schneider-iem3255",
        "dlt698-three-phase",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    // Columns line up whatever the length of a manufacturer's name ("Saia Burgess Controls"),
    // and DL/T 645 profiles count their quantities too.
    let origin_at: Vec<(usize, &str)> = text
        .lines()
        .map(|l| {
            let at = l.find("  builtin:").or_else(|| l.find("  origin"));
            (at.map_or(0, |i| l[..i].chars().count()), l)
        })
        .collect();
    assert!(origin_at.len() > 20, "{text}");
    for (at, line) in &origin_at {
        assert_eq!(
            *at, origin_at[0].0,
            "misaligned:\n{line}\n{}",
            origin_at[0].1
        );
    }
    for line in text.lines().filter(|l| l.starts_with("dlt645-")) {
        let count: usize = line
            .split_whitespace()
            .rev()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        assert!(count >= 8, "{line}");
    }
    let out = meterd()
        .args(["profiles", "eastron-sdm630"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("(27 points in 3 read requests)")
            && text.contains("(5 points in 2 read requests)"),
        "{text}"
    );
    let out = meterd()
        .args(["profiles", "dlt698-three-phase"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "OAD 20000200 voltage                        x 10^-1  voltage_l1_v, voltage_l2_v, voltage_l3_v",
        "(6 OADs in one GET-Request-NormalList)",
        "daily freeze: forward active energy",
    ] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }
}

#[test]
fn a_user_profile_directory_adds_profiles_without_recompiling() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("acme.toml"),
        "name = \"acme-em1\"\nmanufacturer = \"ACME\"\nmodel = \"EM1\"\ndocument = \"ACME EM1 register map rev 2\"\nprotocol = \"modbus\"\n\
         [[group]]\nname = \"realtime\"\ninterval = \"5s\"\npoints = [{ quantity = \"voltage_l1_v\", address = 0 }]\n",
    )
    .unwrap();
    let out = meterd()
        .args(["profiles", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("acme-em1") && text.contains("acme.toml"),
        "{text}"
    );
}

#[test]
fn demo_shows_every_simulated_meter_online_a_firing_alert_and_stops_cleanly_on_ctrl_c() {
    let mut child = meterd()
        .arg("demo")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("meterd demo");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut online = std::collections::BTreeSet::new();
    let mut alert = None;
    while (online.len() < 10 || alert.is_none()) && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if line.starts_with("ALERT firing") && line.contains("PowerFactorLow") {
                alert = Some(line.clone());
            }
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.get(2) == Some(&"online")
                && cols.get(6).is_some_and(|kwh| kwh.parse::<f64>().is_ok())
            {
                online.insert(cols[0].to_string());
            }
        }
    }
    // 4 Modbus TCP, 2 Modbus RTU on a pty, 2 DL/T 645 and 2 DL/T 698.45 on ptys.
    assert_eq!(online.len(), 10, "meters online with energy: {online:?}");
    let alert = alert.expect("a firing PowerFactorLow alert in the live view");
    assert!(alert.contains("power factor 0."), "{alert}");
    let _ = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(8);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "demo did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn decode_explains_every_field_and_fails_on_a_bad_frame() {
    let good = "FE FE FE FE 68 12 90 78 56 34 12 68 91 08 33 33 34 33 AB 89 67 45 CC 16";
    let bad = "68 12 90 78 56 34 12 68 91 08 33 33 34 33 89 67 45 33 55 16";
    let out = meterd()
        .args(["decode", "--protocol", "dlt645-2007", good])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for field in [
        "preamble   4 x FE",
        "address    123456789012",
        "DI         00010000",
        "forward active energy, total = 123456.78 kWh",
        "checksum   ok",
    ] {
        assert!(text.contains(field), "{field} missing:\n{text}");
    }
    let out = meterd()
        .args(["decode", "--protocol", "dlt645-2007", "--json", good, bad])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "any invalid frame: exit 1");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["decoded"]["values"][0][1], "123456.78");
    assert_eq!(lines[1]["valid"], false);
    assert_eq!(
        lines[1]["error"],
        "checksum mismatch: frame says 55, bytes sum to 54"
    );
    let out = meterd()
        .args([
            "decode",
            "--protocol",
            "dlt645-1997",
            "68 67 45 23 01 00 00 68 11 02 44 E9 E0 16",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("C=11 is a 2007 control code; a 1997 meter expects 01"));
}

#[test]
fn decode_reads_dlt698_captures_with_scaled_values_and_names_what_is_wrong() {
    // G04: voltages and currents; G65 with an FE preamble: the address; a bad HCS.
    let voltages = "68 3B 00 C3 05 07 09 19 05 16 20 00 B7 A4 85 02 02 02 20 00 02 00 01 01 03 12 09 6D 12 09 6D 12 09 6D 20 01 02 00 01 01 03 05 00 00 03 E8 05 00 00 03 E8 05 00 00 03 E8 00 00 10 86 16";
    let address = "FE FE FE FE 68 21 00 C3 05 22 03 00 00 00 00 00 58 83 85 01 01 40 01 02 00 01 09 06 00 00 00 00 03 22 00 00 04 3A 16";
    let bad_hcs = "68 17 00 43 05 07 09 19 05 16 20 00 14 60 05 01 01 40 01 02 00 00 C6 07 16";
    let out = meterd()
        .args(["decode", "--protocol", "dlt698", voltages, address])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for field in [
        "address    201605190907 (single, logical 0), client 00",
        "service    GET-Response-NormalList PIID 02",
        "20000200 voltage = [241.3, 241.3, 241.3] V",
        "voltage_l1_v = 241.3",
        "current_l3_a = 1",
        "preamble   4 x FE",
        "40010200 communication address = 000000000322",
        "checksums  HCS A4B7 FCS 8610 ok",
    ] {
        assert!(text.contains(field), "{field} missing:\n{text}");
    }
    let out = meterd()
        .args([
            "decode",
            "--protocol",
            "dlt698",
            "--json",
            voltages,
            bad_hcs,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "any invalid frame: exit 1");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let d = &lines[0]["decoded"];
    assert_eq!(d["address"], "201605190907");
    assert_eq!(d["apdu"]["items"][0]["oad"], "20000200");
    assert_eq!(
        d["apdu"]["items"][0]["value"],
        serde_json::json!([241.3, 241.3, 241.3])
    );
    assert_eq!(d["apdu"]["items"][1]["quantities"]["current_l2_a"], 1.0);
    assert_eq!(lines[1]["valid"], false);
    assert_eq!(
        lines[1]["error"],
        "bad HCS: frame says 6014, header computes to 6015"
    );
}

#[test]
fn a_dlt698_meter_behind_a_serial_server_is_scanned_and_read_by_profile_and_by_oad() {
    let (sim, line) = simulate(&[
        "--protocol",
        "dlt698",
        "--tcp",
        "127.0.0.1:0",
        "--meter",
        "000000000321=dlt698-three-phase",
        "--quirk",
        "000000000321=secure",
        "--frozen",
    ]);
    // "dlt698 tcp 127.0.0.1:PORT addresses [...]"
    let addr = line.split_whitespace().nth(2).expect("address").to_string();
    let run = |args: &[&str]| {
        let out = meterd()
            .args(args)
            .args(["--protocol", "dlt698", "--addr", &addr])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = run(&["scan"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("wildcard read of 4001 (AA..AA): 000000000321 answered"),
        "{text}"
    );

    let (code, text) = run(&[
        "read",
        "--address",
        "321",
        "--profile",
        "dlt698-three-phase",
        "--json",
    ]);
    assert_eq!(code, Some(0), "{text}");
    let v: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(v["address"], "000000000321");
    let values = v["values"].as_object().unwrap();
    for q in [
        "voltage_l1_v",
        "current_l3_a",
        "power_w",
        "energy_import_t4_kwh",
        "meter_clock_offset_s",
    ] {
        assert!(values.contains_key(q), "{q} missing: {v}");
    }
    assert!(
        (200.0..260.0).contains(&values["voltage_l1_v"].as_f64().unwrap()),
        "{v}"
    );
    assert_eq!(v["errors"].as_array().map(Vec::len), Some(0), "{v}");

    let (code, text) = run(&[
        "read",
        "--address",
        "000000000321",
        "--oad",
        "20000200",
        "--oad",
        "12340200",
    ]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("20000200 voltage = ["), "{text}");
    assert!(
        text.contains("12340200 -> DAR 4 (object undefined)"),
        "{text}"
    );
    stop(sim);
}

#[test]
fn a_dlt645_1997_meter_is_read_through_the_simulator_process() {
    let (sim, line) = simulate(&[
        "--protocol",
        "dlt645-1997",
        "--pty",
        "--meter",
        "000000063295=dlt645-1997-three-phase",
        "--frozen",
    ]);
    // "dlt645-1997 pty /dev/pts/N 1200 baud addresses [...]"
    let pty = line
        .split_whitespace()
        .nth(2)
        .expect("pty path")
        .to_string();
    let out = meterd()
        .args([
            "read",
            "--protocol",
            "dlt645-1997",
            "--serial",
            &pty,
            "--address",
            "000000063295",
            "--profile",
            "dlt645-1997-three-phase",
            "--json",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(v["errors"].as_array().map(Vec::len), Some(0), "{v}");
    let volts = v["values"]["voltage_l1_v"].as_f64().unwrap();
    assert_eq!(
        volts,
        volts.round(),
        "1997 voltages are whole volts: {volts}"
    );
    assert!((220.0..240.0).contains(&volts));
    let amps = v["values"]["current_l1_a"].as_f64().unwrap();
    assert_eq!(
        (amps * 100.0).round() / 100.0,
        amps,
        "1997 currents have two decimals: {amps}"
    );
    assert!(v["values"]["energy_import_kwh"].as_f64().unwrap() > 0.0);
    stop(sim);
}

#[test]
fn dlt645_scan_finds_a_lone_meter_by_read_address_and_several_by_probing() {
    let (one, pty) = dlt645_sim(&["--meter", "123456789012=dlt645-2007-single-phase"]);
    let out = meterd()
        .args([
            "scan",
            "--protocol",
            "dlt645-2007",
            "--serial",
            &pty,
            "--timeout",
            "500ms",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("read-address (AA..AA): 123456789012 answered")
            && text.contains("1 meter(s) found"),
        "{text}"
    );
    stop(one);

    let (three, pty) = dlt645_sim(&[
        "--count",
        "3",
        "--first-unit",
        "5",
        "--profile",
        "dlt645-2007-single-phase",
    ]);
    let out = meterd()
        .args([
            "scan",
            "--protocol",
            "dlt645-2007",
            "--serial",
            &pty,
            "--addresses",
            "000000000001-000000000008",
            "--timeout",
            "400ms",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // Three meters answering the wildcard at once collide; probing finds each.
    assert!(!text.contains("AA..AA): 0000"), "{text}");
    for a in ["000000000005", "000000000006", "000000000007"] {
        assert!(
            text.contains(&format!("{a}: answers")),
            "{a} missing:\n{text}"
        );
    }
    assert!(text.contains("3 meter(s) found"), "{text}");
    stop(three);
}

#[test]
fn timesync_sets_the_clock_of_every_meter_on_the_line() {
    let (sim, pty) = dlt645_sim(&["--meter", "123456789012=dlt645-2007-single-phase"]);
    let offset = |pty: &str| {
        let out = meterd()
            .args([
                "read",
                "--protocol",
                "dlt645-2007",
                "--serial",
                pty,
                "--address",
                "123456789012",
                "--profile",
                "dlt645-2007-single-phase",
                "--json",
            ])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["values"]["meter_clock_offset_s"]
            .as_f64()
            .expect("clock offset")
    };
    assert!(offset(&pty).abs() >= 2.0, "the simulated clock starts off");
    let out = meterd()
        .args(["timesync", "--protocol", "dlt645-2007", "--serial", &pty])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(offset(&pty).abs() <= 1.0, "in sync after the broadcast");
    stop(sim);
}

#[test]
fn read_takes_dlt645_identifiers_by_address() {
    let (sim, pty) = dlt645_sim(&[
        "--meter",
        "123456789012=dlt645-2007-three-phase",
        "--frozen",
    ]);
    let out = meterd()
        .args([
            "read",
            "--protocol",
            "dlt645-2007",
            "--serial",
            &pty,
            "--address",
            "123456789012",
            "--json",
        ])
        .args([
            "--di", "0201FF00", "--di", "02800002", "--di", "04000101", "--di", "0280000B",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    let values = v["values"].as_array().unwrap();
    let names: Vec<&str> = values.iter().filter_map(|x| x["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "voltage, phase A",
            "voltage, phase B",
            "voltage, phase C",
            "grid frequency",
            "date and weekday"
        ],
        "{v}"
    );
    assert_eq!(values[3]["unit"], "Hz");
    assert!(
        values[4]["value"].as_str().unwrap().starts_with("20"),
        "{v}"
    );
    assert!(
        values[5]["error"]
            .as_str()
            .unwrap()
            .contains("no requested data"),
        "an unknown identifier is refused: {v}"
    );
    assert_eq!(out.status.code(), Some(0));
    stop(sim);
}

#[test]
fn a_user_profile_with_a_built_in_name_replaces_the_built_in() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("my-sdm120.toml"),
        "name = \"eastron-sdm120\"\nmanufacturer = \"Eastron\"\nmodel = \"SDM120 (site map)\"\ndocument = \"our own register list, rev 1\"\nprotocol = \"modbus\"\n\
         register = \"input\"\n[[group]]\nname = \"realtime\"\ninterval = \"5s\"\npoints = [{ quantity = \"voltage_l1_v\", address = 0 }]\n",
    )
    .unwrap();
    let out = meterd()
        .args(["profiles", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("eastron-sdm120 "))
        .expect("listed");
    assert!(
        line.contains("SDM120 (site map)") && line.contains("my-sdm120.toml"),
        "{line}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("eastron-sdm120 "))
            .count(),
        1
    );
}

#[test]
fn output_into_a_pipe_that_closed_ends_quietly_instead_of_panicking() {
    for args in [
        &["profiles", "eastron-sdm630"][..],
        &["profiles"],
        &["configfile"],
    ] {
        let mut child = meterd()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before meterd writes a line, as `| head` does after its lines.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_peer_that_closes_the_connection_is_reported_as_such() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { return };
            let mut buf = [0u8; 64];
            let _ = std::io::Read::read(&mut c, &mut buf);
            // Closed without a reply, as a serial server does when its line is taken.
        }
    });
    let out = meterd()
        .args([
            "read",
            "--addr",
            &addr,
            "--unit",
            "1",
            "--profile",
            "eastron-sdm120",
            "--json",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors = v["errors"].to_string();
    assert!(
        errors.contains("the peer closed the connection"),
        "{errors}"
    );
    assert!(!errors.contains("os error 115"), "{errors}");
}
