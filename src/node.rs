//! One member's protocol state machine: failure detection, discovery, view changes with flush, total
//! order, the registry, stateful-merge handling, the fencing gate, process groups with state transfer
//! and the watchdog.
//!
//! [`Node`] never does IO. Every entry point takes `now_ms` and an output sink; the host carries out the
//! [`Output`]s in order: a [`Output::Persist`] must be durable before any later [`Output::Send`] of the
//! same batch (G12 and the registry's durability depend on it).
//!
//! The protocol is described step by step in `docs/PROTOCOL.md`; comments here say which guarantee a
//! step protects.

use crate::config::{Config, ConfigError, FencingMode, MergePolicy, Timing};
use crate::msg::{
    AcceptedInstall, Body, Cut, DataMsg, FlushState, Heartbeat, Install, Op, OrderedMsg, RejectReason,
    RemovedAction, TransferToken,
};
use crate::ordering::Ordering;
use crate::quorum::{self, QuorumInput};
use crate::record::{BlockReason, Event, FenceMethod, MergeAction, Record, TransferRole};
use crate::registry::{Admission, FenceStatus, Registry, Removal, RemovalReason};
use crate::types::{digest, Delivery, Epoch, Member, MsgId, NodeId, View, ViewId};
use crate::wire::{self, Envelope, Fragmenter, Reassembler};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use thiserror::Error;

/// How many clean leaves [`Durable::left`] keeps per node (the newest): enough for the incarnations a
/// node can run and leave while the others form no primary view, in bounded space.
pub const LEFT_KEPT_PER_NODE: usize = 4;

/// What a node keeps on disk: its epoch, the highest view sequence number it used, and the registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Durable {
    /// The current epoch.
    pub epoch: Epoch,
    /// The highest view sequence number this node proposed (so a restarted coordinator never reuses one).
    pub max_view_seq: u64,
    /// The highest view sequence number this node installed, in any incarnation: a new incarnation never
    /// promises a ballot at or below it, so views keep their order across restarts (G2, G3).
    #[serde(default)]
    pub max_installed_seq: u64,
    /// The registry as last installed.
    pub registry: Registry,
    /// The newest install this node accepted and has not yet seen superseded by a view it installed:
    /// persisted before the acceptance is sent, as a Paxos acceptor persists what it accepted. An
    /// incarnation that starts over it cannot tell whether that install was committed (its installers
    /// may all be gone), so it never promises a ballot at or below it and offers it in its promises
    /// ([`FlushState::inherited`]); the coordinator then takes the install's removals as made, except
    /// for members a newer primary view contains ([`AcceptedInstall::assumed_removals`]). A member that
    /// install removed is then never admitted again with its old epoch (G8).
    #[serde(default)]
    pub accepted: Option<AcceptedInstall>,
    /// Members known to have left cleanly, the [`LEFT_KEPT_PER_NODE`] newest per node: this node's own earlier
    /// incarnation once its leave began, and every member whose `Leave` reached this node (persisted
    /// before the `LeaveAck`). A view that removes one of them records it as left, not failed, also
    /// when the leave happened outside any primary view or the whole cluster stopped (L6).
    #[serde(default)]
    pub left: Vec<Member>,
    /// Epochs other nodes claimed for their next incarnation (`EpochClaim`), at most one (the newest)
    /// per node, with the claiming inquiry's nonce: recorded before the claim is granted, and counted
    /// as known in every later answer, so an epoch a node ran under is known to every majority even if
    /// that node's own data directory is later wiped (G12).
    #[serde(default)]
    pub reserved: Vec<Reservation>,
    /// This data directory lost what it knew (wiped, restored from a backup, or found behind the cluster
    /// by the epoch inquiry) and has not installed a primary view since. Until it has, this node counts
    /// for no quorum (a primary view needs a quorum of members that remember) and answers no epoch
    /// query: a fact a majority recorded (a removal, a view, an epoch) may be held in the intersection
    /// with any later majority only by this node, which forgot it (G8, G12).
    #[serde(default)]
    pub catching_up: bool,
}

/// An epoch a node claimed for an incarnation (see [`Durable::reserved`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The node and the epoch it claimed.
    pub member: Member,
    /// The claiming inquiry's nonce.
    pub nonce: u64,
    /// The view sequence number the claimed incarnation starts its own above: every view id it forms
    /// is above it (and fewer than [`crate::inquiry::SEQ_GAP_BEHIND`] above). Reported in later epoch
    /// answers, so a later incarnation whose data directory lost the views this one formed (even views
    /// nobody else saw) starts above them (G1).
    #[serde(default)]
    pub view_seq_floor: u64,
}

impl Durable {
    /// Durable state of a node that never ran, at `epoch`.
    pub fn fresh(epoch: Epoch) -> Durable {
        Durable {
            epoch,
            max_view_seq: 0,
            max_installed_seq: 0,
            registry: Registry::default(),
            accepted: None,
            left: Vec::new(),
            reserved: Vec::new(),
            catching_up: false,
        }
    }

    /// Records that `m` left cleanly; false if that was known already. Keeps the
    /// [`LEFT_KEPT_PER_NODE`] newest per node: a later incarnation's leave does not make an earlier
    /// one's a failure (a restarted node that leaves again before the others formed a primary view
    /// would otherwise get its earlier incarnation fenced, L6).
    pub fn note_left(&mut self, m: Member) -> bool {
        if self.left.contains(&m) {
            return false;
        }
        let same_node = self.left.iter().filter(|q| q.node() == m.node()).count();
        if same_node >= LEFT_KEPT_PER_NODE {
            let oldest = self.left.iter().filter(|q| q.node() == m.node()).min().copied();
            match oldest {
                Some(o) if o.epoch() < m.epoch() => self.left.retain(|q| *q != o),
                _ => return false,
            }
        }
        self.left.push(m);
        self.left.sort();
        true
    }

    /// True when `m` is known to have left cleanly.
    pub fn has_left(&self, m: Member) -> bool {
        self.left.contains(&m)
    }
}

/// Why the host must start this node again under a new epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NewEpochReason {
    /// Caught as a stateful merge under policy `restart`: restart the agent.
    Restart,
    /// Caught as a stateful merge under policy `reset`: drop state in place and rejoin.
    Reset,
    /// The cluster has seen a higher epoch for this node.
    MovePast,
}

/// Something the host must do, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Send one datagram to a node.
    Send {
        /// The destination node.
        to: NodeId,
        /// The datagram.
        bytes: Vec<u8>,
    },
    /// Make this durable before any later `Send`.
    Persist(Durable),
    /// Append to the event log.
    Record(Record),
    /// Tell the application.
    Notify(Notification),
    /// Run the fence agents against `target` and report with [`Node::fence_result`].
    Fence {
        /// The member to fence.
        target: Member,
        /// Why.
        reason: String,
    },
    /// The watchdog fired: stop acting on local state.
    SelfFence {
        /// Why.
        reason: String,
    },
    /// Start this node again with an epoch of at least `min_epoch`, with empty state.
    NewEpoch {
        /// The lowest acceptable epoch.
        min_epoch: Epoch,
        /// Why.
        reason: NewEpochReason,
    },
}

/// What the application is told.
#[derive(Clone, Debug, PartialEq)]
pub enum Notification {
    /// A view was installed.
    View(View),
    /// A message of a group this node's application joined.
    Deliver {
        /// The group.
        group: String,
        /// The message id.
        msg: MsgId,
        /// The sender.
        sender: Member,
        /// Agreed or safe.
        delivery: Delivery,
        /// The view it was delivered in.
        view: ViewId,
        /// Its position in the view's order.
        seq: u64,
        /// The payload.
        payload: Vec<u8>,
    },
    /// A group's membership changed.
    GroupView {
        /// The group.
        group: String,
        /// Members, sorted.
        members: Vec<Member>,
    },
    /// Provide the group state as it is now (at this point of the delivery stream) with
    /// [`Node::provide_state`].
    ProvideState {
        /// The group.
        group: String,
        /// Who joins.
        joiner: Member,
        /// The transfer.
        token: TransferToken,
    },
    /// Replace the group state with this one; later deliveries of the group build on it.
    ApplyState {
        /// The group.
        group: String,
        /// Who provided it.
        provider: Member,
        /// The state.
        state: Vec<u8>,
    },
    /// Applications are blocked.
    Blocked(BlockReason),
    /// No block remains.
    Unblocked,
    /// Recovery for these failed members may proceed (they are fenced).
    Recovered {
        /// The members.
        failed: Vec<Member>,
    },
    /// The send queue has room again.
    SendReady,
    /// This member was removed from the primary view.
    RemovedSelf {
        /// The primary view.
        view: ViewId,
    },
}

/// Why a multicast was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum SendError {
    /// The payload exceeds `max_message_bytes`; nothing changed; the caller's fault.
    #[error("message larger than max_message_bytes")]
    TooLarge,
    /// The send queue is full; nothing changed; wait for `SendReady`.
    #[error("send queue full")]
    QueueFull,
    /// This member was removed, fenced itself, or is leaving; nothing changed.
    #[error("member stopped")]
    Stopped,
}

/// A snapshot for `cohort status` and for tests.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Status {
    /// This member.
    pub member: Member,
    /// The installed view.
    pub view: Option<View>,
    /// True in a primary view.
    pub primary: bool,
    /// Current block reasons.
    pub blocked: Vec<BlockReason>,
    /// True once told it was removed.
    pub removed_self: bool,
    /// True once the watchdog fired.
    pub self_fenced: bool,
    /// Process groups.
    pub groups: BTreeMap<String, Vec<Member>>,
    /// Removed members waiting for fencing.
    pub pending_fences: Vec<Member>,
    /// Stateful merges seen from the primary side.
    pub stateful_merges: Vec<Member>,
    /// Messages queued or in flight from this member.
    pub outbox: usize,
    /// Ordered messages held in memory.
    pub held_msgs: usize,
    /// A view change is in progress here (promised or coordinating).
    pub changing: bool,
    /// Per peer: the member last heard and milliseconds since.
    pub peers: Vec<(Member, u64)>,
    /// The registry.
    pub registry: Registry,
    /// True while this member, after a stall of its own scheduling, waits for its view to be confirmed
    /// by answers sent after the stall; it orders and delivers nothing meanwhile (G13).
    pub stalled: bool,
    /// Members whose epoch was below the one known for their node, told to move past it.
    pub told_to_move_past: Vec<Member>,
    /// Members known to have left cleanly (this node's own earlier incarnation included).
    pub known_left: Vec<Member>,
    /// Why this incarnation started in place of an earlier one, when the host said so.
    pub origin: Option<String>,
    /// Nodes that asked this member for their epochs before starting, with the highest epoch of theirs
    /// it knew: a node whose data directory was wiped or restored shows up here.
    pub epoch_inquiries: Vec<(NodeId, Epoch)>,
    /// This node's data directory forgot what it knew and it has not installed a primary view since: it
    /// counts for no quorum ([`Durable::catching_up`]).
    #[serde(default)]
    pub catching_up: bool,
    /// The timing it runs with (changed by a configuration reload, [`Node::set_timing`]).
    pub timing: Timing,
}

#[derive(Clone, Debug)]
struct Outgoing {
    id: MsgId,
    delivery: Delivery,
    op: Op,
    vseq: Option<u64>,
    last_tx: u64,
    sent_in: Option<ViewId>,
}

#[derive(Debug)]
enum Phase {
    Preparing { promises: BTreeMap<Member, FlushState> },
    Completing { waiting: BTreeSet<Member> },
    Accepting { install: Box<Install>, accepted: BTreeSet<Member> },
}

#[derive(Debug)]
struct Coord {
    ballot: ViewId,
    members: Vec<Member>,
    phase: Phase,
    phase_start: u64,
    last_tx: u64,
}

/// A stall of this member's own scheduling (a pause), while it waits for fresh confirmation of its
/// view. See `Node::step` and `Node::try_confirm`.
#[derive(Clone, Debug)]
struct Stall {
    /// The nonce its heartbeats carry as `probe` until it is confirmed.
    nonce: u64,
    /// When the stall was noticed.
    at: u64,
    /// Per peer node: the member that echoed the nonce, the view it reported then, and whether it was
    /// frozen by a view change. Every echo was sent after the stall.
    echoes: BTreeMap<NodeId, (Member, Option<ViewId>, bool)>,
}

#[derive(Clone, Debug)]
struct Peer {
    member: Member,
    last_heard: u64,
    view: Option<ViewId>,
    leaving: bool,
    removed: bool,
    /// Since when its heartbeats say it is frozen in a view change (`None` when they do not).
    frozen_since: Option<u64>,
    /// Since when its heartbeats carry a stall probe: it waits for its view to be confirmed and takes
    /// no part in view changes meanwhile (`None` when they do not).
    stalled_since: Option<u64>,
}

impl Peer {
    /// A member first heard at `now`, nothing known about it yet.
    fn heard(member: Member, now: u64) -> Peer {
        Peer {
            member,
            last_heard: now,
            view: None,
            leaving: false,
            removed: false,
            frozen_since: None,
            stalled_since: None,
        }
    }
}

#[derive(Clone, Debug)]
enum MyGroup {
    /// Join sent, not yet delivered.
    Joining,
    /// Joined; waiting for the state (since `since`, ms); deliveries for the application are held.
    Awaiting { held: VecDeque<Notification>, since: u64 },
    /// Joined and current.
    Member,
}

impl MyGroup {
    /// Waiting for the state from `now` on, nothing held yet.
    fn awaiting(now: u64) -> MyGroup {
        MyGroup::Awaiting { held: VecDeque::new(), since: now }
    }
}

#[derive(Clone, Debug)]
struct Providing {
    state: Vec<u8>,
    last_tx: u64,
}

/// One member's protocol state machine. See the module documentation.
pub struct Node {
    cfg: Arc<Config>,
    me: Member,
    durable: Durable,
    view: Option<View>,
    prev_view: Option<ViewId>,
    install_prev: BTreeMap<Member, Option<ViewId>>,
    install_lineage: Vec<Member>,
    /// Where this member's group table and its application's group states stand in the primary
    /// history: the last primary view in which it had applied the view's group table, and how far it
    /// delivered there. A member still waiting for its view's `Sync` keeps the previous position.
    history: (Option<ViewId>, u64),
    synced: bool,
    last_primary: Option<View>,
    ord: Option<Ordering>,
    /// The previous view's ordering, kept to answer retransmission requests of members that still
    /// need its messages up to their cut to install the same view (its sequencer may be gone).
    prev_ord: Option<Ordering>,
    /// Round-robin position over the members asked for missing messages of a flush.
    flush_nak_turn: usize,
    peers: BTreeMap<NodeId, Peer>,
    last_step: u64,
    started_at: u64,
    /// Set when this member's own scheduling stalled for longer than it can trust; it orders and
    /// delivers nothing until a quorum of its view confirms, in answers to a probe sent after the
    /// stall, that the view still stands (G13).
    stall: Option<Stall>,
    coord: Option<Coord>,
    promised: ViewId,
    /// A promise given up after it led nowhere: its ballot's `Accept` is refused (what this member
    /// delivered since is not in the state it promised with), and a copy of its `Prepare` too.
    released: Option<ViewId>,
    frozen_since: Option<u64>,
    accepted: Option<Install>,
    /// An install an earlier incarnation of this node accepted (from [`Durable::accepted`]), until a
    /// view after it is installed here.
    inherited: Option<AcceptedInstall>,
    accept_from: Option<Member>,
    accepted_tx: u64,
    backoff_until: u64,
    max_seq_seen: u64,
    seen_all: bool,
    refused: BTreeMap<Member, u64>,
    leavers: BTreeSet<Member>,
    next_n: u64,
    outbox: VecDeque<Outgoing>,
    /// The application's operations that wait for a state transfer: a multicast to a group whose
    /// state this member does not hold yet (its join is not delivered, or its state has not arrived),
    /// and every multicast and join of the application after it, in the order it made them. They enter
    /// the outbox once the group's state is in place, so nothing the application sends while it waits
    /// is ordered before its state (and lost if nobody can give that state), or when the application
    /// leaves a group. Counted in the send queue.
    deferred: VecDeque<(MsgId, Delivery, Op)>,
    /// Bytes of the outbox and of `deferred`.
    outbox_bytes: usize,
    my_ordered_vseq: u64,
    next_vseq: u64,
    want_send_ready: bool,
    groups: BTreeMap<String, Vec<Member>>,
    transfers: BTreeMap<(String, Member), (Member, TransferToken)>,
    my_groups: BTreeMap<String, MyGroup>,
    providing: BTreeMap<(String, Member, TransferToken), Providing>,
    early_states: BTreeMap<(String, TransferToken), (Member, Vec<u8>)>,
    applied_tokens: BTreeMap<String, TransferToken>,
    local_group_op: BTreeMap<String, MsgId>,
    blocked: BTreeSet<BlockReason>,
    fence_inflight: BTreeMap<Member, u64>,
    fence_failed_at: BTreeMap<Member, u64>,
    pending_since: BTreeMap<Member, u64>,
    recovered_announced: BTreeSet<Member>,
    merges: BTreeMap<Member, u64>,
    /// Removed members told so from outside a primary view (when last told), for rate limiting.
    told_removed: BTreeMap<Member, u64>,
    /// Members with an epoch below the known one told to move past it (when last told), for rate
    /// limiting and `cohort status`.
    told_stale: BTreeMap<Member, u64>,
    origin: Option<String>,
    /// Nodes that asked for their epochs before starting, and the highest epoch told to each.
    epoch_inquiries: BTreeMap<NodeId, Epoch>,
    /// Stateful merges the resolver requested fencing of, and when it last did.
    merge_fence_requested: BTreeMap<Member, u64>,
    removed_self: bool,
    new_epoch_requested: bool,
    leaving: bool,
    /// Nodes whose member acknowledged this member's `Leave`.
    leave_acks: BTreeSet<NodeId>,
    /// The nodes that must acknowledge this member's `Leave` (see `leave`).
    leave_to: BTreeSet<NodeId>,
    leave_tx: u64,
    left: bool,
    last_primary_ms: Option<u64>,
    /// The newest primary view a peer's heartbeat showed (see `FlushState::heard_primary`).
    heard_primary: Option<ViewId>,
    self_fenced: bool,
    next_hb: u64,
    next_disc: u64,
    last_nak: u64,
    stable_dirty: bool,
    deferred_flush: bool,
    frag: Fragmenter,
    reasm: Reassembler,
    loopback: VecDeque<Body>,
}

const MAX_RETRANSMIT_BATCH_BYTES: usize = 256 * 1024;

