//! The `dm.*` storage options of Docker's devicemapper driver, parsed and
//! checked before anything is created, and Docker's size spellings (`10G`,
//! `64K`, `100GB`: binary multiples) both ways.

use std::path::PathBuf;

use crate::driver::{DriverError, DriverOptions};

/// Filesystems the base device can carry (`dm.fs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseFs {
    Xfs,
    Ext4,
}

impl BaseFs {
    pub fn name(self) -> &'static str {
        match self {
            BaseFs::Xfs => "xfs",
            BaseFs::Ext4 => "ext4",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "xfs" => Some(BaseFs::Xfs),
            "ext4" => Some(BaseFs::Ext4),
            _ => None,
        }
    }
}

/// The parsed options, with Docker's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmOptions {
    /// `dm.basesize`: size of the base device and so of every layer (10 GiB).
    pub base_size: u64,
    /// `dm.loopdatasize`: sparse data file of loop-lvm (100 GiB).
    pub loop_data_size: u64,
    /// `dm.loopmetadatasize`: sparse metadata file of loop-lvm (2 GiB).
    pub loop_metadata_size: u64,
    /// `dm.fs`: filesystem of the base device (xfs).
    pub fs: BaseFs,
    /// Whether `dm.fs` was given (a base made with another fs is an error).
    pub fs_given: bool,
    /// `dm.mkfsarg`: extra mkfs arguments.
    pub mkfs_args: Vec<String>,
    /// `dm.mountopt`: extra mount options.
    pub mount_options: Vec<String>,
    /// `dm.datadev` / `dm.metadatadev`: block devices instead of loop files.
    pub data_device: Option<PathBuf>,
    pub metadata_device: Option<PathBuf>,
    /// `dm.thinpooldev`: an existing thin-pool to use (name under /dev/mapper).
    pub thin_pool: Option<String>,
    /// `dm.blocksize` in 512-byte sectors (64 KiB = 128).
    pub block_sectors: u32,
    /// `dm.min_free_space` in percent (10).
    pub min_free_space_percent: u32,
    /// `dm.blkdiscard`: discard a device before deleting it (default: only
    /// for loop-lvm, where it gives the space back to the backing files).
    pub blk_discard: bool,
    /// `dm.xfs_nospace_max_retries`: written to xfs's ENOSPC retry knob.
    pub xfs_nospace_max_retries: Option<u64>,
    /// `dm.use_deferred_removal`: a busy device is removed by the kernel on
    /// its last close instead of failing EBUSY (false).
    pub deferred_removal: bool,
    /// `dm.use_deferred_deletion`: a thin device that cannot be deleted now
    /// is marked `deleted` and deleted later (false; needs deferred removal).
    pub deferred_deletion: bool,
}

const GIB: u64 = 1 << 30;

impl Default for DmOptions {
    fn default() -> Self {
        Self {
            base_size: 10 * GIB,
            loop_data_size: 100 * GIB,
            loop_metadata_size: 2 * GIB,
            fs: BaseFs::Xfs,
            fs_given: false,
            mkfs_args: Vec::new(),
            mount_options: Vec::new(),
            data_device: None,
            metadata_device: None,
            thin_pool: None,
            block_sectors: 128,
            min_free_space_percent: 10,
            blk_discard: true,
            xfs_nospace_max_retries: None,
            deferred_removal: false,
            deferred_deletion: false,
        }
    }
}

fn invalid(key: &str, value: &str, why: &str) -> DriverError {
    DriverError::Io {
        op: "parse storage option",
        path: PathBuf::from(format!("{key}={value}")),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, why.to_string()),
    }
}

