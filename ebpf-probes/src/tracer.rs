//! [`OverlayTracer`]: climbs the strategy ladder (fentry, kprobe,
//! tracepoints: [`crate::strategy`]), loads `bpf/overlay_hooks.bpf.c` for
//! the first two rungs ([`crate::hooks`]) or `bpf/overlay_trace.bpf.c` for
//! the last, attaches its programs (syscall, ext4, xfs and filemap
//! tracepoints, plus the rung's overlay hooks), fills the syscall
//! classes, registers the overlays of the mount table and keeps them in
//! step ([`MountWatcher`]), and hands out the events ([`RawEvent`], sync or
//! through tokio's `AsyncFd` with [`EventStream`]), the per-CPU [`Totals`]
//! and the page-cache maps. A tracepoint the kernel lacks degrades the
//! tracer with one line in [`OverlayTracer::degraded`] unless the tracer
//! cannot work without it. A tp_btf program whose target the loader cannot
//! reach (ext4 built as a module: its BTF is module BTF, which aya 0.14
//! does not resolve) falls back to a classic tracepoint reading the
//! record's fixed layout ([`crate::tpformat`]), also said in one line.

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, ProgramError, TracePoint},
};
use tokio::io::unix::AsyncFd;

use crate::{
    attribution::Attribution,
    error::{BPF_CAPS, ProbeError, cause_of, io_cause},
    events::{RawEvent, Totals, slot, syscall_classes},
    hooks, object,
    registry::{MountWatcher, PC_DEVS, Registry, UPPERS, WHITEOUTS, WORKDIRS},
    strategy::{self, Choice, Strategy},
    tpformat,
    tracefs::ensure_tracefs,
};

const OBJECT: &str = "overlay_trace";
const EVENTS: &str = "events";
const TOTALS: &str = "totals";
const CLASSES: &str = "syscall_class";
pub(crate) const PC_INODES: &str = "pc_inodes";
pub(crate) const PC_CGROUPS: &str = "pc_cgroups";

