//! `--docker` mode: the same file workloads inside real containers of a
//! real dockerd, one private daemon per storage driver (overlay2, vfs,
//! btrfs), each on its own loop-backed filesystem (ext4; btrfs for btrfs),
//! so layerscope's driver-level numbers can be checked against what Docker
//! users see.
//!
//! Per daemon and workload, [`image`] loads a two-layer image (this
//! `layerscope` binary, then the workload's lower files under `/bench`);
//! each run creates a fresh container whose command is the hidden
//! `layerscope __bench-in-container` ([`in_container`]), which times the
//! workload's own operations and prints them as JSON, read back with
//! `docker logs`. The baseline `docker-volume` runs the same command on a
//! local volume of the ext4 daemon, filled with the same files. Rows are
//! `docker-<driver>` and `docker-volume`; ratios of `docker-*` targets are
//! to `docker-volume`.
//!
//! Cleanup is total: containers, volumes and images are removed after use;
//! daemons are stopped by pid (in their own process group, so Ctrl-C
//! reaches only the bench, which then stops them in order); their mounts,
//! the scratch filesystems and loop devices are released on every path.

pub mod image;
pub mod in_container;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use testkit::docker::{DaemonOptions, DockerDaemon};
use testkit::{FsKind, ScratchFs};

use crate::BenchError;
use crate::probes::{ProbeCounters, Probes};
use crate::report::{ResultRow, SkippedWorkload, Unavailable};
use crate::run::{
    BenchConfig, Progress, RowTarget, check_interrupted, interrupted, row_of, with_counted_probes,
};
use crate::scale::Scale;
use crate::stats::device_bytes_written;
use crate::workloads::{Workload, sync_filesystem};
use image::LayerTar;
use in_container::ContainerReport;

/// The storage drivers `--docker` measures.
pub const DOCKER_DRIVERS: &[&str] = &["overlay2", "vfs", "btrfs"];
/// The baseline target of `--docker` mode: a local volume.
pub const VOLUME_TARGET: &str = "docker-volume";

/// The layerscope target that measures the same driver on the same
/// filesystem as `docker-<driver>`.
pub fn layerscope_target(driver: &str) -> Option<&'static str> {
    match driver {
        "overlay2" => Some("overlay2-ext4"),
        "vfs" => Some("vfs-ext4"),
        "btrfs" => Some("btrfs"),
        _ => None,
    }
}

/// The row target of a docker driver.
pub fn target_name(driver: &str) -> String {
    format!("docker-{driver}")
}

/// Whether `workload` can run in docker mode: file workloads in one
/// container can; those that drive the storage driver itself (layers) or
/// work through several containers at once cannot.
pub fn supports(workload: &dyn Workload, scale: Scale) -> bool {
    !workload.driver_level() && workload.containers(scale) == 1
}

/// Fails naming the first program `--docker` needs that is not in PATH.
pub fn check_installed() -> Result<(), BenchError> {
    for (program, package) in [
        ("dockerd", "docker.io"),
        ("docker", "docker.io"),
        ("containerd", "containerd"),
        ("runc", "runc"),
    ] {
        if !in_path(program) {
            return Err(BenchError::DockerMissing { program, package });
        }
    }
    Ok(())
}

fn in_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// One private dockerd and what it measures.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub driver: &'static str,
    pub fs: FsKind,
    /// Runs the `docker-volume` baseline (on the first ext4 daemon).
    pub volume: bool,
    /// Runs `docker-<driver>` (false for a daemon started only for the
    /// baseline).
    pub measure_driver: bool,
}

impl Plan {
    fn targets(&self) -> Vec<Option<&'static str>> {
        let mut targets = Vec::new();
        if self.volume {
            targets.push(None);
        }
        if self.measure_driver {
            targets.push(Some(self.driver));
        }
        targets
    }
}

/// The daemons for `drivers`; the volume baseline goes on the first ext4
/// one (an extra overlay2 daemon when only btrfs was asked for), so it is
/// comparable with `native`.
pub fn plans(drivers: &[String]) -> Result<Vec<Plan>, BenchError> {
    let mut plans: Vec<Plan> = Vec::new();
    for name in drivers {
        let Some(driver) = DOCKER_DRIVERS.iter().copied().find(|d| d == name) else {
            return Err(BenchError::UnknownDockerDriver(name.clone()));
        };
        if plans.iter().any(|p| p.driver == driver) {
            continue;
        }
        let fs = if driver == "btrfs" {
            FsKind::Btrfs
        } else {
            FsKind::Ext4
        };
        let volume = fs == FsKind::Ext4 && !plans.iter().any(|p| p.volume);
        plans.push(Plan {
            driver,
            fs,
            volume,
            measure_driver: true,
        });
    }
    if !plans.iter().any(|p| p.volume) {
        plans.insert(
            0,
            Plan {
                driver: "overlay2",
                fs: FsKind::Ext4,
                volume: true,
                measure_driver: false,
            },
        );
    }
    Ok(plans)
}

