//! MembershipActor: owns the core's state machine ([`cohort::Node`]) and its timer, turns messages into
//! core inputs, and carries out the core's outputs in order.
//!
//! It decides nothing: views, primary components, merge admission and fencing targets all come out of
//! the core. Its one rule of its own is ordering: a [`Output::Persist`] is awaited (the mailbox is held
//! with `ctx.wait`) before any later output of the same batch is carried out, so an epoch or a registry
//! is on disk before anything is sent under it (G12).

use crate::messages::*;
use crate::metrics::Metrics;
use actix::prelude::*;
use cohort::inquiry::EpochInquiry;
use cohort::node::{NewEpochReason, Output, SendError, Status};
use cohort::tripwire::Tripwire;
use cohort::{Config, Durable, Event, Member, MsgId, Node, NodeId, Notification, Record};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where the membership's outputs go.
#[derive(Clone)]
pub struct MembershipLinks {
    /// Datagrams to the transport.
    pub send_frame: Recipient<SendFrame>,
    /// Durable state to the epoch registry (awaited).
    pub persist: Recipient<PersistDurable>,
    /// Event-log records.
    pub record: Recipient<AppendRecord>,
    /// Application notifications to the client API.
    pub app: Recipient<AppNotified>,
    /// Watchdog notice to the client API.
    pub self_fenced: Recipient<SelfFenced>,
    /// Fence requests to the fencing actor.
    pub fence: Recipient<Fence>,
    /// New-epoch requests to the supervisor.
    pub new_epoch: Recipient<NewEpochRequested>,
    /// Fail-stop to the supervisor.
    pub fatal: Recipient<FatalError>,
    /// Told once a clean leave completed.
    pub left: Option<Recipient<LeftCluster>>,
}

/// The clean leave completed.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct LeftCluster;

/// Replace the core with a new incarnation (new epoch, empty state).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct ReplaceCore {
    /// The persisted durable state of the new epoch.
    pub durable: Durable,
    /// Why.
    pub reason: NewEpochReason,
}

/// Write a `stop` record (shutdown without a completed leave).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct RecordStop {
    /// Why.
    pub reason: String,
}

/// A millisecond clock that never goes backwards: wall-clock time at start plus monotonic elapsed time.
/// The core uses it both for timers and for the `ts_ms` of event-log records.
#[derive(Clone, Copy, Debug)]
pub struct AgentClock {
    start: tokio::time::Instant,
    start_wall_ns: u128,
}

impl AgentClock {
    /// A clock anchored now. It follows tokio's clock, so tests that pause and advance time drive the
    /// core's timers too.
    pub fn new() -> AgentClock {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        AgentClock { start: tokio::time::Instant::now(), start_wall_ns: wall }
    }
    /// Milliseconds. Rounded once, from nanoseconds: rounding the wall-clock anchor and the elapsed
    /// time separately would put agents on one machine up to a millisecond apart, so a record caused by
    /// another agent's record could carry an earlier timestamp.
    pub fn now_ms(&self) -> u64 {
        ((self.start_wall_ns + self.start.elapsed().as_nanos()) / 1_000_000) as u64
    }
}

impl Default for AgentClock {
    fn default() -> Self {
        Self::new()
    }
}

/// At most this many sends whose latency is still to be measured (those in flight).
const MAX_TRACKED_SENDS: usize = 65_536;

/// When each of this node's messages in flight was sent, for the delivery latency metric. Bounded by
/// what is in flight: own messages are delivered in the order they were sent, so one sent before a
/// delivered one and not delivered yet never will be (a view change dropped it) and is forgotten.
#[derive(Default)]
struct SendClock {
    times: BTreeMap<MsgId, Instant>,
    order: VecDeque<MsgId>,
}

impl SendClock {
    fn sent(&mut self, id: MsgId, at: Instant) {
        if self.order.len() >= MAX_TRACKED_SENDS {
            if let Some(old) = self.order.pop_front() {
                self.times.remove(&old);
            }
        }
        self.times.insert(id, at);
        self.order.push_back(id);
    }

