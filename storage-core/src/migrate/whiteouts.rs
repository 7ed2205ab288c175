//! Whiteouts of one layer directory, converted in place from aufs to
//! overlay: `.wh.<name>` marker files become char 0/0 devices `<name>`,
//! `.wh..wh..opq` becomes `trusted.overlay.opaque=y` on its directory, and
//! aufs internals (`.wh..wh.plnk`, `.wh..wh.aufs`, `.wh..wh.orph`, the
//! `.wh..wh.<dir>.<n>` leftovers of an interrupted rmdir) are dropped.
//!
//! Every step is idempotent, so a conversion cut short by a crash is simply
//! run again: the device is made before its marker is removed, and a marker
//! whose device already exists is only removed. Directory and whiteout
//! times are kept as they were.

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use nix::sys::stat::{Mode, SFlag, UtimensatFlags, mknod, utimensat};
use nix::sys::time::TimeSpec;
use serde::{Deserialize, Serialize};

use super::MigrateError;
use crate::archive::whiteout::{
    self, Marker, OVERLAY_OPAQUE_XATTR, WHITEOUT_META_PREFIX, WHITEOUT_OPAQUE_DIR,
};
use crate::sys::xattr;

/// What a layer directory holds (or held) in aufs form.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhiteoutStats {
    /// `.wh.<name>` markers (deleted files and directories).
    pub whiteouts: u64,
    /// `.wh..wh..opq` markers (opaque directories).
    pub opaque_dirs: u64,
    /// aufs-internal `.wh..wh.*` entries, dropped.
    pub internal: u64,
    /// Markers whose `<name>` also exists in the same directory: the entry
    /// is kept (aufs shows it too) and the marker dropped.
    pub conflicts: u64,
}

impl WhiteoutStats {
    pub fn add(&mut self, other: &WhiteoutStats) {
        self.whiteouts += other.whiteouts;
        self.opaque_dirs += other.opaque_dirs;
        self.internal += other.internal;
        self.conflicts += other.conflicts;
    }
}

/// Counts the aufs markers under `dir` without changing anything.
pub fn scan(dir: &Path) -> Result<WhiteoutStats, MigrateError> {
    walk(dir, false)
}

/// Converts the aufs markers under `dir` to overlay whiteouts in place.
pub fn convert(dir: &Path) -> Result<WhiteoutStats, MigrateError> {
    walk(dir, true)
}

fn walk(root: &Path, apply: bool) -> Result<WhiteoutStats, MigrateError> {
    let mut stats = WhiteoutStats::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut names: Vec<(OsString, fs::FileType)> = Vec::new();
        for entry in fs::read_dir(&dir).map_err(MigrateError::io("read", &dir))? {
            let entry = entry.map_err(MigrateError::io("read", &dir))?;
            let kind = entry
                .file_type()
                .map_err(MigrateError::io("stat", entry.path()))?;
            names.push((entry.file_name(), kind));
        }
        names.sort_by(|a, b| a.0.cmp(&b.0));
        let dir_times = if apply {
            let meta = fs::symlink_metadata(&dir).map_err(MigrateError::io("stat", &dir))?;
            Some(times(&meta))
        } else {
            None
        };
        let mut changed = false;
        for (name, kind) in &names {
            let path = dir.join(name);
            let Ok(text) = std::str::from_utf8(name.as_bytes()) else {
                if kind.is_dir() {
                    stack.push(path);
                }
                continue;
            };
            if text.starts_with(WHITEOUT_META_PREFIX) && text != WHITEOUT_OPAQUE_DIR {
                stats.internal += 1;
                if apply {
                    remove_any(&path, kind)?;
                    changed = true;
                }
                continue;
            }
            match whiteout::classify(text) {
                Marker::Opaque => {
                    stats.opaque_dirs += 1;
                    if apply {
                        xattr::lset(&dir, OVERLAY_OPAQUE_XATTR, b"y")
                            .map_err(MigrateError::io("set trusted.overlay.opaque on", &dir))?;
                        remove_any(&path, kind)?;
                        changed = true;
                    }
                }
                Marker::Deleted(target) => {
                    stats.whiteouts += 1;
                    let target = dir.join(target);
                    let existing = match fs::symlink_metadata(&target) {
                        Ok(meta) => Some(meta),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                        Err(e) => return Err(MigrateError::io("stat", &target)(e)),
                    };
                    let already_device = existing.as_ref().is_some_and(is_overlay_whiteout);
                    if existing.is_some() && !already_device {
                        stats.conflicts += 1;
                    }
                    if apply {
                        if existing.is_none() {
                            make_device(&path, &target)?;
                        }
                        remove_any(&path, kind)?;
                        changed = true;
                    }
                }
                Marker::Plain | Marker::Invalid => {
                    if kind.is_dir() {
                        stack.push(path);
                    }
                }
            }
        }
        if let (true, Some((atime, mtime))) = (changed, dir_times) {
            set_times(&dir, &atime, &mtime)?;
        }
    }
    Ok(stats)
}

