//! The revoked sessions and credentials, and how stream events change them. Pure: no I/O, time comes
//! in as an argument.

use std::collections::HashMap;

use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Revoked session ids and credential ids, each remembered until a Unix time.
#[derive(Debug, Default)]
pub(crate) struct Revoked {
    sids: HashMap<String, i64>,
    jtis: HashMap<String, i64>,
}

impl Revoked {
    /// Whether a token of session `sid` with credential id `jti` is revoked.
    pub(crate) fn contains(&self, sid: &str, jti: &str) -> bool {
        self.sids.contains_key(sid) || self.jtis.contains_key(jti)
    }

    /// Forgets every entry whose time has come.
    pub(crate) fn prune(&mut self, now: i64) {
        self.sids.retain(|_, until| *until > now);
        self.jtis.retain(|_, until| *until > now);
    }

    /// How many ids are remembered.
    pub(crate) fn len(&self) -> usize {
        self.sids.len() + self.jtis.len()
    }

    /// Applies `change`, remembering its ids until `at + retention` (never shorter than they already
    /// are). A change older than the retention is already moot and is skipped.
    pub(crate) fn apply(&mut self, change: &Change, now: i64, retention_secs: i64) {
        let until = change.at.unwrap_or(now).saturating_add(retention_secs);
        if until <= now {
            return;
        }
        let remember = |map: &mut HashMap<String, i64>, id: &str| {
            let entry = map.entry(id.to_owned()).or_insert(until);
            *entry = (*entry).max(until);
        };
        if let Some(sid) = &change.sid {
            remember(&mut self.sids, sid);
        }
        for jti in &change.jtis {
            remember(&mut self.jtis, jti);
        }
    }
}

/// A revocation carried by one stream event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    /// A whole session ended: every token of it is refused.
    pub(crate) sid: Option<String>,
    /// Single credentials revoked.
    pub(crate) jtis: Vec<String>,
    /// When it happened, Unix seconds, if the event said so readably.
    pub(crate) at: Option<i64>,
}

/// Why an event could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EventError {
    #[error("bad event data: {0}")]
    Json(#[from] serde_json::Error),
    #[error("`session.ended` event without a session id")]
    NoSid,
}

#[derive(Deserialize)]
struct EventData {
    sid: Option<String>,
    #[serde(default)]
    jtis: Vec<String>,
    at: Option<String>,
}

#[derive(Deserialize)]
struct Typed {
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// Reads one event: `Ok(None)` for event types that revoke nothing.
///
/// `event` is the SSE event name; stint sends the same name as the data's `type`, which is used when
/// the event has no name (`message`).
pub(crate) fn read_event(event: &str, data: &str) -> Result<Option<Change>, EventError> {
    let typed;
    let event = if event == "message" {
        typed = serde_json::from_str::<Typed>(data).ok().and_then(|t| t.kind);
        typed.as_deref().unwrap_or("")
    } else {
        event
    };
    let whole_session = match event {
        "session.ended" => true,
        "credential.revoked" => false,
        _ => return Ok(None),
    };
    let d: EventData = serde_json::from_str(data)?;
    let at =
        d.at.as_deref()
            .and_then(|at| OffsetDateTime::parse(at, &Rfc3339).ok())
            .map(OffsetDateTime::unix_timestamp);
    let sid = if whole_session {
        Some(d.sid.ok_or(EventError::NoSid)?)
    } else {
        // INVARIANT: `credential.revoked` names a session only as context; the session lives on.
        None
    };
    Ok(Some(Change {
        sid,
        jtis: d.jtis,
        at,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3600;
    // 2026-11-27T21:00:00Z
    const AT: i64 = 1_795_813_200;

    #[test]
    fn session_ended_revokes_the_session_and_its_credentials() {
        let data = r#"{"type":"session.ended","sid":"ses_a","jtis":["crd_1","crd_2"],"reason":"completed",
            "at":"2026-11-27T21:00:00Z","set":"x.y.z"}"#;
        let change = read_event("session.ended", data)
            .expect("reads")
            .expect("revokes");
        assert_eq!(change.sid.as_deref(), Some("ses_a"));
        assert_eq!(change.jtis, ["crd_1", "crd_2"]);
        assert_eq!(change.at, Some(AT));
        let mut r = Revoked::default();
        r.apply(&change, AT, HOUR);
        assert!(r.contains("ses_a", "crd_other"));
        assert!(r.contains("ses_b", "crd_2"));
        assert!(!r.contains("ses_b", "crd_3"));
    }

    #[test]
    fn credential_revoked_leaves_the_session_alive() {
        let data =
            r#"{"type":"credential.revoked","sid":"ses_a","jtis":["crd_1"],"reason":"revoked","at":"…"}"#;
        let change = read_event("credential.revoked", data)
            .expect("reads")
            .expect("revokes");
        assert_eq!(change.sid, None);
        assert_eq!(change.at, None, "an unreadable time falls back to now");
        let mut r = Revoked::default();
        r.apply(&change, AT, HOUR);
        assert!(r.contains("ses_a", "crd_1"));
        assert!(!r.contains("ses_a", "crd_2"));
    }

    #[test]
    fn other_event_types_are_ignored_without_reading_them() {
        assert!(
            read_event("session.extended", "not json")
                .expect("ignored")
                .is_none()
        );
        assert!(read_event("message", "{}").expect("ignored").is_none());
        assert!(read_event("message", "[1]").expect("ignored").is_none());
        let unnamed = r#"{"type":"credential.revoked","jtis":["crd_1"]}"#;
        assert!(read_event("message", unnamed).expect("reads").is_some());
    }

    #[test]
    fn bad_revocation_events_are_errors() {
        assert!(read_event("session.ended", "{").is_err());
        assert!(read_event("session.ended", r#"{"jtis":[]}"#).is_err());
        assert!(read_event("credential.revoked", r#"{"jtis":"crd_1"}"#).is_err());
    }

    #[test]
    fn entries_are_pruned_after_the_retention_counted_from_the_event() {
        let change = Change {
            sid: Some("ses_a".into()),
            jtis: vec!["crd_1".into()],
            at: Some(AT),
        };
        let mut r = Revoked::default();
        r.apply(&change, AT + 10, HOUR);
        r.prune(AT + HOUR - 1);
        assert_eq!(r.len(), 2);
        r.prune(AT + HOUR);
        assert_eq!(r.len(), 0);
        // Replayed after its retention: nothing left to protect.
        r.apply(&change, AT + HOUR, HOUR);
        assert_eq!(r.len(), 0);
        // Without a time, retention counts from now.
        r.apply(&Change { at: None, ..change }, AT + HOUR, HOUR);
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn a_later_event_extends_but_never_shortens_memory() {
        let mut r = Revoked::default();
        let at = |t| Change {
            sid: Some("ses_a".into()),
            jtis: vec![],
            at: Some(t),
        };
        r.apply(&at(AT + 100), AT, HOUR);
        r.apply(&at(AT), AT, HOUR);
        r.prune(AT + HOUR + 50);
        assert!(r.contains("ses_a", "-"));
    }
}
