//! The overlays the probes watch: [`Registry`] keeps the BPF maps naming
//! each overlay's `work/work` dir (copy-ups and whiteouts are built there),
//! its shared whiteout inode, its upper root and the filesystems whose page
//! cache is accounted, in step with `/proc/self/mountinfo`
//! ([`Registry::refresh`]); [`MountWatcher`] refreshes on every mount table
//! change (poll(2) POLLPRI on mountinfo) and at least once a second. It
//! also turns a [`RawEvent`] into a [`TraceEvent`] with its owner.

use std::{
    collections::{BTreeMap, HashMap as StdHashMap},
    fs,
    os::{fd::AsFd as _, unix::fs::FileTypeExt as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, SystemTime},
};

use aya::maps::{HashMap, MapData};

use crate::{
    attribution::{Attribution, Owner},
    error::{ProbeError, cause_of},
    events::{EventKind, RawEvent, kernel_dev, syscall_name},
    mounts::{self, OverlayMount},
};

/// Map names in `bpf/overlay_trace.bpf.c`.
pub(crate) const WORKDIRS: &str = "workdirs";
pub(crate) const WHITEOUTS: &str = "whiteouts";
pub(crate) const UPPERS: &str = "uppers";
pub(crate) const PC_DEVS: &str = "pc_devs";

/// `PENDING_BASE` in C: ids the BPF side hands out in mount syscalls.
pub const PENDING_BASE: u32 = 0x8000_0000;

/// `struct inode_key` as `[dev (low 32 bits) | pad, ino]` (little endian).
type InodeKey = [u64; 2];

fn inode_key(meta: &fs::Metadata) -> InodeKey {
    [u64::from(kernel_dev(meta.dev())), meta.ino()]
}

/// One overlay the probes know of (also after it is unmounted, so that
/// late events still resolve).
#[derive(Debug, Clone)]
pub struct Registered {
    /// Our id, as in the BPF maps and events (never 0).
    pub id: u32,
    /// The mount as mountinfo showed it.
    pub mount: OverlayMount,
    /// Its owner.
    pub owner: Owner,
    /// False once unmounted.
    pub mounted: bool,
    workdir_key: Option<InodeKey>,
    whiteout_key: Option<InodeKey>,
    upper_key: Option<InodeKey>,
}

/// One resolved event, as `layerscope trace` prints it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TraceEvent {
    /// `copy_up_data`, `copy_up_metadata`, `copy_up_dir`, `whiteout`, ...
    pub kind: &'static str,
    /// Container id or `host`.
    pub container: String,
    /// Storage driver (`overlay2`, or `overlay` when unknown).
    pub driver: String,
    /// Layer cache-id, when known.
    pub layer: Option<String>,
    /// The overlay's mount point, when known.
    pub mount_point: Option<PathBuf>,
    /// The syscall's path argument, or `inode <n>` when it had none.
    pub path: String,
    /// The upper inode.
    pub ino: u64,
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Caller's comm.
    pub comm: String,
    /// Syscall name.
    pub syscall: &'static str,
    /// Wall-clock time of the syscall entry, ns since the epoch.
    pub timestamp_ns: u64,
    /// Bytes copied up.
    pub bytes: u64,
    /// Syscall duration (copy-up latency), ns.
    pub duration_ns: u64,
    /// cgroup v2 id of the caller.
    pub cgroup_id: u64,
}

/// The registered overlays and the BPF maps that name them.
pub struct Registry {
    workdirs: HashMap<MapData, InodeKey, [u32; 2]>,
    whiteouts: HashMap<MapData, InodeKey, [u32; 2]>,
    uppers: HashMap<MapData, InodeKey, u32>,
    pc_devs: HashMap<MapData, u32, u32>,
    mounts: BTreeMap<u32, Registered>,
    by_mnt_id: StdHashMap<u32, u32>,
    /// Pending ids the BPF side gave overlays in their mount syscall ->
    /// our ids, once mountinfo showed them.
    adopted: StdHashMap<u32, u32>,
    next_id: u32,
    attribution: Attribution,
    /// CLOCK_REALTIME - CLOCK_MONOTONIC, ns.
    wall_offset_ns: i128,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("mounts", &self.mounts.len())
            .finish_non_exhaustive()
    }
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> ProbeError {
    move |e| {
        let (cause, errno) = cause_of(&e);
        ProbeError::Map { map, cause, errno }
    }
}

