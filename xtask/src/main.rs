//! `cargo xtask`: the project's automation, so that a fresh Debian machine
//! needs only `cargo xtask ci` (tests) or `cargo xtask bench` (the main job).
//! Each subcommand lives in its own module; `deps` runs first in `ci` and
//! `bench` so that neither depends on anything installed by hand.

mod bench;
mod build_ebpf;
mod ci;
mod deps;
mod repeatability;
mod run;
mod vm_test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "layerscope project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the Debian packages the project needs (apt-get, only what is missing).
    Deps(deps::Args),
    /// Compile the BPF programs (ebpf-probes/bpf/*.bpf.c) with clang, failing if clang is missing.
    BuildEbpf,
    /// Everything CI checks: deps, fmt, clippy, build-ebpf, all tests (privileged ones too).
    Ci(ci::Args),
    /// The main job: compare the storage drivers on write-heavy workloads.
    Bench(bench::Args),
    /// Run privileged tests in a guest kernel (qemu) that has what the host lacks (dm-thin-pool).
    VmTest(vm_test::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Deps(args) => deps::run(&args),
        Command::BuildEbpf => build_ebpf::run(),
        Command::Ci(args) => ci::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::VmTest(args) => vm_test::run(&args),
    }
}
