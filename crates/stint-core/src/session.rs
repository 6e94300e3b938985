//! The session state machine: `(Session, Event, now) -> (Session, Vec<Effect>)`.
//!
//! ```text
//! requested ──approve (N distinct, never the requester)──▶ active ──▶ ended (deadline, idle, max uses,
//!   │  └─ approved with a future not_before ─▶ scheduled ─▶ active        explicit end, offboarding, …)
//!   ├─ deny ─▶ denied        ├─ cancel (also while scheduled) ─▶ canceled
//!   └─ not approved within the approval window ─▶ expired
//! ```
//!
//! Every change of `state` yields an audit effect; ending a session yields a revoke effect for every
//! credential not yet revoked. Time-based stop conditions are judged against the `now` passed in: a
//! session past its deadline refuses new credentials and uses even before a [`Event::Tick`] ends it.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

use crate::audit::PendingAudit;
use crate::id::{CredentialId, PrincipalId, SessionId};

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting for approvals.
    Requested,
    /// Approved, waiting for `not_before`.
    Scheduled,
    /// Credentials may be issued and used.
    Active,
    /// Was active, now over; all credentials revoked.
    Ended,
    /// An approver said no.
    Denied,
    /// Withdrawn before it became active.
    Canceled,
    /// Not approved within the approval window.
    Expired,
}

impl State {
    /// True for states a session never leaves.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Ended | Self::Denied | Self::Canceled | Self::Expired)
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Scheduled => "scheduled",
            Self::Active => "active",
            Self::Ended => "ended",
            Self::Denied => "denied",
            Self::Canceled => "canceled",
            Self::Expired => "expired",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Requested,
            Self::Scheduled,
            Self::Active,
            Self::Ended,
            Self::Denied,
            Self::Canceled,
            Self::Expired,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// Why a session ended (or was canceled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Its principal ended it.
    Completed,
    /// Its deadline passed.
    Deadline,
    /// No heartbeat or use within the idle timeout.
    Idle,
    /// It was used `max_uses` times.
    MaxUses,
    /// A bound external activity ended.
    Event,
    /// An approver or admin ended it, or its target was deleted.
    Revoked,
    /// Its principal was offboarded.
    Offboarded,
    /// It was withdrawn before becoming active.
    Canceled,
}

impl EndReason {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Deadline => "deadline",
            Self::Idle => "idle",
            Self::MaxUses => "max_uses",
            Self::Event => "event",
            Self::Revoked => "revoked",
            Self::Offboarded => "offboarded",
            Self::Canceled => "canceled",
        }
    }
}

/// The kind of external activity a session is tied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BindingKind {
    /// A maintenance or change ticket.
    Ticket,
    /// An incident.
    Incident,
    /// A CI/CD pipeline run.
    Pipeline,
    /// A local process (`stint exec`).
    Process,
    /// Not bound.
    #[default]
    None,
}

/// The external activity a session is tied to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    /// What kind of activity.
    pub kind: BindingKind,
    /// Its reference, e.g. `OT-4711`.
    #[serde(rename = "ref")]
    pub reference: Option<String>,
}

/// One approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Who approved.
    pub approver: PrincipalId,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Optional comment.
    pub comment: Option<String>,
}

/// What a credential is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// A signed JWT access token.
    Jwt,
    /// A dynamic PostgreSQL role.
    Postgres,
    /// An OpenSSH user certificate.
    Ssh,
}

impl CredentialKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jwt => "jwt",
            Self::Postgres => "postgres",
            Self::Ssh => "ssh",
        }
    }
}

/// Where a credential's revocation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Revocation {
    /// Not revoked (yet).
    None,
    /// Revocation asked for, not yet confirmed by the target system (retried with backoff).
    Pending,
    /// Confirmed dead.
    Confirmed,
    /// Every retry of the current round failed; an alert is raised and the reconcile sweep keeps
    /// trying. Never forgotten: only confirmation ends it.
    Failed,
}

