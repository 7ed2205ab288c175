//! One module per subcommand; [`dispatch`] routes a parsed command line.

pub mod bench;
pub mod container;
pub mod docker;
pub mod doctor;
pub mod image;
pub mod layer;
pub mod migrate;
pub mod sidecar;
pub mod store;
pub mod trace;
pub mod volume;

use crate::cli::{Cli, Command, DockerCommand, ImageCommand};

pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Doctor { json } => doctor::run(json),
        Command::Layer(command) => {
            let layers = store::open_layers(&cli.root, &cli.driver, &cli.storage_opt)?;
            layer::run(&layers, command)
        }
        Command::Image(command) => match command {
            ImageCommand::Load { archive } => image::load(&cli.root, &cli.driver, &archive),
            ImageCommand::Save { images, output } => {
                image::save(&cli.root, &cli.driver, &images, &output)
            }
            ImageCommand::Ls { json } => image::list(&cli.root, &cli.driver, json),
            ImageCommand::Rm { images, force } => {
                image::remove(&cli.root, &cli.driver, &images, force)
            }
        },
        Command::Container(command) => {
            let layers = store::open_layers(&cli.root, &cli.driver, &cli.storage_opt)?;
            let images = storage_core::image::ImageStore::open(&cli.root, &cli.driver)?;
            let containers = storage_core::container::ContainerStore::open(&cli.root, &layers)?;
            container::run(&containers, &images, command)
        }
        Command::Docker(DockerCommand::Inspect { docker_root, table }) => {
            docker::inspect(&docker_root, !table)
        }
        Command::Volume(command) => volume::run(&cli.root, command),
        Command::Bench(args) => bench::run(args),
        Command::Sidecar(args) => sidecar::run(&cli.root, &cli.driver, &cli.storage_opt, args),
        Command::Trace(args) => trace::run(&cli.root, args),
        Command::Migrate(command) => migrate::run(command),
    }
}
