//! The one error type of the server. Every failure an HTTP caller can see becomes an
//! [`AppError`], and its `IntoResponse` renders `hearth_proto::ErrorBody`, so clients only
//! ever parse one error shape (axum's own rejections are mapped into it too).
//!
//! A 5xx answer carries a generic message: the details go to the log, under the request id
//! that [`crate::routes::finish_response`] adds to the body and the `X-Request-Id` header.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hearth_api::{ErrorBody, ErrorCode, ValidationError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Malformed request (bad JSON syntax, wrong content type, bad query string).
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotFound(String),
    /// The request is valid but conflicts with the current state (VM not running,
    /// image in use, limit on live VMs reached).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Well-formed but semantically invalid (unknown field, value above a limit).
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    TooManyRequests(String),
    /// A facility this request needs is unavailable on this host: `what` is shown, the
    /// reason only logged.
    #[error("{what}: {detail}")]
    Unavailable { what: &'static str, detail: String },
    /// The guest agent answered with an error of its own; its status and code are kept.
    #[error("agent: {message}")]
    Agent {
        status: u16,
        code: ErrorCode,
        message: String,
    },
    #[error("VMM: {0}")]
    Vmm(#[from] hearth_vmm::Error),
    /// The VM runs but its agent did not answer (timeout, broken channel).
    #[error("agent unreachable: {0}")]
    AgentUnreachable(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config: {0}")]
    Config(String),
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = AppError> = std::result::Result<T, E>;

impl AppError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        AppError::Io {
            context: context.into(),
            source,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            AppError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            // Agent 4xx are the caller's fault (bad path, rejected archive) and pass through;
            // anything else from the guest is a server-side failure.
            AppError::Agent { status, .. } if (400..500).contains(status) => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            AppError::Agent { .. } | AppError::AgentUnreachable(_) => StatusCode::BAD_GATEWAY,
            // A dead transport means the VM went away under the request.
            AppError::Vmm(hearth_vmm::Error::Transport(_))
            | AppError::Vmm(hearth_vmm::Error::Handshake(_)) => StatusCode::CONFLICT,
            AppError::Vmm(_)
            | AppError::Db(_)
            | AppError::Migrate(_)
            | AppError::Io { .. }
            | AppError::Config(_)
            | AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            AppError::BadRequest(_) => ErrorCode::BadRequest,
            AppError::Unauthorized(_) => ErrorCode::Unauthorized,
            AppError::NotFound(_) => ErrorCode::NotFound,
            AppError::Conflict(_) => ErrorCode::Conflict,
            AppError::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            AppError::Unprocessable(_) => ErrorCode::InvalidRequest,
            AppError::TooManyRequests(_) => ErrorCode::TooManyRequests,
            AppError::Unavailable { .. } => ErrorCode::Unavailable,
            // The public list of codes is the known one: an agent of another version may
            // know more, which become the generic code of their status.
            AppError::Agent { code, .. } if code.is_known() && self.status().is_client_error() => {
                code.clone()
            }
            AppError::Agent { .. } => ErrorCode::for_status(self.status().as_u16()),
            AppError::AgentUnreachable(_) => ErrorCode::AgentUnreachable,
            AppError::Vmm(hearth_vmm::Error::Transport(_))
            | AppError::Vmm(hearth_vmm::Error::Handshake(_)) => ErrorCode::VmUnreachable,
            AppError::Vmm(_) => ErrorCode::VmmError,
            _ => ErrorCode::Internal,
        }
    }

    /// What the caller is told: the full message for 4xx, a generic one for 5xx (the
    /// details are logged, they may name host paths and internals).
    pub fn public_message(&self) -> String {
        match self {
            e if !e.status().is_server_error() => e.to_string(),
            AppError::Unavailable { what, .. } => what.to_string(),
            AppError::Agent { .. } => "the VM's agent failed".into(),
            AppError::AgentUnreachable(_) => "the VM's agent did not answer".into(),
            AppError::Vmm(_) => "the VM monitor failed".into(),
            _ => "internal error".into(),
        }
    }
}

/// What a 5xx answer says and what only the log may see; [`crate::routes::finish_response`]
/// writes the body with the request id and logs `detail` under it.
#[derive(Debug, Clone)]
pub struct Fault {
    pub code: ErrorCode,
    pub message: String,
    pub detail: String,
}

/// Lets agent errors keep their status and code instead of all becoming 500s.
pub fn from_vmm(e: hearth_vmm::Error) -> AppError {
    match e {
        hearth_vmm::Error::Agent {
            status,
            code,
            message,
        } => AppError::Agent {
            status,
            code,
            message,
        },
        other => AppError::Vmm(other),
    }
}

/// Like [`from_vmm`] for a call on a VM: a broken channel is the VM going away (409) only
/// when its processes are gone; with the VM still up it is the agent failing (502).
pub fn from_agent_call(e: hearth_vmm::Error, vm_alive: bool) -> AppError {
    match e {
        hearth_vmm::Error::Transport(m) | hearth_vmm::Error::Handshake(m) if vm_alive => {
            AppError::AgentUnreachable(m)
        }
        other => from_vmm(other),
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorBody::new(self.code(), self.public_message());
        let mut resp = (status, axum::Json(body)).into_response();
        if status.is_server_error() {
            resp.extensions_mut().insert(Fault {
                code: self.code(),
                message: self.public_message(),
                detail: self.to_string(),
            });
        }
        resp
    }
}

/// A broken rule of a request body: 422, or 413 for a size limit.
impl From<ValidationError> for AppError {
    fn from(e: ValidationError) -> Self {
        if e.is_too_large() {
            AppError::PayloadTooLarge(e.to_string())
        } else {
            AppError::Unprocessable(e.to_string())
        }
    }
}

impl From<JsonRejection> for AppError {
    fn from(r: JsonRejection) -> Self {
        let msg = r.body_text();
        match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge(format!(
                "request body is larger than this route accepts: {msg}"
            )),
            // Missing fields, unknown fields and wrong types: the JSON parsed but does not
            // fit the schema.
            StatusCode::UNPROCESSABLE_ENTITY => AppError::Unprocessable(msg),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                AppError::BadRequest(format!("{msg} (send Content-Type: application/json)"))
            }
            _ => AppError::BadRequest(msg),
        }
    }
}

