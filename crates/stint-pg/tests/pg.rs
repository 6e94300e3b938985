//! stint-pg against real PostgreSQL servers.
//!
//! - `shared_*` tests use the server at `STINT_TEST_POSTGRES_URL` (trust authentication, so passwords
//!   are not checked there); each works under its own random role prefix and drops every role it
//!   made, pass or fail.
//! - `private_*` tests start their own cluster from `STINT_TEST_PG_BINDIR`, where `scram-sha-256` is
//!   enforced on 127.0.0.1 and every statement is logged.
//!
//! Without the variables the tests print why and pass; under `CI=true` they fail.

#![expect(clippy::unwrap_used, reason = "tests")]

use std::future::Future;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret as _, SecretString};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool};
use sqlx::{AssertSqlSafe, Connection as _};
use stint_pg::testing::{PrivateCluster, shared_url, unique_prefix};
use stint_pg::{
    PgAdmin, PgError, PgOptions, generate_password, quote_ident, quote_literal, scram_sha256_verifier,
};
use time::{Duration, OffsetDateTime};

// ---------------------------------------------------------------------------------------------------
// helpers

#[expect(
    clippy::disallowed_methods,
    reason = "tests compare against the servers' wall clock"
)]
fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_owned())
}

/// A role name of the form stint generates: the prefix and 32 hex digits.
fn role_name(prefix: &str, n: u128) -> String {
    format!("{prefix}{n:032x}")
}

fn admin(url: &str, opts: &PgOptions) -> PgAdmin {
    PgAdmin::connect_lazy(&secret(url), opts).unwrap()
}

/// Logs in as `role` with `password` to the database of `url`.
async fn login(url: &str, role: &str, password: &str) -> Result<PgConnection, sqlx::Error> {
    let opts = PgConnectOptions::from_str(url)?.username(role).password(password);
    PgConnection::connect_with(&opts).await
}

/// Logs in as `role` to another database of the server at `url`.
async fn login_db(url: &str, role: &str, password: &str, db: &str) -> Result<PgConnection, sqlx::Error> {
    let opts = PgConnectOptions::from_str(url)?
        .username(role)
        .password(password)
        .database(db);
    PgConnection::connect_with(&opts).await
}

fn sqlstate(err: &sqlx::Error) -> Option<String> {
    err.as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned())
}

/// Runs test-only SQL (setup the crate under test does not do) as the admin.
async fn sql(pool: &PgPool, statement: String) {
    if let Err(e) = sqlx::raw_sql(AssertSqlSafe(statement.clone()))
        .execute(pool)
        .await
    {
        panic!("{statement}: {e}");
    }
}

async fn select_one(conn: &mut PgConnection) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(conn).await
}

