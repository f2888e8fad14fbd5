//! Simulated DL/T 698.45 meters on a pty, serial device or TCP: values from the same model as
//! the other simulators, encoded with the catalogue's types and scalers; GET Normal,
//! NormalList and Record (the daily freeze by freeze time or the newest), SET of the clock;
//! replies after a meter-like delay, paced at the baud rate (8E1). Per meter: meters that
//! refuse lists (ERROR-Response) or plain reads (DAR 20 until wrapped in SECURITY), replies
//! split into link fragments, drifting clocks, and the faults of the other simulators.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use meterd_protocols::{
    dlt698::{
        apdu::{
            Apdu, ClientService, GetRequest, GetResponse, GetResult, NextResult, Payload,
            RecordResult, ResponsePayload, ResultNormal, ResultRecord, ServerService, SetRequest,
            SetResponse,
        },
        catalogue::{self, Shape},
        data::{Csd, Data, Oad, Rsd},
        frame::{self, Control, FragmentKind, FragmentWord, Frame, Scan, ServerAddress},
        plan, Dar,
    },
    profile::Profile,
};
use rand::Rng;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Fault, MeterModel};

/// The simulated meters keep China Standard Time, like the daemon's default.
const METER_UTC_OFFSET_S: i64 = 8 * 3600;

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Entry {
    address: ServerAddress,
    model: MeterModel,
    fault: Fault,
    /// How far the meter's clock is ahead of true time, in seconds.
    drift_s: i64,
    /// Answers GET-Request-NormalList (else ERROR-Response "service not supported").
    lists: bool,
    /// Answers plain GETs with DAR 20 (security authentication mismatch): only requests
    /// wrapped in SECURITY (plaintext + RN) get values, wrapped with a MAC.
    secure: bool,
    /// Splits reply APDUs longer than this into link fragments.
    max_apdu: Option<usize>,
    /// Answers lists of more results than this in application blocks (GET-Response-Next).
    block_results: Option<usize>,
    /// Blocks still to send, and the number of the last one sent.
    blocks: VecDeque<Vec<ResultNormal>>,
    block: u16,
}

/// Behaviour switches per meter, for tests and `meterd simulate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quirk {
    NoLists,
    Secure,
    Fragments(usize),
    /// At most this many results per GET-Response-Next block.
    Blocks(usize),
}

pub struct Dlt698Sim {
    entries: Mutex<Vec<Entry>>,
    /// Wire time per byte is 11 bits at this rate (8E1); `None` sends at once.
    pub baud: Option<u32>,
    /// The meter's own delay before it starts replying.
    pub reply_delay: Duration,
    pub requests: AtomicU64,
    /// Nanoseconds the line was busy: request on the wire, the meter's delay, reply on the wire.
    pub busy_ns: AtomicU64,
    /// Fragments still to send, per meter address, after each confirm.
    pending: Mutex<HashMap<Vec<u8>, VecDeque<Vec<u8>>>>,
}

impl Dlt698Sim {
    pub fn new(baud: Option<u32>) -> Arc<Dlt698Sim> {
        Arc::new(Dlt698Sim {
            entries: Mutex::new(Vec::new()),
            baud,
            reply_delay: Duration::from_millis(20),
            requests: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            pending: Mutex::new(HashMap::new()),
        })
    }

