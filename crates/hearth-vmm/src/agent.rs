//! HTTP/1.1 client for the guest agent over the hybrid vsock.
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct AgentClient {
    pub vsock_path: PathBuf,
}

impl AgentClient {
    pub fn new(vsock_path: PathBuf) -> Self {
        Self { vsock_path }
    }
    pub async fn wait_ready(&self, timeout: Duration) -> crate::Result<hearth_proto::Health> {
        let _ = timeout;
        todo!("vmm helper")
    }
}
