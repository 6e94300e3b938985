//! A rough, bounded load check: stint and (optionally) OpenBao doing the same work with the same client.
//!
//! ```text
//! STINT_ADDR=http://127.0.0.1:PORT STINT_TOKEN=<admin key> cargo run --release --example quickbench
//! BENCH_SYSTEM=bao BAO_ADDR=http://127.0.0.1:8200 BAO_TOKEN=root cargo run --release --example quickbench
//! ```
//! `bench/compare.sh` starts both servers and runs both. Phases (closed loop, keep-alive, loopback only,
//! each `BENCH_SECONDS` long at `BENCH_CONCURRENCY`):
//! - issue: stint = request a session (no approval needed) + fetch its JWT; OpenBao = create an orphan
//!   token with a 5 min TTL;
//! - 1st use: every issued token checked once (for stint, each is a credential's first use, audited
//!   at once), then check: stint = RFC 7662 introspection; OpenBao = token lookup;
//! - revoke: stint = end the session; OpenBao = revoke the token;
//! - stint only: 1000 sessions with a 3 s TTL issued at full speed (a mass expiry): are their tokens
//!   dead after the deadline, and the server-side revocation lag from `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Sessions in the mass-expiry phase.
const MASS: usize = 1000;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Clone)]
enum System {
    Stint { nhi: String, rs: String, target: String },
    Bao { root: String },
}

#[derive(Clone)]
struct Bench {
    http: reqwest::Client,
    addr: String,
    sys: System,
}

/// What `issue` returns: something to check and something to revoke.
#[derive(Clone)]
struct Issued {
    token: String,
    handle: String,
}

