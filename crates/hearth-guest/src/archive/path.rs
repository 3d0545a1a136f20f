//! [`WorkspacePath`]: a path proven to name something inside `/workspace`.
//!
//! Parsing is purely lexical (no file system access), so it can be fuzzed and so a
//! decision never depends on what happens to be on disk. Symlinks are handled elsewhere:
//! uploads refuse to create them and downloads refuse to follow them.

use std::fmt;
use std::path::{Path, PathBuf};

use hearth_proto::WORKSPACE;

/// Longest accepted path in bytes (Linux `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;
/// Longest accepted single component in bytes (Linux `NAME_MAX`).
pub const MAX_COMPONENT_LEN: usize = 255;

/// Why a string is not a [`WorkspacePath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is empty")]
    Empty,
    #[error("path contains a NUL byte")]
    Nul,
    #[error("path contains a backslash")]
    Backslash,
    #[error("path is {0} bytes long, more than {MAX_PATH_LEN}")]
    TooLong(usize),
    #[error("a path component is {0} bytes long, more than {MAX_COMPONENT_LEN}")]
    ComponentTooLong(usize),
    #[error("absolute path outside {WORKSPACE}")]
    OutsideWorkspace,
    #[error("path contains a `..` component")]
    ParentComponent,
}

/// A normalised path relative to the workspace root: no `.`, `..` or empty components,
/// no leading or trailing slash. The empty path is the workspace root itself.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct WorkspacePath(String);

impl WorkspacePath {
    /// The workspace root.
    pub fn root() -> Self {
        Self::default()
    }

    /// Accepts `rel/path`, `./rel/path`, `/workspace` and `/workspace/rel/path`.
    /// Any `..` is refused, even one that would stay inside, because an archive that needs
    /// one is either broken or probing.
    pub fn parse(s: &str) -> Result<Self, PathError> {
        if s.is_empty() {
            return Err(PathError::Empty);
        }
        if s.len() > MAX_PATH_LEN {
            return Err(PathError::TooLong(s.len()));
        }
        if s.contains('\0') {
            return Err(PathError::Nul);
        }
        // Windows separators are legal Linux file name bytes, but a name like `..\..\etc`
        // means an escape to some tools; nobody needs one in a workspace.
        if s.contains('\\') {
            return Err(PathError::Backslash);
        }
        let rel = match s.strip_prefix('/') {
            None => s,
            Some(abs) => match abs.strip_prefix(&WORKSPACE[1..]) {
                Some("") => "",
                Some(rest) if rest.starts_with('/') => rest,
                _ => return Err(PathError::OutsideWorkspace),
            },
        };
        let mut out = String::with_capacity(rel.len());
        for part in rel.split('/') {
            match part {
                "" | "." => continue,
                ".." => return Err(PathError::ParentComponent),
                p if p.len() > MAX_COMPONENT_LEN => {
                    return Err(PathError::ComponentTooLong(p.len()))
                }
                p => {
                    if !out.is_empty() {
                        out.push('/');
                    }
                    out.push_str(p);
                }
            }
        }
        Ok(Self(out))
    }

    /// Whether a raw string is written as an absolute (`/workspace/...`) path.
    pub fn is_absolute_str(s: &str) -> bool {
        s.starts_with('/')
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The relative form, `""` for the root.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|c| !c.is_empty())
    }

    /// Everything but the last component; `None` for the root.
    pub fn parent(&self) -> Option<WorkspacePath> {
        let name = self.file_name()?;
        let rest = self.0[..self.0.len() - name.len()].trim_end_matches('/');
        Some(Self(rest.to_string()))
    }

    /// Last component, `None` for the root.
    pub fn file_name(&self) -> Option<&str> {
        self.components().last()
    }

    pub fn join(&self, other: &WorkspacePath) -> Result<Self, PathError> {
        let joined = match (self.is_root(), other.is_root()) {
            (true, _) => other.0.clone(),
            (_, true) => self.0.clone(),
            _ => format!("{}/{}", self.0, other.0),
        };
        if joined.len() + WORKSPACE.len() + 1 > MAX_PATH_LEN {
            return Err(PathError::TooLong(joined.len() + WORKSPACE.len() + 1));
        }
        Ok(Self(joined))
    }

    /// Component-wise prefix test (`a/b` is under `a`, `ab` is not).
    pub fn starts_with(&self, base: &WorkspacePath) -> bool {
        base.is_root()
            || self.0 == base.0
            || (self.0.starts_with(&base.0) && self.0.as_bytes()[base.0.len()] == b'/')
    }

    /// The rest of `self` below `base`, if `self` is under it.
    pub fn strip_prefix(&self, base: &WorkspacePath) -> Option<WorkspacePath> {
        if !self.starts_with(base) {
            return None;
        }
        let rest = if base.is_root() {
            &self.0[..]
        } else {
            self.0[base.0.len()..].trim_start_matches('/')
        };
        Some(Self(rest.to_string()))
    }

    /// Where this path lives under a workspace directory on disk.
    pub fn under(&self, root: &Path) -> PathBuf {
        if self.is_root() {
            root.to_path_buf()
        } else {
            root.join(&self.0)
        }
    }
}

