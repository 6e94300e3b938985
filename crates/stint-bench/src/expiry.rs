//! `mass-expiry`: many sessions (OpenBao: tokens) sharing one deadline, and how each system lets them go.
//!
//! **stint.** Every session is requested with the same future `not_before` and the same `ttl_s` on a JWT
//! target needing no approval, so each is `scheduled` and the scheduler activates all of them at
//! `not_before`; their common deadline is `not_before + ttl_s`, to the second. Once active, each gets one
//! JWT. The start and lifetime are planned from a probe of the creation and issuing rates (a few sessions
//! created, given a credential and ended again), with room to spare; creating stops a second before
//! `not_before` and issuing a second before the deadline, and the report says how many made it.
//!
//! **OpenBao.** Orphan tokens, each created with `ttl` = the deadline − now in milliseconds, so all expire
//! within a few milliseconds of one instant (each token's own `expire_time` is read back and used).
//!
//! Around the deadline, `--expiry-samples` tokens spread over the whole set are checked in a tight loop
//! (stint: RFC 7662 introspection; OpenBao: `auth/token/lookup` with the bench's token, and separately
//! `auth/token/lookup-self` presenting each token itself) until each answers inactive: the lag from its
//! deadline to that answer, and every *active* answer to a request sent after the deadline (stint judges
//! the deadline at every answer, so that count must be 0; OpenBao's `lookup` answers 200 until its
//! expiration manager has revoked the token, `lookup-self` refuses an expired token at once). Meanwhile the server's own record is
//! polled until every item is gone: stint's `stint_sessions_ended_total{reason="deadline"}` (a JWT's
//! revocation is committed with its session's end), OpenBao's lease count under
//! `sys/leases/lookup/auth/token/create-orphan`. stint's sampled sessions are then read back: `ended` for
//! `deadline`, every credential with a `revoked_at`. With a server pid, its RSS before, at peak (every
//! 100 ms) and after.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::bulk::{
    self, Bulk, BulkSpec, PhaseReport, RssReport, RssSampler, metric, parse_rfc3339, rfc3339,
    sleep_until_unix, unix_now,
};
use crate::histogram::nearest_rank;
use crate::http::{Auth, BaseUrl, Body, Conn};
use crate::load::OpError;
use crate::scenario::{Access, Adapter};

/// What a `mass-expiry` run does.
#[derive(Debug, Clone)]
pub struct ExpirySpec {
    /// Sessions (OpenBao: tokens) sharing the deadline.
    pub sessions: usize,
    /// Tokens watched around the deadline.
    pub samples: usize,
    /// Connections for creating and issuing.
    pub concurrency: usize,
    /// How long after the deadline to wait for every expiry to be answered and recorded.
    pub timeout: Duration,
    /// The server process, for its RSS.
    pub pid: Option<u32>,
    /// stint's admin key, sent with `GET /metrics`.
    pub admin_key: Option<String>,
}

/// When the items start and end, chosen from the probed rates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Plan {
    /// Probed creations per second.
    pub create_per_s: f64,
    /// stint: probed credentials issued per second.
    pub issue_per_s: Option<f64>,
    /// stint: the common `not_before`, seconds since the epoch.
    pub not_before_unix: Option<i64>,
    /// stint: the `ttl_s` of every session.
    pub ttl_s: Option<u64>,
    /// The common deadline, seconds since the epoch.
    pub deadline_unix: i64,
}

/// How much slower than the probe the bulk phases may be and still fit.
const SAFETY: f64 = 1.3;
/// Seconds added to every planned phase (connections, a slow start, the clock's second boundaries).
const SLACK_S: f64 = 10.0;
/// The longest `ttl_s` a plan asks for: the `max_ttl_s` of the target [`Adapter::stint`] creates.
const MAX_TTL_S: u64 = 3600;

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// A probe measured no progress.
    #[error("the probe measured no progress ({0}/s); is the server answering?")]
    NoRate(f64),
}

fn check_rate(rate: f64) -> Result<f64, PlanError> {
    if rate.is_finite() && rate > 0.0 {
        Ok(rate)
    } else {
        Err(PlanError::NoRate(rate))
    }
}

/// stint's plan at wall time `now` for `n` sessions: `not_before` leaves time to create them all
/// (`n / create_per_s`, × [`SAFETY`], + [`SLACK_S`] halved), and `ttl_s` time for the scheduler to
/// activate them (taken to cost what creating did) and to issue a JWT for each, × [`SAFETY`] + [`SLACK_S`],
/// at most [`MAX_TTL_S`].
pub fn plan_stint(now: f64, n: usize, create_per_s: f64, issue_per_s: f64) -> Result<Plan, PlanError> {
    let create_per_s = check_rate(create_per_s)?;
    let issue_per_s = check_rate(issue_per_s)?;
    let n = n as f64;
    let lead = n / create_per_s * SAFETY + SLACK_S / 2.0;
    let not_before = (now + lead).ceil() as i64;
    let ttl = (((n / create_per_s + n / issue_per_s) * SAFETY + SLACK_S).ceil() as u64).min(MAX_TTL_S);
    Ok(Plan {
        create_per_s,
        issue_per_s: Some(issue_per_s),
        not_before_unix: Some(not_before),
        ttl_s: Some(ttl),
        deadline_unix: not_before + ttl as i64,
    })
}

/// OpenBao's plan at wall time `now` for `n` tokens: the deadline leaves time to create them all
/// (× [`SAFETY`] + [`SLACK_S`]).
pub fn plan_bao(now: f64, n: usize, create_per_s: f64) -> Result<Plan, PlanError> {
    let create_per_s = check_rate(create_per_s)?;
    let deadline = (now + n as f64 / create_per_s * SAFETY + SLACK_S).ceil() as i64;
    Ok(Plan {
        create_per_s,
        issue_per_s: None,
        not_before_unix: None,
        ttl_s: None,
        deadline_unix: deadline,
    })
}

/// Percentiles of some lags.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LagSummary {
    /// Lags measured.
    pub count: usize,
    /// Median, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile (nearest rank), in milliseconds.
    pub p99_ms: f64,
    /// Largest, in milliseconds.
    pub max_ms: f64,
}

impl LagSummary {
    /// The nearest-rank percentiles of `lags_ms`; `None` when empty. NaNs are ignored.
    pub fn of(lags_ms: &[f64]) -> Option<Self> {
        let mut sorted: Vec<f64> = lags_ms.iter().copied().filter(|l| !l.is_nan()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let rank = nearest_rank(q, sorted.len() as u64);
            sorted[usize::try_from(rank)
                .unwrap_or(1)
                .saturating_sub(1)
                .min(sorted.len() - 1)]
        };
        Some(Self {
            count: sorted.len(),
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: sorted[sorted.len() - 1],
        })
    }

    /// `p50 … p99 … max … ms`.
    pub fn brief(&self) -> String {
        format!(
            "p50 {:.1} p99 {:.1} max {:.1} ms",
            self.p50_ms, self.p99_ms, self.max_ms
        )
    }
}

