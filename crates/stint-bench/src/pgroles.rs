//! The `pg-roles` scenario: one PostgreSQL role per credential, issued and revoked by each system against
//! the same PostgreSQL server, then checked in that server.
//!
//! | step | stint | OpenBao |
//! | --- | --- | --- |
//! | set up | with the admin key: a `service` principal and a `postgres` target needing no approval, `role_prefix` `stint_b<8 hex>_` | mount `database/` (unless mounted), a `postgresql-database-plugin` connection and a role: `CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';`, its default revocation statements, `default_ttl` 1h |
//! | issue (measured) | `POST /v1/sessions` + `POST /v1/sessions/{id}/credentials` | `GET /v1/database/creds/<role>` |
//! | revoke (measured) | `POST /v1/sessions/{id}/end` for every session, then `GET /v1/sessions/{id}` until every credential shows `revocation: "confirmed"` | `PUT /v1/sys/leases/revoke` for every lease (synchronous: answered once the role is dropped) |
//! | check | no issued role (nor any role with the prefix) left in `pg_roles`; a sample of logins with the issued passwords is refused | no issued role left in `pg_roles`; the same logins |
//! | tear down | delete the principal and the target | delete the role and the connection; unmount `database/` if this run mounted it |
//!
//! Issue and revoke run with the same number of workers, each on its own keep-alive connection; the issue
//! loop is a closed loop of `--pg-roles` operations. The revoke rate is the roles revoked over the time
//! from the first revoke request until the last revocation was seen confirmed (stint: polled every
//! [`POLL_INTERVAL`], so the figure is up to one polling round late). Every phase is bounded by
//! `--pg-timeout`. The checks run `psql` against `--pg-url`: the role names through one query, the logins
//! one at a time with `PGPASSWORD` set to the issued password. Where PostgreSQL trusts loopback logins
//! (`trust` in `pg_hba.conf`, recorded as `pg_host_auth`), a password is never checked, so a refused
//! login there means the role is gone, not that its password stopped working; a few logins before
//! revocation (which must succeed) show the roles did exist.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::process::Command;

use crate::cpu::{CpuMeter, CpuSummary};
use crate::histogram::Summary;
use crate::http::{Auth, BaseUrl, Body, Conn};
use crate::load::{LoadResult, LoadSpec, OpError, Worker, closed_loop};
use crate::scenario::{Adapter, Scenario, random_u32};

/// How often stint's sessions are polled for confirmed revocations.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Logins tried before revocation, which must succeed (the roles existed).
const LOGINS_BEFORE: usize = 3;
/// The longest one `psql` may take.
const PSQL_TIMEOUT: Duration = Duration::from_secs(60);
/// stint sessions' lifetime: longer than any bounded run.
const SESSION_TTL_S: u64 = 3600;
/// OpenBao's creation statement; its default revocation statements are used.
const BAO_CREATION: &str =
    r#"CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"#;

/// The PostgreSQL server both systems work against, from
/// `postgres[ql]://user[:password]@host[:port][/database][?parameters]`.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl {
    url: String,
    user: String,
    password: String,
    /// `host[:port]` as written (IPv6 in brackets).
    host_port: String,
    host: String,
    port: u16,
    database: String,
}

/// A `--pg-url` that is not a `postgres://user@host…` URL.
#[derive(Debug, thiserror::Error)]
#[error("`--pg-url` is not a `postgres://user[:password]@host[:port][/database]` URL")]
pub struct PgUrlError;

impl PgUrl {
    /// Parses `postgres[ql]://user[:password]@host[:port][/database][?…]`; the database defaults to the
    /// user's name (as libpq's does), the port to 5432.
    pub fn parse(url: &str) -> Result<Self, PgUrlError> {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or(PgUrlError)?;
        let rest = rest.split_once('?').map_or(rest, |(r, _)| r);
        let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, host_port) = authority.rsplit_once('@').ok_or(PgUrlError)?;
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        let (host, port) = match host_port.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or(PgUrlError)?;
                (host, after.strip_prefix(':'))
            }
            None => match host_port.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            },
        };
        let port = match port {
            Some(p) => p.parse().map_err(|_| PgUrlError)?,
            None => 5432,
        };
        let user = percent_decode(user).ok_or(PgUrlError)?;
        if user.is_empty() || host.is_empty() {
            return Err(PgUrlError);
        }
        let database = match percent_decode(database).ok_or(PgUrlError)? {
            d if d.is_empty() => user.clone(),
            d => d,
        };
        Ok(Self {
            url: url.to_owned(),
            password: percent_decode(password).ok_or(PgUrlError)?,
            user,
            host_port: host_port.to_owned(),
            host: host.to_owned(),
            port,
            database,
        })
    }

    /// OpenBao's `connection_url` for the same server: its own templates for the credentials.
    fn bao_connection_url(&self) -> String {
        format!(
            "postgresql://{{{{username}}}}:{{{{password}}}}@{}/{}?sslmode=disable",
            self.host_port, self.database
        )
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "postgres://{}@{}/{}", self.user, self.host_port, self.database)
    }
}

/// `%XX` escapes decoded; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = char::from(bytes.next()?).to_digit(16)?;
            let lo = char::from(bytes.next()?).to_digit(16)?;
            out.push(u8::try_from(hi * 16 + lo).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// The parameters of one `pg-roles` run.
#[derive(Debug, Clone)]
pub struct PgRolesSpec {
    /// Roles to issue (and revoke).
    pub roles: usize,
    /// Workers issuing, ending and polling, one keep-alive connection each.
    pub concurrency: usize,
    /// The PostgreSQL server (stint's `admin_url`, OpenBao's connection, and where the checks run).
    pub pg: PgUrl,
    /// Logins tried with issued passwords after revocation.
    pub login_sample: usize,
    /// The longest each phase (issue; revoke until confirmed) may take.
    pub phase_timeout: Duration,
}

/// One measured phase (issuing, or revoking) as written to `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    /// Operations that succeeded.
    pub ops: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Wall time of the requests, in seconds.
    pub elapsed_s: f64,
    /// Successful operations per second of `elapsed_s`.
    pub ops_per_s: f64,
    /// Latency of the successful operations.
    pub latency: Summary,
    /// The client's CPU over the phase (for revoking: including the wait for confirmations).
    pub client_cpu: Option<CpuSummary>,
    /// Distinct failure messages, first few.
    pub error_samples: Vec<String>,
    /// Why the loop stopped early, if it did.
    pub aborted: Option<String>,
}

