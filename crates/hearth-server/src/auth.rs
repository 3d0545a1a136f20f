//! API keys: 32 random bytes shown once, stored as sha256; checked against an in-memory
//! copy of the hashes with a constant-time comparison so a request costs no database read
//! and no timing hint about how much of a key matched.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};

use crate::error::{AppError, Result};
use crate::AppState;

/// Keys look like `hk_<64 hex>`; the prefix makes leaked keys easy to grep for.
const PREFIX: &str = "hk_";

pub fn new_key() -> Result<String> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| AppError::Internal(format!("no randomness: {e}")))?;
    Ok(format!("{PREFIX}{}", hex::encode(raw)))
}

pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    // Fold every byte so the time does not depend on where the first difference is.
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The hashes of every valid key, refreshed from the store after each change.
#[derive(Default)]
pub struct KeyCache {
    hashes: std::sync::RwLock<Vec<(String, [u8; 32])>>,
}

impl KeyCache {
    pub async fn reload(&self, store: &crate::store::Store) -> Result<()> {
        let mut out = Vec::new();
        for (id, h) in store.key_hashes().await? {
            let mut buf = [0u8; 32];
            if hex::decode_to_slice(&h, &mut buf).is_ok() {
                out.push((id, buf));
            }
        }
        *self.hashes.write().expect("key cache poisoned") = out;
        Ok(())
    }

    /// The id of the matching key. Compares against every key, match or not.
    pub fn check(&self, key: &str) -> Option<String> {
        let h = hash_key(key);
        let mut found = None;
        for (id, stored) in self.hashes.read().expect("key cache poisoned").iter() {
            if ct_eq(&h, stored) {
                found = Some(id.clone());
            }
        }
        found
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.read().expect("key cache poisoned").is_empty()
    }
}

/// Creates a key, stores its hash and returns its record and the key itself.
pub async fn create_key(state: &AppState, name: &str) -> Result<(crate::models::Key, String)> {
    let key = new_key()?;
    let id = uuid::Uuid::new_v4().to_string();
    let rec = state
        .store
        .insert_key(&id, name, &hex::encode(hash_key(&key)))
        .await?;
    state.keys.reload(&state.store).await?;
    Ok((rec, key))
}

/// First start: no key at all means nobody could use the API, so make one and leave it
/// in `admin.key` (0600) for the operator and the local CLI.
pub async fn bootstrap_admin_key(state: &AppState, path: &Path) -> Result<()> {
    if !state.keys.is_empty() {
        return Ok(());
    }
    let (_, key) = create_key(state, "admin").await?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| AppError::io(format!("writing {}", path.display()), e))?;
    f.write_all(format!("{key}\n").as_bytes())
        .map_err(|e| AppError::io(format!("writing {}", path.display()), e))?;
    tracing::warn!(path = %path.display(), "no API key existed: created an admin key");
    Ok(())
}

/// Reads the key from `Authorization: Bearer KEY` or `X-API-Key: KEY`.
fn presented_key(req: &Request) -> Option<&str> {
    let h = req.headers();
    if let Some(v) = h.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    let v = h.get("authorization")?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// The id of the key a request was let in with (a request extension).
#[derive(Debug, Clone)]
pub struct KeyId(pub String);

pub async fn require_key(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> std::result::Result<Response, AppError> {
    let key = presented_key(&req).ok_or_else(|| {
        AppError::Unauthorized(
            "missing API key: send `Authorization: Bearer KEY` or `X-API-Key: KEY`".into(),
        )
    })?;
    let id = state
        .keys
        .check(key)
        .ok_or_else(|| AppError::Unauthorized("invalid API key".into()))?;
    req.extensions_mut().insert(KeyId(id));
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_hash_compare() {
        let a = new_key().unwrap();
        let b = new_key().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), PREFIX.len() + 64);
        assert!(ct_eq(&hash_key(&a), &hash_key(&a)));
        assert!(!ct_eq(&hash_key(&a), &hash_key(&b)));
    }
}