/// Items the server still held at some time after the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TimelinePoint {
    /// Seconds after the deadline.
    pub t_s: f64,
    /// Items expired but not yet recorded ended (stint) or whose lease was not yet cleared (OpenBao).
    pub uncleared: u64,
}

/// What checking the sampled tokens around the deadline showed, as written to `--json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WatchSummary {
    /// Tokens watched.
    pub samples: usize,
    /// From each sampled token's deadline until the first answer saying it is no longer good.
    pub inactive_lag: Option<LagSummary>,
    /// Median time to check every sampled token of one connection once: the resolution of
    /// `inactive_lag`, in milliseconds.
    pub poll_round_ms: Option<f64>,
    /// Active answers to requests sent after the token's deadline (stint: must be 0).
    pub accepted_after_deadline: u64,
    /// Sampled tokens answered inactive before their deadline.
    pub inactive_before_deadline: usize,
    /// Sampled tokens still answered active when the watch gave up.
    pub never_inactive: usize,
    /// Checks that failed (neither active nor inactive).
    pub check_errors: u64,
    /// The sampled tokens' own deadlines, latest − earliest, in milliseconds (0 for stint: one instant).
    pub deadline_spread_ms: f64,
}

impl WatchSummary {
    /// `inactive after p50 … (n samples, round … ms), k accepted after deadline`.
    pub fn brief(&self) -> String {
        let mut s = match &self.inactive_lag {
            Some(lag) => format!(
                "inactive after {} ({} samples, round {:.1} ms)",
                lag.brief(),
                lag.count,
                self.poll_round_ms.unwrap_or(f64::NAN)
            ),
            None => format!("none of {} samples answered inactive", self.samples),
        };
        s.push_str(&format!(
            ", {} accepted after deadline",
            self.accepted_after_deadline
        ));
        if self.never_inactive > 0 {
            s.push_str(&format!(", {} never inactive", self.never_inactive));
        }
        if self.inactive_before_deadline > 0 {
            s.push_str(&format!(
                ", {} inactive before deadline",
                self.inactive_before_deadline
            ));
        }
        s
    }
}

/// Everything a `mass-expiry` run measured, as written to `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct ExpiryReport {
    /// `stint` or `openbao`.
    pub system: &'static str,
    /// Sessions (OpenBao: tokens) asked for.
    pub requested: usize,
    /// Sessions (tokens) created with the common deadline.
    pub created: usize,
    /// Live tokens before the deadline: stint's JWTs (one per session), OpenBao's tokens.
    pub tokens: usize,
    /// Start and deadline, and the rates they were planned from.
    pub plan: Plan,
    /// The common deadline, RFC 3339.
    pub deadline: String,
    /// The probe creating items to plan from.
    pub probe: PhaseReport,
    /// Creating the items.
    pub create: PhaseReport,
    /// stint: issuing a JWT for every session.
    pub issue: Option<PhaseReport>,
    /// stint: seconds from `not_before` until every session was active (the scheduler's mass activation).
    pub activation_s: Option<f64>,
    /// The samples checked as a resource server would (stint: introspection; OpenBao:
    /// `auth/token/lookup` with the bench's token).
    #[serde(flatten)]
    pub watch: WatchSummary,
    /// OpenBao: the same samples checked by presenting each token itself (`auth/token/lookup-self`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lookup_self: Option<WatchSummary>,
    /// Seconds from the deadline until the server recorded every item gone (stint: ended for `deadline`,
    /// its credentials revoked in the same commit; OpenBao: no lease left); `None` if it never did.
    pub all_revoked_s: Option<f64>,
    /// The most items expired but not yet recorded gone, after the deadline.
    pub max_uncleared: Option<u64>,
    /// Items not yet recorded gone, about once a second after the deadline.
    pub uncleared: Vec<TimelinePoint>,
    /// stint: sampled sessions read back `ended` for `deadline` with every credential revoked.
    pub confirmed: Option<usize>,
    /// stint: `revoked_at` − deadline of the sampled credentials, as the server recorded it.
    pub recorded_revocation_lag: Option<LagSummary>,
    /// The server's resident memory, when its pid was given.
    pub rss: Option<RssReport>,
    /// Anything that did not go as planned.
    pub notes: Vec<String>,
}

impl ExpiryReport {
    /// One human-readable line.
    pub fn line(&self) -> String {
        let noun = if self.system == "stint" {
            "sessions"
        } else {
            "tokens"
        };
        let mut line = format!(
            "{} mass-expiry: {} {noun} ({} tokens) due {}; {}",
            self.system,
            self.created,
            self.tokens,
            self.deadline,
            self.watch.brief()
        );
        if let Some(own) = &self.lookup_self {
            line.push_str(&format!("; presented itself: {}", own.brief()));
        }
        match self.all_revoked_s {
            Some(s) => line.push_str(&format!("; all recorded revoked after {s:.2} s")),
            None => line.push_str("; NOT all recorded revoked"),
        }
        if let Some(max) = self.max_uncleared {
            line.push_str(&format!(" (max uncleared {max})"));
        }
        if let Some(a) = self.activation_s {
            line.push_str(&format!("; activation {a:.2} s"));
        }
        if let Some(rss) = &self.rss {
            line.push_str(&format!("; {}", rss.brief()));
        }
        if !self.notes.is_empty() {
            line.push_str(&format!("; {}", self.notes.join("; ")));
        }
        line
    }
}

/// Runs `mass-expiry` against `adapter`'s system.
pub async fn run(adapter: &Adapter, spec: &ExpirySpec) -> anyhow::Result<ExpiryReport> {
    if spec.sessions == 0 || spec.samples == 0 {
        bail!("mass-expiry needs at least one session and one sample");
    }
    match adapter.access() {
        Access::Stint {
            target,
            requester_key,
            resource_server_key,
            ..
        } => {
            let keys = StintKeys {
                target: target.into(),
                requester: requester_key.into(),
                resource_server: resource_server_key.into(),
            };
            stint(adapter.base(), keys, spec).await
        }
        Access::Bao { token } => bao(adapter.base(), token.into(), spec).await,
    }
}

/// Probe size: a fiftieth of the run, between 20 and 500 items.
fn probe_size(n: usize) -> usize {
    (n / 50).clamp(20, 500)
}

/// How long each probe phase may take.
const PROBE_LIMIT: Duration = Duration::from_secs(120);

/// How long reading the sampled sessions back may take.
const CONFIRM_LIMIT: Duration = Duration::from_secs(120);

/// Fails unless a phase got at least one item through.
fn require_some<T>(phase: &Bulk<T>, what: &str) -> anyhow::Result<()> {
    if phase.report.ok == 0 {
        bail!(
            "{what}: none succeeded ({})",
            phase.report.error_samples.join("; ")
        );
    }
    Ok(())
}

/// The successful items of a phase, in order.
fn successes<T: Clone>(phase: &Bulk<T>) -> Arc<[T]> {
    phase.items.iter().flatten().cloned().collect()
}

