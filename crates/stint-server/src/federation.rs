//! Workload identity federation: RFC 8693 token exchange of a CI/workload OIDC ID token for a stint
//! access token bound to the workload's run. Trusts name an issuer, where its keys are (a JWKS URL,
//! fetched and cached, refreshed when a token names an unknown `kid`; or an inline JWKS), the accepted
//! audience and algorithms, and rules that map claims to a principal, a target and a binding.
//!
//! Only asymmetric algorithms are accepted (RS256, ES256, EdDSA): never `none`, never HMAC (a public
//! key used as an HMAC secret is the classic confusion attack). The key's type must fit the algorithm.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use stint_core::BindingKind;

/// Algorithms a trust may accept.
pub const ALLOWED_ALGORITHMS: [&str; 3] = ["RS256", "ES256", "EdDSA"];

/// A JWKS is fetched at most this often (an unknown `kid` triggers a refresh after this long).
pub const JWKS_MIN_REFRESH: Duration = Duration::from_secs(1);
/// A fetched JWKS is reused this long before it is fetched again.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(300);
/// Largest JWKS document accepted.
const JWKS_MAX_BYTES: usize = 256 * 1024;

/// How a rule binds the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleBinding {
    /// Binding kind (e.g. `pipeline`).
    #[schema(value_type = String)]
    pub kind: BindingKind,
    /// The claim whose value is the ref (e.g. `run_id`).
    pub ref_claim: String,
}

/// One mapping rule: when every listed claim equals its value, the token may get `target` as
/// `principal`, bound to the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Claim name → required value.
    #[serde(rename = "match")]
    pub matches: BTreeMap<String, String>,
    /// The principal's name.
    pub principal: String,
    /// The target's name.
    pub target: String,
    /// The binding.
    pub binding: RuleBinding,
    /// Longest session (also capped by the target and the ID token's `exp` plus grace).
    #[serde(default)]
    pub ttl_s: Option<u64>,
}

/// `POST /v1/trusts`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTrust {
    /// Unique name.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9._-]+$")]
    pub name: String,
    /// The `iss` of accepted ID tokens.
    pub issuer: String,
    /// Where the issuer's keys are (fetched, cached, refreshed on an unknown `kid`).
    pub jwks_url: Option<String>,
    /// The issuer's keys inline (instead of `jwks_url`).
    #[schema(value_type = Option<Object>)]
    pub jwks: Option<Value>,
    /// The `aud` ID tokens must carry.
    pub audience: String,
    /// Accepted algorithms (default all of RS256, ES256, EdDSA).
    pub algorithms: Option<Vec<String>>,
    /// Clock skew allowed (default 60 s).
    pub leeway_s: Option<u64>,
    /// How long past the ID token's `exp` its session may live (default 0).
    pub grace_s: Option<u64>,
    /// Mapping rules, first match wins.
    pub rules: Vec<Rule>,
}

/// A trust as stored and shown.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct TrustView {
    /// Name.
    pub name: String,
    /// Issuer.
    pub issuer: String,
    /// JWKS URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// Inline JWKS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub jwks: Option<Value>,
    /// Audience.
    pub audience: String,
    /// Algorithms.
    pub algorithms: Vec<String>,
    /// Leeway.
    pub leeway_s: u64,
    /// Grace.
    pub grace_s: u64,
    /// Rules.
    pub rules: Vec<Rule>,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: time::OffsetDateTime,
}

