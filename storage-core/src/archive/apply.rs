//! [`apply_layer`]: unpack a layer tar (plain, gzip or zstd) into a
//! directory, as moby's `UnpackLayer`/`Untar` do, converting whiteouts to
//! the destination's format, computing the diff-id of the uncompressed
//! stream and, on request, writing its tar-split metadata.
//!
//! Memory does not grow with the layer: content is copied through a fixed
//! buffer, and only headers are kept for tar-split. Nothing is ever written
//! outside `dest` (see [`super::root`]); after an error the caller removes
//! `dest`.

use std::cell::RefCell;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{
    FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmodat, makedev, mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchownat, linkat, symlinkat};
use tar::EntryType;

use super::compression::{self, Compression};
use super::entry_name;
use super::error::{ArchiveError, Problem};
use super::recorder::{EntryCrc, Recorder, TeeReader};
use super::root::{self, Root};
use super::tar_split::{CRC64, clean_for_dedup};
use super::whiteout::{self, Marker, OVERLAY_OPAQUE_XATTR, WhiteoutFormat};
use super::xattrs::{self, Xattrs};
use crate::sys::xattr;

/// How to apply a layer.
#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// How `dest` represents whiteouts.
    pub whiteouts: WhiteoutFormat,
    /// Skip xattrs the destination filesystem does not support (ENOTSUP)
    /// instead of failing. EPERM is always skipped, as moby does.
    pub best_effort_xattrs: bool,
}

impl ApplyOptions {
    /// Options for a destination using `whiteouts`.
    pub fn new(whiteouts: WhiteoutFormat) -> Self {
        ApplyOptions {
            whiteouts,
            best_effort_xattrs: false,
        }
    }
}

/// What applying a layer produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedLayer {
    /// Sum of the entries' sizes, as moby's `UnpackLayer` reports it.
    pub size: u64,
    /// `sha256:<hex>` of the whole uncompressed stream, to its very end.
    pub diff_id: String,
    /// Length of the uncompressed stream.
    pub tar_len: u64,
    /// The compression the input had.
    pub compression: Compression,
}

/// Size of the copy buffer; a multiple of [`HOLE_BLOCK`].
const COPY_BUF: usize = 128 * 1024;
/// Granularity of hole detection in sparse entries.
const HOLE_BLOCK: usize = 4096;
/// Chunk size for the bytes after the end blocks (as tar-split reads them).
const TRAILER_CHUNK: usize = 1024 * 1024;

/// Applies the layer tar in `reader` to the existing directory `dest`.
///
/// With `tar_split`, Docker's tar-split JSON lines for the uncompressed
/// stream are written there (the layer store gzips them into
/// `tar-split.json.gz`).
pub fn apply_layer(
    reader: impl Read,
    dest: &Path,
    options: &ApplyOptions,
    tar_split: Option<&mut (dyn Write + Send)>,
) -> Result<AppliedLayer, ArchiveError> {
    let (compression, stream) = compression::decompress(reader)?;
    let root = Root::open(dest).map_err(|e| ArchiveError::path("opening", dest, e))?;
    let with_split = tar_split.is_some();
    std::thread::scope(|scope| {
        let recorder = Recorder::new(scope, tar_split);
        let applied = apply_stream(stream, root, options, with_split, &recorder);
        let finished = recorder.borrow_mut().finish();
        let (size, _last) = applied?;
        let (diff_id, tar_len) = finished?;
        Ok(AppliedLayer {
            size,
            diff_id,
            tar_len,
            compression,
        })
    })
}

