//! Diagnostic logging: `tracing` events formatted to stderr.
//!
//! The level comes from `log.level` in the configuration; `RUST_LOG`, when set and valid, overrides it so an
//! operator can turn on `debug` for one run without editing files. This is the agent's diagnostic log only:
//! the event log (`events.jsonl`) is written separately by the event-log actor and is always on.
//!
//! Entry point: [`init`]. It is idempotent, so tests and several commands in one process may call it.

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Installs the stderr subscriber with `level` (an env-filter directive such as `info` or
/// `cohort_actors=debug,info`), unless `RUST_LOG` is set. A second call, or a call after another global
/// subscriber was installed, does nothing. An invalid `level` falls back to `info` (the configuration
/// loader rejects invalid levels before this is reached).
pub fn init(level: &str) {
    let filter = filter(level);
    // `try_init` fails only when a global subscriber is already set, which is exactly the idempotence
    // wanted here.
    // Colours only on a terminal: under a service manager stderr goes to a journal or a file.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .try_init();
}

/// `RUST_LOG` when set and valid, else `level`, else `info`.
pub fn filter(level: &str) -> EnvFilter {
    std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_twice_does_not_panic() {
        init("debug");
        init("not a valid filter [[[");
        tracing::info!("telemetry works");
    }
}
