//! `[remote]`: the commands the master station may send over MQTT, their keys (from a file or
//! the environment, never inline), the replay window and rate limits.

use std::{collections::HashMap, path::Path, time::Duration};

use super::{
    model::RemoteConfig,
    raw::RawRemote,
    report::{k, Reporter},
    secret::secret,
};
use crate::remote::{Command, Keys};

/// Commands that can be enabled today; the others are parsed and refused until their
/// execution is built (issue 14 is landing in parts).
pub const AVAILABLE: &[Command] = &[
    Command::Read,
    Command::Timesync,
    Command::Recollect,
    Command::Status,
];

/// Keys shorter than this are refused: HMAC is only as strong as its key.
const MIN_KEY_BYTES: usize = 16;

pub(super) fn check_remote(
    r: &mut Reporter,
    raw: RawRemote,
    has_mqtt: bool,
    base: &Path,
) -> Option<RemoteConfig> {
    let at = |key: &str| [k("remote"), k(key)];
    if !has_mqtt {
        r.error(
            &at("commands"),
            "commands arrive over MQTT: configure [mqtt] too",
        );
    }
    let mut commands = Vec::new();
    for name in &raw.commands {
        match Command::from_name(name) {
            Some(c) if AVAILABLE.contains(&c) => {
                if !commands.contains(&c) {
                    commands.push(c);
                }
            }
            Some(c) => r.error(
                &at("commands"),
                format!(
                    "{} cannot be enabled in this version yet; available: {}",
                    c.as_str(),
                    AVAILABLE
                        .iter()
                        .map(|c| c.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            None => r.error(
                &at("commands"),
                format!(
                    "unknown command {name:?}; known: {}",
                    Command::ALL
                        .iter()
                        .map(|c| c.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
        }
    }
    let key = secret(
        r,
        &[k("remote")],
        "key",
        None,
        raw.key_file,
        raw.key_env,
        base,
    );
    let relay = secret(
        r,
        &[k("remote")],
        "relay_key",
        None,
        raw.relay_key_file,
        raw.relay_key_env,
        base,
    );
    let mut rate_limit = HashMap::new();
    for (name, n) in &raw.rate_limit {
        match Command::from_name(name) {
            Some(c) if *n > 0 => {
                rate_limit.insert(c, *n);
            }
            Some(_) => r.error(&at("rate_limit"), format!("{name}: at least 1 per minute")),
            None => r.error(&at("rate_limit"), format!("unknown command {name:?}")),
        }
    }
    let key = match key {
        Some(k) if k.len() >= MIN_KEY_BYTES => k,
        Some(_) => {
            r.error(
                &at("key_file"),
                format!("the key must be at least {MIN_KEY_BYTES} bytes"),
            );
            return None;
        }
        None => {
            if !commands.is_empty() {
                r.error(
                    &at("key_file"),
                    "commands need a key: key_file (or key_env) with the secret shared with the master station",
                );
            }
            return None;
        }
    };
    if relay.as_ref().is_some_and(|k| k.len() < MIN_KEY_BYTES) {
        r.error(
            &at("relay_key_file"),
            format!("the key must be at least {MIN_KEY_BYTES} bytes"),
        );
    }
    Some(RemoteConfig {
        commands,
        keys: Keys {
            command: key.into_bytes(),
            relay: relay.map(String::into_bytes),
        },
        window: raw.window.unwrap_or(Duration::from_secs(300)),
        rate_limit,
    })
}
