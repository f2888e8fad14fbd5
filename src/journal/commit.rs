//! Group commit: every `journal.fsync` the journal's buffer is handed to its file and fsynced
//! (and every `journal.cursor_sync` moved cursors are persisted), on a blocking thread; a disk that refused writes is tried
//! again from here (see the module doc). In a task of its own, so nothing else (a reload
//! waiting for a sink to flush) can stretch the power-loss window.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;
use tracing::{error, info};

use super::{Journal, JournalError};

/// Run until `stop` turns true (or its sender is gone). The caller syncs once more after it.
pub async fn run(log: Arc<Journal>, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = stop.changed() => {
                if r.is_err() || *stop.borrow() {
                    break;
                }
                continue;
            }
        }
        let log = log.clone();
        let r = tokio::task::spawn_blocking(move || log.commit())
            .await
            .unwrap_or_else(|e| Err(JournalError::Task(e.to_string())));
        match (&r, failing) {
            (Err(e), false) => error!(error = %e, "journal sync failed"),
            (Ok(()), true) => info!("journal sync works again"),
            _ => {}
        }
        failing = r.is_err();
    }
}
