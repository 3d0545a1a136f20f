//! In-process API tests: the real router, a real SQLite file in a temp dir, requests sent
//! with `tower::ServiceExt::oneshot`. Nothing here boots a VM; every path that would is
//! stopped by validation first (that is what these tests check).

mod support;

use std::os::unix::fs::PermissionsExt;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use hearth_server::models::VmState;
use hearth_server::{AppState, Config};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use support::inproc::{env, env_with, Env};

impl Env {
    /// Inserts a VM row directly (no processes): enough for limit and conflict checks.
    async fn vm_row(&self, state: VmState, image_id: &str) -> String {
        let vm = support::inproc::vm_record(state, image_id);
        let id = vm.id.clone();
        self.state.store.insert_vm(&vm).await.unwrap();
        id
    }

    /// An API image with small fake files (enough to be "ready"; never booted here).
    async fn ready_image(&self, name: &str) -> String {
        let (s, img) = self
            .call("POST", "/v1/images", Some(json!({"name": name})))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{img}");
        let id = img["id"].as_str().unwrap().to_string();
        for part in ["kernel", "rootfs"] {
            let req = self
                .req("PUT", &format!("/v1/images/{id}/{part}"))
                .body(Body::from(format!("fake {part}")))
                .unwrap();
            let (s, _) = self.send(req).await;
            assert_eq!(s, StatusCode::OK);
        }
        id
    }
}

fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn open_routes_need_no_key_and_v1_does() {
    let e = env().await;
    let (s, v) = e
        .send(Request::get("/healthz").body(Body::empty()).unwrap())
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["status"], "ok");
    let (s, _) = e
        .send(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await;
    assert_eq!(s, StatusCode::OK);
    for uri in ["/v1/vms", "/v1/images", "/v1/keys", "/metrics"] {
        let (s, v) = e.send(Request::get(uri).body(Body::empty()).unwrap()).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{uri}");
        assert_error(&v, "unauthorized");
        let bad = Request::get(uri)
            .header("authorization", "Bearer hk_nope")
            .body(Body::empty())
            .unwrap();
        let (s, v) = e.send(bad).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{uri}");
        assert_error(&v, "unauthorized");
    }
    // Both header forms work.
    let (s, _) = e.call("GET", "/v1/vms", None).await;
    assert_eq!(s, StatusCode::OK);
    let xk = Request::get("/v1/vms")
        .header("x-api-key", &e.key)
        .body(Body::empty())
        .unwrap();
    assert_eq!(e.send(xk).await.0, StatusCode::OK);
    let (s, text) = e.call("GET", "/metrics", None).await;
    assert_eq!(s, StatusCode::OK);
    let text = text.as_str().unwrap();
    assert!(text.contains("hearth_vms{state=\"running\"} 0"), "{text}");
    assert!(text.contains("hearth_http_requests_total"), "{text}");
    assert!(text.contains("hearth_vm_boot_seconds_count 0"), "{text}");
}

