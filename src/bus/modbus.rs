//! The I/O side of a Modbus bus: requests over the bus's link (`link.rs`) with timeouts and
//! retries; the register plan, the request and reply checks and decoding are
//! `protocols::modbus`.
//!
//! Modbus TCP is framed here (`protocols::modbus::tcp`), RTU by tokio-modbus. tokio-modbus
//! frames through tokio-util's `Framed`, which gives every connection an 8 KiB read and an
//! 8 KiB write buffer. A frame is at most 260 bytes, and a gateway may hold a connection per
//! meter (a Modbus TCP meter with an address of its own is a bus of its own): 16 KiB a
//! connection was two thirds of what a bus cost (BENCHMARKS.md, "Tenth session"). MBAP
//! framing is a length-prefixed header; its checks are tested in `protocols`. RTU framing has
//! no length field and must resynchronise on a shared line, which tokio-modbus does, so RTU
//! stays with it: a serial line is one connection, not one per meter.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use meterd_protocols::{
    modbus::{master, tcp as mbap, ReadBlock, RegisterKind},
    profile::Profile,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_modbus::{
    client::{rtu, Client, Context},
    prelude::SlaveContext,
    Request, Response, Slave,
};

use super::{
    link::{self, fresh},
    GroupResult, PollError,
};
use crate::config::{BusProtocol, Link};

/// A connection to a bus, rebuilt after any failure that may have left it out of step (a
/// timeout, a garbled reply).
pub struct ModbusLink {
    protocol: BusProtocol,
    link: Link,
    timeout: Duration,
    conn: Option<Connection>,
    /// The registers of the last reply.
    words: Vec<u16>,
    /// The peer closed the stream of the current RTU connection.
    closed: Arc<AtomicBool>,
}

enum Connection {
    Tcp(TcpConnection),
    Rtu(Context),
}

/// A Modbus TCP connection: the stream, the last transaction id and room for one frame.
struct TcpConnection {
    stream: link::Stream,
    transaction: u16,
    buf: Box<[u8; mbap::MAX_FRAME]>,
}

impl TcpConnection {
    /// Send a request and read its reply; the reply's PDU is `self.buf[7..len]`.
    async fn exchange(
        &mut self,
        unit: u8,
        pdu: &[u8],
    ) -> Result<std::ops::Range<usize>, PollError> {
        let link = |e: std::io::Error| PollError::Link(e.to_string());
        self.transaction = self.transaction.wrapping_add(1);
        // The request is framed in the reply's buffer: no allocation per exchange.
        let len = 7 + pdu.len();
        let Some(request) = self.buf.get_mut(..len) else {
            return Err(PollError::Link(format!(
                "a request of {} bytes is longer than Modbus TCP allows",
                pdu.len()
            )));
        };
        request[..7].copy_from_slice(&mbap::header(self.transaction, unit, pdu.len()));
        request[7..].copy_from_slice(pdu);
        self.stream.write_all(request).await.map_err(link)?;
        let mut filled = 0;
        loop {
            match mbap::scan(&self.buf[..filled]) {
                Err(bad) => return Err(PollError::Link(bad.to_string())),
                Ok(Some(frame)) if (frame.transaction, frame.unit) != (self.transaction, unit) => {
                    return Err(PollError::Link(format!(
                        "reply to transaction {} of unit {}, not {} of unit {unit}",
                        frame.transaction, frame.unit, self.transaction
                    )))
                }
                Ok(Some(frame)) => return Ok(7..frame.len),
                Ok(None) => {}
            }
            // A frame is at most the buffer's size (`scan` refuses longer headers), so there
            // is always room for the rest of it.
            let n = self
                .stream
                .read(&mut self.buf[filled..])
                .await
                .map_err(link)?;
            if n == 0 {
                return Err(PollError::Link("the peer closed the connection".into()));
            }
            filled += n;
        }
    }
}