/// Where a program attaches.
#[derive(Debug, Clone, Copy)]
enum Hook {
    /// Classic tracepoint `category:name`.
    Tp(&'static str, &'static str),
    /// BTF-typed raw tracepoint.
    Btf(&'static str),
}

struct ProgSpec {
    program: &'static str,
    hook: Hook,
    /// What is lost without it; `None` = the tracer cannot run without it.
    without: Option<&'static str>,
    /// A classic-tracepoint program tried when this one cannot attach.
    fallback: Option<Fallback>,
}

struct Fallback {
    program: &'static str,
    hook: Hook,
    /// What the substitute cannot see.
    loss: &'static str,
}

const XFS_LOSS: &str = "copy-ups and whiteouts on xfs upper dirs are not seen";

const fn xfs(program: &'static str, hook: Hook) -> ProgSpec {
    ProgSpec {
        program,
        hook,
        without: Some(XFS_LOSS),
        fallback: None,
    }
}

const fn optional(program: &'static str, hook: Hook, loss: &'static str) -> ProgSpec {
    ProgSpec {
        program,
        hook,
        without: Some(loss),
        fallback: None,
    }
}

const PROGRAMS: &[ProgSpec] = &[
    ProgSpec {
        program: "ovl_allocate_inode",
        hook: Hook::Btf("ext4_allocate_inode"),
        without: None,
        fallback: Some(Fallback {
            program: "ovl_hk_allocate_inode",
            hook: Hook::Tp("ext4", "ext4_allocate_inode"),
            loss: "whiteouts of renames below the upper root take the mount of a dir copied up while traced",
        }),
    },
    ProgSpec {
        program: "ovl_mark_inode_dirty",
        hook: Hook::Btf("ext4_mark_inode_dirty"),
        without: Some("whiteouts after the first of each overlay are not seen"),
        fallback: Some(Fallback {
            program: "ovl_tp_mark_inode_dirty",
            hook: Hook::Tp("ext4", "ext4_mark_inode_dirty"),
            loss: "no i_nlink: shared-whiteout links are told by the syscall (unlink/rmdir: whiteout; open/create/rename: created over)",
        }),
    },
    optional(
        "ovl_da_write_end",
        Hook::Tp("ext4", "ext4_da_write_end"),
        "copy-up bytes through delayed allocation are not counted",
    ),
    optional(
        "ovl_write_end",
        Hook::Tp("ext4", "ext4_write_end"),
        "copy-up bytes without delayed allocation are not counted",
    ),
    optional(
        "ovl_journalled_write_end",
        Hook::Tp("ext4", "ext4_journalled_write_end"),
        "copy-up bytes with data=journal are not counted",
    ),
    optional(
        "ovl_free_inode",
        Hook::Tp("ext4", "ext4_free_inode"),
        "overlay's temporary inodes may be counted as copy-ups",
    ),
    xfs("ovl_xfs_iunlink", Hook::Btf("xfs_iunlink")),
    xfs("ovl_xfs_iunlink_remove", Hook::Btf("xfs_iunlink_remove")),
    xfs("ovl_xfs_rename", Hook::Btf("xfs_rename")),
    xfs("ovl_xfs_sf_addname", Hook::Btf("xfs_dir2_sf_addname")),
    xfs("ovl_xfs_block_addname", Hook::Btf("xfs_dir2_block_addname")),
    xfs("ovl_xfs_leaf_addname", Hook::Btf("xfs_dir2_leaf_addname")),
    xfs("ovl_xfs_node_addname", Hook::Btf("xfs_dir2_node_addname")),
    xfs("ovl_xfs_sf_removename", Hook::Btf("xfs_dir2_sf_removename")),
    xfs(
        "ovl_xfs_block_removename",
        Hook::Btf("xfs_dir2_block_removename"),
    ),
    xfs(
        "ovl_xfs_leaf_removename",
        Hook::Btf("xfs_dir2_leaf_removename"),
    ),
    xfs(
        "ovl_xfs_node_removename",
        Hook::Btf("xfs_dir2_node_removename"),
    ),
    xfs("ovl_xfs_sf_replace", Hook::Btf("xfs_dir2_sf_replace")),
    xfs("ovl_xfs_block_replace", Hook::Btf("xfs_dir2_block_replace")),
    xfs("ovl_xfs_leaf_replace", Hook::Btf("xfs_dir2_leaf_replace")),
    xfs("ovl_xfs_node_replace", Hook::Btf("xfs_dir2_node_replace")),
    xfs(
        "ovl_xfs_buffered_write",
        Hook::Tp("xfs", "xfs_file_buffered_write"),
    ),
    xfs("ovl_xfs_remap", Hook::Tp("xfs", "xfs_reflink_remap_range")),
    xfs(
        "ovl_xfs_destroy_inode",
        Hook::Tp("xfs", "xfs_destroy_inode"),
    ),
    optional(
        "ovl_pc_add",
        Hook::Tp("filemap", "mm_filemap_add_to_page_cache"),
        "page-cache additions are not counted",
    ),
    optional(
        "ovl_pc_delete",
        Hook::Tp("filemap", "mm_filemap_delete_from_page_cache"),
        "page-cache evictions are not counted",
    ),
    optional(
        "ovl_pc_read",
        Hook::Tp("filemap", "mm_filemap_get_pages"),
        "page-cache readers are not known",
    ),
    optional(
        "ovl_task_exit",
        Hook::Tp("sched", "sched_process_exit"),
        "records of threads killed inside a syscall are never freed",
    ),
    // Syscalls last: the inode hooks are in place when tracking starts.
    ProgSpec {
        program: "ovl_sys_enter",
        hook: Hook::Tp("raw_syscalls", "sys_enter"),
        without: None,
        fallback: None,
    },
    ProgSpec {
        program: "ovl_sys_exit",
        hook: Hook::Tp("raw_syscalls", "sys_exit"),
        without: None,
        fallback: None,
    },
];

/// Options of [`OverlayTracer::start`].
#[derive(Debug, Clone, Default)]
pub struct TracerOptions {
    /// Data roots for attribution (layerscope's store, Docker's root).
    pub roots: Vec<std::path::PathBuf>,
    /// Account the page cache of every filesystem, not only the overlays'.
    pub page_cache_all: bool,
    /// Fault injection for tests: attach these programs' tracepoints
    /// (comma-separated program names) under names the kernel does not
    /// have; a program with a fallback then runs the fallback, as where
    /// ext4 is a module.
    pub missing_tracepoint: Option<String>,
    /// Do not start the [`MountWatcher`] (refresh by hand).
    pub no_watcher: bool,
    /// Run this rung only (an error when it cannot); `None` climbs the
    /// ladder.
    pub strategy: Option<Strategy>,
}

/// The running tracer. Dropping it detaches everything.
pub struct OverlayTracer {
    registry: Arc<Mutex<Registry>>,
    watcher: Option<MountWatcher>,
    totals: PerCpuArray<MapData, u64>,
    events: Option<RingBuf<MapData>>,
    pc_inodes: HashMap<MapData, [u64; 2], [u64; 2]>,
    pc_cgroups: HashMap<MapData, [u64; 3], [u64; 2]>,
    degraded: Vec<String>,
    choice: Choice,
    // Last: owns the programs and their links.
    _ebpf: Ebpf,
}

impl std::fmt::Debug for OverlayTracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OverlayTracer")
            .field("strategy", &self.choice)
            .field("degraded", &self.degraded)
            .finish_non_exhaustive()
    }
}

