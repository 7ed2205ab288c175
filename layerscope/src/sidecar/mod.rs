//! `layerscope sidecar`: the long-running exporter. It discovers the live
//! containers (layerscope's store and a Docker data root, rescanned every
//! few seconds), measures their rw layers incrementally in the background,
//! aggregates probe events, and serves `/metrics` (Prometheus text or
//! OpenMetrics), `/healthz` and `/` over a small HTTP server on tokio.
//! SIGTERM/SIGINT detach the probes and exit 0; SIGHUP reloads the config.
//!
//! Threads: the tokio runtime (HTTP, signals) and one scanner thread
//! (discovery, size walks within their budget, draining probe events).

pub mod config;
pub mod discovery;
pub mod exposition;
pub mod http;
pub mod layer_index;
pub mod logging;
pub mod metrics;
pub mod probe;
pub mod sizes;
pub mod textfile;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};

use config::{Config, Flags};
use discovery::{ContainerRecord, Discovery};
use http::{Handler, Request, Response};
use metrics::Aggregates;
use probe::{ProbeEvent, ProbeSource};
use sizes::SizeCache;

/// How the command line starts the sidecar.
pub struct Options {
    pub flags: Flags,
    pub storage_opt: Vec<String>,
    pub log_format: logging::LogFormat,
    /// Serve without attaching the BPF probes (they report "none").
    pub no_probes: bool,
}

/// A size is re-measured at least this often (changes deep in the tree).
const SIZE_MAX_AGE: Duration = Duration::from_secs(30);
const TICK: Duration = Duration::from_millis(250);

struct State {
    containers: Vec<ContainerRecord>,
    /// rw-layer bytes by container id: the last completed measurements,
    /// published by the scanner (which owns the walks).
    sizes: HashMap<String, u64>,
    aggregates: Aggregates,
    last_scan: Option<Instant>,
}

struct Shared {
    flags: Flags,
    storage_opt: Vec<String>,
    config: RwLock<Config>,
    /// Bumped by each successful reload.
    generation: AtomicU64,
    state: Mutex<State>,
    probe: Mutex<Box<dyn ProbeSource>>,
    process: prometheus::Registry,
    kernel: String,
    stop: AtomicBool,
}

impl Shared {
    fn config(&self) -> Config {
        self.config.read().expect("config lock").clone()
    }

    /// Moves pending probe events into the aggregates.
    fn drain_probe(&self) {
        let mut events: Vec<ProbeEvent> = Vec::new();
        self.probe.lock().expect("probe lock").drain(&mut events);
        if events.is_empty() {
            return;
        }
        let mut state = self.state.lock().expect("state lock");
        let live: std::collections::HashSet<String> =
            state.containers.iter().map(|c| c.id.clone()).collect();
        for event in &events {
            state.aggregates.add(event, &|id| live.contains(id));
        }
    }
}

