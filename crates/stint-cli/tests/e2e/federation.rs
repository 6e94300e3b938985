//! RFC 8693 token exchange of CI OIDC ID tokens, against a fake issuer serving its JWKS on loopback.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Api, Server};
use crate::oidc::{Alg, Issuer, hs256_with_public_key, tamper_signature, unsigned_token};

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";

struct Ci {
    server: Server,
    admin: Api,
    rs: Api,
    issuer: Issuer,
}

/// A server with a `deploy-api` target, a `ci-deployer` principal and a trust for the fake issuer:
/// tokens from acme/deploy on main may get `deploy-api`, bound to `pipeline:<run_id>`.
async fn ci() -> Ci {
    let issuer = Issuer::start().await;
    let server = Server::start().await;
    let admin = server.admin();
    admin.principal("ci-deployer", "ci_job", &["deployers"]).await;
    let (_, rs) = admin.principal("api-gw", "resource_server", &[]).await;
    for name in ["deploy-api", "billing-api"] {
        let (st, v) = admin
            .post(
                "/v1/targets",
                json!({"name": name, "kind": "jwt", "max_ttl_s": 3600, "requester_groups": ["deployers"]}),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
    }
    let (st, v) = admin
        .post(
            "/v1/trusts",
            json!({"name": "github-actions", "issuer": issuer.url, "jwks_url": issuer.jwks_url(),
                   "audience": "https://stint.example", "rules": [{
                       "match": {"repository": "acme/deploy", "ref": "refs/heads/main"},
                       "principal": "ci-deployer", "target": "deploy-api",
                       "binding": {"kind": "pipeline", "ref_claim": "run_id"}, "ttl_s": 900}]}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    Ci {
        rs: server.as_key(&rs),
        admin,
        server,
        issuer,
    }
}

async fn exchange(server: &Server, token: &str, audience: &str) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/oauth2/token", server.addr))
        .form(&[
            ("grant_type", EXCHANGE),
            ("subject_token", token),
            ("subject_token_type", ID_TOKEN),
            ("audience", audience),
        ])
        .send()
        .await
        .expect("token endpoint");
    let st = resp.status();
    (st, resp.json().await.unwrap_or(Value::Null))
}

async fn sessions(admin: &Api) -> Vec<Value> {
    let (_, v) = admin.get("/v1/sessions").await;
    v["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_ci_run_exchanges_its_id_token_for_one_run_bound_session_reused_by_later_exchanges() {
    let c = ci().await;
    let claims = c.issuer.github_claims("https://stint.example", "9001");
    let (st, a) = exchange(&c.server, &c.issuer.mint(Alg::Rs256, &claims), "deploy-api").await;
    assert_eq!(st, StatusCode::OK, "{a}");
    assert_eq!(
        a["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(a["token_type"], "Bearer");
    let expires_in = a["expires_in"].as_i64().expect("expires_in");
    assert!(
        expires_in > 0 && expires_in <= 300,
        "capped by the ID token's exp: {a}"
    );
    let i = c.rs.introspect(a["access_token"].as_str().expect("token")).await;
    assert_eq!(i["active"], true, "{i}");
    let sid = i["sid"].as_str().expect("sid").to_owned();
    let (_, s) = c.admin.get(&format!("/v1/sessions/{sid}")).await;
    assert_eq!(s["binding"], json!({"kind": "pipeline", "ref": "9001"}), "{s}");
    assert_eq!(s["state"], "active");
    let deadline = crate::harness::unix(&s["expires_at"]);
    assert!(
        deadline <= claims["exp"].as_i64().expect("exp"),
        "the session never outlives the ID token: {s}"
    );

    // A later step of the same run (new ID token, other algorithms) gets the same session.
    for alg in [Alg::Es256, Alg::EdDsa] {
        let claims = c.issuer.github_claims("https://stint.example", "9001");
        let (st, b) = exchange(&c.server, &c.issuer.mint(alg, &claims), "deploy-api").await;
        assert_eq!(st, StatusCode::OK, "{alg:?}: {b}");
        assert_eq!(b["session"], sid.as_str(), "one session per run");
    }
    // Another run gets its own session.
    let claims = c.issuer.github_claims("https://stint.example", "9002");
    let (_, d) = exchange(&c.server, &c.issuer.mint(Alg::Rs256, &claims), "deploy-api").await;
    assert_ne!(d["session"], sid.as_str());
    assert_eq!(sessions(&c.admin).await.len(), 2);
    // The evidence records each exchange.
    let (_, ev) = c.admin.get(&format!("/v1/sessions/{sid}/evidence")).await;
    let n = ev["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["action"] == "token.exchanged")
        .count();
    assert_eq!(n, 3);

    // The run completes: GitHub's webhook ends its session, its token dies at once, and the run's
    // ID tokens cannot get a new one.
    let secret = "github-webhook-secret-0123456789";
    let (st, _) = c
        .admin
        .post(
            "/v1/hook-sources",
            json!({"name": "gha", "kind": "github", "secret": secret}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let body =
        serde_json::to_vec(&json!({"action": "completed", "workflow_run": {"id": 9001}})).expect("json");
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/hooks/gha", c.server.addr))
        .header(
            "x-hub-signature-256",
            crate::harness::hmac_signature(secret, &body),
        )
        .header("x-github-event", "workflow_run")
        .header("x-github-delivery", "delivery-1")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("hook");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.expect("json")["ended"], json!([sid]));
    let token = a["access_token"].as_str().expect("token");
    assert_eq!(c.rs.introspect(token).await, json!({"active": false}));
    let claims = c.issuer.github_claims("https://stint.example", "9001");
    let (st, v) = exchange(&c.server, &c.issuer.mint(Alg::Rs256, &claims), "deploy-api").await;
    assert_eq!(
        (st, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request")),
        "{v}"
    );
}

#[tokio::test]
async fn bad_id_tokens_are_refused_with_oauth_errors_and_create_nothing() {
    let c = ci().await;
    let good = c.issuer.github_claims("https://stint.example", "77");
    let other = Issuer::start().await;
    let now = good["iat"].as_i64().expect("iat");
    let with = |patch: Value| {
        let mut v = good.clone();
        for (k, x) in patch.as_object().expect("object") {
            v[k] = x.clone();
        }
        v
    };
    let cases: Vec<(&str, String, &str, &str)> = vec![
        ("not a token", "garbage".into(), "deploy-api", "invalid_request"),
        (
            "untrusted issuer",
            other.mint(Alg::Rs256, &with(json!({"iss": other.url}))),
            "deploy-api",
            "invalid_request",
        ),
        (
            "issuer claimed but signed by another",
            other.mint(Alg::Rs256, &good),
            "deploy-api",
            "invalid_request",
        ),
        (
            "wrong audience",
            c.issuer.mint(Alg::Rs256, &with(json!({"aud": "someone-else"}))),
            "deploy-api",
            "invalid_request",
        ),
        ("alg none", unsigned_token(&good), "deploy-api", "invalid_request"),
        (
            "HS256 keyed with the public key",
            hs256_with_public_key(&c.issuer, &good),
            "deploy-api",
            "invalid_request",
        ),
        (
            "expired",
            c.issuer.mint(
                Alg::Rs256,
                &with(json!({"exp": now - 120, "iat": now - 600, "nbf": now - 600})),
            ),
            "deploy-api",
            "invalid_request",
        ),
        (
            "not yet valid",
            c.issuer.mint(
                Alg::Rs256,
                &with(json!({"nbf": now + 600, "iat": now + 600, "exp": now + 900})),
            ),
            "deploy-api",
            "invalid_request",
        ),
        (
            "bad signature",
            tamper_signature(&c.issuer.mint(Alg::Es256, &good)),
            "deploy-api",
            "invalid_request",
        ),
        (
            "unknown kid",
            c.issuer.mint_with_kid(Alg::EdDsa, "no-such-kid", &good),
            "deploy-api",
            "invalid_request",
        ),
        (
            "no rule matches",
            c.issuer
                .mint(Alg::Rs256, &with(json!({"repository": "evil/fork"}))),
            "deploy-api",
            "invalid_request",
        ),
        (
            "other branch",
            c.issuer.mint(Alg::Rs256, &with(json!({"ref": "refs/heads/dev"}))),
            "deploy-api",
            "invalid_request",
        ),
        (
            "target not granted",
            c.issuer.mint(Alg::Rs256, &good),
            "billing-api",
            "invalid_target",
        ),
        (
            "no jti",
            c.issuer.mint(Alg::Rs256, &with(json!({"jti": null}))),
            "deploy-api",
            "invalid_request",
        ),
    ];
    for (what, token, audience, error) in &cases {
        let (st, v) = exchange(&c.server, token, audience).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{what}: {v}");
        assert_eq!(v["error"], *error, "{what}: {v}");
        assert!(v["error_description"].is_string(), "{what}: {v}");
        assert!(
            !v.to_string().contains(token.as_str()),
            "{what}: the token is not echoed"
        );
    }
    assert!(sessions(&c.admin).await.is_empty(), "nothing was created");

    // A replayed ID token is refused even though it is valid.
    let token = c.issuer.mint(Alg::Rs256, &good);
    let (st, _) = exchange(&c.server, &token, "deploy-api").await;
    assert_eq!(st, StatusCode::OK);
    let (st, v) = exchange(&c.server, &token, "deploy-api").await;
    assert_eq!(
        (st, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request")),
        "{v}"
    );
    assert!(
        v["error_description"]
            .as_str()
            .unwrap_or_default()
            .contains("already"),
        "{v}"
    );

    // Wrong grant type and missing fields.
    let resp = reqwest::Client::new()
        .post(format!("{}/oauth2/token", c.server.addr))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("token endpoint");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        resp.json::<Value>().await.expect("json")["error"],
        "unsupported_grant_type"
    );
    let resp = reqwest::Client::new()
        .post(format!("{}/oauth2/token", c.server.addr))
        .form(&[("grant_type", EXCHANGE)])
        .send()
        .await
        .expect("token endpoint");
    assert_eq!(
        resp.json::<Value>().await.expect("json")["error"],
        "invalid_request"
    );
    assert_eq!(sessions(&c.admin).await.len(), 1);
}

#[tokio::test]
async fn key_rotation_at_the_issuer_is_picked_up() {
    let c = ci().await;
    let claims = c.issuer.github_claims("https://stint.example", "5");
    let (st, _) = exchange(&c.server, &c.issuer.mint(Alg::Rs256, &claims), "deploy-api").await;
    assert_eq!(st, StatusCode::OK);
    let fetched = c.issuer.jwks_fetches();
    // Cached: the next exchange does not fetch again.
    let claims = c.issuer.github_claims("https://stint.example", "5");
    exchange(&c.server, &c.issuer.mint(Alg::Rs256, &claims), "deploy-api").await;
    assert_eq!(c.issuer.jwks_fetches(), fetched);
    c.issuer.rotate(Alg::Rs256);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let claims = c.issuer.github_claims("https://stint.example", "5");
    let (st, v) = exchange(&c.server, &c.issuer.mint(Alg::Rs256, &claims), "deploy-api").await;
    assert_eq!(st, StatusCode::OK, "a new kid triggers a refresh: {v}");
    assert_eq!(c.issuer.jwks_fetches(), fetched + 1);
}

#[tokio::test]
async fn trusts_refuse_bad_configuration() {
    let c = ci().await;
    let base = json!({"name": "t2", "issuer": "https://issuer.example", "jwks_url": "https://issuer.example/jwks",
        "audience": "a", "rules": [{"match": {}, "principal": "ci-deployer", "target": "deploy-api",
        "binding": {"kind": "pipeline", "ref_claim": "run_id"}}]});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    for (body, needle) in [
        (with("algorithms", json!(["HS256"])), "HS256"),
        (with("algorithms", json!(["none"])), "none"),
        (with("issuer", json!("ftp://x")), "issuer"),
        (with("jwks", json!({"keys": []})), "exactly one"),
        (with("rules", json!([])), "rules"),
        (
            with(
                "rules",
                json!([{"match": {}, "principal": "nobody", "target": "deploy-api", "binding": {"kind": "pipeline", "ref_claim": "run_id"}}]),
            ),
            "nobody",
        ),
        (
            with(
                "rules",
                json!([{"match": {}, "principal": "ci-deployer", "target": "nope", "binding": {"kind": "pipeline", "ref_claim": "run_id"}}]),
            ),
            "nope",
        ),
        (with("bogus", json!(1)), "unknown field"),
    ] {
        let (st, v) = c.admin.post("/v1/trusts", body).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{needle}: {v}");
        assert!(v.to_string().contains(needle), "{needle}: {v}");
    }
    let (st, _) = c.rs.post("/v1/trusts", base.clone()).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, v) = c.admin.get("/v1/trusts").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["items"].as_array().map(Vec::len), Some(1), "{v}");
}

#[tokio::test]
async fn trusts_can_be_declared_in_the_configuration_file_with_keys_from_a_file() {
    let issuer = Issuer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, issuer.jwks_json().to_string()).expect("write jwks");
    let toml = format!(
        r#"
[[trusts]]
name = "from-config"
issuer = "{iss}"
jwks_file = "{jwks}"
audience = "https://stint.example"
[[trusts.rules]]
principal = "ci-deployer"
target = "deploy-api"
ttl_s = 600
[trusts.rules.match]
repository = "acme/deploy"
[trusts.rules.binding]
kind = "pipeline"
ref_claim = "run_id"
"#,
        iss = issuer.url,
        jwks = jwks.display()
    );
    let server = Server::start_with_config(&toml).await;
    let admin = server.admin();
    // The principal and target may come after the trust.
    admin.principal("ci-deployer", "ci_job", &["deployers"]).await;
    admin
        .post("/v1/targets", json!({"name": "deploy-api", "kind": "jwt", "max_ttl_s": 3600, "requester_groups": ["deployers"]}))
        .await;
    let (_, trusts) = admin.get("/v1/trusts").await;
    assert_eq!(trusts["items"][0]["name"], "from-config", "{trusts}");
    let claims = issuer.github_claims("https://stint.example", "12");
    let (st, v) = exchange(&server, &issuer.mint(Alg::EdDsa, &claims), "deploy-api").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(issuer.jwks_fetches(), 0, "keys came from the file");
}
