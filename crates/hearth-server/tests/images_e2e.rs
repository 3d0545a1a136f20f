//! Images through the API, end to end with a real server and real VMs: a template made
//! from a configured VM (an npm package installed, a file uploaded), VMs made from it
//! (and from a template of a template), their isolation, create->ready times against
//! the default image's (printed, not asserted), 409s for images in use; and custom
//! builds through `POST /v1/images`.
//!
//! Templates need an image built by `hearth image build` (with a manifest), so the
//! test image is linked into the server's own images dir as `default`.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{image_dir, tar_gz, DataDir, Server};

/// Hard links (same file system) or copies of the test image's files.
fn link_default_image(data: &Path) {
    let src = image_dir();
    let dst = data.join("images/default");
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["vmlinux", "rootfs.ext4", "overlay.ext4", "manifest.json"] {
        let (s, d) = (src.join(f), dst.join(f));
        if std::fs::hard_link(&s, &d).is_err() {
            std::fs::copy(&s, &d).unwrap();
        }
    }
}

impl Server {
    /// Creates a VM of `image`; returns its id and the create->ready wall time.
    async fn vm_of(&self, image: &str) -> (String, Duration) {
        let t = Instant::now();
        let (s, vm) = self
            .call(
                "POST",
                "/v1/vms",
                Some(json!({"image": image, "memory_mib": 384})),
            )
            .await;
        let took = t.elapsed();
        assert_eq!(s, 201, "{vm}");
        assert_eq!(vm["image"], image);
        (vm["id"].as_str().unwrap().to_string(), took)
    }

    async fn sh(&self, vm: &str, cmd: &str) -> Value {
        let (s, r) = self
            .call(
                "POST",
                &format!("/v1/vms/{vm}/exec"),
                Some(json!({"cmd": cmd, "timeout_ms": 300_000})),
            )
            .await;
        assert_eq!(s, 200, "{r}");
        r
    }

    /// stdout of a command that must succeed.
    async fn out(&self, vm: &str, cmd: &str) -> String {
        let r = self.sh(vm, cmd).await;
        assert_eq!(r["exit_code"], 0, "{cmd}: {r}");
        r["stdout"].as_str().unwrap().to_string()
    }

    async fn upload(&self, vm: &str, archive: Vec<u8>) {
        let resp = self
            .client()
            .post(format!("{}/v1/vms/{vm}/files/upload", self.url))
            .bearer_auth(&self.key)
            .header("content-type", "application/gzip")
            .body(archive)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }

    async fn template(&self, vm: &str, name: &str) -> Value {
        let (s, img) = self
            .call(
                "POST",
                &format!("/v1/vms/{vm}/template"),
                Some(json!({"name": name})),
            )
            .await;
        assert_eq!(s, 201, "{img}");
        assert_eq!(img["name"], name);
        img
    }
}

/// Streamed, so a 1 GiB sparse layer is not read into memory.
fn sha256(p: &Path) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut std::fs::File::open(p).unwrap(), &mut h).unwrap();
    hex::encode(h.finalize())
}

