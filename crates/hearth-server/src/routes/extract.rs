//! Extractors whose rejections are [`AppError`]s (so they keep the one error shape), and
//! the validating ones every handler takes its input through.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use hearth_api::Validate;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::AppError;
use crate::AppState;

/// `axum::Json` whose rejections (bad JSON, wrong content type, too large, unknown field)
/// become [`AppError`]s.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(AppError))]
pub struct Json<T>(pub T);

/// `axum::extract::Query` with [`AppError`] rejections.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub struct Query<T>(pub T);

/// A JSON body that parsed and passed its rules ([`Validate`]) against this server's
/// limits: 400 for bad JSON, 422 for a body of the wrong shape or a broken rule (413 for
/// a size limit).
pub struct Valid<T>(pub T);

impl<T: DeserializeOwned + Validate> FromRequest<AppState> for Valid<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, AppError> {
        let Json(v) = Json::<Value>::from_request(req, state).await?;
        let v: T = from_json_object(v)?;
        v.validate(&state.api_limits)?;
        Ok(Valid(v))
    }
}

/// A request body as `T`, read the way JSON Schema reads JSON (the OpenAPI document is
/// the contract): a body must be an object (serde would also take an array, field by
/// field), and a number with a zero fraction (`2.0`) is an integer.
fn from_json_object<T: DeserializeOwned>(mut v: Value) -> Result<T, AppError> {
    if !v.is_object() {
        return Err(AppError::Unprocessable(
            "the body must be a JSON object".into(),
        ));
    }
    integral_floats_to_integers(&mut v);
    serde_json::from_value(v).map_err(|e| AppError::Unprocessable(e.to_string()))
}

fn integral_floats_to_integers(v: &mut Value) {
    match v {
        Value::Number(n) => {
            let Some(f) = n.as_f64().filter(|f| n.is_f64() && f.fract() == 0.0) else {
                return;
            };
            // Beyond ±2^63 the value stays a float, and an integer field refuses it.
            if (0.0..1.8e19).contains(&f) {
                *v = Value::from(f as u64);
            } else if (-9.2e18..0.0).contains(&f) {
                *v = Value::from(f as i64);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(integral_floats_to_integers),
        Value::Object(o) => o.values_mut().for_each(integral_floats_to_integers),
        _ => {}
    }
}

/// A query string that parsed and passed its rules; every failure is a 400 (the URL is
/// malformed, whatever the reason).
pub struct ValidQuery<T>(pub T);

impl<T: DeserializeOwned + Validate> FromRequestParts<AppState> for ValidQuery<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let Query(v) = Query::<T>::from_request_parts(parts, state).await?;
        v.validate(&state.api_limits)
            .map_err(|e| AppError::BadRequest(e.to_string()))?;
        Ok(ValidQuery(v))
    }
}

/// An optional JSON body from raw bytes: `None` when empty (or `null`). Syntax errors
/// are 400; JSON that does not fit `T` is 422, read as [`Valid`] reads it.
pub fn parse_optional_json<T: DeserializeOwned>(body: &[u8]) -> Result<Option<T>, AppError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| AppError::BadRequest(format!("invalid JSON: {e}")))?;
    if v.is_null() {
        return Ok(None);
    }
    from_json_object(v).map(Some)
}
