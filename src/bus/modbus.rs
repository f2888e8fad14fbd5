//! The I/O side of a Modbus bus: tokio-modbus over the bus's link (`link.rs`), requests
//! with timeouts and retries; the register plan and decoding are `protocols::modbus`.

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
use tokio_modbus::{
    client::{rtu, tcp, Client, Context},
    prelude::SlaveContext,
    Request, Response, Slave,
};

use super::{
    link::{self, fresh},
    GroupResult, PollError,
};
use crate::config::{BusProtocol, Link};

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
            let stream = fresh(link::open(&self.link, self.timeout).await?, &self.closed);
            // RTU frames on a serial line and through a serial server; MBAP on Modbus TCP.
            let ctx = if self.protocol == BusProtocol::ModbusTcp {
                tcp::attach_slave(stream, Slave(0))
            } else {
                rtu::attach_slave(stream, Slave(0))
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
    // Room for every point at once, rather than growing block by block.
    out.values.reserve_exact(points.len());
    for block in blocks {
        let mut retry = super::Retry::new(retries, frame_gap);
        let result = loop {
            out.requests += 1;
            let r = link.read(unit, block.kind, block.start, block.count).await;
            if let Some(r) = retry.after(r).await {
                break r;
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
