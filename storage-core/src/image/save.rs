//! `docker save`: [`save`] writes images as the legacy archive layout that
//! every `docker load` accepts (Docker 1.10 through 20.10 and the OCI-era
//! 25+ loaders alike), as moby v20.10's `image/tarexport/save.go` lays it
//! out:
//!
//! ```text
//! <image id hex>.json        the config, byte for byte
//! <v1 id>/VERSION            "1.0"
//! <v1 id>/json               the layer's legacy v1 image JSON
//! <v1 id>/layer.tar          the layer tar as applied (sha256 = diff-id), or a
//!                            symlink to the first copy of the same diff-id
//! manifest.json              [{"Config":..,"RepoTags":[..],"Layers":[..]}]
//! repositories               {"busybox":{"latest":"<top v1 id>"}}, when tagged
//! ```
//!
//! Entries come in Docker's walk order. The archive is streamed: each
//! layer's size is known before its tar header from the layer's
//! `tar-split.json.gz` (segment bytes plus content sizes, see
//! [`layer_tar_size`]), and the bytes [`LayerStore::export`] then writes are
//! counted and hashed, so a layer whose size or digest is off fails the
//! save instead of yielding a corrupt archive.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufReader, Write};

use flate2::read::GzDecoder;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::config::ImageConfig;
use super::reference::{Reference, is_hex_id};
use super::rfc3339;
use super::store::Image;
use super::{ImageError, ImageStore};
use crate::archive::tar_split::{Record, TarSplitReader};
use crate::layer::LayerStore;
use crate::layer::chain::is_digest;

const BLOCK: u64 = 512;

/// What [`save`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveSummary {
    /// The image ids saved, in manifest order.
    pub images: Vec<String>,
    /// Layer tars written (shared layers once).
    pub layers: usize,
    /// Bytes of the archive.
    pub bytes: u64,
}

/// The size of the tar [`LayerStore::export`] writes for layer `chain`,
/// from its tar-split alone: raw segment bytes plus each entry's stored
/// content (the data regions of GNU sparse entries).
pub fn layer_tar_size(layers: &LayerStore, chain: &str) -> Result<u64, ImageError> {
    let layer = layers.get(chain)?;
    let path = layers
        .layerdb()
        .join("sha256")
        .join(layer.chain_id.trim_start_matches("sha256:"))
        .join("tar-split.json.gz");
    let file = File::open(&path).map_err(ImageError::io("open", &path))?;
    let bad = |what: String| ImageError::Corrupt {
        path: path.clone(),
        what,
    };
    let mut total = 0u64;
    let mut headers: Vec<u8> = Vec::new();
    let mut pad = 0u64;
    for record in TarSplitReader::new(BufReader::new(GzDecoder::new(file))) {
        match record.map_err(|e| bad(e.to_string()))? {
            Record::Segment(bytes) => {
                total += bytes.len() as u64;
                headers.extend_from_slice(&bytes);
            }
            Record::File { size, .. } => {
                let physical = gnu_sparse_stored_size(&headers, pad).unwrap_or(size);
                headers.clear();
                pad = (BLOCK - physical % BLOCK) % BLOCK;
                total += physical;
            }
        }
    }
    Ok(total)
}

/// The stored bytes of a GNU sparse entry whose headers start `pad` bytes
/// into `segment` (the sum of its data regions); `None` for other entries.
fn gnu_sparse_stored_size(segment: &[u8], pad: u64) -> Option<u64> {
    let mut pos = usize::try_from(pad).ok()?;
    let block = |pos: usize| segment.get(pos..pos + BLOCK as usize);
    loop {
        let raw = block(pos)?;
        pos += BLOCK as usize;
        let header = tar::Header::from_byte_slice(raw);
        match raw[156] {
            b'x' | b'g' | b'L' | b'K' => {
                let size = header.entry_size().ok()?;
                pos = pos.checked_add(usize::try_from(size.div_ceil(BLOCK) * BLOCK).ok()?)?;
            }
            b'S' => {
                let gnu = header.as_gnu()?;
                let mut total = 0u64;
                for s in gnu.sparse.iter().filter(|s| !s.is_empty()) {
                    total += s.length().ok()?;
                }
                let mut extended = gnu.is_extended();
                while extended {
                    let mut ext = tar::GnuExtSparseHeader::new();
                    ext.as_mut_bytes().copy_from_slice(block(pos)?);
                    pos += BLOCK as usize;
                    for s in ext.sparse.iter().filter(|s| !s.is_empty()) {
                        total += s.length().ok()?;
                    }
                    extended = ext.is_extended();
                }
                return Some(total);
            }
            _ => return None,
        }
    }
}