/// Progress steps of `plans` over `workloads`: `repeat` timed runs per
/// target, and one counting run when `counting` (the tracer is wanted).
pub fn steps(
    plans: &[Plan],
    workloads: &[Box<dyn Workload>],
    scale: Scale,
    repeat: usize,
    counting: bool,
) -> usize {
    let runnable = workloads
        .iter()
        .filter(|w| supports(w.as_ref(), scale))
        .count();
    let passes = repeat.max(1) + usize::from(counting);
    plans.iter().map(|p| p.targets().len()).sum::<usize>() * runnable * passes
}

/// The progress counter shared with the driver-level part of the run.
pub struct Steps<'a> {
    pub step: &'a mut usize,
    pub steps: usize,
    pub progress: &'a mut dyn FnMut(&Progress),
}

/// What the docker part adds to the results besides rows.
#[derive(Debug, Default)]
pub struct DockerOutcome {
    pub unavailable: Vec<Unavailable>,
    /// dockerd's version.
    pub version: Option<String>,
}

fn setup(target: &str) -> impl Fn(String) -> BenchError + '_ {
    move |what| BenchError::Setup {
        target: target.to_string(),
        what,
    }
}

/// An error as Ctrl-C's when Ctrl-C came meanwhile (a docker CLI killed by
/// the terminal's SIGINT fails with its own message).
fn or_interrupted(e: BenchError) -> BenchError {
    if interrupted() {
        BenchError::Interrupted
    } else {
        e
    }
}

/// The workloads of `workloads` docker mode cannot run, each said on
/// stderr in one line (before anything runs).
pub fn skipped_workloads(workloads: &[Box<dyn Workload>], scale: Scale) -> Vec<SkippedWorkload> {
    let why = "it drives the storage driver itself (layers, several containers), \
               not files inside one container";
    workloads
        .iter()
        .filter(|w| !supports(w.as_ref(), scale))
        .map(|workload| {
            eprintln!(
                "bench: {} not supported in docker mode: {why}",
                workload.name()
            );
            SkippedWorkload {
                workload: workload.name().to_string(),
                mode: "docker".into(),
                why: why.into(),
            }
        })
        .collect()
}

