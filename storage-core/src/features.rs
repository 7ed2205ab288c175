//! What the running kernel supports, each feature probed for real (a mount,
//! an ioctl, a program load), never read from a version number. The report
//! line type [`Feature`] is shared with ebpf-probes, which adds the BPF lines;
//! [`probe_storage`] owns the storage lines (overlay and its options, loop,
//! xfs, btrfs, ext4 reflink, FUSE, aufs, dm-thin-pool).
//!
//! Every probe works in its own scratch directory under /var/tmp (or the
//! temp dir) and undoes what it did even on error: mounts are unmounted
//! (lazily as a last resort), loop devices detached, scratch removed.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Serialize;

use crate::sys::devmapper::{self, DmControl};
use crate::sys::fuse::{self, FuseDev};
use crate::sys::loopdev::{LoopDevice, LoopOptions};
use crate::sys::mount::{self, MountError, MountFlags};
use crate::sys::reflink;

/// One line of `layerscope doctor`: a feature, whether this kernel has it,
/// and for a "no" the reason (the failing call and its error).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Feature {
    pub name: String,
    pub supported: bool,
    /// Why not, or what was found (e.g. the overlay options accepted).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl Feature {
    pub fn yes(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            supported: true,
            detail: String::new(),
        }
    }

    pub fn no(name: impl Into<String>, why: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            supported: false,
            detail: why.into(),
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

impl std::fmt::Display for Feature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let answer = if self.supported { "yes" } else { "no" };
        if self.detail.is_empty() {
            write!(f, "{}: {answer}", self.name)
        } else {
            write!(f, "{}: {answer} ({})", self.name, self.detail)
        }
    }
}

/// The errno name of an OS error (`EPERM`, `ENODEV`, ...), else its message.
pub fn errno_name(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(code) => errno_code_name(code),
        None => err.to_string(),
    }
}

/// The name of errno `code`, including the kernel-internal ones that BPF and
/// NFS leak to user space (524 is ENOTSUPP, not EOPNOTSUPP).
pub fn errno_code_name(code: i32) -> String {
    match code {
        512 => "ERESTARTSYS".into(),
        524 => "ENOTSUPP".into(),
        _ => match nix::errno::Errno::from_raw(code) {
            nix::errno::Errno::UnknownErrno => format!("errno {code}"),
            errno => format!("{errno:?}"),
        },
    }
}

/// One failed step of a probe: the call and why, e.g. `FICLONE: EOPNOTSUPP`
/// (also used by ebpf-probes' BPF probes).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{call}: {cause}")]
pub struct Failed {
    pub call: String,
    pub cause: String,
}

impl Failed {
    pub fn new(call: impl Into<String>, cause: impl Into<String>) -> Self {
        Self {
            call: call.into(),
            cause: cause.into(),
        }
    }

    pub fn io(call: impl Into<String>, err: &io::Error) -> Self {
        Self::new(call, errno_name(err))
    }

    fn mount(fstype: &str, options: &str, err: &MountError) -> Self {
        let call = if options.is_empty() {
            format!("mount -t {fstype}")
        } else {
            format!("mount -t {fstype} -o {options}")
        };
        Self::new(call, format!("{:?}", err.source))
    }
}

type Step<T> = Result<T, Failed>;

/// Probes every storage feature, independent ones in parallel threads.
pub fn probe_storage() -> Vec<Feature> {
    type Probe = fn() -> Vec<Feature>;
    let probes: [(&[&str], Probe); 8] = [
        (&OVERLAY_NAMES, probe_overlay),
        (&["loop"], || vec![probe_loop()]),
        (&["xfs", "xfs.reflink"], probe_xfs),
        (&["btrfs", "btrfs.reflink"], probe_btrfs),
        (&["ext4.reflink"], probe_ext4),
        (&["fuse", "fuse.passthrough"], probe_fuse),
        (&["aufs"], || vec![probe_aufs()]),
        (&["dm-thin-pool"], || vec![probe_dm_thin_pool()]),
    ];
    std::thread::scope(|scope| {
        let handles: Vec<_> = probes
            .iter()
            .map(|(names, probe)| (names, scope.spawn(probe)))
            .collect();
        handles
            .into_iter()
            .flat_map(|(names, handle)| {
                handle.join().unwrap_or_else(|_| {
                    names
                        .iter()
                        .map(|name| Feature::no(*name, "probe panicked"))
                        .collect()
                })
            })
            .collect()
    })
}

