//! Extended attributes without following symlinks: `lgetxattr`,
//! `llistxattr`, `lsetxattr` on paths and `fsetxattr`/`fgetxattr` on open
//! descriptors. Errors are plain `io::Error`s; callers add the path.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Runs a "size query, then fill" xattr call until the buffer is big enough
/// (the value may grow between the two calls).
fn read_sized(mut call: impl FnMut(&mut [u8]) -> isize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    loop {
        let size = call(&mut []);
        if size < 0 {
            return Err(io::Error::last_os_error());
        }
        buf.resize(size as usize, 0);
        let got = call(&mut buf);
        if got >= 0 {
            buf.truncate(got as usize);
            return Ok(buf);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ERANGE) {
            return Err(err);
        }
    }
}

fn missing(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::ENODATA)
}

/// The value of attribute `name` of `path` itself (a symlink is not
/// followed), `None` when the attribute is not set.
pub fn lget(path: &Path, name: impl AsRef<OsStr>) -> io::Result<Option<Vec<u8>>> {
    let cpath = cstring(path.as_os_str().as_bytes())?;
    let cname = cstring(name.as_ref().as_bytes())?;
    let value = read_sized(|buf| {
        // SAFETY: both strings are NUL-terminated and live across the call;
        // `buf` is valid for `buf.len()` writable bytes (a zero length asks
        // for the size only and the kernel then writes nothing).
        unsafe {
            libc::lgetxattr(
                cpath.as_ptr(),
                cname.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        }
    });
    match value {
        Ok(v) => Ok(Some(v)),
        Err(e) if missing(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The names of all attributes of `path` itself (a symlink is not followed).
pub fn llist(path: &Path) -> io::Result<Vec<OsString>> {
    let cpath = cstring(path.as_os_str().as_bytes())?;
    let raw = read_sized(|buf| {
        // SAFETY: `cpath` is NUL-terminated and outlives the call; `buf` is
        // valid for `buf.len()` writable bytes.
        unsafe { libc::llistxattr(cpath.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) }
    })?;
    Ok(raw
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| OsString::from_vec(n.to_vec()))
        .collect())
}

/// Sets attribute `name` of `path` itself (a symlink is not followed).
pub fn lset(path: &Path, name: impl AsRef<OsStr>, value: &[u8]) -> io::Result<()> {
    let cpath = cstring(path.as_os_str().as_bytes())?;
    let cname = cstring(name.as_ref().as_bytes())?;
    // SAFETY: both strings are NUL-terminated and `value` is valid for
    // `value.len()` readable bytes for the duration of the call.
    let rc = unsafe {
        libc::lsetxattr(
            cpath.as_ptr(),
            cname.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets attribute `name` on the open file or directory `fd`.
pub fn fset(fd: BorrowedFd<'_>, name: &str, value: &[u8]) -> io::Result<()> {
    let cname = cstring(name.as_bytes())?;
    // SAFETY: `fd` is a live descriptor borrowed for the call, `cname` is
    // NUL-terminated and `value` is valid for `value.len()` readable bytes.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            cname.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The value of attribute `name` of the open file or directory `fd`, `None`
/// when it is not set.
pub fn fget(fd: BorrowedFd<'_>, name: &str) -> io::Result<Option<Vec<u8>>> {
    let cname = cstring(name.as_bytes())?;
    let value = read_sized(|buf| {
        // SAFETY: `fd` is live for the call, `cname` is NUL-terminated and
        // `buf` is valid for `buf.len()` writable bytes.
        unsafe {
            libc::fgetxattr(
                fd.as_raw_fd(),
                cname.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        }
    });
    match value {
        Ok(v) => Ok(Some(v)),
        Err(e) if missing(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_xattr_round_trip_or_unsupported() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        match lset(&file, "user.layerscope", b"v") {
            Ok(()) => {
                assert_eq!(
                    lget(&file, "user.layerscope").unwrap().as_deref(),
                    Some(&b"v"[..])
                );
                assert!(llist(&file).unwrap().iter().any(|n| n == "user.layerscope"));
            }
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP)),
        }
        assert_eq!(lget(&file, "user.absent").unwrap_or(None), None);
    }
}
