//! Opening paths confined to a directory tree with `openat2(2)` and
//! `RESOLVE_IN_ROOT`: `..` stops at the root and absolute symlinks resolve
//! inside it, as if the process were chrooted there. This is how archive
//! extraction reaches a parent directory without ever leaving `dest`, even
//! through symlinks that earlier entries created.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::Mode;

/// Opens `path` (relative; an empty path or "." is the root itself) below
/// the directory `root` with `flags`, resolving every component as if
/// `root` were `/`. Magic links (`/proc/self/fd/N`) are refused.
pub fn open_in_root(
    root: impl AsFd,
    path: &Path,
    flags: OFlag,
    mode: Mode,
) -> nix::Result<OwnedFd> {
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .mode(mode)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    // The kernel answers EAGAIN when a concurrent rename could have let a
    // `..` escape; retrying is what the man page asks for.
    let mut tries = 0;
    loop {
        match openat2(root.as_fd(), path, how) {
            Err(Errno::EAGAIN) if tries < 16 => tries += 1,
            other => return other,
        }
    }
}

/// Opens the directory `path` below `root` (see [`open_in_root`]) for use
/// as the `dirfd` of `*at` calls and for reading its entries.
pub fn open_dir_in_root(root: impl AsFd, path: &Path) -> nix::Result<OwnedFd> {
    open_in_root(
        root,
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        Mode::empty(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn absolute_symlinks_and_dotdot_stay_inside_the_root() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/inside"), b"").unwrap();
        symlink("/etc", root.join("abs")).unwrap();
        symlink("../../..", root.join("up")).unwrap();
        let rootfd = std::fs::File::open(&root).unwrap();
        let dir = open_dir_in_root(&rootfd, Path::new("abs")).unwrap();
        let inside = nix::sys::stat::fstatat(&dir, "inside", nix::fcntl::AtFlags::empty());
        assert!(inside.is_ok(), "abs -> /etc must resolve to root/etc");
        let up = open_dir_in_root(&rootfd, Path::new("up/etc")).unwrap();
        assert!(nix::sys::stat::fstatat(&up, "inside", nix::fcntl::AtFlags::empty()).is_ok());
    }
}
