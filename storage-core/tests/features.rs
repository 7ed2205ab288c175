//! Integration tests of `storage_core::features::probe_storage` on the real
//! kernel (root only): the facts every supported host shares, well-formed
//! lines, and no mount or loop device left behind.

use std::collections::BTreeSet;
use std::fs;

use storage_core::features::{Feature, probe_storage};

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// Every probe works under a scratch dir named `layerscope-probe-*`.
const SCRATCH_MARK: &str = "layerscope-probe-";

/// The mountinfo lines (without their mount id, which changes) of mounts a
/// probe made. Other engineers' tests mount things concurrently on the same
/// host, so a plain line count is not a reliable leak check.
fn probe_mounts() -> BTreeSet<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|line| line.contains(SCRATCH_MARK))
        .map(|line| {
            line.split_once(' ')
                .map_or(line, |(_, rest)| rest)
                .to_owned()
        })
        .collect()
}

/// `loopN -> backing file` for every loop device attached to a probe image.
fn attached_loops() -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for entry in fs::read_dir("/sys/block").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        if let Ok(backing) = fs::read_to_string(entry.path().join("loop/backing_file")) {
            if backing.contains(SCRATCH_MARK) {
                out.insert((name, backing.trim().to_owned()));
            }
        }
    }
    out
}

/// Scratch directories of probes in the places probes put them.
fn scratch_dirs() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for dir in [std::path::PathBuf::from("/var/tmp"), std::env::temp_dir()] {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(SCRATCH_MARK) {
                out.insert(entry.path().display().to_string());
            }
        }
    }
    out
}

fn find<'a>(features: &'a [Feature], name: &str) -> &'a Feature {
    features
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no `{name}` line in {features:#?}"))
}

#[test]
fn storage_probes_report_kernel_facts_and_leave_nothing_behind() {
    if !is_root() {
        println!("skipped: probing mounts and loop devices needs root");
        return;
    }
    let mounts_before = probe_mounts();
    let loops_before = attached_loops();
    let scratch_before = scratch_dirs();

    let features = probe_storage();
    for feature in &features {
        println!("{feature}");
    }

    // Well-formed: unique names, every "no" says why.
    let names: BTreeSet<_> = features.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names.len(), features.len(), "duplicate lines");
    for name in [
        "overlay",
        "overlay.index",
        "overlay.metacopy",
        "overlay.redirect_dir",
        "overlay.volatile",
        "loop",
        "xfs",
        "xfs.reflink",
        "btrfs",
        "btrfs.reflink",
        "ext4.reflink",
        "fuse",
        "fuse.passthrough",
        "aufs",
        "dm-thin-pool",
    ] {
        find(&features, name);
    }
    for feature in &features {
        if !feature.supported {
            assert!(!feature.detail.trim().is_empty(), "{feature} has no reason");
        }
        let line = feature.to_string();
        assert!(
            line.starts_with(&format!("{}: yes", feature.name))
                || line.starts_with(&format!("{}: no (", feature.name)),
            "malformed line {line}"
        );
    }

    // Kernel facts of every host this project supports.
    assert!(find(&features, "overlay").supported, "overlay must mount");
    assert!(
        find(&features, "loop").supported,
        "loop devices must attach"
    );
    let ext4 = find(&features, "ext4.reflink");
    assert!(!ext4.supported, "ext4 has no reflink: {ext4}");
    assert!(ext4.detail.contains("EOPNOTSUPP"), "{ext4}");
    let aufs = find(&features, "aufs");
    if !aufs.supported {
        assert!(aufs.detail.contains("ENODEV"), "{aufs}");
    }
    // A mountable filesystem with reflink support must show both lines.
    for fs in ["xfs", "btrfs"] {
        let reflink = find(&features, &format!("{fs}.reflink"));
        if reflink.supported {
            assert!(find(&features, fs).supported, "{reflink} without {fs}");
        }
    }

    assert_eq!(probe_mounts(), mounts_before, "a probe left a mount behind");
    assert_eq!(
        attached_loops(),
        loops_before,
        "a probe left a loop device attached"
    );
    assert_eq!(
        scratch_dirs(),
        scratch_before,
        "a probe left its scratch dir"
    );
}

#[test]
fn json_lines_omit_an_empty_detail() {
    let json = serde_json::to_value(Feature::yes("overlay")).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"name": "overlay", "supported": true})
    );
    let json = serde_json::to_value(Feature::no("aufs", "mount -t aufs: ENODEV")).unwrap();
    assert_eq!(json["detail"], "mount -t aufs: ENODEV");
}
