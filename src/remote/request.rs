//! A command request as it arrives: JSON, at most [`MAX_BYTES`], with its envelope (`id`,
//! `ts`, `nonce`, `by`, `sig`) and the command's own arguments under `args`, parsed into typed
//! arguments per command. Every way a request can be wrong is a [`Refusal`] with its reason,
//! never a panic.
//!
//! ```json
//! {"id":"r-1","ts":1764511200,"nonce":"6f1c…","by":"master-1","args":{"meter":"m-1"},"sig":"…"}
//! ```

use serde_json::Value;

/// Requests larger than this are refused unread: commands are small.
pub const MAX_BYTES: usize = 16 * 1024;

/// The commands, named as in their topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Command {
    Read,
    Timesync,
    Recollect,
    Relay,
    Status,
}

impl Command {
    pub const ALL: [Command; 5] = [
        Command::Read,
        Command::Timesync,
        Command::Recollect,
        Command::Relay,
        Command::Status,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Read => "read",
            Command::Timesync => "timesync",
            Command::Recollect => "recollect",
            Command::Relay => "relay",
            Command::Status => "status",
        }
    }

    pub fn from_name(s: &str) -> Option<Command> {
        Command::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Why a request is not executed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("request of {0} bytes is larger than {MAX_BYTES}")]
    TooLarge(usize),
    #[error("not a JSON object: {0}")]
    NotJson(String),
    #[error("{field}: {why}")]
    Field { field: &'static str, why: String },
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    #[error("command {0} is not enabled on this gateway")]
    Disabled(&'static str),
    #[error("bad signature")]
    BadSignature,
    #[error("timestamp {ts} is {off_s} s from the gateway's clock; the window is {window_s} s")]
    Stale { ts: i64, off_s: i64, window_s: u64 },
    #[error("nonce already used")]
    Replayed,
    #[error("rate limit of {command}: at most {per_minute} per minute")]
    RateLimited {
        command: &'static str,
        per_minute: u32,
    },
    #[error("no meter {0:?} on this gateway")]
    UnknownMeter(String),
    #[error("meter {0:?} is not listed as relay-capable")]
    NotRelayCapable(String),
}

/// Which meters a command is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Meter(String),
    Bus(String),
    All,
}

/// What a relay command does (DL/T 645-2007 remote control).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayAction {
    Trip,
    ClosePermit,
    Alarm,
    AlarmRelease,
}

/// The typed arguments of each command.
#[derive(Debug, Clone, PartialEq)]
pub enum Args {
    /// One meter now: a point group, or named points (DIs, OADs, quantities).
    Read {
        meter: String,
        group: Option<String>,
        points: Vec<String>,
    },
    Timesync(Scope),
    /// Daily freezes from `from` to `to` (days since the epoch, inclusive).
    Recollect {
        scope: Scope,
        from: i64,
        to: i64,
    },
    Relay {
        meter: String,
        action: RelayAction,
    },
    Status {
        meter: Option<String>,
    },
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub command: Command,
    pub id: String,
    /// Seconds since the epoch, when the master signed it.
    pub ts: i64,
    pub nonce: String,
    /// Who sent it (for the audit trail; not trusted for anything).
    pub by: String,
    /// The arguments as sent (what was signed), and as typed.
    pub raw_args: Value,
    pub args: Args,
    /// Lowercase hex of the HMAC-SHA256.
    pub sig: String,
}

fn field(field: &'static str, why: impl Into<String>) -> Refusal {
    Refusal::Field {
        field,
        why: why.into(),
    }
}

/// A short identifier: 1 to 64 printable ASCII characters without spaces.
fn token(v: Option<&Value>, name: &'static str, max: usize) -> Result<String, Refusal> {
    let s = v
        .and_then(Value::as_str)
        .ok_or_else(|| field(name, "a string is required"))?;
    if s.is_empty() || s.len() > max || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(field(
            name,
            format!("1 to {max} printable characters without spaces"),
        ));
    }
    Ok(s.to_string())
}

fn scope(args: &serde_json::Map<String, Value>) -> Result<Scope, Refusal> {
    match (args.get("meter"), args.get("bus"), args.get("all")) {
        (Some(_), None, None) => Ok(Scope::Meter(token(args.get("meter"), "args.meter", 64)?)),
        (None, Some(_), None) => Ok(Scope::Bus(token(args.get("bus"), "args.bus", 64)?)),
        (None, None, Some(Value::Bool(true))) => Ok(Scope::All),
        _ => Err(field(
            "args",
            "give exactly one of meter, bus and all = true",
        )),
    }
}

