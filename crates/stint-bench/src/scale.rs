//! `scale`: what a live session (OpenBao: a token) costs the server in memory, and how fast they are
//! created; and `stint-bench ready`, the seconds until a (re)started server is ready.
//!
//! **stint.** A JWT target of its own (`<bench target>-scale`, `max_ttl_s` one day, created with the admin
//! key for the bench's requester group), then `--scale-sessions` sessions of one day, each active at once;
//! with `--scale-with-credentials` each also gets a JWT. **OpenBao.** `--bao-scale-sessions` orphan tokens
//! of one day. With the server's pid, its RSS before and after (2 s after the last creation), and
//! (after − before) / items. Run it first on a fresh server: memory freed by earlier scenarios is reused
//! by the allocator before RSS grows, which makes the per-item figure look smaller than it is.
//!
//! **ready.** `GET /readyz` (stint) or `GET /v1/sys/health` (OpenBao) every `--interval-ms` until it answers
//! 200: a script starts the server, runs `stint-bench ready` at once, and reads how long recovery took.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::bulk::{self, BulkSpec, PhaseReport, RssReport, RssSampler, metric};
use crate::http::{Auth, BaseUrl, Body, Conn};
use crate::load::OpError;
use crate::scenario::{Access, Adapter};

/// What a `scale` run does.
#[derive(Debug, Clone)]
pub struct ScaleSpec {
    /// Sessions (OpenBao: tokens) to create.
    pub sessions: usize,
    /// stint: also issue a JWT for each session.
    pub with_credentials: bool,
    /// Connections creating them.
    pub concurrency: usize,
    /// At most this long creating.
    pub timeout: Duration,
    /// The server process, for its RSS.
    pub pid: Option<u32>,
    /// stint's admin key (creates the scale target, reads `/metrics`).
    pub admin_key: Option<String>,
}

/// Lifetime of the sessions and tokens a scale run creates: they must outlive it.
pub const SCALE_TTL_S: u64 = 86_400;

/// How long after the last creation the server's RSS is read.
pub const SETTLE: Duration = Duration::from_secs(2);

/// Everything a `scale` run measured, as written to `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    /// `stint` or `openbao`.
    pub system: &'static str,
    /// Sessions (OpenBao: tokens) asked for.
    pub requested: usize,
    /// Sessions (tokens) created.
    pub created: u64,
    /// stint: each session also got a JWT.
    pub with_credentials: bool,
    /// stint: the target the sessions are for.
    pub target: Option<String>,
    /// Creating them (for stint with credentials, one operation is a session and its JWT).
    pub create: PhaseReport,
    /// stint: `stint_sessions_active` before.
    pub active_before: Option<f64>,
    /// stint: `stint_sessions_active` after.
    pub active_after: Option<f64>,
    /// The server's resident memory, when its pid was given.
    pub rss: Option<RssReport>,
    /// (RSS after − RSS before) / created, in bytes.
    pub rss_per_item_bytes: Option<f64>,
    /// Anything that did not go as planned.
    pub notes: Vec<String>,
}

impl ScaleReport {
    /// One human-readable line.
    pub fn line(&self) -> String {
        let noun = match (self.system, self.with_credentials) {
            ("stint", true) => "sessions with a JWT",
            ("stint", false) => "sessions",
            _ => "tokens",
        };
        let mut line = format!(
            "{} scale: {} {noun} created {}",
            self.system,
            self.created,
            self.create.brief()
        );
        if let (Some(rss), Some(per)) = (&self.rss, self.rss_per_item_bytes) {
            line.push_str(&format!("; {}, {per:.0} B per item", rss.brief()));
        } else {
            line.push_str("; RSS not measured (no pid)");
        }
        if let (Some(before), Some(after)) = (self.active_before, self.active_after) {
            line.push_str(&format!("; active {before:.0} → {after:.0}"));
        }
        if !self.notes.is_empty() {
            line.push_str(&format!("; {}", self.notes.join("; ")));
        }
        line
    }
}

/// (after − before) KiB spread over `items`, in bytes; `None` without items.
pub fn per_item_bytes(rss: &RssReport, items: u64) -> Option<f64> {
    (items > 0).then(|| (rss.after_kib as f64 - rss.before_kib as f64) * 1024.0 / items as f64)
}

#[derive(Deserialize)]
struct SessionAnswer {
    id: String,
    state: String,
}

