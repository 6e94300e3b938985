//! A fake OIDC issuer for end-to-end tests of RFC 8693 token exchange (CI workload identity federation):
//! serves `/.well-known/openid-configuration` and `/jwks` on a loopback port, and mints GitHub-Actions-shaped
//! ID tokens with one current key per algorithm (RS256, ES256, EdDSA). Keys rotate on demand; forged tokens
//! (alg `none`, HS256 keyed with the RSA public key, a flipped signature byte) serve negative tests.
//!
//! The server runs on its own thread with its own runtime, so it keeps answering while a `#[tokio::test]`
//! (current-thread runtime) blocks on a child process, e.g. a CLI call whose server fetches the JWKS.

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
use axum::Json;
use axum::extract::State;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// The signing algorithms the issuer holds a key for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    Rs256,
    Es256,
    EdDsa,
}

impl Alg {
    const ALL: [Alg; 3] = [Alg::Rs256, Alg::Es256, Alg::EdDsa];

    fn jwt(self) -> Algorithm {
        match self {
            Alg::Rs256 => Algorithm::RS256,
            Alg::Es256 => Algorithm::ES256,
            Alg::EdDsa => Algorithm::EdDSA,
        }
    }

    /// The JOSE name (`RS256`, `ES256`, `EdDSA`).
    fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One signing key: the private half for jsonwebtoken, the published JWK, and the public key as PEM.
struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
    /// SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`), the HMAC secret of the confusion attack.
    public_pem: String,
}

impl SigningKey {
    /// A fresh key with a random kid such as `rs256-3f9c…`, so kids never collide across issuers.
    fn generate(alg: Alg) -> SigningKey {
        let kid = format!("{}-{}", alg.name().to_lowercase(), &random_uuid()[..8]);
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let rng = SystemRandom::new();
        let (encoding, mut jwk, spki) = match alg {
            Alg::Rs256 => {
                let pair = aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048).expect("RSA keygen");
                // jsonwebtoken's `from_rsa_der` wants PKCS#1; its PEM reader unwraps PKCS#8 for us.
                let pkcs8 = pair.as_der().expect("RSA PKCS#8");
                let pem = pem("PRIVATE KEY", pkcs8.as_ref());
                let public = pair.public_key();
                let jwk = json!({
                    "kty": "RSA",
                    "n": b64(public.modulus().big_endian_without_leading_zero()),
                    "e": b64(public.exponent().big_endian_without_leading_zero()),
                });
                let spki = public.as_der().expect("RSA SPKI").as_ref().to_vec();
                let encoding = EncodingKey::from_rsa_pem(pem.as_bytes()).expect("RSA key");
                (encoding, jwk, spki)
            }
            Alg::Es256 => {
                let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .expect("P-256 keygen");
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
                    .expect("P-256 key");
                let public = pair.public_key();
                let point = public.as_ref(); // uncompressed: 0x04 || x || y
                assert!(point.len() == 65 && point[0] == 4, "uncompressed P-256 point");
                let jwk = json!({
                    "kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..]),
                });
                let spki = public.as_der().expect("EC SPKI").as_ref().to_vec();
                (EncodingKey::from_ec_der(pkcs8.as_ref()), jwk, spki)
            }
            Alg::EdDsa => {
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("Ed25519 keygen");
                let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("Ed25519 key");
                let public = pair.public_key();
                // Built from the public key: `Jwk::from_encoding_key` rejects PKCS#8 v2 Ed25519 keys.
                let jwk = json!({ "kty": "OKP", "crv": "Ed25519", "x": b64(public.as_ref()) });
                let spki = public.as_der().expect("Ed25519 SPKI").as_ref().to_vec();
                (EncodingKey::from_ed_der(pkcs8.as_ref()), jwk, spki)
            }
        };
        jwk["kid"] = json!(kid);
        jwk["alg"] = json!(alg.name());
        jwk["use"] = json!("sig");
        SigningKey {
            kid,
            encoding,
            jwk,
            public_pem: pem("PUBLIC KEY", &spki),
        }
    }
}

/// What the server and the handle share.
struct Shared {
    url: String,
    /// The current key per [`Alg`], indexed by `Alg::index`.
    keys: RwLock<Vec<SigningKey>>,
    jwks_fetches: AtomicUsize,
}

impl Shared {
    fn jwks(&self) -> Value {
        let keys = self.keys.read().unwrap();
        json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
    }
}

