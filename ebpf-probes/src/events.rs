//! The wire format between `bpf/overlay_trace.bpf.c` and user space:
//! [`RawEvent`] (mirror of `struct ovl_event`), [`EventKind`], the per-CPU
//! total slots ([`Totals`]) and the syscall classes user space writes into
//! the `syscall_class` map ([`syscall_classes`]). Keep in sync with the C.

use std::mem::{offset_of, size_of};

/// Length of the path buffer in an event (`PATH_LEN` in C).
pub const PATH_LEN: usize = 256;

/// Mirror of `struct ovl_event`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawEvent {
    /// `bpf_ktime_get_ns()` at syscall entry (CLOCK_MONOTONIC).
    pub start_ns: u64,
    /// Syscall entry to exit.
    pub duration_ns: u64,
    /// Data bytes copied up inside the syscall.
    pub bytes: u64,
    /// The upper inode (copy-up, whiteout, opaque dir).
    pub ino: u64,
    /// cgroup v2 id of the caller.
    pub cgroup_id: u64,
    /// Kernel `dev_t` (major << 20 | minor) of the upper filesystem.
    pub dev: u32,
    /// User space's id of the overlay mount (0 = unknown).
    pub mount_id: u32,
    /// Thread id.
    pub pid: u32,
    /// Process id.
    pub tgid: u32,
    /// The syscall number (x86_64 numbering).
    pub syscall_nr: i32,
    /// [`EventKind`] as a number.
    pub kind: u32,
    /// write_end calls summed into `bytes`.
    pub writes: u32,
    /// Padding.
    pub pad: u32,
    /// The caller's comm, NUL padded.
    pub comm: [u8; 16],
    /// The syscall's path argument, NUL terminated, when it has one.
    pub path: [u8; PATH_LEN],
}

const _: () = assert!(size_of::<RawEvent>() == 344);
const _: () = assert!(offset_of!(RawEvent, dev) == 40);
const _: () = assert!(offset_of!(RawEvent, syscall_nr) == 56);
const _: () = assert!(offset_of!(RawEvent, comm) == 72);
const _: () = assert!(offset_of!(RawEvent, path) == 88);

impl RawEvent {
    /// Decodes one ring-buffer record (native endian, the C layout).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != size_of::<Self>() {
            return None;
        }
        let u64_at = |o: usize| u64::from_ne_bytes(bytes[o..o + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |o: usize| u32::from_ne_bytes(bytes[o..o + 4].try_into().unwrap_or([0; 4]));
        let mut comm = [0u8; 16];
        comm.copy_from_slice(&bytes[72..88]);
        let mut path = [0u8; PATH_LEN];
        path.copy_from_slice(&bytes[88..88 + PATH_LEN]);
        Some(Self {
            start_ns: u64_at(0),
            duration_ns: u64_at(8),
            bytes: u64_at(16),
            ino: u64_at(24),
            cgroup_id: u64_at(32),
            dev: u32_at(40),
            mount_id: u32_at(44),
            pid: u32_at(48),
            tgid: u32_at(52),
            syscall_nr: u32_at(56) as i32,
            kind: u32_at(60),
            writes: u32_at(64),
            pad: u32_at(68),
            comm,
            path,
        })
    }

    /// The comm as text.
    pub fn comm(&self) -> String {
        c_str(&self.comm)
    }

    /// The path argument as text (empty when the syscall had none).
    pub fn path(&self) -> String {
        c_str(&self.path)
    }

    /// The decoded kind, `None` for a number this build does not know.
    pub fn kind(&self) -> Option<EventKind> {
        EventKind::from_raw(self.kind)
    }
}

fn c_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// What overlay did (`KIND_*` in C).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// A regular file copied up with its data.
    Data,
    /// A metadata-only copy-up (metacopy=on).
    Metadata,
    /// A directory copied up.
    Dir,
    /// A whiteout made (unlink, rmdir, rename of a lower entry).
    Whiteout,
    /// A directory created over a whiteout: made opaque.
    Opaque,
    /// A file created over a whiteout (not a copy-up; for completeness).
    CreateOverWhiteout,
}

impl EventKind {
    /// From the C number.
    pub fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            1 => Self::Data,
            2 => Self::Metadata,
            3 => Self::Dir,
            4 => Self::Whiteout,
            5 => Self::Opaque,
            6 => Self::CreateOverWhiteout,
            _ => return None,
        })
    }

    /// Short lowercase name, as in metrics labels and `trace` output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Data => "copy_up_data",
            Self::Metadata => "copy_up_metadata",
            Self::Dir => "copy_up_dir",
            Self::Whiteout => "whiteout",
            Self::Opaque => "opaque_dir",
            Self::CreateOverWhiteout => "create_over_whiteout",
        }
    }
}

