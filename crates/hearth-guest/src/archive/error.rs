use hearth_proto::ErrorCode;

use super::PathError;

/// Why an archive was rejected or could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archive entry {entry:?}: {source}")]
    BadPath { entry: String, source: PathError },
    #[error(
        "archive entry {entry:?} is a {kind}; only regular files and directories are accepted"
    )]
    BadType { entry: String, kind: &'static str },
    #[error("archive entry {entry:?} lies outside the destination {dest}")]
    OutsideDest { entry: String, dest: String },
    #[error("archive entry {entry:?} conflicts with an existing {existing} at the destination")]
    Conflict {
        entry: String,
        existing: &'static str,
    },
    #[error("archive has more than {max} entries (at entry {entry:?})")]
    TooManyEntries { max: u64, entry: String },
    #[error("archive holds more than {max} bytes (at entry {entry:?})")]
    TooManyBytes { max: u64, entry: String },
    #[error("archive is not a valid tar.gz stream: {0}")]
    Corrupt(String),
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("{0} is a symlink; downloads never follow symlinks")]
    SymlinkInPath(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl ArchiveError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| ArchiveError::Io { context, source }
    }

    /// HTTP status the agent answers with: the client's fault is 4xx, ours 500.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadPath { .. } | Self::BadType { .. } | Self::OutsideDest { .. } => 422,
            Self::TooManyEntries { .. } | Self::SymlinkInPath(_) => 422,
            // The archive is fine; what is already in the workspace is in its way.
            Self::Conflict { .. } => 409,
            Self::TooManyBytes { .. } => 413,
            Self::Corrupt(_) => 400,
            Self::NotFound(_) => 404,
            Self::Io { .. } => 500,
        }
    }

    /// Stable `ErrorBody` code.
    pub fn code(&self) -> ErrorCode {
        match self.status() {
            400 => ErrorCode::BadArchive,
            404 => ErrorCode::NotFound,
            409 => ErrorCode::Conflict,
            413 => ErrorCode::PayloadTooLarge,
            422 => ErrorCode::ArchiveRejected,
            _ => ErrorCode::Internal,
        }
    }
}

pub type Result<T, E = ArchiveError> = std::result::Result<T, E>;
