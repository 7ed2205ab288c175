//! The sidecar under container churn: 500 containers created and removed
//! through `ContainerStore` on a scratch ext4, twice, while a client
//! scrapes every second. Memory stays bounded (RSS after the second churn
//! within a few MiB of after the first), every scrape succeeds, and no
//! series of a removed container remains. Prints the measured figures.

#[path = "sidecar_support.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::{Sidecar, Store};
use testkit::{FsKind, ScratchFs};

const CONTAINERS: usize = 500;
const MIB: f64 = 1024.0 * 1024.0;

fn info_series(scrape: &str) -> usize {
    scrape
        .lines()
        .filter(|l| l.starts_with("layerscope_container_info{"))
        .count()
}

#[test]
fn churn_of_500_containers_keeps_memory_bounded_and_no_stale_series() {
    testkit::require_root!();
    let fs = ScratchFs::new(FsKind::Ext4, 512 * 1024 * 1024).expect("scratch ext4");
    let store = Store::new(&fs.path().join("store"));
    let sidecar = Arc::new(Sidecar::start(
        &["--root", store.root.to_str().unwrap()],
        &[],
    ));
    let rss_start = sidecar.rss_bytes();

    // A Prometheus-like client: one scrape per second, all must succeed.
    let stop = Arc::new(AtomicBool::new(false));
    let scraper = {
        let (sidecar, stop) = (sidecar.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut slowest = Duration::ZERO;
            let mut scrapes = 0;
            while !stop.load(Ordering::SeqCst) {
                let started = Instant::now();
                let (status, body) =
                    support::http_get(sidecar.addr, "/metrics", None).expect("scrape");
                assert_eq!(status, 200, "{body}");
                slowest = slowest.max(started.elapsed());
                scrapes += 1;
                std::thread::sleep(Duration::from_secs(1).saturating_sub(started.elapsed()));
            }
            (scrapes, slowest)
        })
    };

    let mut rss = Vec::new();
    for round in 1..=2 {
        let started = Instant::now();
        let created: Vec<_> = (0..CONTAINERS)
            .map(|i| store.create(&format!("churn-{round}-{i}")))
            .collect();
        let create_time = started.elapsed();
        let scrape =
            sidecar.scrape_until(Duration::from_secs(30), |s| info_series(s) == CONTAINERS);
        assert_eq!(
            info_series(&scrape),
            CONTAINERS,
            "round {round}: not every container listed"
        );
        let seen_after = started.elapsed();
        let rss_full = sidecar.rss_bytes();
        let scrape_bytes = scrape.len();
        let started = Instant::now();
        for container in &created {
            store.remove(container);
        }
        let remove_time = started.elapsed();
        let scrape = sidecar.scrape_until(Duration::from_secs(30), |s| !s.contains("churn-"));
        assert!(
            !scrape.contains("churn-"),
            "round {round}: stale series remain"
        );
        for container in &created {
            assert!(!scrape.contains(&container.id), "stale id {}", container.id);
        }
        let rss_empty = sidecar.rss_bytes();
        println!(
            "round {round}: created {CONTAINERS} in {create_time:?} (all listed after {seen_after:?}), scrape {scrape_bytes} bytes; removed in {remove_time:?}; RSS with {CONTAINERS}: {:.1} MiB, after removal: {:.1} MiB",
            rss_full as f64 / MIB,
            rss_empty as f64 / MIB
        );
        rss.push((rss_full, rss_empty));
    }
    stop.store(true, Ordering::SeqCst);
    let (scrapes, slowest) = scraper.join().expect("every scrape succeeded");
    println!(
        "RSS at start {:.1} MiB; {scrapes} scrapes, slowest {slowest:?}",
        rss_start as f64 / MIB
    );
    let (_, after_first) = rss[0];
    let (_, after_second) = rss[1];
    assert!(
        after_second <= after_first + 8 * 1024 * 1024,
        "RSS grew from {after_first} to {after_second} bytes over a second churn"
    );
    assert!(after_second < 128 * 1024 * 1024, "RSS {after_second} bytes");
}
