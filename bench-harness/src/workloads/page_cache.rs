//! Page-cache sharing: N containers of one image read the same lower file.
//! On overlay2 (and a shared volume) the file is cached once; on vfs,
//! btrfs and devicemapper every container has its own inode (or block
//! device) and the cache holds N copies. Measured as the growth of the
//! kernel's page cache (`Cached:` in /proc/meminfo) from a cold start.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use storage_core::driver::{CreateOpts, Driver};

use super::{Outcome, Round, Workload, write_file};
use crate::scale::Scale;
use crate::stats::Latencies;

pub struct PageCacheSharing;

const FILE: &str = "shared.bin";

fn file_size(scale: Scale) -> u64 {
    match scale {
        Scale::Tiny => 16 << 20,
        Scale::Small => 64 << 20,
        Scale::Full => 256 << 20,
    }
}

/// Containers reading the file.
pub fn readers(scale: Scale) -> usize {
    match scale {
        Scale::Tiny => 2,
        Scale::Small | Scale::Full => 4,
    }
}

/// `Cached:` of /proc/meminfo, in bytes.
fn cached_bytes() -> io::Result<u64> {
    crate::stats::meminfo_bytes("Cached")
}

/// Empties the page cache so every target starts cold (needs root).
fn drop_caches() -> io::Result<()> {
    nix::unistd::sync();
    std::fs::write("/proc/sys/vm/drop_caches", "3")
}

/// Cold starts measured per repeat: one start gives one sample per
/// container, too few for a steady p50 (a 64 MiB read from memory moved
/// 3.6 to 5.6 ms between repeats).
fn cold_starts(scale: Scale) -> usize {
    match scale {
        Scale::Tiny => 2,
        Scale::Small | Scale::Full => 8,
    }
}

/// From a cold cache, reads the file once through every root, and again
/// for each cold start: every read is a sample; the cache growth is the
/// largest of one start.
fn read_all(roots: &[PathBuf], scale: Scale) -> io::Result<Vec<Outcome>> {
    let mut latencies = Latencies::default();
    let mut buffer = vec![0u8; 1 << 20];
    let mut elapsed = std::time::Duration::ZERO;
    let mut grown = 0;
    for _ in 0..cold_starts(scale) {
        drop_caches()?;
        let before = cached_bytes()?;
        let started = Instant::now();
        for root in roots {
            let begun = Instant::now();
            let mut file = File::open(root.join(FILE))?;
            while file.read(&mut buffer)? > 0 {}
            latencies.record(begun.elapsed());
        }
        elapsed += started.elapsed();
        grown = grown.max(cached_bytes()?.saturating_sub(before));
    }
    Ok(vec![Outcome {
        label: format!("page-cache/{}x{}MiB", roots.len(), file_size(scale) >> 20),
        latencies,
        bytes: 0,
        elapsed,
        page_cache_bytes: Some(grown),
    }])
}

impl Workload for PageCacheSharing {
    fn name(&self) -> &'static str {
        "page-cache"
    }

    fn populate(&self, image: &Path, scale: Scale) -> io::Result<()> {
        write_file(&image.join(FILE), file_size(scale))
    }

    /// Native: the containers share one volume, so they read one file.
    /// One round: dropping the caches between rounds would undo sharing.
    fn run(&self, root: &Path, scale: Scale, _round: Round) -> io::Result<Vec<Outcome>> {
        read_all(&vec![root.to_path_buf(); readers(scale)], scale)
    }

    fn driver_level(&self) -> bool {
        true
    }

    fn run_on_driver(
        &self,
        driver: &dyn Driver,
        base: &str,
        scale: Scale,
    ) -> io::Result<Vec<Outcome>> {
        let to_io = |e: storage_core::driver::DriverError| io::Error::other(e.to_string());
        let image = driver.get(base).map_err(to_io)?;
        self.populate(&image, scale)?;
        driver.put(base).map_err(to_io)?;
        let ids: Vec<String> = (0..readers(scale))
            .map(|i| format!("{base}-reader{i}"))
            .collect();
        let mut mounted = Vec::new();
        let result = (|| {
            let mut roots = Vec::new();
            for id in &ids {
                driver
                    .create_rw(id, Some(base), &CreateOpts::default())
                    .map_err(to_io)?;
                roots.push(driver.get(id).map_err(to_io)?);
                mounted.push(id.clone());
            }
            read_all(&roots, scale)
        })();
        for id in &mounted {
            let _ = driver.put(id);
        }
        for id in &ids {
            if driver.exists(id) {
                let _ = driver.remove(id);
            }
        }
        result
    }
}
