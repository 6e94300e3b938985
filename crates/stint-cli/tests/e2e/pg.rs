//! The `postgres` provider against real PostgreSQL: the machine's shared server
//! (`STINT_TEST_POSTGRES_URL`; it trusts local logins, so each test uses its own role prefix) and
//! private clusters with `scram-sha-256` where passwords and `VALID UNTIL` must really be checked.

use std::str::FromStr;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Executor};
use stint_pg::testing::{PrivateCluster, shared_url, unique_prefix};

use crate::harness::{Api, Server, eventually};

/// Fast retries so the unreachable-target tests finish quickly.
const FAST_RETRY: [(&str, &str); 3] = [
    ("STINT_REVOCATION_BACKOFF_BASE_MS", "100"),
    ("STINT_REVOCATION_BACKOFF_CAP_MS", "400"),
    ("STINT_TARGET_CONNECT_TIMEOUT_MS", "1000"),
];

struct Db {
    admin: PgConnection,
}

impl Db {
    async fn connect(url: &str) -> Db {
        Db {
            admin: PgConnection::connect(url).await.expect("admin connection"),
        }
    }

    async fn exec(&mut self, sql: &str) {
        self.admin
            .execute(sqlx::AssertSqlSafe(sql.to_owned()))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    async fn role_exists(&mut self, role: &str) -> bool {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = $1")
            .bind(role)
            .fetch_one(&mut self.admin)
            .await
            .expect("pg_roles");
        n == 1
    }

    async fn drop_prefixed(&mut self, prefix: &str) {
        let roles: Vec<String> =
            sqlx::query_scalar("SELECT rolname::text FROM pg_roles WHERE starts_with(rolname, $1)")
                .bind(prefix)
                .fetch_all(&mut self.admin)
                .await
                .unwrap_or_default();
        for r in roles {
            let _ = self
                .admin
                .execute(sqlx::AssertSqlSafe(format!("DROP ROLE IF EXISTS \"{r}\"")))
                .await;
        }
    }
}

fn login_options(cred: &Value) -> PgConnectOptions {
    PgConnectOptions::new()
        .host(cred["host"].as_str().expect("host"))
        .port(u16::try_from(cred["port"].as_u64().expect("port")).expect("port"))
        .username(cred["username"].as_str().expect("username"))
        .password(cred["password"].as_str().expect("password"))
        .database(cred["database"].as_str().expect("database"))
}

async fn can_login(opts: &PgConnectOptions) -> bool {
    match tokio::time::timeout(Duration::from_secs(10), PgConnection::connect_with(opts)).await {
        Ok(Ok(mut c)) => sqlx::query_scalar::<_, i32>("SELECT 1")
            .fetch_one(&mut c)
            .await
            .is_ok(),
        _ => false,
    }
}

/// A principal allowed to request `target` without approval.
async fn requester(admin: &Api, server: &Server, name: &str) -> Api {
    let (_, key) = admin.principal(name, "service", &["dbusers"]).await;
    server.as_key(&key)
}

async fn pg_target(admin: &Api, name: &str, config: Value) -> Value {
    let (st, v) = admin
        .post(
            "/v1/targets",
            json!({"name": name, "kind": "postgres", "max_ttl_s": 3600, "requester_groups": ["dbusers"],
                   "config": config}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    v
}

async fn session(api: &Api, target: &str, ttl_s: u64) -> String {
    let (st, v) = api
        .post(
            "/v1/sessions",
            json!({"target": target, "reason": "maintenance CHG-7", "ttl_s": ttl_s}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["state"], "active", "{v}");
    v["id"].as_str().expect("id").to_owned()
}

async fn credential(api: &Api, sid: &str) -> Value {
    let (st, v) = api
        .post(&format!("/v1/sessions/{sid}/credentials"), json!({}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    v
}

/// Waits up to `secs` for the session's first credential to be confirmed revoked.
async fn confirmed(api: &Api, sid: &str, secs: u64) {
    let ok = eventually(Duration::from_secs(secs), || async {
        revocation_of(api, sid).await["revocation"] == "confirmed"
    })
    .await;
    assert!(ok, "revocation confirmed: {}", revocation_of(api, sid).await);
}

async fn revocation_of(api: &Api, sid: &str) -> Value {
    let (_, s) = api.get(&format!("/v1/sessions/{sid}")).await;
    s["credentials"][0].clone()
}

#[tokio::test]
async fn dynamic_role_is_created_granted_and_dropped_with_its_connections_at_end() {
    let Some(url) = shared_url() else { return };
    let prefix = unique_prefix();
    let mut db = Db::connect(&url).await;
    let reader = format!("{prefix}reader");
    db.exec(&format!("CREATE ROLE \"{reader}\" NOLOGIN")).await;

    let server = Server::start().await;
    let admin = server.admin();
    let t = pg_target(
        &admin,
        "appdb",
        json!({"admin_url": url, "grants": [reader], "role_prefix": prefix}),
    )
    .await;
    assert!(
        t["config"].get("admin_url").is_none(),
        "admin_url is write-only: {t}"
    );
    assert!(!t.to_string().contains("postgres://"), "{t}");
    let svc = requester(&admin, &server, "etl").await;
    let sid = session(&svc, "appdb", 600).await;
    let cred = credential(&svc, &sid).await;
    let role = cred["username"].as_str().expect("username").to_owned();
    assert!(role.starts_with(&prefix), "{cred}");
    assert_eq!(cred["kind"], "postgres");
    assert_eq!(
        cred["password"].as_str().map(str::len),
        Some(43),
        "32 random bytes, base64url"
    );

    // The role exists, can log in, and holds the grant.
    assert!(db.role_exists(&role).await);
    let mut conn = PgConnection::connect_with(&login_options(&cred))
        .await
        .expect("login as the new role");
    let member: bool = sqlx::query_scalar("SELECT pg_has_role(current_user, $1, 'member')")
        .bind(&reader)
        .fetch_one(&mut conn)
        .await
        .expect("query");
    assert!(member, "the configured grant was given");

    // End: the open connection dies, the role is gone, the credential shows confirmed.
    let (st, v) = svc.post(&format!("/v1/sessions/{sid}/end"), json!({})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "ended");
    confirmed(&svc, &sid, 10).await;
    assert!(!db.role_exists(&role).await, "role dropped");
    assert!(
        sqlx::query_scalar::<_, i32>("SELECT 1")
            .fetch_one(&mut conn)
            .await
            .is_err(),
        "the open connection was terminated"
    );
    assert!(!can_login(&login_options(&cred)).await, "no new login");
    let (_, ev) = svc.get(&format!("/v1/sessions/{sid}/evidence")).await;
    let actions: Vec<&str> = ev["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"credential.issued") && actions.contains(&"credential.revoked"),
        "{actions:?}"
    );
    assert!(
        !ev.to_string().contains(cred["password"].as_str().expect("pw")),
        "no password in evidence"
    );
    db.drop_prefixed(&prefix).await;
}

#[tokio::test]
async fn deadline_drops_the_role() {
    let Some(url) = shared_url() else { return };
    let prefix = unique_prefix();
    let mut db = Db::connect(&url).await;
    let server = Server::start().await;
    let admin = server.admin();
    pg_target(
        &admin,
        "shortdb",
        json!({"admin_url": url, "role_prefix": prefix}),
    )
    .await;
    let svc = requester(&admin, &server, "job").await;
    let sid = session(&svc, "shortdb", 2).await;
    let cred = credential(&svc, &sid).await;
    let role = cred["username"].as_str().expect("username").to_owned();
    assert!(db.role_exists(&role).await);
    confirmed(&svc, &sid, 15).await;
    let (_, s) = svc.get(&format!("/v1/sessions/{sid}")).await;
    assert_eq!(s["end_reason"], "deadline", "{s}");
    assert!(!db.role_exists(&role).await, "role dropped at the deadline");
    db.drop_prefixed(&prefix).await;
}

#[tokio::test]
async fn reconcile_drops_roles_no_session_owns_and_keeps_live_ones() {
    let Some(url) = shared_url() else { return };
    let prefix = unique_prefix();
    let mut db = Db::connect(&url).await;
    let server = Server::start().await;
    let admin = server.admin();
    pg_target(&admin, "recdb", json!({"admin_url": url, "role_prefix": prefix})).await;
    let svc = requester(&admin, &server, "svc").await;
    let sid = session(&svc, "recdb", 600).await;
    let live = credential(&svc, &sid).await["username"]
        .as_str()
        .expect("u")
        .to_owned();
    let zombie = format!("{prefix}00000000000000000000000000000bad");
    db.exec(&format!("CREATE ROLE \"{zombie}\" LOGIN")).await;

    // Only an admin may run it.
    let (st, _) = svc.post("/v1/reconcile", json!({})).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, v) = admin.post("/v1/reconcile", json!({})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let found: Vec<&Value> = v["zombies"]
        .as_array()
        .expect("zombies")
        .iter()
        .filter(|z| z["target"] == "recdb")
        .collect();
    assert_eq!(found.len(), 1, "{v}");
    assert_eq!(found[0]["credential"], zombie.as_str());
    assert_eq!(found[0]["action"], "dropped");
    assert!(!db.role_exists(&zombie).await, "zombie dropped");
    assert!(db.role_exists(&live).await, "the live session's role stays");
    let audit = admin.audit_all().await;
    assert!(
        audit
            .iter()
            .any(|e| e["action"] == "reconcile.zombie" && e["details"]["credential"] == zombie.as_str())
    );
    let metrics = reqwest::get(format!("{}/metrics", server.addr))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("stint_reconcile_zombies_total"),
        "zombies counted"
    );

    // The CLI runs the same sweep.
    let out = std::process::Command::new(crate::harness::bin())
        .args(["reconcile"])
        .env("STINT_ADDR", &server.addr)
        .env("STINT_TOKEN", &server.admin)
        .output()
        .expect("stint reconcile");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 zombie(s)"));
    db.drop_prefixed(&prefix).await;
}

#[tokio::test]
async fn passwords_and_validity_are_real_and_never_stored_or_logged_in_clear() {
    let Some(cluster) = PrivateCluster::start() else {
        return;
    };
    let admin_url = cluster.admin_url();
    let server = Server::start().await;
    let admin = server.admin();
    pg_target(
        &admin,
        "scramdb",
        json!({"admin_url": admin_url, "role_prefix": "stint_"}),
    )
    .await;
    let svc = requester(&admin, &server, "app").await;
    let sid = session(&svc, "scramdb", 600).await;
    let cred = credential(&svc, &sid).await;
    let opts = login_options(&cred);
    assert!(can_login(&opts).await, "the issued password works");
    assert!(
        !can_login(&opts.clone().password("wrong-password")).await,
        "a wrong one does not"
    );
    let password = cred["password"].as_str().expect("pw").to_owned();

    // Neither the store nor stint's log nor PostgreSQL's statement log holds a secret in clear.
    let admin_pw = admin_url
        .split(':')
        .nth(2)
        .and_then(|s| s.split('@').next())
        .expect("admin pw")
        .to_owned();
    let db_bytes = std::fs::read(server.db()).expect("db");
    let db_text = String::from_utf8_lossy(&db_bytes);
    assert!(
        !db_text.contains(&admin_pw) && !db_text.contains(&password),
        "store holds no secret in clear"
    );
    let wal = std::fs::read(server.db().with_extension("db-wal")).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&wal).contains(&admin_pw));
    let log = std::fs::read_to_string(server.log_path()).unwrap_or_default();
    assert!(
        !log.contains(&admin_pw) && !log.contains(&password),
        "stint's log holds no secret"
    );
    assert!(
        !cluster.server_log().contains(&password),
        "the password never reached PostgreSQL in clear"
    );

    let (st, _) = svc.post(&format!("/v1/sessions/{sid}/end"), json!({})).await;
    assert_eq!(st, StatusCode::OK);
    confirmed(&svc, &sid, 10).await;
    assert!(!can_login(&opts).await, "the password died with the session");

    // VALID UNTIL is the credential's expiry, so even a role whose drop failed could not log in
    // afterwards (stint-pg's own tests show an expired VALID UNTIL refusing the right password).
    let sid = session(&svc, "scramdb", 3).await;
    let cred = credential(&svc, &sid).await;
    let role = cred["username"].as_str().expect("u").to_owned();
    let mut db = Db::connect(&admin_url).await;
    let until: i64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM rolvaliduntil)::bigint FROM pg_roles WHERE rolname = $1",
    )
    .bind(&role)
    .fetch_one(&mut db.admin)
    .await
    .expect("rolvaliduntil");
    let expires = crate::harness::unix(&cred["expires_at"]);
    assert_eq!(until, expires, "VALID UNTIL is the credential's expiry");
    let (_, sess) = svc.get(&format!("/v1/sessions/{sid}")).await;
    assert!(
        expires <= crate::harness::unix(&sess["expires_at"]),
        "never after the session's deadline"
    );
}

#[tokio::test]
async fn checkout_mode_rotates_the_account_password_in_and_out() {
    let Some(cluster) = PrivateCluster::start() else {
        return;
    };
    let admin_url = cluster.admin_url();
    let mut db = Db::connect(&admin_url).await;
    db.exec("CREATE ROLE legacy_app LOGIN PASSWORD 'original-secret'")
        .await;
    let server = Server::start().await;
    let admin = server.admin();
    pg_target(
        &admin,
        "legacy",
        json!({"admin_url": admin_url, "mode": "checkout", "account": "legacy_app"}),
    )
    .await;
    let svc = requester(&admin, &server, "vendor").await;
    let sid = session(&svc, "legacy", 600).await;
    let cred = credential(&svc, &sid).await;
    assert_eq!(cred["username"], "legacy_app");
    let opts = login_options(&cred);
    assert!(can_login(&opts).await, "the checked-out password works");
    assert!(
        !can_login(&opts.clone().password("original-secret")).await,
        "the old password died at check-out"
    );

    // One holder at a time.
    let other = requester(&admin, &server, "vendor2").await;
    let sid2 = session(&other, "legacy", 600).await;
    let (st, v) = other
        .post(&format!("/v1/sessions/{sid2}/credentials"), json!({}))
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["code"], "account_checked_out");

