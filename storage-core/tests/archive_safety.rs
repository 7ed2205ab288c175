//! apply_layer refuses every hostile or broken input with a one-line error
//! naming the entry, never touches anything outside `dest`, and leaves a
//! `dest` the caller can delete. Runs as root.

mod archive_support;

use std::path::{Path, PathBuf};

use archive_support::*;
use storage_core::archive::{ApplyOptions, ArchiveError, WhiteoutFormat, apply_layer};
use tar::EntryType;

/// `<tmp>/outside/sentinel` next to `<tmp>/dest/layer` (so `../..` from
/// the destination reaches `<tmp>`).
struct Sandbox {
    _tmp: tempfile::TempDir,
    top: PathBuf,
    outside: PathBuf,
    dest: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().to_path_buf();
        let outside = top.join("outside");
        let dest = top.join("dest/layer");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::create_dir_all(&dest).unwrap();
        std::fs::write(outside.join("sentinel"), b"keep").unwrap();
        Sandbox {
            _tmp: tmp,
            top,
            outside,
            dest,
        }
    }

    fn apply(&self, tar: &[u8], format: WhiteoutFormat) -> Result<(), ArchiveError> {
        apply_layer(tar, &self.dest, &ApplyOptions::new(format), None).map(|_| ())
    }

    /// Nothing outside `dest` changed, and `dest` can be removed.
    fn assert_untouched(&self) {
        assert_eq!(
            std::fs::read(self.outside.join("sentinel")).unwrap(),
            b"keep"
        );
        let outside: Vec<_> = std::fs::read_dir(&self.outside).unwrap().collect();
        assert_eq!(outside.len(), 1, "nothing new next to the sentinel");
        let mut top: Vec<_> = std::fs::read_dir(&self.top)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        top.sort();
        assert_eq!(top, ["dest", "outside"]);
        let dest_parent: Vec<_> = std::fs::read_dir(self.top.join("dest")).unwrap().collect();
        assert_eq!(dest_parent.len(), 1, "nothing new next to dest");
        std::fs::remove_dir_all(&self.dest).expect("a failed apply leaves a removable dest");
    }
}

fn expect_error(tar: &[u8], format: WhiteoutFormat, wanted: &str) -> Sandbox {
    let sb = Sandbox::new();
    let err = sb
        .apply(tar, format)
        .expect_err("hostile layer must be refused");
    let msg = err.to_string();
    assert!(
        msg.contains(wanted),
        "error {msg:?} should contain {wanted:?}"
    );
    assert!(!msg.contains('\n'), "one line: {msg:?}");
    sb.assert_untouched();
    sb
}

fn one(build: impl FnOnce(&mut RawTar)) -> Vec<u8> {
    let mut t = RawTar::new();
    build(&mut t);
    t.finish()
}

#[test]
fn absolute_entry_names_are_refused() {
    testkit::require_root!();
    let tar = one(|t| t.file("/etc/x", b"x"));
    let sb = Sandbox::new();
    let err = sb.apply(&tar, WhiteoutFormat::Overlay).unwrap_err();
    assert_eq!(err.to_string(), "layer entry /etc/x: absolute path");
    sb.assert_untouched();
}

#[test]
fn dotdot_escapes_are_refused() {
    testkit::require_root!();
    for name in ["../../outside/sentinel", "a/../../../outside/x", "../x"] {
        let tar = one(|t| t.file(name, b"pwned"));
        expect_error(
            &tar,
            WhiteoutFormat::Overlay,
            &format!("layer entry {name}: path escapes the destination"),
        );
    }
    // A whiteout that climbs out must not delete anything either.
    let tar = one(|t| t.file("../../outside/.wh.sentinel", b""));
    for format in [WhiteoutFormat::Naive, WhiteoutFormat::Overlay] {
        expect_error(&tar, format, "path escapes the destination");
    }
}

