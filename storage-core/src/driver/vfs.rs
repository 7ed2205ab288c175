//! The vfs driver (moby's `daemon/graphdriver/vfs`): no union at all, every
//! layer is a plain directory holding its full tree, and a child layer is a
//! full copy of its parent made by [`tree_copy`] (FICLONE per file where
//! the filesystem can, so on xfs with reflink or btrfs a child costs
//! metadata only). Layout, as Docker's:
//!
//! ```text
//! <home>/dir/<id>/             the layer's full tree (get returns it, no mount)
//! <home>/dir/.creating-<id>/   a child being copied (renamed into place)
//! ```
//!
//! Diffs are naive ([`super::naive`]): changes by comparing with the
//! parent's tree, apply with whiteouts deleting for real.

pub mod tree_copy;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::layer_id;
use super::{CreateOpts, Driver, DriverError, DriverOptions, naive};
use crate::archive::{AppliedLayer, Change};
use crate::fsutil;

const DIR: &str = "dir";
const STAGING_PREFIX: &str = ".creating-";
const REMOVING_PREFIX: &str = ".removing-";
/// moby's `vfs.xattrs` value accepting layers whose xattrs cannot be set.
const BEST_EFFORT_XATTRS: &str = "i_want_broken_containers";

pub struct Vfs {
    home: PathBuf,
    backing_fs: &'static str,
    reflink: bool,
    best_effort_xattrs: bool,
    threads: usize,
}

impl Vfs {
    /// Opens (creating when needed) the driver home `<root>/vfs`.
    pub fn open(home: &Path, options: &DriverOptions) -> Result<Self, DriverError> {
        let mut best_effort_xattrs = false;
        for (key, value) in &options.storage_opt {
            match key.as_str() {
                "vfs.xattrs" if value == BEST_EFFORT_XATTRS => best_effort_xattrs = true,
                "vfs.xattrs" => {
                    return Err(DriverError::UnknownOption {
                        id: "vfs".into(),
                        key: format!("vfs.xattrs={value} (only {BEST_EFFORT_XATTRS})"),
                    });
                }
                "size" | "vfs.size" => {
                    return Err(DriverError::Unavailable {
                        driver: "vfs".into(),
                        why: "size quotas (xfs project quotas) are not implemented in this build"
                            .into(),
                    });
                }
                other => {
                    return Err(DriverError::UnknownOption {
                        id: "vfs".into(),
                        key: other.to_string(),
                    });
                }
            }
        }
        fs::create_dir_all(home).map_err(DriverError::io("create", home))?;
        let dir = home.join(DIR);
        fsutil::ensure_dir(&dir, 0o710).map_err(DriverError::io("create", &dir))?;
        let backing_fs = fsutil::filesystem_name(home).unwrap_or("<unknown>");
        let reflink = clones_files(&dir);
        let threads = std::thread::available_parallelism()
            .map(|n| n.get() * 2)
            .unwrap_or(2)
            .clamp(2, 8);
        Ok(Self {
            home: home.to_path_buf(),
            backing_fs,
            reflink,
            best_effort_xattrs,
            threads,
        })
    }

    /// Whether child layers share extents with their parent (FICLONE).
    pub fn reflink(&self) -> bool {
        self.reflink
    }

    /// Sets the number of copy threads (at least one).
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.home.join(DIR).join(id)
    }

    fn existing_dir(&self, id: &str) -> Result<PathBuf, DriverError> {
        layer_id::existing_dir(id, &[], |id| self.dir(id))
    }

    /// Creates layer `id`, a copy of `parent`'s tree; returns what the copy
    /// did (all zero without a parent).
    pub fn create_layer(
        &self,
        id: &str,
        parent: Option<&str>,
    ) -> Result<tree_copy::CopyStats, DriverError> {
        layer_id::check(id, &[])?;
        let dir = self.dir(id);
        if dir.exists() {
            return Err(DriverError::AlreadyExists { id: id.to_string() });
        }
        let parent_dir = parent.map(|p| self.existing_dir(p)).transpose()?;
        let staging = self.home.join(DIR).join(format!("{STAGING_PREFIX}{id}"));
        fsutil::remove_all(&staging).map_err(DriverError::io("remove stale", &staging))?;
        let built = (|| {
            fsutil::ensure_dir(&staging, 0o755).map_err(DriverError::io("create", &staging))?;
            match &parent_dir {
                Some(parent_dir) => {
                    tree_copy::copy_tree(parent_dir, &staging, self.threads, self.reflink)
                }
                None => Ok(tree_copy::CopyStats::default()),
            }
        })();
        let stats = match built {
            Ok(stats) => stats,
            Err(e) => {
                let _ = fsutil::remove_all(&staging);
                return Err(e);
            }
        };
        if let Err(e) = fs::rename(&staging, &dir) {
            let _ = fsutil::remove_all(&staging);
            return Err(DriverError::io("rename into place", &dir)(e));
        }
        Ok(stats)
    }

    fn check_create_opts(id: &str, opts: &CreateOpts, rw: bool) -> Result<(), DriverError> {
        match opts.storage_opt.keys().next() {
            None => Ok(()),
            Some(key) if key == "size" && rw => Err(DriverError::Unavailable {
                driver: "vfs".into(),
                why: format!(
                    "layer {id}: size quotas (xfs project quotas) are not implemented in this build"
                ),
            }),
            Some(key) => Err(DriverError::UnknownOption {
                id: id.to_string(),
                key: key.clone(),
            }),
        }
    }
}

