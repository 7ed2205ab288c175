//! Unmounting for cleanup code: retry while busy, then detach lazily, so a
//! test never leaves a mount behind.

use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use storage_core::sys::mount::{is_mount_point, unmount, unmount_detach};

use crate::TestkitError;

/// How often a busy mount is retried before the MNT_DETACH fallback; the
/// waits double from 20 ms (620 ms in all).
const ATTEMPTS: u32 = 5;

/// How `target` went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmounted {
    /// It was not (or no longer) a mount point.
    NotMounted,
    /// A plain unmount succeeded.
    Clean,
    /// It stayed busy and was detached with MNT_DETACH; the filesystem lives
    /// on until its last user is gone.
    Detached,
}

/// Unmounts everything stacked on `target`: plain unmounts, retried while
/// EBUSY, then MNT_DETACH as the last resort (logged to stderr).
pub fn unmount_robust(target: &Path) -> Result<Unmounted, TestkitError> {
    if !is_mount_point(target) {
        return Ok(Unmounted::NotMounted);
    }
    let mut busy = None;
    for attempt in 0..ATTEMPTS {
        match unmount(target) {
            Ok(()) => {}
            Err(e) if e.source == Errno::EBUSY => {
                busy = Some(e);
                std::thread::sleep(Duration::from_millis(20 << attempt));
            }
            Err(e) if e.source == Errno::EINVAL && !is_mount_point(target) => {}
            Err(e) => return Err(e.into()),
        }
        if !is_mount_point(target) {
            return Ok(Unmounted::Clean);
        }
    }
    if let Some(e) = &busy {
        eprintln!("testkit: {e}; detaching lazily (MNT_DETACH)");
    }
    for _ in 0..ATTEMPTS {
        match unmount_detach(target) {
            Ok(()) => {}
            Err(e) if e.source == Errno::EINVAL && !is_mount_point(target) => {}
            Err(e) => return Err(e.into()),
        }
        if !is_mount_point(target) {
            return Ok(Unmounted::Detached);
        }
    }
    // Still more mounts stacked on it than attempts: report the last error.
    unmount_detach(target)?;
    Ok(Unmounted::Detached)
}
