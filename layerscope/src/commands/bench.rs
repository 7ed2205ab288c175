//! `layerscope bench`: run the driver comparison and write its results.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use bench_harness::{BenchConfig, Scale, run_bench};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Targets to compare (native is always added as the baseline).
    #[arg(long, value_delimiter = ',', default_values_t = bench_harness::target::TARGET_NAMES.iter().map(|s| s.to_string()))]
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
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let mut targets = args.drivers.clone();
    if !targets.iter().any(|t| t == "native") {
        targets.insert(0, "native".to_string());
    }
    let config = BenchConfig {
        targets,
        workloads: args.workloads.clone(),
        scale: args.scale,
        repeat: args.repeat,
        out: args.out.clone(),
        no_probes: args.no_probes,
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