/// `YYYY-MM-DD` as days since the epoch.
fn day(v: Option<&Value>, name: &'static str) -> Result<i64, Refusal> {
    let s = v
        .and_then(Value::as_str)
        .ok_or_else(|| field(name, "a date YYYY-MM-DD is required"))?;
    humantime::parse_rfc3339(&format!("{s}T00:00:00Z"))
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| (d.as_secs() / 86_400) as i64)
        .ok_or_else(|| field(name, format!("{s:?} is not a date YYYY-MM-DD")))
}

/// The longest date range one `recollect` may ask for: a month, so it cannot hold a line.
pub const MAX_RECOLLECT_DAYS: i64 = 31;

impl Request {
    /// Parse a request that arrived on the topic of `command` (by its name).
    pub fn parse(command: &str, payload: &[u8]) -> Result<Request, Refusal> {
        if payload.len() > MAX_BYTES {
            return Err(Refusal::TooLarge(payload.len()));
        }
        let command =
            Command::from_name(command).ok_or_else(|| Refusal::UnknownCommand(command.into()))?;
        let v: Value =
            serde_json::from_slice(payload).map_err(|e| Refusal::NotJson(e.to_string()))?;
        let obj = v
            .as_object()
            .ok_or_else(|| Refusal::NotJson("not an object".into()))?;
        let id = token(obj.get("id"), "id", 64)?;
        let ts = obj
            .get("ts")
            .and_then(Value::as_i64)
            .ok_or_else(|| field("ts", "seconds since the epoch (an integer) are required"))?;
        let nonce = token(obj.get("nonce"), "nonce", 64)?;
        if nonce.len() < 16 {
            return Err(field("nonce", "at least 16 characters"));
        }
        let by = match obj.get("by") {
            None => String::new(),
            v => token(v, "by", 64)?,
        };
        let sig = token(obj.get("sig"), "sig", 64)?;
        let raw_args = obj
            .get("args")
            .cloned()
            .unwrap_or(Value::Object(Default::default()));
        let a = raw_args
            .as_object()
            .ok_or_else(|| field("args", "an object is required"))?;
        let args = match command {
            Command::Read => Args::Read {
                meter: token(a.get("meter"), "args.meter", 64)?,
                group: match a.get("group") {
                    None => None,
                    g => Some(token(g, "args.group", 64)?),
                },
                points: match a.get("points") {
                    None => Vec::new(),
                    Some(Value::Array(items)) if items.len() <= 64 => items
                        .iter()
                        .map(|p| token(Some(p), "args.points", 64))
                        .collect::<Result<_, _>>()?,
                    Some(_) => return Err(field("args.points", "a list of at most 64 names")),
                },
            },
            Command::Timesync => Args::Timesync(scope(a)?),
            Command::Recollect => {
                let from = day(a.get("from"), "args.from")?;
                let to = day(a.get("to"), "args.to")?;
                if to < from || to - from + 1 > MAX_RECOLLECT_DAYS {
                    return Err(field(
                        "args.to",
                        format!("from..to must be 1 to {MAX_RECOLLECT_DAYS} days"),
                    ));
                }
                Args::Recollect {
                    scope: scope(a)?,
                    from,
                    to,
                }
            }
            Command::Relay => Args::Relay {
                meter: token(a.get("meter"), "args.meter", 64)?,
                action: match a.get("action").and_then(Value::as_str) {
                    Some("trip") => RelayAction::Trip,
                    Some("close-permit") => RelayAction::ClosePermit,
                    Some("alarm") => RelayAction::Alarm,
                    Some("alarm-release") => RelayAction::AlarmRelease,
                    _ => {
                        return Err(field(
                            "args.action",
                            "trip, close-permit, alarm or alarm-release",
                        ))
                    }
                },
            },
            Command::Status => Args::Status {
                meter: match a.get("meter") {
                    None => None,
                    m => Some(token(m, "args.meter", 64)?),
                },
            },
        };
        Ok(Request {
            command,
            id,
            ts,
            nonce,
            by,
            raw_args,
            args,
            sig,
        })
    }

    /// The meters it names, for checks against the config.
    pub fn meter(&self) -> Option<&str> {
        match &self.args {
            Args::Read { meter, .. } | Args::Relay { meter, .. } => Some(meter),
            Args::Timesync(Scope::Meter(m))
            | Args::Recollect {
                scope: Scope::Meter(m),
                ..
            } => Some(m),
            Args::Status { meter } => meter.as_deref(),
            _ => None,
        }
    }
}

