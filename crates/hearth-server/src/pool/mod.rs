//! Warm pools: booted, idle VMs kept per spec (image, vcpus, memory_mib), so a
//! `POST /v1/vms` that matches one is answered without a boot.
//!
//! - A pool VM is fresh: booted for the pool, never given to anyone, its overlay new. A
//!   claim takes it out of the pool for good; it then lives and dies like any VM (its
//!   owner destroys it). Nothing is ever returned to a pool.
//! - Until claimed a pool VM has no row in the store; its state dir (`vms/ID/`) holds
//!   [`MARKER`], which says so. A claim writes the row first and removes the marker
//!   second, so after a crash a VM is either the user's (a row) or the pool's (the
//!   marker): [`Pool::adopt`], called by reconciliation, takes marked VMs that still run
//!   and match a wanted spec back into the pool, and destroys the rest.
//! - The pool refills in the background ([`run`]): at most half the boot slots
//!   (`max_concurrent_boots`, at least one) boot pool VMs at a time, pool VMs count
//!   against `max_vms` (a create that needs room evicts one), and a spec whose boots fail
//!   backs off instead of retrying in a loop.
//! - Pool VMs have no NIC: a running VMM cannot be moved into a network namespace and
//!   `-M microvm` has no hotplug, so networked creates always boot cold.

mod config;
mod refill;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use hearth_api::pool::PoolSpec;
use hearth_vmm::VmHandle;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

pub use config::{PoolConfig, SpecConfig};
pub use refill::run;

use crate::owner::remove_vm_files;
use crate::AppState;

/// File in a pool VM's state dir: its [`SpecKey`]. Gone once the VM is claimed.
pub const MARKER: &str = "pool.json";

/// What makes two VMs interchangeable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecKey {
    pub image_id: String,
    pub vcpus: u8,
    pub memory_mib: u32,
}

/// A booted, never used VM.
pub struct Warm {
    pub id: String,
    pub handle: VmHandle,
    pub boot_ms: i64,
}

struct Entry {
    /// As configured: image name (`None`: the default image), vcpus, memory.
    image: Option<String>,
    vcpus: u8,
    memory_mib: u32,
    target: u32,
    /// The image resolved at the last refill; `None` while it cannot be (no such image).
    key: Option<SpecKey>,
    image_name: String,
    ready: VecDeque<Warm>,
    booting: u32,
    failures: u32,
    retry_at: Option<Instant>,
}

