//! `stint ssh`: an SSH login whose certificate lives exactly as long as the connection.
//!
//! Requests a session, waits for approval, makes a throwaway Ed25519 key (`ssh-keygen`, in a private
//! temp dir: the private key never leaves this machine), gets the public key certified for the
//! session, runs `ssh` with that key and certificate, and ends the session as soon as `ssh` exits —
//! which puts the certificate's serial in the target's KRL. Returns ssh's exit code.

use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::{SshArgs, request_body};
use crate::client::{Client, parse_duration};
use crate::exec::{end_session, hostname, open_session, private_dir};

/// Runs `stint ssh`.
pub async fn run(c: Client, a: SshArgs) -> anyhow::Result<ExitCode> {
    let binding = a
        .session
        .binding
        .clone()
        .unwrap_or_else(|| format!("process:pid-{}@{}", std::process::id(), hostname()));
    let give_up = a
        .wait
        .as_deref()
        .map(parse_duration)
        .transpose()
        .context("--wait")?;
    let body = request_body(&a.session, Some(&binding), None, None, None)?;
    let id = match open_session(&c, body, give_up).await? {
        Ok(id) => id,
        Err(code) => return Ok(code),
    };
    let dir = private_dir("ssh", &id)?;
    let result = connect(&c, &id, &dir, &a).await;
    end_session(&c, &id).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn connect(c: &Client, id: &str, dir: &std::path::Path, a: &SshArgs) -> anyhow::Result<ExitCode> {
    let key = dir.join("id_ed25519");
    let status = tokio::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C"])
        .arg(format!("stint-{id}"))
        .arg("-f")
        .arg(&key)
        .stdin(std::process::Stdio::null())
        .status()
        .await
        .context("running ssh-keygen (install openssh-client)")?;
    anyhow::ensure!(status.success(), "ssh-keygen failed");
    let public = std::fs::read_to_string(key.with_extension("pub"))?;
    let cred = c
        .post(
            &format!("/v1/sessions/{id}/credentials"),
            json!({"public_key": public.trim()}),
        )
        .await?;
    let cert = cred["certificate"]
        .as_str()
        .context("the server returned no certificate (is the target of kind ssh?)")?;
    let cert_path = dir.join("id_ed25519-cert.pub");
    std::fs::write(&cert_path, format!("{cert}\n"))?;
    eprintln!(
        "stint: certificate for {} valid until {} (session {id})",
        cred["principals"],
        cred["valid_before"].as_str().unwrap_or("?")
    );
    let mut child = tokio::process::Command::new(&a.ssh)
        .arg("-i")
        .arg(&key)
        .arg("-o")
        .arg(format!("CertificateFile={}", cert_path.display()))
        .args(["-o", "IdentitiesOnly=yes"])
        .args(&a.args)
        .env_remove("STINT_TOKEN")
        .spawn()
        .with_context(|| format!("starting `{}`", a.ssh))?;
    // ssh handles the terminal's Ctrl-C itself; we outlive it so the session always ends.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let status = loop {
        tokio::select! {
            s = child.wait() => break s?,
            _ = sigint.recv() => {}
            _ = sigterm.recv() => { let _ = child.start_kill(); }
        }
    };
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
