//! The epoch registry: the replicated record of each node's highest epoch and of every removed member.
//!
//! Every member of a primary view holds the same registry: the coordinator of a view change merges the
//! registries of all participants, applies the transition from the previous primary view to the new one,
//! and ships the result inside the install message. Fence results are applied at the same point of the
//! total order everywhere. Members persist it (the host writes it with the epoch), so a node that restarts
//! still remembers who was removed: that is what keeps a zombie out even after every survivor restarted.
//!
//! [`Registry::classify`] is the admission decision: a fresh member is admitted, a removed member coming
//! back with its old epoch is a **stateful merge**, and an epoch below what the cluster has seen is told to
//! move past it.

use crate::record::FenceMethod;
use crate::types::{Epoch, Member, NodeId, View, ViewId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How many removal records are kept per node (older ones are summarized by `removed_up_to`).
pub const REMOVALS_KEPT: usize = 8;

/// Why a member was removed from the primary view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovalReason {
    /// It failed or was partitioned away.
    Failed,
    /// It left cleanly.
    Left,
}

/// Where fencing of a removed member stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FenceStatus {
    /// A clean leave needs no fencing.
    NotRequired,
    /// Recovery waits for fencing.
    Pending,
    /// Fenced, and how.
    Fenced(FenceMethod),
}

impl FenceStatus {
    /// True once recovery may proceed.
    pub fn is_done(self) -> bool {
        !matches!(self, FenceStatus::Pending)
    }
}

/// One removal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removal {
    /// The removed member.
    pub member: Member,
    /// The primary view that no longer contained it.
    pub view: ViewId,
    /// Why.
    pub reason: RemovalReason,
    /// The coordinator's clock when the removal was decided (informational).
    pub at_ms: u64,
    /// Fencing status.
    pub fence: FenceStatus,
    /// True once a `recovered` was announced for it.
    pub recovered: bool,
}

/// What the registry knows about one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NodeRecord {
    /// The highest epoch of this node seen in a primary view.
    pub highest_epoch: Epoch,
    /// Every epoch up to and including this one was removed (or superseded) and may never come back.
    pub removed_up_to: Epoch,
    /// The most recent removals, oldest first (at most [`REMOVALS_KEPT`]).
    pub removals: Vec<Removal>,
}

/// The outcome of [`Registry::classify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Never removed, epoch current: may join.
    Fresh,
    /// A removed member with its old epoch: a stateful merge.
    StatefulMerge(Option<Removal>),
    /// An epoch below what the cluster has seen for the node: restart with at least `min_epoch`.
    Stale {
        /// The lowest acceptable epoch.
        min_epoch: Epoch,
    },
}

/// The replicated registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Registry {
    /// Per node.
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    /// The newest primary view this registry reflects.
    pub last_primary: Option<ViewId>,
    /// That view itself, with its members: persisted, so that a primary view formed only of restarted
    /// members still knows whom it removes.
    #[serde(default)]
    pub last_primary_view: Option<View>,
    /// `last_primary` is only assumed: an install some earlier incarnation accepted, which a coordinator
    /// that could not tell whether it was committed took as made (for its removals, G8). No member is
    /// known to have installed it, so it is no proof that the install was committed (G3).
    #[serde(default)]
    pub last_primary_assumed: bool,
}

impl Registry {
    /// Classifies a member that wants to be in a view.
    pub fn classify(&self, m: Member) -> Admission {
        let Some(rec) = self.nodes.get(&m.node()) else { return Admission::Fresh };
        if m.epoch() <= rec.removed_up_to {
            let removal = rec.removals.iter().rev().find(|r| r.member == m).cloned();
            if removal.is_some() {
                return Admission::StatefulMerge(removal);
            }
            return Admission::Stale { min_epoch: Epoch(rec.removed_up_to.0.max(rec.highest_epoch.0) + 1) };
        }
        if m.epoch() < rec.highest_epoch {
            return Admission::Stale { min_epoch: Epoch(rec.highest_epoch.0 + 1) };
        }
        Admission::Fresh
    }

    /// Forgets whatever would keep `m` out of a view: its removal and anything newer about its node.
    /// Only for a registry that is an assumption (an install that may not have been committed, see
    /// `AcceptedInstall::assumed_removals`) contradicted by a primary view containing `m`; the registry
    /// of installed views is never wound back.
    pub fn readmit(&mut self, m: Member) {
        let Some(rec) = self.nodes.get_mut(&m.node()) else { return };
        if rec.removed_up_to >= m.epoch() {
            rec.removed_up_to = Epoch(m.epoch().0.saturating_sub(1));
        }
        rec.highest_epoch = rec.highest_epoch.min(m.epoch());
        rec.removals.retain(|r| r.member.epoch() < m.epoch());
    }

    /// True when `m` may be in a primary view.
    pub fn admissible(&self, m: Member) -> bool {
        matches!(self.classify(m), Admission::Fresh)
    }

