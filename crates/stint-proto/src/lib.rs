//! stint's wire types: the JSON bodies of API.md, shared by the server, the CLI and the tests.
//!
//! Requests reject unknown fields, so a typo in a field name is an error rather than a silently
//! ignored setting.

use serde::{Deserialize, Serialize};
use stint_core::{Binding, BindingKind, Credential, Session};
use time::OffsetDateTime;
use utoipa::ToSchema;

/// RFC 9457 problem details with a stable machine `code`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What went wrong, for a human.
    pub detail: String,
    /// Stable machine code, e.g. `self_approval`.
    pub code: String,
    /// Policy decisions: the ids of the policies that decided (e.g. a `forbid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<Vec<String>>,
    /// `invalid_policy`: each error's line, column and message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub errors: Option<Vec<serde_json::Value>>,
}

/// A page of items.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct List<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`, or `starting` before recovery finished.
    pub status: String,
}

/// What a principal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    /// A service account.
    Service,
    /// A CI/CD job.
    CiJob,
    /// An AI agent.
    Agent,
    /// A vendor's remote-support account.
    Vendor,
    /// A workload.
    Workload,
    /// A resource server that introspects tokens.
    ResourceServer,
    /// A human approver.
    Approver,
    /// A human administrator.
    Admin,
}

impl PrincipalKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::CiJob => "ci_job",
            Self::Agent => "agent",
            Self::Vendor => "vendor",
            Self::Workload => "workload",
            Self::ResourceServer => "resource_server",
            Self::Approver => "approver",
            Self::Admin => "admin",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }
}

/// `POST /v1/principals`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePrincipal {
    /// Unique name: 1–64 of `a-z A-Z 0-9 . _ -`.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9._-]+$")]
    pub name: String,
    /// Kind.
    pub kind: PrincipalKind,
    /// Groups, used by targets' `requester_groups` and `approver_groups`.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// A principal (never its key).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Principal {
    /// `prn_…`.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Kind.
    pub kind: PrincipalKind,
    /// Groups.
    pub groups: Vec<String>,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Set once offboarded.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub deleted_at: Option<OffsetDateTime>,
}

/// `POST /v1/principals` answer: the principal and its API key, shown only here.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct PrincipalCreated {
    /// The principal.
    #[serde(flatten)]
    pub principal: Principal,
    /// The API key. Store it now: stint keeps only its hash.
    pub api_key: String,
}

/// `POST /v1/principals/{id}/rotate-key` answer.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKey {
    /// The new key; the old one no longer works.
    pub api_key: String,
}

/// Target kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// JWT access tokens for an audience.
    Jwt,
    /// PostgreSQL roles (dynamic, or a checked-out account).
    Postgres,
    /// OpenSSH user certificates.
    Ssh,
}

impl TargetKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jwt => "jwt",
            Self::Postgres => "postgres",
            Self::Ssh => "ssh",
        }
    }
}

/// `POST /v1/targets`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTarget {
    /// Unique name: 1–64 of `a-z A-Z 0-9 . _ -`.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9._-]+$")]
    pub name: String,
    /// Kind.
    pub kind: TargetKind,
    /// Longest session.
    #[schema(minimum = 1, maximum = 316224000)]
    pub max_ttl_s: u64,
    /// Longest life of one credential (default 300, at most `max_ttl_s`).
    #[schema(minimum = 1, maximum = 316224000)]
    #[serde(default)]
    pub token_ttl_s: Option<u64>,
    /// Groups whose members may request.
    #[serde(default)]
    pub requester_groups: Vec<String>,
    /// Groups whose members may approve.
    #[serde(default)]
    pub approver_groups: Vec<String>,
    /// Approvals needed (default 0).
    #[serde(default)]
    pub approvals_required: Option<u32>,
    /// Free-form environment label.
    #[serde(default)]
    pub environment: Option<String>,
    /// Free-form tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// A binding kind every request must carry.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub require_binding: Option<BindingKind>,
    /// Kind-specific settings; for `jwt`: `{"audience"?}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub config: Option<serde_json::Value>,
}