fn median_ms(d: &[Duration]) -> f64 {
    let mut v: Vec<f64> = d.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

const PKG_JSON: &[u8] = br#"{"name": "hearth-hello", "version": "1.0.0", "main": "index.js"}"#;
const PKG_INDEX: &[u8] = b"module.exports = () => 'hello from the package';\n";
const USES_PKG: &str = "cd /workspace && node -e 'console.log(require(\"hearth-hello\")())'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_carry_a_configured_vm_and_stack() {
    let data = DataDir::new();
    link_default_image(data.path());
    let server = Server::spawn::<&str, &str>(data.path(), &[], &[]);

    // A configured VM: a file uploaded, an npm package installed (packed from a
    // directory uploaded with it, so no registry is needed).
    let (a, _) = server.vm_of("default").await;
    server
        .upload(
            &a,
            tar_gz(&[
                ("notes.txt", b"from the template\n"),
                ("src/hello/package.json", PKG_JSON),
                ("src/hello/index.js", PKG_INDEX),
            ]),
        )
        .await;
    server
        .out(
            &a,
            "cd /workspace && npm pack --silent ./src/hello >/dev/null && \
             npm install --offline --no-audit --no-fund ./hearth-hello-1.0.0.tgz >/dev/null && rm -r src",
        )
        .await;
    assert_eq!(server.out(&a, USES_PKG).await, "hello from the package\n");

    // The template; the VM goes on afterwards (thawed, writable).
    let tpl = server.template(&a, "tpl").await;
    assert_eq!(tpl["ready"], true);
    server
        .out(&a, "echo after > /workspace/after-template")
        .await;
    let tpl_dir = data.path().join("images/tpl");
    let m: Value =
        serde_json::from_slice(&std::fs::read(tpl_dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        (m["kind"].as_str(), m["parent"].as_str()),
        (Some("template"), Some("default"))
    );
    let layer = tpl_dir.join(m["layers"][0].as_str().unwrap());
    let layer_before = sha256(&layer);

    // Two VMs of the template: both have the file and the package, and neither sees
    // the other's writes, nor A's after the capture.
    let (b, _) = server.vm_of("tpl").await;
    let (c, _) = server.vm_of("tpl").await;
    for vm in [&b, &c] {
        assert_eq!(
            server.out(vm, "cat /workspace/notes.txt").await,
            "from the template\n"
        );
        assert_eq!(server.out(vm, USES_PKG).await, "hello from the package\n");
        let after = server
            .out(vm, "ls /workspace/after-template 2>&1 || true")
            .await;
        assert!(
            after.contains("No such file"),
            "A's write after the capture: {after}"
        );
    }
    server
        .out(
            &b,
            "echo b > /workspace/b-only && echo changed >> /workspace/notes.txt",
        )
        .await;
    server.out(&c, "echo c > /workspace/c-only").await;
    assert_eq!(
        server
            .out(
                &c,
                "cat /workspace/notes.txt; ls /workspace/b-only 2>&1 || true"
            )
            .await,
        "from the template\nls: cannot access '/workspace/b-only': No such file or directory\n"
    );
    assert!(server.out(&b, "ls /workspace").await.contains("b-only"));
    assert!(!server.out(&b, "ls /workspace").await.contains("c-only"));
    assert!(
        sha256(&layer) == layer_before,
        "VM writes never reach the template's layer"
    );

    // A stopped VM becomes a template as it is (no agent to freeze it).
    let (s, vm) = server
        .call("POST", &format!("/v1/vms/{c}/stop"), None)
        .await;
    assert_eq!((s, vm["state"].as_str()), (200, Some("stopped")), "{vm}");
    let stopped = server.template(&c, "tpl-stopped").await;
    assert_eq!(stopped["ready"], true);
    let (s, err) = server.call("DELETE", "/v1/images/tpl-stopped", None).await;
    assert_eq!(s, 204, "{err}");

    // One more default VM, so that `default` is in use by two.
    let (d, _) = server.vm_of("default").await;

    // A template of a template: B's writes over tpl's.
    let tpl2 = server.template(&b, "tpl2").await;
    assert_eq!(tpl2["ready"], true);
    let (e, _) = server.vm_of("tpl2").await;
    assert_eq!(
        server
            .out(&e, "cat /workspace/notes.txt /workspace/b-only")
            .await,
        "from the template\nchanged\nb\n"
    );
    assert_eq!(server.out(&e, USES_PKG).await, "hello from the package\n");
    let m2: Value = serde_json::from_slice(
        &std::fs::read(data.path().join("images/tpl2/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(m2["layers"].as_array().unwrap().len(), 2);
    assert_eq!(m2["layers"][1], m["layers"][0]);

    // Images in use cannot go: a 409 naming the VMs and images that use them.
    let (s, err) = server.call("DELETE", "/v1/images/tpl", None).await;
    assert_eq!(s, 409, "{err}");
    let msg = err["error"]["message"].as_str().unwrap();
    for who in [&b, &c, &"tpl2".to_string()] {
        assert!(msg.contains(who.as_str()), "{msg} should name {who}");
    }
    let (s, err) = server.call("DELETE", "/v1/images/tpl2", None).await;
    assert_eq!(s, 409, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains(&e));
    let (s, _) = server.call("DELETE", "/v1/images/default", None).await;
    assert_eq!(s, 409, "default is in use by A and D, and is tpl's parent");
    // The name is taken: 409; a bad name: 422; a VM that is gone: 404.
    let (s, _) = server
        .call(
            "POST",
            &format!("/v1/vms/{a}/template"),
            Some(json!({"name": "tpl"})),
        )
        .await;
    assert_eq!(s, 409);
    let (s, _) = server
        .call(
            "POST",
            &format!("/v1/vms/{a}/template"),
            Some(json!({"name": "../x"})),
        )
        .await;
    assert_eq!(s, 422);
    let (s, _) = server
        .call("POST", "/v1/vms/nope/template", Some(json!({"name": "t3"})))
        .await;
    assert_eq!(s, 404);

    // Once its VM is gone, tpl2 can go, and then nothing holds tpl but B and C.
    let (s, _) = server.call("DELETE", &format!("/v1/vms/{e}"), None).await;
    assert_eq!(s, 204);
    let (s, err) = server.call("DELETE", "/v1/images/tpl2", None).await;
    assert_eq!(s, 204, "{err}");
    assert!(!data.path().join("images/tpl2").exists());
    for vm in [&a, &b, &c, &d] {
        let (s, _) = server.call("DELETE", &format!("/v1/vms/{vm}"), None).await;
        assert_eq!(s, 204);
    }

    // create->ready, one VM at a time, the two images interleaved so both see the same
    // host load. Printed, not asserted (speed goals live in benchmarks).
    let (mut default_t, mut tpl_t) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        for (image, times) in [("default", &mut default_t), ("tpl", &mut tpl_t)] {
            let (vm, took) = server.vm_of(image).await;
            times.push(took);
            let (s, _) = server.call("DELETE", &format!("/v1/vms/{vm}"), None).await;
            assert_eq!(s, 204);
        }
    }
    let (dm, tm) = (median_ms(&default_t), median_ms(&tpl_t));
    eprintln!(
        "create->ready (POST /v1/vms wall time, 3 each, interleaved): default image {default_t:?} \
         median {dm:.0} ms; template {tpl_t:?} median {tm:.0} ms; template/default = {:.3}",
        tm / dm
    );

    let (s, err) = server.call("DELETE", "/v1/images/tpl", None).await;
    assert_eq!(s, 204, "{err}");
}

#[tokio::test]
async fn custom_images_build_through_the_api() {
    let data = DataDir::new();
    link_default_image(data.path());
    let server = Server::spawn::<&str, &str>(data.path(), &[], &[]);
    let script =
        "mkdir -p /usr/share/hearth-api-test && echo api > /usr/share/hearth-api-test/marker\n";
    let (s, img) = server
        .call(
            "POST",
            "/v1/images",
            Some(json!({"name": "api-custom", "script": script})),
        )
        .await;
    assert_eq!(s, 201, "{img}");
    assert_eq!(img["ready"], true);
    let m: Value = serde_json::from_slice(
        &std::fs::read(data.path().join("images/api-custom/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(m["kind"], "custom");
    assert!(m["script_sha256"].as_str().unwrap().len() == 64);

    // Refused before any work: bad package, unknown parent, taken name, a template
    // as --from; a failing script is a 422 carrying its output.
    for (body, status, says) in [
        (
            json!({"name": "x1", "packages": ["-oAPT::x"]}),
            422,
            "invalid Debian package",
        ),
        (
            json!({"name": "x2", "packages": ["jq"], "from": "nope"}),
            404,
            "nope",
        ),
        (
            json!({"name": "api-custom", "packages": ["jq"]}),
            409,
            "already exists",
        ),
        (
            json!({"name": "x3", "script": "echo failing-setup >&2; exit 3"}),
            422,
            "failing-setup",
        ),
    ] {
        let (s, err) = server.call("POST", "/v1/images", Some(body.clone())).await;
        assert_eq!(s, status, "{body}: {err}");
        assert!(
            err["error"]["message"].as_str().unwrap().contains(says),
            "{body}: {err}"
        );
    }
    for name in ["x1", "x2", "x3"] {
        assert!(!data.path().join("images").join(name).exists(), "{name}");
    }
    let (s, _) = server.call("DELETE", "/v1/images/api-custom", None).await;
    assert_eq!(s, 204);
}
