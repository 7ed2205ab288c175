//! Copy-up latency by file size: the first append to each lower file. On
//! overlay2 the writer waits while the whole file is copied to the upper
//! layer; on native the append is just an append.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;
use std::time::Instant;

use super::{Outcome, Workload, human_size, write_file};
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

    fn run(&self, root: &Path, scale: Scale) -> io::Result<Vec<Outcome>> {
        let mut outcomes = Vec::new();
        for &size in scale.copy_up_sizes() {
            let mut latencies = Latencies::default();
            let started = Instant::now();
            for index in 0..scale.copy_up_files(size) {
                let path = root.join(name_of(size, index));
                let begun = Instant::now();
                let mut file = OpenOptions::new().append(true).open(&path)?;
                file.write_all(b"x")?;
                drop(file);
                latencies.record(begun.elapsed());
            }
            outcomes.push(Outcome {
                label: format!("copy-up/{}", human_size(size)),
                latencies,
                bytes: scale.copy_up_files(size) as u64,
                elapsed: started.elapsed(),
                page_cache_bytes: None,
            });
        }
        Ok(outcomes)
    }
}
