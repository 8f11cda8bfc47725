//! The epoch inquiry: before a node runs a new incarnation, it asks the cluster which epochs it has
//! seen for the node and claims the one it will use, so that a node whose data directory was wiped or
//! restored from an older backup never runs under an epoch that already appears in somebody's log (G12).
//!
//! [`EpochInquiry`] is a small sans-IO state machine the host runs before it persists the new epoch and
//! creates the [`crate::Node`]. It has two phases, like the two phases of a Paxos round:
//!
//! 1. **Query.** It sends `EpochQuery` to every other configured node under epoch 0 (a member that never
//!    exists) and collects `EpochAnswer`s: the highest epoch each knows for the node, and the highest
//!    view sequence number it saw. It goes on once a strict majority of the configured nodes answered,
//!    counting itself only if its data directory held an epoch (a wiped directory knows nothing and
//!    must hear a majority of the others), or every other node did, or — only at its deadline — at a
//!    cluster's first start (itself and a majority-making set of answers from nodes that never ran
//!    either), or in `two_node` mode. The candidate is the lowest epoch above everything it learned and
//!    above its own disk.
//! 2. **Claim.** It sends `EpochClaim` with the candidate. A node that knows no epoch of the claimer at
//!    or above it records the claim on disk ([`Durable::reserved`]) and grants it; one that does refuses
//!    with what it knows, and the claimer claims above that. The epoch is decided once a strict majority
//!    of the configured nodes holds it (the claimer's own disk counts: the host persists the epoch
//!    before the incarnation sends anything). Any later inquiry's majority therefore contains a node
//!    that recorded it, even if the claimer's data directory is wiped in between.
//!
//! A running core that asks for a new epoch (`NewEpoch`: a restart, a reset, moving past a stale epoch)
//! knows its own epochs and skips the query ([`EpochInquiry::claim_only`]), but claims like anybody.
//!
//! While it runs, the machine answers other inquirers' queries and claims from its disk (persisting a
//! granted claim through [`Output::Persist`] before the answer), so a whole cluster that starts at once
//! decides within two round trips. Running members answer in `Node::receive`.
//!
//! A data directory found **behind** the cluster (an answer knows a higher epoch of this node than its
//! disk: wiped, or restored from an older backup) also lost the highest view sequence number it used,
//! and its earlier incarnation may have formed views nobody alive saw. The new incarnation starts its
//! view numbers [`SEQ_GAP_BEHIND`] above everything reported ([`EpochInquiry::view_seq_floor`]), so it
//! never forms a view id an earlier incarnation used (G1).

use crate::config::Config;
use crate::msg::Body;
use crate::node::{Durable, Output, Reservation};
use crate::types::{Epoch, Member, NodeId};
use crate::wire::{self, Envelope, Fragmenter, Reassembler};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The epoch every inquiry is sent under: no incarnation ever runs under it.
pub const INQUIRY_EPOCH: Epoch = Epoch(0);

/// How far above every reported view sequence number a data directory found behind the cluster starts
/// its own: more views than an incarnation cut off from every majority could ever form.
pub const SEQ_GAP_BEHIND: u64 = 1 << 32;

#[derive(Debug)]
enum Phase {
    Query,
    Claim { epoch: Epoch, granted: BTreeSet<NodeId>, since: u64 },
}

/// One inquiry. See the module documentation.
pub struct EpochInquiry {
    cfg: Arc<Config>,
    node: NodeId,
    disk: Durable,
    nonce: u64,
    started_at: u64,
    wait: u64,
    deadline: u64,
    answers: BTreeMap<NodeId, Epoch>,
    fresh: BTreeSet<NodeId>,
    max_view_seq: u64,
    /// The highest epoch of this node its data directory knew when the inquiry began. Leaves learned
    /// from answers later do not count: a directory found behind the cluster stays behind (G1).
    own: Epoch,
    /// The highest epoch of this node an answer saw in use.
    ran: Epoch,
    /// The operator said the data directory was restored from a backup ([`EpochInquiry::after_restore`]).
    restored: bool,
    behind: bool,
    claim_only: bool,
    next_tx: u64,
    frag: Fragmenter,
    reasm: Reassembler,
    phase: Phase,
    decided: Option<Epoch>,
}

impl EpochInquiry {
    /// Starts an inquiry for `node`, whose data directory holds `disk`. `nonce` tells this inquiry's
    /// answers from a previous one's (the host draws it, e.g. from its clock).
    pub fn new(cfg: Arc<Config>, node: NodeId, disk: Durable, nonce: u64, now: u64) -> EpochInquiry {
        let wait = cfg.discovery_interval_ms.max(cfg.failure_timeout_ms) * 2;
        let max_packet = 64 * 1024;
        // Its own clean leaves are left out: a directory's own leave is never above its epoch, and one
        // above it was learned back from an answer by an inquiry this one replaces (a start interrupted
        // and begun again): the directory is still behind (G1, G12).
        let mut without_own_leaves = disk.clone();
        without_own_leaves.left.retain(|m| m.node() != node);
        let own = disk.epoch.max(known_epoch_on_disk(&without_own_leaves, node));
        EpochInquiry {
            own,
            ran: Epoch(0),
            restored: false,
            reasm: Reassembler::new(max_packet, 8, max_packet * 4, cfg.failure_timeout_ms * 4),
            frag: Fragmenter::new(nonce ^ (u64::from(node.0) << 40)),
            cfg,
            node,
            disk,
            nonce: nonce.max(1),
            started_at: now,
            wait,
            deadline: now + wait,
            answers: BTreeMap::new(),
            fresh: BTreeSet::new(),
            max_view_seq: 0,
            behind: false,
            claim_only: false,
            next_tx: now,
            phase: Phase::Query,
            decided: None,
        }
    }

