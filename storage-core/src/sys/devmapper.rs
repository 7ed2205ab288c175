//! The device-mapper control interface (`/dev/mapper/control`): the
//! DM_VERSION, DM_LIST_VERSIONS and DM_GET_TARGET_VERSION ioctls, enough to
//! tell whether the kernel has device-mapper and which targets it offers.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Where udev (or `dmsetup mknodes`) puts the control node.
pub const CONTROL_PATH: &str = "/dev/mapper/control";
/// The control node is the misc device 10:236 (`MAPPER_CTRL_MINOR`).
pub const MISC_MAJOR: u64 = 10;
pub const MAPPER_CTRL_MINOR: u64 = 236;

const DM_NAME_LEN: usize = 128;
const DM_UUID_LEN: usize = 129;
/// The interface version we speak (`DM_VERSION_MAJOR` 4).
const DM_VERSION_MAJOR: u32 = 4;
/// Set by the kernel when the data buffer was too small.
const DM_BUFFER_FULL_FLAG: u32 = 1 << 8;

/// `struct dm_ioctl` from `<linux/dm-ioctl.h>`.
#[repr(C)]
#[derive(Clone, Copy)]
struct DmIoctl {
    version: [u32; 3],
    data_size: u32,
    data_start: u32,
    target_count: u32,
    open_count: i32,
    flags: u32,
    event_nr: u32,
    padding: u32,
    dev: u64,
    name: [u8; DM_NAME_LEN],
    uuid: [u8; DM_UUID_LEN],
    data: [u8; 7],
}

const _: () = assert!(std::mem::size_of::<DmIoctl>() == 312);

/// `_IOWR(0xfd, nr, struct dm_ioctl)`.
const fn dm_iowr(nr: libc::c_ulong) -> libc::c_ulong {
    (3 << 30) | ((std::mem::size_of::<DmIoctl>() as libc::c_ulong) << 16) | (0xfd << 8) | nr
}
const DM_VERSION: libc::c_ulong = dm_iowr(0);
const DM_LIST_VERSIONS: libc::c_ulong = dm_iowr(13);
const DM_GET_TARGET_VERSION: libc::c_ulong = dm_iowr(17);

/// A device-mapper target type the kernel has registered, e.g. `thin-pool`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetVersion {
    pub name: String,
    pub version: [u32; 3],
}

/// An open device-mapper control node.
#[derive(Debug)]
pub struct DmControl {
    file: File,
}