impl Bench {
    async fn post(&self, key: (&str, &str), path: &str, body: Value) -> Res<Value> {
        let r = self
            .http
            .post(format!("{}{path}", self.addr))
            .header(key.0, key.1)
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

    async fn issue(&self, ttl_s: u64) -> Res<Issued> {
        match &self.sys {
            System::Stint { nhi, target, .. } => {
                let auth = ("authorization", &*format!("Bearer {nhi}"));
                let s = self
                    .post(
                        auth,
                        "/v1/sessions",
                        json!({"target": target, "reason": "bench", "ttl_s": ttl_s, "credential": true}),
                    )
                    .await?;
                let sid = s["id"].as_str().unwrap_or_default().to_owned();
                Ok(Issued {
                    token: s["credential"]["access_token"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    handle: sid,
                })
            }
            System::Bao { root } => {
                let v = self
                    .post(
                        ("x-vault-token", root),
                        "/v1/auth/token/create-orphan",
                        json!({"ttl": format!("{ttl_s}s"), "policies": ["default"]}),
                    )
                    .await?;
                let t = v["auth"]["client_token"].as_str().unwrap_or_default().to_owned();
                Ok(Issued {
                    token: t.clone(),
                    handle: t,
                })
            }
        }
    }

    async fn check(&self, token: &str) -> Res<bool> {
        match &self.sys {
            System::Stint { rs, .. } => {
                let r = self
                    .http
                    .post(format!("{}/oauth2/introspect", self.addr))
                    .bearer_auth(rs)
                    .form(&[("token", token)])
                    .send()
                    .await?;
                let v: Value = r.json().await?;
                Ok(v["active"] == true)
            }
            System::Bao { root } => {
                let r = self
                    .http
                    .post(format!("{}/v1/auth/token/lookup", self.addr))
                    .header("x-vault-token", root)
                    .json(&json!({"token": token}))
                    .send()
                    .await?;
                Ok(r.status().is_success())
            }
        }
    }

    async fn revoke(&self, i: &Issued) -> Res<()> {
        match &self.sys {
            System::Stint { nhi, .. } => {
                self.post(
                    ("authorization", &format!("Bearer {nhi}")),
                    &format!("/v1/sessions/{}/end", i.handle),
                    json!({}),
                )
                .await?;
            }
            System::Bao { root } => {
                self.post(
                    ("x-vault-token", root),
                    "/v1/auth/token/revoke",
                    json!({"token": i.handle}),
                )
                .await?;
            }
        }
        Ok(())
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, what: &str, n: u64, secs: f64, conc: usize, mut lat: Vec<Duration>) {
    lat.sort();
    println!(
        "{name:5} {what:8} {:>8.0}/s  ({n} in {secs:.1} s, concurrency {conc}, p50 {:.2} ms, p99 {:.2} ms)",
        n as f64 / secs,
        percentile(&lat, 0.5).as_secs_f64() * 1000.0,
        percentile(&lat, 0.99).as_secs_f64() * 1000.0
    );
}

/// Runs `op` in `conc` closed loops for `secs` seconds (or until `op` says there is no more work).
async fn phase<F, Fut>(conc: usize, secs: u64, op: F) -> Res<(u64, f64, Vec<Duration>)>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Res<bool>> + Send,
{
    let op = Arc::new(op);
    let done = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let stop = t0 + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..conc {
        let (op, done) = (op.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = w;
            while Instant::now() < stop {
                let t = Instant::now();
                if !op(i).await? {
                    break;
                }
                lat.push(t.elapsed());
                done.fetch_add(1, Ordering::Relaxed);
                i += conc;
            }
            Res::Ok(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    Ok((done.load(Ordering::Relaxed), t0.elapsed().as_secs_f64(), lat))
}

#[tokio::main]
async fn main() -> Res<()> {
    let secs: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let conc: usize = std::env::var("BENCH_CONCURRENCY")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let http = reqwest::Client::builder().pool_max_idle_per_host(512).build()?;
    let is_bao = std::env::var("BENCH_SYSTEM").is_ok_and(|s| s == "bao");
    let bench = if is_bao {
        Bench {
            http,
            addr: std::env::var("BAO_ADDR").unwrap_or_else(|_| "http://127.0.0.1:8200".into()),
            sys: System::Bao {
                root: std::env::var("BAO_TOKEN").unwrap_or_else(|_| "root".into()),
            },
        }
    } else {
        let addr = std::env::var("STINT_ADDR").unwrap_or_else(|_| "http://127.0.0.1:8300".into());
        let admin = std::env::var("STINT_TOKEN")?;
        let b = Bench {
            http,
            addr,
            sys: System::Bao { root: String::new() },
        };
        let a = ("authorization", &*format!("Bearer {admin}"));
        let tag = std::process::id();
        let nhi = b
            .post(
                a,
                "/v1/principals",
                json!({"name": format!("bench-nhi-{tag}"), "kind": "service", "groups": ["bench"]}),
            )
            .await?;
        let rs = b
            .post(
                a,
                "/v1/principals",
                json!({"name": format!("bench-rs-{tag}"), "kind": "resource_server"}),
            )
            .await?;
        let target = format!("bench-{tag}");
        b.post(a, "/v1/targets", json!({"name": target, "kind": "jwt", "max_ttl_s": 3600, "token_ttl_s": 600, "requester_groups": ["bench"]})).await?;
        Bench {
            sys: System::Stint {
                nhi: nhi["api_key"].as_str().unwrap_or_default().to_owned(),
                rs: rs["api_key"].as_str().unwrap_or_default().to_owned(),
                target,
            },
            ..b
        }
    };
    let name = if is_bao { "bao" } else { "stint" };

    let issued = Arc::new(std::sync::Mutex::new(Vec::<Issued>::new()));
    let (b, store) = (bench.clone(), issued.clone());
    let (n, s, lat) = phase(conc, secs, move |_| {
        let (b, store) = (b.clone(), store.clone());
        async move {
            let i = b.issue(300).await?;
            store.lock().map_err(|_| "poisoned")?.push(i);
            Ok(true)
        }
    })
    .await?;
    report(name, "issue", n, s, conc, lat);

    let issued: Arc<Vec<Issued>> = Arc::new(issued.lock().map_err(|_| "poisoned")?.clone());
    // Every token once: for stint each is a credential's first use, which is audited at once (a
    // durable write); afterwards uses are counted in memory and written in aggregate.
    let next = Arc::new(AtomicUsize::new(0));
    let (b, list) = (bench.clone(), issued.clone());
    let (n, s, lat) = phase(conc, secs * 6, move |_| {
        let (b, list, next) = (b.clone(), list.clone(), next.clone());
        async move {
            let Some(i) = list.get(next.fetch_add(1, Ordering::Relaxed)) else {
                return Ok(false);
            };
            if !b.check(&i.token).await? {
                return Err("a live token was answered inactive".into());
            }
            Ok(true)
        }
    })
    .await?;
    report(name, "1st use", n, s, conc, lat);

    let (b, list) = (bench.clone(), issued.clone());
    let (n, s, lat) = phase(conc, secs, move |i| {
        let (b, list) = (b.clone(), list.clone());
        async move {
            if !b.check(&list[i % list.len()].token).await? {
                return Err("a live token was answered inactive".into());
            }
            Ok(true)
        }
    })
    .await?;
    report(name, "check", n, s, conc, lat);

    let next = Arc::new(AtomicUsize::new(0));
    let (b, list) = (bench.clone(), issued.clone());
    let (n, s, lat) = phase(conc, secs, move |_| {
        let (b, list, next) = (b.clone(), list.clone(), next.clone());
        async move {
            let k = next.fetch_add(1, Ordering::Relaxed);
            let Some(i) = list.get(k) else { return Ok(false) };
            b.revoke(i).await?;
            Ok(true)
        }
    })
    .await?;
    report(name, "revoke", n, s, conc, lat);
    let sample: Vec<&Issued> = issued
        .iter()
        .take(n as usize)
        .step_by(((n as usize) / 100).max(1))
        .collect();
    let mut alive = 0;
    for i in &sample {
        if bench.check(&i.token).await? {
            alive += 1;
        }
    }
    println!(
        "{name:5} revoked tokens still accepted: {alive} of {} sampled",
        sample.len()
    );

    if !is_bao {
        // Mass expiry: 1000 sessions issued as fast as 16 workers go, all with a 3 s TTL.
        let toks = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (b, store) = (bench.clone(), toks.clone());
        let next = Arc::new(AtomicUsize::new(0));
        phase(conc, 60, move |_| {
            let (b, store, next) = (b.clone(), store.clone(), next.clone());
            async move {
                if next.fetch_add(1, Ordering::Relaxed) >= MASS {
                    return Ok(false);
                }
                let i = b.issue(3).await?;
                store.lock().map_err(|_| "poisoned")?.push(i);
                Ok(true)
            }
        })
        .await?;
        tokio::time::sleep(Duration::from_millis(3600)).await;
        let toks = toks.lock().map_err(|_| "poisoned")?.clone();
        let mut still = 0;
        for t in &toks {
            if bench.check(&t.token).await? {
                still += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let metrics = bench
            .http
            .get(format!("{}/metrics", bench.addr))
            .send()
            .await?
            .text()
            .await?;
        let read = |key: &str| -> f64 {
            metrics
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().last())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        let (sum, count) = (
            read("stint_revocation_lag_seconds_sum"),
            read("stint_revocation_lag_seconds_count"),
        );
        let le = |b: &str| read(&format!("stint_revocation_lag_seconds_bucket{{le=\"{b}\"}}"));
        println!(
            "stint deadline: {still} of {MASS} tokens accepted after their deadline; lag deadline→ended mean {:.1} ms over {count} sessions ({} ≤ 5 ms, {} ≤ 10 ms, {} ≤ 50 ms, {} ≤ 250 ms)",
            if count > 0.0 { sum / count * 1000.0 } else { 0.0 },
            le("0.005"),
            le("0.01"),
            le("0.05"),
            le("0.25")
        );
    }
    Ok(())
}