    /// A running core's request for a new epoch of at least `min_epoch` (`Output::NewEpoch`): `disk` is
    /// its durable state, which knows every epoch this node used, so only the claim is made.
    pub fn claim_only(
        cfg: Arc<Config>,
        node: NodeId,
        disk: Durable,
        min_epoch: Epoch,
        nonce: u64,
        now: u64,
    ) -> EpochInquiry {
        let mut q = EpochInquiry::new(cfg, node, disk, nonce, now);
        let floor = q.disk.epoch.max(known_epoch_on_disk(&q.disk, node));
        let epoch = Epoch((floor.0 + 1).max(min_epoch.0));
        q.phase = Phase::Claim { epoch, granted: BTreeSet::new(), since: now };
        q.claim_only = true;
        q
    }

    /// The data directory was restored from a backup (the operator says so, see docs/OPERATIONS.md): it
    /// may lack epochs that other nodes granted since, so it does not speak for itself in the query and
    /// waits for a majority of the others, like a wiped one (G12).
    pub fn after_restore(mut self) -> EpochInquiry {
        self.restored = true;
        self
    }

    /// The epoch the new incarnation must use, once decided (claimed at a majority).
    pub fn decided(&self) -> Option<Epoch> {
        self.decided
    }

    /// What was learned so far: per answering node, the highest epoch it knows for this node.
    pub fn answers(&self) -> &BTreeMap<NodeId, Epoch> {
        &self.answers
    }

    /// The data directory's durable state with the claims of other nodes this inquiry granted: the
    /// host persisted it for every [`Output::Persist`] the machine produced.
    pub fn disk(&self) -> &Durable {
        &self.disk
    }

    /// The highest view sequence number any answer reported.
    pub fn max_view_seq(&self) -> u64 {
        self.max_view_seq
    }

    /// True when an answer knew an epoch of this node above its data directory's (wiped, or restored
    /// from an older backup).
    pub fn behind(&self) -> bool {
        self.behind
    }

    /// True when the data directory lost what it knew: an answer saw an epoch of this node in use above
    /// the directory's (wiped, or an older backup), or the operator said it restored a backup. The host
    /// then starts the incarnation with [`Durable::catching_up`] set. (An epoch only claimed above it,
    /// by a restart that never ran, is no sign of loss.)
    pub fn forgot(&self) -> bool {
        self.ran > self.own || self.restored
    }

    /// The view sequence number the new incarnation starts above (`Durable::max_view_seq`): the highest
    /// any answer reported, and [`SEQ_GAP_BEHIND`] more when the data directory is behind, so it never
    /// forms a view id an earlier incarnation used (G1).
    pub fn view_seq_floor(&self) -> u64 {
        let gap = if self.behind { SEQ_GAP_BEHIND } else { 0 };
        self.max_view_seq.saturating_add(gap)
    }

    /// The view sequence number the new incarnation starts above: its data directory's, or
    /// [`EpochInquiry::view_seq_floor`] when that is higher. The claim records it, so a later
    /// incarnation that lost this directory starts above every view this one forms (G1).
    pub fn start_seq(&self) -> u64 {
        self.disk.max_view_seq.max(self.view_seq_floor())
    }

    /// What the inquiry waits for, for logs and status.
    pub fn waiting_for(&self) -> String {
        match &self.phase {
            Phase::Query => format!(
                "answers from a majority of the cluster ({} of {} other nodes answered)",
                self.answers.len(),
                self.cfg.nodes.len().saturating_sub(1)
            ),
            Phase::Claim { epoch, granted, .. } => format!(
                "a majority of the cluster to record epoch {} ({} of {} other nodes did)",
                epoch.0,
                granted.len(),
                self.cfg.nodes.len().saturating_sub(1)
            ),
        }
    }

    /// When the host must call [`EpochInquiry::tick`] next.
    pub fn next_wakeup_ms(&self) -> u64 {
        match &self.phase {
            Phase::Query => self.next_tx.min(self.deadline),
            Phase::Claim { since, .. } => self.next_tx.min(since + self.wait),
        }
    }

    /// How long the inquiry has run.
    pub fn elapsed_ms(&self, now: u64) -> u64 {
        now.saturating_sub(self.started_at)
    }

    /// Timers: (re)sends the queries or the claim, decides at the deadline where allowed. Returns the
    /// decision once there is one.
    pub fn tick(&mut self, now: u64, out: &mut Vec<Output>) -> Option<Epoch> {
        self.progress(now);
        if self.decided.is_none() && now >= self.next_tx {
            self.next_tx = now + self.cfg.heartbeat_interval_ms.max(1);
            let (body, done): (Body, BTreeSet<NodeId>) = match &self.phase {
                Phase::Query => {
                    (Body::EpochQuery { nonce: self.nonce }, self.answers.keys().copied().collect())
                }
                Phase::Claim { epoch, granted, .. } => {
                    let claim = Body::EpochClaim {
                        nonce: self.nonce,
                        epoch: *epoch,
                        view_seq_floor: self.start_seq(),
                    };
                    (claim, granted.clone())
                }
            };
            let to: Vec<NodeId> = self
                .cfg
                .nodes
                .iter()
                .map(|n| n.id)
                .filter(|n| *n != self.node && !done.contains(n))
                .collect();
            for n in to {
                self.send(n, body.clone(), out);
            }
        }
        self.decided
    }

