//! Open HTTP/1.1 connections to one agent, kept for reuse.
//!
//! A new connection costs a hybrid-vsock `CONNECT` round trip through the VMM and a
//! guest `accept` before the request even starts; an open one costs nothing. The agent's
//! server keeps connections alive and never times them out, so they stay usable for the
//! life of the VM (or until the guest closes them, which hyper notices).
//!
//! A connection is handed out only when hyper says it is idle ([`SendRequest::is_ready`]):
//! one whose last response body is still being read by someone is skipped, and a closed
//! one is dropped. It goes back into the pool as soon as its response headers arrive;
//! hyper itself makes it idle again once that body has been read to its end, and closes
//! it if the body is dropped half-read or the request was cancelled.

use std::sync::{Arc, Mutex};

use hyper::client::conn::http1::SendRequest;

use crate::http::ReqBody;

/// Idle connections kept per agent; more concurrent calls open more, and those beyond
/// this are closed when done.
pub const MAX_IDLE: usize = 4;

/// The reusable connections of one agent; cheap to clone (clones share them).
#[derive(Debug, Clone, Default)]
pub struct Pool {
    conns: Arc<Mutex<Vec<SendRequest<ReqBody>>>>,
}

impl Pool {
    /// An idle connection, if one is open.
    pub fn checkout(&self) -> Option<SendRequest<ReqBody>> {
        let mut conns = self.conns.lock().expect("pool lock");
        conns.retain(|c| !c.is_closed());
        let idle = conns.iter().position(SendRequest::is_ready)?;
        Some(conns.swap_remove(idle))
    }

    /// Keeps `conn` for a later call (it may still be busy with a body being read).
    pub fn put(&self, conn: SendRequest<ReqBody>) {
        let mut conns = self.conns.lock().expect("pool lock");
        if !conn.is_closed() && conns.len() < MAX_IDLE {
            conns.push(conn);
        }
    }

    /// Connections currently kept (idle or finishing a response).
    pub fn len(&self) -> usize {
        let mut conns = self.conns.lock().expect("pool lock");
        conns.retain(|c| !c.is_closed());
        conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes every kept connection (hyper finishes a response still being read first).
    pub fn clear(&self) {
        self.conns.lock().expect("pool lock").clear();
    }
}
