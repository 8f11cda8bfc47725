//! The safety guarantees of `guarantees.md` (G1–G13), checked over event-log records.
//!
//! The same code serves two callers. The deterministic simulator feeds every record to [`Checker::observe`]
//! as it is produced and fails the run on the first violation, so every check is incremental: a record
//! costs work proportional to the record (times the number of members involved), never a re-scan of the
//! history. `cohort verify LOG...` feeds whole event logs of several nodes, whose records arrive in each
//! member's own order but interleaved arbitrarily across members, and then calls [`Checker::finish`] for
//! the checks that need the whole history. [`check_all`] does both for a slice of records and
//! [`parse_log`] reads a JSON-lines log. Everything here is pure and deterministic: no IO, no clock, and
//! only ordered collections, so one input always gives the same violations in the same order.
//!
//! Entry points: [`Checker`] ([`Checker::observe`], [`Checker::member_stopped`], [`Checker::finish`],
//! [`Checker::stats`], [`Checker::history_begins_midway`], [`Checker::undecided`] and the liveness helpers [`Checker::last_view_of`], [`Checker::delivered_count`],
//! [`Checker::removed_members`], [`Checker::with_independent_clocks`]), [`check_all`], [`check_all_with`],
//! [`check_all_keeping`],
//! [`parse_log`].
//!
//! # What each guarantee is checked as
//! Every violation found by `observe` is final: no record arriving later can make it go away, whatever the
//! interleaving of members. The checks marked *finish* are the ones where a missing record may still arrive
//! (another node's log), so they are decided only by [`Checker::finish`].
//!
//! - **G1 View agreement.** Any two `view` records with the same view id carry the same `members` and
//!   `primary`; each record is compared with the first one seen for that id.
//! - **G2 Monotonic views.** Per member, the ids of its `view` records strictly increase, every view
//!   contains the member itself, `members` is sorted with each node at most once, and when a record
//!   carries `prev` it names the member's previous logged view.
//! - **G3 One primary history** (*finish*). Order the primary view ids; for each consecutive pair (Q, P)
//!   some member of P must have logged `view` Q. The one exception is a restarted node: it is allowed when
//!   nodes(P) ∩ nodes(Q) is not empty and, for every node in it, the member Q lists for that node had
//!   stopped (a `stop` record, [`Checker::member_stopped`], or a `start` of the same node with a higher
//!   epoch) at a `ts_ms` no later than the first install of P. Uniqueness of primary ids is G1.
//! - **G4 Virtual synchrony.** When a member's next `view` after V is W, the ids of the messages it
//!   delivered while V was its current view are compared with those of the first member seen to go from V
//!   to W: they must be the same sequence.
//! - **G5 Total order.** Per member each msg id is delivered at most once; every delivery of a msg id names
//!   the same `view`; for any two members the messages both delivered appear in the same relative order
//!   (checked per view, since all deliveries of a message are in one view, by keeping for each pair of
//!   members the latest common message in each one's sequence). When `seq` is logged it is cross-checked:
//!   a message has one `seq`, two messages never share a `seq` in one view, and a member's `seq`s increase
//!   within a view.
//! - **G6 Integrity** (*finish* for the missing `send`). A delivered msg id has the form
//!   `"<node>.<epoch>.<n>"` naming the deliver's `sender`; a `send` record for it exists, written by that
//!   sender, with the same `group` and `digest` as every deliver; a msg id is sent only once.
//! - **G7 Primary-only delivery.** A `deliver` happens while the member's current view is primary and its
//!   `view` is that current view.
//! - **G8 No stateful merge.** For every member, the primary views that contain it must be consecutive in
//!   the id order of all primary views: a member in primary view Q, absent from a later primary view P (so
//!   removed somewhere between Q and P) and present again in a primary view after P is a stateful merge.
//!   This is final as soon as the three views are known, in any arrival order. Chain breaks are G3's.
//! - **G9 Fencing before recovery** (*finish*). Every member listed by a `recovered` record has a
//!   `fence_result` with `ok: true` for it (any method, in any node's log) with `ts_ms` no later than the
//!   `recovered` record's.
//! - **G10 Safe delivery.** A message is safe when its deliver or its send says `delivery: safe`. If it is
//!   delivered in view V by a member that then went to view W, every member that went from V to the same
//!   W delivered it in V too (*finish*). The stronger property, that every member of V *received* it
//!   before anyone delivered it, is not visible in logs; the simulator checks it on the nodes' state.
//! - **G11 State transfer.** Per member and group: when a `group_view` first includes the member (a join)
//!   and the group already had other members (members of the last `group_view` it logged from outside,
//!   or else any other member of the joining view), the member must log `state_transfer` with
//!   `role: receiver, ok: true` for the group before it hands any message of the group to its application:
//!   deliveries logged before the transfer must carry `held: true` (delivered in the total order, held
//!   back from the application until the state is applied). A later leave
//!   resets this. *Finish*: when the provider also logged the transfer to that receiver, the sizes agree.
//! - **G12 Durable epochs.** A member's first record is `start`; per node, no epoch is started twice and
//!   the `start` records of higher epochs never have an earlier `ts_ms` than those of lower ones.
//!
//! - **G13 No zombie acts** (one clock only). Per member M, the earliest `ts_ms` of a `recovered` record
//!   listing M (written by anyone) is kept, and so is the latest `ts_ms` of a `deliver` written by M. A
//!   `deliver` by M with a `ts_ms` strictly later than that `recovered` is a violation, found by whichever
//!   of the two records arrives second, so in any interleaving of the logs. No later view can excuse it:
//!   `recovered` for M is logged only in a primary view without M, and M (that node *and* that epoch) is
//!   never in a primary view again (G8), so anything M delivers afterwards it delivers in an earlier view,
//!   after the others were told its state is gone. "Later" is strict because `ts_ms` has millisecond
//!   resolution: a delivery in the same millisecond as the `recovered` may have come first, and equal
//!   stamps prove no order. Reported once per member. The rule compares timestamps written by different
//!   nodes, so it holds only against one clock: the simulator's, or the host's when every agent runs on one
//!   machine. For logs gathered from several machines, [`Checker::with_independent_clocks`] skips it.
//!
//! # Histories that begin mid-way
//! An agent rotates its event log and deletes the oldest files, so `cohort verify` may read a node's
//! history from some record on. [`Checker::history_begins_midway`] says so before that node's records
//! are observed. The rule is: **what is absent from a lost stretch proves nothing**. Records that are
//! present are checked as always (every check that compares records it sees stays on), and every
//! check that concludes from an *absence* or from a state set up before the first record left is not
//! decided where the lost stretch could hold what is missing:
//! - for the node's first member left, when its `start` was lost: G12's "first record is `start`"; G7
//!   for deliveries before its first `view` left (its current view is unknown); G11's joins, since the
//!   first `group_view` of each group left may continue a membership that began earlier;
//! - for members that may have lost records (the node's earlier epochs, and its first member left
//!   without its `start`): G6's missing `send` of their messages, and G3 for a pair of primary views
//!   with such a member (it may have installed the previous view, or stopped, in the lost stretch);
//! - G9 for a `recovered` of M when some node's log begins after M's `start` (or M's `start` is
//!   unknown): the lost stretch may hold the `fence_result`, which anyone may write after M started.
//!
//! [`Checker::undecided`] lists what was not decided, so a report can say it.
//!
//! # What logs cannot show
//! Receipt is not logged, so G10 is checked through the deliveries of members that left V for the same
//! next view, not through "every member received it" (a member cut off before it learned that a safe
//! message became stable cannot deliver it, and that is correct). G6 compares digests, not bytes. G11 cannot see the
//! applied state, only the order of transfer and delivery and the transfer's size. G12 cannot see the
//! fsync, only that nothing precedes the `start`. G9 trusts `fence_result` records, and like the
//! G3 exception it compares `ts_ms` of different nodes, so it needs their clocks to agree roughly (the
//! simulator's clock is exact); G13 needs them to be one clock. G13 sees only deliveries, not the
//! ordering a zombie sequencer does for itself: that shows up as its own `deliver` records. Liveness (L1–L4) is not checked here; the simulator uses the helpers.

use crate::record::{Event, Record, TransferRole};
use crate::types::{Delivery, Epoch, Member, NodeId, ViewId};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One broken guarantee.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The guarantee of `guarantees.md`: `"G1"` to `"G13"`.
    pub guarantee: &'static str,
    /// One line naming the members, view ids and message ids involved.
    pub detail: String,
}

impl Violation {
    fn new(guarantee: &'static str, detail: String) -> Violation {
        Violation { guarantee, detail }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.guarantee, self.detail)
    }
}

/// Counts of what the checker has seen, for reports and for tests that want to know a run did something.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckStats {
    /// Distinct members that wrote at least one record.
    pub members: usize,
    /// Distinct view ids installed.
    pub views: usize,
    /// Distinct primary view ids installed.
    pub primary_views: usize,
    /// `deliver` records.
    pub deliveries: usize,
    /// `send` records.
    pub sends: usize,
    /// `stateful_merge` records.
    pub stateful_merges: usize,
    /// `fence_result` records with `ok: true`.
    pub fences: usize,
    /// `recovered` records.
    pub recovered: usize,
}

/// A member's current view, as far as its own log says.
#[derive(Clone, Debug)]
struct CurrentView {
    id: ViewId,
    primary: bool,
    members: Vec<Member>,
}

/// G11 bookkeeping for one member and one group.
#[derive(Clone, Debug, Default)]
struct GroupState {
    in_group: bool,
    needs_transfer: bool,
    transferred: bool,
    reported: bool,
    /// Members of the last `group_view` of this group the member logged (from inside or outside).
    last_members: Option<Vec<Member>>,
}

/// What the checker keeps per member.
#[derive(Clone, Debug, Default)]
struct MemberState {
    view: Option<CurrentView>,
    /// G4: messages (interned) delivered while `view` was current.
    in_view: Vec<usize>,
    delivered: usize,
    groups: BTreeMap<String, GroupState>,
    /// The member's history begins mid-way, after its `start`: its state before is unknown.
    midway: bool,
}

/// The first record seen of a view id, and who installed it.
#[derive(Clone, Debug)]
struct ViewInfo {
    members: Vec<Member>,
    primary: bool,
    first_member: Member,
    first_ts_ms: u64,
    installers: BTreeSet<Member>,
}

/// Deliveries and departures per view (the view a `deliver` names, or the view a member leaves).
#[derive(Clone, Debug, Default)]
struct ViewDeliveries {
    /// Next position in each member's delivery sequence of this view.
    next_pos: BTreeMap<Member, usize>,
    /// `(of, wrt)` → the greatest position in `of`'s sequence among messages delivered by both, and that message.
    pair_max: BTreeMap<(Member, Member), (usize, usize)>,
    /// `seq` → the message logged with it.
    by_seq: BTreeMap<u64, usize>,
    /// Each member's last `seq` in this view.
    last_seq: BTreeMap<Member, u64>,
    /// G10: safe messages delivered in this view.
    safe: BTreeSet<usize>,
    /// G10: members that logged this view and then a next one, with that next view.
    leavers: Vec<(Member, ViewId)>,
}

#[derive(Clone, Debug)]
struct SendInfo {
    writer: Member,
    group: String,
    digest: String,
}

#[derive(Clone, Copy, Debug)]
struct Deliverer {
    member: Member,
    view: ViewId,
    pos: usize,
}

/// A deliver whose digest waits for the send record.
#[derive(Clone, Debug)]
struct UncheckedDelivery {
    member: Member,
    group: String,
    digest: String,
}

#[derive(Clone, Debug)]
struct MsgInfo {
    id: String,
    send: Option<SendInfo>,
    view: Option<ViewId>,
    seq: Option<u64>,
    safe: bool,
    deliverers: Vec<Deliverer>,
    unchecked: Vec<UncheckedDelivery>,
}

#[derive(Clone, Debug)]
struct PendingRecovery {
    target: Member,
    ts_ms: u64,
    writer: Member,
    view: ViewId,
}

#[derive(Clone, Debug)]
struct ReceivedTransfer {
    receiver: Member,
    group: String,
    provider: Member,
    bytes: u64,
    point: Option<String>,
}