impl Node {
    /// Creates the state machine of `node` under `durable.epoch`, which the host has already persisted.
    /// Emits the `start` record.
    pub fn new(
        cfg: Arc<Config>,
        node: NodeId,
        mut durable: Durable,
        now_ms: u64,
        out: &mut Vec<Output>,
    ) -> Node {
        // What an earlier incarnation accepted stays on disk until a view after it is installed here.
        let inherited = durable.accepted.clone();
        if let Some(a) = &inherited {
            durable.max_installed_seq = durable.max_installed_seq.max(a.view.seq);
        }
        let me = Member(node, durable.epoch);
        // No ballot below the highest view sequence number on disk is promised: that covers the ballots
        // earlier incarnations started, and the floor an epoch inquiry set for a data directory found
        // behind, whose lost incarnation may have installed views with any number up to it (G1, G2).
        let promised = ViewId { seq: durable.max_view_seq, coord: NodeId(0) };
        let seed = (u64::from(node.0) << 40) ^ (durable.epoch.0 << 20);
        let max_packet = cfg.max_message_bytes.max(cfg.max_state_bytes) + 64 * 1024;
        let n_nodes = cfg.nodes.len().max(1);
        let mut this = Node {
            reasm: Reassembler::new(
                max_packet,
                64,
                max_packet.saturating_mul(2).min(max_packet + n_nodes * (2 << 20)),
                cfg.failure_timeout_ms * 4,
            ),
            frag: Fragmenter::new(seed),
            cfg,
            me,
            max_seq_seen: durable.max_view_seq,
            durable,
            view: None,
            prev_view: None,
            install_prev: BTreeMap::new(),
            install_lineage: Vec::new(),
            history: (None, 0),
            synced: true,
            last_primary: None,
            ord: None,
            prev_ord: None,
            flush_nak_turn: 0,
            peers: BTreeMap::new(),
            last_step: now_ms,
            started_at: now_ms,
            stall: None,
            coord: None,
            promised,
            released: None,
            frozen_since: None,
            accepted: None,
            inherited,
            accept_from: None,
            accepted_tx: 0,
            backoff_until: 0,
            seen_all: false,
            refused: BTreeMap::new(),
            leavers: BTreeSet::new(),
            next_n: 1,
            outbox: VecDeque::new(),
            deferred: VecDeque::new(),
            outbox_bytes: 0,
            my_ordered_vseq: 0,
            next_vseq: 1,
            want_send_ready: false,
            groups: BTreeMap::new(),
            transfers: BTreeMap::new(),
            my_groups: BTreeMap::new(),
            providing: BTreeMap::new(),
            early_states: BTreeMap::new(),
            applied_tokens: BTreeMap::new(),
            local_group_op: BTreeMap::new(),
            blocked: BTreeSet::new(),
            fence_inflight: BTreeMap::new(),
            fence_failed_at: BTreeMap::new(),
            pending_since: BTreeMap::new(),
            recovered_announced: BTreeSet::new(),
            merges: BTreeMap::new(),
            told_removed: BTreeMap::new(),
            told_stale: BTreeMap::new(),
            origin: None,
            epoch_inquiries: BTreeMap::new(),
            merge_fence_requested: BTreeMap::new(),
            removed_self: false,
            new_epoch_requested: false,
            leaving: false,
            leave_acks: BTreeSet::new(),
            leave_to: BTreeSet::new(),
            leave_tx: 0,
            left: false,
            last_primary_ms: None,
            heard_primary: None,
            self_fenced: false,
            next_hb: now_ms,
            next_disc: now_ms,
            last_nak: 0,
            stable_dirty: false,
            deferred_flush: false,
            loopback: VecDeque::new(),
        };
        this.record(now_ms, Event::Start { version: crate::VERSION.to_string() }, out);
        this.block(now_ms, BlockReason::NoQuorum, out);
        this
    }

    /// This member.
    pub fn member(&self) -> Member {
        self.me
    }

    /// True once a clean leave completed.
    pub fn has_left(&self) -> bool {
        self.left
    }

    /// The timing this node runs with.
    pub fn timing(&self) -> Timing {
        self.cfg.timing()
    }

    /// Changes the timing at run time (a reload of the agent's configuration): the failure detector,
    /// heartbeats, discovery, view-change and retransmission timers use the new values from the next
    /// step on. Refused, changing nothing, when the new timing is invalid or too far from the running one
    /// for peers that still run with it ([`Timing::check_step`]).
    pub fn set_timing(&mut self, timing: Timing) -> Result<(), ConfigError> {
        timing.check_step(&self.cfg.timing(), self.cfg.fencing)?;
        let cfg = self.cfg.with_timing(timing)?;
        // The next heartbeat is due no later than the new interval allows.
        self.next_hb = self.next_hb.min(self.last_step.saturating_add(timing.heartbeat_interval_ms));
        self.cfg = Arc::new(cfg);
        Ok(())
    }

    /// The installed view.
    pub fn view(&self) -> Option<&View> {
        self.view.as_ref()
    }

    /// The registries of installs already decided here and not installed yet: the one this member
    /// accepted, and the one it sends for acceptance as coordinator. A removal they record is decided,
    /// and becomes a primary view's once a coordinator commits or completes the install.
    pub fn decided_registries(&self) -> Vec<&Registry> {
        let mut r: Vec<&Registry> = self.accepted.iter().map(|i| &i.registry).collect();
        if let Some(Coord { phase: Phase::Accepting { install, .. }, .. }) = &self.coord {
            r.push(&install.registry);
        }
        r
    }

    /// When the host must call [`Node::tick`] next.
    pub fn next_wakeup_ms(&self) -> u64 {
        let rtx = self.last_step + self.cfg.retransmit_interval_ms.min(self.cfg.heartbeat_interval_ms);
        rtx.min(self.next_hb).max(self.last_step + 1)
    }

    /// A snapshot for status pages and tests.
    pub fn status(&self) -> Status {
        Status {
            member: self.me,
            view: self.view.clone(),
            primary: self.is_primary(),
            blocked: self.blocked.iter().copied().collect(),
            removed_self: self.removed_self,
            catching_up: self.durable.catching_up,
            self_fenced: self.self_fenced,
            groups: self.groups.clone(),
            pending_fences: self.durable.registry.pending_fences(),
            stateful_merges: self.merges.keys().copied().collect(),
            outbox: self.outbox.len() + self.deferred.len(),
            held_msgs: self.ord.as_ref().map_or(0, Ordering::held),
            changing: self.coord.is_some() || self.frozen_since.is_some(),
            peers: self
                .peers
                .values()
                .map(|p| (p.member, self.last_step.saturating_sub(p.last_heard)))
                .collect(),
            registry: self.durable.registry.clone(),
            stalled: self.stall.is_some(),
            told_to_move_past: self.told_stale.keys().copied().collect(),
            known_left: self.durable.left.clone(),
            origin: self.origin.clone(),
            epoch_inquiries: self.epoch_inquiries.iter().map(|(n, e)| (*n, *e)).collect(),
            timing: self.cfg.timing(),
        }
    }

    /// The durable state as last persisted (the host claims the next epoch from it, `NewEpoch`).
    pub fn durable(&self) -> &Durable {
        &self.durable
    }

    /// Says why this incarnation started in place of an earlier one (shown by `status`).
    pub fn set_origin(&mut self, why: String) {
        self.origin = Some(why);
    }

    /// True when this member holds ordered message `seq` of its current view `view` (for the
    /// simulator's receipt check of safe delivery, G10). `None` when `view` is not its current view.
    pub fn holds(&self, view: ViewId, seq: u64) -> Option<bool> {
        let o = self.ord.as_ref()?;
        (o.view == view).then_some(o.received >= seq)
    }

    fn is_primary(&self) -> bool {
        self.view.as_ref().is_some_and(|v| v.primary)
    }

    // ----------------------------------------------------------------------------------------------
    // Entry points
    // ----------------------------------------------------------------------------------------------

    /// Timers: heartbeats, discovery, failure detection, retransmissions, view-change timeouts,
    /// fencing retries and deadlines, the watchdog.
    pub fn tick(&mut self, now: u64, out: &mut Vec<Output>) {
        self.step(now);
        if self.left {
            return;
        }
        if now >= self.next_hb {
            self.next_hb = now + self.cfg.heartbeat_interval_ms;
            self.send_heartbeats(now, out);
        }
        self.drive_coordinator(now, out);
        self.drive_participant(now, out);
        self.maybe_start_view_change(now, out);
        self.drive_ordering_retransmits(now, out);
        self.drive_fencing(now, out);
        self.drive_transfers(now, out);
        self.drive_watchdog(now, out);
        self.drive_stall(now, out);
        self.drive_leave(now, out);
        self.pump(now, out);
        self.drain_loopback(now, out);
    }

    /// A datagram arrived. Anything that fails to decode is dropped; nothing a peer sends can panic.
    pub fn receive(&mut self, now: u64, datagram: &[u8], out: &mut Vec<Output>) {
        self.step(now);
        if self.left {
            return;
        }
        let packet = match self.reasm.accept(now, NodeId(0), datagram) {
            Ok(Some(p)) => p,
            Ok(None) | Err(_) => return,
        };
        let max_packet = self.cfg.max_message_bytes.max(self.cfg.max_state_bytes) + 64 * 1024;
        let env: Envelope<Body> = match wire::decode(&packet, max_packet, &self.cfg.cluster) {
            Ok(e) => e,
            Err(_) => return,
        };
        let from = env.from;
        if !self.cfg.is_configured(from.node()) || from.node() == self.me.node() {
            return;
        }
        match env.body {
            Body::EpochQuery { .. } if self.durable.catching_up => {
                // Forgot what it knew: its answer could make a majority that misses an epoch (G12).
                return;
            }
            Body::EpochQuery { nonce } => {
                // A node about to start a new incarnation asks which epochs of it were seen (G12).
                let highest = self.highest_known_epoch(from.node());
                self.epoch_inquiries.insert(from.node(), highest);
                let max_view_seq = self
                    .max_seq_seen
                    .max(self.durable.max_view_seq)
                    .max(self.durable.max_installed_seq)
                    .max(crate::inquiry::reserved_floor(&self.durable, from.node()));
                let left: Vec<Epoch> = self
                    .durable
                    .left
                    .iter()
                    .chain(self.leavers.iter())
                    .filter(|m| m.node() == from.node())
                    .map(|m| m.epoch())
                    .collect();
                let ran = self.seen_running_epoch(from.node());
                self.send(
                    from.node(),
                    Body::EpochAnswer { nonce, highest, max_view_seq, fresh: false, left, ran },
                    out,
                );
                return;
            }
            Body::EpochClaim { nonce, epoch, view_seq_floor } => {
                // ... and then claims the epoch it decided: on disk before the grant (G12).
                let known = self.highest_known_epoch(from.node());
                let (granted, changed) = crate::inquiry::grant_claim(
                    &mut self.durable,
                    from.node(),
                    (epoch, nonce, view_seq_floor),
                    known,
                );
                if changed {
                    self.persist(out);
                }
                let highest = self.highest_known_epoch(from.node());
                self.epoch_inquiries.insert(from.node(), highest);
                self.send(from.node(), Body::EpochClaimAnswer { nonce, epoch, granted, highest }, out);
                return;
            }
            _ => {}
        }
        if !self.note_peer(now, from, &env.body) {
            // An epoch below the one known for its node (a wiped data directory, a restored backup):
            // tell it at once, so it moves past every epoch the cluster has seen instead of being
            // ignored forever.
            self.tell_stale(now, from, out);
            return;
        }
        self.dispatch(now, from, env.body, out);
        self.pump(now, out);
        self.drain_loopback(now, out);
    }

    /// The application multicasts `payload` to `group`.
    pub fn multicast(
        &mut self,
        now: u64,
        group: &str,
        payload: Vec<u8>,
        delivery: Delivery,
        out: &mut Vec<Output>,
    ) -> Result<MsgId, SendError> {
        self.step(now);
        if self.removed_self || self.self_fenced || self.leaving || self.left {
            return Err(SendError::Stopped);
        }
        if payload.len() > self.cfg.max_message_bytes {
            return Err(SendError::TooLarge);
        }
        if self.outbox.len() + self.deferred.len() >= self.cfg.send_queue_msgs
            || self.outbox_bytes + payload.len() > self.cfg.send_queue_bytes
        {
            self.want_send_ready = true;
            return Err(SendError::QueueFull);
        }
        let id = self.new_id();
        self.record(
            now,
            Event::Send {
                group: group.to_string(),
                msg: id.to_string(),
                bytes: payload.len() as u64,
                delivery,
                digest: digest(&payload),
            },
            out,
        );
        self.push_app(id, delivery, Op::App { group: group.to_string(), payload });
        if !self.deferred_flush {
            self.pump(now, out);
            self.drain_loopback(now, out);
        }
        Ok(id)
    }

    /// With deferred flushing on, `multicast` only queues; the host calls [`Node::flush`] soon after
    /// (e.g. once per scheduling round), so that many messages travel in one datagram. Off by default.
    pub fn set_deferred_flush(&mut self, on: bool) {
        self.deferred_flush = on;
    }

    /// Sends what is queued (see [`Node::set_deferred_flush`]).
    pub fn flush(&mut self, now: u64, out: &mut Vec<Output>) {
        self.step(now);
        self.pump(now, out);
        self.drain_loopback(now, out);
    }

    /// The application joins `group`; the join is an ordered operation.
    pub fn join_group(&mut self, now: u64, group: &str, out: &mut Vec<Output>) {
        self.step(now);
        if self.my_groups.contains_key(group) || self.removed_self || self.left {
            return;
        }
        self.my_groups.insert(group.to_string(), MyGroup::Joining);
        let id = self.new_id();
        self.local_group_op.insert(group.to_string(), id);
        self.push_app(id, Delivery::Agreed, Op::Join { group: group.to_string() });
        self.pump(now, out);
        self.drain_loopback(now, out);
    }

    /// The application leaves `group`.
    pub fn leave_group(&mut self, now: u64, group: &str, out: &mut Vec<Output>) {
        self.step(now);
        if self.my_groups.remove(group).is_none() {
            return;
        }
        self.refresh_transfer_block(now, out);
        // A leave is never deferred: a member whose application left must not keep others waiting for
        // a state it will not give (that member may itself wait for a state from one of them). What
        // was deferred goes first, in order; a multicast to a group still waiting for its state is then
        // ordered before that state, held, and dropped with it if the group restarts from empty state.
        self.release_deferred_all();
        let id = self.new_id();
        self.local_group_op.insert(group.to_string(), id);
        self.push_out(id, Delivery::Agreed, Op::LeaveGroup { group: group.to_string() });
        self.pump(now, out);
        self.drain_loopback(now, out);
    }

    /// The application's answer to [`Notification::ProvideState`].
    pub fn provide_state(
        &mut self,
        now: u64,
        group: &str,
        joiner: Member,
        token: TransferToken,
        state: Vec<u8>,
        out: &mut Vec<Output>,
    ) {
        self.step(now);
        if state.len() > self.cfg.max_state_bytes {
            return;
        }
        let key = (group.to_string(), joiner, token);
        self.providing.insert(key, Providing { state: state.clone(), last_tx: now });
        self.send(joiner.node(), Body::State { group: group.to_string(), joiner, token, state }, out);
    }

    /// A fence agent finished for `target`.
    pub fn fence_result(&mut self, now: u64, target: Member, ok: bool, detail: &str, out: &mut Vec<Output>) {
        self.step(now);
        self.fence_inflight.remove(&target);
        self.record(
            now,
            Event::FenceResult { target, ok, method: FenceMethod::Agent, detail: detail.to_string() },
            out,
        );
        if ok {
            self.fenced(now, target, FenceMethod::Agent, out);
        } else {
            self.fence_failed_at.insert(target, now);
        }
        self.pump(now, out);
        self.drain_loopback(now, out);
    }

    /// An operator acknowledged that `node` is fenced (`cohort fence ack`): every removed member of
    /// that node waiting for fencing counts as fenced.
    pub fn fence_ack(&mut self, now: u64, node: NodeId, out: &mut Vec<Output>) {
        self.step(now);
        let mut targets: Vec<Member> =
            self.durable.registry.pending_fences().into_iter().filter(|m| m.node() == node).collect();
        targets.extend(self.merges.keys().copied().filter(|m| m.node() == node));
        targets.sort();
        targets.dedup();
        for t in targets {
            self.record(
                now,
                Event::FenceResult {
                    target: t,
                    ok: true,
                    method: FenceMethod::Ack,
                    detail: "operator".into(),
                },
                out,
            );
            self.fenced(now, t, FenceMethod::Ack, out);
        }
        self.pump(now, out);
        self.drain_loopback(now, out);
    }

    /// Leaves the cluster cleanly: the next view excludes this member as `left`, which needs no fencing.
    pub fn leave(&mut self, now: u64, out: &mut Vec<Output>) {
        self.step(now);
        if self.leaving {
            return;
        }
        self.leaving = true;
        // Durable first: the next incarnation of this node tells the cluster that this one left, also
        // if nobody received its `Leave` (L6).
        self.durable.note_left(self.me);
        self.persist(out);
        // Who must have the leave on disk before this member is done: the other members of its view,
        // and the nodes of its last primary view (they, or their next incarnations, form the next
        // primary view; one that is not in this member's view, say because this member is alone in a
        // non-primary view after a stall, or because it is paused itself, would otherwise count it as
        // failed). One that is down never answers: the host gives up waiting after its leave deadline
        // (the failure timeout), by which time the `Leave`s sent to a paused node wait in its buffer.
        let me = self.me;
        let mut leave_to: BTreeSet<NodeId> =
            self.view.iter().flat_map(|v| v.members.iter().map(|m| m.node())).collect();
        if let Some(lp) = &self.last_primary {
            leave_to.extend(lp.members.iter().map(|m| m.node()));
        }
        leave_to.remove(&me.node());
        self.leave_to = leave_to;
        // Once to every other configured node too: a coordinator forming a view from outside this
        // member's view (a restarted node, say) then knows it left instead of counting it as failed.
        let others: Vec<NodeId> = self
            .cfg
            .nodes
            .iter()
            .map(|n| n.id)
            .filter(|n| *n != me.node() && !self.leave_to.contains(n))
            .collect();
        self.send_many(&others, Body::Leave, out);
        if self.leave_to.is_empty() {
            self.finish_leave(now, out);
            return;
        }
        self.leave_acks.clear();
        self.send_leave(now, out);
        self.send_heartbeats(now, out);
    }

    /// Sends `Leave` to every node in `leave_to` that has not acknowledged it yet.
    fn send_leave(&mut self, now: u64, out: &mut Vec<Output>) {
        let to: Vec<NodeId> =
            self.leave_to.iter().copied().filter(|n| !self.leave_acks.contains(n)).collect();
        self.leave_tx = now;
        self.send_many(&to, Body::Leave, out);
    }

    /// A leaving member: retransmits its `Leave`, and is done once every other member of its view has
    /// it on disk (they record it as left whatever happens next, even if they lose quorum).
    fn drive_leave(&mut self, now: u64, out: &mut Vec<Output>) {
        if !self.leaving || self.left {
            return;
        }
        if self.leave_to.iter().all(|n| self.leave_acks.contains(n)) {
            self.finish_leave(now, out);
        } else if now.saturating_sub(self.leave_tx) >= self.cfg.retransmit_interval_ms {
            self.send_leave(now, out);
        }
    }

