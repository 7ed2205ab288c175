//! Filesystem operations confined to the extraction destination. Parent
//! directories are reached with `openat2(RESOLVE_IN_ROOT)` (so a symlink an
//! earlier entry created, even `a -> /etc`, resolves inside the
//! destination), and every change happens with `*at` calls on the last
//! component, which is never followed.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FchmodatFlags, FileStat, Mode, SFlag, fchmodat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::sys::openat::open_dir_in_root;

/// Mode of directories created because an entry needs them
/// (moby's `ImpliedDirectoryMode`).
pub(crate) const IMPLIED_DIR_MODE: u32 = 0o755;

/// The destination directory, held open.
pub(crate) struct Root {
    fd: OwnedFd,
}

/// Splits a cleaned relative name into its parent and its last component.
pub(crate) fn split(rel: &Path) -> (&Path, &OsStr) {
    let parent = rel.parent().unwrap_or(Path::new(""));
    let base = rel.file_name().unwrap_or(rel.as_os_str());
    (parent, base)
}

/// `lstat` of `name` in `dir`; `None` when it does not exist.
pub(crate) fn lstat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<FileStat>> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The file type bits of a stat.
pub(crate) fn file_type(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// Names in the directory `dir`, without `.` and `..`.
pub(crate) fn read_names(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let mut d = Dir::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for entry in d.iter() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    Ok(names)
}

/// Opens the directory `name` in `dir` without following a symlink.
pub(crate) fn open_subdir(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

/// Removes `name` in `dir` and, for a directory, everything below it; a
/// missing `name` is not an error. Symlinks are removed, never followed.
pub(crate) fn remove_all_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let Some(st) = lstat_at(dir, name)? else {
        return Ok(());
    };
    if file_type(&st) == SFlag::S_IFDIR {
        let sub = open_subdir(dir, name)?;
        for child in read_names(sub.as_fd())? {
            remove_all_at(sub.as_fd(), &child)?;
        }
        unlinkat(dir, name, UnlinkatFlags::RemoveDir)?;
    } else {
        match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A path naming `name` in the open directory `dir` for path-only calls
/// (`lsetxattr`): the directory is reached through its descriptor and the
/// last component is not followed by the `l*` calls.
pub(crate) fn fd_path(dir: BorrowedFd<'_>, name: &OsStr) -> PathBuf {
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    p.push(name);
    p
}

impl Root {
    /// Opens the existing directory `path`.
    pub(crate) fn open(path: &Path) -> io::Result<Root> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root { fd })
    }

    /// The open root directory.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens the directory `rel` (cleaned, relative; empty for the root)
    /// inside the root. With `create`, missing directories are made with
    /// [`IMPLIED_DIR_MODE`], as tar extraction does for implied parents.
    /// ENOTDIR means a component exists and is not a directory.
    pub(crate) fn open_dir(&self, rel: &Path, create: bool) -> io::Result<OwnedFd> {
        match open_dir_in_root(&self.fd, rel) {
            Err(Errno::ENOENT) if create => {}
            other => return other.map_err(io::Error::from),
        }
        let mut cur = open_dir_in_root(&self.fd, Path::new(""))?;
        let mut prefix = PathBuf::new();
        for comp in rel.components() {
            let name = comp.as_os_str();
            prefix.push(name);
            match open_dir_in_root(&self.fd, &prefix) {
                Ok(fd) => cur = fd,
                Err(Errno::ENOENT) => {
                    match mkdirat(&cur, name, Mode::from_bits_truncate(IMPLIED_DIR_MODE)) {
                        Ok(()) => fchmodat(
                            &cur,
                            name,
                            Mode::from_bits_truncate(IMPLIED_DIR_MODE),
                            FchmodatFlags::NoFollowSymlink,
                        )?,
                        // A dangling symlink: reopening fails below.
                        Err(Errno::EEXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    cur = open_dir_in_root(&self.fd, &prefix)?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(cur)
    }
}