impl ModbusLink {
    pub fn new(protocol: BusProtocol, link: Link, timeout: Duration) -> ModbusLink {
        ModbusLink {
            protocol,
            link,
            timeout,
            conn: None,
            words: Vec::new(),
            closed: Arc::default(),
        }
    }

    async fn connect(&mut self) -> Result<(), PollError> {
        if self.conn.is_none() {
            let stream = link::open(&self.link, self.timeout).await?;
            // MBAP on Modbus TCP; RTU frames on a serial line and through a serial server.
            let conn = if self.protocol == BusProtocol::ModbusTcp {
                Connection::Tcp(TcpConnection {
                    stream,
                    transaction: 0,
                    buf: Box::new([0; mbap::MAX_FRAME]),
                })
            } else {
                Connection::Rtu(rtu::attach_slave(fresh(stream, &self.closed), Slave(0)))
            };
            self.conn = Some(conn);
        }
        Ok(())
    }

    /// One read request with a timeout: the registers read, or why there are none. A failure
    /// other than an exception reply drops the connection so the next request starts clean.
    pub async fn read(
        &mut self,
        unit: u8,
        kind: RegisterKind,
        start: u16,
        count: u16,
    ) -> Result<&[u16], PollError> {
        let timeout = self.timeout;
        self.connect().await?;
        let Some(conn) = self.conn.as_mut() else {
            return Err(PollError::Link("not connected".into()));
        };
        let result = match conn {
            Connection::Tcp(c) => {
                let pdu = master::read_request(kind, start, count);
                match tokio::time::timeout(timeout, c.exchange(unit, &pdu)).await {
                    Err(_) => Err(PollError::Timeout(timeout)),
                    Ok(Err(e)) => Err(e),
                    Ok(Ok(range)) => {
                        let reply = &c.buf[range];
                        match master::read_reply(kind, count, reply, &mut self.words) {
                            Ok(()) => Ok(()),
                            Err(master::ReplyError::Exception(code)) => {
                                Err(PollError::Exception { code })
                            }
                            Err(e) => Err(PollError::Link(e.to_string())),
                        }
                    }
                }
            }
            Connection::Rtu(ctx) => {
                ctx.set_slave(Slave(unit));
                // `Client::call` rather than the `Reader` methods: those debug-assert on a
                // reply of the wrong length (a stale reply on an RTU line), and wire data must
                // never panic.
                let request = match kind {
                    RegisterKind::Holding => Request::ReadHoldingRegisters(start, count),
                    RegisterKind::Input => Request::ReadInputRegisters(start, count),
                };
                match tokio::time::timeout(timeout, ctx.call(request)).await {
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
                    ))) if words.len() == usize::from(count) => {
                        self.words = words;
                        Ok(())
                    }
                    Ok(Ok(Ok(other))) => Err(PollError::Link(format!(
                        "reply does not match the request for {count} registers: {other:?}"
                    ))),
                }
            }
        };
        match result {
            Ok(()) => Ok(&self.words),
            Err(e) => {
                if matches!(e, PollError::Timeout(_) | PollError::Link(_)) {
                    self.conn = None;
                }
                Err(e)
            }
        }
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
                    .decode(points, words)
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

#[cfg(test)]
mod tests {
    use super::*;
    use meterd_protocols::modbus::slave;
    use std::sync::atomic::AtomicUsize;
    use tokio::net::TcpListener;

    /// A listener on a free loopback port, its address, and a count of connections for the
    /// server on it to keep.
    async fn loopback() -> (TcpListener, String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local address").to_string();
        (listener, addr, Arc::default())
    }

    /// What a test server answers to a request frame (transaction id, unit id, PDU).
    type Answer = fn(u16, u8, &[u8]) -> Vec<u8>;

