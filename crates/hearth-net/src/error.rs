use std::io;

/// Why one allowlist entry was refused. Kept separate from [`NetError`] so the API layer can
/// turn each case into a precise 400 message without string matching.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowError {
    #[error("entry is empty")]
    Empty,
    #[error("IPv6 destinations are not supported (VMs get no IPv6 at all)")]
    Ipv6Unsupported,
    #[error("{0:?} is not a valid IPv4 address")]
    BadAddress(String),
    #[error("{0:?} is not a prefix length 0..=32")]
    BadPrefix(String),
    #[error("host bits are set; did you mean {0}?")]
    HostBitsSet(String),
    #[error("{0:?} is not a port 1..=65535")]
    BadPort(String),
    #[error("a host name needs a port (host:port)")]
    MissingPort,
    #[error("{0:?} is not a valid host name")]
    BadHostName(String),
    #[error("{0} is always denied and cannot be allowed")]
    AlwaysDenied(&'static str),
    #[error("at most {0} entries are allowed")]
    TooMany(usize),
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("allowlist entry {entry:?}: {kind}")]
    BadAllow { entry: String, kind: AllowError },
    #[error("invalid VM id {0:?}: use 1-48 of [A-Za-z0-9_-], starting alphanumeric")]
    BadVmId(String),
    #[error("invalid network configuration: {0}")]
    BadConfig(String),
    #[error("address pool {0} is exhausted")]
    PoolExhausted(String),
    #[error("subnet {0} is not a block of pool {1}")]
    NotInPool(String, String),
    #[error("subnet {0} is already in use on this host (interface {1} exists)")]
    AddressInUse(String, String),
    #[error("cannot resolve {host:?}: {source}")]
    Resolve { host: String, source: io::Error },
    #[error("{0:?} resolved to no IPv4 address")]
    NoIpv4(String),
    #[error("cannot run {cmd}: {source}")]
    Spawn { cmd: String, source: io::Error },
    #[error("{cmd} failed ({status}): {stderr}")]
    Command {
        cmd: String,
        status: String,
        stderr: String,
    },
    #[error("unexpected output from {cmd}: {source}")]
    Output {
        cmd: String,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Io(#[from] io::Error),
}

pub type Result<T, E = NetError> = std::result::Result<T, E>;
