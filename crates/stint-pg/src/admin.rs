//! [`PgAdmin`]: the admin connection to one PostgreSQL target, and the role operations.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr as _;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions as _};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};
use tokio::time::Instant;

use crate::scram::{SALT_LEN, SCRAM_ITERATIONS, random_bytes, scram_sha256_verifier};
use crate::{PgError, quote_ident, quote_literal};

/// Slack on top of the connect and statement timeouts before the client gives up on a call whose
/// server went silent (statement_timeout only bounds what the server sees).
const CLIENT_GRACE: Duration = Duration::from_secs(2);

/// How often [`PgAdmin::drop_role`] and [`PgAdmin::terminate_backends`] look again for backends that
/// were signalled but have not exited yet.
const BACKEND_POLL: Duration = Duration::from_millis(20);

/// The first key of the advisory locks [`lock_role`] takes (`stnt` in ASCII).
const ROLE_LOCK_CLASS: i32 = 0x7374_6e74;

/// The `application_name` of admin connections, as `pg_stat_activity` shows it.
const APPLICATION_NAME: &str = "stint";

/// Timeouts and pool size of a [`PgAdmin`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOptions {
    /// How long to try to get a connection (connecting and authenticating, with retries while the
    /// server refuses connections) before an operation fails with [`PgError::Unreachable`].
    pub connect_timeout: Duration,
    /// The server-side `statement_timeout` of admin connections; also bounds how long revocation
    /// waits for terminated backends to exit.
    pub statement_timeout: Duration,
    /// The most connections the admin pool opens to the target.
    pub max_connections: u32,
}

impl Default for PgOptions {
    /// 5 s to connect, 10 s per statement, at most 2 connections.
    fn default() -> Self {
        PgOptions {
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
            max_connections: 2,
        }
    }
}

/// The admin side of one PostgreSQL target: a small connection pool, connected lazily, that creates,
/// rotates, lists and revokes roles.
///
/// The admin role needs `CREATEROLE` (or superuser), membership in `pg_signal_backend` (or superuser)
/// to terminate sessions, and the right to grant the configured grant roles. Cloning is cheap and
/// shares the pool.
#[derive(Clone)]
pub struct PgAdmin {
    pool: PgPool,
    opts: PgOptions,
    host: String,
    port: u16,
    database: Option<String>,
}

