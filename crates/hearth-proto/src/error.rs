use serde::{Deserialize, Serialize};

/// Errors from parsing or validating protocol values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    #[error("unknown language {0:?}: expected sh, python, ts or js")]
    UnknownLanguage(String),
    #[error("cannot infer language from file name {0:?}: use .sh, .py, .ts or .js")]
    NoLanguageForFile(String),
    #[error("invalid guest network setting {0:?}: {1}")]
    BadNet(String, &'static str),
    #[error("invalid env entry {0:?}: expected KEY=VALUE with a non-empty key")]
    BadEnv(String),
    #[error("request needs exactly one of `code` and `path`")]
    CodeOrPath,
    #[error("timeout_ms {0} is above the maximum of {1}")]
    TimeoutTooLarge(u64, u64),
    #[error("`cmd` must not be empty")]
    EmptyCommand,
    #[error("mode {0:?} is not octal permission bits between 0 and 0777")]
    BadMode(String),
    #[error("depth {0} is outside 1..={1}")]
    BadDepth(u32, u32),
    #[error("pty size {0}x{1} is outside 1..={2} in either direction")]
    BadPtySize(u16, u16, u16),
}

pub type Result<T, E = ProtoError> = std::result::Result<T, E>;

/// The error body every Hearth HTTP endpoint (agent and server) returns:
/// `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `bad_request`, `not_found`, `archive_rejected`.
    pub code: String,
    /// Human-readable explanation naming the offending value.
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}
