//! HTTP handlers, the router and the OpenAPI document.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use stint_proto::{
    ApiKey, ApproveRequest, AuditEvent, AuditVerification, CreatePrincipal, CreateSession, CreateTarget,
    DenyRequest, EndRequest, Evidence, EvidenceChain, Health, Introspection, IssuedCredential, JwtCredential,
    KeyRotated, List, Principal, PrincipalCreated, PrincipalKind, Problem, ReconcileReport, SessionView,
    Target,
};
use stint_store::{PrincipalRecord, SessionFilter};
use utoipa::OpenApi;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, Body, OAuthAuth, OAuthError, OAuthForm, OptionalBody, Params, PathId};
use crate::metrics as m;
use crate::service::{PatchTarget, Service, is_admin};

type Svc = State<Arc<Service>>;

/// Builds the whole application.
pub fn router(svc: Arc<Service>) -> Router {
    let limit = svc.cfg.max_body_bytes;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/oauth-authorization-server", get(as_metadata))
        .route("/v1/principals", post(create_principal).get(list_principals))
        .route("/v1/principals/{id}", get(get_principal).delete(delete_principal))
        .route("/v1/principals/{id}/rotate-key", post(rotate_key))
        .route("/v1/targets", post(create_target).get(list_targets))
        .route(
            "/v1/targets/{name}",
            get(get_target).patch(patch_target).delete(delete_target),
        )
        .route("/v1/sessions", post(create_session).get(list_sessions))
        .route("/v1/sessions/{id}", get(get_session))
        .route("/v1/sessions/{id}/approve", post(approve))
        .route("/v1/sessions/{id}/deny", post(deny))
        .route("/v1/sessions/{id}/cancel", post(cancel))
        .route("/v1/sessions/{id}/end", post(end))
        .route("/v1/sessions/{id}/heartbeat", post(heartbeat))
        .route("/v1/sessions/{id}/credentials", post(credentials))
        .route("/v1/targets/{name}/krl", get(target_krl))
        .route("/v1/reconcile", post(reconcile))
        .route("/v1/events/stream", get(event_stream))
        .route("/v1/sessions/{id}/challenge", post(challenge))
        .route("/v1/sessions/{id}/review", post(review))
        .route("/v1/reviews", get(reviews))
        .route("/v1/policies", axum::routing::put(put_policies).get(get_policies))
        .route("/v1/policies/schema", get(policy_schema))
        .route("/v1/policies/check", post(policy_check))
        .route("/v1/policies/lint", get(policy_lint))
        .route("/v1/trusts", post(create_trust).get(list_trusts))
        .route("/oauth2/token", post(token_exchange))
        .route(
            "/v1/hook-sources",
            post(create_hook_source).get(list_hook_sources),
        )
        .route("/v1/hooks/{source}", post(receive_hook))
        .route("/v1/sessions/{id}/evidence", get(evidence))
        .route("/v1/audit", get(audit))
        .route("/v1/audit/verify", get(audit_verify))
        .route("/v1/keys/rotate", post(rotate_keys))
        .route("/oauth2/introspect", post(introspect))
        .route("/oauth2/revoke", post(revoke))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(svc.clone(), gate))
        .with_state(svc)
}

/// Until start-up recovery finished, only health and metrics answer (fail closed). Also counts
/// requests by matched route.
async fn gate(State(svc): Svc, req: Request, next: Next) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let open = matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics");
    let resp = if !open && !svc.ready.load(Ordering::Acquire) {
        ApiError::not_ready().into_response()
    } else {
        next.run(req).await
    };
    if path != "/oauth2/introspect" {
        let status = resp.status().as_u16().to_string();
        metrics::counter!(m::HTTP_REQUESTS, "path" => path, "status" => status).increment(1);
    }
    resp
}

async fn not_found() -> ApiError {
    ApiError::not_found("route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

/// List query parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Session list query parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SessionQuery {
    /// Page size (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Only this state.
    state: Option<String>,
    /// Only this principal id.
    principal: Option<String>,
    /// Only this target.
    target: Option<String>,
}

/// Audit query parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Events after this seq (default 0).
    after_seq: Option<i64>,
    /// Page size (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

fn page_limit(l: Option<u32>) -> ApiResult<u32> {
    match l.unwrap_or(100) {
        0 => Err(ApiError::invalid("`limit` must be between 1 and 1000")),
        n if n > 1000 => Err(ApiError::invalid("`limit` must be between 1 and 1000")),
        n => Ok(n),
    }
}

fn principal_view(p: &PrincipalRecord) -> Principal {
    Principal {
        id: p.id.clone(),
        name: p.name.clone(),
        kind: PrincipalKind::parse(&p.kind).unwrap_or(PrincipalKind::Service),
        groups: p.groups.clone(),
        created_at: p.created_at,
        deleted_at: p.deleted_at,
    }
}

fn next_cursor<T>(items: &[T], limit: u32, key: impl Fn(&T) -> String) -> Option<String> {
    (items.len() == limit as usize)
        .then(|| items.last().map(key))
        .flatten()
}

#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
async fn readyz(State(svc): Svc) -> (StatusCode, Json<Health>) {
    if svc.ready.load(Ordering::Acquire) {
        (StatusCode::OK, Json(Health { status: "ok".into() }))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "starting".into(),
            }),
        )
    }
}

