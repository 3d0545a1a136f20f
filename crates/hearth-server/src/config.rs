//! Server configuration: defaults, then an optional TOML file, then `HEARTH_*` env vars
//! (env wins so one file can serve several hosts with small overrides).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hearth_vmm::{Accel, Selection, VmmKind};
use serde::Deserialize;

use crate::error::{AppError, Result};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub limits: Limits,
    pub defaults: Defaults,
    pub vmm: VmmConfig,
    pub jobs: crate::jobs::JobsConfig,
    /// Give VMs a network when they ask (`network.outbound: true`). `false` (or
    /// `HEARTH_NETWORKING=false`) answers such requests with 422 and says so in
    /// `/openapi.json`, for hosts that must never set VM networking up.
    pub networking: bool,
    /// Let `POST /v1/images` build images from packages and a setup script. The script
    /// runs as root in a chroot on this host: turn it off where API keys are not trusted
    /// with that (`HEARTH_IMAGE_BUILDS=false`).
    pub image_builds: bool,
    /// Warm VMs kept booted per spec (`[pool]`, `HEARTH_POOL_SIZE`).
    pub pool: crate::pool::PoolConfig,
    /// Built-in image registered from `KERNEL_PATH` + `BASE_ROOTFS_PATH`.
    pub kernel_path: Option<PathBuf>,
    pub base_rootfs_path: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// VMs in `creating`, `running` or `stopped` (stopped ones hold disk).
    pub max_vms: u32,
    pub max_vcpus: u8,
    pub max_memory_mib: u32,
    pub max_timeout_ms: u64,
    pub max_ttl_s: u64,
    /// VM boots allowed at once; more are refused with 429 (boots are CPU-heavy under TCG).
    pub max_concurrent_boots: u32,
    pub max_json_body: usize,
    pub max_upload_bytes: usize,
    /// Largest single file `PUT /v1/vms/{id}/files/content` takes (413 above it).
    pub max_file_bytes: u64,
    pub max_image_file_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Defaults {
    pub vcpus: u8,
    pub memory_mib: u32,
    pub overlay_size_mib: u32,
    /// How long `POST /v1/vms` waits for the agent before calling the boot failed.
    pub boot_timeout_s: u64,
    /// Pause a VM after this many seconds without an API call (`None`: never,
    /// `HEARTH_IDLE_TIMEOUT_S`); a create's own `idle_timeout_s` overrides it.
    pub idle_timeout_s: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VmmConfig {
    pub vmm: Option<VmmKind>,
    pub accel: Option<Accel>,
    pub qemu_bin: Option<PathBuf>,
    pub firecracker_bin: Option<PathBuf>,
    pub vhost_vsock_bin: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".parse().expect("static address"),
            data_dir: hearth_image::paths::data_dir(),
            limits: Limits::default(),
            defaults: Defaults::default(),
            vmm: VmmConfig::default(),
            jobs: Default::default(),
            networking: true,
            image_builds: true,
            pool: Default::default(),
            kernel_path: None,
            base_rootfs_path: None,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_vms: 16,
            max_vcpus: 4,
            max_memory_mib: 4096,
            max_timeout_ms: hearth_proto::MAX_TIMEOUT_MS,
            max_ttl_s: 7 * 24 * 3600,
            max_concurrent_boots: 4,
            max_json_body: hearth_proto::MAX_JSON_BODY,
            max_upload_bytes: 1024 * 1024 * 1024,
            max_file_bytes: hearth_proto::DEFAULT_MAX_FILE_BYTES,
            max_image_file_bytes: 8 * 1024 * 1024 * 1024,
        }
    }
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            vcpus: 1,
            memory_mib: 512,
            overlay_size_mib: 1024,
            boot_timeout_s: 60,
            idle_timeout_s: None,
        }
    }
}

