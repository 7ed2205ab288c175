//! Re-exporting the bench harness's textfile (`layerscope_bench.prom`,
//! written by `layerscope bench`) from `--textfile-dir`, like
//! node_exporter's textfile collector, so one scrape of the sidecar feeds
//! the "Benchmark results" dashboard. Only gauge families named
//! `layerscope_bench_*` are accepted; a file with anything else is skipped
//! with a warning, never half-exported.

use std::path::Path;

/// The accepted `*.prom` files of `dir`, concatenated, in name order.
pub fn read_dir(dir: &Path) -> String {
    let mut names: Vec<_> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "prom"))
            .collect(),
        Err(e) => {
            tracing::warn!("textfile dir {}: {e}", dir.display());
            return String::new();
        }
    };
    names.sort();
    let mut out = String::new();
    for path in names {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        match check(&text) {
            Ok(()) => {
                out.push_str(&text);
                if !text.ends_with('\n') {
                    out.push('\n');
                }
            }
            Err(why) => tracing::warn!("textfile {}: skipped: {why}", path.display()),
        }
    }
    out
}

/// Accepts `# HELP`, `# TYPE <name> gauge`, blank lines and samples of
/// `layerscope_bench_*` metrics.
pub fn check(text: &str) -> Result<(), String> {
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        let bad = |what: &str| Err(format!("line {}: {what}", n + 1));
        if line.is_empty() || line.starts_with("# HELP layerscope_bench_") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                return bad("malformed TYPE");
            };
            if !name.starts_with("layerscope_bench_") || kind != "gauge" {
                return bad("only layerscope_bench_* gauges are re-exported");
            }
            continue;
        }
        if line.starts_with('#') {
            return bad("unexpected comment");
        }
        let name_end = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(line.len());
        if !line[..name_end].starts_with("layerscope_bench_") {
            return bad("only layerscope_bench_* samples are re-exported");
        }
        let value = line.rsplit('}').next().unwrap_or(line);
        let value = if value.len() == line.len() {
            &line[name_end..]
        } else {
            value
        };
        let Some(number) = value.split_whitespace().next() else {
            return bad("sample without value");
        };
        if number.parse::<f64>().is_err() && !matches!(number, "+Inf" | "-Inf" | "NaN") {
            return bad("value is not a number");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn accepts_bench_gauges_only() {
        let good = "# HELP layerscope_bench_ratio r\n# TYPE layerscope_bench_ratio gauge\nlayerscope_bench_ratio{workload=\"a\",target=\"b\",stat=\"p50\"} 1.5\nlayerscope_bench_run_duration_seconds 3\n";
        assert_eq!(check(good), Ok(()));
        assert!(check("# TYPE layerscope_bench_x counter\n").is_err());
        assert!(check("node_load1 3\n").is_err());
        assert!(check("layerscope_bench_x{a=\"b\"} nope\n").is_err());
    }
}
