//! tar-split: apply_layer records it, assemble_layer rebuilds the original
//! uncompressed tar byte for byte from it and the applied files, and a
//! changed or missing file is an error naming it. Runs as root.

mod archive_support;

use std::path::Path;

use archive_support::*;
use storage_core::archive::{
    ApplyOptions, WhiteoutFormat, apply_layer, assemble_layer, export_dir,
};
use tar::EntryType;

fn apply_split(tar: &[u8], dest: &Path, format: WhiteoutFormat) -> (String, Vec<u8>) {
    let mut split = Vec::new();
    let applied = apply_layer(tar, dest, &ApplyOptions::new(format), Some(&mut split))
        .unwrap_or_else(|e| panic!("apply: {e}"));
    (applied.diff_id, split)
}

fn assemble(split: &[u8], dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let n = assemble_layer(split, dir, &mut out).unwrap_or_else(|e| panic!("assemble: {e}"));
    assert_eq!(n, out.len() as u64);
    out
}

/// Every shape of entry and header: PAX (xattrs, long path), GNU long
/// names, links, devices, whiteouts, sizes on and off block boundaries,
/// extra end padding and junk after the archive.
fn varied_layer() -> Vec<u8> {
    let mut t = RawTar::new();
    t.dir("etc/");
    t.file("etc/hosts", b"127.0.0.1 localhost\n");
    t.file("etc/empty", b"");
    t.file("etc/exact", &[1u8; 512]);
    t.file("etc/odd", &[2u8; 513]);
    t.file("etc/<html&json>\"q\"", b"escaped in JSON");
    t.symlink("etc/link", "hosts");
    t.hardlink("etc/hard", "etc/hosts");
    let mut null = Spec::new("dev/null", EntryType::Char);
    null.dev = (1, 3);
    t.entry(&null, b"");
    let mut ping = Spec::new("bin/ping", EntryType::Regular);
    ping.mode = 0o755;
    t.pax_entry(
        &[
            (
                "SCHILY.xattr.security.capability",
                &[0, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
            ("mtime", b"1600000000.25"),
        ],
        &ping,
        b"ping binary",
    );
    let long = format!("long/{}/pax.txt", "x".repeat(180));
    t.pax_entry(
        &[("path", long.as_bytes())],
        &Spec::new("long/cut", EntryType::Regular),
        &[3u8; 700],
    );
    t.gnu_long_name(
        &format!("long/{}/gnu.txt", "y".repeat(120)),
        EntryType::Regular,
        b"gnu",
    );
    t.file("gone/.wh.deleted", b"");
    t.dir("opq/");
    t.file("opq/.wh..wh..opq", b"");
    t.file("opq/kept", b"kept");
    let mut tar = t.finish();
    // GNU tar style record padding, then junk a writer left behind.
    tar.resize(tar.len().div_ceil(10240) * 10240, 0);
    tar.extend_from_slice(b"junk after the end of the archive");
    tar
}

#[test]
fn assemble_reproduces_the_input_bytes_for_every_format_and_compression() {
    testkit::require_root!();
    let plain = varied_layer();
    for format in [
        WhiteoutFormat::Overlay,
        WhiteoutFormat::Aufs,
        WhiteoutFormat::Naive,
    ] {
        for input in [plain.clone(), gzip(&plain), zstd(&plain)] {
            let tmp = tempfile::tempdir().unwrap();
            let (diff_id, split) = apply_split(&input, tmp.path(), format);
            assert_eq!(diff_id, sha256_id(&plain));
            let rebuilt = assemble(&split, tmp.path());
            assert!(
                rebuilt == plain,
                "{format:?}: assembled tar differs from the input"
            );
            assert_eq!(sha256_id(&rebuilt), diff_id);
        }
    }
}

#[test]
fn tar_split_lines_are_the_ones_dockerd_writes() {
    testkit::require_root!();
    let mut t = RawTar::new();
    t.file("a", b"hi");
    t.dir("d/");
    let tar = t.finish();
    let tmp = tempfile::tempdir().unwrap();
    let (_, split) = apply_split(&tar, tmp.path(), WhiteoutFormat::Overlay);
    let text = String::from_utf8(split).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let crc = storage_core::archive::tar_split::CRC64
        .checksum(b"hi")
        .to_be_bytes();
    // Go: header segment, file, then (padding + next header), file, then
    // (the two zero blocks) as one segment.
    assert_eq!(lines.len(), 5, "{text}");
    assert_eq!(
        lines[0],
        format!(
            r#"{{"type":2,"payload":"{}","position":0}}"#,
            b64(&tar[..512])
        )
    );
    assert_eq!(
        lines[1],
        format!(
            r#"{{"type":1,"name":"a","size":2,"payload":"{}","position":1}}"#,
            b64(&crc)
        )
    );
    assert_eq!(
        lines[2],
        format!(
            r#"{{"type":2,"payload":"{}","position":2}}"#,
            b64(&tar[514..1536])
        )
    );
    assert_eq!(
        lines[3],
        r#"{"type":1,"name":"d/","payload":null,"position":3}"#
    );
    assert_eq!(
        lines[4],
        format!(
            r#"{{"type":2,"payload":"{}","position":4}}"#,
            b64(&tar[1536..])
        )
    );
}

#[test]
fn sparse_entries_with_extension_headers_reassemble_exactly() {
    testkit::require_root!();
    let mut t = RawTar::new();
    t.file("before", b"x");
    // Six regions: four in the header, two in an extension block.
    let regions: Vec<(u64, Vec<u8>)> = (0..6u64)
        .map(|i| (i * 1024 * 1024, vec![b'a' + i as u8; 512]))
        .collect();
    t.gnu_sparse("sparse.img", 6 * 1024 * 1024 + 4096, &regions);
    t.file("after", b"y");
    let tar = t.finish();
    let tmp = tempfile::tempdir().unwrap();
    let (_, split) = apply_split(&tar, tmp.path(), WhiteoutFormat::Overlay);
    let img = std::fs::read(tmp.path().join("sparse.img")).unwrap();
    assert_eq!(img.len(), 6 * 1024 * 1024 + 4096);
    for (off, data) in &regions {
        assert_eq!(&img[*off as usize..*off as usize + data.len()], &data[..]);
    }
    assert_eq!(assemble(&split, tmp.path()), tar);
}

#[test]
fn a_changed_or_missing_file_is_an_error_naming_it() {
    testkit::require_root!();
    let plain = varied_layer();
    let tmp = tempfile::tempdir().unwrap();
    let (_, split) = apply_split(&plain, tmp.path(), WhiteoutFormat::Overlay);

    std::fs::write(tmp.path().join("etc/odd"), [9u8; 513]).unwrap();
    let err = assemble_layer(&split[..], tmp.path(), std::io::sink()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "layer entry etc/odd: content on disk does not match the tar-split checksum"
    );
    std::fs::write(tmp.path().join("etc/odd"), [2u8; 10]).unwrap();
    let err = assemble_layer(&split[..], tmp.path(), std::io::sink()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "layer entry etc/odd: file on disk has 10 bytes, tar-split recorded 513"
    );
    std::fs::remove_file(tmp.path().join("etc/odd")).unwrap();
    let err = assemble_layer(&split[..], tmp.path(), std::io::sink()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("layer entry etc/odd: opening content file: "),
        "{err}"
    );
    let err = assemble_layer(&b"{not json"[..], tmp.path(), std::io::sink()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("tar-split record 0: invalid JSON"),
        "{err}"
    );
}

#[test]
fn an_exported_layer_round_trips_through_tar_split() {
    testkit::require_root!();
    // export -> apply(+tar-split) -> assemble gives the exported bytes,
    // so a layer committed from a container keeps its diff-id.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&dst).unwrap();
    apply_layer(
        &varied_layer()[..],
        &src,
        &ApplyOptions::new(WhiteoutFormat::Overlay),
        None,
    )
    .unwrap();
    let mut exported = Vec::new();
    export_dir(&src, WhiteoutFormat::Overlay, &mut exported).unwrap();
    let (diff_id, split) = apply_split(&exported, &dst, WhiteoutFormat::Overlay);
    assert_eq!(diff_id, sha256_id(&exported));
    assert_eq!(assemble(&split, &dst), exported);
}