impl DmOptions {
    pub fn parse(options: &DriverOptions) -> Result<Self, DriverError> {
        let mut parsed = Self::default();
        let mut discard_given = None;
        for (key, value) in &options.storage_opt {
            let size = || parse_size(value).ok_or_else(|| invalid(key, value, "invalid size"));
            match key.to_ascii_lowercase().as_str() {
                "dm.basesize" => parsed.base_size = size()?,
                "dm.loopdatasize" => parsed.loop_data_size = size()?,
                "dm.loopmetadatasize" => parsed.loop_metadata_size = size()?,
                "dm.fs" => {
                    parsed.fs = BaseFs::parse(value)
                        .ok_or_else(|| invalid(key, value, "unsupported filesystem (xfs, ext4)"))?;
                    parsed.fs_given = true;
                }
                "dm.mkfsarg" => parsed.mkfs_args.push(value.clone()),
                "dm.mountopt" => parsed.mount_options.push(value.clone()),
                "dm.datadev" => parsed.data_device = Some(PathBuf::from(value)),
                "dm.metadatadev" => parsed.metadata_device = Some(PathBuf::from(value)),
                "dm.thinpooldev" => {
                    parsed.thin_pool = Some(value.trim_start_matches("/dev/mapper/").to_string())
                }
                "dm.blocksize" => {
                    let bytes = size()?;
                    // The kernel wants 64 KiB .. 1 GiB, a multiple of 64 KiB.
                    if !(64 * 1024..=GIB).contains(&bytes) || bytes % (64 * 1024) != 0 {
                        return Err(invalid(key, value, "want a multiple of 64K up to 1G"));
                    }
                    parsed.block_sectors = (bytes >> 9) as u32;
                }
                "dm.min_free_space" => {
                    let percent = value
                        .strip_suffix('%')
                        .and_then(|v| v.parse::<u32>().ok())
                        .filter(|p| *p < 100)
                        .ok_or_else(|| invalid(key, value, "want a percentage below 100%"))?;
                    parsed.min_free_space_percent = percent;
                }
                "dm.blkdiscard" => {
                    discard_given = Some(
                        parse_bool(value)
                            .ok_or_else(|| invalid(key, value, "want true or false"))?,
                    )
                }
                "dm.use_deferred_removal" => {
                    parsed.deferred_removal = parse_bool(value)
                        .ok_or_else(|| invalid(key, value, "want true or false"))?
                }
                "dm.use_deferred_deletion" => {
                    parsed.deferred_deletion = parse_bool(value)
                        .ok_or_else(|| invalid(key, value, "want true or false"))?
                }
                "dm.xfs_nospace_max_retries" => {
                    parsed.xfs_nospace_max_retries = Some(
                        value
                            .parse()
                            .map_err(|_| invalid(key, value, "want a number"))?,
                    )
                }
                _ => {
                    return Err(DriverError::UnknownOption {
                        id: "devicemapper".into(),
                        key: key.clone(),
                    });
                }
            }
        }
        if parsed.thin_pool.is_some()
            && (parsed.data_device.is_some() || parsed.metadata_device.is_some())
        {
            return Err(invalid(
                "dm.thinpooldev",
                parsed.thin_pool.as_deref().unwrap_or_default(),
                "cannot be combined with dm.datadev or dm.metadatadev",
            ));
        }
        if parsed.deferred_deletion && !parsed.deferred_removal {
            return Err(invalid(
                "dm.use_deferred_deletion",
                "true",
                "needs deferred removal too (dm.use_deferred_removal=true)",
            ));
        }
        // Like Docker: no discard hack on real devices unless asked for.
        parsed.blk_discard =
            discard_given.unwrap_or(parsed.data_device.is_none() && parsed.thin_pool.is_none());
        Ok(parsed)
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "yes" | "on" => Some(true),
        "0" | "f" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Docker's `units.RAMInBytes`: `512`, `64k`, `10G`, `100GB`, `2GiB`, all
/// binary multiples.
pub fn parse_size(value: &str) -> Option<u64> {
    let value = value.trim();
    let split = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().ok()?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(&unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return None,
    };
    let bytes = number * (1u64 << shift) as f64;
    (bytes.is_finite() && bytes >= 0.0).then_some(bytes as u64)
}

/// Docker's `units.HumanSize` as `docker info` prints pool sizes: decimal
/// units, 4 significant digits, no space (`107.4GB`, `65.54kB`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit < UNITS.len() - 1 {
        size /= 1000.0;
        unit += 1;
    }
    let digits = if size >= 1000.0 {
        0
    } else if size >= 100.0 {
        1
    } else if size >= 10.0 {
        2
    } else {
        3
    };
    let mut text = format!("{size:.digits$}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{text}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> DriverOptions {
        DriverOptions {
            storage_opt: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn sizes_are_binary_like_dockers() {
        assert_eq!(parse_size("10G"), Some(10 << 30));
        assert_eq!(parse_size("100GB"), Some(100 << 30));
        assert_eq!(parse_size("64k"), Some(64 << 10));
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("ten"), None);
        assert_eq!(parse_size("5X"), None);
    }

    #[test]
    fn human_sizes_match_docker_info() {
        assert_eq!(human_size(107_374_182_400), "107.4GB");
        assert_eq!(human_size(10_737_418_240), "10.74GB");
        assert_eq!(human_size(65_536), "65.54kB");
        assert_eq!(human_size(2_147_483_648), "2.147GB");
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(1_000_000), "1MB");
    }

