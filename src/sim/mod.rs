//! Simulated meters for `meterd simulate`, `meterd demo`, tests and benches.
//!
//! Meters answer as unit ids on a Modbus TCP port or on a serial line (a pty the simulator
//! creates, or a device). Faults can be set per unit at any time: silence, exception replies,
//! garbage bytes, a corrupted CRC, slow replies.

pub mod dlt645;
pub mod dlt698;
pub mod model;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use meterd_protocols::{
    modbus::{
        slave::{self, exception, Request, RtuScan},
        tcp, RegisterKind,
    },
    profile::Profile,
};
use rand::Rng;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpListener,
};

pub use model::MeterModel;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    /// No reply at all.
    Silent,
    /// An exception reply with this code.
    Exception(u8),
    /// Random bytes instead of a reply.
    Garbage,
    /// A reply whose CRC is wrong (on TCP, which has no CRC: a malformed header).
    BadCrc,
    /// The right reply, after this delay.
    Slow(Duration),
    /// DL/T 645: after this delay, answer every read and follow-up with "more frames follow",
    /// for ever (a meter that would hold its line). Modbus meters answer normally.
    MoreFrames(Duration),
}

impl std::str::FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Fault, String> {
        Ok(match s {
            "none" => Fault::None,
            "silent" => Fault::Silent,
            "garbage" => Fault::Garbage,
            "bad-crc" => Fault::BadCrc,
            _ => {
                if let Some(code) = s.strip_prefix("exception") {
                    let code = code.trim_start_matches([':', '=']);
                    Fault::Exception(if code.is_empty() {
                        2
                    } else {
                        code.parse()
                            .map_err(|_| format!("bad exception code in {s:?}"))?
                    })
                } else if let Some(d) = s.strip_prefix("slow:").or_else(|| s.strip_prefix("slow="))
                {
                    Fault::Slow(humantime::parse_duration(d).map_err(|e| format!("{s:?}: {e}"))?)
                } else if let Some(d) = s
                    .strip_prefix("more-frames:")
                    .or_else(|| s.strip_prefix("more-frames="))
                {
                    Fault::MoreFrames(
                        humantime::parse_duration(d).map_err(|e| format!("{s:?}: {e}"))?,
                    )
                } else if s == "more-frames" {
                    Fault::MoreFrames(Duration::ZERO)
                } else {
                    return Err(format!("unknown fault {s:?}: use none, silent, exception[:CODE], garbage, bad-crc, slow:DURATION or more-frames[:DURATION]"));
                }
            }
        })
    }
}

/// What to put on the wire for a request.
#[derive(Debug, PartialEq)]
enum Reply {
    Nothing,
    Pdu(Vec<u8>),
    Garbage(Vec<u8>),
    BadCrc(Vec<u8>),
}

#[derive(Debug, Default)]
pub struct Simulator {
    meters: Mutex<BTreeMap<u8, MeterModel>>,
    faults: Mutex<HashMap<u8, Fault>>,
    /// Requests received (any unit).
    pub requests: AtomicU64,
    /// RTU only: a real line's timing, for line-utilisation benches.
    pacing: Option<Pacing>,
    /// With pacing: nanoseconds the line was busy (requests and replies on the wire, the
    /// meters' reply delays).
    pub busy_ns: AtomicU64,
}

/// The timing of a real RS-485 line: a pty delivers every frame at once, a line at its baud
/// rate, and a meter starts to answer only after its turnaround delay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pacing {
    pub baud: u32,
    /// Start, data, parity and stop bits.
    pub bits_per_char: u32,
    pub reply_delay: Duration,
}

