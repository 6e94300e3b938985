//! The `ssh` provider against a real `sshd` (started here on a loopback port with the target's CA in
//! `TrustedUserCAKeys` and stint's KRL in `RevokedKeys`) and the real `ssh-keygen` as the oracle.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Api, Server, bin, eventually};
use crate::sshd::{Sshd, keygen_ed25519, sshd_bin};

struct Setup {
    server: Server,
    admin: Api,
    vendor: Api,
    vendor_key: String,
    sshd: Sshd,
    krl: std::path::PathBuf,
    dir: tempfile::TempDir,
}

async fn setup(options: Value) -> Option<Setup> {
    let sshd_path = sshd_bin()?;
    let dir = tempfile::tempdir().expect("tempdir");
    let krl = dir.path().join("revoked.krl");
    let server = Server::start().await;
    let admin = server.admin();
    let (st, t) = admin
        .post(
            "/v1/targets",
            json!({"name": "plc-gw", "kind": "ssh", "max_ttl_s": 3600, "requester_groups": ["vendors"],
                   "config": {"principals": ["root"], "krl_path": krl.to_str().expect("utf8"), "options": options}}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{t}");
    let ca = t["ca_public_key"]
        .as_str()
        .expect("ca_public_key shown")
        .to_owned();
    assert!(ca.starts_with("ssh-ed25519 "), "{ca}");
    assert!(
        !t.to_string().contains("PRIVATE KEY"),
        "the CA key is never shown"
    );
    assert!(
        krl.exists(),
        "an (empty) KRL is written when the target is created"
    );
    let sshd = Sshd::start(&sshd_path, &ca, &krl);
    let (_, key) = admin.principal("vendor", "vendor", &["vendors"]).await;
    Some(Setup {
        vendor: server.as_key(&key),
        vendor_key: key,
        admin,
        server,
        sshd,
        krl,
        dir,
    })
}

async fn session(api: &Api, ttl_s: u64) -> String {
    let (st, v) = api
        .post(
            "/v1/sessions",
            json!({"target": "plc-gw", "reason": "firmware update MT-9", "ttl_s": ttl_s}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    v["id"].as_str().expect("id").to_owned()
}

/// Issues a certificate for a fresh key; returns (private key path, cert path, answer).
async fn certify(s: &Setup, sid: &str, name: &str) -> (std::path::PathBuf, std::path::PathBuf, Value) {
    let (key, public) = keygen_ed25519(s.dir.path(), name);
    let (st, v) = s
        .vendor
        .post(
            &format!("/v1/sessions/{sid}/credentials"),
            json!({"public_key": public}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let cert = s.dir.path().join(format!("{name}-cert.pub"));
    std::fs::write(
        &cert,
        format!("{}\n", v["certificate"].as_str().expect("certificate")),
    )
    .expect("write cert");
    (key, cert, v)
}

fn keygen_query(args: &[&str], file: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .args(args)
        .arg(file)
        .output()
        .expect("ssh-keygen");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn certificate_logs_in_while_active_and_is_refused_after_early_end() {
    let Some(s) = setup(json!({})).await else { return };
    let sid = session(&s.vendor, 600).await;
    let (key, cert, v) = certify(&s, &sid, "id1").await;
    assert_eq!(v["kind"], "ssh");
    assert_eq!(v["principals"], json!(["root"]));

    // ssh-keygen verifies the CA signature and shows what we put in.
    let shown = keygen_query(&["-L", "-f"], &cert);
    assert!(shown.contains(&format!("Key ID: \"{sid}\"")), "{shown}");
    assert!(
        shown.contains(&format!("Serial: {}", v["serial"].as_str().expect("serial"))),
        "{shown}"
    );
    assert!(shown.contains("root"), "{shown}");
    assert!(shown.contains("permit-pty"), "{shown}");

    assert!(
        s.sshd.try_login("root", &key, &cert),
        "login works while the session is active"
    );
    let before = s.dir.path().join("before.krl");
    std::fs::copy(&s.krl, &before).expect("keep the KRL from before the end");

    let (st, e) = s.vendor.post(&format!("/v1/sessions/{sid}/end"), json!({})).await;
    assert_eq!(st, StatusCode::OK, "{e}");
    assert!(
        eventually(Duration::from_secs(10), || async {
            let (_, v) = s.vendor.get(&format!("/v1/sessions/{sid}")).await;
            v["credentials"][0]["revocation"] == "confirmed"
        })
        .await
    );
    // The KRL file and the served KRL both revoke the serial.
    let q = Command::new("ssh-keygen")
        .args(["-Q", "-f"])
        .arg(&s.krl)
        .arg(&cert)
        .output()
        .expect("ssh-keygen -Q");
    assert!(String::from_utf8_lossy(&q.stdout).contains("REVOKED"), "{q:?}");
    let served = reqwest::Client::new()
        .get(format!("{}/v1/targets/plc-gw/krl", s.server.addr))
        .bearer_auth(&s.vendor_key)
        .send()
        .await
        .expect("krl");
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(
        served.headers().get("content-type").and_then(|h| h.to_str().ok()),
        Some("application/octet-stream")
    );
    let served_path = s.dir.path().join("served.krl");
    std::fs::write(&served_path, served.bytes().await.expect("bytes")).expect("write");
    let q = Command::new("ssh-keygen")
        .args(["-Q", "-f"])
        .arg(&served_path)
        .arg(&cert)
        .output()
        .expect("ssh-keygen -Q");
    assert!(String::from_utf8_lossy(&q.stdout).contains("REVOKED"), "{q:?}");

    assert!(
        !s.sshd.try_login("root", &key, &cert),
        "refused after early end (KRL)"
    );
    let (_, ev) = s.vendor.get(&format!("/v1/sessions/{sid}/evidence")).await;
    assert!(ev.to_string().contains("credential.revoked"));

    // Someone puts an old KRL back on the host: the certificate works again. Reconcile finds it.
    std::fs::copy(&before, &s.krl).expect("restore old krl");
    assert!(
        s.sshd.try_login("root", &key, &cert),
        "the old KRL lets it in: the KRL is what stops it"
    );
    let (st, r) = s.admin.post("/v1/reconcile", json!({})).await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(
        r["zombies"],
        json!([{"target": "plc-gw", "credential": v["serial"], "action": "added_to_krl"}]),
        "{r}"
    );
    assert!(
        !s.sshd.try_login("root", &key, &cert),
        "refused again after reconcile"
    );
}

#[tokio::test]
async fn expired_certificate_is_refused_and_validity_never_outlives_the_session() {
    let Some(s) = setup(json!({})).await else { return };
    let sid = session(&s.vendor, 2).await;
    let (key, cert, v) = certify(&s, &sid, "short").await;
    let (_, sess) = s.vendor.get(&format!("/v1/sessions/{sid}")).await;
    assert!(
        crate::harness::unix(&v["valid_before"]) <= crate::harness::unix(&sess["expires_at"]),
        "certificate {v} outlives session {sess}"
    );
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert!(
        !s.sshd.try_login("root", &key, &cert),
        "an expired certificate is refused"
    );
}

#[tokio::test]
async fn ssh_credentials_refuse_bad_public_keys_and_keep_options() {
    let Some(s) = setup(json!({"force-command": "/bin/true", "source-address": "127.0.0.1/32"})).await else {
        return;
    };
    let sid = session(&s.vendor, 600).await;
    for bad in [
        json!({}),
        json!({"public_key": "not a key"}),
        json!({"public_key": 7}),
        json!({"public_key": "x".repeat(20_000)}),
    ] {
        let (st, v) = s
            .vendor
            .post(&format!("/v1/sessions/{sid}/credentials"), bad.clone())
            .await;
        assert!(
            st == StatusCode::UNPROCESSABLE_ENTITY || st == StatusCode::BAD_REQUEST,
            "{bad}: {st} {v}"
        );
    }
    let (_, sess) = s.vendor.get(&format!("/v1/sessions/{sid}")).await;
    assert_eq!(sess["credentials"], json!([]), "nothing was issued");
    let (_, cert, _) = certify(&s, &sid, "opt").await;
    let shown = keygen_query(&["-L", "-f"], &cert);
    assert!(shown.contains("force-command /bin/true"), "{shown}");
    assert!(shown.contains("source-address 127.0.0.1/32"), "{shown}");
    // An ssh target's config is checked too.
    let (st, v) = s
        .admin
        .post(
            "/v1/targets",
            json!({"name": "bad-ssh", "kind": "ssh", "max_ttl_s": 60, "config": {"principals": []}}),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
}

#[tokio::test]
async fn stint_ssh_wraps_the_whole_flow_and_ends_the_session_when_ssh_exits() {
    let Some(s) = setup(json!({})).await else { return };
    let out = Command::new(bin())
        .args([
            "ssh",
            "--target",
            "plc-gw",
            "--ttl",
            "5m",
            "--reason",
            "update MT-10",
            "--",
        ])
        .args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args([
            "-p",
            &s.sshd.port.to_string(),
            "root@127.0.0.1",
            "echo",
            "hello-from-plc",
        ])
        .env("STINT_ADDR", &s.server.addr)
        .env("STINT_TOKEN", &s.vendor_key)
        .output()
        .expect("stint ssh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout {stdout} stderr {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("hello-from-plc"), "{stdout}");
    let (_, list) = s.vendor.get("/v1/sessions?target=plc-gw").await;
    let sess = &list["items"][0];
    assert_eq!(sess["state"], "ended", "{sess}");
    assert_eq!(sess["end_reason"], "completed");
    assert_eq!(sess["credentials"].as_array().map(Vec::len), Some(1));
}
