//! Extractors that turn every kind of bad input into problem+json.

use axum::extract::rejection::{FormRejection, JsonRejection, QueryRejection};
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
    let v = parts.headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
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

fn json_rejection(r: JsonRejection) -> ApiError {
    match r {
        JsonRejection::JsonDataError(e) => ApiError::invalid(e.body_text()),
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", e.body_text())
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected `Content-Type: application/json`",
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => too_large(),
        other => ApiError::new(StatusCode::BAD_REQUEST, "malformed_request", other.body_text()),
    }
}

/// 413 `payload_too_large`.
pub fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "request body is larger than the server accepts",
    )
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        axum::Json::<T>::from_request(req, state)
            .await
            .map(|j| Body(j.0))
            .map_err(json_rejection)
    }
}

/// A JSON body that may be absent entirely (treated as `{}`).
#[derive(Debug, Clone)]
pub struct OptionalBody<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json") || v.contains("+json"));
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large()
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, "malformed_request", e.body_text())
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalBody(T::default()));
        }
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected `Content-Type: application/json`",
            ));
        }
        serde_json::from_slice(&bytes).map(OptionalBody).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => ApiError::invalid(e.to_string()),
            _ => ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", e.to_string()),
        })
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
            .map_err(|e: QueryRejection| ApiError::invalid(e.body_text()))
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
                    status: if too_big { StatusCode::PAYLOAD_TOO_LARGE } else { StatusCode::BAD_REQUEST },
                    error: "invalid_request",
                    description: if too_big { "request body too large".into() } else { e.body_text() },
                }
            })
    }
}