impl PhaseReport {
    fn new(result: &LoadResult) -> Self {
        Self {
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
}

/// Logins with issued passwords, before and after revocation.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoginCheck {
    /// Logins tried before revocation.
    pub before_tried: usize,
    /// Of those, how many succeeded (all should: the role exists).
    pub before_ok: usize,
    /// Logins tried after revocation.
    pub after_tried: usize,
    /// Of those, how many were refused (all should be).
    pub after_refused: usize,
    /// Of the refusals, how many said the role does not exist.
    pub after_role_missing: usize,
    /// The first refusal's message.
    pub first_refusal: Option<String>,
}

/// Everything one `pg-roles` run measured, as written to `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct PgRolesReport {
    /// `stint` or `openbao`.
    pub system: &'static str,
    /// Always `pg-roles`.
    pub scenario: Scenario,
    /// Workers.
    pub concurrency: usize,
    /// Roles asked for.
    pub requested: usize,
    /// stint's `role_prefix` for this run.
    pub role_prefix: Option<String>,
    /// Issuing: stint's session + credential, OpenBao's `database/creds`.
    pub issue: PhaseReport,
    /// Revoking: stint's session ends, OpenBao's lease revocations.
    pub revoke: PhaseReport,
    /// From the first revoke request until every revocation was confirmed; `None` if not all were.
    pub all_confirmed_s: Option<f64>,
    /// Revocations confirmed per second (over `all_confirmed_s`, or the time waited).
    pub revoked_per_s: f64,
    /// Revocations confirmed.
    pub confirmed: usize,
    /// Issued roles whose revocation was not confirmed in time (or never asked for).
    pub unconfirmed: usize,
    /// Of those, how many stint showed as `revocation: "failed"` at the last look.
    pub revocation_failed: usize,
    /// Issued roles (or roles with the prefix) still in `pg_roles` afterwards; `None` if not checked.
    pub roles_left: Option<usize>,
    /// The first few of them.
    pub roles_left_sample: Vec<String>,
    /// Logins with issued passwords.
    pub logins: LoginCheck,
    /// `pg_hba.conf` methods for TCP connections (`trust`: passwords are not checked).
    pub pg_host_auth: Option<String>,
    /// Every role name issued, in issue order.
    pub usernames: Vec<String>,
    /// What went wrong around the measurements (checks, tear down).
    pub problems: Vec<String>,
}

impl PgRolesReport {
    /// One human-readable line.
    pub fn line(&self) -> String {
        let (i, r) = (&self.issue, &self.revoke);
        let cpu = |p: &PhaseReport| match &p.client_cpu {
            Some(c) if c.client_bound => format!("{:.0}% CLIENT-BOUND", c.machine_fraction * 100.0),
            Some(c) => format!("{:.0}%", c.machine_fraction * 100.0),
            None => "?".to_owned(),
        };
        let confirmed = match self.all_confirmed_s {
            Some(s) => format!("all {} confirmed after {s:.2} s", self.confirmed),
            None => format!(
                "{} confirmed, {} NOT confirmed ({} failed)",
                self.confirmed, self.unconfirmed, self.revocation_failed
            ),
        };
        let left = self
            .roles_left
            .map_or_else(|| "? (not checked)".to_owned(), |n| n.to_string());
        let l = &self.logins;
        let trust = if self.pg_host_auth.as_deref().is_some_and(|a| a.contains("trust")) {
            " (trust auth: refused because the role is gone)"
        } else {
            ""
        };
        let mut line = format!(
            "{} pg-roles c={}: issued {}/{} at {:.0}/s (p50 {:.2} p99 {:.2} ms, {} errors), revoked at {:.0}/s \
             (requests {:.2} s, p50 {:.2} p99 {:.2} ms, {} errors; {confirmed}), {left} left in pg_roles, \
             logins before {}/{} ok, after {}/{} refused{trust}, client CPU {} / {}",
            self.system,
            self.concurrency,
            i.ops,
            self.requested,
            i.ops_per_s,
            i.latency.p50_ms,
            i.latency.p99_ms,
            i.errors,
            self.revoked_per_s,
            r.elapsed_s,
            r.latency.p50_ms,
            r.latency.p99_ms,
            r.errors,
            l.before_ok,
            l.before_tried,
            l.after_refused,
            l.after_tried,
            cpu(i),
            cpu(r),
        );
        for note in [&i.aborted, &r.aborted].into_iter().flatten() {
            line.push_str(&format!("; {note}"));
        }
        for sample in i.error_samples.iter().chain(&r.error_samples).take(2) {
            line.push_str(&format!("; error: {sample}"));
        }
        for problem in &self.problems {
            line.push_str(&format!("; {problem}"));
        }
        line
    }
}

/// Runs `pg-roles` against `adapter`'s system: `key` is stint's admin key, or the OpenBao token.
/// Fails only when the system cannot be set up; later failures are in the report.
pub async fn run(adapter: &Adapter, key: &str, spec: &PgRolesSpec) -> anyhow::Result<PgRolesReport> {
    let mut conn = Conn::open(adapter.base())
        .await
        .with_context(|| format!("connecting to {}", adapter.base()))?;
    let fixture = match adapter.system() {
        "stint" => Fixture::stint(&mut conn, key, &spec.pg).await?,
        _ => Fixture::bao(&mut conn, key, &spec.pg).await?,
    };
    let fixture = Arc::new(fixture);
    let mut report = measure(adapter, &fixture, spec).await;
    if let Err(e) = fixture.tear_down(&mut conn).await {
        report.problems.push(format!("tear down: {e}"));
    }
    Ok(report)
}

