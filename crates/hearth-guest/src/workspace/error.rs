use hearth_proto::ErrorCode;

use crate::archive::PathError;

/// Why a file operation failed; each maps to one HTTP status and `ErrorBody` code.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("path {path:?}: {source}")]
    BadPath { path: String, source: PathError },
    #[error("{0} leads outside /workspace through a symlink (or a link loop); refused")]
    Escapes(String),
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("{0} is a directory")]
    IsDir(String),
    #[error("{0} (or a component of it) is not a directory")]
    NotDir(String),
    #[error("{0} already exists")]
    Exists(String),
    #[error("directory {0} is not empty (use recursive)")]
    NotEmpty(String),
    #[error("{0} is a symlink; writes never follow or replace a symlink (delete it first)")]
    Symlink(String),
    #[error("{0} is not a regular file")]
    NotRegular(String),
    #[error("{0}: permission denied for uid 1000")]
    Denied(String),
    #[error("{op} of /workspace itself is not allowed")]
    Root { op: &'static str },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("no space left in the workspace while writing {0}")]
    NoSpace(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl FsError {
    /// Classifies an error of an operation on `path` (shown as the guest sees it).
    pub fn from_io(path: impl std::fmt::Display, e: std::io::Error) -> FsError {
        let path = path.to_string();
        match e.raw_os_error() {
            Some(libc::ENOENT) => FsError::NotFound(path),
            // openat2(RESOLVE_BENEATH) answers EXDEV for a way out, ELOOP for a loop or a
            // refused magic link.
            Some(libc::EXDEV) | Some(libc::ELOOP) => FsError::Escapes(path),
            Some(libc::EEXIST) => FsError::Exists(path),
            Some(libc::ENOTEMPTY) => FsError::NotEmpty(path),
            Some(libc::EISDIR) => FsError::IsDir(path),
            Some(libc::ENOTDIR) => FsError::NotDir(path),
            Some(libc::EACCES) | Some(libc::EPERM) => FsError::Denied(path),
            Some(libc::ENAMETOOLONG) => FsError::Invalid(format!("{path}: name too long")),
            Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG) => FsError::NoSpace(path),
            _ => FsError::Io {
                context: path,
                source: e,
            },
        }
    }

    /// A closure for `map_err` that classifies errors about `path`.
    pub fn on(path: impl std::fmt::Display) -> impl FnOnce(rustix::io::Errno) -> FsError {
        let path = path.to_string();
        move |e| FsError::from_io(path, e.into())
    }

    /// HTTP status: the client's fault is 4xx, ours 500.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadPath { .. } | Self::Escapes(_) | Self::Root { .. } | Self::Invalid(_) => 422,
            Self::NotFound(_) => 404,
            Self::IsDir(_) | Self::NotDir(_) | Self::Exists(_) | Self::NotEmpty(_) => 409,
            Self::Symlink(_) | Self::NotRegular(_) => 409,
            Self::Denied(_) => 403,
            Self::TooLarge(_) | Self::NoSpace(_) => 413,
            Self::Io { .. } => 500,
        }
    }

    /// Stable `ErrorBody` code.
    pub fn code(&self) -> ErrorCode {
        match self.status() {
            403 => ErrorCode::Forbidden,
            404 => ErrorCode::NotFound,
            409 => ErrorCode::Conflict,
            413 => ErrorCode::PayloadTooLarge,
            422 => ErrorCode::InvalidRequest,
            _ => ErrorCode::Internal,
        }
    }
}

pub type Result<T, E = FsError> = std::result::Result<T, E>;
