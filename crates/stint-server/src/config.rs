//! Server configuration: defaults, then `stint.toml`, then `STINT_…` environment variables, then flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Everything `stint server` can be told.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to bind. Loopback by default.
    pub listen: SocketAddr,
    /// Where the database, signing keys and the bootstrap admin key live.
    pub data_dir: PathBuf,
    /// The `iss` of issued tokens; defaults to `http://<listen address>`.
    pub issuer: Option<String>,
    /// How long a request may wait for its approvals before it expires.
    pub approval_window_s: u64,
    /// How often aggregated uses are written to the audit chain, per session.
    pub use_audit_interval_s: u64,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Default `token_ttl_s` for targets that do not set one.
    pub default_token_ttl_s: u64,
    /// stint speaks plain HTTP: it refuses to bind anything but loopback unless this is set, which
    /// says a TLS-terminating proxy stands in front of it.
    pub plaintext_behind_tls_proxy: bool,
    /// Attempts in one round of retries of a failed revocation before the credential shows `failed`
    /// (the reconcile sweep starts a new round; a revocation is never given up for good).
    pub revocation_max_attempts: u32,
    /// First retry delay; doubles per attempt, with jitter.
    pub revocation_backoff_base_ms: u64,
    /// Longest retry delay.
    pub revocation_backoff_cap_ms: u64,
    /// How often the reconcile sweep runs (0 turns the periodic sweep off; `POST /v1/reconcile` still works).
    pub reconcile_interval_s: u64,
    /// Connect timeout for target systems (PostgreSQL).
    pub target_connect_timeout_ms: u64,
    /// How far a hook's `X-Stint-Timestamp` may be from now.
    pub hook_tolerance_s: u64,
    /// Longest break-glass session.
    pub break_glass_max_ttl_s: u64,
    /// Where break-glass notifications are POSTed (HMAC-signed with `break_glass_webhook_secret`, or
    /// `STINT_BREAK_GLASS_WEBHOOK_SECRET`). Unset: no notification (and `stint policy lint` says so).
    pub break_glass_webhook_url: Option<String>,
    /// The notification webhook's HMAC secret (prefer the environment variable).
    pub break_glass_webhook_secret: Option<String>,
    /// Directory of `.cedar` policy files read at start (file-name order); a policy set PUT through
    /// the API replaces them.
    pub policy_dir: Option<PathBuf>,
    /// The fixed UTC offset policies see as local time in `context.time`, e.g. `+01:00`.
    pub policy_utc_offset: String,
    /// Workload trusts declared in the configuration file (`[[trusts]]` tables, same fields as
    /// `POST /v1/trusts`, plus `jwks_file` for keys read from a file). Created at start when missing.
    #[serde(default)]
    pub trusts: Vec<serde_json::Value>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8300)),
            data_dir: PathBuf::from("./stint-data"),
            issuer: None,
            approval_window_s: 3600,
            use_audit_interval_s: 30,
            max_body_bytes: 64 * 1024,
            default_token_ttl_s: 300,
            plaintext_behind_tls_proxy: false,
            revocation_max_attempts: 8,
            revocation_backoff_base_ms: 250,
            revocation_backoff_cap_ms: 30_000,
            reconcile_interval_s: 300,
            target_connect_timeout_ms: 5000,
            hook_tolerance_s: 300,
            trusts: Vec::new(),
            break_glass_max_ttl_s: 1800,
            break_glass_webhook_url: None,
            break_glass_webhook_secret: None,
            policy_dir: None,
            policy_utc_offset: "+00:00".into(),
        }
    }
}

/// Command-line overrides (they win over file and environment).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overrides {
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// `--data-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

