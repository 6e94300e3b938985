//! The command line: parse the flags, set up each system, run each scenario at each concurrency, print a
//! line per run and optionally write the raw figures as JSON.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use serde::Serialize;

use crate::expiry::{self, ExpiryReport, ExpirySpec};
use crate::http::BaseUrl;
use crate::load::LoadSpec;
use crate::pgroles::{self, PgRolesReport, PgRolesSpec, PgUrl};
use crate::scale::{self, ScaleReport, ScaleSpec};
use crate::scenario::{self, Adapter, RunSpec, Scenario, ScenarioReport};

/// Load generator for stint and OpenBao: closed loop, fixed concurrency and duration, keep-alive HTTP/1.1,
/// latency percentiles and the client's own CPU use.
///
/// Give `--stint-url` and/or `--bao-url`; each named system runs every scenario at every concurrency.
#[derive(Debug, Parser)]
#[command(name = "stint-bench", version, after_help = EXAMPLES, args_conflicts_with_subcommands = true)]
pub struct Args {
    /// Something else than measuring.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// A running stint server, e.g. `http://127.0.0.1:8300`.
    #[arg(long, requires = "admin_key")]
    pub stint_url: Option<String>,
    /// stint admin API key (creates the bench principals and target).
    #[arg(long, env = "STINT_BENCH_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// A running OpenBao server, e.g. `http://127.0.0.1:8200`.
    #[arg(long, requires = "bao_token")]
    pub bao_url: Option<String>,
    /// OpenBao token allowed to create, look up and revoke tokens (root, typically).
    #[arg(long, env = "BAO_TOKEN", hide_env_values = true)]
    pub bao_token: Option<String>,
    /// Scenarios, comma-separated.
    #[arg(
        long,
        short,
        value_enum,
        value_delimiter = ',',
        default_value = "issue,introspect,end"
    )]
    pub scenario: Vec<Scenario>,
    /// Concurrent workers (one keep-alive connection each); comma-separated to run several.
    #[arg(long, short, value_delimiter = ',', default_value = "16")]
    pub concurrency: Vec<usize>,
    /// Seconds each measured loop runs.
    #[arg(long, short, default_value_t = 10.0)]
    pub duration: f64,
    /// At most this many requests per measured loop.
    #[arg(long)]
    pub max_requests: Option<u64>,
    /// Tokens issued before `introspect` (cycled through).
    #[arg(long, default_value_t = 1000)]
    pub introspect_pool: usize,
    /// Sessions issued before `end`; each is ended once, so this bounds the `end` loop.
    #[arg(long, default_value_t = 10_000)]
    pub end_pool: usize,
    /// Stop a loop early once more than this fraction of its requests failed.
    #[arg(long, default_value_t = 0.01)]
    pub max_error_ratio: f64,
    /// Write the raw figures of every run to this file as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Names the system in `--json` (its column in `stint-bench report`), e.g. `openbao-raft`.
    #[arg(long)]
    pub label: Option<String>,
    /// `pg-roles`: roles issued, then revoked, per system and concurrency.
    #[arg(long, default_value_t = 1000)]
    pub pg_roles: usize,
    /// `pg-roles`: the PostgreSQL server (stint's `admin_url`, OpenBao's connection, where the checks run).
    #[arg(
        long,
        env = "STINT_BENCH_PG_URL",
        hide_env_values = true,
        default_value = "postgres://root@127.0.0.1:5432/postgres"
    )]
    pub pg_url: String,
    /// `pg-roles`: logins tried with issued passwords after revocation (all must be refused).
    #[arg(long, default_value_t = 20)]
    pub pg_login_sample: usize,
    /// `pg-roles`: seconds each phase (issuing; revoking until confirmed) may take.
    #[arg(long, default_value_t = 300.0)]
    pub pg_timeout: f64,
    /// `mass-expiry`: stint sessions sharing one deadline (each with a JWT).
    #[arg(long, default_value_t = 100_000)]
    pub expiry_sessions: usize,
    /// `mass-expiry`: OpenBao tokens sharing one deadline.
    #[arg(long, default_value_t = 20_000)]
    pub bao_expiry_sessions: usize,
    /// `mass-expiry`: tokens checked in a loop around the deadline until each answers inactive.
    #[arg(long, default_value_t = 200)]
    pub expiry_samples: usize,
    /// `mass-expiry`: seconds after the deadline to wait for every expiry to be answered and recorded.
    #[arg(long, default_value_t = 600.0)]
    pub expiry_timeout: f64,
    /// `scale`: stint sessions to create (active, one day each).
    #[arg(long, default_value_t = 1_000_000)]
    pub scale_sessions: usize,
    /// `scale`: OpenBao tokens to create (one day each).
    #[arg(long, default_value_t = 50_000)]
    pub bao_scale_sessions: usize,
    /// `scale`: also issue a JWT for every stint session.
    #[arg(long)]
    pub scale_with_credentials: bool,
    /// `mass-expiry` and `scale`: connections creating and issuing.
    #[arg(long, default_value_t = 32)]
    pub bulk_concurrency: usize,
    /// `scale`: seconds creating may take.
    #[arg(long, default_value_t = 1800.0)]
    pub scale_timeout: f64,
    /// The stint server's pid, for its RSS in `mass-expiry` and `scale` (absent without).
    #[arg(long)]
    pub stint_pid: Option<u32>,
    /// The OpenBao server's pid, for its RSS in `mass-expiry` and `scale` (absent without).
    #[arg(long)]
    pub bao_pid: Option<u32>,
}

