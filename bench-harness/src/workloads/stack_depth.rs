//! Container create/remove time against the depth of the image's layer
//! stack (1 to 127 image layers: Docker's limit of 128 lowers for the rw
//! layer). Drives the storage driver itself: per depth, create the init
//! and rw layers and mount (what `docker create` + start cost the driver),
//! then unmount and remove. Native has no layers, so no ratio: the rows
//! report absolute times.

use std::io;
use std::path::Path;
use std::time::Instant;

use storage_core::driver::{CreateOpts, Driver};

use super::{Outcome, Round, Workload};
use crate::scale::Scale;
use crate::stats::Latencies;

pub struct StackDepth;

const DEPTHS: [usize; 5] = [1, 8, 32, 64, 127];

fn runs(scale: Scale) -> usize {
    match scale {
        Scale::Tiny => 3,
        Scale::Small => 10,
        Scale::Full => 30,
    }
}

fn to_io(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl Workload for StackDepth {
    fn name(&self) -> &'static str {
        "stack-depth"
    }

    fn populate(&self, _image: &Path, _scale: Scale) -> io::Result<()> {
        Ok(())
    }

    fn run(&self, _root: &Path, _scale: Scale, _round: Round) -> io::Result<Vec<Outcome>> {
        // Only meaningful with a driver (see run_on_driver).
        Ok(Vec::new())
    }

    fn driver_level(&self) -> bool {
        true
    }

    fn run_on_driver(
        &self,
        driver: &dyn Driver,
        base: &str,
        scale: Scale,
    ) -> io::Result<Vec<Outcome>> {
        let deepest = *DEPTHS.last().expect("depths");
        // layer 1 is the base image layer; build the rest of the chain once.
        let mut chain = vec![base.to_string()];
        for depth in 2..=deepest {
            let id = format!("{base}-l{depth}");
            driver
                .create(
                    &id,
                    chain.last().map(String::as_str),
                    &CreateOpts::default(),
                )
                .map_err(to_io)?;
            chain.push(id);
        }
        let result = (|| {
            let mut outcomes = Vec::new();
            for depth in DEPTHS {
                let top = &chain[depth - 1];
                let mut create = Latencies::default();
                let mut remove = Latencies::default();
                let started = Instant::now();
                for run in 0..runs(scale) {
                    let init = format!("{base}-d{depth}-{run}-init");
                    let rw = format!("{base}-d{depth}-{run}");
                    let begun = Instant::now();
                    driver
                        .create_rw(&init, Some(top), &CreateOpts::default())
                        .map_err(to_io)?;
                    driver
                        .create_rw(&rw, Some(&init), &CreateOpts::default())
                        .map_err(to_io)?;
                    driver.get(&rw).map_err(to_io)?;
                    create.record(begun.elapsed());
                    let begun = Instant::now();
                    driver.put(&rw).map_err(to_io)?;
                    driver.remove(&rw).map_err(to_io)?;
                    driver.remove(&init).map_err(to_io)?;
                    remove.record(begun.elapsed());
                }
                let elapsed = started.elapsed();
                outcomes.push(Outcome {
                    label: format!("stack-depth/{depth}/create+mount"),
                    latencies: create,
                    bytes: 0,
                    elapsed,
                    page_cache_bytes: None,
                });
                outcomes.push(Outcome {
                    label: format!("stack-depth/{depth}/unmount+remove"),
                    latencies: remove,
                    bytes: 0,
                    elapsed,
                    page_cache_bytes: None,
                });
            }
            Ok(outcomes)
        })();
        for id in chain.iter().skip(1).rev() {
            let _ = driver.remove(id);
        }
        result
    }
}
