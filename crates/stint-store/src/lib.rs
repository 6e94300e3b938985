//! stint's storage: the [`Store`] trait and its backends.
//!
//! The store is the source of truth. Every change goes through [`Store::commit`]: one transaction that
//! writes principals, targets and sessions (with optimistic version checks) and appends their audit
//! events to the hash chain, so an acknowledged change always has its audit event and vice versa.
//! Nothing else writes the audit table.

mod sqlite;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use stint_core::{
    AuditRecord, Credential, CredentialKind, PendingAudit, Revocation, Session, SessionId, State,
};
use time::OffsetDateTime;

pub use sqlite::SqliteStore;

/// A stored principal. `key_hash` is the hex SHA-256 of its API key; the key itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrincipalRecord {
    /// `prn_…`.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Kind (wire name).
    pub kind: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Hex SHA-256 of the API key; `None` once offboarded.
    pub key_hash: Option<String>,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Offboarding time.
    pub deleted_at: Option<OffsetDateTime>,
}

/// A stored target: its name and kind, and the server's document describing it (may hold secrets
/// such as a PostgreSQL admin URL, which the server never returns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRecord {
    /// Unique name.
    pub name: String,
    /// Kind (wire name).
    pub kind: String,
    /// The server's JSON document.
    pub doc: String,
    /// Creation time.
    pub created_at: OffsetDateTime,
}

/// A session and its optimistic-concurrency version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The session.
    pub session: Session,
    /// Incremented on every write.
    pub version: i64,
}

/// One session write in a [`Batch`].
#[derive(Debug, Clone)]
pub struct SessionWrite {
    /// The new state of the session.
    pub session: Session,
    /// `None` to insert; `Some(v)` to update only if the stored version is still `v`.
    pub expected_version: Option<i64>,
}

/// A change to a target.
#[derive(Debug, Clone)]
pub enum TargetWrite {
    /// Create it (fails with [`StoreError::Duplicate`] if the name is taken).
    Insert(TargetRecord),
    /// Replace its document.
    Update(TargetRecord),
    /// Remove it.
    Delete(String),
}

/// A change to a principal.
#[derive(Debug, Clone)]
pub enum PrincipalWrite {
    /// Create it (fails with [`StoreError::Duplicate`] if the name is taken).
    Insert(PrincipalRecord),
    /// Replace it (key rotation, offboarding).
    Update(PrincipalRecord),
}

/// A named configuration document (a workload trust, a hook source).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentRecord {
    /// What it is (`trust`, `hook_source`).
    pub kind: String,
    /// Unique name within its kind.
    pub name: String,
    /// The server's JSON document.
    pub doc: String,
    /// Creation time.
    pub created_at: OffsetDateTime,
}

/// A change to a document.
#[derive(Debug, Clone)]
pub enum DocumentWrite {
    /// Create it (fails with [`StoreError::Duplicate`] if the name is taken).
    Insert(DocumentRecord),
    /// Remove it (kind, name).
    Delete(String, String),
}

/// A replay guard: the batch fails with [`StoreError::Duplicate`] if `(kind, key)` was seen before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRecord {
    /// What kind of key (`id_token_jti`, `hook_event`, `closed_ref`).
    pub kind: String,
    /// The key.
    pub key: String,
    /// When it may be forgotten.
    pub expires_at: OffsetDateTime,
    /// Now (an expired guard with the same key may be taken again).
    pub recorded_at: OffsetDateTime,
}

/// Everything one acknowledged change writes, applied atomically by [`Store::commit`].
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// Principal writes.
    pub principals: Vec<PrincipalWrite>,
    /// Target writes.
    pub targets: Vec<TargetWrite>,
    /// Session writes.
    pub sessions: Vec<SessionWrite>,
    /// Audit events, appended to the chain in order.
    pub audit: Vec<PendingAudit>,
    /// Document writes.
    pub documents: Vec<DocumentWrite>,
    /// Replay guards to record.
    pub seen: Vec<SeenRecord>,
}

impl Batch {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.principals.is_empty()
            && self.targets.is_empty()
            && self.sessions.is_empty()
            && self.audit.is_empty()
            && self.documents.is_empty()
            && self.seen.is_empty()
    }
}

/// Filters for [`Store::sessions`].
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    /// Only this state.
    pub state: Option<State>,
    /// Only this principal.
    pub principal: Option<String>,
    /// Only this target.
    pub target: Option<String>,
    /// Only sessions bound to this activity (binding kind, ref).
    pub binding: Option<(String, String)>,
    /// Only ids greater than this (cursor).
    pub after: Option<String>,
    /// At most this many.
    pub limit: u32,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A session changed since it was read; reload and retry.
    #[error("the session changed concurrently")]
    Conflict,
    /// A unique name is taken.
    #[error("`{0}` already exists")]
    Duplicate(String),
    /// A row to update does not exist.
    #[error("not found")]
    NotFound,
    /// The backend failed.
    #[error("store failure: {0}")]
    Backend(String),
}

