//! btrfs subvolume and quota ioctls (`<linux/btrfs.h>`), as moby's btrfs
//! driver issues them: create a subvolume, snapshot one, destroy one
//! (`SNAP_DESTROY_V2`, else V1), enable quotas, limit a subvolume's
//! qgroup, wait for a quota rescan. Errors are plain `io::Error`s; callers
//! add the path.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const MAGIC: u8 = 0x94;
/// `BTRFS_PATH_NAME_MAX + 1`.
const PATH_NAME_LEN: usize = 4088;
/// `BTRFS_SUBVOL_NAME_MAX + 1`.
const SUBVOL_NAME_LEN: usize = 4040;
/// The inode number of every subvolume's root directory.
pub const FIRST_FREE_OBJECTID: u64 = 256;

/// `struct btrfs_ioctl_vol_args`.
#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; PATH_NAME_LEN],
}

/// `struct btrfs_ioctl_vol_args_v2` (the size/qgroup union as `unused`).
#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; SUBVOL_NAME_LEN],
}

/// `struct btrfs_ioctl_quota_ctl_args`.
#[repr(C)]
struct QuotaCtlArgs {
    cmd: u64,
    status: u64,
}

/// `struct btrfs_ioctl_qgroup_limit_args` with its `btrfs_qgroup_limit`.
#[repr(C)]
struct QgroupLimitArgs {
    qgroupid: u64,
    flags: u64,
    max_rfer: u64,
    max_excl: u64,
    rsv_rfer: u64,
    rsv_excl: u64,
}

const _: () = assert!(std::mem::size_of::<VolArgs>() == 4096);
const _: () = assert!(std::mem::size_of::<VolArgsV2>() == 4096);
const _: () = assert!(std::mem::size_of::<QgroupLimitArgs>() == 48);

const IOC_SUBVOL_CREATE: libc::c_ulong =
    nix::request_code_write!(MAGIC, 14, std::mem::size_of::<VolArgs>()) as libc::c_ulong;
const IOC_SNAP_DESTROY: libc::c_ulong =
    nix::request_code_write!(MAGIC, 15, std::mem::size_of::<VolArgs>()) as libc::c_ulong;
const IOC_SNAP_CREATE_V2: libc::c_ulong =
    nix::request_code_write!(MAGIC, 23, std::mem::size_of::<VolArgsV2>()) as libc::c_ulong;
const IOC_SNAP_DESTROY_V2: libc::c_ulong =
    nix::request_code_write!(MAGIC, 63, std::mem::size_of::<VolArgsV2>()) as libc::c_ulong;
const IOC_QUOTA_CTL: libc::c_ulong =
    nix::request_code_readwrite!(MAGIC, 40, std::mem::size_of::<QuotaCtlArgs>()) as libc::c_ulong;
const IOC_QGROUP_LIMIT: libc::c_ulong =
    nix::request_code_read!(MAGIC, 43, std::mem::size_of::<QgroupLimitArgs>()) as libc::c_ulong;
const IOC_QUOTA_RESCAN_WAIT: libc::c_ulong = nix::request_code_none!(MAGIC, 46) as libc::c_ulong;

const QUOTA_CTL_ENABLE: u64 = 1;
const QGROUP_LIMIT_MAX_RFER: u64 = 1;

fn open_dir(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(path)
}

/// Copies `name` into a NUL-terminated fixed buffer; a name with `/` or
/// NUL, empty, `.`/`..` or too long is refused.
fn fill_name(buf: &mut [u8], name: &OsStr) -> io::Result<()> {
    let bytes = name.as_bytes();
    if bytes.is_empty()
        || bytes == b"."
        || bytes == b".."
        || bytes.len() >= buf.len()
        || bytes.iter().any(|b| *b == b'/' || *b == 0)
    {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    buf[..bytes.len()].copy_from_slice(bytes);
    Ok(())
}

fn ioctl<T>(fd: impl AsFd, request: libc::c_ulong, arg: &mut T) -> io::Result<()> {
    // SAFETY: `arg` is a live, exclusively borrowed `#[repr(C)]` struct of
    // exactly the size encoded in `request` (asserted above), and `fd` is
    // open for the duration of the call.
    let rc = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), request, std::ptr::from_mut(arg)) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `path` is on btrfs.
pub fn is_btrfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::BTRFS_SUPER_MAGIC)
        .unwrap_or(false)
}

/// Whether the directory `path` (not followed if a symlink) is the root of
/// a btrfs subvolume.
pub fn is_subvolume(path: &Path) -> io::Result<bool> {
    let meta = std::fs::symlink_metadata(path)?;
    Ok(meta.is_dir() && meta.ino() == FIRST_FREE_OBJECTID && is_btrfs(path))
}

