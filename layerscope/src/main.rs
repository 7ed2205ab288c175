//! The `layerscope` binary: the CLI over storage-core, ebpf-probes and
//! bench-harness, and the Prometheus sidecar. Parsing lives in [`cli`], each
//! command in its own module under [`commands`]; errors end here as one line
//! on stderr and a non-zero exit.

mod cli;
mod commands;
mod sidecar;

use clap::Parser;

fn main() -> std::process::ExitCode {
    // The aufs driver's FUSE union re-executes this binary to serve a
    // mount that outlives the command that made it.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == "__union-serve")
    {
        return match storage_core::unionfs::serve_from_env() {
            Some(Ok(())) => std::process::ExitCode::SUCCESS,
            Some(Err(e)) => {
                eprintln!("layerscope __union-serve: {e}");
                std::process::ExitCode::FAILURE
            }
            None => {
                eprintln!("layerscope __union-serve: LAYERSCOPE_UNION_SERVE not set");
                std::process::ExitCode::FAILURE
            }
        };
    }
    // `layerscope bench --docker` runs this binary inside its containers
    // to time the workloads there and print them as JSON.
    let mut args = std::env::args();
    if args
        .nth(1)
        .is_some_and(|arg| arg == bench_harness::docker::in_container::SUBCOMMAND)
    {
        let rest: Vec<String> = args.collect();
        return match bench_harness::docker::in_container::main(&rest) {
            Ok(report) => {
                println!("{report}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!(
                    "layerscope {}: {e}",
                    bench_harness::docker::in_container::SUBCOMMAND
                );
                std::process::ExitCode::FAILURE
            }
        };
    }
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LAYERSCOPE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match commands::dispatch(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("layerscope: {}", one_line(&error));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, outermost first.
fn one_line(error: &anyhow::Error) -> String {
    error
        .chain()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}
