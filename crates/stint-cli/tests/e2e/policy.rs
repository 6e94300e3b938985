//! Cedar policies over HTTP and the CLI: decisions explained, maintenance windows, N-of-M approvals,
//! invalid uploads, break-glass with step-up and review, and the lint.

use std::sync::{Arc, Mutex};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Api, Server, bin};

async fn put_policies(admin: &Api, source: &str) -> (StatusCode, Value) {
    admin.put("/v1/policies", json!({"source": source})).await
}

struct Ot {
    server: Server,
    admin: Api,
    vendor: Api,
    leads: Vec<Api>,
}

/// An OT gateway: vendors request, ot-leads approve (the target's floor is 1 approval).
async fn ot(env: &[(&str, &str)]) -> Ot {
    let server = Server::start_with(env).await;
    let admin = server.admin();
    let (_, vendor) = admin.principal("acme-vendor", "vendor", &["vendors"]).await;
    let mut leads = Vec::new();
    for name in ["lead-a", "lead-b", "lead-c"] {
        let (_, k) = admin.principal(name, "approver", &["ot-leads"]).await;
        leads.push(server.as_key(&k));
    }
    let (st, v) = admin
        .post(
            "/v1/targets",
            json!({"name": "plc-gw", "kind": "jwt", "max_ttl_s": 14400, "requester_groups": ["vendors"],
                   "approver_groups": ["ot-leads"], "approvals_required": 1, "environment": "ot", "tags": ["plant-1"]}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    Ot {
        vendor: server.as_key(&vendor),
        admin,
        leads,
        server,
    }
}

fn ticket(r: &str) -> Value {
    json!({"kind": "ticket", "ref": r})
}

#[tokio::test]
async fn policies_decide_explain_and_an_invalid_upload_leaves_the_old_set_in_force() {
    let o = ot(&[]).await;
    // The schema is published.
    let (st, schema) = o.admin.get("/v1/policies/schema").await;
    assert_eq!(st, StatusCode::OK);
    let text = schema["schema"].as_str().expect("schema text");
    for word in ["Principal", "Group", "Target", "break_glass", "weekday"] {
        assert!(text.contains(word), "{word} in {text}");
    }
    // Generated from the target fields: the vendor may request (1 approval).
    let (st, s) = o
        .vendor
        .post(
            "/v1/sessions",
            json!({"target": "plc-gw", "reason": "r", "ttl_s": 600, "binding": ticket("OT-1")}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{s}");
    assert_eq!(s["approvals_required"], 1);

    // A forbid names itself in the refusal and in the audit event.
    let policy = r#"@id("no-unticketed-vendors")
forbid(principal, action == Action::"request", resource)
  when { principal.kind == "vendor" && context.binding.kind != "ticket" };
"#;
    let (st, v) = put_policies(&o.admin, policy).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["policies"], 1);
    let hash = v["hash"].as_str().expect("hash").to_owned();
    let (st, e) = o
        .vendor
        .post(
            "/v1/sessions",
            json!({"target": "plc-gw", "reason": "r", "ttl_s": 600}),
        )
        .await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("policy_denied")),
        "{e}"
    );
    assert_eq!(e["policies"], json!(["no-unticketed-vendors"]), "{e}");
    let audit = o.admin.audit_all().await;
    assert!(
        audit
            .iter()
            .any(|a| a["action"] == "policy.changed" && a["details"]["hash"] == hash.as_str())
    );
    assert!(
        audit.iter().any(|a| a["action"] == "policy.denied"
            && a["details"]["policies"] == json!(["no-unticketed-vendors"])),
        "the refusal is audited with its reasons"
    );

    // An invalid set is refused with line and column; the old one still decides.
    let bad =
        "permit(principal, action == Action::\"request\", resource)\n  when { context.nonexistent == 1 };\n";
    let (st, v) = put_policies(&o.admin, bad).await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_policy")),
        "{v}"
    );
    let err = &v["errors"][0];
    assert!(
        err["line"].as_u64().is_some() && err["column"].as_u64().is_some(),
        "{v}"
    );
    let (st, bad_syntax) = put_policies(&o.admin, "permit(principal, action, resource)\n  when { ;").await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad_syntax["errors"][0]["line"], 2, "{bad_syntax}");
    let (_, current) = o.admin.get("/v1/policies").await;
    assert_eq!(current["hash"], hash.as_str(), "the old set stays in force");
    let (st, _) = o
        .vendor
        .post(
            "/v1/sessions",
            json!({"target": "plc-gw", "reason": "r", "ttl_s": 600}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    // Only admins change policies; check answers without creating anything.
    let (st, _) = put_policies(&o.vendor, "").await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let before = o.admin.get("/v1/sessions").await.1["items"]
        .as_array()
        .map(Vec::len);
    let (st, c) = o
        .admin
        .post(
            "/v1/policies/check",
            json!({"principal": "acme-vendor", "target": "plc-gw", "ttl_s": 600}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{c}");
    assert_eq!(c["decision"], "deny");
    assert_eq!(c["reasons"], json!(["no-unticketed-vendors"]));
    let (_, c) = o
        .admin
        .post(
            "/v1/policies/check",
            json!({"principal": "acme-vendor", "target": "plc-gw", "ttl_s": 600, "binding": ticket("OT-2")}),
        )
        .await;
    assert_eq!(c["decision"], "allow", "{c}");
    assert_eq!(c["approvals_required"], 1);
    assert_eq!(c["eligible_approvers"], json!(["lead-a", "lead-b", "lead-c"]));
    assert_eq!(
        o.admin.get("/v1/sessions").await.1["items"]
            .as_array()
            .map(Vec::len),
        before
    );
}

#[tokio::test]
async fn a_maintenance_window_allows_inside_and_denies_outside() {
    // Tue–Thu 06:00–10:00 local, checked at given times (no sleeping).
    let o = ot(&[("STINT_POLICY_UTC_OFFSET", "+01:00")]).await;
    let policy = r#"@id("ot-window")
forbid(principal, action == Action::"request", resource == Target::"plc-gw")
  unless { ["Tue", "Wed", "Thu"].contains(context.time.weekday) && context.time.hour >= 6 && context.time.hour < 10 };
"#;
    let (st, v) = put_policies(&o.admin, policy).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let check = |at: &'static str| {
        let admin = o.admin.clone();
        async move {
            let (st, c) = admin
                .post(
                    "/v1/policies/check",
                    json!({"principal": "acme-vendor", "target": "plc-gw", "ttl_s": 3600, "binding": ticket("OT-9"), "at": at}),
                )
                .await;
            assert_eq!(st, StatusCode::OK, "{c}");
            c
        }
    };
    // 2026-12-01 is a Tuesday. 06:30 local = 05:30Z.
    assert_eq!(check("2026-12-01T05:30:00Z").await["decision"], "allow");
    let late = check("2026-12-01T09:30:00Z").await; // 10:30 local
    assert_eq!(
        (late["decision"].as_str(), late["reasons"].clone()),
        (Some("deny"), json!(["ot-window"]))
    );
    assert_eq!(check("2026-11-30T06:30:00Z").await["decision"], "deny", "Monday");
    // A real request is judged at the server's time: compare with what check says for now.
    let now_decision = o
        .admin
        .post(
            "/v1/policies/check",
            json!({"principal": "acme-vendor", "target": "plc-gw", "ttl_s": 3600, "binding": ticket("OT-9")}),
        )
        .await
        .1["decision"]
        .clone();
    let (st, _) = o
        .vendor
        .post(
            "/v1/sessions",
            json!({"target": "plc-gw", "reason": "fw", "ttl_s": 3600, "binding": ticket("OT-9")}),
        )
        .await;
    assert_eq!(
        st == StatusCode::CREATED,
        now_decision == "allow",
        "request and check agree"
    );
}

#[tokio::test]
async fn n_of_m_approvals_from_policy_and_no_approving_for_oneself() {
    let o = ot(&[]).await;
    // A lead may also request; two approvals by other leads are needed.
    let (_, lead_req) = o
        .admin
        .principal("lead-d", "approver", &["ot-leads", "vendors"])
        .await;
    let lead_req = o.server.as_key(&lead_req);
    let (st, v) = put_policies(
        &o.admin,
        r#"@id("two-leads") @approvals("2")
permit(principal in Group::"vendors", action == Action::"request", resource == Target::"plc-gw")
  when { context.ttl_s <= 7200 };
"#,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, s) = lead_req
        .post(
            "/v1/sessions",
            json!({"target": "plc-gw", "reason": "r", "ttl_s": 3600, "binding": ticket("OT-5")}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{s}");
    assert_eq!(
        s["approvals_required"], 2,
        "the largest @approvals of the matching permits wins over the floor"
    );
    let sid = s["id"].as_str().expect("id");
    let (st, e) = lead_req
        .post(&format!("/v1/sessions/{sid}/approve"), json!({}))
        .await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("self_approval")),
        "{e}"
    );
    let (_, s1) = o.leads[0]
        .post(&format!("/v1/sessions/{sid}/approve"), json!({}))
        .await;
    assert_eq!(s1["state"], "requested");
    let (st, again) = o.leads[0]
        .post(&format!("/v1/sessions/{sid}/approve"), json!({}))
        .await;
    assert_eq!(
        (st, again["code"].as_str()),
        (StatusCode::CONFLICT, Some("already_approved"))
    );
    let (_, s2) = o.leads[1]
        .post(&format!("/v1/sessions/{sid}/approve"), json!({}))
        .await;
    assert_eq!(s2["state"], "active", "{s2}");
    // A denial by any eligible approver ends a request.
    let (_, s) = o
        .vendor
        .post(
            "/v1/sessions",
            json!({"target": "plc-gw", "reason": "r", "ttl_s": 3600, "binding": ticket("OT-6")}),
        )
        .await;
    let sid = s["id"].as_str().expect("id");
    let (st, d) = o.leads[2]
        .post(
            &format!("/v1/sessions/{sid}/deny"),
            json!({"reason": "not today"}),
        )
        .await;
    assert_eq!((st, d["state"].as_str()), (StatusCode::OK, Some("denied")));
    // Above the target's maximum the request is malformed (422) before policy is asked; a principal
    // no policy permits is denied by default, with no policy to name.
    let (st, e) = o
        .vendor
        .post(
            "/v1/sessions",
            json!({"target": "plc-gw", "reason": "r", "ttl_s": 20000, "binding": ticket("OT-7")}),
        )
        .await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("ttl_too_long")),
        "{e}"
    );
    let (_, stranger) = o.admin.principal("stranger", "service", &["elsewhere"]).await;
    let (st, e) = o
        .server
        .as_key(&stranger)
        .post(
            "/v1/sessions",
            json!({"target": "plc-gw", "reason": "r", "ttl_s": 600, "binding": ticket("OT-8")}),
        )
        .await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("policy_denied")),
        "{e}"
    );
    assert!(e.get("policies").is_none() || e["policies"] == json!([]), "{e}");
}

