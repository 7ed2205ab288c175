//! A file workload on every target at once, round by round: every
//! target's stack is built and populated first, then round 0 of the
//! workload runs on each target in turn, then round 1, and so on (each
//! round starting one target further, so no target always follows the
//! same neighbour). A target's samples and native's are thus taken over
//! the same stretch of time, and a slow spell of the machine weighs on
//! both sides of a ratio alike. Each target's filesystem is synced after
//! each of its rounds, so no target's writeback runs during another's.

use std::path::PathBuf;

use testkit::ScratchFs;

use crate::BenchError;
use crate::probes::{ProbeCounters, Probes};
use crate::report::{ResultRow, RoundP50};
use crate::run::{RowTarget, row_of};
use crate::scale::Scale;
use crate::stats::device_bytes_written;
use crate::target::{Stack, Target};
use crate::workloads::{Outcome, Round, Workload, sync_filesystem};

/// One target's part in an interleaved workload.
pub(crate) struct Lane<'a> {
    target: &'a Target,
    fs: &'a ScratchFs,
    stack: Stack,
    /// The container views the workload runs on (`Workload::containers`).
    roots: Vec<PathBuf>,
    written_before: Option<u64>,
    probes: Option<ProbeCounters>,
    /// Merged over the rounds, one per label, in the workload's order.
    outcomes: Vec<Merged>,
}

/// A label's outcome merged over the rounds, with each round's p50.
struct Merged {
    outcome: Outcome,
    rounds: Vec<RoundP50>,
}

impl<'a> Lane<'a> {
    /// Populates the image layer of `stack` and mounts its container views.
    pub(crate) fn set_up(
        target: &'a Target,
        fs: &'a ScratchFs,
        mut stack: Stack,
        workload: &dyn Workload,
        scale: Scale,
    ) -> Result<Self, BenchError> {
        let image = stack.image_root()?;
        workload
            .populate(&image, scale)
            .map_err(|e| workload_error(workload, target, e))?;
        // Synced after the container layer exists: vfs, btrfs and aufs
        // copy or snapshot at create time, which is not the workload's
        // writing (stack-depth measures creation), and docker mode counts
        // from `docker start` the same way.
        let roots = stack.container_roots(workload.containers(scale))?;
        sync_filesystem(fs.path()).map_err(|e| workload_error(workload, target, e))?;
        Ok(Self {
            target,
            fs,
            stack,
            roots,
            written_before: fs.device().and_then(device_bytes_written),
            probes: None,
            outcomes: Vec::new(),
        })
    }

    /// Runs `round` of `workload` on this lane's root, syncs its
    /// filesystem and adds the outcomes and probe counters to the lane's.
    pub(crate) fn run_round(
        &mut self,
        workload: &dyn Workload,
        scale: Scale,
        round: Round,
        probes: &Probes,
    ) -> Result<(), BenchError> {
        let error = |e| workload_error(workload, self.target, e);
        let before = probes.totals();
        let outcomes = workload
            .run_views(&self.roots, scale, round)
            .map_err(error)?;
        sync_filesystem(self.fs.path()).map_err(error)?;
        if let Some(counters) = before
            .zip(probes.totals())
            .map(|(before, after)| ProbeCounters::between(&before, &after))
        {
            self.probes.get_or_insert_default().add(&counters);
        }
        for outcome in outcomes {
            // A round's own p50, for `ratios.rs` to pair with native's
            // round of the same index (a whole run is no round).
            let this_round = (round.of > 1 && outcome.latencies.count() > 0).then(|| RoundP50 {
                round: round.index,
                p50_seconds: outcome.latencies.summary().p50_seconds,
            });
            match self
                .outcomes
                .iter_mut()
                .find(|m| m.outcome.label == outcome.label)
            {
                Some(earlier) => {
                    earlier.outcome.absorb(outcome);
                    earlier.rounds.extend(this_round);
                }
                None => self.outcomes.push(Merged {
                    outcome,
                    rounds: this_round.into_iter().collect(),
                }),
            }
        }
        Ok(())
    }

    /// Tears the stack down, gives its blocks back and returns the rows.
    pub(crate) fn finish(self, repeat: usize) -> Result<Vec<ResultRow>, BenchError> {
        let written_after = self.fs.device().and_then(device_bytes_written);
        let device_bytes = self
            .written_before
            .zip(written_after)
            .map(|(before, after)| after.saturating_sub(before));
        self.stack.finish()?;
        crate::run::give_back_space(self.fs);
        let target = RowTarget::of(self.target);
        Ok(self
            .outcomes
            .into_iter()
            .map(|merged| ResultRow {
                rounds: merged.rounds,
                ..row_of(
                    &target,
                    merged.outcome,
                    repeat,
                    device_bytes,
                    self.probes.clone(),
                )
            })
            .collect())
    }
}

/// Runs `workload` on every lane, round by round, and returns
/// each lane's rows.
pub(crate) fn run_rounds(
    mut lanes: Vec<Lane<'_>>,
    workload: &dyn Workload,
    scale: Scale,
    repeat: usize,
    probes: &Probes,
) -> Result<Vec<ResultRow>, BenchError> {
    let rounds = scale.rounds();
    for index in 0..rounds {
        crate::run::check_interrupted()?;
        let round = Round { index, of: rounds };
        for k in 0..lanes.len() {
            let lane = (index + k) % lanes.len();
            lanes[lane].run_round(workload, scale, round, probes)?;
        }
    }
    let mut rows = Vec::new();
    for lane in lanes {
        rows.extend(lane.finish(repeat)?);
    }
    Ok(rows)
}

pub(crate) fn workload_error(
    workload: &dyn Workload,
    target: &Target,
    source: std::io::Error,
) -> BenchError {
    BenchError::Workload {
        workload: workload.name().to_string(),
        target: target.name.to_string(),
        source,
    }
}
