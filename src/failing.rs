//! Whether something that delivers (a sink, a notifier, a file writer) is failing, since when
//! and why: what the SinkUnreachable alert judges, `/api/sinks` shows, and what decides when a
//! failure is worth a log line (when it starts, changes reason, or ends).

use std::sync::Mutex;

/// Since when something (a sink, a notifier) has failed to deliver, if it is failing, and why:
/// what the SinkUnreachable alert judges and `/api/sinks` shows.
#[derive(Debug, Default)]
pub struct FailingSince(Mutex<Option<(std::time::SystemTime, String)>>);

impl FailingSince {
    /// The last attempt failed, for `reason`. Returns true when the reason is new (failing
    /// started, or failing for another reason): the moment to log it.
    pub fn fail(&self, reason: impl Into<String>) -> bool {
        let reason = reason.into();
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match g.as_mut() {
            Some((_, r)) if *r == reason => false,
            Some((_, r)) => {
                *r = reason;
                true
            }
            None => {
                *g = Some((std::time::SystemTime::now(), reason));
                true
            }
        }
    }

    /// Record an attempt's result; says whether it started a failure (or changed its reason)
    /// or ended one, the two moments worth a log line.
    pub fn record<E: std::fmt::Display>(&self, result: &Result<(), E>) -> Change {
        match result {
            Err(e) if self.fail(e.to_string()) => Change::Failing,
            Err(_) => Change::Same,
            Ok(()) if self.since().is_some() => {
                self.ok();
                Change::Recovered
            }
            Ok(()) => Change::Same,
        }
    }

    /// The last attempt worked.
    pub fn ok(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    pub fn since(&self) -> Option<std::time::SystemTime> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(t, _)| *t)
    }

    /// Why it is failing, if it is.
    pub fn reason(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, r)| r.clone())
    }
}

/// What an attempt changed (see [`FailingSince::record`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Failing,
    Recovered,
    Same,
}
