//! `layerscope layer ...`: apply, list, inspect, export and remove image
//! layers in Docker's layerdb format.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use storage_core::layer::{LayerInfo, LayerStore};

#[derive(Subcommand)]
pub enum LayerCommand {
    /// Apply a layer tar (plain, gzip or zstd); prints the new chain-id.
    Apply {
        tar: PathBuf,
        /// Chain-id of the parent layer.
        #[arg(long)]
        parent: Option<String>,
    },
    /// List layers.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Print a layer as JSON.
    Inspect { id: String },
    /// Write a layer's tar, byte for byte as it was applied.
    Export {
        id: String,
        #[arg(short = 'o', long)]
        output: PathBuf,
    },
    /// Remove a layer that has no children and no containers.
    Rm { id: String },
}

pub fn run(store: &LayerStore, command: LayerCommand) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match command {
        LayerCommand::Apply { tar, parent } => {
            let file = File::open(&tar).with_context(|| format!("layer tar {}", tar.display()))?;
            let layer = store
                .apply(BufReader::with_capacity(1 << 20, file), parent.as_deref())
                .with_context(|| format!("apply {}", tar.display()))?;
            writeln!(stdout, "{}", layer.chain_id)?;
        }
        LayerCommand::Ls { json } => {
            let layers = store.list()?;
            if json {
                serde_json::to_writer_pretty(&mut stdout, &layers)?;
                writeln!(stdout)?;
            } else {
                print_table(&mut stdout, &layers)?;
            }
        }
        LayerCommand::Inspect { id } => {
            let layer = store.get(&id)?;
            serde_json::to_writer_pretty(&mut stdout, &layer)?;
            writeln!(stdout)?;
        }
        LayerCommand::Export { id, output } => {
            let layer = store.get(&id)?;
            write_via_temp(&output, |out| {
                store.export(&layer.chain_id, out)?;
                Ok(())
            })?;
        }
        LayerCommand::Rm { id } => {
            let layer = store.get(&id)?;
            store.remove(&layer.chain_id)?;
            writeln!(stdout, "{}", layer.chain_id)?;
        }
    }
    Ok(())
}

fn print_table(out: &mut impl Write, layers: &[LayerInfo]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<19} {:<19} {:<19} {:>12}",
        "CHAIN ID", "DIFF ID", "PARENT", "SIZE"
    )?;
    for layer in layers {
        writeln!(
            out,
            "{:<19} {:<19} {:<19} {:>12}",
            short(&layer.chain_id),
            short(&layer.diff_id),
            layer.parent.as_deref().map(short).unwrap_or("-"),
            layer.size
        )?;
    }
    Ok(())
}

/// `sha256:0123456789ab`, as docker prints short ids.
pub fn short(id: &str) -> &str {
    let end = "sha256:".len() + 12;
    if id.starts_with("sha256:") && id.len() > end {
        &id[..end]
    } else {
        id
    }
}

/// Writes `path` through a temporary name beside it, renamed into place
/// only when `write` succeeded.
pub fn write_via_temp(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".layerscope-")
        .tempfile_in(dir)
        .with_context(|| format!("create temporary file in {}", dir.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, tmp.as_file());
    write(&mut out)?;
    out.flush()?;
    drop(out);
    tmp.persist(path)
        .with_context(|| format!("rename into {}", path.display()))?;
    Ok(())
}