fn secs_until(unix_s: f64) -> Duration {
    Duration::from_secs_f64((unix_s - unix_now()).max(0.0))
}

/// Watches `samples` with each of `checkers` while polling `left` (items the server has not yet recorded
/// gone) every `every`, from the deadline until everything is gone or `give_up`.
async fn around_deadline<F, Fut>(
    base: &BaseUrl,
    checkers: Vec<Checker>,
    samples: &[Sample],
    (deadline, give_up): (f64, f64),
    every: Duration,
    left: F,
) -> anyhow::Result<(Vec<WatchResult>, Cleared)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, OpError>>,
{
    let watches: Vec<_> = checkers
        .into_iter()
        .map(|checker| {
            let (base, samples) = (base.clone(), samples.to_vec());
            tokio::spawn(async move { watch(base, checker, samples, deadline, give_up).await })
        })
        .collect();
    let cleared = poll_cleared(deadline, give_up, every, left).await;
    let mut results = Vec::with_capacity(watches.len());
    for w in watches {
        results.push(w.await.context("a watch task panicked")??);
    }
    Ok((results, cleared))
}

// ----- stint ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct StintKeys {
    target: Arc<str>,
    requester: Arc<str>,
    resource_server: Arc<str>,
}

#[derive(Deserialize)]
struct SessionAnswer {
    id: String,
    state: String,
}

#[derive(Deserialize)]
struct CredentialAnswer {
    access_token: String,
}

#[derive(Deserialize)]
struct SessionView {
    state: String,
    end_reason: Option<String>,
    credentials: Vec<CredentialView>,
}

#[derive(Deserialize)]
struct CredentialView {
    revoked_at: Option<String>,
}

async fn stint(base: &BaseUrl, keys: StintKeys, spec: &ExpirySpec) -> anyhow::Result<ExpiryReport> {
    let rss = RssSampler::start(spec.pid).context("reading the stint server's RSS")?;
    let conc = spec.concurrency.max(1);
    let mut notes = Vec::new();
    let (probe, issue_per_s) = stint_probe(base, &keys, probe_size(spec.sessions), conc, &mut notes).await?;
    let plan = plan_stint(unix_now(), spec.sessions, probe.per_s, issue_per_s)?;
    let (Some(not_before), Some(ttl_s)) = (plan.not_before_unix, plan.ttl_s) else {
        bail!("internal: a stint plan without not_before");
    };
    let deadline = plan.deadline_unix as f64;
    eprintln!(
        "stint mass-expiry: {} sessions, not_before {} (in {:.0} s), deadline {} (ttl {ttl_s} s)",
        spec.sessions,
        rfc3339(not_before),
        not_before as f64 - unix_now(),
        rfc3339(plan.deadline_unix)
    );

    let create = stint_create_scheduled(base, &keys, spec.sessions, conc, not_before, ttl_s).await?;
    require_some(&create, "creating scheduled sessions")?;
    if let Some(why) = &create.report.stopped {
        notes.push(format!("creating stopped early: {why}"));
    }
    let ids = successes(&create);
    let created = ids.len();

    let metrics = Metrics::new(base, spec.admin_key.as_deref());
    let active0 = metrics
        .value("stint_sessions_active", &[])
        .await?
        .context("`GET /metrics` has no `stint_sessions_active`")?;
    sleep_until_unix(not_before as f64).await;
    let activation_s = metrics
        .wait_for_active(active0 + created as f64, not_before as f64, deadline - 1.0)
        .await;
    if activation_s.is_none() {
        notes.push(format!(
            "not all {created} sessions were active a second before the deadline"
        ));
    }

    let issue = stint_issue(base, &keys, &ids, conc, deadline).await?;
    if let Some(why) = &issue.report.stopped {
        notes.push(format!("issuing stopped early: {why}"));
    }
    let with_token: Vec<(&String, &String)> = ids
        .iter()
        .zip(&issue.items)
        .filter_map(|(id, token)| Some((id, token.as_ref()?)))
        .collect();
    if with_token.is_empty() {
        bail!(
            "no credential issued before the deadline ({})",
            issue.report.error_samples.join("; ")
        );
    }
    let samples: Vec<Sample> = bulk::spread(with_token.len(), spec.samples)
        .into_iter()
        .map(|i| Sample {
            session: Some(with_token[i].0.clone()),
            token: with_token[i].1.clone(),
            deadline: Some(deadline),
        })
        .collect();

    // Around the deadline: the samples, and the server's count of sessions ended for `deadline`.
    let ended = |m: Metrics| async move {
        Ok::<_, OpError>(
            m.value("stint_sessions_ended_total", &[("reason", "deadline")])
                .await?
                .unwrap_or(0.0),
        )
    };
    let ended0 = ended(metrics.clone()).await?;
    let checker = Checker::Stint {
        resource_server_key: Arc::clone(&keys.resource_server),
    };
    let give_up = deadline + spec.timeout.as_secs_f64();
    let (watched, cleared) = around_deadline(
        base,
        vec![checker],
        &samples,
        (deadline, give_up),
        Duration::from_millis(100),
        || {
            let m = metrics.clone();
            async move {
                let gone = (ended(m).await? - ended0).max(0.0) as u64;
                Ok((created as u64).saturating_sub(gone))
            }
        },
    )
    .await?;

    let sessions: Vec<String> = samples.iter().filter_map(|s| s.session.clone()).collect();
    let (confirmed, recorded_lags) = stint_confirm(base, &keys, sessions, deadline, conc, &mut notes).await?;

    let rss = rss.map(RssSampler::finish).transpose()?;
    Ok(ExpiryReport {
        system: "stint",
        requested: spec.sessions,
        created,
        tokens: with_token.len(),
        plan,
        deadline: rfc3339(plan.deadline_unix),
        probe,
        create: create.report,
        issue: Some(issue.report),
        activation_s,
        watch: watched
            .first()
            .map(WatchResult::summary)
            .context("internal: no watch result")?,
        lookup_self: None,
        all_revoked_s: cleared.all_gone_s,
        max_uncleared: cleared.max_uncleared,
        uncleared: cleared.timeline,
        confirmed: Some(confirmed),
        recorded_revocation_lag: LagSummary::of(&recorded_lags),
        rss,
        notes,
    })
}

