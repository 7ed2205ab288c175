//! A read-only view of a real Docker data root (`/var/lib/docker`), built
//! from its files alone: the storage driver in use, the images
//! (`image/<driver>/imagedb`, `repositories.json`), the layer store
//! (`image/<driver>/layerdb/sha256/<chain-id>/{diff,parent,cache-id,size,tar-split.json.gz}`)
//! and the containers (`containers/<id>/config.v2.json`,
//! `image/<driver>/layerdb/mounts/<id>/{mount-id,init-id,parent}`).
//!
//! Nothing here writes: every file is opened read-only (with `O_NOATIME`
//! where the kernel allows it), nothing is mounted, and a damaged entry is
//! reported in [`DockerRoot::problems`] instead of stopping the read.
//!
//! Sizes follow `docker ps -s` / `docker container inspect --size`, as
//! moby's `ImageService.GetContainerLayerSize` computes them:
//!
//! - `SizeRw` is the rw layer's `DiffSize(mount-id, <mount-id>-init)`; for
//!   overlay2 with native diff (and aufs) that is `directory.Size` of the rw
//!   layer's diff directory: every non-directory entry's size, hard links
//!   once. Docker falls back to a naive (mount-and-compare) diff only when
//!   the kernel writes redirect xattrs (`redirect_dir=on`) or runs in a user
//!   namespace without `userxattr`; the native rule is used here regardless.
//! - `SizeRootFs` is the cumulative size of the rw layer's parent, the
//!   image's top layer (`roLayer.Size()`: each layer's `size` file summed
//!   down the `parent` chain), plus `SizeRw` when that was measured. The
//!   init layer counts in neither. A container without a parent layer (an
//!   image `FROM scratch` with no layers) has a `SizeRootFs` of 0.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Drivers whose rw-layer size is `directory.Size` of one directory, and
/// where that directory lives relative to the data root.
fn rw_diff_dir(root: &Path, driver: &str, mount_id: &str) -> Option<PathBuf> {
    match driver {
        "overlay2" => Some(root.join("overlay2").join(mount_id).join("diff")),
        "aufs" => Some(root.join("aufs").join("diff").join(mount_id)),
        _ => None,
    }
}

/// A failure to read a Docker data root; one line naming the path and the
/// cause.
#[derive(Debug, thiserror::Error)]
pub enum DockerRootError {
    /// The directory has no `image/` subdirectory.
    #[error("docker root {}: no image/ directory (not a Docker data root?)", root.display())]
    NotADockerRoot { root: PathBuf },
    /// `image/` holds no driver directory.
    #[error("docker root {}: image/ names no storage driver (empty Docker data root?)", root.display())]
    NoDriver { root: PathBuf },
    /// `image/` names several drivers and none stands out as the one in use.
    #[error(
        "docker root {}: several storage drivers ({}); choose one with read_driver",
        root.display(),
        drivers.join(", ")
    )]
    AmbiguousDriver { root: PathBuf, drivers: Vec<String> },
    /// The asked-for driver has no `image/<driver>` directory.
    #[error("docker root {}: no image/{driver} directory (storage driver {driver} not used here)", root.display())]
    UnknownDriver { root: PathBuf, driver: String },
    /// A file or directory could not be read.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file was read but its contents are not what Docker writes there.
    #[error("parse {}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
}

impl DockerRootError {
    fn io(what: &'static str, path: &Path, source: io::Error) -> Self {
        Self::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }

    fn parse(path: &Path, reason: impl ToString) -> Self {
        Self::Parse {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }
}

type Result<T, E = DockerRootError> = std::result::Result<T, E>;

/// Everything read from one Docker data root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerRoot {
    /// The data root that was read.
    pub root: PathBuf,
    /// The storage driver whose image and layer stores were read.
    pub driver: String,
    /// Every driver directory under `image/` (more than one after a driver
    /// switch).
    pub drivers: Vec<String>,
    /// Images, sorted by id.
    pub images: Vec<Image>,
    /// Every layer of the layer store, sorted by chain-id.
    pub layers: Vec<Layer>,
    /// Containers, sorted by name.
    pub containers: Vec<Container>,
    /// What was damaged, missing or inconsistent, one line each; reading
    /// went on past each of them.
    pub problems: Vec<String>,
}