    /// A member's `Leave` (or a heartbeat saying it is leaving) arrived: remember it on disk.
    fn note_leaver(&mut self, from: Member, out: &mut Vec<Output>) {
        self.leavers.insert(from);
        if self.durable.note_left(from) {
            self.persist(out);
            // Promised a ballot whose coordinator may not know of this leave yet: tell it again with
            // the leave in it (it replaces the earlier promise while it has not decided).
            if self.frozen_since.is_some() && self.accepted.is_none() && self.released != Some(self.promised)
            {
                let (ballot, state) = (self.promised, self.flush_state());
                self.send(ballot.coord, Body::Promise { ballot, state: Box::new(state) }, out);
            }
        }
    }

    fn finish_leave(&mut self, now: u64, out: &mut Vec<Output>) {
        if !self.left {
            self.left = true;
            self.record(now, Event::Stop { reason: "leave".into() }, out);
        }
    }

    // ----------------------------------------------------------------------------------------------
    // Plumbing
    // ----------------------------------------------------------------------------------------------

    /// Notes the time of a step; a gap longer than half the failure timeout means this node itself was
    /// not scheduled (a pause): it must not suspect everyone for that gap, and it must not deliver or
    /// order anything until its view is confirmed by answers sent after the stall (G13). Packets that
    /// arrive now prove nothing: they may have waited in the socket buffer since before the pause.
    fn step(&mut self, now: u64) {
        let gap = now.saturating_sub(self.last_step);
        if gap > self.cfg.failure_timeout_ms / 2 {
            for p in self.peers.values_mut() {
                p.last_heard = p.last_heard.max(now.saturating_sub(self.cfg.failure_timeout_ms / 2));
            }
            // Only a primary view orders and delivers, and an accepted install may be committed from a
            // `Commit` that waited in the buffer (a joiner has no view yet): that is what a stall holds.
            if self.view.as_ref().is_some_and(|v| v.primary && v.members.len() > 1) || self.accepted.is_some()
            {
                // A fresh nonce per stall: an echo of an earlier one was sent before this stall.
                self.stall = Some(Stall { nonce: now.max(1), at: now, echoes: BTreeMap::new() });
            }
            self.next_hb = now;
        }
        self.last_step = self.last_step.max(now);
    }

    /// After a stall: an echo of the stall's nonce came back. The current view is confirmed once
    /// members of it that hold quorum together with this member answered, after the stall, that it is
    /// still their view and that no view change froze them; then no primary view without this member
    /// can have been committed before their answers (it would need the acceptance of one of them), so
    /// nothing this member delivers from here on follows its removal's recovery (G13). An install this
    /// member accepted before the stall is installed only on the same evidence for its view (its
    /// members answer from inside it), never on a `Commit` that may have waited in the socket buffer.
    /// Until then the member takes no part in view changes either (`on_prepare`, `on_accept`): the new
    /// view's flush would make it deliver in its old view.
    fn try_confirm(&mut self, now: u64, out: &mut Vec<Output>) {
        let Some(st) = &self.stall else { return };
        if let Some(acc) = &self.accepted {
            if self.view.as_ref().is_none_or(|v| v.id < acc.view.id) {
                if self.confirmed_by(st, &acc.view) && self.accept_complete() {
                    let inst = acc.clone();
                    // `install` calls back here for the installed view.
                    self.install(now, inst, out);
                }
                // Until its members confirm it, the accepted install holds the stall (or the stall
                // ends in a reset, `drive_stall`).
                return;
            }
        }
        if self.view.as_ref().is_none_or(|v| !v.primary || self.confirmed_by(st, v)) {
            self.stall = None;
        }
    }

    /// True when answers to the stall's probe show `v` standing: members of `v` that hold quorum
    /// together with this member reported it as their view, not frozen by a change.
    fn confirmed_by(&self, st: &Stall, v: &View) -> bool {
        if v.members.len() <= 1 {
            return true;
        }
        let mut present: Vec<NodeId> = vec![self.me.node()];
        for (node, (m, view, frozen)) in &st.echoes {
            if v.contains(*m) && *view == Some(v.id) && !*frozen {
                present.push(*node);
            }
        }
        present.len() > 1
            && quorum::is_quorate(&QuorumInput { config: &self.cfg, present: &present, seen_all_once: true })
    }

    fn new_id(&mut self) -> MsgId {
        let id = MsgId { sender: self.me, n: self.next_n };
        self.next_n += 1;
        id
    }

    fn push_out(&mut self, id: MsgId, delivery: Delivery, op: Op) {
        self.outbox_bytes += op.size();
        self.enqueue(id, delivery, op);
    }

    /// Appends to the outbox an operation whose bytes are already counted in `outbox_bytes`.
    fn enqueue(&mut self, id: MsgId, delivery: Delivery, op: Op) {
        self.outbox.push_back(Outgoing { id, delivery, op, vseq: None, last_tx: 0, sent_in: None });
    }

    /// An operation of the application: into the outbox, or into `deferred` behind a multicast that
    /// waits for its group's state (the application's operations keep their order).
    fn push_app(&mut self, id: MsgId, delivery: Delivery, op: Op) {
        if self.deferred.is_empty() && !self.waits_for_state(&op) {
            self.push_out(id, delivery, op);
        } else {
            self.outbox_bytes += op.size();
            self.deferred.push_back((id, delivery, op));
        }
    }

    /// A multicast to a group whose state this member's application does not hold yet.
    fn waits_for_state(&self, op: &Op) -> bool {
        matches!(op, Op::App { group, .. }
            if matches!(self.my_groups.get(group), Some(MyGroup::Joining | MyGroup::Awaiting { .. })))
    }

    /// Moves every deferred operation into the outbox, in order.
    fn release_deferred_all(&mut self) {
        while let Some((id, delivery, op)) = self.deferred.pop_front() {
            self.enqueue(id, delivery, op);
        }
    }

    /// Moves the deferred operations whose group's state is now in place into the outbox, in order.
    fn release_deferred(&mut self) {
        while let Some((_, _, op)) = self.deferred.front() {
            if self.waits_for_state(op) {
                break;
            }
            let Some((id, delivery, op)) = self.deferred.pop_front() else { break };
            self.enqueue(id, delivery, op);
        }
    }

    fn record(&mut self, now: u64, event: Event, out: &mut Vec<Output>) {
        out.push(Output::Record(Record { ts_ms: now, node: self.me.node(), epoch: self.me.epoch(), event }));
    }

    fn notify(&mut self, n: Notification, out: &mut Vec<Output>) {
        out.push(Output::Notify(n));
    }

    fn block(&mut self, now: u64, reason: BlockReason, out: &mut Vec<Output>) {
        if self.blocked.insert(reason) {
            self.record(now, Event::Blocked { reason }, out);
            self.notify(Notification::Blocked(reason), out);
        }
    }

    fn unblock(&mut self, now: u64, reason: BlockReason, out: &mut Vec<Output>) {
        if self.blocked.remove(&reason) && self.blocked.is_empty() {
            self.record(now, Event::Unblocked {}, out);
            self.notify(Notification::Unblocked, out);
        }
    }

    fn persist(&mut self, out: &mut Vec<Output>) {
        self.durable.max_view_seq = self.durable.max_view_seq.max(self.max_seq_seen);
        out.push(Output::Persist(self.durable.clone()));
    }

    fn encode(&mut self, body: Body) -> Vec<Vec<u8>> {
        let env =
            Envelope { version: wire::WIRE_VERSION, cluster: self.cfg.cluster.clone(), from: self.me, body };
        match wire::encode(&env) {
            Ok(p) => self.frag.frame(&p, self.cfg.max_datagram_bytes),
            Err(_) => Vec::new(),
        }
    }

    fn send(&mut self, to: NodeId, body: Body, out: &mut Vec<Output>) {
        if to == self.me.node() {
            self.loopback.push_back(body);
            return;
        }
        for bytes in self.encode(body) {
            out.push(Output::Send { to, bytes });
        }
    }

    fn send_many(&mut self, to: &[NodeId], body: Body, out: &mut Vec<Output>) {
        let mut encoded: Option<Vec<Vec<u8>>> = None;
        for &n in to {
            if n == self.me.node() {
                self.loopback.push_back(body.clone());
                continue;
            }
            if encoded.is_none() {
                encoded = Some(self.encode(body.clone()));
            }
            for bytes in encoded.iter().flatten() {
                out.push(Output::Send { to: n, bytes: bytes.clone() });
            }
        }
    }

    fn drain_loopback(&mut self, now: u64, out: &mut Vec<Output>) {
        let mut guard = 0;
        while let Some(body) = self.loopback.pop_front() {
            self.dispatch(now, self.me, body, out);
            self.pump(now, out);
            guard += 1;
            if guard > 10_000 {
                break;
            }
        }
    }

    /// Updates liveness for `from`; returns false when the datagram must be ignored (an older epoch).
    fn note_peer(&mut self, now: u64, from: Member, body: &Body) -> bool {
        let entry = self.peers.entry(from.node()).or_insert_with(|| Peer::heard(from, now));
        if from.epoch() < entry.member.epoch() {
            return false;
        }
        if from.epoch() > entry.member.epoch() {
            *entry = Peer::heard(from, now);
        }
        // A member left out of view changes because it did not answer one (`refused`) and then fell
        // silent for the failure timeout was cut off, not refusing: heard again, the cut has healed, and
        // it takes part in the next change at once (L4) instead of after the refusal's four failure
        // timeouts. One that went on being heard while it did not answer (a one-way link) stays out.
        if now.saturating_sub(entry.last_heard) > self.cfg.failure_timeout_ms {
            self.refused.remove(&from);
        }
        entry.last_heard = now;
        if let Body::Heartbeat(hb) = body {
            // Frozen since when: a member that installed a view between two heartbeats (each one sent
            // frozen by a different change) has been frozen only since the newer view.
            let same_view = entry.view == hb.view;
            entry.view = hb.view;
            entry.leaving = hb.leaving;
            entry.removed = hb.removed;
            entry.frozen_since = match (hb.frozen, entry.frozen_since) {
                (false, _) => None,
                (true, Some(t)) if same_view => Some(t),
                (true, _) => Some(now),
            };
            entry.stalled_since = if hb.probe != 0 { entry.stalled_since.or(Some(now)) } else { None };
        }
        if matches!(body, Body::Leave) {
            entry.leaving = true;
        }
        true
    }

    fn dispatch(&mut self, now: u64, from: Member, body: Body, out: &mut Vec<Output>) {
        match body {
            Body::Heartbeat(hb) => self.on_heartbeat(now, from, hb, out),
            Body::Prepare { ballot, members } => self.on_prepare(now, from, ballot, members, out),
            Body::Promise { ballot, state } => self.on_promise(now, from, ballot, *state, out),
            Body::Reject { ballot, reason } => self.on_reject(now, from, ballot, reason, out),
            Body::Accept { ballot, install } => self.on_accept(now, from, ballot, *install, out),
            Body::Accepted { ballot } => self.on_accepted(now, from, ballot, out),
            Body::Commit { ballot } => self.on_commit(now, from, ballot, out),
            Body::Installed { view } => self.on_installed(now, from, view, out),
            Body::Data { view, msgs } => self.on_data(now, from, view, msgs),
            Body::Ordered { view, msgs, stable, ordered } => {
                self.on_ordered(now, from, view, msgs, stable, ordered, out)
            }
            Body::Ack { view, received } => self.on_ack(from, view, received),
            Body::Nak { view, from: lo, to: hi } => self.on_nak(from, view, lo, hi, out),
            Body::State { group, joiner, token, state } => {
                self.on_state(now, from, group, joiner, token, state, out)
            }
            Body::StateAck { group, token } => self.on_state_ack(now, from, group, token, out),
            Body::Leave => {
                // On disk before the acknowledgement (outputs are carried out in order).
                self.note_leaver(from, out);
                self.send(from.node(), Body::LeaveAck, out);
            }
            Body::EpochQuery { .. }
            | Body::EpochAnswer { .. }
            | Body::EpochClaim { .. }
            | Body::EpochClaimAnswer { .. } => {}
            Body::LeaveAck => {
                if self.leaving && !self.left {
                    self.leave_acks.insert(from.node());
                    self.drive_leave(now, out);
                }
            }
            Body::Removed { view, member, action } => self.on_removed(now, view, member, action, out),
            Body::MovePast { member, min_epoch } => {
                if member == self.me {
                    self.request_new_epoch(min_epoch, NewEpochReason::MovePast, out);
                }
            }
        }
    }

    // ----------------------------------------------------------------------------------------------
    // Failure detection and discovery
    // ----------------------------------------------------------------------------------------------

    fn heartbeat(&self) -> Heartbeat {
        let (received, ordered, stable) = match &self.ord {
            Some(o) => {
                (self.ack_point(o), if o.is_sequencer() { o.ordered() } else { o.ordered_hint }, o.stable)
            }
            None => (0, 0, 0),
        };
        Heartbeat {
            view: self.view.as_ref().map(|v| v.id),
            primary: self.is_primary(),
            received,
            ordered,
            stable,
            leaving: self.leaving,
            removed: self.removed_self,
            frozen: self.frozen_since.is_some(),
            probe: self.stall.as_ref().map_or(0, |st| st.nonce),
            echo: 0,
        }
    }

    /// What this member acknowledges: what it holds, capped so that a member whose application lags
    /// (held deliveries during a state transfer) pushes back on the sequencer instead of buffering
    /// without bound. A transfer pushes back only for two of its provider's retransmission periods:
    /// a provider that can send has sent its state by then. One that cannot (its application left
    /// the group and its `LeaveGroup` is still to be ordered) is replaced only when the order moves
    /// on, which pushing back would stop for ever (a held safe message never becomes stable, the
    /// sequencer's window fills, the provider's leave is never ordered).
    fn ack_point(&self, o: &Ordering) -> u64 {
        let push_back = 2 * self.transfer_period();
        let held: usize = self
            .my_groups
            .values()
            .map(|g| match g {
                MyGroup::Awaiting { held, since } if self.last_step < since + push_back => held.len(),
                _ => 0,
            })
            .sum();
        let cap = (o.delivered + self.cfg.window_msgs as u64).saturating_sub(held as u64);
        o.received.min(cap.max(o.delivered))
    }

    fn send_heartbeats(&mut self, now: u64, out: &mut Vec<Output>) {
        let hb = self.heartbeat();
        let mut to: Vec<NodeId> = Vec::new();
        let in_view: BTreeSet<NodeId> =
            self.view.as_ref().map(|v| v.members.iter().map(|m| m.node()).collect()).unwrap_or_default();
        to.extend(in_view.iter().copied().filter(|n| *n != self.me.node()));
        if now >= self.next_disc {
            self.next_disc = now + self.cfg.discovery_interval_ms;
            // Probe every configured node outside the view, removed and unreachable ones included, so
            // a healed partition is always found again.
            to.extend(
                self.cfg.nodes.iter().map(|n| n.id).filter(|n| !in_view.contains(n) && *n != self.me.node()),
            );
        } else {
            // Nodes heard recently but outside the view get heartbeats too, so merges are quick.
            let recent: Vec<NodeId> = self
                .peers
                .values()
                .filter(|p| !in_view.contains(&p.member.node()) && self.alive(now, p))
                .map(|p| p.member.node())
                .collect();
            to.extend(recent);
        }
        self.send_many(&to, Body::Heartbeat(hb), out);
    }

    fn alive(&self, now: u64, p: &Peer) -> bool {
        now.saturating_sub(p.last_heard) <= self.cfg.failure_timeout_ms
    }

    /// A member of the view is suspected when it has been silent for the failure timeout, or when its
    /// node has been heard under a newer epoch (it restarted).
    fn suspected(&self, now: u64, m: Member) -> bool {
        if m == self.me {
            return false;
        }
        match self.peers.get(&m.node()) {
            None => {
                now.saturating_sub(self.started_at.max(self.view_installed_at()))
                    > self.cfg.failure_timeout_ms
            }
            Some(p) => p.member != m || !self.alive(now, p) || p.removed,
        }
    }

    fn view_installed_at(&self) -> u64 {
        self.last_primary_ms.unwrap_or(self.started_at)
    }

    fn on_heartbeat(&mut self, now: u64, from: Member, hb: Heartbeat, out: &mut Vec<Output>) {
        let in_view = self.view.as_ref().is_some_and(|v| v.contains(from));
        if !in_view {
            self.check_admission(now, from, out);
        }
        if hb.primary && hb.view > self.heard_primary {
            self.heard_primary = hb.view;
        }
        if hb.leaving {
            self.note_leaver(from, out);
        }
        if hb.probe != 0 && hb.echo == 0 {
            // A peer's scheduling stalled: answer at once, from here and now, where this member stands.
            // (Not to an answer: two stalled members would echo each other's echoes forever.)
            let mut echo = self.heartbeat();
            echo.echo = hb.probe;
            self.send(from.node(), Body::Heartbeat(echo), out);
        }
        if let Some(st) = self.stall.as_mut() {
            if hb.echo == st.nonce {
                st.echoes.insert(from.node(), (from, hb.view, hb.frozen));
                self.try_confirm(now, out);
            }
        }
        // A member that accepted an install and sees a member of that view already in it knows the
        // view was committed. Not during a stall: that heartbeat may have waited in the socket buffer
        // since before it (`try_confirm` installs on fresh answers instead).
        if let Some(acc) = &self.accepted {
            if self.stall.is_none()
                && hb.view == Some(acc.view.id)
                && acc.view.contains(from)
                && self.accept_complete()
            {
                let inst = acc.clone();
                self.install(now, inst, out);
            }
        }
        let my_view = self.view.as_ref().map(|v| v.id);
        if in_view && hb.view == my_view {
            if let Some(o) = self.ord.as_mut() {
                if from == o.sequencer {
                    o.ordered_hint = o.ordered_hint.max(hb.ordered);
                    o.learn_stable(hb.stable);
                } else if o.is_sequencer() && o.on_ack(from, hb.received) {
                    self.stable_dirty = true;
                }
            }
        }
        // A newer *primary* view was installed without this leaver: a quorum holds the leave (or its
        // removal), so acknowledgements still missing no longer matter. A newer non-primary view is no
        // such sign: it may be a minority that is cut off from the nodes that form the next primary
        // view, which would then count this member as failed (L6).
        if self.leaving && !self.left && hb.primary {
            if let (Some(theirs), Some(mine)) = (hb.view, my_view) {
                if theirs > mine {
                    self.finish_leave(now, out);
                }
            }
        }
    }

    /// True when `m` is known to have left cleanly: its `Leave` reached this member (or this member's
    /// disk has it), its heartbeats say it is leaving, or a promise in `promises` reports it as leaving
    /// or as a known leaver (L6).
    fn known_leaver(&self, m: Member, promises: &BTreeMap<Member, FlushState>) -> bool {
        self.leavers.contains(&m)
            || self.durable.has_left(m)
            || self.peers.get(&m.node()).is_some_and(|p| p.member == m && p.leaving)
            || promises.get(&m).is_some_and(|s| s.leaving)
            || promises.values().any(|s| s.left.contains(&m))
    }

