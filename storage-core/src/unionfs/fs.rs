//! The FUSE filesystem of the union (fuser's `Filesystem`): lookups and
//! listings through [`Branches`], every change made in the writable branch
//! after a [`copyup`], deletions of lower entries as `.wh.` whiteouts, and
//! regular files handed to the kernel as passthrough backing files when
//! the kernel offers FUSE_PASSTHROUGH (reads and writes then never reach
//! this process).

use std::ffi::OsStr;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};
use nix::sys::time::TimeSpec;

use super::branch::{self, Branches, Found};
use super::copyup;
use super::handles::{Handles, OpenFile};
use super::nodes::{Nodes, ROOT};

/// Tuning of a union mount.
#[derive(Debug, Clone)]
pub struct UnionOptions {
    /// How long the kernel may cache entries and attributes. The union is
    /// the only writer of its branches while mounted, so this can be long.
    pub ttl: Duration,
    /// Ask for FUSE passthrough (kernel 6.9+) for regular files.
    pub passthrough: bool,
}

impl Default for UnionOptions {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(60),
            passthrough: true,
        }
    }
}

/// What one `setattr` changes.
struct SetAttr {
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    size: Option<u64>,
    atime: Option<TimeOrNow>,
    mtime: Option<TimeOrNow>,
    fh: Option<FileHandle>,
}

pub struct UnionFs {
    branches: Branches,
    nodes: Mutex<Nodes>,
    handles: Handles,
    /// Serializes every operation that changes the branches.
    mutate: Mutex<()>,
    options: UnionOptions,
    passthrough: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn errno(e: io::Error) -> Errno {
    match e.raw_os_error() {
        Some(code) if code > 0 => Errno::from_i32(code),
        _ => Errno::EIO,
    }
}

fn nix_errno(e: nix::Error) -> Errno {
    Errno::from_i32(e as i32)
}

fn system_time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nsecs as u64)
    }
}

fn file_type(kind: fs::FileType) -> FileType {
    FileType::from_std(kind).unwrap_or(FileType::RegularFile)
}

fn time_spec(time: Option<TimeOrNow>) -> TimeSpec {
    match time {
        None => TimeSpec::UTIME_OMIT,
        Some(TimeOrNow::Now) => TimeSpec::UTIME_NOW,
        Some(TimeOrNow::SpecificTime(t)) => {
            let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
            TimeSpec::new(d.as_secs() as i64, i64::from(d.subsec_nanos()))
        }
    }
}

/// Open flags passed on to the real file.
fn real_open_flags(flags: i32) -> i32 {
    flags
        & (libc::O_APPEND
            | libc::O_NONBLOCK
            | libc::O_DSYNC
            | libc::O_SYNC
            | libc::O_DIRECT
            | libc::O_NOFOLLOW)
}

fn wants_write(flags: i32) -> bool {
    (flags & libc::O_ACCMODE) != libc::O_RDONLY || flags & libc::O_TRUNC != 0
}

impl UnionFs {
    /// A union of `branches` (branch 0 writable).
    pub fn new(branches: Branches, options: UnionOptions) -> io::Result<Self> {
        let root = branches.root_branches()?;
        Ok(Self {
            branches,
            nodes: Mutex::new(Nodes::new(root)),
            handles: Handles::default(),
            mutate: Mutex::new(()),
            options,
            passthrough: AtomicBool::new(false),
        })
    }

    /// Whether the kernel accepted passthrough at INIT.
    pub fn passthrough_active(&self) -> bool {
        self.passthrough.load(Ordering::Relaxed)
    }