/// Extracts every entry and reads the stream to its end; returns the sum
/// of entry sizes and the last entry's name.
fn apply_stream(
    stream: impl Read,
    root: Root,
    options: &ApplyOptions,
    with_split: bool,
    recorder: &Rc<RefCell<Recorder<'_>>>,
) -> Result<(u64, Option<String>), ArchiveError> {
    let mut applier = Applier {
        root,
        options,
        unpacked: HashSet::new(),
        dirs: Vec::new(),
        buf: vec![0; COPY_BUF],
    };
    // Two entries with one path cannot be told apart in tar-split (Docker
    // refuses them too): found here, while the entry can still be named.
    let mut seen_names: HashSet<Vec<u8>> = HashSet::new();

    let mut archive = tar::Archive::new(TeeReader::new(stream, recorder.clone()));
    let mut size = 0u64;
    let mut last: Option<String> = None;
    {
        let mut entries = archive
            .entries()
            .map_err(|e| broken_stream(last.as_deref(), e))?;
        loop {
            recorder.borrow_mut().set_in_segment(true);
            let mut entry = match entries.next() {
                None => break,
                Some(Err(e)) => return Err(broken_stream(last.as_deref(), e)),
                Some(Ok(entry)) => entry,
            };
            recorder.borrow_mut().flush_segment();
            recorder.borrow_mut().set_in_segment(false);

            let raw_name = entry.path_bytes().into_owned();
            let shown = entry_name::display(&raw_name);
            let info = EntryInfo::read(&mut entry, &raw_name)
                .map_err(|e| ArchiveError::entry(shown.as_str(), "reading header", e))?;
            size += info.size;
            if with_split && !seen_names.insert(clean_for_dedup(&raw_name)) {
                return Err(ArchiveError::refused(shown, Problem::DuplicatePath));
            }

            // Sparse entries expand holes, so their CRC (over the extracted
            // bytes, as tar-split wants) is computed here; for every other
            // entry the stored bytes are the content and the hashing thread
            // computes it from the stream.
            let sparse = entry.header().entry_type().is_gnu_sparse();
            let mut content = Content {
                inner: &mut entry,
                crc: (with_split && sparse).then(|| CRC64.digest()),
                read: 0,
            };
            applier.apply(&raw_name, &shown, &info, &mut content)?;
            // Unused content is still payload (tar-split) and must be read
            // here, not skipped by the parser as if it were a segment.
            io::copy(&mut content, &mut io::sink())
                .map_err(|e| ArchiveError::entry(shown.as_str(), "reading content", e))?;
            if content.read != info.size {
                return Err(ArchiveError::refused(
                    shown,
                    Problem::Truncated {
                        expected: info.size,
                        got: content.read,
                    },
                ));
            }
            if with_split {
                let crc = match content.crc.take() {
                    _ if info.size == 0 => EntryCrc::Empty,
                    Some(inline) => EntryCrc::Inline(inline.finalize()),
                    None => EntryCrc::Stream,
                };
                recorder.borrow_mut().entry(raw_name, info.size, crc);
            }
            last = Some(shown);
        }
    }
    applier.finish()?;

    // The parser stopped after the first zero block; like Go's tar reader,
    // the end segment also holds the second one, then whatever follows is
    // kept in chunks so the stream can be rebuilt (and hashed) to its end.
    recorder.borrow_mut().set_in_segment(true);
    let mut tee = archive.into_inner();
    let trailer_err = |e| broken_stream_end(last.as_deref(), e);
    let mut block = Vec::with_capacity(512);
    (&mut tee)
        .take(512)
        .read_to_end(&mut block)
        .map_err(trailer_err)?;
    recorder.borrow_mut().flush_segment();
    let mut chunk = vec![0u8; if with_split { TRAILER_CHUNK } else { COPY_BUF }];
    loop {
        match tee.read(&mut chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(trailer_err(e)),
        }
        recorder.borrow_mut().flush_segment();
    }
    Ok((size, last))
}

/// The parser's error, made one line and short (its message may quote
/// the garbage it read).
fn tidy(source: io::Error) -> io::Error {
    let mut msg = entry_name::one_line(&source.to_string());
    if msg.len() > 160 {
        let cut = (0..=160)
            .rev()
            .find(|i| msg.is_char_boundary(*i))
            .unwrap_or(0);
        msg.truncate(cut);
        msg.push_str("...");
    }
    io::Error::new(source.kind(), msg)
}

