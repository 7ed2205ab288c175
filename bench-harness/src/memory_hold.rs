//! Holds the machine's memory steady for a bench run, and gives it back.
//!
//! Two kernel agents that lend a VM's memory back to its host make a
//! driver's timing depend on when it ran rather than on the driver:
//!
//! - **Free page reporting** (virtio-balloon `REPORTING`, on Firecracker and
//!   many cloud VMs): every free 2 MiB block is handed to the host within
//!   seconds, and the next touch of it waits while the host faults it back
//!   in. Measured on the development VM: the same 64 MiB copy-up took
//!   160–200 ms when its page-cache pages had been handed back and 18–50
//!   ms when they had not; a microsecond append moved 14 ↔ 24 µs with it.
//! - **DAMON proactive reclaim** (a kdamond running a `pageout` scheme, or
//!   the damon_reclaim / damon_lru_sort modules): page cache idle for a
//!   minute is evicted, such as an image's lower files between set-up and
//!   measurement.
//!
//! [`MemoryHold::take`] turns both off for the run (free page reporting by
//! raising `page_reporting_order` past the largest buddy order, so no free
//! block qualifies), then touches as much memory as the run will use so
//! the host backs it before the first measurement. Its `Drop` puts every
//! setting back, after an error or Ctrl-C too. The settings it changed are
//! kept in a state file under /run while it holds them, and a run killed
//! outright (SIGKILL) is mended by the next one; a lock file keeps two
//! runs from saving each other's settings.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::stats::meminfo_bytes;

pub(crate) const REPORTING_ORDER: &str =
    "/sys/module/page_reporting/parameters/page_reporting_order";
pub(crate) const KDAMONDS: &str = "/sys/kernel/mm/damon/admin/kdamonds";
pub(crate) const DAMON_MODULES: [&str; 2] = [
    "/sys/module/damon_reclaim/parameters/enabled",
    "/sys/module/damon_lru_sort/parameters/enabled",
];
const HOLD_DIR: &str = "/run/layerscope";
const GIB: u64 = 1 << 30;

/// A kernel setting the hold changed, and the value to put back.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Changed {
    path: PathBuf,
    was: String,
    now: String,
}

/// The memory agents of this machine held off for a run (see the module
/// doc). Dropping it restores them.
#[derive(Debug)]
pub struct MemoryHold {
    changed: Vec<Changed>,
    description: String,
    /// Held while `changed` is in force; `None` when nothing is.
    lock: Option<Flock<File>>,
}

impl MemoryHold {
    /// A hold that changes nothing, saying why.
    pub fn none(why: impl Into<String>) -> Self {
        Self {
            changed: Vec::new(),
            description: why.into(),
            lock: None,
        }
    }

    /// Turns free page reporting and DAMON reclaim off and, when pages had
    /// been reported, touches up to `touch_bytes` of memory (never leaving
    /// less than a sixteenth of it, at least 1 GiB, available). What it
    /// cannot do goes into [`describe`](Self::describe): the run goes on.
    pub fn take(touch_bytes: u64) -> Self {
        match Self::try_take(touch_bytes) {
            Ok(hold) => hold,
            Err(e) => Self::none(format!("left as is: {e}")),
        }
    }

    fn try_take(touch_bytes: u64) -> io::Result<Self> {
        let lock_path = Path::new(HOLD_DIR).join("memory-hold.lock");
        let file = std::fs::create_dir_all(HOLD_DIR)
            .and_then(|()| File::create(&lock_path))
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", lock_path.display())))?;
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, Errno::EWOULDBLOCK)) => {
                return Ok(Self::none(
                    "left as is: another layerscope bench holds it now",
                ));
            }
            Err((_, errno)) => return Err(errno.into()),
        };
        let mut notes = Vec::new();
        let left = read_state()?;
        if !left.is_empty() {
            restore(&left);
            notes.push(format!(
                "put back {} setting(s) a killed run had changed",
                left.len()
            ));
        }
        let changed = planned_changes()?;
        // Saved before applying, so a kill half-way is mended either way.
        write_state(&changed)?;
        let mut hold = Self {
            changed: Vec::new(),
            description: String::new(),
            lock: Some(lock),
        };
        for change in changed {
            std::fs::write(&change.path, &change.now).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("write {} to {}: {e}", change.now, change.path.display()),
                )
            })?;
            hold.changed.push(change);
        }
        let mut done: Vec<String> = hold.changed.iter().map(Changed::describe).collect();
        if hold
            .changed
            .iter()
            .any(|c| c.path == Path::new(REPORTING_ORDER))
        {
            let began = Instant::now();
            let touched = touch(touch_bytes)?;
            done.push(format!(
                "{:.1} GiB touched in {:.1} s so the host backs it",
                touched as f64 / GIB as f64,
                began.elapsed().as_secs_f64()
            ));
        }
        if done.is_empty() {
            notes.push("nothing to hold (no free page reporting, no DAMON reclaim running)".into());
        } else {
            notes.push(format!("{}; all put back at exit", done.join(", ")));
        }
        hold.description = notes.join("; ");
        Ok(hold)
    }

    /// What the hold did, for the run's log and `results.json`.
    /// Whether this run holds the lock (and so changed what it found).
    pub fn is_taken(&self) -> bool {
        self.lock.is_some()
    }

    pub fn describe(&self) -> &str {
        &self.description
    }
}

