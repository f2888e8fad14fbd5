//! The MQTT sink.
//!
//! One task owns rumqttc's event loop. rumqttc's `publish` returns no packet id, so the task
//! pairs each `Outgoing::Publish(pkid)` event with the publish it made (they come out in
//! order) and each `Incoming::PubAck(pkid)` with that publish. The log cursor advances over
//! the confirmed prefix only. On a lost connection the session is clean: whatever was not
//! confirmed is published again from the cursor (at least once; consumers dedupe by `seq`).

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::atomic::Ordering,
    time::{Duration, SystemTime},
};

use rumqttc::{
    AsyncClient, Event, EventLoop, Incoming, LastWill, MqttOptions, Outgoing, Publish, QoS,
    Request, TlsConfiguration, Transport,
};
use tokio::sync::watch;
use tracing::{error, info, info_span, warn, Instrument};

use crate::backoff::Backoff;
use crate::{
    config::MqttConfig,
    contract::Topics,
    exception::{Filter, Pick},
};

/// What a publish was for, in the order they were handed to rumqttc.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Sent {
    Reading(u64),
    Control,
    /// An alert event, by its outbox id.
    Alert(u64),
}

/// The broker connection as `[mqtt]` says: the sink's (clean session, the gateway's `offline`
/// as last will) and the remote commands' (its own client id, a persistent session so
/// commands sent during an outage arrive after it, no will).
pub fn options(
    cfg: &MqttConfig,
    client_id: &str,
    will: Option<LastWill>,
    clean_session: bool,
) -> std::io::Result<MqttOptions> {
    let mut o = MqttOptions::new(client_id, &cfg.host, cfg.port);
    o.set_keep_alive(cfg.keep_alive.max(Duration::from_secs(5)));
    o.set_clean_session(clean_session);
    o.set_inflight(cfg.inflight.saturating_add(16));
    o.set_max_packet_size(1 << 20, 1 << 20);
    if let Some(w) = will {
        o.set_last_will(w);
    }
    if let Some(user) = &cfg.username {
        o.set_credentials(user, cfg.password.as_deref().unwrap_or(""));
    }
    if cfg.tls {
        let read = |f: &std::path::Path| {
            crate::files::read_limited(f, crate::files::MAX_SECRET)
                .map_err(|e| std::io::Error::other(format!("{}: {e}", f.display())))
        };
        let ca = match &cfg.ca_file {
            Some(f) => read(f)?,
            None => read(std::path::Path::new("/etc/ssl/certs/ca-certificates.crt"))?,
        };
        let client_auth = match (&cfg.client_cert_file, &cfg.client_key_file) {
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            _ => None,
        };
        o.set_transport(Transport::Tls(TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth,
        }));
    }
    Ok(o)
}

