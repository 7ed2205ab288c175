//! Copying the content of one regular file into another, the cheapest way
//! the filesystem allows: FICLONE (shared extents), else `copy_file_range`
//! (in-kernel copy), else `pread`/`pwrite` through a buffer. Without a
//! clone, holes stay holes: only the data ranges `SEEK_DATA`/`SEEK_HOLE`
//! report are copied and the length is set at the end. [`Copier`] learns
//! once per tree what the filesystem refuses (as moby's `copyRegular`), so
//! a million-file copy does not retry a failing ioctl a million times.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use nix::errno::Errno;
use nix::unistd::{Whence, lseek};

use super::reflink;

/// How a file's content was copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// FICLONE: the extents are shared, nothing was read.
    Clone,
    /// `copy_file_range`: the kernel copied the data ranges.
    CopyRange,
    /// A user-space copy of the data ranges.
    ReadWrite,
}

/// Which copy methods are still worth trying, shared by the threads of one
/// tree copy, and how many files each method copied.
#[derive(Debug)]
pub struct Copier {
    clone: AtomicBool,
    range: AtomicBool,
    counts: [AtomicU64; 3],
}

impl Copier {
    /// A copier that tries FICLONE first when `try_clone`.
    pub fn new(try_clone: bool) -> Self {
        Self {
            clone: AtomicBool::new(try_clone),
            range: AtomicBool::new(true),
            counts: Default::default(),
        }
    }

    /// Files copied so far with `method`.
    pub fn count(&self, method: Method) -> u64 {
        self.counts[method as usize].load(Ordering::Relaxed)
    }

    /// Copies the `len` bytes of `src` into the empty file `dst` (open for
    /// writing, on the same filesystem for clone and copy range to apply).
    pub fn copy(&self, src: &File, dst: &File, len: u64) -> io::Result<Method> {
        let method = self.copy_inner(src, dst, len)?;
        self.counts[method as usize].fetch_add(1, Ordering::Relaxed);
        Ok(method)
    }

    fn copy_inner(&self, src: &File, dst: &File, len: u64) -> io::Result<Method> {
        if self.clone.load(Ordering::Relaxed) {
            match reflink::clone_file(src, dst) {
                Ok(()) => return Ok(Method::Clone),
                Err(e) if unsupported(&e) => {
                    self.clone.store(false, Ordering::Relaxed);
                    if e.raw_os_error() == Some(libc::EXDEV) {
                        self.range.store(false, Ordering::Relaxed);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let mut method = if self.range.load(Ordering::Relaxed) {
            Method::CopyRange
        } else {
            Method::ReadWrite
        };
        let mut buf = Vec::new();
        for (start, end) in data_ranges(src, len)? {
            let mut offset = start;
            while offset < end {
                if method == Method::CopyRange {
                    match copy_range(src, dst, offset, end - offset) {
                        Ok(0) => break,
                        Ok(n) => {
                            offset += n;
                            continue;
                        }
                        Err(e) if unsupported(&e) => {
                            self.range.store(false, Ordering::Relaxed);
                            method = Method::ReadWrite;
                        }
                        Err(e) => return Err(e),
                    }
                }
                if buf.is_empty() {
                    buf = vec![0u8; 256 * 1024];
                }
                let want = (end - offset).min(buf.len() as u64) as usize;
                let n = src.read_at(&mut buf[..want], offset)?;
                if n == 0 {
                    break;
                }
                dst.write_all_at(&buf[..n], offset)?;
                offset += n as u64;
            }
        }
        // Sets the length, leaving a trailing hole a hole.
        dst.set_len(len)?;
        Ok(method)
    }
}

/// Errors meaning "this filesystem (pair) cannot do it", not "this file".
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::EXDEV | libc::ENOSYS | libc::ENOTTY | libc::EINVAL)
    )
}

fn copy_range(src: &File, dst: &File, offset: u64, len: u64) -> io::Result<u64> {
    let mut off_in = offset as i64;
    let mut off_out = offset as i64;
    let len = len.min(1 << 30) as usize;
    // SAFETY: both descriptors are open for the call and the offsets are
    // live, exclusively borrowed `loff_t`s the kernel updates.
    let n = unsafe {
        libc::copy_file_range(
            src.as_raw_fd(),
            &mut off_in,
            dst.as_raw_fd(),
            &mut off_out,
            len,
            0,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as u64)
}

/// The `[start, end)` ranges of `src` (of length `len`) that hold data;
/// the whole file when the filesystem cannot tell.
pub fn data_ranges(src: &File, len: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut ranges = Vec::new();
    let mut offset = 0u64;
    while offset < len {
        let data = match lseek(src, offset as i64, Whence::SeekData) {
            Ok(data) => data as u64,
            Err(Errno::ENXIO) => break,
            Err(Errno::EINVAL | Errno::EOPNOTSUPP) => {
                ranges.push((offset, len));
                break;
            }
            Err(e) => return Err(e.into()),
        };
        if data >= len {
            break;
        }
        let hole = match lseek(src, data as i64, Whence::SeekHole) {
            Ok(hole) => (hole as u64).min(len),
            Err(Errno::ENXIO) => len,
            Err(e) => return Err(e.into()),
        };
        ranges.push((data, hole));
        offset = hole;
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn sparse_file_keeps_its_holes_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let src_path = dir.path().join("src");
        let src = File::create(&src_path).unwrap();
        src.write_all_at(b"head", 0).unwrap();
        src.write_all_at(b"middle", 8 << 20).unwrap();
        src.set_len(32 << 20).unwrap();
        src.sync_all().unwrap();
        let src = File::open(&src_path).unwrap();
        let dst_path = dir.path().join("dst");
        let dst = File::create(&dst_path).unwrap();
        let copier = Copier::new(false);
        copier.copy(&src, &dst, 32 << 20).unwrap();
        drop(dst);
        let (a, b) = (
            std::fs::read(&src_path).unwrap(),
            std::fs::read(&dst_path).unwrap(),
        );
        assert!(a == b, "content differs");
        let blocks = std::fs::metadata(&dst_path).unwrap().blocks();
        assert!(blocks * 512 < 4 << 20, "holes were filled: {blocks} blocks");
    }

    #[test]
    fn every_method_fallback_gives_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let src_path = dir.path().join("src");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&src_path, &data).unwrap();
        for try_clone in [true, false] {
            let copier = Copier::new(try_clone);
            copier.range.store(try_clone, Ordering::Relaxed);
            let dst_path = dir.path().join(format!("dst-{try_clone}"));
            let dst = File::create(&dst_path).unwrap();
            let src = File::open(&src_path).unwrap();
            copier.copy(&src, &dst, data.len() as u64).unwrap();
            assert!(std::fs::read(&dst_path).unwrap() == data);
        }
    }
}