impl Registry {
    pub(crate) fn new(
        workdirs: aya::maps::Map,
        whiteouts: aya::maps::Map,
        uppers: aya::maps::Map,
        pc_devs: aya::maps::Map,
        attribution: Attribution,
    ) -> Result<Self, ProbeError> {
        Ok(Self {
            workdirs: HashMap::try_from(workdirs).map_err(map_err(WORKDIRS))?,
            whiteouts: HashMap::try_from(whiteouts).map_err(map_err(WHITEOUTS))?,
            uppers: HashMap::try_from(uppers).map_err(map_err(UPPERS))?,
            pc_devs: HashMap::try_from(pc_devs).map_err(map_err(PC_DEVS))?,
            mounts: BTreeMap::new(),
            by_mnt_id: StdHashMap::new(),
            adopted: StdHashMap::new(),
            next_id: 1,
            attribution,
            wall_offset_ns: wall_offset_ns(),
        })
    }

    /// The attribution in use.
    pub fn attribution(&self) -> &Attribution {
        &self.attribution
    }

    /// Every overlay registered so far (unmounted ones too).
    pub fn mounts(&self) -> impl Iterator<Item = &Registered> {
        self.mounts.values()
    }

    /// The overlay mounted at `mount_point`, if registered and mounted.
    pub fn by_mount_point(&self, mount_point: &Path) -> Option<&Registered> {
        self.mounts
            .values()
            .find(|m| m.mounted && m.mount.mount_point == mount_point)
    }

    /// Brings the maps in step with the mount table: registers new
    /// overlays, unregisters unmounted ones. Returns (added, removed).
    pub fn refresh(&mut self) -> Result<(usize, usize), ProbeError> {
        let current = mounts::overlay_mounts().map_err(|e| ProbeError::Map {
            map: WORKDIRS,
            cause: format!("read {}: {e}", mounts::MOUNTINFO),
            errno: e.raw_os_error(),
        })?;
        self.apply(current)
    }

    fn apply(&mut self, current: Vec<OverlayMount>) -> Result<(usize, usize), ProbeError> {
        let live: std::collections::HashSet<u32> = current.iter().map(|m| m.mnt_id).collect();
        let gone: Vec<u32> = self
            .by_mnt_id
            .keys()
            .filter(|id| !live.contains(id))
            .copied()
            .collect();
        for mnt_id in &gone {
            if let Some(id) = self.by_mnt_id.remove(mnt_id) {
                self.unregister(id);
            }
        }
        let mut added = 0;
        for mount in current {
            if self.by_mnt_id.contains_key(&mount.mnt_id) {
                continue;
            }
            match self.register(mount.clone()) {
                Ok(id) => {
                    self.by_mnt_id.insert(mount.mnt_id, id);
                    added += 1;
                }
                Err(e) => tracing::warn!(
                    mount_point = %mount.mount_point.display(),
                    "overlay not traced: {e}"
                ),
            }
        }
        Ok((added, gone.len()))
    }

    fn register(&mut self, mount: OverlayMount) -> Result<u32, ProbeError> {
        let id = self.next_id;
        let owner = self.attribution.for_upper(mount.upperdir.as_deref());
        let mut entry = Registered {
            id,
            owner,
            mounted: true,
            workdir_key: None,
            whiteout_key: None,
            upper_key: None,
            mount,
        };
        if let Some(work) = entry.mount.work_work() {
            let meta = fs::metadata(&work).map_err(|e| ProbeError::Map {
                map: WORKDIRS,
                cause: format!("stat {}: {e}", work.display()),
                errno: e.raw_os_error(),
            })?;
            let key = inode_key(&meta);
            // Registered by the BPF side while mounting: events made before
            // we read mountinfo carry that pending id.
            match self.workdirs.get(&key, 0) {
                Ok([pending, _]) if pending >= PENDING_BASE => {
                    self.adopted.insert(pending, id);
                }
                _ => {}
            }
            self.workdirs
                .insert(key, [id, u32::from(entry.mount.metacopy)], 0)
                .map_err(map_err(WORKDIRS))?;
            entry.workdir_key = Some(key);
            // The shared whiteout, when overlay already made it.
            if let Ok(dir) = fs::read_dir(&work) {
                for item in dir.flatten() {
                    let Ok(meta) = item.metadata() else { continue };
                    if meta.file_type().is_char_device() && meta.rdev() == 0 {
                        let key = inode_key(&meta);
                        let nlink = u32::try_from(meta.nlink()).unwrap_or(u32::MAX);
                        self.whiteouts
                            .insert(key, [id, nlink], 0)
                            .map_err(map_err(WHITEOUTS))?;
                        entry.whiteout_key = Some(key);
                    }
                }
            }
        }
        if let Some(Ok(meta)) = entry.mount.upperdir.as_ref().map(fs::metadata) {
            let key = inode_key(&meta);
            self.uppers.insert(key, id, 0).map_err(map_err(UPPERS))?;
            entry.upper_key = Some(key);
        }
        let dirs = entry
            .mount
            .upperdir
            .iter()
            .chain(entry.mount.lowerdirs.iter());
        for dir in dirs {
            if let Ok(meta) = fs::metadata(dir) {
                self.pc_devs
                    .insert(kernel_dev(meta.dev()), 1, 0)
                    .map_err(map_err(PC_DEVS))?;
            }
        }
        tracing::debug!(id, mount_point = %entry.mount.mount_point.display(), "overlay registered");
        self.mounts.insert(id, entry);
        self.next_id += 1;
        Ok(id)
    }

