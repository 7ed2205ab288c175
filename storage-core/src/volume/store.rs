//! The volume store: moby's local driver (`volume/local`) and volume
//! service (`volume/service`) in one, persisted so that every CLI process
//! sees the same state.
//!
//! Crash safety: a volume is built in `<root>/volumes/.tmp-<name>-*`
//! (`_data`, `opts.json`, the loop image), its metadata entry is written,
//! and only then is the directory renamed to `<name>`: a volume is visible
//! completely or not at all. Removal renames `<name>` to `.rm-<name>-*`
//! before deleting. Leftovers of either, and metadata entries without a
//! directory, are cleaned by the next command that takes the lock.
//! References whose container has no `config.v2.json` any more, and active
//! mounts whose container no longer records its volume mounts, are
//! dropped at the same time (the CLI registers both under this lock, so a
//! container being created is never mistaken for a stale one).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;

use crate::fsutil;
use crate::sys::mount::{self, MountFlags};

use super::loopfs;
use super::metadata::{Metadata, VolumeMetadata};
use super::options::{self, Backing, OptsConfig};
use super::{ANONYMOUS_LABEL, DRIVER, VolumeError, io_err};

/// The data directory inside a volume (moby's `volumeDataPathName`).
pub const DATA_DIR: &str = "_data";
/// The options file inside a volume (moby's `volumeOptsFile`).
pub const OPTS_FILE: &str = "opts.json";
/// layerscope's replacement for `metadata.db`.
pub const METADATA_FILE: &str = "metadata.json";
const LOCK_FILE: &str = ".lock";
/// A container's config, whose presence keeps its volume references alive.
pub const CONTAINER_CONFIG: &str = "config.v2.json";
/// The record of a container's mounted volumes (`<root>/containers/<id>/`),
/// whose presence keeps its active mounts alive.
pub const CONTAINER_MOUNTS: &str = "volume-mounts.json";

/// A volume as `docker volume inspect` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Volume {
    #[serde(rename = "CreatedAt")]
    pub created_at: String,
    #[serde(rename = "Driver")]
    pub driver: String,
    #[serde(rename = "Labels")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "Mountpoint")]
    pub mountpoint: PathBuf,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Options")]
    pub options: Option<BTreeMap<String, String>>,
    #[serde(rename = "Scope")]
    pub scope: String,
}

impl Volume {
    pub fn is_anonymous(&self) -> bool {
        self.labels
            .as_ref()
            .is_some_and(|l| l.contains_key(ANONYMOUS_LABEL))
    }

    fn has_label(&self, filter: &str) -> bool {
        let labels = self.labels.clone().unwrap_or_default();
        match filter.split_once('=') {
            Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
            None => labels.contains_key(filter),
        }
    }
}

/// `volume ls --filter`: every given condition must hold.
#[derive(Debug, Clone, Default)]
pub struct VolumeFilter {
    pub dangling: Option<bool>,
    /// Substrings of the name (any of them).
    pub names: Vec<String>,
    /// `key` or `key=value` (all of them).
    pub labels: Vec<String>,
    pub drivers: Vec<String>,
}

impl VolumeFilter {
    /// Parses `dangling=true`, `name=x`, `label=k[=v]`, `driver=local`.
    pub fn parse(filters: &[String]) -> Result<Self, VolumeError> {
        let mut out = Self::default();
        for f in filters {
            let (key, value) = f.split_once('=').unwrap_or((f, ""));
            match key {
                "dangling" => {
                    out.dangling = Some(match value {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => {
                            return Err(VolumeError::Spec(format!(
                                "invalid filter 'dangling={value}'"
                            )));
                        }
                    })
                }
                "name" => out.names.push(value.to_string()),
                "label" => out.labels.push(value.to_string()),
                "driver" => out.drivers.push(value.to_string()),
                _ => return Err(VolumeError::Spec(format!("invalid filter '{key}'"))),
            }
        }
        Ok(out)
    }
}

