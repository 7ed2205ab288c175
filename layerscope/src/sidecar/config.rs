//! The sidecar's configuration: defaults, the optional TOML file
//! (`--config`), and the command-line flags on top (flags win). Validated
//! once here, so the rest of the sidecar trusts it; SIGHUP re-runs
//! [`Config::load`] with the same flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

/// Every label the sidecar can put on a series; the allow-list is a subset.
pub const LABELS: [&str; 11] = [
    "container",
    "driver",
    "kind",
    "layer",
    "id",
    "image",
    "program",
    "mode",
    "strategy",
    "kernel",
    "version",
];

/// Default copy-up latency buckets, in seconds: 50 us .. 10 s.
pub const DEFAULT_BUCKETS: [f64; 14] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 10.0,
];

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9750";

/// The TOML file, every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub root: Option<PathBuf>,
    pub driver: Option<String>,
    pub docker_root: Option<PathBuf>,
    pub labels: Option<Vec<String>>,
    pub buckets: Option<Vec<f64>>,
    pub rescan_seconds: Option<f64>,
    pub size_budget: Option<usize>,
    pub textfile_dir: Option<PathBuf>,
}

/// What the command line says (`None`: not given).
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub config: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    /// `--root`, only when given explicitly (flag or `LAYERSCOPE_ROOT`).
    pub root: Option<PathBuf>,
    /// `--root`'s default, used when neither flag nor file names one.
    pub default_root: PathBuf,
    pub driver: String,
    pub docker_root: Option<PathBuf>,
    pub no_store: bool,
    pub labels: Option<Vec<String>>,
    pub buckets: Option<Vec<f64>>,
    pub rescan_seconds: Option<f64>,
    pub size_budget: Option<usize>,
    pub textfile_dir: Option<PathBuf>,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    /// layerscope's own store, when it exists (or was named explicitly).
    pub root: Option<PathBuf>,
    pub driver: String,
    pub docker_root: Option<PathBuf>,
    /// Label names kept on series; the others are dropped (series summed).
    pub labels: Vec<String>,
    pub buckets: Vec<f64>,
    pub rescan: Duration,
    /// Directory entries the size refresher may stat per second.
    pub size_budget: usize,
    /// `*.prom` files of `layerscope_bench_*` gauges to re-export.
    pub textfile_dir: Option<PathBuf>,
}

impl Config {
    /// Defaults, then the file named by `flags.config`, then the flags.
    pub fn load(flags: &Flags) -> anyhow::Result<Config> {
        let file = match &flags.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let listen = match (flags.listen, &file.listen) {
            (Some(addr), _) => addr,
            (None, Some(text)) => text
                .parse()
                .with_context(|| format!("config listen {text:?}: not an address:port"))?,
            (None, None) => DEFAULT_LISTEN.parse().expect("default address parses"),
        };
        let root = if flags.no_store {
            None
        } else {
            match (&flags.root, &file.root) {
                (Some(root), _) | (None, Some(root)) => Some(root.clone()),
                (None, None) => Some(flags.default_root.clone()).filter(|r| r.is_dir()),
            }
        };
        let labels = flags
            .labels
            .clone()
            .or(file.labels)
            .unwrap_or_else(|| LABELS.iter().map(|l| l.to_string()).collect());
        for label in &labels {
            if !LABELS.contains(&label.as_str()) {
                bail!("label {label:?}: unknown (known: {})", LABELS.join(", "));
            }
        }
        let buckets = flags
            .buckets
            .clone()
            .or(file.buckets)
            .unwrap_or_else(|| DEFAULT_BUCKETS.to_vec());
        check_buckets(&buckets)?;
        let rescan_seconds = flags.rescan_seconds.or(file.rescan_seconds).unwrap_or(2.0);
        if !(rescan_seconds.is_finite() && (0.05..=3600.0).contains(&rescan_seconds)) {
            bail!("rescan interval {rescan_seconds} s: want 0.05 ..= 3600");
        }
        let size_budget = flags.size_budget.or(file.size_budget).unwrap_or(20_000);
        if size_budget == 0 {
            bail!("size budget 0: want at least 1 entry per second");
        }
        Ok(Config {
            listen,
            root,
            driver: file.driver.unwrap_or_else(|| flags.driver.clone()),
            docker_root: flags.docker_root.clone().or(file.docker_root),
            labels,
            buckets,
            rescan: Duration::from_secs_f64(rescan_seconds),
            size_budget,
            textfile_dir: flags.textfile_dir.clone().or(file.textfile_dir),
        })
    }

    pub fn allows(&self, label: &str) -> bool {
        self.labels.iter().any(|l| l == label)
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("config {}: read", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        let message = e.message().to_string();
        let line = e
            .span()
            .map(|span| text[..span.start].lines().count().max(1))
            .map(|l| format!(" (line {l})"))
            .unwrap_or_default();
        anyhow::anyhow!("config {}: {message}{line}", path.display())
    })
}

fn check_buckets(buckets: &[f64]) -> anyhow::Result<()> {
    if buckets.is_empty() {
        bail!("histogram buckets: empty");
    }
    if buckets.iter().any(|b| !b.is_finite() || *b <= 0.0) {
        bail!("histogram buckets {buckets:?}: want finite upper bounds > 0");
    }
    if buckets.windows(2).any(|w| w[0] >= w[1]) {
        bail!("histogram buckets {buckets:?}: want strictly increasing");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> Flags {
        Flags {
            default_root: PathBuf::from("/nonexistent/layerscope"),
            driver: "overlay2".into(),
            ..Flags::default()
        }
    }

    #[test]
    fn defaults() {
        let config = Config::load(&flags()).unwrap();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.root, None);
        assert_eq!(config.buckets, DEFAULT_BUCKETS);
        assert!(config.allows("container"));
    }

    #[test]
    fn file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sidecar.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:1234\"\nlabels = [\"container\"]\nbuckets = [0.1, 1.0]\n",
        )
        .unwrap();
        let mut f = flags();
        f.config = Some(path.clone());
        let config = Config::load(&f).unwrap();
        assert_eq!(config.listen.port(), 1234);
        assert_eq!(config.buckets, [0.1, 1.0]);
        assert!(!config.allows("driver"));
        f.listen = Some("127.0.0.1:99".parse().unwrap());
        assert_eq!(Config::load(&f).unwrap().listen.port(), 99);
    }

    #[test]
    fn bad_input_is_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "listen = \n").unwrap();
        let mut f = flags();
        f.config = Some(path);
        let error = Config::load(&f).unwrap_err().to_string();
        assert!(
            error.contains("bad.toml") && !error.contains('\n'),
            "{error}"
        );
        let mut f = flags();
        f.buckets = Some(vec![1.0, 0.5]);
        assert!(Config::load(&f).is_err());
        let mut f = flags();
        f.labels = Some(vec!["pid".into()]);
        assert!(Config::load(&f).is_err());
    }
}