/// An image to save and the tags it is saved under.
struct Selected {
    image: Image,
    tags: Vec<Reference>,
}

/// moby's `parseNames`: a bare name saves every tag of that repository, a
/// `name:tag` that tag, an id or id prefix the image without tags.
fn select(store: &ImageStore, names: &[String]) -> Result<Vec<Selected>, ImageError> {
    let repos = store.repositories()?;
    let mut selected: Vec<Selected> = Vec::new();
    let mut add = |id: String, tag: Option<Reference>| -> Result<(), ImageError> {
        let at = match selected.iter().position(|s| s.image.id == id) {
            Some(at) => at,
            None => {
                selected.push(Selected {
                    image: store.get(&id)?,
                    tags: Vec::new(),
                });
                selected.len() - 1
            }
        };
        if let Some(tag) = tag
            && !selected[at].tags.contains(&tag)
        {
            selected[at].tags.push(tag);
        }
        Ok(())
    };
    for name in names {
        if is_hex_id(name) || is_digest(name) {
            add(store.resolve(name)?, None)?;
            continue;
        }
        let reference = Reference::parse(name)?;
        if reference.familiar_name() == "sha256" {
            add(store.resolve(name)?, None)?;
        } else if reference.is_name_only() {
            let tags = repos.tags_of(&reference.familiar_name());
            if tags.is_empty() {
                add(store.resolve(name)?, None)?;
            }
            for (tag, id) in tags {
                add(id, Some(Reference::parse(&tag)?))?;
            }
        } else if reference.digest().is_some() {
            let id = repos
                .get(&reference)
                .ok_or_else(|| ImageError::not_found(name.as_str()))?;
            add(id.to_string(), None)?;
        } else {
            let id = repos
                .get(&reference)
                .ok_or_else(|| ImageError::not_found(name.as_str()))?;
            add(id.to_string(), Some(reference))?;
        }
    }
    Ok(selected)
}

/// One entry of the archive, before it is written.
enum Payload {
    Dir,
    Bytes(Vec<u8>),
    Symlink(String),
    Layer {
        chain: String,
        diff_id: String,
        size: u64,
        image: String,
    },
}

struct Planned {
    path: String,
    mtime: i64,
    payload: Payload,
}

/// A `manifest.json` item, fields in moby's order.
#[derive(Serialize)]
struct ManifestItem<'a> {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
    #[serde(rename = "Parent", skip_serializing_if = "Option::is_none")]
    parent: Option<&'a str>,
}

