//! Diagnostic logging: `tracing` events formatted to stderr.
//!
//! The level comes from `log.level` in the configuration; `RUST_LOG`, when set and valid, overrides it so an
//! operator can turn on `debug` for one run without editing files. This is the agent's diagnostic log only:
//! the event log (`events.jsonl`) is written separately by the event-log actor and is always on.
//!
//! Two formats ([`LogFormat`]): `plain` (timestamps; colours on a terminal) and `journal`, for stderr
//! connected to systemd's journal: no timestamps and no colours (the journal adds its own metadata),
//! and each line starts with the `sd-daemon(3)` priority prefix (`<3>` error, `<4>` warning, `<6>` info,
//! `<7>` debug and trace), so `journalctl -p warning` filters by level. [`LogFormat::detect`] picks
//! `journal` when `$JOURNAL_STREAM` names the device and inode stderr is connected to, which is how
//! systemd says "your stderr is the journal" (`systemd.exec(5)`).
//!
//! The level can be changed while the agent runs ([`set_level`], used by a configuration reload).
//!
//! Entry points: [`init`] and [`init_with`]. They are idempotent, so tests and several commands in one
//! process may call them.

use std::io::IsTerminal;
use std::sync::OnceLock;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, Full, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// How diagnostic lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `journal` when stderr is systemd's journal (`$JOURNAL_STREAM`), else `plain`.
    Auto,
    /// Timestamps, level names, colours on a terminal.
    Plain,
    /// `<N>` priority prefixes, no timestamps, no colours (for journald).
    Journal,
}

impl LogFormat {
    /// Resolves `Auto`: `Journal` when `journal_stream` (the value of `$JOURNAL_STREAM`, `DEV:INODE`)
    /// names `stderr_dev_ino`, the device and inode of this process's stderr.
    pub fn resolve(self, journal_stream: Option<&str>, stderr_dev_ino: Option<(u64, u64)>) -> LogFormat {
        match self {
            LogFormat::Auto => {
                let named = journal_stream.and_then(|v| {
                    let (dev, ino) = v.trim().split_once(':')?;
                    Some((dev.parse::<u64>().ok()?, ino.parse::<u64>().ok()?))
                });
                if named.is_some() && named == stderr_dev_ino {
                    LogFormat::Journal
                } else {
                    LogFormat::Plain
                }
            }
            other => other,
        }
    }

    /// Resolves `Auto` for this process.
    pub fn detect(self) -> LogFormat {
        use std::os::unix::fs::MetadataExt;
        let stream = std::env::var("JOURNAL_STREAM").ok();
        // `/proc/self/fd/2` follows to whatever stderr is: the journal's socket under systemd.
        let stderr = std::fs::metadata("/proc/self/fd/2").ok().map(|m| (m.dev(), m.ino()));
        self.resolve(stream.as_deref(), stderr)
    }
}

/// The sd-daemon priority of a level.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// The journal format: the priority prefix, then the event as the plain format writes it without
/// time, level or colours.
struct Journal(Format<Full, ()>);

impl<S, N> FormatEvent<S, N> for Journal
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

static LEVEL: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the stderr subscriber with `level` in the plain format. See [`init_with`].
pub fn init(level: &str) {
    init_with(level, LogFormat::Plain);
}

/// Installs the stderr subscriber with `level` (an env-filter directive such as `info` or
/// `cohort_actors=debug,info`, unless `RUST_LOG` is set) in `format` (`Auto` is resolved here). A
/// second call, or a call after another global subscriber was installed, does nothing. An invalid
/// `level` falls back to `info` (the configuration loader rejects invalid levels before this is reached).
pub fn init_with(level: &str, format: LogFormat) {
    let (filter, handle) = reload::Layer::new(filter(level));
    let registry = tracing_subscriber::registry().with(filter);
    // `try_init` fails only when a global subscriber is already set, which is exactly the idempotence
    // wanted here.
    let installed = match format.detect() {
        LogFormat::Journal => {
            let fmt = tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .event_format(Journal(Format::default().without_time().with_level(false).with_ansi(false)));
            registry.with(fmt).try_init().is_ok()
        }
        LogFormat::Plain | LogFormat::Auto => {
            // Colours only on a terminal: under a service manager stderr goes to a journal or a file.
            let fmt = tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal());
            registry.with(fmt).try_init().is_ok()
        }
    };
    if installed {
        let _ = LEVEL.set(handle);
    }
}

