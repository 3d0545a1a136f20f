//! The agent's file endpoints: archive upload and download, single-file operations and
//! `watch` (see `hearth_proto::files`).

use bytes::Bytes;
use futures::Stream;
use hearth_proto::{
    paths, ArchiveFormat, DeleteQuery, DownloadQuery, FileEntry, FileList, ListQuery, MkdirRequest,
    MoveRequest, PathQuery, UploadResponse, WatchEvent, WatchQuery, WriteQuery,
};
use http::{header, Method, Request};

use super::{bytes_of, json, json_body, ndjson, stream_body, with_query, AgentClient, ByteStream};
use crate::http as h;
use crate::{Error, Result};

/// A file being read: its size (the response's `Content-Length`) and its bytes.
pub struct FileDownload {
    pub size: u64,
    pub body: ByteStream,
}

/// `watch` events as they happen; the stream ends when the watched directory goes.
pub type WatchStream = ndjson::LineStream<WatchEvent>;

impl AgentClient {
    /// `POST /files/upload?dest=DIR` with a tar.gz body, streamed as it is produced.
    pub async fn upload<S>(&self, dest: &str, body: S) -> Result<UploadResponse>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        self.upload_as(dest, ArchiveFormat::TarGz, body).await
    }

    /// [`AgentClient::upload`] of a tar or tar.gz stream.
    pub async fn upload_as<S>(
        &self,
        dest: &str,
        format: ArchiveFormat,
        body: S,
    ) -> Result<UploadResponse>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        let path = format!("{}?dest={}", paths::FILES_UPLOAD, h::encode_query(dest));
        // The answer comes after the whole body is streamed and extracted, which takes as
        // long as the caller's stream does: only the connect is bounded.
        let ct = Some(format.content_type());
        let resp = self
            .request_within(Method::POST, &path, ct, stream_body(body), None)
            .await?;
        json_body(resp).await
    }

    /// `GET /files/download?path=PATH`: a tar.gz, as it arrives.
    pub async fn download(&self, path: &str) -> Result<ByteStream> {
        self.download_as(&DownloadQuery {
            path: path.to_string(),
            format: ArchiveFormat::TarGz,
        })
        .await
    }

    /// `GET /files/download` in either format.
    pub async fn download_as(&self, q: &DownloadQuery) -> Result<ByteStream> {
        let uri = with_query(paths::FILES_DOWNLOAD, q)?;
        let resp = self.request(Method::GET, &uri, None, h::empty()).await?;
        Ok(bytes_of(resp.into_body()))
    }

    /// `GET /files/content?path=P`.
    pub async fn read_file(&self, path: &str) -> Result<FileDownload> {
        let q = PathQuery {
            path: path.to_string(),
        };
        let uri = with_query(paths::FILES_CONTENT, &q)?;
        let resp = self.request(Method::GET, &uri, None, h::empty()).await?;
        let size = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .ok_or_else(|| Error::Transport("file response without Content-Length".into()))?;
        Ok(FileDownload {
            size,
            body: bytes_of(resp.into_body()),
        })
    }

    /// `PUT /files/content`: `body` streamed to the agent, which replaces the file
    /// atomically once it has all of it. With `len`, the agent refuses an oversized file
    /// before any byte is sent; `body` must then yield exactly `len` bytes.
    pub async fn write_file<S>(
        &self,
        q: &WriteQuery,
        body: S,
        len: Option<u64>,
    ) -> Result<FileEntry>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        let uri = with_query(paths::FILES_CONTENT, q)?;
        let mut req = Request::builder()
            .method(Method::PUT)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/octet-stream");
        if let Some(n) = len {
            req = req.header(header::CONTENT_LENGTH, n);
        }
        let req = req
            .body(stream_body(body))
            .map_err(|e| Error::Transport(format!("building request: {e}")))?;
        // Answered after the whole body: as long as the caller's stream takes.
        let resp = self.send(req, None).await?;
        if !resp.status().is_success() {
            return Err(super::agent_error(resp.status(), resp.into_body()).await);
        }
        json_body(resp).await
    }

    /// `GET /files/list`.
    pub async fn list_files(&self, q: &ListQuery) -> Result<FileList> {
        let uri = with_query(paths::FILES_LIST, q)?;
        json_body(self.request(Method::GET, &uri, None, h::empty()).await?).await
    }

    /// `GET /files/stat?path=P` (a symlink is reported, not followed).
    pub async fn stat_file(&self, path: &str) -> Result<FileEntry> {
        let q = PathQuery {
            path: path.to_string(),
        };
        let uri = with_query(paths::FILES_STAT, &q)?;
        json_body(self.request(Method::GET, &uri, None, h::empty()).await?).await
    }

    /// `POST /files/mkdir`.
    pub async fn mkdir(&self, r: &MkdirRequest) -> Result<FileEntry> {
        let ct = Some("application/json");
        let resp = self
            .request(Method::POST, paths::FILES_MKDIR, ct, json(r)?)
            .await?;
        json_body(resp).await
    }

    /// `POST /files/move`.
    pub async fn move_file(&self, r: &MoveRequest) -> Result<FileEntry> {
        let ct = Some("application/json");
        let resp = self
            .request(Method::POST, paths::FILES_MOVE, ct, json(r)?)
            .await?;
        json_body(resp).await
    }

    /// `DELETE /files?path=P[&recursive=true]`.
    pub async fn delete_file(&self, q: &DeleteQuery) -> Result<()> {
        let uri = with_query(paths::FILES, q)?;
        self.request(Method::DELETE, &uri, None, h::empty())
            .await
            .map(drop)
    }

    /// `GET /files/watch`: returns once the watches are in place, so whatever happens
    /// after it returns is reported.
    pub async fn watch(&self, q: &WatchQuery) -> Result<WatchStream> {
        let uri = with_query(paths::FILES_WATCH, q)?;
        let resp = self.request(Method::GET, &uri, None, h::empty()).await?;
        Ok(ndjson::lines(resp.into_body()))
    }
}