    /// When `id` was sent, if this clock saw it; forgets it and every send before it.
    fn delivered(&mut self, id: &MsgId) -> Option<Instant> {
        let at = self.times.remove(id)?;
        while let Some(f) = self.order.pop_front() {
            self.times.remove(&f);
            if f == *id {
                break;
            }
        }
        Some(at)
    }
}

/// The actor. See the module documentation.
pub struct MembershipActor {
    cfg: Arc<Config>,
    node_id: NodeId,
    node: Node,
    links: MembershipLinks,
    metrics: Arc<Metrics>,
    clock: AgentClock,
    send_clock: SendClock,
    left_told: bool,
    flush_scheduled: bool,
    last_flush: Instant,
    /// The member-local safety invariants over every record this node emits (fail-stop on a break).
    tripwire: Tripwire,
    /// A persist is in flight: outputs produced meanwhile wait here, so they are carried out after it
    /// and in the order the core produced them (two waits in flight would not finish in order).
    persisting: bool,
    backlog: Vec<Output>,
    /// Between a core's `NewEpoch` and its replacement: see [`Successor`].
    successor: Successor,
    /// The timer that ticks the core (restarted when a reload changes the timing).
    ticker: Option<SpawnHandle>,
}

/// A running core asked for a new epoch (`Output::NewEpoch`). The old core is done: it gets no more
/// input. The next epoch is first claimed at a majority of the cluster ([`EpochInquiry::claim_only`]),
/// so a data directory wiped later can never bring it back (G12); then the supervisor persists it and
/// replaces the core. A node cut off from every majority waits here until it can reach one: its new
/// incarnation could not join a primary view before that anyway.
enum Successor {
    None,
    Claiming { q: Box<EpochInquiry>, reason: NewEpochReason, next_note: Instant },
    Awaiting { epoch: cohort::Epoch },
}

impl MembershipActor {
    /// A membership actor for `node_id` under the (already persisted) durable state. The `start` record
    /// is emitted when the actor starts.
    /// Says why this incarnation's epoch is what it is (shown by `status`).
    pub fn set_origin(&mut self, why: String) {
        self.node.set_origin(why);
    }

    pub fn new(
        cfg: Arc<Config>,
        node_id: NodeId,
        durable: Durable,
        links: MembershipLinks,
        metrics: Arc<Metrics>,
        clock: AgentClock,
    ) -> (MembershipActor, Vec<Output>) {
        let mut out = Vec::new();
        let mut node = Node::new(cfg.clone(), node_id, durable, clock.now_ms(), &mut out);
        node.set_deferred_flush(true);
        let node_member = node.member();
        let actor = MembershipActor {
            cfg,
            node_id,
            node,
            links,
            metrics,
            clock,
            send_clock: SendClock::default(),
            left_told: false,
            flush_scheduled: false,
            last_flush: Instant::now(),
            tripwire: Tripwire::new(node_member),
            persisting: false,
            backlog: Vec::new(),
            successor: Successor::None,
            ticker: None,
        };
        (actor, out)
    }

    /// The member this actor runs.
    pub fn member(&self) -> Member {
        self.node.member()
    }

