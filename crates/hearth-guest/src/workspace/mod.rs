//! The user's files: every path resolved beneath `/workspace` (never through a symlink
//! leading out, race-free: see [`resolve`]) and every operation done with uid 1000's
//! permissions (see [`user`]). Plain synchronous code over file descriptors, so it is
//! tested on the host; the agent's HTTP layer (`agent::fileops`, `agent::watch`) only
//! moves bytes and turns results into responses.
//!
//! Decisions:
//! - Reads (`content`, `list` of the named directory, `watch`) follow symlinks that stay
//!   inside the workspace; an absolute symlink or one climbing out is refused (422).
//! - The last component is never followed by operations that change things: `delete` and
//!   `move` act on a symlink itself, `mkdir` finds it in the way, and a content write
//!   refuses a symlink target (409) rather than replace or follow it.
//! - `stat` and `list` report symlinks as `symlink` with their target text; listings
//!   never descend through one.

mod error;
pub mod events;
pub mod ops;
pub mod resolve;
pub mod user;
pub mod watch;
pub mod write;

pub use error::{FsError, Result};
pub use resolve::{parse, Workspace};
pub use user::{spawn_confined, UserThreads};
pub use write::{open_read, PendingWrite, TEMP_PREFIX};
