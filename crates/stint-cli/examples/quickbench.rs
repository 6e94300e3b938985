//! A rough load check against a running server (the dedicated benchmark comes later).
//!
//! `STINT_ADDR=http://127.0.0.1:PORT STINT_TOKEN=<admin key> cargo run --release --example quickbench`
//!
//! Prints: sessions+credentials per second (request a session on a target needing no approval, then
//! fetch its JWT), introspections per second (closed loop, keep-alive), and how the deadline
//! revocation looked (token inactive after the deadline; server-side lag from `/metrics`).
//! Bounded: each phase runs for a fixed number of seconds against loopback only.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    addr: String,
}

impl Api {
    async fn post(&self, key: &str, path: &str, body: Value) -> Res<Value> {
        let r = self
            .http
            .post(format!("{}{path}", self.addr))
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
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Res<()> {
    let addr = std::env::var("STINT_ADDR").unwrap_or_else(|_| "http://127.0.0.1:8300".into());
    let admin = std::env::var("STINT_TOKEN")?;
    let secs: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let conc: usize = std::env::var("BENCH_CONCURRENCY")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let api = Api {
        http: reqwest::Client::builder().pool_max_idle_per_host(256).build()?,
        addr,
    };
    let tag = std::process::id();
    let nhi = api
        .post(
            &admin,
            "/v1/principals",
            json!({"name": format!("bench-nhi-{tag}"), "kind": "service", "groups": ["bench"]}),
        )
        .await?;
    let rs = api
        .post(
            &admin,
            "/v1/principals",
            json!({"name": format!("bench-rs-{tag}"), "kind": "resource_server"}),
        )
        .await?;
    let target = format!("bench-{tag}");
    api.post(&admin, "/v1/targets", json!({"name": target, "kind": "jwt", "max_ttl_s": 3600, "token_ttl_s": 600, "requester_groups": ["bench"]})).await?;
    let nhi_key = nhi["api_key"].as_str().unwrap_or_default().to_owned();
    let rs_key = rs["api_key"].as_str().unwrap_or_default().to_owned();

    // Phase 1: sessions + credentials.
    let done = Arc::new(AtomicU64::new(0));
    let tokens = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (api, key, target, done, tokens) = (
            api.clone(),
            nhi_key.clone(),
            target.clone(),
            done.clone(),
            tokens.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < stop {
                let t0 = Instant::now();
                let s = api
                    .post(
                        &key,
                        "/v1/sessions",
                        json!({"target": target, "reason": "bench", "ttl_s": 3600}),
                    )
                    .await?;
                let sid = s["id"].as_str().unwrap_or_default().to_owned();
                let c = api
                    .post(&key, &format!("/v1/sessions/{sid}/credentials"), json!({}))
                    .await?;
                lat.push(t0.elapsed());
                done.fetch_add(1, Ordering::Relaxed);
                let mut t = tokens.lock().map_err(|_| "poisoned")?;
                if t.len() < 1000 {
                    t.push(c["access_token"].as_str().unwrap_or_default().to_owned());
                }
            }
            Res::Ok(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    lat.sort();
    let n = done.load(Ordering::Relaxed);
    println!(
        "sessions+credentials: {n} in {secs} s = {:.0}/s at concurrency {conc} (p50 {:?}, p99 {:?})",
        n as f64 / secs as f64,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );

    // Phase 2: introspection.
    let tokens: Arc<Vec<String>> = Arc::new(tokens.lock().map_err(|_| "poisoned")?.clone());
    let done = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..conc {
        let (api, key, tokens, done) = (api.clone(), rs_key.clone(), tokens.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = w;
            while Instant::now() < stop {
                let tok = &tokens[i % tokens.len()];
                i += conc;
                let t0 = Instant::now();
                let r = api
                    .http
                    .post(format!("{}/oauth2/introspect", api.addr))
                    .bearer_auth(&key)
                    .form(&[("token", tok.as_str())])
                    .send()
                    .await?;
                let v: Value = r.json().await?;
                lat.push(t0.elapsed());
                if v["active"] != true {
                    return Err("introspection answered inactive for a live token".into());
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            Res::Ok(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    lat.sort();
    let n = done.load(Ordering::Relaxed);
    println!(
        "introspections: {n} in {secs} s = {:.0}/s at concurrency {conc} (p50 {:?}, p99 {:?})",
        n as f64 / secs as f64,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );

    // Phase 3: deadline revocation of 200 sessions with ttl 2 s.
    let mut toks = Vec::new();
    for _ in 0..200 {
        let s = api
            .post(
                &nhi_key,
                "/v1/sessions",
                json!({"target": target, "reason": "bench deadline", "ttl_s": 2}),
            )
            .await?;
        let sid = s["id"].as_str().unwrap_or_default().to_owned();
        let deadline = time::OffsetDateTime::parse(
            s["expires_at"].as_str().unwrap_or_default(),
            &time::format_description::well_known::Rfc3339,
        )?;
        let c = api
            .post(&nhi_key, &format!("/v1/sessions/{sid}/credentials"), json!({}))
            .await?;
        toks.push((
            deadline,
            c["access_token"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut still_active = 0;
    for (_, tok) in &toks {
        let r = api
            .http
            .post(format!("{}/oauth2/introspect", api.addr))
            .bearer_auth(&rs_key)
            .form(&[("token", tok.as_str())])
            .send()
            .await?;
        let v: Value = r.json().await?;
        if v["active"] == true {
            still_active += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = api
        .http
        .get(format!("{}/metrics", api.addr))
        .send()
        .await?
        .text()
        .await?;
    let read = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let (sum, count) = (
        read("stint_revocation_lag_seconds_sum"),
        read("stint_revocation_lag_seconds_count"),
    );
    let quantile = |le: &str| -> f64 {
        let key = format!("stint_revocation_lag_seconds_bucket{{le=\"{le}\"}}");
        metrics
            .lines()
            .find(|l| l.starts_with(&key))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    println!(
        "deadline revocation: {still_active}/200 tokens active 0.5 s after their deadline; server lag deadline→ended: mean {:.1} ms over {count} sessions, {} within 10 ms, {} within 50 ms, {} within 250 ms",
        if count > 0.0 { sum / count * 1000.0 } else { 0.0 },
        quantile("0.01"),
        quantile("0.05"),
        quantile("0.25"),
    );
    Ok(())
}
