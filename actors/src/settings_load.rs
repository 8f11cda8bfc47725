//! Layered configuration with provenance: where every effective value came from.
//!
//! [`load`] merges, each layer overriding the one before:
//! 1. the built-in defaults ([`DEFAULT_TOML`], compiled in from `config/default.toml`),
//! 2. the system file (`/etc/cohort/cohort.toml`) if it exists,
//! 3. each `--config FILE`, in order,
//! 4. environment variables `COHORT__SECTION__KEY` (double underscores, case-insensitive),
//! 5. command-line flags, given as dotted keys (`node.id`).
//!
//! The `config` crate does the merging and the deserialization into [`Settings`]. Around it this module
//! flattens every layer into dotted keys, which gives three things the `config` crate alone does not:
//! the provenance of each key (`Loaded::provenance`, printed by `cohort config check` through
//! [`render_effective`]), unknown keys caught in the layer that has them with a suggestion of the key that
//! was meant, and type errors that name the key, the value, its source and what is expected, in one line.
//! After deserialization the settings are validated: the relations between sections (the node is in the
//! node list, ids and addresses are unique) and [`cohort::Config::validate`] with its keys mapped to the
//! dotted names of the files.
//!
//! Arrays (`cluster.nodes`, `fencing.levels`) are one key each: a later layer replaces the whole array,
//! and they can only be set in files.
//!
//! **Deliberately absent:** no logging and no IO except reading the named files; warnings about legal but
//! risky settings (such as fencing with no levels) belong to the supervisor, which logs them.

use crate::settings::Settings;
use config::builder::DefaultState;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The built-in defaults: `config/default.toml`, compiled in.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// The system-wide configuration file, read when it exists.
pub const SYSTEM_FILE: &str = "/etc/cohort/cohort.toml";

/// The prefix of configuration environment variables (`COHORT__NODE__ID=3`).
pub const ENV_PREFIX: &str = "COHORT__";

/// The command-line flags that set a configuration key, as `(flag, dotted key)`. Overrides of these keys
/// are reported with the flag as their source (`flag:--node-id`).
pub const FLAG_KEYS: &[(&str, &str)] = &[
    ("--node-id", "node.id"),
    ("--data-dir", "node.data_dir"),
    ("--listen", "admin.listen"),
    ("--log-level", "log.level"),
];

/// What to load.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// `--config` files, in the order given; each must exist.
    pub config_files: Vec<PathBuf>,
    /// The system file, used only if it exists ([`SYSTEM_FILE`] by default; `None` in tests).
    pub system_file: Option<PathBuf>,
    /// Environment variables; only those starting with [`ENV_PREFIX`] are used. `std::env::vars()` in
    /// production, explicit in tests.
    pub env: Vec<(String, String)>,
    /// Command-line overrides as (dotted key, value), applied last.
    pub overrides: Vec<(String, String)>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            config_files: Vec::new(),
            system_file: Some(PathBuf::from(SYSTEM_FILE)),
            env: Vec::new(),
            overrides: Vec::new(),
        }
    }
}

impl LoadOptions {
    /// The options of a real process: the system file, `config_files`, this process's environment and
    /// `overrides`.
    pub fn for_process(config_files: Vec<PathBuf>, overrides: Vec<(String, String)>) -> LoadOptions {
        LoadOptions { config_files, env: process_env(), overrides, ..LoadOptions::default() }
    }
}

/// This process's environment variables that are valid Unicode (`std::env::vars` would panic on the
/// others; none of ours can be one of them).
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect()
}

/// Loaded and validated settings with the source of every key.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The effective settings.
    pub settings: Settings,
    /// Dotted key → the layer that set it last: `default`, the system file's path, `file:PATH`,
    /// `env:COHORT__NODE__ID` or `flag:--node-id`.
    pub provenance: BTreeMap<String, String>,
}

/// A configuration mistake. Every variant displays as one line naming the file or key, the value and
/// what is expected.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SettingsError {
    /// A configuration file is missing or unreadable.
    #[error("cannot read config file {}: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        reason: String,
    },
    /// A file is not valid TOML.
    #[error("syntax error in {origin} at line {line}, column {column}: {message}")]
    Syntax {
        /// The layer (`file:PATH`, the system file's path or `default`).
        origin: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// A key that no section has.
    #[error("unknown key `{key}` in {origin}{}", suggestion_text(.suggestion))]
    UnknownKey {
        /// The dotted key as written.
        key: String,
        /// The layer that has it.
        origin: String,
        /// The closest known key, if any is close.
        suggestion: Option<String>,
    },
    /// A value of the wrong type or format.
    #[error("`{key}` = {value} (from {origin}): expected {expected}")]
    WrongType {
        /// The dotted key.
        key: String,
        /// The value as written.
        value: String,
        /// The layer that set it.
        origin: String,
        /// What is expected.
        expected: String,
    },
    /// A required key is absent (only inside array entries; every top-level key has a default).
    #[error("`{key}` is missing in {origin}: expected {expected}")]
    Missing {
        /// The dotted key.
        key: String,
        /// The layer that has the enclosing entry.
        origin: String,
        /// What is expected.
        expected: String,
    },
    /// A well-typed value that contradicts another one or the protocol's requirements.
    #[error("`{key}` = {value} (from {origin}): expected {expected}")]
    Invalid {
        /// The dotted key.
        key: String,
        /// The value.
        value: String,
        /// The layer that set it.
        origin: String,
        /// What is expected.
        expected: String,
    },
    /// Anything the checks above did not anticipate, reported by the `config` crate.
    #[error("invalid configuration: {0}")]
    Other(String),
}

fn suggestion_text(s: &Option<String>) -> String {
    s.as_ref().map(|s| format!("; did you mean `{s}`?")).unwrap_or_default()
}

impl SettingsError {
    /// The dotted key the error is about, if it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            SettingsError::UnknownKey { key, .. }
            | SettingsError::WrongType { key, .. }
            | SettingsError::Missing { key, .. }
            | SettingsError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// The schema: every key, its kind and what is expected of it
// ---------------------------------------------------------------------------------------------------

/// The shape of a value, checked before deserialization so that errors can name key, value and source.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// An unsigned integer in `min..=max` (digits in a string are accepted, as the `config` crate does).
    Uint { min: u64, max: u64 },
    /// `true` or `false`.
    Bool,
    /// A string; `nonempty` rejects "".
    Str { nonempty: bool },
    /// A path, or "" for "derived from another key".
    OptPath,
    /// An `IP:PORT` socket address.
    Addr,
    /// An `IP:PORT` socket address or "" for "disabled".
    OptAddr,
    /// An octal file mode as a string, like "0660".
    Octal,
    /// One of a fixed set of names.
    OneOf(&'static [&'static str]),
    /// A `tracing` env-filter directive.
    LogFilter,
    /// An array of strings.
    StrList,
    /// An array of unsigned integers up to `u32::MAX` (uids, gids).
    IdList,
    /// A table of strings.
    StrMap,
    /// An array of tables with these fields; `nonempty` rejects [].
    Tables { fields: &'static [Field], nonempty: bool },
}

/// When a changed value takes effect in a running agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Apply {
    /// At a configuration reload (SIGHUP, `systemctl reload cohort`).
    Reload,
    /// Only when the agent is restarted (a new incarnation, with a new epoch).
    Restart,
}

impl Apply {
    /// How `cohort config check` and the reload log say it.
    pub fn describe(self) -> &'static str {
        match self {
            Apply::Reload => "applied by a reload (SIGHUP, systemctl reload cohort)",
            Apply::Restart => "needs a restart",
        }
    }
}

/// One key: its name (dotted at the top level, plain inside array entries), kind, expectation, and when
/// a change takes effect in a running agent.
#[derive(Debug)]
struct Field {
    name: &'static str,
    kind: Kind,
    required: bool,
    expected: &'static str,
    apply: Apply,
}

const fn f(name: &'static str, kind: Kind, expected: &'static str) -> Field {
    Field { name, kind, required: true, expected, apply: Apply::Restart }
}

/// A key a running agent applies at a reload ([`Apply::Reload`]).
const fn live(name: &'static str, kind: Kind, expected: &'static str) -> Field {
    Field { name, kind, required: true, expected, apply: Apply::Reload }
}

const fn opt(name: &'static str, kind: Kind, expected: &'static str) -> Field {
    Field { name, kind, required: false, expected, apply: Apply::Restart }
}

