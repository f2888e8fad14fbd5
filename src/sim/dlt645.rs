//! Simulated DL/T 645 meters (2007 or 1997) on a pty, serial device or TCP: values from the
//! same model as the Modbus simulator, replies after a meter-like delay and paced at the
//! configured baud rate, block reads, follow-up frames for long values, silence for wrong
//! addresses, and the same faults as the Modbus simulator.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use meterd_protocols::{
    dlt645::{
        bcd, clock,
        di::{self, Format, Version},
        frame::{self, Address, Scan},
        session::SimMeter,
    },
    profile::Profile,
};
use rand::Rng;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Fault, MeterModel};

struct Entry {
    meter: SimMeter,
    model: MeterModel,
    fault: Fault,
    /// How far the meter's clock is ahead of true time, in seconds.
    drift_s: i64,
}

/// The simulated meters keep China Standard Time, like the daemon's default.
const METER_UTC_OFFSET_S: i64 = 8 * 3600;

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub struct Dlt645Sim {
    version: Version,
    entries: Mutex<Vec<Entry>>,
    /// Wire time per byte is 11 bits at this rate (8E1); `None` sends at once.
    pub baud: Option<u32>,
    /// The meter's own delay before it starts replying (the standard allows 20-500 ms).
    pub reply_delay: Duration,
    pub requests: AtomicU64,
    /// Nanoseconds the line was busy: request on the wire, the meter's delay, reply on the wire.
    pub busy_ns: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Dlt645Sim {
    pub fn new(version: Version, baud: Option<u32>) -> Arc<Dlt645Sim> {
        Arc::new(Dlt645Sim {
            version,
            entries: Mutex::new(Vec::new()),
            baud,
            reply_delay: Duration::from_millis(30),
            requests: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
        })
    }

    pub fn add_meter(&self, address: Address, profile: Arc<Profile>, frozen: bool) {
        let mut meter = SimMeter::new(address);
        meter.version = self.version;
        let seed = address
            .0
            .iter()
            .fold(7u64, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(*b)));
        // Clocks drift: each meter starts up to 90 s off, either way.
        let drift_s = (seed % 181) as i64 - 90;
        lock(&self.entries).push(Entry {
            meter,
            model: MeterModel::new(profile, seed, frozen),
            fault: Fault::None,
            drift_s,
        });
    }

    pub fn set_fault(&self, address: Address, fault: Fault) {
        for e in lock(&self.entries)
            .iter_mut()
            .filter(|e| e.meter.address == address)
        {
            e.fault = fault;
        }
    }

    /// Value bytes per reply frame; longer values go out in follow-up frames (B1 → 12 → 92).
    pub fn set_max_value_bytes(&self, address: Address, n: usize) {
        for e in lock(&self.entries)
            .iter_mut()
            .filter(|e| e.meter.address == address)
        {
            e.meter.max_value_bytes = n.max(1);
        }
    }

    /// How far a meter's clock is ahead of true time, in seconds.
    pub fn clock_drift(&self, address: Address) -> Option<i64> {
        lock(&self.entries)
            .iter()
            .find(|e| e.meter.address == address)
            .map(|e| e.drift_s)
    }

    /// Give the meter a supply relay that obeys remote control (C=1C) with this password
    /// (`PA P0 P1 P2`).
    pub fn set_relay_password(&self, address: Address, password: [u8; 4]) {
        for e in lock(&self.entries)
            .iter_mut()
            .filter(|e| e.meter.address == address)
        {
            let m = std::mem::replace(&mut e.meter, SimMeter::new(address));
            e.meter = m.with_relay(password);
        }
    }

    /// The meter's relay: open (tripped) or not.
    pub fn relay_open(&self, address: Address) -> Option<bool> {
        lock(&self.entries)
            .iter()
            .find(|e| e.meter.address == address)
            .map(|e| e.meter.relay.open)
    }

    /// Whether the meter answers block reads (FF identifiers); real meters differ.
    pub fn set_blocks(&self, address: Address, blocks: bool) {
        for e in lock(&self.entries)
            .iter_mut()
            .filter(|e| e.meter.address == address)
        {
            e.meter.blocks = blocks;
        }
    }

    pub fn addresses(&self) -> Vec<Address> {
        lock(&self.entries)
            .iter()
            .map(|e| e.meter.address)
            .collect()
    }

    /// What the meter at `address` would report now, in the contract's units.
    pub fn values(&self, address: Address) -> Option<std::collections::HashMap<&'static str, f64>> {
        lock(&self.entries)
            .iter_mut()
            .find(|e| e.meter.address == address)
            .map(|e| e.model.values(Instant::now()))
    }

    /// Refresh a meter's identifier values from its model.
    fn refresh(version: Version, e: &mut Entry) {
        let catalogue = match version {
            Version::V2007 => di::CATALOGUE_2007,
            Version::V1997 => di::CATALOGUE_1997,
        };
        let local = unix_now() + METER_UTC_OFFSET_S + e.drift_s;
        let (date, time) = clock::date_time_values(local);
        let (date_di, time_di) = match version {
            Version::V2007 => (0x0400_0101, 0x0400_0102),
            Version::V1997 => (0xC010, 0xC011),
        };
        e.meter.values.insert(date_di, date.to_vec());
        e.meter.values.insert(time_di, time.to_vec());
        // Daily freezes at the meter's local midnights, newest first (n = 1).
        let energy = e
            .model
            .values(Instant::now())
            .get("energy_import_kwh")
            .copied()
            .unwrap_or(0.0);
        let midnight = local.div_euclid(86_400) * 86_400;
        for n in 1..=7u32 {
            let at = midnight - i64::from(n - 1) * 86_400;
            e.meter
                .values
                .insert(0x0506_0000 | n, clock::minutes_value(at).to_vec());
            let total = (energy - f64::from(n) * 50.0).max(0.0);
            let mut block = Vec::new();
            for share in [1.0, 0.4, 0.3, 0.2, 0.1] {
                block.extend(bcd::encode(total * share, 4, 2, false).unwrap_or_else(|| vec![0; 4]));
            }
            e.meter.values.insert(0x0506_0100 | n, block);
        }
        let values = e.model.values(Instant::now());
        for item in catalogue {
            let (
                Some((q, factor)),
                Format::Number {
                    bytes,
                    decimals,
                    signed,
                },
            ) = (item.quantity, item.format)
            else {
                continue;
            };
            let Some(v) = values.get(q) else { continue };
            if let Some(encoded) = bcd::encode(v / factor, bytes, decimals, signed) {
                e.meter.values.insert(item.di, encoded);
            }
        }
    }

    /// The bytes to send for a request, and when; `None` for silence.
    fn answer(&self, req: &frame::Frame) -> Option<Vec<u8>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut entries = lock(&self.entries);
        if req.control.0 == 0x08 && req.address.is_broadcast() {
            // Broadcast time sync: every meter sets its clock; nobody answers.
            if let Some(local) = clock::from_sync_data(&req.data) {
                for e in entries.iter_mut() {
                    e.drift_s = local - METER_UTC_OFFSET_S - unix_now();
                }
            }
            return None;
        }
        let answering = entries
            .iter()
            .filter(|e| req.address.matches(&e.meter.address) && e.fault != Fault::Silent)
            .count();
        if answering > 1 {
            // Several meters answer a wildcard at once: on RS-485 their replies collide.
            let mut rng = rand::thread_rng();
            let n = rng.gen_range(10..30);
            return Some((0..n).map(|_| rng.gen()).collect());
        }
        for e in entries.iter_mut() {
            if !req.address.matches(&e.meter.address) {
                continue;
            }
            Self::refresh(self.version, e);
            let reply = e.meter.respond(req)?;
            return match e.fault {
                Fault::None | Fault::Slow(_) => reply.encode(2).ok(),
                Fault::Silent => None,
                Fault::Exception(code) => {
                    frame::Frame::new(e.meter.address, req.control.0 | 0xC0, vec![code])
                        .encode(2)
                        .ok()
                }
                Fault::Garbage => {
                    let mut rng = rand::thread_rng();
                    let n = rng.gen_range(3..40);
                    Some((0..n).map(|_| rng.gen()).collect())
                }
                Fault::MoreFrames(_) => {
                    // "More frames follow" (C = function | A0) to a read or a follow-up, with
                    // the request's identifier, a little data, and the follow-up's SEQ.
                    let f = req.control.function();
                    let n_di = if self.version == Version::V2007 { 4 } else { 2 };
                    let mut data = req.data.get(..n_di)?.to_vec();
                    data.extend_from_slice(&[0x12, 0x34]);
                    if matches!(f, 0x12 | 0x02) {
                        data.push(*req.data.get(n_di)?);
                    }
                    frame::Frame::new(e.meter.address, f | 0xA0, data)
                        .encode(2)
                        .ok()
                }
                Fault::BadCrc => reply.encode(2).ok().map(|mut b| {
                    let i = b.len() - 2;
                    b[i] ^= 0x5A;
                    b
                }),
            };
        }
        None
    }

    fn wire_time(&self, bytes: usize) -> Duration {
        self.baud.map_or(Duration::ZERO, |b| {
            Duration::from_secs_f64(bytes as f64 * 11.0 / f64::from(b.max(1)))
        })
    }

    fn delay_for(&self, req: &frame::Frame, len: usize) -> Duration {
        let slow = lock(&self.entries)
            .iter()
            .find(|e| req.address.matches(&e.meter.address))
            .and_then(|e| match e.fault {
                Fault::Slow(d) | Fault::MoreFrames(d) => Some(d),
                _ => None,
            })
            .unwrap_or_default();
        let wire = self.baud.map_or(Duration::ZERO, |b| {
            Duration::from_secs_f64(len as f64 * 11.0 / f64::from(b.max(1)))
        });
        self.reply_delay + slow + wire
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
                if f.control.is_reply() {
                    return None;
                }
                Some(super::Answer {
                    request_time: sim.wire_time(n),
                    replies: sim
                        .answer(f)
                        .map(|bytes| (sim.delay_for(f, bytes.len()), bytes))
                        .into_iter()
                        .collect(),
                })
            },
        )
        .await
    }
}

impl super::LineSimulator for Dlt645Sim {
    fn serve_port<S: AsyncRead + AsyncWrite + Send + 'static>(
        self: Arc<Self>,
        port: S,
    ) -> impl std::future::Future<Output = ()> + Send {
        self.serve(port)
    }
}
