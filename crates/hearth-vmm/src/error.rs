use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} not found: {hint}")]
    MissingBinary { what: &'static str, hint: String },
    #[error("KVM was requested but is not usable: {0}")]
    KvmUnusable(String),
    #[error("firecracker needs KVM, and KVM is not usable here: {0}")]
    FirecrackerNeedsKvm(String),
    #[error("file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Spawn(String),
    #[error("firecracker API {method} {path} failed with {status}: {body}")]
    FirecrackerApi {
        method: &'static str,
        path: String,
        status: u16,
        body: String,
    },
    #[error("{what} is not supported by the {vmm} backend: {why}")]
    Unsupported {
        what: &'static str,
        vmm: crate::VmmKind,
        why: &'static str,
    },
    #[error("VM {id} is not running (its VMM process is gone)")]
    NotRunning { id: String },
    #[error("snapshot {0}: {1}")]
    BadSnapshot(PathBuf, String),
    #[error("hybrid vsock handshake failed: {0}")]
    Handshake(String),
    #[error("agent not ready after {0:?}: {1}")]
    AgentTimeout(std::time::Duration, String),
    #[error("agent returned {status}: {code}: {message}")]
    Agent {
        status: u16,
        code: hearth_proto::ErrorCode,
        message: String,
    },
    #[error("agent transport: {0}")]
    Transport(String),
    #[error(
        "the guest agent (hearth-agent {agent_version}) speaks protocol version {agent}, this \
         host speaks version {host}: rebuild the guest image (`hearth image build`) so both match"
    )]
    ProtocolMismatch {
        agent: u32,
        agent_version: String,
        host: u32,
    },
    #[error("{name}={value:?} is not valid: expected {expected}")]
    BadSetting {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("VM {id} exited during boot: {detail}")]
    VmDied { id: String, detail: String },
    #[error("VM state dir {0} has no usable metadata: {1}")]
    BadState(PathBuf, String),
}

impl Error {
    /// Wraps an I/O error with the path it concerns (most errors here are about files).
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
