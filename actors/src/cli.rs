//! The `cohort` command: the agent and the operator's tools, parsed with clap.
//!
//! [`main_entry`] is the whole program; `src/bin/cohort.rs` only calls it. Subcommands:
//! - `agent`: load the layered configuration ([`crate::settings_load`]), start telemetry and run the node
//!   ([`crate::supervisor::run_agent`]).
//! - `config check`: print the effective configuration and where each value came from.
//! - `keygen`: write a new cluster key ([`crate::crypto::generate_key_file`]).
//! - `verify`: check event logs of several nodes against the guarantees with the core's checker
//!   ([`cohort::checker`]), the same one the simulator uses; each agent's rotated files are read oldest first.
//! - `status`, `members`, `watch`, `send`: talk to a running agent over its client socket, and
//!   `fence ack` over its operator socket ([`crate::client_cli`]).
//!
//! Exit codes: 0 success; 1 a runtime failure (the agent could not start, the socket refused us) or
//! `verify` found violations; 2 a user's mistake (a bad flag, a bad configuration value, a key file that
//! is missing, unreadable, someone else's, open to its group or others, or malformed
//! ([`crate::key_file`]), an unreadable log), reported as one line naming the flag, key or file and what
//! is expected.
//!
//! - `lock serve|acquire|release|holders|status`: the lock service's daemon and its client
//!   ([`crate::lock`]).
//! - `demo`: the partition and stateful-merge story on local agents ([`crate::demo`]).
//! - `generate-docs` (hidden): the manual pages and shell completions ([`crate::manpages`]).
//!
//! **Deliberately absent:** no protocol logic and no socket code here; each subcommand is a few lines that
//! call the module doing the work.

use crate::client_proto::KeyRequest;
use crate::settings_load::{self, LoadOptions, Loaded, SettingsError, FLAG_KEYS};
use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand};
use cohort::checker::{self, CheckStats, Checker};
use cohort::{Member, Record};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use thiserror::Error;

/// Exit code of a user's mistake.
const EXIT_USAGE: u8 = 2;
/// Exit code of a runtime failure, and of `verify` finding violations.
const EXIT_FAILURE: u8 = 1;

/// The default key file of `cohort keygen`.
pub const DEFAULT_KEY_FILE: &str = "/etc/cohort/cluster.key";

/// The client socket tried when neither `--socket` nor a configuration names one.
pub const FALLBACK_SOCKET: &str = "./cohort.sock";

/// The operator socket tried when neither `--operator-socket` nor a configuration names one.
pub const FALLBACK_OPERATOR_SOCKET: &str = "./operator.sock";

const TOP_EXAMPLES: &str = "\
Examples:
  cohort keygen --out /etc/cohort/cluster.key
  cohort config check --config /etc/cohort/cluster.toml --config /etc/cohort/node.toml
  cohort agent --config /etc/cohort/cluster.toml --config /etc/cohort/node.toml
  cohort status --config /etc/cohort/node.toml
  cohort verify node1/events.jsonl node2/events.jsonl node3/events.jsonl";

const AGENT_EXAMPLES: &str = "\
Examples:
  # A three-node cluster on one machine (see config/examples/three-node):
  mkdir -p /tmp/cohort-3n && cohort keygen --out /tmp/cohort-3n/cluster.key
  cohort agent --config config/examples/three-node/cluster.toml --config config/examples/three-node/node1.toml

  # One production node, its id given on the command line:
  cohort agent --config /etc/cohort/cluster.toml --node-id 2 --log-level debug

  # Any key from the environment:
  COHORT__TIMING__FAILURE_TIMEOUT_MS=2000 cohort agent --config cluster.toml --config node1.toml";

const CONFIG_EXAMPLES: &str = "\
Examples:
  cohort config check --config config/examples/three-node/cluster.toml --config config/examples/three-node/node2.toml
  COHORT__NODE__ID=3 cohort config check --config cluster.toml";

const CHECK_EXAMPLES: &str = "\
Examples:
  cohort config check --config config/examples/three-node/cluster.toml --config config/examples/three-node/node2.toml
  cohort config check --config cluster.toml --node-id 3 | grep '^node\\.'
  COHORT__TIMING__FAILURE_TIMEOUT_MS=2000 cohort config check --config cluster.toml";

const KEYGEN_EXAMPLES: &str = "\
Examples:
  cohort keygen                                   # writes /etc/cohort/cluster.key
  cohort keygen --out /tmp/cohort-3n/cluster.key
  cohort keygen --out /etc/cohort/cluster.key --force   # replace the key (restart every node with the new one)";

const VERIFY_EXAMPLES: &str = "\
Examples:
  cohort verify /var/lib/cohort/events.jsonl      # with events.jsonl.1, .2, ... beside it
  cohort verify /tmp/cohort-3n/node1 /tmp/cohort-3n/node2 /tmp/cohort-3n/node3
  cohort verify /tmp/cohort-3n/node1/events.jsonl /tmp/cohort-3n/node2/events.jsonl /tmp/cohort-3n/node3/events.jsonl
  for n in 1 2 3; do mkdir -p node$n && scp \"node$n:/var/lib/cohort/events.jsonl*\" node$n/; done
  cohort verify --independent-clocks node1 node2 node3";

const STATUS_EXAMPLES: &str = "\
Examples:
  cohort status --config /etc/cohort/node.toml
  cohort status --socket /tmp/cohort-3n/node1/cohort.sock --json | jq .view";

const MEMBERS_EXAMPLES: &str = "\
Examples:
  cohort members --config config/examples/three-node/cluster.toml --config config/examples/three-node/node1.toml
  cohort members --socket /var/lib/cohort/cohort.sock";

const WATCH_EXAMPLES: &str = "\
Examples:
  cohort watch --socket /tmp/cohort-3n/node1/cohort.sock
  cohort watch --group orders --config /etc/cohort/node.toml";

const SEND_EXAMPLES: &str = "\
Examples:
  cohort send --group bench --count 10000 --size 64 --socket /tmp/cohort-3n/node1/cohort.sock
  cohort send --group bench --count 5000 --rate 1000 --size 1024 --safe --config /etc/cohort/node.toml";

const FENCE_EXAMPLES: &str = "\
Examples:
  sudo cohort fence ack 3 --config /etc/cohort/node.toml";

const ACK_EXAMPLES: &str = "\
Examples:
  # After checking that node 3 is powered off (as root or the agent's user):
  sudo cohort fence ack 3 --config /etc/cohort/node.toml
  cohort fence ack 3 --operator-socket /tmp/cohort-3n/node1/operator.sock";

const KEY_EXAMPLES: &str = "\
Examples:
  # On one machine: a new key; copy it to the same path on every node (mode 0600, owned by the agent's user).
  cohort keygen --out /etc/cohort/cluster.key.new
  # On every node, one step at a time (each step on all nodes before the next):
  sudo cohort key install /etc/cohort/cluster.key.new --config /etc/cohort/node.toml
  sudo cohort key use 5f0c9a1e --config /etc/cohort/node.toml
  sudo cohort key remove 0b7d2c44 --config /etc/cohort/node.toml
  sudo cohort key list --config /etc/cohort/node.toml";