// ---------------------------------------------------------------- scratch

/// A probe's scratch directory. It is removed on drop only once nothing is
/// mounted below it (leftover mounts are detached first): removing a
/// directory tree through a live mount would delete the mounted content.
struct Scratch {
    dir: Option<tempfile::TempDir>,
}

impl Scratch {
    fn new() -> Step<Self> {
        let builder = || {
            let mut b = tempfile::Builder::new();
            b.prefix("layerscope-probe-");
            b
        };
        let dir = builder()
            .tempdir_in("/var/tmp")
            .or_else(|_| builder().tempdir())
            .map_err(|e| Failed::io("create scratch dir", &e))?;
        Ok(Self { dir: Some(dir) })
    }

    fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("/"))
    }

    fn subdir(&self, name: &str) -> Step<PathBuf> {
        let path = self.path().join(name);
        fs::create_dir_all(&path)
            .map_err(|e| Failed::io(format!("mkdir {}", path.display()), &e))?;
        Ok(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        let mut leftovers = mounts_under(dir.path());
        leftovers.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for target in &leftovers {
            let _ = mount::unmount_detach(target);
        }
        if !mounts_under(dir.path()).is_empty() {
            tracing::warn!(path = %dir.path().display(), "probe scratch still has mounts; kept");
            let _ = dir.keep();
        }
    }
}

/// Mount points at or below `dir`, from /proc/self/mountinfo.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(mount::unescape_mountinfo(field)))
        .filter(|path| path.starts_with(dir))
        .collect()
}

/// The superblock options of the mount at `target` (the last field of its
/// /proc/self/mountinfo line).
fn super_options(target: &Path) -> Option<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines()
        .rfind(|line| {
            line.split(' ')
                .nth(4)
                .is_some_and(|f| Path::new(&mount::unescape_mountinfo(f)) == target)
        })
        .and_then(|line| line.rsplit(' ').next())
        .map(str::to_owned)
}

/// A mount that is undone on drop (lazily if a plain unmount fails).
struct Mounted(PathBuf);

impl Mounted {
    fn new(source: &str, target: &Path, fstype: &str, data: &str) -> Step<Self> {
        let options = (!data.is_empty()).then_some(data);
        mount::mount(source, target, fstype, MountFlags::empty(), options)
            .map_err(|e| Failed::mount(fstype, data, &e))?;
        Ok(Self(target.to_path_buf()))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if mount::unmount(&self.0).is_err() {
            let _ = mount::unmount_detach(&self.0);
        }
    }
}

/// Finds a program on PATH or in the sbin directories a non-root PATH lacks.
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn run_tool(name: &str, args: &[&str], device: &Path) -> Step<()> {
    let tool = find_tool(name).ok_or_else(|| Failed::new(name, "not installed"))?;
    let output = Command::new(tool)
        .args(args)
        .arg(device)
        .output()
        .map_err(|e| Failed::io(name, &e))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
    Err(Failed::new(
        name,
        format!("{}: {}", output.status, last.trim()),
    ))
}

// ---------------------------------------------------------------- overlay

const OVERLAY_NAMES: [&str; 5] = [
    "overlay",
    "overlay.index",
    "overlay.metacopy",
    "overlay.redirect_dir",
    "overlay.volatile",
];

/// Each option is tried with the option sets listed, in order; the first
/// that mounts (and shows up in the superblock options) wins.
const OVERLAY_OPTIONS: [(&str, &[&str]); 4] = [
    ("overlay.index", &["index=on"]),
    (
        "overlay.metacopy",
        &[
            "metacopy=on",
            "redirect_dir=on,metacopy=on",
            "index=on,redirect_dir=on,metacopy=on",
        ],
    ),
    ("overlay.redirect_dir", &["redirect_dir=on"]),
    ("overlay.volatile", &["volatile"]),
];

