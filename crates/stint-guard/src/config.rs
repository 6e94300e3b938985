//! How a guard is set up, and why starting one can fail.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use crate::clock::{Clock, SystemClock};

/// What a [`Guard`](crate::Guard) needs to know. Build it with [`GuardConfig::new`], then change the
/// defaults you need.
#[non_exhaustive]
pub struct GuardConfig {
    /// stint's base URL, e.g. `https://stint.example` (a path prefix is kept).
    pub stint_url: String,
    /// The API key of a `resource_server` principal, sent as the bearer token of the event stream.
    pub api_key: SecretString,
    /// The audience tokens must carry: the target this resource server is.
    pub audience: String,
    /// The issuer tokens must carry; `None` (the default) accepts any issuer signed by stint's keys.
    pub issuer: Option<String>,
    /// With no event, comment or keep-alive from the stream for longer than this, every token is
    /// refused until the stream is back. Default 30 s (stint sends a keep-alive every 10 s).
    pub max_stream_staleness: Duration,
    /// Clock skew allowed on `exp` and `nbf`. Default 5 s.
    pub leeway: Duration,
    /// How long a revoked session or credential is remembered, counted from the event's time. Must be
    /// at least the longest access-token lifetime. Default 1 h.
    pub revoked_retention: Duration,
    /// The event id to resume after on the first connection. The default, `Some(0)`, asks stint to
    /// replay every event it still holds, so sessions that ended before this process started are
    /// refused too; `None` starts at the live edge.
    pub replay_from: Option<u64>,
    /// The wall clock for `exp`, `nbf` and retention. Default [`SystemClock`].
    pub clock: Arc<dyn Clock>,
}

impl GuardConfig {
    /// A configuration with the defaults above.
    pub fn new(
        stint_url: impl Into<String>,
        api_key: impl Into<String>,
        audience: impl Into<String>,
    ) -> Self {
        Self {
            stint_url: stint_url.into(),
            api_key: SecretString::from(api_key.into()),
            audience: audience.into(),
            issuer: None,
            max_stream_staleness: Duration::from_secs(30),
            leeway: Duration::from_secs(5),
            revoked_retention: Duration::from_secs(3600),
            replay_from: Some(0),
            clock: Arc::new(SystemClock),
        }
    }
}

impl fmt::Debug for GuardConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardConfig")
            .field("stint_url", &self.stint_url)
            .field("api_key", &"[redacted]")
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("max_stream_staleness", &self.max_stream_staleness)
            .field("leeway", &self.leeway)
            .field("revoked_retention", &self.revoked_retention)
            .field("replay_from", &self.replay_from)
            .finish_non_exhaustive()
    }
}

/// Why [`Guard::start`](crate::Guard::start) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuardError {
    /// A configuration value is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// stint's key set could not be fetched.
    #[error("fetching stint's key set from `{url}` failed: {source}")]
    Fetch {
        /// The JWKS URL.
        url: String,
        /// What went wrong.
        #[source]
        source: reqwest::Error,
    },
    /// stint answered the key-set request with an error status.
    #[error("fetching stint's key set from `{url}` failed with status {status}")]
    Status {
        /// The JWKS URL.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// The key set is not a JWKS document, or holds no Ed25519 signing key.
    #[error("stint's key set at `{url}` is unusable: {reason}")]
    KeySet {
        /// The JWKS URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_api_key() {
        let cfg = GuardConfig::new("http://stint", "stk_very_secret", "orders");
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("very_secret"), "{shown}");
        assert!(shown.contains("orders"));
    }
}