/// One image of `image/<driver>/imagedb/content/sha256/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// `sha256:<hex>`, the digest of the config JSON.
    pub id: String,
    /// `repo:tag` references from `repositories.json`.
    pub tags: Vec<String>,
    /// `repo@sha256:...` references from `repositories.json`.
    pub digests: Vec<String>,
    /// `created` from the config, as written there.
    pub created: Option<String>,
    /// The image's layers, bottom first.
    pub layers: Vec<ImageLayer>,
    /// Sum of the layers' sizes (`docker image inspect` `.Size`); `None`
    /// when a layer is missing from the layer store.
    pub size: Option<u64>,
}

/// A layer as one image uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageLayer {
    /// `rootfs.diff_ids[i]` of the image config.
    pub diff_id: String,
    /// The chain-id computed from the diff-ids up to this one.
    pub chain_id: String,
    /// The driver's directory id (`cache-id`); `None` when the layer store
    /// has no such layer.
    pub cache_id: Option<String>,
    /// The layer's own size (its `size` file).
    pub size: Option<u64>,
}

/// One entry of `image/<driver>/layerdb/sha256/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// The directory name, `sha256:<hex>`.
    pub chain_id: String,
    /// Contents of `diff`.
    pub diff_id: String,
    /// Contents of `parent` (a chain-id); `None` for a base layer.
    pub parent: Option<String>,
    /// Contents of `cache-id`: the driver directory holding the layer.
    pub cache_id: String,
    /// Contents of `size`: bytes in the layer as applied.
    pub size: u64,
    /// Whether `tar-split.json.gz` exists (needed to re-export the exact tar).
    pub has_tar_split: bool,
    /// Whether `chain_id` = sha256(parent + " " + diff_id) (or = diff_id for
    /// a base layer).
    pub chain_id_verified: bool,
}

/// One container of `containers/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// The full 64-hex id.
    pub id: String,
    /// `Name` without its leading `/`.
    pub name: String,
    /// `Image`: the image id (`sha256:...`).
    pub image: String,
    /// `Config.Image`: the reference the container was created from.
    pub image_ref: Option<String>,
    /// `State.Running` as last written by the daemon.
    pub running: bool,
    /// `Driver` of the container config.
    pub driver: Option<String>,
    /// `mounts/<id>/mount-id`: the rw layer's driver id.
    pub mount_id: Option<String>,
    /// `mounts/<id>/init-id`: the init layer's driver id.
    pub init_id: Option<String>,
    /// `mounts/<id>/parent`: the chain-id of the image's top layer.
    pub parent: Option<String>,
    /// The directory whose bytes are `size_rw`.
    pub rw_dir: Option<PathBuf>,
    /// Bytes in the rw layer (`SizeRw`); `None` when not measurable.
    pub size_rw: Option<u64>,
    /// `SizeRootFs`: the parent chain's size plus `size_rw` when known.
    pub size_root_fs: Option<u64>,
}

/// Docker's layer identities, shared with the layer store.
pub use crate::layer::chain::{chain_id, chain_ids};

