//! `layerscope bench`: run the driver comparison and write its results.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use bench_harness::{BenchConfig, Scale, run_bench};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Targets to compare (native is always added as the baseline); with
    /// --docker, Docker storage drivers (overlay2, vfs, btrfs). Default: all.
    #[arg(long, value_delimiter = ',')]
    pub drivers: Vec<String>,
    /// Workloads to run.
    #[arg(long, value_delimiter = ',', default_values_t = bench_harness::workloads::WORKLOAD_NAMES.iter().map(|s| s.to_string()))]
    pub workloads: Vec<String>,
    /// tiny, small or full.
    #[arg(long, default_value = "small")]
    pub scale: Scale,
    /// Runs of each workload; ratios report the median and the spread.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Where results.json and summary.md go.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Progress as JSON lines on stderr (for CI logs).
    #[arg(long)]
    pub json: bool,
    /// Do not attach the BPF tracer (results carry no probe counters);
    /// comparing runs with and without it measures the probes' overhead.
    #[arg(long)]
    pub no_probes: bool,
    /// A stored results.json to compare with: exits non-zero naming every
    /// workload/target whose p50 ratio to native regressed.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// How much worse a ratio may get before it counts (e.g. 10% or 0.1).
    #[arg(long, default_value = "10%", value_parser = bench_harness::baseline::parse_fraction)]
    pub max_regression: f64,
    /// Also run the file workloads in real containers of a private dockerd
    /// per driver (targets docker-<driver>, baseline docker-volume), next
    /// to layerscope's own targets for the same drivers.
    #[arg(long)]
    pub docker: bool,
    /// Push the layerscope_bench_* metrics to this Prometheus Pushgateway
    /// (http://host:port), as job layerscope_bench, instance <hostname>.
    #[arg(long, value_name = "URL")]
    pub push_gateway: Option<String>,
    /// Where the loop-backed filesystems (and dockerd's dirs) are made.
    #[arg(long, default_value = "/var/tmp")]
    pub scratch_dir: PathBuf,
    /// Leave free page reporting and DAMON reclaim running. By default a
    /// run turns them off and restores them at exit: on a VM they make a
    /// driver's timing depend on when it ran.
    #[arg(long)]
    pub no_memory_hold: bool,
}

/// The layerscope targets and docker drivers of a run.
fn targets_of(args: &BenchArgs) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let mut targets: Vec<String> = Vec::new();
    let mut docker_drivers = Vec::new();
    if args.docker {
        docker_drivers = if args.drivers.is_empty() {
            bench_harness::docker::DOCKER_DRIVERS
                .iter()
                .map(|s| s.to_string())
                .collect()
        } else {
            args.drivers.clone()
        };
        // layerscope's own measure of each driver, for the comparison.
        for driver in &docker_drivers {
            let target = bench_harness::docker::layerscope_target(driver)
                .ok_or_else(|| bench_harness::BenchError::UnknownDockerDriver(driver.clone()))?;
            targets.push(target.to_string());
        }
    } else if args.drivers.is_empty() {
        targets.extend(
            bench_harness::target::TARGET_NAMES
                .iter()
                .map(|s| s.to_string()),
        );
    } else {
        targets = args.drivers.clone();
    }
    if !targets.iter().any(|t| t == "native") {
        targets.insert(0, "native".to_string());
    }
    Ok((targets, docker_drivers))
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let (targets, docker_drivers) = targets_of(&args).context("bench")?;
    let config = BenchConfig {
        targets,
        docker_drivers,
        scratch_dir: args.scratch_dir.clone(),
        workloads: args.workloads.clone(),
        scale: args.scale,
        repeat: args.repeat,
        out: args.out.clone(),
        no_probes: args.no_probes,
        hold_memory: !args.no_memory_hold,
    };
    let json = args.json;
    let bar = (!json).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar
    });
    let results = run_bench(&config, &mut |p| match &bar {
        None => eprintln!("{}", serde_json::to_string(p).unwrap_or_default()),
        Some(bar) => {
            bar.set_length(p.steps as u64);
            bar.set_position(p.step as u64 - 1);
            bar.set_message(format!("{} {}", p.target, p.workload));
        }
    })
    .context("bench")?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    results.write(&args.out)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", results.summary())?;
    writeln!(
        stdout,
        "results: {}",
        args.out.join("results.json").display()
    )?;
    if let Some(url) = &args.push_gateway {
        // The same text as the textfile just written.
        let prom = args.out.join("layerscope_bench.prom");
        let text =
            std::fs::read_to_string(&prom).with_context(|| format!("read {}", prom.display()))?;
        let instance = bench_harness::push::hostname();
        bench_harness::push::push(url, &instance, &text)?;
        writeln!(
            stdout,
            "pushed to {url} (job {}, instance {instance})",
            bench_harness::push::JOB
        )?;
    }
    if let Some(baseline) = &args.baseline {
        let regressions =
            bench_harness::baseline::compare(&results, baseline, args.max_regression)?;
        for regression in &regressions {
            eprintln!("regression: {regression}");
        }
        if !regressions.is_empty() {
            anyhow::bail!(
                "{} ratio(s) regressed by more than {:.0}% against {}",
                regressions.len(),
                args.max_regression * 100.0,
                baseline.display()
            );
        }
        writeln!(
            stdout,
            "no ratio regressed by more than {:.0}% against {}",
            args.max_regression * 100.0,
            baseline.display()
        )?;
    }
    Ok(())
}