/// Runs `scale` against `adapter`'s system.
pub async fn run(adapter: &Adapter, spec: &ScaleSpec) -> anyhow::Result<ScaleReport> {
    if spec.sessions == 0 {
        bail!("scale needs at least one session");
    }
    match adapter.access() {
        Access::Stint {
            target,
            group,
            requester_key,
            ..
        } => {
            let admin = spec
                .admin_key
                .as_deref()
                .context("scale needs stint's admin key (to create its target)")?;
            stint(adapter.base(), admin, target, group, requester_key.into(), spec).await
        }
        Access::Bao { token } => bao(adapter.base(), token.into(), spec).await,
    }
}

async fn stint(
    base: &BaseUrl,
    admin: &str,
    bench_target: &str,
    group: &str,
    requester: Arc<str>,
    spec: &ScaleSpec,
) -> anyhow::Result<ScaleReport> {
    let mut conn = Conn::open(base).await.context("connecting to stint")?;
    let target: Arc<str> = format!("{bench_target}-scale").into();
    let body = json!({
        "name": &*target, "kind": "jwt", "max_ttl_s": SCALE_TTL_S, "token_ttl_s": 3600,
        "requester_groups": [group], "approvals_required": 0,
    });
    conn.post_json("/v1/targets", Auth::Bearer(admin), &body)
        .await
        .and_then(|a| a.expect(&[201, 409]))
        .with_context(|| format!("creating the scale target `{target}`"))?;
    let active = async |conn: &mut Conn| -> Option<f64> {
        let text = conn.get("/metrics", Auth::Bearer(admin)).await.ok()?;
        metric(&String::from_utf8_lossy(&text.body), "stint_sessions_active", &[])
    };
    let active_before = active(&mut conn).await;
    let rss = RssSampler::start(spec.pid).context("reading the stint server's RSS")?;
    let with_credentials = spec.with_credentials;
    let create = bulk::bulk(
        base,
        BulkSpec::new("scale: create", spec.sessions, spec.concurrency, spec.timeout),
        {
            let (target, requester) = (Arc::clone(&target), Arc::clone(&requester));
            move |conn, _| {
                let body = json!({"target": &*target, "reason": "stint-bench scale", "ttl_s": SCALE_TTL_S});
                let requester = Arc::clone(&requester);
                Box::pin(async move {
                    let auth = Auth::Bearer(&requester);
                    let s: SessionAnswer = conn
                        .post_json("/v1/sessions", auth, &body)
                        .await?
                        .expect(&[201])?
                        .json()?;
                    if s.state != "active" {
                        return Err(OpError::new(format!(
                            "session `{}` is `{}`, not active",
                            s.id, s.state
                        )));
                    }
                    if with_credentials {
                        let path = format!("/v1/sessions/{}/credentials", s.id);
                        conn.send(hyper::Method::POST, &path, auth, Body::Empty)
                            .await?
                            .expect(&[201])?;
                    }
                    Ok(())
                })
            }
        },
    )
    .await?;
    tokio::time::sleep(SETTLE).await;
    let rss = rss.map(RssSampler::finish).transpose()?;
    let active_after = active(&mut conn).await;
    let mut notes = Vec::new();
    if let Some(why) = &create.report.stopped {
        notes.push(format!("creating stopped early: {why}"));
    }
    let created = create.report.ok;
    Ok(ScaleReport {
        system: "stint",
        requested: spec.sessions,
        created,
        with_credentials,
        target: Some(target.to_string()),
        rss_per_item_bytes: rss.as_ref().and_then(|r| per_item_bytes(r, created)),
        create: create.report,
        active_before,
        active_after,
        rss,
        notes,
    })
}

