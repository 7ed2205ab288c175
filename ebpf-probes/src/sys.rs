//! Raw syscalls for probing what BPF the kernel allows, below aya: a
//! `bpf(2)` program load of hand-written instructions, raw tracepoint
//! attach, `perf_event_open(2)` for tracepoints and kprobes with
//! PERF_EVENT_IOC_SET_BPF, and `cachestat(2)`. Thin wrappers: every `unsafe`
//! of the module is one syscall or ioctl with a `// SAFETY:` comment. The
//! probes are in [`crate::features`]; real programs are loaded with aya.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `enum bpf_prog_type` values used by the probes.
pub mod prog_type {
    pub const KPROBE: u32 = 2;
    pub const TRACEPOINT: u32 = 5;
    pub const RAW_TRACEPOINT: u32 = 17;
    pub const TRACING: u32 = 26;
}

/// `enum bpf_attach_type` values used by the probes.
pub mod attach_type {
    pub const NONE: u32 = 0;
    pub const TRACE_RAW_TP: u32 = 23;
    pub const TRACE_FENTRY: u32 = 24;
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;

/// `cachestat(2)`: 451 in the generic table and on x86_64 (Linux 6.5+).
pub const SYS_CACHESTAT: libc::c_long = 451;

/// `PERF_TYPE_TRACEPOINT`.
const PERF_TYPE_TRACEPOINT: u32 = 2;
/// `PERF_FLAG_FD_CLOEXEC`.
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
/// `_IOW('$', 8, __u32)`.
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;

/// One BPF instruction (`struct bpf_insn`); `regs` is `dst | src << 4`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

/// `r0 = 0; exit`: the smallest program every program type accepts.
pub const RETURN_ZERO: [Insn; 2] = [
    // BPF_ALU64 | BPF_MOV | BPF_K, dst r0, imm 0
    Insn {
        code: 0xb7,
        regs: 0,
        off: 0,
        imm: 0,
    },
    // BPF_JMP | BPF_EXIT
    Insn {
        code: 0x95,
        regs: 0,
        off: 0,
        imm: 0,
    },
];

/// What to load with [`prog_load`].
#[derive(Debug, Clone, Copy)]
pub struct ProgLoad<'a> {
    pub prog_type: u32,
    pub expected_attach_type: u32,
    /// BTF type id of the attach target in vmlinux BTF (tp_btf, fentry), or 0.
    pub attach_btf_id: u32,
    pub insns: &'a [Insn],
    pub license: &'a CStr,
}

/// The BPF_PROG_LOAD part of `union bpf_attr`, up to `log_true_size`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
    attach_prog_fd: u32,
    core_relo_cnt: u32,
    fd_array: u64,
    core_relos: u64,
    core_relo_rec_size: u32,
    log_true_size: u32,
}
const _: () = assert!(std::mem::size_of::<ProgLoadAttr>() == 144);

/// The BPF_RAW_TRACEPOINT_OPEN part of `union bpf_attr`.
#[repr(C)]
struct RawTracepointAttr {
    name: u64,
    prog_fd: u32,
    _pad: u32,
}

/// Loads a program with BPF_PROG_LOAD. With `log`, the verifier writes its
/// log there (level 1), which says why a load was refused.
pub fn prog_load(prog: &ProgLoad<'_>, log: Option<&mut [u8]>) -> io::Result<OwnedFd> {
    let mut attr = ProgLoadAttr {
        prog_type: prog.prog_type,
        insn_cnt: prog.insns.len() as u32,
        insns: prog.insns.as_ptr() as u64,
        license: prog.license.as_ptr() as u64,
        expected_attach_type: prog.expected_attach_type,
        attach_btf_id: prog.attach_btf_id,
        ..ProgLoadAttr::default()
    };
    if let Some(log) = log {
        attr.log_level = 1;
        attr.log_size = log.len().min(u32::MAX as usize) as u32;
        attr.log_buf = log.as_mut_ptr() as u64;
    }
    // SAFETY: `attr` is a zero-padded BPF_PROG_LOAD attribute whose pointers
    // (instructions, license string, log buffer with its true length) stay
    // valid for the call; the kernel only writes into the log buffer.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &mut attr as *mut ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>(),
        )
    };
    owned_fd(fd)
}

