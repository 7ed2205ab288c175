//! Encoding a scrape: Prometheus text format 0.0.4 (the prometheus crate's
//! encoder) or OpenMetrics 1.0 when the `Accept` header asks for it
//! (counter families without `_total`, `_info` gauges as `info`, `# EOF`).

use std::fmt::Write as _;

use prometheus::proto::{MetricFamily, MetricType};
use prometheus::{Encoder, TextEncoder};

pub const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The last line of an OpenMetrics exposition.
pub const EOF: &str = "# EOF\n";
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether an `Accept` header prefers OpenMetrics (any mention of it with
/// a q-value not below text's).
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    let Some(accept) = accept else { return false };
    let q = |wanted: &str| -> f64 {
        accept
            .split(',')
            .filter(|part| part.trim().starts_with(wanted))
            .map(|part| {
                part.split(';')
                    .filter_map(|p| p.trim().strip_prefix("q="))
                    .find_map(|q| q.parse().ok())
                    .unwrap_or(1.0)
            })
            .fold(0.0, f64::max)
    };
    let om = q("application/openmetrics-text");
    om > 0.0 && om >= q("text/plain")
}

/// Encodes `families` as (content type, body).
pub fn encode(families: &[MetricFamily], openmetrics: bool) -> (&'static str, Vec<u8>) {
    if openmetrics {
        (OPENMETRICS, encode_openmetrics(families).into_bytes())
    } else {
        let mut body = Vec::new();
        TextEncoder::new()
            .encode(families, &mut body)
            .expect("families built with metrics encode");
        (TEXT, body)
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if v.is_nan() {
        "NaN".to_string()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

fn labels(pairs: &[(String, String)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(n, v)| format!("{n}=\"{}\"", escape_label(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// OpenMetrics 1.0 text.
pub fn encode_openmetrics(families: &[MetricFamily]) -> String {
    let mut out = String::new();
    for family in families {
        let name = family.name();
        let is_info = family.get_field_type() == MetricType::GAUGE
            && name.ends_with("_info")
            && family
                .get_metric()
                .iter()
                .all(|m| m.get_gauge().get_value() == 1.0);
        let (base, kind) = match family.get_field_type() {
            MetricType::COUNTER => (name.strip_suffix("_total").unwrap_or(name), "counter"),
            MetricType::HISTOGRAM => (name, "histogram"),
            MetricType::SUMMARY => (name, "summary"),
            MetricType::GAUGE if is_info => (name.strip_suffix("_info").unwrap_or(name), "info"),
            MetricType::GAUGE => (name, "gauge"),
            MetricType::UNTYPED => (name, "unknown"),
        };
        let _ = writeln!(out, "# TYPE {base} {kind}");
        let help = family
            .help()
            .replace('\\', "\\\\")
            .replace('\n', "\\n")
            .replace('"', "\\\"");
        let _ = writeln!(out, "# HELP {base} {help}");
        for metric in family.get_metric() {
            let pairs: Vec<(String, String)> = metric
                .get_label()
                .iter()
                .map(|l| (l.name().to_string(), l.value().to_string()))
                .collect();
            match family.get_field_type() {
                MetricType::COUNTER => {
                    let v = metric.get_counter().get_value();
                    let _ = writeln!(out, "{base}_total{} {}", labels(&pairs), number(v));
                }
                MetricType::GAUGE => {
                    let v = metric.get_gauge().get_value();
                    let sample = if is_info {
                        format!("{base}_info")
                    } else {
                        base.to_string()
                    };
                    let _ = writeln!(out, "{sample}{} {}", labels(&pairs), number(v));
                }
                MetricType::UNTYPED => {
                    #[allow(deprecated)] // the crate offers no other getter for untyped values
                    let v = metric.get_untyped().get_value();
                    let _ = writeln!(out, "{base}{} {}", labels(&pairs), number(v));
                }
                MetricType::HISTOGRAM => {
                    let h = metric.get_histogram();
                    let mut with_le = pairs.clone();
                    with_le.push(("le".into(), String::new()));
                    let mut has_inf = false;
                    for bucket in h.get_bucket() {
                        has_inf |= bucket.upper_bound().is_infinite();
                        with_le.last_mut().expect("le pushed").1 = number(bucket.upper_bound());
                        let _ = writeln!(
                            out,
                            "{base}_bucket{} {}",
                            labels(&with_le),
                            bucket.cumulative_count()
                        );
                    }
                    if !has_inf {
                        with_le.last_mut().expect("le pushed").1 = "+Inf".into();
                        let _ = writeln!(
                            out,
                            "{base}_bucket{} {}",
                            labels(&with_le),
                            h.get_sample_count()
                        );
                    }
                    let _ = writeln!(
                        out,
                        "{base}_sum{} {}",
                        labels(&pairs),
                        number(h.get_sample_sum())
                    );
                    let _ = writeln!(
                        out,
                        "{base}_count{} {}",
                        labels(&pairs),
                        h.get_sample_count()
                    );
                }
                MetricType::SUMMARY => {
                    let s = metric.get_summary();
                    let mut with_q = pairs.clone();
                    with_q.push(("quantile".into(), String::new()));
                    for q in s.get_quantile() {
                        with_q.last_mut().expect("quantile pushed").1 = number(q.quantile());
                        let _ = writeln!(out, "{base}{} {}", labels(&with_q), number(q.value()));
                    }
                    let _ = writeln!(
                        out,
                        "{base}_sum{} {}",
                        labels(&pairs),
                        number(s.sample_sum())
                    );
                    let _ = writeln!(out, "{base}_count{} {}", labels(&pairs), s.sample_count());
                }
            }
        }
    }
    out.push_str(EOF);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_openmetrics(Some(prometheus)));
        assert!(!wants_openmetrics(Some("text/plain")));
        assert!(!wants_openmetrics(None));
        assert!(!wants_openmetrics(Some(
            "text/plain;q=1,application/openmetrics-text;q=0.5"
        )));
    }
}
