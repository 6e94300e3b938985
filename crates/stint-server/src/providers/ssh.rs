//! The `ssh` provider: OpenSSH user certificates signed by the target's own user CA, and a KRL (key
//! revocation list) of the serials of certificates revoked before their validity ended. The KRL is
//! rebuilt from the store (the revocation ledger), written atomically to `krl_path` for the host's
//! `RevokedKeys`, and served at `GET /v1/targets/{name}/krl`.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use stint_core::{Clock, Credential, CredentialKind, Revocation};
use stint_ssh::{CertRequest, UserCa};
use stint_store::Store;
use time::OffsetDateTime;

use super::{Activation, IssueRequest, Prepared, Provider, ProviderError, Secret, Zombie};

/// Certificate options.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SshOptions {
    /// Forced command.
    #[serde(rename = "force-command", default, skip_serializing_if = "Option::is_none")]
    pub force_command: Option<String>,
    /// Allowed client addresses (comma-separated CIDR list).
    #[serde(rename = "source-address", default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<String>,
}

/// `config` of an ssh target as given to `POST /v1/targets`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshInput {
    /// Certificate principals (login names on the host).
    pub principals: Vec<String>,
    /// Where to write the KRL for the host's `RevokedKeys`.
    pub krl_path: Option<String>,
    /// Critical options.
    #[serde(default)]
    pub options: SshOptions,
    /// Certificate extensions (default `["permit-pty"]`).
    pub extensions: Option<Vec<String>>,
    /// An existing CA private key (OpenSSH format, write-only); default: a new CA.
    pub ca_private_key: Option<String>,
}

impl std::fmt::Debug for SshInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshInput")
            .field("principals", &self.principals)
            .field("krl_path", &self.krl_path)
            .field(
                "ca_private_key",
                &self.ca_private_key.as_ref().map(|_| "[redacted]"),
            )
            .finish_non_exhaustive()
    }
}

/// The stored, public part of an ssh target's configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SshConfig {
    /// Certificate principals.
    pub principals: Vec<String>,
    /// KRL file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub krl_path: Option<String>,
    /// Critical options.
    #[serde(default)]
    pub options: SshOptions,
    /// Extensions.
    pub extensions: Vec<String>,
}

const EXTENSIONS: [&str; 5] = [
    "permit-pty",
    "permit-port-forwarding",
    "permit-agent-forwarding",
    "permit-X11-forwarding",
    "permit-user-rc",
];

/// Validates the input; returns the public config and the CA (new or given).
pub fn parse_config(raw: Value) -> Result<(SshConfig, UserCa), String> {
    let input: SshInput = serde_json::from_value(raw).map_err(|e| {
        let msg = e.to_string();
        format!(
            "ssh `config`: {}",
            msg.split(" at line").next().unwrap_or("invalid")
        )
    })?;
    if input.principals.is_empty() || input.principals.len() > 32 {
        return Err("ssh `config.principals` must list 1 to 32 login names".into());
    }
    for p in &input.principals {
        let ok = !p.is_empty()
            && p.len() <= 64
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b));
        if !ok {
            return Err(format!(
                "ssh principal `{}` is not a valid login name",
                p.escape_debug()
            ));
        }
    }
    if let Some(path) = &input.krl_path {
        let p = std::path::Path::new(path);
        if !p.is_absolute() || path.contains('\0') || path.len() > 4096 {
            return Err("`krl_path` must be an absolute path".into());
        }
        if p.parent().is_none_or(|d| !d.is_dir()) {
            return Err("`krl_path`'s directory does not exist".into());
        }
    }
    if let Some(fc) = &input.options.force_command
        && (fc.is_empty() || fc.len() > 1024 || fc.contains('\0'))
    {
        return Err("`force-command` must be 1 to 1024 characters".into());
    }
    let extensions = input.extensions.unwrap_or_else(|| vec!["permit-pty".to_owned()]);
    for e in &extensions {
        if !EXTENSIONS.contains(&e.as_str()) {
            return Err(format!(
                "unknown extension `{}`; known: {}",
                e.escape_debug(),
                EXTENSIONS.join(", ")
            ));
        }
    }
    let ca = match &input.ca_private_key {
        Some(pem) => UserCa::from_openssh(pem).map_err(|e| format!("`ca_private_key`: {e}"))?,
        None => UserCa::generate().map_err(|e| format!("creating the CA failed: {e}"))?,
    };
    let cfg = SshConfig {
        principals: input.principals,
        krl_path: input.krl_path,
        options: input.options,
        extensions,
    };
    // Check the options once with a throwaway certificate, so a bad source-address fails now.
    let probe = UserCa::generate().map_err(|e| e.to_string())?;
    ca.sign_user_cert(&CertRequest {
        public_key: &probe.public_key_openssh(),
        serial: 1,
        key_id: "probe",
        principals: &cfg.principals,
        valid_after: 0,
        valid_before: 1,
        force_command: cfg.options.force_command.as_deref(),
        source_address: cfg.options.source_address.as_deref(),
        extensions: &cfg.extensions.iter().map(String::as_str).collect::<Vec<_>>(),
    })
    .map_err(|e| format!("ssh `config.options`: {e}"))?;
    Ok((cfg, ca))
}

