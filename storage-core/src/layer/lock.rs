//! An exclusive advisory lock (flock) on a file, so several layerscope
//! processes can use one store safely. Released when dropped.

use std::fs::{File, OpenOptions};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use super::LayerError;

pub struct StoreLock {
    _lock: Flock<File>,
}

impl StoreLock {
    /// Blocks until `path` (created when missing) is locked exclusively.
    pub fn exclusive(path: &Path) -> Result<Self, LayerError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(LayerError::io("open lock", path))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| LayerError::io("flock", path)(errno.into()))?;
        Ok(Self { _lock: lock })
    }
}
