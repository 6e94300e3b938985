//! The guard: offline verification over state the background tasks keep current.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use secrecy::ExposeSecret;
use tokio::task::JoinHandle;

use crate::claims::{ClaimRules, Claims, Refusal};
use crate::clock::Clock;
use crate::config::{GuardConfig, GuardError};
use crate::keys::{KeySet, RefreshLimiter};
use crate::layer::GuardLayer;
use crate::revocation::Revoked;
use crate::stream;

/// Tokens longer than this are refused unread.
const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Longer key ids never trigger a key-set fetch (and are not remembered by the limiter).
const MAX_KID_LEN: usize = 256;
/// An unknown key id triggers at most one key-set fetch per this interval.
const REFRESH_PER_KID: Duration = Duration::from_secs(10);
/// And no two fetches for unknown key ids start closer than this.
const REFRESH_FLOOR: Duration = Duration::from_secs(1);
/// The key set is fetched again this often, so keys stint withdrew stop being trusted.
const JWKS_MAX_AGE: Duration = Duration::from_secs(300);
/// One key-set request may take this long.
const JWKS_TIMEOUT: Duration = Duration::from_secs(10);

/// Verifies stint access tokens and follows stint's revocation stream.
///
/// Cheap to clone (an `Arc` inside). The background tasks stop when the last clone is dropped.
#[derive(Clone)]
pub struct Guard {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.inner.shared;
        f.debug_struct("Guard")
            .field("audience", &s.rules.audience)
            .field("keys", &*s.keys.read().unwrap_or_else(|e| e.into_inner()))
            .field("revoked", &s.read_revoked().len())
            .field("stream_healthy", &s.health.fresh())
            .field("last_event_id", &s.last_event_id())
            .finish_non_exhaustive()
    }
}

