//! The migration on a data root a real dockerd wrote: Debian's dockerd
//! 20.10 cannot run aufs on this kernel, so the aufs-era root is made from
//! a real overlay2 root by `migrate overlay2-to-aufs`, then migrated
//! forward again. Every layer's files (with xattrs, whiteouts, opaque dirs,
//! times), the parent chains, `committed` marks, the layerdb and imagedb
//! and the container configs must come back exactly as dockerd wrote them,
//! and the layer store must export each image layer with its diff-id.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use storage_core::driver::DriverOptions;
use storage_core::driver::overlay2::Overlay2;
use storage_core::layer::LayerStore;
use storage_core::migrate::{self, MigrateOptions};
use storage_core::sys::xattr;
use testkit::docker::{DockerDaemon, busybox_files};

/// Type, mode, owner, content, target, device, all xattrs and mtimes (of
/// directories too) of every entry under `dir`.
fn listing(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(dir).unwrap().to_path_buf();
        let meta = fs::symlink_metadata(entry.path()).unwrap();
        let mut text = format!(
            "mode={:o} uid={} gid={} mtime={}.{} nlink={}",
            meta.mode(),
            meta.uid(),
            meta.gid(),
            meta.mtime(),
            meta.mtime_nsec(),
            // Kernel whiteouts share one inode; converted ones do not.
            if meta.is_dir() || meta.file_type().is_char_device() {
                0
            } else {
                meta.nlink()
            }
        );
        if meta.is_file() {
            let data = fs::read(entry.path()).unwrap();
            text.push_str(&format!(" sha={}", hex::encode(Sha256::digest(&data))));
        } else if meta.file_type().is_symlink() {
            text.push_str(&format!(
                " -> {}",
                fs::read_link(entry.path()).unwrap().display()
            ));
        } else if meta.file_type().is_char_device() {
            text.push_str(&format!(" rdev={}", meta.rdev()));
        }
        let mut names = xattr::llist(entry.path()).unwrap();
        names.sort();
        for name in names {
            let value = xattr::lget(entry.path(), &name)
                .unwrap()
                .unwrap_or_default();
            text.push_str(&format!(
                " {}={}",
                name.to_string_lossy(),
                hex::encode(value)
            ));
        }
        out.insert(rel, text);
    }
    out
}

