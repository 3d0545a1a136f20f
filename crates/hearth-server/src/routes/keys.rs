//! API key routes. A key is shown once, at creation; only its hash is stored.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Json;
use crate::error::{AppError, Result};
use crate::models::KeyRecord;
use crate::AppState;

type E = crate::models::ErrorDoc;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_key, list_keys))
        .routes(routes!(delete_key))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    name: String,
}

#[derive(Serialize, ToSchema)]
struct NewKey {
    id: String,
    name: String,
    /// The key itself; not retrievable later.
    key: String,
}

#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = CreateKey,
    responses((status = 201, body = NewKey), (status = 422, body = E)))]
async fn create_key(
    State(state): State<AppState>,
    Json(req): Json<CreateKey>,
) -> Result<(StatusCode, axum::Json<NewKey>)> {
    let name = req.name.trim();
    if name.is_empty() || name.len() > 128 {
        return Err(AppError::Unprocessable(
            "key name must be 1-128 characters".into(),
        ));
    }
    let (rec, key) = crate::auth::create_key(&state, name).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(NewKey {
            id: rec.id,
            name: rec.name,
            key,
        }),
    ))
}

#[derive(Serialize, ToSchema)]
struct KeyList {
    keys: Vec<KeyRecord>,
}

#[utoipa::path(get, path = "/v1/keys", tag = "keys", responses((status = 200, body = KeyList)))]
async fn list_keys(State(state): State<AppState>) -> Result<axum::Json<KeyList>> {
    Ok(axum::Json(KeyList {
        keys: state.store.list_keys().await?,
    }))
}

/// Revokes a key at once (the auth cache is reloaded).
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = E)))]
async fn delete_key(State(state): State<AppState>, Path(id): Path<String>) -> Result<StatusCode> {
    if !state.store.delete_key(&id).await? {
        return Err(AppError::NotFound(format!("no API key with id {id:?}")));
    }
    state.keys.reload(&state.store).await?;
    Ok(StatusCode::NO_CONTENT)
}
