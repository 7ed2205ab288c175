//! The local driver's options, as `docker volume create -o` takes them
//! (`type`, `device`, `o`, `size`), their `opts.json` form (moby's
//! `optsConfig`: `MountType`, `MountOpts`, `MountDevice`, `Quota.Size`) and
//! what each combination mounts on `_data`:
//!
//! - none: a plain directory, nothing to mount;
//! - `type=tmpfs [o=size=64m,...]`: a tmpfs (`device` defaults to `tmpfs`);
//! - `type=none o=bind device=/path`: a bind of an existing host directory;
//! - `type=xfs|ext4` with a size (`o=size=100m` or `size=100m`) and no
//!   `device`: layerscope's loop-backed volume: a sparse `disk.img` in the
//!   volume directory, formatted at create time, attached to a loop device
//!   and mounted on first use (see [`super::loopfs`]); `Quota.Size` records
//!   the size;
//! - any other `type` with a `device`: mounted as given (Docker's rule).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::sys::mount::MountFlags;

/// Filesystems layerscope can make on a loop image.
pub const LOOP_TYPES: [&str; 2] = ["xfs", "ext4"];

/// moby's `quota.Quota`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    #[serde(rename = "Size")]
    pub size: u64,
}

/// `opts.json`, byte for byte the shape moby's local driver writes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptsConfig {
    #[serde(rename = "MountType")]
    pub mount_type: String,
    #[serde(rename = "MountOpts")]
    pub mount_opts: String,
    #[serde(rename = "MountDevice")]
    pub mount_device: String,
    #[serde(rename = "Quota", default)]
    pub quota: Quota,
}

/// What a volume's `_data` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing {
    /// A plain directory.
    Plain,
    /// A fresh tmpfs on each first use.
    Tmpfs { data: String },
    /// A bind of the host directory `device` (`type=none,o=bind`).
    Bind { device: String, read_only: bool },
    /// The loop-backed `disk.img` of `size` bytes formatted as `fstype`.
    Loop {
        fstype: String,
        size: u64,
        data: String,
    },
    /// `device` mounted as `fstype` with `o`.
    Device {
        fstype: String,
        device: String,
        data: String,
    },
}

impl OptsConfig {
    /// Whether `_data` is mounted on first use (moby's `needsMount`).
    pub fn needs_mount(&self) -> bool {
        !self.mount_type.is_empty() || !self.mount_device.is_empty()
    }

    pub fn backing(&self) -> Backing {
        if !self.needs_mount() {
            return Backing::Plain;
        }
        let (flags, data) = split_mount_options(&self.mount_opts);
        if self.mount_type == "tmpfs" {
            return Backing::Tmpfs {
                data: self.mount_opts.clone(),
            };
        }
        if flags.contains(MountFlags::MS_BIND) {
            return Backing::Bind {
                device: self.mount_device.clone(),
                read_only: flags.contains(MountFlags::MS_RDONLY),
            };
        }
        if self.mount_device.is_empty() && LOOP_TYPES.contains(&self.mount_type.as_str()) {
            return Backing::Loop {
                fstype: self.mount_type.clone(),
                size: self.quota.size,
                data: self.mount_opts.clone(),
            };
        }
        Backing::Device {
            fstype: self.mount_type.clone(),
            device: self.mount_device.clone(),
            data,
        }
    }
}

/// Checks `opts` as moby's `validateOpts` does (with the relaxations the
/// module doc lists) and returns the `opts.json` to write, `None` for a
/// plain volume. Errors are the message after `create <name>: `.
pub fn parse(opts: &BTreeMap<String, String>) -> Result<Option<OptsConfig>, String> {
    if opts.is_empty() {
        return Ok(None);
    }
    for key in opts.keys() {
        if !matches!(key.as_str(), "type" | "o" | "device" | "size") {
            return Err(format!("invalid option: {key:?}"));
        }
    }
    let get = |k: &str| opts.get(k).map(String::as_str).unwrap_or_default();
    let (mount_type, device) = (get("type"), get("device"));
    let mut o = get("o").to_string();
    if mount_type.is_empty() {
        for needs_type in ["device", "o"] {
            if opts.contains_key(needs_type) {
                return Err("missing required option: \"type\"".into());
            }
        }
    }
    // The loop size, from `size=` or from `size=` inside `o`.
    let mut size = None;
    if let Some(value) = opts.get("size") {
        size = Some(parse_size(value).map_err(|e| format!("size {value:?}: {e}"))?);
    }
    let loop_backed = device.is_empty() && LOOP_TYPES.contains(&mount_type);
    if loop_backed {
        let mut rest = Vec::new();
        for part in o.split(',').filter(|p| !p.is_empty()) {
            match part.strip_prefix("size=") {
                Some(value) => {
                    size = Some(parse_size(value).map_err(|e| format!("size {value:?}: {e}"))?)
                }
                None => rest.push(part),
            }
        }
        o = rest.join(",");
        let Some(size) = size.filter(|s| *s > 0) else {
            return Err(format!(
                "type={mount_type} without device needs a size (o=size=100m) for its loop image"
            ));
        };
        if size < 16 << 20 {
            return Err(format!(
                "size {size}: loop-backed volumes need at least 16MiB"
            ));
        }
    } else if size.is_some_and(|s| s > 0) {
        return Err("quota size requested but no quota support".into());
    }
    if !mount_type.is_empty() && device.is_empty() && mount_type != "tmpfs" && !loop_backed {
        return Err("missing required option: \"device\"".into());
    }
    let (flags, _) = split_mount_options(&o);
    if flags.contains(MountFlags::MS_BIND) && !Path::new(device).is_absolute() {
        return Err(format!(
            "bind device {device:?} must be an absolute path of an existing directory"
        ));
    }
    if flags.contains(MountFlags::MS_BIND) && !Path::new(device).is_dir() {
        return Err(format!("bind device {device}: no such directory"));
    }
    let mount_device = if mount_type == "tmpfs" && device.is_empty() {
        "tmpfs".to_string()
    } else {
        device.to_string()
    };
    Ok(Some(OptsConfig {
        mount_type: mount_type.to_string(),
        mount_opts: o,
        mount_device,
        quota: Quota {
            size: if loop_backed { size.unwrap_or(0) } else { 0 },
        },
    }))
}

