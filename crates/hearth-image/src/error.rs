use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not start `{cmd}`: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("`{cmd}` failed ({status}): {output}")]
    Command {
        cmd: String,
        status: String,
        output: String,
    },
    #[error("kernel config does not match the fragment: {}", .0.join(", "))]
    KernelConfig(Vec<String>),
    #[error("static guest binaries {0} not found; looked in: {1}. Build them with scripts/build-guest.sh or set HEARTH_GUEST_BIN_DIR")]
    GuestBinary(String, String),
    #[error("no Debian mirror for suite {0} in the apt sources; set HEARTH_DEBIAN_MIRROR")]
    NoMirror(String),
    #[error("building the image needs root (debootstrap, file ownership); run as root")]
    NotRoot,
    #[error("bad image name {0:?}: use letters, digits, '-', '_' and '.'")]
    BadName(String),
    #[error("image {0:?} not found under {1}")]
    NoImage(String, PathBuf),
    #[error("manifest {path}: {source}")]
    Manifest {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