/// Runs the sidecar until SIGTERM or SIGINT.
pub fn run(options: Options) -> anyhow::Result<()> {
    let dispatch = logging::dispatch(options.log_format);
    logging::enter(&dispatch);
    let config = Config::load(&options.flags)?;
    let discovery = Discovery::open(
        config.root.as_deref(),
        &config.driver,
        &options.storage_opt,
        config.docker_root.as_deref(),
    )?;
    let listener = std::net::TcpListener::bind(config.listen)
        .with_context(|| format!("listen on {}", config.listen))?;
    listener
        .set_nonblocking(true)
        .with_context(|| format!("listen on {}", config.listen))?;

    let process = prometheus::Registry::new();
    process
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .context("process collector")?;
    let roots: Vec<std::path::PathBuf> = config
        .root
        .iter()
        .chain(config.docker_root.iter())
        .cloned()
        .collect();
    let mut probe: Box<dyn probe::ProbeSource> = if options.no_probes {
        Box::new(probe::Detached {
            why: "probes disabled by --no-probes".to_string(),
        })
    } else {
        probe::open(roots)
    };
    let status = probe.status();
    tracing::info!(
        listen = %config.listen,
        strategy = %status.strategy,
        probes_attached = status.all_attached(),
        "layerscope sidecar starting"
    );
    if let Some(why) = &status.detail {
        tracing::warn!("probes not attached: {why}");
    }
    let shared = Arc::new(Shared {
        flags: options.flags,
        storage_opt: options.storage_opt,
        state: Mutex::new(State {
            containers: Vec::new(),
            sizes: HashMap::new(),
            aggregates: Aggregates::new(&config.buckets),
            last_scan: None,
        }),
        config: RwLock::new(config),
        generation: AtomicU64::new(0),
        probe: Mutex::new(probe),
        process,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into()),
        stop: AtomicBool::new(false),
    });

    let mut scanner = Scanner {
        shared: shared.clone(),
        discovery,
        generation: 0,
        sizes: SizeCache::new(SIZE_MAX_AGE),
    };
    scanner.rescan();
    {
        let dispatch = dispatch.clone();
        std::thread::Builder::new()
            .name("sidecar-scan".into())
            .spawn(move || {
                logging::enter(&dispatch);
                scanner.run();
            })
            .context("spawn scanner thread")?;
    }

    let runtime = {
        let dispatch = dispatch.clone();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(4)
            .enable_all()
            .on_thread_start(move || logging::enter(&dispatch))
            .build()
            .context("tokio runtime")?
    };
    let handler: Arc<dyn Handler> = Arc::new(Routes {
        shared: shared.clone(),
    });
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener).context("listener")?;
        let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
        let server = tokio::spawn(http::serve(listener, handler));
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => reload(&shared),
            }
        }
        server.abort();
        anyhow::Ok(())
    });
    shared.stop.store(true, Ordering::SeqCst);
    shared.probe.lock().expect("probe lock").detach();
    tracing::info!("layerscope sidecar stopped");
    runtime.shutdown_timeout(Duration::from_millis(500));
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    result
}

/// SIGHUP: re-reads the config file with the same flags; a bad file is
/// logged and the running config kept.
fn reload(shared: &Shared) {
    match Config::load(&shared.flags) {
        Ok(new) => {
            let mut config = shared.config.write().expect("config lock");
            if new.listen != config.listen {
                tracing::warn!(
                    "config reload: listen {} -> {} needs a restart; still on {}",
                    config.listen,
                    new.listen,
                    config.listen
                );
            }
            let listen = config.listen;
            *config = Config { listen, ..new };
            shared
                .state
                .lock()
                .expect("state lock")
                .aggregates
                .set_buckets(&config.buckets);
            shared.generation.fetch_add(1, Ordering::SeqCst);
            tracing::info!("config reloaded");
        }
        Err(e) => tracing::error!("config reload failed, keeping the running config: {e:#}"),
    }
}

struct Scanner {
    shared: Arc<Shared>,
    discovery: Discovery,
    generation: u64,
    sizes: SizeCache,
}

impl Scanner {
    fn run(&mut self) {
        while !self.shared.stop.load(Ordering::SeqCst) {
            std::thread::sleep(TICK);
            let generation = self.shared.generation.load(Ordering::SeqCst);
            let config = self.shared.config();
            if generation != self.generation {
                self.generation = generation;
                match Discovery::open(
                    config.root.as_deref(),
                    &config.driver,
                    &self.shared.storage_opt,
                    config.docker_root.as_deref(),
                ) {
                    Ok(d) => self.discovery = d,
                    Err(e) => tracing::error!("config reload: {e:#}; keeping the previous sources"),
                }
            }
            let due = {
                let state = self.shared.state.lock().expect("state lock");
                state.last_scan.is_none_or(|t| t.elapsed() >= config.rescan)
            };
            if due {
                self.rescan();
            }
            self.shared.drain_probe();
            self.refresh_sizes(config.size_budget);
        }
    }

    fn rescan(&mut self) {
        let found = self.discovery.scan();
        self.sizes.sync(
            found
                .iter()
                .filter_map(|c| Some((c.id.as_str(), c.rw_dir.as_deref()?))),
        );
        for c in &found {
            if let Some(size) = c.measured_rw {
                self.sizes.seed(&c.id, size);
            }
        }
        let live: HashSet<&str> = found.iter().map(|c| c.id.as_str()).collect();
        let published = self.published(&found);
        let mut state = self.shared.state.lock().expect("state lock");
        state.aggregates.retain_live(&|id| live.contains(id));
        if found.len() != state.containers.len() {
            tracing::debug!(containers = found.len(), "containers rescanned");
        }
        state.containers = found;
        state.sizes = published;
        state.last_scan = Some(Instant::now());
    }

