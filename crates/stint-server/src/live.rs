//! The in-memory index of live sessions and their tokens: the introspection hot path.
//!
//! Introspection hashes the presented token (SHA-256) and looks the hash up here: no signature check,
//! no store I/O. The store stays the source of truth: the service updates this index after every
//! committed change, and marks a session dead *before* committing its end (fail closed), so once an
//! end is acknowledged no token of that session answers active on this node.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use stint_core::{CredentialId, Session, SessionId};
use stint_proto::Introspection;
use time::OffsetDateTime;

/// The SHA-256 of a token: the only form in which tokens are kept.
pub type TokenHash = [u8; 32];

/// Callers listed per aggregated `credential.used` event (the count is always exact).
const MAX_CALLERS: usize = 32;

/// A time as Unix milliseconds.
pub fn ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Uses not yet written to the audit chain.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// How many.
    pub count: u64,
    /// Distinct callers (principal ids), at most [`MAX_CALLERS`].
    pub callers: BTreeSet<String>,
    /// First use in this batch.
    pub first: Option<OffsetDateTime>,
    /// Last use in this batch.
    pub last: Option<OffsetDateTime>,
    /// The most recently used credential.
    pub credential: Option<CredentialId>,
}

/// What the hot path knows about an active session.
#[derive(Debug)]
pub struct LiveSession {
    /// The session.
    pub id: SessionId,
    deadline_ms: AtomicI64,
    idle_ms: Option<i64>,
    last_activity_ms: AtomicI64,
    dead: AtomicBool,
    /// Whether each use must be persisted before answering.
    pub counts_uses: bool,
    usage: Mutex<Usage>,
}

impl LiveSession {
    /// True while the session may be used at `now_ms`.
    pub fn is_live(&self, now_ms: i64) -> bool {
        if self.dead.load(Ordering::Acquire) || now_ms >= self.deadline_ms.load(Ordering::Acquire) {
            return false;
        }
        match self.idle_ms {
            Some(idle) => now_ms < self.last_activity_ms.load(Ordering::Acquire).saturating_add(idle),
            None => true,
        }
    }

    /// The deadline in Unix seconds.
    pub fn deadline_s(&self) -> i64 {
        self.deadline_ms.load(Ordering::Acquire).div_euclid(1000)
    }

    /// Records a heartbeat or use.
    pub fn touch(&self, now: OffsetDateTime) {
        self.last_activity_ms.fetch_max(ms(now), Ordering::AcqRel);
    }

    /// The latest heartbeat or use seen in memory.
    pub fn last_activity(&self) -> Option<OffsetDateTime> {
        let v = self.last_activity_ms.load(Ordering::Acquire);
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(v) * 1_000_000).ok()
    }

    /// Marks the session dead: every token answers inactive from now on.
    pub fn kill(&self) {
        self.dead.store(true, Ordering::Release);
    }

    /// Counts one use for the next aggregated audit event.
    pub fn record_use(&self, credential: &CredentialId, caller: &str, now: OffsetDateTime) {
        let mut u = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        u.count += 1;
        if u.callers.len() < MAX_CALLERS && !u.callers.contains(caller) {
            u.callers.insert(caller.to_owned());
        }
        u.first.get_or_insert(now);
        u.last = Some(now);
        if u.credential.as_ref() != Some(credential) {
            u.credential = Some(credential.clone());
        }
    }

    /// The uses not yet written, if any.
    pub fn pending_usage(&self) -> Option<Usage> {
        let u = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        (u.count > 0).then(|| u.clone())
    }

    /// Forgets uses that were written (more may have arrived meanwhile).
    pub fn usage_written(&self, written: &Usage) {
        let mut u = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        u.count = u.count.saturating_sub(written.count);
        if u.count == 0 {
            *u = Usage::default();
        }
    }
}

/// One issued, unrevoked token.
#[derive(Debug)]
pub struct TokenEntry {
    /// Its session.
    pub session: Arc<LiveSession>,
    /// Its id.
    pub jti: CredentialId,
    /// Its expiry.
    pub exp_ms: i64,
    /// The answer introspection gives while it is active.
    pub claims: Introspection,
    /// Cleared once its first use has been audited.
    pub first_use_pending: AtomicBool,
}