/// A credential handed out by a session. Never outlives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// Its id (the JWT's `jti`).
    pub id: CredentialId,
    /// Its kind.
    pub kind: CredentialKind,
    /// A non-secret handle the provider finds it by (a token's SHA-256, a role name, a serial).
    pub handle: String,
    /// The signing key, where one applies.
    pub key_id: Option<String>,
    /// When it was issued.
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// When it stops working by itself; never after the session's deadline.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// When its revocation was confirmed.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// Revocation progress.
    pub revocation: Revocation,
    /// When its first use was recorded.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub first_used_at: Option<OffsetDateTime>,
    /// Failed revocation attempts so far.
    #[serde(default)]
    pub revocation_attempts: u32,
    /// The last revocation error (never a secret).
    #[serde(default)]
    pub revocation_error: Option<String>,
}

/// Who caused a change.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Actor {
    /// A principal.
    Principal(PrincipalId),
    /// stint itself (timers, start-up recovery).
    System,
}

impl Actor {
    /// How the actor appears in audit events.
    pub fn audit_name(&self) -> String {
        match self {
            Self::Principal(p) => p.to_string(),
            Self::System => "system".to_owned(),
        }
    }
}

/// A session: one bounded grant of access to one target for one purpose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Its id.
    pub id: SessionId,
    /// Who asked (and who holds the access).
    pub principal: PrincipalId,
    /// The target's name.
    pub target: String,
    /// Why.
    pub reason: String,
    /// Where it is in its life.
    pub state: State,
    /// The activity it is tied to.
    pub binding: Binding,
    /// When it was requested.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When an unapproved request expires.
    #[serde(with = "time::serde::rfc3339")]
    pub approval_deadline: OffsetDateTime,
    /// Scheduled start, if any.
    #[serde(with = "time::serde::rfc3339::option")]
    pub not_before: Option<OffsetDateTime>,
    /// Requested lifetime once active.
    pub ttl_s: u64,
    /// When it became active.
    #[serde(with = "time::serde::rfc3339::option")]
    pub activated_at: Option<OffsetDateTime>,
    /// Its deadline, known once approved.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// When it reached a final state.
    #[serde(with = "time::serde::rfc3339::option")]
    pub ended_at: Option<OffsetDateTime>,
    /// Why it ended.
    pub end_reason: Option<EndReason>,
    /// Approvals so far, all by distinct approvers, none by the principal.
    pub approvals: Vec<Approval>,
    /// How many approvals activate it.
    pub approvals_required: u32,
    /// Uses recorded so far (introspections answered active).
    pub uses: u64,
    /// Ends the session after this many uses.
    pub max_uses: Option<u64>,
    /// Ends the session after this long without a heartbeat or use.
    pub idle_timeout_s: Option<u64>,
    /// The last heartbeat or use, as far as the store knows.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_activity_at: Option<OffsetDateTime>,
    /// Whether this is a break-glass session.
    pub break_glass: bool,
    /// The longest life of one credential.
    pub token_ttl_s: u64,
    /// Credentials handed out.
    pub credentials: Vec<Credential>,
}

/// What a request asks for, after the server checked who may ask.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// The new session's id.
    pub id: SessionId,
    /// The requester.
    pub principal: PrincipalId,
    /// Target name.
    pub target: String,
    /// Why.
    pub reason: String,
    /// Requested lifetime.
    pub ttl_s: u64,
    /// The target's cap on `ttl_s`.
    pub max_ttl_s: u64,
    /// The target's cap on one credential's life.
    pub token_ttl_s: u64,
    /// Approvals needed (0: active at once).
    pub approvals_required: u32,
    /// How long a request may wait for approval.
    pub approval_window_s: u64,
    /// Bound activity.
    pub binding: Binding,
    /// Scheduled start.
    pub not_before: Option<OffsetDateTime>,
    /// Idle timeout.
    pub idle_timeout_s: Option<u64>,
    /// Use cap.
    pub max_uses: Option<u64>,
    /// Break-glass flag.
    pub break_glass: bool,
}