/// What the webhook receiver got: headers and body of each call.
type Received = Arc<Mutex<Vec<(axum::http::HeaderMap, Vec<u8>)>>>;

/// A webhook receiver on loopback that records what it gets.
async fn receiver() -> (String, Received) {
    let got: Received = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/notify",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock().expect("lock").push((headers, body.to_vec()));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/notify"), got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_needs_a_policy_a_fresh_step_up_for_each_one_use_credential_notifies_and_is_reviewed() {
    let secret = "notify-secret-0123456789abcdef";
    let (url, got) = receiver().await;
    let o = ot(&[
        ("STINT_BREAK_GLASS_WEBHOOK_URL", url.as_str()),
        ("STINT_BREAK_GLASS_WEBHOOK_SECRET", secret),
        ("STINT_BREAK_GLASS_MAX_TTL_S", "1800"),
    ])
    .await;
    let (_, agent) = o.admin.principal("sre-agent", "agent", &["agents"]).await;
    let agent = o.server.as_key(&agent);
    let (_, rs) = o.admin.principal("gw", "resource_server", &[]).await;
    let rs = o.server.as_key(&rs);
    let bg = |ttl: u64, binding: Value| json!({"target": "plc-gw", "reason": "outage INC-1", "ttl_s": ttl, "break_glass": true, "binding": binding});

    // Not without a policy.
    let (st, e) = agent
        .post(
            "/v1/sessions",
            bg(600, json!({"kind": "incident", "ref": "INC-1"})),
        )
        .await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("policy_denied")),
        "{e}"
    );
    let (st, v) = put_policies(
        &o.admin,
        r#"@id("agent-break-glass")
permit(principal in Group::"agents", action == Action::"break_glass", resource == Target::"plc-gw")
  when { context.binding.kind == "incident" && context.ttl_s <= 1800 };
"#,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    // Capped TTL; bound to an incident.
    let (st, e) = agent
        .post(
            "/v1/sessions",
            bg(3600, json!({"kind": "incident", "ref": "INC-1"})),
        )
        .await;
    assert_eq!(st.as_u16() / 100, 4, "{e}");
    let (st, s) = agent
        .post(
            "/v1/sessions",
            bg(900, json!({"kind": "incident", "ref": "INC-1"})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{s}");
    assert_eq!(
        (s["state"].as_str(), s["break_glass"].as_bool()),
        (Some("active"), Some(true)),
        "no approval"
    );
    let sid = s["id"].as_str().expect("id").to_owned();

    // Every credential needs a fresh challenge.
    let (st, e) = agent
        .post(&format!("/v1/sessions/{sid}/credentials"), json!({}))
        .await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("step_up_required")),
        "{e}"
    );
    let (st, ch) = agent
        .post(&format!("/v1/sessions/{sid}/challenge"), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK, "{ch}");
    let nonce = ch["nonce"].as_str().expect("nonce").to_owned();
    let (st, c) = agent
        .post(
            &format!("/v1/sessions/{sid}/credentials"),
            json!({"nonce": nonce}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{c}");
    let token = c["access_token"].as_str().expect("token").to_owned();
    let (st, e) = agent
        .post(
            &format!("/v1/sessions/{sid}/credentials"),
            json!({"nonce": nonce}),
        )
        .await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("step_up_required")),
        "a nonce works once"
    );
    // One use.
    assert_eq!(rs.introspect(&token).await["active"], true);
    assert_eq!(
        rs.introspect(&token).await,
        json!({"active": false}),
        "a second use is refused"
    );
    // Someone else cannot be challenged for it.
    let (st, _) = o
        .vendor
        .post(&format!("/v1/sessions/{sid}/challenge"), json!({}))
        .await;
    assert!(st == StatusCode::FORBIDDEN || st == StatusCode::NOT_FOUND);

    // Approvers were told at once, signed.
    let mut waited = 0;
    while got.lock().expect("lock").is_empty() && waited < 100 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        waited += 1;
    }
    let (headers, body) = got
        .lock()
        .expect("lock")
        .first()
        .cloned()
        .expect("notification received");
    assert_eq!(
        headers.get("x-stint-signature").and_then(|h| h.to_str().ok()),
        Some(crate::harness::hmac_signature(secret, &body).as_str())
    );
    let note: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        (note["type"].as_str(), note["session"]["id"].as_str()),
        (Some("break_glass.started"), Some(sid.as_str()))
    );

    // The review queue holds it until a human reviews it (not its own principal).
    let (_, q) = o.leads[0].get("/v1/reviews").await;
    assert!(
        q["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|x| x["id"] == sid.as_str()),
        "{q}"
    );
    let (st, _) = agent
        .post(
            &format!("/v1/sessions/{sid}/review"),
            json!({"verdict": "justified", "notes": "me"}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, r) = o.leads[0]
        .post(
            &format!("/v1/sessions/{sid}/review"),
            json!({"verdict": "justified", "notes": "PLC outage, INC-1"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{r}");
    let (_, q) = o.leads[0].get("/v1/reviews").await;
    assert!(
        !q["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|x| x["id"] == sid.as_str())
    );
    let (st, _) = o.leads[1]
        .post(
            &format!("/v1/sessions/{sid}/review"),
            json!({"verdict": "unjustified", "notes": "again"}),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    let (_, ev) = o.admin.get(&format!("/v1/sessions/{sid}/evidence")).await;
    let actions: Vec<&str> = ev["events"]
        .as_array()
        .expect("e")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for a in [
        "session.requested",
        "credential.issued",
        "credential.used",
        "credential.revoked",
        "notification.sent",
        "review.recorded",
    ] {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }
}

#[tokio::test]
async fn lint_flags_session_bound_in_name_only_and_the_cli_answers_too() {
    let server = Server::start_with(&[]).await;
    let admin = server.admin();
    admin.principal("ci", "ci_job", &["deployers", "ops"]).await;
    let clean = Server::start_with(&[("STINT_BREAK_GLASS_WEBHOOK_URL", "http://127.0.0.1:9/n")]).await;
    let cadmin = clean.admin();
    cadmin
        .post("/v1/targets", json!({"name": "api", "kind": "jwt", "max_ttl_s": 3600, "requester_groups": ["deployers"], "approver_groups": ["ops"], "approvals_required": 1}))
        .await;
    let (_, l) = cadmin.get("/v1/policies/lint").await;
    assert_eq!(l["findings"], json!([]), "a clean config has no findings: {l}");

    for body in [
        json!({"name": "forever", "kind": "jwt", "max_ttl_s": 86400 * 7, "requester_groups": ["deployers"]}),
        json!({"name": "prod-db", "kind": "jwt", "max_ttl_s": 3600, "requester_groups": ["deployers"], "tags": ["production"]}),
        json!({"name": "overlap", "kind": "jwt", "max_ttl_s": 3600, "requester_groups": ["ops"], "approver_groups": ["ops"], "approvals_required": 1}),
    ] {
        let (st, v) = admin.post("/v1/targets", body).await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
    }
    let (st, v) = put_policies(
        &admin,
        r#"@id("unbounded")
permit(principal in Group::"deployers", action == Action::"request", resource == Target::"forever");
@id("bg-no-notify")
permit(principal, action == Action::"break_glass", resource == Target::"prod-db");
@id("ghost")
permit(principal, action == Action::"request", resource == Target::"no-such-target");
"#,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, l) = admin.get("/v1/policies/lint").await;
    assert_eq!(st, StatusCode::OK);
    let text = l["findings"].to_string();
    for subject in [
        "forever",
        "prod-db",
        "overlap",
        "unbounded",
        "bg-no-notify",
        "ghost",
    ] {
        assert!(text.contains(subject), "{subject} flagged: {text}");
    }
    for f in l["findings"].as_array().expect("findings") {
        for k in ["severity", "subject", "message", "fix"] {
            assert!(f[k].as_str().is_some_and(|s| !s.is_empty()), "{f}");
        }
    }
    let out = std::process::Command::new(bin())
        .args(["policy", "lint"])
        .env("STINT_ADDR", &server.addr)
        .env("STINT_TOKEN", &server.admin)
        .output()
        .expect("stint policy lint");
    assert!(String::from_utf8_lossy(&out.stdout).contains("ghost"), "{out:?}");
    let out = std::process::Command::new(bin())
        .args([
            "policy",
            "check",
            "--principal",
            "ci",
            "--target",
            "forever",
            "--ttl",
            "30m",
        ])
        .env("STINT_ADDR", &server.addr)
        .env("STINT_TOKEN", &server.admin)
        .output()
        .expect("stint policy check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("allow"),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn policy_files_are_read_at_start_and_an_invalid_one_stops_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pdir = dir.path().join("policies");
    std::fs::create_dir_all(&pdir).expect("mkdir");
    std::fs::write(
        pdir.join("10-vendors.cedar"),
        "@id(\"no-night-vendors\")\nforbid(principal, action == Action::\"request\", resource)\n  when { principal.kind == \"vendor\" && context.time.hour < 5 };\n",
    )
    .expect("write");
    std::fs::write(pdir.join("notes.txt"), "not a policy").expect("write");
    let pdir_s = pdir.display().to_string();
    let server = Server::start_with(&[("STINT_POLICY_DIR", pdir_s.as_str())]).await;
    let (st, v) = server.admin().get("/v1/policies").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        (v["origin"].as_str(), v["policies"].as_u64()),
        (Some("files"), Some(1)),
        "{v}"
    );
    assert!(v["source"].as_str().expect("source").contains("no-night-vendors"));
    drop(server);

    // An invalid file: the server refuses to start and says where.
    std::fs::write(
        pdir.join("20-broken.cedar"),
        "permit(principal, action, resource)\n  when { context.nope };\n",
    )
    .expect("write");
    let data = dir.path().join("data2");
    let out = std::process::Command::new(bin())
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("STINT_POLICY_DIR", &pdir)
        .env("STINT_BOOTSTRAP_ADMIN_KEY", crate::harness::keygen())
        .output()
        .expect("stint server");
    assert!(!out.status.success(), "an invalid policy set stops the start");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("policy set is invalid") && err.contains("line"),
        "{err}"
    );
}
