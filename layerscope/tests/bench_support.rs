//! Shared by the bench tests (included with `#[path]`): `layerscope bench`
//! with JSON progress on a scratch dir, and the check that the scratch dir
//! is empty afterwards, and the memory agents' settings a run holds off.
//! Compiled alone it holds no tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// `layerscope bench ARGS --json --scratch-dir SCRATCH --out OUT`.
pub fn bench(scratch: &Path, out: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_layerscope"));
    command
        .arg("bench")
        .args(args)
        .arg("--json")
        .arg("--scratch-dir")
        .arg(scratch)
        .arg("--out")
        .arg(out);
    command
}

/// Every loop file, mount dir and daemon dir the run made is gone.
pub fn assert_nothing_left_in(scratch: &Path) {
    let left: Vec<_> = std::fs::read_dir(scratch)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left in the scratch dir: {left:?}");
}

/// The kernel's memory agents a bench run holds off and must put back:
/// free page reporting's order, every kdamond's state and the DAMON
/// reclaim modules, as (file, value) for those this machine has.
pub fn memory_agent_settings() -> Vec<(String, String)> {
    let mut files = vec![
        "/sys/module/page_reporting/parameters/page_reporting_order".to_string(),
        "/sys/module/damon_reclaim/parameters/enabled".to_string(),
        "/sys/module/damon_lru_sort/parameters/enabled".to_string(),
    ];
    if let Ok(kdamonds) = std::fs::read_dir("/sys/kernel/mm/damon/admin/kdamonds") {
        for kdamond in kdamonds.flatten() {
            files.push(format!("{}/state", kdamond.path().display()));
        }
    }
    files.sort();
    files
        .into_iter()
        .filter_map(|file| {
            let value = std::fs::read_to_string(&file).ok()?;
            Some((file, value.trim().to_string()))
        })
        .collect()
}