/// The storage drivers named under `<root>/image/`, sorted.
pub fn drivers(root: &Path) -> Result<Vec<String>> {
    let image_dir = root.join("image");
    match fs::metadata(root) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(DockerRootError::io(
                "read docker root",
                root,
                io::Error::from(io::ErrorKind::NotADirectory),
            ));
        }
        Err(e) => return Err(DockerRootError::io("read docker root", root, e)),
    }
    let entries = match fs::read_dir(&image_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(DockerRootError::NotADockerRoot {
                root: root.to_path_buf(),
            });
        }
        Err(e) => return Err(DockerRootError::io("list", &image_dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| DockerRootError::io("list", &image_dir, e))?;
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Reads the data root at `root` with the storage driver in use: the only
/// one under `image/`, or the only one of several whose `<root>/<driver>`
/// directory exists.
pub fn read(root: &Path) -> Result<DockerRoot> {
    let all = drivers(root)?;
    let driver = match all.as_slice() {
        [] => {
            return Err(DockerRootError::NoDriver {
                root: root.to_path_buf(),
            });
        }
        [only] => only.clone(),
        several => {
            let with_data: Vec<&String> = several
                .iter()
                .filter(|d| root.join(d.as_str()).is_dir())
                .collect();
            match with_data.as_slice() {
                [only] => (*only).clone(),
                _ => {
                    return Err(DockerRootError::AmbiguousDriver {
                        root: root.to_path_buf(),
                        drivers: all,
                    });
                }
            }
        }
    };
    read_driver(root, &driver)
}

/// Reads the data root at `root` through the image and layer stores of
/// `driver` (`image/<driver>/`).
pub fn read_driver(root: &Path, driver: &str) -> Result<DockerRoot> {
    let all = drivers(root)?;
    if !all.iter().any(|d| d == driver) {
        return Err(DockerRootError::UnknownDriver {
            root: root.to_path_buf(),
            driver: driver.to_string(),
        });
    }
    let store = root.join("image").join(driver);
    let mut problems = Vec::new();

    let layers = read_layers(&store.join("layerdb").join("sha256"), &mut problems)?;
    let by_chain: HashMap<&str, &Layer> = layers.iter().map(|l| (l.chain_id.as_str(), l)).collect();
    for layer in &layers {
        if !layer.chain_id_verified {
            problems.push(format!(
                "layer {}: chain-id does not match sha256(parent + \" \" + diff-id) of parent {} and diff-id {}",
                layer.chain_id,
                layer.parent.as_deref().unwrap_or("<none>"),
                layer.diff_id
            ));
        }
        if let Some(parent) = &layer.parent {
            if !by_chain.contains_key(parent.as_str()) {
                problems.push(format!(
                    "layer {}: parent {parent} is not in the layer store",
                    layer.chain_id
                ));
            }
        }
    }

    let refs = read_repositories(&store.join("repositories.json"), &mut problems);
    let images = read_images(&store.join("imagedb"), &by_chain, &refs, &mut problems)?;
    let containers = read_containers(root, driver, &store, &by_chain, &mut problems)?;

    Ok(DockerRoot {
        root: root.to_path_buf(),
        driver: driver.to_string(),
        drivers: all,
        images,
        layers,
        containers,
        problems,
    })
}

impl DockerRoot {
    /// The layer with `chain_id`.
    pub fn layer(&self, chain_id: &str) -> Option<&Layer> {
        self.layers.iter().find(|l| l.chain_id == chain_id)
    }

    /// The image with `id` (`sha256:...`, or a unique hex prefix), or with
    /// the `repo:tag` reference `id`.
    pub fn image(&self, id: &str) -> Option<&Image> {
        let hex = id.strip_prefix("sha256:").unwrap_or(id);
        self.images
            .iter()
            .find(|i| i.id == id || i.tags.iter().any(|t| t == id))
            .or_else(|| {
                let mut matches = self
                    .images
                    .iter()
                    .filter(|i| !hex.is_empty() && i.id["sha256:".len()..].starts_with(hex));
                let first = matches.next();
                if matches.next().is_some() {
                    None
                } else {
                    first
                }
            })
    }

    /// The container with this id, unique id prefix or name.
    pub fn container(&self, id_or_name: &str) -> Option<&Container> {
        let name = id_or_name.strip_prefix('/').unwrap_or(id_or_name);
        self.containers
            .iter()
            .find(|c| c.id == id_or_name || c.name == name)
            .or_else(|| {
                let mut matches = self
                    .containers
                    .iter()
                    .filter(|c| !id_or_name.is_empty() && c.id.starts_with(id_or_name));
                let first = matches.next();
                if matches.next().is_some() {
                    None
                } else {
                    first
                }
            })
    }

    /// The cumulative size of the layer `chain_id` and all its parents, as
    /// moby's `roLayer.Size()`; `None` when one of them is missing.
    pub fn chain_size(&self, chain_id: &str) -> Option<u64> {
        let by_chain: HashMap<&str, &Layer> = self
            .layers
            .iter()
            .map(|l| (l.chain_id.as_str(), l))
            .collect();
        chain_size(&by_chain, chain_id)
    }
}

/// Sum of `size` down the parent chain from `chain_id`; guards against a
/// parent cycle in a damaged store.
fn chain_size(by_chain: &HashMap<&str, &Layer>, chain_id: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut current = Some(chain_id);
    let mut steps = 0usize;
    while let Some(id) = current {
        let layer = by_chain.get(id)?;
        total = total.saturating_add(layer.size);
        current = layer.parent.as_deref();
        steps += 1;
        if steps > by_chain.len() {
            return None;
        }
    }
    Some(total)
}

fn is_hex64(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Reads a whole file read-only, without touching its atime where allowed.
fn read_bytes(path: &Path) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(path)
    {
        // O_NOATIME needs file ownership or CAP_FOWNER.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            fs::OpenOptions::new().read(true).open(path)?
        }
        other => other?,
    };
    let mut buffer = Vec::new();
    file.read_to_end(&mut buffer)?;
    Ok(buffer)
}