    /// Add a meter at `address` (digits as printed).
    pub fn add_meter(&self, address: ServerAddress, profile: Arc<Profile>, frozen: bool) {
        let seed = address
            .bytes
            .iter()
            .fold(11u64, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(*b)));
        let drift_s = (seed % 181) as i64 - 90;
        lock(&self.entries).push(Entry {
            address,
            model: MeterModel::new(profile, seed, frozen),
            fault: Fault::None,
            drift_s,
            lists: true,
            secure: false,
            max_apdu: None,
            block_results: None,
            blocks: VecDeque::new(),
            block: 0,
        });
    }

    fn with(&self, address: &ServerAddress, f: impl Fn(&mut Entry)) {
        for e in lock(&self.entries)
            .iter_mut()
            .filter(|e| e.address.bytes == address.bytes)
        {
            f(e);
        }
    }

    pub fn set_fault(&self, address: &ServerAddress, fault: Fault) {
        self.with(address, |e| e.fault = fault);
    }

    pub fn set_quirk(&self, address: &ServerAddress, quirk: Quirk) {
        self.with(address, |e| match quirk {
            Quirk::NoLists => e.lists = false,
            Quirk::Secure => e.secure = true,
            Quirk::Fragments(n) => e.max_apdu = Some(n.max(8)),
            Quirk::Blocks(n) => e.block_results = Some(n.max(1)),
        });
    }

    pub fn set_drift(&self, address: &ServerAddress, drift_s: i64) {
        self.with(address, |e| e.drift_s = drift_s);
    }

    /// How far a meter's clock is ahead of true time, in seconds.
    pub fn clock_drift(&self, address: &ServerAddress) -> Option<i64> {
        lock(&self.entries)
            .iter()
            .find(|e| e.address.bytes == address.bytes)
            .map(|e| e.drift_s)
    }

    pub fn addresses(&self) -> Vec<ServerAddress> {
        lock(&self.entries)
            .iter()
            .map(|e| e.address.clone())
            .collect()
    }

    /// What the meter at `address` would report now, in the contract's units.
    pub fn values(&self, address: &ServerAddress) -> Option<HashMap<&'static str, f64>> {
        lock(&self.entries)
            .iter_mut()
            .find(|e| e.address.bytes == address.bytes)
            .map(|e| e.model.values(Instant::now()))
    }

    /// The reply frames for a request frame (several when fragmented); empty for silence.
    fn answer(&self, req: &Frame) -> Vec<Vec<u8>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(word) = req.fragment {
            // A confirm of a fragment we sent: the next one.
            if word.kind == FragmentKind::Confirm {
                let mut pending = lock(&self.pending);
                if let Some(q) = pending.get_mut(&req.address.bytes) {
                    return q.pop_front().into_iter().collect();
                }
            }
            return Vec::new();
        }
        let mut entries = lock(&self.entries);
        let mut targets = entries
            .iter_mut()
            .filter(|e| req.address.matches(&e.address) && e.fault != Fault::Silent);
        let Some(e) = targets.next() else {
            return Vec::new();
        };
        if targets.next().is_some() {
            // Several meters answer a wildcard at once: their replies collide on the line.
            let mut rng = rand::thread_rng();
            let n = rng.gen_range(10..30);
            return vec![(0..n).map(|_| rng.gen()).collect()];
        }
        let Ok(request) = Apdu::decode(&req.data) else {
            return Vec::new();
        };
        let (inner, wrapped) = match &request {
            Apdu::SecurityRequest {
                payload: Payload::Plain(p),
                ..
            } => match Apdu::decode(p) {
                Ok(a) => (a, true),
                Err(_) => return Vec::new(),
            },
            other => (other.clone(), false),
        };
        let Some(reply) = respond(e, &inner, wrapped) else {
            return Vec::new();
        };
        let apdu = if wrapped {
            let mac: Vec<u8> = (0..4).map(|_| rand::thread_rng().gen()).collect();
            match reply.encode() {
                Ok(plain) => Apdu::SecurityResponse {
                    payload: ResponsePayload::Plain(plain),
                    mac: Some(mac),
                },
                Err(_) => return Vec::new(),
            }
        } else {
            reply
        };
        let Ok(bytes) = apdu.encode() else {
            return Vec::new();
        };
        let control = Control(0xC3 | (req.control.0 & 0x08));
        let base = Frame {
            control,
            address: e.address.clone(),
            client: req.client,
            fragment: None,
            data: bytes,
        };
        let frames: Vec<Frame> = match e.max_apdu {
            Some(max) if base.data.len() > max => {
                let chunks: Vec<&[u8]> = base.data.chunks(max).collect();
                let last = chunks.len() - 1;
                chunks
                    .iter()
                    .enumerate()
                    .map(|(i, c)| Frame {
                        control: Control(control.0 | 0x20),
                        fragment: Some(FragmentWord {
                            seq: i as u16,
                            kind: match i {
                                0 => FragmentKind::First,
                                i if i == last => FragmentKind::Last,
                                _ => FragmentKind::Middle,
                            },
                            reserved: 0,
                        }),
                        data: c.to_vec(),
                        ..base.clone()
                    })
                    .collect()
            }
            _ => vec![base],
        };
        let mut encoded: Vec<Vec<u8>> = frames.iter().filter_map(|f| f.encode(4).ok()).collect();
        match e.fault {
            Fault::Garbage => {
                let mut rng = rand::thread_rng();
                let n = rng.gen_range(3..40);
                return vec![(0..n).map(|_| rng.gen()).collect()];
            }
            Fault::BadCrc => {
                for b in &mut encoded {
                    let i = b.len() - 2;
                    b[i] ^= 0x5A;
                }
            }
            _ => {}
        }
        if encoded.len() > 1 {
            let first = encoded.remove(0);
            lock(&self.pending).insert(e.address.bytes.clone(), encoded.into());
            return vec![first];
        }
        encoded
    }

    fn wire_time(&self, bytes: usize) -> Duration {
        self.baud.map_or(Duration::ZERO, |b| {
            Duration::from_secs_f64(bytes as f64 * 11.0 / f64::from(b.max(1)))
        })
    }

    fn slow(&self, req: &Frame) -> Duration {
        lock(&self.entries)
            .iter()
            .find(|e| req.address.matches(&e.address))
            .and_then(|e| match e.fault {
                Fault::Slow(d) => Some(d),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// Serve requests on `port` until it closes.
    pub async fn serve<S: AsyncRead + AsyncWrite + Send + 'static>(self: Arc<Self>, port: S) {
        let sim = self.clone();
        super::serve_frames(
            port,
            &self.busy_ns,
            |buf| match frame::scan(buf) {
                Scan::Frame(f, n) => super::Found::Frame(f, n),
                Scan::Invalid { skip, .. } => super::Found::Skip(skip),
                Scan::Incomplete { skip } => super::Found::Incomplete(skip),
            },
            |f, n| {
                if f.control.from_server() {
                    return None;
                }
                let slow = sim.slow(f);
                Some(super::Answer {
                    request_time: sim.wire_time(n),
                    replies: sim
                        .answer(f)
                        .into_iter()
                        .map(|bytes| (sim.reply_delay + slow + sim.wire_time(bytes.len()), bytes))
                        .collect(),
                })
            },
        )
        .await
    }
}

impl super::LineSimulator for Dlt698Sim {
    fn serve_port<S: AsyncRead + AsyncWrite + Send + 'static>(
        self: Arc<Self>,
        port: S,
    ) -> impl std::future::Future<Output = ()> + Send {
        self.serve(port)
    }
}

