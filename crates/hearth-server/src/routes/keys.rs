//! API key routes. A key is shown once, at creation; only its hash is stored.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Extension;
use hearth_api::keys::{CreateKey, KeyList, NewKey};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{Conflict, NotFound};
use super::Valid;
use crate::auth::KeyId;
use crate::error::{AppError, Result};
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_key, list_keys))
        .routes(routes!(delete_key))
}

#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = CreateKey,
    responses((status = 201, description = "The key, shown this once.", body = NewKey)))]
async fn create_key(
    State(state): State<AppState>,
    Valid(req): Valid<CreateKey>,
) -> Result<(StatusCode, axum::Json<NewKey>)> {
    let (rec, key) = crate::auth::create_key(&state, &req.name).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(NewKey {
            id: rec.id,
            name: rec.name,
            key,
        }),
    ))
}

/// Names and ids, never the keys.
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    responses((status = 200, description = "The keys.", body = KeyList)))]
async fn list_keys(State(state): State<AppState>) -> Result<axum::Json<KeyList>> {
    Ok(axum::Json(KeyList {
        keys: state.store.list_keys().await?,
    }))
}

/// Revokes a key at once. A key cannot revoke itself (409): revoke it with another, so
/// nobody locks themselves out by mistake.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path, format = Uuid, description = "The key's id.")),
    responses((status = 204, description = "Revoked."),
              (status = 404, response = NotFound),
              (status = 409, response = Conflict)))]
async fn delete_key(
    State(state): State<AppState>,
    Extension(me): Extension<KeyId>,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    if me.0 == id {
        return Err(AppError::Conflict(
            "a key cannot revoke itself: revoke it with another key".into(),
        ));
    }
    if !state.store.delete_key(&id).await? {
        return Err(AppError::NotFound(format!("no API key with id {id:?}")));
    }
    state.keys.reload(&state.store).await?;
    Ok(StatusCode::NO_CONTENT)
}
