//! `[pool]` in the config file: how many warm VMs of which spec.

use serde::Deserialize;

use crate::config::Limits;
use crate::error::{AppError, Result};

/// `[pool]` in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Warm VMs of the default spec: default image, `defaults.vcpus`, `defaults.memory_mib`
    /// (`HEARTH_POOL_SIZE`).
    pub size: u32,
    /// More specs, each with its own size.
    pub spec: Vec<SpecConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecConfig {
    /// Image name (default: the server's default image).
    pub image: Option<String>,
    pub vcpus: Option<u8>,
    pub memory_mib: Option<u32>,
    pub size: u32,
}

impl PoolConfig {
    pub fn validate(&self, limits: &Limits) -> Result<()> {
        let bad = |m: String| Err(AppError::Config(format!("[pool]: {m}")));
        let total: u32 = self.size + self.spec.iter().map(|s| s.size).sum::<u32>();
        if total > limits.max_vms {
            return bad(format!(
                "{total} warm VMs do not fit in max_vms ({})",
                limits.max_vms
            ));
        }
        for s in &self.spec {
            if s.vcpus.is_some_and(|v| v == 0 || v > limits.max_vcpus) {
                return bad(format!("vcpus must be within 1..={}", limits.max_vcpus));
            }
            if s.memory_mib
                .is_some_and(|m| !(128..=limits.max_memory_mib).contains(&m))
            {
                return bad(format!(
                    "memory_mib must be within 128..={}",
                    limits.max_memory_mib
                ));
            }
        }
        Ok(())
    }
}
