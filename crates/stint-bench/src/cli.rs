//! The command line: parse the flags, set up each system, run each scenario at each concurrency, print a
//! line per run and optionally write the raw figures as JSON.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use serde::Serialize;

use crate::http::BaseUrl;
use crate::load::LoadSpec;
use crate::scenario::{self, Adapter, RunSpec, Scenario, ScenarioReport};

/// Load generator for stint and OpenBao: closed loop, fixed concurrency and duration, keep-alive HTTP/1.1,
/// latency percentiles and the client's own CPU use.
///
/// Give `--stint-url` and/or `--bao-url`; each named system runs every scenario at every concurrency.
#[derive(Debug, Parser)]
#[command(name = "stint-bench", version, after_help = EXAMPLES)]
pub struct Args {
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
}

/// Runs what `args` asks for. Fails on bad arguments or when a system cannot be set up; failures of
/// individual requests are reported, not fatal.
pub async fn run(args: Args) -> anyhow::Result<()> {
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
    let mut runs = Vec::new();
    for adapter in &adapters {
        for &scenario in &args.scenario {
            for &concurrency in &args.concurrency {
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
        };
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
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
}
