//! The status page in a real headless Chromium: it loads, shows the simulated meters, updates.

use std::{process::Command, time::Duration};

use crate::{
    harness::{eventually, tcp_sim, Meterd},
    servers,
};

/// Headless Chromium with a fresh profile in `profile_dir`, and without the background
/// connections that a closed network refuses.
fn chromium(profile_dir: &std::path::Path) -> Command {
    let mut c = Command::new(servers::binary("chromium", "chromium"));
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--hide-scrollbars",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ])
    .arg(format!("--user-data-dir={}", profile_dir.display()));
    c
}

/// The page's DOM after its scripts ran for a couple of (virtual) seconds.
fn render(url: &str, profile_dir: &std::path::Path) -> String {
    render_after(url, profile_dir, 2500)
}

/// The page's DOM after its scripts ran for `ms` of virtual time (timers fire without the
/// wait).
fn render_after(url: &str, profile_dir: &std::path::Path, ms: u32) -> String {
    let out = chromium(profile_dir)
        .arg(format!("--virtual-time-budget={ms}"))
        .args(["--dump-dom", url])
        .output()
        .expect("run chromium");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A PNG of the page at `size` ("W,H") after its scripts ran.
fn screenshot(url: &str, profile_dir: &std::path::Path, size: &str, png: &std::path::Path) {
    let out = chromium(profile_dir)
        .arg(format!("--window-size={size}"))
        .arg(format!("--screenshot={}", png.display()))
        .args(["--virtual-time-budget=2500", url])
        .output()
        .expect("run chromium");
    assert!(
        png.is_file(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The seq shown in the page's row of `meter`.
fn seq_shown(dom: &str, meter: &str) -> Option<u64> {
    let row = dom.split(&format!("data-meter=\"{meter}\"")).nth(1)?;
    row.split("(seq ").nth(1)?.split(')').next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_every_meter_online_the_firing_alerts_and_updates() {
    let (_sim, addr) = tcp_sim(&[(1, "eastron-sdm120"), (2, "eastron-sdm630")], false).await;
    let port = servers::free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("meterd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[gateway]\nid = \"gw-page\"\nstate_dir = \"{}\"\n[[bus]]\nname = \"b\"\nprotocol = \"modbus-tcp\"\ntcp = \"{addr}\"\n\
             [[bus.meter]]\nid = \"m1\"\nunit = 1\nprofile = \"eastron-sdm120\"\ninterval = \"300ms\"\n\
             [[bus.meter]]\nid = \"m2\"\nunit = 2\nprofile = \"eastron-sdm630\"\ninterval = \"300ms\"\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\n\
             [[alerts.rule]]\nname = \"FrequencyHigh\"\nquantity = \"frequency_hz\"\nabove = 1.0\nmeters = [\"m2\"]\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let _meterd = Meterd::run(&cfg);
    let url = format!("http://127.0.0.1:{port}/");
    let profile = dir.path().join("chromium");
    let url2 = url.clone();
    let first = eventually(
        "the page with both meters online",
        Duration::from_secs(30),
        || {
            let (url, profile) = (url2.clone(), profile.clone());
            async move {
                let dom = tokio::task::spawn_blocking(move || render(&url, &profile))
                    .await
                    .ok()?;
                (dom.contains("2 of 2 meters online")
                    && dom.contains("1 alerts firing")
                    && dom.contains("<polyline"))
                .then_some(dom)
            }
        },
    )
    .await;
    for meter in ["m1", "m2"] {
        assert!(
            first.contains(&format!("data-meter=\"{meter}\"")),
            "{meter} not on the page:\n{first}"
        );
    }
    // Main quantities with their units, each with a sparkline of the last hour (the first
    // sample is taken two seconds after the start); the rest behind "more values".
    let m2 = first
        .split("data-meter=\"m2\"")
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .unwrap_or_default();
    for shown in [
        "voltage</span>",
        " V · ",
        " A · ",
        "<svg class=\"spark\"",
        "<polyline",
        "more values",
        "frequency_hz = ",
        " Hz",
    ] {
        assert!(m2.contains(shown), "{shown:?} missing from m2's row:\n{m2}");
    }
    // Per bus its utilisation, poll time and failures; the alert on the timeline.
    assert!(first.contains("data-bus=\"b\""), "the bus row:\n{first}");
    assert!(
        first.contains("data-event=\"firing\"") && first.contains("FrequencyHigh firing"),
        "the alert timeline:\n{first}"
    );
    // The JSON behind the charts.
    let history = crate::harness::http_json(port, "/api/history?meter=m2")
        .await
        .unwrap();
    assert_eq!(history["step_s"], 60, "a point a minute");
    assert!(
        history["meters"]["m2"]["voltage_l3_v"]["values"]
            .as_array()
            .is_some_and(|p| !p.is_empty()),
        "{history}"
    );
    assert!(
        history["meters"].get("m1").is_none(),
        "?meter= gives one meter: {history}"
    );
    assert!(
        history["buses"]["b"]["utilisation"]["values"]
            .as_array()
            .is_some_and(|p| !p.is_empty()),
        "{history}"
    );
    // Screenshots, desktop and phone, into the test output.
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    for (name, size) in [("desktop", "1280,1500"), ("phone", "390,2400")] {
        let png = shots.join(format!("status-page-{name}.png"));
        let _ = std::fs::remove_file(&png);
        let (url, profile) = (url.clone(), dir.path().join(format!("chromium-{name}")));
        let png2 = png.clone();
        tokio::task::spawn_blocking(move || screenshot(&url, &profile, size, &png2))
            .await
            .unwrap();
        let bytes = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
        assert!(bytes > 20_000, "{}: {bytes} bytes", png.display());
        println!("screenshot: {}", png.display());
    }
    assert!(
        first.contains("data-alert=\"FrequencyHigh\"") && first.contains("m2 on b"),
        "the firing alert is listed with its meter:\n{first}"
    );
    let before = seq_shown(&first, "m1").expect("m1's seq on the page");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let profile = dir.path().join("chromium");
    let second = tokio::task::spawn_blocking(move || render(&url, &profile))
        .await
        .unwrap();
    let after = seq_shown(&second, "m1").expect("m1's seq on the page");
    assert!(
        after > before,
        "the page shows newer readings: seq {before} then {after}"
    );
    // Past the 10 s refresh of buses, sinks and the timeline (`?meter=`, no meters): the
    // meters' trends fetched at load are still drawn, the bus and the timeline still shown.
    let profile = dir.path().join("chromium");
    let url3 = url2.clone();
    let later = tokio::task::spawn_blocking(move || render_after(&url3, &profile, 12_500))
        .await
        .unwrap();
    let m2 = later
        .split("data-meter=\"m2\"")
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .unwrap_or_default();
    assert!(
        m2.contains("<polyline"),
        "m2's sparklines after the 10 s refresh:\n{later}"
    );
    assert!(
        later.contains("data-bus=\"b\"") && later.contains("FrequencyHigh firing"),
        "the bus and the timeline after the 10 s refresh:\n{later}"
    );
}
