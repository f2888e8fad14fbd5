//! `meterd run` and `meterd validate`: the daemon with its signals, and checking a config.

use super::*;

pub(super) fn validate(path: &Path) -> i32 {
    match config::load(path) {
        Ok(c) => {
            let meters: usize = c.buses.iter().map(|b| b.meters.len()).sum();
            outln!(
                "{}: ok ({} buses, {meters} meters, {} alert rules, {} alert notifiers)",
                path.display(),
                c.buses.len(),
                c.alerts.rules.len(),
                c.alerts.notifiers.len()
            );
            0
        }
        Err(errors) => {
            for e in &errors.0 {
                outln!("{e}");
            }
            EXIT_CONFIG
        }
    }
}

/// A watch that turns true on SIGTERM or Ctrl-C.
pub(super) fn stop_signal() -> anyhow::Result<watch::Receiver<bool>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let _ = tx.send(true);
        // Keep the sender alive so receivers do not see a closed channel.
        std::future::pending::<()>().await;
    });
    Ok(rx)
}

pub(super) async fn run(path: &Path) -> anyhow::Result<i32> {
    // First: a SIGTERM during start-up must still mean a clean stop, and a SIGHUP (whose
    // default action would end the process) a reload.
    let stop = stop_signal()?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    // `systemctl reload` sends SIGHUP: re-read and validate the file, hand the result over.
    let (reload_tx, reloads) = tokio::sync::mpsc::unbounded_channel();
    let path_owned = path.to_path_buf();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!(config = %path_owned.display(), "SIGHUP: reloading the config");
            let p = path_owned.clone();
            let loaded = tokio::task::spawn_blocking(move || config::load(&p))
                .await
                .unwrap_or_else(|e| {
                    Err(config::ConfigErrors(vec![config::ConfigError {
                        file: path_owned.display().to_string(),
                        position: None,
                        key: String::new(),
                        message: format!("loading failed: {e}"),
                    }]))
                });
            if reload_tx.send(loaded).is_err() {
                break;
            }
        }
    });
    meterd::daemon::run(config, Arc::new(LiveState::default()), stop, reloads).await;
    Ok(0)
}
