//! The I/O side of a DL/T 698.45 bus: one link (a serial line, or a transparent serial server
//! over TCP), one exchange at a time. The protocol is sans-IO in `meterd_protocols::dlt698`
//! (codec, catalogue, `plan`); this file sends its requests and feeds it the replies.
//!
//! A group's OADs go out as one GET-Request-NormalList; a meter that refuses lists
//! (ERROR-Response) is remembered and read OAD by OAD. A meter that refuses plain reads with a
//! security DAR is remembered and read through SECURITY-Request (plaintext + RN); its replies'
//! MACs are kept unverified (that needs an ESAM). Replies split into link fragments are
//! confirmed and reassembled.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use meterd_protocols::{
    dlt698::{
        apdu::Apdu,
        frame::{self, Control, Frame, Reassembled, Reassembly, Scan},
        plan::{self, ValueError},
        Dar, Oad, ServerAddress,
    },
    profile::{Group, OadPoint},
};
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    dlt645::TimeSync,
    link::{self, DiscardInput, Stream},
    GroupResult, PollError,
};
use crate::config::Link;

/// Client address (CA) meterd sends: 0, "don't care".
const CLIENT: u8 = 0;

/// Read back at most this many missed daily freezes.
const MAX_FREEZE_DAYS: i64 = 31;

pub struct Dlt698Link {
    link: Link,
    timeout: Duration,
    stream: Option<Stream>,
    piid: u8,
}

/// A DL/T 698.45 meter as its polls see it: its address, its clock's time zone, and what it
/// taught us (it refuses lists, it wants security, its newest daily freeze).
pub struct Dlt698Meter {
    pub address: ServerAddress,
    pub utc_offset_s: i64,
    pub no_lists: Arc<AtomicBool>,
    pub secure: Arc<AtomicBool>,
    /// The newest daily freeze already published (meter local seconds).
    pub last_freeze: Arc<Mutex<Option<i64>>>,
    pub time_sync: Option<TimeSync>,
}

impl Dlt698Meter {
    pub fn new(address: ServerAddress, utc_offset_s: i64, time_sync: Option<TimeSync>) -> Self {
        Dlt698Meter {
            address,
            utc_offset_s,
            no_lists: Default::default(),
            secure: Default::default(),
            last_freeze: Default::default(),
            time_sync,
        }
    }
}

fn value_error(e: ValueError) -> PollError {
    match e {
        ValueError::Refused { oad, dar } => PollError::Denied {
            what: oad.to_string(),
            dar: dar.to_string(),
        },
        e => PollError::BadValue(e.to_string()),
    }
}

