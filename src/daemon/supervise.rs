//! Supervision: every long-lived task (buses, sinks, notifiers, the alert engine, the group
//! commit, HTTP) runs under [`supervise`], which starts it again with back-off if it ends
//! before it was told to stop (it returned, panicked where panics unwind, or was aborted).
//! Each is registered in [`Tasks`] (in the live state) under its name, with its restarts (`/metrics`) and a way to
//! abort the running instance (tests kill each kind through it).

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{sync::watch, task::JoinHandle};
use tracing::{error, info};

use crate::{backoff::Backoff, state::Tasks};

/// A task that ran this long before it ended is treated as healthy: its back-off starts over.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// Run the task `start` makes, named `name`, until `stop` turns true; if it ends before, log
/// it at ERROR and start it again after a back-off (0.5 s doubling to 30 s, from 0.5 s again
/// once an instance ran for a minute).
pub fn supervise<F, Fut>(
    name: String,
    tasks: Arc<Tasks>,
    stop: watch::Receiver<bool>,
    mut start: F,
) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut backoff = Backoff::default();
        let mut stop = stop;
        loop {
            let started = Instant::now();
            let instance = tokio::spawn(start());
            tasks.started(&name, instance.abort_handle());
            let ended = instance.await;
            tasks.ended(&name);
            if *stop.borrow() {
                break;
            }
            if started.elapsed() >= HEALTHY_AFTER {
                backoff.reset();
            }
            let why = match ended {
                Ok(()) => "returned".to_string(),
                Err(e) if e.is_cancelled() => "aborted".to_string(),
                Err(e) => e.to_string(),
            };
            let delay = backoff.next_delay();
            error!(task = %name, reason = %why, restart_in = ?delay, "task ended unexpectedly; starting it again");
            tasks.restarted(&name);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                r = stop.wait_for(|s| *s) => {
                    if r.is_ok() {
                        break;
                    }
                }
            }
            info!(task = %name, "task started again");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn a_task_that_returns_panics_or_is_aborted_is_started_again_until_stopped() {
        let runs = Arc::new(AtomicU32::new(0));
        let tasks = Arc::new(Tasks::default());
        let (stop_tx, stop) = watch::channel(false);
        let (r, s) = (runs.clone(), stop.clone());
        let task = supervise("bus b".into(), tasks.clone(), stop, move || {
            let n = r.fetch_add(1, Ordering::SeqCst);
            let mut s = s.clone();
            async move {
                match n {
                    0 => {}
                    1 => panic!("a bug in the task"),
                    _ => {
                        let _ = s.wait_for(|stop| *stop).await;
                    }
                }
            }
        });
        // Returned, then panicked: started again after 0.5 s and 1 s.
        tokio::time::timeout(Duration::from_secs(5), async {
            while runs.load(Ordering::SeqCst) < 3 || tasks.running().is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("restarted twice");
        assert!(tasks.abort("bus b"), "a running instance to abort");
        tokio::time::timeout(Duration::from_secs(5), async {
            while runs.load(Ordering::SeqCst) < 4 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("started again after the abort");
        assert_eq!(tasks.restarts()["bus b"], 3);
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops when told")
            .unwrap();
        assert_eq!(
            runs.load(Ordering::SeqCst),
            4,
            "not started again once stopped"
        );
    }
}
