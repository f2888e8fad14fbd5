//! Simulated meter values: voltages near nominal, currents following a slow daily-like
//! swing, power consistent with voltage, current and power factor, and energy counters that
//! integrate power and only ever increase.

use std::{collections::HashMap, sync::Arc, time::Instant};

use meterd_protocols::{
    modbus::{RawValue, RegisterKind},
    profile::Profile,
};
use rand::{rngs::StdRng, Rng, SeedableRng};

#[derive(Debug)]
pub struct MeterModel {
    pub profile: Arc<Profile>,
    /// Nominal phase voltage.
    nominal_v: f64,
    base_current: [f64; 3],
    pf: f64,
    phase: f64,
    started: Instant,
    last: Instant,
    energy_import_kwh: f64,
    energy_export_kwh: f64,
    reactive_import_kvarh: f64,
    /// Phases the meter measures: 1 for single-phase profiles (no `voltage_l2_v`), else 3.
    phases: usize,
    /// Frozen meters hold fixed values (tests compare exact numbers).
    frozen: bool,
    rng: StdRng,
    /// Registers written by a master (function 6/16), served back as written.
    written: HashMap<u16, u16>,
    /// Quantities pinned to a value (tests drive a meter out of range with these).
    overrides: HashMap<String, f64>,
}

impl MeterModel {
    pub fn new(profile: Arc<Profile>, seed: u64, frozen: bool) -> MeterModel {
        let mut rng = StdRng::seed_from_u64(seed);
        let now = Instant::now();
        let phases = if profile.quantities().any(|q| q == "voltage_l2_v") {
            3
        } else {
            1
        };
        MeterModel {
            phases,
            profile,
            nominal_v: 230.0,
            base_current: [
                rng.gen_range(2.0..20.0),
                rng.gen_range(2.0..20.0),
                rng.gen_range(2.0..20.0),
            ],
            pf: rng.gen_range(0.90..0.99),
            phase: rng.gen_range(0.0..std::f64::consts::TAU),
            started: now,
            last: now,
            energy_import_kwh: rng.gen_range(1000.0..50_000.0),
            energy_export_kwh: rng.gen_range(0.0..100.0),
            reactive_import_kvarh: rng.gen_range(100.0..5000.0),
            frozen,
            rng,
            written: HashMap::new(),
            overrides: HashMap::new(),
        }
    }

    fn t(&self, now: Instant) -> f64 {
        if self.frozen {
            0.0
        } else {
            now.duration_since(self.started).as_secs_f64()
        }
    }

    fn noise(&mut self, amplitude: f64) -> f64 {
        if self.frozen {
            0.0
        } else {
            self.rng.gen_range(-amplitude..=amplitude)
        }
    }

    fn voltage(&mut self, phase: usize, t: f64) -> f64 {
        self.nominal_v + 3.0 * (t / 90.0 + self.phase + phase as f64).sin() + self.noise(0.3)
    }

    fn current(&mut self, phase: usize, t: f64) -> f64 {
        let swing = 1.0 + 0.3 * (t / 600.0 + self.phase * 2.0 + phase as f64).sin();
        (self.base_current[phase] * swing + self.noise(0.05)).max(0.0)
    }

    /// Advance the counters to `now` (they integrate the power since the last call).
    fn advance(&mut self, now: Instant) {
        if self.frozen {
            return;
        }
        let dt_h = now.duration_since(self.last).as_secs_f64() / 3600.0;
        self.last = now;
        let t = self.t(now);
        let p: f64 = (0..self.phases)
            .map(|i| {
                let v = self.nominal_v + 3.0 * (t / 90.0 + self.phase + i as f64).sin();
                let c = self.base_current[i]
                    * (1.0 + 0.3 * (t / 600.0 + self.phase * 2.0 + i as f64).sin());
                v * c * self.pf
            })
            .sum();
        let q = p * (1.0 - self.pf * self.pf).sqrt() / self.pf;
        self.energy_import_kwh += p / 1000.0 * dt_h;
        self.reactive_import_kvarh += q / 1000.0 * dt_h;
    }

