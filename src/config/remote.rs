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

/// 8 decimal digits as 4 BCD bytes in the order printed (`02123456` → 02 12 34 56).
fn bcd_pairs(digits: &str) -> Option<[u8; 4]> {
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut b = [0u8; 4];
    for (i, p) in digits.as_bytes().chunks(2).enumerate() {
        b[i] = (p[0] - b'0') << 4 | (p[1] - b'0');
    }
    Some(b)
}

/// The password as DL/T 645 sends it: the first two digits (the password level) first, the
/// rest low byte first (`02123456` → 02 56 34 12).
fn relay_password(digits: &str) -> Option<[u8; 4]> {
    let p = bcd_pairs(digits)?;
    Some([p[0], p[3], p[2], p[1]])
}

/// The operator code, low byte first on the wire (`00000001` → 01 00 00 00).
fn operator(digits: &str) -> Option<[u8; 4]> {
    let p = bcd_pairs(digits)?;
    Some([p[3], p[2], p[1], p[0]])
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
        (Some(pw), Some(op)) => match (relay_password(pw.trim()), operator(op)) {
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

#[cfg(test)]
mod tests {
    #[test]
    fn relay_credentials_are_put_in_the_order_dlt645_sends_them() {
        assert_eq!(
            super::relay_password("02123456"),
            Some([0x02, 0x56, 0x34, 0x12])
        );
        assert_eq!(super::operator("00000001"), Some([0x01, 0x00, 0x00, 0x00]));
        assert_eq!(super::operator("12345678"), Some([0x78, 0x56, 0x34, 0x12]));
        for bad in ["0212345", "021234567", "0212345x", "", "０２１２３４５６"] {
            assert_eq!(super::relay_password(bad), None, "{bad:?}");
            assert_eq!(super::operator(bad), None, "{bad:?}");
        }
    }
}
