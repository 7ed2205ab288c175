//! Shared by the bench tests (included with `#[path]`): `layerscope bench`
//! with JSON progress on a scratch dir, and the check that the scratch dir
//! is empty afterwards. Compiled alone it holds no tests.
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
