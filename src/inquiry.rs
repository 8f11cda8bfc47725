//! The epoch inquiry: before a node picks the epoch of a new incarnation, it asks the cluster which
//! epochs it has seen for the node, so that a node whose data directory was wiped or restored from an
//! older backup never runs under an epoch that already appears in somebody's log (G12).
//!
//! [`EpochInquiry`] is a small sans-IO state machine the host runs before it persists the new epoch and
//! creates the [`crate::Node`]: it sends `EpochQuery` to every other configured node under epoch 0 (a
//! member that never exists), collects `EpochAnswer`s, and decides once a strict majority of the
//! configured nodes (itself included) answered, or every other node did, or — for a data directory that
//! never held an epoch, and in `two_node` mode — its deadline passed. The decision is the lowest epoch
//! above everything it learned and above its own disk. A majority of
//! answers always includes a member of the newest primary view, whose registry holds every epoch of the
//! node that ever was in a primary view; running agents also report the epoch they last heard. While it
//! waits it answers other inquirers from its own disk, so a whole cluster that starts at once decides
//! within one round trip. A node that ran before waits for a majority however long it takes (its data
//! directory may be an older backup; it could not join a primary view without a majority anyway). A
//! node whose data directory is empty decides at the deadline when nobody answers (the first start of a
//! cluster whose other nodes are not up yet): if that directory was wiped while the node is cut off from
//! every majority, it may start under an epoch it used before; the first member that hears it tells it
//! to move past (`MovePast`), and a removed member's epoch is refused as a stateful merge (G8).
//!
//! Running members answer queries in `Node::receive` (`Node::highest_known_epoch`).

use crate::config::Config;
use crate::msg::Body;
use crate::node::{Durable, Output};
use crate::types::{Epoch, Member, NodeId};
use crate::wire::{self, Envelope, Fragmenter, Reassembler};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The epoch every inquiry is sent under: no incarnation ever runs under it.
pub const INQUIRY_EPOCH: Epoch = Epoch(0);

/// One inquiry. See the module documentation.
pub struct EpochInquiry {
    cfg: Arc<Config>,
    node: NodeId,
    disk: Durable,
    nonce: u64,
    started_at: u64,
    deadline: u64,
    answers: BTreeMap<NodeId, Epoch>,
    max_view_seq: u64,
    next_tx: u64,
    frag: Fragmenter,
    reasm: Reassembler,
    decided: Option<Epoch>,
}

impl EpochInquiry {
    /// Starts an inquiry for `node`, whose data directory holds `disk`. `nonce` tells this inquiry's
    /// answers from a previous one's (the host draws it, e.g. from its clock).
    pub fn new(cfg: Arc<Config>, node: NodeId, disk: Durable, nonce: u64, now: u64) -> EpochInquiry {
        let wait = cfg.discovery_interval_ms.max(cfg.failure_timeout_ms) * 2;
        let max_packet = 64 * 1024;
        EpochInquiry {
            reasm: Reassembler::new(max_packet, 8, max_packet * 4, cfg.failure_timeout_ms * 4),
            frag: Fragmenter::new(nonce ^ (u64::from(node.0) << 40)),
            cfg,
            node,
            disk,
            nonce: nonce.max(1),
            started_at: now,
            deadline: now + wait,
            answers: BTreeMap::new(),
            max_view_seq: 0,
            next_tx: now,
            decided: None,
        }
    }

    /// The epoch the new incarnation must have at least, once decided.
    pub fn decided(&self) -> Option<Epoch> {
        self.decided
    }

    /// What was learned so far: per answering node, the highest epoch it knows for this node.
    pub fn answers(&self) -> &BTreeMap<NodeId, Epoch> {
        &self.answers
    }

    /// The highest view sequence number any answer reported: the new incarnation starts its own above
    /// it (`Durable::max_view_seq`), so a data directory that lost its own never reuses a view id (G1).
    pub fn max_view_seq(&self) -> u64 {
        self.max_view_seq
    }

    /// When the host must call [`EpochInquiry::tick`] next.
    pub fn next_wakeup_ms(&self) -> u64 {
        self.next_tx.min(self.deadline)
    }

    /// How long the inquiry has run.
    pub fn elapsed_ms(&self, now: u64) -> u64 {
        now.saturating_sub(self.started_at)
    }

