//! Processes that outlive a request: `/v1/vms/{id}/processes[/{pid}[/output|/stdin|
//! /signal|/attach]]`. Bodies, queries and events are the guest agent's own
//! (`hearth-proto`), checked here before they are forwarded.

use serde::Deserialize;
use utoipa::IntoParams;

pub use hearth_proto::{
    AttachControl, AttachQuery, DroppedOutput, OutputChunk, OutputQuery, OutputStream,
    ProcessEvent, ProcessInfo, ProcessList, ProcessStartRequest, ProcessState, PtySize, Signal,
    SignalRequest, StdinQuery, MAX_PTY_SIDE,
};

use crate::limits::Limits;
use crate::{rules, Validate, ValidationError};

/// The path of every `/v1/vms/{id}/processes/{pid}...` route.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ProcessPath {
    /// The VM's id.
    #[param(format = Uuid)]
    pub id: String,
    /// The process's guest pid, as `POST .../processes` gave it.
    pub pid: u32,
}

fn pty(p: &PtySize) -> Result<(), ValidationError> {
    let side = |name, v: u16| rules::range(name, Some(v.into()), 1, MAX_PTY_SIDE.into());
    side("pty.cols", p.cols)?;
    side("pty.rows", p.rows)
}

impl Validate for ProcessStartRequest {
    fn validate(&self, l: &Limits) -> Result<(), ValidationError> {
        if self.cmd.is_empty() {
            return Err(ValidationError::EmptyCommand);
        }
        rules::no_nul("cmd", &self.cmd)?;
        rules::no_nul_all("args", self.args.iter().flatten())?;
        if let Some(cwd) = &self.cwd {
            rules::workspace_path("cwd", cwd)?;
        }
        rules::env_map(&self.env)?;
        rules::timeout_ms(self.timeout_ms, l)?;
        self.pty.as_ref().map_or(Ok(()), pty)
    }
}

impl Validate for SignalRequest {
    fn validate(&self, _: &Limits) -> Result<(), ValidationError> {
        Ok(())
    }
}

impl Validate for OutputQuery {
    fn validate(&self, _: &Limits) -> Result<(), ValidationError> {
        Ok(())
    }
}

impl Validate for StdinQuery {
    fn validate(&self, _: &Limits) -> Result<(), ValidationError> {
        Ok(())
    }
}

impl Validate for AttachQuery {
    fn validate(&self, _: &Limits) -> Result<(), ValidationError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_requests_are_checked() {
        let l = Limits::default();
        // The agent's type has an inherent `validate()` too; this is the server's.
        let check = |r: &ProcessStartRequest| Validate::validate(r, &l);
        let mut r = ProcessStartRequest {
            cmd: "sh".into(),
            pty: Some(PtySize { cols: 80, rows: 24 }),
            ..Default::default()
        };
        assert!(check(&r).is_ok());
        r.pty = Some(PtySize { cols: 0, rows: 24 });
        assert!(check(&r).is_err());
        r.pty = None;
        r.cwd = Some("/etc".into());
        assert!(check(&r).is_err());
        r.cwd = None;
        r.timeout_ms = Some(Limits::default().max_timeout_ms + 1);
        assert!(check(&r).is_err());
        assert_eq!(
            check(&ProcessStartRequest::default()),
            Err(ValidationError::EmptyCommand)
        );
    }
}
