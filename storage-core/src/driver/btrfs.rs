//! The btrfs driver (moby's `daemon/graphdriver/btrfs`): every layer is a
//! btrfs subvolume and every child a writable snapshot of its parent, made
//! with the kernel's ioctls ([`crate::sys::btrfs`]), so a child costs no
//! copy at all. Layout, as Docker's:
//!
//! ```text
//! <home>/subvolumes/<id>     the layer's subvolume (get returns it, no mount)
//! <home>/quotas/<id>         the size limit in bytes, when `size` was asked for
//! ```
//!
//! Quotas are qgroup limits (`--storage-opt size=` per layer, with the
//! driver option `btrfs.min_space` as the floor, which also turns quotas
//! on). Removal first destroys the subvolumes a container created inside
//! its layer, deepest first, as moby does. Diffs are naive
//! ([`super::naive`]). Unlike moby, the home is not bind-mounted onto
//! itself: nothing here runs containers whose mount propagation needs it.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::layer_id;
use super::{CreateOpts, Driver, DriverError, DriverOptions, naive};
use crate::archive::{AppliedLayer, Change};
use crate::fsutil;
use crate::sys::{btrfs, mount};

const SUBVOLUMES: &str = "subvolumes";
const QUOTAS: &str = "quotas";
const REMOVING_PREFIX: &str = ".removing-";

pub struct Btrfs {
    home: PathBuf,
    min_space: u64,
    quota_enabled: AtomicBool,
}

impl Btrfs {
    /// Opens (creating when needed) the driver home `<root>/btrfs`, which
    /// must be on btrfs.
    pub fn open(home: &Path, options: &DriverOptions) -> Result<Self, DriverError> {
        let mut min_space = 0;
        for (key, value) in &options.storage_opt {
            match key.to_ascii_lowercase().as_str() {
                "btrfs.min_space" => {
                    min_space = parse_size(value).ok_or_else(|| DriverError::UnknownOption {
                        id: "btrfs".into(),
                        key: format!("btrfs.min_space={value} (not a size)"),
                    })?;
                }
                other => {
                    return Err(DriverError::UnknownOption {
                        id: "btrfs".into(),
                        key: other.to_string(),
                    });
                }
            }
        }
        // The deepest existing directory on the way to the home decides.
        let probe = home.ancestors().find(|p| p.exists()).unwrap_or(home);
        if !btrfs::is_btrfs(probe) {
            return Err(DriverError::Unavailable {
                driver: "btrfs".into(),
                why: format!(
                    "{} is on {}, not btrfs",
                    home.display(),
                    filesystem_type(probe)
                ),
            });
        }
        fs::create_dir_all(home).map_err(DriverError::io("create", home))?;
        let subvolumes = home.join(SUBVOLUMES);
        fsutil::ensure_dir(&subvolumes, 0o710).map_err(DriverError::io("create", &subvolumes))?;
        let driver = Self {
            home: home.to_path_buf(),
            min_space,
            quota_enabled: AtomicBool::new(false),
        };
        if min_space > 0 {
            driver.enable_quota()?;
        }
        Ok(driver)
    }

    fn subvolumes(&self) -> PathBuf {
        self.home.join(SUBVOLUMES)
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.subvolumes().join(id)
    }

    fn quota_file(&self, id: &str) -> PathBuf {
        self.home.join(QUOTAS).join(id)
    }

    fn existing_dir(&self, id: &str) -> Result<PathBuf, DriverError> {
        layer_id::existing_dir(id, &[], |id| self.dir(id))
    }

    fn enable_quota(&self) -> Result<(), DriverError> {
        if self.quota_enabled.load(Ordering::Relaxed) {
            return Ok(());
        }
        btrfs::enable_quota(&self.home).map_err(DriverError::io("enable quota on", &self.home))?;
        self.quota_enabled.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// The `size` storage option of a create, checked against min_space.
    fn requested_size(&self, id: &str, opts: &CreateOpts) -> Result<Option<u64>, DriverError> {
        let mut size = None;
        for (key, value) in &opts.storage_opt {
            if !key.eq_ignore_ascii_case("size") {
                return Err(DriverError::UnknownOption {
                    id: id.to_string(),
                    key: key.clone(),
                });
            }
            let bytes =
                parse_size(value)
                    .filter(|b| *b > 0)
                    .ok_or_else(|| DriverError::UnknownOption {
                        id: id.to_string(),
                        key: format!("size={value} (not a positive size)"),
                    })?;
            if bytes < self.min_space {
                return Err(DriverError::Io {
                    op: "set size quota",
                    path: self.dir(id),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("size {bytes} is below btrfs.min_space {}", self.min_space),
                    ),
                });
            }
            size = Some(bytes);
        }
        Ok(size)
    }