    /// Timers: (re)sends the queries, decides at the deadline. Returns the decision once there is one.
    pub fn tick(&mut self, now: u64, out: &mut Vec<Output>) -> Option<Epoch> {
        if self.decided.is_none() {
            self.decide(now);
        }
        if self.decided.is_none() && now >= self.next_tx {
            self.next_tx = now + self.cfg.heartbeat_interval_ms.max(1);
            let body = Body::EpochQuery { nonce: self.nonce };
            let to: Vec<NodeId> = self
                .cfg
                .nodes
                .iter()
                .map(|n| n.id)
                .filter(|n| *n != self.node && !self.answers.contains_key(n))
                .collect();
            for n in to {
                self.send(n, body.clone(), out);
            }
        }
        self.decided
    }

    /// A datagram arrived for this node while it inquires: answers are collected, queries of other
    /// inquirers answered from the disk. Anything else is dropped. Returns the decision once there is one.
    pub fn receive(&mut self, now: u64, datagram: &[u8], out: &mut Vec<Output>) -> Option<Epoch> {
        let Ok(Some(packet)) = self.reasm.accept(now, NodeId(0), datagram) else { return self.decided };
        let Ok(env) = wire::decode::<Body>(&packet, 64 * 1024, &self.cfg.cluster) else { return self.decided };
        let from = env.from;
        if !self.cfg.is_configured(from.node()) || from.node() == self.node {
            return self.decided;
        }
        match env.body {
            Body::EpochAnswer { nonce, highest, max_view_seq } if nonce == self.nonce => {
                self.answers.insert(from.node(), highest);
                self.max_view_seq = self.max_view_seq.max(max_view_seq);
                if self.decided.is_none() {
                    self.decide(now);
                }
            }
            Body::EpochQuery { nonce } => {
                let highest = known_epoch_on_disk(&self.disk, from.node());
                let max_view_seq = self.disk.max_view_seq.max(self.disk.max_installed_seq);
                self.send(from.node(), Body::EpochAnswer { nonce, highest, max_view_seq }, out);
            }
            _ => {}
        }
        self.decided
    }

    /// True when the deadline may end the inquiry without a majority's answers: for a data directory
    /// that never held an epoch (a first start; nothing can be known before the others run) and in
    /// `two_node` mode (the other node may be the one that is gone). A node that ran before waits for a
    /// majority: its disk may be an older backup, a minority's answers may come from disks as old, and
    /// it could not join a primary view without a majority anyway.
    fn may_decide_alone(&self) -> bool {
        self.disk.epoch.0 == 0 || self.cfg.quorum.two_node
    }