#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
async fn metrics_text(State(svc): Svc) -> Response {
    metrics::gauge!(m::SESSIONS_ACTIVE).set(svc.live.active_count() as f64);
    let body = m::handle().render();
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}

#[utoipa::path(get, path = "/openapi.json", tag = "health",
    responses((status = 200, description = "This document")))]
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "discovery",
    responses((status = 200, description = "JWKS of the token signing keys")))]
async fn jwks(State(svc): Svc) -> Response {
    let set = svc.keys.jwks(svc.clock.now());
    let mut resp = Json(set).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
    resp
}

#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "discovery",
    responses((status = 200, description = "RFC 8414 metadata")))]
async fn as_metadata(State(svc): Svc) -> Json<serde_json::Value> {
    let iss = &svc.issuer;
    Json(serde_json::json!({
        "issuer": iss,
        "jwks_uri": format!("{iss}/.well-known/jwks.json"),
        "token_endpoint": format!("{iss}/oauth2/token"),
        "introspection_endpoint": format!("{iss}/oauth2/introspect"),
        "revocation_endpoint": format!("{iss}/oauth2/revoke"),
        "introspection_endpoint_auth_methods_supported": ["bearer"],
        "revocation_endpoint_auth_methods_supported": ["bearer"],
        "token_endpoint_auth_methods_supported": ["none"],
        "grant_types_supported": ["urn:ietf:params:oauth:grant-type:token-exchange"],
        "response_types_supported": [],
        "scopes_supported": [],
        "access_token_signing_alg_values_supported": ["EdDSA"],
    }))
}

// ----- principals ------------------------------------------------------------------------------

#[utoipa::path(post, path = "/v1/principals", tag = "principals", request_body = CreatePrincipal,
    responses((status = 201, body = PrincipalCreated), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("api_key" = [])))]
async fn create_principal(
    State(svc): Svc,
    Auth(c): Auth,
    Body(req): Body<CreatePrincipal>,
) -> ApiResult<(StatusCode, Json<PrincipalCreated>)> {
    let (p, api_key) = svc.create_principal(&c, req).await?;
    Ok((
        StatusCode::CREATED,
        Json(PrincipalCreated {
            principal: principal_view(&p),
            api_key,
        }),
    ))
}

#[utoipa::path(get, path = "/v1/principals", tag = "principals", params(ListQuery),
    responses((status = 200, body = List<Principal>), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("api_key" = [])))]
async fn list_principals(
    State(svc): Svc,
    Auth(c): Auth,
    Params(q): Params<ListQuery>,
) -> ApiResult<Json<List<Principal>>> {
    let limit = page_limit(q.limit)?;
    let items = svc.principals(&c, q.cursor.as_deref(), limit).await?;
    Ok(Json(List {
        next_cursor: next_cursor(&items, limit, |p| p.id.clone()),
        items: items.iter().map(principal_view).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/principals/{id}", tag = "principals",
    responses((status = 200, body = Principal), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("api_key" = [])))]
async fn get_principal(State(svc): Svc, Auth(c): Auth, PathId(id): PathId) -> ApiResult<Json<Principal>> {
    Ok(Json(principal_view(&svc.principal(&c, &id).await?)))
}

#[utoipa::path(delete, path = "/v1/principals/{id}", tag = "principals",
    description = "Offboarding: the key stops working at once, active sessions end (`offboarded`), pending ones are canceled.",
    responses((status = 200, body = Principal), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("api_key" = [])))]
async fn delete_principal(State(svc): Svc, Auth(c): Auth, PathId(id): PathId) -> ApiResult<Json<Principal>> {
    Ok(Json(principal_view(&svc.offboard(&c, &id).await?)))
}

#[utoipa::path(post, path = "/v1/principals/{id}/rotate-key", tag = "principals",
    responses((status = 200, body = ApiKey), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("api_key" = [])))]
async fn rotate_key(State(svc): Svc, Auth(c): Auth, PathId(id): PathId) -> ApiResult<Json<ApiKey>> {
    Ok(Json(ApiKey {
        api_key: svc.rotate_key(&c, &id).await?,
    }))
}

// ----- targets ---------------------------------------------------------------------------------

#[utoipa::path(post, path = "/v1/targets", tag = "targets", request_body = CreateTarget,
    responses((status = 201, body = Target), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("api_key" = [])))]
async fn create_target(
    State(svc): Svc,
    Auth(c): Auth,
    Body(req): Body<CreateTarget>,
) -> ApiResult<(StatusCode, Json<Target>)> {
    Ok((StatusCode::CREATED, Json(svc.create_target(&c, req).await?)))
}

