//! One module per subcommand; [`dispatch`] routes a parsed command line.

pub mod bench;
pub mod container;
pub mod docker;
pub mod doctor;
pub mod layer;
pub mod store;

use crate::cli::{Cli, Command, DockerCommand};

pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Doctor { json } => doctor::run(json),
        Command::Layer(command) => {
            let layers = store::open_layers(&cli.root, &cli.driver, &cli.storage_opt)?;
            layer::run(&layers, command)
        }
        Command::Container(command) => {
            let layers = store::open_layers(&cli.root, &cli.driver, &cli.storage_opt)?;
            let containers = storage_core::container::ContainerStore::open(&cli.root, &layers)?;
            container::run(&containers, command)
        }
        Command::Docker(DockerCommand::Inspect { docker_root, table }) => {
            docker::inspect(&docker_root, !table)
        }
        Command::Bench(args) => bench::run(args),
    }
}