/// Converts the overlay whiteouts under `dir` back to aufs markers in
/// place (`migrate overlay2-to-aufs`): each char 0/0 `<name>` becomes an
/// empty `.wh.<name>` (mode 0444, the device's owner and times) and an
/// opaque directory gets `.wh..wh..opq`. The opaque xattr itself stays
/// (aufs ignores `trusted.overlay.*`). Redirects and metacopy have no aufs
/// form and are refused.
pub fn to_aufs(root: &Path) -> Result<WhiteoutStats, MigrateError> {
    let mut stats = WhiteoutStats::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let dir_meta = fs::symlink_metadata(&dir).map_err(MigrateError::io("stat", &dir))?;
        let mut changed = false;
        for attr in ["trusted.overlay.redirect", "trusted.overlay.metacopy"] {
            if xattr::lget(&dir, attr)
                .map_err(MigrateError::io("read xattrs of", &dir))?
                .is_some()
            {
                return Err(MigrateError::Layer {
                    id: root.display().to_string(),
                    why: format!("{} has {attr}, which aufs cannot represent", dir.display()),
                });
            }
        }
        if xattr::lget(&dir, OVERLAY_OPAQUE_XATTR)
            .map_err(MigrateError::io("read xattrs of", &dir))?
            .as_deref()
            == Some(b"y")
        {
            let marker = dir.join(WHITEOUT_OPAQUE_DIR);
            if fs::symlink_metadata(&marker).is_err() {
                stats.opaque_dirs += 1;
                make_marker(&marker, &dir_meta)?;
                changed = true;
            }
        }
        let mut entries = Vec::new();
        for entry in fs::read_dir(&dir).map_err(MigrateError::io("read", &dir))? {
            let entry = entry.map_err(MigrateError::io("read", &dir))?;
            entries.push(entry.path());
        }
        entries.sort();
        for path in entries {
            let meta = fs::symlink_metadata(&path).map_err(MigrateError::io("stat", &path))?;
            if meta.is_dir() {
                stack.push(path);
            } else if is_overlay_whiteout(&meta) {
                if xattr::lget(&path, "trusted.overlay.metacopy")
                    .map_err(MigrateError::io("read xattrs of", &path))?
                    .is_some()
                {
                    return Err(MigrateError::Layer {
                        id: root.display().to_string(),
                        why: format!("{} is a metacopy file", path.display()),
                    });
                }
                let mut name = OsString::from(whiteout::WHITEOUT_PREFIX);
                name.push(path.file_name().unwrap_or_default());
                let marker = dir.join(name);
                if fs::symlink_metadata(&marker).is_err() {
                    make_marker(&marker, &meta)?;
                }
                fs::remove_file(&path).map_err(MigrateError::io("remove", &path))?;
                stats.whiteouts += 1;
                changed = true;
            }
        }
        if changed {
            let (atime, mtime) = times(&dir_meta);
            set_times(&dir, &atime, &mtime)?;
        }
    }
    Ok(stats)
}

/// An empty read-only aufs marker file with `like`'s owner and times.
fn make_marker(path: &Path, like: &fs::Metadata) -> Result<(), MigrateError> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(path)
        .map_err(MigrateError::io("create", path))?;
    std::os::unix::fs::lchown(path, Some(like.uid()), Some(like.gid()))
        .map_err(MigrateError::io("chown", path))?;
    let (atime, mtime) = times(like);
    set_times(path, &atime, &mtime)
}

/// Whether `meta` is an overlay whiteout: a char device 0/0.
pub fn is_overlay_whiteout(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Makes the char 0/0 device `target` with the owner and times of the aufs
/// marker `marker` (moby's overlay whiteouts carry the tar entry's).
fn make_device(marker: &Path, target: &Path) -> Result<(), MigrateError> {
    let meta = fs::symlink_metadata(marker).map_err(MigrateError::io("stat", marker))?;
    mknod(target, SFlag::S_IFCHR, Mode::empty(), 0)
        .map_err(MigrateError::nix("create whiteout device 0/0", target))?;
    std::os::unix::fs::lchown(target, Some(meta.uid()), Some(meta.gid()))
        .map_err(MigrateError::io("chown", target))?;
    let (atime, mtime) = times(&meta);
    set_times(target, &atime, &mtime)
}

fn remove_any(path: &Path, kind: &fs::FileType) -> Result<(), MigrateError> {
    if kind.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
    .map_err(MigrateError::io("remove", path))
}

fn times(meta: &fs::Metadata) -> (TimeSpec, TimeSpec) {
    (
        TimeSpec::new(meta.atime(), meta.atime_nsec()),
        TimeSpec::new(meta.mtime(), meta.mtime_nsec()),
    )
}

fn set_times(path: &Path, atime: &TimeSpec, mtime: &TimeSpec) -> Result<(), MigrateError> {
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        atime,
        mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(MigrateError::nix("set times of", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_counts_markers_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("etc/opaque")).unwrap();
        fs::write(root.join("etc/.wh.gone"), b"").unwrap();
        fs::write(root.join("etc/opaque/.wh..wh..opq"), b"").unwrap();
        fs::create_dir(root.join(".wh..wh.plnk")).unwrap();
        fs::write(root.join(".wh..wh.aufs"), b"").unwrap();
        fs::write(root.join("etc/kept"), b"x").unwrap();
        fs::write(root.join("etc/.wh.kept"), b"").unwrap();
        let stats = scan(root).unwrap();
        assert_eq!(
            stats,
            WhiteoutStats {
                whiteouts: 2,
                opaque_dirs: 1,
                internal: 2,
                conflicts: 1
            }
        );
        assert!(root.join("etc/.wh.gone").exists());
        assert!(root.join(".wh..wh.plnk").is_dir());
    }
}
