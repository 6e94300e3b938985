//! The work being measured, the same for both systems through an [`Adapter`]:
//!
//! | scenario | stint | OpenBao |
//! | --- | --- | --- |
//! | `issue` | `POST /v1/sessions` with `credential: true` (the session and its JWT, one commit) | `POST /v1/auth/token/create-orphan` |
//! | `introspect` | `POST /oauth2/introspect` (form `token=…`, as a `resource_server`) | `POST /v1/auth/token/lookup` |
//! | `end` | `POST /v1/sessions/{id}/end` | `POST /v1/auth/token/revoke` |
//!
//! `introspect` first issues a pool of tokens and cycles through it (every answer must be active); `end`
//! first issues a pool of sessions (each with a credential) and ends each once, so its request budget is
//! the pool size.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cpu::{CpuMeter, CpuSummary};
use crate::histogram::Summary;
use crate::http::{Auth, BaseUrl, Conn};
use crate::load::{LoadResult, LoadSpec, OpError, Worker, closed_loop};

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Create a session (no approval) and one JWT credential; OpenBao: create an orphan token.
    Issue,
    /// Introspect a live token (RFC 7662); OpenBao: look a token up.
    Introspect,
    /// End a session, revoking its credential; OpenBao: revoke a token.
    End,
    /// PostgreSQL roles, issued then all revoked and checked in PostgreSQL ([`crate::pgroles`]).
    PgRoles,
    /// Many sessions (tokens) with one deadline, watched as they die ([`crate::expiry`]).
    MassExpiry,
    /// Many live sessions (tokens): creation rate and server memory per item ([`crate::scale`]).
    Scale,
}

impl Scenario {
    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Issue => "issue",
            Self::Introspect => "introspect",
            Self::End => "end",
            Self::PgRoles => "pg-roles",
            Self::MassExpiry => "mass-expiry",
            Self::Scale => "scale",
        }
    }
}

/// A credential issued by either system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// stint's session id; `None` for OpenBao (the token is all there is).
    pub session: Option<String>,
    /// The bearer token (a JWT for stint, a service token for OpenBao).
    pub token: String,
}

/// One system under test, set up and ready for the scenarios.
#[derive(Debug, Clone)]
pub struct Adapter {
    base: BaseUrl,
    system: System,
}

#[derive(Debug, Clone)]
enum System {
    Stint(Arc<StintFixture>),
    Bao { token: Arc<str> },
}

/// What a stint run needs: a requester allowed on a JWT target without approval, and a resource server.
#[derive(Debug)]
struct StintFixture {
    target: String,
    requester_key: String,
    resource_server_key: String,
}

#[derive(Deserialize)]
struct ApiKey {
    api_key: String,
}

#[derive(Deserialize)]
struct SessionAnswer {
    id: String,
    state: String,
    /// The JWT issued with the request (`credential: true`).
    #[serde(default)]
    credential: Option<CredentialAnswer>,
}

#[derive(Deserialize)]
struct CredentialAnswer {
    access_token: String,
}

#[derive(Deserialize)]
struct Introspection {
    active: bool,
}

/// OpenBao's answer to a token create.
#[derive(Deserialize)]
pub(crate) struct BaoAuth {
    pub(crate) auth: BaoClientToken,
}

/// The token in [`BaoAuth`].
#[derive(Deserialize)]
pub(crate) struct BaoClientToken {
    pub(crate) client_token: String,
}

/// Session and token lifetime for stint runs: long enough to outlive preparation plus the run.
const STINT_TTL_S: u64 = 3600;