    /// Called when a member outside this member's view is heard. On the primary side this is where a
    /// stateful merge is caught (G8): a removed member is refused and told so.
    fn check_admission(&mut self, now: u64, m: Member, out: &mut Vec<Output>) {
        let leaving = self.known_leaver(m, &BTreeMap::new());
        match self.durable.registry.classify(m) {
            Admission::Fresh => {}
            // A member that left cleanly keeps heartbeating (marked leaving) until it sees the view
            // without it or has every acknowledgement; those heartbeats race the install. It wants no
            // view, carries no state anyone relies on, and is never a stateful merge (L6).
            Admission::StatefulMerge(_) if leaving => {}
            Admission::StatefulMerge(removal) => {
                if self.is_primary() {
                    self.handle_stateful_merge(now, m, out);
                } else if let Some(r) = removal {
                    // No primary view here, but the registry (replicated from the primary history)
                    // says this member was removed: tell it, so that it stops proposing views that
                    // every member knowing the registry refuses, and members that do not know it yet
                    // stop waiting for it. The primary side records and resolves the merge once it
                    // has formed.
                    self.tell_removed_from_outside(now, m, r.view, out);
                }
            }
            Admission::Stale { min_epoch } => {
                // The cluster saw a newer epoch of this node: telling it is always right.
                self.send(m.node(), Body::MovePast { member: m, min_epoch }, out);
            }
        }
    }

    /// The highest epoch this member knows for `node`: heard, in its registry, its view, known left.
    pub fn highest_known_epoch(&self, node: NodeId) -> Epoch {
        self.seen_running_epoch(node).max(crate::inquiry::known_epoch_on_disk(&self.durable, node))
    }

    /// The highest epoch this member saw `node` use (as [`Node::highest_known_epoch`] without the epochs
    /// only claimed).
    fn seen_running_epoch(&self, node: NodeId) -> Epoch {
        let mut e = crate::inquiry::seen_epoch_on_disk(&self.durable, node);
        if let Some(p) = self.peers.get(&node) {
            e = e.max(p.member.epoch());
        }
        for m in self.view.iter().flat_map(|v| v.members.iter()).chain(self.told_stale.keys()) {
            if m.node() == node {
                e = e.max(m.epoch());
            }
        }
        e
    }

    /// Tells `m`, whose node is known under a newer epoch, to restart above every epoch known for it.
    fn tell_stale(&mut self, now: u64, m: Member, out: &mut Vec<Output>) {
        let known = self.peers.get(&m.node()).map_or(Epoch(0), |p| p.member.epoch());
        let min_epoch = Epoch(known.max(self.durable.registry.known_epoch(m.node())).0 + 1);
        if due_again(&mut self.told_stale, m, now, self.cfg.heartbeat_interval_ms) {
            self.send(m.node(), Body::MovePast { member: m, min_epoch }, out);
        }
    }

    fn tell_removed_from_outside(&mut self, now: u64, m: Member, view: ViewId, out: &mut Vec<Output>) {
        if !due_again(&mut self.told_removed, m, now, self.cfg.discovery_interval_ms) {
            return;
        }
        let (_, action) = merge_actions(self.cfg.merge_policy);
        self.send(m.node(), Body::Removed { view, member: m, action }, out);
    }

    fn handle_stateful_merge(&mut self, now: u64, m: Member, out: &mut Vec<Output>) {
        let Some(view) = self.view.clone() else { return };
        let first = !self.merges.contains_key(&m);
        let last = self.merges.get(&m).copied().unwrap_or(0);
        if !first && now.saturating_sub(last) < self.cfg.discovery_interval_ms {
            return;
        }
        self.merges.insert(m, now);
        let resolver = view.leader() == Some(self.me);
        let policy = self.cfg.merge_policy;
        let (action, told) = merge_actions(policy);
        if first {
            let logged = if resolver { action } else { MergeAction::Refuse };
            self.record(
                now,
                Event::StatefulMerge {
                    member: m,
                    view: view.id,
                    action: logged,
                    policy: Some(policy.name().into()),
                },
                out,
            );
        }
        if resolver && policy == MergePolicy::Fence {
            // A zombie showing up again after an earlier fence (e.g. one that only paused it) is
            // fenced again, once per detection round; an in-flight fence of it is not a reason to skip.
            // Retries back off like other fences (twice the failure timeout), so a zombie that keeps
            // showing up is not fenced at every discovery round.
            let again = match self.merge_fence_requested.get(&m) {
                None => true,
                Some(t) => {
                    !self.fence_inflight.contains_key(&m)
                        && now.saturating_sub(*t) >= self.cfg.failure_timeout_ms * 2
                }
            };
            if again {
                self.merge_fence_requested.insert(m, now);
                self.fence_inflight.remove(&m);
                self.request_fence(now, m, "stateful_merge", out);
            }
        }
        self.send(m.node(), Body::Removed { view: view.id, member: m, action: told }, out);
    }

    fn on_removed(
        &mut self,
        now: u64,
        view: ViewId,
        member: Member,
        action: RemovedAction,
        out: &mut Vec<Output>,
    ) {
        if member != self.me {
            return;
        }
        if !self.removed_self {
            self.removed_self = true;
            self.record(now, Event::RemovedSelf { view }, out);
            self.notify(Notification::RemovedSelf { view }, out);
            self.coord = None;
            // The primary history counts this member as removed from a primary view, perhaps from an
            // install it never accepted that a later coordinator had to assume made. With watchdog
            // fencing the primary side waits for it to go silent: its watchdog counts from here if it
            // never was in a working primary view, or that fence would never complete.
            if self.last_primary_ms.is_none() {
                self.last_primary_ms = Some(now);
            }
        }
        match action {
            RemovedAction::Restart => {
                self.request_new_epoch(Epoch(self.me.epoch().0 + 1), NewEpochReason::Restart, out)
            }
            RemovedAction::Reset => {
                self.request_new_epoch(Epoch(self.me.epoch().0 + 1), NewEpochReason::Reset, out)
            }
            RemovedAction::Wait => self.block(now, BlockReason::StatefulMergeWait, out),
            RemovedAction::AwaitFence => {}
        }
    }

    fn request_new_epoch(&mut self, min_epoch: Epoch, reason: NewEpochReason, out: &mut Vec<Output>) {
        if !self.new_epoch_requested {
            self.new_epoch_requested = true;
            out.push(Output::NewEpoch { min_epoch: min_epoch.max(Epoch(self.me.epoch().0 + 1)), reason });
        }
    }

    // ----------------------------------------------------------------------------------------------
    // View change: coordinator side
    // ----------------------------------------------------------------------------------------------

    /// The members this node would put in a view now: itself and every admissible member heard within
    /// the failure timeout that is not leaving.
    fn live_set(&self, now: u64) -> Vec<Member> {
        let mut v = vec![self.me];
        for p in self.peers.values() {
            if !self.alive(now, p) || p.leaving || p.removed || self.leavers.contains(&p.member) {
                continue;
            }
            if self
                .refused
                .get(&p.member)
                .is_some_and(|t| now.saturating_sub(*t) < self.cfg.failure_timeout_ms * 4)
            {
                continue;
            }
            if !self.durable.registry.admissible(p.member) {
                continue;
            }
            // A member stalled for the failure timeout without its view being confirmed takes no part in
            // view changes (its view moved on without it): waiting for it as a candidate or a
            // participant would stop everyone. It is told it was removed once a view forms without it.
            if self.stuck_stalled(now, p) {
                continue;
            }
            // A view member that the failure detector suspects is not live, even if a late datagram
            // refreshed it.
            if self.view.as_ref().is_some_and(|vw| vw.contains(p.member)) && self.suspected(now, p.member) {
                continue;
            }
            v.push(p.member);
        }
        v.sort();
        v
    }

    /// True when peer `p` has been stalled (probing for confirmation of its view) for the failure timeout.
    fn stuck_stalled(&self, now: u64, p: &Peer) -> bool {
        p.stalled_since.is_some_and(|t| now.saturating_sub(t) >= self.cfg.failure_timeout_ms)
    }

    /// True when this member still hears view member `m`: heard within the failure timeout under that
    /// epoch, not leaving, not removed, not stuck in a stall, admissible and not suspected.
    fn still_hears(&self, now: u64, m: Member) -> bool {
        self.peers.get(&m.node()).is_some_and(|p| {
            p.member == m
                && self.alive(now, p)
                && !self.stuck_stalled(now, p)
                && !p.leaving
                && !p.removed
                && !self.leavers.contains(&m)
                && self.durable.registry.admissible(m)
        }) && !self.suspected(now, m)
    }

    /// True for the fencer of a primary view that knows a member its registry removed as failed (and
    /// did not recover) left cleanly after all: it holds that fence, and a new install (same members)
    /// records the leave (`Registry::left_after_all`).
    fn left_after_removal(&self) -> bool {
        self.is_fencer()
            && self.frozen_since.is_none()
            && self.durable.registry.unrecovered_failures().any(|m| self.known_leaver(m, &BTreeMap::new()))
    }

    fn maybe_start_view_change(&mut self, now: u64, out: &mut Vec<Output>) {
        if self.coord.is_some()
            || self.removed_self
            || self.leaving
            || self.left
            || self.stall.is_some()
            || now < self.backoff_until
        {
            return;
        }
        let live = self.live_set(now);
        let candidate = live.first().copied() == Some(self.me);
        let left_after_removal = self.left_after_removal();
        if !candidate && !left_after_removal {
            return;
        }
        let need = match &self.view {
            None => {
                let all = live.len() == self.cfg.nodes.len();
                all || now.saturating_sub(self.started_at) >= self.cfg.discovery_interval_ms
            }
            // Also when a member of this view has moved on to a newer view without this member
            // (it reports that view in its heartbeats) while no change is in progress here: the
            // membership looks the same from here, but the view is not shared any more.
            Some(v) => {
                v.members != live
                    || (self.accepted.is_none()
                        && self.frozen_since.is_none()
                        && self.peers.values().any(|p| {
                            v.contains(p.member)
                                && live.contains(&p.member)
                                && (p.view.is_some_and(|pv| pv > v.id)
                                    // ...or a member of this view has been frozen by a change that
                                    // is going nowhere (its coordinator gave it up): a new ballot
                                    // settles what it accepted.
                                    || p.frozen_since.is_some_and(|t| {
                                        now.saturating_sub(t) > self.cfg.view_change_timeout_ms * 4
                                    }))
                        }))
            }
        };
        let stuck =
            self.frozen_since.is_some_and(|t| now.saturating_sub(t) > self.cfg.view_change_timeout_ms * 3);
        let two_node_fenced = self.two_node_ready_to_promote();
        if need || stuck || two_node_fenced || left_after_removal {
            self.start_view_change(now, live, out);
        }
    }

    /// In two-node mode a lone member becomes primary only once the other node is fenced.
    fn two_node_ready_to_promote(&self) -> bool {
        if !self.cfg.quorum.two_node {
            return false;
        }
        match &self.view {
            Some(v) if !v.primary && v.members.len() == 1 => self.other_fenced_two_node(),
            _ => false,
        }
    }

    fn other_fenced_two_node(&self) -> bool {
        let Some(lp) = &self.last_primary else { return false };
        lp.members
            .iter()
            .filter(|m| m.node() != self.me.node())
            .all(|m| self.durable.registry.removal(*m).is_some_and(|r| r.fence.is_done()))
    }

    fn start_view_change(&mut self, now: u64, members: Vec<Member>, out: &mut Vec<Output>) {
        let seq = self
            .max_seq_seen
            .max(self.durable.max_view_seq)
            .max(self.promised.seq)
            .max(self.view.as_ref().map_or(0, |v| v.id.seq))
            + 1;
        let ballot = ViewId { seq, coord: self.me.node() };
        self.max_seq_seen = seq;
        // The ballot is persisted before it is sent, so a restarted coordinator never reuses a view id (G1).
        self.persist(out);
        self.coord = Some(Coord {
            ballot,
            members: members.clone(),
            phase: Phase::Preparing { promises: BTreeMap::new() },
            phase_start: now,
            last_tx: now,
        });
        let nodes: Vec<NodeId> = members.iter().map(|m| m.node()).collect();
        self.send_many(&nodes, Body::Prepare { ballot, members }, out);
    }

    fn abort_coord(&mut self, now: u64) {
        // A coordinator that gives up its own install before committing it knows nobody will commit
        // it (only the coordinator sends the commit; a later coordinator completes it only if every
        // member of it accepted, and this member now refuses): its own acceptance is released.
        if let Some(c) = self.coord.take() {
            if matches!(c.phase, Phase::Accepting { .. })
                && self.accepted.as_ref().is_some_and(|a| a.view.id == c.ballot)
            {
                self.released = Some(c.ballot);
                self.accepted = None;
                self.accept_from = None;
                self.frozen_since = None;
            }
        }
        self.coord = None;
        // Back off by a node-dependent amount so that competing coordinators do not collide forever.
        let jitter = u64::from(self.me.node().0 % 7) * self.cfg.view_change_timeout_ms / 8;
        self.backoff_until = now + self.cfg.view_change_timeout_ms / 4 + jitter;
    }

    fn drive_coordinator(&mut self, now: u64, out: &mut Vec<Output>) {
        let Some(c) = &self.coord else { return };
        let timeout = self.cfg.view_change_timeout_ms;
        let elapsed = now.saturating_sub(c.phase_start);
        let resend = now.saturating_sub(c.last_tx) >= self.cfg.retransmit_interval_ms * 2;
        let ballot = c.ballot;
        match &c.phase {
            Phase::Preparing { promises } => {
                let missing: Vec<Member> =
                    c.members.iter().copied().filter(|m| !promises.contains_key(m)).collect();
                if elapsed > timeout {
                    // Retry without the silent members.
                    for m in &missing {
                        self.refused.insert(*m, now);
                    }
                    self.abort_coord(now);
                    self.backoff_until = now;
                } else if resend {
                    let members = c.members.clone();
                    let nodes: Vec<NodeId> = missing.iter().map(|m| m.node()).collect();
                    self.send_many(&nodes, Body::Prepare { ballot, members }, out);
                    if let Some(c) = self.coord.as_mut() {
                        c.last_tx = now;
                    }
                }
            }
            Phase::Completing { waiting } => {
                if elapsed > timeout || waiting.is_empty() {
                    // A member that still cannot install the completed view (it misses messages up
                    // to its cut that only a dead member held) is left out of the next change: it
                    // is removed, fenced, and comes back as a new member.
                    for m in waiting.clone() {
                        self.refused.insert(m, now);
                    }
                    self.abort_coord(now);
                    self.backoff_until = now;
                } else if resend {
                    let nodes: Vec<NodeId> = waiting.iter().map(|m| m.node()).collect();
                    // During completion the ballot field holds the id of the view being completed.
                    self.send_many(&nodes, Body::Commit { ballot }, out);
                    if let Some(c) = self.coord.as_mut() {
                        c.last_tx = now;
                    }
                }
            }
            Phase::Accepting { install, accepted } => {
                let missing: Vec<Member> =
                    install.view.members.iter().copied().filter(|m| !accepted.contains(m)).collect();
                if elapsed > timeout * 2 {
                    for m in &missing {
                        self.refused.insert(*m, now);
                    }
                    self.abort_coord(now);
                    self.backoff_until = now;
                } else if resend {
                    let body = Body::Accept { ballot, install: install.clone() };
                    let nodes: Vec<NodeId> = missing.iter().map(|m| m.node()).collect();
                    self.send_many(&nodes, body, out);
                    if let Some(c) = self.coord.as_mut() {
                        c.last_tx = now;
                    }
                }
            }
        }
    }

    fn on_promise(
        &mut self,
        now: u64,
        from: Member,
        ballot: ViewId,
        state: FlushState,
        out: &mut Vec<Output>,
    ) {
        self.max_seq_seen = self.max_seq_seen.max(state.max_seq);
        let Some(c) = self.coord.as_mut() else { return };
        if c.ballot != ballot || !c.members.contains(&from) {
            return;
        }
        let Phase::Preparing { promises } = &mut c.phase else { return };
        promises.insert(from, state);
        if promises.len() == c.members.len() {
            self.decide(now, out);
        }
    }

    fn on_reject(
        &mut self,
        now: u64,
        _from: Member,
        ballot: ViewId,
        reason: RejectReason,
        out: &mut Vec<Output>,
    ) {
        let Some(c) = &self.coord else { return };
        if c.ballot != ballot {
            return;
        }
        match reason {
            RejectReason::Outdated { promised } => {
                self.max_seq_seen = self.max_seq_seen.max(promised.seq);
                self.abort_coord(now);
            }
            RejectReason::Drops { .. } => {
                // The rejecting member still hears members this proposal left out. Try again shortly:
                // by then this node hears them too (they answer its discovery probes), or that member
                // has stopped hearing them for the failure timeout.
                self.abort_coord(now);
                self.backoff_until = now + self.cfg.heartbeat_interval_ms;
            }
            RejectReason::Inadmissible { removed, stale } => {
                if removed.contains(&self.me) || stale.contains(&self.me) {
                    // We learn we were removed; the rejecting member also sends us a Removed notice
                    // with the action; until then we stop coordinating.
                    self.abort_coord(now);
                    self.backoff_until = now + self.cfg.failure_timeout_ms;
                    return;
                }
                for m in removed.iter().chain(stale.iter()) {
                    self.refused.insert(*m, now);
                }
                self.abort_coord(now);
                self.backoff_until = now;
                self.maybe_start_view_change(now, out);
            }
        }
    }

