//! Config validation: every problem at once, each with its file, line and key.

use std::process::Command;

use meterd::config;

const GOOD_BUS: &str =
    "[[bus]]\nname = \"b\"\nprotocol = \"modbus-tcp\"\ntcp = \"127.0.0.1:502\"\n\
                        [[bus.meter]]\nid = \"m1\"\nunit = 1\nprofile = \"eastron-sdm630\"\n";

fn errors(text: &str) -> Vec<String> {
    match config::load_str(text, "t.toml") {
        Ok(_) => vec![],
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn each_class_of_config_error_is_reported_with_its_location() {
    let gw = "[gateway]\nid = \"gw\"\nstate_dir = \"/tmp/x\"\n";
    let cases: &[(&str, String, &[&str])] = &[
        ("a TOML syntax error", format!("{gw}[[bus]\n"), &["t.toml:4:6: invalid table header: expected `.`, `]]`"]),
        ("an unknown top-level key", format!("colour = 1\n{gw}"), &["t.toml:1:1: colour: unknown section `colour`, expected one of gateway, profiles_dir, bus, mqtt, influxdb, journal, http, alerts, remote"]),
        ("an unknown key in a meter", format!("{gw}{GOOD_BUS}colour = \"red\"\n"), &["t.toml:12:1: bus[0].meter[0].colour: unknown field `colour`, expected one of `id`, `unit`, `address`, `profile`, `interval`, `intervals`, `labels`"]),
        ("a value of the wrong type", format!("{gw}{GOOD_BUS}").replace("unit = 1", "unit = \"one\""), &["t.toml:10:1: bus[0].meter[0].unit: invalid type: string \"one\", expected u8"]),
        ("a bad duration", format!("{gw}{GOOD_BUS}").replace("tcp = \"127.0.0.1:502\"\n", "tcp = \"127.0.0.1:502\"\ntimeout = \"soon\"\n"), &["t.toml:8:1: bus[0].timeout: invalid value: string \"soon\", expected a duration"]),
        ("an unknown profile", format!("{gw}{GOOD_BUS}").replace("eastron-sdm630", "acme-9000"), &["t.toml:11:1: bus[0].meter[0].profile: unknown profile \"acme-9000\"; known: abb-b23, bernecker-mpm3pm, carlo-gavazzi-em24, carlo-gavazzi-em340, chint-ddsu666, chint-dtsu666, dzg-dvh4013, eastron-sdm120, eastron-sdm220, eastron-sdm230, eastron-sdm630, eastron-sdm72, eltako-dsz15dzmod, finder-7m38, inepro-pro380, janitza-b23, lovato-dmg610, orno-we517, sbc-ale3, schneider-iem3255, siemens-pac2200, socomec-countis-e4x"]),
        ("a duplicate meter id across buses", format!("{gw}{GOOD_BUS}{}", GOOD_BUS.replace("name = \"b\"", "name = \"c\"").replace("502", "503")), &["t.toml:17:1: bus[1].meter[0].id: meter id \"m1\" is already used on bus \"b\"; ids are unique per gateway"]),
        ("a duplicate unit on one bus", format!("{gw}{GOOD_BUS}[[bus.meter]]\nid = \"m2\"\nunit = 1\nprofile = \"eastron-sdm120\"\n"), &["t.toml:14:1: bus[0].meter[1].unit: unit 1 is already meter \"m1\" on this bus"]),
        ("two buses on one serial device", format!("{gw}[[bus]]\nname = \"a\"\nprotocol = \"modbus-rtu\"\nserial = {{ device = \"/dev/ttyS1\" }}\n[[bus]]\nname = \"b\"\nprotocol = \"modbus-rtu\"\nserial = {{ device = \"/dev/ttyS1\" }}\n"), &["t.toml:11:12: bus[1].serial.device: /dev/ttyS1 is already used by bus \"a\": one task owns a serial line"]),
        ("a serial bus without a device", format!("{gw}[[bus]]\nname = \"a\"\nprotocol = \"modbus-rtu\"\ntcp = \"127.0.0.1:1\"\n"), &["t.toml:4:1: bus[0].serial: a modbus-rtu bus needs serial = { device = ... } and no tcp"]),
        ("unit 0 on a serial line", format!("{gw}[[bus]]\nname = \"a\"\nprotocol = \"modbus-rtu\"\nserial = {{ device = \"/dev/ttyS1\" }}\n[[bus.meter]]\nid = \"m\"\nunit = 0\nprofile = \"eastron-sdm120\"\n"), &["t.toml:10:1: bus[0].meter[0].unit: 0: unit ids on a serial line are 1 to 247 (0 is broadcast)"]),
        ("concurrency on a serial line", format!("{gw}[[bus]]\nname = \"a\"\nprotocol = \"modbus-rtu\"\nconcurrency = 4\nserial = {{ device = \"/dev/ttyS1\" }}\n"), &["t.toml:7:1: bus[0].concurrency: only modbus-tcp buses poll meters concurrently: a serial line carries one transaction at a time"]),
        ("an interval that would overflow the clock", format!("{gw}{GOOD_BUS}interval = \"300000000000y\"\n"), &["t.toml:12:1: bus[0].meter[0].interval: \"300000000000y\" is outside 10ms to 31d: no meter answers faster than 10 ms; a month is the longest useful poll (freezes cover longer)"]),
        ("a back-off of u64::MAX seconds", format!("{gw}{GOOD_BUS}").replace("tcp = \"127.0.0.1:502\"\n", "tcp = \"127.0.0.1:502\"\nbackoff = \"18446744073709551615s\"\n"), &["t.toml:8:1: bus[0].backoff: \"18446744073709551615s\" is outside 100ms to 1d: a meter that failed is tried again at least daily"]),
        ("a zero status interval", format!("{gw}[influxdb]\nurl = \"http://h:1\"\napi = \"v1\"\ndatabase = \"d\"\nstatus_interval = \"0s\"\n"), &["t.toml:8:1: influxdb.status_interval: \"0s\" is outside 100ms to 1d: status points at least daily, at most ten a second"]),
        ("an interval for a group the profile lacks", format!("{gw}{GOOD_BUS}intervals = {{ fast = \"1s\" }}\n"), &["t.toml:12:1: bus[0].meter[0].intervals: profile eastron-sdm630 has no point group \"fast\"; it has realtime, energy"]),
        ("a bad MQTT url and QoS 2", format!("{gw}[mqtt]\nurl = \"http://x\"\nqos = 2\n"), &["t.toml:5:1: mqtt.url: use mqtt://HOST[:PORT] or mqtts://HOST[:PORT]"]),
        ("InfluxDB v2 without org and bucket", format!("{gw}[influxdb]\nurl = \"http://127.0.0.1:8086\"\n"), &["t.toml:4:2: influxdb.api: api = \"v2\" needs org", "t.toml:4:2: influxdb.api: api = \"v2\" needs bucket"]),
        ("a secret given twice", format!("{gw}[mqtt]\nurl = \"mqtt://h\"\npassword = \"a\"\npassword_env = \"B\"\n"), &["t.toml:6:1: mqtt.password: give one of password, password_file and password_env, not several"]),
        ("a secret file that is missing", format!("{gw}[influxdb]\nurl = \"http://h:1\"\napi = \"v1\"\ndatabase = \"d\"\npassword_file = \"/nonexistent/pw\"\n"), &["t.toml:8:1: influxdb.password_file: cannot read /nonexistent/pw: No such file or directory (os error 2)"]),
        ("a DL/T 645 meter without an address", format!("{gw}[[bus]]\nname = \"d\"\nprotocol = \"dlt645-2007\"\nserial = {{ device = \"/dev/ttyS2\" }}\n[[bus.meter]]\nid = \"m\"\nunit = 3\nprofile = \"dlt645-2007-three-phase\"\n"), &["t.toml:10:1: bus[0].meter[0].unit: unit is for Modbus meters; DL/T 645 meters use address = \"123456789012\"", "t.toml:9:1: bus[0].meter[0].id: a DL/T 645 meter needs address = \"123456789012\" (12 digits as on the nameplate)"]),
        ("a wildcard address for polling", format!("{gw}[[bus]]\nname = \"d\"\nprotocol = \"dlt645-2007\"\ntcp = \"127.0.0.1:9000\"\n[[bus.meter]]\nid = \"m\"\naddress = \"AAAAAAAAAAAA\"\nprofile = \"dlt645-2007-three-phase\"\n"), &["t.toml:10:1: bus[0].meter[0].address: AAAAAAAAAAAA: broadcast and wildcard addresses are for scanning, not polling"]),
        ("a Modbus profile on a DL/T 645 bus", format!("{gw}[[bus]]\nname = \"d\"\nprotocol = \"dlt645-1997\"\ntcp = \"127.0.0.1:9000\"\n[[bus.meter]]\nid = \"m\"\naddress = \"1\"\nprofile = \"eastron-sdm630\"\n"), &["t.toml:11:1: bus[0].meter[0].profile: profile eastron-sdm630 is for Modbus meters; this is a dlt645-1997 bus"]),
        ("a DL/T 698.45 meter with a unit, one without an address, one with a wildcard and a duplicate", format!("{gw}[[bus]]\nname = \"p\"\nprotocol = \"dlt698\"\nserial = {{ device = \"/dev/ttyS3\" }}\n[[bus.meter]]\nid = \"m1\"\nunit = 3\nprofile = \"dlt698-three-phase\"\n[[bus.meter]]\nid = \"m2\"\naddress = \"0000000003A1\"\nprofile = \"dlt698-three-phase\"\n[[bus.meter]]\nid = \"m3\"\naddress = \"000000000321\"\nprofile = \"dlt698-single-phase\"\n[[bus.meter]]\nid = \"m4\"\naddress = \"000000000321\"\nprofile = \"dlt645-2007-three-phase\"\n"), &["t.toml:10:1: bus[0].meter[0].unit: unit is for Modbus meters; DL/T 698.45 meters use address = \"000000000001\"", "t.toml:9:1: bus[0].meter[0].id: a DL/T 698.45 meter needs address = \"000000000001\" (the digits on the nameplate)", "t.toml:14:1: bus[0].meter[1].address: 0000000003A1: wildcard addresses are for scanning, not polling", "t.toml:22:1: bus[0].meter[3].address: address 000000000321 is already meter \"m3\" on this bus", "t.toml:23:1: bus[0].meter[3].profile: profile dlt645-2007-three-phase is for DL/T 645-2007 meters; this is a dlt698 bus"]),
        ("remote commands with an inline key", format!("{gw}[mqtt]\nurl = \"mqtt://h\"\n[remote]\ncommands = [\"status\"]\nkey = \"secret\"\n"), &["t.toml:8:1: remote.key: unknown field `key`, expected one of `commands`, `key_file`, `key_env`, `relay_key_file`, `relay_key_env`, `window`, `rate_limit`, `relay_meters`, `relay_password_file`, `relay_password_env`, `relay_operator`"]),
        ("relay without its meters, password and key, no MQTT or key, and a bad rate limit", format!("{gw}[remote]\ncommands = [\"status\", \"relay\", \"fly\"]\nwindow = \"2h\"\nrate_limit = {{ status = 0 }}\nrelay_meters = [\"m9\"]\n"), &["t.toml:6:1: remote.window: \"2h\" is outside 10s to 1h: a signed command is valid this long either way of the gateway's clock: clocks drift seconds, and a replay window of more than an hour is an invitation", "t.toml:5:1: remote.commands: commands arrive over MQTT: configure [mqtt] too", "t.toml:5:1: remote.commands: unknown command \"fly\"; known: read, timesync, recollect, relay, status", "t.toml:7:1: remote.rate_limit: status: at least 1 per minute", "t.toml:8:1: remote.relay_meters: no meter \"m9\" in this config", "t.toml:4:2: remote.relay_password_file: relay is enabled: give the meters' password and the operator code", "t.toml:4:2: remote.relay_key_file: relay is enabled: relay commands are signed with a key of their own", "t.toml:4:2: remote.key_file: commands need a key: key_file (or key_env) with the secret shared with the master station"]),
        ("an alert rule with above and below, for a meter that does not exist", format!("{gw}{GOOD_BUS}[alerts]\n[[alerts.rule]]\nname = \"hv\"\nquantity = \"voltage_l1_v\"\nabove = 250.0\nbelow = 200.0\nmeters = [\"m9\"]\n"), &["t.toml:18:1: alerts.rule[0].meters: no meter \"m9\" in this config", "t.toml:16:1: alerts.rule[0].above: give exactly one of above and below"]),
        ("an alert that clears on the wrong side of its threshold", format!("{gw}{GOOD_BUS}[[alerts.rule]]\nname = \"hv\"\nquantity = \"voltage_l1_v\"\nabove = 235.0\nclear = 240.0\n"), &["t.toml:16:1: alerts.rule[0].clear: 240 is above the threshold 235: an alert above a level clears below it"]),
        ("a parameter a built-in rule does not take, and an unknown built-in", format!("{gw}[alerts.builtin.bus_down]\nintervals = 3\n[alerts.builtin.meter_ofline]\nenabled = false\n"), &["t.toml:6:17: alerts.builtin.meter_ofline: unknown built-in rule; known: meter_offline, bus_down, phase_loss, reverse_power, energy_counter, clock_drift, journal_filling, journal_dropping, journal_unwritable, relay_refused, sink_unreachable", "t.toml:5:1: alerts.builtin.bus_down.intervals: bus_down takes no intervals; its parameters: none"]),
        ("a webhook that is not HTTP, with its token given twice", format!("{gw}[[alerts.webhook]]\nurl = \"ftp://x\"\nbearer_token = \"a\"\nbearer_token_env = \"B\"\n"), &["t.toml:5:1: alerts.webhook[0].url: use http://… or https://…", "t.toml:6:1: alerts.webhook[0].bearer_token: give one of bearer_token, bearer_token_file and bearer_token_env, not several"]),
        ("a threshold on a quantity no meter in scope reports (a typo)", format!("{gw}{GOOD_BUS}").replace("eastron-sdm630", "eastron-sdm120") + "[[alerts.rule]]\nname = \"hv\"\nquantity = \"voltge_l1_v\"\nabove = 250.0\n", &["t.toml:14:1: alerts.rule[0].quantity: no meter in the rule's scope reports \"voltge_l1_v\"; their quantities: apparent_power_va, current_l1_a, energy_export_kwh, energy_import_kwh, frequency_hz, power_factor, power_w, reactive_energy_export_kvarh, reactive_energy_import_kvarh, reactive_power_var, voltage_l1_v"]),
        ("a notifier named like a sink", format!("{gw}[[alerts.webhook]]\nname = \"mqtt\"\nurl = \"http://127.0.0.1:1/\"\n"), &["t.toml:5:1: alerts.webhook[0].name: a notifier cannot be named \"mqtt\": the sink of that name has its own alert outbox"]),
        ("report by exception: a deadband that is no number, a heartbeat of a week, a rule without settings for a meter not configured, a percent above 100 for a quantity no meter reports", format!("{gw}{GOOD_BUS}[mqtt]\nurl = \"mqtt://h\"\n[mqtt.exception]\ndeadband = \"lots\"\nheartbeat = \"7d\"\n[[mqtt.exception.rule]]\nmeters = [\"m9\"]\n[[mqtt.exception.rule]]\nquantities = [\"enrgy_*\"]\ndeadband = \"150%\"\n"), &["t.toml:16:1: mqtt.exception.heartbeat: \"7d\" is outside 1s to 1d: a quiet value is sent at least daily, or dashboards lose it; more often than every second is every reading", "t.toml:15:1: mqtt.exception.deadband: \"lots\": give a change in the quantity's unit (0.5) or a percent of the last value sent (\"1%\")", "t.toml:17:1: mqtt.exception.rule[0].deadband: give deadband, heartbeat or both (a rule without them changes nothing)", "t.toml:18:1: mqtt.exception.rule[0].meters: no meter \"m9\" in this config", "t.toml:20:1: mqtt.exception.rule[1].quantities: no meter in the rule's scope reports \"enrgy_*\"; their quantities: apparent_power_l1_va, apparent_power_l2_va, apparent_power_l3_va, apparent_power_va, current_l1_a, current_l2_a, current_l3_a, current_n_a, energy_export_kwh, energy_import_kwh, energy_total_kwh, frequency_hz, power_factor, power_factor_l1, power_factor_l2, power_factor_l3, power_l1_w, power_l2_w, power_l3_w, power_w, reactive_energy_export_kvarh, reactive_energy_import_kvarh, reactive_power_l1_var, reactive_power_l2_var, reactive_power_l3_var, reactive_power_var, voltage_l1_l2_v, voltage_l1_v, voltage_l2_l3_v, voltage_l2_v, voltage_l3_l1_v, voltage_l3_v", "t.toml:21:1: mqtt.exception.rule[1].deadband: \"150%\": a percent deadband is 0 to 100"]),
        ("a missing gateway section", GOOD_BUS.to_string(), &["t.toml: missing [gateway] section (id and state_dir)"]),
    ];
    let mut failed = Vec::new();
    for (what, text, expected) in cases {
        let got = errors(text);
        if &got != expected {
            failed.push(format!(
                "{what}:\n  got      {got:?}\n  expected {expected:?}"
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn a_remote_key_shorter_than_16_bytes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("short.key");
    std::fs::write(&key, "short\n").unwrap();
    let text = format!(
        "[gateway]\nid = \"gw\"\nstate_dir = \"/tmp/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[remote]\ncommands = [\"status\"]\nkey_file = \"{}\"\n",
        key.display()
    );
    assert_eq!(
        errors(&text),
        ["t.toml:8:1: remote.key_file: the key must be at least 16 bytes"]
    );
}

#[test]
fn several_problems_in_several_places_are_all_reported_at_once() {
    let text = "[gateway]\nid = \"gw/1\"\nstate_dir = \"/tmp/x\"\n\
                [[bus]]\nname = \"b\"\nprotocol = \"modbus-tcp\"\ntcp = \"nohost\"\n\
                [[bus.meter]]\nid = \"m1\"\nunit = \"x\"\nprofile = \"eastron-sdm630\"\n\
                [[bus.meter]]\nid = \"m2\"\nunit = 2\nprofile = \"nope\"\n\
                [journal]\nmax_size = \"10KiB\"\n";
    let got = errors(text);
    assert_eq!(got.len(), 5, "{got:#?}");
    assert!(
        got[0].starts_with("t.toml:10:1: bus[0].meter[0].unit: invalid type"),
        "{got:#?}"
    );
    assert!(
        got[1].starts_with("t.toml:2:1: gateway.id: \"gw/1\""),
        "{got:#?}"
    );
    assert!(
        got[2].starts_with("t.toml:7:1: bus[0].tcp: \"nohost\" is not HOST:PORT"),
        "{got:#?}"
    );
    assert!(
        got[3].starts_with("t.toml:15:1: bus[0].meter[1].profile: unknown profile \"nope\""),
        "{got:#?}"
    );
    assert!(
        got[4].starts_with("t.toml:17:1: journal.max_size: must be at least 1MiB"),
        "{got:#?}"
    );
}

#[test]
fn the_printed_template_validates() {
    let out = Command::new(env!("CARGO_BIN_EXE_meterd"))
        .arg("configfile")
        .output()
        .unwrap();
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meterd.toml");
    std::fs::write(&path, &out.stdout).unwrap();
    let v = Command::new(env!("CARGO_BIN_EXE_meterd"))
        .args(["validate", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        v.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
    // Every built-in rule plus the two threshold rules, and the Alertmanager notifier.
    assert!(
        String::from_utf8_lossy(&v.stdout)
            .ends_with("ok (4 buses, 5 meters, 13 alert rules, 1 alert notifiers)\n"),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
    assert_eq!(
        std::fs::read_to_string("config/meterd.example.toml")
            .unwrap()
            .as_bytes(),
        &out.stdout[..]
    );
}

#[test]
fn validate_exits_78_and_prints_one_located_line_per_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[gateway]\nid = \"\"\nstate_dir = \"/tmp/x\"\n[mqtt]\nurl = \"mqtt://h\"\nqos = 2\n",
    )
    .unwrap();
    let v = Command::new(env!("CARGO_BIN_EXE_meterd"))
        .args(["validate", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(v.status.code(), Some(78));
    let stdout = String::from_utf8_lossy(&v.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let file = path.display().to_string();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with(&format!("{file}:2:1: gateway.id: ")),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with(&format!("{file}:6:1: mqtt.qos: must be 0 or 1")),
        "{stdout}"
    );
    let run = Command::new(env!("CARGO_BIN_EXE_meterd"))
        .args(["run", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        run.status.code(),
        Some(78),
        "run refuses a bad config with 78 too"
    );
}

#[test]
fn relative_paths_are_taken_relative_to_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "secret\n").unwrap();
    let path = dir.path().join("meterd.toml");
    std::fs::write(
        &path,
        "[gateway]\nid = \"gw\"\nstate_dir = \"state\"\n[mqtt]\nurl = \"mqtt://h\"\nusername = \"u\"\npassword_file = \"pw\"\n",
    )
    .unwrap();
    let c = config::load(&path).unwrap();
    assert_eq!(c.state_dir, dir.path().join("state"));
    assert_eq!(
        c.mqtt.unwrap().password.as_deref(),
        Some("secret"),
        "the file next to the config, trailing newline dropped"
    );
}

/// `meterd` with `args`, killed if it takes longer than `within`: (exit code, output).
fn meterd_within(args: &[&str], within: std::time::Duration) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meterd"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            return (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).to_string()
                    + &String::from_utf8_lossy(&out.stderr),
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    (None, format!("still running after {within:?}"))
}

#[test]
fn durations_that_validate_once_accepted_are_config_errors_for_run_too_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("meterd.toml");
    for (key, value) in [
        ("interval", "300000000000y"),
        ("interval", "18446744073709551615s"),
    ] {
        std::fs::write(
            &cfg,
            format!(
                "[gateway]\nid = \"gw\"\nstate_dir = \"{}\"\n{GOOD_BUS}{key} = \"{value}\"\n",
                dir.path().join("state").display()
            ),
        )
        .unwrap();
        for cmd in ["validate", "run"] {
            let (code, out) = meterd_within(
                &[cmd, "-c", cfg.to_str().unwrap()],
                std::time::Duration::from_secs(10),
            );
            assert_eq!(code, Some(78), "{cmd} with {key} = {value}: {out}");
            assert!(out.contains("is outside"), "{out}");
        }
    }
}

#[test]
fn a_config_or_secret_that_is_a_device_or_a_fifo_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for config in ["/dev/zero", "/dev/urandom", fifo.to_str().unwrap()] {
        let (code, out) = meterd_within(
            &["validate", "-c", config],
            std::time::Duration::from_secs(5),
        );
        assert_eq!(code, Some(78), "{config}: {out}");
        assert!(out.contains("not a regular file"), "{config}: {out}");
    }
    let cfg = dir.path().join("meterd.toml");
    for secret in ["/dev/urandom", fifo.to_str().unwrap()] {
        std::fs::write(
            &cfg,
            format!(
                "[gateway]\nid = \"gw\"\nstate_dir = \"state\"\n[mqtt]\nurl = \"mqtt://127.0.0.1\"\nusername = \"u\"\npassword_file = \"{secret}\"\n"
            ),
        )
        .unwrap();
        let (code, out) = meterd_within(
            &["validate", "-c", cfg.to_str().unwrap()],
            std::time::Duration::from_secs(5),
        );
        assert_eq!(code, Some(78), "{secret}: {out}");
        assert!(
            out.contains("mqtt.password_file") && out.contains("not a regular file"),
            "{out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_of_a_config_that_became_a_fifo_is_refused_and_meterd_goes_on() {
    let (_sim, addr) = crate::harness::tcp_sim(&[(1, "eastron-sdm120")], true).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = crate::harness::one_meter_config(
        dir.path(),
        "gw-fifo",
        &dir.path().join("state"),
        &addr,
        "200ms",
        "",
    );
    let mut meterd = crate::harness::Meterd::run(&cfg);
    meterd.ready().await;
    std::fs::remove_file(&cfg).unwrap();
    assert!(Command::new("mkfifo").arg(&cfg).status().unwrap().success());
    meterd.hup();
    crate::harness::eventually(
        "the reload refused",
        std::time::Duration::from_secs(5),
        || {
            let log = meterd.log_text();
            async move { log.contains("reload refused").then_some(()) }
        },
    )
    .await;
    assert!(meterd.log_text().contains("not a regular file"));
    assert!(
        meterd
            .terminate(std::time::Duration::from_secs(10))
            .is_some_and(|s| s.success()),
        "still running, and stops cleanly:\n{}",
        meterd.log_text()
    );
}
