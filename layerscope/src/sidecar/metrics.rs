//! The sidecar's metric families, built at scrape time from the live
//! containers, their cached sizes and the probe aggregates. Every name is
//! DESIGN.md's "Metrics" list; series exist only for live containers (and
//! `container="host"` for unattributed events), so a removed container's
//! series disappear with it. Labels outside the allow-list are dropped and
//! the series that then coincide are summed.
//!
//! Names shared with the bench harness (written by `layerscope bench` as a
//! textfile, read by the "Benchmark results" dashboard):
//! - `layerscope_bench_latency_seconds{workload,target,stat}` gauge,
//!   stat = "p50" | "p90" | "p99" | "max" (not `quantile`: promtool
//!   rejects a `quantile` label outside summaries);
//! - `layerscope_bench_ratio{workload,target,stat}` gauge, stat = "p50" |
//!   "p99": the target's latency divided by native's;
//! - `layerscope_bench_ops_per_second{workload,target}` gauge;
//! - `layerscope_bench_device_written_bytes{workload,target}` gauge;
//! - `layerscope_bench_run_timestamp_seconds`, `layerscope_bench_run_duration_seconds` gauges.
//!
//! The sidecar re-exports that textfile with `--textfile-dir`.

use std::collections::{BTreeMap, HashMap};

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};

use super::config::Config;
use super::discovery::ContainerRecord;
use super::probe::{CopyUpKind, ProbeEvent, ProbeStatus};

/// The `container` label of events no live container owns.
pub const HOST: &str = "host";

/// Per-container histogram with the configured buckets (not cumulative).
#[derive(Debug, Clone, Default)]
struct Hist {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// Probe events summed since start, keyed by container id (or [`HOST`]).
#[derive(Debug, Default)]
pub struct Aggregates {
    buckets: Vec<f64>,
    copy_ups: HashMap<(String, String, CopyUpKind), u64>,
    copy_up_bytes: HashMap<(String, String), u64>,
    durations: HashMap<(String, String), Hist>,
    whiteouts: HashMap<(String, String), u64>,
    page_cache_added: HashMap<String, u64>,
}

impl Aggregates {
    pub fn new(buckets: &[f64]) -> Aggregates {
        Aggregates {
            buckets: buckets.to_vec(),
            ..Aggregates::default()
        }
    }

    /// New buckets restart the histograms (their counts cannot be split).
    pub fn set_buckets(&mut self, buckets: &[f64]) {
        if self.buckets != buckets {
            self.buckets = buckets.to_vec();
            self.durations.clear();
        }
    }

    /// Adds `event`, attributed to its container when live, else to the host.
    pub fn add(&mut self, event: &ProbeEvent, live: &dyn Fn(&str) -> bool) {
        let owner = |c: &Option<String>| match c {
            Some(id) if live(id) => id.clone(),
            _ => HOST.to_string(),
        };
        match event {
            ProbeEvent::CopyUp {
                container,
                driver,
                kind,
                bytes,
                duration,
            } => {
                let who = owner(container);
                *self
                    .copy_ups
                    .entry((who.clone(), driver.clone(), *kind))
                    .or_default() += 1;
                *self
                    .copy_up_bytes
                    .entry((who.clone(), driver.clone()))
                    .or_default() += bytes;
                let buckets = &self.buckets;
                let hist = self
                    .durations
                    .entry((who, driver.clone()))
                    .or_insert_with(|| Hist {
                        counts: vec![0; buckets.len()],
                        ..Hist::default()
                    });
                let seconds = duration.as_secs_f64();
                if let Some(i) = buckets.iter().position(|b| seconds <= *b) {
                    hist.counts[i] += 1;
                }
                hist.sum += seconds;
                hist.count += 1;
            }
            ProbeEvent::Whiteout { container, driver } => {
                *self
                    .whiteouts
                    .entry((owner(container), driver.clone()))
                    .or_default() += 1;
            }
            ProbeEvent::PageCacheAdded { container, bytes } => {
                *self.page_cache_added.entry(owner(container)).or_default() += bytes;
            }
        }
    }

    /// Forgets every series of containers not in `live` (the host stays).
    pub fn retain_live(&mut self, live: &dyn Fn(&str) -> bool) {
        let keep = |id: &str| id == HOST || live(id);
        self.copy_ups.retain(|(c, _, _), _| keep(c));
        self.copy_up_bytes.retain(|(c, _), _| keep(c));
        self.durations.retain(|(c, _), _| keep(c));
        self.whiteouts.retain(|(c, _), _| keep(c));
        self.page_cache_added.retain(|c, _| keep(c));
    }
}

/// Everything a scrape reads besides the probe status.
pub struct Snapshot<'a> {
    pub config: &'a Config,
    pub containers: &'a [ContainerRecord],
    /// rw-layer bytes by container id (measured ones only).
    pub sizes: &'a HashMap<String, u64>,
    pub aggregates: &'a Aggregates,
    pub probe: &'a ProbeStatus,
    pub kernel: &'a str,
    pub version: &'a str,
}