impl Adapter {
    /// stint at `base`: creates, with the admin key, a requester principal, a `resource_server` principal
    /// and a JWT target needing no approval, all with a fresh `stint-bench-<random>` name.
    pub async fn stint(base: BaseUrl, admin_key: &str) -> anyhow::Result<Self> {
        let mut conn = Conn::open(&base).await?;
        let admin = Auth::Bearer(admin_key);
        let run = format!("stint-bench-{:08x}", random_u32());
        let group = run.clone();
        let mut principal = async |suffix: &str, kind: &str| -> anyhow::Result<String> {
            let body = json!({"name": format!("{run}-{suffix}"), "kind": kind, "groups": [&group]});
            let answer = conn
                .post_json("/v1/principals", admin, &body)
                .await?
                .expect(&[201])?;
            Ok(answer.json::<ApiKey>()?.api_key)
        };
        let requester_key = principal("requester", "service")
            .await
            .context("creating a principal")?;
        let resource_server_key = principal("rs", "resource_server")
            .await
            .context("creating a resource server principal")?;
        let target = json!({
            "name": run, "kind": "jwt", "max_ttl_s": STINT_TTL_S, "token_ttl_s": STINT_TTL_S,
            "requester_groups": [&group], "approvals_required": 0,
        });
        conn.post_json("/v1/targets", admin, &target)
            .await?
            .expect(&[201])
            .context("creating a jwt target")?;
        let fixture = StintFixture {
            target: run,
            requester_key,
            resource_server_key,
        };
        Ok(Self {
            base,
            system: System::Stint(Arc::new(fixture)),
        })
    }

    /// OpenBao at `base`, acting with `token` (root, or one allowed to create orphan tokens, look up and
    /// revoke them).
    pub fn bao(base: BaseUrl, token: &str) -> Self {
        Self {
            base,
            system: System::Bao { token: token.into() },
        }
    }

    /// `stint` or `openbao`.
    pub fn system(&self) -> &'static str {
        match self.system {
            System::Stint(_) => "stint",
            System::Bao { .. } => "openbao",
        }
    }

    /// The server's base URL.
    pub fn base(&self) -> &BaseUrl {
        &self.base
    }

    /// The names and keys this adapter acts with, for scenarios in other modules.
    pub fn access(&self) -> Access<'_> {
        match &self.system {
            System::Stint(fx) => Access::Stint {
                target: &fx.target,
                // INVARIANT: `Adapter::stint` names the requester group like the target.
                group: &fx.target,
                requester_key: &fx.requester_key,
                resource_server_key: &fx.resource_server_key,
            },
            System::Bao { token } => Access::Bao { token },
        }
    }

    /// Issues one credential: stint creates a session and a JWT for it; OpenBao an orphan token
    /// (`ttl` 5m, policy `default`).
    pub async fn issue(&self, conn: &mut Conn) -> Result<Issued, OpError> {
        match &self.system {
            System::Stint(fx) => {
                let auth = Auth::Bearer(&fx.requester_key);
                // One request: the session and its JWT, committed together (`credential: true`).
                let body = json!({"target": fx.target, "reason": "stint-bench", "ttl_s": STINT_TTL_S,
                                  "credential": true});
                let session: SessionAnswer = conn
                    .post_json("/v1/sessions", auth, &body)
                    .await?
                    .expect(&[201])?
                    .json()?;
                match (session.state.as_str(), session.credential) {
                    ("active", Some(credential)) => Ok(Issued {
                        session: Some(session.id),
                        token: credential.access_token,
                    }),
                    (state, _) => Err(OpError::new(format!(
                        "session is `{state}` without a credential, not active with one"
                    ))),
                }
            }
            System::Bao { token } => {
                let body = json!({"ttl": "5m", "policies": ["default"]});
                let answer: BaoAuth = conn
                    .post_json("/v1/auth/token/create-orphan", Auth::VaultToken(token), &body)
                    .await?
                    .expect(&[200])?
                    .json()?;
                Ok(Issued {
                    session: None,
                    token: answer.auth.client_token,
                })
            }
        }
    }

    /// Whether `issued` is still good: stint's introspection `active`; for OpenBao a lookup that answers
    /// 200 (400 or 403, OpenBao's answers for an unknown token, count as inactive).
    pub async fn introspect(&self, conn: &mut Conn, issued: &Issued) -> Result<bool, OpError> {
        match &self.system {
            System::Stint(fx) => {
                let auth = Auth::Bearer(&fx.resource_server_key);
                let answer = conn
                    .post_form("/oauth2/introspect", auth, &[("token", &issued.token)])
                    .await?;
                Ok(answer.expect(&[200])?.json::<Introspection>()?.active)
            }
            System::Bao { token } => {
                let body = json!({"token": issued.token});
                let answer = conn
                    .post_json("/v1/auth/token/lookup", Auth::VaultToken(token), &body)
                    .await?;
                Ok(answer.expect(&[200, 400, 403])?.status.as_u16() == 200)
            }
        }
    }

    /// Ends what `issued` belongs to: stint ends the session (revoking its credentials); OpenBao revokes
    /// the token.
    pub async fn end(&self, conn: &mut Conn, issued: &Issued) -> Result<(), OpError> {
        match &self.system {
            System::Stint(fx) => {
                let session = issued
                    .session
                    .as_deref()
                    .ok_or_else(|| OpError::new("no session to end"))?;
                let path = format!("/v1/sessions/{session}/end");
                let body = json!({"reason": "stint-bench"});
                conn.post_json(&path, Auth::Bearer(&fx.requester_key), &body)
                    .await?
                    .expect(&[200])?;
            }
            System::Bao { token } => {
                let body = json!({"token": issued.token});
                conn.post_json("/v1/auth/token/revoke", Auth::VaultToken(token), &body)
                    .await?
                    .expect(&[200, 204])?;
            }
        }
        Ok(())
    }
}

