//! Push revocation: a resource server behind `stint-guard` verifies tokens offline and refuses a
//! revoked session's token as soon as the stream says so — without calling introspection.

use std::time::{Duration, Instant};

use axum::routing::get;
use axum::{Extension, Router};
use reqwest::StatusCode;
use serde_json::json;
use stint_guard::{Claims, Guard, GuardConfig};

use crate::harness::{Server, World};

async fn hello(Extension(c): Extension<Claims>) -> String {
    format!("hello {}", c.sid)
}

/// A resource server on a loopback port, behind the guard; returns its base URL.
async fn resource_server(guard: &Guard) -> String {
    let app = Router::new().route("/hello", get(hello)).layer(guard.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

async fn call(rs: &str, token: &str) -> StatusCode {
    reqwest::Client::new()
        .get(format!("{rs}/hello"))
        .bearer_auth(token)
        .send()
        .await
        .expect("resource server")
        .status()
}

fn introspections(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("stint_introspections_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guarded_resource_server_refuses_an_ended_sessions_token_within_a_second() {
    let w = World::new(0).await;
    let guard = Guard::start(GuardConfig::new(&w.server.addr, &w.rs.key, "api"))
        .await
        .expect("guard starts");
    assert!(
        guard.wait_healthy(Duration::from_secs(5)).await,
        "stream connected"
    );
    let rs = resource_server(&guard).await;
    let before = introspections(
        &reqwest::get(format!("{}/metrics", w.server.addr))
            .await
            .expect("m")
            .text()
            .await
            .expect("t"),
    );

    for trial in 0..20 {
        let s = w.request(json!({})).await;
        let sid = s["id"].as_str().expect("id");
        let token = w.token(sid).await;
        assert_eq!(
            call(&rs, &token).await,
            StatusCode::OK,
            "trial {trial}: accepted while active"
        );
        let t0 = Instant::now();
        let (st, _) = w.ci.post(&format!("/v1/sessions/{sid}/end"), json!({})).await;
        assert_eq!(st, StatusCode::OK);
        let mut refused = false;
        while t0.elapsed() < Duration::from_secs(1) {
            if guard.verify(&token).is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(refused, "trial {trial}: still accepted 1 s after the end");
        assert_eq!(call(&rs, &token).await, StatusCode::UNAUTHORIZED, "trial {trial}");
    }
    let after = introspections(
        &reqwest::get(format!("{}/metrics", w.server.addr))
            .await
            .expect("m")
            .text()
            .await
            .expect("t"),
    );
    assert_eq!(after, before, "the guard never called introspection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_started_after_an_end_still_refuses_that_sessions_tokens() {
    let w = World::new(0).await;
    let s = w.request(json!({})).await;
    let sid = s["id"].as_str().expect("id");
    let token = w.token(sid).await;
    w.ci.post(&format!("/v1/sessions/{sid}/end"), json!({})).await;
    let guard = Guard::start(GuardConfig::new(&w.server.addr, &w.rs.key, "api"))
        .await
        .expect("guard starts");
    assert!(guard.wait_healthy(Duration::from_secs(5)).await);
    let deadline = Instant::now() + Duration::from_secs(5);
    while guard.verify(&token).is_ok() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(guard.verify(&token).is_err(), "the replayed history revokes it");
    let _ = Server::start;
}
