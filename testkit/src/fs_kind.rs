//! [`FsKind`]: which filesystem a scratch filesystem gets, and how to make,
//! mount and recognise each one.

use std::fmt;
use std::path::Path;
use std::process::Command;

use nix::sys::statfs::{BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, FsType, TMPFS_MAGIC, XFS_SUPER_MAGIC};

const MIB: u64 = 1024 * 1024;

/// The filesystem of a [`ScratchFs`](crate::ScratchFs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FsKind {
    Ext4,
    /// xfs, made with `-m reflink=0|1`.
    Xfs {
        reflink: bool,
    },
    Btrfs,
    /// A tmpfs with `size=`; no loop device, no mkfs.
    Tmpfs,
}

impl FsKind {
    /// Every kind, xfs once with and once without reflink.
    pub const ALL: [FsKind; 5] = [
        FsKind::Ext4,
        FsKind::Xfs { reflink: false },
        FsKind::Xfs { reflink: true },
        FsKind::Btrfs,
        FsKind::Tmpfs,
    ];

    /// The filesystem type passed to mount(2) and shown in mountinfo.
    pub fn fstype(self) -> &'static str {
        match self {
            FsKind::Ext4 => "ext4",
            FsKind::Xfs { .. } => "xfs",
            FsKind::Btrfs => "btrfs",
            FsKind::Tmpfs => "tmpfs",
        }
    }

    /// The `f_type` statfs(2) reports for it.
    pub fn magic(self) -> FsType {
        match self {
            FsKind::Ext4 => EXT4_SUPER_MAGIC,
            FsKind::Xfs { .. } => XFS_SUPER_MAGIC,
            FsKind::Btrfs => BTRFS_SUPER_MAGIC,
            FsKind::Tmpfs => TMPFS_MAGIC,
        }
    }

    /// Whether it needs a backing file, a loop device and mkfs.
    pub fn needs_device(self) -> bool {
        !matches!(self, FsKind::Tmpfs)
    }

    /// A small size testkit's mkfs call accepts (the mkfs minimum rounded
    /// up): use it for tests that need the filesystem, not the space. The
    /// backing file is sparse, so size costs no disk.
    pub fn small_size(self) -> u64 {
        match self {
            FsKind::Ext4 => 16 * MIB,
            FsKind::Xfs { .. } => 300 * MIB,
            FsKind::Btrfs => 120 * MIB,
            FsKind::Tmpfs => 16 * MIB,
        }
    }

    /// The mkfs tool name and a quiet command formatting `device`, or `None`
    /// for tmpfs.
    pub fn mkfs_command(self, device: &Path) -> Option<(&'static str, Command)> {
        let (tool, args): (&'static str, &[&str]) = match self {
            FsKind::Ext4 => ("mkfs.ext4", &["-q", "-F"]),
            FsKind::Xfs { reflink: false } => ("mkfs.xfs", &["-q", "-f", "-m", "reflink=0"]),
            FsKind::Xfs { reflink: true } => ("mkfs.xfs", &["-q", "-f", "-m", "reflink=1"]),
            FsKind::Btrfs => ("mkfs.btrfs", &["-q", "-f"]),
            FsKind::Tmpfs => return None,
        };
        let mut command = Command::new(tool);
        command.args(args).arg(device);
        Some((tool, command))
    }
}

impl fmt::Display for FsKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsKind::Xfs { reflink } => write!(f, "xfs (reflink={})", u8::from(*reflink)),
            other => f.write_str(other.fstype()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xfs_command_carries_the_reflink_choice() {
        let (tool, command) = FsKind::Xfs { reflink: true }
            .mkfs_command(Path::new("/dev/loop9"))
            .unwrap();
        assert_eq!(tool, "mkfs.xfs");
        let args: Vec<_> = command.get_args().collect();
        assert_eq!(args, ["-q", "-f", "-m", "reflink=1", "/dev/loop9"]);
        assert!(FsKind::Tmpfs.mkfs_command(Path::new("/dev/null")).is_none());
    }

    #[test]
    fn display_names_the_variant() {
        assert_eq!(
            FsKind::Xfs { reflink: false }.to_string(),
            "xfs (reflink=0)"
        );
        assert_eq!(FsKind::Btrfs.to_string(), "btrfs");
    }
}