    fn create_layer(
        &self,
        id: &str,
        parent: Option<&str>,
        opts: &CreateOpts,
    ) -> Result<(), DriverError> {
        layer_id::check(id, &[])?;
        let size = self.requested_size(id, opts)?;
        let dir = self.dir(id);
        if dir.exists() {
            return Err(DriverError::AlreadyExists { id: id.to_string() });
        }
        let subvolumes = self.subvolumes();
        match parent {
            None => btrfs::create_subvolume(&subvolumes, OsStr::new(id))
                .map_err(DriverError::io("create subvolume", &dir))?,
            Some(parent) => {
                let parent_dir = self.existing_dir(parent)?;
                btrfs::snapshot(&parent_dir, &subvolumes, OsStr::new(id))
                    .map_err(DriverError::io("snapshot into", &dir))?
            }
        }
        if let Some(size) = size {
            let limited = (|| {
                self.enable_quota()?;
                btrfs::limit_subvolume(&dir, size)
                    .map_err(DriverError::io("limit qgroup of", &dir))?;
                let quotas = self.home.join(QUOTAS);
                fsutil::ensure_dir(&quotas, 0o700).map_err(DriverError::io("create", &quotas))?;
                let file = self.quota_file(id);
                fsutil::write_atomic(&file, size.to_string().as_bytes(), 0o644)
                    .map_err(DriverError::io("write", &file))
            })();
            if let Err(e) = limited {
                let _ = self.destroy_tree(&dir);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Destroys the subvolume `dir` after every subvolume nested in it,
    /// deepest first.
    fn destroy_tree(&self, dir: &Path) -> Result<(), DriverError> {
        let mut nested: Vec<(usize, PathBuf)> = Vec::new();
        let walk = walkdir::WalkDir::new(dir)
            .min_depth(1)
            .follow_links(false)
            .into_iter()
            .filter_entry(|e| e.file_type().is_dir());
        for entry in walk {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) if e.io_error().map(|e| e.kind()) == Some(std::io::ErrorKind::NotFound) => {
                    continue;
                }
                Err(e) => {
                    let path = e.path().unwrap_or(dir).to_path_buf();
                    return Err(DriverError::io("walk", path)(e.into()));
                }
            };
            if btrfs::is_subvolume(entry.path()).unwrap_or(false) {
                nested.push((entry.depth(), entry.path().to_path_buf()));
            }
        }
        nested.sort_by_key(|(depth, _)| std::cmp::Reverse(*depth));
        nested.push((0, dir.to_path_buf()));
        for (_, path) in nested {
            let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
                continue;
            };
            btrfs::destroy_subvolume(parent, name)
                .map_err(DriverError::io("destroy subvolume", &path))?;
        }
        Ok(())
    }

    fn remove_doomed(&self, doomed: &Path) -> Result<(), DriverError> {
        if btrfs::is_subvolume(doomed).unwrap_or(false) {
            self.destroy_tree(doomed)?;
        }
        // Not a subvolume (or a leftover): an ordinary tree.
        fsutil::remove_all(doomed).map_err(DriverError::io("remove", doomed))
    }
}

