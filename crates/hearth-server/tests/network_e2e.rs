//! Networked VMs end to end: a real `hearth serve` whose `HEARTH_NET_UPLINK` is a namespace
//! this test made, with a fake internet behind it ([`net_support`]); real VMs from the
//! default image; commands in the guest through the API's `/exec`. All traffic stays inside
//! the test's namespaces. `--nocapture` prints the figures (FIGURES lines).

mod net_support;
mod support;

use std::time::Duration;

use net_support::server::{DataDir, Server};
use net_support::*;
use serde_json::{json, Value};

/// Interfaces other than loopback and the kernel's `sit0` (the agent's jail has no /sys).
const NICS: &str =
    "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | grep -vx -e lo -e sit0; true";

/// The banner of `addr:port` as the guest sees it, or "" when unreachable.
async fn probe(srv: &Server, vm: &str, addr: impl std::fmt::Display, port: u16) -> String {
    let cmd = format!("busybox nc -w 3 {addr} {port} </dev/null 2>/dev/null | head -n1");
    srv.sh(vm, &cmd).await.trim().to_string()
}

fn id(vm: &Value) -> String {
    vm["id"].as_str().unwrap().to_string()
}

/// Log lines without colour escapes (`ESC [ ... m`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Waits (teardown follows the state change) until no host object matches `what`
/// ("" = any object of the server's VMs); panics with what is left.
async fn wait_gone(world: &FakeNet, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left: Vec<String> = world
            .leftovers()
            .into_iter()
            .filter(|l| l.contains(what))
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left behind: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn networked_vms_through_the_api() {
    // Dropped last to first: server, then VM processes, then the namespaces.
    let world = FakeNet::new();
    let data = DataDir::new();
    let mut srv = Server::start(data.path(), &world.server_env());
    let open = json!({"network": {"outbound": true}});

    // Refusals that need the host's config: an entry inside the VM pool.
    let bad = json!({"network": {"outbound": true, "allow": ["172.30.0.0/24"]}});
    let (s, v) = srv.call("POST", "/v1/vms", Some(bad)).await;
    assert_eq!(s, 422, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("172.30.0.0/24"),
        "{v}"
    );

    // What network set-up adds to POST /v1/vms: median of three each, alternating.
    let (mut plain_t, mut net_t, mut plain, mut a) = (vec![], vec![], vec![], vec![]);
    for _ in 0..3 {
        let (vm, t) = srv.create_vm(json!({})).await;
        plain_t.push(t);
        plain.push(id(&vm));
        let (vm, t) = srv.create_vm(open.clone()).await;
        net_t.push(t);
        a.push(vm);
    }
    let extras: Vec<String> = plain[1..]
        .iter()
        .cloned()
        .chain(a[1..].iter().map(id))
        .collect();
    for x in &extras {
        srv.delete_vm(x).await;
    }
    let (plain, a) = (plain[0].clone(), a[0].clone());
    assert_eq!(a["network"]["allow"], json!([]), "{a}");
    let a_addr = a["network"]["address"].as_str().unwrap().to_string();
    let a = id(&a);

    // No network asked: no NIC at all.
    assert_eq!(srv.sh(&plain, NICS).await.trim(), "", "plain VM has a NIC");
    let (_, v) = srv.call("GET", &format!("/v1/vms/{plain}"), None).await;
    assert!(v.get("network").is_none(), "{v}");
    let (s, v) = srv
        .call("GET", &format!("/v1/vms/{plain}/firewall"), None)
        .await;
    assert_eq!((s, &v["outbound"]), (200, &json!(false)), "{v}");
    let path = format!("/v1/vms/{plain}/firewall/allowlist");
    let (s, v) = srv.call("POST", &path, Some(open["network"].clone())).await;
    assert_eq!(s, 409, "a NIC cannot be added to a running VM: {v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no network"),
        "{v}"
    );
    srv.delete_vm(&plain).await;

    // Open VM: the internet through NAT, never the metadata address or the host.
    assert_eq!(srv.sh(&a, NICS).await.trim(), "eth0");
    let banner = probe(&srv, &a, WEB, 80).await;
    assert!(
        banner.starts_with(&format!("{WEB}:80 {HOST_WAN}:")),
        "{banner:?}"
    );
    assert_eq!(
        probe(&srv, &a, METADATA, 80).await,
        "",
        "metadata reachable"
    );
    assert_eq!(probe(&srv, &a, HOST_WAN, 7000).await, "", "host reachable");

    // TCP throughput VM -> fake internet, measured by the receiving server.
    let mib = 32u64;
    srv.sh(
        &a,
        &format!(
            "python3 -c 'import socket; s = socket.create_connection((\"{OTHER}\", 7000)); \
             s.recv(128); b = bytes(1 << 16); [s.sendall(b) for _ in range({})]; s.close()'",
            mib * 16
        ),
    )
    .await;
    let transfers = world.transfers.lock().unwrap().clone();
    let (bytes, secs) = *transfers
        .iter()
        .find(|(b, _)| *b == mib << 20)
        .unwrap_or_else(|| panic!("{mib} MiB should have arrived: {transfers:?}"));

    // Allowlisted VM, made and changed with the CLI: only its entries (plus DNS).
    let web80 = format!("{WEB}:80");
    let (code, out, err) = srv.cli(&["vm", "create", "--outbound", "--allow", &web80]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&format!("allow {web80}")), "{err}");
    let b = out.trim().to_string();
    let (_, v) = srv.call("GET", &format!("/v1/vms/{b}"), None).await;
    let b_addr = v["network"]["address"].as_str().unwrap().to_string();
    assert_ne!(a_addr, b_addr, "two VMs with one address");
    assert!(probe(&srv, &b, WEB, 80)
        .await
        .starts_with(&format!("{WEB}:80")));
    assert_eq!(probe(&srv, &b, WEB, 443).await, "", "unlisted port");
    assert_eq!(probe(&srv, &b, OTHER, 80).await, "", "unlisted address");
    assert_eq!(
        probe(&srv, &b, METADATA, 80).await,
        "",
        "metadata reachable"
    );
    let dns = probe(&srv, &b, DNS, 53).await;
    assert!(dns.starts_with(&format!("{DNS}:53")), "resolver: {dns:?}");
    assert_eq!(probe(&srv, &b, WEB, 53).await, "", "port 53 elsewhere");
    let (s, fw) = srv
        .call("GET", &format!("/v1/vms/{b}/firewall"), None)
        .await;
    assert_eq!(s, 200, "{fw}");
    assert_eq!(fw["allow"], json!([web80]), "{fw}");
    assert!(
        fw["rules"].as_str().unwrap().contains(&WEB.to_string()),
        "{fw}"
    );
    let other80 = format!("{OTHER}:80");
    let (code, out, err) = srv.cli(&["vm", "firewall", &b, "--outbound", "--allow", &other80]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("allow:   {other80}")), "{out}");
    assert!(probe(&srv, &b, OTHER, 80)
        .await
        .starts_with(&format!("{OTHER}:80")));
    assert_eq!(
        probe(&srv, &b, WEB, 80).await,
        "",
        "old entry still allowed"
    );
    let (code, out, err) = srv.cli(&["vm", "firewall", &b]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&OTHER.to_string()) && out.contains("host rules:\n"),
        "{out}"
    );
    // The host rules themselves changed (the guest's own rules alone would pass the probes).
    let (_, fw) = srv
        .call("GET", &format!("/v1/vms/{b}/firewall"), None)
        .await;
    let rules = fw["rules"].as_str().unwrap();
    assert!(
        rules.contains(&format!("{OTHER}")) && !rules.contains(&format!("{WEB}")),
        "{rules}"
    );
    let bad = json!({"outbound": true, "allow": ["1.2.3.4:99999"]});
    let path = format!("/v1/vms/{b}/firewall/allowlist");
    let (s, v) = srv.call("POST", &path, Some(bad)).await;
    assert_eq!(s, 422, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1.2.3.4:99999"),
        "{v}"
    );

    // Delete: the host network goes and the address block is freed.
    srv.delete_vm(&b).await;
    let (_, v) = srv.call("GET", &format!("/v1/vms/{b}"), None).await;
    assert!(v["network"]["subnet"].is_null(), "{v}");
    wait_gone(&world, &b).await;

    // A job with an allowlist runs in a networked VM of its own.
    let job = json!({"language": "sh", "network": {"outbound": true, "allow": [web80]},
        "code": format!("busybox nc -w 3 {WEB} 80 </dev/null | head -n1")});
    let (s, v) = srv.call("POST", "/v1/jobs", Some(job)).await;
    assert_eq!(s, 202, "{v}");
    let job = v["job_id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let (_, j) = srv.call("GET", &format!("/v1/jobs/{job}"), None).await;
        if !matches!(j["status"].as_str(), Some("queued" | "running")) {
            assert_eq!(j["status"], "succeeded", "{j}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "job never ended: {j}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (_, logs) = srv.call("GET", &format!("/v1/jobs/{job}/logs"), None).await;
    assert!(
        logs.as_str().unwrap().starts_with(&format!("{WEB}:80 ")),
        "{logs}"
    );

    // Stop tears the network down; start sets it up again on the same addresses.
    let (s, v) = srv.call("POST", &format!("/v1/vms/{a}/stop"), None).await;
    assert_eq!(s, 200, "{v}");
    wait_gone(&world, "").await;
    let (s, v) = srv.call("POST", &format!("/v1/vms/{a}/start"), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["network"]["address"], a_addr.as_str(), "{v}");
    assert!(probe(&srv, &a, WEB, 80)
        .await
        .starts_with(&format!("{WEB}:80")));

    // SIGKILL the server, leave orphans behind; the restart removes them and keeps A's.
    srv.kill();
    let orphan = format!("{}-orphan", world.prefix);
    sh(&["ip", "netns", "add", &orphan]);
    let table = format!("{}_vm_orphan", world.prefix);
    sh(&[
        "ip",
        "netns",
        "exec",
        &world.host,
        "nft",
        "add",
        "table",
        "inet",
        &table,
    ]);
    let srv = Server::start(data.path(), &world.server_env());
    // Reconciliation runs before the server listens: no waiting here.
    let left = world.leftovers();
    assert!(!left.iter().any(|l| l.contains("orphan")), "{left:?}");
    assert!(
        probe(&srv, &a, WEB, 80)
            .await
            .starts_with(&format!("{WEB}:80")),
        "A lost its network"
    );

    srv.delete_vm(&a).await;
    wait_gone(&world, "").await;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!(
        "FIGURES create_ms plain={:?} networked={:?} median_plain={} median_networked={} load={}",
        plain_t.iter().map(Duration::as_millis).collect::<Vec<_>>(),
        net_t.iter().map(Duration::as_millis).collect::<Vec<_>>(),
        median(plain_t).as_millis(),
        median(net_t).as_millis(),
        load.trim()
    );
    // The server logs each set-up's own duration: the direct cost, without boot noise.
    let log = std::fs::read_to_string(data.path().join("server.log")).unwrap_or_default();
    let log = strip_ansi(&log);
    let setup_ms: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("VM network set up"))
        .filter_map(|l| l.split("setup_ms=").nth(1)?.split_whitespace().next())
        .collect();
    eprintln!("FIGURES net_setup_ms={setup_ms:?}");
    eprintln!(
        "FIGURES tcp_vm_to_internet_MiBps={:.1} ({bytes} bytes in {secs:.2} s)",
        bytes as f64 / 1048576.0 / secs.max(1e-6)
    );
}

/// A host that cannot network VMs (the uplink namespace is missing): networked creates get
/// a 503 whose reason is in the log under its request id; syntax errors are still 422;
/// plain VMs boot as ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_host_networking_only_networked_requests_fail() {
    let data = DataDir::new();
    let env = [
        ("HEARTH_NET_UPLINK", "nosuchuplinkns".to_string()),
        (
            "HEARTH_NET_PREFIX",
            format!("u{:05}", std::process::id() % 100_000),
        ),
    ];
    let srv = Server::start(data.path(), &env);
    let (s, v) = srv
        .call(
            "POST",
            "/v1/vms",
            Some(json!({"network": {"outbound": true}})),
        )
        .await;
    assert_eq!(s, 503, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot be set up"),
        "{v}"
    );
    // A 5xx tells the caller no host details: the reason is logged under the request id.
    let rid = v["error"]["request_id"]
        .as_str()
        .expect("5xx has a request id");
    let log = std::fs::read_to_string(data.path().join("server.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains(rid) && l.contains("nosuchuplinkns")),
        "no log line with {rid} and the reason"
    );
    let bad = json!({"network": {"outbound": true, "allow": ["example.com"]}});
    let (s, v) = srv.call("POST", "/v1/vms", Some(bad)).await;
    assert_eq!(s, 422, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("example.com"),
        "{v}"
    );
    let (vm, _) = srv.create_vm(json!({})).await;
    assert_eq!(srv.sh(&id(&vm), NICS).await.trim(), "");
    srv.delete_vm(&id(&vm)).await;
}
