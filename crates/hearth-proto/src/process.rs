//! Processes that outlive a request: bodies, query strings, NDJSON events and the
//! attach WebSocket's control messages of the agent's `/processes*` endpoints.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::agent::{check_env_keys, check_timeout};
use crate::ProtoError;

/// Processes that may be running at once; a start beyond it is refused (409).
pub const MAX_RUNNING_PROCESSES: usize = 256;
/// Exited processes whose record and output are kept; the oldest goes first.
pub const KEEP_EXITED_PROCESSES: usize = 64;
/// Output bytes kept per process (both streams); older chunks are dropped first and a
/// reader that missed them gets a [`ProcessEvent::Dropped`] marker.
pub const DEFAULT_PROCESS_OUTPUT_KEEP: usize = 1024 * 1024;
/// Largest terminal side a PTY may ask for.
pub const MAX_PTY_SIDE: u16 = 1000;

/// A terminal size in character cells.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PtySize {
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 1000))]
    pub cols: u16,
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 1000))]
    pub rows: u16,
}

impl PtySize {
    pub fn validate(&self) -> crate::Result<()> {
        let ok = |n: u16| (1..=MAX_PTY_SIDE).contains(&n);
        if ok(self.cols) && ok(self.rows) {
            Ok(())
        } else {
            Err(ProtoError::BadPtySize(self.cols, self.rows, MAX_PTY_SIDE))
        }
    }
}

/// `POST /processes`. Without `args`, `cmd` runs through `/bin/sh -c`; with `args` it is
/// executed directly (as for `/exec`).
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProcessStartRequest {
    /// A shell command line (run by `/bin/sh -c`), or with `args` the program to run.
    #[cfg_attr(feature = "schema", schema(min_length = 1, pattern = r"^[^\x00]+$"))]
    pub cmd: String,
    /// Arguments; with them `cmd` is executed directly, without a shell.
    #[cfg_attr(feature = "schema", schema(schema_with = crate::schema::opt_no_nul_list))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Working directory: an existing directory in `/workspace` (default: `/workspace`).
    #[cfg_attr(feature = "schema", schema(schema_with = crate::schema::opt_workspace_path))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Environment on top of the VM's own.
    #[cfg_attr(feature = "schema", schema(schema_with = crate::schema::env_map))]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Keep stdin open for `POST .../stdin` (else it reads EOF). A PTY always has one.
    #[serde(default)]
    pub stdin: bool,
    /// Run on a pseudo-terminal of this size (`TERM=xterm-256color`); stdout and stderr
    /// are then one stream, reported as `stdout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pty: Option<PtySize>,
    /// Kill the process group after this long; none: it runs until it ends or the VM does.
    #[cfg_attr(feature = "schema", schema(maximum = 3600000))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

impl ProcessStartRequest {
    pub fn validate(&self) -> crate::Result<()> {
        if self.cmd.is_empty() {
            return Err(ProtoError::EmptyCommand);
        }
        check_timeout(self.timeout_ms)?;
        check_env_keys(&self.env)?;
        self.pty.as_ref().map_or(Ok(()), PtySize::validate)
    }
}

#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProcessState {
    Running,
    Exited,
}

/// A process the agent started: `POST /processes` (201), `GET /processes/{pid}`, an
/// element of `GET /processes`, and the final `exit` event of its output.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessInfo {
    /// The guest pid of the process (also its process group and session id).
    pub pid: u32,
    pub cmd: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Working directory, `/workspace/...`.
    pub cwd: String,
    pub state: ProcessState,
    /// Exit status once exited; `128 + signal` when a signal ended it (as for `/exec`).
    pub exit_code: Option<i32>,
    /// The signal that ended it (`KILL`, `TERM`, ...), if one did.
    pub signal: Option<String>,
    /// Ended by its `timeout_ms`.
    #[serde(default)]
    pub timed_out: bool,
    /// RFC 3339 with milliseconds (UTC).
    pub started_at: String,
    pub ended_at: Option<String>,
    pub pty: Option<PtySize>,
    /// Whether `POST .../stdin` can still write.
    #[serde(default)]
    pub stdin: bool,
    /// Output bytes no longer kept (beyond [`DEFAULT_PROCESS_OUTPUT_KEEP`]).
    #[serde(default)]
    pub output_dropped: u64,
    /// The out-of-memory killer ended one of its processes (its cgroup's `memory.events`).
    #[serde(default)]
    pub oom_killed: bool,
}

/// `GET /processes`.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessList {
    /// Running ones and the last [`KEEP_EXITED_PROCESSES`] exited ones, by start time.
    pub processes: Vec<ProcessInfo>,
}

#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// A piece of output. `seq` counts chunks from 1, across both streams, in the order the
/// agent read them. `data` is text (invalid UTF-8 replaced; a character is never split
/// across chunks).
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutputChunk {
    pub seq: u64,
    pub stream: OutputStream,
    pub data: String,
}

/// Chunks a reader asked for that are no longer kept.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct DroppedOutput {
    /// The first and last missing `seq`.
    pub from_seq: u64,
    pub to_seq: u64,
}

/// One line of `GET /processes/{pid}/output` (NDJSON): `{"seq","stream","data"}`,
/// `{"dropped": {...}}`, and last, once the process has ended, `{"exit": {...}}`.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum ProcessEvent {
    Output(OutputChunk),
    Dropped { dropped: DroppedOutput },
    Exit { exit: ProcessInfo },
}