const LOCK_EXAMPLES: &str = "\
Examples:
  cohort lock serve --socket /var/lib/cohort/cohort.sock &
  cohort lock acquire printer --owner alice --socket /var/lib/cohort/cohort.sock
  cohort lock holders --socket /var/lib/cohort/cohort.sock
  cohort lock release printer --owner alice --socket /var/lib/cohort/cohort.sock";

const LOCK_SERVE_EXAMPLES: &str = "\
Examples:
  cohort lock serve --config /etc/cohort/node.toml
  cohort lock serve --socket /tmp/cohort-3n/node1/cohort.sock --control /tmp/cohort-3n/node1/lock.sock";

const LOCK_ACQUIRE_EXAMPLES: &str = "\
Examples:
  cohort lock acquire printer --owner alice --config /etc/cohort/node.toml
  cohort lock acquire ledger --owner report-job --shared --timeout-ms 30000 --socket /tmp/cohort-3n/node2/cohort.sock";

const LOCK_RELEASE_EXAMPLES: &str = "\
Examples:
  cohort lock release printer --owner alice --config /etc/cohort/node.toml";

const LOCK_HOLDERS_EXAMPLES: &str = "\
Examples:
  cohort lock holders --config /etc/cohort/node.toml
  cohort lock holders printer --json --socket /tmp/cohort-3n/node3/cohort.sock";

const LOCK_STATUS_EXAMPLES: &str = "\
Examples:
  cohort lock status --config /etc/cohort/node.toml";

const GENERATE_DOCS_EXAMPLES: &str = "\
Examples:
  cohort generate-docs --out target/docs
  man -l target/docs/man/man5/cohort.toml.5";

const DEMO_EXAMPLES: &str = "\
Examples:
  cohort demo
  cohort demo --policy restart --speed 2
  cohort demo --nodes 3 --policy wait --color never | tee demo.txt";

/// The `cohort` command line.
#[derive(Debug, Parser)]
#[command(
    name = "cohort",
    version,
    about = "cohort: group membership with virtual synchrony, stateful-merge detection and fencing",
    long_about = "cohort: group membership with virtual synchrony, stateful-merge detection and fencing.\n\n\
        Every node runs `cohort agent`; applications on the node talk to it through a local socket. The other \
        commands are the operator's tools: check a configuration before deploying it, make the cluster key, \
        look at a running agent, and verify the event logs of several nodes after an incident.",
    after_help = TOP_EXAMPLES,
    disable_help_subcommand = true
)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run this node's agent until SIGINT or SIGTERM.
    ///
    /// Loads the configuration in layers (built-in defaults, /etc/cohort/cohort.toml if present, each
    /// --config FILE in order, COHORT__SECTION__KEY environment variables, then these flags), joins the
    /// cluster described by cluster.nodes as node.id, and serves applications on the local socket
    /// (api.socket), the status and metrics on admin.listen, and the event log in node.data_dir. A bad
    /// configuration value stops it before anything starts, with one line naming the key (exit code 2);
    /// so does a key file (node.key_file) that is missing, not owned by the agent's user or root, open
    /// to its group or others, or not one 32-byte key, before the data directory is touched.
    ///
    /// SIGHUP reloads the configuration from the same files, environment and flags: log.level,
    /// fencing.levels and timing.* (one step at a time) are applied at once, the key files
    /// (node.key_file, node.accept_key_files) are read and checked again and the key ring follows them
    /// (new keys installed, node.key_file's key primary, keys dropped from the configuration removed;
    /// a bad file refuses the key change, naming it, and the rest is applied), and every other changed
    /// key is logged as needing a restart (`cohort config check` shows the same beforehand). Under systemd (Type=notify) the agent reports
    /// READY=1 once its epoch is on disk, its sockets are bound and it has installed its first view,
    /// a STATUS= line with the view, quorum and blocked reasons, WATCHDOG=1 while its event loop runs
    /// (WatchdogSec=), and STOPPING=1 when it leaves; see dist/systemd/cohort.service.
    #[command(after_help = AGENT_EXAMPLES)]
    Agent(AgentArgs),

    /// Inspect the configuration.
    ///
    /// `cohort config check` loads the configuration exactly as `cohort agent` would with the same files,
    /// environment and flags, and prints every key's effective value and the layer it came from.
    #[command(after_help = CONFIG_EXAMPLES, subcommand_required = true, disable_help_subcommand = true)]
    Config {
        /// The action.
        #[command(subcommand)]
        action: ConfigAction,
    },

    /// Write a new random cluster key file.
    ///
    /// Every node of a cluster needs the same key: it authenticates and encrypts every datagram, and
    /// datagrams that fail to authenticate are dropped. The file is created with mode 0600; an existing file
    /// is never overwritten unless --force is given. Copy it to node.key_file on every node.
    #[command(after_help = KEYGEN_EXAMPLES)]
    Keygen(KeygenArgs),

    /// Check event logs against the safety guarantees.
    ///
    /// Reads the event logs (events.jsonl, one JSON record per line) of any number of nodes, runs the
    /// checker the simulator uses over all of them together, and prints what it saw, every violation as
    /// `VIOLATION G<n>: ...` and a verdict. Give it the logs of all nodes for the strongest check; a
    /// missing node's log can hide a violation but never invent one. G13 (no zombie acts) compares the
    /// `ts_ms` of different nodes as one clock: right when every agent ran on one machine; for logs
    /// gathered from several machines pass --independent-clocks to skip it. Exit code 0 when every
    /// guarantee checked holds, 1 when one is violated, 2 when a log cannot be read or parsed.
    #[command(after_help = VERIFY_EXAMPLES)]
    Verify(VerifyArgs),

    /// Show a running agent's state.
    ///
    /// Asks the local agent for its view, members with their epochs, quorum, why applications are blocked
    /// if they are, fencing and stateful-merge state, and the liveness of each peer. The agent's socket is
    /// --socket, or api.socket of the configuration given with --config, or ./cohort.sock.
    #[command(after_help = STATUS_EXAMPLES)]
    Status(StatusArgs),

    /// List the members of the current view.
    ///
    /// Each member of the local agent's current view with its epoch, as the agent sees it. The agent's
    /// socket is --socket, or api.socket of the configuration given with --config, or ./cohort.sock.
    #[command(after_help = MEMBERS_EXAMPLES)]
    Members(SocketArgs),

    /// Follow views and deliveries as they happen.
    ///
    /// Prints the agent's views as they are installed and, with --group, joins that group and prints its
    /// views and deliveries too, until interrupted. Useful during a failover drill.
    #[command(after_help = WATCH_EXAMPLES)]
    Watch(WatchArgs),

    /// Join a group, multicast messages and report throughput and latency.
    ///
    /// Joins --group, sends --count messages of --size bytes (as fast as flow control allows, or at --rate
    /// messages per second), waits for their delivery back to this node, and reports throughput and
    /// delivery latency percentiles. --safe waits for safe delivery instead of agreed delivery.
    #[command(after_help = SEND_EXAMPLES)]
    Send(SendCmd),

    /// Operator actions on fencing.
    ///
    /// `cohort fence ack NODE` tells the cluster that NODE is known to be down (powered off, its disks cut
    /// off), which counts as a successful fence and lets recovery proceed. Fence commands are operator
    /// commands: they go to the agent's operator socket (api.operator_socket, mode 0600: root, the
    /// agent's user and api.operator_allowed_uids/gids), never to the applications' client socket.
    #[command(after_help = FENCE_EXAMPLES, subcommand_required = true, disable_help_subcommand = true)]
    Fence {
        /// The action.
        #[command(subcommand)]
        action: FenceAction,
    },

    /// The cluster key ring of one agent: rotate the cluster key without stopping the cluster.
    ///
    /// Every agent accepts datagrams sealed under any installed key and seals under its primary key.
    /// To rotate: copy a new key file (`cohort keygen`) to every node; `cohort key install FILE` on every
    /// node; then `cohort key use ID` on every node; then `cohort key remove OLD-ID` on every node; then
    /// point node.key_file at the new file so restarts use it. Each command acts on the agent of this
    /// machine only, through its operator socket; `cohort key list` shows the installed keys with their
    /// ids (eight hex digits of a hash of the key, never the key) and who installed them (FROM: config
    /// or command). The primary key cannot be removed.
    ///
    /// The same rotation works by file and reload: add the new key to node.accept_key_files and reload
    /// every node (systemctl reload cohort); point node.key_file at it and reload every node; drop the
    /// old key and reload every node. A reload never removes a key installed by `cohort key install`.
    #[command(after_help = KEY_EXAMPLES, subcommand_required = true, disable_help_subcommand = true)]
    Key {
        /// The action.
        #[command(subcommand)]
        action: KeyAction,
    },

    /// A distributed lock service built on the client API.
    ///
    /// `cohort lock serve` runs one lock daemon per node next to the agent: it joins the `locks` process
    /// group, keeps the replicated lock table, and serves a local control socket (default: lock.sock
    /// beside the agent's socket). `acquire`, `release`, `holders` and `status` talk to that daemon.
    /// Locks are held by the daemon on behalf of the named owner until released; a failed node's locks
    /// are released only after cohort fenced it and announced its recovery.
    #[command(after_help = LOCK_EXAMPLES, subcommand_required = true, disable_help_subcommand = true)]
    Lock {
        /// The action.
        #[command(subcommand)]
        action: LockAction,
    },

    /// Play cohort's story on local agents: partition, fencing, stateful merge, recovery.
    ///
    /// Starts --nodes agents as child processes on loopback (no root needed) with a lock service on each,
    /// and plays the story with a live timeline: the cluster forms and clients take locks; a partition
    /// splits a minority off; the minority blocks; the majority fences it (the demo fence agent stops the
    /// process) and recovers its locks; the partition heals; the stopped members wake up with their old
    /// state and are caught as stateful merges and refused; they come back as new members and receive the
    /// lock table by state transfer; `cohort verify` checks every event log. Everything is cleaned up at
    /// the end or on Ctrl-C. Exit code 0 when the verdict passes.
    #[command(after_help = DEMO_EXAMPLES)]
    Demo(DemoArgs),

    /// Write the manual pages and shell completions (for packaging).
    ///
    /// Writes cohort(8) and one page per subcommand to DIR/man/man8, cohort.toml(5) to DIR/man/man5, and
    /// bash, zsh and fish completions to DIR/completions, all generated from this program's own command
    /// line and configuration table.
    #[command(after_help = GENERATE_DOCS_EXAMPLES, hide = true)]
    GenerateDocs(GenerateDocsArgs),
}

