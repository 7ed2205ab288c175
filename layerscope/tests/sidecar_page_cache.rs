//! The sidecar's page-cache sharing: two containers of one image, each
//! reader in its own cgroup v2 named after its container, read the same
//! lower file; `layerscope_page_cache_shared_bytes{layer}` reports the
//! bytes cached once, under the image layer's chain-id.

#[path = "sidecar_support.rs"]
mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::{Sidecar, Store, samples};
use testkit::{FsKind, ScratchFs};

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

/// Removes the test's cgroups on drop (their readers have exited).
struct Cgroups(Vec<PathBuf>);

impl Drop for Cgroups {
    fn drop(&mut self) {
        for dir in self.0.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }
}

fn read_in_cgroup(cgroup: &Path, file: &Path) {
    let script = format!(
        "echo $$ > '{}/cgroup.procs' && exec dd if='{}' of=/dev/null bs=1M status=none",
        cgroup.display(),
        file.display()
    );
    let status = Command::new("sh").args(["-c", &script]).status().unwrap();
    assert!(status.success(), "reader in {} failed", cgroup.display());
}

#[test]
fn a_lower_file_read_by_two_containers_is_reported_cached_once() {
    testkit::require_root!();
    let Some(cgroup_root) = cgroup2_root() else {
        testkit::feature_available(false, "cgroup v2", "no cgroup2 hierarchy mounted");
        return;
    };
    let scratch = ScratchFs::new(FsKind::Ext4, FsKind::Ext4.small_size()).expect("scratch ext4");
    let store = Store::new(&scratch.path().join("store"));
    let alpha = store.create("alpha");
    let beta = store.create("beta");
    let merged: Vec<PathBuf> = [&alpha, &beta]
        .iter()
        .map(|c| store.containers().mount(c).expect("mount"))
        .collect();

    let root = store.root.to_str().unwrap().to_string();
    let sidecar = Sidecar::start(&["--root", &root], &["--rescan-seconds", "0.5"]);
    sidecar.scrape();

    let parent = cgroup_root.join(format!("layerscope-test-{}", std::process::id()));
    fs::create_dir(&parent).expect("mkdir cgroup");
    let mut cgroups = Cgroups(vec![parent.clone()]);
    for container in [&alpha, &beta] {
        let dir = parent.join(&container.id);
        fs::create_dir(&dir).expect("mkdir cgroup");
        cgroups.0.push(dir);
    }
    // Cold, so the first reader's pages are added while the probes watch.
    nix::unistd::sync();
    fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
    for (root, cgroup) in merged.iter().zip(&cgroups.0[1..]) {
        read_in_cgroup(cgroup, &root.join("bin/tool"));
    }

    let layer = store.top.trim_start_matches("sha256:")[..12].to_string();
    let shared = |scrape: &str| -> f64 {
        samples(scrape)
            .into_iter()
            .find(|(name, labels, _)| {
                name == "layerscope_page_cache_shared_bytes"
                    && labels.contains(&("layer".into(), layer.clone()))
            })
            .map(|(_, _, v)| v)
            .unwrap_or(0.0)
    };
    let scrape = sidecar.scrape_until(Duration::from_secs(20), |s| shared(s) > 0.0);
    // bin/tool is 10,000 bytes: three 4 KiB pages, cached once for both.
    assert_eq!(shared(&scrape), 3.0 * 4096.0, "{scrape}");

    drop(sidecar);
    drop(cgroups);
    for container in [&alpha, &beta] {
        store.containers().unmount(container).expect("unmount");
        store.remove(container);
    }
}