impl Guard {
    /// Fetches stint's key set, then starts following the revocation stream in the background.
    ///
    /// Fails when the configuration is unusable or the key set cannot be fetched. Returns before the
    /// stream is connected: until then every token is refused with [`Refusal::StreamDown`] (see
    /// [`Guard::wait_healthy`]). Must be called within a tokio runtime.
    pub async fn start(cfg: GuardConfig) -> Result<Guard, GuardError> {
        let base = cfg.stint_url.trim_end_matches('/');
        let parse = |path: &str| {
            reqwest::Url::parse(&format!("{base}{path}"))
                .map_err(|e| GuardError::Config(format!("stint URL `{}`: {e}", cfg.stint_url)))
        };
        let jwks_url = parse("/.well-known/jwks.json")?;
        let stream_url = parse("/v1/events/stream")?;
        if cfg.audience.is_empty() {
            return Err(GuardError::Config("the audience is empty".into()));
        }
        if cfg.api_key.expose_secret().is_empty() {
            return Err(GuardError::Config("the API key is empty".into()));
        }
        if cfg.max_stream_staleness.is_zero() {
            return Err(GuardError::Config("`max_stream_staleness` is zero".into()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(JWKS_TIMEOUT)
            .build()
            .map_err(|source| GuardError::Fetch {
                url: jwks_url.to_string(),
                source,
            })?;
        let jwks = Jwks {
            http: http.clone(),
            url: jwks_url,
            limiter: Mutex::new(RefreshLimiter::new(REFRESH_PER_KID, REFRESH_FLOOR)),
            gate: Arc::new(tokio::sync::Mutex::new(())),
        };
        let keys = jwks.fetch().await?;
        let shared = Arc::new(Shared {
            rules: ClaimRules {
                audience: cfg.audience,
                issuer: cfg.issuer,
                leeway_secs: secs(cfg.leeway),
            },
            validation: signature_only(),
            clock: cfg.clock,
            retention_secs: secs(cfg.revoked_retention),
            keys: RwLock::new(Arc::new(keys)),
            revoked: RwLock::new(Revoked::default()),
            health: Health::new(cfg.max_stream_staleness),
            last_event_id: Mutex::new(None),
            jwks,
            runtime: tokio::runtime::Handle::current(),
        });
        let stream_task = tokio::spawn(stream::run(
            shared.clone(),
            stream::Settings {
                http,
                url: stream_url,
                api_key: cfg.api_key,
                staleness: cfg.max_stream_staleness,
                replay_from: cfg.replay_from,
            },
        ));
        let refresh_task = tokio::spawn(refresh_periodically(shared.clone()));
        Ok(Guard {
            inner: Arc::new(Inner {
                shared,
                tasks: vec![stream_task, refresh_task],
            }),
        })
    }

    /// Verifies a bearer token (without the `Bearer ` prefix) offline: the signature and key, the
    /// `typ`, `exp`/`nbf`/`aud`/`iss`, then the revoked sessions and credentials, then the stream's
    /// freshness. Never waits: a token signed by a key not known yet is refused with
    /// [`Refusal::UnknownKey`] and a key-set fetch starts in the background (rate-limited), so a retry
    /// moments later succeeds. [`Guard::verify_or_refresh`] waits for that fetch instead.
    pub fn verify(&self, bearer_token: &str) -> Result<Claims, Refusal> {
        let shared = &self.inner.shared;
        let result = shared.check(bearer_token);
        if result == Err(Refusal::UnknownKey)
            && let Some(kid) = kid_of(bearer_token)
        {
            shared.refresh_in_background(&kid);
        }
        result
    }

    /// Like [`Guard::verify`], but a token signed by an unknown key waits (at most about 10 s) for a
    /// fresh key set, so the first token after a key rotation is accepted. The tower layer uses this.
    pub async fn verify_or_refresh(&self, bearer_token: &str) -> Result<Claims, Refusal> {
        let shared = &self.inner.shared;
        match shared.check(bearer_token) {
            Err(Refusal::UnknownKey) => {
                let Some(kid) = kid_of(bearer_token) else {
                    return Err(Refusal::UnknownKey);
                };
                shared.refresh_and_wait(&kid).await;
                shared.check(bearer_token)
            }
            other => other,
        }
    }

    /// A tower layer that lets only requests with an acceptable bearer token through and inserts
    /// their [`Claims`] into the request extensions.
    pub fn layer(&self) -> GuardLayer {
        GuardLayer::new(self.clone())
    }

    /// Whether the revocation stream has been heard from within `max_stream_staleness`.
    pub fn stream_healthy(&self) -> bool {
        self.inner.shared.health.fresh()
    }

    /// The id of the last stream event received: the resume point of the next reconnection.
    pub fn last_event_id(&self) -> Option<u64> {
        self.inner.shared.last_event_id()
    }

    /// Waits until the stream is healthy, for at most `timeout`; returns whether it is.
    pub async fn wait_healthy(&self, timeout: Duration) -> bool {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            if self.stream_healthy() {
                return true;
            }
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The state verification reads and the background tasks write.
pub(crate) struct Shared {
    rules: ClaimRules,
    validation: Validation,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) retention_secs: i64,
    keys: RwLock<Arc<KeySet>>,
    pub(crate) revoked: RwLock<Revoked>,
    pub(crate) health: Health,
    last_event_id: Mutex<Option<u64>>,
    jwks: Jwks,
    runtime: tokio::runtime::Handle,
}

impl Shared {
    fn check(&self, token: &str) -> Result<Claims, Refusal> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(Refusal::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| Refusal::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(Refusal::BadSignature);
        }
        let typ = header.typ.as_deref().unwrap_or("");
        if !typ.eq_ignore_ascii_case("at+jwt") && !typ.eq_ignore_ascii_case("application/at+jwt") {
            return Err(Refusal::WrongType);
        }
        let kid = header.kid.ok_or(Refusal::UnknownKey)?;
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
        let key = keys.get(&kid).ok_or(Refusal::UnknownKey)?;
        let claims = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidAlgorithm
                | ErrorKind::InvalidEddsaKey
                | ErrorKind::InvalidKeyFormat => Refusal::BadSignature,
                _ => Refusal::Malformed,
            })?
            .claims;
        self.rules.check(&claims, self.clock.now_unix())?;
        if self.read_revoked().contains(&claims.sid, &claims.jti) {
            return Err(Refusal::Revoked);
        }
        if !self.health.fresh() {
            return Err(Refusal::StreamDown);
        }
        Ok(claims)
    }

    fn read_revoked(&self) -> RwLockReadGuard<'_, Revoked> {
        self.revoked.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn write_revoked(&self) -> RwLockWriteGuard<'_, Revoked> {
        self.revoked.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn last_event_id(&self) -> Option<u64> {
        *self.last_event_id.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that event `id` has been applied.
    pub(crate) fn seen_event(&self, id: u64) {
        let mut last = self.last_event_id.lock().unwrap_or_else(|e| e.into_inner());
        *last = Some(last.map_or(id, |l| l.max(id)));
    }

    fn install(&self, keys: KeySet) {
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
    }

    /// Starts a key-set fetch for `kid` if the limiter allows and none is running.
    fn refresh_in_background(self: &Arc<Self>, kid: &str) {
        if !self.jwks.allow(kid) {
            return;
        }
        let Ok(permit) = self.jwks.gate.clone().try_lock_owned() else {
            return; // a fetch is running; it will install what stint publishes now
        };
        let shared = self.clone();
        self.runtime.spawn(async move {
            shared.fetch_and_install().await;
            drop(permit);
        });
    }

    /// Fetches the key set for `kid` if the limiter allows, or waits for a fetch already running.
    async fn refresh_and_wait(&self, kid: &str) {
        let allowed = self.jwks.allow(kid);
        let _permit = self.jwks.gate.lock().await;
        if allowed {
            self.fetch_and_install().await;
        }
    }

    async fn fetch_and_install(&self) {
        match self.jwks.fetch().await {
            Ok(keys) => {
                tracing::debug!(keys = keys.len(), "stint key set refreshed");
                self.install(keys);
            }
            Err(e) => tracing::warn!(error = %e, "refreshing stint's key set failed"),
        }
    }
}

/// Fetching the key set.
struct Jwks {
    http: reqwest::Client,
    url: reqwest::Url,
    limiter: Mutex<RefreshLimiter>,
    /// Held while a fetch runs, so concurrent requests for the same new key share one fetch.
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl Jwks {
    fn allow(&self, kid: &str) -> bool {
        self.limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allow(kid, Instant::now())
    }

    async fn fetch(&self) -> Result<KeySet, GuardError> {
        let url = || self.url.to_string();
        let resp = self
            .http
            .get(self.url.clone())
            .timeout(JWKS_TIMEOUT)
            .send()
            .await
            .map_err(|source| GuardError::Fetch { url: url(), source })?;
        if !resp.status().is_success() {
            return Err(GuardError::Status {
                url: url(),
                status: resp.status().as_u16(),
            });
        }
        let body = resp
            .bytes()
            .await
            .map_err(|source| GuardError::Fetch { url: url(), source })?;
        let keys = KeySet::parse(&body).map_err(|e| GuardError::KeySet {
            url: url(),
            reason: e.to_string(),
        })?;
        if keys.len() == 0 {
            return Err(GuardError::KeySet {
                url: url(),
                reason: "no Ed25519 signing key with a key id".into(),
            });
        }
        Ok(keys)
    }
}

async fn refresh_periodically(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + JWKS_MAX_AGE, JWKS_MAX_AGE);
    loop {
        tick.tick().await;
        let _permit = shared.jwks.gate.lock().await;
        shared.fetch_and_install().await;
    }
}

/// When the stream last proved alive, on the monotonic clock.
pub(crate) struct Health {
    base: Instant,
    staleness_ms: u64,
    /// Milliseconds since `base` plus one at the last sign of life; 0: none since start or since a
    /// refusal.
    alive_at: AtomicU64,
}

impl Health {
    fn new(staleness: Duration) -> Self {
        Self {
            base: Instant::now(),
            staleness_ms: u64::try_from(staleness.as_millis()).unwrap_or(u64::MAX),
            alive_at: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    /// The stream just delivered bytes.
    pub(crate) fn alive(&self) {
        self.alive_at.store(self.now_ms(), Ordering::Release);
    }

    /// The stream refused us: distrust at once rather than at the end of the staleness bound.
    pub(crate) fn down(&self) {
        self.alive_at.store(0, Ordering::Release);
    }

    /// Whether the last sign of life is recent enough.
    pub(crate) fn fresh(&self) -> bool {
        let at = self.alive_at.load(Ordering::Acquire);
        at != 0 && self.now_ms().saturating_sub(at) < self.staleness_ms
    }
}

/// Validation for `jsonwebtoken::decode`: EdDSA signature only. Time, audience and issuer are checked
/// by [`ClaimRules`] against the injected clock (jsonwebtoken would read the system time).
fn signature_only() -> Validation {
    let mut v = Validation::new(Algorithm::EdDSA);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.leeway = 0;
    v
}

/// The key id of a token, if it is one worth fetching the key set for.
fn kid_of(token: &str) -> Option<String> {
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    jsonwebtoken::decode_header(token)
        .ok()?
        .kid
        .filter(|kid| kid.len() <= MAX_KID_LEN)
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_is_down_until_the_stream_speaks_and_after_a_refusal() {
        let h = Health::new(Duration::from_secs(30));
        assert!(!h.fresh());
        h.alive();
        assert!(h.fresh());
        h.down();
        assert!(!h.fresh());
    }

    #[test]
    fn health_goes_stale() {
        let h = Health::new(Duration::from_millis(20));
        h.alive();
        std::thread::sleep(Duration::from_millis(40));
        assert!(!h.fresh());
    }
}
