//! The thin-pool and its thin devices on device-mapper: creating the pool
//! from a data and a metadata device, the pool messages (`create_thin`,
//! `create_snap`, `delete`, `set_transaction_id`), its status line, and
//! activating a thin device as `/dev/mapper/<name>` without udev (the node
//! is made here when nobody else made it).

use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::driver::DriverError;
use crate::sys::devmapper::{DmControl, Target};

pub const MAPPER_DIR: &str = "/dev/mapper";

/// `/dev/mapper/<name>`.
pub fn node_path(name: &str) -> PathBuf {
    Path::new(MAPPER_DIR).join(name)
}

fn dm_error(op: &'static str, name: &str) -> impl FnOnce(io::Error) -> DriverError {
    DriverError::io(op, node_path(name))
}

/// What a thin-pool's status line says (`dmsetup status` of a pool).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    pub transaction_id: u64,
    pub metadata_used: u64,
    pub metadata_total: u64,
    pub data_used: u64,
    pub data_total: u64,
    /// Length of the pool in 512-byte sectors.
    pub total_sectors: u64,
    /// `out_of_data_space` (or read-only / failed): new blocks fail.
    pub out_of_space: bool,
}

impl PoolStatus {
    /// Parses `<transaction> <meta used>/<total> <data used>/<total> ...`.
    pub fn parse(total_sectors: u64, params: &str) -> Option<Self> {
        let mut fields = params.split_whitespace();
        let transaction_id = fields.next()?.parse().ok()?;
        let pair = |field: Option<&str>| -> Option<(u64, u64)> {
            let (used, total) = field?.split_once('/')?;
            Some((used.parse().ok()?, total.parse().ok()?))
        };
        let (metadata_used, metadata_total) = pair(fields.next())?;
        let (data_used, data_total) = pair(fields.next())?;
        let _held_root = fields.next();
        let mode = fields.next().unwrap_or("rw");
        Some(Self {
            transaction_id,
            metadata_used,
            metadata_total,
            data_used,
            data_total,
            total_sectors,
            out_of_space: mode != "rw",
        })
    }

    /// Bytes per data block.
    pub fn block_bytes(&self) -> u64 {
        self.total_sectors / self.data_total.max(1) * 512
    }
}

/// Makes `/dev/mapper/<name>` a block node for `dev` (replacing a stale one).
pub fn ensure_node(name: &str, dev: u64) -> Result<PathBuf, DriverError> {
    let path = node_path(name);
    fs::create_dir_all(MAPPER_DIR).map_err(DriverError::io("create", MAPPER_DIR))?;
    if let Ok(meta) = fs::metadata(&path) {
        if meta.file_type().is_block_device() && meta.rdev() == dev {
            return Ok(path);
        }
        let _ = fs::remove_file(&path);
    }
    match nix::sys::stat::mknod(
        &path,
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        dev,
    ) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(path),
        Err(e) => Err(DriverError::io("mknod", &path)(e.into())),
    }
}

/// Removes `/dev/mapper/<name>` (udev may have done it already).
pub fn remove_node(name: &str) {
    let path = node_path(name);
    if fs::symlink_metadata(&path).is_ok_and(|m| !m.is_dir()) {
        let _ = fs::remove_file(path);
    }
}

/// `major:minor` as a table wants it.
pub fn dev_string(dev: u64) -> String {
    format!(
        "{}:{}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    )
}

/// Size of a block device (or file) in bytes.
pub fn device_size(path: &Path) -> Result<u64, DriverError> {
    let mut file = File::open(path).map_err(DriverError::io("open", path))?;
    file.seek(SeekFrom::End(0))
        .map_err(DriverError::io("size of", path))
}

/// The device number of a block device node.
pub fn block_dev(path: &Path) -> Result<u64, DriverError> {
    let meta = fs::metadata(path).map_err(DriverError::io("stat", path))?;
    if !meta.file_type().is_block_device() {
        return Err(DriverError::io("use as a block device", path)(
            io::Error::new(io::ErrorKind::InvalidInput, "not a block device"),
        ));
    }
    Ok(meta.rdev())
}

/// A device with a table: create, load, resume; removed again on failure.
pub fn activate(control: &DmControl, name: &str, table: Target) -> Result<u64, DriverError> {
    let dev = control
        .create_device(name)
        .map_err(dm_error("DM_DEV_CREATE", name))?;
    let loaded = control
        .load_table(name, &[table])
        .map_err(dm_error("DM_TABLE_LOAD", name))
        .and_then(|()| {
            control
                .resume(name)
                .map_err(dm_error("DM_DEV_SUSPEND (resume)", name))
        })
        .and_then(|()| ensure_node(name, dev));
    if let Err(e) = loaded {
        let _ = control.remove_device(name);
        return Err(e);
    }
    Ok(dev)
}

/// Removes device `name` if it exists, retrying while it is briefly busy
/// (a just-unmounted filesystem can hold it for a moment).
pub fn deactivate(control: &DmControl, name: &str) -> Result<(), DriverError> {
    if control
        .info(name)
        .map_err(dm_error("DM_DEV_STATUS", name))?
        .is_none()
    {
        remove_node(name);
        return Ok(());
    }
    let mut tries = 0;
    loop {
        match control.remove_device(name) {
            Ok(()) => break,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(dm_error("DM_DEV_REMOVE", name)(e)),
        }
    }
    remove_node(name);
    Ok(())
}

/// Removes device `name` if it exists; when it is open (a busy mount, an
/// open fd), marks it for deferred removal instead, which the kernel
/// carries out on its last close. Returns whether the device is gone now.
pub fn deactivate_deferred(control: &DmControl, name: &str) -> Result<bool, DriverError> {
    if control
        .info(name)
        .map_err(dm_error("DM_DEV_STATUS", name))?
        .is_none()
    {
        remove_node(name);
        return Ok(true);
    }
    match control.remove_device_deferred(name) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
        Err(e) => return Err(dm_error("DM_DEV_REMOVE (deferred)", name)(e)),
    }
    let gone = control
        .info(name)
        .map_err(dm_error("DM_DEV_STATUS", name))?
        .is_none();
    if gone {
        remove_node(name);
    }
    Ok(gone)
}

