//! stint-guard against a fake stint that speaks the contract: a JWKS and an SSE revocation stream the
//! tests push events into. Every wait is bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::routing::get;
use axum::{Extension, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use stint_guard::{Claims, Clock, Guard, GuardConfig, Refusal, SystemClock};
use tokio::io::AsyncBufReadExt as _;
use tower::ServiceExt as _;

use fake::{Fake, Key};

/// The injected clock's start (2027-01-15T08:00:00Z).
const NOW: i64 = 1_800_000_000;
const AUDIENCE: &str = "orders";
const ISSUER: &str = "https://stint.test";
/// The fake sends a keep-alive every 50 ms; the guards allow a second of silence.
const STALENESS: Duration = Duration::from_secs(1);
/// The bound of every wait.
const WAIT: Duration = Duration::from_secs(5);

/// A clock the test moves.
fn clock() -> (Arc<AtomicI64>, Arc<dyn Clock>) {
    let now = Arc::new(AtomicI64::new(NOW));
    let seen = now.clone();
    (now, Arc::new(move || seen.load(Ordering::Relaxed)))
}

fn config(fake: &Fake) -> (GuardConfig, Arc<AtomicI64>) {
    let (now, clock) = clock();
    let mut cfg = GuardConfig::new(fake.url(), fake::API_KEY, AUDIENCE);
    cfg.max_stream_staleness = STALENESS;
    cfg.clock = clock;
    (cfg, now)
}

/// A guard on `fake` with the test clock, once its stream is healthy.
async fn start(cfg: GuardConfig) -> Guard {
    let guard = Guard::start(cfg).await.expect("guard starts");
    assert!(guard.wait_healthy(WAIT).await, "stream healthy");
    guard
}

async fn healthy_guard(fake: &Fake) -> (Guard, Arc<AtomicI64>) {
    let (cfg, now) = config(fake);
    (start(cfg).await, now)
}

fn claims(sid: &str, jti: &str) -> Value {
    json!({
        "iss": ISSUER, "sub": "prn_alice", "aud": AUDIENCE,
        "exp": NOW + 300, "iat": NOW, "nbf": NOW,
        "jti": jti, "client_id": "cli_test", "scope": "orders:read orders:write", "sid": sid,
    })
}

/// `claims` with some members replaced (`null` removes one).
fn with(mut claims: Value, changes: Value) -> Value {
    let (Some(c), Some(changes)) = (claims.as_object_mut(), changes.as_object()) else {
        panic!("objects expected");
    };
    for (k, v) in changes {
        if v.is_null() {
            c.remove(k);
        } else {
            c.insert(k.clone(), v.clone());
        }
    }
    claims
}

fn ended(sid: &str, jtis: &[&str]) -> Value {
    json!({"type": "session.ended", "sid": sid, "jtis": jtis, "reason": "completed",
           "at": "2027-01-15T08:00:00Z", "set": "eyJhbGciOiJFZERTQSJ9.e30.c2ln"})
}

fn revoked(sid: &str, jtis: &[&str]) -> Value {
    json!({"type": "credential.revoked", "sid": sid, "jtis": jtis, "reason": "revoked",
           "at": "2027-01-15T08:00:00Z"})
}

/// Polls `f` every 10 ms until it holds or `within` passes.
async fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = tokio::time::Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn valid_token_is_accepted_with_its_claims() {
    let fake = Fake::start().await;
    let (guard, _) = healthy_guard(&fake).await;
    let c = guard
        .verify(&fake.current_key().sign(&claims("ses_1", "crd_1")))
        .expect("accepted");
    assert_eq!(
        (c.sub.as_str(), c.sid.as_str(), c.jti.as_str()),
        ("prn_alice", "ses_1", "crd_1")
    );
    assert_eq!(
        (c.aud.as_str(), c.exp, c.client_id.as_str()),
        (AUDIENCE, NOW + 300, "cli_test")
    );
    assert!(c.has_scope("orders:write"));
    assert!(guard.stream_healthy());
    assert_eq!(guard.last_event_id(), None, "no event yet");
}

fn app(guard: &Guard) -> Router {
    let hello =
        |Extension(c): Extension<Claims>| async move { format!("hello {} (session {})", c.sub, c.sid) };
    Router::new().route("/hello", get(hello)).layer(guard.layer())
}

/// Calls `/hello`; returns the status, the `WWW-Authenticate` header and the body.
async fn call(app: &Router, token: Option<&str>) -> (StatusCode, Option<String>, String) {
    let mut request = Request::get("/hello");
    if let Some(t) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = response.status();
    let challenge = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().expect("ascii").to_owned());
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .expect("body");
    (status, challenge, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn layer_admits_valid_tokens_and_hands_the_claims_to_the_handler() {
    let fake = Fake::start().await;
    let (guard, _) = healthy_guard(&fake).await;
    let app = app(&guard);
    let key = fake.current_key();

    let (status, _, body) = call(&app, Some(&key.sign(&claims("ses_1", "crd_1")))).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "hello prn_alice (session ses_1)")
    );

    let (status, challenge, _) = call(&app, None).await;
    assert_eq!(
        (status, challenge.as_deref()),
        (StatusCode::UNAUTHORIZED, Some("Bearer"))
    );

    let (status, challenge, body) = call(&app, Some("not.a.token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        challenge
            .expect("challenge")
            .starts_with(r#"Bearer error="invalid_token""#)
    );
    assert!(body.is_empty(), "the handler did not run");

    let expired = key.sign(&with(claims("ses_1", "crd_1"), json!({"exp": NOW - 60})));
    let (status, challenge, _) = call(&app, Some(&expired)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.expect("challenge").contains("expired"));
}

#[tokio::test]
async fn tokens_that_fail_a_claim_check_are_refused() {
    let fake = Fake::start().await;
    let (mut cfg, now) = config(&fake);
    cfg.issuer = Some(ISSUER.to_owned());
    let guard = start(cfg).await;
    let key = fake.current_key();
    let check = |changes: Value| guard.verify(&key.sign(&with(claims("ses_1", "crd_1"), changes)));

    assert_eq!(check(json!({"exp": NOW - 5})), Err(Refusal::Expired));
    assert!(check(json!({"exp": NOW - 4})).is_ok(), "within the 5 s leeway");
    assert_eq!(check(json!({"nbf": NOW + 6})), Err(Refusal::NotYetValid));
    assert!(check(json!({"nbf": NOW + 5})).is_ok(), "within the 5 s leeway");
    assert_eq!(check(json!({"aud": "billing"})), Err(Refusal::WrongAudience));
    assert_eq!(
        check(json!({"aud": [AUDIENCE]})),
        Err(Refusal::Malformed),
        "aud is a string"
    );
    assert_eq!(
        check(json!({"iss": "https://evil.test"})),
        Err(Refusal::WrongIssuer)
    );
    assert_eq!(check(json!({"sid": null})), Err(Refusal::Malformed));
    assert_eq!(check(json!({"exp": "soon"})), Err(Refusal::Malformed));

    // Time moves on the injected clock only.
    let token = key.sign(&claims("ses_1", "crd_1"));
    now.store(NOW + 304, Ordering::Relaxed);
    assert!(guard.verify(&token).is_ok());
    now.store(NOW + 305, Ordering::Relaxed);
    assert_eq!(guard.verify(&token), Err(Refusal::Expired));
}

#[tokio::test]
async fn forged_and_malformed_tokens_are_refused() {
    let fake = Fake::start().await;
    let (guard, _) = healthy_guard(&fake).await;
    let key = fake.current_key();
    let good = key.sign(&claims("ses_1", "crd_1"));
    let [h, p, s]: [&str; 3] = good
        .split('.')
        .collect::<Vec<_>>()
        .try_into()
        .expect("three parts");
    let b64 = |v: &Value| B64.encode(v.to_string());

    // The signature covers the claims.
    let escalated = b64(&with(claims("ses_1", "crd_1"), json!({"sub": "prn_root"})));
    assert_eq!(
        guard.verify(&format!("{h}.{escalated}.{s}")),
        Err(Refusal::BadSignature)
    );
    // Another key claiming the published kid.
    let impostor = Key::generate(&key.kid);
    assert_eq!(
        guard.verify(&impostor.sign(&claims("ses_1", "crd_1"))),
        Err(Refusal::BadSignature)
    );
    // `alg: none`, with and without a signature.
    let none = b64(&json!({"alg": "none", "typ": "at+jwt", "kid": key.kid}));
    assert_eq!(guard.verify(&format!("{none}.{p}.")), Err(Refusal::Malformed));
    assert_eq!(guard.verify(&format!("{none}.{p}.{s}")), Err(Refusal::Malformed));
    // HS256 with the public key as the HMAC secret, as raw bytes and as the JWK's `x`.
    for secret in [key.public.clone(), B64.encode(&key.public).into_bytes()] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.kid.clone());
        header.typ = Some("at+jwt".into());
        let forged = jsonwebtoken::encode(
            &header,
            &claims("ses_1", "crd_1"),
            &EncodingKey::from_secret(&secret),
        )
        .expect("signs");
        assert_eq!(guard.verify(&forged), Err(Refusal::BadSignature));
    }
    // Other tokens stint signs are not access tokens.
    for typ in [Some("JWT"), Some("secevent+jwt"), None] {
        let token = key.sign_header(typ, Some(&key.kid), &claims("ses_1", "crd_1"));
        assert_eq!(guard.verify(&token), Err(Refusal::WrongType), "typ {typ:?}");
    }
    assert!(
        guard
            .verify(&key.sign_header(
                Some("application/at+jwt"),
                Some(&key.kid),
                &claims("ses_1", "crd_1")
            ))
            .is_ok()
    );
    // No kid, an unknown kid.
    let no_kid = key.sign_header(Some("at+jwt"), None, &claims("ses_1", "crd_1"));
    assert_eq!(guard.verify(&no_kid), Err(Refusal::UnknownKey));
    let other_kid = key.sign_header(Some("at+jwt"), Some("k-unknown"), &claims("ses_1", "crd_1"));
    assert_eq!(guard.verify(&other_kid), Err(Refusal::UnknownKey));
    // Garbage.
    let (huge, two_parts) = (format!("{h}.{}.{s}", "A".repeat(20_000)), format!("{h}.{p}"));
    for garbage in [
        "",
        "garbage",
        "a.b",
        "a.b.c",
        "...",
        "\u{0}.\u{0}.\u{0}",
        &*huge,
        &*two_parts,
    ] {
        assert_eq!(guard.verify(garbage), Err(Refusal::Malformed), "{garbage:.40}");
    }
    assert!(guard.verify(&good).is_ok(), "the original still verifies");
}

