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

/// Commands that can be enabled (all of them now; the list stays for a command that lands
/// in parts).
pub const AVAILABLE: &[Command] = &[
    Command::Read,
    Command::Timesync,
    Command::Recollect,
    Command::Relay,
    Command::Status,
];

/// Keys shorter than this are refused: HMAC is only as strong as its key.
const MIN_KEY_BYTES: usize = 16;

/// `digits` (8 of them, as printed) as the 4 bytes DL/T 645 sends: the first two digits as
/// the first byte (the password level), the rest low byte first (`02123456` → 02 56 34 12).
fn bcd4(digits: &str) -> Option<[u8; 4]> {
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let b: Vec<u8> = digits
        .as_bytes()
        .chunks(2)
        .map(|p| (p[0] - b'0') << 4 | (p[1] - b'0'))
        .collect();
    Some([b[0], b[3], b[2], b[1]])
}

/// The operator code, 8 digits, low byte first on the wire (`00000001` → 01 00 00 00).
fn operator(digits: &str) -> Option<[u8; 4]> {
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut b = [0u8; 4];
    for (i, p) in digits.as_bytes().chunks(2).enumerate() {
        b[3 - i] = (p[0] - b'0') << 4 | (p[1] - b'0');
    }
    Some(b)
}

pub(super) fn check_remote(
    r: &mut Reporter,
    raw: RawRemote,
    has_mqtt: bool,
    meters: &[(String, super::BusProtocol)],
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
    let relay_enabled = commands.contains(&Command::Relay);
    for m in &raw.relay_meters {
        match meters.iter().find(|(id, _)| id == m) {
            None => r.error(
                &at("relay_meters"),
                format!("no meter {m:?} in this config"),
            ),
            Some((_, p)) if *p != super::BusProtocol::Dlt645_2007 => r.error(
                &at("relay_meters"),
                format!(
                    "{m} is on a {} bus: remote relay control is DL/T 645-2007's (C=1C)",
                    p.as_str()
                ),
            ),
            _ => {}
        }
    }
    let password = secret(
        r,
        &[k("remote")],
        "relay_password",
        None,
        raw.relay_password_file,
        raw.relay_password_env,
        base,
    );
    let relay_credentials = match (password, &raw.relay_operator) {
        (Some(pw), Some(op)) => match (bcd4(pw.trim()), operator(op)) {
            (Some(password), Some(operator)) => {
                Some(meterd_protocols::dlt645::request::Credentials { password, operator })
            }
            (None, _) => {
                r.error(
                    &at("relay_password_file"),
                    "8 digits: the level, then the 6-digit password (02123456)",
                );
                None
            }
            (_, None) => {
                r.error(&at("relay_operator"), "8 digits");
                None
            }
        },
        (None, None) => None,
        _ => {
            r.error(
                &at("relay_operator"),
                "relay commands need both relay_password_file (or _env) and relay_operator",
            );
            None
        }
    };
    if relay_enabled {
        if raw.relay_meters.is_empty() {
            r.error(
                &at("relay_meters"),
                "relay is enabled: list the relay-capable meters",
            );
        }
        if relay_credentials.is_none() {
            r.error(
                &at("relay_password_file"),
                "relay is enabled: give the meters' password and the operator code",
            );
        }
        if relay.is_none() {
            r.error(
                &at("relay_key_file"),
                "relay is enabled: relay commands are signed with a key of their own",
            );
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
        relay_meters: raw.relay_meters,
        relay_credentials,
    })
}
