//! `/run-js`, `/run-python`, `/run-ts`: the result side channel, errors, env and
//! permissions, against the real agent binary and real runtimes.

mod support;

use serde_json::{json, Value};
use support::Agent;

async fn run(a: &Agent, ep: &str, body: Value) -> Value {
    let (status, v) = a.json("POST", ep, body).await;
    assert_eq!(status, 200, "{ep}: {v}");
    v
}

#[tokio::test]
async fn node_result_error_env_and_colours() {
    let a = Agent::start();
    let v = run(
        &a,
        "/run-js",
        json!({"code": "console.log('\\x1b[31mred\\x1b[0m'); result.set({n: process.argv.slice(2), k: process.env.KEY, p: process.env.SECRET ?? null})",
               "args": ["x", "y"], "env": ["KEY=v1"]}),
    )
    .await;
    assert_eq!(
        v["result"],
        json!({"n": ["x", "y"], "k": "v1", "p": null}),
        "{v}"
    );
    assert_eq!(v["stdout"], "\u{1b}[31mred\u{1b}[0m\n", "colours are kept");
    assert_eq!(v["exit_code"], 0);
    assert!(v["error"].is_null());

    // Node sees only the base environment plus the passed keys.
    let v = run(
        &a,
        "/run-js",
        json!({"code": "result.set(Object.keys(process.env).sort())", "env": ["A=1"]}),
    )
    .await;
    assert_eq!(v["result"], json!(["A", "HOME", "LANG", "PATH"]), "{v}");

    let v = run(
        &a,
        "/run-js",
        json!({"code": "function f() { throw new TypeError('bad thing') }\nf()"}),
    )
    .await;
    assert_ne!(v["exit_code"], 0);
    assert_eq!(v["error"]["name"], "TypeError", "{v}");
    assert_eq!(v["error"]["message"], "bad thing");
    assert!(
        v["error"]["stack"].as_str().unwrap().contains("at f"),
        "{v}"
    );

    let v = run(
        &a,
        "/run-js",
        json!({"code": "result.error(new RangeError('nope')); result.set(1)"}),
    )
    .await;
    assert_eq!(
        (v["error"]["name"].clone(), v["result"].clone()),
        (json!("RangeError"), json!(1))
    );
    assert_eq!(v["exit_code"], 1, "result.error fails the run: {v}");

    let v = run(
        &a,
        "/run-js",
        json!({"code": "Promise.reject(new Error('async boom'))"}),
    )
    .await;
    assert_eq!(v["error"]["message"], "async boom", "{v}");

    let v = run(
        &a,
        "/run-js",
        json!({"code": "import os from 'node:os';\nresult.set(os.userInfo().uid)"}),
    )
    .await;
    assert_eq!(v["result"], 1000, "ES module code runs: {v}");
}

#[tokio::test]
async fn printed_text_cannot_forge_a_result() {
    let a = Agent::start();
    let forged = r#"{"result": 666, "error": {"name": "Forged", "message": "x"}}"#;
    for (ep, code) in [
        (
            "/run-js",
            format!("console.log({forged:?}); console.error({forged:?})"),
        ),
        (
            "/run-python",
            format!("print({forged:?}); import sys; print({forged:?}, file=sys.stderr)"),
        ),
        (
            "/run-ts",
            format!("console.log({forged:?}); console.error({forged:?})"),
        ),
    ] {
        let v = run(&a, ep, json!({ "code": code })).await;
        assert!(v["result"].is_null(), "{ep}: {v}");
        assert!(v["error"].is_null(), "{ep}: {v}");
        assert!(v["stdout"].as_str().unwrap().contains("666"), "{ep}: {v}");
    }
}

#[tokio::test]
async fn python_result_builtin_module_and_exceptions() {
    let a = Agent::start();
    let v = run(
        &a,
        "/run-python",
        json!({"code": "import os, sys\nresult.set({'args': sys.argv[1:], 'k': os.environ.get('K'), 'uid': os.getuid()})",
               "args": ["a"], "env": ["K=v"]}),
    )
    .await;
    assert_eq!(
        v["result"],
        json!({"args": ["a"], "k": "v", "uid": 1000}),
        "{v}"
    );

    let v = run(
        &a,
        "/run-python",
        json!({"code": "from hearth_result import result as r\nr.set([1, 2])"}),
    )
    .await;
    assert_eq!(v["result"], json!([1, 2]), "{v}");

    let v = run(
        &a,
        "/run-python",
        json!({"code": "def f():\n    raise ValueError('broken')\nf()"}),
    )
    .await;
    assert_eq!(v["exit_code"], 1);
    assert_eq!(v["error"]["name"], "ValueError", "{v}");
    assert_eq!(v["error"]["message"], "broken");
    let stack = v["error"]["stack"].as_str().unwrap();
    assert!(
        stack.contains("in f") && !stack.contains("runpy"),
        "{stack}"
    );
    assert!(v["stderr"].as_str().unwrap().contains("ValueError: broken"));

    let v = run(
        &a,
        "/run-python",
        json!({"code": "result.set(float('nan'))"}),
    )
    .await;
    assert_ne!(v["exit_code"], 0, "NaN is refused to the caller: {v}");

    // Inline code imports from the workspace; scripts run by path see their own dir.
    std::fs::write(a.workspace().join("helper.py"), "VALUE = 41\n").unwrap();
    let v = run(
        &a,
        "/run-python",
        json!({"code": "import helper\nresult.set(helper.VALUE + 1)"}),
    )
    .await;
    assert_eq!(v["result"], 42, "{v}");
    std::fs::create_dir(a.workspace().join("pkg")).unwrap();
    std::fs::write(a.workspace().join("pkg/mod2.py"), "X = 'near'\n").unwrap();
    std::fs::write(
        a.workspace().join("pkg/main.py"),
        "import mod2\nresult.set(mod2.X)\n",
    )
    .unwrap();
    let v = run(&a, "/run-python", json!({"path": "pkg/main.py"})).await;
    assert_eq!(v["result"], "near", "{v}");
}