    fn execute(&mut self, outs: Vec<Output>, ctx: &mut Context<Self>) {
        if self.persisting {
            self.backlog.extend(outs);
            return;
        }
        let mut iter = outs.into_iter();
        while let Some(o) = iter.next() {
            match o {
                Output::Persist(d) => {
                    let rest: Vec<Output> = iter.collect();
                    self.persisting = true;
                    let fut = self.links.persist.send(PersistDurable(d));
                    ctx.wait(fut.into_actor(self).map(move |res, act, ctx| {
                        act.persisting = false;
                        match res {
                            Ok(Ok(())) => {
                                let mut rest = rest;
                                rest.append(&mut act.backlog);
                                act.execute(rest, ctx)
                            }
                            Ok(Err(e)) => act.fatal(format!("cannot persist durable state: {e}")),
                            Err(e) => act.fatal(format!("epoch registry unavailable: {e}")),
                        }
                    }));
                    return;
                }
                Output::Send { to, bytes } => {
                    let epoch = self.node.member().epoch();
                    self.links.send_frame.do_send(SendFrame { to, bytes, epoch })
                }
                Output::Record(r) => {
                    self.count(&r);
                    let broken = self.tripwire.observe(&r);
                    self.links.record.do_send(AppendRecord(r));
                    if let Some(what) = broken {
                        // Fail-stop: the record is logged (the audit trail shows it), nothing after it
                        // is carried out.
                        self.fatal(format!("safety invariant broken: {what}"));
                        return;
                    }
                }
                Output::Notify(n) => {
                    if let Notification::Deliver { msg, .. } = &n {
                        if msg.sender == self.node.member() {
                            if let Some(t) = self.send_clock.delivered(msg) {
                                self.metrics.observe_latency_us(t.elapsed().as_micros() as u64);
                            }
                        }
                    }
                    self.links.app.do_send(AppNotified(n));
                }
                Output::Fence { target, reason } => self.links.fence.do_send(Fence { target, reason }),
                Output::SelfFence { reason } => self.links.self_fenced.do_send(SelfFenced { reason }),
                Output::NewEpoch { min_epoch, reason } => self.start_claim(min_epoch, reason, ctx),
            }
        }
        if self.node.has_left() && !self.left_told {
            self.left_told = true;
            if let Some(l) = &self.links.left {
                l.do_send(LeftCluster);
            }
        }
    }

    /// True between a `NewEpoch` and the new core: the old core gets no input.
    fn replacing(&self) -> bool {
        !matches!(self.successor, Successor::None)
    }

    fn start_claim(&mut self, min_epoch: cohort::Epoch, reason: NewEpochReason, ctx: &mut Context<Self>) {
        if self.replacing() {
            return;
        }
        let now = self.clock.now_ms();
        let nonce = SystemTime::now().duration_since(UNIX_EPOCH).map_or(now, |d| d.as_nanos() as u64) | 1;
        let durable = self.node.durable().clone();
        let q = EpochInquiry::claim_only(self.cfg.clone(), self.node_id, durable, min_epoch, nonce, now);
        tracing::info!(
            member = %self.node.member(),
            reason = ?reason,
            "this incarnation ends; claiming the next epoch at a majority of the cluster before it starts"
        );
        self.successor = Successor::Claiming {
            q: Box::new(q),
            reason,
            next_note: Instant::now() + Duration::from_secs(5),
        };
        ctx.notify(ClaimTick);
    }

    /// Drives the claim of the next epoch: its timer (`datagram` None) or a datagram for it.
    fn drive_claim(&mut self, datagram: Option<&[u8]>, ctx: &mut Context<Self>) {
        let now = self.clock.now_ms();
        let mut out = Vec::new();
        let Successor::Claiming { q, reason, next_note } = &mut self.successor else { return };
        let decided = match datagram {
            Some(d) => q.receive(now, d, &mut out),
            None => q.tick(now, &mut out),
        };
        let reason = *reason;
        if decided.is_none() && Instant::now() >= *next_note {
            *next_note = Instant::now() + Duration::from_secs(10);
            tracing::warn!(waiting_for = %q.waiting_for(), "the next epoch of this node is not recorded yet");
        }
        let waiting = q.waiting_for();
        self.node.set_origin(format!("this incarnation ended; its successor waits for {waiting}"));
        if let Some(epoch) = decided {
            tracing::info!(epoch = epoch.0, "a majority of the cluster recorded the next epoch");
            self.successor = Successor::Awaiting { epoch };
            self.links.new_epoch.do_send(NewEpochRequested { min_epoch: epoch, reason });
        }
        self.execute(out, ctx);
    }

    fn fatal(&self, detail: String) {
        tracing::error!("{detail}");
        self.links.fatal.do_send(FatalError { detail });
    }