    /// A datagram arrived for this node while it inquires: answers are collected, queries and claims of
    /// other inquirers answered from the disk. Anything else is dropped. Returns the decision once there
    /// is one.
    pub fn receive(&mut self, now: u64, datagram: &[u8], out: &mut Vec<Output>) -> Option<Epoch> {
        let Ok(Some(packet)) = self.reasm.accept(now, NodeId(0), datagram) else { return self.decided };
        let Ok(env) = wire::decode::<Body>(&packet, 64 * 1024, &self.cfg.cluster) else {
            return self.decided;
        };
        let from = env.from;
        if !self.cfg.is_configured(from.node()) || from.node() == self.node {
            return self.decided;
        }
        match env.body {
            Body::EpochAnswer { nonce, highest, max_view_seq, fresh, left, ran } if nonce == self.nonce => {
                self.ran = self.ran.max(ran);
                // A clean leave of an earlier incarnation that this data directory lost (wiped, or an
                // older backup): a fact whoever reports it, so it is kept from any answer, in any
                // phase; the new incarnation reports it in its promises (L6).
                let mut learned = false;
                for e in left {
                    learned |= self.disk.note_left(Member(self.node, e));
                }
                if learned {
                    out.push(Output::Persist(self.disk.clone()));
                }
                if matches!(self.phase, Phase::Query) {
                    self.answers.insert(from.node(), highest);
                    if fresh {
                        self.fresh.insert(from.node());
                    } else {
                        self.fresh.remove(&from.node());
                    }
                    self.max_view_seq = self.max_view_seq.max(max_view_seq);
                    self.progress(now);
                    if !matches!(self.phase, Phase::Query) {
                        // Claim at once rather than at the next resend.
                        self.tick(now, out);
                    }
                }
            }
            Body::EpochClaimAnswer { nonce, epoch, granted, highest } if nonce == self.nonce => {
                let behind_disk = highest > self.own;
                let querying = !self.claim_only;
                if let Phase::Claim { epoch: current, granted: set, .. } = &mut self.phase {
                    if epoch == *current {
                        if granted {
                            set.insert(from.node());
                        } else if highest >= *current {
                            // Somebody knows this epoch (or a later one) of this node: claim above it.
                            *current = Epoch(highest.0 + 1);
                            set.clear();
                            self.next_tx = now;
                            if behind_disk && querying {
                                self.behind = true;
                            }
                        }
                    }
                }
                self.progress(now);
                if self.decided.is_none() {
                    self.tick(now, out);
                }
            }
            // A directory that forgot what it knew and has not caught up answers no query (G12).
            Body::EpochQuery { .. } if self.disk.catching_up => {}
            Body::EpochQuery { nonce } => {
                let highest = known_epoch_on_disk(&self.disk, from.node());
                let max_view_seq = self
                    .disk
                    .max_view_seq
                    .max(self.disk.max_installed_seq)
                    .max(reserved_floor(&self.disk, from.node()));
                let fresh = self.disk.epoch.0 == 0;
                let left: Vec<Epoch> =
                    self.disk.left.iter().filter(|m| m.node() == from.node()).map(|m| m.epoch()).collect();
                let ran = seen_epoch_on_disk(&self.disk, from.node());
                self.send(
                    from.node(),
                    Body::EpochAnswer { nonce, highest, max_view_seq, fresh, left, ran },
                    out,
                );
            }
            Body::EpochClaim { nonce, epoch, view_seq_floor } => {
                let known = known_epoch_on_disk(&self.disk, from.node());
                let (granted, changed) =
                    grant_claim(&mut self.disk, from.node(), (epoch, nonce, view_seq_floor), known);
                if changed {
                    out.push(Output::Persist(self.disk.clone()));
                }
                let highest = known_epoch_on_disk(&self.disk, from.node());
                self.send(from.node(), Body::EpochClaimAnswer { nonce, epoch, granted, highest }, out);
            }
            _ => {}
        }
        self.decided
    }

    /// True when the deadline may end the query without a majority's answers: in `two_node` mode (the
    /// other node may be the one that is gone), and at a cluster's first start: an empty data directory
    /// whose answers, with itself, make a majority and all come from nodes that never ran either.
    fn may_decide_at_deadline(&self) -> bool {
        if self.cfg.quorum.two_node {
            return true;
        }
        let first_start = self.disk.epoch.0 == 0
            && self.answers.keys().all(|n| self.fresh.contains(n))
            && 2 * (self.answers.len() + 1) > self.cfg.nodes.len();
        first_start
    }

    fn progress(&mut self, now: u64) {
        if self.decided.is_some() {
            return;
        }
        let n = self.cfg.nodes.len();
        if matches!(self.phase, Phase::Query) {
            let others = n.saturating_sub(1);
            // A data directory that held an epoch speaks for itself; a wiped one knows nothing, and
            // neither does one an answer shows behind (an older backup restored): the epochs it lost were
            // granted by other nodes, which a majority of the others must include.
            // (Seen in use above it, not merely claimed: a claim of a restart that never ran leaves the
            // directory intact.) The operator's word that it was restored counts the same: `forgot`.
            let me = usize::from(self.disk.epoch.0 > 0 && !self.forgot());
            // Nor does a `fresh` answer (a directory that never held an epoch, or one wiped and asking
            // itself) count toward the majority: it knows nothing. Fresh answers matter at a cluster's
            // first start only (`may_decide_at_deadline`).
            let knowing = self.answers.keys().filter(|k| !self.fresh.contains(k)).count();
            let majority = 2 * (knowing + me) > n;
            if majority
                || self.answers.len() >= others
                || (now >= self.deadline && self.may_decide_at_deadline())
            {
                let learned = self.answers.values().copied().max().unwrap_or(Epoch(0));
                let own = self.own;
                self.behind = learned > own;
                let epoch = Epoch(learned.max(own).0 + 1);
                self.phase = Phase::Claim { epoch, granted: BTreeSet::new(), since: now };
                self.next_tx = now;
            }
        }
        if let Phase::Claim { epoch, granted, since } = &self.phase {
            // The claimer's own disk counts: the host persists the epoch before the incarnation sends.
            let majority = 2 * (granted.len() + 1) > n;
            if majority || (self.cfg.quorum.two_node && now >= since + self.wait) {
                self.decided = Some(*epoch);
            }
        }
    }

