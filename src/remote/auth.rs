//! Who may command the gateway: every request carries an HMAC-SHA256 of what it asks, keyed
//! with a secret shared with the master station (from a credential file or the environment,
//! never inline in the config); `relay` needs a key of its own. The signed text binds the
//! gateway, the command, the id, the timestamp, the nonce and the arguments, so a signature
//! cannot be moved to another gateway, command or request:
//!
//! ```text
//! meterd-cmd-v1\n{gateway}\n{command}\n{id}\n{ts}\n{nonce}\n{args as compact JSON, keys sorted}
//! ```
//!
//! A request whose timestamp is more than the window away from the gateway's clock is
//! refused, and so is a nonce already seen within it (replay); an id already executed within
//! the window is not executed again (a QoS 1 redelivery after a reconnect), its reply is sent
//! again instead. Clock passed in.

use std::collections::HashMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{
    reply::Reply,
    request::{Command, Refusal, Request},
};

/// The shared secrets.
#[derive(Clone)]
pub struct Keys {
    pub command: Vec<u8>,
    /// `relay` is signed with this one; without it relay commands are refused.
    pub relay: Option<Vec<u8>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys([redacted])")
    }
}

/// The text a request's signature covers.
pub fn signed_text(gateway: &str, request: &Request) -> String {
    format!(
        "meterd-cmd-v1\n{gateway}\n{}\n{}\n{}\n{}\n{}",
        request.command.as_str(),
        request.id,
        request.ts,
        request.nonce,
        // serde_json's map keeps keys sorted: the same arguments give the same text on both
        // ends, whatever order the sender wrote them in.
        serde_json::to_string(&request.raw_args).unwrap_or_default()
    )
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length: this cannot fail.
    <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
}

