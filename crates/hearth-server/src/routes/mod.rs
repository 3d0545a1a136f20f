//! The HTTP layer: parse and validate, call into [`crate::vms`] / [`crate::images`] /
//! [`crate::auth`], render. Routes are registered through `utoipa_axum::routes!`, so the
//! router and `/openapi.json` are built from the same list and cannot drift.

pub mod agent;
pub mod images;
pub mod keys;
pub mod vms;

use axum::extract::{FromRequest, FromRequestParts, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{AppError, Result};
use crate::AppState;

/// `axum::Json` whose rejections (bad JSON, wrong content type, too large, unknown field)
/// become [`AppError`]s and so keep the one error shape.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(AppError))]
pub struct Json<T>(pub T);

/// `axum::extract::Query` with [`AppError`] rejections.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub struct Query<T>(pub T);

#[derive(OpenApi)]
#[openapi(
    info(title = "Hearth API", description = "Run untrusted code in microVMs."),
    modifiers(&Security),
    security(("bearer" = []), ("api_key" = [])),
    components(schemas(crate::models::ErrorDoc))
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let c = openapi.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        c.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// Every documented route. Everything but `/healthz` needs a key.
pub fn api_router(state: &AppState) -> OpenApiRouter<AppState> {
    let protected = OpenApiRouter::new()
        .merge(vms::routes())
        .merge(agent::routes())
        .merge(images::routes())
        .merge(keys::routes())
        .merge(crate::jobs::routes())
        .routes(routes!(metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::require_key,
        ));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .merge(protected)
}

/// Liveness; open so load balancers need no key.
#[utoipa::path(get, path = "/healthz", tag = "meta", security(()),
    responses((status = 200, description = "server is up", body = Object)))]
async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

/// Prometheus text metrics: VMs by state, requests, boot times.
#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses((status = 200, description = "Prometheus text format", body = String),
              (status = 401, body = crate::models::ErrorDoc)))]
async fn metrics(State(state): State<AppState>) -> Result<Response> {
    let text = crate::metrics::render(&state).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

pub async fn no_route() -> AppError {
    AppError::NotFound("no such route".into())
}

pub async fn method_not_allowed() -> Response {
    let body =
        hearth_proto::ErrorBody::new("method_not_allowed", "method not allowed on this route");
    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}

/// Last line of defence for the error shape: an error response some layer produced as
/// plain text (tower-http limits, hyper) is rewritten as `ErrorBody` JSON.
pub async fn ensure_error_shape(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::NOT_FOUND => "not_found",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let msg = status.canonical_reason().unwrap_or("error").to_string();
    (status, axum::Json(hearth_proto::ErrorBody::new(code, msg))).into_response()
}
