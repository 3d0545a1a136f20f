//! The archive helpers: the agent binary re-run inside the jail (chroot, uid 1000) as
//! `hearth-agent __extract ROOT DEST MAX_ENTRIES MAX_BYTES FORMAT` (archive on stdin) or
//! `hearth-agent __pack ROOT PATH FORMAT` (archive on stdout); FORMAT is `tar` or
//! `tar.gz`. Running them jailed means the
//! privileged agent never resolves a path the user controls, and uploaded files are
//! owned by uid 1000 without any chown.
//!
//! Protocol on stdout: `__extract` prints one JSON line, [`HelperReply`]. `__pack` prints
//! `ok\n` followed by the archive, or one JSON `HelperReply` error line.

use std::io::{self, BufReader, Write};
use std::path::Path;

use hearth_proto::{ArchiveFormat, UploadResponse};
use serde::{Deserialize, Serialize};

use crate::archive::{self, ArchiveError, Limits, WorkspacePath};

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HelperReply {
    Ok(UploadResponse),
    Err {
        status: u16,
        code: String,
        message: String,
    },
}

impl From<&ArchiveError> for HelperReply {
    fn from(e: &ArchiveError) -> Self {
        HelperReply::Err {
            status: e.status(),
            code: e.code().to_string(),
            message: e.to_string(),
        }
    }
}

fn usage() -> ArchiveError {
    ArchiveError::Corrupt("bad helper arguments".into())
}

fn parse_path(s: &str) -> Result<WorkspacePath, ArchiveError> {
    WorkspacePath::parse(s).map_err(|source| ArchiveError::BadPath {
        entry: s.to_string(),
        source,
    })
}

/// Runs a helper mode if `args` (without the program name) asks for one; returns the
/// process exit code, or `None` when `args` are ordinary agent arguments.
pub fn main(args: &[String]) -> Option<i32> {
    let mode = args.first()?.as_str();
    if mode != "__extract" && mode != "__pack" {
        return None;
    }
    let mut out = io::stdout().lock();
    let outcome = if mode == "__extract" {
        extract(&args[1..]).map(|r| {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string(&HelperReply::Ok(r)).unwrap_or_default()
            );
        })
    } else {
        pack(&args[1..], &mut out)
    };
    match outcome {
        Ok(()) => Some(0),
        Err(e) => {
            let line = serde_json::to_string(&HelperReply::from(&e)).unwrap_or_default();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
            eprintln!("hearth-agent {mode}: {e}");
            Some(2)
        }
    }
}

fn extract(args: &[String]) -> Result<UploadResponse, ArchiveError> {
    let [root, dest, entries, bytes, format] = args else {
        return Err(usage());
    };
    let format = parse_format(format)?;
    let limits = Limits {
        max_entries: entries.parse().map_err(|_| usage())?,
        max_bytes: bytes.parse().map_err(|_| usage())?,
    };
    let dest = parse_path(dest)?;
    let stdin = BufReader::with_capacity(64 * 1024, io::stdin().lock());
    archive::extract_as(stdin, Path::new(root), &dest, &limits, format)
}

fn parse_format(s: &str) -> Result<ArchiveFormat, ArchiveError> {
    match s {
        "tar" => Ok(ArchiveFormat::Tar),
        "tar.gz" => Ok(ArchiveFormat::TarGz),
        _ => Err(usage()),
    }
}

fn pack(args: &[String], out: &mut impl Write) -> Result<(), ArchiveError> {
    let [root, path, format] = args else {
        return Err(usage());
    };
    let format = parse_format(format)?;
    let path = parse_path(path)?;
    let root = Path::new(root);
    archive::check_source(root, &path)?;
    out.write_all(b"ok\n")
        .map_err(ArchiveError::io("writing to stdout"))?;
    let w = io::BufWriter::with_capacity(64 * 1024, out);
    archive::pack_as(root, &path, w, format).map(|_| ())
}
