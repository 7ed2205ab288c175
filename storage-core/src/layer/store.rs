//! [`LayerStore`]: Docker's layerdb on top of a [`Driver`].
//!
//! ```text
//! <root>/image/<driver>/layerdb/sha256/<chain-id hex>/{diff,parent,cache-id,size,tar-split.json.gz}
//! <root>/image/<driver>/layerdb/mounts/<container>/{mount-id,init-id,parent}
//! <root>/image/<driver>/layerdb/tmp/     write sets and their intents
//! ```
//!
//! Every change is built in `tmp/` and renamed into place under an
//! exclusive lock. Before a driver layer is created, an intent file names
//! its cache-id; a crash leaves the intent behind, and the next
//! [`LayerStore::open`] removes the orphaned driver layer and the write
//! set, so a killed `apply` or `commit` never leaves a half-visible layer.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::Serialize;

use super::LayerError;
use super::chain::{chain_id, is_digest};
use super::lock::StoreLock;
use crate::archive;
use crate::driver::{CreateOpts, Driver};
use crate::fsutil;

/// A read-only layer as `docker image inspect` and the layerdb know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerInfo {
    pub chain_id: String,
    pub diff_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    pub cache_id: String,
    pub size: u64,
}

/// A container's writable layer (`layerdb/mounts/<name>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RwLayer {
    pub name: String,
    pub mount_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

pub struct LayerStore {
    layerdb: PathBuf,
    driver: Box<dyn Driver>,
}

/// What fills a container's init layer before its rw layer goes on top.
pub type InitLayerFn<'a> = &'a dyn Fn(&Path) -> std::io::Result<()>;

impl LayerStore {
    /// Opens the store of `driver` under the data root `root`, creating
    /// its directories, and repairs what an interrupted command left.
    pub fn open(root: &Path, driver: Box<dyn Driver>) -> Result<Self, LayerError> {
        let layerdb = root.join("image").join(driver.name()).join("layerdb");
        for dir in ["sha256", "mounts", "tmp"] {
            fs::create_dir_all(layerdb.join(dir))
                .map_err(LayerError::io("create", layerdb.join(dir)))?;
        }
        let store = Self { layerdb, driver };
        let _lock = store.lock()?;
        store.repair()?;
        Ok(store)
    }

    pub fn driver(&self) -> &dyn Driver {
        self.driver.as_ref()
    }

    pub fn layerdb(&self) -> &Path {
        &self.layerdb
    }

    fn lock(&self) -> Result<StoreLock, LayerError> {
        StoreLock::exclusive(&self.layerdb.join("lock"))
    }

    fn layer_dir(&self, chain: &str) -> PathBuf {
        self.layerdb
            .join("sha256")
            .join(chain.trim_start_matches("sha256:"))
    }

    fn tmp(&self) -> PathBuf {
        self.layerdb.join("tmp")
    }

    /// Applies a layer tar (plain, gzip or zstd) on `parent` and returns
    /// the new layer. The store is unchanged when this fails.
    pub fn apply(&self, tar: impl Read, parent: Option<&str>) -> Result<LayerInfo, LayerError> {
        let _lock = self.lock()?;
        let parent = parent.map(|p| self.resolve(p)).transpose()?;
        let cache_id = fsutil::random_hex_id();
        let write_set = WriteSet::begin(&self.tmp(), &[cache_id.as_str()])?;

        let result = (|| -> Result<LayerInfo, LayerError> {
            let parent_cache = parent.as_ref().map(|p| p.cache_id.as_str());
            self.driver
                .create(&cache_id, parent_cache, &CreateOpts::default())?;
            let split_path = write_set.dir.join("tar-split.json.gz");
            let split_file =
                fs::File::create(&split_path).map_err(LayerError::io("create", &split_path))?;
            let mut split = GzEncoder::new(split_file, Compression::default());
            let mut reader = archive::compression::decompressed(tar)?;
            let applied =
                self.driver
                    .apply_diff(&cache_id, parent_cache, &mut reader, Some(&mut split))?;
            split
                .finish()
                .and_then(|f| f.sync_all())
                .map_err(LayerError::io("write", &split_path))?;

            let chain = chain_id(
                parent.as_ref().map(|p| p.chain_id.as_str()),
                &applied.diff_id,
            );
            if self.layer_dir(&chain).exists() {
                return Err(LayerError::Duplicate { id: chain });
            }
            write_set.file("diff", applied.diff_id.as_bytes())?;
            write_set.file("size", applied.size.to_string().as_bytes())?;
            write_set.file("cache-id", cache_id.as_bytes())?;
            if let Some(parent) = &parent {
                write_set.file("parent", parent.chain_id.as_bytes())?;
            }
            Ok(LayerInfo {
                chain_id: chain,
                diff_id: applied.diff_id,
                parent: parent.as_ref().map(|p| p.chain_id.clone()),
                cache_id: cache_id.clone(),
                size: applied.size,
            })
        })();

        match result {
            Ok(info) => {
                write_set.commit(&self.layer_dir(&info.chain_id))?;
                Ok(info)
            }
            Err(e) => {
                if self.driver.exists(&cache_id) {
                    let _ = self.driver.remove(&cache_id);
                }
                write_set.cancel();
                Err(e)
            }
        }
    }

