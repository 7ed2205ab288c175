//! `cargo xtask vm-test [FILTER...]`: runs privileged tests in a guest kernel
//! that has what the host lacks (dm-thin-pool, kprobes, fentry). It builds
//! the test binaries, packs them with busybox, the kernel modules they need
//! and the tools they call (mkfs.xfs, mkfs.ext4, mkfs.btrfs, with their
//! shared libraries) into an initramfs, boots Debian's kernel from /boot
//! with qemu (KVM when it works, else TCG), streams the serial console to
//! stdout and returns the guest tests' exit status. Hermetic: no network, a sparse scratch disk
//! (ext4, mounted on /var/tmp in the guest), everything under one temp dir
//! removed at the end, qemu killed on timeout.
//!
//! Each FILTER selects tests like `cargo test FILTER`; a test binary
//! whose target name equals a FILTER (e.g. `devmapper` for
//! tests/devmapper.rs) runs whole. Several filters share one guest boot:
//! `cargo xtask vm-test devmapper conformance`.
//!
//! The guest's environment: host variables named `LAYERSCOPE_*` and every
//! `--env KEY=VALUE`, over [`GUEST_ENV`] (the guest has no FUSE, so the
//! conformance suite runs its devicemapper case against overlay2 only).

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::run::{cargo, output};

/// Kernel modules the guest loads, dependencies first (modprobe order).
const MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "loop",
    "dm-thin-pool",
    "dm-snapshot",
    "overlay",
    "ext4",
    "xfs",
    "btrfs",
];
/// Host programs copied into the guest with their libraries, when present.
const TOOLS: &[&str] = &[
    "/usr/sbin/mkfs.xfs",
    "/usr/sbin/mkfs.ext4",
    "/usr/sbin/thin_check",
    "/usr/sbin/mkfs.btrfs",
];
/// Guest environment defaults, overridden by the host's `LAYERSCOPE_*`
/// variables and `--env`.
const GUEST_ENV: &[(&str, &str)] =
    &[("LAYERSCOPE_CONFORMANCE_CASES", "devicemapper,overlay2-ext4")];
const MARKER: &str = "LAYERSCOPE-VM-TEST-EXIT=";
const READY: &str = "layerscope-vm: init at";

#[derive(clap::Args)]
pub struct Args {
    /// Test filters (as `cargo test FILTER`), all run in one guest boot; a
    /// test target of that name runs whole.
    pub filters: Vec<String>,
    /// Extra guest environment, `KEY=VALUE` (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Packages whose tests are built.
    #[arg(long = "package", short = 'p', default_value = "storage-core")]
    pub packages: Vec<String>,
    /// Seconds before the guest is killed and the run fails.
    #[arg(long, default_value_t = 1200)]
    pub timeout: u64,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2048)]
    pub memory: u32,
    /// Sparse scratch disk size in GiB (ext4 on /var/tmp in the guest).
    #[arg(long, default_value_t = 16)]
    pub scratch_gib: u64,
}

/// A temp dir removed on drop, whatever happened.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// qemu, killed on drop unless it already exited.
struct Guest(Child);

impl Drop for Guest {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// A test binary and the filters it runs with (empty: all its tests).
struct TestBinary {
    name: String,
    path: PathBuf,
    filters: Vec<String>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let kernel_version = kernel_version()?;
    let vmlinuz = PathBuf::from(format!("/boot/vmlinuz-{kernel_version}"));
    let env = guest_env(&args.env)?;
    let binaries = build_tests(args)?;
    if binaries.is_empty() {
        bail!("vm-test: no test matches {:?}", args.filters);
    }
    for binary in &binaries {
        eprintln!(
            "vm-test: will run {} ({}) with filters {:?}",
            binary.name,
            binary.path.display(),
            binary.filters
        );
    }
    for (key, value) in &env {
        eprintln!("vm-test: guest env {key}={value}");
    }
    let temp = TempDir(std::env::temp_dir().join(format!("layerscope-vm-{}", std::process::id())));
    let _ = fs::remove_dir_all(&temp.0);
    let root = temp.0.join("initramfs");
    fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;

    let built = Instant::now();
    build_initramfs(&root, &kernel_version, &binaries, &env)?;
    let initrd = temp.0.join("initrd.cpio");
    pack_cpio(&root, &initrd)?;
    let scratch = temp.0.join("scratch.img");
    make_scratch(&scratch, args.scratch_gib)?;
    let initrd_mib = fs::metadata(&initrd)?.len() as f64 / (1 << 20) as f64;
    eprintln!(
        "vm-test: initramfs {initrd_mib:.0} MiB ({} test binaries) built in {:.1} s",
        binaries.len(),
        built.elapsed().as_secs_f64()
    );

