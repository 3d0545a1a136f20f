//! Jobs (reserved for the jobs issue): a queue in the store, claimed by workers that run
//! each job in a fresh VM through [`crate::vms::create_vm`] and [`crate::vms::destroy_vm`].
//!
//! Hooks already in place: [`routes`] is merged into the authenticated `/v1` router (use
//! `utoipa_axum::routes!` so the routes appear in `/openapi.json`), and migrations go in
//! `migrations/0002_jobs.sql` plus one line in `store::MIGRATIONS`.

use utoipa_axum::router::OpenApiRouter;

use crate::AppState;

/// Job routes; merged into `app()` behind the API-key check.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
}
