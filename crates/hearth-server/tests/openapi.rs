//! The OpenAPI document is part of the contract: it is compared to the committed
//! `crates/hearth-server/openapi.json`, so every wire change shows up as a reviewable diff
//! (and SDKs are generated from that file). After a deliberate change:
//!
//! ```sh
//! HEARTH_BLESS=1 cargo test -p hearth-server --test openapi
//! ```

mod support;

use std::path::Path;

use axum::body::Body;
use axum::http::Request;
use hearth_api::Limits;
use serde_json::Value;

fn snapshot_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json")
}

fn render(doc: &Value) -> String {
    serde_json::to_string_pretty(doc).unwrap() + "\n"
}

#[test]
fn the_document_matches_the_committed_snapshot() {
    let doc = hearth_server::routes::openapi::document(&Limits::default());
    let now = render(&doc);
    let path = snapshot_path();
    if std::env::var_os("HEARTH_BLESS").is_some_and(|v| v != "0") {
        std::fs::write(&path, &now).unwrap();
        eprintln!("wrote {}", path.display());
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed == now {
        return;
    }
    let (old, new): (Vec<&str>, Vec<&str>) = (committed.lines().collect(), now.lines().collect());
    let first = old
        .iter()
        .zip(&new)
        .position(|(a, b)| a != b)
        .unwrap_or(old.len().min(new.len()));
    let from = first.saturating_sub(3);
    let show = |l: &[&str]| l[from.min(l.len())..(first + 8).min(l.len())].join("\n");
    panic!(
        "the OpenAPI document differs from {} from line {}:\n--- committed\n{}\n+++ generated\n{}\n\n\
         If the change is intended: HEARTH_BLESS=1 cargo test -p hearth-server --test openapi",
        path.display(),
        first + 1,
        show(&old),
        show(&new),
    );
}

/// What a server serves is the snapshot's document with its own limits in it.
#[tokio::test]
async fn a_server_serves_its_own_limits() {
    let e = support::inproc::env_with(|c| {
        c.limits.max_vcpus = 2;
        c.limits.max_timeout_ms = 5000;
        c.networking = false;
    })
    .await;
    let (_, doc) = e
        .send(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await;
    let s = &doc["components"]["schemas"];
    assert_eq!(s["CreateVm"]["properties"]["vcpus"]["maximum"], 2);
    assert_eq!(
        s["ExecRequest"]["properties"]["timeout_ms"]["maximum"],
        5000
    );
    assert_eq!(s["JobParams"]["properties"]["timeout_s"]["maximum"], 5);
    assert_eq!(s["NetworkSpec"]["properties"]["outbound"]["const"], false);
    let default = hearth_server::routes::openapi::document(&Limits::default());
    assert_eq!(doc["paths"], default["paths"], "only schema bounds differ");
}

/// Every operation documents the answers every route can give, and each create links to
/// every route that takes the id it returns.
#[test]
fn shared_answers_and_links_are_documented() {
    let doc = hearth_server::routes::openapi::document(&Limits::default());
    let mut ops = std::collections::BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let r = op["responses"].as_object().unwrap();
            assert!(r.contains_key("5XX"), "{method} {path}: no 5XX");
            if path != "/healthz" {
                assert!(r.contains_key("401"), "{method} {path}: no 401");
            }
            ops.insert(
                op["operationId"].as_str().unwrap().to_string(),
                path.clone(),
            );
        }
    }
    let links_of = |path: &str| -> Vec<String> {
        doc["paths"][path]["post"]["responses"]["201"]["links"]
            .as_object()
            .unwrap()
            .values()
            .map(|l| l["operationId"].as_str().unwrap().to_string())
            .collect()
    };
    let vm_links = links_of("/v1/vms");
    // A process's routes also need its pid, which only starting it gives.
    let process_links = links_of("/v1/vms/{id}/processes");
    for (op, path) in &ops {
        let (from, linked) = if path.starts_with("/v1/vms/{id}/processes/{pid}") {
            ("POST /v1/vms/{id}/processes", &process_links)
        } else if path.starts_with("/v1/vms/{id}") {
            ("POST /v1/vms", &vm_links)
        } else {
            continue;
        };
        assert!(linked.contains(op), "{from} does not link to {op}");
    }
    for op in vm_links.iter().chain(&process_links) {
        assert!(ops.contains_key(op), "a link names no operation: {op}");
    }
}
