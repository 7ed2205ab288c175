//! `cargo xtask build-ebpf`: compiles `ebpf-probes/bpf/*.bpf.c` through the
//! crate's build script, with clang and bpftool required (a plain
//! `cargo build` only warns when they are missing).

use crate::run::{cargo, run as run_command};

/// Set for every cargo command of `ci` and `bench`, so the build script
/// fails instead of embedding empty objects, and so all of them agree on
/// the environment and do not rebuild one another's artefacts.
pub const REQUIRE_BPF_ENV: &str = "LAYERSCOPE_BPF_REQUIRED";

pub fn run() -> anyhow::Result<()> {
    crate::deps::run(&crate::deps::Args { dry_run: false })?;
    build()
}

pub fn build() -> anyhow::Result<()> {
    run_command(
        cargo()
            .args(["build", "--package", "ebpf-probes"])
            .env(REQUIRE_BPF_ENV, "1"),
    )
}
