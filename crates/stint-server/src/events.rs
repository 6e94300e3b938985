//! The revocation stream (`GET /v1/events/stream`): Server-Sent Events for resource servers that want
//! revocations pushed instead of introspecting every request.
//!
//! The audit chain is the stream's log: every `session.ended` and `credential.revoked` audit record
//! becomes an event whose SSE `id` is the record's `seq`, so `Last-Event-ID` resumes exactly (the store
//! replays what the client missed, in order). Writers call [`EventHub::advance`] after each commit;
//! subscribers wake, read the new records from the store and send the ones that matter. Each
//! `session.ended` also carries the fact as a signed CAEP `session-revoked` Security Event Token
//! (RFC 8417), signed with the JWKS keys.

use serde_json::{Value, json};
use stint_core::AuditRecord;
use tokio::sync::watch;

use crate::keys::KeyRing;

/// CAEP's event type for a revoked session.
pub const CAEP_SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";

/// The highest committed audit `seq`, watched by stream subscribers.
#[derive(Debug)]
pub struct EventHub {
    head: watch::Sender<i64>,
}

impl Default for EventHub {
    fn default() -> Self {
        Self {
            head: watch::channel(0).0,
        }
    }
}

impl EventHub {
    /// Records that audit records up to `seq` are committed.
    pub fn advance(&self, seq: i64) {
        self.head.send_if_modified(|h| {
            if seq > *h {
                *h = seq;
                true
            } else {
                false
            }
        });
    }

    /// A receiver that wakes when new records are committed.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.head.subscribe()
    }

    /// The highest committed `seq` seen.
    pub fn head(&self) -> i64 {
        *self.head.borrow()
    }
}

/// One event of the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvent {
    /// The audit record's `seq` (the SSE `id`).
    pub id: i64,
    /// `session.ended` or `credential.revoked` (the SSE `event`).
    pub kind: &'static str,
    /// The JSON `data`.
    pub data: Value,
}

/// Who caused an end, in CAEP's words.
fn initiating_entity(reason: &str) -> &'static str {
    match reason {
        "completed" => "user",
        "revoked" | "offboarded" => "admin",
        "deadline" | "idle" | "max_uses" => "policy",
        _ => "system",
    }
}

/// The stream event of an audit record, if it is one; `session.ended` gets its signed SET.
pub fn from_record(r: &AuditRecord, keys: &KeyRing, issuer: &str) -> Option<StreamEvent> {
    let details: Value = serde_json::from_str(&r.details).ok()?;
    let sid = r.session.clone()?;
    let at = r.at.clone();
    match r.action.as_str() {
        "session.ended" => {
            let reason = details["reason"].as_str().unwrap_or("revoked").to_owned();
            let jtis = details["credentials"].clone();
            let event_timestamp =
                time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339)
                    .map(|t| t.unix_timestamp())
                    .unwrap_or(0);
            let set_claims = json!({
                "iss": issuer,
                "iat": event_timestamp,
                "jti": format!("set-{}", r.seq),
                "sub_id": {"format": "opaque", "id": sid},
                "events": {
                    CAEP_SESSION_REVOKED: {
                        "subject": {"format": "opaque", "id": sid},
                        "event_timestamp": event_timestamp,
                        "initiating_entity": initiating_entity(&reason),
                        "reason_admin": {"en": format!("stint session ended: {reason}")},
                    }
                }
            });
            let set = keys.sign_typed(&set_claims, "secevent+jwt").ok().map(|(t, _)| t);
            Some(StreamEvent {
                id: r.seq,
                kind: "session.ended",
                data: json!({
                    "type": "session.ended",
                    "sid": sid,
                    "jtis": if jtis.is_array() { jtis } else { json!([]) },
                    "reason": reason,
                    "at": at,
                    "set": set,
                }),
            })
        }
        "credential.revoked" => Some(StreamEvent {
            id: r.seq,
            kind: "credential.revoked",
            data: json!({
                "type": "credential.revoked",
                "sid": sid,
                "jtis": [details["credential"].clone()],
                "kind": details["kind"].clone(),
                "reason": "revoked",
                "at": at,
            }),
        }),
        _ => None,
    }
}