/// G13 bookkeeping: a record of one member at one time, with what names it in a report.
#[derive(Clone, Debug)]
struct Stamped {
    ts_ms: u64,
    /// The writer of the `recovered`, or the message delivered.
    what: String,
    view: ViewId,
}

/// The incremental checker of G1–G13. See the module documentation for each rule.
#[derive(Clone, Debug, Default)]
pub struct Checker {
    members: BTreeMap<Member, MemberState>,
    views: BTreeMap<ViewId, ViewInfo>,
    primary_ids: BTreeSet<ViewId>,
    /// G8: per member, the lowest and highest primary view id containing it.
    primary_range: BTreeMap<Member, (ViewId, ViewId)>,
    /// G8: (member, primary view missing it) already reported.
    g8_reported: BTreeSet<(Member, ViewId)>,
    /// G4: (V, W) → the first member seen going from V to W and what it delivered in V.
    transitions: BTreeMap<(ViewId, ViewId), (Member, Vec<usize>)>,
    per_view: BTreeMap<ViewId, ViewDeliveries>,
    msg_index: BTreeMap<String, usize>,
    msgs: Vec<MsgInfo>,
    starts: BTreeMap<NodeId, BTreeMap<Epoch, u64>>,
    stops: BTreeMap<Member, u64>,
    fenced: BTreeMap<Member, u64>,
    recoveries: Vec<PendingRecovery>,
    received_transfers: Vec<ReceivedTransfer>,
    /// Sizes the providers logged, per (provider, receiver, group, point).
    provided_transfers: BTreeMap<(Member, Member, String, Option<String>), BTreeSet<u64>>,
    /// G13 is skipped: the logs come from machines with independent clocks.
    independent_clocks: bool,
    /// G13: per member, the earliest `recovered` listing it (writer in `what`).
    first_recovered: BTreeMap<Member, Stamped>,
    /// G13: per member, its latest `deliver` (msg id in `what`).
    last_deliver: BTreeMap<Member, Stamped>,
    /// G13: members already reported.
    g13_reported: BTreeSet<Member>,
    /// Nodes whose history begins mid-way, with their first record left.
    midway: BTreeMap<NodeId, Midway>,
    /// Checks not decided because a history begins mid-way: what, counted.
    undecided: BTreeMap<(&'static str, &'static str), usize>,
    stats: CheckStats,
}

/// The first record left of a node whose history begins mid-way.
#[derive(Clone, Copy, Debug)]
struct Midway {
    first: Member,
    ts_ms: u64,
    /// That record is the member's `start`, so the member's own history is whole.
    is_start: bool,
}

/// Parses a message id `"<node>.<epoch>.<n>"` into its sender.
fn msg_sender(id: &str) -> Option<Member> {
    let mut parts = id.split('.');
    let node = parts.next()?.parse::<u32>().ok()?;
    let epoch = parts.next()?.parse::<u64>().ok()?;
    parts.next()?.parse::<u64>().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some(Member(NodeId(node), Epoch(epoch)))
}

fn fmt_members(ms: &[Member]) -> String {
    let inner: Vec<String> = ms.iter().map(|m| m.to_string()).collect();
    format!("{{{}}}", inner.join(" "))
}

fn member_on(ms: &[Member], node: NodeId) -> Option<Member> {
    ms.iter().copied().find(|m| m.node() == node)
}

fn event_name(e: &Event) -> &'static str {
    match e {
        Event::Start { .. } => "start",
        Event::View { .. } => "view",
        Event::Blocked { .. } => "blocked",
        Event::Unblocked {} => "unblocked",
        Event::Send { .. } => "send",
        Event::Deliver { .. } => "deliver",
        Event::GroupView { .. } => "group_view",
        Event::StatefulMerge { .. } => "stateful_merge",
        Event::RemovedSelf { .. } => "removed_self",
        Event::FenceRequest { .. } => "fence_request",
        Event::FenceResult { .. } => "fence_result",
        Event::Recovered { .. } => "recovered",
        Event::StateTransfer { .. } => "state_transfer",
        Event::SelfFence { .. } => "self_fence",
        Event::Stop { .. } => "stop",
    }
}

impl Checker {
    /// An empty checker.
    pub fn new() -> Checker {
        Checker::default()
    }

    /// An empty checker for logs written on several machines whose clocks are independent: it skips G13,
    /// which compares `ts_ms` of different nodes as if they came from one clock.
    pub fn with_independent_clocks() -> Checker {
        Checker { independent_clocks: true, ..Checker::default() }
    }

    /// Feeds records of ONE member in that member's log order. Records of different members may be
    /// interleaved arbitrarily between calls, but each member's own records arrive in its order. Returns
    /// the violations found by this record (usually empty); each is final.
    pub fn observe(&mut self, rec: &Record) -> Vec<Violation> {
        let mut out = Vec::new();
        let me = rec.member();
        let begins_midway = self.midway.get(&me.node()).is_some_and(|w| w.first == me && !w.is_start);
        if let std::collections::btree_map::Entry::Vacant(slot) = self.members.entry(me) {
            slot.insert(MemberState { midway: begins_midway, ..MemberState::default() });
            self.stats.members += 1;
            if begins_midway {
                self.undecide("G12", "first record of a member is `start`");
            } else if !matches!(rec.event, Event::Start { .. }) {
                out.push(Violation::new(
                    "G12",
                    format!("the first record of member {me} is `{}`, not `start`", event_name(&rec.event)),
                ));
            }
        }
        match &rec.event {
            Event::Start { .. } => self.on_start(me, rec.ts_ms, &mut out),
            Event::View { view, members, primary, prev, .. } => {
                self.on_view(me, rec.ts_ms, *view, members, *primary, *prev, &mut out)
            }
            Event::Send { group, msg, delivery, digest, .. } => {
                self.on_send(me, group, msg, *delivery, digest, &mut out)
            }
            Event::Deliver { group, msg, sender, view, digest, seq, delivery, held } => {
                let d = DeliverRec {
                    group,
                    msg,
                    sender: *sender,
                    view: *view,
                    digest,
                    seq: *seq,
                    delivery: *delivery,
                    held: *held,
                };
                self.on_deliver(me, &d, &mut out);
                self.g13_deliver(me, rec.ts_ms, msg, *view, &mut out);
            }
            Event::GroupView { group, members, .. } => self.on_group_view(me, group, members),
            Event::StateTransfer { group, role, peer, bytes, ok, point } => {
                self.on_state_transfer(me, group, *role, *peer, *bytes, *ok, point.clone())
            }
            Event::StatefulMerge { .. } => self.stats.stateful_merges += 1,
            Event::FenceResult { target, ok, .. } => {
                if *ok {
                    self.stats.fences += 1;
                    let t = self.fenced.entry(*target).or_insert(rec.ts_ms);
                    *t = (*t).min(rec.ts_ms);
                }
            }
            Event::Recovered { view, failed } => {
                self.stats.recovered += 1;
                for &target in failed {
                    self.g13_recovered(target, me, rec.ts_ms, *view, &mut out);
                    let fenced_in_time = self.fenced.get(&target).is_some_and(|&t| t <= rec.ts_ms);
                    if !fenced_in_time {
                        self.recoveries.push(PendingRecovery {
                            target,
                            ts_ms: rec.ts_ms,
                            writer: me,
                            view: *view,
                        });
                    }
                }
            }
            Event::Stop { .. } => self.member_stopped(me, rec.ts_ms),
            Event::Blocked { .. }
            | Event::Unblocked {}
            | Event::RemovedSelf { .. }
            | Event::FenceRequest { .. }
            | Event::SelfFence { .. } => {}
        }
        out
    }

    /// Tells the checker that a member stopped for good (crashed, was killed, or restarted under a new
    /// epoch) at time `ts_ms`. Used by G3's restart exception. A `start` of the same node with a higher
    /// epoch and a `stop` record of the member imply this without a call; the earliest time counts.
    pub fn member_stopped(&mut self, member: Member, ts_ms: u64) {
        let t = self.stops.entry(member).or_insert(ts_ms);
        *t = (*t).min(ts_ms);
    }

    /// Says that the log of `first.node()` lost its beginning (its oldest files were deleted by
    /// rotation): `first` is its oldest record left. Call it before observing records of that node. See
    /// "Histories that begin mid-way" in the module documentation for what is then not decided.
    pub fn history_begins_midway(&mut self, first: &Record) {
        let is_start = matches!(first.event, Event::Start { .. });
        self.midway.insert(first.node, Midway { first: first.member(), ts_ms: first.ts_ms, is_start });
    }

    /// What was not decided because a history begins mid-way: one line per kind of check, with a count.
    pub fn undecided(&self) -> Vec<String> {
        self.undecided.iter().map(|((g, what), n)| format!("{g} ({what}): {n}")).collect()
    }

    fn undecide(&mut self, g: &'static str, what: &'static str) {
        *self.undecided.entry((g, what)).or_default() += 1;
    }

    /// `m` may have records in a stretch of its node's log that is lost: an epoch of a node whose
    /// history begins mid-way below the first member left, or that member itself without its `start`.
    fn may_have_lost_records(&self, m: Member) -> bool {
        self.midway
            .get(&m.node())
            .is_some_and(|w| m.epoch() < w.first.epoch() || (m == w.first && !w.is_start))
    }

    /// Checks that need the whole history (G3, the missing sends of G6, G9, the transfer sizes of G11),
    /// run at the end, e.g. by `cohort verify`. It does not change the checker: each call returns all such
    /// violations as of now. Together with everything `observe` returned, this is the full verdict.
    pub fn finish(&mut self) -> Vec<Violation> {
        let mut out = Vec::new();
        // Each call returns everything as of now, so the undecided counts are counted afresh.
        self.undecided.retain(|(g, _), _| !matches!(*g, "G3" | "G6" | "G9"));
        let mut undecided: Vec<(&'static str, &'static str)> = Vec::new();
        self.finish_g3(&mut out, &mut undecided);
        self.check_safe(&mut out);
        for info in &self.msgs {
            if info.send.is_none() {
                if msg_sender(&info.id).is_some_and(|s| self.may_have_lost_records(s)) {
                    if !info.deliverers.is_empty() {
                        undecided.push(("G6", "`send` of a message whose sender's log begins later"));
                    }
                    continue;
                }
                if let Some(d) = info.deliverers.first() {
                    out.push(Violation::new(
                        "G6",
                        format!(
                            "msg {} was delivered by {} in view {} ({} deliveries) but no member logged its `send`",
                            info.id,
                            d.member,
                            d.view,
                            info.deliverers.len()
                        ),
                    ));
                }
            }
        }
        for r in &self.recoveries {
            let ok = self.fenced.get(&r.target).is_some_and(|&t| t <= r.ts_ms);
            if !ok && !self.midway.is_empty() {
                // The fence may be logged by anyone after the target started: undecided when a log
                // begins after that (or the start is unknown).
                let started =
                    self.starts.get(&r.target.node()).and_then(|e| e.get(&r.target.epoch())).copied();
                if self.midway.values().any(|w| started.is_none_or(|t| w.ts_ms > t)) {
                    undecided.push(("G9", "`fence_result` before a `recovered`, in a log that begins later"));
                    continue;
                }
            }
            if !ok {
                let when = match self.fenced.get(&r.target) {
                    Some(t) => format!("the first successful fence_result for it is at {t}"),
                    None => "no successful fence_result for it exists".to_string(),
                };
                out.push(Violation::new(
                    "G9",
                    format!(
                        "{} logged `recovered` for {} in view {} at {}, but {when}",
                        r.writer, r.target, r.view, r.ts_ms
                    ),
                ));
            }
        }
        for u in undecided {
            self.undecide(u.0, u.1);
        }
        for t in &self.received_transfers {
            // The same transfer on both sides: same members, group and point of the order (a
            // provider that died before the outcome was known logs nothing, and is not checked).
            let key = (t.provider, t.receiver, t.group.clone(), t.point.clone());
            if let Some(sizes) = self.provided_transfers.get(&key) {
                if !sizes.contains(&t.bytes) {
                    let sizes: Vec<String> = sizes.iter().map(|b| b.to_string()).collect();
                    out.push(Violation::new(
                        "G11",
                        format!(
                            "{} received {} bytes of group {:?} state from {}, which logged sending {} bytes",
                            t.receiver,
                            t.bytes,
                            t.group,
                            t.provider,
                            sizes.join(" or ")
                        ),
                    ));
                }
            }
        }
        out
    }

