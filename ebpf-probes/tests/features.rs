//! Integration tests of `ebpf_probes::features::probe_bpf` on the real
//! kernel (root only): well-formed lines, the facts every supported host
//! shares, and no mount left behind (tracefs excepted: the crate mounts it
//! on purpose and keeps it).

use std::collections::BTreeSet;
use std::fs;

use ebpf_probes::features::probe_bpf;
use storage_core::features::Feature;

const NAMES: [&str; 8] = [
    "btf",
    "btf.overlay",
    "tracepoint",
    "raw_tp",
    "tp_btf",
    "kprobe",
    "fentry",
    "cachestat",
];

/// Mounts a BPF probe could leave behind: securityfs (read for the lockdown
/// mode), debugfs, bpffs, and anything in a `layerscope-probe-*` scratch dir.
/// tracefs is left out on purpose; other engineers' tests mount other things
/// concurrently on the same host, so a plain line count is not reliable.
fn probe_kind_mounts() -> BTreeSet<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|line| {
            let (_, after) = line.split_once(" - ")?;
            let fstype = after.split(' ').next()?;
            let point = line.split(' ').nth(4)?;
            (matches!(fstype, "bpf" | "debugfs" | "securityfs")
                || point.contains("layerscope-probe-"))
            .then(|| format!("{fstype} {point}"))
        })
        .collect()
}

fn find<'a>(features: &'a [Feature], name: &str) -> &'a Feature {
    features
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no `{name}` line in {features:#?}"))
}

#[test]
fn bpf_probes_are_well_formed_and_tracepoints_work() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: loading BPF programs needs root");
        return;
    }
    let before = probe_kind_mounts();
    let features = probe_bpf();
    for feature in &features {
        println!("{feature}");
    }
    assert_eq!(features.len(), NAMES.len(), "{features:#?}");
    for name in NAMES {
        find(&features, name);
    }
    for feature in &features {
        if !feature.supported {
            assert!(!feature.detail.trim().is_empty(), "{feature} has no reason");
            // The reason names the failing call and an errno or a cause.
            assert!(feature.detail.contains(": "), "{feature}");
        }
    }
    // Every host this project runs on has BTF and tracepoint programs (the
    // last rung of the strategy ladder); kprobe/fentry/BTF-of-overlay vary.
    assert!(find(&features, "btf").supported, "kernel BTF must parse");
    let tracepoint = find(&features, "tracepoint");
    assert!(tracepoint.supported, "{tracepoint}");
    assert!(find(&features, "raw_tp").supported);
    assert_eq!(probe_kind_mounts(), before, "a probe left a mount behind");
}

#[test]
fn probing_twice_gives_the_same_answer() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let first: Vec<(String, bool)> = probe_bpf()
        .into_iter()
        .map(|f| (f.name, f.supported))
        .collect();
    let second: Vec<(String, bool)> = probe_bpf()
        .into_iter()
        .map(|f| (f.name, f.supported))
        .collect();
    assert_eq!(first, second);
}
