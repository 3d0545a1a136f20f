//! Images people bring, end to end with the real `hearth` binary and real VMs: a custom
//! image with Debian packages and setup scripts (and one built `--from` it), and an OCI
//! archive this test writes itself from the host's `busybox-static` package, with a
//! whiteout in its second layer. Each test has its own data dir (images) and run dir;
//! the kernel and base tree come from the shared build cache.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

struct Env {
    data: tempfile::TempDir,
    run: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            data: tempfile::tempdir().unwrap(),
            run: tempfile::tempdir().unwrap(),
        }
    }

    fn hearth(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_hearth"))
            .args(args)
            .env("HEARTH_DATA_DIR", self.data.path())
            .env("HEARTH_RUN_DIR", self.run.path())
            .output()
            .expect("hearth runs")
    }

    /// Runs `hearth` and returns stdout, failing with both streams on a non-zero exit.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.hearth(args);
        let (o, e) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "hearth {args:?} failed:\n{o}\n{e}");
        o
    }

    fn image(&self, name: &str) -> PathBuf {
        self.data.path().join("images").join(name)
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `debugfs -R "stat PATH"` on an image: whether PATH exists in it.
fn in_rootfs(img: &Path, path: &str) -> bool {
    let out = Command::new("debugfs")
        .args(["-R", &format!("stat {path}")])
        .arg(img)
        .output()
        .unwrap();
    !text(&out.stderr).contains("File not found")
}

#[test]
fn custom_images_install_packages_and_run_setup_scripts() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let (s1, s2) = (dir.path().join("one.sh"), dir.path().join("two.sh"));
    let script1 = "mkdir -p /usr/share/hearth-test\necho one > /usr/share/hearth-test/one\n";
    std::fs::write(&s1, script1).unwrap();
    std::fs::write(&s2, "echo two > /usr/share/hearth-test/two\n").unwrap();

    // jq is in the default tree too; tree is not, so it proves the install.
    let m = json(&env.ok(&[
        "image",
        "build",
        "--name",
        "c1",
        "--packages",
        "jq,tree",
        "--run",
        s1.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(m["kind"], "custom");
    assert_eq!(m["packages"], serde_json::json!(["jq", "tree"]));
    assert_eq!(m["script_sha256"], sha256_hex(script1.as_bytes()));
    assert_eq!(m["tree"].as_array().unwrap().len(), 2, "{m}");

    // On top of c1: its layer is reused (no apt run), one more for the second script.
    let m2 = json(&env.ok(&[
        "image",
        "build",
        "--name",
        "c2",
        "--from",
        "c1",
        "--run",
        s2.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(m2["parent"], "c1");
    assert_eq!(
        m2["tree"][1], m["tree"][0],
        "c1's layer is c2's second: {m2}"
    );
    assert_eq!(m2["tree"].as_array().unwrap().len(), 3);

    let out = env.ok(&[
        "run", "--image", "c2", "--",
        "sh", "-c", "jq --version && tree --version && cat /usr/share/hearth-test/one /usr/share/hearth-test/two",
    ]);
    assert!(out.starts_with("jq-1."), "{out}");
    assert!(out.contains("tree v2"), "{out}");
    assert!(out.ends_with("one\ntwo\n"), "{out}");

    // A bad package name is refused before any work, naming it.
    let bad = env.hearth(&["image", "build", "--name", "c3", "--packages", "-oAPT::x=1"]);
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("-oAPT::x=1"),
        "{}",
        text(&bad.stderr)
    );
    assert!(!env.image("c3").exists());
}

/// A tar stream of `(path, contents)` files plus raw entries, as an OCI layer.
fn tar_of(files: &[(&str, Vec<u8>, u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data, mode) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, path, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    g.write_all(bytes).unwrap();
    g.finish().unwrap()
}

/// Writes `bytes` as a blob of the layout and returns its descriptor.
fn blob(layout: &Path, media_type: &str, bytes: &[u8]) -> serde_json::Value {
    let hex = sha256_hex(bytes);
    std::fs::write(layout.join("blobs/sha256").join(&hex), bytes).unwrap();
    serde_json::json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": bytes.len()})
}

/// An OCI image layout: layer 1 is the busybox-static package's files (gzip), layer 2
/// (plain tar) whites out one of layer 1's files and adds one.
fn busybox_layout(dir: &Path) -> PathBuf {
    let layout = dir.join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    let listed = Command::new("dpkg")
        .args(["-L", "busybox-static"])
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "busybox-static is installed by scripts/deps.sh"
    );
    let mut files: Vec<(String, Vec<u8>, u32)> = text(&listed.stdout)
        .lines()
        .filter(|p| Path::new(p).is_file() && !Path::new(p).is_symlink())
        .map(|p| {
            (
                p.trim_start_matches('/').to_string(),
                std::fs::read(p).unwrap(),
                0o755,
            )
        })
        .collect();
    assert!(files.iter().any(|(p, ..)| p == "bin/busybox"), "{files:?}");
    files.push((
        "app/hello.txt".into(),
        b"hello from the app dir\n".to_vec(),
        0o644,
    ));
    files.push(("app/gone.txt".into(), b"whited out\n".to_vec(), 0o644));
    let refs: Vec<(&str, Vec<u8>, u32)> = files
        .iter()
        .map(|(p, d, m)| (p.as_str(), d.clone(), *m))
        .collect();
    let l1 = blob(
        &layout,
        "application/vnd.oci.image.layer.v1.tar+gzip",
        &gzip(&tar_of(&refs)),
    );
    let l2 = blob(
        &layout,
        "application/vnd.oci.image.layer.v1.tar",
        &tar_of(&[
            ("app/.wh.gone.txt", vec![], 0o644),
            ("app/added.txt", b"layer two\n".to_vec(), 0o644),
        ]),
    );
    let diff = |l: &serde_json::Value| l["digest"].clone();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["GREETING=hello-oci", "PATH=/bin:/usr/bin"], "WorkingDir": "/app", "User": "app"},
        "rootfs": {"type": "layers", "diff_ids": [diff(&l1), diff(&l2)]}
    });
    let config = blob(
        &layout,
        "application/vnd.oci.image.config.v1+json",
        config.to_string().as_bytes(),
    );
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config, "layers": [l1, l2]
    });
    let manifest = blob(
        &layout,
        "application/vnd.oci.image.manifest.v1+json",
        manifest.to_string().as_bytes(),
    );
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [manifest]});
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    layout
}