/// Validates a trust request (names of principals and targets are checked by the service).
pub fn check(req: &CreateTrust) -> Result<(Vec<String>, Option<JwkSet>), String> {
    let url_ok = |u: &str| u.starts_with("https://") || u.starts_with("http://");
    if req.issuer.is_empty() || req.issuer.len() > 512 || !url_ok(&req.issuer) {
        return Err("`issuer` must be an http(s) URL".into());
    }
    if req.audience.is_empty() || req.audience.len() > 512 {
        return Err("`audience` must be 1 to 512 characters".into());
    }
    let inline = match (&req.jwks_url, &req.jwks) {
        (Some(u), None) if url_ok(u) && u.len() <= 2048 => None,
        (Some(_), None) => return Err("`jwks_url` must be an http(s) URL".into()),
        (None, Some(j)) => Some(
            serde_json::from_value::<JwkSet>(j.clone()).map_err(|_| "`jwks` is not a JWK set".to_owned())?,
        ),
        _ => return Err("give exactly one of `jwks_url` and `jwks`".into()),
    };
    let algorithms = req
        .algorithms
        .clone()
        .unwrap_or_else(|| ALLOWED_ALGORITHMS.iter().map(|a| (*a).to_owned()).collect());
    if algorithms.is_empty() {
        return Err("`algorithms` must not be empty".into());
    }
    for a in &algorithms {
        if !ALLOWED_ALGORITHMS.contains(&a.as_str()) {
            return Err(format!(
                "algorithm `{}` is not accepted; use {}",
                a.escape_debug(),
                ALLOWED_ALGORITHMS.join(", ")
            ));
        }
    }
    if req.leeway_s.is_some_and(|l| l > 600) || req.grace_s.is_some_and(|g| g > 86_400) {
        return Err("`leeway_s` must be at most 600 and `grace_s` at most 86400".into());
    }
    if req.rules.is_empty() || req.rules.len() > 100 {
        return Err("`rules` must list 1 to 100 rules".into());
    }
    for r in &req.rules {
        if r.binding.kind == BindingKind::None || r.binding.ref_claim.is_empty() {
            return Err("each rule's `binding` needs a kind and a `ref_claim`".into());
        }
        if r.ttl_s == Some(0) {
            return Err("a rule's `ttl_s` must be at least 1".into());
        }
    }
    Ok((algorithms, inline))
}

/// Why an exchange was refused, in OAuth terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExchangeError {
    /// `invalid_request`: the subject token is not acceptable (its reason, safe to show).
    InvalidRequest(String),
    /// `invalid_target`: no access to the requested audience.
    InvalidTarget(String),
    /// The issuer's keys could not be fetched (`temporarily_unavailable`).
    Unavailable(String),
}

/// The keys of one trust.
#[derive(Debug, Default)]
pub struct KeyCache {
    set: Option<JwkSet>,
    fetched: Option<Instant>,
}

fn algorithm(name: &str) -> Option<Algorithm> {
    match name {
        "RS256" => Some(Algorithm::RS256),
        "ES256" => Some(Algorithm::ES256),
        "EdDSA" => Some(Algorithm::EdDSA),
        _ => None,
    }
}

/// Fetches a JWKS (bounded in time and size).
pub async fn fetch_jwks(http: &reqwest::Client, url: &str) -> Result<JwkSet, ExchangeError> {
    let resp = http
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|_| ExchangeError::Unavailable("the issuer's JWKS could not be fetched".into()))?;
    if !resp.status().is_success() {
        return Err(ExchangeError::Unavailable(format!(
            "the issuer's JWKS answered {}",
            resp.status()
        )));
    }
    let bytes = resp
        .bytes()
        .await
        .map_err(|_| ExchangeError::Unavailable("the issuer's JWKS could not be read".into()))?;
    if bytes.len() > JWKS_MAX_BYTES {
        return Err(ExchangeError::Unavailable(
            "the issuer's JWKS is too large".into(),
        ));
    }
    serde_json::from_slice(&bytes)
        .map_err(|_| ExchangeError::Unavailable("the issuer's JWKS is not a JWK set".into()))
}

/// A validated ID token's claims.
pub type Claims = Map<String, Value>;

/// Checks the token's header against the trust before any key is used: an accepted algorithm and a
/// `kid`. Returns both.
pub fn header_of(token: &str, trust: &TrustView) -> Result<(Algorithm, Option<String>), ExchangeError> {
    // jsonwebtoken does not know `none`: such a token fails here, as does any garbage.
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| ExchangeError::InvalidRequest("`subject_token` is not a signed JWT".into()))?;
    let name = format!("{:?}", header.alg);
    let alg = algorithm(&name)
        .filter(|_| trust.algorithms.iter().any(|a| a == &name))
        .ok_or_else(|| {
            ExchangeError::InvalidRequest(format!("algorithm {name} is not accepted by this trust"))
        })?;
    Ok((alg, header.kid))
}

