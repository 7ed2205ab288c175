//! Whether a thin-pool is this store's: checked at `open` before anything
//! changes (moby's checkThinPool, transaction checks and
//! setupVerifyBaseImageUUIDFS, made strict). An empty store takes only an
//! empty pool; a store with devices needs the pool's transaction id to
//! match its files and the base device to carry the filesystem it made.
//! A metadata device from another pool, or a fresh one under an existing
//! store, is refused in one line naming the device and the cause.

use std::io;

use super::metadata::{self, DevInfo};
use super::pool::{self, PoolStatus};
use super::{DevMapper, fs};
use crate::driver::DriverError;

impl DevMapper {
    /// What the errors call the pool's metadata device.
    pub(super) fn metadata_source(&self) -> String {
        if !self.metadata_device.is_empty() {
            return format!("metadata device {}", self.metadata_device);
        }
        match &self.metadata_loop_file {
            Some(file) => format!("metadata file {}", file.display()),
            None => "metadata device".to_string(),
        }
    }

    pub(super) fn ownership_error(&self, why: String) -> DriverError {
        self.pool_error("take ownership of thin pool")(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{why}; nothing was changed"),
        ))
    }

    /// moby's checkThinPool and transaction checks, made strict: an empty
    /// store takes only an empty pool (no used data block, transaction id
    /// 0); a store with devices needs a pool whose transaction id is at
    /// least the newest device's and matches an open transaction. Refuses
    /// a metadata device from another pool, or a fresh one under an
    /// existing store, before anything is written.
    pub(super) fn verify_pool(&self, status: &PoolStatus) -> Result<(), DriverError> {
        let devices = self.meta.devices()?;
        let pool_tid = status.transaction_id;
        if devices.is_empty() {
            if status.data_used != 0 || pool_tid != 0 {
                return Err(self.ownership_error(format!(
                    "its {} already has {} used data blocks and transaction id {pool_tid}, but {} records no device (a pool of another store?)",
                    self.metadata_source(),
                    status.data_used,
                    self.meta.path().display()
                )));
            }
            return Ok(());
        }
        let pending = self.meta.load_transaction()?;
        if let Some(t) = &pending {
            if t.open_transaction_id != pool_tid && t.open_transaction_id != pool_tid + 1 {
                return Err(self.ownership_error(format!(
                    "transaction id mismatch: its {} is at transaction {pool_tid}, {} at {} (a metadata device from another pool?)",
                    self.metadata_source(),
                    self.meta.path().join(metadata::TRANSACTION_FILE).display(),
                    t.open_transaction_id
                )));
            }
        }
        let rolled_back = pending
            .as_ref()
            .filter(|t| t.open_transaction_id == pool_tid + 1);
        let newest = devices
            .iter()
            .filter(|(hash, info)| {
                rolled_back.is_none_or(|t| {
                    t.device_hash != *hash || info.transaction_id != t.open_transaction_id
                })
            })
            .max_by_key(|(_, info)| info.transaction_id);
        if let Some((hash, info)) = newest {
            if info.transaction_id > pool_tid {
                return Err(self.ownership_error(format!(
                    "transaction id mismatch: its {} is at transaction {pool_tid}, but device {} was made in transaction {} (a fresh metadata device, or one from another pool?)",
                    self.metadata_source(),
                    if hash.is_empty() { metadata::BASE } else { hash },
                    info.transaction_id
                )));
            }
        }
        Ok(())
    }

    /// moby's setupVerifyBaseImageUUIDFS: the base device in the pool must
    /// carry the filesystem this store made (a pool of another store has
    /// other devices under the same ids).
    pub(super) fn verify_base_uuid(&self, base: &DevInfo, saved: &str) -> Result<(), DriverError> {
        let name = self.device_name("");
        let was_active = self
            .control
            .info(&name)
            .map_err(DriverError::io("DM_DEV_STATUS", pool::node_path(&name)))?
            .is_some();
        let path = self.activate("", base).map_err(|e| {
            self.ownership_error(format!(
                "its {} has no base device {} ({e})",
                self.metadata_source(),
                base.device_id
            ))
        })?;
        let probed = fs::probe(&path);
        if !was_active {
            let _ = pool::deactivate(&self.control, &name);
        }
        let found = match probed {
            Ok(Some((_, uuid))) => uuid,
            Ok(None) => "no xfs or ext4 filesystem".to_string(),
            Err(e) => return Err(DriverError::io("read superblock", &path)(e)),
        };
        if found != saved {
            return Err(self.ownership_error(format!(
                "base device {} in its {} holds filesystem {found}, but {} records {saved} (a metadata device from another pool?)",
                base.device_id,
                self.metadata_source(),
                self.meta.path().join(metadata::DEVICE_SET_FILE).display()
            )));
        }
        Ok(())
    }
}