/// A size as docker's `units.RAMInBytes` reads it: `100m`, `1g`, `512k`,
/// `4096`, binary multiples, an optional `b`/`ib` suffix.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, suffix) = lower.split_at(digits_end);
    let number: f64 = number.parse().map_err(|_| "not a size".to_string())?;
    let shift = match suffix.trim_end_matches("ib").trim_end_matches('b') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return Err(format!("unknown size suffix {suffix:?}")),
    };
    Ok((number * (1u64 << shift) as f64) as u64)
}

/// Splits a mount option string into the flags mount(2) takes and the
/// filesystem's own data string, as `mount(8)` (and moby/sys/mount) do.
pub fn split_mount_options(o: &str) -> (MountFlags, String) {
    let mut flags = MountFlags::empty();
    let mut data = Vec::new();
    for opt in o.split(',').filter(|p| !p.is_empty()) {
        let (set, clear) = match opt {
            "bind" => (MountFlags::MS_BIND, MountFlags::empty()),
            "rbind" => (
                MountFlags::MS_BIND | MountFlags::MS_REC,
                MountFlags::empty(),
            ),
            "ro" => (MountFlags::MS_RDONLY, MountFlags::empty()),
            "rw" => (MountFlags::empty(), MountFlags::MS_RDONLY),
            "nosuid" => (MountFlags::MS_NOSUID, MountFlags::empty()),
            "suid" => (MountFlags::empty(), MountFlags::MS_NOSUID),
            "nodev" => (MountFlags::MS_NODEV, MountFlags::empty()),
            "dev" => (MountFlags::empty(), MountFlags::MS_NODEV),
            "noexec" => (MountFlags::MS_NOEXEC, MountFlags::empty()),
            "exec" => (MountFlags::empty(), MountFlags::MS_NOEXEC),
            "noatime" => (MountFlags::MS_NOATIME, MountFlags::empty()),
            "relatime" => (MountFlags::MS_RELATIME, MountFlags::empty()),
            "sync" => (MountFlags::MS_SYNCHRONOUS, MountFlags::empty()),
            "defaults" => (MountFlags::empty(), MountFlags::empty()),
            other => {
                data.push(other);
                continue;
            }
        };
        flags = (flags | set) - clear;
    }
    (flags, data.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn plain_tmpfs_loop_and_bind() {
        assert_eq!(parse(&opts(&[])).unwrap(), None);
        let tmpfs = parse(&opts(&[("type", "tmpfs"), ("o", "size=64m")]))
            .unwrap()
            .unwrap();
        assert_eq!(tmpfs.mount_device, "tmpfs");
        assert_eq!(
            tmpfs.backing(),
            Backing::Tmpfs {
                data: "size=64m".into()
            }
        );
        let xfs = parse(&opts(&[("type", "xfs"), ("o", "size=100m,noatime")]))
            .unwrap()
            .unwrap();
        assert_eq!(xfs.quota.size, 100 << 20);
        assert_eq!(xfs.mount_opts, "noatime");
        assert!(matches!(xfs.backing(), Backing::Loop { size, .. } if size == 100 << 20));
        let bind = parse(&opts(&[
            ("type", "none"),
            ("o", "bind"),
            ("device", "/tmp"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            bind.backing(),
            Backing::Bind {
                device: "/tmp".into(),
                read_only: false
            }
        );
        let json = serde_json::to_string(&bind).unwrap();
        assert_eq!(
            json,
            r#"{"MountType":"none","MountOpts":"bind","MountDevice":"/tmp","Quota":{"Size":0}}"#
        );
    }

    #[test]
    fn refuses_like_docker() {
        let e = parse(&opts(&[("foo", "bar")])).unwrap_err();
        assert_eq!(e, "invalid option: \"foo\"");
        assert!(parse(&opts(&[("device", "/x")])).is_err());
        assert!(parse(&opts(&[("type", "nfs")])).is_err());
        assert!(parse(&opts(&[("type", "xfs")])).is_err());
        assert!(parse(&opts(&[("type", "none"), ("o", "bind"), ("device", "rel")])).is_err());
        assert!(parse(&opts(&[("size", "1g")])).is_err());
    }

    #[test]
    fn sizes_and_flags() {
        assert_eq!(parse_size("64m").unwrap(), 64 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert!(parse_size("x").is_err());
        let (flags, data) = split_mount_options("bind,ro,size=1m,nodev");
        assert!(flags.contains(MountFlags::MS_BIND | MountFlags::MS_RDONLY | MountFlags::MS_NODEV));
        assert_eq!(data, "size=1m");
    }
}
