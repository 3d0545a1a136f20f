//! VM networking as the server uses it: `hearth-net` (netns + TAP per VM, nftables policy
//! on the uplink side, /29 blocks from a pool) wired into create, boot, stop, destroy,
//! allowlist updates and start-up reconciliation. `hearth-net/README.md` has the design.
//!
//! - Config comes from `HEARTH_NET_*` once, when the state is built. Whether this host can
//!   network VMs is probed on the first request that asks for a NIC, so a server whose VMs
//!   never ask never depends on it.
//! - The VM's /29 lives in `vms.net_subnet` (UNIQUE). It is allocated under the create lock,
//!   kept across stop/start, and set NULL only after the host objects are gone (the VM being
//!   failed or deleted), so a block is never handed out while its interfaces still exist.
//! - `hearth-net` calls run `ip`/`nft` and block: they go through `spawn_blocking`.

use hearth_api::network::FirewallView;
use hearth_net::{Destination, NetAttachmentInfo, NetError, Network, Subnet};
use hearth_proto::FirewallRequest;
use hearth_vmm::VmHandle;
use tokio::sync::OnceCell;

use crate::error::{from_agent_call, AppError, Result};
use crate::models::{net_request, NetworkSpec, VmNetwork, VmRecord, VmState};
use crate::AppState;

pub struct NetRuntime {
    /// The configured network, or why `HEARTH_NET_*` is unusable.
    net: std::result::Result<Network, String>,
    /// Filled once a probe passed. A failed probe is not remembered: the next request
    /// probes again, so fixing the host needs no server restart.
    probed: OnceCell<()>,
}

impl NetRuntime {
    pub fn from_env() -> NetRuntime {
        let net = hearth_net::NetConfig::from_env()
            .map(Network::new)
            .map_err(|e| e.to_string());
        if let Err(e) = &net {
            tracing::warn!(error = %e, "VM networking is not configured; VMs get no NIC");
        }
        NetRuntime {
            net,
            probed: OnceCell::new(),
        }
    }

    /// The network as configured (no probe): for teardown, rules and reconciliation.
    pub fn configured(&self) -> Result<&Network> {
        self.net.as_ref().map_err(|e| AppError::Unavailable {
            what: "VM networking is not configured on this host",
            detail: e.clone(),
        })
    }

    /// Whether `HEARTH_NET_*` describes a usable network (no probe).
    pub fn is_configured(&self) -> bool {
        self.net.is_ok()
    }

    /// The network, once this host has shown it can set VM networking up (503 if not).
    pub async fn available(&self) -> Result<&Network> {
        let net = self.configured()?;
        self.probed
            .get_or_try_init(|| async {
                let n = net.clone();
                let p = tokio::task::spawn_blocking(move || n.probe())
                    .await
                    .map_err(|e| AppError::Internal(e.to_string()))?;
                if p.ok() {
                    Ok(())
                } else {
                    Err(AppError::Unavailable {
                        what: "VM networking cannot be set up on this host",
                        detail: p.summary(),
                    })
                }
            })
            .await?;
        Ok(net)
    }
}

