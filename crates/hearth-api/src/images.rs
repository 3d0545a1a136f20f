//! `/v1/images`: a kernel and a base rootfs per image.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::limits::{Limits, MAX_IMAGE_NAME};
use crate::{Timestamp, Validate, ValidationError};

/// Where an image came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageSource {
    /// Created and uploaded through the API.
    Api,
    /// Found under the server's `images/` (made by `hearth image build`).
    Built,
    /// Named by the server's `KERNEL_PATH` and `BASE_ROOTFS_PATH`.
    Builtin,
}

impl ImageSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageSource::Api => "api",
            ImageSource::Built => "built",
            ImageSource::Builtin => "builtin",
        }
    }
}

impl fmt::Display for ImageSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for ImageSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [ImageSource::Api, ImageSource::Built, ImageSource::Builtin]
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown image source {s:?}"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Image {
    #[schema(format = Uuid)]
    pub id: String,
    pub name: String,
    pub kernel_path: Option<String>,
    pub rootfs_path: Option<String>,
    pub kernel_sha256: Option<String>,
    pub rootfs_sha256: Option<String>,
    pub source: ImageSource,
    /// The image VMs get when they name none.
    pub is_default: bool,
    /// Both kernel and rootfs are present.
    pub ready: bool,
    pub created_at: Timestamp,
}

/// `GET /v1/images`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ImageList {
    pub images: Vec<Image>,
}

/// `POST /v1/images`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateImage {
    /// Becomes a directory name: 1-64 characters of `[A-Za-z0-9._-]`, not starting with `.`.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^(?![\s\S]*\n)[A-Za-z0-9_-][A-Za-z0-9._-]*$"
    )]
    pub name: String,
}

/// Whether `name` may name an image (it becomes a directory name).
pub fn check_name(name: &str) -> Result<(), ValidationError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_IMAGE_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(ValidationError::ImageName { name: name.into() })
    }
}

impl Validate for CreateImage {
    fn validate(&self, _: &Limits) -> Result<(), ValidationError> {
        check_name(&self.name)
    }
}