/// The server APDU answering `req`, or `None` to stay silent.
fn respond(e: &mut Entry, req: &Apdu, wrapped: bool) -> Option<Apdu> {
    let Apdu::Client { piid, service, .. } = req else {
        return None;
    };
    let server = |service| Apdu::Server {
        piid: *piid,
        service,
        follow: None,
        time_tag: None,
    };
    let local = unix_now() + METER_UTC_OFFSET_S + e.drift_s;
    let refuse = |code: u8| (code != 0).then_some(Dar(code));
    let denied = match e.fault {
        Fault::Exception(code) => refuse(code),
        _ if e.secure && !wrapped => Some(Dar::AUTH_MISMATCH),
        _ => None,
    };
    let values = e.model.values(Instant::now());
    let get = |oad: Oad| -> ResultNormal {
        let result = match denied {
            Some(dar) => GetResult::Dar(dar),
            None => match value_of(oad, &values, &e.address, local) {
                Some(d) => GetResult::Data(d),
                None => GetResult::Dar(Dar::UNDEFINED),
            },
        };
        ResultNormal { oad, result }
    };
    Some(match service {
        ClientService::Get(GetRequest::Normal(oad)) => {
            server(ServerService::Get(GetResponse::Normal(get(*oad))))
        }
        ClientService::Get(GetRequest::NormalList(oads)) => {
            if !e.lists {
                server(ServerService::Error { kind: 2 })
            } else {
                let results: Vec<ResultNormal> = oads.iter().map(|o| get(*o)).collect();
                match e.block_results {
                    Some(n) if results.len() > n => {
                        e.blocks = results.chunks(n).map(<[ResultNormal]>::to_vec).collect();
                        e.block = 0;
                        next_block(e, server)
                    }
                    _ => server(ServerService::Get(GetResponse::NormalList(results))),
                }
            }
        }
        ClientService::Get(GetRequest::Next(received)) => {
            if e.blocks.is_empty() || *received != e.block {
                e.blocks.clear();
                server(ServerService::Get(GetResponse::Next {
                    last: true,
                    block: received.wrapping_add(1),
                    result: NextResult::Dar(Dar(14)),
                }))
            } else {
                next_block(e, server)
            }
        }
        ClientService::Get(GetRequest::Record(r)) if r.oad == plan::DAILY_FREEZE => {
            let result = match denied {
                Some(dar) => RecordResult::Dar(dar),
                None => RecordResult::Rows(freeze_rows(&r.rsd, &r.columns, &values, local)),
            };
            server(ServerService::Get(GetResponse::Record(ResultRecord {
                oad: r.oad,
                columns: r.columns.clone(),
                result,
            })))
        }
        ClientService::Set(SetRequest::Normal(oad, Data::DateTimeS(t))) if *oad == plan::CLOCK => {
            let dar = match (denied, plan::dts_seconds(t)) {
                (Some(d), _) => d,
                (None, Some(set)) => {
                    e.drift_s = set - METER_UTC_OFFSET_S - unix_now();
                    Dar::SUCCESS
                }
                (None, None) => Dar(8),
            };
            server(ServerService::Set(SetResponse::Normal(*oad, dar)))
        }
        _ => server(ServerService::Error { kind: 2 }),
    })
}

/// The next application block of a pending GET result.
fn next_block(e: &mut Entry, server: impl FnOnce(ServerService) -> Apdu) -> Apdu {
    e.block += 1;
    let results = e.blocks.pop_front().unwrap_or_default();
    server(ServerService::Get(GetResponse::Next {
        last: e.blocks.is_empty(),
        block: e.block,
        result: NextResult::Normal(results),
    }))
}

