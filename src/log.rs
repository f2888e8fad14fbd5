//! The hand-off between buses and sinks.
//!
//! Buses append readings; each sink reads at its own cursor and acknowledges what its far end
//! confirmed, so a dead InfluxDB never stalls MQTT. This version keeps the records in memory,
//! bounded: when full, the oldest records are dropped and counted per sink that had not
//! delivered them. The durable disk journal replaces the storage behind this same interface.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
};

use tokio::sync::Notify;

use crate::reading::Reading;

/// A sink's handle on the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorId(usize);

#[derive(Debug, Default)]
struct Cursor {
    name: String,
    pos: u64,
    dropped: u64,
}

#[derive(Debug)]
struct Inner {
    /// Position of `records[0]`.
    first: u64,
    records: VecDeque<Arc<Reading>>,
    cursors: Vec<Cursor>,
    seqs: HashMap<Arc<str>, u64>,
    capacity: usize,
}

#[derive(Debug)]
pub struct Log {
    inner: Mutex<Inner>,
    appended: Notify,
}

impl Log {
    pub fn new(capacity: usize) -> Log {
        Log {
            inner: Mutex::new(Inner {
                first: 0,
                records: VecDeque::new(),
                cursors: Vec::new(),
                seqs: HashMap::new(),
                capacity: capacity.max(1),
            }),
            appended: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves consistent data (every update is one step).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new cursor, starting at the oldest record still held.
    pub fn cursor(&self, name: &str) -> CursorId {
        let mut g = self.lock();
        let pos = g.first;
        g.cursors.push(Cursor {
            name: name.to_string(),
            pos,
            dropped: 0,
        });
        CursorId(g.cursors.len() - 1)
    }

    /// Continue each meter's `seq` from earlier runs.
    pub fn restore_seqs(&self, seqs: HashMap<String, u64>) {
        let mut g = self.lock();
        for (m, s) in seqs {
            g.seqs.insert(m.into(), s);
        }
    }

    /// The last `seq` given to each meter.
    pub fn seqs(&self) -> HashMap<String, u64> {
        self.lock()
            .seqs
            .iter()
            .map(|(m, s)| (m.to_string(), *s))
            .collect()
    }

    /// Append a reading, giving it the meter's next `seq`. Returns it as stored.
    pub fn append(&self, mut reading: Reading) -> Arc<Reading> {
        let stored = {
            let mut g = self.lock();
            let seq = g.seqs.entry(reading.meter.clone()).or_insert(0);
            *seq += 1;
            reading.seq = *seq;
            let stored = Arc::new(reading);
            g.records.push_back(stored.clone());
            while g.records.len() > g.capacity {
                g.records.pop_front();
                g.first += 1;
                let first = g.first;
                for c in g.cursors.iter_mut().filter(|c| c.pos < first) {
                    c.dropped += first - c.pos;
                    tracing::error!(sink = %c.name, dropped_total = c.dropped, "buffer full: oldest undelivered reading dropped");
                    c.pos = first;
                }
            }
            stored
        };
        self.appended.notify_waiters();
        stored
    }

    /// Position one past the newest record.
    pub fn end(&self) -> u64 {
        let g = self.lock();
        g.first + g.records.len() as u64
    }

    /// Where a cursor stands (the oldest record it has not confirmed).
    pub fn position(&self, c: CursorId) -> u64 {
        self.lock().cursors[c.0].pos
    }

    /// Readings lost to a full buffer before this sink delivered them.
    pub fn dropped(&self, c: CursorId) -> u64 {
        self.lock().cursors[c.0].dropped
    }

    /// Up to `max` records from `pos` on (or from the oldest held, if `pos` was dropped).
    pub fn read_from(&self, pos: u64, max: usize) -> Vec<(u64, Arc<Reading>)> {
        let g = self.lock();
        let start = pos.max(g.first);
        let skip = (start - g.first) as usize;
        g.records
            .iter()
            .skip(skip)
            .take(max)
            .enumerate()
            .map(|(i, r)| (start + i as u64, r.clone()))
            .collect()
    }

    /// The sink's far end confirmed everything before `upto`.
    pub fn ack(&self, c: CursorId, upto: u64) {
        let mut g = self.lock();
        let first = g.first;
        let cur = &mut g.cursors[c.0];
        cur.pos = cur.pos.max(upto.max(first));
        let min = g.cursors.iter().map(|c| c.pos).min().unwrap_or(u64::MAX);
        while g.first < min && !g.records.is_empty() {
            g.records.pop_front();
            g.first += 1;
        }
    }

    /// Wait until there is a record at or after `pos`.
    pub async fn wait_beyond(&self, pos: u64) {
        loop {
            let notified = self.appended.notified();
            if self.end() > pos {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn reading(meter: &str) -> Reading {
        Reading {
            meter: meter.into(),
            bus: "b".into(),
            profile: "p".into(),
            ts: SystemTime::now(),
            seq: 0,
            values: vec![],
        }
    }

    #[test]
    fn each_meter_gets_its_own_consecutive_seq() {
        let log = Log::new(10);
        log.restore_seqs(HashMap::from([("a".to_string(), 41)]));
        let seqs: Vec<u64> = ["a", "b", "a"]
            .iter()
            .map(|m| log.append(reading(m)).seq)
            .collect();
        assert_eq!(seqs, [42, 1, 43]);
    }

    #[test]
    fn a_slow_sink_does_not_hold_back_a_fast_one() {
        let log = Log::new(10);
        let fast = log.cursor("mqtt");
        let slow = log.cursor("influxdb");
        for _ in 0..5 {
            log.append(reading("a"));
        }
        log.ack(fast, 5);
        assert_eq!(log.position(fast), 5);
        assert_eq!(log.position(slow), 0);
        assert_eq!(log.read_from(log.position(slow), 100).len(), 5);
    }

    #[test]
    fn records_are_released_once_every_sink_is_past_them() {
        let log = Log::new(10);
        let a = log.cursor("a");
        let b = log.cursor("b");
        for _ in 0..4 {
            log.append(reading("m"));
        }
        log.ack(a, 4);
        log.ack(b, 2);
        assert_eq!(log.read_from(0, 100)[0].0, 2);
    }

    #[test]
    fn a_full_buffer_drops_the_oldest_and_counts_it_per_sink() {
        let log = Log::new(3);
        let a = log.cursor("a");
        let b = log.cursor("b");
        for _ in 0..3 {
            log.append(reading("m"));
        }
        log.ack(a, 3);
        for _ in 0..2 {
            log.append(reading("m"));
        }
        assert_eq!(log.dropped(a), 0);
        assert_eq!(log.dropped(b), 2);
        assert_eq!(log.position(b), 2);
    }
}
