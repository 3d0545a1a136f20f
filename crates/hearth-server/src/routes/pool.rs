//! `GET /v1/pool`: the warm pools, spec by spec.

use axum::extract::State;
use hearth_api::pool::PoolStatus;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_pool))
}

/// Warm VMs per spec (image, vcpus, memory_mib): how many are wanted (`target`),
/// booted and waiting (`ready`) and booting.
#[utoipa::path(get, path = "/v1/pool", tag = "vms",
    responses((status = 200, description = "The pools.", body = PoolStatus)))]
async fn get_pool(State(state): State<AppState>) -> axum::Json<PoolStatus> {
    axum::Json(PoolStatus {
        specs: state.pool.status(),
    })
}
