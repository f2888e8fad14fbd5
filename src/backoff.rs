//! Retrying a far end that failed (a broker, a database, an alert receiver): pure, time is
//! the caller's.

use std::time::Duration;

/// Exponential back-off between attempts: 0.5 s doubling to 30 s.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: Duration::from_millis(500),
        }
    }
}

impl Backoff {
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(30));
        d
    }

    pub fn reset(&mut self) {
        *self = Backoff::default();
    }
}
