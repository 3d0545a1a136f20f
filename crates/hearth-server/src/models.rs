//! Records the store keeps and the API returns. Timestamps are integer milliseconds in
//! the database (portable) and ISO-8601 strings on the wire.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize, Serializer};
use utoipa::ToSchema;

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn iso(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

fn ser_ts<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&iso(*ms))
}

fn ser_opt_ts<S: Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&iso(*ms)),
        None => s.serialize_none(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    Creating,
    Running,
    Stopped,
    Failed,
    Deleted,
}

impl VmState {
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Creating => "creating",
            VmState::Running => "running",
            VmState::Stopped => "stopped",
            VmState::Failed => "failed",
            VmState::Deleted => "deleted",
        }
    }
    pub const ALL: [VmState; 5] = [
        VmState::Creating,
        VmState::Running,
        VmState::Stopped,
        VmState::Failed,
        VmState::Deleted,
    ];
    /// States that hold resources (processes or disk) and count against `max_vms`.
    pub const LIVE: [VmState; 3] = [VmState::Creating, VmState::Running, VmState::Stopped];
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for VmState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        VmState::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                format!("unknown VM state {s:?}: creating|running|stopped|failed|deleted")
            })
    }
}

/// A VM as stored and as returned by the API.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VmRecord {
    pub id: String,
    pub state: VmState,
    /// Image name.
    pub image: String,
    #[serde(skip)]
    pub image_id: String,
    pub vcpus: u8,
    pub memory_mib: u32,
    /// `qemu` or `firecracker`, known once the VM was started.
    pub vmm: Option<String>,
    /// `kvm` or `tcg`.
    pub accel: Option<String>,
    #[serde(serialize_with = "ser_ts")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    #[serde(serialize_with = "ser_opt_ts")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ready_at: Option<i64>,
    /// Milliseconds from start to the agent answering.
    pub boot_ms: Option<i64>,
    pub ttl_s: Option<i64>,
    /// When the TTL destroys the VM.
    #[serde(serialize_with = "ser_opt_ts")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<i64>,
    pub metadata: BTreeMap<String, String>,
    /// Environment merged into every exec/run; not echoed back (it may hold secrets).
    #[serde(skip)]
    pub env: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Present when the VM was created with `network.outbound: true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<VmNetwork>,
}

/// `network` of a create request (VMs and jobs) and the body of
/// `POST /v1/vms/{id}/firewall/allowlist`. Absent or `outbound: false`: no NIC at all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// Give the VM a NIC with NAT to the internet.
    #[serde(default)]
    pub outbound: bool,
    /// Empty: every public destination. Otherwise only these (TCP and UDP), plus the VM's
    /// DNS resolver: `CIDR`, `IP`, `CIDR:PORT` or `HOST:PORT` (resolved on the host when
    /// the rules are applied).
    #[serde(default)]
    pub allow: Vec<String>,
}

impl From<&NetworkSpec> for hearth_net::NetRequest {
    fn from(s: &NetworkSpec) -> Self {
        hearth_net::NetRequest {
            outbound: s.outbound,
            allow: s.allow.clone(),
        }
    }
}

/// A networked VM's settings as stored, plus its addresses while it holds a block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
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

impl VmNetwork {
    pub fn new(allow: Vec<String>, subnet: Option<String>) -> VmNetwork {
        let block = subnet
            .as_deref()
            .and_then(|s| s.parse::<hearth_net::Subnet>().ok());
        VmNetwork {
            outbound: true,
            allow,
            subnet,
            address: block.map(|b| b.guest().to_string()),
            gateway: block.map(|b| b.gateway().to_string()),
            mac: block.map(|b| b.mac()),
        }
    }

    pub fn spec(&self) -> NetworkSpec {
        NetworkSpec {
            outbound: true,
            allow: self.allow.clone(),
        }
    }
}

/// `POST /v1/vms`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVmRequest {
    /// Image name or id; default: the default image.
    pub image: Option<String>,
    pub vcpus: Option<u8>,
    pub memory_mib: Option<u32>,
    /// Environment for every exec/run in this VM.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Destroy the VM this many seconds after creation.
    pub ttl_s: Option<u64>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Outbound networking; absent = no NIC.
    pub network: Option<NetworkSpec>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ImageRecord {
    pub id: String,
    pub name: String,
    #[schema(value_type = Option<String>)]
    pub kernel_path: Option<String>,
    pub rootfs_path: Option<String>,
    pub kernel_sha256: Option<String>,
    pub rootfs_sha256: Option<String>,
    /// `api` (uploaded), `built` (found under images/), `builtin` (KERNEL_PATH env).
    pub source: String,
    pub is_default: bool,
    /// Both kernel and rootfs are present.
    pub ready: bool,
    #[serde(serialize_with = "ser_ts")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    #[serde(serialize_with = "ser_ts")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
}

/// One exec/run call, for `GET /v1/vms/{id}/history`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CallRecord {
    pub id: String,
    /// `exec`, `run-ts`, `run-js`, `run-python`.
    pub kind: String,
    /// The request as sent (JSON).
    #[schema(value_type = Object)]
    pub input: serde_json::Value,
    pub exit_code: Option<i32>,
    pub duration_ms: Option<i64>,
    pub error: Option<String>,
    #[serde(serialize_with = "ser_ts")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
}

/// OpenAPI description of `hearth_proto::ErrorBody` (the proto crate stays free of
/// utoipa so the static guest binaries do not build it).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = ErrorBody)]
pub struct ErrorDoc {
    pub error: ErrorDetailDoc,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = ErrorDetail)]
pub struct ErrorDetailDoc {
    /// Stable machine-readable code, e.g. `not_found`, `invalid_request`.
    pub code: String,
    pub message: String,
}