async fn bao(base: &BaseUrl, root: Arc<str>, spec: &ScaleSpec) -> anyhow::Result<ScaleReport> {
    let rss = RssSampler::start(spec.pid).context("reading the OpenBao server's RSS")?;
    let ttl = format!("{SCALE_TTL_S}s");
    let create = bulk::bulk(
        base,
        BulkSpec::new("scale: create", spec.sessions, spec.concurrency, spec.timeout),
        move |conn, _| {
            let root = Arc::clone(&root);
            let body = json!({"ttl": ttl, "policies": ["default"]});
            Box::pin(async move {
                conn.post_json("/v1/auth/token/create-orphan", Auth::VaultToken(&root), &body)
                    .await?
                    .expect(&[200])?;
                Ok(())
            })
        },
    )
    .await?;
    tokio::time::sleep(SETTLE).await;
    let rss = rss.map(RssSampler::finish).transpose()?;
    let mut notes = Vec::new();
    if let Some(why) = &create.report.stopped {
        notes.push(format!("creating stopped early: {why}"));
    }
    let created = create.report.ok;
    Ok(ScaleReport {
        system: "openbao",
        requested: spec.sessions,
        created,
        with_credentials: false,
        target: None,
        rss_per_item_bytes: rss.as_ref().and_then(|r| per_item_bytes(r, created)),
        create: create.report,
        active_before: None,
        active_after: None,
        rss,
        notes,
    })
}

// ----- ready -------------------------------------------------------------------------------------------

/// Which kind of server `ready` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadySystem {
    /// `GET /readyz`.
    Stint,
    /// `GET /v1/sys/health` (200: initialized, unsealed, active).
    Openbao,
}

impl ReadySystem {
    /// The path polled.
    pub fn path(self) -> &'static str {
        match self {
            Self::Stint => "/readyz",
            Self::Openbao => "/v1/sys/health",
        }
    }
}

/// `stint-bench ready`: poll a server until it is ready and print how long that took.
#[derive(Debug, Clone, clap::Args)]
pub struct ReadyArgs {
    /// The server, e.g. `http://127.0.0.1:8300`.
    #[arg(long)]
    pub url: String,
    /// What kind of server it is.
    #[arg(long, value_enum, default_value = "stint")]
    pub system: ReadySystem,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120.0)]
    pub timeout: f64,
    /// Milliseconds between polls.
    #[arg(long, default_value_t = 20)]
    pub interval_ms: u64,
    /// Also write the figures to this file as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// How long a server took to become ready, as written to `--json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReadyReport {
    /// What kind of server.
    pub system: ReadySystem,
    /// Its URL.
    pub url: String,
    /// The path polled.
    pub path: &'static str,
    /// Seconds from the first poll until a 200 answer.
    pub ready_s: f64,
    /// Seconds from the first poll until any HTTP answer (the server listening).
    pub first_answer_s: Option<f64>,
    /// Polls sent.
    pub polls: u64,
}

impl ReadyReport {
    /// One human-readable line.
    pub fn line(&self) -> String {
        let first = self
            .first_answer_s
            .map_or(String::new(), |s| format!("first answer after {s:.3} s, "));
        format!(
            "{} ready after {:.3} s ({first}{} polls of {}{})",
            match self.system {
                ReadySystem::Stint => "stint",
                ReadySystem::Openbao => "openbao",
            },
            self.ready_s,
            self.polls,
            self.url,
            self.path
        )
    }
}

/// Longest a single poll may take.
const POLL_TIMEOUT: Duration = Duration::from_secs(2);

/// Polls `base` every `interval` until its readiness path answers 200; fails after `timeout`.
pub async fn wait_ready(
    base: &BaseUrl,
    system: ReadySystem,
    timeout: Duration,
    interval: Duration,
) -> anyhow::Result<ReadyReport> {
    let begun = Instant::now();
    let path = system.path();
    let mut conn: Option<Conn> = None;
    let mut polls = 0u64;
    let mut first_answer = None;
    loop {
        polls += 1;
        let attempt = tokio::time::timeout(POLL_TIMEOUT, async {
            if conn.is_none() {
                conn = Some(Conn::open(base).await?);
            }
            let c = conn.as_mut().ok_or_else(|| OpError::new("no connection"))?;
            c.get(path, Auth::None).await
        })
        .await;
        let last = match attempt {
            Ok(Ok(answer)) => {
                let at = begun.elapsed().as_secs_f64();
                first_answer.get_or_insert(at);
                if answer.status.as_u16() == 200 {
                    return Ok(ReadyReport {
                        system,
                        url: base.to_string(),
                        path,
                        ready_s: at,
                        first_answer_s: first_answer,
                        polls,
                    });
                }
                format!("status {}", answer.status.as_u16())
            }
            Ok(Err(e)) => {
                conn = None;
                e.0
            }
            Err(_) => {
                conn = None;
                format!("no answer within {POLL_TIMEOUT:?}")
            }
        };
        if begun.elapsed() + interval > timeout {
            bail!(
                "`{base}{path}` not ready after {:.1} s ({polls} polls; last: {last})",
                timeout.as_secs_f64()
            );
        }
        tokio::time::sleep(interval).await;
    }
}

