//! Files in a VM's `/workspace`: whole-tree transfers (`POST /v1/vms/{id}/files/upload`,
//! tar.gz in, or plain tar with `Content-Type: application/x-tar`;
//! `GET /v1/vms/{id}/files/download`, tar.gz out, or plain tar with `format=tar`) and the
//! single-file operations (`/files/content`, `list`, `stat`, `mkdir`, `move`,
//! `DELETE /files`, `watch`), whose queries and bodies are the guest agent's own
//! (`hearth-proto`), checked here before they are forwarded.

use serde::{Deserialize, Serialize};
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::Required;
use utoipa::IntoParams;

pub use hearth_proto::{
    ArchiveFormat, DeleteQuery as DeleteFileQuery, FileEntry, FileList, FileType, ListQuery,
    MkdirRequest, MoveRequest, PathQuery, UploadResponse, WatchEvent, WatchEventKind, WatchQuery,
    WriteQuery,
};

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

fn opt_path(field: &'static str, p: &Option<String>) -> Result<(), ValidationError> {
    p.as_deref()
        .map_or(Ok(()), |p| rules::workspace_path(field, p))
}

impl Validate for PathQuery {
    fn validate(&self, _: &Limits) -> Result<(), ValidationError> {
        rules::workspace_path("path", &self.path)
    }
}

impl Validate for WriteQuery {
    fn validate(&self, _: &Limits) -> Result<(), ValidationError> {
        rules::workspace_path("path", &self.path)?;
        self.mode_bits().map_err(|_| ValidationError::FileMode {
            value: self.mode.clone().unwrap_or_default(),
        })?;
        Ok(())
    }
}

impl Validate for ListQuery {
    fn validate(&self, _: &Limits) -> Result<(), ValidationError> {
        opt_path("path", &self.path)?;
        rules::range("depth", self.depth, 1, hearth_proto::MAX_LIST_DEPTH)
    }
}

impl Validate for DeleteFileQuery {
    fn validate(&self, _: &Limits) -> Result<(), ValidationError> {
        rules::workspace_path("path", &self.path)
    }
}

impl Validate for WatchQuery {
    fn validate(&self, _: &Limits) -> Result<(), ValidationError> {
        opt_path("path", &self.path)
    }
}

impl Validate for MkdirRequest {
    fn validate(&self, _: &Limits) -> Result<(), ValidationError> {
        rules::workspace_path("path", &self.path)
    }
}

impl Validate for MoveRequest {
    fn validate(&self, _: &Limits) -> Result<(), ValidationError> {
        rules::workspace_path("from", &self.from)?;
        rules::workspace_path("to", &self.to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_file_requests_are_checked() {
        let l = Limits::default();
        let path = |p: &str| PathQuery { path: p.into() };
        assert!(path("a/b.txt").validate(&l).is_ok());
        for bad in ["../x", "/etc/passwd", "", "a\0b"] {
            assert!(path(bad).validate(&l).is_err(), "{bad}");
        }
        let write = |m: &str| WriteQuery {
            path: "f".into(),
            mode: Some(m.into()),
            parents: false,
        };
        assert!(write("0644").validate(&l).is_ok());
        assert_eq!(
            write("4755").validate(&l),
            Err(ValidationError::FileMode {
                value: "4755".into()
            })
        );
        let list = |d| ListQuery {
            path: None,
            depth: Some(d),
        };
        assert!(list(10).validate(&l).is_ok());
        assert!(list(0).validate(&l).is_err() && list(11).validate(&l).is_err());
        let mv = MoveRequest {
            from: "a".into(),
            to: "/workspace/../etc/x".into(),
            overwrite: false,
        };
        assert!(mv.validate(&l).is_err());
    }
}
