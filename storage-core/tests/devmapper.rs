//! The devicemapper driver on the real kernel. Where the kernel has no
//! dm-thin-pool (the development hosts), `refuses_without_dm_thin` checks
//! the one-line refusal and that nothing was created, and the pool
//! scenarios skip with one line. In a guest kernel with dm-thin
//! (`cargo xtask vm-test devmapper`) the scenarios run: layers and
//! containers as thin snapshots, a 1 GiB layer snapshotted in under a
//! second, the pool's used space following the bytes written and returning
//! to its start, and a full pool giving ENOSPC without breaking the store;
//! a busy layer kept (or, with deferred removal and deletion, deleted once
//! released); a metadata device from another pool and a pool too small
//! refused in one line with nothing created or lost.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use storage_core::archive::ChangeKind;
use storage_core::driver::devmapper::{DevMapper, PoolUsage};
use storage_core::driver::{self, CreateOpts, Driver, DriverError, DriverOptions};
use testkit::LeakCheck;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// The doctor's answer for dm-thin-pool: `Ok` or why not.
fn dm_thin() -> &'static Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE.get_or_init(|| {
        let feature = storage_core::features::probe_dm_thin_pool();
        if feature.supported {
            Ok(())
        } else {
            Err(feature.detail)
        }
    })
}

macro_rules! require_dm_thin {
    () => {
        testkit::require_root!();
        if let Err(why) = dm_thin() {
            testkit::feature_available(false, "dm-thin-pool", why);
            return;
        }
    };
}