/// What an [`Adapter`] acts with ([`Adapter::access`]).
#[derive(Debug, Clone, Copy)]
pub enum Access<'a> {
    /// stint: the bench's JWT target (no approval), the group allowed to request on it, and the keys of
    /// its requester and its `resource_server`.
    Stint {
        /// The JWT target.
        target: &'a str,
        /// The requester's group.
        group: &'a str,
        /// The requester's API key.
        requester_key: &'a str,
        /// The resource server's API key.
        resource_server_key: &'a str,
    },
    /// OpenBao: the token acting.
    Bao {
        /// Root, or one allowed to create, look up and revoke tokens and list leases.
        token: &'a str,
    },
}

/// The parameters of one scenario run.
#[derive(Debug, Clone, Copy)]
pub struct RunSpec {
    /// Workers, each with its own keep-alive connection.
    pub concurrency: usize,
    /// Closed-loop limits.
    pub load: LoadSpec,
    /// Tokens issued before `introspect` (cycled through).
    pub introspect_pool: usize,
    /// Sessions issued before `end` (each ended once: the request budget).
    pub end_pool: usize,
}

/// Everything one scenario run measured, as written to `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// `stint` or `openbao`.
    pub system: &'static str,
    /// The scenario.
    pub scenario: Scenario,
    /// Workers.
    pub concurrency: usize,
    /// Duration asked for, in seconds.
    pub duration_s: f64,
    /// Request budget asked for (for `end`: at most the pool).
    pub max_requests: Option<u64>,
    /// Items issued beforehand (tokens or sessions), 0 for `issue`.
    pub prepared: usize,
    /// Operations that succeeded.
    pub ops: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Wall time of the measured loop, in seconds.
    pub elapsed_s: f64,
    /// Successful operations per second.
    pub ops_per_s: f64,
    /// Latency of successful operations.
    pub latency: Summary,
    /// The load generator's own CPU over the measured loop (`None` where `/proc` is missing).
    pub client_cpu: Option<CpuSummary>,
    /// Distinct failure messages, first few.
    pub error_samples: Vec<String>,
    /// Why the loop stopped early, if it did.
    pub aborted: Option<String>,
}

impl ScenarioReport {
    fn new(
        adapter: &Adapter,
        scenario: Scenario,
        spec: &RunSpec,
        prepared: usize,
        result: &LoadResult,
    ) -> Self {
        Self {
            system: adapter.system(),
            scenario,
            concurrency: result.concurrency,
            duration_s: spec.load.duration.as_secs_f64(),
            max_requests: spec.load.max_requests,
            prepared,
            ops: result.ops,
            errors: result.errors,
            elapsed_s: result.elapsed.as_secs_f64(),
            ops_per_s: result.ops_per_sec(),
            latency: result.histogram.summary(),
            client_cpu: None,
            error_samples: result.error_samples.clone(),
            aborted: result.aborted.clone(),
        }
    }