fn probe_overlay() -> Vec<Feature> {
    let scratch = match Scratch::new() {
        Ok(s) => s,
        Err(e) => {
            return OVERLAY_NAMES
                .map(|n| Feature::no(n, e.to_string()))
                .to_vec();
        }
    };
    let mut out = Vec::new();
    match overlay_base(&scratch) {
        Ok(()) => out.push(Feature::yes("overlay")),
        Err(e) => {
            out.push(Feature::no("overlay", e.to_string()));
            for name in &OVERLAY_NAMES[1..] {
                out.push(Feature::no(*name, "overlay does not mount"));
            }
            return out;
        }
    }
    for (index, (name, attempts)) in OVERLAY_OPTIONS.iter().enumerate() {
        let mut first_error = None;
        let mut accepted = None;
        for (attempt, options) in attempts.iter().enumerate() {
            match overlay_with(&scratch, &format!("opt{index}-{attempt}"), options) {
                Ok(()) => {
                    accepted = Some(*options);
                    break;
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        out.push(match (accepted, first_error) {
            (Some(_), None) => Feature::yes(*name),
            (Some(options), Some(_)) => Feature::yes(*name).with_detail(format!("needs {options}")),
            (None, error) => Feature::no(
                *name,
                error.map_or_else(|| "not tried".to_owned(), |e| e.to_string()),
            ),
        });
    }
    out
}

/// Creates `<name>/{lower,upper,work,merged}` with one lower file and
/// returns the overlay option string for them.
fn overlay_dirs(scratch: &Scratch, name: &str) -> Step<(String, PathBuf)> {
    let lower = scratch.subdir(&format!("{name}/lower"))?;
    let upper = scratch.subdir(&format!("{name}/upper"))?;
    let work = scratch.subdir(&format!("{name}/work"))?;
    let merged = scratch.subdir(&format!("{name}/merged"))?;
    fs::write(lower.join("file"), b"lower\n").map_err(|e| Failed::io("write lower file", &e))?;
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    Ok((data, merged))
}

/// Mounts a plain overlay and copies a lower file up by appending to it.
fn overlay_base(scratch: &Scratch) -> Step<()> {
    let (data, merged) = overlay_dirs(scratch, "base")?;
    let _mounted = Mounted::new("overlay", &merged, "overlay", &data)?;
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(merged.join("file"))
        .map_err(|e| Failed::io("open lower file for write (copy-up)", &e))?;
    file.write_all(b"upper\n")
        .map_err(|e| Failed::io("write after copy-up", &e))?;
    Ok(())
}

/// Mounts an overlay with `options` and checks the kernel kept them.
fn overlay_with(scratch: &Scratch, name: &str, options: &str) -> Step<()> {
    let (base, merged) = overlay_dirs(scratch, name)?;
    let _mounted = Mounted::new("overlay", &merged, "overlay", &format!("{base},{options}"))?;
    let shown = super_options(&merged).unwrap_or_default();
    let shown: Vec<&str> = shown.split(',').collect();
    for option in options.split(',') {
        // Kernels 6.x show `volatile` as `fsync=volatile`.
        let alias = (option == "volatile").then_some("fsync=volatile");
        if !shown.contains(&option) && !alias.is_some_and(|a| shown.contains(&a)) {
            return Err(Failed::new(
                format!("mount -t overlay -o {options}"),
                format!("mounted, but the kernel dropped {option}"),
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- loop and block filesystems

fn loop_failed(err: &crate::sys::loopdev::LoopError) -> Failed {
    Failed::io(format!("loop {}", err.what), &err.source)
}

fn probe_loop() -> Feature {
    let result = (|| -> Step<()> {
        let scratch = Scratch::new()?;
        let image = scratch.path().join("loop.img");
        fs::write(&image, [0x5a; 4096]).map_err(|e| Failed::io("write image", &e))?;
        let device =
            LoopDevice::attach(&image, LoopOptions::default()).map_err(|e| loop_failed(&e))?;
        let mut content = Vec::new();
        File::open(device.path())
            .and_then(|mut f| f.read_to_end(&mut content))
            .map_err(|e| Failed::io(format!("read {}", device.path().display()), &e))?;
        if content.len() != 4096 || content.iter().any(|&b| b != 0x5a) {
            return Err(Failed::new(
                "read loop device",
                "content differs from its backing file",
            ));
        }
        Ok(())
    })();
    match result {
        Ok(()) => Feature::yes("loop"),
        Err(e) => Feature::no("loop", e.to_string()),
    }
}

const MIB: u64 = 1024 * 1024;

/// A filesystem made on a loop device over a sparse image.
struct BlockFs {
    fstype: &'static str,
    mkfs: &'static str,
    /// Arguments before the device path.
    mkfs_args: &'static [&'static str],
    size: u64,
}

/// Makes and mounts `spec`, then reflinks one file to another. Returns the
/// mount result and the FICLONE result.
fn probe_block_fs(spec: &BlockFs) -> (Step<()>, Step<()>) {
    let scratch = match Scratch::new() {
        Ok(s) => s,
        Err(e) => return (Err(e.clone()), Err(e)),
    };
    let mounted = (|| -> Step<(LoopDevice, Mounted, PathBuf)> {
        let image = scratch.path().join(format!("{}.img", spec.fstype));
        File::create(&image)
            .and_then(|f| f.set_len(spec.size))
            .map_err(|e| Failed::io("create sparse image", &e))?;
        let device = LoopDevice::attach(
            &image,
            LoopOptions {
                autoclear: true,
                ..LoopOptions::default()
            },
        )
        .map_err(|e| loop_failed(&e))?;
        run_tool(spec.mkfs, spec.mkfs_args, device.path())?;
        let target = scratch.subdir("mnt")?;
        let source = device.path().to_string_lossy().into_owned();
        let mounted = Mounted::new(&source, &target, spec.fstype, "")?;
        Ok((device, mounted, target))
    })();
    let (device, mounted, target) = match mounted {
        Ok(m) => m,
        Err(e) => {
            let why = Failed::new(format!("{} unavailable", spec.fstype), e.to_string());
            return (Err(e), Err(why));
        }
    };
    let reflink = clone_check(&target);
    drop(mounted);
    drop(device);
    drop(scratch);
    (Ok(()), reflink)
}

/// Writes a file in `dir`, FICLONEs it to a second one and reads it back.
fn clone_check(dir: &Path) -> Step<()> {
    let data: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    let src_path = dir.join("src");
    let dst_path = dir.join("dst");
    fs::write(&src_path, &data).map_err(|e| Failed::io("write source", &e))?;
    let src = File::open(&src_path).map_err(|e| Failed::io("open source", &e))?;
    let dst = File::create(&dst_path).map_err(|e| Failed::io("create target", &e))?;
    reflink::clone_file(&src, &dst).map_err(|e| Failed::io("FICLONE", &e))?;
    drop((src, dst));
    let copy = fs::read(&dst_path).map_err(|e| Failed::io("read clone", &e))?;
    if copy != data {
        return Err(Failed::new("FICLONE", "clone content differs"));
    }
    Ok(())
}

fn block_fs_lines(spec: &BlockFs, with_fs_line: bool) -> Vec<Feature> {
    let (mounted, reflink) = probe_block_fs(spec);
    let reflink_name = format!("{}.reflink", spec.fstype);
    let mut out = Vec::new();
    if with_fs_line {
        out.push(match mounted {
            Ok(()) => Feature::yes(spec.fstype),
            Err(e) => Feature::no(spec.fstype, e.to_string()),
        });
    }
    out.push(match reflink {
        Ok(()) => Feature::yes(reflink_name),
        Err(e) => Feature::no(reflink_name, e.to_string()),
    });
    out
}

fn probe_xfs() -> Vec<Feature> {
    block_fs_lines(
        &BlockFs {
            fstype: "xfs",
            mkfs: "mkfs.xfs",
            // Current xfsprogs refuse filesystems under 300 MiB.
            mkfs_args: &["-q", "-f", "-K", "-m", "reflink=1"],
            size: 320 * MIB,
        },
        true,
    )
}

fn probe_btrfs() -> Vec<Feature> {
    block_fs_lines(
        &BlockFs {
            fstype: "btrfs",
            mkfs: "mkfs.btrfs",
            mkfs_args: &["-q", "-f", "-K"],
            size: 256 * MIB,
        },
        true,
    )
}

fn probe_ext4() -> Vec<Feature> {
    block_fs_lines(
        &BlockFs {
            fstype: "ext4",
            mkfs: "mkfs.ext4",
            mkfs_args: &["-q", "-F", "-E", "nodiscard"],
            size: 32 * MIB,
        },
        false,
    )
}

// ---------------------------------------------------------------- FUSE

/// Closes `/dev/fuse` (aborting the connection) before unmounting, so the
/// unmount never waits on a server that is not there.
struct FuseMount {
    dev: Option<FuseDev>,
    mounted: Option<Mounted>,
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        self.dev.take();
        self.mounted.take();
    }
}

fn probe_fuse() -> Vec<Feature> {
    let scratch = match Scratch::new() {
        Ok(s) => s,
        Err(e) => {
            return vec![
                Feature::no("fuse", e.to_string()),
                Feature::no("fuse.passthrough", e.to_string()),
            ];
        }
    };
    let mount = (|| -> Step<FuseMount> {
        let dev =
            FuseDev::open().map_err(|e| Failed::io(format!("open {}", fuse::DEVICE_PATH), &e))?;
        let target = scratch.subdir("mnt")?;
        let data = dev.mount_data();
        let mounted = mount::mount(
            "layerscope-probe",
            &target,
            "fuse",
            MountFlags::MS_NOSUID | MountFlags::MS_NODEV,
            Some(&data),
        )
        .map_err(|e| Failed::mount("fuse", "fd=N,rootmode=40000", &e));
        mounted?;
        Ok(FuseMount {
            dev: Some(dev),
            mounted: Some(Mounted(target)),
        })
    })();
    let mount = match mount {
        Ok(m) => m,
        Err(e) => {
            return vec![
                Feature::no("fuse", e.to_string()),
                Feature::no("fuse.passthrough", "fuse does not mount"),
            ];
        }
    };
    let passthrough = match mount.dev.as_ref() {
        Some(dev) => fuse_passthrough(dev, &scratch),
        None => Err(Failed::new("fuse", "no device")),
    };
    drop(mount);
    drop(scratch);
    vec![
        Feature::yes("fuse"),
        match passthrough {
            Ok(detail) => Feature::yes("fuse.passthrough").with_detail(detail),
            Err(e) => Feature::no("fuse.passthrough", e.to_string()),
        },
    ]
}

/// Answers the kernel's INIT asking for passthrough, then registers a
/// backing file: only a kernel with FUSE passthrough accepts both.
fn fuse_passthrough(dev: &FuseDev, scratch: &Scratch) -> Step<String> {
    let init = dev
        .read_init(Duration::from_secs(2))
        .map_err(|e| Failed::io("read FUSE_INIT", &e))?;
    let protocol = format!("protocol {}.{}", init.major, init.minor);
    if init.flags & fuse::FUSE_PASSTHROUGH == 0 {
        return Err(Failed::new(
            "FUSE_INIT",
            format!("kernel does not offer FUSE_PASSTHROUGH ({protocol})"),
        ));
    }
    dev.reply_init(&init, fuse::FUSE_PASSTHROUGH, 1)
        .map_err(|e| Failed::io("reply FUSE_INIT", &e))?;
    let backing_path = scratch.path().join("backing");
    let backing = File::create(&backing_path).map_err(|e| Failed::io("create backing file", &e))?;
    let id = dev
        .backing_open(&backing)
        .map_err(|e| Failed::io("FUSE_DEV_IOC_BACKING_OPEN", &e))?;
    dev.backing_close(id)
        .map_err(|e| Failed::io("FUSE_DEV_IOC_BACKING_CLOSE", &e))?;
    Ok(protocol)
}

// ---------------------------------------------------------------- aufs

fn probe_aufs() -> Feature {
    let result = (|| -> Step<()> {
        let scratch = Scratch::new()?;
        let branch = scratch.subdir("branch")?;
        let target = scratch.subdir("mnt")?;
        let data = format!("br={}=rw", branch.display());
        match mount::mount("none", &target, "aufs", MountFlags::empty(), Some(&data)) {
            Ok(()) => {
                drop(Mounted(target));
                Ok(())
            }
            Err(e) if e.source == nix::errno::Errno::ENODEV => {
                Err(Failed::new("mount -t aufs", "ENODEV, kernel has no aufs"))
            }
            Err(e) => Err(Failed::mount("aufs", "br=DIR=rw", &e)),
        }
    })();
    match result {
        Ok(()) => Feature::yes("aufs"),
        Err(e) => Feature::no("aufs", e.to_string()),
    }
}

// ---------------------------------------------------------------- device-mapper

/// The dm-thin-pool probe alone, for callers that need only it (the
/// devicemapper tests) and not every probe's mkfs and mounts.
pub fn probe_dm_thin_pool() -> Feature {
    const NAME: &str = "dm-thin-pool";
    match dm_thin_pool() {
        Ok(detail) => Feature::yes(NAME).with_detail(detail),
        Err(e) => Feature::no(NAME, e.to_string()),
    }
}

fn dm_thin_pool() -> Step<String> {
    let control = match DmControl::open(Path::new(devmapper::CONTROL_PATH)) {
        Ok(control) => control,
        Err(e) if e.kind() == io::ErrorKind::NotFound => dm_control_without_node()?,
        Err(e) => return Err(Failed::io(format!("open {}", devmapper::CONTROL_PATH), &e)),
    };
    let version = control
        .version()
        .map_err(|e| Failed::io("DM_VERSION", &e))?;
    let target = match control.target_version("thin-pool") {
        Ok(target) => Some(target),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => None,
        // Kernels before 4.18 lack DM_GET_TARGET_VERSION: list instead.
        Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => control
            .list_versions()
            .map_err(|e| Failed::io("DM_LIST_VERSIONS", &e))?
            .into_iter()
            .find(|t| t.name == "thin-pool"),
        Err(e) => return Err(Failed::io("DM_GET_TARGET_VERSION thin-pool", &e)),
    };
    let target = target.ok_or_else(|| {
        Failed::new(
            "DM_GET_TARGET_VERSION thin-pool",
            "EINVAL, kernel has no dm-thin-pool target (CONFIG_DM_THIN_PROVISIONING)",
        )
    })?;
    let [a, b, c] = target.version;
    let [x, y, z] = version;
    Ok(format!(
        "thin-pool {a}.{b}.{c}, device-mapper ioctl {x}.{y}.{z}"
    ))
}

/// No /dev/mapper/control (no udev, or no device-mapper): open the misc
/// device 10:236 through a node of our own, which also loads dm-mod.
fn dm_control_without_node() -> Step<DmControl> {
    let listed = |file: &str| {
        fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("device-mapper"))
    };
    let scratch = Scratch::new()?;
    let node = scratch.path().join("control");
    let dev = nix::sys::stat::makedev(devmapper::MISC_MAJOR, devmapper::MAPPER_CTRL_MINOR);
    nix::sys::stat::mknod(
        &node,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        dev,
    )
    .map_err(|e| Failed::new("mknod control 10:236", format!("{e:?}")))?;
    DmControl::open(&node).map_err(|e| {
        let lists = match (listed("/proc/misc"), listed("/proc/devices")) {
            (false, false) => "not in /proc/misc or /proc/devices",
            (true, _) => "listed in /proc/misc",
            (false, true) => "listed in /proc/devices only",
        };
        Failed::new(
            "kernel has no device-mapper",
            format!(
                "{} missing, {lists}, open(char 10:236): {}",
                devmapper::CONTROL_PATH,
                errno_name(&e)
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_names_include_kernel_internal_codes() {
        assert_eq!(
            errno_name(&io::Error::from_raw_os_error(libc::EPERM)),
            "EPERM"
        );
        assert_eq!(errno_code_name(524), "ENOTSUPP");
        assert_eq!(errno_code_name(libc::EOPNOTSUPP), "EOPNOTSUPP");
        assert_eq!(errno_code_name(4000), "errno 4000");
    }

    #[test]
    fn a_no_line_carries_its_reason() {
        let line = Feature::no("fentry", "bpf_prog_load: EPERM").to_string();
        assert_eq!(line, "fentry: no (bpf_prog_load: EPERM)");
        assert_eq!(Feature::yes("overlay").to_string(), "overlay: yes");
    }
}