impl Pacing {
    pub fn wire_time(&self, bytes: usize) -> Duration {
        Duration::from_secs_f64(
            bytes as f64 * f64::from(self.bits_per_char) / f64::from(self.baud.max(1)),
        )
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Simulator {
    pub fn new() -> Arc<Simulator> {
        Arc::new(Simulator::default())
    }

    /// A simulator whose RTU line keeps a real line's timing (half duplex: one frame on the
    /// wire at a time, each meter answering after its delay), and counts the busy time.
    pub fn paced(pacing: Pacing) -> Arc<Simulator> {
        Arc::new(Simulator {
            pacing: Some(pacing),
            ..Simulator::default()
        })
    }

    /// Add a meter at `unit`. Frozen meters keep fixed values, for exact comparisons.
    pub fn add_meter(&self, unit: u8, profile: Arc<Profile>, frozen: bool) {
        lock(&self.meters).insert(
            unit,
            MeterModel::new(profile, u64::from(unit) * 7919, frozen),
        );
    }

    pub fn set_fault(&self, unit: u8, fault: Fault) {
        lock(&self.faults).insert(unit, fault);
    }

    /// Pin a quantity of meter `unit` to a value (`None`: back to the model).
    pub fn set_value(&self, unit: u8, quantity: &str, value: Option<f64>) {
        if let Some(m) = lock(&self.meters).get_mut(&unit) {
            m.set_value(quantity, value);
        }
    }

    pub fn units(&self) -> Vec<u8> {
        lock(&self.meters).keys().copied().collect()
    }

    /// The values meter `unit` would report now.
    pub fn values(&self, unit: u8) -> Option<HashMap<&'static str, f64>> {
        lock(&self.meters)
            .get_mut(&unit)
            .map(|m| m.values(Instant::now()))
    }

    fn fault(&self, unit: u8) -> Fault {
        lock(&self.faults).get(&unit).copied().unwrap_or_default()
    }

    /// The reply to `pdu` for `unit`, and how long to wait before sending it.
    fn handle(&self, unit: u8, pdu: &[u8]) -> (Reply, Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut meters = lock(&self.meters);
        let Some(meter) = meters.get_mut(&unit) else {
            return (Reply::Nothing, Duration::ZERO);
        };
        let function = pdu.first().copied().unwrap_or(0);
        let answer = match slave::parse_pdu(pdu) {
            Err(code) => slave::exception_response(function, code),
            Ok(req) => match req {
                Request::ReadHolding { start, count } | Request::ReadInput { start, count } => {
                    let kind = if function == 3 {
                        RegisterKind::Holding
                    } else {
                        RegisterKind::Input
                    };
                    match meter.registers(kind, start, count, Instant::now()) {
                        Ok(words) => slave::read_response(function, &words),
                        Err(code) => slave::exception_response(function, code),
                    }
                }
                Request::WriteSingle { address, value } => {
                    meter.write(address, &[value]);
                    pdu[..5.min(pdu.len())].to_vec()
                }
                Request::WriteMultiple { start, values } => {
                    meter.write(start, &values);
                    pdu[..5.min(pdu.len())].to_vec()
                }
                Request::Unsupported { function } => {
                    slave::exception_response(function, exception::ILLEGAL_FUNCTION)
                }
            },
        };
        drop(meters);
        match self.fault(unit) {
            Fault::None | Fault::MoreFrames(_) => (Reply::Pdu(answer), Duration::ZERO),
            Fault::Silent => (Reply::Nothing, Duration::ZERO),
            Fault::Exception(code) => (
                Reply::Pdu(slave::exception_response(function, code)),
                Duration::ZERO,
            ),
            Fault::Garbage => {
                let mut rng = rand::thread_rng();
                let n = rng.gen_range(3..40);
                (
                    Reply::Garbage((0..n).map(|_| rng.gen()).collect()),
                    Duration::ZERO,
                )
            }
            Fault::BadCrc => (Reply::BadCrc(answer), Duration::ZERO),
            Fault::Slow(d) => (Reply::Pdu(answer), d),
        }
    }

    /// Serve Modbus TCP on `listener` until the task is dropped.
    pub async fn serve_tcp(self: Arc<Self>, listener: TcpListener) {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            let _ = sock.set_nodelay(true);
            let sim = self.clone();
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(512);
                let mut chunk = [0u8; 512];
                loop {
                    match tcp::scan(&buf) {
                        Err(_) => return,
                        Ok(Some(tcp::Frame {
                            transaction: tid,
                            unit,
                            pdu,
                            len,
                        })) => {
                            let (reply, delay) = sim.handle(unit, pdu);
                            buf.drain(..len);
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            let bytes = match reply {
                                Reply::Nothing => continue,
                                Reply::Pdu(p) => tcp::frame(tid, unit, &p),
                                Reply::Garbage(g) => g,
                                Reply::BadCrc(p) => {
                                    let mut f = tcp::frame(tid, unit, &p);
                                    f[2] = 0xFF;
                                    f
                                }
                            };
                            if sock.write_all(&bytes).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        },
                    }
                }
            });
        }
    }

    /// Serve Modbus RTU on a serial port or pty until it closes. A slow meter's reply is
    /// sent after its delay without holding up the line: the others keep answering, and the
    /// late reply lands on the wire when it is due, as on a real bus.
    pub async fn serve_rtu<S: AsyncRead + AsyncWrite + Send + 'static>(self: Arc<Self>, port: S) {
        let (mut rx, mut tx) = tokio::io::split(port);
        let (out_tx, mut out_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        let writer = tokio::spawn(async move {
            while let Some(bytes) = out_rx.recv().await {
                if tx.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        });
        let mut buf: Vec<u8> = Vec::with_capacity(512);
        let mut chunk = [0u8; 512];
        loop {
            match slave::scan_rtu_request(&buf) {
                RtuScan::Frame { unit, pdu, len } => {
                    buf.drain(..len);
                    let (reply, delay) = self.handle(unit, &pdu);
                    let bytes = match reply {
                        Reply::Nothing => continue,
                        Reply::Pdu(p) => slave::rtu_frame(unit, &p),
                        Reply::Garbage(g) => g,
                        Reply::BadCrc(p) => {
                            let mut f = slave::rtu_frame(unit, &p);
                            if let Some(last) = f.last_mut() {
                                *last ^= 0x5A;
                            }
                            f
                        }
                    };
                    if let Some(p) = self.pacing {
                        // Half duplex, in order: the request's wire time (the pty delivered
                        // it at once), the meter's turnaround, the reply's wire time.
                        let request = p.wire_time(len);
                        let reply = p.reply_delay + delay + p.wire_time(bytes.len());
                        tokio::time::sleep(request + reply).await;
                        let _ = out_tx.send(bytes);
                        self.busy_ns.fetch_add(
                            u64::try_from((request + reply).as_nanos()).unwrap_or(u64::MAX),
                            Ordering::Relaxed,
                        );
                    } else if delay.is_zero() {
                        let _ = out_tx.send(bytes);
                    } else {
                        let out = out_tx.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            let _ = out.send(bytes);
                        });
                    }
                }
                RtuScan::Junk { skip } => {
                    buf.drain(..skip.min(buf.len()));
                }
                RtuScan::Incomplete => {
                    // A partial frame followed by silence is junk: resynchronise on the next.
                    let read = tokio::time::timeout(Duration::from_millis(50), rx.read(&mut chunk));
                    match read.await {
                        Err(_) => buf.clear(),
                        Ok(Ok(0)) => tokio::time::sleep(Duration::from_millis(20)).await,
                        Ok(Err(e)) if e.raw_os_error() == Some(5) => {
                            // EIO on a pty master: nobody has the other end open right now.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Ok(Err(_)) => break,
                        Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            }
        }
        writer.abort();
    }
}

/// What a meter simulator's scanner found at the front of its input.
pub enum Found<F> {
    /// A request, and how many bytes it took.
    Frame(F, usize),
    /// Junk to drop.
    Skip(usize),
    /// Nothing complete yet; this many leading bytes are junk.
    Incomplete(usize),
}

/// What a simulated line does with one request: the request's own wire time (a pty delivers
/// it at once; a line takes its time), then each reply after its delay (the meter's turnaround
/// and the reply's wire time). No replies: silence.
pub struct Answer {
    pub request_time: Duration,
    pub replies: Vec<(Duration, Vec<u8>)>,
}

/// The serving loop of the DL/T 645 and 698.45 simulators: half duplex, one request at a time,
/// the busy time of the line counted into `busy_ns`. A partial frame followed by 500 ms of
/// silence is dropped; a pty without a master keeps the loop waiting, not failing.
pub async fn serve_frames<S, F>(
    port: S,
    busy_ns: &AtomicU64,
    mut scan: impl FnMut(&[u8]) -> Found<F>,
    mut answer: impl FnMut(&F, usize) -> Option<Answer>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rx, mut tx) = tokio::io::split(port);
    let mut buf: Vec<u8> = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        match scan(&buf) {
            Found::Frame(f, n) => {
                buf.drain(..n.min(buf.len()));
                let Some(a) = answer(&f, n) else { continue };
                tokio::time::sleep(a.request_time).await;
                let mut busy = a.request_time;
                for (delay, bytes) in a.replies {
                    busy += delay;
                    tokio::time::sleep(delay).await;
                    if tx.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                busy_ns.fetch_add(
                    u64::try_from(busy.as_nanos()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
            }
            Found::Skip(n) => {
                buf.drain(..n.min(buf.len()));
            }
            Found::Incomplete(skip) => {
                buf.drain(..skip.min(buf.len()));
                match tokio::time::timeout(Duration::from_millis(500), rx.read(&mut chunk)).await {
                    // Silence inside a frame for longer than a byte takes: drop it.
                    Err(_) => buf.clear(),
                    Ok(Ok(0)) => tokio::time::sleep(Duration::from_millis(20)).await,
                    Ok(Err(e)) if e.raw_os_error() == Some(5) => {
                        // EIO on a pty master: nobody has the other end open right now.
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    Ok(Err(_)) => return,
                    Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        }
    }
}

/// A simulator that serves one port at a time, for `meterd simulate` and the demo.
pub trait LineSimulator: Send + Sync + 'static {
    fn serve_port<S: AsyncRead + AsyncWrite + Send + 'static>(
        self: Arc<Self>,
        port: S,
    ) -> impl std::future::Future<Output = ()> + Send;
}

/// A pseudo-terminal pair: serve on the first, hand the path of the second to a master.
/// The second end is kept open by the returned file (closing every handle on it makes the
/// first end fail); it is a plain descriptor, without the exclusive lock a serial port
/// takes, so a master can open the path.
pub fn pty_pair() -> std::io::Result<(tokio_serial::SerialStream, std::fs::File, String)> {
    use std::os::unix::fs::OpenOptionsExt;
    use tokio_serial::SerialPort;
    let (master, other) = tokio_serial::SerialStream::pair().map_err(std::io::Error::from)?;
    let path = other
        .name()
        .ok_or_else(|| std::io::Error::other("pty has no name"))?;
    const O_NOCTTY: i32 = 0o400;
    let keep = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(O_NOCTTY)
        .open(&path)?;
    drop(other);
    Ok((master, keep, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_from_their_cli_names() {
        for (s, f) in [
            ("silent", Fault::Silent),
            ("exception", Fault::Exception(2)),
            ("exception:4", Fault::Exception(4)),
            ("garbage", Fault::Garbage),
            ("bad-crc", Fault::BadCrc),
            ("slow:300ms", Fault::Slow(Duration::from_millis(300))),
            (
                "more-frames:900ms",
                Fault::MoreFrames(Duration::from_millis(900)),
            ),
            ("none", Fault::None),
        ] {
            assert_eq!(s.parse::<Fault>(), Ok(f), "{s}");
        }
        assert!("loud".parse::<Fault>().is_err());
    }
}
