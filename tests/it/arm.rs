//! The ARM release builds (`scripts/cross aarch64|armhf`) under qemu-user: `validate`,
//! `decode` of every shared protocol vector (the same output as this machine's build, byte for
//! byte), `simulate` + `read` over loopback TCP, and a short `run` that publishes to a real
//! Mosquitto. `scripts/test` builds arm64 first (`scripts/cross aarch64 --no-deb`); without it
//! these tests fail and say how to build it. The armhf tests are opt-in (ignored by default:
//! a second cross build adds 6 to 15 minutes): `scripts/cross armhf --no-deb`, then
//! `cargo test --test it armhf -- --ignored`.

use std::{
    path::PathBuf,
    process::{Command, Output, Stdio},
    time::Duration,
};

use crate::{
    harness::{one_meter_config, Collector},
    servers,
};

/// One ARM target: its Rust triple, `scripts/cross` argument, cross sysroot and qemu.
struct Arm {
    triple: &'static str,
    script: &'static str,
    debarch: &'static str,
    gnu: &'static str,
    qemu: &'static str,
}

const ARM64: Arm = Arm {
    triple: "aarch64-unknown-linux-gnu",
    script: "aarch64",
    debarch: "arm64",
    gnu: "aarch64-linux-gnu",
    qemu: "qemu-aarch64",
};

const ARMHF: Arm = Arm {
    triple: "armv7-unknown-linux-gnueabihf",
    script: "armhf",
    debarch: "armhf",
    gnu: "arm-linux-gnueabihf",
    qemu: "qemu-arm",
};

impl Arm {
    fn bin(&self) -> PathBuf {
        let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join(self.triple)
            .join("release/meterd");
        assert!(
            bin.is_file(),
            "{} is missing: build it with `scripts/cross {}` (as root it installs rustc-web, \
             cargo-web, libstd-rust-web-dev:{}, gcc-{}, libc6-dev-{}-cross and qemu-user)",
            bin.display(),
            self.script,
            self.debarch,
            self.gnu,
            self.debarch,
        );
        servers::binary(self.qemu, "qemu-user");
        bin
    }

    /// This build's `meterd ARGS` under qemu-user.
    ///
    /// The loader comes from the cross sysroot (libc6-ARCH-cross), and so must libc: with
    /// `libstd-rust-web-dev:ARCH` installed, Debian's multiarch `libc6:ARCH` is in /lib/GNU
    /// too, qemu's `-L` falls back to it for libraries, and a loader and a libc of two builds
    /// hang in the first `pthread_create`. `LD_LIBRARY_PATH` keeps them one.
    fn meterd(&self, args: &[&str]) -> Command {
        let sysroot = format!("/usr/{}", self.gnu);
        let mut c = Command::new(self.qemu);
        c.args(["-L", &sysroot, "-E"])
            .arg(format!("LD_LIBRARY_PATH={sysroot}/lib"))
            .arg(self.bin())
            .args(args);
        c
    }
}

fn native(args: &[&str]) -> Output {
    Command::new(meterd_testkit::built_bin())
        .args(args)
        .output()
        .expect("meterd")
}

fn shared(file: &str) -> String {
    let path = format!("{}/../shared/protocols/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e} (the shared folder sits beside the project)"))
}

fn validates_the_example_config(arm: &Arm) {
    let example = format!("{}/config/meterd.example.toml", env!("CARGO_MANIFEST_DIR"));
    let out = arm.meterd(&["validate", "-c", &example]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(": ok ("), "{text}");
}

fn decodes_every_shared_vector_as_this_machines_build_does(arm: &Arm) {
    // DL/T 645: the table rows `| ID | `hex` | … |`; DL/T 698.45: the `- hex:` lines.
    let dlt645: Vec<String> = shared("dlt645-vectors.md")
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('|').map(str::trim).collect();
            (cols.len() >= 4 && cols[2].starts_with('`'))
                .then(|| cols[2].trim_matches('`').to_string())
        })
        .collect();
    let dlt698: Vec<String> = shared("dlt698-vectors.md")
        .lines()
        .filter_map(|l| {
            Some(
                l.strip_prefix("- hex: ")?
                    .trim()
                    .trim_matches('`')
                    .to_string(),
            )
        })
        .filter(|h| !h.is_empty())
        .collect();
    assert!(
        dlt645.len() >= 50 && dlt698.len() >= 60,
        "{} and {} vectors",
        dlt645.len(),
        dlt698.len()
    );
    for (protocol, frames) in [("dlt645-2007", &dlt645), ("dlt698", &dlt698)] {
        let mut args = vec!["decode", "--protocol", protocol, "--json"];
        args.extend(frames.iter().map(String::as_str));
        let here = native(&args);
        let there = arm.meterd(&args).output().unwrap();
        assert_eq!(there.status.code(), here.status.code(), "{protocol}");
        let (here, there) = (
            String::from_utf8_lossy(&here.stdout),
            String::from_utf8_lossy(&there.stdout),
        );
        assert_eq!(here.lines().count(), frames.len(), "{protocol}: {here}");
        assert!(
            here == there,
            "{protocol}: the {} build decodes differently:\n{there}",
            arm.debarch
        );
    }
}

