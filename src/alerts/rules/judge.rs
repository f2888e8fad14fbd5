//! Judging: a reading against the rules about meters, and the gateway's status (and time)
//! against the rules about time and the gateway; events for every transition.

use super::*;

/// The values the built-in rules look at, found in one pass over a reading (each rule
/// searching the reading for its names was most of the engine's time at 2,000 meters).
#[derive(Default)]
struct Named {
    phases: [Option<f64>; 3],
    power_w: Option<f64>,
    clock_offset_s: Option<f64>,
    counters: bool,
}

/// An energy counter's name: `energy_*_kwh`.
fn is_counter(q: &str) -> bool {
    q.starts_with("energy_") && q.ends_with("_kwh")
}

impl Named {
    fn of(values: &crate::reading::Values) -> Named {
        let mut n = Named::default();
        for (q, v) in values {
            // The first of a name counts, as a search would find it.
            let slot = match &**q {
                "voltage_l1_v" => &mut n.phases[0],
                "voltage_l2_v" => &mut n.phases[1],
                "voltage_l3_v" => &mut n.phases[2],
                "power_w" => &mut n.power_w,
                "meter_clock_offset_s" => &mut n.clock_offset_s,
                q => {
                    n.counters |= is_counter(q);
                    continue;
                }
            };
            slot.get_or_insert(v);
        }
        n
    }
}