    /// All proposed members promised: complete an interrupted install if there is one, else compute the
    /// new view, its registry and the cut of every previous view, and send `Accept`.
    fn decide(&mut self, now: u64, out: &mut Vec<Output>) {
        let Some(c) = self.coord.take() else { return };
        let Phase::Preparing { promises } = c.phase else { return };
        let newest_current = promises.values().filter_map(|s| s.view.as_ref().map(|v| v.id)).max();

        // 1. An accepted install newer than every participant's view may have been committed somewhere:
        //    finish it first, then start again. Each view id is a decision of its own: participants may
        //    hold acceptances of different installs, and one that was never committed says nothing of
        //    an older one that was, so they are settled newest first until one is completed or waited
        //    for (dropping the newest and forgetting the others would let an acceptor of a committed
        //    install go on into a primary view where nobody installed it, G3).
        let mut pending: Vec<Install> = promises.values().filter_map(|s| s.accepted.clone()).collect();
        pending.sort_by_key(|i| std::cmp::Reverse(i.view.id));
        pending.dedup_by_key(|i| i.view.id);
        for inst in pending {
            // It can never have been committed if one of its own members is here and neither accepted
            // nor installed it: that member promised our higher ballot first, so it will refuse the
            // install, and a commit needs every member's acceptance.
            // A member that installed it and moved on (its last primary view is this one) did not refuse
            // it: the install was committed.
            // So did a later incarnation whose disk shows it installed (its registry, adopted at install,
            // records it as the last primary view).
            let installed_by = |s: &FlushState| {
                s.view.as_ref().is_some_and(|v| v.id == inst.view.id)
                    || s.last_primary.as_ref().is_some_and(|v| v.id == inst.view.id)
                    || (s.registry.last_primary == Some(inst.view.id) && !s.registry.last_primary_assumed)
            };
            // A later incarnation of a member refuses for it when it inherited no acceptance of it: the
            // member persisted its acceptance before voting, and a later one it accepted instead was
            // accepted only after that install's coordinator had settled this one (as
            // `AcceptedInstall::refuted_by` reasons). Not one whose data directory forgot what it knew
            // (`catching_up`: wiped, or an older backup): the acceptance may be what it lost (G3).
            let refused_by_a_member = promises.iter().any(|(m, s)| {
                inst.view.members.iter().any(|im| im.node() == m.node() && im.epoch() <= m.epoch())
                    && !s.catching_up
                    && s.accepted.as_ref().is_none_or(|a| a.view.id != inst.view.id)
                    && s.inherited.as_ref().is_none_or(|a| a.view != inst.view.id)
                    && !installed_by(s)
                    // A record it only assumed made stands for an earlier incarnation's acceptance.
                    && !(s.registry.last_primary == Some(inst.view.id) && s.registry.last_primary_assumed)
            });
            let not_yet_installed_here = newest_current.is_none_or(|cur| inst.view.id > cur)
                || promises.values().any(|s| {
                    s.accepted.as_ref().is_some_and(|a| a.view.id == inst.view.id)
                        && s.view.as_ref().is_none_or(|v| v.id < inst.view.id)
                });
            // It may have been committed only if some member installed it, or if every member of it
            // accepted it. Members we cannot see leave that open, unless their node has since come back
            // under a newer epoch (then whatever the old incarnation installed died with it).
            // A member a later primary view already removed is settled too: that view's coordinator
            // decided about this install.
            let mut known = self.durable.registry.clone();
            for s in promises.values() {
                known.merge(&s.registry);
            }
            // Installed somewhere: a participant installed it, or a registry records it as the last
            // primary view (registries are adopted at install, so some member installed it). A record
            // that a coordinator only assumed it made (an inherited acceptance it could not settle) is
            // no proof: the rest of the cluster may have gone on without it (G3).
            let installed_somewhere = promises.values().any(installed_by)
                || (known.last_primary == Some(inst.view.id) && !known.last_primary_assumed);
            let unknown: Vec<Member> = inst
                .view
                .members
                .iter()
                .copied()
                .filter(|m| !promises.contains_key(m))
                .filter(|m| {
                    // Restarted, and its new incarnation takes part: the new incarnation's persisted
                    // registry (in its promise) tells whether a primary view was formed since. One that
                    // is only heard of may have formed one this coordinator knows nothing about.
                    let restarted = promises
                        .keys()
                        .chain(std::iter::once(&self.me))
                        .any(|q| q.node() == m.node() && q.epoch() > m.epoch());
                    // Left cleanly: it takes part in no view after its leave, and whatever it
                    // installed before, the participants that accepted the install settle it now.
                    !restarted && !self.known_leaver(*m, &promises)
                })
                .filter(|m| known.admissible(*m))
                .collect();
            // An install older than a primary view someone already knows of is history: a primary view
            // was formed after it, so completing it now would put a primary view out of order.
            // Also one a peer's heartbeat showed, here or at a participant: its members may all have
            // left since, and their coordinator settled this install when it formed that view.
            let newest_primary = promises
                .values()
                .filter_map(|s| s.last_primary.as_ref().map(|v| v.id))
                .chain(known.last_primary)
                .chain(promises.values().filter_map(|s| s.heard_primary))
                .chain(self.heard_primary)
                .max();
            // So is an install one of whose members a primary view has removed since: that view was
            // formed after the install was decided (a removed member is never admitted again, G8),
            // without it, and fenced its members; completing it now would re-admit removed members.
            let removed_since = !installed_somewhere
                && inst.view.members.iter().any(|m| !promises.contains_key(m) && !known.admissible(*m));
            let superseded = newest_primary.is_some_and(|p| p > inst.view.id) || removed_since;
            if !superseded && !refused_by_a_member && !installed_somewhere && !unknown.is_empty() {
                // Undecidable from here: completing it could fork the primary history if it was never
                // committed, dropping it could if it was. Wait for those members (or their restart).
                self.backoff_until = now + self.cfg.view_change_timeout_ms;
                return;
            }
            if !superseded && !refused_by_a_member && not_yet_installed_here {
                let waiting: BTreeSet<Member> = promises
                    .iter()
                    .filter(|(_, s)| s.accepted.as_ref().is_some_and(|a| a.view.id == inst.view.id))
                    .map(|(m, _)| *m)
                    .collect();
                let nodes: Vec<NodeId> = waiting.iter().map(|m| m.node()).collect();
                self.coord = Some(Coord {
                    ballot: inst.view.id,
                    members: c.members.clone(),
                    phase: Phase::Completing { waiting },
                    phase_start: now,
                    last_tx: now,
                });
                self.send_many(&nodes, Body::Commit { ballot: inst.view.id }, out);
                return;
            }
        }

        // 2. The merged registry must admit every member (G8); otherwise drop them and retry. Installs
        //    accepted by earlier incarnations of the participants count as made (see `Durable::accepted`).
        let mut registry = self.durable.registry.clone();
        for s in promises.values() {
            registry.merge(&s.registry);
        }
        let known: Vec<&View> = promises
            .values()
            .filter_map(|s| s.last_primary.as_ref())
            .chain(self.last_primary.as_ref())
            .chain(registry.last_primary_view.as_ref())
            .collect();
        let assumed_installs: Vec<AcceptedInstall> = promises
            .values()
            .filter_map(|s| s.inherited.as_ref())
            .chain(self.inherited.as_ref())
            .filter(|a| !promises.iter().any(|(from, s)| a.refuted_by(*from, s)))
            .cloned()
            .collect();
        let assumed: Vec<Registry> =
            assumed_installs.iter().map(|a| a.assumed_removals(known.iter().copied())).collect();
        for r in &assumed {
            registry.merge(r);
        }
        // An install assumed made whose members held quorum was a primary view: it is the previous
        // primary view if nothing newer is known, so the transition removes its members that are not in
        // the new view (else a member only it contained would later come back unrefused, G8).
        let assumed_primary: Vec<View> = assumed_installs
            .iter()
            .filter(|a| {
                let nodes: Vec<NodeId> = a.members.iter().map(|m| m.node()).collect();
                !nodes.is_empty()
                    && quorum::is_quorate(&QuorumInput {
                        config: &self.cfg,
                        present: &nodes,
                        seen_all_once: true,
                    })
            })
            .map(|a| View { id: a.view, members: a.members.clone(), primary: true })
            .collect();
        // Recorded as the registry's last primary view, so the assumption outlives this view: the
        // inherited acceptance is dropped once any later view (primary or not) is installed.
        if let Some(v) = assumed_primary.iter().max_by_key(|v| v.id) {
            if registry.last_primary_view.as_ref().is_none_or(|k| k.id < v.id) {
                registry.last_primary = Some(v.id);
                registry.last_primary_view = Some(v.clone());
                registry.last_primary_assumed = true;
            }
        }
        let inadmissible: Vec<Member> = c
            .members
            .iter()
            .copied()
            .filter(|m| !matches!(registry.classify(*m), Admission::Fresh))
            .collect();
        if inadmissible.contains(&self.me) {
            // This coordinator itself was removed (by an install it learns of only now, maybe one only
            // assumed made): it is stale, and what it would say of the others is no judgement of the
            // primary side. It handles its own removal and names nobody else (L3).
            self.durable.registry.merge(&registry);
            self.check_admission(now, self.me, out);
            self.backoff_until = now;
            return;
        }
        if !inadmissible.is_empty() {
            self.durable.registry.merge(&registry);
            for m in &inadmissible {
                self.refused.insert(*m, now);
                self.check_admission(now, *m, out);
            }
            self.backoff_until = now;
            return;
        }

        // 3. The new view and whether it is primary.
        let members = c.members.clone();
        let seen_all = promises.values().any(|s| s.seen_all) || self.seen_all || {
            let nodes: BTreeSet<NodeId> = members.iter().map(|m| m.node()).collect();
            self.cfg.nodes.iter().all(|n| nodes.contains(&n.id))
        };
        // Members whose data directory forgot what it knew count for no quorum until they installed a
        // primary view (`Durable::catching_up`): the intersection with every earlier primary view must
        // be a member that remembers it.
        let present: Vec<NodeId> = members
            .iter()
            .filter(|m| !promises.get(m).is_some_and(|s| s.catching_up))
            .map(|m| m.node())
            .collect();
        // The previous primary view: the newest any participant installed or any registry (persisted,
        // so restarted members remember it too) recorded.
        let prev_primary: Option<View> = promises
            .values()
            .filter_map(|s| s.last_primary.clone())
            .chain(registry.last_primary_view.clone())
            .chain(assumed_primary)
            .max_by_key(|v| v.id);
        let mut primary = quorum::is_quorate(&QuorumInput {
            config: &self.cfg,
            present: &present,
            seen_all_once: seen_all,
        });
        if primary && self.cfg.quorum.two_node && members.len() == 1 && self.cfg.nodes.len() == 2 {
            // Two-node mode: a lone node becomes primary only once the other is fenced; the fence race
            // decides which side that is.
            if let Some(pp) = &prev_primary {
                let others_fenced = pp
                    .members
                    .iter()
                    .filter(|m| m.node() != members[0].node())
                    .all(|m| registry.removal(*m).is_some_and(|r| r.fence.is_done()));
                primary = others_fenced;
            }
        }
        let view = View { id: c.ballot, members: members.clone(), primary };

        // 4. The registry transition: members of the previous primary view that are not in this one
        //    are removed; failed ones wait for fencing before recovery (G9).
        let left: Vec<Member> = prev_primary
            .as_ref()
            .map(|pp| {
                pp.members
                    .iter()
                    .copied()
                    .filter(|m| !view.contains(*m) && self.known_leaver(*m, &promises))
                    .collect()
            })
            .unwrap_or_default();
        if primary {
            // When the previous primary view is a record only assumed made (an install nobody is known
            // to have installed), the newest primary view someone did install loses its absent members
            // too: the assumption's own removals may have been refuted and dropped, and a member only
            // the installed view had would otherwise come back unrefused (G8).
            let installed_prev: Option<View> = promises
                .values()
                .filter_map(|s| s.last_primary.clone())
                .chain(promises.values().filter_map(|s| {
                    s.registry.last_primary_view.clone().filter(|_| !s.registry.last_primary_assumed)
                }))
                .chain(self.last_primary.clone())
                .max_by_key(|v| v.id);
            if let Some(ip) =
                installed_prev.filter(|ip| prev_primary.as_ref().is_some_and(|pp| pp.id > ip.id))
            {
                let ip_left: Vec<Member> = ip
                    .members
                    .iter()
                    .copied()
                    .filter(|m| !view.contains(*m) && self.known_leaver(*m, &promises))
                    .collect();
                registry.record_transition(Some(&ip), &view, &ip_left, true, now);
            }
            registry.record_transition(prev_primary.as_ref(), &view, &left, true, now);
            // Earlier removals as failed of members now known to have left cleanly (their `Leave` arrived
            // late, or their next incarnation reports it) become clean leaves, unless recovered already.
            let failed_before: Vec<Member> = registry.unrecovered_failures().collect();
            for m in failed_before {
                if self.known_leaver(m, &promises) {
                    registry.left_after_all(m);
                }
            }
            if self.cfg.restart_counts_as_fenced {
                for t in registry.pending_fences() {
                    if view.members.iter().any(|m| m.node() == t.node() && m.epoch() > t.epoch()) {
                        registry.mark_fenced(t, FenceMethod::Restarted);
                        self.record(
                            now,
                            Event::FenceResult {
                                target: t,
                                ok: true,
                                method: FenceMethod::Restarted,
                                detail: "node rejoined with a higher epoch".into(),
                            },
                            out,
                        );
                    }
                }
            }
        }

        // 5. The cut of every previous view (G4, G10): every member coming from view V delivers exactly
        //    up to min(highest contiguous point any of them holds, just before the first safe message
        //    not known stable).
        let mut by_view: BTreeMap<ViewId, Vec<(&Member, &FlushState)>> = BTreeMap::new();
        for (m, s) in &promises {
            if let Some(v) = &s.view {
                by_view.entry(v.id).or_default().push((m, s));
            }
        }
        let mut cuts = BTreeMap::new();
        for (vid, parts) in by_view {
            let Some(&(holder, best)) =
                parts.iter().max_by_key(|(m, s)| (s.received, std::cmp::Reverse(**m)))
            else {
                continue;
            };
            let max_stable = parts.iter().map(|(_, s)| s.stable).max().unwrap_or(0);
            let first_unstable_safe = parts
                .iter()
                .flat_map(|(_, s)| s.safe_above_stable.iter().copied())
                .filter(|&q| q > max_stable)
                .min();
            let mut seq = best.received;
            if let Some(q) = first_unstable_safe {
                seq = seq.min(q - 1);
            }
            let max_delivered = parts.iter().map(|(_, s)| s.delivered).max().unwrap_or(0);
            seq = seq.max(max_delivered);
            cuts.insert(vid, Cut { seq, holder: *holder });
        }
        let prev: BTreeMap<Member, Option<ViewId>> =
            promises.iter().map(|(m, s)| (*m, s.view.as_ref().map(|v| v.id))).collect();
        // The group table comes from the members that are furthest along the primary history after
        // the cuts: they delivered the same prefix. A restarted leader with no history must not impose
        // its empty table, and members of one non-primary view may come from different histories.
        let position = |s: &FlushState| -> (Option<ViewId>, u64) {
            match &s.view {
                // Only a member that applied its view's group table (its `Sync`) carries that view's
                // history...
                Some(v) if v.primary && s.history.0 == Some(v.id) => {
                    (Some(v.id), cuts.get(&v.id).map_or(s.delivered, |c| c.seq))
                }
                // ...or one that will apply it in this flush: a view with a lineage orders its `Sync`
                // first (the sequencer's gate), so a cut above zero delivers it, and the member ends
                // the flush with the same table as every other member coming from that view. Counted
                // as having no history, it would keep that table while members from elsewhere start
                // empty (G11).
                Some(v) if v.primary && cuts.get(&v.id).is_some_and(|c| c.seq >= 1) => {
                    (Some(v.id), cuts.get(&v.id).map_or(0, |c| c.seq))
                }
                _ => s.history,
            }
        };
        let reference = promises.values().map(position).max();
        let lineage: Vec<Member> = match reference {
            Some(r) if r.0.is_some() => {
                promises.iter().filter(|(_, s)| position(s) == r).map(|(m, _)| *m).collect()
            }
            _ => Vec::new(),
        };
        // The install names as left every clean leaver a participant's view loses, not only those of the
        // previous primary view: a member that left from a non-primary view (it was never in a primary
        // one, or left after losing quorum) is gone cleanly too, and each participant records the view
        // with the members it loses (L6).
        let mut left = left;
        for s in promises.values() {
            for m in s.view.iter().flat_map(|v| v.members.iter()) {
                if !view.contains(*m) && !left.contains(m) && self.known_leaver(*m, &promises) {
                    left.push(*m);
                }
            }
        }
        left.sort();
        let install = Install {
            view,
            registry,
            cuts,
            prev,
            left,
            prev_primary: prev_primary.map(|v| v.id),
            seen_all,
            lineage,
        };
        let nodes: Vec<NodeId> = members.iter().map(|m| m.node()).collect();
        self.coord = Some(Coord {
            ballot: c.ballot,
            members,
            phase: Phase::Accepting { install: Box::new(install.clone()), accepted: BTreeSet::new() },
            phase_start: now,
            last_tx: now,
        });
        self.send_many(&nodes, Body::Accept { ballot: c.ballot, install: Box::new(install) }, out);
    }

    fn on_accepted(&mut self, _now: u64, from: Member, ballot: ViewId, out: &mut Vec<Output>) {
        let Some(c) = self.coord.as_mut() else { return };
        if c.ballot != ballot {
            return;
        }
        let Phase::Accepting { install, accepted } = &mut c.phase else { return };
        if !install.view.contains(from) {
            return;
        }
        accepted.insert(from);
        if accepted.len() == install.view.members.len() {
            let nodes: Vec<NodeId> = install.view.members.iter().map(|m| m.node()).collect();
            self.coord = None;
            self.send_many(&nodes, Body::Commit { ballot }, out);
        }
    }

    fn on_installed(&mut self, _now: u64, from: Member, view: ViewId, _out: &mut Vec<Output>) {
        if let Some(c) = self.coord.as_mut() {
            if let Phase::Completing { waiting } = &mut c.phase {
                if c.ballot == view {
                    waiting.remove(&from);
                }
            }
        }
    }

    // ----------------------------------------------------------------------------------------------
    // View change: participant side
    // ----------------------------------------------------------------------------------------------

    fn flush_state(&self) -> FlushState {
        let (received, delivered, stable, safe) = match &self.ord {
            Some(o) => (o.received, o.delivered, o.stable, o.safe_above_stable()),
            None => (0, 0, 0, Vec::new()),
        };
        FlushState {
            view: self.view.clone(),
            last_primary: self.last_primary.clone(),
            registry: self.durable.registry.clone(),
            received,
            delivered,
            stable,
            safe_above_stable: safe,
            accepted: self.accepted.clone(),
            max_seq: self.max_seq_seen.max(self.durable.max_view_seq),
            seen_all: self.seen_all,
            leaving: self.leaving,
            left: {
                let mut l = self.durable.left.clone();
                l.extend(self.leavers.iter().copied());
                l.sort();
                l.dedup();
                l
            },
            // A member that has not yet applied the group table of its lineage (its view's `Sync`
            // was not delivered) offers the position of the table it still has: an older one.
            history: match (&self.view, &self.ord) {
                (Some(v), Some(o)) if v.primary && self.synced => (Some(v.id), o.delivered),
                _ => self.history,
            },
            inherited: self.inherited.clone(),
            heard_primary: self.heard_primary,
            catching_up: self.durable.catching_up,
        }
    }

