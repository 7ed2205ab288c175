//! One benchmark run: every target (each on a fresh loop-backed filesystem
//! of the same size) times every workload, `repeat` times, and the results
//! are compared to native measured in the same run.

use std::path::PathBuf;
use std::time::Instant;

use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::BenchError;
use crate::probes::{ProbeCounters, Probes};
use crate::report::{ResultRow, Results, Unavailable};
use crate::scale::Scale;
use crate::stats::device_bytes_written;
use crate::target::{Stack, Target};
use crate::workloads::{self, sync_filesystem};

#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub targets: Vec<String>,
    pub workloads: Vec<String>,
    pub scale: Scale,
    pub repeat: usize,
    pub out: PathBuf,
    /// Run without the BPF tracer (to measure what attaching it costs).
    pub no_probes: bool,
    /// Docker storage drivers (overlay2, vfs, btrfs) to measure in real
    /// containers of a private dockerd each (`--docker`); empty: none.
    pub docker_drivers: Vec<String>,
    /// Where every loop-backed filesystem (and dockerd's dir) is made.
    pub scratch_dir: PathBuf,
}

/// A line of progress, for a progress bar or `--json` CI logs.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    pub step: usize,
    pub steps: usize,
    pub target: String,
    pub workload: String,
    pub repeat: usize,
}

/// Set by Ctrl-C (SIGINT) or SIGTERM: the run stops before the next step
/// and returns [`BenchError::Interrupted`], so every scratch filesystem,
/// mount and loop device is torn down by its owner's `Drop`.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Installs the Ctrl-C handler once per process; a second Ctrl-C while
/// cleaning up is ignored, so cleanup is never cut short.
fn catch_interrupts() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if !INTERRUPTED.swap(true, Ordering::SeqCst) {
                eprintln!("\nbench: interrupted, cleaning up");
            }
        });
    });
}

/// Whether Ctrl-C (or SIGTERM) arrived.
pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

pub(crate) fn check_interrupted() -> Result<(), BenchError> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err(BenchError::Interrupted)
    } else {
        Ok(())
    }
}

