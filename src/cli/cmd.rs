//! `meterd cmd`: send a signed command to a running gateway through its broker and print the
//! reply — the master station's path, end to end, for an operator to test.

use super::*;

#[derive(Args)]
pub(super) struct CmdArgs {
    /// The gateway's config: broker, gateway id and the command key (`[remote]`).
    #[arg(short, long, default_value = "/etc/meterd/meterd.toml")]
    pub(super) config: PathBuf,
    /// read, timesync, recollect, relay or status.
    pub(super) command: String,
    /// The meter (read, relay, status; timesync and recollect: one meter).
    #[arg(long)]
    pub(super) meter: Option<String>,
    /// timesync, recollect: every meter of a bus.
    #[arg(long)]
    pub(super) bus: Option<String>,
    /// timesync, recollect: every meter.
    #[arg(long)]
    pub(super) all: bool,
    /// read: a point group.
    #[arg(long)]
    pub(super) group: Option<String>,
    /// read: points (DIs, OADs, quantities); repeatable.
    #[arg(long = "point")]
    pub(super) points: Vec<String>,
    /// recollect: the first day, YYYY-MM-DD.
    #[arg(long)]
    pub(super) from: Option<String>,
    /// recollect: the last day, YYYY-MM-DD (at most 31 days after --from).
    #[arg(long)]
    pub(super) to: Option<String>,
    /// relay: trip, close-permit, alarm or alarm-release.
    #[arg(long)]
    pub(super) action: Option<String>,
    /// Who is asking, for the audit trail.
    #[arg(long, default_value = "meterd-cmd")]
    pub(super) by: String,
    /// How long to wait for the reply.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(super) timeout: Duration,
}

/// The request's JSON, signed with the config's key.
fn signed_request(a: &CmdArgs, cfg: &config::Config) -> anyhow::Result<(String, Vec<u8>)> {
    use meterd::remote::{request::Request, sign};
    let remote = cfg
        .remote
        .as_ref()
        .ok_or_else(|| anyhow!("no [remote] section with a key in the config"))?;
    let mut args = serde_json::Map::new();
    let mut put = |k: &str, v: serde_json::Value| {
        args.insert(k.to_string(), v);
    };
    if let Some(m) = &a.meter {
        put("meter", m.clone().into());
    }
    if let Some(b) = &a.bus {
        put("bus", b.clone().into());
    }
    if a.all {
        put("all", true.into());
    }
    if let Some(g) = &a.group {
        put("group", g.clone().into());
    }
    if !a.points.is_empty() {
        put("points", a.points.clone().into());
    }
    for (k, v) in [("from", &a.from), ("to", &a.to), ("action", &a.action)] {
        if let Some(v) = v {
            put(k, v.clone().into());
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let id = format!("cmd-{now}-{:04x}", rng.gen::<u16>());
    let nonce: String = (0..16)
        .map(|_| format!("{:02x}", rng.gen::<u8>()))
        .collect();
    let mut body = serde_json::json!({
        "id": id, "ts": now, "nonce": nonce, "by": a.by, "args": args, "sig": "00",
    });
    let request = Request::parse(&a.command, body.to_string().as_bytes())
        .map_err(|e| anyhow!("{}: {e}", a.command))?;
    let key = match request.command {
        meterd::remote::Command::Relay => remote
            .keys
            .relay
            .as_deref()
            .ok_or_else(|| anyhow!("relay commands need relay_key_file in [remote]"))?,
        _ => &remote.keys.command,
    };
    body["sig"] = sign(key, &cfg.gateway_id, &request).into();
    Ok((id, body.to_string().into_bytes()))
}

pub(super) async fn cmd(a: CmdArgs) -> anyhow::Result<i32> {
    use rumqttc::{AsyncClient, Event, Incoming, QoS};
    let cfg = match load_config(&a.config) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let mqtt = cfg
        .mqtt
        .as_ref()
        .ok_or_else(|| anyhow!("no [mqtt] section in the config"))?;
    let (id, payload) = signed_request(&a, &cfg)?;
    let topic = format!("{}/{}/cmd/{}", mqtt.topic_prefix, cfg.gateway_id, a.command);
    let reply_topic = format!("{topic}/reply");
    let client_id = format!("{}-cli-{}", mqtt.client_id, std::process::id());
    let opts = meterd::sinks::mqtt::options(mqtt, &client_id, None, true)?;
    let (client, mut el) = AsyncClient::new(opts, 16);
    let deadline = tokio::time::Instant::now() + a.timeout;
    let mut sent = false;
    loop {
        let ev = tokio::time::timeout_at(deadline, el.poll())
            .await
            .map_err(|_| anyhow!("no reply to {id} within {:?}", a.timeout))?;
        match ev {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                client.subscribe(&reply_topic, QoS::AtLeastOnce).await?;
            }
            Ok(Event::Incoming(Incoming::SubAck(_))) if !sent => {
                client
                    .publish(&topic, QoS::AtLeastOnce, false, payload.clone())
                    .await?;
                sent = true;
            }
            Ok(Event::Incoming(Incoming::Publish(p))) if p.topic == reply_topic => {
                let v: serde_json::Value = match serde_json::from_slice(&p.payload) {
                    Ok(v) => v,
                    Err(_) => continue,
                };
                if v["id"] != id.as_str() {
                    continue;
                }
                if v["status"] == "progress" {
                    // Progress of a long command: on stderr, the final reply follows.
                    eprintln!("{v}");
                    continue;
                }
                outln!("{v}");
                let _ = client.disconnect().await;
                return Ok(if v["status"] == "ok" { 0 } else { 1 });
            }
            Ok(_) => {}
            Err(e) => bail!("broker: {e}"),
        }
    }
}
