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
    /// Debian packages (`name` or `name=version`) to install on top of the default tree
    /// (or of `from`'s). With `packages`, `script` or `from` the image is built, as
    /// `hearth image build` does, and the answer comes when it is built.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 256)]
    pub packages: Vec<PackageName>,
    /// Setup script (text), run by `/bin/sh -e` as root in the image tree at build time,
    /// after the packages, with the host's network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 1048576)]
    pub script: Option<String>,
    /// Build on this image's tree instead of the default one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^(?![\s\S]*\n)[A-Za-z0-9_-][A-Za-z0-9._-]*$"
    )]
    pub from: Option<String>,
}

/// A Debian package name, optionally `=version`: nothing apt could read as an option.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PackageName(pub String);

impl utoipa::PartialSchema for PackageName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(2))
            .max_length(Some(256))
            .pattern(Some(
                r"^[a-z0-9][a-z0-9+.-]{1,127}(=[A-Za-z0-9.+~:-]{1,127})?$",
            ))
            .description(Some("A Debian package name, optionally `=VERSION`."))
            .into()
    }
}

impl utoipa::ToSchema for PackageName {}

/// Largest setup script `POST /v1/images` takes.
pub const MAX_SETUP_SCRIPT: usize = 1024 * 1024;

impl CreateImage {
    /// Whether this request builds an image rather than creating an empty one.
    pub fn is_build(&self) -> bool {
        !self.packages.is_empty() || self.script.is_some() || self.from.is_some()
    }
}

/// The rule of [`PackageName`] (the image builder applies the same one before apt).
pub fn check_package(p: &str) -> Result<(), ValidationError> {
    let (name, version) = match p.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (p, None),
    };
    let name_ok = (2..=128).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.'));
    let version_ok = version.is_none_or(|v| {
        !v.is_empty()
            && v.len() <= 127
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~' | ':' | '-'))
    });
    if name_ok && version_ok {
        Ok(())
    } else {
        Err(ValidationError::PackageName { name: p.into() })
    }
}

/// `POST /v1/vms/{id}/template`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTemplate {
    /// Name of the new image; the same rule as [`CreateImage::name`].
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^(?![\s\S]*\n)[A-Za-z0-9_-][A-Za-z0-9._-]*$"
    )]
    pub name: String,
}

impl Validate for CreateTemplate {
    fn validate(&self, _: &Limits) -> Result<(), ValidationError> {
        check_name(&self.name)
    }
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
    fn validate(&self, l: &Limits) -> Result<(), ValidationError> {
        check_name(&self.name)?;
        if self.is_build() && !l.image_builds {
            return Err(ValidationError::NoImageBuilds);
        }
        for p in &self.packages {
            check_package(&p.0)?;
        }
        if let Some(from) = &self.from {
            check_name(from)?;
        }
        match &self.script {
            Some(s) if s.is_empty() => Err(ValidationError::EmptyScript),
            Some(s) if s.len() > MAX_SETUP_SCRIPT => Err(ValidationError::SetupScriptTooLarge {
                len: s.len(),
                max: MAX_SETUP_SCRIPT,
            }),
            Some(s) if s.contains('\0') => Err(ValidationError::Nul { field: "script" }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str, packages: &[&str], script: Option<&str>, from: Option<&str>) -> CreateImage {
        CreateImage {
            name: name.into(),
            packages: packages
                .iter()
                .map(|p| PackageName(p.to_string()))
                .collect(),
            script: script.map(Into::into),
            from: from.map(Into::into),
        }
    }

    #[test]
    fn image_requests_are_checked_and_builds_can_be_switched_off() {
        let on = Limits::default();
        let off = Limits {
            image_builds: false,
            ..Limits::default()
        };
        let big = "x".repeat(MAX_SETUP_SCRIPT + 1);
        // (request, valid with builds on, valid with builds off)
        let table = [
            (req("empty", &[], None, None), true, true),
            (req("j", &["jq", "tree=2.1.0-1"], None, None), true, false),
            (req("s", &[], Some("echo hi"), None), true, false),
            (req("f", &[], None, Some("default")), true, false),
            (req(".hidden", &[], None, None), false, false),
            (req("a/b", &[], None, None), false, false),
            (req("o", &["-oAPT::x"], None, None), false, false),
            (req("u", &["JQ"], None, None), false, false),
            (req("e", &[], Some(""), None), false, false),
            (req("n", &[], Some("a\0b"), None), false, false),
            (req("b", &[], Some(&big), None), false, false),
            (req("p", &[], None, Some("../x")), false, false),
        ];
        for (r, ok_on, ok_off) in table {
            assert_eq!(r.validate(&on).is_ok(), ok_on, "builds on: {r:?}");
            assert_eq!(r.validate(&off).is_ok(), ok_off, "builds off: {r:?}");
        }
        assert!(matches!(
            req("j", &["jq"], None, None).validate(&off),
            Err(ValidationError::NoImageBuilds)
        ));
    }
}
