//! Authentication of callers by API key, from memory.
//!
//! API keys are 256-bit random values shown once; the store keeps their SHA-256. The directory indexes
//! live principals by the first 16 hex digits of that hash and compares the full hash in constant time.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use sha2::{Digest, Sha256};
use stint_store::PrincipalRecord;
use subtle::ConstantTimeEq;

/// Every API key starts with this.
pub const KEY_PREFIX: &str = "stint_";

/// A fresh API key: `stint_` and 43 base64url characters (256 random bits).
pub fn new_api_key() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
    Ok(format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// Hex SHA-256 of a key, as stored.
pub fn key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// True when `key` has the shape of an API key (checked before hashing anything).
pub fn well_formed(key: &str) -> bool {
    key.len() == KEY_PREFIX.len() + 43
        && key.starts_with(KEY_PREFIX)
        && key[KEY_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Live principals by key hash.
#[derive(Debug, Default)]
pub struct Directory {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// First 16 hex digits of the key hash → principals (almost always one).
    by_prefix: HashMap<String, Vec<Arc<PrincipalRecord>>>,
    /// Live principal id → its key-hash prefix.
    by_id: HashMap<String, String>,
}

fn prefix(hash: &str) -> String {
    hash.get(..16).unwrap_or(hash).to_owned()
}

impl Directory {
    /// Adds or replaces a principal (replacing drops its old key at once; an offboarded principal
    /// is removed).
    pub fn upsert(&self, p: PrincipalRecord) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = inner.by_id.remove(&p.id)
            && let Some(list) = inner.by_prefix.get_mut(&old)
        {
            list.retain(|q| q.id != p.id);
            if list.is_empty() {
                inner.by_prefix.remove(&old);
            }
        }
        if let (Some(h), None) = (&p.key_hash, p.deleted_at) {
            let pre = prefix(h);
            inner.by_id.insert(p.id.clone(), pre.clone());
            inner.by_prefix.entry(pre).or_default().push(Arc::new(p));
        }
    }

    /// True while the principal with this id is live (not offboarded).
    pub fn is_live(&self, id: &str) -> bool {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_id
            .contains_key(id)
    }

    /// Every live principal.
    pub fn all(&self) -> Vec<Arc<PrincipalRecord>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.by_prefix.values().flatten().cloned().collect()
    }

    /// The live principal with this name, if any (token exchange maps claims to a principal's name).
    pub fn by_name(&self, name: &str) -> Option<Arc<PrincipalRecord>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner
            .by_prefix
            .values()
            .flatten()
            .find(|p| p.name == name)
            .cloned()
    }

    /// The live principal holding `key`, if any.
    pub fn authenticate(&self, key: &str) -> Option<Arc<PrincipalRecord>> {
        if !well_formed(key) {
            return None;
        }
        let h = key_hash(key);
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner
            .by_prefix
            .get(&prefix(&h))?
            .iter()
            .find(|p| {
                p.key_hash
                    .as_deref()
                    .is_some_and(|stored| bool::from(stored.as_bytes().ct_eq(h.as_bytes())))
            })
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn keys_authenticate_until_replaced() {
        let d = Directory::default();
        let key = new_api_key().unwrap_or_default();
        assert!(well_formed(&key));
        let mut p = PrincipalRecord {
            id: "prn_1".into(),
            name: "ci".into(),
            kind: "service".into(),
            groups: vec![],
            key_hash: Some(key_hash(&key)),
            created_at: datetime!(2026-01-01 0:00 UTC),
            deleted_at: None,
        };
        d.upsert(p.clone());
        assert_eq!(
            d.authenticate(&key).map(|p| p.id.clone()).as_deref(),
            Some("prn_1")
        );
        assert!(d.authenticate("stint_short").is_none());
        let other = new_api_key().unwrap_or_default();
        assert!(d.authenticate(&other).is_none());
        p.key_hash = Some(key_hash(&other));
        d.upsert(p.clone());
        assert!(d.authenticate(&key).is_none());
        assert!(d.authenticate(&other).is_some());
        p.deleted_at = Some(datetime!(2026-01-02 0:00 UTC));
        d.upsert(p);
        assert!(d.authenticate(&other).is_none());
    }
}
