//! Helpers shared by the archive tests: a raw tar writer that can produce
//! exactly the bytes a test needs (hostile names included, which the tar
//! crate's own builder refuses), and small filesystem probes.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use sha2::{Digest, Sha256};
use tar::{EntryType, GnuExtSparseHeader, Header};

/// Builds a tar stream block by block.
#[derive(Default)]
pub struct RawTar {
    pub out: Vec<u8>,
}

/// Fields of one entry; name and link are written verbatim.
pub struct Spec<'a> {
    pub name: &'a [u8],
    pub kind: EntryType,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub link: &'a [u8],
    pub dev: (u32, u32),
}

impl<'a> Spec<'a> {
    pub fn new(name: &'a str, kind: EntryType) -> Self {
        Spec {
            name: name.as_bytes(),
            kind,
            mode: if kind == EntryType::Directory {
                0o755
            } else {
                0o644
            },
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
            link: b"",
            dev: (0, 0),
        }
    }
}

fn pad(out: &mut Vec<u8>) {
    let rem = out.len() % 512;
    if rem != 0 {
        out.resize(out.len() + 512 - rem, 0);
    }
}

pub fn header(spec: &Spec<'_>, size: u64) -> Header {
    let mut h = Header::new_ustar();
    let n = spec.name.len().min(100);
    h.as_old_mut().name[..n].copy_from_slice(&spec.name[..n]);
    let l = spec.link.len().min(100);
    h.as_old_mut().linkname[..l].copy_from_slice(&spec.link[..l]);
    h.set_entry_type(spec.kind);
    h.set_mode(spec.mode);
    h.set_uid(spec.uid);
    h.set_gid(spec.gid);
    h.set_mtime(spec.mtime);
    h.set_size(size);
    h.set_device_major(spec.dev.0).unwrap();
    h.set_device_minor(spec.dev.1).unwrap();
    h.set_cksum();
    h
}

impl RawTar {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn block(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
        pad(&mut self.out);
    }

    pub fn entry(&mut self, spec: &Spec<'_>, data: &[u8]) {
        let h = header(spec, data.len() as u64);
        self.out.extend_from_slice(h.as_bytes());
        self.block(data);
    }

    pub fn file(&mut self, name: &str, data: &[u8]) {
        self.entry(&Spec::new(name, EntryType::Regular), data);
    }

    pub fn file_mode(&mut self, name: &str, mode: u32, data: &[u8]) {
        let mut s = Spec::new(name, EntryType::Regular);
        s.mode = mode;
        self.entry(&s, data);
    }

    pub fn dir(&mut self, name: &str) {
        self.entry(&Spec::new(name, EntryType::Directory), b"");
    }

    pub fn symlink(&mut self, name: &str, target: &str) {
        let mut s = Spec::new(name, EntryType::Symlink);
        s.link = target.as_bytes();
        s.mode = 0o777;
        self.entry(&s, b"");
    }

    pub fn hardlink(&mut self, name: &str, target: &str) {
        let mut s = Spec::new(name, EntryType::Link);
        s.link = target.as_bytes();
        self.entry(&s, b"");
    }

