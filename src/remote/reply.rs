//! The reply to a command, on `{prefix}/{gateway}/cmd/{command}/reply`:
//! `{"id":"r-1","status":"ok","result":{…}}`, or with `"reason"` when refused or failed.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Refused,
    Failed,
    Timeout,
    /// A progress message of a long command (recollect); the final reply follows.
    Progress,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reply {
    /// The request's id (empty when the request had none that could be read).
    pub id: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
}

impl Reply {
    pub fn new(id: &str, status: Status) -> Reply {
        Reply {
            id: id.to_string(),
            status,
            reason: None,
            result: None,
        }
    }

    pub fn refused(id: &str, reason: impl ToString) -> Reply {
        Reply {
            reason: Some(reason.to_string()),
            ..Reply::new(id, Status::Refused)
        }
    }

    pub fn failed(id: &str, reason: impl ToString) -> Reply {
        Reply {
            reason: Some(reason.to_string()),
            ..Reply::new(id, Status::Failed)
        }
    }

    pub fn ok(id: &str, result: serde_json::Value) -> Reply {
        Reply {
            result: Some(result),
            ..Reply::new(id, Status::Ok)
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_carry_the_id_status_and_reason_or_result() {
        let r = Reply::refused("r-1", crate::remote::Refusal::BadSignature);
        assert_eq!(
            String::from_utf8(r.to_json()).unwrap(),
            r#"{"id":"r-1","status":"refused","reason":"bad signature"}"#
        );
        let ok = Reply::ok(
            "r-2",
            serde_json::json!({"values": {"voltage_l1_v": 230.1}}),
        );
        assert_eq!(
            String::from_utf8(ok.to_json()).unwrap(),
            r#"{"id":"r-2","status":"ok","result":{"values":{"voltage_l1_v":230.1}}}"#
        );
    }
}
