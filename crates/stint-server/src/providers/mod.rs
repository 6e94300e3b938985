//! Credential providers: one per target kind, each with `issue` (in two phases), `revoke` and
//! `reconcile`.
//!
//! Issuing is split so that a credential is always known to the store before it exists anywhere
//! else: [`Provider::prepare`] makes the record and the secret material without touching the target
//! system, the service commits the record, then [`Provider::activate`] creates it in the target
//! system. A crash between the two leaves a recorded credential that does not exist (revoking it is
//! a no-op), never an unrecorded one that does. `revoke` is idempotent and returns `Ok` only when the
//! target system confirms the credential is dead. `reconcile` lists what exists in the target and
//! revokes whatever no live credential owns.
//!
//! The `jwt` kind is [`jwt::JwtProvider`]: its tokens exist only in the in-memory token index, so
//! its revocation is confirmed inside the session's own commit, before the response.

pub mod jwt;
pub mod postgres;
pub mod ssh;

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use stint_core::{Credential, CredentialId, Session};
use time::OffsetDateTime;

/// Why a provider failed. Messages never hold secrets.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// The request cannot be served (bad public key, account checked out, …): the client's fault.
    #[error("{0}")]
    Refused(String),
    /// The target system did not answer or failed; retrying may help.
    #[error("target system unavailable: {0}")]
    Unavailable(String),
    /// The target's configuration is unusable.
    #[error("target misconfigured: {0}")]
    Config(String),
}

/// What a credential request asks for.
#[derive(Debug)]
pub struct IssueRequest<'a> {
    /// The session (active).
    pub session: &'a Session,
    /// The new credential's id.
    pub id: CredentialId,
    /// Its expiry (`Session::credential_expiry`).
    pub expires_at: OffsetDateTime,
    /// Now.
    pub now: OffsetDateTime,
    /// The client's SSH public key (ssh targets).
    pub public_key: Option<&'a str>,
}

/// The secret part of a new credential, returned once to its principal.
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Secret {
    /// A database login.
    Postgres {
        /// Role name.
        username: String,
        /// Its password.
        #[serde(serialize_with = "expose")]
        password: SecretString,
        /// Where to connect.
        host: String,
        /// Port.
        port: u16,
        /// Database.
        database: String,
    },
    /// An OpenSSH user certificate (not secret by itself: useless without the client's key).
    Ssh {
        /// The certificate line.
        certificate: String,
        /// Its principals.
        principals: Vec<String>,
        /// Validity start (RFC 3339).
        #[serde(with = "time::serde::rfc3339")]
        valid_after: OffsetDateTime,
        /// Validity end (RFC 3339).
        #[serde(with = "time::serde::rfc3339")]
        valid_before: OffsetDateTime,
    },
}

fn expose<S: serde::Serializer>(s: &SecretString, ser: S) -> Result<S::Ok, S::Error> {
    use secrecy::ExposeSecret;
    ser.serialize_str(s.expose_secret())
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Postgres { username, .. } => f
                .debug_struct("Postgres")
                .field("username", username)
                .field("password", &"[redacted]")
                .finish_non_exhaustive(),
            Self::Ssh { principals, .. } => f
                .debug_struct("Ssh")
                .field("principals", principals)
                .finish_non_exhaustive(),
        }
    }
}

/// A prepared credential: the record to commit and the secret to hand out after activation.
#[derive(Debug)]
pub struct Prepared {
    /// The record (revocation `none`).
    pub credential: Credential,
    /// What the principal gets.
    pub secret: Secret,
    /// Provider-specific activation data (never serialized).
    pub(crate) activation: Activation,
}

/// What `activate` needs beyond the record.
pub(crate) enum Activation {
    /// Create a role with this password, valid until the credential's expiry.
    CreateRole {
        /// The password.
        password: SecretString,
    },
    /// Set a fresh password on the checked-out account.
    Checkout {
        /// The password.
        password: SecretString,
    },
    /// Nothing to do (signed certificates exist by themselves).
    None,
}

impl std::fmt::Debug for Activation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::CreateRole { .. } => "CreateRole",
            Self::Checkout { .. } => "Checkout",
            Self::None => "None",
        })
    }
}

/// Something found in a target that no live credential owns, and what reconcile did about it.
pub use stint_proto::ZombieView as Zombie;

/// One target's credential provider.
#[async_trait]
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// Makes the credential record and its secret without touching the target system.
    fn prepare(&self, req: &IssueRequest<'_>) -> Result<Prepared, ProviderError>;
    /// After the record is committed: makes the credential exist in the target system.
    async fn activate(&self, prepared: &Prepared) -> Result<(), ProviderError>;
    /// Makes the credential unusable; `Ok` only once the target system confirms it. Idempotent.
    async fn revoke(&self, handle: &str) -> Result<(), ProviderError>;
    /// Lists what exists in the target and revokes what `owned` (handles of live credentials and of
    /// credentials whose revocation is queued) does not contain.
    async fn reconcile(&self, owned: &HashSet<String>) -> Result<Vec<Zombie>, ProviderError>;
    /// For providers whose credentials live in this process only: revokes at once and returns true.
    fn revoke_in_process(&self, _handle: &str) -> bool {
        false
    }
}

/// A shared provider.
pub type SharedProvider = Arc<dyn Provider>;

/// A target's provider, by kind (the service needs the concrete type for kind-specific routes).
#[derive(Debug, Clone)]
pub enum TargetProvider {
    /// Tokens in the in-memory index.
    Jwt(Arc<jwt::JwtProvider>),
    /// PostgreSQL roles.
    Postgres(Arc<postgres::PostgresProvider>),
    /// SSH certificates.
    Ssh(Arc<ssh::SshProvider>),
}

impl TargetProvider {
    /// As the common interface.
    pub fn shared(&self) -> SharedProvider {
        match self {
            Self::Jwt(p) => p.clone(),
            Self::Postgres(p) => p.clone(),
            Self::Ssh(p) => p.clone(),
        }
    }
}

/// The write-only part of a target's configuration, sealed at rest.
#[derive(Default, Serialize, Deserialize)]
pub struct TargetSecrets {
    /// PostgreSQL admin connection URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_url: Option<String>,
    /// The SSH user CA's private key (OpenSSH format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_private_key: Option<String>,
}

impl Drop for TargetSecrets {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        if let Some(s) = &mut self.admin_url {
            s.zeroize();
        }
        if let Some(s) = &mut self.ca_private_key {
            s.zeroize();
        }
    }
}

impl std::fmt::Debug for TargetSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TargetSecrets([redacted])")
    }
}

/// A random 64-bit value (certificate serials, jitter).
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // aws-lc's generator does not fail on supported platforms; a zero would still be handled.
    let _ = aws_lc_rs::rand::fill(&mut b);
    u64::from_le_bytes(b)
}