#[utoipa::path(get, path = "/v1/targets", tag = "targets", params(ListQuery),
    responses((status = 200, body = List<Target>), (status = 401, body = Problem)),
    security(("api_key" = [])))]
async fn list_targets(
    State(svc): Svc,
    Auth(_c): Auth,
    Params(q): Params<ListQuery>,
) -> ApiResult<Json<List<Target>>> {
    let limit = page_limit(q.limit)?;
    let items = svc.targets(q.cursor.as_deref(), limit).await?;
    Ok(Json(List {
        next_cursor: next_cursor(&items, limit, |t| t.name.clone()),
        items,
    }))
}

#[utoipa::path(get, path = "/v1/targets/{name}", tag = "targets",
    responses((status = 200, body = Target), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("api_key" = [])))]
async fn get_target(State(svc): Svc, Auth(_c): Auth, PathId(name): PathId) -> ApiResult<Json<Target>> {
    Ok(Json(svc.target(&name).await?))
}

#[utoipa::path(patch, path = "/v1/targets/{name}", tag = "targets", request_body = PatchTarget,
    responses((status = 200, body = Target), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("api_key" = [])))]
async fn patch_target(
    State(svc): Svc,
    Auth(c): Auth,
    PathId(name): PathId,
    Body(p): Body<PatchTarget>,
) -> ApiResult<Json<Target>> {
    Ok(Json(svc.patch_target(&c, &name, p).await?))
}

#[utoipa::path(delete, path = "/v1/targets/{name}", tag = "targets",
    description = "Deletes the target and ends all its sessions (reason `revoked`).",
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("api_key" = [])))]
async fn delete_target(State(svc): Svc, Auth(c): Auth, PathId(name): PathId) -> ApiResult<StatusCode> {
    svc.delete_target(&c, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- sessions --------------------------------------------------------------------------------

#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", request_body = CreateSession,
    responses((status = 201, body = SessionView), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 422, body = Problem)),
    security(("api_key" = [])))]
async fn create_session(
    State(svc): Svc,
    Auth(c): Auth,
    Body(req): Body<CreateSession>,
) -> ApiResult<(StatusCode, Json<SessionView>)> {
    let (s, issued) = svc.request_with_credential(&c, req).await?;
    let mut view = SessionView::from(&s);
    view.credential = issued.map(|i| JwtCredential {
        id: i.id.to_string(),
        kind: "jwt".into(),
        access_token: i.token,
        token_type: "Bearer".into(),
        expires_at: i.expires_at,
    });
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(get, path = "/v1/sessions", tag = "sessions", params(SessionQuery),
    responses((status = 200, body = List<SessionView>), (status = 401, body = Problem), (status = 422, body = Problem)),
    security(("api_key" = [])))]
async fn list_sessions(
    State(svc): Svc,
    Auth(c): Auth,
    Params(q): Params<SessionQuery>,
) -> ApiResult<Json<List<SessionView>>> {
    let limit = page_limit(q.limit)?;
    let state = match q.state.as_deref() {
        None => None,
        Some(s) => Some(stint_core::State::parse(s).ok_or_else(|| {
            ApiError::invalid(
                "unknown `state`: use requested, scheduled, active, ended, denied, canceled or expired",
            )
        })?),
    };
    let (items, next) = svc
        .sessions(
            &c,
            SessionFilter {
                state,
                principal: q.principal,
                target: q.target,
                after: q.cursor,
                limit,
                binding: None,
            },
        )
        .await?;
    Ok(Json(List {
        items: items.iter().map(SessionView::from).collect(),
        next_cursor: next,
    }))
}

#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "sessions",
    responses((status = 200, body = SessionView), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("api_key" = [])))]
async fn get_session(State(svc): Svc, Auth(c): Auth, PathId(id): PathId) -> ApiResult<Json<SessionView>> {
    Ok(Json(SessionView::from(&svc.session(&c, &id).await?)))
}

#[utoipa::path(post, path = "/v1/sessions/{id}/approve", tag = "sessions", request_body = ApproveRequest,
    responses((status = 200, body = SessionView), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("api_key" = [])))]
async fn approve(
    State(svc): Svc,
    Auth(c): Auth,
    PathId(id): PathId,
    OptionalBody(b): OptionalBody<ApproveRequest>,
) -> ApiResult<Json<SessionView>> {
    Ok(Json(SessionView::from(&svc.approve(&c, &id, b.comment).await?)))
}

#[utoipa::path(post, path = "/v1/sessions/{id}/deny", tag = "sessions", request_body = DenyRequest,
    responses((status = 200, body = SessionView), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("api_key" = [])))]
async fn deny(
    State(svc): Svc,
    Auth(c): Auth,
    PathId(id): PathId,
    Body(b): Body<DenyRequest>,
) -> ApiResult<Json<SessionView>> {
    Ok(Json(SessionView::from(&svc.deny(&c, &id, b.reason).await?)))
}