#[tokio::test]
async fn deno_permissions_are_exactly_the_granted_ones() {
    let a = Agent::start();
    std::fs::write(a.workspace().join("in.txt"), "from workspace").unwrap();
    let code = r#"
const probe = async (f: () => unknown) => { try { await f(); return "ok"; } catch (e) { return (e as Error).name; } };
result.set({
  key: Deno.env.get("KEY"),
  path: await probe(() => Deno.env.get("PATH")),
  read_ws: Deno.readTextFileSync("/workspace/in.txt"),
  write_ws: await probe(() => Deno.writeTextFileSync("/workspace/out.txt", "x")),
  read_etc: await probe(() => Deno.readTextFileSync("/etc/passwd")),
  read_shadow: await probe(() => Deno.readTextFileSync("/etc/shadow")),
  read_resolv: await probe(() => Deno.readTextFileSync("/etc/resolv.conf")),
  read_certs: await probe(() => Deno.readDirSync("/etc/ssl/certs")),
  write_etc: await probe(() => Deno.writeTextFileSync("/etc/hosts", "x")),
  write_tmp: await probe(() => Deno.writeTextFileSync("/tmp/x", "tmp")),
  write_var_tmp: await probe(() => Deno.writeTextFileSync("/var/tmp/y", "var")),
  read_back: Deno.readTextFileSync("/tmp/x") + Deno.readTextFileSync("/var/tmp/y"),
  temp_dir: await probe(() => Deno.makeTempDirSync()),
  net: await probe(() => Deno.connect({ hostname: "127.0.0.1", port: 9 })),
  run: await probe(() => new Deno.Command("true").outputSync()),
  args: Deno.args,
});
"#;
    let v = run(
        &a,
        "/run-ts",
        json!({"code": code, "env": ["KEY=val"], "args": ["q"]}),
    )
    .await;
    assert_eq!(
        v["result"],
        json!({"key": "val", "path": "NotCapable", "read_ws": "from workspace", "write_ws": "ok",
               "read_etc": "NotCapable", "read_shadow": "NotCapable", "read_resolv": "ok",
               "read_certs": "ok", "write_etc": "NotCapable", "write_tmp": "ok",
               "write_var_tmp": "ok", "read_back": "tmpvar", "temp_dir": "ok", "net": "NotCapable",
               "run": "NotCapable", "args": ["q"]}),
        "{v}"
    );
    assert!(a.workspace().join("out.txt").exists());

    // With allow_net the network permission is there (the connection itself is refused:
    // nothing listens on that loopback port).
    let v = run(&a, "/run-ts", json!({"code": "try { await Deno.connect({hostname: '127.0.0.1', port: 9}) } catch (e) { result.set((e as Error).name) }", "allow_net": true})).await;
    assert_eq!(v["result"], "ConnectionRefused", "{v}");

    let v = run(
        &a,
        "/run-ts",
        json!({"code": "function g(): never { throw new SyntaxError('ts boom') }\ng();"}),
    )
    .await;
    assert_ne!(v["exit_code"], 0);
    assert_eq!(v["error"]["name"], "SyntaxError", "{v}");
    assert_eq!(v["error"]["message"], "ts boom");

    std::fs::write(a.workspace().join("s.ts"), "result.set(Deno.args.length)").unwrap();
    let v = run(
        &a,
        "/run-ts",
        json!({"path": "/workspace/s.ts", "args": ["1", "2"]}),
    )
    .await;
    assert_eq!(v["result"], 2, "{v}");
}

