//! Shared by the bench tests (included with `#[path]`): `layerscope bench`
//! with JSON progress on a scratch dir, Ctrl-C to it at a given line, the
//! check that the scratch dir is empty afterwards, and the memory agents'
//! settings a run holds off.
//! Compiled alone it holds no tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

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

/// How an interrupted run ended and what it printed on stderr.
pub struct Interrupted {
    pub status: ExitStatus,
    /// Whether the marker line came, and so the signal was sent.
    pub sent: bool,
    /// Lines up to and including the marker line.
    pub before: Vec<String>,
    /// Lines after it.
    pub after: Vec<String>,
}

/// Spawns `command` in its own process group, as a shell runs a
/// foreground job; once a stderr line contains `marker`, calls `at_marker`
/// and sends the group SIGINT, which is what the terminal's Ctrl-C does.
/// Reads stderr to its end and waits for the exit.
pub fn interrupt_at(mut command: Command, marker: &str, at_marker: impl FnOnce()) -> Interrupted {
    let mut child = command
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut at_marker = Some(at_marker);
    let (mut before, mut after) = (Vec::new(), Vec::new());
    let stderr = BufReader::new(child.stderr.take().unwrap());
    for line in stderr.lines().map_while(Result::ok) {
        if at_marker.is_none() {
            after.push(line);
            continue;
        }
        let reached = line.contains(marker);
        before.push(line);
        if let Some(call) = at_marker.take_if(|_| reached) {
            call();
            nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGINT).unwrap();
        }
    }
    Interrupted {
        status: child.wait().unwrap(),
        sent: at_marker.is_none(),
        before,
        after,
    }
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
