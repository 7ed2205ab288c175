//! One benchmark run: every target (each on a fresh loop-backed filesystem
//! of the same size) times every workload, `repeat` times, and the results
//! are compared to native measured in the same run. File workloads run on
//! all targets at once, round by round (`interleave.rs`); driver-level
//! ones one target after the other.

use std::path::PathBuf;
use std::time::Instant;

use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::BenchError;
use crate::interleave::{Lane, run_rounds, workload_error};
use crate::memory_hold::MemoryHold;
use crate::probes::{ProbeCounters, Probes};
use crate::report::{ResultRow, Results, Unavailable};
use crate::scale::Scale;
use crate::target::{Stack, Target};
use crate::workloads;

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
    /// Hold the VM's memory agents off for the run (`memory_hold.rs`);
    /// false leaves the machine as it is (`--no-memory-hold`).
    pub hold_memory: bool,
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
        crate::docker::skipped_workloads(&workload_list, config.scale)
    };
    // Before anything is measured (see `memory_hold.rs`); restored when
    // `memory` drops, on every way out of this function.
    let memory = if config.hold_memory {
        MemoryHold::take(config.scale.memory_bytes())
    } else {
        MemoryHold::none("left as is (--no-memory-hold)")
    };
    eprintln!("bench: memory: {}", memory.describe());
    // The timed passes run without the tracer: attached, its syscall and
    // filesystem hooks add microseconds to every operation, more in some
    // stretches than in others (native's 15 µs append measured 15 to 37 µs
    // across repeats with it, 13 to 20 µs without). One more pass with the
    // tracer attached counts the overlayfs work of every workload and
    // target; its timings are dropped.
    let timed_passes = config.repeat.max(1);
    let passes = timed_passes + usize::from(!config.no_probes);
    let steps = targets.len() * workload_list.len() * passes
        + crate::docker::steps(
            &docker_plans,
            &workload_list,
            config.scale,
            config.repeat,
            !config.no_probes,
        );
    let mut step = 0;
    let mut rows = Vec::new();
    let started = Instant::now();

    let mut probes = Probes::disabled(if config.no_probes {
        "--no-probes"
    } else {
        "the timed passes"
    });
    let mut unavailable = Vec::new();
    // Every target's filesystem first, alive for the whole run; then per
    // repeat and workload every target's stack, and the workload on all of
    // them round by round (`interleave.rs`), so a target's measurement
    // and native's come from the same stretch of time.
    let mut filesystems = Vec::with_capacity(targets.len());
    for target in &targets {
        filesystems.push(Some(
            target.filesystem(&config.scratch_dir, config.scale.filesystem_bytes())?,
        ));
    }
    for repeat in 0..passes {
        if repeat == timed_passes {
            probes = Probes::start();
        }
        for workload in &workload_list {
            let workload = workload.as_ref();
            // Nothing for the tracer to count: stack-depth builds layers,
            // page-cache's containers only read.
            if repeat == timed_passes
                && (workload.driver_level() || workload.containers(config.scale) > 1)
            {
                step += targets.len();
                continue;
            }
            // Stacks first (a target the kernel cannot run is listed with
            // its reason and dropped from the run).
            let label = format!("{}-{repeat}", workload.name());
            let mut stacks = Vec::new();
            for (index, target) in targets.iter().enumerate() {
                check_interrupted()?;
                step += 1;
                let Some(fs) = filesystems[index].as_ref() else {
                    continue; // unavailable, said once
                };
                progress(&Progress {
                    step,
                    steps,
                    target: target.name.to_string(),
                    workload: workload.name().to_string(),
                    repeat,
                });
                match Stack::new(*target, fs, &label) {
                    Ok(stack) => stacks.push((index, stack)),
                    Err(BenchError::Unavailable { target: name, why }) => {
                        unavailable.push(Unavailable { target: name, why });
                        if let Some(fs) = filesystems[index].take() {
                            cleanup_filesystem(target, fs)?;
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            if workload.driver_level() {
                // Layers and containers, not only files: one target at a
                // time, each on its own driver.
                for (index, stack) in stacks {
                    let fs = filesystems[index].as_ref().expect("kept above");
                    rows.extend(run_driver_level(
                        &targets[index],
                        fs,
                        stack,
                        workload,
                        config.scale,
                        repeat,
                        &probes,
                    )?);
                }
                continue;
            }
            let mut lanes = Vec::with_capacity(stacks.len());
            for (index, stack) in stacks {
                let fs = filesystems[index].as_ref().expect("kept above");
                lanes.push(Lane::set_up(
                    &targets[index],
                    fs,
                    stack,
                    workload,
                    config.scale,
                )?);
            }
            rows.extend(run_rounds(lanes, workload, config.scale, repeat, &probes)?);
        }
    }
    for (target, fs) in targets.iter().zip(filesystems) {
        if let Some(fs) = fs {
            cleanup_filesystem(target, fs)?;
        }
    }
    let mut rows = with_counted_probes(rows, timed_passes);
    // Detached before the docker part, whose timed runs go without it too.
    let probe_strategy = probes.describe();
    drop(probes);
    let mut docker = crate::docker::DockerOutcome::default();
    if !docker_plans.is_empty() {
        docker = crate::docker::run(
            config,
            &docker_plans,
            &workload_list,
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
    results.probe_strategy = probe_strategy;
    results.memory_hold = memory.describe().to_string();
    Ok(results)
}

/// The rows of the timed passes (`repeat < timed_passes`), each given the
/// probe counters of the counting pass (`repeat == timed_passes`) for the
/// same workload and target.
pub(crate) fn with_counted_probes(rows: Vec<ResultRow>, timed_passes: usize) -> Vec<ResultRow> {
    let (counted, mut timed): (Vec<_>, Vec<_>) =
        rows.into_iter().partition(|row| row.repeat >= timed_passes);
    for row in &mut timed {
        row.probes = counted
            .iter()
            .find(|c| c.workload == row.workload && c.target == row.target)
            .and_then(|c| c.probes.clone());
    }
    timed
}

/// Every target's filesystem lives for the whole run; what a workload
/// wrote and removed would otherwise stay allocated in its loop file, and
/// nine targets at full scale would need the sum of their peaks on the
/// host's disk. FITRIM punches the freed blocks out of the loop file
/// (outside any timing). A filesystem that cannot trim keeps its blocks.
pub(crate) fn give_back_space(fs: &testkit::ScratchFs) {
    if fs.fs_kind() == testkit::FsKind::Btrfs && less_than_half_free(fs.path()) {
        // A deleted subvolume's blocks are freed later by btrfs's cleaner
        // thread, often 20 s later; without waiting, a few repeats of a
        // workload fill the filesystem with snapshots still being deleted
        // (ENOSPC). Waited for only when space runs short.
        wait_for_btrfs_cleaner(fs.path());
    }
    if let Err(e) = storage_core::sys::trim::trim(fs.path()) {
        tracing::debug!("trim {}: {e}", fs.path().display());
    }
}

/// A driver-level workload (stack depth) on one target; native, which has
/// no driver, runs the file part of it in one round, through the same lane
/// as a file workload.
fn run_driver_level(
    target: &Target,
    fs: &testkit::ScratchFs,
    stack: Stack,
    workload: &dyn workloads::Workload,
    scale: crate::scale::Scale,
    repeat: usize,
    probes: &Probes,
) -> Result<Vec<ResultRow>, BenchError> {
    let outcomes = match stack.driver() {
        Some((driver, base)) => workload
            .run_on_driver(driver, base, scale)
            .map_err(|e| workload_error(workload, target, e))?,
        None => {
            let mut lane = Lane::set_up(target, fs, stack, workload, scale)?;
            lane.run_round(workload, scale, workloads::Round::WHOLE, probes)?;
            return lane.finish(repeat);
        }
    };
    stack.finish()?;
    give_back_space(fs);
    Ok(outcomes
        .into_iter()
        .map(|outcome| row_of(&RowTarget::of(target), outcome, repeat, None, None))
        .collect())
}

fn less_than_half_free(path: &std::path::Path) -> bool {
    nix::sys::statvfs::statvfs(path).is_ok_and(|stat| stat.blocks_available() < stat.blocks() / 2)
}

/// `btrfs subvolume sync`: returns once every deleted subvolume of the
/// filesystem at `path` is gone (btrfs-progs, installed by `xtask deps`).
fn wait_for_btrfs_cleaner(path: &std::path::Path) {
    match std::process::Command::new("btrfs")
        .args(["subvolume", "sync"])
        .arg(path)
        .stdout(std::process::Stdio::null())
        .status()
    {
        Ok(status) if status.success() => {}
        outcome => tracing::debug!("btrfs subvolume sync {}: {outcome:?}", path.display()),
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
    pub(crate) fn of(target: &Target) -> Self {
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
        rounds: Vec::new(),
    }
}
