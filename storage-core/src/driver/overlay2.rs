//! The overlay2 driver on the kernel's overlayfs, in Docker's own layout:
//!
//! ```text
//! <home>/l/<26-char link> -> ../<id>/diff
//! <home>/<id>/diff/        the layer's own files (the upper dir of a rw layer)
//! <home>/<id>/link         the layer's short link name
//! <home>/<id>/lower        l/A:l/B:...  parent first, base last
//! <home>/<id>/work/        overlay's workdir (layers with a parent)
//! <home>/<id>/merged/      the mount point while mounted
//! <home>/<id>/committed    marks a layer that has children (mounted read-only)
//! ```
//!
//! Mount options are `index=off` plus `lowerdir`, `upperdir`, `workdir`,
//! and only on request `metacopy=on`, `redirect_dir=on`, `volatile`. When the
//! option string would not fit in a page, the mount uses paths relative to
//! `<home>` from a thread with its own working directory, as moby does.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::layer_id;
use super::mountref::MountCounter;
use super::{CreateOpts, Driver, DriverError, DriverOptions};
use crate::archive::{self, AppliedLayer, Change, WhiteoutFormat};
use crate::fsutil;
use crate::sys::mount;

const LINK_DIR: &str = "l";
const DIFF_DIR: &str = "diff";
const WORK_DIR: &str = "work";
const MERGED_DIR: &str = "merged";
const LOWER_FILE: &str = "lower";
const LINK_FILE: &str = "link";
const COMMITTED_FILE: &str = "committed";
const LINK_ID_LEN: usize = 26;

/// Docker's overlay2 limit on lower layers (moby's maxDepth).
pub const MAX_DEPTH: usize = 128;

/// Opt-in overlayfs features (`--storage-opt overlay2.<name>=...`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overlay2Options {
    /// `metacopy=on`: chmod/chown copy up metadata only, data stays below.
    pub metacopy: bool,
    /// `redirect_dir=on`: directory renames without a full copy-up.
    pub redirect_dir: bool,
    /// `volatile`: no syncs to the upper filesystem (lost on crash).
    pub volatile: bool,
}

impl Overlay2Options {
    fn parse(options: &DriverOptions) -> Result<Self, DriverError> {
        let mut parsed = Self::default();
        for (key, value) in &options.storage_opt {
            let on = matches!(value.as_str(), "on" | "true" | "1" | "yes");
            match key.trim_start_matches("overlay2.") {
                "metacopy" => parsed.metacopy = on,
                "redirect_dir" => parsed.redirect_dir = on,
                "volatile" => parsed.volatile = on,
                other => {
                    return Err(DriverError::UnknownOption {
                        id: "overlay2".into(),
                        key: other.to_string(),
                    });
                }
            }
        }
        Ok(parsed)
    }

    /// The option-string prefix every mount gets.
    fn mount_prefix(&self) -> String {
        let mut prefix = String::from("index=off,");
        if self.metacopy {
            prefix.push_str("metacopy=on,");
        }
        if self.redirect_dir || self.metacopy {
            prefix.push_str("redirect_dir=on,");
        }
        prefix
    }
}

pub struct Overlay2 {
    home: PathBuf,
    options: Overlay2Options,
    mounts: MountCounter,
    backing_fs: &'static str,
    reflink: bool,
}

impl Overlay2 {
    /// Opens (creating when needed) the driver home `<root>/overlay2`.
    pub fn open(home: &Path, options: &DriverOptions) -> Result<Self, DriverError> {
        let options = Overlay2Options::parse(options)?;
        if !kernel_has_overlay() {
            return Err(DriverError::Unavailable {
                driver: "overlay2".into(),
                why: "kernel has no overlayfs (overlay missing from /proc/filesystems)".into(),
            });
        }
        fs::create_dir_all(home.join(LINK_DIR)).map_err(DriverError::io("create", home))?;
        let backing_fs = fsutil::filesystem_name(home).unwrap_or("<unknown>");
        if matches!(backing_fs, "overlayfs" | "fuse") {
            return Err(DriverError::Unavailable {
                driver: "overlay2".into(),
                why: format!(
                    "{} is on {backing_fs}, which cannot be an overlay upper filesystem",
                    home.display()
                ),
            });
        }
        let reflink = fsutil::supports_reflink(home);
        Ok(Self {
            home: home.to_path_buf(),
            options,
            mounts: MountCounter::default(),
            backing_fs,
            reflink,
        })
    }

