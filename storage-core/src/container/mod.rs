//! Containers as far as storage goes: an init layer and a rw layer on top
//! of an image's top layer, recorded in Docker's layout
//! (`<root>/containers/<id>/config.v2.json`, `layerdb/mounts/<id>/`), with
//! mount/unmount, `docker diff`-style changes, commit into a new layer, and
//! `docker ps -s` sizes. Volumes and bind mounts (`MountPoints`) are in
//! [`mounts`]; names are reserved in [`names`].

pub mod init_layer;
pub mod mounts;
pub mod names;

pub use mounts::CreateOptions;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::archive::Change;
use crate::fsutil;
use crate::layer::{LayerError, LayerInfo, LayerStore, RwLayer};
use crate::volume::{ApiMountPoint, MountPoint, VolumeError, VolumeStore};

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("container {name}: not found")]
    NotFound { name: String },

    #[error("container name {name:?}: already in use by {id}")]
    NameInUse { name: String, id: String },

    #[error("container name {name:?}: invalid (want [a-zA-Z0-9][a-zA-Z0-9_.-]+)")]
    InvalidName { name: String },

    #[error("{}: {op}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: {what}", path.display())]
    Corrupt { path: PathBuf, what: String },

    #[error(transparent)]
    Layer(#[from] LayerError),

    #[error(transparent)]
    Volume(#[from] VolumeError),
}

fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> ContainerError {
    let path = path.into();
    move |source| ContainerError::Io { op, path, source }
}

/// What `config.v2.json` records (the fields of Docker's that storage
/// needs, under Docker's names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    #[serde(rename = "ID")]
    pub id: String,
    /// With Docker's leading slash, e.g. `/web`.
    #[serde(rename = "Name")]
    pub name: String,
    /// The image reference or top chain-id it was created from.
    #[serde(rename = "Image")]
    pub image: String,
    #[serde(rename = "Driver")]
    pub driver: String,
    #[serde(rename = "Created")]
    pub created: String,
    /// Volumes, binds and tmpfs mounts by destination, as Docker's.
    #[serde(rename = "MountPoints", default)]
    pub mount_points: BTreeMap<String, MountPoint>,
}

impl Container {
    /// The name without Docker's leading slash.
    pub fn short_name(&self) -> &str {
        self.name.trim_start_matches('/')
    }

    /// `docker inspect`'s `Mounts`, sorted by destination.
    pub fn mounts(&self) -> Vec<ApiMountPoint> {
        self.mount_points.values().map(MountPoint::to_api).collect()
    }
}

/// `docker ps -s`: bytes in the rw layer, and rw plus every image layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ContainerSize {
    pub size_rw: u64,
    pub size_root_fs: u64,
}

pub struct ContainerStore<'a> {
    dir: PathBuf,
    layers: &'a LayerStore,
    volumes: VolumeStore,
    /// Built on first use, so a store that is only listed (the sidecar's
    /// read-only scans) is never written to.
    names: std::sync::OnceLock<names::NameIndex>,
    root: PathBuf,
}

impl<'a> ContainerStore<'a> {
    /// The containers under data root `root` whose layers live in `layers`.
    pub fn open(root: &Path, layers: &'a LayerStore) -> Result<Self, ContainerError> {
        let dir = root.join("containers");
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let volumes = VolumeStore::open(root)?;
        Ok(Self {
            dir,
            layers,
            volumes,
            names: std::sync::OnceLock::new(),
            root: root.to_path_buf(),
        })
    }

    pub fn layers(&self) -> &LayerStore {
        self.layers
    }

    /// The volumes of the same data root.
    pub fn volumes(&self) -> &VolumeStore {
        &self.volumes
    }

    /// `docker inspect`'s `Mounts`: [`Container::mounts`] with the path of
    /// every volume filled in, as Docker's `MountPoint.Path()` does.
    pub fn mounts(&self, container: &Container) -> Vec<ApiMountPoint> {
        let mut mounts = container.mounts();
        for m in &mut mounts {
            if m.source.is_empty() && m.kind == "volume" {
                m.source = self
                    .volumes
                    .dir()
                    .join(&m.name)
                    .join(crate::volume::store::DATA_DIR)
                    .display()
                    .to_string();
            }
        }
        mounts
    }