/// Something that happens to a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An eligible approver approves (eligibility is the caller's check; self-approval is ours).
    Approve {
        /// The approver.
        approver: PrincipalId,
        /// Optional comment.
        comment: Option<String>,
    },
    /// An eligible approver refuses.
    Deny {
        /// The approver.
        by: PrincipalId,
        /// Why.
        reason: String,
    },
    /// The requester withdraws a requested or scheduled session.
    Cancel {
        /// Who.
        by: Actor,
    },
    /// Someone or something ends the session: active → ended, requested/scheduled → canceled.
    End {
        /// Who.
        by: Actor,
        /// Why.
        reason: EndReason,
    },
    /// Time passed: judge deadlines, idle timeout, approval window and scheduled start. `activity` is
    /// the latest heartbeat or use the server saw in memory.
    Tick {
        /// Latest activity known in memory.
        activity: Option<OffsetDateTime>,
    },
    /// Uses of the session's credentials, reported in aggregate (or one at a time for `max_uses`).
    Used {
        /// Which credential was used most recently.
        credential: CredentialId,
        /// How many uses.
        count: u64,
        /// Distinct callers, by principal id.
        callers: Vec<String>,
        /// First use in this batch.
        first_at: OffsetDateTime,
        /// Last use in this batch.
        last_at: OffsetDateTime,
        /// True for the very first use of the credential.
        first_use: bool,
    },
    /// A credential was made; `expires_at` must come from [`Session::credential_expiry`].
    Issue {
        /// The credential (revocation `none`).
        credential: Credential,
    },
    /// One credential is to be revoked while the session goes on (RFC 7009).
    RevokeCredential {
        /// Which.
        credential: CredentialId,
        /// Who asked.
        by: Actor,
    },
    /// The target's limits shrank: caps `ttl_s`, the deadline (counted from the start) and every
    /// credential's expiry. Never extends anything. Ends the session at once if it is now overdue.
    Limit {
        /// The target's new `max_ttl_s`.
        max_ttl_s: u64,
        /// The target's new `token_ttl_s`.
        token_ttl_s: u64,
        /// Who changed the target.
        by: Actor,
    },
    /// The provider confirmed a credential is dead.
    RevocationConfirmed {
        /// Which.
        credential: CredentialId,
    },
    /// The provider failed to revoke; it will be retried. `give_up` marks the last attempt of a
    /// round of retries: the credential shows `failed` until a later attempt confirms it.
    RevocationFailed {
        /// Which.
        credential: CredentialId,
        /// A message without secrets.
        error: String,
        /// True when the retry budget of this round is spent.
        give_up: bool,
    },
}

/// What the server must do after a transition is persisted.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Append this event to the audit chain in the same transaction as the new state.
    Audit(PendingAudit),
    /// Make this credential unusable in its target system, then report back.
    Revoke {
        /// The credential.
        credential: CredentialId,
        /// Its kind (which provider).
        kind: CredentialKind,
        /// Its handle.
        handle: String,
    },
}

/// Why a transition was refused. The session is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// `ttl_s` above the target's `max_ttl_s`.
    #[error("ttl_s {requested} is above the target's max_ttl_s {max}")]
    TtlTooLong {
        /// Asked.
        requested: u64,
        /// Allowed.
        max: u64,
    },
    /// A field is out of range.
    #[error("{0}")]
    Invalid(String),
    /// The requester tried to approve its own session.
    #[error("a requester cannot approve its own session")]
    SelfApproval,
    /// This approver already approved.
    #[error("this approver already approved the session")]
    AlreadyApproved,
    /// The session is not waiting for a decision.
    #[error("session is {0}, not waiting for approval")]
    NotPending(&'static str),
    /// The session is not active.
    #[error("session is not active")]
    NotActive,
    /// The session already reached a final state.
    #[error("session is already {0}")]
    AlreadyFinal(&'static str),
    /// No such credential in this session.
    #[error("no such credential in this session")]
    UnknownCredential,
    /// A credential would outlive its session.
    #[error("credential would outlive its session")]
    OutlivesSession,
    /// The session already handed out [`MAX_CREDENTIALS`] credentials.
    #[error("the session has handed out its maximum number of credentials; request a new session")]
    CredentialLimit,
}

type Outcome = Result<(Session, Vec<Effect>), TransitionError>;

fn secs(s: u64) -> Duration {
    Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX))
}

/// Most credentials one session hands out (bounds the session document and the token index).
pub const MAX_CREDENTIALS: usize = 1000;

/// Longest accepted duration field: 10 years, so deadlines never overflow the calendar.
pub const MAX_DURATION_S: u64 = 10 * 366 * 24 * 3600;

