//! stint's published verification keys and the rules for fetching them again.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};

/// The Ed25519 keys of one JWKS, by key id.
#[derive(Default)]
pub(crate) struct KeySet {
    keys: HashMap<String, DecodingKey>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.keys.keys()).finish()
    }
}

#[derive(serde::Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

impl KeySet {
    /// Parses a JWKS document, keeping only Ed25519 signing keys with a key id. Keys of other kinds
    /// (or that fail to parse) are skipped so that a new key type at stint never locks us out.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, serde_json::Error> {
        let raw: RawSet = serde_json::from_slice(body)?;
        let mut keys = HashMap::new();
        for value in raw.keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
                continue;
            };
            if let Some((kid, key)) = usable(&jwk) {
                keys.insert(kid, key);
            }
        }
        Ok(Self { keys })
    }

    /// The key named `kid`.
    pub(crate) fn get(&self, kid: &str) -> Option<&DecodingKey> {
        self.keys.get(kid)
    }

    /// How many keys there are.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }
}

fn usable(jwk: &Jwk) -> Option<(String, DecodingKey)> {
    let kid = jwk.common.key_id.clone()?;
    let AlgorithmParameters::OctetKeyPair(okp) = &jwk.algorithm else {
        return None;
    };
    if okp.curve != EllipticCurve::Ed25519 {
        return None;
    }
    if !matches!(jwk.common.public_key_use, None | Some(PublicKeyUse::Signature)) {
        return None;
    }
    if !matches!(jwk.common.key_algorithm, None | Some(KeyAlgorithm::EdDSA)) {
        return None;
    }
    let key = DecodingKey::from_ed_components(&okp.x).ok()?;
    Some((kid, key))
}

/// Decides when an unknown key id may trigger a fetch of the JWKS: at most once per `per_kid` for the
/// same key id, and never more often than `floor` overall, so tokens with made-up key ids cannot turn
/// a resource server into a load generator against stint.
#[derive(Debug)]
pub(crate) struct RefreshLimiter {
    per_kid: Duration,
    floor: Duration,
    last_fetch: Option<Instant>,
    tried: HashMap<String, Instant>,
}

/// At most this many key ids are remembered; beyond it every unknown id waits for `per_kid`.
const MAX_TRACKED_KIDS: usize = 1024;

impl RefreshLimiter {
    pub(crate) fn new(per_kid: Duration, floor: Duration) -> Self {
        Self {
            per_kid,
            floor,
            last_fetch: None,
            tried: HashMap::new(),
        }
    }

    /// Whether a fetch for `kid` may start at `now`; if so, records it.
    pub(crate) fn allow(&mut self, kid: &str, now: Instant) -> bool {
        if self
            .last_fetch
            .is_some_and(|t| now.duration_since(t) < self.floor)
        {
            return false;
        }
        if self
            .tried
            .get(kid)
            .is_some_and(|t| now.duration_since(*t) < self.per_kid)
        {
            return false;
        }
        let per_kid = self.per_kid;
        self.tried.retain(|_, t| now.duration_since(*t) < per_kid);
        if self.tried.len() >= MAX_TRACKED_KIDS {
            return false;
        }
        self.tried.insert(kid.to_owned(), now);
        self.last_fetch = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    #[test]
    fn only_ed25519_signing_keys_with_a_kid_are_kept() {
        let body = format!(
            r#"{{"keys":[
            {{"kty":"OKP","crv":"Ed25519","x":"{X}","kid":"a","alg":"EdDSA","use":"sig"}},
            {{"kty":"OKP","crv":"Ed25519","x":"{X}"}},
            {{"kty":"OKP","crv":"Ed25519","x":"{X}","kid":"enc","use":"enc"}},
            {{"kty":"RSA","n":"AQAB","e":"AQAB","kid":"rsa"}},
            {{"kty":"EC","crv":"P-256","x":"{X}","y":"{X}","kid":"ec"}},
            {{"kty":"weird","kid":"w"}},
            {{"kty":"OKP","crv":"Ed25519","x":"{X}","kid":"b"}}
            ]}}"#
        );
        let set = KeySet::parse(body.as_bytes()).expect("parses");
        assert_eq!(set.len(), 2);
        assert!(set.get("a").is_some() && set.get("b").is_some());
        assert!(set.get("rsa").is_none() && set.get("enc").is_none());
    }

    #[test]
    fn a_document_without_keys_is_an_error() {
        assert!(KeySet::parse(b"{}").is_err());
        assert!(KeySet::parse(b"not json").is_err());
    }

    #[test]
    fn refresh_is_limited_per_kid_and_overall() {
        let mut l = RefreshLimiter::new(Duration::from_secs(10), Duration::from_secs(1));
        let t0 = Instant::now();
        assert!(l.allow("k1", t0));
        assert!(!l.allow("k2", t0 + Duration::from_millis(500)), "global floor");
        assert!(l.allow("k2", t0 + Duration::from_secs(1)));
        assert!(
            !l.allow("k1", t0 + Duration::from_secs(9)),
            "same kid within 10 s"
        );
        assert!(l.allow("k1", t0 + Duration::from_secs(10)));
    }

    #[test]
    fn tracked_kids_are_bounded() {
        let mut l = RefreshLimiter::new(Duration::from_secs(10), Duration::ZERO);
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED_KIDS {
            assert!(l.allow(&format!("k{i}"), t0));
        }
        assert!(!l.allow("one-more", t0));
        assert!(
            l.allow("one-more", t0 + Duration::from_secs(10)),
            "old entries expire"
        );
    }
}
