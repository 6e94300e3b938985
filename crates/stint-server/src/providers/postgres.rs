//! The `postgres` provider: a fresh role per credential (`dynamic` mode), or a checked-out existing
//! account whose password is set at activation and rotated again at revocation (`checkout` mode).
//! The SQL lives in `stint-pg`; here are the target's configuration and the provider rules.

use std::collections::HashSet;
use std::str::FromStr;

use async_trait::async_trait;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use stint_core::{Credential, CredentialKind, Revocation};
use stint_pg::{PgAdmin, PgError, PgOptions};

use super::{Activation, IssueRequest, Prepared, Provider, ProviderError, Secret, Zombie};

/// Admin connections per target: role DDL waits on the server's commit, so a few run in parallel.
const ADMIN_CONNECTIONS: u32 = 8;

/// Default prefix of dynamic role names.
pub const DEFAULT_ROLE_PREFIX: &str = "stint_";

/// How credentials are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// A new role per credential.
    #[default]
    Dynamic,
    /// One existing account, checked out by one session at a time.
    Checkout,
}

/// `config` of a postgres target as given to `POST /v1/targets`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresInput {
    /// Admin connection URL (write-only).
    pub admin_url: Option<String>,
    /// Roles granted to each dynamic role.
    #[serde(default)]
    pub grants: Vec<String>,
    /// `dynamic` (default) or `checkout`.
    #[serde(default)]
    pub mode: Mode,
    /// The checked-out account (checkout mode).
    pub account: Option<String>,
    /// What clients are told to connect to (default: from `admin_url`).
    pub host: Option<String>,
    /// Port clients connect to.
    pub port: Option<u16>,
    /// Database clients connect to.
    pub database: Option<String>,
    /// Prefix of dynamic role names (default `stint_`); reconcile owns every role with it.
    pub role_prefix: Option<String>,
}

impl std::fmt::Debug for PostgresInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresInput")
            .field("admin_url", &self.admin_url.as_ref().map(|_| "[redacted]"))
            .field("grants", &self.grants)
            .field("mode", &self.mode)
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// The stored, public part of a postgres target's configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PostgresConfig {
    /// Roles granted to each dynamic role.
    pub grants: Vec<String>,
    /// Mode.
    pub mode: Mode,
    /// The checked-out account (checkout mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Host clients connect to.
    pub host: String,
    /// Port clients connect to.
    pub port: u16,
    /// Database clients connect to.
    pub database: String,
    /// Prefix of dynamic role names.
    pub role_prefix: String,
}

fn valid_name(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 63 || s.contains('\0') {
        return Err(format!("`{what}` must be 1 to 63 bytes without NUL"));
    }
    Ok(())
}

/// Validates the input; returns the public config and the admin URL.
pub fn parse_config(raw: Value) -> Result<(PostgresConfig, SecretString), String> {
    let input: PostgresInput = serde_json::from_value(raw).map_err(|e| {
        // serde's message may quote a value; only keep its shape.
        let msg = e.to_string();
        if msg.contains("unknown field") || msg.contains("missing field") || msg.contains("unknown variant") {
            format!(
                "postgres `config`: {}",
                msg.split(" at line").next().unwrap_or("invalid")
            )
        } else {
            "postgres `config` is not valid (see the API reference for its fields)".into()
        }
    })?;
    let url = input.admin_url.ok_or("postgres `config.admin_url` is required")?;
    let opts = sqlx::postgres::PgConnectOptions::from_str(&url)
        .map_err(|_| "postgres `config.admin_url` is not a valid postgres:// URL".to_owned())?;
    if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
        return Err("postgres `config.admin_url` must be a postgres:// URL".into());
    }
    for g in &input.grants {
        valid_name("grants", g)?;
    }
    if input.grants.len() > 32 {
        return Err("at most 32 `grants`".into());
    }
    let prefix = input
        .role_prefix
        .unwrap_or_else(|| DEFAULT_ROLE_PREFIX.to_owned());
    if prefix.len() < 3
        || prefix.len() > 24
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err("`role_prefix` must be 3 to 24 characters of a-z, 0-9 and _".into());
    }
    match (input.mode, &input.account) {
        (Mode::Checkout, None) => return Err("checkout mode needs `account`".into()),
        (Mode::Checkout, Some(a)) => {
            valid_name("account", a)?;
            if a.starts_with(&prefix) {
                return Err("the checkout `account` must not carry the dynamic `role_prefix`".into());
            }
        }
        (Mode::Dynamic, Some(_)) => return Err("`account` is only for checkout mode".into()),
        (Mode::Dynamic, None) => {}
    }
    let host = input.host.unwrap_or_else(|| opts.get_host().to_owned());
    let database = input
        .database
        .or_else(|| opts.get_database().map(str::to_owned))
        .unwrap_or_else(|| "postgres".into());
    for (what, v) in [("host", &host), ("database", &database)] {
        if v.is_empty() || v.len() > 255 {
            return Err(format!("`{what}` must be 1 to 255 characters"));
        }
    }
    Ok((
        PostgresConfig {
            grants: input.grants,
            mode: input.mode,
            account: input.account,
            host,
            port: input.port.unwrap_or_else(|| opts.get_port()),
            database,
            role_prefix: prefix,
        },
        SecretString::from(url),
    ))
}

