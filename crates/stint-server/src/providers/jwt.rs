//! The `jwt` provider. Access tokens are signed by the service (it owns the key ring and the claims)
//! and exist for stint only as entries of the in-memory token index: a token is usable while its
//! entry is there, so revoking it is removing the entry, confirmed before the session's commit.
//! Nothing exists outside this process, so there is nothing to reconcile.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;

use super::{IssueRequest, Prepared, Provider, ProviderError, Zombie};
use crate::live::{LiveIndex, handle_to_hash};

/// Revokes JWTs in the token index.
#[derive(Debug)]
pub struct JwtProvider {
    live: Arc<LiveIndex>,
}

impl JwtProvider {
    /// Over the service's token index.
    pub fn new(live: Arc<LiveIndex>) -> Self {
        Self { live }
    }
}

#[async_trait]
impl Provider for JwtProvider {
    fn prepare(&self, _req: &IssueRequest<'_>) -> Result<Prepared, ProviderError> {
        // Tokens are signed by `Service::issue_jwt`, which holds the key ring.
        Err(ProviderError::Config(
            "jwt credentials are issued by the token service".into(),
        ))
    }

    async fn activate(&self, _prepared: &Prepared) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn revoke(&self, handle: &str) -> Result<(), ProviderError> {
        self.revoke_in_process(handle);
        Ok(())
    }

    async fn reconcile(&self, _owned: &HashSet<String>) -> Result<Vec<Zombie>, ProviderError> {
        Ok(Vec::new())
    }

    fn revoke_in_process(&self, handle: &str) -> bool {
        if let Some(h) = handle_to_hash(handle) {
            self.live.remove_token(&h);
        }
        true
    }
}
