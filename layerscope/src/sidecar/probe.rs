//! What the sidecar reads from the BPF probes: the [`ProbeSource`] trait
//! (status and counters read at scrape time, attributed events drained by
//! the aggregator), and [`Detached`], the source used while no probe is
//! attached. The real probe wiring connects in one place: [`open`].
//!
//! Events arrive already attributed (overlay mount -> layer -> container,
//! by the probes' attribution module): `container` is the container's id
//! or `None` for the host. The sidecar never invents events: a detached
//! source reports every program as not attached and yields nothing.

use std::time::{Duration, Instant};

/// How a copy-up copied: file data, metadata only (metacopy), or a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CopyUpKind {
    Data,
    Metadata,
    Dir,
}

impl CopyUpKind {
    pub const ALL: [CopyUpKind; 3] = [CopyUpKind::Data, CopyUpKind::Metadata, CopyUpKind::Dir];

    /// The `kind` label value.
    pub fn label(self) -> &'static str {
        match self {
            CopyUpKind::Data => "data",
            CopyUpKind::Metadata => "metadata",
            CopyUpKind::Dir => "dir",
        }
    }
}

/// One attributed probe event, made by [`OverlayProbes`] (and by tests).
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeEvent {
    /// A copy-up finished: `bytes` copied, the writer blocked `duration`.
    CopyUp {
        container: Option<String>,
        driver: String,
        kind: CopyUpKind,
        bytes: u64,
        duration: Duration,
    },
    /// A whiteout was created (unlink, rmdir or rename of a lower entry).
    Whiteout {
        container: Option<String>,
        driver: String,
    },
    /// Pages entered the page cache on behalf of a container (by cgroup).
    PageCacheAdded {
        container: Option<String>,
        bytes: u64,
    },
}

/// One BPF program and how it is attached (`layerscope_probe_attached`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramStatus {
    /// e.g. `copy_up`, `whiteout`, `page_cache`.
    pub program: String,
    /// `fentry`, `kprobe`, `tracepoint`, or `none` when not attached.
    pub mode: String,
    pub attached: bool,
}

/// What the probes report at scrape time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeStatus {
    /// The strategy of the ladder in use: `fentry`, `kprobe`,
    /// `tracepoint`, or `none`.
    pub strategy: String,
    pub programs: Vec<ProgramStatus>,
    /// Events the kernel side could not deliver (ring buffer full), cumulative.
    pub events_lost: u64,
    /// Page-cache bytes read by more than one container and held once,
    /// per layer chain-id (`None` when the page-cache program is not attached).
    pub page_cache_shared: Option<Vec<(String, u64)>>,
    /// When the last event was seen.
    pub last_event: Option<Instant>,
    /// Why programs are not attached, when some are not.
    pub detail: Option<String>,
}

impl ProbeStatus {
    /// Whether every program is attached.
    pub fn all_attached(&self) -> bool {
        !self.programs.is_empty() && self.programs.iter().all(|p| p.attached)
    }
}

/// A source of probe status and events.
pub trait ProbeSource: Send {
    /// Status and counters that need no event stream (read at scrape time).
    fn status(&mut self) -> ProbeStatus;
    /// Moves the events seen since the last call into `out`.
    fn drain(&mut self, out: &mut Vec<ProbeEvent>);
    /// Detaches every program (called once at shutdown).
    fn detach(&mut self);
}

/// The programs the probes attach; reported as not attached by [`Detached`].
pub const PROGRAMS: [&str; 3] = ["copy_up", "whiteout", "page_cache"];

/// The source used while no probe is attached: every program reported as
/// not attached with the reason, no events.
#[derive(Debug, Clone)]
pub struct Detached {
    pub why: String,
}

impl ProbeSource for Detached {
    fn status(&mut self) -> ProbeStatus {
        ProbeStatus {
            strategy: "none".to_string(),
            programs: PROGRAMS
                .iter()
                .map(|p| ProgramStatus {
                    program: (*p).to_string(),
                    mode: "none".to_string(),
                    attached: false,
                })
                .collect(),
            events_lost: 0,
            page_cache_shared: None,
            last_event: None,
            detail: Some(self.why.clone()),
        }
    }

    fn drain(&mut self, _out: &mut Vec<ProbeEvent>) {}

    fn detach(&mut self) {}
}

/// The ebpf-probes overlay tracer as a source: copy-ups, whiteouts and
/// lost events attributed to containers by the probes' own attribution
/// (overlay mount -> layer -> container, `host` otherwise).
pub struct OverlayProbes {
    tracer: ebpf_probes::OverlayTracer,
    last_event: Option<Instant>,
    /// Page-cache bytes added per container at the last look, and when.
    page_cache_added: std::collections::BTreeMap<String, u64>,
    page_cache_checked: Option<Instant>,
    /// Bytes of lower files read by more than one container, cached once,
    /// per layer chain-id (from the last look).
    page_cache_shared: Vec<(String, u64)>,
    layers: super::layer_index::LayerIndex,
}

