//! Records the store keeps. What the API shows of them is `hearth-api`'s types; a record
//! adds what the API never shows (a VM's environment may hold secrets), and derefs to
//! its API view so code reads `vm.state` either way.

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};

pub use hearth_api::images::{Image, ImageSource};
pub use hearth_api::keys::Key;
pub use hearth_api::network::{NetworkSpec, VmNetwork};
pub use hearth_api::vms::{Call, CallKind, Vm, VmState};
pub use hearth_api::Timestamp;

pub fn now_ms() -> i64 {
    Timestamp::now().ms()
}

/// A VM as stored: its API view plus what stays inside the server.
#[derive(Debug, Clone, PartialEq)]
pub struct VmRecord {
    pub vm: Vm,
    pub image_id: String,
    /// Environment merged into every exec/run; never returned (it may hold secrets).
    pub env: BTreeMap<String, String>,
}

impl Deref for VmRecord {
    type Target = Vm;
    fn deref(&self) -> &Vm {
        &self.vm
    }
}

impl DerefMut for VmRecord {
    fn deref_mut(&mut self) -> &mut Vm {
        &mut self.vm
    }
}

/// A networked VM's settings as stored, with the addresses of its block (if it holds one).
pub fn vm_network(allow: Vec<String>, subnet: Option<String>) -> VmNetwork {
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

/// What `hearth-net` is asked for.
pub fn net_request(s: &NetworkSpec) -> hearth_net::NetRequest {
    hearth_net::NetRequest {
        outbound: s.outbound,
        allow: s.allow.clone(),
    }
}

/// A job as stored: its API view plus how to run it and which worker holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub job: hearth_api::jobs::Job,
    pub params: hearth_api::jobs::JobParams,
    pub claimed_by: Option<String>,
}

impl Deref for JobRecord {
    type Target = hearth_api::jobs::Job;
    fn deref(&self) -> &hearth_api::jobs::Job {
        &self.job
    }
}
