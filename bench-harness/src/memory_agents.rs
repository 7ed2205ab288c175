//! What `layerscope doctor` says about the kernel agents that lend a VM's
//! memory back to its host (see `memory_hold.rs` for why a bench run holds
//! them off): whether a virtio balloon reports free pages, and which DAMON
//! reclaim runs. "yes" means the agent is active on this machine; page
//! cache it takes away costs a container's next read a trip to the host
//! or the disk.

use std::io;
use std::path::Path;

use storage_core::features::Feature;

use crate::memory_hold::{DAMON_MODULES, KDAMONDS, REPORTING_ORDER, numbered_dirs, read_trimmed};

const VIRTIO_DEVICES: &str = "/sys/bus/virtio/devices";
/// `device` of a virtio balloon.
const BALLOON_DEVICE_ID: &str = "0x0005";
/// `VIRTIO_BALLOON_F_REPORTING`: the bit of `features` for free page reporting.
const REPORTING_FEATURE_BIT: usize = 5;

/// One line per agent: free page reporting, then DAMON reclaim.
pub fn memory_agents() -> Vec<Feature> {
    vec![free_page_reporting(), damon_reclaim()]
}

fn free_page_reporting() -> Feature {
    const NAME: &str = "vm.free_page_reporting";
    match reporting_balloons() {
        Err(e) => Feature::no(NAME, format!("read {VIRTIO_DEVICES}: {e}")),
        Ok(balloons) if balloons.is_empty() => {
            Feature::no(NAME, "no virtio balloon reports free pages")
        }
        Ok(balloons) => {
            let balloons = balloons.join(", ");
            match reporting_order() {
                Err(e) => Feature::no(NAME, format!("read {REPORTING_ORDER}: {e}")),
                Ok((order, orders)) if order >= orders => Feature::no(
                    NAME,
                    format!(
                        "{balloons} can report free pages, but page_reporting_order \
                         {order} is past the largest order (a bench run holds it off)"
                    ),
                ),
                Ok((order, _)) => Feature::yes(NAME).with_detail(format!(
                    "{balloons} hands free blocks of order {order} and up to the host; \
                     `layerscope bench` holds it off"
                )),
            }
        }
    }
}

/// `page_reporting_order` as a number, and the number of buddy orders it
/// must stay below to match a free block.
fn reporting_order() -> io::Result<(u32, u32)> {
    let (order, orders) = crate::memory_hold::reporting_order()?
        .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
    let order = order
        .parse()
        .map_err(|_| io::Error::other(format!("not a number: {order:?}")))?;
    Ok((order, orders))
}

/// The virtio balloons (`virtioN`) that negotiated free page reporting.
fn reporting_balloons() -> io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(VIRTIO_DEVICES) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut balloons = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if read_trimmed(&path.join("device"))?.as_deref() != Some(BALLOON_DEVICE_ID) {
            continue;
        }
        let features = read_trimmed(&path.join("features"))?.unwrap_or_default();
        if features.as_bytes().get(REPORTING_FEATURE_BIT) == Some(&b'1') {
            balloons.push(
                path.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    balloons.sort();
    Ok(balloons)
}

fn damon_reclaim() -> Feature {
    const NAME: &str = "vm.damon_reclaim";
    match running_damon() {
        Err(e) => Feature::no(NAME, format!("read DAMON's sysfs: {e}")),
        Ok(running) if running.is_empty() => Feature::no(NAME, "no kdamond or DAMON module runs"),
        Ok(running) => Feature::yes(NAME).with_detail(format!(
            "{}; `layerscope bench` holds it off",
            running.join(", ")
        )),
    }
}

/// Each running kdamond with its schemes' actions (`kdamond 0 (pageout)`),
/// then each enabled DAMON module.
fn running_damon() -> io::Result<Vec<String>> {
    let mut running = Vec::new();
    for kdamond in numbered_dirs(Path::new(KDAMONDS))? {
        if read_trimmed(&kdamond.join("state"))?.as_deref() != Some("on") {
            continue;
        }
        let mut actions = Vec::new();
        for context in numbered_dirs(&kdamond.join("contexts"))? {
            for scheme in numbered_dirs(&context.join("schemes"))? {
                if let Some(action) = read_trimmed(&scheme.join("action"))? {
                    actions.push(action);
                }
            }
        }
        let name = kdamond
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        running.push(match actions.is_empty() {
            true => format!("kdamond {name}"),
            false => format!("kdamond {name} ({})", actions.join(", ")),
        });
    }
    for module in DAMON_MODULES {
        if read_trimmed(Path::new(module))?.as_deref() == Some("Y") {
            // /sys/module/<name>/parameters/enabled
            let name = Path::new(module)
                .ancestors()
                .nth(2)
                .and_then(Path::file_name)
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            running.push(name);
        }
    }
    Ok(running)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory_hold::take_when_free;

    /// Doctor says "yes" for what a bench run would hold off, "no" while a
    /// run holds it, and "yes" again once the run lets go.
    #[test]
    fn doctor_agrees_with_what_a_bench_run_holds() {
        let hold = take_when_free(1 << 30);
        assert!(hold.is_taken(), "not taken: {}", hold.describe());
        let during = memory_agents();
        for feature in &during {
            assert!(!feature.supported, "still active while held: {feature:?}");
        }
        let held = hold.describe().to_string();
        drop(hold);
        let after = memory_agents();
        for feature in &after {
            // A reporting balloon is only "yes" when the hold changed the
            // order; DAMON is "yes" exactly when the hold paused something.
            let changed = match feature.name.as_str() {
                "vm.free_page_reporting" => held.contains("page_reporting_order"),
                _ => held.contains("DAMON"),
            };
            if feature.name == "vm.damon_reclaim" {
                assert_eq!(feature.supported, changed, "{feature:?} vs {held}");
            } else if feature.supported {
                assert!(changed, "{feature:?} vs {held}");
            }
            if !feature.supported {
                assert!(
                    !feature.detail.is_empty(),
                    "a no needs its reason: {feature:?}"
                );
            }
        }
        assert_eq!(after.len(), 2, "{after:?}");
    }
}
