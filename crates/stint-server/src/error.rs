//! API errors as RFC 9457 problem+json with a stable `code`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use stint_core::TransitionError;
use stint_proto::Problem;
use stint_store::StoreError;

/// An error answered to an API caller. `detail` never carries a secret.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine code.
    pub code: &'static str,
    /// Human explanation.
    pub detail: String,
    /// Ids of the policies behind a policy decision.
    pub policies: Option<Vec<String>>,
    /// Itemized errors (e.g. an invalid policy's line and column).
    pub errors: Option<Vec<serde_json::Value>>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            policies: None,
            errors: None,
        }
    }

    /// The same error naming the policies that decided it.
    pub fn with_policies(mut self, ids: Vec<String>) -> Self {
        self.policies = Some(ids);
        self
    }

    /// The same error with itemized errors.
    pub fn with_errors(mut self, errors: Vec<serde_json::Value>) -> Self {
        self.errors = Some(errors);
        self
    }

    /// 400/422 `invalid_request`.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", detail)
    }

    /// 401 `unauthenticated`.
    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a valid API key is required (Authorization: Bearer <key>)",
        )
    }

    /// 403 `forbidden`.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// 404 `not_found`.
    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("no such {what}"))
    }

    /// 500 `internal` (details go to the log, not the caller).
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }

    /// 503 `not_ready`.
    pub fn not_ready() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the server is still recovering sessions; retry shortly",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Duplicate(name) => ApiError::new(
                StatusCode::CONFLICT,
                "already_exists",
                format!("`{name}` already exists"),
            ),
            StoreError::Conflict => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "the session changed concurrently; retry",
            ),
            StoreError::NotFound => ApiError::not_found("object"),
            StoreError::Backend(msg) => {
                tracing::error!(error = %msg, "store failure");
                ApiError::internal()
            }
        }
    }
}

impl From<TransitionError> for ApiError {
    fn from(e: TransitionError) -> Self {
        let (status, code) = match &e {
            TransitionError::TtlTooLong { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "ttl_too_long"),
            TransitionError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
            TransitionError::SelfApproval => (StatusCode::FORBIDDEN, "self_approval"),
            TransitionError::AlreadyApproved => (StatusCode::CONFLICT, "already_approved"),
            TransitionError::NotPending(_) => (StatusCode::CONFLICT, "session_not_pending"),
            TransitionError::NotActive => (StatusCode::CONFLICT, "session_not_active"),
            TransitionError::AlreadyFinal(_) => (StatusCode::CONFLICT, "session_final"),
            TransitionError::UnknownCredential => (StatusCode::NOT_FOUND, "not_found"),
            TransitionError::OutlivesSession => (StatusCode::CONFLICT, "session_not_active"),
            TransitionError::CredentialLimit => (StatusCode::CONFLICT, "credential_limit"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Problem {
            kind: format!("https://stint.dev/problems/{}", self.code),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail,
            code: self.code.to_owned(),
            policies: self.policies,
            errors: self.errors,
        };
        let mut resp = (self.status, Json(body)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status.as_u16(), self.detail)
    }
}

impl std::error::Error for ApiError {}