    fn on_prepare(
        &mut self,
        now: u64,
        from: Member,
        ballot: ViewId,
        members: Vec<Member>,
        out: &mut Vec<Output>,
    ) {
        if !members.contains(&self.me) || self.removed_self || self.leaving || self.left {
            return;
        }
        if self.stall.is_some() {
            // A stalled member takes no part in a view change until its view is confirmed (or it learns
            // it was removed): its promise would make the new view's flush deliver, in its old view,
            // messages it found in its socket buffer, maybe after its removal was recovered (G13).
            return;
        }
        // A ballot must be above every view this member knows of, including the highest view sequence
        // number persisted by earlier incarnations of this node: a new view, primary or not, must
        // order after every earlier one (G2, G3), also after every node restarted.
        let floor = self
            .promised
            .max(self.view.as_ref().map(|v| v.id).unwrap_or_default())
            .max(ViewId { seq: self.durable.max_installed_seq, coord: NodeId(u32::MAX) });
        self.max_seq_seen = self.max_seq_seen.max(ballot.seq);
        if self.view.as_ref().is_some_and(|v| v.id == ballot) {
            // A late copy of the prepare of the view this member already installed: that change is
            // over, and promising again would freeze the view for a decision that never comes.
            return;
        }
        // A copy of the prepare this member promised is answered again while that promise stands
        // (the first answer may have been lost); once a view was installed or the promise given up
        // since, it is outdated.
        let repeat = ballot == self.promised
            && from.node() == ballot.coord
            && self.frozen_since.is_some()
            && self.released != Some(ballot);
        if ballot <= floor && !repeat {
            self.send(
                from.node(),
                Body::Reject { ballot, reason: RejectReason::Outdated { promised: floor } },
                out,
            );
            return;
        }
        // Admission with this member's own registry: a proposal containing a removed member is refused,
        // and the stateful merge is handled here if this member is on the primary side (G8).
        let mut removed = Vec::new();
        let mut stale = Vec::new();
        for &m in &members {
            match self.durable.registry.classify(m) {
                Admission::Fresh => {}
                Admission::StatefulMerge(_) => removed.push(m),
                Admission::Stale { .. } => stale.push(m),
            }
        }
        if !removed.is_empty() || !stale.is_empty() {
            for &m in removed.iter().chain(stale.iter()) {
                self.check_admission(now, m, out);
            }
            self.send(
                from.node(),
                Body::Reject { ballot, reason: RejectReason::Inadmissible { removed, stale } },
                out,
            );
            return;
        }
        // A proposal from outside this member's primary view (a joining, merging or restarted node)
        // only adds members: one that leaves out members of that view this member still hears is
        // refused (L5). After a heal, a restarted node that heard only part of the primary side first
        // must not form a view that throws the others out (they would be fenced). Members of the view
        // itself propose only without members they stopped hearing or that would not answer.
        let heard: Vec<Member> = match self.view.as_ref().filter(|v| v.primary && !v.contains(from)) {
            Some(v) => v
                .members
                .iter()
                .copied()
                .filter(|m| *m != self.me && !members.contains(m) && self.still_hears(now, *m))
                .collect(),
            None => Vec::new(),
        };
        if !heard.is_empty() {
            self.send(from.node(), Body::Reject { ballot, reason: RejectReason::Drops { heard } }, out);
            return;
        }
        // A coordinator with a lower ballot running concurrently here gives way.
        if self.coord.as_ref().is_some_and(|c| c.ballot < ballot) {
            self.coord = None;
        }
        // An install received but not yet voted for (this member was still fetching its cut, so it
        // never sent `Accepted` and never persisted it) is given up: a commit needed this member's vote,
        // and after promising a higher ballot it never gives it (Paxos). Reporting it in the promise would
        // make the next coordinator complete an install that was never committed and that this member
        // may never be able to install (its cut's holder may be gone).
        if self.accepted.as_ref().is_some_and(|a| a.view.id < ballot) && !self.voted() {
            self.accepted = None;
            self.accept_from = None;
        }
        self.promised = ballot;
        self.frozen_since.get_or_insert(now);
        let state = self.flush_state();
        self.send(from.node(), Body::Promise { ballot, state: Box::new(state) }, out);
    }

    fn on_accept(&mut self, now: u64, from: Member, ballot: ViewId, install: Install, out: &mut Vec<Output>) {
        if !install.view.contains(self.me)
            || self.removed_self
            || self.left
            || self.released == Some(ballot)
            || self.stall.is_some()
        {
            return;
        }
        if ballot < self.promised || self.view.as_ref().is_some_and(|v| v.id >= ballot) {
            if self.view.as_ref().is_some_and(|v| v.id == ballot) {
                self.send(from.node(), Body::Accepted { ballot }, out);
            }
            return;
        }
        self.promised = ballot;
        self.frozen_since.get_or_insert(now);
        // An accepted primary install may be committed and installed everywhere else without this
        // member ever installing it: the watchdog counts from here, so such a member still self-fences
        // once it is outside every working primary view (the primary side's watchdog fence waits for it).
        if install.view.primary && self.last_primary_ms.is_none() {
            self.last_primary_ms = Some(now);
        }
        self.accepted = Some(install);
        self.accept_from = Some(from);
        self.accepted_tx = 0;
        self.drive_participant(now, out);
    }

    /// True when this member holds every message up to its cut of the accepted install.
    /// True when this member voted for its accepted install: it sent `Accepted`, after persisting it.
    fn voted(&self) -> bool {
        self.accepted
            .as_ref()
            .is_some_and(|a| self.durable.accepted.as_ref().is_some_and(|d| d.view == a.view.id))
    }

    fn accept_complete(&self) -> bool {
        let Some(acc) = &self.accepted else { return false };
        let Some(v) = &self.view else { return true };
        match acc.cuts.get(&v.id) {
            None => true,
            Some(cut) => self.ord.as_ref().is_some_and(|o| o.received >= cut.seq),
        }
    }

    fn drive_participant(&mut self, now: u64, out: &mut Vec<Output>) {
        let Some(acc) = &self.accepted else {
            // A promise that led nowhere is released after a while so the member can move on.
            if let Some(t) = self.frozen_since {
                if now.saturating_sub(t) > self.cfg.view_change_timeout_ms * 6 && self.coord.is_none() {
                    // Nobody decided the promised ballot in all this time (its coordinator failed,
                    // or finished an older install instead): give the promise up and go on in the
                    // current view. That ballot can no longer be accepted here.
                    self.released = Some(self.promised);
                    self.frozen_since = None;
                }
            }
            return;
        };
        if now.saturating_sub(self.accepted_tx) < self.cfg.retransmit_interval_ms {
            return;
        }
        let ballot = acc.view.id;
        if ballot < self.promised {
            // Promised a higher ballot since (and gave it up unvoted then, see `on_prepare`).
            return;
        }
        if self.accept_complete() {
            if let Some(c) = self.accept_from {
                if self.durable.accepted.as_ref().is_none_or(|a| a.view != ballot) {
                    // Durable before it is sent (see `Durable::accepted`).
                    let (registry, members) = (acc.registry.clone(), acc.view.members.clone());
                    self.durable.accepted = Some(AcceptedInstall { view: ballot, registry, members });
                    self.persist(out);
                }
                self.accepted_tx = now;
                self.send(c.node(), Body::Accepted { ballot }, out);
            }
        } else if let (Some(v), Some(o)) = (&self.view, &self.ord) {
            if let Some(cut) = acc.cuts.get(&v.id) {
                let (from, to, holder, vid) = (o.received + 1, cut.seq, cut.holder, v.id);
                // The cut's holder first, then in turn every other member coming from the same view:
                // the holder may be gone, and those that installed already keep the old view's
                // messages to answer.
                let mut askable: Vec<Member> = vec![holder];
                askable.extend(
                    acc.prev
                        .iter()
                        .filter(|(m, pv)| **pv == Some(vid) && **m != holder && **m != self.me)
                        .map(|(m, _)| *m),
                );
                let target = askable[self.flush_nak_turn % askable.len()];
                self.flush_nak_turn = self.flush_nak_turn.wrapping_add(1);
                self.accepted_tx = now;
                self.send(target.node(), Body::Nak { view: vid, from, to }, out);
            }
        }
    }

    fn on_commit(&mut self, now: u64, from: Member, ballot: ViewId, out: &mut Vec<Output>) {
        let Some(acc) = &self.accepted else {
            if self.view.as_ref().is_some_and(|v| v.id == ballot) {
                self.send(from.node(), Body::Installed { view: ballot }, out);
            }
            return;
        };
        if acc.view.id != ballot || self.view.as_ref().is_some_and(|v| v.id >= ballot) {
            return;
        }
        if !self.accept_complete() {
            return;
        }
        if self.stall.is_some() {
            // The commit may have waited in the socket buffer while a later view without this member
            // was formed (G13). Fresh answers decide instead (`try_confirm`).
            return;
        }
        let inst = acc.clone();
        self.install(now, inst, out);
        self.send(from.node(), Body::Installed { view: ballot }, out);
    }

    /// Installs `inst`: delivers the old view up to its cut, then switches to the new view.
    fn install(&mut self, now: u64, inst: Install, out: &mut Vec<Output>) {
        let old = self.view.clone();
        // Flush: deliver exactly up to the cut (G4), including safe messages, which the cut only covers
        // when they are known stable (G10).
        if let Some(v) = &old {
            if let Some(cut) = inst.cuts.get(&v.id) {
                self.deliver_upto(now, Some(cut.seq), out);
            }
        }
        let new = inst.view.clone();
        // Messages sent in the old view and not delivered in it are sent again in the new view under new
        // ids: a member cut off with the old sequencer may have delivered the old id in the old view,
        // and an id is delivered in one view only (G5).
        // A `Sync` belongs to the view it was made for: one not delivered there is dropped (a new view
        // has its own `Sync`, from its own reference lineage).
        let mut dropped = 0;
        self.outbox.retain(|o| {
            let keep = !matches!(o.op, Op::Sync { .. });
            if !keep {
                dropped += o.op.size();
            }
            keep
        });
        self.outbox_bytes = self.outbox_bytes.saturating_sub(dropped);
        let mut renewed = Vec::new();
        for o in self.outbox.iter_mut() {
            if o.sent_in.is_some() {
                renewed.push(o.id);
            }
            o.vseq = None;
            o.last_tx = 0;
        }
        for old_id in renewed {
            let new_id = self.new_id();
            if let Some(o) = self.outbox.iter_mut().find(|o| o.id == old_id) {
                o.id = new_id;
                o.sent_in = None;
                if let Op::Join { group } | Op::LeaveGroup { group } = &o.op {
                    if self.local_group_op.get(group) == Some(&old_id) {
                        self.local_group_op.insert(group.clone(), new_id);
                    }
                }
                if let Op::App { group, payload } = &o.op {
                    let ev = Event::Send {
                        group: group.clone(),
                        msg: new_id.to_string(),
                        bytes: payload.len() as u64,
                        delivery: o.delivery,
                        digest: digest(payload),
                    };
                    out.push(Output::Record(Record {
                        ts_ms: now,
                        node: self.me.node(),
                        epoch: self.me.epoch(),
                        event: ev,
                    }));
                }
            }
        }
        self.next_vseq = 1;
        self.my_ordered_vseq = 0;

        let old_members: BTreeSet<Member> =
            old.as_ref().map(|v| v.members.iter().copied().collect()).unwrap_or_default();
        let new_members: BTreeSet<Member> = new.members.iter().copied().collect();
        let joined: Vec<Member> = new_members.difference(&old_members).copied().collect();
        let gone: Vec<Member> = old_members.difference(&new_members).copied().collect();
        let left: Vec<Member> =
            gone.iter().copied().filter(|m| inst.left.contains(m) || self.leavers.contains(m)).collect();
        let failed: Vec<Member> = gone.iter().copied().filter(|m| !left.contains(m)).collect();

        if let Some(v) = old.as_ref().filter(|v| v.primary && self.synced) {
            self.history = (Some(v.id), self.ord.as_ref().map_or(0, |o| o.delivered));
        }
        self.prev_view = old.as_ref().map(|v| v.id);
        self.install_prev = inst.prev.clone();
        self.install_lineage = inst.lineage.clone();
        self.view = Some(new.clone());
        self.max_seq_seen = self.max_seq_seen.max(new.id.seq);
        self.promised = self.promised.max(new.id);
        self.accepted = None;
        self.accept_from = None;
        // A commit can arrive after this member promised a higher ballot (the coordinator of that ballot
        // completes this install first, and the network may reorder its `Commit` behind its next
        // `Prepare`). That promise described the view this member is leaving: its coordinator cuts the
        // new view without knowing what this member delivers in it. So the member stays frozen (it
        // delivers nothing in the new view) and promises again with its new state, which replaces the
        // stale promise while the coordinator has not decided (G4).
        let still_promised = self.promised > new.id && self.released != Some(self.promised);
        self.frozen_since = if still_promised { Some(now) } else { None };
        // The peers' freezes heard so far belonged to the change that just ended: a member still
        // frozen in a change going nowhere shows so again from its next heartbeat.
        for p in self.peers.values_mut() {
            p.frozen_since = None;
        }
        if self.coord.as_ref().is_some_and(|c| c.ballot <= new.id) {
            self.coord = None;
        }
        self.seen_all |=
            inst.seen_all || self.cfg.nodes.iter().all(|n| new.members.iter().any(|m| m.node() == n.id));
        // A stateful merge whose node is back in the view as a newer member is resolved.
        let superseded =
            |m: &Member| new.members.iter().any(|x| x.node() == m.node() && x.epoch() > m.epoch());
        self.merges.retain(|m, _| !superseded(m));
        self.merge_fence_requested.retain(|m, _| !superseded(m));
        self.durable.registry.merge(&inst.registry);
        if new.primary && self.cfg.restart_counts_as_fenced {
            // A removal this member's own registry still holds as waiting for its fence, whose node is in
            // the installed view as a newer incarnation, was restarted: the view every member installs
            // is the proof, so this member concludes it too. (The coordinator marks the ones its merged
            // registry knows; one only this member's disk kept, from an incarnation long gone, would
            // otherwise block it for fencing that no fencer ever drives.)
            for t in self.durable.registry.pending_fences() {
                if new.members.iter().any(|m| m.node() == t.node() && m.epoch() > t.epoch()) {
                    self.durable.registry.mark_fenced(t, FenceMethod::Restarted);
                }
            }
        }
        self.durable.max_installed_seq = self.durable.max_installed_seq.max(new.id.seq);
        if new.primary {
            // Its registry is now the merged one of a quorum that remembers: caught up.
            self.durable.catching_up = false;
        }
        if self.durable.accepted.as_ref().is_some_and(|a| a.view <= new.id) {
            self.durable.accepted = None;
        }
        if self.inherited.as_ref().is_some_and(|a| a.view <= new.id) {
            self.inherited = None;
        }
        self.persist(out);
        self.record(
            now,
            Event::View {
                view: new.id,
                members: new.members.clone(),
                primary: new.primary,
                joined,
                left,
                failed,
                prev: self.prev_view,
            },
            out,
        );
        self.notify(Notification::View(new.clone()), out);
        self.prev_ord = self.ord.take();
        self.ord = Some(Ordering::new(&new, self.me));
        self.stable_dirty = false;

        // Groups: members outside the new view leave every group; transfers whose provider left are
        // re-based on the install point, with a new provider chosen the same way everywhere.
        // Group tables follow the primary history: a non-primary view delivers nothing, so it changes
        // nothing, and members that will merge later still agree on their table.
        if new.primary {
            self.groups_after_install(now, &new, out);
        }

        if new.primary {
            self.last_primary = Some(new.clone());
            self.last_primary_ms = Some(now);
            self.unblock(now, BlockReason::NoQuorum, out);
            // The lowest member of the reference lineage sends the view's first message with its group
            // table, so members that come from elsewhere start from the same table; the sequencer orders
            // nothing before it.
            let sync_sender = inst.lineage.first().copied();
            if sync_sender.is_some() && !inst.lineage.contains(&self.me) {
                self.synced = false;
            } else if sync_sender.is_none() {
                // Nobody has a primary history: every member starts from the (empty) table it has.
                self.synced = true;
            }
            if let Some(o) = self.ord.as_mut() {
                o.set_gate(sync_sender);
            }
            if sync_sender == Some(self.me) {
                let id = self.new_id();
                let op = Op::Sync { groups: self.groups.clone(), transfers: self.transfers.clone() };
                self.outbox_bytes += op.size();
                self.outbox.push_front(Outgoing {
                    id,
                    delivery: Delivery::Agreed,
                    op,
                    vseq: None,
                    last_tx: 0,
                    sent_in: None,
                });
            }
            self.fencing_after_install(now, out);
        } else {
            self.block(now, BlockReason::NoQuorum, out);
        }
        if still_promised {
            let (ballot, state) = (self.promised, self.flush_state());
            self.send(ballot.coord, Body::Promise { ballot, state: Box::new(state) }, out);
        }
        // Installed during a stall (on a commit accepted after it): answers already in may confirm it,
        // and a view of this member alone needs no answer.
        self.try_confirm(now, out);
    }

    // ----------------------------------------------------------------------------------------------
    // Total order
    // ----------------------------------------------------------------------------------------------

    fn active(&self) -> bool {
        self.is_primary()
            && self.frozen_since.is_none()
            && self.stall.is_none()
            && !self.removed_self
            && !self.self_fenced
            && self.ord.is_some()
    }

    /// Sends queued messages to the sequencer, multicasts newly ordered ones, delivers what can be.
    fn pump(&mut self, now: u64, out: &mut Vec<Output>) {
        if !self.deferred.is_empty() {
            self.release_deferred();
        }
        if !self.active() {
            return;
        }
        let Some(o) = &self.ord else { return };
        let view = o.view;
        let seq_node = o.sequencer.node();
        // Sender side: number messages for this view and send the ones not known ordered, in batches
        // that each fit one datagram (a fragmented batch is lost whole when one fragment is, and socket
        // buffers overflow first under exactly the bursts batching is for), at most a few per call: the
        // rest follows as acknowledgements and orderings come back.
        const MAX_BATCHES_PER_PUMP: usize = 8;
        let budget = self.cfg.max_datagram_bytes.saturating_sub(1024).max(1024);
        let mut batches: Vec<Vec<DataMsg>> = Vec::new();
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        // Sender window: only the oldest messages beyond what the sequencer has ordered are in flight,
        // so a sender that outruns the sequencer's window does not flood the network with sends and
        // retransmissions the sequencer must drop (congestion collapse).
        let members = self.view.as_ref().map_or(1, |v| v.members.len().max(1));
        let sender_window = (self.cfg.window_msgs / members).max(64) as u64;
        let in_flight_limit = self.my_ordered_vseq + sender_window;
        for ob in self.outbox.iter_mut() {
            if ob.vseq.is_none() {
                ob.vseq = Some(self.next_vseq);
                self.next_vseq += 1;
                ob.sent_in = Some(view);
            }
            let vseq = ob.vseq.unwrap_or(0);
            if vseq <= self.my_ordered_vseq {
                continue;
            }
            if vseq > in_flight_limit {
                break;
            }
            let due =
                ob.last_tx == 0 || now.saturating_sub(ob.last_tx) >= self.cfg.retransmit_interval_ms * 2;
            if !due {
                continue;
            }
            let size = ob.op.size() + 48;
            if !batch.is_empty() && bytes + size > budget {
                batches.push(std::mem::take(&mut batch));
                bytes = 0;
                if batches.len() == MAX_BATCHES_PER_PUMP {
                    break;
                }
            }
            ob.last_tx = now;
            bytes += size;
            batch.push(DataMsg { id: ob.id, vseq, delivery: ob.delivery, op: ob.op.clone() });
        }
        if !batch.is_empty() {
            batches.push(batch);
        }
        for msgs in batches {
            self.send(seq_node, Body::Data { view, msgs }, out);
        }
        self.broadcast_ordered(out);
        self.deliver_upto(now, None, out);
    }