#[tokio::test]
async fn unknown_things_are_404_in_the_error_shape() {
    let e = env().await;
    for (m, uri, body) in [
        ("GET", "/v1/vms/nope", None),
        ("DELETE", "/v1/vms/nope", None),
        ("POST", "/v1/vms/nope/stop", None),
        ("POST", "/v1/vms/nope/start", None),
        ("POST", "/v1/vms/nope/exec", Some(json!({"cmd": "true"}))),
        ("POST", "/v1/vms/nope/run-ts", Some(json!({"code": "1"}))),
        ("GET", "/v1/vms/nope/files/download?path=/workspace", None),
        ("GET", "/v1/vms/nope/logs", None),
        ("GET", "/v1/vms/nope/history", None),
        ("DELETE", "/v1/images/nope", None),
        ("POST", "/v1/images/nope/default", None),
        ("DELETE", "/v1/keys/nope", None),
        ("GET", "/v1/no-such-route", None),
    ] {
        let (s, v) = e.call(m, uri, body).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{m} {uri}: {v}");
        assert_error(&v, "not_found");
    }
    let (s, v) = e.call("PATCH", "/v1/vms", None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_error(&v, "method_not_allowed");
}

#[tokio::test]
async fn malformed_bodies_are_400_422_413() {
    let e = env_with(|c| c.limits.max_json_body = 1024).await;
    let bad_json = e
        .req("POST", "/v1/vms")
        .header("content-type", "application/json")
        .body(Body::from("{not json"))
        .unwrap();
    let (s, v) = e.send(bad_json).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_error(&v, "bad_request");

    let no_ct = e.req("POST", "/v1/vms").body(Body::from("{}")).unwrap();
    let (s, v) = e.send(no_ct).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Content-Type"));

    let (s, v) = e.call("POST", "/v1/vms", Some(json!({"bogus": 1}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_error(&v, "invalid_request");
    assert!(v["error"]["message"].as_str().unwrap().contains("bogus"));

    let (s, v) = e
        .call("POST", "/v1/vms", Some(json!({"vcpus": "two"})))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

    let big = json!({"metadata": {"k": "x".repeat(4096)}});
    let (s, v) = e.call("POST", "/v1/vms", Some(big)).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_error(&v, "payload_too_large");

    let (s, v) = e.call("GET", "/v1/vms?state=sideways", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = e.call("GET", "/v1/vms?tail=x&bogus=1", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_error(&v, "bad_request");
}

#[tokio::test]
async fn create_vm_limits_are_named() {
    let e = env_with(|c| {
        c.limits.max_vcpus = 2;
        c.limits.max_memory_mib = 1024;
        c.limits.max_ttl_s = 60;
        c.limits.max_vms = 2;
    })
    .await;
    // No image at all: nothing to boot from.
    let (s, v) = e.call("POST", "/v1/vms", Some(json!({}))).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let img = e.ready_image("img").await;
    for (body, limit) in [
        (json!({"vcpus": 3}), "max_vcpus"),
        (json!({"vcpus": 0}), "max_vcpus"),
        (json!({"memory_mib": 4096}), "max_memory_mib"),
        (json!({"memory_mib": 16}), "max_memory_mib"),
        (json!({"ttl_s": 61}), "max_ttl_s"),
        (json!({"ttl_s": 0}), "max_ttl_s"),
    ] {
        let (s, v) = e.call("POST", "/v1/vms", Some(body.clone())).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(limit), "{body}: {msg}");
    }
    let (s, v) = e
        .call("POST", "/v1/vms", Some(json!({"env": {"A=B": "x"}})))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    // A named image that does not exist is a missing resource.
    let (s, v) = e
        .call("POST", "/v1/vms", Some(json!({"image": "missing"})))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_error(&v, "not_found");
    // Two live VMs fill max_vms = 2.
    e.vm_row(VmState::Running, &img).await;
    e.vm_row(VmState::Stopped, &img).await;
    e.vm_row(VmState::Deleted, &img).await; // does not count
    let (s, v) = e
        .call("POST", "/v1/vms", Some(json!({"image": "img"})))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("max_vms"));
}

#[tokio::test]
async fn boots_beyond_the_limit_are_429() {
    let e = env_with(|c| c.limits.max_concurrent_boots = 0).await;
    e.ready_image("img").await;
    let (s, v) = e
        .call("POST", "/v1/vms", Some(json!({"image": "img"})))
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_concurrent_boots"));
    // Refused before anything was written.
    let (_, list) = e.call("GET", "/v1/vms", None).await;
    assert_eq!(list["vms"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn vm_calls_on_a_vm_that_is_not_running_are_409() {
    let e = env_with(|c| c.limits.max_timeout_ms = 1000).await;
    let img = e.ready_image("img").await;
    let id = e.vm_row(VmState::Failed, &img).await;
    for (uri, body) in [
        ("exec", json!({"cmd": "true"})),
        ("run-python", json!({"code": "print(1)"})),
        ("firewall/allowlist", json!({"outbound": false})),
    ] {
        let (s, v) = e
            .call("POST", &format!("/v1/vms/{id}/{uri}"), Some(body))
            .await;
        assert_eq!(s, StatusCode::CONFLICT, "{uri}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains("failed"));
    }
    let (s, _) = e.call("POST", &format!("/v1/vms/{id}/stop"), None).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = e.call("POST", &format!("/v1/vms/{id}/start"), None).await;
    assert_eq!(s, StatusCode::CONFLICT);
    // Validation comes before the state check.
    let (s, v) = e
        .call(
            "POST",
            &format!("/v1/vms/{id}/exec"),
            Some(json!({"cmd": "x", "timeout_ms": 5000})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_timeout_ms"));
    let (s, _) = e
        .call(
            "POST",
            &format!("/v1/vms/{id}/exec"),
            Some(json!({"cmd": ""})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = e
        .call("POST", &format!("/v1/vms/{id}/run-ts"), Some(json!({})))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    // A failed VM can be deleted (204) once; then it is gone (404).
    let (s, _) = e.call("DELETE", &format!("/v1/vms/{id}"), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = e.call("DELETE", &format!("/v1/vms/{id}"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // A deleted VM's routes are gone; its record stays in the list.
    for sub in ["", "/history", "/logs?tail=5", "/firewall"] {
        let (s, v) = e.call("GET", &format!("/v1/vms/{id}{sub}"), None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{sub}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains("deleted"));
    }
    let (_, v) = e.call("GET", "/v1/vms?state=deleted", None).await;
    assert_eq!(v["vms"].as_array().unwrap().len(), 1);
    assert_eq!(v["vms"][0]["state"], "deleted");
    let (_, v) = e.call("GET", "/v1/vms?state=running", None).await;
    assert_eq!(v["vms"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn uploads_over_the_limit_are_413() {
    let e = env_with(|c| c.limits.max_upload_bytes = 10).await;
    let req = e
        .req("POST", "/v1/vms/nope/files/upload")
        .header("content-length", "11")
        .body(Body::from("01234567890"))
        .unwrap();
    let (s, v) = e.send(req).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_upload_bytes"));
}

#[tokio::test]
async fn images_lifecycle_and_conflicts() {
    let e = env_with(|c| c.limits.max_image_file_bytes = 64).await;
    let (s, v) = e
        .call("POST", "/v1/images", Some(json!({"name": "../evil"})))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let id = e.ready_image("mine").await;
    let (s, _) = e
        .call("POST", "/v1/images", Some(json!({"name": "mine"})))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (_, list) = e.call("GET", "/v1/images", None).await;
    let img = &list["images"][0];
    assert_eq!(img["name"], "mine");
    assert_eq!(img["ready"], true);
    let want = hex::encode(Sha256::digest(b"fake kernel"));
    assert_eq!(img["kernel_sha256"], want.as_str());
    let on_disk = std::fs::read(e.state.config.images_dir().join("mine/vmlinux")).unwrap();
    assert_eq!(on_disk, b"fake kernel");
    // Too large: refused, and the old file is untouched.
    let req = e
        .req("PUT", &format!("/v1/images/{id}/kernel"))
        .body(Body::from(vec![0u8; 65]))
        .unwrap();
    let (s, v) = e.send(req).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    let on_disk = std::fs::read(e.state.config.images_dir().join("mine/vmlinux")).unwrap();
    assert_eq!(on_disk, b"fake kernel");
    // Default by name.
    let (s, v) = e.call("POST", "/v1/images/mine/default", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["is_default"], true);
    // In use: 409 naming the VM; after the VM is deleted: 204 and the files are gone.
    let vm = e.vm_row(VmState::Stopped, &id).await;
    let (s, v) = e.call("DELETE", &format!("/v1/images/{id}"), None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains(&vm));
    e.state
        .store
        .set_vm_state(&vm, VmState::Deleted, None)
        .await
        .unwrap();
    let (s, _) = e.call("DELETE", &format!("/v1/images/{id}"), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(!e.state.config.images_dir().join("mine").exists());
}

#[tokio::test]
async fn keys_are_shown_once_and_revocable() {
    let e = env().await;
    let (s, v) = e
        .call("POST", "/v1/keys", Some(json!({"name": "ci"})))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (id, key) = (v["id"].as_str().unwrap(), v["key"].as_str().unwrap());
    let (_, list) = e.call("GET", "/v1/keys", None).await;
    assert!(!list.to_string().contains(key), "keys must never be listed");
    assert_eq!(list["keys"].as_array().unwrap().len(), 2);
    let with_new = |k: &str| {
        Request::get("/v1/vms")
            .header("authorization", format!("bearer {k}"))
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(e.send(with_new(key)).await.0, StatusCode::OK);
    // A key cannot revoke itself (nobody locks themselves out by mistake).
    let own = Request::delete(format!("/v1/keys/{id}"))
        .header("x-api-key", key)
        .body(Body::empty())
        .unwrap();
    let (s, v) = e.send(own).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_error(&v, "conflict");
    let (s, _) = e.call("DELETE", &format!("/v1/keys/{id}"), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(e.send(with_new(key)).await.0, StatusCode::UNAUTHORIZED);
    let (s, _) = e.call("POST", "/v1/keys", Some(json!({"name": ""}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    // Names are kept as given.
    let (s, v) = e
        .call("POST", "/v1/keys", Some(json!({"name": " ci "})))
        .await;
    assert_eq!((s, v["name"].as_str()), (StatusCode::CREATED, Some(" ci ")));
}

#[tokio::test]
async fn server_errors_carry_a_request_id_and_no_details() {
    let e = env().await;
    // Every answer carries its request id.
    let resp = e
        .app()
        .oneshot(e.req("GET", "/v1/vms").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"].len(), 32);
    // Make creating an image fail on our side: its directory cannot be made.
    let images = e.state.config.images_dir();
    std::fs::remove_dir_all(&images).unwrap();
    std::fs::write(&images, "not a directory").unwrap();
    let req = e
        .req("POST", "/v1/images")
        .header("content-type", "application/json")
        .body(Body::from(json!({"name": "img"}).to_string()))
        .unwrap();
    let resp = e.app().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let header = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_error(&v, "internal");
    assert_eq!(v["error"]["request_id"], header.as_str(), "{v}");
    assert_eq!(v["error"]["message"], "internal error", "{v}");
    let data_dir = e.state.config.data_dir.display().to_string();
    assert!(
        !v.to_string().contains(&data_dir),
        "no host paths in a 5xx: {v}"
    );
}

#[tokio::test]
async fn first_start_writes_an_admin_key_0600() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let path = config.admin_key_path();
    let state = AppState::new(config).await.unwrap();
    hearth_server::auth::bootstrap_admin_key(&state, &path)
        .await
        .unwrap();
    let key = std::fs::read_to_string(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(state.keys.check(key.trim()).is_some());
    // A second start keeps the existing key.
    hearth_server::auth::bootstrap_admin_key(&state, &path)
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), key);
    let stored: String = sqlx::query_scalar("SELECT key_hash FROM api_keys")
        .fetch_one(&state.store.pool)
        .await
        .unwrap();
    assert!(!stored.contains(key.trim()), "only the hash is stored");
}

#[tokio::test]
async fn reconcile_fails_dead_vms_and_removes_unknown_dirs() {
    let e = env().await;
    let img = e.ready_image("img").await;
    let running = e.vm_row(VmState::Running, &img).await;
    let creating = e.vm_row(VmState::Creating, &img).await;
    let deleted = e.vm_row(VmState::Deleted, &img).await;
    let vms = e.state.config.vms_dir();
    for d in [&running, &deleted, &"stray".to_string()] {
        std::fs::create_dir_all(vms.join(d)).unwrap();
        std::fs::write(vms.join(d).join("overlay.ext4"), b"x").unwrap();
    }
    hearth_server::reconcile::reconcile(&e.state).await.unwrap();
    for (id, want) in [
        (&running, "failed"),
        (&creating, "failed"),
        (&deleted, "deleted"),
    ] {
        assert_eq!(e.state.store.vm(id).await.unwrap().state.as_str(), want);
    }
    let left: Vec<_> = std::fs::read_dir(&vms).unwrap().collect();
    assert!(left.is_empty(), "leftover VM dirs: {left:?}");
}

#[tokio::test]
async fn builtin_and_built_images_register_on_start() {
    let e = env_with(|c| {
        c.kernel_path = Some("/nonexistent/vmlinux".into());
        c.base_rootfs_path = Some("/nonexistent/rootfs.ext4".into());
    })
    .await;
    let built = e.state.config.images_dir().join("default");
    std::fs::create_dir_all(&built).unwrap();
    std::fs::write(built.join("vmlinux"), b"k").unwrap();
    std::fs::write(built.join("rootfs.ext4"), b"r").unwrap();
    // Listing scans images/ (a build finished after start shows up), repeatedly: idempotent.
    hearth_server::images::register_on_start(&e.state)
        .await
        .unwrap();
    e.call("GET", "/v1/images", None).await;
    let (_, v) = e.call("GET", "/v1/images", None).await;
    let images = v["images"].as_array().unwrap();
    assert_eq!(images.len(), 2, "{v}");
    let default: Vec<_> = images.iter().filter(|i| i["is_default"] == true).collect();
    assert_eq!(default.len(), 1);
    assert_eq!(default[0]["name"], "default");
    // Deleting the built-in image sticks (it is registered on start only).
    let (s, _) = e.call("DELETE", "/v1/images/builtin", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, v) = e.call("GET", "/v1/images", None).await;
    assert_eq!(v["images"].as_array().unwrap().len(), 1, "{v}");
}

/// Every route in the OpenAPI document is routed (not the 404/405 fallback), and every
/// route the API promises is in the document.
#[tokio::test]
async fn openapi_covers_every_route() {
    let e = env().await;
    let (_, doc) = e
        .send(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await;
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            documented.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    for want in [
        "GET /healthz",
        "GET /metrics",
        "POST /v1/vms",
        "GET /v1/vms",
        "GET /v1/vms/{id}",
        "DELETE /v1/vms/{id}",
        "POST /v1/vms/{id}/stop",
        "POST /v1/vms/{id}/start",
        "POST /v1/vms/{id}/exec",
        "POST /v1/vms/{id}/run-ts",
        "POST /v1/vms/{id}/run-js",
        "POST /v1/vms/{id}/run-python",
        "POST /v1/vms/{id}/files/upload",
        "GET /v1/vms/{id}/files/download",
        "POST /v1/vms/{id}/firewall/allowlist",
        "GET /v1/vms/{id}/logs",
        "GET /v1/vms/{id}/history",
        "GET /v1/images",
        "POST /v1/images",
        "PUT /v1/images/{id}/kernel",
        "PUT /v1/images/{id}/rootfs",
        "POST /v1/images/{id}/default",
        "DELETE /v1/images/{id}",
        "POST /v1/keys",
        "GET /v1/keys",
        "DELETE /v1/keys/{id}",
    ] {
        assert!(
            documented.iter().any(|d| d == want),
            "{want} not in openapi.json"
        );
    }
    for d in &documented {
        let (method, path) = d.split_once(' ').unwrap();
        let uri = path.replace("{id}", "nope");
        let (s, v) = e.call(method, &uri, None).await;
        assert_ne!(
            s,
            StatusCode::METHOD_NOT_ALLOWED,
            "{d} is documented but not routed"
        );
        assert_ne!(
            v["error"]["message"], "no such route",
            "{d} is documented but not routed"
        );
    }
}
