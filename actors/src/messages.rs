//! Every message the actors exchange, grouped by receiver.
//!
//! Commands are imperative (`SendFrame`, `Fence`, `PersistDurable`), events are past tense
//! (`FrameReceived`, `FenceCompleted`), queries start with `Get`. Actors hold `Recipient<M>`s of these
//! messages, never addresses of concrete actor types, so each actor can be tested against probes.

use actix::prelude::*;
use cohort::msg::TransferToken;
use cohort::node::{NewEpochReason, SendError, Status};
use cohort::{Delivery, Durable, Epoch, Member, MsgId, NodeId, Notification, Record};
use std::collections::BTreeSet;

// ---------------------------------------------------------------------------------------------------
// TransportActor
// ---------------------------------------------------------------------------------------------------

/// Encrypt and send one datagram to a configured node.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct SendFrame {
    /// The destination.
    pub to: NodeId,
    /// The plaintext datagram produced by the core.
    pub bytes: Vec<u8>,
    /// The sending incarnation's epoch, sealed into the datagram's header for the receivers' replay
    /// windows. The transport never seals under an epoch below one it already used.
    pub epoch: Epoch,
}

/// A change to, or a look at, the transport's key ring (`cohort key install|use|remove|list`).
#[derive(Debug, Clone)]
pub enum KeyRingOp {
    /// Accept datagrams sealed under `key` from now on; `source` names its file for `cohort key list`.
    Install {
        /// The key, read and checked from its file by the caller.
        key: crate::crypto::ClusterKey,
        /// Where it came from.
        source: String,
    },
    /// Seal with this installed key from now on.
    Use(crate::crypto::KeyId),
    /// Stop accepting this installed key; refused for the primary key.
    Remove(crate::crypto::KeyId),
    /// Change nothing.
    List,
    /// The key steps of a configuration reload ([`crate::reload::KeySteps`]), applied together or not
    /// at all: install these keys as the configuration's, then seal with `primary` (if any), then
    /// remove these keys. A key already installed is not installed again; a key already gone is not
    /// removed again.
    Reload {
        /// Keys read and checked from the configured files, each with its file.
        install: Vec<(crate::crypto::ClusterKey, String)>,
        /// The new primary key.
        primary: Option<crate::crypto::KeyId>,
        /// Configuration keys no longer configured.
        remove: Vec<crate::crypto::KeyId>,
    },
}

/// Applies a [`KeyRingOp`] to the transport's key ring and answers with the installed keys after it,
/// or why it was refused (nothing changed then).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Vec<crate::crypto::KeyInfo>, crate::crypto::KeyRingError>")]
pub struct ChangeKeyRing(pub KeyRingOp);

/// Drop all traffic to and from these nodes (demos and tests without root).
#[derive(Message, Debug, Clone, Default)]
#[rtype(result = "()")]
pub struct SetLinkFilter {
    /// Nodes cut off from this agent.
    pub blocked: BTreeSet<NodeId>,
}

// ---------------------------------------------------------------------------------------------------
// MembershipActor
// ---------------------------------------------------------------------------------------------------

/// A configuration reload changed the protocol's timing: the core takes it from its next step
/// ([`cohort::Node::set_timing`]), and so does every later incarnation in this process. Answers the
/// core's refusal (a step too far for peers that still run the old timing), which changes nothing.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), cohort::ConfigError>")]
pub struct ApplyTiming {
    /// The new timing.
    pub timing: cohort::Timing,
}

/// An authenticated, decrypted datagram from a peer.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct FrameReceived {
    /// The node the datagram came from (by its source address).
    pub from: NodeId,
    /// The plaintext.
    pub bytes: Vec<u8>,
}

/// A local application joins a process group.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct JoinGroup {
    /// The group.
    pub group: String,
}

/// A local application leaves a process group.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct LeaveGroup {
    /// The group.
    pub group: String,
}

/// A local application multicasts.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<MsgId, SendError>")]
pub struct Multicast {
    /// The group.
    pub group: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// Agreed or safe.
    pub delivery: Delivery,
}