const U32: u64 = u32::MAX as u64;
const USIZE: u64 = usize::MAX as u64;
const POS_MS: Kind = Kind::Uint { min: 1, max: u64::MAX };
const MS: Kind = Kind::Uint { min: 0, max: u64::MAX };
const POS_USIZE: Kind = Kind::Uint { min: 1, max: USIZE };
const POS_MS_TEXT: &str = "a positive integer number of milliseconds";
const BOOL_TEXT: &str = "true or false";
const ID_LIST_TEXT: &str = "an array of numeric ids, like [0, 1001] (arrays can only be set in a file)";

const NODE_FIELDS: &[Field] = &[
    f("id", Kind::Uint { min: 1, max: U32 }, "a positive integer node id"),
    f("addr", Kind::Addr, "an IP:PORT address in quotes, like \"10.0.0.1:7400\""),
    opt("votes", Kind::Uint { min: 0, max: U32 }, "an integer number of quorum votes"),
];

const AGENT_FIELDS: &[Field] = &[
    f("name", Kind::Str { nonempty: true }, "a non-empty name in quotes"),
    f(
        "command",
        Kind::Str { nonempty: true },
        "the fence agent's path in quotes, like \"/usr/sbin/fence_ipmilan\"",
    ),
    opt("args", Kind::StrList, "an array of strings"),
    opt("stdin", Kind::StrMap, "a table of strings (option = \"value\")"),
    opt("env", Kind::StrMap, "a table of strings (VARIABLE = \"value\")"),
    opt("action", Kind::Str { nonempty: true }, "an action in quotes, usually \"off\" or \"reboot\""),
    opt("plugs", Kind::StrMap, "a table of node id = \"plug\" strings"),
    f("timeout_ms", POS_MS, POS_MS_TEXT),
    opt("retries", Kind::Uint { min: 0, max: U32 }, "an integer number of retries"),
];

const LEVEL_FIELDS: &[Field] = &[f(
    "agents",
    Kind::Tables { fields: AGENT_FIELDS, nonempty: true },
    "a non-empty array of [[fencing.levels.agents]] tables",
)];

/// Every top-level key, in the order of `config/default.toml` (which [`render_effective`] follows).
///
/// This table is the one description of the configuration: the loader checks every layer against it,
/// a reload applies exactly the keys marked [`Apply::Reload`] (made with `live`), and the
/// `cohort.toml(5)` manual page is generated from it ([`key_docs`]) together with the defaults and
/// comments of `config/default.toml`. `log.level`, the event log's rotation (`log.event_log_*`), `fencing.levels` (which carries the fence agents'
/// timeouts and retries), the protocol timing (`timing.*`, one step at a time, see
/// [`cohort::Timing::check_step`]) and the key files (`node.key_file`, `node.accept_key_files`, into
/// the key ring, see [`crate::reload::plan_keys`]) are applied at a reload: the core takes its limits,
/// quorum and policies once per incarnation, and the sockets and data directory are opened at start.
const KEYS: &[Field] = &[
    f("cluster.name", Kind::Str { nonempty: true }, "a non-empty cluster name in quotes"),
    f(
        "cluster.nodes",
        Kind::Tables { fields: NODE_FIELDS, nonempty: true },
        "a non-empty array of [[cluster.nodes]] tables with id and addr (arrays can only be set in a file)",
    ),
    f("node.id", Kind::Uint { min: 1, max: U32 }, "a positive integer node id"),
    f("node.data_dir", Kind::Str { nonempty: true }, "a directory path in quotes"),
    f("node.event_log", Kind::OptPath, "a file path in quotes, or \"\" for <data_dir>/events.jsonl"),
    live("node.key_file", Kind::Str { nonempty: true }, "a file path in quotes"),
    live(
        "node.accept_key_files",
        Kind::StrList,
        "an array of key file paths in quotes, like [\"/etc/cohort/cluster.key.new\"] (arrays can only be set in a file)",
    ),
    live("timing.heartbeat_interval_ms", POS_MS, POS_MS_TEXT),
    live("timing.failure_timeout_ms", POS_MS, POS_MS_TEXT),
    live("timing.discovery_interval_ms", POS_MS, POS_MS_TEXT),
    live("timing.view_change_timeout_ms", POS_MS, POS_MS_TEXT),
    live("timing.retransmit_interval_ms", POS_MS, POS_MS_TEXT),
    f(
        "limits.max_datagram_bytes",
        Kind::Uint { min: 1024, max: 65_000 },
        "an integer number of bytes between 1024 and 65000",
    ),
    f("limits.max_message_bytes", POS_USIZE, "a positive integer number of bytes"),
    f("limits.window_msgs", POS_USIZE, "a positive integer number of messages"),
    f("limits.window_bytes", POS_USIZE, "a positive integer number of bytes"),
    f("limits.send_queue_msgs", POS_USIZE, "a positive integer number of messages"),
    f("limits.send_queue_bytes", POS_USIZE, "a positive integer number of bytes"),
    f("limits.max_state_bytes", POS_USIZE, "a positive integer number of bytes"),
    f("limits.client_queue_msgs", POS_USIZE, "a positive integer number of events"),
    f("limits.client_queue_bytes", POS_USIZE, "a positive integer number of bytes"),
    f("limits.max_clients", POS_USIZE, "a positive integer number of clients"),
    f("limits.hello_timeout_ms", POS_MS, POS_MS_TEXT),
    f("limits.max_groups_per_client", POS_USIZE, "a positive integer number of groups"),
    f("limits.client_frames_total_bytes", POS_USIZE, "a positive integer number of bytes"),
    f(
        "quorum.expected_votes",
        Kind::Uint { min: 0, max: U32 },
        "an integer number of votes (0: the sum of the votes in cluster.nodes)",
    ),
    f("quorum.two_node", Kind::Bool, BOOL_TEXT),
    f("quorum.wait_for_all", Kind::Bool, BOOL_TEXT),
    f(
        "merge.policy",
        Kind::OneOf(&["fence", "restart", "reset", "wait"]),
        "one of \"fence\", \"restart\", \"reset\", \"wait\"",
    ),
    f("fencing.mode", Kind::OneOf(&["agent", "watchdog"]), "\"agent\" or \"watchdog\""),
    f("fencing.restart_counts_as_fenced", Kind::Bool, BOOL_TEXT),
    f("fencing.self_fence_after_ms", MS, "an integer number of milliseconds (0: off)"),
    f("fencing.watchdog_wait_ms", MS, "an integer number of milliseconds"),
    f("fencing.watchdog", Kind::OneOf(&["notify", "exit"]), "\"notify\" or \"exit\""),
    live(
        "fencing.levels",
        Kind::Tables { fields: LEVEL_FIELDS, nonempty: false },
        "an array of [[fencing.levels]] tables, each with [[fencing.levels.agents]] (arrays can only be set in a file)",
    ),
    f("api.socket", Kind::OptPath, "a socket path in quotes, or \"\" for <data_dir>/cohort.sock"),
    f("api.socket_mode", Kind::Octal, "an octal file mode in quotes, like \"0660\""),
    f("api.allowed_uids", Kind::IdList, ID_LIST_TEXT),
    f("api.allowed_gids", Kind::IdList, ID_LIST_TEXT),
    f(
        "api.operator_socket",
        Kind::OptPath,
        "a socket path in quotes, or \"\" for operator.sock beside api.socket",
    ),
    f("api.operator_socket_mode", Kind::Octal, "an octal file mode in quotes, like \"0600\""),
    f("api.operator_allowed_uids", Kind::IdList, ID_LIST_TEXT),
    f("api.operator_allowed_gids", Kind::IdList, ID_LIST_TEXT),
    f("admin.listen", Kind::OptAddr, "an IP:PORT address in quotes, like \"127.0.0.1:7480\", or \"\" to disable"),
    live(
        "log.level",
        Kind::LogFilter,
        "a log level (error, warn, info, debug, trace) or a filter like \"cohort_actors=debug,info\"",
    ),
    live(
        "log.event_log_max_bytes",
        Kind::Uint { min: 0, max: u64::MAX },
        "an integer number of bytes (0: never rotate)",
    ),
    live("log.event_log_keep_files", Kind::Uint { min: 0, max: 10_000 }, "an integer number of files between 0 and 10000"),
    f("testing.link_filter", Kind::Bool, BOOL_TEXT),
];

