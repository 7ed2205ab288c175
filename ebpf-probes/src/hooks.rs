//! The fentry and kprobe rungs of the ladder: which programs of
//! `bpf/overlay_hooks.bpf.c` each rung attaches, and where ([`attach_rung`]).
//! Both rungs share the tracepoint rung's maps and syscall, page-cache
//! and exit programs (the C file includes `overlay_trace.bpf.c`), so
//! events and the registry are the same. They replace its ext4 programs
//! ([`REPLACED_TRACEPOINTS`]: tp_btf, which aya 0.14 cannot attach when
//! ext4 is a module) by the classic `ext4:ext4_allocate_inode` program
//! (fixed record layout, no CO-RE; `ext4_free_inode` is read that way by
//! every rung), whiteout links/unlinks seen at `vfs_link`/`vfs_unlink` (and the
//! mount of a `RENAME_WHITEOUT` at `vfs_rename`), and the
//! `write_end` (and xfs write/remap) byte counting by overlay's own data
//! copy:
//! - kprobe: kprobe + kretprobe on overlay's `ovl_copy_up_file` (a module
//!   function; kprobes attach to it by name);
//! - fentry: fexit on `do_splice_direct` and `do_clone_file_range`, the
//!   vmlinux functions `ovl_copy_up_file` copies with. aya 0.14's
//!   `FEntry::load`/`FExit::load` set only `attach_btf_id` from the `Btf`
//!   given (never `attach_btf_obj_fd`), so the kernel resolves the target
//!   in vmlinux BTF: functions of the overlay *module* cannot be fentry
//!   targets through aya 0.14.

use aya::{
    Btf, Ebpf,
    programs::{FEntry, FExit, KProbe, ProgramError, TracePoint},
};

use crate::{
    error::{ProbeError, cause_of},
    strategy::Strategy,
    tpformat,
    tracefs::ensure_tracefs,
};

pub(crate) const OBJECT: &str = "overlay_hooks";

