//! Metadata-only changes: chmod every file of a lower tree. Without
//! metacopy each chmod copies the whole file up; with metacopy only the
//! inode's metadata.

use std::fs::Permissions;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Instant;

use super::{Outcome, Round, Workload, write_file};
use crate::scale::Scale;
use crate::stats::Latencies;

pub struct ChmodTree;

/// Big enough that a data copy-up costs visibly more than metadata.
const FILE_SIZE: u64 = 64 * 1024;

impl Workload for ChmodTree {
    fn name(&self) -> &'static str {
        "chmod-tree"
    }

    fn populate(&self, image: &Path, scale: Scale) -> io::Result<()> {
        std::fs::create_dir_all(image.join("tree"))?;
        for index in 0..scale.small_files() / 4 {
            write_file(&image.join(format!("tree/f{index}")), FILE_SIZE)?;
        }
        Ok(())
    }

    fn run(&self, root: &Path, scale: Scale, round: Round) -> io::Result<Vec<Outcome>> {
        let mut latencies = Latencies::default();
        let started = Instant::now();
        for index in round.share(scale.small_files() / 4) {
            let begun = Instant::now();
            std::fs::set_permissions(
                root.join(format!("tree/f{index}")),
                Permissions::from_mode(0o600),
            )?;
            latencies.record(begun.elapsed());
        }
        Ok(vec![Outcome {
            label: "chmod-tree".into(),
            latencies,
            bytes: 0,
            elapsed: started.elapsed(),
            page_cache_bytes: None,
        }])
    }
}
