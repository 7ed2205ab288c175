//! The device-mapper control interface (`/dev/mapper/control`): DM_VERSION,
//! DM_LIST_VERSIONS and DM_GET_TARGET_VERSION (what the kernel offers), and
//! the ioctls a thin-pool needs: DEV_CREATE, TABLE_LOAD, DEV_SUSPEND
//! (suspend and resume), TARGET_MSG (`create_thin`, `create_snap`,
//! `delete`, `set_transaction_id`), TABLE_STATUS, DEV_STATUS, DEV_REMOVE,
//! DEV_WAIT and LIST_DEVICES, deferred removal (DM_DEFERRED_REMOVE and the
//! `@cancel_deferred_remove` message), plus BLKDISCARD on the resulting
//! block device.
//! Written against `<linux/dm-ioctl.h>` directly (no libdevmapper, no udev).

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
const DM_LIST_DEVICES: libc::c_ulong = dm_iowr(2);
const DM_DEV_CREATE: libc::c_ulong = dm_iowr(3);
const DM_DEV_REMOVE: libc::c_ulong = dm_iowr(4);
const DM_DEV_SUSPEND: libc::c_ulong = dm_iowr(6);
const DM_DEV_STATUS: libc::c_ulong = dm_iowr(7);
const DM_DEV_WAIT: libc::c_ulong = dm_iowr(8);
const DM_TABLE_LOAD: libc::c_ulong = dm_iowr(9);
const DM_TABLE_STATUS: libc::c_ulong = dm_iowr(12);
const DM_LIST_VERSIONS: libc::c_ulong = dm_iowr(13);
const DM_TARGET_MSG: libc::c_ulong = dm_iowr(14);
const DM_GET_TARGET_VERSION: libc::c_ulong = dm_iowr(17);

const DM_SUSPEND_FLAG: u32 = 1 << 1;
const DM_STATUS_TABLE_FLAG: u32 = 1 << 4;
const DM_ACTIVE_PRESENT_FLAG: u32 = 1 << 5;
/// DEV_REMOVE of an open device marks it to go on its last close (and
/// DEV_STATUS reports the mark); since ioctl interface 4.27.
const DM_DEFERRED_REMOVE: u32 = 1 << 17;
/// The first interface version with [`DM_DEFERRED_REMOVE`].
pub const DEFERRED_REMOVE_SINCE: [u32; 3] = [4, 27, 0];
/// `sizeof(struct dm_target_spec)`: sector_start, length, status, next, type[16].
const TARGET_SPEC_SIZE: usize = 40;
const DM_MAX_TYPE_NAME: usize = 16;
/// `BLKDISCARD`, `_IO(0x12, 119)`.
const BLKDISCARD: libc::c_ulong = 0x1277;

/// One line of a device-mapper table: `start length type params`, in
/// 512-byte sectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub start: u64,
    pub length: u64,
    pub target_type: String,
    pub params: String,
}

