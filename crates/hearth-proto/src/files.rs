//! Single-file operations under `/workspace`: bodies and query strings of the agent's
//! `/files/*` endpoints (and of the server routes that forward to them).
//!
//! Query structs deserialise with `serde_urlencoded` (what axum's `Query` uses), so the
//! agent, the server and the client read and write the same names.

use serde::{Deserialize, Serialize};

use crate::ProtoError;

/// Largest `depth` a listing may ask for.
pub const MAX_LIST_DEPTH: u32 = 10;
/// A listing stops after this many entries and says so (`truncated`).
pub const MAX_LIST_ENTRIES: usize = 20_000;
/// Default cap on one `PUT /files/content` body (the agent's `--max-file-bytes`).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 1 << 30;

/// `application/x-tar`: an upload or download without compression.
pub const CONTENT_TYPE_TAR: &str = "application/x-tar";
/// `application/gzip`: the default archive format.
pub const CONTENT_TYPE_GZIP: &str = "application/gzip";

/// What a directory entry is; symlinks are reported as such, never followed.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    File,
    Dir,
    Symlink,
    /// Sockets, FIFOs, devices.
    Other,
}

/// One file, directory or link: the body of `stat`, `PUT content`, `mkdir`, `move`,
/// and an element of `list`.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    /// As the guest sees it: `/workspace/...`.
    pub path: String,
    /// Last component (`workspace` for the root).
    pub name: String,
    #[serde(rename = "type")]
    pub kind: FileType,
    /// Bytes (of the link text itself for a symlink).
    pub size: u64,
    /// Permission bits (`0o644` is 420).
    pub mode: u32,
    /// Last modification, RFC 3339 with milliseconds (UTC).
    pub mtime: String,
    /// A symlink's target, as stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// `GET /files/list`.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileList {
    /// Sorted by path; a directory comes before its contents.
    pub entries: Vec<FileEntry>,
    /// True when the listing stopped at [`MAX_LIST_ENTRIES`].
    #[serde(default)]
    pub truncated: bool,
}

/// `?path=P`: `GET /files/content`, `GET /files/stat`. (A query's `path` pattern is
/// `crate::schema::WORKSPACE_PATH` written out: the derive takes only a literal.)
#[cfg_attr(feature = "schema", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "schema", into_params(parameter_in = Query))]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PathQuery {
    #[cfg_attr(
        feature = "schema",
        param(
            pattern = r"^(?![\s\S]*[\n\r\u2028\u2029])(?!/(?!workspace(/|$)))(?!(.*/)?\.\.(/|$))(?!.*[^/]{64})[^\\\x00]+$",
            min_length = 1,
            max_length = 1024
        )
    )]
    pub path: String,
}

/// `PUT /files/content?path=P[&mode=0644][&parents=true]`.
#[cfg_attr(feature = "schema", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "schema", into_params(parameter_in = Query))]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WriteQuery {
    #[cfg_attr(
        feature = "schema",
        param(
            pattern = r"^(?![\s\S]*[\n\r\u2028\u2029])(?!/(?!workspace(/|$)))(?!(.*/)?\.\.(/|$))(?!.*[^/]{64})[^\\\x00]+$",
            min_length = 1,
            max_length = 1024
        )
    )]
    pub path: String,
    /// Octal permission bits, `0644` or `644`; default: those of the file replaced, else
    /// `0644`.
    #[cfg_attr(feature = "schema", param(pattern = r"^(0o)?0?[0-7]{1,3}$"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Create missing parent directories (`0755`).
    #[serde(default)]
    pub parents: bool,
}

impl WriteQuery {
    /// The parsed `mode`: octal, at most `0777` (no setuid, setgid or sticky bits).
    pub fn mode_bits(&self) -> crate::Result<Option<u32>> {
        let Some(m) = &self.mode else { return Ok(None) };
        let digits = m.strip_prefix("0o").unwrap_or(m);
        match u32::from_str_radix(digits, 8) {
            Ok(bits) if !digits.is_empty() && digits.len() <= 4 && bits <= 0o777 => Ok(Some(bits)),
            _ => Err(ProtoError::BadMode(m.clone())),
        }
    }
}

/// `GET /files/list?path=P[&depth=N]`.
#[cfg_attr(feature = "schema", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "schema", into_params(parameter_in = Query))]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Default: `/workspace`.
    #[cfg_attr(
        feature = "schema",
        param(
            pattern = r"^(?![\s\S]*[\n\r\u2028\u2029])(?!/(?!workspace(/|$)))(?!(.*/)?\.\.(/|$))(?!.*[^/]{64})[^\\\x00]+$",
            min_length = 1,
            max_length = 1024
        )
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// 1 (default) lists the directory's own entries, 2 also theirs, up to
    /// [`MAX_LIST_DEPTH`].
    #[cfg_attr(feature = "schema", param(minimum = 1, maximum = 10))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<u32>,
}

impl ListQuery {
    pub fn depth(&self) -> crate::Result<u32> {
        match self.depth.unwrap_or(1) {
            d @ 1..=MAX_LIST_DEPTH => Ok(d),
            d => Err(ProtoError::BadDepth(d, MAX_LIST_DEPTH)),
        }
    }
}

/// `DELETE /files?path=P[&recursive=true]`.
#[cfg_attr(feature = "schema", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "schema", into_params(parameter_in = Query))]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    #[cfg_attr(
        feature = "schema",
        param(
            pattern = r"^(?![\s\S]*[\n\r\u2028\u2029])(?!/(?!workspace(/|$)))(?!(.*/)?\.\.(/|$))(?!.*[^/]{64})[^\\\x00]+$",
            min_length = 1,
            max_length = 1024
        )
    )]
    pub path: String,
    /// Needed to delete a directory that is not empty.
    #[serde(default)]
    pub recursive: bool,
}

