//! The I/O side of a DL/T 645 bus: one link (a serial line, or a transparent serial server
//! over TCP), one transaction at a time. The protocol logic is sans-IO in
//! `meterd_protocols::dlt645` (codec, catalogue, read session with follow-ups).
//!
//! A group's identifiers that share a block (the three phase voltages, the tariffs of an
//! energy register) are read with one block read. A meter that refuses a block with "no
//! requested data" is remembered and read identifier by identifier from then on.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use meterd_protocols::{
    dlt645::{
        frame::{self, Scan},
        plan, request,
        session::{Capacity, ReadSession, Step},
        Address, Version,
    },
    profile::Group,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    link::{self, DiscardInput, Stream},
    GroupResult, PollError,
};
use crate::config::Link;

pub struct Dlt645Link {
    version: Version,
    link: Link,
    timeout: Duration,
    stream: Option<Stream>,
}

/// A DL/T 645 meter as its polls see it: its address, its clock's time zone, what it taught
/// us (it refuses block reads; the newest daily freeze already published) and the bus's
/// time-sync policy.
pub struct Dlt645Meter {
    pub address: Address,
    /// How far the meter's local clock is ahead of UTC, in seconds.
    pub utc_offset_s: i64,
    /// The meter refused a block read once: read single identifiers from then on.
    pub no_blocks: Arc<std::sync::atomic::AtomicBool>,
    /// The newest daily freeze already published (meter local seconds).
    pub last_freeze: Arc<std::sync::Mutex<Option<i64>>>,
    /// Broadcast the gateway's time when a clock read finds an offset.
    pub time_sync: Option<TimeSync>,
}