fn map_error(map: &'static str) -> impl Fn(aya::maps::MapError) -> ProbeError {
    move |e| {
        let (cause, errno) = cause_of(&e);
        ProbeError::Map { map, cause, errno }
    }
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, ProbeError> {
    ebpf.take_map(name).ok_or(ProbeError::Missing {
        object: OBJECT,
        kind: "map",
        name,
    })
}

fn program_error(program: &'static str, e: &ProgramError) -> ProbeError {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => ProbeError::LoadProgram {
            program,
            cause: io_cause(io_error, BPF_CAPS),
            errno: io_error.raw_os_error(),
            verifier_log: verifier_log.to_string(),
        },
        other => {
            let (cause, errno) = cause_of(other);
            ProbeError::LoadProgram {
                program,
                cause,
                errno,
                verifier_log: String::new(),
            }
        }
    }
}

impl OverlayTracer {
    /// Loads, attaches and registers the current overlays. Needs root.
    /// Climbs the ladder ([`strategy::ladder`]): the first rung whose
    /// programs load and attach runs; the others above it are passed over
    /// with the error the kernel gave ([`Self::strategy`]).
    pub fn start(options: TracerOptions) -> Result<Self, ProbeError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(ProbeError::LoadObject {
                object: OBJECT,
                cause: format!("tracing needs root ({BPF_CAPS}, CAP_SYS_ADMIN for tracefs)"),
                errno: Some(libc::EPERM),
            });
        }
        let mut passed_over = Vec::new();
        let rungs = strategy::ladder(options.strategy);
        let mut last_error = None;
        for rung in rungs {
            match Self::start_rung(&options, rung) {
                Ok(mut tracer) => {
                    tracer.choice = Choice {
                        strategy: rung,
                        passed_over,
                    };
                    return Ok(tracer);
                }
                Err(e) => {
                    passed_over.push(format!("{rung}: {e}"));
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or(ProbeError::Missing {
            object: OBJECT,
            kind: "strategy",
            name: "any",
        }))
    }

    fn start_rung(options: &TracerOptions, rung: Strategy) -> Result<Self, ProbeError> {
        let (object, bytes) = match rung {
            Strategy::Tracepoints => (OBJECT, object::OVERLAY_TRACE.bytes()?),
            Strategy::Fentry | Strategy::Kprobe => (hooks::OBJECT, object::OVERLAY_HOOKS.bytes()?),
        };
        ensure_tracefs()?;
        let btf = Btf::from_sys_fs().map_err(|e| ProbeError::LoadObject {
            object,
            cause: format!("kernel BTF: {e}"),
            errno: None,
        })?;
        let pc_all = u32::from(options.page_cache_all);
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .override_global("pc_all", &pc_all, true)
            .load(bytes)
            .map_err(|e| {
                let (cause, errno) = cause_of(&e);
                ProbeError::LoadObject {
                    object,
                    cause,
                    errno,
                }
            })?;

        let mut classes: Array<MapData, u32> =
            Array::try_from(take(&mut ebpf, CLASSES)?).map_err(map_error(CLASSES))?;
        for (nr, class) in syscall_classes() {
            classes.set(nr, class, 0).map_err(map_error(CLASSES))?;
        }
        let totals = PerCpuArray::try_from(take(&mut ebpf, TOTALS)?).map_err(map_error(TOTALS))?;
        let events = RingBuf::try_from(take(&mut ebpf, EVENTS)?).map_err(map_error(EVENTS))?;
        let pc_inodes =
            HashMap::try_from(take(&mut ebpf, PC_INODES)?).map_err(map_error(PC_INODES))?;
        let pc_cgroups =
            HashMap::try_from(take(&mut ebpf, PC_CGROUPS)?).map_err(map_error(PC_CGROUPS))?;
        let mut registry = Registry::new(
            take(&mut ebpf, WORKDIRS)?,
            take(&mut ebpf, WHITEOUTS)?,
            take(&mut ebpf, UPPERS)?,
            take(&mut ebpf, PC_DEVS)?,
            Attribution::new(options.roots.clone()),
        )?;
        registry.refresh()?;

        // The rung's own hooks first: a rung that cannot attach them is
        // passed over before any tracepoint runs.
        let mut degraded = hooks::attach_rung(&mut ebpf, &btf, rung)?;
        for line in &degraded {
            tracing::warn!("{line}");
        }
        let missing = options.missing_tracepoint.as_deref();
        for spec in PROGRAMS {
            if rung != Strategy::Tracepoints && hooks::REPLACED_TRACEPOINTS.contains(&spec.program)
            {
                continue;
            }
            let Err(e) = attach(&mut ebpf, &btf, spec.program, spec.hook, missing) else {
                continue;
            };
            let (e, line) = match &spec.fallback {
                Some(fb) => match attach(&mut ebpf, &btf, fb.program, fb.hook, missing) {
                    Ok(()) => {
                        let line = format!(
                            "degraded: {e}: {} attached instead ({})",
                            hook_name(fb.hook),
                            fb.loss
                        );
                        tracing::warn!("{line}");
                        degraded.push(line);
                        continue;
                    }
                    Err(fallback_error) => {
                        let line = format!("{e}; fallback {fallback_error}");
                        (e, line)
                    }
                },
                None => {
                    let line = e.to_string();
                    (e, line)
                }
            };
            match spec.without {
                // One line per loss: the xfs programs share theirs.
                Some(loss) if degraded.iter().any(|l| l.ends_with(loss)) => {}
                Some(loss) => {
                    let line = format!("degraded: {line}: {loss}");
                    tracing::warn!("{line}");
                    degraded.push(line);
                }
                None => return Err(e),
            }
        }
        let registry = Arc::new(Mutex::new(registry));
        // Mounts made between the first refresh and the attach.
        lock(&registry).refresh()?;
        let watcher = if options.no_watcher {
            None
        } else {
            Some(
                MountWatcher::spawn(registry.clone()).map_err(|e| ProbeError::Map {
                    map: WORKDIRS,
                    cause: format!("start mount watcher: {e}"),
                    errno: e.raw_os_error(),
                })?,
            )
        };
        Ok(Self {
            registry,
            watcher,
            totals,
            events: Some(events),
            pc_inodes,
            pc_cgroups,
            degraded,
            choice: Choice {
                strategy: rung,
                passed_over: Vec::new(),
            },
            _ebpf: ebpf,
        })
    }

    /// The strategy chosen and why the others were not.
    pub fn strategy(&self) -> &Choice {
        &self.choice
    }

    /// One line per tracepoint that could not be attached and what that
    /// costs; empty when fully attached.
    pub fn degraded(&self) -> &[String] {
        &self.degraded
    }

    /// The registry (shared with the mount watcher).
    pub fn registry(&self) -> &Arc<Mutex<Registry>> {
        &self.registry
    }

    /// Locks the registry.
    pub fn lock_registry(&self) -> MutexGuard<'_, Registry> {
        lock(&self.registry)
    }

    /// Re-reads the mount table now.
    pub fn refresh_mounts(&self) -> Result<(usize, usize), ProbeError> {
        self.lock_registry().refresh()
    }

    /// Whether the mount watcher runs.
    pub fn watching(&self) -> bool {
        self.watcher.is_some()
    }

    /// The per-CPU totals, summed.
    pub fn totals(&self) -> Result<Totals, ProbeError> {
        let mut sums = Vec::with_capacity(slot::COUNT as usize);
        for s in 0..slot::COUNT {
            let values = self.totals.get(&s, 0).map_err(map_error(TOTALS))?;
            sums.push(values.iter().sum());
        }
        Ok(Totals::from_slots(&sums))
    }

    /// Every event now in the ring buffer (empty once the stream was taken).
    pub fn drain_events(&mut self) -> Vec<RawEvent> {
        let Some(ring) = self.events.as_mut() else {
            return Vec::new();
        };
        drain(ring)
    }

    /// The events as an async stream (tokio `AsyncFd`; call inside a tokio
    /// runtime with IO enabled, or panics); later
    /// [`Self::drain_events`] calls return nothing.
    pub fn take_event_stream(&mut self) -> Option<Result<EventStream, ProbeError>> {
        let ring = self.events.take()?;
        // `AsyncFd::new` is deprecated for types that may not own their fd;
        // the RingBuf owns its map fd and the AsyncFd owns the RingBuf, so
        // the fd outlives the registration (the I/O-safety condition).
        #[allow(deprecated)]
        let fd = AsyncFd::new(ring);
        Some(
            fd.map(|fd| EventStream { fd })
                .map_err(|e| ProbeError::Map {
                    map: EVENTS,
                    cause: format!("register with tokio: {e}"),
                    errno: e.raw_os_error(),
                }),
        )
    }

    /// Page-cache pages added and deleted per `[dev, ino]` while traced.
    pub fn page_cache_inodes(&self) -> Vec<([u64; 2], [u64; 2])> {
        self.pc_inodes.iter().filter_map(Result::ok).collect()
    }

    /// Pages added and read per `[dev, ino, cgroup id]` while traced.
    pub fn page_cache_cgroups(&self) -> Vec<([u64; 3], [u64; 2])> {
        self.pc_cgroups.iter().filter_map(Result::ok).collect()
    }
}

