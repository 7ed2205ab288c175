//! Deferred removal and deletion (`dm.use_deferred_removal`,
//! `dm.use_deferred_deletion`, as moby): a busy device-mapper device is
//! marked for the kernel to remove on its last close instead of failing
//! EBUSY, and a thin device that cannot be deleted yet is marked `deleted`
//! in its metadata file (its id stays taken) and deleted by a later
//! operation: `open`, `create`, `remove`, `cleanup`.

use std::io;

use super::{DevMapper, pool};
use crate::driver::DriverError;

impl DevMapper {
    /// Deletes the thin devices marked `deleted` whose devices are no
    /// longer busy (moby's cleanupDeletedDevices); returns how many are
    /// still waiting.
    pub fn cleanup_deleted_devices(&self) -> Result<usize, DriverError> {
        let mut left = 0;
        for (hash, info) in self.meta.devices()? {
            if !info.deleted {
                continue;
            }
            let mut state = self.lock();
            if !self.delete_device(&mut state, &hash, &info, false)? {
                left += 1;
            }
        }
        Ok(left)
    }

    /// Thin devices marked for deferred deletion.
    pub(super) fn deleted_count(&self) -> usize {
        self.meta
            .devices()
            .map(|d| d.iter().filter(|(_, i)| i.deleted).count())
            .unwrap_or(0)
    }

    /// moby's deactivateDevice: removes the device of `hash`; `deferred`
    /// leaves a busy one to the kernel, to remove on its last close.
    pub(super) fn deactivate(&self, hash: &str, deferred: bool) -> Result<(), DriverError> {
        let name = self.device_name(hash);
        if deferred {
            pool::deactivate_deferred(&self.control, &name).map(|_| ())
        } else {
            pool::deactivate(&self.control, &name)
        }
    }

    /// Cancels a pending deferred removal of `name`: `Ok(false)` when the
    /// device went away meanwhile.
    pub(super) fn cancel_deferred_removal(&self, name: &str) -> Result<bool, DriverError> {
        for _ in 0..50 {
            match self.control.cancel_deferred_remove(name) {
                Ok(()) => return Ok(true),
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return Ok(false),
                // Removal under way: wait for it to finish.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    if self
                        .control
                        .info(name)
                        .map_err(DriverError::io("DM_DEV_STATUS", pool::node_path(name)))?
                        .is_none()
                    {
                        return Ok(false);
                    }
                }
                Err(e) => {
                    return Err(DriverError::io(
                        "cancel deferred removal",
                        pool::node_path(name),
                    )(e));
                }
            }
        }
        Err(DriverError::io(
            "cancel deferred removal",
            pool::node_path(name),
        )(io::Error::from_raw_os_error(libc::EBUSY)))
    }
}
