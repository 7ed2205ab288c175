//! [`ImageStore`]: Docker's image store under `<root>/image/<driver>/`.
//!
//! ```text
//! imagedb/content/sha256/<id hex>          the config JSON, byte for byte (id = its sha256)
//! imagedb/metadata/sha256/<id hex>/parent  "sha256:<parent id>", when the image has one
//! imagedb/metadata/sha256/<id hex>/lastUpdated   RFC 3339 time of the last `tag`
//! repositories.json   {"Repositories":{"busybox":{"busybox:latest":"sha256:<id>"}}}
//! ```
//!
//! Files are written to a temporary name and renamed into place, with the
//! modes dockerd uses (0600 files, 0700 dirs). Changes run under an
//! exclusive lock ([`LockedStore`]) so several layerscope processes can
//! share one store; readers never lock, since every file changes by rename.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::ImageError;
use super::config::{ImageConfig, digest_of};
use super::reference::{Reference, is_hex_id};
use super::rfc3339;
use crate::fsutil;
use crate::layer::chain::is_digest;

/// `repositories.json`: familiar name -> familiar reference -> image id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repositories {
    #[serde(rename = "Repositories", default)]
    pub repositories: BTreeMap<String, BTreeMap<String, String>>,
}

impl Repositories {
    /// The image id `reference` points to (by digest when it has one).
    pub fn get(&self, reference: &Reference) -> Option<&str> {
        let key = Self::key(reference);
        self.repositories
            .get(&reference.familiar_name())
            .and_then(|repo| repo.get(&key))
            .map(String::as_str)
    }

    /// The key a reference is stored under: `name@digest` when it has a
    /// digest, else `name:tag`.
    fn key(reference: &Reference) -> String {
        match reference.digest() {
            Some(digest) => format!("{}@{digest}", reference.familiar_name()),
            None => reference.familiar_string(),
        }
    }

    /// Points `reference` at `id`; returns the id it pointed to before.
    pub fn insert(&mut self, reference: &Reference, id: &str) -> Option<String> {
        self.repositories
            .entry(reference.familiar_name())
            .or_default()
            .insert(Self::key(reference), id.to_string())
    }

    /// Removes `reference`; returns the id it pointed to.
    pub fn remove(&mut self, reference: &Reference) -> Option<String> {
        let name = reference.familiar_name();
        let repo = self.repositories.get_mut(&name)?;
        let id = repo.remove(&Self::key(reference));
        if repo.is_empty() {
            self.repositories.remove(&name);
        }
        id
    }

    /// Every reference (familiar form) pointing at `id`, sorted.
    pub fn references_to(&self, id: &str) -> Vec<String> {
        let mut refs: Vec<String> = self
            .repositories
            .values()
            .flat_map(|repo| repo.iter())
            .filter(|(_, v)| v.as_str() == id)
            .map(|(k, _)| k.clone())
            .collect();
        refs.sort();
        refs
    }

