//! A full copy of a directory tree, as vfs makes each child layer (moby's
//! `copy.DirCopy` in content mode): directories first, then every file on
//! a small thread pool (content by [`Copier`]: clone, copy range or
//! read/write, holes kept), hard links within the tree re-linked, and
//! symlinks, fifos, sockets and devices recreated. Owners, modes, xattrs
//! (`security.capability` included) and nanosecond atimes/mtimes are kept;
//! directory times are set last, after their content.

use std::fs::{self, File, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use nix::fcntl::AT_FDCWD;
use nix::sys::stat::{Mode, SFlag, UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;

use crate::driver::DriverError;
use crate::sys::copy::{Copier, Method};
use crate::sys::xattr;

/// What a tree copy did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    pub dirs: u64,
    /// Regular files copied (hard links not counted).
    pub files: u64,
    pub hardlinks: u64,
    /// Symlinks, fifos, sockets and devices.
    pub specials: u64,
    /// Content bytes of the copied files.
    pub bytes: u64,
    /// Files copied by FICLONE, `copy_file_range` and read/write.
    pub cloned: u64,
    pub ranged: u64,
    pub read_write: u64,
}

struct Item {
    rel: PathBuf,
    meta: Metadata,
}

/// Copies the tree `src` into the existing empty directory `dst` (which
/// takes the metadata of `src`) with `threads` workers; FICLONE is tried
/// first when `try_clone`.
pub fn copy_tree(
    src: &Path,
    dst: &Path,
    threads: usize,
    try_clone: bool,
) -> Result<CopyStats, DriverError> {
    let mut dirs: Vec<Item> = Vec::new();
    let mut items: Vec<Item> = Vec::new();
    let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut first_name: std::collections::HashMap<(u64, u64), PathBuf> = Default::default();
    for entry in walkdir::WalkDir::new(src).follow_links(false) {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(src).to_path_buf();
            DriverError::io("walk", path)(e.into())
        })?;
        let meta = entry
            .metadata()
            .map_err(|e| DriverError::io("lstat", entry.path())(e.into()))?;
        let rel = entry
            .path()
            .strip_prefix(src)
            .expect("walkdir yields paths below its root")
            .to_path_buf();
        if meta.is_dir() {
            if !rel.as_os_str().is_empty() {
                let path = dst.join(&rel);
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&path)
                    .map_err(DriverError::io("mkdir", &path))?;
            }
            dirs.push(Item { rel, meta });
            continue;
        }
        if meta.is_file() && meta.nlink() > 1 {
            match first_name.entry((meta.dev(), meta.ino())) {
                std::collections::hash_map::Entry::Occupied(first) => {
                    links.push((first.get().clone(), rel));
                    continue;
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(rel.clone());
                }
            }
        }
        items.push(Item { rel, meta });
    }

    let copier = Copier::new(try_clone);
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<DriverError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    if let Err(e) = copy_item(src, dst, item, &copier) {
                        failed.store(true, Ordering::Relaxed);
                        let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                        slot.get_or_insert(e);
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }

    for (first, rel) in &links {
        let path = dst.join(rel);
        fs::hard_link(dst.join(first), &path).map_err(DriverError::io("link", &path))?;
    }
    // Deepest first is not needed for times (a child's metadata does not
    // touch its parent's mtime), but every entry must exist by now.
    for dir in dirs.iter().rev() {
        let path = dst.join(&dir.rel);
        std::os::unix::fs::lchown(&path, Some(dir.meta.uid()), Some(dir.meta.gid()))
            .map_err(DriverError::io("chown", &path))?;
        fs::set_permissions(&path, permissions(&dir.meta))
            .map_err(DriverError::io("chmod", &path))?;
        copy_xattrs(&src.join(&dir.rel), &path, false)?;
        set_times(&path, &dir.meta)?;
    }

    let mut stats = CopyStats {
        dirs: dirs.len() as u64,
        hardlinks: links.len() as u64,
        cloned: copier.count(Method::Clone),
        ranged: copier.count(Method::CopyRange),
        read_write: copier.count(Method::ReadWrite),
        ..CopyStats::default()
    };
    for item in &items {
        if item.meta.is_file() {
            stats.files += 1;
            stats.bytes += item.meta.len();
        } else {
            stats.specials += 1;
        }
    }
    Ok(stats)
}

fn permissions(meta: &Metadata) -> fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    fs::Permissions::from_mode(meta.mode() & 0o7777)
}

