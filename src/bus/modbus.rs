//! The I/O side of a Modbus bus: links through tokio-modbus, requests with timeouts and
//! retries, and the task that owns the bus.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use futures::{stream::FuturesUnordered, StreamExt};
use meterd_protocols::{
    modbus::{ReadBlock, RegisterKind},
    profile::Profile,
};
use tokio::{net::TcpStream, sync::watch};
use tokio_modbus::{
    client::{rtu, tcp, Client, Context},
    prelude::SlaveContext,
    Request, Response, Slave,
};
use tokio_serial::SerialPortBuilderExt;
use tracing::{debug, info, info_span, warn, Instrument};

use super::scheduler::{Outcome, Policy, Scheduler, Transition};
use crate::{
    config::{raw::BusProtocol, raw::Parity, BusConfig, Link, SerialConfig},
    journal::Journal,
    reading::Reading,
    state::LiveState,
};

/// Why a request got no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PollError {
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("link failed: {0}")]
    Link(String),
    /// The meter answered with a Modbus exception: it is alive but refused.
    #[error("exception reply {code} ({})", exception_name(*.code))]
    Exception { code: u8 },
}

fn exception_name(code: u8) -> &'static str {
    match code {
        1 => "illegal function",
        2 => "illegal data address",
        3 => "illegal data value",
        4 => "server device failure",
        5 => "acknowledge",
        6 => "server device busy",
        10 => "gateway path unavailable",
        11 => "gateway target failed to respond",
        _ => "unknown",
    }
}

/// An RTU transport that discards unread input when a new request starts (the first write
/// after a read). RTU frames carry no transaction id: without this, a reply that arrives after
/// its request timed out would be taken as the answer to the next identical request.
#[derive(Debug)]
struct FreshInput<T> {
    inner: T,
    reading: bool,
}

trait DiscardInput {
    fn discard_input(&mut self);
}

impl DiscardInput for tokio_serial::SerialStream {
    fn discard_input(&mut self) {
        use tokio_serial::SerialPort;
        let _ = self.clear(tokio_serial::ClearBuffer::Input);
    }
}

impl DiscardInput for TcpStream {
    fn discard_input(&mut self) {
        let mut junk = [0u8; 256];
        while matches!(self.try_read(&mut junk), Ok(n) if n > 0) {}
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for FreshInput<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.reading = true;
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + DiscardInput + Unpin> tokio::io::AsyncWrite for FreshInput<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.reading {
            self.reading = false;
            self.inner.discard_input();
        }
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn fresh<T>(inner: T) -> FreshInput<T> {
    FreshInput {
        inner,
        reading: false,
    }
}

/// A connection to a bus: a tokio-modbus context that is rebuilt after any failure that may
/// have left it out of step (a timeout, a garbled reply).
pub struct ModbusLink {
    protocol: BusProtocol,
    link: Link,
    timeout: Duration,
    ctx: Option<Context>,
}

pub fn open_serial(s: &SerialConfig) -> std::io::Result<tokio_serial::SerialStream> {
    let parity = match s.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
    };
    let data_bits = match s.data_bits {
        5 => tokio_serial::DataBits::Five,
        6 => tokio_serial::DataBits::Six,
        7 => tokio_serial::DataBits::Seven,
        _ => tokio_serial::DataBits::Eight,
    };
    let stop_bits = if s.stop_bits == 2 {
        tokio_serial::StopBits::Two
    } else {
        tokio_serial::StopBits::One
    };
    tokio_serial::new(s.device.to_string_lossy(), s.baud)
        .parity(parity)
        .data_bits(data_bits)
        .stop_bits(stop_bits)
        .open_native_async()
        .and_then(|port| {
            // Late replies from an earlier transaction must not be read as this one's.
            use tokio_serial::SerialPort;
            port.clear(tokio_serial::ClearBuffer::All)?;
            Ok(port)
        })
        .map_err(std::io::Error::from)
}

impl ModbusLink {
    pub fn new(protocol: BusProtocol, link: Link, timeout: Duration) -> ModbusLink {
        ModbusLink {
            protocol,
            link,
            timeout,
            ctx: None,
        }
    }