impl Driver for Btrfs {
    fn name(&self) -> &'static str {
        "btrfs"
    }

    fn home(&self) -> &Path {
        &self.home
    }

    fn create(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<(), DriverError> {
        self.create_layer(id, parent, opts)
    }

    fn remove(&self, id: &str) -> Result<(), DriverError> {
        let dir = self.existing_dir(id)?;
        let quota = self.quota_file(id);
        if quota.exists() {
            fs::remove_file(&quota).map_err(DriverError::io("remove", &quota))?;
        }
        // Out of sight first: a crash leaves a dot-name `sweep_incomplete`
        // finishes, never a half-destroyed layer under its id.
        let doomed = self.subvolumes().join(format!("{REMOVING_PREFIX}{id}"));
        fs::rename(&dir, &doomed).map_err(DriverError::io("rename for removal", &dir))?;
        self.remove_doomed(&doomed)
    }

    fn get(&self, id: &str) -> Result<PathBuf, DriverError> {
        let dir = self.existing_dir(id)?;
        // moby re-applies the recorded limit on every get.
        let recorded = fs::read_to_string(self.quota_file(id))
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok());
        if let Some(size) = recorded.filter(|size| *size >= self.min_space) {
            self.enable_quota()?;
            btrfs::limit_subvolume(&dir, size).map_err(DriverError::io("limit qgroup of", &dir))?;
        }
        Ok(dir)
    }

    fn put(&self, id: &str) -> Result<(), DriverError> {
        self.existing_dir(id).map(drop)
    }

    fn exists(&self, id: &str) -> bool {
        layer_id::check(id, &[]).is_ok() && self.dir(id).is_dir()
    }

    fn status(&self) -> Vec<(String, String)> {
        vec![
            ("Btrfs".into(), String::new()),
            ("Backing Filesystem".into(), "btrfs".into()),
            (
                "Quotas".into(),
                self.quota_enabled.load(Ordering::Relaxed).to_string(),
            ),
        ]
    }

    fn metadata(&self, id: &str) -> Result<BTreeMap<String, String>, DriverError> {
        self.existing_dir(id)?;
        Ok(BTreeMap::new())
    }

    fn cleanup(&self) -> Result<(), DriverError> {
        Ok(())
    }

    fn diff(&self, id: &str, parent: Option<&str>, out: &mut dyn Write) -> Result<(), DriverError> {
        naive::diff(self, id, parent, out)
    }

    fn changes(&self, id: &str, parent: Option<&str>) -> Result<Vec<Change>, DriverError> {
        naive::changes(self, id, parent)
    }

    fn apply_diff(
        &self,
        id: &str,
        parent: Option<&str>,
        diff: &mut dyn Read,
        tar_split: Option<&mut (dyn Write + Send)>,
    ) -> Result<AppliedLayer, DriverError> {
        naive::apply_diff(self, id, parent, diff, tar_split, false)
    }

    fn diff_size(&self, id: &str, parent: Option<&str>) -> Result<u64, DriverError> {
        naive::diff_size(self, id, parent)
    }

    fn diff_files(&self, _id: &str) -> Option<PathBuf> {
        None
    }

    fn sweep_incomplete(&self) -> Result<usize, DriverError> {
        let subvolumes = self.subvolumes();
        let mut removed = 0;
        for entry in fs::read_dir(&subvolumes).map_err(DriverError::io("read", &subvolumes))? {
            let entry = entry.map_err(DriverError::io("read", &subvolumes))?;
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(REMOVING_PREFIX)
            {
                self.remove_doomed(&entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// The filesystem type of the mount holding `path`, from mountinfo (so
/// ext4 reads "ext4", not "extfs"); `<unknown>` when not found.
fn filesystem_type(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return "<unknown>".into();
    };
    let mut best: Option<(usize, String)> = None;
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(point) = left.split(' ').nth(4) else {
            continue;
        };
        let point = PathBuf::from(mount::unescape_mountinfo(point));
        let Some(fstype) = right.split(' ').next() else {
            continue;
        };
        let depth = point.components().count();
        // The last mount listed on the deepest matching point wins.
        if path.starts_with(&point) && best.as_ref().is_none_or(|(d, _)| depth >= *d) {
            best = Some((depth, fstype.to_string()));
        }
    }
    best.map(|(_, t)| t).unwrap_or_else(|| "<unknown>".into())
}

/// A size as Docker's `units.RAMInBytes` reads it: a number with an
/// optional binary suffix (`k`, `m`, `g`, `t`, `p`, with or without `b`/`ib`).
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let shift = match unit.trim().trim_end_matches("ib").trim_end_matches('b') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return None,
    };
    Some((number * (1u64 << shift) as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_dockers_ram_in_bytes() {
        assert_eq!(parse_size("10"), Some(10));
        assert_eq!(parse_size("1k"), Some(1024));
        assert_eq!(parse_size("2MiB"), Some(2 << 20));
        assert_eq!(parse_size("1.5g"), Some(3 << 29));
        assert_eq!(parse_size("10GB"), Some(10 << 30));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("3q"), None);
    }
}