/// Runs every plan: one daemon at a time, every runnable workload on each
/// of its targets, `repeat` times without the tracer, as the driver-level
/// passes are timed; then, unless `--no-probes`, once more per target with
/// the tracer attached, whose counters go to the timed rows and whose
/// timings are dropped. Rows go to `rows`.
pub fn run(
    config: &BenchConfig,
    plans: &[Plan],
    workloads: &[Box<dyn Workload>],
    steps: &mut Steps<'_>,
    rows: &mut Vec<ResultRow>,
) -> Result<DockerOutcome, BenchError> {
    let mut outcome = DockerOutcome::default();
    let timed_passes = config.repeat.max(1);
    let untraced = Probes::disabled("the timed passes");
    let counting = !config.no_probes;
    let mut docker_rows = Vec::new();
    let runnable: Vec<&dyn Workload> = workloads
        .iter()
        .map(|w| w.as_ref())
        .filter(|w| supports(*w, config.scale))
        .collect();
    let mut images = ImageBuilder::new(&config.scratch_dir)?;
    for plan in plans {
        let daemon_target = target_name(plan.driver);
        let fs = ScratchFs::new_direct_in(
            &config.scratch_dir,
            plan.fs,
            config.scale.filesystem_bytes(),
        )
        .map_err(|e| setup(&daemon_target)(e.to_string()))?;
        let daemon = match DockerDaemon::start_with(
            plan.driver,
            DaemonOptions {
                parent: Some(config.scratch_dir.clone()),
                data_root: Some(fs.path().join("docker")),
                own_process_group: true,
            },
        ) {
            Ok(daemon) => daemon,
            Err(e) if e.is_unavailable() => {
                for target in plan.targets() {
                    outcome.unavailable.push(Unavailable {
                        target: target.map_or(VOLUME_TARGET.to_string(), target_name),
                        why: e.to_string(),
                    });
                }
                *steps.step +=
                    plan.targets().len() * runnable.len() * (timed_passes + usize::from(counting));
                drop(fs);
                continue;
            }
            Err(e) => return Err(or_interrupted(setup(&daemon_target)(e.to_string()))),
        };
        if outcome.version.is_none() {
            outcome.version = daemon
                .run(&["version", "--format", "{{.Server.Version}}"])
                .ok();
        }
        let host = Host {
            config,
            daemon: &daemon,
            fs: &fs,
            plan,
        };
        for workload in &runnable {
            let tag = format!(
                "layerscope-bench/{}:{}",
                workload.name(),
                config.scale.name()
            );
            check_interrupted()?;
            let layers = images.layers(*workload, config)?;
            load_image(&daemon, &tag, &layers)
                .map_err(|e| or_interrupted(setup(&daemon_target)(e)))?;
            for target in plan.targets() {
                for repeat in 0..timed_passes {
                    docker_rows
                        .extend(host.step(*workload, &tag, target, repeat, &untraced, steps)?);
                }
            }
            if counting {
                let probes = Probes::start();
                if probes.running() {
                    for target in plan.targets() {
                        docker_rows.extend(host.step(
                            *workload,
                            &tag,
                            target,
                            timed_passes,
                            &probes,
                            steps,
                        )?);
                    }
                } else {
                    *steps.step += plan.targets().len();
                }
            }
            daemon
                .run(&["rmi", "-f", &tag])
                .map_err(|e| or_interrupted(setup(&daemon_target)(e.to_string())))?;
        }
        daemon
            .cleanup()
            .map_err(|e| setup(&daemon_target)(e.to_string()))?;
        fs.cleanup()
            .map_err(|e| setup(&daemon_target)(e.to_string()))?;
    }
    rows.extend(with_counted_probes(docker_rows, timed_passes));
    Ok(outcome)
}

/// The layer tars, built once per run in a work dir of their own and
/// loaded into every daemon.
struct ImageBuilder {
    work: tempfile::TempDir,
    binary: Option<LayerTar>,
    workloads: HashMap<&'static str, LayerTar>,
}

impl ImageBuilder {
    fn new(parent: &Path) -> Result<Self, BenchError> {
        let work = tempfile::Builder::new()
            .prefix("layerscope-bench-image-")
            .tempdir_in(parent)
            .map_err(|source| BenchError::Io {
                op: "create image work dir in",
                path: parent.to_path_buf(),
                source,
            })?;
        Ok(Self {
            work,
            binary: None,
            workloads: HashMap::new(),
        })
    }

