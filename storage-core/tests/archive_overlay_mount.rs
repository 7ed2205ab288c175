//! Layers applied with overlay whiteouts work under a real overlayfs mount:
//! lower = layer 1, then layer 2 (whiteouts, an opaque dir) above it; the
//! merged view hides deleted files and the opaque dir's old content. A
//! container's upper dir then exports as an OCI layer and lists its
//! changes like `docker diff`. Runs as root.

mod archive_support;

use archive_support::*;
use storage_core::archive::{
    ApplyOptions, Change, ChangeKind, WhiteoutFormat, apply_layer, changes_overlay, export_dir,
};
use storage_core::sys::mount::MountFlags;
use testkit::MountGuard;

fn layer1() -> Vec<u8> {
    let mut t = RawTar::new();
    t.dir("etc/");
    t.file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n");
    t.file("etc/hosts", b"127.0.0.1 localhost\n");
    t.dir("opt/");
    t.dir("opt/app/");
    t.file("opt/app/a", b"a");
    t.file("opt/app/b", b"b");
    t.file("keep", b"keep");
    t.finish()
}

fn layer2() -> Vec<u8> {
    let mut t = RawTar::new();
    t.file("etc/.wh.hosts", b"");
    t.dir("opt/app/");
    t.file("opt/app/.wh..wh..opq", b"");
    t.file("opt/app/c", b"c");
    t.file("new", b"new");
    t.finish()
}

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn merged_view_hides_whiteouts_and_opaque_contents() {
    testkit::require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let [l1, l2, upper, work, merged] =
        ["l1", "l2", "upper", "work", "merged"].map(|d| base.join(d));
    for d in [&l1, &l2, &upper, &work, &merged] {
        std::fs::create_dir_all(d).unwrap();
    }
    let opts = ApplyOptions::new(WhiteoutFormat::Overlay);
    apply_layer(&layer1()[..], &l1, &opts, None).unwrap();
    apply_layer(&layer2()[..], &l2, &opts, None).unwrap();

    let data = format!(
        "lowerdir={}:{},upperdir={},workdir={},index=off",
        l2.display(),
        l1.display(),
        upper.display(),
        work.display()
    );
    let guard = MountGuard::mount(
        "overlay",
        &merged,
        "overlay",
        MountFlags::empty(),
        Some(&data),
    )
    .unwrap_or_else(|e| panic!("overlay mount: {e}"));

    assert_eq!(names(&merged), ["etc", "keep", "new", "opt"]);
    assert_eq!(
        names(&merged.join("etc")),
        ["passwd"],
        "etc/hosts is whited out"
    );
    assert_eq!(
        names(&merged.join("opt/app")),
        ["c"],
        "opaque dir hides a and b"
    );
    assert_eq!(std::fs::read(merged.join("keep")).unwrap(), b"keep");

    // The container deletes a lower file and adds one: overlay writes a
    // char 0/0 whiteout into the upper dir.
    std::fs::remove_file(merged.join("etc/passwd")).unwrap();
    std::fs::write(merged.join("etc/motd"), b"hi").unwrap();
    drop(guard);
    assert!(is_whiteout(&upper.join("etc/passwd")));

    let mut tar = Vec::new();
    export_dir(&upper, WhiteoutFormat::Overlay, &mut tar).unwrap();
    let entries: Vec<String> = list(&tar).into_iter().map(|e| e.0).collect();
    // Walk order is by the name on disk, as in moby (passwd after motd).
    assert_eq!(entries, ["etc/", "etc/motd", "etc/.wh.passwd"]);

    let changes = changes_overlay(&upper, &[l2.clone(), l1.clone()]).unwrap();
    let shown: Vec<String> = changes.iter().map(Change::to_string).collect();
    assert_eq!(shown, ["C /etc", "A /etc/motd", "D /etc/passwd"]);

    // Layer 2 against layer 1: deletions, the opaque dir and its hidden
    // children, additions.
    let changes = changes_overlay(&l2, std::slice::from_ref(&l1)).unwrap();
    let has = |kind: ChangeKind, path: &str| {
        changes
            .iter()
            .any(|c| c.kind == kind && c.path.as_os_str() == path)
    };
    assert!(has(ChangeKind::Deleted, "/etc/hosts"), "{changes:?}");
    assert!(has(ChangeKind::Modified, "/opt/app"), "{changes:?}");
    assert!(has(ChangeKind::Deleted, "/opt/app/a"), "{changes:?}");
    assert!(has(ChangeKind::Deleted, "/opt/app/b"), "{changes:?}");
    assert!(has(ChangeKind::Modified, "/opt/app/c") || has(ChangeKind::Added, "/opt/app/c"));
    assert!(has(ChangeKind::Added, "/new"), "{changes:?}");
    let mut sorted = changes.clone();
    sorted.sort_by(|a, b| a.path.as_os_str().cmp(b.path.as_os_str()));
    assert_eq!(changes, sorted, "sorted by path");
}
