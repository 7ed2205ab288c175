//! `layerscope sidecar`: the flags of the long-running exporter; the
//! sidecar itself lives in [`crate::sidecar`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;

use crate::sidecar::{self, config::Flags, logging::LogFormat};

#[derive(Debug, Args)]
pub struct SidecarArgs {
    /// Address to serve /metrics, /healthz and / on [default: 127.0.0.1:9750].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// A TOML file (listen, root, driver, docker_root, labels, buckets,
    /// rescan_seconds, size_budget, textfile_dir); flags win over it. SIGHUP reloads it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Also watch the containers of this Docker data root (read only).
    #[arg(long)]
    pub docker_root: Option<PathBuf>,
    /// Do not read layerscope's own store (`--root`).
    #[arg(long)]
    pub no_store: bool,
    /// Label names to keep on series, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    pub labels: Option<Vec<String>>,
    /// Copy-up latency histogram buckets in seconds, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub buckets: Option<Vec<f64>>,
    /// Seconds between container rescans [default: 2].
    #[arg(long)]
    pub rescan_seconds: Option<f64>,
    /// Directory entries the rw-size refresher may stat per second [default: 20000].
    #[arg(long)]
    pub size_budget: Option<usize>,
    /// Re-export the `layerscope_bench_*` gauges of the `*.prom` files here
    /// (the textfile `layerscope bench` writes).
    #[arg(long)]
    pub textfile_dir: Option<PathBuf>,
    /// Serve without attaching the BPF probes (probe series report "none").
    #[arg(long)]
    pub no_probes: bool,
    /// Log lines as text or JSON (stderr; level from LAYERSCOPE_LOG, default info).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// Runs the sidecar with the global `--root`, `--driver` and `--storage-opt`.
pub fn run(
    root: &Path,
    driver: &str,
    storage_opt: &[String],
    args: SidecarArgs,
) -> anyhow::Result<()> {
    let flags = Flags {
        config: args.config,
        listen: args.listen,
        root: root_given_explicitly().then(|| root.to_path_buf()),
        default_root: root.to_path_buf(),
        driver: driver.to_string(),
        docker_root: args.docker_root,
        no_store: args.no_store,
        labels: args.labels,
        buckets: args.buckets,
        rescan_seconds: args.rescan_seconds,
        size_budget: args.size_budget,
        textfile_dir: args.textfile_dir,
    };
    sidecar::run(sidecar::Options {
        flags,
        storage_opt: storage_opt.to_vec(),
        log_format: args.log_format,
        no_probes: args.no_probes,
    })
}

/// Whether `--root` (or `LAYERSCOPE_ROOT`) was given rather than defaulted:
/// an explicit root must exist or be created, the default one is used only
/// when it exists, and a config file's `root` wins over the default only.
fn root_given_explicitly() -> bool {
    std::env::var_os("LAYERSCOPE_ROOT").is_some()
        || std::env::args_os().any(|a| {
            let a = a.to_string_lossy();
            a == "--root" || a.starts_with("--root=")
        })
}
