//! `[influxdb]`: URL, API version and its credentials, batching.

use std::{path::Path, time::Duration};

use super::{
    model::{InfluxAuth, InfluxConfig},
    raw::*,
    report::{k, Reporter},
    secret::secret,
};

pub(super) fn check_influx(r: &mut Reporter, i: RawInflux, base: &Path) -> Option<InfluxConfig> {
    let at = |key: &str| [k("influxdb"), k(key)];
    if !(i.url.starts_with("http://") || i.url.starts_with("https://")) {
        r.error(
            &at("url"),
            "use http://HOST:PORT or https://HOST:PORT (the URL is not repeated: it may carry a secret)",
        );
    }
    let token = secret(
        r,
        &[k("influxdb")],
        "token",
        i.token,
        i.token_file,
        i.token_env,
        base,
    );
    let password = secret(
        r,
        &[k("influxdb")],
        "password",
        i.password,
        i.password_file,
        i.password_env,
        base,
    );
    let auth = match i.api {
        InfluxApi::V2 => {
            for (key, missing) in [("org", i.org.is_none()), ("bucket", i.bucket.is_none())] {
                if missing {
                    r.error(&at("api"), format!("api = \"v2\" needs {key}"));
                }
            }
            if i.database.is_some() {
                r.error(
                    &at("database"),
                    "database is for api = \"v1\"; v2 uses org and bucket",
                );
            }
            InfluxAuth::V2 {
                org: i.org.unwrap_or_default(),
                bucket: i.bucket.unwrap_or_default(),
                token: token.unwrap_or_default(),
            }
        }
        InfluxApi::V1 => {
            let Some(database) = i.database else {
                r.error(&at("api"), "api = \"v1\" needs database");
                return None;
            };
            InfluxAuth::V1 {
                database,
                retention_policy: i.retention_policy,
                username: i.username,
                password,
            }
        }
    };
    let batch_size = i.batch_size.unwrap_or(5000);
    if batch_size == 0 {
        r.error(&at("batch_size"), "must be at least 1");
    }
    Some(InfluxConfig {
        exception: None,
        url: i.url.trim_end_matches('/').to_string(),
        auth,
        batch_size: batch_size.max(1),
        batch_interval: i.batch_interval.unwrap_or(Duration::from_millis(500)),
        status_interval: i
            .status_interval
            .unwrap_or(Duration::from_secs(30))
            .max(Duration::from_millis(100)),
        timeout: i.timeout.unwrap_or(Duration::from_secs(10)),
    })
}
