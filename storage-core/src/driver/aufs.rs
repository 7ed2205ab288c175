//! The aufs driver in Docker's own layout (moby's graphdriver/aufs):
//!
//! ```text
//! <home>/diff/<id>/     the layer's files; `.wh.<name>` deletes, `.wh..wh..opq`
//!                       makes a directory opaque, `.wh..wh.*` are internals
//! <home>/layers/<id>    parent ids, newest first, one per line
//! <home>/mnt/<id>/      the union while mounted
//! <home>/mnt/.<id>.pid  pid of the union helper serving that mount
//! ```
//!
//! The union is the kernel's aufs when `/proc/filesystems` has it, else
//! layerscope's FUSE union ([`crate::unionfs`]), served by a detached
//! helper process (`<helper> ` with `LAYERSCOPE_UNION_SERVE` set; by default
//! `layerscope __union-serve`) so that `get` in one process and `put` in
//! another work, or from a thread of this process when no helper is known.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::layer_id;
use super::mountref::MountCounter;
use super::{CreateOpts, Driver, DriverError, DriverOptions};
use crate::archive::{self, AppliedLayer, Change, ChangeKind, WhiteoutFormat};
use crate::fsutil;
use crate::sys::mount;
use crate::unionfs::{self, ServeArgs, UnionOptions};

const DIFF_DIR: &str = "diff";
const LAYERS_DIR: &str = "layers";
const MNT_DIR: &str = "mnt";
const STAGING_PREFIX: &str = ".creating-";
const REMOVING_PREFIX: &str = ".removing-";
/// How long `get` waits for a helper's mount to appear.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(20);

/// How the union is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Union {
    /// The kernel's aufs.
    Kernel,
    /// The FUSE union served by a helper process: program and arguments.
    Helper(Vec<OsString>),
    /// The FUSE union served from a thread of this process.
    InProcess,
}

pub struct Aufs {
    home: PathBuf,
    union: Union,
    union_options: UnionOptions,
    mounts: MountCounter,
    backing_fs: &'static str,
    sessions: Mutex<HashMap<String, fuser::BackgroundSession>>,
    helpers: Mutex<HashMap<String, Child>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn kernel_has_aufs() -> bool {
    fs::read_to_string("/proc/filesystems")
        .map(|f| {
            f.lines()
                .any(|l| l.split_whitespace().last() == Some("aufs"))
        })
        .unwrap_or(false)
}

fn unavailable(why: impl Into<String>) -> DriverError {
    DriverError::Unavailable {
        driver: "aufs".into(),
        why: why.into(),
    }
}

impl Aufs {
    /// Opens (creating when needed) the driver home `<root>/aufs`.
    ///
    /// Options: `aufs.helper=<program> [args]` (the union helper command),
    /// `aufs.fuse=thread` (serve FUSE in-process), `aufs.passthrough=off`,
    /// `aufs.ttl=<seconds>`.
    pub fn open(home: &Path, options: &DriverOptions) -> Result<Self, DriverError> {
        let mut helper = None;
        let mut in_thread = false;
        let mut union_options = UnionOptions::default();
        for (key, value) in &options.storage_opt {
            let on = matches!(value.as_str(), "on" | "true" | "1" | "yes");
            match key.trim_start_matches("aufs.") {
                "helper" => {
                    helper = Some(value.split_whitespace().map(OsString::from).collect());
                }
                "fuse" => in_thread = value == "thread",
                "passthrough" => union_options.passthrough = on,
                "ttl" => {
                    let secs: f64 = value.parse().map_err(|_| DriverError::UnknownOption {
                        id: "aufs".into(),
                        key: format!("{key}={value}"),
                    })?;
                    union_options.ttl = Duration::from_secs_f64(secs);
                }
                other => {
                    return Err(DriverError::UnknownOption {
                        id: "aufs".into(),
                        key: other.to_string(),
                    });
                }
            }
        }
        let union = if kernel_has_aufs() {
            Union::Kernel
        } else {
            if !Path::new("/dev/fuse").exists() {
                return Err(unavailable(
                    "kernel has neither aufs nor FUSE (/dev/fuse missing)",
                ));
            }
            match helper {
                Some(helper) if !in_thread => Union::Helper(helper),
                _ if in_thread => Union::InProcess,
                _ => default_union(),
            }
        };
        for dir in [DIFF_DIR, LAYERS_DIR, MNT_DIR] {
            let path = home.join(dir);
            fs::create_dir_all(&path).map_err(DriverError::io("create", &path))?;
        }
        let backing_fs = fsutil::filesystem_name(home).unwrap_or("<unknown>");
        Ok(Self {
            home: home.to_path_buf(),
            union,
            union_options,
            mounts: MountCounter::default(),
            backing_fs,
            sessions: Mutex::new(HashMap::new()),
            helpers: Mutex::new(HashMap::new()),
        })
    }