    async fn connect(&mut self) -> Result<&mut Context, PollError> {
        if self.ctx.is_none() {
            let ctx = match &self.link {
                Link::Serial(s) => {
                    let port = open_serial(s).map_err(|e| {
                        PollError::Link(format!("cannot open {}: {e}", s.device.display()))
                    })?;
                    rtu::attach_slave(fresh(port), Slave(0))
                }
                Link::Tcp(addr) => {
                    let stream = tokio::time::timeout(self.timeout, TcpStream::connect(addr))
                        .await
                        .map_err(|_| PollError::Link(format!("connect to {addr} timed out")))?
                        .map_err(|e| PollError::Link(format!("connect to {addr}: {e}")))?;
                    let _ = stream.set_nodelay(true);
                    if self.protocol == BusProtocol::ModbusRtuOverTcp {
                        rtu::attach_slave(fresh(stream), Slave(0))
                    } else {
                        tcp::attach_slave(stream, Slave(0))
                    }
                }
            };
            self.ctx = Some(ctx);
        }
        self.ctx
            .as_mut()
            .ok_or_else(|| PollError::Link("not connected".into()))
    }

    /// One read request with a timeout. A failure other than an exception reply drops the
    /// connection so the next request starts clean.
    pub async fn read(
        &mut self,
        unit: u8,
        kind: RegisterKind,
        start: u16,
        count: u16,
    ) -> Result<Vec<u16>, PollError> {
        let timeout = self.timeout;
        let ctx = self.connect().await?;
        ctx.set_slave(Slave(unit));
        // `Client::call` rather than the `Reader` methods: those debug-assert on a reply of
        // the wrong length (a stale reply on an RTU line), and wire data must never panic.
        let request = match kind {
            RegisterKind::Holding => Request::ReadHoldingRegisters(start, count),
            RegisterKind::Input => Request::ReadInputRegisters(start, count),
        };
        let result = match tokio::time::timeout(timeout, ctx.call(request)).await {
            Err(_) => Err(PollError::Timeout(timeout)),
            Ok(Err(e)) => Err(PollError::Link(e.to_string())),
            Ok(Ok(Err(exception))) => Err(PollError::Exception {
                code: u8::from(exception),
            }),
            Ok(Ok(Ok(
                Response::ReadHoldingRegisters(words) | Response::ReadInputRegisters(words),
            ))) if words.len() == usize::from(count) => Ok(words),
            Ok(Ok(Ok(other))) => Err(PollError::Link(format!(
                "reply does not match the request for {count} registers: {other:?}"
            ))),
        };
        if matches!(result, Err(PollError::Timeout(_) | PollError::Link(_))) {
            self.ctx = None;
        }
        result
    }
}

/// What one meter's point group needs to be polled.
#[derive(Debug, Clone)]
pub struct GroupPlan {
    pub name: String,
    pub blocks: Vec<ReadBlock>,
}

/// The result of polling one group: the values read and the errors met on the way.
#[derive(Debug, Default)]
pub struct GroupResult {
    pub values: Vec<(Arc<str>, f64)>,
    pub errors: Vec<PollError>,
    pub requests: u32,
}

impl GroupResult {
    pub fn outcome(&self) -> Outcome {
        let exception = |e: &PollError| matches!(e, PollError::Exception { .. });
        Outcome {
            answered: !self.values.is_empty() || self.errors.iter().any(exception),
            troubled: self.errors.iter().any(|e| !exception(e)),
        }
    }
}

/// Poll one group: every block, each with up to `retries` extra attempts after a timeout or
/// link failure. Stops at the first block the meter does not answer at all (it is not there;
/// the next block would cost another timeout). `frame_gap` is kept between requests.
#[allow(clippy::too_many_arguments)]
pub async fn poll_group(
    link: &mut ModbusLink,
    unit: u8,
    profile: &Profile,
    group: usize,
    blocks: &[ReadBlock],
    retries: u32,
    frame_gap: Duration,
) -> GroupResult {
    let mut out = GroupResult::default();
    let Some(points) = profile.groups.get(group).map(|g| &g.points) else {
        return out;
    };
    for block in blocks {
        let mut attempt = 0;
        let result = loop {
            out.requests += 1;
            let r = link.read(unit, block.kind, block.start, block.count).await;
            if !frame_gap.is_zero() {
                tokio::time::sleep(frame_gap).await;
            }
            match r {
                Err(PollError::Timeout(_) | PollError::Link(_)) if attempt < retries => {
                    attempt += 1;
                    continue;
                }
                r => break r,
            }
        };
        match result {
            Ok(words) => out.values.extend(
                block
                    .decode(points, &words)
                    .map(|(i, v)| (Arc::<str>::from(points[i].quantity.as_str()), v)),
            ),
            Err(e @ PollError::Exception { .. }) => out.errors.push(e),
            Err(e) => {
                out.errors.push(e);
                break;
            }
        }
    }
    out
}

struct MeterRt {
    id: Arc<str>,
    unit: u8,
    profile: Arc<Profile>,
    profile_name: Arc<str>,
    plans: Vec<GroupPlan>,
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
                profile: m.profile.clone(),
                profile_name: m.profile.name.as_str().into(),
                plans: m
                    .profile
                    .groups
                    .iter()
                    .map(|g| GroupPlan {
                        name: g.name.clone(),
                        blocks: g.plan(bus.max_registers, bus.max_gap),
                    })
                    .collect(),
            })
            .collect();
        for m in &meters {
            live.update(&m.id, |s| s.bus = bus.name.clone());
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
        let mut idle: Vec<ModbusLink> = (0..bus.concurrency)
            .map(|_| ModbusLink::new(bus.protocol, bus.link.clone(), bus.timeout))
            .collect();
        let mut inflight = FuturesUnordered::new();
        info!(
            meters = meters.len(),
            protocol = bus.protocol.as_str(),
            "bus started"
        );
        loop {
            let now = Instant::now();
            while !idle.is_empty() {
                let Some(job) = sched.pop_due(now) else { break };
                let Some(mut link) = idle.pop() else { break };
                let m = &meters[job.meter];
                let blocks = m.plans[job.group].blocks.clone();
                let profile = m.profile.clone();
                let unit = m.unit;
                let retries = if job.probe { 0 } else { bus.retries };
                let gap = bus.frame_gap;
                inflight.push(async move {
                    let ts = SystemTime::now();
                    let r = poll_group(&mut link, unit, &profile, job.group, &blocks, retries, gap)
                        .await;
                    (job, link, ts, r)
                });
            }
            let wake = sched.next_wakeup();
            tokio::select! {
                Some((job, link, ts, result)) = inflight.next() => {
                    idle.push(link);
                    let m = &meters[job.meter];
                    let outcome = result.outcome();
                    let transition = sched.complete(job, outcome, Instant::now());
                    record(&live, m, &result, transition, &m.plans[job.group].name);
                    if !result.values.is_empty() {
                        let stored = log.append(Reading {
                            meter: m.id.clone(),
                            bus: bus_name.clone(),
                            profile: m.profile_name.clone(),
                            ts,
                            seq: 0,
                            values: result.values,
                        });
                        live.update(&m.id, |s| {
                            s.last_values.extend(stored.values.iter().map(|(q, v)| (q.to_string(), *v)));
                            s.last_reading = Some(stored);
                        });
                    }
                }
                _ = sleep_until(wake), if inflight.len() < bus.concurrency => {}
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

fn record(
    live: &LiveState,
    m: &MeterRt,
    r: &GroupResult,
    transition: Option<Transition>,
    group: &str,
) {
    let last_error = r.errors.last().map(|e| e.to_string());
    match transition {
        Some(Transition::Online) => info!(meter = %m.id, unit = m.unit, "meter online"),
        Some(Transition::Offline) => warn!(
            meter = %m.id,
            unit = m.unit,
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
        for e in &r.errors {
            match e {
                PollError::Timeout(_) => s.timeouts += 1,
                PollError::Link(_) => s.link_errors += 1,
                PollError::Exception { .. } => s.exceptions += 1,
            }
        }
        if let Some(e) = &last_error {
            s.last_error = Some(e.clone());
        }
        match transition {
            Some(Transition::Online) => s.online = Some(true),
            Some(Transition::Offline) => s.online = Some(false),
            None => {}
        }
    });
}
