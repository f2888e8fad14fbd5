//! Alerts: rules judged on readings and on the gateway's state ([`rules`], pure), their state
//! kept across restarts, and notifiers that deliver each event at least once ([`outbox`],
//! [`notify`]).

pub mod notify;
pub mod outbox;
pub mod rules;
#[cfg(test)]
mod rules_tests;
#[cfg(test)]
mod status_rules_tests;
pub mod task;

use std::time::Duration;

use rules::Rule;

#[derive(Debug, Clone, PartialEq)]
pub struct AlertsConfig {
    pub rules: Vec<Rule>,
    /// How often firing alerts are sent to Alertmanager again so it keeps them active.
    pub resend: Duration,
    /// Publish events on the MQTT alert topic.
    pub mqtt: bool,
    /// Write events to InfluxDB (measurement `alert`).
    pub influxdb: bool,
    pub notifiers: Vec<Notifier>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Notifier {
    /// Names the notifier's outbox in the state directory.
    pub name: String,
    pub timeout: Duration,
    pub kind: NotifierKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NotifierKind {
    /// Prometheus Alertmanager, API v2 (`/api/v2/alerts`).
    Alertmanager { url: String },
    /// A JSON POST per event, with an optional bearer token and HMAC-SHA256 signature.
    Webhook {
        url: String,
        bearer: Option<String>,
        hmac: Option<String>,
    },
}
