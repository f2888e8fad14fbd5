//! Buses: one task owns each bus and schedules every meter on it ([`task`]); the protocol
//! side of a poll is in [`modbus`] and [`dlt645`].

pub mod dlt645;
pub mod dlt698;
pub mod link;
pub mod modbus;
pub mod scheduler;
pub mod task;

use meterd_protocols::{modbus::ReadBlock, profile::Profile};
use std::{sync::Arc, time::Duration};

pub use modbus::ModbusLink;
pub use task::run_bus;

use scheduler::Outcome;

/// Why a request got no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PollError {
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("link failed: {0}")]
    Link(String),
    /// The meter answered in a way no reading of this request can take (more follow-up frames
    /// or bytes than the identifier can carry): not retried, backed off like a timeout.
    #[error("meter broke the protocol: {0}")]
    Protocol(String),
    /// The meter answered with a Modbus exception: it is alive but refused.
    #[error("exception reply {code} ({})", exception_name(*.code))]
    Exception { code: u8 },
    /// A DL/T 645 meter answered with an abnormal reply (error byte, after −0x33), named by
    /// its version's error table.
    #[error("meter refused: error {err:02X} ({})", meterd_protocols::dlt645::error_bits(*.version, *.err).join(", "))]
    Refused {
        err: u8,
        version: meterd_protocols::dlt645::Version,
    },
    /// The meter answered, but a value is not what its format says (e.g. not BCD).
    #[error("bad value: {0}")]
    BadValue(String),
    /// A DL/T 698.45 meter refused an object or a service with a DAR.
    #[error("meter refused {what}: {dar}")]
    Denied { what: String, dar: String },
}

impl PollError {
    /// The meter answered (it is alive), even though not with values.
    pub fn is_answer(&self) -> bool {
        matches!(
            self,
            PollError::Exception { .. }
                | PollError::Refused { .. }
                | PollError::BadValue(_)
                | PollError::Denied { .. }
        )
    }
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

/// The one retry policy of every protocol's bus: up to `retries` more attempts after a
/// timeout or a broken link, `frame_gap` of silence kept after each attempt. A loop makes an
/// attempt and hands its result to [`Retry::after`], which says whether to go again.
/// (A helper taking the attempt as an async closure would be shorter, but its future is not
/// `Send` for every lifetime, which the bus task needs.)
pub(crate) struct Retry {
    retries: u32,
    tries: u32,
    frame_gap: Duration,
}

impl Retry {
    pub(crate) fn new(retries: u32, frame_gap: Duration) -> Retry {
        Retry {
            retries,
            tries: 0,
            frame_gap,
        }
    }

    /// Keeps the frame gap, then: `None` to try again, or the final result.
    pub(crate) async fn after<T>(
        &mut self,
        r: Result<T, PollError>,
    ) -> Option<Result<T, PollError>> {
        if !self.frame_gap.is_zero() {
            tokio::time::sleep(self.frame_gap).await;
        }
        match r {
            Err(PollError::Timeout(_) | PollError::Link(_)) if self.tries < self.retries => {
                self.tries += 1;
                None
            }
            r => Some(r),
        }
    }
}

/// The result of polling one group: the values read and the errors met on the way.
#[derive(Debug, Default)]
pub struct GroupResult {
    pub values: Vec<(Arc<str>, f64)>,
    /// Readings that carry their own time (a meter's daily freeze), oldest first.
    pub dated: Vec<(std::time::SystemTime, Values)>,
    pub errors: Vec<PollError>,
    pub requests: u32,
}

impl GroupResult {
    /// Records `e`; whether the exchanges may go on (the meter answered, if only to refuse):
    /// the first one it did not answer ends the poll.
    pub fn carry_on_after(&mut self, e: PollError) -> bool {
        let answered = e.is_answer();
        self.errors.push(e);
        answered
    }

    pub fn outcome(&self) -> Outcome {
        Outcome {
            answered: !self.values.is_empty()
                || !self.dated.is_empty()
                || self.errors.iter().any(PollError::is_answer),
            troubled: self.errors.iter().any(|e| !e.is_answer()),
        }
    }
}

/// A meter's local time (seconds since the epoch in its own time zone, `utc_offset_s` ahead
/// of UTC) as a time stamp.
pub fn local_to_time(local: i64, utc_offset_s: i64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(local - utc_offset_s).unwrap_or(0))
}