    fn attr(&self, ino: u64, meta: &Metadata) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size: meta.size(),
            blocks: meta.blocks(),
            atime: system_time(meta.atime(), meta.atime_nsec()),
            mtime: system_time(meta.mtime(), meta.mtime_nsec()),
            ctime: system_time(meta.ctime(), meta.ctime_nsec()),
            crtime: UNIX_EPOCH,
            kind: file_type(meta.file_type()),
            perm: (meta.mode() & 0o7777) as u16,
            nlink: meta.nlink() as u32,
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: meta.rdev() as u32,
            blksize: meta.blksize() as u32,
            flags: 0,
        }
    }

    /// Path and merging branches of the directory node `ino`.
    fn dir_info(&self, ino: u64) -> Result<(PathBuf, Vec<usize>), Errno> {
        let nodes = lock(&self.nodes);
        let path = nodes.path(ino).ok_or(Errno::ENOENT)?;
        let node = nodes.get(ino).ok_or(Errno::ENOENT)?;
        if node.dir_branches.is_empty() {
            return Err(Errno::ENOTDIR);
        }
        Ok((path, node.dir_branches.clone()))
    }

    /// Where node `ino` is now.
    fn resolve(&self, ino: u64) -> Result<(PathBuf, Found), Errno> {
        if ino == ROOT {
            let dir_branches = lock(&self.nodes)
                .get(ROOT)
                .map(|n| n.dir_branches.clone())
                .unwrap_or_default();
            let branch = dir_branches.first().copied().unwrap_or(0);
            let meta = fs::symlink_metadata(self.branches.dir(branch)).map_err(errno)?;
            return Ok((
                PathBuf::new(),
                Found {
                    branch,
                    meta,
                    dir_branches,
                },
            ));
        }
        let (parent, name) = {
            let nodes = lock(&self.nodes);
            let node = nodes.get(ino).ok_or(Errno::ENOENT)?;
            node.place.clone().ok_or(Errno::ENOENT)?
        };
        let (parent_path, parent_branches) = self.dir_info(parent)?;
        let found = self
            .branches
            .lookup(&parent_path, &parent_branches, &name)
            .map_err(errno)?
            .ok_or(Errno::ENOENT)?;
        Ok((parent_path.join(name), found))
    }

    /// Looks `name` up in `parent` for the kernel (counting the lookup).
    fn lookup_entry(&self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        let (parent_path, parent_branches) = self.dir_info(parent)?;
        let found = self
            .branches
            .lookup(&parent_path, &parent_branches, name)
            .map_err(errno)?
            .ok_or(Errno::ENOENT)?;
        let ino = lock(&self.nodes).looked_up(parent, name, found.dir_branches.clone());
        Ok(self.attr(ino, &found.meta))
    }

    /// Makes sure the directory node `ino` and its ancestors exist in the
    /// writable branch; returns its path.
    fn prepare_dir(&self, ino: u64) -> Result<PathBuf, Errno> {
        let (path, _) = self.dir_info(ino)?;
        copyup::ensure_dirs(&self.branches, &path).map_err(errno)?;
        let mut nodes = lock(&self.nodes);
        let mut at = Some(ino);
        while let Some(id) = at {
            let Some(node) = nodes.get_mut(id) else { break };
            if node.dir_branches.first() != Some(&0) {
                node.dir_branches.insert(0, 0);
            }
            at = node.place.as_ref().map(|(p, _)| *p);
        }
        Ok(path)
    }

    /// Copies node `ino` up when it is not in the writable branch yet.
    fn copy_up(&self, ino: u64, truncate: bool) -> Result<(PathBuf, Found), Errno> {
        let (path, found) = self.resolve(ino)?;
        if found.branch == 0 {
            return Ok((path, found));
        }
        let parent = lock(&self.nodes).get(ino).and_then(|n| n.place.clone());
        if let Some((parent, _)) = parent {
            self.prepare_dir(parent)?;
        }
        copyup::copy_up(&self.branches, &path, found.branch, truncate).map_err(errno)?;
        let (path, found) = self.resolve(ino)?;
        if let Some(node) = lock(&self.nodes).get_mut(ino) {
            node.dir_branches = found.dir_branches.clone();
        }
        Ok((path, found))
    }

    /// Removes `.wh.<name>` from the writable `parent_path`; true when
    /// there was one.
    fn remove_whiteout(&self, parent_path: &Path, name: &OsStr) -> Result<bool, Errno> {
        let wh = self
            .branches
            .path(0, &parent_path.join(branch::whiteout_name(name)));
        match fs::remove_file(&wh) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(errno(e)),
        }
    }

    /// Creates `.wh.<name>` in the writable `parent_path`.
    fn make_whiteout(&self, parent_path: &Path, name: &OsStr) -> Result<(), Errno> {
        let wh = self
            .branches
            .path(0, &parent_path.join(branch::whiteout_name(name)));
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o444)
            .open(&wh)
            .map(drop)
            .map_err(errno)
    }

    /// Checks a name to create and returns the parent's writable path, the
    /// parent prepared and the whiteout of `name` removed (`true` when
    /// there was one, so a new directory must be opaque).
    fn prepare_create(&self, parent: u64, name: &OsStr) -> Result<(PathBuf, bool), Errno> {
        if branch::is_reserved(name) {
            return Err(Errno::EPERM);
        }
        let (parent_path, parent_branches) = self.dir_info(parent)?;
        if self
            .branches
            .lookup(&parent_path, &parent_branches, name)
            .map_err(errno)?
            .is_some()
        {
            return Err(Errno::EEXIST);
        }
        let parent_path = self.prepare_dir(parent)?;
        let had_whiteout = self.remove_whiteout(&parent_path, name)?;
        Ok((parent_path, had_whiteout))
    }

    /// Gives a new entry to the caller (the server creates as root).
    fn own(&self, req: &Request, path: &Path) -> Result<(), Errno> {
        if req.uid() != 0 || req.gid() != 0 {
            std::os::unix::fs::lchown(path, Some(req.uid()), Some(req.gid())).map_err(errno)?;
        }
        Ok(())
    }

    /// Opens the real file of node `ino` for the kernel.
    fn open_node(&self, ino: u64, flags: i32) -> Result<(File, bool), Errno> {
        let (path, found) = if wants_write(flags) {
            let _guard = lock(&self.mutate);
            self.copy_up(ino, flags & libc::O_TRUNC != 0)?
        } else {
            self.resolve(ino)?
        };
        if !found.meta.is_file() {
            return Err(Errno::EINVAL);
        }
        let accmode = flags & libc::O_ACCMODE;
        let file = OpenOptions::new()
            .read(accmode != libc::O_WRONLY)
            .write(accmode != libc::O_RDONLY)
            .truncate(flags & libc::O_TRUNC != 0)
            .custom_flags(real_open_flags(flags))
            .open(self.branches.path(found.branch, &path))
            .map_err(errno)?;
        Ok((file, found.branch == 0))
    }

    /// Registers an open file, with a passthrough backing id when possible.
    fn register_open(
        &self,
        ino: u64,
        file: File,
        open_backing: impl FnOnce(&File) -> io::Result<fuser::BackingId>,
    ) -> (u64, FopenFlags, Option<std::sync::Arc<fuser::BackingId>>) {
        if self.passthrough_active() {
            if let Ok(meta) = file.metadata() {
                let identity = (meta.dev(), meta.ino());
                if let Some(id) = self
                    .handles
                    .backing_for(ino, identity, || open_backing(&file))
                {
                    let fh = self.handles.add_file(OpenFile {
                        file,
                        backing_node: Some(ino),
                    });
                    return (fh, FopenFlags::empty(), Some(id));
                }
                // Another backing file serves this inode: uncached I/O
                // through this process keeps the kernel's io modes apart.
                let fh = self.handles.add_file(OpenFile {
                    file,
                    backing_node: None,
                });
                return (fh, FopenFlags::FOPEN_DIRECT_IO, None);
            }
        }
        let fh = self.handles.add_file(OpenFile {
            file,
            backing_node: None,
        });
        (fh, FopenFlags::FOPEN_KEEP_CACHE, None)
    }

    /// Removes `name` from `parent`: the writable copy, and a whiteout when
    /// a lower branch still has it. `dir` selects rmdir semantics.
    fn remove_entry(&self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let _guard = lock(&self.mutate);
        if branch::is_reserved(name) {
            return Err(Errno::ENOENT);
        }
        let (parent_path, parent_branches) = self.dir_info(parent)?;
        let found = self
            .branches
            .lookup(&parent_path, &parent_branches, name)
            .map_err(errno)?
            .ok_or(Errno::ENOENT)?;
        let rel = parent_path.join(name);
        if dir {
            if !found.meta.is_dir() {
                return Err(Errno::ENOTDIR);
            }
            if !self
                .branches
                .list(&rel, &found.dir_branches)
                .map_err(errno)?
                .is_empty()
            {
                return Err(Errno::ENOTEMPTY);
            }
        } else if found.meta.is_dir() {
            return Err(Errno::EISDIR);
        }
        let lower_visible = self
            .branches
            .visible_below_rw(&parent_path, &parent_branches, name)
            .map_err(errno)?;
        let parent_path = self.prepare_dir(parent)?;
        if found.branch == 0 {
            let real = self.branches.path(0, &rel);
            if dir {
                // Only whiteouts and markers are left in it.
                crate::fsutil::remove_all(&real).map_err(errno)?;
            } else {
                fs::remove_file(&real).map_err(errno)?;
            }
        }
        if lower_visible {
            self.make_whiteout(&parent_path, name)?;
        }
        lock(&self.nodes).remove_name(parent, name);
        Ok(())
    }

    fn do_rename(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        if !(flags - RenameFlags::RENAME_NOREPLACE).is_empty() {
            return Err(Errno::EINVAL);
        }
        if branch::is_reserved(name) || branch::is_reserved(new_name) {
            return Err(Errno::EPERM);
        }
        let _guard = lock(&self.mutate);
        let (src_parent, src_branches) = self.dir_info(parent)?;
        let (dst_parent, dst_branches) = self.dir_info(new_parent)?;
        let src = self
            .branches
            .lookup(&src_parent, &src_branches, name)
            .map_err(errno)?
            .ok_or(Errno::ENOENT)?;
        let is_dir = src.meta.is_dir();
        if is_dir && src.dir_branches != [0] {
            // aufs: a directory with lower parts is not renamed in place.
            return Err(Errno::EXDEV);
        }
        let dst = self
            .branches
            .lookup(&dst_parent, &dst_branches, new_name)
            .map_err(errno)?;
        if let Some(dst) = &dst {
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            match (is_dir, dst.meta.is_dir()) {
                (true, false) => return Err(Errno::ENOTDIR),
                (false, true) => return Err(Errno::EISDIR),
                (true, true) => {
                    let dst_rel = dst_parent.join(new_name);
                    if !self
                        .branches
                        .list(&dst_rel, &dst.dir_branches)
                        .map_err(errno)?
                        .is_empty()
                    {
                        return Err(Errno::ENOTEMPTY);
                    }
                    if dst.branch == 0 {
                        crate::fsutil::remove_all(&self.branches.path(0, &dst_rel))
                            .map_err(errno)?;
                    }
                }
                (false, false) => {}
            }
        }
        let src_lower = self
            .branches
            .visible_below_rw(&src_parent, &src_branches, name)
            .map_err(errno)?;
        let dst_lower = self
            .branches
            .visible_below_rw(&dst_parent, &dst_branches, new_name)
            .map_err(errno)?;
        // Copy the source up, prepare the target directory.
        let src_ino = lock(&self.nodes).child(parent, name);
        if src.branch != 0 {
            self.prepare_dir(parent)?;
            copyup::copy_up(&self.branches, &src_parent.join(name), src.branch, false)
                .map_err(errno)?;
        }
        let dst_parent = self.prepare_dir(new_parent)?;
        let src_parent = self.prepare_dir(parent)?;
        self.remove_whiteout(&dst_parent, new_name)?;
        let from = self.branches.path(0, &src_parent.join(name));
        let to = self.branches.path(0, &dst_parent.join(new_name));
        fs::rename(&from, &to).map_err(errno)?;
        if is_dir && dst_lower {
            fs::write(to.join(branch::OPAQUE), b"").map_err(errno)?;
        }
        if src_lower {
            self.make_whiteout(&src_parent, name)?;
        }
        let mut nodes = lock(&self.nodes);
        nodes.rename(parent, name, new_parent, new_name);
        if let Some(ino) = src_ino {
            if let Some(node) = nodes.get_mut(ino) {
                if is_dir {
                    node.dir_branches = vec![0];
                }
            }
        }
        Ok(())
    }

    fn do_setattr(&self, ino: u64, change: SetAttr) -> Result<FileAttr, Errno> {
        let SetAttr {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
            fh,
        } = change;
        let _guard = lock(&self.mutate);
        let (path, found) = self.copy_up(ino, size == Some(0))?;
        let real = self.branches.path(0, &path);
        if let Some(mode) = mode {
            if !found.meta.file_type().is_symlink() {
                fs::set_permissions(&real, fs::Permissions::from_mode(mode & 0o7777))
                    .map_err(errno)?;
            }
        }
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::lchown(&real, uid, gid).map_err(errno)?;
        }
        if let Some(size) = size {
            let open = fh.and_then(|fh| self.handles.file(fh.0));
            match open {
                Some(open) if open.backing_node.is_some() || found.branch == 0 => {
                    open.file.set_len(size).or_else(|_| {
                        OpenOptions::new()
                            .write(true)
                            .open(&real)
                            .and_then(|f| f.set_len(size))
                    })
                }
                _ => OpenOptions::new()
                    .write(true)
                    .open(&real)
                    .and_then(|f| f.set_len(size)),
            }
            .map_err(errno)?;
        }
        if atime.is_some() || mtime.is_some() {
            copyup::set_times(&real, time_spec(atime), time_spec(mtime)).map_err(errno)?;
        }
        let meta = fs::symlink_metadata(&real).map_err(errno)?;
        Ok(self.attr(ino, &meta))
    }

    fn do_link(&self, ino: u64, new_parent: u64, new_name: &OsStr) -> Result<FileAttr, Errno> {
        let _guard = lock(&self.mutate);
        let (path, found) = self.copy_up(ino, false)?;
        if found.meta.is_dir() {
            return Err(Errno::EPERM);
        }
        let (dst_parent, _) = self.prepare_create(new_parent, new_name)?;
        let to = self.branches.path(0, &dst_parent.join(new_name));
        fs::hard_link(self.branches.path(0, &path), &to).map_err(errno)?;
        let meta = fs::symlink_metadata(&to).map_err(errno)?;
        lock(&self.nodes).add_alias(ino, new_parent, new_name);
        Ok(self.attr(ino, &meta))
    }

    /// Runs `make` to create `name` in `parent` (given its real path),
    /// gives it to the caller and looks it up.
    fn create_entry(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        make: impl FnOnce(&Path) -> io::Result<()>,
        opaque_if_whiteout: bool,
    ) -> Result<FileAttr, Errno> {
        let _guard = lock(&self.mutate);
        let (parent_path, had_whiteout) = self.prepare_create(parent, name)?;
        let real = self.branches.path(0, &parent_path.join(name));
        make(&real).map_err(errno)?;
        if opaque_if_whiteout && had_whiteout {
            fs::write(real.join(branch::OPAQUE), b"").map_err(errno)?;
        }
        self.own(req, &real)?;
        self.lookup_entry(parent, name)
    }

    fn xattr_reply(value: &[u8], size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(value.len() as u32);
        } else if value.len() > size as usize {
            reply.error(Errno::ERANGE);
        } else {
            reply.data(value);
        }
    }
}

