//! The core's configuration: timing, bounds, quorum, merge policy and fencing.
//!
//! These are plain values; the agent fills them from its layered configuration files and validates them
//! there with messages that name the bad key. [`Config::validate`] checks the relations between values that
//! the protocol relies on.

use crate::types::NodeId;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// One configured node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// The node's id.
    pub id: NodeId,
    /// Its quorum votes (usually 1).
    pub votes: u32,
}

/// Quorum options, in the spirit of corosync's votequorum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct QuorumConfig {
    /// Expected votes; `None` means the sum of the configured nodes' votes.
    pub expected_votes: Option<u32>,
    /// Two-node mode: with exactly two nodes, one vote is quorate on both sides and the fence race decides.
    pub two_node: bool,
    /// Quorum is withheld until all configured nodes have been seen in one view once.
    pub wait_for_all: bool,
}

/// What to do with a stateful merge (a removed member that comes back with its old epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergePolicy {
    /// Request fencing of the stale member.
    Fence,
    /// Tell the stale member to restart its agent with a new epoch.
    Restart,
    /// Tell the stale member to drop its state in place and rejoin with a new epoch.
    Reset,
    /// Keep it refused and visible until an operator acts.
    Wait,
}

impl MergePolicy {
    /// The name used in configuration and in the event log.
    pub fn name(self) -> &'static str {
        match self {
            MergePolicy::Fence => "fence",
            MergePolicy::Restart => "restart",
            MergePolicy::Reset => "reset",
            MergePolicy::Wait => "wait",
        }
    }
}

/// How failed members are fenced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FencingMode {
    /// Fence agents run by the host; operator acknowledgement also counts.
    Agent,
    /// No fence device: a member counts as fenced once `watchdog_wait_ms` passed since it was last heard.
    Watchdog,
}

/// The core's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Cluster name; datagrams of another cluster are dropped.
    pub cluster: String,
    /// The configured nodes.
    pub nodes: Vec<NodeSpec>,
    /// Interval between heartbeats to view members.
    pub heartbeat_interval_ms: u64,
    /// Silence after which a view member is suspected.
    pub failure_timeout_ms: u64,
    /// Interval between probes to configured nodes outside the view.
    pub discovery_interval_ms: u64,
    /// How long a coordinator waits for answers in one phase of a view change before retrying without the
    /// silent members.
    pub view_change_timeout_ms: u64,
    /// Interval for retransmissions (unordered data, negative acknowledgements, state chunks).
    pub retransmit_interval_ms: u64,
    /// Largest datagram the core emits; bigger packets are fragmented.
    pub max_datagram_bytes: usize,
    /// Largest application message.
    pub max_message_bytes: usize,
    /// Most messages ordered but not yet stable in a view (the sequencer's window).
    pub window_msgs: usize,
    /// Most payload bytes ordered but not yet stable in a view.
    pub window_bytes: usize,
    /// Most messages a member has queued or in flight before `multicast` pushes back.
    pub send_queue_msgs: usize,
    /// Most payload bytes a member has queued or in flight before `multicast` pushes back.
    pub send_queue_bytes: usize,
    /// Largest group state accepted in a state transfer.
    pub max_state_bytes: usize,
    /// Quorum options.
    pub quorum: QuorumConfig,
    /// Stateful-merge policy.
    pub merge_policy: MergePolicy,
    /// Fencing mode.
    pub fencing: FencingMode,
    /// A node that comes back with a higher epoch counts as fenced.
    pub restart_counts_as_fenced: bool,
    /// A member outside any primary view for this long self-fences (0 disables the watchdog).
    pub self_fence_after_ms: u64,
    /// The primary side counts a silent removed member as fenced after this long (watchdog mode).
    pub watchdog_wait_ms: u64,
}

/// The protocol's timing: the part of the configuration a running node can change (a reload of the
/// agent's configuration, [`crate::Node::set_timing`]), one step at a time ([`Timing::check_step`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    /// [`Config::heartbeat_interval_ms`].
    pub heartbeat_interval_ms: u64,
    /// [`Config::failure_timeout_ms`].
    pub failure_timeout_ms: u64,
    /// [`Config::discovery_interval_ms`].
    pub discovery_interval_ms: u64,
    /// [`Config::view_change_timeout_ms`].
    pub view_change_timeout_ms: u64,
    /// [`Config::retransmit_interval_ms`].
    pub retransmit_interval_ms: u64,
}

impl Timing {
    /// Checks that a running node may move from `running` to this timing in one step, while its peers
    /// still run with `running` (a cluster is reloaded node by node):
    /// - its heartbeats must still arrive twice within the failure timeout the peers run with
    ///   (`heartbeat_interval_ms` at most half the running `failure_timeout_ms`), or they suspect it;
    /// - it must still hear two of the peers' heartbeats within its own failure timeout
    ///   (`failure_timeout_ms` at least twice the running `heartbeat_interval_ms`), or it suspects them;
    /// - under watchdog fencing its failure timeout must not grow: a member cut off from the primary
    ///   side self-fences a failure timeout plus `self_fence_after_ms` after it last heard a quorum, and
    ///   the primary side's `watchdog_wait_ms` was chosen for the running value.
    ///
    /// A bigger change is made in steps, each applied on every node before the next.
    pub fn check_step(&self, running: &Timing, fencing: FencingMode) -> Result<(), ConfigError> {
        if 2 * self.heartbeat_interval_ms > running.failure_timeout_ms {
            return Err(ConfigError::Invalid {
                key: "heartbeat_interval_ms",
                value: self.heartbeat_interval_ms.to_string(),
                expected: "at most half the running failure_timeout_ms in one step (peers not yet \
                           reloaded would suspect this node); change it in steps",
            });
        }
        if self.failure_timeout_ms < 2 * running.heartbeat_interval_ms {
            return Err(ConfigError::Invalid {
                key: "failure_timeout_ms",
                value: self.failure_timeout_ms.to_string(),
                expected: "at least twice the running heartbeat_interval_ms in one step (this node \
                           would suspect peers not yet reloaded); change it in steps",
            });
        }
        if fencing == FencingMode::Watchdog && self.failure_timeout_ms > running.failure_timeout_ms {
            return Err(ConfigError::Invalid {
                key: "failure_timeout_ms",
                value: self.failure_timeout_ms.to_string(),
                expected: "not above the running value under watchdog fencing (it would self-fence \
                           later than the others' watchdog_wait_ms assumes); restart to raise it",
            });
        }
        Ok(())
    }
}

