//! Reference counts of a driver's mounts (moby's mountref.Counter): `get`
//! mounts on the first reference, `put` unmounts on the last. A mount left
//! by an earlier process (the CLI mounts and exits) counts as one reference.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::sys::mount::is_mount_point;

#[derive(Debug, Default)]
pub struct MountCounter {
    counts: Mutex<HashMap<PathBuf, usize>>,
}

impl MountCounter {
    /// Adds a reference to `path` and returns the new count; 1 means the
    /// caller must mount.
    pub fn increment(&self, path: &Path) -> usize {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts
            .entry(path.to_path_buf())
            .or_insert_with(|| usize::from(is_mount_point(path)));
        *count += 1;
        *count
    }

    /// Drops a reference and returns what is left; 0 means the caller must
    /// unmount.
    pub fn decrement(&self, path: &Path) -> usize {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts
            .entry(path.to_path_buf())
            .or_insert_with(|| usize::from(is_mount_point(path)));
        *count = count.saturating_sub(1);
        let left = *count;
        if left == 0 {
            counts.remove(path);
        }
        left
    }
}