fn file_bytes(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            (
                e.path().strip_prefix(dir).unwrap().to_path_buf(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// What dockerd's overlay2 store says about each layer: its files, its
/// parents (resolved from `lower`), whether it is `committed`.
#[derive(Debug, PartialEq, Eq)]
struct LayerView {
    files: BTreeMap<PathBuf, String>,
    parents: Vec<String>,
    committed: bool,
}

fn overlay2_view(root: &Path) -> BTreeMap<String, LayerView> {
    let home = root.join("overlay2");
    let mut by_link = BTreeMap::new();
    for entry in fs::read_dir(home.join("l")).unwrap() {
        let entry = entry.unwrap();
        let target = fs::read_link(entry.path()).unwrap();
        let id = target.parent().unwrap().file_name().unwrap();
        by_link.insert(
            format!("l/{}", entry.file_name().to_string_lossy()),
            id.to_string_lossy().into_owned(),
        );
    }
    let mut view = BTreeMap::new();
    for entry in fs::read_dir(&home).unwrap() {
        let entry = entry.unwrap();
        let id = entry.file_name().to_string_lossy().into_owned();
        if id == "l" {
            continue;
        }
        let parents = fs::read_to_string(entry.path().join("lower"))
            .map(|l| l.trim().split(':').map(|l| by_link[l].clone()).collect())
            .unwrap_or_default();
        view.insert(
            id,
            LayerView {
                files: listing(&entry.path().join("diff")),
                parents,
                committed: entry.path().join("committed").exists(),
            },
        );
    }
    view
}

fn configs(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    file_bytes(&root.join("containers"))
        .into_iter()
        .filter(|(p, _)| p.ends_with("config.v2.json"))
        .collect()
}

#[test]
fn round_trips_a_root_written_by_a_real_dockerd() {
    testkit::require_root!();
    let busybox = fs::read("/bin/busybox")
        .expect("read /bin/busybox (Debian's busybox-static is part of the environment)");
    let mut daemon = match DockerDaemon::start("overlay2") {
        Ok(daemon) => daemon,
        Err(e) if e.is_unavailable() => {
            println!("skipped: dockerd unavailable: {e}");
            return;
        }
        Err(e) => panic!("start dockerd: {e}"),
    };
    let mut files = busybox_files(&busybox);
    files.extend_from_slice(&[
        ("etc/gone", b"gone\n", 0o644),
        ("etc/keep", b"keep\n", 0o600),
        ("d/old", b"old\n", 0o644),
        ("dir/x", b"x\n", 0o644),
    ]);
    let base = daemon.import_image("migrate-base:1", &files).unwrap();
    let sh = |script: &'static str| ["/bin/busybox", "sh", "-c", script];
    let top = daemon
        .run_and_commit(
            &base,
            "migrate-top:1",
            &sh(
                "rm /etc/gone && rm -rf /d && mkdir /d && echo new > /d/new && rm -rf /dir \
                 && echo l > /h1 && ln /h1 /h2",
            ),
        )
        .unwrap();
    daemon
        .run(&[
            "run",
            "--name",
            "migrate-writer",
            "--network",
            "none",
            &top,
            "/bin/busybox",
            "sh",
            "-c",
            "echo rw > /etc/keep && rm /d/new && mkdir -p /w && echo w > /w/f",
        ])
        .unwrap();
    daemon
        .run(&[
            "create",
            "--name",
            "migrate-fresh",
            "--network",
            "none",
            &base,
            "/bin/busybox",
            "true",
        ])
        .unwrap();
    daemon.stop().unwrap();

    let root = daemon.data_root();
    let options = MigrateOptions {
        pid_file: daemon.dir().join("docker.pid"),
        ..MigrateOptions::default()
    };
    let layers_before = overlay2_view(&root);
    let image_before = file_bytes(&root.join("image/overlay2"));
    let configs_before = configs(&root);
    assert!(layers_before.len() >= 6, "{} layers", layers_before.len());
    assert!(
        layers_before.values().any(|l| l
            .files
            .values()
            .any(|f| f.contains("rdev=0") && f.starts_with("mode=20"))),
        "dockerd wrote whiteouts"
    );

    // Back to the aufs layout Docker 20.10's aufs driver used.
    let back = migrate::reverse::overlay2_to_aufs(&root, &options).unwrap();
    assert_eq!(back.converted, layers_before.len());
    assert!(back.markers.whiteouts >= 3, "{:?}", back.markers);
    assert!(back.markers.opaque_dirs >= 1, "{:?}", back.markers);
    assert!(!root.join("overlay2").exists() && root.join("image/aufs").is_dir());
    for (id, layer) in &layers_before {
        let list = fs::read_to_string(root.join("aufs/layers").join(id)).unwrap();
        let parents: Vec<&str> = list.lines().collect();
        assert_eq!(parents, layer.parents, "aufs/layers/{id}");
        for entry in walkdir::WalkDir::new(root.join("aufs/diff").join(id)) {
            let meta = entry.unwrap().metadata().unwrap();
            assert!(
                !meta.file_type().is_char_device(),
                "no overlay whiteouts in aufs"
            );
        }
    }
    for bytes in configs(&root).values() {
        assert!(String::from_utf8_lossy(bytes).contains(r#""Driver":"aufs""#));
    }
    // The read-only Docker root reader sees an aufs root.
    let read = storage_core::docker_root::read(&root).unwrap();
    assert_eq!(read.driver, "aufs");

    // And forward again: exactly what dockerd wrote.
    let forward = migrate::aufs_to_overlay2(&root, &options).unwrap();
    assert_eq!(forward.converted, layers_before.len());
    assert_eq!(forward.containers_updated, configs_before.len());
    assert!(!root.join("aufs").exists());
    let layers_after = overlay2_view(&root);
    assert_eq!(
        layers_after.keys().collect::<Vec<_>>(),
        layers_before.keys().collect::<Vec<_>>()
    );
    for (id, before) in &layers_before {
        let after = &layers_after[id];
        assert_eq!(after.parents, before.parents, "{id}: parents");
        assert_eq!(after.committed, before.committed, "{id}: committed");
        for (path, want) in &before.files {
            assert_eq!(
                after.files.get(path),
                Some(want),
                "{id}: {}",
                path.display()
            );
        }
        assert_eq!(after.files.len(), before.files.len(), "{id}: entries");
    }
    assert!(
        file_bytes(&root.join("image/overlay2")) == image_before,
        "layerdb, imagedb unchanged"
    );
    assert!(
        configs(&root) == configs_before,
        "config.v2.json as dockerd wrote it"
    );

    let driver = Overlay2::open(&root.join("overlay2"), &DriverOptions::default()).unwrap();
    let store = LayerStore::open(&root, Box::new(driver)).unwrap();
    for layer in store.list().unwrap() {
        let mut tar = Vec::new();
        store.export(&layer.chain_id, &mut tar).unwrap();
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));
        assert_eq!(
            digest, layer.diff_id,
            "layer {} exports its diff-id",
            layer.chain_id
        );
    }
    drop(store);
    daemon.cleanup().unwrap();
}
