//! `layerscope sidecar` as a process: containers of layerscope's store and
//! of a real Docker root followed without restart (removed containers'
//! series disappear), sizes, `/healthz` and `/`, OpenMetrics negotiation,
//! SIGTERM/SIGINT exit 0 within 2 s, SIGHUP reload, and one-line errors
//! for bad input.

#[path = "sidecar_support.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{Sidecar, Store, http_get, samples};
use testkit::{FsKind, ScratchFs};

fn value(scrape: &str, name: &str, container: &str) -> Option<f64> {
    samples(scrape)
        .into_iter()
        .find(|(n, labels, _)| {
            n == name
                && labels
                    .iter()
                    .any(|(k, v)| k == "container" && v == container)
        })
        .map(|(_, _, v)| v)
}

#[test]
fn follows_store_containers_and_drops_removed_series() {
    testkit::require_root!();
    let fs = ScratchFs::new(FsKind::Ext4, FsKind::Ext4.small_size()).expect("scratch ext4");
    let store = Store::new(fs.path());
    let web = store.create("web");
    let db = store.create("db");
    std::fs::write(store.rw_dir(&web).join("log"), vec![0u8; 5000]).unwrap();

    let root = fs.path().to_str().unwrap();
    let sidecar = Sidecar::start(&["--root", root], &["--rescan-seconds", "0.2"]);
    let scrape = sidecar.scrape_until(Duration::from_secs(10), |s| {
        value(s, "layerscope_container_rw_bytes", "web") == Some(5000.0)
            && value(s, "layerscope_container_rw_bytes", "db").is_some()
    });
    assert_eq!(
        value(&scrape, "layerscope_container_rw_bytes", "web"),
        Some(5000.0),
        "{scrape}"
    );
    assert_eq!(
        value(&scrape, "layerscope_container_rw_bytes", "db"),
        Some(0.0),
        "{scrape}"
    );
    // Virtual size: rw plus the image layer (14,096 bytes of files).
    let virtual_web = value(&scrape, "layerscope_container_virtual_bytes", "web").unwrap();
    assert_eq!(virtual_web, 5000.0 + 14_096.0, "{scrape}");
    assert!(
        scrape.contains(&format!(
            "layerscope_container_info{{container=\"db\",id=\"{}\",image=\"app:latest\"}} 1",
            db.id
        )),
        "{scrape}"
    );
    // Probe counters: zero series for live containers that did nothing,
    // and the copy-up program attached in whatever mode this kernel allows.
    assert_eq!(
        value(&scrape, "layerscope_copy_up_total", "db"),
        Some(0.0),
        "{scrape}"
    );
    assert!(
        support::samples(&scrape)
            .iter()
            .any(|(name, labels, v)| name == "layerscope_probe_attached"
                && labels.contains(&("program".into(), "copy_up".into()))
                && *v == 1.0),
        "{scrape}"
    );

    // Growth is picked up without restart.
    std::fs::write(store.rw_dir(&web).join("log2"), vec![0u8; 1000]).unwrap();
    let scrape = sidecar.scrape_until(Duration::from_secs(10), |s| {
        value(s, "layerscope_container_rw_bytes", "web") == Some(6000.0)
    });
    assert_eq!(
        value(&scrape, "layerscope_container_rw_bytes", "web"),
        Some(6000.0)
    );

    // Removal: every series of db disappears; a new container appears.
    store.remove(&db);
    let cache = store.create("cache");
    let scrape = sidecar.scrape_until(Duration::from_secs(10), |s| {
        !s.contains("\"db\"") && s.contains("container=\"cache\"")
    });
    assert!(
        !scrape.contains("container=\"db\""),
        "stale series: {scrape}"
    );
    assert!(!scrape.contains(&db.id), "stale id: {scrape}");
    assert!(scrape.contains(&cache.id), "{scrape}");
    drop(sidecar);
    store.remove(&web);
    store.remove(&cache);
}

