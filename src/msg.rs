//! The protocol's wire messages (the `body` of a [`crate::wire::Envelope`]).
//!
//! Every message names the view it belongs to where that matters, so a message from an old view can
//! never be taken for one of the current view. See `docs/PROTOCOL.md` for the role of each message and
//! the guarantee it protects.

use crate::record::FenceMethod;
use crate::registry::Registry;
use crate::types::{Delivery, Epoch, Member, MsgId, View, ViewId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A protocol message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Body {
    /// Liveness and discovery, to view members every heartbeat interval and to every other configured
    /// node every discovery interval.
    Heartbeat(Heartbeat),
    /// View change phase 1: the coordinator asks the proposed members to stop and report their state.
    Prepare {
        /// The ballot, which is also the id the new view will have.
        ballot: ViewId,
        /// The proposed members, sorted.
        members: Vec<Member>,
    },
    /// A member's answer to `Prepare`: it promises to ignore lower ballots and reports its flush state.
    Promise {
        /// The ballot answered.
        ballot: ViewId,
        /// The member's state.
        state: Box<FlushState>,
    },
    /// A member refuses a ballot.
    Reject {
        /// The ballot refused.
        ballot: ViewId,
        /// Why.
        reason: RejectReason,
    },
    /// View change phase 2: the coordinator's decided install; members fetch what they miss of the cut.
    Accept {
        /// The ballot.
        ballot: ViewId,
        /// What to install.
        install: Box<Install>,
    },
    /// The member accepted the install and holds every message up to its cut.
    Accepted {
        /// The ballot.
        ballot: ViewId,
    },
    /// View change phase 3: install the accepted view.
    Commit {
        /// The ballot (the view id).
        ballot: ViewId,
    },
    /// The member installed the view.
    Installed {
        /// The view id.
        view: ViewId,
    },
    /// Messages from a member to its view's sequencer.
    Data {
        /// The view.
        view: ViewId,
        /// The messages, in the sender's order.
        msgs: Vec<DataMsg>,
    },
    /// Ordered messages from the sequencer to the members (or retransmitted by a holder).
    Ordered {
        /// The view.
        view: ViewId,
        /// The messages, by increasing sequence number.
        msgs: Vec<OrderedMsg>,
        /// Every member has received everything up to here.
        stable: u64,
        /// The highest sequence number ordered so far.
        ordered: u64,
    },
    /// A member's cumulative acknowledgement to the sequencer.
    Ack {
        /// The view.
        view: ViewId,
        /// The member holds every message up to here.
        received: u64,
    },
    /// A request to retransmit ordered messages `from..=to` of `view`.
    Nak {
        /// The view.
        view: ViewId,
        /// First missing sequence number.
        from: u64,
        /// Last missing sequence number.
        to: u64,
    },
    /// A group state for a joiner.
    State {
        /// The group.
        group: String,
        /// The joiner.
        joiner: Member,
        /// Identifies the transfer (the point in the total order it is taken at).
        token: TransferToken,
        /// The state bytes.
        #[serde(with = "serde_bytes")]
        state: Vec<u8>,
    },
    /// The joiner applied the state.
    StateAck {
        /// The group.
        group: String,
        /// The transfer.
        token: TransferToken,
    },
    /// The member is leaving cleanly.
    Leave,
    /// The receiver was removed from the primary view and must not come back with this epoch.
    Removed {
        /// The primary view that refused it.
        view: ViewId,
        /// The removed member (the receiver may have restarted since).
        member: Member,
        /// What the receiver must do.
        action: RemovedAction,
    },
    /// The receiver's epoch is below what the cluster has seen: restart with at least `min_epoch`.
    MovePast {
        /// The stale member.
        member: Member,
        /// The lowest acceptable epoch.
        min_epoch: Epoch,
    },
    /// The receiver's `Leave` is on the sender's disk: the sender and every view it forms or joins
    /// record the receiver as left, never as failed (L6). The leaver retransmits its `Leave` until every
    /// member of its view acknowledged it or it sees a view without itself.
    LeaveAck,
    /// Sent under epoch 0 by a node about to start a new incarnation (`src/inquiry.rs`): which epochs
    /// of my node have you seen?
    EpochQuery {
        /// Echoed in the answer.
        nonce: u64,
    },
    /// The answer: the highest epoch the sender knows for the querying node.
    EpochAnswer {
        /// The query's nonce.
        nonce: u64,
        /// The highest epoch known for the querying node (0 if none).
        highest: Epoch,
        /// The highest view sequence number the sender has seen: a node whose data directory lost its
        /// own must not reuse a view id (G1).
        #[serde(default)]
        max_view_seq: u64,
        /// The sender's data directory never held an epoch and it runs no incarnation: it knows nothing
        /// of any node. Answers that are all fresh are what the first start of a cluster looks like.
        #[serde(default)]
        fresh: bool,
        /// Epochs of the querying node that the sender knows left cleanly (their `Leave` is on its
        /// disk). A data directory wiped or restored from a backup lost its own record of a clean
        /// leave; the new incarnation learns it back, and reports it, so the leave is not taken for a
        /// failure (L6).
        #[serde(default)]
        left: Vec<Epoch>,
        /// The highest epoch of the querying node the sender saw in use (in a view, its registry, a
        /// heartbeat, a leave), not only claimed: above the querier's data directory, it shows that
        /// directory lost what an incarnation learned (`Durable::catching_up`).
        #[serde(default)]
        ran: Epoch,
    },
    /// Sent under epoch 0 by a node that decided the epoch of its new incarnation: record that my node
    /// may run under `epoch` (durably, before answering). The epoch is used only once a strict majority
    /// of the configured nodes recorded it, so every later inquiry's majority hears of it (G12).
    EpochClaim {
        /// Identifies the claiming inquiry: a retransmitted claim is granted again.
        nonce: u64,
        /// The epoch claimed.
        epoch: Epoch,
        /// The view sequence number the claimed incarnation starts above ([`crate::node::Reservation`]).
        #[serde(default)]
        view_seq_floor: u64,
    },
    /// The answer to an `EpochClaim`.
    EpochClaimAnswer {
        /// The claim's nonce.
        nonce: u64,
        /// The claim's epoch.
        epoch: Epoch,
        /// The claim is on the sender's disk. False when the sender knows an epoch of the node at or
        /// above it that this claim did not reserve: the claimer must claim above `highest`.
        granted: bool,
        /// The highest epoch the sender knows for the claiming node.
        highest: Epoch,
    },
}

/// A heartbeat's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The sender's current view.
    pub view: Option<ViewId>,
    /// True if that view is primary.
    pub primary: bool,
    /// The sender holds every ordered message of `view` up to here.
    pub received: u64,
    /// Sequencer only: the highest sequence number ordered.
    pub ordered: u64,
    /// Sequencer only: the stable point.
    pub stable: u64,
    /// The sender is leaving cleanly.
    pub leaving: bool,
    /// The sender knows it was removed.
    pub removed: bool,
    /// The sender is frozen by a view change (it promised or accepted a ballot not yet installed).
    #[serde(default)]
    pub frozen: bool,
    /// Non-zero after the sender's own scheduling stalled: a nonce it asks every receiver to echo
    /// (`echo`) so that it learns, from an answer sent after the stall, where its view stands (G13).
    #[serde(default)]
    pub probe: u64,
    /// The `probe` nonce of the receiver this heartbeat answers; zero in ordinary heartbeats.
    #[serde(default)]
    pub echo: u64,
}