    /// A PAX extended header with `records`, then the entry.
    pub fn pax_entry(&mut self, records: &[(&str, &[u8])], spec: &Spec<'_>, data: &[u8]) {
        let mut body = Vec::new();
        for (k, v) in records {
            let base = k.len() + v.len() + 3;
            let mut len = base + 1;
            while len != base + len.to_string().len() {
                len = base + len.to_string().len();
            }
            body.extend_from_slice(format!("{len} {k}=").as_bytes());
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        let mut x = Spec::new("PaxHeaders.0/x", EntryType::XHeader);
        x.mtime = 0;
        self.entry(&x, &body);
        self.entry(spec, data);
    }

    /// A GNU long name ('L') entry, then the entry (whose own name field
    /// holds a truncated name).
    pub fn gnu_long_name(&mut self, name: &str, kind: EntryType, data: &[u8]) {
        let mut long = name.as_bytes().to_vec();
        long.push(0);
        let mut h = Header::new_gnu();
        h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        h.set_entry_type(EntryType::GNULongName);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(long.len() as u64);
        h.set_cksum();
        self.out.extend_from_slice(h.as_bytes());
        self.block(&long);
        let mut main = Header::new_gnu();
        main.as_old_mut()
            .name
            .copy_from_slice(&name.as_bytes()[..100]);
        main.set_entry_type(kind);
        main.set_mode(0o644);
        main.set_uid(0);
        main.set_gid(0);
        main.set_mtime(1_600_000_000);
        main.set_size(data.len() as u64);
        main.set_cksum();
        self.out.extend_from_slice(main.as_bytes());
        self.block(data);
    }

    /// An old-GNU sparse file ('S') of `real_size` bytes whose data
    /// regions are `regions` (offset, bytes); more than four regions use
    /// extension blocks. As GNU tar does, a file ending in a hole gets a last, empty region
    /// at `real_size`.
    pub fn gnu_sparse(&mut self, name: &str, real_size: u64, regions: &[(u64, Vec<u8>)]) {
        let mut regions = regions.to_vec();
        if regions
            .last()
            .is_none_or(|(o, d)| o + d.len() as u64 != real_size)
        {
            regions.push((real_size, Vec::new()));
        }
        let regions = &regions[..];
        let stored: u64 = regions.iter().map(|(_, d)| d.len() as u64).sum();
        let mut h = Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(EntryType::GNUSparse);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(stored);
        {
            let gnu = h.as_gnu_mut().unwrap();
            gnu.set_real_size(real_size);
            for (slot, (off, data)) in gnu.sparse.iter_mut().zip(regions) {
                slot.set_offset(*off);
                slot.set_length(data.len() as u64);
            }
            gnu.set_is_extended(regions.len() > 4);
        }
        h.set_cksum();
        self.out.extend_from_slice(h.as_bytes());
        let mut rest = &regions[regions.len().min(4)..];
        while !rest.is_empty() {
            let mut ext = GnuExtSparseHeader::new();
            let take = rest.len().min(21);
            for (slot, (off, data)) in ext.sparse.iter_mut().zip(&rest[..take]) {
                slot.set_offset(*off);
                slot.set_length(data.len() as u64);
            }
            rest = &rest[take..];
            ext.set_is_extended(!rest.is_empty());
            self.out.extend_from_slice(ext.as_bytes());
        }
        for (_, data) in regions {
            self.out.extend_from_slice(data);
        }
        pad(&mut self.out);
    }

    /// The two zero blocks that end an archive.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.extend_from_slice(&[0u8; 1024]);
        self.out
    }
}

pub fn sha256_id(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

pub fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 3).unwrap()
}

pub fn lstat(p: &Path) -> std::fs::Metadata {
    std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
}

pub fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

pub fn is_whiteout(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(p)
        .map(|m| m.file_type().is_char_device() && m.rdev() == 0)
        .unwrap_or(false)
}

pub fn getxattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    storage_core::sys::xattr::lget(p, OsStr::new(name)).unwrap()
}

/// Every entry of a tar as (name, type byte, size, link), in order.
pub fn list(tar_bytes: &[u8]) -> Vec<(String, u8, u64, String)> {
    let mut a = tar::Archive::new(tar_bytes);
    a.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let link = e
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned())
                .unwrap_or_default();
            (name, e.header().as_bytes()[156], e.size(), link)
        })
        .collect()
}

/// A tree listing for comparisons: relative path -> (type+mode, uid, gid,
/// size, mtime for non-dirs, rdev, symlink target, content, xattrs).
pub fn snapshot(root: &Path) -> Vec<String> {
    snapshot_with(root, true)
}

/// [`snapshot`], optionally without directory mtimes.
pub fn snapshot_with(root: &Path, dir_mtimes: bool) -> Vec<String> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let m = lstat(e.path());
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let content = if m.is_file() {
            hex::encode(Sha256::digest(std::fs::read(e.path()).unwrap()))
        } else {
            String::new()
        };
        let link = if m.file_type().is_symlink() {
            std::fs::read_link(e.path()).unwrap().display().to_string()
        } else {
            String::new()
        };
        let mtime = if m.is_dir() && !dir_mtimes {
            0
        } else {
            m.mtime()
        };
        let mut xattrs: Vec<String> = storage_core::sys::xattr::llist(e.path())
            .unwrap()
            .into_iter()
            .map(|n| {
                let v = storage_core::sys::xattr::lget(e.path(), &n)
                    .unwrap()
                    .unwrap_or_default();
                format!("{}={}", n.to_string_lossy(), hex::encode(v))
            })
            .collect();
        xattrs.sort();
        out.push(format!(
            "{rel} mode={:o} uid={} gid={} size={} mtime={mtime} rdev={} link={link} sha={content} x={}",
            m.mode(),
            m.uid(),
            m.gid(),
            if m.is_dir() { 0 } else { m.size() },
            m.rdev(),
            xattrs.join(",")
        ));
    }
    out
}

pub fn name_bytes(s: &str) -> &[u8] {
    OsStr::new(s).as_bytes()
}