/// A target (never a secret).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Target {
    /// Unique name.
    pub name: String,
    /// Kind.
    pub kind: TargetKind,
    /// Longest session.
    pub max_ttl_s: u64,
    /// Longest life of one credential.
    pub token_ttl_s: u64,
    /// Groups whose members may request.
    pub requester_groups: Vec<String>,
    /// Groups whose members may approve.
    pub approver_groups: Vec<String>,
    /// Approvals needed.
    pub approvals_required: u32,
    /// Environment label.
    pub environment: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Required binding kind.
    #[schema(value_type = Option<String>)]
    pub require_binding: Option<BindingKind>,
    /// Non-secret settings (write-only fields such as `admin_url` and `ca_private_key` are never
    /// returned).
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// ssh targets: the user CA's public key (OpenSSH format) for the host's `TrustedUserCAKeys`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_public_key: Option<String>,
}

/// `POST /v1/sessions`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    /// Target name.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9._-]+$")]
    pub target: String,
    /// Why (1–1000 characters).
    #[schema(min_length = 1, max_length = 1000, pattern = r"\S")]
    pub reason: String,
    /// Lifetime once active, at most the target's `max_ttl_s`.
    #[schema(minimum = 1, maximum = 316224000)]
    pub ttl_s: u64,
    /// The activity the session is tied to.
    #[serde(default)]
    #[schema(value_type = Option<BindingView>)]
    pub binding: Option<Binding>,
    /// Scheduled start (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub not_before: Option<OffsetDateTime>,
    /// Ends the session after this long without heartbeat or use.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 316224000)]
    pub idle_timeout_s: Option<u64>,
    /// Ends the session after this many uses.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub max_uses: Option<u64>,
    /// Break-glass (needs a policy; refused until policies exist).
    #[serde(default)]
    pub break_glass: bool,
    /// Also issue the session's JWT in the same call when the session is active at once (a jwt target
    /// needing no approval): the answer then carries `credential`, committed with the session in one
    /// write. A session that waits for approval is answered without it.
    #[serde(default)]
    pub credential: bool,
}

/// A session's binding on the wire.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BindingView {
    /// `ticket`, `incident`, `pipeline`, `process` or `none`.
    pub kind: String,
    /// Reference such as `OT-4711`.
    #[serde(rename = "ref")]
    pub reference: Option<String>,
}

/// One approval.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApprovalView {
    /// Approver's principal id.
    pub approver: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Comment.
    pub comment: Option<String>,
}

/// A credential as listed in a session (never its secret).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CredentialView {
    /// `crd_…` (the JWT's `jti`).
    pub id: String,
    /// `jwt`, `postgres` or `ssh`.
    pub kind: String,
    /// Issue time.
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// Expiry, never after the session's deadline.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// When revocation was confirmed.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// `none`, `pending`, `confirmed` or `failed`.
    pub revocation: String,
    /// Failed revocation attempts so far.
    #[serde(default)]
    pub revocation_attempts: u32,
    /// The last revocation error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_error: Option<String>,
}

/// The session object.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionView {
    /// `ses_…`.
    pub id: String,
    /// Requesting principal's id.
    pub principal: String,
    /// Target name.
    pub target: String,
    /// Why.
    pub reason: String,
    /// `requested`, `scheduled`, `active`, `ended`, `denied`, `canceled` or `expired`.
    pub state: String,
    /// Bound activity.
    pub binding: BindingView,
    /// Request time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When an unapproved request expires.
    #[serde(with = "time::serde::rfc3339")]
    pub approval_deadline: OffsetDateTime,
    /// Scheduled start.
    #[serde(with = "time::serde::rfc3339::option")]
    pub not_before: Option<OffsetDateTime>,
    /// Activation time.
    #[serde(with = "time::serde::rfc3339::option")]
    pub activated_at: Option<OffsetDateTime>,
    /// Deadline (known once approved).
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// When it reached a final state.
    #[serde(with = "time::serde::rfc3339::option")]
    pub ended_at: Option<OffsetDateTime>,
    /// `completed`, `deadline`, `idle`, `max_uses`, `event`, `revoked`, `offboarded` or `canceled`.
    pub end_reason: Option<String>,
    /// Requested lifetime.
    pub ttl_s: u64,
    /// Approvals so far.
    pub approvals: Vec<ApprovalView>,
    /// Approvals needed.
    pub approvals_required: u32,
    /// Uses recorded in the store (aggregated uses are flushed periodically).
    pub uses: u64,
    /// Use cap.
    pub max_uses: Option<u64>,
    /// Idle timeout.
    pub idle_timeout_s: Option<u64>,
    /// Break-glass flag.
    pub break_glass: bool,
    /// Credentials issued.
    pub credentials: Vec<CredentialView>,
    /// The JWT issued with the request (`"credential": true` on `POST /v1/sessions`); only in that
    /// answer, never stored or shown again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<JwtCredential>,
}

