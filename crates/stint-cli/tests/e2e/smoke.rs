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
