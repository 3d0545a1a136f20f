use hearth_proto::{ErrorBody, ErrorCode};

use crate::archive::ArchiveError;
use crate::jail::JailError;
use crate::workspace::FsError;

/// Everything a request can fail with; each maps to one HTTP status and `ErrorBody` code.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    BadRequest(String),
    #[error("request body is not valid JSON for this endpoint: {0}")]
    BadJson(#[from] serde_json::Error),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Proto(#[from] hearth_proto::ProtoError),
    #[error("{0}")]
    NotFound(String),
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("{0}")]
    TooLarge(String),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Jail(#[from] JailError),
    #[error("{0}")]
    Internal(String),
    /// The image lacks what the endpoint needs (a runtime, `nft`): valid request,
    /// wrong image.
    #[error("{message}")]
    Unavailable { code: ErrorCode, message: String },
}

impl AgentError {
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) | Self::BadJson(_) => 400,
            Self::Invalid(_) | Self::Proto(_) => 422,
            Self::NotFound(_) => 404,
            Self::MethodNotAllowed { .. } => 405,
            Self::TooLarge(_) => 413,
            Self::Archive(e) => e.status(),
            Self::Fs(e) => e.status(),
            Self::Conflict(_) => 409,
            Self::Jail(_) | Self::Internal(_) => 500,
            Self::Unavailable { .. } => 422,
        }
    }

    /// The shared codes of `hearth_proto::ErrorCode`: a request the server would call
    /// `invalid_request` is `invalid_request` here too.
    pub fn body(&self) -> ErrorBody {
        let code = match self {
            Self::BadRequest(_) | Self::BadJson(_) => ErrorCode::BadRequest,
            Self::Invalid(_) | Self::Proto(_) => ErrorCode::InvalidRequest,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::MethodNotAllowed { .. } => ErrorCode::MethodNotAllowed,
            Self::TooLarge(_) => ErrorCode::PayloadTooLarge,
            Self::Archive(e) => e.code(),
            Self::Fs(e) => e.code(),
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::Jail(_) | Self::Internal(_) => ErrorCode::Internal,
            Self::Unavailable { code, .. } => code.clone(),
        };
        ErrorBody::new(code, self.to_string())
    }
}

pub type Result<T, E = AgentError> = std::result::Result<T, E>;
