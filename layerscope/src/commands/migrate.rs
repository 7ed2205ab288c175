//! `layerscope migrate aufs-to-overlay2 --docker-root DIR [--dry-run]`:
//! converts a stopped Docker's aufs store to overlay2 in place through
//! `storage_core::migrate`, resumable after a crash; `--dry-run` prints
//! the plan and changes nothing.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use storage_core::migrate::{self, LayerKind, MigrateOptions, Outcome, offline};

#[derive(Subcommand)]
pub enum MigrateCommand {
    /// Convert a Docker data root's aufs store to overlay2 in place (offline, resumable, no copies).
    #[command(name = "aufs-to-overlay2")]
    AufsToOverlay2(MigrateArgs),
    /// The way back: convert an overlay2 store to Docker's aufs layout in place.
    #[command(name = "overlay2-to-aufs")]
    Overlay2ToAufs(MigrateArgs),
}

#[derive(Args)]
pub struct MigrateArgs {
    /// The Docker data root (holding aufs/ and image/aufs/, or overlay2/ and image/overlay2/).
    #[arg(long, default_value = "/var/lib/docker")]
    pub docker_root: PathBuf,
    /// Print what would be converted and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// dockerd's pid file: the migration refuses while it names a live process.
    #[arg(long, default_value = offline::DEFAULT_PID_FILE)]
    pub docker_pid_file: PathBuf,
    /// Print the plan and the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(command: MigrateCommand) -> anyhow::Result<()> {
    match command {
        MigrateCommand::AufsToOverlay2(args) => {
            migrate(&args, migrate::aufs_to_overlay2, "overlay2")
        }
        MigrateCommand::Overlay2ToAufs(args) => {
            migrate(&args, migrate::reverse::overlay2_to_aufs, "aufs")
        }
    }
}

type MigrateFn = fn(&std::path::Path, &MigrateOptions) -> Result<Outcome, migrate::MigrateError>;

/// Runs (or with `--dry-run` plans) a migration to `target` and prints the outcome.
pub fn migrate(args: &MigrateArgs, run: MigrateFn, target: &str) -> anyhow::Result<()> {
    let options = MigrateOptions {
        dry_run: args.dry_run,
        pid_file: args.docker_pid_file.clone(),
        crash_at: None,
    };
    let outcome = run(&args.docker_root, &options)?;
    let text = if args.json {
        let mut text = serde_json::to_string_pretty(&outcome)?;
        text.push('\n');
        text
    } else {
        render(&outcome, target)
    };
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn short(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

fn render(outcome: &Outcome, target: &str) -> String {
    let plan = &outcome.plan;
    let totals = &plan.totals;
    let root = plan.root.display();
    if outcome.already_complete {
        return format!(
            "docker root {root}: already migrated to {target} ({} layers)\n",
            totals.layers
        );
    }
    let mut out = String::new();
    let summary = format!(
        "{} of {} layers ({} image, {} container), {} containers, {} bytes, {} whiteouts, {} opaque dirs, {} aufs internals to drop",
        totals.layers_to_convert,
        totals.layers,
        totals.image_layers,
        totals.container_layers,
        totals.containers,
        totals.bytes,
        totals.markers.whiteouts,
        totals.markers.opaque_dirs,
        totals.markers.internal,
    );
    if !outcome.dry_run {
        out.push_str(&format!(
            "docker root {root}: migrated {} layers and {} container configs to {target}\n",
            outcome.converted, outcome.containers_updated
        ));
        for leftover in &outcome.leftovers {
            out.push_str(&format!(
                "warning: left in place (not a layer of the migrated store): {}\n",
                leftover.display()
            ));
        }
        out.push_str(&format!(
            "next: start dockerd with --storage-driver {target} (or \"storage-driver\": \"{target}\" in /etc/docker/daemon.json)\n"
        ));
        return out;
    }
    out.push_str(&format!(
        "dry run, nothing changed: docker root {root}{}: would convert {summary}\n",
        if plan.resumed {
            " (resuming an interrupted migration)"
        } else {
            ""
        }
    ));
    if let Some(why) = &plan.blocker {
        out.push_str(&format!("would refuse now: {why}\n"));
    }
    out.push('\n');
    let mut rows = vec![
        [
            "LAYER",
            "KIND",
            "FOR",
            "PARENTS",
            "STATE",
            "BYTES",
            "WHITEOUTS",
            "OPAQUE",
            "INTERNAL",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for layer in &plan.layers {
        let (kind, what) = match &layer.kind {
            LayerKind::Image { chain_id } => ("image", short(chain_id).to_string()),
            LayerKind::Init { container } => ("init", short(container).to_string()),
            LayerKind::Rw { container } => ("rw", short(container).to_string()),
            LayerKind::Orphan => ("orphan", "-".to_string()),
        };
        rows.push(vec![
            short(&layer.id).to_string()
                + if layer.id.ends_with("-init") {
                    "-init"
                } else {
                    ""
                },
            kind.to_string(),
            what,
            layer.parents.len().to_string(),
            serde_json::to_value(layer.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            layer.bytes.to_string(),
            layer.markers.whiteouts.to_string(),
            layer.markers.opaque_dirs.to_string(),
            layer.markers.internal.to_string(),
        ]);
    }
    out.push_str(&table(&rows));
    if !plan.containers.is_empty() {
        out.push('\n');
        let mut rows = vec![vec![
            "CONTAINER".to_string(),
            "NAME".to_string(),
            "CONFIG".to_string(),
        ]];
        for container in &plan.containers {
            rows.push(vec![
                short(&container.id).to_string(),
                container.name.clone(),
                container.path.display().to_string(),
            ]);
        }
        out.push_str(&table(&rows));
    }
    out
}

/// Rows padded to the widest cell of each column, two spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let mut widths = vec![0; rows.first().map_or(0, Vec::len)];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_columns() {
        let rows = vec![
            vec!["A".to_string(), "BB".to_string()],
            vec!["xxx".to_string(), "y".to_string()],
        ];
        assert_eq!(table(&rows), "A    BB\nxxx  y\n");
    }
}