fn lock(registry: &Mutex<Registry>) -> MutexGuard<'_, Registry> {
    registry.lock().unwrap_or_else(|p| p.into_inner())
}

fn drain(ring: &mut RingBuf<MapData>) -> Vec<RawEvent> {
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        match RawEvent::from_bytes(&item) {
            Some(event) => out.push(event),
            None => tracing::warn!(len = item.len(), "{EVENTS}: record of unexpected size"),
        }
    }
    out
}

fn hook_name(hook: Hook) -> String {
    match hook {
        Hook::Tp(category, name) => format!("tracepoint {category}:{name}"),
        Hook::Btf(name) => format!("tp_btf {name}"),
    }
}

/// Loads and attaches `program` at `hook`; `missing` names a program whose
/// tracepoint is renamed to one the kernel lacks (fault injection).
fn attach(
    ebpf: &mut Ebpf,
    btf: &Btf,
    program_name: &'static str,
    hook: Hook,
    missing: Option<&str>,
) -> Result<(), ProbeError> {
    let program = ebpf.program_mut(program_name).ok_or(ProbeError::Missing {
        object: OBJECT,
        kind: "program",
        name: program_name,
    })?;
    let faulty = missing.is_some_and(|m| m.split(',').any(|p| p == program_name));
    let attach_error = |target: String| {
        move |e: ProgramError| {
            let (cause, errno) = cause_of(&e);
            ProbeError::Attach {
                program: program_name,
                target: target.clone(),
                cause,
                errno,
            }
        }
    };
    match hook {
        Hook::Tp(category, name) => {
            let name = if faulty {
                format!("{name}_missing")
            } else {
                name.to_owned()
            };
            let target = format!("tracepoint {category}:{name}");
            if let Some(fields) = tpformat::layout_of(program_name) {
                let tracefs = ensure_tracefs()?;
                tpformat::check(&tracefs, category, &name, fields).map_err(|cause| {
                    ProbeError::Attach {
                        program: program_name,
                        target: target.clone(),
                        cause,
                        errno: None,
                    }
                })?;
            }
            let tp: &mut TracePoint = program
                .try_into()
                .map_err(|e: ProgramError| program_error(program_name, &e))?;
            tp.load().map_err(|e| program_error(program_name, &e))?;
            tp.attach(category, &name).map_err(attach_error(target))?;
        }
        Hook::Btf(name) => {
            let tp: &mut BtfTracePoint = program
                .try_into()
                .map_err(|e: ProgramError| program_error(program_name, &e))?;
            let name = if faulty {
                format!("{name}_missing")
            } else {
                name.to_owned()
            };
            let target = format!("tp_btf {name}");
            tp.load(&name, btf).map_err(attach_error(target.clone()))?;
            tp.attach().map_err(attach_error(target))?;
        }
    }
    Ok(())
}

/// The ring buffer behind tokio's `AsyncFd`.
pub struct EventStream {
    fd: AsyncFd<RingBuf<MapData>>,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

impl EventStream {
    /// Waits for events and returns every one available (at least one).
    pub async fn next_batch(&mut self) -> std::io::Result<Vec<RawEvent>> {
        loop {
            // Drain first, wait second: a record submitted after the drain
            // sets the readiness that the next wait sees.
            let events = drain(self.fd.get_mut());
            if !events.is_empty() {
                return Ok(events);
            }
            let mut guard = self.fd.readable_mut().await?;
            guard.clear_ready();
        }
    }

    /// As [`Self::next_batch`], giving up after `timeout` with no events.
    pub async fn next_batch_timeout(
        &mut self,
        timeout: Duration,
    ) -> std::io::Result<Vec<RawEvent>> {
        match tokio::time::timeout(timeout, self.next_batch()).await {
            Ok(result) => result,
            Err(_) => Ok(drain(self.fd.get_mut())),
        }
    }
}