    /// One human-readable line.
    pub fn line(&self) -> String {
        let l = &self.latency;
        let cpu = match &self.client_cpu {
            Some(c) => format!(
                "client CPU {:.0}% of {} cores{}",
                c.machine_fraction * 100.0,
                c.cores,
                if c.client_bound {
                    " (CLIENT-BOUND: over a quarter of the machine)"
                } else {
                    ""
                }
            ),
            None => "client CPU unknown".to_owned(),
        };
        let mut line = format!(
            "{} {} c={}: {:.0} ops/s ({} ops in {:.2} s), p50 {:.2} p90 {:.2} p99 {:.2} p999 {:.2} max {:.2} ms, \
             {} errors, {cpu}",
            self.system,
            self.scenario.as_str(),
            self.concurrency,
            self.ops_per_s,
            self.ops,
            self.elapsed_s,
            l.p50_ms,
            l.p90_ms,
            l.p99_ms,
            l.p999_ms,
            l.max_ms,
            self.errors,
        );
        if let Some(reason) = &self.aborted {
            line.push_str(&format!("; {reason}"));
        }
        if let Some(first) = self.error_samples.first() {
            line.push_str(&format!("; first error: {first}"));
        }
        line
    }
}

/// What each worker of a run does.
#[derive(Debug)]
enum Job {
    /// Issue; keep what was issued when preparing a pool.
    Issue { keep: Option<Mutex<Vec<Issued>>> },
    /// Introspect `pool[seq % len]`; an inactive answer is an error.
    Introspect { pool: Vec<Issued> },
    /// End `pool[seq]`.
    End { pool: Vec<Issued> },
}

/// A closed-loop worker: one connection, one adapter, one job.
#[derive(Debug)]
pub struct ScenarioWorker {
    conn: Conn,
    adapter: Adapter,
    job: Arc<Job>,
}

impl Worker for ScenarioWorker {
    async fn call(&mut self, seq: u64) -> Result<(), OpError> {
        let at = |pool: &[Issued], i: u64| {
            usize::try_from(i)
                .ok()
                .and_then(|i| pool.get(i))
                .cloned()
                .ok_or_else(|| OpError::new("pool exhausted"))
        };
        match &*self.job {
            Job::Issue { keep } => {
                let issued = self.adapter.issue(&mut self.conn).await?;
                if let Some(keep) = keep {
                    keep.lock()
                        .map_err(|_| OpError::new("poisoned pool"))?
                        .push(issued);
                }
                Ok(())
            }
            Job::Introspect { pool } => {
                let len = pool.len().max(1) as u64;
                let issued = at(pool, seq % len)?;
                match self.adapter.introspect(&mut self.conn, &issued).await? {
                    true => Ok(()),
                    false => Err(OpError::new("token answered inactive")),
                }
            }
            Job::End { pool } => {
                let issued = at(pool, seq)?;
                self.adapter.end(&mut self.conn, &issued).await
            }
        }
    }
}

async fn workers(adapter: &Adapter, concurrency: usize, job: Job) -> anyhow::Result<Vec<ScenarioWorker>> {
    let job = Arc::new(job);
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency.max(1) {
        let conn = Conn::open(adapter.base())
            .await
            .with_context(|| format!("connecting to {}", adapter.base()))?;
        workers.push(ScenarioWorker {
            conn,
            adapter: adapter.clone(),
            job: Arc::clone(&job),
        });
    }
    Ok(workers)
}

