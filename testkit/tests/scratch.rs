//! Privileged tests of testkit itself: every scratch filesystem kind mounts
//! with the right type, is writable, and leaves nothing behind, also after a
//! panic, under parallel use and when mkfs fails.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use nix::sys::statfs::statfs;
use storage_core::sys::loopdev::{LoopDevice, LoopOptions};
use storage_core::sys::mount::{MountFlags, is_mount_point, mount};
use storage_core::sys::reflink::clone_file;
use testkit::loops::is_attached_to;
use testkit::mountinfo::{fstype_of, mounts};
use testkit::unmount::Unmounted;
use testkit::{FsKind, LeakCheck, MountGuard, ScratchFs, TestkitError, require_root};

/// What must be gone once a scratch filesystem is dropped.
struct Remains {
    dir: PathBuf,
    mount_point: PathBuf,
    loop_device: Option<(PathBuf, PathBuf)>,
}

impl Remains {
    fn of(fs: &ScratchFs) -> Self {
        Remains {
            dir: fs.dir().to_path_buf(),
            mount_point: fs.path().to_path_buf(),
            loop_device: fs
                .device()
                .map(|d| (d.to_path_buf(), fs.backing_file().unwrap().to_path_buf())),
        }
    }

    fn assert_gone(&self) {
        assert!(
            !is_mount_point(&self.mount_point),
            "{} still mounted",
            self.mount_point.display()
        );
        assert!(
            !mounts()
                .unwrap()
                .iter()
                .any(|m| m.mount_point.starts_with(&self.dir)),
            "a mount under {} is left",
            self.dir.display()
        );
        assert!(
            !self.mount_point.exists(),
            "{} left",
            self.mount_point.display()
        );
        assert!(!self.dir.exists(), "{} left", self.dir.display());
        if let Some((device, backing)) = &self.loop_device {
            // The number may already serve another test: only our file counts.
            assert!(
                !is_attached_to(device, backing),
                "{} still attached to {}",
                device.display(),
                backing.display()
            );
        }
    }
}

fn write_and_read_back(dir: &Path) {
    let file = dir.join("hello.txt");
    let mut out = File::create(&file).unwrap();
    out.write_all(b"layerscope").unwrap();
    out.sync_all().unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), b"layerscope");
}

fn exercise(kind: FsKind) {
    let fs = ScratchFs::new(kind, kind.small_size()).unwrap();
    assert_eq!(fs.fs_kind(), kind);
    assert!(
        fs.dir().starts_with("/var/tmp")
            && fs
                .dir()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("layerscope-test-"),
        "{}",
        fs.dir().display()
    );
    assert!(is_mount_point(fs.path()));
    assert_eq!(statfs(fs.path()).unwrap().filesystem_type(), kind.magic());
    assert_eq!(fstype_of(fs.path()).as_deref(), Some(kind.fstype()));

    match (kind, fs.device(), fs.backing_file()) {
        (FsKind::Tmpfs, None, None) => {}
        (FsKind::Tmpfs, device, backing) => panic!("tmpfs with {device:?} {backing:?}"),
        (_, Some(device), Some(backing)) => {
            assert!(device.to_string_lossy().starts_with("/dev/loop"));
            assert!(is_attached_to(device, backing));
            // Sparse: the size is there, the blocks are not.
            let meta = std::fs::metadata(backing).unwrap();
            assert_eq!(meta.len(), kind.small_size());
            let allocated = std::os::unix::fs::MetadataExt::blocks(&meta) * 512;
            assert!(allocated < meta.len() / 2, "{allocated} bytes allocated");
        }
        (_, device, backing) => panic!("{kind} with {device:?} {backing:?}"),
    }
    write_and_read_back(fs.path());

    let remains = Remains::of(&fs);
    drop(fs);
    remains.assert_gone();
}

#[test]
fn ext4_mounts_is_writable_and_is_gone_after_drop() {
    testkit::require_root!();
    exercise(FsKind::Ext4);
}

#[test]
fn xfs_mounts_is_writable_and_is_gone_after_drop() {
    testkit::require_root!();
    exercise(FsKind::Xfs { reflink: false });
}

#[test]
fn xfs_reflink_mounts_is_writable_and_is_gone_after_drop() {
    testkit::require_root!();
    exercise(FsKind::Xfs { reflink: true });
}

