//! The I/O side of a DL/T 645 bus: one link (a serial line, or a transparent serial server
//! over TCP), one transaction at a time. The protocol logic is sans-IO in
//! `meterd_protocols::dlt645` (codec, catalogue, read session with follow-ups).
//!
//! A group's identifiers that share a block (the three phase voltages, the tariffs of an
//! energy register) are read with one block read. A meter that refuses a block with "no
//! requested data" is remembered and read identifier by identifier from then on.

use std::{
    collections::BTreeMap,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use meterd_protocols::{
    dlt645::{
        bcd, clock,
        di::{self, Format},
        frame::{self, Scan},
        request,
        session::{Capacity, ReadSession, Step},
        Address, Version,
    },
    profile::{DiPoint, Group},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{modbus::open_serial, modbus::DiscardInput, GroupResult, PollError, PollTarget};
use crate::config::Link;

enum Stream {
    Serial(tokio_serial::SerialStream),
    Tcp(TcpStream),
}

pub struct Dlt645Link {
    version: Version,
    link: Link,
    timeout: Duration,
    stream: Option<Stream>,
}

/// When to broadcast the gateway's time (shared by the meters of one bus).
#[derive(Clone, Debug)]
pub struct TimeSync {
    every: Duration,
    max: Duration,
    last: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    warned: Arc<std::sync::Mutex<std::collections::HashSet<Address>>>,
}

impl TimeSync {
    pub fn new(every: Duration, max: Duration) -> TimeSync {
        TimeSync {
            every,
            max,
            last: Default::default(),
            warned: Default::default(),
        }
    }

    /// Whether a meter found `offset_s` off should get a broadcast now. Offsets beyond the
    /// maximum correction are reported once and left alone: an operator must look.
    fn wanted(&self, address: Address, offset_s: f64) -> bool {
        if offset_s.abs() < 1.0 {
            return false;
        }
        if offset_s.abs() > self.max.as_secs_f64() {
            if self
                .warned
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(address)
            {
                tracing::warn!(%address, offset_s, max_s = self.max.as_secs(), "meter clock is off by more than the maximum correction: not corrected, set it by hand");
            }
            return false;
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let due = last.is_none_or(|t| t.elapsed() >= self.every);
        if due {
            *last = Some(std::time::Instant::now());
        }
        due
    }
}

/// The "no requested data" bit of an abnormal reply: the meter does not have this identifier.
const NO_SUCH_DATA: u8 = 0x02;

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
            self.stream = Some(match &self.link {
                Link::Serial(s) => Stream::Serial(open_serial(s).map_err(|e| {
                    PollError::Link(format!("cannot open {}: {e}", s.device.display()))
                })?),
                Link::Tcp(addr) => {
                    let s = tokio::time::timeout(self.timeout, TcpStream::connect(addr))
                        .await
                        .map_err(|_| PollError::Link(format!("connect to {addr} timed out")))?
                        .map_err(|e| PollError::Link(format!("connect to {addr}: {e}")))?;
                    let _ = s.set_nodelay(true);
                    Stream::Tcp(s)
                }
            });
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
        let f = frame::Frame::new(
            Address::BROADCAST,
            0x08,
            clock::sync_data(now + utc_offset_s).to_vec(),
        );
        let stream = self.stream().await?;
        let r = send(stream, &f).await;
        if r.is_err() {
            self.stream = None;
        }
        r
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
        match stream {
            Stream::Serial(s) => s.discard_input(),
            Stream::Tcp(s) => s.discard_input(),
        }
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
            let read = match stream {
                Stream::Serial(s) => tokio::time::timeout_at(deadline, s.read(&mut chunk)).await,
                Stream::Tcp(s) => tokio::time::timeout_at(deadline, s.read(&mut chunk)).await,
            };
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
    let r = match stream {
        Stream::Serial(s) => s.write_all(&bytes).await,
        Stream::Tcp(s) => s.write_all(&bytes).await,
    };
    r.map_err(|e| PollError::Link(e.to_string()))
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
    let mut attempt = 0;
    loop {
        *requests += 1;
        let r = link
            .read_within(
                address,
                di,
                capacity.unwrap_or(Capacity::of(link.version, di)),
            )
            .await;
        if !frame_gap.is_zero() {
            tokio::time::sleep(frame_gap).await;
        }
        match r {
            Err(PollError::Timeout(_) | PollError::Link(_)) if attempt < retries => attempt += 1,
            r => return r,
        }
    }
}

/// Most daily freezes a 2007 meter keeps (050600nn, nn = 01..3E).
const MAX_FREEZES: u32 = 62;

/// Publish daily freezes the gateway has not published yet, oldest first, each with its own
/// freeze time. After a gap (the meter unreachable for days) the missed days are read back
/// from the meter's freeze history; right after a start only the newest is taken.
async fn read_daily_freezes(
    link: &mut Dlt645Link,
    address: Address,
    t: &PollTarget,
    out: &mut GroupResult,
) -> Result<(), PollError> {
    let seen = *t.last_freeze.lock().unwrap_or_else(|e| e.into_inner());
    let mut new = Vec::new();
    for n in 1..=MAX_FREEZES {
        let time = read_retrying(
            link,
            address,
            0x0506_0000 | n,
            t.retries,
            t.frame_gap,
            &mut out.requests,
            None,
        )
        .await?;
        let local = clock::from_minutes(&time)
            .ok_or_else(|| PollError::BadValue(format!("freeze time {time:02X?}")))?;
        if seen.is_some_and(|s| local <= s) {
            break;
        }
        new.push((n, local));
        if seen.is_none() {
            break;
        }
    }
    for &(n, local) in new.iter().rev() {
        let bytes = read_retrying(
            link,
            address,
            0x0506_0100 | n,
            t.retries,
            t.frame_gap,
            &mut out.requests,
            None,
        )
        .await?;
        let mut values = Vec::new();
        for (k, chunk) in bytes.chunks_exact(4).enumerate().take(5) {
            let q = if k == 0 {
                "energy_import_kwh".to_string()
            } else {
                format!("energy_import_t{k}_kwh")
            };
            let v = bcd::decode(chunk, 2, false)
                .map_err(|e| PollError::BadValue(format!("freeze {n}: {e}")))?;
            values.push((Arc::<str>::from(q), v));
        }
        let utc = u64::try_from(local - t.utc_offset_s).unwrap_or(0);
        out.dated
            .push((std::time::UNIX_EPOCH + Duration::from_secs(utc), values));
        *t.last_freeze.lock().unwrap_or_else(|e| e.into_inner()) = Some(local);
    }
    Ok(())
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
    let (date_di, time_di) = match link.version {
        Version::V2007 => (0x0400_0101, 0x0400_0102),
        Version::V1997 => (0xC010, 0xC011),
    };
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
    let local = clock::from_date_time(&date, &time).ok_or_else(|| {
        PollError::BadValue(format!(
            "meter clock {date:02X?} {time:02X?} is not a date and time"
        ))
    })?;
    Ok(((local - utc_offset_s) as f64 - now).round())
}

/// The block a DI belongs to, if reading it as a block makes sense.
fn block_of(version: Version, di: u32) -> u32 {
    match version {
        Version::V2007 => di | 0x0000_FF00,
        Version::V1997 => di | 0x000F,
    }
}

fn decode_point(p: &DiPoint, bytes: &[u8]) -> Result<f64, PollError> {
    let Format::Number {
        bytes: n,
        decimals,
        signed,
    } = p.format
    else {
        return Err(PollError::BadValue(format!("{:08X} is not a number", p.di)));
    };
    let b = bytes.get(..n).ok_or_else(|| {
        PollError::BadValue(format!("{:08X}: {} of {n} bytes", p.di, bytes.len()))
    })?;
    let v = bcd::decode(b, decimals, signed)
        .map_err(|e| PollError::BadValue(format!("{:08X}: {e}", p.di)))?;
    // Keep the resolution the meter has: 2.2718 kvar is 2271.8 var, not 2271.7999999999997.
    let places = (decimals as i32 - p.factor.abs().log10().round() as i32).clamp(0, 9);
    let scale = 10f64.powi(places);
    Ok((v * p.factor * scale).round() / scale)
}

/// Poll one group: block reads where they cover several identifiers (unless the meter refused
/// blocks before), single reads otherwise. Stops at the first read the meter does not answer.
pub async fn poll_group(
    link: &mut Dlt645Link,
    address: Address,
    group: &Group,
    t: &PollTarget,
) -> GroupResult {
    let (no_blocks, retries, frame_gap) = (&t.no_blocks, t.retries, t.frame_gap);
    let version = link.version;
    let mut out = GroupResult::default();
    if group.daily_freeze {
        if let Err(e) = read_daily_freezes(link, address, t, &mut out).await {
            let fatal = !e.is_answer();
            out.errors.push(e);
            if fatal {
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
                    if sync.wanted(address, offset) {
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
                let fatal = !e.is_answer();
                out.errors.push(e);
                if fatal {
                    return out;
                }
            }
        }
    }
    // Plan: block → its wanted members with their member index.
    let mut blocks: BTreeMap<u32, Vec<(u32, &DiPoint)>> = BTreeMap::new();
    for p in &group.dis {
        let b = block_of(version, p.di);
        let k = (0..64).find(|k| di::block_member(version, b, *k) == Some(p.di));
        match k {
            Some(k) => blocks.entry(b).or_default().push((k, p)),
            None => blocks.entry(p.di).or_default().push((0, p)),
        }
    }
    'plan: for (block, members) in blocks {
        let use_block = members.len() > 1 && !no_blocks.load(Ordering::Relaxed);
        let reads: Vec<(u32, Vec<(u32, &DiPoint)>)> = if use_block {
            vec![(block, members)]
        } else {
            members
                .into_iter()
                .map(|(_, p)| (p.di, vec![(0, p)]))
                .collect()
        };
        let mut queue: std::collections::VecDeque<_> = reads.into();
        while let Some((di, wanted)) = queue.pop_front() {
            // A profile's own identifier (not in the catalogue) carries what the profile says.
            let capacity =
                (wanted.len() == 1 && di == wanted[0].1.di && di::lookup(version, di).is_none())
                    .then(|| Capacity {
                        bytes: wanted[0].1.format.byte_len(),
                    });
            let result = read_retrying(
                link,
                address,
                di,
                retries,
                frame_gap,
                &mut out.requests,
                capacity,
            )
            .await;
            match result {
                Ok(bytes) => {
                    let block = di != wanted[0].1.di;
                    for (k, p) in &wanted {
                        let n = p.format.byte_len();
                        let offset = if block { *k as usize * n } else { 0 };
                        if block && bytes.len() < offset + n {
                            // A block holds the members the meter has (e.g. its tariffs): the
                            // reply's length says how many. Absent members are not errors.
                            continue;
                        }
                        match decode_point(p, &bytes[offset.min(bytes.len())..]) {
                            Ok(v) => out.values.push((p.quantity.clone(), v)),
                            Err(e) => out.errors.push(e),
                        }
                    }
                }
                Err(PollError::Refused { err, .. })
                    if wanted.len() > 1 && err & NO_SUCH_DATA != 0 =>
                {
                    // No block reads on this meter: remember, and read the members one by one.
                    no_blocks.store(true, Ordering::Relaxed);
                    tracing::info!(%address, block = format!("{di:08X}"), "meter refuses block reads; reading identifiers singly from now on");
                    for (_, p) in wanted {
                        queue.push_back((p.di, vec![(0, p)]));
                    }
                }
                Err(
                    e @ (PollError::Refused { .. }
                    | PollError::BadValue(_)
                    | PollError::Exception { .. }),
                ) => out.errors.push(e),
                Err(e) => {
                    out.errors.push(e);
                    break 'plan;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Address {
        s.parse().unwrap()
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