/// `result.error(value)` hands back the value exactly and fails the run with exit 1,
/// unless the script exits with a code of its own; the script goes on after the call.
#[tokio::test]
async fn result_error_carries_the_value_and_fails_the_run() {
    let a = Agent::start();
    let cases = [
        (
            "/run-js",
            "result.error({code: 'E_TEST', detail: 'boom'}); console.log('after')",
            json!({"code": "E_TEST", "detail": "boom"}),
            1,
        ),
        (
            "/run-ts",
            "result.error({code: 'E_TEST', detail: 'boom'}); console.log('after')",
            json!({"code": "E_TEST", "detail": "boom"}),
            1,
        ),
        (
            "/run-python",
            "result.error({'code': 'E_TEST', 'detail': 'boom'}); print('after')",
            json!({"code": "E_TEST", "detail": "boom"}),
            1,
        ),
        (
            "/run-js",
            "result.error('plain'); console.log('after')",
            json!("plain"),
            1,
        ),
        (
            "/run-ts",
            "result.error(42); console.log('after')",
            json!(42),
            1,
        ),
        (
            "/run-python",
            "result.error([1, 'two']); print('after')",
            json!([1, "two"]),
            1,
        ),
        (
            "/run-js",
            "result.error('x'); console.log('after'); process.exit(3)",
            json!("x"),
            3,
        ),
        (
            "/run-ts",
            "result.error('x'); console.log('after'); Deno.exit(3)",
            json!("x"),
            3,
        ),
        (
            "/run-python",
            "import sys\nresult.error('x'); print('after'); sys.exit(3)",
            json!("x"),
            3,
        ),
    ];
    for (ep, code, error, exit) in cases {
        let v = run(&a, ep, json!({ "code": code })).await;
        assert_eq!(v["error"], error, "{ep} {code}: {v}");
        assert_eq!(v["exit_code"], exit, "{ep} {code}: {v}");
        assert_eq!(v["stdout"], "after\n", "{ep} {code}: {v}");
    }
    // An uncaught exception keeps its {name, message, stack} shape.
    for (ep, code) in [
        ("/run-js", "throw new Error('x')"),
        ("/run-ts", "throw new Error('x')"),
        ("/run-python", "raise Exception('x')"),
    ] {
        let v = run(&a, ep, json!({ "code": code })).await;
        let e = &v["error"];
        assert_eq!(e["message"], "x", "{ep}: {v}");
        assert!(e["name"].is_string() && e["stack"].is_string(), "{ep}: {v}");
        assert_ne!(v["exit_code"], 0, "{ep}: {v}");
    }
}

#[tokio::test]
async fn run_requests_are_validated() {
    let a = Agent::start();
    for (body, status) in [
        (json!({}), 422),
        (json!({"code": "1", "path": "x.js"}), 422),
        (json!({"code": "1", "env": ["NOEQUALS"]}), 422),
        (json!({"path": "/etc/passwd"}), 422),
        (json!({"path": "missing.js"}), 404),
        (json!({"code": 5}), 400),
    ] {
        let (s, v) = a.json("POST", "/run-js", body.clone()).await;
        assert_eq!(s, status, "{body}: {v}");
    }
}

#[tokio::test]
async fn run_timeouts_and_streaming() {
    let a = Agent::start();
    let v = run(
        &a,
        "/run-python",
        json!({"code": "import time\nresult.set('early')\ntime.sleep(30)", "timeout_ms": 1500}),
    )
    .await;
    assert_eq!(v["timed_out"], true, "{v}");
    assert_eq!(
        v["result"], "early",
        "what was recorded before the kill is kept"
    );

    let (status, bytes) = a
        .request(
            "POST",
            "/run-js?stream=true",
            serde_json::to_vec(&json!({"code": "console.log('hi'); result.set(7)"})).unwrap(),
        )
        .await;
    assert_eq!(status, 200);
    let lines: Vec<Value> = std::str::from_utf8(&bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0], json!({"stdout": "hi\n"}));
    assert_eq!(lines.last().unwrap()["exit"]["result"], 7, "{lines:?}");
}

#[tokio::test]
async fn inline_code_resolves_imports_from_the_workspace() {
    let a = Agent::start();
    let ws = a.workspace();
    std::fs::create_dir_all(ws.join("node_modules/leftpad")).unwrap();
    std::fs::write(
        ws.join("node_modules/leftpad/index.js"),
        "module.exports = (s) => '>' + s;",
    )
    .unwrap();
    std::fs::write(ws.join("local.js"), "exports.v = 'local';").unwrap();
    std::fs::write(ws.join("lib.ts"), "export const three: number = 3;").unwrap();
    std::fs::write(ws.join("esm.mjs"), "export const e = 'esm';").unwrap();

    let v = run(
        &a,
        "/run-js",
        json!({"code": "result.set(require('leftpad')(require('./local').v))"}),
    )
    .await;
    assert_eq!(v["result"], ">local", "{v}");
    let v = run(&a, "/run-js", json!({"code": "import { e } from './esm.mjs';\nimport pad from 'leftpad';\nresult.set(pad(e) + process.argv.slice(2).join())", "args": ["p", "q"]})).await;
    assert_eq!(v["result"], ">esmp,q", "{v}");
    let v = run(
        &a,
        "/run-ts",
        json!({"code": "import { three } from './lib.ts';\nresult.set(three * 2)"}),
    )
    .await;
    assert_eq!(v["result"], 6, "{v}");

    // A module that cannot be found fails the run, with Deno's message on stderr.
    let v = run(&a, "/run-ts", json!({"code": "import './missing.ts';"})).await;
    assert_ne!(v["exit_code"], 0);
    assert!(v["stderr"].as_str().unwrap().contains("missing.ts"), "{v}");
}
