//! The poll scheduler of one bus: pure logic, time passed in.
//!
//! Every (meter, point group) has a due time; the bus task asks for the next due job, runs it
//! and reports the outcome. A meter is polled by one job at a time. Missed slots are skipped,
//! not caught up in a burst.
//!
//! Back-off follows cost, not just availability: after any poll in which a request timed out
//! or came back garbled, the meter is held for the current back-off period (doubling while it
//! goes on, up to `backoff_max`; a clean poll resets it). So a dead meter, and equally a meter
//! that answers only now and then, costs at most one failing poll per period and never
//! stalls the bus. After `offline_after` consecutive polls without an answer a meter is
//! offline; its polls while held are probes (no retries).

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    time::{Duration, Instant},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub offline_after: u32,
    pub backoff: Duration,
    pub backoff_max: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Job {
    pub meter: usize,
    pub group: usize,
    pub due: Instant,
    /// The meter is offline and this is its probe: no retries, stop at the first failure.
    pub probe: bool,
}

/// How a poll went. An exception reply is an answer: the meter is alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The meter answered at least one request (values or an exception).
    pub answered: bool,
    /// Some request timed out or came back garbled: the poll cost line time for nothing.
    pub troubled: bool,
}

impl Outcome {
    pub const CLEAN: Outcome = Outcome {
        answered: true,
        troubled: false,
    };
    pub const SILENT: Outcome = Outcome {
        answered: false,
        troubled: true,
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Online,
    Offline,
}

#[derive(Debug, Clone)]
struct Health {
    busy: bool,
    failures: u32,
    online: Option<bool>,
    /// The meter is held (its regular polls skipped) until then.
    hold_until: Option<Instant>,
    backoff: Duration,
    /// Jobs that came due while the meter was busy.
    waiting: Vec<(Instant, usize)>,
}

#[derive(Debug)]
pub struct Scheduler {
    queue: BinaryHeap<Reverse<(Instant, usize, usize)>>,
    intervals: Vec<Vec<Duration>>,
    health: Vec<Health>,
    policy: Policy,
    skipped: u64,
}

impl Scheduler {
    /// `intervals[meter][group]`; every group is first due at `now`.
    pub fn new(intervals: Vec<Vec<Duration>>, policy: Policy, now: Instant) -> Scheduler {
        let mut queue = BinaryHeap::new();
        for (m, groups) in intervals.iter().enumerate() {
            for g in 0..groups.len() {
                queue.push(Reverse((now, m, g)));
            }
        }
        let health = intervals
            .iter()
            .map(|_| Health {
                busy: false,
                failures: 0,
                online: None,
                hold_until: None,
                backoff: policy.backoff,
                waiting: Vec::new(),
            })
            .collect();
        Scheduler {
            queue,
            intervals,
            health,
            policy,
            skipped: 0,
        }
    }

    /// When the earliest queued job is due.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Polls skipped because their meter was offline.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    pub fn is_online(&self, meter: usize) -> Option<bool> {
        self.health[meter].online
    }

    /// The next job due at `now`, if any.
    pub fn pop_due(&mut self, now: Instant) -> Option<Job> {
        while let Some(&Reverse((due, m, g))) = self.queue.peek() {
            if due > now {
                return None;
            }
            self.queue.pop();
            let h = &mut self.health[m];
            if h.busy {
                h.waiting.push((due, g));
                continue;
            }
            let probe = h.online == Some(false);
            if h.hold_until.is_some_and(|t| t > now) {
                self.skipped += 1;
                let next = next_slot(due, self.intervals[m][g], now);
                self.queue.push(Reverse((next, m, g)));
                continue;
            }
            h.busy = true;
            return Some(Job {
                meter: m,
                group: g,
                due,
                probe,
            });
        }
        None
    }

    /// Whether a job is polling `meter`.
    pub fn is_busy(&self, meter: usize) -> bool {
        self.health.get(meter).is_some_and(|h| h.busy)
    }

    /// Whether a job is due at `now` (its meter may still be busy).
    pub fn has_due(&self, now: Instant) -> bool {
        self.next_wakeup().is_some_and(|t| t <= now)
    }

    /// Take `meter` for an on-demand job now, unless a job is polling it: a meter is never
    /// polled by two jobs at once. Its schedule does not move.
    pub fn claim(&mut self, meter: usize) -> bool {
        match self.health.get_mut(meter) {
            Some(h) if !h.busy => {
                h.busy = true;
                true
            }
            _ => false,
        }
    }

    /// Give `meter` back after an on-demand job: jobs that came due meanwhile run now. Its
    /// health is left to the scheduled polls.
    pub fn release(&mut self, meter: usize) {
        if let Some(h) = self.health.get_mut(meter) {
            h.busy = false;
            for (due, g) in h.waiting.drain(..) {
                self.queue.push(Reverse((due, meter, g)));
            }
        }
    }