fn enum_str<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

impl From<&Credential> for CredentialView {
    fn from(c: &Credential) -> Self {
        Self {
            id: c.id.to_string(),
            kind: c.kind.as_str().to_owned(),
            issued_at: c.issued_at,
            expires_at: c.expires_at,
            revoked_at: c.revoked_at,
            revocation: enum_str(&c.revocation),
            revocation_attempts: c.revocation_attempts,
            revocation_error: c.revocation_error.clone(),
        }
    }
}

impl From<&Session> for SessionView {
    fn from(s: &Session) -> Self {
        Self {
            id: s.id.to_string(),
            principal: s.principal.to_string(),
            target: s.target.clone(),
            reason: s.reason.clone(),
            state: s.state.as_str().to_owned(),
            binding: BindingView {
                kind: enum_str(&s.binding.kind),
                reference: s.binding.reference.clone(),
            },
            created_at: s.created_at,
            approval_deadline: s.approval_deadline,
            not_before: s.not_before,
            activated_at: s.activated_at,
            expires_at: s.expires_at,
            ended_at: s.ended_at,
            end_reason: s.end_reason.map(|r| r.as_str().to_owned()),
            ttl_s: s.ttl_s,
            approvals: s
                .approvals
                .iter()
                .map(|a| ApprovalView {
                    approver: a.approver.to_string(),
                    at: a.at,
                    comment: a.comment.clone(),
                })
                .collect(),
            approvals_required: s.approvals_required,
            uses: s.uses,
            max_uses: s.max_uses,
            idle_timeout_s: s.idle_timeout_s,
            break_glass: s.break_glass,
            credentials: s.credentials.iter().map(CredentialView::from).collect(),
            credential: None,
        }
    }
}

/// `POST /v1/sessions/{id}/approve`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    /// Optional comment (at most 1000 characters).
    #[serde(default)]
    pub comment: Option<String>,
}

/// `POST /v1/sessions/{id}/deny`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DenyRequest {
    /// Why (1–1000 characters).
    #[schema(min_length = 1, max_length = 1000, pattern = r"\S")]
    pub reason: String,
}