    fn broadcast_ordered(&mut self, out: &mut Vec<Output>) {
        let Some(o) = self.ord.as_mut() else { return };
        if !o.is_sequencer() {
            return;
        }
        if o.take_stable_moved() {
            self.stable_dirty = true;
        }
        if o.unsent.is_empty() && !self.stable_dirty {
            return;
        }
        let unsent = std::mem::take(&mut o.unsent);
        let (view, stable, ordered) = (o.view, o.stable, o.ordered());
        let others: Vec<NodeId> =
            o.members().iter().map(|m| m.node()).filter(|n| *n != self.me.node()).collect();
        self.stable_dirty = false;
        if unsent.is_empty() {
            self.send_many(&others, Body::Ordered { view, msgs: Vec::new(), stable, ordered }, out);
            return;
        }
        let mut chunk = Vec::new();
        let mut bytes = 0usize;
        for om in unsent {
            let size = om.msg.op.size() + 64;
            if !chunk.is_empty() && bytes + size > self.cfg.max_datagram_bytes.saturating_sub(1024) {
                self.send_many(
                    &others,
                    Body::Ordered { view, msgs: std::mem::take(&mut chunk), stable, ordered },
                    out,
                );
                bytes = 0;
            }
            bytes += size;
            chunk.push(om);
        }
        if !chunk.is_empty() {
            self.send_many(&others, Body::Ordered { view, msgs: chunk, stable, ordered }, out);
        }
    }

