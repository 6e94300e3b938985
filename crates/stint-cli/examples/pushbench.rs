//! Push-revocation latency: how long after a session is ended a resource server behind `stint-guard`
//! (offline JWT verification + the revocation stream) refuses its token. Bounded: `BENCH_TRIALS`
//! (default 200) sequential trials against a running stint server.
//!
//! ```text
//! STINT_ADDR=http://127.0.0.1:PORT STINT_TOKEN=<admin key> cargo run --release --example pushbench
//! ```
//! Each trial: a session and a token; the guard accepts it; `POST /v1/sessions/{id}/end` is sent and
//! the clock starts; the guard's `verify` is polled every 50 µs until it refuses. Reported: from sending
//! the end request, and from its response, to the refusal (p50, p90, p99, max).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stint_guard::{Guard, GuardConfig};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

async fn post(http: &reqwest::Client, addr: &str, key: &str, path: &str, body: Value) -> Res<Value> {
    let r = http
        .post(format!("{addr}{path}"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await?;
    let st = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    if !st.is_success() {
        return Err(format!("{path}: {st} {v}").into());
    }
    Ok(v)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> Res<()> {
    let addr = std::env::var("STINT_ADDR").unwrap_or_else(|_| "http://127.0.0.1:8300".into());
    let admin = std::env::var("STINT_TOKEN")?;
    let trials: usize = std::env::var("BENCH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let http = reqwest::Client::new();
    let tag = std::process::id();
    let nhi = post(
        &http,
        &addr,
        &admin,
        "/v1/principals",
        json!({"name": format!("push-nhi-{tag}"), "kind": "service", "groups": ["push"]}),
    )
    .await?;
    let rs = post(
        &http,
        &addr,
        &admin,
        "/v1/principals",
        json!({"name": format!("push-rs-{tag}"), "kind": "resource_server"}),
    )
    .await?;
    let target = format!("push-{tag}");
    post(
        &http,
        &addr,
        &admin,
        "/v1/targets",
        json!({"name": target, "kind": "jwt", "max_ttl_s": 3600, "requester_groups": ["push"]}),
    )
    .await?;
    let nhi = nhi["api_key"].as_str().unwrap_or_default().to_owned();
    let mut cfg = GuardConfig::new(&addr, rs["api_key"].as_str().unwrap_or_default(), &target);
    cfg.replay_from = None;
    let guard = Guard::start(cfg).await?;
    if !guard.wait_healthy(Duration::from_secs(5)).await {
        return Err("the revocation stream did not connect".into());
    }
    let (mut from_send, mut from_answer) = (Vec::new(), Vec::new());
    for _ in 0..trials {
        let s = post(
            &http,
            &addr,
            &nhi,
            "/v1/sessions",
            json!({"target": target, "reason": "push bench", "ttl_s": 600}),
        )
        .await?;
        let sid = s["id"].as_str().unwrap_or_default().to_owned();
        let c = post(
            &http,
            &addr,
            &nhi,
            &format!("/v1/sessions/{sid}/credentials"),
            json!({}),
        )
        .await?;
        let token = c["access_token"].as_str().unwrap_or_default().to_owned();
        guard
            .verify(&token)
            .map_err(|r| format!("a fresh token was refused: {r:?}"))?;
        let sent = Instant::now();
        post(&http, &addr, &nhi, &format!("/v1/sessions/{sid}/end"), json!({})).await?;
        let answered = Instant::now();
        while guard.verify(&token).is_ok() {
            if sent.elapsed() > Duration::from_secs(10) {
                return Err("not refused within 10 s".into());
            }
            tokio::time::sleep(Duration::from_micros(50)).await;
        }
        let refused = Instant::now();
        from_send.push(refused - sent);
        from_answer.push(refused.saturating_duration_since(answered));
    }
    for (what, v) in [
        ("end sent → guard refuses", &mut from_send),
        ("end answered → guard refuses", &mut from_answer),
    ] {
        v.sort();
        println!(
            "{what:30} n={} p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            v.len(),
            pct(v, 0.5),
            pct(v, 0.9),
            pct(v, 0.99),
            pct(v, 1.0)
        );
    }
    Ok(())
}