/// Issues, revokes and checks; every failure past set-up lands in the report.
async fn measure(adapter: &Adapter, fixture: &Arc<Fixture>, spec: &PgRolesSpec) -> PgRolesReport {
    let mut problems = Vec::new();
    let pg_host_auth = match host_auth(&spec.pg).await {
        Ok(auth) => Some(auth),
        Err(e) => {
            problems.push(format!("reading pg_hba rules: {e:#}"));
            None
        }
    };

    // Issue.
    let issued = Arc::new(Mutex::new(Vec::with_capacity(spec.roles)));
    let workers = open_workers(adapter.base(), spec.concurrency, |conn| IssueWorker {
        conn,
        fixture: Arc::clone(fixture),
        out: Arc::clone(&issued),
    })
    .await
    .unwrap_or_else(|e| {
        problems.push(format!("connecting the issuing workers: {e}"));
        Vec::new()
    });
    let load = LoadSpec::for_duration(spec.phase_timeout).with_max_requests(Some(spec.roles as u64));
    let meter = CpuMeter::start().ok();
    let result = closed_loop(load, workers).await;
    let mut issue = PhaseReport::new(&result);
    issue.client_cpu = meter.and_then(|m| m.read().ok()).map(|c| c.summary());
    let creds: Vec<PgCred> = issued
        .lock()
        .map(|mut v| std::mem::take(&mut *v))
        .unwrap_or_default();
    let creds = Arc::new(creds);

    let mut logins = LoginCheck::default();
    let before = try_logins(&spec.pg, &creds, LOGINS_BEFORE).await;
    logins.before_tried = before.len();
    logins.before_ok = before.iter().filter(|r| r.is_ok()).count();

    // Revoke, then wait for every revocation to be confirmed.
    let ended = Arc::new(Mutex::new(Vec::with_capacity(creds.len())));
    let workers = open_workers(adapter.base(), spec.concurrency, |conn| RevokeWorker {
        conn,
        fixture: Arc::clone(fixture),
        creds: Arc::clone(&creds),
        ended: Arc::clone(&ended),
    })
    .await
    .unwrap_or_else(|e| {
        problems.push(format!("connecting the revoking workers: {e}"));
        Vec::new()
    });
    let load = LoadSpec::for_duration(spec.phase_timeout).with_max_requests(Some(creds.len() as u64));
    let meter = CpuMeter::start().ok();
    let started = Instant::now();
    let result = closed_loop(load, workers).await;
    let mut revoke = PhaseReport::new(&result);
    let ended: Vec<usize> = ended
        .lock()
        .map(|mut v| std::mem::take(&mut *v))
        .unwrap_or_default();
    let not_ended = creds.len().saturating_sub(ended.len());
    let wait = match &**fixture {
        // OpenBao revokes synchronously: an answered request is a dropped role.
        Fixture::Bao { .. } => Confirmation {
            confirmed: ended.len(),
            pending: 0,
            failed: 0,
            all_after: Some(started.elapsed()),
            error: None,
        },
        Fixture::Stint { .. } => {
            let deadline = started + spec.phase_timeout;
            let pending = Pending {
                indices: ended,
                started,
                deadline,
            };
            wait_confirmed(adapter.base(), fixture, &creds, pending, spec.concurrency).await
        }
    };
    revoke.client_cpu = meter.and_then(|m| m.read().ok()).map(|c| c.summary());
    let waited = wait.all_after.unwrap_or_else(|| started.elapsed()).as_secs_f64();
    if let Some(e) = wait.error {
        problems.push(format!("polling revocations: {e}"));
    }

    // Check in PostgreSQL.
    let usernames: Vec<String> = creds.iter().map(|c| c.username.clone()).collect();
    let (roles_left, roles_left_sample) = match roles_present(&spec.pg, &usernames, fixture.prefix()).await {
        Ok(left) => (Some(left.len()), left.into_iter().take(10).collect()),
        Err(e) => {
            problems.push(format!("checking pg_roles: {e:#}"));
            (None, Vec::new())
        }
    };
    let after = try_logins(&spec.pg, &creds, spec.login_sample).await;
    logins.after_tried = after.len();
    for refusal in after.into_iter().filter_map(Result::err) {
        logins.after_refused += 1;
        logins.after_role_missing += usize::from(refusal.contains("does not exist"));
        logins.first_refusal.get_or_insert(refusal);
    }

    PgRolesReport {
        system: adapter.system(),
        scenario: Scenario::PgRoles,
        concurrency: spec.concurrency,
        requested: spec.roles,
        role_prefix: fixture.prefix().map(str::to_owned),
        issue,
        revoke,
        all_confirmed_s: wait.all_after.map(|d| d.as_secs_f64()),
        revoked_per_s: if waited > 0.0 {
            wait.confirmed as f64 / waited
        } else {
            0.0
        },
        confirmed: wait.confirmed,
        unconfirmed: wait.pending + not_ended,
        revocation_failed: wait.failed,
        roles_left,
        roles_left_sample,
        logins,
        pg_host_auth,
        usernames,
        problems,
    }
}

/// One issued role.
#[derive(Clone)]
struct PgCred {
    /// stint's session id, or OpenBao's lease id.
    handle: String,
    username: String,
    password: String,
}

impl fmt::Debug for PgCred {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgCred")
            .field("handle", &self.handle)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A stint credential's revocation state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Revocation {
    Confirmed,
    Pending,
    Failed,
}

/// What one run set up in the system under test.
#[derive(Debug)]
enum Fixture {
    Stint {
        admin_key: String,
        requester_key: String,
        principal: String,
        target: String,
        prefix: String,
    },
    Bao {
        token: String,
        connection: String,
        role: String,
        /// Whether this run mounted `database/` (and so unmounts it).
        mounted: bool,
    },
}

#[derive(Deserialize)]
struct PrincipalCreated {
    id: String,
    api_key: String,
}

#[derive(Deserialize)]
struct SessionAnswer {
    id: String,
    state: String,
}

#[derive(Deserialize)]
struct PgCredentialAnswer {
    username: String,
    password: String,
}

#[derive(Deserialize)]
struct SessionCredentials {
    credentials: Vec<CredentialState>,
}

#[derive(Deserialize)]
struct CredentialState {
    revocation: String,
}

#[derive(Deserialize)]
struct BaoCreds {
    lease_id: String,
    data: BaoCredsData,
}

#[derive(Deserialize)]
struct BaoCredsData {
    username: String,
    password: String,
}