    fn decide(&mut self, now: u64) {
        let others = self.cfg.nodes.iter().filter(|n| n.id != self.node).count();
        let majority = 2 * (self.answers.len() + 1) > self.cfg.nodes.len();
        if majority || self.answers.len() >= others || (now >= self.deadline && self.may_decide_alone()) {
            let learned = self.answers.values().copied().max().unwrap_or(Epoch(0));
            let floor = learned.max(self.disk.epoch).max(known_epoch_on_disk(&self.disk, self.node));
            self.decided = Some(Epoch(floor.0 + 1));
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

/// The highest epoch a data directory's durable state knows for `node`.
pub fn known_epoch_on_disk(disk: &Durable, node: NodeId) -> Epoch {
    let mut e = disk.registry.known_epoch(node);
    if disk.left.iter().any(|m| m.node() == node) {
        e = e.max(disk.left.iter().filter(|m| m.node() == node).map(|m| m.epoch()).max().unwrap_or(Epoch(0)));
    }
    if let Some(a) = &disk.accepted {
        e = e.max(a.members.iter().filter(|m| m.node() == node).map(|m| m.epoch()).max().unwrap_or(Epoch(0)));
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

    fn answer(cfg: &Config, from: u32, nonce: u64, highest: u64) -> Vec<u8> {
        let body = Body::EpochAnswer { nonce, highest: Epoch(highest), max_view_seq: highest * 10 };
        dgram(cfg, Member(NodeId(from), Epoch(3)), body)
    }

    fn sends(out: &[Output]) -> Vec<NodeId> {
        out.iter().filter_map(|o| if let Output::Send { to, .. } = o { Some(*to) } else { None }).collect()
    }

    #[test]
    fn a_wiped_node_moves_past_the_highest_epoch_a_majority_reports() {
        let c = cfg(5);
        let mut q = EpochInquiry::new(c.clone(), NodeId(4), Durable::fresh(Epoch(0)), 77, 0);
        let mut out = Vec::new();
        assert_eq!(q.tick(0, &mut out), None);
        assert_eq!(sends(&out), vec![NodeId(1), NodeId(2), NodeId(3), NodeId(5)]);
        assert_eq!(q.receive(1, &answer(&c, 1, 77, 6), &mut out), None);
        // An answer to another inquiry (another nonce) counts for nothing.
        assert_eq!(q.receive(1, &answer(&c, 2, 76, 9), &mut out), None);
        assert_eq!(q.receive(2, &answer(&c, 3, 77, 4), &mut out), Some(Epoch(7)));
        assert_eq!(q.max_view_seq(), 60, "the highest view sequence number any answer reported");
    }

    #[test]
    fn a_restored_backup_never_goes_below_its_own_disk() {
        let c = cfg(3);
        let mut q = EpochInquiry::new(c.clone(), NodeId(2), Durable::fresh(Epoch(9)), 5, 0);
        let mut out = Vec::new();
        q.tick(0, &mut out);
        assert_eq!(q.receive(1, &answer(&c, 1, 5, 3), &mut out), Some(Epoch(10)));
    }

    #[test]
    fn a_node_that_ran_before_waits_for_a_majority_past_the_deadline() {
        let c = cfg(3);
        let mut q = EpochInquiry::new(c.clone(), NodeId(1), Durable::fresh(Epoch(2)), 5, 0);
        let mut out = Vec::new();
        let late = c.discovery_interval_ms.max(c.failure_timeout_ms) * 20;
        assert_eq!(q.tick(late, &mut out), None);
        assert!(!sends(&out).is_empty(), "it keeps asking");
        assert_eq!(q.receive(late + 1, &answer(&c, 3, 5, 7), &mut out), Some(Epoch(8)));
    }

    #[test]
    fn a_first_start_alone_decides_at_the_deadline_and_queries_meanwhile() {
        let c = cfg(3);
        let deadline = c.discovery_interval_ms.max(c.failure_timeout_ms) * 2;
        let mut q = EpochInquiry::new(c.clone(), NodeId(1), Durable::fresh(Epoch(0)), 5, 0);
        let mut out = Vec::new();
        assert_eq!(q.tick(0, &mut out), None);
        assert_eq!(sends(&out), vec![NodeId(2), NodeId(3)]);
        out.clear();
        assert_eq!(q.tick(deadline - 1, &mut out), None);
        assert_eq!(sends(&out), vec![NodeId(2), NodeId(3)], "it asks again while it waits");
        assert_eq!(q.tick(deadline, &mut out), Some(Epoch(1)));
    }

    #[test]
    fn a_single_node_cluster_decides_at_once() {
        let c = cfg(1);
        let mut q = EpochInquiry::new(c, NodeId(1), Durable::fresh(Epoch(4)), 5, 0);
        assert_eq!(q.tick(0, &mut Vec::new()), Some(Epoch(5)));
    }

    #[test]
    fn it_answers_other_inquirers_from_its_disk() {
        let c = cfg(3);
        let mut disk = Durable::fresh(Epoch(2));
        disk.note_left(Member(NodeId(3), Epoch(8)));
        let mut q = EpochInquiry::new(c.clone(), NodeId(1), disk, 5, 0);
        let query = dgram(&c, Member(NodeId(3), INQUIRY_EPOCH), Body::EpochQuery { nonce: 42 });
        let mut out = Vec::new();
        q.receive(0, &query, &mut out);
        let Some(Output::Send { to, bytes }) = out.first() else { panic!("no answer: {out:?}") };
        assert_eq!(*to, NodeId(3));
        let p = Reassembler::new(65536, 4, 1 << 20, 1000).accept(0, NodeId(0), bytes).expect("frame").expect("whole");
        let env: Envelope<Body> = wire::decode(&p, 65536, "c").expect("decode");
        assert_eq!(env.body, Body::EpochAnswer { nonce: 42, highest: Epoch(8), max_view_seq: 0 });
    }
}