/// Creates `k` sessions, issues a JWT for each and ends them again (an ended session leaves no timer and
/// no `deadline` count behind): the creation phase's report and the issuing rate.
async fn stint_probe(
    base: &BaseUrl,
    keys: &StintKeys,
    k: usize,
    conc: usize,
    notes: &mut Vec<String>,
) -> anyhow::Result<(PhaseReport, f64)> {
    let create = bulk::bulk(base, BulkSpec::new("probe: create", k, conc, PROBE_LIMIT), {
        let keys = keys.clone();
        move |conn, _| {
            let keys = keys.clone();
            Box::pin(async move {
                let body = json!({"target": &*keys.target, "reason": "stint-bench probe", "ttl_s": 600});
                let s: SessionAnswer = conn
                    .post_json("/v1/sessions", Auth::Bearer(&keys.requester), &body)
                    .await?
                    .expect(&[201])?
                    .json()?;
                Ok(s.id)
            })
        }
    })
    .await?;
    require_some(&create, "probe: creating sessions")?;
    let ids = successes(&create);
    let issue = bulk::bulk(
        base,
        BulkSpec::new("probe: issue", ids.len(), conc, PROBE_LIMIT),
        {
            let (keys, ids) = (keys.clone(), Arc::clone(&ids));
            move |conn, i| {
                let (keys, ids) = (keys.clone(), Arc::clone(&ids));
                Box::pin(async move { issue_jwt(conn, &keys.requester, &ids[i], None).await })
            }
        },
    )
    .await?;
    require_some(&issue, "probe: issuing credentials")?;
    let end = bulk::bulk(base, BulkSpec::new("probe: end", ids.len(), conc, PROBE_LIMIT), {
        let (keys, ids) = (keys.clone(), Arc::clone(&ids));
        move |conn, i| {
            let (keys, ids) = (keys.clone(), Arc::clone(&ids));
            Box::pin(async move {
                let path = format!("/v1/sessions/{}/end", ids[i]);
                let body = json!({"reason": "stint-bench probe"});
                conn.post_json(&path, Auth::Bearer(&keys.requester), &body)
                    .await?
                    .expect(&[200])?;
                Ok(())
            })
        }
    })
    .await?;
    if end.report.errors > 0 {
        notes.push(format!("{} probe sessions not ended", end.report.errors));
    }
    Ok((create.report, issue.report.per_s))
}

/// Requests `n` sessions, each `scheduled` to start at `not_before` and last `ttl_s`; stops a second
/// before `not_before` (a later one would start at once, off the common deadline).
async fn stint_create_scheduled(
    base: &BaseUrl,
    keys: &StintKeys,
    n: usize,
    conc: usize,
    not_before: i64,
    ttl_s: u64,
) -> anyhow::Result<Bulk<String>> {
    let limit = secs_until(not_before as f64 - 1.0);
    let keys = keys.clone();
    let not_before = rfc3339(not_before);
    bulk::bulk(
        base,
        BulkSpec::new("create (scheduled)", n, conc, limit),
        move |conn, _| {
            let keys = keys.clone();
            let body = json!({
                "target": &*keys.target, "reason": "stint-bench mass-expiry",
                "ttl_s": ttl_s, "not_before": not_before,
            });
            Box::pin(async move {
                let s: SessionAnswer = conn
                    .post_json("/v1/sessions", Auth::Bearer(&keys.requester), &body)
                    .await?
                    .expect(&[201])?
                    .json()?;
                if s.state != "scheduled" {
                    return Err(OpError::new(format!(
                        "session `{}` is `{}`, not scheduled",
                        s.id, s.state
                    )));
                }
                Ok(s.id)
            })
        },
    )
    .await
}

/// One JWT for each of `ids`, until a second before the deadline. A session the scheduler has not
/// activated yet answers 409 and is retried.
async fn stint_issue(
    base: &BaseUrl,
    keys: &StintKeys,
    ids: &Arc<[String]>,
    conc: usize,
    deadline: f64,
) -> anyhow::Result<Bulk<String>> {
    let spec = BulkSpec::new("issue", ids.len(), conc, secs_until(deadline - 1.0));
    let (keys, ids) = (keys.clone(), Arc::clone(ids));
    bulk::bulk(base, spec, move |conn, i| {
        let (keys, ids) = (keys.clone(), Arc::clone(&ids));
        Box::pin(async move { issue_jwt(conn, &keys.requester, &ids[i], Some(deadline - 1.0)).await })
    })
    .await
}

/// Reads `sessions` back after the deadline: how many are `ended` for `deadline` with every credential
/// revoked, and each credential's `revoked_at` − deadline in milliseconds.
async fn stint_confirm(
    base: &BaseUrl,
    keys: &StintKeys,
    sessions: Vec<String>,
    deadline: f64,
    conc: usize,
    notes: &mut Vec<String>,
) -> anyhow::Result<(usize, Vec<f64>)> {
    let n = sessions.len();
    let sessions: Arc<[String]> = sessions.into();
    let spec = BulkSpec::new("confirm", n, conc.min(WATCHERS), CONFIRM_LIMIT);
    let keys = keys.clone();
    let read = bulk::bulk(base, spec, move |conn, i| {
        let (keys, sessions) = (keys.clone(), Arc::clone(&sessions));
        Box::pin(async move {
            let path = format!("/v1/sessions/{}", sessions[i]);
            conn.get(&path, Auth::Bearer(&keys.requester))
                .await?
                .expect(&[200])?
                .json::<SessionView>()
        })
    })
    .await?;
    let mut confirmed = 0;
    let mut lags = Vec::new();
    for s in read.items.iter().flatten() {
        let revoked: Vec<Option<f64>> = s
            .credentials
            .iter()
            .map(|c| c.revoked_at.as_deref().and_then(parse_rfc3339))
            .collect();
        lags.extend(revoked.iter().flatten().map(|at| (at - deadline) * 1000.0));
        if s.state == "ended"
            && s.end_reason.as_deref() == Some("deadline")
            && !revoked.is_empty()
            && revoked.iter().all(Option::is_some)
        {
            confirmed += 1;
        }
    }
    if confirmed < n {
        notes.push(format!(
            "{} of {n} sampled sessions not read back ended for `deadline` with every credential revoked",
            n - confirmed
        ));
    }
    Ok((confirmed, lags))
}

/// Issues one JWT for `session`. With `retry_until` (wall time), a `409` (not active yet: the scheduler
/// has not reached it) is retried every 50 ms until then.
async fn issue_jwt(
    conn: &mut Conn,
    requester_key: &str,
    session: &str,
    retry_until: Option<f64>,
) -> Result<String, OpError> {
    let path = format!("/v1/sessions/{session}/credentials");
    loop {
        let answer = conn
            .send(
                hyper::Method::POST,
                &path,
                Auth::Bearer(requester_key),
                Body::Empty,
            )
            .await?;
        if answer.status.as_u16() == 409 && retry_until.is_some_and(|until| unix_now() + 0.05 < until) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        return Ok(answer.expect(&[201])?.json::<CredentialAnswer>()?.access_token);
    }
}

/// stint's `GET /metrics` over one shared connection (opened on first use).
#[derive(Debug, Clone)]
struct Metrics {
    base: BaseUrl,
    conn: Arc<tokio::sync::Mutex<Option<Conn>>>,
    admin: Option<Arc<str>>,
}

impl Metrics {
    fn new(base: &BaseUrl, admin_key: Option<&str>) -> Self {
        Self {
            base: base.clone(),
            conn: Arc::default(),
            admin: admin_key.map(Arc::from),
        }
    }

