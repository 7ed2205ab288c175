//! `cargo xtask bench`: the main job. Installs what is missing, builds
//! layerscope in release mode (BPF objects included) and runs
//! `layerscope bench` with the small scale and 5 repeats unless told
//! otherwise. With `--runs N` it runs the benchmark N times (into
//! `<out>/run-<i>`) and reports how far each ratio moved between runs
//! (`repeatability.md`).

use std::ffi::OsString;

use crate::build_ebpf::REQUIRE_BPF_ENV;
use crate::run::{cargo, run as run_command, workspace_root};

#[derive(clap::Args)]
pub struct Args {
    /// Workload scale: tiny, small (default) or full.
    #[arg(long, default_value = "small")]
    pub scale: String,
    /// Where results go (default: results/ in the workspace).
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// Repeats inside one run; a ratio is the median over their rounds.
    /// Five, as three still moved 10–30% between runs for the large
    /// copy-ups; see docs/performance.md.
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// Run the benchmark this many times and report the ratios' spread.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Further arguments for `layerscope bench` (after `--`).
    #[arg(last = true)]
    pub rest: Vec<OsString>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    crate::deps::run(&crate::deps::Args { dry_run: false })?;
    run_command(
        cargo()
            .args(["build", "--release", "--package", "layerscope"])
            .env(REQUIRE_BPF_ENV, "1"),
    )?;
    let root = workspace_root();
    let out = args.out.clone().unwrap_or_else(|| root.join("results"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let binary = target.join("release/layerscope");
    let bench = |out: &std::path::Path| {
        run_command(
            std::process::Command::new(&binary)
                .arg("bench")
                .arg("--scale")
                .arg(&args.scale)
                .arg("--repeat")
                .arg(args.repeat.to_string())
                .arg("--out")
                .arg(out)
                .args(&args.rest),
        )
    };
    if args.runs <= 1 {
        return bench(&out);
    }
    let mut files = Vec::new();
    for i in 1..=args.runs {
        let run_out = out.join(format!("run-{i}"));
        eprintln!("xtask bench: run {i} of {}", args.runs);
        bench(&run_out)?;
        files.push(run_out.join("results.json"));
    }
    let runs = crate::repeatability::read(&files)?;
    let (table, over) = crate::repeatability::report(&runs, args.runs);
    let path = out.join("repeatability.md");
    std::fs::write(&path, &table)?;
    println!(
        "{table}
(written to {})",
        path.display()
    );
    if over > 0 {
        eprintln!(
            "xtask bench: {over} ratio(s) moved more than {:.0}% between runs",
            crate::repeatability::BOUND * 100.0
        );
    }
    Ok(())
}