/// Creates the empty subvolume `name` in the directory `parent`.
pub fn create_subvolume(parent: &Path, name: &OsStr) -> io::Result<()> {
    let dir = open_dir(parent)?;
    let mut args = VolArgs {
        fd: 0,
        name: [0; PATH_NAME_LEN],
    };
    fill_name(&mut args.name, name)?;
    ioctl(&dir, IOC_SUBVOL_CREATE, &mut args)
}

/// Snapshots the subvolume `source` as `name` in the directory `parent`
/// (writable, as Docker's layers are).
pub fn snapshot(source: &Path, parent: &Path, name: &OsStr) -> io::Result<()> {
    let src = open_dir(source)?;
    let dir = open_dir(parent)?;
    let mut args = VolArgsV2 {
        fd: i64::from(src.as_raw_fd()),
        transid: 0,
        flags: 0,
        unused: [0; 4],
        name: [0; SUBVOL_NAME_LEN],
    };
    fill_name(&mut args.name, name)?;
    ioctl(&dir, IOC_SNAP_CREATE_V2, &mut args)
}

/// Destroys the subvolume `name` in the directory `parent` (it must hold
/// no other subvolume): `SNAP_DESTROY_V2`, else V1 on older kernels.
pub fn destroy_subvolume(parent: &Path, name: &OsStr) -> io::Result<()> {
    let dir = open_dir(parent)?;
    let mut v2 = VolArgsV2 {
        fd: 0,
        transid: 0,
        flags: 0,
        unused: [0; 4],
        name: [0; SUBVOL_NAME_LEN],
    };
    fill_name(&mut v2.name, name)?;
    match ioctl(&dir, IOC_SNAP_DESTROY_V2, &mut v2) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTTY | libc::EOPNOTSUPP)) => {
            let mut v1 = VolArgs {
                fd: 0,
                name: [0; PATH_NAME_LEN],
            };
            fill_name(&mut v1.name, name)?;
            ioctl(&dir, IOC_SNAP_DESTROY, &mut v1)
        }
        other => other,
    }
}

/// Enables quotas (qgroups) on the filesystem holding `path`.
pub fn enable_quota(path: &Path) -> io::Result<()> {
    let dir = open_dir(path)?;
    let mut args = QuotaCtlArgs {
        cmd: QUOTA_CTL_ENABLE,
        status: 0,
    };
    ioctl(&dir, IOC_QUOTA_CTL, &mut args)
}

/// Limits the referenced bytes of the subvolume `subvolume` (its own
/// qgroup, `0/<id>`) to `max_bytes`.
pub fn limit_subvolume(subvolume: &Path, max_bytes: u64) -> io::Result<()> {
    let dir = open_dir(subvolume)?;
    let mut args = QgroupLimitArgs {
        qgroupid: 0,
        flags: QGROUP_LIMIT_MAX_RFER,
        max_rfer: max_bytes,
        max_excl: 0,
        rsv_rfer: 0,
        rsv_excl: 0,
    };
    ioctl(&dir, IOC_QGROUP_LIMIT, &mut args)
}

/// Waits for a running quota rescan of the filesystem holding `path`.
pub fn quota_rescan_wait(path: &Path) -> io::Result<()> {
    let dir = open_dir(path)?;
    // SAFETY: RESCAN_WAIT takes no argument; `dir` is open for the call.
    let rc = unsafe { libc::ioctl(dir.as_raw_fd(), IOC_QUOTA_RESCAN_WAIT, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_codes_match_linux_btrfs_h() {
        // Values from <linux/btrfs.h> on x86_64.
        assert_eq!(IOC_SUBVOL_CREATE, 0x5000_940e);
        assert_eq!(IOC_SNAP_DESTROY, 0x5000_940f);
        assert_eq!(IOC_SNAP_CREATE_V2, 0x5000_9417);
        assert_eq!(IOC_SNAP_DESTROY_V2, 0x5000_943f);
        assert_eq!(IOC_QUOTA_CTL, 0xc010_9428);
        assert_eq!(IOC_QGROUP_LIMIT, 0x8030_942b);
        assert_eq!(IOC_QUOTA_RESCAN_WAIT, 0x942e);
    }

    #[test]
    fn names_with_slashes_or_dots_are_refused() {
        let mut buf = [0u8; 16];
        for bad in ["", ".", "..", "a/b", "0123456789abcdef"] {
            assert!(fill_name(&mut buf, OsStr::new(bad)).is_err(), "{bad:?}");
        }
        fill_name(&mut buf, OsStr::new("layer")).unwrap();
        assert_eq!(&buf[..6], b"layer\0");
    }
}