/// Why a ballot is refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectReason {
    /// The member promised a higher ballot; it has seen view sequence numbers up to `max_seq`.
    Outdated {
        /// The highest ballot it promised.
        promised: ViewId,
    },
    /// The proposal contains members this member's registry does not admit.
    Inadmissible {
        /// Removed members coming back (stateful merges).
        removed: Vec<Member>,
        /// Members with stale epochs.
        stale: Vec<Member>,
    },
    /// The proposal leaves out members of this member's primary view that it still hears: a join or
    /// a merge only adds members, and a member leaves a primary view only by not being heard for the
    /// failure timeout by the members that form the next view, by leaving, or by being refused (L5).
    Drops {
        /// The members left out that it hears.
        heard: Vec<Member>,
    },
}

/// What a removed member is told to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemovedAction {
    /// Wait: fencing is on its way.
    AwaitFence,
    /// Restart the agent with a new epoch.
    Restart,
    /// Drop the state in place and rejoin with a new epoch.
    Reset,
    /// Stay refused until an operator acts.
    Wait,
}

/// A member's state as reported in a `Promise`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlushState {
    /// The member's current view.
    pub view: Option<View>,
    /// The last primary view the member installed.
    pub last_primary: Option<View>,
    /// The member's registry.
    pub registry: Registry,
    /// It holds every ordered message of `view` up to here.
    pub received: u64,
    /// It delivered up to here.
    pub delivered: u64,
    /// The highest stable point it knows.
    pub stable: u64,
    /// Sequence numbers of safe messages it holds above `stable`.
    pub safe_above_stable: Vec<u64>,
    /// An install it accepted but did not install yet.
    pub accepted: Option<Install>,
    /// The highest view sequence number it has seen.
    pub max_seq: u64,
    /// It has been in one view with every configured node (for `wait_for_all`).
    pub seen_all: bool,
    /// It is leaving cleanly.
    pub leaving: bool,
    /// Members it knows left cleanly (their `Leave` reached it, or its own node's earlier incarnation
    /// left): a coordinator records them as left, not failed, when the new view removes them (L6).
    #[serde(default)]
    pub left: Vec<Member>,
    /// Its position in the primary history: the last primary view it was in and how far it delivered
    /// there (for its current view if that is primary, the cut will move it further).
    pub history: (Option<ViewId>, u64),
    /// An install an earlier incarnation of its node accepted and persisted, whose fate that incarnation
    /// took with it (see `Durable::accepted`).
    #[serde(default)]
    pub inherited: Option<AcceptedInstall>,
    /// The member's data directory lost what it knew and has not installed a primary view since
    /// ([`crate::node::Durable::catching_up`]): it counts for no quorum.
    #[serde(default)]
    pub catching_up: bool,
    /// The newest primary view a peer's heartbeat showed this member (installed by someone, maybe by
    /// members that have all left since): an install older than it is history, like one older than a
    /// primary view a participant installed.
    #[serde(default)]
    pub heard_primary: Option<ViewId>,
}

