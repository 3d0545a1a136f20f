//! The `network` field of VMs and jobs, and `/v1/vms/{id}/firewall`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::limits::{Limits, MAX_ALLOW_ENTRIES};
use crate::{Validate, ValidationError};

/// `network` of a create request (VMs and jobs) and the body of
/// `POST /v1/vms/{id}/firewall/allowlist`. Absent or `outbound: false`: no NIC at all.
///
/// The syntax of each `allow` entry is checked by the server (`hearth-net`), which also
/// refuses destinations that are always denied (private, loopback, link-local ranges).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// Give the VM a NIC with NAT to the internet.
    #[serde(default)]
    pub outbound: bool,
    /// Empty: every public destination. Otherwise only these (TCP and UDP), plus the VM's
    /// DNS resolver: `CIDR`, `IP`, `CIDR:PORT` or `HOST:PORT` (resolved on the host when
    /// the rules are applied). Needs `outbound: true`.
    #[schema(max_items = 256)]
    #[serde(default)]
    pub allow: Vec<String>,
}

impl Validate for NetworkSpec {
    fn validate(&self, l: &Limits) -> Result<(), ValidationError> {
        if self.allow.len() > MAX_ALLOW_ENTRIES {
            return Err(ValidationError::TooManyAllowEntries {
                count: self.allow.len(),
            });
        }
        if !l.networking && (self.outbound || !self.allow.is_empty()) {
            return Err(ValidationError::NoNetworking);
        }
        Ok(())
    }
}

/// A networked VM's settings, plus its addresses while it holds a block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmNetwork {
    pub outbound: bool,
    /// The allowlist as given (empty = open).
    pub allow: Vec<String>,
    /// The VM's /29 from the pool; `null` once the VM is failed or deleted.
    pub subnet: Option<String>,
    /// The guest's IPv4 address (eth0).
    pub address: Option<String>,
    pub gateway: Option<String>,
    pub mac: Option<String>,
}

/// `GET /v1/vms/{id}/firewall` and the answer to an allowlist update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FirewallView {
    pub outbound: bool,
    /// The allowlist as stored (empty = every public destination).
    pub allow: Vec<String>,
    pub address: Option<String>,
    /// Resolver the guest uses; always reachable on port 53.
    pub dns: Option<String>,
    /// The host-side nftables table of the VM as `nft list` prints it; `null` while the
    /// VM is not running (it has no host network then).
    pub rules: Option<String>,
}
