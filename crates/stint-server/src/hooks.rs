//! Event-bound endings: external systems (CI, ticketing, incident tools) report that an activity
//! changed state at `POST /v1/hooks/{source}`, signed with the source's secret. A closing event ends
//! every session bound to that activity (reason `event`), cancels pending ones, and closes the ref so
//! that no new session can be bound to it. This module holds the pure parts: source configuration,
//! signature and timestamp checks, and reading the three payload shapes.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use stint_core::BindingKind;

/// Statuses of the generic payload that end sessions.
pub const CLOSING: [&str; 4] = ["closed", "resolved", "completed", "canceled"];

/// What kind of system sends the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// `{"binding_kind", "ref", "status"}` with `X-Stint-Signature`.
    Generic,
    /// GitHub's `workflow_run` / `workflow_job` webhooks with `X-Hub-Signature-256`.
    Github,
    /// A ticketing system's payload, read through JSON pointers.
    Ticket,
}

/// Where a ticket payload keeps its ref and status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TicketMapping {
    /// JSON pointer to the ticket's key, e.g. `/issue/key`.
    pub ref_pointer: String,
    /// JSON pointer to its status, e.g. `/issue/fields/status/name`.
    pub status_pointer: String,
    /// Statuses that end sessions, e.g. `["Done", "Closed"]`.
    pub closing_statuses: Vec<String>,
    /// The binding kind its sessions use (default `ticket`).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub binding_kind: Option<BindingKind>,
}

/// `POST /v1/hook-sources`.
#[derive(Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateHookSource {
    /// Unique name (the `{source}` of the hook URL).
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9._-]+$")]
    pub name: String,
    /// `generic`, `github` or `ticket`.
    pub kind: SourceKind,
    /// The shared HMAC secret (write-only; at least 16 characters).
    #[schema(min_length = 16, max_length = 1024)]
    pub secret: String,
    /// `ticket` sources: where the ref and status are.
    pub mapping: Option<TicketMapping>,
}

impl std::fmt::Debug for CreateHookSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateHookSource")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("secret", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// A hook source as shown (never its secret).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HookSourceView {
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: SourceKind,
    /// Ticket mapping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping: Option<TicketMapping>,
    /// The URL path to post to.
    pub path: String,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: time::OffsetDateTime,
}

/// A hook source as stored: its view and the sealed secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredHookSource {
    /// The public part.
    #[serde(flatten)]
    pub view: HookSourceView,
    /// The secret, sealed under the master key.
    pub sealed_secret: String,
}

/// Why a hook was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookError {
    /// Missing or wrong signature.
    BadSignature,
    /// Missing timestamp or outside the tolerance window.
    Stale,
    /// The body or a header is not what the source sends.
    Invalid(String),
}

/// Checks `sha256=<hex>` against the HMAC-SHA256 of `body` (constant time).
pub fn verify_signature(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), HookError> {
    let hex_sig = header
        .and_then(|h| h.trim().strip_prefix("sha256="))
        .ok_or(HookError::BadSignature)?;
    let sig = hex::decode(hex_sig).map_err(|_| HookError::BadSignature)?;
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    aws_lc_rs::hmac::verify(&key, body, &sig).map_err(|_| HookError::BadSignature)
}

/// The hex signature header value for `body` (for tests and for senders).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    format!(
        "sha256={}",
        hex::encode(aws_lc_rs::hmac::sign(&key, body).as_ref())
    )
}

/// Checks a Unix-seconds timestamp header against `now` ± `tolerance_s`.
pub fn check_timestamp(header: Option<&str>, now_unix: i64, tolerance_s: u64) -> Result<(), HookError> {
    let ts: i64 = header
        .and_then(|h| h.trim().parse().ok())
        .ok_or(HookError::Stale)?;
    let tolerance = i64::try_from(tolerance_s).unwrap_or(i64::MAX);
    if (now_unix - ts).abs() > tolerance {
        return Err(HookError::Stale);
    }
    Ok(())
}

/// What an event says about an activity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    /// The binding kind of the sessions it concerns.
    pub kind: BindingKind,
    /// The activity's ref.
    pub reference: String,
    /// Its new status (as sent).
    pub status: String,
    /// True when that status ends sessions.
    pub closing: bool,
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn check_ref(r: String) -> Result<String, HookError> {
    if r.len() > 200 {
        return Err(HookError::Invalid("the ref is longer than 200 characters".into()));
    }
    Ok(r)
}