impl TokenEntry {
    /// True while the token may be honoured.
    pub fn is_active(&self, now: OffsetDateTime) -> bool {
        let now_ms = ms(now);
        now_ms < self.exp_ms && self.session.is_live(now_ms)
    }
}

/// Live sessions and tokens.
#[derive(Debug, Default)]
pub struct LiveIndex {
    sessions: RwLock<HashMap<SessionId, Arc<LiveSession>>>,
    tokens: RwLock<HashMap<TokenHash, Arc<TokenEntry>>>,
}

/// Decodes a credential handle (hex SHA-256) into a token hash.
pub fn handle_to_hash(handle: &str) -> Option<TokenHash> {
    let v = hex::decode(handle).ok()?;
    v.try_into().ok()
}

impl LiveIndex {
    /// The token with this hash, if it was issued and not revoked.
    pub fn token(&self, hash: &TokenHash) -> Option<Arc<TokenEntry>> {
        self.tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(hash)
            .cloned()
    }

    /// The live session with this id.
    pub fn session(&self, id: &SessionId) -> Option<Arc<LiveSession>> {
        self.sessions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Every live session.
    pub fn sessions(&self) -> Vec<Arc<LiveSession>> {
        self.sessions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// How many sessions are active.
    pub fn active_count(&self) -> usize {
        self.sessions.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Makes the index agree with a committed session: active sessions are (re)registered, anything
    /// else is killed and dropped with all its tokens; revoked credentials are dropped.
    pub fn sync(&self, s: &Session) {
        let active = s.state == stint_core::State::Active;
        if !active {
            self.drop_session(s);
            return;
        }
        let deadline = s.expires_at.map_or(0, ms);
        let live = {
            let mut map = self.sessions.write().unwrap_or_else(|e| e.into_inner());
            map.entry(s.id.clone())
                .or_insert_with(|| {
                    let last = s.last_activity_at.or(s.activated_at).map_or(0, ms);
                    Arc::new(LiveSession {
                        id: s.id.clone(),
                        deadline_ms: AtomicI64::new(deadline),
                        idle_ms: s
                            .idle_timeout_s
                            .map(|t| i64::try_from(t).unwrap_or(i64::MAX / 2) * 1000),
                        last_activity_ms: AtomicI64::new(last),
                        dead: AtomicBool::new(false),
                        // Break-glass credentials are good for one use each: every use is written
                        // (serialized by the session lock) so a second one is refused.
                        counts_uses: s.max_uses.is_some() || s.break_glass,
                        usage: Mutex::new(Usage::default()),
                    })
                })
                .clone()
        };
        // A deadline only ever moves earlier (a target's limits may shrink, never grow a session).
        live.deadline_ms.fetch_min(deadline, Ordering::AcqRel);
        let mut tokens = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        for c in &s.credentials {
            if c.revocation != stint_core::Revocation::None
                && let Some(h) = handle_to_hash(&c.handle)
            {
                tokens.remove(&h);
            }
        }
    }

    /// Adds a freshly issued token.
    pub fn insert_token(&self, hash: TokenHash, entry: TokenEntry) {
        self.tokens
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hash, Arc::new(entry));
    }

    /// Kills a session in memory ahead of persisting its end (fail closed).
    pub fn kill(&self, id: &SessionId) {
        if let Some(l) = self.session(id) {
            l.kill();
        }
    }

    /// Kills one token ahead of persisting its revocation.
    pub fn remove_token(&self, hash: &TokenHash) {
        self.tokens
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(hash);
    }

    fn drop_session(&self, s: &Session) {
        if let Some(l) = self
            .sessions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&s.id)
        {
            l.kill();
        }
        let mut tokens = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        for c in &s.credentials {
            if let Some(h) = handle_to_hash(&c.handle) {
                tokens.remove(&h);
            }
        }
    }
}
