//! Size-limited volumes: a sparse `disk.img` in the volume's directory
//! (`<root>/volumes/<name>/disk.img`), formatted as xfs or ext4 when the
//! volume is created, attached to a free loop device and mounted on `_data`
//! on first use. The loop device is set to autoclear, so the kernel frees it
//! when the last release unmounts `_data`.
//!
//! xfsprogs (5.19+) refuses filesystems under 300 MB except for fstests;
//! smaller xfs images are made with fstests' variables set (the kernel
//! mounts them fine), so `type=xfs,o=size=100m` works as users expect.

use std::fs::OpenOptions;
use std::path::Path;
use std::process::Command;

use crate::sys::loopdev::{LoopDevice, LoopOptions};
use crate::sys::mount::{self, MountFlags};

use super::{VolumeError, io_err};

/// The image file's name inside the volume directory.
pub const IMAGE_FILE: &str = "disk.img";

const XFS_MINIMUM: u64 = 300 * 1000 * 1000;

/// Creates the sparse `image` of `size` bytes and formats it as `fstype`.
pub fn make_image(name: &str, image: &Path, fstype: &str, size: u64) -> Result<(), VolumeError> {
    let file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(image)
        .map_err(io_err("create loop image", image))?;
    file.set_len(size)
        .map_err(io_err("size loop image", image))?;
    drop(file);
    let (tool, mut command) = match fstype {
        "xfs" => {
            let mut c = Command::new("mkfs.xfs");
            c.args(["-q", "-f"]);
            if size < XFS_MINIMUM {
                c.env("TEST_DIR", "/nonexistent")
                    .env("TEST_DEV", image)
                    .env("QA_CHECK_FS", "1");
            }
            ("mkfs.xfs", c)
        }
        "ext4" => {
            let mut c = Command::new("mkfs.ext4");
            c.args(["-q", "-F", "-E", "root_owner=0:0"]);
            ("mkfs.ext4", c)
        }
        other => {
            return Err(VolumeError::Invalid {
                op: "create",
                name: name.to_string(),
                what: format!("cannot make a loop-backed {other} filesystem"),
            });
        }
    };
    let output = command
        .arg(image)
        .output()
        .map_err(io_err("run mkfs", image))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(VolumeError::Mkfs {
            name: name.to_string(),
            tool,
            stderr: stderr.lines().next().unwrap_or("no message").to_string(),
        });
    }
    Ok(())
}

/// Attaches `image` to a loop device and mounts it on `target`.
pub fn mount_image(
    name: &str,
    image: &Path,
    target: &Path,
    fstype: &str,
    data: &str,
) -> Result<(), VolumeError> {
    let device = LoopDevice::attach(
        image,
        LoopOptions {
            autoclear: true,
            ..LoopOptions::default()
        },
    )
    .map_err(|source| VolumeError::Loop {
        name: name.to_string(),
        source,
    })?;
    let (flags, data) = super::options::split_mount_options(data);
    let source = device.path().to_string_lossy().into_owned();
    mount::mount(
        &source,
        target,
        fstype,
        flags | MountFlags::empty(),
        (!data.is_empty()).then_some(data.as_str()),
    )
    .map_err(|source| VolumeError::Mount {
        name: name.to_string(),
        source,
    })?;
    // The mount holds the device now; dropping our handle clears it, which
    // the kernel defers (autoclear) until the unmount.
    drop(device);
    Ok(())
}