impl Fixture {
    /// stint: a requester principal and a `postgres` target with a fresh role prefix, no approval.
    async fn stint(conn: &mut Conn, admin_key: &str, pg: &PgUrl) -> anyhow::Result<Self> {
        let tag = format!("{:08x}", random_u32());
        let name = format!("stint-bench-{tag}-pg");
        let admin = Auth::Bearer(admin_key);
        let principal: PrincipalCreated = conn
            .post_json(
                "/v1/principals",
                admin,
                &json!({"name": name, "kind": "service", "groups": [&name]}),
            )
            .await?
            .expect(&[201])
            .context("creating a principal")?
            .json()?;
        let prefix = format!("stint_b{tag}_");
        let target = json!({
            "name": name, "kind": "postgres", "max_ttl_s": SESSION_TTL_S * 2,
            "requester_groups": [&name], "approvals_required": 0,
            "config": {"admin_url": pg.url, "role_prefix": prefix},
        });
        let created = conn
            .post_json("/v1/targets", admin, &target)
            .await
            .and_then(|r| r.expect(&[201]));
        let fixture = Self::Stint {
            admin_key: admin_key.to_owned(),
            requester_key: principal.api_key,
            principal: principal.id,
            target: name,
            prefix,
        };
        if let Err(e) = created {
            // Best effort: the principal alone is harmless, but leave nothing behind.
            let _ = fixture.tear_down(conn).await;
            bail!("creating a postgres target: {e}");
        }
        Ok(fixture)
    }