/// `GET /processes/{pid}/output[?follow=true][&since=SEQ]`.
#[cfg_attr(feature = "schema", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "schema", into_params(parameter_in = Query))]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OutputQuery {
    /// Keep the response open and send output as it comes, until the process ends.
    #[serde(default)]
    pub follow: bool,
    /// Only chunks with `seq` greater than this (the last one a client saw); default 0,
    /// everything still kept.
    #[serde(default)]
    pub since: u64,
}

/// `POST /processes/{pid}/stdin[?eof=true]`: the raw body is written to stdin, then with
/// `eof` stdin is closed (on a PTY: the terminal's end-of-file character is sent).
#[cfg_attr(feature = "schema", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "schema", into_params(parameter_in = Query))]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StdinQuery {
    #[serde(default)]
    pub eof: bool,
}

/// `GET /processes/{pid}/attach[?since=SEQ]`: replays kept output after `since`
/// (default 0: all of it) before live output.
#[cfg_attr(feature = "schema", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "schema", into_params(parameter_in = Query))]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AttachQuery {
    #[serde(default)]
    pub since: u64,
}

/// Signals a client may send. Numbers are Linux's (the same on every architecture the
/// project builds for).
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Signal {
    HUP,
    INT,
    KILL,
    USR1,
    USR2,
    TERM,
}

impl Signal {
    pub fn number(self) -> i32 {
        match self {
            Signal::HUP => 1,
            Signal::INT => 2,
            Signal::KILL => 9,
            Signal::USR1 => 10,
            Signal::USR2 => 12,
            Signal::TERM => 15,
        }
    }
}

/// `POST /processes/{pid}/signal`: delivered to the process's group.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SignalRequest {
    pub signal: Signal,
}

/// Text frames of the attach WebSocket (binary frames carry terminal bytes): `resize`
/// from the client; `exit` from the agent right before it closes; `error` from the agent
/// for a control message it could not use.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum AttachControl {
    Resize {
        cols: u16,
        rows: u16,
    },
    Exit {
        exit_code: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<String>,
    },
    Error {
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_have_the_documented_shape() {
        let out = ProcessEvent::Output(OutputChunk {
            seq: 3,
            stream: OutputStream::Stderr,
            data: "x".into(),
        });
        assert_eq!(
            serde_json::to_value(&out).unwrap(),
            json!({"seq": 3, "stream": "stderr", "data": "x"})
        );
        let dropped = ProcessEvent::Dropped {
            dropped: DroppedOutput {
                from_seq: 1,
                to_seq: 2,
            },
        };
        let v = serde_json::to_value(&dropped).unwrap();
        assert_eq!(v, json!({"dropped": {"from_seq": 1, "to_seq": 2}}));
        // Untagged, so each shape must read back as itself.
        for ev in [out, dropped] {
            let text = serde_json::to_string(&ev).unwrap();
            assert_eq!(serde_json::from_str::<ProcessEvent>(&text).unwrap(), ev);
        }
        let info = ProcessInfo {
            pid: 7,
            cmd: "sh".into(),
            args: None,
            cwd: "/workspace".into(),
            state: ProcessState::Exited,
            exit_code: Some(0),
            signal: None,
            timed_out: false,
            started_at: "t".into(),
            ended_at: Some("u".into()),
            pty: Some(PtySize { cols: 80, rows: 24 }),
            stdin: false,
            output_dropped: 0,
            oom_killed: false,
        };
        let exit = ProcessEvent::Exit { exit: info };
        let v = serde_json::to_value(&exit).unwrap();
        assert_eq!(v["exit"]["state"], "exited");
        assert_eq!(v["exit"]["pty"], json!({"cols": 80, "rows": 24}));
        assert_eq!(serde_json::from_value::<ProcessEvent>(v).unwrap(), exit);
    }

    #[test]
    fn control_messages_are_tagged_by_type() {
        let r: AttachControl =
            serde_json::from_str(r#"{"type":"resize","cols":100,"rows":30}"#).unwrap();
        assert_eq!(
            r,
            AttachControl::Resize {
                cols: 100,
                rows: 30
            }
        );
        let e = AttachControl::Exit {
            exit_code: Some(0),
            signal: None,
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"exit","exit_code":0}"#
        );
        assert!(serde_json::from_str::<SignalRequest>(r#"{"signal":"STOP"}"#).is_err());
        let s: SignalRequest = serde_json::from_str(r#"{"signal":"USR1"}"#).unwrap();
        assert_eq!(s.signal.number(), 10);
    }

    #[test]
    fn start_requests_are_validated() {
        let mut r = ProcessStartRequest {
            cmd: "sh".into(),
            ..Default::default()
        };
        assert!(r.validate().is_ok());
        r.pty = Some(PtySize { cols: 0, rows: 24 });
        assert!(r.validate().is_err());
        r.pty = Some(PtySize {
            cols: 80,
            rows: 1001,
        });
        assert!(r.validate().is_err());
        r.pty = None;
        r.env.insert("A=B".into(), "x".into());
        assert!(r.validate().is_err());
        assert!(ProcessStartRequest::default().validate().is_err());
    }
}
