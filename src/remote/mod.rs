//! Remote operations (issue 14), the pure core: commands that the master station sends over
//! MQTT to `{prefix}/{gateway}/cmd/{command}`, their authentication (HMAC-SHA256 over the
//! command, its id, timestamp, nonce and arguments), replay and duplicate refusal within a
//! window, rate limits per command, and the reply each command gets on `…/reply`. Clock
//! passed in; no I/O. The MQTT side and the execution on buses are wired separately.

pub mod auth;
pub mod limit;
pub mod reply;
pub mod request;

pub use auth::{sign, Guard, Keys};
pub use limit::RateLimit;
pub use reply::{Reply, Status};
pub use request::{Command, Refusal, Request};
