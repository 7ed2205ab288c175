//! The "why" of a result: ebpf-probes' overlayfs counters (copy-ups by
//! kind, bytes copied up, whiteouts, opaque dirs, events lost) taken
//! around each workload run. The tracer is attached only for the counting
//! runs (the file workloads' counting pass, docker mode's counting
//! containers); without it (not root, no tracepoints) results carry no
//! counters and `results.json` says why.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

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

    /// Adds the counters of another stretch of the same run (a later round).
    pub fn add(&mut self, other: &ProbeCounters) {
        self.copy_ups_data += other.copy_ups_data;
        self.copy_ups_metadata += other.copy_ups_metadata;
        self.copy_ups_dir += other.copy_ups_dir;
        self.copy_up_bytes += other.copy_up_bytes;
        self.whiteouts += other.whiteouts;
        self.opaque_dirs += other.opaque_dirs;
        self.events_lost += other.events_lost;
    }
}

/// The tracer if it could start, or why not. While it runs, a thread
/// drains its event ring every [`DRAIN_EVERY`]: the bench reads only the
/// counters, and an undrained ring would fill and count every later event
/// as lost.
pub struct Probes {
    /// Held for its drop (stop and join), which runs before the tracer's.
    _drainer: Option<Drainer>,
    tracer: Result<Arc<Mutex<OverlayTracer>>, String>,
}

/// Why the tracer could not start, once it failed in this process. The
/// kernel does not change within a run, so a later start neither tries
/// again nor says it again.
static START_FAILED: OnceLock<String> = OnceLock::new();

/// How often the event ring is emptied (the 100,000-event burst test
/// loses nothing with a consumer this eager).
const DRAIN_EVERY: Duration = Duration::from_millis(100);

/// The draining thread, stopped and joined on drop.
struct Drainer {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Drainer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

fn lock(tracer: &Mutex<OverlayTracer>) -> MutexGuard<'_, OverlayTracer> {
    tracer
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Probes {
    pub fn start() -> Self {
        if let Some(why) = START_FAILED.get() {
            return Self {
                _drainer: None,
                tracer: Err(why.clone()),
            };
        }
        match OverlayTracer::start(TracerOptions::default()) {
            Ok(tracer) => {
                let tracer = Arc::new(Mutex::new(tracer));
                let stop = Arc::new(AtomicBool::new(false));
                let handle = {
                    let (tracer, stop) = (Arc::clone(&tracer), Arc::clone(&stop));
                    std::thread::Builder::new()
                        .name("bench-probe-drain".into())
                        .spawn(move || {
                            while !stop.load(Ordering::Relaxed) {
                                drop(lock(&tracer).drain_events());
                                std::thread::sleep(DRAIN_EVERY);
                            }
                        })
                        .ok()
                };
                Self {
                    _drainer: Some(Drainer { stop, handle }),
                    tracer: Ok(tracer),
                }
            }
            Err(e) => {
                let why = e.to_string();
                eprintln!("bench: probes unavailable, results carry no copy-up counters: {why}");
                let _ = START_FAILED.set(why.clone());
                Self {
                    _drainer: None,
                    tracer: Err(why),
                }
            }
        }
    }

    /// No tracer, for the reason given (e.g. `--no-probes`).
    pub fn disabled(why: &str) -> Self {
        Self {
            _drainer: None,
            tracer: Err(format!("disabled by {why}")),
        }
    }

    /// Whether the tracer runs.
    pub fn running(&self) -> bool {
        self.tracer.is_ok()
    }

    /// The counters so far, when the tracer runs.
    pub fn totals(&self) -> Option<ebpf_probes::events::Totals> {
        let tracer = self.tracer.as_ref().ok()?;
        let tracer = lock(tracer);
        // Mounts made since the last look (this workload's overlay).
        let _ = tracer.refresh_mounts();
        tracer.totals().ok()
    }

    /// The strategy in use, or why there is none.
    pub fn describe(&self) -> String {
        match &self.tracer {
            Ok(tracer) => lock(tracer).strategy().to_string(),
            Err(why) => format!("unavailable: {why}"),
        }
    }
}