impl Engine {
    /// Judge a reading against every rule that looks at readings.
    pub fn on_reading(&mut self, r: &Reading, now: SystemTime) -> Vec<Alert> {
        let mut out = Vec::new();
        let Some(meter) = self.meters.get(&*r.meter).cloned() else {
            return out;
        };
        let named = Named::of(&r.values);
        let target = [("meter", meter.id.as_str()), ("bus", meter.bus.as_str())];
        for i in 0..self.rules.len() {
            if !self.rules[i].scope.matches(&meter) {
                continue;
            }
            match self.rules[i].kind.clone() {
                Kind::Threshold {
                    quantity,
                    above,
                    below,
                    clear,
                } => {
                    for (q, v) in &r.values {
                        if !glob(&quantity, q) {
                            continue;
                        }
                        let cond = match (above, below) {
                            (Some(t), _) if v > t => Cond::Bad {
                                value: v,
                                threshold: t,
                            },
                            (Some(_), _) if v < clear => Cond::Good,
                            (None, Some(t)) if v < t => Cond::Bad {
                                value: v,
                                threshold: t,
                            },
                            (None, Some(_)) if v > clear => Cond::Good,
                            _ => Cond::Hold,
                        };
                        self.observe(
                            i,
                            &[target[0], target[1], ("quantity", q)],
                            cond,
                            now,
                            &mut out,
                        );
                    }
                }
                Kind::PhaseLoss {
                    below_v,
                    others_above_v,
                } => {
                    let phases = ["l1", "l2", "l3"].into_iter().zip(named.phases);
                    let phases = phases.filter_map(|(p, v)| Some((p, v?)));
                    if phases.clone().count() < 2 {
                        continue;
                    }
                    let live = phases.clone().any(|(_, v)| v > others_above_v);
                    for (p, v) in phases {
                        let cond = if v < below_v && live {
                            Cond::Bad {
                                value: v,
                                threshold: below_v,
                            }
                        } else if v >= below_v {
                            Cond::Good
                        } else {
                            Cond::Hold
                        };
                        self.observe(
                            i,
                            &[target[0], target[1], ("phase", p)],
                            cond,
                            now,
                            &mut out,
                        );
                    }
                }
                Kind::ReversePower { below_w, clear_w } => {
                    let Some(v) = named.power_w else { continue };
                    let cond = if v < below_w {
                        Cond::Bad {
                            value: v,
                            threshold: below_w,
                        }
                    } else if v >= clear_w {
                        Cond::Good
                    } else {
                        Cond::Hold
                    };
                    self.observe(i, &target, cond, now, &mut out);
                }
                Kind::ClockDrift { max_s, clear_s } => {
                    let Some(v) = named.clock_offset_s else {
                        continue;
                    };
                    let cond = if v.abs() > max_s {
                        Cond::Bad {
                            value: v,
                            threshold: max_s,
                        }
                    } else if v.abs() <= clear_s {
                        Cond::Good
                    } else {
                        Cond::Hold
                    };
                    self.observe(i, &target, cond, now, &mut out);
                }
                Kind::EnergyCounter {
                    max_rate_kw,
                    tolerance,
                    hold,
                } => {
                    if !named.counters {
                        continue;
                    }
                    // The meter's counters, found once per reading; events raised after.
                    if !self.counters.contains_key(&meter.id) {
                        self.counters.insert(meter.id.clone(), Default::default());
                    }
                    let Some(per_meter) = self.counters.get_mut(&meter.id) else {
                        continue;
                    };
                    let mut bad = Vec::new();
                    for (q, v) in &r.values {
                        if !is_counter(q) {
                            continue;
                        }
                        let prev = match per_meter.get_mut(q) {
                            Some(last) => {
                                let prev = *last;
                                if r.ts > prev.1 {
                                    *last = (v, r.ts);
                                }
                                Some(prev)
                            }
                            None => {
                                per_meter.insert(q.clone(), v, r.ts);
                                None
                            }
                        };
                        let Some((pv, pt)) = prev else { continue };
                        if r.ts <= pt {
                            continue;
                        }
                        let hours =
                            r.ts.duration_since(pt).unwrap_or_default().as_secs_f64() / 3600.0;
                        let grew = v - pv;
                        // The values are the registers' decimals; their difference in binary
                        // carries a little noise (105901.3 - 105901.2 = 0.10000000000582):
                        // a change of exactly the tolerance is within it.
                        let noise = 8.0 * f64::EPSILON * v.abs().max(pv.abs());
                        if grew < -(tolerance + noise) {
                            bad.push((&**q, "backwards", v, pv));
                        } else if grew > tolerance + noise && grew / hours.max(1e-9) > max_rate_kw {
                            bad.push((&**q, "jump", v, pv));
                        }
                    }
                    for (q, name, v, pv) in bad {
                        let target = [target[0], target[1], ("quantity", q), ("change", name)];
                        self.event(i, &target, (v, pv), hold, now, &mut out);
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// Judge the time-based rules, and resolve events whose hold ran out.
    pub fn tick(&mut self, s: &Status, now: SystemTime) -> Vec<Alert> {
        let mut out = Vec::new();
        for i in 0..self.rules.len() {
            match self.rules[i].kind.clone() {
                Kind::MeterOffline { intervals } => {
                    let Some(seen) = &s.meters else { continue };
                    for m in self.meters_in(i) {
                        let limit = m.interval.checked_mul(intervals).unwrap_or(Duration::MAX);
                        let (last, _) = seen.get(m.id.as_str()).copied().unwrap_or_default();
                        let silent = now
                            .duration_since(last.unwrap_or(self.started))
                            .unwrap_or_default();
                        let cond = if silent > limit {
                            Cond::Bad {
                                value: silent.as_secs_f64().round(),
                                threshold: limit.as_secs_f64(),
                            }
                        } else if last.is_some() {
                            Cond::Good
                        } else {
                            // Nothing read since the start: too early to say it is back.
                            Cond::Hold
                        };
                        self.observe(i, &[("meter", &m.id), ("bus", &m.bus)], cond, now, &mut out);
                    }
                }
                Kind::BusDown => {
                    let Some(seen) = &s.meters else { continue };
                    // Per bus: meters, meters offline, whether any is online (counted, without
                    // a copy of any name: this runs every second over every meter).
                    let meters = self.meters_in(i);
                    let mut buses: BTreeMap<&str, (usize, usize, bool)> = BTreeMap::new();
                    for m in &meters {
                        let online = seen.get(m.id.as_str()).and_then(|(_, o)| *o);
                        let b = buses.entry(m.bus.as_str()).or_default();
                        b.0 += 1;
                        b.1 += usize::from(online == Some(false));
                        b.2 |= online == Some(true);
                    }
                    for (bus, (n, offline, any_online)) in buses {
                        let cond = if offline == n {
                            Cond::Bad {
                                value: n as f64,
                                threshold: n as f64,
                            }
                        } else if any_online {
                            Cond::Good
                        } else {
                            Cond::Hold
                        };
                        self.observe(i, &[("bus", bus)], cond, now, &mut out);
                    }
                }
                Kind::JournalFilling {
                    above_percent,
                    clear_percent,
                } => {
                    let p = (s.journal_used * 1000.0).round() / 10.0;
                    let cond = if p > above_percent {
                        Cond::Bad {
                            value: p,
                            threshold: above_percent,
                        }
                    } else if p < clear_percent {
                        Cond::Good
                    } else {
                        Cond::Hold
                    };
                    self.observe(i, &[], cond, now, &mut out);
                }
                Kind::JournalDropping { hold } if s.journal_dropped > self.dropped_seen => {
                    let value = (s.journal_dropped as f64, 0.0);
                    self.event(i, &[], value, hold, now, &mut out);
                }
                Kind::RelayRefused { hold } if s.relay_refused > self.relay_refused_seen => {
                    let value = (s.relay_refused as f64, 0.0);
                    self.event(i, &[], value, hold, now, &mut out);
                }
                Kind::JournalUnwritable => {
                    let cond = if s.journal_failure.is_some() {
                        Cond::Bad {
                            value: 1.0,
                            threshold: 0.0,
                        }
                    } else {
                        Cond::Good
                    };
                    self.observe(i, &[], cond, now, &mut out);
                }
                Kind::SinkUnreachable => {
                    for (sink, failing) in &s.sinks {
                        let cond = match failing {
                            Some(since) => Cond::Bad {
                                value: now
                                    .duration_since(*since)
                                    .unwrap_or_default()
                                    .as_secs_f64()
                                    .round(),
                                threshold: self.rules[i].for_.as_secs_f64(),
                            },
                            None => Cond::Good,
                        };
                        self.observe(i, &[("sink", sink)], cond, now, &mut out);
                    }
                }
                _ => {}
            }
        }
        self.dropped_seen = self.dropped_seen.max(s.journal_dropped);
        self.relay_refused_seen = self.relay_refused_seen.max(s.relay_refused);
        // Events resolve once their hold has passed without a new occurrence.
        let expired: Vec<String> = self
            .active
            .iter()
            .filter(|(_, (_, a))| a.until.is_some_and(|u| u <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            if let Some((_, a)) = self.active.remove(&k) {
                out.push(resolved(a, now));
            }
        }
        out
    }
}