#[derive(Default)]
pub struct Pool {
    entries: Mutex<Vec<Entry>>,
    wake: Notify,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Pool {
    pub fn new(cfg: &PoolConfig, defaults: &crate::config::Defaults) -> Pool {
        let default = SpecConfig {
            image: None,
            vcpus: None,
            memory_mib: None,
            size: cfg.size,
        };
        let entries = std::iter::once(&default)
            .chain(&cfg.spec)
            .filter(|s| s.size > 0)
            .map(|s| Entry {
                image: s.image.clone(),
                vcpus: s.vcpus.unwrap_or(defaults.vcpus),
                memory_mib: s.memory_mib.unwrap_or(defaults.memory_mib),
                target: s.size,
                key: None,
                image_name: s.image.clone().unwrap_or_default(),
                ready: VecDeque::new(),
                booting: 0,
                failures: 0,
                retry_at: None,
            })
            .collect();
        Pool {
            entries: Mutex::new(entries),
            ..Default::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().expect("pool poisoned")
    }

    /// Takes a warm VM of `key`, if one is ready (and still alive). Counts a hit or miss.
    pub fn claim(&self, key: &SpecKey) -> Option<Warm> {
        let mut dead = vec![];
        let got = {
            let mut entries = self.lock();
            let entry = entries.iter_mut().find(|e| e.key.as_ref() == Some(key));
            let mut got = None;
            if let Some(e) = entry {
                while let Some(w) = e.ready.pop_front() {
                    if w.handle.is_alive() {
                        got = Some(w);
                        break;
                    }
                    dead.push(w);
                }
            }
            got
        };
        for w in dead {
            tracing::warn!(vm = %w.id, "a warm VM died in the pool");
            tokio::spawn(destroy(w));
        }
        let counter = if got.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
        got
    }

    /// Gives a claimed VM back for destruction (the claim failed before the user saw it).
    pub fn discard(&self, w: Warm) {
        tokio::spawn(destroy(w));
        self.wake.notify_one();
    }

    /// Destroys one ready VM to make room for a create; false if there was none.
    pub fn evict_one(&self) -> bool {
        let victim = self.lock().iter_mut().find_map(|e| e.ready.pop_back());
        match victim {
            Some(w) => {
                tracing::info!(vm = %w.id, "evicting a warm VM to make room");
                // Synchronously gone from the count; its processes go in the background.
                tokio::spawn(destroy(w));
                true
            }
            None => false,
        }
    }

    /// Warm VMs ready or booting: they count against `max_vms`.
    pub fn total(&self) -> u32 {
        self.lock()
            .iter()
            .map(|e| e.ready.len() as u32 + e.booting)
            .sum()
    }

    pub fn status(&self) -> Vec<PoolSpec> {
        self.lock()
            .iter()
            .map(|e| PoolSpec {
                image: e.image_name.clone(),
                vcpus: e.vcpus,
                memory_mib: e.memory_mib,
                target: e.target,
                ready: e.ready.len() as u32,
                booting: e.booting,
            })
            .collect()
    }

    /// (hits, misses) of creates that could have used a pool.
    pub fn claims(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// Whether any spec is configured (creates of other specs then count no miss).
    pub fn wants(&self, key: &SpecKey) -> bool {
        self.lock().iter().any(|e| e.key.as_ref() == Some(key))
    }

    /// Reconciliation found the pool VM in `dir` (it has a [`MARKER`]): keep it if it runs
    /// and a spec wants it, else destroy it. Call before [`run`] starts.
    pub async fn adopt(&self, state: &AppState, dir: &Path) {
        let handle = VmHandle::adopt(dir).ok();
        let key: Option<SpecKey> = std::fs::read(dir.join(MARKER))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let (Some(h), Some(key)) = (&handle, &key) {
            if h.is_alive() {
                resolve_all(state, self).await;
                let mut entries = self.lock();
                let room = entries
                    .iter_mut()
                    .find(|e| e.key.as_ref() == Some(key) && (e.ready.len() as u32) < e.target);
                if let Some(e) = room {
                    tracing::info!(vm = %h.id, "warm VM re-adopted into the pool");
                    e.ready.push_back(Warm {
                        id: h.id.clone(),
                        handle: h.clone(),
                        boot_ms: 0,
                    });
                    return;
                }
            }
        }
        tracing::info!(dir = %dir.display(), "removing a warm VM no pool wants");
        remove_vm_files(handle, dir).await;
    }
}

pub(crate) async fn destroy(w: Warm) {
    let dir = w.handle.state_dir.clone();
    remove_vm_files(Some(w.handle), &dir).await;
}

/// Resolves every entry's image (the default image may have changed), dropping ready
/// VMs of an image no longer meant.
pub(crate) async fn resolve_all(state: &AppState, pool: &Pool) {
    let wanted: Vec<Option<String>> = pool.lock().iter().map(|e| e.image.clone()).collect();
    let mut resolved = Vec::with_capacity(wanted.len());
    for name in wanted {
        let image = match &name {
            Some(n) => state.store.image(n).await.ok(),
            None => state.store.default_image().await.ok().flatten(),
        };
        resolved.push(image.filter(|i| i.ready));
    }
    let mut stale = vec![];
    for (e, image) in pool.lock().iter_mut().zip(resolved) {
        let key = image.as_ref().map(|i| SpecKey {
            image_id: i.id.clone(),
            vcpus: e.vcpus,
            memory_mib: e.memory_mib,
        });
        if key != e.key {
            stale.extend(e.ready.drain(..));
            e.key = key;
        }
        if let Some(i) = image {
            e.image_name = i.name;
        }
    }
    for w in stale {
        tokio::spawn(destroy(w));
    }
}
