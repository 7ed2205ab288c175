//! The write-heavy workloads, one module each. A workload fills the image
//! layer ([`Workload::populate`]), then runs on the container's view and
//! times each operation ([`Workload::run`]), one [`Round`] of its
//! operations at a time so the bench can interleave the targets.

pub mod append_storm;
pub mod chmod_tree;
pub mod copy_up;
pub mod create_delete;
pub mod overwrite_fsync;
pub mod page_cache;
pub mod stack_depth;

use std::fs::File;
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
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

impl Outcome {
    /// Adds a later round's outcome of the same label: its latencies,
    /// bytes and time (and the larger page-cache growth).
    pub fn absorb(&mut self, later: Outcome) {
        self.latencies.merge(&later.latencies);
        self.bytes += later.bytes;
        self.elapsed += later.elapsed;
        if let Some(grown) = later.page_cache_bytes {
            // The growth of one cold start; every round starts cold.
            let largest = self.page_cache_bytes.get_or_insert(0);
            *largest = (*largest).max(grown);
        }
    }
}

/// One share of a workload's operations. The bench runs round 0 on every
/// target, then round 1 on every target, and so on: each target's samples
/// are spread over the same stretch of time as native's, so a slow spell
/// of the machine (on a shared VM, operations slowed by 30% for a
/// fraction of a second to seconds; mostly the host faulting back memory
/// the guest had lent it, which `memory_hold.rs` now stops) lands on
/// both sides of a ratio instead of on whichever target ran during it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    pub index: usize,
    pub of: usize,
}

impl Round {
    /// Every operation in one go (a single target, e.g. inside a container).
    pub const WHOLE: Round = Round { index: 0, of: 1 };

    /// The indices of `total` operations that belong to this round: an
    /// even spread, so a few large operations (8 copy-ups of 1 GiB over
    /// 32 rounds at full scale) fall in rounds far apart rather than in
    /// the first ones.
    pub fn share(self, total: usize) -> Range<usize> {
        let of = self.of.max(1);
        self.index * total / of..(self.index + 1) * total / of
    }
}

pub trait Workload: Send + Sync {
    fn name(&self) -> &'static str;
    /// Fills the image layer at `image`.
    fn populate(&self, image: &Path, scale: Scale) -> io::Result<()>;
    /// Runs `round`'s share of the operations on the container view `root`
    /// and measures them; the rounds of one root together do the workload
    /// once.
    fn run(&self, root: &Path, scale: Scale, round: Round) -> io::Result<Vec<Outcome>>;

    /// Containers of the image the workload works through at once (for
    /// native, the same directory that many times). More than one
    /// (page-cache's readers) runs through `run_views`, round by round
    /// beside the other targets like any file workload, but not inside a
    /// single Docker container.
    fn containers(&self, _scale: Scale) -> usize {
        1
    }

    /// Runs `round`'s share on the views of `containers` containers of
    /// the image; a one-container workload runs on the first.
    fn run_views(&self, roots: &[PathBuf], scale: Scale, round: Round) -> io::Result<Vec<Outcome>> {
        match roots.first() {
            Some(root) => self.run(root, scale, round),
            None => Ok(Vec::new()),
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_share_every_operation_once() {
        for (total, of) in [(32, 32), (8, 32), (4096, 32), (5, 3), (0, 4)] {
            let mut seen = Vec::new();
            for index in 0..of {
                seen.extend(Round { index, of }.share(total));
            }
            assert_eq!(seen, (0..total).collect::<Vec<_>>(), "{total} over {of}");
        }
        assert_eq!(Round::WHOLE.share(7), 0..7);
    }

    #[test]
    fn few_operations_spread_over_many_rounds() {
        let rounds_with_work: Vec<usize> = (0..32)
            .filter(|&index| !Round { index, of: 32 }.share(8).is_empty())
            .collect();
        assert_eq!(rounds_with_work, vec![3, 7, 11, 15, 19, 23, 27, 31]);
    }
}