/// `stint-bench ready`: waits, prints the line, and writes `--json` if asked.
pub async fn ready_command(args: ReadyArgs) -> anyhow::Result<()> {
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        bail!("`--timeout` must be a positive number of seconds");
    }
    let base = BaseUrl::parse(&args.url)?;
    let report = wait_ready(
        &base,
        args.system,
        Duration::from_secs_f64(args.timeout),
        Duration::from_millis(args.interval_ms.max(1)),
    )
    .await?;
    println!("{}", report.line());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use axum::Router;
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::get;

    use super::*;

    #[test]
    fn rss_per_item_spreads_the_growth() {
        let rss = RssReport {
            pid: 1,
            before_kib: 10_000,
            peak_kib: 60_000,
            after_kib: 50_000,
        };
        assert_eq!(per_item_bytes(&rss, 40_960), Some(1000.0));
        assert_eq!(per_item_bytes(&rss, 0), None);
        let shrunk = RssReport {
            after_kib: 9_000,
            ..rss
        };
        assert_eq!(
            per_item_bytes(&shrunk, 1024),
            Some(-1000.0),
            "a shrink is reported, not hidden"
        );
    }

    /// Answers 503 to the first `starting` polls of `path`, then 200; counts polls.
    async fn fake_server(path: &'static str, starting: u64) -> (BaseUrl, Arc<AtomicU64>) {
        let polls = Arc::new(AtomicU64::new(0));
        let app = Router::new()
            .route(
                path,
                get(move |State(polls): State<Arc<AtomicU64>>| async move {
                    if polls.fetch_add(1, Ordering::Relaxed) < starting {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::OK
                    }
                }),
            )
            .with_state(Arc::clone(&polls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (BaseUrl::parse(&format!("http://{addr}")).unwrap(), polls)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ready_polls_until_the_readiness_path_answers_200() {
        let (base, polls) = fake_server("/readyz", 5).await;
        let report = wait_ready(
            &base,
            ReadySystem::Stint,
            Duration::from_secs(10),
            Duration::from_millis(20),
        )
        .await
        .unwrap();
        assert_eq!(report.polls, 6);
        assert_eq!(polls.load(Ordering::Relaxed), 6);
        assert!(report.ready_s >= 0.1, "five waits of 20 ms: {report:?}");
        assert!(report.first_answer_s.unwrap() < report.ready_s);
        assert_eq!(report.path, "/readyz");
        assert!(
            report.line().starts_with("stint ready after "),
            "{}",
            report.line()
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["system"], "stint");

        let (base, _) = fake_server("/v1/sys/health", 0).await;
        let bao = wait_ready(
            &base,
            ReadySystem::Openbao,
            Duration::from_secs(10),
            Duration::from_millis(20),
        )
        .await
        .unwrap();
        assert_eq!((bao.polls, bao.path), (1, "/v1/sys/health"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ready_waits_for_a_server_that_is_not_listening_yet_and_gives_up_in_time() {
        // A port with nothing on it: take one, then free it.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let base = BaseUrl::parse(&format!("http://{addr}")).unwrap();
        let begun = Instant::now();
        let error = wait_ready(
            &base,
            ReadySystem::Stint,
            Duration::from_millis(300),
            Duration::from_millis(20),
        )
        .await
        .unwrap_err();
        assert!(begun.elapsed() < Duration::from_secs(3));
        let message = error.to_string();
        assert!(message.contains("not ready after 0.3 s"), "{message}");
        assert!(message.contains("connect"), "{message}");

        // Now something starts listening there half-way.
        let waiter = tokio::spawn({
            let base = base.clone();
            async move {
                wait_ready(
                    &base,
                    ReadySystem::Stint,
                    Duration::from_secs(10),
                    Duration::from_millis(20),
                )
                .await
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let app = Router::new().route("/readyz", get(|| async { StatusCode::OK }));
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let report = waiter.await.unwrap().unwrap();
        assert!(report.ready_s >= 0.15, "{report:?}");
        assert!(report.polls > 2, "{report:?}");
    }
}
