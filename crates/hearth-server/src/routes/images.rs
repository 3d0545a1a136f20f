//! Image routes: list, create (empty, or built from packages/script/parent), upload
//! kernel/rootfs (streamed to disk), set default, delete, and templates of VMs.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use hearth_api::images::{CreateImage, CreateTemplate, Image, ImageList};
use hearth_api::schema::NonEmptyBinary;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{Conflict, InvalidRequest, NotFound, Unavailable};
use super::Valid;
use crate::error::{AppError, Result};
use crate::{images, AppState};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_images, create_image))
        .routes(routes!(delete_image))
        .routes(routes!(put_kernel))
        .routes(routes!(put_rootfs))
        .routes(routes!(set_default_image))
        .routes(routes!(template))
}

/// Images by name; picks up images `hearth image build` finished since the server started.
#[utoipa::path(get, path = "/v1/images", tag = "images",
    responses((status = 200, description = "The images.", body = ImageList)))]
async fn list_images(State(state): State<AppState>) -> Result<axum::Json<ImageList>> {
    images::register(&state, false).await?;
    Ok(axum::Json(ImageList {
        images: state.store.list_images().await?,
    }))
}

/// With only a `name`: creates an empty image; upload its kernel and rootfs next. With
/// `packages`, `script` or `from`: builds the image (as `hearth image build`) and answers
/// when it is built, one build at a time; past 20 minutes the answer is a 503 and the
/// build goes on (the image appears in the list when done).
#[utoipa::path(post, path = "/v1/images", tag = "images", request_body = CreateImage,
    responses((status = 201, description = "Created (not ready yet), or built.", body = Image),
              (status = 404, response = NotFound),
              (status = 409, response = Conflict),
              (status = 422, response = InvalidRequest),
              (status = 503, response = Unavailable)))]
async fn create_image(
    State(state): State<AppState>,
    Valid(req): Valid<CreateImage>,
) -> Result<(StatusCode, axum::Json<Image>)> {
    let img = if req.is_build() {
        let build = crate::image_ops::BuildRequest {
            name: req.name,
            packages: req.packages.into_iter().map(|p| p.0).collect(),
            script: req.script,
            from: req.from,
        };
        crate::image_ops::build(&state, build).await?
    } else {
        images::create_image(&state, &req.name).await?
    };
    Ok((StatusCode::CREATED, axum::Json(img)))
}

/// Makes an image of the VM's writes: a read-only layer over the VM's image (its file
/// system frozen for the copy if it runs). VMs created from it start with those files.
#[utoipa::path(post, path = "/v1/vms/{id}/template", tag = "images", request_body = CreateTemplate,
    params(("id" = String, Path, description = "VM id")),
    responses((status = 201, description = "The new image.", body = Image),
              (status = 404, response = NotFound),
              (status = 409, response = Conflict)))]
async fn template(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Valid(req): Valid<CreateTemplate>,
) -> Result<(StatusCode, axum::Json<Image>)> {
    let img = crate::image_ops::template(&state, &id, &req.name).await?;
    Ok((StatusCode::CREATED, axum::Json(img)))
}

async fn put(state: AppState, id: String, kind: &str, body: Body) -> Result<axum::Json<Image>> {
    let limit = state.config.limits.max_image_file_bytes;
    let img = images::put_file(&state, &id, kind, body.into_data_stream(), limit).await?;
    Ok(axum::Json(img))
}

/// Uploads the kernel (`vmlinux`); the body is streamed to disk and its sha256 recorded.
#[utoipa::path(put, path = "/v1/images/{id}/kernel", tag = "images",
    request_body(content = NonEmptyBinary, content_type = "application/octet-stream"),
    params(("id" = String, Path, description = "image id or name")),
    responses((status = 200, description = "The image with its kernel.", body = Image),
              (status = 404, response = NotFound),
              (status = 409, response = Conflict),
              (status = 422, response = InvalidRequest)))]
async fn put_kernel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Body,
) -> Result<axum::Json<Image>> {
    put(state, id, "kernel", body).await
}

/// Uploads the base rootfs (ext4).
#[utoipa::path(put, path = "/v1/images/{id}/rootfs", tag = "images",
    request_body(content = NonEmptyBinary, content_type = "application/octet-stream"),
    params(("id" = String, Path, description = "image id or name")),
    responses((status = 200, description = "The image with its rootfs.", body = Image),
              (status = 404, response = NotFound),
              (status = 409, response = Conflict),
              (status = 422, response = InvalidRequest)))]
async fn put_rootfs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Body,
) -> Result<axum::Json<Image>> {
    put(state, id, "rootfs", body).await
}

/// Makes this image the one VMs get when they name none.
#[utoipa::path(post, path = "/v1/images/{id}/default", tag = "images",
    params(("id" = String, Path, description = "image id or name")),
    responses((status = 200, description = "The image, now the default.", body = Image),
              (status = 404, response = NotFound),
              (status = 409, response = Conflict)))]
async fn set_default_image(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<Image>> {
    let img = state.store.image(&id).await?;
    if !img.ready {
        return Err(AppError::Conflict(format!(
            "image {} has no kernel or rootfs yet",
            img.name
        )));
    }
    state.store.set_default_image(&img.id).await?;
    Ok(axum::Json(state.store.image(&img.id).await?))
}

/// Deletes an image; 409 while a VM uses it or an image was made from it.
#[utoipa::path(delete, path = "/v1/images/{id}", tag = "images",
    params(("id" = String, Path, description = "image id or name")),
    responses((status = 204, description = "Deleted."),
              (status = 404, response = NotFound),
              (status = 409, response = Conflict)))]
async fn delete_image(State(state): State<AppState>, Path(id): Path<String>) -> Result<StatusCode> {
    images::delete_image(&state, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