/// Runs until shutdown; then publishes `offline`, waits briefly for outstanding PUBACKs and
/// disconnects.
pub async fn run(cfg: MqttConfig, ctx: super::SinkCtx, mut shutdown: watch::Receiver<bool>) {
    let super::SinkCtx {
        gateway,
        log,
        cursor,
        stats,
        alerts,
        live,
    } = ctx;
    let span = info_span!("mqtt", broker = %format!("{}:{}", cfg.host, cfg.port));
    async move {
        let topics = Topics::new(&cfg.topic_prefix, &gateway);
        // TLS files that cannot be read (validate checked them; they may have changed since)
        // are tried again with back-off, said once; readings stay in the journal meanwhile.
        let mut backoff = Backoff::default();
        let mut failed = false;
        let opts = loop {
            let will = LastWill::new(topics.status(), "offline", QoS::AtLeastOnce, true);
            match options(&cfg, &cfg.client_id, Some(will), true) {
                Ok(o) => break o,
                Err(e) => {
                    if !failed {
                        error!(error = %e, "cannot read TLS files; MQTT sink waits, readings stay in the journal");
                        stats.failing.fail(e.to_string());
                        failed = true;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                        r = shutdown.wait_for(|s| *s) => { let _ = r; return; }
                    }
                }
            }
        };
        backoff.reset();
        let window_max = usize::from(cfg.inflight);
        // Room for a full window of readings plus availability of many meters; a publish that
        // does not fit is retried, never dropped.
        let capacity = window_max + 4096;
        let (client, mut el) = AsyncClient::new(opts, capacity);
        let qos = if cfg.qos == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce };
        let mut s = Session::new(log.position(cursor));
        // Report by exception: judged once per reading, in journal order.
        let mut filter = cfg.exception.clone().map(Filter::new);
        // What a confirmation means for the journal and the alert outbox.
        let apply = |c: Confirmed| {
            if let Some(upto) = c.upto {
                log.ack(cursor, upto);
                stats.confirmed(c.sampled);
            }
            if let (Some(outbox), false) = (&alerts, c.alerts.is_empty()) {
                outbox.ack(&c.alerts);
            }
        };
        let mut avail_rx = live.subscribe();
        let mut published_avail: HashMap<String, bool> = HashMap::new();
        let mut avail_dirty = true;
        let mut stopping = false;
        let mut stop_deadline = tokio::time::Instant::now();
        let mut read_retry: Option<tokio::time::Instant> = None;
        let mut read_failing = false;
        let mut broken: Option<String> = None;
        loop {
            // On the daemon's single thread a task that never waits would stall every other:
            // give way now and then, whatever the branches below do.
            tokio::task::consume_budget().await;
            if s.connected && !stopping && avail_dirty {
                // Availability first: it is small, retained and what a dashboard shows.
                avail_dirty = false;
                // Only the meters whose availability moved since it was last published: a
                // bus going down or 2,000 meters coming up one by one wake this many times.
                let moved: Vec<(String, bool)> = live
                    .each_meter(|m, state| {
                        let online = state.online?;
                        (published_avail.get(m) != Some(&online)).then(|| (m.to_string(), online))
                    })
                    .into_iter()
                    .flatten()
                    .collect();
                for (m, online) in moved {
                    let payload = if online { "online" } else { "offline" };
                    if client.try_publish(topics.availability(&m), QoS::AtLeastOnce, true, payload).is_ok() {
                        s.fifo.push_back(Sent::Control);
                        published_avail.insert(m, online);
                    } else {
                        // The request channel is full: try again on the next turn.
                        avail_dirty = true;
                        break;
                    }
                }
            }
            if let (true, false, Some(outbox)) = (s.connected, stopping, &alerts) {
                // Alert events go out ahead of readings; each leaves the outbox on its PUBACK.
                for (id, a) in outbox.pending() {
                    if s.alerts_inflight.contains(&id) {
                        continue;
                    }
                    let payload = crate::contract::event_json(&a).to_string();
                    if client.try_publish(topics.alert(), QoS::AtLeastOnce, false, payload).is_err() {
                        break;
                    }
                    s.fifo.push_back(Sent::Alert(id));
                    s.alerts_inflight.insert(id);
                }
            }
            if s.connected && !stopping && read_retry.is_none() {
                // Top up when half the window is free: backlog comes off disk in batches.
                while s.window.len() <= window_max / 2 {
                    let batch = match log.take(cursor, s.next, window_max - s.window.len()) {
                        Ok(b) => b,
                        Err(e) => {
                            // The journal could not be read (no descriptors, an I/O error):
                            // wait, never skip.
                            if !read_failing {
                                warn!(error = %e, "cannot read the journal; trying again every second");
                                read_failing = true;
                            }
                            read_retry = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                            break;
                        }
                    };
                    if read_failing {
                        info!("journal readable again");
                        read_failing = false;
                    }
                    if batch.is_empty() {
                        if log.end() > s.next {
                            // Nothing held at or after `next` although the journal is longer:
                            // it cannot happen (gaps are stepped over); never spin on it.
                            read_retry = Some(tokio::time::Instant::now() + Duration::from_millis(100));
                        }
                        break;
                    }
                    // Readings go straight into the connection's buffer and out in one
                    // write per batch (see `feed`).
                    let mut full = false;
                    let mut fed = false;
                    for (pos, r) in batch {
                        if !can_feed(&el) {
                            full = true;
                            break;
                        }
                        let payload = match filter.as_mut().map(|f| f.pick(pos, &r)) {
                            None | Some(Pick::All) => r.to_json(),
                            Some(Pick::Nothing) => {
                                stats.left_out(&r, &Pick::Nothing);
                                apply(s.left_out(pos));
                                continue;
                            }
                            Some(pick) => {
                                stats.left_out(&r, &pick);
                                r.to_json_only(|i| pick.keeps(i))
                            }
                        };
                        let publish = Publish::new(topics.reading(&r.meter), qos, payload);
                        if let Err(e) = feed(&mut el, publish).await {
                            broken = Some(e);
                            break;
                        }
                        fed = true;
                        s.published(pos, r.ts);
                    }
                    if fed && broken.is_none() {
                        if let Err(e) = flush(&mut el).await {
                            broken = Some(e);
                        }
                    }
                    if let Some(reason) = broken.take() {
                        // The connection broke under our write: forget it as rumqttc would,
                        // and publish again from the cursor on the next connection.
                        drop_connection(&mut el);
                        broker_failed(&stats, &mut s, log.position(cursor), reason);
                        break;
                    }
                    if full {
                        break;
                    }
                }
            }
            if stopping && (s.all_confirmed() || tokio::time::Instant::now() >= stop_deadline) {
                if !s.all_confirmed() {
                    warn!(unconfirmed = s.window.len(), "stopping with publishes unconfirmed; they stay in the buffer");
                }
                let _ = client.try_disconnect();
                let _ = tokio::time::timeout(Duration::from_millis(500), el.poll()).await;
                break;
            }
            // New readings wake the task only when it could publish them: with rumqttc's
            // window full it waits for PUBACKs instead (never a busy loop).
            let can_publish = s.connected
                && !stopping
                && read_retry.is_none()
                && s.window.len() <= window_max / 2
                && can_feed(&el);
            tokio::select! {
                ev = el.poll() => match ev {
                    Ok(first) => {
                        // rumqttc queues an event per publish fed and per packet read; they are
                        // taken here in one turn (not a turn of this loop each), and what they
                        // confirm is applied to the journal once.
                        let mut done = Confirmed::default();
                        let queued = std::iter::from_fn(|| el.state.events.pop_front());
                        for ev in std::iter::once(first).chain(queued) {
                            match ev {
                                Event::Incoming(Incoming::ConnAck(_)) => {
                                    // What the old connection confirmed moves the cursor
                                    // before the new one starts from it.
                                    apply(std::mem::take(&mut done));
                                    backoff.reset();
                                    stats.failing.ok();
                                    s.reconnected(log.position(cursor));
                                    info!(from = s.next, "connected to broker");
                                    published_avail.clear();
                                    avail_dirty = true;
                                    if client.try_publish(topics.status(), QoS::AtLeastOnce, true, "online").is_ok() {
                                        s.fifo.push_back(Sent::Control);
                                    }
                                }
                                Event::Outgoing(Outgoing::Publish(pkid)) => done.add(s.on_outgoing(pkid, qos)),
                                Event::Incoming(Incoming::PubAck(ack)) => done.add(s.on_puback(ack.pkid)),
                                _ => {}
                            }
                        }
                        apply(done);
                    }
                    Err(e) => {
                        broker_failed(&stats, &mut s, log.position(cursor), e.to_string());
                        if stopping {
                            break;
                        }
                        let delay = backoff.next_delay();
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = shutdown.changed() => { if *shutdown.borrow() { break; } }
                        }
                    }
                },
                _ = log.wait_beyond(s.next), if can_publish => {}
                _ = avail_rx.changed(), if s.connected && !stopping => avail_dirty = true,
                _ = crate::alerts::outbox::changed(&alerts), if s.connected && !stopping => {}
                _ = shutdown.changed(), if !stopping => {
                    if *shutdown.borrow() {
                        stopping = true;
                        stop_deadline = tokio::time::Instant::now() + Duration::from_secs(3);
                        if s.connected && client.try_publish(topics.status(), QoS::AtLeastOnce, true, "offline").is_ok() {
                            s.fifo.push_back(Sent::Control);
                        }
                        if !s.connected {
                            break;
                        }
                    }
                }
                _ = tokio::time::sleep_until(stop_deadline), if stopping => {}
                _ = tokio::time::sleep_until(read_retry.unwrap_or(stop_deadline)), if read_retry.is_some() => {
                    read_retry = None;
                }
            }
        }
        info!(delivered_upto = log.position(cursor), "mqtt sink stopped");
    }
    .instrument(span)
    .await
}

