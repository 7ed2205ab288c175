//! A container's init layer, as moby's `initlayer.Setup` builds it: the
//! mount points and files the runtime bind-mounts over (`/etc/hosts`,
//! `/etc/hostname`, `/etc/resolv.conf`, `/dev/console`, `/proc`, `/sys`,
//! ...) exist as empty files or directories, and `/etc/mtab` links to
//! `/proc/mounts`.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

enum Kind {
    Dir,
    File,
    Symlink(&'static str),
}

const ENTRIES: &[(&str, Kind)] = &[
    ("/dev/pts", Kind::Dir),
    ("/dev/shm", Kind::Dir),
    ("/proc", Kind::Dir),
    ("/sys", Kind::Dir),
    ("/.dockerenv", Kind::File),
    ("/etc/resolv.conf", Kind::File),
    ("/etc/hosts", Kind::File),
    ("/etc/hostname", Kind::File),
    ("/dev/console", Kind::File),
    ("/etc/mtab", Kind::Symlink("/proc/mounts")),
];

/// The paths the init layer provides, for tests and `container diff`.
pub fn init_paths() -> impl Iterator<Item = &'static str> {
    ENTRIES.iter().map(|(path, _)| *path)
}

/// Fills the mounted init layer at `root` (the merged view of the image
/// plus the empty init layer).
pub fn setup(root: &Path) -> io::Result<()> {
    for (path, kind) in ENTRIES {
        let relative = path.trim_start_matches('/');
        // Like moby: a file or symlink where a directory of the path is
        // expected is unlinked (directories refuse, which is fine).
        let mut prefix = root.to_path_buf();
        for part in relative.split('/') {
            prefix.push(part);
            let _ = nix::unistd::unlink(&prefix);
        }
        let target = root.join(relative);
        if fs::symlink_metadata(&target).is_ok() {
            continue;
        }
        if let Some(parent) = target.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)?;
        }
        match kind {
            Kind::Dir => fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(&target)?,
            Kind::File => {
                fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(false)
                    .mode(0o755)
                    .open(&target)?;
            }
            Kind::Symlink(to) => std::os::unix::fs::symlink(to, &target)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_creates_every_entry_and_replaces_a_file_blocking_a_dir() {
        let root = tempfile::tempdir().unwrap();
        // An image whose /dev is a file: moby unlinks it to make the dir.
        fs::write(root.path().join("dev"), b"not a dir").unwrap();
        setup(root.path()).unwrap();
        assert!(root.path().join("dev/pts").is_dir());
        assert!(root.path().join("proc").is_dir());
        assert!(root.path().join("etc/hosts").is_file());
        assert!(root.path().join(".dockerenv").is_file());
        assert_eq!(
            fs::read_link(root.path().join("etc/mtab")).unwrap(),
            Path::new("/proc/mounts")
        );
        // Running it again changes nothing.
        setup(root.path()).unwrap();
        assert_eq!(init_paths().count(), 10);
    }
}