impl Session {
    /// Creates a session from a validated request. Active at once when no approval is needed.
    pub fn request(new: NewSession, now: OffsetDateTime) -> Outcome {
        if new.ttl_s == 0 {
            return Err(TransitionError::Invalid("ttl_s must be at least 1".into()));
        }
        if new.ttl_s > new.max_ttl_s {
            return Err(TransitionError::TtlTooLong {
                requested: new.ttl_s,
                max: new.max_ttl_s,
            });
        }
        if new.max_ttl_s > MAX_DURATION_S || new.approval_window_s > MAX_DURATION_S {
            return Err(TransitionError::Invalid("duration out of range".into()));
        }
        if new.idle_timeout_s == Some(0) || new.idle_timeout_s.is_some_and(|s| s > MAX_DURATION_S) {
            return Err(TransitionError::Invalid(
                "idle_timeout_s must be between 1 and 10 years".into(),
            ));
        }
        if new.max_uses == Some(0) {
            return Err(TransitionError::Invalid("max_uses must be at least 1".into()));
        }
        if new.not_before.is_some_and(|nb| nb > now + secs(MAX_DURATION_S)) {
            return Err(TransitionError::Invalid("not_before is too far ahead".into()));
        }
        let mut s = Session {
            id: new.id,
            principal: new.principal.clone(),
            target: new.target,
            reason: new.reason,
            state: State::Requested,
            binding: new.binding,
            created_at: now,
            approval_deadline: now + secs(new.approval_window_s),
            not_before: new.not_before.filter(|nb| *nb > now),
            ttl_s: new.ttl_s,
            activated_at: None,
            expires_at: None,
            ended_at: None,
            end_reason: None,
            approvals: Vec::new(),
            approvals_required: new.approvals_required,
            uses: 0,
            max_uses: new.max_uses,
            idle_timeout_s: new.idle_timeout_s,
            last_activity_at: None,
            break_glass: new.break_glass,
            token_ttl_s: new.token_ttl_s.clamp(1, new.max_ttl_s.max(1)),
            credentials: Vec::new(),
        };
        let mut fx = vec![s.audit(
            now,
            &Actor::Principal(new.principal),
            "session.requested",
            json!({
                "target": s.target,
                "reason": s.reason,
                "ttl_s": s.ttl_s,
                "binding": s.binding,
                "approvals_required": s.approvals_required,
                "break_glass": s.break_glass,
            }),
        )];
        if s.approvals_required == 0 {
            s.approve_complete(now, &mut fx);
        }
        Ok((s, fx))
    }

