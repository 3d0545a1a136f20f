//! The limits a request is validated against. The server fills them from its config;
//! [`Limits::default`] is the default config, which is also what the committed OpenAPI
//! snapshot shows.

/// Smallest VM memory a guest boots with.
pub const MIN_MEMORY_MIB: u32 = 128;
/// Most retries a job may ask for.
pub const MAX_RETRIES: u32 = 10;
/// Most entries in a `network.allow` list (more makes rule updates slow).
pub const MAX_ALLOW_ENTRIES: usize = 256;
/// Longest file name (script names, job file names), in characters: 63 characters of
/// UTF-8 always fit the 255 bytes Linux allows, so a name checked here is never refused
/// later by the guest's file system.
pub const MAX_FILE_NAME: usize = 63;
/// Longest API key name, in characters.
pub const MAX_KEY_NAME: usize = 128;
/// Longest image name, in characters.
pub const MAX_IMAGE_NAME: usize = 64;
/// Most console lines `GET /v1/vms/{id}/logs` returns.
pub const MAX_TAIL: u32 = 10_000;
/// Largest page of a list.
pub const MAX_PAGE: u32 = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_vcpus: u8,
    pub max_memory_mib: u32,
    pub max_ttl_s: u64,
    pub max_timeout_ms: u64,
    /// Largest script, uploaded or inline, in bytes (413 above it).
    pub max_script_bytes: usize,
    /// Whether this server can give VMs a network (`network.outbound: true`).
    pub networking: bool,
    /// Whether `POST /v1/images` may build images (packages, a setup script, a parent).
    pub image_builds: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_vcpus: 4,
            max_memory_mib: 4096,
            max_ttl_s: 7 * 24 * 3600,
            max_timeout_ms: hearth_proto::MAX_TIMEOUT_MS,
            max_script_bytes: 1024 * 1024,
            networking: true,
            image_builds: true,
        }
    }
}

impl Limits {
    /// `max_timeout_ms` in whole seconds, the bound of a job's `timeout_s`.
    pub fn max_timeout_s(&self) -> u64 {
        self.max_timeout_ms / 1000
    }
}