/// How often the page-cache maps are read (they grow with cached files).
const PAGE_CACHE_EVERY: Duration = Duration::from_secs(5);

impl ProbeSource for OverlayProbes {
    fn status(&mut self) -> ProbeStatus {
        let strategy = self.tracer.strategy().strategy.to_string();
        let degraded = self.tracer.degraded();
        ProbeStatus {
            programs: PROGRAMS
                .iter()
                .map(|program| ProgramStatus {
                    program: (*program).to_string(),
                    mode: strategy.clone(),
                    attached: !degraded.iter().any(|d| d.contains(program)),
                })
                .collect(),
            strategy,
            events_lost: self.tracer.totals().map(|t| t.lost).unwrap_or(0),
            page_cache_shared: Some(self.page_cache_shared.clone()),
            last_event: self.last_event,
            detail: (!degraded.is_empty()).then(|| degraded.join("; ")),
        }
    }

    fn drain(&mut self, out: &mut Vec<ProbeEvent>) {
        self.drain_page_cache(out);
        let raw = self.tracer.drain_events();
        if raw.is_empty() {
            return;
        }
        self.last_event = Some(Instant::now());
        let mut registry = self.tracer.lock_registry();
        for event in &raw {
            let event = registry.resolve_fresh(event);
            let container = (event.container != ebpf_probes::attribution::HOST)
                .then(|| event.container.clone());
            let kind = match event.kind {
                "copy_up_data" => CopyUpKind::Data,
                "copy_up_metadata" => CopyUpKind::Metadata,
                "copy_up_dir" => CopyUpKind::Dir,
                "whiteout" => {
                    out.push(ProbeEvent::Whiteout {
                        container,
                        driver: event.driver.clone(),
                    });
                    continue;
                }
                _ => continue,
            };
            out.push(ProbeEvent::CopyUp {
                container,
                driver: event.driver.clone(),
                kind,
                bytes: event.bytes,
                duration: Duration::from_nanos(event.duration_ns),
            });
        }
    }

    fn detach(&mut self) {
        // Dropping the tracer detaches its programs; the sidecar drops the
        // source right after this call.
    }
}

impl OverlayProbes {
    /// Page-cache bytes each container added since the last look, as
    /// events (at most every [`PAGE_CACHE_EVERY`]).
    fn drain_page_cache(&mut self, out: &mut Vec<ProbeEvent>) {
        if self
            .page_cache_checked
            .is_some_and(|at| at.elapsed() < PAGE_CACHE_EVERY)
        {
            return;
        }
        self.page_cache_checked = Some(Instant::now());
        let report = ebpf_probes::pagecache::PageCacheReport::collect(&self.tracer);
        let mut shared = std::collections::BTreeMap::new();
        if report.files.iter().any(|f| f.readers.len() > 1) {
            self.layers.refresh();
        }
        for file in report.files.iter().filter(|f| f.readers.len() > 1) {
            if let Some(layer) = self.layers.layer_of(file.dev, file.ino) {
                *shared.entry(layer).or_insert(0) += file.cached_bytes;
            }
        }
        self.page_cache_shared = shared.into_iter().collect();
        for (container, bytes) in report.added_bytes {
            let before = self.page_cache_added.insert(container.clone(), bytes);
            let grown = bytes.saturating_sub(before.unwrap_or(0));
            if grown > 0 {
                out.push(ProbeEvent::PageCacheAdded {
                    container: (container != ebpf_probes::attribution::HOST).then_some(container),
                    bytes: grown,
                });
            }
        }
    }
}

/// The one place where the real probes connect: attaches the ebpf-probes
/// tracer (the best strategy this kernel allows) with attribution over
/// `roots` (layerscope's store, a Docker data root); runs detached, and
/// says why, when the probes cannot attach (not root, no tracepoints).
pub fn open(roots: Vec<std::path::PathBuf>) -> Box<dyn ProbeSource> {
    let options = ebpf_probes::TracerOptions {
        roots,
        ..Default::default()
    };
    let layers = super::layer_index::LayerIndex::new(options.roots.clone());
    match ebpf_probes::OverlayTracer::start(options) {
        Ok(tracer) => Box::new(OverlayProbes {
            tracer,
            last_event: None,
            page_cache_added: Default::default(),
            page_cache_checked: None,
            page_cache_shared: Vec::new(),
            layers,
        }),
        Err(e) => Box::new(Detached { why: e.to_string() }),
    }
}