    /// Applies an event at `now`. On error the session is unchanged and nothing must be persisted.
    pub fn apply(&self, event: Event, now: OffsetDateTime) -> Outcome {
        let mut s = self.clone();
        let mut fx = Vec::new();
        match event {
            Event::Approve { approver, comment } => {
                s.require_pending(now)?;
                if approver == s.principal {
                    return Err(TransitionError::SelfApproval);
                }
                if s.approvals.iter().any(|a| a.approver == approver) {
                    return Err(TransitionError::AlreadyApproved);
                }
                s.approvals.push(Approval {
                    approver: approver.clone(),
                    at: now,
                    comment: comment.clone(),
                });
                fx.push(s.audit(
                    now,
                    &Actor::Principal(approver),
                    "session.approved",
                    json!({
                        "comment": comment,
                        "approvals": s.approvals.len(),
                        "approvals_required": s.approvals_required,
                    }),
                ));
                if s.approvals.len() >= s.approvals_required as usize {
                    s.approve_complete(now, &mut fx);
                }
            }
            Event::Deny { by, reason } => {
                s.require_pending(now)?;
                s.state = State::Denied;
                s.ended_at = Some(now);
                fx.push(s.audit(
                    now,
                    &Actor::Principal(by),
                    "session.denied",
                    json!({ "reason": reason }),
                ));
            }
            Event::Cancel { by } => match s.state {
                State::Requested | State::Scheduled => s.cancel(now, &by, &mut fx),
                State::Active => return Err(TransitionError::NotPending("active")),
                st => return Err(TransitionError::AlreadyFinal(st.as_str())),
            },
            Event::End { by, reason } => match s.state {
                State::Requested | State::Scheduled => s.cancel(now, &by, &mut fx),
                State::Active => s.end(now, &by, reason, &mut fx),
                st => return Err(TransitionError::AlreadyFinal(st.as_str())),
            },
            Event::Tick { activity } => {
                if let Some(at) = activity {
                    s.note_activity(at.min(now));
                }
                s.advance(now, &mut fx);
            }
            Event::Used {
                credential,
                count,
                callers,
                first_at,
                last_at,
                first_use,
            } => {
                // Uses are judged by when they happened: uses reported after the deadline (the
                // aggregate flushed by the tick that ends the session) still count.
                if s.state != State::Active || s.expires_at.is_none_or(|d| last_at >= d) {
                    return Err(TransitionError::NotActive);
                }
                let count = match s.max_uses {
                    Some(max) => count.min(max.saturating_sub(s.uses)),
                    None => count,
                };
                if count == 0 {
                    return Err(TransitionError::NotActive);
                }
                let cred = s
                    .credentials
                    .iter_mut()
                    .find(|c| c.id == credential)
                    .ok_or(TransitionError::UnknownCredential)?;
                if cred.revocation != Revocation::None || cred.expires_at <= last_at {
                    return Err(TransitionError::NotActive);
                }
                if cred.first_used_at.is_none() {
                    cred.first_used_at = Some(first_at.min(now));
                }
                let kind = cred.kind;
                s.uses = s.uses.saturating_add(count);
                s.note_activity(last_at.min(now));
                fx.push(s.audit(
                    last_at.min(now),
                    &Actor::System,
                    "credential.used",
                    json!({
                        "credential": credential,
                        "kind": kind,
                        "count": count,
                        "total": s.uses,
                        "callers": callers,
                        "first_at": crate::audit::format_time(first_at),
                        "last_at": crate::audit::format_time(last_at),
                        "first_use": first_use,
                    }),
                ));
                if s.max_uses.is_some_and(|m| s.uses >= m) {
                    s.end(now, &Actor::System, EndReason::MaxUses, &mut fx);
                }
            }
            Event::Issue { credential } => {
                s.require_active(now)?;
                let limit = s.credential_expiry(now)?;
                if credential.expires_at > limit || credential.expires_at <= now {
                    return Err(TransitionError::OutlivesSession);
                }
                if s.credentials.iter().any(|c| c.id == credential.id) {
                    return Err(TransitionError::Invalid("duplicate credential id".into()));
                }
                if s.credentials.len() >= MAX_CREDENTIALS {
                    return Err(TransitionError::CredentialLimit);
                }
                fx.push(s.audit(
                    now,
                    &Actor::Principal(s.principal.clone()),
                    "credential.issued",
                    json!({
                        "credential": credential.id,
                        "kind": credential.kind,
                        "key_id": credential.key_id,
                        "expires_at": crate::audit::format_time(credential.expires_at),
                    }),
                ));
                s.credentials.push(Credential {
                    revocation: Revocation::None,
                    revoked_at: None,
                    first_used_at: None,
                    revocation_attempts: 0,
                    revocation_error: None,
                    issued_at: now,
                    ..credential
                });
            }
            Event::RevokeCredential { credential, by } => {
                let c = s
                    .credentials
                    .iter_mut()
                    .find(|c| c.id == credential)
                    .ok_or(TransitionError::UnknownCredential)?;
                if c.revocation == Revocation::None {
                    c.revocation = Revocation::Pending;
                    let (kind, handle) = (c.kind, c.handle.clone());
                    fx.push(s.audit(
                        now,
                        &by,
                        "credential.revocation_requested",
                        json!({ "credential": credential, "kind": kind }),
                    ));
                    fx.push(Effect::Revoke {
                        credential,
                        kind,
                        handle,
                    });
                }
            }
            Event::Limit {
                max_ttl_s,
                token_ttl_s,
                by,
            } => {
                if s.state.is_final() {
                    return Err(TransitionError::AlreadyFinal(s.state.as_str()));
                }
                s.ttl_s = s.ttl_s.min(max_ttl_s.max(1));
                s.token_ttl_s = s.token_ttl_s.min(token_ttl_s.max(1));
                let start = s
                    .activated_at
                    .or(s.not_before.filter(|_| s.state == State::Scheduled));
                if let (Some(start), Some(deadline)) = (start, s.expires_at) {
                    let capped = deadline.min(start + secs(s.ttl_s));
                    s.expires_at = Some(capped);
                    for c in &mut s.credentials {
                        c.expires_at = c.expires_at.min(capped);
                    }
                }
                if s != *self {
                    fx.push(s.audit(
                        now,
                        &by,
                        "session.limited",
                        json!({
                            "ttl_s": s.ttl_s,
                            "token_ttl_s": s.token_ttl_s,
                            "expires_at": s.expires_at.map(crate::audit::format_time),
                        }),
                    ));
                    s.advance(now, &mut fx);
                }
            }
            Event::RevocationConfirmed { credential } => {
                let id = s.id.clone();
                let c = s
                    .credentials
                    .iter_mut()
                    .find(|c| c.id == credential)
                    .ok_or(TransitionError::UnknownCredential)?;
                if c.revocation == Revocation::None {
                    return Err(TransitionError::Invalid("revocation was never requested".into()));
                }
                if c.revocation != Revocation::Confirmed {
                    c.revocation = Revocation::Confirmed;
                    c.revoked_at = Some(now);
                    let (kind, attempts) = (c.kind, c.revocation_attempts + 1);
                    fx.push(Effect::Audit(PendingAudit {
                        at: now,
                        actor: Actor::System.audit_name(),
                        action: "credential.revoked".into(),
                        session: Some(id),
                        details: json!({ "credential": credential, "kind": kind, "attempts": attempts }),
                    }));
                }
            }
            Event::RevocationFailed {
                credential,
                error,
                give_up,
            } => {
                let id = s.id.clone();
                let c = s
                    .credentials
                    .iter_mut()
                    .find(|c| c.id == credential)
                    .ok_or(TransitionError::UnknownCredential)?;
                if c.revocation == Revocation::None {
                    return Err(TransitionError::Invalid("revocation was never requested".into()));
                }
                if c.revocation != Revocation::Confirmed {
                    c.revocation = if give_up {
                        Revocation::Failed
                    } else {
                        Revocation::Pending
                    };
                    c.revocation_attempts = c.revocation_attempts.saturating_add(1);
                    let error: String = error.chars().take(500).collect();
                    c.revocation_error = Some(error.clone());
                    let (kind, attempts) = (c.kind, c.revocation_attempts);
                    fx.push(Effect::Audit(PendingAudit {
                        at: now,
                        actor: Actor::System.audit_name(),
                        action: "credential.revocation_failed".into(),
                        session: Some(id),
                        details: json!({
                            "credential": credential,
                            "kind": kind,
                            "error": error,
                            "attempts": attempts,
                            "gave_up": give_up,
                        }),
                    }));
                }
            }
        }
        Ok((s, fx))
    }

