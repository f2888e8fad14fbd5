//! Every built-in Modbus profile round-trips through the simulator: the simulator serves the
//! profile's register map with a meter's values, and a poll of every group gives back every
//! point, in the contract's unit, within the point's resolution.

use std::time::Duration;

use meterd::{
    bus::{poll, BusLink, MeterOnBus, PollTarget},
    config::{BusProtocol, Link, ProfileSet},
    protocols::profile::ProfileProtocol,
};

use crate::harness::{self, tolerance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_builtin_modbus_profile_reads_back_what_the_simulator_serves() {
    let set = ProfileSet::builtin();
    let mut checked = Vec::new();
    for profile in set
        .profiles
        .values()
        .filter(|p| p.protocol == ProfileProtocol::Modbus)
    {
        let (sim, addr) = harness::tcp_sim(&[(1, profile.name.as_str())], true).await;
        let mut link = BusLink::for_protocol(
            BusProtocol::ModbusTcp,
            Link::Tcp(addr),
            Duration::from_secs(1),
        );
        let targets = PollTarget::for_meter(MeterOnBus::modbus(profile, 1));
        let expected = sim.values(1).unwrap();
        let mut seen = Vec::new();
        for target in &targets {
            let r = poll(&mut link, target, 0).await;
            assert!(r.errors.is_empty(), "{}: {:?}", profile.name, r.errors);
            for (q, v) in r.values {
                let want = expected.get(&*q).copied().unwrap_or(0.0);
                assert!(
                    (v - want).abs() <= tolerance(&profile.name, &q, want),
                    "{} {q}: read {v}, served {want}",
                    profile.name
                );
                seen.push(q.to_string());
            }
        }
        let mut wanted: Vec<String> = profile.quantities().map(String::from).collect();
        wanted.sort();
        seen.sort();
        assert_eq!(seen, wanted, "{}: every point", profile.name);
        checked.push(profile.name.clone());
    }
    assert!(checked.len() >= 8, "{checked:?}");
}