    /// `<home>/diff/<id>`: the layer's own files.
    pub fn diff_dir(&self, id: &str) -> PathBuf {
        self.home.join(DIFF_DIR).join(id)
    }

    /// `<home>/mnt/<id>`: the union's mount point.
    pub fn mount_dir(&self, id: &str) -> PathBuf {
        self.home.join(MNT_DIR).join(id)
    }

    fn layers_file(&self, id: &str) -> PathBuf {
        self.home.join(LAYERS_DIR).join(id)
    }

    /// `<home>/mnt/.<id>.pid`: the helper serving the mount.
    pub fn pid_file(&self, id: &str) -> PathBuf {
        self.home.join(MNT_DIR).join(format!(".{id}.pid"))
    }

    fn log_file(&self, id: &str) -> PathBuf {
        self.home.join(MNT_DIR).join(format!(".{id}.log"))
    }

    fn existing(&self, id: &str) -> Result<(), DriverError> {
        layer_id::existing_dir(id, &[], |id| self.diff_dir(id)).map(drop)
    }

    /// Parent ids of `id`, newest first (moby's getParentIDs).
    pub fn parent_ids(&self, id: &str) -> Result<Vec<String>, DriverError> {
        let path = self.layers_file(id);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(DriverError::io("read", &path)(e)),
        };
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }

    fn create_layer(
        &self,
        id: &str,
        parent: Option<&str>,
        opts: &CreateOpts,
    ) -> Result<(), DriverError> {
        layer_id::check(id, &[])?;
        if let Some(key) = opts.storage_opt.keys().next() {
            return Err(DriverError::UnknownOption {
                id: id.to_string(),
                key: key.clone(),
            });
        }
        if self.diff_dir(id).exists() {
            return Err(DriverError::AlreadyExists { id: id.to_string() });
        }
        let mut parents = Vec::new();
        if let Some(parent) = parent {
            self.existing(parent)?;
            parents.push(parent.to_string());
            parents.extend(self.parent_ids(parent)?);
        }
        let staging = self
            .home
            .join(DIFF_DIR)
            .join(format!("{STAGING_PREFIX}{id}"));
        fsutil::remove_all(&staging).map_err(DriverError::io("remove stale", &staging))?;
        fsutil::ensure_dir(&staging, 0o755).map_err(DriverError::io("create", &staging))?;
        let mut lines = parents.join("\n");
        if !lines.is_empty() {
            lines.push('\n');
        }
        let layers = self.layers_file(id);
        let mnt = self.mount_dir(id);
        let built = fsutil::write_atomic(&layers, lines.as_bytes(), 0o644)
            .map_err(DriverError::io("write", &layers))
            .and_then(|()| {
                fsutil::ensure_dir(&mnt, 0o755)
                    .map(drop)
                    .map_err(DriverError::io("create", &mnt))
            })
            .and_then(|()| {
                fs::rename(&staging, self.diff_dir(id))
                    .map_err(DriverError::io("rename into place", self.diff_dir(id)))
            });
        if built.is_err() {
            let _ = fsutil::remove_all(&staging);
            let _ = fs::remove_file(&layers);
        }
        built
    }

    fn branches(&self, id: &str) -> Result<(PathBuf, Vec<PathBuf>), DriverError> {
        let ro = self
            .parent_ids(id)?
            .iter()
            .map(|p| self.diff_dir(p))
            .collect();
        Ok((self.diff_dir(id), ro))
    }

