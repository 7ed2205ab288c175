//! The page-cache sharing picture: [`PageCacheReport`] joins the tracer's
//! per-inode page counts (added minus deleted while traced) with the
//! per-cgroup reads, maps cgroups to containers ([`Attribution`]), and says
//! for every file read by more than one container how many bytes are cached
//! once and how many a copy per container would have cost on top
//! (`saved_bytes = cached_bytes * (readers - 1)`). Ground truth for one
//! file is `cachestat(2)` ([`cached_bytes_of`]).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    os::fd::AsFd as _,
    path::Path,
};

use crate::{attribution::Attribution, sys, tracer::OverlayTracer};

/// Bytes per page on this machine.
pub fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(4096)
}

/// One file in the page cache, as traced.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileSharing {
    /// Kernel dev_t of its filesystem.
    pub dev: u32,
    /// Inode number.
    pub ino: u64,
    /// Bytes it holds in the page cache (added minus deleted while traced).
    pub cached_bytes: u64,
    /// Containers (or `host`) that read it, sorted.
    pub readers: Vec<String>,
    /// Bytes looked up per container (mm_filemap_get_pages): at least the
    /// bytes read, more when a readahead miss is looked up again.
    pub read_bytes: BTreeMap<String, u64>,
    /// `cached_bytes * (readers - 1)`: what per-container copies would add.
    pub saved_bytes: u64,
}

/// The whole picture.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PageCacheReport {
    /// Files read by at least one container, largest cache first.
    pub files: Vec<FileSharing>,
    /// Bytes each container brought into the page cache.
    pub added_bytes: BTreeMap<String, u64>,
}

impl PageCacheReport {
    /// Builds the report from the tracer's maps.
    pub fn collect(tracer: &OverlayTracer) -> Self {
        let attribution = tracer.lock_registry().attribution().clone();
        Self::build(
            &tracer.page_cache_inodes(),
            &tracer.page_cache_cgroups(),
            &attribution,
            page_size(),
        )
    }

    /// Builds from raw map contents (`[dev, ino] -> [added, deleted]` and
    /// `[dev, ino, cgroup] -> [added, read]`, in pages).
    pub fn build(
        inodes: &[([u64; 2], [u64; 2])],
        cgroups: &[([u64; 3], [u64; 2])],
        attribution: &Attribution,
        page: u64,
    ) -> Self {
        let paths = attribution.cgroup_paths();
        let known = attribution.container_ids();
        let mut container_of = HashMap::new();
        let mut name = |cgroup: u64| -> String {
            container_of
                .entry(cgroup)
                .or_insert_with(|| match paths.get(&cgroup) {
                    Some(path) => attribution.container_of_cgroup(path, &known),
                    None => crate::attribution::HOST.to_owned(),
                })
                .clone()
        };
        let mut added_bytes = BTreeMap::new();
        let mut readers: HashMap<[u64; 2], BTreeMap<String, u64>> = HashMap::new();
        for ([dev, ino, cgroup], [added, read]) in cgroups {
            let who = name(*cgroup);
            *added_bytes.entry(who.clone()).or_insert(0) += added * page;
            if *read > 0 {
                *readers
                    .entry([*dev, *ino])
                    .or_default()
                    .entry(who)
                    .or_insert(0) += read * page;
            }
        }
        let cached: HashMap<[u64; 2], u64> = inodes
            .iter()
            .map(|(key, [added, deleted])| (*key, added.saturating_sub(*deleted) * page))
            .collect();
        let mut files: Vec<FileSharing> = readers
            .into_iter()
            .map(|(key, read_bytes)| {
                let cached_bytes = cached.get(&key).copied().unwrap_or(0);
                let readers: BTreeSet<String> = read_bytes.keys().cloned().collect();
                let n = readers.len() as u64;
                FileSharing {
                    dev: u32::try_from(key[0] & 0xffff_ffff).unwrap_or(0),
                    ino: key[1],
                    cached_bytes,
                    saved_bytes: cached_bytes * n.saturating_sub(1),
                    readers: readers.into_iter().collect(),
                    read_bytes,
                }
            })
            .collect();
        files.sort_by(|a, b| b.cached_bytes.cmp(&a.cached_bytes).then(a.ino.cmp(&b.ino)));
        Self { files, added_bytes }
    }

    /// The entry of one file.
    pub fn file(&self, dev: u32, ino: u64) -> Option<&FileSharing> {
        self.files.iter().find(|f| f.dev == dev && f.ino == ino)
    }
}

/// Ground truth: bytes of `path` resident in the page cache (cachestat(2)).
pub fn cached_bytes_of(path: &Path) -> std::io::Result<u64> {
    let file = std::fs::File::open(path)?;
    let stat = sys::cachestat(file.as_fd(), 0, 0)?;
    Ok(stat.nr_cache * page_size())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_readers_one_copy() {
        let inodes = [([7u64, 42], [16384u64, 0])];
        let cgroups: Vec<([u64; 3], [u64; 2])> = (0..4)
            .map(|c| ([7, 42, 1000 + c], [if c == 0 { 16384 } else { 0 }, 16384]))
            .collect();
        // Unknown cgroups are all `host`: one reader.
        let report = PageCacheReport::build(&inodes, &cgroups, &Attribution::default(), 4096);
        let file = report.file(7, 42).expect("file");
        assert_eq!(file.cached_bytes, 64 << 20);
        assert_eq!(file.readers, vec!["host".to_owned()]);
        assert_eq!(file.saved_bytes, 0);
    }
}