    /// The tags (familiar `name:tag`) of repository `name`, sorted, with
    /// the image each points to.
    pub fn tags_of(&self, name: &str) -> Vec<(String, String)> {
        self.repositories
            .get(name)
            .map(|repo| {
                repo.iter()
                    .filter(|(k, _)| !k.contains('@'))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// An image as the store knows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Image {
    /// `sha256:` + sha256 of the config bytes.
    pub id: String,
    /// Familiar `name:tag` references, sorted.
    pub repo_tags: Vec<String>,
    /// Familiar `name@digest` references, sorted.
    pub repo_digests: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<String>,
    pub config: ImageConfig,
    /// The config exactly as stored.
    #[serde(skip)]
    pub raw_config: Vec<u8>,
}

impl Image {
    /// The chain-ids of the image's layers, base first.
    pub fn chain_ids(&self) -> Vec<String> {
        self.config.chain_ids()
    }

    /// The chain-id of the top layer (`None` without layers).
    pub fn top_chain_id(&self) -> Option<String> {
        self.config.top_chain_id()
    }
}

/// Docker's image store of one driver.
#[derive(Debug, Clone)]
pub struct ImageStore {
    dir: PathBuf,
    content: PathBuf,
    metadata: PathBuf,
    repositories: PathBuf,
}

fn hex_of(id: &str) -> &str {
    id.strip_prefix("sha256:").unwrap_or(id)
}

impl ImageStore {
    /// Opens the image store of `driver` under the data root `root`,
    /// creating its directories and an empty `repositories.json`.
    pub fn open(root: &Path, driver: &str) -> Result<Self, ImageError> {
        let dir = root.join("image").join(driver);
        let imagedb = dir.join("imagedb");
        let store = ImageStore {
            content: imagedb.join("content").join("sha256"),
            metadata: imagedb.join("metadata").join("sha256"),
            repositories: dir.join("repositories.json"),
            dir,
        };
        for d in [&store.content, &store.metadata] {
            create_dir_all_mode(d, 0o700)?;
        }
        if !store.repositories.exists() {
            let locked = store.lock()?;
            if !store.repositories.exists() {
                locked.write_repositories(&Repositories::default())?;
            }
        }
        Ok(store)
    }

    /// `<root>/image/<driver>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the store's exclusive lock (blocking) for a series of changes.
    pub fn lock(&self) -> Result<LockedStore<'_>, ImageError> {
        let path = self.dir.join("imagedb").join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(ImageError::io("open lock", &path))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| ImageError::io("flock", &path)(errno.into()))?;
        Ok(LockedStore {
            store: self,
            _lock: lock,
        })
    }

    fn content_path(&self, id: &str) -> PathBuf {
        self.content.join(hex_of(id))
    }

    fn metadata_dir(&self, id: &str) -> PathBuf {
        self.metadata.join(hex_of(id))
    }

    /// Whether the config of image `id` (a full `sha256:` id) is stored.
    pub fn contains(&self, id: &str) -> bool {
        is_digest(id) && self.content_path(id).is_file()
    }

    /// Every image id in the store, sorted.
    pub fn ids(&self) -> Result<Vec<String>, ImageError> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.content).map_err(ImageError::io("read", &self.content))? {
            let entry = entry.map_err(ImageError::io("read", &self.content))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if is_hex_id(&name) {
                ids.push(format!("sha256:{name}"));
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// The reference store, as on disk.
    pub fn repositories(&self) -> Result<Repositories, ImageError> {
        match fs::read(&self.repositories) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ImageError::Corrupt {
                path: self.repositories.clone(),
                what: format!("invalid JSON: {e}"),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Repositories::default()),
            Err(e) => Err(ImageError::io("read", &self.repositories)(e)),
        }
    }

    /// The image id that `name` means: a reference (`busybox` is
    /// `busybox:latest`), a full id with or without `sha256:`, or a unique
    /// prefix of an id.
    pub fn resolve(&self, name: &str) -> Result<String, ImageError> {
        self.resolve_in(name, &self.repositories()?)
    }

    fn resolve_in(&self, name: &str, repos: &Repositories) -> Result<String, ImageError> {
        let full = if is_hex_id(name) {
            Some(format!("sha256:{name}"))
        } else if is_digest(name) {
            Some(name.to_string())
        } else {
            None
        };
        if let Some(id) = full {
            return if self.contains(&id) {
                Ok(id)
            } else {
                Err(ImageError::not_found(name))
            };
        }
        if let Ok(reference) = Reference::parse_tagged(name)
            && let Some(id) = repos.get(&reference)
        {
            return Ok(id.to_string());
        }
        let prefix = hex_of(name);
        if !prefix.is_empty()
            && prefix
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            let matches: Vec<String> = self
                .ids()?
                .into_iter()
                .filter(|id| hex_of(id).starts_with(prefix))
                .collect();
            match matches.len() {
                1 => return Ok(matches.into_iter().next().unwrap_or_default()),
                0 => {}
                count => {
                    return Err(ImageError::Ambiguous {
                        prefix: name.to_string(),
                        count,
                    });
                }
            }
        }
        Err(ImageError::not_found(name))
    }

    /// The image `name` means (see [`ImageStore::resolve`]).
    pub fn get(&self, name: &str) -> Result<Image, ImageError> {
        let repos = self.repositories()?;
        let id = self.resolve_in(name, &repos)?;
        self.read_image(&id, &repos)
    }

