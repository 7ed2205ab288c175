//! Volumes on the real kernel (as root): named, anonymous, bind, tmpfs and
//! loop-backed xfs volumes mounted into overlay2 containers, read-only
//! enforced by the kernel, copy on first mount with owners, modes and
//! xattrs, nocopy, volumes-from, rm -v, prune, reference counts that
//! survive reopening the stores, and bad input that creates nothing.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use storage_core::container::{ContainerStore, CreateOptions};
use storage_core::driver::{self, DriverOptions};
use storage_core::layer::LayerStore;
use storage_core::sys::mount::is_mount_point;
use storage_core::sys::xattr;
use storage_core::volume::{VolumeError, VolumeFilter, VolumeStore};
use testkit::{FsKind, ScratchFs, mountinfo};

/// A data root on its own ext4; on drop every mount below it is undone
/// (deepest first) before the scratch filesystem goes.
struct Fixture {
    fs: ScratchFs,
    host: PathBuf,
}

impl Fixture {
    fn new(test: &str) -> Option<Self> {
        if !testkit::require_root(test) {
            return None;
        }
        let fs = ScratchFs::new(FsKind::Ext4, 1 << 30).unwrap();
        let host = fs.path().join("host");
        fs::create_dir_all(&host).unwrap();
        Some(Self { fs, host })
    }

    fn root(&self) -> &Path {
        self.fs.path()
    }

    fn layers(&self) -> LayerStore {
        let driver = driver::open("overlay2", self.root(), &DriverOptions::default()).unwrap();
        LayerStore::open(self.root(), driver).unwrap()
    }

    fn volumes(&self) -> VolumeStore {
        VolumeStore::open(self.root()).unwrap()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let mut mounts = mountinfo::mounts_under(self.fs.path()).unwrap_or_default();
        mounts.retain(|m| m.mount_point != self.fs.path());
        mounts.sort_by_key(|m| std::cmp::Reverse(m.mount_point.components().count()));
        for m in mounts {
            let _ = testkit::unmount::unmount_robust(&m.mount_point);
        }
    }
}