/// An ssh target's provider.
#[derive(Debug)]
pub struct SshProvider {
    target: String,
    cfg: SshConfig,
    ca: UserCa,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// Serializes KRL rebuilds and writes.
    krl_lock: tokio::sync::Mutex<()>,
    /// Revocations asked for so far (each registered after its ledger row was committed).
    requested: std::sync::atomic::AtomicU64,
    /// The highest `requested` value a written KRL is known to cover: a burst of revocations shares
    /// one rebuild instead of rewriting the file once per certificate.
    covered: std::sync::atomic::AtomicU64,
}

impl SshProvider {
    /// Builds the provider.
    pub fn new(
        target: &str,
        cfg: SshConfig,
        ca: UserCa,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            target: target.to_owned(),
            cfg,
            ca,
            store,
            clock,
            krl_lock: tokio::sync::Mutex::new(()),
            requested: std::sync::atomic::AtomicU64::new(0),
            covered: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The CA's public key for the host's `TrustedUserCAKeys`.
    pub fn ca_public_key(&self) -> String {
        self.ca.public_key_openssh()
    }

    async fn revoked_serials(&self) -> Result<Vec<u64>, ProviderError> {
        let now = self.clock.now();
        let handles = self
            .store
            .revoked_handles(&self.target, CredentialKind::Ssh, now)
            .await
            .map_err(|e| ProviderError::Unavailable(format!("reading revoked serials: {e}")))?;
        Ok(handles.iter().filter_map(|h| h.parse().ok()).collect())
    }

    /// The current KRL, built from the store.
    pub async fn krl(&self) -> Result<Vec<u8>, ProviderError> {
        let serials = self.revoked_serials().await?;
        Ok(self.encode(&serials))
    }

    fn encode(&self, serials: &[u64]) -> Vec<u8> {
        let now = self.clock.now();
        let version = u64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        stint_ssh::encode_krl(
            &self.ca.public_key_blob(),
            serials,
            version,
            u64::try_from(now.unix_timestamp()).unwrap_or(0),
            &format!("stint KRL for target {}", self.target),
        )
    }

    /// Rebuilds the KRL and writes it to `krl_path` (atomically). Returns the serials it lists and
    /// whether the file on disk was missing any of them.
    pub async fn publish(&self) -> Result<(Vec<u64>, Vec<u64>), ProviderError> {
        let _g = self.krl_lock.lock().await;
        self.publish_locked().await
    }

    async fn publish_locked(&self) -> Result<(Vec<u64>, Vec<u64>), ProviderError> {
        use std::sync::atomic::Ordering;
        // Every revocation registered before this read is in the store, so this KRL covers it.
        let upto = self.requested.load(Ordering::Acquire);
        let serials = self.revoked_serials().await?;
        let Some(path) = &self.cfg.krl_path else {
            self.covered.fetch_max(upto, Ordering::AcqRel);
            return Ok((serials, Vec::new()));
        };
        let path = PathBuf::from(path);
        let on_disk = std::fs::read(&path).ok();
        let missing: Vec<u64> = match &on_disk {
            Some(bytes) => {
                let ca = self.ca.public_key_blob();
                serials
                    .iter()
                    .copied()
                    .filter(|s| !stint_ssh::krl_revokes(bytes, &ca, *s).unwrap_or(false))
                    .collect()
            }
            None => serials.clone(),
        };
        let bytes = self.encode(&serials);
        let tmp = path.with_extension("stint-tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| ProviderError::Unavailable(format!("writing the KRL: {e}")))?;
        self.covered.fetch_max(upto, Ordering::AcqRel);
        Ok((serials, missing))
    }
}

fn unix(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp()).unwrap_or(0)
}

#[async_trait]
impl Provider for SshProvider {
    fn prepare(&self, req: &IssueRequest<'_>) -> Result<Prepared, ProviderError> {
        let public_key = req
            .public_key
            .ok_or_else(|| ProviderError::Refused("an ssh credential needs `public_key`".into()))?;
        let serial = loop {
            let s = super::random_u64() >> 1;
            if s != 0 {
                break s;
            }
        };
        let valid_after = req.session.activated_at.unwrap_or(req.now).min(req.now);
        let extensions: Vec<&str> = self.cfg.extensions.iter().map(String::as_str).collect();
        let certificate = self
            .ca
            .sign_user_cert(&CertRequest {
                public_key,
                serial,
                key_id: req.session.id.as_str(),
                principals: &self.cfg.principals,
                valid_after: unix(valid_after),
                valid_before: unix(req.expires_at),
                force_command: self.cfg.options.force_command.as_deref(),
                source_address: self.cfg.options.source_address.as_deref(),
                extensions: &extensions,
            })
            .map_err(|e| ProviderError::Refused(format!("`public_key`: {e}")))?;
        Ok(Prepared {
            credential: Credential {
                id: req.id.clone(),
                kind: CredentialKind::Ssh,
                handle: serial.to_string(),
                key_id: stint_ssh::fingerprint(public_key).ok(),
                issued_at: req.now,
                expires_at: req.expires_at,
                revoked_at: None,
                revocation: Revocation::None,
                first_used_at: None,
                revocation_attempts: 0,
                revocation_error: None,
            },
            secret: Secret::Ssh {
                certificate,
                principals: self.cfg.principals.clone(),
                valid_after,
                valid_before: req.expires_at,
            },
            activation: Activation::None,
        })
    }

