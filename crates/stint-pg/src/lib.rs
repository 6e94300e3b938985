//! Dynamic PostgreSQL roles for stint.
//!
//! stint's `postgres` targets get short-lived credentials in one of two modes:
//!
//! - **dynamic roles**: [`PgAdmin::create_role`] makes a fresh `LOGIN` role with a random password, a
//!   `VALID UNTIL` and the configured grant roles; [`PgAdmin::drop_role`] revokes it when the session
//!   ends (no new logins, every backend of it terminated, its objects handed over, the role dropped,
//!   and the drop confirmed from `pg_roles`).
//! - **check-out** of a legacy account: [`PgAdmin::rotate_password`] sets a new password on an
//!   existing role, and [`PgAdmin::terminate_backends`] ends its sessions.
//!
//! # Invariants
//!
//! - The plaintext password never reaches the server: the client computes the SCRAM-SHA-256 verifier
//!   ([`scram_sha256_verifier`]) and sends only that, so the password shows neither in server logs
//!   (`log_statement`) nor in `pg_stat_activity`.
//! - Every identifier and literal in dynamic SQL goes through [`quote_ident`] or [`quote_literal`];
//!   values in catalog queries are bind parameters. Nothing is pasted.
//! - No error message or `Debug` output contains a password or the admin URL.

mod admin;
mod error;
mod quote;
mod scram;
#[cfg(feature = "testing")]
pub mod testing;

pub use admin::{PgAdmin, PgOptions};
pub use error::PgError;
pub use quote::{quote_ident, quote_literal};
pub use scram::{SCRAM_ITERATIONS, generate_password, scram_sha256_verifier};
