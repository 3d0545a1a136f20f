//! Wire contract between the Hearth host and the guest agent.
//!
//! Both sides compile this crate, so a field renamed here breaks the build on both
//! sides instead of silently at run time. It has no I/O and no async: it must stay
//! small enough to build into the static guest binaries.

pub mod agent;
pub mod error;
pub mod files;
pub mod image;
pub mod lang;
pub mod net;
pub mod paths;
pub mod process;
#[cfg(feature = "schema")]
pub mod schema;

pub use agent::*;
pub use error::{ErrorBody, ErrorCode, ErrorDetail, ProtoError, Result};
pub use files::*;
pub use image::{ImageConfig, IMAGE_CONFIG_PATH};
pub use lang::Language;
pub use net::GuestNet;
pub use process::*;

/// Version of the agent's wire protocol (the endpoints in [`paths`] and the bodies in
/// this crate). `/health` reports the agent's; the host refuses to talk to an agent whose
/// version differs from its own. Bump it with any change an older peer would misread.
///
/// 1: exec, runs, archive upload/download, firewall (unversioned agents read as 0).
/// 2: single-file operations, watch, processes with stdin and PTY attach, plain tar.
/// 3: file system freeze/thaw (templates), the image config (`/etc/hearth/image.json`)
///    applied to exec and runs, `runtime_missing` / `firewall_unavailable` answers.
pub const PROTOCOL_VERSION: u32 = 3;

/// vsock port the agent listens on inside every guest.
pub const AGENT_PORT: u32 = 8080;
/// Context id every guest gets; each VM has its own vsock device, so one value is enough.
pub const GUEST_CID: u32 = 3;
/// The only directory user code and file transfers may touch, as seen inside the guest.
pub const WORKSPACE: &str = "/workspace";
/// uid/gid user code runs as.
pub const USER_UID: u32 = 1000;
pub const USER_GID: u32 = 1000;
/// Default cap on captured output per stream before it is dropped and flagged.
pub const DEFAULT_OUTPUT_CAP: usize = 1024 * 1024;
/// Default timeout when a request names none.
pub const DEFAULT_TIMEOUT_MS: u64 = 60_000;
/// Largest timeout a request may ask for.
pub const MAX_TIMEOUT_MS: u64 = 60 * 60 * 1000;
/// Largest JSON request body the agent accepts (code + stdin live in here).
pub const MAX_JSON_BODY: usize = 16 * 1024 * 1024;
