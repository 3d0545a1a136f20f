//! A `hearth serve` of its own for the benchmarks that go through the API (`bench jobs`,
//! `bench create`): this binary, loopback, a temp data dir, the default image.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use hearth_api::pool::PoolStatus;

use crate::client::{Client, ClientArgs};

pub struct BenchServer {
    child: Child,
    data: PathBuf,
    pub client: Client,
}

impl BenchServer {
    /// Starts the server in `data` with the extra environment `env` and waits until it
    /// listens.
    pub fn start(data: &Path, image: &Path, env: &[(&str, String)]) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
        for f in ["vmlinux", "rootfs.ext4"] {
            if !image.join(f).exists() {
                bail!(
                    "{} is missing: build the default image first",
                    image.join(f).display()
                );
            }
        }
        let log = std::fs::File::create(data.join("server.log"))?;
        let exe: PathBuf = std::env::current_exe().context("locating the hearth binary")?;
        let mut child = Command::new(exe)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("HEARTH_DATA_DIR", data)
            .env("KERNEL_PATH", image.join("vmlinux"))
            .env("BASE_ROOTFS_PATH", image.join("rootfs.ext4"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("starting hearth serve")?;
        let mut out = BufReader::new(child.stdout.take().context("server stdout")?);
        let mut line = String::new();
        out.read_line(&mut line)?;
        let Some(url) = line.trim().strip_prefix("hearth: listening on ") else {
            let _ = child.kill();
            bail!(
                "server did not start (see {}): {line:?}",
                data.join("server.log").display()
            );
        };
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let key = std::fs::read_to_string(data.join("admin.key"))?;
        let client = Client::new(&ClientArgs {
            url: url.to_string(),
            api_key: Some(key.trim().to_string()),
            json: false,
        })?;
        Ok(BenchServer {
            child,
            data: data.to_path_buf(),
            client,
        })
    }

    /// Stops the server and destroys the VMs it leaves running (a stopped server keeps
    /// its VMs by design; warm pool VMs are such VMs).
    pub async fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let Ok(dirs) = std::fs::read_dir(self.data.join("vms")) else {
            return;
        };
        for dir in dirs.flatten() {
            if let Ok(vm) = hearth_vmm::VmHandle::adopt(&dir.path()) {
                if let Err(e) = vm.destroy().await {
                    eprintln!("destroying {}: {e:#}", dir.path().display());
                }
            }
        }
    }
}

/// Until every pool spec has at least `ready` warm VMs and boots none (a boot in the
/// background would slow what is measured next).
pub async fn wait_pool(client: &Client, ready: u32) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let p: PoolStatus = client.get("/v1/pool").await?;
        if !p.specs.is_empty() && p.specs.iter().all(|s| s.ready >= ready && s.booting == 0) {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "the pool never got ready: {p:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        // After `stop` a no-op. Otherwise (an error on the way) a hard stop: the data dir
        // is kept with its server.log, and any VM in it keeps running until destroyed.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