#[test]
fn btrfs_mounts_is_writable_and_is_gone_after_drop() {
    testkit::require_root!();
    exercise(FsKind::Btrfs);
}

#[test]
fn tmpfs_mounts_is_writable_and_is_gone_after_drop() {
    testkit::require_root!();
    exercise(FsKind::Tmpfs);
}

#[test]
fn explicit_cleanup_reports_success_and_leaves_nothing() {
    testkit::require_root!();
    let leak = LeakCheck::start().unwrap();
    let fs = leak
        .scratch(FsKind::Ext4, FsKind::Ext4.small_size())
        .unwrap();
    assert!(fs.dir().starts_with(leak.dir()));
    write_and_read_back(fs.path());
    let remains = Remains::of(&fs);
    fs.cleanup().unwrap();
    remains.assert_gone();
    leak.assert_clean();
}

#[test]
fn a_panicking_test_still_cleans_up() {
    testkit::require_root!();
    let leak = LeakCheck::start().unwrap();
    let seen: Mutex<Option<(Remains, PathBuf)>> = Mutex::new(None);
    let result = std::panic::catch_unwind(|| {
        let fs = leak
            .scratch(FsKind::Ext4, FsKind::Ext4.small_size())
            .unwrap();
        let inner = fs.path().join("inner");
        std::fs::create_dir(&inner).unwrap();
        // A mount of the test's own on top, as an overlay would be.
        let _guard =
            MountGuard::mount("tmpfs", &inner, "tmpfs", MountFlags::empty(), None).unwrap();
        *seen.lock().unwrap() = Some((Remains::of(&fs), inner.clone()));
        panic!("deliberate panic inside a test");
    });
    assert!(result.is_err());
    let (remains, inner) = seen.into_inner().unwrap().unwrap();
    assert!(!is_mount_point(&inner));
    remains.assert_gone();
    leak.assert_clean();
}

#[test]
fn xfs_with_reflink_supports_ficlone() {
    testkit::require_root!();
    let fs = ScratchFs::new(FsKind::Xfs { reflink: true }, 300 << 20).unwrap();
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let original = fs.path().join("original");
    std::fs::write(&original, &data).unwrap();
    let src = File::open(&original).unwrap();
    let clone_path = fs.path().join("clone");
    let dst = File::create(&clone_path).unwrap();
    clone_file(&src, &dst).unwrap();
    drop(dst);
    assert_eq!(std::fs::read(&clone_path).unwrap(), data);

    // Writing the clone leaves the original alone (copy-on-write).
    let mut dst = OpenOptions::new().write(true).open(&clone_path).unwrap();
    dst.write_all(b"changed").unwrap();
    drop(dst);
    let mut back = Vec::new();
    File::open(&original)
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert_eq!(back, data);
}

#[test]
fn xfs_without_reflink_refuses_ficlone() {
    testkit::require_root!();
    let fs = ScratchFs::new(FsKind::Xfs { reflink: false }, 300 << 20).unwrap();
    let original = fs.path().join("original");
    std::fs::write(&original, [7u8; 65536]).unwrap();
    let src = File::open(&original).unwrap();
    let dst = File::create(fs.path().join("clone")).unwrap();
    let err = clone_file(&src, &dst).unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(nix::errno::Errno::EOPNOTSUPP as i32),
        "{err}"
    );
}

#[test]
fn three_scratch_fs_in_parallel_threads_do_not_collide() {
    testkit::require_root!();
    let start = Arc::new(Barrier::new(3));
    let written = Arc::new(Barrier::new(3));
    let threads: Vec<_> = (0..3)
        .map(|n| {
            let (start, written) = (start.clone(), written.clone());
            std::thread::spawn(move || {
                start.wait();
                let fs = ScratchFs::new(FsKind::Ext4, 32 << 20).unwrap();
                std::fs::write(fs.path().join(format!("thread-{n}")), b"x").unwrap();
                written.wait();
                // Each filesystem holds its own marker and no other.
                let names: Vec<String> = std::fs::read_dir(fs.path())
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|name| name.starts_with("thread-"))
                    .collect();
                assert_eq!(names, [format!("thread-{n}")]);
                let ids = (fs.dir().to_path_buf(), fs.device().unwrap().to_path_buf());
                let remains = Remains::of(&fs);
                drop(fs);
                remains.assert_gone();
                ids
            })
        })
        .collect();
    let ids: Vec<(PathBuf, PathBuf)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for (i, a) in ids.iter().enumerate() {
        for b in &ids[i + 1..] {
            assert_ne!(a.0, b.0, "same scratch dir");
            assert_ne!(a.1, b.1, "same loop device");
        }
    }
}

