//! Issue and revoke rates of the `postgres` and `ssh` providers against a running stint server and a
//! real PostgreSQL, bounded in count and time.
//!
//! ```text
//! STINT_ADDR=http://127.0.0.1:PORT STINT_TOKEN=<admin key> BENCH_PG_URL=postgres://root@127.0.0.1:5432/postgres \
//!   cargo run --release --example providerbench
//! ```
//! For each kind: `BENCH_N` sessions (default 500), each with one credential, issued by
//! `BENCH_CONCURRENCY` (16) closed loops (issue rate = session + credential); then all sessions are
//! ended at once and the time until every credential shows `revocation: confirmed` gives the revoke
//! rate. For PostgreSQL every dropped role is checked to be gone from `pg_roles` (so it cannot log in);
//! for SSH a sample of serials is checked against the written KRL with `ssh-keygen -Q`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    addr: String,
}

impl Api {
    async fn call(&self, key: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> Res<Value> {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.addr))
            .bearer_auth(key);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await?;
        let st = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !st.is_success() {
            return Err(format!("{path}: {st} {v}").into());
        }
        Ok(v)
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

/// Issues `n` sessions + credentials with `conc` loops; returns (session ids, handles, seconds, latencies).
async fn issue(
    api: &Api,
    key: &str,
    target: &str,
    n: usize,
    conc: usize,
    public_key: Option<String>,
) -> Res<(Vec<String>, Vec<Value>, f64, Vec<Duration>)> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (api, key, target, next, pk) = (
            api.clone(),
            key.to_owned(),
            target.to_owned(),
            next.clone(),
            public_key.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                let t = Instant::now();
                let s = api
                    .call(
                        &key,
                        reqwest::Method::POST,
                        "/v1/sessions",
                        Some(json!({"target": target, "reason": "bench", "ttl_s": 3600})),
                    )
                    .await?;
                let sid = s["id"].as_str().unwrap_or_default().to_owned();
                let body = pk
                    .as_ref()
                    .map_or_else(|| json!({}), |k| json!({"public_key": k}));
                let c = api
                    .call(
                        &key,
                        reqwest::Method::POST,
                        &format!("/v1/sessions/{sid}/credentials"),
                        Some(body),
                    )
                    .await?;
                out.push((sid, c, t.elapsed()));
            }
            Res::Ok(out)
        }));
    }
    let (mut ids, mut creds, mut lat) = (Vec::new(), Vec::new(), Vec::new());
    for t in tasks {
        for (sid, c, l) in t.await?? {
            ids.push(sid);
            creds.push(c);
            lat.push(l);
        }
    }
    lat.sort();
    Ok((ids, creds, t0.elapsed().as_secs_f64(), lat))
}