    async fn activate(&self, _p: &Prepared) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn revoke(&self, handle: &str) -> Result<(), ProviderError> {
        let serial: u64 = handle
            .parse()
            .map_err(|_| ProviderError::Config(format!("`{handle}` is not a certificate serial")))?;
        use std::sync::atomic::Ordering;
        // The ledger row was committed before this job ran, so any KRL read from the store after
        // this registration lists the serial (unless the certificate already expired: dead too).
        let ticket = self.requested.fetch_add(1, Ordering::AcqRel) + 1;
        let _g = self.krl_lock.lock().await;
        if self.covered.load(Ordering::Acquire) >= ticket {
            return Ok(());
        }
        let (serials, _) = self.publish_locked().await?;
        tracing::debug!(target = %self.target, serial, listed = serials.contains(&serial), "KRL published");
        Ok(())
    }

    async fn reconcile(&self, _owned: &HashSet<String>) -> Result<Vec<Zombie>, ProviderError> {
        // Certificates cannot be listed on the host; what can be wrong is a KRL file that lost
        // serials (edited, replaced, deleted). Rewrite it and report what was missing.
        let (_, missing) = self.publish().await?;
        Ok(missing
            .into_iter()
            .map(|s| Zombie {
                target: self.target.clone(),
                credential: s.to_string(),
                action: "added_to_krl".into(),
            })
            .collect())
    }
}