impl Drop for MemoryHold {
    fn drop(&mut self) {
        if self.lock.is_none() {
            return;
        }
        restore(&self.changed);
        let _ = std::fs::remove_file(state_file());
    }
}

impl Changed {
    fn describe(&self) -> String {
        let what = if self.path == Path::new(REPORTING_ORDER) {
            "free page reporting off (page_reporting_order".to_string()
        } else if self.path.starts_with(KDAMONDS) {
            let kdamond = self
                .path
                .parent()
                .and_then(Path::file_name)
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            format!("DAMON kdamond {kdamond} paused (state")
        } else {
            format!("DAMON module off ({}", self.path.display())
        };
        format!("{what} {} -> {})", self.was, self.now)
    }
}

/// Every setting to change: the reporting order, running kdamonds, and
/// enabled DAMON reclaim modules.
fn planned_changes() -> io::Result<Vec<Changed>> {
    let mut changes = Vec::new();
    if let Some((order, orders)) = reporting_order()? {
        if order.parse::<u32>().is_ok_and(|o| o < orders) {
            changes.push(Changed {
                path: REPORTING_ORDER.into(),
                was: order,
                now: orders.to_string(),
            });
        }
    }
    for kdamond in numbered_dirs(Path::new(KDAMONDS))? {
        let state = kdamond.join("state");
        if read_trimmed(&state)?.as_deref() == Some("on") {
            changes.push(Changed {
                path: state,
                was: "on".into(),
                now: "off".into(),
            });
        }
    }
    for module in DAMON_MODULES {
        if read_trimmed(Path::new(module))?.as_deref() == Some("Y") {
            changes.push(Changed {
                path: module.into(),
                was: "Y".into(),
                now: "N".into(),
            });
        }
    }
    Ok(changes)
}

/// `page_reporting_order` as written, and the number of buddy orders it
/// must stay below to match a free block; `None` without free page
/// reporting.
pub(crate) fn reporting_order() -> io::Result<Option<(String, u32)>> {
    let Some(order) = read_trimmed(Path::new(REPORTING_ORDER))? else {
        return Ok(None);
    };
    let orders = buddy_orders(&std::fs::read_to_string("/proc/buddyinfo")?)?;
    Ok(Some((order, orders)))
}

/// Puts every setting back, last changed first; a failure is said on one
/// line and the rest still restored.
fn restore(changed: &[Changed]) {
    for change in changed.iter().rev() {
        if let Err(e) = std::fs::write(&change.path, &change.was) {
            eprintln!(
                "bench: could not put {} back to {}: {e}",
                change.path.display(),
                change.was
            );
        }
    }
}

/// The number of buddy allocator orders (`NR_PAGE_ORDERS`): the columns of
/// /proc/buddyinfo after `Node N, zone NAME`. A reporting order this high
/// matches no free block.
fn buddy_orders(buddyinfo: &str) -> io::Result<u32> {
    buddyinfo
        .lines()
        .map(|line| line.split_whitespace().count().saturating_sub(4) as u32)
        .max()
        .filter(|&n| n > 0)
        .ok_or_else(|| io::Error::other("no zone lines in /proc/buddyinfo"))
}

/// The numbered subdirectories of `dir` (DAMON's `0`, `1`, ...), in
/// numeric order; none when `dir` is absent.
pub(crate) fn numbered_dirs(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut dirs: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let index = e.file_name().to_str()?.parse().ok()?;
            Some((index, e.path()))
        })
        .collect();
    dirs.sort();
    Ok(dirs.into_iter().map(|(_, path)| path).collect())
}

/// A sysfs value without its newline, `None` when the file is absent.
pub(crate) fn read_trimmed(path: &Path) -> io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim().to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("read {}: {e}", path.display()),
        )),
    }
}

fn state_file() -> PathBuf {
    Path::new(HOLD_DIR).join("memory-hold.state")
}

/// The settings in force, one `path<TAB>was<TAB>now` line each, written to
/// a temporary name and renamed into place.
fn write_state(changed: &[Changed]) -> io::Result<()> {
    let temporary = Path::new(HOLD_DIR).join(".memory-hold.state.tmp");
    std::fs::write(&temporary, format_state(changed))?;
    std::fs::rename(&temporary, state_file())
}

fn format_state(changed: &[Changed]) -> String {
    changed
        .iter()
        .map(|c| format!("{}\t{}\t{}\n", c.path.display(), c.was, c.now))
        .collect()
}