    /// The sum of the samples of `name` with `labels` ([`metric`]).
    async fn value(&self, name: &str, labels: &[(&str, &str)]) -> Result<Option<f64>, OpError> {
        let mut conn = self.conn.lock().await;
        if conn.is_none() {
            *conn = Some(Conn::open(&self.base).await?);
        }
        let conn = conn.as_mut().ok_or_else(|| OpError::new("no connection"))?;
        let auth = self.admin.as_deref().map_or(Auth::None, Auth::Bearer);
        let answer = conn.get("/metrics", auth).await?.expect(&[200])?;
        Ok(metric(&String::from_utf8_lossy(&answer.body), name, labels))
    }

    /// Polls `stint_sessions_active` every 100 ms until it reaches `target` (then: seconds since `from`)
    /// or the wall clock reaches `until` (`None`).
    async fn wait_for_active(&self, target: f64, from: f64, until: f64) -> Option<f64> {
        loop {
            let active = self.value("stint_sessions_active", &[]).await.ok().flatten();
            let now = unix_now();
            if active.is_some_and(|a| a >= target) {
                return Some(now - from);
            }
            if now >= until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

// ----- OpenBao -----------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct BaoLookup {
    data: BaoLookupData,
}

#[derive(Deserialize)]
struct BaoLookupData {
    expire_time: Option<String>,
}

#[derive(Deserialize)]
struct BaoList {
    data: BaoKeys,
}

#[derive(Deserialize)]
struct BaoKeys {
    keys: Vec<serde_json::Value>,
}

/// Where OpenBao keeps the leases of tokens made by `auth/token/create-orphan`.
const BAO_LEASES: &str = "/v1/sys/leases/lookup/auth/token/create-orphan?list=true";

/// Leases of orphan tokens the server holds (`LIST` answers 404 when there are none).
async fn bao_leases(conn: &mut Conn, token: &str) -> Result<u64, OpError> {
    let answer = conn.get(BAO_LEASES, Auth::VaultToken(token)).await?;
    if answer.status.as_u16() == 404 {
        return Ok(0);
    }
    Ok(answer.expect(&[200])?.json::<BaoList>()?.data.keys.len() as u64)
}

async fn bao_create(conn: &mut Conn, token: &str, ttl: &str) -> Result<String, OpError> {
    let body = json!({"ttl": ttl, "policies": ["default"]});
    let answer: crate::scenario::BaoAuth = conn
        .post_json("/v1/auth/token/create-orphan", Auth::VaultToken(token), &body)
        .await?
        .expect(&[200])?
        .json()?;
    Ok(answer.auth.client_token)
}

async fn bao(base: &BaseUrl, root: Arc<str>, spec: &ExpirySpec) -> anyhow::Result<ExpiryReport> {
    let rss = RssSampler::start(spec.pid).context("reading the OpenBao server's RSS")?;
    let conc = spec.concurrency.max(1);
    let mut notes = Vec::new();
    let mut conn = Conn::open(base).await.context("connecting to OpenBao")?;
    // Leases already there (tokens of other scenarios) are not this run's.
    let unrelated = bao_leases(&mut conn, &root)
        .await
        .context("listing OpenBao's token leases (needs a root token)")?;

    let probe = bao_probe(base, &root, probe_size(spec.sessions), conc, &mut notes).await?;
    let plan = plan_bao(unix_now(), spec.sessions, probe.per_s)?;
    let deadline = plan.deadline_unix as f64;
    eprintln!(
        "openbao mass-expiry: {} tokens, deadline {} (in {:.0} s)",
        spec.sessions,
        rfc3339(plan.deadline_unix),
        deadline - unix_now()
    );
    // Each token's ttl runs to the deadline, to the millisecond; stop two seconds before it.
    let create = bulk::bulk(
        base,
        BulkSpec::new("create", spec.sessions, conc, secs_until(deadline - 2.0)),
        {
            let root = Arc::clone(&root);
            move |conn, _| {
                let root = Arc::clone(&root);
                Box::pin(async move {
                    let ttl_ms = ((deadline - unix_now()) * 1000.0).floor();
                    if ttl_ms < 1000.0 {
                        return Err(OpError::new("too close to the deadline"));
                    }
                    bao_create(conn, &root, &format!("{ttl_ms:.0}ms")).await
                })
            }
        },
    )
    .await?;
    require_some(&create, "creating tokens")?;
    if let Some(why) = &create.report.stopped {
        notes.push(format!("creating stopped early: {why}"));
    }
    let tokens = successes(&create);
    let samples: Vec<Sample> = bulk::spread(tokens.len(), spec.samples)
        .into_iter()
        .map(|i| Sample {
            session: None,
            token: tokens[i].clone(),
            deadline: None,
        })
        .collect();

    let checkers = vec![
        Checker::Bao {
            token: Arc::clone(&root),
        },
        Checker::BaoSelf,
    ];
    let give_up = deadline + spec.timeout.as_secs_f64();
    let conn = Arc::new(tokio::sync::Mutex::new(conn));
    let (watched, cleared) = around_deadline(
        base,
        checkers,
        &samples,
        (deadline, give_up),
        Duration::from_millis(500),
        || {
            let (conn, root) = (Arc::clone(&conn), Arc::clone(&root));
            async move {
                let leases = bao_leases(&mut *conn.lock().await, &root).await?;
                Ok(leases.saturating_sub(unrelated))
            }
        },
    )
    .await?;

    let rss = rss.map(RssSampler::finish).transpose()?;
    let mut watched = watched.iter().map(WatchResult::summary);
    Ok(ExpiryReport {
        system: "openbao",
        requested: spec.sessions,
        created: tokens.len(),
        tokens: tokens.len(),
        plan,
        deadline: rfc3339(plan.deadline_unix),
        probe,
        create: create.report,
        issue: None,
        activation_s: None,
        watch: watched.next().context("internal: no watch result")?,
        lookup_self: watched.next(),
        all_revoked_s: cleared.all_gone_s,
        max_uncleared: cleared.max_uncleared,
        uncleared: cleared.timeline,
        confirmed: None,
        recorded_revocation_lag: None,
        rss,
        notes,
    })
}

/// Creates `k` tokens and revokes them again: the creation phase's report.
async fn bao_probe(
    base: &BaseUrl,
    root: &Arc<str>,
    k: usize,
    conc: usize,
    notes: &mut Vec<String>,
) -> anyhow::Result<PhaseReport> {
    let create = bulk::bulk(base, BulkSpec::new("probe: create", k, conc, PROBE_LIMIT), {
        let root = Arc::clone(root);
        move |conn, _| {
            let root = Arc::clone(&root);
            Box::pin(async move { bao_create(conn, &root, "10m").await })
        }
    })
    .await?;
    require_some(&create, "probe: creating tokens")?;
    let tokens = successes(&create);
    let revoke = bulk::bulk(
        base,
        BulkSpec::new("probe: revoke", tokens.len(), conc, PROBE_LIMIT),
        {
            let root = Arc::clone(root);
            move |conn, i| {
                let (root, tokens) = (Arc::clone(&root), Arc::clone(&tokens));
                Box::pin(async move {
                    let body = json!({"token": tokens[i]});
                    conn.post_json("/v1/auth/token/revoke", Auth::VaultToken(&root), &body)
                        .await?
                        .expect(&[200, 204])?;
                    Ok(())
                })
            }
        },
    )
    .await?;
    if revoke.report.errors > 0 {
        notes.push(format!("{} probe tokens not revoked", revoke.report.errors));
    }
    Ok(create.report)
}

// ----- watching tokens die -----------------------------------------------------------------------------

/// A token watched around its deadline.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// stint's session, read back afterwards.
    pub session: Option<String>,
    /// The bearer token.
    pub token: String,
    /// Its deadline (seconds since the epoch) when known beforehand; otherwise read from the first active
    /// answer (OpenBao's `expire_time`).
    pub deadline: Option<f64>,
}

/// How a token is checked.
#[derive(Debug, Clone)]
pub enum Checker {
    /// RFC 7662 introspection as a `resource_server`.
    Stint {
        /// The resource server's API key.
        resource_server_key: Arc<str>,
    },
    /// `POST /v1/auth/token/lookup`: 200 is good, 400 or 403 is not.
    Bao {
        /// A token allowed to look others up.
        token: Arc<str>,
    },
    /// `GET /v1/auth/token/lookup-self` presenting the token itself: 200 is good, 403 is not.
    BaoSelf,
}

impl Checker {
    /// Whether `token` is good now, and its deadline if the answer names it.
    async fn check(&self, conn: &mut Conn, token: &str) -> Result<(bool, Option<f64>), OpError> {
        match self {
            Self::Stint { resource_server_key } => {
                #[derive(Deserialize)]
                struct Introspection {
                    active: bool,
                }
                let answer = conn
                    .post_form(
                        "/oauth2/introspect",
                        Auth::Bearer(resource_server_key),
                        &[("token", token)],
                    )
                    .await?
                    .expect(&[200])?;
                Ok((answer.json::<Introspection>()?.active, None))
            }
            Self::Bao { .. } | Self::BaoSelf => {
                let answer = match self {
                    Self::Bao { token: root } => {
                        let body = json!({"token": token});
                        conn.post_json("/v1/auth/token/lookup", Auth::VaultToken(root), &body)
                            .await?
                    }
                    _ => {
                        conn.get("/v1/auth/token/lookup-self", Auth::VaultToken(token))
                            .await?
                    }
                };
                let answer = answer.expect(&[200, 400, 403])?;
                if answer.status.as_u16() != 200 {
                    return Ok((false, None));
                }
                let expires = answer
                    .json::<BaoLookup>()?
                    .data
                    .expire_time
                    .as_deref()
                    .and_then(parse_rfc3339);
                Ok((true, expires))
            }
        }
    }
}

/// What was seen of one sampled token.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Watched {
    /// Its deadline (given, answered, or else the planned one).
    pub deadline: f64,
    /// When the first inactive answer arrived.
    pub inactive_at: Option<f64>,
    /// Active answers to requests sent after the deadline.
    pub accepted_after: u64,
    /// Failed checks.
    pub errors: u64,
}

