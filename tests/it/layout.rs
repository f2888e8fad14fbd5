//! The layout's rules, as ARCHITECTURE.md states them, checked on the sources: the library
//! never reaches up into the daemon (only the CLI starts it), and `anyhow` stays in the
//! command line.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn code_lines(path: &Path) -> Vec<(usize, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .enumerate()
        .map(|(n, l)| (n + 1, l.split("//").next().unwrap_or("").to_string()))
        .collect()
}

#[test]
fn only_the_command_line_starts_the_daemon_and_only_it_uses_anyhow() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut wrong = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap().to_string_lossy().to_string();
        let in_cli = rel.starts_with("cli") || rel == "main.rs";
        let in_daemon = rel.starts_with("daemon");
        for (n, line) in code_lines(f) {
            if !in_cli && !in_daemon && line.contains("daemon::") {
                wrong.push(format!("{rel}:{n}: reaches up into the daemon"));
            }
            if !in_cli && line.contains("anyhow") {
                wrong.push(format!("{rel}:{n}: anyhow outside the command line"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
