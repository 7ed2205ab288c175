//! mount(2) and umount2(2), with errors that name the mount point and the
//! cause in one line.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

pub use nix::mount::MsFlags as MountFlags;

/// A failed mount or unmount: which operation, on which path, and why.
#[derive(Debug, thiserror::Error)]
#[error("{op} {fstype} on {target}: {source}{hint}", target = target.display())]
pub struct MountError {
    pub op: &'static str,
    pub fstype: String,
    pub target: PathBuf,
    #[source]
    pub source: nix::Error,
    /// Extra context, such as the option string, already formatted with a
    /// leading separator (empty when there is none).
    pub hint: String,
}

/// Mounts `source` on `target` as `fstype` with `data` as the option string.
pub fn mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), MountError> {
    nix::mount::mount(Some(source), target, Some(fstype), flags, data).map_err(|source| {
        MountError {
            op: "mount",
            fstype: fstype.to_string(),
            target: target.to_path_buf(),
            source,
            hint: data.map(|d| format!(" (options {d})")).unwrap_or_default(),
        }
    })
}

/// Bind-mounts `source` on `target`; with `read_only` the bind is remounted
/// read-only, as `mount --bind -o ro` does (a bind ignores MS_RDONLY on its
/// first call).
pub fn bind(source: &Path, target: &Path, read_only: bool) -> Result<(), MountError> {
    let fail = |source_err| MountError {
        op: "bind-mount",
        fstype: source.display().to_string(),
        target: target.to_path_buf(),
        source: source_err,
        hint: String::new(),
    };
    nix::mount::mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(fail)?;
    if read_only {
        nix::mount::mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(fail)?;
    }
    Ok(())
}

/// Unmounts `target`.
pub fn unmount(target: &Path) -> Result<(), MountError> {
    umount_with(target, MntFlags::empty())
}

/// Detaches `target` lazily (MNT_DETACH): the last resort of cleanup code,
/// which must not leave a mount behind even when something still uses it.
pub fn unmount_detach(target: &Path) -> Result<(), MountError> {
    umount_with(target, MntFlags::MNT_DETACH)
}

fn umount_with(target: &Path, flags: MntFlags) -> Result<(), MountError> {
    nix::mount::umount2(target, flags).map_err(|source| MountError {
        op: "unmount",
        fstype: String::new(),
        target: target.to_path_buf(),
        source,
        hint: String::new(),
    })
}

/// Whether `path` is a mount point, from /proc/self/mountinfo.
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(canonical) = path.canonicalize() else {
        return false;
    };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|mount_point| Path::new(&unescape_mountinfo(mount_point)) == canonical)
}

/// Undoes the octal escapes (`\040` for a space, ...) of /proc/self/mountinfo.
pub fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let octal = &field[i + 1..i + 4];
            if let Ok(value) = u8::from_str_radix(octal, 8) {
                out.push(value);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_spaces_and_backslashes() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo(r"/a\134b"), r"/a\b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/trailing\04"), r"/trailing\04");
    }

    #[test]
    fn root_is_a_mount_point_and_a_file_is_not() {
        assert!(is_mount_point(Path::new("/")));
        let file = tempfile::NamedTempFile::new().unwrap();
        assert!(!is_mount_point(file.path()));
    }
}