fn simulates_meters_and_reads_them_over_tcp(arm: &Arm) {
    let mut sim = arm
        .meterd(&[
            "simulate",
            "--tcp",
            "127.0.0.1:0",
            "--frozen",
            "--profile",
            "eastron-sdm630",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(sim.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let addr = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let args = [
        "read",
        "--addr",
        &addr,
        "--unit",
        "1",
        "--profile",
        "eastron-sdm630",
        "--json",
    ];
    let there = arm.meterd(&args).output().unwrap();
    let here = native(&args);
    let _ = sim.kill();
    let _ = sim.wait();
    assert!(
        there.status.success(),
        "{}",
        String::from_utf8_lossy(&there.stderr)
    );
    let values = |o: &Output| -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        v["values"].clone()
    };
    // A frozen meter: both builds read the same 32 values in the same units.
    let (a, b) = (values(&there), values(&here));
    assert_eq!(a.as_object().map(|m| m.len()), Some(32), "{a}");
    assert_eq!(a, b);
}

async fn runs_and_publishes_readings_to_mosquitto(arm: &Arm) {
    let broker = servers::mosquitto();
    let (_sim, addr) = crate::harness::tcp_sim(&[(1, "eastron-sdm120")], true).await;
    let mqtt = Collector::start(broker.port, "meterd/gw-arm/#").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = one_meter_config(
        dir.path(),
        "gw-arm",
        &dir.path().join("state"),
        &addr,
        "500ms",
        &format!("[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n", broker.port),
    );
    let mut run = arm
        .meterd(&["run", "-c", &cfg.display().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    mqtt.wait_for(
        &format!("readings from the {} build", arm.debarch),
        Duration::from_secs(30),
        |m| {
            m.iter()
                .filter(|m| m.topic == "meterd/gw-arm/meter/m1/reading")
                .count()
                >= 3
        },
    )
    .await;
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(run.id().to_string())
        .status();
    let status = run.wait().unwrap();
    assert!(status.success(), "SIGTERM: a clean stop, exit 0 ({status})");
    let r: serde_json::Value =
        serde_json::from_str(&mqtt.on("meterd/gw-arm/meter/m1/reading")[0].payload).unwrap();
    assert_eq!(r["meter"], "m1");
    assert!(r["values"]["voltage_l1_v"].as_f64().is_some(), "{r}");
}

#[test]
fn the_arm64_build_validates_the_example_config() {
    validates_the_example_config(&ARM64);
}

#[test]
fn the_arm64_build_decodes_every_shared_vector_as_this_machines_build_does() {
    decodes_every_shared_vector_as_this_machines_build_does(&ARM64);
}

#[test]
fn the_arm64_build_simulates_meters_and_reads_them_over_tcp() {
    simulates_meters_and_reads_them_over_tcp(&ARM64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_arm64_build_runs_and_publishes_readings_to_mosquitto() {
    runs_and_publishes_readings_to_mosquitto(&ARM64).await;
}

// armhf: opt-in, see the module doc. The `ignore` reason is what `cargo test` prints.

#[test]
#[ignore = "opt-in: scripts/cross armhf --no-deb, then cargo test --test it armhf -- --ignored"]
fn the_armhf_build_validates_the_example_config() {
    validates_the_example_config(&ARMHF);
}

#[test]
#[ignore = "opt-in: scripts/cross armhf --no-deb, then cargo test --test it armhf -- --ignored"]
fn the_armhf_build_decodes_every_shared_vector_as_this_machines_build_does() {
    decodes_every_shared_vector_as_this_machines_build_does(&ARMHF);
}

#[test]
#[ignore = "opt-in: scripts/cross armhf --no-deb, then cargo test --test it armhf -- --ignored"]
fn the_armhf_build_simulates_meters_and_reads_them_over_tcp() {
    simulates_meters_and_reads_them_over_tcp(&ARMHF);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "opt-in: scripts/cross armhf --no-deb, then cargo test --test it armhf -- --ignored"]
async fn the_armhf_build_runs_and_publishes_readings_to_mosquitto() {
    runs_and_publishes_readings_to_mosquitto(&ARMHF).await;
}
