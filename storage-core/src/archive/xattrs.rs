//! The xattrs a layer carries: every attribute of a file except overlayfs'
//! own bookkeeping (`trusted.overlay.*`, `user.overlay.*`), read without
//! following symlinks and sorted by name.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::error::ArchiveError;
use super::whiteout::OVERLAY_XATTR_PREFIX;
use crate::sys::xattr;

/// `(name, value)` pairs sorted by name.
pub(crate) type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// True for overlayfs' own attributes, which never travel in a layer.
pub(crate) fn is_overlay_private(name: &[u8]) -> bool {
    name.starts_with(OVERLAY_XATTR_PREFIX.as_bytes()) || name.starts_with(b"user.overlay.")
}

/// The layer-relevant xattrs of `path`; none on filesystems without xattrs.
pub(crate) fn read(path: &Path) -> Result<Xattrs, ArchiveError> {
    let err = |e| ArchiveError::path("reading xattrs of", path, e);
    let names = match xattr::llist(path) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(Vec::new()),
        Err(e) => return Err(err(e)),
    };
    let mut out = Vec::new();
    for name in names {
        if is_overlay_private(name.as_bytes()) {
            continue;
        }
        if let Some(value) = xattr::lget(path, &name).map_err(err)? {
            out.push((name.as_bytes().to_vec(), value));
        }
    }
    out.sort();
    Ok(out)
}