/// Writes the images `names` (references, ids or id prefixes; a bare name
/// means every tag of it) from `store` and `layers` to `out` as a
/// `docker save` archive.
pub fn save(
    store: &ImageStore,
    layers: &LayerStore,
    names: &[String],
    out: impl Write,
) -> Result<SaveSummary, ImageError> {
    if names.is_empty() {
        return Err(ImageError::Save {
            what: "archive".into(),
            why: "no images named".into(),
        });
    }
    let selected = select(store, names)?;
    let mut planned: Vec<Planned> = Vec::new();
    let mut saved_v1: HashMap<String, ()> = HashMap::new();
    let mut diff_paths: HashMap<String, String> = HashMap::new();
    let mut manifest: Vec<ManifestItem<'_>> = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut layer_count = 0;
    let ids: Vec<&str> = selected.iter().map(|s| s.image.id.as_str()).collect();

    for sel in &selected {
        let image = &sel.image;
        let shown = sel
            .tags
            .first()
            .map_or_else(|| image.id.clone(), Reference::to_string);
        let diff_ids = &image.config.rootfs.diff_ids;
        if diff_ids.is_empty() {
            return Err(ImageError::Save {
                what: format!("image {shown}"),
                why: "has no layers (docker save cannot export an empty image)".into(),
            });
        }
        let created = image
            .config
            .created
            .as_deref()
            .and_then(rfc3339::parse_unix_seconds)
            .unwrap_or(0);
        let chains = image.chain_ids();
        let top_fields = v1_fields_of_config(&image.raw_config, &image.config, &shown)?;
        let mut parent_v1: Option<String> = None;
        let mut layer_paths = Vec::with_capacity(diff_ids.len());
        for (i, (diff_id, chain)) in diff_ids.iter().zip(&chains).enumerate() {
            let fields = if i + 1 == diff_ids.len() {
                top_fields.clone()
            } else {
                v1_fields_of_lower_layer()
            };
            let v1_id = v1_create_id(&fields, chain, parent_v1.as_deref());
            let dir = hex(&v1_id).to_string();
            if saved_v1.insert(dir.clone(), ()).is_none() {
                let fields = with_os(fields, &image.config);
                let json = v1_json(&dir, parent_v1.as_deref().map(hex), &fields);
                planned.push(Planned {
                    path: dir.clone(),
                    mtime: created,
                    payload: Payload::Dir,
                });
                planned.push(Planned {
                    path: format!("{dir}/VERSION"),
                    mtime: created,
                    payload: Payload::Bytes(b"1.0".to_vec()),
                });
                planned.push(Planned {
                    path: format!("{dir}/json"),
                    mtime: created,
                    payload: Payload::Bytes(json),
                });
                let layer_path = format!("{dir}/layer.tar");
                let payload = match diff_paths.get(diff_id) {
                    Some(first) => Payload::Symlink(format!("../{first}")),
                    None => {
                        let info = layers.get(chain).map_err(|e| ImageError::Save {
                            what: format!("image {shown}"),
                            why: e.to_string(),
                        })?;
                        if info.diff_id != *diff_id {
                            return Err(ImageError::Save {
                                what: format!("image {shown}"),
                                why: format!(
                                    "layer {chain} has diff-id {}, the config says {diff_id}",
                                    info.diff_id
                                ),
                            });
                        }
                        diff_paths.insert(diff_id.clone(), layer_path.clone());
                        layer_count += 1;
                        Payload::Layer {
                            chain: chain.clone(),
                            diff_id: diff_id.clone(),
                            size: layer_tar_size(layers, chain)?,
                            image: shown.clone(),
                        }
                    }
                };
                planned.push(Planned {
                    path: layer_path,
                    mtime: created,
                    payload,
                });
            }
            layer_paths.push(format!("{dir}/layer.tar"));
            parent_v1 = Some(v1_id);
        }
        let top_v1 = hex(parent_v1.as_deref().unwrap_or_default()).to_string();
        for tag in &sel.tags {
            repositories
                .entry(tag.familiar_name())
                .or_default()
                .insert(tag.tag().unwrap_or("latest").to_string(), top_v1.clone());
        }
        let config_name = format!("{}.json", hex(&image.id));
        planned.push(Planned {
            path: config_name.clone(),
            mtime: created,
            payload: Payload::Bytes(image.raw_config.clone()),
        });
        // moby's validatedParentLinks: a parent only when saved too.
        let parent = image
            .parent
            .as_deref()
            .filter(|p| *p != image.id && ids.contains(p));
        manifest.push(ManifestItem {
            config: config_name,
            repo_tags: (!sel.tags.is_empty())
                .then(|| sel.tags.iter().map(Reference::to_string).collect()),
            layers: layer_paths,
            parent,
        });
    }

    let encode_err = |e: serde_json::Error| ImageError::Save {
        what: "manifest.json".into(),
        why: e.to_string(),
    };
    let mut manifest_json = serde_json::to_vec(&manifest).map_err(encode_err)?;
    manifest_json.push(b'\n');
    planned.push(Planned {
        path: "manifest.json".into(),
        mtime: 0,
        payload: Payload::Bytes(manifest_json),
    });
    if !repositories.is_empty() {
        let mut json = serde_json::to_vec(&repositories).map_err(encode_err)?;
        json.push(b'\n');
        planned.push(Planned {
            path: "repositories".into(),
            mtime: 0,
            payload: Payload::Bytes(json),
        });
    }
    // Go's filepath.Walk order: component by component.
    planned.sort_by(|a, b| a.path.split('/').cmp(b.path.split('/')));

    let mut tar = TarOut { out, written: 0 };
    for entry in &planned {
        write_entry(&mut tar, layers, entry)?;
    }
    tar.finish()?;
    Ok(SaveSummary {
        images: selected.into_iter().map(|s| s.image.id).collect(),
        layers: layer_count,
        bytes: tar.written,
    })
}

fn hex(id: &str) -> &str {
    id.strip_prefix("sha256:").unwrap_or(id)
}

