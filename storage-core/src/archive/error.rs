//! [`ArchiveError`]: every failure of the archive engine, one line naming
//! the layer entry (or path) and the cause.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why an entry was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The entry name starts with `/`.
    AbsolutePath,
    /// The entry name climbs out of the destination with `..`.
    EscapesRoot,
    /// A relative symlink whose target, joined to its directory, climbs out.
    SymlinkEscapes(String),
    /// A hardlink target outside the destination.
    HardlinkEscapes(String),
    /// A hardlink target that does not exist (not extracted yet).
    HardlinkMissing(String),
    /// The stream ended inside the entry's content.
    Truncated { expected: u64, got: u64 },
    /// `.wh.`, `.wh..` or `.wh...`.
    InvalidWhiteout,
    /// An entry type the layer format does not allow.
    UnsupportedType(u8),
    /// A parent component exists and is not a directory.
    ParentNotDirectory,
    /// The same path twice in a stream recorded as tar-split.
    DuplicatePath,
    /// A file's content on disk differs from what tar-split recorded.
    ChecksumMismatch,
    /// A file on disk has another size than tar-split recorded.
    SizeMismatch { expected: u64, found: u64 },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::AbsolutePath => write!(f, "absolute path"),
            Problem::EscapesRoot => write!(f, "path escapes the destination with '..'"),
            Problem::SymlinkEscapes(t) => {
                write!(f, "symlink target {t} climbs out of the destination")
            }
            Problem::HardlinkEscapes(t) => {
                write!(f, "hardlink target {t} is outside the destination")
            }
            Problem::HardlinkMissing(t) => {
                write!(f, "hardlink target {t} does not exist (not extracted yet)")
            }
            Problem::Truncated { expected, got } => write!(
                f,
                "truncated tar: stream ended after {got} of {expected} content bytes"
            ),
            Problem::InvalidWhiteout => write!(f, "whiteout names no file"),
            Problem::UnsupportedType(t) => {
                write!(f, "unsupported entry type {:?}", char::from(*t))
            }
            Problem::ParentNotDirectory => write!(f, "a parent path is not a directory"),
            Problem::DuplicatePath => write!(f, "duplicate path (tar-split needs unique paths)"),
            Problem::ChecksumMismatch => {
                write!(f, "content on disk does not match the tar-split checksum")
            }
            Problem::SizeMismatch { expected, found } => write!(
                f,
                "file on disk has {found} bytes, tar-split recorded {expected}"
            ),
        }
    }
}

/// A failure of the archive engine.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// An entry that is unsafe or malformed; nothing outside the
    /// destination was touched.
    #[error("layer entry {entry}: {problem}")]
    Refused { entry: String, problem: Problem },
    /// A filesystem or read error while handling one entry.
    #[error("layer entry {entry}: {op}: {source}")]
    Entry {
        entry: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// The stream is not a tar archive, or breaks between two entries.
    #[error("layer tar stream {location}: {source}")]
    Corrupt {
        location: String,
        #[source]
        source: io::Error,
    },
    /// A recognised but unsupported compression.
    #[error("layer stream: {0} compression is not supported (only gzip and zstd)")]
    UnsupportedCompression(&'static str),
    /// A path-level operation (opening the destination, walking a tree).
    #[error("{op} {}: {source}", path.display())]
    Path {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Writing an output stream (tar, tar-split) failed.
    #[error("writing {what}: {source}")]
    Write {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// A tar-split record that cannot be replayed.
    #[error("tar-split record {position}: {problem}")]
    TarSplit { position: u64, problem: String },
}

impl ArchiveError {
    pub(crate) fn refused(entry: impl Into<String>, problem: Problem) -> Self {
        ArchiveError::Refused {
            entry: entry.into(),
            problem,
        }
    }

    pub(crate) fn entry(entry: impl Into<String>, op: &'static str, source: io::Error) -> Self {
        ArchiveError::Entry {
            entry: entry.into(),
            op,
            source,
        }
    }

    pub(crate) fn path(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        ArchiveError::Path {
            op,
            path: path.into(),
            source,
        }
    }

    /// The refusal reason, when this error is a refused entry.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            ArchiveError::Refused { problem, .. } => Some(problem),
            _ => None,
        }
    }
}
