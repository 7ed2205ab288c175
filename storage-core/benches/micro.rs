//! Criterion micro-benchmarks of the hot library paths, run with
//! `cargo bench -p storage-core --bench micro` (as root: overlay whiteouts
//! are character devices): chain-ids of a deep stack, tar apply, whiteout
//! conversion both ways (tar `.wh.` entries to overlay char devices and
//! the opaque xattr, and back on export), and the diff walks behind
//! `docker diff` (overlay upper walk, naive tree comparison). Inputs are
//! built once in memory; files go to a tmpfs (`/dev/shm`), so the figures
//! are the library's own cost: on a disk filesystem, creating and removing
//! thousands of files per second soon measures ext4's inode allocator
//! (`recently_deleted` scans), not the code under test.

use std::fs;
use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use storage_core::archive::{
    ApplyOptions, WhiteoutFormat, apply_layer, changes_naive, changes_overlay, export_dir,
};
use storage_core::layer::chain_ids;

const FILES: usize = 1000;
const FILE_BYTES: usize = 1024;
const WHITEOUTS: usize = 500;

fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("layerscope-micro-")
        .tempdir_in("/dev/shm")
        .expect("temp dir in /dev/shm")
}

fn header(path: &str, kind: tar::EntryType, size: usize, mode: u32) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_path(path).expect("tar path");
    header.set_entry_type(kind);
    header.set_size(size as u64);
    header.set_mode(mode);
    header.set_mtime(1_700_000_000);
    header.set_cksum();
    header
}

/// A layer tar: `dirs` directories of files, then `whiteouts` `.wh.`
/// entries and one opaque marker per directory.
fn layer_tar(files: usize, whiteouts: usize) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let dirs = 10;
    let body = vec![b'x'; FILE_BYTES];
    for d in 0..dirs {
        let h = header(&format!("d{d}/"), tar::EntryType::Directory, 0, 0o755);
        builder.append(&h, &[][..]).expect("dir");
    }
    for i in 0..files {
        let h = header(
            &format!("d{}/f{i:05}", i % dirs),
            tar::EntryType::Regular,
            body.len(),
            0o644,
        );
        builder.append(&h, &body[..]).expect("file");
    }
    for i in 0..whiteouts {
        let h = header(
            &format!("d{}/.wh.gone{i:05}", i % dirs),
            tar::EntryType::Regular,
            0,
            0o644,
        );
        builder.append(&h, &[][..]).expect("whiteout");
    }
    if whiteouts > 0 {
        for d in 0..dirs {
            let h = header(
                &format!("d{d}/.wh..wh..opq"),
                tar::EntryType::Regular,
                0,
                0o644,
            );
            builder.append(&h, &[][..]).expect("opaque");
        }
    }
    builder.into_inner().expect("tar")
}

fn apply(tar: &[u8], dest: &Path, format: WhiteoutFormat) {
    apply_layer(tar, dest, &ApplyOptions::new(format), None).expect("apply");
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

fn bench_chain_ids(c: &mut Criterion) {
    let diff_ids: Vec<String> = (0..128u32)
        .map(|i| format!("sha256:{:064x}", u128::from(i) * 0x9e37_79b9_7f4a_7c15))
        .collect();
    c.bench_function("chain_ids/128 layers", |b| {
        b.iter(|| chain_ids(black_box(&diff_ids)))
    });
}

fn bench_apply(c: &mut Criterion) {
    let tar = layer_tar(FILES, 0);
    let root = scratch();
    let mut group = c.benchmark_group("tar_apply");
    group.throughput(Throughput::Bytes(tar.len() as u64));
    group.sample_size(20);
    group.bench_function(format!("{FILES} x {FILE_BYTES} B"), |b| {
        b.iter_batched(
            || tempfile::tempdir_in(root.path()).expect("dest"),
            // Returned, so criterion drops (removes) it outside the timing.
            |dest| {
                apply(&tar, dest.path(), WhiteoutFormat::Naive);
                dest
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn bench_whiteouts(c: &mut Criterion) {
    let tar = layer_tar(0, WHITEOUTS);
    let root = scratch();
    let mut group = c.benchmark_group("whiteout_conversion");
    group.sample_size(20);
    let mut formats = vec![("aufs (kept as .wh. files)", WhiteoutFormat::Aufs)];
    if is_root() {
        formats.push(("overlay (char 0/0 + opaque xattr)", WhiteoutFormat::Overlay));
    } else {
        println!("skipped: overlay whiteouts need root (mknod, trusted xattrs)");
    }
    for (name, format) in formats {
        group.bench_function(format!("apply {WHITEOUTS} whiteouts, {name}"), |b| {
            b.iter_batched(
                || tempfile::tempdir_in(root.path()).expect("dest"),
                |dest| {
                    apply(&tar, dest.path(), format);
                    dest
                },
                BatchSize::PerIteration,
            )
        });
        let applied = tempfile::tempdir_in(root.path()).expect("dest");
        apply(&tar, applied.path(), format);
        group.bench_function(format!("export {WHITEOUTS} whiteouts, {name}"), |b| {
            b.iter(|| export_dir(applied.path(), format, std::io::sink()).expect("export"))
        });
    }
    group.finish();
}

/// A lower tree and an upper with every tenth file changed and, as
/// root, whiteouts for another tenth (overlay format).
fn diff_trees(root: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let lower = root.join("lower");
    let upper = root.join("upper");
    let full = root.join("full");
    fs::create_dir_all(&lower).expect("lower");
    fs::create_dir_all(&upper).expect("upper");
    fs::create_dir_all(&full).expect("full");
    apply(&layer_tar(FILES * 5, 0), &lower, WhiteoutFormat::Naive);
    apply(&layer_tar(FILES * 5, 0), &full, WhiteoutFormat::Naive);
    for i in (0..FILES * 5).step_by(10) {
        let rel = format!("d{}/f{i:05}", i % 10);
        fs::create_dir_all(upper.join(format!("d{}", i % 10))).expect("upper dir");
        fs::write(upper.join(&rel), b"changed").expect("upper file");
        fs::write(full.join(&rel), b"changed").expect("full file");
    }
    (lower, upper, full)
}

fn bench_diff_walks(c: &mut Criterion) {
    let root = scratch();
    let (lower, upper, full) = diff_trees(root.path());
    let mut group = c.benchmark_group("diff_walk");
    group.sample_size(20);
    group.bench_function(
        format!("overlay upper over {} lower files", FILES * 5),
        |b| b.iter(|| changes_overlay(&upper, std::slice::from_ref(&lower)).expect("changes")),
    );
    group.bench_function(format!("naive, {} files each side", FILES * 5), |b| {
        b.iter(|| changes_naive(&full, Some(&lower)).expect("changes"))
    });
    group.finish();
}

criterion_group!(
    micro,
    bench_chain_ids,
    bench_apply,
    bench_whiteouts,
    bench_diff_walks
);
criterion_main!(micro);
