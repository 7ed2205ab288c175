//! [`LeakCheck`]: asserts that a test left no mount and no loop device
//! behind. Tests run as parallel threads of one process, so a check only
//! looks at paths it owns: its own fresh scope dir (unique name under
//! /var/tmp) and any dir the test hands it with [`LeakCheck::watch`]. What
//! other tests mount or attach meanwhile can never show up in it.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::scratch::{SCRATCH_PARENT, SCRATCH_PREFIX, remove_dir_safely};
use crate::unmount::unmount_robust;
use crate::{FsKind, ScratchFs, TestkitError, loops, mountinfo};

/// The roots [`Snapshot::take`] covers.
pub const TEMP_ROOTS: [&str; 2] = ["/var/tmp", "/tmp"];

/// How long [`LeakCheck::check`] gives the kernel, by default, to finish a
/// deferred release (a lazily detached mount, a loop device's last close).
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(2);

/// Something left behind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Leak {
    /// A mount point still mounted.
    Mount(PathBuf),
    /// A loop device still bound to a backing file.
    Loop { device: PathBuf, backing: PathBuf },
}

impl fmt::Display for Leak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Leak::Mount(path) => write!(f, "mount {}", path.display()),
            Leak::Loop { device, backing } => {
                write!(
                    f,
                    "loop device {} on {}",
                    device.display(),
                    backing.display()
                )
            }
        }
    }
}

/// Mounts and loop devices (by backing file) under some roots, at one
/// moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    items: BTreeSet<Leak>,
}

impl Snapshot {
    /// The mounts under /var/tmp and /tmp and the loop devices backed by
    /// files there.
    pub fn take() -> Self {
        let roots: Vec<PathBuf> = TEMP_ROOTS.iter().map(|r| canonical(Path::new(r))).collect();
        Self::take_under(&roots)
    }

    /// The mounts at or below any of `roots` (canonical paths) and the loop
    /// devices whose backing file is below one of them.
    pub fn take_under(roots: &[PathBuf]) -> Self {
        let under = |path: &Path| roots.iter().any(|root| path.starts_with(root));
        let mut items = BTreeSet::new();
        // An unreadable mountinfo reads as "no mounts": the check then
        // relies on the loop devices and on the dir removal, which refuses
        // to recurse into mounts.
        for entry in mountinfo::mounts().unwrap_or_default() {
            if under(&entry.mount_point) {
                items.insert(Leak::Mount(entry.mount_point));
            }
        }
        for attached in loops::attached_loops() {
            if under(&attached.backing_file) {
                items.insert(Leak::Loop {
                    device: attached.device,
                    backing: attached.backing_file,
                });
            }
        }
        Snapshot { items }
    }

    /// The mounts in it.
    pub fn mounts(&self) -> impl Iterator<Item = &Path> {
        self.items.iter().filter_map(|item| match item {
            Leak::Mount(path) => Some(path.as_path()),
            Leak::Loop { .. } => None,
        })
    }

    /// The loop devices in it, with their backing files.
    pub fn loops(&self) -> impl Iterator<Item = (&Path, &Path)> {
        self.items.iter().filter_map(|item| match item {
            Leak::Loop { device, backing } => Some((device.as_path(), backing.as_path())),
            Leak::Mount(_) => None,
        })
    }

    /// What is in `self` and was not in `before`.
    pub fn new_since(&self, before: &Snapshot) -> Vec<Leak> {
        self.items.difference(&before.items).cloned().collect()
    }
}

/// A leak-check scope: a fresh `/var/tmp/layerscope-test-*` dir for the
/// test's scratch filesystems and mounts, plus any dirs it [`watch`]es.
///
/// Create it first in the test so that it drops last. Dropping it without
/// [`assert_clean`] (a failed test) unmounts what is left under the scope
/// and removes the scope dir.
///
/// [`watch`]: LeakCheck::watch
/// [`assert_clean`]: LeakCheck::assert_clean
#[derive(Debug)]
pub struct LeakCheck {
    scope: PathBuf,
    roots: Vec<PathBuf>,
    before: Snapshot,
    settle: Duration,
}

impl LeakCheck {
    /// Creates the scope dir and snapshots it.
    pub fn start() -> Result<Self, TestkitError> {
        let parent = canonical(Path::new(SCRATCH_PARENT));
        let scope = tempfile::Builder::new()
            .prefix(SCRATCH_PREFIX)
            .tempdir_in(&parent)
            .map_err(|e| TestkitError::io("create leak-check scope in", &parent, e))?
            .keep();
        let roots = vec![scope.clone()];
        let before = Snapshot::take_under(&roots);
        Ok(Self {
            scope,
            roots,
            before,
            settle: DEFAULT_SETTLE,
        })
    }

    /// How long [`check`](LeakCheck::check) waits for leaks to go away
    /// before reporting them ([`DEFAULT_SETTLE`] unless set).
    pub fn settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }

    /// The scope dir: make the test's mounts and files below it.
    pub fn dir(&self) -> &Path {
        &self.scope
    }

    /// A [`ScratchFs`] inside the scope.
    pub fn scratch(&self, kind: FsKind, size_bytes: u64) -> Result<ScratchFs, TestkitError> {
        ScratchFs::new_in(&self.scope, kind, size_bytes)
    }

    /// Also checks below `dir`, which must be unique to this test (for
    /// instance a `tempfile` dir it created); what is there now is
    /// snapshotted and not reported.
    pub fn watch(&mut self, dir: &Path) {
        let dir = canonical(dir);
        let now = Snapshot::take_under(std::slice::from_ref(&dir));
        self.before.items.extend(now.items);
        self.roots.push(dir);
    }

    /// What is under the checked dirs now and was not at the start.
    pub fn leaks(&self) -> Vec<Leak> {
        Snapshot::take_under(&self.roots).new_since(&self.before)
    }

    /// `Err` naming every leak still there after the settle time (returns
    /// at once when there is none).
    pub fn check(&self) -> Result<(), TestkitError> {
        let start = Instant::now();
        loop {
            let leaks = self.leaks();
            if leaks.is_empty() {
                return Ok(());
            }
            if start.elapsed() >= self.settle {
                return Err(TestkitError::Leaked {
                    scope: self.scope.clone(),
                    leaks: leaks.iter().map(ToString::to_string).collect(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Panics naming every leak; the scope is cleaned up either way.
    #[track_caller]
    pub fn assert_clean(self) {
        if let Err(e) = self.check() {
            panic!("{e}");
        }
    }
}

impl Drop for LeakCheck {
    fn drop(&mut self) {
        // Whatever a failed test left under the scope: unmount it (deepest
        // first), so the scope dir can go and the host stays clean.
        let mut leftover: Vec<PathBuf> = mountinfo::mounts_under(&self.scope)
            .unwrap_or_default()
            .into_iter()
            .map(|m| m.mount_point)
            .collect();
        leftover.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        leftover.dedup();
        for mount_point in leftover {
            if let Err(e) = unmount_robust(&mount_point) {
                eprintln!("testkit: leak check {}: {e}", self.scope.display());
            }
        }
        if let Err(e) = remove_dir_safely(&self.scope) {
            eprintln!("testkit: leak check: {e}");
        }
    }
}

fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}