impl Driver for Vfs {
    fn name(&self) -> &'static str {
        "vfs"
    }

    fn home(&self) -> &Path {
        &self.home
    }

    fn create(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<(), DriverError> {
        Self::check_create_opts(id, opts, false)?;
        self.create_layer(id, parent).map(drop)
    }

    fn create_rw(
        &self,
        id: &str,
        parent: Option<&str>,
        opts: &CreateOpts,
    ) -> Result<(), DriverError> {
        Self::check_create_opts(id, opts, true)?;
        self.create_layer(id, parent).map(drop)
    }

    fn remove(&self, id: &str) -> Result<(), DriverError> {
        let dir = self.existing_dir(id)?;
        // Out of sight first, so a crash mid-removal leaves a dot-directory
        // that `sweep_incomplete` finishes, never a half layer.
        let doomed = self.home.join(DIR).join(format!("{REMOVING_PREFIX}{id}"));
        fs::rename(&dir, &doomed).map_err(DriverError::io("rename for removal", &dir))?;
        fsutil::remove_all(&doomed).map_err(DriverError::io("remove", &doomed))
    }

    fn get(&self, id: &str) -> Result<PathBuf, DriverError> {
        self.existing_dir(id)
    }

    fn put(&self, id: &str) -> Result<(), DriverError> {
        // Nothing is mounted; only check the layer exists.
        self.existing_dir(id).map(drop)
    }

    fn exists(&self, id: &str) -> bool {
        layer_id::check(id, &[]).is_ok() && self.dir(id).is_dir()
    }

    fn status(&self) -> Vec<(String, String)> {
        vec![
            ("Backing Filesystem".into(), self.backing_fs.into()),
            (
                "Reflink".into(),
                if self.reflink { "yes" } else { "no" }.into(),
            ),
            (
                "Extended file attributes".into(),
                if self.best_effort_xattrs {
                    "best-effort"
                } else {
                    "strict"
                }
                .into(),
            ),
        ]
    }

    fn metadata(&self, id: &str) -> Result<BTreeMap<String, String>, DriverError> {
        let dir = self.existing_dir(id)?;
        Ok(BTreeMap::from([(
            "SourceDir".to_string(),
            dir.display().to_string(),
        )]))
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
        naive::apply_diff(self, id, parent, diff, tar_split, self.best_effort_xattrs)
    }

    fn diff_size(&self, id: &str, parent: Option<&str>) -> Result<u64, DriverError> {
        naive::diff_size(self, id, parent)
    }

    fn diff_files(&self, _id: &str) -> Option<PathBuf> {
        None
    }

    fn sweep_incomplete(&self) -> Result<usize, DriverError> {
        let dir = self.home.join(DIR);
        let mut removed = 0;
        for entry in fs::read_dir(&dir).map_err(DriverError::io("read", &dir))? {
            let entry = entry.map_err(DriverError::io("read", &dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(STAGING_PREFIX) || name.starts_with(REMOVING_PREFIX) {
                fsutil::remove_all(&entry.path())
                    .map_err(DriverError::io("remove", entry.path()))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Whether the filesystem at `dir` clones files (FICLONE between two
/// scratch files there; the source must be open for reading).
fn clones_files(dir: &Path) -> bool {
    let Ok(scratch) = tempfile::Builder::new()
        .prefix(".reflink-probe-")
        .tempdir_in(dir)
    else {
        return false;
    };
    let src = scratch.path().join("a");
    let probe = || -> std::io::Result<()> {
        fs::write(&src, [1u8; 4096])?;
        let src = fs::File::open(&src)?;
        let dst = fs::File::create(scratch.path().join("b"))?;
        crate::sys::reflink::clone_file(&src, &dst)
    };
    probe().is_ok()
}