/// Verifies the signature with `jwk_set`, then issuer, audience and times (with the injected `now`).
pub fn verify(
    token: &str,
    trust: &TrustView,
    alg: Algorithm,
    kid: Option<&str>,
    jwk_set: &JwkSet,
    now_unix: i64,
) -> Result<Claims, ExchangeError> {
    let jwk = match kid {
        Some(k) => jwk_set.find(k),
        None if jwk_set.keys.len() == 1 => jwk_set.keys.first(),
        None => None,
    }
    .ok_or_else(|| {
        ExchangeError::InvalidRequest("the token's key (`kid`) is not among the issuer's keys".into())
    })?;
    let key = DecodingKey::from_jwk(jwk)
        .map_err(|_| ExchangeError::InvalidRequest("the issuer's key cannot be used".into()))?;
    let mut v = Validation::new(alg);
    v.algorithms = vec![alg];
    v.set_issuer(&[&trust.issuer]);
    v.set_audience(&[&trust.audience]);
    // Times are checked below against the injected clock.
    v.validate_exp = false;
    v.validate_nbf = false;
    v.required_spec_claims = ["exp", "iss", "aud"].iter().map(|s| (*s).to_owned()).collect();
    let data = jsonwebtoken::decode::<Claims>(token, &key, &v).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind as K;
        ExchangeError::InvalidRequest(
            match e.kind() {
                K::InvalidIssuer => "wrong issuer",
                K::InvalidAudience => "wrong audience",
                K::InvalidSignature => "bad signature",
                K::InvalidAlgorithm => "the key does not fit the algorithm",
                K::MissingRequiredClaim(_) => "a required claim (exp, iss, aud) is missing",
                _ => "the token does not verify",
            }
            .into(),
        )
    })?;
    let claims = data.claims;
    let leeway = i64::try_from(trust.leeway_s).unwrap_or(60);
    let num = |k: &str| claims.get(k).and_then(Value::as_i64);
    let exp = num("exp").ok_or_else(|| ExchangeError::InvalidRequest("`exp` must be a number".into()))?;
    if exp + leeway <= now_unix {
        return Err(ExchangeError::InvalidRequest("the token has expired".into()));
    }
    if num("nbf").is_some_and(|nbf| nbf - leeway > now_unix)
        || num("iat").is_some_and(|iat| iat - leeway > now_unix)
    {
        return Err(ExchangeError::InvalidRequest("the token is not valid yet".into()));
    }
    Ok(claims)
}

/// A claim's value as text (strings as they are, numbers and booleans printed).
pub fn claim_text(claims: &Claims, name: &str) -> Option<String> {
    match claims.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The first rule whose every claim matches and whose target is `audience`.
pub fn matching_rule<'a>(
    trust: &'a TrustView,
    claims: &Claims,
    audience: &str,
) -> Result<&'a Rule, ExchangeError> {
    let mut any = false;
    for r in &trust.rules {
        if r.matches
            .iter()
            .all(|(k, v)| claim_text(claims, k).as_deref() == Some(v.as_str()))
        {
            any = true;
            if r.target == audience {
                return Ok(r);
            }
        }
    }
    if any {
        Err(ExchangeError::InvalidTarget(format!(
            "this workload may not get `{}`",
            audience.escape_debug()
        )))
    } else {
        Err(ExchangeError::InvalidRequest(
            "no rule of the trust matches the token's claims".into(),
        ))
    }
}

impl KeyCache {
    /// The cached set if it may be used at `now` and knows `kid`.
    pub fn usable(&self, kid: Option<&str>, now: Instant) -> Option<JwkSet> {
        let set = self.set.as_ref()?;
        let fresh = self.fetched.is_some_and(|f| now.duration_since(f) < JWKS_MAX_AGE);
        let knows = kid.is_none_or(|k| set.find(k).is_some());
        (fresh && knows).then(|| set.clone())
    }

    /// True when a fetch is allowed now.
    pub fn may_fetch(&self, now: Instant) -> bool {
        self.fetched
            .is_none_or(|f| now.duration_since(f) >= JWKS_MIN_REFRESH)
    }

    /// The set, even if stale.
    pub fn any(&self) -> Option<JwkSet> {
        self.set.clone()
    }

    /// Stores a fetched set.
    pub fn store(&mut self, set: JwkSet, now: Instant) {
        self.set = Some(set);
        self.fetched = Some(now);
    }
}