/// Quantities and their values, as a reading carries them.
pub type Values = Vec<(Arc<str>, f64)>;

/// A connection to a bus, of the bus's protocol.
pub enum BusLink {
    Modbus(ModbusLink),
    Dlt645(dlt645::Dlt645Link),
    Dlt698(dlt698::Dlt698Link),
}

impl BusLink {
    pub fn new(bus: &crate::config::BusConfig) -> BusLink {
        BusLink::for_protocol(bus.protocol, bus.link.clone(), bus.timeout)
    }

    pub fn for_protocol(
        protocol: crate::config::BusProtocol,
        link: crate::config::Link,
        timeout: Duration,
    ) -> BusLink {
        use crate::config::BusProtocol;
        use meterd_protocols::dlt645::Version;
        match protocol {
            BusProtocol::Dlt645_2007 => {
                BusLink::Dlt645(dlt645::Dlt645Link::new(Version::V2007, link, timeout))
            }
            BusProtocol::Dlt645_1997 => {
                BusLink::Dlt645(dlt645::Dlt645Link::new(Version::V1997, link, timeout))
            }
            BusProtocol::Dlt698 => BusLink::Dlt698(dlt698::Dlt698Link::new(link, timeout)),
            p => BusLink::Modbus(ModbusLink::new(p, link, timeout)),
        }
    }
}

/// One meter's point group as a bus polls it: built once when the bus starts (or by the CLI
/// for a one-shot read) and shared by every poll of it.
pub struct PollTarget {
    pub profile: Arc<meterd_protocols::profile::Profile>,
    pub group: usize,
    /// Silence kept after each request.
    pub frame_gap: Duration,
    pub meter: MeterTarget,
}

/// How a meter sits on its bus, for [`PollTarget::for_meter`].
pub struct MeterOnBus<'a> {
    pub profile: &'a Arc<meterd_protocols::profile::Profile>,
    /// Its Modbus unit id, or its DL/T 645 address.
    pub unit: u8,
    pub address: Option<meterd_protocols::dlt645::Address>,
    /// Its DL/T 698.45 address.
    pub server_address: Option<meterd_protocols::dlt698::ServerAddress>,
    pub frame_gap: Duration,
    /// Modbus request coalescing.
    pub max_registers: u16,
    pub max_gap: u16,
    /// DL/T 645: the meters' clocks, and the bus's time-sync policy.
    pub utc_offset_s: i64,
    pub time_sync: Option<dlt645::TimeSync>,
}

impl<'a> MeterOnBus<'a> {
    /// A Modbus meter at `unit` with the default request limits (125 registers, gaps of up to
    /// 16 read through) and nothing else: what tests and one-off reads start from.
    pub fn modbus(profile: &'a Arc<meterd_protocols::profile::Profile>, unit: u8) -> Self {
        MeterOnBus {
            profile,
            unit,
            address: None,
            server_address: None,
            frame_gap: Duration::ZERO,
            max_registers: 125,
            max_gap: 16,
            utc_offset_s: 0,
            time_sync: None,
        }
    }
}

impl PollTarget {
    /// The targets of every group of one meter; what the meter teaches a poll (it refuses
    /// block reads, its newest daily freeze) is shared by its groups.
    pub fn for_meter(m: MeterOnBus<'_>) -> Vec<Arc<PollTarget>> {
        PollTarget::for_meter_sharing(m, &mut Plans::default())
    }

    /// [`PollTarget::for_meter`], with Modbus read plans from (or added to) `plans`.
    pub fn for_meter_sharing(m: MeterOnBus<'_>, plans: &mut Plans) -> Vec<Arc<PollTarget>> {
        // DL/T 645 only (a Modbus meter has no use for them).
        let learnt = m.address.map(|_| {
            (
                Arc::new(std::sync::atomic::AtomicBool::new(false)),
                Arc::new(std::sync::Mutex::new(None)),
            )
        });
        let dlt698 = m.server_address.as_ref().map(|a| {
            Arc::new(dlt698::Dlt698Meter::new(
                a.clone(),
                m.utc_offset_s,
                m.time_sync.clone(),
            ))
        });
        (0..m.profile.groups.len())
            .map(|g| {
                let meter = match (m.address.zip(learnt.as_ref()), &dlt698) {
                    (_, Some(t)) => MeterTarget::Dlt698(t.clone()),
                    (Some((address, (no_blocks, last_freeze))), None) => {
                        MeterTarget::Dlt645(Box::new(dlt645::Dlt645Meter {
                            address,
                            utc_offset_s: m.utc_offset_s,
                            no_blocks: no_blocks.clone(),
                            last_freeze: last_freeze.clone(),
                            time_sync: m.time_sync.clone(),
                        }))
                    }
                    (None, None) => MeterTarget::Modbus {
                        unit: m.unit,
                        blocks: plans.get(m.profile, g, m.max_registers, m.max_gap),
                    },
                };
                Arc::new(PollTarget {
                    profile: m.profile.clone(),
                    group: g,
                    frame_gap: m.frame_gap,
                    meter,
                })
            })
            .collect()
    }
}

