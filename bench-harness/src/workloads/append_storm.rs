//! Append storm: several writers append a small record to each of many
//! small lower files (logs, caches): one copy-up per file on overlay2.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;
use std::time::Instant;

use super::{Outcome, Round, Workload, write_file};
use crate::scale::Scale;
use crate::stats::Latencies;

pub struct AppendStorm;

const FILE_SIZE: u64 = 1024;
const RECORD: &[u8] = &[b'a'; 100];

fn path_of(root: &Path, index: usize) -> std::path::PathBuf {
    root.join(format!("storm/{:02x}/f{index}", index % 256))
}

impl Workload for AppendStorm {
    fn name(&self) -> &'static str {
        "append-storm"
    }

    fn populate(&self, image: &Path, scale: Scale) -> io::Result<()> {
        for bucket in 0..256 {
            std::fs::create_dir_all(image.join(format!("storm/{bucket:02x}")))?;
        }
        for index in 0..scale.small_files() {
            write_file(&path_of(image, index), FILE_SIZE)?;
        }
        Ok(())
    }

    fn run(&self, root: &Path, scale: Scale, round: Round) -> io::Result<Vec<Outcome>> {
        let share = round.share(scale.small_files());
        let files = share.len();
        let writers = scale.writers();
        let started = Instant::now();
        let per_writer: Vec<io::Result<Latencies>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..writers)
                .map(|writer| {
                    let mine = share.clone().skip(writer).step_by(writers);
                    scope.spawn(move || {
                        let mut latencies = Latencies::default();
                        for index in mine {
                            let begun = Instant::now();
                            let mut file =
                                OpenOptions::new().append(true).open(path_of(root, index))?;
                            file.write_all(RECORD)?;
                            drop(file);
                            latencies.record(begun.elapsed());
                        }
                        Ok(latencies)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("writer thread does not panic"))
                .collect()
        });
        let elapsed = started.elapsed();
        let mut latencies = Latencies::default();
        for result in per_writer {
            latencies.merge(&result?);
        }
        Ok(vec![Outcome {
            label: "append-storm".into(),
            latencies,
            bytes: (files * RECORD.len()) as u64,
            elapsed,
            page_cache_bytes: None,
        }])
    }
}