#[tokio::test]
async fn unknown_kid_refreshes_the_key_set_and_the_rotated_key_is_accepted() {
    let fake = Fake::start().await;
    let (guard, _) = healthy_guard(&fake).await;
    assert_eq!(fake.jwks_hits(), 1);
    let rotated = fake.rotate("k2");
    let token = rotated.sign(&claims("ses_1", "crd_1"));

    let started = Instant::now();
    assert_eq!(
        guard.verify(&token),
        Err(Refusal::UnknownKey),
        "verify never waits"
    );
    assert!(
        eventually(WAIT, || guard.verify(&token).is_ok()).await,
        "accepted after the refresh"
    );
    eprintln!("rotated key accepted after {:?}", started.elapsed());
    assert_eq!(fake.jwks_hits(), 2);
    // The old key is still published during the overlap.
    assert!(
        guard
            .verify(&fake.key("k1").sign(&claims("ses_1", "crd_1")))
            .is_ok()
    );
}

#[tokio::test]
async fn layer_waits_for_the_key_set_so_the_first_rotated_token_gets_in() {
    let fake = Fake::start().await;
    let (guard, _) = healthy_guard(&fake).await;
    let rotated = fake.rotate("k2");
    let (status, _, _) = call(&app(&guard), Some(&rotated.sign(&claims("ses_1", "crd_1")))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fake.jwks_hits(), 2);
}

