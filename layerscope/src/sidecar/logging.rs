//! The sidecar's log output, `--log-format json|text` on stderr, filtered
//! by `LAYERSCOPE_LOG` (default `info`). The binary already installed a
//! global subscriber, so the sidecar sets its own as the default of every
//! thread it runs on (see [`enter`]).

use tracing::Dispatch;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn dispatch(format: LogFormat) -> Dispatch {
    let filter =
        || EnvFilter::try_from_env("LAYERSCOPE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter());
    match format {
        LogFormat::Text => Dispatch::new(builder.finish()),
        LogFormat::Json => Dispatch::new(builder.json().finish()),
    }
}

/// Makes `dispatch` the current thread's default for the thread's lifetime.
pub fn enter(dispatch: &Dispatch) {
    std::mem::forget(tracing::dispatcher::set_default(dispatch));
}