// rumqttc's own request path (`AsyncClient::publish` → its event loop) writes and flushes
// every publish on its own: a system call per reading, and at a few thousand readings a second
// the sink could not keep up. Readings are therefore handed to the event loop's public state and
// connection directly, the way its request path does it (packet id, inflight bookkeeping, the
// `Outgoing::Publish` event that the session pairs), and flushed once per batch. Control
// messages and alert events still take the request path.

/// Whether a reading may be fed now: connected, no packet-id collision waiting, and room in
/// rumqttc's inflight window.
fn can_feed(el: &EventLoop) -> bool {
    el.network.is_some()
        && el.state.collision.is_none()
        && el.state.inflight() < el.mqtt_options.inflight()
}

/// Put a publish into the connection's write buffer (written when it fills, or by [`flush`]).
async fn feed(el: &mut EventLoop, publish: Publish) -> Result<(), String> {
    let packet = el
        .state
        .handle_outgoing_packet(Request::Publish(publish))
        .map_err(|e| e.to_string())?;
    let (Some(packet), Some(network)) = (packet, el.network.as_mut()) else {
        // A packet-id collision: rumqttc keeps it and sends it when the id is acknowledged.
        return Ok(());
    };
    network.write(packet).await.map_err(|e| e.to_string())
}

/// The connection broke under our own write: forget it as rumqttc does after a failed poll
/// (the next poll connects again). The `Outgoing` events of the batch must not be paired with
/// the next connection's publishes.
fn drop_connection(el: &mut EventLoop) {
    let _ = el.state.clean();
    el.state.events.clear();
    el.pending.clear();
    el.network = None;
}

