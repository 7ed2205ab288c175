//! `migrate overlay2-to-aufs`: the way back, for a user who must return to
//! an aufs-capable Docker (or to undo a migration). Per layer, in parent
//! order: `overlay2/<id>/diff` is renamed to `aufs/diff/<id>.migrating`,
//! its whiteouts become aufs markers ([`whiteouts::to_aufs`]), it is
//! renamed to `aufs/diff/<id>`, `aufs/mnt/<id>` and `aufs/layers/<id>`
//! (parents newest first, from the `lower` file) are written, and the
//! overlay2 leftovers (`link`, `lower`, `work/`, `l/<link>`) are removed.
//! Then `image/overlay2` becomes `image/aufs` and containers' configs name
//! `aufs`. Same journal, offline checks and resumability as the forward
//! direction.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::convert::{self, sync_dir};
use super::journal::{Journal, JournalLayer, Phase};
use super::whiteouts::{self, WhiteoutStats};
use super::{MigrateError, MigrateOptions, Outcome, config, offline, plan};
use crate::fsutil;

const DIRECTION: &str = "overlay2-to-aufs";

/// The overlay2 layers of `root`, parents first, each with its parents
/// newest first (resolved from the `lower` file's links).
fn overlay2_layers(root: &Path) -> Result<Vec<JournalLayer>, MigrateError> {
    let home = convert::overlay_home(root);
    let mut by_link = HashMap::new();
    let links = home.join("l");
    for entry in fs::read_dir(&links).map_err(|e| MigrateError::NotAufs {
        root: root.to_path_buf(),
        why: format!("no overlay2 store: read {}: {e}", links.display()),
    })? {
        let entry = entry.map_err(MigrateError::io("read", &links))?;
        let target =
            fs::read_link(entry.path()).map_err(MigrateError::io("read link", entry.path()))?;
        // ../<id>/diff
        if let Some(id) = target.parent().and_then(Path::file_name) {
            by_link.insert(
                entry.file_name().to_string_lossy().into_owned(),
                id.to_string_lossy().into_owned(),
            );
        }
    }
    let mut layers = Vec::new();
    for entry in fs::read_dir(&home).map_err(MigrateError::io("read", &home))? {
        let entry = entry.map_err(MigrateError::io("read", &home))?;
        let id = entry.file_name().to_string_lossy().into_owned();
        if !convert::valid_id(&id) || !entry.path().join("diff").is_dir() {
            continue;
        }
        let parents = match fs::read_to_string(entry.path().join("lower")) {
            Ok(lower) => lower
                .trim()
                .split(':')
                .map(|l| {
                    let link = l.trim_start_matches("l/");
                    by_link
                        .get(link)
                        .cloned()
                        .ok_or_else(|| MigrateError::Layer {
                            id: id.clone(),
                            why: format!("lower link {l} resolves to no layer"),
                        })
                })
                .collect::<Result<Vec<_>, _>>()?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(MigrateError::io("read", entry.path().join("lower"))(e)),
        };
        layers.push(JournalLayer {
            id,
            parents,
            done: false,
        });
    }
    layers.sort_by(|a, b| a.parents.len().cmp(&b.parents.len()).then(a.id.cmp(&b.id)));
    Ok(layers)
}