    /// A Modbus TCP server on loopback answering every request with `answer` (closing the
    /// connection instead when there is none), written one byte at a time when `dribble`; it
    /// counts the connections it accepted.
    async fn server(answer: Option<Answer>, dribble: bool) -> (String, Arc<AtomicUsize>) {
        let (listener, addr, accepted) = loopback().await;
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut request = [0u8; 12];
                    while sock.read_exact(&mut request).await.is_ok() {
                        let Some(answer) = answer else {
                            return;
                        };
                        let tid = u16::from_be_bytes([request[0], request[1]]);
                        let reply = answer(tid, request[6], &request[7..]);
                        if dribble {
                            for b in reply {
                                let _ = sock.write_all(&[b]).await;
                                tokio::time::sleep(Duration::from_millis(2)).await;
                            }
                        } else {
                            let _ = sock.write_all(&reply).await;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn registers(tid: u16, unit: u8, _: &[u8]) -> Vec<u8> {
        mbap::frame(tid, unit, &slave::read_response(4, &[0x0102, 0x0304]))
    }

    fn link(addr: String) -> ModbusLink {
        ModbusLink::new(
            BusProtocol::ModbusTcp,
            Link::Tcp(addr),
            Duration::from_secs(2),
        )
    }

    #[tokio::test]
    async fn replies_that_answer_the_request_keep_the_connection_even_when_they_arrive_byte_by_byte(
    ) {
        // (what the server answers, one byte at a time, what is read)
        let cases: [(Answer, bool, Result<Vec<u16>, PollError>); 3] = [
            (registers, false, Ok(vec![0x0102, 0x0304])),
            (registers, true, Ok(vec![0x0102, 0x0304])),
            (
                |tid, unit, _| mbap::frame(tid, unit, &slave::exception_response(4, 2)),
                false,
                Err(PollError::Exception { code: 2 }),
            ),
        ];
        for (answer, dribble, want) in cases {
            let (addr, accepted) = server(Some(answer), dribble).await;
            let mut link = link(addr);
            for _ in 0..2 {
                let got = link
                    .read(7, RegisterKind::Input, 0x48, 2)
                    .await
                    .map(<[u16]>::to_vec);
                assert_eq!(got, want, "one byte at a time: {dribble}");
            }
            assert_eq!(accepted.load(Ordering::SeqCst), 1);
        }
    }

    #[tokio::test]
    async fn replies_that_do_not_answer_the_request_fail_and_the_next_request_reconnects() {
        // (what the server answers, what the error says)
        let cases: [(Option<Answer>, &str); 6] = [
            (
                Some(|tid, unit, p| registers(tid.wrapping_add(1), unit, p)),
                "reply to transaction 2 of unit 7, not 1 of unit 7",
            ),
            (
                Some(|tid, _, p| registers(tid, 8, p)),
                "reply to transaction 1 of unit 8, not 1 of unit 7",
            ),
            (
                Some(|tid, unit, p| {
                    let mut f = registers(tid, unit, p);
                    f[2] = 0xFF;
                    f
                }),
                "bad MBAP header: protocol id 65280, length 7",
            ),
            (
                Some(|tid, unit, _| mbap::frame(tid, unit, &slave::read_response(4, &[1]))),
                "reply carries 2 bytes, not the 4 of the registers asked for",
            ),
            (
                Some(|tid, unit, _| mbap::frame(tid, unit, &slave::read_response(3, &[1, 2]))),
                "reply has function code 3, not 4",
            ),
            (None, "the peer closed the connection"),
        ];
        for (answer, error) in cases {
            let (addr, accepted) = server(answer, false).await;
            let mut link = link(addr);
            for attempt in 1..=2 {
                let r = link
                    .read(7, RegisterKind::Input, 0x48, 2)
                    .await
                    .map(<[u16]>::to_vec);
                assert_eq!(r, Err(PollError::Link(error.into())), "{error}");
                assert_eq!(accepted.load(Ordering::SeqCst), attempt, "{error}");
            }
        }
    }

    /// Registers as tokio-modbus's own TCP server serves them: each holds its address plus
    /// 1,000 times the unit id (input registers) or plus 1 (holding registers); addresses from
    /// 1,000 up are refused.
    struct Registers;

    impl tokio_modbus::server::Service for Registers {
        type Request = tokio_modbus::prelude::SlaveRequest<'static>;
        type Response = Response;
        type Exception = tokio_modbus::ExceptionCode;
        type Future = std::future::Ready<Result<Response, tokio_modbus::ExceptionCode>>;

        fn call(&self, req: Self::Request) -> Self::Future {
            let words = |start: u16, count: u16, plus: u16| {
                (start..start + count)
                    .map(|a| a.wrapping_add(plus))
                    .collect()
            };
            std::future::ready(match req.request {
                Request::ReadInputRegisters(start, count) if start < 1000 => Ok(
                    Response::ReadInputRegisters(words(start, count, u16::from(req.slave) * 1000)),
                ),
                Request::ReadHoldingRegisters(start, count) if start < 1000 => {
                    Ok(Response::ReadHoldingRegisters(words(start, count, 1)))
                }
                _ => Err(tokio_modbus::ExceptionCode::IllegalDataAddress),
            })
        }
    }

    #[tokio::test]
    async fn what_tokio_modbus_own_server_serves_is_read_register_for_register() {
        use tokio_modbus::server::tcp::{accept_tcp_connection, Server};
        let (listener, addr, accepted) = loopback().await;
        let count = accepted.clone();
        tokio::spawn(async move {
            let on_connected = |stream, peer| {
                count.fetch_add(1, Ordering::SeqCst);
                async move { accept_tcp_connection(stream, peer, |_| Ok(Some(Registers))) }
            };
            let _ = Server::new(listener).serve(&on_connected, |_| {}).await;
        });
        // (unit, kind, start, count, what is read)
        type Case = (u8, RegisterKind, u16, u16, Result<Vec<u16>, PollError>);
        let cases: [Case; 4] = [
            (1, RegisterKind::Input, 0, 2, Ok(vec![1000, 1001])),
            (7, RegisterKind::Input, 100, 125, Ok((7100..7225).collect())),
            (247, RegisterKind::Holding, 999, 1, Ok(vec![1000])),
            (
                2,
                RegisterKind::Input,
                1000,
                1,
                Err(PollError::Exception { code: 2 }),
            ),
        ];
        let mut link = link(addr);
        // Rounds enough for transaction ids past one byte, on one connection throughout.
        for round in 0..80 {
            for (unit, kind, start, count, want) in &cases {
                let got = link
                    .read(*unit, *kind, *start, *count)
                    .await
                    .map(<[u16]>::to_vec);
                assert_eq!(
                    &got, want,
                    "round {round}, unit {unit}, {kind:?} {start}+{count}"
                );
            }
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_meter_that_does_not_answer_or_stalls_mid_reply_times_out_and_the_next_request_reconnects(
    ) {
        // (what the server answers, as bytes before it stalls)
        let cases: [(Answer, &str); 3] = [
            (|_, _, _| Vec::new(), "nothing"),
            // A header that promises a PDU, and no PDU.
            (
                |tid, unit, p| registers(tid, unit, p)[..7].to_vec(),
                "the header only",
            ),
            (
                |tid, unit, p| registers(tid, unit, p)[..10].to_vec(),
                "part of the PDU",
            ),
        ];
        for (answer, what) in cases {
            let (addr, accepted) = server(Some(answer), false).await;
            let timeout = Duration::from_millis(100);
            let mut link = ModbusLink::new(BusProtocol::ModbusTcp, Link::Tcp(addr), timeout);
            for attempt in 1..=2 {
                let r = link
                    .read(7, RegisterKind::Input, 0x48, 2)
                    .await
                    .map(<[u16]>::to_vec);
                assert_eq!(r, Err(PollError::Timeout(timeout)), "{what}");
                assert_eq!(accepted.load(Ordering::SeqCst), attempt, "{what}");
            }
        }
    }
}
