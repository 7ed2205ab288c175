//! `cargo xtask deps`: the Debian packages layerscope needs, installed with
//! apt-get only when missing. Idempotent, and silent when all are present.

use std::process::Command;

use anyhow::bail;

use crate::run::{output, run as run_command};

/// Every system package, with what needs it.
pub const PACKAGES: &[(&str, &str)] = &[
    ("clang", "compiles the BPF programs"),
    ("llvm", "llvm-strip and llvm-objdump for BPF objects"),
    ("libbpf-dev", "bpf_helpers.h for the BPF programs"),
    ("bpftool", "vmlinux.h from the kernel's BTF"),
    ("e2fsprogs", "ext4 scratch and benchmark filesystems"),
    ("xfsprogs", "xfs (reflink) filesystems"),
    ("btrfs-progs", "the btrfs driver"),
    ("fuse3", "the aufs-compatible FUSE union and its peers"),
    ("fuse-overlayfs", "FUSE peer in the aufs comparison"),
    ("unionfs-fuse", "FUSE peer in the aufs comparison"),
    ("fio", "reference I/O workloads"),
    ("docker.io", "interop tests against the real Docker engine"),
    ("thin-provisioning-tools", "devicemapper thin-pool checks"),
    (
        "prometheus",
        "the sidecar and dashboards checked by a real Prometheus",
    ),
    (
        "prometheus-pushgateway",
        "bench --push-gateway tested against a real Pushgateway",
    ),
    (
        "qemu-system-x86",
        "vm-test: a guest kernel for what the host lacks",
    ),
    ("linux-image-amd64", "vm-test: Debian's distro kernel"),
    ("busybox-static", "vm-test initramfs and chroot tests"),
    ("cpio", "vm-test initramfs"),
    ("kmod", "vm-test: module dependencies of the guest kernel"),
    ("pkg-config", "building -sys crates"),
];

#[derive(clap::Args)]
pub struct Args {
    /// Print what would be installed, install nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let missing = missing_packages()?;
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|(name, _)| *name).collect();
    eprintln!("xtask deps: installing {}", names.join(" "));
    for (name, why) in &missing {
        eprintln!("  {name}: {why}");
    }
    if args.dry_run {
        return Ok(());
    }
    if !nix_is_root() {
        bail!(
            "xtask deps: missing packages {} and not root: run as root or install them",
            names.join(" ")
        );
    }
    run_command(
        Command::new("apt-get")
            .args(["update", "-qq"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    run_command(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&names)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    let still_missing = missing_packages()?;
    if !still_missing.is_empty() {
        let names: Vec<&str> = still_missing.iter().map(|(name, _)| *name).collect();
        bail!("xtask deps: apt-get did not install {}", names.join(" "));
    }
    Ok(())
}

/// The packages dpkg does not report as installed.
fn missing_packages() -> anyhow::Result<Vec<(&'static str, &'static str)>> {
    let installed = output(
        Command::new("dpkg-query")
            .args(["-W", "-f", "${Package} ${db:Status-Status}\\n"])
            .args(PACKAGES.iter().map(|(name, _)| *name)),
    )
    // dpkg-query exits 1 when some package is unknown; the lines it printed
    // for the known ones are still right, so fall back to asking one by one.
    .or_else(|_| {
        let mut lines = String::new();
        for (name, _) in PACKAGES {
            if let Ok(line) = output(Command::new("dpkg-query").args([
                "-W",
                "-f",
                "${Package} ${db:Status-Status}\\n",
                name,
            ])) {
                lines.push_str(&line);
            }
        }
        anyhow::Ok(lines)
    })?;
    Ok(PACKAGES
        .iter()
        .copied()
        .filter(|(name, _)| {
            !installed.lines().any(|line| {
                let mut fields = line.split_whitespace();
                let package = fields.next().unwrap_or_default();
                let package = package.split(':').next().unwrap_or_default();
                package == *name && fields.next() == Some("installed")
            })
        })
        .collect())
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))
                .and_then(|line| line.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}
