//! The command line, as documented in the README: global options and one
//! subcommand per area (layer, image, container, volume, docker, trace,
//! sidecar, bench, doctor).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::commands::bench::BenchArgs;
use crate::commands::container::ContainerCommand;
use crate::commands::layer::LayerCommand;
use crate::commands::sidecar::SidecarArgs;
use crate::commands::volume::VolumeCommand;

#[derive(Parser)]
#[command(
    name = "layerscope",
    version,
    about = "Docker storage drivers, made visible and comparable"
)]
pub struct Cli {
    /// layerscope's data root (Docker's layout: <root>/<driver>/, <root>/image/<driver>/layerdb, ...).
    #[arg(
        long,
        global = true,
        env = "LAYERSCOPE_ROOT",
        default_value = "/var/lib/layerscope"
    )]
    pub root: PathBuf,
    /// Storage driver: overlay2, aufs, vfs, btrfs, devicemapper.
    #[arg(
        long,
        global = true,
        env = "LAYERSCOPE_DRIVER",
        default_value = "overlay2"
    )]
    pub driver: String,
    /// Driver options as key=value, e.g. overlay2.metacopy=on (repeatable).
    #[arg(long = "storage-opt", global = true)]
    pub storage_opt: Vec<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// What this kernel supports, each feature probed for real.
    Doctor {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Image layers in Docker's layerdb format.
    #[command(subcommand)]
    Layer(LayerCommand),
    /// Images in Docker's image store: load and save in `docker save` format.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Containers' storage: init and rw layers, mounts, diffs, commits, sizes.
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Docker's local volumes: create, ls, inspect, rm, prune.
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Read a real Docker data root (never writes to it).
    #[command(subcommand)]
    Docker(DockerCommand),
    /// Compare the storage drivers on write-heavy workloads, as ratios to native.
    Bench(BenchArgs),
    /// Serve Prometheus metrics (/metrics) and health (/healthz) until SIGTERM.
    Sidecar(SidecarArgs),
    /// Live overlayfs events from the BPF probes: copy-ups, whiteouts, opaque dirs.
    Trace(crate::commands::trace::TraceArgs),
    /// Convert a stopped Docker's storage in place (aufs <-> overlay2).
    #[command(subcommand)]
    Migrate(crate::commands::migrate::MigrateCommand),
}

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Load a `docker save` archive; prints each image reference, the last one last.
    Load { archive: PathBuf },
    /// Write images as a `docker save` archive that `docker load` accepts.
    Save {
        #[arg(required = true)]
        images: Vec<String>,
        #[arg(short = 'o', long)]
        output: PathBuf,
    },
    /// List images.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Remove images (untag, then delete unused layers).
    Rm {
        #[arg(required = true)]
        images: Vec<String>,
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Subcommand)]
pub enum DockerCommand {
    /// Images, layers and containers of a Docker data root, as JSON.
    Inspect {
        #[arg(long, default_value = "/var/lib/docker")]
        docker_root: PathBuf,
        /// A table for people instead of JSON.
        #[arg(long)]
        table: bool,
    },
}
