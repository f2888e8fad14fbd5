//! A notifier's outbox: alert events not yet confirmed by their receiver, kept in a small
//! JSON file in the state directory so an event raised while the uplink is down (or just
//! before a crash) is delivered when it can be. Events are rare, so the whole file is
//! rewritten atomically on each change; the reading journal's segment machinery would be
//! overkill here.
//!
//! The file is written before the engine's own state, so a crash in between repeats an
//! event rather than losing it: delivery is at least once.

use std::{
    collections::VecDeque,
    path::PathBuf,
    sync::{Mutex, MutexGuard},
};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tracing::{error, info, warn};

use super::rules::Alert;
use crate::{
    failing::{Change, FailingSince},
    files::write_atomically,
};

/// At most this many events wait; beyond it the oldest are dropped (and logged): a receiver
/// gone for weeks must not grow the file without bound.
const MAX_PENDING: usize = 10_000;

#[derive(Default, Serialize, Deserialize)]
struct Saved {
    next_id: u64,
    events: VecDeque<(u64, Alert)>,
}

pub struct Outbox {
    pub name: String,
    path: Option<PathBuf>,
    inner: Mutex<Saved>,
    changed: Notify,
    /// Since when its notifier has failed to deliver, if it is failing.
    pub failing: FailingSince,
    /// Writing its file fails (a full disk): logged when it starts and when it ends.
    persist_failing: FailingSince,
}

impl Outbox {
    /// The outbox `name` under `dir`, with what a previous run left in it. A damaged file is
    /// set aside (renamed `.bad`) and logged; the outbox starts empty.
    pub fn open(dir: &std::path::Path, name: &str) -> Outbox {
        let path = dir.join(format!("outbox-{name}.json"));
        let saved = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Saved>(&bytes) {
                Ok(s) => s,
                Err(e) => {
                    let bad = path.with_extension("json.bad");
                    error!(file = %path.display(), error = %e, set_aside = %bad.display(), "alert outbox damaged; starting it empty");
                    let _ = std::fs::rename(&path, &bad);
                    Saved::default()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Saved::default(),
            Err(e) => {
                error!(file = %path.display(), error = %e, "cannot read the alert outbox; starting it empty");
                Saved::default()
            }
        };
        Outbox {
            name: name.to_string(),
            path: Some(path),
            inner: Mutex::new(saved),
            changed: Notify::new(),
            failing: FailingSince::default(),
            persist_failing: FailingSince::default(),
        }
    }

    /// An outbox that lives in memory only (no usable state directory).
    pub fn memory(name: &str) -> Outbox {
        Outbox {
            name: name.to_string(),
            path: None,
            inner: Mutex::new(Saved::default()),
            changed: Notify::new(),
            failing: FailingSince::default(),
            persist_failing: FailingSince::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Saved> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn persist(&self, s: &Saved) {
        let Some(path) = &self.path else { return };
        let write = serde_json::to_vec(s)
            .map_err(std::io::Error::other)
            .and_then(|b| write_atomically(path, &b));
        match self.persist_failing.record(&write) {
            Change::Failing => {
                error!(file = %path.display(), error = %self.persist_failing.reason().unwrap_or_default(), "cannot write the alert outbox; events are kept in memory and written when it can be")
            }
            Change::Recovered => info!(file = %path.display(), "alert outbox written again"),
            Change::Same => {}
        }
    }

    pub fn push(&self, events: &[Alert]) {
        if events.is_empty() {
            return;
        }
        {
            let mut g = self.lock();
            for a in events {
                let id = g.next_id;
                g.next_id += 1;
                g.events.push_back((id, a.clone()));
            }
            let over = g.events.len().saturating_sub(MAX_PENDING);
            if over > 0 {
                g.events.drain(..over);
                warn!(outbox = %self.name, dropped = over, "alert outbox full: oldest events dropped");
            }
            self.persist(&g);
        }
        self.changed.notify_waiters();
        self.changed.notify_one();
    }

    /// Events waiting, oldest first, with their ids.
    pub fn pending(&self) -> Vec<(u64, Alert)> {
        self.lock().events.iter().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.lock().events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The receiver confirmed these.
    pub fn ack(&self, ids: &[u64]) {
        let mut g = self.lock();
        let before = g.events.len();
        g.events.retain(|(id, _)| !ids.contains(id));
        if g.events.len() != before {
            self.persist(&g);
        }
    }

    /// Wait until something is pushed.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// Wait until `outbox`, if there is one, has something new; never, if there is none.
pub async fn changed(outbox: &Option<std::sync::Arc<Outbox>>) {
    match outbox {
        Some(o) => o.changed().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::rules::State;
    use std::{collections::BTreeMap, time::SystemTime};

    fn alert(name: &str) -> Alert {
        Alert {
            labels: BTreeMap::from([("alertname".to_string(), name.to_string())]),
            state: State::Firing,
            value: 1.0,
            threshold: 0.0,
            since: SystemTime::UNIX_EPOCH,
            at: Some(SystemTime::UNIX_EPOCH),
            summary: String::new(),
            until: None,
        }
    }

    #[test]
    fn unconfirmed_events_survive_a_reopen_and_confirmed_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open(dir.path(), "am");
        o.push(&[alert("A"), alert("B"), alert("C")]);
        let ids: Vec<u64> = o.pending().iter().map(|(id, _)| *id).collect();
        o.ack(&ids[..1]);
        drop(o);
        let again = Outbox::open(dir.path(), "am");
        let names: Vec<String> = again
            .pending()
            .iter()
            .map(|(_, a)| a.name().to_string())
            .collect();
        assert_eq!(names, ["B", "C"]);
        again.push(&[alert("D")]);
        let last = again.pending().last().map(|(id, _)| *id);
        assert_eq!(last, Some(3), "ids keep counting across a reopen");
    }

    #[test]
    fn a_damaged_outbox_file_is_set_aside_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("outbox-am.json"), b"{not json").unwrap();
        let o = Outbox::open(dir.path(), "am");
        assert!(o.is_empty());
        assert!(dir.path().join("outbox-am.json.bad").exists());
    }
}