    fn send(&mut self, to: NodeId, body: Body, out: &mut Vec<Output>) {
        let env = Envelope {
            version: wire::WIRE_VERSION,
            cluster: self.cfg.cluster.clone(),
            from: Member(self.node, INQUIRY_EPOCH),
            body,
        };
        if let Ok(p) = wire::encode(&env) {
            for bytes in self.frag.frame(&p, self.cfg.max_datagram_bytes) {
                out.push(Output::Send { to, bytes });
            }
        }
    }
}

/// Decides an `EpochClaim` of `node` for `epoch` (with the claiming inquiry's `nonce` and the view
/// sequence number the incarnation starts above) at a node whose durable state is `disk` and which knows
/// `known` as the node's highest epoch (its disk, and for a running core what it heard): granted when
/// nothing at or above `epoch` is known, or when this very claim (same nonce) was granted before.
/// Returns (granted, whether `disk` changed and must be persisted before the answer is sent).
pub fn grant_claim(
    disk: &mut Durable,
    node: NodeId,
    (epoch, nonce, view_seq_floor): (Epoch, u64, u64),
    known: Epoch,
) -> (bool, bool) {
    let member = Member(node, epoch);
    if disk.reserved.iter().any(|r| r.member == member && r.nonce == nonce) {
        return (true, false);
    }
    if known >= epoch || epoch == INQUIRY_EPOCH {
        return (false, false);
    }
    // The floor only grows: a later incarnation never starts below an earlier one.
    let floor = view_seq_floor.max(reserved_floor(disk, node));
    disk.reserved.retain(|r| r.member.node() != node);
    disk.reserved.push(Reservation { member, nonce, view_seq_floor: floor });
    disk.reserved.sort_by_key(|r| r.member);
    (true, true)
}

/// The view sequence number above which `node`'s newest claimed incarnation started
/// ([`Reservation::view_seq_floor`]); 0 if none is recorded.
pub fn reserved_floor(disk: &Durable, node: NodeId) -> u64 {
    disk.reserved.iter().filter(|r| r.member.node() == node).map(|r| r.view_seq_floor).max().unwrap_or(0)
}

/// The highest epoch a data directory's durable state knows for `node`, claimed or seen in use.
pub fn known_epoch_on_disk(disk: &Durable, node: NodeId) -> Epoch {
    let claimed =
        disk.reserved.iter().map(|r| r.member).filter(|m| m.node() == node).map(|m| m.epoch()).max();
    seen_epoch_on_disk(disk, node).max(claimed.unwrap_or(Epoch(0)))
}