fn opts(pairs: &[(&str, &str)]) -> DriverOptions {
    DriverOptions {
        storage_opt: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// A driver on a fresh root under a leak-checked scope; `finish` removes
/// the pool and checks nothing is left, and dropping it (a failed test)
/// still removes the pool.
struct Fixture {
    driver: Option<DevMapper>,
    root: PathBuf,
    leak: Option<LeakCheck>,
}

impl Fixture {
    fn new(options: &[(&str, &str)]) -> Self {
        let leak = LeakCheck::start().unwrap();
        let root = leak.dir().join("root");
        fs::create_dir(&root).unwrap();
        let started = Instant::now();
        let driver = DevMapper::open(&root.join("devicemapper"), &opts(options)).unwrap();
        println!(
            "pool {} with a base device ready in {:.2} s",
            driver.pool_name(),
            started.elapsed().as_secs_f64()
        );
        Self {
            driver: Some(driver),
            root,
            leak: Some(leak),
        }
    }

    fn driver(&self) -> &DevMapper {
        self.driver.as_ref().unwrap()
    }

    fn usage(&self) -> PoolUsage {
        self.driver().pool_usage().unwrap()
    }

    fn finish(mut self) {
        let driver = self.driver.take().unwrap();
        let pool = driver.pool_name().to_string();
        driver.cleanup().unwrap();
        drop(driver);
        assert!(
            !Path::new("/dev/mapper").join(&pool).exists(),
            "pool node still there"
        );
        let loops: Vec<_> = testkit::loops::attached_loops()
            .into_iter()
            .filter(|l| l.backing_file.starts_with(&self.root))
            .collect();
        assert!(loops.is_empty(), "loop devices left: {loops:?}");
        self.leak.take().unwrap().assert_clean();
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(driver) = self.driver.take() {
            let _ = driver.cleanup();
        }
    }
}

fn write_file(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

#[test]
fn refuses_without_dm_thin() {
    testkit::require_root!();
    let dir = tempfile::tempdir().unwrap();
    match dm_thin() {
        Err(why) => {
            let err = match driver::open("devicemapper", dir.path(), &DriverOptions::default()) {
                Err(e) => e,
                Ok(_) => panic!("devicemapper opened although the doctor says: {why}"),
            };
            assert!(matches!(err, DriverError::Unavailable { .. }), "{err:?}");
            let line = err.to_string();
            assert!(
                line.starts_with(
                    "driver devicemapper unavailable: kernel has no dm-thin-pool target"
                ),
                "{line}"
            );
            assert!(!line.contains('\n'), "{line}");
            println!("refused as expected: {line}");
        }
        Ok(()) => {
            // dm-thin is here: a bad option must still refuse before
            // anything is created.
            let err = match driver::open("devicemapper", dir.path(), &opts(&[("dm.fs", "btrfs")])) {
                Err(e) => e,
                Ok(_) => panic!("dm.fs=btrfs accepted"),
            };
            assert!(err.to_string().contains("dm.fs=btrfs"), "{err}");
        }
    }
    let left: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().collect();
    assert!(left.is_empty(), "created {left:?}");
}

#[test]
fn layers_and_containers_are_thin_snapshots() {
    require_dm_thin!();
    let fx = Fixture::new(&[]);
    let d = fx.driver();
    let home = fx.root.join("devicemapper");

    let status: std::collections::BTreeMap<_, _> = d.status().into_iter().collect();
    println!("status: {status:?}");
    assert_eq!(status["Backing Filesystem"], "xfs");
    assert_eq!(status["Base Device Size"], "10.74GB");
    assert_eq!(status["Data Space Total"], "107.4GB");
    assert_eq!(status["Pool Blocksize"], "65.54kB");
    assert!(status.contains_key("Data Space Used"));
    assert!(status.contains_key("Metadata Space Total"));
    assert!(home.join("devicemapper/data").is_file());
    let base: serde_json::Value =
        serde_json::from_slice(&fs::read(home.join("metadata/base")).unwrap()).unwrap();
    assert_eq!(base["initialized"], true);
    assert_eq!(base["size"], 10 * GIB);
    let set: serde_json::Value =
        serde_json::from_slice(&fs::read(home.join("metadata/deviceset-metadata")).unwrap())
            .unwrap();
    assert_eq!(set["BaseDeviceFilesystem"], "xfs");
    let start = fx.usage();

    let none = CreateOpts::default();
    d.create("l1", None, &none).unwrap();
    let l1 = d.get("l1").unwrap();
    assert_eq!(l1, home.join("mnt/l1/rootfs"));
    write_file(&l1.join("a.txt"), b"one");
    write_file(&l1.join("dir/b.txt"), b"bee");
    d.put("l1").unwrap();
    assert!(!home.join("mnt/l1").exists(), "mount point left after put");

    d.create("l2", Some("l1"), &none).unwrap();
    let l2 = d.get("l2").unwrap();
    assert_eq!(fs::read(l2.join("dir/b.txt")).unwrap(), b"bee");
    write_file(&l2.join("a.txt"), b"two");
    fs::remove_file(l2.join("dir/b.txt")).unwrap();
    write_file(&l2.join("c.txt"), b"see");
    d.put("l2").unwrap();

    let changes = d.changes("l2", Some("l1")).unwrap();
    let has = |path: &str, kind| {
        changes
            .iter()
            .any(|c| c.path == Path::new(path) && c.kind == kind)
    };
    assert!(
        has("/rootfs/a.txt", ChangeKind::Modified) || has("/a.txt", ChangeKind::Modified),
        "{changes:?}"
    );
    let prefix = if has("/a.txt", ChangeKind::Modified) {
        ""
    } else {
        "/rootfs"
    };
    assert!(
        has(&format!("{prefix}/dir/b.txt"), ChangeKind::Deleted),
        "{changes:?}"
    );
    assert!(
        has(&format!("{prefix}/c.txt"), ChangeKind::Added),
        "{changes:?}"
    );

    // The diff of l2 applied on l1 as l3 gives l2's tree.
    let mut tar = Vec::new();
    d.diff("l2", Some("l1"), &mut tar).unwrap();
    d.create("l3", Some("l1"), &none).unwrap();
    let applied = d
        .apply_diff("l3", Some("l1"), &mut tar.as_slice(), None)
        .unwrap();
    assert!(applied.diff_id.starts_with("sha256:"));
    let l3 = d.get("l3").unwrap();
    assert_eq!(fs::read(l3.join("a.txt")).unwrap(), b"two");
    assert_eq!(fs::read(l3.join("c.txt")).unwrap(), b"see");
    assert!(!l3.join("dir/b.txt").exists());
    d.put("l3").unwrap();
    assert!(d.diff_size("l2", Some("l1")).unwrap() >= 6);

    // A container: init + rw layers on l2, each with its own device.
    d.create_rw("c1-init", Some("l2"), &none).unwrap();
    d.create_rw("c1", Some("c1-init"), &none).unwrap();
    let c1 = d.get("c1").unwrap();
    write_file(&c1.join("log"), &vec![7u8; MIB as usize]);
    assert_eq!(fs::read(c1.join("a.txt")).unwrap(), b"two");
    let meta = d.metadata("c1").unwrap();
    assert!(meta["DeviceName"].ends_with("-c1"), "{meta:?}");
    assert!(Path::new("/dev/mapper").join(&meta["DeviceName"]).exists());
    let info: serde_json::Value =
        serde_json::from_slice(&fs::read(home.join("metadata/c1")).unwrap()).unwrap();
    assert_eq!(info["device_id"].to_string(), meta["DeviceId"]);
    // Reference counts: a second get shares the mount.
    assert_eq!(d.get("c1").unwrap(), c1);
    d.put("c1").unwrap();
    assert!(c1.join("log").exists());
    d.put("c1").unwrap();

    // A second driver on the same home (the CLI's next command) finds the
    // pool and every device.
    let again = driver::open("devicemapper", &fx.root, &DriverOptions::default()).unwrap();
    assert!(again.exists("c1") && again.exists("l3"));
    let c1_again = again.get("c1").unwrap();
    assert_eq!(fs::read(c1_again.join("log")).unwrap().len() as u64, MIB);
    again.put("c1").unwrap();
    drop(again);
    assert!(matches!(
        d.create("l1", None, &none),
        Err(DriverError::AlreadyExists { .. })
    ));
    assert!(matches!(d.get("nope"), Err(DriverError::NotFound { .. })));

    for id in ["c1", "c1-init", "l3", "l2", "l1"] {
        d.remove(id).unwrap();
        assert!(!home.join("metadata").join(id).exists());
    }
    assert!(!home.join("metadata/transaction-metadata").exists());
    let end = fx.usage();
    println!(
        "pool data used: start {} B, end {} B; metadata {} -> {} B",
        start.data_used, end.data_used, start.metadata_used, end.metadata_used
    );
    assert_eq!(end.data_used, start.data_used, "data blocks not returned");
    assert!(end.transaction_id > start.transaction_id);
    fx.finish();
}

#[test]
fn one_gib_layer_snapshots_in_under_a_second() {
    require_dm_thin!();
    let fx = Fixture::new(&[]);
    let d = fx.driver();
    let none = CreateOpts::default();
    let before = fx.usage();
    d.create("big", None, &none).unwrap();
    let big = d.get("big").unwrap();
    let started = Instant::now();
    {
        let mut file = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(big.join("blob"))
            .unwrap();
        let mut buffer = Vec::new();
        let chunk = aligned_mib(&mut buffer);
        for (i, b) in chunk.iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        for _ in 0..GIB / MIB {
            file.write_all(chunk).unwrap();
        }
        file.sync_all().unwrap();
    }
    let wrote = started.elapsed();
    d.put("big").unwrap();
    let after_write = fx.usage();
    let grown = after_write.data_used - before.data_used;
    println!(
        "figure: wrote 1 GiB into a thin layer in {:.1} s; pool data used grew by {} bytes ({:.3} x written)",
        wrote.as_secs_f64(),
        grown,
        grown as f64 / GIB as f64
    );
    assert!(grown >= GIB, "pool grew by only {grown} bytes");
    assert!(grown <= GIB + 64 * MIB, "pool grew by {grown} bytes");

    let started = Instant::now();
    d.create("big-child", Some("big"), &none).unwrap();
    let took = started.elapsed();
    let after_snap = fx.usage();
    let snap_growth = after_snap.data_used - after_write.data_used;
    println!(
        "figure: snapshot of the 1 GiB layer created in {:.1} ms; pool data grew by {} bytes",
        took.as_secs_f64() * 1000.0,
        snap_growth
    );
    assert!(took.as_secs_f64() < 1.0, "snapshot took {took:?}");
    assert!(snap_growth <= MIB, "snapshot allocated {snap_growth} bytes");
    let child = d.get("big-child").unwrap();
    assert_eq!(fs::metadata(child.join("blob")).unwrap().len(), GIB);
    d.put("big-child").unwrap();

    d.remove("big-child").unwrap();
    d.remove("big").unwrap();
    let end = fx.usage();
    assert_eq!(end.data_used, before.data_used, "blocks not returned");
    fx.finish();
}

/// A 1 MiB buffer at a 4 KiB-aligned address (O_DIRECT wants one),
/// carved out of a slightly larger allocation.
fn aligned_mib(buffer: &mut Vec<u8>) -> &mut [u8] {
    *buffer = vec![0u8; MIB as usize + 4096];
    let offset = (4096 - (buffer.as_ptr() as usize % 4096)) % 4096;
    &mut buffer[offset..offset + MIB as usize]
}

#[test]
fn full_pool_gives_enospc_and_the_store_recovers() {
    require_dm_thin!();
    let fx = Fixture::new(&[
        ("dm.loopdatasize", "256M"),
        ("dm.basesize", "1G"),
        ("dm.xfs_nospace_max_retries", "0"),
    ]);
    let d = fx.driver();
    let none = CreateOpts::default();
    d.create("img", None, &none).unwrap();
    let img = d.get("img").unwrap();
    write_file(&img.join("keep.txt"), b"survives");
    d.put("img").unwrap();

    d.create_rw("ctr", Some("img"), &none).unwrap();
    let ctr = d.get("ctr").unwrap();
    let mut file = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(ctr.join("fill"))
        .unwrap();
    let mut buffer = Vec::new();
    let chunk = aligned_mib(&mut buffer);
    chunk.fill(0x5a);
    let mut written = 0u64;
    let error = loop {
        match file.write_all(chunk) {
            Ok(()) => written += MIB,
            Err(e) => break e,
        }
        assert!(written < 1024 * MIB, "256 MiB pool took {written} bytes");
    };
    drop(file);
    let full = fx.usage();
    println!(
        "figure: full pool after {} MiB: write error {error} ({:?}); pool {} / {} bytes, out_of_space {}",
        written / MIB,
        error.raw_os_error(),
        full.data_used,
        full.data_total,
        full.out_of_space
    );
    assert_eq!(error.raw_os_error(), Some(libc::ENOSPC), "{error}");
    assert!(written > 64 * MIB, "only {written} bytes fitted");

    // Below dm.min_free_space no new device is made, and the refusal says why.
    let refused = d.create_rw("ctr2", Some("img"), &none).unwrap_err();
    assert!(
        refused.to_string().contains("dm.min_free_space"),
        "{refused}"
    );

    // Free the space: the container goes, the image stays.
    d.put("ctr").unwrap();
    d.remove("ctr").unwrap();
    let freed = fx.usage();
    assert!(!freed.out_of_space, "pool still out of space: {freed:?}");
    d.create_rw("ctr2", Some("img"), &none).unwrap();
    let ctr2 = d.get("ctr2").unwrap();
    assert_eq!(fs::read(ctr2.join("keep.txt")).unwrap(), b"survives");
    let mut f = fs::File::create(ctr2.join("after")).unwrap();
    f.write_all(&vec![1u8; 16 * MIB as usize]).unwrap();
    f.sync_all().unwrap();
    drop(f);
    d.put("ctr2").unwrap();
    d.remove("ctr2").unwrap();
    d.remove("img").unwrap();
    fx.finish();
}

#[test]
fn ext4_base_and_a_changed_fs_is_refused() {
    require_dm_thin!();
    let fx = Fixture::new(&[("dm.fs", "ext4"), ("dm.basesize", "1G")]);
    let d = fx.driver();
    let status: std::collections::BTreeMap<_, _> = d.status().into_iter().collect();
    assert_eq!(status["Backing Filesystem"], "ext4");
    d.create("e1", None, &CreateOpts::default()).unwrap();
    let e1 = d.get("e1").unwrap();
    write_file(&e1.join("x"), b"ext4");
    d.put("e1").unwrap();
    let err = match DevMapper::open(&fx.root.join("devicemapper"), &opts(&[("dm.fs", "xfs")])) {
        Err(e) => e,
        Ok(_) => panic!("dm.fs=xfs accepted on an ext4 base"),
    };
    assert!(err.to_string().contains("ext4"), "{err}");
    d.remove("e1").unwrap();
    fx.finish();
}

#[test]
fn given_devices_and_an_existing_thin_pool() {
    use storage_core::sys::devmapper::{DmControl, Target};
    use storage_core::sys::loopdev::{LoopDevice, LoopOptions};
    require_dm_thin!();
    let leak = LeakCheck::start().unwrap();
    let attach = |name: &str, size: u64| {
        let path = leak.dir().join(name);
        fs::File::create(&path).unwrap().set_len(size).unwrap();
        LoopDevice::attach(&path, LoopOptions::default()).unwrap()
    };
    let data = attach("data.img", 512 * MIB);
    let meta = attach("meta.img", 64 * MIB);

    // dm.datadev + dm.metadatadev: the driver makes its pool on them and
    // removes it again in cleanup; the devices stay the caller's.
    let root = leak.dir().join("root-devs");
    fs::create_dir(&root).unwrap();
    let d = DevMapper::open(
        &root.join("devicemapper"),
        &opts(&[
            ("dm.datadev", &data.path().display().to_string()),
            ("dm.metadatadev", &meta.path().display().to_string()),
            ("dm.basesize", "1G"),
        ]),
    )
    .unwrap();
    let status: std::collections::BTreeMap<_, _> = d.status().into_iter().collect();
    assert_eq!(status["Data file"], data.path().display().to_string());
    assert!(!status.contains_key("Data loop file"), "{status:?}");
    assert_eq!(status["Data Space Total"], "536.9MB");
    assert!(!root.join("devicemapper/devicemapper").exists());
    d.create("on-devs", None, &CreateOpts::default()).unwrap();
    write_file(&d.get("on-devs").unwrap().join("f"), b"x");
    d.put("on-devs").unwrap();
    d.remove("on-devs").unwrap();
    let pool = d.pool_name().to_string();
    d.cleanup().unwrap();
    drop(d);
    assert!(!Path::new("/dev/mapper").join(&pool).exists());

    // dm.thinpooldev: a pool made outside the driver (fresh metadata) is
    // taken over; cleanup leaves it in place.
    let zero = vec![0u8; MIB as usize];
    let mut meta_dev = fs::OpenOptions::new()
        .write(true)
        .open(meta.path())
        .unwrap();
    meta_dev.write_all(&zero).unwrap();
    // The pool reads its metadata with bios, past the page cache.
    meta_dev.sync_all().unwrap();
    drop(meta_dev);
    let control = DmControl::open(Path::new("/dev/mapper/control")).unwrap();
    let name = format!("layerscope-test-pool-{}", std::process::id());
    let dev_of = |p: &Path| {
        use std::os::unix::fs::MetadataExt;
        let rdev = fs::metadata(p).unwrap().rdev();
        format!(
            "{}:{}",
            nix::sys::stat::major(rdev),
            nix::sys::stat::minor(rdev)
        )
    };
    control.create_device(&name).unwrap();
    control
        .load_table(
            &name,
            &[Target {
                start: 0,
                length: 512 * MIB / 512,
                target_type: "thin-pool".into(),
                params: format!("{} {} 128 0 0", dev_of(meta.path()), dev_of(data.path())),
            }],
        )
        .unwrap();
    control.resume(&name).unwrap();
    let root = leak.dir().join("root-pool");
    fs::create_dir(&root).unwrap();
    let opened = DevMapper::open(
        &root.join("devicemapper"),
        &opts(&[("dm.thinpooldev", &name), ("dm.basesize", "1G")]),
    );
    let result = (|| {
        let d = opened?;
        assert_eq!(d.pool_name(), name);
        d.create("on-pool", None, &CreateOpts::default())?;
        let path = d.get("on-pool")?;
        write_file(&path.join("f"), b"y");
        d.put("on-pool")?;
        d.remove("on-pool")?;
        d.cleanup()?;
        Ok::<_, DriverError>(control.info(&name).unwrap().is_some())
    })();
    let _ = control.remove_device(&name);
    let _ = fs::remove_file(Path::new("/dev/mapper").join(&name));
    assert!(result.unwrap(), "cleanup removed a pool it did not create");
    drop(data);
    drop(meta);
    leak.assert_clean();
}

fn device_file(home: &Path, id: &str) -> serde_json::Value {
    serde_json::from_slice(&fs::read(home.join("metadata").join(id)).unwrap()).unwrap()
}

fn status_of(d: &DevMapper) -> std::collections::BTreeMap<String, String> {
    d.status().into_iter().collect()
}

#[test]
fn a_busy_layer_is_kept_without_deferred_options() {
    require_dm_thin!();
    let fx = Fixture::new(&[("dm.basesize", "1G")]);
    let d = fx.driver();
    let home = fx.root.join("devicemapper");
    let none = CreateOpts::default();
    let start = fx.usage();
    let status = status_of(d);
    assert_eq!(status["Deferred Removal Enabled"], "false");
    assert_eq!(status["Deferred Deletion Enabled"], "false");

    d.create("busy", None, &none).unwrap();
    let root = d.get("busy").unwrap();
    write_file(&root.join("data"), &vec![3u8; 4 * MIB as usize]);
    // A process with a file open in the layer's filesystem.
    let holder = fs::File::open(root.join("data")).unwrap();
    let err = d.remove("busy").unwrap_err();
    let line = err.to_string();
    println!("busy layer refused: {line}");
    assert!(line.contains("busy") && line.contains("kept"), "{line}");
    assert!(!line.contains('\n'), "{line}");
    assert!(d.exists("busy"));
    assert_eq!(device_file(&home, "busy")["deleted"], false);
    assert_eq!(fs::read(root.join("data")).unwrap().len() as u64, 4 * MIB);
    drop(holder);

    // Another holder: the device node opened by someone else. The mount
    // goes, the device stays, the layer is kept and mounts again.
    d.put("busy").unwrap();
    let name = d.metadata("busy").unwrap()["DeviceName"].clone();
    let _ = d.get("busy").unwrap();
    let node = fs::File::open(Path::new("/dev/mapper").join(&name)).unwrap();
    let err = d.remove("busy").unwrap_err();
    println!("busy device refused: {err}");
    assert!(err.to_string().contains("busy"), "{err}");
    assert!(d.exists("busy"));
    drop(node);
    let again = d.get("busy").unwrap();
    assert_eq!(
        fs::read(again.join("data")).unwrap(),
        vec![3u8; 4 * MIB as usize]
    );
    d.put("busy").unwrap();
    d.remove("busy").unwrap();
    assert!(!d.exists("busy"));
    assert!(!home.join("metadata/busy").exists());
    assert_eq!(fx.usage().data_used, start.data_used, "blocks not returned");
    fx.finish();
}

#[test]
fn deferred_removal_and_deletion_free_a_busy_layer_later() {
    require_dm_thin!();
    let fx = Fixture::new(&[
        ("dm.basesize", "1G"),
        ("dm.use_deferred_removal", "true"),
        ("dm.use_deferred_deletion", "true"),
    ]);
    let d = fx.driver();
    let home = fx.root.join("devicemapper");
    let none = CreateOpts::default();
    let status = status_of(d);
    assert_eq!(status["Deferred Removal Enabled"], "true");
    assert_eq!(status["Deferred Deletion Enabled"], "true");
    assert_eq!(status["Deferred Deleted Device Count"], "0");
    let start = fx.usage();

    d.create("busy", None, &none).unwrap();
    let root = d.get("busy").unwrap();
    write_file(&root.join("data"), &vec![5u8; 8 * MIB as usize]);
    let holder = fs::File::open(root.join("data")).unwrap();
    let busy_id = device_file(&home, "busy")["device_id"].as_u64().unwrap();
    let name = d.metadata("busy").unwrap()["DeviceName"].clone();
    // put: the filesystem stays busy, the device is left to the kernel.
    d.put("busy").unwrap();
    d.remove("busy").unwrap();
    assert!(!d.exists("busy"));
    assert!(matches!(d.get("busy"), Err(DriverError::NotFound { .. })));
    assert_eq!(device_file(&home, "busy")["deleted"], true);
    assert_eq!(status_of(d)["Deferred Deleted Device Count"], "1");
    // Its device id stays taken until it is deleted.
    d.create("other", None, &none).unwrap();
    let other_id = device_file(&home, "other")["device_id"].as_u64().unwrap();
    assert_ne!(other_id, busy_id);
    // A second driver (the next command) sees it pending too.
    let again = DevMapper::open(
        &home,
        &opts(&[
            ("dm.use_deferred_removal", "true"),
            ("dm.use_deferred_deletion", "true"),
        ]),
    )
    .unwrap();
    assert_eq!(status_of(&again)["Deferred Deleted Device Count"], "1");
    drop(again);
    // The holder still reads its data.
    let mut read = Vec::new();
    std::io::Read::read_to_end(&mut &holder, &mut read).unwrap();
    assert_eq!(read.len() as u64, 8 * MIB);

    drop(holder);
    // The kernel removes the device on its last close; the next operations
    // delete the thin device.
    let released = Instant::now();
    let mut ticks = 0;
    while status_of(d)["Deferred Deleted Device Count"] != "0" {
        assert!(
            released.elapsed().as_secs() < 20,
            "busy device never deleted: {:?}",
            status_of(d)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
        let tick = format!("tick{ticks}");
        d.create(&tick, None, &none).unwrap();
        d.remove(&tick).unwrap();
        ticks += 1;
    }
    println!(
        "figure: busy device deleted {:.2} s after its holder closed ({ticks} extra operations)",
        released.elapsed().as_secs_f64()
    );
    assert!(!home.join("metadata/busy").exists());
    assert!(!Path::new("/dev/mapper").join(&name).exists());
    d.remove("other").unwrap();
    let end = fx.usage();
    println!(
        "pool data used: start {} B, end {} B",
        start.data_used, end.data_used
    );
    assert_eq!(end.data_used, start.data_used, "blocks not returned");
    fx.finish();
}

/// A loop device on a sparse file of `size` bytes under `dir`.
fn loop_dev(dir: &Path, name: &str, size: u64) -> storage_core::sys::loopdev::LoopDevice {
    use storage_core::sys::loopdev::{LoopDevice, LoopOptions};
    let path = dir.join(name);
    fs::File::create(&path).unwrap().set_len(size).unwrap();
    LoopDevice::attach(&path, LoopOptions::default()).unwrap()
}

fn dev_opts(data: &Path, meta: &Path) -> Vec<(String, String)> {
    vec![
        ("dm.datadev".into(), data.display().to_string()),
        ("dm.metadatadev".into(), meta.display().to_string()),
        ("dm.basesize".into(), "1G".into()),
    ]
}

fn open_on(home: &Path, pairs: &[(String, String)]) -> Result<DevMapper, DriverError> {
    let pairs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    DevMapper::open(home, &opts(&pairs))
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in walk(dir) {
        if entry.is_file() {
            out.push((entry.clone(), fs::read(&entry).unwrap()));
        }
    }
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            }
            out.push(path);
        }
    }
    out
}

fn dm_names() -> Vec<String> {
    use storage_core::sys::devmapper::DmControl;
    let control = DmControl::open(Path::new("/dev/mapper/control")).unwrap();
    let mut names: Vec<String> = control
        .list_devices()
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    names.sort();
    names
}

#[test]
fn a_metadata_device_from_another_pool_is_refused() {
    require_dm_thin!();
    let leak = LeakCheck::start().unwrap();
    let data_a = loop_dev(leak.dir(), "data-a", 512 * MIB);
    let meta_a = loop_dev(leak.dir(), "meta-a", 64 * MIB);
    let data_b = loop_dev(leak.dir(), "data-b", 512 * MIB);
    let meta_b = loop_dev(leak.dir(), "meta-b", 64 * MIB);
    let none = CreateOpts::default();
    let home_a = leak.dir().join("a/devicemapper");
    let opts_a = dev_opts(data_a.path(), meta_a.path());

    // Store A on its own devices, with one layer.
    let a = open_on(&home_a, &opts_a).unwrap();
    a.create("keep", None, &none).unwrap();
    write_file(&a.get("keep").unwrap().join("f"), b"precious");
    a.put("keep").unwrap();
    // The last transaction a deletion: no open transaction file is left,
    // so only the pool's contents can tell another pool apart.
    a.create("tmp", None, &none).unwrap();
    a.remove("tmp").unwrap();
    assert!(!home_a.join("metadata/transaction-metadata").exists());
    a.cleanup().unwrap();
    drop(a);
    let before = snapshot(&home_a);
    let names = dm_names();

    let refused = |what: &str, home: &Path, pairs: &[(String, String)], want: &str| {
        let existed = home.exists();
        let err = match open_on(home, pairs) {
            Err(e) => e,
            Ok(_) => panic!("{what}: accepted"),
        };
        let line = err.to_string();
        println!("{what}: refused: {line}");
        assert!(line.contains(want), "{what}: {line}");
        assert!(!line.contains('\n'), "{what}: {line}");
        assert_eq!(dm_names(), names, "{what}: devices left");
        if !existed {
            assert!(!home.exists(), "{what}: created {}", home.display());
        }
    };

    // A fresh store given A's metadata device: a pool of another store.
    refused(
        "fresh store on A's metadata",
        &leak.dir().join("b/devicemapper"),
        &dev_opts(data_b.path(), meta_a.path()),
        &format!("metadata device {}", meta_a.path().display()),
    );
    // Store A given a fresh metadata device.
    refused(
        "A on a fresh metadata device",
        &home_a,
        &dev_opts(data_a.path(), meta_b.path()),
        "transaction id mismatch",
    );
    assert_eq!(snapshot(&home_a), before, "A's files changed");

    // Store C on B's devices with more transactions than A: the ids pass,
    // the base device's filesystem does not.
    let home_c = leak.dir().join("c/devicemapper");
    let c = open_on(&home_c, &dev_opts(data_b.path(), meta_b.path())).unwrap();
    for i in 0..4 {
        c.create(&format!("c{i}"), None, &none).unwrap();
    }
    c.cleanup().unwrap();
    drop(c);
    let names = dm_names();
    let err = match open_on(&home_a, &dev_opts(data_b.path(), meta_b.path())) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("A on C's metadata accepted"),
    };
    println!("A on C's metadata: refused: {err}");
    assert!(err.contains("holds filesystem"), "{err}");
    assert_eq!(dm_names(), names);
    assert_eq!(snapshot(&home_a), before, "A's files changed");

    // Nothing lost: A on its own devices has its layer.
    let a = open_on(&home_a, &opts_a).unwrap();
    assert_eq!(
        fs::read(a.get("keep").unwrap().join("f")).unwrap(),
        b"precious"
    );
    a.put("keep").unwrap();
    a.remove("keep").unwrap();
    a.cleanup().unwrap();
    drop(a);
    drop((data_a, meta_a, data_b, meta_b));
    leak.assert_clean();
}