/// `POST /v1/sessions/{id}/end`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndRequest {
    /// Free-form note for the audit trail (at most 1000 characters).
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /v1/sessions/{id}/credentials` answer for a `jwt` target.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct JwtCredential {
    /// `crd_…`, also the token's `jti`.
    pub id: String,
    /// `jwt`.
    pub kind: String,
    /// The signed token. Shown only here.
    pub access_token: String,
    /// `Bearer`.
    pub token_type: String,
    /// Expiry: `min(session deadline, now + token_ttl_s)`.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// `POST /v1/sessions/{id}/credentials` answer for a `postgres` target.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct PostgresCredential {
    /// `crd_…`.
    pub id: String,
    /// `postgres`.
    pub kind: String,
    /// The role to log in as (`stint_…` in dynamic mode, the account in checkout mode).
    pub username: String,
    /// Its password. Shown only here; dies with the session.
    pub password: String,
    /// Host to connect to.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Database.
    pub database: String,
    /// The role's `VALID UNTIL`; never after the session's deadline.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl std::fmt::Debug for PostgresCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresCredential")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// `POST /v1/sessions/{id}/credentials` answer for an `ssh` target.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SshCredential {
    /// `crd_…`.
    pub id: String,
    /// `ssh`.
    pub kind: String,
    /// The OpenSSH user certificate (`…-cert-v01@openssh.com …`) for the public key sent.
    pub certificate: String,
    /// Its principals (login names).
    pub principals: Vec<String>,
    /// Its serial (what the KRL lists once revoked).
    pub serial: String,
    /// Validity start.
    #[serde(with = "time::serde::rfc3339")]
    pub valid_after: OffsetDateTime,
    /// Validity end; never after the session's deadline.
    #[serde(with = "time::serde::rfc3339")]
    pub valid_before: OffsetDateTime,
}

/// A new credential: its shape depends on the target's kind.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum IssuedCredential {
    /// `jwt` targets.
    Jwt(JwtCredential),
    /// `postgres` targets.
    Postgres(PostgresCredential),
    /// `ssh` targets.
    Ssh(SshCredential),
}

/// `POST /v1/reconcile` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReconcileReport {
    /// What was found that no live credential owns, and what was done.
    pub zombies: Vec<ZombieView>,
    /// Revocations still outstanding after the sweep (queued for retry).
    pub outstanding_revocations: usize,
}

/// One zombie.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ZombieView {
    /// Target name.
    pub target: String,
    /// Role name or certificate serial.
    pub credential: String,
    /// `dropped`, `added_to_krl`, or `failed: …`.
    pub action: String,
}

/// RFC 7662 introspection answer: `{"active": false}` exactly, or the token's claims.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Introspection {
    /// Whether the token may be honoured now.
    pub active: bool,
    /// Principal id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Audience.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// Session id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Scope.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Expiry (Unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Issue time (Unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Token id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Issuer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// `Bearer`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
}

impl Introspection {
    /// `{"active": false}`.
    pub fn inactive() -> Self {
        Self {
            active: false,
            sub: None,
            aud: None,
            sid: None,
            scope: None,
            exp: None,
            iat: None,
            jti: None,
            iss: None,
            token_type: None,
        }
    }
}

/// One audit event.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditEvent {
    /// Position in the chain.
    pub seq: i64,
    /// RFC 3339 time.
    pub at: String,
    /// Principal id or `system`.
    pub actor: String,
    /// Dotted action.
    pub action: String,
    /// Session id.
    pub session: Option<String>,
    /// Facts (never a secret).
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    /// Previous hash.
    pub prev_hash: String,
    /// `sha256(prev_hash ‖ canonical event)`.
    pub hash: String,
}

/// `GET /v1/audit/verify`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditVerification {
    /// True when the whole chain verifies.
    pub ok: bool,
    /// Events checked.
    pub events: u64,
    /// Hash of the last good event.
    pub head_hash: String,
    /// The first event that does not verify.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad_seq: Option<i64>,
    /// Why it does not verify.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// The chain facts of an evidence bundle.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EvidenceChain {
    /// First event of the session.
    pub first_seq: Option<i64>,
    /// Last event of the session.
    pub last_seq: Option<i64>,
    /// Hash of the chain's head when the evidence was made.
    pub head_hash: String,
    /// Whether the whole chain up to the head verified.
    pub verified: bool,
}

/// `GET /v1/sessions/{id}/evidence`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Evidence {
    /// The session.
    pub session: SessionView,
    /// Its audit events, in chain order.
    pub events: Vec<AuditEvent>,
    /// Chain facts.
    pub chain: EvidenceChain,
}

/// `POST /v1/keys/rotate` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyRotated {
    /// The new signing key's id.
    pub kid: String,
    /// Keys still published.
    pub published: Vec<String>,
}

// Types that carry a secret print it redacted.
impl std::fmt::Debug for PrincipalCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrincipalCreated")
            .field("principal", &self.principal)
            .field("api_key", &"[redacted]")
            .finish()
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey").field("api_key", &"[redacted]").finish()
    }
}

impl std::fmt::Debug for JwtCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtCredential")
            .field("id", &self.id)
            .field("access_token", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}
