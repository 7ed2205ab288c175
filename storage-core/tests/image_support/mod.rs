//! Shared by the `image_*` tests: a layer store and an image store on a
//! scratch ext4, hand-made layer tars and `docker save` archives (legacy
//! and OCI layouts), and a snapshot of a data root to prove a failed load
//! left nothing behind.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use storage_core::driver::{self, DriverOptions};
use storage_core::image::ImageStore;
use storage_core::layer::{LayerStore, chain_ids};
use testkit::{FsKind, ScratchFs};

pub const MTIME: u64 = 1_700_000_000;

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

pub fn hex(id: &str) -> &str {
    id.strip_prefix("sha256:").unwrap_or(id)
}

/// The stores of one data root.
pub struct Stores {
    pub root: PathBuf,
    pub layers: LayerStore,
    pub images: ImageStore,
}

impl Stores {
    pub fn open(root: &Path) -> Stores {
        std::fs::create_dir_all(root).unwrap();
        let driver = driver::open("overlay2", root, &DriverOptions::default()).unwrap();
        Stores {
            root: root.to_path_buf(),
            layers: LayerStore::open(root, driver).unwrap(),
            images: ImageStore::open(root, "overlay2").unwrap(),
        }
    }

    /// The layer's tar as the store exports it.
    pub fn export(&self, chain: &str) -> Vec<u8> {
        let mut out = Vec::new();
        self.layers.export(chain, &mut out).unwrap();
        out
    }
}

/// A scratch ext4 with one or more data roots on it.
pub fn scratch() -> ScratchFs {
    ScratchFs::new(FsKind::Ext4, 512 << 20).unwrap()
}