/// Slots of the per-CPU `totals` map (`SLOT_*` in C).
pub mod slot {
    /// Data copy-ups.
    pub const DATA: u32 = 0;
    /// Metadata copy-ups.
    pub const METADATA: u32 = 1;
    /// Dir copy-ups.
    pub const DIR: u32 = 2;
    /// Whiteouts.
    pub const WHITEOUT: u32 = 3;
    /// Opaque dirs.
    pub const OPAQUE: u32 = 4;
    /// Copied-up bytes.
    pub const BYTES: u32 = 5;
    /// Events lost: ring buffer full.
    pub const LOST_RINGBUF: u32 = 6;
    /// Results lost: more than 8 in one syscall.
    pub const LOST_ITEMS: u32 = 7;
    /// Syscalls not tracked: per-thread map full.
    pub const LOST_TASKS: u32 = 8;
    /// Events produced (before the ring buffer).
    pub const EVENTS: u32 = 9;
    /// Files created over a whiteout.
    pub const CREATE_OVER_WHITEOUT: u32 = 10;
    /// Syscalls tracked lazily (not in the interesting set).
    pub const LAZY: u32 = 11;
    /// Number of slots.
    pub const COUNT: u32 = 12;
}

/// The totals, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    /// Data copy-ups.
    pub data: u64,
    /// Metadata copy-ups.
    pub metadata: u64,
    /// Dir copy-ups.
    pub dir: u64,
    /// Whiteouts.
    pub whiteouts: u64,
    /// Opaque dirs.
    pub opaque: u64,
    /// Bytes copied up.
    pub bytes: u64,
    /// Events lost (ring buffer full, per-syscall overflow, thread map full).
    pub lost: u64,
    /// Events produced.
    pub events: u64,
    /// Files created over whiteouts.
    pub create_over_whiteout: u64,
}

impl Totals {
    /// Builds from the per-slot sums (index = slot).
    pub fn from_slots(s: &[u64]) -> Self {
        let at = |i: u32| s.get(i as usize).copied().unwrap_or(0);
        Self {
            data: at(slot::DATA),
            metadata: at(slot::METADATA),
            dir: at(slot::DIR),
            whiteouts: at(slot::WHITEOUT),
            opaque: at(slot::OPAQUE),
            bytes: at(slot::BYTES),
            lost: at(slot::LOST_RINGBUF) + at(slot::LOST_ITEMS) + at(slot::LOST_TASKS),
            events: at(slot::EVENTS),
            create_over_whiteout: at(slot::CREATE_OVER_WHITEOUT),
        }
    }
}

/// Syscall classes (`CLASS_*` in C).
pub mod class {
    /// May copy up metadata (chmod, chown, utimes, xattrs, link).
    pub const OTHER: u32 = 1;
    /// Open family and truncate: copy-ups here carry data.
    pub const OPEN: u32 = 2;
    /// mkdir, mknod, symlink: may create over a whiteout.
    pub const CREATE: u32 = 3;
    /// unlink, rmdir.
    pub const REMOVE: u32 = 4;
    /// rename family.
    pub const RENAME: u32 = 5;
    /// mount family: overlay's own checks, never counted.
    pub const MOUNT: u32 = 6;
}

/// No path argument.
const NO_PATH: u32 = 0xff;

/// `(syscall number, class | path argument index << 8)` for every syscall
/// that can copy up or whiteout on this architecture.
pub fn syscall_classes() -> Vec<(u32, u32)> {
    use class::*;
    let table: &[(libc::c_long, u32, u32)] = &[
        (libc::SYS_open, OPEN, 0),
        (libc::SYS_openat, OPEN, 1),
        (libc::SYS_openat2, OPEN, 1),
        (libc::SYS_creat, OPEN, 0),
        (libc::SYS_truncate, OPEN, 0),
        (libc::SYS_open_by_handle_at, OPEN, NO_PATH),
        (libc::SYS_chmod, OTHER, 0),
        (libc::SYS_fchmod, OTHER, NO_PATH),
        (libc::SYS_fchmodat, OTHER, 1),
        (452, OTHER, 1), // fchmodat2
        (libc::SYS_chown, OTHER, 0),
        (libc::SYS_fchown, OTHER, NO_PATH),
        (libc::SYS_lchown, OTHER, 0),
        (libc::SYS_fchownat, OTHER, 1),
        (libc::SYS_utime, OTHER, 0),
        (libc::SYS_utimes, OTHER, 0),
        (libc::SYS_utimensat, OTHER, 1),
        (libc::SYS_futimesat, OTHER, 1),
        (libc::SYS_setxattr, OTHER, 0),
        (libc::SYS_lsetxattr, OTHER, 0),
        (libc::SYS_fsetxattr, OTHER, NO_PATH),
        (libc::SYS_removexattr, OTHER, 0),
        (libc::SYS_lremovexattr, OTHER, 0),
        (libc::SYS_fremovexattr, OTHER, NO_PATH),
        (463, OTHER, 1), // setxattrat
        (466, OTHER, 1), // removexattrat
        (libc::SYS_link, OTHER, 0),
        (libc::SYS_linkat, OTHER, 1),
        (libc::SYS_unlink, REMOVE, 0),
        (libc::SYS_unlinkat, REMOVE, 1),
        (libc::SYS_rmdir, REMOVE, 0),
        (libc::SYS_rename, RENAME, 0),
        (libc::SYS_renameat, RENAME, 1),
        (libc::SYS_renameat2, RENAME, 1),
        (libc::SYS_mkdir, CREATE, 0),
        (libc::SYS_mkdirat, CREATE, 1),
        (libc::SYS_mknod, CREATE, 0),
        (libc::SYS_mknodat, CREATE, 1),
        (libc::SYS_symlink, CREATE, 1),
        (libc::SYS_symlinkat, CREATE, 2),
        (libc::SYS_mount, MOUNT, NO_PATH),
        (libc::SYS_fsconfig, MOUNT, NO_PATH),
        (libc::SYS_fsmount, MOUNT, NO_PATH),
        (libc::SYS_move_mount, MOUNT, NO_PATH),
        (libc::SYS_umount2, MOUNT, NO_PATH),
    ];
    table
        .iter()
        .filter_map(|&(nr, class, path)| Some((u32::try_from(nr).ok()?, class | (path << 8))))
        .collect()
}

