//! Token signing keys: Ed25519, created on first start, kept in `<data-dir>/keys/` (mode 0600),
//! published as a JWKS, rotated with overlap.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::Context;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// One Ed25519 signing key.
struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: Jwk,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RingFile {
    current: String,
    previous: Vec<Retired>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Retired {
    kid: String,
    /// Published until every token it signed has expired.
    #[serde(with = "time::serde::rfc3339")]
    publish_until: OffsetDateTime,
}

#[derive(Debug)]
struct Ring {
    current: Arc<SigningKey>,
    previous: Vec<(Arc<SigningKey>, OffsetDateTime)>,
}

/// The set of signing keys.
#[derive(Debug)]
pub struct KeyRing {
    dir: PathBuf,
    ring: RwLock<Ring>,
}

fn load_key(dir: &Path, kid: &str) -> anyhow::Result<SigningKey> {
    let der =
        fs::read(dir.join(format!("{kid}.pk8"))).with_context(|| format!("reading signing key `{kid}`"))?;
    from_pkcs8(&der)
}

fn from_pkcs8(der: &[u8]) -> anyhow::Result<SigningKey> {
    let pair = Ed25519KeyPair::from_pkcs8(der).map_err(|_| anyhow::anyhow!("bad signing key"))?;
    let public = pair.public_key().as_ref().to_vec();
    let kid = hex::encode(&Sha256::digest(&public)[..12]);
    let decoding = DecodingKey::from_ed_der(&public);
    // Built from the public key: Jwk::from_encoding_key rejects aws-lc's PKCS#8 v2 keys.
    let mut jwk = Jwk::from_decoding_key(&decoding, Some(Algorithm::EdDSA))
        .map_err(|e| anyhow::anyhow!("building JWK: {e}"))?;
    jwk.common.key_id = Some(kid.clone());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    jwk.common.key_algorithm = Some(KeyAlgorithm::EdDSA);
    Ok(SigningKey {
        kid,
        encoding: EncodingKey::from_ed_der(der),
        decoding,
        jwk,
    })
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating `{}`", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

fn generate(dir: &Path) -> anyhow::Result<SigningKey> {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| anyhow::anyhow!("generating a signing key failed"))?;
    let key = from_pkcs8(pkcs8.as_ref())?;
    write_private(&dir.join(format!("{}.pk8", key.kid)), pkcs8.as_ref())?;
    Ok(key)
}

impl KeyRing {
    /// Loads the ring from `<data_dir>/keys`, creating the first key when there is none.
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        let dir = data_dir.join("keys");
        fs::create_dir_all(&dir)?;
        fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        let state_path = dir.join("ring.json");
        let ring = if state_path.exists() {
            let file: RingFile =
                serde_json::from_slice(&fs::read(&state_path)?).context("reading keys/ring.json")?;
            let current = Arc::new(load_key(&dir, &file.current)?);
            let mut previous = Vec::new();
            for r in file.previous {
                previous.push((Arc::new(load_key(&dir, &r.kid)?), r.publish_until));
            }
            Ring { current, previous }
        } else {
            let ring = Ring {
                current: Arc::new(generate(&dir)?),
                previous: Vec::new(),
            };
            save(&dir, &ring)?;
            ring
        };
        Ok(Self {
            dir,
            ring: RwLock::new(ring),
        })
    }

    /// Signs `claims` with the current key; returns the token and the key id.
    pub fn sign<T: Serialize>(&self, claims: &T) -> anyhow::Result<(String, String)> {
        self.sign_typed(claims, "at+jwt")
    }

    /// Signs `claims` with the current key and the given `typ` header (e.g. `secevent+jwt`).
    pub fn sign_typed<T: Serialize>(&self, claims: &T, typ: &str) -> anyhow::Result<(String, String)> {
        let key = self.read().current.clone();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        header.typ = Some(typ.to_owned());
        let token = jsonwebtoken::encode(&header, claims, &key.encoding)?;
        Ok((token, key.kid.clone()))
    }

    /// The public key of `kid`, if still published.
    pub fn decoding_key(&self, kid: &str) -> Option<DecodingKey> {
        let ring = self.read();
        std::iter::once(&ring.current)
            .chain(ring.previous.iter().map(|(k, _)| k))
            .find(|k| k.kid == kid)
            .map(|k| k.decoding.clone())
    }

    /// The JWKS: the current key and every previous key still within its overlap.
    pub fn jwks(&self, now: OffsetDateTime) -> JwkSet {
        let ring = self.read();
        let mut keys = vec![ring.current.jwk.clone()];
        keys.extend(
            ring.previous
                .iter()
                .filter(|(_, until)| *until > now)
                .map(|(k, _)| k.jwk.clone()),
        );
        JwkSet { keys }
    }

    /// Starts a new signing key; the old one stays published until `old_publish_until`.
    pub fn rotate(&self, now: OffsetDateTime, old_publish_until: OffsetDateTime) -> anyhow::Result<String> {
        let fresh = Arc::new(generate(&self.dir)?);
        let mut ring = self.ring.write().unwrap_or_else(|e| e.into_inner());
        let old = std::mem::replace(&mut ring.current, fresh.clone());
        ring.previous.retain(|(_, until)| *until > now);
        ring.previous.push((old, old_publish_until));
        save(&self.dir, &ring)?;
        Ok(fresh.kid.clone())
    }

    /// The current key's id.
    pub fn current_kid(&self) -> String {
        self.read().current.kid.clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Ring> {
        self.ring.read().unwrap_or_else(|e| e.into_inner())
    }
}

fn save(dir: &Path, ring: &Ring) -> anyhow::Result<()> {
    let file = RingFile {
        current: ring.current.kid.clone(),
        previous: ring
            .previous
            .iter()
            .map(|(k, until)| Retired {
                kid: k.kid.clone(),
                publish_until: *until,
            })
            .collect(),
    };
    let tmp = dir.join("ring.json.tmp");
    fs::write(&tmp, serde_json::to_vec_pretty(&file)?)?;
    fs::rename(&tmp, dir.join("ring.json"))?;
    Ok(())
}
