//! Shared by the sidecar tests (included with `#[path]`): a store with
//! containers on a scratch filesystem, the sidecar binary started on a
//! free loopback port and stopped by pid, a minimal HTTP client, and a
//! scrape parser. Compiled alone it holds no tests.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use storage_core::container::{Container, ContainerStore};
use storage_core::driver::{self, DriverOptions};
use storage_core::layer::LayerStore;

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` (HTTP/1.0: no chunked replies) with an optional `Accept`; (status, body).
pub fn http_get(
    addr: SocketAddr,
    path: &str,
    accept: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no header end in {response:?}")))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
    Ok((status, body.to_string()))
}

/// Percent-encodes a query parameter value.
pub fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A sample: (name, labels, value).
pub type Sample = (String, Vec<(String, String)>, f64);

/// The sample lines of a text-format scrape.
pub fn samples(scrape: &str) -> Vec<Sample> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("sample has a value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let inner = rest.trim_end_matches('}');
                    let labels = split_labels(inner);
                    (name.to_string(), labels)
                }
                None => (series.to_string(), Vec::new()),
            };
            (name, labels, value.parse().unwrap_or(f64::NAN))
        })
        .collect()
}

fn split_labels(inner: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = inner;
    while let Some((name, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(match n {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.push((name.trim_start_matches(',').to_string(), value));
        rest = &after[end..];
    }
    out
}

/// Metric family names of a text-format scrape (from `# TYPE`).
pub fn family_names(scrape: &str) -> Vec<String> {
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// A running `layerscope sidecar`, killed by pid when dropped.
pub struct Sidecar {
    pub child: Child,
    pub addr: SocketAddr,
    pub stderr_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Sidecar {
    /// Starts `layerscope [global] sidecar --listen 127.0.0.1:<free> [args]`
    /// and waits until `/` answers.
    pub fn start(global: &[&str], args: &[&str]) -> Sidecar {
        let dir = tempfile::tempdir().unwrap();
        let stderr_path = dir.path().join("stderr");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_layerscope"))
            .args(global)
            .arg("sidecar")
            .arg("--listen")
            .arg(addr.to_string())
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("spawn layerscope sidecar");
        let mut sidecar = Sidecar {
            child,
            addr,
            stderr_path,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, _)) = http_get(addr, "/", None) {
                break;
            }
            if let Ok(Some(status)) = sidecar.child.try_wait() {
                panic!("sidecar exited {status}: {}", sidecar.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "sidecar did not answer: {}",
                sidecar.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        sidecar
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// A text-format scrape.
    pub fn scrape(&self) -> String {
        let (status, body) = http_get(self.addr, "/metrics", None).expect("scrape");
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Scrapes until `done(scrape)` holds or `timeout` passes; the last scrape.
    pub fn scrape_until(&self, timeout: Duration, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let scrape = self.scrape();
            if done(&scrape) || Instant::now() > deadline {
                return scrape;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Resident set size in bytes, from /proc/<pid>/status.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .expect("VmRSS")
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid()),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.wait();
    }
}

/// A layer tar of regular files.
pub fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, path, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// A layerscope overlay2 store at `root` with one image layer.
pub struct Store {
    pub root: PathBuf,
    pub layers: LayerStore,
    pub top: String,
}

impl Store {
    pub fn new(root: &Path) -> Store {
        let driver = driver::open("overlay2", root, &DriverOptions::default()).expect("overlay2");
        let layers = LayerStore::open(root, driver).expect("layer store");
        let tar = tar_of(&[("etc/app.conf", &[7u8; 4096]), ("bin/tool", &[1u8; 10_000])]);
        let layer = layers.apply(&tar[..], None).expect("apply layer");
        Store {
            root: root.to_path_buf(),
            top: layer.chain_id,
            layers,
        }
    }

    pub fn containers(&self) -> ContainerStore<'_> {
        ContainerStore::open(&self.root, &self.layers).expect("container store")
    }

    pub fn create(&self, name: &str) -> Container {
        self.containers()
            .create(name, "app:latest", Some(&self.top))
            .expect("create container")
    }

    pub fn remove(&self, container: &Container) {
        self.containers()
            .remove(container)
            .expect("remove container");
    }

    /// The rw layer's upper dir.
    pub fn rw_dir(&self, container: &Container) -> PathBuf {
        let rw = self.layers.rw_layer(&container.id).unwrap();
        PathBuf::from(&self.layers.driver().metadata(&rw.mount_id).unwrap()["UpperDir"])
    }
}

/// The workspace root (dashboards/ lives there).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// One PromQL expression a dashboard panel or a rule evaluates.
#[derive(Debug, Clone)]
pub struct Query {
    /// `overview.json: Copy-ups per second` or `layerscope-alerts.yml: LayerscopeSidecarDown`.
    pub origin: String,
    pub expr: String,
    /// Recording rule name, when the query is one.
    pub record: Option<String>,
}

/// `dashboards/grafana/*.json`, parsed, by file name.
pub fn dashboards() -> Vec<(String, serde_json::Value)> {
    let dir = workspace().join("dashboards/grafana");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let json =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push((
                path.file_name().unwrap().to_string_lossy().into_owned(),
                json,
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        out.len() >= 3,
        "want the overview, container and bench dashboards"
    );
    out
}

/// Every panel target's `expr`, over every dashboard.
pub fn dashboard_queries() -> Vec<Query> {
    let mut out = Vec::new();
    for (file, dashboard) in dashboards() {
        for panel in dashboard["panels"].as_array().unwrap() {
            let title = panel["title"].as_str().unwrap_or("?");
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push(Query {
                        origin: format!("{file}: {title}"),
                        expr: expr.to_string(),
                        record: None,
                    });
                }
            }
        }
    }
    out
}

/// `dashboards/prometheus/rules/*.yml`.
pub fn rule_files() -> Vec<PathBuf> {
    let dir = workspace().join("dashboards/prometheus/rules");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    out.sort();
    assert!(out.len() >= 2, "want recording and alerting rules");
    out
}

/// Every rule's `expr` (rules keep each expr on one line, which this
/// reader asserts).
pub fn rule_queries() -> Vec<Query> {
    let mut out = Vec::new();
    for path in rule_files() {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut name = String::new();
        let mut record = None;
        for line in text.lines() {
            let line = line.trim().trim_start_matches("- ");
            if let Some(r) = line.strip_prefix("record: ") {
                name = r.to_string();
                record = Some(r.to_string());
            } else if let Some(a) = line.strip_prefix("alert: ") {
                name = a.to_string();
                record = None;
            } else if let Some(expr) = line.strip_prefix("expr: ") {
                assert!(
                    !matches!(expr.trim(), "|" | ">" | "|-" | ">-"),
                    "{file}: {name}: keep expr on one line"
                );
                out.push(Query {
                    origin: format!("{file}: {name}"),
                    expr: expr.trim().to_string(),
                    record: record.take(),
                });
            }
        }
    }
    out
}

/// Grafana's variables as the tests substitute them.
pub fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "1h")
        .replace("${instance}", ".*")
        .replace("$instance", ".*")
        .replace("${container}", ".*")
        .replace("$container", ".*")
}

/// Metric names an expression reads: identifiers followed by `{`, `[`,
/// `)` , `,`, an operator or the end, that are not functions, keywords,
/// label names (inside `{}` or `by (...)`) or numbers.
pub fn metric_names(expr: &str) -> Vec<String> {
    const KEYWORDS: [&str; 16] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "sum",
        "max",
        "min",
        "avg",
        "count",
    ];
    let bytes = expr.as_bytes();
    let mut names = Vec::new();
    let mut i = 0;
    let mut depth_braces = 0;
    let mut in_string = false;
    let mut label_list = false;
    while i < bytes.len() {
        let c = bytes[i] as char;
        if in_string {
            if c == '\\' {
                i += 2;
                continue;
            }
            if c == '"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' => depth_braces += 1,
            '}' => depth_braces -= 1,
            ')' => label_list = false,
            '[' => {
                // Skip range/subquery durations.
                while i < bytes.len() && bytes[i] != b']' {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < bytes.len()
                    && ((bytes[i] as char).is_ascii_alphanumeric()
                        || bytes[i] == b'_'
                        || bytes[i] == b':')
                {
                    i += 1;
                }
                let word = &expr[start..i];
                let next = expr[i..].trim_start().chars().next();
                if matches!(
                    word,
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                ) {
                    label_list = true;
                } else if depth_braces == 0
                    && !label_list
                    && next != Some('(')
                    && !KEYWORDS.contains(&word)
                {
                    names.push(word.to_string());
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    names.sort();
    names.dedup();
    names
}

/// The family a sample name belongs to (histogram series suffixes removed).
pub fn family_of(name: &str) -> &str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            return base;
        }
    }
    name
}

/// The bench textfile the dashboards read, with the names the bench
/// harness writes (`bench-harness/src/metrics.rs`).
pub const BENCH_TEXTFILE: &str = "\
# HELP layerscope_bench_latency_seconds Operation latency.
# TYPE layerscope_bench_latency_seconds gauge
layerscope_bench_latency_seconds{workload=\"append_storm\",target=\"overlay2-ext4\",stat=\"p50\"} 0.0001
layerscope_bench_latency_seconds{workload=\"append_storm\",target=\"overlay2-ext4\",stat=\"p99\"} 0.002
# HELP layerscope_bench_ratio Latency ratio to native.
# TYPE layerscope_bench_ratio gauge
layerscope_bench_ratio{workload=\"append_storm\",target=\"overlay2-ext4\",stat=\"p50\"} 1.4
layerscope_bench_ratio{workload=\"append_storm\",target=\"overlay2-ext4\",stat=\"p99\"} 3.1
# HELP layerscope_bench_ops_per_second Throughput.
# TYPE layerscope_bench_ops_per_second gauge
layerscope_bench_ops_per_second{workload=\"append_storm\",target=\"overlay2-ext4\"} 12000
# HELP layerscope_bench_device_written_bytes Device writes.
# TYPE layerscope_bench_device_written_bytes gauge
layerscope_bench_device_written_bytes{workload=\"append_storm\",target=\"overlay2-ext4\"} 1048576
# HELP layerscope_bench_run_timestamp_seconds Run end.
# TYPE layerscope_bench_run_timestamp_seconds gauge
layerscope_bench_run_timestamp_seconds 1764000000
# HELP layerscope_bench_run_duration_seconds Run length.
# TYPE layerscope_bench_run_duration_seconds gauge
layerscope_bench_run_duration_seconds 42
";