    let mut conn = PgConnection::connect_with(&opts).await.expect("login");
    let (st, _) = svc.post(&format!("/v1/sessions/{sid}/end"), json!({})).await;
    assert_eq!(st, StatusCode::OK);
    confirmed(&svc, &sid, 10).await;
    assert!(
        !can_login(&opts).await,
        "the password the session saw died with it"
    );
    assert!(
        sqlx::query_scalar::<_, i32>("SELECT 1")
            .fetch_one(&mut conn)
            .await
            .is_err(),
        "its connection was ended"
    );
    // Checked in: the next session can check it out.
    let cred2 = credential(&other, &sid2).await;
    assert!(can_login(&login_options(&cred2)).await);
}

#[tokio::test]
async fn unreachable_target_keeps_the_revocation_pending_across_a_crash_until_it_is_back() {
    let Some(cluster) = PrivateCluster::start() else {
        return;
    };
    let admin_url = cluster.admin_url();
    let mut server = Server::start_with(&FAST_RETRY).await;
    let admin = server.admin();
    pg_target(
        &admin,
        "flaky",
        json!({"admin_url": admin_url, "role_prefix": "stint_"}),
    )
    .await;
    let svc = requester(&admin, &server, "ops-bot").await;
    let sid = session(&svc, "flaky", 600).await;
    let cred = credential(&svc, &sid).await;
    let role = cred["username"].as_str().expect("u").to_owned();

    cluster.stop();
    let (st, v) = svc.post(&format!("/v1/sessions/{sid}/end"), json!({})).await;
    assert_eq!(st, StatusCode::OK, "ending never waits for the target: {v}");
    assert_eq!(v["state"], "ended");
    assert!(
        eventually(Duration::from_secs(20), || async {
            let c = revocation_of(&svc, &sid).await;
            c["revocation_attempts"].as_u64().unwrap_or(0) >= 2 && c["revocation"] != "confirmed"
        })
        .await,
        "retries recorded: {}",
        revocation_of(&svc, &sid).await
    );
    let c = revocation_of(&svc, &sid).await;
    assert!(
        c["revocation_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty() && !e.contains(&admin_url)),
        "{c}"
    );
    let metrics = reqwest::get(format!("{}/metrics", server.addr))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("stint_revocation_failures_total"),
        "failures counted"
    );
    assert!(
        metrics.contains("stint_revocations_pending 1"),
        "one pending: {metrics}"
    );

    // Crash while it is pending; the target comes back; the restart finishes the job.
    server.kill9();
    cluster.restart();
    let mut db = Db::connect(&admin_url).await;
    assert!(db.role_exists(&role).await, "still there while stint was down");
    server.restart();
    server.wait_ready().await;
    let svc = server.as_key(&svc.key);
    confirmed(&svc, &sid, 20).await;
    assert!(!db.role_exists(&role).await, "role dropped");
    let (_, ev) = svc.get(&format!("/v1/sessions/{sid}/evidence")).await;
    let actions: Vec<&str> = ev["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.contains(&"credential.revocation_failed"), "{actions:?}");
    assert_eq!(actions.last(), Some(&"credential.revoked"), "{actions:?}");
}

#[tokio::test]
async fn postgres_targets_refuse_bad_configuration_and_stay_unchanged() {
    let server = Server::start().await;
    let admin = server.admin();
    let base = |config: Value| json!({"name": "bad", "kind": "postgres", "max_ttl_s": 60, "config": config});
    for (config, needle) in [
        (json!({}), "admin_url"),
        (json!({"admin_url": "mysql://x:supersecret@h/db"}), "postgres"),
        (json!({"admin_url": "not a url supersecret"}), "admin_url"),
        (
            json!({"admin_url": "postgres://u:supersecret@h/db", "bogus": 1}),
            "unknown field",
        ),
        (
            json!({"admin_url": "postgres://u:supersecret@h/db", "mode": "checkout"}),
            "account",
        ),
        (
            json!({"admin_url": "postgres://u:supersecret@h/db", "role_prefix": "X"}),
            "role_prefix",
        ),
        (
            json!({"admin_url": "postgres://u:supersecret@h/db", "grants": [""]}),
            "grants",
        ),
        (json!("string"), "object"),
    ] {
        let (st, v) = admin.post("/v1/targets", base(config.clone())).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{config}: {v}");
        assert!(v.to_string().contains(needle), "{config}: {v}");
        assert!(
            !v.to_string().contains("supersecret"),
            "errors never echo the URL: {v}"
        );
    }
    let (st, _) = admin.get("/v1/targets/bad").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "nothing was created");
    let log = std::fs::read_to_string(server.log_path()).unwrap_or_default();
    assert!(!log.contains("supersecret"));
}

