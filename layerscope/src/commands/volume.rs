//! `layerscope volume ...`: Docker's local volumes: create, ls, inspect,
//! rm, prune, with docker's flags and output shapes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::Subcommand;
use storage_core::volume::{VolumeFilter, VolumeStore};

#[derive(Subcommand)]
pub enum VolumeCommand {
    /// Create a volume (anonymous, with a 64-hex name, when NAME is left out); prints its name.
    Create {
        name: Option<String>,
        /// Label as key=value (repeatable).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Driver option as key=value: type, device, o, size (repeatable), e.g.
        /// -o type=tmpfs -o o=size=64m, or -o type=xfs -o o=size=100m for a loop-backed xfs.
        #[arg(short = 'o', long = "opt")]
        opts: Vec<String>,
    },
    /// List volumes.
    Ls {
        /// dangling=true|false, name=SUBSTRING, label=KEY[=VALUE], driver=local (repeatable).
        #[arg(short = 'f', long = "filter")]
        filters: Vec<String>,
        /// Only print names.
        #[arg(short, long)]
        quiet: bool,
        #[arg(long)]
        json: bool,
    },
    /// Volumes as JSON, shaped like `docker volume inspect`.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes (refused while a container uses them).
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove unused anonymous volumes (with --all, unused named ones too).
    Prune {
        #[arg(short, long)]
        all: bool,
        /// label=KEY[=VALUE] (repeatable).
        #[arg(short = 'f', long = "filter")]
        filters: Vec<String>,
        #[arg(long)]
        json: bool,
    },
}

fn key_values(pairs: &[String], what: &str) -> anyhow::Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p.as_str(), ""));
            anyhow::ensure!(!k.is_empty(), "{what} {p:?}: want key=value");
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

pub fn run(root: &Path, command: VolumeCommand) -> anyhow::Result<()> {
    let volumes = VolumeStore::open(root)?;
    let mut stdout = std::io::stdout().lock();
    match command {
        VolumeCommand::Create { name, labels, opts } => {
            let labels = key_values(&labels, "label")?;
            let opts = key_values(&opts, "option")?;
            let volume = volumes.create(name.as_deref(), labels, opts)?;
            writeln!(stdout, "{}", volume.name)?;
        }
        VolumeCommand::Ls {
            filters,
            quiet,
            json,
        } => {
            let filter = VolumeFilter::parse(&filters)?;
            let all = volumes.list(&filter)?;
            if json {
                serde_json::to_writer_pretty(&mut stdout, &all)?;
                writeln!(stdout)?;
            } else if quiet {
                for v in all {
                    writeln!(stdout, "{}", v.name)?;
                }
            } else {
                writeln!(stdout, "{:<10}VOLUME NAME", "DRIVER")?;
                for v in all {
                    writeln!(stdout, "{:<10}{}", v.driver, v.name)?;
                }
            }
        }
        VolumeCommand::Inspect { names } => {
            let found = names
                .iter()
                .map(|n| volumes.get(n))
                .collect::<Result<Vec<_>, _>>()?;
            serde_json::to_writer_pretty(&mut stdout, &found)?;
            writeln!(stdout)?;
        }
        VolumeCommand::Rm { names } => {
            for name in names {
                volumes.remove(&name)?;
                writeln!(stdout, "{name}")?;
            }
        }
        VolumeCommand::Prune { all, filters, json } => {
            let mut labels = Vec::new();
            for f in &filters {
                let label = f.strip_prefix("label=").with_context(|| {
                    format!("invalid prune filter {f:?}: want label=KEY[=VALUE]")
                })?;
                labels.push(label.to_string());
            }
            let report = volumes.prune(all, &labels)?;
            if json {
                serde_json::to_writer_pretty(&mut stdout, &report)?;
                writeln!(stdout)?;
            } else {
                if !report.volumes_deleted.is_empty() {
                    writeln!(stdout, "Deleted Volumes:")?;
                    for name in &report.volumes_deleted {
                        writeln!(stdout, "{name}")?;
                    }
                    writeln!(stdout)?;
                }
                writeln!(stdout, "Total reclaimed space: {}B", report.space_reclaimed)?;
            }
        }
    }
    Ok(())
}
