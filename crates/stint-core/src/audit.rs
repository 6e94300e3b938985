//! The tamper-evident audit chain: canonical form, hashing and verification.
//!
//! Each event is hashed as `hash = sha256(prev_hash ‖ canonical(event))`, where `prev_hash` is the hex
//! hash of the previous event (64 zeros for the first) and `canonical` is the event's fields
//! (`action`, `actor`, `at`, `details`, `seq`, `session`) as compact JSON with sorted keys. Anyone can
//! recheck the chain with a SHA-256 tool; a changed, dropped or reordered row breaks it at that row.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::id::SessionId;

/// The `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An audit event that has not yet been placed in the chain (no `seq`, no hashes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingAudit {
    /// When the change happened.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Who caused it: a principal id or `system`.
    pub actor: String,
    /// A dotted action name such as `session.approved`.
    pub action: String,
    /// The session it concerns, if any.
    pub session: Option<SessionId>,
    /// Action-specific facts. Never a secret.
    pub details: Value,
}

/// An event as stored: its place in the chain and its hashes. `at` and `details` are kept exactly as
/// stored (text), so verification hashes what is on disk rather than a re-encoding of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Position in the chain, from 1 without gaps.
    pub seq: i64,
    /// RFC 3339 time, as stored.
    pub at: String,
    /// Principal id or `system`.
    pub actor: String,
    /// Dotted action name.
    pub action: String,
    /// Session id, if any.
    pub session: Option<String>,
    /// The details as stored JSON text.
    pub details: String,
    /// Hash of the previous record.
    pub prev_hash: String,
    /// Hash of this record.
    pub hash: String,
}

/// Formats a time the way the chain stores it.
pub fn format_time(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        // INVARIANT: every OffsetDateTime between years 0 and 9999 formats as RFC 3339; stint's
        // times come from the clock or from validated input inside that range.
        .unwrap_or_default()
}

/// The canonical text that is hashed for an event, or `None` when `details` is not JSON in its one
/// canonical encoding (compact, keys sorted, no duplicate keys): stored bytes that merely parse to the
/// same value are rejected, so the hash covers exactly what is stored.
pub fn canonical(
    seq: i64,
    at: &str,
    actor: &str,
    action: &str,
    session: Option<&str>,
    details: &str,
) -> Option<String> {
    let parsed = sorted(serde_json::from_str(details).ok()?);
    let reencoded = parsed.to_string();
    if reencoded != details {
        return None;
    }
    let value = sorted(serde_json::json!({
        "seq": seq,
        "at": at,
        "actor": actor,
        "action": action,
        "session": session,
        "details": parsed,
    }));
    Some(value.to_string())
}

/// `value` with the keys of every object in sorted order. The canonical form must not depend on how
/// serde_json's map is built: another crate in the same binary may turn on its `preserve_order`
/// feature (cedar-policy does), which makes maps keep insertion order.
pub fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// `sha256(prev_hash ‖ canonical)` as lowercase hex.
pub fn chain_hash(prev_hash: &str, canonical: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(canonical.as_bytes());
    hex::encode(h.finalize())
}

impl PendingAudit {
    /// Places the event in the chain after a record with hash `prev_hash` at position `seq - 1`.
    pub fn seal(&self, seq: i64, prev_hash: &str) -> AuditRecord {
        let at = format_time(self.at);
        let details = sorted(self.details.clone()).to_string();
        let session = self.session.as_ref().map(|s| s.as_str().to_owned());
        // INVARIANT: `details` was produced from a serde_json::Value just above, so it parses.
        let canon =
            canonical(seq, &at, &self.actor, &self.action, session.as_deref(), &details).unwrap_or_default();
        AuditRecord {
            seq,
            hash: chain_hash(prev_hash, &canon),
            prev_hash: prev_hash.to_owned(),
            at,
            actor: self.actor.clone(),
            action: self.action.clone(),
            session,
            details,
        }
    }
}

/// What verifying a chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainVerification {
    /// True when every record links to its predecessor and hashes to its stored hash.
    pub ok: bool,
    /// How many records were checked (up to and including the first bad one).
    pub events: u64,
    /// The hash of the last good record (genesis when there is none).
    pub head_hash: String,
    /// The first record that does not verify.
    pub first_bad_seq: Option<i64>,
    /// Why it does not verify.
    pub problem: Option<String>,
}