    /// The raw config bytes of image `id`, checked against the id.
    pub fn config_bytes(&self, id: &str) -> Result<Vec<u8>, ImageError> {
        let path = self.content_path(id);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ImageError::not_found(id)),
            Err(e) => return Err(ImageError::io("read", &path)(e)),
        };
        let actual = digest_of(&bytes);
        if actual != id {
            return Err(ImageError::Corrupt {
                path,
                what: format!("content has digest {actual}, expected {id}"),
            });
        }
        Ok(bytes)
    }

    fn read_image(&self, id: &str, repos: &Repositories) -> Result<Image, ImageError> {
        let raw_config = self.config_bytes(id)?;
        let config = ImageConfig::parse(&raw_config, id)?;
        let (repo_digests, repo_tags) = repos
            .references_to(id)
            .into_iter()
            .partition(|r| r.contains('@'));
        Ok(Image {
            id: id.to_string(),
            repo_tags,
            repo_digests,
            parent: self.metadata_field(id, "parent")?,
            last_updated: self.metadata_field(id, "lastUpdated")?,
            config,
            raw_config,
        })
    }

    fn metadata_field(&self, id: &str, key: &str) -> Result<Option<String>, ImageError> {
        let path = self.metadata_dir(id).join(key);
        match fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ImageError::io("read", &path)(e)),
        }
    }

    /// Every image, sorted by id.
    pub fn list(&self) -> Result<Vec<Image>, ImageError> {
        let repos = self.repositories()?;
        self.ids()?
            .iter()
            .map(|id| self.read_image(id, &repos))
            .collect()
    }

    /// The images whose `parent` is `id`.
    pub fn children(&self, id: &str) -> Result<Vec<String>, ImageError> {
        let mut children = Vec::new();
        for child in self.ids()? {
            if self.metadata_field(&child, "parent")?.as_deref() == Some(id) {
                children.push(child);
            }
        }
        Ok(children)
    }

    /// Stores an image config (checked as Docker does) and returns its id.
    pub fn put_config(&self, config: &[u8]) -> Result<String, ImageError> {
        self.lock()?.put_config(config)
    }

    /// Tags the image `image` (reference, id or prefix) as `target`
    /// (`name` means `name:latest`), replacing the tag if it pointed
    /// elsewhere, as `docker tag` does. Returns the stored reference.
    pub fn tag(&self, image: &str, target: &str) -> Result<Reference, ImageError> {
        let locked = self.lock()?;
        let id = self.resolve(image)?;
        let reference = Reference::parse_tagged(target)?;
        locked.add_tag(&reference, &id)?;
        locked.set_last_updated(&id)?;
        Ok(reference)
    }

    /// Removes the reference `target` (`name` means `name:latest`) and
    /// returns the image id it pointed to.
    pub fn untag(&self, target: &str) -> Result<String, ImageError> {
        let reference = Reference::parse_tagged(target)?;
        self.lock()?.delete_ref(&reference)
    }

    /// Removes image `id` from the store: its config, metadata and every
    /// reference to it; children lose their parent link. Layers are the
    /// caller's (see [`super::delete`]).
    pub fn remove(&self, id: &str) -> Result<Image, ImageError> {
        let locked = self.lock()?;
        let image = self.get(id)?;
        locked.remove_image(&image.id)?;
        Ok(image)
    }
}

/// The image store under its exclusive lock; every change goes through
/// here. Dropping it releases the lock.
pub struct LockedStore<'a> {
    store: &'a ImageStore,
    _lock: Flock<File>,
}

impl std::ops::Deref for LockedStore<'_> {
    type Target = ImageStore;

    fn deref(&self) -> &ImageStore {
        self.store
    }
}