/// The image: /data with owners, modes and an xattr, symlinks that point
/// inside (/abs -> /srv) and outside (/escape -> ../../../..) the root.
fn image_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let entry =
        |path: &str, kind: tar::EntryType, mode: u32, uid: u64, data: &[u8], link: Option<&str>| {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_uid(uid);
            h.set_gid(uid);
            h.set_mtime(1_700_000_000);
            h.set_size(data.len() as u64);
            if let Some(link) = link {
                h.set_link_name(link).unwrap();
            }
            (h, path.to_string(), data.to_vec())
        };
    let entries = vec![
        entry("data/", tar::EntryType::Directory, 0o750, 1000, b"", None),
        entry(
            "data/file",
            tar::EntryType::Regular,
            0o640,
            1001,
            b"image content",
            None,
        ),
        entry(
            "data/setuid",
            tar::EntryType::Regular,
            0o4755,
            0,
            b"#!/bin/sh\n",
            None,
        ),
        entry("data/sub/", tar::EntryType::Directory, 0o1777, 0, b"", None),
        entry(
            "data/link",
            tar::EntryType::Symlink,
            0o777,
            0,
            b"",
            Some("file"),
        ),
        entry("srv/", tar::EntryType::Directory, 0o755, 0, b"", None),
        entry("abs", tar::EntryType::Symlink, 0o777, 0, b"", Some("/srv")),
        entry("etc/", tar::EntryType::Directory, 0o755, 0, b"", None),
        entry("etc/conf", tar::EntryType::Regular, 0o644, 0, b"conf", None),
    ];
    for (mut h, path, data) in entries {
        if path == "data/file" {
            b.append_pax_extensions([("SCHILY.xattr.user.volume-test", &b"kept"[..])])
                .unwrap();
        }
        b.append_data(&mut h, &path, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

fn image(layers: &LayerStore) -> String {
    let layer = layers.apply(&image_tar()[..], None).unwrap();
    // Docker images may carry symlinks pointing above their root (only
    // extraction through them is refused); our archive refuses to write
    // one, so it goes straight into the layer's diff dir.
    let diff = layers
        .driver()
        .metadata(&layer.cache_id)
        .unwrap()
        .get("UpperDir")
        .cloned()
        .unwrap();
    std::os::unix::fs::symlink("../../../..", Path::new(&diff).join("escape")).unwrap();
    layer.chain_id
}

fn opts(volumes: &[&str], mounts: &[&str], from: &[&str]) -> CreateOptions {
    CreateOptions {
        volumes: volumes.iter().map(|s| s.to_string()).collect(),
        mounts: mounts.iter().map(|s| s.to_string()).collect(),
        volumes_from: from.iter().map(|s| s.to_string()).collect(),
        image_volumes: Vec::new(),
    }
}

fn kv(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn erofs(path: &Path) -> bool {
    fs::write(path, b"x").err().and_then(|e| e.raw_os_error()) == Some(libc::EROFS)
}

#[test]
fn copy_on_first_mount_keeps_owner_mode_and_xattrs() {
    let Some(fx) = Fixture::new("copy_on_first_mount") else {
        return;
    };
    let layers = fx.layers();
    let top = image(&layers);
    let containers = ContainerStore::open(fx.root(), &layers).unwrap();
    let c = containers
        .create_with("c1", &top, Some(&top), &opts(&["vol:/data"], &[], &[]))
        .unwrap();
    let data = fx.root().join("volumes/vol/_data");
    assert!(data.is_dir() && fs::read_dir(&data).unwrap().next().is_none());

    let root = containers.mount(&c).unwrap();
    assert!(is_mount_point(&root.join("data")));
    for base in [root.join("data"), data.clone()] {
        let dir = fs::metadata(&base).unwrap();
        assert_eq!(
            (dir.uid(), dir.gid(), dir.mode() & 0o7777),
            (1000, 1000, 0o750)
        );
        let file = fs::symlink_metadata(base.join("file")).unwrap();
        assert_eq!((file.uid(), file.mode() & 0o7777), (1001, 0o640));
        assert_eq!(file.mtime(), 1_700_000_000);
        assert_eq!(fs::read(base.join("file")).unwrap(), b"image content");
        assert_eq!(
            xattr::lget(&base.join("file"), "user.volume-test")
                .unwrap()
                .as_deref(),
            Some(&b"kept"[..])
        );
        assert_eq!(
            fs::metadata(base.join("setuid")).unwrap().mode() & 0o7777,
            0o4755
        );
        assert_eq!(
            fs::metadata(base.join("sub")).unwrap().mode() & 0o7777,
            0o1777
        );
        assert_eq!(fs::read_link(base.join("link")).unwrap(), Path::new("file"));
    }
    // Writes go to the volume, not the container's rw layer.
    fs::write(root.join("data/new"), b"from container").unwrap();
    assert_eq!(fs::read(data.join("new")).unwrap(), b"from container");
    containers.unmount(&c).unwrap();
    assert!(!is_mount_point(&root.join("data")));
    assert!(data.join("new").exists());

    // inspect's Mounts, shaped like Docker's.
    let mounts = serde_json::to_value(c.mounts()).unwrap();
    assert_eq!(
        mounts,
        serde_json::json!([{
            "Type": "volume", "Name": "vol", "Source": data.display().to_string(),
            "Destination": "/data", "Driver": "local", "Mode": "z", "RW": true,
            "Propagation": ""
        }])
    );
    let config: serde_json::Value = serde_json::from_slice(
        &fs::read(
            fx.root()
                .join("containers")
                .join(&c.id)
                .join("config.v2.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(config["MountPoints"]["/data"]["Name"], "vol");
    assert_eq!(config["MountPoints"]["/data"]["Spec"]["Source"], "vol");
    assert_eq!(config["MountPoints"]["/data"]["Spec"]["Target"], "/data");
}

#[test]
fn non_empty_volume_is_never_overwritten_and_nocopy_stays_empty() {
    let Some(fx) = Fixture::new("non_empty_volume") else {
        return;
    };
    let layers = fx.layers();
    let top = image(&layers);
    let containers = ContainerStore::open(fx.root(), &layers).unwrap();
    let volumes = fx.volumes();
    let full = volumes.create(Some("full"), kv(&[]), kv(&[])).unwrap();
    fs::write(full.mountpoint.join("mine"), b"keep me").unwrap();
    let c = containers
        .create_with(
            "ctr",
            &top,
            Some(&top),
            &opts(&["full:/data", "empty:/etc:nocopy"], &[], &[]),
        )
        .unwrap();
    let root = containers.mount(&c).unwrap();
    let names: Vec<_> = fs::read_dir(root.join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["mine"]);
    assert!(
        fs::read_dir(root.join("etc")).unwrap().next().is_none(),
        "nocopy"
    );
    containers.unmount(&c).unwrap();
    assert!(!fx.root().join("volumes/empty/_data/conf").exists());
}

#[test]
fn read_only_mounts_get_erofs_from_the_kernel() {
    let Some(fx) = Fixture::new("read_only_mounts") else {
        return;
    };
    let layers = fx.layers();
    let top = image(&layers);
    let containers = ContainerStore::open(fx.root(), &layers).unwrap();
    let bind_src = fx.host.join("bind");
    fs::create_dir_all(&bind_src).unwrap();
    let bind = format!("{}:/bind:ro", bind_src.display());
    let mount = format!(
        "type=bind,source={},target=/bind2,readonly",
        bind_src.display()
    );
    let c = containers
        .create_with(
            "ctr",
            &top,
            Some(&top),
            &opts(
                &["ro-vol:/data:ro", &bind],
                &[
                    &mount,
                    "type=volume,source=ro2,target=/ro2,readonly",
                    "type=tmpfs,target=/scratch,tmpfs-size=1m",
                ],
                &[],
            ),
        )
        .unwrap();
    let root = containers.mount(&c).unwrap();
    for dest in ["data/x", "bind/x", "bind2/x", "ro2/x"] {
        assert!(erofs(&root.join(dest)), "{dest} must be read-only");
    }
    // The copy into the read-only volume still happened, and the rest of
    // the root and the tmpfs stay writable.
    assert_eq!(fs::read(root.join("data/file")).unwrap(), b"image content");
    fs::write(root.join("scratch/x"), b"ok").unwrap();
    assert_eq!(
        mountinfo::fstype_of(&root.join("scratch")).as_deref(),
        Some("tmpfs")
    );
    fs::write(root.join("etc/writable"), b"ok").unwrap();
    fs::write(bind_src.join("host-side"), b"ok").unwrap();
    assert!(root.join("bind/host-side").exists());
    let mounts = c.mounts();
    let bind_mount = mounts.iter().find(|m| m.destination == "/bind").unwrap();
    assert_eq!(
        (
            bind_mount.kind.as_str(),
            bind_mount.rw,
            bind_mount.propagation.as_str(),
            bind_mount.mode.as_str()
        ),
        ("bind", false, "rprivate", "ro")
    );
    containers.unmount(&c).unwrap();
    assert!(!is_mount_point(&root.join("bind")) || !is_mount_point(&root));
}

#[test]
fn volumes_from_inherits_and_ro_restricts() {
    let Some(fx) = Fixture::new("volumes_from") else {
        return;
    };
    let layers = fx.layers();
    let top = image(&layers);
    let containers = ContainerStore::open(fx.root(), &layers).unwrap();
    let bind_src = fx.host.join("b");
    fs::create_dir_all(&bind_src).unwrap();
    let src = containers
        .create_with(
            "src",
            &top,
            Some(&top),
            &opts(
                &["shared:/data", &format!("{}:/b:ro", bind_src.display())],
                &[],
                &[],
            ),
        )
        .unwrap();
    let ro = containers
        .create_with("ro", &top, Some(&top), &opts(&[], &[], &["src:ro"]))
        .unwrap();
    let rw = containers
        .create_with("rw", &top, Some(&top), &opts(&[], &[], &["src"]))
        .unwrap();
    assert_eq!(ro.mount_points.len(), 2);
    assert!(ro.mount_points.values().all(|m| !m.rw));
    assert!(rw.mount_points["/data"].rw && !rw.mount_points["/b"].rw);

    let rw_root = containers.mount(&rw).unwrap();
    fs::write(rw_root.join("data/through-rw"), b"x").unwrap();
    assert!(erofs(&rw_root.join("b/x")));
    let ro_root = containers.mount(&ro).unwrap();
    assert!(ro_root.join("data/through-rw").exists());
    assert!(erofs(&ro_root.join("data/x")));
    containers.unmount(&ro).unwrap();
    containers.unmount(&rw).unwrap();

    // The volume is referenced by all three.
    let volumes = fx.volumes();
    let err = volumes.remove("shared").unwrap_err();
    assert!(
        matches!(&err, VolumeError::InUse { refs, .. } if refs.len() == 3),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("remove shared: volume is in use - ["),
        "{err}"
    );
    for c in [&ro, &rw, &src] {
        containers.remove(c).unwrap();
    }
    volumes.remove("shared").unwrap();
    assert!(!fx.root().join("volumes/shared").exists());
}

#[test]
fn rm_v_removes_anonymous_volumes_only() {
    let Some(fx) = Fixture::new("rm_v") else {
        return;
    };
    let layers = fx.layers();
    let top = image(&layers);
    let containers = ContainerStore::open(fx.root(), &layers).unwrap();
    let bind_src = fx.host.join("keep");
    fs::create_dir_all(&bind_src).unwrap();
    fs::write(bind_src.join("precious"), b"x").unwrap();
    let spec = |name: &str| {
        opts(
            &[
                "/anon",
                &format!("named-{name}:/named"),
                &format!("{}:/bind", bind_src.display()),
            ],
            &[],
            &[],
        )
    };
    let keep = containers
        .create_with("keep", &top, Some(&top), &spec("a"))
        .unwrap();
    let gone = containers
        .create_with("gone", &top, Some(&top), &spec("b"))
        .unwrap();
    let anon_of = |c: &storage_core::container::Container| c.mount_points["/anon"].name.clone();
    let (anon_keep, anon_gone) = (anon_of(&keep), anon_of(&gone));
    assert_eq!(anon_gone.len(), 64);
    assert!(anon_gone.bytes().all(|b| b.is_ascii_hexdigit()));

    let root = containers.mount(&gone).unwrap();
    fs::write(root.join("anon/data"), b"x").unwrap();
    containers.remove(&keep).unwrap();
    containers.remove_with_volumes(&gone, true).unwrap();
    assert!(!is_mount_point(&root));
    let volumes = fx.volumes();
    assert!(volumes.get(&anon_keep).is_ok(), "rm without -v keeps it");
    assert!(matches!(
        volumes.get(&anon_gone),
        Err(VolumeError::NotFound { .. })
    ));
    assert!(volumes.get("named-a").is_ok() && volumes.get("named-b").is_ok());
    assert!(bind_src.join("precious").exists());
}

#[test]
fn prune_takes_unused_anonymous_then_all_named() {
    let Some(fx) = Fixture::new("prune") else {
        return;
    };
    let layers = fx.layers();
    let top = image(&layers);
    let containers = ContainerStore::open(fx.root(), &layers).unwrap();
    let volumes = fx.volumes();
    let unused_anon = volumes.create(None, kv(&[]), kv(&[])).unwrap();
    assert!(unused_anon.is_anonymous());
    volumes
        .create(Some("named"), kv(&[("team", "db")]), kv(&[]))
        .unwrap();
    volumes
        .create(
            Some("with-opts"),
            kv(&[]),
            kv(&[("type", "tmpfs"), ("o", "size=1m")]),
        )
        .unwrap();
    let c = containers
        .create_with(
            "ctr",
            &top,
            Some(&top),
            &opts(&["/used", "used-named:/n"], &[], &[]),
        )
        .unwrap();
    let used_anon = c.mount_points["/used"].name.clone();

    let dangling = volumes
        .list(&VolumeFilter::parse(&["dangling=true".into()]).unwrap())
        .unwrap();
    let names: Vec<_> = dangling.iter().map(|v| v.name.as_str()).collect();
    assert!(names.contains(&unused_anon.name.as_str()) && names.contains(&"named"));
    assert!(!names.contains(&used_anon.as_str()) && !names.contains(&"used-named"));
    let labelled = volumes
        .list(&VolumeFilter::parse(&["label=team=db".into()]).unwrap())
        .unwrap();
    assert_eq!(labelled.len(), 1);

    let report = volumes.prune(false, &[]).unwrap();
    assert_eq!(report.volumes_deleted, vec![unused_anon.name.clone()]);
    let report = volumes.prune(true, &[]).unwrap();
    assert_eq!(report.volumes_deleted, vec!["named".to_string()]);
    // In use, or with driver options (Docker never prunes those): kept.
    for kept in [used_anon.as_str(), "used-named", "with-opts"] {
        assert!(volumes.get(kept).is_ok(), "{kept}");
    }
    containers.remove(&c).unwrap();
    assert_eq!(volumes.prune(true, &[]).unwrap().volumes_deleted.len(), 2);
}

fn count_loops_of(image: &Path) -> usize {
    testkit::loops::attached_loops()
        .iter()
        .filter(|l| l.backing_file == image)
        .count()
}

#[test]
fn tmpfs_and_loop_xfs_volumes_mount_on_first_use_and_unmount_on_last_release() {
    let Some(fx) = Fixture::new("volume_driver_options") else {
        return;
    };
    let layers = fx.layers();
    let top = image(&layers);
    let volumes = fx.volumes();
    volumes
        .create(
            Some("ram"),
            kv(&[]),
            kv(&[("type", "tmpfs"), ("o", "size=64m")]),
        )
        .unwrap();
    volumes
        .create(
            Some("disk"),
            kv(&[]),
            kv(&[("type", "xfs"), ("o", "size=100m")]),
        )
        .unwrap();
    let opts_json = fs::read_to_string(fx.root().join("volumes/disk/opts.json")).unwrap();
    assert_eq!(
        opts_json,
        r#"{"MountType":"xfs","MountOpts":"","MountDevice":"","Quota":{"Size":104857600}}"#
    );
    let image_file = fx.root().join("volumes/disk/disk.img");
    let (ram, disk) = (
        fx.root().join("volumes/ram/_data"),
        fx.root().join("volumes/disk/_data"),
    );
    let create = |name: &str| {
        let containers = ContainerStore::open(fx.root(), &layers).unwrap();
        containers
            .create_with(
                name,
                &top,
                Some(&top),
                &opts(&["ram:/ram", "disk:/disk"], &[], &[]),
            )
            .unwrap()
    };
    let (c1, c2) = (create("c1"), create("c2"));
    assert!(
        !is_mount_point(&ram) && !is_mount_point(&disk),
        "not before first use"
    );

    // Each step opens the stores afresh, as separate CLI runs would.
    let step = |f: &dyn Fn(&ContainerStore)| {
        let containers = ContainerStore::open(fx.root(), &layers).unwrap();
        f(&containers);
    };
    step(&|cs| {
        let root = cs.mount(&c1).unwrap();
        assert_eq!(mountinfo::fstype_of(&ram).as_deref(), Some("tmpfs"));
        assert_eq!(mountinfo::fstype_of(&disk).as_deref(), Some("xfs"));
        let stat = nix::sys::statvfs::statvfs(&disk).unwrap();
        let bytes = stat.blocks() * stat.fragment_size();
        assert!(
            bytes <= 100 << 20 && bytes > 50 << 20,
            "xfs of {bytes} bytes"
        );
        fs::write(root.join("disk/f"), b"on xfs").unwrap();
        fs::write(root.join("ram/f"), b"in ram").unwrap();
    });
    assert_eq!(count_loops_of(&image_file), 1);
    step(&|cs| {
        let root = cs.mount(&c2).unwrap();
        assert_eq!(
            fs::read(root.join("ram/f")).unwrap(),
            b"in ram",
            "same tmpfs"
        );
        assert_eq!(fs::read(root.join("disk/f")).unwrap(), b"on xfs");
    });
    assert_eq!(count_loops_of(&image_file), 1, "one loop device for both");
    step(&|cs| cs.unmount(&c1).unwrap());
    assert!(
        is_mount_point(&ram) && is_mount_point(&disk),
        "c2 still uses them"
    );
    let err = volumes.remove("disk").unwrap_err().to_string();
    assert!(err.contains("volume is in use"), "{err}");
    step(&|cs| cs.unmount(&c2).unwrap());
    assert!(
        !is_mount_point(&ram) && !is_mount_point(&disk),
        "last release unmounts"
    );
    for _ in 0..100 {
        if count_loops_of(&image_file) == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(count_loops_of(&image_file), 0, "loop device freed");

    // The data of the xfs volume persists across mounts; tmpfs' does not.
    step(&|cs| {
        let root = cs.mount(&c1).unwrap();
        assert_eq!(fs::read(root.join("disk/f")).unwrap(), b"on xfs");
        assert!(!root.join("ram/f").exists());
        cs.unmount(&c1).unwrap();
        cs.remove(&c1).unwrap();
        cs.remove(&c2).unwrap();
    });
    volumes.remove("disk").unwrap();
    volumes.remove("ram").unwrap();
    assert!(fs::read_dir(fx.root().join("volumes")).unwrap().all(|e| {
        let name = e.unwrap().file_name();
        name == ".lock" || name == "metadata.json"
    }));
}

#[test]
fn bind_device_volume_mounts_the_host_directory() {
    let Some(fx) = Fixture::new("bind_device_volume") else {
        return;
    };
    let layers = fx.layers();
    let top = image(&layers);
    let device = fx.host.join("device");
    fs::create_dir_all(&device).unwrap();
    fs::write(device.join("host-file"), b"h").unwrap();
    let volumes = fx.volumes();
    let device_str = device.display().to_string();
    volumes
        .create(
            Some("hostdir"),
            kv(&[]),
            kv(&[("type", "none"), ("o", "bind"), ("device", &device_str)]),
        )
        .unwrap();
    let containers = ContainerStore::open(fx.root(), &layers).unwrap();
    let c = containers
        .create_with("ctr", &top, Some(&top), &opts(&["hostdir:/data"], &[], &[]))
        .unwrap();
    let root = containers.mount(&c).unwrap();
    assert!(root.join("data/host-file").exists());
    assert!(!root.join("data/file").exists(), "non-empty: no copy");
    containers.unmount(&c).unwrap();
    containers.remove(&c).unwrap();
    volumes.remove("hostdir").unwrap();
    assert!(
        device.join("host-file").exists(),
        "removing the volume keeps the host dir"
    );
}

#[test]
fn symlinks_in_the_image_resolve_inside_the_root() {
    let Some(fx) = Fixture::new("symlink_destination") else {
        return;
    };
    let layers = fx.layers();
    let top = image(&layers);
    let containers = ContainerStore::open(fx.root(), &layers).unwrap();
    let c = containers
        .create_with(
            "ctr",
            &top,
            Some(&top),
            &opts(&["vv:/abs/inside"], &[], &[]),
        )
        .unwrap();
    let root = containers.mount(&c).unwrap();
    assert!(is_mount_point(&root.join("srv/inside")));
    assert!(!Path::new("/srv/inside").exists());
    containers.unmount(&c).unwrap();

    // The container's own layer later turns /abs into an escaping
    // symlink: the next mount refuses, and leaves nothing mounted.
    let rw = layers.rw_layer(&c.id).unwrap();
    let upper = layers.driver().metadata(&rw.mount_id).unwrap()["UpperDir"].clone();
    let abs = Path::new(&upper).join("abs");
    let _ = fs::remove_file(&abs);
    std::os::unix::fs::symlink("../../../../../../../..", &abs).unwrap();
    let err = containers.mount(&c).unwrap_err().to_string();
    assert!(
        err.contains("mount destination /abs/inside") && err.contains("outside the container root"),
        "{err}"
    );
    assert!(!is_mount_point(&root), "the root is unmounted again");
    assert_eq!(fx.volumes().lock().unwrap().active_count("vv"), 0);
}

#[test]
fn image_volumes_become_anonymous_volumes() {
    let Some(fx) = Fixture::new("image_volumes") else {
        return;
    };
    let layers = fx.layers();
    let top = image(&layers);
    let containers = ContainerStore::open(fx.root(), &layers).unwrap();
    let mut options = opts(&["named:/etc"], &[], &[]);
    options.image_volumes = vec!["/data".into(), "/etc".into()];
    let c = containers
        .create_with("ctr", &top, Some(&top), &options)
        .unwrap();
    assert_eq!(c.mount_points.len(), 2);
    let data = &c.mount_points["/data"];
    assert!(data.is_anonymous_volume() && data.copy_data && data.mode.is_empty());
    assert_eq!(c.mount_points["/etc"].name, "named", "-v wins over VOLUME");
    let root = containers.mount(&c).unwrap();
    assert_eq!(fs::read(root.join("data/file")).unwrap(), b"image content");
    containers.unmount(&c).unwrap();
    containers.remove_with_volumes(&c, true).unwrap();
    let names: Vec<_> = fx
        .volumes()
        .list(&VolumeFilter::default())
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(names, vec!["named"]);
}

#[test]
fn parents_mount_before_children_and_unmount_after() {
    let Some(fx) = Fixture::new("nested_mounts") else {
        return;
    };
    let layers = fx.layers();
    let top = image(&layers);
    let containers = ContainerStore::open(fx.root(), &layers).unwrap();
    let c = containers
        .create_with(
            "ctr",
            &top,
            Some(&top),
            &opts(&["child:/data/sub/deep", "parent:/data"], &[], &[]),
        )
        .unwrap();
    let root = containers.mount(&c).unwrap();
    assert!(is_mount_point(&root.join("data")) && is_mount_point(&root.join("data/sub/deep")));
    fs::write(root.join("data/sub/deep/x"), b"x").unwrap();
    assert!(fx.root().join("volumes/child/_data/x").exists());
    // Mounting again (another CLI run) changes nothing.
    let again = ContainerStore::open(fx.root(), &layers).unwrap();
    again.mount(&c).unwrap();
    let stacked = mountinfo::mounts_under(&root.join("data")).unwrap().len();
    assert_eq!(stacked, 2);
    // The first unmount takes the volumes down (children first); the root
    // stays for the second in-process reference.
    containers.unmount(&c).unwrap();
    let left: Vec<_> = mountinfo::mounts_under(&root)
        .unwrap()
        .into_iter()
        .map(|m| m.mount_point)
        .collect();
    assert_eq!(left, vec![root.clone()]);
    containers.unmount(&c).unwrap();
    assert!(mountinfo::mounts_under(&root).unwrap().is_empty());
}

/// Everything a failed create could have left.
fn assert_nothing_created(fx: &Fixture, layers: &LayerStore) {
    let containers = ContainerStore::open(fx.root(), layers).unwrap();
    assert!(containers.list().unwrap().is_empty(), "no container");
    assert!(layers.list_rw().unwrap().is_empty(), "no rw layer");
    let volumes = fx.volumes().list(&VolumeFilter::default()).unwrap();
    assert!(volumes.is_empty(), "no volume: {volumes:?}");
    assert!(
        mountinfo::mounts_under(&fx.root().join("overlay2"))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn bad_input_is_refused_and_creates_nothing() {
    let Some(fx) = Fixture::new("volume_bad_input") else {
        return;
    };
    let layers = fx.layers();
    let top = image(&layers);
    let containers = ContainerStore::open(fx.root(), &layers).unwrap();
    let cases: &[(CreateOptions, &str)] = &[
        (
            opts(&["bad@name:/x"], &[], &[]),
            "includes invalid characters",
        ),
        (opts(&["./relative:/x"], &[], &[]), "use absolute path"),
        (
            opts(&["vv:/escape/x"], &[], &[]),
            "outside the container root",
        ),
        (opts(&["vv:/"], &[], &[]), "destination can't be '/'"),
        (opts(&["/"], &[], &[]), "destination can't be '/'"),
        (
            opts(&[], &["type=volume,source=vv,target=/"], &[]),
            "destination can't be '/'",
        ),
        (opts(&[], &[], &["missing"]), "container missing: not found"),
        (
            opts(&[], &["type=volume,source=vv,target=/x,bogus=1"], &[]),
            "unexpected key 'bogus'",
        ),
        (opts(&["vv:/x:bogus"], &[], &[]), "invalid mode: bogus"),
        (
            opts(&["vv:/x", "ww:/x"], &[], &[]),
            "Duplicate mount point: /x",
        ),
        (
            opts(&["vv:/etc/conf"], &[], &[]),
            "cannot mount volume over existing file",
        ),
        (
            opts(
                &[],
                &["type=volume,source=vv,target=/x,volume-opt=bogus=1"],
                &[],
            ),
            "invalid option: \"bogus\"",
        ),
    ];
    // A later failure takes back the volumes an earlier spec created.
    let mut cases = cases.to_vec();
    cases.push((
        opts(
            &["fresh:/a"],
            &["type=volume,source=other,target=/b,volume-opt=type=tmpfs,volume-opt=bogus=1"],
            &[],
        ),
        "invalid option: \"bogus\"",
    ));
    for (options, needle) in &cases {
        let err = containers
            .create_with("ctr", &top, Some(&top), options)
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "want {needle:?} in {err:?}");
        assert!(!err.contains('\n'), "one line: {err}");
        assert_nothing_created(&fx, &layers);
    }
    let volumes = fx.volumes();
    for (name, options) in [
        (Some("x"), kv(&[])),
        (Some("a/b"), kv(&[])),
        (Some("ok"), kv(&[("bogus", "1")])),
        (Some("ok"), kv(&[("type", "xfs")])),
        (None, kv(&[("device", "/dev/null")])),
    ] {
        assert!(volumes.create(name, kv(&[]), options).is_err());
        assert_nothing_created(&fx, &layers);
    }
    assert!(matches!(
        volumes.remove("nope"),
        Err(VolumeError::NotFound { .. })
    ));
}

#[test]
fn interrupted_creates_and_removes_are_cleaned_and_never_half_visible() {
    let Some(fx) = Fixture::new("volume_crash") else {
        return;
    };
    let volumes = fx.volumes();
    let dir = fx.root().join("volumes");
    // A create that died before its rename: invisible, then swept.
    fs::create_dir_all(dir.join(".tmp-half-ABCDEFGH/_data")).unwrap();
    // A remove that died after its rename: invisible, then swept.
    fs::create_dir_all(dir.join(".rm-gone-ABCDEFGH/_data")).unwrap();
    // A volume directory without metadata (a crash between metadata and
    // rename cannot make one, but Docker's own volumes look like this).
    fs::create_dir_all(dir.join("bare/_data")).unwrap();
    let listed = volumes.list(&VolumeFilter::default()).unwrap();
    let names: Vec<_> = listed.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, vec!["bare"]);
    assert!(!dir.join(".tmp-half-ABCDEFGH").exists());
    assert!(!dir.join(".rm-gone-ABCDEFGH").exists());
    let bare = volumes.get("bare").unwrap();
    assert_eq!(
        (bare.driver.as_str(), bare.scope.as_str()),
        ("local", "local")
    );
    assert!(bare.labels.is_none() && bare.options.is_none());
    assert!(
        bare.created_at.ends_with('Z') && bare.created_at.len() == 20,
        "{}",
        bare.created_at
    );
    volumes.remove("bare").unwrap();
    assert!(volumes.list(&VolumeFilter::default()).unwrap().is_empty());
}

#[test]
fn concurrent_users_of_one_named_volume() {
    let Some(fx) = Fixture::new("volume_concurrency") else {
        return;
    };
    let layers = fx.layers();
    let top = image(&layers);
    // Each thread has its own stores (own lock descriptors), as processes.
    std::thread::scope(|scope| {
        for i in 0..4 {
            let (fx, top) = (&fx, &top);
            scope.spawn(move || {
                let layers = fx.layers();
                let containers = ContainerStore::open(fx.root(), &layers).unwrap();
                let c = containers
                    .create_with(
                        &format!("c{i}"),
                        top,
                        Some(top),
                        &opts(&["shared:/data"], &[], &[]),
                    )
                    .unwrap();
                let root = containers.mount(&c).unwrap();
                fs::write(root.join(format!("data/from-{i}")), b"x").unwrap();
                containers.unmount(&c).unwrap();
            });
        }
    });
    let data = fx.root().join("volumes/shared/_data");
    for i in 0..4 {
        assert!(data.join(format!("from-{i}")).exists());
    }
    // The image content was copied exactly once, never over a writer's file.
    assert_eq!(fs::read(data.join("file")).unwrap(), b"image content");
    let err = fx.volumes().remove("shared").unwrap_err();
    assert!(matches!(err, VolumeError::InUse { refs, .. } if refs.len() == 4));
    let perms = fs::metadata(&data).unwrap().permissions();
    assert_eq!(perms.mode() & 0o777, 0o750);
}
