//! The aufs driver on layerscope's FUSE union, as root with real mounts:
//! aufs lookup and whiteout rules on a 3-branch stack, copy-up, renames,
//! hard links, a busybox container root, and get/put across two processes
//! with the union served by a detached helper process.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use storage_core::driver::aufs::Aufs;
use storage_core::driver::{CreateOpts, Driver, DriverOptions};
use storage_core::sys::{mount, xattr};
use testkit::{FsKind, ScratchFs};

const CHILD_ENV: &str = "AUFS_TEST_CHILD";

/// The helper entry point of this test binary: the driver under test
/// re-executes the binary with `--exact aufs_union_serve_helper`.
#[test]
fn aufs_union_serve_helper() {
    if let Some(result) = storage_core::unionfs::serve_from_env() {
        if let Err(e) = result {
            eprintln!("union helper: {e}");
            std::process::exit(1);
        }
        std::process::exit(0);
    }
}

/// The second process of `get_put_across_processes`.
#[test]
fn aufs_union_child_get_put() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (root, id) = spec.split_once('\n').unwrap();
    let driver = open_driver(Path::new(root), &helper_options());
    let merged = driver.get(id).unwrap();
    assert_eq!(fs::read_to_string(merged.join("a")).unwrap(), "mid\n");
    fs::write(merged.join("from-child"), "child\n").unwrap();
    driver.put(id).unwrap();
    std::process::exit(0);
}

fn helper_options() -> DriverOptions {
    let exe = std::env::current_exe().unwrap();
    let mut storage_opt = BTreeMap::new();
    storage_opt.insert(
        "aufs.helper".to_string(),
        format!(
            "{} --exact aufs_union_serve_helper --nocapture --test-threads=1",
            exe.display()
        ),
    );
    DriverOptions { storage_opt }
}

fn thread_options() -> DriverOptions {
    let mut storage_opt = BTreeMap::new();
    storage_opt.insert("aufs.fuse".to_string(), "thread".to_string());
    DriverOptions { storage_opt }
}

fn open_driver(root: &Path, options: &DriverOptions) -> Aufs {
    Aufs::open(&root.join("aufs"), options).expect("open aufs driver")
}

/// A scratch ext4 with a 3-branch stack: base <- mid <- rw. Unmounts every
/// union (and stops helpers) before the filesystem goes away.
struct Stack {
    driver: Aufs,
    scratch: Option<ScratchFs>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.driver.cleanup();
        let mnt = self.driver.home().join("mnt");
        let left: Vec<PathBuf> = fs::read_dir(&mnt)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        for path in &left {
            if mount::is_mount_point(path) {
                let _ = mount::unmount_detach(path);
            }
        }
        if let Some(scratch) = self.scratch.take() {
            let _ = scratch.cleanup();
        }
    }
}

fn write(path: &Path, contents: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, contents).unwrap();
}

