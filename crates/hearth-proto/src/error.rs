use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
    #[error("freeze timeout_ms {0} is outside 1..={1}")]
    BadFreezeTimeout(u64, u64),
}

pub type Result<T, E = ProtoError> = std::result::Result<T, E>;

/// The error body every Hearth HTTP endpoint (agent and server) returns:
/// `{"error": {"code": "...", "message": "..."}}`, plus `request_id` on a server's 5xx.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// Human-readable explanation naming the offending value. On a 5xx it is generic:
    /// the details are in the server's log under `request_id`.
    pub message: String,
    /// Set on the server's 5xx answers (also sent as the `X-Request-Id` header): quote it
    /// when reporting the failure, the log has the details under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code,
                message: message.into(),
                request_id: None,
            },
        }
    }
}

/// Stable machine-readable error codes, one list for the agent and the server, so a
/// client matches on these and never on messages. On the wire each is a snake_case
/// string (see [`ErrorCode::as_str`]).
///
/// A code this build does not know (a newer or older peer) deserialises to
/// [`ErrorCode::Other`] instead of failing the parse; the server never sends one of its
/// own (it maps an unknown agent code to the code of the agent's status).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 400: the request is malformed (JSON syntax, query string, content type).
    BadRequest,
    /// 401: no API key, or one that is not valid.
    Unauthorized,
    /// 403: the guest's user (uid 1000) may not do that to that file.
    Forbidden,
    /// 404: no such route or resource (VM, image, job, file ...).
    NotFound,
    /// 405: the route exists, the method does not.
    MethodNotAllowed,
    /// 409: valid, but not in the resource's current state (VM not running, limit on
    /// live VMs reached, image in use ...).
    Conflict,
    /// 413: a body or an upload above a limit.
    PayloadTooLarge,
    /// 422: well-formed but breaks a rule (value out of range, unknown field, bad name).
    /// The agent said `invalid` before this list existed; both sides use this one now.
    InvalidRequest,
    /// 429: too many VM boots at once; retry later.
    TooManyRequests,
    /// 422: an uploaded archive breaks the workspace policy (symlink, `..`, device ...).
    ArchiveRejected,
    /// 400: an uploaded archive is not a readable tar (or tar.gz) stream.
    BadArchive,
    /// 409: the VM went away during the request.
    VmUnreachable,
    /// 500: the VM monitor (QEMU, Firecracker) failed.
    VmmError,
    /// 502: the VM runs but its agent did not answer.
    AgentUnreachable,
    /// 503: a facility the request needs is unavailable on this host right now.
    Unavailable,
    /// 422: the VM's image has no such runtime (an OCI image without Python, say); `exec`
    /// still works.
    RuntimeMissing,
    /// 422: the VM's image has no `nft`, so the in-guest firewall cannot be set (the
    /// host's egress rules still apply).
    FirewallUnavailable,
    /// 500: anything else that failed on the serving side.
    Internal,
    /// A code this build does not know, kept verbatim.
    Other(String),
}

impl ErrorCode {
    /// Every code this build knows, in documentation order.
    pub const KNOWN: [ErrorCode; 18] = [
        ErrorCode::BadRequest,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Conflict,
        ErrorCode::PayloadTooLarge,
        ErrorCode::InvalidRequest,
        ErrorCode::TooManyRequests,
        ErrorCode::ArchiveRejected,
        ErrorCode::BadArchive,
        ErrorCode::VmUnreachable,
        ErrorCode::VmmError,
        ErrorCode::AgentUnreachable,
        ErrorCode::Unavailable,
        ErrorCode::RuntimeMissing,
        ErrorCode::FirewallUnavailable,
        ErrorCode::Internal,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::ArchiveRejected => "archive_rejected",
            ErrorCode::BadArchive => "bad_archive",
            ErrorCode::VmUnreachable => "vm_unreachable",
            ErrorCode::VmmError => "vmm_error",
            ErrorCode::AgentUnreachable => "agent_unreachable",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::RuntimeMissing => "runtime_missing",
            ErrorCode::FirewallUnavailable => "firewall_unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::Other(s) => s,
        }
    }

    /// The generic code of an HTTP status, for answers that carry no code of their own.
    pub fn for_status(status: u16) -> ErrorCode {
        match status {
            401 => ErrorCode::Unauthorized,
            403 => ErrorCode::Forbidden,
            404 => ErrorCode::NotFound,
            405 => ErrorCode::MethodNotAllowed,
            409 => ErrorCode::Conflict,
            413 => ErrorCode::PayloadTooLarge,
            422 => ErrorCode::InvalidRequest,
            429 => ErrorCode::TooManyRequests,
            502 => ErrorCode::AgentUnreachable,
            503 => ErrorCode::Unavailable,
            s if s >= 500 => ErrorCode::Internal,
            _ => ErrorCode::BadRequest,
        }
    }

    pub fn is_known(&self) -> bool {
        !matches!(self, ErrorCode::Other(_))
    }
}

impl From<&str> for ErrorCode {
    fn from(s: &str) -> Self {
        ErrorCode::KNOWN
            .into_iter()
            .find(|c| c.as_str() == s)
            .unwrap_or_else(|| ErrorCode::Other(s.to_string()))
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(ErrorCode::from(s.as_ref()))
    }
}

/// The documented codes are the known ones: the server never sends [`ErrorCode::Other`].
#[cfg(feature = "schema")]
impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(
                ErrorCode::KNOWN.iter().map(|c| c.as_str().to_string()),
            ))
            .description(Some(
                "Stable machine-readable code; match on it, never on the message.",
            ))
            .into()
    }
}

#[cfg(feature = "schema")]
impl utoipa::ToSchema for ErrorCode {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_strings_and_unknown_ones_survive() {
        for c in ErrorCode::KNOWN {
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), c);
        }
        let newer: ErrorBody =
            serde_json::from_str(r#"{"error":{"code":"file_busy","message":"m"}}"#).unwrap();
        assert_eq!(newer.error.code, ErrorCode::Other("file_busy".into()));
        assert_eq!(
            serde_json::to_value(&newer).unwrap()["error"]["code"],
            "file_busy"
        );
        assert!(!newer.error.code.is_known());
    }

    #[test]
    fn statuses_map_to_their_generic_code() {
        let table = [
            (400, "bad_request"),
            (404, "not_found"),
            (418, "bad_request"),
            (422, "invalid_request"),
            (502, "agent_unreachable"),
            (500, "internal"),
            (504, "internal"),
        ];
        for (status, code) in table {
            assert_eq!(ErrorCode::for_status(status).as_str(), code, "{status}");
        }
    }
}