/// The signature of `request` (lowercase hex), as `meterd cmd` and the master compute it.
pub fn sign(key: &[u8], gateway: &str, request: &Request) -> String {
    let mut m = mac(key);
    m.update(signed_text(gateway, request).as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// Replay, duplicate and signature checks for one gateway.
#[derive(Debug)]
pub struct Guard {
    gateway: String,
    keys: Keys,
    /// How far a timestamp may be from the gateway's clock, either way, in seconds; nonces and
    /// ids are remembered this long past their timestamp.
    window_s: u64,
    nonces: HashMap<String, i64>,
    /// Executed ids, when they expire, and their reply once there is one.
    done: HashMap<String, (i64, Option<Reply>)>,
    /// The earliest expiry remembered: nothing to forget before it.
    earliest: i64,
}

/// What to do with a request that passed parsing.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Execute,
    /// Already executed within the window: send this reply again (or nothing yet, if it is
    /// still running).
    Duplicate(Option<Reply>),
}

/// Ids and nonces remembered at most; past this the oldest are forgotten early (a flood of
/// signed requests needs the key, but memory stays bounded even then).
const MAX_REMEMBERED: usize = 10_000;

impl Guard {
    pub fn new(gateway: &str, keys: Keys, window_s: u64) -> Guard {
        Guard {
            gateway: gateway.to_string(),
            keys,
            window_s: window_s.max(1),
            nonces: HashMap::new(),
            done: HashMap::new(),
            earliest: i64::MAX,
        }
    }

    pub fn window_s(&self) -> u64 {
        self.window_s
    }

    /// Check `request` at `now` (seconds since the epoch).
    pub fn check(&mut self, request: &Request, now: i64) -> Result<Verdict, Refusal> {
        self.forget(now);
        let key = match request.command {
            Command::Relay => self.keys.relay.as_deref().ok_or(Refusal::BadSignature)?,
            _ => &self.keys.command,
        };
        let sig = hex::decode(&request.sig).map_err(|_| Refusal::BadSignature)?;
        let mut m = mac(key);
        m.update(signed_text(&self.gateway, request).as_bytes());
        // Constant-time comparison.
        m.verify_slice(&sig).map_err(|_| Refusal::BadSignature)?;
        let off = request.ts.saturating_sub(now);
        if off.unsigned_abs() > self.window_s {
            return Err(Refusal::Stale {
                ts: request.ts,
                off_s: off,
                window_s: self.window_s,
            });
        }
        if let Some((_, reply)) = self.done.get(&request.id) {
            return Ok(Verdict::Duplicate(reply.clone()));
        }
        let expires = request.ts.saturating_add(self.window_s as i64);
        if self.nonces.insert(request.nonce.clone(), expires).is_some() {
            return Err(Refusal::Replayed);
        }
        self.done.insert(request.id.clone(), (expires, None));
        self.earliest = self.earliest.min(expires);
        self.bound();
        Ok(Verdict::Execute)
    }

    /// Keep the reply of an executed request, to answer a duplicate with it.
    pub fn finished(&mut self, id: &str, reply: &Reply) {
        if let Some(entry) = self.done.get_mut(id) {
            entry.1 = Some(reply.clone());
        }
    }

    fn forget(&mut self, now: i64) {
        if now <= self.earliest {
            return;
        }
        self.nonces.retain(|_, exp| *exp >= now);
        self.done.retain(|_, (exp, _)| *exp >= now);
        self.earliest = self
            .nonces
            .values()
            .chain(self.done.values().map(|(e, _)| e))
            .min()
            .copied()
            .unwrap_or(i64::MAX);
    }

    /// Past [`MAX_REMEMBERED`], forget the oldest tenth at once (amortised: a selection per
    /// thousand requests, not per request).
    fn bound(&mut self) {
        let keep = MAX_REMEMBERED - MAX_REMEMBERED / 10;
        if self.nonces.len() > MAX_REMEMBERED {
            let mut by_age: Vec<(i64, String)> =
                self.nonces.iter().map(|(k, e)| (*e, k.clone())).collect();
            let drop = by_age.len() - keep;
            by_age.select_nth_unstable(drop);
            for (_, k) in &by_age[..drop] {
                self.nonces.remove(k);
            }
        }
        if self.done.len() > MAX_REMEMBERED {
            let mut by_age: Vec<(i64, String)> = self
                .done
                .iter()
                .map(|(k, (e, _))| (*e, k.clone()))
                .collect();
            let drop = by_age.len() - keep;
            by_age.select_nth_unstable(drop);
            for (_, k) in &by_age[..drop] {
                self.done.remove(k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::reply::Status;

    const NOW: i64 = 1_764_511_200;

    fn keys() -> Keys {
        Keys {
            command: b"command key".to_vec(),
            relay: Some(b"relay key".to_vec()),
        }
    }

    /// A request signed with `key` for `gateway`.
    fn signed(
        command: &str,
        id: &str,
        nonce: &str,
        ts: i64,
        args: &str,
        key: &[u8],
        gateway: &str,
    ) -> Request {
        let text =
            format!(r#"{{"id":"{id}","ts":{ts},"nonce":"{nonce}","args":{args},"sig":"00"}}"#);
        let mut r = Request::parse(command, text.as_bytes()).unwrap();
        r.sig = sign(key, gateway, &r);
        r
    }

    fn good(id: &str, nonce: &str) -> Request {
        signed(
            "read",
            id,
            nonce,
            NOW,
            r#"{"meter":"m-1"}"#,
            b"command key",
            "gw-1",
        )
    }

    #[test]
    fn a_signed_fresh_request_is_executed_once_and_its_duplicate_gets_the_same_reply() {
        let mut g = Guard::new("gw-1", keys(), 300);
        let r = good("r-1", "nonce-0000000001");
        assert_eq!(g.check(&r, NOW + 5), Ok(Verdict::Execute));
        assert_eq!(
            g.check(&r, NOW + 6),
            Ok(Verdict::Duplicate(None)),
            "still running"
        );
        let reply = Reply::new(&r.id, Status::Ok);
        g.finished(&r.id, &reply);
        assert_eq!(g.check(&r, NOW + 7), Ok(Verdict::Duplicate(Some(reply))));
    }

    #[test]
    fn forged_moved_stale_and_replayed_requests_are_refused() {
        let mut g = Guard::new("gw-1", keys(), 300);
        g.check(&good("r-1", "nonce-0000000001"), NOW).unwrap();
        let mut tampered = good("r-2", "nonce-0000000002");
        tampered.raw_args = serde_json::json!({"meter": "m-2"});
        // Times only move forward through the cases: a check forgets what its time has passed.
        let cases: Vec<(&str, Request, i64, Refusal)> = vec![
            (
                "a used nonce under a new id",
                good("r-8", "nonce-0000000001"),
                NOW + 1,
                Refusal::Replayed,
            ),
            (
                "another key",
                signed(
                    "read",
                    "r-3",
                    "nonce-0000000003",
                    NOW,
                    r#"{"meter":"m-1"}"#,
                    b"guess",
                    "gw-1",
                ),
                NOW,
                Refusal::BadSignature,
            ),
            (
                "signed for another gateway",
                signed(
                    "read",
                    "r-4",
                    "nonce-0000000004",
                    NOW,
                    r#"{"meter":"m-1"}"#,
                    b"command key",
                    "gw-2",
                ),
                NOW,
                Refusal::BadSignature,
            ),
            (
                "arguments changed after signing",
                tampered,
                NOW,
                Refusal::BadSignature,
            ),
            (
                "relay signed with the command key",
                signed(
                    "relay",
                    "r-5",
                    "nonce-0000000005",
                    NOW,
                    r#"{"meter":"m-1","action":"trip"}"#,
                    b"command key",
                    "gw-1",
                ),
                NOW,
                Refusal::BadSignature,
            ),
            (
                "ten minutes old",
                good("r-6", "nonce-0000000006"),
                NOW + 600,
                Refusal::Stale {
                    ts: NOW,
                    off_s: -600,
                    window_s: 300,
                },
            ),
            (
                "from the future",
                signed(
                    "read",
                    "r-7",
                    "nonce-0000000007",
                    NOW + 301,
                    r#"{"meter":"m-1"}"#,
                    b"command key",
                    "gw-1",
                ),
                NOW,
                Refusal::Stale {
                    ts: NOW + 301,
                    off_s: 301,
                    window_s: 300,
                },
            ),
        ];
        for (what, r, now, refusal) in cases {
            assert_eq!(g.check(&r, now), Err(refusal), "{what}");
        }
        // The relay key signs relay commands.
        let relay = signed(
            "relay",
            "r-9",
            "nonce-0000000009",
            NOW,
            r#"{"meter":"m-1","action":"trip"}"#,
            b"relay key",
            "gw-1",
        );
        assert_eq!(g.check(&relay, NOW), Ok(Verdict::Execute));
    }

    #[test]
    fn the_signature_does_not_depend_on_the_order_of_the_arguments() {
        let a = signed(
            "read",
            "r-1",
            "nonce-0000000001",
            NOW,
            r#"{"meter":"m-1","group":"g"}"#,
            b"k",
            "gw",
        );
        let b = signed(
            "read",
            "r-1",
            "nonce-0000000001",
            NOW,
            r#"{"group":"g","meter":"m-1"}"#,
            b"k",
            "gw",
        );
        assert_eq!(a.sig, b.sig);
    }

    #[test]
    fn nonces_and_ids_are_forgotten_after_the_window() {
        let mut g = Guard::new("gw-1", keys(), 60);
        let r = good("r-1", "nonce-0000000001");
        g.check(&r, NOW).unwrap();
        g.forget(NOW + 61);
        assert!(g.nonces.is_empty() && g.done.is_empty());
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_signed_requests() {
        let mut g = Guard::new("gw-1", keys(), 300);
        for i in 0..MAX_REMEMBERED + 50 {
            let r = good(&format!("r-{i}"), &format!("nonce-{i:011}"));
            assert_eq!(g.check(&r, NOW), Ok(Verdict::Execute));
        }
        assert!(g.nonces.len() <= MAX_REMEMBERED && g.done.len() <= MAX_REMEMBERED);
        assert!(
            g.nonces.len() >= MAX_REMEMBERED * 9 / 10,
            "only the oldest tenth goes"
        );
    }
}
