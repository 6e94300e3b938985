//! `stint-bench`: the load generator of the benchmark suite, measuring stint and OpenBao on the same work
//! with the same client.
//!
//! A closed loop: `--concurrency` workers, each with its own keep-alive HTTP/1.1 connection, each sending
//! its next request as soon as the previous one is answered, for `--duration` seconds or until
//! `--max-requests` is spent. Failed requests are counted, not fatal; a loop stops early when more than
//! `--max-error-ratio` (1 %) of its requests fail. For each run it reports successful operations per
//! second, p50/p90/p99/p999/max latency, errors, and its own CPU use: when the client took more than a
//! quarter of the machine, the line says `CLIENT-BOUND` (the figure may be the client's limit, not the
//! server's).
//!
//! # Usage
//!
//! ```text
//! # stint (release build, audit on), admin key from the environment:
//! STINT_BOOTSTRAP_ADMIN_KEY=$(stint keygen) stint server --listen 127.0.0.1:8300 --data-dir "$(mktemp -d)" &
//! STINT_BENCH_ADMIN_KEY=$STINT_BOOTSTRAP_ADMIN_KEY \
//!   stint-bench --stint-url http://127.0.0.1:8300 -c 16,64 -d 10 --json stint.json
//!
//! # OpenBao (`bao server -dev -dev-root-token-id=root`, file audit device in its config):
//! BAO_TOKEN=root stint-bench --bao-url http://127.0.0.1:8200 -s issue,introspect,end -c 16 -d 10
//! ```
//!
//! Output, one line per system × scenario × concurrency (above a quarter of the machine it adds
//! `(CLIENT-BOUND: over a quarter of the machine)`):
//!
//! ```text
//! stint introspect c=16: 30101 ops/s (150574 ops in 5.00 s), p50 0.28 p90 0.62 p99 4.89 p999 12.00 max 31.77 ms, 0 errors, client CPU 25% of 2 cores
//! ```
//!
//! and with `--json FILE` every run's raw figures ([`cli::JsonReport`]).
//!
//! Scenarios ([`scenario`]): `issue`, `introspect` and `end`. For stint the tool first creates, with the
//! admin key, a service principal, a `resource_server` principal and a JWT target needing no approval, all
//! named `stint-bench-<random>`. `introspect` and `end` issue their pool first (`--introspect-pool`,
//! `--end-pool`), outside the measured loop.
//!
//! Two scenarios run once per system rather than per concurrency, over `--bulk-concurrency` (32)
//! connections, and report the server's RSS before, at peak (every 100 ms) and after when given its pid
//! (`--stint-pid`, `--bao-pid`; read from `/proc/<pid>/status`):
//!
//! - `mass-expiry` ([`expiry`]): `--expiry-sessions` (100,000) stint sessions with one JWT each, or
//!   `--bao-expiry-sessions` (20,000) OpenBao tokens, all with the same deadline; `--expiry-samples` (200)
//!   of them are checked in a loop until each answers inactive (lag from the deadline, p50/p99/max, and
//!   active answers after it, which must be 0 for stint), and the server's record is polled until every
//!   one is gone (`--expiry-timeout` 600 s after the deadline).
//! - `scale` ([`scale`]): `--scale-sessions` (1,000,000) active stint sessions (`--scale-with-credentials`:
//!   each with a JWT) or `--bao-scale-sessions` (50,000) OpenBao tokens; creation rate and RSS per item
//!   (`--scale-timeout` 1800 s).
//!
//! ```text
//! stint-bench --stint-url http://127.0.0.1:8300 -s mass-expiry,scale --stint-pid "$PID" \
//!   --expiry-sessions 5000 --scale-sessions 20000 --json bulk.json
//! BAO_TOKEN=root stint-bench --bao-url http://127.0.0.1:8200 -s mass-expiry --bao-pid "$BAO_PID"
//! ```
//!
//! `stint-bench ready --url http://127.0.0.1:8300 [--system openbao] [--timeout 120] [--json FILE]` polls
//! `/readyz` (OpenBao: `/v1/sys/health`) every 20 ms and prints the seconds until it answered 200, so a
//! script can time a restart.
//!
//! # Pieces
//!
//! - [`histogram::Histogram`]: log-linear latency histogram, three significant digits, bounded memory,
//!   mergeable.
//! - [`load::closed_loop`]: the closed loop over any [`load::Worker`].
//! - [`cpu::CpuMeter`]: the process's own CPU time from `/proc/self/stat`.
//! - [`http::Conn`]: one keep-alive hyper connection, JSON and form helpers.
//! - [`scenario::Adapter`]: one system under test (stint or OpenBao) with `issue`, `introspect` and `end`.
//! - [`pgroles`]: the `pg-roles` scenario, one PostgreSQL role per credential for both systems.
//! - [`report`]: `stint-bench report`, the markdown comparison of `--json` files.
//! - [`expiry`], [`scale`]: the `mass-expiry` and `scale` scenarios and `stint-bench ready`; [`bulk`]:
//!   what they share (many requests with progress on stderr, RSS sampling, Prometheus text, RFC 3339).

pub mod bulk;
pub mod cli;
pub mod cpu;
pub mod expiry;
pub mod histogram;
pub mod http;
pub mod load;
pub mod pgroles;
pub mod report;
pub mod scale;
pub mod scenario;