#[tokio::test]
async fn made_up_key_ids_cannot_flood_stint_with_key_set_requests() {
    let fake = Fake::start().await;
    let (guard, _) = healthy_guard(&fake).await;
    let key = fake.current_key();
    for i in 0..50 {
        let kid = format!("made-up-{}", i % 5);
        let token = key.sign_header(Some("at+jwt"), Some(&kid), &claims("ses_1", "crd_1"));
        assert_eq!(guard.verify(&token), Err(Refusal::UnknownKey));
    }
    let app = app(&guard);
    let token = key.sign_header(Some("at+jwt"), Some("made-up-0"), &claims("ses_1", "crd_1"));
    assert_eq!(call(&app, Some(&token)).await.0, StatusCode::UNAUTHORIZED);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.jwks_hits(), 2, "the start, then one refresh");
}

#[tokio::test]
async fn ended_session_is_refused_within_a_second() {
    let fake = Fake::start().await;
    let (guard, _) = healthy_guard(&fake).await;
    let key = fake.current_key();
    let (t1, t1b, t2) = (
        key.sign(&claims("ses_1", "crd_1")),
        key.sign(&claims("ses_1", "crd_1b")),
        key.sign(&claims("ses_2", "crd_2")),
    );
    assert!(guard.verify(&t1).is_ok());

    let started = Instant::now();
    let id = fake.publish("session.ended", &ended("ses_1", &["crd_1"]));
    assert!(
        eventually(Duration::from_secs(1), || guard.verify(&t1)
            == Err(Refusal::Revoked))
        .await
    );
    eprintln!("ended session refused after {:?}", started.elapsed());
    assert_eq!(
        guard.verify(&t1b),
        Err(Refusal::Revoked),
        "every token of the session"
    );
    assert!(guard.verify(&t2).is_ok(), "other sessions live on");
    assert!(eventually(WAIT, || guard.last_event_id() == Some(id)).await);
    let (status, challenge, _) = call(&app(&guard), Some(&t1)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.expect("challenge").contains("revoked"));
}

