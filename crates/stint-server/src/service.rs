//! The service layer: loads a session, runs the pure transition, persists the new state and its audit
//! events in one transaction, then carries out the effects. Handlers call only this.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::StatusCode;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use stint_core::{
    Actor, Binding, BindingKind, Clock, Credential, CredentialId, CredentialKind, Effect, EndReason, Event,
    NewSession, PendingAudit, PrincipalId, Revocation, Session, SessionId, State,
};
use stint_proto::{CreatePrincipal, CreateSession, CreateTarget, Introspection, PrincipalKind, TargetKind};
use stint_store::{
    Batch, PrincipalRecord, PrincipalWrite, SessionFilter, SessionWrite, Store, TargetRecord, TargetWrite,
    Versioned,
};
use time::OffsetDateTime;
use tokio::sync::{Mutex, MutexGuard};

use crate::config::Config;
use crate::directory::{Directory, key_hash, new_api_key};
use crate::error::{ApiError, ApiResult};
use crate::keys::KeyRing;
use crate::live::{LiveIndex, TokenEntry, TokenHash, Usage, handle_to_hash};
use crate::metrics as m;
use crate::providers::{
    self, IssueRequest, Prepared, ProviderError, Secret, TargetProvider, TargetSecrets, Zombie,
};
use crate::revoker::{Job, Revoker};
use crate::scheduler::Scheduler;
use crate::secrets::Kek;

/// Lock stripes serializing changes to one session on this node.
const STRIPES: usize = 256;

/// Live sessions read per page at start.
const RECOVERY_PAGE: u32 = 5000;

/// How many sessions start-up recovery and the timers judge at once.
pub const RECOVERY_CONCURRENCY: usize = 64;

/// Longest accepted free-text field.
pub const MAX_TEXT: usize = 1000;

/// A target's public document (its wire form).
pub type TargetDoc = stint_proto::Target;

/// A target as stored: its public document and, for kinds with secrets, the sealed write-only part.
#[derive(Debug, Serialize, Deserialize)]
struct StoredTarget {
    #[serde(flatten)]
    doc: TargetDoc,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed: Option<String>,
}

/// The `aud` of a target's tokens: `config.audience`, else the target's name.
pub fn audience(t: &TargetDoc) -> String {
    t.config
        .get("audience")
        .and_then(|a| a.as_str())
        .map_or_else(|| t.name.clone(), str::to_owned)
}

/// `PATCH /v1/targets/{name}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchTarget {
    /// New cap on session length (live sessions keep their deadline unless it is later than allowed).
    #[schema(minimum = 1, maximum = 316224000)]
    pub max_ttl_s: Option<u64>,
    /// New cap on credential length.
    #[schema(minimum = 1, maximum = 316224000)]
    pub token_ttl_s: Option<u64>,
    /// New requester groups.
    pub requester_groups: Option<Vec<String>>,
    /// New approver groups.
    pub approver_groups: Option<Vec<String>>,
    /// New approval count.
    pub approvals_required: Option<u32>,
}

/// An authenticated caller.
pub type Caller = Arc<PrincipalRecord>;

/// True for the admin kind.
pub fn is_admin(c: &PrincipalRecord) -> bool {
    c.kind == PrincipalKind::Admin.as_str()
}

fn intersects(a: &[String], b: &[String]) -> bool {
    a.iter().any(|g| b.contains(g))
}

fn new_u128() -> u128 {
    uuid::Uuid::now_v7().as_u128()
}

fn check_name(what: &str, name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "{what} must be 1 to 64 characters of a-z, A-Z, 0-9, `.`, `_` or `-`"
        )))
    }
}

fn check_groups(groups: &[String]) -> ApiResult<()> {
    if groups.len() > 64 {
        return Err(ApiError::invalid("at most 64 groups"));
    }
    groups.iter().try_for_each(|g| check_name("a group name", g))
}

fn check_text(what: &str, s: &str, required: bool) -> ApiResult<()> {
    if required && s.trim().is_empty() {
        return Err(ApiError::invalid(format!("`{what}` must not be empty")));
    }
    if s.chars().count() > MAX_TEXT {
        return Err(ApiError::invalid(format!(
            "`{what}` is longer than {MAX_TEXT} characters"
        )));
    }
    Ok(())
}

/// RFC 9068 access-token claims.
#[derive(Debug, Serialize)]
struct AccessClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: i64,
    iat: i64,
    nbf: i64,
    jti: &'a str,
    client_id: &'a str,
    scope: &'a str,
    sid: &'a str,
}

/// A JWT signed but not yet committed (never logged: no `Debug`).
struct SignedJwt {
    token: String,
    hash: TokenHash,
    exp: OffsetDateTime,
}

/// Many sessions' transitions gathered for one commit.
#[derive(Default)]
struct Changes {
    batch: Batch,
    /// (as loaded, as committed)
    done: Vec<(Session, Session)>,
    usages: Vec<(SessionId, crate::live::Usage)>,
    jobs: Vec<Job>,
}

impl Changes {
    fn add(
        &mut self,
        old: Session,
        version: i64,
        s: Session,
        audit: Vec<PendingAudit>,
        jobs: Vec<Job>,
        usage: Option<crate::live::Usage>,
    ) {
        self.batch.audit.extend(audit);
        self.jobs.extend(jobs);
        self.batch.sessions.push(SessionWrite {
            session: s.clone(),
            expected_version: Some(version),
        });
        if let Some(u) = usage {
            self.usages.push((s.id.clone(), u));
        }
        self.done.push((old, s));
    }
}

/// What a credential request returns: a JWT issued and committed.
pub struct IssuedJwt {
    /// Its id.
    pub id: CredentialId,
    /// The token.
    pub token: String,
    /// Its expiry.
    pub expires_at: OffsetDateTime,
}

impl std::fmt::Debug for IssuedJwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedJwt")
            .field("id", &self.id)
            .field("token", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The service.
#[derive(Debug)]
pub struct Service {
    /// Source of truth.
    pub store: Arc<dyn Store>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Settings.
    pub cfg: Config,
    /// Token issuer (`iss`).
    pub issuer: String,
    /// Signing keys.
    pub keys: KeyRing,
    /// Hot-path index.
    pub live: Arc<LiveIndex>,
    /// Timers.
    pub scheduler: Scheduler,
    /// API keys.
    pub directory: Directory,
    /// True once start-up recovery finished.
    pub ready: AtomicBool,
    stripes: Vec<Mutex<()>>,
    /// Serializes changes to principals and targets against session requests: requests hold it
    /// shared, offboarding, key rotation and target changes hold it exclusively, so no request slips
    /// past an offboarding or a target deletion that is listing the sessions to end.
    admin_gate: tokio::sync::RwLock<()>,
    /// Every target, by name (the store holds the same; targets change rarely and only here).
    target_cache: std::sync::RwLock<std::collections::HashMap<String, TargetDoc>>,
    /// Incremental verification of the audit chain for evidence (the full check is `verify_audit`).
    chain: Mutex<stint_core::audit::Verifier>,
    /// Seals target secrets at rest.
    kek: Kek,
    /// Every target's credential provider, by target name.
    providers: std::sync::RwLock<std::collections::HashMap<String, TargetProvider>>,
    /// The jwt provider (shared by every jwt target).
    jwt: Arc<providers::jwt::JwtProvider>,
    /// Revocation jobs of external credentials.
    pub revoker: Revoker,
    /// Tells event-stream subscribers that new audit records exist.
    pub events: crate::events::EventHub,
    /// Hook sources by name, with their opened secrets.
    hook_sources: std::sync::RwLock<std::collections::HashMap<String, HookSource>>,
    /// Workload trusts by name, with their key caches.
    trusts: std::sync::RwLock<std::collections::HashMap<String, Arc<TrustEntry>>>,
    /// One exchange at a time decides whether a run's session exists (exchanges are rare).
    exchange_lock: Mutex<()>,
    /// Fetches issuers' JWKS.
    http: reqwest::Client,
    /// The policy set in force (set by recovery).
    policy: std::sync::RwLock<Option<crate::policy::PolicyState>>,
    /// Step-up nonces of break-glass sessions: SHA-256 of the nonce → (session, expiry). Single use.
    nonces: std::sync::Mutex<std::collections::HashMap<[u8; 32], (SessionId, OffsetDateTime)>>,
}

/// How long a step-up nonce lives.
pub const NONCE_TTL_S: i64 = 60;

/// A trust and its issuer's keys.
#[derive(Debug)]
struct TrustEntry {
    view: crate::federation::TrustView,
    inline: Option<jsonwebtoken::jwk::JwkSet>,
    keys: Mutex<crate::federation::KeyCache>,
}

/// `POST /v1/policies/check`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyCheck {
    /// The principal's name.
    pub principal: String,
    /// The target's name.
    pub target: String,
    /// Requested lifetime.
    pub ttl_s: u64,
    /// Ask about break-glass.
    #[serde(default)]
    pub break_glass: bool,
    /// The binding.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub binding: Option<Binding>,
    /// When (RFC 3339; default now) — for maintenance windows.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub at: Option<OffsetDateTime>,
}

/// RFC 8693 form of `POST /oauth2/token`.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct ExchangeForm {
    /// `urn:ietf:params:oauth:grant-type:token-exchange`.
    pub grant_type: String,
    /// The workload's OIDC ID token.
    pub subject_token: Option<String>,
    /// `urn:ietf:params:oauth:token-type:id_token` or `…:jwt`.
    pub subject_token_type: Option<String>,
    /// The target's name.
    pub audience: Option<String>,
    /// Ignored (the target decides the scope).
    pub scope: Option<String>,
    /// Must be absent or `urn:ietf:params:oauth:token-type:access_token`.
    pub requested_token_type: Option<String>,
}

impl std::fmt::Debug for ExchangeForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeForm")
            .field("grant_type", &self.grant_type)
            .field(
                "subject_token",
                &self.subject_token.as_ref().map(|_| "[redacted]"),
            )
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// RFC 8693 answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ExchangeAnswer {
    /// The stint access token (a JWT bound to the run's session).
    pub access_token: String,
    /// `urn:ietf:params:oauth:token-type:access_token`.
    pub issued_token_type: String,
    /// `Bearer`.
    pub token_type: String,
    /// Seconds until it expires.
    pub expires_in: i64,
    /// The session it belongs to (an extension).
    pub session: String,
}

impl std::fmt::Debug for ExchangeAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeAnswer")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

/// A hook source with its secret (in memory only).
#[derive(Clone)]
struct HookSource {
    view: crate::hooks::HookSourceView,
    secret: Arc<secrecy::SecretBox<Vec<u8>>>,
}

