//! HTTP client for `hearth serve`, shared by `hearth vm`, `hearth keys` and `hearth job`.
//! Bodies are `hearth-api`'s types, the same the server parses.
//!
//! Server: `HEARTH_URL` (default `http://127.0.0.1:8080`). Key: `HEARTH_API_KEY`, else
//! the `admin.key` the server wrote under `HEARTH_DATA_DIR` when readable. Every non-2xx
//! answer becomes an error carrying the server's `{"error":{"code","message"}}`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{anyhow, Context};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use hearth_proto::ArchiveFormat;
use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// Connection settings every client subcommand takes.
#[derive(clap::Args, Debug, Clone)]
pub struct ClientArgs {
    /// Server URL.
    #[arg(long, env = "HEARTH_URL", default_value = DEFAULT_URL, global = true)]
    pub url: String,
    /// API key (default: `$HEARTH_DATA_DIR/admin.key` when readable).
    #[arg(long, env = "HEARTH_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// Print JSON instead of human output.
    #[arg(long, global = true)]
    pub json: bool,
}

/// An error the server reported, kept structured so callers can match on `code`.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub code: hearth_api::ErrorCode,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, HTTP {})", self.message, self.code, self.status)
    }
}

impl std::error::Error for ApiError {}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Client {
    pub fn new(args: &ClientArgs) -> anyhow::Result<Client> {
        let key = match &args.api_key {
            Some(k) => Some(k.trim().to_string()),
            None => std::fs::read_to_string(hearth_image::paths::data_dir().join("admin.key"))
                .ok()
                .map(|k| k.trim().to_string()),
        };
        Ok(Client {
            http: reqwest::Client::builder()
                .build()
                .context("building HTTP client")?,
            base: args.url.trim_end_matches('/').to_string(),
            key,
        })
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut b = self.http.request(method, format!("{}{path}", self.base));
        if let Some(k) = &self.key {
            b = b.bearer_auth(k);
        }
        b
    }

    /// Sends and turns a non-2xx answer into an [`ApiError`].
    pub async fn send(&self, req: RequestBuilder) -> anyhow::Result<Response> {
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let parsed: Option<hearth_api::ErrorBody> = serde_json::from_str(&text).ok();
        Err(match parsed {
            Some(b) => ApiError {
                status,
                code: b.error.code,
                message: match b.error.request_id {
                    Some(id) => format!("{} (request id {id})", b.error.message),
                    None => b.error.message,
                },
            },
            None => ApiError {
                status,
                code: hearth_api::ErrorCode::for_status(status),
                message: text,
            },
        }
        .into())
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self.send(self.request(Method::GET, path)).await?;
        Ok(resp.json().await?)
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let resp = self
            .send(self.request(Method::POST, path).json(body))
            .await?;
        Ok(resp.json().await?)
    }

    /// POSTs without a body.
    pub async fn post_empty<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self.send(self.request(Method::POST, path)).await?;
        Ok(resp.json().await?)
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.send(self.request(Method::DELETE, path)).await?;
        Ok(())
    }

    /// POSTs `body` and yields each NDJSON line of the answer, as it arrives.
    pub async fn post_ndjson<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<impl Stream<Item = anyhow::Result<T>>> {
        let resp = self
            .send(self.request(Method::POST, path).json(body))
            .await?;
        Ok(ndjson_lines(resp.bytes_stream()))
    }

    /// POSTs a streamed body (e.g. a tar.gz being packed).
    pub async fn post_stream<S, T>(
        &self,
        path: &str,
        content_type: &str,
        body: S,
    ) -> anyhow::Result<T>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Sync + 'static,
        T: DeserializeOwned,
    {
        let req = self
            .request(Method::POST, path)
            .header("content-type", content_type)
            .body(reqwest::Body::wrap_stream(body));
        Ok(self.send(req).await?.json().await?)
    }
}

/// Splits a byte stream into JSON lines (chunks need not align with lines).
pub fn ndjson_lines<T: DeserializeOwned>(
    bytes: impl Stream<Item = reqwest::Result<Bytes>> + Unpin,
) -> impl Stream<Item = anyhow::Result<T>> {
    futures::stream::unfold(
        (bytes, Vec::<u8>::new(), false),
        |(mut s, mut buf, done)| async move {
            loop {
                if let Some(i) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=i).collect();
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let v =
                        serde_json::from_slice(&line).map_err(|e| anyhow!("bad NDJSON line: {e}"));
                    return Some((v, (s, buf, done)));
                }
                if done {
                    if buf.iter().all(u8::is_ascii_whitespace) {
                        return None;
                    }
                    let v = serde_json::from_slice(&std::mem::take(&mut buf))
                        .map_err(|e| anyhow!("bad NDJSON line: {e}"));
                    return Some((v, (s, buf, true)));
                }
                match s.next().await {
                    Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                    Some(Err(e)) => return Some((Err(anyhow!("stream: {e}")), (s, buf, true))),
                    None => return finish(s, buf),
                }
            }
        },
    )
}

type LineState<S> = (S, Vec<u8>, bool);

fn finish<S, T: DeserializeOwned>(s: S, buf: Vec<u8>) -> Option<(anyhow::Result<T>, LineState<S>)> {
    if buf.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let v = serde_json::from_slice(&buf).map_err(|e| anyhow!("bad NDJSON line: {e}"));
    Some((v, (s, Vec::new(), true)))
}

/// Packs `local` as a tar or tar.gz on a blocking thread, handing chunks over as they are
/// made (nothing is staged on disk or held whole in memory). A directory keeps its name
/// as the top entry, like `cp -r`.
pub fn pack_archive(
    local: PathBuf,
    format: ArchiveFormat,
) -> anyhow::Result<impl futures::Stream<Item = std::io::Result<Bytes>> + Send + Sync + 'static> {
    let meta = std::fs::metadata(&local).with_context(|| format!("reading {}", local.display()))?;
    let name = local
        .canonicalize()?
        .file_name()
        .map(|n| n.to_owned())
        .context("cannot upload /")?;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
    std::thread::spawn(move || {
        let w = std::io::BufWriter::with_capacity(256 * 1024, ChannelWriter(tx.clone()));
        let res = match format {
            ArchiveFormat::TarGz => (|| {
                let gz = flate2::write::GzEncoder::new(w, flate2::Compression::fast());
                let mut b = tar::Builder::new(gz);
                append_local(&mut b, &local, &name, meta.is_dir())?;
                b.into_inner()?.finish()?.flush()
            })(),
            ArchiveFormat::Tar => (|| {
                let mut b = tar::Builder::new(w);
                append_local(&mut b, &local, &name, meta.is_dir())?;
                b.into_inner()?.flush()
            })(),
        };
        if let Err(e) = res {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let rx = std::sync::Mutex::new(rx);
    Ok(futures::stream::poll_fn(move |cx| {
        rx.lock().expect("upload channel poisoned").poll_recv(cx)
    }))
}

/// `local` into `b` as `name` (a directory with everything under it).
fn append_local<W: Write>(
    b: &mut tar::Builder<W>,
    local: &std::path::Path,
    name: &std::ffi::OsStr,
    is_dir: bool,
) -> std::io::Result<()> {
    if is_dir {
        b.append_dir_all(name, local)
    } else {
        b.append_path_with_name(local, name)
    }
}

struct ChannelWriter(tokio::sync::mpsc::Sender<std::io::Result<Bytes>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::other("upload aborted"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Percent-encodes a query value (paths may hold spaces, `&`, `#`).
pub fn query_escape(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
