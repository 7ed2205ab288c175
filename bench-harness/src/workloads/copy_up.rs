//! Copy-up latency by file size: the first append to each lower file. On
//! overlay2 the writer waits while the whole file is copied to the upper
//! layer; on native the append is just an append.
//!
//! Each round starts with one untimed append to a small file of its own:
//! the round follows another target's (whose large copy-ups and sync leave
//! this target's caches cold), and without it the first timed operation,
//! the 4 KiB one, paid for that: native's 4 KiB append took 30 µs against
//! 12 µs for every other size.

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

fn warm_up_name(round: usize) -> String {
    format!("copy-up-warm-up-{round}")
}

const WARM_UP_SIZE: u64 = 4096;

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
        for round in 0..scale.rounds() {
            write_file(&image.join(warm_up_name(round)), WARM_UP_SIZE)?;
        }
        Ok(())
    }

    fn run(&self, root: &Path, scale: Scale, round: Round) -> io::Result<Vec<Outcome>> {
        append_byte(&root.join(warm_up_name(round.index)))?;
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
        append_byte(&path)?;
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

/// Opens `path` for appending (a copy-up on overlay2), writes one byte and
/// closes it.
fn append_byte(path: &Path) -> io::Result<()> {
    let mut file = OpenOptions::new().append(true).open(path)?;
    file.write_all(b"x")
}
