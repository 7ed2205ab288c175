//! FITRIM: tell a filesystem to discard its free blocks, as `fstrim` does.
//! On a loop-backed filesystem the loop device turns the discards into
//! holes punched in its backing file, so space freed inside the
//! filesystem is given back to the host's disk.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// `struct fstrim_range` from `<linux/fs.h>`.
#[repr(C)]
struct FstrimRange {
    start: u64,
    len: u64,
    minlen: u64,
}

/// `_IOWR('X', 121, struct fstrim_range)`.
const FITRIM: libc::c_ulong = 0xC018_5879;

/// Discards every free block of the filesystem mounted at `mount_point`;
/// returns the bytes the filesystem says it trimmed.
pub fn trim(mount_point: &Path) -> io::Result<u64> {
    let dir = File::open(mount_point)?;
    let mut range = FstrimRange {
        start: 0,
        len: u64::MAX,
        minlen: 0,
    };
    // SAFETY: FITRIM reads and writes one `struct fstrim_range`, which
    // `range` is (repr(C), same field order and sizes), alive and
    // exclusively borrowed for the call; the descriptor is open.
    let rc = unsafe { libc::ioctl(dir.as_raw_fd(), FITRIM, &mut range as *mut FstrimRange) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(range.len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_number_is_fitrim() {
        // _IOWR: dir 3 << 30 | size 24 << 16 | 'X' << 8 | 121.
        let expected = (3 << 30)
            | ((std::mem::size_of::<FstrimRange>() as libc::c_ulong) << 16)
            | ((b'X' as libc::c_ulong) << 8)
            | 121;
        assert_eq!(FITRIM, expected);
    }
}
