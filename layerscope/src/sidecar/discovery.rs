//! Which containers exist right now: layerscope's own store (`--root`,
//! through `ContainerStore` and `LayerStore`) and a real Docker data root
//! (`--docker-root`, through `storage_core::docker_root`, read only).
//! Called every rescan interval; the Docker root is read again only when
//! its `containers/` or `layerdb/mounts/` directory changed (or once a
//! minute), since reading it also measures every rw layer.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use storage_core::container::ContainerStore;
use storage_core::docker_root;
use storage_core::layer::LayerStore;

/// Where a container was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Store,
    Docker,
}

/// One live container, as the metrics label it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRecord {
    pub id: String,
    /// The name without Docker's leading slash.
    pub name: String,
    pub image: String,
    pub driver: String,
    pub origin: Origin,
    /// The directory holding the rw layer's files (overlay2 `diff/`).
    pub rw_dir: Option<PathBuf>,
    /// Bytes of every read-only layer under the rw layer.
    pub image_bytes: u64,
    /// The image's layer chain-ids, top first.
    pub layers: Vec<String>,
    /// The rw size when the source already measured it (Docker root reader).
    pub measured_rw: Option<u64>,
}

/// Reads both sources; keeps what is needed to make rescans cheap.
pub struct Discovery {
    store: Option<LayerStore>,
    root: Option<PathBuf>,
    docker_root: Option<PathBuf>,
    docker_cache: Option<DockerCache>,
    chain_cache: HashMap<String, (u64, Option<String>)>,
}

struct DockerCache {
    stamp: Vec<Option<(i64, i64)>>,
    read_at: Instant,
    records: Vec<ContainerRecord>,
}

const DOCKER_MAX_AGE: Duration = Duration::from_secs(60);

impl Discovery {
    /// Opens layerscope's store at `root` (with `driver`) and checks that
    /// the Docker root is readable: errors here stop the sidecar at start.
    pub fn open(
        root: Option<&Path>,
        driver: &str,
        storage_opt: &[String],
        docker_root: Option<&Path>,
    ) -> anyhow::Result<Discovery> {
        let store = match root {
            Some(root) => Some(
                crate::commands::store::open_layers(root, driver, storage_opt)
                    .with_context(|| format!("store {}", root.display()))?,
            ),
            None => None,
        };
        if let Some(docker) = docker_root {
            // The error names the root and the cause (with the source
            // folded in): keep it as the one line.
            docker_root::drivers(docker).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        Ok(Discovery {
            store,
            root: root.map(Path::to_path_buf),
            docker_root: docker_root.map(Path::to_path_buf),
            docker_cache: None,
            chain_cache: HashMap::new(),
        })
    }

    /// The live containers. A source that fails to read is logged and
    /// keeps its previous list out (its containers disappear only when
    /// it is readable and they are gone).
    pub fn scan(&mut self) -> Vec<ContainerRecord> {
        let mut records = Vec::new();
        if let Some(store) = &self.store {
            let root = self.root.as_deref().expect("store has a root");
            match scan_store(root, store, &mut self.chain_cache) {
                Ok(found) => records.extend(found),
                Err(e) => tracing::warn!("store {}: {e:#}", root.display()),
            }
        }
        if let Some(docker) = self.docker_root.clone() {
            match self.scan_docker(&docker) {
                Ok(found) => records.extend(found),
                Err(e) => tracing::warn!("docker root {}: {e:#}", docker.display()),
            }
        }
        dedupe_names(&mut records);
        records
    }

    fn scan_docker(&mut self, root: &Path) -> anyhow::Result<Vec<ContainerRecord>> {
        let mut watched = vec![root.join("containers")];
        for driver in docker_root::drivers(root)? {
            watched.push(root.join("image").join(driver).join("layerdb/mounts"));
        }
        let stamp: Vec<Option<(i64, i64)>> = watched
            .iter()
            .map(|p| fs::metadata(p).ok().map(|m| (m.mtime(), m.mtime_nsec())))
            .collect();
        if let Some(cache) = &self.docker_cache {
            if cache.stamp == stamp && cache.read_at.elapsed() < DOCKER_MAX_AGE {
                return Ok(cache.records.clone());
            }
        }
        let docker = docker_root::read(root)?;
        let records: Vec<ContainerRecord> = docker
            .containers
            .iter()
            .map(|c| {
                let mut layers = Vec::new();
                let mut next = c.parent.clone();
                while let Some(chain) = next {
                    next = docker.layer(&chain).and_then(|l| l.parent.clone());
                    layers.push(chain);
                }
                ContainerRecord {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    image: c.image_ref.clone().unwrap_or_else(|| c.image.clone()),
                    driver: c.driver.clone().unwrap_or_else(|| docker.driver.clone()),
                    origin: Origin::Docker,
                    rw_dir: c.rw_dir.clone(),
                    image_bytes: c
                        .parent
                        .as_deref()
                        .and_then(|p| docker.chain_size(p))
                        .unwrap_or(0),
                    layers,
                    measured_rw: c.size_rw,
                }
            })
            .collect();
        self.docker_cache = Some(DockerCache {
            stamp,
            read_at: Instant::now(),
            records: records.clone(),
        });
        Ok(records)
    }
}

fn scan_store(
    root: &Path,
    layers: &LayerStore,
    chain_cache: &mut HashMap<String, (u64, Option<String>)>,
) -> anyhow::Result<Vec<ContainerRecord>> {
    let containers = ContainerStore::open(root, layers)?;
    let mut records = Vec::new();
    for container in containers.list()? {
        // A container being created or removed may lack its rw layer.
        let Ok(rw) = layers.rw_layer(&container.id) else {
            continue;
        };
        let rw_dir = layers
            .driver()
            .metadata(&rw.mount_id)
            .ok()
            .and_then(|m| m.get("UpperDir").map(PathBuf::from))
            .or_else(|| layers.driver().diff_files(&rw.mount_id));
        let mut chain = Vec::new();
        let mut image_bytes = 0;
        let mut next = rw.parent.clone();
        while let Some(id) = next {
            let (size, parent) = match chain_cache.get(&id) {
                Some(known) => known.clone(),
                None => match layers.get(&id) {
                    Ok(layer) => {
                        let known = (layer.size, layer.parent.clone());
                        chain_cache.insert(id.clone(), known.clone());
                        known
                    }
                    Err(_) => break,
                },
            };
            image_bytes += size;
            chain.push(id);
            next = parent;
        }
        records.push(ContainerRecord {
            id: container.id.clone(),
            name: container.short_name().to_string(),
            image: container.image.clone(),
            driver: container.driver.clone(),
            origin: Origin::Store,
            rw_dir,
            image_bytes,
            layers: chain,
            measured_rw: None,
        });
    }
    if chain_cache.len() > 10_000 {
        chain_cache.clear();
    }
    Ok(records)
}

/// Two sources may hold the same name: the later one gets its short id
/// appended, so every `container` label value is unique.
fn dedupe_names(records: &mut [ContainerRecord]) {
    let mut seen = std::collections::HashSet::new();
    for record in records.iter_mut() {
        if !seen.insert(record.name.clone()) {
            record.name = format!("{}-{}", record.name, &record.id[..record.id.len().min(12)]);
            seen.insert(record.name.clone());
        }
    }
}