    fn count(&self, r: &Record) {
        let m = &self.metrics;
        match &r.event {
            Event::View { failed, .. } => {
                m.views_installed.fetch_add(1, Relaxed);
                m.suspicions.fetch_add(failed.len() as u64, Relaxed);
            }
            Event::StatefulMerge { .. } => {
                m.stateful_merges.fetch_add(1, Relaxed);
            }
            Event::FenceRequest { .. } => {
                m.fence_requests.fetch_add(1, Relaxed);
            }
            Event::FenceResult { ok, .. } => {
                if *ok {
                    m.fences_ok.fetch_add(1, Relaxed);
                } else {
                    m.fences_failed.fetch_add(1, Relaxed);
                }
            }
            Event::Send { .. } => {
                m.msgs_sent.fetch_add(1, Relaxed);
            }
            Event::Deliver { .. } => {
                m.msgs_delivered.fetch_add(1, Relaxed);
            }
            _ => {}
        }
    }

    fn tick_interval(&self) -> Duration {
        Duration::from_millis(self.cfg.retransmit_interval_ms.min(self.cfg.heartbeat_interval_ms).max(1))
    }
}

impl Actor for MembershipActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Mailbox capacity matters only for `send`; the core bounds its own queues.
        ctx.set_mailbox_capacity(64 * 1024);
        self.start_ticker(ctx);
        if let Some(after) = crate::supervisor::injected_panic_after() {
            ctx.run_later(after, |_, _| panic!("injected panic (COHORT_TEST_INJECT_PANIC_MS)"));
        }
    }
}

impl MembershipActor {
    /// (Re)starts the timer that ticks the core at the interval of the current timing.
    fn start_ticker(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.ticker.take() {
            ctx.cancel_future(h);
        }
        self.ticker = Some(ctx.run_interval(self.tick_interval(), |act, ctx| {
            if act.replacing() {
                act.drive_claim(None, ctx);
                return;
            }
            let mut out = Vec::new();
            act.node.tick(act.clock.now_ms(), &mut out);
            act.execute(out, ctx);
        }));
    }
}

impl Handler<ApplyTiming> for MembershipActor {
    type Result = Result<(), cohort::ConfigError>;
    fn handle(&mut self, msg: ApplyTiming, ctx: &mut Context<Self>) -> Self::Result {
        // The core checks the step against what it runs; the configuration kept for later
        // incarnations (and the inquiry of the next epoch) follows only once the core took it.
        let cfg = self.cfg.with_timing(msg.timing)?;
        self.node.set_timing(msg.timing)?;
        self.cfg = Arc::new(cfg);
        self.start_ticker(ctx);
        Ok(())
    }
}

/// Hands the outputs produced by [`MembershipActor::new`] (the `start` record) to the actor.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ExecuteOutputs(pub Vec<Output>);

impl Handler<ExecuteOutputs> for MembershipActor {
    type Result = ();
    fn handle(&mut self, msg: ExecuteOutputs, ctx: &mut Context<Self>) {
        self.execute(msg.0, ctx);
    }
}

/// The claim of the next epoch is due (see [`Successor`]).
#[derive(Message)]
#[rtype(result = "()")]
struct ClaimTick;

impl Handler<ClaimTick> for MembershipActor {
    type Result = ();
    fn handle(&mut self, _msg: ClaimTick, ctx: &mut Context<Self>) {
        self.drive_claim(None, ctx);
    }
}

impl Handler<FrameReceived> for MembershipActor {
    type Result = ();
    fn handle(&mut self, msg: FrameReceived, ctx: &mut Context<Self>) {
        if self.replacing() {
            self.drive_claim(Some(&msg.bytes), ctx);
            return;
        }
        let mut out = Vec::new();
        self.node.receive(self.clock.now_ms(), &msg.bytes, &mut out);
        self.execute(out, ctx);
    }
}

impl Handler<JoinGroup> for MembershipActor {
    type Result = ();
    fn handle(&mut self, msg: JoinGroup, ctx: &mut Context<Self>) {
        if self.replacing() {
            return;
        }
        let mut out = Vec::new();
        self.node.join_group(self.clock.now_ms(), &msg.group, &mut out);
        self.execute(out, ctx);
    }
}