/// A local application's answer to a `ProvideState` request.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct ProvideState {
    /// The group.
    pub group: String,
    /// The joiner.
    pub joiner: Member,
    /// The transfer.
    pub token: TransferToken,
    /// The state.
    pub state: Vec<u8>,
}

/// A fence attempt finished (all levels tried, or one succeeded).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct FenceCompleted {
    /// The member.
    pub target: Member,
    /// True when a fence agent reported success.
    pub ok: bool,
    /// Which agent and what it said.
    pub detail: String,
}

/// An operator acknowledged a node as fenced (`cohort fence ack NODE`).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct AckFence {
    /// The node.
    pub node: NodeId,
}

/// Leave the cluster cleanly (shutdown).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct LeaveCluster;

/// The node's status.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Status")]
pub struct GetStatus;

// ---------------------------------------------------------------------------------------------------
// EpochRegistryActor
// ---------------------------------------------------------------------------------------------------

/// Start a new incarnation: epoch = max(on disk + 1, min_epoch), persisted (fsync'd) before the reply.
#[derive(Message, Debug, Clone)]
#[rtype(result = "std::io::Result<Durable>")]
pub struct OpenEpoch {
    /// The lowest acceptable epoch (from the cluster, after a `MovePast`).
    pub min_epoch: Epoch,
}

/// Read the durable state on disk as it is (for the epoch inquiry before a new epoch is opened).
#[derive(Message, Debug, Clone)]
#[rtype(result = "std::io::Result<Durable>")]
pub struct LoadDurable;

/// Persist the core's durable state; the reply comes after fsync.
#[derive(Message, Debug, Clone)]
#[rtype(result = "std::io::Result<()>")]
pub struct PersistDurable(pub Durable);

// ---------------------------------------------------------------------------------------------------
// FencingActor
// ---------------------------------------------------------------------------------------------------

/// Run the configured fence levels against a member's node.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Fence {
    /// The member to fence.
    pub target: Member,
    /// Why (`failed`, `stateful_merge`, `two_node`).
    pub reason: String,
}

/// Use these fence levels for every fence request started from now on (a configuration reload); a
/// request already running finishes with the levels it started with.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct ReplaceFenceLevels {
    /// The new levels, tried in order.
    pub levels: Vec<crate::settings::FenceLevel>,
}

// ---------------------------------------------------------------------------------------------------
// EventLogActor
// ---------------------------------------------------------------------------------------------------

/// Append one record to the event log (one JSON line, flushed).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct AppendRecord(pub Record);

/// Rotate the event log at a new size and keep a new number of files from the next line on (a reload of
/// `log.event_log_max_bytes` or `log.event_log_keep_files`).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct SetEventLogRotation(pub crate::event_log::Rotation);

// ---------------------------------------------------------------------------------------------------
// ClientApiActor
// ---------------------------------------------------------------------------------------------------

/// Something for the local applications.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct AppNotified(pub Notification);

/// The watchdog fired: every client is told to stop acting on its state.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct SelfFenced {
    /// Why.
    pub reason: String,
}

// ---------------------------------------------------------------------------------------------------
// ServiceManagerActor
// ---------------------------------------------------------------------------------------------------

/// The node is started: poll it for readiness, status and the watchdog.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct WatchNode(pub crate::service_manager::NodeLinks);

/// A configuration reload begins (`RELOADING=1`).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct NotifyReloading;

/// A configuration reload ended (`READY=1` and the summary as `STATUS=`).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct NotifyReloaded {
    /// What was applied and what needs a restart, in one line.
    pub summary: String,
}

/// The agent is leaving the cluster and will exit (`STOPPING=1`); nothing else is sent after it.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct NotifyStopping {
    /// Why, in one line.
    pub reason: String,
}

// ---------------------------------------------------------------------------------------------------
// NodeSupervisor
// ---------------------------------------------------------------------------------------------------

/// The core asked to start again under a new epoch (stateful merge resolution or a stale epoch).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct NewEpochRequested {
    /// The lowest acceptable epoch.
    pub min_epoch: Epoch,
    /// Why.
    pub reason: NewEpochReason,
}

/// A safety invariant broke or durable IO failed: fail-stop (log, exit non-zero).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct FatalError {
    /// What happened.
    pub detail: String,
}
