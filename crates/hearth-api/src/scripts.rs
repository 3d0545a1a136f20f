//! `/v1/scripts`: uploaded once, each run as a job.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::limits::Limits;
use crate::{rules, Language, Timestamp, Validate, ValidationError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Script {
    #[schema(format = Uuid)]
    pub id: String,
    pub name: String,
    pub language: Language,
    /// Bytes.
    pub size: i64,
    pub sha256: String,
    pub created_at: Timestamp,
}

/// `GET /v1/scripts`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScriptList {
    pub scripts: Vec<Script>,
}

/// Query of `POST /v1/scripts`.
#[derive(Debug, Clone, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UploadScript {
    /// The language it is written in (clients may infer it from the file extension
    /// with `Language::from_file_name`).
    #[param(inline)]
    pub language: Language,
    /// File name in `/workspace` when it runs. Default: the multipart part's file name,
    /// else `script.<ext>`.
    #[param(
        min_length = 1,
        max_length = 63,
        pattern = r"^(?![\s\S]*[\n\r\u2028\u2029])(?!\.\.?$)[^/\x00]+$"
    )]
    pub name: Option<String>,
}

impl Validate for UploadScript {
    fn validate(&self, _: &Limits) -> Result<(), ValidationError> {
        match &self.name {
            Some(n) => rules::file_name("script name", n),
            None => Ok(()),
        }
    }
}

impl UploadScript {
    /// The name the script is stored under, given the multipart part's file name.
    pub fn file_name(&self, part_name: Option<&str>) -> String {
        self.name
            .clone()
            .or_else(|| part_name.map(str::to_string))
            .unwrap_or_else(|| format!("script.{}", self.language.extension()))
    }
}

/// Checks a script's file name (from the query or the multipart part).
pub fn check_name(name: &str) -> Result<(), ValidationError> {
    rules::file_name("script name", name)
}

/// Checks an uploaded script's size.
pub fn check_content(len: usize, limits: &Limits) -> Result<(), ValidationError> {
    if len == 0 {
        return Err(ValidationError::EmptyScript);
    }
    if len > limits.max_script_bytes {
        return Err(ValidationError::ScriptTooLarge {
            len,
            max: limits.max_script_bytes,
        });
    }
    Ok(())
}

/// The multipart form of `POST /v1/scripts`: the file in a part named `script`.
pub struct ScriptForm;

impl utoipa::PartialSchema for ScriptForm {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property(
                "script",
                <crate::schema::NonEmptyBinary as utoipa::PartialSchema>::schema(),
            )
            .required("script")
            .additional_properties(Some(
                utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
            ))
            .into()
    }
}

impl utoipa::ToSchema for ScriptForm {}