fn stack(options: &DriverOptions) -> Option<Stack> {
    if !testkit::require_root("aufs_union") {
        return None;
    }
    if !testkit::feature_available(Path::new("/dev/fuse").exists(), "FUSE", "/dev/fuse missing") {
        return None;
    }
    let scratch = ScratchFs::new(FsKind::Ext4, 256 << 20).expect("scratch ext4");
    let driver = open_driver(scratch.path(), options);
    driver.create("base", None, &CreateOpts::default()).unwrap();
    driver
        .create("mid", Some("base"), &CreateOpts::default())
        .unwrap();
    driver
        .create_rw("rw", Some("mid"), &CreateOpts::default())
        .unwrap();
    let base = driver.diff_dir("base");
    write(&base.join("a"), "base\n");
    write(&base.join("d/x"), "x\n");
    write(&base.join("d/y"), "y\n");
    write(&base.join("o/p"), "p\n");
    write(&base.join("h"), "hidden\n");
    write(&base.join("ren/dir/f"), "f\n");
    write(&base.join("gone/g"), "g\n");
    write(&base.join("etc/lowerfile"), "lower\n");
    write(&base.join("etc/keep"), "keep\n");
    let x = base.join("d/x");
    fs::set_permissions(&x, fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::lchown(&x, Some(1234), Some(5678)).unwrap();
    xattr::lset(&x, "user.origin", b"base").unwrap();
    let mid = driver.diff_dir("mid");
    write(&mid.join("a"), "mid\n");
    write(&mid.join(".wh.h"), "");
    write(&mid.join("o/.wh..wh..opq"), "");
    write(&mid.join("o/q"), "q\n");
    write(&mid.join("d/z"), "z\n");
    write(&mid.join(".wh..wh.plnk/junk"), "");
    write(&mid.join(".wh.gone"), "");
    watchdog(driver.mount_dir("rw"));
    Some(Stack {
        driver,
        scratch: Some(scratch),
    })
}

/// A hung FUSE request would block the test forever in the kernel: after
/// two minutes, force-unmount (MNT_FORCE aborts the connection) so the
/// test fails instead.
fn watchdog(mnt: PathBuf) {
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(120));
        if mount::is_mount_point(&mnt) {
            eprintln!("watchdog: aborting the union on {}", mnt.display());
            let _ = nix::mount::umount2(&mnt, nix::mount::MntFlags::MNT_FORCE);
        }
    });
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn errno_of(result: std::io::Result<()>) -> i32 {
    result.unwrap_err().raw_os_error().unwrap()
}

#[test]
fn lookup_readdir_whiteouts_and_opaque_dirs() {
    let Some(stack) = stack(&thread_options()) else {
        return;
    };
    let merged = stack.driver.get("rw").unwrap();
    assert!(mount::is_mount_point(&merged));
    assert_eq!(fs::read_to_string(merged.join("a")).unwrap(), "mid\n");
    assert!(!merged.join("h").exists(), "whiteout in mid hides base's h");
    assert!(!merged.join("gone").exists(), "whiteout hides a whole dir");
    assert!(
        !merged.join(".wh.h").exists(),
        "whiteouts are never visible"
    );
    assert_eq!(
        names(&merged.join("o")),
        ["q"],
        "opaque dir hides base's o/p"
    );
    assert_eq!(names(&merged.join("d")), ["x", "y", "z"]);
    assert_eq!(
        names(&merged),
        ["a", "d", "etc", "o", "ren"],
        "merged root without whiteouts or internals"
    );
    let x = fs::metadata(merged.join("d/x")).unwrap();
    assert_eq!((x.mode() & 0o7777, x.uid(), x.gid()), (0o640, 1234, 5678));
    // statfs is the rw branch's filesystem.
    let union = nix::sys::statvfs::statvfs(&merged).unwrap();
    let rw = nix::sys::statvfs::statvfs(&stack.driver.diff_dir("rw")).unwrap();
    assert_eq!(union.blocks(), rw.blocks());
    // mmap reads work (python's mmap over the union).
    if Path::new("/usr/bin/python3").exists() {
        let out = Command::new("/usr/bin/python3")
            .args([
                "-c",
                "import mmap,sys; f=open(sys.argv[1],'rb'); m=mmap.mmap(f.fileno(),0,prot=mmap.PROT_READ); sys.stdout.write(m[:].decode())",
            ])
            .arg(merged.join("d/z"))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "z\n", "{out:?}");
    }
    stack.driver.put("rw").unwrap();
    assert!(!mount::is_mount_point(&merged));
}