/// The id of a payload that could not be parsed, if it has one: a refusal still answers it.
pub fn id_of(payload: &[u8]) -> Option<String> {
    if payload.len() > MAX_BYTES {
        return None;
    }
    let v: Value = serde_json::from_slice(payload).ok()?;
    token(v.get("id"), "id", 64).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(command: &str, args: &str) -> Result<Request, Refusal> {
        Request::parse(
            command,
            format!(r#"{{"id":"r-1","ts":1764511200,"nonce":"0123456789abcdef","by":"ms","args":{args},"sig":"00"}}"#)
                .as_bytes(),
        )
    }

    #[test]
    fn each_command_takes_its_typed_arguments() {
        let cases: Vec<(&str, &str, Args)> = vec![
            (
                "read",
                r#"{"meter":"m-1","group":"realtime"}"#,
                Args::Read {
                    meter: "m-1".into(),
                    group: Some("realtime".into()),
                    points: vec![],
                },
            ),
            (
                "read",
                r#"{"meter":"m-1","points":["02010100","00100200"]}"#,
                Args::Read {
                    meter: "m-1".into(),
                    group: None,
                    points: vec!["02010100".into(), "00100200".into()],
                },
            ),
            (
                "timesync",
                r#"{"bus":"rs485-1"}"#,
                Args::Timesync(Scope::Bus("rs485-1".into())),
            ),
            ("timesync", r#"{"all":true}"#, Args::Timesync(Scope::All)),
            (
                "recollect",
                r#"{"meter":"m-1","from":"2026-11-20","to":"2026-11-26"}"#,
                Args::Recollect {
                    scope: Scope::Meter("m-1".into()),
                    from: 20_777,
                    to: 20_783,
                },
            ),
            (
                "relay",
                r#"{"meter":"m-1","action":"trip"}"#,
                Args::Relay {
                    meter: "m-1".into(),
                    action: RelayAction::Trip,
                },
            ),
            ("status", "{}", Args::Status { meter: None }),
        ];
        for (command, args, expected) in cases {
            assert_eq!(
                req(command, args).map(|r| r.args),
                Ok(expected),
                "{command} {args}"
            );
        }
    }

    #[test]
    fn every_malformed_request_is_refused_with_its_reason() {
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("read", vec![b'x'; MAX_BYTES + 1], "larger than"),
            ("read", b"{not json".to_vec(), "not a JSON object"),
            ("read", b"[1,2]".to_vec(), "not an object"),
            ("fly", b"{}".to_vec(), "unknown command \"fly\""),
            ("read", br#"{"ts":1,"nonce":"0123456789abcdef","sig":"0"}"#.to_vec(), "id: a string is required"),
            ("read", br#"{"id":"a b","ts":1,"nonce":"0123456789abcdef","sig":"0"}"#.to_vec(), "id: 1 to 64 printable"),
            ("read", br#"{"id":"r","ts":"now","nonce":"0123456789abcdef","sig":"0"}"#.to_vec(), "ts: seconds"),
            ("read", br#"{"id":"r","ts":1,"nonce":"short","sig":"0"}"#.to_vec(), "nonce: at least 16"),
            ("read", br#"{"id":"r","ts":1,"nonce":"0123456789abcdef","sig":"0","args":{}}"#.to_vec(), "args.meter: a string is required"),
            ("timesync", br#"{"id":"r","ts":1,"nonce":"0123456789abcdef","sig":"0","args":{"meter":"m","bus":"b"}}"#.to_vec(), "exactly one of meter, bus"),
            ("recollect", br#"{"id":"r","ts":1,"nonce":"0123456789abcdef","sig":"0","args":{"meter":"m","from":"2026-01-01","to":"2026-03-01"}}"#.to_vec(), "1 to 31 days"),
            ("recollect", br#"{"id":"r","ts":1,"nonce":"0123456789abcdef","sig":"0","args":{"meter":"m","from":"yesterday","to":"2026-03-01"}}"#.to_vec(), "not a date"),
            ("relay", br#"{"id":"r","ts":1,"nonce":"0123456789abcdef","sig":"0","args":{"meter":"m","action":"explode"}}"#.to_vec(), "trip, close-permit"),
        ];
        for (command, payload, reason) in cases {
            let e = Request::parse(command, &payload).expect_err(reason);
            assert!(
                e.to_string().contains(reason),
                "{command}: {e} (wanted {reason:?})"
            );
        }
    }

    #[test]
    fn a_refusal_still_answers_the_id_when_there_is_one() {
        assert_eq!(id_of(br#"{"id":"r-9","args":7}"#).as_deref(), Some("r-9"));
        assert_eq!(id_of(b"garbage"), None);
    }
}
