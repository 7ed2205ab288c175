//! `migrate aufs-to-overlay2`: converts a Docker data root's aufs store to
//! overlay2 in place and offline, without copying layer data and without
//! re-pulling anything.
//!
//! Per layer (cache-ids, mount-ids and init-ids are kept): `aufs/diff/<id>`
//! is renamed to `overlay2/<id>/diff`, its aufs markers become overlay
//! whiteouts ([`whiteouts`]), and `link`, `l/<link>`, `lower`, `work/` and
//! `committed` are written as Docker's overlay2 does ([`convert`]). Then
//! `image/aufs` is renamed to `image/overlay2` (layerdb and imagedb keep
//! every byte: chain-ids, diff-ids, sizes, tar-split) and each container's
//! `config.v2.json` names `overlay2` ([`config`]).
//!
//! The run refuses while anything of the stores is mounted or dockerd is
//! alive ([`offline`]). A journal ([`journal`]) records the plan and every
//! finished step; a run after a crash continues from it. `dry_run` only
//! reports the [`Plan`].

pub mod config;
pub mod convert;
mod error;
pub mod journal;
pub mod offline;
pub mod plan;
pub mod reverse;
pub mod whiteouts;

use std::fs;
use std::path::{Path, PathBuf};

pub use error::MigrateError;
pub use journal::{JOURNAL_FILE, Journal, Phase};
pub use plan::{LayerKind, LayerPlan, Plan, Totals};
pub use whiteouts::WhiteoutStats;

const DIRECTION: &str = "aufs-to-overlay2";
pub(crate) const LOCK_FILE: &str = ".layerscope-migrate.lock";

/// Where a test stops a run as if the process had been killed there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// Once this many layers are converted in total.
    AfterLayers(usize),
    /// Layer number `n` (0-based, plan order): its data moved, nothing converted.
    AfterMove(usize),
    /// Layer number `n`: whiteouts converted, not yet renamed into place.
    AfterWhiteouts(usize),
    /// `image/aufs` renamed, container configs not yet rewritten.
    AfterLayerdb,
}

#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// Only report what would be done.
    pub dry_run: bool,
    /// dockerd's pid file; a live pid there refuses the run.
    pub pid_file: PathBuf,
    /// Test hook: stop with [`MigrateError::Interrupted`] at this point.
    pub crash_at: Option<CrashPoint>,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        Self {
            dry_run: false,
            pid_file: PathBuf::from(offline::DEFAULT_PID_FILE),
            crash_at: None,
        }
    }
}

/// What a run did (or, with `dry_run`, would do).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Outcome {
    /// The plan as it stood when the run started.
    pub plan: Plan,
    /// Nothing was changed (`dry_run`).
    pub dry_run: bool,
    /// The root had been migrated completely by an earlier run.
    pub already_complete: bool,
    /// Layers converted by this run.
    pub converted: usize,
    /// Whiteouts converted by this run.
    pub markers: WhiteoutStats,
    /// Container configs rewritten by this run.
    pub containers_updated: usize,
    /// What remained under `aufs/` that is no layer of the plan (left in place).
    pub leftovers: Vec<PathBuf>,
}

/// The plan for `root` without changing anything.
pub fn plan(root: &Path, pid_file: &Path) -> Result<Plan, MigrateError> {
    let journal = active_journal(root, DIRECTION)?;
    let blocker = offline::blocker(root, pid_file);
    match journal {
        Some(journal) => plan::build(root, &journal.layers, true, blocker, false),
        None => {
            check_fresh(root)?;
            plan::build(root, &plan::aufs_layers(root)?, false, blocker, false)
        }
    }
}

/// Migrates the aufs store of the Docker data root `root` to overlay2 (or
/// reports the plan with `dry_run`). Safe to run again after any failure.
pub fn aufs_to_overlay2(root: &Path, options: &MigrateOptions) -> Result<Outcome, MigrateError> {
    if !root.is_dir() {
        return Err(MigrateError::NotAufs {
            root: root.to_path_buf(),
            why: "no such directory".into(),
        });
    }
    let journal = active_journal(root, DIRECTION)?;
    if let Some(journal) = &journal {
        if journal.phase == Phase::Complete {
            let plan = plan::build(root, &journal.layers, true, None, false)?;
            return Ok(outcome(plan, options.dry_run, true));
        }
    }
    let plan = plan(root, &options.pid_file)?;
    if options.dry_run {
        return Ok(outcome(plan, true, false));
    }
    if let Some(why) = &plan.blocker {
        return Err(MigrateError::Refused {
            root: root.to_path_buf(),
            why: why.clone(),
        });
    }
    let _lock = lock(root)?;
    let mut journal = match active_journal(root, DIRECTION)? {
        Some(journal) => journal,
        None => {
            let layers = plan.layers.iter().map(|l| journal::JournalLayer {
                id: l.id.clone(),
                parents: l.parents.clone(),
                done: false,
            });
            let journal = Journal::new(DIRECTION, layers.collect());
            journal.save(root)?;
            journal
        }
    };
    let mut result = outcome(plan, false, false);

    for index in 0..journal.layers.len() {
        if journal.layers[index].done {
            continue;
        }
        let layer = journal.layers[index].clone();
        let stats =
            convert::convert_layer(root, &layer.id, &layer.parents, index, options.crash_at)?;
        convert::sync_fs(root)?;
        journal.layers[index].done = true;
        journal.save(root)?;
        result.converted += 1;
        result.markers.add(&stats);
        convert::stop_if(
            options.crash_at,
            CrashPoint::AfterLayers(journal.done_count()),
        )?;
    }
    advance(root, &mut journal, Phase::Layerdb)?;

    if journal.phase == Phase::Layerdb {
        move_image_store(root)?;
        advance(root, &mut journal, Phase::Containers)?;
        convert::stop_if(options.crash_at, CrashPoint::AfterLayerdb)?;
    }

    if journal.phase == Phase::Containers {
        for container in config::list(root)? {
            if container.driver == "aufs"
                && config::set_driver(&container.path, "aufs", "overlay2")?
            {
                result.containers_updated += 1;
            }
        }
        advance(root, &mut journal, Phase::Cleanup)?;
    }

    if journal.phase == Phase::Cleanup {
        result.leftovers = cleanup_aufs(root, &journal)?;
        advance(root, &mut journal, Phase::Complete)?;
        let _ = fs::remove_file(root.join(LOCK_FILE));
    }
    Ok(result)
}