impl LockedStore<'_> {
    /// See [`ImageStore::put_config`].
    pub fn put_config(&self, config: &[u8]) -> Result<String, ImageError> {
        let id = digest_of(config);
        ImageConfig::parse(config, &id)?;
        let path = self.content_path(&id);
        if !path.is_file() {
            fsutil::write_atomic(&path, config, 0o600).map_err(ImageError::io("write", &path))?;
        }
        Ok(id)
    }

    /// Records `parent` as the parent image of `id`.
    pub fn set_parent(&self, id: &str, parent: &str) -> Result<(), ImageError> {
        self.set_metadata(id, "parent", parent.as_bytes())
    }

    /// Forgets the parent image of `id`.
    pub fn clear_parent(&self, id: &str) -> Result<(), ImageError> {
        let path = self.metadata_dir(id).join("parent");
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(ImageError::io("remove", &path)(e))
            }
            _ => Ok(()),
        }
    }

    /// Removes the config and metadata of `id` and nothing else (the undo
    /// of [`LockedStore::put_config`]).
    pub fn discard_config(&self, id: &str) -> Result<(), ImageError> {
        let meta = self.metadata_dir(id);
        fsutil::remove_all(&meta).map_err(ImageError::io("remove", &meta))?;
        let content = self.content_path(id);
        match fs::remove_file(&content) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(ImageError::io("remove", &content)(e))
            }
            _ => Ok(()),
        }
    }

    /// Records now as the time `id` was last tagged.
    pub fn set_last_updated(&self, id: &str) -> Result<(), ImageError> {
        self.set_metadata(id, "lastUpdated", rfc3339::now().as_bytes())
    }

    fn set_metadata(&self, id: &str, key: &str, value: &[u8]) -> Result<(), ImageError> {
        if !self.contains(id) {
            return Err(ImageError::not_found(id));
        }
        let dir = self.metadata_dir(id);
        create_dir_all_mode(&dir, 0o700)?;
        let path = dir.join(key);
        fsutil::write_atomic(&path, value, 0o600).map_err(ImageError::io("write", &path))
    }

    /// Points the tag `reference` at image `id`; returns the image it
    /// pointed to before, if another.
    pub fn add_tag(&self, reference: &Reference, id: &str) -> Result<Option<String>, ImageError> {
        if reference.digest().is_some() {
            return Err(ImageError::InvalidReference {
                reference: reference.to_string(),
                why: "refusing to create a tag with a digest reference".into(),
            });
        }
        if reference.familiar_name() == "sha256" {
            return Err(ImageError::InvalidReference {
                reference: reference.to_string(),
                why: "refusing to create an ambiguous tag using digest algorithm as name".into(),
            });
        }
        if !self.contains(id) {
            return Err(ImageError::not_found(id));
        }
        let reference = reference.clone().with_default_tag();
        let mut repos = self.repositories()?;
        let previous = repos.insert(&reference, id);
        if previous.as_deref() != Some(id) {
            self.write_repositories(&repos)?;
        }
        Ok(previous.filter(|p| p != id))
    }

    /// Removes `reference` (a tag or a digest reference); returns the id
    /// it pointed to.
    pub fn delete_ref(&self, reference: &Reference) -> Result<String, ImageError> {
        let mut repos = self.repositories()?;
        let id = repos
            .remove(reference)
            .ok_or_else(|| ImageError::not_found(reference.to_string()))?;
        self.write_repositories(&repos)?;
        Ok(id)
    }

    /// Replaces `repositories.json` (atomically, mode 0600) with `repos`,
    /// compact JSON with sorted keys as Go writes it.
    pub fn write_repositories(&self, repos: &Repositories) -> Result<(), ImageError> {
        let json = serde_json::to_vec(repos).map_err(|e| ImageError::Corrupt {
            path: self.repositories.clone(),
            what: format!("cannot encode: {e}"),
        })?;
        fsutil::write_atomic(&self.repositories, &json, 0o600)
            .map_err(ImageError::io("write", &self.repositories))
    }

    /// Removes image `id`'s config, metadata and references, and the
    /// parent links of its children.
    pub fn remove_image(&self, id: &str) -> Result<(), ImageError> {
        for child in self.children(id)? {
            let path = self.metadata_dir(&child).join("parent");
            fs::remove_file(&path).map_err(ImageError::io("remove", &path))?;
        }
        let mut repos = self.repositories()?;
        let before = repos.clone();
        for repo in repos.repositories.values_mut() {
            repo.retain(|_, v| v != id);
        }
        repos.repositories.retain(|_, repo| !repo.is_empty());
        if repos != before {
            self.write_repositories(&repos)?;
        }
        self.discard_config(id)
    }
}

fn create_dir_all_mode(dir: &Path, mode: u32) -> Result<(), ImageError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(ImageError::io("create", dir))
}
