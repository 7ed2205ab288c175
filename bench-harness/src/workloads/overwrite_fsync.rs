//! Random 4 KiB overwrites, each followed by fdatasync, in one large lower
//! file (a database): the first write copies the whole file up on overlay2;
//! every later one is a plain overwrite of the upper copy.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use super::{Outcome, Round, Workload, write_file};
use crate::scale::Scale;
use crate::stats::Latencies;

pub struct OverwriteFsync;

const BLOCK: u64 = 4096;
const FILE: &str = "database.db";

/// The block the `index`th write goes to: a fixed pseudo-random spread
/// (splitmix64 of the index), so every target, and every round split,
/// overwrites the same blocks.
fn block_of(index: u64, blocks: u64) -> u64 {
    let mut z = index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) % blocks
}

impl Workload for OverwriteFsync {
    fn name(&self) -> &'static str {
        "overwrite-fsync"
    }

    fn populate(&self, image: &Path, scale: Scale) -> io::Result<()> {
        write_file(&image.join(FILE), scale.overwrite_file().0)
    }

    fn run(&self, root: &Path, scale: Scale, round: Round) -> io::Result<Vec<Outcome>> {
        let (size, writes) = scale.overwrite_file();
        let share = round.share(writes);
        let writes = share.len();
        let blocks = size / BLOCK;
        let page = [0x5Au8; BLOCK as usize];
        let mut latencies = Latencies::default();
        let started = Instant::now();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(root.join(FILE))?;
        for index in share {
            let offset = block_of(index as u64, blocks) * BLOCK;
            let begun = Instant::now();
            file.write_all_at(&page, offset)?;
            file.sync_data()?;
            latencies.record(begun.elapsed());
        }
        Ok(vec![Outcome {
            label: "overwrite-fsync".into(),
            latencies,
            bytes: writes as u64 * BLOCK,
            elapsed: started.elapsed(),
            page_cache_bytes: None,
        }])
    }
}
