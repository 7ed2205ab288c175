//! The strategy ladder: [`choose`] tries fentry/fexit, then kprobes, then
//! tracepoints (what the kernel allows, proven by the doctor's real program
//! loads in [`crate::features`]) and says why each rung above the chosen
//! one was passed over.

use std::fmt;

use crate::features;

/// How overlay events are observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// fentry/fexit on overlay's copy-up functions.
    Fentry,
    /// kprobe/kretprobe on the same functions.
    Kprobe,
    /// Syscall and ext4 tracepoints (this crate's `overlay_trace` object).
    Tracepoints,
}

impl Strategy {
    /// Lowercase name, as in `layerscope_probe_info{strategy}`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fentry => "fentry",
            Self::Kprobe => "kprobe",
            Self::Tracepoints => "tracepoints",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The chosen rung and why the ones above it were not.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Choice {
    /// What runs.
    pub strategy: Strategy,
    /// One line per rung above it: `fentry: <why not>`.
    pub passed_over: Vec<String>,
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "strategy {}", self.strategy)?;
        if !self.passed_over.is_empty() {
            write!(f, " ({})", self.passed_over.join("; "))?;
        }
        Ok(())
    }
}

/// Probes the kernel and picks the highest rung this build can run. The
/// fentry and kprobe programs are not written yet, so an available rung
/// above tracepoints is passed over with that reason.
pub fn choose() -> Choice {
    let found = features::probe_bpf();
    let reason = |name: &str| -> String {
        match found.iter().find(|f| f.name == name) {
            Some(f) if f.supported => "available, but this build has no such programs yet".into(),
            Some(f) => f.detail.clone(),
            None => "not probed".into(),
        }
    };
    Choice {
        strategy: Strategy::Tracepoints,
        passed_over: vec![
            format!("fentry: {}", reason("fentry")),
            format!("kprobe: {}", reason("kprobe")),
        ],
    }
}