    /// Report a job's outcome; returns the meter's availability change, if any.
    pub fn complete(&mut self, job: Job, outcome: Outcome, now: Instant) -> Option<Transition> {
        let interval = self.intervals[job.meter][job.group];
        self.queue.push(Reverse((
            next_slot(job.due, interval, now),
            job.meter,
            job.group,
        )));
        let policy = self.policy;
        let h = &mut self.health[job.meter];
        h.busy = false;
        for (due, g) in h.waiting.drain(..) {
            self.queue.push(Reverse((due, job.meter, g)));
        }
        if outcome.troubled {
            h.hold_until = Some(later(now, h.backoff));
            h.backoff = h.backoff.saturating_mul(2).min(policy.backoff_max);
        } else {
            h.hold_until = None;
            h.backoff = policy.backoff;
        }
        if outcome.answered {
            h.failures = 0;
            if h.online != Some(true) {
                h.online = Some(true);
                return Some(Transition::Online);
            }
            return None;
        }
        h.failures = h.failures.saturating_add(1);
        if h.online != Some(false) && h.failures >= policy.offline_after {
            h.online = Some(false);
            return Some(Transition::Offline);
        }
        None
    }
}

/// `t + d`, or as late as an `Instant` goes: never an overflow panic, whatever a config says.
pub fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d).unwrap_or_else(|| {
        // The latest instant within reach: halve the step until it fits.
        let mut step = d;
        let mut end = t;
        while !step.is_zero() {
            if let Some(e) = end.checked_add(step) {
                end = e;
            } else {
                step /= 2;
            }
        }
        end
    })
}

