//! The main path, over HTTP.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::World;

#[tokio::test]
async fn approved_session_token_is_active_until_the_session_ends() {
    let w = World::new(1).await;
    let s = w.request(json!({})).await;
    assert_eq!(s["state"], "requested");
    let sid = s["id"].as_str().unwrap();
    let (st, v) = w
        .alice
        .post(&format!("/v1/sessions/{sid}/approve"), json!({"comment": "ok"}))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "active");
    let token = w.token(sid).await;
    let v = w.rs.introspect(&token).await;
    assert_eq!(v["active"], true);
    assert_eq!(v["sid"], sid);
    let (st, v) = w.ci.post(&format!("/v1/sessions/{sid}/end"), json!({})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["end_reason"], "completed");
    assert_eq!(w.rs.introspect(&token).await, json!({"active": false}));
}

#[tokio::test]
async fn openapi_declares_every_parameter_where_it_is_sent_and_problem_bodies() {
    let w = World::new(0).await;
    let doc: serde_json::Value = reqwest::get(format!("{}/openapi.json", w.server.addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            for p in &params {
                let name = p["name"].as_str().unwrap();
                let in_path = path.contains(&format!("{{{name}}}"));
                assert_eq!(
                    p["in"] == "path",
                    in_path,
                    "{method} {path}: parameter {name} is in {}",
                    p["in"]
                );
            }
            for seg in path.split('/').filter(|s| s.starts_with('{')) {
                let name = seg.trim_matches(|c| c == '{' || c == '}');
                assert!(
                    params.iter().any(|p| p["name"] == name),
                    "{method} {path}: {name} undeclared"
                );
            }
            if !path.starts_with("/oauth2/") {
                for (status, r) in op["responses"].as_object().unwrap() {
                    if status.as_str() >= "400" && r.get("content").is_some() {
                        assert!(
                            r["content"].get("application/problem+json").is_some(),
                            "{method} {path} {status}"
                        );
                    }
                }
            }
        }
    }
}