    /// OpenBao: the database secrets engine at `database/`, a connection to `pg` and a role.
    async fn bao(conn: &mut Conn, token: &str, pg: &PgUrl) -> anyhow::Result<Self> {
        let auth = Auth::VaultToken(token);
        let mount = conn
            .post_json("/v1/sys/mounts/database", auth, &json!({"type": "database"}))
            .await?;
        let mounted = match mount.status.as_u16() {
            200 | 204 => true,
            400 if String::from_utf8_lossy(&mount.body).contains("already in use") => false,
            _ => {
                mount.expect(&[204]).context("mounting database/")?;
                false
            }
        };
        let name = format!("stint-bench-{:08x}", random_u32());
        let fixture = Self::Bao {
            token: token.to_owned(),
            connection: name.clone(),
            role: name.clone(),
            mounted,
        };
        let mut config = json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": pg.bao_connection_url(),
            "username": pg.user,
            "allowed_roles": [&name],
            "verify_connection": true,
        });
        if !pg.password.is_empty() {
            config["password"] = json!(pg.password);
        }
        let role = json!({
            "db_name": name, "creation_statements": [BAO_CREATION],
            "default_ttl": "1h", "max_ttl": "2h",
        });
        let result = async {
            conn.post_json(&format!("/v1/database/config/{name}"), auth, &config)
                .await?
                .expect(&[200, 204])
                .context("configuring the postgresql-database-plugin connection")?;
            conn.post_json(&format!("/v1/database/roles/{name}"), auth, &role)
                .await?
                .expect(&[200, 204])
                .context("creating the database role")?;
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = result {
            let _ = fixture.tear_down(conn).await;
            return Err(e);
        }
        Ok(fixture)
    }

    /// stint's role prefix.
    fn prefix(&self) -> Option<&str> {
        match self {
            Self::Stint { prefix, .. } => Some(prefix),
            Self::Bao { .. } => None,
        }
    }

    /// Issues one role.
    async fn issue(&self, conn: &mut Conn) -> Result<PgCred, OpError> {
        match self {
            Self::Stint {
                requester_key,
                target,
                ..
            } => {
                let auth = Auth::Bearer(requester_key);
                let body =
                    json!({"target": target, "reason": "stint-bench pg-roles", "ttl_s": SESSION_TTL_S});
                let session: SessionAnswer = conn
                    .post_json("/v1/sessions", auth, &body)
                    .await?
                    .expect(&[201])?
                    .json()?;
                if session.state != "active" {
                    return Err(OpError::new(format!(
                        "session is `{}`, not active",
                        session.state
                    )));
                }
                let path = format!("/v1/sessions/{}/credentials", session.id);
                let credential: PgCredentialAnswer = conn
                    .post_json(&path, auth, &json!({}))
                    .await?
                    .expect(&[201])?
                    .json()?;
                Ok(PgCred {
                    handle: session.id,
                    username: credential.username,
                    password: credential.password,
                })
            }
            Self::Bao { token, role, .. } => {
                let path = format!("/v1/database/creds/{role}");
                let creds: BaoCreds = conn
                    .get(&path, Auth::VaultToken(token))
                    .await?
                    .expect(&[200])?
                    .json()?;
                Ok(PgCred {
                    handle: creds.lease_id,
                    username: creds.data.username,
                    password: creds.data.password,
                })
            }
        }
    }

    /// Ends the session (stint) or revokes the lease (OpenBao, synchronously).
    async fn revoke(&self, conn: &mut Conn, cred: &PgCred) -> Result<(), OpError> {
        match self {
            Self::Stint { requester_key, .. } => {
                let path = format!("/v1/sessions/{}/end", cred.handle);
                let body = json!({"reason": "stint-bench pg-roles"});
                conn.post_json(&path, Auth::Bearer(requester_key), &body)
                    .await?
                    .expect(&[200])?;
            }
            Self::Bao { token, .. } => {
                let body = Body::json(&json!({"lease_id": cred.handle}))?;
                conn.send(
                    hyper::Method::PUT,
                    "/v1/sys/leases/revoke",
                    Auth::VaultToken(token),
                    body,
                )
                .await?
                .expect(&[200, 204])?;
            }
        }
        Ok(())
    }

    /// Where the revocation of `cred`'s credential stands (stint; OpenBao's are confirmed when answered).
    async fn revocation(&self, conn: &mut Conn, cred: &PgCred) -> Result<Revocation, OpError> {
        let Self::Stint { requester_key, .. } = self else {
            return Ok(Revocation::Confirmed);
        };
        let path = format!("/v1/sessions/{}", cred.handle);
        let session: SessionCredentials = conn
            .get(&path, Auth::Bearer(requester_key))
            .await?
            .expect(&[200])?
            .json()?;
        let states = session.credentials.iter().map(|c| c.revocation.as_str());
        Ok(if session.credentials.is_empty() {
            Revocation::Pending
        } else if states.clone().all(|s| s == "confirmed") {
            Revocation::Confirmed
        } else if states.clone().any(|s| s == "failed") {
            Revocation::Failed
        } else {
            Revocation::Pending
        })
    }

    /// Removes what set-up created; the first failure is returned after trying everything.
    async fn tear_down(&self, conn: &mut Conn) -> Result<(), OpError> {
        let mut first = None;
        let mut attempt = |result: Result<crate::http::Response, OpError>, ok: &[u16]| {
            if let Err(e) = result.and_then(|r| r.expect(ok))
                && first.is_none()
            {
                first = Some(e);
            }
        };
        let delete = hyper::Method::DELETE;
        match self {
            Self::Stint {
                admin_key,
                principal,
                target,
                ..
            } => {
                let admin = Auth::Bearer(admin_key);
                // The principal first: deleting it ends any session of its still open, so the target is
                // free to go.
                let path = format!("/v1/principals/{principal}");
                attempt(
                    conn.send(delete.clone(), &path, admin, Body::Empty).await,
                    &[200, 204, 404],
                );
                let path = format!("/v1/targets/{target}");
                attempt(
                    conn.send(delete, &path, admin, Body::Empty).await,
                    &[200, 204, 404],
                );
            }
            Self::Bao {
                token,
                connection,
                role,
                mounted,
            } => {
                let auth = Auth::VaultToken(token);
                let path = format!("/v1/database/roles/{role}");
                attempt(
                    conn.send(delete.clone(), &path, auth, Body::Empty).await,
                    &[200, 204],
                );
                let path = format!("/v1/database/config/{connection}");
                attempt(
                    conn.send(delete.clone(), &path, auth, Body::Empty).await,
                    &[200, 204],
                );
                if *mounted {
                    attempt(
                        conn.send(delete, "/v1/sys/mounts/database", auth, Body::Empty)
                            .await,
                        &[200, 204],
                    );
                }
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// Issues one role per operation and keeps it.
#[derive(Debug)]
struct IssueWorker {
    conn: Conn,
    fixture: Arc<Fixture>,
    out: Arc<Mutex<Vec<PgCred>>>,
}

impl Worker for IssueWorker {
    async fn call(&mut self, _seq: u64) -> Result<(), OpError> {
        let cred = self.fixture.issue(&mut self.conn).await?;
        self.out
            .lock()
            .map_err(|_| OpError::new("poisoned list"))?
            .push(cred);
        Ok(())
    }
}

/// Revokes `creds[seq]` and notes its index once answered.
#[derive(Debug)]
struct RevokeWorker {
    conn: Conn,
    fixture: Arc<Fixture>,
    creds: Arc<Vec<PgCred>>,
    ended: Arc<Mutex<Vec<usize>>>,
}

impl Worker for RevokeWorker {
    async fn call(&mut self, seq: u64) -> Result<(), OpError> {
        let index = usize::try_from(seq).map_err(|_| OpError::new("no such role"))?;
        let cred = self
            .creds
            .get(index)
            .ok_or_else(|| OpError::new("no such role"))?;
        self.fixture.revoke(&mut self.conn, cred).await?;
        self.ended
            .lock()
            .map_err(|_| OpError::new("poisoned list"))?
            .push(index);
        Ok(())
    }
}

/// `concurrency` workers, each with a fresh connection.
async fn open_workers<W>(
    base: &BaseUrl,
    concurrency: usize,
    make: impl Fn(Conn) -> W,
) -> Result<Vec<W>, OpError> {
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency.max(1) {
        workers.push(make(Conn::open(base).await?));
    }
    Ok(workers)
}

/// How the wait for confirmed revocations ended.
#[derive(Debug)]
struct Confirmation {
    confirmed: usize,
    /// Still pending (or failed) when the wait ended.
    pending: usize,
    /// Of those, shown as `failed` at the last look.
    failed: usize,
    /// When the last one was seen confirmed, from the first revoke request; `None` if not all were.
    all_after: Option<Duration>,
    /// The last polling error, if any.
    error: Option<OpError>,
}

/// The revocations to wait for.
#[derive(Debug)]
struct Pending {
    /// Indices into the issued roles.
    indices: Vec<usize>,
    /// When the first revoke request went out (what [`Confirmation::all_after`] counts from).
    started: Instant,
    /// When to stop waiting.
    deadline: Instant,
}

/// Polls `creds[i]` for every pending `i` with `concurrency` connections, every [`POLL_INTERVAL`], until
/// all are confirmed or the deadline passes.
async fn wait_confirmed(
    base: &BaseUrl,
    fixture: &Arc<Fixture>,
    creds: &Arc<Vec<PgCred>>,
    pending: Pending,
    concurrency: usize,
) -> Confirmation {
    let Pending {
        indices: mut pending,
        started,
        deadline,
    } = pending;
    let asked = pending.len();
    let mut conns = Vec::new();
    for _ in 0..concurrency.clamp(1, asked.max(1)) {
        match Conn::open(base).await {
            Ok(conn) => conns.push(conn),
            Err(e) => {
                return Confirmation {
                    confirmed: 0,
                    pending: asked,
                    failed: 0,
                    all_after: None,
                    error: Some(e),
                };
            }
        }
    }
    let mut failed = 0;
    let mut error = None;
    loop {
        if pending.is_empty() {
            return Confirmation {
                confirmed: asked,
                pending: 0,
                failed: 0,
                all_after: Some(started.elapsed()),
                error,
            };
        }
        if Instant::now() >= deadline {
            return Confirmation {
                confirmed: asked - pending.len(),
                pending: pending.len(),
                failed,
                all_after: None,
                error,
            };
        }
        let mut tasks = tokio::task::JoinSet::new();
        let k = conns.len();
        for (n, mut conn) in conns.drain(..).enumerate() {
            let mine: Vec<usize> = pending.iter().skip(n).step_by(k).copied().collect();
            let (fixture, creds) = (Arc::clone(fixture), Arc::clone(creds));
            tasks.spawn(async move {
                let (mut still, mut failed, mut error) = (Vec::new(), 0, None);
                for i in mine {
                    let Some(cred) = creds.get(i) else { continue };
                    match fixture.revocation(&mut conn, cred).await {
                        Ok(Revocation::Confirmed) => {}
                        Ok(Revocation::Pending) => still.push(i),
                        Ok(Revocation::Failed) => {
                            failed += 1;
                            still.push(i);
                        }
                        Err(e) => {
                            error = Some(e);
                            still.push(i);
                        }
                    }
                }
                (conn, still, failed, error)
            });
        }
        pending.clear();
        failed = 0;
        while let Some(joined) = tasks.join_next().await {
            // A panicked poller loses its connection; its sessions are polled no more.
            let Ok((conn, still, f, e)) = joined else { continue };
            conns.push(conn);
            pending.extend(still);
            failed += f;
            if e.is_some() {
                error = e;
            }
        }
        if conns.is_empty() {
            return Confirmation {
                confirmed: asked - pending.len(),
                pending: pending.len(),
                failed,
                all_after: None,
                error: Some(OpError::new("every poller failed")),
            };
        }
        if !pending.is_empty() {
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

/// Runs `psql` with `args`, `env` and `stdin`, within [`PSQL_TIMEOUT`]; its stdout on success, its
/// stderr as the error otherwise.
async fn psql(args: &[&str], env: &[(&str, &str)], stdin: &str) -> anyhow::Result<String> {
    use tokio::io::AsyncWriteExt;
    let mut command = Command::new("psql");
    command
        .args(["-X", "-w", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().context("running psql")?;
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).await?;
    }
    let output = tokio::time::timeout(PSQL_TIMEOUT, child.wait_with_output())
        .await
        .context("psql timed out")??;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        bail!("{}", String::from_utf8_lossy(&output.stderr).trim())
    }
}

/// The `pg_hba.conf` methods for TCP connections, e.g. `trust` or `scram-sha-256` (needs a superuser).
async fn host_auth(pg: &PgUrl) -> anyhow::Result<String> {
    let sql = "SELECT coalesce(string_agg(DISTINCT auth_method, ','), '') FROM pg_hba_file_rules \
               WHERE type LIKE 'host%';";
    Ok(psql(&[&pg.url], &[], sql).await?.trim().to_owned())
}

/// The query listing which of `names` (or which roles starting with `prefix`) are in `pg_roles`.
fn roles_query(names: &[String], prefix: Option<&str>) -> String {
    let literal = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let list: Vec<String> = names.iter().map(|n| literal(n)).collect();
    let mut sql = format!(
        "SELECT rolname FROM pg_roles WHERE rolname = ANY(ARRAY[{}]::text[])",
        list.join(",")
    );
    if let Some(prefix) = prefix {
        sql.push_str(&format!(" OR starts_with(rolname, {})", literal(prefix)));
    }
    sql.push_str(" ORDER BY 1;\n");
    sql
}

/// Which of `names` (or roles starting with `prefix`) are still in `pg_roles`.
async fn roles_present(pg: &PgUrl, names: &[String], prefix: Option<&str>) -> anyhow::Result<Vec<String>> {
    if names
        .iter()
        .chain(prefix.map(str::to_owned).as_ref())
        .any(|n| n.contains('\0'))
    {
        bail!("a role name holds a NUL byte");
    }
    let out = psql(&[&pg.url], &[], &roles_query(names, prefix)).await?;
    Ok(out.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect())
}

/// Up to `n` indices spread evenly over `0..len`.
fn sample(len: usize, n: usize) -> Vec<usize> {
    let n = n.min(len);
    (0..n).map(|k| k * len / n).collect()
}

/// Logs in as a sample of `n` issued roles with their passwords: `Ok` if the login worked, the error
/// message if it was refused.
async fn try_logins(pg: &PgUrl, creds: &[PgCred], n: usize) -> Vec<Result<(), String>> {
    let port = pg.port.to_string();
    let mut outcomes = Vec::new();
    for i in sample(creds.len(), n) {
        let cred = &creds[i];
        let args = [
            "-h",
            pg.host.as_str(),
            "-p",
            port.as_str(),
            "-U",
            cred.username.as_str(),
            "-d",
            pg.database.as_str(),
            "-c",
            "SELECT 1",
        ];
        let env = [("PGPASSWORD", cred.password.as_str()), ("PGCONNECT_TIMEOUT", "5")];
        outcomes.push(
            psql(&args, &env, "")
                .await
                .map(drop)
                .map_err(|e| format!("{e:#}")),
        );
    }
    outcomes
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::extract::Path;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::{delete, get, post, put};
    use axum::{Json, Router};

    use super::*;

    #[test]
    fn pg_urls() {
        let u = PgUrl::parse("postgres://root@127.0.0.1:5432/postgres").unwrap();
        assert_eq!(
            (u.user.as_str(), u.password.as_str(), u.host.as_str(), u.port),
            ("root", "", "127.0.0.1", 5432)
        );
        assert_eq!(u.database, "postgres");
        assert_eq!(
            u.bao_connection_url(),
            "postgresql://{{username}}:{{password}}@127.0.0.1:5432/postgres?sslmode=disable"
        );
        let u = PgUrl::parse("postgresql://a%40b:p%3Ass@[::1]/?sslmode=disable").unwrap();
        assert_eq!(
            (u.user.as_str(), u.password.as_str(), u.host.as_str(), u.port),
            ("a@b", "p:ss", "::1", 5432)
        );
        assert_eq!(u.database, "a@b", "libpq's default database is the user's name");
        assert_eq!(u.host_port, "[::1]");
        assert!(!format!("{u:?}").contains("p:ss"), "Debug hides the password");
        for bad in [
            "http://root@x/db",
            "postgres://x:5432/db",
            "postgres://@x/db",
            "postgres://u@x:port/db",
            "postgres://u@x/%zz",
        ] {
            assert!(PgUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_roles_query_quotes_names_and_adds_the_prefix() {
        let names = vec!["v-token-a".to_owned(), "o'neil".to_owned()];
        assert_eq!(
            roles_query(&names, Some("stint_b1_")),
            "SELECT rolname FROM pg_roles WHERE rolname = ANY(ARRAY['v-token-a','o''neil']::text[]) \
             OR starts_with(rolname, 'stint_b1_') ORDER BY 1;\n"
        );
        assert!(roles_query(&[], None).contains("ARRAY[]::text[])"));
    }

    #[test]
    fn samples_spread_over_the_list() {
        assert_eq!(sample(100, 4), [0, 25, 50, 75]);
        assert_eq!(sample(3, 20), [0, 1, 2]);
        assert!(sample(0, 20).is_empty());
    }

    async fn serve(app: Router) -> BaseUrl {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        BaseUrl::parse(&format!("http://{addr}")).unwrap()
    }

    fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
        headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn pg() -> PgUrl {
        PgUrl::parse("postgres://root@127.0.0.1:5432/postgres").unwrap()
    }

    /// A fake stint: checks the admin's and the requester's keys and the bodies; each session's
    /// credential turns `confirmed` on the third poll after its end.
    fn fake_stint(log: Arc<Mutex<Vec<String>>>) -> Router {
        let polls = Arc::new(AtomicUsize::new(0));
        let admin = |h: &HeaderMap| header(h, "authorization") == Some("Bearer admin-key");
        let requester = |h: &HeaderMap| header(h, "authorization") == Some("Bearer req-key");
        let (l1, l2, l3, l4) = (log.clone(), log.clone(), log.clone(), log.clone());
        Router::new()
            .route(
                "/v1/principals",
                post(move |h: HeaderMap, Json(b): Json<serde_json::Value>| async move {
                    assert!(admin(&h));
                    assert_eq!(b["kind"], "service");
                    assert_eq!(b["groups"][0], b["name"]);
                    (
                        StatusCode::CREATED,
                        Json(json!({"id": "prn_1", "name": b["name"], "api_key": "req-key"})),
                    )
                }),
            )
            .route(
                "/v1/principals/{id}",
                delete(move |h: HeaderMap, Path(id): Path<String>| async move {
                    assert!(admin(&h));
                    l1.lock().unwrap().push(format!("delete principal {id}"));
                    StatusCode::NO_CONTENT
                }),
            )
            .route(
                "/v1/targets",
                post(move |h: HeaderMap, Json(b): Json<serde_json::Value>| async move {
                    assert!(admin(&h));
                    assert_eq!(b["kind"], "postgres");
                    assert_eq!(b["approvals_required"], 0);
                    assert_eq!(
                        b["config"]["admin_url"],
                        "postgres://root@127.0.0.1:5432/postgres"
                    );
                    let prefix = b["config"]["role_prefix"].as_str().unwrap();
                    assert!(prefix.starts_with("stint_b") && prefix.ends_with('_') && prefix.len() == 16);
                    (StatusCode::CREATED, Json(b))
                }),
            )
            .route(
                "/v1/targets/{name}",
                delete(move |h: HeaderMap, Path(name): Path<String>| async move {
                    assert!(admin(&h));
                    l2.lock().unwrap().push(format!("delete target {name}"));
                    StatusCode::NO_CONTENT
                }),
            )
            .route(
                "/v1/sessions",
                post(move |h: HeaderMap, Json(b): Json<serde_json::Value>| async move {
                    assert!(requester(&h));
                    assert!(b["target"].as_str().unwrap().ends_with("-pg"));
                    (
                        StatusCode::CREATED,
                        Json(json!({"id": "ses_1", "state": "active"})),
                    )
                }),
            )
            .route(
                "/v1/sessions/{id}/credentials",
                post(move |h: HeaderMap, Path(id): Path<String>| async move {
                    assert!(requester(&h) && id == "ses_1");
                    (
                        StatusCode::CREATED,
                        Json(
                            json!({"id": "crd_1", "kind": "postgres", "username": "stint_b0_1",
                            "password": "pw", "host": "127.0.0.1", "port": 5432, "database": "postgres"}),
                        ),
                    )
                }),
            )
            .route(
                "/v1/sessions/{id}/end",
                post(move |h: HeaderMap, Path(id): Path<String>| async move {
                    assert!(requester(&h));
                    l3.lock().unwrap().push(format!("end {id}"));
                    Json(json!({"id": id, "state": "ended"}))
                }),
            )
            .route(
                "/v1/sessions/{id}",
                get(move |h: HeaderMap, Path(id): Path<String>| async move {
                    assert!(requester(&h));
                    l4.lock().unwrap().push(format!("get {id}"));
                    let n = polls.fetch_add(1, Ordering::Relaxed);
                    let state = if n >= 2 { "confirmed" } else { "pending" };
                    Json(json!({"id": id, "credentials": [{"id": "crd_1", "revocation": state}]}))
                }),
            )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stint_sets_up_a_postgres_target_issues_ends_polls_and_tears_down() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let base = serve(fake_stint(Arc::clone(&log))).await;
        let mut conn = Conn::open(&base).await.unwrap();
        let fixture = Arc::new(Fixture::stint(&mut conn, "admin-key", &pg()).await.unwrap());
        assert!(fixture.prefix().unwrap().starts_with("stint_b"));
        let cred = fixture.issue(&mut conn).await.unwrap();
        assert_eq!(
            (
                cred.handle.as_str(),
                cred.username.as_str(),
                cred.password.as_str()
            ),
            ("ses_1", "stint_b0_1", "pw")
        );
        fixture.revoke(&mut conn, &cred).await.unwrap();
        let creds = Arc::new(vec![cred]);
        let pending = Pending {
            indices: vec![0],
            started: Instant::now(),
            deadline: Instant::now() + Duration::from_secs(10),
        };
        let wait = wait_confirmed(&base, &fixture, &creds, pending, 4).await;
        assert_eq!((wait.confirmed, wait.pending), (1, 0), "{wait:?}");
        assert!(wait.all_after.is_some() && wait.error.is_none());
        fixture.tear_down(&mut conn).await.unwrap();
        let log = log.lock().unwrap().clone();
        assert_eq!(log[..4], ["end ses_1", "get ses_1", "get ses_1", "get ses_1"]);
        assert_eq!(log[4], "delete principal prn_1");
        assert!(log[5].starts_with("delete target stint-bench-") && log[5].ends_with("-pg"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_revocation_never_confirmed_ends_the_wait_at_its_deadline() {
        let app = Router::new().route(
            "/v1/sessions/{id}",
            get(|| async { Json(json!({"credentials": [{"revocation": "failed"}]})) }),
        );
        let base = serve(app).await;
        let fixture = Arc::new(Fixture::Stint {
            admin_key: "a".into(),
            requester_key: "r".into(),
            principal: "p".into(),
            target: "t".into(),
            prefix: "x_".into(),
        });
        let creds: Vec<_> = (0..3)
            .map(|i| PgCred {
                handle: format!("ses_{i}"),
                username: format!("u{i}"),
                password: "pw".into(),
            })
            .collect();
        let pending = Pending {
            indices: vec![0, 1, 2],
            started: Instant::now(),
            deadline: Instant::now() + Duration::from_millis(200),
        };
        let wait = wait_confirmed(&base, &fixture, &Arc::new(creds), pending, 2).await;
        assert_eq!((wait.confirmed, wait.pending, wait.failed), (0, 3, 3));
        assert!(wait.all_after.is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bao_mounts_configures_issues_revokes_and_cleans_up() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let root = |h: &HeaderMap| header(h, "x-vault-token") == Some("root");
        let (l1, l2, l3, l4) = (log.clone(), log.clone(), log.clone(), log.clone());
        let app = Router::new()
            .route(
                "/v1/sys/mounts/database",
                post(move |h: HeaderMap, Json(b): Json<serde_json::Value>| async move {
                    assert!(root(&h));
                    assert_eq!(b, json!({"type": "database"}));
                    StatusCode::NO_CONTENT
                })
                .delete(move |h: HeaderMap| async move {
                    assert!(root(&h));
                    l1.lock().unwrap().push("unmount".to_owned());
                    StatusCode::NO_CONTENT
                }),
            )
            .route(
                "/v1/database/config/{name}",
                post(
                    move |h: HeaderMap, Path(name): Path<String>, Json(b): Json<serde_json::Value>| async move {
                        assert!(root(&h));
                        assert_eq!(b["plugin_name"], "postgresql-database-plugin");
                        assert_eq!(
                            b["connection_url"],
                            "postgresql://{{username}}:{{password}}@127.0.0.1:5432/postgres?sslmode=disable"
                        );
                        assert_eq!(b["username"], "root");
                        assert!(b.get("password").is_none(), "no password in the URL, none sent");
                        assert_eq!(b["allowed_roles"], json!([name]));
                        StatusCode::NO_CONTENT
                    },
                )
                .delete(move |Path(name): Path<String>| async move {
                    l2.lock().unwrap().push(format!("delete config {name}"));
                    StatusCode::NO_CONTENT
                }),
            )
            .route(
                "/v1/database/roles/{name}",
                post(
                    |Path(name): Path<String>, Json(b): Json<serde_json::Value>| async move {
                        assert_eq!(b["db_name"], name.as_str());
                        assert_eq!(b["creation_statements"], json!([BAO_CREATION]));
                        assert!(
                            b.get("revocation_statements").is_none(),
                            "OpenBao's default revocation statements"
                        );
                        assert_eq!(b["default_ttl"], "1h");
                        StatusCode::NO_CONTENT
                    },
                )
                .delete(move |Path(name): Path<String>| async move {
                    l3.lock().unwrap().push(format!("delete role {name}"));
                    StatusCode::NO_CONTENT
                }),
            )
            .route(
                "/v1/database/creds/{role}",
                get(move |h: HeaderMap, Path(role): Path<String>| async move {
                    assert!(root(&h));
                    Json(json!({"lease_id": format!("database/creds/{role}/L1"), "lease_duration": 3600,
                        "data": {"username": "v-token-x-1", "password": "pw"}}))
                }),
            )
            .route(
                "/v1/sys/leases/revoke",
                put(move |h: HeaderMap, Json(b): Json<serde_json::Value>| async move {
                    assert!(root(&h));
                    l4.lock().unwrap().push(format!("revoke {}", b["lease_id"].as_str().unwrap()));
                    StatusCode::NO_CONTENT
                }),
            );
        let base = serve(app).await;
        let mut conn = Conn::open(&base).await.unwrap();
        let fixture = Fixture::bao(&mut conn, "root", &pg()).await.unwrap();
        let Fixture::Bao { role, mounted, .. } = &fixture else {
            panic!()
        };
        assert!(*mounted);
        let role = role.clone();
        assert!(fixture.prefix().is_none());
        let cred = fixture.issue(&mut conn).await.unwrap();
        assert_eq!(cred.username, "v-token-x-1");
        assert_eq!(cred.handle, format!("database/creds/{role}/L1"));
        fixture.revoke(&mut conn, &cred).await.unwrap();
        assert_eq!(
            fixture.revocation(&mut conn, &cred).await.unwrap(),
            Revocation::Confirmed
        );
        fixture.tear_down(&mut conn).await.unwrap();
        assert_eq!(
            *log.lock().unwrap(),
            [
                format!("revoke database/creds/{role}/L1"),
                format!("delete role {role}"),
                format!("delete config {role}"),
                "unmount".to_owned(),
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bao_keeps_an_existing_database_mount() {
        let app = Router::new()
            .route(
                "/v1/sys/mounts/database",
                post(|| async {
                    (
                        StatusCode::BAD_REQUEST,
                        Json(json!({"errors": ["path is already in use at database/"]})),
                    )
                }),
            )
            .route(
                "/v1/database/config/{name}",
                post(|| async { StatusCode::NO_CONTENT }),
            )
            .route(
                "/v1/database/roles/{name}",
                post(|| async { StatusCode::NO_CONTENT }),
            );
        let base = serve(app).await;
        let mut conn = Conn::open(&base).await.unwrap();
        let fixture = Fixture::bao(&mut conn, "root", &pg()).await.unwrap();
        assert!(matches!(fixture, Fixture::Bao { mounted: false, .. }));
    }

    #[test]
    fn the_line_names_rates_checks_and_trust() {
        let mut h = crate::histogram::Histogram::new();
        h.record(Duration::from_millis(3));
        let phase = PhaseReport {
            ops: 10,
            errors: 0,
            elapsed_s: 1.0,
            ops_per_s: 10.0,
            latency: h.summary(),
            client_cpu: None,
            error_samples: vec![],
            aborted: None,
        };
        let report = PgRolesReport {
            system: "openbao",
            scenario: Scenario::PgRoles,
            concurrency: 16,
            requested: 10,
            role_prefix: None,
            issue: phase.clone(),
            revoke: phase,
            all_confirmed_s: Some(1.0),
            revoked_per_s: 10.0,
            confirmed: 10,
            unconfirmed: 0,
            revocation_failed: 0,
            roles_left: Some(0),
            roles_left_sample: vec![],
            logins: LoginCheck {
                before_tried: 3,
                before_ok: 3,
                after_tried: 10,
                after_refused: 10,
                after_role_missing: 10,
                first_refusal: Some("FATAL: role \"v\" does not exist".into()),
            },
            pg_host_auth: Some("trust".into()),
            usernames: vec!["v".into()],
            problems: vec![],
        };
        let line = report.line();
        assert!(
            line.starts_with("openbao pg-roles c=16: issued 10/10 at 10/s"),
            "{line}"
        );
        assert!(line.contains("all 10 confirmed after 1.00 s"), "{line}");
        assert!(line.contains("0 left in pg_roles"), "{line}");
        assert!(line.contains("after 10/10 refused (trust auth"), "{line}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["scenario"], "pg-roles");
        assert_eq!(json["issue"]["latency"]["count"], 1);
        assert_eq!(json["logins"]["after_role_missing"], 10);
    }
}