fn spec_of(key: &str) -> Option<&'static Field> {
    KEYS.iter().find(|s| s.name == key)
}

fn is_section(name: &str) -> bool {
    KEYS.iter().any(|s| s.name.split_once('.').is_some_and(|(sec, _)| sec == name))
}

/// Every known top-level dotted key, in the order of `config/default.toml`.
pub fn known_keys() -> impl Iterator<Item = &'static str> {
    KEYS.iter().map(|s| s.name)
}

/// When a change of `key` (a top-level dotted key) takes effect in a running agent.
pub fn apply_of(key: &str) -> Option<Apply> {
    spec_of(key).map(|s| s.apply)
}

/// One key whose value differs between two configurations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyChange {
    /// The dotted key.
    pub key: String,
    /// The value before, as TOML (shortened to one line).
    pub old: String,
    /// The value after, as TOML (shortened to one line).
    pub new: String,
    /// When the change takes effect.
    pub apply: Apply,
}

/// Every top-level key of `settings` with its value as TOML; an unset optional value is `""`.
fn flat_values(settings: &Settings) -> BTreeMap<String, toml::Value> {
    let flat: BTreeMap<String, toml::Value> = match toml::Value::try_from(settings) {
        Ok(toml::Value::Table(t)) => {
            let mut out = Vec::new();
            flatten_toml(&t, "", "", &mut out);
            out.into_iter()
                .filter_map(|e| match e.raw {
                    Raw::Toml(v) => Some((e.key, v)),
                    Raw::Text(_) => None,
                })
                .collect()
        }
        Ok(_) | Err(_) => BTreeMap::new(),
    };
    KEYS.iter()
        .map(|k| {
            let v = flat.get(k.name).cloned().unwrap_or_else(|| toml::Value::String(String::new()));
            (k.name.to_string(), v)
        })
        .collect()
}

/// The keys whose values differ from `old` to `new`, in the order of `config/default.toml`.
pub fn changed_keys(old: &Settings, new: &Settings) -> Vec<KeyChange> {
    let (a, b) = (flat_values(old), flat_values(new));
    KEYS.iter()
        .filter(|k| a.get(k.name) != b.get(k.name))
        .map(|k| KeyChange {
            key: k.name.to_string(),
            old: a.get(k.name).map_or_else(String::new, |v| shorten(&v.to_string())),
            new: b.get(k.name).map_or_else(String::new, |v| shorten(&v.to_string())),
            apply: k.apply,
        })
        .collect()
}

/// One key as the `cohort.toml(5)` manual page documents it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyDoc {
    /// The dotted key.
    pub key: String,
    /// Its built-in default as written in `config/default.toml`.
    pub default: String,
    /// What the loader expects of a value.
    pub expected: String,
    /// When a change takes effect.
    pub apply: Apply,
    /// The comment above the key in `config/default.toml`, `#` removed; lines indented by two or more
    /// spaces are examples.
    pub doc: String,
}

/// One section of the configuration: its name and the comment that opens it in `config/default.toml`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SectionDoc {
    /// The section (`timing`).
    pub name: String,
    /// Its introduction ("" when it has none).
    pub doc: String,
    /// Its keys, in order.
    pub keys: Vec<KeyDoc>,
}

/// The configuration reference: every key of the loader's table with its default, expectation, reload
/// behaviour and the comment of `config/default.toml`, grouped by section in the file's order.
pub fn key_docs() -> Vec<SectionDoc> {
    // The comments of default.toml: a block of comment lines ends at a blank line (a section's
    // introduction, when it follows the header) or at a key (that key's documentation).
    let mut comments: BTreeMap<String, String> = BTreeMap::new();
    let mut intros: BTreeMap<String, String> = BTreeMap::new();
    let mut section = String::new();
    let mut block: Vec<&str> = Vec::new();
    let mut first_block = false;
    for line in DEFAULT_TOML.lines() {
        let t = line.trim_end();
        if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            section = name.to_string();
            block.clear();
            first_block = true;
        } else if let Some(c) = t.strip_prefix('#') {
            block.push(c.strip_prefix(' ').unwrap_or(c));
        } else if t.is_empty() {
            if first_block && !block.is_empty() && !section.is_empty() {
                intros.insert(section.clone(), block.join("\n"));
            }
            if !block.is_empty() {
                first_block = false;
            }
            block.clear();
        } else if t.starts_with(|c: char| c.is_ascii_lowercase()) {
            if let Some((key, _)) = t.split_once('=') {
                comments.insert(format!("{section}.{}", key.trim()), block.join("\n"));
            }
            block.clear();
            first_block = false;
        }
    }
    let defaults: BTreeMap<String, String> = match DEFAULT_TOML.parse::<toml::Table>() {
        Ok(t) => {
            let mut out = Vec::new();
            flatten_toml(&t, "", "", &mut out);
            out.into_iter()
                .filter_map(|e| match e.raw {
                    Raw::Toml(v) => Some((e.key, shorten(&v.to_string()))),
                    Raw::Text(_) => None,
                })
                .collect()
        }
        Err(_) => BTreeMap::new(),
    };
    let mut out: Vec<SectionDoc> = Vec::new();
    for k in KEYS {
        let sec = k.name.split_once('.').map_or("", |(s, _)| s);
        if out.last().is_none_or(|s| s.name != sec) {
            out.push(SectionDoc {
                name: sec.to_string(),
                doc: intros.get(sec).cloned().unwrap_or_default(),
                keys: Vec::new(),
            });
        }
        let doc = KeyDoc {
            key: k.name.to_string(),
            default: defaults.get(k.name).cloned().unwrap_or_default(),
            expected: k.expected.to_string(),
            apply: k.apply,
            doc: comments.get(k.name).cloned().unwrap_or_default(),
        };
        if let Some(s) = out.last_mut() {
            s.keys.push(doc);
        }
    }
    out
}

/// Parses an octal file mode such as "0660" (three or four octal digits).
pub fn parse_octal_mode(s: &str) -> Option<u32> {
    let ok = (3..=4).contains(&s.len()) && s.bytes().all(|b| (b'0'..=b'7').contains(&b));
    if ok {
        u32::from_str_radix(s, 8).ok()
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------------------
// Layers flattened into dotted keys
// ---------------------------------------------------------------------------------------------------

/// A value as a layer wrote it: TOML from files, text from environment variables and flags.
#[derive(Clone, Debug)]
enum Raw {
    Toml(toml::Value),
    Text(String),
}

impl Raw {
    /// The value as it would be written in TOML, shortened for one-line messages.
    fn show(&self) -> String {
        let full = match self {
            Raw::Toml(v) => v.to_string(),
            // Text from the environment or a flag: numbers and booleans as they would be written in TOML,
            // anything else quoted.
            Raw::Text(s) if s.parse::<i64>().is_ok() || s == "true" || s == "false" => s.clone(),
            Raw::Text(s) => toml::Value::String(s.clone()).to_string(),
        };
        shorten(&full)
    }

    fn as_text(&self) -> Option<&str> {
        match self {
            Raw::Toml(toml::Value::String(s)) => Some(s),
            Raw::Text(s) => Some(s),
            Raw::Toml(_) => None,
        }
    }
}

fn shorten(s: &str) -> String {
    let one_line = s.replace('\n', " ");
    if one_line.chars().count() > 100 {
        let cut: String = one_line.chars().take(97).collect();
        format!("{cut}...")
    } else {
        one_line
    }
}

/// One key set by one layer.
#[derive(Clone, Debug)]
struct Entry {
    key: String,
    raw: Raw,
    origin: String,
}

/// Flattens a TOML table into dotted keys; tables are descended into unless the path is a known key
/// (so `cluster.nodes` stays one key whatever its shape). Keys are lowercased as the `config` crate does.
fn flatten_toml(table: &toml::Table, prefix: &str, origin: &str, out: &mut Vec<Entry>) {
    for (k, v) in table {
        let key = if prefix.is_empty() { k.to_lowercase() } else { format!("{prefix}.{}", k.to_lowercase()) };
        match v {
            toml::Value::Table(t) if spec_of(&key).is_none() => flatten_toml(t, &key, origin, out),
            _ => out.push(Entry { key, raw: Raw::Toml(v.clone()), origin: origin.to_string() }),
        }
    }
}

/// Parses one TOML layer, naming the line of a syntax error.
fn parse_toml(text: &str, origin: &str) -> Result<toml::Table, SettingsError> {
    text.parse::<toml::Table>().map_err(|e| {
        let start = e.span().map_or(0, |s| s.start).min(text.len());
        let before = text.get(..start).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        SettingsError::Syntax {
            origin: origin.to_string(),
            line,
            column,
            message: e.message().trim().replace('\n', " "),
        }
    })
}

/// The dotted key of a configuration environment variable, or `None` if it is not one.
fn env_key(name: &str) -> Option<String> {
    let upper = name.to_uppercase();
    let rest = upper.strip_prefix(ENV_PREFIX)?;
    (!rest.is_empty()).then(|| rest.to_lowercase().replace("__", "."))
}

/// The provenance label of a command-line override of `key`.
fn flag_origin(key: &str) -> String {
    match FLAG_KEYS.iter().find(|(_, k)| *k == key) {
        Some((flag, _)) => format!("flag:{flag}"),
        None => format!("flag:{key}"),
    }
}

fn read_file(path: &Path) -> Result<String, SettingsError> {
    std::fs::read_to_string(path)
        .map_err(|e| SettingsError::Read { path: path.to_path_buf(), reason: e.to_string() })
}

// ---------------------------------------------------------------------------------------------------
// Unknown keys
// ---------------------------------------------------------------------------------------------------

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest of `candidates` to `typed`: a candidate ending in the same last segment first (a key
/// written in the wrong section), then the smallest edit distance if it is not absurdly far.
fn closest<'a>(typed: &str, candidates: impl Iterator<Item = &'a str> + Clone) -> Option<&'a str> {
    same_last_segment(typed, candidates.clone()).or_else(|| nearest(typed, candidates))
}

/// A candidate whose last dotted segment equals `typed`'s.
fn same_last_segment<'a>(typed: &str, mut candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let last = typed.rsplit('.').next().unwrap_or(typed);
    candidates.find(|c| c.rsplit('.').next() == Some(last) && *c != typed)
}