    let mut outcome = None;
    for accel in ["kvm", "tcg"] {
        if accel == "kvm" && !Path::new("/dev/kvm").exists() {
            continue;
        }
        match boot(args, accel, &vmlinuz, &initrd, &scratch)? {
            Boot::AccelFailed(why) => {
                eprintln!("vm-test: {accel} unusable ({why}); trying the next")
            }
            Boot::Done(result) => {
                outcome = Some((accel, result));
                break;
            }
        }
    }
    let Some((accel, result)) = outcome else {
        bail!("vm-test: qemu could not start with kvm or tcg");
    };
    eprintln!(
        "vm-test: accel {accel}, guest init reached {:.1} s after qemu start (guest uptime {}), tests {:.1} s, vm-test total {:.1} s",
        result.boot.as_secs_f64(),
        result.guest_uptime.as_deref().unwrap_or("?"),
        result.tests.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    match result.status {
        0 => Ok(()),
        status => bail!("vm-test: guest tests failed (exit status {status})"),
    }
}

/// [`GUEST_ENV`], then the host's `LAYERSCOPE_*`, then `--env`.
fn guest_env(given: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let mut env: std::collections::BTreeMap<String, String> = GUEST_ENV
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (key, value) in std::env::vars() {
        if key.starts_with("LAYERSCOPE_") {
            env.insert(key, value);
        }
    }
    for pair in given {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("vm-test: --env {pair:?}: want KEY=VALUE");
        };
        env.insert(key.to_string(), value.to_string());
    }
    for (key, value) in &env {
        let safe = |s: &str| !s.contains(['\'', '\n', '\0']);
        if key.is_empty()
            || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            || !safe(value)
        {
            bail!(
                "vm-test: guest env {key}={value:?}: want KEY of [A-Za-z0-9_], VALUE without quotes or newlines"
            );
        }
    }
    Ok(env.into_iter().collect())
}

fn kernel_version() -> anyhow::Result<String> {
    let mut versions: Vec<String> = fs::read_dir("/boot")
        .context("cannot read /boot")?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let version = name.strip_prefix("vmlinuz-")?.to_string();
            Path::new("/lib/modules")
                .join(&version)
                .is_dir()
                .then_some(version)
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .context("vm-test: no /boot/vmlinuz-* with modules in /lib/modules (apt-get install linux-image-amd64)")
}

/// `cargo test --no-run --message-format=json`, then the binaries that
/// have tests matching the filter.
fn build_tests(args: &Args) -> anyhow::Result<Vec<TestBinary>> {
    let mut command = cargo();
    command.args(["test", "--no-run", "--message-format=json"]);
    for package in &args.packages {
        command.args(["-p", package]);
    }
    eprintln!(
        "+ cargo test --no-run --message-format=json -p {}",
        args.packages.join(" -p ")
    );
    let out = command
        .stderr(Stdio::inherit())
        .output()
        .context("cannot start cargo")?;
    if !out.status.success() {
        bail!("vm-test: building the tests failed ({})", out.status);
    }
    let mut binaries = Vec::new();
    let mut seen = BTreeSet::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if !line.contains("\"reason\":\"compiler-artifact\"") {
            continue;
        }
        let Some(executable) = json_string_after(line, "\"executable\":\"") else {
            continue;
        };
        let Some(name) = line
            .find("\"target\":{")
            .and_then(|at| json_string_after(&line[at..], "\"name\":\""))
        else {
            continue;
        };
        if !seen.insert(executable.clone()) {
            continue;
        }
        let path = PathBuf::from(executable);
        // A filter naming the target runs it whole; otherwise the filters
        // that select at least one of its tests.
        let filters = if args.filters.is_empty() || args.filters.contains(&name) {
            Vec::new()
        } else {
            let mut matching = Vec::new();
            for filter in &args.filters {
                let listed = output(Command::new(&path).args(["--list", filter]))?;
                if listed.lines().any(|l| l.ends_with(": test")) {
                    matching.push(filter.clone());
                }
            }
            if matching.is_empty() {
                continue;
            }
            matching
        };
        let listed = output(Command::new(&path).arg("--list"))?;
        if listed.lines().any(|l| l.ends_with(": test")) {
            binaries.push(TestBinary {
                name,
                path,
                filters,
            });
        }
    }
    Ok(binaries)
}