#[tokio::test]
async fn revoked_credential_is_refused_while_its_session_lives_on() {
    let fake = Fake::start().await;
    let (guard, _) = healthy_guard(&fake).await;
    let key = fake.current_key();
    let (t1, t2) = (
        key.sign(&claims("ses_1", "crd_1")),
        key.sign(&claims("ses_1", "crd_2")),
    );
    fake.publish("credential.revoked", &revoked("ses_1", &["crd_1"]));
    assert!(
        eventually(Duration::from_secs(1), || guard.verify(&t1)
            == Err(Refusal::Revoked))
        .await
    );
    assert!(guard.verify(&t2).is_ok());
}

#[tokio::test]
async fn other_event_types_are_ignored_but_advance_the_resume_point() {
    let fake = Fake::start().await;
    let (guard, _) = healthy_guard(&fake).await;
    let token = fake.current_key().sign(&claims("ses_1", "crd_1"));
    fake.publish(
        "session.extended",
        &json!({"type": "session.extended", "sid": "ses_1"}),
    );
    fake.publish("session.ended", &json!("not an object"));
    let id = fake.publish(
        "credential.issued",
        &json!({"type": "credential.issued", "sid": "ses_1"}),
    );
    assert!(eventually(WAIT, || guard.last_event_id() == Some(id)).await);
    assert!(guard.verify(&token).is_ok());
}

#[tokio::test]
async fn dropped_stream_reconnects_with_last_event_id_and_applies_missed_events() {
    let fake = Fake::start().await;
    let (guard, _) = healthy_guard(&fake).await;
    let token = fake.current_key().sign(&claims("ses_1", "crd_1"));
    let first = fake.publish("credential.revoked", &revoked("ses_9", &["crd_9"]));
    assert!(eventually(WAIT, || guard.last_event_id() == Some(first)).await);

    let started = Instant::now();
    let missed = fake.drop_streams_then_publish("session.ended", &ended("ses_1", &["crd_1"]));
    assert!(eventually(WAIT, || guard.verify(&token) == Err(Refusal::Revoked)).await);
    eprintln!("missed event applied {:?} after the drop", started.elapsed());
    assert_eq!(guard.last_event_id(), Some(missed));
    let resumes: Vec<_> = fake.attempts().into_iter().map(|(_, id)| id).collect();
    assert_eq!(resumes, [Some("0".to_owned()), Some(first.to_string())]);
}