/// The candidate with the smallest edit distance to `typed`, unless even that one is far off.
fn nearest<'a>(typed: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let (best, dist) = candidates.map(|c| (c, edit_distance(typed, c))).min_by_key(|&(_, d)| d)?;
    let limit = typed.chars().count().max(best.chars().count()) * 2 / 3;
    (dist <= limit.max(2)).then_some(best)
}

/// The error for a top-level key no section has, with a suggestion: within its section if the section
/// exists, else among all keys.
fn unknown_top_level(entry: &Entry) -> SettingsError {
    let key = &entry.key;
    if is_section(key) {
        return SettingsError::WrongType {
            key: key.clone(),
            value: entry.raw.show(),
            origin: entry.origin.clone(),
            expected: format!("a [{key}] table"),
        };
    }
    let all = || KEYS.iter().map(|k| k.name);
    let section = key.split_once('.').map(|(s, _)| s);
    let suggestion = same_last_segment(key, all()).or_else(|| match section {
        Some(s) if is_section(s) => {
            nearest(key, all().filter(|k| k.split_once('.').map(|(p, _)| p) == Some(s)))
        }
        _ => nearest(key, all()),
    });
    SettingsError::UnknownKey {
        key: key.clone(),
        origin: entry.origin.clone(),
        suggestion: suggestion.map(str::to_string),
    }
}

// ---------------------------------------------------------------------------------------------------
// Type checks
// ---------------------------------------------------------------------------------------------------