/// The JSON string value starting right after `key` (handles `\"` and `\\`).
fn json_string_after(text: &str, key: &str) -> Option<String> {
    let start = text.find(key)? + key.len();
    let mut value = String::new();
    let mut chars = text[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(value),
            '\\' => match chars.next()? {
                'n' => value.push('\n'),
                't' => value.push('\t'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

fn copy_into(root: &Path, file: &Path, dest: Option<&Path>) -> anyhow::Result<()> {
    let dest = root.join(dest.unwrap_or(file).strip_prefix("/").unwrap_or(file));
    if dest.exists() {
        return Ok(());
    }
    fs::create_dir_all(dest.parent().unwrap())?;
    fs::copy(file, &dest)
        .with_context(|| format!("cannot copy {} into the initramfs", file.display()))?;
    Ok(())
}

/// A file and every shared library `ldd` says it loads.
fn copy_with_libraries(root: &Path, file: &Path, dest: Option<&Path>) -> anyhow::Result<()> {
    copy_into(root, file, dest)?;
    let Ok(out) = Command::new("ldd").arg(file).output() else {
        return Ok(());
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            let path = Path::new(path);
            copy_into(root, path, None)?;
            // The loader is also looked up by its canonical path.
            if let Ok(real) = fs::canonicalize(path) {
                copy_into(root, &real, None)?;
            }
        }
    }
    Ok(())
}

fn build_initramfs(
    root: &Path,
    version: &str,
    binaries: &[TestBinary],
    env: &[(String, String)],
) -> anyhow::Result<()> {
    for dir in [
        "bin", "sbin", "proc", "sys", "dev", "tmp", "var/tmp", "root", "run", "etc", "tests",
    ] {
        fs::create_dir_all(root.join(dir))?;
    }
    copy_into(
        root,
        Path::new("/usr/bin/busybox"),
        Some(Path::new("/bin/busybox")),
    )
    .context("vm-test needs busybox-static")?;

    // Modules in modprobe's dependency order, each once.
    let shown = output(
        Command::new("modprobe")
            .args(["-a", "-S", version, "--show-depends"])
            .args(MODULES),
    )?;
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for line in shown.lines() {
        let Some(path) = line.strip_prefix("insmod ") else {
            continue;
        };
        let path = path.split_whitespace().next().unwrap_or("");
        if !seen.insert(path.to_string()) {
            continue;
        }
        let (dest, decompress) = match path.rsplit_once('.') {
            Some((stem, "xz")) => (stem.to_string(), Some("xz")),
            Some((stem, "zst")) => (stem.to_string(), Some("zstd")),
            _ => (path.to_string(), None),
        };
        let target = root.join(dest.trim_start_matches('/'));
        fs::create_dir_all(target.parent().unwrap())?;
        match decompress {
            Some(tool) => {
                let bytes = Command::new(tool).args(["-dc", path]).output()?;
                if !bytes.status.success() {
                    bail!("vm-test: {tool} -dc {path} failed");
                }
                fs::write(&target, bytes.stdout)?;
            }
            None => {
                fs::copy(path, &target).with_context(|| format!("cannot copy {path}"))?;
            }
        }
        order.push(dest);
    }
    fs::write(root.join("modules.order"), order.join("\n") + "\n")?;

    for tool in TOOLS {
        if Path::new(tool).exists() {
            copy_with_libraries(root, Path::new(tool), None)?;
        }
    }
    let mut list = String::new();
    for binary in binaries {
        let file = binary
            .path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let dest = Path::new("/tests").join(&file);
        copy_with_libraries(root, &binary.path, Some(&dest))?;
        // Debug info is most of a test binary and of the guest's unpack
        // time; symbols stay, so backtraces still name functions.
        let _ = Command::new("strip")
            .arg("--strip-debug")
            .arg(root.join(dest.strip_prefix("/").unwrap_or(&dest)))
            .status();
        list.push_str(&format!("{file} {}\n", binary.filters.join(" ")));
    }
    fs::write(root.join("tests.list"), list)?;
    let exports: String = env
        .iter()
        .map(|(key, value)| format!("export {key}='{value}'\n"))
        .collect();
    fs::write(root.join("env.sh"), exports)?;
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    fs::write(root.join("etc/group"), "root:x:0:\n")?;

    let init = root.join("init");
    fs::write(&init, INIT)?;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// The guest's PID 1.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm /dev/mapper
mount -t tmpfs tmp /tmp
echo "layerscope-vm: init at $(cut -d' ' -f1 /proc/uptime) s uptime, kernel $(uname -r)"
while read -r module; do
    insmod "$module" 2>/dev/null || grep -q "^$(basename "$module" .ko | tr - _) " /proc/modules || echo "layerscope-vm: insmod $module failed"
done < /modules.order
mount -t debugfs none /sys/kernel/debug 2>/dev/null
mount -t tracefs none /sys/kernel/tracing 2>/dev/null
mount -o noinit_itable /dev/vda /var/tmp || echo "layerscope-vm: no scratch disk"
export TMPDIR=/var/tmp HOME=/root RUST_BACKTRACE=1 DM_DISABLE_UDEV=1
. /env.sh
cd /
status=0
while read -r binary filter; do
    echo "layerscope-vm: running $binary $filter"
    start=$(cut -d' ' -f1 /proc/uptime)
    /tests/$binary --test-threads=1 --nocapture $filter || status=$?
    echo "layerscope-vm: $binary took $start -> $(cut -d' ' -f1 /proc/uptime) s uptime"
done < /tests.list
echo "LAYERSCOPE-VM-TEST-EXIT=$status"
sync
umount /var/tmp 2>/dev/null
poweroff -f
"#;

fn pack_cpio(root: &Path, out: &Path) -> anyhow::Result<()> {
    let script = format!(
        "cd '{}' && find . -print0 | cpio --null -o -H newc --quiet > '{}'",
        root.display(),
        out.display()
    );
    crate::run::run(Command::new("sh").args(["-c", &script]))
}

fn make_scratch(path: &Path, gib: u64) -> anyhow::Result<()> {
    let file = fs::File::create(path)?;
    file.set_len(gib << 30)?;
    drop(file);
    output(
        Command::new("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-E",
                "nodiscard,lazy_itable_init=1",
                "-L",
                "scratch",
            ])
            .arg(path),
    )?;
    Ok(())
}

struct Finished {
    status: i32,
    boot: Duration,
    guest_uptime: Option<String>,
    tests: Duration,
}

enum Boot {
    /// qemu died before the guest said anything: try another accelerator.
    AccelFailed(String),
    Done(Finished),
}

fn boot(
    args: &Args,
    accel: &str,
    vmlinuz: &Path,
    initrd: &Path,
    scratch: &Path,
) -> anyhow::Result<Boot> {
    let mut command = Command::new("qemu-system-x86_64");
    command
        .args([
            "-accel",
            accel,
            "-cpu",
            if accel == "kvm" { "host" } else { "max" },
        ])
        .args(["-m", &args.memory.to_string(), "-smp", "2"])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 rdinit=/init loglevel=4"])
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=virtio,cache=unsafe",
            scratch.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!(
        "+ qemu-system-x86_64 -accel {accel} -m {} -smp 2 -nographic -no-reboot -nic none -kernel {} ...",
        args.memory,
        vmlinuz.display()
    );
    let started = Instant::now();
    let mut guest = Guest(command.spawn().context("cannot start qemu-system-x86_64")?);
    let (tx, rx) = mpsc::channel::<Option<String>>();
    let stdout = guest.0.stdout.take().unwrap();
    let stderr = guest.0.stderr.take().unwrap();
    let tx_err = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
            let line = String::from_utf8_lossy(&line)
                .trim_end_matches('\r')
                .to_string();
            if tx.send(Some(line)).is_err() {
                return;
            }
        }
        let _ = tx.send(None);
    });
    let stderr_lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = stderr_lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("qemu: {line}");
            keep.lock().unwrap().push(line);
        }
        drop(tx_err);
    });

    let deadline = started + Duration::from_secs(args.timeout);
    let mut saw_output = false;
    let mut boot = None;
    let mut guest_uptime = None;
    let mut status = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            drop(guest);
            bail!(
                "vm-test: guest timed out after {} s (qemu killed)",
                args.timeout
            );
        }
        match rx.recv_timeout(left.min(Duration::from_secs(1))) {
            Ok(Some(line)) => {
                saw_output = true;
                println!("{line}");
                if boot.is_none() && line.contains(READY) {
                    boot = Some(started.elapsed());
                    guest_uptime = line
                        .split(READY)
                        .nth(1)
                        .and_then(|rest| rest.split_whitespace().next())
                        .map(|s| format!("{s} s"));
                }
                if let Some(code) = line.trim().strip_prefix(MARKER) {
                    status = code.trim().parse::<i32>().ok();
                }
            }
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Ok(Some(_)) = guest.0.try_wait() {
                    // Drain what is left, then stop.
                    while let Ok(Some(line)) = rx.recv_timeout(Duration::from_millis(200)) {
                        println!("{line}");
                        if let Some(code) = line.trim().strip_prefix(MARKER) {
                            status = code.trim().parse::<i32>().ok();
                        }
                    }
                    break;
                }
            }
        }
    }
    let exit = guest.0.wait().context("waiting for qemu")?;
    if !saw_output && !exit.success() {
        let why = stderr_lines.lock().unwrap().join(" ");
        return Ok(Boot::AccelFailed(format!("{exit}: {}", why.trim())));
    }
    let Some(status) = status else {
        bail!("vm-test: guest stopped without reporting a test status (qemu {exit})");
    };
    let boot = boot.unwrap_or_default();
    Ok(Boot::Done(Finished {
        status,
        boot,
        guest_uptime,
        tests: started.elapsed().saturating_sub(boot),
    }))
}
