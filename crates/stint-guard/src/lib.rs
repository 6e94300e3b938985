//! stint-guard: stint access tokens for Rust resource servers.
//!
//! A [`Guard`] verifies stint's access tokens offline — EdDSA signature against stint's JWKS, `typ`
//! `at+jwt`, expiry, audience, issuer — and follows stint's revocation stream (Server-Sent Events at
//! `/v1/events/stream`), so that a token of an ended session or a revoked credential is refused locally
//! within moments. When the stream has been silent longer than [`GuardConfig::max_stream_staleness`],
//! the guard cannot know what was revoked and refuses every token ([`Refusal::StreamDown`]) until it
//! hears from stint again: it fails closed.
//!
//! ```no_run
//! use axum::{Extension, Router, routing::get};
//! use stint_guard::{Claims, Guard, GuardConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let guard = Guard::start(GuardConfig::new("https://stint.example", "stk_…", "orders")).await?;
//! let app: Router = Router::new()
//!     .route("/orders", get(|Extension(c): Extension<Claims>| async move { c.sub }))
//!     .layer(guard.layer());
//! # Ok(()) }
//! ```
//!
//! Invariants: [`Guard::verify`] does no I/O and never waits on the network; the stream task is the
//! only writer of the revoked set; the wall clock is read only through [`Clock`].

mod claims;
mod clock;
mod config;
mod guard;
mod keys;
mod layer;
mod revocation;
mod sse;
mod stream;

pub use claims::{Claims, Refusal};
pub use clock::{Clock, SystemClock};
pub use config::{GuardConfig, GuardError};
pub use guard::Guard;
pub use layer::{GuardLayer, GuardService};
