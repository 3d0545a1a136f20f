//! Parsing a request line into the one thing to do: 404 for an unknown path, 405 for a
//! known path with another method. Paths come from `hearth_proto::paths`.

use hearth_proto::paths::{self, ProcessPath};
use http::Method;

use super::run::Runtime;
use super::{AgentError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Health,
    Exec,
    Run(Runtime),
    Upload,
    Download,
    Firewall,
    FileRead,
    FileWrite,
    FileList,
    FileStat,
    Mkdir,
    Move,
    Delete,
    Watch,
    ProcessList,
    ProcessStart,
    ProcessGet(u32),
    ProcessKill(u32),
    ProcessOutput(u32),
    ProcessStdin(u32),
    ProcessSignal(u32),
    ProcessAttach(u32),
    Freeze,
    Thaw,
}

pub fn parse(method: &Method, path: &str) -> Result<Route> {
    use Method as M;
    use Route::*;
    let allowed: Vec<(Method, Route)> = match path {
        paths::HEALTH => vec![(M::GET, Health)],
        paths::EXEC => vec![(M::POST, Exec)],
        "/run-ts" => vec![(M::POST, Run(Runtime::Deno))],
        "/run-js" => vec![(M::POST, Run(Runtime::Node))],
        "/run-python" => vec![(M::POST, Run(Runtime::Python))],
        paths::FILES_UPLOAD => vec![(M::POST, Upload)],
        paths::FILES_DOWNLOAD => vec![(M::GET, Download)],
        paths::FIREWALL => vec![(M::POST, Firewall)],
        paths::FILES_CONTENT => vec![(M::GET, FileRead), (M::PUT, FileWrite)],
        paths::FILES_LIST => vec![(M::GET, FileList)],
        paths::FILES_STAT => vec![(M::GET, FileStat)],
        paths::FILES_MKDIR => vec![(M::POST, Mkdir)],
        paths::FILES_MOVE => vec![(M::POST, Move)],
        paths::FILES => vec![(M::DELETE, Delete)],
        paths::FILES_WATCH => vec![(M::GET, Watch)],
        paths::PROCESSES => vec![(M::GET, ProcessList), (M::POST, ProcessStart)],
        paths::FS_FREEZE => vec![(M::POST, Freeze)],
        paths::FS_THAW => vec![(M::POST, Thaw)],
        other => match ProcessPath::parse(other) {
            Some((pid, ProcessPath::Itself)) => {
                vec![(M::GET, ProcessGet(pid)), (M::DELETE, ProcessKill(pid))]
            }
            Some((pid, ProcessPath::Output)) => vec![(M::GET, ProcessOutput(pid))],
            Some((pid, ProcessPath::Stdin)) => vec![(M::POST, ProcessStdin(pid))],
            Some((pid, ProcessPath::Signal)) => vec![(M::POST, ProcessSignal(pid))],
            Some((pid, ProcessPath::Attach)) => vec![(M::GET, ProcessAttach(pid))],
            None => return Err(AgentError::NotFound(format!("no endpoint {path}"))),
        },
    };
    allowed
        .into_iter()
        .find(|(m, _)| m == method)
        .map(|(_, r)| r)
        .ok_or_else(|| AgentError::MethodNotAllowed {
            method: method.to_string(),
            path: path.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_methods_map_to_routes() {
        let ok = [
            (Method::GET, "/health", Route::Health),
            (Method::PUT, "/files/content", Route::FileWrite),
            (Method::GET, "/files/content", Route::FileRead),
            (Method::DELETE, "/files", Route::Delete),
            (Method::POST, "/processes", Route::ProcessStart),
            (Method::DELETE, "/processes/12", Route::ProcessKill(12)),
            (
                Method::GET,
                "/processes/12/attach",
                Route::ProcessAttach(12),
            ),
        ];
        for (m, p, want) in ok {
            assert_eq!(parse(&m, p).unwrap(), want, "{m} {p}");
        }
        let bad = [
            (Method::POST, "/files/content", 405),
            (Method::GET, "/processes/1/stdin", 405),
            (Method::GET, "/processes/x", 404),
            (Method::GET, "/nope", 404),
        ];
        for (m, p, status) in bad {
            assert_eq!(parse(&m, p).unwrap_err().status(), status, "{m} {p}");
        }
    }
}