    /// Counts of what has been observed.
    pub fn stats(&self) -> CheckStats {
        let mut s = self.stats;
        s.views = self.views.len();
        s.primary_views = self.primary_ids.len();
        s
    }

    /// The last view `m` installed, as its own log says: id, primary flag and members.
    pub fn last_view_of(&self, m: Member) -> Option<(ViewId, bool, Vec<Member>)> {
        let v = self.members.get(&m)?.view.as_ref()?;
        Some((v.id, v.primary, v.members.clone()))
    }

    /// How many `deliver` records `m` has logged.
    pub fn delivered_count(&self, m: Member) -> usize {
        self.members.get(&m).map_or(0, |s| s.delivered)
    }

    /// Members removed from the primary chain so far: each was in some primary view and is missing from a
    /// later one (in primary view id order).
    pub fn removed_members(&self) -> BTreeSet<Member> {
        let mut out = BTreeSet::new();
        if let Some(&last) = self.primary_ids.last() {
            for (&m, &(_, hi)) in &self.primary_range {
                if hi < last {
                    out.insert(m);
                }
            }
        }
        out.extend(self.g8_reported.iter().map(|&(m, _)| m));
        out
    }

    /// The time `m` stopped for good, if known: an explicit stop or the start of a higher epoch of its node.
    fn stopped_at(&self, m: Member) -> Option<u64> {
        let explicit = self.stops.get(&m).copied();
        let restarted = self.starts.get(&m.node()).and_then(|eps| {
            eps.range((std::ops::Bound::Excluded(m.epoch()), std::ops::Bound::Unbounded))
                .map(|(_, &t)| t)
                .min()
        });
        match (explicit, restarted) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// G13 when a `recovered` listing `target` arrives: compared with `target`'s latest delivery so far.
    fn g13_recovered(
        &mut self,
        target: Member,
        writer: Member,
        ts_ms: u64,
        view: ViewId,
        out: &mut Vec<Violation>,
    ) {
        if self.independent_clocks {
            return;
        }
        let first =
            self.first_recovered.entry(target).or_insert(Stamped { ts_ms, what: writer.to_string(), view });
        if ts_ms < first.ts_ms {
            *first = Stamped { ts_ms, what: writer.to_string(), view };
        }
        if let Some(d) = self.last_deliver.get(&target) {
            if d.ts_ms > ts_ms {
                let r = Stamped { ts_ms, what: writer.to_string(), view };
                self.g13_report(target, &r, &d.clone(), out);
            }
        }
    }

    /// G13 when `me` logs a `deliver`: compared with the earliest `recovered` listing `me` so far.
    fn g13_deliver(&mut self, me: Member, ts_ms: u64, msg: &str, view: ViewId, out: &mut Vec<Violation>) {
        if self.independent_clocks {
            return;
        }
        let d = Stamped { ts_ms, what: msg.to_string(), view };
        if let Some(r) = self.first_recovered.get(&me) {
            if ts_ms > r.ts_ms {
                let r = r.clone();
                self.g13_report(me, &r, &d, out);
            }
        }
        let last = self.last_deliver.entry(me).or_insert(d.clone());
        if d.ts_ms >= last.ts_ms {
            *last = d;
        }
    }

    fn g13_report(&mut self, m: Member, recovered: &Stamped, deliver: &Stamped, out: &mut Vec<Violation>) {
        if !self.g13_reported.insert(m) {
            return;
        }
        out.push(Violation::new(
            "G13",
            format!(
                "{m} delivered msg {} in view {} at {}, {} ms after {} logged `recovered` for it in view {} at {}: \
                 a zombie acting in an earlier view",
                deliver.what,
                deliver.view,
                deliver.ts_ms,
                deliver.ts_ms - recovered.ts_ms,
                recovered.what,
                recovered.view,
                recovered.ts_ms
            ),
        ));
    }

    fn on_start(&mut self, me: Member, ts_ms: u64, out: &mut Vec<Violation>) {
        let node = me.node();
        let epochs = self.starts.entry(node).or_default();
        if let Some(&earlier) = epochs.get(&me.epoch()) {
            out.push(Violation::new(
                "G12",
                format!("node {node} started epoch {} twice (at {earlier} and at {ts_ms})", me.epoch().0),
            ));
            return;
        }
        if let Some((&lower, &t)) = epochs.range(..me.epoch()).next_back() {
            if t > ts_ms {
                out.push(Violation::new(
                    "G12",
                    format!(
                        "node {node} started epoch {} at {ts_ms}, before its lower epoch {} started at {t}",
                        me.epoch().0,
                        lower.0
                    ),
                ));
            }
        }
        let above = (std::ops::Bound::Excluded(me.epoch()), std::ops::Bound::Unbounded);
        if let Some((&higher, &t)) = epochs.range(above).next() {
            if t < ts_ms {
                out.push(Violation::new(
                    "G12",
                    format!(
                        "node {node} started epoch {} at {ts_ms}, after its higher epoch {} started at {t}",
                        me.epoch().0,
                        higher.0
                    ),
                ));
            }
        }
        epochs.insert(me.epoch(), ts_ms);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_view(
        &mut self,
        me: Member,
        ts_ms: u64,
        id: ViewId,
        members: &[Member],
        primary: bool,
        prev: Option<ViewId>,
        out: &mut Vec<Violation>,
    ) {
        // G1: compare with the first record of this id, or register it.
        match self.views.get_mut(&id) {
            Some(info) => {
                if info.members != members || info.primary != primary {
                    out.push(Violation::new(
                        "G1",
                        format!(
                            "view {id}: {} installed members {} primary {}, {me} installed members {} primary {primary}",
                            info.first_member,
                            fmt_members(&info.members),
                            info.primary,
                            fmt_members(members)
                        ),
                    ));
                }
                info.installers.insert(me);
                info.first_ts_ms = info.first_ts_ms.min(ts_ms);
            }
            None => {
                self.views.insert(
                    id,
                    ViewInfo {
                        members: members.to_vec(),
                        primary,
                        first_member: me,
                        first_ts_ms: ts_ms,
                        installers: BTreeSet::from([me]),
                    },
                );
                if primary {
                    self.new_primary(id, members, out);
                }
            }
        }

        // G2: well-formed, contains the member, increasing, prev consistent.
        if !members.contains(&me) {
            out.push(Violation::new(
                "G2",
                format!("{me} installed view {id} whose members {} do not include it", fmt_members(members)),
            ));
        }
        if members.windows(2).any(|w| w[0].node() >= w[1].node()) {
            out.push(Violation::new(
                "G2",
                format!(
                    "{me} installed view {id} whose members {} are not sorted by node with each node once",
                    fmt_members(members)
                ),
            ));
        }
        let Some(st) = self.members.get_mut(&me) else { return };
        let old = st.view.take();
        let delivered_in_old = std::mem::take(&mut st.in_view);
        st.view = Some(CurrentView { id, primary, members: members.to_vec() });
        let Some(old) = old else { return };
        if id <= old.id {
            out.push(Violation::new("G2", format!("{me} installed view {id} after view {}", old.id)));
        }
        if let Some(p) = prev {
            if p != old.id {
                out.push(Violation::new(
                    "G2",
                    format!(
                        "{me} installed view {id} with prev {p}, but its previous logged view is {}",
                        old.id
                    ),
                ));
            }
        }

        // G10 is checked in `finish`, once every member's departure from old.id is known.
        let vd = self.per_view.entry(old.id).or_default();
        vd.leavers.push((me, id));

        // G4: compare with the first member seen going from old.id to id.
        match self.transitions.get(&(old.id, id)) {
            None => {
                self.transitions.insert((old.id, id), (me, delivered_in_old));
            }
            Some((first, reference)) => {
                if *reference != delivered_in_old {
                    let i = reference.iter().zip(&delivered_in_old).take_while(|(a, b)| a == b).count();
                    let name = |seq: &Vec<usize>| {
                        seq.get(i)
                            .and_then(|&x| self.msgs.get(x))
                            .map_or("nothing".to_string(), |m| format!("msg {}", m.id))
                    };
                    out.push(Violation::new(
                        "G4",
                        format!(
                            "{first} and {me} both went from view {} to view {id} but delivered different messages in {}: \
                             {first} delivered {}, {me} delivered {}; at position {} {first} has {}, {me} has {}",
                            old.id,
                            old.id,
                            reference.len(),
                            delivered_in_old.len(),
                            i + 1,
                            name(reference),
                            name(&delivered_in_old)
                        ),
                    ));
                }
            }
        }
    }

    /// G8 when a primary view id is seen for the first time.
    fn new_primary(&mut self, x: ViewId, members: &[Member], out: &mut Vec<Violation>) {
        self.primary_ids.insert(x);
        // Members whose primary views surround x but are missing from x.
        let mut found: Vec<(Member, ViewId, ViewId, ViewId)> = Vec::new();
        for (&m, &(lo, hi)) in &self.primary_range {
            if lo < x && x < hi && !members.contains(&m) {
                found.push((m, lo, x, hi));
            }
        }
        // Members of x whose range grows over primary views that miss them.
        for &m in members {
            match self.primary_range.get(&m).copied() {
                None => {
                    self.primary_range.insert(m, (x, x));
                }
                Some((lo, hi)) => {
                    if x > hi {
                        for &p in self
                            .primary_ids
                            .range((std::ops::Bound::Excluded(hi), std::ops::Bound::Excluded(x)))
                        {
                            if self.views.get(&p).is_some_and(|v| !v.members.contains(&m)) {
                                found.push((m, hi, p, x));
                            }
                        }
                        self.primary_range.insert(m, (lo, x));
                    } else if x < lo {
                        for &p in self
                            .primary_ids
                            .range((std::ops::Bound::Excluded(x), std::ops::Bound::Excluded(lo)))
                        {
                            if self.views.get(&p).is_some_and(|v| !v.members.contains(&m)) {
                                found.push((m, x, p, lo));
                            }
                        }
                        self.primary_range.insert(m, (x, hi));
                    }
                }
            }
        }
        for (m, before, missing, after) in found {
            if self.g8_reported.insert((m, missing)) {
                out.push(Violation::new(
                    "G8",
                    format!(
                        "{m} is in primary view {before}, missing from the later primary view {missing} (removed), \
                         and in primary view {after} again: a stateful merge"
                    ),
                ));
            }
        }
    }

    fn on_send(
        &mut self,
        me: Member,
        group: &str,
        msg: &str,
        delivery: Delivery,
        digest: &str,
        out: &mut Vec<Violation>,
    ) {
        self.stats.sends += 1;
        match msg_sender(msg) {
            Some(s) if s == me => {}
            Some(s) => {
                out.push(Violation::new("G6", format!("{me} logged `send` of msg {msg}, whose id names {s}")))
            }
            None => out.push(Violation::new(
                "G6",
                format!("{me} logged `send` of msg {msg:?}, which is not of the form <node>.<epoch>.<n>"),
            )),
        }
        let idx = self.intern(msg);
        let Some(info) = self.msgs.get_mut(idx) else { return };
        if let Some(first) = &info.send {
            out.push(Violation::new(
                "G6",
                format!("msg {msg} was sent twice (by {} and by {me})", first.writer),
            ));
            return;
        }
        info.send = Some(SendInfo { writer: me, group: group.to_string(), digest: digest.to_string() });
        for d in std::mem::take(&mut info.unchecked) {
            if let Some(v) = integrity(msg, &d.member, &d.group, &d.digest, me, group, digest) {
                out.push(v);
            }
        }
        if delivery == Delivery::Safe && !info.safe {
            info.safe = true;
            let views: BTreeSet<ViewId> = info.deliverers.iter().map(|d| d.view).collect();
            for v in views {
                self.mark_safe(idx, v, out);
            }
        }
    }

    fn on_deliver(&mut self, me: Member, d: &DeliverRec<'_>, out: &mut Vec<Violation>) {
        self.stats.deliveries += 1;
        let view = d.view;
        let msg = d.msg;

        // G7 and the member's own bookkeeping.
        let Some(st) = self.members.get_mut(&me) else { return };
        st.delivered += 1;
        match &st.view {
            None if st.midway => {
                *self
                    .undecided
                    .entry(("G7", "delivery before the first `view` left of a member"))
                    .or_default() += 1;
            }
            None => out.push(Violation::new(
                "G7",
                format!("{me} delivered msg {msg} in view {view} before installing any view"),
            )),
            Some(cur) if !cur.primary => out.push(Violation::new(
                "G7",
                format!("{me} delivered msg {msg} while its current view {} is not primary", cur.id),
            )),
            Some(cur) if cur.id != view => out.push(Violation::new(
                "G7",
                format!("{me} delivered msg {msg} naming view {view} while its current view is {}", cur.id),
            )),
            Some(_) => {}
        }
        // G11: a joiner that needed a transfer must have received it before delivering in the group.
        if let Some(g) = st.groups.get_mut(d.group) {
            if g.in_group && g.needs_transfer && !g.transferred && !d.held && !g.reported {
                g.reported = true;
                out.push(Violation::new(
                    "G11",
                    format!(
                        "{me} handed msg {msg} of group {:?} to its application after joining it without a successful state transfer",
                        d.group
                    ),
                ));
            }
        }
        let track_g4 = st.view.is_some();

        // G6: the id names the sender.
        match msg_sender(msg) {
            Some(s) if s == d.sender => {}
            Some(s) => out.push(Violation::new(
                "G6",
                format!("{me} delivered msg {msg} with sender {}, but the id names {s}", d.sender),
            )),
            None => out.push(Violation::new(
                "G6",
                format!("{me} delivered msg {msg:?}, which is not of the form <node>.<epoch>.<n>"),
            )),
        }

        let idx = self.intern(msg);
        if track_g4 {
            if let Some(st) = self.members.get_mut(&me) {
                st.in_view.push(idx);
            }
        }
        let Some(info) = self.msgs.get_mut(idx) else { return };

        // G6: digest and group against the send, now or when it arrives.
        match &info.send {
            Some(s) => {
                if let Some(v) = integrity(msg, &me, d.group, d.digest, s.writer, &s.group, &s.digest) {
                    out.push(v);
                }
                if s.writer != d.sender {
                    out.push(Violation::new(
                        "G6",
                        format!(
                            "{me} delivered msg {msg} with sender {}, but {} logged its send",
                            d.sender, s.writer
                        ),
                    ));
                }
            }
            None => info.unchecked.push(UncheckedDelivery {
                member: me,
                group: d.group.to_string(),
                digest: d.digest.to_string(),
            }),
        }

        // G5: at most once, one view, seq cross-checks, pairwise order. Names of other messages are
        // looked up at the end, once the borrows of this message's entry are over.
        let mut found: Vec<(usize, String)> = Vec::new(); // (other message, text with `{other}` for its id)
        let duplicate = info.deliverers.iter().any(|x| x.member == me);
        if duplicate {
            out.push(Violation::new("G5", format!("{me} delivered msg {msg} more than once")));
        }
        match info.view {
            None => info.view = Some(view),
            Some(v0) if v0 != view => {
                let first = info.deliverers.first().map_or("?".to_string(), |x| x.member.to_string());
                out.push(Violation::new(
                    "G5",
                    format!("msg {msg} was delivered in view {v0} by {first} but in view {view} by {me}"),
                ));
            }
            Some(_) => {}
        }
        let vd = self.per_view.entry(view).or_default();
        if let Some(s) = d.seq {
            match info.seq {
                None => info.seq = Some(s),
                Some(s0) if s0 != s => out.push(Violation::new(
                    "G5",
                    format!("msg {msg} was delivered at seq {s0} and at seq {s} (by {me})"),
                )),
                Some(_) => {}
            }
            match vd.by_seq.get(&s) {
                None => {
                    vd.by_seq.insert(s, idx);
                }
                Some(&other) if other != idx => found.push((
                    other,
                    format!(
                        "msgs {{other}} and {msg} were both delivered at seq {s} in view {view} (by {me})"
                    ),
                )),
                Some(_) => {}
            }
            if !duplicate {
                if let Some(&last) = vd.last_seq.get(&me) {
                    if s <= last {
                        out.push(Violation::new(
                            "G5",
                            format!("{me} delivered msg {msg} at seq {s} after seq {last} in view {view}"),
                        ));
                    }
                }
                vd.last_seq.insert(me, s);
            }
        }
        let mut safe = false;
        if !duplicate {
            let pos_slot = vd.next_pos.entry(me).or_insert(0);
            let q = *pos_slot;
            *pos_slot += 1;
            // For every earlier deliverer Y of this message in this view: no message common to me and Y may
            // come after this one in Y's sequence, since in mine everything common so far comes before it.
            for y in info.deliverers.iter().filter(|y| y.view == view && y.member != me) {
                let slot = vd.pair_max.entry((y.member, me)).or_insert((y.pos, idx));
                if slot.0 > y.pos {
                    found.push((
                        slot.1,
                        format!(
                            "in view {view} {me} delivered msg {{other}} before msg {msg}, but {} delivered {msg} before {{other}}",
                            y.member
                        ),
                    ));
                } else {
                    *slot = (y.pos, idx);
                }
                vd.pair_max.insert((me, y.member), (q, idx));
            }
            info.deliverers.push(Deliverer { member: me, view, pos: q });
            if d.delivery == Some(Delivery::Safe) {
                info.safe = true;
            }
            safe = info.safe;
        }
        for (other, text) in found {
            let other_id = self.msgs.get(other).map_or("?", |m| m.id.as_str());
            out.push(Violation::new("G5", text.replace("{other}", other_id)));
        }
        if safe {
            self.mark_safe(idx, view, out);
        }
    }

    /// G10: message `idx` is known safe and delivered in `view` (checked in `finish`).
    fn mark_safe(&mut self, idx: usize, view: ViewId, _out: &mut Vec<Violation>) {
        self.per_view.entry(view).or_default().safe.insert(idx);
    }

    /// G10 over the whole history: a safe message delivered in V by a member that went on to view W was
    /// delivered in V by every member that went from V to the same W.
    fn check_safe(&self, out: &mut Vec<Violation>) {
        for (view, vd) in &self.per_view {
            for &idx in &vd.safe {
                let Some(info) = self.msgs.get(idx) else { continue };
                let delivered_by =
                    |m: Member| info.deliverers.iter().any(|d| d.member == m && d.view == *view);
                let next_of_deliverers: BTreeSet<ViewId> =
                    vd.leavers.iter().filter(|(m, _)| delivered_by(*m)).map(|(_, n)| *n).collect();
                for &(leaver, next) in &vd.leavers {
                    if next_of_deliverers.contains(&next) && !delivered_by(leaver) {
                        let by = vd
                            .leavers
                            .iter()
                            .find(|(m, n)| *n == next && delivered_by(*m))
                            .map_or("?".to_string(), |(m, _)| m.to_string());
                        out.push(Violation::new(
                            "G10",
                            format!(
                                "safe msg {} was delivered in view {view} by {by}, but {leaver} went from {view} to the same next view {next} without delivering it",
                                info.id
                            ),
                        ));
                    }
                }
            }
        }
    }

    fn on_group_view(&mut self, me: Member, group: &str, members: &[Member]) {
        let Some(st) = self.members.get_mut(&me) else { return };
        let includes = members.contains(&me);
        if st.midway && !st.groups.contains_key(group) {
            // The first group_view left may continue a membership that began in the lost stretch: it
            // sets the state, it is not a join.
            st.groups.insert(
                group.to_string(),
                GroupState {
                    in_group: includes,
                    last_members: Some(members.to_vec()),
                    ..GroupState::default()
                },
            );
            if includes {
                self.undecide("G11", "join before the first `group_view` left of a member");
            }
            return;
        }
        let g = st.groups.entry(group.to_string()).or_default();
        if includes && !g.in_group {
            // A join: a transfer is needed when somebody already held the group's state.
            let before: Vec<Member> = match &g.last_members {
                Some(prev) => prev.iter().copied().filter(|m| *m != me && members.contains(m)).collect(),
                None => members.iter().copied().filter(|m| *m != me).collect(),
            };
            g.in_group = true;
            g.needs_transfer = !before.is_empty();
            g.reported = false;
        } else if !includes && g.in_group {
            g.in_group = false;
            g.needs_transfer = false;
            g.transferred = false;
            g.reported = false;
        }
        g.last_members = Some(members.to_vec());
    }

    #[allow(clippy::too_many_arguments)]
    fn on_state_transfer(
        &mut self,
        me: Member,
        group: &str,
        role: TransferRole,
        peer: Member,
        bytes: u64,
        ok: bool,
        point: Option<String>,
    ) {
        match role {
            TransferRole::Receiver => {
                if ok {
                    if let Some(st) = self.members.get_mut(&me) {
                        st.groups.entry(group.to_string()).or_default().transferred = true;
                    }
                    self.received_transfers.push(ReceivedTransfer {
                        receiver: me,
                        group: group.to_string(),
                        provider: peer,
                        bytes,
                        point,
                    });
                }
            }
            TransferRole::Provider => {
                self.provided_transfers
                    .entry((me, peer, group.to_string(), point))
                    .or_default()
                    .insert(bytes);
            }
        }
    }

    fn finish_g3(&self, out: &mut Vec<Violation>, undecided: &mut Vec<(&'static str, &'static str)>) {
        let ids: Vec<ViewId> = self.primary_ids.iter().copied().collect();
        for pair in ids.windows(2) {
            let (q, p) = (pair[0], pair[1]);
            let (Some(qi), Some(pi)) = (self.views.get(&q), self.views.get(&p)) else { continue };
            if pi.members.iter().any(|m| qi.installers.contains(m)) {
                continue;
            }
            if pi.members.iter().chain(&qi.members).any(|&m| self.may_have_lost_records(m)) {
                undecided.push(("G3", "pair of primary views with a member whose log begins later"));
                continue;
            }
            let common: Vec<NodeId> = pi
                .members
                .iter()
                .map(|m| m.node())
                .filter(|&n| member_on(&qi.members, n).is_some())
                .collect();
            if common.is_empty() {
                out.push(Violation::new(
                    "G3",
                    format!(
                        "primary view {p} {} shares no node with the previous primary view {q} {}",
                        fmt_members(&pi.members),
                        fmt_members(&qi.members)
                    ),
                ));
                continue;
            }
            let mut bad = Vec::new();
            for n in common {
                let Some(old) = member_on(&qi.members, n) else { continue };
                match self.stopped_at(old) {
                    Some(t) if t <= pi.first_ts_ms => {}
                    Some(t) => bad.push(format!("node {n} ({old} stopped only at {t})")),
                    None => bad.push(format!("node {n} ({old} never stopped)")),
                }
            }
            if !bad.is_empty() {
                out.push(Violation::new(
                    "G3",
                    format!(
                        "no member of primary view {p} {} installed the previous primary view {q} {}, \
                         and not all shared nodes had restarted before {p} was installed at {}: {}",
                        fmt_members(&pi.members),
                        fmt_members(&qi.members),
                        pi.first_ts_ms,
                        bad.join(", ")
                    ),
                ));
            }
        }
    }

    fn intern(&mut self, msg: &str) -> usize {
        if let Some(&i) = self.msg_index.get(msg) {
            return i;
        }
        let i = self.msgs.len();
        self.msgs.push(MsgInfo {
            id: msg.to_string(),
            send: None,
            view: None,
            seq: None,
            safe: false,
            deliverers: Vec::new(),
            unchecked: Vec::new(),
        });
        self.msg_index.insert(msg.to_string(), i);
        i
    }
}

/// The fields of a `deliver` record.
struct DeliverRec<'a> {
    group: &'a str,
    msg: &'a str,
    sender: Member,
    view: ViewId,
    digest: &'a str,
    seq: Option<u64>,
    delivery: Option<Delivery>,
    held: bool,
}

/// G6: one delivery against the send.
fn integrity(
    msg: &str,
    deliverer: &Member,
    d_group: &str,
    d_digest: &str,
    writer: Member,
    s_group: &str,
    s_digest: &str,
) -> Option<Violation> {
    if d_digest != s_digest {
        return Some(Violation::new(
            "G6",
            format!("{deliverer} delivered msg {msg} with digest {d_digest}, but {writer} sent it with digest {s_digest}"),
        ));
    }
    if d_group != s_group {
        return Some(Violation::new(
            "G6",
            format!("{deliverer} delivered msg {msg} in group {d_group:?}, but {writer} sent it to group {s_group:?}"),
        ));
    }
    None
}

/// Checks a whole set of records written against one clock (G13 included): groups them by member
/// (keeping each member's order), observes every member's records in turn and finishes. Returns
/// everything found.
pub fn check_all(records: &[Record]) -> Vec<Violation> {
    check_all_with(records, Checker::new())
}

/// [`check_all`] with a given (empty) checker, e.g. [`Checker::with_independent_clocks`].
pub fn check_all_with(records: &[Record], checker: Checker) -> Vec<Violation> {
    check_all_keeping(records, checker).0
}

/// [`check_all_with`], returning the checker too (for [`Checker::undecided`] and [`Checker::stats`]).
pub fn check_all_keeping(records: &[Record], mut checker: Checker) -> (Vec<Violation>, Checker) {
    let mut by_member: BTreeMap<Member, Vec<&Record>> = BTreeMap::new();
    for r in records {
        by_member.entry(r.member()).or_default().push(r);
    }
    let mut out = Vec::new();
    for recs in by_member.values() {
        for r in recs {
            out.extend(checker.observe(r));
        }
    }
    out.extend(checker.finish());
    (out, checker)
}

/// Parses an event log: one JSON record per line, blank lines skipped. On error returns the 1-based line
/// number and the parser's message.
pub fn parse_log(text: &str) -> Result<Vec<Record>, (usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        out.push(Record::from_json_line(line).map_err(|e| (i + 1, e.to_string()))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{BlockReason, FenceMethod};
    use crate::types::digest;
    use std::collections::VecDeque;

    const A: Member = Member(NodeId(1), Epoch(1));
    const B: Member = Member(NodeId(2), Epoch(1));
    const C: Member = Member(NodeId(3), Epoch(1));
    const A2: Member = Member(NodeId(1), Epoch(2));
    const B2: Member = Member(NodeId(2), Epoch(2));
    const C2: Member = Member(NodeId(3), Epoch(2));
    const V1: ViewId = ViewId { seq: 1, coord: NodeId(1) };
    const V2: ViewId = ViewId { seq: 2, coord: NodeId(1) };
    const V3: ViewId = ViewId { seq: 3, coord: NodeId(1) };

    fn m(node: u32, epoch: u64) -> Member {
        Member(NodeId(node), Epoch(epoch))
    }

    fn vid(seq: u64, coord: u32) -> ViewId {
        ViewId { seq, coord: NodeId(coord) }
    }

    /// A history under construction; every record gets a later timestamp than the one before.
    #[derive(Default)]
    struct H {
        recs: Vec<Record>,
        ts_ms: u64,
    }

    impl H {
        fn new() -> H {
            H::default()
        }
        fn ev(&mut self, who: Member, event: Event) -> &mut H {
            self.ts_ms += 10;
            self.recs.push(Record { ts_ms: self.ts_ms, node: who.node(), epoch: who.epoch(), event });
            self
        }
        fn start(&mut self, who: &[Member]) -> &mut H {
            for &w in who {
                self.ev(w, Event::Start { version: "test".into() });
            }
            self
        }
        fn view(&mut self, who: &[Member], id: ViewId, members: &[Member], primary: bool) -> &mut H {
            for &w in who {
                self.ev(
                    w,
                    Event::View {
                        view: id,
                        members: members.to_vec(),
                        primary,
                        joined: vec![],
                        left: vec![],
                        failed: vec![],
                        prev: None,
                    },
                );
            }
            self
        }
        fn send(&mut self, who: Member, msg: &str, delivery: Delivery) -> &mut H {
            self.ev(
                who,
                Event::Send {
                    group: "g".into(),
                    msg: msg.into(),
                    bytes: 3,
                    delivery,
                    digest: digest(msg.as_bytes()),
                },
            )
        }
        fn deliver_full(
            &mut self,
            who: Member,
            msg: &str,
            view: ViewId,
            seq: Option<u64>,
            dg: &str,
        ) -> &mut H {
            let sender = msg_sender(msg).unwrap_or(Member(NodeId(0), Epoch(0)));
            self.ev(
                who,
                Event::Deliver {
                    group: "g".into(),
                    msg: msg.into(),
                    sender,
                    view,
                    digest: dg.into(),
                    seq,
                    delivery: None,
                    held: false,
                },
            )
        }
        fn deliver(&mut self, who: &[Member], msg: &str, view: ViewId) -> &mut H {
            for &w in who {
                self.deliver_full(w, msg, view, None, &digest(msg.as_bytes()));
            }
            self
        }
        fn deliver_seq(&mut self, who: &[Member], msg: &str, view: ViewId, seq: u64) -> &mut H {
            for &w in who {
                self.deliver_full(w, msg, view, Some(seq), &digest(msg.as_bytes()));
            }
            self
        }
        fn group_view(&mut self, who: &[Member], view: ViewId, members: &[Member]) -> &mut H {
            for &w in who {
                self.ev(w, Event::GroupView { group: "g".into(), view, members: members.to_vec() });
            }
            self
        }
        fn transfer(&mut self, provider: Member, receiver: Member, bytes: u64) -> &mut H {
            self.ev(
                provider,
                Event::StateTransfer {
                    group: "g".into(),
                    role: TransferRole::Provider,
                    peer: receiver,
                    bytes,
                    ok: true,
                    point: None,
                },
            );
            self.ev(
                receiver,
                Event::StateTransfer {
                    group: "g".into(),
                    role: TransferRole::Receiver,
                    peer: provider,
                    bytes,
                    ok: true,
                    point: None,
                },
            )
        }
        fn fence_ok(&mut self, who: Member, target: Member, ok: bool) -> &mut H {
            self.ev(who, Event::FenceResult { target, ok, method: FenceMethod::Agent, detail: "test".into() })
        }
        fn recovered(&mut self, who: Member, view: ViewId, failed: &[Member]) -> &mut H {
            self.ev(who, Event::Recovered { view, failed: failed.to_vec() })
        }
        /// Three members A, B, C started and in primary view V1.
        fn base() -> H {
            let mut h = H::new();
            h.start(&[A, B, C]).view(&[A, B, C], V1, &[A, B, C], true);
            h
        }
        fn records(&self) -> Vec<Record> {
            self.recs.clone()
        }
    }

    fn verdict(vs: &[Violation]) -> BTreeSet<&'static str> {
        vs.iter().map(|v| v.guarantee).collect()
    }

    fn assert_clean(records: &[Record]) {
        let vs = check_all(records);
        assert!(vs.is_empty(), "unexpected violations: {vs:#?}");
    }

    /// Asserts that the history breaks exactly guarantee `g` and returns the violations.
    fn assert_only(records: &[Record], g: &'static str) -> Vec<Violation> {
        let vs = check_all(records);
        assert_eq!(verdict(&vs), BTreeSet::from([g]), "violations: {vs:#?}");
        vs
    }

    /// A realistic run: three members, group join with state transfer, sends and deliveries in two views,
    /// C fails and is removed, fenced and recovered, and its node comes back with a new epoch.
    fn realistic() -> H {
        let mut h = H::base();
        h.group_view(&[A, B, C], V1, &[A]).group_view(&[A, B, C], V1, &[A, B, C]);
        h.transfer(A, B, 10).transfer(A, C, 10);
        h.send(A, "1.1.1", Delivery::Safe).send(B, "2.1.1", Delivery::Agreed);
        h.deliver_seq(&[A, B, C], "1.1.1", V1, 1).deliver_seq(&[A, B, C], "2.1.1", V1, 2);
        for w in [A, B] {
            h.ev(
                w,
                Event::View {
                    view: V2,
                    members: vec![A, B],
                    primary: true,
                    joined: vec![],
                    left: vec![],
                    failed: vec![C],
                    prev: Some(V1),
                },
            );
        }
        h.group_view(&[A, B], V2, &[A, B]);
        h.send(A, "1.1.2", Delivery::Agreed).deliver_seq(&[A, B], "1.1.2", V2, 1);
        h.ev(A, Event::Blocked { reason: BlockReason::Fencing });
        h.ev(A, Event::FenceRequest { target: C, reason: "failed".into() });
        h.fence_ok(A, C, true).recovered(A, V2, &[C]);
        h.ev(A, Event::Unblocked {});
        h.start(&[C2]);
        for w in [A, B, C2] {
            h.ev(
                w,
                Event::View {
                    view: V3,
                    members: vec![A, B, C2],
                    primary: true,
                    joined: vec![C2],
                    left: vec![],
                    failed: vec![],
                    prev: if w == C2 { None } else { Some(V2) },
                },
            );
        }
        h.group_view(&[C2], V3, &[A, B]).group_view(&[A, B, C2], V3, &[A, B, C2]);
        h.transfer(A, C2, 12);
        h.send(B, "2.1.2", Delivery::Safe).deliver_seq(&[A, B, C2], "2.1.2", V3, 1);
        h
    }

    #[test]
    fn realistic_three_member_history_is_clean() {
        let h = realistic();
        assert_clean(&h.recs);
        let mut c = Checker::new();
        for r in &h.recs {
            assert!(c.observe(r).is_empty());
        }
        assert!(c.finish().is_empty());
        assert_eq!(
            c.stats(),
            CheckStats {
                members: 4,
                views: 3,
                primary_views: 3,
                deliveries: 11,
                sends: 4,
                stateful_merges: 0,
                fences: 1,
                recovered: 1
            }
        );
        assert_eq!(c.last_view_of(A), Some((V3, true, vec![A, B, C2])));
        assert_eq!(c.last_view_of(C), Some((V1, true, vec![A, B, C])));
        assert_eq!(c.last_view_of(m(9, 9)), None);
        assert_eq!(c.delivered_count(A), 4);
        assert_eq!(c.delivered_count(C), 2);
        assert_eq!(c.delivered_count(m(9, 9)), 0);
        assert_eq!(c.removed_members(), BTreeSet::from([C]));
    }

    /// The realistic history with the first `cut` records of node 2 lost (its oldest files rotated away).
    fn realistic_cut(cut: usize) -> (Vec<Record>, Record) {
        let mut seen = 0;
        let recs: Vec<Record> = realistic()
            .recs
            .into_iter()
            .filter(|r| {
                if r.node != NodeId(2) {
                    return true;
                }
                seen += 1;
                seen > cut
            })
            .collect();
        let first = recs.iter().find(|r| r.node == NodeId(2)).cloned().expect("node 2 keeps records");
        (recs, first)
    }

    #[test]
    fn a_history_that_begins_mid_way_is_checked_without_false_violations_and_says_what_it_left_undecided() {
        // Node 2 lost its start, its first view, group views and its first send (2.1.1): read as a whole
        // history that would be G12, G7, G11 and G6; told that it begins mid-way, it is clean.
        let (recs, first) = realistic_cut(6);
        assert!(matches!(first.event, Event::Deliver { .. }), "{first:?}");
        let whole = verdict(&check_all(&recs)).into_iter().collect::<Vec<_>>();
        assert!(whole.contains(&"G12") && whole.contains(&"G6"), "{whole:?}");
        let mut c = Checker::new();
        c.history_begins_midway(&first);
        let (vs, c) = check_all_keeping(&recs, c);
        assert!(vs.is_empty(), "{vs:#?}");
        let undecided = c.undecided();
        assert!(undecided.iter().any(|u| u.starts_with("G12 ")), "{undecided:?}");
        assert!(undecided.iter().any(|u| u.starts_with("G7 ")), "{undecided:?}");
        assert!(undecided.iter().any(|u| u.starts_with("G6 ")), "{undecided:?}");
    }

    #[test]
    fn a_history_that_begins_mid_way_still_shows_violations_in_what_it_keeps() {
        // Node 2 goes back from view 3 to view 2 after the cut: G2 is found whatever was lost before.
        let (mut recs, first) = realistic_cut(6);
        let back = Record {
            ts_ms: 9_999,
            node: NodeId(2),
            epoch: Epoch(1),
            event: Event::View {
                view: V2,
                members: vec![A, B],
                primary: true,
                joined: vec![],
                left: vec![],
                failed: vec![],
                prev: None,
            },
        };
        recs.push(back);
        let mut c = Checker::new();
        c.history_begins_midway(&first);
        let (vs, _) = check_all_keeping(&recs, c);
        assert_eq!(verdict(&vs), BTreeSet::from(["G2"]), "{vs:#?}");
        // A node whose log begins with a `start` keeps G12 for that member: an epoch started twice is found.
        let (mut recs, _) = realistic_cut(0);
        let start = recs.iter().find(|r| r.node == NodeId(2)).cloned().expect("a start");
        let mut again = start.clone();
        again.ts_ms += 5_000;
        recs.push(again);
        let mut c = Checker::new();
        c.history_begins_midway(&start);
        let (vs, c) = check_all_keeping(&recs, c);
        assert_eq!(verdict(&vs), BTreeSet::from(["G12"]), "{vs:#?}");
        assert!(c.undecided().iter().all(|u| !u.starts_with("G12 ")), "{:?}", c.undecided());
    }

    #[test]
    fn fixture_of_the_realistic_history_parses_and_is_clean() {
        let text = include_str!("../tests/testdata/checker/realistic_3_members.jsonl");
        let recs = parse_log(text).expect("fixture parses");
        assert_eq!(recs, realistic().recs);
        assert!(check_all(&recs).is_empty());
    }

    #[test]
    fn fixture_of_a_stateful_merge_breaks_g8() {
        let text = include_str!("../tests/testdata/checker/stateful_merge.jsonl");
        let recs = parse_log(text).expect("fixture parses");
        assert_eq!(recs, stateful_merge().recs);
        assert_only(&recs, "G8");
    }

    // G1

    #[test]
    fn g1_same_view_id_same_members_is_clean() {
        assert_clean(&H::base().recs);
    }

    #[test]
    fn g1_same_view_id_with_other_members_is_a_violation() {
        let mut h = H::new();
        h.start(&[A, B, C]).view(&[A, B], V1, &[A, B, C], true).view(&[C], V1, &[A, C], true);
        let vs = assert_only(&h.recs, "G1");
        assert_eq!(vs.len(), 1);
        assert!(vs[0].detail.contains("view 1.1") && vs[0].detail.contains("[3,1]"), "{}", vs[0].detail);
    }

    #[test]
    fn g1_same_view_id_with_other_primary_flag_is_a_violation() {
        let mut h = H::new();
        h.start(&[A, B]).view(&[A], V1, &[A, B], true).view(&[B], V1, &[A, B], false);
        assert_only(&h.recs, "G1");
    }

    // G2

    #[test]
    fn g2_increasing_views_containing_self_are_clean() {
        let mut h = H::base();
        h.view(&[A, B, C], V2, &[A, B, C], true);
        assert_clean(&h.recs);
    }

    #[test]
    fn g2_going_back_to_an_older_view_is_a_violation() {
        let mut h = H::base();
        h.view(&[A], V2, &[A, B, C], true).view(&[A], V1, &[A, B, C], true);
        let vs = assert_only(&h.recs, "G2");
        assert_eq!(vs[0].detail, "[1,1] installed view 1.1 after view 2.1");
    }

    #[test]
    fn g2_view_without_self_is_a_violation() {
        let mut h = H::base();
        h.view(&[A, B, C], V2, &[A, B], true);
        let vs = assert_only(&h.recs, "G2");
        assert_eq!(vs.len(), 1);
        assert!(vs[0].detail.starts_with("[3,1] installed view 2.1"), "{}", vs[0].detail);
    }

    #[test]
    fn g2_unsorted_members_and_wrong_prev_are_violations() {
        let mut h = H::base();
        h.view(&[A], V2, &[B, A, C], true);
        h.ev(
            B,
            Event::View {
                view: V3,
                members: vec![A, B, C],
                primary: true,
                joined: vec![],
                left: vec![],
                failed: vec![],
                prev: Some(V2),
            },
        );
        let vs = check_all(&h.recs);
        assert_eq!(vs.iter().filter(|v| v.guarantee == "G2").count(), 2, "{vs:#?}");
    }

    // G3

    #[test]
    fn g3_chained_primary_views_are_clean() {
        let mut h = H::base();
        h.view(&[A, B], V2, &[A, B], true).start(&[C2]).view(&[A, B, C2], V3, &[A, B, C2], true);
        assert_clean(&h.recs);
    }

    #[test]
    fn g3_whole_cluster_restart_is_allowed() {
        let mut h = H::base();
        h.start(&[A2, B2, C2]).view(&[A2, B2, C2], V2, &[A2, B2, C2], true);
        assert_clean(&h.recs);
    }

    #[test]
    fn g3_primary_view_disjoint_from_the_previous_one_is_a_violation() {
        let (d, e, f) = (m(4, 1), m(5, 1), m(6, 1));
        let mut h = H::base();
        h.start(&[d, e, f]).view(&[d, e, f], vid(2, 4), &[d, e, f], true);
        let vs = assert_only(&h.recs, "G3");
        assert!(vs[0].detail.contains("shares no node"), "{}", vs[0].detail);
    }

    #[test]
    fn g3_restart_exception_needs_the_old_member_stopped_before_the_install() {
        // B2 installs V2 before A2 even started, so A (node 1) was still running when V2 appeared.
        let mut h = H::base();
        h.start(&[B2]).view(&[B2], V2, &[A2, B2], true).start(&[A2]).view(&[A2], V2, &[A2, B2], true);
        let vs = assert_only(&h.recs, "G3");
        assert_eq!(vs.len(), 1);
        assert!(vs[0].detail.contains("node 1 ([1,1] stopped only at"), "{}", vs[0].detail);
        assert!(!vs[0].detail.contains("node 2"), "{}", vs[0].detail);

        // Told that A crashed before V2 was installed, the checker accepts it.
        let mut c = Checker::new();
        for r in &h.recs {
            assert!(c.observe(r).is_empty());
        }
        c.member_stopped(A, 45);
        assert!(c.finish().is_empty());
    }

    #[test]
    fn g3_clean_stop_counts_as_stopped() {
        let mut h = H::new();
        h.start(&[A, B]).view(&[A, B], V1, &[A, B], true);
        h.ev(A, Event::Stop { reason: "shutdown".into() });
        h.ev(B, Event::Stop { reason: "shutdown".into() });
        h.view(&[A2], V2, &[A2, B2], true).start(&[]);
        // A2 and B2 have no start record in this crafted log: only G12 may show up, never G3.
        assert_eq!(verdict(&check_all(&h.recs)), BTreeSet::from(["G12"]));
    }

    // G4

    #[test]
    fn g4_same_deliveries_before_the_same_next_view_are_clean() {
        let mut h = H::base();
        h.send(A, "1.1.1", Delivery::Agreed).deliver(&[A, B, C], "1.1.1", V1);
        h.view(&[A, B, C], V2, &[A, B, C], true);
        assert_clean(&h.recs);
    }

    #[test]
    fn g4_different_deliveries_before_the_same_next_view_are_a_violation() {
        let mut h = H::base();
        h.send(A, "1.1.1", Delivery::Agreed).send(A, "1.1.2", Delivery::Agreed);
        h.deliver(&[A, B, C], "1.1.1", V1).deliver(&[A, B], "1.1.2", V1);
        h.view(&[A, B, C], V2, &[A, B, C], true);
        let vs = assert_only(&h.recs, "G4");
        assert_eq!(vs.len(), 1);
        assert!(vs[0].detail.contains("msg 1.1.2") && vs[0].detail.contains("[3,1]"), "{}", vs[0].detail);
    }

    // G5

    #[test]
    fn g5_same_order_with_seq_is_clean() {
        let mut h = H::base();
        h.send(A, "1.1.1", Delivery::Agreed).send(B, "2.1.1", Delivery::Agreed);
        h.deliver_seq(&[A, B], "1.1.1", V1, 1).deliver_seq(&[A, B], "2.1.1", V1, 2);
        h.deliver_seq(&[C], "2.1.1", V1, 2);
        assert_clean(&h.recs);
    }

    #[test]
    fn g5_delivering_twice_is_a_violation() {
        let mut h = H::base();
        h.send(A, "1.1.1", Delivery::Agreed).deliver(&[A, A], "1.1.1", V1);
        let vs = assert_only(&h.recs, "G5");
        assert_eq!(vs[0].detail, "[1,1] delivered msg 1.1.1 more than once");
    }

    #[test]
    fn g5_different_order_is_a_violation() {
        let mut h = H::base();
        h.send(A, "1.1.1", Delivery::Agreed).send(B, "2.1.1", Delivery::Agreed);
        h.deliver(&[A], "1.1.1", V1).deliver(&[A, B], "2.1.1", V1).deliver(&[B], "1.1.1", V1);
        let vs = assert_only(&h.recs, "G5");
        assert_eq!(vs.len(), 1);
        assert!(vs[0].detail.contains("1.1.1") && vs[0].detail.contains("2.1.1"), "{}", vs[0].detail);
    }

    #[test]
    fn g5_order_is_checked_through_a_third_members_gaps() {
        // A: x y z; B: z x (x and z swapped relative to A); C: y only.
        let mut h = H::base();
        h.send(A, "1.1.1", Delivery::Agreed).send(A, "1.1.2", Delivery::Agreed).send(
            A,
            "1.1.3",
            Delivery::Agreed,
        );
        h.deliver(&[A], "1.1.1", V1).deliver(&[A, C], "1.1.2", V1).deliver(&[A, B], "1.1.3", V1);
        h.deliver(&[B], "1.1.1", V1);
        assert_only(&h.recs, "G5");
    }

    #[test]
    fn g5_delivering_in_different_views_is_a_violation() {
        let mut h = H::new();
        h.start(&[A, B]).view(&[A], V1, &[A], true).view(&[A, B], V2, &[A, B], true);
        // Put A's delivery in V1 by rebuilding the order: A delivers before installing V2.
        let mut h2 = H::new();
        h2.start(&[A, B]).view(&[A], V1, &[A], true).send(A, "1.1.1", Delivery::Agreed);
        h2.deliver(&[A], "1.1.1", V1).view(&[A, B], V2, &[A, B], true).deliver(&[B], "1.1.1", V2);
        let vs = assert_only(&h2.recs, "G5");
        assert_eq!(vs[0].detail, "msg 1.1.1 was delivered in view 1.1 by [1,1] but in view 2.1 by [2,1]");
        assert_clean(&h.recs);
    }

    #[test]
    fn g5_seq_disagreement_is_a_violation() {
        let mut h = H::base();
        h.send(A, "1.1.1", Delivery::Agreed).deliver_seq(&[A], "1.1.1", V1, 1).deliver_seq(
            &[B],
            "1.1.1",
            V1,
            2,
        );
        let vs = assert_only(&h.recs, "G5");
        assert_eq!(vs[0].detail, "msg 1.1.1 was delivered at seq 1 and at seq 2 (by [2,1])");
    }

    #[test]
    fn g5_two_messages_at_one_seq_is_a_violation() {
        let mut h = H::base();
        h.send(A, "1.1.1", Delivery::Agreed).send(B, "2.1.1", Delivery::Agreed);
        h.deliver_seq(&[A], "1.1.1", V1, 1).deliver_seq(&[B], "2.1.1", V1, 1);
        assert_only(&h.recs, "G5");
    }

    // G6

    #[test]
    fn g6_delivery_matching_its_send_is_clean() {
        let mut h = H::base();
        h.send(B, "2.1.1", Delivery::Agreed).deliver(&[A, B, C], "2.1.1", V1);
        assert_clean(&h.recs);
    }

    #[test]
    fn g6_other_digest_is_a_violation_in_either_arrival_order() {
        let mut h = H::base();
        h.send(B, "2.1.1", Delivery::Agreed).deliver_full(A, "2.1.1", V1, None, "bad");
        let vs = assert_only(&h.recs, "G6");
        assert!(vs[0].detail.contains("digest bad"), "{}", vs[0].detail);
        // The deliver first (A's log read before B's), then the send.
        let mut c = Checker::new();
        let mut found = Vec::new();
        for r in h.recs.iter().filter(|r| r.member() != B) {
            found.extend(c.observe(r));
        }
        assert!(found.is_empty(), "{found:?}");
        for r in h.recs.iter().filter(|r| r.member() == B) {
            found.extend(c.observe(r));
        }
        assert_eq!(verdict(&found), BTreeSet::from(["G6"]));
    }

    #[test]
    fn g6_delivery_without_send_is_a_violation() {
        let mut h = H::base();
        h.deliver(&[A, B], "3.1.1", V1);
        let vs = assert_only(&h.recs, "G6");
        assert_eq!(vs.len(), 1);
        assert!(vs[0].detail.contains("no member logged its `send`"), "{}", vs[0].detail);
    }

    #[test]
    fn g6_sender_not_matching_the_msg_id_is_a_violation() {
        let mut h = H::base();
        h.send(A, "1.1.1", Delivery::Agreed);
        h.ev(
            B,
            Event::Deliver {
                group: "g".into(),
                msg: "1.1.1".into(),
                sender: B,
                view: V1,
                digest: digest(b"1.1.1"),
                seq: None,
                delivery: None,
                held: false,
            },
        );
        assert_only(&h.recs, "G6");
    }

    #[test]
    fn g6_send_by_another_member_and_reused_ids_are_violations() {
        let mut h = H::base();
        h.send(A, "2.1.1", Delivery::Agreed).send(B, "2.1.1", Delivery::Agreed).send(
            A,
            "oops",
            Delivery::Agreed,
        );
        let vs = assert_only(&h.recs, "G6");
        assert_eq!(vs.len(), 3, "{vs:#?}");
    }

    // G7

    #[test]
    fn g7_delivery_in_the_current_primary_view_is_clean() {
        let mut h = H::base();
        h.send(A, "1.1.1", Delivery::Agreed).deliver(&[A], "1.1.1", V1);
        assert_clean(&h.recs);
    }

    #[test]
    fn g7_delivery_in_a_non_primary_view_is_a_violation() {
        let mut h = H::new();
        h.start(&[A]).view(&[A], V1, &[A], false).send(A, "1.1.1", Delivery::Agreed).deliver(
            &[A],
            "1.1.1",
            V1,
        );
        let vs = assert_only(&h.recs, "G7");
        assert_eq!(vs[0].detail, "[1,1] delivered msg 1.1.1 while its current view 1.1 is not primary");
    }

    #[test]
    fn g7_delivery_naming_another_view_or_before_any_view_is_a_violation() {
        let mut h = H::new();
        h.start(&[A, B]).send(A, "1.1.1", Delivery::Agreed).deliver(&[B], "1.1.1", V1);
        h.view(&[A], V1, &[A, B], true).deliver(&[A], "1.1.1", V2);
        let vs = check_all(&h.recs);
        let g7: Vec<_> = vs.iter().filter(|v| v.guarantee == "G7").collect();
        assert_eq!(g7.len(), 2, "{vs:#?}");
    }

    // G8

    fn stateful_merge() -> H {
        let mut h = H::base();
        h.view(&[A, B], V2, &[A, B], true).view(&[A, B, C], V3, &[A, B, C], true);
        h
    }

    #[test]
    fn g8_removed_member_coming_back_with_a_new_epoch_is_clean() {
        let mut h = H::base();
        h.view(&[A, B], V2, &[A, B], true).start(&[C2]).view(&[A, B, C2], V3, &[A, B, C2], true);
        let mut c = Checker::new();
        for r in &h.recs {
            assert!(c.observe(r).is_empty());
        }
        assert_eq!(c.removed_members(), BTreeSet::from([C]));
    }

    #[test]
    fn g8_removed_member_back_with_its_old_epoch_is_a_violation() {
        let vs = assert_only(&stateful_merge().recs, "G8");
        assert_eq!(vs.len(), 1);
        assert_eq!(
            vs[0].detail,
            "[3,1] is in primary view 1.1, missing from the later primary view 2.1 (removed), and in primary view 3.1 again: a stateful merge"
        );
    }

    #[test]
    fn g8_is_found_when_the_removing_view_arrives_last() {
        // Only B logs V2 (without C); A and C go from V1 straight to V3 (with C). Reading A's and C's logs
        // before B's, V3 is known before V2, and the merge is found when B's V2 arrives.
        let mut h = H::base();
        h.view(&[B], V2, &[A, B], true).view(&[A, B, C], V3, &[A, B, C], true);
        let mut c = Checker::new();
        for r in h.recs.iter().filter(|r| r.member() != B) {
            assert!(c.observe(r).is_empty());
        }
        let mut found = Vec::new();
        for r in h.recs.iter().filter(|r| r.member() == B) {
            let got = c.observe(r);
            if !got.is_empty() {
                assert!(matches!(&r.event, Event::View { view, .. } if *view == V2), "found at {r:?}");
            }
            found.extend(got);
        }
        found.extend(c.finish());
        assert_eq!(verdict(&found), BTreeSet::from(["G8"]));
        assert_eq!(found.len(), 1);
    }

    // G9

    #[test]
    fn g9_recovery_after_a_successful_fence_is_clean() {
        let mut h = H::base();
        h.view(&[A, B], V2, &[A, B], true).fence_ok(B, C, true).recovered(A, V2, &[C]);
        assert_clean(&h.recs);
    }

    #[test]
    fn g9_recovery_before_the_fence_is_a_violation() {
        let mut h = H::base();
        h.view(&[A, B], V2, &[A, B], true).recovered(A, V2, &[C]).fence_ok(B, C, true);
        let vs = assert_only(&h.recs, "G9");
        assert!(vs[0].detail.contains("first successful fence_result for it is at"), "{}", vs[0].detail);
    }

    #[test]
    fn g9_recovery_after_a_failed_fence_is_a_violation() {
        let mut h = H::base();
        h.view(&[A, B], V2, &[A, B], true).fence_ok(A, C, false).recovered(A, V2, &[C]);
        let vs = assert_only(&h.recs, "G9");
        assert_eq!(vs[0].detail, format!("[1,1] logged `recovered` for [3,1] in view 2.1 at {}, but no successful fence_result for it exists", h.ts_ms));
    }

    // G10

    #[test]
    fn g10_safe_message_delivered_by_every_survivor_is_clean() {
        let mut h = H::base();
        h.send(A, "1.1.1", Delivery::Safe).deliver(&[A, B, C], "1.1.1", V1);
        h.view(&[A, B], V2, &[A, B], true).view(&[C], vid(2, 3), &[C], false);
        assert_clean(&h.recs);
    }

    #[test]
    fn g10_member_cut_off_before_stability_may_skip_a_safe_message() {
        let mut h = H::base();
        h.send(A, "1.1.1", Delivery::Safe).deliver(&[A, B], "1.1.1", V1);
        h.view(&[A, B], V2, &[A, B], true).view(&[C], vid(2, 3), &[C], false);
        assert_clean(&h.recs);
    }

    #[test]
    fn g10_member_going_to_the_same_next_view_without_the_safe_message_is_a_violation() {
        let mut h = H::base();
        h.send(A, "1.1.1", Delivery::Safe).deliver(&[A], "1.1.1", V1);
        h.view(&[A, B], V2, &[A, B], true).view(&[C], vid(2, 3), &[C], false);
        let vs: Vec<_> = check_all(&h.recs).into_iter().filter(|v| v.guarantee == "G10").collect();
        assert_eq!(vs.len(), 1, "{vs:?}");
        assert!(vs[0].detail.contains("[2,1] went from 1.1 to the same next view 2.1"), "{}", vs[0].detail);
    }

    #[test]
    fn g10_is_found_whatever_order_the_logs_arrive_in() {
        let mut h = H::base();
        h.send(A, "1.1.1", Delivery::Safe).deliver(&[A], "1.1.1", V1);
        h.view(&[A, B], V2, &[A, B], true).view(&[C], vid(2, 3), &[C], false);
        for order in [[C, B, A], [A, B, C], [B, A, C]] {
            let mut c = Checker::new();
            for who in order {
                for r in h.recs.iter().filter(|r| r.member() == who) {
                    c.observe(r);
                }
            }
            let g10: Vec<_> = c.finish().into_iter().filter(|v| v.guarantee == "G10").collect();
            assert_eq!(g10.len(), 1, "{order:?}: {g10:?}");
        }
    }

    // G11

    #[test]
    fn g11_joiner_delivering_after_its_transfer_is_clean() {
        let mut h = H::base();
        h.group_view(&[A, B], V1, &[A]).group_view(&[A, B], V1, &[A, B]).transfer(A, B, 5);
        h.send(A, "1.1.1", Delivery::Agreed).deliver(&[A, B], "1.1.1", V1);
        assert_clean(&h.recs);
    }

    #[test]
    fn g11_first_member_of_a_group_needs_no_transfer() {
        let mut h = H::base();
        h.group_view(&[A], V1, &[A]).send(A, "1.1.1", Delivery::Agreed).deliver(&[A], "1.1.1", V1);
        assert_clean(&h.recs);
    }

    #[test]
    fn g11_joiner_delivering_before_its_transfer_is_a_violation() {
        let mut h = H::base();
        h.group_view(&[A, B], V1, &[A]).group_view(&[A, B], V1, &[A, B]);
        h.send(A, "1.1.1", Delivery::Agreed).deliver(&[A, B], "1.1.1", V1).transfer(A, B, 5);
        let vs = assert_only(&h.recs, "G11");
        assert_eq!(vs.len(), 1);
        assert!(vs[0].detail.starts_with("[2,1] handed msg 1.1.1 of group \"g\""), "{}", vs[0].detail);
    }

    #[test]
    fn g11_deliveries_held_back_until_the_transfer_are_clean() {
        let mut h = H::base();
        h.group_view(&[A, B], V1, &[A]).group_view(&[A, B], V1, &[A, B]);
        h.send(A, "1.1.1", Delivery::Agreed).deliver(&[A], "1.1.1", V1);
        h.ev(
            B,
            Event::Deliver {
                group: "g".into(),
                msg: "1.1.1".into(),
                sender: A,
                view: V1,
                digest: digest(b"1.1.1"),
                seq: None,
                delivery: None,
                held: true,
            },
        );
        h.transfer(A, B, 5);
        assert_clean(&h.recs);
    }

    #[test]
    fn g11_transfer_sizes_that_disagree_are_a_violation() {
        let mut h = H::base();
        h.group_view(&[A, B], V1, &[A]).group_view(&[A, B], V1, &[A, B]);
        h.ev(
            A,
            Event::StateTransfer {
                group: "g".into(),
                role: TransferRole::Provider,
                peer: B,
                bytes: 7,
                ok: true,
                point: None,
            },
        );
        h.ev(
            B,
            Event::StateTransfer {
                group: "g".into(),
                role: TransferRole::Receiver,
                peer: A,
                bytes: 6,
                ok: true,
                point: None,
            },
        );
        let vs = assert_only(&h.recs, "G11");
        assert_eq!(
            vs[0].detail,
            "[2,1] received 6 bytes of group \"g\" state from [1,1], which logged sending 7 bytes"
        );
    }

    // G12

    #[test]
    fn g12_restarts_with_higher_epochs_are_clean() {
        let mut h = H::new();
        h.start(&[A]).view(&[A], V1, &[A], true).start(&[A2]).view(&[A2], V2, &[A2], true);
        assert_clean(&h.recs);
    }

    #[test]
    fn g12_record_before_start_is_a_violation() {
        let mut h = H::new();
        h.view(&[A], V1, &[A], true);
        let vs = assert_only(&h.recs, "G12");
        assert_eq!(vs[0].detail, "the first record of member [1,1] is `view`, not `start`");
    }

    #[test]
    fn g12_epoch_started_twice_is_a_violation() {
        let mut h = H::new();
        h.start(&[A, A]);
        let vs = assert_only(&h.recs, "G12");
        assert_eq!(vs[0].detail, "node 1 started epoch 1 twice (at 10 and at 20)");
    }

    #[test]
    fn g12_lower_epoch_started_after_a_higher_one_is_a_violation() {
        let mut h = H::new();
        h.start(&[A2, A]);
        // check_all reads member [1,1] before [1,2].
        let vs = assert_only(&h.recs, "G12");
        assert_eq!(vs[0].detail, "node 1 started epoch 2 at 10, before its lower epoch 1 started at 20");
        // Fed in time order, the lower epoch is the one found late.
        let mut c = Checker::new();
        let found: Vec<Violation> = h.recs.iter().flat_map(|r| c.observe(r)).collect();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].detail, "node 1 started epoch 1 at 20, after its higher epoch 2 started at 10");
    }

    // G13

    /// C is paused in V1 while A and B install V2 without it, fence it and announce `recovered`; `wake`
    /// then appends what C does when it wakes.
    fn zombie(wake: impl FnOnce(&mut H)) -> H {
        let mut h = H::base();
        h.send(A, "1.1.1", Delivery::Agreed).deliver(&[A, B, C], "1.1.1", V1);
        // Sent in V1 while C was paused, and never ordered there: only a zombie would deliver it in V1.
        h.send(B, "2.1.1", Delivery::Agreed);
        h.view(&[A, B], V2, &[A, B], true);
        h.fence_ok(A, C, true).recovered(A, V2, &[C]);
        wake(&mut h);
        h
    }

    #[test]
    fn g13_removed_member_silent_after_its_recovery_is_clean() {
        let h = zombie(|h| {
            h.ev(C, Event::Blocked { reason: BlockReason::NoQuorum });
            h.send(B, "2.1.2", Delivery::Agreed).deliver(&[A, B], "2.1.2", V2);
        });
        assert_clean(&h.recs);
    }

    #[test]
    fn g13_delivery_in_the_same_millisecond_as_the_recovery_is_clean() {
        // Equal stamps prove no order: the delivery may have come first.
        let mut h = zombie(|h| {
            h.deliver(&[C], "2.1.1", V1);
        });
        let n = h.recs.len();
        h.recs[n - 1].ts_ms = h.recs[n - 2].ts_ms;
        assert_clean(&h.recs);
    }

    #[test]
    fn g13_zombie_delivering_in_its_old_view_after_recovery_is_a_violation() {
        let h = zombie(|h| {
            h.deliver(&[C], "2.1.1", V1);
        });
        let vs = assert_only(&h.recs, "G13");
        assert_eq!(
            vs[0].detail,
            "[3,1] delivered msg 2.1.1 in view 1.1 at 160, 10 ms after [1,1] logged `recovered` for it in view 2.1 \
             at 150: a zombie acting in an earlier view"
        );
        // Found whichever record arrives second: C's log before A's, and A's before C's.
        let c_first: Vec<Record> = h
            .recs
            .iter()
            .filter(|r| r.member() == C)
            .chain(h.recs.iter().filter(|r| r.member() != C))
            .cloned()
            .collect();
        assert_eq!(verdict(&observe_in_order(&c_first)), BTreeSet::from(["G13"]));
        assert_eq!(verdict(&observe_in_order(&h.recs)), BTreeSet::from(["G13"]));
    }

    #[test]
    fn g13_zombie_sequencer_delivering_its_own_new_sends_is_a_violation_reported_once() {
        let h = zombie(|h| {
            h.send(C, "3.1.1", Delivery::Agreed).send(C, "3.1.2", Delivery::Agreed);
            h.deliver(&[C], "3.1.1", V1).deliver(&[C], "3.1.2", V1);
        });
        let vs = assert_only(&h.recs, "G13");
        assert_eq!(vs.len(), 1, "{vs:#?}");
        assert!(vs[0].detail.starts_with("[3,1] delivered msg 3.1.1 in view 1.1"), "{}", vs[0].detail);
    }

    #[test]
    fn g13_is_skipped_for_logs_with_independent_clocks() {
        let h = zombie(|h| {
            h.deliver(&[C], "2.1.1", V1);
        });
        assert!(check_all_with(&h.recs, Checker::with_independent_clocks()).is_empty());
    }

    #[test]
    fn g13_a_new_epoch_of_the_recovered_node_may_deliver() {
        let h = zombie(|h| {
            h.start(&[C2]).view(&[A, B, C2], V3, &[A, B, C2], true);
            h.send(A, "1.1.3", Delivery::Agreed).deliver(&[A, B, C2], "1.1.3", V3);
        });
        assert_clean(&h.recs);
    }

    // parse_log, check_all, order independence, cost, robustness

    #[test]
    fn parse_log_round_trips_and_skips_blank_lines() {
        let recs = realistic().recs;
        let text: String = recs.iter().map(|r| format!("{}\n\n", r.to_json_line())).collect();
        assert_eq!(parse_log(&text), Ok(recs));
    }

    #[test]
    fn parse_log_names_the_bad_line() {
        let good = realistic().recs[0].to_json_line();
        let text = format!("{good}\n\n{good}\n{{\"ts_ms\":1,\"node\":1}}\n{good}\n");
        let err = parse_log(&text).expect_err("line 4 is incomplete");
        assert_eq!(err.0, 4);
        assert!(!err.1.is_empty());
    }

    /// A small deterministic generator for the tests (xorshift64*).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// Feeds the records interleaved at random across members, each member's own order kept.
    fn interleaved(records: &[Record], seed: u64) -> Vec<Record> {
        let mut queues: BTreeMap<Member, VecDeque<Record>> = BTreeMap::new();
        for r in records {
            queues.entry(r.member()).or_default().push_back(r.clone());
        }
        let mut rng = Rng(seed | 1);
        let mut out = Vec::new();
        loop {
            let live: Vec<Member> = queues.iter().filter(|(_, q)| !q.is_empty()).map(|(&m, _)| m).collect();
            if live.is_empty() {
                return out;
            }
            let who = live[rng.below(live.len())];
            if let Some(r) = queues.get_mut(&who).and_then(|q| q.pop_front()) {
                out.push(r);
            }
        }
    }

    fn observe_in_order(records: &[Record]) -> Vec<Violation> {
        let mut c = Checker::new();
        let mut out: Vec<Violation> = records.iter().flat_map(|r| c.observe(r)).collect();
        out.extend(c.finish());
        out
    }

    #[test]
    fn verdict_does_not_depend_on_the_interleaving_of_members() {
        let mut histories: Vec<Vec<Record>> = vec![realistic().recs, stateful_merge().recs];
        // A mixed bad history: misordered deliveries, a survivor missing a safe message, an early recovery.
        let mut h = H::base();
        h.send(A, "1.1.1", Delivery::Safe).send(B, "2.1.1", Delivery::Agreed);
        h.deliver(&[A], "1.1.1", V1).deliver(&[A, B], "2.1.1", V1).deliver(&[B], "1.1.1", V1);
        h.view(&[A, B], V2, &[A, B], true).view(&[C], vid(2, 3), &[C], false);
        h.recovered(A, V2, &[C]).fence_ok(A, C, true);
        histories.push(h.records());
        for recs in &histories {
            let reference = check_all(recs);
            let expected = verdict(&observe_in_order(recs));
            assert_eq!(verdict(&reference), expected);
            for seed in 1..60u64 {
                let shuffled = interleaved(recs, seed);
                assert_eq!(check_all(&shuffled), reference, "seed {seed}");
                assert_eq!(verdict(&observe_in_order(&shuffled)), expected, "seed {seed}");
            }
        }
        // A and B also went from V1 to V2 with their deliveries in different orders: G4 as well. C was
        // cut off into its own view, so skipping the safe message is not a G10 violation.
        assert_eq!(verdict(&check_all(&histories[2])), BTreeSet::from(["G4", "G5", "G9"]));
    }

    #[test]
    fn two_hundred_thousand_deliveries_in_five_views_are_checked_clean() {
        let members = [A, B, C, m(4, 1)];
        let all: Vec<Member> = members.to_vec();
        let mut recs = Vec::new();
        let mut ts_ms = 0;
        let mut push = |who: Member, event: Event, recs: &mut Vec<Record>| {
            ts_ms += 1;
            recs.push(Record { ts_ms, node: who.node(), epoch: who.epoch(), event });
        };
        for &w in &members {
            push(w, Event::Start { version: "t".into() }, &mut recs);
        }
        let msgs_per_view = 10_000u64;
        for round in 0..5u64 {
            let view = vid(round + 1, 1);
            for &w in &members {
                let ev = Event::View {
                    view,
                    members: all.clone(),
                    primary: true,
                    joined: vec![],
                    left: vec![],
                    failed: vec![],
                    prev: None,
                };
                push(w, ev, &mut recs);
            }
            for i in 0..msgs_per_view {
                let sender = members[(i % 4) as usize];
                let msg =
                    format!("{}.{}.{}", sender.node().0, sender.epoch().0, round * msgs_per_view + i + 1);
                let dg = digest(msg.as_bytes());
                let delivery = if i % 2 == 0 { Delivery::Safe } else { Delivery::Agreed };
                let send = Event::Send {
                    group: "g".into(),
                    msg: msg.clone(),
                    bytes: 1,
                    delivery,
                    digest: dg.clone(),
                };
                push(sender, send, &mut recs);
                for &w in &members {
                    let ev = Event::Deliver {
                        group: "g".into(),
                        msg: msg.clone(),
                        sender,
                        view,
                        digest: dg.clone(),
                        seq: Some(i + 1),
                        delivery: Some(delivery),
                        held: false,
                    };
                    push(w, ev, &mut recs);
                }
            }
        }
        let mut c = Checker::new();
        for r in &recs {
            assert!(c.observe(r).is_empty());
        }
        assert!(c.finish().is_empty());
        assert_eq!(c.stats().deliveries, 200_000);
    }

    #[test]
    fn arbitrary_record_sequences_never_panic() {
        let mut rng = Rng(0x5eed);
        for _ in 0..200 {
            let mut c = Checker::new();
            for _ in 0..300 {
                let who = m(rng.below(4) as u32, rng.below(3) as u64);
                let other = m(rng.below(4) as u32, rng.below(3) as u64);
                let view = vid(rng.below(5) as u64, rng.below(4) as u32);
                let members: Vec<Member> =
                    (0..rng.below(4)).map(|_| m(rng.below(4) as u32, rng.below(3) as u64)).collect();
                let msg = match rng.below(3) {
                    0 => format!("{}.{}.{}", rng.below(4), rng.below(3), rng.below(5)),
                    1 => "x.y".to_string(),
                    _ => format!("{}.{}.{}.9", rng.below(4), rng.below(3), rng.below(5)),
                };
                let delivery = if rng.below(2) == 0 { Delivery::Safe } else { Delivery::Agreed };
                let event = match rng.below(12) {
                    0 => Event::Start { version: "v".into() },
                    1 | 2 => Event::View {
                        view,
                        members,
                        primary: rng.below(2) == 0,
                        joined: vec![],
                        left: vec![],
                        failed: vec![],
                        prev: if rng.below(2) == 0 { Some(vid(rng.below(5) as u64, 1)) } else { None },
                    },
                    3 => Event::Send {
                        group: "g".into(),
                        msg,
                        bytes: 1,
                        delivery,
                        digest: format!("{}", rng.below(2)),
                    },
                    4..=6 => Event::Deliver {
                        group: if rng.below(2) == 0 { "g".into() } else { "h".into() },
                        msg,
                        sender: other,
                        view,
                        digest: format!("{}", rng.below(2)),
                        seq: if rng.below(2) == 0 { Some(rng.below(4) as u64) } else { None },
                        delivery: if rng.below(2) == 0 { Some(delivery) } else { None },
                        held: rng.below(2) == 0,
                    },
                    7 => Event::GroupView { group: "g".into(), view, members },
                    8 => Event::StateTransfer {
                        group: "g".into(),
                        role: if rng.below(2) == 0 { TransferRole::Provider } else { TransferRole::Receiver },
                        peer: other,
                        bytes: rng.below(3) as u64,
                        ok: rng.below(2) == 0,
                        point: None,
                    },
                    9 => Event::FenceResult {
                        target: other,
                        ok: rng.below(2) == 0,
                        method: FenceMethod::Ack,
                        detail: String::new(),
                    },
                    10 => Event::Recovered { view, failed: vec![other] },
                    _ => Event::Stop { reason: "r".into() },
                };
                let r = Record { ts_ms: rng.below(1000) as u64, node: who.node(), epoch: who.epoch(), event };
                let _ = c.observe(&r);
                if rng.below(50) == 0 {
                    c.member_stopped(other, rng.below(1000) as u64);
                }
            }
            let _ = c.finish();
            let _ = c.stats();
            let _ = c.removed_members();
        }
    }

    #[test]
    fn violations_display_as_one_line() {
        let v = Violation { guarantee: "G7", detail: "x".into() };
        assert_eq!(v.to_string(), "G7: x");
    }
}