impl Handler<LeaveGroup> for MembershipActor {
    type Result = ();
    fn handle(&mut self, msg: LeaveGroup, ctx: &mut Context<Self>) {
        if self.replacing() {
            return;
        }
        let mut out = Vec::new();
        self.node.leave_group(self.clock.now_ms(), &msg.group, &mut out);
        self.execute(out, ctx);
    }
}

impl Handler<Multicast> for MembershipActor {
    type Result = MessageResult<Multicast>;
    fn handle(&mut self, msg: Multicast, ctx: &mut Context<Self>) -> MessageResult<Multicast> {
        if self.replacing() {
            return MessageResult(Err(SendError::Stopped));
        }
        let mut out = Vec::new();
        let r = self.node.multicast(self.clock.now_ms(), &msg.group, msg.payload, msg.delivery, &mut out);
        if !self.flush_scheduled {
            // Multicasts are queued in the core and sent together. At low rates they go out as soon as
            // the mailbox's queued messages are handled (a message to self goes to its back), which
            // keeps latency low; under load the flush waits once for a short timer, which gathers many
            // messages into a few datagrams and keeps throughput high (see `FlushQueued`).
            self.flush_scheduled = true;
            ctx.notify(FlushQueued { deferred: false });
        }
        match &r {
            Ok(id) => self.send_clock.sent(*id, Instant::now()),
            Err(SendError::QueueFull) => {
                self.metrics.flow_control_waits.fetch_add(1, Relaxed);
            }
            Err(_) => {}
        }
        self.execute(out, ctx);
        MessageResult(r)
    }
}

/// Sends what multicasts queued in the core (see the `Multicast` handler).
#[derive(Message)]
#[rtype(result = "()")]
struct FlushQueued {
    deferred: bool,
}

impl Handler<FlushQueued> for MembershipActor {
    type Result = ();
    fn handle(&mut self, msg: FlushQueued, ctx: &mut Context<Self>) {
        // Under load (the last flush was moments ago) wait once for a batch; otherwise send now.
        let since = self.last_flush.elapsed();
        if !msg.deferred && since < Duration::from_micros(50) {
            ctx.notify_later(FlushQueued { deferred: true }, Duration::from_micros(500));
            return;
        }
        self.flush_scheduled = false;
        self.last_flush = Instant::now();
        if self.replacing() {
            return;
        }
        let mut out = Vec::new();
        self.node.flush(self.clock.now_ms(), &mut out);
        self.execute(out, ctx);
    }
}

impl Handler<ProvideState> for MembershipActor {
    type Result = ();
    fn handle(&mut self, msg: ProvideState, ctx: &mut Context<Self>) {
        if self.replacing() {
            return;
        }
        let mut out = Vec::new();
        self.node.provide_state(self.clock.now_ms(), &msg.group, msg.joiner, msg.token, msg.state, &mut out);
        self.execute(out, ctx);
    }
}

impl Handler<FenceCompleted> for MembershipActor {
    type Result = ();
    fn handle(&mut self, msg: FenceCompleted, ctx: &mut Context<Self>) {
        if self.replacing() {
            return;
        }
        let mut out = Vec::new();
        self.node.fence_result(self.clock.now_ms(), msg.target, msg.ok, &msg.detail, &mut out);
        self.execute(out, ctx);
    }
}

impl Handler<AckFence> for MembershipActor {
    type Result = ();
    fn handle(&mut self, msg: AckFence, ctx: &mut Context<Self>) {
        if self.replacing() {
            return;
        }
        let mut out = Vec::new();
        self.node.fence_ack(self.clock.now_ms(), msg.node, &mut out);
        self.execute(out, ctx);
    }
}

impl Handler<LeaveCluster> for MembershipActor {
    type Result = ();
    fn handle(&mut self, _msg: LeaveCluster, ctx: &mut Context<Self>) {
        if self.replacing() {
            // The old incarnation was already done (removed, reset or stale) and its successor never
            // ran: nothing is left to leave.
            if let Some(l) = &self.links.left {
                l.do_send(LeftCluster);
            }
            return;
        }
        let mut out = Vec::new();
        self.node.leave(self.clock.now_ms(), &mut out);
        self.execute(out, ctx);
    }
}

