//! The BPF lines of `layerscope doctor`: kernel BTF (vmlinux and overlay),
//! each program type the probes may use proven by a real load of a
//! two-instruction program and, where attaching can fail on its own, a real
//! attach (tracepoint, raw_tp, tp_btf, kprobe, fentry), plus the
//! `cachestat(2)` syscall. The syscalls are in [`crate::sys`]; the line type
//! is storage-core's [`Feature`].

use std::ffi::CStr;
use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use aya::Btf;
use storage_core::features::{Failed, Feature, errno_name};
use storage_core::sys::mount::{self, MountFlags};

use crate::sys::{self, ProgLoad, attach_type, prog_type};
use crate::tracefs::ensure_tracefs;

const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
const OVERLAY_BTF: &str = "/sys/kernel/btf/overlay";
const SECURITYFS: &str = "/sys/kernel/security";
const KPROBE_PMU_TYPE: &str = "/sys/bus/event_source/devices/kprobe/type";

/// `BTF_KIND_TYPEDEF` and `BTF_KIND_FUNC` from `<linux/btf.h>`.
const BTF_KIND_TYPEDEF: u32 = 8;
const BTF_KIND_FUNC: u32 = 12;

/// The tracepoint every probe attaches to, and the function for kprobe and
/// fentry: both exist on every kernel and are hot enough to matter.
const TRACEPOINT: (&str, &str) = ("sched", "sched_switch");
const RAW_TRACEPOINT: &CStr = c"sched_switch";
const TP_BTF_TYPEDEF: &str = "btf_trace_sched_switch";
const KERNEL_FUNCTION: &str = "vfs_read";
const KERNEL_FUNCTION_C: &CStr = c"vfs_read";
/// A function of overlayfs the fentry strategy attaches to.
const OVERLAY_FUNCTION: &str = "ovl_copy_up_flags";

type Step<T> = Result<T, Failed>;

fn line(name: &str, result: Step<String>) -> Feature {
    match result {
        Ok(detail) => Feature::yes(name).with_detail(detail),
        Err(e) => Feature::no(name, e.to_string()),
    }
}

/// Probes BTF, the BPF program types and cachestat(2). Mounts tracefs at
/// /sys/kernel/tracing when it is not mounted (and leaves it there, as every
/// tracepoint user of this crate does: see [`crate::tracefs`]).
pub fn probe_bpf() -> Vec<Feature> {
    let btf =
        Btf::from_sys_fs().map_err(|e| Failed::new(format!("parse {VMLINUX_BTF}"), e.to_string()));
    let btf_ok = btf.as_ref().ok();
    vec![
        line(
            "btf",
            btf.as_ref().map(|_| String::new()).map_err(Clone::clone),
        ),
        line("btf.overlay", btf_overlay(btf_ok)),
        line("tracepoint", probe_tracepoint()),
        line("raw_tp", probe_raw_tp()),
        line("tp_btf", probe_tp_btf(btf_ok)),
        line("kprobe", probe_kprobe()),
        line("fentry", probe_fentry(btf_ok)),
        line("cachestat", probe_cachestat()),
    ]
}

// ---------------------------------------------------------------- BTF

fn btf_id(btf: Option<&Btf>, name: &str, kind: u32) -> Step<u32> {
    let btf = btf.ok_or_else(|| Failed::new("vmlinux BTF", "unavailable"))?;
    let kind = kind
        .try_into()
        .map_err(|e: aya::BtfError| Failed::new("BTF kind", e.to_string()))?;
    btf.id_by_type_name_kind(name, kind)
        .map_err(|_| Failed::new(format!("BTF lookup {name}"), "not in vmlinux BTF"))
}

