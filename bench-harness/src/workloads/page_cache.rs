//! Page-cache sharing: N containers of one image read the same lower file.
//! On overlay2 (and a shared volume) the file is cached once; on vfs,
//! btrfs and devicemapper every container has its own inode (or block
//! device) and the cache holds N copies. Measured as the growth of the
//! kernel's page cache (`Cached:` in /proc/meminfo) from a cold start,
//! and timed as how long all N take to read it from a cold start: on a
//! shared cache one reader waits for the disk and the others read memory;
//! without sharing every reader waits for the disk.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

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

/// Cold starts measured per repeat, each one sample.
fn cold_starts(scale: Scale) -> usize {
    match scale {
        Scale::Tiny => 2,
        Scale::Small | Scale::Full => 12,
    }
}

/// Reads the file once through every root, from a cold cache, for each
/// of `round`'s cold starts: a sample is the time all the roots' reads of
/// one start take, and the cache growth is the largest of one start.
///
/// Not one sample per read: native's p50 would then be a read from
/// memory and vfs's a read from disk, a ratio of the disk's speed to the
/// memory's that moved 10–30% between runs as either drifted. Summed per
/// start, both sides hold the disk reads they cause; and the starts of
/// every target take turns round by round (`interleave.rs`), so a target's
/// disk and native's are read within a second of each other.
fn read_all(roots: &[PathBuf], scale: Scale, round: Round) -> io::Result<Vec<Outcome>> {
    let mut latencies = Latencies::default();
    let mut buffer = vec![0u8; 1 << 20];
    let mut elapsed = std::time::Duration::ZERO;
    let mut grown = 0;
    for _ in round.share(cold_starts(scale)) {
        drop_caches()?;
        let before = cached_bytes()?;
        let started = Instant::now();
        for root in roots {
            let mut file = File::open(root.join(FILE))?;
            while file.read(&mut buffer)? > 0 {}
        }
        let took = started.elapsed();
        latencies.record(took);
        elapsed += took;
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
    fn run(&self, root: &Path, scale: Scale, round: Round) -> io::Result<Vec<Outcome>> {
        read_all(&vec![root.to_path_buf(); readers(scale)], scale, round)
    }

    fn containers(&self, scale: Scale) -> usize {
        readers(scale)
    }

    fn run_views(&self, roots: &[PathBuf], scale: Scale, round: Round) -> io::Result<Vec<Outcome>> {
        read_all(roots, scale, round)
    }
}