impl Handler<GetStatus> for MembershipActor {
    type Result = MessageResult<GetStatus>;
    fn handle(&mut self, _msg: GetStatus, _ctx: &mut Context<Self>) -> MessageResult<GetStatus> {
        let s: Status = self.node.status();
        MessageResult(s)
    }
}

impl Handler<ReplaceCore> for MembershipActor {
    type Result = ();
    fn handle(&mut self, msg: ReplaceCore, ctx: &mut Context<Self>) {
        if let Successor::Awaiting { epoch } = self.successor {
            if msg.durable.epoch != epoch {
                self.fatal(format!(
                    "the data directory opened epoch {} but the cluster recorded epoch {} for this node",
                    msg.durable.epoch.0, epoch.0
                ));
                return;
            }
        }
        self.successor = Successor::None;
        tracing::warn!(epoch = msg.durable.epoch.0, reason = ?msg.reason, "starting a new incarnation");
        let mut out = Vec::new();
        let before = self.node.member();
        self.node = Node::new(self.cfg.clone(), self.node_id, msg.durable, self.clock.now_ms(), &mut out);
        self.node.set_origin(match msg.reason {
            NewEpochReason::MovePast => format!(
                "epoch {} was below an epoch the cluster had seen for this node (a wiped or restored data \
                 directory): moved past it",
                before.epoch().0
            ),
            NewEpochReason::Restart => {
                format!("epoch {} was refused as a stateful merge (policy restart)", before.epoch().0)
            }
            NewEpochReason::Reset => format!(
                "epoch {} reset in place (stateful merge under policy reset, or a watchdog self-fence)",
                before.epoch().0
            ),
        });
        self.node.set_deferred_flush(true);
        self.tripwire = Tripwire::new(self.node.member());
        self.send_clock = SendClock::default();
        self.left_told = false;
        self.execute(out, ctx);
    }
}

impl Handler<RecordStop> for MembershipActor {
    type Result = ();
    fn handle(&mut self, msg: RecordStop, _ctx: &mut Context<Self>) {
        if self.node.has_left() {
            return;
        }
        let m = self.node.member();
        let r = Record {
            ts_ms: self.clock.now_ms(),
            node: m.node(),
            epoch: m.epoch(),
            event: Event::Stop { reason: msg.reason },
        };
        self.links.record.do_send(AppendRecord(r));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort::Epoch;

    fn id(seq: u64) -> MsgId {
        MsgId { sender: Member(NodeId(1), Epoch(1)), n: seq }
    }

    #[test]
    fn the_send_clock_holds_only_the_sends_in_flight() {
        let mut c = SendClock::default();
        let t0 = Instant::now();
        for s in 1..=10_000 {
            c.sent(id(s), t0);
            assert_eq!(c.delivered(&id(s)), Some(t0));
        }
        assert!(c.order.is_empty() && c.times.is_empty(), "delivered sends are forgotten");
        // 11 and 12 were dropped by a view change; 13 is delivered: all three are gone, 14 stays.
        for s in 11..=14 {
            c.sent(id(s), t0);
        }
        assert_eq!(c.delivered(&id(13)), Some(t0));
        assert_eq!(c.order.iter().copied().collect::<Vec<_>>(), vec![id(14)]);
        assert_eq!(c.times.len(), 1);
        assert_eq!(c.delivered(&id(12)), None, "a forgotten send has no latency");
        assert_eq!(c.order.len(), 1, "and a delivery the clock does not know forgets nothing");
        // Never delivered at all: the bound holds.
        for s in 100..100 + 2 * MAX_TRACKED_SENDS as u64 {
            c.sent(id(s), t0);
        }
        assert_eq!(c.order.len(), MAX_TRACKED_SENDS);
        assert_eq!(c.times.len(), MAX_TRACKED_SENDS);
    }
}
