/// Errors building the jail or running something inside it.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("mounting {what} at {target}: {source}")]
    Mount {
        what: String,
        target: String,
        source: nix::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("starting {program:?} in the jail: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
}

impl JailError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| JailError::Io { context, source }
    }
}

pub type Result<T, E = JailError> = std::result::Result<T, E>;