/// A running fake issuer; the server stops when this is dropped.
pub struct Issuer {
    /// `http://127.0.0.1:PORT`, also the `iss` of minted tokens.
    pub url: String,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// Generates an RS256 (RSA-2048), an ES256 (P-256) and an EdDSA (Ed25519) key and serves discovery and
    /// the JWKS on a free loopback port.
    pub async fn start() -> Issuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind issuer");
        let url = format!("http://{}", listener.local_addr().expect("issuer addr"));
        let listener = listener.into_std().expect("std listener");
        let shared = Arc::new(Shared {
            url: url.clone(),
            keys: RwLock::new(Alg::ALL.into_iter().map(SigningKey::generate).collect()),
            jwks_fetches: AtomicUsize::new(0),
        });
        let app = axum::Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .with_state(Arc::clone(&shared));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("issuer runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("issuer listener");
                tokio::select! {
                    served = axum::serve(listener, app) => served.expect("issuer server"),
                    _ = stopped => {}
                }
            });
            // Dropping the runtime here also drops open keep-alive connections.
        });
        Issuer {
            url,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `{url}/jwks`.
    pub fn jwks_url(&self) -> String {
        format!("{}/jwks", self.url)
    }

    /// The JWKS document currently served (one key per algorithm), for trusts configured with inline keys.
    pub fn jwks_json(&self) -> Value {
        self.shared.jwks()
    }

    /// A token signed with the current key of `alg`; the header has that key's kid and typ `JWT`.
    pub fn mint(&self, alg: Alg, claims: &Value) -> String {
        self.sign(alg, None, claims)
    }

    /// Signed with the current key of `alg`, but the header claims `kid` (for unknown-kid tests).
    pub fn mint_with_kid(&self, alg: Alg, kid: &str, claims: &Value) -> String {
        self.sign(alg, Some(kid), claims)
    }

    fn sign(&self, alg: Alg, kid: Option<&str>, claims: &Value) -> String {
        let keys = self.shared.keys.read().unwrap();
        let key = &keys[alg.index()];
        let mut header = Header::new(alg.jwt());
        header.kid = Some(kid.unwrap_or(&key.kid).to_owned());
        jsonwebtoken::encode(&header, claims, &key.encoding).expect("sign token")
    }

    /// Replaces the key of `alg` with a new one (new kid); the next `/jwks` fetch no longer lists the old one.
    /// Returns the new kid.
    pub fn rotate(&self, alg: Alg) -> String {
        let key = SigningKey::generate(alg);
        let kid = key.kid.clone();
        self.shared.keys.write().unwrap()[alg.index()] = key;
        kid
    }

    /// GitHub-Actions-shaped ID token claims from this issuer, valid from now for 300 s.
    pub fn github_claims(&self, audience: &str, run_id: &str) -> Value {
        let now = now_unix();
        json!({
            "iss": self.url,
            "aud": audience,
            "sub": "repo:acme/deploy:ref:refs/heads/main",
            "repository": "acme/deploy",
            "repository_owner": "acme",
            "ref": "refs/heads/main",
            "workflow": "deploy",
            "environment": "prod",
            "run_id": run_id,
            "run_attempt": "1",
            "actor": "octocat",
            "event_name": "push",
            "jti": random_uuid(),
            "iat": now,
            "nbf": now,
            "exp": now + 300,
        })
    }

    /// How many times `/jwks` has been fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn discovery(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({
        "issuer": shared.url,
        "jwks_uri": format!("{}/jwks", shared.url),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
    }))
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Json<Value> {
    shared.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    Json(shared.jwks())
}

/// A token with header `{"alg":"none","typ":"JWT"}` and an empty signature.
pub fn unsigned_token(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims JSON"));
    format!("{header}.{payload}.")
}

/// The classic algorithm-confusion forgery: HS256 keyed with the PEM (SubjectPublicKeyInfo) of the issuer's
/// current RSA public key, with that key's kid in the header.
pub fn hs256_with_public_key(issuer: &Issuer, claims: &Value) -> String {
    let keys = issuer.shared.keys.read().unwrap();
    let rsa = &keys[Alg::Rs256.index()];
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(rsa.kid.clone());
    let key = EncodingKey::from_secret(rsa.public_pem.as_bytes());
    jsonwebtoken::encode(&header, claims, &key).expect("sign HS256")
}

/// The same token with the first signature byte flipped (decoded, changed, re-encoded, so it stays valid
/// base64url).
pub fn tamper_signature(token: &str) -> String {
    let (signed, signature) = token.rsplit_once('.').expect("a JWT");
    let mut sig = URL_SAFE_NO_PAD.decode(signature).expect("base64url signature");
    match sig.first_mut() {
        Some(byte) => *byte ^= 0x01,
        None => sig.push(0),
    }
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// Unix seconds from the system clock (the issuer stands for an outside party, not the server's clock).
#[expect(clippy::disallowed_methods, reason = "test issuer")]
fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A random (version 4) UUID from the system CSPRNG.
fn random_uuid() -> String {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).expect("random bytes");
    uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
}

/// PEM armour with 64-column lines.
fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}