/// One entry of a hand-made layer tar.
pub enum Entry<'a> {
    Dir(&'a str, u32),
    File(&'a str, &'a [u8], u32),
    /// A file owned by uid/gid.
    Owned(&'a str, &'a [u8], u32, u64, u64),
    /// A file with one xattr (as a PAX `SCHILY.xattr.` record).
    Xattr(&'a str, &'a [u8], &'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    /// A hardlink; its header's mode and owner apply to the shared inode,
    /// as in Docker's apply, so they repeat the target's.
    Hardlink(&'a str, &'a str, u32, u64, u64),
    /// `.wh.<name>` in the dir of `path`.
    Whiteout(&'a str),
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h.set_size(size);
    h
}

/// A layer tar of `entries`, in order.
pub fn layer_tar(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            Entry::Dir(path, mode) => {
                let mut h = header(tar::EntryType::Directory, *mode, 0);
                b.append_data(&mut h, path, &[][..]).unwrap();
            }
            Entry::File(path, data, mode) => {
                let mut h = header(tar::EntryType::Regular, *mode, data.len() as u64);
                b.append_data(&mut h, path, *data).unwrap();
            }
            Entry::Owned(path, data, mode, uid, gid) => {
                let mut h = header(tar::EntryType::Regular, *mode, data.len() as u64);
                h.set_uid(*uid);
                h.set_gid(*gid);
                b.append_data(&mut h, path, *data).unwrap();
            }
            Entry::Xattr(path, data, key, value) => {
                let mut record = Vec::new();
                let body = [
                    b" SCHILY.xattr.".as_slice(),
                    key.as_bytes(),
                    b"=",
                    value,
                    b"\n",
                ]
                .concat();
                let mut len = body.len() + 1;
                while format!("{len}").len() + body.len() != len {
                    len = format!("{len}").len() + body.len();
                }
                record.extend_from_slice(format!("{len}").as_bytes());
                record.extend_from_slice(&body);
                let mut x = tar::Header::new_ustar();
                x.set_entry_type(tar::EntryType::XHeader);
                x.set_mode(0o644);
                x.set_mtime(MTIME);
                x.set_size(record.len() as u64);
                b.append_data(&mut x, "PaxHeaders/x", &record[..]).unwrap();
                let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
                b.append_data(&mut h, path, *data).unwrap();
            }
            Entry::Symlink(path, target) => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                b.append_link(&mut h, path, target).unwrap();
            }
            Entry::Hardlink(path, target, mode, uid, gid) => {
                let mut h = header(tar::EntryType::Link, *mode, 0);
                h.set_uid(*uid);
                h.set_gid(*gid);
                b.append_link(&mut h, path, target).unwrap();
            }
            Entry::Whiteout(path) => {
                let p = Path::new(path);
                let name = p.file_name().unwrap().to_string_lossy();
                let wh = match p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    Some(dir) => format!("{}/.wh.{name}", dir.display()),
                    None => format!(".wh.{name}"),
                };
                let mut h = header(tar::EntryType::Regular, 0o644, 0);
                b.append_data(&mut h, wh, &[][..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// The base layer of the test images: dirs, modes, owners, a symlink, a
/// hardlink and an xattr.
pub fn base_layer() -> Vec<u8> {
    layer_tar(&[
        Entry::Dir("bin/", 0o755),
        Entry::Dir("etc/", 0o755),
        Entry::Dir("secret/", 0o700),
        Entry::File("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644),
        Entry::Owned("bin/tool", b"#!/bin/sh\necho tool\n", 0o4755, 1000, 1000),
        Entry::Symlink("bin/link", "tool"),
        Entry::Hardlink("bin/tool2", "bin/tool", 0o4755, 1000, 1000),
        Entry::Xattr("etc/caps", b"capable", "user.layerscope", b"yes"),
        Entry::File("secret/empty", b"", 0o600),
    ])
}

/// A layer on [`base_layer`]: a changed file, a whiteout, a new file.
pub fn second_layer() -> Vec<u8> {
    layer_tar(&[
        Entry::Dir("etc/", 0o755),
        Entry::File(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home:/bin/sh\n",
            0o644,
        ),
        Entry::Whiteout("secret/empty"),
        Entry::Dir("data/", 0o1777),
        Entry::File("data/big", &vec![0x5a; 300_000], 0o640),
    ])
}

/// A third layer (small), to share two layers between images.
pub fn third_layer(tag: &str) -> Vec<u8> {
    layer_tar(&[Entry::File(
        "hello",
        format!("hello from {tag}\n").as_bytes(),
        0o644,
    )])
}

/// An image: its config (and id) and uncompressed layer tars.
#[derive(Clone)]
pub struct TestImage {
    pub config: Vec<u8>,
    pub id: String,
    pub layers: Vec<Vec<u8>>,
    pub diff_ids: Vec<String>,
    pub tags: Vec<String>,
}

impl TestImage {
    pub fn new(layers: Vec<Vec<u8>>, tags: &[&str], comment: &str) -> TestImage {
        let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
        let history: Vec<serde_json::Value> = (0..layers.len())
            .map(|i| serde_json::json!({"created": "2023-11-14T22:13:20Z", "created_by": format!("layer {i} && more")}))
            .collect();
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "created": "2023-11-14T22:13:20.123Z",
            "comment": comment,
            "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh", "-c", "a && b"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history,
        });
        let config = serde_json::to_vec_pretty(&config).unwrap();
        TestImage {
            id: sha256(&config),
            config,
            layers,
            diff_ids,
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    pub fn chain_ids(&self) -> Vec<String> {
        chain_ids(&self.diff_ids)
    }
}

/// An archive being built: entries by path, written in order.
pub struct ArchiveBuilder {
    b: tar::Builder<Vec<u8>>,
    written: Vec<String>,
}

impl ArchiveBuilder {
    pub fn new() -> Self {
        ArchiveBuilder {
            b: tar::Builder::new(Vec::new()),
            written: Vec::new(),
        }
    }

    pub fn file(&mut self, path: &str, data: &[u8]) {
        if self.written.iter().any(|p| p == path) {
            return;
        }
        self.written.push(path.to_string());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_mtime(MTIME);
        h.set_size(data.len() as u64);
        self.b.append_data(&mut h, path, data).unwrap();
    }

    pub fn dir(&mut self, path: &str) {
        if self.written.iter().any(|p| p == path) {
            return;
        }
        self.written.push(path.to_string());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_mtime(MTIME);
        h.set_size(0);
        self.b.append_data(&mut h, path, &[][..]).unwrap();
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.written.push(path.to_string());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_mtime(MTIME);
        h.set_size(0);
        self.b.append_link(&mut h, path, target).unwrap();
    }

    pub fn finish(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

/// A legacy (Docker 20.10) archive of `images`; layer dirs are named after
/// the chain-id, a repeated diff-id is a symlink to its first copy.
pub fn legacy_archive(images: &[&TestImage]) -> Vec<u8> {
    legacy_archive_with(images, |_, _| {})
}

/// [`legacy_archive`] with a hook that may change the manifest.
pub fn legacy_archive_with(
    images: &[&TestImage],
    edit: impl Fn(usize, &mut serde_json::Value),
) -> Vec<u8> {
    let mut a = ArchiveBuilder::new();
    let mut manifest = Vec::new();
    let mut first_copy: BTreeMap<String, String> = BTreeMap::new();
    for (n, image) in images.iter().enumerate() {
        a.file(&format!("{}.json", hex(&image.id)), &image.config);
        let mut paths = Vec::new();
        for ((layer, diff_id), chain) in image
            .layers
            .iter()
            .zip(&image.diff_ids)
            .zip(image.chain_ids())
        {
            let dir = hex(&chain)[..40].to_string();
            let path = format!("{dir}/layer.tar");
            if !a.written.contains(&path) {
                a.dir(&format!("{dir}/"));
                a.file(&format!("{dir}/VERSION"), b"1.0");
                match first_copy.get(diff_id) {
                    Some(first) => a.symlink(&path, &format!("../{first}")),
                    None => {
                        a.file(&path, layer);
                        first_copy.insert(diff_id.clone(), path.clone());
                    }
                }
            }
            paths.push(path);
        }
        let mut item = serde_json::json!({
            "Config": format!("{}.json", hex(&image.id)),
            "RepoTags": if image.tags.is_empty() { serde_json::Value::Null } else { serde_json::json!(image.tags) },
            "Layers": paths,
        });
        edit(n, &mut item);
        manifest.push(item);
    }
    a.file("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    a.finish()
}

/// An OCI-layout archive as Docker 25+ writes it (`blobs/sha256/`,
/// `index.json`, `oci-layout`, and `manifest.json`), layers gzip-compressed
/// when `gzip`.
pub fn oci_archive(images: &[&TestImage], gzip: bool) -> Vec<u8> {
    let mut a = ArchiveBuilder::new();
    a.dir("blobs/");
    a.dir("blobs/sha256/");
    let mut manifest = Vec::new();
    let mut index = Vec::new();
    for image in images {
        a.file(&format!("blobs/sha256/{}", hex(&image.id)), &image.config);
        let mut paths = Vec::new();
        let mut descriptors = Vec::new();
        for layer in &image.layers {
            let blob = if gzip {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(layer).unwrap();
                e.finish().unwrap()
            } else {
                layer.clone()
            };
            let digest = sha256(&blob);
            a.file(&format!("blobs/sha256/{}", hex(&digest)), &blob);
            paths.push(format!("blobs/sha256/{}", hex(&digest)));
            descriptors.push(serde_json::json!({
                "mediaType": if gzip { "application/vnd.oci.image.layer.v1.tar+gzip" } else { "application/vnd.oci.image.layer.v1.tar" },
                "digest": digest, "size": blob.len(),
            }));
        }
        let oci_manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": image.id, "size": image.config.len()},
            "layers": descriptors,
        }))
        .unwrap();
        let manifest_digest = sha256(&oci_manifest);
        a.file(
            &format!("blobs/sha256/{}", hex(&manifest_digest)),
            &oci_manifest,
        );
        index.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": oci_manifest.len(),
        }));
        manifest.push(serde_json::json!({
            "Config": format!("blobs/sha256/{}", hex(&image.id)),
            "RepoTags": image.tags,
            "Layers": paths,
        }));
    }
    a.file(
        "index.json",
        &serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": index,
        }))
        .unwrap(),
    );
    a.file("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    a.file("oci-layout", br#"{"imageLayoutVersion": "1.0.0"}"#);
    a.finish()
}