    /// The measured sizes of `containers`.
    fn published(&self, containers: &[ContainerRecord]) -> HashMap<String, u64> {
        containers
            .iter()
            .filter_map(|c| Some((c.id.clone(), self.sizes.get(&c.id)?)))
            .collect()
    }

    /// Walks rw dirs for at most a tick's share of the per-second budget,
    /// outside the state lock (scrapes never wait for the file system),
    /// then publishes what completed.
    fn refresh_sizes(&mut self, budget_per_second: usize) {
        let budget = (budget_per_second as f64 * TICK.as_secs_f64()).ceil() as usize;
        self.sizes.refresh(budget.max(1));
        let mut state = self.shared.state.lock().expect("state lock");
        let published = self.published(&state.containers);
        state.sizes = published;
    }
}

struct Routes {
    shared: Arc<Shared>,
}

impl Handler for Routes {
    fn handle(&self, request: &Request) -> Response {
        match request.path.as_str() {
            "/metrics" => self.metrics(request),
            "/healthz" => self.healthz(),
            "/" => Response {
                status: 200,
                content_type: "text/html; charset=utf-8",
                body: INDEX.as_bytes().to_vec(),
            },
            _ => Response::text(404, "not found\n"),
        }
    }
}

const INDEX: &str = "<!doctype html>\n<html><head><title>layerscope sidecar</title></head>\n<body><h1>layerscope sidecar</h1>\n<ul><li><a href=\"/metrics\">/metrics</a>: Prometheus metrics</li>\n<li><a href=\"/healthz\">/healthz</a>: probes attached, last event age</li></ul>\n</body></html>\n";

impl Routes {
    fn metrics(&self, request: &Request) -> Response {
        self.shared.drain_probe();
        let status = self.shared.probe.lock().expect("probe lock").status();
        let config = self.shared.config();
        let mut families = self.shared.process.gather();
        {
            let state = self.shared.state.lock().expect("state lock");
            families.extend(metrics::families(&metrics::Snapshot {
                config: &config,
                containers: &state.containers,
                sizes: &state.sizes,
                aggregates: &state.aggregates,
                probe: &status,
                kernel: &self.shared.kernel,
                version: env!("CARGO_PKG_VERSION"),
            }));
        }
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let openmetrics = exposition::wants_openmetrics(request.header("accept"));
        let (content_type, mut body) = exposition::encode(&families, openmetrics);
        if let Some(dir) = &config.textfile_dir {
            let extra = textfile::read_dir(dir);
            if openmetrics {
                // Before the closing `# EOF`.
                body.truncate(body.len() - exposition::EOF.len());
                body.extend_from_slice(extra.as_bytes());
                body.extend_from_slice(exposition::EOF.as_bytes());
            } else {
                body.extend_from_slice(extra.as_bytes());
            }
        }
        Response {
            status: 200,
            content_type,
            body,
        }
    }

    fn healthz(&self) -> Response {
        let status = self.shared.probe.lock().expect("probe lock").status();
        let containers = self
            .shared
            .state
            .lock()
            .expect("state lock")
            .containers
            .len();
        let attached = status.all_attached();
        let programs: Vec<serde_json::Value> = status
            .programs
            .iter()
            .map(|p| serde_json::json!({"program": p.program, "mode": p.mode, "attached": p.attached}))
            .collect();
        let body = serde_json::json!({
            "status": if attached { "ok" } else { "degraded" },
            "probes_attached": attached,
            "strategy": status.strategy,
            "programs": programs,
            "detail": status.detail,
            "last_event_age_seconds": status.last_event.map(|t| t.elapsed().as_secs_f64()),
            "containers": containers,
        });
        Response {
            status: if attached { 200 } else { 503 },
            content_type: "application/json",
            body: format!("{body}\n").into_bytes(),
        }
    }
}
