//! vfs child-layer creation time: a full copy of a 1 GiB parent layer, on
//! xfs with reflink (FICLONE per file: metadata only) and on ext4
//! (`copy_file_range`: every byte). Run as root with
//! `cargo bench -p storage-core --bench vfs_child` (figures go to
//! docs/performance.md). Issue target: well under a second on reflink.
//!
//! The parent holds 4 files of 128 MiB and 4,096 files of 128 KiB in 64
//! directories (1 GiB of non-zero data). Each run creates a child, times
//! `create` and then `syncfs` (the copy's dirty data reaching the disk),
//! and removes it; the median and the fastest of `VFS_CHILD_RUNS` (default 5)
//! are printed, with every run's time (the machine is shared).
//! The page cache is warm (the parent was just written and synced).
//! `VFS_CHILD_FS=xfs-reflink|ext4` runs one filesystem only,
//! `VFS_CHILD_THREADS=N` sets the copy threads.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use storage_core::driver::vfs::Vfs;
use storage_core::driver::{CreateOpts, Driver, DriverOptions};
use testkit::{FsKind, ScratchFs};

const BIG_FILES: usize = 4;
const BIG_SIZE: usize = 128 << 20;
const SMALL_DIRS: usize = 64;
const SMALL_PER_DIR: usize = 64;
const SMALL_SIZE: usize = 128 << 10;

fn main() {
    if !nix::unistd::Uid::effective().is_root() {
        println!("skipped: vfs_child needs root (loop devices, mounts)");
        return;
    }
    let runs: usize = std::env::var("VFS_CHILD_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let threads: Option<usize> = std::env::var("VFS_CHILD_THREADS")
        .ok()
        .and_then(|v| v.parse().ok());
    let only = std::env::var("VFS_CHILD_FS").ok();
    for (label, kind) in [
        ("xfs-reflink", FsKind::Xfs { reflink: true }),
        ("ext4", FsKind::Ext4),
    ] {
        if only.as_deref().is_some_and(|o| o != label) {
            continue;
        }
        bench_on(label, kind, runs, threads);
    }
}

fn fill_parent(root: &Path) -> u64 {
    let mut block = vec![0u8; 1 << 20];
    for (i, b) in block.iter_mut().enumerate() {
        *b = (i % 251) as u8 + 1;
    }
    let mut total = 0u64;
    for i in 0..BIG_FILES {
        let mut file = File::create(root.join(format!("big-{i}"))).unwrap();
        for _ in 0..BIG_SIZE / block.len() {
            file.write_all(&block).unwrap();
        }
        total += BIG_SIZE as u64;
    }
    for d in 0..SMALL_DIRS {
        let dir = root.join(format!("dir-{d:02}"));
        fs::create_dir(&dir).unwrap();
        for f in 0..SMALL_PER_DIR {
            fs::write(dir.join(format!("f-{f:03}")), &block[..SMALL_SIZE]).unwrap();
            total += SMALL_SIZE as u64;
        }
    }
    total
}

fn syncfs(path: &Path) {
    let dir = File::open(path).unwrap();
    nix::unistd::syncfs(&dir).unwrap();
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn bench_on(label: &str, kind: FsKind, runs: usize, threads: Option<usize>) {
    let fs = match ScratchFs::new(kind, 4 << 30) {
        Ok(fs) => fs,
        Err(e) => {
            println!("skipped: {label} unavailable: {e}");
            return;
        }
    };
    let mut driver = Vfs::open(&fs.path().join("vfs"), &DriverOptions::default()).unwrap();
    if let Some(threads) = threads {
        driver.set_threads(threads);
    }
    let none = CreateOpts::default();
    driver.create("parent", None, &none).unwrap();
    let bytes = fill_parent(&driver.get("parent").unwrap());
    syncfs(fs.path());

    let mut create = Vec::new();
    let mut with_sync = Vec::new();
    let mut last_stats = None;
    for run in 0..runs {
        let id = format!("child-{run}");
        let start = Instant::now();
        let stats = driver.create_layer(&id, Some("parent")).unwrap();
        let created = start.elapsed();
        syncfs(fs.path());
        let synced = start.elapsed();
        create.push(created);
        with_sync.push(synced);
        last_stats = Some(stats);
        driver.remove(&id).unwrap();
        syncfs(fs.path());
    }
    let stats = last_stats.unwrap();
    let ms: Vec<String> = create
        .iter()
        .map(|d| format!("{:.0}", d.as_secs_f64() * 1e3))
        .collect();
    println!("{label}: create runs (ms): {}", ms.join(" "));
    let status = driver.status();
    let reflink = status
        .iter()
        .find(|(k, _)| k == "Reflink")
        .map(|(_, v)| v.as_str())
        .unwrap_or("?");
    println!(
        "vfs child of a {} MiB layer ({} files, {} dirs) on {label} (reflink {reflink}): \
         create median {:.1} ms (fastest {:.1} ms), create+syncfs median {:.1} ms over {runs} runs \
         [files cloned {}, copy_file_range {}, read/write {}]",
        bytes >> 20,
        stats.files,
        stats.dirs,
        median(create.clone()).as_secs_f64() * 1e3,
        create.iter().min().unwrap().as_secs_f64() * 1e3,
        median(with_sync).as_secs_f64() * 1e3,
        stats.cloned,
        stats.ranged,
        stats.read_write,
    );
    driver.remove("parent").unwrap();
}
