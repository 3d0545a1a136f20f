//! Whole-tree transfers: `POST /v1/vms/{id}/files/upload` (tar.gz in, or plain tar with
//! `Content-Type: application/x-tar`) and `GET /v1/vms/{id}/files/download` (tar.gz out,
//! or plain tar with `format=tar`).

use serde::{Deserialize, Serialize};
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::Required;
use utoipa::IntoParams;

pub use hearth_proto::{ArchiveFormat, UploadResponse};

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
    /// `tar.gz` (the default) or `tar`.
    #[serde(default)]
    pub format: ArchiveFormat,
}

impl IntoParams for DownloadQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let format = utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(["tar.gz", "tar"]))
            .default(Some("tar.gz".into()));
        vec![
            path_param("path", true, "File or directory in `/workspace`."),
            ParameterBuilder::new()
                .name("format")
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some("Archive format: `tar.gz` (default) or `tar`."))
                .schema(Some(format))
                .build(),
        ]
    }
}

impl Validate for DownloadQuery {
    fn validate(&self, _: &Limits) -> Result<(), ValidationError> {
        rules::workspace_path("path", &self.path)
    }
}
