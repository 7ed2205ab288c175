//! `layerscope bench --push-gateway URL` against a real Prometheus
//! Pushgateway (Debian's `prometheus-pushgateway`, on a free port with its
//! own persistence file, stopped by pid even when the test fails): the
//! pushed `layerscope_bench_*` series come back from the gateway's
//! `/metrics` with the job and instance labels; a push that cannot reach
//! its gateway fails in one line naming the URL, after writing the results.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PUSHGATEWAY: &str = "prometheus-pushgateway";

fn layerscope() -> Command {
    Command::new(env!("CARGO_BIN_EXE_layerscope"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A GET over plain HTTP/1.1: the status code and the body.
fn get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// The gateway process, stopped by pid (SIGTERM, then SIGKILL) on drop.
struct Gateway {
    child: Child,
    port: u16,
}

impl Gateway {
    fn start(dir: &Path) -> Gateway {
        let port = free_port();
        let log = std::fs::File::create(dir.join("pushgateway.log")).unwrap();
        let child = Command::new(PUSHGATEWAY)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!(
                "--persistence.file={}",
                dir.join("pushgateway.db").display()
            ))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("start {PUSHGATEWAY} (Debian package prometheus-pushgateway): {e}")
            });
        let mut gateway = Gateway { child, port };
        let start = Instant::now();
        loop {
            if let Ok((200, _)) = get(port, "/-/ready") {
                return gateway;
            }
            if let Ok(Some(status)) = gateway.child.try_wait() {
                let log = std::fs::read_to_string(dir.join("pushgateway.log")).unwrap_or_default();
                panic!("{PUSHGATEWAY} exited ({status}): {log}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{PUSHGATEWAY} not ready on port {port} after 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

/// A quick bench run (native only, one small workload) with `extra` args.
fn bench(scratch: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    layerscope()
        .args([
            "bench",
            "--scale",
            "tiny",
            "--drivers",
            "native",
            "--workloads",
            "chmod-tree",
            "--no-probes",
            "--json",
        ])
        .arg("--scratch-dir")
        .arg(scratch)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn bench_pushes_its_metrics_to_a_real_pushgateway() {
    testkit::require_root!();
    let leaks = testkit::LeakCheck::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(work.path());
    let url = format!("http://127.0.0.1:{}", gateway.port);
    let out = work.path().join("out");
    let output = bench(leaks.dir(), &out, &["--push-gateway", &url]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench --push-gateway: {stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).contains(&format!("pushed to {url}")));

    let (code, metrics) = get(gateway.port, "/metrics").unwrap();
    assert_eq!(code, 200);
    let instance = format!("instance=\"{}\"", hostname());
    let pushed = |name: &str, labels: &[&str]| {
        metrics.lines().any(|line| {
            line.starts_with(&format!("{name}{{"))
                && line.contains("job=\"layerscope_bench\"")
                && line.contains(&instance)
                && labels.iter().all(|l| line.contains(l))
        })
    };
    for stat in ["p50", "p90", "p99", "max"] {
        let stat = format!("stat=\"{stat}\"");
        assert!(
            pushed(
                "layerscope_bench_latency_seconds",
                &["target=\"native\"", "workload=\"chmod-tree\"", &stat]
            ),
            "no {stat} latency series in the gateway's /metrics:\n{metrics}"
        );
    }
    assert!(pushed(
        "layerscope_bench_ops_per_second",
        &["target=\"native\""]
    ));
    assert!(pushed("layerscope_bench_run_duration_seconds", &[]));
    // The gateway's own record of the push, for the same group.
    assert!(pushed("push_time_seconds", &[]), "{metrics}");
    drop(gateway);
    leaks.assert_clean();
}

#[test]
fn a_failed_push_names_the_url_and_keeps_the_results() {
    testkit::require_root!();
    let leaks = testkit::LeakCheck::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}", free_port());
    let out = work.path().join("out");
    let output = bench(leaks.dir(), &out, &["--push-gateway", &url]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    let last = stderr.trim().lines().last().unwrap_or("");
    assert!(
        last.contains(&url) && last.contains("connect") && last.contains("Pushgateway"),
        "{stderr}"
    );
    assert!(out.join("results.json").exists());
    assert!(out.join("layerscope_bench.prom").exists());
    leaks.assert_clean();
}