    /// The expiry a credential issued at `now` gets: `min(deadline, now + token_ttl_s)`.
    pub fn credential_expiry(&self, now: OffsetDateTime) -> Result<OffsetDateTime, TransitionError> {
        self.require_active(now)?;
        let deadline = self.expires_at.ok_or(TransitionError::NotActive)?;
        Ok(deadline.min(now + secs(self.token_ttl_s)))
    }

    /// True when the session is active at `now` (its deadline and idle timeout not yet reached).
    pub fn is_live(&self, now: OffsetDateTime) -> bool {
        self.require_active(now).is_ok()
    }

    /// When a [`Event::Tick`] next has something to judge, if ever.
    pub fn next_wake(&self) -> Option<OffsetDateTime> {
        match self.state {
            State::Requested => Some(self.approval_deadline),
            State::Scheduled => self.not_before,
            State::Active => {
                let idle = self.idle_deadline();
                match (self.expires_at, idle) {
                    (Some(d), Some(i)) => Some(d.min(i)),
                    (d, i) => d.or(i),
                }
            }
            _ => None,
        }
    }

    /// Records a heartbeat or use at `at`. Activity never moves the idle deadline back, never
    /// counts from before activation, and never revives a session that was already idle at `at`.
    fn note_activity(&mut self, at: OffsetDateTime) {
        if self.state != State::Active || self.activated_at.is_none_or(|a| at < a) {
            return;
        }
        if self.idle_deadline().is_some_and(|d| at >= d) {
            return;
        }
        if self.last_activity_at.is_none_or(|l| at > l) {
            self.last_activity_at = Some(at);
        }
    }

    /// When the session goes idle unless something happens.
    pub fn idle_deadline(&self) -> Option<OffsetDateTime> {
        let idle = secs(self.idle_timeout_s?);
        Some(self.last_activity_at.or(self.activated_at)? + idle)
    }