/// What `volume prune` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    #[serde(rename = "VolumesDeleted")]
    pub volumes_deleted: Vec<String>,
    #[serde(rename = "SpaceReclaimed")]
    pub space_reclaimed: u64,
}

pub struct VolumeStore {
    root: PathBuf,
    dir: PathBuf,
}

impl VolumeStore {
    /// The volumes of data root `root` (`<root>/volumes`, created 0701).
    pub fn open(root: &Path) -> Result<Self, VolumeError> {
        let dir = root.join("volumes");
        if !dir.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o701)
                .create(&dir)
                .map_err(io_err("create", &dir))?;
        }
        Ok(Self {
            root: root.to_path_buf(),
            dir,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the store's exclusive lock (blocking), repairs what an
    /// interrupted command left, and returns the locked view.
    pub fn lock(&self) -> Result<LockedVolumes<'_>, VolumeError> {
        let path = self.dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("open lock", &path))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| io_err("flock", &path)(errno.into()))?;
        let meta = Metadata::load(&self.dir.join(METADATA_FILE))?;
        let mut locked = LockedVolumes {
            store: self,
            _lock: lock,
            meta,
        };
        locked.repair()?;
        Ok(locked)
    }

    /// Creates a volume (`name` `None`: anonymous, 64-hex name) or returns
    /// the existing one of that name.
    pub fn create(
        &self,
        name: Option<&str>,
        labels: BTreeMap<String, String>,
        options: BTreeMap<String, String>,
    ) -> Result<Volume, VolumeError> {
        self.lock()?.create(name, labels, options)
    }

    pub fn get(&self, name: &str) -> Result<Volume, VolumeError> {
        let meta = Metadata::load(&self.dir.join(METADATA_FILE))?;
        self.volume(&meta, name)
    }

    /// Volumes matching `filter`, sorted by name.
    pub fn list(&self, filter: &VolumeFilter) -> Result<Vec<Volume>, VolumeError> {
        let locked = self.lock()?;
        let mut out = Vec::new();
        for volume in locked.all()? {
            if let Some(dangling) = filter.dangling
                && locked.meta.refs(&volume.name).is_empty() != dangling
            {
                continue;
            }
            if !filter.names.is_empty() && !filter.names.iter().any(|n| volume.name.contains(n)) {
                continue;
            }
            if !filter.labels.iter().all(|l| volume.has_label(l)) {
                continue;
            }
            if !filter.drivers.is_empty() && !filter.drivers.iter().any(|d| d == DRIVER) {
                continue;
            }
            out.push(volume);
        }
        Ok(out)
    }

    /// Removes a volume no container uses.
    pub fn remove(&self, name: &str) -> Result<(), VolumeError> {
        self.lock()?.remove(name)
    }

    /// `volume prune`: unused anonymous volumes, or with `all` every unused
    /// volume, that also carry every label of `labels`. Like Docker, volumes
    /// with driver options (tmpfs, binds, loop images) are never pruned.
    pub fn prune(&self, all: bool, labels: &[String]) -> Result<PruneReport, VolumeError> {
        let mut locked = self.lock()?;
        let mut report = PruneReport::default();
        for volume in locked.all()? {
            if !locked.meta.refs(&volume.name).is_empty()
                || volume.options.is_some()
                || (!all && !volume.is_anonymous())
                || !labels.iter().all(|l| volume.has_label(l))
            {
                continue;
            }
            let size = fsutil::directory_size(&volume.mountpoint).unwrap_or(0);
            locked.remove(&volume.name)?;
            report.space_reclaimed += size;
            report.volumes_deleted.push(volume.name);
        }
        Ok(report)
    }

    fn volume_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn is_volume_dir(&self, name: &str) -> bool {
        let dir = self.volume_dir(name);
        !name.starts_with('.')
            && super::name::validate(name).is_ok()
            && (dir.join(DATA_DIR).exists() || dir.join(OPTS_FILE).exists())
    }

    fn opts(&self, name: &str) -> Result<Option<OptsConfig>, VolumeError> {
        let path = self.volume_dir(name).join(OPTS_FILE);
        match fs::read(&path) {
            Ok(bytes) => {
                let opts: OptsConfig =
                    serde_json::from_slice(&bytes).map_err(|e| VolumeError::Corrupt {
                        path: path.clone(),
                        what: e.to_string(),
                    })?;
                Ok((opts != OptsConfig::default()).then_some(opts))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }

    fn volume(&self, meta: &Metadata, name: &str) -> Result<Volume, VolumeError> {
        if !self.is_volume_dir(name) {
            return Err(VolumeError::NotFound {
                name: name.to_string(),
            });
        }
        let dir = self.volume_dir(name);
        let stat = fs::metadata(&dir).map_err(io_err("stat", &dir))?;
        let entry = meta.volumes.get(name).cloned().unwrap_or_default();
        let mut options = entry.options;
        if options.is_empty()
            && let Some(opts) = self.opts(name)?
        {
            // No metadata entry (written by Docker itself, say): opts.json says it.
            for (k, v) in [
                ("type", opts.mount_type),
                ("o", opts.mount_opts),
                ("device", opts.mount_device),
            ] {
                if !v.is_empty() {
                    options.insert(k.to_string(), v);
                }
            }
        }
        Ok(Volume {
            created_at: crate::image::rfc3339::format_utc(stat.ctime(), 0),
            driver: DRIVER.to_string(),
            labels: (!entry.labels.is_empty()).then_some(entry.labels),
            mountpoint: dir.join(DATA_DIR),
            name: name.to_string(),
            options: (!options.is_empty()).then_some(options),
            scope: "local".to_string(),
        })
    }
}

/// The store under its lock: every change to volumes, references and
/// active mounts goes through here.
pub struct LockedVolumes<'a> {
    store: &'a VolumeStore,
    _lock: Flock<File>,
    meta: Metadata,
}

