//! Remote operations (issue 14), the pure core: commands that the master station sends over
//! MQTT to `{prefix}/{gateway}/cmd/{command}`, their authentication (HMAC-SHA256 over the
//! command, its id, timestamp, nonce and arguments), replay and duplicate refusal within a
//! window, rate limits per command, and the reply each command gets on `…/reply`: pure, the
//! clock passed in. `task.rs` is the MQTT side: its own connection, the handler that decides
//! and executes, audit events.

pub mod auth;
pub mod limit;
pub mod reply;
pub mod request;
pub mod task;

pub use auth::{sign, Guard, Keys};
pub use limit::RateLimit;
pub use reply::{Reply, Status};
pub use request::{Command, Refusal, Request};