    fn require_pending(&self, now: OffsetDateTime) -> Result<(), TransitionError> {
        match self.state {
            State::Requested if now < self.approval_deadline => Ok(()),
            State::Requested => Err(TransitionError::NotPending("expired")),
            st => Err(TransitionError::NotPending(st.as_str())),
        }
    }

    fn require_active(&self, now: OffsetDateTime) -> Result<(), TransitionError> {
        let live = self.state == State::Active
            && self.expires_at.is_some_and(|d| now < d)
            && self.idle_deadline().is_none_or(|i| now < i);
        if live {
            Ok(())
        } else {
            Err(TransitionError::NotActive)
        }
    }

    fn audit(&self, at: OffsetDateTime, actor: &Actor, action: &str, details: Value) -> Effect {
        Effect::Audit(PendingAudit {
            at,
            actor: actor.audit_name(),
            action: action.to_owned(),
            session: Some(self.id.clone()),
            details,
        })
    }

    /// The last approval arrived (or none was needed): schedule or activate.
    fn approve_complete(&mut self, now: OffsetDateTime, fx: &mut Vec<Effect>) {
        match self.not_before {
            Some(nb) if nb > now => {
                self.state = State::Scheduled;
                self.expires_at = Some(nb + secs(self.ttl_s));
                fx.push(self.audit(
                    now,
                    &Actor::System,
                    "session.scheduled",
                    json!({ "not_before": crate::audit::format_time(nb) }),
                ));
            }
            _ => self.activate(now, now, fx),
        }
    }

    fn activate(&mut self, start: OffsetDateTime, now: OffsetDateTime, fx: &mut Vec<Effect>) {
        self.state = State::Active;
        self.activated_at = Some(start);
        let deadline = start + secs(self.ttl_s);
        self.expires_at = Some(deadline);
        fx.push(self.audit(
            now,
            &Actor::System,
            "session.activated",
            json!({ "expires_at": crate::audit::format_time(deadline) }),
        ));
    }

    fn cancel(&mut self, now: OffsetDateTime, by: &Actor, fx: &mut Vec<Effect>) {
        self.state = State::Canceled;
        self.ended_at = Some(now);
        self.end_reason = Some(EndReason::Canceled);
        fx.push(self.audit(now, by, "session.canceled", json!({})));
    }

    fn end(&mut self, now: OffsetDateTime, by: &Actor, reason: EndReason, fx: &mut Vec<Effect>) {
        self.state = State::Ended;
        self.ended_at = Some(now);
        self.end_reason = Some(reason);
        // The credentials it revokes are named, so that the event stream (and evidence) can say which
        // tokens died with it.
        let credentials: Vec<&CredentialId> = self
            .credentials
            .iter()
            .filter(|c| c.revocation != Revocation::Confirmed)
            .map(|c| &c.id)
            .collect();
        fx.push(self.audit(
            now,
            by,
            "session.ended",
            json!({ "reason": reason, "credentials": credentials }),
        ));
        for c in &mut self.credentials {
            if c.revocation == Revocation::None {
                c.revocation = Revocation::Pending;
            }
            if matches!(c.revocation, Revocation::Pending | Revocation::Failed) {
                fx.push(Effect::Revoke {
                    credential: c.id.clone(),
                    kind: c.kind,
                    handle: c.handle.clone(),
                });
            }
        }
    }

    /// Judges every time-based condition at `now`.
    fn advance(&mut self, now: OffsetDateTime, fx: &mut Vec<Effect>) {
        if self.state == State::Requested && now >= self.approval_deadline {
            self.state = State::Expired;
            self.ended_at = Some(now);
            fx.push(self.audit(now, &Actor::System, "session.expired", json!({})));
            return;
        }
        if self.state == State::Scheduled {
            match self.not_before {
                Some(nb) if now >= nb => self.activate(nb, now, fx),
                _ => return,
            }
        }
        if self.state == State::Active {
            if self.expires_at.is_some_and(|d| now >= d) {
                self.end(now, &Actor::System, EndReason::Deadline, fx);
            } else if self.idle_deadline().is_some_and(|i| now >= i) {
                self.end(now, &Actor::System, EndReason::Idle, fx);
            }
        }
    }
}
