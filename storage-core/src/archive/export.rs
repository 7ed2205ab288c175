//! [`export_dir`] and [`export_changes`]: a diff directory (an overlay
//! upper dir, an aufs branch, a fresh layer) or a list of changes as an OCI
//! layer tar. The walk is in lexical order so the same tree always gives
//! the same bytes (and so the same diff-id). Overlay whiteouts (char 0/0,
//! `trusted.overlay.opaque=y`) become `.wh.` entries; files sharing an
//! inode become tar hardlinks to the first name.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tar::EntryType;

use super::changes::{Change, ChangeKind};
use super::error::ArchiveError;
use super::tar_writer::{EntrySpec, TarWriter};
use super::whiteout::{
    OVERLAY_OPAQUE_XATTR, WHITEOUT_META_PREFIX, WHITEOUT_OPAQUE_DIR, WHITEOUT_PREFIX,
    WhiteoutFormat,
};
use super::xattrs::{self, Xattrs};
use crate::sys::xattr;

/// What an export wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Entries written (whiteouts and hardlinks included).
    pub entries: u64,
    /// `.wh.` entries written (deletions and opaque markers).
    pub whiteouts: u64,
    /// Content bytes of regular files.
    pub content_bytes: u64,
    /// Length of the tar stream.
    pub tar_bytes: u64,
}

/// Writes `dir` as a layer tar to `out`, converting whiteouts from
/// `format` (overlay: char 0/0 and the opaque xattr; aufs: `.wh.` files
/// kept, aufs internals skipped; naive: nothing to convert).
pub fn export_dir(
    dir: &Path,
    format: WhiteoutFormat,
    out: impl Write,
) -> Result<ExportStats, ArchiveError> {
    let mut exporter = Exporter::new(format, out);
    let walk = walkdir::WalkDir::new(dir)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            !(format == WhiteoutFormat::Aufs && e.depth() == 1 && is_aufs_internal(e.file_name()))
        });
    for entry in walk {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(dir).to_path_buf();
            ArchiveError::path("walking", path, e.into())
        })?;
        let rel = entry
            .path()
            .strip_prefix(dir)
            .expect("walkdir yields paths below its root");
        exporter.add(entry.path(), rel.as_os_str().as_bytes())?;
    }
    exporter.finish()
}

fn is_aufs_internal(name: &OsStr) -> bool {
    let name = name.as_bytes();
    name.starts_with(WHITEOUT_META_PREFIX.as_bytes()) && name != WHITEOUT_OPAQUE_DIR.as_bytes()
}

/// Writes `changes` (paths absolute in the container) of the tree `root`
/// as a layer tar, as moby's `ExportChanges` does for drivers without a
/// native diff: sorted by path, deletions as `.wh.<name>` entries, and
/// every parent directory of a change written before it.
pub fn export_changes(
    root: &Path,
    changes: &[Change],
    out: impl Write,
) -> Result<ExportStats, ArchiveError> {
    let mut sorted: Vec<&Change> = changes.iter().collect();
    sorted.sort_by(|a, b| {
        a.path
            .as_os_str()
            .as_bytes()
            .cmp(b.path.as_os_str().as_bytes())
    });
    let mut exporter = Exporter::new(WhiteoutFormat::Naive, out);
    let mut emitted: HashSet<PathBuf> = HashSet::new();
    for change in sorted {
        let rel = change
            .path
            .strip_prefix("/")
            .unwrap_or(&change.path)
            .to_path_buf();
        if rel.as_os_str().is_empty() {
            continue;
        }
        let mut ancestors: Vec<&Path> = rel
            .ancestors()
            .skip(1)
            .filter(|a| !a.as_os_str().is_empty())
            .collect();
        ancestors.reverse();
        for parent in ancestors {
            if emitted.insert(parent.to_path_buf()) {
                let src = root.join(parent);
                if src.is_dir() {
                    exporter.add(&src, parent.as_os_str().as_bytes())?;
                }
            }
        }
        if !emitted.insert(rel.clone()) {
            continue;
        }
        match change.kind {
            ChangeKind::Deleted => exporter.whiteout(&rel)?,
            ChangeKind::Added | ChangeKind::Modified => {
                exporter.add(&root.join(&rel), rel.as_os_str().as_bytes())?;
            }
        }
    }
    exporter.finish()
}

struct Exporter<W: Write> {
    tar: TarWriter<W>,
    format: WhiteoutFormat,
    /// First tar name of every multiply-linked inode.
    links: HashMap<(u64, u64), Vec<u8>>,
    stats: ExportStats,
}

impl<W: Write> Exporter<W> {
    fn new(format: WhiteoutFormat, out: W) -> Self {
        Exporter {
            tar: TarWriter::new(out),
            format,
            links: HashMap::new(),
            stats: ExportStats::default(),
        }
    }

    fn write(
        &mut self,
        spec: &EntrySpec,
        data: Option<&mut dyn Read>,
        src: &Path,
    ) -> Result<(), ArchiveError> {
        self.tar
            .append(spec, data)
            .map_err(|e| ArchiveError::Write {
                what: "layer tar",
                source: io::Error::new(e.kind(), format!("{}: {e}", src.display())),
            })?;
        self.stats.entries += 1;
        Ok(())
    }

