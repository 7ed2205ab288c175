//! The branch stack of an aufs union and its lookup rules: branch 0 is the
//! writable branch, the others are read-only, leftmost wins. `.wh.<name>`
//! in a branch hides `<name>` in the branches below it, `.wh..wh..opq` in a
//! directory hides everything below that directory, a non-directory hides
//! a directory below it, and `.wh..wh.*` names are aufs internals that are
//! never visible.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirEntryExt;
use std::path::{Path, PathBuf};

/// Prefix of whiteout marker files.
pub const WH_PREFIX: &[u8] = b".wh.";
/// Prefix of aufs internal names (`.wh..wh.plnk`, `.wh..wh.aufs`, ...).
pub const META_PREFIX: &[u8] = b".wh..wh.";
/// The marker that makes its directory opaque.
pub const OPAQUE: &str = ".wh..wh..opq";
/// aufs's pseudo-link directory at a branch root; the union stages
/// copy-ups there (root-level internals are never exported).
pub const PLINK_DIR: &str = ".wh..wh.plnk";

/// Whether `name` is reserved by aufs (a whiteout or an internal name).
pub fn is_reserved(name: &OsStr) -> bool {
    name.as_bytes().starts_with(WH_PREFIX)
}

/// `.wh.<name>`.
pub fn whiteout_name(name: &OsStr) -> OsString {
    let mut wh = OsString::from(".wh.");
    wh.push(name);
    wh
}

/// A visible entry: the branch it comes from, its metadata, and for a
/// directory the branches (top first) whose directories merge into it.
#[derive(Debug)]
pub struct Found {
    pub branch: usize,
    pub meta: Metadata,
    pub dir_branches: Vec<usize>,
}

/// One entry of a merged directory listing.
#[derive(Debug, Clone)]
pub struct Listed {
    pub name: OsString,
    pub file_type: std::fs::FileType,
    pub ino: u64,
}

fn lstat(path: &Path) -> io::Result<Option<Metadata>> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn exists(path: &Path) -> io::Result<bool> {
    Ok(lstat(path)?.is_some())
}

/// The branch directories, writable first.
#[derive(Debug, Clone)]
pub struct Branches {
    dirs: Vec<PathBuf>,
}

impl Branches {
    pub fn new(rw: PathBuf, ro: Vec<PathBuf>) -> Self {
        let mut dirs = vec![rw];
        dirs.extend(ro);
        Self { dirs }
    }

    pub fn len(&self) -> usize {
        self.dirs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    pub fn rw(&self) -> &Path {
        &self.dirs[0]
    }

    pub fn dir(&self, branch: usize) -> &Path {
        &self.dirs[branch]
    }

    /// `rel` (relative to the union root, empty for the root) in `branch`.
    pub fn path(&self, branch: usize, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.dirs[branch].clone()
        } else {
            self.dirs[branch].join(rel)
        }
    }

    fn is_opaque(&self, branch: usize, rel: &Path) -> io::Result<bool> {
        exists(&self.path(branch, rel).join(OPAQUE))
    }

    /// The branches merging into the root directory.
    pub fn root_branches(&self) -> io::Result<Vec<usize>> {
        let mut out = Vec::new();
        for b in 0..self.dirs.len() {
            out.push(b);
            if self.is_opaque(b, Path::new(""))? {
                break;
            }
        }
        Ok(out)
    }

    /// Looks up `name` in the directory `parent` whose merging branches are
    /// `dir_branches`.
    pub fn lookup(
        &self,
        parent: &Path,
        dir_branches: &[usize],
        name: &OsStr,
    ) -> io::Result<Option<Found>> {
        if is_reserved(name) {
            return Ok(None);
        }
        let rel = parent.join(name);
        let wh = parent.join(whiteout_name(name));
        for (k, &b) in dir_branches.iter().enumerate() {
            if let Some(meta) = lstat(&self.path(b, &rel))? {
                let dir_branches = if meta.is_dir() {
                    self.merging_below(&rel, &wh, &dir_branches[k..])?
                } else {
                    Vec::new()
                };
                return Ok(Some(Found {
                    branch: b,
                    meta,
                    dir_branches,
                }));
            }
            if exists(&self.path(b, &wh))? {
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// The branches of directory `rel` found in `candidates[0]`: itself,
    /// then lower directories of the same name until an opaque marker, a
    /// whiteout or a non-directory stops the merge.
    fn merging_below(&self, rel: &Path, wh: &Path, candidates: &[usize]) -> io::Result<Vec<usize>> {
        let mut out = vec![candidates[0]];
        if self.is_opaque(candidates[0], rel)? {
            return Ok(out);
        }
        for &b in &candidates[1..] {
            match lstat(&self.path(b, rel))? {
                Some(m) if m.is_dir() => {
                    out.push(b);
                    if self.is_opaque(b, rel)? {
                        break;
                    }
                }
                Some(_) => break,
                None => {
                    if exists(&self.path(b, wh))? {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Whether `name` in `parent` is visible from the read-only branches
    /// alone (then removing the writable copy must leave a whiteout).
    pub fn visible_below_rw(
        &self,
        parent: &Path,
        dir_branches: &[usize],
        name: &OsStr,
    ) -> io::Result<bool> {
        let lower: Vec<usize> = dir_branches.iter().copied().filter(|&b| b != 0).collect();
        if lower.is_empty() {
            return Ok(false);
        }
        // A whiteout in the writable branch is what hides it now; look
        // below as if it were absent.
        Ok(self.lookup(parent, &lower, name)?.is_some())
    }

    /// The merged listing of directory `rel`.
    pub fn list(&self, rel: &Path, dir_branches: &[usize]) -> io::Result<Vec<Listed>> {
        let mut seen: HashSet<OsString> = HashSet::new();
        let mut hidden: HashSet<OsString> = HashSet::new();
        let mut out = Vec::new();
        for &b in dir_branches {
            let dir = self.path(b, rel);
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let mut whiteouts = Vec::new();
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name();
                let bytes = name.as_bytes();
                if bytes.starts_with(META_PREFIX) {
                    continue;
                }
                if let Some(target) = bytes.strip_prefix(WH_PREFIX) {
                    whiteouts.push(OsStr::from_bytes(target).to_os_string());
                    continue;
                }
                if hidden.contains(&name) || !seen.insert(name.clone()) {
                    continue;
                }
                out.push(Listed {
                    file_type: entry.file_type()?,
                    ino: entry.ino(),
                    name,
                });
            }
            hidden.extend(whiteouts);
        }
        Ok(out)
    }
}