/// What `stint-bench` does instead of measuring.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Prints the markdown table comparing `--json` files: a column per system (`--label`), a ratio column
    /// per system against stint.
    Report(crate::report::ReportArgs),
    /// Polls a (re)started server every 20 ms until it is ready (`/readyz`, OpenBao `/v1/sys/health`)
    /// and prints the seconds it took.
    Ready(scale::ReadyArgs),
}

const EXAMPLES: &str = "Examples:
  stint-bench --stint-url http://127.0.0.1:8300 --admin-key \"$KEY\" -c 16,64 -d 10 --json stint.json
  BAO_TOKEN=root stint-bench --bao-url http://127.0.0.1:8200 -s introspect -c 64 -d 5";

/// The `--json` file.
#[derive(Debug, Serialize)]
pub struct JsonReport {
    /// `stint-bench`.
    pub tool: &'static str,
    /// This crate's version.
    pub version: &'static str,
    /// One entry per system × scenario × concurrency, in run order.
    pub runs: Vec<ScenarioReport>,
    /// `--label`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// `pg-roles` runs, one per system × concurrency.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pg_roles: Vec<PgRolesReport>,
    /// `mass-expiry` runs, one per system.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expiry: Vec<ExpiryReport>,
    /// `scale` runs, one per system.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scale: Vec<ScaleReport>,
}