#[utoipa::path(post, path = "/v1/sessions/{id}/cancel", tag = "sessions",
    responses((status = 200, body = SessionView), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("api_key" = [])))]
async fn cancel(State(svc): Svc, Auth(c): Auth, PathId(id): PathId) -> ApiResult<Json<SessionView>> {
    Ok(Json(SessionView::from(&svc.cancel(&c, &id).await?)))
}

#[utoipa::path(post, path = "/v1/sessions/{id}/end", tag = "sessions", request_body = EndRequest,
    responses((status = 200, body = SessionView), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("api_key" = [])))]
async fn end(
    State(svc): Svc,
    Auth(c): Auth,
    PathId(id): PathId,
    OptionalBody(b): OptionalBody<EndRequest>,
) -> ApiResult<Json<SessionView>> {
    Ok(Json(SessionView::from(&svc.end(&c, &id, b.reason).await?)))
}

#[utoipa::path(post, path = "/v1/sessions/{id}/heartbeat", tag = "sessions",
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("api_key" = [])))]
async fn heartbeat(State(svc): Svc, Auth(c): Auth, PathId(id): PathId) -> ApiResult<StatusCode> {
    svc.heartbeat(&c, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/sessions/{id}/credentials` body (empty for `jwt` targets).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialRequest {
    /// OpenSSH public key (ssh targets).
    public_key: Option<String>,
    /// Step-up nonce (break-glass sessions).
    nonce: Option<String>,
}

#[utoipa::path(post, path = "/v1/sessions/{id}/credentials", tag = "sessions", request_body = CredentialRequest,
    responses((status = 201, body = IssuedCredential), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 409, body = Problem),
              (status = 502, description = "the target system (PostgreSQL) failed; nothing was handed out", body = Problem)),
    security(("api_key" = [])))]
async fn credentials(
    State(svc): Svc,
    Auth(c): Auth,
    PathId(id): PathId,
    OptionalBody(b): OptionalBody<CredentialRequest>,
) -> ApiResult<(StatusCode, Json<IssuedCredential>)> {
    if b.public_key.as_ref().is_some_and(|k| k.len() > 16 * 1024) {
        return Err(ApiError::invalid("`public_key` is too long"));
    }
    let issued = svc
        .issue_credential(&c, &id, b.public_key.as_deref(), b.nonce.as_deref())
        .await?;
    Ok((StatusCode::CREATED, Json(issued)))
}

#[utoipa::path(get, path = "/v1/targets/{name}/krl", tag = "targets",
    responses((status = 200, description = "the target's OpenSSH KRL (for sshd's RevokedKeys)", content_type = "application/octet-stream", body = Vec<u8>),
              (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("api_key" = [])))]
async fn target_krl(
    State(svc): Svc,
    Auth(_c): Auth,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> ApiResult<impl axum::response::IntoResponse> {
    let krl = svc.krl(&name).await?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        krl,
    ))
}

#[utoipa::path(post, path = "/v1/reconcile", tag = "targets",
    responses((status = 200, body = ReconcileReport), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("api_key" = [])))]
async fn reconcile(
    State(svc): Svc,
    Auth(c): Auth,
    OptionalBody(_b): OptionalBody<EmptyBody>,
) -> ApiResult<Json<ReconcileReport>> {
    let (zombies, outstanding) = svc.reconcile_now(&c).await?;
    Ok(Json(ReconcileReport {
        zombies,
        outstanding_revocations: outstanding,
    }))
}

/// How often the stream sends a `: keep-alive` comment.
pub const STREAM_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(10);

#[utoipa::path(get, path = "/v1/events/stream", tag = "events",
    description = "Server-Sent Events: `session.ended` (with a signed CAEP session-revoked SET in `set`) and \
                   `credential.revoked`, each with `sid`, `jtis`, `reason`, `at`. The SSE `id` is the audit \
                   seq; send `Last-Event-ID` to resume. A `: connected` comment follows the replay, `: keep-alive` \
                   every 10 s. Callers: resource servers and admins.",
    params(("Last-Event-ID" = Option<i64>, Header, description = "resume after this event id")),
    responses((status = 200, description = "text/event-stream", content_type = "text/event-stream", body = String),
              (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("api_key" = [])))]
async fn event_stream(
    State(svc): Svc,
    Auth(c): Auth,
    headers: axum::http::HeaderMap,
) -> ApiResult<
    axum::response::sse::Sse<
        impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
    >,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    Service::may_watch(&c)?;
    let resume = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .filter(|n| *n >= 0)
                .ok_or_else(|| ApiError::invalid("`Last-Event-ID` must be a non-negative integer"))?,
        ),
    };
    let rx = svc.events.subscribe();
    // Without Last-Event-ID: only what happens from now on.
    let cursor = match resume {
        Some(n) => n,
        None => svc.store.audit_head().await.map_err(ApiError::from)?,
    };
    // `: connected` comes once the replay (if any) has been sent, so a client that trusts the stream
    // from that comment on has every revocation it asked for.
    let state = (svc, rx, cursor, std::collections::VecDeque::<Event>::new(), false);
    let stream = futures_util::stream::unfold(
        state,
        |(svc, mut rx, mut cursor, mut queue, connected)| async move {
            loop {
                if let Some(e) = queue.pop_front() {
                    return Some((Ok(e), (svc, rx, cursor, queue, connected)));
                }
                match svc.events_after(cursor, 500).await {
                    Ok((events, next)) if next > cursor => {
                        cursor = next;
                        for ev in events {
                            let data = ev.data.to_string();
                            queue.push_back(Event::default().id(ev.id.to_string()).event(ev.kind).data(data));
                        }
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(code = e.code, "event stream: reading the audit log failed"),
                }
                if !connected {
                    let hello = Event::default().comment("connected");
                    return Some((Ok(hello), (svc, rx, cursor, queue, true)));
                }
                // Nothing new: wait for the next commit (or the server shutting down).
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(STREAM_KEEPALIVE).text("keep-alive")))
}

#[utoipa::path(post, path = "/v1/hook-sources", tag = "events", request_body = crate::hooks::CreateHookSource,
    responses((status = 201, body = crate::hooks::HookSourceView), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 409, body = Problem)),
    security(("api_key" = [])))]
async fn create_hook_source(
    State(svc): Svc,
    Auth(c): Auth,
    Body(b): Body<crate::hooks::CreateHookSource>,
) -> ApiResult<(StatusCode, Json<crate::hooks::HookSourceView>)> {
    Ok((StatusCode::CREATED, Json(svc.create_hook_source(&c, b).await?)))
}

#[utoipa::path(get, path = "/v1/hook-sources", tag = "events",
    responses((status = 200, body = List<crate::hooks::HookSourceView>), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("api_key" = [])))]
async fn list_hook_sources(
    State(svc): Svc,
    Auth(c): Auth,
) -> ApiResult<Json<List<crate::hooks::HookSourceView>>> {
    Ok(Json(List {
        items: svc.hook_sources(&c)?,
        next_cursor: None,
    }))
}

/// `POST /v1/hooks/{source}` answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct HookAnswer {
    /// Sessions the event ended or canceled (empty for a replayed or non-closing event).
    pub ended: Vec<String>,
}

#[utoipa::path(post, path = "/v1/hooks/{source}", tag = "events",
    description = "An external system reports that an activity changed state. Authenticated by an HMAC-SHA256 \
                   signature of the raw body with the source's secret (`X-Stint-Signature: sha256=<hex>`; GitHub \
                   sources: `X-Hub-Signature-256`), `X-Stint-Timestamp` (Unix seconds, within the tolerance) and \
                   an event id (`X-Stint-Event-Id` or `X-GitHub-Delivery`) for idempotency.",
    params(("source" = String, Path, description = "hook source name")),
    request_body(content = Object, description = "generic: {\"binding_kind\", \"ref\", \"status\"}; github: workflow_run/workflow_job; ticket: mapped by the source"),
    responses((status = 200, body = HookAnswer), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn receive_hook(
    State(svc): Svc,
    axum::extract::Path(source): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Json<HookAnswer>> {
    let ended = svc.receive_hook(&source, &headers, &body).await?;
    Ok(Json(HookAnswer { ended }))
}

#[utoipa::path(post, path = "/v1/trusts", tag = "federation", request_body = crate::federation::CreateTrust,
    responses((status = 201, body = crate::federation::TrustView), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("api_key" = [])))]
async fn create_trust(
    State(svc): Svc,
    Auth(c): Auth,
    Body(b): Body<crate::federation::CreateTrust>,
) -> ApiResult<(StatusCode, Json<crate::federation::TrustView>)> {
    Ok((StatusCode::CREATED, Json(svc.create_trust(&c, b).await?)))
}

#[utoipa::path(get, path = "/v1/trusts", tag = "federation",
    responses((status = 200, body = List<crate::federation::TrustView>), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("api_key" = [])))]
async fn list_trusts(State(svc): Svc, Auth(c): Auth) -> ApiResult<Json<List<crate::federation::TrustView>>> {
    Ok(Json(List {
        items: svc.trusts(&c)?,
        next_cursor: None,
    }))
}

#[utoipa::path(post, path = "/oauth2/token", tag = "oauth",
    request_body(content = crate::service::ExchangeForm, content_type = "application/x-www-form-urlencoded"),
    description = "RFC 8693 token exchange: a workload's OIDC ID token (`subject_token`) for an access token of \
                   the session bound to its run (`audience` = the target's name). No client authentication: \
                   the ID token is the credential. Errors per RFC 6749/8693 (`invalid_request`, \
                   `invalid_target`, `unsupported_grant_type`).",
    responses((status = 200, body = crate::service::ExchangeAnswer), (status = 400, description = "invalid_request, invalid_target or unsupported_grant_type"),
              (status = 503, description = "temporarily_unavailable (the issuer's keys could not be fetched)")))]
async fn token_exchange(
    State(svc): Svc,
    OAuthForm(f): OAuthForm<crate::service::ExchangeForm>,
) -> Result<Json<crate::service::ExchangeAnswer>, OAuthError> {
    use crate::federation::ExchangeError as E;
    if f.grant_type != "urn:ietf:params:oauth:grant-type:token-exchange" {
        return Err(OAuthError {
            status: StatusCode::BAD_REQUEST,
            error: "unsupported_grant_type",
            description: "only urn:ietf:params:oauth:grant-type:token-exchange is supported".into(),
        });
    }
    match svc.exchange(f).await {
        Ok(a) => Ok(Json(a)),
        Err(e) => {
            let (status, error, description) = match e {
                E::InvalidRequest(d) => (StatusCode::BAD_REQUEST, "invalid_request", d),
                E::InvalidTarget(d) => (StatusCode::BAD_REQUEST, "invalid_target", d),
                E::Unavailable(d) => (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", d),
            };
            tracing::info!(error, %description, "token exchange refused");
            Err(OAuthError {
                status,
                error,
                description,
            })
        }
    }
}

/// `POST /v1/sessions/{id}/challenge` answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Challenge {
    /// Single-use nonce for the next credential request of this break-glass session.
    pub nonce: String,
    /// When it stops being accepted (60 s).
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: time::OffsetDateTime,
}

#[utoipa::path(post, path = "/v1/sessions/{id}/challenge", tag = "break-glass",
    description = "Step-up for break-glass sessions: a fresh single-use nonce that the next `POST /v1/sessions/{id}/credentials` must carry.",
    responses((status = 200, body = Challenge), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("api_key" = [])))]
async fn challenge(
    State(svc): Svc,
    Auth(c): Auth,
    PathId(id): PathId,
    OptionalBody(_b): OptionalBody<EmptyBody>,
) -> ApiResult<Json<Challenge>> {
    let (nonce, expires_at) = svc.challenge(&c, &id).await?;
    Ok(Json(Challenge { nonce, expires_at }))
}

/// `POST /v1/sessions/{id}/review`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewRequest {
    /// `justified` or `unjustified`.
    pub verdict: String,
    /// What the reviewer found (1–1000 characters).
    pub notes: String,
}

#[utoipa::path(post, path = "/v1/sessions/{id}/review", tag = "break-glass", request_body = ReviewRequest,
    responses((status = 200, description = "the recorded review"), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("api_key" = [])))]
async fn review(
    State(svc): Svc,
    Auth(c): Auth,
    PathId(id): PathId,
    Body(b): Body<ReviewRequest>,
) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(svc.review(&c, &id, &b.verdict, &b.notes).await?))
}

#[utoipa::path(get, path = "/v1/reviews", tag = "break-glass",
    description = "Break-glass sessions waiting for a human review (approvers and admins).",
    responses((status = 200, body = List<SessionView>), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("api_key" = [])))]
async fn reviews(State(svc): Svc, Auth(c): Auth) -> ApiResult<Json<List<SessionView>>> {
    let items = svc.reviews(&c).await?;
    Ok(Json(List {
        items: items.iter().map(SessionView::from).collect(),
        next_cursor: None,
    }))
}

/// `PUT /v1/policies`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutPolicies {
    /// The Cedar policy set (may be empty).
    pub source: String,
}

#[utoipa::path(put, path = "/v1/policies", tag = "policies", request_body = PutPolicies,
    description = "Replaces the policy set, validated against the schema first; an invalid set is refused with 422 \
                   `invalid_policy` and `errors: [{line, column, message}]`, and the previous set stays in force.",
    responses((status = 200, description = "{hash, policies}"), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 422, body = Problem)),
    security(("api_key" = [])))]
async fn put_policies(
    State(svc): Svc,
    Auth(c): Auth,
    Body(b): Body<PutPolicies>,
) -> ApiResult<Json<serde_json::Value>> {
    let (hash, n) = svc.put_policies(&c, b.source).await?;
    Ok(Json(serde_json::json!({"hash": hash, "policies": n})))
}

#[utoipa::path(get, path = "/v1/policies", tag = "policies",
    responses((status = 200, description = "{source, hash, origin, policies, generated}"), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("api_key" = [])))]
async fn get_policies(State(svc): Svc, Auth(c): Auth) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(svc.get_policies(&c)?))
}

#[utoipa::path(get, path = "/v1/policies/schema", tag = "policies",
    description = "The Cedar schema policies are written against (entity types Principal, Group, Target; the actions; the request context).",
    responses((status = 200, description = "{schema}"), (status = 401, body = Problem)),
    security(("api_key" = [])))]
async fn policy_schema(Auth(_c): Auth) -> Json<serde_json::Value> {
    Json(serde_json::json!({"schema": stint_policy::SCHEMA, "format": "cedar"}))
}

#[utoipa::path(post, path = "/v1/policies/check", tag = "policies", request_body = crate::service::PolicyCheck,
    responses((status = 200, description = "{decision, approvals_required, eligible_approvers, reasons}"), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("api_key" = [])))]
async fn policy_check(
    State(svc): Svc,
    Auth(c): Auth,
    Body(b): Body<crate::service::PolicyCheck>,
) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(svc.policy_check(&c, b).await?))
}

#[utoipa::path(get, path = "/v1/policies/lint", tag = "policies",
    description = "Configurations that make access session-bound in name only.",
    responses((status = 200, description = "{findings: [{severity, subject, message, fix}]}"), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("api_key" = [])))]
async fn policy_lint(State(svc): Svc, Auth(c): Auth) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(serde_json::json!({"findings": svc.policy_lint(&c)?})))
}

/// An empty JSON object (or no body).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmptyBody {}

fn audit_view(r: &stint_core::AuditRecord) -> AuditEvent {
    AuditEvent {
        seq: r.seq,
        at: r.at.clone(),
        actor: r.actor.clone(),
        action: r.action.clone(),
        session: r.session.clone(),
        details: serde_json::from_str(&r.details).unwrap_or(serde_json::Value::Null),
        prev_hash: r.prev_hash.clone(),
        hash: r.hash.clone(),
    }
}

#[utoipa::path(get, path = "/v1/sessions/{id}/evidence", tag = "sessions",
    responses((status = 200, body = Evidence), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("api_key" = [])))]
async fn evidence(State(svc): Svc, Auth(c): Auth, PathId(id): PathId) -> ApiResult<Json<Evidence>> {
    let (s, events, chain) = svc.evidence(&c, &id).await?;
    Ok(Json(Evidence {
        session: SessionView::from(&s),
        chain: EvidenceChain {
            first_seq: events.first().map(|e| e.seq),
            last_seq: events.last().map(|e| e.seq),
            head_hash: chain.head_hash.clone(),
            verified: chain.ok,
        },
        events: events.iter().map(audit_view).collect(),
    }))
}

// ----- audit and keys --------------------------------------------------------------------------

#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = List<AuditEvent>), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("api_key" = [])))]
async fn audit(
    State(svc): Svc,
    Auth(c): Auth,
    Params(q): Params<AuditQuery>,
) -> ApiResult<Json<List<AuditEvent>>> {
    if !is_admin(&c) {
        return Err(ApiError::forbidden("this needs an admin"));
    }
    let limit = page_limit(q.limit)?;
    let items = svc.store.audit(q.after_seq.unwrap_or(0).max(0), limit).await?;
    Ok(Json(List {
        next_cursor: next_cursor(&items, limit, |r| r.seq.to_string()),
        items: items.iter().map(audit_view).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit",
    responses((status = 200, body = AuditVerification), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("api_key" = [])))]
async fn audit_verify(State(svc): Svc, Auth(c): Auth) -> ApiResult<Json<AuditVerification>> {
    if !is_admin(&c) {
        return Err(ApiError::forbidden("this needs an admin"));
    }
    let v = svc.store.verify_audit().await?;
    metrics::gauge!(m::AUDIT_CHAIN_OK).set(if v.ok { 1.0 } else { 0.0 });
    if !v.ok {
        tracing::error!(first_bad_seq = ?v.first_bad_seq, "audit chain does not verify");
    }
    Ok(Json(AuditVerification {
        ok: v.ok,
        events: v.events,
        head_hash: v.head_hash,
        first_bad_seq: v.first_bad_seq,
        problem: v.problem,
    }))
}

#[utoipa::path(post, path = "/v1/keys/rotate", tag = "keys",
    responses((status = 200, body = KeyRotated), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("api_key" = [])))]
async fn rotate_keys(State(svc): Svc, Auth(c): Auth) -> ApiResult<Json<KeyRotated>> {
    let (kid, published) = svc.rotate_signing_key(&c).await?;
    Ok(Json(KeyRotated { kid, published }))
}

// ----- OAuth -----------------------------------------------------------------------------------

/// RFC 7662 / RFC 7009 form.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct TokenForm {
    /// The token.
    token: String,
    /// Optional hint (ignored).
    #[allow(dead_code)]
    token_type_hint: Option<String>,
}

#[utoipa::path(post, path = "/oauth2/introspect", tag = "oauth",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    description = "RFC 7662. Callers: `resource_server` principals and admins. Each active answer counts as one use.",
    responses((status = 200, body = Introspection), (status = 400, description = "invalid_request"),
              (status = 401, description = "invalid_client"), (status = 403, description = "unauthorized_client")),
    security(("api_key" = [])))]
async fn introspect(
    State(svc): Svc,
    OAuthAuth(c): OAuthAuth,
    OAuthForm(f): OAuthForm<TokenForm>,
) -> Result<Json<Introspection>, OAuthError> {
    if !is_admin(&c) && c.kind != PrincipalKind::ResourceServer.as_str() {
        return Err(ApiError::forbidden("introspection is open to resource servers and admins only").into());
    }
    Ok(Json(svc.introspect(&c, &f.token).await))
}

#[utoipa::path(post, path = "/oauth2/revoke", tag = "oauth",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    description = "RFC 7009. Callers: a `resource_server`, the token's own principal, or an admin. 200 for any well-formed request.",
    responses((status = 200), (status = 400, description = "invalid_request"), (status = 401, description = "invalid_client"),
              (status = 403, description = "unauthorized_client")),
    security(("api_key" = [])))]
async fn revoke(
    State(svc): Svc,
    OAuthAuth(c): OAuthAuth,
    OAuthForm(f): OAuthForm<TokenForm>,
) -> Result<StatusCode, OAuthError> {
    svc.revoke_token(&c, &f.token).await?;
    Ok(StatusCode::OK)
}

#[derive(Debug)]
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        if let Some(c) = openapi.components.as_mut() {
            c.add_security_scheme(
                "api_key",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// Applies the conventions every route shares, so each handler's annotation lists only its own
/// answers: path parameters are declared, error bodies are `application/problem+json` (OAuth errors
/// stay `application/json`), and the errors any route can give are listed: 401 on authenticated
/// routes, 400/413/415/422 where a body is read, 404 where an id is in the path, 503 before the
/// server is ready.
#[derive(Debug)]
struct Conventions;

impl utoipa::Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        use utoipa::openapi::{ContentBuilder, Ref, Required, ResponseBuilder};
        let problem = |what: &str| {
            ResponseBuilder::new()
                .description(what)
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let names: Vec<String> = path
                .split('/')
                .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .map(str::to_owned)
                .collect();
            let oauth = path.starts_with("/oauth2/");
            let open = matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics");
            let ops = [
                item.get.as_mut(),
                item.post.as_mut(),
                item.put.as_mut(),
                item.patch.as_mut(),
                item.delete.as_mut(),
            ];
            for op in ops.into_iter().flatten() {
                let params = op.parameters.get_or_insert_with(Vec::new);
                for name in &names {
                    let declared = params.iter().any(|p| {
                        matches!(p, utoipa::openapi::RefOr::T(p) if &p.name == name && p.parameter_in == ParameterIn::Path)
                    });
                    if !declared {
                        params.push(utoipa::openapi::RefOr::T(
                            ParameterBuilder::new()
                                .name(name)
                                .parameter_in(ParameterIn::Path)
                                .required(Required::True)
                                .description(Some("an id (`ses_…`, `prn_…`) or a target name"))
                                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                                .build(),
                        ));
                    }
                }
                let has_query = op.parameters.as_ref().is_some_and(|ps| {
                    ps.iter().any(
                        |p| matches!(p, utoipa::openapi::RefOr::T(p) if p.parameter_in == ParameterIn::Query),
                    )
                });
                let responses = &mut op.responses.responses;
                if !oauth {
                    for (status, r) in responses.iter_mut() {
                        if let (true, utoipa::openapi::RefOr::T(r)) = (status.as_str() >= "400", r)
                            && let Some(c) = r.content.shift_remove("application/json")
                        {
                            r.content.insert("application/problem+json".to_owned(), c);
                        }
                    }
                }
                let mut add = |status: &str, what: &str| {
                    if !oauth {
                        responses
                            .entry(status.to_owned())
                            .or_insert_with(|| problem(what).into());
                    }
                };
                if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    add("401", "no or unknown API key (`unauthenticated`)");
                }
                if op.request_body.is_some() {
                    add("400", "the body is not JSON (`malformed_json`)");
                    add("413", "the body is too large (`payload_too_large`)");
                    add(
                        "415",
                        "the body is not `application/json` (`unsupported_media_type`)",
                    );
                    add("422", "the body does not fit (`invalid_request`)");
                }
                if has_query {
                    add(
                        "422",
                        "a query parameter is unknown or out of range (`invalid_request`)",
                    );
                }
                if !names.is_empty() {
                    add(
                        "404",
                        "no such object, or one the caller may not see (`not_found`)",
                    );
                }
                if !open {
                    add("503", "start-up recovery is still running (`not_ready`)");
                }
            }
        }
    }
}

/// The OpenAPI document, generated from the handlers.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "stint", description = "Session-bound access broker for non-human identities"),
    modifiers(&BearerAuth, &Conventions),
    paths(
        healthz, readyz, metrics_text, openapi, jwks, as_metadata,
        create_principal, list_principals, get_principal, delete_principal, rotate_key,
        create_target, list_targets, get_target, patch_target, delete_target,
        create_session, list_sessions, get_session, approve, deny, cancel, end, heartbeat, credentials, target_krl, reconcile, event_stream, challenge, review, reviews, put_policies, get_policies, policy_schema, policy_check, policy_lint, create_trust, list_trusts, token_exchange, create_hook_source, list_hook_sources, receive_hook, evidence,
        audit, audit_verify, rotate_keys, introspect, revoke,
    ),
    components(schemas(Problem, Health, TokenForm, CredentialRequest, EmptyBody))
)]
pub struct ApiDoc;
