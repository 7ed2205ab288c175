//! `layerscope doctor [--json]`: what this kernel supports, each feature
//! probed for real by storage-core (mounts, loop devices, ioctls) and
//! ebpf-probes (BPF program loads and attaches), and the VM memory agents
//! a bench run holds off (bench-harness). Doctor never fails because
//! a feature is missing: it reports it, with the failing call and errno.

use std::io::Write;

use serde::Serialize;
use storage_core::features::Feature;

/// The `--json` document.
#[derive(Debug, Serialize)]
struct Report {
    /// `uname -r`.
    kernel_release: String,
    features: Vec<Feature>,
}

/// Probes everything and prints one aligned line per feature (or, with
/// `json`, one JSON document with the kernel release and every line).
pub fn run(json: bool) -> anyhow::Result<()> {
    let report = Report {
        kernel_release: kernel_release(),
        features: probe_all(),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", render(&report))?;
    }
    out.flush()?;
    Ok(())
}

/// Storage first: mounting an overlay loads the overlay module, whose BTF
/// the BPF probe then finds. Both are fast (well under a second). Then
/// the VM memory agents that take page cache away from containers.
fn probe_all() -> Vec<Feature> {
    let mut features = storage_core::features::probe_storage();
    features.extend(ebpf_probes::features::probe_bpf());
    features.extend(bench_harness::memory_agents::memory_agents());
    features
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// `name:` padded to the widest name, then `yes`/`no` and the detail.
fn render(report: &Report) -> String {
    let width = report
        .features
        .iter()
        .map(|f| f.name.len() + 1)
        .max()
        .unwrap_or(0);
    let mut text = format!("{:width$} {}\n", "kernel:", report.kernel_release);
    for feature in &report.features {
        let label = format!("{}:", feature.name);
        let answer = if feature.supported { "yes" } else { "no" };
        if feature.detail.is_empty() {
            text.push_str(&format!("{label:width$} {answer}\n"));
        } else {
            text.push_str(&format!("{label:width$} {answer} ({})\n", feature.detail));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_aligned_and_carry_reasons() {
        let report = Report {
            kernel_release: "6.18.0".into(),
            features: vec![
                Feature::yes("overlay"),
                Feature::no("fentry", "bpf_prog_load: EPERM"),
                Feature::yes("overlay.metacopy"),
            ],
        };
        assert_eq!(
            render(&report),
            "kernel:           6.18.0\n\
             overlay:          yes\n\
             fentry:           no (bpf_prog_load: EPERM)\n\
             overlay.metacopy: yes\n"
        );
    }

    #[test]
    fn json_has_the_kernel_and_every_feature() {
        let report = Report {
            kernel_release: "6.18.0".into(),
            features: vec![Feature::no("aufs", "mount -t aufs: ENODEV")],
        };
        let value = serde_json::to_value(&report).unwrap();
        assert_eq!(value["kernel_release"], "6.18.0");
        assert_eq!(value["features"][0]["name"], "aufs");
        assert_eq!(value["features"][0]["supported"], false);
    }
}