/// What the watch saw of every sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WatchResult {
    /// One per sample, in sample order.
    pub samples: Vec<Watched>,
    /// Median time to check every sample of one watcher once, in milliseconds.
    pub round_ms: Option<f64>,
}

impl WatchResult {
    /// Lags from each deadline to the inactive answer (those answered inactive before their deadline
    /// count as 0).
    pub fn lag(&self) -> Option<LagSummary> {
        let lags: Vec<f64> = self
            .samples
            .iter()
            .filter_map(|w| w.inactive_at.map(|at| ((at - w.deadline) * 1000.0).max(0.0)))
            .collect();
        LagSummary::of(&lags)
    }

    /// Active answers to requests sent after the deadline, over every sample.
    pub fn accepted_after_deadline(&self) -> u64 {
        self.samples.iter().map(|w| w.accepted_after).sum()
    }

    /// Samples answered inactive before their deadline.
    pub fn inactive_before_deadline(&self) -> usize {
        self.samples
            .iter()
            .filter(|w| w.inactive_at.is_some_and(|at| at < w.deadline))
            .count()
    }

    /// Samples never answered inactive.
    pub fn never_inactive(&self) -> usize {
        self.samples.iter().filter(|w| w.inactive_at.is_none()).count()
    }

    /// Failed checks.
    pub fn errors(&self) -> u64 {
        self.samples.iter().map(|w| w.errors).sum()
    }

    /// The figures reported.
    pub fn summary(&self) -> WatchSummary {
        WatchSummary {
            samples: self.samples.len(),
            inactive_lag: self.lag(),
            poll_round_ms: self.round_ms,
            accepted_after_deadline: self.accepted_after_deadline(),
            inactive_before_deadline: self.inactive_before_deadline(),
            never_inactive: self.never_inactive(),
            check_errors: self.errors(),
            deadline_spread_ms: self.deadline_spread_ms(),
        }
    }

    /// Latest − earliest deadline, in milliseconds.
    pub fn deadline_spread_ms(&self) -> f64 {
        let deadlines = self.samples.iter().map(|w| w.deadline);
        let (lo, hi) = deadlines.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), d| {
            (lo.min(d), hi.max(d))
        });
        if hi >= lo { (hi - lo) * 1000.0 } else { 0.0 }
    }
}

/// Most connections checking samples.
const WATCHERS: usize = 16;