    pub fn options(&self) -> &Overlay2Options {
        &self.options
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.home.join(id)
    }

    fn existing_dir(&self, id: &str) -> Result<PathBuf, DriverError> {
        layer_id::existing_dir(id, &[LINK_DIR], |id| self.dir(id))
    }

    /// The `lower` file of a child of `parent`: the parent's link, then the
    /// parent's own lowers.
    fn lower_for_child(&self, id: &str, parent: &str) -> Result<String, DriverError> {
        let parent_dir = self.existing_dir(parent)?;
        let link = fs::read_to_string(parent_dir.join(LINK_FILE)).map_err(DriverError::io(
            "read link of parent",
            parent_dir.join(LINK_FILE),
        ))?;
        let mut lowers = vec![format!("{LINK_DIR}/{}", link.trim())];
        match fs::read_to_string(parent_dir.join(LOWER_FILE)) {
            Ok(parent_lower) => lowers.extend(parent_lower.split(':').map(str::to_string)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(DriverError::io("read lower", parent_dir.join(LOWER_FILE))(
                    e,
                ));
            }
        }
        if lowers.len() > MAX_DEPTH {
            return Err(DriverError::MaxDepth {
                id: id.to_string(),
                depth: lowers.len(),
                limit: MAX_DEPTH,
            });
        }
        Ok(lowers.join(":"))
    }

    /// Absolute lower directories of `id`, top first.
    pub fn lower_dirs(&self, id: &str) -> Result<Vec<PathBuf>, DriverError> {
        let dir = self.existing_dir(id)?;
        let lower = match fs::read_to_string(dir.join(LOWER_FILE)) {
            Ok(lower) => lower,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(DriverError::io("read lower", dir.join(LOWER_FILE))(e)),
        };
        lower
            .split(':')
            .map(|link| {
                let link_path = self.home.join(link);
                let target =
                    fs::read_link(&link_path).map_err(DriverError::io("read link", &link_path))?;
                Ok(normalize(&self.home.join(LINK_DIR).join(target)))
            })
            .collect()
    }

    fn create_layer(
        &self,
        id: &str,
        parent: Option<&str>,
        opts: &CreateOpts,
    ) -> Result<(), DriverError> {
        layer_id::check(id, &[LINK_DIR])?;
        if let Some(key) = opts.storage_opt.keys().next() {
            return Err(DriverError::UnknownOption {
                id: id.to_string(),
                key: key.clone(),
            });
        }
        let dir = self.dir(id);
        if dir.exists() {
            return Err(DriverError::AlreadyExists { id: id.to_string() });
        }
        let lower = parent
            .map(|parent| self.lower_for_child(id, parent))
            .transpose()?;

        // Build under a temporary name, then rename: a crash leaves only a
        // dot-directory that `sweep_incomplete` removes, and a dangling link.
        let staging = self.home.join(format!(".creating-{id}"));
        fsutil::remove_all(&staging).map_err(DriverError::io("remove stale", &staging))?;
        let built = (|| -> Result<String, DriverError> {
            fsutil::ensure_dir(&staging, 0o710).map_err(DriverError::io("create", &staging))?;
            let diff = staging.join(DIFF_DIR);
            fsutil::ensure_dir(&diff, 0o755).map_err(DriverError::io("create", &diff))?;
            let link_id = fsutil::random_base32(LINK_ID_LEN);
            fsutil::write_atomic(&staging.join(LINK_FILE), link_id.as_bytes(), 0o644)
                .map_err(DriverError::io("write", staging.join(LINK_FILE)))?;
            if let Some(lower) = &lower {
                let work = staging.join(WORK_DIR);
                fsutil::ensure_dir(&work, 0o700).map_err(DriverError::io("create", &work))?;
                fsutil::write_atomic(&staging.join(LOWER_FILE), lower.as_bytes(), 0o644)
                    .map_err(DriverError::io("write", staging.join(LOWER_FILE)))?;
            }
            Ok(link_id)
        })();
        let link_id = match built {
            Ok(link_id) => link_id,
            Err(e) => {
                let _ = fsutil::remove_all(&staging);
                return Err(e);
            }
        };
        let link_path = self.home.join(LINK_DIR).join(&link_id);
        let link_target = Path::new("..").join(id).join(DIFF_DIR);
        if let Err(e) = std::os::unix::fs::symlink(&link_target, &link_path) {
            let _ = fsutil::remove_all(&staging);
            return Err(DriverError::io("create link", &link_path)(e));
        }
        if let Err(e) = fs::rename(&staging, &dir) {
            let _ = fs::remove_file(&link_path);
            let _ = fsutil::remove_all(&staging);
            return Err(DriverError::io("rename into place", &dir)(e));
        }
        if let Some(parent) = parent {
            let committed = self.dir(parent).join(COMMITTED_FILE);
            fsutil::write_atomic(&committed, b"", 0o600)
                .map_err(DriverError::io("write", committed))?;
        }
        Ok(())
    }