#[test]
fn a_pool_too_small_is_refused_and_nothing_is_left() {
    require_dm_thin!();
    let leak = LeakCheck::start().unwrap();
    let names = dm_names();
    // Given devices: 1 MiB of data cannot hold the base filesystem, 1 MiB
    // of metadata is below what a pool needs.
    let data = loop_dev(leak.dir(), "data", MIB);
    let meta = loop_dev(leak.dir(), "meta", 64 * MIB);
    let small_data = leak.dir().join("small-data/devicemapper");
    let err = open_on(&small_data, &dev_opts(data.path(), meta.path()))
        .err()
        .expect("1 MiB data device accepted")
        .to_string();
    println!("1 MiB data device: refused: {err}");
    assert!(err.contains("too small") && !err.contains('\n'), "{err}");
    assert!(!small_data.exists());
    assert_eq!(dm_names(), names);
    drop((data, meta));

    let data = loop_dev(leak.dir(), "data2", 512 * MIB);
    let meta = loop_dev(leak.dir(), "meta2", MIB);
    let small_meta = leak.dir().join("small-meta/devicemapper");
    let err = open_on(&small_meta, &dev_opts(data.path(), meta.path()))
        .err()
        .expect("1 MiB metadata device accepted")
        .to_string();
    println!("1 MiB metadata device: refused: {err}");
    assert!(err.contains("too small") && !err.contains('\n'), "{err}");
    assert!(!small_meta.exists());
    assert_eq!(dm_names(), names);
    drop((data, meta));

    // loop-lvm with a tiny data file.
    let home = leak.dir().join("loop/devicemapper");
    let err = DevMapper::open(&home, &opts(&[("dm.loopdatasize", "2M")]))
        .err()
        .expect("2 MiB loop data accepted")
        .to_string();
    println!("2 MiB loop data file: refused: {err}");
    assert!(err.contains("too small") && !err.contains('\n'), "{err}");
    assert!(!home.exists());
    assert_eq!(dm_names(), names);
    leak.assert_clean();
}
