//! Create/delete storm: delete every lower file (a whiteout each on
//! overlay2) and create as many new 4 KiB files (straight into the upper
//! layer).

use std::io;
use std::path::Path;
use std::time::Instant;

use super::{Outcome, Round, Workload, write_file};
use crate::scale::Scale;
use crate::stats::Latencies;

pub struct CreateDelete;

const NEW_FILE_SIZE: u64 = 4096;

impl Workload for CreateDelete {
    fn name(&self) -> &'static str {
        "create-delete"
    }

    fn populate(&self, image: &Path, scale: Scale) -> io::Result<()> {
        std::fs::create_dir_all(image.join("churn"))?;
        for index in 0..scale.small_files() {
            write_file(&image.join(format!("churn/old{index}")), 1024)?;
        }
        Ok(())
    }

    fn run(&self, root: &Path, scale: Scale, round: Round) -> io::Result<Vec<Outcome>> {
        let mut deletes = Latencies::default();
        let mut creates = Latencies::default();
        let share = round.share(scale.small_files());
        let files = share.len() as u64;
        let started = Instant::now();
        for index in share {
            let begun = Instant::now();
            std::fs::remove_file(root.join(format!("churn/old{index}")))?;
            deletes.record(begun.elapsed());
            let begun = Instant::now();
            write_file(&root.join(format!("churn/new{index}")), NEW_FILE_SIZE)?;
            creates.record(begun.elapsed());
        }
        let elapsed = started.elapsed();
        Ok(vec![
            Outcome {
                label: "create-delete/delete".into(),
                latencies: deletes,
                bytes: 0,
                elapsed,
                page_cache_bytes: None,
            },
            Outcome {
                label: "create-delete/create".into(),
                latencies: creates,
                bytes: files * NEW_FILE_SIZE,
                elapsed,
                page_cache_bytes: None,
            },
        ])
    }
}
