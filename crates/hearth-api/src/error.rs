//! [`ValidationError`]: every rule a request can break, one variant each, with the one
//! message that rule gives wherever it is checked.

use crate::limits::{MAX_ALLOW_ENTRIES, MAX_FILE_NAME, MAX_KEY_NAME, MAX_RETRIES, MIN_MEMORY_MIB};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("vcpus {value} is outside 1..={max} (limit max_vcpus)")]
    Vcpus { value: u8, max: u8 },
    #[error("memory_mib {value} is outside {MIN_MEMORY_MIB}..={max} (limit max_memory_mib)")]
    MemoryMib { value: u32, max: u32 },
    #[error("ttl_s {value} is outside 1..={max} (limit max_ttl_s)")]
    TtlS { value: u64, max: u64 },
    #[error("idle_timeout_s {value} is outside 1..={max} (limit max_ttl_s)")]
    IdleTimeoutS { value: u64, max: u64 },
    #[error("timeout_ms {value} is above the limit max_timeout_ms = {max}")]
    TimeoutMs { value: u64, max: u64 },
    #[error("timeout_s {value} is outside 1..={max} (limit max_timeout_ms)")]
    TimeoutS { value: u64, max: u64 },
    #[error("invalid env name {name:?}: it must be non-empty, without '=' or NUL")]
    EnvName { name: String },
    #[error("invalid env entry {entry:?}: expected KEY=VALUE with a valid KEY and no NUL")]
    EnvEntry { entry: String },
    #[error("{field} must not contain a NUL byte")]
    Nul { field: &'static str },
    #[error("`cmd` must not be empty")]
    EmptyCommand,
    #[error("the request needs exactly one of `code` and `path`")]
    CodeXorPath,
    #[error("`code` is empty")]
    EmptyCode,
    #[error("the script is empty")]
    EmptyScript,
    #[error("the script is {len} bytes, more than {max} (limit jobs.max_script_bytes)")]
    ScriptTooLarge { len: usize, max: usize },
    #[error(
        "invalid {what} {name:?}: one file name (not `.` or `..`), no '/', NUL or line \
         break, at most {MAX_FILE_NAME} characters"
    )]
    FileName { what: &'static str, name: String },
    #[error("invalid file path {path:?}: relative, without `..`, NUL or line breaks (it goes under /workspace)")]
    FilePath { path: String },
    #[error("{field} {value:?} is not a path in /workspace: {why}")]
    WorkspacePath {
        field: &'static str,
        value: String,
        why: &'static str,
    },
    #[error(
        "image name {name:?} must be 1-64 characters of [A-Za-z0-9._-], not starting with '.'"
    )]
    ImageName { name: String },
    #[error("invalid Debian package {name:?}: a lowercase package name, optionally =VERSION")]
    PackageName { name: String },
    #[error("the setup script is {len} bytes, more than {max}")]
    SetupScriptTooLarge { len: usize, max: usize },
    #[error("this server builds no images (image_builds = false): create an empty image and upload its files")]
    NoImageBuilds,
    #[error("key name {name:?} must be 1-{MAX_KEY_NAME} characters")]
    KeyName { name: String },
    #[error("max_retries {value} is above {MAX_RETRIES}")]
    MaxRetries { value: u32 },
    #[error("network.allow has {count} entries, more than {MAX_ALLOW_ENTRIES}")]
    TooManyAllowEntries { count: usize },
    #[error(
        "this server gives VMs no network (HEARTH_NET_* is not configured): \
         leave network.outbound false and network.allow empty"
    )]
    NoNetworking,
    #[error("{name} {value} is outside {min}..={max}")]
    OutOfRange {
        name: &'static str,
        value: i64,
        min: i64,
        max: i64,
    },
    #[error("mode {value:?} is not octal permission bits between 0 and 0777")]
    FileMode { value: String },
    #[error("invalid cursor {value:?}: pass the `next_cursor` of the previous page")]
    Cursor { value: String },
}

impl ValidationError {
    /// Whether the rule is a size limit (HTTP 413) rather than a value rule (422).
    pub fn is_too_large(&self) -> bool {
        matches!(self, ValidationError::ScriptTooLarge { .. })
    }
}
