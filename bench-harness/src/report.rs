//! Results of a run: `results.json` (versioned schema) and `summary.md`,
//! whose table gives every target's latency as a ratio to native measured
//! in the same run, the best driver per workload and a short
//! recommendation.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::BenchError;
use crate::probes::ProbeCounters;
use crate::run::BenchConfig;
use crate::scale::Scale;
use crate::stats::LatencySummary;

/// Bumped whenever a field changes meaning or disappears.
pub const SCHEMA_VERSION: u32 = 2;

#[derive(Debug, Clone, Serialize)]
pub struct ResultRow {
    pub target: String,
    pub driver: String,
    pub filesystem: String,
    pub workload: String,
    pub repeat: usize,
    pub latency: LatencySummary,
    pub ops: u64,
    pub elapsed_seconds: f64,
    pub ops_per_second: f64,
    pub bytes_written: u64,
    /// Bytes the target's block device received during the workload
    /// (all outcomes of one workload run share it).
    pub device_bytes_written: Option<u64>,
    /// The overlayfs work the workload run caused, from the BPF probes
    /// (all outcomes of one run share it; absent without probes).
    pub probes: Option<ProbeCounters>,
    /// How much the kernel's page cache grew (page-cache workload).
    pub page_cache_bytes: Option<u64>,
    /// The p50 of each round the workload was split into (interleaved
    /// file workloads; empty otherwise): what `ratios.rs` pairs with the
    /// baseline's round of the same index.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rounds: Vec<RoundP50>,
}

/// The p50 latency of one round of a workload on one target.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct RoundP50 {
    pub round: usize,
    pub p50_seconds: f64,
}

/// A target that could not run here, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Unavailable {
    pub target: String,
    pub why: String,
}

/// A workload a mode cannot run (e.g. `stack-depth` in docker mode), and
/// why.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedWorkload {
    pub workload: String,
    pub mode: String,
    pub why: String,
}

/// A target's latency over its baseline's for one workload (native;
/// `docker-volume` for `docker-*` targets). `p50_ratio` is the median of
/// the round-paired p50 ratios, min and max the spread of the repeats'
/// own medians (`ratios.rs`).
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub workload: String,
    pub target: String,
    /// The target the ratio is taken to.
    pub baseline: String,
    pub p50_ratio: f64,
    pub p99_ratio: f64,
    pub p50_ratio_min: f64,
    pub p50_ratio_max: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub kernel: String,
    pub cpus: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub schema_version: u32,
    pub scale: Scale,
    pub repeat: usize,
    pub machine: Machine,
    pub duration_seconds: f64,
    pub rows: Vec<ResultRow>,
    pub ratios: Vec<Ratio>,
    /// Targets asked for that this kernel cannot run.
    pub unavailable: Vec<Unavailable>,
    /// The probe strategy that produced the counters, or why none did.
    pub probe_strategy: String,
    /// What the run did to hold the machine's memory steady
    /// (`memory_hold.rs`), or why it did nothing.
    #[serde(default)]
    pub memory_hold: String,
    /// Workloads a mode of this run could not run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedWorkload>,
    /// dockerd's version, for runs with `--docker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_version: Option<String>,
}

