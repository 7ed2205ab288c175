//! The driver matrix: every target runs on its own loop-backed filesystem of
//! the same size, so runs do not disturb each other. `native` is a plain
//! directory on that filesystem (what a volume gives a container), the
//! baseline of every ratio. A [`Stack`] is one workload's image layer and
//! container view on a target.

use std::path::{Path, PathBuf};

use storage_core::driver::{self, CreateOpts, Driver, DriverError, DriverOptions};
use testkit::{FsKind, ScratchFs};

use crate::BenchError;

pub const TARGET_NAMES: &[&str] = &[
    "native",
    "overlay2-ext4",
    "overlay2-xfs-reflink",
    "overlay2-metacopy",
    "overlay2-volatile",
    "vfs-ext4",
    "vfs-xfs-reflink",
    "btrfs",
    "aufs-ext4",
    "devicemapper",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Native,
    Overlay2 {
        metacopy: bool,
        volatile: bool,
    },
    /// Full copies per layer (FICLONE where the filesystem can).
    Vfs,
    /// Subvolumes and snapshots.
    Btrfs,
    /// aufs layout on layerscope's FUSE union (kernel aufs where present).
    Aufs,
    /// dm-thin snapshots (where the kernel has dm-thin-pool).
    DevMapper,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub name: &'static str,
    pub fs: FsKind,
    kind: Kind,
}

impl Target {
    pub fn by_name(name: &str) -> Result<Self, BenchError> {
        let (name, fs, kind) = match name {
            "native" => ("native", FsKind::Ext4, Kind::Native),
            "overlay2-ext4" => (
                "overlay2-ext4",
                FsKind::Ext4,
                Kind::Overlay2 {
                    metacopy: false,
                    volatile: false,
                },
            ),
            "overlay2-xfs-reflink" => (
                "overlay2-xfs-reflink",
                FsKind::Xfs { reflink: true },
                Kind::Overlay2 {
                    metacopy: false,
                    volatile: false,
                },
            ),
            "overlay2-metacopy" => (
                "overlay2-metacopy",
                FsKind::Ext4,
                Kind::Overlay2 {
                    metacopy: true,
                    volatile: false,
                },
            ),
            "overlay2-volatile" => (
                "overlay2-volatile",
                FsKind::Ext4,
                Kind::Overlay2 {
                    metacopy: false,
                    volatile: true,
                },
            ),
            "vfs-ext4" => ("vfs-ext4", FsKind::Ext4, Kind::Vfs),
            "vfs-xfs-reflink" => ("vfs-xfs-reflink", FsKind::Xfs { reflink: true }, Kind::Vfs),
            "btrfs" => ("btrfs", FsKind::Btrfs, Kind::Btrfs),
            "aufs-ext4" => ("aufs-ext4", FsKind::Ext4, Kind::Aufs),
            "devicemapper" => ("devicemapper", FsKind::Ext4, Kind::DevMapper),
            other => return Err(BenchError::UnknownTarget(other.to_string())),
        };
        Ok(Self { name, fs, kind })
    }

    pub fn is_native(&self) -> bool {
        self.kind == Kind::Native
    }

    /// The storage driver name behind the target (`native` for the baseline).
    pub fn driver_name(&self) -> &'static str {
        match self.kind {
            Kind::Native => "native",
            Kind::Overlay2 { .. } => "overlay2",
            Kind::Vfs => "vfs",
            Kind::Btrfs => "btrfs",
            Kind::Aufs => "aufs",
            Kind::DevMapper => "devicemapper",
        }
    }

    /// The target's filesystem, created fresh for this run in a new dir
    /// under `parent`, on a direct-I/O loop device (cached once, like a
    /// filesystem on a real disk).
    pub fn filesystem(&self, parent: &Path, bytes: u64) -> Result<ScratchFs, BenchError> {
        ScratchFs::new_direct_in(parent, self.fs, bytes).map_err(|e| BenchError::Setup {
            target: self.name.to_string(),
            what: e.to_string(),
        })
    }
}

/// The baseline a target's ratios are taken to: `docker-volume` for the
/// `docker-*` targets of `--docker` mode (a volume of the same dockerd),
/// `native` for every other.
pub fn baseline_of(target: &str) -> &'static str {
    if target.starts_with("docker-") {
        crate::docker::VOLUME_TARGET
    } else {
        "native"
    }
}

/// Whether `target` is a baseline (`native` or `docker-volume`).
pub fn is_baseline(target: &str) -> bool {
    baseline_of(target) == target
}

/// One workload's "image" and "container" on a target.
pub struct Stack {
    target: Target,
    native_dir: PathBuf,
    driver: Option<Box<dyn Driver>>,
    base_id: String,
    label: String,
    /// The containers made by `container_roots`, each mounted.
    containers: Vec<String>,
}

