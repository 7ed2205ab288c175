//! [`MountGuard`]: RAII for a mount the test makes itself (an overlay, a
//! bind mount): unmounted on drop, with the MNT_DETACH fallback.

use std::path::{Path, PathBuf};

use storage_core::sys::mount::{self, MountFlags};

use crate::TestkitError;
use crate::unmount::{Unmounted, unmount_robust};

/// Unmounts `target` when dropped (also on unwind). Declare it after the
/// [`ScratchFs`](crate::ScratchFs) it lives on, so it drops first.
#[derive(Debug)]
#[must_use = "the mount is unmounted as soon as the guard is dropped"]
pub struct MountGuard {
    target: PathBuf,
    armed: bool,
}

impl MountGuard {
    /// Guards a mount already made on `target`.
    pub fn new(target: impl Into<PathBuf>) -> Self {
        Self {
            target: target.into(),
            armed: true,
        }
    }

    /// Mounts (as [`storage_core::sys::mount::mount`]) and guards the mount.
    pub fn mount(
        source: &str,
        target: impl Into<PathBuf>,
        fstype: &str,
        flags: MountFlags,
        data: Option<&str>,
    ) -> Result<Self, TestkitError> {
        let target = target.into();
        mount::mount(source, &target, fstype, flags, data)?;
        Ok(Self::new(target))
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.target
    }

    /// Unmounts now, reporting failure (drop does the same, logging it).
    pub fn unmount(mut self) -> Result<Unmounted, TestkitError> {
        self.armed = false;
        unmount_robust(&self.target)
    }

    /// Stops guarding: the mount stays.
    pub fn disarm(mut self) -> PathBuf {
        self.armed = false;
        std::mem::take(&mut self.target)
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = unmount_robust(&self.target) {
                eprintln!("testkit: mount guard {}: {e}", self.target.display());
            }
        }
    }
}