/// When to correct meter clocks (shared by the meters of one bus): DL/T 645 broadcasts the
/// gateway's time at most once per interval for the whole bus; DL/T 698.45 sets each meter's
/// clock, at most once per interval per meter.
#[derive(Clone, Debug)]
pub struct TimeSync {
    every: Duration,
    max: Duration,
    last: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    last_by_meter: Arc<std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>>,
    warned: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl TimeSync {
    pub fn new(every: Duration, max: Duration) -> TimeSync {
        TimeSync {
            every,
            max,
            last: Default::default(),
            last_by_meter: Default::default(),
            warned: Default::default(),
        }
    }

    /// Whether an offset of `offset_s` is one to correct. Offsets beyond the maximum
    /// correction are reported once per meter and left alone: an operator must look.
    fn correctable(&self, meter: &str, offset_s: f64) -> bool {
        if offset_s.abs() < 1.0 {
            return false;
        }
        if offset_s.abs() > self.max.as_secs_f64() {
            if self
                .warned
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(meter.to_string())
            {
                tracing::warn!(address = meter, offset_s, max_s = self.max.as_secs(), "meter clock is off by more than the maximum correction: not corrected, set it by hand");
            }
            return false;
        }
        true
    }

    /// Whether a meter found `offset_s` off should get a broadcast now (once per interval
    /// for the whole bus).
    pub fn wanted(&self, meter: &str, offset_s: f64) -> bool {
        if !self.correctable(meter, offset_s) {
            return false;
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let due = last.is_none_or(|t| t.elapsed() >= self.every);
        if due {
            *last = Some(std::time::Instant::now());
        }
        due
    }

    /// Whether this meter's clock should be set now (once per interval per meter).
    pub fn wanted_for_meter(&self, meter: &str, offset_s: f64) -> bool {
        if !self.correctable(meter, offset_s) {
            return false;
        }
        let mut last = self.last_by_meter.lock().unwrap_or_else(|e| e.into_inner());
        let due = last.get(meter).is_none_or(|t| t.elapsed() >= self.every);
        if due {
            last.insert(meter.to_string(), std::time::Instant::now());
        }
        due
    }
}

impl Dlt645Link {
    pub fn new(version: Version, link: Link, timeout: Duration) -> Dlt645Link {
        Dlt645Link {
            version,
            link,
            timeout,
            stream: None,
        }
    }

    async fn stream(&mut self) -> Result<&mut Stream, PollError> {
        if self.stream.is_none() {
            self.stream = Some(link::open(&self.link, self.timeout).await?);
        }
        self.stream
            .as_mut()
            .ok_or_else(|| PollError::Link("not connected".into()))
    }

    /// Read one identifier (following up as long as the meter has more frames): its value
    /// bytes. A timeout or a broken link drops the connection so the next read starts clean.
    ///
    /// The whole read, follow-ups included, has a budget of one timeout per frame the
    /// identifier can need ([`Capacity`]): a meter that keeps announcing more frames, or sends
    /// more than the identifier can carry, fails the read instead of holding the line.
    pub async fn read(&mut self, address: Address, di: u32) -> Result<Vec<u8>, PollError> {
        self.read_within(address, di, Capacity::of(self.version, di))
            .await
    }

    /// [`Dlt645Link::read`] bounded by `capacity` (an identifier the catalogue does not know,
    /// of a size the profile gives).
    pub async fn read_within(
        &mut self,
        address: Address,
        di: u32,
        capacity: Capacity,
    ) -> Result<Vec<u8>, PollError> {
        let (session, request) = ReadSession::for_version(self.version, address, di);
        let mut session = session.with_capacity(capacity);
        let frames = session.max_frames() as u32;
        let r = self
            .exchange(request, frames, |f| session.on_frame(f))
            .await;
        if matches!(
            r,
            Err(PollError::Timeout(_) | PollError::Link(_) | PollError::Protocol(_))
        ) {
            self.stream = None;
        }
        r
    }

    /// Broadcast the gateway's time (C=08 to 99..99, `ss mm hh DD MM YY` in the meters' local
    /// time). No meter answers.
    pub async fn broadcast_time(&mut self, utc_offset_s: i64) -> Result<(), PollError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let f = request::broadcast_time(now + utc_offset_s);
        let stream = self.stream().await?;
        let r = send(stream, &f).await;
        if r.is_err() {
            self.stream = None;
        }
        r
    }

    /// Remote control of the meter's supply relay (C=1C), then its state read back from status
    /// word 3.
    pub async fn relay(
        &mut self,
        address: Address,
        creds: request::Credentials,
        command: request::RelayCommand,
        valid_until_local: i64,
    ) -> Result<request::RelayState, PollError> {
        let f = request::relay_control(address, creds, command, valid_until_local);
        let r = self
            .exchange(f, 1, |f| match f.control.0 {
                0x9C => Step::Done(Vec::new()),
                0xDC => Step::Refused(f.data.first().copied().unwrap_or(0)),
                _ => Step::Ignore,
            })
            .await;
        if matches!(r, Err(PollError::Timeout(_) | PollError::Link(_))) {
            self.stream = None;
        }
        r?;
        let word = self.read(address, request::STATUS_WORD_3).await?;
        request::RelayState::from_status_word(&word)
            .ok_or_else(|| PollError::BadValue(format!("status word 3: {word:02X?}")))
    }

    /// Ask for the address of the only meter on the line (C=13 to AA..AA). With several meters
    /// their replies collide: that is a timeout or garbage, and probing addresses is the way.
    pub async fn read_address(&mut self) -> Result<Address, PollError> {
        let request = request::read_address();
        let r = self
            .exchange(request, 1, |f| match (f.control.0, f.data.len()) {
                (0x93, 6) => Step::Done(f.data.clone()),
                _ => Step::Ignore,
            })
            .await;
        if r.is_err() {
            self.stream = None;
        }
        let bytes = r?;
        let mut a = [0u8; 6];
        a.copy_from_slice(&bytes);
        Ok(Address(a))
    }

    /// Send `request`, then feed every frame that arrives to `on_frame` until it is done:
    /// each reply within the timeout, and the whole exchange within `frames` timeouts.
    async fn exchange(
        &mut self,
        request: frame::Frame,
        frames: u32,
        mut on_frame: impl FnMut(&frame::Frame) -> Step,
    ) -> Result<Vec<u8>, PollError> {
        let timeout = self.timeout;
        let budget = timeout.saturating_mul(frames.max(1));
        let whole = tokio::time::Instant::now() + budget;
        let stream = self.stream().await?;
        // Late bytes from an earlier transaction must not be taken for this one's reply.
        stream.discard_input();
        send(stream, &request).await?;
        let mut buf: Vec<u8> = Vec::with_capacity(256);
        let mut chunk = [0u8; 256];
        let mut deadline = tokio::time::Instant::now() + timeout;
        loop {
            match frame::scan(&buf) {
                Scan::Frame(f, n) => {
                    buf.drain(..n);
                    match on_frame(&f) {
                        Step::Done(bytes) => return Ok(bytes),
                        Step::Refused(err) => {
                            return Err(PollError::Refused {
                                err,
                                version: self.version,
                            })
                        }
                        Step::Failed(msg) => return Err(PollError::Protocol(msg)),
                        Step::Ignore => {}
                        Step::Send(next) => {
                            send(stream, &next).await?;
                            deadline = (tokio::time::Instant::now() + timeout).min(whole);
                        }
                    }
                    continue;
                }
                Scan::Invalid { skip, .. } => {
                    buf.drain(..skip.min(buf.len()));
                    continue;
                }
                Scan::Incomplete { skip } => {
                    buf.drain(..skip.min(buf.len()));
                }
            }
            let read = tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await;
            match read {
                Err(_) if tokio::time::Instant::now() >= whole && frames > 1 => {
                    return Err(PollError::Link(format!(
                        "reply not complete within its budget of {frames} frames ({budget:?})"
                    )))
                }
                Err(_) => return Err(PollError::Timeout(timeout)),
                Ok(Ok(0)) => return Err(PollError::Link("connection closed".into())),
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => return Err(PollError::Link(e.to_string())),
            }
        }
    }
}

async fn send(stream: &mut Stream, f: &frame::Frame) -> Result<(), PollError> {
    let bytes = f.encode(4).map_err(|e| PollError::Link(e.to_string()))?;
    stream
        .write_all(&bytes)
        .await
        .map_err(|e| PollError::Link(e.to_string()))
}

/// One read with up to `retries` more attempts after a timeout or a broken link, keeping
/// `frame_gap` of silence after each.
async fn read_retrying(
    link: &mut Dlt645Link,
    address: Address,
    di: u32,
    retries: u32,
    frame_gap: Duration,
    requests: &mut u32,
    capacity: Option<Capacity>,
) -> Result<Vec<u8>, PollError> {
    let capacity = capacity.unwrap_or(Capacity::of(link.version, di));
    let mut retry = super::Retry::new(retries, frame_gap);
    loop {
        *requests += 1;
        let r = link.read_within(address, di, capacity).await;
        if let Some(r) = retry.after(r).await {
            return r;
        }
    }
}

/// Freeze `n`'s time (meter-local seconds), read and decoded.
async fn freeze_time(
    link: &mut Dlt645Link,
    address: Address,
    n: u32,
    (retries, frame_gap): (u32, Duration),
    requests: &mut u32,
) -> Result<i64, PollError> {
    let di = plan::freeze_time_di(n);
    let bytes = read_retrying(link, address, di, retries, frame_gap, requests, None).await?;
    plan::freeze_time(n, &bytes).map_err(|e| PollError::BadValue(e.to_string()))
}

/// Freeze `n`'s energy registers, read and decoded.
async fn freeze_energy(
    link: &mut Dlt645Link,
    address: Address,
    n: u32,
    (retries, frame_gap): (u32, Duration),
    requests: &mut u32,
) -> Result<Vec<(std::sync::Arc<str>, f64)>, PollError> {
    let di = plan::freeze_energy_di(n);
    let bytes = read_retrying(link, address, di, retries, frame_gap, requests, None).await?;
    plan::freeze_energy(n, &bytes).map_err(|e| PollError::BadValue(e.to_string()))
}

/// Publish daily freezes the gateway has not published yet, oldest first, each with its own
/// freeze time. After a gap (the meter unreachable for days) the missed days are read back
/// from the meter's freeze history; right after a start only the newest is taken.
async fn read_daily_freezes(
    link: &mut Dlt645Link,
    t: &Dlt645Meter,
    retries: u32,
    frame_gap: Duration,
    out: &mut GroupResult,
) -> Result<(), PollError> {
    let address = t.address;
    let seen = *t.last_freeze.lock().unwrap_or_else(|e| e.into_inner());
    let mut new = Vec::new();
    let retry = (retries, frame_gap);
    for n in 1..=plan::MAX_FREEZES {
        let local = freeze_time(link, address, n, retry, &mut out.requests).await?;
        if seen.is_some_and(|s| local <= s) {
            break;
        }
        new.push((n, local));
        if seen.is_none() {
            break;
        }
    }
    for &(n, local) in new.iter().rev() {
        let values = freeze_energy(link, address, n, retry, &mut out.requests).await?;
        out.dated
            .push((super::local_to_time(local, t.utc_offset_s), values));
        *t.last_freeze.lock().unwrap_or_else(|e| e.into_inner()) = Some(local);
    }
    Ok(())
}

/// One identifier, retried like a poll's reads.
pub async fn read_one(
    link: &mut Dlt645Link,
    address: Address,
    di: u32,
    retries: u32,
    frame_gap: Duration,
    requests: &mut u32,
) -> Result<Vec<u8>, PollError> {
    read_retrying(link, address, di, retries, frame_gap, requests, None).await
}

impl Dlt645Link {
    pub fn version(&self) -> Version {
        self.version
    }
}

/// Daily freezes whose day is between `from` and `to` (meter-local days since the epoch),
/// from the meter's freeze history (newest first, at most [`plan::MAX_FREEZES`] back), handed
/// back oldest first. The first read the meter does not answer ends it.
pub async fn recollect(
    link: &mut Dlt645Link,
    t: &Dlt645Meter,
    from: i64,
    to: i64,
    retries: u32,
    frame_gap: Duration,
) -> GroupResult {
    let mut out = GroupResult::default();
    let (address, retry) = (t.address, (retries, frame_gap));
    for n in 1..=plan::MAX_FREEZES {
        let local = match freeze_time(link, address, n, retry, &mut out.requests).await {
            Ok(l) => l,
            // "No requested data": the meter's history ends here.
            Err(PollError::Refused { err, .. }) if err & plan::NO_SUCH_DATA != 0 => break,
            Err(e) => {
                out.errors.push(e);
                break;
            }
        };
        let day = local.div_euclid(86_400);
        if day > to {
            continue;
        }
        if day < from {
            break;
        }
        match freeze_energy(link, address, n, retry, &mut out.requests).await {
            Ok(values) => {
                out.dated
                    .push((super::local_to_time(local, t.utc_offset_s), values));
            }
            Err(e) => {
                if !out.carry_on_after(e) {
                    break;
                }
            }
        }
    }
    out.dated.reverse();
    out
}

/// The meter's clock minus the gateway's, in whole seconds (the meter reports seconds).
async fn read_clock(
    link: &mut Dlt645Link,
    address: Address,
    retries: u32,
    frame_gap: Duration,
    utc_offset_s: i64,
    requests: &mut u32,
) -> Result<f64, PollError> {
    let (date_di, time_di) = plan::clock_dis(link.version);
    let date = read_retrying(link, address, date_di, retries, frame_gap, requests, None).await?;
    *requests += 1;
    let time = link.read(address, time_di).await;
    // The gateway's time when the time reply arrived.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    if !frame_gap.is_zero() {
        tokio::time::sleep(frame_gap).await;
    }
    let time = time?;
    plan::clock_offset_s(&date, &time, utc_offset_s, now)
        .map_err(|e| PollError::BadValue(e.to_string()))
}

