//! [`TestkitError`]: every failure of testkit, each message one line naming
//! the object (file, device, mount point) and the cause.

use std::path::PathBuf;

use storage_core::sys::loopdev::LoopError;
use storage_core::sys::mount::MountError;

/// A testkit failure.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// A file-system call on a path failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Attaching or detaching a loop device failed.
    #[error(transparent)]
    Loop(#[from] LoopError),
    /// A mount or unmount failed.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// A mkfs tool could not be started (not installed?).
    #[error("run {tool} on {}: {source}", device.display())]
    Spawn {
        tool: &'static str,
        device: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A mkfs tool ran and failed; `stderr` is folded into one line.
    #[error("{tool} on {} failed ({status}): {stderr}", device.display())]
    Mkfs {
        tool: &'static str,
        device: PathBuf,
        status: std::process::ExitStatus,
        stderr: String,
    },
    /// A directory was not removed because something is still mounted in it.
    #[error("remove {}: still mounted there: {}", path.display(), join_paths(mounts))]
    StillMounted { path: PathBuf, mounts: Vec<PathBuf> },
    /// A loop device is still bound to its backing file after detaching.
    #[error("loop device {} still attached to {} after detach", device.display(), backing.display())]
    StillAttached { device: PathBuf, backing: PathBuf },
    /// Tear-down of a scratch filesystem failed in one or more steps.
    #[error("clean up {}: {}", path.display(), join_errors(errors))]
    Cleanup {
        path: PathBuf,
        errors: Vec<TestkitError>,
    },
    /// A leak check found mounts or loop devices left behind.
    #[error("leak check {}: left behind: {}", scope.display(), leaks.join(", "))]
    Leaked { scope: PathBuf, leaks: Vec<String> },
}

impl TestkitError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            what,
            path: path.into(),
            source,
        }
    }

    /// Whether this is a mount that failed with ENODEV: the running kernel
    /// has no such filesystem (not built in, no module). The one case in
    /// which a test may skip instead of fail.
    pub fn kernel_lacks_fs(&self) -> bool {
        matches!(self, Self::Mount(e) if e.op == "mount" && e.source == nix::errno::Errno::ENODEV)
    }
}

fn join_paths(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}

fn join_errors(errors: &[TestkitError]) -> String {
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    lines.join("; ")
}

/// Longest tool output kept in an error message.
const MAX_OUTPUT: usize = 400;

/// Folds a tool's stderr into one line: trimmed lines joined with "; ",
/// without the usage text some tools print after the cause (mkfs.xfs), cut
/// at [`MAX_OUTPUT`] bytes.
pub(crate) fn one_line(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.to_ascii_lowercase().starts_with("usage:"))
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        return "no output".to_string();
    }
    let mut line = lines.join("; ");
    if line.len() > MAX_OUTPUT {
        let mut cut = MAX_OUTPUT;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str("...");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_is_folded_into_one_line() {
        assert_eq!(one_line("a\n\n  b  \n"), "a; b");
        assert_eq!(one_line(""), "no output");
        assert_eq!(
            one_line("Filesystem must be larger than 300MB.\nUsage: mkfs.xfs\n[-b size=num]\n"),
            "Filesystem must be larger than 300MB."
        );
        assert_eq!(one_line(&"x".repeat(1000)).len(), MAX_OUTPUT + 3);
    }

    #[test]
    fn cleanup_lists_every_step_on_one_line() {
        let err = TestkitError::Cleanup {
            path: "/var/tmp/x".into(),
            errors: vec![
                TestkitError::StillAttached {
                    device: "/dev/loop3".into(),
                    backing: "/var/tmp/x/disk.img".into(),
                },
                TestkitError::StillMounted {
                    path: "/var/tmp/x".into(),
                    mounts: vec!["/var/tmp/x/mnt".into()],
                },
            ],
        };
        let message = err.to_string();
        assert!(!message.contains('\n'), "{message}");
        assert_eq!(
            message,
            "clean up /var/tmp/x: loop device /dev/loop3 still attached to \
             /var/tmp/x/disk.img after detach; remove /var/tmp/x: still mounted \
             there: /var/tmp/x/mnt"
        );
    }
}
