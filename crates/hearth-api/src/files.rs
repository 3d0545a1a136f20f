//! Whole-tree transfers: `POST /v1/vms/{id}/files/upload` (tar.gz in) and
//! `GET /v1/vms/{id}/files/download` (tar.gz out).

use serde::{Deserialize, Serialize};
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::Required;
use utoipa::IntoParams;

pub use hearth_proto::UploadResponse;

use crate::limits::Limits;
use crate::{rules, Validate, ValidationError};

/// Query of `POST /v1/vms/{id}/files/upload`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// Directory in `/workspace` to extract into (default `/workspace`; created if missing).
    pub dest: Option<String>,
}

/// A query parameter holding a path in `/workspace` (the derive would drop `required`
/// and the description of a field with a custom schema).
fn path_param(name: &str, required: bool, description: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(if required {
            Required::True
        } else {
            Required::False
        })
        .description(Some(description))
        .schema(Some(hearth_proto::schema::workspace_path()))
        .build()
}

impl IntoParams for UploadQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![path_param(
            "dest",
            false,
            "Directory in `/workspace` to extract into (default `/workspace`; created if missing).",
        )]
    }
}

impl Validate for UploadQuery {
    fn validate(&self, _: &Limits) -> Result<(), ValidationError> {
        match &self.dest {
            Some(d) => rules::workspace_path("dest", d),
            None => Ok(()),
        }
    }
}

/// Query of `GET /v1/vms/{id}/files/download`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadQuery {
    /// File or directory in `/workspace`.
    pub path: String,
}

impl IntoParams for DownloadQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![path_param(
            "path",
            true,
            "File or directory in `/workspace`.",
        )]
    }
}

impl Validate for DownloadQuery {
    fn validate(&self, _: &Limits) -> Result<(), ValidationError> {
        rules::workspace_path("path", &self.path)
    }
}