type Labels = Vec<(&'static str, String)>;

/// One family being built: series by their (allowed) labels.
struct Builder<'c> {
    config: &'c Config,
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    /// `true` for info-like gauges (merged by max, not sum).
    max: bool,
    values: BTreeMap<Labels, f64>,
    hists: BTreeMap<Labels, Hist>,
}

impl<'c> Builder<'c> {
    fn new(config: &'c Config, name: &'static str, help: &'static str, kind: MetricType) -> Self {
        Builder {
            config,
            name,
            help,
            kind,
            max: false,
            values: BTreeMap::new(),
            hists: BTreeMap::new(),
        }
    }

    fn info(mut self) -> Self {
        self.max = true;
        self
    }

    fn key(&self, labels: Labels) -> Labels {
        labels
            .into_iter()
            .filter(|(name, _)| self.config.allows(name))
            .collect()
    }

    fn add(&mut self, labels: Labels, value: f64) {
        let key = self.key(labels);
        let slot = self.values.entry(key).or_insert(0.0);
        *slot = if self.max {
            slot.max(value)
        } else {
            *slot + value
        };
    }

    fn add_hist(&mut self, labels: Labels, counts: &[u64], sum: f64, count: u64) {
        let key = self.key(labels);
        let slot = self.hists.entry(key).or_insert_with(|| Hist {
            counts: vec![0; counts.len()],
            ..Hist::default()
        });
        for (a, b) in slot.counts.iter_mut().zip(counts) {
            *a += b;
        }
        slot.sum += sum;
        slot.count += count;
    }

    fn build(self, buckets: &[f64]) -> Option<MetricFamily> {
        let mut family = MetricFamily::default();
        family.set_name(self.name.to_string());
        family.set_help(self.help.to_string());
        family.set_field_type(self.kind);
        let mut metrics = Vec::new();
        for (labels, value) in self.values {
            let mut metric = metric_with(labels);
            match self.kind {
                MetricType::COUNTER => {
                    let mut c = Counter::default();
                    c.set_value(value);
                    metric.set_counter(c);
                }
                _ => {
                    let mut g = Gauge::default();
                    g.set_value(value);
                    metric.set_gauge(g);
                }
            }
            metrics.push(metric);
        }
        for (labels, hist) in self.hists {
            let mut metric = metric_with(labels);
            let mut h = Histogram::default();
            let mut cumulative = 0;
            let mut out = Vec::new();
            for (bound, n) in buckets.iter().zip(&hist.counts) {
                cumulative += n;
                let mut b = Bucket::default();
                b.set_upper_bound(*bound);
                b.set_cumulative_count(cumulative);
                out.push(b);
            }
            h.set_bucket(out);
            h.set_sample_sum(hist.sum);
            h.set_sample_count(hist.count);
            metric.set_histogram(h);
            metrics.push(metric);
        }
        if metrics.is_empty() {
            return None;
        }
        family.set_metric(metrics);
        Some(family)
    }
}

fn metric_with(labels: Labels) -> Metric {
    let mut metric = Metric::default();
    metric.set_label(
        labels
            .into_iter()
            .map(|(name, value)| {
                let mut pair = LabelPair::default();
                pair.set_name(name.to_string());
                pair.set_value(value);
                pair
            })
            .collect(),
    );
    metric
}

/// Short form of a chain-id for the `layer` label.
fn short_layer(chain: &str) -> String {
    let hex = chain.trim_start_matches("sha256:");
    hex[..hex.len().min(12)].to_string()
}

