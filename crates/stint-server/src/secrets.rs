//! Secrets at rest: target admin credentials and SSH CA private keys are sealed with AES-256-GCM
//! (aws-lc-rs) under a key-encryption key (KEK). The KEK comes from `STINT_MASTER_KEY` (32 bytes,
//! base64) or, by default, from `<data dir>/master.key` (created 0600 on first start). Each sealed
//! blob is bound to its owner (the target's name) as associated data, so a blob copied onto another
//! target does not open.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;
use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use zeroize::Zeroizing;

/// Prefix of a sealed blob (format version).
const SEALED_PREFIX: &str = "v1.";

/// The key-encryption key.
pub struct Kek {
    key: RandomizedNonceKey,
    /// Where it came from (for logs; never the key).
    pub source: &'static str,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kek")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Why a sealed blob did not open (never says more: no oracle).
#[derive(Debug, thiserror::Error)]
#[error("a sealed secret could not be opened (wrong master key or damaged data)")]
pub struct OpenError;

fn decode_key(text: &str) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let t = text.trim();
    let bytes = STANDARD
        .decode(t)
        .or_else(|_| URL_SAFE_NO_PAD.decode(t.trim_end_matches('=')))
        .map_err(|_| anyhow::anyhow!("the master key must be 32 bytes in base64"))?;
    let bytes = Zeroizing::new(bytes);
    anyhow::ensure!(bytes.len() == 32, "the master key must be 32 bytes in base64");
    Ok(bytes)
}

impl Kek {
    /// From 32 raw bytes.
    pub fn from_bytes(bytes: &[u8], source: &'static str) -> anyhow::Result<Self> {
        let key = RandomizedNonceKey::new(&AES_256_GCM, bytes)
            .map_err(|_| anyhow::anyhow!("the master key must be 32 bytes"))?;
        Ok(Self { key, source })
    }

    /// `STINT_MASTER_KEY` if given, else `<data_dir>/master.key`, created on first use.
    pub fn load(data_dir: &Path, env: Option<&str>) -> anyhow::Result<Self> {
        if let Some(text) = env {
            let bytes = decode_key(text).context("STINT_MASTER_KEY")?;
            return Self::from_bytes(&bytes, "STINT_MASTER_KEY");
        }
        let path = data_dir.join("master.key");
        if path.exists() {
            let mode = std::fs::metadata(&path)?.permissions().mode();
            anyhow::ensure!(
                mode & 0o077 == 0,
                "`{}` is readable by others (mode {:o}); chmod 600 it",
                path.display(),
                mode & 0o777
            );
            let text = Zeroizing::new(std::fs::read_to_string(&path)?);
            let bytes = decode_key(&text).with_context(|| format!("`{}`", path.display()))?;
            return Self::from_bytes(&bytes, "master.key");
        }
        let mut raw = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(raw.as_mut()).map_err(|_| anyhow::anyhow!("no randomness"))?;
        let text = Zeroizing::new(STANDARD.encode(raw.as_ref()));
        let tmp = data_dir.join("master.key.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating `{}`", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        Self::from_bytes(raw.as_ref(), "master.key")
    }

    /// Seals `plaintext` for `owner`.
    pub fn seal(&self, owner: &str, plaintext: &[u8]) -> anyhow::Result<String> {
        let mut buf = Zeroizing::new(plaintext.to_vec());
        let nonce = self
            .key
            .seal_in_place_append_tag(Aad::from(owner.as_bytes()), &mut *buf)
            .map_err(|_| anyhow::anyhow!("sealing failed"))?;
        let mut out = Vec::with_capacity(NONCE_LEN + buf.len());
        out.extend_from_slice(nonce.as_ref());
        out.extend_from_slice(&buf);
        Ok(format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(out)))
    }

    /// Opens a blob sealed for `owner`.
    pub fn open(&self, owner: &str, sealed: &str) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        let body = sealed.strip_prefix(SEALED_PREFIX).ok_or(OpenError)?;
        let raw = URL_SAFE_NO_PAD.decode(body).map_err(|_| OpenError)?;
        if raw.len() < NONCE_LEN {
            return Err(OpenError);
        }
        let (n, ct) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(n).map_err(|_| OpenError)?;
        let mut buf = Zeroizing::new(ct.to_vec());
        let len = self
            .key
            .open_in_place(nonce, Aad::from(owner.as_bytes()), &mut buf)
            .map_err(|_| OpenError)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

/// Checks that a data dir's master key file, if any, is private.
pub fn check_permissions(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_blobs_open_only_for_their_owner_and_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kek = Kek::load(dir.path(), None).expect("kek");
        assert!(check_permissions(&dir.path().join("master.key")));
        let sealed = kek.seal("db-prod", b"postgres://admin:pw@db/prod").expect("seal");
        assert!(!sealed.contains("pw@"), "ciphertext must not show the secret");
        assert_eq!(
            &*kek.open("db-prod", &sealed).expect("open"),
            b"postgres://admin:pw@db/prod"
        );
        assert!(kek.open("db-other", &sealed).is_err(), "bound to its owner");
        // The same key file opens it again after a restart; another key does not.
        let again = Kek::load(dir.path(), None).expect("reload");
        assert!(again.open("db-prod", &sealed).is_ok());
        let other = Kek::load(dir.path(), Some(&STANDARD.encode([7u8; 32]))).expect("env key");
        assert!(other.open("db-prod", &sealed).is_err());
        // Tampering is detected.
        let mut bad = sealed.clone().into_bytes();
        let last = bad.len() - 2;
        bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
        assert!(
            kek.open("db-prod", &String::from_utf8(bad).expect("utf8"))
                .is_err()
        );
        assert!(format!("{kek:?}").contains("master.key"));
    }

    #[test]
    fn master_keys_of_the_wrong_size_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(Kek::load(dir.path(), Some("c2hvcnQ=")).is_err());
        assert!(Kek::load(dir.path(), Some("not base64 !!")).is_err());
    }
}
