//! `stint exec`: access that lives exactly as long as the process that needs it.
//!
//! Requests a session, waits for approval (spinner and countdown on stderr), starts the command with
//! `STINT_ACCESS_TOKEN`, `STINT_ACCESS_TOKEN_FILE` (kept fresh) and `STINT_SESSION_ID` (for a
//! `postgres` target: `PGHOST`, `PGPORT`, `PGDATABASE`, `PGUSER`, `PGPASSWORD` of the session's role) —
//! and never the caller's own API key — heartbeats while it runs, and ends the session the moment it exits, however
//! it exits. Returns the command's exit code (128 + signal when a signal killed it).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::{ExecArgs, request_body};
use crate::client::{Client, parse_duration};

/// Exit code when the session was denied, expired or canceled before it started.
const NOT_GRANTED: u8 = 77;
/// Exit code when interrupted while waiting for approval.
const INTERRUPTED: u8 = 130;

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn seconds_until(v: &Value) -> Option<i64> {
    let t = OffsetDateTime::parse(v.as_str()?, &Rfc3339).ok()?;
    #[expect(
        clippy::disallowed_methods,
        reason = "the CLI has no injected clock; this only drives a countdown"
    )]
    let now = OffsetDateTime::now_utc();
    Some((t - now).whole_seconds())
}

enum Waited {
    Active,
    NotGranted(String),
    Interrupted,
}

async fn wait_for_approval(
    c: &Client,
    id: &str,
    first: &Value,
    give_up_s: Option<u64>,
) -> anyhow::Result<Waited> {
    let mut state = first["state"].as_str().unwrap_or_default().to_owned();
    if state == "active" {
        return Ok(Waited::Active);
    }
    eprintln!("stint: session {id} needs approval: ask an approver to run `stint approve {id}`");
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let started = std::time::Instant::now();
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    let mut current = first.clone();
    let outcome = loop {
        let left = seconds_until(&current["approval_deadline"]).unwrap_or(0).max(0);
        let what = if state == "scheduled" {
            "scheduled start"
        } else {
            "approval"
        };
        let left = if state == "scheduled" {
            seconds_until(&current["not_before"]).unwrap_or(0).max(0)
        } else {
            left
        };
        bar.set_message(format!(
            "waiting for {what} of {id} ({:02}:{:02} left)",
            left / 60,
            left % 60
        ));
        tokio::select! {
            _ = poll.tick() => {}
            _ = sigint.recv() => break Waited::Interrupted,
            _ = sigterm.recv() => break Waited::Interrupted,
        }
        if give_up_s.is_some_and(|g| started.elapsed().as_secs() >= g) {
            break Waited::Interrupted;
        }
        current = c.get(&format!("/v1/sessions/{id}")).await?;
        state = current["state"].as_str().unwrap_or_default().to_owned();
        match state.as_str() {
            "active" => break Waited::Active,
            "requested" | "scheduled" => {}
            other => break Waited::NotGranted(other.to_owned()),
        }
    };
    bar.finish_and_clear();
    Ok(outcome)
}

fn write_token_file(path: &Path, token: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(token.as_bytes())?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    Ok(())
}

pub(crate) fn private_dir(what: &str, id: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("stint-{what}-{id}"));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

/// Requests a session and waits until it is active. `Ok(Err(code))` when it never became active:
/// the exit code to return (77 not granted, 130 interrupted; the request is withdrawn then).
pub(crate) async fn open_session(
    c: &Client,
    body: Value,
    give_up: Option<u64>,
) -> anyhow::Result<Result<String, ExitCode>> {
    let session = c.post("/v1/sessions", body).await?;
    let id = session["id"]
        .as_str()
        .context("the server returned no session id")?
        .to_owned();
    match wait_for_approval(c, &id, &session, give_up).await {
        Ok(Waited::Active) => Ok(Ok(id)),
        Ok(Waited::NotGranted(state)) => {
            eprintln!("stint: session {id} was not granted (it is {state})");
            Ok(Err(ExitCode::from(NOT_GRANTED)))
        }
        Ok(Waited::Interrupted) => {
            // `end` cancels a pending session and ends one that was approved a moment ago.
            end_session(c, &id).await;
            Ok(Err(ExitCode::from(INTERRUPTED)))
        }
        Err(e) => {
            end_session(c, &id).await;
            Err(e)
        }
    }
}

/// Runs `stint exec`.
pub async fn run(c: Client, a: ExecArgs) -> anyhow::Result<ExitCode> {
    let binding = a
        .session
        .binding
        .clone()
        .unwrap_or_else(|| format!("process:pid-{}@{}", std::process::id(), hostname()));
    let idle_s = parse_duration(&a.idle).context("--idle")?.max(3);
    let give_up = a
        .wait
        .as_deref()
        .map(parse_duration)
        .transpose()
        .context("--wait")?;
    let body = request_body(&a.session, Some(&binding), Some(&idle_s.to_string()), None, None)?;
    let id = match open_session(&c, body, give_up).await? {
        Ok(id) => id,
        Err(code) => return Ok(code),
    };

    let result = run_child(&c, &id, idle_s, &a.command).await;
    // Whatever happened to the child, the session ends now.
    end_session(&c, &id).await;
    result
}