/// The sidecar's own families (process metrics are gathered apart).
pub fn families(s: &Snapshot<'_>) -> Vec<MetricFamily> {
    let c = s.config;
    let names: HashMap<&str, &ContainerRecord> =
        s.containers.iter().map(|r| (r.id.as_str(), r)).collect();
    let label_of = |id: &str| -> String {
        names
            .get(id)
            .map(|r| r.name.clone())
            .unwrap_or_else(|| HOST.to_string())
    };
    let a = s.aggregates;

    let mut copy_ups = Builder::new(
        c,
        "layerscope_copy_up_total",
        "Overlay copy-ups, by container, driver and kind (data, metadata, dir).",
        MetricType::COUNTER,
    );
    let mut bytes = Builder::new(
        c,
        "layerscope_copy_up_bytes_total",
        "Bytes copied up from lower layers.",
        MetricType::COUNTER,
    );
    let mut durations = Builder::new(
        c,
        "layerscope_copy_up_duration_seconds",
        "Time the writer was blocked by a copy-up.",
        MetricType::HISTOGRAM,
    );
    let mut whiteouts = Builder::new(
        c,
        "layerscope_whiteouts_total",
        "Whiteouts created (deletions and renames of lower entries).",
        MetricType::COUNTER,
    );
    let mut page_added = Builder::new(
        c,
        "layerscope_page_cache_added_bytes_total",
        "Bytes added to the page cache by the container's reads.",
        MetricType::COUNTER,
    );
    let mut shared = Builder::new(
        c,
        "layerscope_page_cache_shared_bytes",
        "Page-cache bytes of a layer read by more than one container, held once.",
        MetricType::GAUGE,
    );
    let mut rw = Builder::new(
        c,
        "layerscope_container_rw_bytes",
        "Bytes in the container's rw layer (docker ps -s size).",
        MetricType::GAUGE,
    );
    let mut virt = Builder::new(
        c,
        "layerscope_container_virtual_bytes",
        "Bytes in the rw layer plus every image layer (docker ps -s virtual size).",
        MetricType::GAUGE,
    );
    let mut info = Builder::new(
        c,
        "layerscope_container_info",
        "A live container: its name, id and image.",
        MetricType::GAUGE,
    )
    .info();

    // Zero series for every live container, so rates exist from the start.
    let zero_hist = vec![0; c.buckets.len()];
    for r in s.containers {
        for kind in CopyUpKind::ALL {
            copy_ups.add(
                vec![
                    ("container", r.name.clone()),
                    ("driver", r.driver.clone()),
                    ("kind", kind.label().into()),
                ],
                0.0,
            );
        }
        bytes.add(
            vec![("container", r.name.clone()), ("driver", r.driver.clone())],
            0.0,
        );
        durations.add_hist(
            vec![("container", r.name.clone()), ("driver", r.driver.clone())],
            &zero_hist,
            0.0,
            0,
        );
        whiteouts.add(
            vec![("container", r.name.clone()), ("driver", r.driver.clone())],
            0.0,
        );
        page_added.add(vec![("container", r.name.clone())], 0.0);
        let rw_bytes = s.sizes.get(&r.id).copied();
        if let Some(size) = rw_bytes {
            rw.add(vec![("container", r.name.clone())], size as f64);
            virt.add(
                vec![("container", r.name.clone())],
                (size + r.image_bytes) as f64,
            );
        }
        info.add(
            vec![
                ("container", r.name.clone()),
                ("id", r.id.clone()),
                ("image", r.image.clone()),
            ],
            1.0,
        );
    }
    for ((id, driver, kind), n) in &a.copy_ups {
        copy_ups.add(
            vec![
                ("container", label_of(id)),
                ("driver", driver.clone()),
                ("kind", kind.label().into()),
            ],
            *n as f64,
        );
    }
    for ((id, driver), n) in &a.copy_up_bytes {
        bytes.add(
            vec![("container", label_of(id)), ("driver", driver.clone())],
            *n as f64,
        );
    }
    for ((id, driver), h) in &a.durations {
        durations.add_hist(
            vec![("container", label_of(id)), ("driver", driver.clone())],
            &h.counts,
            h.sum,
            h.count,
        );
    }
    for ((id, driver), n) in &a.whiteouts {
        whiteouts.add(
            vec![("container", label_of(id)), ("driver", driver.clone())],
            *n as f64,
        );
    }
    for (id, n) in &a.page_cache_added {
        page_added.add(vec![("container", label_of(id))], *n as f64);
    }
    match &s.probe.page_cache_shared {
        Some(layers) => {
            // Every live container's layer has a series (zero until shared).
            for r in s.containers {
                for layer in &r.layers {
                    shared.add(vec![("layer", short_layer(layer))], 0.0);
                }
            }
            for (layer, n) in layers {
                shared.add(vec![("layer", short_layer(layer))], *n as f64);
            }
        }
        // Not attached: zero for each layer of a live container, and
        // layerscope_probe_attached{program="page_cache"} says why.
        None => {
            for r in s.containers {
                for layer in &r.layers {
                    shared.add(vec![("layer", short_layer(layer))], 0.0);
                }
            }
        }
    }

    let mut probe_info = Builder::new(
        c,
        "layerscope_probe_info",
        "The probe strategy in use (fentry, kprobe, tracepoint, none) and the kernel.",
        MetricType::GAUGE,
    )
    .info();
    probe_info.add(
        vec![
            ("strategy", s.probe.strategy.clone()),
            ("kernel", s.kernel.to_string()),
        ],
        1.0,
    );
    let mut lost = Builder::new(
        c,
        "layerscope_probe_events_lost_total",
        "Probe events the kernel could not deliver.",
        MetricType::COUNTER,
    );
    lost.add(vec![], s.probe.events_lost as f64);
    let mut attached = Builder::new(
        c,
        "layerscope_probe_attached",
        "1 when the BPF program is attached in this mode, 0 when not.",
        MetricType::GAUGE,
    )
    .info();
    for p in &s.probe.programs {
        attached.add(
            vec![("program", p.program.clone()), ("mode", p.mode.clone())],
            if p.attached { 1.0 } else { 0.0 },
        );
    }
    let mut build = Builder::new(
        c,
        "layerscope_build_info",
        "The layerscope version serving these metrics.",
        MetricType::GAUGE,
    )
    .info();
    build.add(vec![("version", s.version.to_string())], 1.0);

    let buckets = &c.buckets;
    [
        copy_ups, bytes, durations, whiteouts, page_added, shared, rw, virt, info, probe_info,
        lost, attached, build,
    ]
    .into_iter()
    .filter_map(|b| b.build(buckets))
    .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::sidecar::config::{Config, Flags};
    use crate::sidecar::discovery::Origin;
    use crate::sidecar::probe::{Detached, ProbeSource};

    fn record(id: &str, name: &str) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            name: name.into(),
            image: "img".into(),
            driver: "overlay2".into(),
            origin: Origin::Store,
            rw_dir: None,
            image_bytes: 10,
            layers: vec!["sha256:0123456789abcdef".into()],
            measured_rw: None,
        }
    }

    fn render(config: &Config, containers: &[ContainerRecord], aggregates: &Aggregates) -> String {
        let probe = Detached { why: "test".into() }.status();
        let sizes = HashMap::new();
        let families = families(&Snapshot {
            config,
            containers,
            sizes: &sizes,
            aggregates,
            probe: &probe,
            kernel: "6.x",
            version: "0.0.0",
        });
        crate::sidecar::exposition::encode_openmetrics(&families)
    }

    #[test]
    fn events_are_attributed_and_dropped_with_their_container() {
        let mut config = Config::load(&Flags {
            default_root: "/nonexistent".into(),
            driver: "overlay2".into(),
            ..Flags::default()
        })
        .unwrap();
        config.buckets = vec![0.001, 0.1];
        let containers = vec![record("aaa", "web")];
        let mut aggregates = Aggregates::new(&config.buckets);
        let live = |id: &str| id == "aaa";
        let copy_up = |container: Option<&str>, ms| ProbeEvent::CopyUp {
            container: container.map(str::to_string),
            driver: "overlay2".into(),
            kind: CopyUpKind::Data,
            bytes: 100,
            duration: Duration::from_millis(ms),
        };
        aggregates.add(&copy_up(Some("aaa"), 50), &live);
        aggregates.add(&copy_up(Some("gone"), 500), &live);
        aggregates.add(
            &ProbeEvent::Whiteout {
                container: None,
                driver: "overlay2".into(),
            },
            &live,
        );
        let text = render(&config, &containers, &aggregates);
        assert!(
            text.contains(
                "layerscope_copy_up_total{container=\"web\",driver=\"overlay2\",kind=\"data\"} 1.0"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "layerscope_copy_up_total{container=\"host\",driver=\"overlay2\",kind=\"data\"} 1.0"
            ),
            "{text}"
        );
        assert!(text.contains("layerscope_copy_up_duration_seconds_bucket{container=\"web\",driver=\"overlay2\",le=\"0.1\"} 1"), "{text}");
        assert!(text.contains("layerscope_copy_up_duration_seconds_bucket{container=\"host\",driver=\"overlay2\",le=\"0.1\"} 0"), "{text}");
        assert!(text.contains("layerscope_copy_up_duration_seconds_bucket{container=\"host\",driver=\"overlay2\",le=\"+Inf\"} 1"), "{text}");
        assert!(
            text.contains("layerscope_whiteouts_total{container=\"host\",driver=\"overlay2\"} 1.0"),
            "{text}"
        );
        assert!(
            text.contains("layerscope_page_cache_shared_bytes{layer=\"0123456789ab\"} 0.0"),
            "{text}"
        );

        // The container goes: its series go, the host's stay.
        aggregates.retain_live(&|_| false);
        let text = render(&config, &[], &aggregates);
        assert!(!text.contains("web"), "{text}");
        assert!(text.contains("container=\"host\""), "{text}");

        // Without the driver label, series merge (sums).
        config.labels.retain(|l| l != "driver" && l != "kind");
        aggregates.add(&copy_up(Some("aaa"), 1), &live);
        let text = render(&config, &containers, &aggregates);
        assert!(
            text.contains("layerscope_copy_up_total{container=\"web\"} 1.0"),
            "{text}"
        );
        assert!(
            text.contains("layerscope_copy_up_total{container=\"host\"} 1.0"),
            "{text}"
        );
    }
}
