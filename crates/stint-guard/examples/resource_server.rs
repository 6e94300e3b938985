//! A resource server behind stint-guard.
//!
//! ```text
//! STINT_URL=http://127.0.0.1:8080 STINT_TOKEN=stk_… AUDIENCE=orders \
//!     cargo run -p stint-guard --example resource_server
//! ```
//!
//! Prints `listening on http://ADDR` as its first line. `GET /hello` needs a stint access token for
//! `AUDIENCE`; `GET /healthz` answers 200 while the revocation stream is healthy, 503 otherwise.
//! `LISTEN` sets the address (default `127.0.0.1:0`); `RUST_LOG` the log filter (logs go to stderr).

use std::io::Write;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Router};
use stint_guard::{Claims, Guard, GuardConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let env = |name: &str| std::env::var(name).map_err(|_| format!("set `{name}`"));
    let cfg = GuardConfig::new(env("STINT_URL")?, env("STINT_TOKEN")?, env("AUDIENCE")?);
    let guard = Guard::start(cfg).await?;

    let app = Router::new()
        .route("/hello", get(hello))
        .layer(guard.layer())
        .route("/healthz", get(healthz))
        .with_state(guard);

    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:0".to_owned());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on http://{}", listener.local_addr()?)?;
    stdout.flush()?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn hello(Extension(claims): Extension<Claims>) -> String {
    format!("hello {} (session {})", claims.sub, claims.sid)
}

async fn healthz(State(guard): State<Guard>) -> (StatusCode, &'static str) {
    if guard.stream_healthy() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "revocation stream down\n")
    }
}
