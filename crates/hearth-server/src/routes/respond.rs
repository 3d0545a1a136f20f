//! What every answer goes through on its way out: a request id, the one error shape, and
//! 5xx details kept for the log.

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hearth_api::{ErrorBody, ErrorCode};

use crate::error::{AppError, Fault};

/// The id of one request: in the `X-Request-Id` header of every answer, in the body of
/// every 5xx, and in the log line that holds that failure's details.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

pub const REQUEST_ID: &str = "x-request-id";

/// Outermost layer. Gives the request its id, rewrites error answers some layer made as
/// plain text into `ErrorBody` JSON, and turns every 5xx into a generic message plus the
/// request id, logging the details under that id.
pub async fn finish_response(mut req: Request, next: Next) -> Response {
    let id = uuid::Uuid::new_v4().simple().to_string();
    req.extensions_mut().insert(RequestId(id.clone()));
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let mut resp = next.run(req).await;
    let status = resp.status();
    if status.is_server_error() {
        let fault = resp
            .extensions_mut()
            .remove::<Fault>()
            .unwrap_or_else(|| Fault {
                code: ErrorCode::for_status(status.as_u16()),
                message: "internal error".into(),
                detail: format!("HTTP {status} from a layer"),
            });
        tracing::error!(request_id = %id, %method, %path, %status, error = %fault.detail, "request failed");
        let mut body = ErrorBody::new(fault.code, fault.message);
        body.error.request_id = Some(id.clone());
        resp = (status, axum::Json(body)).into_response();
    } else if status.is_client_error() && !is_json(&resp) {
        resp = plain_error(status);
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    resp
}

fn is_json(resp: &Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// An error some layer (tower-http limits, hyper) produced as plain text.
fn plain_error(status: StatusCode) -> Response {
    let code = ErrorCode::for_status(status.as_u16());
    let msg = status.canonical_reason().unwrap_or("error").to_string();
    (status, axum::Json(ErrorBody::new(code, msg))).into_response()
}

pub async fn no_route() -> AppError {
    AppError::NotFound("no such route".into())
}

pub async fn method_not_allowed() -> Response {
    let body = ErrorBody::new(
        ErrorCode::MethodNotAllowed,
        "method not allowed on this route",
    );
    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}
