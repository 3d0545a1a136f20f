//! The agent's endpoint paths: wire names in one place, for the agent's router and the
//! host's client alike. The server's `/v1/vms/{id}/...` routes mirror them, so a proxy
//! can forward `{path}?{query}` unchanged.

pub const HEALTH: &str = "/health";
pub const EXEC: &str = "/exec";
pub const FIREWALL: &str = "/firewall/allowlist";
pub const FILES_UPLOAD: &str = "/files/upload";
pub const FILES_DOWNLOAD: &str = "/files/download";
/// `GET` reads a file, `PUT` replaces it.
pub const FILES_CONTENT: &str = "/files/content";
pub const FILES_LIST: &str = "/files/list";
pub const FILES_STAT: &str = "/files/stat";
pub const FILES_MKDIR: &str = "/files/mkdir";
pub const FILES_MOVE: &str = "/files/move";
/// `DELETE`.
pub const FILES: &str = "/files";
pub const FILES_WATCH: &str = "/files/watch";
/// `GET` lists, `POST` starts.
pub const PROCESSES: &str = "/processes";
/// `POST` freezes the per-VM disk's file system (`FIFREEZE`), `FS_THAW` thaws it.
pub const FS_FREEZE: &str = "/fs/freeze";
pub const FS_THAW: &str = "/fs/thaw";

/// What follows `/processes/{pid}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessPath {
    /// `GET` one, `DELETE` kills it and everything it started.
    Itself,
    Output,
    Stdin,
    Signal,
    Attach,
}

impl ProcessPath {
    const ALL: [(ProcessPath, &'static str); 5] = [
        (ProcessPath::Itself, ""),
        (ProcessPath::Output, "/output"),
        (ProcessPath::Stdin, "/stdin"),
        (ProcessPath::Signal, "/signal"),
        (ProcessPath::Attach, "/attach"),
    ];

    /// `/processes/{pid}[/output|/stdin|/signal|/attach]`.
    pub fn path(self, pid: u32) -> String {
        let suffix = Self::ALL.iter().find(|(p, _)| *p == self).map(|(_, s)| *s);
        format!("{PROCESSES}/{pid}{}", suffix.unwrap_or(""))
    }

    /// The inverse of [`ProcessPath::path`]; `None` for anything else (a pid must be
    /// plain decimal digits).
    pub fn parse(path: &str) -> Option<(u32, ProcessPath)> {
        let rest = path.strip_prefix(PROCESSES)?.strip_prefix('/')?;
        let (pid, suffix) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let pid = pid.parse().ok()?;
        let which = Self::ALL.iter().find(|(_, s)| *s == suffix)?.0;
        Some((pid, which))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_paths_round_trip() {
        for (p, _) in ProcessPath::ALL {
            assert_eq!(ProcessPath::parse(&p.path(42)), Some((42, p)));
        }
        assert_eq!(ProcessPath::Stdin.path(7), "/processes/7/stdin");
        for bad in [
            "/processes",
            "/processes/",
            "/processes/x",
            "/processes/+1",
            "/processes/1/",
            "/processes/1/nope",
            "/processes/99999999999",
            "/processesx/1",
        ] {
            assert_eq!(ProcessPath::parse(bad), None, "{bad}");
        }
    }
}