/// `cohort agent` arguments.
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// Configuration files and flags.
    #[command(flatten)]
    pub settings: SettingsFlags,
    /// How diagnostic lines are written to stderr: journal (sd-daemon `<N>` priority prefixes, no
    /// timestamps or colours, for systemd's journal), plain, or auto (journal when stderr is the journal
    /// named by $JOURNAL_STREAM, plain otherwise). The event log is not affected.
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = crate::telemetry::LogFormat::Auto)]
    pub log_format: crate::telemetry::LogFormat,
}

/// `cohort generate-docs` arguments.
#[derive(Debug, Clone, Args)]
pub struct GenerateDocsArgs {
    /// The directory to write into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// `cohort lock ...`.
#[derive(Debug, Subcommand)]
pub enum LockAction {
    /// Run this node's lock daemon until SIGINT or SIGTERM (then every hold it has is released).
    #[command(after_help = LOCK_SERVE_EXAMPLES)]
    Serve(LockServeArgs),
    /// Wait for a lock and hold it for OWNER (it stays held after this command exits).
    #[command(after_help = LOCK_ACQUIRE_EXAMPLES)]
    Acquire(LockAcquireArgs),
    /// Release a lock held by OWNER.
    #[command(after_help = LOCK_RELEASE_EXAMPLES)]
    Release(LockReleaseArgs),
    /// List holders and waiters of one lock or of every lock, as this node's table has them.
    #[command(after_help = LOCK_HOLDERS_EXAMPLES)]
    Holders(LockHoldersArgs),
    /// Show the lock daemon's state: active, blocked, removed, and its member.
    #[command(after_help = LOCK_STATUS_EXAMPLES)]
    Status(LockTarget),
}

/// Where the lock daemon is.
#[derive(Debug, Clone, Args)]
pub struct LockTarget {
    /// The lock daemon's control socket (default: lock.sock beside the agent's socket).
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Print the daemon's JSON reply.
    #[arg(long)]
    pub json: bool,
    /// Where the agent is.
    #[command(flatten)]
    pub socket: SocketArgs,
}

impl LockTarget {
    fn control_path(&self) -> anyhow::Result<PathBuf> {
        match &self.control {
            Some(p) => Ok(p.clone()),
            None => Ok(crate::lock::default_control_path(&resolve_socket(&self.socket)?)),
        }
    }
}

/// `cohort lock serve` arguments.
#[derive(Debug, Clone, Args)]
pub struct LockServeArgs {
    /// The process group of the lock service (every node's daemon must use the same).
    #[arg(long, value_name = "G", default_value = crate::lock::service::DEFAULT_GROUP)]
    pub group: String,
    /// The control socket to serve (default: lock.sock beside the agent's socket).
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Where the agent is.
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// `cohort lock acquire` arguments.
#[derive(Debug, Clone, Args)]
pub struct LockAcquireArgs {
    /// The lock's name.
    #[arg(value_name = "LOCK")]
    pub lock: String,
    /// Who holds it (any name; release it under the same name).
    #[arg(long, value_name = "NAME")]
    pub owner: String,
    /// Shared mode (default: exclusive).
    #[arg(long)]
    pub shared: bool,
    /// How long to wait for the lock, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10_000, value_parser = positive_u64)]
    pub timeout_ms: u64,
    /// Where the daemon is.
    #[command(flatten)]
    pub target: LockTarget,
}

/// `cohort lock release` arguments.
#[derive(Debug, Clone, Args)]
pub struct LockReleaseArgs {
    /// The lock's name.
    #[arg(value_name = "LOCK")]
    pub lock: String,
    /// Who holds it.
    #[arg(long, value_name = "NAME")]
    pub owner: String,
    /// Where the daemon is.
    #[command(flatten)]
    pub target: LockTarget,
}

/// `cohort lock holders` arguments.
#[derive(Debug, Clone, Args)]
pub struct LockHoldersArgs {
    /// One lock (default: every lock).
    #[arg(value_name = "LOCK")]
    pub lock: Option<String>,
    /// Where the daemon is.
    #[command(flatten)]
    pub target: LockTarget,
}

/// `cohort demo` arguments.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// How many agents to start (3 to 9); the first (N-1)/2 form the minority.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub nodes: u32,
    /// The stateful-merge policy to configure (for `wait`, the demo plays the operator).
    #[arg(long, value_enum, default_value_t = crate::demo::Policy::Fence)]
    pub policy: crate::demo::Policy,
    /// Pace of the pauses that keep the timeline readable: 2 is twice as fast, 0 no pauses. Only the
    /// pauses change; every step waits for its events.
    #[arg(long, value_name = "X", default_value_t = 1.0)]
    pub speed: f64,
    /// Colour the timeline: auto (when standard output is a terminal and NO_COLOR is unset), always, never.
    #[arg(long, value_enum, default_value_t = crate::demo::ColorChoice::Auto)]
    pub color: crate::demo::ColorChoice,
    /// Keep the temporary directory (configuration, event logs, agent logs) for a closer look.
    #[arg(long)]
    pub keep: bool,
}

/// `cohort config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Print the effective configuration and the source of every value.
    ///
    /// Loads the configuration exactly as `cohort agent` would with the same files, environment and flags,
    /// validates it, and prints `key = value    # from SOURCE` for every key, where SOURCE is `default`,
    /// /etc/cohort/cohort.toml, `file:PATH`, `env:COHORT__...` or `flag:--...`. On a bad value it prints one
    /// line naming the key, the value, where it came from and what is expected, and exits with code 2.
    ///
    /// The key file (node.key_file) is checked as the agent checks it: it must exist, be a regular file
    /// owned by the agent's user or root (run as root, any owner is accepted and named in the output),
    /// give its group and others no access, and hold one 32-byte key as `cohort keygen` writes it.
    /// Otherwise one line names the file and what is wrong, with exit code 2. So is every file of
    /// node.accept_key_files, and the line names that key.
    ///
    /// When an agent runs with this configuration's client socket, the output ends with every key whose
    /// value differs from the agent's running configuration and when the change would take effect:
    /// "applied by a reload (SIGHUP, systemctl reload cohort)" or "needs a restart", then the agent's key
    /// ring (from keyring.json in its data directory) and what a reload would do to it ("keys at a
    /// reload: installed ID from FILE, primary now ID, removed ID", "no change", or why it would be
    /// refused).
    #[command(after_help = CHECK_EXAMPLES)]
    Check(SettingsFlags),
}