/// Ends every session (16 at a time) and waits until all credentials are confirmed revoked.
async fn revoke_all(api: &Api, key: &str, ids: &[String]) -> Res<(f64, f64)> {
    let t0 = Instant::now();
    let ids = Arc::new(ids.to_vec());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (api, key, ids, next) = (api.clone(), key.to_owned(), ids.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(id) = ids.get(i) else { break };
                api.call(
                    &key,
                    reqwest::Method::POST,
                    &format!("/v1/sessions/{id}/end"),
                    Some(json!({})),
                )
                .await?;
            }
            Res::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let ended = t0.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let mut pending = 0;
        for id in ids.iter() {
            let s = api
                .call(key, reqwest::Method::GET, &format!("/v1/sessions/{id}"), None)
                .await?;
            if s["credentials"][0]["revocation"] != "confirmed" {
                pending += 1;
                break;
            }
        }
        if pending == 0 {
            return Ok((ended, t0.elapsed().as_secs_f64()));
        }
        if Instant::now() > deadline {
            return Err("revocations not confirmed within 300 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// OpenBao's database secrets engine doing the same work: `GET database/creds/<role>` (a new role with
/// a password and a lease), then `PUT sys/leases/revoke` of every lease (its revocation statements
/// drop the role). Set up by `bench/providers.sh`.
async fn bao(n: usize, conc: usize, pg_url: &str) -> Res<()> {
    let addr = std::env::var("BAO_ADDR").unwrap_or_else(|_| "http://127.0.0.1:8200".into());
    let token = std::env::var("BAO_TOKEN").unwrap_or_else(|_| "root".into());
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (http, addr, token, next) = (http.clone(), addr.clone(), token.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                let t = Instant::now();
                let v: Value = http
                    .get(format!("{addr}/v1/database/creds/bench"))
                    .header("X-Vault-Token", &token)
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                out.push((v["lease_id"].as_str().unwrap_or_default().to_owned(), t.elapsed()));
            }
            Res::Ok(out)
        }));
    }
    let (mut leases, mut lat) = (Vec::new(), Vec::new());
    for t in tasks {
        for (l, d) in t.await?? {
            leases.push(l);
            lat.push(d);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    lat.sort();
    println!(
        "bao postgres issue  {:>7.0}/s  ({} roles in {secs:.1} s, concurrency {conc}, p50 {:.1} ms, p99 {:.1} ms)",
        leases.len() as f64 / secs,
        leases.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );
    let t0 = Instant::now();
    let leases = Arc::new(leases);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (http, addr, token, next, leases) = (
            http.clone(),
            addr.clone(),
            token.clone(),
            next.clone(),
            leases.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(l) = leases.get(i) else { break };
                http.put(format!("{addr}/v1/sys/leases/revoke"))
                    .header("X-Vault-Token", &token)
                    .json(&json!({"lease_id": l, "sync": true}))
                    .send()
                    .await?
                    .error_for_status()?;
            }
            Res::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "bao postgres revoke {:>7.0}/s  ({} leases revoked synchronously in {secs:.1} s)",
        leases.len() as f64 / secs,
        leases.len()
    );
    let out = std::process::Command::new("psql")
        .args([
            pg_url,
            "-Atc",
            "SELECT count(*) FROM pg_roles WHERE starts_with(rolname, 'v-root-bench')",
        ])
        .output()?;
    println!(
        "bao postgres check  roles of the bench left in pg_roles: {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Res<()> {
    if std::env::var("BENCH_SYSTEM").is_ok_and(|s| s == "bao") {
        let n: usize = std::env::var("BENCH_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(500);
        let conc: usize = std::env::var("BENCH_CONCURRENCY")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(16);
        let pg_url = std::env::var("BENCH_PG_URL")
            .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/postgres".into());
        return bao(n, conc, &pg_url).await;
    }
    let addr = std::env::var("STINT_ADDR").unwrap_or_else(|_| "http://127.0.0.1:8300".into());
    let admin = std::env::var("STINT_TOKEN")?;
    let pg_url =
        std::env::var("BENCH_PG_URL").unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/postgres".into());
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let conc: usize = std::env::var("BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let api = Api {
        http: reqwest::Client::builder().pool_max_idle_per_host(64).build()?,
        addr,
    };
    let tag = format!("{:08x}", std::process::id());
    let p = api
        .call(
            &admin,
            reqwest::Method::POST,
            "/v1/principals",
            Some(json!({"name": format!("pbench-{tag}"), "kind": "service", "groups": ["pbench"]})),
        )
        .await?;
    let key = p["api_key"].as_str().unwrap_or_default().to_owned();
    let prefix = format!("stint_b{tag}_");
    let dir = tempfile::tempdir()?;
    let krl = dir.path().join("bench.krl");
    api.call(&admin, reqwest::Method::POST, "/v1/targets", Some(json!({"name": format!("pg-{tag}"), "kind": "postgres", "max_ttl_s": 7200, "requester_groups": ["pbench"], "config": {"admin_url": pg_url, "role_prefix": prefix}}))).await?;
    api.call(&admin, reqwest::Method::POST, "/v1/targets", Some(json!({"name": format!("ssh-{tag}"), "kind": "ssh", "max_ttl_s": 7200, "requester_groups": ["pbench"], "config": {"principals": ["maint"], "krl_path": krl.to_str()}}))).await?;

    // PostgreSQL roles.
    let (ids, creds, secs, lat) = issue(&api, &key, &format!("pg-{tag}"), n, conc, None).await?;
    println!(
        "postgres issue  {:>7.0}/s  ({} roles in {secs:.1} s, concurrency {conc}, p50 {:.1} ms, p99 {:.1} ms)",
        ids.len() as f64 / secs,
        ids.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );
    let (ended, confirmed) = revoke_all(&api, &key, &ids).await?;
    println!(
        "postgres revoke {:>7.0}/s  (all {} ended in {ended:.1} s, every role confirmed dropped after {confirmed:.1} s)",
        ids.len() as f64 / confirmed,
        ids.len()
    );
    let out = std::process::Command::new("psql")
        .args([
            &pg_url,
            "-Atc",
            &format!("SELECT count(*) FROM pg_roles WHERE starts_with(rolname, '{prefix}')"),
        ])
        .output()?;
    let left = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    println!("postgres check  roles with the bench prefix left in pg_roles: {left} (0 = none can log in)");
    drop(creds);

    // SSH certificates.
    let kdir = dir.path().join("k");
    std::fs::create_dir_all(&kdir)?;
    let keyfile = kdir.join("id");
    std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&keyfile)
        .status()?;
    let public = std::fs::read_to_string(keyfile.with_extension("pub"))?
        .trim()
        .to_owned();
    let (ids, creds, secs, lat) = issue(&api, &key, &format!("ssh-{tag}"), n, conc, Some(public)).await?;
    println!(
        "ssh issue       {:>7.0}/s  ({} certificates in {secs:.1} s, concurrency {conc}, p50 {:.1} ms, p99 {:.1} ms)",
        ids.len() as f64 / secs,
        ids.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );
    let (ended, confirmed) = revoke_all(&api, &key, &ids).await?;
    println!(
        "ssh revoke      {:>7.0}/s  (all {} ended in {ended:.1} s, every serial confirmed in the KRL file after {confirmed:.1} s)",
        ids.len() as f64 / confirmed,
        ids.len()
    );
    let mut revoked = 0;
    for c in creds.iter().step_by((creds.len() / 20).max(1)) {
        let cert = kdir.join("c-cert.pub");
        std::fs::write(
            &cert,
            format!("{}\n", c["certificate"].as_str().unwrap_or_default()),
        )?;
        let q = std::process::Command::new("ssh-keygen")
            .args(["-Q", "-f"])
            .arg(&krl)
            .arg(&cert)
            .output()?;
        revoked += usize::from(String::from_utf8_lossy(&q.stdout).contains("REVOKED"));
    }
    println!(
        "ssh check       sampled certificates REVOKED by the KRL file: {revoked}/{}",
        creds.iter().step_by((creds.len() / 20).max(1)).count()
    );
    Ok(())
}