/// The Data a meter returns for `oad`: from the model, typed and scaled as the catalogue says.
fn value_of(
    oad: Oad,
    values: &HashMap<&'static str, f64>,
    address: &ServerAddress,
    local: i64,
) -> Option<Data> {
    match (oad.oi, oad.attribute) {
        (0x4000, 2) => return Some(Data::DateTimeS(plan::dts_of(local))),
        (0x4001 | 0x4002, 2) => return Some(Data::OctetString(address.bytes.clone())),
        _ => {}
    }
    let object = catalogue::lookup(oad)?;
    let exp = i32::from(object.scaler) + i32::from(object.shift);
    let whole: Vec<Data> = element_values(object, values)
        .into_iter()
        .map(|v| encode_number(object, catalogue::scale(v, -exp).round()))
        .collect();
    match (object.shape, oad.index) {
        (Shape::Single, _) => whole.into_iter().next(),
        (_, 0) => Some(Data::Array(whole)),
        (_, i) => whole.into_iter().nth(usize::from(i) - 1),
    }
}

/// The element values of an object from the model: named quantities, tariffs as shares of
/// the total when the model has none of their own.
fn element_values(object: &catalogue::Object, values: &HashMap<&'static str, f64>) -> Vec<f64> {
    let total = object.elements.first().and_then(|q| values.get(q)).copied();
    let shares = [1.0, 0.4, 0.3, 0.2, 0.1];
    let n = if object.elements.len() == 5 || object.shape == Shape::Array && object.oi < 0x1000 {
        5
    } else {
        object.elements.len().max(1)
    };
    (0..n)
        .map(|i| {
            object
                .elements
                .get(i)
                .and_then(|q| values.get(q))
                .copied()
                .or_else(|| Some(total? * shares.get(i).copied().unwrap_or(0.0)))
                .unwrap_or(0.0)
        })
        .collect()
}

fn encode_number(object: &catalogue::Object, raw: f64) -> Data {
    let clamp_u = |v: f64, max: f64| v.clamp(0.0, max);
    match object.oi {
        0x2000 | 0x200F => Data::LongUnsigned(clamp_u(raw, 65_535.0) as u16),
        0x200A | 0x2010 => Data::Long(raw.clamp(-32_768.0, 32_767.0) as i16),
        0x0000 | 0x0030 | 0x0040 | 0x2001 | 0x2004 | 0x2005 | 0x2006 | 0x2017..=0x2019 => {
            Data::DoubleLong(raw.clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32)
        }
        0x1010..=0x1040 => Data::Structure(vec![
            Data::DoubleLongUnsigned(clamp_u(raw, f64::from(u32::MAX)) as u32),
            Data::DateTimeS(plan::dts_of(0)),
        ]),
        _ if object.attribute == 4 && object.oi < 0x1000 => {
            Data::Long64Unsigned(clamp_u(raw, 9.0e18) as u64)
        }
        _ => Data::DoubleLongUnsigned(clamp_u(raw, f64::from(u32::MAX)) as u32),
    }
}

/// Daily freezes at the meter's local midnights, the newest for today; each row the freeze
/// time and forward active energy (total minus 50 kWh a day back, tariffs as shares).
fn freeze_rows(
    rsd: &Rsd,
    columns: &[Csd],
    values: &HashMap<&'static str, f64>,
    local: i64,
) -> Vec<Vec<Data>> {
    let energy = values.get("energy_import_kwh").copied().unwrap_or(0.0);
    let midnight = local.div_euclid(86_400) * 86_400;
    let day = |n: i64| midnight - n * 86_400;
    let wanted: Vec<i64> = match rsd {
        Rsd::Last(n) => vec![i64::from(n.saturating_sub(1))],
        Rsd::Equal {
            value: Data::DateTimeS(t),
            ..
        } => plan::dts_seconds(t)
            .map(|s| (midnight - s).div_euclid(86_400))
            .filter(|n| (0..31).contains(n) && plan::dts_of(day(*n)) == *t)
            .into_iter()
            .collect(),
        _ => Vec::new(),
    };
    wanted
        .into_iter()
        .map(|n| {
            let total = (energy - n as f64 * 50.0).max(0.0);
            columns
                .iter()
                .map(|c| match c {
                    Csd::Oad(o) if *o == plan::FREEZE_TIME => Data::DateTimeS(plan::dts_of(day(n))),
                    Csd::Oad(o) if o.oi == 0x0010 => Data::Array(
                        [1.0, 0.4, 0.3, 0.2, 0.1]
                            .iter()
                            .map(|s| Data::DoubleLongUnsigned((total * s * 100.0).round() as u32))
                            .collect(),
                    ),
                    _ => Data::Null,
                })
                .collect()
        })
        .collect()
}