fn write_entry<W: Write>(
    tar: &mut TarOut<W>,
    layers: &LayerStore,
    entry: &Planned,
) -> Result<(), ImageError> {
    match &entry.payload {
        Payload::Dir => tar.header(
            &format!("{}/", entry.path),
            tar::EntryType::Directory,
            0,
            0o755,
            entry.mtime,
            None,
        ),
        Payload::Bytes(bytes) => {
            tar.header(
                &entry.path,
                tar::EntryType::Regular,
                bytes.len() as u64,
                0o644,
                entry.mtime,
                None,
            )?;
            tar.data(bytes)?;
            tar.pad(bytes.len() as u64)
        }
        Payload::Symlink(target) => tar.header(
            &entry.path,
            tar::EntryType::Symlink,
            0,
            0o777,
            entry.mtime,
            Some(target),
        ),
        Payload::Layer {
            chain,
            diff_id,
            size,
            image,
        } => {
            tar.header(
                &entry.path,
                tar::EntryType::Regular,
                *size,
                0o644,
                entry.mtime,
                None,
            )?;
            let mut sink = LayerSink {
                out: &mut tar.out,
                limit: *size,
                written: 0,
                hash: Sha256::new(),
            };
            let fail = |why: String| ImageError::Save {
                what: format!("layer {chain} of image {image}"),
                why,
            };
            let exported = layers
                .export(chain, &mut sink)
                .map_err(|e| fail(e.to_string()))?;
            let LayerSink { written, hash, .. } = sink;
            if written != *size || exported != *size {
                return Err(fail(format!(
                    "exported {written} bytes, its tar-split says {size}"
                )));
            }
            let digest = format!("sha256:{}", hex::encode(hash.finalize()));
            if digest != *diff_id {
                return Err(fail(format!(
                    "exported tar has digest {digest}, its diff-id is {diff_id}"
                )));
            }
            tar.written += written;
            tar.pad(written)
        }
    }
}

/// The outer tar, written by hand so a layer can stream between its header
/// and its padding.
struct TarOut<W: Write> {
    out: W,
    written: u64,
}

impl<W: Write> TarOut<W> {
    fn io(e: io::Error) -> ImageError {
        ImageError::Save {
            what: "archive".into(),
            why: format!("write: {e}"),
        }
    }

    fn header(
        &mut self,
        path: &str,
        kind: tar::EntryType,
        size: u64,
        mode: u32,
        mtime: i64,
        link: Option<&str>,
    ) -> Result<(), ImageError> {
        let mut header = tar::Header::new_ustar();
        let bad = |e: io::Error| ImageError::Save {
            what: format!("archive entry {path}"),
            why: e.to_string(),
        };
        header.set_path(path).map_err(bad)?;
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(u64::try_from(mtime).unwrap_or(0));
        if let Some(link) = link {
            header.set_link_name(link).map_err(bad)?;
        }
        header.set_cksum();
        self.data(header.as_bytes())
    }

    fn data(&mut self, bytes: &[u8]) -> Result<(), ImageError> {
        self.out.write_all(bytes).map_err(Self::io)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self, size: u64) -> Result<(), ImageError> {
        let pad = ((BLOCK - size % BLOCK) % BLOCK) as usize;
        self.data(&[0u8; BLOCK as usize][..pad])
    }

    fn finish(&mut self) -> Result<(), ImageError> {
        self.data(&[0u8; 2 * BLOCK as usize])?;
        self.out.flush().map_err(Self::io)
    }
}

/// Counts and hashes a layer's bytes and refuses any beyond its header's
/// size (which would corrupt the archive).
struct LayerSink<'a, W: Write> {
    out: &'a mut W,
    limit: u64,
    written: u64,
    hash: Sha256,
}

impl<W: Write> Write for LayerSink<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written + buf.len() as u64 > self.limit {
            return Err(io::Error::other(format!(
                "layer is longer than the {} bytes its tar-split promises",
                self.limit
            )));
        }
        let n = self.out.write(buf)?;
        self.hash.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

// ---- legacy v1 image JSON, as Go's encoding/json writes moby's V1Image ----

/// The JSON of a zero `container.Config` (moby v20.10), which `V1Image`
/// always carries as `container_config`.
const ZERO_CONTAINER_CONFIG: &str = concat!(
    r#"{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":false,"#,
    r#""AttachStderr":false,"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":null,"#,
    r#""Cmd":null,"Image":"","Volumes":null,"WorkingDir":"","Entrypoint":null,"OnBuild":null,"#,
    r#""Labels":null}"#
);

