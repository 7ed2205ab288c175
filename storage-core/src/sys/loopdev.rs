//! Loop devices: attach a backing file to a free `/dev/loopN` with
//! LOOP_CONFIGURE, detach with LOOP_CLR_FD. Used for loop-backed scratch and
//! benchmark filesystems, loop-lvm pools and size-limited volumes.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;

const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_DIRECT_IO: u32 = 16;
const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;

/// `struct loop_info64` from `<linux/loop.h>`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

/// `struct loop_config` from `<linux/loop.h>`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);
const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

/// A loop-device failure, naming the backing file or device and the cause.
#[derive(Debug, thiserror::Error)]
#[error("loop device for {}: {what}: {source}", path.display())]
pub struct LoopError {
    pub path: PathBuf,
    pub what: &'static str,
    #[source]
    pub source: std::io::Error,
}

/// How to attach a backing file.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoopOptions {
    pub read_only: bool,
    /// Bypass the page cache of the backing file (as `losetup --direct-io`),
    /// so the filesystem on the loop device is not cached twice.
    pub direct_io: bool,
    /// Let the kernel free the device once its last user (a mount) is gone.
    pub autoclear: bool,
}

/// An attached loop device. Dropping it detaches the device (LOOP_CLR_FD),
/// which the kernel defers until the last mount of it is gone.
#[derive(Debug)]
pub struct LoopDevice {
    device: File,
    path: PathBuf,
    backing: PathBuf,
}

impl LoopDevice {
    /// Attaches `backing` to the first free loop device.
    pub fn attach(backing: &Path, options: LoopOptions) -> Result<Self, LoopError> {
        let err = |what, source| LoopError {
            path: backing.to_path_buf(),
            what,
            source,
        };
        let backing_file = OpenOptions::new()
            .read(true)
            .write(!options.read_only)
            .open(backing)
            .map_err(|e| err("open backing file", e))?;
        let control = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/loop-control")
            .map_err(|e| err("open /dev/loop-control", e))?;

        let mut flags = 0;
        if options.read_only {
            flags |= LO_FLAGS_READ_ONLY;
        }
        if options.autoclear {
            flags |= LO_FLAGS_AUTOCLEAR;
        }
        if options.direct_io {
            flags |= LO_FLAGS_DIRECT_IO;
        }

        // Another process may take the free device between GET_FREE and
        // CONFIGURE (EBUSY): ask again a few times.
        let mut last_error = None;
        for _ in 0..16 {
            let number = loop_ctl_get_free(&control).map_err(|e| err("LOOP_CTL_GET_FREE", e))?;
            let path = PathBuf::from(format!("/dev/loop{number}"));
            ensure_device_node(&path, number).map_err(|e| err("create device node", e))?;
            let device = OpenOptions::new()
                .read(true)
                .write(!options.read_only)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
                .map_err(|e| err("open loop device", e))?;
            match loop_configure(&device, &backing_file, flags) {
                Ok(()) => {
                    return Ok(LoopDevice {
                        device,
                        path,
                        backing: backing.to_path_buf(),
                    });
                }
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last_error = Some(e),
                Err(e) => return Err(err("LOOP_CONFIGURE", e)),
            }
        }
        Err(err(
            "LOOP_CONFIGURE",
            last_error.unwrap_or_else(|| std::io::Error::from_raw_os_error(libc::EBUSY)),
        ))
    }

    /// The device node, e.g. `/dev/loop3`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file behind the device.
    pub fn backing_file(&self) -> &Path {
        &self.backing
    }

    /// Detaches now, reporting failure (Drop does the same silently).
    pub fn detach(self) -> Result<(), LoopError> {
        let result = loop_clr_fd(&self.device).map_err(|source| LoopError {
            path: self.path.clone(),
            what: "LOOP_CLR_FD",
            source,
        });
        // Drop clears again and gets ENXIO, which it ignores.
        result
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        // ENXIO means it was already detached (autoclear).
        let _ = loop_clr_fd(&self.device);
    }
}

/// Creates `/dev/loopN` when the kernel made the device but no udev is
/// around to create its node (containers, initramfs guests).
fn ensure_device_node(path: &Path, number: u32) -> std::io::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let dev = nix::sys::stat::makedev(7, u64::from(number));
    match nix::sys::stat::mknod(
        path,
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o660),
        dev,
    ) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn loop_ctl_get_free(control: &File) -> std::io::Result<u32> {
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
    let number = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
    if number < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(number as u32)
}

fn loop_configure(device: &File, backing: &File, flags: u32) -> std::io::Result<()> {
    let mut config = LoopConfig {
        fd: backing.as_raw_fd() as u32,
        block_size: 0,
        info: LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: flags,
            lo_file_name: [0; LO_NAME_SIZE],
            lo_crypt_name: [0; LO_NAME_SIZE],
            lo_encrypt_key: [0; LO_KEY_SIZE],
            lo_init: [0; 2],
        },
        reserved: [0; 8],
    };
    // SAFETY: `config` is a valid, initialised `struct loop_config` that
    // outlives the call; the kernel only reads it.
    let rc = unsafe { libc::ioctl(device.as_raw_fd(), LOOP_CONFIGURE, &mut config) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn loop_clr_fd(device: &File) -> std::io::Result<()> {
    // SAFETY: LOOP_CLR_FD takes no argument.
    let rc = unsafe { libc::ioctl(device.as_raw_fd(), LOOP_CLR_FD, 0) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_reads_the_backing_file_and_detach_frees_the_device() {
        if !nix::unistd::Uid::effective().is_root() {
            println!("skipped: loop devices need root");
            return;
        }
        let mut backing = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut backing, &[0xAB; 4096 * 4]).unwrap();
        let device = LoopDevice::attach(backing.path(), LoopOptions::default()).unwrap();
        let content = std::fs::read(device.path()).unwrap();
        assert_eq!(content.len(), 4096 * 4);
        assert!(content.iter().all(|&b| b == 0xAB));
        let path = device.path().to_path_buf();
        device.detach().unwrap();
        let sys_backing = format!(
            "/sys/block/{}/loop/backing_file",
            path.file_name().unwrap().to_string_lossy()
        );
        assert!(
            !Path::new(&sys_backing).exists(),
            "{} still attached",
            path.display()
        );
    }

    #[test]
    fn attach_of_a_missing_file_names_the_file() {
        let err = LoopDevice::attach(Path::new("/nonexistent/disk.img"), LoopOptions::default())
            .unwrap_err();
        let message = err.to_string();
        assert!(message.contains("/nonexistent/disk.img"), "{message}");
        assert!(message.contains("open backing file"), "{message}");
    }
}