/// Modbus read plans by profile, group and coalescing limits, built once and shared by every
/// meter of the same profile (a plan per meter cost about 0.4 KB per SDM630).
#[derive(Default)]
pub struct Plans(std::collections::HashMap<PlanKey, (Arc<Profile>, Arc<[ReadBlock]>)>);

/// A profile by its address (held in the value, so the address is never another profile's),
/// a group, and the coalescing limits.
type PlanKey = (usize, usize, u16, u16);

impl Plans {
    fn get(
        &mut self,
        profile: &Arc<Profile>,
        group: usize,
        max_registers: u16,
        max_gap: u16,
    ) -> Arc<[ReadBlock]> {
        let key = (Arc::as_ptr(profile) as usize, group, max_registers, max_gap);
        self.0
            .entry(key)
            .or_insert_with(|| {
                let plan = profile.groups[group].plan(max_registers, max_gap).into();
                (profile.clone(), plan)
            })
            .1
            .clone()
    }
}

/// What a poll needs of a meter, by protocol.
pub enum MeterTarget {
    Modbus {
        unit: u8,
        /// The group's read requests (`protocols::modbus::plan`), shared (see [`Plans`]).
        blocks: Arc<[meterd_protocols::modbus::ReadBlock]>,
    },
    /// Boxed: a DL/T 645 meter's state is 88 bytes, and every Modbus target (24 bytes) would
    /// carry that size too (4,000 targets at 2,000 SDM630 meters).
    Dlt645(Box<dlt645::Dlt645Meter>),
    /// Shared by the meter's groups: what one poll learns (lists refused, security wanted,
    /// the newest freeze) holds for the others.
    Dlt698(Arc<dlt698::Dlt698Meter>),
}

/// Set the clock of `t`'s meter to the gateway's time: DL/T 645 broadcasts it (every meter on
/// the line takes it), DL/T 698.45 sends SET-Request-Normal 4000-02-00 to the meter. Modbus
/// meters have no standard clock.
pub async fn set_clock(link: &mut BusLink, t: &PollTarget, retries: u32) -> Result<(), PollError> {
    match (link, &t.meter) {
        (BusLink::Dlt645(l), MeterTarget::Dlt645(m)) => {
            let r = l.broadcast_time(m.utc_offset_s).await;
            if !t.frame_gap.is_zero() {
                tokio::time::sleep(t.frame_gap).await;
            }
            r
        }
        (BusLink::Dlt698(l), MeterTarget::Dlt698(m)) => {
            dlt698::set_clock(l, m, retries, t.frame_gap).await
        }
        _ => Err(PollError::Protocol(
            "this meter's protocol has no clock to set".into(),
        )),
    }
}

/// Remote control of `t`'s supply relay (DL/T 645-2007 C=1C), valid for five minutes, and
/// its state read back.
pub async fn relay(
    link: &mut BusLink,
    t: &PollTarget,
    command: meterd_protocols::dlt645::request::RelayCommand,
    creds: meterd_protocols::dlt645::request::Credentials,
) -> Result<meterd_protocols::dlt645::request::RelayState, PollError> {
    match (link, &t.meter) {
        (BusLink::Dlt645(l), MeterTarget::Dlt645(m)) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let r = l
                .relay(m.address, creds, command, now + m.utc_offset_s + 300)
                .await;
            if !t.frame_gap.is_zero() {
                tokio::time::sleep(t.frame_gap).await;
            }
            r
        }
        _ => Err(PollError::Protocol(
            "remote relay control is for DL/T 645-2007 meters".into(),
        )),
    }
}

