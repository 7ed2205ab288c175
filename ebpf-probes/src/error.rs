//! Errors of the probe layer: [`ProbeError`], whose every message is one
//! line naming the BPF object, program or map and the cause (aya's own
//! messages can span lines, e.g. with the verifier log, so they are reduced
//! here; the verifier log stays available through
//! [`ProbeError::verifier_log`]).

use std::{error::Error as StdError, io, path::PathBuf};

use nix::errno::Errno;
use thiserror::Error;

/// What can go wrong between an embedded BPF object and a running probe.
#[derive(Debug, Error)]
pub enum ProbeError {
    /// The object was built as an empty placeholder because the BPF
    /// toolchain was missing at build time.
    #[error("BPF object {object} not built: {reason}; run `cargo xtask deps`")]
    NotBuilt {
        /// Object name, e.g. `hello`.
        object: &'static str,
        /// Why build.rs skipped it, e.g. "clang was not found at build time".
        reason: &'static str,
    },

    /// tracefs is neither mounted nor mountable, or not readable.
    #[error("tracefs at {}: {cause}", path.display())]
    Tracefs {
        /// Mount point that was tried.
        path: PathBuf,
        /// One-line cause.
        cause: String,
        /// errno, if the cause was a system call.
        errno: Option<i32>,
    },

    /// Parsing the object or creating its maps failed.
    #[error("load BPF object {object}: {cause}")]
    LoadObject {
        /// Object name.
        object: &'static str,
        /// One-line cause.
        cause: String,
        /// errno, if the cause was a system call.
        errno: Option<i32>,
    },

    /// `BPF_PROG_LOAD` failed (verifier, permissions, unsupported type).
    #[error("load BPF program {program}: {cause}")]
    LoadProgram {
        /// Program (function) name, e.g. `hello_count`.
        program: &'static str,
        /// One-line cause.
        cause: String,
        /// errno, if the cause was a system call.
        errno: Option<i32>,
        /// The verifier's output, possibly empty; many lines.
        verifier_log: String,
    },

    /// Attaching a loaded program failed.
    #[error("attach BPF program {program} to {target}: {cause}")]
    Attach {
        /// Program name.
        program: &'static str,
        /// Attach point, e.g. `tracepoint syscalls:sys_enter_getppid`.
        target: String,
        /// One-line cause.
        cause: String,
        /// errno, if the cause was a system call.
        errno: Option<i32>,
    },

    /// The object lacks a program or map the Rust side expects (the C and
    /// Rust sides are out of sync).
    #[error("BPF object {object} has no {kind} named {name}")]
    Missing {
        /// Object name.
        object: &'static str,
        /// `program` or `map`.
        kind: &'static str,
        /// The missing name.
        name: &'static str,
    },

    /// Reading or converting a map failed.
    #[error("BPF map {map}: {cause}")]
    Map {
        /// Map name.
        map: &'static str,
        /// One-line cause.
        cause: String,
        /// errno, if the cause was a system call.
        errno: Option<i32>,
    },
}

impl ProbeError {
    /// The errno behind the error, when a system call failed.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Tracefs { errno, .. }
            | Self::LoadObject { errno, .. }
            | Self::LoadProgram { errno, .. }
            | Self::Attach { errno, .. }
            | Self::Map { errno, .. } => *errno,
            Self::NotBuilt { .. } | Self::Missing { .. } => None,
        }
    }

    /// True when the cause is missing privileges (EPERM/EACCES).
    pub fn is_permission_denied(&self) -> bool {
        matches!(self.errno(), Some(libc::EPERM | libc::EACCES))
    }

    /// The verifier log of a failed program load, if any.
    pub fn verifier_log(&self) -> Option<&str> {
        match self {
            Self::LoadProgram { verifier_log, .. } if !verifier_log.is_empty() => {
                Some(verifier_log)
            }
            _ => None,
        }
    }
}

/// Capabilities that an EPERM/EACCES hint names.
pub(crate) const BPF_CAPS: &str = "root or CAP_BPF+CAP_PERFMON";
/// Capabilities needed to mount or read tracefs.
pub(crate) const TRACEFS_CAPS: &str = "root or CAP_SYS_ADMIN";

/// A one-line cause and the errno for any BPF error: the innermost
/// [`io::Error`] of the source chain if there is one (with a hint on
/// EPERM/EACCES), else the first line of the outermost message.
pub(crate) fn cause_of(err: &(dyn StdError + 'static)) -> (String, Option<i32>) {
    let mut innermost_io = None;
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(io_err) = e.downcast_ref::<io::Error>() {
            innermost_io = Some(io_err);
        }
        current = e.source();
    }
    match innermost_io {
        Some(io_err) => (io_cause(io_err, BPF_CAPS), io_err.raw_os_error()),
        None => (first_line(&err.to_string()), None),
    }
}

/// `io::Error` text (errno description without "(os error N)") plus, on
/// EPERM/EACCES, what is needed: `caps` when not root, else a note that the
/// kernel refused root.
pub(crate) fn io_cause(err: &io::Error, caps: &str) -> String {
    let text = match err.raw_os_error() {
        Some(errno) => Errno::from_raw(errno).desc().to_owned(),
        None => first_line(&err.to_string()),
    };
    match err.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) if !nix::unistd::geteuid().is_root() => {
            format!("{text} (needs {caps})")
        }
        Some(libc::EPERM | libc::EACCES) => {
            format!(
                "{text} (refused although running as root: lockdown, a disabled feature or a restricted namespace)"
            )
        }
        _ => text,
    }
}

fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or_default()
        .trim_end()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line() {
        let errors = [
            ProbeError::NotBuilt {
                object: "hello",
                reason: "clang was not found at build time",
            },
            ProbeError::LoadProgram {
                program: "hello_count",
                cause: "Operation not permitted (needs root or CAP_BPF+CAP_PERFMON)".into(),
                errno: Some(libc::EPERM),
                verifier_log: "line 1\nline 2\n".into(),
            },
        ];
        for e in &errors {
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        assert_eq!(
            errors[0].to_string(),
            "BPF object hello not built: clang was not found at build time; run `cargo xtask deps`"
        );
        assert!(errors[1].is_permission_denied());
        assert_eq!(errors[1].verifier_log(), Some("line 1\nline 2\n"));
    }

    #[test]
    fn cause_reduces_to_innermost_io_error() {
        #[derive(Debug, Error)]
        #[error("outer\nwith a second line")]
        struct Outer(#[source] io::Error);

        let err = Outer(io::Error::from_raw_os_error(libc::ENOENT));
        let (cause, errno) = cause_of(&err);
        assert_eq!(errno, Some(libc::ENOENT));
        assert_eq!(cause, "No such file or directory");

        let plain = io::Error::other("first\nsecond");
        assert_eq!(cause_of(&plain).0, "first");
    }
}
