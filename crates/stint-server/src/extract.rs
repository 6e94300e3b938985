//! Extractors that turn every kind of bad input into problem+json.

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use std::sync::Arc;

use crate::error::ApiError;
use crate::service::{Caller, Service};

/// The authenticated caller (`Authorization: Bearer <api key>`).
#[derive(Debug, Clone)]
pub struct Auth(pub Caller);

fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

impl FromRequestParts<Arc<Service>> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, svc: &Arc<Service>) -> Result<Self, ApiError> {
        let key = bearer(parts).ok_or_else(ApiError::unauthenticated)?;
        svc.directory
            .authenticate(key)
            .map(Auth)
            .ok_or_else(ApiError::unauthenticated)
    }
}

/// A JSON body; malformed (400), mistyped or incomplete (422), oversized (413) or not JSON (415).
#[derive(Debug, Clone)]
pub struct Body<T>(pub T);

/// 413 `payload_too_large`.
pub fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "request body is larger than the server accepts",
    )
}

fn unsupported_media_type() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "expected `Content-Type: application/json`",
    )
}

fn is_json(req: &Request) -> bool {
    req.headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .is_some_and(|v| v.eq_ignore_ascii_case("application/json") || v.ends_with("+json"))
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<axum::body::Bytes, ApiError> {
    axum::body::Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_request",
                "the request body could not be read",
            )
        }
    })
}

/// Parses a JSON object body: syntax errors are 400 `malformed_json` (judged on the whole body before
/// any field is looked at), anything but an object or a body that does not fit `T` is 422.
fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!(
                "the body is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })?;
    if !value.is_object() {
        return Err(ApiError::invalid("the body must be a JSON object"));
    }
    serde_json::from_value(value).map_err(|e| ApiError::invalid(redact(&e.to_string())))
}

/// Removes anything that looks like a secret (an API key or a JWT) from a message that may quote
/// user input, such as serde's "unknown variant `…`".
pub fn redact(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    loop {
        let next = [crate::directory::KEY_PREFIX, "eyJ"]
            .iter()
            .filter_map(|p| rest.find(p).map(|i| (i, *p)))
            .min_by_key(|(i, _)| *i);
        let Some((i, _)) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
            .unwrap_or(tail.len());
        out.push_str("[redacted]");
        rest = &tail[len..];
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(&req) {
            return Err(unsupported_media_type());
        }
        let bytes = read_body(req, state).await?;
        parse_object(&bytes).map(Body)
    }
}

/// A JSON body that may be absent entirely (treated as `{}`).
#[derive(Debug, Clone)]
pub struct OptionalBody<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = is_json(&req);
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalBody(T::default()));
        }
        if !json {
            return Err(unsupported_media_type());
        }
        parse_object(&bytes).map(OptionalBody)
    }
}

/// A path segment (id or name); one that does not decode is simply not found.
#[derive(Debug, Clone)]
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|p| PathId(p.0))
            .map_err(|_| ApiError::not_found("object"))
    }
}

/// Query parameters; bad ones give 422.
#[derive(Debug, Clone)]
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Params(q.0))
            .map_err(|e: QueryRejection| ApiError::invalid(redact(&e.body_text())))
    }
}

/// An OAuth error (RFC 6749 §5.2) for `/oauth2/*`.
#[derive(Debug, Clone)]
pub struct OAuthError {
    /// Status.
    pub status: StatusCode,
    /// `error`.
    pub error: &'static str,
    /// `error_description`.
    pub description: String,
}

impl axum::response::IntoResponse for OAuthError {
    fn into_response(self) -> axum::response::Response {
        let mut resp = (
            self.status,
            axum::Json(serde_json::json!({"error": self.error, "error_description": self.description})),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

impl From<ApiError> for OAuthError {
    fn from(e: ApiError) -> Self {
        let error = match e.status {
            StatusCode::UNAUTHORIZED => "invalid_client",
            StatusCode::FORBIDDEN => "unauthorized_client",
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
                "invalid_request"
            }
            _ => "server_error",
        };
        let status = if error == "invalid_request" && e.status != StatusCode::PAYLOAD_TOO_LARGE {
            StatusCode::BAD_REQUEST
        } else {
            e.status
        };
        OAuthError {
            status,
            error,
            description: e.detail,
        }
    }
}

/// The caller of an OAuth endpoint.
#[derive(Debug, Clone)]
pub struct OAuthAuth(pub Caller);

impl FromRequestParts<Arc<Service>> for OAuthAuth {
    type Rejection = OAuthError;

    async fn from_request_parts(parts: &mut Parts, svc: &Arc<Service>) -> Result<Self, OAuthError> {
        Auth::from_request_parts(parts, svc)
            .await
            .map(|a| OAuthAuth(a.0))
            .map_err(OAuthError::from)
    }
}

/// A form body for `/oauth2/*`.
#[derive(Debug, Clone)]
pub struct OAuthForm<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OAuthForm<T> {
    type Rejection = OAuthError;

    async fn from_request(req: Request, state: &S) -> Result<Self, OAuthError> {
        axum::Form::<T>::from_request(req, state)
            .await
            .map(|f| OAuthForm(f.0))
            .map_err(|e: FormRejection| {
                let too_big = e.status() == StatusCode::PAYLOAD_TOO_LARGE;
                OAuthError {
                    status: if too_big {
                        StatusCode::PAYLOAD_TOO_LARGE
                    } else {
                        StatusCode::BAD_REQUEST
                    },
                    error: "invalid_request",
                    description: if too_big {
                        "request body too large".into()
                    } else {
                        redact(&e.body_text())
                    },
                }
            })
    }
}