    /// Merges another registry into this one (union; the more advanced fence status wins).
    pub fn merge(&mut self, other: &Registry) {
        for (node, orec) in &other.nodes {
            let rec = self.nodes.entry(*node).or_default();
            rec.highest_epoch = rec.highest_epoch.max(orec.highest_epoch);
            rec.removed_up_to = rec.removed_up_to.max(orec.removed_up_to);
            for r in &orec.removals {
                match rec.removals.iter_mut().find(|x| x.member == r.member) {
                    Some(x) => {
                        if !x.fence.is_done() && r.fence.is_done() {
                            x.fence = r.fence;
                        }
                        x.recovered |= r.recovered;
                        // A removal learned to be a clean leave (`left_after_all`) stays one unless its
                        // recovery was announced somewhere first: then it stays a failure.
                        if x.recovered {
                            x.reason = RemovalReason::Failed;
                        } else if r.reason == RemovalReason::Left {
                            x.reason = RemovalReason::Left;
                        }
                    }
                    None => rec.removals.push(r.clone()),
                }
            }
            rec.removals.sort_by_key(|r| r.member.epoch());
            trim(rec);
        }
        if other.last_primary > self.last_primary {
            self.last_primary = other.last_primary;
            self.last_primary_assumed = other.last_primary_assumed;
        } else if other.last_primary == self.last_primary {
            // Installed according to either: installed.
            self.last_primary_assumed &= other.last_primary_assumed;
        }
        if other.last_primary_view.as_ref().map(|v| v.id) > self.last_primary_view.as_ref().map(|v| v.id) {
            self.last_primary_view = other.last_primary_view.clone();
        }
    }

    /// Records the passage from primary view `prev` to primary view `next`: every member of `prev` that is
    /// not in `next` is removed (`left` ones cleanly), and the epochs of `next` are noted.
    pub fn record_transition(
        &mut self,
        prev: Option<&View>,
        next: &View,
        left: &[Member],
        fencing_required: bool,
        now_ms: u64,
    ) -> Vec<Member> {
        let mut removed = Vec::new();
        if let Some(prev) = prev {
            for &m in &prev.members {
                if next.contains(m) {
                    continue;
                }
                let reason = if left.contains(&m) { RemovalReason::Left } else { RemovalReason::Failed };
                let fence = if reason == RemovalReason::Failed && fencing_required {
                    FenceStatus::Pending
                } else {
                    FenceStatus::NotRequired
                };
                self.note_removed(Removal {
                    member: m,
                    view: next.id,
                    reason,
                    at_ms: now_ms,
                    fence,
                    recovered: false,
                });
                removed.push(m);
            }
        }
        for &m in &next.members {
            let rec = self.nodes.entry(m.node()).or_default();
            rec.highest_epoch = rec.highest_epoch.max(m.epoch());
            // A new epoch of a node supersedes every older one: those can never be admitted again.
            if m.epoch().0 > 0 {
                rec.removed_up_to = rec.removed_up_to.max(Epoch(m.epoch().0 - 1));
            }
        }
        self.last_primary = Some(next.id);
        self.last_primary_view = Some(next.clone());
        self.last_primary_assumed = false;
        removed
    }

    fn note_removed(&mut self, r: Removal) {
        let rec = self.nodes.entry(r.member.node()).or_default();
        rec.removed_up_to = rec.removed_up_to.max(r.member.epoch());
        if !rec.removals.iter().any(|x| x.member == r.member) {
            rec.removals.push(r);
        }
        trim(rec);
    }

    /// The removal record of `m`, if any.
    pub fn removal(&self, m: Member) -> Option<&Removal> {
        self.nodes.get(&m.node())?.removals.iter().find(|r| r.member == m)
    }

    /// Marks `m` fenced. Returns true if that changed anything.
    pub fn mark_fenced(&mut self, m: Member, method: FenceMethod) -> bool {
        let Some(rec) = self.nodes.get_mut(&m.node()) else { return false };
        match rec.removals.iter_mut().find(|r| r.member == m) {
            Some(r) if r.fence == FenceStatus::Pending => {
                r.fence = FenceStatus::Fenced(method);
                true
            }
            _ => false,
        }
    }

