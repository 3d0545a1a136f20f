//! What an image asks of the processes run in it. The host writes it into imported OCI
//! images at [`IMAGE_CONFIG_PATH`]; the agent reads it once at start.

use serde::{Deserialize, Serialize};

/// Inside the guest's root file system.
pub const IMAGE_CONFIG_PATH: &str = "/etc/hearth/image.json";

/// Kernel argument `hearth.layers=N`: N template layer disks follow the overlay disk,
/// newest first (`/dev/vdc` is the newest). Absent means none.
pub const LAYERS_ARG: &str = "hearth.layers";
/// More would not fit the VMMs' device buses comfortably; the host enforces it too.
pub const MAX_LAYERS: usize = 8;

/// The word for the kernel command line.
pub fn layers_cmdline(n: usize) -> String {
    format!("{LAYERS_ARG}={n}")
}

/// `hearth.layers=` from a kernel command line: 0 when absent, an error when malformed
/// or above [`MAX_LAYERS`].
pub fn layers_from_cmdline(cmdline: &str) -> Result<usize, String> {
    let Some(v) = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(LAYERS_ARG)?.strip_prefix('='))
    else {
        return Ok(0);
    };
    match v.parse::<usize>() {
        Ok(n) if n <= MAX_LAYERS => Ok(n),
        _ => Err(format!("{LAYERS_ARG}={v}: expected 0..={MAX_LAYERS}")),
    }
}

/// The block device of layer `i` (0 = newest): after `/dev/vda` (base) and `/dev/vdb`
/// (overlay) in attach order.
pub fn layer_device(i: usize) -> String {
    format!("/dev/vd{}", (b'c' + i as u8) as char)
}

/// Longest freeze a request may ask for; the agent thaws by itself when it ends, so a
/// host that dies mid-copy never leaves the guest's writes blocked for good.
pub const MAX_FREEZE_MS: u64 = 120_000;
pub const DEFAULT_FREEZE_MS: u64 = 30_000;

/// `POST /fs/freeze`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FreezeRequest {
    /// Thaw automatically after this long (default 30 s, at most 120 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

impl FreezeRequest {
    pub fn validate(&self) -> crate::Result<()> {
        match self.timeout_ms {
            Some(t) if t == 0 || t > MAX_FREEZE_MS => {
                Err(crate::ProtoError::BadFreezeTimeout(t, MAX_FREEZE_MS))
            }
            _ => Ok(()),
        }
    }
}

/// Answer of `/fs/freeze` and `/fs/thaw`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreezeState {
    pub frozen: bool,
}

/// The OCI image config's `Env`, `WorkingDir` and `User`, plus the top-level directories
/// of the image that user code may see (read-only) besides the usual system ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageConfig {
    /// `KEY=value` entries, as in the OCI config.
    pub env: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Top-level directory names (`app`, `opt`), bound read-only into the jail.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expose: Vec<String>,
}

impl ImageConfig {
    /// `Env` as pairs; entries without `=` or with an empty or NUL-bearing name are
    /// dropped (an image cannot make every exec fail).
    pub fn env_pairs(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .filter_map(|e| {
                let (k, v) = e.split_once('=')?;
                (!k.is_empty() && !k.contains('\0') && !v.contains('\0'))
                    .then(|| (k.to_string(), v.to_string()))
            })
            .collect()
    }

    /// The login name uid 1000 gets in the jail. User code always runs as uid 1000:
    /// a `User` naming someone (`node`, `app:staff`) lends that name to uid 1000; root,
    /// numeric ids and odd names leave the default name `user`.
    pub fn login_name(&self) -> Option<String> {
        let user = self.user.as_deref()?.split(':').next()?;
        let ok = !user.is_empty()
            && user.len() <= 32
            && user != "root"
            && user.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && user
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'));
        ok.then(|| user.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_keeps_well_formed_entries() {
        let c = ImageConfig {
            env: ["PATH=/bin", "A=b=c", "EMPTY=", "noequals", "=v", "N\0=x"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        };
        let got: Vec<_> = c.env_pairs();
        assert_eq!(
            got,
            [("PATH", "/bin"), ("A", "b=c"), ("EMPTY", "")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn users_map_onto_uid_1000() {
        let name = |u: Option<&str>| {
            ImageConfig {
                user: u.map(str::to_string),
                ..Default::default()
            }
            .login_name()
        };
        assert_eq!(name(Some("node")).as_deref(), Some("node"));
        assert_eq!(name(Some("app:staff")).as_deref(), Some("app"));
        for none in [
            None,
            Some(""),
            Some("root"),
            Some("0"),
            Some("1000:1000"),
            Some("Bad Name"),
            Some("../x"),
        ] {
            assert_eq!(name(none), None, "{none:?}");
        }
    }

    #[test]
    fn layer_counts_round_trip_through_the_cmdline() {
        let line = format!("console=ttyS0 ro {} quiet", layers_cmdline(3));
        assert_eq!(layers_from_cmdline(&line), Ok(3));
        assert_eq!(layers_from_cmdline("console=ttyS0 hearth.layersx=2"), Ok(0));
        assert_eq!(layers_from_cmdline(""), Ok(0));
        for bad in [
            "hearth.layers=",
            "hearth.layers=x",
            "hearth.layers=9",
            "hearth.layers=-1",
        ] {
            assert!(layers_from_cmdline(bad).is_err(), "{bad}");
        }
        assert_eq!(layer_device(0), "/dev/vdc");
        assert_eq!(layer_device(MAX_LAYERS - 1), "/dev/vdj");
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<ImageConfig>(r#"{"env":[],"cmd":["x"]}"#).is_err());
        let c: ImageConfig = serde_json::from_str(r#"{"working_dir":"/app"}"#).unwrap();
        assert_eq!(c.working_dir.as_deref(), Some("/app"));
    }
}
