//! The devicemapper column of the benchmark, on a kernel with dm-thin:
//! `cargo xtask vm-test devicemapper_is_benchmarked_beside_native -p
//! bench-harness` runs it in Debian's kernel under qemu (the host kernel
//! has no device-mapper and says so in one line). Copy-up, append storm
//! and create/delete storm run on devicemapper and native in one run, the
//! summary is printed, and the behaviour that sets devicemapper apart is
//! checked: its copy-on-write is per 64 KiB block, so the first append to
//! a lower file costs about the same whatever the file's size, where
//! overlay2 on ext4 copies the whole file.

use bench_harness::{BenchConfig, Scale, run_bench};

fn dm_thin() -> Result<(), String> {
    let feature = storage_core::features::probe_dm_thin_pool();
    if feature.supported {
        Ok(())
    } else {
        Err(feature.detail)
    }
}

fn p50(results: &bench_harness::report::Results, target: &str, workload: &str) -> f64 {
    results
        .rows
        .iter()
        .find(|r| r.target == target && r.workload == workload)
        .unwrap_or_else(|| panic!("no {workload} row for {target}"))
        .latency
        .p50_seconds
}

#[test]
fn devicemapper_is_benchmarked_beside_native() {
    testkit::require_root!();
    if let Err(why) = dm_thin() {
        testkit::feature_available(false, "dm-thin-pool", why);
        return;
    }
    let out = tempfile::tempdir().expect("out dir");
    let config = BenchConfig {
        targets: vec!["native".into(), "devicemapper".into()],
        workloads: vec![
            "copy-up".into(),
            "append-storm".into(),
            "create-delete".into(),
        ],
        scale: Scale::Tiny,
        repeat: 1,
        out: out.path().to_path_buf(),
        no_probes: true,
        hold_memory: true,
        docker_drivers: Vec::new(),
        scratch_dir: std::path::PathBuf::from("/var/tmp"),
    };
    let results = run_bench(&config, &mut |_| {}).expect("bench run");
    println!("{}", results.summary());
    assert!(
        results.unavailable.is_empty(),
        "unavailable: {:?}",
        results.unavailable
    );
    // Block-level copy-on-write: a 1 MiB file's first append costs about
    // what a 4 KiB file's does (one 64 KiB block either way).
    let small = p50(&results, "devicemapper", "copy-up/4KiB");
    let large = p50(&results, "devicemapper", "copy-up/1MiB");
    println!("devicemapper copy-up p50: 4 KiB {small:.6} s, 1 MiB {large:.6} s");
    assert!(
        large < small * 5.0,
        "copy-up grows with file size on devicemapper: 4 KiB {small} s, 1 MiB {large} s"
    );
}
