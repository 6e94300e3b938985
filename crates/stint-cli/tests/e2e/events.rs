//! Event-bound endings (signed hooks from ticketing and CI) and the revocation stream (SSE).

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Api, Server, now_unix};

const SECRET: &str = "a-shared-secret-of-32-characters";

fn sign(body: &[u8]) -> String {
    crate::harness::hmac_signature(SECRET, body)
}

async fn post_hook(
    server: &Server,
    source: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/v1/hooks/{source}", server.addr))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.expect("hook");
    let st = resp.status();
    (st, resp.json().await.unwrap_or(Value::Null))
}

async fn generic(server: &Server, event_id: &str, body: &Value) -> (StatusCode, Value) {
    let raw = serde_json::to_vec(body).expect("json");
    post_hook(
        server,
        "tickets",
        &[
            ("x-stint-signature", sign(&raw)),
            ("x-stint-timestamp", now_unix().to_string()),
            ("x-stint-event-id", event_id.to_owned()),
        ],
        &raw,
    )
    .await
}

struct Vendor {
    server: Server,
    admin: Api,
    vendor: Api,
    rs: Api,
}

async fn vendor() -> Vendor {
    let server = Server::start().await;
    let admin = server.admin();
    let (_, v) = admin.principal("acme-vendor", "vendor", &["vendors"]).await;
    let (_, rs) = admin.principal("plc-proxy", "resource_server", &[]).await;
    let (st, t) = admin
        .post(
            "/v1/targets",
            json!({"name": "plc-gw", "kind": "jwt", "max_ttl_s": 14400, "requester_groups": ["vendors"],
                   "require_binding": "ticket"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{t}");
    for (name, kind, extra) in [
        ("tickets", "generic", json!({})),
        ("gha", "github", json!({})),
        (
            "jira",
            "ticket",
            json!({"mapping": {"ref_pointer": "/issue/key", "status_pointer": "/issue/fields/status/name",
                               "closing_statuses": ["Done", "Closed"]}}),
        ),
    ] {
        let mut body = json!({"name": name, "kind": kind, "secret": SECRET});
        body.as_object_mut()
            .expect("o")
            .extend(extra.as_object().expect("o").clone());
        let (st, v) = admin.post("/v1/hook-sources", body).await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        assert!(!v.to_string().contains(SECRET), "the secret is never shown");
    }
    Vendor {
        vendor: server.as_key(&v),
        rs: server.as_key(&rs),
        admin,
        server,
    }
}

async fn ticket_session(v: &Vendor, ticket: &str) -> (String, String) {
    let (st, s) = v
        .vendor
        .post(
            "/v1/sessions",
            json!({"target": "plc-gw", "reason": "firmware", "ttl_s": 3600, "binding": {"kind": "ticket", "ref": ticket}}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{s}");
    let sid = s["id"].as_str().expect("id").to_owned();
    let (st, c) = v
        .vendor
        .post(&format!("/v1/sessions/{sid}/credentials"), json!({}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{c}");
    (sid, c["access_token"].as_str().expect("token").to_owned())
}

#[tokio::test]
async fn a_closed_ticket_ends_its_sessions_and_forged_or_replayed_events_change_nothing() {
    let v = vendor().await;
    // The target requires a ticket binding.
    let (st, e) = v
        .vendor
        .post(
            "/v1/sessions",
            json!({"target": "plc-gw", "reason": "x", "ttl_s": 60}),
        )
        .await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("binding_required")),
        "{e}"
    );
    let (sid, token) = ticket_session(&v, "OT-4711").await;
    let (other, other_token) = ticket_session(&v, "OT-4712").await;
    let close = json!({"binding_kind": "ticket", "ref": "OT-4711", "status": "closed"});

    // Forged signature, stale timestamp, missing event id: 401/422 and nothing changes.
    let raw = serde_json::to_vec(&close).expect("json");
    let forged = post_hook(
        &v.server,
        "tickets",
        &[
            ("x-stint-signature", "sha256=".to_owned() + &"0".repeat(64)),
            ("x-stint-timestamp", now_unix().to_string()),
            ("x-stint-event-id", "e-1".into()),
        ],
        &raw,
    )
    .await;
    assert_eq!(
        (forged.0, forged.1["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_signature"))
    );
    let stale = post_hook(
        &v.server,
        "tickets",
        &[
            ("x-stint-signature", sign(&raw)),
            ("x-stint-timestamp", (now_unix() - 3600).to_string()),
            ("x-stint-event-id", "e-1".into()),
        ],
        &raw,
    )
    .await;
    assert_eq!(
        (stale.0, stale.1["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("stale_event"))
    );
    let no_id = post_hook(
        &v.server,
        "tickets",
        &[
            ("x-stint-signature", sign(&raw)),
            ("x-stint-timestamp", now_unix().to_string()),
        ],
        &raw,
    )
    .await;
    assert_eq!(no_id.0, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", no_id.1);
    let (st, _) = post_hook(&v.server, "nope", &[], &raw).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(
        v.rs.introspect(&token).await["active"],
        true,
        "still active after bad events"
    );

    // The real event ends the ticket's session at once; the other ticket's session goes on.
    let (st, r) = generic(&v.server, "e-1", &close).await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(r["ended"], json!([sid]));
    assert_eq!(v.rs.introspect(&token).await, json!({"active": false}));
    assert_eq!(v.rs.introspect(&other_token).await["active"], true);
    let (_, s) = v.admin.get(&format!("/v1/sessions/{sid}")).await;
    assert_eq!(
        (s["state"].as_str(), s["end_reason"].as_str()),
        (Some("ended"), Some("event"))
    );
    let (_, ev) = v.admin.get(&format!("/v1/sessions/{sid}/evidence")).await;
    let actions: Vec<&str> = ev["events"]
        .as_array()
        .expect("e")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    let hook_at = actions
        .iter()
        .position(|a| *a == "hook.received")
        .expect("hook in evidence");
    assert_eq!(actions.get(hook_at + 1), Some(&"session.ended"), "{actions:?}");

    // Replay: 200, nothing ended. A closed ticket cannot be used again.
    let (st, r) = generic(&v.server, "e-1", &close).await;
    assert_eq!((st, r["ended"].clone()), (StatusCode::OK, json!([])));
    let (st, e) = v
        .vendor
        .post(
            "/v1/sessions",
            json!({"target": "plc-gw", "reason": "again", "ttl_s": 60, "binding": {"kind": "ticket", "ref": "OT-4711"}}),
        )
        .await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::CONFLICT, Some("binding_closed")),
        "{e}"
    );

    // A Jira-shaped payload through a ticket source, and a status that does not close.
    let jira = |status: &str| json!({"webhookEvent": "jira:issue_updated", "issue": {"key": "OT-4712", "fields": {"status": {"name": status}}}});
    let send = |body: Value, id: &str| {
        let raw = serde_json::to_vec(&body).expect("json");
        let id = id.to_owned();
        let server = &v.server;
        async move {
            post_hook(
                server,
                "jira",
                &[
                    ("x-stint-signature", sign(&raw)),
                    ("x-stint-timestamp", now_unix().to_string()),
                    ("x-stint-event-id", id),
                ],
                &raw,
            )
            .await
        }
    };
    let (st, r) = send(jira("In Progress"), "j-1").await;
    assert_eq!((st, r["ended"].clone()), (StatusCode::OK, json!([])));
    let (st, r) = send(jira("Done"), "j-2").await;
    assert_eq!((st, r["ended"].clone()), (StatusCode::OK, json!([other])));
    assert_eq!(v.rs.introspect(&other_token).await["active"], false);
}

#[tokio::test]
async fn a_github_workflow_run_completed_webhook_ends_the_runs_session() {
    let v = vendor().await;
    let (_, ci) = v.admin.principal("ci", "ci_job", &["deployers"]).await;
    v.admin
        .post(
            "/v1/targets",
            json!({"name": "deploy", "kind": "jwt", "max_ttl_s": 3600, "requester_groups": ["deployers"]}),
        )
        .await;
    let ci = v.server.as_key(&ci);
    let (_, s) = ci
        .post("/v1/sessions", json!({"target": "deploy", "reason": "run", "ttl_s": 600, "binding": {"kind": "pipeline", "ref": "31337"}}))
        .await;
    let sid = s["id"].as_str().expect("id").to_owned();
    let body = json!({"action": "completed", "workflow_run": {"id": 31337, "conclusion": "success", "name": "deploy"}});
    let raw = serde_json::to_vec(&body).expect("json");
    let gh = |sig: String, delivery: &str| {
        vec![
            ("x-hub-signature-256", sig),
            ("x-github-event", "workflow_run".to_owned()),
            ("x-github-delivery", delivery.to_owned()),
        ]
    };
    let (st, _) = post_hook(&v.server, "gha", &gh("sha256=00".into(), "d-1"), &raw).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, r) = post_hook(&v.server, "gha", &gh(sign(&raw), "d-1"), &raw).await;
    assert_eq!((st, r["ended"].clone()), (StatusCode::OK, json!([sid])), "{r}");
    let (st, r) = post_hook(&v.server, "gha", &gh(sign(&raw), "d-1"), &raw).await;
    assert_eq!(
        (st, r["ended"].clone()),
        (StatusCode::OK, json!([])),
        "a redelivery is a replay"
    );
}

/// Reads SSE events (`id`, `event`, parsed `data`) from a stream until `n` arrived or 10 s passed.
async fn read_events(resp: reqwest::Response, n: usize) -> Vec<(String, String, Value)> {
    let mut body = resp.bytes_stream();
    let (mut buf, mut out) = (String::new(), Vec::new());
    let (mut id, mut ev, mut data) = (String::new(), String::new(), String::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        let Ok(Some(chunk)) = tokio::time::timeout_at(deadline, body.next()).await else {
            break;
        };
        buf.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
        while let Some(nl) = buf.find('\n') {
            let line: String = buf.drain(..=nl).collect();
            let line = line.trim_end();
            if line.is_empty() {
                if !data.is_empty() {
                    out.push((
                        id.clone(),
                        ev.clone(),
                        serde_json::from_str(&data).expect("data is JSON"),
                    ));
                }
                (id, ev, data) = (String::new(), String::new(), String::new());
            } else if let Some(x) = line.strip_prefix("id:") {
                id = x.trim().into();
            } else if let Some(x) = line.strip_prefix("event:") {
                ev = x.trim().into();
            } else if let Some(x) = line.strip_prefix("data:") {
                data.push_str(x.trim_start());
            }
        }
    }
    out
}

async fn subscribe(server: &Server, key: &str, last: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .get(format!("{}/v1/events/stream", server.addr))
        .bearer_auth(key);
    if let Some(l) = last {
        req = req.header("Last-Event-ID", l);
    }
    req.send().await.expect("stream")
}

#[tokio::test]
async fn the_revocation_stream_pushes_ends_with_signed_caep_tokens_and_resumes() {
    let v = vendor().await;
    let rs_key = v.rs.key.clone();
    let resp = subscribe(&v.server, &rs_key, None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers().get("content-type").and_then(|h| h.to_str().ok()),
        Some("text/event-stream")
    );
    let (sid, token) = ticket_session(&v, "OT-1").await;
    let jti = v.rs.introspect(&token).await["jti"]
        .as_str()
        .expect("jti")
        .to_owned();
    v.vendor.post(&format!("/v1/sessions/{sid}/end"), json!({})).await;
    let events = read_events(resp, 2).await;
    let ended = events
        .iter()
        .find(|e| e.1 == "session.ended")
        .expect("session.ended pushed");
    assert_eq!(ended.2["sid"], sid.as_str());
    assert_eq!(ended.2["reason"], "completed");
    assert!(
        ended.2["jtis"].as_array().expect("jtis").contains(&json!(jti)),
        "{:?}",
        ended.2
    );
    assert!(
        events
            .iter()
            .any(|e| e.1 == "credential.revoked" && e.2["jtis"] == json!([jti])),
        "{events:?}"
    );

    // The SET verifies against the JWKS and says what CAEP says.
    let set = ended.2["set"].as_str().expect("set");
    let header = jsonwebtoken::decode_header(set).expect("header");
    assert_eq!(header.typ.as_deref(), Some("secevent+jwt"));
    let jwks = crate::harness::jwks(&v.server.addr).await;
    let key =
        jsonwebtoken::DecodingKey::from_jwk(jwks.find(header.kid.as_deref().expect("kid")).expect("jwk"))
            .expect("key");
    let mut val = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    val.required_spec_claims.clear();
    val.validate_exp = false;
    val.validate_aud = false;
    let claims = jsonwebtoken::decode::<Value>(set, &key, &val)
        .expect("SET verifies")
        .claims;
    let caep = &claims["events"]["https://schemas.openid.net/secevent/caep/event-type/session-revoked"];
    assert_eq!(caep["subject"], json!({"format": "opaque", "id": sid}));
    assert_eq!(caep["initiating_entity"], "user");
    assert!(caep["event_timestamp"].is_i64());

    // Resume: events after the last id seen are replayed, in order, nothing missed.
    let last = ended.0.clone();
    let (sid2, _) = ticket_session(&v, "OT-2").await;
    v.admin.post(&format!("/v1/sessions/{sid2}/end"), json!({})).await;
    let resumed = read_events(subscribe(&v.server, &rs_key, Some(&last)).await, 2).await;
    assert!(
        resumed
            .iter()
            .all(|e| e.0.parse::<i64>().expect("id") > last.parse::<i64>().expect("id"))
    );
    let e2 = resumed
        .iter()
        .find(|e| e.1 == "session.ended")
        .expect("missed event replayed");
    assert_eq!(
        (e2.2["sid"].as_str(), e2.2["reason"].as_str()),
        (Some(sid2.as_str()), Some("revoked"))
    );

    // Only resource servers and admins may listen; a bad Last-Event-ID is refused.
    assert_eq!(
        subscribe(&v.server, &v.vendor.key, None).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        subscribe(&v.server, "stint_wrong", None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        subscribe(&v.server, &rs_key, Some("-3")).await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

#[tokio::test]
async fn stint_watch_prints_the_stream() {
    use std::io::BufRead;
    let v = vendor().await;
    let mut child = std::process::Command::new(crate::harness::bin())
        .args(["watch", "--json"])
        .env("STINT_ADDR", &v.server.addr)
        .env("STINT_TOKEN", &v.rs.key)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("stint watch");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Give it a moment to subscribe, then end a session.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (sid, _) = ticket_session(&v, "OT-9").await;
    v.vendor.post(&format!("/v1/sessions/{sid}/end"), json!({})).await;
    let mut seen = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) {
        let ev: Value = serde_json::from_str(&line).expect("one JSON event per line");
        let done = ev["type"] == "session.ended";
        seen.push(ev);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.iter()
            .any(|e| e["type"] == "session.ended" && e["sid"] == sid.as_str()),
        "{seen:?}"
    );
}
