//! Errors of a benchmark run, one line naming the driver or workload and
//! the cause.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("unknown driver {0:?} (known: {known})", known = crate::target::TARGET_NAMES.join(", "))]
    UnknownTarget(String),

    #[error("unknown workload {0:?} (known: {known})", known = crate::workloads::WORKLOAD_NAMES.join(", "))]
    UnknownWorkload(String),

    #[error("unknown docker driver {0:?} for --docker (known: {known})", known = crate::docker::DOCKER_DRIVERS.join(", "))]
    UnknownDockerDriver(String),

    #[error("--docker needs {program}: not found in PATH (Debian package {package})")]
    DockerMissing {
        program: &'static str,
        package: &'static str,
    },

    #[error("push to Pushgateway {url}: {why}")]
    Push { url: String, why: String },

    #[error("driver {target} unavailable: {why}")]
    Unavailable { target: String, why: String },

    #[error("driver {target}: {what}")]
    Setup { target: String, what: String },

    #[error("workload {workload} on {target}: {source}")]
    Workload {
        workload: String,
        target: String,
        #[source]
        source: std::io::Error,
    },

    #[error("interrupted: every mount, loop device and scratch file was removed")]
    Interrupted,

    #[error("{}: {op}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