#[test]
fn relative_symlinks_climbing_out_are_refused_absolute_ones_are_fine() {
    testkit::require_root!();
    let tar = one(|t| t.symlink("a", "../../outside"));
    expect_error(
        &tar,
        WhiteoutFormat::Overlay,
        "layer entry a: symlink target ../../outside climbs out of the destination",
    );
    let tar = one(|t| t.symlink("x/y/z", "../../../etc"));
    expect_error(&tar, WhiteoutFormat::Overlay, "climbs out");

    let sb = Sandbox::new();
    let tar = one(|t| {
        t.symlink("abs", "/etc/passwd");
        t.symlink("x/y/ok", "../../inside");
    });
    sb.apply(&tar, WhiteoutFormat::Overlay).unwrap();
    assert_eq!(
        std::fs::read_link(sb.dest.join("abs")).unwrap(),
        Path::new("/etc/passwd")
    );
    sb.assert_untouched();
}

#[test]
fn entries_never_write_through_symlinks_of_earlier_entries() {
    testkit::require_root!();
    let outside = |sb: &Sandbox| sb.outside.to_string_lossy().into_owned();
    // `a -> <host dir>` then `a/sentinel`: resolved inside dest (chroot
    // semantics) or refused, never the host's file.
    for format in [
        WhiteoutFormat::Overlay,
        WhiteoutFormat::Naive,
        WhiteoutFormat::Aufs,
    ] {
        let sb = Sandbox::new();
        let target = outside(&sb);
        let tar = one(|t| {
            t.symlink("a", &target);
            t.file("a/sentinel", b"pwned");
        });
        let result = sb.apply(&tar, format);
        if result.is_ok() {
            let inside = sb
                .dest
                .join(target.trim_start_matches('/'))
                .join("sentinel");
            assert_eq!(std::fs::read(inside).unwrap(), b"pwned");
        }
        sb.assert_untouched();
    }
    // `a -> /` then `a/<host path>/sentinel`: lands in dest.
    let sb = Sandbox::new();
    let host = format!("a{}/sentinel", outside(&sb));
    let tar = one(|t| {
        t.symlink("a", "/");
        t.file(&host, b"pwned");
    });
    sb.apply(&tar, WhiteoutFormat::Overlay).unwrap();
    let inside = sb
        .dest
        .join(outside(&sb).trim_start_matches('/'))
        .join("sentinel");
    assert_eq!(std::fs::read(inside).unwrap(), b"pwned");
    sb.assert_untouched();
    // A file entry over an earlier symlink to a host file replaces the
    // link; it does not write through it.
    let sb = Sandbox::new();
    let target = format!("{}/sentinel", outside(&sb));
    let tar = one(|t| {
        t.symlink("f", &target);
        t.file("f", b"pwned");
        t.symlink("g", &target);
        t.dir("g/");
    });
    sb.apply(&tar, WhiteoutFormat::Overlay).unwrap();
    assert_eq!(std::fs::read(sb.dest.join("f")).unwrap(), b"pwned");
    assert!(lstat(&sb.dest.join("g")).is_dir());
    sb.assert_untouched();
    // Whiteouts through a symlinked directory delete inside dest only.
    for format in [WhiteoutFormat::Naive, WhiteoutFormat::Overlay] {
        let sb = Sandbox::new();
        let target = outside(&sb);
        let tar = one(|t| {
            t.symlink("w", &target);
            t.file("w/.wh.sentinel", b"");
            t.file("w/.wh..wh..opq", b"");
        });
        let _ = sb.apply(&tar, format);
        sb.assert_untouched();
    }
}

#[test]
fn hardlinks_outside_or_to_missing_targets_are_refused() {
    testkit::require_root!();
    let tar = one(|t| t.hardlink("h", "../../outside/sentinel"));
    expect_error(
        &tar,
        WhiteoutFormat::Overlay,
        "layer entry h: hardlink target ../../outside/sentinel is outside the destination",
    );
    let sb = Sandbox::new();
    let abs = format!("{}/sentinel", sb.outside.display());
    drop(sb);
    let tar = one(|t| t.hardlink("h", &abs));
    expect_error(
        &tar,
        WhiteoutFormat::Overlay,
        "does not exist (not extracted yet)",
    );
    let tar = one(|t| {
        t.hardlink("early", "late");
        t.file("late", b"late");
    });
    expect_error(
        &tar,
        WhiteoutFormat::Overlay,
        "layer entry early: hardlink target late does not exist (not extracted yet)",
    );
    // Through a symlink of an earlier entry: resolved inside dest.
    let sb = Sandbox::new();
    let target = sb.outside.to_string_lossy().into_owned();
    let tar = one(|t| {
        t.symlink("s", &target);
        t.hardlink("h", "s/sentinel");
    });
    let err = sb.apply(&tar, WhiteoutFormat::Overlay).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    sb.assert_untouched();
}