/// A configuration whose values contradict each other.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A value is out of its allowed range.
    #[error("{key} = {value}: {expected}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// The value found.
        value: String,
        /// What is expected.
        expected: &'static str,
    },
}

impl Config {
    /// A configuration with the defaults of `config/default.toml` for the given nodes (one vote each).
    pub fn new(cluster: &str, nodes: &[u32]) -> Config {
        Config {
            cluster: cluster.to_string(),
            nodes: nodes.iter().map(|&n| NodeSpec { id: NodeId(n), votes: 1 }).collect(),
            heartbeat_interval_ms: 100,
            failure_timeout_ms: 1000,
            discovery_interval_ms: 500,
            view_change_timeout_ms: 400,
            retransmit_interval_ms: 50,
            max_datagram_bytes: 60_000,
            max_message_bytes: 1 << 20,
            window_msgs: 1024,
            window_bytes: 16 << 20,
            send_queue_msgs: 1024,
            send_queue_bytes: 8 << 20,
            max_state_bytes: 64 << 20,
            quorum: QuorumConfig::default(),
            merge_policy: MergePolicy::Fence,
            fencing: FencingMode::Agent,
            restart_counts_as_fenced: true,
            self_fence_after_ms: 0,
            watchdog_wait_ms: 0,
        }
    }

    /// Checks the relations the protocol relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn bad(key: &'static str, value: impl ToString, expected: &'static str) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid { key, value: value.to_string(), expected })
        }
        if self.nodes.is_empty() {
            return bad("nodes", "[]", "at least one node");
        }
        let mut ids: Vec<_> = self.nodes.iter().map(|n| n.id).collect();
        ids.sort();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return bad("nodes", "duplicate id", "each node id once");
        }
        if self.heartbeat_interval_ms == 0 {
            return bad("heartbeat_interval_ms", 0, "a positive number of milliseconds");
        }
        if self.failure_timeout_ms < 2 * self.heartbeat_interval_ms {
            return bad(
                "failure_timeout_ms",
                self.failure_timeout_ms,
                "at least twice heartbeat_interval_ms",
            );
        }
        if self.discovery_interval_ms == 0 {
            return bad("discovery_interval_ms", 0, "a positive number of milliseconds");
        }
        if self.view_change_timeout_ms == 0 {
            return bad("view_change_timeout_ms", 0, "a positive number of milliseconds");
        }
        if self.retransmit_interval_ms == 0 {
            return bad("retransmit_interval_ms", 0, "a positive number of milliseconds");
        }
        if self.max_datagram_bytes < 1024 || self.max_datagram_bytes > 65_000 {
            return bad("max_datagram_bytes", self.max_datagram_bytes, "between 1024 and 65000");
        }
        if self.window_msgs == 0 || self.send_queue_msgs == 0 {
            return bad("window_msgs", self.window_msgs, "a positive number of messages");
        }
        if self.max_message_bytes > self.window_bytes || self.max_message_bytes > self.send_queue_bytes {
            return bad(
                "max_message_bytes",
                self.max_message_bytes,
                "at most window_bytes and send_queue_bytes",
            );
        }
        if self.quorum.two_node && self.nodes.len() != 2 {
            return bad("quorum.two_node", true, "exactly two configured nodes");
        }
        if self.fencing == FencingMode::Watchdog {
            if self.self_fence_after_ms == 0 {
                return bad("self_fence_after_ms", 0, "a positive deadline when fencing = \"watchdog\"");
            }
            if self.watchdog_wait_ms < 2 * self.self_fence_after_ms {
                return bad("watchdog_wait_ms", self.watchdog_wait_ms, "at least twice self_fence_after_ms");
            }
        }
        Ok(())
    }

    /// The timing part of this configuration.
    pub fn timing(&self) -> Timing {
        Timing {
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            failure_timeout_ms: self.failure_timeout_ms,
            discovery_interval_ms: self.discovery_interval_ms,
            view_change_timeout_ms: self.view_change_timeout_ms,
            retransmit_interval_ms: self.retransmit_interval_ms,
        }
    }

    /// This configuration with `timing` instead of its own, validated as a whole.
    pub fn with_timing(&self, timing: Timing) -> Result<Config, ConfigError> {
        let mut c = self.clone();
        c.heartbeat_interval_ms = timing.heartbeat_interval_ms;
        c.failure_timeout_ms = timing.failure_timeout_ms;
        c.discovery_interval_ms = timing.discovery_interval_ms;
        c.view_change_timeout_ms = timing.view_change_timeout_ms;
        c.retransmit_interval_ms = timing.retransmit_interval_ms;
        c.validate()?;
        Ok(c)
    }

    /// The votes of `node`, 0 when it is not configured.
    pub fn votes_of(&self, node: NodeId) -> u32 {
        self.nodes.iter().find(|n| n.id == node).map_or(0, |n| n.votes)
    }

    /// True when `node` is in the configured node list.
    pub fn is_configured(&self, node: NodeId) -> bool {
        self.nodes.iter().any(|n| n.id == node)
    }
}
