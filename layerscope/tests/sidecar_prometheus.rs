//! The sidecar against Debian's real Prometheus: Prometheus scrapes the
//! sidecar every second (and so parses its OpenMetrics output), `promtool
//! check metrics` accepts a scrape, `promtool check rules` the rule files,
//! and every PromQL expression of every dashboard panel and rule evaluates
//! through `/api/v1/query` without error, the dashboard panels with data.
//! Both processes are stopped by pid, also when the test fails.

#[path = "sidecar_support.rs"]
mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Sidecar, Store, free_port, http_get, url_encode};
use testkit::{FsKind, ScratchFs};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";

/// A private Prometheus, killed by pid when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let rules: Vec<String> = support::rule_files()
            .iter()
            .map(|p| format!("  - {}\n", p.display()))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n{}scrape_configs:\n  - job_name: layerscope\n    scrape_interval: 1s\n    scrape_timeout: 1s\n    static_configs:\n      - targets: [\"{target}\"]\n",
            rules.concat()
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new(PROMETHEUS)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{PROMETHEUS} (Debian package prometheus): {e}"));
        let mut prometheus = Prometheus { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = http_get(addr, "/-/ready", None) {
                break;
            }
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                panic!("prometheus exited {status}: {}", prometheus.log());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready: {}",
                prometheus.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        prometheus
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// `/api/v1/query`: the result vector, or the error Prometheus gave.
    fn query(&self, expr: &str) -> Result<Vec<serde_json::Value>, String> {
        let path = format!("/api/v1/query?query={}", url_encode(expr));
        let (status, body) = http_get(self.addr, &path, None).map_err(|e| e.to_string())?;
        let json: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("{status}: {e}: {body}"))?;
        if json["status"] != "success" {
            return Err(format!("{status}: {body}"));
        }
        Ok(json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Queries until the result is non-empty or `timeout` passes.
    fn query_until_data(
        &self,
        expr: &str,
        timeout: Duration,
    ) -> Result<Vec<serde_json::Value>, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let result = self.query(expr)?;
            if !result.is_empty() || Instant::now() > deadline {
                return Ok(result);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.wait();
    }
}

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new(PROMTOOL)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{PROMTOOL} (Debian package prometheus): {e}"));
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn prometheus_scrapes_and_every_dashboard_and_rule_query_evaluates() {
    testkit::require_root!();
    let fs = ScratchFs::new(FsKind::Ext4, FsKind::Ext4.small_size()).expect("scratch ext4");
    let store = Store::new(&fs.path().join("store"));
    let web = store.create("web");
    let db = store.create("db");
    std::fs::write(store.rw_dir(&web).join("data"), vec![1u8; 8192]).unwrap();
    let textfiles = fs.path().join("textfile");
    std::fs::create_dir_all(&textfiles).unwrap();
    std::fs::write(
        textfiles.join("layerscope_bench.prom"),
        support::BENCH_TEXTFILE,
    )
    .unwrap();

    let root = store.root.to_str().unwrap().to_string();
    let sidecar = Sidecar::start(
        &["--root", &root],
        &[
            "--rescan-seconds",
            "0.5",
            "--textfile-dir",
            textfiles.to_str().unwrap(),
        ],
    );

    // promtool on a text-format scrape: nothing to report.
    let scrape = sidecar.scrape_until(Duration::from_secs(10), |s| {
        s.contains("layerscope_container_rw_bytes{container=\"web\"} 8192")
    });
    let (ok, report) = promtool(&["check", "metrics"], Some(&scrape));
    assert!(
        ok && report.trim().is_empty(),
        "promtool check metrics: {report}\n{scrape}"
    );
    let mut args = vec!["check".to_string(), "rules".to_string()];
    args.extend(
        support::rule_files()
            .iter()
            .map(|p| p.display().to_string()),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, report) = promtool(&args, None);
    assert!(ok, "promtool check rules: {report}");

    let prometheus = Prometheus::start(sidecar.addr);
    let up = prometheus
        .query_until_data("up{job=\"layerscope\"} == 1", Duration::from_secs(30))
        .unwrap();
    assert_eq!(up.len(), 1, "no successful scrape: {}", prometheus.log());
    // Prometheus negotiated OpenMetrics: the series it stored are intact.
    let info = prometheus
        .query_until_data("layerscope_build_info", Duration::from_secs(5))
        .unwrap();
    assert_eq!(info.len(), 1, "{info:?}");
    let ids = prometheus.query("layerscope_container_info").unwrap();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(serde_json::to_string(&ids).unwrap().contains(&db.id));

    // A real workload through a real overlay mount: the probes see its
    // copy-ups and the sidecar attributes them to the container.
    let merged = store.containers().mount(&web).expect("mount web");
    for file in ["etc/app.conf", "bin/tool"] {
        let mut lower = std::fs::OpenOptions::new()
            .append(true)
            .open(merged.join(file))
            .unwrap();
        std::io::Write::write_all(&mut lower, b"x").unwrap();
    }
    let value = |scrape: &str, name: &str, kind: Option<&str>| -> f64 {
        support::samples(scrape)
            .into_iter()
            .find(|(n, labels, _)| {
                n == name
                    && labels.contains(&("container".into(), "web".into()))
                    && kind.is_none_or(|k| labels.contains(&("kind".into(), k.into())))
            })
            .map(|(_, _, v)| v)
            .unwrap_or(0.0)
    };
    let scrape = sidecar.scrape_until(Duration::from_secs(15), |s| {
        value(s, "layerscope_copy_up_total", Some("data")) >= 2.0
    });
    assert_eq!(
        value(&scrape, "layerscope_copy_up_total", Some("data")),
        2.0,
        "two lower files appended to: two data copy-ups\n{scrape}"
    );
    assert_eq!(
        value(&scrape, "layerscope_copy_up_bytes_total", None),
        4096.0 + 10_000.0,
        "bytes copied up are the lower files' sizes\n{scrape}"
    );

    // Let rate() windows hold several samples.
    std::thread::sleep(Duration::from_secs(3));
    let mut failures = Vec::new();
    for query in support::dashboard_queries() {
        let expr = support::substitute(&query.expr);
        match prometheus.query_until_data(&expr, Duration::from_secs(15)) {
            Ok(result) if result.is_empty() => {
                failures.push(format!("{}: no data for {expr}", query.origin))
            }
            Ok(_) => {}
            Err(e) => failures.push(format!("{}: {expr}: {e}", query.origin)),
        }
    }
    for query in support::rule_queries() {
        if let Err(e) = prometheus.query(&query.expr) {
            failures.push(format!("{}: {}: {e}", query.origin, query.expr));
        }
    }
    // Prometheus evaluated the rule files itself, without error.
    let (_, rules) = http_get(prometheus.addr, "/api/v1/rules", None).unwrap();
    let rules: serde_json::Value = serde_json::from_str(&rules).unwrap();
    let groups = rules["data"]["groups"].as_array().unwrap();
    assert_eq!(groups.len(), support::rule_files().len(), "{rules}");
    for group in groups {
        for rule in group["rules"].as_array().unwrap() {
            if rule["health"] == "err" {
                failures.push(format!("rule {}: {}", rule["name"], rule["lastError"]));
            }
        }
    }
    // A recording rule produced a series the dashboards could use.
    let recorded = prometheus
        .query_until_data("layerscope:copy_up:rate1m", Duration::from_secs(10))
        .unwrap();
    assert!(!recorded.is_empty(), "recording rules produced nothing");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(Path::new(&root), store.root.as_path());
    drop(prometheus);
    drop(sidecar);
    store.containers().unmount(&web).expect("unmount web");
    store.remove(&web);
    store.remove(&db);
}
