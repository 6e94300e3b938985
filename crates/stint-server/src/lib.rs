//! The stint service: HTTP API, scheduler, credential providers, metrics.
//!
//! [`run`] is `stint server`; [`api::router`] builds the application so tests can drive it
//! in-process.

pub mod api;
pub mod config;
pub mod directory;
pub mod error;
pub mod events;
pub mod extract;
pub mod federation;
pub mod hooks;
pub mod keys;
pub mod live;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod providers;
pub mod revoker;
pub mod scheduler;
pub mod secrets;
pub mod service;

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use stint_core::{SessionId, SystemClock};
use stint_store::SqliteStore;

pub use config::{Config, Overrides};
pub use directory::new_api_key;
pub use service::Service;

/// Options of `stint server`.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--listen` / `--data-dir`.
    pub overrides: Overrides,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STINT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn write_admin_key(path: &Path, key: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing `{}`", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    writeln!(f, "{key}")?;
    f.sync_all()?;
    Ok(())
}

/// Runs `stint server` until SIGTERM or Ctrl-C.
pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    init_logging();
    let cfg = Config::load(opts.config.as_deref(), &opts.overrides)?;
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data dir `{}`", cfg.data_dir.display()))?;
    std::fs::set_permissions(&cfg.data_dir, std::fs::Permissions::from_mode(0o700))?;
    let store = SqliteStore::open(&cfg.data_dir.join("stint.db"))
        .await
        .context("opening the store")?;
    let db = cfg.data_dir.join("stint.db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600))?;
    let keys = keys::KeyRing::open(&cfg.data_dir)?;
    let kek = secrets::Kek::load(&cfg.data_dir, std::env::var("STINT_MASTER_KEY").ok().as_deref())?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let issuer = cfg.issuer.clone().unwrap_or_else(|| format!("http://{addr}"));
    let _ = metrics::handle();
    let svc = Arc::new(Service::new(
        Arc::new(store.clone()),
        Arc::new(SystemClock),
        cfg.clone(),
        issuer,
        keys,
        kek,
    ));
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{addr}")?;
        out.flush()?;
    }
    let app = api::router(svc.clone());
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.wait_for(|v| *v).await;
            })
            .await
    });

    // Revocation workers start first, so that jobs queued by recovery run at once.
    let revoker = tokio::spawn(revocation_loop(svc.clone()));
    // Fail closed: nothing but health answers until every overdue session is ended.
    let bootstrap = std::env::var("STINT_BOOTSTRAP_ADMIN_KEY").ok();
    if let Some(key) = svc.recover(bootstrap).await? {
        let path = cfg.data_dir.join("admin.key");
        write_admin_key(&path, &key)?;
        println!("admin API key written to {}", path.display());
    }
    tracing::info!(%addr, data_dir = %cfg.data_dir.display(), "ready");

    let sched = tokio::spawn(scheduler_loop(svc.clone()));
    let flusher = tokio::spawn(flush_loop(svc.clone()));
    let sweeper = tokio::spawn(reconcile_loop(svc.clone()));

    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    sched.abort();
    flusher.abort();
    sweeper.abort();
    revoker.abort();
    svc.flush_usage().await;
    store.close().await;
    Ok(())
}

async fn scheduler_loop(svc: Arc<Service>) {
    loop {
        let due = svc.scheduler.next_due(&*svc.clock).await;
        // Due sessions are judged in chunks, each read at once and committed as one transaction, so
        // a mass expiry costs a few large writes. Lanes with disjoint session locks run side by
        // side (one prepares while another commits). A chunk that fails (a conflicting change raced
        // it) is judged again one session at a time.
        let ids: Vec<SessionId> = due.into_iter().map(|(id, _)| id).collect();
        let (count, started) = (ids.len(), std::time::Instant::now());
        let lanes = svc.lock_lanes(ids, TICK_LANES);
        futures_util::future::join_all(lanes.into_iter().map(|lane| {
            let svc = svc.clone();
            async move {
                for chunk in lane.chunks(TICK_CHUNK) {
                    tick_chunk(&svc, chunk).await;
                }
            }
        }))
        .await;
        tracing::debug!(
            sessions = count,
            elapsed_ms = started.elapsed().as_millis(),
            "due timers judged"
        );
    }
}

async fn tick_chunk(svc: &Arc<Service>, chunk: &[SessionId]) {
    let Err(e) = svc.tick_many(chunk).await else {
        return;
    };
    tracing::debug!(
        code = e.code,
        sessions = chunk.len(),
        "chunk of timers failed; one at a time"
    );
    futures_util::stream::iter(chunk)
        .for_each_concurrent(service::RECOVERY_CONCURRENCY, |id| async move {
            if let Err(e) = svc.tick(id).await
                && e.status.is_server_error()
            {
                tracing::warn!(session = %id, code = e.code, "timer failed; retrying in 1 s");
                svc.scheduler
                    .set(id, Some(svc.clock.now() + time::Duration::seconds(1)));
            }
        })
        .await;
}

/// Lanes of due sessions judged side by side.
const TICK_LANES: usize = 4;

/// Due sessions judged per transaction.
const TICK_CHUNK: usize = 512;

/// Most revocation jobs talking to target systems at once.
const REVOCATION_CONCURRENCY: usize = 32;

async fn revocation_loop(svc: Arc<Service>) {
    let Some(mut rx) = svc.revoker.take_receiver() else {
        return;
    };
    let permits = Arc::new(tokio::sync::Semaphore::new(REVOCATION_CONCURRENCY));
    while let Some(job) = rx.recv().await {
        let svc = svc.clone();
        let permits = permits.clone();
        tokio::spawn(async move {
            // A permit is held only while talking to the target, never while backing off.
            let mut round = 1;
            loop {
                let Ok(permit) = permits.acquire().await else {
                    break;
                };
                let next = svc.revoke_once(&job, round).await;
                drop(permit);
                match next {
                    Some(delay) => tokio::time::sleep(delay).await,
                    None => break,
                }
                round += 1;
            }
            svc.revoker.done(&job.credential);
        });
    }
}

async fn reconcile_loop(svc: Arc<Service>) {
    if svc.cfg.reconcile_interval_s == 0 {
        return;
    }
    let mut every = tokio::time::interval(Duration::from_secs(svc.cfg.reconcile_interval_s));
    every.tick().await;
    loop {
        every.tick().await;
        match svc.reconcile("system").await {
            Ok((zombies, outstanding)) => {
                tracing::info!(zombies = zombies.len(), outstanding, "reconcile sweep finished");
            }
            Err(e) => tracing::warn!(code = e.code, "reconcile sweep failed"),
        }
    }
}

async fn flush_loop(svc: Arc<Service>) {
    let mut every = tokio::time::interval(Duration::from_secs(svc.cfg.use_audit_interval_s));
    every.tick().await;
    loop {
        every.tick().await;
        svc.flush_usage().await;
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