/// BPF_RAW_TRACEPOINT_OPEN: attaches a raw_tp program to tracepoint `name`,
/// or (with `None`) a tracing program (tp_btf, fentry) to the target it was
/// loaded for. Dropping the returned link detaches it.
pub fn raw_tracepoint_open(name: Option<&CStr>, prog: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let attr = RawTracepointAttr {
        name: name.map_or(0, |n| n.as_ptr() as u64),
        prog_fd: prog.as_raw_fd() as u32,
        _pad: 0,
    };
    // SAFETY: `attr` is a valid BPF_RAW_TRACEPOINT_OPEN attribute; the name
    // string (if any) and `attr` outlive the call; the kernel only reads.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_RAW_TRACEPOINT_OPEN,
            &attr as *const RawTracepointAttr,
            std::mem::size_of::<RawTracepointAttr>(),
        )
    };
    owned_fd(fd)
}

/// `struct perf_event_attr` (PERF_ATTR_SIZE_VER8).
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved_2: u16,
    aux_sample_size: u32,
    reserved_3: u32,
    sig_data: u64,
    config3: u64,
}
const _: () = assert!(std::mem::size_of::<PerfEventAttr>() == 136);

fn perf_event_open(attr: &mut PerfEventAttr) -> io::Result<OwnedFd> {
    attr.size = std::mem::size_of::<PerfEventAttr>() as u32;
    attr.sample_period = 1;
    attr.wakeup_events = 1;
    // SAFETY: `attr` is a fully initialised perf_event_attr of the size it
    // states, alive for the call (config1 may point at a C string the caller
    // keeps alive); pid -1 with cpu 0 observes every task on CPU 0.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr as *mut PerfEventAttr,
            -1 as libc::pid_t,
            0 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    owned_fd(fd)
}

/// Opens a perf event on tracepoint `id` (from tracefs `events/<sys>/<name>/id`).
pub fn perf_event_open_tracepoint(id: u64) -> io::Result<OwnedFd> {
    perf_event_open(&mut PerfEventAttr {
        type_: PERF_TYPE_TRACEPOINT,
        config: id,
        ..PerfEventAttr::default()
    })
}

/// Opens a kprobe on `func` through the kprobe PMU, whose type number is
/// in `/sys/bus/event_source/devices/kprobe/type`.
pub fn perf_event_open_kprobe(pmu_type: u32, func: &CStr) -> io::Result<OwnedFd> {
    perf_event_open(&mut PerfEventAttr {
        type_: pmu_type,
        config1: func.as_ptr() as u64,
        config2: 0,
        ..PerfEventAttr::default()
    })
}

/// PERF_EVENT_IOC_SET_BPF: runs `prog` on every hit of `event`; the
/// attachment lives as long as the event descriptor.
pub fn perf_event_set_bpf(event: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: the ioctl takes the program descriptor as its integer argument;
    // both descriptors are open for the call.
    let rc = unsafe { libc::ioctl(event.as_raw_fd(), PERF_EVENT_IOC_SET_BPF, prog.as_raw_fd()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `struct cachestat`: page-cache state of a file range, in pages.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStat {
    pub nr_cache: u64,
    pub nr_dirty: u64,
    pub nr_writeback: u64,
    pub nr_evicted: u64,
    pub nr_recently_evicted: u64,
}

/// `struct cachestat_range`.
#[repr(C)]
struct CacheStatRange {
    off: u64,
    len: u64,
}

/// `cachestat(2)` on `len` bytes of `file` from `offset` (`len` 0: to the
/// end). ENOSYS on kernels before 6.5 or without CONFIG_CACHESTAT_SYSCALL.
pub fn cachestat(file: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<CacheStat> {
    let range = CacheStatRange { off: offset, len };
    let mut stat = CacheStat::default();
    // SAFETY: `range` is read and `stat` written by the kernel, both valid
    // for the call; flags must be 0.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const CacheStatRange,
            &mut stat as *mut CacheStat,
            0 as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat)
}

fn owned_fd(rc: libc::c_long) -> io::Result<OwnedFd> {
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a non-negative return of these syscalls is a new descriptor
    // that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_zero_is_mov_r0_0_then_exit() {
        assert_eq!(std::mem::size_of::<Insn>(), 8);
        assert_eq!(RETURN_ZERO[0].code, 0xb7);
        assert_eq!(RETURN_ZERO[1].code, 0x95);
    }

    #[test]
    fn cachestat_of_a_fresh_file_has_nothing_dirty_or_fails_with_enosys() {
        let file = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
        use std::os::fd::AsFd;
        match cachestat(file.as_fd(), 0, 0) {
            Ok(stat) => assert!(stat.nr_dirty <= stat.nr_cache),
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOSYS)),
        }
    }
}
