//! `cargo xtask ci`: what CI checks, in order of cost: deps, fmt, the BPF
//! build, clippy on every target, then every test (CI runs as root, so the
//! privileged tests with real mounts, loop devices and BPF run too). Prints
//! the time of each step and the total.

use std::time::Instant;

use crate::build_ebpf::REQUIRE_BPF_ENV;
use crate::run::{cargo, run as run_command};

#[derive(clap::Args)]
pub struct Args {
    /// Only run tests whose name contains this filter (passed to cargo test).
    pub filter: Option<String>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut timings = Vec::new();
    let mut step = |name: &'static str, f: &mut dyn FnMut() -> anyhow::Result<()>| {
        let begun = Instant::now();
        eprintln!("== xtask ci: {name}");
        let result = f();
        timings.push((name, begun.elapsed()));
        result
    };

    step("deps", &mut || {
        crate::deps::run(&crate::deps::Args { dry_run: false })
    })?;
    step("fmt", &mut || {
        run_command(cargo().args(["fmt", "--all", "--", "--check"]))
    })?;
    step("build-ebpf", &mut crate::build_ebpf::build)?;
    step("clippy", &mut || {
        run_command(
            cargo()
                .args([
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ])
                .env(REQUIRE_BPF_ENV, "1"),
        )
    })?;
    step("test", &mut || {
        let mut command = cargo();
        command
            .args(["test", "--workspace", "--no-fail-fast"])
            .env(REQUIRE_BPF_ENV, "1")
            .env("RUST_BACKTRACE", "1");
        if let Some(filter) = &args.filter {
            command.arg("--").arg(filter);
        }
        run_command(&mut command)
    })?;

    // What this host's kernel lacks (dm-thin-pool) runs in a guest kernel:
    // the devicemapper tests, the conformance scenario with its
    // devicemapper case (against overlay2-ext4: the guest has no FUSE) and
    // the benchmark's devicemapper column, in one boot. The rest of the
    // conformance binary runs on the host above.
    step("vm-test", &mut || {
        vm_test_retrying_once("devmapper conformance", &|| crate::vm_test::Args {
            filters: vec![
                "devmapper".into(),
                "every_driver_gives_the_same_results".into(),
                "devicemapper_is_benchmarked_beside_native".into(),
            ],
            env: vec!["LAYERSCOPE_CONFORMANCE_CASES=devicemapper,overlay2-ext4".into()],
            packages: vec!["storage-core".into(), "bench-harness".into()],
            timeout: 1200,
            memory: 2048,
            scratch_gib: 16,
        })
    })?;

    // The fentry and kprobe rungs of ebpf-probes, which this host's kernel
    // refuses, run exact in the guest kernel (Debian 6.1).
    step("vm-test-bpf", &mut || {
        vm_test_retrying_once("strategies", &|| crate::vm_test::Args {
            filters: vec!["strategies".into()],
            env: Vec::new(),
            packages: vec!["ebpf-probes".into()],
            timeout: 1200,
            memory: 2048,
            scratch_gib: 4,
        })
    })?;

    for (name, took) in &timings {
        eprintln!("xtask ci: {name:<11} {:>7.1} s", took.as_secs_f64());
    }
    eprintln!(
        "xtask ci: total       {:>7.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs guest-kernel tests, and once more when the first attempt fails:
/// the guest runs under software emulation (KVM aborts on these hosts),
/// where an RCU stall of an emulated CPU has been seen once — a fault of
/// TCG timing, not of a test. The first failure is printed in full; a
/// failure that repeats fails CI.
fn vm_test_retrying_once(
    what: &str,
    args: &dyn Fn() -> crate::vm_test::Args,
) -> anyhow::Result<()> {
    match crate::vm_test::run(&args()) {
        Ok(()) => Ok(()),
        Err(first) => {
            eprintln!(
                "xtask ci: vm-test {what} failed once ({first:#}); running it again to tell \
                 a stall of the emulated guest from a real failure"
            );
            crate::vm_test::run(&args())
        }
    }
}
