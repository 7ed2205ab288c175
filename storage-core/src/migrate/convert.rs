//! One layer, converted in place from aufs to overlay2:
//!
//! ```text
//! aufs/diff/<id>  --rename-->  overlay2/<id>.migrating/diff   (no copy)
//!                              whiteouts converted in place
//!                              link, l/<link> -> ../<id>/diff, lower, work/
//! overlay2/<id>.migrating  --rename-->  overlay2/<id>
//!                              overlay2/<parent>/committed
//! ```
//!
//! Each step checks the disk first, so running it again after a crash at
//! any point finishes the layer: the data is in `aufs/diff/<id>` until the
//! first rename and in the staging directory after it, and the layer only
//! becomes visible to overlay2 by the last rename.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::whiteouts::{self, WhiteoutStats};
use super::{CrashPoint, MigrateError};
use crate::driver::overlay2::MAX_DEPTH;
use crate::fsutil;

const LINK_ID_LEN: usize = 26;

/// Where a layer's data is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LayerState {
    /// Still `aufs/diff/<id>`.
    Aufs,
    /// Moved to `overlay2/<id>.migrating/diff`, conversion unfinished.
    Staged,
    /// `overlay2/<id>`.
    Done,
    /// Nowhere: neither place holds it.
    Missing,
}

pub(crate) fn overlay_home(root: &Path) -> PathBuf {
    root.join("overlay2")
}

pub(crate) fn staging_dir(root: &Path, id: &str) -> PathBuf {
    overlay_home(root).join(format!("{id}.migrating"))
}

pub(crate) fn aufs_diff(root: &Path, id: &str) -> PathBuf {
    root.join("aufs").join("diff").join(id)
}

pub fn state(root: &Path, id: &str) -> LayerState {
    if overlay_home(root).join(id).join("diff").is_dir() {
        LayerState::Done
    } else if staging_dir(root, id).join("diff").is_dir() {
        LayerState::Staged
    } else if aufs_diff(root, id).is_dir() {
        LayerState::Aufs
    } else {
        LayerState::Missing
    }
}

/// The directory holding the layer's files now, wherever that is.
pub fn data_dir(root: &Path, id: &str) -> Option<PathBuf> {
    match state(root, id) {
        LayerState::Aufs => Some(aufs_diff(root, id)),
        LayerState::Staged => Some(staging_dir(root, id).join("diff")),
        LayerState::Done => Some(overlay_home(root).join(id).join("diff")),
        LayerState::Missing => None,
    }
}