#[tokio::test]
async fn a_target_with_live_credentials_cannot_be_deleted_and_pg_credentials_refuse_public_keys() {
    let Some(url) = shared_url() else { return };
    let prefix = unique_prefix();
    let server = Server::start().await;
    let admin = server.admin();
    pg_target(&admin, "busy", json!({"admin_url": url, "role_prefix": prefix})).await;
    let svc = requester(&admin, &server, "svc").await;
    let sid = session(&svc, "busy", 600).await;
    let (st, v) = svc
        .post(
            &format!("/v1/sessions/{sid}/credentials"),
            json!({"public_key": "ssh-ed25519 AAAA"}),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (st, v) = admin.get("/v1/targets/busy/krl").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let cred = credential(&svc, &sid).await;
    let (st, v) = admin.delete("/v1/targets/busy").await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["code"], "target_busy");
    svc.post(&format!("/v1/sessions/{sid}/end"), json!({})).await;
    confirmed(&svc, &sid, 10).await;
    let (st, v) = admin.delete("/v1/targets/busy").await;
    assert!(st.is_success(), "{v}");
    let _ = cred;
    let mut db = Db::connect(&url).await;
    db.drop_prefixed(&prefix).await;
}

#[test]
fn admin_urls_parse_like_libpq() {
    // A sanity check of the oracle the tests use for connection options.
    assert!(PgConnectOptions::from_str("postgres://u:p@127.0.0.1:5432/db").is_ok());
}

#[tokio::test]
async fn stint_exec_hands_a_database_login_to_the_command_and_drops_it_when_it_exits() {
    let Some(url) = shared_url() else { return };
    let prefix = unique_prefix();
    let mut db = Db::connect(&url).await;
    let server = Server::start().await;
    let admin = server.admin();
    pg_target(&admin, "execdb", json!({"admin_url": url, "role_prefix": prefix})).await;
    let (_, key) = admin.principal("etl", "service", &["dbusers"]).await;
    let out = std::process::Command::new(crate::harness::bin())
        .args([
            "exec",
            "--target",
            "execdb",
            "--ttl",
            "5m",
            "--reason",
            "nightly ETL",
            "--",
        ])
        .args(["psql", "-Atc", "SELECT current_user"])
        .env("STINT_ADDR", &server.addr)
        .env("STINT_TOKEN", &key)
        .output()
        .expect("stint exec");
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with(&prefix),
        "psql ran as the session's role: {stdout}"
    );
    let mut gone = false;
    for _ in 0..500 {
        if !db.role_exists(&stdout).await {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "the role is dropped when the command exits");
    db.drop_prefixed(&prefix).await;
}