#[test]
fn copy_up_whiteouts_renames_and_links() {
    let Some(stack) = stack(&thread_options()) else {
        return;
    };
    let d = &stack.driver;
    let merged = d.get("rw").unwrap();
    let rw = d.diff_dir("rw");
    let base = d.diff_dir("base");

    // Write: copy-up keeping mode, owner, xattrs; the lower stays intact.
    let before = fs::metadata(base.join("d/x")).unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(merged.join("d/x"))
        .unwrap();
    let up = fs::metadata(rw.join("d/x")).unwrap();
    assert_eq!((up.mode(), up.uid(), up.gid()), (before.mode(), 1234, 5678));
    assert_eq!(up.mtime(), before.mtime());
    assert_eq!(
        xattr::lget(&rw.join("d/x"), "user.origin")
            .unwrap()
            .as_deref(),
        Some(&b"base"[..])
    );
    fs::write(merged.join("d/x"), "new x\n").unwrap();
    assert_eq!(fs::read_to_string(merged.join("d/x")).unwrap(), "new x\n");
    assert_eq!(fs::read_to_string(base.join("d/x")).unwrap(), "x\n");
    // chmod, truncate, utimes, setxattr copy up.
    fs::set_permissions(merged.join("d/y"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(fs::metadata(rw.join("d/y")).unwrap().mode() & 0o777, 0o600);
    fs::OpenOptions::new()
        .write(true)
        .open(merged.join("d/z"))
        .unwrap()
        .set_len(1)
        .unwrap();
    assert_eq!(fs::read_to_string(rw.join("d/z")).unwrap(), "z");
    assert_eq!(
        fs::read_to_string(d.diff_dir("mid").join("d/z")).unwrap(),
        "z\n"
    );
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    fs::File::options()
        .write(true)
        .open(merged.join("a"))
        .unwrap()
        .set_modified(t)
        .unwrap();
    assert_eq!(fs::metadata(rw.join("a")).unwrap().mtime(), 1_000_000);
    xattr::lset(&merged.join("etc/keep"), "user.k", b"v").unwrap();
    assert!(rw.join("etc/keep").exists());

    // unlink / rmdir of lower entries leave whiteouts.
    fs::remove_file(merged.join("etc/lowerfile")).unwrap();
    assert!(!merged.join("etc/lowerfile").exists());
    assert!(rw.join("etc/.wh.lowerfile").is_file());
    fs::remove_dir(merged.join("o")).unwrap_err();
    fs::remove_file(merged.join("o/q")).unwrap();
    fs::remove_dir(merged.join("o")).unwrap();
    assert!(rw.join(".wh.o").exists());
    assert!(!merged.join("o").exists());
    // mkdir over the whiteout: an opaque dir, lower contents stay hidden.
    fs::create_dir(merged.join("o")).unwrap();
    assert!(!rw.join(".wh.o").exists());
    assert!(rw.join("o/.wh..wh..opq").exists());
    assert!(names(&merged.join("o")).is_empty());

    // rename of a lower file: copy-up plus a whiteout of the source.
    fs::rename(merged.join("d/y"), merged.join("y2")).unwrap();
    assert_eq!(fs::read_to_string(merged.join("y2")).unwrap(), "y\n");
    assert!(!merged.join("d/y").exists());
    assert!(rw.join("d/.wh.y").exists());
    // a directory with lower parts: EXDEV, as aufs.
    let exdev = errno_of(fs::rename(merged.join("ren"), merged.join("ren2")));
    assert_eq!(exdev, libc::EXDEV);
    // rw-only directories rename in place.
    fs::create_dir(merged.join("newdir")).unwrap();
    fs::write(merged.join("newdir/f"), "nf").unwrap();
    fs::rename(merged.join("newdir"), merged.join("newdir2")).unwrap();
    assert_eq!(fs::read_to_string(merged.join("newdir2/f")).unwrap(), "nf");

    // create/symlink/mknod in rw, removing a matching whiteout.
    fs::write(merged.join("etc/lowerfile"), "again\n").unwrap();
    assert!(!rw.join("etc/.wh.lowerfile").exists());
    assert_eq!(
        fs::read_to_string(merged.join("etc/lowerfile")).unwrap(),
        "again\n"
    );
    std::os::unix::fs::symlink("a", merged.join("link-to-a")).unwrap();
    assert_eq!(
        fs::read_to_string(merged.join("link-to-a")).unwrap(),
        "mid\n"
    );
    nix::unistd::mkfifo(
        &merged.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(
        &fs::symlink_metadata(rw.join("fifo")).unwrap().file_type()
    ));
    // reserved names cannot be created.
    assert!(fs::write(merged.join(".wh.evil"), "").is_err());

    // hard link of a lower file: copied up, linked in rw.
    fs::hard_link(merged.join("d/z"), merged.join("z-link")).unwrap();
    let (a, b) = (
        fs::metadata(rw.join("d/z")).unwrap(),
        fs::metadata(rw.join("z-link")).unwrap(),
    );
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
    assert_eq!(fs::metadata(merged.join("z-link")).unwrap().nlink(), 2);
    fs::write(merged.join("z-link"), "shared").unwrap();
    assert_eq!(fs::read_to_string(merged.join("d/z")).unwrap(), "shared");

    // The union's view matches what the driver reports.
    let changes: Vec<String> = d
        .changes("rw", Some("mid"))
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    for expected in [
        "C /d/x",
        "D /d/y",
        "A /y2",
        "C /o",
        "D /o/p",
        "D /o/q",
        "A /fifo",
        "D /etc/.wh.lowerfile",
    ] {
        if expected == "D /etc/.wh.lowerfile" {
            assert!(!changes.iter().any(|c| c.contains(".wh.")), "{changes:?}");
            continue;
        }
        assert!(
            changes.iter().any(|c| c == expected),
            "{expected} missing from {changes:?}"
        );
    }
    d.put("rw").unwrap();
    assert!(!mount::is_mount_point(&merged));
    // What was written survives the unmount and a remount.
    let merged = d.get("rw").unwrap();
    assert_eq!(fs::read_to_string(merged.join("d/x")).unwrap(), "new x\n");
    assert!(!merged.join("etc/.wh.lowerfile").exists());
    d.put("rw").unwrap();
}

#[test]
fn busybox_container_root() {
    let busybox = Path::new("/bin/busybox");
    let Some(stack) = stack(&thread_options()) else {
        return;
    };
    assert!(busybox.exists(), "busybox-static is a CI dependency");
    let base = stack.driver.diff_dir("base");
    fs::create_dir_all(base.join("bin")).unwrap();
    fs::copy(busybox, base.join("bin/busybox")).unwrap();
    for applet in ["sh", "ls", "cat", "rm", "echo"] {
        std::os::unix::fs::symlink("busybox", base.join("bin").join(applet)).unwrap();
    }
    let merged = stack.driver.get("rw").unwrap();
    let out = Command::new("chroot")
        .arg(&merged)
        .args([
            "/bin/busybox",
            "sh",
            "-c",
            "echo hello > /new && rm /etc/lowerfile && ls /etc && cat /new && mkdir /tmpdir && touch /tmpdir/t && ls /tmpdir",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "keep\nhello\nt\n");
    let rw = stack.driver.diff_dir("rw");
    assert_eq!(fs::read_to_string(rw.join("new")).unwrap(), "hello\n");
    assert!(rw.join("etc/.wh.lowerfile").exists());
    assert!(base.join("etc/lowerfile").exists());
    stack.driver.put("rw").unwrap();
}

#[test]
fn get_put_across_processes_with_helper() {
    let Some(stack) = stack(&helper_options()) else {
        return;
    };
    let d = &stack.driver;
    let merged = d.get("rw").unwrap();
    let pid: u32 = fs::read_to_string(d.pid_file("rw"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(pid, std::process::id(), "served by a helper process");
    let root = d.home().parent().unwrap().to_path_buf();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "aufs_union_child_get_put",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{}\nrw", root.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "child: {out:?}");
    assert!(
        mount::is_mount_point(&merged),
        "the child's put keeps our reference"
    );
    assert_eq!(
        fs::read_to_string(merged.join("from-child")).unwrap(),
        "child\n"
    );
    d.put("rw").unwrap();
    assert!(!mount::is_mount_point(&merged));
    assert!(!d.pid_file("rw").exists());
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists()
            || fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z"),
        "helper {pid} still running"
    );
    // A mount left by a process that exited is released by the next put.
    let merged = d.get("rw").unwrap();
    let other = open_driver(&root, &helper_options());
    other.put("rw").unwrap();
    assert!(!mount::is_mount_point(&merged));
    let _ = d.put("rw");
    assert_eq!(OsStr::new("rw"), "rw");
}