#[test]
fn mkfs_failure_is_one_line_naming_tool_device_and_stderr() {
    testkit::require_root!();
    let leak = LeakCheck::start().unwrap();
    // xfs refuses a 16 MiB filesystem.
    let err = leak
        .scratch(FsKind::Xfs { reflink: false }, 16 << 20)
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, TestkitError::Mkfs { .. }), "{message}");
    assert!(!message.contains('\n'), "{message}");
    assert!(message.starts_with("mkfs.xfs on /dev/loop"), "{message}");
    // mkfs.xfs's cause ("must be larger than 300MB"), not its usage text.
    let cause = message.split_once("): ").unwrap().1;
    assert!(!cause.is_empty() && !cause.contains("Usage"), "{message}");
    // The half-made scratch fs is gone: no loop device, no dir.
    leak.assert_clean();
}

#[test]
fn mount_guard_unmounts_and_detaches_a_busy_mount() {
    testkit::require_root!();
    let leak = LeakCheck::start().unwrap();
    let target = leak.dir().join("busy");
    std::fs::create_dir(&target).unwrap();

    let guard = MountGuard::mount("tmpfs", &target, "tmpfs", MountFlags::empty(), None).unwrap();
    assert!(is_mount_point(guard.path()));
    drop(guard);
    assert!(!is_mount_point(&target));

    mount("tmpfs", &target, "tmpfs", MountFlags::empty(), None).unwrap();
    let guard = MountGuard::new(&target);
    // An open file keeps it busy: plain unmount fails, MNT_DETACH works.
    let mut open = File::create(target.join("held")).unwrap();
    assert_eq!(guard.unmount().unwrap(), Unmounted::Detached);
    assert!(!is_mount_point(&target));
    open.write_all(b"still usable").unwrap();
    drop(open);
    leak.assert_clean();
}

#[test]
fn leak_check_reports_what_a_test_leaves_behind() {
    testkit::require_root!();
    let leak = LeakCheck::start().unwrap().settle(Duration::ZERO);
    let target = leak.dir().join("leaked");
    std::fs::create_dir(&target).unwrap();
    mount("tmpfs", &target, "tmpfs", MountFlags::empty(), None).unwrap();
    let backing = leak.dir().join("leaked.img");
    File::create(&backing).unwrap().set_len(1 << 20).unwrap();
    let device = LoopDevice::attach(&backing, LoopOptions::default()).unwrap();

    let message = leak.check().unwrap_err().to_string();
    assert!(
        message.contains(&format!("mount {}", target.display())),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "loop device {} on {}",
            device.path().display(),
            backing.display()
        )),
        "{message}"
    );

    device.detach().unwrap();
    MountGuard::new(&target).unmount().unwrap();
    leak.assert_clean();
}

#[test]
fn leak_check_ignores_mounts_and_loops_of_other_tests() {
    testkit::require_root!();
    let leak = LeakCheck::start().unwrap();
    // Made after the check started, but not in its scope: another test's.
    let other = ScratchFs::new(FsKind::Ext4, FsKind::Ext4.small_size()).unwrap();
    assert!(leak.leaks().is_empty(), "{:?}", leak.leaks());
    leak.assert_clean();
    drop(other);
}

#[test]
fn leak_check_watches_a_dir_the_test_owns() {
    testkit::require_root!();
    let owned = tempfile::Builder::new()
        .prefix("layerscope-test-")
        .tempdir_in("/tmp")
        .unwrap();
    let mut leak = LeakCheck::start().unwrap();
    leak.watch(owned.path());
    let target = owned.path().join("m");
    std::fs::create_dir(&target).unwrap();
    let guard = MountGuard::mount("tmpfs", &target, "tmpfs", MountFlags::empty(), None).unwrap();
    assert_eq!(leak.leaks().len(), 1);
    drop(guard);
    leak.assert_clean();
}

#[test]
fn require_root_passes_as_root() {
    if nix::unistd::Uid::effective().is_root() {
        assert!(require_root("require_root_passes_as_root"));
    }
}