/// The first slot after `due` (in steps of `interval`) that is later than `now`.
fn next_slot(due: Instant, interval: Duration, now: Instant) -> Instant {
    // A zero interval (config bounds forbid it) would requeue a job at once for ever.
    let interval = interval.max(Duration::from_millis(1));
    let next = later(due, interval);
    if next > now {
        return next;
    }
    let step = interval.as_nanos();
    let behind = now.duration_since(due).as_nanos() / step;
    let skip = step.saturating_mul(behind + 1);
    let skip = Duration::new(
        u64::try_from(skip / 1_000_000_000).unwrap_or(u64::MAX),
        (skip % 1_000_000_000) as u32,
    );
    let slot = later(due, skip);
    // Past the end of time (a clock gone mad): one interval from now.
    if slot > now {
        slot
    } else {
        later(now, interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn policy() -> Policy {
        Policy {
            offline_after: 3,
            backoff: 10 * S,
            backoff_max: 40 * S,
        }
    }

    type Run = (Vec<u32>, Vec<(f64, usize, Transition)>, Vec<Vec<f64>>);

    /// Runs a virtual bus for `secs` seconds in 100 ms steps; `answers(meter, t)` says whether
    /// the meter answers at virtual second `t`. Returns polls per meter and transitions.
    fn simulate(
        intervals: Vec<Vec<Duration>>,
        secs: u64,
        answers: impl Fn(usize, f64) -> bool,
    ) -> Run {
        let t0 = Instant::now();
        let n = intervals.len();
        let mut s = Scheduler::new(intervals, policy(), t0);
        let mut polls = vec![0; n];
        let mut times = vec![Vec::new(); n];
        let mut transitions = Vec::new();
        for step in 0..secs * 10 {
            let now = t0 + Duration::from_millis(step * 100);
            let t = step as f64 / 10.0;
            while let Some(job) = s.pop_due(now) {
                polls[job.meter] += 1;
                times[job.meter].push(t);
                let outcome = if answers(job.meter, t) {
                    Outcome::CLEAN
                } else {
                    Outcome::SILENT
                };
                if let Some(tr) = s.complete(job, outcome, now) {
                    transitions.push((t, job.meter, tr));
                }
            }
        }
        (polls, transitions, times)
    }

    #[test]
    fn an_on_demand_job_never_runs_beside_a_scheduled_one_and_does_not_move_the_schedule() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(vec![vec![10 * S], vec![10 * S]], policy(), t0);
        let job = s.pop_due(t0).unwrap();
        assert!(!s.claim(job.meter), "meter {} is being polled", job.meter);
        let other = 1 - job.meter;
        assert!(s.claim(other), "the other meter is free");
        // Its scheduled poll comes due while it is claimed: it waits, then runs on release.
        assert_eq!(s.pop_due(t0), None);
        s.release(other);
        let next = s.pop_due(t0).unwrap();
        assert_eq!((next.meter, next.due), (other, t0));
        assert!(!s.claim(99), "no such meter");
    }

    #[test]
    fn every_group_is_polled_on_its_own_interval() {
        let (polls, _, _) = simulate(vec![vec![S, 10 * S]], 60, |_, _| true);
        assert_eq!(polls[0], 60 + 6);
    }

    #[test]
    fn a_meter_that_stops_answering_goes_offline_after_three_failed_polls() {
        let (_, tr, _) = simulate(vec![vec![S], vec![S]], 60, |m, t| m == 0 || t < 5.0);
        // Failing polls at 5, 15 (held 10 s) and 35 s (held 20 s).
        assert_eq!(
            tr,
            [
                (0.0, 0, Transition::Online),
                (0.0, 1, Transition::Online),
                (35.0, 1, Transition::Offline)
            ]
        );
    }

    #[test]
    fn a_failing_meter_costs_at_most_one_poll_per_backoff_period_doubling() {
        let (_, _, times) = simulate(vec![vec![S]], 120, |_, _| false);
        assert_eq!(times[0], [0.0, 10.0, 30.0, 70.0, 110.0]);
    }

    #[test]
    fn a_meter_that_answers_only_now_and_then_is_held_back_too() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(vec![vec![S]], policy(), t0);
        let mut polls = 0;
        let mut answered = false;
        for step in 0..600 {
            let now = t0 + Duration::from_millis(step * 100);
            while let Some(job) = s.pop_due(now) {
                polls += 1;
                answered = !answered;
                let outcome = Outcome {
                    answered,
                    troubled: true,
                };
                s.complete(job, outcome, now);
            }
        }
        // 60 s at a 1 s interval would be 60 polls; held 10, 20, then 40 s: at 0, 10, 30 s.
        assert_eq!(polls, 3);
        assert_eq!(
            s.is_online(0),
            Some(true),
            "it answers, so it is not offline"
        );
    }

    #[test]
    fn a_clean_poll_ends_the_hold_and_resets_the_backoff() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(vec![vec![S]], policy(), t0);
        let job = s.pop_due(t0).unwrap();
        s.complete(job, Outcome::SILENT, t0);
        assert_eq!(s.pop_due(t0 + 5 * S), None, "held");
        let job = s.pop_due(t0 + 10 * S).unwrap();
        s.complete(job, Outcome::CLEAN, t0 + 10 * S);
        assert!(s.pop_due(t0 + 11 * S).is_some(), "back to its interval");
    }

    #[test]
    fn other_meters_keep_their_rate_while_one_is_silent() {
        let (polls, _, _) = simulate(vec![vec![S], vec![S], vec![S]], 60, |m, _| m != 1);
        assert_eq!(polls[0], 60);
        assert_eq!(polls[2], 60);
        assert!(polls[1] <= 8, "{}", polls[1]);
    }

    #[test]
    fn a_meter_that_answers_again_comes_back_online_at_its_next_probe() {
        let (_, tr, _) = simulate(vec![vec![S]], 120, |_, t| !(3.0..60.0).contains(&t));
        // Failing polls at 3, 13, 33 s (offline), next probe at 73 s answers.
        assert_eq!(
            tr,
            [
                (0.0, 0, Transition::Online),
                (33.0, 0, Transition::Offline),
                (73.0, 0, Transition::Online)
            ]
        );
    }

    #[test]
    fn a_meter_is_never_polled_twice_at_once() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(vec![vec![S, S]], policy(), t0);
        let first = s.pop_due(t0).unwrap();
        assert_eq!(s.pop_due(t0), None);
        s.complete(first, Outcome::CLEAN, t0);
        let second = s.pop_due(t0).unwrap();
        assert_ne!(first.group, second.group);
    }

    #[test]
    fn missed_slots_are_skipped_not_caught_up_in_a_burst() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(vec![vec![S]], policy(), t0);
        let job = s.pop_due(t0).unwrap();
        s.complete(job, Outcome::CLEAN, t0 + Duration::from_millis(5500));
        assert_eq!(s.next_wakeup(), Some(t0 + 6 * S));
    }

    fn any_duration() -> impl proptest::strategy::Strategy<Value = Duration> {
        use proptest::prelude::*;
        prop_oneof![
            Just(Duration::ZERO),
            Just(Duration::MAX),
            Just(Duration::from_secs(u64::MAX / 2)),
            (0u64..10_000).prop_map(Duration::from_millis),
            any::<u64>().prop_map(Duration::from_secs),
            (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        ]
    }

    proptest::proptest! {
        /// Whatever durations a config or a clock produce, scheduling never panics on time
        /// arithmetic and always knows its next wake-up.
        #[test]
        fn no_duration_makes_time_arithmetic_panic(
            intervals in proptest::collection::vec(proptest::collection::vec(any_duration(), 1..3), 1..3),
            backoff in any_duration(),
            backoff_max in any_duration(),
            steps in proptest::collection::vec((any_duration(), proptest::bool::ANY, proptest::bool::ANY), 1..40),
        ) {
            let t0 = Instant::now();
            let mut s = Scheduler::new(
                intervals,
                Policy { offline_after: 2, backoff, backoff_max },
                t0,
            );
            let mut now = t0;
            for (step, answered, troubled) in steps {
                now = later(now, step);
                let mut jobs = 0;
                while let Some(job) = s.pop_due(now) {
                    s.complete(job, Outcome { answered, troubled }, now);
                    jobs += 1;
                    if jobs > 100 {
                        break;
                    }
                }
                proptest::prop_assert!(s.next_wakeup().is_some());
            }
        }
    }

    #[test]
    fn later_saturates_instead_of_overflowing() {
        let t0 = Instant::now();
        let end = later(t0, Duration::MAX);
        assert!(end > t0);
        assert_eq!(later(end, Duration::from_secs(1)), end, "nothing is later");
        assert_eq!(later(t0, S), t0 + S);
    }
}
