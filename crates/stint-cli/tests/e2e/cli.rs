//! The CLI: the main path through the `stint` commands, and `stint exec`.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Api, World, bin, eventually};

fn stint(addr: &str, key: &str, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("STINT_ADDR", addr)
        .env("STINT_TOKEN", key)
        // Must never reach a child of `stint exec`.
        .env("STINT_BOOTSTRAP_ADMIN_KEY", "stint_must_not_leak")
        .stdin(Stdio::null())
        .output()
        .expect("run stint")
}

fn ok_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "stint failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

/// Starts `stint exec` on target `api` as `ci`; `own_group` gives it a process group of its own, as a
/// terminal would, so a Ctrl-C sent to the group reaches stint and the child.
fn spawn_exec(w: &World, reason: &str, command: &[&str], own_group: bool) -> std::process::Child {
    let mut cmd = if own_group {
        let mut c = Command::new("setsid");
        c.arg(bin());
        c
    } else {
        Command::new(bin())
    };
    cmd.args([
        "exec", "--target", "api", "--ttl", "10m", "--reason", reason, "--",
    ])
    .args(command)
    .env("STINT_ADDR", &w.server.addr)
    .env("STINT_TOKEN", &w.ci.key)
    .stdin(Stdio::null())
    .spawn()
    .unwrap()
}

