//! Crashes and restarts: fail closed on start, state rebuilt from the store, clean shutdown, and
//! tampering with the audit chain detected without stopping the server.

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{self, Auth, RawBody, World};

fn sid(s: &Value) -> String {
    s["id"].as_str().expect("session id").to_owned()
}

/// Runs SQL statements on a stopped server's database (sqlite3 CLI, else Python's sqlite3).
fn sql(db: &std::path::Path, stmt: &str) {
    let cli = Command::new("sqlite3").arg(db).arg(stmt).output();
    match cli {
        Ok(out) if out.status.success() => return,
        Ok(out) => panic!("sqlite3 failed: {}", String::from_utf8_lossy(&out.stderr)),
        Err(_) => {}
    }
    let py = "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nc.executescript(sys.argv[2])\nc.commit()\nc.close()\n";
    let out = Command::new("python3")
        .args(["-c", py])
        .arg(db)
        .arg(stmt)
        .output()
        .expect("neither sqlite3 nor python3");
    assert!(
        out.status.success(),
        "python3 sqlite3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A target `short` (max 10 s) and a session of `ci` on it with `ttl_s`, with a token.
async fn short_session(w: &World, ttl_s: u64) -> (String, String) {
    w.admin
        .target_with(
            json!({"name": "short", "max_ttl_s": 600, "token_ttl_s": 300, "requester_groups": ["deployers"]}),
        )
        .await;
    let (st, s) =
        w.ci.post(
            "/v1/sessions",
            json!({"target": "short", "reason": "crash test", "ttl_s": ttl_s}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{s}");
    let id = sid(&s);
    let token = w.token(&id).await;
    (id, token)
}

/// After a restart: fresh clients for the new address.
struct After {
    admin: harness::Api,
    ci: harness::Api,
    rs: harness::Api,
}

fn clients(w: &World) -> After {
    After {
        admin: w.server.admin(),
        ci: w.server.as_key(&w.ci.key),
        rs: w.server.as_key(&w.rs.key),
    }
}

#[tokio::test]
async fn kill9_then_restart_after_the_deadline_fails_closed_before_ready() {
    let mut w = World::new(0).await;
    let (id, token) = short_session(&w, 2).await;
    // More sessions that expire while the server is down give start-up recovery real work.
    let mut others = Vec::new();
    for _ in 0..40 {
        let (st, s) =
            w.ci.post(
                "/v1/sessions",
                json!({"target": "short", "reason": "load", "ttl_s": 2}),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{s}");
        let oid = sid(&s);
        let t = w.token(&oid).await;
        others.push((oid, t));
    }
    assert_eq!(w.rs.introspect(&token).await["active"], true);
    w.server.kill9();
    tokio::time::sleep(Duration::from_secs(3)).await;
    w.server.restart();

    let addr = w.server.addr.clone();
    let rs_key = w.rs.key.clone();
    let ci_key = w.ci.key.clone();
    let t0 = Instant::now();
    let mut not_ready_answers = 0u32;
    loop {
        // Requests first, readiness after: readiness never goes back, so if /readyz still says 503
        // afterwards, every request before it must have been refused.
        let intro = harness::raw(
            &addr,
            Method::POST,
            "/oauth2/introspect",
            Auth::Bearer(&rs_key),
            RawBody::Form(format!("token={token}").into_bytes()),
        )
        .await;
        let sess = harness::raw(
            &addr,
            Method::GET,
            &format!("/v1/sessions/{id}"),
            Auth::Bearer(&ci_key),
            RawBody::Empty,
        )
        .await;
        let cred = harness::raw(
            &addr,
            Method::POST,
            &format!("/v1/sessions/{id}/credentials"),
            Auth::Bearer(&ci_key),
            RawBody::json(&json!({})),
        )
        .await;
        let health = harness::raw(&addr, Method::GET, "/healthz", Auth::None, RawBody::Empty).await;
        assert_eq!(
            health.status,
            StatusCode::OK,
            "/healthz must answer while recovering"
        );
        let ready = harness::raw(&addr, Method::GET, "/readyz", Auth::None, RawBody::Empty).await;
        if ready.status == StatusCode::OK {
            for r in [&intro, &sess, &cred] {
                assert!(
                    r.status == StatusCode::SERVICE_UNAVAILABLE || r.status.as_u16() < 500,
                    "{}",
                    r.text
                );
            }
            if intro.status == StatusCode::OK {
                assert_eq!(
                    intro.json,
                    json!({"active": false}),
                    "token answered active while recovering"
                );
            }
            assert_ne!(
                cred.status,
                StatusCode::CREATED,
                "credential issued for an expired session"
            );
            break;
        }
        assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "{}", ready.text);
        for r in [&intro, &sess, &cred] {
            assert_eq!(
                r.status,
                StatusCode::SERVICE_UNAVAILABLE,
                "answered before ready: {}",
                r.text
            );
            assert_eq!(r.json["code"], "not_ready", "{}", r.text);
        }
        not_ready_answers += 1;
        assert!(t0.elapsed() < Duration::from_secs(20), "not ready after 20 s");
    }
    eprintln!("503 answers seen while recovering: {not_ready_answers}");

    let a = clients(&w);
    assert_eq!(a.rs.introspect(&token).await, json!({"active": false}));
    let s = a.ci.session(&id).await;
    assert_eq!(s["state"], "ended", "{s}");
    assert_eq!(s["end_reason"], "deadline");
    assert_eq!(s["credentials"][0]["revocation"], "confirmed", "{s}");
    for (oid, t) in &others {
        assert_eq!(a.rs.introspect(t).await, json!({"active": false}));
        assert_eq!(a.admin.session(oid).await["end_reason"], "deadline");
    }
    let (st, v) = a.admin.get("/v1/audit/verify").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["ok"], true, "{v}");
    let (_, ev) = a.ci.get(&format!("/v1/sessions/{id}/evidence")).await;
    let actions: Vec<&str> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.ends_with(&["session.ended", "credential.revoked"]),
        "{actions:?}"
    );
}

#[tokio::test]
async fn restart_before_the_deadline_keeps_the_session_and_its_token_active() {
    let mut w = World::new(0).await;
    let (id, token) = short_session(&w, 600).await;
    assert_eq!(w.rs.introspect(&token).await["active"], true);
    w.server.kill9();
    w.server.restart();
    w.server.wait_ready().await;
    let a = clients(&w);
    let v = a.rs.introspect(&token).await;
    assert_eq!(v["active"], true, "token index not rebuilt from the store: {v}");
    assert_eq!(v["sid"], id.as_str());
    assert_eq!(a.ci.session(&id).await["state"], "active");
    // The rebuilt index still obeys the end of the session.
    let (st, _) = a.ci.post(&format!("/v1/sessions/{id}/end"), json!({})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(a.rs.introspect(&token).await, json!({"active": false}));
}

#[tokio::test]
async fn restart_keeps_revoked_tokens_dead_and_offboarded_keys_out() {
    let mut w = World::new(0).await;
    let (id, token) = short_session(&w, 600).await;
    let (st, _) = w.ci.form("/oauth2/revoke", &[("token", token.as_str())]).await;
    assert_eq!(st, StatusCode::OK);
    let (bob_id, bob_key) = w.admin.principal("temp", "service", &[]).await;
    assert_eq!(
        w.admin.delete(&format!("/v1/principals/{bob_id}")).await.0,
        StatusCode::OK
    );
    w.server.kill9();
    w.server.restart();
    w.server.wait_ready().await;
    let a = clients(&w);
    assert_eq!(a.rs.introspect(&token).await, json!({"active": false}));
    assert_eq!(a.ci.session(&id).await["state"], "active");
    assert_eq!(
        w.server.as_key(&bob_key).get("/v1/targets").await.0,
        StatusCode::UNAUTHORIZED
    );
}

/// A token that was never used before a crash is used for the first time after it: that first use
/// belongs in the evidence like any other.
#[tokio::test]
async fn first_use_after_a_restart_is_audited() {
    let mut w = World::new(0).await;
    let (id, token) = short_session(&w, 600).await;
    w.server.kill9();
    w.server.restart();
    w.server.wait_ready().await;
    let a = clients(&w);
    assert_eq!(a.rs.introspect(&token).await["active"], true);
    let (_, ev) = a.ci.get(&format!("/v1/sessions/{id}/evidence")).await;
    let used: Vec<&Value> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "credential.used")
        .collect();
    assert_eq!(used.len(), 1, "no credential.used event for the first use: {ev}");
    assert_eq!(used[0]["details"]["first_use"], true);
}

#[tokio::test]
async fn sigterm_exits_cleanly_and_keeps_every_use() {
    let mut w = World::new(0).await;
    let (id, token) = short_session(&w, 600).await;
    for _ in 0..3 {
        assert_eq!(w.rs.introspect(&token).await["active"], true);
    }
    assert!(
        w.server.terminate(),
        "stint server did not exit successfully on SIGTERM"
    );
    w.server.restart();
    w.server.wait_ready().await;
    let a = clients(&w);
    let s = a.ci.session(&id).await;
    assert_eq!(s["state"], "active");
    assert_eq!(
        s["uses"], 3,
        "uses aggregated in memory were lost on a clean shutdown: {s}"
    );
    assert_eq!(a.rs.introspect(&token).await["active"], true);
    let (_, v) = a.admin.get("/v1/audit/verify").await;
    assert_eq!(v["ok"], true, "{v}");
    assert!(w.server.terminate());
}

/// Stops the server, runs `stmt` on its database, restarts it and checks that verification reports
/// `bad_seq` while the server keeps serving.
async fn tampered(stmt: &str, bad_seq: i64) {
    let mut w = World::new(0).await;
    let (id, _) = short_session(&w, 600).await;
    let (st, v) = w.admin.get("/v1/audit/verify").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["ok"], true, "{v}");
    assert!(w.server.terminate());
    sql(&w.server.db(), stmt);
    w.server.restart();
    w.server.wait_ready().await;
    let a = clients(&w);
    let (st, v) = a.admin.get("/v1/audit/verify").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["ok"], false, "tampering with the chain went unnoticed: {v}");
    assert_eq!(v["first_bad_seq"], bad_seq, "{v}");
    // A broken chain never stops the server.
    let r = reqwest::get(format!("{}/readyz", w.server.addr)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    a.admin.principal("after-tamper", "service", &[]).await;
    let (st, ev) = a.ci.get(&format!("/v1/sessions/{id}/evidence")).await;
    assert_eq!(st, StatusCode::OK, "{ev}");
    assert_eq!(ev["chain"]["verified"], false, "{ev}");
    let metrics = reqwest::get(format!("{}/metrics", w.server.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("stint_audit_chain_ok") && l.trim_end().ends_with(" 0")),
        "{metrics}"
    );
    let log = std::fs::read_to_string(w.server.log_path()).unwrap_or_default();
    assert!(
        log.contains("audit chain does not verify"),
        "no log line at start about the broken chain"
    );
}

#[tokio::test]
async fn audit_verify_detects_a_changed_row() {
    tampered("UPDATE audit SET actor='prn_evil' WHERE seq=3", 3).await;
}

#[tokio::test]
async fn audit_verify_detects_a_deleted_row() {
    tampered("DELETE FROM audit WHERE seq=4", 4).await;
}

#[tokio::test]
async fn audit_verify_detects_swapped_rows() {
    tampered("UPDATE audit SET seq=-3 WHERE seq=3; UPDATE audit SET seq=3 WHERE seq=4; UPDATE audit SET seq=4 WHERE seq=-3;", 3).await;
}

#[tokio::test]
async fn audit_verify_detects_a_row_that_no_longer_parses() {
    tampered("UPDATE audit SET details='{not json' WHERE seq=5", 5).await;
}

#[tokio::test]
async fn signing_keys_survive_a_restart() {
    let mut w = World::new(0).await;
    let (_, token) = short_session(&w, 600).await;
    let (st, v) = w.admin.post("/v1/keys/rotate", json!({})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let kid = v["kid"].as_str().unwrap().to_owned();
    w.server.kill9();
    w.server.restart();
    w.server.wait_ready().await;
    let set = harness::jwks(&w.server.addr).await;
    assert_eq!(
        set.keys.len(),
        2,
        "the previous key must stay published after a restart"
    );
    harness::verify_token(&w.server.addr, &token, "short")
        .await
        .expect("old token verifies after restart");
    let a = clients(&w);
    let (st, s) =
        a.ci.post(
            "/v1/sessions",
            json!({"target": "short", "reason": "x", "ttl_s": 60}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, c) =
        a.ci.post(&format!("/v1/sessions/{}/credentials", sid(&s)), json!({}))
            .await;
    assert_eq!(st, StatusCode::CREATED);
    let (h, _) = harness::verify_token(&w.server.addr, c["access_token"].as_str().unwrap(), "short")
        .await
        .expect("verifies");
    assert_eq!(
        h.kid.as_deref(),
        Some(kid.as_str()),
        "new tokens are signed with the rotated key"
    );
}

#[tokio::test]
async fn an_idle_timeout_that_passed_while_down_ends_the_session_at_start() {
    let mut w = World::new(0).await;
    w.admin
        .target_with(json!({"name": "short", "max_ttl_s": 600, "requester_groups": ["deployers"]}))
        .await;
    let (st, s) =
        w.ci.post(
            "/v1/sessions",
            json!({"target": "short", "reason": "idle", "ttl_s": 600, "idle_timeout_s": 2}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{s}");
    let id = sid(&s);
    let token = w.token(&id).await;
    assert_eq!(
        w.ci.post(&format!("/v1/sessions/{id}/heartbeat"), json!({}))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    w.server.kill9();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    w.server.restart();
    w.server.wait_ready().await;
    let a = clients(&w);
    assert_eq!(a.rs.introspect(&token).await, json!({"active": false}));
    let s = a.ci.session(&id).await;
    assert_eq!(s["state"], "ended", "{s}");
    assert_eq!(s["end_reason"], "idle");
}
