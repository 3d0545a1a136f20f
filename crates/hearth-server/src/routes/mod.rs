//! The HTTP layer, and every handler of the server: parse and validate into
//! `hearth-api` types, call into the domain modules ([`crate::vms`], [`crate::images`],
//! [`crate::jobs`], [`crate::auth`] ...), render. Routes are registered through
//! `utoipa_axum::routes!`, so the router and `/openapi.json` ([`openapi`]) are built from
//! the same list and cannot drift.
//!
//! One module per route group: [`vms`], [`exec`] (exec and run), [`files`] (archives),
//! [`workspace`] (single files), [`processes`], [`firewall`], [`images`], [`keys`],
//! [`jobs`], [`scripts`], [`pool`]; a new group adds a module and a line in
//! [`protected`].

pub mod exec;
mod extract;
pub mod files;
pub mod firewall;
pub mod images;
pub mod jobs;
pub mod keys;
pub mod openapi;
pub mod pool;
pub mod processes;
mod respond;
pub mod scripts;
mod stream;
pub mod vms;
pub mod workspace;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use hearth_api::meta::{Health, HealthStatus};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use extract::{parse_optional_json, Json, Query, Valid, ValidQuery};
pub use respond::{finish_response, method_not_allowed, no_route, RequestId, REQUEST_ID};

use crate::error::Result;
use crate::AppState;

/// Routes open to anyone (load balancers need no key).
pub fn public() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz))
}

/// Routes that need an API key; [`crate::app`] puts the key check in front of them.
pub fn protected() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(vms::routes())
        .merge(pool::routes())
        .merge(exec::routes())
        .merge(files::routes())
        .merge(workspace::routes())
        .merge(processes::routes())
        .merge(firewall::routes())
        .merge(images::routes())
        .merge(keys::routes())
        .merge(jobs::routes())
        .merge(scripts::routes())
        .routes(routes!(metrics))
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "meta", security(()),
    responses((status = 200, description = "The server is up.", body = Health)))]
async fn healthz() -> axum::Json<Health> {
    axum::Json(Health {
        status: HealthStatus::Ok,
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// Prometheus text metrics: VMs by state, requests, boot times.
#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses((status = 200, description = "Prometheus text format.", body = String,
               content_type = "text/plain")))]
async fn metrics(State(state): State<AppState>) -> Result<Response> {
    let text = crate::metrics::render(&state).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}