/// The trimmed contents of a small text file.
fn read_text(path: &Path) -> Result<String> {
    let bytes = read_bytes(path).map_err(|e| DockerRootError::io("read", path, e))?;
    String::from_utf8(bytes)
        .map(|s| s.trim().to_string())
        .map_err(|_| DockerRootError::parse(path, "not UTF-8 text"))
}

/// As [`read_text`], with a missing file as `None`.
fn read_text_opt(path: &Path) -> Result<Option<String>> {
    match read_text(path) {
        Ok(text) => Ok(Some(text)),
        Err(DockerRootError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The names in `dir`, sorted; a missing directory is empty.
fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(DockerRootError::io("list", dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| DockerRootError::io("list", dir, e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

fn check_digest(value: &str, path: &Path) -> Result<()> {
    match value.strip_prefix("sha256:") {
        Some(hex) if is_hex64(hex) => Ok(()),
        _ => Err(DockerRootError::parse(
            path,
            format!("{value:?} is not a sha256:<64 hex> digest"),
        )),
    }
}

fn read_layers(dir: &Path, problems: &mut Vec<String>) -> Result<Vec<Layer>> {
    let mut layers = Vec::new();
    for name in list_dir(dir)? {
        if !is_hex64(&name) {
            // moby renames a layer to `<id>-<random>-removing` while deleting it.
            if !name.ends_with("-removing") {
                problems.push(format!(
                    "{}: not a layer directory (name is not 64 hex digits)",
                    dir.join(&name).display()
                ));
            }
            continue;
        }
        match read_layer(&dir.join(&name), &name) {
            Ok(layer) => layers.push(layer),
            Err(e) => problems.push(e.to_string()),
        }
    }
    Ok(layers)
}

fn read_layer(dir: &Path, hex: &str) -> Result<Layer> {
    let chain = format!("sha256:{hex}");
    let diff_path = dir.join("diff");
    let diff_id = read_text(&diff_path)?;
    check_digest(&diff_id, &diff_path)?;
    let parent_path = dir.join("parent");
    let parent = read_text_opt(&parent_path)?.filter(|p| !p.is_empty());
    if let Some(parent) = &parent {
        check_digest(parent, &parent_path)?;
    }
    let cache_id = read_text(&dir.join("cache-id"))?;
    let size_path = dir.join("size");
    let size_text = read_text(&size_path)?;
    let size = size_text
        .parse::<u64>()
        .map_err(|e| DockerRootError::parse(&size_path, format!("{size_text:?}: {e}")))?;
    let has_tar_split = dir.join("tar-split.json.gz").is_file();
    let chain_id_verified = chain_id(parent.as_deref(), &diff_id) == chain;
    Ok(Layer {
        chain_id: chain,
        diff_id,
        parent,
        cache_id,
        size,
        has_tar_split,
        chain_id_verified,
    })
}

#[derive(Deserialize)]
struct RepositoriesFile {
    #[serde(rename = "Repositories", default)]
    repositories: BTreeMap<String, BTreeMap<String, String>>,
}

/// `image id -> references` from repositories.json (missing file: none).
fn read_repositories(path: &Path, problems: &mut Vec<String>) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    let bytes = match read_bytes(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return out,
        Err(e) => {
            problems.push(DockerRootError::io("read", path, e).to_string());
            return out;
        }
    };
    match serde_json::from_slice::<RepositoriesFile>(&bytes) {
        Ok(file) => {
            for refs in file.repositories.into_values() {
                for (reference, id) in refs {
                    out.entry(id).or_default().push(reference);
                }
            }
        }
        Err(e) => problems.push(DockerRootError::parse(path, e).to_string()),
    }
    out
}

#[derive(Deserialize)]
struct ImageConfig {
    created: Option<String>,
    rootfs: Option<RootFs>,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

fn read_images(
    imagedb: &Path,
    by_chain: &HashMap<&str, &Layer>,
    refs: &HashMap<String, Vec<String>>,
    problems: &mut Vec<String>,
) -> Result<Vec<Image>> {
    let content = imagedb.join("content").join("sha256");
    let mut images = Vec::new();
    for name in list_dir(&content)? {
        let path = content.join(&name);
        if !is_hex64(&name) {
            problems.push(format!(
                "{}: not an image config (name is not 64 hex digits)",
                path.display()
            ));
            continue;
        }
        let bytes = match read_bytes(&path) {
            Ok(bytes) => bytes,
            Err(e) => {
                problems.push(DockerRootError::io("read", &path, e).to_string());
                continue;
            }
        };
        let id = format!("sha256:{name}");
        if hex::encode(Sha256::digest(&bytes)) != name {
            problems.push(format!(
                "image {id}: config digest does not match its name {}",
                path.display()
            ));
        }
        let config: ImageConfig = match serde_json::from_slice(&bytes) {
            Ok(config) => config,
            Err(e) => {
                problems.push(DockerRootError::parse(&path, e).to_string());
                continue;
            }
        };
        let diff_ids = config.rootfs.map(|r| r.diff_ids).unwrap_or_default();
        let chains = chain_ids(&diff_ids);
        let mut layers = Vec::with_capacity(diff_ids.len());
        let mut size = Some(0u64);
        for (diff_id, chain) in diff_ids.into_iter().zip(chains) {
            let stored = by_chain.get(chain.as_str());
            match stored {
                Some(layer) => {
                    if layer.diff_id != diff_id {
                        problems.push(format!(
                            "image {id}: layer {chain} has diff-id {} in the layer store, {diff_id} in the config",
                            layer.diff_id
                        ));
                    }
                    size = size.map(|s| s.saturating_add(layer.size));
                }
                None => {
                    problems.push(format!(
                        "image {id}: layer {chain} (diff-id {diff_id}) is not in the layer store"
                    ));
                    size = None;
                }
            }
            layers.push(ImageLayer {
                diff_id,
                chain_id: chain,
                cache_id: stored.map(|l| l.cache_id.clone()),
                size: stored.map(|l| l.size),
            });
        }
        let mut tags = Vec::new();
        let mut digests = Vec::new();
        for reference in refs.get(&id).into_iter().flatten() {
            if reference.contains('@') {
                digests.push(reference.clone());
            } else {
                tags.push(reference.clone());
            }
        }
        tags.sort();
        digests.sort();
        images.push(Image {
            id,
            tags,
            digests,
            created: config.created,
            layers,
            size,
        });
    }
    Ok(images)
}

#[derive(Deserialize)]
struct ContainerConfigFile {
    #[serde(rename = "ID")]
    id: Option<String>,
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Image", default)]
    image: String,
    #[serde(rename = "Driver")]
    driver: Option<String>,
    #[serde(rename = "State")]
    state: Option<ContainerState>,
    #[serde(rename = "Config")]
    config: Option<ContainerInnerConfig>,
}

#[derive(Deserialize)]
struct ContainerState {
    #[serde(rename = "Running", default)]
    running: bool,
}

#[derive(Deserialize)]
struct ContainerInnerConfig {
    #[serde(rename = "Image")]
    image: Option<String>,
}

fn read_containers(
    root: &Path,
    driver: &str,
    store: &Path,
    by_chain: &HashMap<&str, &Layer>,
    problems: &mut Vec<String>,
) -> Result<Vec<Container>> {
    let containers_dir = root.join("containers");
    let mounts_dir = store.join("layerdb").join("mounts");
    let mut containers = Vec::new();
    let mut seen = Vec::new();
    for name in list_dir(&containers_dir)? {
        if !is_hex64(&name) {
            continue;
        }
        let config_path = containers_dir.join(&name).join("config.v2.json");
        let config: ContainerConfigFile = match read_bytes(&config_path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(config) => config,
                Err(e) => {
                    problems.push(DockerRootError::parse(&config_path, e).to_string());
                    continue;
                }
            },
            // A container dir without config is one being created or removed.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                problems.push(DockerRootError::io("read", &config_path, e).to_string());
                continue;
            }
        };
        if let Some(id) = &config.id {
            if id != &name {
                problems.push(format!(
                    "{}: ID {id} differs from its directory name",
                    config_path.display()
                ));
            }
        }
        seen.push(name.clone());
        let mut container = Container {
            id: name.clone(),
            name: config.name.trim_start_matches('/').to_string(),
            image: config.image,
            image_ref: config.config.and_then(|c| c.image),
            running: config.state.map(|s| s.running).unwrap_or(false),
            driver: config.driver,
            mount_id: None,
            init_id: None,
            parent: None,
            rw_dir: None,
            size_rw: None,
            size_root_fs: None,
        };
        if let Some(other) = container.driver.as_deref().filter(|d| *d != driver) {
            problems.push(format!(
                "container {}: uses storage driver {other}, not {driver}: its layers were not read",
                container.id
            ));
            containers.push(container);
            continue;
        }
        let mount_dir = mounts_dir.join(&name);
        let mount = (|| -> Result<_> {
            Ok((
                read_text_opt(&mount_dir.join("mount-id"))?,
                read_text_opt(&mount_dir.join("init-id"))?,
                read_text_opt(&mount_dir.join("parent"))?,
            ))
        })();
        match mount {
            Ok((mount_id, init_id, parent)) => {
                container.mount_id = mount_id.filter(|s| !s.is_empty());
                container.init_id = init_id.filter(|s| !s.is_empty());
                container.parent = parent.filter(|s| !s.is_empty());
            }
            Err(e) => problems.push(e.to_string()),
        }
        measure(root, driver, by_chain, &mut container, problems);
        containers.push(container);
    }
    for orphan in list_dir(&mounts_dir)? {
        if is_hex64(&orphan) && !seen.contains(&orphan) {
            problems.push(format!(
                "{}: rw layer of no container in containers/",
                mounts_dir.join(&orphan).display()
            ));
        }
    }
    containers.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
    Ok(containers)
}

/// Fills `rw_dir`, `size_rw` and `size_root_fs` as Docker computes them.
fn measure(
    root: &Path,
    driver: &str,
    by_chain: &HashMap<&str, &Layer>,
    container: &mut Container,
    problems: &mut Vec<String>,
) {
    let Some(mount_id) = container.mount_id.as_deref() else {
        problems.push(format!(
            "container {}: no layerdb/mounts/{}/mount-id",
            container.id, container.id
        ));
        return;
    };
    match rw_diff_dir(root, driver, mount_id) {
        Some(dir) => {
            match crate::fsutil::directory_size(&dir) {
                Ok(size) => container.size_rw = Some(size),
                Err(e) => problems.push(format!(
                    "container {}: size of rw layer {}: {e}",
                    container.id,
                    dir.display()
                )),
            }
            container.rw_dir = Some(dir);
        }
        None => problems.push(format!(
            "container {}: rw size with storage driver {driver} needs a naive diff (not computed)",
            container.id
        )),
    }
    // moby: no parent layer, SizeRootFs 0; else the parent chain's size,
    // plus SizeRw when that could be measured.
    container.size_root_fs = match container.parent.as_deref() {
        None => Some(0),
        Some(parent) => {
            let size = chain_size(by_chain, parent);
            if size.is_none() {
                problems.push(format!(
                    "container {}: parent layer chain of {parent} is incomplete in the layer store",
                    container.id
                ));
            }
            size.map(|s| s.saturating_add(container.size_rw.unwrap_or(0)))
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:611251cc1445ef5f8383363fe5f95e83ad82c101e01d16783818ad4903d58820";
    const D2: &str = "sha256:6bded4487b0b6b8c89ff5a6df5995cbc56c3adebefedb8e78784b9ecb644e831";

    #[test]
    fn chain_ids_match_dockers() {
        // Measured on dockerd 20.10: layerdb/sha256/708adf0a... holds diff D2, parent D1.
        let chains = chain_ids(&[D1, D2]);
        assert_eq!(chains[0], D1);
        assert_eq!(
            chains[1],
            "sha256:708adf0ac10ff645d9df7487ba843b67709b8c981d8d4a7a1ecebadec1526919"
        );
    }

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    /// A hand-made overlay2 root: two layers, one image, one container.
    fn fake_root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let store = root.join("image/overlay2");
        let chains = chain_ids(&[D1, D2]);
        let l1 = store.join("layerdb/sha256").join(&chains[0][7..]);
        write(&l1.join("diff"), D1);
        write(&l1.join("cache-id"), "c1");
        write(&l1.join("size"), "100");
        let l2 = store.join("layerdb/sha256").join(&chains[1][7..]);
        write(&l2.join("diff"), D2);
        write(&l2.join("parent"), &chains[0]);
        write(&l2.join("cache-id"), "c2");
        write(&l2.join("size"), "20");
        let config =
            format!(r#"{{"created":"x","rootfs":{{"type":"layers","diff_ids":["{D1}","{D2}"]}}}}"#);
        let image_id = hex::encode(Sha256::digest(config.as_bytes()));
        write(
            &store.join("imagedb/content/sha256").join(&image_id),
            &config,
        );
        write(
            &store.join("repositories.json"),
            &format!(r#"{{"Repositories":{{"x":{{"x:1":"sha256:{image_id}"}}}}}}"#),
        );
        let cid = "a".repeat(64);
        write(
            &root.join("containers").join(&cid).join("config.v2.json"),
            &format!(
                r#"{{"ID":"{cid}","Name":"/box","Image":"sha256:{image_id}","Driver":"overlay2","State":{{"Running":false}},"Config":{{"Image":"x:1"}}}}"#
            ),
        );
        let mounts = store.join("layerdb/mounts").join(&cid);
        write(&mounts.join("mount-id"), "rw1");
        write(&mounts.join("init-id"), "rw1-init");
        write(&mounts.join("parent"), &chains[1]);
        write(&root.join("overlay2/rw1/diff/file"), &"z".repeat(7));
        fs::create_dir_all(root.join("overlay2/rw1/diff/emptydir")).unwrap();
        dir
    }

    #[test]
    fn reads_a_hand_made_root() {
        let dir = fake_root();
        let view = read(dir.path()).unwrap();
        assert_eq!(view.driver, "overlay2");
        assert!(view.problems.is_empty(), "{:?}", view.problems);
        assert_eq!(view.layers.len(), 2);
        assert!(view.layers.iter().all(|l| l.chain_id_verified));
        let image = &view.images[0];
        assert_eq!(image.tags, ["x:1"]);
        assert_eq!(image.size, Some(120));
        assert_eq!(image.layers[1].cache_id.as_deref(), Some("c2"));
        let container = view.container("box").unwrap();
        assert_eq!(container.size_rw, Some(7));
        assert_eq!(container.size_root_fs, Some(127));
        assert_eq!(container.init_id.as_deref(), Some("rw1-init"));
        assert_eq!(view.image("x:1").unwrap().id, image.id);
    }

    #[test]
    fn reports_a_chain_id_mismatch_without_failing() {
        let dir = fake_root();
        let chains = chain_ids(&[D1, D2]);
        let l2 = dir
            .path()
            .join("image/overlay2/layerdb/sha256")
            .join(&chains[1][7..]);
        fs::write(l2.join("diff"), D1).unwrap();
        let view = read(dir.path()).unwrap();
        let layer = view.layer(&chains[1]).unwrap();
        assert!(!layer.chain_id_verified);
        assert!(
            view.problems
                .iter()
                .any(|p| p.contains("chain-id does not match")),
            "{:?}",
            view.problems
        );
    }

    #[test]
    fn errors_are_one_line_and_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = read(dir.path()).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "docker root {}: no image/ directory (not a Docker data root?)",
                dir.path().display()
            )
        );
        let missing = dir.path().join("nope");
        let err = read(&missing).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("read docker root {}: ", missing.display())),
            "{err}"
        );
        assert!(!err.contains('\n'));
    }
}
