//! The storage-driver contract, modelled on moby's graphdriver `Driver`
//! (ProtoDriver + DiffDriver), and the registry that builds a driver by
//! name. Every driver (overlay2, aufs, vfs, btrfs, devicemapper) implements
//! [`Driver`]; the layer store, containers, the conformance suite and the
//! benchmarks only ever talk to this trait.

pub mod aufs;
pub mod btrfs;
pub mod devmapper;
pub mod error;
pub mod layer_id;
pub mod mountref;
pub mod naive;
pub mod overlay2;
pub mod vfs;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub use error::DriverError;

use crate::archive::{AppliedLayer, Change};

/// Options of `create`/`create_rw` (moby's CreateOpts): per-layer storage
/// options such as `size` for drivers with quotas.
#[derive(Debug, Clone, Default)]
pub struct CreateOpts {
    pub storage_opt: BTreeMap<String, String>,
}

/// A storage driver: layers identified by an opaque id (Docker's cache-id),
/// each optionally on a parent layer.
pub trait Driver: Send + Sync {
    /// The driver's name as Docker spells it (`overlay2`, `vfs`, ...).
    fn name(&self) -> &'static str;

    /// The driver's home directory, `<root>/<name>`.
    fn home(&self) -> &Path;

    /// Creates a read-only layer `id` on `parent`.
    fn create(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<(), DriverError>;

    /// Creates a writable layer (a container's rw or init layer); by
    /// default the same as [`Self::create`], as in most of moby's drivers.
    fn create_rw(
        &self,
        id: &str,
        parent: Option<&str>,
        opts: &CreateOpts,
    ) -> Result<(), DriverError> {
        self.create(id, parent, opts)
    }

    /// Removes layer `id` and everything the driver keeps for it.
    fn remove(&self, id: &str) -> Result<(), DriverError>;

    /// Mounts layer `id` (reference-counted) and returns its root path.
    fn get(&self, id: &str) -> Result<PathBuf, DriverError>;

    /// Releases one reference taken by `get`; the last one unmounts.
    fn put(&self, id: &str) -> Result<(), DriverError>;

    fn exists(&self, id: &str) -> bool;

    /// Key/value lines as `docker info` prints them under Storage Driver.
    fn status(&self) -> Vec<(String, String)>;

    /// Driver-specific paths of a layer (overlay2: LowerDir, UpperDir, ...).
    fn metadata(&self, id: &str) -> Result<BTreeMap<String, String>, DriverError>;

    /// Releases whatever the driver holds (mounts under its home).
    fn cleanup(&self) -> Result<(), DriverError>;

    /// Writes the layer's changes against `parent` as an OCI layer tar.
    fn diff(&self, id: &str, parent: Option<&str>, out: &mut dyn Write) -> Result<(), DriverError>;

    /// The changes of `id` against `parent`, sorted by path, as `docker diff`.
    fn changes(&self, id: &str, parent: Option<&str>) -> Result<Vec<Change>, DriverError>;

    /// Extracts a layer tar into `id`; `tar_split` receives Docker's
    /// tar-split records of the stream when given.
    fn apply_diff(
        &self,
        id: &str,
        parent: Option<&str>,
        diff: &mut dyn Read,
        tar_split: Option<&mut (dyn Write + Send)>,
    ) -> Result<AppliedLayer, DriverError>;

    /// Bytes the layer adds over its parent.
    fn diff_size(&self, id: &str, parent: Option<&str>) -> Result<u64, DriverError>;

    /// A directory holding the layer's own files by their in-layer paths,
    /// from which the original tar can be reassembled with tar-split
    /// (moby's DiffGetter); `None` when the driver has none.
    fn diff_files(&self, id: &str) -> Option<PathBuf>;

    /// Removes what an interrupted create or remove left in the driver's
    /// home (staging directories, dangling links); returns how many. The
    /// layer store calls it under its lock.
    fn sweep_incomplete(&self) -> Result<usize, DriverError> {
        Ok(0)
    }
}

/// Names of the drivers this build knows, in Docker's priority order.
pub const DRIVER_NAMES: &[&str] = &["overlay2", "aufs", "btrfs", "devicemapper", "vfs"];

/// Options for opening a driver (moby's graphdriver.Options).
#[derive(Debug, Clone, Default)]
pub struct DriverOptions {
    /// `--storage-opt` key=value pairs, e.g. `overlay2.metacopy=on`.
    pub storage_opt: BTreeMap<String, String>,
}

/// Opens the driver `name` with its home under `root` (`<root>/<name>`).
pub fn open(
    name: &str,
    root: &Path,
    options: &DriverOptions,
) -> Result<Box<dyn Driver>, DriverError> {
    match name {
        "overlay2" => Ok(Box::new(overlay2::Overlay2::open(
            &root.join(name),
            options,
        )?)),
        "vfs" => Ok(Box::new(vfs::Vfs::open(&root.join(name), options)?)),
        "btrfs" => Ok(Box::new(btrfs::Btrfs::open(&root.join(name), options)?)),
        "devicemapper" => Ok(Box::new(devmapper::DevMapper::open(
            &root.join(name),
            options,
        )?)),
        "aufs" => Ok(Box::new(aufs::Aufs::open(&root.join(name), options)?)),
        _ if DRIVER_NAMES.contains(&name) => Err(DriverError::Unavailable {
            driver: name.to_string(),
            why: "not implemented in this build yet".to_string(),
        }),
        _ => Err(DriverError::UnknownDriver {
            name: name.to_string(),
        }),
    }
}

/// Extracts a layer tar into a driver's diff directory with `format`'s
/// whiteouts, and reports the layer's size as moby's drivers with a native
/// diff do: the bytes in that directory (`directory.Size`).
pub fn apply_to_diff_dir(
    target: &Path,
    format: crate::archive::WhiteoutFormat,
    diff: &mut dyn Read,
    tar_split: Option<&mut (dyn Write + Send)>,
) -> Result<AppliedLayer, DriverError> {
    let options = crate::archive::ApplyOptions::new(format);
    let mut applied = crate::archive::apply_layer(diff, target, &options, tar_split)?;
    applied.size =
        crate::fsutil::directory_size(target).map_err(DriverError::io("size", target))?;
    Ok(applied)
}

/// Bytes of the added and modified non-directories among `changes`, read
/// under `root`, hard links once: moby's `archive.ChangesSize`, the naive
/// `diff_size` of drivers without a native one.
pub fn changes_size(root: &Path, changes: &[Change]) -> Result<u64, DriverError> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    for change in changes {
        if change.kind == crate::archive::ChangeKind::Deleted {
            continue;
        }
        let path = root.join(change.path.strip_prefix("/").unwrap_or(&change.path));
        let meta = std::fs::symlink_metadata(&path).map_err(DriverError::io("stat", &path))?;
        if meta.is_dir() || (meta.nlink() > 1 && !seen.insert(meta.ino())) {
            continue;
        }
        total += meta.size();
    }
    Ok(total)
}
