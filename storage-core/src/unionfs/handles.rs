//! Open files and directories of the union: FUSE file handles for real
//! files in a branch, listing snapshots for directories, and the kernel
//! passthrough backing ids, one per node and backing file, shared by every
//! open of that node and closed with its last release.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fuser::BackingId;

use super::branch::Listed;

/// One open regular file.
#[derive(Debug)]
pub struct OpenFile {
    pub file: File,
    /// The node whose backing id this open holds (passthrough opens).
    pub backing_node: Option<u64>,
}

/// A backing file registered with the kernel for passthrough.
#[derive(Debug)]
struct Backing {
    /// (st_dev, st_ino) of the backing file.
    identity: (u64, u64),
    id: Arc<BackingId>,
    opens: usize,
}

#[derive(Debug, Default)]
pub struct Handles {
    next: AtomicU64,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    dirs: Mutex<HashMap<u64, Arc<Vec<Listed>>>>,
    backings: Mutex<HashMap<u64, Backing>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Handles {
    fn next_handle(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn add_file(&self, file: OpenFile) -> u64 {
        let fh = self.next_handle();
        lock(&self.files).insert(fh, Arc::new(file));
        fh
    }

    pub fn file(&self, fh: u64) -> Option<Arc<OpenFile>> {
        lock(&self.files).get(&fh).cloned()
    }

    /// Closes `fh`, dropping its share of the node's backing id.
    pub fn release_file(&self, fh: u64) {
        let Some(open) = lock(&self.files).remove(&fh) else {
            return;
        };
        if let Some(node) = open.backing_node {
            let mut backings = lock(&self.backings);
            if let Some(backing) = backings.get_mut(&node) {
                backing.opens -= 1;
                if backing.opens == 0 {
                    backings.remove(&node);
                }
            }
        }
    }

    pub fn add_dir(&self, listing: Vec<Listed>) -> u64 {
        let fh = self.next_handle();
        lock(&self.dirs).insert(fh, Arc::new(listing));
        fh
    }

    pub fn dir(&self, fh: u64) -> Option<Arc<Vec<Listed>>> {
        lock(&self.dirs).get(&fh).cloned()
    }

    pub fn release_dir(&self, fh: u64) {
        lock(&self.dirs).remove(&fh);
    }

    /// The backing id for `node` backed by the file `identity`: the one
    /// already registered (counted once more), a new one from `open`, or
    /// `None` when the node is backed by another file right now (the
    /// kernel allows one backing file per inode) or registration failed.
    pub fn backing_for(
        &self,
        node: u64,
        identity: (u64, u64),
        open: impl FnOnce() -> std::io::Result<BackingId>,
    ) -> Option<Arc<BackingId>> {
        let mut backings = lock(&self.backings);
        if let Some(backing) = backings.get_mut(&node) {
            if backing.identity != identity {
                return None;
            }
            backing.opens += 1;
            return Some(backing.id.clone());
        }
        let id = Arc::new(open().ok()?);
        backings.insert(
            node,
            Backing {
                identity,
                id: id.clone(),
                opens: 1,
            },
        );
        Some(id)
    }
}