/// Whether an id can be a directory name in both stores.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && !id.starts_with('.')
        && id != "l"
        && !id.ends_with(".migrating")
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Converts layer `id` (`index` in the plan) whose parents, newest first,
/// are already converted. Returns the whiteouts it converted.
pub(crate) fn convert_layer(
    root: &Path,
    id: &str,
    parents: &[String],
    index: usize,
    crash_at: Option<CrashPoint>,
) -> Result<WhiteoutStats, MigrateError> {
    let home = overlay_home(root);
    let final_dir = home.join(id);
    if final_dir.join("diff").is_dir() {
        mark_committed(&home, parents)?;
        return Ok(WhiteoutStats::default());
    }
    let layer_err = |why: String| MigrateError::Layer {
        id: id.to_string(),
        why,
    };
    if parents.len() > MAX_DEPTH {
        return Err(layer_err(format!(
            "{} parent layers, overlay2 mounts at most {MAX_DEPTH}",
            parents.len()
        )));
    }
    // Docker's modes: the home 0710, `l/` 0700.
    fsutil::ensure_dir(&home, 0o710).map_err(MigrateError::io("create", &home))?;
    fsutil::ensure_dir(&home.join("l"), 0o700)
        .map_err(MigrateError::io("create", home.join("l")))?;
    let staging = staging_dir(root, id);
    fsutil::ensure_dir(&staging, 0o710).map_err(MigrateError::io("create", &staging))?;

    let diff = staging.join("diff");
    if !diff.is_dir() {
        let source = aufs_diff(root, id);
        if !source.is_dir() {
            return Err(layer_err(format!(
                "data is in neither {} nor {}",
                source.display(),
                diff.display()
            )));
        }
        fs::rename(&source, &diff).map_err(MigrateError::io("move into overlay2", &source))?;
        sync_dir(&staging)?;
        if let Some(aufs_diffs) = source.parent() {
            sync_dir(aufs_diffs)?;
        }
    }
    stop_if(crash_at, CrashPoint::AfterMove(index))?;

    let stats = whiteouts::convert(&diff)?;
    stop_if(crash_at, CrashPoint::AfterWhiteouts(index))?;

    let link = ensure_link_file(&staging)?;
    let link_path = home.join("l").join(&link);
    let target = Path::new("..").join(id).join("diff");
    match fs::read_link(&link_path) {
        Ok(existing) if existing == target => {}
        Ok(existing) => {
            return Err(layer_err(format!(
                "{} already points to {}",
                link_path.display(),
                existing.display()
            )));
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            std::os::unix::fs::symlink(&target, &link_path)
                .map_err(MigrateError::io("create link", &link_path))?;
        }
        Err(e) => return Err(MigrateError::io("read link", &link_path)(e)),
    }

    if !parents.is_empty() {
        let mut lowers = Vec::with_capacity(parents.len());
        for parent in parents {
            let parent_link = home.join(parent).join("link");
            let link = fs::read_to_string(&parent_link)
                .map_err(MigrateError::io("read link of parent", &parent_link))?;
            lowers.push(format!("l/{}", link.trim()));
        }
        let lower = staging.join("lower");
        fsutil::write_atomic(&lower, lowers.join(":").as_bytes(), 0o644)
            .map_err(MigrateError::io("write", &lower))?;
        let work = staging.join("work");
        fsutil::ensure_dir(&work, 0o700).map_err(MigrateError::io("create", &work))?;
    }

    fs::rename(&staging, &final_dir).map_err(MigrateError::io("rename into place", &staging))?;
    sync_dir(&home)?;
    mark_committed(&home, parents)?;
    Ok(stats)
}

/// The layer's short link name: the one a crashed run already chose, or a
/// new one.
fn ensure_link_file(staging: &Path) -> Result<String, MigrateError> {
    let path = staging.join("link");
    match fs::read_to_string(&path) {
        Ok(link) if link.trim().len() == LINK_ID_LEN => return Ok(link.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(MigrateError::io("read", &path)(e)),
    }
    let link = fsutil::random_base32(LINK_ID_LEN);
    fsutil::write_atomic(&path, link.as_bytes(), 0o644)
        .map_err(MigrateError::io("write", &path))?;
    Ok(link)
}

/// A layer with children is mounted read-only by overlay2 (`committed`).
fn mark_committed(home: &Path, parents: &[String]) -> Result<(), MigrateError> {
    if let Some(parent) = parents.first() {
        let committed = home.join(parent).join("committed");
        if !committed.exists() {
            fsutil::write_atomic(&committed, b"", 0o600)
                .map_err(MigrateError::io("write", &committed))?;
        }
    }
    Ok(())
}

pub(crate) fn stop_if(crash_at: Option<CrashPoint>, here: CrashPoint) -> Result<(), MigrateError> {
    if crash_at == Some(here) {
        return Err(MigrateError::Interrupted {
            at: format!("{here:?}"),
        });
    }
    Ok(())
}

/// syncfs(2) of the filesystem holding `root`: every whiteout made and
/// marker removed in a layer is on disk before the journal says it is done.
pub(crate) fn sync_fs(root: &Path) -> Result<(), MigrateError> {
    let dir = fs::File::open(root).map_err(MigrateError::io("open", root))?;
    nix::unistd::syncfs(&dir).map_err(MigrateError::nix("syncfs", root))
}

/// fsync of a directory, so the renames in it survive a power loss.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), MigrateError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(MigrateError::io("fsync", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_fit_both_stores() {
        assert!(valid_id("0123abcd-init"));
        assert!(!valid_id("l"));
        assert!(!valid_id(".hidden"));
        assert!(!valid_id("a/b"));
        assert!(!valid_id("x.migrating"));
    }
}