fn two_files() -> Vec<u8> {
    let mut t = RawTar::new();
    t.file("first.txt", b"first");
    t.file("big.bin", &vec![0x5a; 5000]);
    t.file("third.txt", b"third");
    t.finish()
}

#[test]
fn truncated_and_corrupt_tars_name_the_entry_where_they_broke() {
    testkit::require_root!();
    let full = two_files();
    // Cut inside big.bin's content (its header is at 1024).
    expect_error(
        &full[..1536 + 1000],
        WhiteoutFormat::Overlay,
        "layer entry big.bin: truncated tar: stream ended after 1000 of 5000 content bytes",
    );
    // Cut inside the header after first.txt.
    expect_error(
        &full[..1024 + 100],
        WhiteoutFormat::Overlay,
        "layer tar stream breaks after entry first.txt",
    );
    // A flipped byte in big.bin's header breaks its checksum.
    let mut bad = full.clone();
    bad[1024 + 10] ^= 0x20;
    expect_error(
        &bad,
        WhiteoutFormat::Overlay,
        "layer tar stream breaks after entry first.txt: archive header checksum mismatch",
    );
    // The same through gzip: a truncated compressed stream.
    let gz = gzip(&full);
    expect_error(&gz[..gz.len() / 2], WhiteoutFormat::Overlay, "layer ");
}

#[test]
fn non_tar_garbage_is_refused() {
    testkit::require_root!();
    let text = b"This is not a tar archive, just some text that someone piped in.\n".repeat(40);
    expect_error(
        &text,
        WhiteoutFormat::Overlay,
        "layer tar stream is not a tar archive",
    );
    let short = b"hello";
    expect_error(short, WhiteoutFormat::Overlay, "is not a tar archive");
    let mut gz_junk = vec![0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0];
    gz_junk.extend_from_slice(&[0xff; 600]);
    expect_error(&gz_junk, WhiteoutFormat::Overlay, "layer tar stream");
    expect_error(
        b"BZh91AY&SY",
        WhiteoutFormat::Overlay,
        "bzip2 compression is not supported",
    );
}

#[test]
fn malformed_entries_are_refused() {
    testkit::require_root!();
    let tar = one(|t| t.file("dir/.wh..", b""));
    expect_error(
        &tar,
        WhiteoutFormat::Overlay,
        "layer entry dir/.wh..: whiteout names no file",
    );
    let tar = one(|t| {
        let mut v = Spec::new("label", EntryType::new(b'V'));
        v.mode = 0;
        t.entry(&v, b"");
    });
    expect_error(
        &tar,
        WhiteoutFormat::Overlay,
        "layer entry label: unsupported entry type 'V'",
    );
    let tar = one(|t| {
        t.file("plain", b"x");
        t.file("plain/child", b"y");
    });
    expect_error(
        &tar,
        WhiteoutFormat::Overlay,
        "layer entry plain/child: a parent path is not a directory",
    );
}

#[test]
fn duplicate_paths_are_refused_when_recording_tar_split() {
    testkit::require_root!();
    let tar = one(|t| {
        t.file("dup", b"one");
        t.file("./dup", b"two");
    });
    let sb = Sandbox::new();
    let mut split = Vec::new();
    let err = apply_layer(
        &tar[..],
        &sb.dest,
        &ApplyOptions::new(WhiteoutFormat::Overlay),
        Some(&mut split),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "layer entry ./dup: duplicate path (tar-split needs unique paths)"
    );
    sb.assert_untouched();
    // Without tar-split the later entry wins, as with moby's Untar.
    let sb = Sandbox::new();
    sb.apply(&tar, WhiteoutFormat::Overlay).unwrap();
    assert_eq!(std::fs::read(sb.dest.join("dup")).unwrap(), b"two");
}
