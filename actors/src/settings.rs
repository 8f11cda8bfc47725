//! The agent's configuration: typed sections with defaults equal to `config/default.toml`.
//!
//! Loading is layered (see [`crate::settings_load`]): built-in defaults, `/etc/cohort/cohort.toml`,
//! each `--config FILE`, `COHORT__SECTION__KEY` environment variables, then command-line flags.

use cohort::{FencingMode, MergePolicy, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `[cluster]`: name and node list.
    pub cluster: ClusterSection,
    /// `[node]`: this node.
    pub node: NodeSection,
    /// `[timing]`.
    pub timing: TimingSection,
    /// `[limits]`.
    pub limits: LimitsSection,
    /// `[quorum]`.
    pub quorum: QuorumSection,
    /// `[merge]`.
    pub merge: MergeSection,
    /// `[fencing]`.
    pub fencing: FencingSection,
    /// `[api]`: the local client socket.
    pub api: ApiSection,
    /// `[admin]`: the HTTP status and metrics endpoint.
    pub admin: AdminSection,
    /// `[log]`.
    pub log: LogSection,
    /// `[testing]`: what only test beds and demos turn on.
    pub testing: TestingSection,
}

/// `[cluster]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// Cluster name; datagrams of other clusters are dropped.
    pub name: String,
    /// Every node of the cluster.
    pub nodes: Vec<NodeEntry>,
}

/// One `[[cluster.nodes]]` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// Stable node id.
    pub id: u32,
    /// UDP address the node listens on.
    pub addr: SocketAddr,
    /// Quorum votes.
    #[serde(default = "one")]
    pub votes: u32,
}

fn one() -> u32 {
    1
}

/// `[node]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// This node's id (must be in the node list).
    pub id: u32,
    /// Data directory: epoch, registry, lock, event log.
    pub data_dir: PathBuf,
    /// Event log path; empty means `<data_dir>/events.jsonl`.
    #[serde(default)]
    pub event_log: Option<PathBuf>,
    /// Cluster key file made by `cohort keygen` (mode 0600 or 0400): the primary key, which seals.
    pub key_file: PathBuf,
    /// Further key files whose keys are accepted on receipt, never used to seal (key rotation by file).
    #[serde(default)]
    pub accept_key_files: Vec<PathBuf>,
}

/// `[timing]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimingSection {
    /// Interval between heartbeats.
    pub heartbeat_interval_ms: u64,
    /// Silence after which a member is suspected.
    pub failure_timeout_ms: u64,
    /// Interval between probes to nodes outside the view.
    pub discovery_interval_ms: u64,
    /// Per-phase timeout of a view change.
    pub view_change_timeout_ms: u64,
    /// Retransmission interval.
    pub retransmit_interval_ms: u64,
}

/// `[limits]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Largest datagram sent.
    pub max_datagram_bytes: usize,
    /// Largest application message.
    pub max_message_bytes: usize,
    /// Sequencer window in messages.
    pub window_msgs: usize,
    /// Sequencer window in bytes.
    pub window_bytes: usize,
    /// Send queue in messages.
    pub send_queue_msgs: usize,
    /// Send queue in bytes.
    pub send_queue_bytes: usize,
    /// Largest group state in a state transfer.
    pub max_state_bytes: usize,
    /// Events queued for one client before it is disconnected as too slow.
    pub client_queue_msgs: usize,
    /// Bytes of events queued for one client before it is disconnected as too slow.
    pub client_queue_bytes: usize,
    /// Most clients connected at once.
    pub max_clients: usize,
    /// How long a new connection may take to say hello before it is closed.
    pub hello_timeout_ms: u64,
    /// Most process groups one client may join.
    pub max_groups_per_client: usize,
    /// Bytes of large client frames (over 64 KiB) being read at once, over all connections.
    pub client_frames_total_bytes: usize,
}

/// `[quorum]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuorumSection {
    /// Expected votes; 0 means the sum of the node list's votes.
    pub expected_votes: u32,
    /// Two-node mode.
    pub two_node: bool,
    /// Withhold quorum until all nodes were seen together once.
    pub wait_for_all: bool,
}

/// `[merge]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeSection {
    /// `fence`, `restart`, `reset` or `wait`.
    pub policy: MergePolicy,
}

/// What the agent does when its own watchdog fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchdogAction {
    /// Tell the clients to stop and stay up.
    Notify,
    /// Tell the clients, then exit non-zero.
    Exit,
}

/// `[fencing]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FencingSection {
    /// `agent` or `watchdog`.
    pub mode: FencingMode,
    /// A node back with a higher epoch counts as fenced.
    pub restart_counts_as_fenced: bool,
    /// Self-fence after this long outside a primary view (0: off).
    pub self_fence_after_ms: u64,
    /// Count a silent removed member as fenced after this long (watchdog mode).
    pub watchdog_wait_ms: u64,
    /// `notify` or `exit`.
    pub watchdog: WatchdogAction,
    /// Fence levels, tried in order; within a level every agent must succeed.
    #[serde(default)]
    pub levels: Vec<FenceLevel>,
}

/// One fence level.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FenceLevel {
    /// The agents of this level.
    pub agents: Vec<FenceAgent>,
}

