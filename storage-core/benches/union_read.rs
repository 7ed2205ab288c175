//! Sequential read throughput of a 1 GiB file in the bottom layer of a
//! 3-layer stack, read through: the aufs driver's FUSE union (passthrough
//! on and off), overlay2 (kernel overlayfs), fuse-overlayfs, unionfs-fuse,
//! and the plain file; then the small-file copy-up rate (first write to
//! 2000 lower 4 KiB files) on the same unions. Cold reads: the page cache
//! of the file is dropped with fadvise(DONTNEED) before each run.
//!
//! Run as root: `cargo bench -p storage-core --bench union_read`.
//! `UNION_READ_MIB` changes the file size (default 1024).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use storage_core::driver::aufs::Aufs;
use storage_core::driver::overlay2::Overlay2;
use storage_core::driver::{CreateOpts, Driver, DriverOptions};
use storage_core::sys::mount;
use testkit::{FsKind, ScratchFs};

const SMALL_FILES: usize = 2000;

fn drop_cache(path: &Path) {
    if let Ok(file) = File::open(path) {
        let _ = file.sync_all();
        let _ = nix::fcntl::posix_fadvise(
            &file,
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        );
    }
}

/// MiB/s of reading `path` once with 1 MiB reads.
fn read_once(path: &Path) -> f64 {
    let mut file = File::open(path).expect("open for read");
    let mut buf = vec![0u8; 1 << 20];
    let start = Instant::now();
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    total as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64()
}

/// Best of three cold reads of `path` (whose backing file is `backing`).
fn cold_read(path: &Path, backing: &Path) -> f64 {
    (0..3)
        .map(|_| {
            drop_cache(backing);
            drop_cache(path);
            read_once(path)
        })
        .fold(0.0, f64::max)
}

/// Best of three reads of `path` with its pages cached.
fn warm_read(path: &Path) -> f64 {
    read_once(path);
    (0..3).map(|_| read_once(path)).fold(0.0, f64::max)
}

/// Files per second of the first write (append of one byte) to each of
/// the small lower files seen under `root/small`.
fn copy_up_rate(root: &Path) -> f64 {
    let start = Instant::now();
    for i in 0..SMALL_FILES {
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(root.join("small").join(format!("f{i}")))
            .expect("open small file for append");
        std::io::Write::write_all(&mut f, b"x").expect("append");
    }
    SMALL_FILES as f64 / start.elapsed().as_secs_f64()
}