    fn mount_union(&self, id: &str) -> Result<PathBuf, DriverError> {
        let mnt = self.mount_dir(id);
        fsutil::ensure_dir(&mnt, 0o755).map_err(DriverError::io("create", &mnt))?;
        let (rw, ro) = self.branches(id)?;
        let args = ServeArgs {
            mountpoint: mnt.clone(),
            rw,
            ro,
            pid_file: Some(self.pid_file(id)),
            fsname: format!("aufs:{id}"),
            options: self.union_options.clone(),
        };
        match &self.union {
            Union::Kernel => {
                let mut data = format!("br:{}=rw", args.rw.display());
                for ro in &args.ro {
                    data.push_str(&format!(":{}=ro+wh", ro.display()));
                }
                data.push_str(",dio,xino=/dev/shm/aufs.xino");
                mount::mount(
                    "none",
                    &mnt,
                    "aufs",
                    mount::MountFlags::empty(),
                    Some(&data),
                )?;
            }
            Union::InProcess => {
                let session = unionfs::mount_background(&args)
                    .map_err(|e| unavailable(format!("union for {id}: {e}")))?;
                lock(&self.sessions).insert(id.to_string(), session);
            }
            Union::Helper(command) => self.spawn_helper(id, command, &args)?,
        }
        Ok(mnt)
    }

