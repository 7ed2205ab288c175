//! Helpers of the conformance suite: layer tars built entry by entry,
//! signatures of trees and tars that ignore what legitimately differs
//! between drivers (times, inode numbers), and the leftover checks.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Fixed mtime of every entry of the test layers.
pub const MTIME: u64 = 1_700_000_000;

/// Builds a layer tar entry by entry (ustar headers, PAX xattrs).
pub struct LayerTar {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for LayerTar {
    fn default() -> Self {
        Self {
            builder: tar::Builder::new(Vec::new()),
        }
    }
}

impl LayerTar {
    fn header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64, size: u64) -> tar::Header {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(uid);
        header.set_gid(gid);
        header.set_size(size);
        header.set_mtime(MTIME);
        header
    }

    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        self.dir_owned(path, mode, 0, 0);
        self
    }

    fn dir_owned(&mut self, path: &str, mode: u32, uid: u64, gid: u64) {
        let mut h = Self::header(tar::EntryType::Directory, mode, uid, gid, 0);
        self.builder
            .append_data(&mut h, path, std::io::empty())
            .unwrap();
    }

    pub fn owned_dir(mut self, path: &str, mode: u32, uid: u64, gid: u64) -> Self {
        self.dir_owned(path, mode, uid, gid);
        self
    }

    pub fn file(self, path: &str, mode: u32, content: &[u8]) -> Self {
        self.file_with(path, mode, content, &[])
    }

    pub fn file_with(
        mut self,
        path: &str,
        mode: u32,
        content: &[u8],
        xattrs: &[(&str, &[u8])],
    ) -> Self {
        if !xattrs.is_empty() {
            let pax: Vec<(String, &[u8])> = xattrs
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
                .collect();
            self.builder
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), *v)))
                .unwrap();
        }
        let mut h = Self::header(tar::EntryType::Regular, mode, 0, 0, content.len() as u64);
        self.builder.append_data(&mut h, path, content).unwrap();
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0, 0, 0);
        self.builder.append_link(&mut h, path, target).unwrap();
        self
    }

    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Link, 0o644, 0, 0, 0);
        self.builder.append_link(&mut h, path, target).unwrap();
        self
    }

    pub fn fifo(mut self, path: &str, mode: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Fifo, mode, 0, 0, 0);
        self.builder
            .append_data(&mut h, path, std::io::empty())
            .unwrap();
        self
    }

    /// `.wh.<name>` deleting `<name>` in `dir` ("" for the root).
    pub fn whiteout(self, dir: &str, name: &str) -> Self {
        let path = format!("{dir}.wh.{name}");
        self.file(&path, 0o644, b"")
    }

    /// `.wh..wh..opq` making `dir` (with trailing slash) opaque.
    pub fn opaque(self, dir: &str) -> Self {
        let path = format!("{dir}.wh..wh..opq");
        self.file(&path, 0o644, b"")
    }

    pub fn finish(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}

/// One node of a tree or one tar entry, without times and inode numbers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Node {
    pub path: String,
    pub kind: char,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// sha256 of a regular file's content (8 hex digits shown).
    pub hash: String,
    /// Symlink or hardlink target, device numbers.
    pub link: String,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {:o} {}:{} {} {} {} {:?}",
            self.kind,
            self.path,
            self.mode,
            self.uid,
            self.gid,
            self.size,
            &self.hash[..self.hash.len().min(8)],
            self.link,
            self.xattrs.keys().collect::<Vec<_>>()
        )
    }
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Every node below `root` (not `root` itself), sorted by path. Xattrs
/// private to overlayfs are left out.
pub fn tree(root: &Path) -> Vec<Node> {
    let mut nodes = Vec::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        let ft = meta.file_type();
        let rel = entry.path().strip_prefix(root).unwrap();
        let (kind, size, hash, link) = if ft.is_dir() {
            ('d', 0, String::new(), String::new())
        } else if ft.is_file() {
            let content = std::fs::read(entry.path()).unwrap();
            ('f', meta.len(), sha(&content), String::new())
        } else if ft.is_symlink() {
            let target = std::fs::read_link(entry.path()).unwrap();
            ('l', 0, String::new(), target.display().to_string())
        } else if ft.is_fifo() {
            ('p', 0, String::new(), String::new())
        } else if ft.is_char_device() {
            ('c', 0, String::new(), format!("{:x}", meta.rdev()))
        } else if ft.is_block_device() {
            ('b', 0, String::new(), format!("{:x}", meta.rdev()))
        } else {
            ('s', 0, String::new(), String::new())
        };
        let mut xattrs = BTreeMap::new();
        if let Ok(names) = storage_core::sys::xattr::llist(entry.path()) {
            for name in names {
                let name_str = name.to_string_lossy().into_owned();
                if name_str.starts_with("trusted.overlay.") || name_str.starts_with("user.overlay.")
                {
                    continue;
                }
                if let Ok(Some(v)) = storage_core::sys::xattr::lget(entry.path(), &name) {
                    xattrs.insert(name_str, v);
                }
            }
        }
        nodes.push(Node {
            path: String::from_utf8_lossy(rel.as_os_str().as_bytes()).into_owned(),
            kind,
            mode: if ft.is_symlink() {
                0o777
            } else {
                meta.mode() & 0o7777
            },
            uid: meta.uid(),
            gid: meta.gid(),
            size,
            hash,
            link,
            xattrs,
        });
    }
    nodes
}