    /// Pin `quantity` to `value`, or let it follow the model again (`None`).
    pub fn set_value(&mut self, quantity: &str, value: Option<f64>) {
        match value {
            Some(v) => self.overrides.insert(quantity.to_string(), v),
            None => self.overrides.remove(quantity),
        };
    }

    /// Values of every quantity this model knows at `now`.
    pub fn values(&mut self, now: Instant) -> HashMap<&'static str, f64> {
        let mut v = self.modelled(now);
        for (q, x) in v.iter_mut() {
            if let Some(o) = self.overrides.get(*q) {
                *x = *o;
            }
        }
        v
    }

    fn modelled(&mut self, now: Instant) -> HashMap<&'static str, f64> {
        self.advance(now);
        let t = self.t(now);
        let v = [self.voltage(0, t), self.voltage(1, t), self.voltage(2, t)];
        let i = [self.current(0, t), self.current(1, t), self.current(2, t)];
        let sin = (1.0 - self.pf * self.pf).sqrt();
        let s: Vec<f64> = (0..3).map(|k| v[k] * i[k]).collect();
        let p: Vec<f64> = s.iter().map(|s| s * self.pf).collect();
        let q: Vec<f64> = s.iter().map(|s| s * sin).collect();
        let f = 50.0 + self.noise(0.02);
        let n = self.phases;
        let ll = |a: f64, b: f64| (a * a + b * b + a * b).sqrt();
        HashMap::from([
            ("voltage_l1_v", v[0]),
            ("voltage_l2_v", v[1]),
            ("voltage_l3_v", v[2]),
            ("voltage_l1_l2_v", ll(v[0], v[1])),
            ("voltage_l2_l3_v", ll(v[1], v[2])),
            ("voltage_l3_l1_v", ll(v[2], v[0])),
            ("voltage_l3_l2_v", ll(v[1], v[2])),
            ("voltage_l1_l3_v", ll(v[2], v[0])),
            ("current_l1_a", i[0]),
            ("current_l2_a", i[1]),
            ("current_l3_a", i[2]),
            ("current_n_a", (i[0] - i[1]).abs() * 0.3),
            ("power_l1_w", p[0]),
            ("power_l2_w", p[1]),
            ("power_l3_w", p[2]),
            ("power_w", p[..n].iter().sum()),
            ("reactive_power_l1_var", q[0]),
            ("reactive_power_l2_var", q[1]),
            ("reactive_power_l3_var", q[2]),
            ("reactive_power_var", q[..n].iter().sum()),
            ("apparent_power_l1_va", s[0]),
            ("apparent_power_l2_va", s[1]),
            ("apparent_power_l3_va", s[2]),
            ("apparent_power_va", s[..n].iter().sum()),
            ("power_factor", self.pf),
            ("power_factor_l1", self.pf),
            ("power_factor_l2", self.pf),
            ("power_factor_l3", self.pf),
            ("frequency_hz", f),
            ("energy_import_kwh", self.energy_import_kwh),
            (
                "energy_total_kwh",
                self.energy_import_kwh + self.energy_export_kwh,
            ),
            ("energy_import_t1_kwh", self.energy_import_kwh * 0.4),
            ("energy_import_t2_kwh", self.energy_import_kwh * 0.3),
            ("energy_import_t3_kwh", self.energy_import_kwh * 0.2),
            ("energy_import_t4_kwh", self.energy_import_kwh * 0.1),
            ("energy_import_l1_kwh", self.energy_import_kwh / 3.0),
            ("energy_import_l2_kwh", self.energy_import_kwh / 3.0),
            ("energy_import_l3_kwh", self.energy_import_kwh / 3.0),
            ("energy_export_kwh", self.energy_export_kwh),
            ("reactive_energy_import_kvarh", self.reactive_import_kvarh),
            ("reactive_energy_export_kvarh", 0.0),
            ("meter_temperature_c", 35.0),
        ])
    }

    /// Registers `start..start+count` of `kind`, or an exception code. Unmapped registers
    /// inside the profile's map read as 0, as on real meters; beyond it they are an
    /// "illegal data address".
    pub fn registers(
        &mut self,
        kind: RegisterKind,
        start: u16,
        count: u16,
        now: Instant,
    ) -> Result<Vec<u16>, u8> {
        let end = u32::from(start) + u32::from(count);
        let points: Vec<_> = self
            .profile
            .points()
            .filter(|p| p.kind == kind)
            .cloned()
            .collect();
        let lo = points.iter().map(|p| u32::from(p.address)).min();
        let hi = points.iter().map(|p| p.end()).max();
        match (lo, hi) {
            (Some(lo), Some(hi)) if u32::from(start) >= lo && end <= hi => {}
            _ => return Err(meterd_protocols::modbus::slave::exception::ILLEGAL_DATA_ADDRESS),
        }
        let values = self.values(now);
        let mut words = vec![0u16; usize::from(count)];
        for p in &points {
            if p.end() <= u32::from(start) || u32::from(p.address) >= end {
                continue;
            }
            let v = values.get(&*p.quantity).copied().unwrap_or(0.0);
            let raw: RawValue = p.raw_for(v);
            for (k, w) in raw.encode(p.order).into_iter().enumerate() {
                let addr = u32::from(p.address) + k as u32;
                if (u32::from(start)..end).contains(&addr) {
                    words[(addr - u32::from(start)) as usize] = w;
                }
            }
        }
        for (k, w) in words.iter_mut().enumerate() {
            if let Some(v) = self.written.get(&(start + k as u16)) {
                *w = *v;
            }
        }
        Ok(words)
    }

    pub fn write(&mut self, start: u16, values: &[u16]) {
        for (k, v) in values.iter().enumerate() {
            self.written.insert(start.wrapping_add(k as u16), *v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn model(frozen: bool) -> MeterModel {
        let p = meterd_protocols::profile::Profile::builtin()
            .into_iter()
            .flatten()
            .find(|p| p.name == "eastron-sdm630")
            .unwrap();
        MeterModel::new(Arc::new(p), 7, frozen)
    }

    #[test]
    fn energy_only_increases_and_power_matches_voltage_and_current() {
        let mut m = model(false);
        let t0 = Instant::now();
        let mut last = 0.0;
        for k in 1..50 {
            let v = m.values(t0 + Duration::from_secs(k * 60));
            assert!(v["energy_import_kwh"] > last);
            last = v["energy_import_kwh"];
            assert!((200.0..260.0).contains(&v["voltage_l1_v"]));
            let p = v["voltage_l1_v"] * v["current_l1_a"] * v["power_factor"];
            assert!((p - v["power_l1_w"]).abs() < 1e-6);
        }
    }

    #[test]
    fn a_single_phase_meters_total_power_is_its_one_phase() {
        let p = meterd_protocols::profile::Profile::builtin()
            .into_iter()
            .flatten()
            .find(|p| p.name == "eastron-sdm120")
            .unwrap();
        let mut m = MeterModel::new(Arc::new(p), 3, true);
        let v = m.values(Instant::now());
        let expected = v["voltage_l1_v"] * v["current_l1_a"] * v["power_factor"];
        assert!((v["power_w"] - expected).abs() < 1e-6);
    }

    #[test]
    fn registers_outside_the_map_are_an_illegal_address() {
        let mut m = model(true);
        assert_eq!(
            m.registers(RegisterKind::Holding, 0, 2, Instant::now()),
            Err(2)
        );
        assert!(m
            .registers(RegisterKind::Input, 0, 72, Instant::now())
            .is_ok());
    }
}
