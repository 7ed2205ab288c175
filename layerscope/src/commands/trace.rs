//! `layerscope trace [--json]`: overlay copy-ups, whiteouts and opaque dirs
//! live, one line per event (JSON lines with `--json`), attributed to
//! containers through layerscope's store and any `--docker-root`. Runs
//! until SIGINT/SIGTERM (or `--duration`), then prints the totals and the
//! lost-event count on stderr.

use std::{io::Write as _, path::Path, time::Duration};

use anyhow::Context as _;
use ebpf_probes::{OverlayTracer, TracerOptions, registry::TraceEvent};

#[derive(clap::Args, Debug, Clone)]
pub struct TraceArgs {
    /// Print JSON lines instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also attribute containers of this Docker data root (repeatable).
    #[arg(long = "docker-root")]
    pub docker_roots: Vec<std::path::PathBuf>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub duration: Option<u64>,
}

/// Traces until interrupted. `root` is layerscope's data root.
pub fn run(root: &Path, args: TraceArgs) -> anyhow::Result<()> {
    let mut roots = vec![root.to_path_buf()];
    roots.extend(args.docker_roots.iter().cloned());
    let mut tracer = OverlayTracer::start(TracerOptions {
        roots,
        ..TracerOptions::default()
    })
    .context("start tracing")?;
    eprintln!("layerscope trace: {}", tracer.strategy());
    for line in tracer.degraded() {
        eprintln!("layerscope trace: {line}");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start tokio runtime")?;
    // The AsyncFd registers with the runtime's reactor.
    let mut stream = {
        let _entered = runtime.enter();
        tracer
            .take_event_stream()
            .context("event stream already taken")?
            .context("event stream")?
    };
    let registry = tracer.registry().clone();
    let json = args.json;
    let deadline = args.duration.map(Duration::from_secs);
    runtime.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("install SIGTERM handler")?;
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                batch = stream.next_batch() => {
                    let batch = batch.context("read events")?;
                    let lines: Vec<TraceEvent> = {
                        let mut registry = registry.lock().unwrap_or_else(|p| p.into_inner());
                        batch.iter().map(|raw| registry.resolve_fresh(raw)).collect()
                    };
                    let stdout = std::io::stdout();
                    let mut out = stdout.lock();
                    for event in &lines {
                        if json {
                            serde_json::to_writer(&mut out, event)?;
                            writeln!(out)?;
                        } else {
                            writeln!(out, "{}", text_line(event))?;
                        }
                    }
                    out.flush()?;
                }
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                () = &mut sleep => break,
            }
        }
        anyhow::Ok(())
    })?;
    let totals = tracer.totals().context("read totals")?;
    eprintln!(
        "layerscope trace: {} data copy-ups ({} bytes), {} metadata, {} dirs, {} whiteouts, {} opaque dirs, {} events lost",
        totals.data,
        totals.bytes,
        totals.metadata,
        totals.dir,
        totals.whiteouts,
        totals.opaque,
        totals.lost
    );
    Ok(())
}

/// `12:00:00.123456 copy_up_data container=abcdef012345 driver=overlay2
/// layer=<id> pid=1 comm=sh syscall=openat bytes=4096 duration=1.2ms path=/x`
fn text_line(e: &TraceEvent) -> String {
    let secs = e.timestamp_ns / 1_000_000_000;
    let micros = (e.timestamp_ns % 1_000_000_000) / 1000;
    let container = if e.container.len() > 12 {
        &e.container[..12]
    } else {
        &e.container
    };
    format!(
        "{:02}:{:02}:{:02}.{micros:06} {} container={container} driver={} layer={} pid={} comm={} syscall={} bytes={} duration={:.3}ms path={}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60,
        e.kind,
        e.driver,
        e.layer.as_deref().unwrap_or("-"),
        e.pid,
        e.comm,
        e.syscall,
        e.bytes,
        e.duration_ns as f64 / 1e6,
        e.path,
    )
}