/// A syscall's name for display (the ones [`syscall_classes`] lists).
pub fn syscall_name(nr: i32) -> &'static str {
    let nr = libc::c_long::from(nr);
    match nr {
        libc::SYS_open => "open",
        libc::SYS_openat => "openat",
        libc::SYS_openat2 => "openat2",
        libc::SYS_creat => "creat",
        libc::SYS_truncate => "truncate",
        libc::SYS_chmod => "chmod",
        libc::SYS_fchmod => "fchmod",
        libc::SYS_fchmodat => "fchmodat",
        452 => "fchmodat2",
        libc::SYS_chown => "chown",
        libc::SYS_fchown => "fchown",
        libc::SYS_lchown => "lchown",
        libc::SYS_fchownat => "fchownat",
        libc::SYS_utimensat => "utimensat",
        libc::SYS_setxattr => "setxattr",
        libc::SYS_lsetxattr => "lsetxattr",
        libc::SYS_fsetxattr => "fsetxattr",
        libc::SYS_link => "link",
        libc::SYS_linkat => "linkat",
        libc::SYS_unlink => "unlink",
        libc::SYS_unlinkat => "unlinkat",
        libc::SYS_rmdir => "rmdir",
        libc::SYS_rename => "rename",
        libc::SYS_renameat => "renameat",
        libc::SYS_renameat2 => "renameat2",
        libc::SYS_mkdir => "mkdir",
        libc::SYS_mkdirat => "mkdirat",
        libc::SYS_mknod => "mknod",
        libc::SYS_mknodat => "mknodat",
        libc::SYS_symlink => "symlink",
        libc::SYS_symlinkat => "symlinkat",
        _ => "other",
    }
}

/// Kernel-internal `dev_t` (what tracepoints report) from a user-space
/// `st_dev`.
pub fn kernel_dev(st_dev: u64) -> u32 {
    let major = libc::major(st_dev);
    let minor = libc::minor(st_dev);
    (major << 20) | (minor & 0xf_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_c_layout() {
        let mut raw = vec![0u8; size_of::<RawEvent>()];
        raw[16..24].copy_from_slice(&4096u64.to_ne_bytes());
        raw[40..44].copy_from_slice(&(7u32 << 20 | 3).to_ne_bytes());
        raw[56..60].copy_from_slice(&(libc::SYS_openat as i32).to_ne_bytes());
        raw[60..64].copy_from_slice(&1u32.to_ne_bytes());
        raw[72..75].copy_from_slice(b"cat");
        raw[88..93].copy_from_slice(b"a/b/c");
        let ev = RawEvent::from_bytes(&raw).expect("decodes");
        assert_eq!(ev.bytes, 4096);
        assert_eq!(ev.kind(), Some(EventKind::Data));
        assert_eq!(ev.comm(), "cat");
        assert_eq!(ev.path(), "a/b/c");
        assert_eq!(syscall_name(ev.syscall_nr), "openat");
        assert!(RawEvent::from_bytes(&raw[1..]).is_none());
    }

    #[test]
    fn kernel_dev_encoding() {
        assert_eq!(kernel_dev(libc::makedev(7, 3)), 7 << 20 | 3);
        assert_eq!(kernel_dev(libc::makedev(259, 300)), 259 << 20 | 300);
    }
}