/// Read identifiers of `t`'s meter by hand: DL/T 645 DIs (decoded through the catalogue, raw
/// bytes otherwise) or DL/T 698.45 OADs (scaled and named through the catalogue). Each gives
/// a JSON description or an error.
pub async fn read_identifiers(
    link: &mut BusLink,
    t: &PollTarget,
    ids: &[String],
    retries: u32,
) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    match (link, &t.meter) {
        (BusLink::Dlt645(l), MeterTarget::Dlt645(m)) => {
            for id in ids {
                let Ok(di) = u32::from_str_radix(id, 16) else {
                    out.push((
                        id.clone(),
                        serde_json::json!({"error": "not a DI (hex digits)"}),
                    ));
                    continue;
                };
                let mut requests = 0;
                let r =
                    dlt645::read_one(l, m.address, di, retries, t.frame_gap, &mut requests).await;
                let v = match r {
                    Ok(bytes) => match meterd_protocols::dlt645::di::decode_values(l.version(), di, &bytes) {
                        Ok(values) if !values.is_empty() => serde_json::json!(values
                            .iter()
                            .map(|d| serde_json::json!({
                                "di": format!("{:08X}", d.di),
                                "name": d.name,
                                "value": match &d.value {
                                    meterd_protocols::dlt645::di::Value::Number(x) => serde_json::json!(x),
                                    meterd_protocols::dlt645::di::Value::Text(s) => serde_json::json!(s),
                                },
                                "unit": d.unit,
                            }))
                            .collect::<Vec<_>>()),
                        Ok(_) => serde_json::json!({"raw": bytes.iter().map(|b| format!("{b:02X}")).collect::<String>()}),
                        Err(e) => serde_json::json!({"error": e.to_string()}),
                    },
                    Err(e) => serde_json::json!({"error": e.to_string()}),
                };
                out.push((id.clone(), v));
            }
        }
        (BusLink::Dlt698(l), MeterTarget::Dlt698(m)) => {
            let mut oads = Vec::new();
            for id in ids {
                match id.parse::<meterd_protocols::dlt698::Oad>() {
                    Ok(o) => oads.push(o),
                    Err(e) => out.push((id.clone(), serde_json::json!({"error": e.to_string()}))),
                }
            }
            if !oads.is_empty() {
                match dlt698::read_oads(l, m, &oads, retries, t.frame_gap).await {
                    Ok(results) => {
                        for r in &results {
                            let item = meterd_protocols::dlt698::describe::result_item(r);
                            out.push((
                                r.oad.to_string(),
                                serde_json::to_value(item).unwrap_or_default(),
                            ));
                        }
                    }
                    Err(e) => {
                        for o in &oads {
                            out.push((o.to_string(), serde_json::json!({"error": e.to_string()})));
                        }
                    }
                }
            }
        }
        _ => {
            for id in ids {
                out.push((
                    id.clone(),
                    serde_json::json!({"error": "identifiers are for DL/T 645 and 698.45 meters; Modbus meters are read by group or quantity"}),
                ));
            }
        }
    }
    out
}

/// Read back the daily freezes of `t`'s meter from day `from` to day `to` (days since the
/// epoch in the meter's local calendar), oldest first, into `dated`. Bounded: at most a
/// month (the request says so) and one exchange per day or stored freeze.
pub async fn recollect(
    link: &mut BusLink,
    t: &PollTarget,
    from: i64,
    to: i64,
    retries: u32,
) -> GroupResult {
    match (link, &t.meter) {
        (BusLink::Dlt645(l), MeterTarget::Dlt645(m)) => {
            dlt645::recollect(l, m, from, to, retries, t.frame_gap).await
        }
        (BusLink::Dlt698(l), MeterTarget::Dlt698(m)) => {
            dlt698::recollect(l, m, from, to, retries, t.frame_gap).await
        }
        _ => GroupResult {
            errors: vec![PollError::Protocol(
                "this meter's protocol keeps no daily freezes".into(),
            )],
            ..GroupResult::default()
        },
    }
}