/// Migrates the overlay2 store of `root` back to aufs (see the module doc).
pub fn overlay2_to_aufs(root: &Path, options: &MigrateOptions) -> Result<Outcome, MigrateError> {
    let refused = |why: String| MigrateError::Refused {
        root: root.to_path_buf(),
        why,
    };
    let journal = super::active_journal(root, DIRECTION)?;
    let layers = match &journal {
        Some(journal) => journal.layers.clone(),
        None => {
            if !root.join("image/overlay2").is_dir() {
                return Err(MigrateError::NotAufs {
                    root: root.to_path_buf(),
                    why: "no image/overlay2 directory to migrate back".into(),
                });
            }
            for taken in ["image/aufs", "aufs/layers"] {
                if root.join(taken).exists() {
                    return Err(refused(format!(
                        "{} already exists",
                        root.join(taken).display()
                    )));
                }
            }
            overlay2_layers(root)?
        }
    };
    let blocker = offline::blocker(root, &options.pid_file);
    if journal.as_ref().is_some_and(|j| j.phase == Phase::Complete) {
        let plan = plan::build(root, &layers, true, blocker, true)?;
        return Ok(super::outcome(plan, options.dry_run, true));
    }
    let plan = plan::build(root, &layers, journal.is_some(), blocker, true)?;
    if options.dry_run {
        return Ok(super::outcome(plan, true, false));
    }
    if let Some(why) = plan.blocker.clone() {
        return Err(refused(why));
    }
    let _lock = super::lock(root)?;
    let mut journal = match journal {
        Some(journal) => journal,
        None => {
            let journal = Journal::new(DIRECTION, layers);
            journal.save(root)?;
            journal
        }
    };
    let mut result = super::outcome(plan, false, false);
    for index in 0..journal.layers.len() {
        if journal.layers[index].done {
            continue;
        }
        let layer = journal.layers[index].clone();
        let stats = layer_to_aufs(root, &layer.id, &layer.parents)?;
        convert::sync_fs(root)?;
        journal.layers[index].done = true;
        journal.save(root)?;
        result.converted += 1;
        result.markers.add(&stats);
    }
    super::advance(root, &mut journal, Phase::Layerdb)?;
    if journal.phase == Phase::Layerdb {
        let (from, to) = (root.join("image/overlay2"), root.join("image/aufs"));
        if from.is_dir() && !to.exists() {
            fs::rename(&from, &to).map_err(MigrateError::io("rename", &from))?;
            sync_dir(&root.join("image"))?;
        }
        super::advance(root, &mut journal, Phase::Containers)?;
    }
    if journal.phase == Phase::Containers {
        for container in config::list(root)? {
            if container.driver == "overlay2"
                && config::set_driver(&container.path, "overlay2", "aufs")?
            {
                result.containers_updated += 1;
            }
        }
        super::advance(root, &mut journal, Phase::Cleanup)?;
    }
    if journal.phase == Phase::Cleanup {
        let home = convert::overlay_home(root);
        let _ = fs::remove_dir(home.join("l"));
        if fs::remove_dir(&home).is_err() && home.exists() {
            result.leftovers.push(home);
        }
        super::advance(root, &mut journal, Phase::Complete)?;
        let _ = fs::remove_file(root.join(super::LOCK_FILE));
    }
    Ok(result)
}

/// One layer back to aufs; idempotent like the forward conversion.
fn layer_to_aufs(root: &Path, id: &str, parents: &[String]) -> Result<WhiteoutStats, MigrateError> {
    let aufs = root.join("aufs");
    for sub in ["diff", "layers", "mnt"] {
        fs::create_dir_all(aufs.join(sub)).map_err(MigrateError::io("create", aufs.join(sub)))?;
    }
    let layers_file = aufs.join("layers").join(id);
    let final_diff = convert::aufs_diff(root, id);
    let mut stats = WhiteoutStats::default();
    if !layers_file.exists() {
        let staging: PathBuf = aufs.join("diff").join(format!("{id}.migrating"));
        let source = convert::overlay_home(root).join(id).join("diff");
        if !staging.is_dir() && !final_diff.is_dir() {
            if !source.is_dir() {
                return Err(MigrateError::Layer {
                    id: id.to_string(),
                    why: format!(
                        "data is in neither {} nor {}",
                        source.display(),
                        staging.display()
                    ),
                });
            }
            fs::rename(&source, &staging).map_err(MigrateError::io("move into aufs", &source))?;
            sync_dir(&aufs.join("diff"))?;
        }
        if staging.is_dir() {
            stats = whiteouts::to_aufs(&staging)?;
            fs::rename(&staging, &final_diff)
                .map_err(MigrateError::io("rename into place", &staging))?;
        }
        fsutil::ensure_dir(&aufs.join("mnt").join(id), 0o755)
            .map_err(MigrateError::io("create", aufs.join("mnt").join(id)))?;
        let mut list = String::new();
        for parent in parents {
            list.push_str(parent);
            list.push('\n');
        }
        fsutil::write_atomic(&layers_file, list.as_bytes(), 0o644)
            .map_err(MigrateError::io("write", &layers_file))?;
        sync_dir(&aufs.join("diff"))?;
    }
    // The overlay2 remains of the layer.
    let dir = convert::overlay_home(root).join(id);
    if dir.is_dir() {
        if let Ok(link) = fs::read_to_string(dir.join("link")) {
            let link = link.trim();
            if !link.is_empty() {
                let _ = fs::remove_file(convert::overlay_home(root).join("l").join(link));
            }
        }
        fsutil::remove_all(&dir).map_err(MigrateError::io("remove", &dir))?;
    }
    Ok(stats)
}
