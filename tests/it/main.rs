//! One integration-test binary. Tests start their own servers (Mosquitto, InfluxDB 1.x,
//! VictoriaMetrics) on free loopback ports; a missing server binary fails the test with the
//! Debian package to install.

mod alerts;
mod arm;
mod broker;
mod browser;
mod cli;
mod config;
mod dlt645;
mod dlt698;
mod durability;
mod exception;
mod faults;
mod flood;
mod full_disk;
mod grafana;
mod http;
mod influx;
mod layout;
mod pipeline;
mod profiles;
mod reload;
mod remote;
mod scale;
mod secrets;
mod serial;
mod silent;
mod supervision;
mod systemd;

// Test support lives in the `meterd-testkit` crate, shared with the benches.
use meterd_testkit::{harness, receiver, servers};