/// Poll one group of one meter over `link`, with up to `retries` extra attempts per request
/// (0 for an offline meter's probe).
pub async fn poll(link: &mut BusLink, t: &PollTarget, retries: u32) -> GroupResult {
    match (link, &t.meter) {
        (BusLink::Modbus(l), MeterTarget::Modbus { unit, blocks }) => {
            modbus::poll_group(l, *unit, &t.profile, t.group, blocks, retries, t.frame_gap).await
        }
        // The DL/T polls are boxed: inline, every poll in flight on every bus would take
        // their 2.9 KB, where a Modbus poll needs about 600 bytes.
        (BusLink::Dlt645(l), MeterTarget::Dlt645(m)) => match t.profile.groups.get(t.group) {
            Some(g) => Box::pin(dlt645::poll_group(l, m, g, retries, t.frame_gap)).await,
            None => GroupResult::default(),
        },
        (BusLink::Dlt698(l), MeterTarget::Dlt698(m)) => match t.profile.groups.get(t.group) {
            Some(g) => Box::pin(dlt698::poll_group(l, m, g, retries, t.frame_gap)).await,
            None => GroupResult::default(),
        },
        // A bus's links and its meters' targets come from the same protocol.
        _ => GroupResult::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meterd_protocols::dlt645::Version;

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_poll_target_takes_56_bytes_whatever_the_protocol() {
        // Two per SDM630 meter: at 2,000 meters a DL/T 645 variant held inline cost 256 KiB
        // more.
        assert_eq!(std::mem::size_of::<PollTarget>(), 56);
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_modbus_poll_in_flight_takes_what_modbus_needs_not_what_dlt645_needs() {
        // A bus holds up to `concurrency` polls in flight, each in a box of its size. With
        // the DL/T 645 and 698 polls inline a poll took 2,944 bytes (and, before the polls
        // in flight were boxed, the `FuturesUnordered`'s stub task one more of that size).
        let set = crate::config::ProfileSet::builtin();
        let targets =
            PollTarget::for_meter(MeterOnBus::modbus(set.get("eastron-sdm630").unwrap(), 1));
        let mut link = BusLink::for_protocol(
            crate::config::BusProtocol::ModbusTcp,
            crate::config::Link::Tcp("127.0.0.1:1".into()),
            Duration::from_secs(1),
        );
        let in_flight = poll(&mut link, &targets[0], 0);
        let size = std::mem::size_of_val(&in_flight);
        assert!(size <= 768, "a Modbus poll in flight takes {size} bytes");
    }

    #[test]
    fn meters_of_one_profile_share_their_read_plans_and_other_limits_get_their_own() {
        let set = crate::config::ProfileSet::builtin();
        let (sdm630, sdm120) = (
            set.get("eastron-sdm630").unwrap(),
            set.get("eastron-sdm120").unwrap(),
        );
        let on_bus = |profile, unit, max_registers| MeterOnBus {
            max_registers,
            ..MeterOnBus::modbus(profile, unit)
        };
        let blocks = |t: &[Arc<PollTarget>], g: usize| match &t[g].meter {
            MeterTarget::Modbus { blocks, .. } => blocks.clone(),
            _ => panic!("a Modbus meter"),
        };
        let mut plans = Plans::default();
        let a = PollTarget::for_meter_sharing(on_bus(sdm630, 1, 125), &mut plans);
        let b = PollTarget::for_meter_sharing(on_bus(sdm630, 2, 125), &mut plans);
        let c = PollTarget::for_meter_sharing(on_bus(sdm120, 3, 125), &mut plans);
        let d = PollTarget::for_meter_sharing(on_bus(sdm630, 4, 10), &mut plans);
        assert_eq!(a.len(), sdm630.groups.len());
        for g in 0..a.len() {
            assert!(Arc::ptr_eq(&blocks(&a, g), &blocks(&b, g)), "group {g}");
            assert!(!Arc::ptr_eq(&blocks(&a, g), &blocks(&d, g)), "group {g}");
        }
        assert!(!Arc::ptr_eq(&blocks(&a, 0), &blocks(&c, 0)));
        // Shared, yet each is the profile's own plan under its limits.
        assert_eq!(*blocks(&d, 0), *sdm630.groups[0].plan(10, 16));
        assert_eq!(*blocks(&c, 0), *sdm120.groups[0].plan(125, 16));
    }

    #[test]
    fn a_refusal_is_named_by_its_own_versions_error_table() {
        for (version, err, shown) in [
            (Version::V2007, 0x02, "error 02 (no requested data)"),
            (Version::V1997, 0x02, "error 02 (data identifier error)"),
            (Version::V1997, 0x01, "error 01 (illegal data)"),
            (
                Version::V2007,
                0x04,
                "error 04 (password error / unauthorized)",
            ),
        ] {
            let e = PollError::Refused { err, version };
            assert!(e.to_string().contains(shown), "{version:?}: {e}");
        }
    }
}
