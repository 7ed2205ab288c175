//! SVG plots of a run (plotters): copy-up latency by file size per target,
//! and every workload's p50 ratio to native per target.

use std::path::Path;

use plotters::prelude::*;

use crate::BenchError;
use crate::report::Results;

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn plot_error(path: &Path, e: impl std::fmt::Display) -> BenchError {
    BenchError::Io {
        op: "plot",
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Writes `copy-up-latency.svg` and `ratios.svg` into `dir`.
pub fn write(results: &Results, dir: &Path) -> Result<(), BenchError> {
    copy_up_latency(results, &dir.join("copy-up-latency.svg"))?;
    ratios(results, &dir.join("ratios.svg"))
}

fn targets(results: &Results) -> Vec<String> {
    let mut targets: Vec<String> = Vec::new();
    for row in &results.rows {
        if !targets.contains(&row.target) {
            targets.push(row.target.clone());
        }
    }
    targets
}

/// `copy-up/64KiB` -> 65536.
fn size_of_label(label: &str) -> Option<f64> {
    let size = label.strip_prefix("copy-up/")?;
    let digits: String = size.chars().take_while(char::is_ascii_digit).collect();
    let unit = &size[digits.len()..];
    let scale = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(digits.parse::<f64>().ok()? * scale)
}

fn copy_up_latency(results: &Results, path: &Path) -> Result<(), BenchError> {
    let series: Vec<(String, Vec<(f64, f64)>)> = targets(results)
        .into_iter()
        .map(|target| {
            let mut points: Vec<(f64, f64)> = results
                .rows
                .iter()
                .filter(|r| r.target == target)
                .filter_map(|r| {
                    Some((size_of_label(&r.workload)?, r.latency.p50_seconds.max(1e-7)))
                })
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            (target, points)
        })
        .filter(|(_, points)| !points.is_empty())
        .collect();
    let all = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x_max, mut y_min, mut y_max) = (1024.0f64, f64::MAX, f64::MIN);
    for &(x, y) in all {
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    if series.is_empty() {
        return Ok(());
    }
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_error(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "copy-up latency by file size (p50, first append)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (1024.0..x_max * 1.5).log_scale(),
            (y_min / 1.5..y_max * 1.5).log_scale(),
        )
        .map_err(|e| plot_error(path, e))?;
    chart
        .configure_mesh()
        .x_desc("file size (bytes)")
        .y_desc("p50 latency (s)")
        .draw()
        .map_err(|e| plot_error(path, e))?;
    for (i, (target, points)) in series.into_iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| plot_error(path, e))?
            .label(target)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| plot_error(path, e))?;
    root.present().map_err(|e| plot_error(path, e))
}

fn ratios(results: &Results, path: &Path) -> Result<(), BenchError> {
    let mut workloads: Vec<String> = Vec::new();
    for r in &results.ratios {
        if !workloads.contains(&r.workload) {
            workloads.push(r.workload.clone());
        }
    }
    if workloads.is_empty() {
        return Ok(());
    }
    let y_max = results
        .ratios
        .iter()
        .map(|r| r.p50_ratio)
        .fold(1.0, f64::max);
    let y_min = results
        .ratios
        .iter()
        .map(|r| r.p50_ratio)
        .fold(1.0, f64::min);
    let root = SVGBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_error(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "p50 latency as a ratio to native (docker-*: to docker-volume; 1 = a volume)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(120)
        .y_label_area_size(70)
        .build_cartesian_2d(0..workloads.len(), (y_min / 1.5..y_max * 1.5).log_scale())
        .map_err(|e| plot_error(path, e))?;
    let names = workloads.clone();
    chart
        .configure_mesh()
        .x_labels(workloads.len())
        .x_label_formatter(&|i| names.get(*i).cloned().unwrap_or_default())
        .y_desc("ratio to native (log)")
        .draw()
        .map_err(|e| plot_error(path, e))?;
    let mut targets: Vec<String> = Vec::new();
    for r in &results.ratios {
        if !targets.contains(&r.target) {
            targets.push(r.target.clone());
        }
    }
    for (i, target) in targets.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let points: Vec<(usize, f64)> = workloads
            .iter()
            .enumerate()
            .filter_map(|(x, w)| {
                results
                    .ratios
                    .iter()
                    .find(|r| &r.workload == w && &r.target == target)
                    .map(|r| (x, r.p50_ratio))
            })
            .collect();
        chart
            .draw_series(PointSeries::of_element(
                points,
                5,
                color.filled(),
                &|c, s, st| Circle::new(c, s, st),
            ))
            .map_err(|e| plot_error(path, e))?
            .label(target.clone())
            .legend(move |(x, y)| Circle::new((x + 10, y), 5, color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| plot_error(path, e))?;
    root.present().map_err(|e| plot_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_up_labels_give_sizes() {
        assert_eq!(size_of_label("copy-up/4KiB"), Some(4096.0));
        assert_eq!(size_of_label("copy-up/1GiB"), Some(1073741824.0));
        assert_eq!(size_of_label("append-storm"), None);
    }
}
