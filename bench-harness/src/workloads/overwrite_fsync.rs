//! Random 4 KiB overwrites, each followed by fdatasync, in one large lower
//! file (a database): the first write copies the whole file up on overlay2;
//! every later one is a plain overwrite of the upper copy.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use super::{Outcome, Workload, write_file};
use crate::scale::Scale;
use crate::stats::Latencies;

pub struct OverwriteFsync;

const BLOCK: u64 = 4096;
const FILE: &str = "database.db";

impl Workload for OverwriteFsync {
    fn name(&self) -> &'static str {
        "overwrite-fsync"
    }

    fn populate(&self, image: &Path, scale: Scale) -> io::Result<()> {
        write_file(&image.join(FILE), scale.overwrite_file().0)
    }

    fn run(&self, root: &Path, scale: Scale) -> io::Result<Vec<Outcome>> {
        let (size, writes) = scale.overwrite_file();
        let blocks = size / BLOCK;
        let page = [0x5Au8; BLOCK as usize];
        let mut latencies = Latencies::default();
        let started = Instant::now();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(root.join(FILE))?;
        // A fixed seed: every target overwrites the same blocks.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..writes {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let offset = (state % blocks) * BLOCK;
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