    /// A `.wh.<name>` entry deleting `rel`.
    fn whiteout(&mut self, rel: &Path) -> Result<(), ArchiveError> {
        let spec = EntrySpec {
            mode: 0o600,
            ..EntrySpec::new(whiteout_name(rel), EntryType::Regular)
        };
        self.write(&spec, None, rel)?;
        self.stats.whiteouts += 1;
        Ok(())
    }

    /// Adds the file at `src` as `name` (relative, no trailing slash).
    fn add(&mut self, src: &Path, name: &[u8]) -> Result<(), ArchiveError> {
        let meta =
            std::fs::symlink_metadata(src).map_err(|e| ArchiveError::path("lstat", src, e))?;
        let ft = meta.file_type();
        let is_whiteout =
            self.format == WhiteoutFormat::Overlay && ft.is_char_device() && meta.rdev() == 0;
        if is_whiteout {
            let spec = EntrySpec {
                mode: 0o600,
                uid: meta.uid().into(),
                gid: meta.gid().into(),
                mtime: meta.mtime(),
                ..EntrySpec::new(
                    whiteout_name(Path::new(OsStr::from_bytes(name))),
                    EntryType::Regular,
                )
            };
            self.write(&spec, None, src)?;
            self.stats.whiteouts += 1;
            return Ok(());
        }
        if ft.is_socket() {
            // Sockets cannot be archived; moby skips them too.
            return Ok(());
        }
        let mut spec = EntrySpec {
            mode: meta.mode() & 0o7777,
            uid: meta.uid().into(),
            gid: meta.gid().into(),
            mtime: meta.mtime(),
            xattrs: read_xattrs(src)?,
            ..EntrySpec::new(name.to_vec(), EntryType::Regular)
        };
        if ft.is_dir() {
            spec.kind = EntryType::Directory;
            spec.name.push(b'/');
        } else if ft.is_symlink() {
            spec.kind = EntryType::Symlink;
            spec.link = std::fs::read_link(src)
                .map_err(|e| ArchiveError::path("readlink", src, e))?
                .into_os_string()
                .into_vec();
        } else if ft.is_char_device() || ft.is_block_device() {
            spec.kind = if ft.is_char_device() {
                EntryType::Char
            } else {
                EntryType::Block
            };
            let rdev = meta.rdev();
            spec.dev_major = nix::sys::stat::major(rdev) as u32;
            spec.dev_minor = nix::sys::stat::minor(rdev) as u32;
        } else if ft.is_fifo() {
            spec.kind = EntryType::Fifo;
        } else {
            spec.size = meta.len();
        }

        if !ft.is_dir() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key) {
                spec.kind = EntryType::Link;
                spec.link = first.clone();
                spec.size = 0;
                return self.write(&spec, None, src);
            }
            self.links.insert(key, spec.name.clone());
        }

        let opaque = ft.is_dir()
            && self.format == WhiteoutFormat::Overlay
            && xattr::lget(src, OVERLAY_OPAQUE_XATTR)
                .map_err(|e| ArchiveError::path("reading xattr of", src, e))?
                .as_deref()
                == Some(b"y");

        if spec.kind == EntryType::Regular && spec.size > 0 {
            let mut file = File::options()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(src)
                .map_err(|e| ArchiveError::path("opening", src, e))?;
            self.write(&spec, Some(&mut file), src)?;
            self.stats.content_bytes += spec.size;
        } else {
            self.write(&spec, None, src)?;
        }

        if opaque {
            let mut marker = spec.name.clone();
            marker.extend_from_slice(WHITEOUT_OPAQUE_DIR.as_bytes());
            let spec = EntrySpec {
                mode: spec.mode & 0o777,
                uid: spec.uid,
                gid: spec.gid,
                ..EntrySpec::new(marker, EntryType::Regular)
            };
            self.write(&spec, None, src)?;
            self.stats.whiteouts += 1;
        }
        Ok(())
    }

    fn finish(self) -> Result<ExportStats, ArchiveError> {
        let mut stats = self.stats;
        let (mut out, len) = self.tar.finish().map_err(|source| ArchiveError::Write {
            what: "layer tar",
            source,
        })?;
        out.flush().map_err(|source| ArchiveError::Write {
            what: "layer tar",
            source,
        })?;
        stats.tar_bytes = len;
        Ok(stats)
    }
}

/// `dir/.wh.base` for the relative path `dir/base`.
fn whiteout_name(rel: &Path) -> Vec<u8> {
    let mut name = Vec::new();
    if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
        name.extend_from_slice(parent.as_os_str().as_bytes());
        name.push(b'/');
    }
    name.extend_from_slice(WHITEOUT_PREFIX.as_bytes());
    name.extend_from_slice(rel.file_name().unwrap_or(rel.as_os_str()).as_bytes());
    name
}

/// The xattrs of `path` for its tar entry. A `security.capability` of
/// revision 3 is written as revision 2, as moby does (the root uid it
/// names means nothing outside its user namespace).
fn read_xattrs(path: &Path) -> Result<Xattrs, ArchiveError> {
    let mut attrs = xattrs::read(path)?;
    for (key, value) in &mut attrs {
        if key == b"security.capability" && value.len() > 20 && value[3] == 3 {
            value[3] = 2;
            value.truncate(20);
        }
    }
    Ok(attrs)
}