/// Why [`set_level`] did not change the level.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SetLevelError {
    /// `RUST_LOG` overrides the configured level for the life of the process.
    #[error("RUST_LOG is set and overrides log.level; restart without it to use log.level")]
    OverriddenByRustLog,
    /// This process did not install its subscriber through [`init_with`].
    #[error("the diagnostic log was not set up by this process")]
    NotInitialized,
    /// The filter could not be swapped (the subscriber is gone).
    #[error("cannot change the log level: {0}")]
    Reload(String),
}

/// Changes the level of the subscriber [`init_with`] installed.
///
/// # Errors
/// [`SetLevelError`]: `RUST_LOG` is set, or no subscriber of ours is installed.
pub fn set_level(level: &str) -> Result<(), SetLevelError> {
    if rust_log().is_some() {
        return Err(SetLevelError::OverriddenByRustLog);
    }
    let handle = LEVEL.get().ok_or(SetLevelError::NotInitialized)?;
    handle.reload(filter(level)).map_err(|e| SetLevelError::Reload(e.to_string()))
}

fn rust_log() -> Option<EnvFilter> {
    std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty()).and_then(|v| parse_filter(&v))
}

/// `RUST_LOG` when set and valid, else `level`, else `info`.
pub fn filter(level: &str) -> EnvFilter {
    rust_log().or_else(|| parse_filter(level)).unwrap_or_else(|| EnvFilter::new("info"))
}

/// Parses a log filter (`log.level`, `RUST_LOG`): `EnvFilter` directives separated by commas, each
/// trimmed of surrounding whitespace first. `None` when a directive is invalid.
///
/// Every filter the agent builds goes through here, never through `EnvFilter::try_new` directly:
/// tracing-subscriber 0.3.23 walks a directive's trimmed text but slices the untrimmed one at the
/// same byte offsets, so a directive with leading whitespace is read wrongly (` debug` becomes a
/// target named " debug") and, when a multibyte character follows, panics on a character boundary
/// (`level = " [é]"`, found while fuzzing the config loader). Trimming each directive makes the two
/// texts the same. `EnvFilter` splits on every comma itself, so splitting here changes nothing else.
pub fn parse_filter(text: &str) -> Option<EnvFilter> {
    let directives: Vec<&str> = text.split(',').map(str::trim).filter(|d| !d.is_empty()).collect();
    EnvFilter::try_new(directives.join(",")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_level_with_leading_whitespace_before_a_multibyte_character_is_parsed_not_a_panic() {
        // Each of these panicked inside EnvFilter::try_new (tracing-subscriber 0.3.23).
        for level in [" [é]", " é=debug", "info, é=debug", "\u{a0}[span{é}]=trace"] {
            let _ = parse_filter(level);
            let _ = filter(level);
        }
        // Whitespace around a directive no longer changes its meaning.
        assert_eq!(
            parse_filter(" debug , cohort=trace ").map(|f| f.to_string()),
            parse_filter("debug,cohort=trace").map(|f| f.to_string())
        );
        assert!(parse_filter("not a valid filter [[[").is_none());
    }

    #[test]
    fn init_twice_does_not_panic() {
        init("debug");
        init("not a valid filter [[[");
        tracing::info!("telemetry works");
    }

    #[test]
    fn the_journal_format_is_chosen_only_when_stderr_is_the_named_stream() {
        assert_eq!(LogFormat::Auto.resolve(Some("8:1234"), Some((8, 1234))), LogFormat::Journal);
        // Started by systemd, but stderr redirected elsewhere: the stream is not ours.
        assert_eq!(LogFormat::Auto.resolve(Some("8:1234"), Some((8, 99))), LogFormat::Plain);
        assert_eq!(LogFormat::Auto.resolve(None, Some((8, 1234))), LogFormat::Plain);
        assert_eq!(LogFormat::Auto.resolve(Some("garbage"), Some((8, 1234))), LogFormat::Plain);
        assert_eq!(LogFormat::Journal.resolve(None, None), LogFormat::Journal);
        assert_eq!(LogFormat::Plain.resolve(Some("8:1234"), Some((8, 1234))), LogFormat::Plain);
    }

    #[test]
    fn priorities_follow_sd_daemon() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
        assert_eq!(priority(&Level::TRACE), 7);
    }
}