fn copy_item(src: &Path, dst: &Path, item: &Item, copier: &Copier) -> Result<(), DriverError> {
    let from = src.join(&item.rel);
    let to = dst.join(&item.rel);
    let meta = &item.meta;
    let kind = meta.file_type();
    if kind.is_file() {
        let input = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&from)
            .map_err(DriverError::io("open", &from))?;
        let output = File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&to)
            .map_err(DriverError::io("create", &to))?;
        copier
            .copy(&input, &output, meta.len())
            .map_err(DriverError::io("copy content to", &to))?;
        // chown clears set-id bits and security.capability: chown first,
        // then mode and xattrs.
        std::os::unix::fs::fchown(&output, Some(meta.uid()), Some(meta.gid()))
            .map_err(DriverError::io("chown", &to))?;
        output
            .set_permissions(permissions(meta))
            .map_err(DriverError::io("chmod", &to))?;
        copy_xattrs(&from, &to, false)?;
        let times = [
            timespec(meta.atime(), meta.atime_nsec()),
            timespec(meta.mtime(), meta.mtime_nsec()),
        ];
        nix::sys::stat::futimens(&output, &times[0], &times[1])
            .map_err(|e| DriverError::io("set times", &to)(e.into()))?;
        return Ok(());
    }
    if kind.is_symlink() {
        let target = fs::read_link(&from).map_err(DriverError::io("readlink", &from))?;
        std::os::unix::fs::symlink(&target, &to).map_err(DriverError::io("symlink", &to))?;
        std::os::unix::fs::lchown(&to, Some(meta.uid()), Some(meta.gid()))
            .map_err(DriverError::io("chown", &to))?;
        copy_xattrs(&from, &to, true)?;
        return set_times(&to, meta);
    }
    let sflag = if kind.is_fifo() {
        SFlag::S_IFIFO
    } else if kind.is_socket() {
        SFlag::S_IFSOCK
    } else if kind.is_char_device() {
        SFlag::S_IFCHR
    } else if kind.is_block_device() {
        SFlag::S_IFBLK
    } else {
        return Err(DriverError::io("copy", &from)(std::io::Error::other(
            "unknown file type",
        )));
    };
    nix::sys::stat::mknod(
        &to,
        sflag,
        Mode::from_bits_truncate(meta.mode() & 0o7777),
        meta.rdev(),
    )
    .map_err(|e| DriverError::io("mknod", &to)(e.into()))?;
    std::os::unix::fs::lchown(&to, Some(meta.uid()), Some(meta.gid()))
        .map_err(DriverError::io("chown", &to))?;
    fs::set_permissions(&to, permissions(meta)).map_err(DriverError::io("chmod", &to))?;
    copy_xattrs(&from, &to, false)?;
    set_times(&to, meta)
}

fn timespec(secs: i64, nsecs: i64) -> TimeSpec {
    TimeSpec::new(secs, nsecs)
}

/// atime and mtime of `path` itself (a symlink is not followed).
fn set_times(path: &Path, meta: &Metadata) -> Result<(), DriverError> {
    utimensat(
        AT_FDCWD,
        path,
        &timespec(meta.atime(), meta.atime_nsec()),
        &timespec(meta.mtime(), meta.mtime_nsec()),
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| DriverError::io("set times", path)(e.into()))
}

/// Every xattr of `from` onto `to`; for a symlink, the ones the kernel
/// refuses on symlinks (`user.*`: EPERM) are skipped.
fn copy_xattrs(from: &Path, to: &Path, symlink: bool) -> Result<(), DriverError> {
    let names = match xattr::llist(from) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(()),
        Err(e) => return Err(DriverError::io("list xattrs", from)(e)),
    };
    for name in names {
        let Some(value) = xattr::lget(from, &name).map_err(DriverError::io("read xattr", from))?
        else {
            continue;
        };
        match xattr::lset(to, &name, &value) {
            Ok(()) => {}
            Err(e) if symlink && e.raw_os_error() == Some(libc::EPERM) => {}
            Err(e) => {
                let what = format!("set xattr {}", String::from_utf8_lossy(name.as_bytes()));
                return Err(DriverError::Io {
                    op: "copy xattr",
                    path: to.to_path_buf(),
                    source: std::io::Error::new(e.kind(), format!("{what}: {e}")),
                });
            }
        }
    }
    Ok(())
}