    fn on_data(&mut self, _now: u64, from: Member, view: ViewId, msgs: Vec<DataMsg>) {
        if !self.active() {
            return;
        }
        let (wm, wb) = (self.cfg.window_msgs, self.cfg.window_bytes);
        let Some(o) = self.ord.as_mut() else { return };
        if o.view != view || !o.is_sequencer() {
            return;
        }
        let me = self.me;
        for m in msgs {
            if m.id.sender != from {
                continue;
            }
            let vseq = m.vseq;
            if o.order(m, wm, wb) && from == me {
                // The sequencer's own messages are ordered here, not echoed back to it.
                self.my_ordered_vseq = self.my_ordered_vseq.max(vseq);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_ordered(
        &mut self,
        _now: u64,
        from: Member,
        view: ViewId,
        msgs: Vec<OrderedMsg>,
        stable: u64,
        ordered: u64,
        out: &mut Vec<Output>,
    ) {
        let Some(o) = self.ord.as_mut() else { return };
        if o.view != view || !o.members().contains(&from) || o.is_sequencer() {
            return;
        }
        let before = o.received;
        let me = self.me;
        for om in msgs {
            if om.msg.id.sender == me {
                self.my_ordered_vseq = self.my_ordered_vseq.max(om.msg.vseq);
            }
            o.insert(om);
        }
        if from == o.sequencer {
            o.ordered_hint = o.ordered_hint.max(ordered);
            o.learn_stable(stable);
        }
        if o.received > before {
            let seq_node = o.sequencer.node();
            let ack = self.ord.as_ref().map_or(0, |o| self.ack_point(o));
            self.send(seq_node, Body::Ack { view, received: ack }, out);
        }
    }

    fn on_ack(&mut self, from: Member, view: ViewId, received: u64) {
        let Some(o) = self.ord.as_mut() else { return };
        if o.view == view && o.is_sequencer() && o.on_ack(from, received) {
            self.stable_dirty = true;
        }
    }

    fn on_nak(&mut self, from: Member, view: ViewId, lo: u64, hi: u64, out: &mut Vec<Output>) {
        let o = match (&self.ord, &self.prev_ord) {
            (Some(o), _) if o.view == view => o,
            (_, Some(p)) if p.view == view => p,
            _ => return,
        };
        let mut msgs = Vec::new();
        let mut bytes = 0;
        for om in o.range(lo, hi) {
            bytes += om.msg.op.size() + 64;
            msgs.push(om.clone());
            if bytes > MAX_RETRANSMIT_BATCH_BYTES {
                break;
            }
        }
        let (stable, ordered) = (o.stable, if o.is_sequencer() { o.ordered() } else { o.ordered_hint });
        if !msgs.is_empty() {
            self.send(from.node(), Body::Ordered { view, msgs, stable, ordered }, out);
        }
    }

    fn drive_ordering_retransmits(&mut self, now: u64, out: &mut Vec<Output>) {
        let Some(o) = &self.ord else { return };
        if o.is_sequencer() {
            return;
        }
        if now.saturating_sub(self.last_nak) < self.cfg.retransmit_interval_ms {
            return;
        }
        if let Some((lo, hi)) = o.missing() {
            let (view, seq_node) = (o.view, o.sequencer.node());
            self.last_nak = now;
            self.send(seq_node, Body::Nak { view, from: lo, to: hi }, out);
        }
    }

    /// Delivers in order. `limit` is a flush cut: everything up to it is delivered, safe or not.
    fn deliver_upto(&mut self, now: u64, limit: Option<u64>, out: &mut Vec<Output>) {
        if limit.is_none() && !self.active() {
            return;
        }
        loop {
            let Some(o) = self.ord.as_mut() else { return };
            let Some(om) = o.next_deliverable(limit).cloned() else { break };
            let view = o.view;
            o.mark_delivered(om.seq);
            self.deliver_op(now, view, om, out);
        }
        if self.want_send_ready
            && self.outbox.len() + self.deferred.len() < self.cfg.send_queue_msgs
            && self.outbox_bytes < self.cfg.send_queue_bytes
        {
            self.want_send_ready = false;
            self.notify(Notification::SendReady, out);
        }
    }

    fn deliver_op(&mut self, now: u64, view: ViewId, om: OrderedMsg, out: &mut Vec<Output>) {
        let sender = om.msg.id.sender;
        if sender == self.me {
            if let Some(pos) = self.outbox.iter().position(|o| o.id == om.msg.id) {
                if let Some(o) = self.outbox.remove(pos) {
                    self.outbox_bytes = self.outbox_bytes.saturating_sub(o.op.size());
                }
            }
        }
        match om.msg.op {
            Op::App { group, payload } => {
                // Held: this member is in the group but its application does not get the message now
                // (its state transfer is pending, or it is on its way out of the group).
                let in_group = self.groups.get(&group).is_some_and(|l| l.contains(&self.me));
                let held = in_group && !matches!(self.my_groups.get(&group), Some(MyGroup::Member));
                self.record(
                    now,
                    Event::Deliver {
                        group: group.clone(),
                        msg: om.msg.id.to_string(),
                        sender,
                        view,
                        digest: digest(&payload),
                        seq: Some(om.seq),
                        delivery: Some(om.msg.delivery),
                        held,
                    },
                    out,
                );
                let n = Notification::Deliver {
                    group: group.clone(),
                    msg: om.msg.id,
                    sender,
                    delivery: om.msg.delivery,
                    view,
                    seq: om.seq,
                    payload,
                };
                match self.my_groups.get_mut(&group) {
                    Some(MyGroup::Member) => self.notify(n, out),
                    Some(MyGroup::Awaiting { held, .. }) => held.push_back(n),
                    _ => {}
                }
            }
            Op::Join { group } => {
                let current = self.local_group_op.get(&group) == Some(&om.msg.id);
                self.on_group_join(now, view, om.seq, group, sender, current, out)
            }
            Op::LeaveGroup { group } => {
                let current = self.local_group_op.get(&group) == Some(&om.msg.id);
                self.on_group_leave(now, view, om.seq, group, sender, current, out)
            }
            Op::StateApplied { group, token } => {
                if self.transfers.get(&(group.clone(), sender)).is_some_and(|(_, t)| *t == token) {
                    self.transfers.remove(&(group.clone(), sender));
                }
                // The joiner applied our state: that is known from the order even if its
                // acknowledgement was lost.
                self.on_state_ack(now, sender, group, token, out);
            }
            Op::FenceDone { target, method } => self.on_fence_done(now, target, method, out),
            Op::Sync { groups, transfers } => self.on_sync(now, view, groups, transfers, out),
        }
    }

    // ----------------------------------------------------------------------------------------------
    // Process groups and state transfer
    // ----------------------------------------------------------------------------------------------

    fn group_view_changed(&mut self, now: u64, view: ViewId, group: &str, out: &mut Vec<Output>) {
        let members = self.groups.get(group).cloned().unwrap_or_default();
        self.record(now, Event::GroupView { group: group.to_string(), view, members: members.clone() }, out);
        if self.my_groups.contains_key(group) {
            self.notify(Notification::GroupView { group: group.to_string(), members }, out);
        }
    }

    /// A `Join` was delivered. `current` is true when it is this member's application's latest join or
    /// leave of the group: only that one changes the application's local state (older ones, resent after
    /// a view change, only change the replicated table).
    #[allow(clippy::too_many_arguments)]
    fn on_group_join(
        &mut self,
        now: u64,
        view: ViewId,
        seq: u64,
        group: String,
        who: Member,
        current: bool,
        out: &mut Vec<Output>,
    ) {
        let list = self.groups.get(&group).cloned().unwrap_or_default();
        if list.contains(&who) {
            return;
        }
        // The provider is the first member that holds the state itself: a member whose own transfer
        // is still pending has nothing to give yet. Every member decides this from the same table.
        let provider = list.iter().copied().find(|m| !self.transfers.contains_key(&(group.clone(), *m)));
        let had_members = !list.is_empty();
        let list = self.groups.entry(group.clone()).or_default();
        list.push(who);
        list.sort();
        self.group_view_changed(now, view, &group, out);
        let token = TransferToken { view, seq };
        match provider {
            Some(p) => {
                self.transfers.insert((group.clone(), who), (p, token));
                if p == self.me {
                    self.ask_provide(&group, who, token, out);
                }
                // Only if the application still wants the group: it may have left before its join was
                // delivered (the leave follows in the order and ends the transfer everywhere).
                if who == self.me && current && matches!(self.my_groups.get(&group), Some(MyGroup::Joining)) {
                    self.my_groups.insert(group.clone(), MyGroup::awaiting(now));
                    self.block(now, BlockReason::StateTransfer, out);
                    self.apply_early_state(now, &group, out);
                }
            }
            None => {
                if who == self.me && current && matches!(self.my_groups.get(&group), Some(MyGroup::Joining)) {
                    self.my_groups.insert(group.clone(), MyGroup::Member);
                    if had_members {
                        self.notify(
                            Notification::ApplyState {
                                group: group.clone(),
                                provider: self.me,
                                state: Vec::new(),
                            },
                            out,
                        );
                    }
                }
                if had_members {
                    // Everyone in the group is itself waiting for a state: nobody holds the group's
                    // state at this point, so every member starts again from empty state here (the
                    // states still on their way are dropped), the same way everywhere.
                    self.reset_group_state(now, &group, out);
                }
            }
        }
    }

    /// A `LeaveGroup` was delivered (see [`Node::on_group_join`] for `current`).
    #[allow(clippy::too_many_arguments)]
    fn on_group_leave(
        &mut self,
        now: u64,
        view: ViewId,
        seq: u64,
        group: String,
        who: Member,
        current: bool,
        out: &mut Vec<Output>,
    ) {
        if who == self.me && current {
            // Nothing about a group is kept past our own leave of it, so an application that joins
            // ever new groups does not grow the agent.
            self.local_group_op.remove(&group);
            self.applied_tokens.remove(&group);
        }
        let Some(list) = self.groups.get_mut(&group) else { return };
        let Some(pos) = list.iter().position(|m| *m == who) else { return };
        list.remove(pos);
        if list.is_empty() {
            self.groups.remove(&group);
        }
        self.transfers.remove(&(group.clone(), who));
        if who == self.me && current {
            // Our own leave reached this point: whatever local state the group had is over (a
            // `Joining` entry belongs to a newer join, still on its way).
            self.my_groups.remove(&group);
            self.refresh_transfer_block(now, out);
        }
        self.group_view_changed(now, view, &group, out);
        self.reassign_providers(now, TransferToken { view, seq }, out);
    }

    /// Every member of `group` that is waiting for a state gives it up and starts from empty state at
    /// this point of the order; members that hold a state are told to drop it too, so that every member
    /// agrees on the group's state from here on (G11). Used when no member of the group holds a state.
    fn reset_group_state(&mut self, now: u64, group: &str, out: &mut Vec<Output>) {
        let members = self.groups.get(group).cloned().unwrap_or_default();
        for m in members {
            self.transfers.remove(&(group.to_string(), m));
        }
        let listed = self.groups.get(group).is_some_and(|l| l.contains(&self.me));
        let leave_pending = self.leave_pending(group);
        match self.my_groups.get_mut(group) {
            Some(MyGroup::Awaiting { held, .. }) => {
                held.clear();
                self.finish_transfer(now, group, self.me, Vec::new(), None, out);
            }
            Some(MyGroup::Member) if listed => self.notify(
                Notification::ApplyState { group: group.to_string(), provider: self.me, state: Vec::new() },
                out,
            ),
            Some(MyGroup::Joining) if listed && !leave_pending => {
                // The table already lists us (our join was delivered in the reference lineage; the
                // copy still on its way is a no-op): we are a member, from empty state like the rest.
                self.my_groups.insert(group.to_string(), MyGroup::awaiting(now));
                self.finish_transfer(now, group, self.me, Vec::new(), None, out);
            }
            _ => {}
        }
    }

    /// True when this member's application left `group` and the `LeaveGroup` is not delivered yet.
    fn leave_pending(&self, group: &str) -> bool {
        self.outbox.iter().any(|o| matches!(&o.op, Op::LeaveGroup { group: g } if g == group))
            || self.deferred.iter().any(|(_, _, op)| matches!(op, Op::LeaveGroup { group: g } if g == group))
    }

    /// Asks this node's application for its state, if it is a full member of the group. An application
    /// that already left (its `LeaveGroup` is still on its way) has nothing to give: its leave will be
    /// delivered at the same point everywhere and move the transfer to another provider.
    /// A transfer of `group` to `joiner` from `provider`, decided by a view's `Sync`: recorded; this member,
    /// when it is the joiner and `settled` in the group, waits for the state from this point on; the
    /// provider is asked for it.
    #[allow(clippy::too_many_arguments)]
    fn start_sync_transfer(
        &mut self,
        now: u64,
        group: &str,
        joiner: Member,
        provider: Member,
        token: TransferToken,
        settled: bool,
        out: &mut Vec<Output>,
    ) {
        self.transfers.insert((group.to_string(), joiner), (provider, token));
        if joiner == self.me && settled {
            self.my_groups.insert(group.to_string(), MyGroup::awaiting(now));
            self.block(now, BlockReason::StateTransfer, out);
            self.apply_early_state(now, group, out);
        }
        if provider == self.me {
            self.ask_provide(group, joiner, token, out);
        }
    }

    fn ask_provide(&mut self, group: &str, joiner: Member, token: TransferToken, out: &mut Vec<Output>) {
        if matches!(self.my_groups.get(group), Some(MyGroup::Member)) {
            self.notify(Notification::ProvideState { group: group.to_string(), joiner, token }, out);
        }
    }

    /// Transfers whose provider is gone get a new provider (the first other group member), asked for
    /// its state at `token`, the same point at every member.
    fn reassign_providers(&mut self, now: u64, token: TransferToken, out: &mut Vec<Output>) {
        let keys: Vec<(String, Member)> = self.transfers.keys().cloned().collect();
        for (group, joiner) in keys {
            let Some(&(prov, _)) = self.transfers.get(&(group.clone(), joiner)) else { continue };
            let members = self.groups.get(&group).cloned().unwrap_or_default();
            if !members.contains(&joiner) {
                self.transfers.remove(&(group, joiner));
                continue;
            }
            if members.contains(&prov) {
                continue;
            }
            match members
                .iter()
                .copied()
                .find(|m| *m != joiner && !self.transfers.contains_key(&(group.clone(), *m)))
            {
                Some(np) => {
                    self.transfers.insert((group.clone(), joiner), (np, token));
                    let settled = matches!(
                        self.my_groups.get(&group),
                        Some(MyGroup::Member | MyGroup::Awaiting { .. })
                    );
                    if joiner == self.me && settled {
                        // The new provider's state is taken at `token`, after everything held so far:
                        // those messages are part of it and must not be applied twice. If an earlier
                        // state already arrived, the new one replaces it, the same way at every joiner.
                        self.my_groups.insert(group.clone(), MyGroup::awaiting(now));
                        self.block(now, BlockReason::StateTransfer, out);
                    }
                    if np == self.me {
                        self.ask_provide(&group, joiner, token, out);
                    }
                }
                None => {
                    // No one in the group holds a state any more: from this point the joiner starts
                    // from empty state, even if an earlier state already reached it, so every member
                    // agrees on the group's state at this point.
                    self.transfers.remove(&(group.clone(), joiner));
                    if joiner == self.me {
                        match self.my_groups.get_mut(&group) {
                            Some(MyGroup::Awaiting { held, .. }) => {
                                held.clear();
                                self.finish_transfer(now, &group, self.me, Vec::new(), None, out);
                            }
                            Some(MyGroup::Member) => self.notify(
                                Notification::ApplyState {
                                    group: group.clone(),
                                    provider: self.me,
                                    state: Vec::new(),
                                },
                                out,
                            ),
                            _ => {}
                        }
                    }
                }
            }
        }
    }

    fn groups_after_install(&mut self, now: u64, new: &View, out: &mut Vec<Output>) {
        let names: Vec<String> = self.groups.keys().cloned().collect();
        for g in names {
            let before = self.groups.get(&g).cloned().unwrap_or_default();
            let after: Vec<Member> = before.iter().copied().filter(|m| new.contains(*m)).collect();
            if after.len() != before.len() {
                if after.is_empty() {
                    self.groups.remove(&g);
                } else {
                    self.groups.insert(g.clone(), after);
                }
                self.group_view_changed(now, new.id, &g, out);
            }
        }
        self.reassign_providers(now, TransferToken { view: new.id, seq: 0 }, out);
    }

    /// The first message of a primary view. Members that came from another previous view than the
    /// sequencer (another lineage) adopt its group table, and in every group they are listed in, they
    /// receive the state again from a member of the sequencer's lineage. Every member computes the
    /// same transfers from the same inputs.
    fn on_sync(
        &mut self,
        now: u64,
        view: ViewId,
        groups: BTreeMap<String, Vec<Member>>,
        transfers: BTreeMap<(String, Member), (Member, TransferToken)>,
        out: &mut Vec<Output>,
    ) {
        self.synced = true;
        let outsiders: BTreeSet<Member> = self
            .view
            .iter()
            .flat_map(|v| v.members.iter().copied())
            .filter(|m| !self.install_lineage.contains(m))
            .collect();
        if outsiders.contains(&self.me) {
            let names: BTreeSet<String> = groups.keys().chain(self.groups.keys()).cloned().collect();
            let old = std::mem::replace(&mut self.groups, groups);
            for g in names {
                if old.get(&g) != self.groups.get(&g) {
                    self.group_view_changed(now, view, &g, out);
                }
            }
            self.transfers = transfers;
            let mine: Vec<String> = self.my_groups.keys().cloned().collect();
            for g in mine {
                let listed = self.groups.get(&g).is_some_and(|l| l.contains(&self.me));
                // A join still on its way stays: it will be delivered after this message. A group the
                // reference lineage no longer lists us in is joined again, with a state transfer, so
                // the application keeps the membership it asked for.
                if !listed && !matches!(self.my_groups.get(&g), Some(MyGroup::Joining)) {
                    self.my_groups.insert(g.clone(), MyGroup::Joining);
                    let id = self.new_id();
                    self.local_group_op.insert(g.clone(), id);
                    self.push_out(id, Delivery::Agreed, Op::Join { group: g.clone() });
                }
            }
            self.refresh_transfer_block(now, out);
        }
        if outsiders.is_empty() {
            return;
        }
        let token = TransferToken { view, seq: 1 };
        let names: Vec<String> = self.groups.keys().cloned().collect();
        for g in names {
            let list = self.groups.get(&g).cloned().unwrap_or_default();
            if !list.iter().any(|m| outsiders.contains(m)) {
                continue;
            }
            // The provider holds the reference lineage's state itself: not an outsider, and not a
            // member still waiting for its own transfer.
            let provider = list
                .iter()
                .copied()
                .find(|m| !outsiders.contains(m) && !self.transfers.contains_key(&(g.clone(), *m)));
            let Some(provider) = provider else {
                // Every member of the lineage in the group waits for a state itself, or none is in
                // the group: nobody holds the reference state at this point.
                self.reset_group_state(now, &g, out);
                continue;
            };
            // Members of the lineage waiting for a state from an outsider get it from the provider
            // instead: an outsider's state is not the reference lineage's (and it now waits itself).
            let from_outsider: Vec<Member> = self
                .transfers
                .iter()
                .filter(|((gg, j), (p, _))| *gg == g && outsiders.contains(p) && !outsiders.contains(j))
                .map(|((_, j), _)| *j)
                .collect();
            for j in from_outsider {
                // As when a provider is replaced: the new state is taken at this point, after
                // everything held so far.
                let settled =
                    matches!(self.my_groups.get(&g), Some(MyGroup::Member | MyGroup::Awaiting { .. }));
                self.start_sync_transfer(now, &g, j, provider, token, settled, out);
            }
            for x in list.iter().copied().filter(|m| outsiders.contains(m)) {
                // Not while the application left and joined again (its leave and newer join are on
                // their way: that join starts its transfer when it is delivered). A join on its way
                // with no leave before it was already delivered in the reference lineage (the table
                // lists us): it will be a no-op, so this transfer is the one. Held messages, if any,
                // come before this point and are part of the state asked for.
                let settled = match self.my_groups.get(&g) {
                    Some(MyGroup::Member | MyGroup::Awaiting { .. }) => true,
                    Some(MyGroup::Joining) => !self.leave_pending(&g),
                    None => false,
                };
                self.start_sync_transfer(now, &g, x, provider, token, settled, out);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_state(
        &mut self,
        now: u64,
        from: Member,
        group: String,
        joiner: Member,
        token: TransferToken,
        state: Vec<u8>,
        out: &mut Vec<Output>,
    ) {
        if joiner != self.me {
            return;
        }
        let expected = self.transfers.get(&(group.clone(), self.me)).copied();
        match expected {
            Some((p, t)) if p == from && t == token => {
                if matches!(self.my_groups.get(&group), Some(MyGroup::Awaiting { .. })) {
                    self.send(from.node(), Body::StateAck { group: group.clone(), token }, out);
                    self.applied_tokens.insert(group.clone(), token);
                    self.finish_transfer(now, &group, from, state, Some(token), out);
                }
            }
            _ => {
                if self.applied_tokens.get(&group) == Some(&token) {
                    // A duplicate of the transfer we applied: acknowledge again so the provider stops.
                    // Superseded transfers are never acknowledged; their provider gives them up.
                    self.send(from.node(), Body::StateAck { group, token }, out);
                } else if state.len() <= self.cfg.max_state_bytes {
                    // The provider delivered our join before we did: keep the state (bounded) until our
                    // own delivery of the join reaches the same point.
                    if self.early_states.len() >= 16 {
                        self.early_states.pop_first();
                    }
                    self.early_states.insert((group, token), (from, state));
                }
            }
        }
    }

    /// Applies a state that arrived before this member delivered its own join, if it is the one expected.
    fn apply_early_state(&mut self, now: u64, group: &str, out: &mut Vec<Output>) {
        let Some(&(p, t)) = self.transfers.get(&(group.to_string(), self.me)) else { return };
        if let Some((from, state)) = self.early_states.remove(&(group.to_string(), t)) {
            if from == p {
                self.send(from.node(), Body::StateAck { group: group.to_string(), token: t }, out);
                self.applied_tokens.insert(group.to_string(), t);
                self.finish_transfer(now, group, from, state, Some(t), out);
            }
        }
    }

    fn finish_transfer(
        &mut self,
        now: u64,
        group: &str,
        provider: Member,
        state: Vec<u8>,
        token: Option<TransferToken>,
        out: &mut Vec<Output>,
    ) {
        let Some(MyGroup::Awaiting { held, .. }) = self.my_groups.get_mut(group) else { return };
        let held = std::mem::take(held);
        let bytes = state.len() as u64;
        // The transfer table is replicated: only the ordered `StateApplied` ends the transfer there.
        self.my_groups.insert(group.to_string(), MyGroup::Member);
        self.notify(Notification::ApplyState { group: group.to_string(), provider, state }, out);
        self.record(
            now,
            Event::StateTransfer {
                group: group.to_string(),
                role: TransferRole::Receiver,
                peer: provider,
                bytes,
                ok: true,
                point: token.map(|t| t.to_string()),
            },
            out,
        );
        // Deliveries that arrived while the transfer was pending are handed over in order, after the
        // state (G11): the state is the provider's at the join point, these come after it.
        for n in held {
            self.notify(n, out);
        }
        if let Some(token) = token {
            let id = self.new_id();
            self.push_out(id, Delivery::Agreed, Op::StateApplied { group: group.to_string(), token });
        }
        self.refresh_transfer_block(now, out);
    }

    /// `state_transfer` blocks exactly while some group of this member's application awaits its state.
    fn refresh_transfer_block(&mut self, now: u64, out: &mut Vec<Output>) {
        if self.my_groups.values().any(|g| matches!(g, MyGroup::Awaiting { .. })) {
            self.block(now, BlockReason::StateTransfer, out);
        } else {
            self.unblock(now, BlockReason::StateTransfer, out);
        }
    }

    fn on_state_ack(
        &mut self,
        now: u64,
        from: Member,
        group: String,
        token: TransferToken,
        out: &mut Vec<Output>,
    ) {
        if let Some(p) = self.providing.remove(&(group.clone(), from, token)) {
            self.record(
                now,
                Event::StateTransfer {
                    group,
                    role: TransferRole::Provider,
                    peer: from,
                    bytes: p.state.len() as u64,
                    ok: true,
                    point: Some(token.to_string()),
                },
                out,
            );
        }
    }

    /// How often a provider sends its state again until the joiner acknowledges it.
    fn transfer_period(&self) -> u64 {
        self.cfg.view_change_timeout_ms.max(self.cfg.retransmit_interval_ms * 4)
    }

    fn drive_transfers(&mut self, now: u64, out: &mut Vec<Output>) {
        let period = self.transfer_period();
        let due: Vec<(String, Member, TransferToken)> = self
            .providing
            .iter()
            .filter(|(_, p)| now.saturating_sub(p.last_tx) >= period)
            .map(|(k, _)| k.clone())
            .collect();
        let view = self.view.clone();
        for key in due {
            let (group, joiner, token) = key.clone();
            // Give up on joiners that are no longer in the group, and on transfers given to another
            // provider or another point since (the joiner will never acknowledge those). A joiner
            // that is only out of this member's view (a non-primary view in between) may come back
            // with the transfer still assigned to us: keep the state, send it once it is back.
            let current = self.transfers.get(&(group.clone(), joiner)).copied();
            let superseded = current.is_some_and(|(p, t)| p != self.me || t != token);
            let gone = !self.groups.get(&group).is_some_and(|l| l.contains(&joiner));
            if superseded || gone {
                if let Some(p) = self.providing.remove(&key) {
                    self.record(
                        now,
                        Event::StateTransfer {
                            group,
                            role: TransferRole::Provider,
                            peer: joiner,
                            bytes: p.state.len() as u64,
                            ok: false,
                            point: Some(token.to_string()),
                        },
                        out,
                    );
                }
                continue;
            }
            if !view.as_ref().is_some_and(|v| v.contains(joiner)) {
                continue;
            }
            if let Some(p) = self.providing.get_mut(&key) {
                p.last_tx = now;
                let state = p.state.clone();
                self.send(joiner.node(), Body::State { group, joiner, token, state }, out);
            }
        }
    }

    // ----------------------------------------------------------------------------------------------
    // Fencing and recovery
    // ----------------------------------------------------------------------------------------------

    fn is_fencer(&self) -> bool {
        self.is_primary() && self.view.as_ref().and_then(View::leader) == Some(self.me)
    }

    fn request_fence(&mut self, now: u64, target: Member, reason: &str, out: &mut Vec<Output>) {
        if self.fence_inflight.contains_key(&target) {
            return;
        }
        if target.node() == self.me.node() && target.epoch() < self.me.epoch() {
            // An earlier incarnation of this very node: this agent runs instead of it, so it is gone.
            // Fencing it would power off the fencer itself.
            self.record(
                now,
                Event::FenceResult {
                    target,
                    ok: true,
                    method: FenceMethod::Restarted,
                    detail: "the fencer is a newer incarnation of the same node".into(),
                },
                out,
            );
            self.fenced(now, target, FenceMethod::Restarted, out);
            return;
        }
        self.fence_inflight.insert(target, now);
        self.fence_failed_at.remove(&target);
        self.record(now, Event::FenceRequest { target, reason: reason.to_string() }, out);
        out.push(Output::Fence { target, reason: reason.to_string() });
    }

    fn fencing_after_install(&mut self, now: u64, out: &mut Vec<Output>) {
        let pending = self.durable.registry.pending_fences();
        if pending.is_empty() {
            self.unblock(now, BlockReason::Fencing, out);
        } else {
            self.block(now, BlockReason::Fencing, out);
        }
        self.announce_recovered(now, out);
        if self.is_fencer() {
            // A new fencer takes over every pending fence: an earlier fencer may have failed.
            self.fence_inflight.clear();
            for t in pending {
                self.pending_since.entry(t).or_insert(now);
            }
            self.drive_fencing(now, out);
        }
    }

    fn drive_fencing(&mut self, now: u64, out: &mut Vec<Output>) {
        // Two-node mode: a lone member outside the primary view fences the other node itself; the fence
        // race decides which side becomes primary.
        if self.cfg.quorum.two_node
            && !self.is_primary()
            && !self.removed_self
            && self.cfg.fencing == FencingMode::Agent
        {
            if let (Some(lp), Some(v)) = (self.last_primary.clone(), self.view.clone()) {
                if v.members.len() == 1 {
                    let me = self.me;
                    for m in lp.members.iter().copied().filter(|m| m.node() != me.node()) {
                        let done = self.durable.registry.removal(m).is_some_and(|r| r.fence.is_done());
                        let retry = self
                            .fence_failed_at
                            .get(&m)
                            .is_none_or(|t| now.saturating_sub(*t) > self.cfg.failure_timeout_ms * 2);
                        if !done && !self.fence_inflight.contains_key(&m) && retry {
                            self.request_fence(now, m, "two_node", out);
                        }
                    }
                }
            }
        }
        if !self.is_fencer() {
            return;
        }
        // A member removed as failed whose clean leave this fencer has learned since needs no fence: the
        // next install records it as left (`maybe_start_view_change` starts one), L6.
        let pending: Vec<Member> = self
            .durable
            .registry
            .pending_fences()
            .into_iter()
            .filter(|t| !self.known_leaver(*t, &BTreeMap::new()))
            .collect();
        for t in pending {
            match self.cfg.fencing {
                FencingMode::Agent => {
                    let retry = self
                        .fence_failed_at
                        .get(&t)
                        .is_none_or(|f| now.saturating_sub(*f) > self.cfg.failure_timeout_ms * 2);
                    if !self.fence_inflight.contains_key(&t) && retry {
                        self.request_fence(now, t, "failed", out);
                    }
                }
                FencingMode::Watchdog => {
                    let since = *self.pending_since.entry(t).or_insert(now);
                    let heard =
                        self.peers.get(&t.node()).filter(|p| p.member == t).map_or(0, |p| p.last_heard);
                    if now >= since.max(heard) + self.cfg.watchdog_wait_ms
                        && !self.fence_inflight.contains_key(&t)
                    {
                        self.fence_inflight.insert(t, now);
                        self.record(
                            now,
                            Event::FenceResult {
                                target: t,
                                ok: true,
                                method: FenceMethod::Watchdog,
                                detail: format!("silent for watchdog_wait_ms={}", self.cfg.watchdog_wait_ms),
                            },
                            out,
                        );
                        self.fenced(now, t, FenceMethod::Watchdog, out);
                    }
                }
            }
        }
    }

    /// `target` is fenced: record it and tell every member through the total order.
    fn fenced(&mut self, now: u64, target: Member, method: FenceMethod, out: &mut Vec<Output>) {
        if self.durable.registry.removal(target).is_none() {
            let view = self.view.as_ref().map(|v| v.id).unwrap_or_default();
            let mut r = Registry::default();
            r.nodes.entry(target.node()).or_default().removals.push(Removal {
                member: target,
                view,
                reason: RemovalReason::Failed,
                at_ms: now,
                fence: FenceStatus::Fenced(method),
                recovered: false,
            });
            r.nodes.entry(target.node()).or_default().removed_up_to = target.epoch();
            self.durable.registry.merge(&r);
        } else {
            self.durable.registry.mark_fenced(target, method);
        }
        // A stateful merge of it is resolved now: `status` lists only the open ones.
        self.merges.remove(&target);
        self.merge_fence_requested.remove(&target);
        self.persist(out);
        if self.is_primary() {
            let id = self.new_id();
            self.push_out(id, Delivery::Agreed, Op::FenceDone { target, method });
        }
        self.announce_recovered(now, out);
    }

    fn on_fence_done(&mut self, now: u64, target: Member, method: FenceMethod, out: &mut Vec<Output>) {
        self.fence_inflight.remove(&target);
        if self.durable.registry.mark_fenced(target, method) {
            self.persist(out);
        }
        self.announce_recovered(now, out);
        if self.durable.registry.pending_fences().is_empty() {
            self.unblock(now, BlockReason::Fencing, out);
        }
    }

    /// Announces `recovered` for failed members that are fenced (G9). Only in a primary view.
    fn announce_recovered(&mut self, now: u64, out: &mut Vec<Output>) {
        let Some(v) = self.view.clone() else { return };
        if !v.primary {
            return;
        }
        let ready: Vec<Member> = self
            .durable
            .registry
            .recoverable()
            .into_iter()
            .filter(|m| !self.recovered_announced.contains(m))
            .collect();
        if ready.is_empty() {
            return;
        }
        for m in &ready {
            self.recovered_announced.insert(*m);
            self.durable.registry.mark_recovered(*m);
        }
        self.record(now, Event::Recovered { view: v.id, failed: ready.clone() }, out);
        self.notify(Notification::Recovered { failed: ready }, out);
    }

    /// True while this member is in a primary view that works: not frozen by a view change, and
    /// hearing a quorum of the view's members. A member stuck in a stale primary view is not.
    fn in_working_primary(&self, now: u64) -> bool {
        let Some(v) = &self.view else { return false };
        // A member told that a primary view removed it is outside the primary history, whatever view
        // it still holds.
        if !v.primary || self.frozen_since.is_some() || self.removed_self || self.stall.is_some() {
            return false;
        }
        let present: Vec<NodeId> =
            v.members.iter().filter(|m| !self.suspected(now, **m)).map(|m| m.node()).collect();
        quorum::is_quorate(&QuorumInput { config: &self.cfg, present: &present, seen_all_once: true })
    }

    /// A stall whose view nobody confirmed within the failure timeout: the view moved on without this
    /// member, or nobody who could confirm it is left. Its state may be stale and it cannot tell whether
    /// its removal was recovered, so it stops acting on it, as the watchdog does, and starts again as a
    /// new member that receives state transfer. (A member told it was removed follows the merge policy
    /// instead.)
    fn drive_stall(&mut self, now: u64, out: &mut Vec<Output>) {
        let Some(st) = &self.stall else { return };
        if self.removed_self || self.self_fenced || now.saturating_sub(st.at) < self.cfg.failure_timeout_ms {
            return;
        }
        self.self_fenced = true;
        let reason = format!(
            "stalled and the view was not confirmed within failure_timeout_ms={}",
            self.cfg.failure_timeout_ms
        );
        self.record(now, Event::SelfFence { reason: reason.clone() }, out);
        out.push(Output::SelfFence { reason });
        self.request_new_epoch(Epoch(self.me.epoch().0 + 1), NewEpochReason::Reset, out);
    }

    fn drive_watchdog(&mut self, now: u64, out: &mut Vec<Output>) {
        if self.cfg.self_fence_after_ms == 0 || self.self_fenced {
            return;
        }
        if self.in_working_primary(now) {
            self.last_primary_ms = Some(now);
            return;
        }
        let Some(since) = self.last_primary_ms else { return };
        if now.saturating_sub(since) >= self.cfg.self_fence_after_ms {
            self.self_fenced = true;
            let reason =
                format!("outside any primary view for self_fence_after_ms={}", self.cfg.self_fence_after_ms);
            self.record(now, Event::SelfFence { reason: reason.clone() }, out);
            out.push(Output::SelfFence { reason });
            // Its applications stopped acting on their state: this member never comes back with it.
            // It starts again as a new incarnation (the old one counts as fenced on the primary side
            // once the watchdog wait passed, or when the new epoch is seen).
            self.request_new_epoch(Epoch(self.me.epoch().0 + 1), NewEpochReason::Reset, out);
        }
    }
}

/// Rate limit for telling a member something again: true (and noted) when `m` was not told within
/// `every_ms`. Keeps at most 64 members, forgetting the oldest.
fn due_again(told: &mut BTreeMap<Member, u64>, m: Member, now: u64, every_ms: u64) -> bool {
    if told.get(&m).is_some_and(|t| now.saturating_sub(*t) < every_ms) {
        return false;
    }
    if told.len() >= 64 && !told.contains_key(&m) {
        told.pop_first();
    }
    told.insert(m, now);
    true
}

/// What the resolver of a stateful merge does under `policy`, and what the removed member is told.
fn merge_actions(policy: MergePolicy) -> (MergeAction, RemovedAction) {
    match policy {
        MergePolicy::Fence => (MergeAction::Fence, RemovedAction::AwaitFence),
        MergePolicy::Restart => (MergeAction::Kill, RemovedAction::Restart),
        MergePolicy::Reset => (MergeAction::Kill, RemovedAction::Reset),
        MergePolicy::Wait => (MergeAction::Wait, RemovedAction::Wait),
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