impl Config {
    /// Defaults, then `file` (if any), then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Config> {
        let mut cfg = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| AppError::io(format!("reading {}", p.display()), e))?;
                toml::from_str(&text)
                    .map_err(|e| AppError::Config(format!("{}: {e}", p.display())))?
            }
            None => Config::default(),
        };
        cfg.apply_env(|k| std::env::var(k).ok())?;
        Ok(cfg)
    }

    /// Env overrides; `get` is a parameter so tests need not mutate the process env.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<()> {
        fn parse<T: std::str::FromStr>(key: &str, v: String) -> Result<T> {
            v.parse()
                .map_err(|_| AppError::Config(format!("{key}={v:?} is not a valid value")))
        }
        macro_rules! env {
            ($key:literal, $field:expr) => {
                if let Some(v) = get($key) {
                    $field = parse($key, v)?;
                }
            };
        }
        env!("HEARTH_LISTEN", self.listen);
        if let Some(v) = get("HEARTH_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        env!("HEARTH_MAX_VMS", self.limits.max_vms);
        env!("HEARTH_MAX_VCPUS", self.limits.max_vcpus);
        env!("HEARTH_MAX_MEMORY_MIB", self.limits.max_memory_mib);
        env!("HEARTH_MAX_TIMEOUT_MS", self.limits.max_timeout_ms);
        env!("HEARTH_MAX_TTL_S", self.limits.max_ttl_s);
        env!(
            "HEARTH_MAX_CONCURRENT_BOOTS",
            self.limits.max_concurrent_boots
        );
        env!("HEARTH_MAX_JSON_BODY", self.limits.max_json_body);
        env!("HEARTH_MAX_UPLOAD_BYTES", self.limits.max_upload_bytes);
        env!("HEARTH_MAX_FILE_BYTES", self.limits.max_file_bytes);
        env!("HEARTH_DEFAULT_VCPUS", self.defaults.vcpus);
        env!("HEARTH_DEFAULT_MEMORY_MIB", self.defaults.memory_mib);
        env!("HEARTH_OVERLAY_SIZE_MIB", self.defaults.overlay_size_mib);
        env!("HEARTH_BOOT_TIMEOUT_S", self.defaults.boot_timeout_s);
        env!("HEARTH_JOB_CONCURRENCY", self.jobs.concurrency);
        env!("HEARTH_MAX_SCRIPT_BYTES", self.jobs.max_script_bytes);
        env!("HEARTH_MAX_JOB_LOG_BYTES", self.jobs.max_log_bytes);
        env!("HEARTH_JOB_TIMEOUT_S", self.jobs.default_timeout_s);
        env!("HEARTH_NETWORKING", self.networking);
        env!("HEARTH_IMAGE_BUILDS", self.image_builds);
        env!("HEARTH_POOL_SIZE", self.pool.size);
        if let Some(v) = get("HEARTH_IDLE_TIMEOUT_S") {
            self.defaults.idle_timeout_s = Some(parse("HEARTH_IDLE_TIMEOUT_S", v)?);
        }
        if let Some(v) = get("KERNEL_PATH") {
            self.kernel_path = Some(v.into());
        }
        if let Some(v) = get("BASE_ROOTFS_PATH") {
            self.base_rootfs_path = Some(v.into());
        }
        if self.defaults.vcpus == 0 || self.defaults.vcpus > self.limits.max_vcpus {
            return Err(AppError::Config(format!(
                "default vcpus {} must be within 1..=max_vcpus ({})",
                self.defaults.vcpus, self.limits.max_vcpus
            )));
        }
        self.pool.validate(&self.limits)?;
        if self.defaults.idle_timeout_s == Some(0) {
            return Err(AppError::Config(
                "idle_timeout_s must be at least 1 (leave it out to never pause)".into(),
            ));
        }
        if self.defaults.memory_mib > self.limits.max_memory_mib {
            return Err(AppError::Config(format!(
                "default memory_mib {} is above max_memory_mib ({})",
                self.defaults.memory_mib, self.limits.max_memory_mib
            )));
        }
        Ok(())
    }

    /// `HEARTH_VMM`, `HEARTH_ACCEL` and the binary overrides come from the environment
    /// (parsed by hearth-vmm, one parser for `serve` and `run`); the file fills the gaps.
    pub fn selection(&self) -> Result<Selection> {
        let mut sel = Selection::from_env()?;
        sel.vmm = sel.vmm.or(self.vmm.vmm);
        sel.accel = sel.accel.or(self.vmm.accel);
        sel.qemu_bin = sel.qemu_bin.or_else(|| self.vmm.qemu_bin.clone());
        sel.firecracker_bin = sel
            .firecracker_bin
            .or_else(|| self.vmm.firecracker_bin.clone());
        sel.vhost_vsock_bin = sel
            .vhost_vsock_bin
            .or_else(|| self.vmm.vhost_vsock_bin.clone());
        Ok(sel)
    }

    /// The limits requests are validated against; `net_configured` is whether
    /// `HEARTH_NET_*` describes a usable network.
    pub fn api_limits(&self, net_configured: bool) -> hearth_api::Limits {
        hearth_api::Limits {
            max_vcpus: self.limits.max_vcpus,
            max_memory_mib: self.limits.max_memory_mib,
            max_ttl_s: self.limits.max_ttl_s,
            max_timeout_ms: self.limits.max_timeout_ms,
            max_script_bytes: self.jobs.max_script_bytes,
            networking: self.networking && net_configured,
            image_builds: self.image_builds,
        }
    }

    pub fn images_dir(&self) -> PathBuf {
        self.data_dir.join("images")
    }
    pub fn vms_dir(&self) -> PathBuf {
        self.data_dir.join("vms")
    }
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("hearth.db")
    }
    pub fn admin_key_path(&self) -> PathBuf {
        self.data_dir.join("admin.key")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_env_overrides() {
        let mut cfg: Config = toml::from_str(
            "listen = \"127.0.0.1:9000\"\n[limits]\nmax_vms = 3\n[defaults]\nvcpus = 2\n",
        )
        .unwrap();
        assert_eq!(cfg.limits.max_vms, 3);
        cfg.apply_env(|k| (k == "HEARTH_MAX_VMS").then(|| "5".to_string()))
            .unwrap();
        assert_eq!(cfg.limits.max_vms, 5);
        assert_eq!(cfg.defaults.vcpus, 2);
        assert_eq!(cfg.listen.port(), 9000);
    }

    #[test]
    fn pool_sections_parse_and_are_checked() {
        let mut cfg: Config = toml::from_str(
            "[pool]\nsize = 2\n[[pool.spec]]\nimage = \"big\"\nvcpus = 2\nmemory_mib = 1024\nsize = 1\n",
        )
        .unwrap();
        cfg.apply_env(|_| None).unwrap();
        assert_eq!(cfg.pool.size, 2);
        assert_eq!(cfg.pool.spec[0].image.as_deref(), Some("big"));
        cfg.apply_env(|k| (k == "HEARTH_POOL_SIZE").then(|| "0".to_string()))
            .unwrap();
        assert_eq!(cfg.pool.size, 0);
        // More warm VMs than max_vms allows is a configuration error, not a silent cap.
        let mut cfg = Config::default();
        let err = cfg
            .apply_env(|k| match k {
                "HEARTH_POOL_SIZE" => Some("20".into()),
                "HEARTH_MAX_VMS" => Some("4".into()),
                _ => None,
            })
            .unwrap_err();
        assert!(err.to_string().contains("max_vms"), "{err}");
        let mut cfg: Config = toml::from_str("[[pool.spec]]\nvcpus = 99\nsize = 1\n").unwrap();
        assert!(cfg.apply_env(|_| None).is_err());
        assert!(toml::from_str::<Config>("[pool]\nsize = 1\nbogus = 2\n").is_err());
    }

    #[test]
    fn bad_values_name_the_variable() {
        let mut cfg = Config::default();
        let err = cfg
            .apply_env(|k| (k == "HEARTH_MAX_VCPUS").then(|| "lots".to_string()))
            .unwrap_err();
        assert!(err.to_string().contains("HEARTH_MAX_VCPUS"), "{err}");
        assert!(toml::from_str::<Config>("bogus = 1").is_err());
    }
}