/// `V1Image` fields other than `id` and `parent`, in Go's field order, as
/// compact JSON values.
type V1Fields = Vec<(&'static str, String)>;

/// A layer below the top: `V1Image{Created: Unix(0)}` (moby sets `OS`
/// only after hashing the v1 id, see [`with_os`]).
fn v1_fields_of_lower_layer() -> V1Fields {
    vec![
        ("created", "\"1970-01-01T00:00:00Z\"".to_string()),
        ("container_config", ZERO_CONTAINER_CONFIG.to_string()),
    ]
}

/// `fields` with the image's `os` (Go's omitempty), as moby writes the
/// `json` file after computing the v1 id.
fn with_os(mut fields: V1Fields, config: &ImageConfig) -> V1Fields {
    if !config.os.is_empty() && !fields.iter().any(|(k, _)| *k == "os") {
        fields.push(("os", go_json_string(&config.os)));
    }
    fields
}

/// The top layer: the config's own `V1Image` fields, values kept as the
/// config has them (re-escaped as Go does).
fn v1_fields_of_config(
    raw: &[u8],
    config: &ImageConfig,
    shown: &str,
) -> Result<V1Fields, ImageError> {
    let bad = |why: String| ImageError::Save {
        what: format!("config of image {shown}"),
        why,
    };
    let top = top_level_fields(raw).map_err(bad)?;
    let raw_of = |key: &str| {
        top.iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let string_field = |key: &str| -> Option<String> {
        let value = raw_of(key)?;
        let s: String = serde_json::from_str(value).ok()?;
        (!s.is_empty()).then(|| go_json_string(&s))
    };
    let compact = |key: &str| -> Result<Option<String>, ImageError> {
        match raw_of(key) {
            None | Some("null") => Ok(None),
            Some(v) => go_compact(v).map(Some).map_err(bad),
        }
    };
    let mut fields: V1Fields = Vec::new();
    if let Some(v) = string_field("comment") {
        fields.push(("comment", v));
    }
    let created = string_field("created").unwrap_or_else(|| "\"0001-01-01T00:00:00Z\"".into());
    fields.push(("created", created));
    if let Some(v) = string_field("container") {
        fields.push(("container", v));
    }
    let container_config =
        compact("container_config")?.unwrap_or_else(|| ZERO_CONTAINER_CONFIG.into());
    fields.push(("container_config", container_config));
    for key in ["docker_version", "author"] {
        if let Some(v) = string_field(key) {
            fields.push((key, v));
        }
    }
    if let Some(v) = compact("config")? {
        fields.push(("config", v));
    }
    for key in ["architecture", "variant"] {
        if let Some(v) = string_field(key) {
            fields.push((key, v));
        }
    }
    if !config.os.is_empty() {
        fields.push(("os", go_json_string(&config.os)));
    }
    if let Some(size) = raw_of("Size")
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|s| *s != 0)
    {
        fields.push(("Size", size.to_string()));
    }
    Ok(fields)
}

/// moby's `v1.CreateID`: sha256 of the v1 JSON without `id`, plus
/// `layer_id` (the chain-id) and `parent` (the parent's v1 id), keys sorted.
fn v1_create_id(fields: &V1Fields, chain: &str, parent: Option<&str>) -> String {
    let mut map: BTreeMap<&str, String> = fields.iter().map(|(k, v)| (*k, v.clone())).collect();
    map.insert("layer_id", go_json_string(chain));
    if let Some(parent) = parent {
        map.insert("parent", go_json_string(parent));
    }
    let mut json = String::from("{");
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str(&go_json_string(k));
        json.push(':');
        json.push_str(v);
    }
    json.push('}');
    format!("sha256:{}", hex::encode(Sha256::digest(json.as_bytes())))
}

/// The `<v1 id>/json` file: `V1Image` with `id` and `parent` (hex).
fn v1_json(id: &str, parent: Option<&str>, fields: &V1Fields) -> Vec<u8> {
    let mut json = format!("{{\"id\":{}", go_json_string(id));
    if let Some(parent) = parent {
        json.push_str(&format!(",\"parent\":{}", go_json_string(parent)));
    }
    for (k, v) in fields {
        json.push_str(&format!(",{}:{v}", go_json_string(k)));
    }
    json.push('}');
    json.into_bytes()
}