    /// Creates container `name` on the layer `top` (a chain-id; `None` for
    /// an empty root): its init layer, its rw layer and its config.
    pub fn create(
        &self,
        name: &str,
        image: &str,
        top: Option<&str>,
    ) -> Result<Container, ContainerError> {
        self.create_with(name, image, top, &CreateOptions::default())
    }

    /// [`create`](Self::create) with volumes, binds, tmpfs mounts and
    /// `--volumes-from`. Every spec is checked before anything is made;
    /// destinations are checked inside the image's root; volumes are
    /// created and referenced under the volume store's lock together with
    /// the config write, and rolled back on any failure.
    pub fn create_with(
        &self,
        name: &str,
        image: &str,
        top: Option<&str>,
        options: &CreateOptions,
    ) -> Result<Container, ContainerError> {
        check_name(name)?;
        // By name only: a new name may well be a prefix of some id.
        if let Some(owner) = self.names()?.owner(name).filter(|id| self.is_alive(id)) {
            return Err(ContainerError::NameInUse {
                name: name.to_string(),
                id: owner,
            });
        }
        let mut points = mounts::plan(self, options)?;
        let id = fsutil::random_hex_id();
        self.layers.create_rw(&id, top, Some(&init_layer::setup))?;
        // Reserved once the rw layer exists, so a reservation never looks
        // stale while its create runs; a lost race undoes the layer.
        let reserved = self
            .names()?
            .reserve(name, &id, |owner| self.is_alive(owner))
            .map_err(io_err("reserve name", &self.dir));
        match reserved {
            Ok(names::Reserve::Done) => {}
            Ok(names::Reserve::Taken(owner)) => {
                let _ = self.layers.remove_rw(&id);
                return Err(ContainerError::NameInUse {
                    name: name.to_string(),
                    id: owner,
                });
            }
            Err(e) => {
                let _ = self.layers.remove_rw(&id);
                return Err(e);
            }
        }
        let mut container = Container {
            id: id.clone(),
            name: format!("/{name}"),
            image: image.to_string(),
            driver: self.layers.driver().name().to_string(),
            created: now_rfc3339(),
            mount_points: BTreeMap::new(),
        };
        let written = (|| {
            if !points.is_empty() {
                let root = self.mount_rootfs(&container)?;
                let checked = mounts::check_destinations(&root, &points);
                let _ = self.unmount_rootfs(&container);
                checked?;
            }
            let mut locked = self.volumes.lock()?;
            let created = mounts::register(&mut locked, &id, &mut points)?;
            container.mount_points = points
                .iter()
                .map(|m| (m.destination.clone(), m.clone()))
                .collect();
            let config = (|| {
                let dir = self.dir.join(&id);
                fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
                let json = serde_json::to_vec(&container).expect("container config serializes");
                let path = dir.join("config.v2.json");
                fsutil::write_atomic(&path, &json, 0o600).map_err(io_err("write", &path))
            })();
            if config.is_err() {
                mounts::unregister(&mut locked, &id, &points, false);
                for name in created {
                    let _ = locked.remove(&name);
                }
            }
            config
        })();
        if let Err(e) = written {
            let _ = self.layers.remove_rw(&id);
            let _ = fsutil::remove_all(&self.dir.join(&id));
            if let Ok(names) = self.names() {
                let _ = names.release(name, &id);
            }
            return Err(e);
        }
        Ok(container)
    }

    /// The name index, built from the configs the first time a store
    /// without one is used.
    fn names(&self) -> Result<&names::NameIndex, ContainerError> {
        if let Some(index) = self.names.get() {
            return Ok(index);
        }
        let index = names::NameIndex::open(&self.root, || {
            let configs = list_configs(&self.dir).map_err(std::io::Error::other)?;
            Ok(configs
                .into_iter()
                .map(|c| (c.short_name().to_owned(), c.id))
                .collect())
        })
        .map_err(io_err("index container names in", &self.root))?;
        Ok(self.names.get_or_init(|| index))
    }

    /// Whether container `id` exists: its config or its rw layer.
    fn is_alive(&self, id: &str) -> bool {
        self.dir.join(id).join("config.v2.json").exists() || self.layers.rw_layer(id).is_ok()
    }

