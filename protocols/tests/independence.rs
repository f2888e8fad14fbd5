//! Architecture invariant: `protocols` never does I/O, reads no clock and does not depend on
//! tokio. Its dependencies are a short, named list of pure crates; its sources name no I/O,
//! clock or runtime API. A new dependency or an `std::fs` here fails this test, on purpose:
//! decide first whether it belongs in the daemon.

use std::path::Path;

/// The pure crates `protocols` may use, and why each.
const ALLOWED: &[&str] = &[
    "serde",                // profiles as data
    "toml",                 // profile files, text handed in
    "thiserror",            // typed errors
    "crc",                  // checksums
    "humantime",            // intervals in profiles
    "ryu_floating_decimal", // shortest decimals of float registers
];

#[test]
fn protocols_depends_only_on_pure_crates() {
    let manifest: toml::Table = toml::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap(),
    )
    .unwrap();
    let deps = manifest["dependencies"].as_table().unwrap();
    let extra: Vec<&String> = deps
        .keys()
        .filter(|d| !ALLOWED.contains(&d.as_str()))
        .collect();
    assert!(extra.is_empty(), "protocols gained dependencies {extra:?}");
}

#[test]
fn protocols_sources_do_no_io_and_read_no_clock() {
    let forbidden = [
        "std::fs",
        "std::net",
        "std::io::stdin",
        "std::process",
        "std::thread",
        "tokio",
        "SystemTime::now",
        "Instant::now",
        "std::env",
    ];
    let mut found = Vec::new();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for f in forbidden {
                    if code.contains(f) {
                        found.push(format!("{}:{}: {f}", path.display(), n + 1));
                    }
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "I/O or a clock in protocols:\n{}",
        found.join("\n")
    );
}
