//! `POST /fs/freeze` and `/fs/thaw`: the guest's per-VM disk held still while the host
//! copies it (see [`crate::template`]).

use std::time::Duration;

use hearth_proto::image::{FreezeRequest, FreezeState};
use hearth_proto::paths;
use http::Method;

use super::{json, json_body, AgentClient};
use crate::Result;

impl AgentClient {
    /// Freezes the disk's file system; the agent thaws it by itself after `auto_thaw`.
    pub async fn freeze(&self, auto_thaw: Duration) -> Result<FreezeState> {
        let req = FreezeRequest {
            timeout_ms: Some(auto_thaw.as_millis() as u64),
        };
        let resp = self
            .request(
                Method::POST,
                paths::FS_FREEZE,
                Some("application/json"),
                json(&req)?,
            )
            .await?;
        json_body(resp).await
    }

    pub async fn thaw(&self) -> Result<FreezeState> {
        let resp = self
            .request(
                Method::POST,
                paths::FS_THAW,
                Some("application/json"),
                json(&serde_json::json!({}))?,
            )
            .await?;
        json_body(resp).await
    }
}
