//! Copying an image's content at a mount destination into an empty volume,
//! as moby's `copyExistingContents` (continuity's `fs.CopyDir`) does: the
//! directory itself and everything below it, with owners, modes (setuid
//! and sticky bits included), extended attributes (unsupported ones
//! skipped), timestamps, hard links, symlinks, device nodes and fifos.
//! Symlinks are copied, never followed.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt, lchown};
use std::path::Path;

use nix::sys::stat::{Mode, SFlag, UtimensatFlags, mknod, utimensat};
use nix::sys::time::TimeSpec;

use crate::sys::xattr;

/// Copies the contents of `src` into the existing empty directory `dst`
/// and gives `dst` the owner, mode, xattrs and times of `src`.
pub fn copy_dir_contents(src: &Path, dst: &Path) -> io::Result<()> {
    let mut links = HashMap::new();
    copy_children(src, dst, &mut links)?;
    let meta = fs::symlink_metadata(src)?;
    copy_metadata(src, dst, &meta)
}

fn copy_children(
    src: &Path,
    dst: &Path,
    links: &mut HashMap<(u64, u64), std::path::PathBuf>,
) -> io::Result<()> {
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = fs::symlink_metadata(&from)?;
        let kind = meta.file_type();
        if !kind.is_dir() && meta.nlink() > 1 {
            if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                fs::hard_link(first, &to)?;
                continue;
            }
            links.insert((meta.dev(), meta.ino()), to.clone());
        }
        if kind.is_dir() {
            fs::DirBuilder::new().mode(0o700).create(&to)?;
            copy_children(&from, &to, links)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
        } else if kind.is_file() {
            fs::copy(&from, &to)?;
        } else {
            let sflag = SFlag::from_bits_truncate(meta.mode() & SFlag::S_IFMT.bits());
            mknod(
                &to,
                sflag,
                Mode::from_bits_truncate(meta.mode() & 0o7777),
                meta.rdev(),
            )
            .map_err(io::Error::from)?;
        }
        copy_metadata(&from, &to, &meta)?;
    }
    Ok(())
}

/// Owner, then mode (chown clears setuid), xattrs, then times last.
fn copy_metadata(from: &Path, to: &Path, meta: &fs::Metadata) -> io::Result<()> {
    lchown(to, Some(meta.uid()), Some(meta.gid()))?;
    let symlink = meta.file_type().is_symlink();
    if !symlink {
        fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    copy_xattrs(from, to)?;
    let atime = TimeSpec::new(meta.atime(), meta.atime_nsec());
    let mtime = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    utimensat(
        nix::fcntl::AT_FDCWD,
        to,
        &atime,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOTSUP) | Some(libc::EPERM) | Some(libc::ENODATA)
    )
}

fn copy_xattrs(from: &Path, to: &Path) -> io::Result<()> {
    let names = match xattr::llist(from) {
        Ok(names) => names,
        Err(e) if unsupported(&e) => return Ok(()),
        Err(e) => return Err(e),
    };
    for name in names {
        let Some(value) = xattr::lget(from, &name)? else {
            continue;
        };
        match xattr::lset(to, &name, &value) {
            Err(e) if !unsupported(&e) => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Whether `dir` has no entries.
pub fn is_empty_dir(dir: &Path) -> io::Result<bool> {
    Ok(fs::read_dir(dir)?.next().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_tree_modes_links_and_times() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let dst = dir.path().join("dst");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::create_dir(&dst).unwrap();
        fs::write(src.join("sub/f"), b"data").unwrap();
        fs::set_permissions(src.join("sub/f"), fs::Permissions::from_mode(0o4751)).unwrap();
        fs::hard_link(src.join("sub/f"), src.join("hard")).unwrap();
        std::os::unix::fs::symlink("/nowhere", src.join("link")).unwrap();
        fs::set_permissions(&src, fs::Permissions::from_mode(0o1777)).unwrap();
        copy_dir_contents(&src, &dst).unwrap();
        assert_eq!(fs::read(dst.join("sub/f")).unwrap(), b"data");
        let m = fs::metadata(dst.join("sub/f")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o4751);
        assert_eq!(m.ino(), fs::metadata(dst.join("hard")).unwrap().ino());
        assert_eq!(
            fs::read_link(dst.join("link")).unwrap(),
            Path::new("/nowhere")
        );
        assert_eq!(fs::metadata(&dst).unwrap().mode() & 0o7777, 0o1777);
        assert_eq!(
            fs::metadata(dst.join("sub/f")).unwrap().mtime(),
            fs::metadata(src.join("sub/f")).unwrap().mtime()
        );
        assert!(!is_empty_dir(&dst).unwrap());
    }
}
