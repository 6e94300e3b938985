//! Starts the real `stint` binary on an ephemeral loopback port with a temp data dir, and talks to it
//! over HTTP as a user would.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_stint")
}

/// A fresh API key from `stint keygen`.
pub fn keygen() -> String {
    let out = Command::new(bin()).arg("keygen").output().expect("stint keygen");
    String::from_utf8(out.stdout).expect("utf8").trim().to_owned()
}

/// A running server.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub addr: String,
    /// The bootstrap admin key.
    pub admin: String,
    /// The data dir (kept across restarts).
    pub dir: PathBuf,
    /// Extra environment (kept across restarts).
    pub env: Vec<(String, String)>,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server on a fresh temp data dir and waits until it is ready.
    pub async fn start() -> Server {
        Self::start_with(&[]).await
    }

    /// Same, with extra environment variables (e.g. `STINT_USE_AUDIT_INTERVAL_S`).
    pub async fn start_with(env: &[(&str, &str)]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        let mut s = Self::spawn(&dir, &keygen(), env);
        s._tmp = Some(tmp);
        s.wait_ready().await;
        s
    }

    /// Starts a server with a configuration file (TOML) on a fresh temp data dir and waits until ready.
    pub async fn start_with_config(toml: &str) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cfg = tmp.path().join("stint.toml");
        std::fs::write(&cfg, toml).expect("write config");
        let dir = tmp.path().join("data");
        let mut s = Self::spawn_with(
            &dir,
            &keygen(),
            &[],
            &["--config".into(), cfg.display().to_string()],
        );
        s._tmp = Some(tmp);
        s.wait_ready().await;
        s
    }

    /// Starts a server on an existing data dir without waiting for readiness.
    pub fn spawn(dir: &Path, admin: &str, env: &[(&str, &str)]) -> Server {
        Self::spawn_with(dir, admin, env, &[])
    }

    /// Same, with extra command-line arguments for `stint server`.
    pub fn spawn_with(dir: &Path, admin: &str, env: &[(&str, &str)], args: &[String]) -> Server {
        std::fs::create_dir_all(dir).expect("mkdir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.parent().unwrap_or(dir).join("server.log"))
            .expect("log file");
        let mut cmd = Command::new(bin());
        cmd.args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(args)
            .env("STINT_BOOTSTRAP_ADMIN_KEY", admin)
            .env("STINT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn stint server");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = lines
            .next()
            .expect("server printed nothing")
            .expect("read stdout");
        let addr = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {first}"))
            .to_owned();
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        Server {
            child,
            addr,
            admin: admin.to_owned(),
            dir: dir.to_owned(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            _tmp: None,
        }
    }

    /// Polls `/readyz` until it answers 200 (at most 20 s).
    pub async fn wait_ready(&self) {
        let c = reqwest::Client::new();
        let t0 = Instant::now();
        loop {
            if let Ok(r) = c.get(format!("{}/readyz", self.addr)).send().await
                && r.status() == StatusCode::OK
            {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "server not ready after 20 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().map(|s| s.success()).unwrap_or(false)
    }

    /// Restarts on the same data dir (after kill9/terminate), without waiting for readiness.
    pub fn restart(&mut self) {
        let tmp = self._tmp.take();
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut next = Self::spawn(&self.dir, &self.admin, &env);
        next._tmp = tmp;
        std::mem::swap(self, &mut next);
    }

    /// An API client as the admin.
    pub fn admin(&self) -> Api {
        Api::new(&self.addr, &self.admin)
    }

    /// An API client with `key`.
    pub fn as_key(&self, key: &str) -> Api {
        Api::new(&self.addr, key)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small HTTP client.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub addr: String,
    pub key: String,
}

impl Api {
    pub fn new(addr: &str, key: &str) -> Api {
        Api {
            http: reqwest::Client::new(),
            addr: addr.to_owned(),
            key: key.to_owned(),
        }
    }

    async fn finish(r: reqwest::Response) -> (StatusCode, Value) {
        let status = r.status();
        let text = r.text().await.expect("body");
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.addr))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("send");
        Self::finish(r).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.addr))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .expect("send");
        Self::finish(r).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .delete(format!("{}{path}", self.addr))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("send");
        Self::finish(r).await
    }

    pub async fn form(&self, path: &str, pairs: &[(&str, &str)]) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.addr))
            .bearer_auth(&self.key)
            .form(pairs)
            .send()
            .await
            .expect("send");
        Self::finish(r).await
    }

    /// Creates a principal; returns (id, api key).
    pub async fn principal(&self, name: &str, kind: &str, groups: &[&str]) -> (String, String) {
        let (st, v) = self
            .post(
                "/v1/principals",
                json!({"name": name, "kind": kind, "groups": groups}),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        (
            v["id"].as_str().expect("id").to_owned(),
            v["api_key"].as_str().expect("key").to_owned(),
        )
    }

    /// Creates a jwt target.
    pub async fn target(&self, name: &str, max_ttl_s: u64, token_ttl_s: u64, approvals: u32) -> Value {
        let (st, v) = self
            .post(
                "/v1/targets",
                json!({"name": name, "kind": "jwt", "max_ttl_s": max_ttl_s, "token_ttl_s": token_ttl_s,
                       "requester_groups": ["deployers"], "approver_groups": ["ops"], "approvals_required": approvals}),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        v
    }

    /// Introspects a token; returns the answer.
    pub async fn introspect(&self, token: &str) -> Value {
        let (st, v) = self.form("/oauth2/introspect", &[("token", token)]).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        v
    }
}

/// A ready-made world: a server, an admin, a requester (`ci`, group deployers), two approvers
/// (group ops), a resource server and a target `api` needing `approvals` approvals.
pub struct World {
    pub server: Server,
    pub admin: Api,
    pub ci: Api,
    pub ci_id: String,
    pub alice: Api,
    pub bob: Api,
    pub rs: Api,
}

impl World {
    pub async fn new(approvals: u32) -> World {
        Self::with_server(Server::start().await, approvals).await
    }

    pub async fn with_server(server: Server, approvals: u32) -> World {
        let admin = server.admin();
        let (ci_id, ci) = admin.principal("ci", "ci_job", &["deployers"]).await;
        let (_, alice) = admin.principal("alice", "approver", &["ops"]).await;
        let (_, bob) = admin.principal("bob", "approver", &["ops"]).await;
        let (_, rs) = admin.principal("rs", "resource_server", &[]).await;
        admin.target("api", 3600, 300, approvals).await;
        World {
            ci: server.as_key(&ci),
            alice: server.as_key(&alice),
            bob: server.as_key(&bob),
            rs: server.as_key(&rs),
            admin,
            ci_id,
            server,
        }
    }

    /// Requests a session on `api` as `ci` with extra fields; returns the session object.
    pub async fn request(&self, extra: Value) -> Value {
        let mut body = json!({"target": "api", "reason": "deploy OT-1", "ttl_s": 600});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        let (st, v) = self.ci.post("/v1/sessions", body).await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        v
    }

    /// Fetches a JWT for session `sid` as `ci`.
    pub async fn token(&self, sid: &str) -> String {
        let (st, v) = self
            .ci
            .post(&format!("/v1/sessions/{sid}/credentials"), json!({}))
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        v["access_token"].as_str().expect("token").to_owned()
    }
}

/// Polls `f` every 20 ms until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

// ----- helpers added for the flow, bad-input and crash suites ----------------------------------

/// A raw HTTP answer: status, content type, headers, body text and the body as JSON (or `Null`).
#[derive(Debug)]
pub struct Raw {
    pub status: StatusCode,
    pub content_type: String,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

/// How a raw request authenticates.
#[derive(Debug, Clone, Copy)]
pub enum Auth<'a> {
    /// No `Authorization` header.
    None,
    /// `Authorization: Bearer <key>`.
    Bearer(&'a str),
    /// `Authorization: <value>` verbatim.
    Header(&'a str),
}

/// A raw request body.
#[derive(Debug, Clone)]
pub enum RawBody {
    /// No body.
    Empty,
    /// `application/json` with these exact bytes.
    Json(Vec<u8>),
    /// `application/x-www-form-urlencoded` with these exact bytes.
    Form(Vec<u8>),
    /// Any content type.
    Typed(String, Vec<u8>),
}

impl RawBody {
    /// A JSON body from a value.
    pub fn json(v: &Value) -> RawBody {
        RawBody::Json(v.to_string().into_bytes())
    }

    /// A JSON body from text taken verbatim (may be malformed).
    pub fn text(s: &str) -> RawBody {
        RawBody::Json(s.as_bytes().to_vec())
    }
}

/// Sends one request exactly as described.
pub async fn raw(addr: &str, method: reqwest::Method, path: &str, auth: Auth<'_>, body: RawBody) -> Raw {
    let http = reqwest::Client::new();
    let mut rb = http.request(method, format!("{addr}{path}"));
    match auth {
        Auth::None => {}
        Auth::Bearer(k) => rb = rb.bearer_auth(k),
        Auth::Header(v) => rb = rb.header(reqwest::header::AUTHORIZATION, v),
    }
    rb = match body {
        RawBody::Empty => rb,
        RawBody::Json(b) => rb
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(b),
        RawBody::Form(b) => rb
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(b),
        RawBody::Typed(ct, b) => rb.header(reqwest::header::CONTENT_TYPE, ct).body(b),
    };
    let r = rb.send().await.expect("send");
    let status = r.status();
    let headers = r.headers().clone();
    let content_type = headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = r.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Raw {
        status,
        content_type,
        headers,
        text,
        json,
    }
}

/// `sha256=<hex HMAC-SHA256 of body>`: how hooks and notifications are signed.
pub fn hmac_signature(secret: &str, body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = aws_lc_rs::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

impl Api {
    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .http
            .put(format!("{}{path}", self.addr))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .expect("send");
        Self::finish(r).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .http
            .patch(format!("{}{path}", self.addr))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .expect("send");
        Self::finish(r).await
    }

    /// A raw request with this client's key.
    pub async fn raw(&self, method: reqwest::Method, path: &str, body: RawBody) -> Raw {
        raw(&self.addr, method, path, Auth::Bearer(&self.key), body).await
    }

    /// Creates a jwt target from a full body (`kind` defaults to `jwt`); asserts 201.
    pub async fn target_with(&self, body: Value) -> Value {
        let mut body = body;
        if let Some(o) = body.as_object_mut() {
            o.entry("kind").or_insert(json!("jwt"));
        }
        let (st, v) = self.post("/v1/targets", body).await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        v
    }

    /// A session as this caller sees it; asserts 200.
    pub async fn session(&self, sid: &str) -> Value {
        let (st, v) = self.get(&format!("/v1/sessions/{sid}")).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        v
    }

    /// Every audit event (admin), following `next_cursor`.
    pub async fn audit_all(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = 0i64;
        loop {
            let (st, v) = self.get(&format!("/v1/audit?after_seq={after}&limit=1000")).await;
            assert_eq!(st, StatusCode::OK, "{v}");
            let items = v["items"].as_array().cloned().unwrap_or_default();
            let Some(last) = items.last().and_then(|e| e["seq"].as_i64()) else {
                break;
            };
            after = last;
            out.extend(items);
            if v["next_cursor"].is_null() {
                break;
            }
        }
        out
    }
}

impl Server {
    /// The SQLite database of this server.
    pub fn db(&self) -> PathBuf {
        self.dir.join("stint.db")
    }

    /// The server's log file (stderr of every run on this data dir).
    pub fn log_path(&self) -> PathBuf {
        self.dir.parent().unwrap_or(&self.dir).join("server.log")
    }
}

/// The published JWKS.
pub async fn jwks(addr: &str) -> jsonwebtoken::jwk::JwkSet {
    let r = reqwest::get(format!("{addr}/.well-known/jwks.json"))
        .await
        .expect("jwks");
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.expect("jwks json")
}

/// Verifies `token` against the server's JWKS (EdDSA, `aud` = `audience`, not expired) and returns
/// its header and claims.
pub async fn verify_token(
    addr: &str,
    token: &str,
    audience: &str,
) -> Result<(jsonwebtoken::Header, Value), String> {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
    let header = decode_header(token).map_err(|e| format!("header: {e}"))?;
    let kid = header.kid.clone().ok_or("no kid in the token header")?;
    let set = jwks(addr).await;
    let jwk = set
        .find(&kid)
        .ok_or_else(|| format!("kid {kid} is not in the JWKS"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("jwk: {e}"))?;
    let mut v = Validation::new(Algorithm::EdDSA);
    v.set_audience(&[audience]);
    v.leeway = 0;
    let data = decode::<Value>(token, &key, &v).map_err(|e| format!("verify: {e}"))?;
    Ok((data.header, data.claims))
}

/// Parses an RFC 3339 time as Unix seconds.
pub fn unix(rfc3339: &Value) -> i64 {
    let s = rfc3339
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {rfc3339}"));
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("bad time {s}: {e}"))
        .unix_timestamp()
}

/// The wall clock. The server under test is a separate process running on the real clock, so the
/// tests compare its times with the real clock too (there is no Clock to inject across processes).
#[allow(clippy::disallowed_methods)]
pub fn wall_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// Now as Unix seconds.
pub fn now_unix() -> i64 {
    wall_now().unix_timestamp()
}

/// `now + secs` as RFC 3339.
pub fn rfc3339_in(secs: i64) -> String {
    (wall_now() + time::Duration::seconds(secs))
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format")
}
