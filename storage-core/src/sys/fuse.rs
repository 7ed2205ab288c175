//! The raw `/dev/fuse` protocol, only as far as probing needs it: open the
//! device, build the `mount -t fuse` option string for its descriptor, answer
//! the kernel's FUSE_INIT, and the passthrough backing-file ioctls
//! (FUSE_DEV_IOC_BACKING_OPEN/CLOSE). A real filesystem server uses fuser.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

pub const DEVICE_PATH: &str = "/dev/fuse";

/// `FUSE_INIT` opcode.
const FUSE_INIT: u32 = 26;
/// INIT flag: `flags2` carries the upper 32 flag bits.
pub const FUSE_INIT_EXT: u64 = 1 << 30;
/// INIT flag: the server may hand the kernel backing files.
pub const FUSE_PASSTHROUGH: u64 = 1 << 37;
/// The smallest read buffer the kernel accepts (`FUSE_MIN_READ_BUFFER`).
const READ_BUFFER: usize = 8192 + 4096;

/// `struct fuse_backing_map`.
#[repr(C)]
struct BackingMap {
    fd: i32,
    flags: u32,
    padding: u64,
}
const _: () = assert!(std::mem::size_of::<BackingMap>() == 16);

/// `_IOW(229, 1, struct fuse_backing_map)`.
const FUSE_DEV_IOC_BACKING_OPEN: libc::c_ulong = 0x4010_e501;
/// `_IOW(229, 2, uint32_t)`.
const FUSE_DEV_IOC_BACKING_CLOSE: libc::c_ulong = 0x4004_e502;

/// The kernel's FUSE_INIT request.
#[derive(Debug, Clone, Copy)]
pub struct InitRequest {
    pub unique: u64,
    pub major: u32,
    pub minor: u32,
    /// `flags | flags2 << 32`: what the kernel offers.
    pub flags: u64,
}

/// An open `/dev/fuse` (non-blocking).
#[derive(Debug)]
pub struct FuseDev {
    file: File,
}

impl FuseDev {
    /// Opens `/dev/fuse` read-write, non-blocking, close-on-exec.
    pub fn open() -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(DEVICE_PATH)?;
        Ok(Self { file })
    }

    /// The option string for `mount -t fuse` with this descriptor as the
    /// connection and a directory as root, owned by the calling user.
    pub fn mount_data(&self) -> String {
        format!(
            "fd={},rootmode=40000,user_id={},group_id={}",
            self.file.as_raw_fd(),
            nix::unistd::geteuid(),
            nix::unistd::getegid()
        )
    }

    /// Reads the FUSE_INIT request the kernel queues at mount time, waiting
    /// up to `timeout`.
    pub fn read_init(&self, timeout: Duration) -> io::Result<InitRequest> {
        let mut buf = vec![0u8; READ_BUFFER];
        let deadline = Instant::now() + timeout;
        let len = loop {
            match (&self.file).read(&mut buf) {
                Ok(len) => break len,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(e),
            }
        };
        let u32_at = |at: usize| u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap());
        // fuse_in_header (40 bytes), then fuse_init_in.
        if len < 40 + 20 || u32_at(4) != FUSE_INIT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "first FUSE request is not INIT",
            ));
        }
        let unique = u64::from_ne_bytes(buf[8..16].try_into().unwrap());
        let flags = u64::from(u32_at(40 + 12)) | (u64::from(u32_at(40 + 16)) << 32);
        Ok(InitRequest {
            unique,
            major: u32_at(40),
            minor: u32_at(44),
            flags,
        })
    }

    /// Answers INIT with the kernel's own protocol version and `flags`
    /// (FUSE_INIT_EXT is added when upper bits are set).
    pub fn reply_init(
        &self,
        request: &InitRequest,
        flags: u64,
        max_stack_depth: u32,
    ) -> io::Result<()> {
        let flags = if flags >> 32 != 0 {
            flags | FUSE_INIT_EXT
        } else {
            flags
        };
        let mut init_out = Vec::with_capacity(64);
        init_out.extend_from_slice(&request.major.to_ne_bytes());
        init_out.extend_from_slice(&request.minor.to_ne_bytes());
        init_out.extend_from_slice(&(128u32 * 1024).to_ne_bytes()); // max_readahead
        init_out.extend_from_slice(&(flags as u32).to_ne_bytes());
        init_out.extend_from_slice(&16u16.to_ne_bytes()); // max_background
        init_out.extend_from_slice(&12u16.to_ne_bytes()); // congestion_threshold
        init_out.extend_from_slice(&(128u32 * 1024).to_ne_bytes()); // max_write
        init_out.extend_from_slice(&1u32.to_ne_bytes()); // time_gran
        init_out.extend_from_slice(&32u16.to_ne_bytes()); // max_pages
        init_out.extend_from_slice(&0u16.to_ne_bytes()); // map_alignment
        init_out.extend_from_slice(&((flags >> 32) as u32).to_ne_bytes());
        init_out.extend_from_slice(&max_stack_depth.to_ne_bytes());
        init_out.resize(64, 0); // request_timeout, unused
        let mut reply = Vec::with_capacity(16 + 64);
        reply.extend_from_slice(&(16u32 + 64).to_ne_bytes());
        reply.extend_from_slice(&0i32.to_ne_bytes());
        reply.extend_from_slice(&request.unique.to_ne_bytes());
        reply.extend_from_slice(&init_out);
        let written = (&self.file).write(&reply)?;
        if written != reply.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short INIT reply"));
        }
        Ok(())
    }

    /// FUSE_DEV_IOC_BACKING_OPEN: registers `backing` for passthrough and
    /// returns its backing id. Needs an INIT that negotiated passthrough.
    pub fn backing_open(&self, backing: &File) -> io::Result<u32> {
        let map = BackingMap {
            fd: backing.as_raw_fd(),
            flags: 0,
            padding: 0,
        };
        // SAFETY: `map` is a valid `struct fuse_backing_map` that outlives
        // the call; the kernel only reads it.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), FUSE_DEV_IOC_BACKING_OPEN, &map) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(rc as u32)
    }

    /// FUSE_DEV_IOC_BACKING_CLOSE: forgets a backing id.
    pub fn backing_close(&self, id: u32) -> io::Result<()> {
        // SAFETY: the argument is a pointer to a `u32` that outlives the
        // call; the kernel only reads it.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), FUSE_DEV_IOC_BACKING_CLOSE, &id) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