/// Checks every sample over and over, from a second before `deadline` (the planned one, used where a
/// sample's own is unknown) until each has answered inactive or the wall clock reaches `give_up`. Each of
/// up to [`WATCHERS`] connections cycles through its share without pause once the earliest deadline is
/// near (before that, every 50 ms).
pub async fn watch(
    base: BaseUrl,
    checker: Checker,
    samples: Vec<Sample>,
    deadline: f64,
    give_up: f64,
) -> anyhow::Result<WatchResult> {
    let watchers = samples.len().clamp(1, WATCHERS);
    let checker = Arc::new(checker);
    let mut tasks = Vec::with_capacity(watchers);
    for w in 0..watchers {
        let mine: Vec<(usize, Sample)> = samples
            .iter()
            .enumerate()
            .filter(|(i, _)| i % watchers == w)
            .map(|(i, s)| (i, s.clone()))
            .collect();
        let mut conn = Conn::open(&base)
            .await
            .with_context(|| format!("watch: connecting to {base}"))?;
        let checker = Arc::clone(&checker);
        tasks.push(tokio::spawn(async move {
            let mut seen: Vec<(usize, Watched, bool)> = mine
                .iter()
                .map(|(i, s)| {
                    let w = Watched {
                        deadline: s.deadline.unwrap_or(deadline),
                        ..Watched::default()
                    };
                    (*i, w, s.deadline.is_some())
                })
                .collect();
            let mut rounds = Vec::new();
            sleep_until_unix(deadline - 1.0).await;
            loop {
                let begun = Instant::now();
                let mut pending = 0;
                for ((_, sample), (_, w, known)) in mine.iter().zip(seen.iter_mut()) {
                    if w.inactive_at.is_some() {
                        continue;
                    }
                    pending += 1;
                    let sent = unix_now();
                    match checker.check(&mut conn, &sample.token).await {
                        Ok((true, answered)) => {
                            if let (false, Some(d)) = (*known, answered) {
                                w.deadline = d;
                                *known = true;
                            }
                            if sent > w.deadline {
                                w.accepted_after += 1;
                            }
                        }
                        Ok((false, _)) => w.inactive_at = Some(unix_now()),
                        Err(_) => w.errors += 1,
                    }
                }
                if pending == 0 || unix_now() >= give_up {
                    break;
                }
                rounds.push(begun.elapsed().as_secs_f64() * 1000.0);
                let earliest = seen
                    .iter()
                    .filter(|(_, w, _)| w.inactive_at.is_none())
                    .map(|(_, w, _)| w.deadline)
                    .fold(f64::INFINITY, f64::min);
                if unix_now() < earliest - 0.25 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            (seen, rounds)
        }));
    }
    let mut out = vec![Watched::default(); samples.len()];
    let mut rounds = Vec::new();
    for task in tasks {
        let (seen, r) = task.await.context("a watcher panicked")?;
        rounds.extend(r);
        for (i, w, _) in seen {
            out[i] = w;
        }
    }
    Ok(WatchResult {
        samples: out,
        round_ms: LagSummary::of(&rounds).map(|s| s.p50_ms),
    })
}

/// How the server's record of expired items went.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cleared {
    /// Seconds from the deadline until nothing was left.
    pub all_gone_s: Option<f64>,
    /// The most left at one poll after the deadline.
    pub max_uncleared: Option<u64>,
    /// What was left, about once a second (and the last poll).
    pub timeline: Vec<TimelinePoint>,
}