    fn spawn_helper(
        &self,
        id: &str,
        command: &[OsString],
        args: &ServeArgs,
    ) -> Result<(), DriverError> {
        let log_path = self.log_file(id);
        let log = fs::File::create(&log_path).map_err(DriverError::io("create", &log_path))?;
        let log2 = log.try_clone().map_err(DriverError::io("dup", &log_path))?;
        let (program, rest) = command
            .split_first()
            .ok_or_else(|| unavailable("empty aufs.helper command"))?;
        let mut child = Command::new(program)
            .args(rest)
            .env(unionfs::SERVE_ENV, args.encode())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .spawn()
            .map_err(DriverError::io(
                "start union helper",
                PathBuf::from(program),
            ))?;
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        loop {
            if mount::is_mount_point(&args.mountpoint) && self.pid_file(id).exists() {
                lock(&self.helpers).insert(id.to_string(), child);
                return Ok(());
            }
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > deadline {
                if exited.is_none() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                let log = fs::read_to_string(&log_path).unwrap_or_default();
                let last = log
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("");
                return Err(unavailable(format!(
                    "union helper for {id} did not mount ({}): {last}",
                    exited.map_or("timed out".to_string(), |s| s.to_string())
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Unmounts layer `id`'s union and stops whatever served it.
    fn unmount_union(&self, id: &str) -> Result<(), DriverError> {
        let mnt = self.mount_dir(id);
        if mount::is_mount_point(&mnt) {
            mount::unmount(&mnt).or_else(|_| mount::unmount_detach(&mnt))?;
        }
        if let Some(session) = lock(&self.sessions).remove(id) {
            let _ = session.join();
        }
        let pid_file = self.pid_file(id);
        if let Some(mut child) = lock(&self.helpers).remove(id) {
            wait_or_kill(child.id(), Some(&mut child));
        } else if let Some(pid) = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        {
            wait_or_kill(pid, None);
        }
        let _ = fs::remove_file(&pid_file);
        let _ = fs::remove_file(self.log_file(id));
        Ok(())
    }

    fn is_parent(&self, id: &str, parent: Option<&str>) -> bool {
        let Ok(parents) = self.parent_ids(id) else {
            return false;
        };
        parents.first().map(String::as_str) == parent
    }

    /// moby's naive diff: mount both and compare the trees.
    fn naive_changes(&self, id: &str, parent: Option<&str>) -> Result<Vec<Change>, DriverError> {
        let layer = self.get(id)?;
        let result = (|| {
            let Some(parent) = parent else {
                return Ok(archive::changes_naive(&layer, None)?);
            };
            let parent_root = self.get(parent)?;
            let changes = archive::changes_naive(&layer, Some(&parent_root));
            self.put(parent)?;
            Ok(changes?)
        })();
        self.put(id)?;
        result
    }
}

/// The FUSE union's server by default: a `layerscope` binary re-executes
/// itself as `layerscope __union-serve`; any other program (tests,
/// benchmarks) serves from a thread.
fn default_union() -> Union {
    match std::env::current_exe() {
        Ok(exe) if exe.file_name().is_some_and(|n| n == "layerscope") => {
            Union::Helper(vec![exe.into_os_string(), "__union-serve".into()])
        }
        _ => Union::InProcess,
    }
}

/// Waits for the helper `pid` to exit after its unmount (reaping it when it
/// is our child); SIGTERM after 5 s, SIGKILL after 10 s.
fn wait_or_kill(pid: u32, mut child: Option<&mut Child>) {
    use nix::sys::signal::{Signal, kill};
    let target = nix::unistd::Pid::from_raw(pid as i32);
    let start = Instant::now();
    let mut signalled = None;
    loop {
        let gone = match child.as_deref_mut() {
            Some(child) => !matches!(child.try_wait(), Ok(None)),
            None => {
                let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let state = stat
                    .rsplit(')')
                    .next()
                    .and_then(|s| s.split_whitespace().next());
                matches!(state, None | Some("Z" | "X"))
            }
        };
        if gone {
            return;
        }
        let elapsed = start.elapsed();
        if elapsed > Duration::from_secs(10) && signalled != Some(Signal::SIGKILL) {
            let _ = kill(target, Signal::SIGKILL);
            signalled = Some(Signal::SIGKILL);
        } else if elapsed > Duration::from_secs(5) && signalled.is_none() {
            let _ = kill(target, Signal::SIGTERM);
            signalled = Some(Signal::SIGTERM);
        } else if elapsed > Duration::from_secs(15) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn lstat(path: &Path) -> Result<Option<fs::Metadata>, DriverError> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            Ok(None)
        }
        Err(e) => Err(DriverError::io("lstat", path)(e)),
    }
}

/// The changes recorded in the aufs branch `rw` over `lowers` (top first),
/// as moby's `archive.Changes(layers, rw)`: `.wh.<name>` deletes, an opaque
/// directory hides every lower child it does not have, anything else is
/// added or (present below) modified; the parent of an added or deleted
/// path is modified.
pub fn aufs_changes(rw: &Path, lowers: &[PathBuf]) -> Result<Vec<Change>, DriverError> {
    let mut changes: Vec<Change> = Vec::new();
    let mut changed_dirs: HashSet<PathBuf> = HashSet::new();
    fn push(
        changes: &mut Vec<Change>,
        changed_dirs: &mut HashSet<PathBuf>,
        path: PathBuf,
        kind: ChangeKind,
    ) {
        if matches!(kind, ChangeKind::Added | ChangeKind::Deleted) {
            if let Some(parent) = path.parent() {
                if parent != Path::new("/") && changed_dirs.insert(parent.to_path_buf()) {
                    changes.push(Change {
                        path: parent.to_path_buf(),
                        kind: ChangeKind::Modified,
                    });
                }
            }
        }
        changes.push(Change { path, kind });
    }
    let walk = walkdir::WalkDir::new(rw)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            let name = e.file_name().as_bytes();
            !(e.depth() == 1 && name.starts_with(b".wh..wh.") && name != b".wh..wh..opq")
        });
    for entry in walk {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(rw).to_path_buf();
            DriverError::io("walk", path)(e.into())
        })?;
        let rel = entry.path().strip_prefix(rw).expect("below the walk root");
        let name = entry.file_name().as_bytes();
        let dir_rel = rel.parent().unwrap_or(Path::new(""));
        if name == b".wh..wh..opq" {
            push(
                &mut changes,
                &mut changed_dirs,
                Path::new("/").join(dir_rel),
                ChangeKind::Modified,
            );
            let mut hidden = std::collections::BTreeSet::new();
            for lower in lowers {
                if let Ok(rd) = fs::read_dir(lower.join(dir_rel)) {
                    for child in rd.flatten() {
                        let child_name = child.file_name();
                        if !child_name.as_bytes().starts_with(b".wh.") {
                            hidden.insert(child_name);
                        }
                    }
                }
            }
            for child in hidden {
                if lstat(&rw.join(dir_rel).join(&child))?.is_none() {
                    push(
                        &mut changes,
                        &mut changed_dirs,
                        Path::new("/").join(dir_rel).join(child),
                        ChangeKind::Deleted,
                    );
                }
            }
            continue;
        }
        if let Some(target) = name.strip_prefix(b".wh.") {
            let target = std::ffi::OsStr::from_bytes(target);
            push(
                &mut changes,
                &mut changed_dirs,
                Path::new("/").join(dir_rel).join(target),
                ChangeKind::Deleted,
            );
            continue;
        }
        let meta = entry
            .metadata()
            .map_err(|e| DriverError::io("lstat", entry.path())(e.into()))?;
        let mut kind = ChangeKind::Added;
        let mut below = None;
        for lower in lowers {
            if let Some(old) = lstat(&lower.join(rel))? {
                kind = ChangeKind::Modified;
                below = Some(old);
                break;
            }
            if lstat(&lower.join(dir_rel).join(whiteout_of(entry.file_name())))?.is_some() {
                break;
            }
        }
        if meta.is_dir() {
            let unchanged = below.is_some_and(|old| {
                old.is_dir()
                    && old.mode() == meta.mode()
                    && old.mtime() == meta.mtime()
                    && old.uid() == meta.uid()
                    && old.gid() == meta.gid()
            });
            if unchanged {
                // Not a change itself, and (as in moby's changes()) not yet
                // recorded: a deletion or addition inside still lists it.
                continue;
            }
            changed_dirs.insert(Path::new("/").join(rel));
        }
        push(
            &mut changes,
            &mut changed_dirs,
            Path::new("/").join(rel),
            kind,
        );
    }
    changes.sort_by(|a, b| {
        a.path
            .as_os_str()
            .as_bytes()
            .cmp(b.path.as_os_str().as_bytes())
    });
    changes.dedup_by(|b, a| a.path == b.path);
    Ok(changes)
}

fn whiteout_of(name: &std::ffi::OsStr) -> OsString {
    let mut wh = OsString::from(".wh.");
    wh.push(name);
    wh
}

impl Driver for Aufs {
    fn name(&self) -> &'static str {
        "aufs"
    }