fn broken_stream(last: Option<&str>, source: io::Error) -> ArchiveError {
    let source = tidy(source);
    let location = match last {
        None => "is not a tar archive (first header)".to_string(),
        Some(name) => format!("breaks after entry {name}"),
    };
    ArchiveError::Corrupt { location, source }
}

fn broken_stream_end(last: Option<&str>, source: io::Error) -> ArchiveError {
    let source = tidy(source);
    let location = match last {
        None => "breaks at its end blocks".to_string(),
        Some(name) => format!("breaks after its last entry {name}"),
    };
    ArchiveError::Corrupt { location, source }
}

/// What an entry is, from its header and PAX records.
#[derive(Debug)]
enum Kind {
    File {
        sparse: bool,
    },
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
    /// PAX global header: ignored, as moby does.
    Ignored,
    /// Anything else (volume labels, multi-volume parts, unknown types).
    Unsupported(u8),
}

#[derive(Debug)]
struct EntryInfo {
    kind: Kind,
    size: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: TimeSpec,
    atime: TimeSpec,
    link: Vec<u8>,
    dev_major: u64,
    dev_minor: u64,
    xattrs: Xattrs,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// A numeric header field that is blank (all NUL or spaces) reads as 0,
/// as Go's tar reader treats it; anything else unparsable is an error.
fn blank_ok<T: Default>(value: io::Result<T>, field: &[u8]) -> io::Result<T> {
    match value {
        Err(_) if field.iter().all(|b| *b == 0 || *b == b' ') => Ok(T::default()),
        other => other,
    }
}

/// Parses a PAX time (`1700000000.123456789`, possibly negative).
fn pax_time(value: &[u8]) -> Option<TimeSpec> {
    let text = std::str::from_utf8(value).ok()?;
    let (neg, text) = match text.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, text),
    };
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, c) in frac.bytes().take(9).enumerate() {
        if !c.is_ascii_digit() {
            return None;
        }
        nanos += i64::from(c - b'0') * 10i64.pow(8 - i as u32);
    }
    let (secs, nanos) = if neg && nanos > 0 {
        (-secs - 1, 1_000_000_000 - nanos)
    } else if neg {
        (-secs, 0)
    } else {
        (secs, nanos)
    };
    Some(TimeSpec::new(secs, nanos))
}

