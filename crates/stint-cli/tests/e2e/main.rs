//! End-to-end tests: the real `stint` binary over HTTP and through its CLI.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod cli;
mod smoke;
mod flows;
mod bad_input;
mod crash;