/// Reads the activity out of a payload. `Ok(None)` means a well-formed event that concerns no
/// binding (e.g. a GitHub run that is still in progress).
pub fn read_activity(
    kind: SourceKind,
    mapping: Option<&TicketMapping>,
    github_event: Option<&str>,
    body: &Value,
) -> Result<Option<Activity>, HookError> {
    match kind {
        SourceKind::Generic => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Generic {
                binding_kind: BindingKind,
                #[serde(rename = "ref")]
                reference: String,
                status: String,
            }
            let g: Generic = serde_json::from_value(body.clone()).map_err(|_| {
                HookError::Invalid(
                    "expected {\"binding_kind\", \"ref\", \"status\"} with a known binding kind".into(),
                )
            })?;
            if g.reference.is_empty() || g.binding_kind == BindingKind::None {
                return Err(HookError::Invalid(
                    "`ref` and a `binding_kind` other than none are required".into(),
                ));
            }
            let closing = CLOSING.contains(&g.status.as_str());
            Ok(Some(Activity {
                kind: g.binding_kind,
                reference: check_ref(g.reference)?,
                status: g.status,
                closing,
            }))
        }
        SourceKind::Github => {
            let (obj, id_field) = match github_event {
                Some("workflow_run") => ("workflow_run", "id"),
                Some("workflow_job") => ("workflow_job", "run_id"),
                Some("ping") => return Ok(None),
                Some(other) => {
                    return Err(HookError::Invalid(format!(
                        "unsupported GitHub event `{}` (use workflow_run or workflow_job)",
                        other.escape_debug()
                    )));
                }
                None => return Err(HookError::Invalid("missing X-GitHub-Event".into())),
            };
            let run = text(&body[obj][id_field])
                .ok_or_else(|| HookError::Invalid(format!("missing `{obj}.{id_field}`")))?;
            let action = body["action"].as_str().unwrap_or_default().to_owned();
            Ok(Some(Activity {
                kind: BindingKind::Pipeline,
                reference: check_ref(run)?,
                closing: action == "completed",
                status: action,
            }))
        }
        SourceKind::Ticket => {
            let m = mapping.ok_or_else(|| HookError::Invalid("the source has no mapping".into()))?;
            let reference = body
                .pointer(&m.ref_pointer)
                .and_then(text)
                .ok_or_else(|| HookError::Invalid(format!("nothing at `{}`", m.ref_pointer)))?;
            let status = body
                .pointer(&m.status_pointer)
                .and_then(text)
                .ok_or_else(|| HookError::Invalid(format!("nothing at `{}`", m.status_pointer)))?;
            Ok(Some(Activity {
                kind: m.binding_kind.unwrap_or(BindingKind::Ticket),
                reference: check_ref(reference)?,
                closing: m.closing_statuses.iter().any(|s| s == &status),
                status,
            }))
        }
    }
}

/// The key under which a closed ref is remembered.
pub fn closed_ref_key(kind: BindingKind, reference: &str) -> String {
    let k = serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    format!("{k}:{reference}")
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn signatures_and_timestamps() {
        let body = br#"{"binding_kind":"ticket","ref":"OT-1","status":"closed"}"#;
        let good = sign(b"0123456789abcdef", body);
        assert!(verify_signature(b"0123456789abcdef", body, Some(&good)).is_ok());
        assert_eq!(
            verify_signature(b"another-secret-xx", body, Some(&good)),
            Err(HookError::BadSignature)
        );
        assert_eq!(
            verify_signature(b"0123456789abcdef", b"{}", Some(&good)),
            Err(HookError::BadSignature)
        );
        for bad in [None, Some("sha256=zz"), Some("md5=00"), Some("")] {
            assert_eq!(
                verify_signature(b"0123456789abcdef", body, bad),
                Err(HookError::BadSignature)
            );
        }
        assert!(check_timestamp(Some("1000"), 1100, 300).is_ok());
        assert_eq!(check_timestamp(Some("1000"), 1301, 300), Err(HookError::Stale));
        assert_eq!(
            check_timestamp(Some("2000"), 1000, 300),
            Err(HookError::Stale),
            "future too"
        );
        assert_eq!(check_timestamp(None, 1000, 300), Err(HookError::Stale));
        assert_eq!(check_timestamp(Some("soon"), 1000, 300), Err(HookError::Stale));
    }

    #[test]
    fn payload_shapes() {
        let g = read_activity(
            SourceKind::Generic,
            None,
            None,
            &json!({"binding_kind": "incident", "ref": "INC-7", "status": "resolved"}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (g.kind, g.reference.as_str(), g.closing),
            (BindingKind::Incident, "INC-7", true)
        );
        let open = read_activity(
            SourceKind::Generic,
            None,
            None,
            &json!({"binding_kind": "ticket", "ref": "OT-1", "status": "in_progress"}),
        )
        .unwrap()
        .unwrap();
        assert!(!open.closing);
        assert!(read_activity(SourceKind::Generic, None, None, &json!({"ref": "x"})).is_err());

        let run = json!({"action": "completed", "workflow_run": {"id": 4242, "conclusion": "success"}});
        let a = read_activity(SourceKind::Github, None, Some("workflow_run"), &run)
            .unwrap()
            .unwrap();
        assert_eq!(
            (a.kind, a.reference.as_str(), a.closing),
            (BindingKind::Pipeline, "4242", true)
        );
        let job = json!({"action": "in_progress", "workflow_job": {"run_id": 4242}});
        assert!(
            !read_activity(SourceKind::Github, None, Some("workflow_job"), &job)
                .unwrap()
                .unwrap()
                .closing
        );
        assert_eq!(
            read_activity(SourceKind::Github, None, Some("ping"), &json!({})).unwrap(),
            None
        );
        assert!(read_activity(SourceKind::Github, None, Some("push"), &json!({})).is_err());

        let m = TicketMapping {
            ref_pointer: "/issue/key".into(),
            status_pointer: "/issue/fields/status/name".into(),
            closing_statuses: vec!["Done".into()],
            binding_kind: None,
        };
        let jira = json!({"issue": {"key": "OT-4711", "fields": {"status": {"name": "Done"}}}});
        let t = read_activity(SourceKind::Ticket, Some(&m), None, &jira)
            .unwrap()
            .unwrap();
        assert_eq!(
            (t.kind, t.reference.as_str(), t.closing),
            (BindingKind::Ticket, "OT-4711", true)
        );
        assert!(read_activity(SourceKind::Ticket, Some(&m), None, &json!({"issue": {}})).is_err());
        assert_eq!(closed_ref_key(BindingKind::Ticket, "OT-4711"), "ticket:OT-4711");
    }
}
