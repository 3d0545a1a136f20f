//! HTTP behaviour of the agent: health, error bodies and statuses, body limits, and the
//! firewall endpoint (in a network namespace of its own, never the host's).

mod support;

use std::io::{Read, Write};

use serde_json::json;
use support::{Agent, Options};

#[tokio::test]
async fn health_and_error_statuses() {
    let a = Agent::start();
    let (s, v) = a.json("GET", "/health", json!(null)).await;
    assert_eq!(s, 200);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));

    let (s, b) = a.request("POST", "/exec", "{not json").await;
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("bad_request")));
    let (s, v) = a
        .json("POST", "/exec", json!({"cmd": "x", "bogus": 1}))
        .await;
    assert_eq!(s, 400, "unknown fields: {v}");
    let (s, v) = a.json("POST", "/exec", json!({"cmd": ""})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("invalid_request"))
    );
    let (s, _) = a
        .json("POST", "/exec", json!({"cmd": "x", "timeout_ms": u64::MAX}))
        .await;
    assert_eq!(s, 422);
    let (s, v) = a.json("GET", "/nope", json!(null)).await;
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("not_found")));
    let (s, v) = a.json("GET", "/exec", json!(null)).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    let (s, _) = a.json("POST", "/health", json!(null)).await;
    assert_eq!(s, 405);
    for body in [
        json!({"cmd": "echo", "args": ["a\0b"]}),
        json!({"cmd": "echo", "env": {"K": "v\0"}}),
        json!({"cmd": "ec\0ho"}),
    ] {
        let (s, v) = a.json("POST", "/exec", body.clone()).await;
        assert_eq!(s, 422, "{body}: {v}");
    }
    let (s, v) = a
        .json("POST", "/run-python", json!({"code": "1", "args": ["\0"]}))
        .await;
    assert_eq!(s, 422, "{v}");
}

#[test]
fn oversized_bodies_are_refused_before_reading() {
    let a = Agent::start();
    let mut s = std::os::unix::net::UnixStream::connect(&a.sock).unwrap();
    let declared = hearth_proto::MAX_JSON_BODY + 1;
    write!(
        s,
        "POST /exec HTTP/1.1\r\nHost: a\r\nContent-Length: {declared}\r\n\r\n{{"
    )
    .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("payload_too_large"), "{text}");

    // Chunked, undeclared length: cut off at the limit.
    let mut s = std::os::unix::net::UnixStream::connect(&a.sock).unwrap();
    write!(
        s,
        "POST /exec HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    let chunk = vec![b' '; 1 << 20];
    let mut got_413 = false;
    for _ in 0..20 {
        if write!(s, "{:x}\r\n", chunk.len()).is_err()
            || s.write_all(&chunk).is_err()
            || s.write_all(b"\r\n").is_err()
        {
            got_413 = true;
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n");
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 413") || got_413, "{text}");
}

#[tokio::test]
async fn firewall_rules_land_in_the_agents_netns() {
    let a = Agent::start_with(Options {
        new_netns: true,
        ..Default::default()
    });
    let (s, v) = a
        .json(
            "POST",
            "/firewall/allowlist",
            json!({"outbound": true, "allow": ["10.1.2.3/8", "not-a-cidr"]}),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not-a-cidr"));
    let (s, v) = a
        .json(
            "POST",
            "/firewall/allowlist",
            json!({"outbound": true, "allow": ["10.1.2.3/8", "2001:db8::/32"]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["allow"], json!(["10.0.0.0/8", "2001:db8::/32"]));
    let list = || {
        let out = std::process::Command::new("nsenter")
            .args([
                "-t",
                &a.pid().to_string(),
                "-n",
                "nft",
                "list",
                "table",
                "inet",
                "hearth_agent",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let rules = list();
    assert!(rules.contains("policy drop"), "{rules}");
    assert!(rules.contains("ip daddr 10.0.0.0/8 accept"), "{rules}");
    assert!(rules.contains("oifname \"lo\" accept"), "{rules}");

    // Loopback still works from user code under the rules; a closed outbound is refused.
    let (s, _) = a
        .json("POST", "/firewall/allowlist", json!({"outbound": false}))
        .await;
    assert_eq!(s, 200);
    assert!(!list().contains("10.0.0.0/8"));
    let up = std::process::Command::new("nsenter")
        .args([
            "-t",
            &a.pid().to_string(),
            "-n",
            "ip",
            "link",
            "set",
            "lo",
            "up",
        ])
        .status()
        .unwrap();
    assert!(up.success());
    let v = a
        .sh("python3 -c \"import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); c=socket.create_connection(s.getsockname()); print('lo-ok')\"")
        .await;
    assert_eq!(v["stdout"], "lo-ok\n", "{v}");

    // The host's own ruleset never gained the table.
    let host = std::process::Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&host.stdout).contains("hearth_agent"));
}