/// What a node persists of an install it accepted (see `Durable::accepted`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedInstall {
    /// The install's view.
    pub view: ViewId,
    /// Its registry: the removals and epochs the install would make.
    pub registry: Registry,
    /// The install's members: a commit needed every one of them to accept it.
    #[serde(default)]
    pub members: Vec<Member>,
}

impl AcceptedInstall {
    /// True when the promise `s` of `from` makes assuming this install unnecessary: `from`'s node ran a
    /// member of the install (that member or a later incarnation) and holds no acceptance of it, neither
    /// in memory nor inherited. Either that member never accepted it (a member persists its acceptance
    /// before sending it, and a commit needs every member's), so it was never committed; or the member
    /// went on to accept or install a later view, whose coordinator saw this acceptance in its promise
    /// and settled the install then (completing it if it may have been committed; the registry of that
    /// later view, which the member keeps, carries the outcome).
    pub fn refuted_by(&self, from: Member, s: &FlushState) -> bool {
        let ran_a_member = self.members.iter().any(|q| q.node() == from.node() && q.epoch() <= from.epoch());
        // A member whose data directory forgot what it knew (wiped, or an older backup restored:
        // `catching_up`) may have lost the acceptance with it: its silence proves nothing.
        ran_a_member
            && !s.catching_up
            && s.accepted.as_ref().is_none_or(|a| a.view.id != self.view)
            && s.inherited.as_ref().is_none_or(|a| a.view != self.view)
    }