/// DM_DEV_STATUS of an existing device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The block device number (major:minor).
    pub dev: u64,
    pub open_count: i32,
    pub target_count: u32,
    pub event_nr: u32,
    pub suspended: bool,
    /// Whether a table is live (false right after DEV_CREATE).
    pub active: bool,
    /// Whether a deferred removal is pending (removed on its last close).
    pub deferred_remove: bool,
}

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

    /// DM_DEV_CREATE: a new device `name` without a table; returns its
    /// device number. EBUSY when the name is taken.
    pub fn create_device(&self, name: &str) -> io::Result<u64> {
        let mut buf = IoctlBuf::named(name, 0)?;
        self.ioctl(DM_DEV_CREATE, &mut buf)?;
        Ok(buf.header().dev)
    }

    /// DM_DEV_REMOVE: removes device `name` (EBUSY while it is open).
    pub fn remove_device(&self, name: &str) -> io::Result<()> {
        let mut buf = IoctlBuf::named(name, 0)?;
        self.ioctl(DM_DEV_REMOVE, &mut buf)
    }

    /// DM_DEV_REMOVE with DM_DEFERRED_REMOVE: removes device `name` now
    /// when nobody has it open (`Ok(true)`), else marks it to be removed by
    /// the kernel on its last close (`Ok(false)`).
    pub fn remove_device_deferred(&self, name: &str) -> io::Result<bool> {
        let mut buf = IoctlBuf::named(name, 0)?;
        buf.header_mut().flags = DM_DEFERRED_REMOVE;
        self.ioctl(DM_DEV_REMOVE, &mut buf)?;
        // The kernel clears the flag when it removed the device at once.
        Ok(buf.header().flags & DM_DEFERRED_REMOVE == 0)
    }

    /// Cancels a pending deferred removal of `name` (the
    /// `@cancel_deferred_remove` message; ENXIO when none is pending).
    pub fn cancel_deferred_remove(&self, name: &str) -> io::Result<()> {
        self.message(name, 0, "@cancel_deferred_remove")
    }

    /// DM_DEV_SUSPEND with DM_SUSPEND_FLAG: queues new I/O, flushes the rest.
    pub fn suspend(&self, name: &str) -> io::Result<()> {
        let mut buf = IoctlBuf::named(name, 0)?;
        buf.header_mut().flags = DM_SUSPEND_FLAG;
        self.ioctl(DM_DEV_SUSPEND, &mut buf)
    }

    /// DM_DEV_SUSPEND without the flag: resumes, making a loaded table live.
    pub fn resume(&self, name: &str) -> io::Result<()> {
        let mut buf = IoctlBuf::named(name, 0)?;
        self.ioctl(DM_DEV_SUSPEND, &mut buf)
    }

    /// DM_DEV_STATUS: `None` when no device is called `name` (ENXIO).
    pub fn info(&self, name: &str) -> io::Result<Option<DeviceInfo>> {
        let mut buf = IoctlBuf::named(name, 0)?;
        match self.ioctl(DM_DEV_STATUS, &mut buf) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return Ok(None),
            Err(e) => return Err(e),
        }
        let header = buf.header();
        Ok(Some(DeviceInfo {
            dev: header.dev,
            open_count: header.open_count,
            target_count: header.target_count,
            event_nr: header.event_nr,
            suspended: header.flags & DM_SUSPEND_FLAG != 0,
            active: header.flags & DM_ACTIVE_PRESENT_FLAG != 0,
            deferred_remove: header.flags & DM_DEFERRED_REMOVE != 0,
        }))
    }

    /// DM_DEV_WAIT: blocks until the device's event counter passes `event_nr`
    /// (a thin-pool raises an event when it crosses its low-water mark or
    /// runs out of space).
    pub fn wait_event(&self, name: &str, event_nr: u32) -> io::Result<()> {
        let mut buf = IoctlBuf::named(name, 0)?;
        buf.header_mut().event_nr = event_nr;
        self.ioctl(DM_DEV_WAIT, &mut buf)
    }

    /// DM_TABLE_LOAD: loads `targets` as the inactive table of `name`
    /// (live after [`Self::resume`]).
    pub fn load_table(&self, name: &str, targets: &[Target]) -> io::Result<()> {
        let mut data = Vec::new();
        for target in targets {
            let type_bytes = target.target_type.as_bytes();
            if type_bytes.len() >= DM_MAX_TYPE_NAME || target.params.as_bytes().contains(&0) {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            let len = (TARGET_SPEC_SIZE + target.params.len() + 1).div_ceil(8) * 8;
            let mut spec = vec![0u8; len];
            spec[0..8].copy_from_slice(&target.start.to_ne_bytes());
            spec[8..16].copy_from_slice(&target.length.to_ne_bytes());
            // status (i32) stays 0; next is relative to this spec on input.
            spec[20..24].copy_from_slice(&(len as u32).to_ne_bytes());
            spec[24..24 + type_bytes.len()].copy_from_slice(type_bytes);
            spec[TARGET_SPEC_SIZE..TARGET_SPEC_SIZE + target.params.len()]
                .copy_from_slice(target.params.as_bytes());
            data.extend_from_slice(&spec);
        }
        let mut buf = IoctlBuf::named(name, data.len())?;
        buf.header_mut().target_count = targets.len() as u32;
        buf.write_data(&data);
        self.ioctl(DM_TABLE_LOAD, &mut buf)
    }

    /// DM_TARGET_MSG: sends `message` to the target at `sector` of `name`,
    /// e.g. `create_thin 1`, `create_snap 2 1`, `delete 2` to a thin-pool.
    pub fn message(&self, name: &str, sector: u64, message: &str) -> io::Result<()> {
        if message.as_bytes().contains(&0) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let mut data = sector.to_ne_bytes().to_vec();
        data.extend_from_slice(message.as_bytes());
        data.push(0);
        let mut buf = IoctlBuf::named(name, data.len().max(256))?;
        buf.write_data(&data);
        self.ioctl(DM_TARGET_MSG, &mut buf)
    }

    /// DM_TABLE_STATUS: each target's status line (a thin-pool's is
    /// `<transaction> <meta used>/<total> <data used>/<total> ...`).
    pub fn status(&self, name: &str) -> io::Result<Vec<Target>> {
        self.table_query(name, 0)
    }

    /// DM_TABLE_STATUS with DM_STATUS_TABLE_FLAG: the live table.
    pub fn table(&self, name: &str) -> io::Result<Vec<Target>> {
        self.table_query(name, DM_STATUS_TABLE_FLAG)
    }

    fn table_query(&self, name: &str, flags: u32) -> io::Result<Vec<Target>> {
        let mut size = 4096;
        loop {
            let mut buf = IoctlBuf::named(name, size)?;
            buf.header_mut().flags = flags;
            self.ioctl(DM_TABLE_STATUS, &mut buf)?;
            if buf.header().flags & DM_BUFFER_FULL_FLAG != 0 && size < 1024 * 1024 {
                size *= 4;
                continue;
            }
            return Ok(buf.targets());
        }
    }

    /// DM_LIST_DEVICES: the names and device numbers of every dm device.
    pub fn list_devices(&self) -> io::Result<Vec<(String, u64)>> {
        let mut size = 16 * 1024;
        loop {
            let mut buf = IoctlBuf::new(size);
            self.ioctl(DM_LIST_DEVICES, &mut buf)?;
            if buf.header().flags & DM_BUFFER_FULL_FLAG != 0 && size < 4 * 1024 * 1024 {
                size *= 4;
                continue;
            }
            return Ok(buf.name_list());
        }
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

    /// A buffer addressed to device `name` with `data_len` bytes of data.
    fn named(name: &str, data_len: usize) -> io::Result<Self> {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() >= DM_NAME_LEN || bytes.contains(&0) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let mut buf = Self::new(data_len);
        buf.header_mut().name[..bytes.len()].copy_from_slice(bytes);
        Ok(buf)
    }

    /// Copies `data` to the data area (`data_start`).
    fn write_data(&mut self, data: &[u8]) {
        let mut bytes = self.bytes();
        bytes[HEADER_SIZE..HEADER_SIZE + data.len()].copy_from_slice(data);
        for (word, chunk) in self.words.iter_mut().zip(bytes.chunks(8)) {
            *word = u64::from_ne_bytes(chunk.try_into().unwrap());
        }
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

    /// Parses the `struct dm_target_spec` + params list of TABLE_STATUS
    /// (`next` counts from `data_start` on output).
    fn targets(&self) -> Vec<Target> {
        let bytes = self.bytes();
        let header = self.header();
        let start = header.data_start as usize;
        let end = (header.data_size as usize).min(bytes.len());
        let u64_at = |at: usize| u64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap());
        let u32_at = |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap());
        let c_str = |from: usize, to: usize| {
            let slice = &bytes[from.min(to)..to];
            let len = slice.iter().position(|&b| b == 0).unwrap_or(slice.len());
            String::from_utf8_lossy(&slice[..len]).into_owned()
        };
        let mut out = Vec::new();
        let mut offset = start;
        for _ in 0..header.target_count {
            if offset + TARGET_SPEC_SIZE > end {
                break;
            }
            out.push(Target {
                start: u64_at(offset),
                length: u64_at(offset + 8),
                target_type: c_str(offset + 24, offset + 24 + DM_MAX_TYPE_NAME),
                params: c_str(offset + TARGET_SPEC_SIZE, end),
            });
            offset = start + u32_at(offset + 20) as usize;
        }
        out
    }

    /// Parses `struct dm_name_list { u64 dev; u32 next; char name[]; }`.
    fn name_list(&self) -> Vec<(String, u64)> {
        let bytes = self.bytes();
        let header = self.header();
        let end = (header.data_size as usize).min(bytes.len());
        let mut offset = header.data_start as usize;
        let mut out = Vec::new();
        while offset + 12 < end {
            let dev = u64::from_ne_bytes(bytes[offset..offset + 8].try_into().unwrap());
            let next = u32::from_ne_bytes(bytes[offset + 8..offset + 12].try_into().unwrap());
            let name = &bytes[offset + 12..end];
            let len = name.iter().position(|&b| b == 0).unwrap_or(0);
            if dev == 0 && len == 0 {
                break;
            }
            out.push((String::from_utf8_lossy(&name[..len]).into_owned(), dev));
            if next == 0 {
                break;
            }
            offset += next as usize;
        }
        out
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

/// BLKDISCARD over the whole of an open block device of `len` bytes: a
/// thin device gives the blocks back to its pool, a loop device punches
/// holes in its backing file.
pub fn discard(device: &File, len: u64) -> io::Result<()> {
    let range: [u64; 2] = [0, len];
    // SAFETY: BLKDISCARD reads a `u64[2]` (start, length) that lives on the
    // stack for the duration of the call.
    let rc = unsafe { libc::ioctl(device.as_raw_fd(), BLKDISCARD, range.as_ptr()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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
        assert_eq!(DM_DEV_CREATE, 0xc138_fd03);
        assert_eq!(DM_TABLE_LOAD, 0xc138_fd09);
        assert_eq!(DM_TARGET_MSG, 0xc138_fd0e);
    }

    #[test]
    fn parses_a_status_reply() {
        let mut buf = IoctlBuf::named("pool", 256).unwrap();
        let mut data = vec![0u8; 96];
        data[8..16].copy_from_slice(&2048u64.to_ne_bytes());
        data[20..24].copy_from_slice(&96u32.to_ne_bytes());
        data[24..33].copy_from_slice(b"thin-pool");
        let params = b"1 10/512 3/32 - rw discard_passdown";
        data[40..40 + params.len()].copy_from_slice(params);
        buf.write_data(&data);
        buf.header_mut().target_count = 1;
        let targets = buf.targets();
        assert_eq!(
            targets,
            vec![Target {
                start: 0,
                length: 2048,
                target_type: "thin-pool".into(),
                params: String::from_utf8(params.to_vec()).unwrap(),
            }]
        );
        assert!(IoctlBuf::named("", 0).is_err());
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
