//! The in-process side: the real router (`app()`) over a real SQLite file in a temp dir,
//! no server process and no VM, for validation and error-path tests.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use hearth_server::models::{Timestamp, Vm, VmRecord, VmState};
use hearth_server::{app, AppState, Config};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub struct Env {
    _dir: tempfile::TempDir,
    pub state: AppState,
    /// A valid API key.
    pub key: String,
}

/// An environment whose config `tweak` adjusts before the state is built.
pub async fn env_with(tweak: impl FnOnce(&mut Config)) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    tweak(&mut config);
    let state = AppState::new(config).await.unwrap();
    let (_, key) = hearth_server::auth::create_key(&state, "test")
        .await
        .unwrap();
    Env {
        _dir: dir,
        state,
        key,
    }
}

pub async fn env() -> Env {
    env_with(|_| {}).await
}

impl Env {
    pub fn app(&self) -> Router {
        app(self.state.clone())
    }

    /// A request builder carrying the key.
    pub fn req(&self, method: &str, uri: &str) -> axum::http::request::Builder {
        Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {}", self.key))
    }

    /// Status, body as JSON (a non-JSON body as a string value) and body as text.
    pub async fn send_full(&self, req: Request<Body>) -> (StatusCode, Value, String) {
        let resp = self.app().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let v = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(text.clone()));
        (status, v, text)
    }

    pub async fn send(&self, req: Request<Body>) -> (StatusCode, Value) {
        let (s, v, _) = self.send_full(req).await;
        (s, v)
    }

    /// An authenticated call with an optional JSON body.
    pub async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let b = self.req(method, uri);
        let req = match body {
            Some(v) => b
                .header("content-type", "application/json")
                .body(Body::from(v.to_string())),
            None => b.body(Body::empty()),
        };
        self.send(req.unwrap()).await
    }
}

/// A VM row with a fresh id and no processes behind it, for store and conflict checks.
pub fn vm_record(state: VmState, image_id: &str) -> VmRecord {
    VmRecord {
        image_id: image_id.into(),
        env: Default::default(),
        vm: Vm {
            id: uuid::Uuid::new_v4().to_string(),
            state,
            image: "img".into(),
            vcpus: 1,
            memory_mib: 256,
            vmm: None,
            accel: None,
            created_at: Timestamp::now(),
            ready_at: None,
            boot_ms: None,
            ttl_s: None,
            idle_timeout_s: None,
            expires_at: None,
            metadata: Default::default(),
            error: None,
            network: None,
        },
    }
}
