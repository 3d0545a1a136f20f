//! Code that runs inside the guest. `init` is PID 1; `agent` serves the HTTP API on
//! vsock; `archive` is the pure path/tar policy (testable and fuzzable on the host);
//! `jail` confines user processes; `workspace` does single-file operations as uid 1000;
//! `procs` keeps the processes that outlive a request.

pub mod agent;
pub mod archive;
pub mod init;
pub mod jail;
pub mod procs;
pub mod workspace;