/// Checks one value against its kind. `key` is the full dotted path used in messages.
fn check(key: &str, field: &Field, raw: &Raw, origin: &str) -> Result<(), SettingsError> {
    let wrong = |expected: &str| SettingsError::WrongType {
        key: key.to_string(),
        value: raw.show(),
        origin: origin.to_string(),
        expected: expected.to_string(),
    };
    let ok = match field.kind {
        Kind::Uint { min, max } => {
            let n = match raw {
                Raw::Toml(toml::Value::Integer(i)) => u64::try_from(*i).ok(),
                _ => raw.as_text().and_then(|s| s.trim().parse::<u64>().ok()),
            };
            n.is_some_and(|n| (min..=max).contains(&n))
        }
        Kind::Bool => match raw {
            Raw::Toml(toml::Value::Boolean(_)) => true,
            _ => raw
                .as_text()
                .is_some_and(|s| s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false")),
        },
        Kind::Str { nonempty } => raw.as_text().is_some_and(|s| !nonempty || !s.trim().is_empty()),
        Kind::OptPath => raw.as_text().is_some(),
        Kind::Addr => raw.as_text().is_some_and(|s| s.parse::<SocketAddr>().is_ok()),
        Kind::OptAddr => raw.as_text().is_some_and(|s| s.is_empty() || s.parse::<SocketAddr>().is_ok()),
        Kind::Octal => raw.as_text().is_some_and(|s| parse_octal_mode(s).is_some()),
        Kind::OneOf(names) => raw.as_text().is_some_and(|s| names.contains(&s)),
        Kind::LogFilter => {
            raw.as_text().is_some_and(|s| !s.trim().is_empty() && crate::telemetry::parse_filter(s).is_some())
        }
        Kind::StrList => match raw {
            Raw::Toml(toml::Value::Array(a)) => a.iter().all(|v| v.is_str()),
            _ => false,
        },
        Kind::IdList => match raw {
            Raw::Toml(toml::Value::Array(a)) => {
                a.iter().all(|v| v.as_integer().is_some_and(|i| u32::try_from(i).is_ok()))
            }
            _ => false,
        },
        Kind::StrMap => match raw {
            Raw::Toml(toml::Value::Table(t)) => t.values().all(|v| v.is_str()),
            _ => false,
        },
        Kind::Tables { fields, nonempty } => {
            let Raw::Toml(toml::Value::Array(items)) = raw else {
                return Err(wrong(field.expected));
            };
            if nonempty && items.is_empty() {
                return Err(wrong(field.expected));
            }
            for (i, item) in items.iter().enumerate() {
                let path = format!("{key}[{i}]");
                let toml::Value::Table(t) = item else {
                    return Err(SettingsError::WrongType {
                        key: path,
                        value: shorten(&item.to_string()),
                        origin: origin.to_string(),
                        expected: "a table".to_string(),
                    });
                };
                check_table(&path, fields, t, origin)?;
            }
            true
        }
    };
    if ok {
        Ok(())
    } else {
        Err(wrong(field.expected))
    }
}

/// Checks one entry of an array of tables: no unknown keys, required keys present, each value well-typed.
fn check_table(
    path: &str,
    fields: &'static [Field],
    table: &toml::Table,
    origin: &str,
) -> Result<(), SettingsError> {
    for (k, v) in table {
        let Some(field) = fields.iter().find(|fl| fl.name == k) else {
            let suggestion = closest(k, fields.iter().map(|fl| fl.name));
            return Err(SettingsError::UnknownKey {
                key: format!("{path}.{k}"),
                origin: origin.to_string(),
                suggestion: suggestion.map(|s| format!("{path}.{s}")),
            });
        };
        check(&format!("{path}.{k}"), field, &Raw::Toml(v.clone()), origin)?;
    }
    for field in fields.iter().filter(|fl| fl.required) {
        if !table.contains_key(field.name) {
            return Err(SettingsError::Missing {
                key: format!("{path}.{}", field.name),
                origin: origin.to_string(),
                expected: field.expected.to_string(),
            });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------------

/// Loads, merges, checks and validates the configuration described by `opts`.
///
/// # Errors
/// The first mistake found, in layer order: an unreadable file, a syntax error, an unknown key, a value of
/// the wrong type, or a value that fails validation. See [`SettingsError`].
pub fn load(opts: &LoadOptions) -> Result<Loaded, SettingsError> {
    let system = opts.system_file.as_deref().filter(|p| p.exists());
    // Each file is read only when its turn comes, so an error in an earlier layer is reported first.
    let files = system
        .map(|p| (p, p.display().to_string()))
        .into_iter()
        .chain(opts.config_files.iter().map(|f| (f.as_path(), format!("file:{}", f.display()))))
        .map(|(path, origin)| read_file(path).map(|text| (text, origin)));
    load_layers(files, &opts.env, &opts.overrides)
}

/// [`load`] on texts instead of files: the built-in defaults, then each `(origin, TOML text)` in order
/// (`origin` names the layer in errors and provenance, as `file:PATH` does for a file), then `env`
/// (only `COHORT__*` names are used) and `overrides`. The fuzz target of the loader and its tests use it.
///
/// # Errors
/// As [`load`], without the file errors.
pub fn load_texts(
    texts: &[(&str, &str)],
    env: &[(String, String)],
    overrides: &[(String, String)],
) -> Result<Loaded, SettingsError> {
    let layers = texts.iter().map(|(origin, text)| Ok(((*text).to_string(), (*origin).to_string())));
    load_layers(layers, env, overrides)
}

/// The loader behind [`load`] and [`load_texts`]: `files` yields each layer's (text, origin) in order,
/// or the error of reading it.
fn load_layers(
    files: impl Iterator<Item = Result<(String, String), SettingsError>>,
    env: &[(String, String)],
    overrides: &[(String, String)],
) -> Result<Loaded, SettingsError> {
    let mut builder = config::Config::builder();
    let mut entries: Vec<Entry> = Vec::new();

    let mut toml_layer = |text: &str, origin: &str, builder: config::ConfigBuilder<DefaultState>| {
        let table = parse_toml(text, origin)?;
        let first = entries.len();
        flatten_toml(&table, "", origin, &mut entries);
        if let Some(e) = entries[first..].iter().find(|e| spec_of(&e.key).is_none()) {
            return Err(unknown_top_level(e));
        }
        Ok::<_, SettingsError>(builder.add_source(config::File::from_str(text, config::FileFormat::Toml)))
    };

    builder = toml_layer(DEFAULT_TOML, "default", builder)?;
    for layer in files {
        let (text, origin) = layer?;
        builder = toml_layer(&text, &origin, builder)?;
    }

    let mut env_vars = config::Map::new();
    for (name, value) in env {
        let Some(key) = env_key(name) else { continue };
        let entry = Entry { key, raw: Raw::Text(value.clone()), origin: format!("env:{name}") };
        if spec_of(&entry.key).is_none() {
            return Err(unknown_top_level(&entry));
        }
        entries.push(entry);
        env_vars.insert(name.clone(), value.clone());
    }
    if !env_vars.is_empty() {
        builder = builder
            .add_source(config::Environment::with_prefix("COHORT").separator("__").source(Some(env_vars)));
    }

    for (key, value) in overrides {
        let key = key.to_lowercase();
        let entry = Entry { key: key.clone(), raw: Raw::Text(value.clone()), origin: flag_origin(&key) };
        if spec_of(&key).is_none() {
            return Err(unknown_top_level(&entry));
        }
        entries.push(entry);
        builder = builder.set_override(&key, value.clone()).map_err(|e| other(&e))?;
    }

    // The effective raw value of every key: the last layer that set it.
    let mut merged: BTreeMap<String, (Raw, String)> = BTreeMap::new();
    for e in entries {
        merged.insert(e.key, (e.raw, e.origin));
    }
    for field in KEYS {
        match merged.get(field.name) {
            Some((raw, origin)) => check(field.name, field, raw, origin)?,
            None if field.required => {
                return Err(SettingsError::Missing {
                    key: field.name.to_string(),
                    origin: "the merged configuration".to_string(),
                    expected: field.expected.to_string(),
                })
            }
            None => {}
        }
        // An empty optional value means "not set": the default derived from another key applies.
        let optional = matches!(field.kind, Kind::OptPath | Kind::OptAddr);
        if optional && merged.get(field.name).and_then(|(raw, _)| raw.as_text()) == Some("") {
            builder = builder.set_override(field.name, None::<String>).map_err(|e| other(&e))?;
        }
    }

    let settings: Settings =
        builder.build().and_then(|c| c.try_deserialize()).map_err(|e| from_config_error(e, &merged))?;
    let provenance: BTreeMap<String, String> =
        merged.iter().map(|(k, (_, origin))| (k.clone(), origin.clone())).collect();
    validate(&settings, &merged)?;
    Ok(Loaded { settings, provenance })
}

fn other(e: &dyn std::fmt::Display) -> SettingsError {
    SettingsError::Other(e.to_string().replace('\n', " "))
}

/// Maps what the `config` crate reports (only what the checks above missed) to a one-line error.
fn from_config_error(e: config::ConfigError, merged: &BTreeMap<String, (Raw, String)>) -> SettingsError {
    if let config::ConfigError::Type { key: Some(key), expected, .. } = &e {
        if let Some((raw, origin)) = merged.get(key) {
            return SettingsError::WrongType {
                key: key.clone(),
                value: raw.show(),
                origin: origin.clone(),
                expected: expected.to_string(),
            };
        }
    }
    other(&e)
}

// ---------------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------------

/// The core's key names and the dotted keys of the configuration files.
const CORE_KEYS: &[(&str, &str)] = &[
    ("nodes", "cluster.nodes"),
    ("cluster", "cluster.name"),
    ("heartbeat_interval_ms", "timing.heartbeat_interval_ms"),
    ("failure_timeout_ms", "timing.failure_timeout_ms"),
    ("discovery_interval_ms", "timing.discovery_interval_ms"),
    ("view_change_timeout_ms", "timing.view_change_timeout_ms"),
    ("retransmit_interval_ms", "timing.retransmit_interval_ms"),
    ("max_datagram_bytes", "limits.max_datagram_bytes"),
    ("max_message_bytes", "limits.max_message_bytes"),
    ("window_msgs", "limits.window_msgs"),
    ("window_bytes", "limits.window_bytes"),
    ("send_queue_msgs", "limits.send_queue_msgs"),
    ("send_queue_bytes", "limits.send_queue_bytes"),
    ("max_state_bytes", "limits.max_state_bytes"),
    ("expected_votes", "quorum.expected_votes"),
    ("quorum.expected_votes", "quorum.expected_votes"),
    ("two_node", "quorum.two_node"),
    ("quorum.two_node", "quorum.two_node"),
    ("wait_for_all", "quorum.wait_for_all"),
    ("quorum.wait_for_all", "quorum.wait_for_all"),
    ("merge_policy", "merge.policy"),
    ("fencing", "fencing.mode"),
    ("restart_counts_as_fenced", "fencing.restart_counts_as_fenced"),
    ("self_fence_after_ms", "fencing.self_fence_after_ms"),
    ("watchdog_wait_ms", "fencing.watchdog_wait_ms"),
];

fn dotted(core_key: &str) -> Option<&'static str> {
    CORE_KEYS.iter().find(|(c, _)| *c == core_key).map(|(_, d)| *d)
}

/// Rewrites the core's wording ("at least twice heartbeat_interval_ms") with dotted keys and their
/// effective values ("at least twice `timing.heartbeat_interval_ms` (100)").
fn rewrite_expected(text: &str, merged: &BTreeMap<String, (Raw, String)>) -> String {
    text.split(' ')
        .map(|word| {
            let bare = word.trim_end_matches([',', '.', ';', ')']);
            match dotted(bare) {
                Some(key) => {
                    let rest = &word[bare.len()..];
                    let value =
                        merged.get(key).map(|(raw, _)| format!(" ({})", raw.show())).unwrap_or_default();
                    // `fencing = "watchdog"` already shows the value; don't repeat it.
                    if bare == "fencing" {
                        format!("`{key}`{rest}")
                    } else {
                        format!("`{key}`{value}{rest}")
                    }
                }
                None => word.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The relations between keys, then the core's own validation.
fn validate(s: &Settings, merged: &BTreeMap<String, (Raw, String)>) -> Result<(), SettingsError> {
    let origin_of = |key: &str| merged.get(key).map_or_else(|| "default".to_string(), |(_, o)| o.clone());
    let invalid = |key: String, value: String, origin_key: &str, expected: String| SettingsError::Invalid {
        key,
        value,
        origin: origin_of(origin_key),
        expected,
    };

    let nodes = &s.cluster.nodes;
    for (j, b) in nodes.iter().enumerate() {
        if let Some(i) = nodes[..j].iter().position(|a| a.id == b.id) {
            return Err(invalid(
                format!("cluster.nodes[{j}].id"),
                b.id.to_string(),
                "cluster.nodes",
                format!("an id no other node has (cluster.nodes[{i}] has id {} too)", b.id),
            ));
        }
        if let Some(i) = nodes[..j].iter().position(|a| a.addr == b.addr) {
            return Err(invalid(
                format!("cluster.nodes[{j}].addr"),
                format!("\"{}\"", b.addr),
                "cluster.nodes",
                format!("an address no other node has (cluster.nodes[{i}] has {} too)", b.addr),
            ));
        }
    }
    if !nodes.iter().any(|n| n.id == s.node.id) {
        let ids: Vec<String> = nodes.iter().map(|n| n.id.to_string()).collect();
        return Err(invalid(
            "node.id".to_string(),
            s.node.id.to_string(),
            "node.id",
            format!("one of the ids in cluster.nodes ({})", ids.join(", ")),
        ));
    }
    for (i, path) in s.node.accept_key_files.iter().enumerate() {
        if path.as_os_str().is_empty() {
            return Err(invalid(
                format!("node.accept_key_files[{i}]"),
                "\"\"".to_string(),
                "node.accept_key_files",
                "a key file path in quotes".to_string(),
            ));
        }
    }
    if s.operator_socket_path() == s.socket_path() {
        return Err(invalid(
            "api.operator_socket".to_string(),
            format!("\"{}\"", s.operator_socket_path().display()),
            "api.operator_socket",
            "another path than the client socket (api.socket)".to_string(),
        ));
    }
    for (l, level) in s.fencing.levels.iter().enumerate() {
        for (a, agent) in level.agents.iter().enumerate() {
            for plug_node in agent.plugs.keys() {
                if !plug_node.parse::<u32>().is_ok_and(|id| nodes.iter().any(|n| n.id == id)) {
                    return Err(invalid(
                        format!("fencing.levels[{l}].agents[{a}].plugs"),
                        format!("{{ \"{plug_node}\" = ... }}"),
                        "fencing.levels",
                        "node ids of cluster.nodes as keys".to_string(),
                    ));
                }
            }
        }
    }

    s.core_config().validate().map_err(|e| match e {
        cohort::config::ConfigError::Invalid { key, value, expected } => {
            let dotted_key = dotted(key).unwrap_or(key);
            // The core prints its own rendering of the value; the file's is clearer when there is one.
            let shown = merged.get(dotted_key).map_or(value, |(raw, _)| raw.show());
            SettingsError::Invalid {
                key: dotted_key.to_string(),
                value: shown,
                origin: origin_of(dotted_key),
                expected: rewrite_expected(expected, merged),
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------------

/// The effective configuration for `cohort config check`: one `key = value    # from SOURCE` line per
/// key, grouped by section in the order of `config/default.toml`. Empty optional values say what they
/// resolve to.
pub fn render_effective(loaded: &Loaded) -> String {
    let flat = flat_values(&loaded.settings);
    let s = &loaded.settings;
    let lines: Vec<(String, String)> = KEYS
        .iter()
        .map(|field| {
            let value = flat.get(field.name).map_or_else(|| "\"\"".to_string(), |v| v.to_string());
            let origin = loaded.provenance.get(field.name).map_or("default", String::as_str);
            let note = match field.name {
                "node.event_log" if s.node.event_log.is_none() => {
                    format!("; means {}", s.event_log_path().display())
                }
                "api.socket" if s.api.socket.is_none() => format!("; means {}", s.socket_path().display()),
                "api.operator_socket" if s.api.operator_socket.is_none() => {
                    format!("; means {}", s.operator_socket_path().display())
                }
                "admin.listen" if s.admin.listen.is_none() => "; disabled".to_string(),
                _ => String::new(),
            };
            (format!("{} = {value}", field.name), printable(&format!("# from {origin}{note}")))
        })
        .collect();
    let width = lines.iter().map(|(kv, _)| kv.chars().count()).filter(|&n| n <= 48).max().unwrap_or(0);
    let mut out = String::from("# effective configuration: key = value    # the layer that set it\n");
    let mut section = "";
    for (field, (kv, comment)) in KEYS.iter().zip(&lines) {
        let this = field.name.split_once('.').map_or("", |(sec, _)| sec);
        if this != section {
            out.push('\n');
            section = this;
        }
        let pad = width.saturating_sub(kv.chars().count());
        out.push_str(&format!("{kv}{}    {comment}\n", " ".repeat(pad)));
    }
    out
}

/// `text` with its control characters escaped (`\u{8}`): a comment of [`render_effective`] may quote a
/// path or a layer's name from the environment, TOML allows no control character in a comment (the
/// output would no longer load), and a terminal would act on them.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() && c != '\t' { c.escape_default().to_string() } else { c.to_string() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "cohort-settings-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }

        fn file(&self, name: &str, text: &str) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, text).expect("write temp file");
            p
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn opts<P: AsRef<Path>>(files: &[P]) -> LoadOptions {
        LoadOptions {
            config_files: files.iter().map(|p| p.as_ref().to_path_buf()).collect(),
            system_file: None,
            env: vec![],
            overrides: vec![],
        }
    }

    fn defaults() -> LoadOptions {
        opts::<PathBuf>(&[])
    }

    fn load_err(o: &LoadOptions) -> SettingsError {
        match load(o) {
            Ok(l) => panic!("expected an error, loaded {:?}", l.settings),
            Err(e) => e,
        }
    }

    const THREE: &str = r#"
        [cluster]
        nodes = [
            { id = 1, addr = "127.0.0.1:7401" },
            { id = 2, addr = "127.0.0.1:7402" },
            { id = 3, addr = "127.0.0.1:7403" },
        ]
    "#;

    #[test]
    fn default_toml_alone_loads_and_validates_as_a_single_node_cluster() {
        let l = load(&defaults()).expect("defaults load");
        assert_eq!(l.settings.node.id, 1);
        assert_eq!(l.settings.cluster.nodes.len(), 1);
        assert_eq!(l.settings.timing.heartbeat_interval_ms, 100);
        assert_eq!(l.settings.timing.retransmit_interval_ms, 20);
        assert_eq!(l.settings.limits.window_msgs, 4096);
        assert_eq!(l.settings.node.event_log, None);
        assert_eq!(l.settings.api.socket, None);
        assert_eq!(l.settings.admin.listen, Some("127.0.0.1:7480".parse().expect("addr")));
        assert!(l.settings.fencing.levels.is_empty());
        assert!(l.provenance.values().all(|o| o == "default"));
        assert_eq!(l.provenance.len(), KEYS.len());
        l.settings.core_config().validate().expect("core validates the defaults");
    }

    /// Every key `Settings` serializes (with the optional ones set) is in `default.toml` and in the
    /// schema, and nothing else is.
    #[test]
    fn every_settings_key_appears_in_default_toml() {
        let mut s = load(&defaults()).expect("defaults").settings;
        s.node.event_log = Some("/x".into());
        s.api.socket = Some("/x".into());
        s.api.operator_socket = Some("/y".into());
        s.admin.listen = Some("127.0.0.1:1".parse().expect("addr"));
        let keys_of = |t: &toml::Table| {
            let mut out = Vec::new();
            flatten_toml(t, "", "", &mut out);
            let mut keys: Vec<String> = out.into_iter().map(|e| e.key).collect();
            keys.sort();
            keys
        };
        let serialized = match toml::Value::try_from(&s).expect("serialize") {
            toml::Value::Table(t) => keys_of(&t),
            other => panic!("not a table: {other}"),
        };
        let in_default = keys_of(&DEFAULT_TOML.parse::<toml::Table>().expect("parse default.toml"));
        let mut schema: Vec<String> = known_keys().map(str::to_string).collect();
        schema.sort();
        assert_eq!(serialized, in_default);
        assert_eq!(serialized, schema);
    }

    #[test]
    fn each_layer_overrides_the_one_before_and_provenance_says_so() {
        let dir = TempDir::new();
        let a = dir.file("a.toml", &format!("{THREE}\n[node]\nid = 2\n[timing]\nfailure_timeout_ms = 3000\nheartbeat_interval_ms = 200\ndiscovery_interval_ms = 700\n"));
        let b = dir.file(
            "b.toml",
            "[node]\nid = 3\n[timing]\nfailure_timeout_ms = 4000\nheartbeat_interval_ms = 300\n",
        );
        let mut o = opts(&[&a, &b]);
        o.env = vec![
            ("COHORT__TIMING__FAILURE_TIMEOUT_MS".into(), "5000".into()),
            ("cohort__node__id".into(), "1".into()),
            ("PATH".into(), "/bin".into()),
        ];
        o.overrides = vec![("node.id".into(), "2".into())];
        let l = load(&o).expect("load");
        let s = &l.settings;
        let p = |k: &str| l.provenance.get(k).map(String::as_str);
        // default only
        assert_eq!(s.timing.view_change_timeout_ms, 400);
        assert_eq!(p("timing.view_change_timeout_ms"), Some("default"));
        // first file only
        assert_eq!(s.timing.discovery_interval_ms, 700);
        assert_eq!(p("timing.discovery_interval_ms"), Some(format!("file:{}", a.display()).as_str()));
        assert_eq!(s.cluster.nodes.len(), 3);
        assert_eq!(p("cluster.nodes"), Some(format!("file:{}", a.display()).as_str()));
        // later file over earlier file
        assert_eq!(s.timing.heartbeat_interval_ms, 300);
        assert_eq!(p("timing.heartbeat_interval_ms"), Some(format!("file:{}", b.display()).as_str()));
        // env over files
        assert_eq!(s.timing.failure_timeout_ms, 5000);
        assert_eq!(p("timing.failure_timeout_ms"), Some("env:COHORT__TIMING__FAILURE_TIMEOUT_MS"));
        // flag over env
        assert_eq!(s.node.id, 2);
        assert_eq!(p("node.id"), Some("flag:--node-id"));
    }

    #[test]
    fn the_system_file_sits_between_defaults_and_config_files() {
        let dir = TempDir::new();
        let sys = dir.file("cohort.toml", "[cluster]\nname = \"prod\"\n[log]\nlevel = \"debug\"\n");
        let user = dir.file("user.toml", "[log]\nlevel = \"warn\"\n");
        let mut o = opts(&[&user]);
        o.system_file = Some(sys.clone());
        let l = load(&o).expect("load");
        assert_eq!(l.settings.cluster.name, "prod");
        assert_eq!(l.provenance["cluster.name"], sys.display().to_string());
        assert_eq!(l.settings.log.level, "warn");
        assert_eq!(l.provenance["log.level"], format!("file:{}", user.display()));
        // A missing system file is skipped silently.
        let mut o = defaults();
        o.system_file = Some(dir.0.join("absent.toml"));
        assert!(load(&o).is_ok());
    }

    #[test]
    fn empty_optional_values_mean_unset_and_can_undo_an_earlier_layer() {
        let dir = TempDir::new();
        let a = dir.file("a.toml", "[api]\nsocket = \"/run/x.sock\"\n[admin]\nlisten = \"\"\n");
        let l = load(&opts(&[&a])).expect("load");
        assert_eq!(l.settings.api.socket, Some(PathBuf::from("/run/x.sock")));
        assert_eq!(l.settings.admin.listen, None);
        let mut o = opts(&[a]);
        o.env = vec![("COHORT__API__SOCKET".into(), String::new())];
        let l = load(&o).expect("load");
        assert_eq!(l.settings.api.socket, None);
        assert_eq!(l.settings.socket_path(), PathBuf::from("/var/lib/cohort/cohort.sock"));
    }

    #[test]
    fn unknown_key_names_the_key_and_file_and_suggests_the_right_one() {
        let dir = TempDir::new();
        let a = dir.file("a.toml", "[timing]\nheartbeat_ms = 50\n");
        let e = load_err(&opts(&[&a]));
        assert_eq!(
            e.to_string(),
            format!(
                "unknown key `timing.heartbeat_ms` in file:{}; did you mean `timing.heartbeat_interval_ms`?",
                a.display()
            )
        );
        // A misspelt section, a key in the wrong section, and an environment variable.
        let b = dir.file("b.toml", "[timming]\nfailure_timeout_ms = 50\n");
        assert!(load_err(&opts(&[b])).to_string().contains("did you mean `timing.failure_timeout_ms`?"));
        let c = dir.file("c.toml", "[node]\nfailure_timeout_ms = 50\n");
        assert!(load_err(&opts(&[c])).to_string().contains("did you mean `timing.failure_timeout_ms`?"));
        let mut o = defaults();
        o.env = vec![("COHORT__NODE__IDD".into(), "2".into())];
        assert_eq!(
            load_err(&o).to_string(),
            "unknown key `node.idd` in env:COHORT__NODE__IDD; did you mean `node.id`?"
        );
        // Inside an array entry.
        let d = dir.file("d.toml", "[[cluster.nodes]]\nid = 1\nadr = \"127.0.0.1:1\"\n");
        let e = load_err(&opts(&[d]));
        assert_eq!(e.key(), Some("cluster.nodes[0].adr"));
        assert!(e.to_string().contains("did you mean `cluster.nodes[0].addr`?"), "{e}");
    }

    #[test]
    fn accept_key_files_is_a_list_of_paths_and_mistakes_name_the_key() {
        let dir = TempDir::new();
        let a = dir.file("a.toml", "[node]\naccept_key_files = [\"/k/next.key\"]\n");
        let l = load(&opts(&[&a])).expect("loads");
        assert_eq!(l.settings.node.accept_key_files, [PathBuf::from("/k/next.key")]);
        assert_eq!(apply_of("node.accept_key_files"), Some(Apply::Reload));
        assert_eq!(apply_of("node.key_file"), Some(Apply::Reload));
        let b = dir.file("b.toml", "[node]\naccept_key_files = \"/k/next.key\"\n");
        let e = load_err(&opts(&[&b]));
        assert_eq!(e.key(), Some("node.accept_key_files"));
        assert!(e.to_string().contains("expected an array of key file paths"), "{e}");
        let c = dir.file("c.toml", "[node]\naccept_key_files = [\"/k/a.key\", \"\"]\n");
        let e = load_err(&opts(&[&c]));
        assert_eq!(e.key(), Some("node.accept_key_files[1]"));
    }

    #[test]
    fn event_log_rotation_keys_load_and_their_mistakes_name_the_key() {
        let l = load(&defaults()).expect("defaults load");
        assert_eq!(l.settings.log.event_log_max_bytes, 64 << 20);
        assert_eq!(l.settings.log.event_log_keep_files, 8);
        assert_eq!(apply_of("log.event_log_max_bytes"), Some(Apply::Reload));
        assert_eq!(apply_of("log.event_log_keep_files"), Some(Apply::Reload));
        let dir = TempDir::new();
        let a = dir.file("a.toml", "[log]\nevent_log_max_bytes = 0\nevent_log_keep_files = 2\n");
        let l = load(&opts(&[&a])).expect("loads");
        assert_eq!(
            l.settings.event_log_rotation(),
            crate::event_log::Rotation { max_bytes: 0, keep_files: 2 }
        );
        let b = dir.file("b.toml", "[log]\nevent_log_max_bytes = -1\n");
        assert_eq!(load_err(&opts(&[b])).key(), Some("log.event_log_max_bytes"));
        let mut o = defaults();
        o.env = vec![("COHORT__LOG__EVENT_LOG_KEEP_FILES".into(), "many".into())];
        let e = load_err(&o);
        assert_eq!(e.key(), Some("log.event_log_keep_files"));
        assert!(e.to_string().contains("expected an integer number of files"), "{e}");
    }

    #[test]
    fn bad_type_names_the_key_value_and_source() {
        let mut o = defaults();
        o.env = vec![("COHORT__TIMING__FAILURE_TIMEOUT_MS".into(), "abc".into())];
        assert_eq!(
            load_err(&o).to_string(),
            "`timing.failure_timeout_ms` = \"abc\" (from env:COHORT__TIMING__FAILURE_TIMEOUT_MS): \
             expected a positive integer number of milliseconds"
        );
        let dir = TempDir::new();
        let a = dir.file("a.toml", "[quorum]\ntwo_node = \"yes\"\n");
        assert_eq!(
            load_err(&opts(&[&a])).to_string(),
            format!("`quorum.two_node` = \"yes\" (from file:{}): expected true or false", a.display())
        );
        let b = dir.file("b.toml", "[merge]\npolicy = \"shoot\"\n");
        let e = load_err(&opts(&[b]));
        assert_eq!(e.key(), Some("merge.policy"));
        assert!(e.to_string().contains("expected one of \"fence\", \"restart\", \"reset\", \"wait\""));
        let c = dir.file("c.toml", "[[cluster.nodes]]\nid = 1\naddr = \"localhost\"\n");
        let e = load_err(&opts(&[c]));
        assert_eq!(e.key(), Some("cluster.nodes[0].addr"));
        let mut o = defaults();
        o.overrides = vec![("node.id".into(), "-1".into())];
        assert_eq!(
            load_err(&o).to_string(),
            "`node.id` = -1 (from flag:--node-id): expected a positive integer node id"
        );
        let mut o = defaults();
        o.overrides = vec![("api.socket_mode".into(), "rw-rw----".into())];
        assert_eq!(load_err(&o).key(), Some("api.socket_mode"));
        let mut o = defaults();
        o.env = vec![("COHORT__CLUSTER__NODES".into(), "1,2".into())];
        assert!(load_err(&o).to_string().contains("arrays can only be set in a file"));
    }

    #[test]
    fn unreadable_files_and_syntax_errors_name_the_file_and_line() {
        let dir = TempDir::new();
        let missing = dir.0.join("nope.toml");
        let e = load_err(&opts(&[&missing]));
        assert!(
            e.to_string().starts_with(&format!("cannot read config file {}: ", missing.display())),
            "{e}"
        );
        let bad = dir.file("bad.toml", "[node]\nid = 2\ndata_dir = /srv\n");
        let e = load_err(&opts(&[&bad]));
        match &e {
            SettingsError::Syntax { origin, line, .. } => {
                assert_eq!(origin, &format!("file:{}", bad.display()));
                assert_eq!(*line, 3);
            }
            other => panic!("expected a syntax error, got {other}"),
        }
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn node_id_must_be_in_the_node_list() {
        let dir = TempDir::new();
        let a = dir.file("a.toml", &format!("{THREE}\n[node]\nid = 4\n"));
        assert_eq!(
            load_err(&opts(&[&a])).to_string(),
            format!(
                "`node.id` = 4 (from file:{}): expected one of the ids in cluster.nodes (1, 2, 3)",
                a.display()
            )
        );
    }

    #[test]
    fn node_ids_and_addresses_must_be_unique() {
        let dir = TempDir::new();
        let a = dir.file(
            "a.toml",
            "[cluster]\nnodes = [{ id = 1, addr = \"127.0.0.1:1\" }, { id = 1, addr = \"127.0.0.1:2\" }]\n",
        );
        assert_eq!(load_err(&opts(&[a])).key(), Some("cluster.nodes[1].id"));
        let b = dir.file(
            "b.toml",
            "[cluster]\nnodes = [{ id = 1, addr = \"127.0.0.1:1\" }, { id = 2, addr = \"127.0.0.1:1\" }]\n",
        );
        let e = load_err(&opts(&[b]));
        assert_eq!(e.key(), Some("cluster.nodes[1].addr"));
        assert!(e.to_string().contains("cluster.nodes[0] has 127.0.0.1:1 too"), "{e}");
    }

    #[test]
    fn core_validation_errors_are_mapped_to_dotted_keys_with_their_source() {
        let dir = TempDir::new();
        let a = dir.file("a.toml", "[timing]\nheartbeat_interval_ms = 100\nfailure_timeout_ms = 150\n");
        assert_eq!(
            load_err(&opts(&[&a])).to_string(),
            format!(
                "`timing.failure_timeout_ms` = 150 (from file:{}): \
                 expected at least twice `timing.heartbeat_interval_ms` (100)",
                a.display()
            )
        );
        let mut o = defaults();
        o.env = vec![("COHORT__QUORUM__TWO_NODE".into(), "true".into())];
        let e = load_err(&o);
        assert_eq!(e.key(), Some("quorum.two_node"));
        assert!(e.to_string().contains("(from env:COHORT__QUORUM__TWO_NODE)"), "{e}");
        let mut o = defaults();
        o.env = vec![("COHORT__FENCING__MODE".into(), "watchdog".into())];
        assert_eq!(
            load_err(&o).to_string(),
            "`fencing.self_fence_after_ms` = 0 (from default): \
             expected a positive deadline when `fencing.mode` = \"watchdog\""
        );
        let b = dir.file("b.toml", "[limits]\nsend_queue_bytes = 1000\n");
        let e = load_err(&opts(&[b]));
        assert_eq!(e.key(), Some("limits.max_message_bytes"));
        assert!(e.to_string().contains("`limits.send_queue_bytes` (1000)"), "{e}");
    }

    #[test]
    fn fence_levels_load_and_are_checked() {
        let dir = TempDir::new();
        let good = dir.file(
            "f.toml",
            r#"
            [cluster]
            nodes = [{ id = 1, addr = "127.0.0.1:1" }, { id = 2, addr = "127.0.0.1:2" }]
            [[fencing.levels]]
            [[fencing.levels.agents]]
            name = "ipmi"
            command = "/usr/sbin/fence_ipmilan"
            timeout_ms = 20000
            retries = 1
            stdin = { action = "{action}", ip = "10.0.1.{node}", plug = "{plug}" }
            env = { IPMI_MODE = "lan" }
            plugs = { "2" = "7" }
            "#,
        );
        let l = load(&opts(&[good])).expect("levels load");
        let agent = &l.settings.fencing.levels[0].agents[0];
        assert_eq!(agent.timeout_ms, 20000);
        assert_eq!(agent.action, "off");
        // Keys inside array entries keep their case (environment variable names are case-sensitive).
        assert_eq!(agent.env.get("IPMI_MODE").map(String::as_str), Some("lan"));
        let bad = dir.file(
            "g.toml",
            "[[fencing.levels]]\n[[fencing.levels.agents]]\nname = \"x\"\ncommand = \"/bin/true\"\n",
        );
        let e = load_err(&opts(&[bad]));
        assert!(matches!(e, SettingsError::Missing { .. }), "{e}");
        assert_eq!(e.key(), Some("fencing.levels[0].agents[0].timeout_ms"));
    }

    #[test]
    fn render_effective_prints_every_key_with_its_source() {
        let dir = TempDir::new();
        let a = dir.file("a.toml", &format!("{THREE}\n[node]\nid = 2\n"));
        let l = load(&opts(&[&a])).expect("load");
        let text = render_effective(&l);
        let line = text.lines().find(|l| l.starts_with("node.id = ")).expect("node.id line");
        assert!(line.starts_with("node.id = 2 "), "{line}");
        assert!(line.ends_with(&format!("# from file:{}", a.display())), "{line}");
        assert!(text.contains("# from default; means /var/lib/cohort/events.jsonl"));
        for key in known_keys() {
            assert!(text.lines().any(|l| l.starts_with(&format!("{key} = "))), "{key} missing");
        }
    }

    #[test]
    fn socket_access_keys_load_and_are_checked() {
        let dir = TempDir::new();
        let a = dir.file(
            "a.toml",
            "[api]\nsocket = \"/run/c/cohort.sock\"\nallowed_uids = [1001, 0]\noperator_allowed_gids = [50]\n[testing]\nlink_filter = true\n",
        );
        let l = load(&opts(&[&a])).expect("load");
        assert_eq!(l.settings.api.allowed_uids, vec![1001, 0]);
        assert_eq!(l.settings.api.operator_allowed_gids, vec![50]);
        assert_eq!(l.settings.operator_socket_path(), PathBuf::from("/run/c/operator.sock"));
        assert_eq!(l.settings.api.operator_socket_mode, "0600");
        assert!(l.settings.testing.link_filter);
        let b = dir.file("b.toml", "[api]\nallowed_uids = [-1]\n");
        let e = load_err(&opts(&[b]));
        assert_eq!(e.key(), Some("api.allowed_uids"));
        assert!(e.to_string().contains("an array of numeric ids"), "{e}");
        let mut o = defaults();
        o.env = vec![("COHORT__API__OPERATOR_ALLOWED_UIDS".into(), "1000".into())];
        assert!(load_err(&o).to_string().contains("arrays can only be set in a file"));
        let c = dir.file("c.toml", "[api]\nsocket = \"/s/x.sock\"\noperator_socket = \"/s/x.sock\"\n");
        let e = load_err(&opts(&[c]));
        assert_eq!(e.key(), Some("api.operator_socket"));
        assert!(e.to_string().contains("another path than the client socket"), "{e}");
    }

    #[test]
    fn suggestions_prefer_the_same_last_segment_then_edit_distance() {
        let keys = || KEYS.iter().map(|k| k.name);
        assert_eq!(closest("heartbeat_interval_ms", keys()), Some("timing.heartbeat_interval_ms"));
        assert_eq!(closest("node_id", keys()), Some("node.id"));
        assert_eq!(closest("zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", keys()), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
