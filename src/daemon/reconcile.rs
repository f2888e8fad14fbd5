//! Reconciling what runs with what the config wants, for buses, sinks and notifiers alike: an
//! unchanged one keeps running, a changed one is stopped and started with its new settings, a
//! removed one is stopped, a new one is started.

use std::{collections::BTreeMap, fmt::Display};

use tokio::{sync::watch, task::JoinHandle};
use tracing::error;

/// A task with its own stop signal and the settings it was started with.
pub struct Running<C> {
    pub config: C,
    pub stop: watch::Sender<bool>,
    pub task: JoinHandle<()>,
}

impl<C> Running<C> {
    /// Tell it to stop and wait until it has (a sink flushes for a few seconds first).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            error!(error = %e, "task failed while stopping");
        }
    }
}

/// What a reconciliation did, for the reload's log line.
#[derive(Debug, Default)]
pub struct Changes {
    pub kept: usize,
    pub started: Vec<String>,
    pub restarted: Vec<String>,
    pub stopped: Vec<String>,
}

/// Make `running` match `wanted`. `what` prefixes names in `changes` ("sink mqtt"); `start`
/// starts one; `removed` is told of each one that is gone for good; `restart_all` restarts
/// even unchanged ones (a setting they share changed).
pub async fn reconcile<K, C>(
    running: &mut BTreeMap<K, Running<C>>,
    wanted: BTreeMap<K, C>,
    what: &str,
    restart_all: bool,
    changes: &mut Changes,
    mut start: impl FnMut(&K, C) -> Running<C>,
    mut removed: impl FnMut(&K),
) where
    K: Ord + Clone + Display,
    C: PartialEq,
{
    let label = |k: &K| {
        if what.is_empty() {
            k.to_string()
        } else {
            format!("{what} {k}")
        }
    };
    let names: Vec<K> = running.keys().cloned().collect();
    let mut restarted = Vec::new();
    for name in names {
        let same = !restart_all
            && wanted
                .get(&name)
                .is_some_and(|c| running.get(&name).is_some_and(|r| r.config == *c));
        if same {
            changes.kept += 1;
            continue;
        }
        if let Some(r) = running.remove(&name) {
            r.stop().await;
        }
        if wanted.contains_key(&name) {
            changes.restarted.push(label(&name));
            restarted.push(name);
        } else {
            removed(&name);
            changes.stopped.push(label(&name));
        }
    }
    for (name, c) in wanted {
        if let std::collections::btree_map::Entry::Vacant(slot) = running.entry(name.clone()) {
            if !restarted.contains(&name) {
                changes.started.push(label(&name));
            }
            slot.insert(start(&name, c));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(config: u32) -> Running<u32> {
        let (stop, mut rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let _ = rx.wait_for(|s| *s).await;
        });
        Running { config, stop, task }
    }

    #[tokio::test]
    async fn unchanged_ones_keep_running_changed_ones_restart_and_the_rest_start_or_stop() {
        let mut running: BTreeMap<String, Running<u32>> = [("a", 1), ("b", 2), ("c", 3)]
            .into_iter()
            .map(|(k, c)| (k.to_string(), idle(c)))
            .collect();
        let wanted: BTreeMap<String, u32> = [("a", 1), ("b", 20), ("d", 4)]
            .into_iter()
            .map(|(k, c)| (k.to_string(), c))
            .collect();
        let mut changes = Changes::default();
        let mut removed = Vec::new();
        reconcile(
            &mut running,
            wanted,
            "bus",
            false,
            &mut changes,
            |_, c| idle(c),
            |k| removed.push(k.clone()),
        )
        .await;
        assert_eq!(changes.kept, 1);
        assert_eq!(changes.restarted, ["bus b"]);
        assert_eq!(changes.started, ["bus d"]);
        assert_eq!(changes.stopped, ["bus c"]);
        assert_eq!(removed, ["c"]);
        let now: Vec<(String, u32)> = running.iter().map(|(k, r)| (k.clone(), r.config)).collect();
        assert_eq!(now, [("a".into(), 1), ("b".into(), 20), ("d".into(), 4)]);
    }
}