/// Writes `data` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    path
}

/// Everything under `root` but times: kind, mode, owner, size, content
/// digest or link target, and xattrs.
pub type Snapshot = BTreeMap<PathBuf, String>;

pub fn snapshot(root: &Path) -> Snapshot {
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).sort_by_file_name() {
        let entry = entry.unwrap();
        let meta = entry.path().symlink_metadata().unwrap();
        let mut what = format!(
            "{:o} {}:{} {}",
            meta.mode(),
            meta.uid(),
            meta.gid(),
            meta.len()
        );
        if meta.file_type().is_file() {
            what.push(' ');
            what.push_str(&sha256(&std::fs::read(entry.path()).unwrap()));
        } else if meta.file_type().is_symlink() {
            what.push_str(&format!(
                " -> {}",
                std::fs::read_link(entry.path()).unwrap().display()
            ));
        }
        if meta.is_dir() {
            what = format!("{:o} {}:{}", meta.mode(), meta.uid(), meta.gid());
        }
        out.insert(entry.path().strip_prefix(root).unwrap().to_path_buf(), what);
    }
    out
}

/// Asserts `after` equals `before`, naming the differences. The one
/// tolerated change is overlay2's `committed` marker, which the driver
/// (like moby's) leaves on a layer once a child was created on it.
pub fn assert_same(before: &Snapshot, after: &Snapshot) {
    let after: Snapshot = after
        .iter()
        .filter(|(path, _)| {
            before.contains_key(*path)
                || !(path.starts_with("overlay2")
                    && path.file_name().is_some_and(|n| n == "committed"))
        })
        .map(|(p, w)| (p.clone(), w.clone()))
        .collect();
    let after = &after;
    let mut diffs = Vec::new();
    for (path, what) in before {
        match after.get(path) {
            None => diffs.push(format!("gone: {} ({what})", path.display())),
            Some(now) if now != what => {
                diffs.push(format!("changed: {} ({what} -> {now})", path.display()))
            }
            _ => {}
        }
    }
    for (path, what) in after {
        if !before.contains_key(path) {
            diffs.push(format!("new: {} ({what})", path.display()));
        }
    }
    assert!(
        diffs.is_empty(),
        "the data root changed:\n{}",
        diffs.join("\n")
    );
}