    fn home(&self) -> &Path {
        &self.home
    }

    fn create(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<(), DriverError> {
        self.create_layer(id, parent, opts)
    }

    fn remove(&self, id: &str) -> Result<(), DriverError> {
        self.existing(id)?;
        self.unmount_union(id)?;
        let diff = self.diff_dir(id);
        let doomed = self
            .home
            .join(DIFF_DIR)
            .join(format!("{REMOVING_PREFIX}{id}"));
        fs::rename(&diff, &doomed).map_err(DriverError::io("rename for removal", &diff))?;
        let _ = fs::remove_file(self.layers_file(id));
        let _ = fs::remove_dir(self.mount_dir(id));
        fsutil::remove_all(&doomed).map_err(DriverError::io("remove", &doomed))
    }

    fn get(&self, id: &str) -> Result<PathBuf, DriverError> {
        self.existing(id)?;
        if self.parent_ids(id)?.is_empty() {
            return Ok(self.diff_dir(id));
        }
        let mnt = self.mount_dir(id);
        if self.mounts.increment(&mnt) > 1 {
            return Ok(mnt);
        }
        self.mount_union(id).inspect_err(|_| {
            self.mounts.decrement(&mnt);
        })
    }

    fn put(&self, id: &str) -> Result<(), DriverError> {
        self.existing(id)?;
        if self.parent_ids(id)?.is_empty() {
            return Ok(());
        }
        let mnt = self.mount_dir(id);
        if self.mounts.decrement(&mnt) > 0 {
            return Ok(());
        }
        self.unmount_union(id)
    }

    fn exists(&self, id: &str) -> bool {
        layer_id::check(id, &[]).is_ok() && self.diff_dir(id).is_dir()
    }

    fn status(&self) -> Vec<(String, String)> {
        let dirs = fs::read_dir(self.home.join(DIFF_DIR))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| !e.file_name().as_bytes().starts_with(b"."))
                    .count()
            })
            .unwrap_or(0);
        let union = match &self.union {
            Union::Kernel => "kernel aufs".to_string(),
            Union::Helper(_) => "layerscope FUSE union (helper process)".to_string(),
            Union::InProcess => "layerscope FUSE union (in-process)".to_string(),
        };
        vec![
            ("Root Dir".into(), self.home.display().to_string()),
            ("Backing Filesystem".into(), self.backing_fs.into()),
            ("Dirs".into(), dirs.to_string()),
            ("Dirperm1 Supported".into(), "false".into()),
            ("Union".into(), union),
            (
                "FUSE passthrough requested".into(),
                self.union_options.passthrough.to_string(),
            ),
        ]
    }

    fn metadata(&self, id: &str) -> Result<BTreeMap<String, String>, DriverError> {
        self.existing(id)?;
        let mut metadata = BTreeMap::new();
        metadata.insert("DiffDir".into(), self.diff_dir(id).display().to_string());
        metadata.insert("MountDir".into(), self.mount_dir(id).display().to_string());
        let parents = self.parent_ids(id)?;
        if !parents.is_empty() {
            let dirs: Vec<String> = parents
                .iter()
                .map(|p| self.diff_dir(p).display().to_string())
                .collect();
            metadata.insert("LowerDirs".into(), dirs.join(":"));
        }
        Ok(metadata)
    }

    fn cleanup(&self) -> Result<(), DriverError> {
        let mnt_root = self.home.join(MNT_DIR);
        let ids: Vec<String> = fs::read_dir(&mnt_root)
            .map_err(DriverError::io("read", &mnt_root))?
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| !n.starts_with('.'))
            .collect();
        for id in ids {
            let mnt = self.mount_dir(&id);
            if mount::is_mount_point(&mnt) || self.pid_file(&id).exists() {
                self.unmount_union(&id)?;
            }
        }
        Ok(())
    }

    fn diff(&self, id: &str, parent: Option<&str>, out: &mut dyn Write) -> Result<(), DriverError> {
        self.existing(id)?;
        if !self.is_parent(id, parent) {
            let changes = self.naive_changes(id, parent)?;
            let root = self.get(id)?;
            let result = archive::export_changes(&root, &changes, out);
            self.put(id)?;
            result?;
            return Ok(());
        }
        archive::export_dir(&self.diff_dir(id), WhiteoutFormat::Aufs, out)?;
        Ok(())
    }

    fn changes(&self, id: &str, parent: Option<&str>) -> Result<Vec<Change>, DriverError> {
        self.existing(id)?;
        if !self.is_parent(id, parent) {
            return self.naive_changes(id, parent);
        }
        let (rw, lowers) = self.branches(id)?;
        aufs_changes(&rw, &lowers)
    }

    fn apply_diff(
        &self,
        id: &str,
        parent: Option<&str>,
        diff: &mut dyn Read,
        tar_split: Option<&mut (dyn Write + Send)>,
    ) -> Result<AppliedLayer, DriverError> {
        self.existing(id)?;
        if !self.is_parent(id, parent) {
            return Err(DriverError::not_parent(id, parent));
        }
        super::apply_to_diff_dir(&self.diff_dir(id), WhiteoutFormat::Aufs, diff, tar_split)
    }

    fn diff_size(&self, id: &str, parent: Option<&str>) -> Result<u64, DriverError> {
        self.existing(id)?;
        if !self.is_parent(id, parent) {
            let changes = self.naive_changes(id, parent)?;
            let root = self.get(id)?;
            let size = super::changes_size(&root, &changes);
            self.put(id)?;
            return size;
        }
        let dir = self.diff_dir(id);
        fsutil::directory_size(&dir).map_err(DriverError::io("size", &dir))
    }

    fn diff_files(&self, id: &str) -> Option<PathBuf> {
        self.exists(id).then(|| self.diff_dir(id))
    }

    fn sweep_incomplete(&self) -> Result<usize, DriverError> {
        let mut removed = 0;
        let diff_root = self.home.join(DIFF_DIR);
        for entry in fs::read_dir(&diff_root).map_err(DriverError::io("read", &diff_root))? {
            let entry = entry.map_err(DriverError::io("read", &diff_root))?;
            let name = entry.file_name();
            let name = name.as_bytes();
            if name.starts_with(STAGING_PREFIX.as_bytes())
                || name.starts_with(REMOVING_PREFIX.as_bytes())
            {
                fsutil::remove_all(&entry.path())
                    .map_err(DriverError::io("remove", entry.path()))?;
                removed += 1;
            }
        }
        let layers_root = self.home.join(LAYERS_DIR);
        for entry in fs::read_dir(&layers_root).map_err(DriverError::io("read", &layers_root))? {
            let entry = entry.map_err(DriverError::io("read", &layers_root))?;
            let name = entry.file_name();
            let orphan = name.as_bytes().starts_with(b".") || !diff_root.join(&name).is_dir();
            if orphan {
                fs::remove_file(entry.path()).map_err(DriverError::io("remove", entry.path()))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}
