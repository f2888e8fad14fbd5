//! Rate limits per command: a token bucket each, refilled continuously. Time passed in.

use std::{collections::HashMap, time::Instant};

use super::request::{Command, Refusal};

#[derive(Debug)]
pub struct RateLimit {
    per_minute: HashMap<Command, u32>,
    buckets: HashMap<Command, (f64, Instant)>,
}

impl RateLimit {
    /// `per_minute` per command; a command not listed is not limited.
    pub fn new(per_minute: HashMap<Command, u32>) -> RateLimit {
        RateLimit {
            per_minute,
            buckets: HashMap::new(),
        }
    }

    /// Take one request of `command` at `now`, or refuse it.
    pub fn take(&mut self, command: Command, now: Instant) -> Result<(), Refusal> {
        let Some(&limit) = self.per_minute.get(&command) else {
            return Ok(());
        };
        let full = f64::from(limit.max(1));
        let (tokens, last) = self.buckets.entry(command).or_insert((full, now));
        let refill = now.saturating_duration_since(*last).as_secs_f64() * full / 60.0;
        *tokens = (*tokens + refill).min(full);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Refusal::RateLimited {
                command: command.as_str(),
                per_minute: limit,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_is_held_to_the_limit_and_refills_over_the_minute() {
        let t0 = Instant::now();
        let mut l = RateLimit::new([(Command::Relay, 3)].into());
        for _ in 0..3 {
            l.take(Command::Relay, t0).unwrap();
        }
        assert!(matches!(
            l.take(Command::Relay, t0),
            Err(Refusal::RateLimited { per_minute: 3, .. })
        ));
        assert!(
            l.take(Command::Relay, t0 + Duration::from_secs(10))
                .is_err(),
            "a third of a token"
        );
        l.take(Command::Relay, t0 + Duration::from_secs(21))
            .unwrap();
        for _ in 0..100 {
            l.take(Command::Status, t0).unwrap();
        }
    }
}