impl LockedVolumes<'_> {
    fn save(&self) -> Result<(), VolumeError> {
        self.meta.save(&self.store.dir.join(METADATA_FILE))
    }

    fn container_file(&self, id: &str, file: &str) -> PathBuf {
        self.store.root.join("containers").join(id).join(file)
    }

    fn repair(&mut self) -> Result<(), VolumeError> {
        let mut changed = false;
        // Leftovers of interrupted creates and removes.
        let entries = fs::read_dir(&self.store.dir).map_err(io_err("read", &self.store.dir))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if (name.starts_with(".tmp-") || name.starts_with(".rm-")) && entry.path().is_dir() {
                let _ = remove_volume_dir(&entry.path());
            }
        }
        let names: Vec<String> = self.meta.volumes.keys().cloned().collect();
        for name in names {
            if !self.store.is_volume_dir(&name) {
                self.meta.forget(&name);
                changed = true;
            }
        }
        for (_, ids) in self.meta.references.iter_mut() {
            let before = ids.len();
            ids.retain(|id| {
                self.store
                    .root
                    .join("containers")
                    .join(id)
                    .join(CONTAINER_CONFIG)
                    .exists()
            });
            changed |= ids.len() != before;
        }
        self.meta.references.retain(|_, ids| !ids.is_empty());
        let stale: Vec<(String, String)> = self
            .meta
            .active
            .iter()
            .flat_map(|(name, ids)| ids.iter().map(move |id| (name.clone(), id.clone())))
            .filter(|(_, id)| !self.container_file(id, CONTAINER_MOUNTS).exists())
            .collect();
        for (name, id) in stale {
            self.release(&name, &id)?;
            changed = true;
        }
        if changed {
            self.save()?;
        }
        Ok(())
    }

    /// Every volume, sorted by name.
    pub fn all(&self) -> Result<Vec<Volume>, VolumeError> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.store.dir).map_err(io_err("read", &self.store.dir))? {
            let entry = entry.map_err(io_err("read", &self.store.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_dir() && self.store.is_volume_dir(&name) {
                names.push(name);
            }
        }
        names.sort();
        names
            .iter()
            .map(|n| self.store.volume(&self.meta, n))
            .collect()
    }

    pub fn get(&self, name: &str) -> Result<Volume, VolumeError> {
        self.store.volume(&self.meta, name)
    }

    /// The containers referencing `name`.
    pub fn refs(&self, name: &str) -> Vec<String> {
        self.meta.refs(name)
    }

    /// Creates a volume or returns the existing one (Docker's semantics:
    /// `docker volume create x` twice is fine).
    pub fn create(
        &mut self,
        name: Option<&str>,
        mut labels: BTreeMap<String, String>,
        options: BTreeMap<String, String>,
    ) -> Result<Volume, VolumeError> {
        let name = match name {
            Some(name) => {
                super::name::validate(name)?;
                name.to_string()
            }
            None => {
                labels.insert(ANONYMOUS_LABEL.to_string(), String::new());
                fsutil::random_hex_id()
            }
        };
        let opts = options::parse(&options).map_err(|what| VolumeError::Invalid {
            op: "create",
            name: name.clone(),
            what,
        })?;
        if self.store.is_volume_dir(&name) {
            return self.get(&name);
        }
        let tmp = self
            .store
            .dir
            .join(format!(".tmp-{name}-{}", fsutil::random_base32(8)));
        let built = (|| {
            fs::DirBuilder::new()
                .mode(0o701)
                .create(&tmp)
                .map_err(io_err("create", &tmp))?;
            let data = tmp.join(DATA_DIR);
            fs::DirBuilder::new()
                .mode(0o755)
                .create(&data)
                .map_err(io_err("create", &data))?;
            if let Some(opts) = &opts {
                if let Backing::Loop { fstype, size, .. } = opts.backing() {
                    loopfs::make_image(&name, &tmp.join(loopfs::IMAGE_FILE), &fstype, size)?;
                }
                let path = tmp.join(OPTS_FILE);
                let json = serde_json::to_vec(opts).expect("opts serialize");
                fsutil::write_atomic(&path, &json, 0o600).map_err(io_err("write", &path))?;
            }
            Ok::<(), VolumeError>(())
        })();
        if let Err(e) = built {
            let _ = fsutil::remove_all(&tmp);
            return Err(e);
        }
        self.meta.volumes.insert(
            name.clone(),
            VolumeMetadata {
                name: name.clone(),
                driver: DRIVER.to_string(),
                labels,
                options,
            },
        );
        let published = self.save().and_then(|()| {
            let dir = self.store.volume_dir(&name);
            fs::rename(&tmp, &dir).map_err(io_err("rename", &dir))
        });
        if let Err(e) = published {
            let _ = fsutil::remove_all(&tmp);
            self.meta.forget(&name);
            let _ = self.save();
            return Err(e);
        }
        self.get(&name)
    }

    /// Removes `name`: refused while a container references it.
    pub fn remove(&mut self, name: &str) -> Result<(), VolumeError> {
        self.get(name)?;
        let refs = self.meta.refs(name);
        if !refs.is_empty() {
            return Err(VolumeError::InUse {
                name: name.to_string(),
                refs,
            });
        }
        if self.meta.active.get(name).is_some_and(|a| !a.is_empty()) {
            return Err(VolumeError::Invalid {
                op: "remove",
                name: name.to_string(),
                what: "volume has active mounts".into(),
            });
        }
        let dir = self.store.volume_dir(name);
        let data = dir.join(DATA_DIR);
        if mount::is_mount_point(&data) {
            unmount(name, &data)?;
        }
        let doomed = self
            .store
            .dir
            .join(format!(".rm-{name}-{}", fsutil::random_base32(8)));
        fs::rename(&dir, &doomed).map_err(io_err("rename", &dir))?;
        self.meta.forget(name);
        self.save()?;
        remove_volume_dir(&doomed)
    }

    pub fn add_ref(&mut self, name: &str, container: &str) -> Result<(), VolumeError> {
        self.get(name)?;
        self.meta.add_ref(name, container);
        self.save()
    }

    pub fn remove_ref(&mut self, name: &str, container: &str) -> Result<(), VolumeError> {
        self.meta.remove_ref(name, container);
        self.save()
    }

    /// Mounts `_data` if the volume needs it and this is its first active
    /// user, records `container` as a user, and returns `_data`.
    pub fn acquire(&mut self, name: &str, container: &str) -> Result<PathBuf, VolumeError> {
        let volume = self.get(name)?;
        let data = volume.mountpoint.clone();
        if let Some(opts) = self.store.opts(name)?
            && !mount::is_mount_point(&data)
        {
            mount_backing(name, &self.store.volume_dir(name), &data, &opts)?;
        }
        self.meta
            .active
            .entry(name.to_string())
            .or_default()
            .insert(container.to_string());
        if let Err(e) = self.save() {
            let _ = self.release(name, container);
            return Err(e);
        }
        Ok(data)
    }

    /// Drops `container`'s use; the last one unmounts `_data`.
    pub fn release(&mut self, name: &str, container: &str) -> Result<(), VolumeError> {
        if let Some(ids) = self.meta.active.get_mut(name) {
            ids.remove(container);
            if ids.is_empty() {
                self.meta.active.remove(name);
            }
        }
        let last = !self.meta.active.contains_key(name);
        self.save()?;
        let data = self.store.volume_dir(name).join(DATA_DIR);
        if last && self.store.opts(name).ok().flatten().is_some() && mount::is_mount_point(&data) {
            unmount(name, &data)?;
        }
        Ok(())
    }

    /// How many containers have `name` mounted.
    pub fn active_count(&self, name: &str) -> usize {
        self.meta.active.get(name).map_or(0, |a| a.len())
    }
}