impl Filesystem for UnionFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        let _ = config.add_capabilities(InitFlags::FUSE_ASYNC_DIO);
        if self.options.passthrough
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok()
        {
            self.passthrough.store(true, Ordering::Relaxed);
        }
        let _ = config
            .set_max_readahead(1 << 20)
            .or_else(|max| config.set_max_readahead(max));
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_background(64);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.lookup_entry(parent.0, name) {
            Ok(attr) => reply.entry(&self.options.ttl, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        lock(&self.nodes).forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        if let Some(open) = fh.and_then(|fh| self.handles.file(fh.0)) {
            if let Ok(meta) = open.file.metadata() {
                return reply.attr(&self.options.ttl, &self.attr(ino.0, &meta));
            }
        }
        match self.resolve(ino.0) {
            Ok((_, found)) => reply.attr(&self.options.ttl, &self.attr(ino.0, &found.meta)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let change = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
            fh,
        };
        match self.do_setattr(ino.0, change) {
            Ok(attr) => reply.attr(&self.options.ttl, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.resolve(ino.0).and_then(|(path, found)| {
            fs::read_link(self.branches.path(found.branch, &path)).map_err(errno)
        }) {
            Ok(target) => reply.data(target.as_os_str().as_encoded_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let make = |real: &Path| -> io::Result<()> {
            let kind = nix::sys::stat::SFlag::from_bits_truncate(mode & libc::S_IFMT);
            let perm = nix::sys::stat::Mode::from_bits_truncate(mode & 0o7777);
            nix::sys::stat::mknod(real, kind, perm, u64::from(rdev))
                .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
            fs::set_permissions(real, fs::Permissions::from_mode(mode & 0o7777))
        };
        match self.create_entry(req, parent.0, name, make, false) {
            Ok(attr) => reply.entry(&self.options.ttl, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let make = |real: &Path| -> io::Result<()> {
            fs::create_dir(real)?;
            fs::set_permissions(real, fs::Permissions::from_mode(mode & 0o7777))
        };
        match self.create_entry(req, parent.0, name, make, true) {
            Ok(attr) => reply.entry(&self.options.ttl, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.remove_entry(parent.0, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.remove_entry(parent.0, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let make = |real: &Path| std::os::unix::fs::symlink(target, real);
        match self.create_entry(req, parent.0, link_name, make, false) {
            Ok(attr) => reply.entry(&self.options.ttl, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.do_rename(parent.0, name, newparent.0, newname, flags) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        match self.do_link(ino.0, newparent.0, newname) {
            Ok(attr) => reply.entry(&self.options.ttl, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.open_node(ino.0, flags.0) {
            Ok((file, _)) => {
                let (fh, fopen, backing) =
                    self.register_open(ino.0, file, |f| reply.open_backing(f));
                match backing {
                    Some(id) => reply.opened_passthrough(FileHandle(fh), fopen, &id),
                    None => reply.opened(FileHandle(fh), fopen),
                }
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(open) = self.handles.file(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let mut buf = vec![0u8; size as usize];
        let mut filled = 0;
        while filled < buf.len() {
            match open
                .file
                .read_at(&mut buf[filled..], offset + filled as u64)
            {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return reply.error(errno(e)),
            }
        }
        reply.data(&buf[..filled]);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Some(open) = self.handles.file(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        match open.file.write_all_at(data, offset) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.handles.release_file(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let Some(open) = self.handles.file(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let synced = if datasync {
            open.file.sync_data()
        } else {
            open.file.sync_all()
        };
        match synced {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let listing = self.resolve(ino.0).and_then(|(path, found)| {
            if !found.meta.is_dir() {
                return Err(Errno::ENOTDIR);
            }
            self.branches
                .list(&path, &found.dir_branches)
                .map_err(errno)
        });
        match listing {
            Ok(listing) => {
                let fh = self.handles.add_dir(listing);
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(listing) = self.handles.dir(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let dots = [(".", ino.0), ("..", ino.0)];
        let total = listing.len() + 2;
        for index in offset as usize..total {
            let full = if index < 2 {
                let (name, ino) = dots[index];
                reply.add(INodeNo(ino), index as u64 + 1, FileType::Directory, name)
            } else {
                let entry = &listing[index - 2];
                reply.add(
                    INodeNo(entry.ino.max(1)),
                    index as u64 + 1,
                    file_type(entry.file_type),
                    &entry.name,
                )
            };
            if full {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.handles.release_dir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match nix::sys::statvfs::statvfs(self.branches.rw()) {
            Ok(st) => reply.statfs(
                st.blocks(),
                st.blocks_free(),
                st.blocks_available(),
                st.files(),
                st.files_free(),
                st.block_size() as u32,
                st.name_max() as u32,
                st.fragment_size() as u32,
            ),
            Err(e) => reply.error(nix_errno(e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let done = {
            let _guard = lock(&self.mutate);
            self.copy_up(ino.0, false).and_then(|(path, _)| {
                crate::sys::xattr::lset(&self.branches.path(0, &path), name, value).map_err(errno)
            })
        };
        match done {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let value = self.resolve(ino.0).and_then(|(path, found)| {
            crate::sys::xattr::lget(&self.branches.path(found.branch, &path), name)
                .map_err(errno)?
                .ok_or(Errno::NO_XATTR)
        });
        match value {
            Ok(value) => Self::xattr_reply(&value, size, reply),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let names = self.resolve(ino.0).and_then(|(path, found)| {
            crate::sys::xattr::llist(&self.branches.path(found.branch, &path)).map_err(errno)
        });
        match names {
            Ok(names) => {
                let mut raw = Vec::new();
                for name in names {
                    raw.extend_from_slice(name.as_encoded_bytes());
                    raw.push(0);
                }
                Self::xattr_reply(&raw, size, reply);
            }
            Err(e) => reply.error(e),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let done = {
            let _guard = lock(&self.mutate);
            self.copy_up(ino.0, false).and_then(|(path, _)| {
                xattr::remove(self.branches.path(0, &path), name).map_err(errno)
            })
        };
        match done {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let made = (|| -> Result<(FileAttr, File), Errno> {
            let _guard = lock(&self.mutate);
            let (parent_path, _) = self.prepare_create(parent.0, name)?;
            let real = self.branches.path(0, &parent_path.join(name));
            let accmode = flags & libc::O_ACCMODE;
            let file = OpenOptions::new()
                .read(accmode != libc::O_WRONLY)
                .write(true)
                .create_new(true)
                .mode(mode & 0o7777)
                .custom_flags(real_open_flags(flags))
                .open(&real)
                .map_err(errno)?;
            file.set_permissions(fs::Permissions::from_mode(mode & 0o7777))
                .map_err(errno)?;
            self.own(req, &real)?;
            let attr = self.lookup_entry(parent.0, name)?;
            Ok((attr, file))
        })();
        match made {
            Ok((attr, file)) => {
                let (fh, fopen, backing) =
                    self.register_open(attr.ino.0, file, |f| reply.open_backing(f));
                match backing {
                    Some(id) => reply.created_passthrough(
                        &self.options.ttl,
                        &attr,
                        Generation(0),
                        FileHandle(fh),
                        fopen,
                        &id,
                    ),
                    None => reply.created(
                        &self.options.ttl,
                        &attr,
                        Generation(0),
                        FileHandle(fh),
                        fopen,
                    ),
                }
            }
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let Some(open) = self.handles.file(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        match nix::fcntl::fallocate(
            &open.file,
            nix::fcntl::FallocateFlags::from_bits_truncate(mode),
            offset as i64,
            length as i64,
        ) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(nix_errno(e)),
        }
    }
}
