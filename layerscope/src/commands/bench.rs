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
    };
    let json = args.json;
    let results = run_bench(&config, &mut |p| {
        if json {
            eprintln!("{}", serde_json::to_string(p).unwrap_or_default());
        } else {
            eprintln!(
                "[{:>3}/{}] {:<22} {}{}",
                p.step,
                p.steps,
                p.target,
                p.workload,
                if config.repeat > 1 {
                    format!(" (repeat {})", p.repeat + 1)
                } else {
                    String::new()
                }
            );
        }
    })
    .context("bench")?;
    results.write(&args.out)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", results.summary())?;
    writeln!(
        stdout,
        "results: {}",
        args.out.join("results.json").display()
    )?;
    Ok(())
}
