//! `[mqtt]`: broker URL, TLS files (loaded to check them), credentials, QoS.

use std::{path::Path, time::Duration};

use super::{
    model::MqttConfig,
    raw::RawMqtt,
    report::{k, Reporter},
    secret::secret,
    values::resolve,
};

pub(super) fn check_mqtt(
    r: &mut Reporter,
    m: RawMqtt,
    gateway: &str,
    base: &Path,
) -> Option<MqttConfig> {
    let at = |key: &str| [k("mqtt"), k(key)];
    let (tls, rest) = if let Some(rest) = m.url.strip_prefix("mqtts://") {
        (true, rest)
    } else if let Some(rest) = m.url.strip_prefix("mqtt://") {
        (false, rest)
    } else {
        r.error(
            &at("url"),
            // Not the URL itself: it may carry a password, and reload errors are logged.
            "use mqtt://HOST[:PORT] or mqtts://HOST[:PORT]",
        );
        return None;
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => match p.parse::<u16>() {
            Ok(p) => (h.to_string(), p),
            Err(_) => {
                r.error(&at("url"), format!("{p:?} is not a port"));
                return None;
            }
        },
        None => (rest.to_string(), if tls { 8883 } else { 1883 }),
    };
    if host.is_empty() {
        r.error(&at("url"), "no host");
    }
    if m.qos > 1 {
        r.error(
            &at("qos"),
            "must be 0 or 1 (QoS 1: at least once, confirmed by PUBACK)",
        );
    }
    if m.topic_prefix.is_empty() || m.topic_prefix.contains(['+', '#']) {
        r.error(
            &at("topic_prefix"),
            "must be non-empty and contain no MQTT wildcards",
        );
    }
    let password = secret(
        r,
        &[k("mqtt")],
        "password",
        m.password,
        m.password_file,
        m.password_env,
        base,
    );
    if !tls && (m.ca_file.is_some() || m.client_cert_file.is_some()) {
        r.error(&at("ca_file"), "TLS files need an mqtts:// url");
    }
    if m.client_cert_file.is_some() != m.client_key_file.is_some() {
        r.error(
            &at("client_cert_file"),
            "client_cert_file and client_key_file go together",
        );
    }
    // Load what the TLS handshake will need, so a wrong file is found now, not at connect.
    for (key, file, what) in [
        ("ca_file", &m.ca_file, Pem::Certificates),
        ("client_cert_file", &m.client_cert_file, Pem::Certificates),
        ("client_key_file", &m.client_key_file, Pem::PrivateKey),
    ] {
        if let Some(f) = file {
            let path = resolve(base, f);
            if let Err(e) = check_pem(&path, what) {
                r.error(&at(key), format!("{}: {e}", path.display()));
            }
        }
    }
    Some(MqttConfig {
        exception: None,
        host,
        port,
        tls,
        topic_prefix: m.topic_prefix.trim_end_matches('/').to_string(),
        qos: m.qos.min(1),
        client_id: m.client_id.unwrap_or_else(|| format!("meterd-{gateway}")),
        username: m.username,
        password,
        ca_file: m.ca_file.map(|p| resolve(base, &p)),
        client_cert_file: m.client_cert_file.map(|p| resolve(base, &p)),
        client_key_file: m.client_key_file.map(|p| resolve(base, &p)),
        keep_alive: m.keep_alive.unwrap_or(Duration::from_secs(30)),
        // 500: at 2,000 meters a second (4,000 readings), 100 in flight kept one reading in
        // ten waiting over a second for a free slot; 400 brought the p99 under 0.25 s
        // (BENCHMARKS.md). rumqttc keeps a slot per message in flight, about 100 bytes each.
        inflight: m.inflight.unwrap_or(DEFAULT_INFLIGHT).clamp(1, 1000),
    })
}

/// Publishes awaiting PUBACK at once, unless `mqtt.inflight` says otherwise.
pub const DEFAULT_INFLIGHT: u16 = 500;

#[derive(Clone, Copy)]
enum Pem {
    Certificates,
    PrivateKey,
}

/// A PEM file with at least one certificate, or with a private key.
fn check_pem(path: &Path, what: Pem) -> Result<(), String> {
    use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let bytes = crate::files::read_limited(path, crate::files::MAX_SECRET)?;
    match what {
        Pem::Certificates => {
            let certs = CertificateDer::pem_slice_iter(&bytes)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("not a PEM certificate file: {e}"))?;
            if certs.is_empty() {
                return Err("holds no certificate (PEM, -----BEGIN CERTIFICATE-----)".into());
            }
        }
        Pem::PrivateKey => {
            PrivateKeyDer::from_pem_slice(&bytes)
                .map_err(|e| format!("holds no private key (PEM): {e}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_messages_in_flight_default_to_500_and_stay_within_1_to_1000() {
        for (line, want) in [
            ("", super::DEFAULT_INFLIGHT),
            ("inflight = 4\n", 4),
            ("inflight = 0\n", 1),
            ("inflight = 5000\n", 1000),
        ] {
            let text = format!(
                "[gateway]\nid = \"g\"\nstate_dir = \"/var/lib/meterd\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n{line}\
                 [[bus]]\nname = \"b\"\nprotocol = \"modbus-tcp\"\ntcp = \"127.0.0.1:502\"\n\
                 [[bus.meter]]\nid = \"m1\"\nunit = 1\nprofile = \"eastron-sdm120\"\n"
            );
            let cfg = crate::config::load_str(&text, "t.toml").expect("a valid config");
            assert_eq!(cfg.mqtt.expect("mqtt").inflight, want, "{line:?}");
        }
        assert_eq!(super::DEFAULT_INFLIGHT, 500);
    }
}
