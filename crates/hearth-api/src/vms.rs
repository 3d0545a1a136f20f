//! `/v1/vms`: create, list, show, delete, stop, start, console log, call history.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::limits::{Limits, MAX_PAGE, MAX_TAIL};
use crate::network::{NetworkSpec, VmNetwork};
use crate::{rules, Timestamp, Validate, ValidationError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    Creating,
    Running,
    /// Frozen in memory (`POST /v1/vms/{id}/pause`): no guest code runs; any call that
    /// needs the guest resumes it first.
    Paused,
    Stopped,
    Failed,
    Deleted,
}

impl VmState {
    pub const ALL: [VmState; 6] = [
        VmState::Creating,
        VmState::Running,
        VmState::Paused,
        VmState::Stopped,
        VmState::Failed,
        VmState::Deleted,
    ];
    /// States that hold resources (processes or disk) and count against `max_vms`.
    pub const LIVE: [VmState; 4] = [
        VmState::Creating,
        VmState::Running,
        VmState::Paused,
        VmState::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Creating => "creating",
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::Stopped => "stopped",
            VmState::Failed => "failed",
            VmState::Deleted => "deleted",
        }
    }
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for VmState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        VmState::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                format!("unknown VM state {s:?}: creating|running|paused|stopped|failed|deleted")
            })
    }
}

/// A VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Vm {
    #[schema(format = Uuid)]
    pub id: String,
    pub state: VmState,
    /// Image name.
    pub image: String,
    pub vcpus: u8,
    pub memory_mib: u32,
    /// `qemu` or `firecracker`, known once the VM was started.
    pub vmm: Option<String>,
    /// `kvm` or `tcg`.
    pub accel: Option<String>,
    pub created_at: Timestamp,
    /// When the agent first answered.
    pub ready_at: Option<Timestamp>,
    /// Milliseconds from start to the agent answering.
    pub boot_ms: Option<i64>,
    pub ttl_s: Option<i64>,
    /// When the TTL destroys the VM.
    pub expires_at: Option<Timestamp>,
    /// Paused after this many seconds without an API call to it (absent: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_s: Option<i64>,
    pub metadata: BTreeMap<String, String>,
    /// Why the VM failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Present when the VM was created with `network.outbound: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<VmNetwork>,
}

/// `GET /v1/vms`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VmList {
    pub vms: Vec<Vm>,
}

/// `POST /v1/vms`. The environment is not echoed back (it may hold secrets).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVm {
    /// Image name or id; default: the server's default image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Default from the server's config (1).
    #[schema(minimum = 1, maximum = 4)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u8>,
    /// Default from the server's config (512).
    #[schema(minimum = 128, maximum = 4096)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u32>,
    /// Environment for every exec and run in this VM.
    #[schema(schema_with = hearth_proto::schema::env_map)]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Destroy the VM this many seconds after creation.
    #[schema(minimum = 1, maximum = 604800)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<u64>,
    /// Pause the VM after this many seconds without an API call to it (none in flight);
    /// any call resumes it. Default from the server's config (off unless set there).
    #[schema(minimum = 1, maximum = 604800)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_s: Option<u64>,
    /// Free-form labels, returned as given.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Outbound networking; absent means no NIC at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkSpec>,
}

impl Validate for CreateVm {
    fn validate(&self, l: &Limits) -> Result<(), ValidationError> {
        rules::vcpus(self.vcpus, l)?;
        rules::memory_mib(self.memory_mib, l)?;
        if let Some(value) = self.ttl_s {
            if value == 0 || value > l.max_ttl_s {
                return Err(ValidationError::TtlS {
                    value,
                    max: l.max_ttl_s,
                });
            }
        }
        if let Some(value) = self.idle_timeout_s {
            if value == 0 || value > l.max_ttl_s {
                return Err(ValidationError::IdleTimeoutS {
                    value,
                    max: l.max_ttl_s,
                });
            }
        }
        rules::env_map(&self.env)?;
        match &self.network {
            Some(n) => n.validate(l),
            None => Ok(()),
        }
    }
}

/// Query of `GET /v1/vms`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListVms {
    /// Only VMs in this state.
    #[param(inline)]
    pub state: Option<VmState>,
}

impl Validate for ListVms {
    fn validate(&self, _: &Limits) -> Result<(), ValidationError> {
        Ok(())
    }
}

/// Query of `GET /v1/vms/{id}/logs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ConsoleQuery {
    /// The last N lines (default 100).
    #[param(minimum = 0, maximum = 10000)]
    pub tail: Option<u32>,
}

impl Validate for ConsoleQuery {
    fn validate(&self, _: &Limits) -> Result<(), ValidationError> {
        rules::range("tail", self.tail, 0, MAX_TAIL)
    }
}

/// `GET /v1/vms/{id}/logs`: the end of the serial console.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConsoleLog {
    pub lines: Vec<String>,
}

/// Query of `GET /v1/vms/{id}/history`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// At most this many calls, newest first (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

impl Validate for HistoryQuery {
    fn validate(&self, _: &Limits) -> Result<(), ValidationError> {
        rules::range("limit", self.limit, 1, MAX_PAGE)
    }
}

/// What a recorded call ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum CallKind {
    #[serde(rename = "exec")]
    Exec,
    #[serde(rename = "run-ts")]
    RunTs,
    #[serde(rename = "run-js")]
    RunJs,
    #[serde(rename = "run-python")]
    RunPython,
    #[serde(rename = "run-sh")]
    RunSh,
}

impl CallKind {
    pub const ALL: [CallKind; 5] = [
        CallKind::Exec,
        CallKind::RunTs,
        CallKind::RunJs,
        CallKind::RunPython,
        CallKind::RunSh,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Exec => "exec",
            CallKind::RunTs => "run-ts",
            CallKind::RunJs => "run-js",
            CallKind::RunPython => "run-python",
            CallKind::RunSh => "run-sh",
        }
    }

    /// The kind of a run in `lang`.
    pub fn run(lang: crate::Language) -> CallKind {
        match lang {
            crate::Language::Ts => CallKind::RunTs,
            crate::Language::Js => CallKind::RunJs,
            crate::Language::Python => CallKind::RunPython,
            crate::Language::Sh => CallKind::RunSh,
        }
    }
}

impl fmt::Display for CallKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for CallKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        CallKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown call kind {s:?}"))
    }
}

/// One exec or run call on a VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Call {
    pub id: String,
    pub kind: CallKind,
    /// The request as sent; a big one as `{"truncated": true, "bytes", "head"}`.
    pub input: serde_json::Value,
    pub exit_code: Option<i32>,
    pub duration_ms: Option<i64>,
    /// Why the call failed, when it did not run to an exit code.
    pub error: Option<String>,
    pub created_at: Timestamp,
}

/// `GET /v1/vms/{id}/history`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CallHistory {
    pub calls: Vec<Call>,
}