impl Dlt698Link {
    pub fn new(link: Link, timeout: Duration) -> Dlt698Link {
        Dlt698Link {
            link,
            timeout,
            stream: None,
            piid: 0,
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

    fn next_piid(&mut self) -> u8 {
        self.piid = (self.piid + 1) & 0x3F;
        self.piid
    }

    /// Send the APDU `build(piid)` to `address` (wrapped in SECURITY with a fresh RN when
    /// `secure`) and return the server APDU that answers it (unwrapped). A timeout or broken
    /// link drops the connection so the next exchange starts clean.
    pub async fn exchange(
        &mut self,
        address: &ServerAddress,
        secure: bool,
        build: impl FnOnce(u8) -> Apdu,
    ) -> Result<Apdu, PollError> {
        let piid = self.next_piid();
        let r = self
            .exchange_inner(address, secure, piid, build(piid))
            .await;
        if matches!(r, Err(PollError::Timeout(_) | PollError::Link(_))) {
            self.stream = None;
        }
        r
    }

    async fn exchange_inner(
        &mut self,
        address: &ServerAddress,
        secure: bool,
        piid: u8,
        apdu: Apdu,
    ) -> Result<Apdu, PollError> {
        let apdu = if secure {
            let rn: Vec<u8> = (0..16).map(|_| rand::thread_rng().gen()).collect();
            apdu.secured(rn)
        } else {
            Ok(apdu)
        };
        let bytes = apdu
            .and_then(|a| a.encode())
            .and_then(|data| Frame::request(address.clone(), CLIENT, data).encode(4))
            .map_err(|e| PollError::Link(e.to_string()))?;
        let timeout = self.timeout;
        let stream = self.stream().await?;
        // Late bytes from an earlier exchange must not be taken for this one's reply.
        stream.discard_input();
        write(stream, &bytes).await?;
        let mut buf: Vec<u8> = Vec::with_capacity(256);
        let mut chunk = [0u8; 256];
        let mut reassembly = Reassembly::default();
        let mut deadline = tokio::time::Instant::now() + timeout;
        loop {
            match frame::scan(&buf) {
                Scan::Frame(f, n) => {
                    buf.drain(..n);
                    if !f.control.from_server() || !address.matches(&f.address) {
                        continue;
                    }
                    let data = match f.fragment {
                        None => f.data,
                        Some(word) => match reassembly.push(word, &f.data) {
                            Ok(Reassembled::Done(apdu)) => apdu,
                            Ok(Reassembled::Confirm(confirm)) => {
                                let c = Frame {
                                    control: Control(0x63 | (f.control.0 & 0x08)),
                                    address: f.address.clone(),
                                    client: CLIENT,
                                    fragment: Some(confirm),
                                    data: Vec::new(),
                                };
                                let bytes =
                                    c.encode(4).map_err(|e| PollError::Link(e.to_string()))?;
                                write(stream, &bytes).await?;
                                deadline = tokio::time::Instant::now() + timeout;
                                continue;
                            }
                            Err(e) => return Err(PollError::Protocol(e.to_string())),
                        },
                    };
                    let reply = Apdu::decode(&data)
                        .map_err(|e| PollError::Protocol(format!("reply APDU: {e}")))?;
                    let reply = match reply.unwrap_plain() {
                        Some(inner) => inner
                            .map_err(|e| PollError::Protocol(format!("wrapped reply APDU: {e}")))?,
                        None => reply,
                    };
                    if let Apdu::SecurityResponse {
                        payload: meterd_protocols::dlt698::apdu::ResponsePayload::Dar(dar),
                        ..
                    } = reply
                    {
                        return Err(PollError::Denied {
                            what: "SECURITY-Request".into(),
                            dar: dar.to_string(),
                        });
                    }
                    if !plan::answers(piid, &reply) {
                        // A late reply to an earlier request: wait for ours.
                        continue;
                    }
                    return Ok(reply);
                }
                Scan::Invalid { skip, .. } => {
                    buf.drain(..skip.min(buf.len()));
                    continue;
                }
                Scan::Incomplete { skip } => {
                    buf.drain(..skip.min(buf.len()));
                }
            }
            match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
                Err(_) => return Err(PollError::Timeout(timeout)),
                Ok(Ok(0)) => return Err(PollError::Link("connection closed".into())),
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => return Err(PollError::Link(e.to_string())),
            }
        }
    }

    /// Read the communication address (4001) of whoever answers the wildcard address: the
    /// way to find the only meter on a point-to-point line. A meter that wants security is
    /// asked again through SECURITY-Request.
    pub async fn read_address(&mut self) -> Result<ServerAddress, PollError> {
        use meterd_protocols::dlt698::{apdu::GetResult, frame::AddressKind, Data};
        let mut secure = false;
        loop {
            let reply = self
                .exchange(&ServerAddress::wildcard(6), secure, |piid| {
                    Apdu::get(piid, plan::ADDRESS)
                })
                .await?;
            let results = plan::get_results(&reply).unwrap_or_default();
            return match results.first().map(|r| &r.result) {
                Some(GetResult::Data(Data::OctetString(b))) if !b.is_empty() && b.len() <= 16 => {
                    Ok(ServerAddress {
                        kind: AddressKind::Single,
                        logical: 0,
                        bytes: b.clone(),
                    })
                }
                Some(GetResult::Dar(dar)) if dar.wants_security() && !secure => {
                    secure = true;
                    continue;
                }
                Some(GetResult::Dar(dar)) => Err(PollError::Denied {
                    what: plan::ADDRESS.to_string(),
                    dar: dar.to_string(),
                }),
                Some(GetResult::Data(d)) => Err(PollError::BadValue(format!(
                    "{}: {d:?} is not an address",
                    plan::ADDRESS
                ))),
                None => Err(PollError::Protocol(format!("{} to a GET", reply.name()))),
            };
        }
    }
}

async fn write(stream: &mut Stream, bytes: &[u8]) -> Result<(), PollError> {
    stream
        .write_all(bytes)
        .await
        .map_err(|e| PollError::Link(e.to_string()))
}

/// The most application blocks one GET may come in (a meter that never says "last" cannot
/// hold its line).
const MAX_BLOCKS: u16 = 64;

/// One exchange with up to `retries` more attempts after a timeout or a broken link, keeping
/// `frame_gap` of silence after each. A GET answered in application blocks
/// (GET-Response-Next) is followed with GET-Request-Next to the last block and handed back as
/// one GET-Response-NormalList.
async fn exchange_retrying(
    link: &mut Dlt698Link,
    t: &Dlt698Meter,
    retries: u32,
    frame_gap: Duration,
    requests: &mut u32,
    build: impl Fn(u8) -> Apdu,
) -> Result<Apdu, PollError> {
    let reply = exchange_once(link, t, retries, frame_gap, requests, build).await?;
    let Some((mut last, mut block, first)) = plan::next_block(&reply) else {
        return Ok(reply);
    };
    let blocks_error = |dar: Dar| PollError::Denied {
        what: "a GET in blocks".into(),
        dar: dar.to_string(),
    };
    let mut results = first.map_err(blocks_error)?;
    while !last {
        if block >= MAX_BLOCKS {
            return Err(PollError::Protocol(format!(
                "a GET reply still not complete after {MAX_BLOCKS} blocks"
            )));
        }
        let received = block;
        let r = exchange_once(link, t, retries, frame_gap, requests, |piid| {
            plan::next_request(piid, received)
        })
        .await?;
        let (l, b, more) = plan::next_block(&r)
            .ok_or_else(|| PollError::Protocol(format!("{} to GET-Request-Next", r.name())))?;
        if b != received + 1 {
            return Err(PollError::Protocol(format!(
                "block {b} after block {received}"
            )));
        }
        results.extend(more.map_err(blocks_error)?);
        (last, block) = (l, b);
    }
    Ok(plan::joined(reply.piid().unwrap_or(0), results))
}

async fn exchange_once(
    link: &mut Dlt698Link,
    t: &Dlt698Meter,
    retries: u32,
    frame_gap: Duration,
    requests: &mut u32,
    build: impl Fn(u8) -> Apdu,
) -> Result<Apdu, PollError> {
    let mut retry = super::Retry::new(retries, frame_gap);
    loop {
        *requests += 1;
        let secure = t.secure.load(Ordering::Relaxed);
        let r = link.exchange(&t.address, secure, &build).await;
        if let Some(r) = retry.after(r).await {
            return r;
        }
    }
}

/// Values of `points` with one NormalList (or one GET each when the meter refuses lists),
/// switching the meter to SECURITY-wrapped requests when it refuses plain ones.
async fn read_points(
    link: &mut Dlt698Link,
    t: &Dlt698Meter,
    points: &[OadPoint],
    retries: u32,
    frame_gap: Duration,
    out: &mut GroupResult,
) -> Result<(), PollError> {
    for attempt in 0..2 {
        let (values, errors) = if points.len() > 1 && !t.no_lists.load(Ordering::Relaxed) {
            let reply = exchange_retrying(link, t, retries, frame_gap, &mut out.requests, |piid| {
                plan::list_request(piid, points)
            })
            .await?;
            if plan::is_service_refusal(&reply) {
                t.no_lists.store(true, Ordering::Relaxed);
                tracing::info!(address = %t.address, "meter refuses GET-Request-NormalList; reading OADs singly from now on");
                continue_singles(link, t, points, retries, frame_gap, out).await?
            } else {
                let results = plan::get_results(&reply)
                    .ok_or_else(|| PollError::Protocol(format!("{} to a GET", reply.name())))?;
                plan::list_values(points, &results)
            }
        } else {
            continue_singles(link, t, points, retries, frame_gap, out).await?
        };
        let wants_security = !errors.is_empty() && errors.iter().all(ValueError::wants_security);
        if attempt == 0 && wants_security && !t.secure.swap(true, Ordering::Relaxed) {
            tracing::info!(address = %t.address, "meter refuses plain reads; reading through SECURITY-Request (plaintext + RN) from now on");
            continue;
        }
        out.values.extend(values);
        out.errors.extend(errors.into_iter().map(value_error));
        return Ok(());
    }
    Ok(())
}

async fn continue_singles(
    link: &mut Dlt698Link,
    t: &Dlt698Meter,
    points: &[OadPoint],
    retries: u32,
    frame_gap: Duration,
    out: &mut GroupResult,
) -> Result<(Vec<(Arc<str>, f64)>, Vec<ValueError>), PollError> {
    let mut values = Vec::new();
    let mut errors = Vec::new();
    for p in points {
        let reply = exchange_retrying(link, t, retries, frame_gap, &mut out.requests, |piid| {
            Apdu::get(piid, p.oad)
        })
        .await?;
        match plan::get_results(&reply) {
            Some(results) => {
                let (v, e) = plan::list_values(std::slice::from_ref(p), &results);
                values.extend(v);
                errors.extend(e);
            }
            None => errors.push(ValueError::Shape {
                oad: p.oad,
                what: format!("{} to a GET", reply.name()),
            }),
        }
    }
    Ok((values, errors))
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The meter's clock offset; set the clock when the bus's policy says so.
async fn read_clock(
    link: &mut Dlt698Link,
    t: &Dlt698Meter,
    retries: u32,
    frame_gap: Duration,
    out: &mut GroupResult,
) -> Result<(), PollError> {
    let reply = exchange_retrying(link, t, retries, frame_gap, &mut out.requests, |piid| {
        Apdu::get(piid, plan::CLOCK)
    })
    .await?;
    let offset = plan::clock_offset_s(&reply, t.utc_offset_s, unix_now()).map_err(value_error)?;
    out.values.push((Arc::from("meter_clock_offset_s"), offset));
    let Some(sync) = &t.time_sync else {
        return Ok(());
    };
    if !sync.wanted_for_meter(&t.address.to_string(), offset) {
        return Ok(());
    }
    set_clock_counted(link, t, retries, frame_gap, &mut out.requests).await?;
    tracing::info!(address = %t.address, offset_s = offset, "meter clock off: set to the gateway's time");
    Ok(())
}

/// SET the meter's clock (4000-02-00) to the gateway's time.
pub async fn set_clock(
    link: &mut Dlt698Link,
    t: &Dlt698Meter,
    retries: u32,
    frame_gap: Duration,
) -> Result<(), PollError> {
    let mut requests = 0;
    set_clock_counted(link, t, retries, frame_gap, &mut requests).await
}

async fn set_clock_counted(
    link: &mut Dlt698Link,
    t: &Dlt698Meter,
    retries: u32,
    frame_gap: Duration,
    requests: &mut u32,
) -> Result<(), PollError> {
    let reply = exchange_retrying(link, t, retries, frame_gap, requests, |piid| {
        plan::set_clock(piid, unix_now().round() as i64 + t.utc_offset_s)
    })
    .await?;
    match plan::set_result(&reply, plan::CLOCK) {
        Some(Dar::SUCCESS) => Ok(()),
        Some(dar) => Err(PollError::Denied {
            what: format!("setting the clock ({})", plan::CLOCK),
            dar: dar.to_string(),
        }),
        None => Err(PollError::Protocol(format!("{} to a SET", reply.name()))),
    }
}

/// Publish daily freezes not yet published, oldest first, each with its freeze time: right
/// after a start only the newest; after a gap every missed day (up to a month) by its date.
async fn read_freezes(
    link: &mut Dlt698Link,
    t: &Dlt698Meter,
    retries: u32,
    frame_gap: Duration,
    out: &mut GroupResult,
) -> Result<(), PollError> {
    let seen = *t.last_freeze.lock().unwrap_or_else(|e| e.into_inner());
    let today = (unix_now() as i64 + t.utc_offset_s).div_euclid(86_400) * 86_400;
    let days: Vec<Option<i64>> = match seen {
        None => vec![None],
        Some(s) => {
            let first = (s.div_euclid(86_400) + 1).max(today / 86_400 - MAX_FREEZE_DAYS + 1);
            (first..=today / 86_400).map(|d| Some(d * 86_400)).collect()
        }
    };
    for day in days {
        let reply = exchange_retrying(link, t, retries, frame_gap, &mut out.requests, |piid| {
            plan::freeze_request(piid, day)
        })
        .await?;
        for (local, values) in plan::freeze_rows(&reply).map_err(value_error)? {
            if seen.is_some_and(|s| local <= s) {
                continue;
            }
            out.dated
                .push((super::local_to_time(local, t.utc_offset_s), values));
            let mut last = t.last_freeze.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_none_or(|l| local > l) {
                *last = Some(local);
            }
        }
    }
    Ok(())
}

/// Daily freezes from day `from` to day `to` (meter-local days since the epoch), one
/// GET-Request-Record per day, oldest first. A day without a freeze is skipped; the first
/// exchange the meter does not answer ends it.
pub async fn recollect(
    link: &mut Dlt698Link,
    t: &Dlt698Meter,
    from: i64,
    to: i64,
    retries: u32,
    frame_gap: Duration,
) -> GroupResult {
    let mut out = GroupResult::default();
    for day in from..=to {
        let reply = exchange_retrying(link, t, retries, frame_gap, &mut out.requests, |piid| {
            plan::freeze_request(piid, Some(day * 86_400))
        })
        .await;
        let rows = reply.and_then(|r| plan::freeze_rows(&r).map_err(value_error));
        match rows {
            Ok(rows) => {
                for (local, values) in rows {
                    out.dated
                        .push((super::local_to_time(local, t.utc_offset_s), values));
                }
            }
            Err(e) => {
                if !out.carry_on_after(e) {
                    break;
                }
            }
        }
    }
    out
}

/// Poll one group of one meter. Stops at the first exchange the meter does not answer.
pub async fn poll_group(
    link: &mut Dlt698Link,
    t: &Dlt698Meter,
    group: &Group,
    retries: u32,
    frame_gap: Duration,
) -> GroupResult {
    let mut out = GroupResult::default();
    // Freezes, clock, then the points: each only when the group asks for it.
    if group.daily_freeze {
        if let Err(e) = read_freezes(link, t, retries, frame_gap, &mut out).await {
            if !out.carry_on_after(e) {
                return out;
            }
        }
    }
    if group.clock {
        if let Err(e) = read_clock(link, t, retries, frame_gap, &mut out).await {
            if !out.carry_on_after(e) {
                return out;
            }
        }
    }
    if !group.oads.is_empty() {
        if let Err(e) = read_points(link, t, &group.oads, retries, frame_gap, &mut out).await {
            out.errors.push(e);
        }
    }
    out
}

/// Read arbitrary OADs once (the CLI's `read --oad`), through SECURITY-Request if the meter
/// refuses them plain.
pub async fn read_oads(
    link: &mut Dlt698Link,
    t: &Dlt698Meter,
    oads: &[Oad],
    retries: u32,
    frame_gap: Duration,
) -> Result<Vec<meterd_protocols::dlt698::apdu::ResultNormal>, PollError> {
    use meterd_protocols::dlt698::apdu::GetResult;
    let mut requests = 0;
    loop {
        let reply = exchange_retrying(link, t, retries, frame_gap, &mut requests, |piid| {
            Apdu::get_list(piid, oads.to_vec())
        })
        .await?;
        let results = if plan::is_service_refusal(&reply) && oads.len() > 1 {
            // No lists on this meter: one GET each.
            let mut all = Vec::new();
            for oad in oads {
                let reply = exchange_retrying(link, t, retries, frame_gap, &mut requests, |piid| {
                    Apdu::get(piid, *oad)
                })
                .await?;
                all.extend(plan::get_results(&reply).unwrap_or_default());
            }
            all
        } else {
            plan::get_results(&reply)
                .ok_or_else(|| PollError::Protocol(format!("{} to a GET", reply.name())))?
        };
        let wants_security = !results.is_empty()
            && results
                .iter()
                .all(|r| matches!(r.result, GetResult::Dar(d) if d.wants_security()));
        if wants_security && !t.secure.swap(true, Ordering::Relaxed) {
            continue;
        }
        return Ok(results);
    }
}