/// Where a hook program attaches.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// kprobe or kretprobe (the section says which) on a kernel symbol.
    Kprobe(&'static str),
    /// fexit on a function in vmlinux BTF.
    Fexit(&'static str),
    /// fentry on a function in vmlinux BTF.
    Fentry(&'static str),
    /// Classic tracepoint `category:name`.
    Tracepoint(&'static str, &'static str),
}

struct HookSpec {
    program: &'static str,
    target: Target,
    /// What is lost without it; `None` = the rung cannot run without it.
    without: Option<&'static str>,
}

/// The upper-inode hooks both rungs share.
const INODE_HOOKS: &[HookSpec] = &[HookSpec {
    program: "ovl_hk_allocate_inode",
    target: Target::Tracepoint("ext4", "ext4_allocate_inode"),
    without: None,
}];

const KPROBE_HOOKS: &[HookSpec] = &[
    HookSpec {
        program: "ovl_kp_link",
        target: Target::Kprobe("vfs_link"),
        without: None,
    },
    HookSpec {
        program: "ovl_kp_unlink",
        target: Target::Kprobe("vfs_unlink"),
        without: None,
    },
    HookSpec {
        program: "ovl_kp_rename",
        target: Target::Kprobe("vfs_rename"),
        without: Some(
            "files created over whiteouts count as copy-ups; whiteouts of renames below an upper root belong to no mount",
        ),
    },
    HookSpec {
        program: "ovl_kp_copy_file",
        target: Target::Kprobe("ovl_copy_up_file"),
        without: None,
    },
    HookSpec {
        program: "ovl_kp_copy_file_ret",
        target: Target::Kprobe("ovl_copy_up_file"),
        without: None,
    },
];

const FENTRY_HOOKS: &[HookSpec] = &[
    HookSpec {
        program: "ovl_fe_link",
        target: Target::Fentry("vfs_link"),
        without: None,
    },
    HookSpec {
        program: "ovl_fe_unlink",
        target: Target::Fentry("vfs_unlink"),
        without: None,
    },
    HookSpec {
        program: "ovl_fe_rename",
        target: Target::Fentry("vfs_rename"),
        without: Some(
            "files created over whiteouts count as copy-ups; whiteouts of renames below an upper root belong to no mount",
        ),
    },
    HookSpec {
        program: "ovl_fx_splice",
        target: Target::Fexit("do_splice_direct"),
        without: None,
    },
    HookSpec {
        program: "ovl_fx_clone",
        target: Target::Fexit("do_clone_file_range"),
        without: Some("copy-ups cloned by the upper filesystem (reflink) count no bytes"),
    },
];

/// The tracepoint programs of `overlay_trace` a hook rung leaves out.
pub(crate) const REPLACED_TRACEPOINTS: &[&str] = &[
    "ovl_allocate_inode",
    "ovl_mark_inode_dirty",
    "ovl_da_write_end",
    "ovl_write_end",
    "ovl_journalled_write_end",
    "ovl_xfs_buffered_write",
    "ovl_xfs_remap",
];

/// Loads and attaches the hook programs of `rung` (fentry or kprobe).
/// Returns one `degraded:` line per optional hook that failed; the first
/// required one that fails is the error.
pub(crate) fn attach_rung(
    ebpf: &mut Ebpf,
    btf: &Btf,
    rung: Strategy,
) -> Result<Vec<String>, ProbeError> {
    let specs = match rung {
        Strategy::Fentry => FENTRY_HOOKS,
        Strategy::Kprobe => KPROBE_HOOKS,
        Strategy::Tracepoints => return Ok(Vec::new()),
    };
    let mut degraded = Vec::new();
    // The rung's own hooks first: they are what fails on kernels that
    // refuse the rung.
    for spec in specs.iter().chain(INODE_HOOKS) {
        if let Err(e) = attach(ebpf, btf, spec) {
            match spec.without {
                Some(loss) => degraded.push(format!("degraded: {e}: {loss}")),
                None => return Err(e),
            }
        }
    }
    Ok(degraded)
}

fn load_error(program: &'static str, e: &ProgramError) -> ProbeError {
    let verifier_log = match e {
        ProgramError::LoadError { verifier_log, .. } => verifier_log.to_string(),
        _ => String::new(),
    };
    let (cause, errno) = cause_of(e);
    ProbeError::LoadProgram {
        program,
        cause,
        errno,
        verifier_log,
    }
}

fn attach_error(program: &'static str, target: String) -> impl Fn(ProgramError) -> ProbeError {
    move |e| {
        let (cause, errno) = cause_of(&e);
        ProbeError::Attach {
            program,
            target: target.clone(),
            cause,
            errno,
        }
    }
}

fn attach(ebpf: &mut Ebpf, btf: &Btf, spec: &HookSpec) -> Result<(), ProbeError> {
    let program = ebpf.program_mut(spec.program).ok_or(ProbeError::Missing {
        object: OBJECT,
        kind: "program",
        name: spec.program,
    })?;
    match spec.target {
        Target::Kprobe(symbol) => {
            let probe: &mut KProbe = program
                .try_into()
                .map_err(|e: ProgramError| load_error(spec.program, &e))?;
            probe.load().map_err(|e| load_error(spec.program, &e))?;
            probe
                .attach(symbol, 0)
                .map_err(attach_error(spec.program, format!("kprobe {symbol}")))?;
        }
        Target::Fexit(function) => {
            let fexit: &mut FExit = program
                .try_into()
                .map_err(|e: ProgramError| load_error(spec.program, &e))?;
            fexit
                .load(function, btf)
                .map_err(|e| load_error(spec.program, &e))?;
            fexit
                .attach()
                .map_err(attach_error(spec.program, format!("fexit {function}")))?;
        }
        Target::Fentry(function) => {
            let fentry: &mut FEntry = program
                .try_into()
                .map_err(|e: ProgramError| load_error(spec.program, &e))?;
            fentry
                .load(function, btf)
                .map_err(|e| load_error(spec.program, &e))?;
            fentry
                .attach()
                .map_err(attach_error(spec.program, format!("fentry {function}")))?;
        }
        Target::Tracepoint(category, name) => {
            if let Some(fields) = tpformat::layout_of(spec.program) {
                let tracefs = ensure_tracefs()?;
                tpformat::check(&tracefs, category, name, fields).map_err(|cause| {
                    ProbeError::Attach {
                        program: spec.program,
                        target: format!("tracepoint {category}:{name}"),
                        cause,
                        errno: None,
                    }
                })?;
            }
            let tp: &mut TracePoint = program
                .try_into()
                .map_err(|e: ProgramError| load_error(spec.program, &e))?;
            tp.load().map_err(|e| load_error(spec.program, &e))?;
            tp.attach(category, name).map_err(attach_error(
                spec.program,
                format!("tracepoint {category}:{name}"),
            ))?;
        }
    }
    Ok(())
}