/// Runs what `args` asks for. Fails on bad arguments or when a system cannot be set up; failures of
/// individual requests are reported, not fatal.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if let Some(Command::Report(report)) = &args.command {
        return crate::report::command(report);
    }
    if let Some(Command::Ready(ready)) = &args.command {
        return scale::ready_command(ready.clone()).await;
    }
    if !(args.duration.is_finite() && args.duration > 0.0) {
        bail!("`--duration` must be a positive number of seconds");
    }
    if args.concurrency.contains(&0) {
        bail!("`--concurrency` must be at least 1");
    }
    let mut adapters = Vec::new();
    if let (Some(url), Some(key)) = (&args.stint_url, &args.admin_key) {
        let base = BaseUrl::parse(url)?;
        adapters.push(
            Adapter::stint(base, key)
                .await
                .with_context(|| format!("setting up stint at {url}"))?,
        );
    }
    if let (Some(url), Some(token)) = (&args.bao_url, &args.bao_token) {
        adapters.push(Adapter::bao(BaseUrl::parse(url)?, token));
    }
    if adapters.is_empty() {
        bail!(
            "nothing to measure: give `--stint-url` (with `--admin-key`) and/or `--bao-url` (with `--bao-token`)"
        );
    }
    let mut load =
        LoadSpec::for_duration(Duration::from_secs_f64(args.duration)).with_max_requests(args.max_requests);
    load.max_error_ratio = args.max_error_ratio;
    let pg_url = match args.scenario.contains(&Scenario::PgRoles) {
        true => Some(PgUrl::parse(&args.pg_url)?),
        false => None,
    };
    if !(args.pg_timeout.is_finite() && args.pg_timeout > 0.0) {
        bail!("`--pg-timeout` must be a positive number of seconds");
    }
    let mut runs = Vec::new();
    let mut pg_roles = Vec::new();
    let (mut expiry_runs, mut scale_runs) = (Vec::new(), Vec::new());
    for adapter in &adapters {
        for &scenario in &args.scenario {
            if matches!(scenario, Scenario::MassExpiry | Scenario::Scale) {
                bulk_scenario(adapter, scenario, &args, &mut expiry_runs, &mut scale_runs).await?;
                continue;
            }
            for &concurrency in &args.concurrency {
                if let (Scenario::PgRoles, Some(pg)) = (scenario, &pg_url) {
                    let key = match adapter.system() {
                        "stint" => args.admin_key.as_deref(),
                        _ => args.bao_token.as_deref(),
                    };
                    let spec = PgRolesSpec {
                        roles: args.pg_roles,
                        concurrency,
                        pg: pg.clone(),
                        login_sample: args.pg_login_sample,
                        phase_timeout: Duration::from_secs_f64(args.pg_timeout),
                    };
                    let report = pgroles::run(adapter, key.unwrap_or_default(), &spec)
                        .await
                        .with_context(|| {
                            format!("{} pg-roles at concurrency {concurrency}", adapter.system())
                        })?;
                    println!("{}", report.line());
                    pg_roles.push(report);
                    continue;
                }
                let spec = RunSpec {
                    concurrency,
                    load,
                    introspect_pool: args.introspect_pool,
                    end_pool: args.end_pool,
                };
                let report = scenario::run(adapter, scenario, spec).await.with_context(|| {
                    format!(
                        "{} {} at concurrency {concurrency}",
                        adapter.system(),
                        scenario.as_str()
                    )
                })?;
                println!("{}", report.line());
                runs.push(report);
            }
        }
    }
    if let Some(path) = &args.json {
        let report = JsonReport {
            tool: "stint-bench",
            version: env!("CARGO_PKG_VERSION"),
            runs,
            label: args.label.clone(),
            pg_roles,
            expiry: expiry_runs,
            scale: scale_runs,
        };
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Runs `mass-expiry` or `scale` once on `adapter` (not per concurrency: `--bulk-concurrency`), prints its
/// line and keeps its report.
async fn bulk_scenario(
    adapter: &Adapter,
    scenario: Scenario,
    args: &Args,
    expiry_runs: &mut Vec<ExpiryReport>,
    scale_runs: &mut Vec<ScaleReport>,
) -> anyhow::Result<()> {
    let secs = |flag: &str, v: f64| {
        if v.is_finite() && v > 0.0 {
            Ok(Duration::from_secs_f64(v))
        } else {
            Err(anyhow::anyhow!("`--{flag}` must be a positive number of seconds"))
        }
    };
    if args.bulk_concurrency == 0 {
        bail!("`--bulk-concurrency` must be at least 1");
    }
    let stint = adapter.system() == "stint";
    let pid = if stint { args.stint_pid } else { args.bao_pid };
    let context = || format!("{} {}", adapter.system(), scenario.as_str());
    if scenario == Scenario::MassExpiry {
        let spec = ExpirySpec {
            sessions: if stint {
                args.expiry_sessions
            } else {
                args.bao_expiry_sessions
            },
            samples: args.expiry_samples,
            concurrency: args.bulk_concurrency,
            timeout: secs("expiry-timeout", args.expiry_timeout)?,
            pid,
            admin_key: args.admin_key.clone(),
        };
        let report = expiry::run(adapter, &spec).await.with_context(context)?;
        println!("{}", report.line());
        expiry_runs.push(report);
    } else {
        let spec = ScaleSpec {
            sessions: if stint {
                args.scale_sessions
            } else {
                args.bao_scale_sessions
            },
            with_credentials: args.scale_with_credentials,
            concurrency: args.bulk_concurrency,
            timeout: secs("scale-timeout", args.scale_timeout)?,
            pid,
            admin_key: args.admin_key.clone(),
        };
        let report = scale::run(adapter, &spec).await.with_context(context)?;
        println!("{}", report.line());
        scale_runs.push(report);
    }
    Ok(())
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn flags_parse_with_defaults_and_lists() {
        Args::command().debug_assert();
        let args =
            Args::try_parse_from(["stint-bench", "--stint-url", "http://x:1", "--admin-key", "k"]).unwrap();
        assert_eq!(
            args.scenario,
            [Scenario::Issue, Scenario::Introspect, Scenario::End]
        );
        assert_eq!(args.concurrency, [16]);
        assert_eq!(args.duration, 10.0);
        let args = Args::try_parse_from([
            "stint-bench",
            "--bao-url",
            "http://x:1",
            "--bao-token",
            "t",
            "-s",
            "end,issue",
            "-c",
            "16,64",
        ])
        .unwrap();
        assert_eq!(args.scenario, [Scenario::End, Scenario::Issue]);
        assert_eq!(args.concurrency, [16, 64]);
    }

    #[test]
    fn pg_roles_flags_and_the_report_subcommand_parse() {
        let args = Args::try_parse_from([
            "stint-bench",
            "--stint-url",
            "http://x:1",
            "--admin-key",
            "k",
            "-s",
            "pg-roles",
            "--pg-roles",
            "100",
            "--pg-url",
            "postgres://u@h:5433/d",
            "--label",
            "stint",
        ])
        .unwrap();
        assert_eq!(args.scenario, [Scenario::PgRoles]);
        assert_eq!(
            (args.pg_roles, args.pg_url.as_str()),
            (100, "postgres://u@h:5433/d")
        );
        assert_eq!((args.pg_login_sample, args.pg_timeout), (20, 300.0));
        assert_eq!(args.label.as_deref(), Some("stint"));
        let args = Args::try_parse_from([
            "stint-bench",
            "report",
            "a.json",
            "b.json",
            "--write",
            "B.md",
            "--note",
            "n1",
        ])
        .unwrap();
        let Some(Command::Report(report)) = args.command else {
            panic!("{:?}", args.command)
        };
        assert_eq!(report.files, [PathBuf::from("a.json"), PathBuf::from("b.json")]);
        assert_eq!(report.write, Some(PathBuf::from("B.md")));
        assert_eq!(report.note, ["n1"]);
    }

    #[test]
    fn bulk_scenario_flags_and_the_ready_subcommand_parse() {
        let args = Args::try_parse_from([
            "stint-bench",
            "--stint-url",
            "http://x:1",
            "--admin-key",
            "k",
            "-s",
            "mass-expiry,scale",
            "--stint-pid",
            "42",
            "--scale-with-credentials",
        ])
        .unwrap();
        assert_eq!(args.scenario, [Scenario::MassExpiry, Scenario::Scale]);
        assert_eq!(
            (
                args.expiry_sessions,
                args.bao_expiry_sessions,
                args.expiry_samples
            ),
            (100_000, 20_000, 200)
        );
        assert_eq!(
            (
                args.scale_sessions,
                args.bao_scale_sessions,
                args.scale_with_credentials
            ),
            (1_000_000, 50_000, true)
        );
        assert_eq!(
            (args.stint_pid, args.bao_pid, args.bulk_concurrency),
            (Some(42), None, 32)
        );
        let args = Args::try_parse_from([
            "stint-bench",
            "ready",
            "--url",
            "http://x:1",
            "--system",
            "openbao",
            "--timeout",
            "5",
        ])
        .unwrap();
        let Some(Command::Ready(ready)) = args.command else {
            panic!("{:?}", args.command)
        };
        assert_eq!(ready.system, scale::ReadySystem::Openbao);
        assert_eq!((ready.timeout, ready.interval_ms), (5.0, 20));
        assert!(
            Args::try_parse_from(["stint-bench", "ready"]).is_err(),
            "`--url` is required"
        );
    }
}
