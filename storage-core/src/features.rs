//! What the running kernel supports, each feature probed for real (a mount,
//! an ioctl, a program load), never read from a version number. The report
//! line type [`Feature`] is shared with ebpf-probes, which adds the BPF lines.

use serde::Serialize;

/// One line of `layerscope doctor`: a feature, whether this kernel has it,
/// and for a "no" the reason (the failing call and its error).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Feature {
    pub name: String,
    pub supported: bool,
    /// Why not, or what was found (e.g. the overlay options accepted).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl Feature {
    pub fn yes(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            supported: true,
            detail: String::new(),
        }
    }

    pub fn no(name: impl Into<String>, why: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            supported: false,
            detail: why.into(),
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

impl std::fmt::Display for Feature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let answer = if self.supported { "yes" } else { "no" };
        if self.detail.is_empty() {
            write!(f, "{}: {answer}", self.name)
        } else {
            write!(f, "{}: {answer} ({})", self.name, self.detail)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_no_line_carries_its_reason() {
        let line = Feature::no("fentry", "bpf_prog_load: EPERM").to_string();
        assert_eq!(line, "fentry: no (bpf_prog_load: EPERM)");
        assert_eq!(Feature::yes("overlay").to_string(), "overlay: yes");
    }
}