pub fn run_bench(
    config: &BenchConfig,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Results, BenchError> {
    catch_interrupts();
    let targets = config
        .targets
        .iter()
        .map(|name| Target::by_name(name))
        .collect::<Result<Vec<_>, _>>()?;
    let workload_list = config
        .workloads
        .iter()
        .map(|name| workloads::by_name(name))
        .collect::<Result<Vec<_>, _>>()?;
    let docker_plans = if config.docker_drivers.is_empty() {
        Vec::new()
    } else {
        // Fail before measuring anything when Docker is not installed.
        crate::docker::check_installed()?;
        crate::docker::plans(&config.docker_drivers)?
    };
    let skipped = if docker_plans.is_empty() {
        Vec::new()
    } else {
        crate::docker::skipped_workloads(&workload_list)
    };
    let steps = targets.len() * workload_list.len() * config.repeat.max(1)
        + crate::docker::steps(&docker_plans, &workload_list, config.repeat);
    let mut step = 0;
    let mut rows = Vec::new();
    let started = Instant::now();

    let probes = if config.no_probes {
        Probes::disabled("--no-probes")
    } else {
        Probes::start()
    };
    let mut unavailable = Vec::new();
    // Every target's filesystem first, then the loops run repeat ->
    // workload -> target: each target's measurement sits next to native's
    // in time, so a ratio compares like with like even when the machine's
    // state (writeback, caches, other load) drifts during a long run.
    let mut filesystems = Vec::with_capacity(targets.len());
    for target in &targets {
        filesystems.push(Some(
            target.filesystem(&config.scratch_dir, config.scale.filesystem_bytes())?,
        ));
    }
    for repeat in 0..config.repeat.max(1) {
        for workload in &workload_list {
            for (target, slot) in targets.iter().zip(filesystems.iter_mut()) {
                check_interrupted()?;
                step += 1;
                let Some(fs) = slot.as_ref() else {
                    continue; // unavailable, said once
                };
                progress(&Progress {
                    step,
                    steps,
                    target: target.name.to_string(),
                    workload: workload.name().to_string(),
                    repeat,
                });
                let wl_error = |source: std::io::Error| BenchError::Workload {
                    workload: workload.name().to_string(),
                    target: target.name.to_string(),
                    source,
                };
                let label = format!("{}-{repeat}", workload.name());
                let mut stack = match Stack::new(*target, fs, &label) {
                    Ok(stack) => stack,
                    Err(BenchError::Unavailable { target: name, why }) => {
                        // Listed with its reason; the run goes on without it.
                        unavailable.push(Unavailable { target: name, why });
                        if let Some(fs) = slot.take() {
                            cleanup_filesystem(target, fs)?;
                        }
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                if workload.driver_level()
                    && let Some((driver, base)) = stack.driver()
                {
                    // Layers and containers, not only files.
                    let outcomes = workload
                        .run_on_driver(driver, base, config.scale)
                        .map_err(wl_error)?;
                    rows.extend(outcomes.into_iter().map(|outcome| {
                        row_of(&RowTarget::of(target), outcome, repeat, None, None)
                    }));
                    stack.finish()?;
                    give_back_space(fs);
                    continue;
                }
                let image = stack.image_root()?;
                workload.populate(&image, config.scale).map_err(wl_error)?;
                // Synced after the container layer exists: vfs, btrfs and
                // aufs copy or snapshot at create time, which is not the
                // workload's writing (stack-depth measures creation), and
                // docker mode counts from `docker start` the same way.
                let root = stack.container_root()?;
                sync_filesystem(fs.path()).map_err(wl_error)?;
                let written_before = fs.device().and_then(device_bytes_written);
                let probes_before = probes.totals();
                let outcomes = workload.run(&root, config.scale).map_err(wl_error)?;
                sync_filesystem(fs.path()).map_err(wl_error)?;
                let written_after = fs.device().and_then(device_bytes_written);
                let probe_counters = probes_before
                    .zip(probes.totals())
                    .map(|(before, after)| ProbeCounters::between(&before, &after));
                let device_bytes = written_before
                    .zip(written_after)
                    .map(|(before, after)| after.saturating_sub(before));
                stack.finish()?;
                give_back_space(fs);
                for outcome in outcomes {
                    rows.push(row_of(
                        &RowTarget::of(target),
                        outcome,
                        repeat,
                        device_bytes,
                        probe_counters.clone(),
                    ));
                }
            }
        }
    }
    for (target, fs) in targets.iter().zip(filesystems) {
        if let Some(fs) = fs {
            cleanup_filesystem(target, fs)?;
        }
    }
    let mut docker = crate::docker::DockerOutcome::default();
    if !docker_plans.is_empty() {
        docker = crate::docker::run(
            config,
            &docker_plans,
            &workload_list,
            &probes,
            &mut crate::docker::Steps {
                step: &mut step,
                steps,
                progress,
            },
            &mut rows,
        )?;
        unavailable.append(&mut docker.unavailable);
    }
    let mut results = Results::new(config, rows, started.elapsed());
    results.unavailable = unavailable;
    results.skipped = skipped;
    results.docker_version = docker.version;
    results.probe_strategy = probes.describe();
    Ok(results)
}

/// Every target's filesystem lives for the whole run; what a workload
/// wrote and removed would otherwise stay allocated in its loop file, and
/// nine targets at full scale would need the sum of their peaks on the
/// host's disk. FITRIM punches the freed blocks out of the loop file
/// (outside any timing). A filesystem that cannot trim keeps its blocks.
fn give_back_space(fs: &testkit::ScratchFs) {
    if let Err(e) = storage_core::sys::trim::trim(fs.path()) {
        tracing::debug!("trim {}: {e}", fs.path().display());
    }
}

fn cleanup_filesystem(target: &Target, fs: testkit::ScratchFs) -> Result<(), BenchError> {
    fs.cleanup().map_err(|e| BenchError::Setup {
        target: target.name.to_string(),
        what: e.to_string(),
    })
}

/// What a result row says about where it ran.
pub(crate) struct RowTarget {
    pub name: String,
    pub driver: String,
    pub filesystem: String,
}

impl RowTarget {
    fn of(target: &Target) -> Self {
        Self {
            name: target.name.to_string(),
            driver: target.driver_name().to_string(),
            filesystem: target.fs.fstype().to_string(),
        }
    }
}

/// A result row for one outcome of a workload run on `target`.
pub(crate) fn row_of(
    target: &RowTarget,
    outcome: workloads::Outcome,
    repeat: usize,
    device_bytes_written: Option<u64>,
    probes: Option<ProbeCounters>,
) -> ResultRow {
    let seconds = outcome.elapsed.as_secs_f64();
    let ops = outcome.latencies.count();
    ResultRow {
        target: target.name.clone(),
        driver: target.driver.clone(),
        filesystem: target.filesystem.clone(),
        workload: outcome.label,
        repeat,
        latency: outcome.latencies.summary(),
        ops,
        elapsed_seconds: seconds,
        ops_per_second: if seconds > 0.0 {
            ops as f64 / seconds
        } else {
            0.0
        },
        bytes_written: outcome.bytes,
        device_bytes_written,
        probes,
        page_cache_bytes: outcome.page_cache_bytes,
    }
}
