//! A running VM's outbound allowlist. Host rules come first: they decide, and cut open
//! connections to what is no longer allowed (see [`crate::network`]).

use axum::extract::{Path, State};
use hearth_api::network::{FirewallView, NetworkSpec};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{Conflict, NotFound};
use super::Valid;
use crate::error::Result;
use crate::owner::{self, Cmd};
use crate::AppState;
use crate::{network, vms};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(set_allowlist))
        .routes(routes!(get_firewall))
}

/// Replaces a running networked VM's outbound allowlist: host rules first, then the
/// guest's own rules.
#[utoipa::path(post, path = "/v1/vms/{id}/firewall/allowlist", tag = "network",
    request_body = NetworkSpec, params(("id" = String, Path, format = Uuid, description = "The VM's id.")),
    responses((status = 200, description = "The new allowlist, in force.", body = FirewallView),
              (status = 404, response = NotFound),
              (status = 409, response = Conflict)))]
async fn set_allowlist(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Valid(spec): Valid<NetworkSpec>,
) -> Result<axum::Json<FirewallView>> {
    // Through the owner: never concurrent with a stop or destroy tearing the network down.
    let vm = owner::ask(&state, &id, |r| Cmd::Firewall(spec, r)).await?;
    Ok(axum::Json(network::firewall_view(&state, &vm).await?))
}

/// The stored allowlist and, while the VM runs, the host ruleset enforcing it; 404 once
/// the VM was deleted.
#[utoipa::path(get, path = "/v1/vms/{id}/firewall", tag = "network", params(("id" = String, Path, format = Uuid, description = "The VM's id.")),
    responses((status = 200, description = "The VM's network.", body = FirewallView),
              (status = 404, response = NotFound)))]
async fn get_firewall(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<FirewallView>> {
    let vm = vms::visible_vm(&state, &id).await?;
    Ok(axum::Json(network::firewall_view(&state, &vm).await?))
}
