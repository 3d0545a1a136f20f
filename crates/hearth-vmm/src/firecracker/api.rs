//! Typed bodies for the parts of Firecracker's REST API (swagger `firecracker.yaml`)
//! Hearth uses, and a PUT helper over the API's Unix socket.
use std::path::Path;

use http::{Method, Request};
use serde::Serialize;
use tokio::net::UnixStream;

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

/// `PUT path` with a JSON body; anything but 2xx becomes `Error::FirecrackerApi` carrying
/// Firecracker's `fault_message`.
pub async fn put<T: Serialize>(api_sock: &Path, path: &str, body: &T) -> Result<()> {
    let data = serde_json::to_vec(body).expect("API bodies serialize");
    let req = Request::builder()
        .method(Method::PUT)
        .uri(path)
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json")
        .body(h::full(data))
        .map_err(|e| Error::Spawn(format!("building request: {e}")))?;
    let stream = UnixStream::connect(api_sock)
        .await
        .map_err(|e| Error::io(api_sock, e))?;
    let resp = h::send(stream, req).await?;
    let status = resp.status();
    let body = h::read_body(resp.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    if status.is_success() {
        return Ok(());
    }
    Err(Error::FirecrackerApi {
        method: "PUT",
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