impl Results {
    pub fn new(config: &BenchConfig, rows: Vec<ResultRow>, took: Duration) -> Self {
        let ratios = crate::ratios::ratios(&rows);
        Self {
            schema_version: SCHEMA_VERSION,
            scale: config.scale,
            repeat: config.repeat.max(1),
            machine: Machine {
                kernel: nix::sys::utsname::uname()
                    .map(|u| u.release().to_string_lossy().into_owned())
                    .unwrap_or_default(),
                cpus: std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1),
            },
            duration_seconds: took.as_secs_f64(),
            rows,
            ratios,
            unavailable: Vec::new(),
            probe_strategy: String::new(),
            memory_hold: String::new(),
            skipped: Vec::new(),
            docker_version: None,
        }
    }

    /// Writes `results.json`, `summary.md`, the SVG plots and the
    /// Prometheus textfile `layerscope_bench.prom` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), BenchError> {
        let io = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| BenchError::Io { op, path, source }
        };
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        let json = serde_json::to_vec_pretty(self).expect("results serialize");
        let path = dir.join("results.json");
        storage_core::fsutil::write_atomic(&path, &json, 0o644).map_err(io("write", &path))?;
        let path = dir.join("summary.md");
        storage_core::fsutil::write_atomic(&path, self.summary().as_bytes(), 0o644)
            .map_err(io("write", &path))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let path = dir.join("layerscope_bench.prom");
        storage_core::fsutil::write_atomic(
            &path,
            crate::metrics::textfile(self, now).as_bytes(),
            0o644,
        )
        .map_err(io("write", &path))?;
        crate::plots::write(self, dir)
    }

    /// The Markdown summary: ratio table, best driver per workload, advice.
    pub fn summary(&self) -> String {
        let targets: Vec<&str> = unique(self.rows.iter().map(|r| r.target.as_str()));
        let workloads: Vec<&str> = unique(self.rows.iter().map(|r| r.workload.as_str()));
        let compared: Vec<&str> = targets
            .iter()
            .copied()
            .filter(|t| !crate::target::is_baseline(t))
            .collect();
        let docker_volume = targets.contains(&crate::docker::VOLUME_TARGET);
        let mut md = String::new();
        let _ = writeln!(
            md,
            "# layerscope bench: p50 latency as a ratio to native\n\n\
             scale {:?}, {} repeat(s), kernel {}, {} CPUs, {:.0} s. \
             1.00x = as fast as a volume; higher is slower. Each p50 ratio is the median \
             over the rounds of a round's p50 over native's in the same round. \
             (p99 ratio in brackets.)\n",
            self.scale, self.repeat, self.machine.kernel, self.machine.cpus, self.duration_seconds
        );
        if !self.memory_hold.is_empty() {
            let _ = writeln!(md, "Memory: {}.\n", self.memory_hold);
        }
        if let Some(version) = &self.docker_version {
            let _ = writeln!(
                md,
                "`docker-*` columns ran in containers of a real dockerd {version}, one per \
                 driver; their ratios are to `docker-volume` (a local volume of the same \
                 dockerd), not to native.\n"
            );
        }
        let _ = write!(md, "| workload | native p50 |");
        if docker_volume {
            let _ = write!(md, " docker-volume p50 |");
        }
        for t in &compared {
            let _ = write!(md, " {t} |");
        }
        let _ = writeln!(md, " best |");
        let _ = write!(md, "|---|---:|");
        if docker_volume {
            let _ = write!(md, "---:|");
        }
        for _ in &compared {
            let _ = write!(md, "---:|");
        }
        let _ = writeln!(md, "---|");
        let mut worst: Option<(&str, &str, f64)> = None;
        for w in &workloads {
            let native = self.median_p50(w, "native");
            let _ = write!(
                md,
                "| {w} | {} |",
                native.map(format_seconds).unwrap_or_else(|| "-".into())
            );
            if docker_volume {
                let volume = self.median_p50(w, crate::docker::VOLUME_TARGET);
                let _ = write!(
                    md,
                    " {} |",
                    volume.map(format_seconds).unwrap_or_else(|| "-".into())
                );
            }
            let mut best: Option<(&str, f64)> = None;
            for t in &compared {
                match self.ratio(w, t) {
                    Some(r) => {
                        let _ = write!(md, " {:.2}x ({:.2}x) |", r.p50_ratio, r.p99_ratio);
                        if best.is_none_or(|(_, b)| r.p50_ratio < b) {
                            best = Some((t, r.p50_ratio));
                        }
                        if worst.is_none_or(|(_, _, v)| r.p50_ratio > v) {
                            worst = Some((w, t, r.p50_ratio));
                        }
                    }
                    // No native to compare with (driver-level workloads):
                    // the absolute p50.
                    None => match self.median_p50(w, t) {
                        Some(p50) => {
                            let _ = write!(md, " {} |", format_seconds(p50));
                        }
                        None => {
                            let _ = write!(md, " - |");
                        }
                    },
                }
            }
            let _ = writeln!(md, " {} |", best.map(|(t, _)| t).unwrap_or("-"));
        }
        let _ = writeln!(md);
        self.docker_table(&mut md, &workloads);
        self.why_table(&mut md, &compared, &workloads);
        self.page_cache_lines(&mut md, &targets);
        for u in &self.unavailable {
            let _ = writeln!(md, "- **{}** unavailable: {}", u.target, u.why);
            if u.target == "devicemapper" {
                let _ = writeln!(
                    md,
                    "  (measured in a guest kernel that has dm-thin: `cargo xtask vm-test \
                     devicemapper_is_benchmarked_beside_native -p bench-harness`)"
                );
            }
        }
        for s in &self.skipped {
            let _ = writeln!(
                md,
                "- **{}** not supported in {} mode: {}",
                s.workload, s.mode, s.why
            );
        }
        if !self.unavailable.is_empty() || !self.skipped.is_empty() {
            let _ = writeln!(md);
        }
        if let Some((w, t, v)) = worst {
            let _ = writeln!(
                md,
                "The costliest case is {w} on {t}, {v:.1}x native at p50: a write-heavy path \
                 like that belongs on a volume, not in the container's copy-on-write layer. \
                 Copy-up cost grows with file size (see the copy-up rows); metacopy removes it \
                 for metadata-only changes; a reflink upper (xfs) turns data copy-up into a clone."
            );
        }
        md
    }

    /// Docker against layerscope: per workload and driver, the p50 ratio
    /// layerscope measured on the driver and the one measured in Docker's
    /// containers of that driver.
    fn docker_table(&self, md: &mut String, workloads: &[&str]) {
        let drivers: Vec<(&str, String)> = crate::docker::DOCKER_DRIVERS
            .iter()
            .filter_map(|d| Some((crate::docker::layerscope_target(d)?, d)))
            .map(|(ls, d)| (ls, crate::docker::target_name(d)))
            .filter(|(_, docker)| self.rows.iter().any(|r| &r.target == docker))
            .collect();
        if drivers.is_empty() {
            return;
        }
        let _ = writeln!(
            md,
            "## Docker vs layerscope: p50 ratio, layerscope's driver / Docker's containers\n"
        );
        let _ = write!(md, "| workload |");
        for (ls, docker) in &drivers {
            let _ = write!(md, " {ls} / {docker} |");
        }
        let _ = writeln!(md);
        let _ = write!(md, "|---|");
        for _ in &drivers {
            let _ = write!(md, "---:|");
        }
        let _ = writeln!(md);
        for w in workloads {
            if !drivers
                .iter()
                .any(|(_, docker)| self.ratio(w, docker).is_some())
            {
                continue;
            }
            let _ = write!(md, "| {w} |");
            for (ls, docker) in &drivers {
                let cell = |target: &str| {
                    self.ratio(w, target)
                        .map(|r| format!("{:.2}x", r.p50_ratio))
                        .unwrap_or_else(|| "-".into())
                };
                let _ = write!(md, " {} / {} |", cell(ls), cell(docker));
            }
            let _ = writeln!(md);
        }
        let _ = writeln!(md);
    }

    /// Why: the overlayfs work each workload caused on each target (first
    /// repeat), from the BPF probes.
    fn why_table(&self, md: &mut String, targets: &[&str], workloads: &[&str]) {
        if self.rows.iter().all(|r| r.probes.is_none()) {
            let _ = writeln!(md, "Probe counters: {}.\n", self.probe_strategy);
            return;
        }
        let _ = writeln!(
            md,
            "## Why: overlayfs work per workload (copy-ups data/metadata/dir, bytes copied up, whiteouts)\n\n\
             Probes: {}. Targets without overlayfs show none.\n",
            self.probe_strategy
        );
        let _ = write!(md, "| workload |");
        for t in targets {
            let _ = write!(md, " {t} |");
        }
        let _ = writeln!(md);
        let _ = write!(md, "|---|");
        for _ in targets {
            let _ = write!(md, "---|");
        }
        let _ = writeln!(md);
        let mut seen_runs = Vec::new();
        for w in workloads {
            // Outcomes of one run share counters: show them once per run.
            let run = w.split('/').next().unwrap_or(w);
            if seen_runs.contains(&run) {
                continue;
            }
            seen_runs.push(run);
            let _ = write!(md, "| {run} |");
            for t in targets {
                let row = self.rows.iter().find(|r| {
                    &r.target == t && r.workload.split('/').next() == Some(run) && r.repeat == 0
                });
                match row.and_then(|r| r.probes.as_ref()) {
                    Some(c) => {
                        let _ = write!(
                            md,
                            " {}/{}/{}, {}, {} |",
                            c.copy_ups_data,
                            c.copy_ups_metadata,
                            c.copy_ups_dir,
                            human_bytes(c.copy_up_bytes),
                            c.whiteouts
                        );
                    }
                    None => {
                        let _ = write!(md, " - |");
                    }
                }
            }
            let _ = writeln!(md);
        }
        let _ = writeln!(md);
    }

    /// The page-cache workload's result: how much cache N containers
    /// reading one file cost on each target.
    fn page_cache_lines(&self, md: &mut String, targets: &[&str]) {
        let rows: Vec<&ResultRow> = self
            .rows
            .iter()
            .filter(|r| r.page_cache_bytes.is_some() && r.repeat == 0)
            .collect();
        let Some(first) = rows.first() else {
            return;
        };
        let _ = writeln!(
            md,
            "Page cache grown by `{}` (containers x file size) from a cold cache. \
             Targets sit on direct-I/O loop devices, so a page is cached once, as \
             on a real disk: a driver that shares the lower file grows the cache \
             by one file, one that copies it by one file per container.\n",
            first.workload
        );
        for t in targets {
            if let Some(row) = rows.iter().find(|r| &r.target == t) {
                let _ = writeln!(
                    md,
                    "- {t}: {}",
                    human_bytes(row.page_cache_bytes.unwrap_or(0))
                );
            }
        }
        let _ = writeln!(md);
    }

    fn median_p50(&self, workload: &str, target: &str) -> Option<f64> {
        let p50s: Vec<f64> = self
            .rows
            .iter()
            .filter(|r| r.workload == workload && r.target == target)
            .map(|r| r.latency.p50_seconds)
            .collect();
        crate::ratios::median(&p50s)
    }

    fn ratio(&self, workload: &str, target: &str) -> Option<&Ratio> {
        self.ratios
            .iter()
            .find(|r| r.workload == workload && r.target == target)
    }
}

fn unique<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = Vec::new();
    for item in items {
        if !seen.contains(&item) {
            seen.push(item);
        }
    }
    seen
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn format_seconds(seconds: f64) -> String {
    if seconds >= 1.0 {
        format!("{seconds:.2} s")
    } else if seconds >= 1e-3 {
        format!("{:.2} ms", seconds * 1e3)
    } else {
        format!("{:.1} µs", seconds * 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_pick_a_readable_unit() {
        assert_eq!(format_seconds(2.5), "2.50 s");
        assert_eq!(format_seconds(0.0025), "2.50 ms");
        assert_eq!(format_seconds(0.0000025), "2.5 µs");
    }
}