    fn io(&self, op: &'static str) -> impl Fn(std::io::Error) -> BenchError + '_ {
        move |source| BenchError::Io {
            op,
            path: self.work.path().to_path_buf(),
            source,
        }
    }

    /// The binary layer and `workload`'s layer, built on first use.
    fn layers(
        &mut self,
        workload: &dyn Workload,
        config: &BenchConfig,
    ) -> Result<[LayerTar; 2], BenchError> {
        if self.binary.is_none() {
            let exe = std::env::current_exe().map_err(self.io("find this binary for"))?;
            let layer =
                image::binary_layer(&exe, self.work.path()).map_err(self.io("build layer in"))?;
            self.binary = Some(layer);
        }
        if !self.workloads.contains_key(workload.name()) {
            let tree = self.work.path().join(format!("{}-tree", workload.name()));
            std::fs::create_dir_all(&tree).map_err(self.io("create tree in"))?;
            workload
                .populate(&tree, config.scale)
                .map_err(self.io("populate tree in"))?;
            let out = self
                .work
                .path()
                .join(format!("layer-{}.tar", workload.name()));
            let layer = image::tree_layer(&tree, &out).map_err(self.io("build layer in"))?;
            storage_core::fsutil::remove_all(&tree).map_err(self.io("remove tree in"))?;
            self.workloads.insert(workload.name(), layer);
        }
        Ok([
            self.binary.clone().expect("built above"),
            self.workloads[workload.name()].clone(),
        ])
    }
}

/// `docker load` of a save archive of `layers`, streamed to its stdin.
fn load_image(daemon: &DockerDaemon, tag: &str, layers: &[LayerTar]) -> Result<(), String> {
    let mut child = daemon
        .command(&["load", "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run docker load: {e}"))?;
    let stdin = child.stdin.take().expect("piped stdin");
    let refs: Vec<&LayerTar> = layers.iter().collect();
    let (written, output) = std::thread::scope(|scope| {
        let writer = scope.spawn(move || {
            let mut stdin = std::io::BufWriter::new(stdin);
            image::write_save_archive(&mut stdin, tag, &refs)?;
            stdin.flush()
        });
        let output = child.wait_with_output();
        (writer.join().expect("writer does not panic"), output)
    });
    let output = output.map_err(|e| format!("docker load: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "docker load of {tag} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    written.map_err(|e| format!("write image {tag} to docker load: {e}"))
}

/// One daemon and its filesystem, while a plan runs.
struct Host<'a> {
    config: &'a BenchConfig,
    daemon: &'a DockerDaemon,
    fs: &'a ScratchFs,
    plan: &'a Plan,
}

/// Removes a container (and its volume) when dropped, also on errors.
struct Cleanup<'a> {
    daemon: &'a DockerDaemon,
    container: Option<String>,
    volume: Option<String>,
}

impl Cleanup<'_> {
    fn finish(mut self) -> Result<(), String> {
        let mut errors = Vec::new();
        if let Some(id) = self.container.take()
            && let Err(e) = self.daemon.run(&["rm", "-f", "-v", &id])
        {
            errors.push(e.to_string());
        }
        if let Some(volume) = self.volume.take()
            && let Err(e) = self.daemon.run(&["volume", "rm", "-f", &volume])
        {
            errors.push(e.to_string());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if self.container.is_some() || self.volume.is_some() {
            let cleanup = Cleanup {
                daemon: self.daemon,
                container: self.container.take(),
                volume: self.volume.take(),
            };
            // The daemon's own teardown removes whatever is still left.
            let _ = cleanup.finish();
        }
    }
}

impl Host<'_> {
    /// One progress step: [`Self::run_once`], its error named by target.
    fn step(
        &self,
        workload: &dyn Workload,
        tag: &str,
        driver: Option<&str>,
        repeat: usize,
        probes: &Probes,
        steps: &mut Steps<'_>,
    ) -> Result<Vec<ResultRow>, BenchError> {
        check_interrupted()?;
        *steps.step += 1;
        let name = driver.map_or(VOLUME_TARGET.to_string(), target_name);
        (steps.progress)(&Progress {
            step: *steps.step,
            steps: steps.steps,
            target: name.clone(),
            workload: workload.name().to_string(),
            repeat,
        });
        self.run_once(workload, tag, driver, repeat, probes)
            .map_err(|e| or_interrupted(setup(&name)(e)))
    }