fn read_state() -> io::Result<Vec<Changed>> {
    let text = match std::fs::read_to_string(state_file()) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(parse_state(&text))
}

fn parse_state(text: &str) -> Vec<Changed> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            Some(Changed {
                path: fields.next()?.into(),
                was: fields.next()?.to_string(),
                now: fields.next()?.to_string(),
            })
        })
        .collect()
}

/// Writes to up to `bytes` of fresh memory and frees it, stopping while a
/// sixteenth of memory (at least 1 GiB) is still available, or on Ctrl-C.
/// Returns the bytes touched.
fn touch(bytes: u64) -> io::Result<u64> {
    const CHUNK: usize = 64 << 20;
    let reserve = (meminfo_bytes("MemTotal")? / 16).max(GIB);
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut touched = 0u64;
    while touched < bytes && !crate::run::interrupted() {
        if touched.is_multiple_of(GIB) && meminfo_bytes("MemAvailable")? < reserve + GIB {
            break;
        }
        // A non-zero fill writes every page (a zeroed Vec may come from
        // untouched memory); black_box keeps the write from being elided.
        held.push(std::hint::black_box(vec![1u8; CHUNK]));
        touched += CHUNK as u64;
    }
    drop(held);
    Ok(touched)
}

/// Waits (up to 5 min) for other bench runs of the test suite to let go
/// of the hold, then takes it.
#[cfg(test)]
pub(crate) fn take_when_free(touch_bytes: u64) -> MemoryHold {
    let began = Instant::now();
    loop {
        let hold = MemoryHold::take(touch_bytes);
        if hold.is_taken() || began.elapsed().as_secs() > 300 {
            return hold;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buddy_orders_counts_the_columns_after_the_zone() {
        let info = "Node 0, zone      DMA      0      0      0      0      0      0      0      0      1      1      3 \n\
                    Node 0, zone   Normal   2178   3767   4400   4260   3262   2466   1588   1261   1141    811   4067 \n";
        assert_eq!(buddy_orders(info).unwrap(), 11);
        assert!(buddy_orders("").is_err());
    }

    #[test]
    fn state_lines_read_back_as_written() {
        let changed = vec![
            Changed {
                path: REPORTING_ORDER.into(),
                was: "9".into(),
                now: "11".into(),
            },
            Changed {
                path: "/sys/kernel/mm/damon/admin/kdamonds/0/state".into(),
                was: "on".into(),
                now: "off".into(),
            },
        ];
        assert_eq!(parse_state(&format_state(&changed)), changed);
        assert_eq!(
            changed[1].describe(),
            "DAMON kdamond 0 paused (state on -> off)"
        );
        assert_eq!(
            changed[0].describe(),
            "free page reporting off (page_reporting_order 9 -> 11)"
        );
    }

    #[test]
    fn take_turns_the_agents_off_and_drop_puts_them_back() {
        let hold = take_when_free(GIB);
        assert!(hold.is_taken(), "not taken: {}", hold.describe());
        let changed = hold.changed.clone();
        if changed.is_empty() {
            assert!(
                hold.describe().contains("nothing to hold"),
                "{}",
                hold.describe()
            );
        }
        for c in &changed {
            assert_eq!(
                read_trimmed(&c.path).unwrap().unwrap(),
                c.now,
                "{}",
                c.path.display()
            );
        }
        // Held: nothing left running that the hold would turn off.
        assert!(planned_changes().unwrap().is_empty());
        assert_eq!(read_state().unwrap(), changed);
        if changed.iter().any(|c| c.path == Path::new(REPORTING_ORDER)) {
            assert!(
                hold.describe().contains("1.0 GiB touched"),
                "{}",
                hold.describe()
            );
        }
        drop(hold);
        for c in &changed {
            assert_eq!(
                read_trimmed(&c.path).unwrap().unwrap(),
                c.was,
                "{}",
                c.path.display()
            );
        }
    }

    #[test]
    fn the_next_run_puts_back_what_a_killed_run_left() {
        // As SIGKILL leaves a run: the settings changed, the state file
        // saying so, and the lock free (its fd closed with the process).
        let mut killed = take_when_free(0);
        assert!(killed.lock.is_some(), "not taken: {}", killed.describe());
        let changed = killed.changed.clone();
        drop(killed.lock.take());
        drop(killed); // with no lock, Drop restores nothing
        for c in &changed {
            assert_eq!(read_trimmed(&c.path).unwrap().unwrap(), c.now);
        }
        let next = take_when_free(0);
        if !changed.is_empty() {
            assert!(
                next.describe().starts_with(&format!(
                    "put back {} setting(s) a killed run had changed",
                    changed.len()
                )),
                "{}",
                next.describe()
            );
        }
        assert_eq!(
            next.changed, changed,
            "the next run holds the same settings"
        );
        drop(next);
        for c in &changed {
            assert_eq!(read_trimmed(&c.path).unwrap().unwrap(), c.was);
        }
    }
}
