//! What a verified token says, and why a token is refused.

use serde::{Deserialize, Serialize};

/// The claims of a verified stint access token.
///
/// On success the tower layer inserts a clone into the request's extensions, so an axum handler takes
/// `Extension<Claims>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Claims {
    /// The issuer: stint's public URL.
    pub iss: String,
    /// The principal the session belongs to (`prn_…`).
    pub sub: String,
    /// The audience: the target this token is for.
    pub aud: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Issue time, Unix seconds.
    pub iat: i64,
    /// Not before, Unix seconds.
    pub nbf: i64,
    /// The credential id (`crd_…`).
    pub jti: String,
    /// The client the session was requested through.
    pub client_id: String,
    /// Space-separated scopes granted to the session.
    pub scope: String,
    /// The session id (`ses_…`).
    pub sid: String,
}

impl Claims {
    /// The granted scopes, one by one.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.split_ascii_whitespace()
    }

    /// Whether `scope` was granted.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes().any(|s| s == scope)
    }
}

/// Why a token was refused. Every variant means "do not serve this request".
///
/// Exhaustive on purpose: a new reason to refuse is a change callers must handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Refusal {
    /// No bearer token, or not a compact JWS with the expected header and claims.
    #[error("the token is malformed")]
    Malformed,
    /// The signature does not verify, or the token is not signed with EdDSA.
    #[error("the token signature is invalid")]
    BadSignature,
    /// The token names no key, or a key stint does not publish (after a refresh of the key set).
    #[error("the token is signed by an unknown key")]
    UnknownKey,
    /// The header's `typ` is not `at+jwt`: some other kind of token signed by stint.
    #[error("the token is not an access token")]
    WrongType,
    /// The token has expired.
    #[error("the token has expired")]
    Expired,
    /// The token is not valid yet.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// The token is for another audience.
    #[error("the token is for another audience")]
    WrongAudience,
    /// The token comes from another issuer.
    #[error("the token comes from another issuer")]
    WrongIssuer,
    /// The token's session has ended or the credential was revoked.
    #[error("the token has been revoked")]
    Revoked,
    /// The revocation stream has been down longer than allowed, so no token is trusted (fail closed).
    #[error("revocation status is unknown: the revocation stream is down")]
    StreamDown,
}

/// The claim checks that need no key: time, audience, issuer.
#[derive(Debug, Clone)]
pub(crate) struct ClaimRules {
    pub(crate) audience: String,
    pub(crate) issuer: Option<String>,
    pub(crate) leeway_secs: i64,
}

impl ClaimRules {
    /// Checks `claims` at `now` (Unix seconds).
    pub(crate) fn check(&self, claims: &Claims, now: i64) -> Result<(), Refusal> {
        if now >= claims.exp.saturating_add(self.leeway_secs) {
            return Err(Refusal::Expired);
        }
        if now.saturating_add(self.leeway_secs) < claims.nbf {
            return Err(Refusal::NotYetValid);
        }
        if claims.aud != self.audience {
            return Err(Refusal::WrongAudience);
        }
        if let Some(iss) = &self.issuer
            && claims.iss != *iss
        {
            return Err(Refusal::WrongIssuer);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            iss: "https://stint.example".into(),
            sub: "prn_1".into(),
            aud: "orders".into(),
            exp: 1_000,
            iat: 900,
            nbf: 900,
            jti: "crd_1".into(),
            client_id: "cli".into(),
            scope: "read write".into(),
            sid: "ses_1".into(),
        }
    }

    fn rules() -> ClaimRules {
        ClaimRules {
            audience: "orders".into(),
            issuer: Some("https://stint.example".into()),
            leeway_secs: 5,
        }
    }

    #[test]
    fn expiry_and_not_before_allow_the_leeway_and_no_more() {
        let (c, r) = (claims(), rules());
        assert_eq!(r.check(&c, 1_004), Ok(()));
        assert_eq!(r.check(&c, 1_005), Err(Refusal::Expired));
        assert_eq!(r.check(&c, 895), Ok(()));
        assert_eq!(r.check(&c, 894), Err(Refusal::NotYetValid));
    }

    #[test]
    fn audience_and_issuer_must_match_exactly() {
        let r = rules();
        let mut c = claims();
        c.aud = "orders-admin".into();
        assert_eq!(r.check(&c, 950), Err(Refusal::WrongAudience));
        let mut c = claims();
        c.iss = "https://stint.example/".into();
        assert_eq!(r.check(&c, 950), Err(Refusal::WrongIssuer));
        let any_issuer = ClaimRules {
            issuer: None,
            ..rules()
        };
        assert_eq!(any_issuer.check(&c, 950), Ok(()));
    }

    #[test]
    fn extreme_times_do_not_overflow() {
        let mut c = claims();
        c.exp = i64::MAX;
        c.nbf = i64::MIN;
        assert_eq!(rules().check(&c, i64::MAX - 1), Ok(()));
    }

    #[test]
    fn scopes_are_space_separated() {
        let c = claims();
        assert!(c.has_scope("write"));
        assert!(!c.has_scope("rea"));
        assert_eq!(c.scopes().count(), 2);
    }
}