    /// One run of `workload` in a fresh container of `tag` on `driver`'s
    /// layers (`None`: on a fresh volume); its result rows, with the
    /// counters of `probes` over the run when the tracer runs.
    fn run_once(
        &self,
        workload: &dyn Workload,
        tag: &str,
        driver: Option<&str>,
        repeat: usize,
        probes: &Probes,
    ) -> Result<Vec<ResultRow>, String> {
        let daemon = self.daemon;
        let name = format!(
            "layerscope-bench-{}-{}-{repeat}",
            workload.name(),
            driver.unwrap_or("volume")
        );
        let mut cleanup = Cleanup {
            daemon,
            container: None,
            volume: None,
        };
        let mut args: Vec<String> = vec!["create".into(), "--network".into(), "none".into()];
        args.extend(["--name".into(), name.clone()]);
        let root = match driver {
            Some(_) => image::BENCH_ROOT.to_string(),
            None => {
                let volume = daemon
                    .run(&["volume", "create", &name])
                    .map_err(|e| e.to_string())?;
                cleanup.volume = Some(volume.clone());
                let mountpoint = daemon
                    .run(&["volume", "inspect", "--format", "{{.Mountpoint}}", &volume])
                    .map_err(|e| e.to_string())?;
                workload
                    .populate(Path::new(&mountpoint), self.config.scale)
                    .map_err(|e| format!("fill volume {mountpoint}: {e}"))?;
                args.extend([
                    "--mount".into(),
                    format!("type=volume,src={volume},dst=/vol,volume-nocopy"),
                ]);
                "/vol".to_string()
            }
        };
        args.extend([tag.to_string(), image::BINARY_IN_IMAGE.into()]);
        args.extend([in_container::SUBCOMMAND.into(), "--workload".into()]);
        args.extend([workload.name().into(), "--scale".into()]);
        args.extend([self.config.scale.name().to_string()]);
        args.extend(["--root".into(), root]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let id = daemon.run(&args).map_err(|e| e.to_string())?;
        cleanup.container = Some(id.clone());

        // As in the driver-level run: flushed before and after, so the
        // device counter holds the workload's writes (and vfs's full copy
        // of the image, made by `docker create`, is not in it).
        let sync = |what| sync_filesystem(self.fs.path()).map_err(|e| format!("sync {what}: {e}"));
        sync("before the run")?;
        let written_before = self.fs.device().and_then(device_bytes_written);
        let probes_before = probes.totals();
        daemon.run(&["start", &id]).map_err(|e| e.to_string())?;
        let status = wait_for(daemon, &id)?;
        sync("after the run")?;
        let written_after = self.fs.device().and_then(device_bytes_written);
        let probe_counters = probes_before
            .zip(probes.totals())
            .map(|(before, after)| ProbeCounters::between(&before, &after));
        let device_bytes = written_before
            .zip(written_after)
            .map(|(before, after)| after.saturating_sub(before));

        let logs = daemon.docker(&["logs", &id]);
        let stdout = String::from_utf8_lossy(&logs.stdout);
        if status != 0 || !logs.status.success() {
            let stderr = String::from_utf8_lossy(&logs.stderr);
            return Err(format!(
                "container {name} exited {status}: {}",
                stderr.lines().last().unwrap_or("no output").trim()
            ));
        }
        let report = ContainerReport::parse(&stdout).map_err(|e| format!("{name}: {e}"))?;
        cleanup.finish()?;
        let target = RowTarget {
            name: driver.map_or(VOLUME_TARGET.to_string(), target_name),
            driver: driver.unwrap_or("volume").to_string(),
            filesystem: self.plan.fs.fstype().to_string(),
        };
        Ok(report
            .outcomes
            .into_iter()
            .map(|o| {
                row_of(
                    &target,
                    o.into_outcome(),
                    repeat,
                    device_bytes,
                    probe_counters.clone(),
                )
            })
            .collect())
    }
}

/// Waits for container `id` to exit and returns its exit code. The
/// `docker wait` CLI runs in its own process group and is polled, so that
/// Ctrl-C stops the wait (the daemon's teardown then kills the container).
fn wait_for(daemon: &DockerDaemon, id: &str) -> Result<i64, String> {
    let mut child = daemon
        .command(&["wait", id])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run docker wait: {e}"))?;
    loop {
        if interrupted() {
            let _ = child.kill();
            let _ = child.wait();
            return Err("interrupted".into());
        }
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut out = String::new();
                if let Some(mut stdout) = child.stdout.take() {
                    let _ = stdout.read_to_string(&mut out);
                }
                if !status.success() {
                    let mut err = String::new();
                    if let Some(mut stderr) = child.stderr.take() {
                        let _ = stderr.read_to_string(&mut err);
                    }
                    return Err(format!(
                        "docker wait {id} failed ({status}): {}",
                        err.trim()
                    ));
                }
                return out
                    .trim()
                    .parse()
                    .map_err(|_| format!("docker wait {id}: unexpected output {out:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("wait for docker wait: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_volume_baseline_goes_on_the_first_ext4_daemon() {
        let plans = plans(&names(&["btrfs", "vfs", "overlay2"])).unwrap();
        let volume: Vec<_> = plans.iter().map(|p| (p.driver, p.volume)).collect();
        assert_eq!(
            volume,
            [("btrfs", false), ("vfs", true), ("overlay2", false)]
        );
        assert!(plans.iter().all(|p| p.measure_driver));
    }

    #[test]
    fn btrfs_alone_gets_an_ext4_daemon_for_the_baseline() {
        let plans = plans(&names(&["btrfs"])).unwrap();
        assert_eq!(plans.len(), 2);
        assert_eq!(
            (plans[0].driver, plans[0].volume, plans[0].measure_driver),
            ("overlay2", true, false)
        );
        assert_eq!(plans[1].fs, FsKind::Btrfs);
    }

    #[test]
    fn unknown_drivers_are_named() {
        let err = plans(&names(&["overlay2-ext4"])).unwrap_err().to_string();
        assert!(
            err.contains("overlay2-ext4") && err.contains("vfs"),
            "{err}"
        );
    }
}
