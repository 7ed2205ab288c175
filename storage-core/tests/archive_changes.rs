//! changes_naive (moby's ChangesDirs) and export_changes: the naive diff of
//! drivers without a native one, applied back onto the parent, gives the
//! layer's tree. Runs as root.

mod archive_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use archive_support::*;
use storage_core::archive::{
    ApplyOptions, Change, WhiteoutFormat, apply_layer, changes_naive, export_changes,
};

fn set_mtime(p: &Path, secs: i64) {
    let t = nix::sys::time::TimeSpec::new(secs, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

fn cp_a(from: &Path, to: &Path) {
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[test]
fn naive_changes_match_docker_diff_and_export_round_trips() {
    testkit::require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let parent = tmp.path().join("parent");
    let layer = tmp.path().join("layer");
    std::fs::create_dir_all(parent.join("etc/conf.d")).unwrap();
    std::fs::create_dir_all(parent.join("var/lib/old")).unwrap();
    std::fs::create_dir_all(parent.join("quiet")).unwrap();
    std::fs::write(parent.join("etc/hosts"), b"127.0.0.1\n").unwrap();
    std::fs::write(parent.join("etc/conf.d/a"), b"a").unwrap();
    std::fs::write(parent.join("etc/mode"), b"m").unwrap();
    std::fs::write(parent.join("etc/attr"), b"x").unwrap();
    std::fs::write(parent.join("var/lib/old/f"), b"f").unwrap();
    std::fs::write(parent.join("quiet/f"), b"f").unwrap();
    std::os::unix::fs::symlink("hosts", parent.join("etc/link")).unwrap();
    for p in [
        "etc/hosts",
        "etc/conf.d/a",
        "etc/mode",
        "etc/attr",
        "var/lib/old/f",
        "quiet/f",
    ] {
        set_mtime(&parent.join(p), 1_600_000_000);
    }
    cp_a(&parent, &layer);

    std::fs::write(layer.join("etc/hosts"), b"127.0.0.1 changed\n").unwrap();
    std::fs::set_permissions(
        layer.join("etc/mode"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    storage_core::sys::xattr::lset(&layer.join("etc/attr"), "user.tag", b"v").unwrap();
    std::fs::remove_dir_all(layer.join("var/lib/old")).unwrap();
    std::fs::create_dir_all(layer.join("srv/www")).unwrap();
    std::fs::write(layer.join("srv/www/index.html"), b"<html>").unwrap();
    std::fs::remove_file(layer.join("etc/link")).unwrap();
    std::os::unix::fs::symlink("conf.d", layer.join("etc/link")).unwrap();
    // A directory whose mtime alone changed is not a change.
    set_mtime(&layer.join("quiet"), 1_700_000_000);

    let changes = changes_naive(&layer, Some(&parent)).unwrap();
    let shown: Vec<String> = changes.iter().map(Change::to_string).collect();
    assert_eq!(
        shown,
        [
            "C /etc",
            "C /etc/attr",
            "C /etc/hosts",
            "C /etc/link",
            "C /etc/mode",
            "A /srv",
            "A /srv/www",
            "A /srv/www/index.html",
            "C /var",
            "C /var/lib",
            "D /var/lib/old",
        ]
    );

    // Everything is added against no parent.
    let all = changes_naive(&parent, None).unwrap();
    assert!(
        all.iter()
            .all(|c| c.kind == storage_core::archive::ChangeKind::Added)
    );
    assert_eq!(all.len(), 13);

    // export_changes applied onto a copy of the parent gives the layer.
    let mut tar = Vec::new();
    let stats = export_changes(&layer, &changes, &mut tar).unwrap();
    assert_eq!(stats.whiteouts, 1);
    let names: Vec<String> = list(&tar).into_iter().map(|e| e.0).collect();
    assert!(names.contains(&"var/lib/.wh.old".to_string()), "{names:?}");
    let rebuilt = tmp.path().join("rebuilt");
    cp_a(&parent, &rebuilt);
    apply_layer(
        &tar[..],
        &rebuilt,
        &ApplyOptions::new(WhiteoutFormat::Naive),
        None,
    )
    .unwrap();
    assert_eq!(snapshot_with(&rebuilt, false), snapshot_with(&layer, false));
}
