//! What a layer changed, as `docker diff` lists it (`A /x`, `C /y`,
//! `D /z`): [`changes_overlay`] reads an overlay upper dir against its
//! lowers (moby's `OverlayChanges`), [`changes_naive`] compares two full
//! trees (moby's `ChangesDirs`, the fallback for drivers without a native
//! diff). Both return changes sorted by path.

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsString;
use std::fmt;
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::error::ArchiveError;
use super::whiteout::OVERLAY_OPAQUE_XATTR;
use super::xattrs;
use crate::sys::xattr;

/// The kind of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// `C`: present before and after, different.
    Modified,
    /// `A`: new.
    Added,
    /// `D`: gone.
    Deleted,
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChangeKind::Modified => "C",
            ChangeKind::Added => "A",
            ChangeKind::Deleted => "D",
        })
    }
}

/// One changed path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Change {
    /// Absolute in the container, like `/etc/hosts`.
    pub path: PathBuf,
    pub kind: ChangeKind,
}

impl Change {
    fn new(path: PathBuf, kind: ChangeKind) -> Self {
        Change { path, kind }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.path.display())
    }
}

/// Sorts by path bytes (as Go sorts strings) and keeps the first change
/// of each path.
fn sorted(mut changes: Vec<Change>) -> Vec<Change> {
    changes.sort_by(|a, b| {
        a.path
            .as_os_str()
            .as_bytes()
            .cmp(b.path.as_os_str().as_bytes())
    });
    changes.dedup_by(|b, a| a.path == b.path);
    changes
}

fn lstat(path: &Path) -> Result<Option<Metadata>, ArchiveError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Ok(None),
        Err(e) => Err(ArchiveError::path("lstat", path, e)),
    }
}

fn is_overlay_whiteout(m: &Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

fn is_opaque(path: &Path) -> Result<bool, ArchiveError> {
    Ok(xattr::lget(path, OVERLAY_OPAQUE_XATTR)
        .map_err(|e| ArchiveError::path("reading xattr of", path, e))?
        .as_deref()
        == Some(b"y"))
}

/// moby's `sameFsTime`: equal, or the same second when one side has no
/// sub-second part (a filesystem or tar without nanoseconds).
fn same_time(a: &Metadata, b: &Metadata) -> bool {
    (a.mtime() == b.mtime() && a.mtime_nsec() == b.mtime_nsec())
        || (a.mtime() == b.mtime() && (a.mtime_nsec() == 0 || b.mtime_nsec() == 0))
}

/// Names in `dir`, sorted by bytes; empty when `dir` is not a directory.
fn names(dir: &Path) -> Result<Vec<OsString>, ArchiveError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            return Ok(Vec::new());
        }
        Err(e) => return Err(ArchiveError::path("reading directory", dir, e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        out.push(
            entry
                .map_err(|e| ArchiveError::path("reading directory", dir, e))?
                .file_name(),
        );
    }
    out.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(out)
}

/// The changes recorded in the overlay `upper` dir over `lower_dirs`
/// (topmost first). Only the upper dir is walked: a char 0/0 is a deletion;
/// an opaque dir is modified and every lower child it hides is deleted; a
/// path present in a lower is modified (a directory only if its mode, size
/// or mtime differ), otherwise added. The parent of an added or deleted
/// path is listed as modified.
pub fn changes_overlay(upper: &Path, lower_dirs: &[PathBuf]) -> Result<Vec<Change>, ArchiveError> {
    let mut changes = Vec::new();
    let mut changed_dirs: HashSet<PathBuf> = HashSet::new();
    let walk = walkdir::WalkDir::new(upper)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name();
    for entry in walk {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(upper).to_path_buf();
            ArchiveError::path("walking", path, e.into())
        })?;
        let rel = entry
            .path()
            .strip_prefix(upper)
            .expect("below the walk root");
        let path = Path::new("/").join(rel);
        let meta = entry
            .metadata()
            .map_err(|e| ArchiveError::path("lstat", entry.path(), e.into()))?;
        let mut extra = Vec::new();
        let kind = if is_overlay_whiteout(&meta) {
            ChangeKind::Deleted
        } else if meta.is_dir() && is_opaque(entry.path())? {
            // Every child the lowers had and the upper does not is hidden.
            let mut hidden = BTreeSet::new();
            for lower in lower_dirs {
                let dir = lower.join(rel);
                for name in names(&dir)? {
                    let child = lstat(&dir.join(&name))?;
                    if child.is_some_and(|c| !is_overlay_whiteout(&c)) {
                        hidden.insert(name.as_bytes().to_vec());
                    }
                }
                if is_opaque(&dir).unwrap_or(false) {
                    break;
                }
            }
            for name in hidden {
                let name = OsString::from(std::ffi::OsStr::from_bytes(&name));
                if lstat(&entry.path().join(&name))?.is_none() {
                    extra.push(Change::new(path.join(name), ChangeKind::Deleted));
                }
            }
            ChangeKind::Modified
        } else {
            match against_lowers(lower_dirs, rel, &meta)? {
                Some(kind) => kind,
                None => continue,
            }
        };
        if meta.is_dir() {
            changed_dirs.insert(path.clone());
        }
        if matches!(kind, ChangeKind::Added | ChangeKind::Deleted) {
            if let Some(parent) = path.parent() {
                if parent != Path::new("/") && changed_dirs.insert(parent.to_path_buf()) {
                    changes.push(Change::new(parent.to_path_buf(), ChangeKind::Modified));
                }
            }
        }
        changes.push(Change::new(path, kind));
        changes.extend(extra);
    }
    Ok(sorted(changes))
}

