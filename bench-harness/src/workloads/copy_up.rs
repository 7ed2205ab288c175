//! Copy-up latency by file size: the first append to each lower file. On
//! overlay2 the writer waits while the whole file is copied to the upper
//! layer; on native the append is just an append.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;
use std::time::Instant;

use super::{Outcome, Round, Workload, human_size, write_file};
use crate::scale::Scale;
use crate::stats::Latencies;

pub struct CopyUp;

fn name_of(size: u64, index: usize) -> String {
    format!("copy-up-{size}-{index}")
}

impl Workload for CopyUp {
    fn name(&self) -> &'static str {
        "copy-up"
    }

    fn populate(&self, image: &Path, scale: Scale) -> io::Result<()> {
        for &size in scale.copy_up_sizes() {
            for index in 0..scale.copy_up_files(size) {
                write_file(&image.join(name_of(size, index)), size)?;
            }
        }
        Ok(())
    }

    fn run(&self, root: &Path, scale: Scale, round: Round) -> io::Result<Vec<Outcome>> {
        scale
            .copy_up_sizes()
            .iter()
            .map(|&size| copy_up_files(root, scale, size, round))
            .collect()
    }
}

/// Appends to `round`'s share of the lower files of `size` and times each.
fn copy_up_files(root: &Path, scale: Scale, size: u64, round: Round) -> io::Result<Outcome> {
    let mut latencies = Latencies::default();
    let share = round.share(scale.copy_up_files(size));
    let files = share.len() as u64;
    let started = Instant::now();
    for index in share {
        let path = root.join(name_of(size, index));
        let begun = Instant::now();
        let mut file = OpenOptions::new().append(true).open(&path)?;
        file.write_all(b"x")?;
        drop(file);
        latencies.record(begun.elapsed());
    }
    Ok(Outcome {
        label: format!("copy-up/{}", human_size(size)),
        latencies,
        bytes: files,
        elapsed: started.elapsed(),
        page_cache_bytes: None,
    })
}