/// Issues `n` credentials (sessions for stint) with `concurrency` workers, for a scenario to use.
pub async fn prepare(adapter: &Adapter, concurrency: usize, n: usize) -> anyhow::Result<Vec<Issued>> {
    let job = Job::Issue {
        keep: Some(Mutex::new(Vec::with_capacity(n))),
    };
    let workers = workers(adapter, concurrency, job).await?;
    let job = Arc::clone(&workers[0].job);
    let spec = LoadSpec::for_duration(Duration::from_secs(3600)).with_max_requests(Some(n as u64));
    let result = closed_loop(spec, workers).await;
    if let Some(reason) = result.aborted {
        bail!(
            "preparing {n} items failed: {reason}: {}",
            result.error_samples.join("; ")
        );
    }
    let pool = match &*job {
        Job::Issue { keep: Some(keep) } => keep
            .lock()
            .map(|mut k| std::mem::take(&mut *k))
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    if pool.is_empty() && n > 0 {
        bail!(
            "preparing {n} items issued none: {}",
            result.error_samples.join("; ")
        );
    }
    Ok(pool)
}

/// Runs one scenario: prepares its pool, opens one connection per worker, then measures the closed loop
/// and the client's CPU over it.
pub async fn run(adapter: &Adapter, scenario: Scenario, spec: RunSpec) -> anyhow::Result<ScenarioReport> {
    let mut spec = spec;
    let (job, prepared) = match scenario {
        Scenario::PgRoles => bail!("`pg-roles` runs through `pgroles::run`"),
        Scenario::MassExpiry | Scenario::Scale => {
            bail!("`{}` runs through its own module", scenario.as_str())
        }
        Scenario::Issue => (Job::Issue { keep: None }, 0),
        Scenario::Introspect => {
            let pool = prepare(adapter, spec.concurrency, spec.introspect_pool.max(1)).await?;
            let n = pool.len();
            (Job::Introspect { pool }, n)
        }
        Scenario::End => {
            let pool = prepare(adapter, spec.concurrency, spec.end_pool.max(1)).await?;
            let n = pool.len();
            let budget = spec.load.max_requests.map_or(n as u64, |m| m.min(n as u64));
            spec.load.max_requests = Some(budget);
            (Job::End { pool }, n)
        }
    };
    let workers = workers(adapter, spec.concurrency, job).await?;
    let meter = CpuMeter::start().ok();
    let result = closed_loop(spec.load, workers).await;
    let cpu = meter.and_then(|m| m.read().ok());
    let mut report = ScenarioReport::new(adapter, scenario, &spec, prepared, &result);
    report.client_cpu = cpu.map(|c| c.summary());
    Ok(report)
}

/// A random `u32` from the standard library's randomly keyed hasher (no `rand` dependency).
pub(crate) fn random_u32() -> u32 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u8(0);
    hasher.finish() as u32
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use std::collections::HashSet;
    use std::net::SocketAddr;

    use axum::extract::{ConnectInfo, State};
    use axum::http::HeaderMap;
    use axum::routing::post;
    use axum::{Json, Router};

    use super::*;

    /// What the fake introspection endpoint saw.
    #[derive(Default)]
    struct Seen {
        peers: HashSet<SocketAddr>,
        requests: usize,
    }

    /// A tiny RFC 7662 endpoint: answers active for `good-*` tokens presented by the `rs-key` caller in a
    /// form body, and records the peer address of every request.
    async fn fake_introspect(
        State(seen): State<Arc<Mutex<Seen>>>,
        ConnectInfo(peer): ConnectInfo<SocketAddr>,
        headers: HeaderMap,
        body: String,
    ) -> Result<Json<serde_json::Value>, axum::http::StatusCode> {
        {
            let mut seen = seen.lock().unwrap();
            seen.peers.insert(peer);
            seen.requests += 1;
        }
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer rs-key") {
            return Err(axum::http::StatusCode::UNAUTHORIZED);
        }
        if headers.get("content-type").and_then(|v| v.to_str().ok())
            != Some("application/x-www-form-urlencoded")
        {
            return Err(axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
        }
        let token = body
            .strip_prefix("token=")
            .ok_or(axum::http::StatusCode::BAD_REQUEST)?;
        Ok(Json(if token.starts_with("good-") {
            json!({"active": true, "sub": "someone"})
        } else {
            json!({"active": false})
        }))
    }

    async fn serve() -> (BaseUrl, Arc<Mutex<Seen>>) {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let app = Router::new()
            .route("/oauth2/introspect", post(fake_introspect))
            .with_state(Arc::clone(&seen));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                .await
                .unwrap();
        });
        (BaseUrl::parse(&format!("http://{addr}")).unwrap(), seen)
    }

    /// Serves `app` on a loopback port.
    async fn serve_app(app: Router) -> BaseUrl {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        BaseUrl::parse(&format!("http://{addr}")).unwrap()
    }

    fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
        headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A fake stint session API: checks the requester's key and the request bodies, and records which
    /// sessions were ended.
    fn fake_stint_sessions(ended: Arc<Mutex<Vec<String>>>) -> Router {
        use axum::extract::Path;
        use axum::http::StatusCode;
        let requester =
            |headers: &HeaderMap| header(headers, "authorization") == Some("Bearer requester-key");
        Router::new()
            .route(
                "/v1/sessions",
                post(
                    move |headers: HeaderMap, Json(body): Json<serde_json::Value>| async move {
                        if !requester(&headers) {
                            return Err(StatusCode::UNAUTHORIZED);
                        }
                        assert_eq!(body["target"], "t");
                        assert_eq!(body["ttl_s"], STINT_TTL_S);
                        assert!(body["reason"].as_str().is_some_and(|r| !r.is_empty()));
                        if body["credential"] == true {
                            return Ok((
                                StatusCode::CREATED,
                                Json(json!({"id": "ses_1", "state": "active",
                                            "credential": {"id": "crd_1", "kind": "jwt", "access_token": "jwt-1"}})),
                            ));
                        }
                        Ok((
                            StatusCode::CREATED,
                            Json(json!({"id": "ses_1", "state": "active"})),
                        ))
                    },
                ),
            )
            .route(
                "/v1/sessions/{id}/end",
                post(move |headers: HeaderMap, Path(id): Path<String>| async move {
                    if !requester(&headers) {
                        return Err(StatusCode::UNAUTHORIZED);
                    }
                    ended.lock().unwrap().push(id.clone());
                    Ok(Json(json!({"id": id, "state": "ended"})))
                }),
            )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stint_issue_asks_for_the_session_and_its_jwt_in_one_request_and_end_ends_each_pooled_session_once()
     {
        let ended = Arc::new(Mutex::new(Vec::new()));
        let adapter = stint_adapter(serve_app(fake_stint_sessions(Arc::clone(&ended))).await);
        let mut conn = Conn::open(adapter.base()).await.unwrap();
        let issued = adapter.issue(&mut conn).await.unwrap();
        assert_eq!(
            issued,
            Issued {
                session: Some("ses_1".into()),
                token: "jwt-1".into()
            }
        );

        let pool: Vec<_> = (0..20)
            .map(|i| Issued {
                session: Some(format!("ses_{i}")),
                token: "x".into(),
            })
            .collect();
        let workers = workers(&adapter, 4, Job::End { pool }).await.unwrap();
        let spec = LoadSpec::for_duration(Duration::from_secs(10)).with_max_requests(Some(20));
        let result = closed_loop(spec, workers).await;
        assert_eq!((result.ops, result.errors), (20, 0), "{:?}", result.error_samples);
        let mut ended = ended.lock().unwrap().clone();
        ended.sort_unstable_by_key(|id| id[4..].parse::<u32>().unwrap());
        assert_eq!(ended, (0..20).map(|i| format!("ses_{i}")).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bao_adapter_uses_the_vault_token_header_and_token_endpoints() {
        use axum::http::StatusCode;
        let root = |headers: &HeaderMap| header(headers, "x-vault-token") == Some("root");
        let app = Router::new()
            .route(
                "/v1/auth/token/create-orphan",
                post(
                    move |headers: HeaderMap, Json(body): Json<serde_json::Value>| async move {
                        if !root(&headers) {
                            return Err(StatusCode::FORBIDDEN);
                        }
                        assert_eq!(body, json!({"ttl": "5m", "policies": ["default"]}));
                        Ok(Json(
                            json!({"auth": {"client_token": "s.abc", "lease_duration": 300}}),
                        ))
                    },
                ),
            )
            .route(
                "/v1/auth/token/lookup",
                post(
                    move |headers: HeaderMap, Json(body): Json<serde_json::Value>| async move {
                        match (root(&headers), body["token"].as_str()) {
                            (true, Some("s.abc")) => (StatusCode::OK, Json(json!({"data": {"id": "s.abc"}}))),
                            (true, _) => (StatusCode::FORBIDDEN, Json(json!({"errors": ["bad token"]}))),
                            (false, _) => (
                                StatusCode::FORBIDDEN,
                                Json(json!({"errors": ["permission denied"]})),
                            ),
                        }
                    },
                ),
            )
            .route(
                "/v1/auth/token/revoke",
                post(
                    move |headers: HeaderMap, Json(body): Json<serde_json::Value>| async move {
                        if root(&headers) && body["token"] == "s.abc" {
                            StatusCode::NO_CONTENT
                        } else {
                            StatusCode::FORBIDDEN
                        }
                    },
                ),
            );
        let adapter = Adapter::bao(serve_app(app).await, "root");
        assert_eq!(adapter.system(), "openbao");
        let mut conn = Conn::open(adapter.base()).await.unwrap();
        let issued = adapter.issue(&mut conn).await.unwrap();
        assert_eq!(
            issued,
            Issued {
                session: None,
                token: "s.abc".into()
            }
        );
        assert!(adapter.introspect(&mut conn, &issued).await.unwrap());
        assert!(
            !adapter
                .introspect(&mut conn, &self::issued("s.gone"))
                .await
                .unwrap()
        );
        adapter.end(&mut conn, &issued).await.unwrap();
        assert!(adapter.end(&mut conn, &self::issued("s.gone")).await.is_err());
    }

    fn stint_adapter(base: BaseUrl) -> Adapter {
        let fixture = StintFixture {
            target: "t".into(),
            requester_key: "requester-key".into(),
            resource_server_key: "rs-key".into(),
        };
        Adapter {
            base,
            system: System::Stint(Arc::new(fixture)),
        }
    }

    fn issued(token: &str) -> Issued {
        Issued {
            session: None,
            token: token.into(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn introspect_sends_a_form_as_resource_server_over_one_kept_alive_connection_per_worker() {
        let (base, seen) = serve().await;
        let adapter = stint_adapter(base);
        let pool = vec![issued("good-1"), issued("good-2")];
        let workers = workers(&adapter, 3, Job::Introspect { pool }).await.unwrap();
        let spec = LoadSpec::for_duration(Duration::from_secs(10)).with_max_requests(Some(300));
        let result = closed_loop(spec, workers).await;
        assert_eq!(
            (result.ops, result.errors),
            (300, 0),
            "{:?}",
            result.error_samples
        );
        let seen = seen.lock().unwrap();
        assert_eq!(seen.requests, 300);
        assert_eq!(seen.peers.len(), 3, "one keep-alive connection per worker");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn introspect_counts_an_inactive_answer_as_an_error() {
        let (base, _) = serve().await;
        let adapter = stint_adapter(base);
        let mut conn = Conn::open(adapter.base()).await.unwrap();
        assert!(adapter.introspect(&mut conn, &issued("good-x")).await.unwrap());
        assert!(!adapter.introspect(&mut conn, &issued("revoked")).await.unwrap());

        let pool = vec![issued("good-1"), issued("dead-2")];
        let workers = workers(&adapter, 1, Job::Introspect { pool }).await.unwrap();
        let spec = LoadSpec {
            max_error_ratio: 1.0,
            ..LoadSpec::for_duration(Duration::from_secs(10))
        }
        .with_max_requests(Some(10));
        let result = closed_loop(spec, workers).await;
        assert_eq!((result.ops, result.errors), (5, 5));
        assert_eq!(result.error_samples, ["token answered inactive"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wrong_caller_key_is_an_error_naming_the_status() {
        let (base, _) = serve().await;
        let mut adapter = stint_adapter(base);
        adapter.system = System::Stint(Arc::new(StintFixture {
            target: "t".into(),
            requester_key: "k".into(),
            resource_server_key: "wrong".into(),
        }));
        let mut conn = Conn::open(adapter.base()).await.unwrap();
        let error = adapter
            .introspect(&mut conn, &issued("good-1"))
            .await
            .unwrap_err();
        assert!(error.0.starts_with("status 401"), "{error}");
    }

    #[test]
    fn report_line_names_the_figures_and_flags_a_busy_client() {
        let mut h = crate::histogram::Histogram::new();
        h.record(Duration::from_millis(2));
        let report = ScenarioReport {
            system: "stint",
            scenario: Scenario::Introspect,
            concurrency: 16,
            duration_s: 1.0,
            max_requests: None,
            prepared: 10,
            ops: 1,
            errors: 0,
            elapsed_s: 1.0,
            ops_per_s: 1.0,
            latency: h.summary(),
            client_cpu: Some(
                crate::cpu::CpuUsage {
                    cpu: Duration::from_secs(1),
                    wall: Duration::from_secs(1),
                    cores: 2,
                }
                .summary(),
            ),
            error_samples: vec![],
            aborted: None,
        };
        let line = report.line();
        assert!(line.starts_with("stint introspect c=16: 1 ops/s"), "{line}");
        assert!(line.contains("p50 2.00"), "{line}");
        assert!(line.contains("client CPU 50% of 2 cores (CLIENT-BOUND"), "{line}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["scenario"], "introspect");
        assert_eq!(json["client_cpu"]["client_bound"], true);
    }
}