fn wait_mounted(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !mount::is_mount_point(path) {
        assert!(
            Instant::now() < deadline,
            "{} never mounted",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct Row {
    name: &'static str,
    read: f64,
    warm: f64,
    copy_up: Option<f64>,
}

fn aufs_options(passthrough: bool) -> DriverOptions {
    let mut storage_opt = BTreeMap::new();
    storage_opt.insert("aufs.fuse".to_string(), "thread".to_string());
    storage_opt.insert("aufs.passthrough".to_string(), passthrough.to_string());
    DriverOptions { storage_opt }
}

/// Builds base <- mid <- rw in `driver`, the big file and the small files
/// hard-linked from `seed` into the base layer's files.
fn build_stack(driver: &dyn Driver, seed: &Path, base_files: &Path) {
    driver.create("base", None, &CreateOpts::default()).unwrap();
    for entry in fs::read_dir(seed).unwrap() {
        let entry = entry.unwrap();
        link_tree(&entry.path(), &base_files.join(entry.file_name()));
    }
    driver
        .create("mid", Some("base"), &CreateOpts::default())
        .unwrap();
    driver
        .create_rw("rw", Some("mid"), &CreateOpts::default())
        .unwrap();
}

fn link_tree(src: &Path, dst: &Path) {
    if src.is_dir() {
        fs::create_dir_all(dst).unwrap();
        for entry in fs::read_dir(src).unwrap() {
            let entry = entry.unwrap();
            link_tree(&entry.path(), &dst.join(entry.file_name()));
        }
    } else {
        fs::hard_link(src, dst).unwrap();
    }
}

fn fuse_tool(
    rows: &mut Vec<Row>,
    name: &'static str,
    dir: &Path,
    lowers: &[PathBuf],
    seed_big: &Path,
    tool: impl Fn(&Path, &Path, &Path) -> Command,
) {
    let upper = dir.join("upper");
    let work = dir.join("work");
    let mnt = dir.join("mnt");
    for d in [&upper, &work, &mnt] {
        fs::create_dir_all(d).unwrap();
    }
    let lower = lowers
        .iter()
        .map(|l| l.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let status = tool(Path::new(&lower), &upper, &work)
        .arg(&mnt)
        .status()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    if !status.success() {
        println!("{name}: failed to mount ({status}), skipped");
        return;
    }
    wait_mounted(&mnt);
    let read = cold_read(&mnt.join("big"), seed_big);
    let warm = warm_read(&mnt.join("big"));
    let copy_up = Some(copy_up_rate(&mnt));
    let _ = mount::unmount(&mnt).or_else(|_| mount::unmount_detach(&mnt));
    rows.push(Row {
        name,
        read,
        warm,
        copy_up,
    });
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !testkit::require_root("union_read") {
        return;
    }
    let mib: u64 = std::env::var("UNION_READ_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let scratch = ScratchFs::new(FsKind::Ext4, (mib + 512) << 20).expect("scratch ext4");
    let root = scratch.path().to_path_buf();
    let seed = root.join("seed");
    fs::create_dir_all(seed.join("small")).unwrap();
    let big = seed.join("big");
    let status = Command::new("fio")
        .args(["--name=seed", "--rw=write", "--bs=1M", "--ioengine=sync"])
        .arg(format!("--size={mib}M"))
        .arg(format!("--filename={}", big.display()))
        .stdout(std::process::Stdio::null())
        .status();
    if !status.is_ok_and(|s| s.success()) {
        let chunk = vec![0x5au8; 1 << 20];
        let mut f = File::create(&big).unwrap();
        for _ in 0..mib {
            std::io::Write::write_all(&mut f, &chunk).unwrap();
        }
    }
    for i in 0..SMALL_FILES {
        fs::write(seed.join("small").join(format!("f{i}")), [7u8; 4096]).unwrap();
    }
    let mut rows = Vec::new();

    rows.push(Row {
        name: "native ext4",
        read: cold_read(&big, &big),
        warm: warm_read(&big),
        copy_up: None,
    });

    // aufs driver, FUSE union, passthrough on and off.
    for (name, passthrough) in [
        ("aufs FUSE union (passthrough)", true),
        ("aufs FUSE union (no passthrough)", false),
    ] {
        let home = root.join(format!("aufs-{passthrough}"));
        let driver = Aufs::open(&home.join("aufs"), &aufs_options(passthrough)).unwrap();
        build_stack(&driver, &seed, &driver.diff_dir("base"));
        let merged = driver.get("rw").unwrap();
        let read = cold_read(&merged.join("big"), &big);
        let warm = warm_read(&merged.join("big"));
        let copy_up = Some(copy_up_rate(&merged));
        driver.put("rw").unwrap();
        driver.cleanup().unwrap();
        rows.push(Row {
            name,
            read,
            warm,
            copy_up,
        });
    }

    // overlay2.
    let home = root.join("ov");
    let overlay = Overlay2::open(&home.join("overlay2"), &DriverOptions::default()).unwrap();
    let base_files = home.join("overlay2").join("base").join("diff");
    build_stack(&overlay, &seed, &base_files);
    let merged = overlay.get("rw").unwrap();
    let read = cold_read(&merged.join("big"), &big);
    let warm = warm_read(&merged.join("big"));
    let copy_up = Some(copy_up_rate(&merged));
    overlay.put("rw").unwrap();
    rows.push(Row {
        name: "overlay2 (kernel overlayfs)",
        read,
        warm,
        copy_up,
    });

    // The FUSE tools on plain copies of the same 3-branch stack.
    let lowers = vec![root.join("tool-mid"), seed.clone()];
    fs::create_dir_all(&lowers[0]).unwrap();
    fuse_tool(
        &mut rows,
        "fuse-overlayfs",
        &root.join("fo"),
        &lowers,
        &big,
        |lower, upper, work| {
            let mut cmd = Command::new("fuse-overlayfs");
            cmd.arg("-o").arg(format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.display(),
                upper.display(),
                work.display()
            ));
            cmd
        },
    );
    fuse_tool(
        &mut rows,
        "unionfs-fuse",
        &root.join("uf"),
        &lowers,
        &big,
        |lower, upper, _| {
            let branches: Vec<String> = std::iter::once(format!("{}=RW", upper.display()))
                .chain(
                    lower
                        .to_string_lossy()
                        .split(':')
                        .map(|l| format!("{l}=RO")),
                )
                .collect();
            let mut cmd = Command::new("unionfs");
            cmd.args(["-o", "cow,allow_other,use_ino"])
                .arg(branches.join(":"));
            cmd
        },
    );

    let native = rows[0].read;
    let overlay_read = rows
        .iter()
        .find(|r| r.name.starts_with("overlay2"))
        .map_or(native, |r| r.read);
    println!(
        "union_read: cold sequential read of a {mib} MiB bottom-layer file (1 MiB reads, best of 3; warm: cached, best of 3), copy-up of {SMALL_FILES} x 4 KiB files"
    );
    let overlay_warm = rows
        .iter()
        .find(|r| r.name.starts_with("overlay2"))
        .map_or(1.0, |r| r.warm);
    println!(
        "{:<36} {:>10} {:>10} {:>12} {:>10} {:>12} {:>14}",
        "stack", "cold MiB/s", "x native", "x overlay2", "warm MiB/s", "x overlay2", "copy-ups/s"
    );
    for row in &rows {
        println!(
            "{:<36} {:>10.0} {:>10.2} {:>12.2} {:>10.0} {:>12.2} {:>14}",
            row.name,
            row.read,
            row.read / native,
            row.read / overlay_read,
            row.warm,
            row.warm / overlay_warm,
            row.copy_up.map_or("-".to_string(), |r| format!("{r:.0}"))
        );
    }
    drop(overlay);
    scratch.cleanup().expect("scratch cleanup");
}
