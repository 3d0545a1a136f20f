//! What the image asks of user processes (`/etc/hearth/image.json`, written into
//! imported OCI images): `Env` on top of the agent's defaults (HOME stays the
//! workspace, the only writable home) and under each request's own env; `WorkingDir`
//! as the default working directory; `User` as uid 1000's login name (user code always
//! runs as uid 1000, see [`hearth_proto::ImageConfig::login_name`]). Also: telling
//! which runtimes the image lacks, so a run endpoint can say so instead of failing.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use hearth_proto::{ImageConfig, WORKSPACE};

use super::Config;
use crate::archive::WorkspacePath;
use crate::jail::{Jail, JAIL_PATH, RUNTIME_BIN_DIR};

/// Reads the image config; a missing file is the default, a broken one is reported on
/// the console and ignored (the image still serves `exec`).
pub fn load(path: &Path) -> ImageConfig {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            eprintln!("hearth-agent: ignoring {}: {e}", path.display());
            ImageConfig::default()
        }),
        Err(_) => ImageConfig::default(),
    }
}

/// The environment of user processes: defaults, then the image's, then `extra`.
pub fn user_env(
    cfg: &Config,
    extra: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    let mut image: Vec<(String, String)> = cfg
        .image
        .env_pairs()
        .into_iter()
        .filter(|(k, _)| k != "HOME")
        .map(|(k, v)| match k.as_str() {
            // Runtimes bound from elsewhere stay reachable.
            "PATH" if !v.split(':').any(|d| d == RUNTIME_BIN_DIR) => {
                (k, format!("{v}:{RUNTIME_BIN_DIR}"))
            }
            _ => (k, v),
        })
        .collect();
    if let Some(name) = cfg.image.login_name() {
        image.push(("USER".into(), name.clone()));
        image.push(("LOGNAME".into(), name));
    }
    super::base_env(image.into_iter().chain(extra))
}

/// The default working directory, as the jail sees it: the image's `WorkingDir` when it
/// is under `/workspace` (created, owned by uid 1000) or an existing directory the jail
/// shows (an exposed or system directory, read-only), else `/workspace`.
pub fn default_cwd(jail: &Jail, image: &ImageConfig) -> String {
    let Some(dir) = image.working_dir.as_deref().filter(|d| !d.is_empty()) else {
        return WORKSPACE.into();
    };
    let fallback = |why: &str| {
        eprintln!("hearth-agent: image WorkingDir {dir:?} {why}; using {WORKSPACE}");
        WORKSPACE.to_string()
    };
    if !dir.starts_with('/') || dir.split('/').any(|c| c == "..") {
        return fallback("is not a plain absolute path");
    }
    if let Ok(p) = WorkspacePath::parse(dir) {
        let host = jail.host_path(&p.to_string());
        let made = std::fs::create_dir_all(&host).and_then(|_| {
            let id = Some(jail.uid);
            std::os::unix::fs::chown(&host, id, Some(jail.gid))
        });
        return match made {
            Ok(()) => p.to_string(),
            Err(e) => fallback(&format!("cannot be created: {e}")),
        };
    }
    if jail.host_path(dir).is_dir() {
        dir.to_string()
    } else {
        fallback("is not a directory the jail shows")
    }
}

/// Whether `cmd` names an executable inside the jail: as a path, or on `path`.
pub fn has_program(jail: &Jail, path: Option<&str>, cmd: &str) -> bool {
    let exe = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if cmd.contains('/') {
        return exe(&jail.host_path(cmd));
    }
    path.unwrap_or(JAIL_PATH)
        .split(':')
        .filter(|d| d.starts_with('/'))
        .any(|d| exe(&jail.host_path(d).join(cmd)))
}
