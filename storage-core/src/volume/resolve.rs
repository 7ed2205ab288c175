//! A mount destination resolved inside a container's root filesystem, like
//! moby's `symlink.FollowSymlinkInScope`: every component is looked at with
//! `lstat`, symlinks are followed with the root as `/` (an absolute target
//! restarts at the root), and a `..` that would climb above the root is
//! refused rather than clamped: an image whose symlink points outside its
//! own root gets a clear error, never a mount somewhere else. The target is
//! then opened with `openat2(RESOLVE_IN_ROOT)` ([`crate::sys::openat`]) and
//! mounted through `/proc/self/fd/N`, so what gets mounted on is exactly
//! what was resolved.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::sys::openat;

use super::VolumeError;

const MAX_SYMLINKS: usize = 40;

/// Where a destination lands inside the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Relative to the root, free of symlinks and `..`.
    pub relative: PathBuf,
    /// Whether the full path exists now.
    pub exists: bool,
    /// Whether what exists is a directory.
    pub is_dir: bool,
}

impl Resolved {
    pub fn host_path(&self, root: &Path) -> PathBuf {
        root.join(&self.relative)
    }
}

fn bad(destination: &str, what: String) -> VolumeError {
    VolumeError::Destination {
        destination: destination.to_string(),
        what,
    }
}

/// Resolves the absolute `destination` inside `root`.
pub fn resolve(root: &Path, destination: &str) -> Result<Resolved, VolumeError> {
    let mut pending: VecDeque<OsString> = Path::new(destination)
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut stack: Vec<OsString> = Vec::new();
    let mut links = 0;
    let mut exists = true;
    let mut is_dir = true;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            if stack.pop().is_none() {
                return Err(bad(
                    destination,
                    "a symlink in the image points outside the container root".into(),
                ));
            }
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&stack);
        candidate.push(&part);
        match std::fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(bad(destination, "too many levels of symbolic links".into()));
                }
                let target = std::fs::read_link(&candidate)
                    .map_err(super::io_err("read symlink", &candidate))?;
                if target.is_absolute() {
                    stack.clear();
                }
                for component in target.components().rev() {
                    match component {
                        Component::Normal(p) => pending.push_front(p.to_os_string()),
                        Component::ParentDir => pending.push_front("..".into()),
                        _ => {}
                    }
                }
            }
            Ok(meta) => {
                if !pending.is_empty() && !meta.is_dir() {
                    return Err(bad(
                        destination,
                        format!("{} is not a directory", candidate.display()),
                    ));
                }
                exists = true;
                is_dir = meta.is_dir();
                stack.push(part);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                exists = false;
                is_dir = false;
                stack.push(part);
            }
            Err(e) => return Err(super::io_err("stat", &candidate)(e)),
        }
    }
    if stack.is_empty() {
        return Err(bad(
            destination,
            "resolves to the container root '/'".into(),
        ));
    }
    Ok(Resolved {
        relative: stack.iter().collect(),
        exists,
        is_dir,
    })
}

/// Creates what is missing of `resolved` below `root`: parent directories
/// (0755) and the target itself, a directory when `dir`, else an empty file.
pub fn create_missing(root: &Path, resolved: &Resolved, dir: bool) -> Result<(), VolumeError> {
    if resolved.exists {
        return Ok(());
    }
    let path = resolved.host_path(root);
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(super::io_err("create mount point", parent))?;
    }
    let created = if dir {
        std::fs::DirBuilder::new().mode(0o755).create(&path)
    } else {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o755)
            .open(&path)
            .map(drop)
    };
    match created {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(super::io_err("create mount point", &path)(e))
        }
        _ => Ok(()),
    }
}

/// Opens `relative` below `root` with `RESOLVE_IN_ROOT` as an `O_PATH`
/// descriptor: mount through [`fd_path`] of it.
pub fn open_target(root: &Path, relative: &Path) -> Result<OwnedFd, VolumeError> {
    let rootfd = File::open(root).map_err(super::io_err("open", root))?;
    openat::open_in_root(
        &rootfd,
        relative,
        OFlag::O_PATH | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
    .map_err(|e| super::io_err("open in root", root.join(relative))(e.into()))
}

/// `/proc/self/fd/N`: the path mount(2) follows to exactly that file.
pub fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_resolve_inside_and_escapes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("srv/real")).unwrap();
        symlink("/srv", root.join("abs")).unwrap();
        symlink("srv/real", root.join("rel")).unwrap();
        symlink("../../../../..", root.join("up")).unwrap();
        symlink("/", root.join("toroot")).unwrap();
        std::fs::write(root.join("file"), b"").unwrap();

        let r = resolve(root, "/abs/real/data").unwrap();
        assert_eq!(r.relative, Path::new("srv/real/data"));
        assert!(!r.exists);
        let r = resolve(root, "/rel").unwrap();
        assert_eq!(r.relative, Path::new("srv/real"));
        assert!(r.exists && r.is_dir);
        let e = resolve(root, "/up/etc").unwrap_err().to_string();
        assert!(e.contains("outside the container root"), "{e}");
        assert!(resolve(root, "/toroot").is_err());
        assert!(resolve(root, "/file/x").is_err());

        let r = resolve(root, "/abs/new/deep").unwrap();
        create_missing(root, &r, true).unwrap();
        assert!(root.join("srv/new/deep").is_dir());
        let fd = open_target(root, &r.relative).unwrap();
        assert!(fd_path(&fd).starts_with("/proc/self/fd"));
    }
}