/// `s` as a JSON string the way Go's `encoding/json` writes it.
fn go_json_string(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '<' || c == '>' || c == '&' => {
                let v = c as u32;
                out.push_str("\\u00");
                out.push(HEX[(v >> 4) as usize] as char);
                out.push(HEX[(v & 0xf) as usize] as char);
            }
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The end of the JSON value starting at `i` (after whitespace).
fn value_end(b: &[u8], mut i: usize) -> Result<usize, String> {
    let err = |at: usize| format!("invalid JSON at byte {at}");
    match b.get(i) {
        Some(b'"') => {
            i += 1;
            while i < b.len() {
                match b[i] {
                    b'\\' => i += 2,
                    b'"' => return Ok(i + 1),
                    _ => i += 1,
                }
            }
            Err(err(i))
        }
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            while i < b.len() {
                match b[i] {
                    b'"' => {
                        i = value_end(b, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            Err(err(i))
        }
        Some(_) => {
            let start = i;
            while i < b.len() && !matches!(b[i], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                i += 1;
            }
            if i == start { Err(err(i)) } else { Ok(i) }
        }
        None => Err(err(i)),
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// The top-level keys of a JSON object with their raw value text, in order.
fn top_level_fields(raw: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut fields = Vec::new();
    let mut i = skip_ws(raw, 0);
    if raw.get(i) != Some(&b'{') {
        return Err("config is not a JSON object".into());
    }
    i = skip_ws(raw, i + 1);
    if raw.get(i) == Some(&b'}') {
        return Ok(fields);
    }
    loop {
        let key_end = value_end(raw, i)?;
        let key: String = serde_json::from_slice(&raw[i..key_end]).map_err(|e| e.to_string())?;
        i = skip_ws(raw, key_end);
        if raw.get(i) != Some(&b':') {
            return Err(format!("invalid JSON at byte {i}"));
        }
        let start = skip_ws(raw, i + 1);
        let end = value_end(raw, start)?;
        let value = std::str::from_utf8(&raw[start..end]).map_err(|e| e.to_string())?;
        fields.push((key, value.to_string()));
        i = skip_ws(raw, end);
        match raw.get(i) {
            Some(b',') => i = skip_ws(raw, i + 1),
            Some(b'}') => return Ok(fields),
            _ => return Err(format!("invalid JSON at byte {i}")),
        }
    }
}

/// Raw JSON without whitespace, its strings re-escaped as Go does.
fn go_compact(raw: &str) -> Result<String, String> {
    let b = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                let end = value_end(b, i)?;
                let s: String = serde_json::from_str(&raw[i..end]).map_err(|e| e.to_string())?;
                out.push_str(&go_json_string(&s));
                i = end;
            }
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            _ => {
                let start = i;
                while i < b.len() && !matches!(b[i], b'"' | b' ' | b'\t' | b'\n' | b'\r') {
                    i += 1;
                }
                out.push_str(&raw[start..i]);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_layer_v1_ids_follow_moby() {
        let config = ImageConfig::parse(
            br#"{"os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]}}"#,
            "t",
        )
        .unwrap();
        let fields = v1_fields_of_lower_layer();
        let chain = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        // The JSON moby hashes: keys sorted, layer_id added, no os yet.
        let expected = format!(
            "{{\"container_config\":{ZERO_CONTAINER_CONFIG},\"created\":\"1970-01-01T00:00:00Z\",\"layer_id\":\"{chain}\"}}"
        );
        assert_eq!(
            v1_create_id(&fields, chain, None),
            format!(
                "sha256:{}",
                hex::encode(Sha256::digest(expected.as_bytes()))
            )
        );
        let json = String::from_utf8(v1_json("ab", Some("cd"), &with_os(fields, &config))).unwrap();
        assert!(json.starts_with(r#"{"id":"ab","parent":"cd","created":"1970-01-01T00:00:00Z","container_config":{"Hostname":"#));
        assert!(json.ends_with(r#""Labels":null},"os":"linux"}"#));
    }

    #[test]
    fn top_fields_keep_config_values_in_go_order() {
        let raw = br#"{ "architecture":"amd64", "config": {"Cmd": ["sh", "-c", "a && b"]},
            "created":"2023-01-01T00:00:00Z","os":"linux",
            "rootfs":{"type":"layers","diff_ids":[]}, "comment": "" }"#;
        let config = ImageConfig::parse(raw, "t").unwrap();
        let fields = v1_fields_of_config(raw, &config, "t").unwrap();
        let keys: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            [
                "created",
                "container_config",
                "config",
                "architecture",
                "os"
            ]
        );
        assert_eq!(fields[2].1, r#"{"Cmd":["sh","-c","a \u0026\u0026 b"]}"#);
    }
}