/// The journal of a `direction` migration; a finished migration the other
/// way is history (a new run replaces its journal), an unfinished one
/// must be completed first.
pub(crate) fn active_journal(
    root: &Path,
    direction: &str,
) -> Result<Option<Journal>, MigrateError> {
    match Journal::load(root)? {
        Some(journal) if journal.direction != direction => {
            if journal.phase == Phase::Complete {
                Ok(None)
            } else {
                Err(MigrateError::Journal {
                    path: Journal::path(root),
                    why: format!(
                        "an unfinished {} migration; run it again to finish it first",
                        journal.direction
                    ),
                })
            }
        }
        other => Ok(other),
    }
}

pub(crate) fn outcome(plan: Plan, dry_run: bool, already_complete: bool) -> Outcome {
    Outcome {
        plan,
        dry_run,
        already_complete,
        converted: 0,
        markers: WhiteoutStats::default(),
        containers_updated: 0,
        leftovers: Vec::new(),
    }
}

/// Moves the journal to `phase` when it is behind it.
pub(crate) fn advance(
    root: &Path,
    journal: &mut Journal,
    phase: Phase,
) -> Result<(), MigrateError> {
    if journal.phase < phase {
        journal.phase = phase;
        journal.save(root)?;
    }
    Ok(())
}

/// Refusals of a fresh run: no aufs store, or an overlay2 image store
/// already in the way.
fn check_fresh(root: &Path) -> Result<(), MigrateError> {
    let not_aufs = |why: String| MigrateError::NotAufs {
        root: root.to_path_buf(),
        why,
    };
    if !root.join("aufs").join("layers").is_dir() {
        return Err(not_aufs("no aufs/layers directory".into()));
    }
    if !root.join("image").join("aufs").is_dir() {
        return Err(not_aufs("no image/aufs directory".into()));
    }
    let image_overlay2 = root.join("image").join("overlay2");
    if image_overlay2.exists() {
        return Err(MigrateError::Refused {
            root: root.to_path_buf(),
            why: format!(
                "{} already exists (an overlay2 image store is in the way; move it aside first)",
                image_overlay2.display()
            ),
        });
    }
    for layer in plan::aufs_layers(root)? {
        for taken in [
            convert::overlay_home(root).join(&layer.id),
            convert::staging_dir(root, &layer.id),
        ] {
            if taken.exists() {
                return Err(MigrateError::Refused {
                    root: root.to_path_buf(),
                    why: format!("{} already exists", taken.display()),
                });
            }
        }
    }
    Ok(())
}

/// `image/aufs` -> `image/overlay2`, once.
fn move_image_store(root: &Path) -> Result<(), MigrateError> {
    let from = root.join("image").join("aufs");
    let to = root.join("image").join("overlay2");
    match (from.is_dir(), to.is_dir()) {
        (true, false) => {
            fs::rename(&from, &to).map_err(MigrateError::io("rename", &from))?;
            convert::sync_dir(&root.join("image"))
        }
        (false, true) => Ok(()),
        (true, true) => Err(MigrateError::Refused {
            root: root.to_path_buf(),
            why: format!("both {} and {} exist", from.display(), to.display()),
        }),
        (false, false) => Err(MigrateError::NotAufs {
            root: root.to_path_buf(),
            why: format!("{} is gone", from.display()),
        }),
    }
}

/// Removes the aufs metadata of converted layers and the emptied aufs
/// directories; returns what is left under `aufs/` (not ours to delete).
fn cleanup_aufs(root: &Path, journal: &Journal) -> Result<Vec<PathBuf>, MigrateError> {
    let aufs = root.join("aufs");
    for layer in &journal.layers {
        let meta = aufs.join("layers").join(&layer.id);
        match fs::remove_file(&meta) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(MigrateError::io("remove", &meta)(e));
            }
            _ => {}
        }
        let _ = fs::remove_dir(aufs.join("mnt").join(&layer.id));
    }
    let mut leftovers = Vec::new();
    for sub in ["diff", "mnt", "layers"] {
        let dir = aufs.join(sub);
        if fs::remove_dir(&dir).is_err()
            && let Ok(entries) = fs::read_dir(&dir)
        {
            leftovers.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
        }
    }
    if leftovers.is_empty() {
        // Only files of aufs itself may remain at the top (none in Docker's layout).
        let _ = fs::remove_dir(&aufs);
    }
    if aufs.exists() && leftovers.is_empty() {
        leftovers.push(aufs);
    }
    leftovers.sort();
    Ok(leftovers)
}

/// One migration at a time per data root.
pub(crate) fn lock(root: &Path) -> Result<nix::fcntl::Flock<fs::File>, MigrateError> {
    let path = root.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(MigrateError::io("open lock", &path))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(
        |(_, errno)| MigrateError::Refused {
            root: root.to_path_buf(),
            why: format!("another migration holds {} ({errno})", path.display()),
        },
    )
}