impl Stack {
    pub fn new(target: Target, fs: &ScratchFs, label: &str) -> Result<Self, BenchError> {
        let setup = |what: String| BenchError::Setup {
            target: target.name.to_string(),
            what,
        };
        let native_dir = fs.path().join(format!("native-{label}"));
        let mut options = DriverOptions::default();
        let driver = match target.kind {
            Kind::Native => {
                std::fs::create_dir_all(&native_dir).map_err(|e| setup(e.to_string()))?;
                None
            }
            Kind::Overlay2 { metacopy, volatile } => {
                if metacopy {
                    options
                        .storage_opt
                        .insert("overlay2.metacopy".into(), "on".into());
                }
                if volatile {
                    options
                        .storage_opt
                        .insert("overlay2.volatile".into(), "on".into());
                }
                Some(target.driver_name())
            }
            Kind::Vfs | Kind::Btrfs | Kind::Aufs => Some(target.driver_name()),
            Kind::DevMapper => {
                // A small loop-lvm pool on the target's filesystem.
                for (key, value) in [
                    ("dm.loopdatasize", "8G"),
                    ("dm.loopmetadatasize", "256M"),
                    ("dm.basesize", "4G"),
                ] {
                    options.storage_opt.insert(key.into(), value.into());
                }
                Some(target.driver_name())
            }
        };
        let driver = match driver {
            None => None,
            Some(name) => {
                let driver = driver::open(name, fs.path(), &options).map_err(|e| match e {
                    DriverError::Unavailable { why, .. } => BenchError::Unavailable {
                        target: target.name.to_string(),
                        why,
                    },
                    other => setup(other.to_string()),
                })?;
                driver
                    .create(&format!("{label}-image"), None, &CreateOpts::default())
                    .map_err(|e| setup(e.to_string()))?;
                Some(driver)
            }
        };
        Ok(Self {
            target,
            native_dir,
            driver,
            base_id: format!("{label}-image"),
            label: label.to_string(),
            containers: Vec::new(),
        })
    }

    /// The target's driver and the id of the stack's empty image layer
    /// (`None` for native).
    pub fn driver(&self) -> Option<(&dyn Driver, &str)> {
        self.driver
            .as_deref()
            .map(|driver| (driver, self.base_id.as_str()))
    }

    /// Where the workload's starting content goes (the image layer).
    pub fn image_root(&self) -> Result<PathBuf, BenchError> {
        match &self.driver {
            None => Ok(self.native_dir.clone()),
            Some(driver) => driver.get(&self.base_id).map_err(|e| self.setup_error(e)),
        }
    }

    /// The views of `count` containers of the image: the image content
    /// under a writable layer each (for native, the same directory).
    pub fn container_roots(&mut self, count: usize) -> Result<Vec<PathBuf>, BenchError> {
        let Some(driver) = &self.driver else {
            return Ok(vec![self.native_dir.clone(); count]);
        };
        driver.put(&self.base_id).map_err(|e| self.setup_error(e))?;
        let mut roots = Vec::with_capacity(count);
        for index in 0..count {
            let id = match index {
                0 => format!("{}-container", self.label),
                _ => format!("{}-container{index}", self.label),
            };
            driver
                .create_rw(&id, Some(&self.base_id), &CreateOpts::default())
                .map_err(|e| self.setup_error(e))?;
            let root = driver.get(&id).map_err(|e| {
                let _ = driver.remove(&id);
                self.setup_error(e)
            })?;
            self.containers.push(id);
            roots.push(root);
        }
        Ok(roots)
    }

    /// Unmounts and removes the layers (or the native directory).
    pub fn finish(mut self) -> Result<(), BenchError> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<(), BenchError> {
        match self.driver.take() {
            None => remove_tree(&self.native_dir, self.target),
            Some(driver) => {
                // Every container is put back and removed even when one
                // fails; the first failure is the one reported.
                let mut failed = None;
                for id in std::mem::take(&mut self.containers) {
                    if let Err(e) = driver.put(&id).and_then(|()| driver.remove(&id)) {
                        failed.get_or_insert(self.setup_error(e));
                    }
                }
                if let Some(e) = failed {
                    return Err(e);
                }
                if driver.exists(&self.base_id) {
                    driver
                        .remove(&self.base_id)
                        .map_err(|e| self.setup_error(e))?;
                }
                // What the driver holds beyond its layers goes too:
                // devicemapper's pool and its loop devices, which would
                // keep the target's filesystem busy.
                driver.cleanup().map_err(|e| self.setup_error(e))
            }
        }
    }

    fn setup_error(&self, e: impl std::fmt::Display) -> BenchError {
        BenchError::Setup {
            target: self.target.name.to_string(),
            what: e.to_string(),
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("bench: cleanup of {}: {e}", self.target.name);
        }
    }
}

fn remove_tree(dir: &Path, target: Target) -> Result<(), BenchError> {
    storage_core::fsutil::remove_all(dir).map_err(|e| BenchError::Setup {
        target: target.name.to_string(),
        what: format!("remove {}: {e}", dir.display()),
    })
}
