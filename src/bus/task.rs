//! The task that owns one bus: schedules every meter's point groups, polls them through the
//! bus's protocol, records availability and appends readings to the journal.

use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Instant, SystemTime},
};

use futures::{stream::FuturesUnordered, StreamExt};
use meterd_protocols::{dlt645::Address, profile::Profile};
use tokio::sync::watch;
use tracing::{debug, info, info_span, warn, Instrument};

use super::{
    poll,
    scheduler::{Policy, Scheduler, Transition},
    BusLink, GroupResult, MeterOnBus, PollError, PollTarget,
};
use crate::{
    config::BusConfig,
    journal::Journal,
    reading::{Reading, Values},
    state::{LiveState, OnDemandKind, OnDemandRead, OnDemandResult},
};

struct MeterRt {
    id: Arc<str>,
    unit: u8,
    address: Option<Address>,
    server_address: Option<meterd_protocols::dlt698::ServerAddress>,
    profile: Arc<Profile>,
    profile_name: Arc<str>,
}

/// What a link is busy with: a scheduled poll, or an on-demand read of some groups of a meter.
enum Work {
    Scheduled(super::scheduler::Job),
    OnDemand {
        meter: usize,
        groups: Vec<usize>,
        request: OnDemandRead,
    },
}

/// The meter and groups an on-demand read names, or why it names none.
fn on_demand_groups(meters: &[MeterRt], r: &OnDemandRead) -> Result<(usize, Vec<usize>), String> {
    let meter = meters
        .iter()
        .position(|m| *m.id == r.meter)
        .ok_or_else(|| format!("no meter {:?} on this bus", r.meter))?;
    let groups = &meters[meter].profile.groups;
    let with = |flag: fn(&meterd_protocols::profile::Group) -> bool, what: &str| {
        groups
            .iter()
            .position(flag)
            .map(|g| (meter, vec![g]))
            .ok_or_else(|| {
                format!(
                    "profile {} reads no {what}: only DL/T 645 and 698.45 meters have one",
                    meters[meter].profile.name
                )
            })
    };
    match &r.kind {
        OnDemandKind::SyncClock => with(|g| g.clock, "clock"),
        OnDemandKind::Recollect { .. } => with(|g| g.daily_freeze, "daily freeze"),
        // Any group's target carries the meter's address; the first will do.
        OnDemandKind::Relay { .. } if !groups.is_empty() => Ok((meter, vec![0])),
        OnDemandKind::Relay { .. } => Err("the meter's profile has no groups".into()),
        // Identifiers alone: any group's target carries the meter's address.
        OnDemandKind::Read {
            group: None,
            identifiers,
        } if !identifiers.is_empty() && !groups.is_empty() => Ok((meter, vec![0])),
        OnDemandKind::Read { group: None, .. } => Ok((meter, (0..groups.len()).collect())),
        OnDemandKind::Read {
            group: Some(name), ..
        } => groups
            .iter()
            .position(|g| &g.name == name)
            .map(|g| (meter, vec![g]))
            .ok_or_else(|| {
                format!(
                    "profile {} has no group {name:?}; it has {}",
                    meters[meter].profile.name,
                    groups
                        .iter()
                        .map(|g| g.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }),
    }
}

/// Readings that carry their own time (daily freezes) into the journal.
fn append_dated(log: &Journal, m: &MeterRt, bus: &Arc<str>, dated: &[(SystemTime, super::Values)]) {
    for (when, values) in dated {
        log.append(Reading {
            meter: m.id.clone(),
            bus: bus.clone(),
            profile: m.profile_name.clone(),
            ts: *when,
            seq: 0,
            values: values.clone().into(),
            on_demand: false,
        });
    }
}

/// The first waiting on-demand read whose meter is free (claimed for it).
fn take_on_demand(
    pending: &mut VecDeque<OnDemandRead>,
    sched: &mut Scheduler,
    meters: &[MeterRt],
) -> Option<Work> {
    let i = pending
        .iter()
        .position(|r| on_demand_groups(meters, r).is_ok_and(|(m, _)| !sched.is_busy(m)))?;
    let request = pending.remove(i)?;
    let (meter, groups) = on_demand_groups(meters, &request).ok()?;
    if !sched.claim(meter) {
        pending.push_front(request);
        return None;
    }
    Some(Work::OnDemand {
        meter,
        groups,
        request,
    })
}

/// Every meter's every group as polls see it, built once (see [`PollTarget`]).
fn targets(bus: &BusConfig) -> Vec<Vec<Arc<PollTarget>>> {
    let time_sync = bus
        .time_sync
        .map(|every| super::dlt645::TimeSync::new(every, bus.time_sync_max));
    let mut plans = super::Plans::default();
    bus.meters
        .iter()
        .map(|m| {
            PollTarget::for_meter_sharing(
                MeterOnBus {
                    profile: &m.profile,
                    unit: m.unit,
                    address: m.address,
                    server_address: m.server_address.clone(),
                    frame_gap: bus.frame_gap,
                    max_registers: bus.max_registers,
                    max_gap: bus.max_gap,
                    utc_offset_s: bus.utc_offset_s,
                    time_sync: time_sync.clone(),
                },
                &mut plans,
            )
        })
        .collect()
}

/// The task that owns one bus. Runs until `shutdown` turns true.
pub async fn run_bus(
    bus: BusConfig,
    log: Arc<Journal>,
    live: Arc<LiveState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let span = info_span!("bus", bus = %bus.name);
    async move {
        let bus_name: Arc<str> = bus.name.as_str().into();
        let meters: Vec<MeterRt> = bus
            .meters
            .iter()
            .map(|m| MeterRt {
                id: m.id.as_str().into(),
                unit: m.unit,
                address: m.address,
                server_address: m.server_address.clone(),
                profile: m.profile.clone(),
                profile_name: m.profile.name.as_str().into(),
            })
            .collect();
        let targets = targets(&bus);
        for m in &meters {
            live.update(&m.id, |s| s.bus = bus_name.clone());
        }
        let intervals = bus
            .meters
            .iter()
            .map(|m| m.groups.iter().map(|g| g.interval).collect())
            .collect();
        let policy = Policy {
            offline_after: bus.offline_after,
            backoff: bus.backoff,
            backoff_max: bus.backoff_max,
        };
        let mut sched = Scheduler::new(intervals, policy, Instant::now());
        let mut idle: Vec<BusLink> = (0..bus.concurrency).map(|_| BusLink::new(&bus)).collect();
        let mut inflight = FuturesUnordered::new();
        let mut od_rx = live.on_demand_queue(&bus.name);
        let mut pending: VecDeque<OnDemandRead> = VecDeque::new();
        let mut od_turn = true;
        // The lists of quantity names this bus's readings share (one per point group).
        let mut names = Vec::new();
        // Bus utilisation: busy link time over each 10 s window.
        let mut utilisation_tick = tokio::time::interval(std::time::Duration::from_secs(10));
        utilisation_tick.tick().await;
        let mut window_start = Instant::now();
        let mut window_busy = 0.0;
        live.update_bus(&bus.name, |_| {});
        info!(
            meters = meters.len(),
            protocol = bus.protocol.as_str(),
            "bus started"
        );
        loop {
            // Give way on the daemon's single thread, whatever the branches below do.
            tokio::task::consume_budget().await;
            let now = Instant::now();
            while !idle.is_empty() {
                // On-demand reads go ahead of scheduled polls, but take turns with them when
                // both wait: neither starves the other.
                let on_demand_first = !pending.is_empty() && (od_turn || !sched.has_due(now));
                let work = if on_demand_first {
                    match take_on_demand(&mut pending, &mut sched, &meters) {
                        Some(w) => {
                            od_turn = false;
                            w
                        }
                        None => match sched.pop_due(now) {
                            Some(job) => Work::Scheduled(job),
                            None => break,
                        },
                    }
                } else {
                    match sched.pop_due(now) {
                        Some(job) => {
                            od_turn = true;
                            Work::Scheduled(job)
                        }
                        None => match take_on_demand(&mut pending, &mut sched, &meters) {
                            Some(w) => w,
                            None => break,
                        },
                    }
                };
                let Some(mut link) = idle.pop() else { break };
                let (retries, scheduled_targets, kind) = match &work {
                    Work::Scheduled(job) => (
                        if job.probe { 0 } else { bus.retries },
                        vec![targets[job.meter][job.group].clone()],
                        OnDemandKind::Read {
                            group: None,
                            identifiers: Vec::new(),
                        },
                    ),
                    Work::OnDemand { meter, groups, request } => (
                        bus.retries,
                        groups.iter().map(|g| targets[*meter][*g].clone()).collect(),
                        request.kind.clone(),
                    ),
                };
                // Rare work (identifiers, clock, recollection, relay: DL/T exchanges) is boxed
                // where it runs, like the DL/T polls in `super::poll`, so that its futures do
                // not size every poll in flight.
                let fut = async move {
                    let ts = SystemTime::now();
                    let started = Instant::now();
                    let mut results = Vec::with_capacity(scheduled_targets.len() + 2);
                    let mut relay_state = None;
                    let mut identifiers = Vec::new();
                    for target in &scheduled_targets {
                        match &kind {
                            OnDemandKind::Read { group, identifiers: ids } => {
                                if !ids.is_empty() && identifiers.is_empty() {
                                    identifiers = Box::pin(super::read_identifiers(&mut link, target, ids, retries)).await;
                                }
                                if group.is_some() || ids.is_empty() {
                                    results.push(poll(&mut link, target, retries).await);
                                }
                            }
                            OnDemandKind::SyncClock => {
                                // The clock read before, the setting, and the clock read after.
                                results.push(poll(&mut link, target, retries).await);
                                let set = Box::pin(super::set_clock(&mut link, target, retries)).await;
                                results.push(GroupResult {
                                    errors: set.err().into_iter().collect(),
                                    ..GroupResult::default()
                                });
                                results.push(poll(&mut link, target, retries).await);
                            }
                            OnDemandKind::Recollect { from, to } => results.push(
                                Box::pin(super::recollect(&mut link, target, *from, *to, retries)).await,
                            ),
                            OnDemandKind::Relay { command, creds } => {
                                // Never retried: a trip is not sent twice on a guess.
                                let r = Box::pin(super::relay(&mut link, target, *command, *creds)).await;
                                relay_state = Some(r);
                            }
                        }
                    }
                    (work, link, ts, started.elapsed(), results, relay_state, identifiers)
                };
                // Boxed: a `FuturesUnordered` keeps a stub task with room for one future of
                // its type, so unboxed every bus paid a poll's size (about 1.2 KB) for none.
                inflight.push(Box::pin(fut));
            }
            let wake = sched.next_wakeup();
            tokio::select! {
                Some((work, link, ts, took, mut results, relay_state, identifiers)) = inflight.next() => match work {
                Work::OnDemand { meter, groups, request } => {
                    idle.push(link);
                    sched.release(meter);
                    let m = &meters[meter];
                    let busy = took.as_secs_f64() / bus.concurrency as f64;
                    window_busy += busy;
                    live.update_bus(&bus.name, |b| b.busy_seconds += busy);
                    let mut answer = OnDemandResult { ts: Some(ts), identifiers, ..Default::default() };
                    let offset = |r: &GroupResult| {
                        r.values.iter().find(|(q, _)| &**q == "meter_clock_offset_s").map(|(_, v)| *v)
                    };
                    if let OnDemandKind::Relay { command, .. } = request.kind {
                        match relay_state {
                            Some(Ok(state)) => {
                                answer.relay = Some(state);
                                warn!(meter = %m.id, ?command, open = state.open, "remote relay command carried out");
                            }
                            Some(Err(e)) => {
                                warn!(meter = %m.id, ?command, error = %e, "remote relay command failed");
                                answer.errors.push(format!("relay: {e}"));
                            }
                            None => answer.errors.push("relay: not sent".into()),
                        }
                    } else if let OnDemandKind::Recollect { .. } = request.kind {
                        for r in &results {
                            answer.errors.extend(r.errors.iter().map(|e| format!("daily freeze: {e}")));
                            append_dated(&log, m, &bus_name, &r.dated);
                            answer.freezes.extend(r.dated.iter().cloned());
                        }
                    } else if request.kind == OnDemandKind::SyncClock {
                        let name = groups.first().map_or("clock", |g| m.profile.groups[*g].name.as_str());
                        answer.clock_before = results.first().and_then(offset);
                        answer.clock_after = results.get(2).and_then(offset);
                        for (step, r) in ["before", "setting", "after"].iter().zip(&results) {
                            answer.errors.extend(r.errors.iter().map(|e| format!("{name} {step}: {e}")));
                        }
                        if let Some(after) = results.pop().filter(|_| results.len() == 2) {
                            answer.values.extend(after.values);
                        }
                    } else {
                        for (g, r) in groups.iter().zip(results) {
                            let name = &m.profile.groups[*g].name;
                            answer.errors.extend(r.errors.iter().map(|e| format!("{name}: {e}")));
                            answer.values.extend(r.values);
                        }
                    }
                    if !answer.values.is_empty() {
                        let stored = log.append(Reading {
                            meter: m.id.clone(),
                            bus: bus_name.clone(),
                            profile: m.profile_name.clone(),
                            ts,
                            seq: 0,
                            values: answer.values.clone().into(),
                            on_demand: true,
                        });
                        answer.seq = Some(stored.seq);
                        live.publish_reading(stored);
                    }
                    info!(meter = %m.id, values = answer.values.len(), errors = answer.errors.len(), "on-demand read");
                    let _ = request.reply.send(answer);
                }
                Work::Scheduled(job) => {
                    let mut result = results.pop().unwrap_or_default();
                    idle.push(link);
                    let m = &meters[job.meter];
                    let busy = took.as_secs_f64() / bus.concurrency as f64;
                    window_busy += busy;
                    live.update_bus(&bus.name, |b| b.busy_seconds += busy);
                    let outcome = result.outcome();
                    let transition = sched.complete(job, outcome, Instant::now());
                    append_dated(&log, m, &bus_name, &result.dated);
                    let stored = (!result.values.is_empty()).then(|| {
                        log.append(Reading {
                            meter: m.id.clone(),
                            bus: bus_name.clone(),
                            profile: m.profile_name.clone(),
                            ts,
                            seq: 0,
                            values: Values::shared(std::mem::take(&mut result.values), &mut names),
                            on_demand: false,
                        })
                    });
                    let group = &m.profile.groups[job.group].name;
                    record(&live, m, &result, transition, (job.group, group), took, stored.clone());
                    if let Some(stored) = stored {
                        live.publish_reading(stored);
                    }
                }
                },
                _ = sleep_until(wake), if inflight.len() < bus.concurrency => {}
                Some(request) = od_rx.recv(), if pending.len() < crate::state::ON_DEMAND_QUEUE => {
                    match on_demand_groups(&meters, &request) {
                        Ok(_) => pending.push_back(*request),
                        Err(e) => {
                            let _ = request.reply.send(OnDemandResult { errors: vec![e], ..Default::default() });
                        }
                    }
                }
                _ = utilisation_tick.tick() => {
                    let window = window_start.elapsed().as_secs_f64();
                    let u = (window_busy / window.max(1e-3)).min(1.0);
                    live.update_bus(&bus.name, |b| b.utilisation = u);
                    window_busy = 0.0;
                    window_start = Instant::now();
                }
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        info!("bus stopped");
    }
    .instrument(span)
    .await
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// Where a meter sits on its bus: its DL/T 645 address or Modbus unit id.
fn who(m: &MeterRt) -> String {
    match (m.address, &m.server_address) {
        (Some(a), _) => format!("address {a}"),
        (None, Some(a)) => format!("address {a}"),
        (None, None) => format!("unit {}", m.unit),
    }
}

/// One poll's outcome into the live state (one update per poll), and availability changes
/// into the log. `stored` is the reading the poll made, if any (its values are no longer in
/// `r`).
fn record(
    live: &LiveState,
    m: &MeterRt,
    r: &GroupResult,
    transition: Option<Transition>,
    (group_index, group): (usize, &str),
    took: std::time::Duration,
    stored: Option<Arc<Reading>>,
) {
    let answered = stored.is_some() || !r.dated.is_empty();
    let last_error = r.errors.last().map(|e| e.to_string());
    match transition {
        Some(Transition::Online) => info!(meter = %m.id, at = %who(m), "meter online"),
        Some(Transition::Offline) => warn!(
            meter = %m.id,
            at = %who(m),
            error = last_error.as_deref().unwrap_or(""),
            "meter offline: not answering, probing with back-off"
        ),
        None => {}
    }
    for e in &r.errors {
        debug!(meter = %m.id, group, error = %e, "request failed");
    }
    live.update(&m.id, |s| {
        s.polls += 1;
        s.latency.observe(took.as_secs_f64());
        for e in &r.errors {
            match e {
                PollError::Timeout(_) => s.timeouts += 1,
                PollError::Link(_) | PollError::Protocol(_) => s.link_errors += 1,
                PollError::Exception { .. }
                | PollError::Refused { .. }
                | PollError::Denied { .. }
                | PollError::BadValue(_) => s.exceptions += 1,
            }
        }
        if let Some(e) = &last_error {
            s.last_error = Some(e.clone());
        }
        if let Some(stored) = stored {
            s.keep_reading(group_index, stored);
        }
        if answered {
            s.refusing = false;
        } else if !r.errors.is_empty() && r.errors.iter().all(PollError::is_answer) {
            if !s.refusing {
                warn!(meter = %m.id, at = %who(m), error = last_error.as_deref().unwrap_or(""), "meter answers but refuses every request of a poll: check its profile");
            }
            s.refusing = true;
        }
        match transition {
            Some(Transition::Online) => s.online = Some(true),
            Some(Transition::Offline) => s.online = Some(false),
            None => {}
        }
    });
}