fn mount_backing(
    name: &str,
    dir: &Path,
    data: &Path,
    opts: &OptsConfig,
) -> Result<(), VolumeError> {
    let fail = |source| VolumeError::Mount {
        name: name.to_string(),
        source,
    };
    match opts.backing() {
        Backing::Plain => Ok(()),
        Backing::Tmpfs { data: o } => {
            let (flags, o) = options::split_mount_options(&o);
            let device = if opts.mount_device.is_empty() {
                "tmpfs"
            } else {
                &opts.mount_device
            };
            mount::mount(device, data, "tmpfs", flags, Some(&o)).map_err(fail)
        }
        Backing::Bind { device, read_only } => {
            mount::bind(Path::new(&device), data, read_only).map_err(fail)
        }
        Backing::Loop {
            fstype, data: o, ..
        } => loopfs::mount_image(name, &dir.join(loopfs::IMAGE_FILE), data, &fstype, &o),
        Backing::Device {
            fstype,
            device,
            data: o,
        } => {
            let (flags, _) = options::split_mount_options(&opts.mount_opts);
            mount::mount(
                &device,
                data,
                &fstype,
                flags | MountFlags::empty(),
                (!o.is_empty()).then_some(o.as_str()),
            )
            .map_err(fail)
        }
    }
}

fn unmount(name: &str, data: &Path) -> Result<(), VolumeError> {
    mount::unmount(data)
        .or_else(|_| mount::unmount_detach(data))
        .map_err(|source| VolumeError::Mount {
            name: name.to_string(),
            source,
        })
}

/// Deletes a volume directory, but never through a mount: `_data` is
/// unmounted first, and left alone if it stays mounted.
fn remove_volume_dir(dir: &Path) -> Result<(), VolumeError> {
    let data = dir.join(DATA_DIR);
    if mount::is_mount_point(&data) {
        let _ = mount::unmount(&data).or_else(|_| mount::unmount_detach(&data));
        if mount::is_mount_point(&data) {
            return Err(VolumeError::Corrupt {
                path: data,
                what: "still mounted, not removed".into(),
            });
        }
    }
    fsutil::remove_all(dir).map_err(io_err("remove", dir))
}