/// Poll one group: block reads where they cover several identifiers (unless the meter refused
/// blocks before), single reads otherwise. Stops at the first read the meter does not answer.
pub async fn poll_group(
    link: &mut Dlt645Link,
    t: &Dlt645Meter,
    group: &Group,
    retries: u32,
    frame_gap: Duration,
) -> GroupResult {
    let (address, no_blocks) = (t.address, &t.no_blocks);
    let version = link.version;
    let mut out = GroupResult::default();
    if group.daily_freeze {
        if let Err(e) = read_daily_freezes(link, t, retries, frame_gap, &mut out).await {
            if !out.carry_on_after(e) {
                return out;
            }
        }
    }
    if group.clock {
        match read_clock(
            link,
            address,
            retries,
            frame_gap,
            t.utc_offset_s,
            &mut out.requests,
        )
        .await
        {
            Ok(offset) => {
                out.values.push((Arc::from("meter_clock_offset_s"), offset));
                if let Some(sync) = &t.time_sync {
                    if sync.wanted(&address.to_string(), offset) {
                        match link.broadcast_time(t.utc_offset_s).await {
                            Ok(()) => {
                                tracing::info!(%address, offset_s = offset, "meter clock off: broadcast the gateway's time")
                            }
                            Err(e) => out.errors.push(e),
                        }
                        if !frame_gap.is_zero() {
                            tokio::time::sleep(frame_gap).await;
                        }
                    }
                }
            }
            Err(e) => {
                if !out.carry_on_after(e) {
                    return out;
                }
            }
        }
    }
    // The plan (protocols' `dlt645::plan`): block reads where several identifiers share a
    // block, unless this meter refused them before.
    let blocks = !no_blocks.load(Ordering::Relaxed);
    let mut queue: std::collections::VecDeque<plan::Read> =
        plan::plan_reads(version, &group.dis, blocks).into();
    while let Some(read) = queue.pop_front() {
        let result = read_retrying(
            link,
            address,
            read.di,
            retries,
            frame_gap,
            &mut out.requests,
            Some(read.capacity),
        )
        .await;
        match result {
            Ok(bytes) => {
                for (i, v) in plan::decode_read(&read, &group.dis, &bytes) {
                    match v {
                        Ok(v) => out.values.push((group.dis[i].quantity.clone(), v)),
                        Err(e) => out.errors.push(PollError::BadValue(e.to_string())),
                    }
                }
            }
            Err(PollError::Refused { err, .. })
                if plan::is_block(&read, &group.dis) && err & plan::NO_SUCH_DATA != 0 =>
            {
                // No block reads on this meter: remember, and read the members one by one.
                no_blocks.store(true, Ordering::Relaxed);
                tracing::info!(%address, block = format!("{:08X}", read.di), "meter refuses block reads; reading identifiers singly from now on");
                let rest: Vec<plan::Read> = std::iter::once(read).chain(queue.drain(..)).collect();
                for r in rest {
                    if plan::is_block(&r, &group.dis) {
                        queue.extend(plan::singles(version, &group.dis, &r));
                    } else {
                        queue.push_back(r);
                    }
                }
            }
            Err(
                e @ (PollError::Refused { .. }
                | PollError::BadValue(_)
                | PollError::Exception { .. }),
            ) => out.errors.push(e),
            Err(e) => {
                out.errors.push(e);
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> &str {
        s
    }

    #[test]
    fn a_clock_within_the_maximum_is_synced_at_most_once_per_interval() {
        let sync = TimeSync::new(Duration::from_secs(3600), Duration::from_secs(300));
        assert!(!sync.wanted(a("1"), 0.0), "in sync: nothing to do");
        assert!(sync.wanted(a("1"), 42.0), "off by 42 s: broadcast");
        assert!(
            !sync.wanted(a("2"), -17.0),
            "not again within the interval, whichever meter"
        );
    }

    #[test]
    fn a_clock_beyond_the_maximum_correction_is_left_for_a_person() {
        let sync = TimeSync::new(Duration::from_secs(1), Duration::from_secs(300));
        assert!(!sync.wanted(a("1"), 3600.0));
        assert!(!sync.wanted(a("1"), -301.0));
        assert_eq!(
            sync.warned.lock().unwrap().len(),
            1,
            "reported once per meter"
        );
    }
}