    /// The removals and epochs of this install to assume, given `known` primary views. The install may
    /// have been committed by members that are all gone, so its removals hold, except for a member that a
    /// primary view newer than the install contains: a committed install's removals are never admitted
    /// again (G8), so that newer view proves the install was not committed, as far as that member goes.
    pub fn assumed_removals<'a>(&self, known: impl IntoIterator<Item = &'a View>) -> Registry {
        // (A participant's promise can also prove that the install was never committed at all, see
        // `AcceptedInstall::refuted_by`.)
        let mut r = self.registry.clone();
        r.last_primary = None;
        r.last_primary_view = None;
        for v in known {
            if v.primary && v.id > self.view {
                for &m in &v.members {
                    r.readmit(m);
                }
            }
        }
        r
    }
}

/// The cut of one previous view: every member coming from it delivers exactly up to `seq`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cut {
    /// Last sequence number delivered in that view.
    pub seq: u64,
    /// A member that holds every message up to `seq`.
    pub holder: Member,
}

/// Everything a member needs to install a view.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Install {
    /// The new view.
    pub view: View,
    /// The registry after the transition.
    pub registry: Registry,
    /// The cut of each previous view the members come from.
    pub cuts: BTreeMap<ViewId, Cut>,
    /// Each member's previous view.
    pub prev: BTreeMap<Member, Option<ViewId>>,
    /// Members that left cleanly among those the view loses: of the previous primary view, or of a
    /// participant's view (a leave from a non-primary view).
    pub left: Vec<Member>,
    /// The previous primary view (for the record).
    pub prev_primary: Option<ViewId>,
    /// Someone in the view has been in one view with every configured node.
    pub seen_all: bool,
    /// The reference lineage: the members whose position in the primary history (last primary view,
    /// how far they delivered in it, after the cuts) is the newest. They delivered the same prefix, so
    /// they hold the same group table and states; the first of them sends the view's first message,
    /// `Sync`, and every other member adopts its table and receives state transfer.
    pub lineage: Vec<Member>,
}

/// A message from a member to the sequencer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataMsg {
    /// The message id.
    pub id: MsgId,
    /// The sender's counter in this view (FIFO order), from 1.
    pub vseq: u64,
    /// Agreed or safe.
    pub delivery: Delivery,
    /// What it carries.
    pub op: Op,
}

/// An ordered message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderedMsg {
    /// Its position in the view's total order, from 1.
    pub seq: u64,
    /// The message.
    pub msg: DataMsg,
}

/// The operations carried in the total order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// An application message for a group.
    App {
        /// The group.
        group: String,
        /// The payload.
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// The sender joins a group.
    Join {
        /// The group.
        group: String,
    },
    /// The sender leaves a group.
    LeaveGroup {
        /// The group.
        group: String,
    },
    /// The sender applied the state of a group (ends the transfer everywhere).
    StateApplied {
        /// The group.
        group: String,
        /// The transfer that was applied (a superseded one ends nothing).
        token: TransferToken,
    },
    /// A removed member is now fenced.
    FenceDone {
        /// The member.
        target: Member,
        /// How.
        method: FenceMethod,
    },
    /// The view's first message: the group table and registry as the sequencer has them.
    Sync {
        /// Group table.
        groups: BTreeMap<String, Vec<Member>>,
        /// Pending state transfers `(group, joiner) -> (provider, point)`.
        transfers: BTreeMap<(String, Member), (Member, TransferToken)>,
    },
}

/// Identifies one state transfer: the view and position at which the state is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TransferToken {
    /// The view.
    pub view: ViewId,
    /// The position in that view's total order.
    pub seq: u64,
}

impl std::fmt::Display for TransferToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.view, self.seq)
    }
}

impl Op {
    /// Payload bytes counted against windows and queues.
    pub fn size(&self) -> usize {
        match self {
            Op::App { group, payload } => payload.len() + group.len(),
            Op::Sync { groups, transfers, .. } => 64 + groups.len() * 64 + transfers.len() * 64,
            _ => 32,
        }
    }
}