/// Added or modified, judged by the topmost lower holding `rel`; `None`
/// for a directory whose mode, size and mtime are unchanged.
fn against_lowers(
    lower_dirs: &[PathBuf],
    rel: &Path,
    meta: &Metadata,
) -> Result<Option<ChangeKind>, ArchiveError> {
    for lower in lower_dirs {
        let Some(old) = lstat(&lower.join(rel))? else {
            continue;
        };
        if is_overlay_whiteout(&old) {
            return Ok(Some(ChangeKind::Added));
        }
        let unchanged_dir = old.is_dir()
            && meta.is_dir()
            && old.len() == meta.len()
            && old.mode() == meta.mode()
            && same_time(&old, meta);
        return Ok((!unchanged_dir).then_some(ChangeKind::Modified));
    }
    Ok(Some(ChangeKind::Added))
}

/// moby's `statDifferent` plus xattrs and symlink targets: type and mode,
/// owner, device number, and for non-directories mtime and size. A
/// directory whose mtime alone changed is not a change.
fn differs(new: &Path, n: &Metadata, old: &Path, o: &Metadata) -> Result<bool, ArchiveError> {
    if n.mode() != o.mode() || n.uid() != o.uid() || n.gid() != o.gid() || n.rdev() != o.rdev() {
        return Ok(true);
    }
    if !n.is_dir() && (!same_time(n, o) || n.len() != o.len()) {
        return Ok(true);
    }
    if n.file_type().is_symlink() {
        let a = std::fs::read_link(new).map_err(|e| ArchiveError::path("readlink", new, e))?;
        let b = std::fs::read_link(old).map_err(|e| ArchiveError::path("readlink", old, e))?;
        if a != b {
            return Ok(true);
        }
    }
    Ok(xattrs::read(new)? != xattrs::read(old)?)
}

/// The changes that turn the tree `parent` (none: an empty tree) into the
/// tree `layer`, as moby's `ChangesDirs` computes them for vfs, btrfs and
/// devicemapper.
pub fn changes_naive(layer: &Path, parent: Option<&Path>) -> Result<Vec<Change>, ArchiveError> {
    let mut changes = Vec::new();
    let old_root = parent.map(Path::to_path_buf);
    compare_dir(layer, old_root.as_deref(), Path::new("/"), &mut changes)?;
    Ok(sorted(changes))
}

/// Adds every path below the new directory `new` as added.
fn add_all(new: &Path, path: &Path, changes: &mut Vec<Change>) -> Result<(), ArchiveError> {
    for name in names(new)? {
        let child = new.join(&name);
        let cpath = path.join(&name);
        changes.push(Change::new(cpath.clone(), ChangeKind::Added));
        if lstat(&child)?.is_some_and(|m| m.is_dir()) {
            add_all(&child, &cpath, changes)?;
        }
    }
    Ok(())
}

/// Compares the children of the directories `new` and `old`. Returns
/// whether anything below changed.
fn compare_dir(
    new: &Path,
    old: Option<&Path>,
    path: &Path,
    changes: &mut Vec<Change>,
) -> Result<bool, ArchiveError> {
    let Some(old) = old else {
        let before = changes.len();
        add_all(new, path, changes)?;
        return Ok(changes.len() > before);
    };
    let new_names = names(new)?;
    let old_names = names(old)?;
    let new_set: HashSet<&OsString> = new_names.iter().collect();
    let before = changes.len();
    for name in &new_names {
        let n_path = new.join(name);
        let o_path = old.join(name);
        let cpath = path.join(name);
        let Some(n) = lstat(&n_path)? else { continue };
        let Some(o) = lstat(&o_path)? else {
            changes.push(Change::new(cpath.clone(), ChangeKind::Added));
            if n.is_dir() {
                add_all(&n_path, &cpath, changes)?;
            }
            continue;
        };
        // The same inode on the same device (a shared or cloned tree).
        if n.dev() == o.dev() && n.ino() == o.ino() {
            continue;
        }
        let modified = differs(&n_path, &n, &o_path, &o)?;
        let mark = changes.len();
        if modified {
            changes.push(Change::new(cpath.clone(), ChangeKind::Modified));
        }
        if n.is_dir() {
            let old_dir = if o.is_dir() {
                Some(o_path.as_path())
            } else {
                None
            };
            let below = compare_dir(&n_path, old_dir, &cpath, changes)?;
            if below && !modified {
                changes.insert(mark, Change::new(cpath, ChangeKind::Modified));
            }
        }
    }
    for name in &old_names {
        if !new_set.contains(name) {
            changes.push(Change::new(path.join(name), ChangeKind::Deleted));
        }
    }
    Ok(changes.len() > before)
}
