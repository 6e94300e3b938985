//! The tower layer: bearer token in, [`Claims`] in the request extensions out, or a refusal.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::header::{AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use tower::{Layer, Service};

use crate::claims::{Claims, Refusal};
use crate::guard::Guard;

/// A tower [`Layer`] that admits only requests with an acceptable stint bearer token.
///
/// On success the token's [`Claims`] are inserted into the request extensions. Otherwise the inner
/// service is not called and the answer has an empty body:
/// - no bearer token: `401` with `WWW-Authenticate: Bearer`;
/// - a refused token: `401` with `WWW-Authenticate: Bearer error="invalid_token", error_description=…`;
/// - [`Refusal::StreamDown`]: `503` with `Retry-After: 1` — the token may be fine, but its revocation
///   status cannot be known, and a `401` would make clients throw away good tokens.
#[derive(Debug, Clone)]
pub struct GuardLayer {
    guard: Guard,
}

impl GuardLayer {
    pub(crate) fn new(guard: Guard) -> Self {
        Self { guard }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = GuardService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GuardService {
            guard: self.guard.clone(),
            inner,
        }
    }
}

/// The service [`GuardLayer`] wraps around an inner service.
#[derive(Debug, Clone)]
pub struct GuardService<S> {
    guard: Guard,
    inner: S,
}

impl<S, B, R> Service<Request<B>> for GuardService<S>
where
    S: Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clone that was not polled ready stays here; the ready one serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let guard = self.guard.clone();
        let token = bearer(request.headers()).map(str::to_owned);
        Box::pin(async move {
            let Some(token) = token else {
                return Ok(challenge(None));
            };
            match guard.verify_or_refresh(&token).await {
                Ok(claims) => {
                    request.extensions_mut().insert::<Claims>(claims);
                    inner.call(request).await
                }
                Err(refusal) => {
                    tracing::debug!(%refusal, "request refused");
                    Ok(challenge(Some(refusal)))
                }
            }
        })
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn challenge<R: Default>(refusal: Option<Refusal>) -> Response<R> {
    let mut response = Response::new(R::default());
    let headers = response.headers_mut();
    match refusal {
        Some(Refusal::StreamDown) => {
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        Some(refusal) => {
            let value = format!(r#"Bearer error="invalid_token", error_description="{refusal}""#);
            // INVARIANT: refusal messages are fixed ASCII text without quotes.
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(WWW_AUTHENTICATE, value);
            }
            *response.status_mut() = StatusCode::UNAUTHORIZED;
        }
        None => {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            *response.status_mut() = StatusCode::UNAUTHORIZED;
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(v).expect("header"));
        h
    }

    #[test]
    fn bearer_tokens_are_found_case_insensitively() {
        assert_eq!(bearer(&headers("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&headers("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(&headers("Basic abc")), None);
        assert_eq!(bearer(&headers("Bearer ")), None);
        assert_eq!(bearer(&headers("Bearer")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    #[test]
    fn every_refusal_fits_in_a_challenge() {
        use Refusal::*;
        for r in [
            Malformed,
            BadSignature,
            UnknownKey,
            WrongType,
            Expired,
            NotYetValid,
            WrongAudience,
            WrongIssuer,
            Revoked,
        ] {
            let resp: Response<()> = challenge(Some(r));
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
            let h = resp.headers()[WWW_AUTHENTICATE].to_str().expect("ascii");
            assert!(h.starts_with(r#"Bearer error="invalid_token""#), "{h}");
        }
        let resp: Response<()> = challenge(Some(StreamDown));
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let resp: Response<()> = challenge(None);
        assert_eq!(resp.headers()[WWW_AUTHENTICATE], "Bearer");
    }
}