/// The broker is gone or refuses us: count it, say so (the broker's own words, at WARN the
/// first time and whenever they change), and rewind the session to the cursor.
fn broker_failed(stats: &crate::state::SinkStats, s: &mut Session, cursor: u64, reason: String) {
    stats.retries.fetch_add(1, Ordering::Relaxed);
    let new_reason = stats.failing.fail(reason.clone());
    if s.connected {
        warn!(error = %reason, "lost the broker; unconfirmed readings will be published again");
    } else if new_reason {
        warn!(error = %reason, "cannot connect to the broker; retrying with back-off, readings stay in the journal");
    } else {
        tracing::debug!(error = %reason, "broker unreachable");
    }
    s.disconnected(cursor);
}

async fn flush(el: &mut EventLoop) -> Result<(), String> {
    let timeout = Duration::from_secs(el.network_options.connection_timeout());
    let Some(network) = el.network.as_mut() else {
        return Err("not connected".into());
    };
    match tokio::time::timeout(timeout, network.flush()).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("timed out writing to the broker".into()),
    }
}

/// What a confirmation (PUBACK, or QoS 0 handed to the socket) settled: the journal may
/// advance to `upto`, and these alert events left their outbox.
#[derive(Debug, Default, PartialEq)]
struct Confirmed {
    upto: Option<u64>,
    /// The sampling times of the readings confirmed.
    sampled: Vec<SystemTime>,
    alerts: Vec<u64>,
}

impl Confirmed {
    /// Join a later confirmation to this one: the journal may then advance to the later's
    /// point, and both sets of readings and alert events are confirmed.
    fn add(&mut self, later: Confirmed) {
        self.upto = self.upto.max(later.upto);
        self.sampled.extend(later.sampled);
        self.alerts.extend(later.alerts);
    }
}

/// Bookkeeping of one connection, pure: which publish got which packet id, and which are
/// confirmed. It never touches the journal: it says how far the cursor may move.
struct Session {
    connected: bool,
    /// Publishes handed to rumqttc, not yet given a packet id.
    fifo: VecDeque<Sent>,
    /// Packet id → publish, awaiting PUBACK.
    pending: BTreeMap<u16, Sent>,
    /// Reading positions published in order, their sampling times (`None`: left out by
    /// report by exception, nothing sent), and whether confirmed.
    window: VecDeque<(u64, Option<SystemTime>, bool)>,
    /// The next log position to publish.
    next: u64,
    /// Alert events published, awaiting PUBACK.
    alerts_inflight: std::collections::HashSet<u64>,
}

