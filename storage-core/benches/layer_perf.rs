//! Macro benchmarks of the layer store, run as root with
//! `cargo bench -p storage-core --bench layer_perf` (figures go to
//! docs/performance.md):
//!
//! - apply of a 1 GiB layer vs GNU `tar -x` of the same tar on the same
//!   filesystem (target: within 1.3x);
//! - container create + mount on the deepest stack Docker allows (127
//!   image layers + init + rw: the rw layer has 128 lowers; target < 50 ms).

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use storage_core::container::ContainerStore;
use storage_core::driver::{self, DriverOptions};
use storage_core::layer::LayerStore;
use testkit::{FsKind, ScratchFs};

fn main() {
    if !nix::unistd::Uid::effective().is_root() {
        println!("skipped: layer_perf needs root (loop devices, mounts)");
        return;
    }
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    if wanted("apply") {
        apply_vs_tar();
    }
    if wanted("stack") {
        deep_stack_create_mount();
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn sync(path: &Path) {
    let file = File::open(path).unwrap();
    nix::unistd::syncfs(&file).unwrap();
}

fn drop_caches() {
    sync(Path::new("/"));
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

/// A 1 GiB layer: 64 files of 8 MiB and 16,384 files of 32 KiB in 256 dirs.
fn write_layer_tar(path: &Path) -> u64 {
    let mut builder = tar::Builder::new(BufWriter::with_capacity(
        1 << 20,
        File::create(path).unwrap(),
    ));
    let block: Vec<u8> = (0..(8 << 20))
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let header = |size: u64, mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_device_major(0).unwrap();
        h.set_device_minor(0).unwrap();
        h
    };
    for i in 0..64 {
        let mut h = header(8 << 20, 0o644);
        builder
            .append_data(&mut h, format!("big/file{i}"), &block[..])
            .unwrap();
    }
    for i in 0..16_384 {
        let mut h = header(32 << 10, 0o644);
        let start = (i * 4096) % (block.len() - (32 << 10));
        builder
            .append_data(
                &mut h,
                format!("small/{:02x}/f{i}", i % 256),
                &block[start..start + (32 << 10)],
            )
            .unwrap();
    }
    builder.into_inner().unwrap().flush().unwrap();
    std::fs::metadata(path).unwrap().len()
}

fn apply_vs_tar() {
    let fs = ScratchFs::new(FsKind::Ext4, 8 << 30).unwrap();
    let tar_path = fs.path().join("layer.tar");
    let size = write_layer_tar(&tar_path);
    println!(
        "apply_vs_tar: layer tar {} MiB, ext4 on a loop device",
        size >> 20
    );
    let rounds = 3;
    let (mut tar_times, mut apply_times) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // GNU tar -x, into a fresh directory.
        let dest = fs.path().join(format!("tar-x-{round}"));
        std::fs::create_dir(&dest).unwrap();
        drop_caches();
        let started = Instant::now();
        let status = Command::new("tar")
            .args(["-xf"])
            .arg(&tar_path)
            .arg("-C")
            .arg(&dest)
            .status()
            .unwrap();
        assert!(status.success());
        sync(fs.path());
        tar_times.push(started.elapsed());
        std::fs::remove_dir_all(&dest).unwrap();

        // layerscope: diff-id, tar-split, overlay2 layer, layerdb entry.
        let root = fs.path().join(format!("root-{round}"));
        let driver = driver::open("overlay2", &root, &DriverOptions::default()).unwrap();
        let store = LayerStore::open(&root, driver).unwrap();
        drop_caches();
        let started = Instant::now();
        let layer = store
            .apply(
                BufReader::with_capacity(1 << 20, File::open(&tar_path).unwrap()),
                None,
            )
            .unwrap();
        sync(fs.path());
        apply_times.push(started.elapsed());
        store.remove(&layer.chain_id).unwrap();
        sync(fs.path());
    }
    let (tar_x, apply) = (median(tar_times), median(apply_times));
    println!(
        "apply_vs_tar: tar -x {:.2} s, layer apply {:.2} s, ratio {:.2}x (median of {rounds}, cold cache, synced)",
        tar_x.as_secs_f64(),
        apply.as_secs_f64(),
        apply.as_secs_f64() / tar_x.as_secs_f64()
    );
}

fn tiny_layer(i: usize) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    let data = format!("layer {i}\n");
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_device_major(0).unwrap();
    h.set_device_minor(0).unwrap();
    builder
        .append_data(&mut h, format!("layers/{i}"), data.as_bytes())
        .unwrap();
    builder.into_inner().unwrap()
}

fn deep_stack_create_mount() {
    let fs = ScratchFs::new(FsKind::Ext4, 1 << 30).unwrap();
    let root = fs.path().join("root");
    let driver = driver::open("overlay2", &root, &DriverOptions::default()).unwrap();
    let store = LayerStore::open(&root, driver).unwrap();
    let mut top: Option<String> = None;
    for i in 0..127 {
        let layer = store.apply(&tiny_layer(i)[..], top.as_deref()).unwrap();
        top = Some(layer.chain_id);
    }
    let containers = ContainerStore::open(&root, &store).unwrap();
    let mut samples = Vec::new();
    for i in 0..20 {
        let started = Instant::now();
        let container = containers
            .create(&format!("c{i}"), "deep", top.as_deref())
            .unwrap();
        let merged = containers.mount(&container).unwrap();
        samples.push(started.elapsed());
        assert!(merged.join("layers/0").exists() && merged.join("layers/126").exists());
        containers.unmount(&container).unwrap();
        containers.remove(&container).unwrap();
    }
    let p50 = median(samples.clone());
    let max = samples.iter().max().unwrap();
    println!(
        "deep_stack: container create+mount on 127 image layers + init + rw (128 lowers): p50 {:.1} ms, max {:.1} ms over {} runs",
        p50.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        samples.len()
    );
}
