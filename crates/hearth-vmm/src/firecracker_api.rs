//! Typed bodies for the parts of Firecracker's REST API (swagger `firecracker.yaml`)
//! Hearth uses, and PUT / PATCH / GET helpers over the API's Unix socket.
use std::path::Path;

use http::{Method, Request};
use serde::{Deserialize, Serialize};

use crate::http as h;
use crate::{Error, Result};

/// `PUT /boot-source`.
#[derive(Debug, Serialize)]
pub struct BootSource {
    pub kernel_image_path: String,
    pub boot_args: String,
}

/// `PUT /machine-config`.
#[derive(Debug, Serialize)]
pub struct MachineConfig {
    pub vcpu_count: u8,
    pub mem_size_mib: u32,
}

/// `PUT /drives/{drive_id}` (virtio-block).
#[derive(Debug, Serialize)]
pub struct Drive {
    pub drive_id: String,
    pub path_on_host: String,
    /// Always false: Hearth passes `root=/dev/vda` itself, so drive order alone decides
    /// the names (rootfs first = vda, overlay = vdb), as under QEMU.
    pub is_root_device: bool,
    pub is_read_only: bool,
}

/// `PUT /vsock`.
#[derive(Debug, Serialize)]
pub struct Vsock {
    pub guest_cid: u32,
    /// Host side of the hybrid vsock; relative to the chroot under the jailer.
    pub uds_path: String,
}

/// `PUT /network-interfaces/{iface_id}`.
#[derive(Debug, Serialize)]
pub struct NetworkInterface {
    pub iface_id: String,
    pub host_dev_name: String,
    pub guest_mac: String,
}

/// `PUT /actions`.
#[derive(Debug, Serialize)]
pub struct Action {
    pub action_type: ActionType,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub enum ActionType {
    InstanceStart,
    SendCtrlAltDel,
}

/// `PATCH /vm`: pause or resume a started microVM.
#[derive(Debug, Serialize)]
pub struct VmState {
    pub state: VmRunState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmRunState {
    Paused,
    Resumed,
}

/// `GET /`: what Firecracker says about itself; `state` is `Not started`, `Running` or
/// `Paused`.
#[derive(Debug, Deserialize)]
pub struct InstanceInfo {
    pub state: String,
}

/// `PUT /snapshot/create` (the microVM must be paused).
#[derive(Debug, Serialize)]
pub struct SnapshotCreate {
    /// Always `Full`: a diff snapshot is only useful on top of a full one.
    pub snapshot_type: &'static str,
    pub snapshot_path: String,
    pub mem_file_path: String,
}

/// `PUT /snapshot/load` (only on a Firecracker that has not been configured yet).
#[derive(Debug, Serialize)]
pub struct SnapshotLoad {
    pub snapshot_path: String,
    pub mem_backend: MemBackend,
    pub resume_vm: bool,
}

#[derive(Debug, Serialize)]
pub struct MemBackend {
    /// `File`: the memory file is mapped privately, so several VMs restore from one.
    pub backend_type: &'static str,
    pub backend_path: String,
}

/// `PUT path` with a JSON body; anything but 2xx becomes `Error::FirecrackerApi` carrying
/// Firecracker's `fault_message`.
pub async fn put<T: Serialize>(api_sock: &Path, path: &str, body: &T) -> Result<()> {
    send(api_sock, Method::PUT, path, Some(body))
        .await
        .map(drop)
}

/// `PATCH path` with a JSON body, like [`put`].
pub async fn patch<T: Serialize>(api_sock: &Path, path: &str, body: &T) -> Result<()> {
    send(api_sock, Method::PATCH, path, Some(body))
        .await
        .map(drop)
}

/// `GET path`, the JSON answer parsed as `T`.
pub async fn get<T: serde::de::DeserializeOwned>(api_sock: &Path, path: &str) -> Result<T> {
    let body = send::<()>(api_sock, Method::GET, path, None).await?;
    serde_json::from_slice(&body).map_err(|e| Error::FirecrackerApi {
        method: "GET",
        path: path.to_string(),
        status: 200,
        body: format!(
            "unexpected answer ({e}): {}",
            String::from_utf8_lossy(&body)
        ),
    })
}

async fn send<T: Serialize>(
    api_sock: &Path,
    method: Method,
    path: &str,
    body: Option<&T>,
) -> Result<bytes::Bytes> {
    let data = body
        .map(|b| serde_json::to_vec(b).expect("API bodies serialize"))
        .unwrap_or_default();
    let method_name: &'static str = match method {
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        _ => "GET",
    };
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json")
        .body(h::full(data))
        .map_err(|e| Error::Spawn(format!("building request: {e}")))?;
    let stream = crate::uds::connect(api_sock)
        .await
        .map_err(|e| Error::io(api_sock, e))?;
    let resp = h::send(stream, req).await?;
    let status = resp.status();
    let body = h::read_body(resp.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    if status.is_success() {
        return Ok(body);
    }
    Err(Error::FirecrackerApi {
        method: method_name,
        path: path.to_string(),
        status: status.as_u16(),
        body: String::from_utf8_lossy(&body).trim().to_string(),
    })
}

/// Presses Ctrl-Alt-Del on the guest's emulated i8042 (a guest with the keyboard driver
/// reboots, which `reboot=k` + Firecracker turn into VMM exit).
pub async fn send_ctrl_alt_del(api_sock: &Path) -> Result<()> {
    put(
        api_sock,
        "/actions",
        &Action {
            action_type: ActionType::SendCtrlAltDel,
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_match_the_swagger_names() {
        let d = serde_json::to_value(Drive {
            drive_id: "rootfs".into(),
            path_on_host: "/r".into(),
            is_root_device: false,
            is_read_only: true,
        })
        .unwrap();
        assert_eq!(
            d,
            serde_json::json!({"drive_id":"rootfs","path_on_host":"/r","is_root_device":false,"is_read_only":true})
        );
        let a = serde_json::to_value(Action {
            action_type: ActionType::InstanceStart,
        })
        .unwrap();
        assert_eq!(a, serde_json::json!({"action_type":"InstanceStart"}));
        let v = serde_json::to_value(Vsock {
            guest_cid: 3,
            uds_path: "/s/vsock.sock".into(),
        })
        .unwrap();
        assert_eq!(v["guest_cid"], 3);
    }
}
