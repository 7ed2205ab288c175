//! The command line, as documented in the README: global options and one
//! subcommand per area (layer, image, container, volume, docker, trace,
//! sidecar, bench, doctor).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "layerscope", version, about = "Docker storage drivers, made visible and comparable")]
pub struct Cli {
    /// layerscope's data root (Docker's layout: <root>/<driver>/, <root>/image/<driver>/layerdb, ...).
    #[arg(long, global = true, env = "LAYERSCOPE_ROOT", default_value = "/var/lib/layerscope")]
    pub root: PathBuf,
    /// Storage driver: overlay2, aufs, vfs, btrfs, devicemapper.
    #[arg(long, global = true, env = "LAYERSCOPE_DRIVER", default_value = "overlay2")]
    pub driver: String,
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
}
