//! Test support shared by meterd's integration tests (`tests/it`) and its end-to-end benches:
//! real servers started on free loopback ports and stopped on drop ([`servers`]), the meterd
//! process and MQTT collectors ([`harness`]), an HTTP receiver for webhooks ([`receiver`]), the scale bench ([`scale`]), Node-RED
//! on its first workload for comparison ([`node_red`]) and the line-utilisation window ([`line`]).
//! Dev-only: nothing here ships.

pub mod harness;
pub mod line;
pub mod node_red;
pub mod receiver;
pub mod scale;
pub mod servers;

/// The `meterd` binary that Cargo built beside the running test or bench
/// (`target/<profile>/meterd`; tests and benches run from `target/<profile>/deps/`).
///
/// `METERD_BIN` names another build instead (a build with symbols for `perf`, a cross build).
pub fn meterd_bin() -> std::path::PathBuf {
    if let Some(bin) = std::env::var_os("METERD_BIN") {
        return bin.into();
    }
    built_bin()
}

/// The `meterd` binary Cargo built beside the running test or bench, whatever `METERD_BIN`
/// says (simulators are test equipment, not the build under test).
pub fn built_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the running test's path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let bin = dir.join("meterd");
    assert!(
        bin.is_file(),
        "{} not built: run through `cargo test` or `cargo bench`",
        bin.display()
    );
    bin
}
