//! Lints `dashboards/`: Grafana dashboards follow the project's conventions
//! (current schema, `$datasource`/`$instance`/`$container` variables, a unit
//! and a description on every panel, every query filtered by instance),
//! provisioning and Prometheus files are present and consistent, and every
//! metric a dashboard or rule queries exists in a real scrape of the
//! sidecar (bench metrics: in the bench harness's textfile writer too).

#[path = "sidecar_support.rs"]
mod support;

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use support::{Sidecar, Store, family_names, family_of, metric_names, workspace};
use testkit::{FsKind, ScratchFs};

const DATASOURCE: &str = "${datasource}";

#[test]
fn dashboards_follow_conventions() {
    let mut problems = Vec::new();
    let mut uids = HashSet::new();
    for (file, d) in support::dashboards() {
        let mut problem = |what: String| problems.push(format!("{file}: {what}"));
        if d["schemaVersion"].as_u64().unwrap_or(0) < 39 {
            problem(format!("schemaVersion {} < 39", d["schemaVersion"]));
        }
        let uid = d["uid"].as_str().unwrap_or("");
        if uid.is_empty() || !uids.insert(uid.to_string()) {
            problem(format!("uid {uid:?} empty or not unique"));
        }
        if d["title"].as_str().unwrap_or("").is_empty()
            || d["description"].as_str().unwrap_or("").is_empty()
        {
            problem("title and description wanted".into());
        }
        let variables = d["templating"]["list"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let variable = |name: &str| variables.iter().find(|v| v["name"] == name).cloned();
        match variable("datasource") {
            Some(v) if v["type"] == "datasource" && v["query"] == "prometheus" => {}
            _ => problem("no $datasource variable of type datasource (prometheus)".into()),
        }
        for name in ["instance", "container"] {
            match variable(name) {
                Some(v) if v["type"] == "query" && v["datasource"]["uid"] == DATASOURCE => {
                    if !v["query"]["query"]
                        .as_str()
                        .unwrap_or("")
                        .starts_with("label_values(")
                    {
                        problem(format!("${name}: want a label_values() query"));
                    }
                }
                _ => problem(format!("no ${name} query variable on ${{datasource}}")),
            }
        }
        let mut ids = HashSet::new();
        for panel in d["panels"].as_array().cloned().unwrap_or_default() {
            let title = panel["title"].as_str().unwrap_or("").to_string();
            let mut problem =
                |what: &str| problems.push(format!("{file}: panel {title:?}: {what}"));
            if title.is_empty() {
                problem("no title");
            }
            if !ids.insert(panel["id"].as_u64().unwrap_or(0)) {
                problem("panel id not unique");
            }
            if panel["description"].as_str().unwrap_or("").trim().len() < 10 {
                problem("no description");
            }
            if panel["fieldConfig"]["defaults"]["unit"]
                .as_str()
                .unwrap_or("")
                .is_empty()
            {
                problem("no unit (fieldConfig.defaults.unit)");
            }
            if panel["datasource"]["uid"] != DATASOURCE {
                problem("datasource is not ${datasource}");
            }
            if panel["gridPos"]["w"].as_u64().unwrap_or(0) == 0 {
                problem("no gridPos");
            }
            let targets = panel["targets"].as_array().cloned().unwrap_or_default();
            if targets.is_empty() {
                problem("no targets");
            }
            let mut refs = HashSet::new();
            for target in targets {
                let expr = target["expr"].as_str().unwrap_or("");
                if expr.is_empty() {
                    problem("target without expr");
                }
                if !expr.contains("instance=~\"$instance\"") {
                    problem("query not filtered by instance=~\"$instance\"");
                }
                if target["datasource"]["uid"] != DATASOURCE {
                    problem("target datasource is not ${datasource}");
                }
                if !refs.insert(target["refId"].as_str().unwrap_or("").to_string()) {
                    problem("refId not unique");
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn provisioning_and_prometheus_files_are_consistent() {
    let dashboards = workspace().join("dashboards");
    let read = |path: &str| {
        std::fs::read_to_string(dashboards.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let datasource = read("grafana/provisioning/datasources/prometheus.yml");
    assert!(datasource.contains("type: prometheus") && datasource.contains("apiVersion: 1"));
    let provider = read("grafana/provisioning/dashboards/layerscope.yml");
    assert!(
        provider.contains("type: file")
            && provider.contains("path: /var/lib/grafana/dashboards/layerscope")
    );
    let scrape = read("prometheus/prometheus.yml");
    assert!(scrape.contains("job_name: layerscope"));
    for rule_file in support::rule_files() {
        let name = rule_file
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            scrape.contains(&format!("/etc/prometheus/rules/{name}")),
            "prometheus.yml does not load {name}"
        );
    }
    // The alerts the project promises.
    let alerts: Vec<String> = support::rule_queries()
        .iter()
        .map(|q| q.origin.clone())
        .collect();
    for wanted in [
        "LayerscopeCopyUpLatencyHigh",
        "LayerscopeContainerRwLayerWriteHeavy",
    ] {
        assert!(
            alerts.iter().any(|a| a.ends_with(wanted)),
            "no alert {wanted}: {alerts:?}"
        );
    }
    let compose = std::fs::read_to_string(workspace().join("deploy/docker-compose.yml")).unwrap();
    for needle in [
        "privileged: true",
        "pid: host",
        "/sys/kernel/btf:/sys/kernel/btf:ro",
        "/var/lib/docker:/var/lib/docker:ro",
        "grafana/provisioning",
    ] {
        assert!(
            compose.contains(needle),
            "docker-compose.yml lacks {needle}"
        );
    }
}

#[test]
fn metric_name_extraction() {
    assert_eq!(
        metric_names(
            "histogram_quantile(0.99, sum by (le, driver) (rate(layerscope_copy_up_duration_seconds_bucket{instance=~\"$instance\",container=~\"x\"}[5m])))"
        ),
        ["layerscope_copy_up_duration_seconds_bucket"]
    );
    assert_eq!(
        metric_names("max by (instance) (layerscope_probe_attached) == 0 and up{job=\"a\"}"),
        ["layerscope_probe_attached", "up"]
    );
    assert_eq!(
        metric_names("layerscope:x:rate1m > 10 * 1024"),
        ["layerscope:x:rate1m"]
    );
}

#[test]
fn every_queried_metric_exists_in_a_real_scrape() {
    testkit::require_root!();
    let fs = ScratchFs::new(FsKind::Ext4, FsKind::Ext4.small_size()).expect("scratch ext4");
    let store = Store::new(&fs.path().join("store"));
    let web = store.create("web");
    let textfiles = fs.path().join("textfile");
    std::fs::create_dir_all(&textfiles).unwrap();
    std::fs::write(
        textfiles.join("layerscope_bench.prom"),
        support::BENCH_TEXTFILE,
    )
    .unwrap();
    let sidecar = Sidecar::start(
        &["--root", store.root.to_str().unwrap()],
        &["--textfile-dir", textfiles.to_str().unwrap()],
    );
    let scrape = sidecar.scrape_until(Duration::from_secs(10), |s| {
        s.contains("layerscope_container_rw_bytes{")
    });
    let scraped: BTreeSet<String> = family_names(&scrape).into_iter().collect();
    let bench_writer =
        std::fs::read_to_string(workspace().join("bench-harness/src/metrics.rs")).unwrap();

    let rules = support::rule_queries();
    let recorded: HashSet<String> = rules.iter().filter_map(|q| q.record.clone()).collect();
    let mut problems = Vec::new();
    let mut checked = 0;
    for query in support::dashboard_queries().into_iter().chain(rules) {
        let names = metric_names(&query.expr);
        if names.is_empty() {
            problems.push(format!("{}: no metric in {}", query.origin, query.expr));
        }
        for name in names {
            checked += 1;
            if name.contains(':') {
                if !recorded.contains(&name) {
                    problems.push(format!("{}: {name} is no recording rule", query.origin));
                }
            } else if name == "up" {
                // Prometheus's own per-target series.
            } else if !scraped.contains(family_of(&name)) && !scraped.contains(&name) {
                problems.push(format!(
                    "{}: {name} is not in a scrape of the sidecar",
                    query.origin
                ));
            } else if name.starts_with("layerscope_bench_")
                && !bench_writer.contains(&format!("\"{name}\""))
            {
                problems.push(format!(
                    "{}: {name} is not written by bench-harness/src/metrics.rs",
                    query.origin
                ));
            }
        }
    }
    assert!(checked > 20, "only {checked} metric references found");
    assert!(
        problems.is_empty(),
        "{}\nscrape families: {scraped:?}",
        problems.join("\n")
    );
    drop(sidecar);
    store.remove(&web);
}
