//! Job logs: `$HEARTH_DATA_DIR/jobs/<id>/log.ndjson`, one JSON object per output chunk
//! (`{"t":ms,"stream":"stdout","data":"..."}`), appended as the chunk arrives. Framing
//! keeps which stream a chunk came from and the order of both, so the log can be
//! replayed interleaved or filtered. A crash mid-write leaves at most one partial last
//! line, which readers skip. Other lines: `{"attempt":N}` when a retry starts and
//! `{"truncated":true}` once the size cap is hit (later output is dropped).

use std::path::{Path, PathBuf};

use hearth_api::jobs::{LogLine, LogStream};
use tokio::io::AsyncWriteExt;

use crate::error::{AppError, Result};
use crate::models::now_ms;

/// Bytes kept free under the cap for the `{"t":...,"truncated":true}` line.
const MARKER_ROOM: u64 = 64;

pub fn log_path(data_dir: &Path, job_id: &str) -> PathBuf {
    data_dir.join("jobs").join(job_id).join("log.ndjson")
}

/// Appends chunks to one job's log, up to `cap` bytes of file.
pub struct LogWriter {
    file: tokio::fs::File,
    written: u64,
    cap: u64,
    pub truncated: bool,
}

impl LogWriter {
    pub async fn open(path: &Path, cap: u64) -> Result<LogWriter> {
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| AppError::io(format!("creating {}", dir.display()), e))?;
        }
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await
            .map_err(|e| AppError::io(format!("opening {}", path.display()), e))?;
        let written = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        Ok(LogWriter {
            file,
            written,
            cap,
            truncated: false,
        })
    }

    /// Marks the start of attempt `n` (> 1) so a retried job's log says so.
    pub async fn attempt(&mut self, n: i64) -> Result<()> {
        let line = LogLine {
            t: Some(now_ms()),
            attempt: Some(n),
            ..Default::default()
        };
        self.write_line(&line).await
    }

    pub async fn chunk(&mut self, stream: LogStream, data: String) -> Result<()> {
        if self.truncated || data.is_empty() {
            return Ok(());
        }
        let line = LogLine {
            t: Some(now_ms()),
            stream: Some(stream),
            data: Some(data),
            ..Default::default()
        };
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        // Room is kept for the truncation marker so the file never exceeds the cap.
        if self.written + bytes.len() as u64 + MARKER_ROOM > self.cap {
            self.truncated = true;
            return self
                .write_line(&LogLine {
                    t: Some(now_ms()),
                    truncated: true,
                    ..Default::default()
                })
                .await;
        }
        self.write(&bytes).await
    }

    async fn write_line(&mut self, line: &LogLine) -> Result<()> {
        let mut bytes = serde_json::to_vec(line).unwrap_or_default();
        bytes.push(b'\n');
        self.write(&bytes).await
    }

    /// Written through at once (tokio's File buffers until flushed), so what a job
    /// printed before a crash is on disk.
    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let io = |e| AppError::io("writing job log", e);
        self.file.write_all(bytes).await.map_err(io)?;
        self.file.flush().await.map_err(io)?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

/// Which lines a reader wants and how it wants them.
#[derive(Debug, Clone, Copy)]
pub struct Render {
    /// Only that stream, no markers.
    pub stream: Option<LogStream>,
    /// Framed lines as stored instead of plain text.
    pub ndjson: bool,
}

impl Render {
    /// Renders the complete lines in `buf`; returns the bytes and how much of `buf`
    /// was consumed (a trailing partial line is left for the next read).
    pub fn lines(&self, buf: &[u8]) -> (Vec<u8>, usize) {
        let mut out = Vec::new();
        let mut used = 0;
        while let Some(nl) = buf[used..].iter().position(|&b| b == b'\n') {
            let raw = &buf[used..used + nl];
            used += nl + 1;
            let Ok(line) = serde_json::from_slice::<LogLine>(raw) else {
                continue;
            };
            let is_output = line.data.is_some();
            if let Some(want) = self.stream {
                if !is_output || line.stream != Some(want) {
                    continue;
                }
            }
            if self.ndjson {
                out.extend_from_slice(raw);
                out.push(b'\n');
            } else if let Some(d) = &line.data {
                out.extend_from_slice(d.as_bytes());
            } else if let Some(n) = line.attempt {
                out.extend_from_slice(format!("[hearth: attempt {n}]\n").as_bytes());
            } else if line.truncated {
                out.extend_from_slice(b"\n[hearth: log truncated at the size limit]\n");
            }
        }
        (out, used)
    }
}

/// Reads the file from `offset` (a missing file reads as empty: the job has not
/// started yet or printed nothing).
pub async fn read_from(path: &Path, offset: u64) -> Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut f = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(AppError::io(format!("opening {}", path.display()), e)),
    };
    let io = |e| AppError::io("reading job log", e);
    f.seek(std::io::SeekFrom::Start(offset)).await.map_err(io)?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).await.map_err(io)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn order_streams_and_cap_survive_the_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(dir.path(), "j1");
        let mut w = LogWriter::open(&path, 300).await.unwrap();
        w.chunk(LogStream::Stdout, "a\n".into()).await.unwrap();
        w.chunk(LogStream::Stderr, "b\n".into()).await.unwrap();
        w.chunk(LogStream::Stdout, "c\n".into()).await.unwrap();
        w.chunk(LogStream::Stdout, "x".repeat(300)).await.unwrap();
        w.chunk(LogStream::Stdout, "after the cap\n".into())
            .await
            .unwrap();
        assert!(w.truncated);
        let buf = read_from(&path, 0).await.unwrap();
        assert!(
            buf.len() <= 300,
            "the file grew past its cap: {}",
            buf.len()
        );
        let all = Render {
            stream: None,
            ndjson: false,
        };
        let (text, used) = all.lines(&buf);
        assert_eq!(used, buf.len());
        let text = String::from_utf8(text).unwrap();
        assert!(text.starts_with("a\nb\nc\n"), "{text:?}");
        assert!(
            text.contains("truncated") && !text.contains("after"),
            "{text:?}"
        );
        let err = Render {
            stream: Some(LogStream::Stderr),
            ndjson: false,
        };
        assert_eq!(err.lines(&buf).0, b"b\n");
        // A partial last line (crash mid-write) is left unconsumed, not mangled.
        let (out, used) = all.lines(b"{\"stream\":\"stdout\",\"data\":\"ok\"}\n{\"str");
        assert_eq!((out.as_slice(), used), (&b"ok"[..], 32));
    }
}