/// Overlay's BTF: module BTF when overlay is a loaded module, else the
/// overlay functions in vmlinux BTF when it is built in.
fn btf_overlay(btf: Option<&Btf>) -> Step<String> {
    match fs::read(OVERLAY_BTF) {
        // struct btf_header starts with magic 0xeB9F (little endian here).
        Ok(data) if data.len() >= 24 && data[..2] == 0xeb9f_u16.to_ne_bytes() => {
            return Ok("module BTF".into());
        }
        Ok(_) => return Err(Failed::new(format!("read {OVERLAY_BTF}"), "not BTF")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Failed::io(format!("read {OVERLAY_BTF}"), &e)),
    }
    match btf_id(btf, OVERLAY_FUNCTION, BTF_KIND_FUNC) {
        Ok(_) => Ok("overlay built into vmlinux".into()),
        Err(_) => Err(Failed::new(
            format!("read {OVERLAY_BTF}"),
            format!(
                "ENOENT and no {OVERLAY_FUNCTION} in vmlinux BTF (overlay module not loaded, \
                 or built without BTF)"
            ),
        )),
    }
}

// ---------------------------------------------------------------- program loads

/// Loads `r0 = 0; exit` as the given type. On failure, loads again with a
/// verifier log and puts its last line (and for EPERM the likely cause) in
/// the reason.
fn load(prog_type: u32, expected_attach_type: u32, attach_btf_id: u32) -> Step<OwnedFd> {
    let prog = ProgLoad {
        prog_type,
        expected_attach_type,
        attach_btf_id,
        insns: &sys::RETURN_ZERO,
        license: c"GPL",
    };
    let err = match sys::prog_load(&prog, None) {
        Ok(fd) => return Ok(fd),
        Err(e) => e,
    };
    let mut log = vec![0u8; 64 * 1024];
    let _ = sys::prog_load(&prog, Some(&mut log));
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(&log[..end]);
    let verifier = text.lines().rfind(|l| !l.trim().is_empty()).map(str::trim);
    let mut cause = errno_name(&err);
    if err.raw_os_error() == Some(libc::EPERM) {
        cause.push_str(", ");
        cause.push_str(&eperm_cause(verifier.is_some()));
    }
    if let Some(verifier) = verifier {
        cause.push_str(&format!(" (verifier: {verifier})"));
    }
    Err(Failed::new("bpf_prog_load", cause))
}

/// Why root gets EPERM from BPF_PROG_LOAD: not root, or the kernel's
/// lockdown LSM (with its mode), or another LSM (the bpf LSM, SELinux...).
/// An empty verifier log means the refusal came before the verifier ran.
fn eperm_cause(verifier_ran: bool) -> String {
    if !nix::unistd::geteuid().is_root() {
        return "needs root (CAP_BPF and CAP_PERFMON)".into();
    }
    let lockdown = match lockdown_mode() {
        Some(mode) if mode == "none" => "no lockdown (lockdown=none), so an LSM".to_owned(),
        Some(mode) => format!("lockdown={mode} or LSM"),
        None => "lockdown or LSM".to_owned(),
    };
    if verifier_ran {
        lockdown
    } else {
        format!("{lockdown}, refused before the verifier ran")
    }
}

/// The active lockdown mode from securityfs, mounting securityfs on a
/// private temporary directory (then unmounting it) when it is not mounted.
fn lockdown_mode() -> Option<String> {
    let read = |dir: &Path| {
        let modes = fs::read_to_string(dir.join("lockdown")).ok()?;
        let active = modes.split_whitespace().find(|m| m.starts_with('['))?;
        Some(active.trim_matches(['[', ']']).to_owned())
    };
    if let Some(mode) = read(Path::new(SECURITYFS)) {
        return Some(mode);
    }
    let dir = std::env::temp_dir().join(format!(
        "layerscope-probe-securityfs-{}",
        std::process::id()
    ));
    fs::create_dir(&dir).ok()?;
    let mode = match mount::mount(
        "securityfs",
        &dir,
        "securityfs",
        MountFlags::MS_RDONLY,
        None,
    ) {
        Ok(()) => {
            let mode = read(&dir);
            if mount::unmount(&dir).is_err() {
                let _ = mount::unmount_detach(&dir);
            }
            mode
        }
        Err(_) => None,
    };
    let _ = fs::remove_dir(&dir);
    mode
}

