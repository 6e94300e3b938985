//! Bad input on every endpoint: the right status and code, a well-formed error body (problem+json,
//! or RFC 6749 errors on `/oauth2/*`), no secret echoed, and nothing changed.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{self, Auth, Raw, RawBody, World};

/// Largest accepted body is 64 KiB; this is comfortably above it.
const BIG: usize = 70 * 1024;

/// Who sends a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Admin,
    Ci,
    Alice,
    Bob,
    Rs,
    /// No `Authorization` header.
    Nobody,
    /// A well-formed key nobody holds.
    Unknown,
    /// `Authorization` header values that are not a usable key.
    Garbage(&'static str),
    /// The admin key under another scheme.
    AdminBasic,
}

/// One request and the answer it must get.
#[derive(Debug, Clone)]
struct Case {
    who: Who,
    method: Method,
    path: String,
    body: RawBody,
    status: u16,
    code: &'static str,
}

fn case(
    who: Who,
    method: Method,
    path: impl Into<String>,
    body: RawBody,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        who,
        method,
        path: path.into(),
        body,
        status,
        code,
    }
}

fn form(s: &str) -> RawBody {
    RawBody::Form(s.as_bytes().to_vec())
}

/// The world the bad input is thrown at: `api` (no approval) with an active session of `ci` and a
/// token, `gated` (one approval) with a requested session of `ci`.
struct Env {
    w: World,
    active: String,
    pending: String,
    token: String,
    alice_id: String,
    admin_id: String,
    unknown_key: String,
}

