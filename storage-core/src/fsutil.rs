//! Small filesystem helpers shared by the drivers and stores: atomic file
//! writes (temp name, fsync, rename), directory sizes as Docker counts them,
//! random ids and the filesystem type behind a path.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Writes `contents` to `path` through a temporary name in the same
/// directory and renames it into place, so readers never see half a file.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The bytes under `dir` as moby's `directory.Size` counts them: the size
/// of every non-directory entry, hard links once.
pub fn directory_size(dir: &Path) -> io::Result<u64> {
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in fs::read_dir(&current)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
                continue;
            }
            if meta.nlink() > 1 && !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            total += meta.size();
        }
    }
    Ok(total)
}

/// A random id of `len` characters from base32's alphabet (A-Z, 2-7), as
/// moby's overlayutils.GenerateID makes the 26-character `l/` link names.
pub fn random_base32(len: usize) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    (0..len)
        .map(|_| ALPHABET[rand::random_range(0..32usize)] as char)
        .collect()
}

/// A random 64-hex id, as Docker's cache-ids and container ids.
pub fn random_hex_id() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

/// Creates `dir` and returns whether it had to.
pub fn ensure_dir(dir: &Path, mode: u32) -> io::Result<bool> {
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes `dir` recursively; a missing directory is not an error.
pub fn remove_all(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The name of the filesystem type holding `path` (`ext4`, `xfs`, ...).
pub fn filesystem_name(path: &Path) -> io::Result<&'static str> {
    let stat = nix::sys::statfs::statfs(path).map_err(io::Error::from)?;
    let magic = stat.filesystem_type().0 as u64;
    Ok(match magic {
        0xEF53 => "extfs",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x0102_1994 => "tmpfs",
        0x794C_7630 => "overlayfs",
        0x6573_5546 => "fuse",
        0x5346_544E => "ntfs",
        _ => "<unknown>",
    })
}

/// Whether the file system at `dir` clones files (FICLONE), tried on two
/// scratch files there.
pub fn supports_reflink(dir: &Path) -> bool {
    let Ok(scratch) = tempfile::Builder::new()
        .prefix(".reflink-probe-")
        .tempdir_in(dir)
    else {
        return false;
    };
    let src_path = scratch.path().join("a");
    let dst_path = scratch.path().join("b");
    // FICLONE reads the source: it must be open for reading too.
    let Ok(mut src) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&src_path)
    else {
        return false;
    };
    if src
        .write_all(&[1u8; 4096])
        .and_then(|_| src.sync_all())
        .is_err()
    {
        return false;
    }
    let Ok(dst) = File::create(&dst_path) else {
        return false;
    };
    crate::sys::reflink::clone_file(&src, &dst).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_contents_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomic(&path, b"one", 0o644).unwrap();
        write_atomic(&path, b"two", 0o644).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn directory_size_counts_hard_links_once() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), vec![0u8; 1000]).unwrap();
        fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/c"), vec![0u8; 24]).unwrap();
        assert_eq!(directory_size(dir.path()).unwrap(), 1024);
    }

    #[test]
    fn random_ids_have_docker_shapes() {
        let link = random_base32(26);
        assert_eq!(link.len(), 26);
        assert!(
            link.bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
        );
        let id = random_hex_id();
        assert_eq!(id.len(), 64);
        assert_ne!(id, random_hex_id());
    }
}
