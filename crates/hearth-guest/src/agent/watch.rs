//! `GET /files/watch?path=P[&recursive=true]`: NDJSON [`hearth_proto::WatchEvent`]s as
//! inotify reports them, until the client hangs up or the directory is deleted.
//!
//! The response headers go out only once the watches are in place, so anything a
//! client does after they arrive is reported. With `recursive`, directories that appear
//! later are watched as they appear, and what they already hold by then is reported as
//! `create` events (it was made before their watch existed).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use bytes::Bytes;
use hearth_proto::{WatchEvent, WatchEventKind, WatchQuery};
use http::Response;
use hyper::body::Incoming;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::http::{self as h, Body};
use super::{client_gone, Result, State};
use crate::procs::async_fd;
use crate::workspace::events::Watch;
use crate::workspace::watch::{self, Added};
use crate::workspace::{self as ws, UserThreads, Workspace};

pub async fn handle(state: &State, req: hyper::Request<Incoming>) -> Result<Response<Body>> {
    let mut cancel = client_gone(&req);
    let q: WatchQuery = h::query(&req)?;
    let p = ws::parse(q.path.as_deref().unwrap_or(hearth_proto::WORKSPACE))?;
    let (workspace, target) = (state.workspace.clone(), p.clone());
    let (fd, added) = state
        .users
        .run(move || watch::start(&workspace, &target, q.recursive))
        .await?;
    let fd = Arc::new(async_fd(fd).map_err(|e| ws::FsError::from_io(&p, e))?);
    let mut w = Watch::new(p.to_string(), q.recursive, &added);
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(16);
    let users = state.users.clone();
    let workspace = state.workspace.clone();
    tokio::spawn(async move {
        let gone = async {
            match &mut cancel {
                Some(rx) => drop(rx.wait_for(|gone| *gone).await),
                None => std::future::pending().await,
            }
        };
        tokio::pin!(gone);
        if added.full && !send(&tx, &[overflow(&w)]).await {
            return;
        }
        loop {
            let batch = tokio::select! {
                b = next_batch(&fd) => b,
                _ = &mut gone => return,
                _ = tx.closed() => return,
            };
            let Ok(batch) = batch else { return };
            let t = w.translate(&batch);
            for wd in &t.removed {
                let _ = rustix::fs::inotify::remove_watch(fd.get_ref(), *wd);
            }
            let mut events = t.events;
            for dir in t.new_dirs {
                let added = add_new(&users, &fd, &workspace, dir, w.watched()).await;
                w.insert(&added);
                events.extend(added.found);
                if added.full {
                    events.push(overflow(&w));
                }
            }
            if !send(&tx, &events).await || t.ended {
                return;
            }
        }
    });
    Ok(h::streaming("application/x-ndjson", rx))
}

async fn next_batch(fd: &AsyncFd<OwnedFd>) -> std::io::Result<Vec<watch::RawEvent>> {
    loop {
        let mut ready = fd.readable().await?;
        let batch = watch::read_events(fd.get_ref().as_fd())?;
        ready.clear_ready();
        if !batch.is_empty() {
            return Ok(batch);
        }
    }
}

async fn add_new(
    users: &UserThreads,
    fd: &Arc<AsyncFd<OwnedFd>>,
    workspace: &Arc<Workspace>,
    dir: String,
    watched: usize,
) -> Added {
    let (fd, workspace) = (fd.clone(), workspace.clone());
    users
        .run(move || {
            Ok(watch::add_new(
                fd.get_ref().as_fd(),
                &workspace,
                &dir,
                watched,
            ))
        })
        .await
        .unwrap_or_default()
}

fn overflow(w: &Watch) -> WatchEvent {
    WatchEvent {
        kind: WatchEventKind::Overflow,
        path: w.root().to_string(),
        from: None,
    }
}

/// Sends `events` as NDJSON lines in one chunk; false once the client is gone.
async fn send(tx: &mpsc::Sender<std::io::Result<Bytes>>, events: &[WatchEvent]) -> bool {
    if events.is_empty() {
        return true;
    }
    let mut out = Vec::new();
    for e in events {
        serde_json::to_writer(&mut out, e).expect("events serialise");
        out.push(b'\n');
    }
    tx.send(Ok(Bytes::from(out))).await.is_ok()
}
