//! In-process checks of the `network` request field and the address store: the real router
//! and a real SQLite file, no VM and no host networking (every case here is refused before
//! anything touches the host, or is a store rule).

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use hearth_server::models::{vm_network, VmRecord, VmState};

use serde_json::json;
use support::inproc::env;

#[tokio::test]
async fn bad_network_requests_name_the_entry() {
    let e = env().await;
    let st = &e.state;
    let cases = [
        (
            json!({"outbound": true, "allow": ["10.0.0.1/8"]}),
            "10.0.0.1/8",
        ),
        (
            json!({"outbound": true, "allow": ["1.2.3.4:0"]}),
            "1.2.3.4:0",
        ),
        (
            json!({"outbound": true, "allow": ["example.com"]}),
            "needs a port",
        ),
        (
            json!({"outbound": true, "allow": ["169.254.169.254"]}),
            "always denied",
        ),
        (json!({"outbound": true, "allow": ["2001:db8::1"]}), "IPv6"),
        (json!({"outbound": true, "allow": ["a_b:80"]}), "a_b"),
        (json!({"outbound": false, "allow": ["1.2.3.4"]}), "outbound"),
    ];
    for (net, says) in cases {
        for (uri, body) in [
            ("/v1/vms", json!({"network": net})),
            (
                "/v1/jobs",
                json!({"language": "sh", "code": "true", "network": net}),
            ),
        ] {
            let (s, v) = e.call("POST", uri, Some(body)).await;
            assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{uri} {net}: {v}");
            let msg = v["error"]["message"].as_str().unwrap();
            assert!(msg.contains(says), "{uri} {net}: {msg}");
        }
    }
    // Unknown fields are refused, not ignored (a typo must not silently mean "no NIC").
    let (s, v) = e
        .call(
            "POST",
            "/v1/vms",
            Some(json!({"network": {"outbund": true}})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    // Nothing was recorded.
    assert!(st.store.list_vms(&[]).await.unwrap().is_empty());
}

fn row(subnet: Option<&str>) -> VmRecord {
    let mut vm = support::inproc::vm_record(VmState::Running, "img");
    vm.network = Some(vm_network(
        vec!["1.2.3.4:80".into()],
        subnet.map(String::from),
    ));
    vm
}

#[tokio::test]
async fn one_address_block_per_vm_and_freed_when_dead() {
    let e = env().await;
    let st = &e.state;
    let a = row(Some("172.30.0.0/29"));
    st.store.insert_vm(&a).await.unwrap();
    let err = st.store.insert_vm(&row(Some("172.30.0.0/29"))).await;
    assert!(
        matches!(err, Err(hearth_server::AppError::Conflict(_))),
        "{err:?}"
    );
    // Many VMs without a block are fine.
    st.store.insert_vm(&row(None)).await.unwrap();
    st.store.insert_vm(&row(None)).await.unwrap();

    let got = st.store.vm(&a.id).await.unwrap();
    let n = got.vm.network.unwrap();
    assert_eq!(n.allow, ["1.2.3.4:80"]);
    assert_eq!(n.address.as_deref(), Some("172.30.0.2"));

    // A running VM keeps its block; a deleted one gives it back.
    st.store.release_subnet(&a.id).await.unwrap();
    assert_eq!(st.store.used_subnets().await.unwrap().len(), 1);
    st.store
        .set_vm_state(&a.id, VmState::Deleted, None)
        .await
        .unwrap();
    st.store.release_subnet(&a.id).await.unwrap();
    assert!(st.store.used_subnets().await.unwrap().is_empty());
    st.store
        .insert_vm(&row(Some("172.30.0.0/29")))
        .await
        .unwrap();
}

#[tokio::test]
async fn openapi_documents_the_network_fields_and_routes() {
    let e = env().await;
    let (_, doc) = e
        .send(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await;
    for schema in ["NetworkSpec", "VmNetwork", "FirewallView"] {
        assert!(
            doc["components"]["schemas"].get(schema).is_some(),
            "{schema} missing"
        );
    }
    let paths = &doc["paths"];
    assert!(paths["/v1/vms/{id}/firewall"].get("get").is_some());
    assert!(paths["/v1/vms/{id}/firewall/allowlist"]
        .get("post")
        .is_some());
    let create = doc["components"]["schemas"]["CreateVm"].to_string();
    assert!(create.contains("network"), "{create}");
}