impl std::fmt::Debug for HookSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookSource")
            .field("view", &self.view)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// A service over `store`. Call [`Service::recover`] before serving.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        cfg: Config,
        issuer: String,
        keys: KeyRing,
        kek: Kek,
    ) -> Self {
        let live = Arc::new(LiveIndex::default());
        Self {
            store,
            clock,
            cfg,
            issuer,
            keys,
            jwt: Arc::new(providers::jwt::JwtProvider::new(live.clone())),
            live,
            kek,
            providers: std::sync::RwLock::default(),
            revoker: Revoker::default(),
            events: crate::events::EventHub::default(),
            hook_sources: std::sync::RwLock::default(),
            trusts: std::sync::RwLock::default(),
            exchange_lock: Mutex::new(()),
            nonces: std::sync::Mutex::default(),
            policy: std::sync::RwLock::new(None),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            scheduler: Scheduler::default(),
            directory: Directory::default(),
            ready: AtomicBool::new(false),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            admin_gate: tokio::sync::RwLock::new(()),
            target_cache: std::sync::RwLock::default(),
            chain: Mutex::new(stint_core::audit::Verifier::new()),
        }
    }

    fn stripe(&self, id: &SessionId) -> usize {
        let h = Sha256::digest(id.as_str().as_bytes());
        usize::from(h[0]) % STRIPES
    }

    /// Splits `ids` into `lanes` groups whose session locks never overlap, so the groups can be
    /// worked on at the same time without waiting for each other.
    pub fn lock_lanes(&self, ids: Vec<SessionId>, lanes: usize) -> Vec<Vec<SessionId>> {
        let lanes = lanes.max(1);
        let mut out: Vec<Vec<SessionId>> = (0..lanes).map(|_| Vec::new()).collect();
        for id in ids {
            let lane = self.stripe(&id) % lanes;
            out[lane].push(id);
        }
        out.retain(|l| !l.is_empty());
        out
    }

    async fn lock(&self, id: &SessionId) -> MutexGuard<'_, ()> {
        self.stripes[self.stripe(id)].lock().await
    }

    async fn lock_many(&self, ids: &[SessionId]) -> Vec<MutexGuard<'_, ()>> {
        let set: BTreeSet<usize> = ids.iter().map(|i| self.stripe(i)).collect();
        let mut guards = Vec::with_capacity(set.len());
        for i in set {
            guards.push(self.stripes[i].lock().await);
        }
        guards
    }

    // ----- start-up -------------------------------------------------------------------------

    /// Loads principals, ends what expired while the server was down (fail closed), rebuilds the
    /// introspection index and the timers, then marks the service ready.
    pub async fn recover(&self, bootstrap_key: Option<String>) -> anyhow::Result<Option<String>> {
        let written_key = self.bootstrap_admin(bootstrap_key).await?;
        let mut after: Option<String> = None;
        loop {
            let page = self.store.principals(after.as_deref(), 1000).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            for p in page {
                self.directory.upsert(p);
            }
        }
        let mut after: Option<String> = None;
        loop {
            let page = self.store.targets(after.as_deref(), 1000).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.name.clone());
            for r in page {
                let stored: StoredTarget = serde_json::from_str(&r.doc)
                    .map_err(|e| anyhow::anyhow!("target `{}` is unreadable: {e}", r.name))?;
                let secrets = match &stored.sealed {
                    Some(blob) => {
                        let plain = self.kek.open(&r.name, blob).map_err(|e| {
                            anyhow::anyhow!("target `{}`: {e} (is STINT_MASTER_KEY/master.key the one it was created with?)", r.name)
                        })?;
                        serde_json::from_slice::<TargetSecrets>(&plain).map_err(|_| {
                            anyhow::anyhow!("target `{}`: its sealed secrets are unreadable", r.name)
                        })?
                    }
                    None => TargetSecrets::default(),
                };
                let provider = self
                    .build_provider(&stored.doc, &secrets)
                    .map_err(|e| anyhow::anyhow!("target `{}`: {e}", r.name))?;
                self.set_provider(&r.name, Some(provider));
                self.cache_target(Some(stored.doc), &r.name);
            }
        }
        for d in self.store.documents("trust").await? {
            let view: crate::federation::TrustView = serde_json::from_str(&d.doc)
                .map_err(|e| anyhow::anyhow!("trust `{}` is unreadable: {e}", d.name))?;
            self.add_trust(view);
        }
        self.load_configured_trusts().await?;
        for d in self.store.documents("hook_source").await? {
            let stored: crate::hooks::StoredHookSource = serde_json::from_str(&d.doc)
                .map_err(|e| anyhow::anyhow!("hook source `{}` is unreadable: {e}", d.name))?;
            let secret = self
                .kek
                .open(&format!("hook:{}", d.name), &stored.sealed_secret)
                .map_err(|e| anyhow::anyhow!("hook source `{}`: {e}", d.name))?;
            self.hook_sources
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    d.name.clone(),
                    HookSource {
                        view: stored.view,
                        secret: Arc::new(secrecy::SecretBox::new(Box::new(secret.to_vec()))),
                    },
                );
        }
        self.load_policies().await?;
        // The whole chain is verified in the background: it is O(events), and a broken chain never
        // stops the server (it is reported by log, metric, `/v1/audit/verify` and evidence), so
        // readiness does not wait for it.
        let store = self.store.clone();
        tokio::spawn(async move {
            match store.verify_audit().await {
                Ok(v) if v.ok => metrics::gauge!(m::AUDIT_CHAIN_OK).set(1.0),
                Ok(v) => {
                    tracing::error!(first_bad_seq = ?v.first_bad_seq, problem = ?v.problem, "audit chain does not verify");
                    metrics::gauge!(m::AUDIT_CHAIN_OK).set(0.0);
                }
                Err(e) => tracing::error!(error = %e, "verifying the audit chain at start failed"),
            }
        });
        // Page by page (bounded memory); within a page many at a time, so overdue sessions share
        // commits (group commit) and readiness comes soon.
        let (mut ended, mut kept) = (0usize, 0usize);
        let mut after: Option<SessionId> = None;
        loop {
            let page = self
                .store
                .live_sessions_after(after.as_ref(), RECOVERY_PAGE)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.session.id.clone());
            let outcomes: Vec<anyhow::Result<(bool, bool)>> = futures_util::stream::iter(page)
                .map(|v| async move {
                    let _g = self.lock(&v.session.id).await;
                    let now = self.clock.now();
                    let (s, fx) = v.session.apply(Event::Tick { activity: None }, now)?;
                    let s = self.finish(&v.session, v.version, s, fx, now).await?;
                    if s.state == State::Active {
                        self.rebuild_tokens(&s, now).await?;
                    }
                    Ok((
                        s.state == State::Active,
                        v.session.state == State::Active && s.state != State::Active,
                    ))
                })
                .buffer_unordered(RECOVERY_CONCURRENCY)
                .collect()
                .await;
            for o in outcomes {
                let (active, ended_now) = o?;
                kept += usize::from(active);
                ended += usize::from(ended_now);
            }
        }
        // The outbox: every revocation not yet confirmed (also those of sessions ended just now).
        let outstanding = self.requeue_outstanding().await?;
        let ssh: Vec<_> = self
            .providers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter_map(|p| match p {
                TargetProvider::Ssh(p) => Some(p.clone()),
                _ => None,
            })
            .collect();
        for p in ssh {
            if let Err(e) = p.publish().await {
                tracing::warn!(error = %e, "rewriting a KRL at start failed");
            }
        }
        self.ready.store(true, Ordering::Release);
        tracing::info!(
            ended_while_down = ended,
            active = kept,
            revocations_requeued = outstanding,
            "recovery finished"
        );
        Ok(written_key)
    }

    async fn bootstrap_admin(&self, key: Option<String>) -> anyhow::Result<Option<String>> {
        let existing = self.store.principals(None, 1000).await?;
        if existing.iter().any(|p| p.name == "admin") {
            return Ok(None);
        }
        let generated = key.is_none();
        let key = match key {
            Some(k) if crate::directory::well_formed(&k) => k,
            Some(_) => anyhow::bail!(
                "STINT_BOOTSTRAP_ADMIN_KEY must be `stint_` followed by 43 base64url characters \
                 (make one with `stint keygen`)"
            ),
            None => new_api_key()?,
        };
        self.insert_principal(
            "system",
            "admin",
            PrincipalKind::Admin,
            vec!["admins".into()],
            &key,
        )
        .await?;
        Ok(generated.then_some(key))
    }

    async fn rebuild_tokens(&self, s: &Session, now: OffsetDateTime) -> anyhow::Result<()> {
        let audience = match self.target_doc(&s.target).await {
            Ok(t) => audience(&t),
            Err(_) => s.target.clone(),
        };
        let Some(live) = self.live.session(&s.id) else {
            return Ok(());
        };
        for c in &s.credentials {
            if c.kind != CredentialKind::Jwt || c.revocation != Revocation::None || c.expires_at <= now {
                continue;
            }
            if let Some(h) = handle_to_hash(&c.handle) {
                let entry = self.token_entry(s, c, &audience, live.clone());
                // A restart does not repeat a first-use event that was already written.
                entry
                    .first_use_pending
                    .store(c.first_used_at.is_none(), Ordering::Release);
                self.live.insert_token(h, entry);
            }
        }
        Ok(())
    }

    fn token_entry(
        &self,
        s: &Session,
        c: &Credential,
        audience: &str,
        live: Arc<crate::live::LiveSession>,
    ) -> TokenEntry {
        TokenEntry {
            session: live,
            jti: c.id.clone(),
            exp_ms: i64::try_from(c.expires_at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
            claims: Introspection {
                active: true,
                sub: Some(s.principal.to_string()),
                aud: Some(audience.to_owned()),
                sid: Some(s.id.to_string()),
                scope: Some(scope_for(&s.target)),
                exp: Some(c.expires_at.unix_timestamp()),
                iat: Some(c.issued_at.unix_timestamp()),
                jti: Some(c.id.to_string()),
                iss: Some(self.issuer.clone()),
                token_type: Some("Bearer".into()),
            },
            first_use_pending: AtomicBool::new(true),
        }
    }

    // ----- the one path every session change takes --------------------------------------------

    /// The one way this service writes: commits the batch and tells the event stream that new audit
    /// records exist.
    async fn commit(&self, batch: Batch) -> ApiResult<Vec<stint_core::AuditRecord>> {
        let records = self.store.commit(batch).await?;
        if let Some(last) = records.last() {
            self.events.advance(last.seq);
        }
        Ok(records)
    }

    /// Carries out a transition's effects that must precede its commit: a session that reached a
    /// final state is killed in memory first (fail closed), and credentials that live only in this
    /// process (JWTs) are revoked at once, their confirmation committed with the session. External
    /// credentials stay `pending` (their outbox rows are written by the same commit) and come back as
    /// jobs to queue once the commit succeeded. Returns the session, every audit event to commit with
    /// it, and those jobs.
    fn carry_out(
        &self,
        mut s: Session,
        effects: Vec<Effect>,
        now: OffsetDateTime,
    ) -> ApiResult<(Session, Vec<PendingAudit>, Vec<Job>)> {
        if s.state.is_final() {
            self.live.kill(&s.id);
        }
        let mut audit = Vec::new();
        let mut outcomes = Vec::new();
        let mut jobs = Vec::new();
        for e in effects {
            match e {
                Effect::Audit(a) => audit.push(a),
                Effect::Revoke {
                    credential,
                    kind: CredentialKind::Jwt,
                    handle,
                } => {
                    use providers::Provider as _;
                    self.jwt.revoke_in_process(&handle);
                    outcomes.push(Event::RevocationConfirmed { credential });
                }
                Effect::Revoke {
                    credential,
                    kind,
                    handle,
                } => jobs.push(Job {
                    session: s.id.clone(),
                    credential,
                    target: s.target.clone(),
                    kind,
                    handle,
                }),
            }
        }
        for event in outcomes {
            let (next, fx) = s.apply(event, now)?;
            s = next;
            audit.extend(fx.into_iter().filter_map(|e| match e {
                Effect::Audit(a) => Some(a),
                Effect::Revoke { .. } => None,
            }));
        }
        Ok((s, audit, jobs))
    }

    /// Persists a transition's result and carries out its effects. The caller holds the session's
    /// lock. Returns the session as committed.
    async fn finish(
        &self,
        old: &Session,
        version: i64,
        s: Session,
        effects: Vec<Effect>,
        now: OffsetDateTime,
    ) -> ApiResult<Session> {
        let (s, audit, jobs) = self.carry_out(s, effects, now)?;
        if s == *old && audit.is_empty() {
            self.live.sync(&s);
            self.scheduler.set(&s.id, s.next_wake());
            return Ok(s);
        }
        let batch = Batch {
            sessions: vec![SessionWrite {
                session: s.clone(),
                expected_version: Some(version),
            }],
            audit,
            ..Default::default()
        };
        let records = self.commit(batch).await?;
        m::audit_written(records.len());
        self.after_commit(old, &s, now);
        for job in jobs {
            self.revoker.enqueue(job);
        }
        Ok(s)
    }

    fn after_commit(&self, old: &Session, s: &Session, now: OffsetDateTime) {
        self.live.sync(s);
        self.scheduler.set(&s.id, s.next_wake());
        if old.state != s.state {
            m::session_state_changed(old, s, now);
        }
        metrics::gauge!(m::SESSIONS_ACTIVE).set(self.live.active_count() as f64);
    }

    /// Loads a session under its lock, folds in uses not yet written, applies `events` (made by
    /// `plan` from the loaded session), persists, and runs `on_commit` before releasing the lock.
    async fn mutate<P, C, T>(&self, id: &SessionId, plan: P, on_commit: C) -> ApiResult<(Session, T)>
    where
        P: FnOnce(&Session, OffsetDateTime) -> ApiResult<Vec<Event>>,
        C: FnOnce(&Session) -> T,
    {
        let _g = self.lock(id).await;
        let v = self
            .store
            .session(id)
            .await?
            .ok_or_else(|| ApiError::not_found("session"))?;
        let now = self.clock.now();
        let events = plan(&v.session, now)?;
        let (s, fx, usage) = self.apply_all(&v.session, events, now)?;
        let s = self.finish(&v.session, v.version, s, fx, now).await?;
        if let (Some(u), Some(l)) = (usage, self.live.session(id)) {
            l.usage_written(&u);
        }
        let out = on_commit(&s);
        Ok((s, out))
    }

    fn apply_all(
        &self,
        start: &Session,
        events: Vec<Event>,
        now: OffsetDateTime,
    ) -> ApiResult<(Session, Vec<Effect>, Option<Usage>)> {
        let mut s = start.clone();
        let mut fx = Vec::new();
        let mut written = None;
        if let Some(live) = self.live.session(&s.id)
            && let Some(u) = live.pending_usage()
            && let (Some(cred), Some(first), Some(last)) = (u.credential.clone(), u.first, u.last)
        {
            let ev = Event::Used {
                credential: cred,
                count: u.count,
                callers: u.callers.iter().cloned().collect(),
                first_at: first,
                last_at: last,
                first_use: false,
            };
            if let Ok((next, more)) = s.apply(ev, now) {
                s = next;
                fx.extend(more);
            }
            // Uses that can no longer be recorded (session gone) are dropped either way.
            written = Some(u);
        }
        for ev in events {
            let (next, more) = s.apply(ev, now)?;
            s = next;
            fx.extend(more);
        }
        Ok((s, fx, written))
    }

    // ----- principals -------------------------------------------------------------------------

    /// Creates a principal and returns it with its API key.
    pub async fn create_principal(
        &self,
        caller: &Caller,
        req: CreatePrincipal,
    ) -> ApiResult<(PrincipalRecord, String)> {
        let _gate = self.admin_gate.write().await;
        require_admin(caller)?;
        check_name("`name`", &req.name)?;
        check_groups(&req.groups)?;
        let key = new_api_key().map_err(|e| {
            tracing::error!(error = %e, "key generation failed");
            ApiError::internal()
        })?;
        let p = self
            .insert_principal(&caller.id, &req.name, req.kind, req.groups, &key)
            .await?;
        Ok((p, key))
    }

    /// Creates a principal holding `key` (stored only as its hash), with its audit event, and makes
    /// the key work at once.
    async fn insert_principal(
        &self,
        actor: &str,
        name: &str,
        kind: PrincipalKind,
        groups: Vec<String>,
        key: &str,
    ) -> ApiResult<PrincipalRecord> {
        let now = self.clock.now();
        let p = PrincipalRecord {
            id: PrincipalId::from_u128(new_u128()).to_string(),
            name: name.to_owned(),
            kind: kind.as_str().into(),
            groups,
            key_hash: Some(key_hash(key)),
            created_at: now,
            deleted_at: None,
        };
        let details = json!({"principal": p.id, "name": p.name, "kind": p.kind, "groups": p.groups});
        self.commit(Batch {
            audit: vec![event(now, actor, "principal.created", details)],
            principals: vec![PrincipalWrite::Insert(p.clone())],
            ..Default::default()
        })
        .await?;
        self.directory.upsert(p.clone());
        Ok(p)
    }

    /// A principal visible to the caller (admins: all; others: themselves).
    pub async fn principal(&self, caller: &Caller, id: &str) -> ApiResult<PrincipalRecord> {
        if !is_admin(caller) && caller.id != id {
            return Err(ApiError::not_found("principal"));
        }
        self.store
            .principal(id)
            .await?
            .ok_or_else(|| ApiError::not_found("principal"))
    }

    /// Lists principals (admin).
    pub async fn principals(
        &self,
        caller: &Caller,
        after: Option<&str>,
        limit: u32,
    ) -> ApiResult<Vec<PrincipalRecord>> {
        require_admin(caller)?;
        Ok(self.store.principals(after, limit).await?)
    }

    /// A principal that exists (404 otherwise) and is not offboarded (409 otherwise).
    async fn live_principal(&self, id: &str) -> ApiResult<PrincipalRecord> {
        let p = self
            .store
            .principal(id)
            .await?
            .ok_or_else(|| ApiError::not_found("principal"))?;
        if p.deleted_at.is_some() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "principal_offboarded",
                "principal is offboarded",
            ));
        }
        Ok(p)
    }

    /// Replaces a principal's API key; the old key stops working at once.
    pub async fn rotate_key(&self, caller: &Caller, id: &str) -> ApiResult<String> {
        require_admin(caller)?;
        let _gate = self.admin_gate.write().await;
        let mut p = self.live_principal(id).await?;
        let key = new_api_key().map_err(|_| ApiError::internal())?;
        p.key_hash = Some(key_hash(&key));
        let now = self.clock.now();
        self.commit(Batch {
            audit: vec![event(
                now,
                &caller.id,
                "principal.key_rotated",
                json!({"principal": p.id}),
            )],
            principals: vec![PrincipalWrite::Update(p.clone())],
            ..Default::default()
        })
        .await?;
        self.directory.upsert(p);
        Ok(key)
    }

    /// Offboards a principal: its key stops working, its active sessions end (`offboarded`) and its
    /// pending ones are canceled — all in one transaction.
    pub async fn offboard(&self, caller: &Caller, id: &str) -> ApiResult<PrincipalRecord> {
        require_admin(caller)?;
        let _gate = self.admin_gate.write().await;
        if caller.id == id {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "cannot_offboard_self",
                "an admin cannot offboard itself",
            ));
        }
        let mut p = self.live_principal(id).await?;
        let now = self.clock.now();
        p.key_hash = None;
        p.deleted_at = Some(now);
        // Kill the key first: from here on nothing new can start under this principal.
        self.directory.upsert(p.clone());
        let sessions = self
            .open_sessions(SessionFilter {
                principal: Some(p.id.clone()),
                ..Default::default()
            })
            .await?;
        let extra = Batch {
            principals: vec![PrincipalWrite::Update(p.clone())],
            audit: vec![event(
                now,
                &caller.id,
                "principal.offboarded",
                json!({"principal": p.id, "name": p.name, "sessions": sessions.len()}),
            )],
            ..Default::default()
        };
        self.end_all(
            sessions,
            Actor::Principal(PrincipalId::parse(&caller.id).ok_or_else(ApiError::internal)?),
            EndReason::Offboarded,
            extra,
        )
        .await?;
        Ok(p)
    }

    async fn open_sessions(&self, base: SessionFilter) -> ApiResult<Vec<SessionId>> {
        let mut ids = Vec::new();
        for st in [State::Requested, State::Scheduled, State::Active] {
            let mut after = None;
            loop {
                let page = self
                    .store
                    .sessions(&SessionFilter {
                        state: Some(st),
                        after: after.clone(),
                        limit: 1000,
                        ..base.clone()
                    })
                    .await?;
                let Some(last) = page.last() else { break };
                after = Some(last.session.id.to_string());
                ids.extend(page.into_iter().map(|v| v.session.id));
            }
        }
        Ok(ids)
    }

    /// Ends (or cancels) every listed session and commits `extra` with them, atomically.
    async fn end_all(
        &self,
        ids: Vec<SessionId>,
        by: Actor,
        reason: EndReason,
        extra: Batch,
    ) -> ApiResult<()> {
        self.apply_to_all(ids, Event::End { by, reason }, extra).await
    }

    /// Applies `event` to every listed open session and commits `extra` with them, atomically.
    async fn apply_to_all(&self, ids: Vec<SessionId>, event: Event, extra: Batch) -> ApiResult<()> {
        let _guards = self.lock_many(&ids).await;
        let now = self.clock.now();
        // `extra` first: its events (a hook's arrival, say) precede the sessions' own.
        let mut changes = Changes {
            batch: extra,
            ..Changes::default()
        };
        for id in &ids {
            let Some(Versioned { session, version }) = self.store.session(id).await? else {
                continue;
            };
            if session.state.is_final() {
                continue;
            }
            let (s, fx, usage) = match self.apply_all(&session, vec![event.clone()], now) {
                Ok(r) => r,
                // A limit that changes nothing on this session is not an error.
                Err(e) if matches!(event, Event::Limit { .. }) => {
                    tracing::debug!(session = %session.id, code = e.code, "limit not applied");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let (s, audit, more) = self.carry_out(s, fx, now)?;
            changes.add(session, version, s, audit, more, usage);
        }
        self.commit_all(changes, now).await
    }

    /// Commits many sessions' transitions at once, then carries out what follows each commit.
    async fn commit_all(&self, c: Changes, now: OffsetDateTime) -> ApiResult<()> {
        let records = self.commit(c.batch).await?;
        m::audit_written(records.len());
        for (old, s) in &c.done {
            self.after_commit(old, s, now);
        }
        for job in c.jobs {
            self.revoker.enqueue(job);
        }
        for (id, u) in c.usages {
            if let Some(l) = self.live.session(&id) {
                l.usage_written(&u);
            }
        }
        Ok(())
    }

    // ----- targets ----------------------------------------------------------------------------

    /// A target from the in-memory copy (loaded at start; every change goes through this service
    /// under the admin gate and updates it after its commit).
    async fn target_doc(&self, name: &str) -> ApiResult<TargetDoc> {
        self.target_cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::not_found("target"))
    }

    fn cache_target(&self, doc: Option<TargetDoc>, name: &str) {
        let mut cache = self.target_cache.write().unwrap_or_else(|e| e.into_inner());
        match doc {
            Some(d) => cache.insert(name.to_owned(), d),
            None => cache.remove(name),
        };
    }

    /// Creates a target (admin).
    pub async fn create_target(&self, caller: &Caller, req: CreateTarget) -> ApiResult<TargetDoc> {
        require_admin(caller)?;
        let _gate = self.admin_gate.write().await;
        check_name("`name`", &req.name)?;
        check_groups(&req.requester_groups)?;
        check_groups(&req.approver_groups)?;
        check_groups(&req.tags)?;
        let max = stint_core::session::MAX_DURATION_S;
        if req.max_ttl_s == 0 || req.max_ttl_s > max {
            return Err(ApiError::invalid(format!(
                "`max_ttl_s` must be between 1 and {max}"
            )));
        }
        // A database login or an SSH certificate lives for the session's window unless told otherwise.
        let default_ttl = match req.kind {
            TargetKind::Jwt => self.cfg.default_token_ttl_s.min(req.max_ttl_s),
            _ => req.max_ttl_s,
        };
        let token_ttl_s = req.token_ttl_s.unwrap_or(default_ttl);
        if token_ttl_s == 0 || token_ttl_s > req.max_ttl_s {
            return Err(ApiError::invalid(
                "`token_ttl_s` must be between 1 and `max_ttl_s`",
            ));
        }
        let approvals_required = req.approvals_required.unwrap_or(0);
        if approvals_required > 10 {
            return Err(ApiError::invalid("`approvals_required` must be at most 10"));
        }
        if approvals_required > 0 && req.approver_groups.is_empty() {
            return Err(ApiError::invalid(
                "`approvals_required` > 0 needs `approver_groups`",
            ));
        }
        if let Some(env) = &req.environment {
            check_text("environment", env, false)?;
        }
        let (config, secrets, ca_public_key) = self.target_config(req.kind, req.config)?;
        let now = self.clock.now();
        let doc = TargetDoc {
            name: req.name,
            kind: req.kind,
            max_ttl_s: req.max_ttl_s,
            token_ttl_s,
            requester_groups: req.requester_groups,
            approver_groups: req.approver_groups,
            approvals_required,
            environment: req.environment,
            tags: req.tags,
            require_binding: req.require_binding,
            config,
            created_at: now,
            ca_public_key,
        };
        let provider = self
            .build_provider(&doc, &secrets)
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        let sealed = match (&secrets.admin_url, &secrets.ca_private_key) {
            (None, None) => None,
            _ => {
                let plain =
                    zeroize::Zeroizing::new(serde_json::to_vec(&secrets).map_err(|_| ApiError::internal())?);
                Some(
                    self.kek
                        .seal(&doc.name, &plain)
                        .map_err(|_| ApiError::internal())?,
                )
            }
        };
        let text = serde_json::to_string(&StoredTarget {
            doc: doc.clone(),
            sealed: sealed.clone(),
        })
        .map_err(|_| ApiError::internal())?;
        self.commit(Batch {
            targets: vec![TargetWrite::Insert(TargetRecord {
                name: doc.name.clone(),
                kind: doc.kind.as_str().into(),
                doc: text,
                created_at: now,
            })],
            audit: vec![event(
                now,
                &caller.id,
                "target.created",
                serde_json::to_value(&doc).unwrap_or_default(),
            )],
            ..Default::default()
        })
        .await?;
        if let TargetProvider::Ssh(p) = &provider
            && let Err(e) = p.publish().await
        {
            // The target exists; its host must get a KRL before it trusts the CA.
            tracing::warn!(target = %doc.name, error = %e, "writing the first KRL failed");
        }
        self.set_provider(&doc.name, Some(provider));
        self.cache_target(Some(doc.clone()), &doc.name);
        self.rebuild_policy();
        Ok(doc)
    }

    /// Validates a target's `config` for its kind: the public part to store and show, the write-only
    /// secrets to seal, and (ssh) the CA's public key.
    fn target_config(
        &self,
        kind: TargetKind,
        raw: Option<serde_json::Value>,
    ) -> ApiResult<(serde_json::Value, TargetSecrets, Option<String>)> {
        let raw = match raw {
            None => json!({}),
            Some(v @ serde_json::Value::Object(_)) => v,
            Some(_) => return Err(ApiError::invalid("`config` must be an object")),
        };
        match kind {
            TargetKind::Jwt => {
                let serde_json::Value::Object(map) = &raw else {
                    return Err(ApiError::invalid("`config` must be an object"));
                };
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("audience", serde_json::Value::String(a)) if !a.is_empty() && a.len() <= 256 => {}
                        ("audience", _) => {
                            return Err(ApiError::invalid("`config.audience` must be a non-empty string"));
                        }
                        (k, _) => {
                            return Err(ApiError::invalid(format!(
                                "unknown `config` field `{k}` for a jwt target"
                            )));
                        }
                    }
                }
                Ok((raw, TargetSecrets::default(), None))
            }
            TargetKind::Postgres => {
                let (cfg, url) = providers::postgres::parse_config(raw).map_err(ApiError::invalid)?;
                let public = serde_json::to_value(&cfg).map_err(|_| ApiError::internal())?;
                use secrecy::ExposeSecret;
                let secrets = TargetSecrets {
                    admin_url: Some(url.expose_secret().to_owned()),
                    ca_private_key: None,
                };
                Ok((public, secrets, None))
            }
            TargetKind::Ssh => {
                let (cfg, ca) = providers::ssh::parse_config(raw).map_err(ApiError::invalid)?;
                let public = serde_json::to_value(&cfg).map_err(|_| ApiError::internal())?;
                let pem = ca.to_openssh().map_err(|_| ApiError::internal())?;
                let secrets = TargetSecrets {
                    admin_url: None,
                    ca_private_key: Some(pem.to_string()),
                };
                Ok((public, secrets, Some(ca.public_key_openssh())))
            }
        }
    }

    /// Builds a target's provider from its document and opened secrets.
    fn build_provider(
        &self,
        doc: &TargetDoc,
        secrets: &TargetSecrets,
    ) -> Result<TargetProvider, ProviderError> {
        match doc.kind {
            TargetKind::Jwt => Ok(TargetProvider::Jwt(self.jwt.clone())),
            TargetKind::Postgres => {
                let cfg: providers::postgres::PostgresConfig = serde_json::from_value(doc.config.clone())
                    .map_err(|e| ProviderError::Config(format!("stored config: {e}")))?;
                let url = secrets
                    .admin_url
                    .as_deref()
                    .ok_or_else(|| ProviderError::Config("no admin_url".into()))?;
                let p = providers::postgres::PostgresProvider::new(
                    &doc.name,
                    cfg,
                    &secrecy::SecretString::from(url.to_owned()),
                    std::time::Duration::from_millis(self.cfg.target_connect_timeout_ms),
                )?;
                Ok(TargetProvider::Postgres(Arc::new(p)))
            }
            TargetKind::Ssh => {
                let cfg: providers::ssh::SshConfig = serde_json::from_value(doc.config.clone())
                    .map_err(|e| ProviderError::Config(format!("stored config: {e}")))?;
                let pem = secrets
                    .ca_private_key
                    .as_deref()
                    .ok_or_else(|| ProviderError::Config("no CA key".into()))?;
                let ca =
                    stint_ssh::UserCa::from_openssh(pem).map_err(|e| ProviderError::Config(e.to_string()))?;
                Ok(TargetProvider::Ssh(Arc::new(providers::ssh::SshProvider::new(
                    &doc.name,
                    cfg,
                    ca,
                    self.store.clone(),
                    self.clock.clone(),
                ))))
            }
        }
    }

    fn set_provider(&self, name: &str, p: Option<TargetProvider>) {
        let mut map = self.providers.write().unwrap_or_else(|e| e.into_inner());
        match p {
            Some(p) => map.insert(name.to_owned(), p),
            None => map.remove(name),
        };
    }

    fn provider(&self, name: &str) -> Option<TargetProvider> {
        self.providers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// A target by name (any caller; never secrets).
    pub async fn target(&self, name: &str) -> ApiResult<TargetDoc> {
        self.target_doc(name).await
    }

    /// Lists targets.
    pub async fn targets(&self, after: Option<&str>, limit: u32) -> ApiResult<Vec<TargetDoc>> {
        let cache = self.target_cache.read().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<&String> = cache
            .keys()
            .filter(|n| after.is_none_or(|a| n.as_str() > a))
            .collect();
        names.sort();
        Ok(names
            .into_iter()
            .take(limit as usize)
            .filter_map(|n| cache.get(n).cloned())
            .collect())
    }

    /// Changes a target's limits and groups (admin). Live sessions keep their deadline unless it
    /// is later than the new `max_ttl_s` allows from activation; it never grows.
    pub async fn patch_target(&self, caller: &Caller, name: &str, p: PatchTarget) -> ApiResult<TargetDoc> {
        require_admin(caller)?;
        let _gate = self.admin_gate.write().await;
        let mut doc = self.target_doc(name).await?;
        if let Some(g) = &p.requester_groups {
            check_groups(g)?;
            doc.requester_groups = g.clone();
        }
        if let Some(g) = &p.approver_groups {
            check_groups(g)?;
            doc.approver_groups = g.clone();
        }
        if let Some(n) = p.approvals_required {
            if n > 10 {
                return Err(ApiError::invalid("`approvals_required` must be at most 10"));
            }
            doc.approvals_required = n;
        }
        if let Some(m) = p.max_ttl_s {
            if m == 0 || m > stint_core::session::MAX_DURATION_S {
                return Err(ApiError::invalid("`max_ttl_s` out of range"));
            }
            doc.max_ttl_s = m;
        }
        if let Some(t) = p.token_ttl_s {
            if t == 0 || t > stint_core::session::MAX_DURATION_S {
                return Err(ApiError::invalid("`token_ttl_s` out of range"));
            }
            doc.token_ttl_s = t;
        }
        doc.token_ttl_s = doc.token_ttl_s.min(doc.max_ttl_s);
        if doc.token_ttl_s == 0 {
            return Err(ApiError::invalid("`token_ttl_s` must be at least 1"));
        }
        if doc.approvals_required > 0 && doc.approver_groups.is_empty() {
            return Err(ApiError::invalid(
                "`approvals_required` > 0 needs `approver_groups`",
            ));
        }
        let now = self.clock.now();
        // Keep the sealed part as it is stored.
        let sealed = match self.store.target(name).await? {
            Some(r) => {
                serde_json::from_str::<StoredTarget>(&r.doc)
                    .map_err(|_| ApiError::internal())?
                    .sealed
            }
            None => return Err(ApiError::not_found("target")),
        };
        let text = serde_json::to_string(&StoredTarget {
            doc: doc.clone(),
            sealed,
        })
        .map_err(|_| ApiError::internal())?;
        let extra = Batch {
            targets: vec![TargetWrite::Update(TargetRecord {
                name: doc.name.clone(),
                kind: doc.kind.as_str().into(),
                doc: text,
                created_at: doc.created_at,
            })],
            audit: vec![event(
                now,
                &caller.id,
                "target.changed",
                json!({"target": doc.name, "change": p}),
            )],
            ..Default::default()
        };
        // Shrunk limits apply to open sessions at once (in the same transaction); nothing grows.
        let ids = self
            .open_sessions(SessionFilter {
                target: Some(name.to_owned()),
                ..Default::default()
            })
            .await?;
        let by = Actor::Principal(Self::caller_id(caller)?);
        let limit = Event::Limit {
            max_ttl_s: doc.max_ttl_s,
            token_ttl_s: doc.token_ttl_s,
            by,
        };
        self.apply_to_all(ids, limit, extra).await?;
        self.cache_target(Some(doc.clone()), name);
        self.rebuild_policy();
        Ok(doc)
    }

    /// Deletes a target and ends all its sessions (reason `revoked`), atomically (admin).
    pub async fn delete_target(&self, caller: &Caller, name: &str) -> ApiResult<()> {
        require_admin(caller)?;
        let _gate = self.admin_gate.write().await;
        let doc = self.target_doc(name).await?;
        let now = self.clock.now();
        let ids = self
            .open_sessions(SessionFilter {
                target: Some(name.to_owned()),
                ..Default::default()
            })
            .await?;
        if doc.kind != TargetKind::Jwt {
            // Revoking a role or certificate needs the target's admin URL or CA: the target stays
            // until nothing of it is live or waiting for revocation.
            let outstanding = self
                .store
                .outstanding_revocations()
                .await?
                .iter()
                .filter(|r| r.target == name)
                .count();
            if !ids.is_empty() || outstanding > 0 {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "target_busy",
                    format!(
                        "end the target's {} open session(s) and let its {outstanding} revocation(s) \
                         complete before deleting it",
                        ids.len()
                    ),
                ));
            }
        }
        let by = Actor::Principal(PrincipalId::parse(&caller.id).ok_or_else(ApiError::internal)?);
        let extra = Batch {
            targets: vec![TargetWrite::Delete(name.to_owned())],
            audit: vec![event(
                now,
                &caller.id,
                "target.deleted",
                json!({"target": name, "sessions": ids.len()}),
            )],
            ..Default::default()
        };
        self.end_all(ids, by, EndReason::Revoked, extra).await?;
        self.cache_target(None, name);
        self.set_provider(name, None);
        self.rebuild_policy();
        Ok(())
    }

    // ----- sessions ---------------------------------------------------------------------------

    /// Eligible to approve (or deny, or end) this session: the `approve` action under policy.
    fn may_approve(&self, caller: &PrincipalRecord, target: &TargetDoc, s: &Session) -> bool {
        if is_admin(caller) {
            return true;
        }
        let Ok(engine) = self.engine() else { return false };
        let ctx = crate::policy::session_context(s, self.clock.now(), self.offset());
        engine
            .authorize(
                &crate::policy::principal_info(caller),
                stint_policy::Action::Approve,
                &crate::policy::target_info(target),
                &ctx,
            )
            .allow
    }

    /// Whether the caller may see the session; also tells if it may act as its approver.
    async fn visibility(&self, caller: &Caller, s: &Session) -> ApiResult<(bool, bool)> {
        if is_admin(caller) {
            return Ok((true, true));
        }
        let own = s.principal.as_str() == caller.id;
        // A principal never approves its own session; others are eligible when policy says so.
        let approver = !own
            && match self.target_doc(&s.target).await {
                Ok(t) => self.may_approve(caller, &t, s),
                Err(_) => false,
            };
        Ok((own || approver, approver))
    }

    /// Requests a session.
    pub async fn request(self: &Arc<Self>, caller: &Caller, req: CreateSession) -> ApiResult<Session> {
        Ok(self.request_with_credential(caller, req).await?.0)
    }

    /// Requests a session and, when `req.credential` asks for it and the session is active at once,
    /// issues its JWT in the same commit.
    pub async fn request_with_credential(
        self: &Arc<Self>,
        caller: &Caller,
        req: CreateSession,
    ) -> ApiResult<(Session, Option<IssuedJwt>)> {
        check_text("reason", &req.reason, true)?;
        let _gate = self.admin_gate.read().await;
        // The caller authenticated before the gate: it may have been offboarded meanwhile.
        if !self.directory.is_live(&caller.id) {
            return Err(ApiError::unauthenticated());
        }
        let target = match self.target_doc(&req.target).await {
            Ok(t) => t,
            Err(e) if e.status == StatusCode::NOT_FOUND => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unknown_target",
                    "no such target",
                ));
            }
            Err(e) => return Err(e),
        };

        let binding = req.binding.clone().unwrap_or(Binding {
            kind: BindingKind::None,
            reference: None,
        });
        if let Some(r) = &binding.reference
            && (r.is_empty() || r.len() > 200)
        {
            return Err(ApiError::invalid("`binding.ref` must be 1 to 200 characters"));
        }
        if binding.kind != BindingKind::None && binding.reference.is_none() {
            return Err(ApiError::invalid(
                "`binding.ref` is required for this binding kind",
            ));
        }
        if req.credential && target.kind != TargetKind::Jwt {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "credential_unsupported",
                "`credential: true` issues JWTs only; fetch other kinds with POST /v1/sessions/{id}/credentials",
            ));
        }
        if req.credential && req.break_glass {
            return Err(ApiError::invalid(
                "`credential: true` cannot be combined with `break_glass`: each break-glass credential needs a step-up nonce",
            ));
        }
        if let Some(required) = target.require_binding
            && required != BindingKind::None
            && binding.kind != required
        {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "binding_required",
                format!("target `{}` requires a binding", target.name),
            ));
        }
        let now = self.clock.now();
        let new_session = |approvals_required: u32| NewSession {
            id: SessionId::from_u128(new_u128()),
            principal: PrincipalId::parse(&caller.id).unwrap_or_else(|| PrincipalId::from_u128(0)),
            target: target.name.clone(),
            reason: req.reason.clone(),
            ttl_s: req.ttl_s,
            max_ttl_s: target.max_ttl_s,
            token_ttl_s: target.token_ttl_s,
            approvals_required,
            approval_window_s: self.cfg.approval_window_s,
            binding: binding.clone(),
            not_before: req.not_before,
            idle_timeout_s: req.idle_timeout_s,
            max_uses: req.max_uses,
            break_glass: req.break_glass,
        };
        // Malformed requests are refused (422) before policy is asked, so a denial is never
        // recorded for a request that could not have been made.
        Session::request(new_session(0), now)?;
        let approvals_required = self.decide_request(caller, &target, &req, &binding, now).await?;
        if let Some(r) = &binding.reference
            && self
                .store
                .seen("closed_ref", &crate::hooks::closed_ref_key(binding.kind, r), now)
                .await?
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "binding_closed",
                "the activity this session is bound to has already ended",
            ));
        }
        PrincipalId::parse(&caller.id).ok_or_else(ApiError::internal)?;
        let (mut s, mut fx) = Session::request(new_session(approvals_required), now)?;
        let _g = self.lock(&s.id).await;
        let audience = audience(&target);
        let jti = CredentialId::from_u128(new_u128());
        let mut signed = None;
        if req.credential && s.state == State::Active {
            let (event, jwt) = self.sign_jwt(&s, &audience, &jti, now)?;
            let (next, more) = s.apply(event, now)?;
            s = next;
            fx.extend(more);
            signed = Some(jwt);
        }
        let audit = fx
            .into_iter()
            .filter_map(|e| match e {
                Effect::Audit(a) => Some(a),
                Effect::Revoke { .. } => None,
            })
            .collect();
        let records = self
            .commit(Batch {
                sessions: vec![SessionWrite {
                    session: s.clone(),
                    expected_version: None,
                }],
                audit,
                documents: if s.break_glass {
                    // A break-glass session waits in the review queue until a human reviews it.
                    vec![stint_store::DocumentWrite::Insert(stint_store::DocumentRecord {
                        kind: "review_pending".into(),
                        name: s.id.to_string(),
                        doc: "{}".into(),
                        created_at: now,
                    })]
                } else {
                    Vec::new()
                },
                ..Default::default()
            })
            .await?;
        m::audit_written(records.len());
        metrics::counter!(m::SESSIONS_REQUESTED).increment(1);
        if s.break_glass {
            self.notify_break_glass(&s, &caller.name);
        }
        let placeholder = Session {
            state: State::Requested,
            ..s.clone()
        };
        self.after_commit(&placeholder, &s, now);
        let issued = match signed {
            Some(jwt) => {
                let issued = self
                    .index_jwt(&s, &jti, &audience, jwt)
                    .ok_or_else(ApiError::internal)?;
                metrics::counter!(m::CREDENTIALS_ISSUED, "kind" => "jwt").increment(1);
                Some(issued)
            }
            None => None,
        };
        Ok((s, issued))
    }

    /// A session the caller may see.
    pub async fn session(&self, caller: &Caller, id: &str) -> ApiResult<Session> {
        let id = SessionId::parse(id).ok_or_else(|| ApiError::not_found("session"))?;
        let v = self
            .store
            .session(&id)
            .await?
            .ok_or_else(|| ApiError::not_found("session"))?;
        if !self.visibility(caller, &v.session).await?.0 {
            return Err(ApiError::not_found("session"));
        }
        Ok(v.session)
    }

    /// Lists sessions the caller may see.
    pub async fn sessions(
        &self,
        caller: &Caller,
        mut f: SessionFilter,
    ) -> ApiResult<(Vec<Session>, Option<String>)> {
        let limit = f.limit;
        if !is_admin(caller) {
            // Non-admins see their own sessions and those of targets they approve.
            let approvable: Vec<String> = self
                .targets(None, 1000)
                .await?
                .into_iter()
                .filter(|t| intersects(&caller.groups, &t.approver_groups))
                .map(|t| t.name)
                .collect();
            if approvable.is_empty() {
                if f.principal.as_deref().is_some_and(|p| p != caller.id) {
                    return Ok((Vec::new(), None));
                }
                f.principal = Some(caller.id.clone());
            }
            let page = self.store.sessions(&f).await?;
            let next = (page.len() == limit as usize)
                .then(|| page.last().map(|v| v.session.id.to_string()))
                .flatten();
            let items = page
                .into_iter()
                .map(|v| v.session)
                .filter(|s| s.principal.as_str() == caller.id || approvable.contains(&s.target))
                .collect();
            return Ok((items, next));
        }
        let page = self.store.sessions(&f).await?;
        let next = (page.len() == limit as usize)
            .then(|| page.last().map(|v| v.session.id.to_string()))
            .flatten();
        Ok((page.into_iter().map(|v| v.session).collect(), next))
    }

    /// Loads a session the caller may see; returns its id, whether the caller owns it, whether the
    /// caller may act as its approver, and the session as loaded.
    async fn parse_and_authorize(
        &self,
        caller: &Caller,
        id: &str,
    ) -> ApiResult<(SessionId, bool, bool, Session)> {
        let sid = SessionId::parse(id).ok_or_else(|| ApiError::not_found("session"))?;
        let v = self
            .store
            .session(&sid)
            .await?
            .ok_or_else(|| ApiError::not_found("session"))?;
        let (visible, approver) = self.visibility(caller, &v.session).await?;
        if !visible {
            return Err(ApiError::not_found("session"));
        }
        let own = v.session.principal.as_str() == caller.id;
        Ok((sid, own, approver, v.session))
    }

    fn caller_id(caller: &Caller) -> ApiResult<PrincipalId> {
        PrincipalId::parse(&caller.id).ok_or_else(ApiError::internal)
    }

    /// Approves a session.
    pub async fn approve(&self, caller: &Caller, id: &str, comment: Option<String>) -> ApiResult<Session> {
        if let Some(c) = &comment {
            check_text("comment", c, false)?;
        }
        let (sid, own, approver, _) = self.parse_and_authorize(caller, id).await?;
        let me = Self::caller_id(caller)?;
        if own && !approver {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "self_approval",
                "a requester cannot approve its own session",
            ));
        }
        if !approver {
            return Err(ApiError::forbidden("caller is not an approver for this target"));
        }
        let (s, ()) = self
            .mutate(
                &sid,
                |_, _| {
                    Ok(vec![Event::Approve {
                        approver: me,
                        comment,
                    }])
                },
                |_| (),
            )
            .await?;
        Ok(s)
    }

    /// Denies a session.
    pub async fn deny(&self, caller: &Caller, id: &str, reason: String) -> ApiResult<Session> {
        check_text("reason", &reason, true)?;
        let (sid, _, approver, _) = self.parse_and_authorize(caller, id).await?;
        if !approver {
            return Err(ApiError::forbidden("caller is not an approver for this target"));
        }
        let by = Self::caller_id(caller)?;
        let (s, ()) = self
            .mutate(&sid, |_, _| Ok(vec![Event::Deny { by, reason }]), |_| ())
            .await?;
        Ok(s)
    }

    /// Cancels a requested or scheduled session (its requester or an admin).
    pub async fn cancel(&self, caller: &Caller, id: &str) -> ApiResult<Session> {
        let (sid, own, _, _) = self.parse_and_authorize(caller, id).await?;
        if !own && !is_admin(caller) {
            return Err(ApiError::forbidden("only the requester can cancel a session"));
        }
        let by = Actor::Principal(Self::caller_id(caller)?);
        let (s, ()) = self
            .mutate(&sid, |_, _| Ok(vec![Event::Cancel { by }]), |_| ())
            .await?;
        Ok(s)
    }

    /// Ends a session: `completed` when its principal ends it, `revoked` when an approver or admin
    /// does. A requested or scheduled session is canceled.
    pub async fn end(&self, caller: &Caller, id: &str, note: Option<String>) -> ApiResult<Session> {
        if let Some(n) = &note {
            check_text("reason", n, false)?;
        }
        let (sid, own, approver, _) = self.parse_and_authorize(caller, id).await?;
        if !own && !approver {
            return Err(ApiError::forbidden("caller may not end this session"));
        }
        let reason = if own {
            EndReason::Completed
        } else {
            EndReason::Revoked
        };
        let by = Actor::Principal(Self::caller_id(caller)?);
        let (s, ()) = self
            .mutate(&sid, |_, _| Ok(vec![Event::End { by, reason }]), |_| ())
            .await?;
        Ok(s)
    }

    /// Records a heartbeat: resets the idle timer (persisted, so a restart keeps it).
    pub async fn heartbeat(&self, caller: &Caller, id: &str) -> ApiResult<()> {
        let (sid, own, _, _) = self.parse_and_authorize(caller, id).await?;
        if !own {
            return Err(ApiError::forbidden(
                "only the session's principal can heartbeat it",
            ));
        }
        let now = self.clock.now();
        match self.live.session(&sid) {
            Some(l) if l.is_live(crate::live::ms(now)) => {}
            _ => return Err(stint_core::TransitionError::NotActive.into()),
        }
        self.mutate(
            &sid,
            |s, now| {
                if !s.is_live(now) {
                    return Err(stint_core::TransitionError::NotActive.into());
                }
                Ok(vec![Event::Tick { activity: Some(now) }])
            },
            |s| {
                if let (Some(l), Some(at)) = (self.live.session(&s.id), s.last_activity_at) {
                    l.touch(at);
                }
            },
        )
        .await?;
        Ok(())
    }

    /// Issues a credential of the session's target's kind (its principal only).
    pub async fn issue_credential(
        &self,
        caller: &Caller,
        id: &str,
        public_key: Option<&str>,
        nonce: Option<&str>,
    ) -> ApiResult<stint_proto::IssuedCredential> {
        use stint_proto::{IssuedCredential, JwtCredential, PostgresCredential, SshCredential};
        let (sid, own, _, session) = self.parse_and_authorize(caller, id).await?;
        if !own {
            return Err(ApiError::forbidden(
                "only the session's principal can fetch its credentials",
            ));
        }
        // Break-glass: every credential needs a fresh step-up (a nonce from a new challenge), so a
        // stolen token or a replayed request cannot mint the next one.
        if session.break_glass {
            if !self.take_nonce(&sid, nonce) {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "step_up_required",
                    "a break-glass credential needs `nonce` from a fresh POST /v1/sessions/{id}/challenge",
                ));
            }
        } else if nonce.is_some() {
            return Err(ApiError::invalid(
                "`nonce` is only accepted for break-glass sessions",
            ));
        }
        let target = self.target_doc(&session.target).await.map_err(|_| {
            ApiError::new(
                StatusCode::CONFLICT,
                "session_not_active",
                "the session's target no longer exists",
            )
        })?;
        if target.kind == TargetKind::Jwt {
            if public_key.is_some() {
                return Err(ApiError::invalid("`public_key` is only accepted for ssh targets"));
            }
            let issued = self.issue_jwt(sid, &target).await?;
            return Ok(IssuedCredential::Jwt(JwtCredential {
                id: issued.id.to_string(),
                kind: "jwt".into(),
                access_token: issued.token,
                token_type: "Bearer".into(),
                expires_at: issued.expires_at,
            }));
        }
        let (prepared, _) = self.issue_external(caller, id, public_key).await?;
        let id = prepared.credential.id.to_string();
        Ok(match prepared.secret {
            Secret::Postgres {
                username,
                password,
                host,
                port,
                database,
            } => {
                use secrecy::ExposeSecret;
                IssuedCredential::Postgres(PostgresCredential {
                    id,
                    kind: "postgres".into(),
                    username,
                    password: password.expose_secret().to_owned(),
                    host,
                    port,
                    database,
                    expires_at: prepared.credential.expires_at,
                })
            }
            Secret::Ssh {
                certificate,
                principals,
                valid_after,
                valid_before,
            } => IssuedCredential::Ssh(SshCredential {
                id,
                kind: "ssh".into(),
                certificate,
                principals,
                serial: prepared.credential.handle.clone(),
                valid_after,
                valid_before,
            }),
        })
    }

    /// Issues a JWT for an active session of a jwt target (authorization already checked).
    async fn issue_jwt(&self, sid: SessionId, target: &TargetDoc) -> ApiResult<IssuedJwt> {
        let audience = audience(target);
        let jti = CredentialId::from_u128(new_u128());
        let signed: std::sync::Mutex<Option<SignedJwt>> = std::sync::Mutex::new(None);
        let (_, out) = self
            .mutate(
                &sid,
                |s, now| {
                    // A scheduled session whose start has come is active now, whether or not its
                    // timer has fired yet (many sessions sharing one start wait their turn there).
                    let mut events = Vec::with_capacity(2);
                    let started;
                    let s = if s.state == State::Scheduled {
                        let tick = Event::Tick { activity: None };
                        started = s.apply(tick.clone(), now)?.0;
                        events.push(tick);
                        &started
                    } else {
                        s
                    };
                    let (event, jwt) = self.sign_jwt(s, &audience, &jti, now)?;
                    *signed.lock().unwrap_or_else(|e| e.into_inner()) = Some(jwt);
                    events.push(event);
                    Ok(events)
                },
                |s| {
                    let jwt = signed.lock().unwrap_or_else(|e| e.into_inner()).take()?;
                    self.index_jwt(s, &jti, &audience, jwt)
                },
            )
            .await?;
        metrics::counter!(m::CREDENTIALS_ISSUED, "kind" => "jwt").increment(1);
        out.ok_or_else(ApiError::internal)
    }

    /// Signs a JWT for the active session `s` and returns the `Issue` event that records it. The
    /// token answers nothing until [`Self::index_jwt`] after the commit.
    fn sign_jwt(
        &self,
        s: &Session,
        audience: &str,
        jti: &CredentialId,
        now: OffsetDateTime,
    ) -> ApiResult<(Event, SignedJwt)> {
        let exp = s.credential_expiry(now)?;
        let claims = AccessClaims {
            iss: &self.issuer,
            sub: s.principal.as_str(),
            aud: audience,
            exp: exp.unix_timestamp(),
            iat: now.unix_timestamp(),
            nbf: now.unix_timestamp(),
            jti: jti.as_str(),
            client_id: s.principal.as_str(),
            scope: &scope_for(&s.target),
            sid: s.id.as_str(),
        };
        let (token, kid) = self.keys.sign(&claims).map_err(|e| {
            tracing::error!(error = %e, "signing failed");
            ApiError::internal()
        })?;
        let hash: TokenHash = Sha256::digest(token.as_bytes()).into();
        let event = Event::Issue {
            credential: Credential {
                id: jti.clone(),
                kind: CredentialKind::Jwt,
                handle: hex::encode(hash),
                key_id: Some(kid),
                issued_at: now,
                expires_at: exp,
                revoked_at: None,
                revocation: Revocation::None,
                first_used_at: None,
                revocation_attempts: 0,
                revocation_error: None,
            },
        };
        Ok((event, SignedJwt { token, hash, exp }))
    }

    /// After the commit that recorded it: makes the token answer introspection. `None` when the
    /// committed session no longer holds it live.
    fn index_jwt(
        &self,
        s: &Session,
        jti: &CredentialId,
        audience: &str,
        jwt: SignedJwt,
    ) -> Option<IssuedJwt> {
        let cred = s.credentials.iter().find(|c| c.id == *jti)?;
        let live = self.live.session(&s.id)?;
        self.live
            .insert_token(jwt.hash, self.token_entry(s, cred, audience, live));
        Some(IssuedJwt {
            id: jti.clone(),
            token: jwt.token,
            expires_at: jwt.exp,
        })
    }

    /// Issues a credential of an external kind (postgres role, ssh certificate) for an active session
    /// (its principal only). The credential is committed before it exists in the target system; if
    /// creating it there fails, it is revoked again (queued) and the caller gets 502.
    pub async fn issue_external(
        &self,
        caller: &Caller,
        id: &str,
        public_key: Option<&str>,
    ) -> ApiResult<(Prepared, CredentialKind)> {
        let (sid, own, _, session) = self.parse_and_authorize(caller, id).await?;
        if !own {
            return Err(ApiError::forbidden(
                "only the session's principal can fetch its credentials",
            ));
        }
        let provider = self.provider(&session.target).ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "session_not_active",
                "the session's target no longer exists",
            )
        })?;
        let kind = match &provider {
            TargetProvider::Postgres(_) => CredentialKind::Postgres,
            TargetProvider::Ssh(_) => CredentialKind::Ssh,
            TargetProvider::Jwt(_) => return Err(ApiError::internal()),
        };
        if kind == CredentialKind::Ssh && public_key.is_none() {
            return Err(ApiError::invalid(
                "an ssh credential needs `public_key` (OpenSSH format)",
            ));
        }
        if kind != CredentialKind::Ssh && public_key.is_some() {
            return Err(ApiError::invalid("`public_key` is only accepted for ssh targets"));
        }
        // Check-out mode: one holder at a time, from activation until its revocation is confirmed.
        let checkout = match &provider {
            TargetProvider::Postgres(p) if p.config().mode == providers::postgres::Mode::Checkout => {
                Some(p.checkout.lock().await)
            }
            _ => None,
        };
        if checkout.is_some() {
            self.ensure_account_free(&session.target).await?;
        }
        let p = provider.shared();
        let _g = self.lock(&sid).await;
        let v = self
            .store
            .session(&sid)
            .await?
            .ok_or_else(|| ApiError::not_found("session"))?;
        let now = self.clock.now();
        let expires_at = v.session.credential_expiry(now)?;
        let prepared = p
            .prepare(&IssueRequest {
                session: &v.session,
                id: CredentialId::from_u128(new_u128()),
                expires_at,
                now,
                public_key,
            })
            .map_err(provider_error)?;
        let issue = Event::Issue {
            credential: prepared.credential.clone(),
        };
        let (s, fx, usage) = self.apply_all(&v.session, vec![issue], now)?;
        let s = self.finish(&v.session, v.version, s, fx, now).await?;
        if let (Some(u), Some(l)) = (usage, self.live.session(&sid)) {
            l.usage_written(&u);
        }
        if let Err(e) = p.activate(&prepared).await {
            tracing::warn!(session = %sid, target = %s.target, error = %e, "creating the credential failed");
            let now = self.clock.now();
            let undo = Event::RevokeCredential {
                credential: prepared.credential.id.clone(),
                by: Actor::System,
            };
            let (next, fx) = s.apply(undo, now)?;
            let current = self.store.session(&sid).await?.ok_or_else(ApiError::internal)?;
            self.finish(&current.session, current.version, next, fx, now)
                .await?;
            return Err(provider_error(e));
        }
        metrics::counter!(m::CREDENTIALS_ISSUED, "kind" => kind.as_str()).increment(1);
        drop(checkout);
        Ok((prepared, kind))
    }

    /// Refuses a check-out while another session (or this one) still holds the account.
    async fn ensure_account_free(&self, target: &str) -> ApiResult<()> {
        let busy = ApiError::new(
            StatusCode::CONFLICT,
            "account_checked_out",
            "the account is checked out by a session (or its check-in is not yet confirmed)",
        );
        let holders = self
            .store
            .sessions(&SessionFilter {
                target: Some(target.to_owned()),
                state: Some(State::Active),
                limit: 10_000,
                ..Default::default()
            })
            .await?;
        for h in holders {
            // Held until its check-in is confirmed, even past its expiry: a later check-in must never
            // rotate the password of the next holder.
            if h.session
                .credentials
                .iter()
                .any(|c| c.kind == CredentialKind::Postgres && c.revocation != Revocation::Confirmed)
            {
                return Err(busy);
            }
        }
        let outstanding = self.store.outstanding_revocations().await?;
        if outstanding.iter().any(|r| r.target == target) {
            return Err(busy);
        }
        Ok(())
    }

    /// Makes attempt number `round` (1-based, within this round of retries) of a revocation job and
    /// records its outcome. Returns the delay before the next attempt, or `None` when the job is over
    /// (confirmed, the round spent, or the credential no longer waiting). The caller then calls
    /// [`Revoker::done`].
    pub async fn revoke_once(&self, job: &Job, round: u32) -> Option<std::time::Duration> {
        let outcome = match self.provider(&job.target) {
            Some(p) => p.shared().revoke(&job.handle).await,
            None => Err(ProviderError::Config(format!(
                "target `{}` no longer exists",
                job.target
            ))),
        };
        let event = match &outcome {
            Ok(()) => Event::RevocationConfirmed {
                credential: job.credential.clone(),
            },
            Err(e) => {
                metrics::counter!(m::REVOCATION_FAILURES, "kind" => job.kind.as_str()).increment(1);
                tracing::warn!(session = %job.session, credential = %job.credential, attempt = round, error = %e, "revocation failed");
                Event::RevocationFailed {
                    credential: job.credential.clone(),
                    error: e.to_string(),
                    give_up: round >= self.cfg.revocation_max_attempts,
                }
            }
        };
        let recorded = self
            .mutate(
                &job.session,
                |_, _| Ok(vec![event]),
                |s| {
                    s.credentials
                        .iter()
                        .find(|c| c.id == job.credential)
                        .map(|c| c.revocation)
                },
            )
            .await;
        match (&outcome, recorded) {
            (Ok(()), Ok(_)) => {
                metrics::counter!(m::REVOCATIONS_CONFIRMED, "kind" => job.kind.as_str()).increment(1);
                None
            }
            (Err(_), Ok((_, Some(Revocation::Pending)))) => Some(crate::revoker::backoff(
                round,
                self.cfg.revocation_backoff_base_ms,
                self.cfg.revocation_backoff_cap_ms,
                providers::random_u64(),
            )),
            (_, Ok(_)) => None,
            (_, Err(e)) => {
                // Not recorded (store trouble): the row stays outstanding; the sweep retries it.
                tracing::error!(session = %job.session, code = e.code, "recording a revocation outcome failed");
                None
            }
        }
    }

    /// Queues every outstanding revocation (start-up, and each reconcile sweep). Returns how many.
    async fn requeue_outstanding(&self) -> ApiResult<usize> {
        let rows = self.store.outstanding_revocations().await?;
        let n = rows.len();
        for r in rows {
            let (Some(session), Some(credential)) =
                (SessionId::parse(&r.session), CredentialId::parse(&r.credential))
            else {
                tracing::error!(credential = %r.credential, "unreadable revocation row");
                continue;
            };
            let kind = match r.kind.as_str() {
                "postgres" => CredentialKind::Postgres,
                "ssh" => CredentialKind::Ssh,
                _ => continue,
            };
            self.revoker.enqueue(Job {
                session,
                credential,
                target: r.target,
                kind,
                handle: r.handle,
            });
        }
        Ok(n)
    }

    /// The reconcile sweep: re-queues outstanding revocations, then asks every external target's
    /// provider for what exists there and revokes what no live credential owns.
    pub async fn reconcile(&self, by: &str) -> ApiResult<(Vec<Zombie>, usize)> {
        let outstanding = self.requeue_outstanding().await?;
        let targets: Vec<(String, TargetProvider)> = self
            .providers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, p)| !matches!(p, TargetProvider::Jwt(_)))
            .map(|(n, p)| (n.clone(), p.clone()))
            .collect();
        // Owned: every live credential and every queued revocation, across all targets (two targets
        // may share a database server and a role prefix). Read in this order, so a session ending in
        // between is seen in one or the other; a credential being issued is in the store before it
        // exists in the target.
        let mut owned = std::collections::HashSet::new();
        for v in self.store.live_sessions().await? {
            owned.extend(
                v.session
                    .credentials
                    .iter()
                    .filter(|c| c.revocation == Revocation::None)
                    .map(|c| c.handle.clone()),
            );
        }
        for r in self.store.outstanding_revocations().await? {
            owned.insert(r.handle);
        }
        let mut zombies = Vec::new();
        for (name, provider) in targets {
            match provider.shared().reconcile(&owned).await {
                Ok(found) => zombies.extend(found),
                Err(e) => {
                    tracing::warn!(target = %name, error = %e, "reconcile could not reach the target");
                    zombies.push(Zombie {
                        target: name.clone(),
                        credential: String::new(),
                        action: format!("failed: {e}"),
                    });
                }
            }
        }
        let found: Vec<&Zombie> = zombies.iter().filter(|z| !z.credential.is_empty()).collect();
        if !found.is_empty() {
            let now = self.clock.now();
            let audit = found
                .iter()
                .map(|z| {
                    event(
                        now,
                        by,
                        "reconcile.zombie",
                        json!({"target": z.target, "credential": z.credential, "action": z.action}),
                    )
                })
                .collect();
            for z in &found {
                let kind = self
                    .target_doc(&z.target)
                    .await
                    .map(|t| t.kind.as_str())
                    .unwrap_or("unknown");
                metrics::counter!(m::RECONCILE_ZOMBIES, "kind" => kind).increment(1);
            }
            let records = self
                .commit(Batch {
                    audit,
                    ..Default::default()
                })
                .await?;
            m::audit_written(records.len());
        }
        Ok((zombies, outstanding))
    }

    /// `POST /v1/reconcile` (admin).
    pub async fn reconcile_now(&self, caller: &Caller) -> ApiResult<(Vec<Zombie>, usize)> {
        require_admin(caller)?;
        self.reconcile(&caller.id).await
    }

    /// The current KRL of an ssh target (any principal).
    pub async fn krl(&self, name: &str) -> ApiResult<Vec<u8>> {
        match self.provider(name) {
            Some(TargetProvider::Ssh(p)) => p.krl().await.map_err(provider_error),
            Some(_) => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "only ssh targets have a KRL",
            )),
            None => Err(ApiError::not_found("target")),
        }
    }

    /// Who may subscribe to the revocation stream: resource servers and admins.
    pub fn may_watch(caller: &PrincipalRecord) -> ApiResult<()> {
        if is_admin(caller) || caller.kind == PrincipalKind::ResourceServer.as_str() {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "the event stream is for resource servers and admins",
            ))
        }
    }

    /// Stream events after `cursor` (at most `limit` audit records read), in order, and the new cursor.
    pub async fn events_after(
        &self,
        cursor: i64,
        limit: u32,
    ) -> ApiResult<(Vec<crate::events::StreamEvent>, i64)> {
        let records = self.store.audit(cursor, limit).await?;
        let next = records.last().map_or(cursor, |r| r.seq);
        let events = records
            .iter()
            .filter_map(|r| crate::events::from_record(r, &self.keys, &self.issuer))
            .collect();
        Ok((events, next))
    }

    fn add_trust(&self, view: crate::federation::TrustView) {
        let inline = view
            .jwks
            .as_ref()
            .and_then(|j| serde_json::from_value(j.clone()).ok());
        self.trusts.write().unwrap_or_else(|e| e.into_inner()).insert(
            view.name.clone(),
            Arc::new(TrustEntry {
                view,
                inline,
                keys: Mutex::new(crate::federation::KeyCache::default()),
            }),
        );
    }

    /// Creates a workload trust (admin).
    pub async fn create_trust(
        &self,
        caller: &Caller,
        req: crate::federation::CreateTrust,
    ) -> ApiResult<crate::federation::TrustView> {
        require_admin(caller)?;
        self.insert_trust(&caller.id, req, true).await
    }

    /// Stores a trust. `strict` also requires its rules' principals and targets to exist (the API);
    /// trusts from the configuration file may name ones an admin creates later.
    async fn insert_trust(
        &self,
        actor: &str,
        req: crate::federation::CreateTrust,
        strict: bool,
    ) -> ApiResult<crate::federation::TrustView> {
        check_name("`name`", &req.name)?;
        let (algorithms, _) = crate::federation::check(&req).map_err(ApiError::invalid)?;
        for r in req.rules.iter().filter(|_| strict) {
            if self.directory.by_name(&r.principal).is_none() {
                return Err(ApiError::invalid(format!(
                    "rule principal `{}` does not exist",
                    r.principal.escape_debug()
                )));
            }
            if self.target_doc(&r.target).await.is_err() {
                return Err(ApiError::invalid(format!(
                    "rule target `{}` does not exist",
                    r.target.escape_debug()
                )));
            }
        }
        if self
            .trusts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|t| t.view.issuer == req.issuer)
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "already_exists",
                "a trust for this issuer exists",
            ));
        }
        let now = self.clock.now();
        let view = crate::federation::TrustView {
            name: req.name,
            issuer: req.issuer,
            jwks_url: req.jwks_url,
            jwks: req.jwks,
            audience: req.audience,
            algorithms,
            leeway_s: req.leeway_s.unwrap_or(60),
            grace_s: req.grace_s.unwrap_or(0),
            rules: req.rules,
            created_at: now,
        };
        self.commit(Batch {
            documents: vec![stint_store::DocumentWrite::Insert(stint_store::DocumentRecord {
                kind: "trust".into(),
                name: view.name.clone(),
                doc: serde_json::to_string(&view).map_err(|_| ApiError::internal())?,
                created_at: now,
            })],
            audit: vec![event(
                now,
                actor,
                "trust.created",
                json!({"name": view.name, "issuer": view.issuer, "rules": view.rules.len()}),
            )],
            ..Default::default()
        })
        .await?;
        self.add_trust(view.clone());
        Ok(view)
    }

    /// Creates the trusts the configuration file declares and the store does not have yet (a `jwks_file`
    /// is read and its keys kept inline). A configured trust that differs from the stored one is left
    /// as stored, with a warning: change trusts in one place.
    async fn load_configured_trusts(&self) -> anyhow::Result<()> {
        for raw in &self.cfg.trusts {
            let mut raw = raw.clone();
            if let Some(path) = raw.get("jwks_file").and_then(|p| p.as_str()).map(str::to_owned) {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| anyhow::anyhow!("trust jwks_file `{path}`: {e}"))?;
                let jwks: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|_| anyhow::anyhow!("trust jwks_file `{path}` is not JSON"))?;
                if let Some(o) = raw.as_object_mut() {
                    o.remove("jwks_file");
                    o.insert("jwks".into(), jwks);
                }
            }
            let req: crate::federation::CreateTrust = serde_json::from_value(raw)
                .map_err(|e| anyhow::anyhow!("a configured trust is invalid: {e}"))?;
            let name = req.name.clone();
            let exists = self
                .trusts
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&name);
            if exists {
                tracing::info!(trust = %name, "configured trust already stored; the stored one is used");
                continue;
            }
            self.insert_trust("config", req, false)
                .await
                .map_err(|e| anyhow::anyhow!("configured trust `{name}`: {}", e.detail))?;
        }
        Ok(())
    }

    /// Lists trusts (admin).
    pub fn trusts(&self, caller: &Caller) -> ApiResult<Vec<crate::federation::TrustView>> {
        require_admin(caller)?;
        let map = self.trusts.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = map.values().map(|t| t.view.clone()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    /// The issuer's keys for a token naming `kid`: cached, refreshed when the kid is unknown.
    async fn trust_keys(
        &self,
        t: &TrustEntry,
        kid: Option<&str>,
    ) -> Result<jsonwebtoken::jwk::JwkSet, crate::federation::ExchangeError> {
        if let Some(set) = &t.inline {
            return Ok(set.clone());
        }
        let url = t.view.jwks_url.clone().unwrap_or_default();
        let mut cache = t.keys.lock().await;
        let now = std::time::Instant::now();
        if let Some(set) = cache.usable(kid, now) {
            return Ok(set);
        }
        if !cache.may_fetch(now) {
            // Asked again too soon: answer from what we have.
            return cache
                .any()
                .ok_or_else(|| crate::federation::ExchangeError::Unavailable("no JWKS yet".into()));
        }
        let set = crate::federation::fetch_jwks(&self.http, &url).await?;
        cache.store(set.clone(), now);
        Ok(set)
    }

    /// RFC 8693 token exchange: a workload's ID token for an access token of the session bound to
    /// its run (created on the first exchange, reused by later ones while active).
    pub async fn exchange(
        self: &Arc<Self>,
        f: ExchangeForm,
    ) -> Result<ExchangeAnswer, crate::federation::ExchangeError> {
        use crate::federation::{ExchangeError as E, claim_text, header_of, matching_rule, verify};
        let token = f
            .subject_token
            .filter(|t| !t.is_empty() && t.len() <= 16 * 1024)
            .ok_or_else(|| E::InvalidRequest("`subject_token` is required".into()))?;
        match f.subject_token_type.as_deref() {
            Some("urn:ietf:params:oauth:token-type:id_token" | "urn:ietf:params:oauth:token-type:jwt") => {}
            _ => {
                return Err(E::InvalidRequest(
                    "`subject_token_type` must be urn:ietf:params:oauth:token-type:id_token (or …:jwt)"
                        .into(),
                ));
            }
        }
        if f.requested_token_type
            .as_deref()
            .is_some_and(|t| t != "urn:ietf:params:oauth:token-type:access_token")
        {
            return Err(E::InvalidRequest("only access tokens are issued".into()));
        }
        let audience = f
            .audience
            .filter(|a| !a.is_empty())
            .ok_or_else(|| E::InvalidTarget("`audience` (the target's name) is required".into()))?;
        // The trust is found by the token's (not yet verified) issuer; everything is verified next.
        let iss = unverified_issuer(&token)
            .ok_or_else(|| E::InvalidRequest("`subject_token` is not a JWT".into()))?;
        let trust = self
            .trusts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .find(|t| t.view.issuer == iss)
            .cloned()
            .ok_or_else(|| E::InvalidRequest("no trust for the token's issuer".into()))?;
        let (alg, kid) = header_of(&token, &trust.view)?;
        let keys = self.trust_keys(&trust, kid.as_deref()).await?;
        let now = self.clock.now();
        let claims = verify(
            &token,
            &trust.view,
            alg,
            kid.as_deref(),
            &keys,
            now.unix_timestamp(),
        )?;
        let rule = matching_rule(&trust.view, &claims, &audience)?;
        let jti =
            claim_text(&claims, "jti").ok_or_else(|| E::InvalidRequest("the token has no `jti`".into()))?;
        let guard = format!("{iss}|{jti}");
        let seen = self
            .store
            .seen("id_token_jti", &guard, now)
            .await
            .map_err(|_| E::Unavailable("store".into()))?;
        if seen {
            return Err(E::InvalidRequest("this ID token was already exchanged".into()));
        }
        let reference = claim_text(&claims, &rule.binding.ref_claim)
            .filter(|r| !r.is_empty() && r.len() <= 200)
            .ok_or_else(|| {
                E::InvalidRequest(format!(
                    "the token has no usable `{}` claim",
                    rule.binding.ref_claim
                ))
            })?;
        let principal = self
            .directory
            .by_name(&rule.principal)
            .ok_or_else(|| E::InvalidTarget("the rule's principal no longer exists".into()))?;
        let target = self
            .target_doc(&rule.target)
            .await
            .map_err(|_| E::InvalidTarget("the rule's target no longer exists".into()))?;
        let exp = claims.get("exp").and_then(serde_json::Value::as_i64).unwrap_or(0);
        let grace = i64::try_from(trust.view.grace_s).unwrap_or(0);
        let left = exp + grace - now.unix_timestamp();
        let ttl_s = rule
            .ttl_s
            .unwrap_or(target.max_ttl_s)
            .min(target.max_ttl_s)
            .min(u64::try_from(left).unwrap_or(0));
        if ttl_s == 0 {
            return Err(E::InvalidRequest("the token expires too soon".into()));
        }
        let binding = Binding {
            kind: rule.binding.kind,
            reference: Some(reference.clone()),
        };
        let kind_name = serde_json::to_value(binding.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let _one = self.exchange_lock.lock().await;
        let existing = self
            .store
            .sessions(&SessionFilter {
                target: Some(target.name.clone()),
                state: Some(State::Active),
                binding: Some((kind_name, reference.clone())),
                limit: 10,
                ..Default::default()
            })
            .await
            .map_err(|_| E::Unavailable("store".into()))?
            .into_iter()
            .find(|v| v.session.principal.as_str() == principal.id && v.session.is_live(now));
        let sid = match existing {
            Some(v) => v.session.id,
            None => {
                let req = CreateSession {
                    target: target.name.clone(),
                    reason: format!(
                        "token exchange via trust {} for {}",
                        trust.view.name,
                        claim_text(&claims, "sub")
                            .unwrap_or_default()
                            .chars()
                            .take(200)
                            .collect::<String>()
                    ),
                    ttl_s,
                    binding: Some(binding.clone()),
                    not_before: None,
                    idle_timeout_s: None,
                    max_uses: None,
                    break_glass: false,
                    credential: false,
                };
                let s = self.request(&principal, req).await.map_err(|e| match e.code {
                    "binding_closed" => E::InvalidRequest("the run has already completed".into()),
                    "policy_denied" | "unknown_target" => E::InvalidTarget(e.detail.clone()),
                    _ => E::InvalidRequest(e.detail.clone()),
                })?;
                if s.state != State::Active {
                    let _ = self
                        .mutate(
                            &s.id,
                            |_, _| Ok(vec![Event::Cancel { by: Actor::System }]),
                            |_| (),
                        )
                        .await;
                    return Err(E::InvalidTarget(
                        "the target needs approvals; token exchange serves targets without approval".into(),
                    ));
                }
                s.id
            }
        };
        let now = self.clock.now();
        let leeway = i64::try_from(trust.view.leeway_s).unwrap_or(60);
        self.commit(Batch {
            seen: vec![stint_store::SeenRecord {
                kind: "id_token_jti".into(),
                key: guard,
                expires_at: time::OffsetDateTime::from_unix_timestamp(exp + leeway).unwrap_or(now),
                recorded_at: now,
            }],
            audit: vec![PendingAudit {
                at: now,
                actor: principal.id.clone(),
                action: "token.exchanged".into(),
                session: Some(sid.clone()),
                details: json!({
                    "trust": trust.view.name,
                    "issuer": iss,
                    "sub": claim_text(&claims, "sub"),
                    "jti": jti,
                    "binding": binding,
                }),
            }],
            ..Default::default()
        })
        .await
        .map_err(|e| match e.code {
            "already_exists" => E::InvalidRequest("this ID token was already exchanged".into()),
            _ => E::Unavailable("store".into()),
        })?;
        drop(_one);
        let issued = self
            .issue_jwt(sid.clone(), &target)
            .await
            .map_err(|e| E::InvalidRequest(e.detail))?;
        Ok(ExchangeAnswer {
            access_token: issued.token,
            issued_token_type: "urn:ietf:params:oauth:token-type:access_token".into(),
            token_type: "Bearer".into(),
            expires_in: (issued.expires_at - self.clock.now()).whole_seconds().max(0),
            session: sid.to_string(),
        })
    }

    // ----- policies ---------------------------------------------------------------------------

    fn offset(&self) -> time::UtcOffset {
        self.cfg.utc_offset().unwrap_or(time::UtcOffset::UTC)
    }

    fn target_infos(&self) -> Vec<stint_policy::TargetInfo> {
        let cache = self.target_cache.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = cache.values().map(crate::policy::target_info).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// The engine in force.
    pub fn engine(&self) -> ApiResult<Arc<stint_policy::PolicyEngine>> {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|p| p.engine.clone())
            .ok_or_else(ApiError::not_ready)
    }

    fn policy_state(&self) -> ApiResult<crate::policy::PolicyState> {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(ApiError::not_ready)
    }

    fn errors_text(errors: &[stint_policy::PolicyError]) -> String {
        errors
            .iter()
            .map(|e| format!("line {}, column {}: {}", e.line, e.column, e.message))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Start-up: the API's set if one was ever PUT, else the `.cedar` files of `policy_dir`, else
    /// none; an invalid set stops the start (fail closed) with its lines and columns.
    async fn load_policies(&self) -> anyhow::Result<()> {
        use crate::policy::Origin;
        let stored = self
            .store
            .documents("policy")
            .await?
            .into_iter()
            .find(|d| d.name == "current");
        let (source, origin) = match (stored, &self.cfg.policy_dir) {
            (Some(d), _) => {
                let v: serde_json::Value = serde_json::from_str(&d.doc)?;
                (v["source"].as_str().unwrap_or_default().to_owned(), Origin::Api)
            }
            (None, Some(dir)) => (crate::policy::read_dir(dir)?, Origin::Files),
            (None, None) => (String::new(), Origin::None),
        };
        let engine = stint_policy::PolicyEngine::new(&source, &self.target_infos())
            .map_err(|e| anyhow::anyhow!("the policy set is invalid: {}", Self::errors_text(&e)))?;
        tracing::info!(origin = ?origin, hash = %engine.hash(), policies = engine.user_policies(), "policies loaded");
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Some(crate::policy::PolicyState {
            source,
            origin,
            engine: Arc::new(engine),
        });
        Ok(())
    }

    /// Targets changed: the generated policies follow.
    fn rebuild_policy(&self) {
        let mut guard = self.policy.write().unwrap_or_else(|e| e.into_inner());
        let Some(state) = guard.as_mut() else { return };
        match stint_policy::PolicyEngine::new(&state.source, &self.target_infos()) {
            Ok(e) => state.engine = Arc::new(e),
            Err(e) => {
                tracing::error!(errors = %Self::errors_text(&e), "rebuilding policies after a target change failed; the previous set stays")
            }
        }
    }

    /// Decides a session request under policy; returns the approvals it needs. A refusal names the
    /// deciding policies and is audited.
    async fn decide_request(
        &self,
        caller: &Caller,
        target: &TargetDoc,
        req: &CreateSession,
        binding: &Binding,
        now: OffsetDateTime,
    ) -> ApiResult<u32> {
        let engine = self.engine()?;
        let ctx = crate::policy::context(
            req.ttl_s,
            &req.reason,
            binding,
            req.break_glass,
            now,
            self.offset(),
        );
        let action = if req.break_glass {
            stint_policy::Action::BreakGlass
        } else {
            stint_policy::Action::Request
        };
        // Admins may request any target (as before policies); break-glass always needs a permit.
        let decision = if is_admin(caller) && !req.break_glass {
            stint_policy::Decision {
                allow: true,
                approvals_required: target.approvals_required,
                reasons: Vec::new(),
            }
        } else {
            engine.authorize(
                &crate::policy::principal_info(caller),
                action,
                &crate::policy::target_info(target),
                &ctx,
            )
        };
        if !decision.allow {
            let reasons = decision.reasons.clone();
            self.commit(Batch {
                audit: vec![event(
                    now,
                    &caller.id,
                    "policy.denied",
                    json!({"action": action.as_str(), "target": target.name, "ttl_s": req.ttl_s,
                           "break_glass": req.break_glass, "policies": reasons, "policy_hash": engine.hash()}),
                )],
                ..Default::default()
            })
            .await?;
            let why = if decision.reasons.is_empty() {
                "no policy permits this request".to_owned()
            } else {
                format!("denied by {}", decision.reasons.join(", "))
            };
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "policy_denied",
                format!(
                    "{} on `{}`: {why}",
                    if req.break_glass { "break-glass" } else { "request" },
                    target.name
                ),
            )
            .with_policies(decision.reasons));
        }
        if !req.break_glass {
            return Ok(decision.approvals_required.max(target.approvals_required));
        }
        if target.kind != TargetKind::Jwt {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "break_glass_unsupported",
                "break-glass sessions are available for jwt targets (one use per credential is enforced at introspection)",
            ));
        }
        if req.ttl_s > self.cfg.break_glass_max_ttl_s {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "ttl_too_long",
                format!(
                    "break-glass sessions last at most {} s",
                    self.cfg.break_glass_max_ttl_s
                ),
            ));
        }
        Ok(0)
    }

    /// `PUT /v1/policies` (admin): validated against the schema before it takes effect.
    pub async fn put_policies(&self, caller: &Caller, source: String) -> ApiResult<(String, usize)> {
        require_admin(caller)?;
        if source.len() > 256 * 1024 {
            return Err(ApiError::invalid("the policy set is larger than 256 KiB"));
        }
        let _gate = self.admin_gate.write().await;
        let engine = stint_policy::PolicyEngine::new(&source, &self.target_infos()).map_err(|errors| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_policy",
                format!("the policy set is invalid: {}", Self::errors_text(&errors)),
            )
            .with_errors(
                errors
                    .iter()
                    .map(|e| json!({"line": e.line, "column": e.column, "message": e.message}))
                    .collect(),
            )
        })?;
        let old = self.policy_state()?;
        let now = self.clock.now();
        let (hash, n) = (engine.hash(), engine.user_policies());
        let mut documents = Vec::new();
        if old.origin == crate::policy::Origin::Api {
            documents.push(stint_store::DocumentWrite::Delete(
                "policy".into(),
                "current".into(),
            ));
        }
        documents.push(stint_store::DocumentWrite::Insert(stint_store::DocumentRecord {
            kind: "policy".into(),
            name: "current".into(),
            doc: json!({"source": source, "hash": hash}).to_string(),
            created_at: now,
        }));
        self.commit(Batch {
            documents,
            audit: vec![event(
                now,
                &caller.id,
                "policy.changed",
                json!({"hash": hash, "policies": n, "previous_hash": old.engine.hash()}),
            )],
            ..Default::default()
        })
        .await?;
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Some(crate::policy::PolicyState {
            source,
            origin: crate::policy::Origin::Api,
            engine: Arc::new(engine),
        });
        Ok((hash, n))
    }

    /// `GET /v1/policies` (admin).
    pub fn get_policies(&self, caller: &Caller) -> ApiResult<serde_json::Value> {
        require_admin(caller)?;
        let p = self.policy_state()?;
        Ok(json!({
            "source": p.source,
            "hash": p.engine.hash(),
            "origin": p.origin,
            "policies": p.engine.user_policies(),
            "generated": p.engine.generated_source(),
        }))
    }

    /// `POST /v1/policies/check` (admin): what would happen, and why, without creating anything.
    pub async fn policy_check(&self, caller: &Caller, q: PolicyCheck) -> ApiResult<serde_json::Value> {
        require_admin(caller)?;
        let principal = self.directory.by_name(&q.principal).ok_or_else(|| {
            ApiError::invalid(format!(
                "no live principal named `{}`",
                q.principal.escape_debug()
            ))
        })?;
        let target = self
            .target_doc(&q.target)
            .await
            .map_err(|_| ApiError::invalid(format!("no target named `{}`", q.target.escape_debug())))?;
        let at = q.at.unwrap_or_else(|| self.clock.now());
        let binding = q.binding.unwrap_or_default();
        let engine = self.engine()?;
        let ctx = crate::policy::context(
            q.ttl_s,
            "policy check",
            &binding,
            q.break_glass,
            at,
            self.offset(),
        );
        let action = if q.break_glass {
            stint_policy::Action::BreakGlass
        } else {
            stint_policy::Action::Request
        };
        let tinfo = crate::policy::target_info(&target);
        let d = engine.authorize(&crate::policy::principal_info(&principal), action, &tinfo, &ctx);
        let approvers: Vec<stint_policy::PrincipalInfo> = self
            .directory
            .all()
            .iter()
            .filter(|p| p.id != principal.id)
            .map(|p| crate::policy::principal_info(p))
            .collect();
        let eligible = engine.eligible_approvers(&approvers, &tinfo, &ctx);
        let approvals = if q.break_glass {
            0
        } else {
            d.approvals_required.max(target.approvals_required)
        };
        Ok(json!({
            "decision": if d.allow { "allow" } else { "deny" },
            "approvals_required": if d.allow { approvals } else { 0 },
            "eligible_approvers": eligible,
            "reasons": d.reasons,
            "policy_hash": engine.hash(),
        }))
    }

    /// `GET /v1/policies/lint` (admin).
    pub fn policy_lint(&self, caller: &Caller) -> ApiResult<Vec<stint_policy::Finding>> {
        require_admin(caller)?;
        let engine = self.engine()?;
        let cfg = stint_policy::LintConfig {
            break_glass_max_ttl_s: self.cfg.break_glass_max_ttl_s,
            break_glass_notify: self.cfg.break_glass_webhook_url.is_some(),
            ..stint_policy::LintConfig::default()
        };
        Ok(engine.lint(&self.target_infos(), &cfg))
    }

    /// `POST /v1/sessions/{id}/challenge`: a fresh single-use nonce the session's principal must send
    /// with its next credential request (step-up for break-glass sessions).
    pub async fn challenge(&self, caller: &Caller, id: &str) -> ApiResult<(String, OffsetDateTime)> {
        use base64::Engine;
        let (sid, own, _, session) = self.parse_and_authorize(caller, id).await?;
        if !own {
            return Err(ApiError::forbidden(
                "only the session's principal can be challenged",
            ));
        }
        if !session.break_glass {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_break_glass",
                "step-up challenges are for break-glass sessions",
            ));
        }
        let now = self.clock.now();
        if !session.is_live(now) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "session_not_active",
                "the session is not active",
            ));
        }
        let mut raw = [0u8; 32];
        aws_lc_rs::rand::fill(&mut raw).map_err(|_| ApiError::internal())?;
        let nonce = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let expires = now + time::Duration::seconds(NONCE_TTL_S);
        let mut map = self.nonces.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, (_, exp)| *exp > now);
        map.insert(Sha256::digest(nonce.as_bytes()).into(), (sid, expires));
        Ok((nonce, expires))
    }

    /// Consumes a step-up nonce for `sid`: true when it was issued for this session and is fresh.
    fn take_nonce(&self, sid: &SessionId, nonce: Option<&str>) -> bool {
        let Some(n) = nonce.filter(|n| n.len() <= 128) else {
            return false;
        };
        let key: [u8; 32] = Sha256::digest(n.as_bytes()).into();
        let now = self.clock.now();
        let mut map = self.nonces.lock().unwrap_or_else(|e| e.into_inner());
        match map.remove(&key) {
            Some((s, exp)) if s == *sid && exp > now => true,
            Some(other) if other.0 != *sid => {
                // Another session's nonce: put it back, it was not this one's to spend.
                map.insert(key, other);
                false
            }
            _ => false,
        }
    }

    /// After a break-glass session is created: approvers are told at once through the webhook; the
    /// outcome is audited in the session's evidence.
    fn notify_break_glass(self: &Arc<Self>, s: &Session, principal: &str) {
        let (Some(url), Some(secret)) = (
            self.cfg.break_glass_webhook_url.clone(),
            std::env::var("STINT_BREAK_GLASS_WEBHOOK_SECRET")
                .ok()
                .or_else(|| self.cfg.break_glass_webhook_secret.clone()),
        ) else {
            tracing::warn!(session = %s.id, "break-glass session started and no notification webhook is configured");
            return;
        };
        let svc = self.clone();
        let now = self.clock.now();
        let body = json!({
            "type": "break_glass.started",
            "session": stint_proto::SessionView::from(s),
            "principal": principal,
            "target": s.target,
            "reason": s.reason,
            "at": stint_core::audit::format_time(now),
        });
        let sid = s.id.clone();
        tokio::spawn(async move {
            let event_id = format!("{sid}:break_glass.started");
            let outcome = crate::notify::send(
                &svc.http,
                &url,
                secret.as_bytes(),
                &event_id,
                now.unix_timestamp(),
                &body,
            )
            .await;
            let (action, details) = match outcome {
                Ok(attempts) => (
                    "notification.sent",
                    json!({"kind": "break_glass.started", "attempts": attempts}),
                ),
                Err(e) => {
                    tracing::error!(session = %sid, error = %e, "break-glass notification failed");
                    (
                        "notification.failed",
                        json!({"kind": "break_glass.started", "error": e}),
                    )
                }
            };
            let at = svc.clock.now();
            let _ = svc
                .commit(Batch {
                    audit: vec![PendingAudit {
                        at,
                        actor: "system".into(),
                        action: action.into(),
                        session: Some(sid),
                        details,
                    }],
                    ..Default::default()
                })
                .await;
        });
    }

    /// `GET /v1/reviews`: break-glass sessions nobody has reviewed yet (admins and approvers).
    pub async fn reviews(&self, caller: &Caller) -> ApiResult<Vec<Session>> {
        if !is_admin(caller) && caller.kind != PrincipalKind::Approver.as_str() {
            return Err(ApiError::forbidden(
                "the review queue is for approvers and admins",
            ));
        }
        let mut out = Vec::new();
        for d in self.store.documents("review_pending").await? {
            if let Some(id) = SessionId::parse(&d.name)
                && let Some(v) = self.store.session(&id).await?
            {
                out.push(v.session);
            }
        }
        Ok(out)
    }

    /// `POST /v1/sessions/{id}/review`: a human's verdict on a break-glass session; closes its review.
    pub async fn review(
        &self,
        caller: &Caller,
        id: &str,
        verdict: &str,
        notes: &str,
    ) -> ApiResult<serde_json::Value> {
        if !is_admin(caller) && caller.kind != PrincipalKind::Approver.as_str() {
            return Err(ApiError::forbidden("reviews are for approvers and admins"));
        }
        if !matches!(verdict, "justified" | "unjustified") {
            return Err(ApiError::invalid(
                "`verdict` must be `justified` or `unjustified`",
            ));
        }
        check_text("notes", notes, true)?;
        let sid = SessionId::parse(id).ok_or_else(|| ApiError::not_found("session"))?;
        let v = self
            .store
            .session(&sid)
            .await?
            .ok_or_else(|| ApiError::not_found("session"))?;
        if v.session.principal.as_str() == caller.id {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "self_review",
                "a principal cannot review its own break-glass session",
            ));
        }
        let pending = self
            .store
            .documents("review_pending")
            .await?
            .into_iter()
            .any(|d| d.name == sid.as_str());
        if !pending {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "no_review_pending",
                "this session is not waiting for a review",
            ));
        }
        let now = self.clock.now();
        let record = json!({"verdict": verdict, "notes": notes, "by": caller.id, "at": stint_core::audit::format_time(now)});
        self.commit(Batch {
            documents: vec![
                stint_store::DocumentWrite::Delete("review_pending".into(), sid.to_string()),
                stint_store::DocumentWrite::Insert(stint_store::DocumentRecord {
                    kind: "review".into(),
                    name: sid.to_string(),
                    doc: record.to_string(),
                    created_at: now,
                }),
            ],
            audit: vec![PendingAudit {
                at: now,
                actor: caller.id.clone(),
                action: "review.recorded".into(),
                session: Some(sid.clone()),
                details: json!({"verdict": verdict, "notes": notes}),
            }],
            ..Default::default()
        })
        .await?;
        Ok(record)
    }

    /// Creates a hook source (admin); its secret is sealed at rest and never shown again.
    pub async fn create_hook_source(
        &self,
        caller: &Caller,
        req: crate::hooks::CreateHookSource,
    ) -> ApiResult<crate::hooks::HookSourceView> {
        use crate::hooks::{HookSourceView, SourceKind, StoredHookSource};
        require_admin(caller)?;
        check_name("`name`", &req.name)?;
        if req.secret.len() < 16 || req.secret.len() > 1024 {
            return Err(ApiError::invalid("`secret` must be 16 to 1024 characters"));
        }
        match (req.kind, &req.mapping) {
            (SourceKind::Ticket, None) => return Err(ApiError::invalid("a ticket source needs `mapping`")),
            (SourceKind::Ticket, Some(m)) => {
                for p in [&m.ref_pointer, &m.status_pointer] {
                    if !p.starts_with('/') || p.len() > 256 {
                        return Err(ApiError::invalid(
                            "mapping pointers are JSON pointers like `/issue/key`",
                        ));
                    }
                }
                if m.closing_statuses.is_empty() || m.closing_statuses.len() > 32 {
                    return Err(ApiError::invalid("`closing_statuses` must list 1 to 32 statuses"));
                }
            }
            (_, Some(_)) => return Err(ApiError::invalid("`mapping` is only for ticket sources")),
            (_, None) => {}
        }
        let now = self.clock.now();
        let view = HookSourceView {
            path: format!("/v1/hooks/{}", req.name),
            name: req.name.clone(),
            kind: req.kind,
            mapping: req.mapping.clone(),
            created_at: now,
        };
        let sealed_secret = self
            .kek
            .seal(&format!("hook:{}", req.name), req.secret.as_bytes())
            .map_err(|_| ApiError::internal())?;
        let stored = StoredHookSource {
            view: view.clone(),
            sealed_secret,
        };
        self.commit(Batch {
            documents: vec![stint_store::DocumentWrite::Insert(stint_store::DocumentRecord {
                kind: "hook_source".into(),
                name: req.name.clone(),
                doc: serde_json::to_string(&stored).map_err(|_| ApiError::internal())?,
                created_at: now,
            })],
            audit: vec![event(
                now,
                &caller.id,
                "hook_source.created",
                json!({"name": req.name, "kind": req.kind}),
            )],
            ..Default::default()
        })
        .await?;
        self.hook_sources
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                req.name.clone(),
                HookSource {
                    view: view.clone(),
                    secret: Arc::new(secrecy::SecretBox::new(Box::new(req.secret.into_bytes()))),
                },
            );
        Ok(view)
    }

    /// Lists hook sources (admin; never their secrets).
    pub fn hook_sources(&self, caller: &Caller) -> ApiResult<Vec<crate::hooks::HookSourceView>> {
        require_admin(caller)?;
        let map = self.hook_sources.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = map.values().map(|h| h.view.clone()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    /// `POST /v1/hooks/{source}`: verifies the signature, the timestamp and the event id, then ends
    /// (or cancels) every open session bound to the activity if the event closes it — atomically with
    /// the replay guards and the audit events. Returns the sessions it ended or canceled.
    pub async fn receive_hook(
        &self,
        source: &str,
        headers: &axum::http::HeaderMap,
        body: &[u8],
    ) -> ApiResult<Vec<String>> {
        use crate::hooks::{HookError, SourceKind};
        use secrecy::ExposeSecret;
        let src = self
            .hook_sources
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(source)
            .cloned()
            .ok_or_else(|| ApiError::not_found("hook source"))?;
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let refused = |e: HookError| match e {
            HookError::BadSignature => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_signature",
                "the event's signature does not match the source's secret",
            ),
            HookError::Stale => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "stale_event",
                "`X-Stint-Timestamp` is missing or outside the tolerance window",
            ),
            HookError::Invalid(m) => ApiError::invalid(m),
        };
        let now = self.clock.now();
        let (sig_header, event_id) = match src.view.kind {
            SourceKind::Github => (header("x-hub-signature-256"), header("x-github-delivery")),
            _ => (header("x-stint-signature"), header("x-stint-event-id")),
        };
        crate::hooks::verify_signature(src.secret.expose_secret(), body, sig_header).map_err(refused)?;
        if src.view.kind != SourceKind::Github {
            crate::hooks::check_timestamp(
                header("x-stint-timestamp"),
                now.unix_timestamp(),
                self.cfg.hook_tolerance_s,
            )
            .map_err(refused)?;
        }
        let event_id = event_id
            .filter(|e| !e.is_empty() && e.len() <= 200)
            .ok_or_else(|| ApiError::invalid("an event id header (1 to 200 characters) is required"))?
            .to_owned();
        let guard_key = format!("{source}:{event_id}");
        if self.store.seen("hook_event", &guard_key, now).await? {
            return Ok(Vec::new());
        }
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", "the body is not JSON"))?;
        let activity = crate::hooks::read_activity(
            src.view.kind,
            src.view.mapping.as_ref(),
            header("x-github-event"),
            &value,
        )
        .map_err(refused)?;
        // Hooks are rare: they hold the gate exclusively, so no request slips in bound to a ref
        // that is being closed.
        let _gate = self.admin_gate.write().await;
        let now = self.clock.now();
        let keep_s = 7 * 24 * 3600;
        let mut extra = Batch {
            seen: vec![stint_store::SeenRecord {
                kind: "hook_event".into(),
                key: guard_key,
                expires_at: now + time::Duration::seconds(keep_s),
                recorded_at: now,
            }],
            ..Default::default()
        };
        let details = json!({
            "source": source,
            "event_id": event_id,
            "binding": activity.as_ref().map(|a| json!({"kind": a.kind, "ref": a.reference})),
            "status": activity.as_ref().map(|a| a.status.clone()),
        });
        let mut ids = Vec::new();
        if let Some(a) = activity.filter(|a| a.closing) {
            let kind = serde_json::to_value(a.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            ids = self
                .open_sessions(SessionFilter {
                    binding: Some((kind, a.reference.clone())),
                    ..Default::default()
                })
                .await?;
            extra.seen.push(stint_store::SeenRecord {
                kind: "closed_ref".into(),
                key: crate::hooks::closed_ref_key(a.kind, &a.reference),
                expires_at: now + time::Duration::seconds(10 * 366 * 24 * 3600),
                recorded_at: now,
            });
            // The event goes into each session's evidence, right before its end.
            for id in &ids {
                extra.audit.push(PendingAudit {
                    at: now,
                    actor: format!("hook:{source}"),
                    action: "hook.received".into(),
                    session: Some(id.clone()),
                    details: details.clone(),
                });
            }
        }
        if ids.is_empty() {
            extra
                .audit
                .push(event(now, &format!("hook:{source}"), "hook.received", details));
        }
        let ended: Vec<String> = ids.iter().map(ToString::to_string).collect();
        match self.end_all(ids, Actor::System, EndReason::Event, extra).await {
            Ok(()) => Ok(ended),
            // The same event id raced in twice: the first one counted.
            Err(e) if e.code == "already_exists" => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// The session's audit events and the chain's state.
    pub async fn evidence(
        &self,
        caller: &Caller,
        id: &str,
    ) -> ApiResult<(
        Session,
        Vec<stint_core::AuditRecord>,
        stint_core::ChainVerification,
    )> {
        let s = self.session(caller, id).await?;
        let events = self.store.audit_for_session(&s.id).await?;
        let chain = self.chain_status().await?;
        Ok((s, events, chain))
    }

    /// The chain's state, verified incrementally: only events appended since the last call are read.
    /// (`GET /v1/audit/verify` rechecks everything from genesis.)
    pub async fn chain_status(&self) -> ApiResult<stint_core::ChainVerification> {
        let mut v = self.chain.lock().await;
        loop {
            let page = self.store.audit(v.next_seq() - 1, 1000).await?;
            if page.is_empty() {
                break;
            }
            for r in &page {
                v.push(r);
            }
            if page.len() < 1000 {
                break;
            }
        }
        Ok(v.clone().finish())
    }

    // ----- OAuth: introspection and revocation -----------------------------------------------

    /// RFC 7662 introspection. Memory only, except a credential's first use and every use of a
    /// `max_uses` session, which are persisted before answering.
    pub async fn introspect(&self, caller: &Caller, token: &str) -> Introspection {
        let now = self.clock.now();
        let result = self.introspect_inner(caller, token, now).await;
        metrics::counter!(m::INTROSPECTIONS, "result" => if result.active { "active" } else { "inactive" })
            .increment(1);
        result
    }

    async fn introspect_inner(&self, caller: &Caller, token: &str, now: OffsetDateTime) -> Introspection {
        if token.is_empty() || token.len() > 8192 {
            return Introspection::inactive();
        }
        let hash: TokenHash = Sha256::digest(token.as_bytes()).into();
        let Some(entry) = self.live.token(&hash) else {
            return Introspection::inactive();
        };
        if !entry.is_active(now) {
            return Introspection::inactive();
        }
        let first = entry.first_use_pending.swap(false, Ordering::AcqRel);
        if first || entry.session.counts_uses {
            let sid = entry.session.id.clone();
            let ev = Event::Used {
                credential: entry.jti.clone(),
                count: 1,
                callers: vec![caller.id.clone()],
                first_at: now,
                last_at: now,
                first_use: first,
            };
            let jti = entry.jti.clone();
            let res = self
                .mutate(
                    &sid,
                    |s, _| {
                        let mut events = vec![ev];
                        // A break-glass credential dies with its one use, in the same write.
                        if s.break_glass {
                            events.push(Event::RevokeCredential {
                                credential: jti,
                                by: Actor::System,
                            });
                        }
                        Ok(events)
                    },
                    |_| (),
                )
                .await;
            if let Err(e) = res {
                if first {
                    entry.first_use_pending.store(true, Ordering::Release);
                }
                tracing::debug!(code = e.code, "use not recorded; answering inactive");
                return Introspection::inactive();
            }
            // The write may have ended the session (max uses reached): that use was still granted.
            // Otherwise judge again at the current time: the session may have ended while we waited.
            if !entry.session.counts_uses && !entry.is_active(self.clock.now()) {
                return Introspection::inactive();
            }
        } else {
            entry.session.record_use(&entry.jti, &caller.id, now);
        }
        entry.session.touch(now);
        let mut answer = entry.claims.clone();
        // A target's limits may have shrunk since issue: never report an expiry past the session's.
        answer.exp = answer.exp.map(|e| e.min(entry.session.deadline_s()));
        answer
    }

    /// RFC 7009 revocation: the token dies at once, its session goes on. Unknown tokens are fine.
    pub async fn revoke_token(&self, caller: &Caller, token: &str) -> ApiResult<()> {
        if token.len() > 8192 {
            return Ok(());
        }
        let hash: TokenHash = Sha256::digest(token.as_bytes()).into();
        let Some(entry) = self.live.token(&hash) else {
            return Ok(());
        };
        let owner = entry.claims.sub.as_deref() == Some(caller.id.as_str());
        if !owner && !is_admin(caller) && caller.kind != PrincipalKind::ResourceServer.as_str() {
            return Err(ApiError::forbidden("caller may not revoke this token"));
        }
        let jti = entry.jti.clone();
        let by = Actor::Principal(Self::caller_id(caller)?);
        self.live.remove_token(&hash);
        self.mutate(
            &entry.session.id,
            |_, _| Ok(vec![Event::RevokeCredential { credential: jti, by }]),
            |_| (),
        )
        .await?;
        metrics::counter!(m::CREDENTIALS_REVOKED, "kind" => "jwt").increment(1);
        Ok(())
    }

    // ----- background work --------------------------------------------------------------------

    /// Judges a session's timers now.
    pub async fn tick(&self, id: &SessionId) -> ApiResult<()> {
        let activity = self.live.session(id).and_then(|l| l.last_activity());
        self.mutate(id, |_, _| Ok(vec![Event::Tick { activity }]), |_| ())
            .await?;
        Ok(())
    }

    /// Judges many due sessions at once: one read for all, one commit for every one that changed
    /// (a mass expiry costs a few large transactions, not one per session). A session that did
    /// not change (its timer moved) only gets its timer set again.
    pub async fn tick_many(&self, ids: &[SessionId]) -> ApiResult<()> {
        let _guards = self.lock_many(ids).await;
        let now = self.clock.now();
        let mut changes = Changes::default();
        for Versioned { session, version } in self.store.sessions_by_id(ids).await? {
            let activity = self.live.session(&session.id).and_then(|l| l.last_activity());
            let (s, fx, usage) = self.apply_all(&session, vec![Event::Tick { activity }], now)?;
            let (s, audit, more) = self.carry_out(s, fx, now)?;
            if s == session && audit.is_empty() {
                self.live.sync(&s);
                self.scheduler.set(&s.id, s.next_wake());
                continue;
            }
            changes.add(session, version, s, audit, more, usage);
        }
        if changes.done.is_empty() {
            return Ok(());
        }
        self.commit_all(changes, now).await
    }

    /// Writes aggregated uses of every live session (one `credential.used` event each).
    pub async fn flush_usage(&self) {
        for l in self.live.sessions() {
            if l.pending_usage().is_some()
                && let Err(e) = self.mutate(&l.id, |_, _| Ok(vec![]), |_| ()).await
            {
                tracing::warn!(session = %l.id, code = e.code, "writing aggregated uses failed");
            }
        }
    }

    /// Starts a new signing key (admin); the old one stays published while its tokens may live.
    pub async fn rotate_signing_key(&self, caller: &Caller) -> ApiResult<(String, Vec<String>)> {
        require_admin(caller)?;
        let now = self.clock.now();
        let longest = self
            .targets(None, 1000)
            .await?
            .iter()
            .map(|t| t.token_ttl_s)
            .max()
            .unwrap_or(self.cfg.default_token_ttl_s)
            .max(self.cfg.default_token_ttl_s);
        let until = now + time::Duration::seconds(i64::try_from(longest).unwrap_or(i64::MAX / 2));
        let old = self.keys.current_kid();
        let kid = self.keys.rotate(now, until).map_err(|e| {
            tracing::error!(error = %e, "key rotation failed");
            ApiError::internal()
        })?;
        self
            .commit(Batch {
                audit: vec![event(now, &caller.id, "key.rotated", json!({"kid": kid, "previous": old, "previous_published_until": stint_core::audit::format_time(until)}))],
                ..Default::default()
            })
            .await?;
        let published = self
            .keys
            .jwks(now)
            .keys
            .iter()
            .filter_map(|k| k.common.key_id.clone())
            .collect();
        Ok((kid, published))
    }
}

/// The `iss` claim of a JWT, read without verifying it (only to pick the trust that verifies it).
fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss")?.as_str().map(str::to_owned)
}

/// A provider failure as an API error (the message never holds secrets).
fn provider_error(e: ProviderError) -> ApiError {
    match e {
        ProviderError::Refused(m) => ApiError::invalid(m),
        ProviderError::Unavailable(m) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "target_unavailable",
            format!("the target system did not complete the request: {m}"),
        ),
        ProviderError::Config(m) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "target_misconfigured",
            format!("the target is misconfigured: {m}"),
        ),
    }
}

/// An audit event that concerns no session (principals, targets, keys).
fn event(at: OffsetDateTime, actor: &str, action: &str, details: serde_json::Value) -> PendingAudit {
    PendingAudit {
        at,
        actor: actor.to_owned(),
        action: action.to_owned(),
        session: None,
        details,
    }
}

fn scope_for(target: &str) -> String {
    format!("target:{target}")
}

fn require_admin(caller: &PrincipalRecord) -> ApiResult<()> {
    if is_admin(caller) {
        Ok(())
    } else {
        Err(ApiError::forbidden("this needs an admin"))
    }
}