    /// Members removed as failed whose recovery was not announced yet.
    pub fn unrecovered_failures(&self) -> impl Iterator<Item = Member> + '_ {
        self.nodes
            .values()
            .flat_map(|rec| rec.removals.iter())
            .filter(|r| r.reason == RemovalReason::Failed && !r.recovered)
            .map(|r| r.member)
    }

    /// A member removed as failed is learned to have left cleanly after all (its own `Leave`, or its
    /// next incarnation's report of it): unless its recovery was already announced, the removal becomes
    /// a clean leave, which needs no fence and no `recovered` (L6). Returns true if that changed anything.
    pub fn left_after_all(&mut self, m: Member) -> bool {
        let Some(rec) = self.nodes.get_mut(&m.node()) else { return false };
        match rec.removals.iter_mut().find(|r| r.member == m) {
            Some(r) if r.reason == RemovalReason::Failed && !r.recovered => {
                r.reason = RemovalReason::Left;
                if r.fence == FenceStatus::Pending {
                    r.fence = FenceStatus::NotRequired;
                }
                true
            }
            _ => false,
        }
    }

    /// Marks `m` recovered. Returns true if that changed anything.
    pub fn mark_recovered(&mut self, m: Member) -> bool {
        let Some(rec) = self.nodes.get_mut(&m.node()) else { return false };
        match rec.removals.iter_mut().find(|r| r.member == m) {
            Some(r) if !r.recovered => {
                r.recovered = true;
                true
            }
            _ => false,
        }
    }

    /// Removed members still waiting for fencing, sorted.
    pub fn pending_fences(&self) -> Vec<Member> {
        let mut v: Vec<Member> = self
            .nodes
            .values()
            .flat_map(|rec| rec.removals.iter())
            .filter(|r| r.fence == FenceStatus::Pending)
            .map(|r| r.member)
            .collect();
        v.sort();
        v
    }

    /// Removed members that are fenced (or needed no fencing because they failed) but whose recovery
    /// has not been announced yet, sorted.
    pub fn recoverable(&self) -> Vec<Member> {
        let mut v: Vec<Member> = self
            .nodes
            .values()
            .flat_map(|rec| rec.removals.iter())
            .filter(|r| r.reason == RemovalReason::Failed && r.fence.is_done() && !r.recovered)
            .map(|r| r.member)
            .collect();
        v.sort();
        v
    }

    /// The highest epoch the registry knows for `node` (removed or current).
    pub fn known_epoch(&self, node: NodeId) -> Epoch {
        self.nodes.get(&node).map_or(Epoch(0), |r| r.highest_epoch.max(r.removed_up_to))
    }
}

fn trim(rec: &mut NodeRecord) {
    // Keep pending ones (recovery still depends on them) and the newest others.
    while rec.removals.len() > REMOVALS_KEPT {
        match rec
            .removals
            .iter()
            .position(|r| r.fence.is_done() && r.recovered || r.reason == RemovalReason::Left)
        {
            Some(i) => {
                rec.removals.remove(i);
            }
            None => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(n: u32, e: u64) -> Member {
        Member(NodeId(n), Epoch(e))
    }
    fn view(seq: u64, members: &[Member]) -> View {
        let mut members = members.to_vec();
        members.sort();
        View { id: ViewId { seq, coord: members[0].node() }, members, primary: true }
    }

    #[test]
    fn removed_member_with_old_epoch_is_a_stateful_merge() {
        let mut r = Registry::default();
        let p1 = view(1, &[m(1, 1), m(2, 1), m(3, 1)]);
        let p2 = view(2, &[m(2, 1), m(3, 1)]);
        r.record_transition(None, &p1, &[], true, 0);
        let removed = r.record_transition(Some(&p1), &p2, &[], true, 10);
        assert_eq!(removed, vec![m(1, 1)]);
        assert!(matches!(r.classify(m(1, 1)), Admission::StatefulMerge(Some(_))));
        assert_eq!(r.classify(m(1, 2)), Admission::Fresh);
        assert_eq!(r.pending_fences(), vec![m(1, 1)]);
    }

    #[test]
    fn epoch_below_the_highest_seen_must_move_past() {
        let mut r = Registry::default();
        r.record_transition(None, &view(1, &[m(1, 5), m(2, 1)]), &[], true, 0);
        assert_eq!(r.classify(m(1, 3)), Admission::Stale { min_epoch: Epoch(6) });
        assert_eq!(r.classify(m(1, 5)), Admission::Fresh);
    }

    #[test]
    fn a_clean_leave_needs_no_fencing() {
        let mut r = Registry::default();
        let p1 = view(1, &[m(1, 1), m(2, 1), m(3, 1)]);
        r.record_transition(None, &p1, &[], true, 0);
        r.record_transition(Some(&p1), &view(2, &[m(1, 1), m(2, 1)]), &[m(3, 1)], true, 0);
        assert!(r.pending_fences().is_empty());
        assert!(r.recoverable().is_empty());
    }

    #[test]
    fn merge_takes_the_more_advanced_fence_status() {
        let mut a = Registry::default();
        let p1 = view(1, &[m(1, 1), m(2, 1), m(3, 1)]);
        a.record_transition(None, &p1, &[], true, 0);
        a.record_transition(Some(&p1), &view(2, &[m(2, 1), m(3, 1)]), &[], true, 0);
        let mut b = a.clone();
        assert!(b.mark_fenced(m(1, 1), FenceMethod::Agent));
        a.merge(&b);
        assert!(a.pending_fences().is_empty());
        assert_eq!(a.recoverable(), vec![m(1, 1)]);
    }
}