impl Session {
    /// A session that publishes from `next` (the sink's journal cursor).
    fn new(next: u64) -> Session {
        Session {
            connected: false,
            fifo: VecDeque::new(),
            pending: BTreeMap::new(),
            window: VecDeque::new(),
            next,
            alerts_inflight: Default::default(),
        }
    }

    /// A reading handed to rumqttc.
    fn published(&mut self, pos: u64, sampled: SystemTime) {
        self.fifo.push_back(Sent::Reading(pos));
        self.window.push_back((pos, Some(sampled), false));
        self.next = pos + 1;
    }

    /// A reading report by exception left out: nothing to confirm, so it is done at once,
    /// and the cursor passes it with the confirmed prefix.
    fn left_out(&mut self, pos: u64) -> Confirmed {
        self.window.push_back((pos, None, true));
        self.next = pos + 1;
        self.confirmed_prefix()
    }

    fn all_confirmed(&self) -> bool {
        self.fifo.is_empty() && self.pending.is_empty() && self.window.is_empty()
    }

    fn reconnected(&mut self, cursor: u64) {
        self.disconnected(cursor);
        self.connected = true;
    }

    /// Forget the connection's bookkeeping and rewind to the last confirmed reading.
    fn disconnected(&mut self, cursor: u64) {
        self.connected = false;
        self.fifo.clear();
        self.pending.clear();
        self.window.clear();
        self.alerts_inflight.clear();
        self.next = cursor;
    }

    fn on_outgoing(&mut self, pkid: u16, qos: QoS) -> Confirmed {
        let Some(sent) = self.fifo.pop_front() else {
            return Confirmed::default();
        };
        if qos == QoS::AtMostOnce && pkid == 0 {
            // QoS 0 has no acknowledgement: handed to the socket is all we will ever know.
            self.confirm(sent)
        } else {
            self.pending.insert(pkid, sent);
            Confirmed::default()
        }
    }

    fn on_puback(&mut self, pkid: u16) -> Confirmed {
        match self.pending.remove(&pkid) {
            Some(sent) => self.confirm(sent),
            None => Confirmed::default(),
        }
    }

    fn confirm(&mut self, sent: Sent) -> Confirmed {
        let mut out = Confirmed::default();
        match sent {
            Sent::Alert(id) => {
                self.alerts_inflight.remove(&id);
                out.alerts.push(id);
            }
            Sent::Control => {}
            Sent::Reading(pos) => {
                // Positions increase but may skip a gap in the journal (readings dropped or
                // damaged).
                if let Ok(i) = self.window.binary_search_by_key(&pos, |(p, _, _)| *p) {
                    self.window[i].2 = true;
                }
                out = self.confirmed_prefix();
            }
        }
        out
    }