    fn unregister(&mut self, id: u32) {
        let Some(entry) = self.mounts.get_mut(&id) else {
            return;
        };
        entry.mounted = false;
        // The map entries may already be gone (the kernel freed the
        // whiteout): ignore ENOENT-like failures.
        if let Some(key) = entry.workdir_key.take() {
            let _ = self.workdirs.remove(&key);
        }
        if let Some(key) = entry.whiteout_key.take() {
            let _ = self.whiteouts.remove(&key);
        }
        if let Some(key) = entry.upper_key.take() {
            let _ = self.uppers.remove(&key);
        }
        tracing::debug!(id, "overlay unregistered");
    }

    /// The registered overlay with our id.
    pub fn get(&self, id: u32) -> Option<&Registered> {
        self.mounts.get(&id)
    }

    /// As [`Self::resolve`], reading mountinfo first when the event comes
    /// from an overlay registered by the BPF side that we have not adopted.
    pub fn resolve_fresh(&mut self, raw: &RawEvent) -> TraceEvent {
        if raw.mount_id >= PENDING_BASE && !self.adopted.contains_key(&raw.mount_id) {
            if let Err(e) = self.refresh() {
                tracing::warn!("{e}");
            }
        }
        self.resolve(raw)
    }

    /// Resolves owner, mount, names and wall-clock time of an event.
    pub fn resolve(&self, raw: &RawEvent) -> TraceEvent {
        let mount_id = self
            .adopted
            .get(&raw.mount_id)
            .copied()
            .unwrap_or(raw.mount_id);
        let registered = self.mounts.get(&mount_id);
        let owner = registered.map_or_else(Owner::host, |r| r.owner.clone());
        let path = raw.path();
        let timestamp = i128::from(raw.start_ns) + self.wall_offset_ns;
        TraceEvent {
            kind: raw.kind().map_or("unknown", EventKind::as_str),
            container: owner.container,
            driver: owner.driver,
            layer: owner.layer,
            mount_point: registered.map(|r| r.mount.mount_point.clone()),
            path: if path.is_empty() {
                format!("inode {}", raw.ino)
            } else {
                path
            },
            ino: raw.ino,
            pid: raw.tgid,
            tid: raw.pid,
            comm: raw.comm(),
            syscall: syscall_name(raw.syscall_nr),
            timestamp_ns: u64::try_from(timestamp.max(0)).unwrap_or(u64::MAX),
            bytes: raw.bytes,
            duration_ns: raw.duration_ns,
            cgroup_id: raw.cgroup_id,
        }
    }
}

fn wall_offset_ns() -> i128 {
    let mono = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec()))
        .unwrap_or(0);
    let wall = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    wall - mono
}

/// Refreshes a [`Registry`] on every mount table change and every second,
/// on its own thread; stops when dropped.
#[derive(Debug)]
pub struct MountWatcher {
    stop: Arc<AtomicBool>,
    wake: Option<std::os::fd::OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl MountWatcher {
    /// Starts watching.
    pub fn spawn(registry: Arc<Mutex<Registry>>) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (wake_read, wake_write) = nix::unistd::pipe()?;
        let mountinfo = fs::File::open(mounts::MOUNTINFO)?;
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("mount-watcher".into())
            .spawn(move || {
                use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
                while !flag.load(Ordering::Relaxed) {
                    let mut fds = [
                        PollFd::new(mountinfo.as_fd(), PollFlags::POLLPRI),
                        PollFd::new(wake_read.as_fd(), PollFlags::POLLIN),
                    ];
                    let _ = poll(&mut fds, PollTimeout::from(1000u16));
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    let mut registry = registry.lock().unwrap_or_else(|p| p.into_inner());
                    if let Err(e) = registry.refresh() {
                        tracing::warn!("{e}");
                    }
                }
            })?;
        Ok(Self {
            stop,
            wake: Some(wake_write),
            thread: Some(thread),
        })
    }
}

impl Drop for MountWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(wake) = self.wake.take() {
            let _ = nix::unistd::write(&wake, b"x");
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How long [`wait_for_mount`] polls.
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Waits until the overlay at `mount_point` is registered (by the watcher
/// or an explicit refresh); returns its id.
pub fn wait_for_mount(registry: &Mutex<Registry>, mount_point: &Path) -> Option<u32> {
    let deadline = std::time::Instant::now() + DISCOVERY_TIMEOUT;
    loop {
        {
            let registry = registry.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(r) = registry.by_mount_point(mount_point) {
                return Some(r.id);
            }
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
