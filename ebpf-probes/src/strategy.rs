//! The strategy ladder: [`ladder`] lists the rungs the tracer tries, best
//! first (fentry/fexit, then kprobes, then tracepoints), and [`Choice`]
//! says which one runs and why each rung above it was passed over.

use std::fmt;

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

/// The rungs to try, best first: fentry, kprobe, tracepoints; only
/// `forced` when a strategy is forced. The proof is the tracer's real load
/// and attach of each rung's programs (see [`crate::tracer`]); a rung that
/// fails is passed over with the kernel's reason in [`Choice::passed_over`].
pub fn ladder(forced: Option<Strategy>) -> Vec<Strategy> {
    match forced {
        Some(strategy) => vec![strategy],
        None => vec![Strategy::Fentry, Strategy::Kprobe, Strategy::Tracepoints],
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fentry" => Ok(Self::Fentry),
            "kprobe" => Ok(Self::Kprobe),
            "tracepoints" => Ok(Self::Tracepoints),
            other => Err(format!(
                "unknown probe strategy {other:?} (fentry, kprobe or tracepoints)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ladder_order_and_names() {
        assert_eq!(
            ladder(None),
            [Strategy::Fentry, Strategy::Kprobe, Strategy::Tracepoints]
        );
        assert_eq!(ladder(Some(Strategy::Kprobe)), [Strategy::Kprobe]);
        for s in ladder(None) {
            assert_eq!(s.as_str().parse::<Strategy>(), Ok(s));
        }
        assert!("uprobe".parse::<Strategy>().is_err());
    }
}
