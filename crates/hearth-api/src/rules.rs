//! Checks more than one request type applies, each raising one [`ValidationError`].

use std::collections::BTreeMap;

use hearth_proto::schema::{MAX_PATH_COMPONENT, MAX_PATH_LEN};

use crate::limits::{Limits, MAX_FILE_NAME, MIN_MEMORY_MIB};
use crate::ValidationError as V;

pub fn vcpus(v: Option<u8>, l: &Limits) -> Result<(), V> {
    match v {
        Some(value) if value == 0 || value > l.max_vcpus => Err(V::Vcpus {
            value,
            max: l.max_vcpus,
        }),
        _ => Ok(()),
    }
}

pub fn memory_mib(m: Option<u32>, l: &Limits) -> Result<(), V> {
    match m {
        Some(value) if !(MIN_MEMORY_MIB..=l.max_memory_mib).contains(&value) => Err(V::MemoryMib {
            value,
            max: l.max_memory_mib,
        }),
        _ => Ok(()),
    }
}

pub fn timeout_ms(t: Option<u64>, l: &Limits) -> Result<(), V> {
    match t {
        Some(value) if value > l.max_timeout_ms => Err(V::TimeoutMs {
            value,
            max: l.max_timeout_ms,
        }),
        _ => Ok(()),
    }
}

/// An environment map: valid names, NUL-free values.
pub fn env_map(env: &BTreeMap<String, String>) -> Result<(), V> {
    for (k, v) in env {
        env_name(k)?;
        no_nul("env values", v)?;
    }
    Ok(())
}

pub fn env_name(k: &str) -> Result<(), V> {
    if k.is_empty() || k.contains(['=', '\0']) {
        return Err(V::EnvName { name: k.into() });
    }
    Ok(())
}

pub fn no_nul(field: &'static str, s: &str) -> Result<(), V> {
    if s.contains('\0') {
        return Err(V::Nul { field });
    }
    Ok(())
}

pub fn no_nul_all<'a>(
    field: &'static str,
    it: impl IntoIterator<Item = &'a String>,
) -> Result<(), V> {
    it.into_iter().try_for_each(|s| no_nul(field, s))
}

/// Line breaks: the schema patterns refuse them (regex engines disagree on `.` and `$`
/// around them), so the checks here do too.
pub fn has_line_break(s: &str) -> bool {
    s.contains(['\n', '\r', '\u{2028}', '\u{2029}'])
}

/// One path component: not `.`/`..`, no `/`, NUL or line break, at most
/// [`MAX_FILE_NAME`] characters.
pub fn file_name(what: &'static str, name: &str) -> Result<(), V> {
    if name.is_empty()
        || name.chars().count() > MAX_FILE_NAME
        || name.contains(['/', '\0'])
        || has_line_break(name)
        || name == "."
        || name == ".."
    {
        return Err(V::FileName {
            what,
            name: name.into(),
        });
    }
    Ok(())
}

/// A `u32` query value within `min..=max`.
pub fn range(name: &'static str, v: Option<u32>, min: u32, max: u32) -> Result<(), V> {
    match v {
        Some(value) if !(min..=max).contains(&value) => Err(V::OutOfRange {
            name,
            value: value.into(),
            min: min.into(),
            max: max.into(),
        }),
        _ => Ok(()),
    }
}

/// A path in `/workspace` as `hearth_proto::schema::WORKSPACE_PATH` describes it: the
/// agent checks it again, against the file system's byte limits.
pub fn workspace_path(field: &'static str, p: &str) -> Result<(), V> {
    let why = if p.is_empty() {
        Some("it is empty")
    } else if p.chars().count() > MAX_PATH_LEN {
        Some("it is longer than 1024 characters")
    } else if p.contains(['\0', '\\']) || has_line_break(p) {
        Some("it contains NUL, a backslash or a line break")
    } else if p.starts_with('/') && p != "/workspace" && !p.starts_with("/workspace/") {
        Some("an absolute path must be under /workspace")
    } else if p.split('/').any(|c| c == "..") {
        Some("it has a `..` component")
    } else if p.split('/').any(|c| c.chars().count() > MAX_PATH_COMPONENT) {
        Some("a component is longer than 63 characters")
    } else {
        None
    };
    match why {
        Some(why) => Err(V::WorkspacePath {
            field,
            value: p.into(),
            why,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_paths_follow_the_schema_pattern() {
        let long = "x".repeat(64);
        let table = [
            ("sub/dir", true),
            ("/workspace", true),
            ("/workspace/a/b", true),
            ("./a", true),
            ("a/../b", false),
            ("..", false),
            ("/etc", false),
            ("/workspacex", false),
            ("a\\b", false),
            ("a\nb", false),
            ("", false),
            (long.as_str(), false),
        ];
        for (p, ok) in table {
            assert_eq!(workspace_path("cwd", p).is_ok(), ok, "{p:?}");
        }
    }
}