/// An active thin-pool.
#[derive(Debug)]
pub struct Pool {
    pub name: String,
    pub dev: u64,
}

impl Pool {
    /// Creates pool `name` on `data` and `metadata` block devices. The pool
    /// errors a write it has no block for (`error_if_no_space`) instead of
    /// queueing it for a minute, so a full pool is ENOSPC at once.
    pub fn create(
        control: &DmControl,
        name: &str,
        data: &Path,
        metadata: &Path,
        block_sectors: u32,
    ) -> Result<Self, DriverError> {
        let data_dev = block_dev(data)?;
        let metadata_dev = block_dev(metadata)?;
        let block_sectors = u64::from(block_sectors);
        let blocks = device_size(data)? / 512 / block_sectors;
        if blocks == 0 {
            return Err(DriverError::io("use as thin-pool data", data)(
                io::Error::new(io::ErrorKind::InvalidInput, "smaller than one pool block"),
            ));
        }
        let table = Target {
            start: 0,
            length: blocks * block_sectors,
            target_type: "thin-pool".into(),
            params: format!(
                "{} {} {block_sectors} 32768 2 skip_block_zeroing error_if_no_space",
                dev_string(metadata_dev),
                dev_string(data_dev)
            ),
        };
        let dev = activate(control, name, table)?;
        Ok(Self {
            name: name.to_string(),
            dev,
        })
    }

    /// An existing device `name`, which must be a thin-pool.
    pub fn existing(control: &DmControl, name: &str) -> Result<Option<Self>, DriverError> {
        let Some(info) = control
            .info(name)
            .map_err(dm_error("DM_DEV_STATUS", name))?
        else {
            return Ok(None);
        };
        let table = control
            .table(name)
            .map_err(dm_error("DM_TABLE_STATUS", name))?;
        if table.first().map(|t| t.target_type.as_str()) != Some("thin-pool") {
            return Err(dm_error("use as thin-pool", name)(io::Error::new(
                io::ErrorKind::InvalidInput,
                "device is not a thin pool",
            )));
        }
        ensure_node(name, info.dev)?;
        Ok(Some(Self {
            name: name.to_string(),
            dev: info.dev,
        }))
    }

    pub fn status(&self, control: &DmControl) -> Result<PoolStatus, DriverError> {
        let targets = control
            .status(&self.name)
            .map_err(dm_error("DM_TABLE_STATUS", &self.name))?;
        let target = targets.first().ok_or_else(|| {
            dm_error("DM_TABLE_STATUS", &self.name)(io::Error::other("pool has no table"))
        })?;
        if target.params.trim() == "Fail" {
            return Err(dm_error("DM_TABLE_STATUS", &self.name)(io::Error::other(
                "thin-pool is in failed mode",
            )));
        }
        PoolStatus::parse(target.length, &target.params).ok_or_else(|| {
            dm_error("DM_TABLE_STATUS", &self.name)(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unparsable thin-pool status {:?}", target.params),
            ))
        })
    }

    pub fn message(&self, control: &DmControl, message: &str) -> io::Result<()> {
        control.message(&self.name, 0, message)
    }

    /// The table of thin device `device_id` of `size` bytes on this pool.
    pub fn thin_table(&self, device_id: u32, size: u64) -> Target {
        Target {
            start: 0,
            length: size / 512,
            target_type: "thin".into(),
            params: format!("{} {device_id}", dev_string(self.dev)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_pool_status_line() {
        let status = PoolStatus::parse(
            209_715_200,
            "3 176/524288 2860/1638400 - rw discard_passdown error_if_no_space - 1024",
        )
        .unwrap();
        assert_eq!(status.transaction_id, 3);
        assert_eq!(
            (status.metadata_used, status.metadata_total),
            (176, 524_288)
        );
        assert_eq!((status.data_used, status.data_total), (2860, 1_638_400));
        assert_eq!(status.block_bytes(), 65536);
        assert!(!status.out_of_space);
        let full =
            PoolStatus::parse(8192, "1 10/100 64/64 - out_of_data_space discard_passdown").unwrap();
        assert!(full.out_of_space);
        assert!(PoolStatus::parse(8192, "Fail").is_none());
    }
}