/// `cohort fence ...`.
#[derive(Debug, Subcommand)]
pub enum FenceAction {
    /// Acknowledge that a node is fenced.
    ///
    /// Only after making sure NODE is really down (powered off, or its storage and network cut off): the
    /// acknowledgement counts as a successful fence, so the cluster recovers the node's resources. Acking a
    /// node that is still running is exactly the split brain fencing exists to prevent.
    #[command(after_help = ACK_EXAMPLES)]
    Ack(AckArgs),
}

/// `cohort key` actions.
#[derive(Debug, Clone, Subcommand)]
pub enum KeyAction {
    /// Install a key from a key file: accepted on receipt from now on, not yet used to send.
    ///
    /// The agent reads FILE itself, as its own user, and checks it exactly as node.key_file (a regular
    /// file owned by the agent's user or root, no access for group or others, one 32-byte key as 64 hex
    /// digits); a refusal names the file.
    #[command(after_help = KEY_EXAMPLES)]
    Install(KeyFileArgs),
    /// Make an installed key the primary key: every datagram is sealed under it from now on.
    ///
    /// Install the key on every node first: a node that has not installed it drops what this node sends
    /// (counted in cohort_unknown_key_datagrams_total).
    #[command(after_help = KEY_EXAMPLES)]
    Use(KeyIdArgs),
    /// Remove an installed key: datagrams sealed under it are dropped from now on.
    ///
    /// The primary key cannot be removed. Remove the old key only once every node uses the new one.
    #[command(after_help = KEY_EXAMPLES)]
    Remove(KeyIdArgs),
    /// List the installed keys: id, whether it is the primary key, who installed it, and its file.
    ///
    /// FROM is `config` for the keys of node.key_file and node.accept_key_files (a reload installs and
    /// removes them) and `command` for those of `cohort key install` (only `cohort key remove` removes
    /// them).
    #[command(after_help = KEY_EXAMPLES)]
    List(KeyListArgs),
}

/// `cohort key install` arguments.
#[derive(Debug, Clone, Args)]
pub struct KeyFileArgs {
    /// The key file (as `cohort keygen` writes it).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Where the agent's operator socket is.
    #[command(flatten)]
    pub socket: OperatorSocketArgs,
}

/// `cohort key use` and `cohort key remove` arguments.
#[derive(Debug, Clone, Args)]
pub struct KeyIdArgs {
    /// The key id, eight hex digits as `cohort key list` shows it.
    #[arg(value_name = "KEY-ID")]
    pub id: String,
    /// Where the agent's operator socket is.
    #[command(flatten)]
    pub socket: OperatorSocketArgs,
}

/// `cohort key list` arguments.
#[derive(Debug, Clone, Args)]
pub struct KeyListArgs {
    /// Where the agent's operator socket is.
    #[command(flatten)]
    pub socket: OperatorSocketArgs,
}

/// How an operator command finds the agent's operator socket.
#[derive(Debug, Clone, Default, Args)]
pub struct OperatorSocketArgs {
    /// The agent's operator socket (api.operator_socket), not its client socket.
    #[arg(long, value_name = "PATH", conflicts_with = "config")]
    pub operator_socket: Option<PathBuf>,
    /// The agent's configuration files, to find its operator socket (api.operator_socket, or
    /// operator.sock beside the client socket).
    #[arg(long = "config", short = 'c', value_name = "FILE")]
    pub config: Vec<PathBuf>,
}