/// Ends (or cancels) the session, retrying server errors a few times; a session that is already over
/// is fine.
pub(crate) async fn end_session(c: &Client, id: &str) {
    for attempt in 0..5u64 {
        match c.post(&format!("/v1/sessions/{id}/end"), json!({})).await {
            Ok(v) => {
                let how = v["end_reason"].as_str().unwrap_or("?");
                eprintln!("stint: session {id} is over ({how})");
                return;
            }
            Err(e) => {
                let retry = e
                    .downcast_ref::<crate::client::ApiFailure>()
                    .is_none_or(|f| f.status.is_server_error());
                if !retry {
                    eprintln!("stint: session {id} already over: {e}");
                    return;
                }
                if attempt == 4 {
                    eprintln!("stint: could not end session {id}: {e}; its idle timeout will end it");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
            }
        }
    }
}

async fn run_child(c: &Client, id: &str, idle_s: u64, command: &[String]) -> anyhow::Result<ExitCode> {
    let cred = c
        .post(&format!("/v1/sessions/{id}/credentials"), json!({}))
        .await?;
    // A database login is handed over as libpq's variables; it lives as long as the session.
    let is_pg = cred["kind"] == "postgres";
    let token = if is_pg {
        String::new()
    } else {
        cred["access_token"]
            .as_str()
            .context("no access token in the answer (ssh targets: use `stint ssh`)")?
            .to_owned()
    };
    let dir = private_dir("exec", id)?;
    let token_file = dir.join("access_token");
    if !is_pg {
        write_token_file(&token_file, &token)?;
    }

    let (program, args) = command.split_first().context("no command given")?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args);
    // The child gets the session's access and nothing of the caller's: no API key, no bootstrap key.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("STINT_") {
            cmd.env_remove(&k);
        }
    }
    if is_pg {
        for (var, field) in [
            ("PGHOST", "host"),
            ("PGPORT", "port"),
            ("PGDATABASE", "database"),
            ("PGUSER", "username"),
            ("PGPASSWORD", "password"),
        ] {
            let v = match &cred[field] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            cmd.env(var, v);
        }
    } else {
        cmd.env("STINT_ACCESS_TOKEN", &token)
            .env("STINT_ACCESS_TOKEN_FILE", &token_file);
    }
    let spawned = cmd.env("STINT_SESSION_ID", id).spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(anyhow::Error::new(e).context(format!("cannot start `{program}`")));
        }
    };
    let pid = child.id().and_then(|p| i32::try_from(p).ok()).map(Pid::from_raw);

    let mut heartbeat = tokio::time::interval(Duration::from_secs((idle_s / 3).max(1)));
    heartbeat.tick().await;
    let refresh_after = |cred: &Value| {
        let left = seconds_until(&cred["expires_at"]).unwrap_or(60).max(3);
        Duration::from_secs(u64::try_from(left * 2 / 3).unwrap_or(1).max(1))
    };
    let refresh = tokio::time::sleep(refresh_after(&cred));
    tokio::pin!(refresh);
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let forward = |sig: Signal| {
        if let Some(p) = pid {
            let _ = kill(p, sig);
        }
    };
    let mut session_over = false;
    let status = loop {
        tokio::select! {
            st = child.wait() => match st {
                Ok(st) => break st,
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(e.into());
                }
            },
            _ = heartbeat.tick(), if !session_over => {
                if let Err(e) = c.post(&format!("/v1/sessions/{id}/heartbeat"), json!({})).await {
                    eprintln!("stint: session {id} is no longer active ({e}); its credentials are dead");
                    session_over = true;
                }
            }
            () = &mut refresh, if !session_over && !is_pg => {
                match c.post(&format!("/v1/sessions/{id}/credentials"), json!({})).await {
                    Ok(fresh) => {
                        if let Some(t) = fresh["access_token"].as_str() {
                            let _ = write_token_file(&token_file, t);
                        }
                        refresh.as_mut().reset(tokio::time::Instant::now() + refresh_after(&fresh));
                    }
                    Err(_) => {
                        refresh.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(3600 * 24));
                    }
                }
            }
            // The terminal already sent SIGINT to the whole process group; we wait for the child.
            _ = sigint.recv() => {}
            _ = sigterm.recv() => forward(Signal::SIGTERM),
            _ = sighup.recv() => forward(Signal::SIGHUP),
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    let code = match (status.code(), status.signal()) {
        (Some(c), _) => u8::try_from(c).unwrap_or(1),
        (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(255),
        _ => 1,
    };
    Ok(ExitCode::from(code))
}
