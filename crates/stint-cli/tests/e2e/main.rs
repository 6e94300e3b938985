//! End-to-end tests: the real `stint` binary over HTTP and through its CLI.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bad_input;
mod cli;
mod crash;
mod events;
mod federation;
mod flows;
mod guard;
mod harness;
mod oidc;
mod pg;
mod policy;
mod smoke;
mod ssh;
mod sshd;