/// Waits (at most 10 s) for a requested session to show up for `approver`; returns its id.
async fn first_requested(approver: &Api) -> String {
    for _ in 0..500 {
        let (_, v) = approver.get("/v1/sessions?state=requested").await;
        if let Some(id) = v["items"]
            .as_array()
            .and_then(|a| a.first())
            .and_then(|s| s["id"].as_str())
        {
            return id.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no requested session appeared");
}

async fn session(api: &Api, sid: &str) -> Value {
    api.get(&format!("/v1/sessions/{sid}")).await.1
}

#[tokio::test]
async fn cli_main_path_request_approve_creds_end_verify() {
    let w = World::new(1).await;
    let addr = w.server.addr.clone();
    let admin = w.server.admin.clone();
    let p = ok_json(&stint(
        &addr,
        &admin,
        &[
            "--json",
            "principal",
            "create",
            "--name",
            "deployer",
            "--kind",
            "agent",
            "--group",
            "deployers",
        ],
    ));
    let key = p["api_key"].as_str().unwrap().to_owned();
    let t = ok_json(&stint(
        &addr,
        &admin,
        &[
            "--json",
            "target",
            "create",
            "--name",
            "billing",
            "--max-ttl",
            "1h",
            "--token-ttl",
            "5m",
            "--requester-group",
            "deployers",
            "--approver-group",
            "ops",
            "--approvals",
            "1",
        ],
    ));
    assert_eq!(t["token_ttl_s"], 300);
    let s = ok_json(&stint(
        &addr,
        &key,
        &[
            "--json",
            "request",
            "--target",
            "billing",
            "--ttl",
            "15m",
            "--reason",
            "rotate certs",
            "--binding",
            "ticket:OT-4711",
        ],
    ));
    let sid = s["id"].as_str().unwrap().to_owned();
    assert_eq!(s["state"], "requested");
    assert_eq!(s["binding"], json!({"kind": "ticket", "ref": "OT-4711"}));

    let own = stint(&addr, &key, &["approve", &sid]);
    assert!(!own.status.success());
    assert!(String::from_utf8_lossy(&own.stderr).contains("self_approval"));

    let approved = ok_json(&stint(
        &addr,
        &w.alice.key,
        &["--json", "approve", &sid, "--comment", "go"],
    ));
    assert_eq!(approved["state"], "active");
    let out = stint(&addr, &key, &["creds", &sid, "--token-only"]);
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(w.rs.introspect(&token).await["active"], true);

    let list = ok_json(&stint(&addr, &key, &["--json", "sessions"]));
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == sid.as_str())
    );
    let table = stint(&addr, &key, &["sessions"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains(&sid));

    let ended = ok_json(&stint(&addr, &key, &["--json", "end", &sid]));
    assert_eq!(ended["end_reason"], "completed");
    assert_eq!(w.rs.introspect(&token).await, json!({"active": false}));

    let verify = stint(&addr, &admin, &["audit", "verify"]);
    assert!(verify.status.success());
    assert!(String::from_utf8_lossy(&verify.stdout).contains("audit chain OK"));
}

#[tokio::test]
async fn exec_ends_the_session_when_the_child_exits_and_returns_its_code() {
    let w = World::new(0).await;
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("seen");
    let script = format!(
        "test -n \"$STINT_ACCESS_TOKEN\" && test -z \"$STINT_TOKEN\" && test -z \"$STINT_BOOTSTRAP_ADMIN_KEY\" && test -s \"$STINT_ACCESS_TOKEN_FILE\" && \
         printf '%s %s' \"$STINT_SESSION_ID\" \"$STINT_ACCESS_TOKEN\" > {}; exit 3",
        out_file.display()
    );
    let out = stint(
        &w.server.addr,
        &w.ci.key,
        &[
            "exec", "--target", "api", "--ttl", "10m", "--reason", "one job", "--", "sh", "-c", &script,
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = std::fs::read_to_string(&out_file).expect("the child ran with its environment");
    let (sid, token) = seen.split_once(' ').unwrap();
    let s = session(&w.ci, sid).await;
    assert_eq!(s["state"], "ended");
    assert_eq!(s["end_reason"], "completed");
    assert_eq!(s["binding"]["kind"], "process");
    assert_eq!(w.rs.introspect(token).await, json!({"active": false}));
}

#[tokio::test]
async fn exec_ends_the_session_when_the_child_is_killed() {
    let w = World::new(0).await;
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("pid");
    let script = format!(
        "echo \"$$ $STINT_SESSION_ID\" > {}; exec sleep 30",
        out_file.display()
    );
    let mut child = spawn_exec(&w, "killed job", &["sh", "-c", &script], false);
    let path = out_file.clone();
    assert!(
        eventually(Duration::from_secs(10), || {
            let p = path.clone();
            async move { std::fs::read_to_string(&p).is_ok_and(|s| s.trim().contains(' ')) }
        })
        .await
    );
    let seen = std::fs::read_to_string(&out_file).unwrap();
    let (pid, sid) = seen.trim().split_once(' ').unwrap();
    assert_eq!(session(&w.ci, sid).await["state"], "active");
    assert!(
        Command::new("kill")
            .args(["-KILL", pid])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + 9));
    let s = session(&w.ci, sid).await;
    assert_eq!(s["state"], "ended");
    assert_eq!(s["end_reason"], "completed");
}

#[tokio::test]
async fn exec_on_ctrl_c_stops_the_child_and_ends_the_session() {
    let w = World::new(0).await;
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("sid");
    let script = format!("echo \"$STINT_SESSION_ID\" > {}; sleep 30", out_file.display());
    let mut child = spawn_exec(&w, "interactive", &["sh", "-c", &script], true);
    let path = out_file.clone();
    assert!(
        eventually(Duration::from_secs(10), || {
            let p = path.clone();
            async move { std::fs::read_to_string(&p).is_ok_and(|s| s.trim().starts_with("ses_")) }
        })
        .await
    );
    let sid = std::fs::read_to_string(&out_file).unwrap().trim().to_owned();
    let group = format!("-{}", child.id());
    assert!(
        Command::new("kill")
            .args(["-INT", "--", &group])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let s = session(&w.ci, &sid).await;
    assert_eq!(s["state"], "ended");
}

#[tokio::test]
async fn exec_waits_for_approval_then_runs() {
    let w = World::new(1).await;
    let mut child = spawn_exec(&w, "needs approval", &["true"], false);
    let sid = first_requested(&w.alice).await;
    let (st, v) = w
        .alice
        .post(&format!("/v1/sessions/{sid}/approve"), json!({}))
        .await;
    assert_eq!(st, reqwest::StatusCode::OK, "{v}");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(session(&w.ci, &sid).await["state"], "ended");
}

#[tokio::test]
async fn exec_denied_request_exits_without_running_the_command() {
    let w = World::new(1).await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let mut child = spawn_exec(&w, "will be denied", &["touch", marker.to_str().unwrap()], false);
    let sid = first_requested(&w.alice).await;
    let (st, _) = w
        .alice
        .post(&format!("/v1/sessions/{sid}/deny"), json!({"reason": "not now"}))
        .await;
    assert_eq!(st, reqwest::StatusCode::OK);
    assert_eq!(child.wait().unwrap().code(), Some(77));
    assert!(!marker.exists());
}
