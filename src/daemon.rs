//! `meterd run`: wires buses, the log and the sinks, and stops them in order.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::{sync::watch, task::JoinSet};
use tracing::{error, info, warn};

use crate::{
    bus,
    config::Config,
    journal::{self, Journal},
    sinks::{self, influx::InfluxStats},
    state::LiveState,
};

/// Run until `stop` turns true: stop polling, let the sinks flush for a few seconds, publish
/// the gateway offline, return.
pub async fn run(config: Config, live: Arc<LiveState>, mut stop: watch::Receiver<bool>) {
    let journal_dir = config.state_dir.join("journal");
    let opts = journal::Options::with_max_size(config.journal.max_size);
    let log = match Journal::open(&journal_dir, opts.clone()) {
        Ok((j, report)) => {
            if report.truncated_bytes > 0 || report.skipped_regions > 0 {
                warn!(
                    truncated_bytes = report.truncated_bytes,
                    skipped_regions = report.skipped_regions,
                    "journal recovered from damage (see the lines above)"
                );
            }
            Arc::new(j)
        }
        Err(e) => {
            // Not fatal: a crash loop would stop polling too. Polling and delivery go on from
            // memory; the state is visible (and alertable) until the directory is fixed.
            error!(error = %e, "journal unavailable: readings are kept in memory only; fix the state directory");
            Arc::new(Journal::unavailable(opts.cache, e.to_string()))
        }
    };

    let (bus_stop_tx, bus_stop) = watch::channel(false);
    let (sink_stop_tx, sink_stop) = watch::channel(false);
    let mut buses = JoinSet::new();
    let mut sinks = JoinSet::new();
    let influx_stats = Arc::new(InfluxStats::default());

    let mut sink_cursors = Vec::new();
    if let Some(mqtt) = config.mqtt.clone() {
        let cursor = log.cursor("mqtt");
        sink_cursors.push(("mqtt".to_string(), cursor));
        sinks.spawn(sinks::mqtt::run(
            mqtt,
            config.gateway_id.clone(),
            log.clone(),
            cursor,
            live.clone(),
            sink_stop.clone(),
        ));
    }
    if let Some(influx) = config.influx.clone() {
        let cursor = log.cursor("influxdb");
        sink_cursors.push(("influxdb".to_string(), cursor));
        sinks.spawn(sinks::influx::run(
            influx,
            config.gateway_id.clone(),
            log.clone(),
            cursor,
            influx_stats.clone(),
            sink_stop.clone(),
        ));
    }
    if config.mqtt.is_none() && config.influx.is_none() {
        warn!("no [mqtt] and no [influxdb] section: readings are polled but go nowhere");
        // Without a sink nothing acknowledges: keep the buffer from filling with a null sink.
        let cursor = log.cursor("none");
        let log = log.clone();
        let mut stop = sink_stop.clone();
        sinks.spawn(async move {
            loop {
                log.ack(cursor, log.end());
                tokio::select! {
                    _ = log.wait_beyond(log.end()) => {}
                    _ = stop.changed() => break,
                }
            }
        });
    }
    let http = tokio::spawn(crate::http::serve(
        config.http.listen,
        crate::http::HttpState {
            live: live.clone(),
            journal: log.clone(),
            sinks: sink_cursors,
        },
        sink_stop.clone(),
    ));
    let mut bus_of = HashMap::new();
    for b in config.buses.clone() {
        let id = buses
            .spawn(bus::run_bus(
                b.clone(),
                log.clone(),
                live.clone(),
                bus_stop.clone(),
            ))
            .id();
        bus_of.insert(id, b);
    }
    info!(
        gateway = %config.gateway_id,
        buses = config.buses.len(),
        meters = config.buses.iter().map(|b| b.meters.len()).sum::<usize>(),
        "meterd running"
    );

    // systemd: ready once the journal is open and the buses and sinks are started; then
    // WATCHDOG=1 from this loop at half the watchdog interval.
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let mut watchdog_usec = 0;
    let watchdog = sd_notify::watchdog_enabled(false, &mut watchdog_usec);
    let mut watchdog_tick =
        tokio::time::interval(Duration::from_micros((watchdog_usec / 2).max(100_000)));
    let mut fsync = tokio::time::interval(config.journal.fsync.max(Duration::from_millis(10)));
    let mut sync_failing = false;
    loop {
        tokio::select! {
            _ = watchdog_tick.tick(), if watchdog => {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            }
            _ = fsync.tick() => {
                let r = log.sync();
                match (&r, sync_failing) {
                    (Err(e), false) => error!(error = %e, "journal sync failed"),
                    (Ok(()), true) => info!("journal sync works again"),
                    _ => {}
                }
                sync_failing = r.is_err();
            }
            Some(ended) = buses.join_next_with_id() => {
                // A bus task only ends when told to; anything else is a bug. Keep polling.
                let (id, why) = match ended {
                    Ok((id, ())) => (id, "returned".to_string()),
                    Err(e) => (e.id(), e.to_string()),
                };
                if let Some(b) = bus_of.remove(&id) {
                    error!(bus = %b.name, reason = %why, "bus task ended unexpectedly; restarting it in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let id = buses
                        .spawn(bus::run_bus(b.clone(), log.clone(), live.clone(), bus_stop.clone()))
                        .id();
                    bus_of.insert(id, b);
                }
            }
            r = stop.changed() => {
                if r.is_err() || *stop.borrow() {
                    break;
                }
            }
        }
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    info!("stopping: polling ends, sinks flush");
    let _ = bus_stop_tx.send(true);
    while buses.join_next().await.is_some() {}
    let _ = sink_stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(6), async {
        while sinks.join_next().await.is_some() {}
    })
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(2), http).await;
    if let Err(e) = log.sync() {
        error!(error = %e, "final journal sync failed");
    }
    info!(readings = log.end(), "stopped");
}