    /// Removes what a crash left behind: staging directories and `l/` links
    /// whose layer does not exist. Call it while holding the store's lock.
    fn sweep(&self) -> Result<usize, DriverError> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.home).map_err(DriverError::io("read", &self.home))? {
            let entry = entry.map_err(DriverError::io("read", &self.home))?;
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(".creating-")
            {
                fsutil::remove_all(&entry.path())
                    .map_err(DriverError::io("remove", entry.path()))?;
                removed += 1;
            }
        }
        let links = self.home.join(LINK_DIR);
        for entry in fs::read_dir(&links).map_err(DriverError::io("read", &links))? {
            let entry = entry.map_err(DriverError::io("read", &links))?;
            if !entry.path().exists() {
                fs::remove_file(entry.path()).map_err(DriverError::io("remove", entry.path()))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Mounts overlay on `<id>/merged` with `lowers` (the content of the
    /// lower file) and returns the merged path.
    fn mount_overlay(&self, id: &str, dir: &Path, lowers: &str) -> Result<PathBuf, DriverError> {
        let merged = dir.join(MERGED_DIR);
        let diff = dir.join(DIFF_DIR);
        let work = dir.join(WORK_DIR);
        let read_only = dir.join(COMMITTED_FILE).exists();
        let prefix = self.options.mount_prefix();
        let absolute_lowers: Vec<String> = lowers
            .split(':')
            .map(|l| self.home.join(l).to_string_lossy().into_owned())
            .collect();
        let mut data = if read_only {
            format!(
                "{prefix}lowerdir={}:{}",
                diff.display(),
                absolute_lowers.join(":")
            )
        } else {
            format!(
                "{prefix}lowerdir={},upperdir={},workdir={}",
                absolute_lowers.join(":"),
                diff.display(),
                work.display()
            )
        };
        if self.options.volatile && !read_only {
            data.push_str(",volatile");
        }
        fsutil::ensure_dir(&merged, 0o700).map_err(DriverError::io("create", &merged))?;

        let page_size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .unwrap_or(4096) as usize;
        if data.len() < page_size {
            mount::mount(
                "overlay",
                &merged,
                "overlay",
                mount::MountFlags::empty(),
                Some(&data),
            )?;
            return Ok(merged);
        }
        // Too long for one page: relative paths from <home>.
        let mut relative = if read_only {
            format!("{prefix}lowerdir={id}/{DIFF_DIR}:{lowers}")
        } else {
            format!("{prefix}lowerdir={lowers},upperdir={id}/{DIFF_DIR},workdir={id}/{WORK_DIR}")
        };
        if self.options.volatile && !read_only {
            relative.push_str(",volatile");
        }
        if relative.len() >= page_size {
            return Err(DriverError::MaxDepth {
                id: id.to_string(),
                depth: lowers.split(':').count(),
                limit: MAX_DEPTH,
            });
        }
        let target = PathBuf::from(format!("{id}/{MERGED_DIR}"));
        mount_from(&self.home, &target, &relative)?;
        Ok(merged)
    }

    fn is_parent(&self, id: &str, parent: Option<&str>) -> bool {
        let Ok(lowers) = self.lower_dirs(id) else {
            return false;
        };
        match (parent, lowers.first()) {
            (None, None) => true,
            (Some(parent), Some(first)) => first.parent() == Some(self.dir(parent).as_path()),
            _ => false,
        }
    }

    fn diff_dir(&self, id: &str) -> PathBuf {
        self.dir(id).join(DIFF_DIR)
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

impl Driver for Overlay2 {
    fn name(&self) -> &'static str {
        "overlay2"
    }

    fn home(&self) -> &Path {
        &self.home
    }

    fn create(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<(), DriverError> {
        self.create_layer(id, parent, opts)
    }

    fn remove(&self, id: &str) -> Result<(), DriverError> {
        let dir = self.existing_dir(id)?;
        let merged = dir.join(MERGED_DIR);
        if mount::is_mount_point(&merged) {
            mount::unmount_detach(&merged)?;
        }
        if let Ok(link) = fs::read_to_string(dir.join(LINK_FILE)) {
            let link = link.trim();
            if !link.is_empty() {
                let _ = fs::remove_file(self.home.join(LINK_DIR).join(link));
            }
        }
        // Rename first so a crash mid-removal leaves a dot-directory that
        // `sweep_incomplete` finishes, never a half-removed layer.
        let doomed = self.home.join(format!(".creating-{id}-removing"));
        fs::rename(&dir, &doomed).map_err(DriverError::io("rename for removal", &dir))?;
        fsutil::remove_all(&doomed).map_err(DriverError::io("remove", &doomed))
    }

    fn get(&self, id: &str) -> Result<PathBuf, DriverError> {
        let dir = self.existing_dir(id)?;
        let lowers = match fs::read_to_string(dir.join(LOWER_FILE)) {
            Ok(lowers) => lowers,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(dir.join(DIFF_DIR)),
            Err(e) => return Err(DriverError::io("read lower", dir.join(LOWER_FILE))(e)),
        };
        let merged = dir.join(MERGED_DIR);
        if self.mounts.increment(&merged) > 1 {
            return Ok(merged);
        }
        self.mount_overlay(id, &dir, lowers.trim())
            .inspect_err(|_| {
                self.mounts.decrement(&merged);
            })
    }

    fn put(&self, id: &str) -> Result<(), DriverError> {
        let dir = self.existing_dir(id)?;
        if !dir.join(LOWER_FILE).exists() {
            return Ok(());
        }
        let merged = dir.join(MERGED_DIR);
        if self.mounts.decrement(&merged) > 0 {
            return Ok(());
        }
        if mount::is_mount_point(&merged) {
            mount::unmount(&merged).or_else(|_| mount::unmount_detach(&merged))?;
        }
        let _ = fs::remove_dir(&merged);
        Ok(())
    }

    fn exists(&self, id: &str) -> bool {
        layer_id::check(id, &[LINK_DIR]).is_ok() && self.dir(id).is_dir()
    }

    fn status(&self) -> Vec<(String, String)> {
        vec![
            ("Backing Filesystem".into(), self.backing_fs.into()),
            ("Supports d_type".into(), "true".into()),
            ("Using metacopy".into(), self.options.metacopy.to_string()),
            (
                "Using redirect_dir".into(),
                (self.options.redirect_dir || self.options.metacopy).to_string(),
            ),
            ("Using volatile".into(), self.options.volatile.to_string()),
            ("Native Overlay Diff".into(), "true".into()),
            ("userxattr".into(), "false".into()),
            ("Reflink upper".into(), self.reflink.to_string()),
        ]
    }

    fn metadata(&self, id: &str) -> Result<BTreeMap<String, String>, DriverError> {
        let dir = self.existing_dir(id)?;
        let mut metadata = BTreeMap::new();
        metadata.insert("WorkDir".into(), dir.join(WORK_DIR).display().to_string());
        metadata.insert(
            "MergedDir".into(),
            dir.join(MERGED_DIR).display().to_string(),
        );
        metadata.insert("UpperDir".into(), dir.join(DIFF_DIR).display().to_string());
        let lowers = self.lower_dirs(id)?;
        if !lowers.is_empty() {
            let joined: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
            metadata.insert("LowerDir".into(), joined.join(":"));
        }
        Ok(metadata)
    }

    fn cleanup(&self) -> Result<(), DriverError> {
        let info = fs::read_to_string("/proc/self/mountinfo")
            .map_err(DriverError::io("read", "/proc/self/mountinfo"))?;
        let home = self
            .home
            .canonicalize()
            .unwrap_or_else(|_| self.home.clone());
        let mut under_home: Vec<PathBuf> = info
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .map(|p| PathBuf::from(mount::unescape_mountinfo(p)))
            .filter(|p| p.starts_with(&home) && p != &home)
            .collect();
        under_home.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for path in under_home {
            mount::unmount_detach(&path)?;
        }
        Ok(())
    }

    fn diff(&self, id: &str, parent: Option<&str>, out: &mut dyn Write) -> Result<(), DriverError> {
        if !self.is_parent(id, parent) {
            let changes = self.naive_changes(id, parent)?;
            let root = self.get(id)?;
            let result = archive::export_changes(&root, &changes, out);
            self.put(id)?;
            result?;
            return Ok(());
        }
        archive::export_dir(
            &self.diff_dir(self.existing_dir(id).map(|_| id)?),
            WhiteoutFormat::Overlay,
            out,
        )?;
        Ok(())
    }

    fn changes(&self, id: &str, parent: Option<&str>) -> Result<Vec<Change>, DriverError> {
        if !self.is_parent(id, parent) {
            return self.naive_changes(id, parent);
        }
        let lowers = self.lower_dirs(id)?;
        Ok(archive::changes_overlay(&self.diff_dir(id), &lowers)?)
    }

    fn apply_diff(
        &self,
        id: &str,
        parent: Option<&str>,
        diff: &mut dyn Read,
        tar_split: Option<&mut (dyn Write + Send)>,
    ) -> Result<AppliedLayer, DriverError> {
        self.existing_dir(id)?;
        if !self.is_parent(id, parent) {
            return Err(DriverError::not_parent(id, parent));
        }
        super::apply_to_diff_dir(&self.diff_dir(id), WhiteoutFormat::Overlay, diff, tar_split)
    }

    fn diff_size(&self, id: &str, parent: Option<&str>) -> Result<u64, DriverError> {
        if !self.is_parent(id, parent) {
            let changes = self.naive_changes(id, parent)?;
            let root = self.get(id)?;
            let size = super::changes_size(&root, &changes);
            self.put(id)?;
            return size;
        }
        let dir = self.diff_dir(self.existing_dir(id).map(|_| id)?);
        fsutil::directory_size(&dir).map_err(DriverError::io("size", &dir))
    }

    fn diff_files(&self, id: &str) -> Option<PathBuf> {
        self.exists(id).then(|| self.diff_dir(id))
    }

    fn sweep_incomplete(&self) -> Result<usize, DriverError> {
        self.sweep()
    }
}

/// Mounts overlay with `data` holding paths relative to `dir`, from a
/// thread whose working directory is `dir` (its own fs context, so the
/// rest of the process keeps its cwd): moby's mountFrom.
fn mount_from(dir: &Path, target: &Path, data: &str) -> Result<(), DriverError> {
    let dir = dir.to_path_buf();
    let target = target.to_path_buf();
    let data = data.to_string();
    std::thread::spawn(move || -> Result<(), DriverError> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)
            .map_err(|e| DriverError::io("unshare(CLONE_FS)", &dir)(e.into()))?;
        nix::unistd::chdir(&dir).map_err(|e| DriverError::io("chdir", &dir)(e.into()))?;
        mount::mount(
            "overlay",
            &target,
            "overlay",
            mount::MountFlags::empty(),
            Some(&data),
        )?;
        Ok(())
    })
    .join()
    .unwrap_or_else(|_| {
        Err(DriverError::Io {
            op: "mount thread panicked",
            path: PathBuf::from("overlay"),
            source: std::io::Error::other("panic"),
        })
    })
}

fn kernel_has_overlay() -> bool {
    fs::read_to_string("/proc/filesystems")
        .map(|f| {
            f.lines()
                .any(|l| l.split_whitespace().last() == Some("overlay"))
        })
        .unwrap_or(false)
}

/// Resolves `.` and `..` lexically (the link targets are `../<id>/diff`).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}