async fn has_role_usage(pool: &PgPool, role: &str, grant: &str) -> bool {
    sqlx::query_scalar::<_, bool>("SELECT pg_has_role($1, $2, 'USAGE')")
        .bind(role)
        .bind(grant)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A test on the shared server: the admin, its URL and a prefix of its own.
struct Shared {
    url: String,
    admin: PgAdmin,
    pool: PgPool,
    prefix: String,
}

/// Runs `body` on the shared server, then drops every role whose name starts with the prefix's stem
/// (the prefix without its last `_`, so decoys made next to the prefix go too), even if `body`
/// panicked.
async fn on_shared<F, Fut>(body: F)
where
    F: FnOnce(Arc<Shared>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(url) = shared_url() else { return };
    let ctx = Arc::new(Shared {
        admin: admin(&url, &PgOptions::default()),
        pool: PgPool::connect(&url).await.unwrap(),
        url,
        prefix: unique_prefix(),
    });
    let outcome = tokio::spawn(body(Arc::clone(&ctx))).await;
    let stem = ctx.prefix.trim_end_matches('_');
    for role in ctx.admin.list_roles(stem).await.unwrap() {
        if let Err(e) = ctx.admin.drop_role(&role).await {
            eprintln!("cleanup of role `{role}` failed: {e}");
        }
    }
    assert!(
        ctx.admin.list_roles(stem).await.unwrap().is_empty(),
        "cleanup left roles behind"
    );
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

// ---------------------------------------------------------------------------------------------------
// the shared server

#[tokio::test]
async fn shared_created_role_logs_in_with_its_grant_and_drop_ends_its_open_session() {
    on_shared(|s| async move {
        let grant = format!("{}reader", s.prefix);
        sql(
            &s.pool,
            format!("CREATE ROLE {} NOLOGIN", quote_ident(&grant).unwrap()),
        )
        .await;
        let role = role_name(&s.prefix, 0xabc);
        let password = generate_password();
        let until = now() + Duration::hours(1);
        s.admin
            .create_role(&role, &password, until, std::slice::from_ref(&grant))
            .await
            .unwrap();

        assert!(s.admin.role_exists(&role).await.unwrap());
        let (login_ok, inherit, superuser, createrole, expiry): (bool, bool, bool, bool, f64) =
            sqlx::query_as(
                "SELECT rolcanlogin, rolinherit, rolsuper, rolcreaterole, \
                 extract(epoch FROM rolvaliduntil)::float8 FROM pg_roles WHERE rolname = $1",
            )
            .bind(&role)
            .fetch_one(&s.pool)
            .await
            .unwrap();
        assert!(login_ok && inherit && !superuser && !createrole);
        assert!(
            (expiry - until.unix_timestamp() as f64).abs() <= 1.0,
            "{expiry} vs {until}"
        );
        assert!(
            has_role_usage(&s.pool, &role, &grant).await,
            "the grant's privileges are usable"
        );

        let mut conn = login(&s.url, &role, password.expose_secret()).await.unwrap();
        assert_eq!(select_one(&mut conn).await.unwrap(), 1);
        let me: String = sqlx::query_scalar("SELECT current_user::text")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(me, role);

        s.admin.drop_role(&role).await.unwrap();
        assert!(
            select_one(&mut conn).await.is_err(),
            "the open session was terminated"
        );
        assert!(!s.admin.role_exists(&role).await.unwrap());
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE usename = $1")
            .bind(&role)
            .fetch_one(&s.pool)
            .await
            .unwrap();
        assert_eq!(left, 0);
        s.admin.drop_role(&role).await.unwrap();
        s.admin.drop_role(&role).await.unwrap();
        assert!(login(&s.url, &role, password.expose_secret()).await.is_err());
    })
    .await;
}

#[tokio::test]
async fn shared_list_roles_lists_exactly_the_prefix_and_takes_underscore_literally() {
    on_shared(|s| async move {
        let far = now() + Duration::hours(1);
        let pw = generate_password();
        let mut mine = vec![
            role_name(&s.prefix, 1),
            role_name(&s.prefix, 2),
            format!("{}Odd Name", s.prefix),
            s.prefix.clone(),
        ];
        let stem = s.prefix.trim_end_matches('_');
        // Would match `LIKE '<prefix>%'` with the prefix's `_` as a wildcard.
        let decoys = [format!("{stem}X{:032x}", 1), stem.to_owned()];
        for role in mine.iter().chain(&decoys) {
            s.admin.create_role(role, &pw, far, &[]).await.unwrap();
        }
        mine.sort();
        assert_eq!(s.admin.list_roles(&s.prefix).await.unwrap(), mine);
        assert_eq!(
            s.admin.list_roles(stem).await.unwrap().len(),
            mine.len() + decoys.len()
        );
        assert!(
            s.admin
                .list_roles(&format!("{}nothing", s.prefix))
                .await
                .unwrap()
                .is_empty()
        );
        assert!(matches!(s.admin.list_roles("").await, Err(PgError::Config(_))));
    })
    .await;
}

#[tokio::test]
async fn shared_odd_role_and_grant_names_work_through_quoting() {
    on_shared(|s| async move {
        let grant = format!("{}Grant \"G\" it's", s.prefix);
        sql(
            &s.pool,
            format!("CREATE ROLE {} NOLOGIN", quote_ident(&grant).unwrap()),
        )
        .await;
        let roles = [
            format!("{}Mixed Case", s.prefix),
            format!("{}quo\"te", s.prefix),
            format!("{}x'; DROP ROLE postgres; --", s.prefix),
            format!("{}back\\slash", s.prefix),
            format!("{}UPPER", s.prefix),
        ];
        let pw = generate_password();
        for role in &roles {
            s.admin
                .create_role(
                    role,
                    &pw,
                    now() + Duration::hours(1),
                    std::slice::from_ref(&grant),
                )
                .await
                .unwrap();
            assert!(s.admin.role_exists(role).await.unwrap(), "{role}");
            assert!(has_role_usage(&s.pool, role, &grant).await, "{role}");
            let mut conn = login(&s.url, role, pw.expose_secret()).await.unwrap();
            let me: String = sqlx::query_scalar("SELECT current_user::text")
                .fetch_one(&mut conn)
                .await
                .unwrap();
            assert_eq!(&me, role);
            assert_eq!(s.admin.terminate_backends(role).await.unwrap(), 1, "{role}");
        }
        // Case is kept exactly: the folded name is another (missing) role.
        assert!(!s.admin.role_exists(&format!("{}upper", s.prefix)).await.unwrap());
        let mut expected = roles.to_vec();
        expected.push(grant.clone());
        expected.sort();
        assert_eq!(s.admin.list_roles(&s.prefix).await.unwrap(), expected);
        for role in &roles {
            s.admin.drop_role(role).await.unwrap();
            assert!(!s.admin.role_exists(role).await.unwrap(), "{role}");
        }
        assert!(
            s.admin.role_exists(&grant).await.unwrap(),
            "dropping members keeps the grant role"
        );
        let postgres_exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'postgres')")
                .fetch_one(&s.pool)
                .await
                .unwrap();
        assert!(postgres_exists);
    })
    .await;
}

#[tokio::test]
async fn shared_create_role_creates_nothing_when_a_grant_role_is_missing() {
    on_shared(|s| async move {
        let role = role_name(&s.prefix, 7);
        let missing = format!("{}missing", s.prefix);
        let err = s
            .admin
            .create_role(
                &role,
                &generate_password(),
                now() + Duration::hours(1),
                &[missing],
            )
            .await
            .unwrap_err();
        assert_eq!(err.sql_state(), Some("42704"), "{err:?}");
        assert!(
            !s.admin.role_exists(&role).await.unwrap(),
            "the transaction rolled back"
        );

        s.admin
            .create_role(&role, &generate_password(), now() + Duration::hours(1), &[])
            .await
            .unwrap();
        let err = s
            .admin
            .create_role(&role, &generate_password(), now() + Duration::hours(1), &[])
            .await
            .unwrap_err();
        assert_eq!(err.sql_state(), Some("42710"), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn shared_terminate_backends_ends_every_session_but_keeps_the_role() {
    on_shared(|s| async move {
        let role = role_name(&s.prefix, 3);
        let pw = generate_password();
        s.admin
            .create_role(&role, &pw, now() + Duration::hours(1), &[])
            .await
            .unwrap();
        let mut a = login(&s.url, &role, pw.expose_secret()).await.unwrap();
        let mut b = login(&s.url, &role, pw.expose_secret()).await.unwrap();
        assert_eq!(s.admin.terminate_backends(&role).await.unwrap(), 2);
        assert!(select_one(&mut a).await.is_err());
        assert!(select_one(&mut b).await.is_err());
        assert_eq!(s.admin.terminate_backends(&role).await.unwrap(), 0);
        let mut c = login(&s.url, &role, pw.expose_secret()).await.unwrap();
        assert_eq!(select_one(&mut c).await.unwrap(), 1);

        let missing = role_name(&s.prefix, 4);
        assert!(
            matches!(s.admin.terminate_backends(&missing).await, Err(PgError::NoSuchRole(r)) if r == missing)
        );
        assert!(matches!(
            s.admin
                .rotate_password(&missing, &generate_password(), None)
                .await,
            Err(PgError::NoSuchRole(_))
        ));
        assert!(
            !s.admin.role_exists(&missing).await.unwrap(),
            "rotate did not create it"
        );
    })
    .await;
}

#[tokio::test]
async fn shared_concurrent_drops_of_one_role_both_succeed() {
    on_shared(|s| async move {
        let other = admin(&s.url, &PgOptions::default());
        for n in 0..10 {
            let role = role_name(&s.prefix, 100 + n);
            let pw = generate_password();
            s.admin
                .create_role(&role, &pw, now() + Duration::hours(1), &[])
                .await
                .unwrap();
            let _session = login(&s.url, &role, pw.expose_secret()).await.unwrap();
            // Two instances, and two calls on one instance's pool.
            let (a, b, c) = tokio::join!(
                s.admin.drop_role(&role),
                other.drop_role(&role),
                other.drop_role(&role)
            );
            a.unwrap();
            b.unwrap();
            c.unwrap();
            assert!(!s.admin.role_exists(&role).await.unwrap());
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------------
// private clusters: passwords are checked

#[tokio::test]
async fn private_passwords_are_checked_expire_rotate_and_never_reach_the_server_log() {
    let Some(cluster) = PrivateCluster::start() else {
        return;
    };
    let url = cluster.admin_url();
    let admin = admin(&url, &PgOptions::default());
    admin.ping().await.unwrap();

    let role = role_name("stint_", 1);
    let first = generate_password();
    admin
        .create_role(&role, &first, now() + Duration::hours(1), &[])
        .await
        .unwrap();
    let mut conn = login(&url, &role, first.expose_secret()).await.unwrap();
    assert_eq!(select_one(&mut conn).await.unwrap(), 1);
    let err = login(&url, &role, "not-the-password").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("28P01"), "{err}");

    // VALID UNTIL in the past: the right password no longer logs in.
    let expired = role_name("stint_", 2);
    let expired_pw = generate_password();
    admin
        .create_role(&expired, &expired_pw, now() - Duration::minutes(1), &[])
        .await
        .unwrap();
    let err = login(&url, &expired, expired_pw.expose_secret())
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("28P01"), "{err}");

    // Check-out: the old password stops working, the new one works.
    let second = generate_password();
    admin
        .rotate_password(&role, &second, Some(now() + Duration::hours(2)))
        .await
        .unwrap();
    let err = login(&url, &role, first.expose_secret()).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("28P01"), "{err}");
    login(&url, &role, second.expose_secret()).await.unwrap();
    let third = generate_password();
    admin.rotate_password(&role, &third, None).await.unwrap();
    login(&url, &role, third.expose_secret()).await.unwrap();
    assert!(login(&url, &role, second.expose_secret()).await.is_err());
    assert!(matches!(
        admin.rotate_password("stint_missing", &third, None).await,
        Err(PgError::NoSuchRole(_))
    ));

    // The server stored our verifier, and logged statements carry only verifiers.
    let pool = PgPool::connect(&url).await.unwrap();
    let stored: String = sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
        .bind(&role)
        .fetch_one(&pool)
        .await
        .unwrap();
    let (iterations, salt) = parse_verifier(&stored);
    assert_eq!(iterations, 4096);
    assert_eq!(salt.len(), 16);
    assert_eq!(
        scram_sha256_verifier(third.expose_secret(), &salt, iterations),
        stored
    );
    let log = cluster.server_log();
    assert!(
        log.contains("CREATE ROLE") && log.contains("ALTER ROLE"),
        "statements are logged"
    );
    assert!(
        log.contains("PASSWORD 'SCRAM-SHA-256$4096:"),
        "the log shows verifiers"
    );
    for pw in [&first, &expired_pw, &second, &third] {
        assert!(
            !log.contains(pw.expose_secret()),
            "a plaintext password reached the server log"
        );
    }
}

#[tokio::test]
async fn private_verifier_matches_what_postgresql_computes_itself() {
    let Some(cluster) = PrivateCluster::start() else {
        return;
    };
    let pool = PgPool::connect(&cluster.admin_url()).await.unwrap();
    let generated = generate_password();
    for (n, password) in ["pencil", "it's a \\ test with spaces", generated.expose_secret()]
        .iter()
        .enumerate()
    {
        let role = format!("oracle_{n}");
        // Plaintext on purpose: PostgreSQL hashes it, and we recompute from its salt.
        sql(
            &pool,
            format!(
                "SET password_encryption = 'scram-sha-256'; CREATE ROLE {} LOGIN PASSWORD {}",
                quote_ident(&role).unwrap(),
                quote_literal(password).unwrap()
            ),
        )
        .await;
        let stored: String = sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
            .bind(&role)
            .fetch_one(&pool)
            .await
            .unwrap();
        let (iterations, salt) = parse_verifier(&stored);
        assert_eq!(
            scram_sha256_verifier(password, &salt, iterations),
            stored,
            "{password:?}"
        );
        login(&cluster.admin_url(), &role, password).await.unwrap();
    }
}

#[tokio::test]
async fn private_stopped_target_is_unreachable_within_the_connect_timeout_and_drop_works_after_restart() {
    let Some(cluster) = PrivateCluster::start() else {
        return;
    };
    let opts = PgOptions {
        connect_timeout: StdDuration::from_secs(1),
        statement_timeout: StdDuration::from_secs(5),
        max_connections: 2,
    };
    let admin = admin(&cluster.admin_url(), &opts);
    let role = role_name("stint_", 9);
    let pw = generate_password();
    admin
        .create_role(&role, &pw, now() + Duration::hours(1), &[])
        .await
        .unwrap();
    let mut session = login(&cluster.admin_url(), &role, pw.expose_secret())
        .await
        .unwrap();

    cluster.stop();
    // All at once, more callers than pool connections: each gives up after about connect_timeout.
    let started = Instant::now();
    let later = now() + Duration::hours(1);
    let (ping, dropped, created, listed, exists) = tokio::join!(
        admin.ping(),
        admin.drop_role(&role),
        admin.create_role("stint_other", &pw, later, &[]),
        admin.list_roles("stint_"),
        admin.role_exists(&role),
    );
    let elapsed = started.elapsed();
    let errors = [ping.unwrap_err(), dropped.unwrap_err(), created.unwrap_err()];
    for err in errors.iter().chain([&listed.unwrap_err(), &exists.unwrap_err()]) {
        assert!(
            matches!(err, PgError::Unreachable(_)) && err.is_retryable(),
            "{err:?}"
        );
        assert!(!err.to_string().contains(&cluster.admin_url()), "{err}");
    }
    assert!(
        elapsed >= opts.connect_timeout / 2,
        "{elapsed:?}: gave up before trying for long"
    );
    assert!(
        elapsed < opts.connect_timeout + StdDuration::from_millis(1500),
        "{elapsed:?}"
    );
    assert!(select_one(&mut session).await.is_err());

    cluster.restart();
    admin.drop_role(&role).await.unwrap();
    assert!(!admin.role_exists(&role).await.unwrap());
    assert!(
        login(&cluster.admin_url(), &role, pw.expose_secret())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn private_drop_role_hands_objects_to_the_admin_and_reports_objects_in_other_databases() {
    let Some(cluster) = PrivateCluster::start() else {
        return;
    };
    let url = cluster.admin_url();
    let admin = admin(&url, &PgOptions::default());
    let pool = PgPool::connect(&url).await.unwrap();
    sql(&pool, "CREATE ROLE app_writer NOLOGIN".into()).await;
    sql(
        &pool,
        "CREATE SCHEMA app; GRANT USAGE, CREATE ON SCHEMA app TO app_writer".into(),
    )
    .await;

    // An object in the admin's database: handed over, and the role dropped.
    let owner = role_name("stint_", 1);
    let pw = generate_password();
    admin
        .create_role(&owner, &pw, now() + Duration::hours(1), &["app_writer".into()])
        .await
        .unwrap();
    let mut conn = login(&url, &owner, pw.expose_secret()).await.unwrap();
    sqlx::raw_sql("CREATE TABLE app.t (x int); INSERT INTO app.t VALUES (1)")
        .execute(&mut conn)
        .await
        .unwrap();
    admin.drop_role(&owner).await.unwrap();
    assert!(select_one(&mut conn).await.is_err());
    let table_owner: String = sqlx::query_scalar(
        "SELECT tableowner::text FROM pg_tables WHERE schemaname = 'app' AND tablename = 't'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(table_owner, "postgres");

    // An object in another database blocks DROP ROLE, but the role is locked out and its sessions end.
    sql(&pool, "CREATE DATABASE other".into()).await;
    let other = PgPool::connect_with(PgConnectOptions::from_str(&url).unwrap().database("other"))
        .await
        .unwrap();
    sql(
        &other,
        "CREATE SCHEMA s; GRANT USAGE, CREATE ON SCHEMA s TO app_writer".into(),
    )
    .await;
    let stray = role_name("stint_", 2);
    admin
        .create_role(&stray, &pw, now() + Duration::hours(1), &["app_writer".into()])
        .await
        .unwrap();
    let mut conn = login_db(&url, &stray, pw.expose_secret(), "other").await.unwrap();
    sqlx::raw_sql("CREATE TABLE s.t2 (x int)")
        .execute(&mut conn)
        .await
        .unwrap();
    let err = admin.drop_role(&stray).await.unwrap_err();
    assert_eq!(err.sql_state(), Some("2BP01"), "{err:?}");
    assert!(
        err.to_string().contains("other"),
        "the message names the database: {err}"
    );
    assert!(
        select_one(&mut conn).await.is_err(),
        "its session was terminated anyway"
    );
    assert!(admin.role_exists(&stray).await.unwrap());
    let err = login_db(&url, &stray, pw.expose_secret(), "other")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"), "NOLOGIN: {err}");

    sql(&other, "DROP TABLE s.t2".into()).await;
    admin.drop_role(&stray).await.unwrap();
    assert!(!admin.role_exists(&stray).await.unwrap());
}

/// The iterations and salt of a stored `SCRAM-SHA-256$<iterations>:<salt>$<stored>:<server>`.
fn parse_verifier(stored: &str) -> (u32, Vec<u8>) {
    let rest = stored.strip_prefix("SCRAM-SHA-256$").unwrap();
    let (params, _keys) = rest.split_once('$').unwrap();
    let (iterations, salt) = params.split_once(':').unwrap();
    (iterations.parse().unwrap(), STANDARD.decode(salt).unwrap())
}
