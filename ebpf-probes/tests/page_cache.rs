//! Page-cache sharing, as root: four containers (four overlays over one
//! lower layer, each reader in its own cgroup v2 named after its container)
//! read the same 64 MiB lower file. The tracer must report it cached once
//! (64 MiB) and 192 MiB saved, within 5% of cachestat(2).

mod common;

use std::{
    fs,
    os::{fd::AsFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    process::Command,
};

use common::{Store, bpf_built, container_id, write_file};
use ebpf_probes::{
    OverlayTracer, TracerOptions,
    events::kernel_dev,
    pagecache::{PageCacheReport, cached_bytes_of},
    registry::wait_for_mount,
};
use testkit::{FsKind, ScratchFs};

const SIZE: u64 = 64 << 20;

/// The cgroup v2 hierarchy: `/sys/fs/cgroup` on a unified host,
/// `/sys/fs/cgroup/unified` on a hybrid one.
fn cgroup2_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| {
            p.join("cgroup.procs").exists()
                && nix::sys::statfs::statfs(p)
                    .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        })
}

/// Removes the test's cgroups on drop (after their processes exited).
struct Cgroups(Vec<PathBuf>);

impl Drop for Cgroups {
    fn drop(&mut self) {
        for dir in self.0.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }
}

#[test]
fn four_containers_share_one_cached_copy() {
    testkit::require_root!();
    if !bpf_built() {
        return;
    }
    let Some(cg_root) = cgroup2_root() else {
        testkit::feature_available(false, "cgroup v2", "no cgroup2 mount");
        return;
    };
    let scratch = ScratchFs::new(FsKind::Ext4, 512 << 20).expect("ext4 scratch");
    let store = Store::new(&scratch);
    let big = store.lower.join("big");
    write_file(&big, SIZE);
    drop_cache(&big);
    assert!(
        cached_bytes_of(&big).expect("cachestat") < SIZE / 100,
        "not dropped"
    );

    let ids: Vec<String> = ['1', '2', '3', '4'].into_iter().map(container_id).collect();
    let containers: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| store.container(id, &format!("cache{n}"), true))
        .collect();
    let parent = cg_root.join(format!("layerscope-test-{}", std::process::id()));
    fs::create_dir(&parent).expect("mkdir cgroup");
    let mut cgroups = Cgroups(vec![parent.clone()]);
    for id in &ids {
        let dir = parent.join(format!("docker-{id}.scope"));
        fs::create_dir(&dir).expect("mkdir cgroup");
        cgroups.0.push(dir);
    }

    let tracer = OverlayTracer::start(TracerOptions {
        roots: vec![store.root.clone()],
        ..TracerOptions::default()
    })
    .expect("start tracer");
    for c in &containers {
        assert!(wait_for_mount(tracer.registry(), &c.merged).is_some());
    }
    for (c, cg) in containers.iter().zip(&cgroups.0[1..]) {
        read_in_cgroup(cg, &c.merged.join("big"));
    }

    let report = PageCacheReport::collect(&tracer);
    let meta = fs::metadata(&big).expect("stat");
    let file = report
        .file(kernel_dev(meta.dev()), meta.ino())
        .unwrap_or_else(|| panic!("lower file not in report: {report:?}"));
    let truth = cached_bytes_of(&big).expect("cachestat");
    println!(
        "cached {} (cachestat {truth}), saved {}, readers {:?}",
        file.cached_bytes, file.saved_bytes, file.readers
    );
    let mut expected_readers = ids.clone();
    expected_readers.sort();
    assert_eq!(file.readers, expected_readers);
    within_5pct(file.cached_bytes, truth, "cached vs cachestat");
    within_5pct(file.cached_bytes, SIZE, "cached vs file size");
    within_5pct(file.saved_bytes, 3 * truth, "saved vs 3 x cachestat");
    println!("looked up per container: {:?}", file.read_bytes);
    for id in &ids {
        // Page lookups: a readahead miss is looked up again once filled.
        let read = file.read_bytes.get(id).copied().unwrap_or(0);
        assert!(read >= SIZE, "container {} looked up {read}", &id[..8]);
    }
    // Only the first reader brought pages in.
    let adders = ids
        .iter()
        .filter(|id| report.added_bytes.get(*id).copied().unwrap_or(0) > SIZE / 2)
        .count();
    assert_eq!(adders, 1, "{:?}", report.added_bytes);
    drop(tracer);
    drop(containers);
}

fn within_5pct(value: u64, reference: u64, what: &str) {
    let diff = value.abs_diff(reference) as f64;
    assert!(
        diff <= reference as f64 * 0.05,
        "{what}: {value} vs {reference}"
    );
}

fn drop_cache(path: &Path) {
    let file = fs::File::open(path).expect("open");
    nix::fcntl::posix_fadvise(
        file.as_fd(),
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )
    .expect("fadvise");
}

fn read_in_cgroup(cgroup: &Path, file: &Path) {
    let script = format!(
        "echo $$ > '{}/cgroup.procs' && exec dd if='{}' of=/dev/null bs=1M status=none",
        cgroup.display(),
        file.display()
    );
    let status = Command::new("sh")
        .args(["-c", &script])
        .status()
        .expect("run reader");
    assert!(status.success(), "reader in {} failed", cgroup.display());
}
