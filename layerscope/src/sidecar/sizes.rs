//! Container rw-layer sizes, measured incrementally in the background:
//! one resumable walk per container, advanced a bounded number of
//! directory entries per tick, never a full walk per scrape. A container
//! is measured again when its rw dir's mtime/ctime changed (an entry was
//! added or removed at its top) or when its value is older than `max_age`
//! (files grown deeper in the tree). Counting follows moby's
//! `directory.Size` (every non-directory, hard links once), as
//! `storage_core::fsutil::directory_size` does.

use std::collections::{HashMap, HashSet};
use std::fs::{self, ReadDir};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// mtime and ctime of a directory, in nanoseconds.
type Stamp = (i128, i128);

fn stamp(dir: &Path) -> Option<Stamp> {
    let meta = fs::symlink_metadata(dir).ok()?;
    Some((
        i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
    ))
}

/// A walk in progress.
struct Walk {
    stamp: Option<Stamp>,
    stack: Vec<PathBuf>,
    current: Option<ReadDir>,
    seen: HashSet<(u64, u64)>,
    total: u64,
}

impl Walk {
    fn new(dir: &Path) -> Walk {
        Walk {
            stamp: stamp(dir),
            stack: vec![dir.to_path_buf()],
            current: None,
            seen: HashSet::new(),
            total: 0,
        }
    }

    /// Advances by at most `budget` entries; returns the entries used and
    /// whether the walk is done.
    fn step(&mut self, budget: usize) -> (usize, bool) {
        let mut used = 0;
        while used < budget {
            let Some(current) = self.current.as_mut() else {
                match self.stack.pop() {
                    // A directory that vanished or cannot be read counts 0.
                    Some(dir) => self.current = fs::read_dir(&dir).ok(),
                    None => return (used, true),
                }
                used += 1;
                continue;
            };
            match current.next() {
                None => self.current = None,
                Some(Err(_)) => self.current = None,
                Some(Ok(entry)) => {
                    used += 1;
                    let Ok(meta) = entry.metadata() else { continue };
                    if meta.is_dir() {
                        self.stack.push(entry.path());
                    } else if meta.nlink() <= 1 || self.seen.insert((meta.dev(), meta.ino())) {
                        self.total += meta.size();
                    }
                }
            }
        }
        (used, false)
    }
}

struct Entry {
    dir: PathBuf,
    size: Option<u64>,
    stamp: Option<Stamp>,
    measured: Option<Instant>,
    walk: Option<Walk>,
}

impl Entry {
    fn needs_walk(&self, now: Instant, max_age: Duration) -> bool {
        match self.measured {
            None => true,
            Some(at) => now.duration_since(at) >= max_age || stamp(&self.dir) != self.stamp,
        }
    }
}

/// Sizes of the live containers' rw dirs, by container id.
pub struct SizeCache {
    entries: HashMap<String, Entry>,
    max_age: Duration,
}

impl SizeCache {
    pub fn new(max_age: Duration) -> SizeCache {
        SizeCache {
            entries: HashMap::new(),
            max_age,
        }
    }

    /// Follows the live set: new containers are added (unmeasured),
    /// removed ones forgotten, a changed rw dir measured afresh.
    pub fn sync<'a>(&mut self, live: impl IntoIterator<Item = (&'a str, &'a Path)>) {
        let mut keep = HashSet::new();
        for (id, dir) in live {
            keep.insert(id.to_string());
            match self.entries.get_mut(id) {
                Some(entry) if entry.dir == dir => {}
                _ => {
                    self.entries.insert(
                        id.to_string(),
                        Entry {
                            dir: dir.to_path_buf(),
                            size: None,
                            stamp: None,
                            measured: None,
                            walk: None,
                        },
                    );
                }
            }
        }
        self.entries.retain(|id, _| keep.contains(id));
    }

    /// Spends at most `budget` directory entries on walks: unfinished
    /// walks first, then never-measured containers, then stale ones.
    /// Returns the entries used.
    pub fn refresh(&mut self, budget: usize) -> usize {
        let now = Instant::now();
        let max_age = self.max_age;
        let mut order: Vec<(u8, Option<Instant>, String)> = self
            .entries
            .iter()
            .filter_map(|(id, e)| {
                let rank = if e.walk.is_some() {
                    0
                } else if e.measured.is_none() {
                    1
                } else if e.needs_walk(now, max_age) {
                    2
                } else {
                    return None;
                };
                Some((rank, e.measured, id.clone()))
            })
            .collect();
        order.sort();
        let mut used = 0;
        for (_, _, id) in order {
            if used >= budget {
                break;
            }
            let entry = self.entries.get_mut(&id).expect("listed above");
            let walk = entry.walk.get_or_insert_with(|| Walk::new(&entry.dir));
            let (spent, done) = walk.step(budget - used);
            used += spent;
            if done {
                let walk = entry.walk.take().expect("walk in progress");
                entry.size = walk.stamp.map(|_| walk.total);
                entry.stamp = walk.stamp;
                entry.measured = Some(Instant::now());
            }
        }
        used
    }

    /// Records a size measured elsewhere (the Docker root reader walks
    /// every rw dir) for a container not measured yet.
    pub fn seed(&mut self, id: &str, size: u64) {
        if let Some(entry) = self.entries.get_mut(id) {
            if entry.measured.is_none() && entry.walk.is_none() {
                entry.stamp = stamp(&entry.dir);
                entry.size = Some(size);
                entry.measured = Some(Instant::now());
            }
        }
    }

    /// The last completed measurement of container `id`'s rw dir.
    pub fn get(&self, id: &str) -> Option<u64> {
        self.entries.get(id).and_then(|e| e.size)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_within_budget_and_follows_changes() {
        let dir = tempfile::tempdir().unwrap();
        let rw = dir.path().join("rw");
        fs::create_dir_all(rw.join("a/b")).unwrap();
        fs::write(rw.join("one"), [0u8; 100]).unwrap();
        fs::write(rw.join("a/b/two"), [0u8; 20]).unwrap();
        fs::hard_link(rw.join("one"), rw.join("a/link")).unwrap();
        let mut cache = SizeCache::new(Duration::from_secs(3600));
        cache.sync([("c1", rw.as_path())]);
        assert_eq!(cache.get("c1"), None);
        // One entry per call: the walk resumes where it stopped.
        let mut calls = 0;
        while cache.get("c1").is_none() {
            assert!(cache.refresh(1) <= 1, "over budget");
            calls += 1;
            assert!(calls < 100);
        }
        assert!(calls > 3);
        assert_eq!(cache.get("c1"), Some(120));
        assert_eq!(cache.refresh(1000), 0, "nothing changed: no walk");
        fs::write(rw.join("three"), [0u8; 5]).unwrap();
        cache.refresh(1000);
        assert_eq!(cache.get("c1"), Some(125));
        cache.sync(std::iter::empty());
        assert_eq!(cache.len(), 0);
    }
}