#[tokio::test]
async fn sessions_ended_before_the_guard_started_are_replayed_before_it_trusts_the_stream() {
    // stint replays missed events and then greets: no moment of trust without them.
    let fake = Fake::start_replay_first().await;
    fake.publish("session.ended", &ended("ses_1", &["crd_1"]));
    let (guard, _) = healthy_guard(&fake).await;
    assert_eq!(
        guard.verify(&fake.current_key().sign(&claims("ses_1", "crd_1"))),
        Err(Refusal::Revoked)
    );

    // Greeting first, as the contract describes: the replay follows at once.
    let fake = Fake::start().await;
    fake.publish("session.ended", &ended("ses_1", &["crd_1"]));
    let (guard, _) = healthy_guard(&fake).await;
    let token = fake.current_key().sign(&claims("ses_1", "crd_1"));
    assert!(
        eventually(Duration::from_secs(1), || guard.verify(&token)
            == Err(Refusal::Revoked))
        .await
    );
}

#[tokio::test]
async fn replay_from_none_starts_at_the_live_edge() {
    let fake = Fake::start().await;
    fake.publish("session.ended", &ended("ses_1", &["crd_1"]));
    let (mut cfg, _) = config(&fake);
    cfg.replay_from = None;
    let guard = start(cfg).await;
    assert!(
        guard
            .verify(&fake.current_key().sign(&claims("ses_1", "crd_1")))
            .is_ok()
    );
    assert_eq!(fake.attempts(), [(200, None)]);
}

#[tokio::test]
async fn silent_stream_fails_closed_and_recovers_without_forgetting_revocations() {
    let fake = Fake::start_replay_first().await;
    let (guard, _) = healthy_guard(&fake).await;
    let key = fake.current_key();
    let (t1, t2) = (
        key.sign(&claims("ses_1", "crd_1")),
        key.sign(&claims("ses_2", "crd_2")),
    );
    assert!(guard.verify(&t1).is_ok() && guard.verify(&t2).is_ok());

    let started = Instant::now();
    fake.set_silent(true);
    assert!(eventually(WAIT, || guard.verify(&t1) == Err(Refusal::StreamDown)).await);
    let closed_after = started.elapsed();
    eprintln!("failed closed {closed_after:?} after the stream went silent (bound {STALENESS:?})");
    assert!(
        closed_after >= STALENESS - Duration::from_millis(100),
        "{closed_after:?}"
    );
    assert!(!guard.stream_healthy());
    assert_eq!(guard.verify(&t2), Err(Refusal::StreamDown));
    let (status, _, _) = call(&app(&guard), Some(&t1)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    // Ended while we could not hear: replayed on reconnection.
    fake.publish("session.ended", &ended("ses_2", &["crd_2"]));
    let started = Instant::now();
    fake.set_silent(false);
    assert!(eventually(WAIT, || guard.verify(&t1).is_ok()).await);
    eprintln!("trusted again {:?} after the stream resumed", started.elapsed());
    assert_eq!(guard.verify(&t2), Err(Refusal::Revoked));
}

#[tokio::test]
async fn stream_refused_from_the_start_keeps_every_token_out() {
    let fake = Fake::start().await;
    let (mut cfg, _) = config(&fake);
    cfg.api_key = "stk_not_a_resource_server".to_owned().into();
    let guard = Guard::start(cfg)
        .await
        .expect("the key set is public: start succeeds");
    assert!(eventually(WAIT, || fake.attempts().iter().any(|(status, _)| *status == 401)).await);
    let token = fake.current_key().sign(&claims("ses_1", "crd_1"));
    assert!(!guard.wait_healthy(Duration::from_millis(500)).await);
    assert_eq!(guard.verify(&token), Err(Refusal::StreamDown));
}

#[tokio::test]
async fn stream_refusal_after_a_good_start_fails_closed_at_once() {
    let fake = Fake::start().await;
    let (mut cfg, _) = config(&fake);
    cfg.max_stream_staleness = Duration::from_secs(30);
    let guard = start(cfg).await;
    let token = fake.current_key().sign(&claims("ses_1", "crd_1"));
    assert!(guard.verify(&token).is_ok());
    fake.set_api_key("stk_rotated");
    fake.drop_streams();
    // Long before the 30 s staleness bound: the 401 itself closes the guard.
    assert!(
        eventually(Duration::from_secs(2), || guard.verify(&token)
            == Err(Refusal::StreamDown))
        .await
    );
}

#[tokio::test]
async fn dropping_the_last_guard_closes_its_stream() {
    let fake = Fake::start().await;
    let (guard, _) = healthy_guard(&fake).await;
    let clone = guard.clone();
    assert!(eventually(WAIT, || fake.subscribers() == 1).await);
    drop(guard);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(fake.subscribers(), 1, "a clone keeps it open");
    drop(clone);
    assert!(eventually(WAIT, || fake.subscribers() == 0).await);
}

/// The example binary, built by `cargo test` next to this test binary.
fn example_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let path = profile_dir.join("examples").join("resource_server");
    assert!(
        path.exists(),
        "{} missing: run through `cargo test`",
        path.display()
    );
    path
}

