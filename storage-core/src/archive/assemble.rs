//! [`assemble_layer`]: the reverse of tar-split. Replays the recorded raw
//! segments and streams each entry's content from the layer's directory,
//! checking it against the recorded CRC-64, to rebuild the original tar
//! byte for byte (so its sha256 is the layer's diff-id again).
//!
//! GNU sparse entries are rebuilt too: the content was recorded expanded
//! (holes as zeros, as Go's reader yields it), so the sparse map is read
//! back from the entry's header segment and only its data regions are
//! written.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::entry_name;
use super::error::{ArchiveError, Problem};
use super::root::Root;
use super::tar_split::{CRC64, Record, TarSplitReader};
use crate::sys::openat::open_in_root;

const BLOCK: u64 = 512;
const COPY_BUF: usize = 128 * 1024;
/// Header bytes kept to find a sparse map; beyond this (a huge trailer)
/// nothing more is kept.
const MAX_HEADER_BYTES: usize = 16 * 1024 * 1024;

/// Rebuilds the original layer tar from `tar_split` (uncompressed JSON
/// lines) and the content in `files` (the layer's diff directory), writing
/// it to `out`. Returns the number of bytes written.
pub fn assemble_layer(
    tar_split: impl Read,
    files: &Path,
    mut out: impl Write,
) -> Result<u64, ArchiveError> {
    let root = Root::open(files).map_err(|e| ArchiveError::path("opening", files, e))?;
    let write_err = |source| ArchiveError::Write {
        what: "assembled tar",
        source,
    };
    let mut written = 0u64;
    // Raw bytes since the last file record: the padding of that file, then
    // the headers of the next one.
    let mut headers: Vec<u8> = Vec::new();
    let mut pad = 0u64;
    let mut buf = vec![0u8; COPY_BUF];
    for record in TarSplitReader::new(BufReader::new(tar_split)) {
        match record? {
            Record::Segment(bytes) => {
                out.write_all(&bytes).map_err(write_err)?;
                written += bytes.len() as u64;
                if headers.len() < MAX_HEADER_BYTES {
                    headers.extend_from_slice(&bytes);
                }
            }
            Record::File { name, size, crc } => {
                let sparse = sparse_map(&headers, pad);
                headers.clear();
                let physical = match &sparse {
                    Some(map) => map.iter().map(|(_, len)| len).sum(),
                    None => size,
                };
                pad = (BLOCK - physical % BLOCK) % BLOCK;
                if size == 0 {
                    continue;
                }
                let shown = entry_name::display(&name);
                let mut file = open_content(&root, &name)
                    .map_err(|e| ArchiveError::entry(shown.as_str(), "opening content file", e))?;
                let copied = copy_content(&mut file, &mut out, size, sparse.as_deref(), &mut buf)
                    .map_err(|e| match e {
                    CopyError::Read(e) => {
                        ArchiveError::entry(shown.as_str(), "reading content file", e)
                    }
                    CopyError::Write(e) => write_err(e),
                    CopyError::Size(found) => ArchiveError::refused(
                        shown.as_str(),
                        Problem::SizeMismatch {
                            expected: size,
                            found,
                        },
                    ),
                })?;
                written += copied.written;
                if crc != Some(copied.crc.to_be_bytes()) {
                    return Err(ArchiveError::refused(shown, Problem::ChecksumMismatch));
                }
            }
        }
    }
    out.flush().map_err(write_err)?;
    Ok(written)
}

fn open_content(root: &Root, name: &[u8]) -> std::io::Result<File> {
    let trimmed = name.strip_suffix(b"/").unwrap_or(name);
    let fd = open_in_root(
        root.fd(),
        Path::new(OsStr::from_bytes(trimmed)),
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )?;
    Ok(File::from(fd))
}

enum CopyError {
    Read(std::io::Error),
    Write(std::io::Error),
    /// The file has this many bytes, not the recorded size.
    Size(u64),
}

struct Copied {
    written: u64,
    crc: u64,
}

/// Streams `size` bytes of `file` into the CRC and, for a plain entry, to
/// `out`; for a sparse entry only the bytes inside `map` regions go out.
fn copy_content(
    file: &mut File,
    out: &mut impl Write,
    size: u64,
    map: Option<&[(u64, u64)]>,
    buf: &mut [u8],
) -> Result<Copied, CopyError> {
    let mut digest = CRC64.digest();
    let mut offset = 0u64;
    let mut written = 0u64;
    let mut region = 0usize;
    while offset < size {
        let want = buf.len().min((size - offset) as usize);
        let n = match file.read(&mut buf[..want]) {
            Ok(0) => return Err(CopyError::Size(offset)),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        let data = &buf[..n];
        digest.update(data);
        match map {
            None => {
                out.write_all(data).map_err(CopyError::Write)?;
                written += n as u64;
            }
            Some(map) => {
                let end = offset + n as u64;
                while region < map.len() {
                    let (r_off, r_len) = map[region];
                    let r_end = r_off + r_len;
                    let from = r_off.max(offset);
                    let to = r_end.min(end);
                    if from < to {
                        let slice = &data[(from - offset) as usize..(to - offset) as usize];
                        out.write_all(slice).map_err(CopyError::Write)?;
                        written += slice.len() as u64;
                    }
                    if r_end <= end {
                        region += 1;
                    } else {
                        break;
                    }
                }
            }
        }
        offset += n as u64;
    }
    // Longer than recorded is a mismatch too.
    let mut probe = [0u8; 1];
    loop {
        match file.read(&mut probe) {
            Ok(0) => break,
            Ok(_) => {
                let len = file.metadata().map(|m| m.len()).unwrap_or(size + 1);
                return Err(CopyError::Size(len));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(CopyError::Read(e)),
        }
    }
    Ok(Copied {
        written,
        crc: digest.finalize(),
    })
}

/// The data regions `(offset, length)` of a GNU sparse entry whose headers
/// start `pad` bytes into `segment`; `None` for any other entry.
fn sparse_map(segment: &[u8], pad: u64) -> Option<Vec<(u64, u64)>> {
    let mut pos = usize::try_from(pad).ok()?;
    let block = |pos: usize| segment.get(pos..pos + BLOCK as usize);
    loop {
        let raw = block(pos)?;
        pos += BLOCK as usize;
        let header = tar::Header::from_byte_slice(raw);
        match raw[156] {
            b'x' | b'g' | b'L' | b'K' => {
                let size = header.entry_size().ok()?;
                pos = pos.checked_add(usize::try_from(size.div_ceil(BLOCK) * BLOCK).ok()?)?;
            }
            b'S' => {
                let gnu = header.as_gnu()?;
                let mut map = Vec::new();
                let mut push = |s: &tar::GnuSparseHeader| -> Option<()> {
                    if !s.is_empty() {
                        map.push((s.offset().ok()?, s.length().ok()?));
                    }
                    Some(())
                };
                for s in &gnu.sparse {
                    push(s)?;
                }
                let mut extended = gnu.is_extended();
                while extended {
                    let mut ext = tar::GnuExtSparseHeader::new();
                    ext.as_mut_bytes().copy_from_slice(block(pos)?);
                    pos += BLOCK as usize;
                    for s in &ext.sparse {
                        push(s)?;
                    }
                    extended = ext.is_extended();
                }
                return Some(map);
            }
            _ => return None,
        }
    }
}