fn unavailable(e: PgError) -> ProviderError {
    match e {
        PgError::Config(m) => ProviderError::Config(m),
        PgError::NoSuchRole(r) => ProviderError::Config(format!("role `{r}` does not exist")),
        other => ProviderError::Unavailable(other.to_string()),
    }
}

/// A postgres target's provider.
#[derive(Debug)]
pub struct PostgresProvider {
    target: String,
    cfg: PostgresConfig,
    admin: PgAdmin,
    /// Serializes check-outs of the account.
    pub(crate) checkout: tokio::sync::Mutex<()>,
}

impl PostgresProvider {
    /// Builds the provider (no connection yet).
    pub fn new(
        target: &str,
        cfg: PostgresConfig,
        admin_url: &SecretString,
        connect_timeout: std::time::Duration,
    ) -> Result<Self, ProviderError> {
        let opts = PgOptions {
            connect_timeout,
            max_connections: ADMIN_CONNECTIONS,
            ..PgOptions::default()
        };
        let admin = PgAdmin::connect_lazy(admin_url, &opts).map_err(unavailable)?;
        Ok(Self {
            target: target.to_owned(),
            cfg,
            admin,
            checkout: tokio::sync::Mutex::new(()),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PostgresConfig {
        &self.cfg
    }

    /// The role name of a credential: the prefix and the credential id's hex.
    fn role_name(&self, id: &stint_core::CredentialId) -> String {
        let hex = id.as_str().trim_start_matches("crd_");
        format!("{}{hex}", self.cfg.role_prefix)
    }
}

#[async_trait]
impl Provider for PostgresProvider {
    fn prepare(&self, req: &IssueRequest<'_>) -> Result<Prepared, ProviderError> {
        let password = stint_pg::generate_password();
        let (username, activation) = match self.cfg.mode {
            Mode::Dynamic => (
                self.role_name(&req.id),
                Activation::CreateRole {
                    password: password.clone(),
                },
            ),
            Mode::Checkout => (
                self.cfg.account.clone().unwrap_or_default(),
                Activation::Checkout {
                    password: password.clone(),
                },
            ),
        };
        Ok(Prepared {
            credential: Credential {
                id: req.id.clone(),
                kind: CredentialKind::Postgres,
                handle: username.clone(),
                key_id: None,
                issued_at: req.now,
                expires_at: req.expires_at,
                revoked_at: None,
                revocation: Revocation::None,
                first_used_at: None,
                revocation_attempts: 0,
                revocation_error: None,
            },
            secret: Secret::Postgres {
                username,
                password,
                host: self.cfg.host.clone(),
                port: self.cfg.port,
                database: self.cfg.database.clone(),
            },
            activation,
        })
    }

    async fn activate(&self, p: &Prepared) -> Result<(), ProviderError> {
        let role = &p.credential.handle;
        match &p.activation {
            Activation::CreateRole { password } => self
                .admin
                .create_role(role, password, p.credential.expires_at, &self.cfg.grants)
                .await
                .map_err(unavailable),
            Activation::Checkout { password } => self
                .admin
                .rotate_password(role, password, Some(p.credential.expires_at))
                .await
                .map_err(unavailable),
            Activation::None => Ok(()),
        }
    }

    async fn revoke(&self, handle: &str) -> Result<(), ProviderError> {
        match self.cfg.mode {
            Mode::Dynamic => {
                if !handle.starts_with(&self.cfg.role_prefix) {
                    return Err(ProviderError::Config(format!(
                        "refusing to drop `{handle}`: it lacks the target's role prefix"
                    )));
                }
                self.admin.drop_role(handle).await.map_err(unavailable)
            }
            Mode::Checkout => {
                // Check-in: a password nobody knows, then end what the session left connected.
                let fresh = stint_pg::generate_password();
                self.admin
                    .rotate_password(handle, &fresh, None)
                    .await
                    .map_err(unavailable)?;
                self.admin.terminate_backends(handle).await.map_err(unavailable)?;
                Ok(())
            }
        }
    }

    async fn reconcile(&self, owned: &HashSet<String>) -> Result<Vec<Zombie>, ProviderError> {
        if self.cfg.mode == Mode::Checkout {
            // It creates no roles; its one account is checked in by its own revocation.
            return Ok(Vec::new());
        }
        let roles = self
            .admin
            .list_roles(&self.cfg.role_prefix)
            .await
            .map_err(unavailable)?;
        let mut zombies = Vec::new();
        for role in roles.into_iter().filter(|r| !owned.contains(r)) {
            let action = match self.admin.drop_role(&role).await {
                Ok(()) => "dropped".to_owned(),
                Err(e) => format!("failed: {e}"),
            };
            zombies.push(Zombie {
                target: self.target.clone(),
                credential: role,
                action,
            });
        }
        Ok(zombies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_admin_url() {
        let input: PostgresInput =
            serde_json::from_value(serde_json::json!({"admin_url": "postgres://u:hunter2@db/app"}))
                .expect("parses");
        assert!(!format!("{input:?}").contains("hunter2"));
    }
}