/// Configuration files and the flags that override single keys.
#[derive(Debug, Clone, Default, Args)]
pub struct SettingsFlags {
    /// A configuration file; repeat it to layer several, later files overriding earlier ones.
    #[arg(long = "config", short = 'c', value_name = "FILE")]
    pub config: Vec<PathBuf>,
    /// This node's id, one of the ids in cluster.nodes (overrides node.id).
    #[arg(long, value_name = "N")]
    pub node_id: Option<String>,
    /// The data directory (overrides node.data_dir).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// The HTTP status and metrics address, IP:PORT, or "" to disable it (overrides admin.listen).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// The diagnostic log level or filter, e.g. debug (overrides log.level; RUST_LOG overrides both).
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
}

impl SettingsFlags {
    /// The flags given, as (dotted key, value) overrides.
    pub fn overrides(&self) -> Vec<(String, String)> {
        let given = [
            ("--node-id", &self.node_id),
            ("--data-dir", &self.data_dir),
            ("--listen", &self.listen),
            ("--log-level", &self.log_level),
        ];
        given
            .into_iter()
            .filter_map(|(flag, value)| {
                let key = FLAG_KEYS.iter().find(|(f, _)| *f == flag).map(|(_, k)| *k)?;
                Some((key.to_string(), value.clone()?))
            })
            .collect()
    }

    /// Loads the settings these flags describe, with the system file and the process environment.
    pub fn load(&self) -> Result<Loaded, SettingsError> {
        settings_load::load(&LoadOptions::for_process(self.config.clone(), self.overrides()))
    }
}

/// `cohort keygen` arguments.
#[derive(Debug, Clone, Args)]
pub struct KeygenArgs {
    /// Where to write the key (the parent directory must exist).
    #[arg(long, value_name = "FILE", default_value = DEFAULT_KEY_FILE)]
    pub out: PathBuf,
    /// Replace an existing key file. Nodes still using the old key can no longer talk to this one.
    #[arg(long)]
    pub force: bool,
}

/// `cohort verify` arguments.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// Event logs (JSON lines), one per agent: the live file (events.jsonl), its directory, or any of
    /// its rotated files. Each log is read whole, its rotated files oldest first (events.jsonl.N …
    /// events.jsonl.1, then events.jsonl); files that do not follow one another (one missing in the
    /// middle) are refused. When the oldest files were deleted by rotation, the report says where that
    /// agent's history begins and which checks it could not decide (those that would conclude from
    /// records the deleted files may have held); everything else is checked.
    #[arg(value_name = "LOG", required = true)]
    pub logs: Vec<PathBuf>,
    /// The logs come from several machines whose clocks are independent: skip G13 (no zombie acts), the one
    /// check that compares `ts_ms` written by different nodes as if one clock wrote them (a member
    /// delivering after another member logged `recovered` for it). Without this flag G13 is checked, which
    /// is right when every agent ran on one machine (a test bed, a demo). G9 and G3's restart exception
    /// still compare timestamps across nodes and need the clocks to agree roughly (NTP).
    #[arg(long)]
    pub independent_clocks: bool,
}

/// How a client command finds the agent's socket.
#[derive(Debug, Clone, Default, Args)]
pub struct SocketArgs {
    /// The agent's client socket.
    #[arg(long, value_name = "PATH", conflicts_with = "config")]
    pub socket: Option<PathBuf>,
    /// The agent's configuration files, to find its socket (api.socket, or <node.data_dir>/cohort.sock).
    #[arg(long = "config", short = 'c', value_name = "FILE")]
    pub config: Vec<PathBuf>,
}

/// `cohort status` arguments.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Print the agent's status as JSON (the same document as GET /status).
    #[arg(long)]
    pub json: bool,
    /// Where the agent is.
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// `cohort watch` arguments.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Also join this process group and print its views and deliveries.
    #[arg(long, value_name = "G")]
    pub group: Option<String>,
    /// Where the agent is.
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// `cohort send` arguments.
#[derive(Debug, Clone, Args)]
pub struct SendCmd {
    /// The process group to join and send to.
    #[arg(long, value_name = "G")]
    pub group: String,
    /// How many messages to send (at least 1).
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = positive_u64)]
    pub count: u64,
    /// Messages per second (default: as fast as flow control allows).
    #[arg(long, value_name = "R", value_parser = positive_u64)]
    pub rate: Option<u64>,
    /// Payload size in bytes: at least 16 (each message starts with its send time and a sequence number),
    /// at most limits.max_message_bytes.
    #[arg(
        long,
        value_name = "B",
        default_value_t = 64,
        value_parser = message_size
    )]
    pub size: usize,
    /// Use safe delivery (delivered once every member has it) instead of agreed delivery.
    #[arg(long)]
    pub safe: bool,
    /// Where the agent is.
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// The smallest `cohort send --size`: each message starts with its send time and a sequence number.
const MIN_SEND_SIZE: usize = 16;

/// Parses a positive integer flag value.
fn positive_u64(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("expected a positive integer".to_string()),
    }
}

/// Parses `--size`.
fn message_size(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= MIN_SEND_SIZE => Ok(n),
        _ => Err(format!("expected a number of bytes, at least {MIN_SEND_SIZE}")),
    }
}

/// `cohort fence ack` arguments.
#[derive(Debug, Clone, Args)]
pub struct AckArgs {
    /// The node id to acknowledge as fenced.
    #[arg(value_name = "NODE")]
    pub node: u32,
    /// Where the agent's operator socket is.
    #[command(flatten)]
    pub socket: OperatorSocketArgs,
}

/// A mistake of the user's (a bad flag, an unreadable input): exit code 2, one line.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct UserError(pub String);

