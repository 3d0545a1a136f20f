//! Archive policy for `/files/upload` and `/files/download`.
//!
//! Everything here is plain synchronous code over `Read`/`Write` and a directory, so it is
//! unit-tested and fuzzed on the host. The agent runs [`extract`] and [`pack`] on a thread
//! chrooted into the workspace as uid 1000 (`workspace::spawn_confined`), so even a bug
//! here cannot touch files outside what uid 1000 can reach inside the workspace; the path
//! and entry-type checks are the first line, the confinement the second.
//!
//! Decisions:
//! - Upload entries may be relative (resolved under `dest`) or start with `/workspace`
//!   (then they must lie under `dest`). Symlinks, hard links, devices, FIFOs and anything
//!   else that is not a regular file or a directory reject the whole archive.
//! - Download never follows a symlink: a symlink anywhere in the requested path is an error,
//!   and symlinks (and other special files) inside a downloaded tree are skipped, so that
//!   every archive the agent produces can be uploaded again unchanged.

mod error;
mod extract;
mod pack;
mod path;
mod policy;

pub use error::{ArchiveError, Result};
pub use extract::{extract, extract_as};
pub use pack::{check_source, pack, pack_as, PackStats};
pub use path::{PathError, WorkspacePath, MAX_COMPONENT_LEN, MAX_PATH_LEN};
pub use policy::{check_entry, EntryKind, Limits, Tally};