impl EntryInfo {
    fn read<R: Read>(entry: &mut tar::Entry<'_, R>, raw_name: &[u8]) -> io::Result<EntryInfo> {
        let mut mtime = None;
        let mut atime = None;
        let mut xattrs = Vec::new();
        if let Some(pax) = entry.pax_extensions()? {
            for ext in pax {
                let ext = ext?;
                let key = ext.key_bytes();
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    xattrs.push((name.to_vec(), ext.value_bytes().to_vec()));
                } else if key == b"mtime" {
                    mtime = pax_time(ext.value_bytes());
                } else if key == b"atime" {
                    atime = pax_time(ext.value_bytes());
                }
            }
        }
        let header = entry.header();
        let typeflag = header.as_bytes()[156];
        let kind = match header.entry_type() {
            // Old tars mark directories only by a trailing slash.
            EntryType::Regular if typeflag == 0 && raw_name.ends_with(b"/") => Kind::Dir,
            EntryType::Regular | EntryType::Continuous => Kind::File { sparse: false },
            EntryType::GNUSparse => Kind::File { sparse: true },
            EntryType::Directory => Kind::Dir,
            EntryType::Symlink => Kind::Symlink,
            EntryType::Link => Kind::Hardlink,
            EntryType::Char => Kind::Char,
            EntryType::Block => Kind::Block,
            EntryType::Fifo => Kind::Fifo,
            EntryType::XGlobalHeader => Kind::Ignored,
            _ => Kind::Unsupported(typeflag),
        };
        let raw = header.as_bytes();
        let header_mtime = TimeSpec::new(blank_ok(header.mtime(), &raw[136..148])? as i64, 0);
        let mtime = mtime.unwrap_or(header_mtime);
        // moby: atime is the later of the PAX atime and the mtime.
        let atime = match atime {
            Some(a) if a > mtime => a,
            _ => mtime,
        };
        let id = |v: u64, what: &str| {
            u32::try_from(v).map_err(|_| invalid(format!("{what} {v} does not fit in 32 bits")))
        };
        let (dev_major, dev_minor) = if matches!(kind, Kind::Char | Kind::Block) {
            (
                blank_ok(header.device_major(), &raw[329..337])?.unwrap_or(0),
                blank_ok(header.device_minor(), &raw[337..345])?.unwrap_or(0),
            )
        } else {
            (0, 0)
        };
        Ok(EntryInfo {
            kind,
            size: entry.size(),
            mode: blank_ok(header.mode(), &raw[100..108])? & 0o7777,
            uid: id(blank_ok(header.uid(), &raw[108..116])?, "uid")?,
            gid: id(blank_ok(header.gid(), &raw[116..124])?, "gid")?,
            mtime,
            atime,
            link: entry
                .link_name_bytes()
                .map(|l| l.into_owned())
                .unwrap_or_default(),
            dev_major: dev_major.into(),
            dev_minor: dev_minor.into(),
            xattrs,
        })
    }
}

/// An entry's content as the applier reads it, with the CRC-64 tar-split
/// records and a count to detect truncation.
struct Content<'a> {
    inner: &'a mut dyn Read,
    crc: Option<crc::Digest<'static, u64, crc::Table<16>>>,
    read: u64,
}

impl Read for Content<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(crc) = self.crc.as_mut() {
            crc.update(&buf[..n]);
        }
        self.read += n as u64;
        Ok(n)
    }
}

/// Fills `buf` as far as the reader allows; fewer bytes only at its end.
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

struct Applier<'o> {
    root: Root,
    options: &'o ApplyOptions,
    /// Paths this layer created (naive opaque directories keep them).
    unpacked: HashSet<PathBuf>,
    /// Directories whose times are set at the end, after their content.
    dirs: Vec<(PathBuf, TimeSpec, TimeSpec)>,
    buf: Vec<u8>,
}