    /// Take the confirmed readings off the front of the window: the cursor may pass them.
    fn confirmed_prefix(&mut self) -> Confirmed {
        let mut out = Confirmed::default();
        while let Some(&(p, sampled, true)) = self.window.front() {
            self.window.pop_front();
            out.upto = Some(p + 1);
            out.sampled.extend(sampled);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected session with readings at positions `0..n` handed to rumqttc.
    fn session_with(n: u64) -> Session {
        let mut s = Session::new(0);
        s.connected = true;
        for pos in 0..n {
            s.published(pos, sampled(pos));
        }
        s
    }

    fn sampled(pos: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + pos)
    }

    fn upto(c: Confirmed) -> Option<u64> {
        c.upto
    }

    #[test]
    fn the_cursor_may_advance_only_over_the_confirmed_prefix() {
        let mut s = session_with(3);
        for pkid in 1..=3 {
            assert_eq!(s.on_outgoing(pkid, QoS::AtLeastOnce), Confirmed::default());
        }
        assert_eq!(upto(s.on_puback(2)), None);
        assert_eq!(upto(s.on_puback(1)), Some(2));
        assert_eq!(upto(s.on_puback(3)), Some(3));
    }

    #[test]
    fn a_reading_left_out_is_passed_with_the_confirmed_prefix_and_has_no_lag() {
        let mut s = session_with(1);
        // 1 left out while 0 awaits its PUBACK: the cursor may not pass 0 yet.
        assert_eq!(upto(s.left_out(1)), None);
        assert_eq!(s.on_outgoing(5, QoS::AtLeastOnce), Confirmed::default());
        let c = s.on_puback(5);
        assert_eq!((c.upto, c.sampled), (Some(2), vec![sampled(0)]));
        // With nothing in flight it is passed at once.
        assert_eq!(upto(s.left_out(2)), Some(3));
        assert!(s.all_confirmed());
    }

    #[test]
    fn a_lost_connection_rewinds_to_the_last_confirmed_reading() {
        let mut s = session_with(3);
        s.on_outgoing(7, QoS::AtLeastOnce);
        s.on_outgoing(8, QoS::AtLeastOnce);
        assert_eq!(upto(s.on_puback(7)), Some(1));
        s.disconnected(1);
        assert_eq!(s.next, 1);
        // A late PUBACK from the old connection confirms nothing.
        assert_eq!(s.on_puback(8), Confirmed::default());
    }

    #[test]
    fn a_puback_for_a_control_message_does_not_move_the_cursor() {
        let mut s = session_with(1);
        s.fifo.push_front(Sent::Control);
        s.on_outgoing(5, QoS::AtLeastOnce);
        s.on_outgoing(6, QoS::AtLeastOnce);
        assert_eq!(s.on_puback(5), Confirmed::default());
        assert_eq!(upto(s.on_puback(6)), Some(1));
    }

    #[test]
    fn positions_after_a_gap_in_the_journal_are_confirmed_in_order() {
        let mut s = Session::new(0);
        s.connected = true;
        for pos in [4, 5, 9] {
            s.published(pos, sampled(pos));
        }
        for pkid in 1..=3 {
            s.on_outgoing(pkid, QoS::AtLeastOnce);
        }
        assert_eq!(upto(s.on_puback(3)), None, "9 waits for 4 and 5");
        assert_eq!(upto(s.on_puback(1)), Some(5));
        let c = s.on_puback(2);
        assert_eq!(c.upto, Some(10), "the gap is stepped over");
        assert_eq!(
            c.sampled,
            vec![sampled(5), sampled(9)],
            "the confirmed readings' sampling times, for the lag"
        );
    }

    #[test]
    fn an_alert_event_is_confirmed_by_its_own_puback() {
        let mut s = session_with(0);
        s.fifo.push_back(Sent::Alert(42));
        s.alerts_inflight.insert(42);
        s.on_outgoing(9, QoS::AtLeastOnce);
        assert_eq!(
            s.on_puback(9),
            Confirmed {
                upto: None,
                sampled: vec![],
                alerts: vec![42]
            }
        );
        assert!(s.alerts_inflight.is_empty());
    }

    #[test]
    fn confirmations_taken_together_move_the_cursor_as_far_as_the_furthest_and_keep_them_all() {
        let mut s = session_with(4);
        s.fifo.push_back(Sent::Alert(7));
        s.alerts_inflight.insert(7);
        let mut done = Confirmed::default();
        for pkid in 1..=5 {
            done.add(s.on_outgoing(pkid, QoS::AtLeastOnce));
        }
        // PUBACKs read in one go, out of order: the alert, then readings 1, 0 and 3.
        for pkid in [5, 2, 1, 4] {
            done.add(s.on_puback(pkid));
        }
        assert_eq!(
            done,
            Confirmed {
                upto: Some(2),
                sampled: vec![sampled(0), sampled(1)],
                alerts: vec![7]
            },
            "3 waits for 2"
        );
        // An earlier point joined later never moves the cursor back.
        let mut later = Confirmed {
            upto: Some(5),
            ..Confirmed::default()
        };
        later.add(done);
        assert_eq!(later.upto, Some(5));
    }
}