#[test]
fn follows_docker_root_containers() {
    testkit::require_root!();
    let busybox = std::fs::read("/bin/busybox").expect("read /bin/busybox (busybox-static)");
    let mut daemon = match testkit::docker::DockerDaemon::start("overlay2") {
        Ok(daemon) => daemon,
        Err(e) if e.is_unavailable() => {
            println!("skipped: dockerd unavailable: {e}");
            return;
        }
        Err(e) => panic!("start dockerd: {e}"),
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let files = testkit::docker::busybox_files(&busybox);
        let image = daemon.import_image("sidecar-test:1", &files).unwrap();
        daemon
            .run(&["create", "--name", "alpha", &image, "/bin/busybox", "true"])
            .unwrap();
        let root = daemon.data_root();
        let sidecar = Sidecar::start(
            &[],
            &[
                "--no-store",
                "--docker-root",
                root.to_str().unwrap(),
                "--rescan-seconds",
                "0.2",
            ],
        );
        let scrape = sidecar.scrape_until(Duration::from_secs(10), |s| {
            value(s, "layerscope_container_rw_bytes", "alpha").is_some()
        });
        assert!(
            value(&scrape, "layerscope_container_virtual_bytes", "alpha").unwrap()
                >= busybox.len() as f64,
            "{scrape}"
        );
        assert!(
            scrape.contains(
                "layerscope_copy_up_total{container=\"alpha\",driver=\"overlay2\",kind=\"data\"} 0"
            ),
            "{scrape}"
        );
        daemon
            .run(&["create", "--name", "beta", &image, "/bin/busybox", "true"])
            .unwrap();
        daemon.run(&["rm", "alpha"]).unwrap();
        let scrape = sidecar.scrape_until(Duration::from_secs(10), |s| {
            !s.contains("\"alpha\"") && s.contains("container=\"beta\"")
        });
        assert!(!scrape.contains("\"alpha\""), "stale series: {scrape}");
        assert!(scrape.contains("container=\"beta\""), "{scrape}");
    }));
    daemon.stop().expect("stop dockerd");
    daemon.cleanup().expect("clean up dockerd");
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn healthz_index_and_openmetrics() {
    // Probes attached: healthy.
    let attached = Sidecar::start(&[], &["--no-store"]);
    let (status, body) = http_get(attached.addr, "/healthz", None).unwrap();
    assert_eq!(status, 200, "{body}");
    drop(attached);
    // Probes detached: unhealthy, and says which.
    let sidecar = Sidecar::start(&[], &["--no-store", "--no-probes"]);
    let (status, body) = http_get(sidecar.addr, "/healthz", None).unwrap();
    assert_eq!(status, 503, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["probes_attached"], false);
    assert_eq!(health["programs"].as_array().unwrap().len(), 3);
    let (status, body) = http_get(sidecar.addr, "/", None).unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("href=\"/metrics\"") && body.contains("href=\"/healthz\""));
    assert_eq!(http_get(sidecar.addr, "/nope", None).unwrap().0, 404);

    let (status, om) = http_get(
        sidecar.addr,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    )
    .unwrap();
    assert_eq!(status, 200);
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(
        om.contains("# TYPE layerscope_probe_events_lost counter"),
        "{om}"
    );
    assert!(om.contains("layerscope_probe_events_lost_total 0"), "{om}");
    assert!(om.contains("# TYPE layerscope_build info"), "{om}");
    let text = sidecar.scrape();
    assert!(!text.contains("# EOF"));
    assert!(text.contains("# TYPE layerscope_probe_events_lost_total counter"));
}

fn wait_exit(sidecar: &mut Sidecar, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = sidecar.child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

#[test]
fn sigterm_and_sigint_exit_zero_within_two_seconds() {
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let mut sidecar = Sidecar::start(&[], &["--no-store"]);
        sidecar.scrape();
        let sent = Instant::now();
        kill(Pid::from_raw(sidecar.pid()), signal).unwrap();
        let status = wait_exit(&mut sidecar, Duration::from_secs(2))
            .unwrap_or_else(|| panic!("{signal} did not stop the sidecar within 2 s"));
        assert!(status.success(), "{signal}: {status}: {}", sidecar.stderr());
        println!("{signal}: exited in {:?}", sent.elapsed());
    }
}

#[test]
fn sighup_reloads_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sidecar.toml");
    std::fs::write(&config, "buckets = [0.001, 0.1]\n").unwrap();
    let sidecar = Sidecar::start(
        &[],
        &[
            "--no-store",
            "--no-probes",
            "--config",
            config.to_str().unwrap(),
        ],
    );
    assert!(
        sidecar
            .scrape()
            .contains("layerscope_probe_attached{program=")
    );
    // Drop the program label: the series merge into one per mode.
    std::fs::write(&config, "labels = [\"mode\", \"strategy\", \"version\"]\n").unwrap();
    kill(Pid::from_raw(sidecar.pid()), Signal::SIGHUP).unwrap();
    let scrape = sidecar.scrape_until(Duration::from_secs(5), |s| {
        s.contains("layerscope_probe_attached{mode=\"none\"} 0")
    });
    assert!(
        scrape.contains("layerscope_probe_attached{mode=\"none\"} 0"),
        "{scrape}"
    );
    assert!(!scrape.contains("kernel="), "{scrape}");
    // A bad file on reload is logged; the sidecar keeps running.
    std::fs::write(&config, "labels = [\"pid\"]\n").unwrap();
    kill(Pid::from_raw(sidecar.pid()), Signal::SIGHUP).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        sidecar
            .scrape()
            .contains("layerscope_probe_attached{mode=\"none\"} 0")
    );
    assert!(
        sidecar.stderr().contains("config reload failed"),
        "{}",
        sidecar.stderr()
    );
}

/// One clear line on stderr, non-zero exit, quickly.
fn assert_one_line_error(args: &[&str], needle: &str) {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_layerscope"))
        .args(args)
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!output.status.success(), "{args:?} succeeded");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?}: want one error line, got: {stderr}"
    );
    assert!(
        lines[0].starts_with("layerscope: ") && lines[0].contains(needle),
        "{args:?}: want {needle:?} in {stderr}"
    );
}

#[test]
fn bad_input_is_one_line_and_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "listen = [\n").unwrap();
    assert_one_line_error(
        &["sidecar", "--no-store", "--config", bad.to_str().unwrap()],
        "bad.toml",
    );
    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, "lisen = \"x\"\n").unwrap();
    assert_one_line_error(
        &[
            "sidecar",
            "--no-store",
            "--config",
            unknown.to_str().unwrap(),
        ],
        "unknown field",
    );
    assert_one_line_error(
        &[
            "sidecar",
            "--no-store",
            "--config",
            "/nonexistent/sidecar.toml",
        ],
        "/nonexistent/sidecar.toml",
    );
    assert_one_line_error(
        &[
            "sidecar",
            "--no-store",
            "--docker-root",
            "/nonexistent/docker",
        ],
        "docker root /nonexistent/docker",
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    assert_one_line_error(
        &["sidecar", "--no-store", "--listen", &addr],
        &format!("listen on {addr}"),
    );
    assert_one_line_error(
        &["sidecar", "--no-store", "--buckets", "1,0.5"],
        "strictly increasing",
    );
}