/// Polls `left` (items not yet recorded gone) every `every` from the deadline until it answers 0 or the
/// wall clock reaches `give_up`. Failed polls are skipped.
pub async fn poll_cleared<F, Fut>(deadline: f64, give_up: f64, every: Duration, mut left: F) -> Cleared
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, OpError>>,
{
    sleep_until_unix(deadline).await;
    let mut out = Cleared::default();
    let mut last_point = f64::NEG_INFINITY;
    let mut failures = 0u32;
    loop {
        let outcome = left().await;
        let t = unix_now() - deadline;
        match outcome {
            Ok(n) => {
                out.max_uncleared = Some(out.max_uncleared.unwrap_or(0).max(n));
                if n == 0 || t - last_point >= 1.0 {
                    out.timeline.push(TimelinePoint { t_s: t, uncleared: n });
                    last_point = t;
                }
                if n == 0 {
                    out.all_gone_s = Some(t);
                    return out;
                }
            }
            Err(e) => {
                failures += 1;
                if failures.is_power_of_two() {
                    eprintln!("  polling the server's record failed ({failures}×): {e}");
                }
            }
        }
        if unix_now() >= give_up {
            return out;
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use axum::extract::State;
    use axum::routing::post;
    use axum::{Form, Json, Router};

    use super::*;

    #[test]
    fn stint_plan_leaves_time_to_create_activate_and_issue() {
        let now = 1_000_000.25;
        let p = plan_stint(now, 100_000, 2000.0, 1000.0).unwrap();
        // 50 s of creating, × 1.3, + 5 s: not_before at now + 70 s, rounded up to a whole second.
        assert_eq!(p.not_before_unix, Some(1_000_071));
        // (50 s activation + 100 s issuing) × 1.3 + 10 s.
        assert_eq!(p.ttl_s, Some(205));
        assert_eq!(p.deadline_unix, 1_000_071 + 205);
        let tiny = plan_stint(now, 10, 2000.0, 1000.0).unwrap();
        assert_eq!(tiny.ttl_s, Some(11), "at least {SLACK_S} s, rounded up");
        assert!(tiny.not_before_unix.unwrap() as f64 >= now + SLACK_S / 2.0);
        let huge = plan_stint(now, 10_000_000, 1000.0, 1000.0).unwrap();
        assert_eq!(huge.ttl_s, Some(MAX_TTL_S), "capped at the target's max_ttl_s");
        assert_eq!(plan_stint(now, 10, 0.0, 1.0), Err(PlanError::NoRate(0.0)));
        assert!(plan_stint(now, 10, 1.0, f64::NAN).is_err());
    }

    #[test]
    fn bao_plan_leaves_time_to_create() {
        let p = plan_bao(500.5, 20_000, 1000.0).unwrap();
        assert_eq!(p.deadline_unix, 537, "500.5 + 20 s × 1.3 + 10 s, rounded up");
        assert_eq!((p.not_before_unix, p.ttl_s, p.issue_per_s), (None, None, None));
        assert!(plan_bao(0.0, 1, -3.0).is_err());
    }

    #[test]
    fn lag_percentiles_use_the_nearest_rank() {
        let lags: Vec<f64> = (1..=200).map(f64::from).rev().collect();
        let s = LagSummary::of(&lags).unwrap();
        assert_eq!(
            (s.count, s.p50_ms, s.p99_ms, s.max_ms),
            (200, 100.0, 198.0, 200.0)
        );
        let one = LagSummary::of(&[7.5, f64::NAN]).unwrap();
        assert_eq!(
            (one.count, one.p50_ms, one.p99_ms, one.max_ms),
            (1, 7.5, 7.5, 7.5)
        );
        assert_eq!(LagSummary::of(&[]), None);
        assert_eq!(s.brief(), "p50 100.0 p99 198.0 max 200.0 ms");
    }

    #[test]
    fn watch_results_count_late_acceptances_and_early_refusals() {
        let w = |deadline: f64, inactive_at: Option<f64>, accepted_after: u64| Watched {
            deadline,
            inactive_at,
            accepted_after,
            errors: 0,
        };
        let result = WatchResult {
            samples: vec![
                w(100.0, Some(100.002), 0),
                w(100.0, Some(100.010), 2),
                w(100.5, Some(100.4), 0),
                w(100.0, None, 9),
            ],
            round_ms: Some(1.0),
        };
        let lag = result.lag().unwrap();
        assert_eq!(lag.count, 3);
        assert_eq!(lag.p50_ms.round(), 2.0);
        assert_eq!(lag.max_ms.round(), 10.0);
        assert_eq!(result.accepted_after_deadline(), 11);
        assert_eq!(result.inactive_before_deadline(), 1);
        assert_eq!(result.never_inactive(), 1);
        assert!((result.deadline_spread_ms() - 500.0).abs() < 1e-6);
    }

    /// A resource server's view of tokens: `good-*` tokens answer active until `dies_at` (wall clock)
    /// plus `grace`, then inactive. Counts requests.
    #[derive(Clone)]
    struct FakeTokens {
        dies_at: f64,
        grace: f64,
        requests: Arc<AtomicU64>,
    }

    async fn fake_introspect(
        State(fake): State<FakeTokens>,
        Form(form): Form<std::collections::HashMap<String, String>>,
    ) -> Json<serde_json::Value> {
        fake.requests.fetch_add(1, Ordering::Relaxed);
        let good = form.get("token").is_some_and(|t| t.starts_with("good-"));
        Json(json!({"active": good && unix_now() < fake.dies_at + fake.grace}))
    }

    async fn serve(fake: FakeTokens) -> BaseUrl {
        let app = Router::new()
            .route("/oauth2/introspect", post(fake_introspect))
            .with_state(fake);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        BaseUrl::parse(&format!("http://{addr}")).unwrap()
    }

    fn samples(deadline: f64) -> Vec<Sample> {
        (0..6)
            .map(|i| Sample {
                session: None,
                token: format!("good-{i}"),
                deadline: Some(deadline),
            })
            .collect()
    }

    fn checker() -> Checker {
        Checker::Stint {
            resource_server_key: "rs".into(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watch_measures_the_lag_and_finds_no_late_acceptance_on_a_prompt_server() {
        let deadline = unix_now() + 1.3;
        let fake = FakeTokens {
            dies_at: deadline,
            grace: 0.0,
            requests: Arc::default(),
        };
        let base = serve(fake.clone()).await;
        let result = watch(base, checker(), samples(deadline), deadline, deadline + 5.0)
            .await
            .unwrap();
        assert_eq!(result.accepted_after_deadline(), 0);
        assert_eq!(
            (result.never_inactive(), result.inactive_before_deadline()),
            (0, 0)
        );
        let lag = result.lag().unwrap();
        assert_eq!(lag.count, 6);
        assert!(lag.max_ms < 250.0, "{lag:?}");
        assert!(result.round_ms.is_some());
        assert!(fake.requests.load(Ordering::Relaxed) > 6, "polled more than once");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watch_catches_a_server_that_accepts_tokens_past_their_deadline() {
        let deadline = unix_now() + 1.2;
        let base = serve(FakeTokens {
            dies_at: deadline,
            grace: 0.3,
            requests: Arc::default(),
        })
        .await;
        let result = watch(base, checker(), samples(deadline), deadline, deadline + 5.0)
            .await
            .unwrap();
        assert!(result.accepted_after_deadline() >= 6, "{result:?}");
        let lag = result.lag().unwrap();
        assert!(lag.p50_ms >= 300.0, "{lag:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watch_gives_up_on_tokens_that_never_die() {
        let deadline = unix_now() + 1.05;
        let base = serve(FakeTokens {
            dies_at: deadline,
            grace: 3600.0,
            requests: Arc::default(),
        })
        .await;
        let begun = Instant::now();
        let result = watch(base, checker(), samples(deadline), deadline, deadline + 0.3)
            .await
            .unwrap();
        assert!(begun.elapsed() < Duration::from_secs(5));
        assert_eq!(result.never_inactive(), 6);
        assert!(result.lag().is_none());
    }

    /// OpenBao's two answers: `lookup` (by the root token) keeps answering 200 with the token's
    /// `expire_time` until `grace` after it, `lookup-self` (the token presenting itself) refuses it at
    /// once.
    fn fake_bao(expire: i64, grace: f64) -> Router {
        use axum::http::{HeaderMap, StatusCode};
        use axum::routing::get;
        let expire_time = rfc3339(expire);
        let good = move |until: f64| unix_now() < until;
        Router::new()
            .route(
                "/v1/auth/token/lookup",
                post(
                    move |headers: HeaderMap, Json(body): Json<serde_json::Value>| async move {
                        let root = headers.get("x-vault-token").is_some_and(|v| v == "root");
                        let known = body["token"].as_str().is_some_and(|t| t.starts_with("s."));
                        if root && known && good(expire as f64 + grace) {
                            Ok(Json(json!({"data": {"expire_time": expire_time}})))
                        } else {
                            Err(StatusCode::FORBIDDEN)
                        }
                    },
                ),
            )
            .route(
                "/v1/auth/token/lookup-self",
                get(move |headers: HeaderMap| async move {
                    let known = headers
                        .get("x-vault-token")
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|t| t.starts_with("s."));
                    if known && good(expire as f64) {
                        Ok(Json(json!({"data": {"expire_time": rfc3339(expire)}})))
                    } else {
                        Err(StatusCode::FORBIDDEN)
                    }
                }),
            )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bao_checks_learn_each_deadline_and_tell_lookup_from_lookup_self() {
        let expire = unix_now().ceil() as i64 + 1;
        let app = fake_bao(expire, 0.3);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let base = BaseUrl::parse(&format!("http://{addr}")).unwrap();
        let samples: Vec<Sample> = (0..4)
            .map(|i| Sample {
                session: None,
                token: format!("s.{i}"),
                deadline: None,
            })
            .collect();
        // The planned deadline is off by 0.5 s: each sample's own `expire_time` must win.
        let planned = expire as f64 + 0.5;
        let lookup = Checker::Bao { token: "root".into() };
        let (by_root, by_itself) = tokio::join!(
            watch(base.clone(), lookup, samples.clone(), planned, planned + 5.0),
            watch(base, Checker::BaoSelf, samples, planned, planned + 5.0),
        );
        let (by_root, by_itself) = (by_root.unwrap(), by_itself.unwrap());
        assert!(
            by_root.samples.iter().all(|w| w.deadline == expire as f64),
            "{by_root:?}"
        );
        assert!(by_root.accepted_after_deadline() >= 4, "{by_root:?}");
        assert!(by_root.lag().unwrap().p50_ms >= 300.0);
        assert_eq!(by_itself.accepted_after_deadline(), 0, "{by_itself:?}");
        assert_eq!(by_itself.never_inactive(), 0);
        assert!(by_itself.lag().unwrap().max_ms < 250.0, "{by_itself:?}");
        assert_eq!(by_root.summary().deadline_spread_ms, 0.0);
    }

    #[tokio::test]
    async fn poll_cleared_records_when_nothing_is_left() {
        let deadline = unix_now();
        let left = Arc::new(AtomicU64::new(5));
        let cleared = poll_cleared(deadline, deadline + 10.0, Duration::from_millis(5), || {
            let left = Arc::clone(&left);
            async move {
                let n = left.load(Ordering::Relaxed);
                if n == 3 {
                    left.store(2, Ordering::Relaxed);
                    return Err(OpError::new("flaky"));
                }
                left.store(n.saturating_sub(1), Ordering::Relaxed);
                Ok(n)
            }
        })
        .await;
        assert_eq!(cleared.max_uncleared, Some(5));
        let all = cleared.all_gone_s.unwrap();
        assert!((0.0..2.0).contains(&all), "{all}");
        let last = cleared.timeline.last().unwrap();
        assert_eq!(last.uncleared, 0);
        assert_eq!(cleared.timeline[0].uncleared, 5);

        let never = poll_cleared(
            unix_now(),
            unix_now() + 0.05,
            Duration::from_millis(5),
            || async { Ok(7) },
        )
        .await;
        assert_eq!((never.all_gone_s, never.max_uncleared), (None, Some(7)));
    }
}
