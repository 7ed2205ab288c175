//! How big a run is. `small` is the default of `cargo xtask bench` and
//! finishes in minutes on two cores; `full` uses the sizes of the design
//! (copy-ups up to 1 GiB, 16,384-file append storms).

use std::str::FromStr;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    Tiny,
    Small,
    Full,
}

impl FromStr for Scale {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tiny" => Ok(Scale::Tiny),
            "small" => Ok(Scale::Small),
            "full" => Ok(Scale::Full),
            other => Err(format!("unknown scale {other:?} (tiny, small, full)")),
        }
    }
}

impl Scale {
    /// `tiny`, `small` or `full`, as parsed.
    pub fn name(self) -> &'static str {
        match self {
            Scale::Tiny => "tiny",
            Scale::Small => "small",
            Scale::Full => "full",
        }
    }

    /// File sizes of the copy-up latency workload.
    pub fn copy_up_sizes(self) -> &'static [u64] {
        const KIB: u64 = 1024;
        const MIB: u64 = 1024 * KIB;
        match self {
            Scale::Tiny => &[4 * KIB, 64 * KIB, MIB],
            // Small stops at 16 MiB: 8 files of 64 MiB a repeat gave a p50
            // ratio that moved 10-15% between runs, and the 32 files it
            // would need to repeat cost the disk of 128 of 16 MiB (see
            // docs/performance.md, "Session 6"). Full covers the large sizes.
            Scale::Small => &[4 * KIB, 64 * KIB, MIB, 16 * MIB],
            Scale::Full => &[4 * KIB, 64 * KIB, MIB, 16 * MIB, 256 * MIB, 1024 * MIB],
        }
    }

    /// Files of `size` in the copy-up workload: one a round up to 16 MiB.
    /// Each file gives one sample a repeat, and a sample of a copy-up or
    /// of native's append (the denominator) varies by 20-30% on a shared
    /// VM, so a p50 ratio that repeats within 10% needs that many. Full's
    /// 256 MiB and 1 GiB get 8, which their disk space allows.
    pub fn copy_up_files(self, size: u64) -> usize {
        const MIB: u64 = 1024 * 1024;
        match self {
            Scale::Tiny => 4,
            Scale::Small | Scale::Full if size <= 16 * MIB => 32,
            Scale::Small | Scale::Full => 8,
        }
    }

    /// Rounds each file workload is split into; the bench runs a round on
    /// every target before the next (see `workloads::Round`). As many as
    /// the copy-up workload has small files, so each round copies one up.
    pub fn rounds(self) -> usize {
        match self {
            Scale::Tiny => 4,
            Scale::Small | Scale::Full => 32,
        }
    }

    /// Small lower files of the append storm, create/delete and chmod workloads.
    pub fn small_files(self) -> usize {
        match self {
            Scale::Tiny => 512,
            Scale::Small => 4096,
            Scale::Full => 16_384,
        }
    }

    /// Concurrent writers of the append storm.
    pub fn writers(self) -> usize {
        match self {
            Scale::Tiny => 2,
            Scale::Small => 4,
            Scale::Full => 8,
        }
    }

    /// The large lower file of the random-overwrite workload, and its writes.
    pub fn overwrite_file(self) -> (u64, usize) {
        const MIB: u64 = 1024 * 1024;
        match self {
            Scale::Tiny => (16 * MIB, 256),
            Scale::Small => (256 * MIB, 1024),
            Scale::Full => (4096 * MIB, 4096),
        }
    }

    /// Memory a run of this scale fills at its peak, nearly all of it the
    /// page cache of every target's stacks (a small run's `Cached:` peaked
    /// at 11.7 GiB): what the memory hold has the host back before the
    /// first measurement.
    pub fn memory_bytes(self) -> u64 {
        const GIB: u64 = 1024 * 1024 * 1024;
        match self {
            Scale::Tiny => GIB,
            Scale::Small => 12 * GIB,
            Scale::Full => 32 * GIB,
        }
    }

    /// Size of each target's loop-backed filesystem (sparse).
    pub fn filesystem_bytes(self) -> u64 {
        const GIB: u64 = 1024 * 1024 * 1024;
        match self {
            Scale::Tiny => GIB,
            Scale::Small => 4 * GIB,
            Scale::Full => 24 * GIB,
        }
    }
}
