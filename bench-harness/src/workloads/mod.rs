//! The write-heavy workloads, one module each. A workload fills the image
//! layer ([`Workload::populate`]), then runs on the container's view and
//! times each operation ([`Workload::run`]).

pub mod append_storm;
pub mod chmod_tree;
pub mod copy_up;
pub mod create_delete;
pub mod overwrite_fsync;
pub mod page_cache;
pub mod stack_depth;

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use crate::BenchError;
use crate::scale::Scale;
use crate::stats::Latencies;

pub const WORKLOAD_NAMES: &[&str] = &[
    "copy-up",
    "append-storm",
    "overwrite-fsync",
    "create-delete",
    "chmod-tree",
    "stack-depth",
    "page-cache",
];

/// What one run of a workload measured (a workload may report several,
/// e.g. copy-up per file size).
pub struct Outcome {
    /// e.g. `copy-up/4KiB`.
    pub label: String,
    pub latencies: Latencies,
    /// Bytes the operations wrote (user data, not copy-up traffic).
    pub bytes: u64,
    pub elapsed: Duration,
    /// How much the kernel's page cache grew (page-cache workload only).
    pub page_cache_bytes: Option<u64>,
}

pub trait Workload: Send + Sync {
    fn name(&self) -> &'static str;
    /// Fills the image layer at `image`.
    fn populate(&self, image: &Path, scale: Scale) -> io::Result<()>;
    /// Runs on the container view `root` and measures.
    fn run(&self, root: &Path, scale: Scale) -> io::Result<Vec<Outcome>>;

    /// Whether the workload drives the storage driver itself (layers and
    /// containers) rather than files; such a workload has no native rows.
    fn driver_level(&self) -> bool {
        false
    }

    /// For driver-level workloads: runs with the target's driver, whose
    /// empty layer `base` is the bottom of the image.
    fn run_on_driver(
        &self,
        _driver: &dyn storage_core::driver::Driver,
        _base: &str,
        _scale: Scale,
    ) -> io::Result<Vec<Outcome>> {
        Ok(Vec::new())
    }
}

pub fn by_name(name: &str) -> Result<Box<dyn Workload>, BenchError> {
    Ok(match name {
        "copy-up" => Box::new(copy_up::CopyUp),
        "append-storm" => Box::new(append_storm::AppendStorm),
        "overwrite-fsync" => Box::new(overwrite_fsync::OverwriteFsync),
        "create-delete" => Box::new(create_delete::CreateDelete),
        "chmod-tree" => Box::new(chmod_tree::ChmodTree),
        "stack-depth" => Box::new(stack_depth::StackDepth),
        "page-cache" => Box::new(page_cache::PageCacheSharing),
        other => return Err(BenchError::UnknownWorkload(other.to_string())),
    })
}

/// Writes a file of `size` bytes of non-zero data (a repeated pseudo-random
/// block, so no filesystem can treat it as a hole).
pub fn write_file(path: &Path, size: u64) -> io::Result<()> {
    const BLOCK: usize = 1 << 20;
    thread_local! {
        static DATA: Vec<u8> = (0..BLOCK).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 1).collect();
    }
    let mut file = File::create(path)?;
    DATA.with(|data| {
        let mut left = size;
        while left > 0 {
            let n = left.min(BLOCK as u64) as usize;
            file.write_all(&data[..n])?;
            left -= n as u64;
        }
        Ok::<(), io::Error>(())
    })?;
    Ok(())
}

/// `1KiB`, `64MiB`, ...
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024 && value.is_multiple_of(1024) && unit < UNITS.len() - 1 {
        value /= 1024;
        unit += 1;
    }
    format!("{value}{}", UNITS[unit])
}

/// Flushes the filesystem holding `path`, so the next run starts without
/// the previous phase's dirty pages.
pub fn sync_filesystem(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    nix::unistd::syncfs(&file).map_err(io::Error::from)
}