impl Env {
    async fn new() -> Env {
        let w = World::new(0).await;
        w.admin
            .target_with(
                json!({"name": "gated", "max_ttl_s": 600, "requester_groups": ["deployers"],
                "approver_groups": ["ops"], "approvals_required": 1}),
            )
            .await;
        let active = w.request(json!({})).await["id"].as_str().unwrap().to_owned();
        let (st, p) =
            w.ci.post(
                "/v1/sessions",
                json!({"target": "gated", "reason": "r", "ttl_s": 60}),
            )
            .await;
        assert_eq!(st.as_u16(), 201, "{p}");
        let pending = p["id"].as_str().unwrap().to_owned();
        let token = w.token(&active).await;
        let (_, list) = w.admin.get("/v1/principals").await;
        let id_of = |name: &str| {
            list["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .and_then(|p| p["id"].as_str())
                .unwrap()
                .to_owned()
        };
        let (alice_id, admin_id) = (id_of("alice"), id_of("admin"));
        Env {
            w,
            active,
            pending,
            token,
            alice_id,
            admin_id,
            unknown_key: harness::keygen(),
        }
    }

    fn ci_id(&self) -> &str {
        &self.w.ci_id
    }

    /// Every key this world knows, real or not: none may ever appear in an answer.
    fn keys(&self) -> Vec<String> {
        vec![
            self.w.admin.key.clone(),
            self.w.ci.key.clone(),
            self.w.alice.key.clone(),
            self.w.bob.key.clone(),
            self.w.rs.key.clone(),
            self.unknown_key.clone(),
            self.token.clone(),
        ]
    }

    async fn send(&self, c: &Case) -> Raw {
        let key = |a: &harness::Api| a.key.clone();
        let basic;
        let owned;
        let auth = match c.who {
            Who::Admin => {
                owned = key(&self.w.admin);
                Auth::Bearer(&owned)
            }
            Who::Ci => {
                owned = key(&self.w.ci);
                Auth::Bearer(&owned)
            }
            Who::Alice => {
                owned = key(&self.w.alice);
                Auth::Bearer(&owned)
            }
            Who::Bob => {
                owned = key(&self.w.bob);
                Auth::Bearer(&owned)
            }
            Who::Rs => {
                owned = key(&self.w.rs);
                Auth::Bearer(&owned)
            }
            Who::Nobody => Auth::None,
            Who::Unknown => Auth::Bearer(&self.unknown_key),
            Who::Garbage(h) => Auth::Header(h),
            Who::AdminBasic => {
                basic = format!("Basic {}", self.w.admin.key);
                Auth::Header(&basic)
            }
        };
        harness::raw(
            &self.w.server.addr,
            c.method.clone(),
            &c.path,
            auth,
            c.body.clone(),
        )
        .await
    }

    /// What must not change: principals, targets, sessions, the audit trail and the signing keys.
    /// (A request that policy refuses is recorded as a `policy.denied` audit event — the decision
    /// and the policies behind it — and changes nothing else.)
    async fn snapshot(&self) -> Value {
        let a = &self.w.admin;
        let (_, p) = a.get("/v1/principals?limit=1000").await;
        let (_, t) = a.get("/v1/targets?limit=1000").await;
        let (_, s) = a.get("/v1/sessions?limit=1000").await;
        let audit: Vec<Value> = a
            .audit_all()
            .await
            .into_iter()
            .filter(|e| e["action"] != "policy.denied")
            .collect();
        let kids: Vec<Option<String>> = harness::jwks(&a.addr)
            .await
            .keys
            .iter()
            .map(|k| k.common.key_id.clone())
            .collect();
        json!({
            "principals": p["items"],
            "targets": t["items"],
            "sessions": s["items"],
            "audit_events": audit.len(),
            "audit_head": audit.last().map(|e| e["hash"].clone()),
            "kids": kids,
        })
    }

    /// Runs every case, checks each answer, and checks that nothing changed.
    async fn run(&self, cases: &[Case]) {
        let before = self.snapshot().await;
        let mut failures = Vec::new();
        for c in cases {
            let r = self.send(c).await;
            if let Err(e) = self.check(c, &r) {
                failures.push(format!(
                    "{:?} {} {} as {:?} with {}: {e}\n    got {} {} {}",
                    c.method,
                    short(&c.path),
                    c.status,
                    c.who,
                    body_label(&c.body),
                    r.status.as_u16(),
                    r.content_type,
                    short(&r.text)
                ));
            }
        }
        let after = self.snapshot().await;
        assert!(
            failures.is_empty(),
            "{} of {} cases failed:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
        assert_eq!(before, after, "bad input changed state");
    }

    fn check(&self, c: &Case, r: &Raw) -> Result<(), String> {
        if r.status.as_u16() != c.status {
            return Err(format!("status {} instead of {}", r.status.as_u16(), c.status));
        }
        for k in self.keys() {
            if r.text.contains(&k) {
                return Err("the answer contains a key or token".into());
            }
        }
        if r.status.as_u16() == 401 && r.headers.get(reqwest::header::WWW_AUTHENTICATE).is_none() {
            return Err("401 without WWW-Authenticate".into());
        }
        let oauth = c.path.starts_with("/oauth2/introspect") || c.path.starts_with("/oauth2/revoke");
        if oauth && r.status.as_u16() != 503 && r.status.as_u16() != 405 {
            check_oauth_error(c, r)
        } else {
            check_problem(c, r)
        }
    }
}

fn check_problem(c: &Case, r: &Raw) -> Result<(), String> {
    if !r.content_type.starts_with("application/problem+json") {
        return Err(format!("content type `{}`", r.content_type));
    }
    let j = &r.json;
    for k in ["type", "title", "detail", "code"] {
        if !j[k].is_string() || j[k].as_str().is_some_and(str::is_empty) {
            return Err(format!("`{k}` missing or empty"));
        }
    }
    if j["status"].as_u64() != Some(u64::from(r.status.as_u16())) {
        return Err("`status` does not match".into());
    }
    if j["code"] != c.code {
        return Err(format!("code {} instead of {}", j["code"], c.code));
    }
    Ok(())
}

fn check_oauth_error(c: &Case, r: &Raw) -> Result<(), String> {
    if !r.content_type.starts_with("application/json") {
        return Err(format!("content type `{}`", r.content_type));
    }
    let j = &r.json;
    if !j["error"].is_string() || !j["error_description"].is_string() {
        return Err("not an RFC 6749 error body".into());
    }
    if j["error"] != c.code {
        return Err(format!("error {} instead of {}", j["error"], c.code));
    }
    if j.get("active").is_some() {
        return Err("an error must not look like an introspection answer".into());
    }
    Ok(())
}

fn short(s: &str) -> String {
    if s.len() > 160 {
        format!(
            "{}…({} bytes)",
            &s[..s.char_indices().nth(150).map_or(s.len(), |(i, _)| i)],
            s.len()
        )
    } else {
        s.to_owned()
    }
}

fn body_label(b: &RawBody) -> String {
    match b {
        RawBody::Empty => "no body".into(),
        RawBody::Json(v) => format!("json {}", short(&String::from_utf8_lossy(v))),
        RawBody::Form(v) => format!("form {}", short(&String::from_utf8_lossy(v))),
        RawBody::Typed(ct, v) => format!("{ct} {}", short(&String::from_utf8_lossy(v))),
    }
}

fn j(v: Value) -> RawBody {
    RawBody::json(&v)
}

/// Every route with a body that would succeed for an allowed caller.
fn all_routes(e: &Env) -> Vec<(Method, String, RawBody)> {
    let (a, p, ci) = (&e.active, &e.pending, e.ci_id());
    vec![
        (Method::GET, "/v1/principals".into(), RawBody::Empty),
        (
            Method::POST,
            "/v1/principals".into(),
            j(json!({"name": "new-one", "kind": "service"})),
        ),
        (Method::GET, format!("/v1/principals/{ci}"), RawBody::Empty),
        (Method::DELETE, format!("/v1/principals/{ci}"), RawBody::Empty),
        (
            Method::POST,
            format!("/v1/principals/{ci}/rotate-key"),
            RawBody::Empty,
        ),
        (
            Method::POST,
            "/v1/targets".into(),
            j(json!({"name": "new-t", "kind": "jwt", "max_ttl_s": 60})),
        ),
        (Method::GET, "/v1/targets".into(), RawBody::Empty),
        (Method::GET, "/v1/targets/api".into(), RawBody::Empty),
        (
            Method::PATCH,
            "/v1/targets/api".into(),
            j(json!({"approvals_required": 1})),
        ),
        (Method::DELETE, "/v1/targets/api".into(), RawBody::Empty),
        (
            Method::POST,
            "/v1/sessions".into(),
            j(json!({"target": "api", "reason": "x", "ttl_s": 60})),
        ),
        (Method::GET, "/v1/sessions".into(), RawBody::Empty),
        (Method::GET, format!("/v1/sessions/{a}"), RawBody::Empty),
        (Method::POST, format!("/v1/sessions/{p}/approve"), j(json!({}))),
        (
            Method::POST,
            format!("/v1/sessions/{p}/deny"),
            j(json!({"reason": "no"})),
        ),
        (Method::POST, format!("/v1/sessions/{p}/cancel"), RawBody::Empty),
        (Method::POST, format!("/v1/sessions/{a}/end"), j(json!({}))),
        (
            Method::POST,
            format!("/v1/sessions/{a}/heartbeat"),
            RawBody::Empty,
        ),
        (
            Method::POST,
            format!("/v1/sessions/{a}/credentials"),
            j(json!({})),
        ),
        (Method::GET, format!("/v1/sessions/{a}/evidence"), RawBody::Empty),
        (Method::GET, "/v1/audit".into(), RawBody::Empty),
        (Method::GET, "/v1/audit/verify".into(), RawBody::Empty),
        (Method::POST, "/v1/keys/rotate".into(), RawBody::Empty),
        (Method::GET, "/v1/targets/api/krl".into(), RawBody::Empty),
        (Method::POST, "/v1/reconcile".into(), j(json!({}))),
        (Method::GET, "/v1/trusts".into(), RawBody::Empty),
        (Method::POST, "/v1/trusts".into(), j(trust_body())),
        (Method::GET, "/v1/hook-sources".into(), RawBody::Empty),
        (Method::POST, "/v1/hook-sources".into(), j(hook_source_body())),
        (Method::GET, "/v1/events/stream".into(), RawBody::Empty),
        (Method::PUT, "/v1/policies".into(), j(json!({"source": ""}))),
        (Method::GET, "/v1/policies".into(), RawBody::Empty),
        (Method::GET, "/v1/policies/schema".into(), RawBody::Empty),
        (
            Method::POST,
            "/v1/policies/check".into(),
            j(json!({"principal": "ci", "target": "api", "ttl_s": 60})),
        ),
        (Method::GET, "/v1/policies/lint".into(), RawBody::Empty),
        (Method::GET, "/v1/reviews".into(), RawBody::Empty),
        (Method::POST, format!("/v1/sessions/{a}/challenge"), j(json!({}))),
        (
            Method::POST,
            format!("/v1/sessions/{a}/review"),
            j(json!({"verdict": "justified", "notes": "x"})),
        ),
        (
            Method::POST,
            "/oauth2/introspect".into(),
            form(&format!("token={}", e.token)),
        ),
        (
            Method::POST,
            "/oauth2/revoke".into(),
            form(&format!("token={}", e.token)),
        ),
    ]
}

/// The routes taking a JSON body, each with the caller allowed to use it.
fn json_routes(e: &Env) -> Vec<(Who, Method, String)> {
    let (a, p) = (&e.active, &e.pending);
    vec![
        (Who::Admin, Method::POST, "/v1/principals".into()),
        (Who::Admin, Method::POST, "/v1/targets".into()),
        (Who::Admin, Method::PATCH, "/v1/targets/api".into()),
        (Who::Ci, Method::POST, "/v1/sessions".into()),
        (Who::Alice, Method::POST, format!("/v1/sessions/{p}/approve")),
        (Who::Alice, Method::POST, format!("/v1/sessions/{p}/deny")),
        (Who::Ci, Method::POST, format!("/v1/sessions/{a}/end")),
        (Who::Ci, Method::POST, format!("/v1/sessions/{a}/credentials")),
        (Who::Admin, Method::POST, "/v1/reconcile".into()),
        (Who::Admin, Method::POST, "/v1/trusts".into()),
        (Who::Admin, Method::POST, "/v1/hook-sources".into()),
        (Who::Admin, Method::PUT, "/v1/policies".into()),
        (Who::Admin, Method::POST, "/v1/policies/check".into()),
        (Who::Admin, Method::POST, format!("/v1/sessions/{a}/review")),
    ]
}

fn trust_body() -> Value {
    json!({"name": "t", "issuer": "https://issuer.example", "jwks_url": "https://issuer.example/jwks",
           "audience": "a", "rules": [{"match": {}, "principal": "ci", "target": "api",
           "binding": {"kind": "pipeline", "ref_claim": "run_id"}}]})
}

fn hook_source_body() -> Value {
    json!({"name": "h", "kind": "generic", "secret": "0123456789abcdef0123"})
}

#[tokio::test]
async fn malformed_json_is_400_everywhere() {
    let e = Env::new().await;
    let bodies: Vec<RawBody> = vec![
        RawBody::text("{"),
        RawBody::text("{\""),
        RawBody::text("{,}"),
        RawBody::text("not json"),
        RawBody::text("nul"),
        RawBody::text("{'single': 'quotes'}"),
        RawBody::Json(b"\xff\xfe{}".to_vec()),
    ];
    let mut cases = Vec::new();
    for (who, m, path) in json_routes(&e) {
        for b in &bodies {
            cases.push(case(
                who,
                m.clone(),
                path.clone(),
                b.clone(),
                400,
                "malformed_json",
            ));
        }
    }
    // An empty body is malformed where a body is required.
    for (who, m, path) in json_routes(&e).into_iter().take(4) {
        cases.push(case(who, m, path, RawBody::text(""), 400, "malformed_json"));
    }
    cases.push(case(
        Who::Alice,
        Method::POST,
        format!("/v1/sessions/{}/deny", e.pending),
        RawBody::text(""),
        400,
        "malformed_json",
    ));
    e.run(&cases).await;
}

/// A body that is not JSON is malformed (400) even when the parser meets an unknown field or a
/// wrong type before it meets the syntax error.
#[tokio::test]
async fn malformed_json_is_400_even_after_a_data_error() {
    let e = Env::new().await;
    let bodies = [
        RawBody::text("{\"bogus\": 1"),
        RawBody::text("{\"bogus\": 1} trailing"),
        RawBody::text("[1, 2"),
        RawBody::Json(b"{\"bogus\": \"\xff\xfe\"}".to_vec()),
        RawBody::text(&format!("{}1", "[".repeat(5000))),
    ];
    let mut cases = Vec::new();
    for (who, m, path) in json_routes(&e) {
        for b in &bodies {
            cases.push(case(
                who,
                m.clone(),
                path.clone(),
                b.clone(),
                400,
                "malformed_json",
            ));
        }
    }
    e.run(&cases).await;
}

/// serde's derived `Deserialize` also accepts a JSON array in place of a struct (fields by
/// position); a request body must be an object.
#[tokio::test]
async fn json_arrays_are_not_accepted_as_objects() {
    let e = Env::new().await;
    let (a, p) = (e.active.clone(), e.pending.clone());
    let cases = vec![
        case(
            Who::Admin,
            Method::POST,
            "/v1/principals",
            j(json!(["x9", "service"])),
            422,
            "invalid_request",
        ),
        case(
            Who::Admin,
            Method::POST,
            "/v1/targets",
            j(json!(["t9", "jwt", 60])),
            422,
            "invalid_request",
        ),
        case(
            Who::Admin,
            Method::PATCH,
            "/v1/targets/api",
            j(json!([1])),
            422,
            "invalid_request",
        ),
        case(
            Who::Ci,
            Method::POST,
            "/v1/sessions",
            j(json!(["api", "x", 60])),
            422,
            "invalid_request",
        ),
        case(
            Who::Alice,
            Method::POST,
            format!("/v1/sessions/{p}/approve"),
            j(json!([])),
            422,
            "invalid_request",
        ),
        case(
            Who::Alice,
            Method::POST,
            format!("/v1/sessions/{p}/deny"),
            j(json!(["no"])),
            422,
            "invalid_request",
        ),
        case(
            Who::Ci,
            Method::POST,
            format!("/v1/sessions/{a}/end"),
            j(json!([])),
            422,
            "invalid_request",
        ),
    ];
    e.run(&cases).await;
}

#[tokio::test]
async fn wrong_types_missing_and_unknown_fields_are_422() {
    let e = Env::new().await;
    let (a, p) = (e.active.clone(), e.pending.clone());
    let long = "x".repeat(1001);
    let mut cases = Vec::new();
    let mut add = |who: Who, m: Method, path: &str, bodies: Vec<Value>| {
        for b in bodies {
            cases.push(case(who, m.clone(), path, j(b), 422, "invalid_request"));
        }
    };
    let not_objects = || vec![json!([]), json!(null), json!("x"), json!(5), json!(true)];

    let mut b = vec![
        json!({"name": 5, "kind": "service"}),
        json!({"name": null, "kind": "service"}),
        json!({"name": "x1", "kind": "robot"}),
        json!({"name": "x1", "kind": "Service"}),
        json!({"name": "x1", "kind": "service", "groups": "ops"}),
        json!({"name": "x1", "kind": "service", "groups": [1]}),
        json!({"kind": "service"}),
        json!({"name": "x1"}),
        json!({}),
        json!({"name": "x1", "kind": "service", "admin": true}),
        json!({"name": "x1", "kind": "service", "api_key": "stint_x"}),
    ];
    b.extend(not_objects());
    add(Who::Admin, Method::POST, "/v1/principals", b);

    let t = |extra: Value| {
        let mut base = json!({"name": "t1", "kind": "jwt", "max_ttl_s": 60});
        base.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        base
    };
    let mut b = vec![
        t(json!({"max_ttl_s": "60"})),
        t(json!({"max_ttl_s": -1})),
        t(json!({"max_ttl_s": 1.5})),
        t(json!({"max_ttl_s": 1e30})),
        t(json!({"kind": "oracle"})),
        t(json!({"token_ttl_s": "5"})),
        t(json!({"requester_groups": "x"})),
        t(json!({"approver_groups": [5]})),
        t(json!({"approvals_required": -1})),
        t(json!({"approvals_required": "1"})),
        t(json!({"require_binding": "bogus"})),
        t(json!({"tags": "x"})),
        t(json!({"environment": 5})),
        t(json!({"colour": "red"})),
        json!({"name": "t1", "kind": "jwt"}),
        json!({"kind": "jwt", "max_ttl_s": 60}),
        json!({"name": "t1", "max_ttl_s": 60}),
    ];
    b.extend(not_objects());
    add(Who::Admin, Method::POST, "/v1/targets", b);

    let mut b = vec![
        json!({"approvals_required": "2"}),
        json!({"approvals_required": -1}),
        json!({"max_ttl_s": "60"}),
        json!({"token_ttl_s": 1.5}),
        json!({"requester_groups": "ops"}),
        json!({"nope": 1}),
        json!({"name": "renamed"}),
        json!({"kind": "jwt"}),
    ];
    b.extend(not_objects());
    add(Who::Admin, Method::PATCH, "/v1/targets/api", b);

    let s = |extra: Value| {
        let mut base = json!({"target": "api", "reason": "x", "ttl_s": 60});
        base.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        base
    };
    let mut b = vec![
        s(json!({"ttl_s": "60"})),
        s(json!({"ttl_s": -1})),
        s(json!({"ttl_s": 1.5})),
        s(json!({"ttl_s": null})),
        s(json!({"target": 5})),
        s(json!({"reason": ["x"]})),
        s(json!({"binding": "ticket"})),
        s(json!({"binding": {"kind": "bogus", "ref": "x"}})),
        s(json!({"binding": {"ref": "x"}})),
        s(json!({"not_before": "tomorrow"})),
        s(json!({"not_before": 5})),
        s(json!({"not_before": "2030-13-01T00:00:00Z"})),
        s(json!({"idle_timeout_s": "x"})),
        s(json!({"max_uses": -1})),
        s(json!({"break_glass": "yes"})),
        s(json!({"role": "admin"})),
        s(json!({"principal": "prn_00000000000000000000000000000000"})),
        json!({"target": "api", "reason": "x"}),
        json!({"target": "api", "ttl_s": 60}),
        json!({"reason": "x", "ttl_s": 60}),
    ];
    b.extend(not_objects());
    add(Who::Ci, Method::POST, "/v1/sessions", b);

    add(
        Who::Alice,
        Method::POST,
        &format!("/v1/sessions/{p}/approve"),
        vec![
            json!({"comment": 5}),
            json!({"comment": "x", "extra": 1}),
            json!({"approve": true}),
            json!("x"),
            json!(null),
            json!(5),
        ],
    );
    add(
        Who::Alice,
        Method::POST,
        &format!("/v1/sessions/{p}/deny"),
        vec![
            json!({}),
            json!({"reason": 5}),
            json!({"reason": null}),
            json!({"reason": "x", "extra": 1}),
            json!([]),
            json!("no"),
        ],
    );
    add(
        Who::Ci,
        Method::POST,
        &format!("/v1/sessions/{a}/end"),
        vec![json!({"reason": 5}), json!({"x": 1}), json!("x"), json!(7)],
    );
    // Out-of-range values are 422 too.
    let mut bad = |who: Who, m: Method, path: &str, body: Value, code: &'static str| {
        cases.push(case(who, m, path, j(body), 422, code));
    };
    for name in ["has space", "", "ünï", "a/b", &"n".repeat(65)] {
        bad(
            Who::Admin,
            Method::POST,
            "/v1/principals",
            json!({"name": name, "kind": "service"}),
            "invalid_request",
        );
    }
    bad(
        Who::Admin,
        Method::POST,
        "/v1/principals",
        json!({"name": "x1", "kind": "service", "groups": ["bad group"]}),
        "invalid_request",
    );
    let many: Vec<String> = (0..65).map(|i| format!("g{i}")).collect();
    bad(
        Who::Admin,
        Method::POST,
        "/v1/principals",
        json!({"name": "x1", "kind": "service", "groups": many}),
        "invalid_request",
    );
    for extra in [
        json!({"max_ttl_s": 0}),
        json!({"max_ttl_s": 316_224_001}),
        json!({"token_ttl_s": 0}),
        json!({"token_ttl_s": 61}),
        json!({"approvals_required": 11}),
        json!({"approvals_required": 1}),
        json!({"config": "x"}),
        json!({"config": {"audience": 5}}),
        json!({"config": {"audience": ""}}),
        json!({"config": {"admin_url": "postgres://u:p@h/db"}}),
        json!({"name": "a b"}),
        json!({"environment": long.clone()}),
        json!({"tags": ["bad tag"]}),
    ] {
        bad(
            Who::Admin,
            Method::POST,
            "/v1/targets",
            t(extra),
            "invalid_request",
        );
    }
    // External kinds validate their own `config` (no admin URL, no principals).
    for extra in [
        json!({"kind": "postgres"}),
        json!({"kind": "postgres", "config": {"admin_url": "postgres://u:p@h/db", "mode": "sideways"}}),
        json!({"kind": "ssh"}),
        json!({"kind": "ssh", "config": {"principals": ["root"], "krl_path": "relative.krl"}}),
        json!({"kind": "ssh", "config": {"principals": ["root"], "extensions": ["permit-everything"]}}),
    ] {
        bad(
            Who::Admin,
            Method::POST,
            "/v1/targets",
            t(extra),
            "invalid_request",
        );
    }
    for body in [
        json!({"max_ttl_s": 0}),
        json!({"max_ttl_s": 316_224_001}),
        json!({"token_ttl_s": 0}),
        json!({"approvals_required": 11}),
        json!({"requester_groups": ["a b"]}),
    ] {
        bad(
            Who::Admin,
            Method::PATCH,
            "/v1/targets/api",
            body,
            "invalid_request",
        );
    }
    bad(
        Who::Admin,
        Method::PATCH,
        "/v1/targets/gated",
        json!({"approver_groups": []}),
        "invalid_request",
    );
    let far = harness::rfc3339_in(20 * 366 * 24 * 3600);
    for extra in [
        json!({"reason": ""}),
        json!({"reason": "   "}),
        json!({"reason": long.clone()}),
        json!({"ttl_s": 0}),
        json!({"binding": {"kind": "ticket"}}),
        json!({"binding": {"kind": "ticket", "ref": ""}}),
        json!({"binding": {"kind": "ticket", "ref": "r".repeat(201)}}),
        json!({"not_before": far}),
        json!({"idle_timeout_s": 0}),
        json!({"idle_timeout_s": u64::MAX}),
        json!({"max_uses": 0}),
    ] {
        bad(Who::Ci, Method::POST, "/v1/sessions", s(extra), "invalid_request");
    }
    bad(
        Who::Ci,
        Method::POST,
        "/v1/sessions",
        s(json!({"ttl_s": 3601})),
        "ttl_too_long",
    );
    bad(
        Who::Ci,
        Method::POST,
        "/v1/sessions",
        s(json!({"ttl_s": u64::MAX})),
        "ttl_too_long",
    );
    bad(
        Who::Ci,
        Method::POST,
        "/v1/sessions",
        s(json!({"target": "nope"})),
        "unknown_target",
    );
    bad(
        Who::Alice,
        Method::POST,
        &format!("/v1/sessions/{p}/approve"),
        json!({"comment": long.clone()}),
        "invalid_request",
    );
    for reason in ["", "  ", &long] {
        bad(
            Who::Alice,
            Method::POST,
            &format!("/v1/sessions/{p}/deny"),
            json!({"reason": reason}),
            "invalid_request",
        );
    }
    bad(
        Who::Ci,
        Method::POST,
        &format!("/v1/sessions/{a}/end"),
        json!({"reason": long}),
        "invalid_request",
    );
    // Duplicates are conflicts.
    cases.push(case(
        Who::Admin,
        Method::POST,
        "/v1/principals",
        j(json!({"name": "ci", "kind": "service"})),
        409,
        "already_exists",
    ));
    cases.push(case(
        Who::Admin,
        Method::POST,
        "/v1/targets",
        j(json!({"name": "api", "kind": "jwt", "max_ttl_s": 60})),
        409,
        "already_exists",
    ));
    e.run(&cases).await;
}

#[tokio::test]
async fn requests_that_policy_refuses_are_403_and_change_nothing() {
    let e = Env::new().await;
    let s = json!({"target": "api", "reason": "x", "ttl_s": 60});
    let mut bg = s.clone();
    bg["break_glass"] = json!(true);
    let cases = vec![
        case(Who::Ci, Method::POST, "/v1/sessions", j(bg), 403, "policy_denied"),
        // bob is not in the requester group.
        case(
            Who::Bob,
            Method::POST,
            "/v1/sessions",
            j(s.clone()),
            403,
            "policy_denied",
        ),
        case(Who::Rs, Method::POST, "/v1/sessions", j(s), 403, "policy_denied"),
        case(
            Who::Ci,
            Method::POST,
            format!("/v1/sessions/{}/approve", e.pending),
            j(json!({})),
            403,
            "self_approval",
        ),
        case(
            Who::Ci,
            Method::POST,
            format!("/v1/sessions/{}/deny", e.pending),
            j(json!({"reason": "x"})),
            403,
            "forbidden",
        ),
        case(
            Who::Alice,
            Method::POST,
            format!("/v1/sessions/{}/cancel", e.pending),
            RawBody::Empty,
            403,
            "forbidden",
        ),
        case(
            Who::Alice,
            Method::POST,
            format!("/v1/sessions/{}/heartbeat", e.active),
            RawBody::Empty,
            403,
            "forbidden",
        ),
        case(
            Who::Alice,
            Method::POST,
            format!("/v1/sessions/{}/credentials", e.active),
            j(json!({})),
            403,
            "forbidden",
        ),
        // Wrong state.
        case(
            Who::Alice,
            Method::POST,
            format!("/v1/sessions/{}/approve", e.active),
            j(json!({})),
            409,
            "session_not_pending",
        ),
        case(
            Who::Ci,
            Method::POST,
            format!("/v1/sessions/{}/cancel", e.active),
            RawBody::Empty,
            409,
            "session_not_pending",
        ),
        case(
            Who::Ci,
            Method::POST,
            format!("/v1/sessions/{}/credentials", e.pending),
            j(json!({})),
            409,
            "session_not_active",
        ),
        case(
            Who::Ci,
            Method::POST,
            format!("/v1/sessions/{}/heartbeat", e.pending),
            RawBody::Empty,
            409,
            "session_not_active",
        ),
        case(
            Who::Admin,
            Method::DELETE,
            format!("/v1/principals/{}", e.admin_id),
            RawBody::Empty,
            409,
            "cannot_offboard_self",
        ),
    ];
    e.run(&cases).await;
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let e = Env::new().await;
    let pad = "a".repeat(BIG);
    let mut cases = Vec::new();
    for (who, m, path) in json_routes(&e) {
        let body = RawBody::text(&format!("{{\"name\": \"{pad}\", \"reason\": \"{pad}\"}}"));
        cases.push(case(who, m, path, body, 413, "payload_too_large"));
    }
    // Even a body that is not JSON at all is refused by size first.
    cases.push(case(
        Who::Ci,
        Method::POST,
        "/v1/sessions",
        RawBody::text(&pad),
        413,
        "payload_too_large",
    ));
    for path in ["/oauth2/introspect", "/oauth2/revoke"] {
        cases.push(case(
            Who::Rs,
            Method::POST,
            path,
            form(&format!("token={pad}")),
            413,
            "invalid_request",
        ));
    }
    e.run(&cases).await;
}

#[tokio::test]
async fn missing_or_wrong_keys_are_401_everywhere() {
    let e = Env::new().await;
    let mut cases = Vec::new();
    let whos = [
        Who::Nobody,
        Who::Unknown,
        Who::Garbage("Bearer"),
        Who::Garbage("Bearer "),
        Who::Garbage("Bearer not-a-key"),
        Who::Garbage("Bearer stint_"),
        Who::Garbage("Basic Zm9vOmJhcg=="),
        Who::Garbage("stint_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        Who::AdminBasic,
    ];
    for (m, path, body) in all_routes(&e) {
        for who in whos {
            let code = if path.starts_with("/oauth2/") {
                "invalid_client"
            } else {
                "unauthenticated"
            };
            cases.push(case(who, m.clone(), path.clone(), body.clone(), 401, code));
        }
    }
    e.run(&cases).await;
}

#[tokio::test]
async fn keys_of_offboarded_or_rotated_principals_are_401() {
    let e = Env::new().await;
    let (bob_id, _) = e.w.admin.principal("temp", "service", &[]).await;
    let old_rs = e.w.rs.key.clone();
    let (st, v) =
        e.w.admin
            .post(&format!("/v1/principals/{}/rotate-key", e.alice_id), json!({}))
            .await;
    assert_eq!(st.as_u16(), 200, "{v}");
    let (st, _) = e.w.admin.delete(&format!("/v1/principals/{bob_id}")).await;
    assert_eq!(st.as_u16(), 200);
    // alice's old key no longer works anywhere.
    let before = e.snapshot().await;
    for (m, path, body) in all_routes(&e) {
        let r = harness::raw(
            &e.w.server.addr,
            m.clone(),
            &path,
            Auth::Bearer(&e.w.alice.key),
            body,
        )
        .await;
        assert_eq!(r.status.as_u16(), 401, "{m} {path}: {}", r.text);
        assert!(!r.text.contains(&e.w.alice.key));
    }
    assert_eq!(before, e.snapshot().await);
    let r = harness::raw(
        &e.w.server.addr,
        Method::GET,
        "/v1/targets",
        Auth::Bearer(&old_rs),
        RawBody::Empty,
    )
    .await;
    assert_eq!(r.status.as_u16(), 200, "rotating alice must not touch others");
}

#[tokio::test]
async fn non_admins_are_forbidden_on_admin_routes() {
    let e = Env::new().await;
    let al = e.alice_id.clone();
    let ci = e.ci_id().to_owned();
    let routes: Vec<(Method, String, RawBody)> = vec![
        (Method::GET, "/v1/principals".into(), RawBody::Empty),
        (
            Method::POST,
            "/v1/principals".into(),
            j(json!({"name": "sneaky", "kind": "admin"})),
        ),
        (Method::DELETE, format!("/v1/principals/{al}"), RawBody::Empty),
        (
            Method::POST,
            format!("/v1/principals/{al}/rotate-key"),
            RawBody::Empty,
        ),
        (
            Method::POST,
            format!("/v1/principals/{ci}/rotate-key"),
            RawBody::Empty,
        ),
        (
            Method::POST,
            "/v1/targets".into(),
            j(json!({"name": "sneaky", "kind": "jwt", "max_ttl_s": 60})),
        ),
        (
            Method::PATCH,
            "/v1/targets/api".into(),
            j(json!({"approvals_required": 0})),
        ),
        (
            Method::PATCH,
            "/v1/targets/gated".into(),
            j(json!({"approvals_required": 0})),
        ),
        (Method::DELETE, "/v1/targets/api".into(), RawBody::Empty),
        (Method::GET, "/v1/audit".into(), RawBody::Empty),
        (Method::GET, "/v1/audit/verify".into(), RawBody::Empty),
        (Method::POST, "/v1/keys/rotate".into(), RawBody::Empty),
        (Method::POST, "/v1/reconcile".into(), j(json!({}))),
        (Method::GET, "/v1/trusts".into(), RawBody::Empty),
        (Method::POST, "/v1/trusts".into(), j(trust_body())),
        (Method::GET, "/v1/hook-sources".into(), RawBody::Empty),
        (Method::POST, "/v1/hook-sources".into(), j(hook_source_body())),
        (Method::PUT, "/v1/policies".into(), j(json!({"source": ""}))),
        (Method::GET, "/v1/policies".into(), RawBody::Empty),
        (
            Method::POST,
            "/v1/policies/check".into(),
            j(json!({"principal": "ci", "target": "api", "ttl_s": 60})),
        ),
        (Method::GET, "/v1/policies/lint".into(), RawBody::Empty),
    ];
    let mut cases = Vec::new();
    for who in [Who::Ci, Who::Alice, Who::Rs] {
        for (m, path, body) in &routes {
            cases.push(case(who, m.clone(), path.clone(), body.clone(), 403, "forbidden"));
        }
        // Introspection is for resource servers and admins only.
        if who != Who::Rs {
            cases.push(case(
                who,
                Method::POST,
                "/oauth2/introspect",
                form(&format!("token={}", e.token)),
                403,
                "unauthorized_client",
            ));
        }
    }
    // Revoking someone else's token.
    cases.push(case(
        Who::Alice,
        Method::POST,
        "/oauth2/revoke",
        form(&format!("token={}", e.token)),
        403,
        "unauthorized_client",
    ));
    // Another principal's record is invisible rather than forbidden.
    cases.push(case(
        Who::Ci,
        Method::GET,
        format!("/v1/principals/{al}"),
        RawBody::Empty,
        404,
        "not_found",
    ));
    e.run(&cases).await;
}

/// Ids that are malformed or unknown; all must be 404 `not_found`.
fn bad_ids() -> Vec<String> {
    let zeros = "0".repeat(32);
    vec![
        "nope".into(),
        "ses_123".into(),
        format!("ses_{zeros}"),
        format!("SES_{zeros}"),
        format!("ses_{}", "A".repeat(32)),
        format!("ses_{zeros}0"),
        format!("prn_{zeros}"),
        format!("crd_{zeros}"),
        "%20".into(),
        "a%2Fb".into(),
        "%00".into(),
        "%F0%9F%92%A9".into(),
        "'%20OR%201=1--".into(),
        "x".repeat(2000),
    ]
}

fn id_routes(id: &str) -> Vec<(Who, Method, String, RawBody)> {
    vec![
        (
            Who::Admin,
            Method::GET,
            format!("/v1/sessions/{id}"),
            RawBody::Empty,
        ),
        (
            Who::Admin,
            Method::POST,
            format!("/v1/sessions/{id}/approve"),
            j(json!({})),
        ),
        (
            Who::Admin,
            Method::POST,
            format!("/v1/sessions/{id}/deny"),
            j(json!({"reason": "x"})),
        ),
        (
            Who::Admin,
            Method::POST,
            format!("/v1/sessions/{id}/cancel"),
            RawBody::Empty,
        ),
        (
            Who::Admin,
            Method::POST,
            format!("/v1/sessions/{id}/end"),
            j(json!({})),
        ),
        (
            Who::Ci,
            Method::POST,
            format!("/v1/sessions/{id}/heartbeat"),
            RawBody::Empty,
        ),
        (
            Who::Ci,
            Method::POST,
            format!("/v1/sessions/{id}/credentials"),
            j(json!({})),
        ),
        (
            Who::Admin,
            Method::GET,
            format!("/v1/sessions/{id}/evidence"),
            RawBody::Empty,
        ),
        (
            Who::Admin,
            Method::GET,
            format!("/v1/principals/{id}"),
            RawBody::Empty,
        ),
        (
            Who::Admin,
            Method::DELETE,
            format!("/v1/principals/{id}"),
            RawBody::Empty,
        ),
        (
            Who::Admin,
            Method::POST,
            format!("/v1/principals/{id}/rotate-key"),
            RawBody::Empty,
        ),
        (
            Who::Admin,
            Method::GET,
            format!("/v1/targets/{id}"),
            RawBody::Empty,
        ),
        (
            Who::Admin,
            Method::PATCH,
            format!("/v1/targets/{id}"),
            j(json!({"approvals_required": 0})),
        ),
        (
            Who::Admin,
            Method::DELETE,
            format!("/v1/targets/{id}"),
            RawBody::Empty,
        ),
    ]
}

#[tokio::test]
async fn malformed_and_unknown_ids_are_404() {
    let e = Env::new().await;
    let mut cases = Vec::new();
    for id in bad_ids() {
        for (who, m, path, body) in id_routes(&id) {
            cases.push(case(who, m, path, body, 404, "not_found"));
        }
    }
    // Ids that exist, on the wrong kind of route, and sessions a caller may not see.
    let (a, ci) = (e.active.clone(), e.ci_id().to_owned());
    cases.push(case(
        Who::Admin,
        Method::GET,
        format!("/v1/principals/{a}"),
        RawBody::Empty,
        404,
        "not_found",
    ));
    cases.push(case(
        Who::Admin,
        Method::GET,
        format!("/v1/sessions/{ci}"),
        RawBody::Empty,
        404,
        "not_found",
    ));
    cases.push(case(
        Who::Admin,
        Method::GET,
        "/v1/targets/API",
        RawBody::Empty,
        404,
        "not_found",
    ));
    for (m, path, body) in [
        (Method::GET, format!("/v1/sessions/{a}"), RawBody::Empty),
        (Method::GET, format!("/v1/sessions/{a}/evidence"), RawBody::Empty),
        (Method::POST, format!("/v1/sessions/{a}/end"), j(json!({}))),
        (Method::POST, format!("/v1/sessions/{a}/approve"), j(json!({}))),
        (
            Method::POST,
            format!("/v1/sessions/{a}/credentials"),
            j(json!({})),
        ),
    ] {
        cases.push(case(Who::Rs, m, path, body, 404, "not_found"));
    }
    // Unknown routes are 404 problems too.
    for path in [
        "/v1/nope",
        "/v1/sessions/x/y/z",
        "/oauth2/token2",
        "/",
        "/v2/sessions",
    ] {
        cases.push(case(
            Who::Admin,
            Method::GET,
            path,
            RawBody::Empty,
            404,
            "not_found",
        ));
    }
    e.run(&cases).await;
}

/// `%FF` is not UTF-8: the id cannot be any id, so the contract's answer is 404 problem+json.
#[tokio::test]
async fn ids_that_are_not_utf8_are_404_problems() {
    let e = Env::new().await;
    let mut cases = Vec::new();
    for id in ["%FF", "ses_%FF%FE"] {
        for (who, m, path, body) in id_routes(id) {
            cases.push(case(who, m, path, body, 404, "not_found"));
        }
    }
    e.run(&cases).await;
}

#[tokio::test]
async fn bad_query_parameters_are_422() {
    let e = Env::new().await;
    let mut cases = Vec::new();
    let q = [
        (
            "/v1/principals",
            vec![
                "limit=0",
                "limit=1001",
                "limit=abc",
                "limit=-1",
                "bogus=1",
                "limit=99999999999",
            ],
        ),
        ("/v1/targets", vec!["limit=0", "limit=x", "bogus=1"]),
        (
            "/v1/sessions",
            vec![
                "state=bogus",
                "state=ACTIVE",
                "limit=0",
                "limit=x",
                "bogus=1",
                "limit=1001",
            ],
        ),
        (
            "/v1/audit",
            vec![
                "after_seq=x",
                "after_seq=99999999999999999999",
                "limit=0",
                "limit=5000",
                "bogus=1",
            ],
        ),
    ];
    for (path, qs) in q {
        for qs in qs {
            cases.push(case(
                Who::Admin,
                Method::GET,
                format!("{path}?{qs}"),
                RawBody::Empty,
                422,
                "invalid_request",
            ));
        }
    }
    // Non-admins get the same validation on what they may list.
    cases.push(case(
        Who::Ci,
        Method::GET,
        "/v1/sessions?state=bogus",
        RawBody::Empty,
        422,
        "invalid_request",
    ));
    e.run(&cases).await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() {
    let e = Env::new().await;
    let mut cases = Vec::new();
    for (who, m, path) in json_routes(&e) {
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/xml",
        ] {
            cases.push(case(
                who,
                m.clone(),
                path.clone(),
                RawBody::Typed(ct.into(), b"{\"reason\": \"x\"}".to_vec()),
                415,
                "unsupported_media_type",
            ));
        }
    }
    e.run(&cases).await;
}

#[tokio::test]
async fn oauth_endpoints_answer_rfc6749_errors() {
    let e = Env::new().await;
    let mut cases = Vec::new();
    for path in ["/oauth2/introspect", "/oauth2/revoke"] {
        for body in [
            RawBody::Empty,
            form(""),
            form("tok=abc"),
            form("token_type_hint=access_token"),
            RawBody::json(&json!({"token": e.token})),
            RawBody::Typed("text/plain".into(), format!("token={}", e.token).into_bytes()),
        ] {
            cases.push(case(Who::Rs, Method::POST, path, body, 400, "invalid_request"));
        }
        cases.push(case(
            Who::Nobody,
            Method::POST,
            path,
            form("token=x"),
            401,
            "invalid_client",
        ));
        cases.push(case(
            Who::Unknown,
            Method::POST,
            path,
            form("token=x"),
            401,
            "invalid_client",
        ));
    }
    cases.push(case(
        Who::Ci,
        Method::POST,
        "/oauth2/introspect",
        form("token=x"),
        403,
        "unauthorized_client",
    ));
    // Wrong methods are plain 405 problems.
    for path in ["/oauth2/introspect", "/oauth2/revoke"] {
        cases.push(case(
            Who::Rs,
            Method::GET,
            path,
            RawBody::Empty,
            405,
            "method_not_allowed",
        ));
    }
    e.run(&cases).await;
    // Well-formed requests for unknown tokens are fine (RFC 7009 §2.2, RFC 7662 §2.2).
    let (st, v) =
        e.w.rs
            .form("/oauth2/revoke", &[("token", "x".repeat(9000).as_str())])
            .await;
    assert_eq!(st.as_u16(), 200, "{v}");
    assert_eq!(
        e.w.rs.introspect(&"x".repeat(9000)).await,
        json!({"active": false})
    );
}

#[tokio::test]
async fn wrong_methods_are_405_problems() {
    let e = Env::new().await;
    let a = e.active.clone();
    let cases = vec![
        case(
            Who::Admin,
            Method::PUT,
            "/v1/sessions",
            j(json!({})),
            405,
            "method_not_allowed",
        ),
        case(
            Who::Admin,
            Method::DELETE,
            format!("/v1/sessions/{a}"),
            RawBody::Empty,
            405,
            "method_not_allowed",
        ),
        case(
            Who::Admin,
            Method::GET,
            format!("/v1/sessions/{a}/approve"),
            RawBody::Empty,
            405,
            "method_not_allowed",
        ),
        case(
            Who::Admin,
            Method::PUT,
            "/v1/principals",
            j(json!({})),
            405,
            "method_not_allowed",
        ),
        case(
            Who::Admin,
            Method::GET,
            "/v1/keys/rotate",
            RawBody::Empty,
            405,
            "method_not_allowed",
        ),
        case(
            Who::Admin,
            Method::POST,
            "/v1/audit",
            j(json!({})),
            405,
            "method_not_allowed",
        ),
    ];
    e.run(&cases).await;
}

/// The key in `Authorization` never comes back, whatever went wrong.
#[tokio::test]
async fn error_detail_never_contains_the_submitted_api_key() {
    let e = Env::new().await;
    let before = e.snapshot().await;
    let wrong = [
        e.unknown_key.clone(),
        format!("{}x", e.w.ci.key),
        e.w.ci.key[..20].to_owned(),
        format!("{} extra", e.w.rs.key),
    ];
    for (m, path, body) in all_routes(&e) {
        for key in &wrong {
            let r = harness::raw(
                &e.w.server.addr,
                m.clone(),
                &path,
                Auth::Bearer(key),
                body.clone(),
            )
            .await;
            assert_eq!(r.status.as_u16(), 401, "{m} {path}: {}", r.text);
            assert!(
                !r.text.contains(key.as_str()),
                "{m} {path} echoes the key: {}",
                r.text
            );
            for (name, v) in r.headers.iter() {
                assert!(
                    !v.to_str().unwrap_or_default().contains(key.as_str()),
                    "header {name} echoes the key"
                );
            }
        }
    }
    // Valid keys with bad input: the answer never carries the caller's key either.
    for (who, m, path) in json_routes(&e) {
        let c = case(who, m, path, RawBody::text("{"), 400, "malformed_json");
        let r = e.send(&c).await;
        for k in e.keys() {
            assert!(!r.text.contains(&k), "{} echoes a key: {}", c.path, r.text);
        }
    }
    assert_eq!(before, e.snapshot().await);
}

/// Invariant 6: secrets never appear in error messages. A client that pastes its API key into the
/// wrong field must not get it back in an error `detail` (where proxies and client logs keep it).
#[tokio::test]
async fn error_detail_never_echoes_a_key_put_in_a_field() {
    let e = Env::new().await;
    let key = e.w.ci.key.clone();
    let secret = &key["stint_".len()..];
    let probes = vec![
        (
            Who::Ci,
            Method::POST,
            "/v1/sessions".to_owned(),
            j(json!({"target": key, "reason": "x", "ttl_s": 60})),
        ),
        (
            Who::Ci,
            Method::POST,
            "/v1/sessions".to_owned(),
            j(json!({"target": "api", "reason": "x", "ttl_s": key})),
        ),
        (
            Who::Ci,
            Method::POST,
            "/v1/sessions".to_owned(),
            j(json!({"target": "api", "reason": "x", "ttl_s": 60, "binding": {"kind": key}})),
        ),
        (
            Who::Admin,
            Method::POST,
            "/v1/principals".to_owned(),
            j(json!({"name": "x1", "kind": key})),
        ),
        (
            Who::Ci,
            Method::GET,
            format!("/v1/sessions?state={key}"),
            RawBody::Empty,
        ),
        (
            Who::Ci,
            Method::GET,
            format!("/v1/sessions?limit={key}"),
            RawBody::Empty,
        ),
    ];
    let mut leaks = Vec::new();
    for (who, m, path, body) in probes {
        let c = case(who, m, path, body, 0, "");
        let r = e.send(&c).await;
        assert!(r.status.is_client_error(), "{}: {}", c.path, r.text);
        // Any 16 characters of the key's random part count as a leak.
        let leaked = (0..=secret.len() - 16).any(|i| r.text.contains(&secret[i..i + 16]));
        if leaked {
            leaks.push(format!(
                "{} {} {}: {}",
                c.method,
                short(&c.path),
                body_label(&c.body),
                r.text
            ));
        }
    }
    assert!(leaks.is_empty(), "the key comes back in:\n{}", leaks.join("\n"));
}

/// Requests reject unknown fields (stint-proto); the credentials body is no exception, and a body
/// that is not an object is a wrong type.
#[tokio::test]
async fn credentials_body_rejects_unknown_fields_and_wrong_types() {
    let e = Env::new().await;
    let a = e.active.clone();
    let mut cases = Vec::new();
    for b in [
        json!({"bogus": 1}),
        json!({"ttl_s": 9999}),
        json!([]),
        json!(5),
        json!("x"),
        json!(null),
    ] {
        cases.push(case(
            Who::Ci,
            Method::POST,
            format!("/v1/sessions/{a}/credentials"),
            j(b),
            422,
            "invalid_request",
        ));
    }
    e.run(&cases).await;
}

/// Unknown fields nested inside a request object are unknown fields too.
#[tokio::test]
async fn nested_unknown_fields_are_422() {
    let e = Env::new().await;
    let body = json!({"target": "api", "reason": "x", "ttl_s": 60, "binding": {"kind": "ticket", "ref": "T-1", "colour": "red"}});
    e.run(&[case(
        Who::Ci,
        Method::POST,
        "/v1/sessions",
        j(body),
        422,
        "invalid_request",
    )])
    .await;
}