impl Config {
    /// Loads the configuration. A missing `config` file is an error only when it was named.
    pub fn load(config: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Self> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match config {
            Some(p) if !p.exists() => anyhow::bail!("config file `{}` does not exist", p.display()),
            Some(p) => fig = fig.merge(Toml::file(p)),
            None => fig = fig.merge(Toml::file("stint.toml")),
        }
        fig = fig
            .merge(Env::prefixed("STINT_").only(&[
                "listen",
                "data_dir",
                "issuer",
                "approval_window_s",
                "use_audit_interval_s",
                "max_body_bytes",
                "default_token_ttl_s",
                "plaintext_behind_tls_proxy",
                "revocation_max_attempts",
                "revocation_backoff_base_ms",
                "revocation_backoff_cap_ms",
                "reconcile_interval_s",
                "target_connect_timeout_ms",
                "hook_tolerance_s",
                "break_glass_max_ttl_s",
                "break_glass_webhook_url",
                "break_glass_webhook_secret",
                "policy_dir",
                "policy_utc_offset",
            ]))
            .merge(Serialized::defaults(overrides));
        let cfg: Config = fig
            .extract()
            .map_err(|e| anyhow::anyhow!("bad configuration: {e}"))?;
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> anyhow::Result<()> {
        let max = stint_core::session::MAX_DURATION_S;
        if self.approval_window_s == 0 || self.approval_window_s > max {
            anyhow::bail!("approval_window_s must be between 1 and {max}");
        }
        if self.use_audit_interval_s == 0 {
            anyhow::bail!("use_audit_interval_s must be at least 1");
        }
        if self.max_body_bytes < 1024 {
            anyhow::bail!("max_body_bytes must be at least 1024");
        }
        if self.default_token_ttl_s == 0 || self.default_token_ttl_s > max {
            anyhow::bail!("default_token_ttl_s must be between 1 and {max}");
        }
        if self.revocation_max_attempts == 0 || self.revocation_max_attempts > 100 {
            anyhow::bail!("revocation_max_attempts must be between 1 and 100");
        }
        if self.revocation_backoff_base_ms == 0
            || self.revocation_backoff_cap_ms < self.revocation_backoff_base_ms
        {
            anyhow::bail!(
                "revocation_backoff_base_ms must be at least 1 and at most revocation_backoff_cap_ms"
            );
        }
        if !(100..=600_000).contains(&self.target_connect_timeout_ms) {
            anyhow::bail!("target_connect_timeout_ms must be between 100 and 600000");
        }
        if self.break_glass_max_ttl_s == 0 || self.break_glass_max_ttl_s > max {
            anyhow::bail!("break_glass_max_ttl_s must be between 1 and {max}");
        }
        if self.utc_offset().is_none() {
            anyhow::bail!("policy_utc_offset must look like +01:00 or -05:30");
        }
        if let Some(u) = &self.break_glass_webhook_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            anyhow::bail!("break_glass_webhook_url must be an http(s) URL");
        }
        if !self.listen.ip().is_loopback() && !self.plaintext_behind_tls_proxy {
            anyhow::bail!(
                "refusing to serve API keys and tokens over plain HTTP on `{}`: bind a loopback address \
                 and put a TLS-terminating proxy in front (then set plaintext_behind_tls_proxy = true)",
                self.listen
            );
        }
        Ok(())
    }
}

impl Config {
    /// `policy_utc_offset` parsed.
    pub fn utc_offset(&self) -> Option<time::UtcOffset> {
        let fmt = time::macros::format_description!("[offset_hour sign:mandatory]:[offset_minute]");
        time::UtcOffset::parse(&self.policy_utc_offset, &fmt).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_plaintext_is_refused_unless_a_proxy_is_declared() {
        let mut c = Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 8300)),
            ..Config::default()
        };
        assert!(c.check().is_err());
        c.plaintext_behind_tls_proxy = true;
        assert!(c.check().is_ok());
        assert!(Config::default().check().is_ok());
    }

    #[test]
    fn policy_offsets_parse() {
        let mut c = Config::default();
        assert_eq!(c.utc_offset(), Some(time::UtcOffset::UTC));
        c.policy_utc_offset = "+01:00".into();
        assert_eq!(c.utc_offset().map(|o| o.whole_hours()), Some(1));
        c.policy_utc_offset = "Europe/Berlin".into();
        assert!(c.check().is_err());
    }
}
