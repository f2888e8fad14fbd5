//! The I/O side of a Modbus bus: links through tokio-modbus, requests with timeouts and
//! retries, and the task that owns the bus.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use meterd_protocols::{
    modbus::{ReadBlock, RegisterKind},
    profile::Profile,
};
use tokio::net::TcpStream;
use tokio_modbus::{
    client::{rtu, tcp, Client, Context},
    prelude::SlaveContext,
    Request, Response, Slave,
};
use tokio_serial::SerialPortBuilderExt;

use super::{GroupResult, PollError};
use crate::config::{BusProtocol, Link, Parity, SerialConfig};

/// A transport that discards unread input when a new request starts (the first write after a
/// read). RTU frames carry no transaction id: without this, a reply that arrives after its
/// request timed out would be taken as the answer to the next identical request. It also
/// notes when the peer closed the stream: tokio-modbus reports that end of stream as
/// whatever the last OS error happened to be ("Operation now in progress").
#[derive(Debug)]
struct FreshInput<T> {
    inner: T,
    reading: bool,
    closed: Arc<AtomicBool>,
}

pub(crate) trait DiscardInput {
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
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, std::task::Poll::Ready(Ok(()))) && buf.filled().len() == before {
            self.closed.store(true, Ordering::Relaxed);
        }
        r
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

fn fresh<T>(inner: T, closed: &Arc<AtomicBool>) -> FreshInput<T> {
    closed.store(false, Ordering::Relaxed);
    FreshInput {
        inner,
        reading: false,
        closed: closed.clone(),
    }
}

/// A connection to a bus: a tokio-modbus context that is rebuilt after any failure that may
/// have left it out of step (a timeout, a garbled reply).
pub struct ModbusLink {
    protocol: BusProtocol,
    link: Link,
    timeout: Duration,
    ctx: Option<Context>,
    /// The peer closed the stream of the current connection.
    closed: Arc<AtomicBool>,
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
            closed: Arc::default(),
        }
    }

    async fn connect(&mut self) -> Result<&mut Context, PollError> {
        if self.ctx.is_none() {
            let ctx = match &self.link {
                Link::Serial(s) => {
                    let port = open_serial(s).map_err(|e| {
                        PollError::Link(format!("cannot open {}: {e}", s.device.display()))
                    })?;
                    rtu::attach_slave(fresh(port, &self.closed), Slave(0))
                }
                Link::Tcp(addr) => {
                    let stream = tokio::time::timeout(self.timeout, TcpStream::connect(addr))
                        .await
                        .map_err(|_| PollError::Link(format!("connect to {addr} timed out")))?
                        .map_err(|e| PollError::Link(format!("connect to {addr}: {e}")))?;
                    let _ = stream.set_nodelay(true);
                    if self.protocol == BusProtocol::ModbusRtuOverTcp {
                        rtu::attach_slave(fresh(stream, &self.closed), Slave(0))
                    } else {
                        tcp::attach_slave(fresh(stream, &self.closed), Slave(0))
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
            Ok(Err(_)) if self.closed.load(Ordering::Relaxed) => {
                Err(PollError::Link("the peer closed the connection".into()))
            }
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

/// Poll one group: every block, each with up to `retries` extra attempts after a timeout or
/// link failure. Stops at the first block the meter does not answer at all (it is not there;
/// the next block would cost another timeout). `frame_gap` is kept between requests.
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
                    .map(|(i, v)| (points[i].quantity.clone(), v)),
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