/// tracepoint: load, then perf_event_open on sched:sched_switch and
/// PERF_EVENT_IOC_SET_BPF.
fn probe_tracepoint() -> Step<String> {
    let prog = load(prog_type::TRACEPOINT, attach_type::NONE, 0)?;
    let tracefs = ensure_tracefs().map_err(|e| Failed::new("tracefs", e.to_string()))?;
    let (system, event) = TRACEPOINT;
    let id_path = tracefs.join(format!("events/{system}/{event}/id"));
    let id: u64 = fs::read_to_string(&id_path)
        .map_err(|e| Failed::io(format!("read {}", id_path.display()), &e))?
        .trim()
        .parse()
        .map_err(|_| Failed::new(format!("read {}", id_path.display()), "not a number"))?;
    let event_fd = sys::perf_event_open_tracepoint(id)
        .map_err(|e| Failed::io(format!("perf_event_open {system}:{event}"), &e))?;
    sys::perf_event_set_bpf(event_fd.as_fd(), prog.as_fd())
        .map_err(|e| Failed::io("PERF_EVENT_IOC_SET_BPF", &e))?;
    Ok(String::new())
}

/// raw_tp: load, then BPF_RAW_TRACEPOINT_OPEN on sched_switch.
fn probe_raw_tp() -> Step<String> {
    let prog = load(prog_type::RAW_TRACEPOINT, attach_type::NONE, 0)?;
    let _link = sys::raw_tracepoint_open(Some(RAW_TRACEPOINT), prog.as_fd())
        .map_err(|e| Failed::io("BPF_RAW_TRACEPOINT_OPEN sched_switch", &e))?;
    Ok(String::new())
}

/// tp_btf: a tracing program on `btf_trace_sched_switch`, attached.
fn probe_tp_btf(btf: Option<&Btf>) -> Step<String> {
    let id = btf_id(btf, TP_BTF_TYPEDEF, BTF_KIND_TYPEDEF)?;
    let prog = load(prog_type::TRACING, attach_type::TRACE_RAW_TP, id)?;
    let _link = sys::raw_tracepoint_open(None, prog.as_fd())
        .map_err(|e| Failed::io("BPF_RAW_TRACEPOINT_OPEN tp_btf", &e))?;
    Ok(String::new())
}

/// kprobe: load, then a kprobe on vfs_read through the kprobe PMU with the
/// program attached. Loading alone succeeds even on kernels without kprobes.
fn probe_kprobe() -> Step<String> {
    let prog = load(prog_type::KPROBE, attach_type::NONE, 0)?;
    let pmu_type: u32 = match fs::read_to_string(KPROBE_PMU_TYPE) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| Failed::new(format!("read {KPROBE_PMU_TYPE}"), "not a number"))?,
        Err(e) => {
            return Err(Failed::new(
                "perf_event_open kprobe",
                format!(
                    "kernel has no kprobe PMU ({KPROBE_PMU_TYPE}: {})",
                    errno_name(&e)
                ),
            ));
        }
    };
    let event_fd = sys::perf_event_open_kprobe(pmu_type, KERNEL_FUNCTION_C)
        .map_err(|e| Failed::io(format!("perf_event_open kprobe {KERNEL_FUNCTION}"), &e))?;
    sys::perf_event_set_bpf(event_fd.as_fd(), prog.as_fd())
        .map_err(|e| Failed::io("PERF_EVENT_IOC_SET_BPF", &e))?;
    Ok(String::new())
}

/// fentry: a tracing program on vfs_read, loaded and attached.
fn probe_fentry(btf: Option<&Btf>) -> Step<String> {
    let id = btf_id(btf, KERNEL_FUNCTION, BTF_KIND_FUNC)?;
    let prog = load(prog_type::TRACING, attach_type::TRACE_FENTRY, id)?;
    let _link = sys::raw_tracepoint_open(None, prog.as_fd())
        .map_err(|e| Failed::io(format!("attach fentry {KERNEL_FUNCTION}"), &e))?;
    Ok(String::new())
}

/// cachestat(2) on our own executable.
fn probe_cachestat() -> Step<String> {
    let exe = std::env::current_exe().map_err(|e| Failed::io("current_exe", &e))?;
    let file = fs::File::open(&exe).map_err(|e| Failed::io("open own executable", &e))?;
    sys::cachestat(file.as_fd(), 0, 0).map_err(|e| Failed::io("cachestat(2)", &e))?;
    Ok(String::new())
}