/// The layout directory as an OCI archive (a plain tar of it).
fn archive(layout: &Path, dest: &Path) {
    let mut b = tar::Builder::new(std::fs::File::create(dest).unwrap());
    b.append_dir_all(".", layout).unwrap();
    b.finish().unwrap();
}

#[test]
fn an_oci_archive_imports_boots_and_answers_exec() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let layout = busybox_layout(dir.path());
    let tarball = dir.path().join("busybox-oci.tar");
    archive(&layout, &tarball);

    let m = json(&env.ok(&["image", "import", "bb", tarball.to_str().unwrap(), "--json"]));
    assert_eq!(m["kind"], "oci");
    assert_eq!(m["oci"]["format"], "oci-archive");
    assert_eq!(m["oci"]["layers"], 2);
    assert_eq!(m["config"]["working_dir"], "/app");
    assert_eq!(m["config"]["user"], "app");
    assert_eq!(m["config"]["expose"], serde_json::json!(["app"]));
    let rootfs = env.image("bb").join("rootfs.ext4");
    assert!(in_rootfs(&rootfs, "/app/hello.txt"));
    assert!(!in_rootfs(&rootfs, "/app/gone.txt"), "whited out");
    assert!(in_rootfs(&rootfs, "/sbin/init") && in_rootfs(&rootfs, "/usr/local/bin/hearth-agent"));

    // The layout directory is the same image: same digest, and the tree is reused.
    let m2 = json(&env.ok(&[
        "image",
        "import",
        "bb-dir",
        layout.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(
        (m2["oci"]["format"].as_str(), &m2["oci"]["digest"]),
        (Some("oci-layout"), &m["oci"]["digest"])
    );

    let out = env.ok(&[
        "run",
        "--image",
        "bb",
        "--",
        "busybox",
        "sh",
        "-c",
        "busybox echo ok; echo $GREETING; pwd; whoami; cat hello.txt added.txt; \
         test -e gone.txt && echo gone.txt is there; true",
    ]);
    assert_eq!(
        out, "ok\nhello-oci\n/app\napp\nhello from the app dir\nlayer two\n",
        "the image's Env, WorkingDir and User apply; the whiteout holds"
    );
    // No Python in this image: the run endpoint says so, exec above still worked.
    let py = env.hearth(&["run", "--image", "bb", "--lang", "python", "-c", "print(1)"]);
    assert!(!py.status.success());
    let err = text(&py.stderr);
    assert!(
        err.contains("runtime_missing") || err.contains("has no Python"),
        "{err}"
    );
}

#[test]
fn an_archive_escaping_its_root_is_refused_and_leaves_nothing() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let layout = busybox_layout(dir.path());
    // Replace the manifest's layers with one that climbs out of the staging root.
    let mut evil = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_old();
    let name = b"../../../../../../tmp/hearth-oci-escape";
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_size(1);
    h.set_mode(0o644);
    h.set_cksum();
    evil.append(&h, &b"x"[..]).unwrap();
    let evil = blob(
        &layout,
        "application/vnd.oci.image.layer.v1.tar",
        &evil.into_inner().unwrap(),
    );
    let config = blob(
        &layout,
        "application/vnd.oci.image.config.v1+json",
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
    );
    let manifest = serde_json::json!({"schemaVersion": 2, "config": config, "layers": [evil]});
    let manifest = blob(
        &layout,
        "application/vnd.oci.image.manifest.v1+json",
        manifest.to_string().as_bytes(),
    );
    std::fs::write(
        layout.join("index.json"),
        serde_json::json!({"schemaVersion": 2, "manifests": [manifest]}).to_string(),
    )
    .unwrap();
    let out = env.hearth(&["image", "import", "evil", layout.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("`..`"), "{}", text(&out.stderr));
    assert!(!Path::new("/tmp/hearth-oci-escape").exists());
    assert!(!env.image("evil").exists());
}