/// `GET /files/watch?path=P[&recursive=true]`.
#[cfg_attr(feature = "schema", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "schema", into_params(parameter_in = Query))]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WatchQuery {
    /// A directory; default `/workspace`.
    #[cfg_attr(
        feature = "schema",
        param(
            pattern = r"^(?![\s\S]*[\n\r\u2028\u2029])(?!/(?!workspace(/|$)))(?!(.*/)?\.\.(/|$))(?!.*[^/]{64})[^\\\x00]+$",
            min_length = 1,
            max_length = 1024
        )
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Also watch every directory below, including ones created later.
    #[serde(default)]
    pub recursive: bool,
}

/// `GET /files/download?path=P[&format=tar|tar.gz]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DownloadQuery {
    pub path: String,
    #[serde(default)]
    pub format: ArchiveFormat,
}

/// Archive encodings of `/files/upload` (chosen by `Content-Type`) and `/files/download`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum ArchiveFormat {
    #[serde(rename = "tar")]
    Tar,
    #[default]
    #[serde(rename = "tar.gz")]
    TarGz,
}

impl ArchiveFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            ArchiveFormat::Tar => CONTENT_TYPE_TAR,
            ArchiveFormat::TarGz => CONTENT_TYPE_GZIP,
        }
    }

    /// The format an upload's `Content-Type` names: `application/x-tar` is plain tar,
    /// anything else (or none) gzip, as before plain tar was accepted.
    pub fn from_content_type(ct: Option<&str>) -> Self {
        let essence = ct.and_then(|c| c.split(';').next()).map(str::trim);
        match essence {
            Some(e) if e.eq_ignore_ascii_case(CONTENT_TYPE_TAR) => ArchiveFormat::Tar,
            _ => ArchiveFormat::TarGz,
        }
    }

    /// The name used on the wire (`tar`, `tar.gz`).
    pub fn as_str(self) -> &'static str {
        match self {
            ArchiveFormat::Tar => "tar",
            ArchiveFormat::TarGz => "tar.gz",
        }
    }
}

/// `POST /files/mkdir`.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MkdirRequest {
    #[cfg_attr(feature = "schema", schema(schema_with = crate::schema::workspace_path))]
    pub path: String,
    /// Create missing parents, and accept a directory that already exists.
    #[serde(default)]
    pub parents: bool,
}

/// `POST /files/move`: `rename(2)` within the workspace.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    #[cfg_attr(feature = "schema", schema(schema_with = crate::schema::workspace_path))]
    pub from: String,
    #[cfg_attr(feature = "schema", schema(schema_with = crate::schema::workspace_path))]
    pub to: String,
    /// Replace an existing `to` (a file, or an empty directory when `from` is one).
    #[serde(default)]
    pub overwrite: bool,
}

/// What happened to a watched path.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WatchEventKind {
    Create,
    Modify,
    Delete,
    Move,
    /// The kernel's event queue overflowed: events were lost; re-list to resync.
    Overflow,
}

/// One line of `GET /files/watch` (NDJSON).
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WatchEvent {
    #[serde(rename = "type")]
    pub kind: WatchEventKind,
    /// `/workspace/...`; for `move` the new path; the watched directory for `overflow`.
    pub path: String,
    /// For `move`: the old path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_events_have_the_documented_shape() {
        let e = FileEntry {
            path: "/workspace/l".into(),
            name: "l".into(),
            kind: FileType::Symlink,
            size: 4,
            mode: 0o777,
            mtime: "2026-01-01T00:00:00.000Z".into(),
            target: Some("/etc".into()),
        };
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"path": "/workspace/l", "name": "l", "type": "symlink",
                "size": 4, "mode": 511, "mtime": "2026-01-01T00:00:00.000Z", "target": "/etc"})
        );
        let w = WatchEvent {
            kind: WatchEventKind::Create,
            path: "/workspace/x".into(),
            from: None,
        };
        assert_eq!(
            serde_json::to_string(&w).unwrap(),
            r#"{"type":"create","path":"/workspace/x"}"#
        );
    }

    #[test]
    fn modes_are_octal_permission_bits() {
        let q = |m: &str| WriteQuery {
            path: "x".into(),
            mode: Some(m.into()),
            parents: false,
        };
        for (m, want) in [("0644", 0o644), ("755", 0o755), ("0o600", 0o600), ("0", 0)] {
            assert_eq!(q(m).mode_bits().unwrap(), Some(want), "{m}");
        }
        for bad in ["", "0o", "8", "4755", "01000", "rw-", "-1", "00000644"] {
            assert!(q(bad).mode_bits().is_err(), "{bad}");
        }
    }

    #[test]
    fn depth_is_bounded() {
        let q = |d| ListQuery {
            path: None,
            depth: d,
        };
        assert_eq!(q(None).depth().unwrap(), 1);
        assert_eq!(q(Some(10)).depth().unwrap(), 10);
        assert!(q(Some(0)).depth().is_err());
        assert!(q(Some(11)).depth().is_err());
    }

    #[test]
    fn archive_formats_follow_the_content_type() {
        use ArchiveFormat::*;
        assert_eq!(ArchiveFormat::from_content_type(None), TarGz);
        assert_eq!(
            ArchiveFormat::from_content_type(Some("application/gzip")),
            TarGz
        );
        assert_eq!(
            ArchiveFormat::from_content_type(Some("Application/X-Tar; charset=binary")),
            Tar
        );
        assert_eq!(serde_json::to_string(&TarGz).unwrap(), "\"tar.gz\"");
    }
}
