//! The one error type of the server. Every failure an HTTP caller can see becomes an
//! [`AppError`], and its `IntoResponse` renders `hearth_proto::ErrorBody`, so clients only
//! ever parse one error shape (axum's own rejections are mapped into it too).

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hearth_proto::ErrorBody;

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
    /// A facility this request needs is missing on this host (e.g. VM networking).
    #[error("{0}")]
    Unavailable(String),
    /// The guest agent answered with an error of its own; its status and code are kept.
    #[error("agent: {message}")]
    Agent {
        status: u16,
        code: String,
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
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
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

    pub fn code(&self) -> String {
        match self {
            AppError::BadRequest(_) => "bad_request",
            AppError::Unauthorized(_) => "unauthorized",
            AppError::NotFound(_) => "not_found",
            AppError::Conflict(_) => "conflict",
            AppError::PayloadTooLarge(_) => "payload_too_large",
            AppError::Unprocessable(_) => "invalid_request",
            AppError::TooManyRequests(_) => "too_many_requests",
            AppError::Unavailable(_) => "unavailable",
            AppError::Agent { code, .. } => return code.clone(),
            AppError::AgentUnreachable(_) => "agent_unreachable",
            AppError::Vmm(hearth_vmm::Error::Transport(_))
            | AppError::Vmm(hearth_vmm::Error::Handshake(_)) => "vm_unreachable",
            AppError::Vmm(_) => "vmm_error",
            _ => "internal",
        }
        .to_string()
    }
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
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let body = ErrorBody::new(self.code(), self.to_string());
        (status, axum::Json(body)).into_response()
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

impl From<hearth_proto::ProtoError> for AppError {
    fn from(e: hearth_proto::ProtoError) -> Self {
        AppError::Unprocessable(e.to_string())
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
        assert_eq!(up.code(), "agent_unreachable");
        let agent_404 = hearth_vmm::Error::Agent {
            status: 404,
            code: "not_found".into(),
            message: "no such file".into(),
        };
        let e = from_agent_call(agent_404, true);
        assert_eq!(
            (e.status(), e.code().as_str()),
            (StatusCode::NOT_FOUND, "not_found")
        );
    }
}
