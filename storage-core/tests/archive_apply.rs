//! apply_layer: overlay, aufs and naive whiteouts, metadata preservation,
//! diff-id and size for plain, gzip and zstd input, and apply -> export ->
//! apply round trips for every whiteout format. Runs as root.

mod archive_support;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use archive_support::*;
use storage_core::archive::{ApplyOptions, Compression, WhiteoutFormat, apply_layer, export_dir};
use tar::EntryType;

fn apply(tar: &[u8], dest: &Path, format: WhiteoutFormat) -> storage_core::archive::AppliedLayer {
    apply_layer(tar, dest, &ApplyOptions::new(format), None)
        .unwrap_or_else(|e| panic!("apply failed: {e}"))
}

/// 20-byte VFS_CAP_REVISION_2 capability: cap_net_bind_service effective.
const CAP_V2: [u8; 20] = [0, 0, 0, 2, 0, 4, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// A layer with one of everything apply must preserve.
fn rich_layer() -> Vec<u8> {
    let mut t = RawTar::new();
    let mut etc = Spec::new("etc/", EntryType::Directory);
    etc.mode = 0o750;
    etc.uid = 1;
    etc.gid = 2;
    etc.mtime = 1_500_000_000;
    t.entry(&etc, b"");
    t.file("etc/hosts", b"127.0.0.1 localhost\n");
    let mut suid = Spec::new("usr/bin/sudo", EntryType::Regular);
    suid.mode = 0o4755;
    suid.uid = 1000;
    suid.gid = 1001;
    t.entry(&suid, b"#!/bin/true\n");
    let mut tmp = Spec::new("tmp/", EntryType::Directory);
    tmp.mode = 0o1777;
    t.entry(&tmp, b"");
    t.symlink("etc/localtime", "/usr/share/zoneinfo/UTC");
    t.symlink("usr/bin/rel", "sudo");
    // A hardlink header carries its inode's metadata, as writers emit it.
    let mut again = Spec::new("usr/bin/sudo-again", EntryType::Link);
    again.link = b"usr/bin/sudo";
    again.mode = 0o4755;
    again.uid = 1000;
    again.gid = 1001;
    t.entry(&again, b"");
    let mut null = Spec::new("dev/null", EntryType::Char);
    null.dev = (1, 3);
    null.mode = 0o666;
    t.entry(&null, b"");
    let mut loop0 = Spec::new("dev/loop0", EntryType::Block);
    loop0.dev = (7, 0);
    t.entry(&loop0, b"");
    t.entry(&Spec::new("run/fifo", EntryType::Fifo), b"");
    let mut ping = Spec::new("usr/bin/ping", EntryType::Regular);
    ping.mode = 0o755;
    t.pax_entry(
        &[
            ("SCHILY.xattr.security.capability", &CAP_V2),
            ("SCHILY.xattr.user.note", b"hello"),
            ("SCHILY.xattr.trusted.layer", b"t"),
            ("mtime", b"1600000123.5"),
        ],
        &ping,
        b"ping",
    );
    let long_pax = format!("deep/{}/file.txt", "p".repeat(150));
    t.pax_entry(
        &[("path", long_pax.as_bytes())],
        &Spec::new("deep/truncated", EntryType::Regular),
        b"pax long name",
    );
    let long_gnu = format!("deep/{}/gnu.txt", "g".repeat(150));
    t.gnu_long_name(&long_gnu, EntryType::Regular, b"gnu long name");
    t.file("empty", b"");
    t.file("block", &[7u8; 1024]);
    t.finish()
}

#[test]
fn preserves_every_kind_of_entry_and_its_metadata() {
    testkit::require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path();
    let tar = rich_layer();
    let applied = apply(&tar, dest, WhiteoutFormat::Overlay);
    assert_eq!(applied.diff_id, sha256_id(&tar));
    assert_eq!(applied.compression, Compression::None);
    assert_eq!(applied.tar_len, tar.len() as u64);

    let etc = lstat(&dest.join("etc"));
    assert_eq!(etc.mode() & 0o7777, 0o750);
    assert_eq!((etc.uid(), etc.gid()), (1, 2));
    assert_eq!(
        etc.mtime(),
        1_500_000_000,
        "dir mtime is set after its content"
    );
    let sudo = lstat(&dest.join("usr/bin/sudo"));
    assert_eq!(sudo.mode() & 0o7777, 0o4755, "setuid survives the chown");
    assert_eq!((sudo.uid(), sudo.gid()), (1000, 1001));
    assert_eq!(sudo.mtime(), 1_600_000_000);
    assert_eq!(sudo.nlink(), 2);
    assert_eq!(lstat(&dest.join("usr/bin/sudo-again")).ino(), sudo.ino());
    assert_eq!(lstat(&dest.join("tmp")).mode() & 0o7777, 0o1777);
    assert_eq!(
        std::fs::read_link(dest.join("etc/localtime")).unwrap(),
        Path::new("/usr/share/zoneinfo/UTC")
    );
    assert_eq!(lstat(&dest.join("etc/localtime")).mtime(), 1_600_000_000);
    let null = lstat(&dest.join("dev/null"));
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    assert_eq!(null.mode() & 0o7777, 0o666);
    let loop0 = lstat(&dest.join("dev/loop0"));
    assert!(loop0.file_type().is_block_device());
    assert_eq!(loop0.rdev(), nix::sys::stat::makedev(7, 0));
    assert!(lstat(&dest.join("run/fifo")).file_type().is_fifo());
    // Implied parents get 0755.
    assert_eq!(
        lstat(&dest.join("run")).permissions().mode() & 0o7777,
        0o755
    );

    let ping = dest.join("usr/bin/ping");
    assert_eq!(getxattr(&ping, "security.capability").unwrap(), CAP_V2);
    assert_eq!(getxattr(&ping, "user.note").unwrap(), b"hello");
    assert_eq!(getxattr(&ping, "trusted.layer").unwrap(), b"t");
    let pm = lstat(&ping);
    assert_eq!((pm.mtime(), pm.mtime_nsec()), (1_600_000_123, 500_000_000));

    let long_pax = dest.join(format!("deep/{}/file.txt", "p".repeat(150)));
    assert_eq!(std::fs::read(long_pax).unwrap(), b"pax long name");
    let long_gnu = dest.join(format!("deep/{}/gnu.txt", "g".repeat(150)));
    assert_eq!(std::fs::read(long_gnu).unwrap(), b"gnu long name");
    assert_eq!(std::fs::read(dest.join("block")).unwrap(), vec![7u8; 1024]);
    assert_eq!(lstat(&dest.join("empty")).len(), 0);

    // size: the sum of the entry sizes, as moby's UnpackLayer reports.
    let expected: u64 = list(&tar).iter().map(|e| e.2).sum();
    assert_eq!(applied.size, expected);
}

#[test]
fn diff_id_is_sha256_of_the_uncompressed_stream_for_every_compression() {
    testkit::require_root!();
    let mut plain = rich_layer();
    // GNU tar pads to a 10 KiB record, and some writers append junk: the
    // diff-id covers it all.
    plain.resize(plain.len().div_ceil(10240) * 10240, 0);
    plain.extend_from_slice(b"trailing bytes after the archive");
    let id = sha256_id(&plain);
    for (kind, bytes) in [
        (Compression::None, plain.clone()),
        (Compression::Gzip, gzip(&plain)),
        (Compression::Zstd, zstd(&plain)),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let applied = apply(&bytes, tmp.path(), WhiteoutFormat::Overlay);
        assert_eq!(applied.compression, kind);
        assert_eq!(applied.diff_id, id, "{kind:?}");
        assert_eq!(applied.tar_len, plain.len() as u64);
        assert!(tmp.path().join("usr/bin/ping").exists());
    }
}

fn whiteout_layer() -> Vec<u8> {
    let mut t = RawTar::new();
    t.dir("d/");
    t.file("d/new", b"new");
    t.file("d/.wh..wh..opq", b"");
    t.file("d/later", b"later");
    t.file(".wh.gone", b"");
    t.file("sub/.wh.x", b"");
    let mut owned = Spec::new("sub/.wh.owned", EntryType::Regular);
    owned.uid = 1000;
    owned.gid = 1000;
    t.entry(&owned, b"");
    t.file(".wh..wh.plnk/12345.67", b"aufs hardlink storage");
    t.file(".wh..wh.aufs", b"");
    t.finish()
}

#[test]
fn overlay_whiteouts_become_char_devices_and_opaque_xattrs() {
    testkit::require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path();
    std::fs::write(dest.join("gone"), b"replaced by the whiteout").unwrap();
    apply(&whiteout_layer(), dest, WhiteoutFormat::Overlay);
    for p in ["gone", "sub/x", "sub/owned"] {
        let path = dest.join(p);
        assert!(is_whiteout(&path), "{p} is a char 0/0");
        assert_eq!(
            lstat(&path).mode() & 0o7777,
            0,
            "{p} has mode 0 as overlay makes them"
        );
    }
    let owned = lstat(&dest.join("sub/owned"));
    assert_eq!((owned.uid(), owned.gid()), (1000, 1000));
    assert_eq!(
        getxattr(&dest.join("d"), "trusted.overlay.opaque").unwrap(),
        b"y"
    );
    assert_eq!(std::fs::read(dest.join("d/new")).unwrap(), b"new");
    assert_eq!(std::fs::read(dest.join("d/later")).unwrap(), b"later");
    for p in [
        ".wh.gone",
        "d/.wh..wh..opq",
        "sub/.wh.x",
        ".wh..wh.plnk",
        ".wh..wh.aufs",
    ] {
        assert!(!exists(&dest.join(p)), "{p} must not be written");
    }
}

#[test]
fn aufs_keeps_whiteout_files_and_skips_its_internals() {
    testkit::require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path();
    apply(&whiteout_layer(), dest, WhiteoutFormat::Aufs);
    for p in [".wh.gone", "d/.wh..wh..opq", "sub/.wh.x", "sub/.wh.owned"] {
        assert!(lstat(&dest.join(p)).is_file(), "{p} kept as a file");
    }
    assert!(!exists(&dest.join(".wh..wh.plnk")));
    assert!(!exists(&dest.join(".wh..wh.aufs")));
    assert!(getxattr(&dest.join("d"), "trusted.overlay.opaque").is_none());
}

#[test]
fn naive_whiteouts_delete_and_opaque_keeps_only_this_layers_paths() {
    testkit::require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path();
    // The parent's full tree.
    std::fs::create_dir_all(dest.join("d/olddir/deeper")).unwrap();
    std::fs::write(dest.join("d/old"), b"old").unwrap();
    std::fs::write(dest.join("d/olddir/deeper/f"), b"f").unwrap();
    std::fs::create_dir_all(dest.join("gone/inner")).unwrap();
    std::fs::write(dest.join("gone/inner/f"), b"f").unwrap();
    std::fs::create_dir_all(dest.join("sub")).unwrap();
    std::fs::write(dest.join("sub/x"), b"x").unwrap();
    std::fs::write(dest.join("sub/y"), b"y").unwrap();

    apply(&whiteout_layer(), dest, WhiteoutFormat::Naive);
    assert!(!exists(&dest.join("gone")), "whiteout removes recursively");
    assert!(!exists(&dest.join("sub/x")));
    assert!(exists(&dest.join("sub/y")));
    assert!(
        !exists(&dest.join("d/old")),
        "opaque removes the parent's children"
    );
    assert!(!exists(&dest.join("d/olddir")));
    assert_eq!(
        std::fs::read(dest.join("d/new")).unwrap(),
        b"new",
        "created before the marker: kept"
    );
    assert_eq!(std::fs::read(dest.join("d/later")).unwrap(), b"later");
    assert!(!exists(&dest.join(".wh.gone")));
    assert!(!exists(&dest.join("d/.wh..wh..opq")));
}

#[test]
fn round_trip_apply_export_apply_for_every_whiteout_format() {
    testkit::require_root!();
    for format in [
        WhiteoutFormat::Overlay,
        WhiteoutFormat::Aufs,
        WhiteoutFormat::Naive,
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        if format == WhiteoutFormat::Naive {
            std::fs::create_dir_all(a.join("d")).unwrap();
            std::fs::write(a.join("d/old"), b"old").unwrap();
            std::fs::write(a.join("gone"), b"gone").unwrap();
        }
        apply(&rich_layer(), &a, format);
        apply(&whiteout_layer(), &a, format);

        let mut exported = Vec::new();
        let stats = export_dir(&a, format, &mut exported).unwrap();
        assert_eq!(stats.tar_bytes, exported.len() as u64);
        // Deterministic: a second export gives the same bytes.
        let mut again = Vec::new();
        export_dir(&a, format, &mut again).unwrap();
        assert_eq!(exported, again, "{format:?} export is deterministic");

        let names: Vec<String> = list(&exported).into_iter().map(|e| e.0).collect();
        match format {
            WhiteoutFormat::Overlay => {
                assert!(names.contains(&".wh.gone".to_string()));
                assert!(names.contains(&"sub/.wh.x".to_string()));
                let d = names.iter().position(|n| n == "d/").unwrap();
                assert_eq!(
                    names[d + 1],
                    "d/.wh..wh..opq",
                    "opaque marker right after its dir"
                );
                assert_eq!(stats.whiteouts, 4);
            }
            WhiteoutFormat::Aufs => {
                assert!(names.contains(&".wh.gone".to_string()));
                assert!(!names.iter().any(|n| n.starts_with(".wh..wh.plnk")));
            }
            WhiteoutFormat::Naive => {
                assert!(!names.iter().any(|n| n.contains(".wh.")));
                assert_eq!(stats.whiteouts, 0);
            }
        }
        let entries = list(&exported);
        let again_link = entries
            .iter()
            .find(|e| e.0 == "usr/bin/sudo-again")
            .unwrap();
        assert_eq!(
            (again_link.1, again_link.3.as_str()),
            (b'1', "usr/bin/sudo")
        );

        apply(&exported, &b, format);
        assert_eq!(snapshot(&a), snapshot(&b), "{format:?} round trip");
    }
}

#[test]
fn a_later_layer_replaces_what_is_in_the_way_and_keeps_existing_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path();
    let mut first = RawTar::new();
    first.file("file-becomes-dir", b"old");
    first.dir("dir-becomes-file/");
    first.file("dir-becomes-file/child", b"child");
    first.symlink("link-becomes-file", "/etc/passwd");
    first.dir("kept/");
    first.file("kept/old", b"old");
    first.file("rewritten", b"first version, longer");
    apply(&first.finish(), dest, WhiteoutFormat::Naive);

    let mut second = RawTar::new();
    second.dir("file-becomes-dir/");
    second.file("file-becomes-dir/inside", b"new");
    second.file("dir-becomes-file", b"now a file");
    second.file("link-becomes-file", b"not a link");
    let mut kept = Spec::new("kept/", EntryType::Directory);
    kept.mode = 0o711;
    second.entry(&kept, b"");
    second.file_mode("rewritten", 0o640, b"second");
    apply(&second.finish(), dest, WhiteoutFormat::Naive);

    assert!(lstat(&dest.join("file-becomes-dir")).is_dir());
    assert_eq!(
        std::fs::read(dest.join("file-becomes-dir/inside")).unwrap(),
        b"new"
    );
    assert!(lstat(&dest.join("dir-becomes-file")).is_file());
    assert_eq!(
        std::fs::read(dest.join("dir-becomes-file")).unwrap(),
        b"now a file"
    );
    assert!(lstat(&dest.join("link-becomes-file")).is_file());
    assert_eq!(
        std::fs::read(dest.join("link-becomes-file")).unwrap(),
        b"not a link"
    );
    // An existing dir stays (its children too) and takes the new mode.
    assert_eq!(std::fs::read(dest.join("kept/old")).unwrap(), b"old");
    assert_eq!(
        lstat(&dest.join("kept")).permissions().mode() & 0o7777,
        0o711
    );
    let rewritten = lstat(&dest.join("rewritten"));
    assert_eq!(std::fs::read(dest.join("rewritten")).unwrap(), b"second");
    assert_eq!(rewritten.permissions().mode() & 0o7777, 0o640);
}