/// Shorthand.
pub type StoreResult<T> = Result<T, StoreError>;

/// The storage interface every backend implements.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Applies a batch atomically and returns the sealed audit records.
    async fn commit(&self, batch: Batch) -> StoreResult<Vec<AuditRecord>>;

    /// A principal by id (also offboarded ones).
    async fn principal(&self, id: &str) -> StoreResult<Option<PrincipalRecord>>;
    /// A live principal by the hash of its API key.
    async fn principal_by_key_hash(&self, key_hash: &str) -> StoreResult<Option<PrincipalRecord>>;
    /// Principals ordered by id, after `after`.
    async fn principals(&self, after: Option<&str>, limit: u32) -> StoreResult<Vec<PrincipalRecord>>;

    /// A target by name.
    async fn target(&self, name: &str) -> StoreResult<Option<TargetRecord>>;
    /// Targets ordered by name, after `after`.
    async fn targets(&self, after: Option<&str>, limit: u32) -> StoreResult<Vec<TargetRecord>>;

    /// A session by id.
    async fn session(&self, id: &SessionId) -> StoreResult<Option<Versioned>>;
    /// The sessions with these ids that exist, in no particular order (one read for many).
    async fn sessions_by_id(&self, ids: &[SessionId]) -> StoreResult<Vec<Versioned>>;
    /// Sessions ordered by id.
    async fn sessions(&self, filter: &SessionFilter) -> StoreResult<Vec<Versioned>>;
    /// Every session the scheduler must watch: not final, or ended with revocations outstanding.
    async fn live_sessions(&self) -> StoreResult<Vec<Versioned>>;
    /// One page of [`Store::live_sessions`]: up to `limit` of them with ids after `after`, by id (so a
    /// start with a million live sessions never holds them all at once).
    async fn live_sessions_after(&self, after: Option<&SessionId>, limit: u32)
    -> StoreResult<Vec<Versioned>>;
    /// Documents of a kind, ordered by name.
    async fn documents(&self, kind: &str) -> StoreResult<Vec<DocumentRecord>>;
    /// True when `(kind, key)` was recorded and has not expired at `now`.
    async fn seen(&self, kind: &str, key: &str, now: OffsetDateTime) -> StoreResult<bool>;

    /// The revocation outbox: external credentials whose revocation is pending or failed.
    async fn outstanding_revocations(&self) -> StoreResult<Vec<RevocationRecord>>;
    /// Handles of a target's credentials of `kind` whose revocation was requested and that would
    /// otherwise still be valid at `unexpired_at` (e.g. the serials a KRL must list).
    async fn revoked_handles(
        &self,
        target: &str,
        kind: CredentialKind,
        unexpired_at: OffsetDateTime,
    ) -> StoreResult<Vec<String>>;

    /// The highest audit `seq` (0 when the chain is empty).
    async fn audit_head(&self) -> StoreResult<i64>;
    /// Audit records with `seq > after_seq`, in order.
    async fn audit(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<AuditRecord>>;
    /// A session's audit records, in order.
    async fn audit_for_session(&self, id: &SessionId) -> StoreResult<Vec<AuditRecord>>;
    /// Verifies the whole chain from genesis.
    async fn verify_audit(&self) -> StoreResult<stint_core::ChainVerification>;
}

/// One row of the revocation outbox (mirrors a credential of a session document).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationRecord {
    /// The credential id.
    pub credential: String,
    /// Its session.
    pub session: String,
    /// Its target.
    pub target: String,
    /// Its kind (wire name).
    pub kind: String,
    /// The provider's handle (role name, certificate serial).
    pub handle: String,
    /// When it would stop working by itself.
    pub expires_at: OffsetDateTime,
    /// `pending`, `failed` or `confirmed`.
    pub state: String,
    /// Failed attempts so far.
    pub attempts: u32,
    /// The last error.
    pub last_error: Option<String>,
}

/// True for credentials the outbox tracks: external kinds whose revocation was requested.
pub fn is_outbox_entry(c: &Credential) -> bool {
    c.kind != CredentialKind::Jwt && c.revocation != Revocation::None
}

/// The wire name of a revocation state.
pub fn revocation_name(r: Revocation) -> &'static str {
    match r {
        Revocation::None => "none",
        Revocation::Pending => "pending",
        Revocation::Confirmed => "confirmed",
        Revocation::Failed => "failed",
    }
}

/// True when a session still has credentials whose revocation is not confirmed.
pub fn needs_revocation(s: &Session) -> bool {
    s.state.is_final()
        && s.credentials.iter().any(|c| {
            matches!(
                c.revocation,
                stint_core::Revocation::Pending | stint_core::Revocation::Failed
            )
        })
}