    /// The layer with chain-id `id` (or a unique prefix of its hex).
    pub fn get(&self, id: &str) -> Result<LayerInfo, LayerError> {
        self.resolve(id)
    }

    fn resolve(&self, id: &str) -> Result<LayerInfo, LayerError> {
        let hex = id.trim_start_matches("sha256:");
        if is_digest(&format!("sha256:{hex}")) {
            let dir = self.layer_dir(hex);
            if dir.is_dir() {
                return self.read_layer(&dir);
            }
            return Err(LayerError::NotFound { id: id.to_string() });
        }
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(LayerError::NotFound { id: id.to_string() });
        }
        let matches: Vec<PathBuf> = self
            .layer_dirs()?
            .into_iter()
            .filter(|d| {
                d.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(hex))
            })
            .collect();
        match matches.as_slice() {
            [one] => self.read_layer(one),
            [] => Err(LayerError::NotFound { id: id.to_string() }),
            many => Err(LayerError::Ambiguous {
                id: id.to_string(),
                count: many.len(),
            }),
        }
    }

    fn layer_dirs(&self) -> Result<Vec<PathBuf>, LayerError> {
        let dir = self.layerdb.join("sha256");
        let mut dirs = Vec::new();
        for entry in fs::read_dir(&dir).map_err(LayerError::io("read", &dir))? {
            let entry = entry.map_err(LayerError::io("read", &dir))?;
            dirs.push(entry.path());
        }
        dirs.sort();
        Ok(dirs)
    }

    fn read_layer(&self, dir: &Path) -> Result<LayerInfo, LayerError> {
        let hex = dir.file_name().unwrap_or_default().to_string_lossy();
        let size_text = read_field(dir, "size")?;
        let size = size_text.parse().map_err(|_| LayerError::Corrupt {
            path: dir.join("size"),
            what: format!("size {size_text:?} is not a number"),
        })?;
        Ok(LayerInfo {
            chain_id: format!("sha256:{hex}"),
            diff_id: read_field(dir, "diff")?,
            parent: read_optional_field(dir, "parent")?,
            cache_id: read_field(dir, "cache-id")?,
            size,
        })
    }

    /// Every layer, sorted by chain-id.
    pub fn list(&self) -> Result<Vec<LayerInfo>, LayerError> {
        self.layer_dirs()?
            .iter()
            .map(|d| self.read_layer(d))
            .collect()
    }

    /// Writes the layer's tar exactly as it was applied (tar-split), so its
    /// sha256 is the diff-id again. Returns the bytes written.
    pub fn export(&self, id: &str, out: &mut dyn Write) -> Result<u64, LayerError> {
        let layer = self.resolve(id)?;
        let split_path = self.layer_dir(&layer.chain_id).join("tar-split.json.gz");
        let split = fs::File::open(&split_path).map_err(LayerError::io("open", &split_path))?;
        if let Some(files) = self.driver.diff_files(&layer.cache_id) {
            return Ok(archive::assemble_layer(GzDecoder::new(split), &files, out)?);
        }
        let files = self.driver.get(&layer.cache_id)?;
        let written = archive::assemble_layer(GzDecoder::new(split), &files, out);
        self.driver.put(&layer.cache_id)?;
        Ok(written?)
    }

    /// Removes a layer that has no children and no container on it.
    pub fn remove(&self, id: &str) -> Result<(), LayerError> {
        let _lock = self.lock()?;
        let layer = self.resolve(id)?;
        let children = self
            .list()?
            .iter()
            .filter(|l| l.parent.as_deref() == Some(layer.chain_id.as_str()))
            .count();
        if children > 0 {
            return Err(LayerError::HasChildren {
                id: layer.chain_id,
                children,
            });
        }
        if let Some(rw) = self
            .list_rw()?
            .into_iter()
            .find(|m| m.parent.as_deref() == Some(layer.chain_id.as_str()))
        {
            return Err(LayerError::InUse {
                id: layer.chain_id,
                container: rw.name,
            });
        }
        // Out of sight first (atomic), then the driver's data.
        let doomed = self.tmp().join(format!(
            "removing-{}",
            layer.chain_id.trim_start_matches("sha256:")
        ));
        let dir = self.layer_dir(&layer.chain_id);
        fs::rename(&dir, &doomed).map_err(LayerError::io("rename for removal", &dir))?;
        if self.driver.exists(&layer.cache_id) {
            self.driver.remove(&layer.cache_id)?;
        }
        fsutil::remove_all(&doomed).map_err(LayerError::io("remove", &doomed))
    }

    /// Creates a container's layers on `parent`: the init layer
    /// (`<mount-id>-init`, filled by `init`) and the rw layer above it.
    pub fn create_rw(
        &self,
        name: &str,
        parent: Option<&str>,
        init: Option<InitLayerFn<'_>>,
    ) -> Result<RwLayer, LayerError> {
        let _lock = self.lock()?;
        let mount_dir = self.layerdb.join("mounts").join(name);
        if mount_dir.exists() {
            return Err(LayerError::MountExists {
                id: name.to_string(),
            });
        }
        let parent = parent.map(|p| self.resolve(p)).transpose()?;
        let mount_id = fsutil::random_hex_id();
        let init_id = init.map(|_| format!("{mount_id}-init"));
        let mut intents = vec![mount_id.as_str()];
        if let Some(init_id) = &init_id {
            intents.push(init_id);
        }
        let write_set = WriteSet::begin(&self.tmp(), &intents)?;
        let result = (|| -> Result<(), LayerError> {
            let parent_cache = parent.as_ref().map(|p| p.cache_id.as_str());
            let below = match (&init_id, init) {
                (Some(init_id), Some(init)) => {
                    self.driver
                        .create_rw(init_id, parent_cache, &CreateOpts::default())?;
                    let root = self.driver.get(init_id)?;
                    let filled = init(&root).map_err(LayerError::io("init layer", &root));
                    self.driver.put(init_id)?;
                    filled?;
                    Some(init_id.as_str())
                }
                _ => parent_cache,
            };
            self.driver
                .create_rw(&mount_id, below, &CreateOpts::default())?;
            write_set.file("mount-id", mount_id.as_bytes())?;
            if let Some(init_id) = &init_id {
                write_set.file("init-id", init_id.as_bytes())?;
            }
            if let Some(parent) = &parent {
                write_set.file("parent", parent.chain_id.as_bytes())?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                write_set.commit(&mount_dir)?;
                Ok(RwLayer {
                    name: name.to_string(),
                    mount_id,
                    init_id,
                    parent: parent.map(|p| p.chain_id),
                })
            }
            Err(e) => {
                for id in [Some(mount_id.as_str()), init_id.as_deref()]
                    .into_iter()
                    .flatten()
                {
                    if self.driver.exists(id) {
                        let _ = self.driver.remove(id);
                    }
                }
                write_set.cancel();
                Err(e)
            }
        }
    }

    /// The rw layer of container `name`.
    pub fn rw_layer(&self, name: &str) -> Result<RwLayer, LayerError> {
        let dir = self.layerdb.join("mounts").join(name);
        if !dir.is_dir() {
            return Err(LayerError::MountNotFound {
                id: name.to_string(),
            });
        }
        Ok(RwLayer {
            name: name.to_string(),
            mount_id: read_field(&dir, "mount-id")?,
            init_id: read_optional_field(&dir, "init-id")?,
            parent: read_optional_field(&dir, "parent")?,
        })
    }

    /// Every container's rw layer, sorted by name.
    pub fn list_rw(&self) -> Result<Vec<RwLayer>, LayerError> {
        let dir = self.layerdb.join("mounts");
        let mut names = Vec::new();
        for entry in fs::read_dir(&dir).map_err(LayerError::io("read", &dir))? {
            let entry = entry.map_err(LayerError::io("read", &dir))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        names.iter().map(|n| self.rw_layer(n)).collect()
    }

    /// Removes container `name`'s rw and init layers (unmounting them).
    pub fn remove_rw(&self, name: &str) -> Result<(), LayerError> {
        let _lock = self.lock()?;
        let rw = self.rw_layer(name)?;
        let dir = self.layerdb.join("mounts").join(name);
        let doomed = self.tmp().join(format!("removing-mount-{name}"));
        fs::rename(&dir, &doomed).map_err(LayerError::io("rename for removal", &dir))?;
        for id in [Some(rw.mount_id.as_str()), rw.init_id.as_deref()]
            .into_iter()
            .flatten()
        {
            if self.driver.exists(id) {
                self.driver.remove(id)?;
            }
        }
        fsutil::remove_all(&doomed).map_err(LayerError::io("remove", &doomed))
    }

    /// Finishes or undoes what an interrupted command left in `tmp/`:
    /// orphaned driver layers named by intents, write sets, removals.
    /// Returns how many leftovers it cleaned.
    pub fn repair(&self) -> Result<usize, LayerError> {
        let tmp = self.tmp();
        let mut cleaned = self.driver.sweep_incomplete()?;
        let referenced = self.referenced_cache_ids()?;
        let mut entries: Vec<PathBuf> = fs::read_dir(&tmp)
            .map_err(LayerError::io("read", &tmp))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for path in entries {
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if name.ends_with(".intent") {
                let ids = fs::read_to_string(&path).unwrap_or_default();
                for id in ids.lines().filter(|l| !l.is_empty()) {
                    if !referenced.iter().any(|r| r == id) && self.driver.exists(id) {
                        self.driver.remove(id)?;
                    }
                }
                let _ = fs::remove_file(&path);
                cleaned += 1;
            } else if name.starts_with("removing-") {
                if let Ok(cache) = read_field(&path, "cache-id")
                    && self.driver.exists(&cache)
                {
                    self.driver.remove(&cache)?;
                }
                for field in ["mount-id", "init-id"] {
                    if let Ok(id) = read_field(&path, field)
                        && self.driver.exists(&id)
                    {
                        self.driver.remove(&id)?;
                    }
                }
                fsutil::remove_all(&path).map_err(LayerError::io("remove", &path))?;
                cleaned += 1;
            } else if name.starts_with("write-set-") {
                fsutil::remove_all(&path).map_err(LayerError::io("remove", &path))?;
                cleaned += 1;
            }
        }
        Ok(cleaned)
    }

    fn referenced_cache_ids(&self) -> Result<Vec<String>, LayerError> {
        let mut ids: Vec<String> = self.list()?.into_iter().map(|l| l.cache_id).collect();
        for rw in self.list_rw()? {
            ids.push(rw.mount_id);
            ids.extend(rw.init_id);
        }
        Ok(ids)
    }
}

/// A directory in `tmp/` that becomes a layerdb entry by one rename, with
/// an intent file naming the driver layers it creates.
struct WriteSet {
    dir: PathBuf,
    intent: PathBuf,
}

impl WriteSet {
    fn begin(tmp: &Path, driver_ids: &[&str]) -> Result<Self, LayerError> {
        let name = format!("write-set-{}", &fsutil::random_hex_id()[..16]);
        let dir = tmp.join(&name);
        let intent = tmp.join(format!("{name}.intent"));
        fsutil::write_atomic(&intent, driver_ids.join("\n").as_bytes(), 0o644)
            .map_err(LayerError::io("write", &intent))?;
        fs::create_dir(&dir).map_err(LayerError::io("create", &dir))?;
        Ok(Self { dir, intent })
    }

    fn file(&self, name: &str, contents: &[u8]) -> Result<(), LayerError> {
        let path = self.dir.join(name);
        fsutil::write_atomic(&path, contents, 0o644).map_err(LayerError::io("write", path))
    }

    fn commit(self, target: &Path) -> Result<(), LayerError> {
        fs::rename(&self.dir, target).map_err(LayerError::io("rename into place", target))?;
        let _ = fs::remove_file(&self.intent);
        Ok(())
    }

    fn cancel(self) {
        let _ = fsutil::remove_all(&self.dir);
        let _ = fs::remove_file(&self.intent);
    }
}

fn read_field(dir: &Path, name: &str) -> Result<String, LayerError> {
    let path = dir.join(name);
    fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(LayerError::io("read", path))
}

fn read_optional_field(dir: &Path, name: &str) -> Result<Option<String>, LayerError> {
    match fs::read_to_string(dir.join(name)) {
        Ok(s) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LayerError::io("read", dir.join(name))(e)),
    }
}
