//! Copy-up: before the union changes anything that lives in a read-only
//! branch, the entry is copied to the writable branch with its mode,
//! owner, times and xattrs (contents with FICLONE, else copy_file_range,
//! else a plain copy), parent directories first. Files are built under
//! `<rw>/.wh..wh.plnk/` and renamed into place, so a crash never leaves a
//! half-copied file visible.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

use super::branch::{Branches, PLINK_DIR};
use crate::sys::{reflink, xattr};

fn errno(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Sets `path`'s access and modification times (symlinks not followed).
pub fn set_times(path: &Path, atime: TimeSpec, mtime: TimeSpec) -> io::Result<()> {
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &atime,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(errno)
}

fn times_of(meta: &Metadata) -> (TimeSpec, TimeSpec) {
    (
        TimeSpec::new(meta.atime(), meta.atime_nsec()),
        TimeSpec::new(meta.mtime(), meta.mtime_nsec()),
    )
}

/// Copies owner, mode, xattrs and times of `meta` (the source `src`) to
/// `dst`. Xattrs the destination refuses are skipped.
fn copy_metadata(src: &Path, meta: &Metadata, dst: &Path) -> io::Result<()> {
    std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()))?;
    if !meta.file_type().is_symlink() {
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    for name in xattr::llist(src).unwrap_or_default() {
        if let Ok(Some(value)) = xattr::lget(src, &name) {
            let _ = xattr::lset(dst, &name, &value);
        }
    }
    let (atime, mtime) = times_of(meta);
    set_times(dst, atime, mtime)
}

/// Copies the contents of `src` into the empty `dst`: FICLONE, else
/// `io::copy` (copy_file_range, then sendfile, inside std).
fn copy_contents(src: &File, dst: &File, len: u64) -> io::Result<()> {
    if len == 0 || reflink::clone_file(src, dst).is_ok() {
        return Ok(());
    }
    let mut reader = src;
    let mut writer = dst;
    io::copy(&mut reader, &mut writer).map(drop)
}

fn staging_path(branches: &Branches) -> io::Result<PathBuf> {
    let dir = branches.rw().join(PLINK_DIR);
    match fs::create_dir(&dir) {
        Ok(()) => fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    Ok(dir.join(format!("copyup.{}", crate::fsutil::random_hex_id())))
}

/// Makes sure the directory `rel` and its parents exist in the writable
/// branch, copying each missing one from the topmost read-only branch that
/// has it.
pub fn ensure_dirs(branches: &Branches, rel: &Path) -> io::Result<()> {
    let mut prefix = PathBuf::new();
    for component in rel.components() {
        prefix.push(component);
        let target = branches.path(0, &prefix);
        match fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let source = (1..branches.len())
            .map(|b| branches.path(b, &prefix))
            .find(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()))
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        let meta = fs::symlink_metadata(&source)?;
        keeping_parent_times(&target, || {
            fs::create_dir(&target)?;
            copy_metadata(&source, &meta, &target)
        })?;
    }
    Ok(())
}

/// Runs `make`, which creates `path`, and puts back the times its parent
/// had: a copy-up is not a change of the directory holding it (overlayfs
/// restores the parent's timestamps the same way, so `changes` does not
/// list every ancestor of a copied-up file).
fn keeping_parent_times(path: &Path, make: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    let before = parent.and_then(|p| fs::symlink_metadata(p).ok());
    make()?;
    if let (Some(parent), Some(meta)) = (parent, before) {
        let (atime, mtime) = times_of(&meta);
        set_times(parent, atime, mtime)?;
    }
    Ok(())
}

/// Copies the entry `rel` from read-only branch `from` to the writable
/// branch. With `truncate`, a regular file is copied without contents.
pub fn copy_up(branches: &Branches, rel: &Path, from: usize, truncate: bool) -> io::Result<()> {
    if let Some(parent) = rel.parent() {
        ensure_dirs(branches, parent)?;
    }
    let src = branches.path(from, rel);
    let dst = branches.path(0, rel);
    let meta = fs::symlink_metadata(&src)?;
    let kind = meta.file_type();
    if kind.is_dir() {
        return ensure_dirs(branches, rel);
    }
    let tmp = staging_path(branches)?;
    let built = (|| -> io::Result<()> {
        if kind.is_file() {
            let input = File::open(&src)?;
            let output = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            if !truncate {
                copy_contents(&input, &output, meta.len())?;
            }
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&src)?, &tmp)?;
        } else {
            let sflag = if kind.is_fifo() {
                SFlag::S_IFIFO
            } else if kind.is_char_device() {
                SFlag::S_IFCHR
            } else if kind.is_block_device() {
                SFlag::S_IFBLK
            } else {
                SFlag::S_IFSOCK
            };
            nix::sys::stat::mknod(
                &tmp,
                sflag,
                nix::sys::stat::Mode::from_bits_truncate(0o600),
                meta.rdev(),
            )
            .map_err(errno)?;
        }
        copy_metadata(&src, &meta, &tmp)?;
        keeping_parent_times(&dst, || fs::rename(&tmp, &dst))
    })();
    if built.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    built
}