    fn load(&self, id: &str) -> Result<Option<Container>, ContainerError> {
        let path = self.dir.join(id).join("config.v2.json");
        match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| ContainerError::Corrupt {
                        path,
                        what: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }

    /// A container by name, full id or unique id prefix: a name or a full
    /// id is one file read; only a prefix lists the ids.
    pub fn find(&self, name_or_id: &str) -> Result<Container, ContainerError> {
        let wanted = name_or_id.trim_start_matches('/');
        let not_found = || ContainerError::NotFound {
            name: name_or_id.to_string(),
        };
        if wanted.is_empty() || wanted.contains('/') || wanted.starts_with('.') {
            return Err(not_found());
        }
        if let Some(container) = self.load(wanted)? {
            return Ok(container);
        }
        if let Some(id) = self.names()?.owner(wanted) {
            if let Some(container) = self.load(&id)? {
                return Ok(container);
            }
        }
        let mut by_prefix = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err("read", &self.dir))? {
            let entry = entry.map_err(io_err("read", &self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(wanted) {
                by_prefix.push(name);
            }
        }
        match by_prefix.as_slice() {
            [one] => self.load(one)?.ok_or_else(not_found),
            _ => Err(not_found()),
        }
    }

    /// Every container with a config, sorted by name.
    pub fn list(&self) -> Result<Vec<Container>, ContainerError> {
        list_configs(&self.dir)
    }

    fn rw(&self, container: &Container) -> Result<RwLayer, ContainerError> {
        Ok(self.layers.rw_layer(&container.id)?)
    }

    /// Mounts the container's root filesystem, then its volumes, binds and
    /// tmpfs mounts inside it, and returns the root's path.
    pub fn mount(&self, container: &Container) -> Result<PathBuf, ContainerError> {
        let root = self.mount_rootfs(container)?;
        if let Err(e) = mounts::mount_all(self, container, &root) {
            let _ = self.unmount_rootfs(container);
            return Err(e);
        }
        Ok(root)
    }

    /// Unmounts the container's mounts (children first), then its root.
    pub fn unmount(&self, container: &Container) -> Result<(), ContainerError> {
        mounts::unmount_all(self, container)?;
        self.unmount_rootfs(container)
    }

    fn mount_rootfs(&self, container: &Container) -> Result<PathBuf, ContainerError> {
        let rw = self.rw(container)?;
        Ok(self
            .layers
            .driver()
            .get(&rw.mount_id)
            .map_err(LayerError::from)?)
    }

    fn unmount_rootfs(&self, container: &Container) -> Result<(), ContainerError> {
        let rw = self.rw(container)?;
        self.layers
            .driver()
            .put(&rw.mount_id)
            .map_err(LayerError::from)?;
        Ok(())
    }

    /// What the container changed, as `docker diff` lists it.
    pub fn changes(&self, container: &Container) -> Result<Vec<Change>, ContainerError> {
        let rw = self.rw(container)?;
        let below = self.below(&rw)?;
        Ok(self
            .layers
            .driver()
            .changes(&rw.mount_id, below.as_deref())
            .map_err(LayerError::from)?)
    }

    /// The driver layer under the rw layer: the init layer, else the
    /// image's top layer.
    fn below(&self, rw: &RwLayer) -> Result<Option<String>, ContainerError> {
        if let Some(init) = &rw.init_id {
            return Ok(Some(init.clone()));
        }
        match &rw.parent {
            Some(parent) => Ok(Some(self.layers.get(parent)?.cache_id)),
            None => Ok(None),
        }
    }

    /// Writes the container's changes as an OCI layer tar.
    pub fn export_diff(
        &self,
        container: &Container,
        out: &mut dyn Write,
    ) -> Result<(), ContainerError> {
        let rw = self.rw(container)?;
        let below = self.below(&rw)?;
        self.layers
            .driver()
            .diff(&rw.mount_id, below.as_deref(), out)
            .map_err(LayerError::from)?;
        Ok(())
    }

    /// A new read-only layer holding the container's changes, on the
    /// container's image layer (`docker commit`). The diff streams through
    /// a pipe into the layer store: no temporary copy of the tar.
    pub fn commit(&self, container: &Container) -> Result<LayerInfo, ContainerError> {
        let rw = self.rw(container)?;
        let below = self.below(&rw)?;
        let (reader, mut writer) = std::io::pipe().map_err(io_err("pipe", &self.dir))?;
        let driver = self.layers.driver();
        let applied = std::thread::scope(|scope| {
            let producer = scope.spawn(move || {
                let result = driver.diff(&rw.mount_id, below.as_deref(), &mut writer);
                drop(writer);
                result
            });
            let applied = self.layers.apply(reader, rw.parent.as_deref());
            let produced = producer.join().expect("diff thread does not panic");
            produced.map_err(LayerError::from)?;
            applied
        })?;
        Ok(applied)
    }

    /// `docker ps -s`: the rw layer's bytes, and those plus the image's.
    pub fn size(&self, container: &Container) -> Result<ContainerSize, ContainerError> {
        let rw = self.rw(container)?;
        let below = self.below(&rw)?;
        let size_rw = self
            .layers
            .driver()
            .diff_size(&rw.mount_id, below.as_deref())
            .map_err(LayerError::from)?;
        let mut image = 0;
        let mut next = rw.parent.clone();
        while let Some(chain) = next {
            let layer = self.layers.get(&chain)?;
            image += layer.size;
            next = layer.parent;
        }
        Ok(ContainerSize {
            size_rw,
            size_root_fs: size_rw + image,
        })
    }

    /// Removes the container: unmounts, removes its layers and config,
    /// and drops its volume references (volumes stay).
    pub fn remove(&self, container: &Container) -> Result<(), ContainerError> {
        self.remove_with_volumes(container, false)
    }

    /// [`remove`](Self::remove); with `remove_volumes` (`rm -v`) also its
    /// anonymous volumes that no other container uses. Named volumes and
    /// bind sources are never touched.
    pub fn remove_with_volumes(
        &self,
        container: &Container,
        remove_volumes: bool,
    ) -> Result<(), ContainerError> {
        mounts::unmount_all(self, container)?;
        self.remove_layers_and_config(container)?;
        if !container.mount_points.is_empty() {
            let points: Vec<MountPoint> = container.mount_points.values().cloned().collect();
            let mut locked = self.volumes.lock()?;
            mounts::unregister(&mut locked, &container.id, &points, remove_volumes);
        }
        Ok(())
    }

    fn remove_layers_and_config(&self, container: &Container) -> Result<(), ContainerError> {
        let dir = self.dir.join(&container.id);
        let config = dir.join("config.v2.json");
        // The config goes first: a crash afterwards leaves layers that the
        // layer store still lists under mounts/, never a container without
        // its layers.
        if config.exists() {
            fs::remove_file(&config).map_err(io_err("remove", &config))?;
        }
        let name = container.short_name();
        self.names()?
            .release(name, &container.id)
            .map_err(io_err("release name", &self.dir))?;
        match self.layers.remove_rw(&container.id) {
            Ok(()) | Err(LayerError::MountNotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        fsutil::remove_all(&dir).map_err(io_err("remove", &dir))
    }
}

/// Every container config under `dir`, sorted by name.
fn list_configs(dir: &Path) -> Result<Vec<Container>, ContainerError> {
    let mut containers = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("read", dir))? {
        let entry = entry.map_err(io_err("read", dir))?;
        let path = entry.path().join("config.v2.json");
        let Ok(bytes) = fs::read(&path) else {
            continue;
        };
        let container: Container =
            serde_json::from_slice(&bytes).map_err(|e| ContainerError::Corrupt {
                path: path.clone(),
                what: e.to_string(),
            })?;
        containers.push(container);
    }
    containers.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(containers)
}

fn check_name(name: &str) -> Result<(), ContainerError> {
    let mut bytes = name.bytes();
    // Docker's validContainerNamePattern: two characters at least.
    let valid = name.len() >= 2
        && bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(ContainerError::InvalidName {
            name: name.to_string(),
        })
    }
}

/// The current time as RFC 3339 in UTC (Docker's `Created` format).
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        now.subsec_nanos()
    )
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_417), (2025, 11, 25));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn names_follow_dockers_rule() {
        assert!(check_name("web-1").is_ok());
        assert!(check_name("c").is_err(), "docker wants two characters");
        assert!(check_name("_x").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name("").is_err());
    }
}