impl Applier<'_> {
    fn apply(
        &mut self,
        raw_name: &[u8],
        shown: &str,
        info: &EntryInfo,
        content: &mut Content<'_>,
    ) -> Result<(), ArchiveError> {
        match info.kind {
            Kind::Ignored => return Ok(()),
            Kind::Unsupported(t) => {
                return Err(ArchiveError::refused(shown, Problem::UnsupportedType(t)));
            }
            _ => {}
        }
        let name = match entry_name::clean(raw_name) {
            Ok(Some(name)) => name,
            Ok(None) => return Ok(()),
            Err(problem) => return Err(ArchiveError::refused(shown, problem)),
        };
        let name_bytes = name.as_os_str().as_bytes();
        if whiteout::is_aufs_metadata(&String::from_utf8_lossy(name_bytes)) {
            return Ok(());
        }
        let (parent_rel, base) = root::split(&name);
        let parent = self
            .root
            .open_dir(parent_rel, true)
            .map_err(|e| parent_error(shown, e))?;
        let parent = parent.as_fd();
        let format = self.options.whiteouts;
        let marker = whiteout::classify(std::str::from_utf8(base.as_bytes()).unwrap_or(""));
        let io_err = |op| move |e: io::Error| ArchiveError::entry(shown, op, e);
        match (format, marker) {
            (WhiteoutFormat::Aufs, _) | (_, Marker::Plain) => {}
            (_, Marker::Invalid) => {
                return Err(ArchiveError::refused(shown, Problem::InvalidWhiteout));
            }
            (WhiteoutFormat::Overlay, Marker::Opaque) => {
                return xattr::fset(parent, OVERLAY_OPAQUE_XATTR, b"y")
                    .map_err(io_err("setting trusted.overlay.opaque"));
            }
            (WhiteoutFormat::Overlay, Marker::Deleted(orig)) => {
                let orig = OsStr::new(orig);
                root::remove_all_at(parent, orig).map_err(io_err("removing whited-out path"))?;
                mknodat(parent, orig, SFlag::S_IFCHR, Mode::empty(), 0)
                    .map_err(|e| io_err("creating whiteout device 0/0")(e.into()))?;
                if info.uid != 0 || info.gid != 0 {
                    self.chown(parent, orig, info).map_err(io_err("chown"))?;
                }
                // Not needed by overlayfs, but keeps apply -> export exact.
                utimensat(
                    parent,
                    orig,
                    &info.atime,
                    &info.mtime,
                    UtimensatFlags::NoFollowSymlink,
                )
                .map_err(|e| io_err("setting times")(e.into()))?;
                return Ok(());
            }
            (WhiteoutFormat::Naive, Marker::Opaque) => {
                return self
                    .prune_opaque(parent, parent_rel)
                    .map_err(io_err("emptying opaque directory"));
            }
            (WhiteoutFormat::Naive, Marker::Deleted(orig)) => {
                return root::remove_all_at(parent, OsStr::new(orig))
                    .map_err(io_err("removing whited-out path"));
            }
        }
        self.create(parent, &name, base, shown, info, content)?;
        if format == WhiteoutFormat::Naive {
            self.unpacked.insert(name);
        }
        Ok(())
    }

    fn create(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &Path,
        base: &OsStr,
        shown: &str,
        info: &EntryInfo,
        content: &mut Content<'_>,
    ) -> Result<(), ArchiveError> {
        let io_err = |op| move |e: io::Error| ArchiveError::entry(shown, op, e);
        let nix_err = |op| move |e: Errno| ArchiveError::entry(shown, op, e.into());
        let is_dir_entry = matches!(info.kind, Kind::Dir);
        let initial = Mode::from_bits_truncate(0o600);
        // Made first, looked at only when the name is taken: a fresh layer
        // has nothing in the way, and an lstat per entry is a path walk.
        let mut replaced = false;
        let file = loop {
            let made: Result<Option<File>, ArchiveError> = match info.kind {
                Kind::Dir => {
                    match nix::sys::stat::mkdirat(parent, base, Mode::from_bits_truncate(0o700)) {
                        Err(Errno::EEXIST)
                            if root::lstat_at(parent, base)
                                .map_err(io_err("lstat"))?
                                .is_some_and(|st| root::file_type(&st) == SFlag::S_IFDIR) =>
                        {
                            Ok(None) // an existing dir is kept, as moby does
                        }
                        made => made.map(|()| None).map_err(nix_err("mkdir")),
                    }
                }
                Kind::File { sparse } => openat(
                    parent,
                    base,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    initial,
                )
                .map_err(nix_err("creating file"))
                .and_then(|fd| {
                    let file = File::from(fd);
                    self.write_content(&file, content, sparse, shown)?;
                    Ok(Some(file))
                }),
                Kind::Symlink => {
                    if !entry_name::symlink_target_inside(name, &info.link) {
                        return Err(ArchiveError::refused(
                            shown,
                            Problem::SymlinkEscapes(entry_name::display(&info.link)),
                        ));
                    }
                    symlinkat(OsStr::from_bytes(&info.link), parent, base)
                        .map(|()| None)
                        .map_err(nix_err("creating symlink"))
                }
                Kind::Hardlink => {
                    let target = entry_name::hardlink_target(&info.link)
                        .map_err(|p| ArchiveError::refused(shown, p))?;
                    let missing = || {
                        ArchiveError::refused(
                            shown,
                            Problem::HardlinkMissing(entry_name::display(&info.link)),
                        )
                    };
                    let (tparent, tbase) = root::split(&target);
                    let tdir = match self.root.open_dir(tparent, false) {
                        Ok(fd) => fd,
                        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Err(missing()),
                        Err(e) => return Err(io_err("opening hardlink target directory")(e)),
                    };
                    match linkat(&tdir, tbase, parent, base, AtFlags::empty()) {
                        Ok(()) => Ok(None),
                        Err(Errno::ENOENT) => return Err(missing()),
                        Err(e) => Err(nix_err("creating hardlink")(e)),
                    }
                }
                Kind::Char | Kind::Block | Kind::Fifo => {
                    let (kind, dev) = match info.kind {
                        Kind::Char => (SFlag::S_IFCHR, makedev(info.dev_major, info.dev_minor)),
                        Kind::Block => (SFlag::S_IFBLK, makedev(info.dev_major, info.dev_minor)),
                        _ => (SFlag::S_IFIFO, 0),
                    };
                    mknodat(parent, base, kind, initial, dev)
                        .map(|()| None)
                        .map_err(nix_err("mknod"))
                }
                Kind::Ignored | Kind::Unsupported(_) => return Ok(()),
            };
            match made {
                Ok(file) => break file,
                // The name is taken by something this entry replaces:
                // remove it (a whole tree, for a dir) and make it again.
                Err(ArchiveError::Entry { ref source, .. })
                    if !replaced && source.raw_os_error() == Some(libc::EEXIST) =>
                {
                    root::remove_all_at(parent, base).map_err(io_err("replacing existing path"))?;
                    replaced = true;
                }
                Err(e) => return Err(e),
            }
        };

        // A hardlink to a symlink is itself a symlink: no chmod, no follow.
        let is_symlink = match info.kind {
            Kind::Symlink => true,
            Kind::Hardlink => root::lstat_at(parent, base)
                .map_err(io_err("lstat"))?
                .is_some_and(|st| root::file_type(&st) == SFlag::S_IFLNK),
            _ => false,
        };
        // Order as moby: chown (which clears setuid and capabilities), then
        // xattrs, then the mode, then times. A regular file is still open:
        // its owner, mode and times go through the fd, with no path walk.
        if let Some(file) = &file {
            nix::unistd::fchown(
                file,
                Some(Uid::from_raw(info.uid)),
                Some(Gid::from_raw(info.gid)),
            )
            .map_err(nix_err("chown"))?;
            self.set_xattrs(parent, base, info, shown)?;
            nix::sys::stat::fchmod(file, Mode::from_bits_truncate(info.mode))
                .map_err(nix_err("chmod"))?;
            nix::sys::stat::futimens(file, &info.atime, &info.mtime)
                .map_err(nix_err("setting times"))?;
            return Ok(());
        }
        self.chown(parent, base, info).map_err(io_err("chown"))?;
        self.set_xattrs(parent, base, info, shown)?;
        if !is_symlink {
            fchmodat(
                parent,
                base,
                Mode::from_bits_truncate(info.mode),
                FchmodatFlags::NoFollowSymlink,
            )
            .map_err(nix_err("chmod"))?;
        }
        if is_dir_entry {
            self.dirs.push((name.to_path_buf(), info.atime, info.mtime));
        } else {
            utimensat(
                parent,
                base,
                &info.atime,
                &info.mtime,
                UtimensatFlags::NoFollowSymlink,
            )
            .map_err(nix_err("setting times"))?;
        }
        Ok(())
    }

    fn chown(&self, parent: BorrowedFd<'_>, base: &OsStr, info: &EntryInfo) -> io::Result<()> {
        fchownat(
            parent,
            base,
            Some(Uid::from_raw(info.uid)),
            Some(Gid::from_raw(info.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(io::Error::from)
    }

    fn set_xattrs(
        &self,
        parent: BorrowedFd<'_>,
        base: &OsStr,
        info: &EntryInfo,
        shown: &str,
    ) -> Result<(), ArchiveError> {
        if info.xattrs.is_empty() {
            return Ok(());
        }
        let path = root::fd_path(parent, base);
        for (key, value) in &info.xattrs {
            // overlayfs' own xattrs would change how the union reads this
            // layer; they never belong in a layer tar.
            if xattrs::is_overlay_private(key) {
                continue;
            }
            match xattr::lset(&path, OsStr::from_bytes(key), value) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
                Err(e)
                    if self.options.best_effort_xattrs
                        && e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
                Err(e) => {
                    return Err(ArchiveError::Entry {
                        entry: shown.to_string(),
                        op: "setting xattr",
                        source: io::Error::new(
                            e.kind(),
                            format!("{}: {e}", String::from_utf8_lossy(key)),
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// Copies the content into `file`; for sparse entries, blocks of zeros
    /// become holes (the size is set at the end).
    fn write_content(
        &mut self,
        file: &File,
        content: &mut Content<'_>,
        sparse: bool,
        shown: &str,
    ) -> Result<(), ArchiveError> {
        let read_err = |e| ArchiveError::entry(shown, "reading content", e);
        let write_err = |e| ArchiveError::entry(shown, "writing file", e);
        let mut offset = 0u64;
        loop {
            let n = fill(content, &mut self.buf).map_err(read_err)?;
            if n == 0 {
                break;
            }
            let data = &self.buf[..n];
            if sparse {
                for (i, block) in data.chunks(HOLE_BLOCK).enumerate() {
                    if block.iter().any(|b| *b != 0) {
                        file.write_all_at(block, offset + (i * HOLE_BLOCK) as u64)
                            .map_err(write_err)?;
                    }
                }
            } else {
                file.write_all_at(data, offset).map_err(write_err)?;
            }
            offset += n as u64;
            if n < self.buf.len() {
                break;
            }
        }
        if sparse {
            file.set_len(offset).map_err(write_err)?;
        }
        Ok(())
    }

    /// Naive opaque directory: removes everything below `dir` that this
    /// layer did not create (moby's `unpackedPaths` walk).
    fn prune_opaque(&self, dir: BorrowedFd<'_>, rel: &Path) -> io::Result<()> {
        for child in root::read_names(dir)? {
            let child_rel = rel.join(&child);
            if !self.unpacked.contains(&child_rel) {
                root::remove_all_at(dir, &child)?;
            } else if root::lstat_at(dir, &child)?
                .is_some_and(|st| root::file_type(&st) == SFlag::S_IFDIR)
            {
                let sub = root::open_subdir(dir, &child)?;
                self.prune_opaque(sub.as_fd(), &child_rel)?;
            }
        }
        Ok(())
    }

    /// Sets directory times last, so their content does not change them.
    fn finish(&self) -> Result<(), ArchiveError> {
        for (name, atime, mtime) in &self.dirs {
            let shown = name.display().to_string();
            let (parent_rel, base) = root::split(name);
            let parent = match self.root.open_dir(parent_rel, false) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(ArchiveError::entry(shown, "opening directory", e)),
            };
            match utimensat(&parent, base, atime, mtime, UtimensatFlags::NoFollowSymlink) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => {
                    return Err(ArchiveError::entry(shown, "setting times", e.into()));
                }
            }
        }
        Ok(())
    }
}

fn parent_error(shown: &str, e: io::Error) -> ArchiveError {
    if e.raw_os_error() == Some(libc::ENOTDIR) {
        ArchiveError::refused(shown, Problem::ParentNotDirectory)
    } else {
        ArchiveError::entry(shown, "opening parent directory", e)
    }
}
