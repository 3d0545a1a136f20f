//! The Hearth server's HTTP API as Rust types: every request and response body, the
//! query strings, the rules a request must follow and the OpenAPI schema of each. The
//! server parses into these types, the CLI (and any Rust client) sends and reads them,
//! and the tests use them, so a renamed field breaks the build instead of a client.
//!
//! One module per resource ([`vms`], [`exec`], [`files`], [`processes`], [`network`],
//! [`images`], [`keys`], [`jobs`], [`scripts`], [`pool`], [`meta`]); a new route group
//! adds a module.
//!
//! # Validation
//! Each request type implements [`Validate`]: one `validate()` returning a
//! [`ValidationError`] with one variant per rule (cloud-hypervisor's `VmConfig::validate`
//! style). Every rule a JSON schema can state is also in the type's schema (required
//! fields, ranges, patterns, enums), so a request a generated client accepts is one the
//! server accepts. Limits that depend on the server's configuration come in as
//! [`Limits`], and the served `/openapi.json` carries the server's own values
//! ([`schema::apply_limits`]).
//!
//! Bodies that the guest agent takes unchanged (`exec`, `run-*`) are `hearth-proto`'s
//! types, re-exported here with their schemas (its `schema` feature).

pub mod error;
pub mod exec;
pub mod files;
pub mod images;
pub mod jobs;
pub mod keys;
pub mod limits;
pub mod meta;
pub mod network;
pub mod pool;
pub mod processes;
mod rules;
pub mod schema;
pub mod scripts;
pub mod time;
pub mod vms;

pub use error::ValidationError;
pub use hearth_proto::{ErrorBody, ErrorCode, ErrorDetail, Language};
pub use limits::Limits;
pub use time::Timestamp;

/// The checks a request must pass before the server acts on it.
pub trait Validate {
    /// The first rule `self` breaks, given this server's `limits`.
    fn validate(&self, limits: &Limits) -> Result<(), ValidationError>;
}
