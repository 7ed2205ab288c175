//! One module per subcommand; [`dispatch`] routes a parsed command line.

use crate::cli::{Cli, Command};

pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Doctor { json } => {
            let _ = json;
            Ok(())
        }
    }
}