impl From<QueryRejection> for AppError {
    fn from(r: QueryRejection) -> Self {
        AppError::BadRequest(r.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_channels_are_409_when_the_vm_is_gone_and_502_when_it_runs() {
        let t = || hearth_vmm::Error::Transport("closed".into());
        assert_eq!(from_agent_call(t(), false).status(), StatusCode::CONFLICT);
        let up = from_agent_call(t(), true);
        assert_eq!(up.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(up.code(), ErrorCode::AgentUnreachable);
        let agent_404 = hearth_vmm::Error::Agent {
            status: 404,
            code: ErrorCode::NotFound,
            message: "no such file".into(),
        };
        let e = from_agent_call(agent_404, true);
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::NOT_FOUND, ErrorCode::NotFound)
        );
    }

    #[test]
    fn server_errors_tell_the_caller_nothing_internal() {
        let e = AppError::io(
            "writing /var/lib/hearth/x",
            std::io::Error::other("disk full"),
        );
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.public_message(), "internal error");
        assert!(
            e.to_string().contains("disk full"),
            "the log keeps the details"
        );
        let newer_agent = AppError::Agent {
            status: 409,
            code: ErrorCode::Other("file_busy".into()),
            message: "busy".into(),
        };
        assert_eq!(newer_agent.code(), ErrorCode::Conflict);
        assert_eq!(newer_agent.public_message(), "agent: busy");
    }
}
