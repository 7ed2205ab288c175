//! The naive diff (moby's `NaiveDiffDriver`) for drivers whose `get`
//! returns a layer's full tree (vfs, btrfs, devicemapper): changes by
//! comparing the tree with its parent's, the diff as those changes
//! exported, the size as the bytes of the added and modified files, and
//! apply as an extraction into the full tree where whiteouts delete for
//! real (`WhiteoutFormat::Naive`). A driver implements the [`Driver`]
//! methods by calling these.

use std::io::{Read, Write};

use super::{Driver, DriverError};
use crate::archive::{self, AppliedLayer, ApplyOptions, Change, WhiteoutFormat};
use crate::fsutil;

/// Runs `f` on the roots of `id` and of `parent` (when given), taking and
/// releasing the references whatever `f` returns.
fn with_roots<T>(
    driver: &dyn Driver,
    id: &str,
    parent: Option<&str>,
    f: impl FnOnce(&std::path::Path, Option<&std::path::Path>) -> Result<T, DriverError>,
) -> Result<T, DriverError> {
    let layer = driver.get(id)?;
    let result = match parent {
        None => f(&layer, None),
        Some(parent) => match driver.get(parent) {
            Ok(parent_root) => {
                let result = f(&layer, Some(&parent_root));
                let released = driver.put(parent);
                result.and_then(|v| released.map(|()| v))
            }
            Err(e) => Err(e),
        },
    };
    let released = driver.put(id);
    result.and_then(|v| released.map(|()| v))
}

/// `docker diff` of `id` against `parent` (moby's `ChangesDirs`).
pub fn changes(
    driver: &dyn Driver,
    id: &str,
    parent: Option<&str>,
) -> Result<Vec<Change>, DriverError> {
    with_roots(driver, id, parent, |layer, parent| {
        Ok(archive::changes_naive(layer, parent)?)
    })
}

/// The OCI layer tar of `id` against `parent`: the whole tree without a
/// parent, otherwise the changes (moby's `ExportChanges`).
pub fn diff(
    driver: &dyn Driver,
    id: &str,
    parent: Option<&str>,
    out: &mut dyn Write,
) -> Result<(), DriverError> {
    with_roots(driver, id, parent, |layer, parent| {
        match parent {
            None => archive::export_dir(layer, WhiteoutFormat::Naive, out)?,
            Some(parent) => {
                let changes = archive::changes_naive(layer, Some(parent))?;
                archive::export_changes(layer, &changes, out)?
            }
        };
        Ok(())
    })
}

/// Bytes of the added and modified files of `id` against `parent`
/// (moby's `ChangesSize`).
pub fn diff_size(driver: &dyn Driver, id: &str, parent: Option<&str>) -> Result<u64, DriverError> {
    with_roots(driver, id, parent, |layer, parent| {
        let changes = archive::changes_naive(layer, parent)?;
        super::changes_size(layer, &changes)
    })
}

/// Extracts `diff` into the full tree of `id` (which already holds its
/// parent's files), whiteouts deleting for real. The size is what the
/// layer adds over `parent` counted as overlay2 counts its diff dir
/// (non-directories, symlinks by their target length, hard links once),
/// so a layer has the same size on every driver; moby's naive driver
/// reports the sum of the tar's entry sizes instead, which leaves symlinks
/// out.
pub fn apply_diff(
    driver: &dyn Driver,
    id: &str,
    parent: Option<&str>,
    diff: &mut dyn Read,
    tar_split: Option<&mut (dyn Write + Send)>,
    best_effort_xattrs: bool,
) -> Result<AppliedLayer, DriverError> {
    let root = driver.get(id)?;
    let mut options = ApplyOptions::new(WhiteoutFormat::Naive);
    options.best_effort_xattrs = best_effort_xattrs;
    let applied = archive::apply_layer(diff, &root, &options, tar_split);
    let sized = applied.map_err(DriverError::from).and_then(|mut applied| {
        applied.size = match parent {
            None => fsutil::directory_size(&root).map_err(DriverError::io("size", &root))?,
            Some(parent) => diff_size(driver, id, Some(parent))?,
        };
        Ok(applied)
    });
    driver.put(id)?;
    sized
}