/// Incremental verifier: feed records in `seq` order.
#[derive(Debug, Clone)]
pub struct Verifier {
    expected_seq: i64,
    head: String,
    events: u64,
    bad: Option<(i64, String)>,
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Verifier {
    /// A verifier expecting the chain to start at genesis.
    pub fn new() -> Self {
        Self {
            expected_seq: 1,
            head: GENESIS_HASH.to_owned(),
            events: 0,
            bad: None,
        }
    }

    /// The `seq` the next record must have.
    pub fn next_seq(&self) -> i64 {
        self.expected_seq
    }

    /// Checks the next record. Returns false once the chain is broken (further input is ignored).
    pub fn push(&mut self, r: &AuditRecord) -> bool {
        if self.bad.is_some() {
            return false;
        }
        self.events += 1;
        let problem = if r.seq != self.expected_seq {
            Some(format!("expected seq {}, found {}", self.expected_seq, r.seq))
        } else if r.prev_hash != self.head {
            Some("prev_hash does not match the previous event's hash".to_owned())
        } else {
            match canonical(
                r.seq,
                &r.at,
                &r.actor,
                &r.action,
                r.session.as_deref(),
                &r.details,
            ) {
                None => Some("details are not canonical JSON".to_owned()),
                Some(canon) if chain_hash(&r.prev_hash, &canon) != r.hash => {
                    Some("hash does not match the event's content".to_owned())
                }
                Some(_) => None,
            }
        };
        match problem {
            Some(p) => {
                // Report the position the chain broke at: the expected seq when rows went missing.
                self.bad = Some((self.expected_seq.min(r.seq), p));
                false
            }
            None => {
                self.expected_seq += 1;
                self.head = r.hash.clone();
                true
            }
        }
    }

    /// Marks the chain broken at `seq` for a row that could not be read at all.
    pub fn unreadable(&mut self, seq: i64) {
        if self.bad.is_none() {
            self.events += 1;
            self.bad = Some((seq, "row does not parse".to_owned()));
        }
    }

    /// The verdict.
    pub fn finish(self) -> ChainVerification {
        let (first_bad_seq, problem) = match self.bad {
            Some((s, p)) => (Some(s), Some(p)),
            None => (None, None),
        };
        ChainVerification {
            ok: first_bad_seq.is_none(),
            events: self.events,
            head_hash: self.head,
            first_bad_seq,
            problem,
        }
    }
}

/// Verifies a whole chain given in `seq` order.
pub fn verify<'a>(records: impl IntoIterator<Item = &'a AuditRecord>) -> ChainVerification {
    let mut v = Verifier::new();
    for r in records {
        if !v.push(r) {
            break;
        }
    }
    v.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn chain(n: usize) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for i in 0..n {
            let ev = PendingAudit {
                at: datetime!(2026-11-27 10:00:00.125 UTC),
                actor: "system".into(),
                action: "session.requested".into(),
                session: None,
                details: serde_json::json!({"n": i, "b": "x", "a": [1, 2]}),
            };
            let prev = out.last().map_or(GENESIS_HASH.to_owned(), |r| r.hash.clone());
            out.push(ev.seal(i as i64 + 1, &prev));
        }
        out
    }

    #[test]
    fn intact_chain_verifies() {
        let c = chain(5);
        let v = verify(&c);
        assert!(v.ok, "{v:?}");
        assert_eq!(v.events, 5);
        assert_eq!(v.head_hash, c[4].hash);
    }

    #[test]
    fn canonical_form_sorts_keys_and_is_compact() {
        let c = canonical(1, "t", "system", "a.b", None, r#"{"a":{"b":3,"y":2},"z":1}"#);
        assert_eq!(
            c.as_deref(),
            Some(
                r#"{"action":"a.b","actor":"system","at":"t","details":{"a":{"b":3,"y":2},"z":1},"seq":1,"session":null}"#
            )
        );
    }

    #[test]
    fn details_in_any_but_the_canonical_encoding_are_refused() {
        for alt in [
            r#"{"z": 1}"#,
            r#"{"b":1,"a":2}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"a":"\u0041"}"#,
            r#"{"a":1.00}"#,
        ] {
            assert_eq!(canonical(1, "t", "system", "a.b", None, alt), None, "{alt}");
        }
    }

    #[test]
    fn changed_row_is_found() {
        let mut c = chain(5);
        c[2].details = r#"{"n":99}"#.into();
        let v = verify(&c);
        assert!(!v.ok);
        assert_eq!(v.first_bad_seq, Some(3));
    }

    #[test]
    fn dropped_row_is_found() {
        let mut c = chain(5);
        c.remove(1);
        let v = verify(&c);
        assert_eq!(v.first_bad_seq, Some(2));
    }

    #[test]
    fn reordered_rows_are_found() {
        let mut c = chain(5);
        c.swap(2, 3);
        // Renumbering the swapped rows does not help: their prev_hash no longer links.
        c[2].seq = 3;
        c[3].seq = 4;
        let v = verify(&c);
        assert_eq!(v.first_bad_seq, Some(3));
    }

    #[test]
    fn unparsable_details_are_reported() {
        let mut c = chain(3);
        c[0].details = "{not json".into();
        let v = verify(&c);
        assert_eq!(v.first_bad_seq, Some(1));
    }

    #[test]
    fn rehashing_a_changed_row_still_breaks_the_next_link() {
        let mut c = chain(4);
        c[1].actor = "prn_evil".into();
        let canon =
            canonical(2, &c[1].at, &c[1].actor, &c[1].action, None, &c[1].details).unwrap_or_default();
        c[1].hash = chain_hash(&c[1].prev_hash, &canon);
        assert_eq!(verify(&c).first_bad_seq, Some(3));
    }
}