impl fmt::Debug for PgAdmin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the URL and not the connect options: both hold the admin password.
        f.debug_struct("PgAdmin")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl PgAdmin {
    /// Parses the admin URL (`postgres://user:password@host:port/database?sslmode=...`) and sets up the
    /// pool without connecting; the first operation connects.
    ///
    /// Within a Tokio runtime the pool also closes connections idle for 5 minutes or older than 30;
    /// outside one it cannot start that reaper task and keeps them (a dead connection is still
    /// noticed and replaced before use).
    ///
    /// # Errors
    ///
    /// [`PgError::Config`] for an invalid URL (the message repeats neither the URL nor the password)
    /// or a zero timeout or pool size.
    pub fn connect_lazy(admin_url: &SecretString, opts: &PgOptions) -> Result<PgAdmin, PgError> {
        if opts.connect_timeout.is_zero() || opts.statement_timeout.as_millis() == 0 {
            return Err(PgError::Config(
                "the connect and statement timeouts must be positive".into(),
            ));
        }
        if opts.max_connections == 0 {
            return Err(PgError::Config("max_connections must be at least 1".into()));
        }
        let url = admin_url.expose_secret();
        let connect = PgConnectOptions::from_str(url)
            .map_err(|e| PgError::Config(format!("invalid admin url: {}", scrub_url(&e.to_string(), url))))?;
        let statement_timeout = format!("{}ms", opts.statement_timeout.as_millis());
        let connect = connect
            .application_name(APPLICATION_NAME)
            .options([("statement_timeout", statement_timeout.as_str())])
            .disable_statement_logging();
        let (host, port, database) = (
            connect.get_host().to_owned(),
            connect.get_port(),
            connect.get_database().map(str::to_owned),
        );
        let mut pool = PgPoolOptions::new()
            .max_connections(opts.max_connections)
            .min_connections(0)
            .acquire_timeout(opts.connect_timeout)
            .test_before_acquire(true);
        pool = if tokio::runtime::Handle::try_current().is_ok() {
            pool.idle_timeout(Duration::from_secs(300))
                .max_lifetime(Duration::from_secs(1800))
        } else {
            // sqlx spawns its reaper task for these and panics without a runtime.
            pool.idle_timeout(None).max_lifetime(None)
        };
        Ok(PgAdmin {
            pool: pool.connect_lazy_with(connect),
            opts: opts.clone(),
            host,
            port,
            database,
        })
    }

    /// Creates a login role in one transaction:
    /// `CREATE ROLE <role> LOGIN INHERIT PASSWORD '<SCRAM verifier>' VALID UNTIL '<valid_until>'` (and
    /// explicitly no superuser, createdb, createrole, replication or bypassrls), then `GRANT <grant>
    /// TO <role>` for each grant role. `INHERIT` makes the grant roles' privileges usable at once.
    ///
    /// Only the SCRAM-SHA-256 verifier, computed here with a fresh 16-byte salt and 4096 iterations,
    /// is sent; the server never sees the plaintext. `valid_until` is sent in UTC, cut to whole
    /// seconds.
    ///
    /// # Errors
    ///
    /// [`PgError::Config`] for a name that cannot be quoted, an empty or non-ASCII password, or a
    /// `valid_until` outside years 0–9999; [`PgError::Sql`] if the role exists (`42710`) or a grant
    /// role does not (`42704`), in which case nothing was created; [`PgError::Unreachable`].
    pub async fn create_role(
        &self,
        role: &str,
        password: &SecretString,
        valid_until: OffsetDateTime,
        grants: &[String],
    ) -> Result<(), PgError> {
        let role_q = quote_ident(role)?;
        let grants_q = grants
            .iter()
            .map(|g| quote_ident(g))
            .collect::<Result<Vec<_>, _>>()?;
        let verifier = password_literal(password)?;
        let until = quote_literal(&valid_until_text(valid_until)?)?;
        let create = format!(
            "CREATE ROLE {role_q} WITH LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION \
             NOBYPASSRLS PASSWORD {verifier} VALID UNTIL {until}"
        );
        self.bounded("create role", async {
            let mut tx = self.pool.begin().await?;
            lock_role(&mut tx, role).await?;
            execute(&mut *tx, create).await?;
            for grant in &grants_q {
                execute(&mut *tx, format!("GRANT {grant} TO {role_q}")).await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await?;
        tracing::debug!(role, grants = grants.len(), "created postgres role");
        Ok(())
    }

    /// Revokes a role for good and confirms it; idempotent.
    ///
    /// 1. `ALTER ROLE <role> NOLOGIN`, so no new session can start;
    /// 2. `pg_terminate_backend()` on every backend of the role, waiting (up to the statement timeout)
    ///    until they have exited;
    /// 3. in one transaction `REASSIGN OWNED BY <role> TO CURRENT_USER`, `DROP OWNED BY <role>` (its
    ///    remaining privileges) and `DROP ROLE IF EXISTS <role>`;
    /// 4. confirms from `pg_roles` that the role is gone and from `pg_stat_activity` that none of its
    ///    backends remain.
    ///
    /// A role that does not exist is `Ok`: it is already revoked. Steps 1 and 3 hold a per-role
    /// advisory lock, so concurrent revocations of one role (by other stint instances too) do not
    /// collide; every one of them returns `Ok`.
    ///
    /// Step 3 acts in the admin connection's database only. Objects the role owns in other databases
    /// make `DROP ROLE` fail (`PgError::Sql` with code `2BP01`); the role then still exists but cannot
    /// log in and has no sessions, and the call can be repeated once those objects are gone.
    /// Privileges on shared objects (databases, tablespaces) are revoked by `DROP OWNED` wherever run.
    ///
    /// # Errors
    ///
    /// [`PgError::NotConfirmed`] if the role still exists afterwards or backends of it outlive the
    /// statement timeout; [`PgError::Sql`], [`PgError::Unreachable`], [`PgError::Config`] as usual.
    pub async fn drop_role(&self, role: &str) -> Result<(), PgError> {
        let role_q = quote_ident(role)?;
        let Some(oid) = self.role_oid(role).await? else {
            tracing::debug!(role, "postgres role already gone");
            return Ok(());
        };
        let nologin = self
            .bounded("alter role nologin", async {
                let mut tx = self.pool.begin().await?;
                lock_role(&mut tx, role).await?;
                execute(&mut *tx, format!("ALTER ROLE {role_q} NOLOGIN")).await?;
                tx.commit().await?;
                Ok(())
            })
            .await;
        match nologin {
            Err(e) if is_undefined_object(&e) => return self.confirm_dropped(role, oid).await,
            other => other?,
        }
        let terminated = self.terminate_oid(oid).await?;
        let dropped = self
            .bounded("drop role", async {
                let mut tx = self.pool.begin().await?;
                lock_role(&mut tx, role).await?;
                execute(&mut *tx, format!("REASSIGN OWNED BY {role_q} TO CURRENT_USER")).await?;
                execute(&mut *tx, format!("DROP OWNED BY {role_q}")).await?;
                execute(&mut *tx, format!("DROP ROLE IF EXISTS {role_q}")).await?;
                tx.commit().await?;
                Ok(())
            })
            .await;
        match dropped {
            // Dropped concurrently between the steps: the confirmation decides.
            Err(e) if is_undefined_object(&e) => {}
            other => other?,
        }
        self.confirm_dropped(role, oid).await?;
        tracing::debug!(role, terminated, "dropped postgres role");
        Ok(())
    }

    /// Check-out of an existing (legacy) account: `ALTER ROLE <account> PASSWORD '<SCRAM verifier>'`,
    /// plus `VALID UNTIL` when `valid_until` is given (otherwise the account's expiry is left as it
    /// is). Sessions already open are not ended: see [`PgAdmin::terminate_backends`].
    ///
    /// # Errors
    ///
    /// [`PgError::NoSuchRole`] if the account does not exist; [`PgError::Config`] for a name that
    /// cannot be quoted or an empty or non-ASCII password; [`PgError::Sql`], [`PgError::Unreachable`].
    pub async fn rotate_password(
        &self,
        account: &str,
        password: &SecretString,
        valid_until: Option<OffsetDateTime>,
    ) -> Result<(), PgError> {
        let account_q = quote_ident(account)?;
        let verifier = password_literal(password)?;
        let mut sql = format!("ALTER ROLE {account_q} PASSWORD {verifier}");
        if let Some(until) = valid_until {
            sql.push_str(" VALID UNTIL ");
            sql.push_str(&quote_literal(&valid_until_text(until)?)?);
        }
        let result = self
            .bounded("alter role password", async {
                let mut tx = self.pool.begin().await?;
                lock_role(&mut tx, account).await?;
                execute(&mut *tx, sql).await?;
                tx.commit().await?;
                Ok(())
            })
            .await;
        match result {
            Err(e) if is_undefined_object(&e) => Err(PgError::NoSuchRole(account.to_owned())),
            other => {
                other?;
                tracing::debug!(account, "rotated postgres password");
                Ok(())
            }
        }
    }

    /// Terminates every backend (session) of `role` with `pg_terminate_backend()` and waits, up to the
    /// statement timeout, until they have exited. Returns how many backends were signalled.
    ///
    /// # Errors
    ///
    /// [`PgError::NoSuchRole`] if the role does not exist; [`PgError::NotConfirmed`] if backends are
    /// still running at the timeout; [`PgError::Sql`] (e.g. `42501` without `pg_signal_backend`),
    /// [`PgError::Unreachable`].
    pub async fn terminate_backends(&self, role: &str) -> Result<u64, PgError> {
        quote_ident(role)?;
        let oid = self
            .role_oid(role)
            .await?
            .ok_or_else(|| PgError::NoSuchRole(role.to_owned()))?;
        self.terminate_oid(oid).await
    }

    /// The names of all roles that start with `prefix`, sorted bytewise. The prefix is compared as a
    /// plain string (`starts_with`), so `_` and `%` in it are not wildcards.
    ///
    /// # Errors
    ///
    /// [`PgError::Config`] for an empty prefix (which would list every role, the admin's included) or
    /// one with a NUL byte; [`PgError::Sql`], [`PgError::Unreachable`].
    pub async fn list_roles(&self, prefix: &str) -> Result<Vec<String>, PgError> {
        if prefix.is_empty() || prefix.contains('\0') {
            return Err(PgError::Config(
                "a role prefix must be non-empty and contain no NUL byte".into(),
            ));
        }
        self.bounded("list roles", async {
            Ok(sqlx::query_scalar::<_, String>(
                "SELECT rolname::text FROM pg_roles WHERE starts_with(rolname::text, $1) \
                 ORDER BY rolname::text COLLATE \"C\"",
            )
            .bind(prefix)
            .fetch_all(&self.pool)
            .await?)
        })
        .await
    }

    /// Whether a role named `role` exists.
    ///
    /// # Errors
    ///
    /// [`PgError::Config`] for a name that cannot be quoted; [`PgError::Sql`], [`PgError::Unreachable`].
    pub async fn role_exists(&self, role: &str) -> Result<bool, PgError> {
        quote_ident(role)?;
        Ok(self.role_oid(role).await?.is_some())
    }

    /// Checks that the target answers `SELECT 1` with the admin credentials.
    ///
    /// # Errors
    ///
    /// [`PgError::Unreachable`] if it cannot be reached in time; [`PgError::Sql`] if it refuses the
    /// admin (e.g. `28P01` for a wrong admin password).
    pub async fn ping(&self) -> Result<(), PgError> {
        self.bounded("ping", async {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
        .await
    }

    /// Closes the pool's connections; later operations fail with [`PgError::Unreachable`].
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The role's oid, or `None` if no role has that name.
    async fn role_oid(&self, role: &str) -> Result<Option<Oid>, PgError> {
        self.bounded("look up role", async {
            Ok(
                sqlx::query_scalar::<_, Oid>("SELECT oid FROM pg_roles WHERE rolname = $1")
                    .bind(role)
                    .fetch_optional(&self.pool)
                    .await?,
            )
        })
        .await
    }

    /// Signals every backend of the role with oid `oid` until none is left (bounded by the statement
    /// timeout); returns how many distinct backends were signalled.
    async fn terminate_oid(&self, oid: Oid) -> Result<u64, PgError> {
        let deadline = Instant::now() + self.opts.statement_timeout;
        let mut signalled = HashSet::new();
        loop {
            // Every row is a backend still there; signalling one that is already exiting is harmless.
            let backends = self
                .bounded("terminate backends", async {
                    Ok(sqlx::query_as::<_, (i32, bool)>(
                        "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE usesysid = $1 AND pid <> pg_backend_pid()",
                    )
                    .bind(oid)
                    .fetch_all(&self.pool)
                    .await?)
                })
                .await?;
            if backends.is_empty() {
                return Ok(signalled.len() as u64);
            }
            signalled.extend(backends.iter().filter(|(_, sent)| *sent).map(|(pid, _)| *pid));
            if Instant::now() >= deadline {
                return Err(PgError::NotConfirmed(format!(
                    "{} backend(s) of role oid {} still running after {:?}",
                    backends.len(),
                    oid.0,
                    self.opts.statement_timeout
                )));
            }
            tokio::time::sleep(BACKEND_POLL).await;
        }
    }

    /// Confirms that no role has the name `role` or the oid `oid`, and that no backend of it remains.
    async fn confirm_dropped(&self, role: &str, oid: Oid) -> Result<(), PgError> {
        let present = self
            .bounded("confirm drop", async {
                Ok(sqlx::query_scalar::<_, bool>(
                    "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1 OR oid = $2)",
                )
                .bind(role)
                .bind(oid)
                .fetch_one(&self.pool)
                .await?)
            })
            .await?;
        if present {
            return Err(PgError::NotConfirmed(format!("role `{role}` still exists")));
        }
        // A backend that authenticated just before NOLOGIN took effect would still run as the
        // dropped role's oid.
        self.terminate_oid(oid).await?;
        Ok(())
    }

    /// Runs `fut` with a client-side bound: the connect and statement timeouts plus some slack.
    async fn bounded<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<T, PgError>>,
    ) -> Result<T, PgError> {
        let limit = self.opts.connect_timeout + self.opts.statement_timeout + CLIENT_GRACE;
        tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
            Err(PgError::Unreachable(format!(
                "{what} got no answer within {limit:?}"
            )))
        })
    }
}

/// Serializes this crate's DDL on one role (across threads and processes) until the transaction ends:
/// PostgreSQL takes no lock on a role for `ALTER ROLE`/`DROP ROLE`, so two revocations racing on one
/// role otherwise fail with `tuple concurrently updated`. Unrelated roles whose names hash alike merely
/// wait for each other.
async fn lock_role(tx: &mut sqlx::PgTransaction<'_>, role: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(ROLE_LOCK_CLASS)
        .bind(role)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Runs one statement built from quoted identifiers and literals, over the simple query protocol (no
/// prepared statement is cached for it).
async fn execute<'c, E>(executor: E, sql: String) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'c, Database = sqlx::Postgres>,
{
    // INVARIANT: every caller builds `sql` from constant text and the output of `quote_ident` and
    // `quote_literal` only.
    sqlx::raw_sql(AssertSqlSafe(sql)).execute(executor).await?;
    Ok(())
}

/// The quoted SCRAM-SHA-256 verifier of `password`, with a fresh salt.
fn password_literal(password: &SecretString) -> Result<String, PgError> {
    let password = password.expose_secret();
    if password.is_empty() {
        return Err(PgError::Config("the password is empty".into()));
    }
    // PostgreSQL SASLpreps passwords; SASLprep leaves ASCII unchanged, so only ASCII is safe to hash
    // here without implementing it.
    if !password.is_ascii() {
        return Err(PgError::Config("the password must be ASCII".into()));
    }
    let salt = random_bytes::<SALT_LEN>();
    quote_literal(&scram_sha256_verifier(password, &salt, SCRAM_ITERATIONS))
}

/// `valid_until` as RFC 3339 in UTC, whole seconds.
fn valid_until_text(valid_until: OffsetDateTime) -> Result<String, PgError> {
    let utc = valid_until.to_offset(UtcOffset::UTC);
    let utc = utc.replace_nanosecond(0).unwrap_or(utc);
    utc.format(&Rfc3339)
        .map_err(|_| PgError::Config(format!("valid_until `{utc}` cannot be written as RFC 3339")))
}

/// Whether the error is SQLSTATE `42704` (undefined_object: no such role).
fn is_undefined_object(err: &PgError) -> bool {
    err.sql_state() == Some("42704")
}

/// `message` with the URL and its password removed, should a parse error ever repeat them.
fn scrub_url(message: &str, url: &str) -> String {
    let mut secrets = vec![url];
    if let Some((_, rest)) = url.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            secrets.push(userinfo);
            if let Some((_, password)) = userinfo.split_once(':') {
                secrets.push(password);
            }
        }
    }
    let mut out = message.to_owned();
    for secret in secrets.into_iter().filter(|s| !s.is_empty()) {
        out = out.replace(secret, "***");
    }
    out
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn debug_of_admin_hides_url_and_password() {
        let url = secret("postgres://stint_admin:hunter2-Secret@db.example:6543/app?sslmode=require");
        let admin = PgAdmin::connect_lazy(&url, &PgOptions::default()).unwrap();
        let shown = format!("{admin:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("postgres://"), "{shown}");
        assert!(shown.contains("db.example") && shown.contains("6543"), "{shown}");
    }

    #[test]
    fn bad_admin_urls_are_config_errors_without_the_password() {
        for url in [
            "postgres://u:hunter2@host:notaport/db",
            "postgres://u:hunter2@host/db?sslmode=sometimes",
            "not a url hunter2",
            "postgres://u:hunter2@host/db?statement-cache-capacity=x",
        ] {
            let err = PgAdmin::connect_lazy(&secret(url), &PgOptions::default()).unwrap_err();
            assert!(matches!(err, PgError::Config(_)), "{err:?}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
            assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
        }
    }

    #[test]
    fn zero_timeouts_and_pool_size_are_refused() {
        let url = secret("postgres://u@localhost/db");
        for opts in [
            PgOptions {
                connect_timeout: Duration::ZERO,
                ..PgOptions::default()
            },
            PgOptions {
                statement_timeout: Duration::from_micros(10),
                ..PgOptions::default()
            },
            PgOptions {
                max_connections: 0,
                ..PgOptions::default()
            },
        ] {
            assert!(matches!(
                PgAdmin::connect_lazy(&url, &opts),
                Err(PgError::Config(_))
            ));
        }
    }

    #[test]
    fn default_options_are_5s_10s_2() {
        let opts = PgOptions::default();
        assert_eq!(opts.connect_timeout, Duration::from_secs(5));
        assert_eq!(opts.statement_timeout, Duration::from_secs(10));
        assert_eq!(opts.max_connections, 2);
    }

    #[test]
    fn valid_until_is_utc_rfc3339_in_whole_seconds() {
        let t = datetime!(2030-01-02 03:04:05.678 +02:00);
        assert_eq!(valid_until_text(t).unwrap(), "2030-01-02T01:04:05Z");
    }

    #[test]
    fn passwords_must_be_non_empty_ascii_and_only_the_verifier_is_sent() {
        assert!(matches!(password_literal(&secret("")), Err(PgError::Config(_))));
        assert!(matches!(
            password_literal(&secret("pässword")),
            Err(PgError::Config(_))
        ));
        let literal = password_literal(&secret("correct-horse")).unwrap();
        assert!(
            literal.starts_with("'SCRAM-SHA-256$4096:") && literal.ends_with('\''),
            "{literal}"
        );
        assert!(!literal.contains("correct-horse"));
        assert_ne!(
            literal,
            password_literal(&secret("correct-horse")).unwrap(),
            "fresh salt each time"
        );
    }

    #[test]
    fn scrub_url_removes_url_userinfo_and_password() {
        let url = "postgres://user:p%40ss@host:5/db";
        assert_eq!(scrub_url("bad p%40ss and user:p%40ss", url), "bad *** and ***");
        assert_eq!(scrub_url(&format!("in {url}"), url), "in ***");
    }

    #[tokio::test]
    async fn invalid_names_are_refused_before_any_io() {
        // Port 9 (discard): nothing listens there; a Config error shows no connection was tried.
        let admin =
            PgAdmin::connect_lazy(&secret("postgres://u@127.0.0.1:9/db"), &PgOptions::default()).unwrap();
        let long = "r".repeat(64);
        let far = datetime!(2030-01-01 0:00 UTC);
        assert!(matches!(
            admin.create_role("", &secret("pw"), far, &[]).await,
            Err(PgError::Config(_))
        ));
        assert!(matches!(
            admin
                .create_role("ok", &secret("pw"), far, &["a\0b".into()])
                .await,
            Err(PgError::Config(_))
        ));
        assert!(matches!(admin.drop_role(&long).await, Err(PgError::Config(_))));
        assert!(matches!(
            admin.rotate_password("a\0", &secret("pw"), None).await,
            Err(PgError::Config(_))
        ));
        assert!(matches!(
            admin.terminate_backends("").await,
            Err(PgError::Config(_))
        ));
        assert!(matches!(admin.role_exists(&long).await, Err(PgError::Config(_))));
        assert!(matches!(admin.list_roles("").await, Err(PgError::Config(_))));
    }
}
