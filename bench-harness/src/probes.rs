//! The "why" of a result: ebpf-probes' overlayfs counters (copy-ups by
//! kind, bytes copied up, whiteouts, opaque dirs, events lost) taken
//! around each workload run. The tracer runs once for the whole bench;
//! without it (not root, no tracepoints) results carry no counters and
//! `results.json` says why.

use ebpf_probes::tracer::{OverlayTracer, TracerOptions};
use serde::Serialize;

/// The overlayfs work one workload run caused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProbeCounters {
    pub copy_ups_data: u64,
    pub copy_ups_metadata: u64,
    pub copy_ups_dir: u64,
    pub copy_up_bytes: u64,
    pub whiteouts: u64,
    pub opaque_dirs: u64,
    pub events_lost: u64,
}

impl ProbeCounters {
    pub fn between(
        before: &ebpf_probes::events::Totals,
        after: &ebpf_probes::events::Totals,
    ) -> Self {
        Self {
            copy_ups_data: after.data.saturating_sub(before.data),
            copy_ups_metadata: after.metadata.saturating_sub(before.metadata),
            copy_ups_dir: after.dir.saturating_sub(before.dir),
            copy_up_bytes: after.bytes.saturating_sub(before.bytes),
            whiteouts: after.whiteouts.saturating_sub(before.whiteouts),
            opaque_dirs: after.opaque.saturating_sub(before.opaque),
            events_lost: after.lost.saturating_sub(before.lost),
        }
    }
}

/// The tracer if it could start, or why not.
pub struct Probes {
    tracer: Result<OverlayTracer, String>,
}

impl Probes {
    pub fn start() -> Self {
        let tracer = OverlayTracer::start(TracerOptions::default()).map_err(|e| e.to_string());
        if let Err(why) = &tracer {
            eprintln!("bench: probes unavailable, results carry no copy-up counters: {why}");
        }
        Self { tracer }
    }

    /// No tracer, for the reason given (e.g. `--no-probes`).
    pub fn disabled(why: &str) -> Self {
        Self {
            tracer: Err(format!("disabled by {why}")),
        }
    }

    /// The counters so far, when the tracer runs.
    pub fn totals(&self) -> Option<ebpf_probes::events::Totals> {
        let tracer = self.tracer.as_ref().ok()?;
        // Mounts made since the last look (this workload's overlay).
        let _ = tracer.refresh_mounts();
        tracer.totals().ok()
    }

    /// The strategy in use, or why there is none.
    pub fn describe(&self) -> String {
        match &self.tracer {
            Ok(tracer) => tracer.strategy().to_string(),
            Err(why) => format!("unavailable: {why}"),
        }
    }
}