/// The highest epoch of `node` a data directory's durable state saw in use (its registry, a leave, an
/// accepted install): claims granted but maybe never run are left out.
pub fn seen_epoch_on_disk(disk: &Durable, node: NodeId) -> Epoch {
    let mut e = disk.registry.known_epoch(node);
    let mut also = |m: &Member| {
        if m.node() == node {
            e = e.max(m.epoch());
        }
    };
    disk.left.iter().for_each(&mut also);
    if let Some(a) = &disk.accepted {
        a.members.iter().for_each(&mut also);
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(n: u32) -> Arc<Config> {
        let nodes: Vec<u32> = (1..=n).collect();
        Arc::new(Config::new("c", &nodes))
    }

    /// One datagram of `body` from `from`, as a peer's transport hands it over.
    fn dgram(cfg: &Config, from: Member, body: Body) -> Vec<u8> {
        let env = Envelope { version: wire::WIRE_VERSION, cluster: cfg.cluster.clone(), from, body };
        let p = wire::encode(&env).expect("encode");
        Fragmenter::new(1).frame(&p, cfg.max_datagram_bytes).remove(0)
    }

    /// An answer of a node that knows epoch `highest` of the querier, saw epoch `ran` in use, and has the
    /// clean leaves of epochs `left`.
    fn answer_body(nonce: u64, highest: u64, ran: u64, left: Vec<Epoch>) -> Body {
        Body::EpochAnswer {
            nonce,
            highest: Epoch(highest),
            max_view_seq: highest * 10,
            fresh: false,
            left,
            ran: Epoch(ran),
        }
    }

    fn answer(cfg: &Config, from: u32, nonce: u64, highest: u64) -> Vec<u8> {
        dgram(cfg, Member(NodeId(from), Epoch(3)), answer_body(nonce, highest, highest, Vec::new()))
    }

    fn fresh_answer(cfg: &Config, from: u32, nonce: u64) -> Vec<u8> {
        let body = Body::EpochAnswer {
            nonce,
            highest: Epoch(0),
            max_view_seq: 0,
            fresh: true,
            left: Vec::new(),
            ran: Epoch(0),
        };
        dgram(cfg, Member(NodeId(from), INQUIRY_EPOCH), body)
    }

    fn claim_answer(cfg: &Config, from: u32, nonce: u64, epoch: u64, granted: bool, highest: u64) -> Vec<u8> {
        let body = Body::EpochClaimAnswer { nonce, epoch: Epoch(epoch), granted, highest: Epoch(highest) };
        dgram(cfg, Member(NodeId(from), Epoch(3)), body)
    }

    fn sends(out: &[Output]) -> Vec<NodeId> {
        out.iter().filter_map(|o| if let Output::Send { to, .. } = o { Some(*to) } else { None }).collect()
    }

    fn bodies(out: &[Output]) -> Vec<(NodeId, Body)> {
        out.iter()
            .filter_map(|o| if let Output::Send { to, bytes } = o { Some((*to, bytes)) } else { None })
            .map(|(to, bytes)| {
                let p = Reassembler::new(65536, 4, 1 << 20, 1000)
                    .accept(0, NodeId(0), bytes)
                    .expect("frame")
                    .expect("whole");
                (to, wire::decode::<Body>(&p, 65536, "c").expect("decode").body)
            })
            .collect()
    }

    fn claims(out: &[Output]) -> Vec<(NodeId, Epoch)> {
        bodies(out)
            .into_iter()
            .filter_map(
                |(to, b)| if let Body::EpochClaim { epoch, .. } = b { Some((to, epoch)) } else { None },
            )
            .collect()
    }

    /// Node 1's inquiry with a wiped data directory in a cluster of three: node 2 and node 3 answer with
    /// what their disks hold. Returns the claim's view floor and node 2's disk after granting it.
    fn wiped_start(c: &Arc<Config>, nonce: u64, answerers: &mut [Durable]) -> u64 {
        let mut q = EpochInquiry::new(c.clone(), NodeId(1), Durable::default(), nonce, 0);
        let mut out = Vec::new();
        q.tick(0, &mut out);
        for (i, disk) in answerers.iter_mut().enumerate() {
            // Each answerer answers the query from its disk, as a node that is inquiring itself would.
            let mut a = EpochInquiry::new(c.clone(), NodeId(2 + i as u32), disk.clone(), 1000 + nonce, 0);
            let query = dgram(c, Member(NodeId(1), INQUIRY_EPOCH), Body::EpochQuery { nonce });
            let mut aout = Vec::new();
            a.receive(1, &query, &mut aout);
            for (_, b) in bodies(&aout) {
                let d = dgram(c, Member(NodeId(2 + i as u32), INQUIRY_EPOCH), b);
                q.receive(2, &d, &mut out);
            }
        }
        let claim = bodies(&out)
            .into_iter()
            .find_map(|(_, b)| match b {
                Body::EpochClaim { epoch, view_seq_floor, .. } => Some((epoch, view_seq_floor)),
                _ => None,
            })
            .expect("a claim");
        // Node 2 grants it and records the floor.
        let (granted, _) = grant_claim(&mut answerers[0], NodeId(1), (claim.0, nonce, claim.1), Epoch(0));
        assert!(granted);
        claim.1
    }

    #[test]
    fn two_incarnations_that_each_lost_the_data_directory_start_their_view_numbers_apart() {
        // Nodes 2 and 3 saw view numbers up to 18 and know epoch 3 of node 1. Node 1's epoch-4
        // incarnation, behind, forms views alone that nobody sees; its directory is wiped again, and
        // epoch 5 must not form a view number epoch 4 used (G1): the floor recorded with epoch 4's claim
        // comes back in node 2's answer.
        let c = cfg(3);
        let mut disk = Durable::fresh(Epoch(2));
        disk.max_view_seq = 18;
        disk.left.push(Member(NodeId(1), Epoch(3)));
        let mut answerers = vec![disk.clone(), disk];
        let first = wiped_start(&c, 7, &mut answerers);
        assert_eq!(first, 18 + SEQ_GAP_BEHIND, "a directory found behind starts a gap above the cluster");
        // Epoch 4 formed views first+1 .. first+1000 alone; nobody else saw them.
        let second = wiped_start(&c, 8, &mut answerers);
        assert!(
            second >= first + SEQ_GAP_BEHIND,
            "epoch 5 starts at {second}, inside epoch 4's range from {first}"
        );
    }

    #[test]
    fn a_restored_disk_learns_back_the_clean_leave_of_its_earlier_incarnation_from_any_answer() {
        let c = cfg(5);
        // Restored from a backup of epoch 1; epoch 2 left cleanly since, and node 2 has its `Leave`.
        let mut q = EpochInquiry::new(c.clone(), NodeId(1), Durable::fresh(Epoch(1)), 9, 0);
        let mut out = Vec::new();
        q.tick(0, &mut out);
        out.clear();
        let body = answer_body(9, 2, 2, vec![Epoch(2)]);
        q.receive(1, &dgram(&c, Member(NodeId(2), Epoch(3)), body), &mut out);
        let persisted: Vec<&Durable> =
            out.iter().filter_map(|o| if let Output::Persist(d) = o { Some(d) } else { None }).collect();
        assert_eq!(persisted.len(), 1, "the learned leave goes to disk at once: {out:?}");
        assert!(persisted[0].has_left(Member(NodeId(1), Epoch(2))));
        assert_eq!(persisted[0].epoch, Epoch(1), "learning a leave changes no epoch");
        assert!(q.disk().has_left(Member(NodeId(1), Epoch(2))));
        // Told again by another node: nothing new, nothing written.
        out.clear();
        let body = answer_body(9, 2, 2, vec![Epoch(2)]);
        q.receive(2, &dgram(&c, Member(NodeId(3), Epoch(3)), body), &mut out);
        assert!(!out.iter().any(|o| matches!(o, Output::Persist(_))), "{out:?}");
        // Shown behind, the directory does not speak for itself: two answers are no majority of five.
        assert!(claims(&out).is_empty(), "{out:?}");
        q.receive(3, &answer(&c, 4, 9, 2), &mut out);
        // Three of the others are. The learned leave does not make the directory look up to date: it
        // lost epoch 2's views, so its view numbers start far above (G1).
        assert_eq!(claims(&out).iter().map(|(_, e)| *e).max(), Some(Epoch(3)));
        assert!(q.behind(), "a restored directory stays behind after learning a leave");
        // And it tells others what its disk knows of their clean leaves.
        out.clear();
        let mut disk = Durable::fresh(Epoch(2));
        disk.note_left(Member(NodeId(4), Epoch(5)));
        let mut asked = EpochInquiry::new(c.clone(), NodeId(1), disk, 3, 0);
        asked.receive(
            1,
            &dgram(&c, Member(NodeId(4), INQUIRY_EPOCH), Body::EpochQuery { nonce: 44 }),
            &mut out,
        );
        let told: Vec<Vec<Epoch>> = bodies(&out)
            .into_iter()
            .filter_map(|(_, b)| if let Body::EpochAnswer { left, .. } = b { Some(left) } else { None })
            .collect();
        assert_eq!(told, vec![vec![Epoch(5)]]);
    }

    #[test]
    fn a_wiped_node_hears_a_majority_of_the_others_then_claims_above_everything_they_know() {
        let c = cfg(5);
        let mut q = EpochInquiry::new(c.clone(), NodeId(4), Durable::fresh(Epoch(0)), 77, 0);
        let mut out = Vec::new();
        assert_eq!(q.tick(0, &mut out), None);
        assert_eq!(sends(&out), vec![NodeId(1), NodeId(2), NodeId(3), NodeId(5)]);
        out.clear();
        assert_eq!(q.receive(1, &answer(&c, 1, 77, 6), &mut out), None);
        // An answer to another inquiry (another nonce) counts for nothing.
        assert_eq!(q.receive(1, &answer(&c, 2, 76, 9), &mut out), None);
        // Two answers and an empty disk are no majority of five: a wiped disk does not speak for itself.
        assert_eq!(q.receive(2, &answer(&c, 3, 77, 4), &mut out), None);
        assert!(claims(&out).is_empty(), "no claim before a majority of the others answered");
        assert_eq!(q.receive(3, &answer(&c, 5, 77, 2), &mut out), None);
        assert_eq!(
            claims(&out),
            vec![(NodeId(1), Epoch(7)), (NodeId(2), Epoch(7)), (NodeId(3), Epoch(7)), (NodeId(5), Epoch(7))]
        );
        assert_eq!(q.receive(4, &claim_answer(&c, 1, 77, 7, true, 7), &mut out), None);
        assert_eq!(q.receive(4, &claim_answer(&c, 3, 77, 7, true, 7), &mut out), Some(Epoch(7)));
        assert_eq!(q.max_view_seq(), 60, "the highest view sequence number any answer reported");
        assert!(q.behind(), "the cluster knew epoch 6 of a node whose disk held none");
        assert_eq!(q.view_seq_floor(), 60 + SEQ_GAP_BEHIND);
    }

    #[test]
    fn a_refused_claim_is_made_again_above_what_the_refuser_knows() {
        let c = cfg(3);
        let mut q = EpochInquiry::new(c.clone(), NodeId(2), Durable::fresh(Epoch(4)), 5, 0);
        let mut out = Vec::new();
        q.tick(0, &mut out);
        out.clear();
        // Node 1 answers the query; the disk of a node that ran speaks for itself: a majority.
        assert_eq!(q.receive(1, &answer(&c, 1, 5, 3), &mut out), None);
        assert_eq!(claims(&out), vec![(NodeId(1), Epoch(5)), (NodeId(3), Epoch(5))]);
        assert!(!q.behind());
        out.clear();
        // Node 3, which did not answer the query, holds a claim of epoch 6 of an earlier inquiry.
        assert_eq!(q.receive(2, &claim_answer(&c, 3, 5, 5, false, 6), &mut out), None);
        assert_eq!(claims(&out), vec![(NodeId(1), Epoch(7)), (NodeId(3), Epoch(7))]);
        // A grant of the superseded claim counts for nothing.
        assert_eq!(q.receive(3, &claim_answer(&c, 1, 5, 5, true, 5), &mut out), None);
        assert_eq!(q.receive(3, &claim_answer(&c, 1, 5, 7, true, 7), &mut out), Some(Epoch(7)));
    }

    #[test]
    fn a_restored_backup_never_goes_below_its_own_disk() {
        let c = cfg(3);
        let mut q = EpochInquiry::new(c.clone(), NodeId(2), Durable::fresh(Epoch(9)), 5, 0);
        let mut out = Vec::new();
        q.tick(0, &mut out);
        assert_eq!(q.receive(1, &answer(&c, 1, 5, 3), &mut out), None);
        assert_eq!(q.receive(1, &claim_answer(&c, 1, 5, 10, true, 10), &mut out), Some(Epoch(10)));
    }

    #[test]
    fn a_node_that_ran_before_waits_for_a_majority_past_the_deadline() {
        let c = cfg(3);
        let mut q = EpochInquiry::new(c.clone(), NodeId(1), Durable::fresh(Epoch(2)), 5, 0);
        let mut out = Vec::new();
        let late = c.discovery_interval_ms.max(c.failure_timeout_ms) * 20;
        assert_eq!(q.tick(late, &mut out), None);
        assert!(!sends(&out).is_empty(), "it keeps asking");
        assert_eq!(q.receive(late + 1, &answer(&c, 3, 5, 2), &mut out), None);
        out.clear();
        // The claim waits past any deadline too, and is sent again to the nodes that did not grant it.
        assert_eq!(q.tick(late * 2, &mut out), None);
        assert_eq!(claims(&out), vec![(NodeId(2), Epoch(3)), (NodeId(3), Epoch(3))]);
        assert_eq!(q.receive(late * 2, &claim_answer(&c, 2, 5, 3, true, 3), &mut out), Some(Epoch(3)));
    }

    #[test]
    fn a_directory_the_operator_restored_does_not_speak_for_itself() {
        // Restored from a backup of epoch 2; epoch 3 ran since, granted by node 3 only, which is slow to
        // answer. Node 2 knows epoch 2: counting itself, the directory would claim epoch 3 again.
        let c = cfg(3);
        let mut q = EpochInquiry::new(c.clone(), NodeId(1), Durable::fresh(Epoch(2)), 5, 0).after_restore();
        let mut out = Vec::new();
        q.tick(0, &mut out);
        out.clear();
        assert_eq!(q.receive(1, &answer(&c, 2, 5, 2), &mut out), None);
        assert!(claims(&out).is_empty(), "one answer is no majority of the others");
        assert_eq!(q.receive(2, &answer(&c, 3, 5, 3), &mut out), None);
        assert_eq!(claims(&out), vec![(NodeId(2), Epoch(4)), (NodeId(3), Epoch(4))]);
    }

    #[test]
    fn an_epoch_claimed_but_never_run_above_the_disk_is_no_sign_of_a_lost_directory() {
        // Node 1 restarted under epoch 3 (granted by node 2) but crashed before running it: node 2 knows
        // the claim, nobody saw epoch 3 in use. The directory (epoch 2) is intact: it is not catching up.
        let c = cfg(3);
        let mut q = EpochInquiry::new(c.clone(), NodeId(1), Durable::fresh(Epoch(2)), 5, 0);
        let mut out = Vec::new();
        q.tick(0, &mut out);
        let body = answer_body(5, 3, 2, Vec::new());
        q.receive(1, &dgram(&c, Member(NodeId(2), Epoch(4)), body), &mut out);
        q.receive(2, &answer(&c, 3, 5, 2), &mut out);
        assert_eq!(claims(&out).iter().map(|(_, e)| *e).max(), Some(Epoch(4)));
        assert!(!q.forgot(), "only claimed above it: the directory remembers");
        // Seen in use above it, the directory did lose what that incarnation learned.
        let mut r = EpochInquiry::new(c.clone(), NodeId(1), Durable::fresh(Epoch(2)), 6, 0);
        r.tick(0, &mut out);
        r.receive(1, &answer(&c, 2, 6, 3), &mut out);
        r.receive(2, &answer(&c, 3, 6, 3), &mut out);
        assert!(r.forgot());
    }

    #[test]
    fn a_directory_shown_behind_does_not_speak_for_itself() {
        // Node 2's directory was restored from a backup of epoch 1; it ran epoch 3 since, claimed at
        // itself and node 3. Node 1 knows epoch 2 only: with node 2's own vote it would be a majority of
        // three, and epoch 3 would be claimed again (G12). Shown behind, node 2 waits for node 3.
        let c = cfg(3);
        let mut q = EpochInquiry::new(c.clone(), NodeId(2), Durable::fresh(Epoch(1)), 5, 0);
        let mut out = Vec::new();
        q.tick(0, &mut out);
        out.clear();
        assert_eq!(q.receive(1, &answer(&c, 1, 5, 2), &mut out), None);
        assert!(claims(&out).is_empty(), "no claim on one answer that shows the directory behind");
        assert_eq!(q.receive(2, &answer(&c, 3, 5, 3), &mut out), None);
        assert_eq!(claims(&out), vec![(NodeId(1), Epoch(4)), (NodeId(3), Epoch(4))]);
        assert!(q.behind());
    }

    #[test]
    fn an_empty_disk_alone_never_decides() {
        let c = cfg(3);
        let deadline = c.discovery_interval_ms.max(c.failure_timeout_ms) * 2;
        let mut q = EpochInquiry::new(c.clone(), NodeId(1), Durable::fresh(Epoch(0)), 5, 0);
        let mut out = Vec::new();
        assert_eq!(q.tick(0, &mut out), None);
        assert_eq!(sends(&out), vec![NodeId(2), NodeId(3)]);
        out.clear();
        assert_eq!(q.tick(deadline * 10, &mut out), None, "it may be a wiped node nobody can tell about");
        assert_eq!(sends(&out), vec![NodeId(2), NodeId(3)], "it asks again while it waits");
    }

    #[test]
    fn a_first_start_of_part_of_a_cluster_decides_at_the_deadline() {
        let c = cfg(3);
        let deadline = c.discovery_interval_ms.max(c.failure_timeout_ms) * 2;
        let mut q = EpochInquiry::new(c.clone(), NodeId(1), Durable::fresh(Epoch(0)), 5, 0);
        let mut out = Vec::new();
        q.tick(0, &mut out);
        // Node 2 never ran either: with node 1 a majority of three, but only at the deadline (a node
        // that knows better may still answer).
        assert_eq!(q.receive(1, &fresh_answer(&c, 2, 5), &mut out), None);
        out.clear();
        assert_eq!(q.tick(deadline - 1, &mut out), None);
        assert!(claims(&out).is_empty());
        assert_eq!(q.tick(deadline, &mut out), None);
        assert_eq!(claims(&out), vec![(NodeId(2), Epoch(1)), (NodeId(3), Epoch(1))]);
        assert_eq!(q.receive(deadline, &claim_answer(&c, 2, 5, 1, true, 1), &mut out), Some(Epoch(1)));
        assert!(!q.behind());
    }

    #[test]
    fn an_empty_disk_with_an_answer_from_a_node_that_ran_waits_for_the_others() {
        let c = cfg(3);
        let deadline = c.discovery_interval_ms.max(c.failure_timeout_ms) * 2;
        let mut q = EpochInquiry::new(c.clone(), NodeId(1), Durable::fresh(Epoch(0)), 5, 0);
        let mut out = Vec::new();
        q.tick(0, &mut out);
        // Node 2 ran and knows nothing of node 1; node 3, down, may have run with it.
        assert_eq!(q.receive(1, &answer(&c, 2, 5, 0), &mut out), None);
        assert_eq!(q.tick(deadline * 10, &mut out), None);
        assert_eq!(q.receive(deadline * 10, &answer(&c, 3, 5, 4), &mut out), None);
        assert_eq!(q.receive(deadline * 10, &claim_answer(&c, 3, 5, 5, true, 5), &mut out), Some(Epoch(5)));
    }

    #[test]
    fn a_single_node_cluster_decides_at_once() {
        let c = cfg(1);
        let mut q = EpochInquiry::new(c, NodeId(1), Durable::fresh(Epoch(4)), 5, 0);
        assert_eq!(q.tick(0, &mut Vec::new()), Some(Epoch(5)));
    }

    #[test]
    fn a_two_node_cluster_decides_alone_at_the_deadlines() {
        let mut c = Config::new("c", &[1, 2]);
        c.quorum.two_node = true;
        let c = Arc::new(c);
        let wait = c.discovery_interval_ms.max(c.failure_timeout_ms) * 2;
        let mut q = EpochInquiry::new(c, NodeId(1), Durable::fresh(Epoch(3)), 5, 0);
        let mut out = Vec::new();
        assert_eq!(q.tick(wait - 1, &mut out), None);
        assert_eq!(q.tick(wait, &mut out), None, "the query ended; the claim waits its own deadline");
        assert_eq!(q.tick(2 * wait, &mut out), Some(Epoch(4)));
    }

    #[test]
    fn a_running_core_claims_its_next_epoch_without_a_query() {
        let c = cfg(3);
        let mut q = EpochInquiry::claim_only(c.clone(), NodeId(3), Durable::fresh(Epoch(5)), Epoch(2), 9, 0);
        let mut out = Vec::new();
        assert_eq!(q.tick(0, &mut out), None);
        assert_eq!(claims(&out), vec![(NodeId(1), Epoch(6)), (NodeId(2), Epoch(6))]);
        assert_eq!(q.receive(1, &claim_answer(&c, 2, 9, 6, true, 6), &mut out), Some(Epoch(6)));
        assert!(!q.behind(), "a running core knows its view numbers");
    }

    #[test]
    fn it_answers_other_inquirers_from_its_disk_and_records_their_claims_before_granting() {
        let c = cfg(3);
        let mut disk = Durable::fresh(Epoch(2));
        disk.note_left(Member(NodeId(3), Epoch(8)));
        let mut q = EpochInquiry::new(c.clone(), NodeId(1), disk, 5, 0);
        let query = dgram(&c, Member(NodeId(3), INQUIRY_EPOCH), Body::EpochQuery { nonce: 42 });
        let mut out = Vec::new();
        q.receive(0, &query, &mut out);
        assert_eq!(
            bodies(&out),
            vec![(
                NodeId(3),
                Body::EpochAnswer {
                    nonce: 42,
                    highest: Epoch(8),
                    max_view_seq: 0,
                    fresh: false,
                    left: vec![Epoch(8)],
                    ran: Epoch(8),
                }
            )]
        );
        out.clear();
        let claim = |e: u64, nonce: u64| {
            dgram(
                &c,
                Member(NodeId(3), INQUIRY_EPOCH),
                Body::EpochClaim { nonce, epoch: Epoch(e), view_seq_floor: 0 },
            )
        };
        // At or below what it knows: refused, nothing written.
        q.receive(0, &claim(8, 42), &mut out);
        assert!(!out.iter().any(|o| matches!(o, Output::Persist(_))));
        assert_eq!(
            bodies(&out),
            vec![(
                NodeId(3),
                Body::EpochClaimAnswer { nonce: 42, epoch: Epoch(8), granted: false, highest: Epoch(8) }
            )]
        );
        out.clear();
        // Above: on disk first, then granted; the same claim again is granted again without a write.
        q.receive(0, &claim(9, 42), &mut out);
        assert!(
            matches!(out.first(), Some(Output::Persist(d)) if known_epoch_on_disk(d, NodeId(3)) == Epoch(9))
        );
        assert_eq!(
            bodies(&out),
            vec![(
                NodeId(3),
                Body::EpochClaimAnswer { nonce: 42, epoch: Epoch(9), granted: true, highest: Epoch(9) }
            )]
        );
        out.clear();
        q.receive(1, &claim(9, 42), &mut out);
        assert_eq!(out.len(), 1, "no second write: {out:?}");
        // Another inquiry claiming the same epoch (a wiped node's) is refused: epoch 9 is taken.
        out.clear();
        q.receive(2, &claim(9, 43), &mut out);
        assert_eq!(
            bodies(&out),
            vec![(
                NodeId(3),
                Body::EpochClaimAnswer { nonce: 43, epoch: Epoch(9), granted: false, highest: Epoch(9) }
            )]
        );
        assert_eq!(q.disk().reserved.len(), 1);
    }
}