/// One fence agent invocation, in the conventions of the `fence_*` family.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FenceAgent {
    /// A name for logs.
    pub name: String,
    /// The program.
    pub command: PathBuf,
    /// Arguments; `{node}`, `{plug}`, `{epoch}` and `{action}` are substituted.
    #[serde(default)]
    pub args: Vec<String>,
    /// Options written to the agent's standard input as `key=value` lines (the `fence_*` convention);
    /// same substitutions. Credentials belong in a file named here (e.g. `password_script=...`).
    #[serde(default)]
    pub stdin: BTreeMap<String, String>,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The action passed as `{action}` (usually `off` or `reboot`).
    #[serde(default = "default_action")]
    pub action: String,
    /// Plug or port per node id; `{plug}` falls back to the node id.
    #[serde(default)]
    pub plugs: BTreeMap<String, String>,
    /// Kill the agent and count a failure after this long.
    pub timeout_ms: u64,
    /// Extra attempts after a failure.
    #[serde(default)]
    pub retries: u32,
}

fn default_action() -> String {
    "off".to_string()
}

/// `[api]`: the client socket for applications and the operator socket (see
/// [`crate::client_access`] for who may use which).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// Client socket path; empty means `<data_dir>/cohort.sock`.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// Client socket file mode (octal in TOML as a string, e.g. "0660").
    pub socket_mode: String,
    /// Uids allowed on the client socket (`SO_PEERCRED`); with `allowed_gids` also empty, every peer the
    /// file mode lets connect.
    pub allowed_uids: Vec<u32>,
    /// Primary gids allowed on the client socket.
    pub allowed_gids: Vec<u32>,
    /// Operator socket path; empty means `operator.sock` in the client socket's directory.
    #[serde(default)]
    pub operator_socket: Option<PathBuf>,
    /// Operator socket file mode (e.g. "0600").
    pub operator_socket_mode: String,
    /// Uids allowed on the operator socket besides root and the agent's own uid.
    pub operator_allowed_uids: Vec<u32>,
    /// Primary gids allowed on the operator socket.
    pub operator_allowed_gids: Vec<u32>,
}

/// `[admin]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// HTTP listen address for `/status` and `/metrics`; empty disables it.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
}

/// `[log]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// Diagnostic log level filter (`info`, `debug`, `cohort=debug,...`) for stderr; the event log is
    /// separate and always on.
    pub level: String,
    /// Rotate the event log before a line would take it past this size (bytes); 0 never rotates.
    pub event_log_max_bytes: u64,
    /// Rotated event log files kept besides the live one (`events.jsonl.1` … `.<n>`).
    pub event_log_keep_files: u32,
}

/// `[testing]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestingSection {
    /// Serve `SetLinkFilter` on the operator socket (test beds and `cohort demo` cut links with it).
    pub link_filter: bool,
}

/// The operator socket's default path: `operator.sock` in the client socket's directory.
pub fn operator_socket_beside(client_socket: &std::path::Path) -> PathBuf {
    client_socket.parent().unwrap_or_else(|| std::path::Path::new(".")).join("operator.sock")
}

impl Settings {
    /// The event log path.
    pub fn event_log_path(&self) -> PathBuf {
        self.node.event_log.clone().unwrap_or_else(|| self.node.data_dir.join("events.jsonl"))
    }

    /// How the event log is rotated (`log.event_log_max_bytes`, `log.event_log_keep_files`).
    pub fn event_log_rotation(&self) -> crate::event_log::Rotation {
        crate::event_log::Rotation {
            max_bytes: self.log.event_log_max_bytes,
            keep_files: self.log.event_log_keep_files,
        }
    }

    /// The client socket path.
    pub fn socket_path(&self) -> PathBuf {
        self.api.socket.clone().unwrap_or_else(|| self.node.data_dir.join("cohort.sock"))
    }

    /// The operator socket path.
    pub fn operator_socket_path(&self) -> PathBuf {
        self.api.operator_socket.clone().unwrap_or_else(|| operator_socket_beside(&self.socket_path()))
    }

    /// The node id.
    pub fn node_id(&self) -> NodeId {
        NodeId(self.node.id)
    }

    /// The address of a node, if configured.
    pub fn addr_of(&self, node: NodeId) -> Option<SocketAddr> {
        self.cluster.nodes.iter().find(|n| n.id == node.0).map(|n| n.addr)
    }

    /// The core's configuration.
    pub fn core_config(&self) -> cohort::Config {
        let ids: Vec<u32> = self.cluster.nodes.iter().map(|n| n.id).collect();
        let mut c = cohort::Config::new(&self.cluster.name, &ids);
        for (spec, entry) in c.nodes.iter_mut().zip(&self.cluster.nodes) {
            spec.votes = entry.votes;
        }
        c.heartbeat_interval_ms = self.timing.heartbeat_interval_ms;
        c.failure_timeout_ms = self.timing.failure_timeout_ms;
        c.discovery_interval_ms = self.timing.discovery_interval_ms;
        c.view_change_timeout_ms = self.timing.view_change_timeout_ms;
        c.retransmit_interval_ms = self.timing.retransmit_interval_ms;
        c.max_datagram_bytes = self.limits.max_datagram_bytes;
        c.max_message_bytes = self.limits.max_message_bytes;
        c.window_msgs = self.limits.window_msgs;
        c.window_bytes = self.limits.window_bytes;
        c.send_queue_msgs = self.limits.send_queue_msgs;
        c.send_queue_bytes = self.limits.send_queue_bytes;
        c.max_state_bytes = self.limits.max_state_bytes;
        c.quorum.expected_votes = (self.quorum.expected_votes > 0).then_some(self.quorum.expected_votes);
        c.quorum.two_node = self.quorum.two_node;
        c.quorum.wait_for_all = self.quorum.wait_for_all;
        c.merge_policy = self.merge.policy;
        c.fencing = self.fencing.mode;
        c.restart_counts_as_fenced = self.fencing.restart_counts_as_fenced;
        c.self_fence_after_ms = self.fencing.self_fence_after_ms;
        c.watchdog_wait_ms = self.fencing.watchdog_wait_ms;
        c
    }
}