/// Shown as the guest sees it: `/workspace/...`.
impl fmt::Display for WorkspacePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_root() {
            f.write_str(WORKSPACE)
        } else {
            write!(f, "{WORKSPACE}/{}", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_normalises() {
        let ok = [
            ("a", "a"),
            ("a/b/c", "a/b/c"),
            ("./a", "a"),
            ("./././a/./b", "a/b"),
            ("a//b///c", "a/b/c"),
            ("dir/", "dir"),
            ("dir///", "dir"),
            (".", ""),
            ("./", ""),
            ("./././", ""),
            ("/workspace", ""),
            ("/workspace/", ""),
            ("/workspace/a/b", "a/b"),
            ("/workspace//a", "a"),
            ("...", "..."),
            ("..a", "..a"),
            ("a..", "a.."),
            (".hidden", ".hidden"),
            ("snow☃man", "snow☃man"),
            ("with space/and\nnewline", "with space/and\nnewline"),
        ];
        for (input, want) in ok {
            let p = WorkspacePath::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(p.as_str(), want, "{input:?}");
        }
    }

    #[test]
    fn rejects_every_escape() {
        use PathError::*;
        let long_component = "x".repeat(MAX_COMPONENT_LEN + 1);
        let long_path = "a/".repeat(MAX_PATH_LEN / 2 + 1);
        let bad = [
            ("", Empty),
            ("..", ParentComponent),
            ("../x", ParentComponent),
            ("a/../../etc", ParentComponent),
            ("a/..", ParentComponent),
            ("a/b/../c", ParentComponent),
            ("./..", ParentComponent),
            ("/workspace/..", ParentComponent),
            ("/workspace/../etc", ParentComponent),
            ("/workspace/a/../../etc", ParentComponent),
            ("/etc/passwd", OutsideWorkspace),
            ("/", OutsideWorkspace),
            ("//workspace", OutsideWorkspace),
            ("/workspacefoo", OutsideWorkspace),
            ("/workspace.d/x", OutsideWorkspace),
            ("/Workspace/x", OutsideWorkspace),
            ("/./workspace", OutsideWorkspace),
            ("/tmp/../workspace", OutsideWorkspace),
            ("a\0b", Nul),
            ("\0", Nul),
            ("/workspace/\0", Nul),
            ("..\\..\\etc", Backslash),
            ("a\\b", Backslash),
            ("C:\\Windows", Backslash),
            (&long_component, ComponentTooLong(MAX_COMPONENT_LEN + 1)),
            (&long_path, TooLong(long_path.len())),
        ];
        for (input, want) in bad {
            assert_eq!(WorkspacePath::parse(input), Err(want), "{input:?}");
        }
    }

    #[test]
    fn prefixes_are_component_wise() {
        let p = |s| WorkspacePath::parse(s).unwrap();
        assert!(p("a/b").starts_with(&p("a")));
        assert!(p("a").starts_with(&p("a")));
        assert!(p("a").starts_with(&WorkspacePath::root()));
        assert!(!p("ab").starts_with(&p("a")));
        assert!(!p("a").starts_with(&p("a/b")));
        assert_eq!(p("a/b/c").strip_prefix(&p("a")), Some(p("b/c")));
        assert_eq!(p("a").strip_prefix(&p("a")), Some(WorkspacePath::root()));
        assert_eq!(p("ab").strip_prefix(&p("a")), None);
        assert_eq!(p("x").join(&p("y/z")).unwrap(), p("x/y/z"));
        assert_eq!(WorkspacePath::root().to_string(), "/workspace");
        assert_eq!(p("q/r").to_string(), "/workspace/q/r");
        assert_eq!(p("q/r").file_name(), Some("r"));
        assert_eq!(p("q/r/s").parent(), Some(p("q/r")));
        assert_eq!(p("q").parent(), Some(WorkspacePath::root()));
        assert_eq!(WorkspacePath::root().parent(), None);
    }

    #[test]
    fn join_keeps_the_length_bound() {
        let half = WorkspacePath::parse(&"d/".repeat(1100)).unwrap();
        assert!(matches!(half.join(&half), Err(PathError::TooLong(_))));
    }
}