/// Runs the `cohort` command with the process's arguments and returns its exit code.
pub fn main_entry() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_exit(&e),
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if e.downcast_ref::<SettingsError>().is_some()
                || e.downcast_ref::<UserError>().is_some()
                || e.downcast_ref::<crate::key_file::KeyFileError>().is_some()
                || e.downcast_ref::<crate::key_file::ConfiguredKeyError>().is_some()
            {
                eprintln!("error: {}", one_line(&e.to_string()));
                ExitCode::from(EXIT_USAGE)
            } else {
                eprintln!("error: {}", one_line(&format!("{e:#}")));
                ExitCode::from(EXIT_FAILURE)
            }
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Help and version go to stdout with exit code 0; a missing subcommand shows the help with code 2;
/// any other parse error becomes one line (its first paragraph and clap's tip, if any) with code 2.
fn clap_exit(e: &clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand => {
            let _ = e.print();
            ExitCode::from(EXIT_USAGE)
        }
        _ => {
            let text = e.render().to_string();
            let first: Vec<&str> = text.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
            let tip = text.lines().map(str::trim).find(|l| l.starts_with("tip:"));
            let mut line = first.join(" ");
            if let Some(tip) = tip {
                line = format!("{line}; {tip}");
            }
            eprintln!("{line} (see --help)");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Runs one parsed command.
///
/// # Errors
/// [`SettingsError`], [`UserError`] and [`crate::key_file::KeyFileError`] for the user's mistakes (exit
/// code 2), anything else for runtime
/// failures (exit code 1).
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Agent(args) => agent(&args),
        Command::Config { action: ConfigAction::Check(flags) } => {
            let loaded = flags.load()?;
            // The key file is checked as the agent would check it, before anything is printed: a bad key
            // is a configuration mistake like a bad value (exit code 2, one line).
            let rule = crate::key_file::OwnerRule::for_config_check();
            let node = &loaded.settings.node;
            let keys = crate::key_file::check_configured(&node.key_file, &node.accept_key_files, rule)?;
            print!("{}", settings_load::render_effective(&loaded));
            println!();
            for (name, info) in &keys.infos {
                println!("# {} ({name})", info.describe(rule));
            }
            print!("{}", crate::reload::compare_with_running(&loaded.settings, &keys));
            Ok(ExitCode::SUCCESS)
        }
        Command::GenerateDocs(args) => {
            let written = crate::manpages::write_all(&args.out)
                .map_err(|e| anyhow::anyhow!("cannot write the documentation: {e}"))?;
            println!("wrote {} files under {}", written.len(), args.out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Keygen(args) => keygen(&args),
        Command::Verify(args) => verify(&args),
        Command::Status(args) => {
            let socket = resolve_socket(&args.socket)?;
            block_on(crate::client_cli::status(&socket, args.json))
        }
        Command::Members(args) => {
            let socket = resolve_socket(&args)?;
            block_on(crate::client_cli::members(&socket))
        }
        Command::Watch(args) => {
            let socket = resolve_socket(&args.socket)?;
            block_on(crate::client_cli::watch(&socket, args.group))
        }
        Command::Send(args) => {
            if args.group.is_empty() {
                return Err(UserError("--group must name a process group, e.g. --group bench".into()).into());
            }
            let socket = resolve_socket(&args.socket)?;
            let send = crate::client_cli::SendArgs {
                group: args.group,
                count: args.count,
                rate: args.rate,
                size: args.size,
                safe: args.safe,
            };
            block_on(crate::client_cli::send(&socket, send))
        }
        Command::Fence { action: FenceAction::Ack(args) } => {
            let socket = resolve_operator_socket(&args.socket)?;
            block_on(crate::client_cli::fence_ack(&socket, args.node))
        }
        Command::Key { action } => {
            let (socket, op) = match action {
                KeyAction::Install(args) => {
                    // The agent runs elsewhere: it gets an absolute path.
                    let file = std::path::absolute(&args.file)
                        .map_err(|e| UserError(format!("key file {}: {e}", args.file.display())))?;
                    let path = file
                        .to_str()
                        .ok_or_else(|| UserError(format!("key file {}: not valid UTF-8", file.display())))?
                        .to_string();
                    (args.socket, KeyRequest::Install { path })
                }
                KeyAction::Use(args) => {
                    check_key_id(&args.id)?;
                    (args.socket, KeyRequest::Use { id: args.id })
                }
                KeyAction::Remove(args) => {
                    check_key_id(&args.id)?;
                    (args.socket, KeyRequest::Remove { id: args.id })
                }
                KeyAction::List(args) => (args.socket, KeyRequest::List),
            };
            let socket = resolve_operator_socket(&socket)?;
            block_on(crate::client_cli::keys(&socket, op))
        }
        Command::Lock { action } => lock(action),
        Command::Demo(args) => crate::demo::run(crate::demo::DemoOptions {
            nodes: args.nodes,
            policy: args.policy,
            speed: args.speed,
            color: args.color,
            keep: args.keep,
        }),
    }
}

/// `cohort lock ...`.
fn lock(action: LockAction) -> anyhow::Result<ExitCode> {
    match action {
        LockAction::Serve(args) => {
            if args.group.is_empty() {
                return Err(UserError("--group must name a process group, e.g. --group locks".into()).into());
            }
            let socket = resolve_socket(&args.socket)?;
            let control = args.control.unwrap_or_else(|| crate::lock::default_control_path(&socket));
            crate::telemetry::init("warn");
            block_on(crate::lock::serve(socket, control, args.group))
        }
        LockAction::Acquire(args) => {
            let req = crate::lock::acquire_request(&args.lock, &args.owner, args.shared, args.timeout_ms);
            let control = args.target.control_path()?;
            block_on(crate::lock::client_request(&control, req, args.target.json))
        }
        LockAction::Release(args) => {
            let req = serde_json::json!({"op": "release", "lock": args.lock, "owner": args.owner});
            let control = args.target.control_path()?;
            block_on(crate::lock::client_request(&control, req, args.target.json))
        }
        LockAction::Holders(args) => {
            let req = match &args.lock {
                Some(l) => serde_json::json!({"op": "holders", "lock": l}),
                None => serde_json::json!({"op": "holders"}),
            };
            let control = args.target.control_path()?;
            block_on(crate::lock::client_request(&control, req, args.target.json))
        }
        LockAction::Status(target) => {
            let control = target.control_path()?;
            block_on(crate::lock::client_request(&control, serde_json::json!({"op": "status"}), target.json))
        }
    }
}

/// `cohort agent`.
fn agent(args: &AgentArgs) -> anyhow::Result<ExitCode> {
    crate::supervisor::install_fail_stop();
    let flags = &args.settings;
    // Read (and remove, so fence agents do not inherit it) what the service manager passed, before any
    // thread starts.
    let service = crate::sd_notify::ServiceEnv::take_from_process().map_err(|e| UserError(e.to_string()))?;
    let load_options = LoadOptions::for_process(flags.config.clone(), flags.overrides());
    let loaded = settings_load::load(&load_options)?;
    // The key file before anything else, so that its mistake is the one line the operator sees; the
    // supervisor checks it again before it writes anything (`start_node` is also called in-process).
    let uid = crate::key_file::effective_uid();
    let node = &loaded.settings.node;
    let rule = crate::key_file::OwnerRule::Agent(uid);
    crate::key_file::check_configured(&node.key_file, &node.accept_key_files, rule)?;
    crate::telemetry::init_with(&loaded.settings.log.level, args.log_format);
    for (key, origin) in loaded.provenance.iter().filter(|(_, o)| o.as_str() != "default") {
        tracing::debug!(%key, %origin, "configuration value set outside the defaults");
    }
    tracing::info!(node = loaded.settings.node.id, cluster = %loaded.settings.cluster.name, "configuration loaded");
    let opts = crate::supervisor::AgentOptions { reload_from: Some(load_options), service };
    crate::supervisor::run_agent(loaded.settings, opts)?;
    Ok(ExitCode::SUCCESS)
}

/// `cohort keygen`.
fn keygen(args: &KeygenArgs) -> anyhow::Result<ExitCode> {
    let out = &args.out;
    // `symlink_metadata` so that a dangling symlink counts as "exists" too.
    if std::fs::symlink_metadata(out).is_ok() {
        if !args.force {
            return Err(UserError(format!(
                "{} already exists; pass --force to replace it (nodes still using the old key can no longer talk to this one)",
                out.display()
            ))
            .into());
        }
        std::fs::remove_file(out)
            .map_err(|e| anyhow::anyhow!("cannot remove the old key file {}: {e}", out.display()))?;
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            return Err(UserError(format!(
                "--out {}: the directory {} does not exist (create it first: mkdir -p {})",
                out.display(),
                parent.display(),
                parent.display()
            ))
            .into());
        }
    }
    crate::crypto::generate_key_file(out)?;
    println!(
        "wrote a new cluster key to {} (mode 0600); copy it to node.key_file on every node",
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// What `cohort verify` found.
#[derive(Debug)]
pub struct VerifyReport {
    /// Records read in total.
    pub records: usize,
    /// Logs read.
    pub logs: usize,
    /// What the checker saw.
    pub stats: CheckStats,
    /// Every violation, in the checker's order.
    pub violations: Vec<checker::Violation>,
    /// G13 was skipped (`--independent-clocks`).
    pub g13_skipped: bool,
    /// Files read (a rotated log is several files).
    pub files: usize,
    /// What the report says about the logs before the checks: rotated files read, histories that
    /// begin mid-way.
    pub notes: Vec<String>,
    /// Checks not decided because a history begins mid-way ([`Checker::undecided`]).
    pub undecided: Vec<String>,
}

impl VerifyReport {
    /// The report as printed: summary, violations, verdict.
    pub fn render(&self) -> String {
        let s = &self.stats;
        let mut out: String = self.notes.iter().map(|n| format!("{n}\n")).collect();
        out.push_str(&format!(
            "members: {}, views: {} ({} primary), sends: {}, deliveries: {}, stateful merges: {}, fences: {}, recoveries: {}\n",
            s.members, s.views, s.primary_views, s.sends, s.deliveries, s.stateful_merges, s.fences, s.recovered
        ));
        if !self.undecided.is_empty() {
            out.push_str(&format!(
                "not decided, because a history begins mid-way (checks that would conclude from records the rotated-away files may have held): {}\n",
                self.undecided.join("; ")
            ));
        }
        for v in &self.violations {
            out.push_str(&format!("VIOLATION {}: {}\n", v.guarantee, v.detail));
        }
        if self.violations.is_empty() {
            let mut which = if self.g13_skipped {
                "G1-G12 hold; G13 not checked: independent clocks".to_string()
            } else {
                "all safety guarantees hold".to_string()
            };
            if !self.undecided.is_empty() {
                which.push_str(" over the records kept; some checks not decided, see above");
            }
            let files =
                if self.files == self.logs { String::new() } else { format!(" in {} files", self.files) };
            out.push_str(&format!(
                "verdict: OK ({} records from {} logs{files}, {which})\n",
                self.records, self.logs
            ));
        } else {
            let n = self.violations.len();
            out.push_str(&format!("verdict: FAIL ({n} violation{})\n", if n == 1 { "" } else { "s" }));
        }
        out
    }
}

/// Reads and checks event logs written against one clock (every agent on one machine): G1–G13.
///
/// # Errors
/// A [`UserError`] naming the file (and line) that cannot be read or parsed.
pub fn verify_logs(paths: &[PathBuf]) -> Result<VerifyReport, UserError> {
    verify_logs_with(paths, false)
}

/// [`verify_logs`], skipping G13 when `independent_clocks` (logs gathered from several machines).
///
/// # Errors
/// As [`verify_logs`].
pub fn verify_logs_with(paths: &[PathBuf], independent_clocks: bool) -> Result<VerifyReport, UserError> {
    // One log per agent: every path names a live file (a directory its events.jsonl, a rotated file
    // `<live>.<n>` its live file), and each log is read once, its files oldest first.
    let mut lives: Vec<PathBuf> = Vec::new();
    for p in paths {
        let live = crate::event_log::live_path_of(p);
        if !lives.contains(&live) {
            lives.push(live);
        }
    }
    let mut checker = if independent_clocks { Checker::with_independent_clocks() } else { Checker::new() };
    let mut records: Vec<Record> = Vec::new();
    let mut notes = Vec::new();
    let mut files_read = 0;
    for live in &lives {
        let log = read_agent_log(live)?;
        files_read += log.files.len();
        if log.files.len() > 1 {
            let name =
                |p: &PathBuf| p.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            notes.push(format!(
                "{}: {} files read, oldest first: {} to {}",
                live.display(),
                log.files.len(),
                log.files.first().map(name).unwrap_or_default(),
                log.files.last().map(name).unwrap_or_default()
            ));
        }
        if let (Some((part, file)), Some(first)) = (&log.midway, log.records.first()) {
            checker.history_begins_midway(first);
            notes.push(format!(
                "{}: the history of node {} begins mid-way: its oldest file {} is log part {part} ({part} earlier \
                 file{} rotated away); the first record kept is [{},{}]'s `{}` at ts_ms {}",
                live.display(),
                first.node.0,
                file.display(),
                if *part == 1 { " was" } else { "s were" },
                first.node.0,
                first.epoch.0,
                serde_json::from_str::<serde_json::Value>(&first.to_json_line())
                    .ok()
                    .and_then(|v| v["event"].as_str().map(str::to_owned))
                    .unwrap_or_default(),
                first.ts_ms
            ));
        }
        records.extend(log.records);
    }
    let (violations, checker) = checker::check_all_keeping(&records, checker);
    Ok(VerifyReport {
        records: records.len(),
        logs: lives.len(),
        stats: stats_of(&records),
        violations,
        g13_skipped: independent_clocks,
        files: files_read,
        notes,
        undecided: checker.undecided(),
    })
}

/// [`verify_logs_with`] on texts already read: each `(name, text)` is one agent's whole event log (no
/// rotated files); `name` only labels its errors. The fuzz target of the event-log reader uses it.
///
/// # Errors
/// A [`UserError`] naming the log and line that cannot be parsed.
pub fn verify_texts(texts: &[(&str, &str)], independent_clocks: bool) -> Result<VerifyReport, UserError> {
    let mut records: Vec<Record> = Vec::new();
    for (name, text) in texts {
        let parsed = checker::parse_log(text)
            .map_err(|(line, msg)| UserError(format!("{name}:{line}: {}", one_line(&msg))))?;
        records.extend(parsed);
    }
    let checker = if independent_clocks { Checker::with_independent_clocks() } else { Checker::new() };
    let (violations, checker) = checker::check_all_keeping(&records, checker);
    Ok(VerifyReport {
        records: records.len(),
        logs: texts.len(),
        stats: stats_of(&records),
        violations,
        g13_skipped: independent_clocks,
        files: texts.len(),
        notes: Vec::new(),
        undecided: checker.undecided(),
    })
}

/// One agent's event log as read: its files oldest first, its records in order, and when its history
/// begins mid-way, the oldest file's `log_part` and path.
struct AgentLog {
    files: Vec<PathBuf>,
    records: Vec<Record>,
    midway: Option<(u64, PathBuf)>,
}

/// Reads the log whose live file is `live` with its rotated files, oldest first, and checks that the
/// files' parts follow one another (a file missing in the middle would hide records from checks that
/// assume an unbroken history, so it is refused; missing oldest files are a history that begins mid-way).
fn read_agent_log(live: &Path) -> Result<AgentLog, UserError> {
    let files = crate::event_log::log_files(live)
        .map_err(|e| UserError(format!("cannot read event log {}: {e}", live.display())))?;
    if files.is_empty() {
        return Err(UserError(format!(
            "cannot read event log {}: no such file, and no rotated file {}.<n> beside it",
            live.display(),
            live.display()
        )));
    }
    let mut records = Vec::new();
    let mut first: Option<(u64, PathBuf)> = None;
    let mut prev: Option<(u64, &PathBuf)> = None;
    for path in &files {
        let text = std::fs::read_to_string(path)
            .map_err(|e| UserError(format!("cannot read event log {}: {e}", path.display())))?;
        let parsed = checker::parse_log(&text)
            .map_err(|(line, msg)| UserError(format!("{}:{line}: {}", path.display(), one_line(&msg))))?;
        if parsed.is_empty() {
            continue;
        }
        let part = text
            .lines()
            .find(|l| !l.trim().is_empty())
            .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .and_then(|v| v.get(crate::event_log::LOG_PART_FIELD).and_then(serde_json::Value::as_u64))
            .unwrap_or(0);
        if let Some((p, older)) = prev {
            if part != p + 1 {
                return Err(UserError(format!(
                    "the files of event log {} do not follow one another: {} is log part {p} and {} is log part \
                     {part}; a file between them is missing (verify reads one unbroken history per agent)",
                    live.display(),
                    older.display(),
                    path.display()
                )));
            }
        }
        first.get_or_insert((part, path.clone()));
        prev = Some((part, path));
        records.extend(parsed);
    }
    let midway = first.filter(|(part, _)| *part > 0);
    Ok(AgentLog { files, records, midway })
}

/// The checker's counts over `records`, fed as [`checker::check_all`] feeds them (grouped by member, each
/// member's records in log order).
fn stats_of(records: &[Record]) -> CheckStats {
    let mut by_member: BTreeMap<Member, Vec<&Record>> = BTreeMap::new();
    for r in records {
        by_member.entry(r.member()).or_default().push(r);
    }
    let mut c = Checker::new();
    for r in by_member.values().flatten() {
        let _ = c.observe(r);
    }
    c.stats()
}

/// `cohort verify`.
fn verify(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let report = verify_logs_with(&args.logs, args.independent_clocks)?;
    print!("{}", report.render());
    Ok(if report.violations.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_FAILURE) })
}

/// The agent's socket: `--socket`; else the configuration given with `--config` (or, without it, the
/// system file or `COHORT__` variables if there are any); else `./cohort.sock` if it exists.
///
/// # Errors
/// A configuration error, or a [`UserError`] when nothing names a socket and `./cohort.sock` is absent.
pub fn resolve_socket(args: &SocketArgs) -> anyhow::Result<PathBuf> {
    if let Some(socket) = &args.socket {
        return Ok(socket.clone());
    }
    if !args.config.is_empty() || configured_elsewhere() {
        let loaded = settings_load::load(&LoadOptions::for_process(args.config.clone(), Vec::new()))?;
        return Ok(loaded.settings.socket_path());
    }
    let fallback = PathBuf::from(FALLBACK_SOCKET);
    if fallback.exists() {
        Ok(fallback)
    } else {
        Err(UserError(format!(
            "no agent socket at {FALLBACK_SOCKET}; pass --socket PATH or --config FILE (the agent's configuration)"
        ))
        .into())
    }
}

/// A key id as `cohort key list` shows it, or a usage error naming it.
fn check_key_id(id: &str) -> Result<(), UserError> {
    id.parse::<crate::crypto::KeyId>()
        .map(|_| ())
        .map_err(|e| UserError(format!("{e} (as `cohort key list` shows it)")))
}

/// The agent's operator socket: `--operator-socket`; else the configuration given with `--config` (or
/// the system file or `COHORT__` variables if there are any); else `./operator.sock` if it exists.
///
/// # Errors
/// A configuration error, or a [`UserError`] when nothing names the socket and `./operator.sock` is
/// absent.
pub fn resolve_operator_socket(args: &OperatorSocketArgs) -> anyhow::Result<PathBuf> {
    if let Some(socket) = &args.operator_socket {
        return Ok(socket.clone());
    }
    if !args.config.is_empty() || configured_elsewhere() {
        let loaded = settings_load::load(&LoadOptions::for_process(args.config.clone(), Vec::new()))?;
        return Ok(loaded.settings.operator_socket_path());
    }
    let fallback = PathBuf::from(FALLBACK_OPERATOR_SOCKET);
    if fallback.exists() {
        Ok(fallback)
    } else {
        Err(UserError(format!(
            "no operator socket at {FALLBACK_OPERATOR_SOCKET}; pass --operator-socket PATH or --config FILE (the agent's configuration)"
        ))
        .into())
    }
}

/// True when the system file or `COHORT__` variables configure an agent on this machine.
fn configured_elsewhere() -> bool {
    Path::new(settings_load::SYSTEM_FILE).exists()
        || settings_load::process_env()
            .iter()
            .any(|(k, _)| k.to_uppercase().starts_with(settings_load::ENV_PREFIX))
}

/// Runs a client command on a current-thread tokio runtime.
fn block_on(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    rt.block_on(fut)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_flag_key_is_a_flag_of_agent() {
        let cmd = Cli::command();
        let agent = cmd.find_subcommand("agent").expect("agent subcommand");
        for (flag, _) in FLAG_KEYS {
            let long = flag.trim_start_matches("--");
            assert!(agent.get_arguments().any(|a| a.get_long() == Some(long)), "{flag} missing");
        }
    }

    #[test]
    fn flags_become_overrides_of_their_keys() {
        let cli = Cli::try_parse_from(["cohort", "agent", "--node-id", "3", "--log-level", "debug"])
            .expect("parse");
        let Command::Agent(args) = cli.command else { panic!("not agent") };
        assert_eq!(
            args.settings.overrides(),
            vec![("node.id".to_string(), "3".to_string()), ("log.level".to_string(), "debug".to_string())]
        );
    }

    #[test]
    fn every_subcommand_help_has_examples() {
        fn walk(cmd: &clap::Command, path: &str) {
            let help = cmd.clone().render_long_help().to_string();
            assert!(help.contains("Examples:"), "`{path}` --help has no Examples section");
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        walk(&Cli::command(), "cohort");
    }
}
