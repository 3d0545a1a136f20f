//! `GET /v1/pool`: the warm pools, spec by spec.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /v1/pool`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PoolStatus {
    /// One line per configured spec (`[pool]` in the server's config).
    pub specs: Vec<PoolSpec>,
}

/// The warm VMs of one spec: creates with this image, vcpus and memory_mib (and no
/// network) are served by one of `ready` without a boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PoolSpec {
    /// Image name (empty while the configured image does not exist or is not ready).
    pub image: String,
    pub vcpus: u8,
    pub memory_mib: u32,
    /// Warm VMs wanted.
    pub target: u32,
    /// Booted and waiting to be claimed.
    pub ready: u32,
    /// Booting for the pool.
    pub booting: u32,
}