#[tokio::test]
async fn example_resource_server_serves_hello_behind_the_guard() {
    let fake = Fake::start().await;
    let mut child = tokio::process::Command::new(example_binary())
        .env("STINT_URL", fake.url())
        .env("STINT_TOKEN", fake::API_KEY)
        .env("AUDIENCE", AUDIENCE)
        .env("RUST_LOG", "warn")
        .env_remove("LISTEN")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("example starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("first line in time")
        .expect("reads")
        .expect("a line");
    let base = first
        .strip_prefix("listening on ")
        .expect("listening line")
        .to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{first}");

    let http = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut r = http.get(format!("{base}{path}"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.timeout(WAIT).send()
    };
    let until = Instant::now() + WAIT;
    while get("/healthz", None).await.expect("healthz").status() != StatusCode::OK {
        assert!(Instant::now() < until, "healthz never became 200");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The example reads the real clock.
    let now = SystemClock.now_unix();
    let token = fake.current_key().sign(&with(
        claims("ses_1", "crd_1"),
        json!({"iat": now, "nbf": now, "exp": now + 300}),
    ));
    let response = get("/hello", Some(&token)).await.expect("hello");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.text().await.expect("body"),
        "hello prn_alice (session ses_1)"
    );
    assert_eq!(
        get("/hello", None).await.expect("hello").status(),
        StatusCode::UNAUTHORIZED
    );

    fake.publish("session.ended", &ended("ses_1", &["crd_1"]));
    let until = Instant::now() + Duration::from_secs(2);
    while get("/hello", Some(&token)).await.expect("hello").status() != StatusCode::UNAUTHORIZED {
        assert!(Instant::now() < until, "the ended session was never refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().await.expect("stops");
}

/// A fake stint: `/.well-known/jwks.json` and `/v1/events/stream` as the contract describes.
mod fake {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex, MutexGuard};
    use std::time::Duration;

    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    use axum::body::Body;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use axum::{Json, Router};
    use jsonwebtoken::jwk::{Jwk, KeyAlgorithm, PublicKeyUse};
    use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
    use serde_json::{Value, json};
    use tokio::sync::{mpsc, watch};
    use tokio::task::JoinHandle;

    /// The resource server's API key the fake accepts.
    pub const API_KEY: &str = "stk_resource_server_test";
    const KEEP_ALIVE: Duration = Duration::from_millis(50);

    /// An Ed25519 signing key and its JWK.
    #[derive(Clone)]
    pub struct Key {
        pub kid: String,
        pub public: Vec<u8>,
        encoding: EncodingKey,
        jwk: Jwk,
    }

    impl Key {
        pub fn generate(kid: &str) -> Key {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("generates");
            let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("parses");
            let public = pair.public_key().as_ref().to_vec();
            let decoding = DecodingKey::from_ed_der(&public);
            let mut jwk = Jwk::from_decoding_key(&decoding, Some(Algorithm::EdDSA)).expect("jwk");
            jwk.common.key_id = Some(kid.to_owned());
            jwk.common.public_key_use = Some(PublicKeyUse::Signature);
            jwk.common.key_algorithm = Some(KeyAlgorithm::EdDSA);
            Key {
                kid: kid.to_owned(),
                public,
                encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
                jwk,
            }
        }

        /// An access token as stint signs it.
        pub fn sign(&self, claims: &Value) -> String {
            self.sign_header(Some("at+jwt"), Some(&self.kid), claims)
        }

        pub fn sign_header(&self, typ: Option<&str>, kid: Option<&str>, claims: &Value) -> String {
            let mut header = Header::new(Algorithm::EdDSA);
            header.typ = typ.map(str::to_owned);
            header.kid = kid.map(str::to_owned);
            jsonwebtoken::encode(&header, claims, &self.encoding).expect("signs")
        }
    }

    #[derive(Default)]
    struct Hub {
        last_id: u64,
        log: Vec<(u64, String)>,
        subscribers: Vec<mpsc::UnboundedSender<String>>,
    }

    struct St {
        keys: Mutex<Vec<Key>>,
        api_key: Mutex<String>,
        jwks_hits: AtomicUsize,
        hub: Mutex<Hub>,
        silent: watch::Sender<bool>,
        /// Every stream request: the status answered and its `Last-Event-ID`.
        attempts: Mutex<Vec<(u16, Option<String>)>>,
        replay_first: bool,
    }

    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn frame(id: u64, event: &str, data: &Value) -> String {
        format!("id: {id}\nevent: {event}\ndata: {data}\n\n")
    }

    pub struct Fake {
        addr: SocketAddr,
        st: Arc<St>,
        tasks: Vec<JoinHandle<()>>,
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            self.tasks.iter().for_each(JoinHandle::abort);
        }
    }

    impl Fake {
        /// Greets with `: connected` at once, then replays (the contract's order).
        pub async fn start() -> Fake {
            Self::start_with(false).await
        }

        /// Replays missed events before greeting.
        pub async fn start_replay_first() -> Fake {
            Self::start_with(true).await
        }

        async fn start_with(replay_first: bool) -> Fake {
            let st = Arc::new(St {
                keys: Mutex::new(vec![Key::generate("k1")]),
                api_key: Mutex::new(API_KEY.to_owned()),
                jwks_hits: AtomicUsize::new(0),
                hub: Mutex::new(Hub::default()),
                silent: watch::Sender::new(false),
                attempts: Mutex::new(Vec::new()),
                replay_first,
            });
            let app = Router::new()
                .route("/.well-known/jwks.json", get(jwks))
                .route("/v1/events/stream", get(stream))
                .with_state(st.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
            let addr = listener.local_addr().expect("addr");
            let server = tokio::spawn(async move {
                axum::serve(listener, app).await.expect("serves");
            });
            let ticker = st.clone();
            let keep_alive = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(KEEP_ALIVE).await;
                    if !*ticker.silent.borrow() {
                        let mut hub = lock(&ticker.hub);
                        hub.subscribers
                            .retain(|tx| tx.send(": keep-alive\n\n".to_owned()).is_ok());
                    }
                }
            });
            Fake {
                addr,
                st,
                tasks: vec![server, keep_alive],
            }
        }

        pub fn url(&self) -> String {
            format!("http://{}", self.addr)
        }

        pub fn current_key(&self) -> Key {
            lock(&self.st.keys).last().expect("a key").clone()
        }

        pub fn key(&self, kid: &str) -> Key {
            lock(&self.st.keys)
                .iter()
                .find(|k| k.kid == kid)
                .expect("published")
                .clone()
        }

        /// Publishes a new current key next to the old ones.
        pub fn rotate(&self, kid: &str) -> Key {
            let key = Key::generate(kid);
            lock(&self.st.keys).push(key.clone());
            key
        }

        pub fn jwks_hits(&self) -> usize {
            self.st.jwks_hits.load(Ordering::SeqCst)
        }

        pub fn attempts(&self) -> Vec<(u16, Option<String>)> {
            lock(&self.st.attempts).clone()
        }

        pub fn subscribers(&self) -> usize {
            lock(&self.st.hub).subscribers.len()
        }

        pub fn set_api_key(&self, key: &str) {
            *lock(&self.st.api_key) = key.to_owned();
        }

        /// Sends an event to every connected stream (none while silent); returns its id.
        pub fn publish(&self, event: &str, data: &Value) -> u64 {
            let mut hub = lock(&self.st.hub);
            hub.last_id += 1;
            let id = hub.last_id;
            let f = frame(id, event, data);
            hub.log.push((id, f.clone()));
            if !*self.st.silent.borrow() {
                hub.subscribers.retain(|tx| tx.send(f.clone()).is_ok());
            }
            id
        }

        /// Ends every open stream.
        pub fn drop_streams(&self) {
            lock(&self.st.hub).subscribers.clear();
        }

        /// Ends every open stream, then records an event nobody receives live.
        pub fn drop_streams_then_publish(&self, event: &str, data: &Value) -> u64 {
            let mut hub = lock(&self.st.hub);
            hub.subscribers.clear();
            hub.last_id += 1;
            let id = hub.last_id;
            hub.log.push((id, frame(id, event, data)));
            id
        }

        /// Silent: no keep-alives, no events, new streams get no byte. Back to speaking: open streams
        /// are ended (they missed events) and waiting ones are greeted.
        pub fn set_silent(&self, silent: bool) {
            if !silent {
                self.drop_streams();
            }
            self.st.silent.send_replace(silent);
        }
    }

    async fn jwks(State(st): State<Arc<St>>) -> Json<Value> {
        st.jwks_hits.fetch_add(1, Ordering::SeqCst);
        let keys: Vec<Value> = lock(&st.keys)
            .iter()
            .map(|k| serde_json::to_value(&k.jwk).expect("json"))
            .collect();
        Json(json!({ "keys": keys }))
    }

    async fn stream(State(st): State<Arc<St>>, headers: HeaderMap) -> Response {
        let last = headers
            .get("last-event-id")
            .map(|v| v.to_str().expect("ascii").to_owned());
        let expected = format!("Bearer {}", lock(&st.api_key));
        if headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(&expected) {
            lock(&st.attempts).push((401, last));
            return StatusCode::UNAUTHORIZED.into_response();
        }
        lock(&st.attempts).push((200, last.clone()));
        let after: Option<u64> = last.map(|l| l.parse().expect("numeric Last-Event-ID"));
        let (tx, rx) = mpsc::unbounded_channel::<String>();
        let greeter = st.clone();
        tokio::spawn(async move {
            let mut silent = greeter.silent.subscribe();
            if silent.wait_for(|s| !*s).await.is_err() {
                return;
            }
            let mut hub = lock(&greeter.hub);
            let replay: String = match after {
                Some(after) => hub
                    .log
                    .iter()
                    .filter(|(id, _)| *id > after)
                    .map(|(_, f)| f.as_str())
                    .collect(),
                None => String::new(),
            };
            let greeting = ": connected\n\n".to_owned();
            let sends = if greeter.replay_first {
                [replay, greeting]
            } else {
                [greeting, replay]
            };
            for s in sends.into_iter().filter(|s| !s.is_empty()) {
                let _ = tx.send(s);
            }
            hub.subscribers.push(tx);
        });
        let body = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|s| (Ok::<_, Infallible>(s), rx))
        });
        (
            [
                (header::CONTENT_TYPE, "text/event-stream"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            Body::from_stream(body),
        )
            .into_response()
    }
}