    #[test]
    fn defaults_are_dockers() {
        let parsed = DmOptions::parse(&DriverOptions::default()).unwrap();
        assert_eq!(parsed.base_size, 10 << 30);
        assert_eq!(parsed.loop_data_size, 100 << 30);
        assert_eq!(parsed.loop_metadata_size, 2 << 30);
        assert_eq!(parsed.fs, BaseFs::Xfs);
        assert_eq!(parsed.block_sectors, 128);
        assert_eq!(parsed.min_free_space_percent, 10);
        assert!(parsed.blk_discard);
    }

    #[test]
    fn options_parse_and_bad_ones_name_themselves() {
        let parsed = DmOptions::parse(&opts(&[
            ("dm.basesize", "1G"),
            ("dm.fs", "ext4"),
            ("dm.blocksize", "512K"),
            ("dm.min_free_space", "5%"),
            ("dm.datadev", "/dev/sdb"),
            ("dm.metadatadev", "/dev/sdc"),
        ]))
        .unwrap();
        assert_eq!(parsed.base_size, 1 << 30);
        assert_eq!(parsed.fs, BaseFs::Ext4);
        assert_eq!(parsed.block_sectors, 1024);
        assert_eq!(parsed.min_free_space_percent, 5);
        assert!(!parsed.blk_discard);

        let err = DmOptions::parse(&opts(&[("dm.fs", "btrfs")])).unwrap_err();
        assert!(err.to_string().contains("dm.fs=btrfs"), "{err}");
        let err = DmOptions::parse(&opts(&[("dm.min_free_space", "10")])).unwrap_err();
        assert!(err.to_string().contains("percentage"), "{err}");
        let err = DmOptions::parse(&opts(&[("dm.blocksize", "4K")])).unwrap_err();
        assert!(err.to_string().contains("64K"), "{err}");
        let parsed = DmOptions::parse(&opts(&[
            ("dm.use_deferred_removal", "true"),
            ("dm.use_deferred_deletion", "true"),
        ]))
        .unwrap();
        assert!(parsed.deferred_removal && parsed.deferred_deletion);
        let err = DmOptions::parse(&opts(&[("dm.use_deferred_deletion", "true")])).unwrap_err();
        assert!(
            err.to_string().contains("dm.use_deferred_removal=true"),
            "{err}"
        );
        let err = DmOptions::parse(&opts(&[("dm.use_deferred_removal", "maybe")])).unwrap_err();
        assert!(err.to_string().contains("true or false"), "{err}");
        let err = DmOptions::parse(&opts(&[("dm.nope", "1")])).unwrap_err();
        assert!(err.to_string().contains("dm.nope"), "{err}");
    }
}