impl DmControl {
    /// Opens a control node ([`CONTROL_PATH`] or any char node 10:236).
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        Ok(Self { file })
    }

    /// DM_VERSION: the kernel's device-mapper ioctl interface version.
    pub fn version(&self) -> io::Result<[u32; 3]> {
        let mut buf = IoctlBuf::new(0);
        self.ioctl(DM_VERSION, &mut buf)?;
        Ok(buf.header().version)
    }

    /// DM_LIST_VERSIONS: every registered target type. Targets built as
    /// modules appear only once loaded (see [`Self::target_version`]).
    pub fn list_versions(&self) -> io::Result<Vec<TargetVersion>> {
        let mut size = 16 * 1024;
        loop {
            let mut buf = IoctlBuf::new(size);
            self.ioctl(DM_LIST_VERSIONS, &mut buf)?;
            if buf.header().flags & DM_BUFFER_FULL_FLAG != 0 && size < 1024 * 1024 {
                size *= 4;
                continue;
            }
            return Ok(buf.target_versions());
        }
    }

    /// DM_GET_TARGET_VERSION (kernel 4.18+): looks one target type up by
    /// name, loading its module (`dm-<name>`) on demand. EINVAL means the
    /// kernel has no such target.
    pub fn target_version(&self, name: &str) -> io::Result<TargetVersion> {
        let mut buf = IoctlBuf::new(1024);
        let bytes = name.as_bytes();
        if bytes.len() >= DM_NAME_LEN || bytes.contains(&0) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        buf.header_mut().name[..bytes.len()].copy_from_slice(bytes);
        self.ioctl(DM_GET_TARGET_VERSION, &mut buf)?;
        buf.target_versions()
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
    }

    fn ioctl(&self, request: libc::c_ulong, buf: &mut IoctlBuf) -> io::Result<()> {
        // SAFETY: `buf` holds an initialised `struct dm_ioctl` followed by
        // `data_size - sizeof(struct dm_ioctl)` bytes, all owned by `buf`
        // (8-byte aligned) and alive for the call; the kernel reads and
        // writes at most `data_size` bytes of it.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), request, buf.words.as_mut_ptr()) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// A `struct dm_ioctl` header and its data area in one 8-byte aligned buffer.
struct IoctlBuf {
    words: Vec<u64>,
}

const HEADER_SIZE: usize = std::mem::size_of::<DmIoctl>();

impl IoctlBuf {
    fn new(data_len: usize) -> Self {
        let total = (HEADER_SIZE + data_len).div_ceil(8) * 8;
        let mut buf = Self {
            words: vec![0; total / 8],
        };
        let header = buf.header_mut();
        header.version = [DM_VERSION_MAJOR, 0, 0];
        header.data_size = total as u32;
        header.data_start = HEADER_SIZE as u32;
        buf
    }

    fn header(&self) -> &DmIoctl {
        // SAFETY: the buffer is at least HEADER_SIZE bytes, 8-byte aligned
        // (DmIoctl needs 8), and every bit pattern is a valid DmIoctl.
        unsafe { &*self.words.as_ptr().cast::<DmIoctl>() }
    }

    fn header_mut(&mut self) -> &mut DmIoctl {
        // SAFETY: as in `header`, and `&mut self` makes the borrow unique.
        unsafe { &mut *self.words.as_mut_ptr().cast::<DmIoctl>() }
    }

    fn bytes(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_ne_bytes()).collect()
    }

    /// Parses the chain of `struct dm_target_versions { u32 next; u32
    /// version[3]; char name[]; }` the kernel wrote at `data_start`.
    fn target_versions(&self) -> Vec<TargetVersion> {
        let bytes = self.bytes();
        let header = self.header();
        let end = (header.data_size as usize).min(bytes.len());
        let mut offset = header.data_start as usize;
        let mut out = Vec::new();
        let u32_at = |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap());
        while offset + 16 < end {
            let next = u32_at(offset) as usize;
            let version = [u32_at(offset + 4), u32_at(offset + 8), u32_at(offset + 12)];
            let name_bytes = &bytes[offset + 16..end];
            let name_len = name_bytes.iter().position(|&b| b == 0).unwrap_or(0);
            if name_len == 0 {
                break;
            }
            out.push(TargetVersion {
                name: String::from_utf8_lossy(&name_bytes[..name_len]).into_owned(),
                version,
            });
            if next == 0 {
                break;
            }
            offset += next;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_header() {
        // Values from <linux/dm-ioctl.h> on x86_64 (sizeof dm_ioctl = 312).
        assert_eq!(DM_VERSION, 0xc138_fd00);
        assert_eq!(DM_LIST_VERSIONS, 0xc138_fd0d);
        assert_eq!(DM_GET_TARGET_VERSION, 0xc138_fd11);
    }

    #[test]
    fn parses_a_target_list() {
        let mut buf = IoctlBuf::new(64);
        let start = HEADER_SIZE;
        let mut bytes = buf.bytes();
        // "linear" v1.4.0, next = 24, then "thin-pool" v1.23.0, next = 0.
        let put = |bytes: &mut Vec<u8>, at: usize, v: u32| {
            bytes[at..at + 4].copy_from_slice(&v.to_ne_bytes())
        };
        put(&mut bytes, start, 24);
        put(&mut bytes, start + 4, 1);
        put(&mut bytes, start + 8, 4);
        bytes[start + 16..start + 22].copy_from_slice(b"linear");
        put(&mut bytes, start + 24, 0);
        put(&mut bytes, start + 28, 1);
        put(&mut bytes, start + 32, 23);
        bytes[start + 40..start + 49].copy_from_slice(b"thin-pool");
        for (word, chunk) in buf.words.iter_mut().zip(bytes.chunks(8)) {
            *word = u64::from_ne_bytes(chunk.try_into().unwrap());
        }
        let targets = buf.target_versions();
        assert_eq!(
            targets,
            vec![
                TargetVersion {
                    name: "linear".into(),
                    version: [1, 4, 0]
                },
                TargetVersion {
                    name: "thin-pool".into(),
                    version: [1, 23, 0]
                },
            ]
        );
    }
}
