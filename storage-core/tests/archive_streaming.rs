//! apply_layer streams: a 200 MiB sparse file and a 200 MiB regular file
//! apply in a child process whose peak RSS (VmHWM) stays far below the
//! layer size, and the sparse file keeps its holes. Runs as root.

mod archive_support;

use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use archive_support::*;
use storage_core::archive::{ApplyOptions, WhiteoutFormat, apply_layer};
use tar::EntryType;

const CHILD_MODE: &str = "LAYERSCOPE_ARCHIVE_STREAM_CHILD";
const CHILD_DEST: &str = "LAYERSCOPE_ARCHIVE_STREAM_DEST";
const MIB: u64 = 1024 * 1024;
const BIG: u64 = 200 * MIB;

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The regions of the sparse test file: 64 KiB of data at three places.
fn sparse_regions() -> Vec<(u64, Vec<u8>)> {
    [0, 100 * MIB, BIG - 64 * 1024]
        .into_iter()
        .enumerate()
        .map(|(i, off)| (off, vec![b'A' + i as u8; 64 * 1024]))
        .collect()
}

/// A tar holding one regular file of `size` bytes, generated on the fly.
struct GeneratedTar {
    header: Vec<u8>,
    size: u64,
    pos: u64,
}

impl GeneratedTar {
    fn new(size: u64) -> Self {
        let h = header(&Spec::new("big.bin", EntryType::Regular), size);
        GeneratedTar {
            header: h.as_bytes().to_vec(),
            size,
            pos: 0,
        }
    }
}

impl Read for GeneratedTar {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let padded = self.size.div_ceil(512) * 512;
        let total = 512 + padded + 1024;
        let mut n = 0;
        while n < buf.len() && self.pos < total {
            let p = self.pos;
            buf[n] = if p < 512 {
                self.header[p as usize]
            } else if p - 512 < self.size {
                ((p - 512) % 251) as u8 + 1
            } else {
                0
            };
            n += 1;
            self.pos += 1;
        }
        Ok(n)
    }
}

/// Runs only inside the child process the tests below spawn.
#[test]
fn child_apply() {
    let Ok(mode) = std::env::var(CHILD_MODE) else {
        return;
    };
    let dest = std::env::var(CHILD_DEST).unwrap();
    let before = vm_hwm_kib();
    let options = ApplyOptions::new(WhiteoutFormat::Overlay);
    let mut split = Vec::new();
    match mode.as_str() {
        "sparse" => {
            let mut t = RawTar::new();
            t.gnu_sparse("sparse.img", BIG, &sparse_regions());
            let tar = t.finish();
            apply_layer(&tar[..], Path::new(&dest), &options, Some(&mut split)).unwrap();
        }
        "regular" => {
            apply_layer(
                GeneratedTar::new(BIG),
                Path::new(&dest),
                &options,
                Some(&mut split),
            )
            .unwrap();
        }
        other => panic!("unknown mode {other}"),
    }
    println!(
        "VMHWM before={before} after={} split={}",
        vm_hwm_kib(),
        split.len()
    );
}

/// Applies in a child process; returns (VmHWM before, after) in KiB.
fn apply_in_child(mode: &str, dest: &Path) -> (u64, u64) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_apply", "--nocapture", "--test-threads=1"])
        .env(CHILD_MODE, mode)
        .env(CHILD_DEST, dest)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.find("VMHWM").map(|i| &l[i..]))
        .unwrap_or_else(|| panic!("no VMHWM line in {stdout}"));
    let field = |k: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .unwrap()
            .parse()
            .unwrap()
    };
    (field("before="), field("after="))
}

#[test]
fn a_200_mib_sparse_file_applies_in_bounded_memory_and_keeps_its_holes() {
    testkit::require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let (before, after) = apply_in_child("sparse", tmp.path());
    assert!(
        after < before + 50 * 1024,
        "peak RSS grew from {before} KiB to {after} KiB"
    );
    let path = tmp.path().join("sparse.img");
    let meta = lstat(&path);
    assert_eq!(meta.len(), BIG);
    assert!(
        meta.blocks() * 512 < 4 * MIB,
        "holes stay holes: {} bytes allocated",
        meta.blocks() * 512
    );
    let f = std::fs::File::open(&path).unwrap();
    for (off, data) in sparse_regions() {
        let mut got = vec![0u8; data.len()];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut got, off).unwrap();
        assert_eq!(got, data);
    }
    let mut probe = [1u8; 4096];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut probe, 50 * MIB).unwrap();
    assert!(probe.iter().all(|b| *b == 0));
}

#[test]
fn a_200_mib_regular_file_applies_in_bounded_memory() {
    testkit::require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let (before, after) = apply_in_child("regular", tmp.path());
    assert!(
        after < before + 50 * 1024,
        "peak RSS grew from {before} KiB to {after} KiB"
    );
    let meta = lstat(&tmp.path().join("big.bin"));
    assert_eq!(meta.len(), BIG);
    assert!(
        meta.blocks() * 512 >= BIG,
        "a regular file is written in full"
    );
}