/// The caller's mistakes are 422 (the message names the entry), an exhausted pool is 503,
/// the rest are the host failing (500).
impl From<NetError> for AppError {
    fn from(e: NetError) -> Self {
        match e {
            NetError::BadAllow { .. }
            | NetError::BadConfig(_)
            | NetError::Resolve { .. }
            | NetError::NoIpv4(_)
            | NetError::BadVmId(_) => AppError::Unprocessable(e.to_string()),
            NetError::PoolExhausted(_) => AppError::Unavailable {
                what: "the pool of VM addresses is exhausted",
                detail: e.to_string(),
            },
            NetError::AddressInUse(..) => AppError::Conflict(e.to_string()),
            e => AppError::Internal(format!("VM networking: {e}")),
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> hearth_net::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?
        .map_err(AppError::from)
}

/// Parses every entry without touching the host (job submission uses this alone). The
/// rest of a `network` field is checked by its `Validate` (`hearth-api`).
pub fn check_syntax(spec: &NetworkSpec) -> Result<()> {
    net_request(spec).entries()?;
    Ok(())
}

/// Validates a create request's `network`: `Some` when the VM gets a NIC. Syntax first (no
/// host needed), then whether this host can do it (503), then host names and the pool.
pub async fn check_request(
    state: &AppState,
    spec: Option<&NetworkSpec>,
) -> Result<Option<NetworkSpec>> {
    let Some(spec) = spec else { return Ok(None) };
    check_syntax(spec)?;
    if !spec.outbound {
        return Ok(None);
    }
    let net = state.net.available().await?.clone();
    let req = net_request(spec);
    blocking(move || net.resolve(&req)).await?;
    Ok(Some(spec.clone()))
}

/// A free block for a new VM. Call under `create_lock`, then insert the row with it.
pub async fn allocate(state: &AppState) -> Result<String> {
    let used = state.store.used_subnets().await?;
    let pool = state.net.configured()?.config().pool;
    Ok(pool.allocate(&used)?.to_string())
}

fn subnet_of(vm: &VmRecord) -> Result<Subnet> {
    let s = vm.network.as_ref().and_then(|n| n.subnet.as_deref());
    let s = s.ok_or_else(|| AppError::Conflict(format!("VM {} holds no address", vm.id)))?;
    Ok(s.parse()?)
}

/// Host side of a boot, before the VMM starts: namespace, TAP, veth, rules.
pub async fn setup(state: &AppState, vm: &VmRecord, n: &VmNetwork) -> Result<NetAttachmentInfo> {
    let net = state.net.available().await?.clone();
    let subnet = subnet_of(vm)?;
    let spec = NetworkSpec {
        outbound: true,
        allow: n.allow.clone(),
    };
    let (id, req) = (vm.id.clone(), net_request(&spec));
    let started = std::time::Instant::now();
    let info = blocking(move || net.setup(&id, subnet, &req)).await?;
    let setup_ms = started.elapsed().as_millis() as u64;
    tracing::info!(vm = %vm.id, %subnet, setup_ms, "VM network set up");
    Ok(info)
}

pub fn attachment(info: &NetAttachmentInfo) -> hearth_vmm::NetAttachment {
    hearth_vmm::NetAttachment {
        tap: info.tap.clone(),
        netns: Some(info.netns.clone()),
        mac: info.mac.clone(),
        guest: info.guest,
    }
}

/// In-guest rules mirroring the host's (defence in depth; the host rules decide).
pub async fn guest_rules(state: &AppState, h: &VmHandle, allow: &[Destination]) -> Result<()> {
    let req = FirewallRequest {
        outbound: true,
        allow: state.net.configured()?.guest_allow(allow),
    };
    match h.agent().firewall(&req).await {
        // An image without nftables (an imported OCI image) cannot have the in-guest
        // layer; the host's rules, which judge every packet, still apply.
        Err(hearth_vmm::Error::Agent {
            code: hearth_proto::ErrorCode::FirewallUnavailable,
            message,
            ..
        }) => {
            tracing::warn!(vm = %h.id, %message, "no in-guest firewall");
            Ok(())
        }
        r => r.map_err(|e| from_agent_call(e, h.is_alive())),
    }
}

/// Removes the VM's host network (after its VMM exited) and, when the VM is failed or
/// deleted, gives its block back. Errors are logged: the next start reconciles.
pub async fn teardown(state: &AppState, id: &str) {
    let Ok(net) = state.net.configured().cloned() else {
        return;
    };
    let vm_id = id.to_string();
    match blocking(move || net.teardown(&vm_id)).await {
        Ok(()) => {
            if let Err(e) = state.store.release_subnet(id).await {
                tracing::error!(vm = %id, error = %e, "releasing the VM's address block");
            }
        }
        Err(e) => tracing::error!(vm = %id, error = %e, "removing the VM's network"),
    }
}

/// `POST /v1/vms/{id}/firewall/allowlist` on a running VM, from its owner task: host rules
/// first (they decide), then the stored list, then the guest's own rules.
pub async fn update_allowlist(
    state: &AppState,
    vm: &VmRecord,
    h: &VmHandle,
    spec: &NetworkSpec,
) -> Result<()> {
    if vm.network.is_none() {
        return Err(AppError::Conflict(format!(
            "VM {} has no network; create it with \"network\": {{\"outbound\": true}}",
            vm.id
        )));
    }
    if !spec.outbound {
        return Err(AppError::Unprocessable(
            "a running VM's NIC cannot be removed: send \"outbound\": true with an allowlist"
                .into(),
        ));
    }
    check_syntax(spec)?;
    let net = state.net.configured()?.clone();
    let (id, subnet, req) = (vm.id.clone(), subnet_of(vm)?, net_request(spec));
    let dests = blocking(move || net.update_allowlist(&id, subnet, &req)).await?;
    state.store.set_net_allow(&vm.id, &spec.allow).await?;
    guest_rules(state, h, &dests).await
}

/// `GET /v1/vms/{id}/firewall`: the stored list and, while the VM runs, its host rules.
pub async fn firewall_view(state: &AppState, vm: &VmRecord) -> Result<FirewallView> {
    let Some(n) = &vm.network else {
        return Ok(FirewallView {
            outbound: false,
            allow: vec![],
            address: None,
            dns: None,
            rules: None,
        });
    };
    let net = state.net.configured().ok().cloned();
    let rules = match (&net, vm.state) {
        (Some(net), VmState::Running | VmState::Paused) => {
            let (net, id) = (net.clone(), vm.id.clone());
            Some(blocking(move || net.rules(&id)).await?)
        }
        _ => None,
    };
    Ok(FirewallView {
        outbound: true,
        allow: n.allow.clone(),
        address: n.address.clone(),
        dns: net.map(|n| n.config().dns.to_string()),
        rules,
    })
}

/// Start-up, after VMs were re-adopted: removes host networks of every VM not running, then
/// frees the blocks of failed and deleted VMs (their networks are gone now).
pub async fn reconcile(state: &AppState, running: Vec<String>) {
    let Ok(net) = state.net.configured().cloned() else {
        return;
    };
    let res = blocking(move || {
        let known: Vec<&str> = running.iter().map(String::as_str).collect();
        net.reconcile(&known)
    })
    .await;
    match res {
        Ok(removed) => {
            if !removed.is_empty() {
                tracing::info!(?removed, "removed networks of VMs that are not running");
            }
            if let Err(e) = state.store.release_dead_subnets().await {
                tracing::error!(error = %e, "releasing address blocks");
            }
        }
        // Not root, no `ip`/`nft`: nothing of ours can exist then either.
        Err(e) => tracing::warn!(error = %e, "VM network reconciliation skipped"),
    }
}