/// The entries of a layer tar, sorted by path.
pub fn tar_entries(bytes: &[u8]) -> Vec<Node> {
    let mut archive = tar::Archive::new(bytes);
    let mut nodes = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut xattrs = BTreeMap::new();
        if let Some(exts) = entry.pax_extensions().unwrap() {
            for ext in exts {
                let ext = ext.unwrap();
                if let Some(name) = ext.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    xattrs.insert(name.to_string(), ext.value_bytes().to_vec());
                }
            }
        }
        let header = entry.header().clone();
        let path = entry.path().unwrap().display().to_string();
        let path = path.trim_end_matches('/').to_string();
        let kind = match header.entry_type() {
            tar::EntryType::Directory => 'd',
            tar::EntryType::Regular => 'f',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Link => 'h',
            tar::EntryType::Fifo => 'p',
            tar::EntryType::Char => 'c',
            tar::EntryType::Block => 'b',
            other => panic!("unexpected entry type {other:?} for {path}"),
        };
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        let link = header
            .link_name()
            .unwrap()
            .map(|l| l.display().to_string())
            .unwrap_or_default();
        // A whiteout's mode and owner mean nothing (overlay2 exports 0600,
        // aufs branches hold 0444 files, as in Docker).
        let whiteout = path.rsplit('/').next().unwrap_or("").starts_with(".wh.");
        let (mode, uid, gid) = if whiteout {
            (0, 0, 0)
        } else {
            (
                header.mode().unwrap() & 0o7777,
                header.uid().unwrap() as u32,
                header.gid().unwrap() as u32,
            )
        };
        nodes.push(Node {
            path,
            kind,
            mode,
            uid,
            gid,
            size: content.len() as u64,
            hash: if kind == 'f' {
                sha(&content)
            } else {
                String::new()
            },
            link,
            xattrs,
        });
    }
    nodes.sort();
    nodes
}

/// What is left in a driver home besides empty top-level directories
/// (the driver's fixed dirs: `l/`, `dir/`, `subvolumes/`, ...).
pub fn leftovers(home: &Path) -> Vec<String> {
    leftovers_beyond(home, &[])
}

/// [`leftovers`], not counting `keep`: paths relative to `home`, at most
/// two deep, that are the driver's own state rather than a layer's (the
/// devicemapper pool's files and base device, as Docker keeps them).
pub fn leftovers_beyond(home: &Path, keep: &[&str]) -> Vec<String> {
    let mut left = Vec::new();
    let Ok(entries) = std::fs::read_dir(home) else {
        return left;
    };
    let kept = |rel: &Path| keep.iter().any(|k| Path::new(k) == rel);
    for entry in entries {
        let entry = entry.unwrap();
        let path = entry.path();
        let rel = PathBuf::from(entry.file_name());
        if kept(&rel) {
            continue;
        }
        if !path.is_dir() || path.is_symlink() {
            left.push(format!("{} []", path.display()));
            continue;
        }
        let inner: Vec<String> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|name| !kept(&rel.join(name)))
            .map(|name| name.to_string_lossy().into_owned())
            .collect();
        if !inner.is_empty() {
            let shown: Vec<&String> = inner.iter().take(5).collect();
            left.push(format!("{} {shown:?}", path.display()));
        }
    }
    left
}

/// Mount points strictly below `dir`.
pub fn mounts_below(dir: &Path) -> Vec<String> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(storage_core::sys::mount::unescape_mountinfo)
        .filter(|p| Path::new(p).starts_with(&dir) && Path::new(p) != dir)
        .collect()
}

/// sha256 of `bytes` as a `sha256:` digest.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", sha(bytes))
}
