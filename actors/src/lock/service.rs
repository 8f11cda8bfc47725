//! The lock service on one node: glue between the pure [`LockTable`] and cohort's client library.
//!
//! [`spawn`] starts a task that owns one [`Client`] connection to the node's agent and joins one process
//! group (`locks` by default). Every operation is an agreed multicast to that group, applied to the table
//! when cohort delivers it, so every member applies the same operations in the same order and holds the
//! same table. The application talks to the task through a [`LockHandle`] and hears about grants it lost
//! through [`Notice`]s.
//!
//! # Rules, and the cohort event each one rests on
//! - **Joining**: a new session joins the group and takes the table from cohort's state transfer
//!   (`ApplyState`, G11), or starts empty when it is the group's first member; then it multicasts
//!   [`Op::Hello`], which releases anything an older session of the same member still held.
//! - **Failed members**: their holds are released only when cohort says `Recovered` for them, i.e. after
//!   they were fenced (G9). The service then multicasts [`Op::Expire`], so every replica releases them at
//!   the same point of the total order. A view change alone never releases anything. A member whose
//!   node is back in a primary view under a higher epoch is expired too: its agent is gone, and every
//!   session connected to it reported its holds lost when the connection dropped.
//! - **Reconciling**: after every delivery, primary view and unblock, the service multicasts what the
//!   table lacks from its point of view (releases of its own holds nobody relies on, cancels of
//!   abandoned requests, expiry of recovered or superseded members), once while it is lacking, so a
//!   notification seen by one member only, or a multicast refused during a block, never leaves a lock
//!   held forever.
//! - **Clean leave**: [`LockHandle::shutdown`] multicasts [`Op::Leave`] (every hold released at once),
//!   waits for its delivery and leaves the group.
//! - **Losing the right to act**: when this node blocks for lack of quorum (`Blocked{no_quorum}` or
//!   `stateful_merge_wait`), is removed (`RemovedSelf`), self-fences (`SelfFenced`) or loses its agent,
//!   every local hold is reported lost ([`Notice::Lost`]) at once and waiting requests fail. A member that
//!   is only blocked and comes back unblocked releases the holds it reported lost. A removed or
//!   self-fenced member **throws its table away** (it may be a stateful merge: G8) and joins again only
//!   as its node's next incarnation, taking the table by state transfer. Blocks for `fencing` or
//!   `state_transfer` keep holds: the view is still primary, and only a primary view orders operations.
//! - **Timeouts**: the requester's own timer; it multicasts [`Op::Cancel`]. A grant that arrives for a
//!   request nobody waits for any more is cancelled at once.
//!
//! **Deliberately absent:** lock conversion (shared to exclusive), lock value blocks and deadlock
//! detection; persistence (the table lives in the group, and a whole-cluster restart starts empty).

use super::table::{ClientId, Effect, LockTable, Mode, Op, Owner, ReleaseCause};
use crate::client::{Client, ClientError, ClientEvent};
use cohort::{Delivery, Epoch, Member, NodeId, ViewId};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;

/// The process group of the lock service unless configured otherwise.
pub const DEFAULT_GROUP: &str = "locks";

/// Commands queued for the service task at most.
const COMMAND_QUEUE: usize = 1024;
/// Notices buffered for slow subscribers (older ones are dropped for them, see [`broadcast`]).
const NOTICE_QUEUE: usize = 4096;
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// How long connecting and joining may take before the attempt is abandoned and made again.
const CONNECT_DEADLINE: Duration = Duration::from_secs(2);
/// How long a clean shutdown waits for its `Leave` to be delivered.
const LEAVE_DEADLINE: Duration = Duration::from_secs(3);

/// Why a lock operation failed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum LockError {
    /// The request waited `timeout` without being granted; it was withdrawn.
    #[error("timed out waiting for the lock")]
    Timeout,
    /// The service cannot act now (not connected, joining, blocked, removed); try again later.
    #[error("the lock service is not active: {0}")]
    NotActive(String),
    /// The table refused the request (a duplicate, a bad name, a bound).
    #[error("refused: {0}")]
    Refused(String),
    /// The owner does not hold the lock.
    #[error("not held by this owner")]
    NotHeld,
    /// The request was lost with the node's right to act (block, removal, lost agent).
    #[error("lost: {0}")]
    Lost(String),
    /// The service task has stopped.
    #[error("the lock service has stopped")]
    Stopped,
}

/// Where the service is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceState {
    /// No connection to the agent (it is starting, restarting, or gone).
    Connecting,
    /// Connected as `member`, joining the group or waiting for the state transfer.
    Joining,
    /// In the group with the table; operations are served.
    Active,
    /// In the group, blocked by cohort for `reason`; local holds were reported lost when the reason
    /// takes the right to act away.
    Blocked(String),
    /// This member was removed or self-fenced: its table is gone; waiting for the node's next
    /// incarnation.
    Removed(String),
    /// Stopped after a clean leave.
    Stopped,
}

impl fmt::Display for ServiceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceState::Connecting => f.write_str("connecting"),
            ServiceState::Joining => f.write_str("joining"),
            ServiceState::Active => f.write_str("active"),
            ServiceState::Blocked(r) => write!(f, "blocked ({r})"),
            ServiceState::Removed(r) => write!(f, "removed ({r})"),
            ServiceState::Stopped => f.write_str("stopped"),
        }
    }
}

/// What the service tells its subscribers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// The service state changed.
    State {
        /// The new state.
        state: ServiceState,
        /// This node's member, when known.
        member: Option<Member>,
    },
    /// A local hold must no longer be relied on.
    Lost {
        /// The lock.
        lock: String,
        /// The local owner name.
        owner: String,
        /// Why (the cohort event).
        reason: String,
    },
    /// An operation was applied in the total order (every replica applies the same ones).
    Applied {
        /// The operation.
        op: Op,
        /// What it changed.
        effects: Vec<Effect>,
    },
    /// The table was replaced by a state transfer from `provider`.
    StateApplied {
        /// Who provided it.
        provider: Member,
        /// Locks in the received table.
        locks: usize,
    },
    /// cohort announced recovery of these failed members.
    Recovered {
        /// The members.
        failed: Vec<Member>,
    },
    /// A view was installed.
    View {
        /// The view id.
        id: ViewId,
        /// Its members.
        members: Vec<Member>,
        /// Whether it is primary.
        primary: bool,
    },
}

/// A granted lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The lock.
    pub lock: String,
    /// The local owner name.
    pub owner: String,
    /// The mode.
    pub mode: Mode,
    /// The member that holds it on the owner's behalf.
    pub member: Member,
}

/// A copy of the service's state.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The state.
    pub state: ServiceState,
    /// This session, when joined.
    pub client: Option<ClientId>,
    /// The table as this member has it (empty unless joined).
    pub table: LockTable,
    /// The last view seen: (id, members, primary).
    pub view: Option<(ViewId, Vec<Member>, bool)>,
}

/// Configuration of one service.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// The agent's client socket.
    pub socket: PathBuf,
    /// The process group.
    pub group: String,
    /// The name the service gives the agent (shown in its log).
    pub client_name: String,
}

impl ServiceConfig {
    /// The default group on the agent behind `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> ServiceConfig {
        ServiceConfig {
            socket: socket.into(),
            group: DEFAULT_GROUP.into(),
            client_name: "cohort-lock".into(),
        }
    }
}

enum Command {
    Acquire {
        lock: String,
        owner: String,
        mode: Mode,
        timeout: Duration,
        reply: oneshot::Sender<Result<Grant, LockError>>,
    },
    Release {
        lock: String,
        owner: String,
        reply: oneshot::Sender<Result<(), LockError>>,
    },
    Snapshot {
        reply: oneshot::Sender<Snapshot>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// The application's handle on a running service. Cheap to clone; every clone talks to the same task.
#[derive(Clone)]
pub struct LockHandle {
    tx: mpsc::Sender<Command>,
    notices: broadcast::Sender<Notice>,
}

impl LockHandle {
    /// Waits up to `timeout` for `lock` in `mode` on behalf of `owner` (a name local to this node).
    pub async fn acquire(
        &self,
        lock: &str,
        owner: &str,
        mode: Mode,
        timeout: Duration,
    ) -> Result<Grant, LockError> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Acquire { lock: lock.into(), owner: owner.into(), mode, timeout, reply };
        self.tx.send(cmd).await.map_err(|_| LockError::Stopped)?;
        rx.await.map_err(|_| LockError::Stopped)?
    }

    /// Releases `lock` held by `owner`; returns once the release was applied in the total order.
    pub async fn release(&self, lock: &str, owner: &str) -> Result<(), LockError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Release { lock: lock.into(), owner: owner.into(), reply })
            .await
            .map_err(|_| LockError::Stopped)?;
        rx.await.map_err(|_| LockError::Stopped)?
    }

    /// The service's state and its copy of the table.
    pub async fn snapshot(&self) -> Result<Snapshot, LockError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Snapshot { reply }).await.map_err(|_| LockError::Stopped)?;
        rx.await.map_err(|_| LockError::Stopped)
    }

    /// Leaves cleanly: every hold of this session is released at once, then the service stops.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown { reply }).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Subscribes to notices from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }
}

/// Starts the service task on the current tokio runtime and returns its handle.
pub fn spawn(cfg: ServiceConfig) -> (LockHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let (notices, _) = broadcast::channel(NOTICE_QUEUE);
    let svc = Service::new(cfg, notices.clone());
    let task = tokio::spawn(svc.run(rx));
    (LockHandle { tx, notices }, task)
}

/// What a multicast was for, to answer its `SendFailed`.
enum Purpose {
    Acquire {
        owner: String,
        req: u64,
    },
    Release {
        lock: String,
        owner: String,
    },
    /// A [`Service::reconcile`] step: sent again while still wanted if this send fails.
    Reconcile(Op),
    Other,
}

struct Pending {
    lock: String,
    mode: Mode,
    deadline: Instant,
    reply: oneshot::Sender<Result<Grant, LockError>>,
}

struct Service {
    cfg: ServiceConfig,
    notices: broadcast::Sender<Notice>,
    state: ServiceState,
    /// The node's current member as far as we know.
    member: Option<Member>,
    /// This session, once joined.
    me: Option<ClientId>,
    /// Members of this node known to be removed: never joined again under them.
    removed: BTreeSet<Member>,
    table: LockTable,
    joined: bool,
    have_state: bool,
    blocked: BTreeSet<String>,
    view: Option<(ViewId, Vec<Member>, bool)>,
    next_req: u64,
    /// Acquires waiting for their grant, by (owner, req).
    pending: BTreeMap<(String, u64), Pending>,
    /// Releases waiting for their delivery, by (lock, owner).
    releasing: BTreeMap<(String, String), oneshot::Sender<Result<(), LockError>>>,
    /// Holds granted to local owners: (lock, owner) -> req.
    holds: BTreeMap<(String, String), u64>,
    /// Members cohort announced `recovered` to this session.
    recovered_seen: BTreeSet<Member>,
    /// Reconciling operations sent and still wanted (see [`Service::reconcile`]).
    reconciling: BTreeSet<Op>,
    /// Unanswered multicasts by request number.
    sends: BTreeMap<u64, Purpose>,
    backoff: Duration,
    /// When the next connection attempt is due. A fixed instant, not a fresh sleep per loop turn: commands
    /// arriving faster than the backoff (a status poll) must not postpone the reconnection for ever.
    retry_at: Instant,
    leaving: Option<oneshot::Sender<()>>,
}

impl Service {
    fn new(cfg: ServiceConfig, notices: broadcast::Sender<Notice>) -> Service {
        Service {
            cfg,
            notices,
            state: ServiceState::Connecting,
            member: None,
            me: None,
            removed: BTreeSet::new(),
            table: LockTable::new(),
            joined: false,
            have_state: false,
            blocked: BTreeSet::new(),
            view: None,
            next_req: 1,
            pending: BTreeMap::new(),
            releasing: BTreeMap::new(),
            holds: BTreeMap::new(),
            recovered_seen: BTreeSet::new(),
            reconciling: BTreeSet::new(),
            sends: BTreeMap::new(),
            backoff: Duration::ZERO,
            retry_at: Instant::now(),
            leaving: None,
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut client: Option<Client> = None;
        loop {
            if self.state == ServiceState::Stopped {
                return;
            }
            let deadline = self.pending.values().map(|p| p.deadline).min();
            match client.as_mut() {
                None => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(self.retry_at) => {
                            client = self.connect().await;
                            if client.is_none() {
                                self.retry_at = Instant::now() + self.backoff;
                            }
                        }
                        cmd = rx.recv() => match cmd {
                            Some(cmd) => self.on_command(None, cmd).await,
                            None => return,
                        },
                    }
                }
                Some(c) => {
                    let lost = tokio::select! {
                        ev = c.next_event() => match ev {
                            Ok(ev) => self.on_event(c, ev).await.err(),
                            Err(e) => Some(e),
                        },
                        cmd = rx.recv() => match cmd {
                            Some(cmd) => { self.on_command(Some(c), cmd).await; None }
                            None => {
                                // Every handle is gone: leave cleanly.
                                self.leave(c).await;
                                return;
                            }
                        },
                        _ = sleep_until_opt(deadline) => self.on_timeouts(c).await.err(),
                    };
                    if let Some(e) = lost {
                        tracing::warn!(error = %e, "lost the connection to the agent");
                        client = None;
                        self.retry_at = Instant::now();
                        self.disconnected(&format!("connection to the agent lost: {e}"));
                    }
                }
            }
        }
    }

    fn notify(&self, n: Notice) {
        let _ = self.notices.send(n);
    }

    fn set_state(&mut self, state: ServiceState) {
        if self.state != state {
            self.state = state.clone();
            self.notify(Notice::State { state, member: self.member });
        }
    }

    async fn connect(&mut self) -> Option<Client> {
        self.backoff = (self.backoff * 2).clamp(Duration::from_millis(50), MAX_BACKOFF);
        // Bounded: an agent that accepted the connection but does not answer (stopped, or being replaced)
        // must not hold the service; the next attempt starts afresh.
        let connecting = Client::connect(&self.cfg.socket, &self.cfg.client_name);
        let mut c = match tokio::time::timeout(CONNECT_DEADLINE, connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, retry_in = ?self.backoff, "cannot connect to the agent");
                return None;
            }
            Err(_) => {
                tracing::debug!(retry_in = ?self.backoff, "the agent did not answer the hello in time");
                return None;
            }
        };
        let member = c.member();
        tracing::debug!(%member, "connected to the agent");
        self.member = Some(member);
        if self.removed.contains(&member) {
            // The agent still runs the removed incarnation; wait for its next one on this connection.
            self.backoff = Duration::ZERO;
            self.set_state(ServiceState::Removed("waiting for this node's next incarnation".into()));
            return Some(c);
        }
        match tokio::time::timeout(CONNECT_DEADLINE, self.join(&mut c)).await {
            Ok(Ok(())) => {
                // Only a completed join resets the backoff: an agent that accepts and then refuses the
                // join is retried at the growing interval, not in a tight loop.
                self.backoff = Duration::ZERO;
                Some(c)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot join the lock group");
                self.set_state(ServiceState::Connecting);
                None
            }
            Err(_) => {
                tracing::warn!("the agent did not answer the join in time; connecting again");
                self.set_state(ServiceState::Connecting);
                None
            }
        }
    }

    async fn join(&mut self, c: &mut Client) -> Result<(), ClientError> {
        self.table = LockTable::new();
        self.joined = false;
        self.have_state = false;
        self.me = None;
        self.set_state(ServiceState::Joining);
        c.join(&self.cfg.group).await
    }

    /// Everything local is void: holds are lost, waiters fail, the table is dropped.
    fn void_session(&mut self, why: &str) {
        self.lose_holds(why);
        self.reconciling.clear();
        for (_, p) in std::mem::take(&mut self.pending) {
            let _ = p.reply.send(Err(LockError::Lost(why.into())));
        }
        for (_, r) in std::mem::take(&mut self.releasing) {
            let _ = r.send(Err(LockError::Lost(why.into())));
        }
        self.sends.clear();
        self.table = LockTable::new();
        self.joined = false;
        self.have_state = false;
        self.me = None;
        self.blocked.clear();
    }

    fn lose_holds(&mut self, why: &str) {
        for ((lock, owner), _) in std::mem::take(&mut self.holds) {
            self.notify(Notice::Lost { lock, owner, reason: why.into() });
        }
        for (_, p) in std::mem::take(&mut self.pending) {
            let _ = p.reply.send(Err(LockError::Lost(why.into())));
        }
    }

    fn disconnected(&mut self, why: &str) {
        self.void_session(why);
        if let Some(done) = self.leaving.take() {
            let _ = done.send(());
            self.set_state(ServiceState::Stopped);
            return;
        }
        self.set_state(ServiceState::Connecting);
    }

    fn refresh_state(&mut self) {
        if matches!(self.state, ServiceState::Removed(_) | ServiceState::Stopped | ServiceState::Connecting) {
            return;
        }
        let next = if !(self.joined && self.have_state) {
            ServiceState::Joining
        } else if let Some(r) = self.blocked.iter().next() {
            ServiceState::Blocked(r.clone())
        } else {
            ServiceState::Active
        };
        self.set_state(next);
    }

    async fn send(&mut self, c: &mut Client, op: &Op, purpose: Purpose) -> Result<(), ClientError> {
        // Safe, not agreed: an operation is applied (and a grant given) on a member only once every
        // member of the view has it, so whatever a member that is then cut off and fenced granted, the
        // members that go on applied too (G10). With agreed delivery the sequencer could grant its own
        // request cut off from the rest, who never saw it and granted the same lock before the fence
        // stopped the first holder (the lock safety test caught this).
        let req = c.send_nowait(&self.cfg.group, op.encode(), Delivery::Safe).await?;
        self.sends.insert(req, purpose);
        Ok(())
    }

    async fn on_command(&mut self, c: Option<&mut Client>, cmd: Command) {
        match cmd {
            Command::Snapshot { reply } => {
                let _ = reply.send(Snapshot {
                    state: self.state.clone(),
                    client: self.me,
                    table: self.table.clone(),
                    view: self.view.clone(),
                });
            }
            Command::Shutdown { reply } => match c {
                Some(c) if self.me.is_some() => {
                    self.leaving = Some(reply);
                    self.leave(c).await;
                    if let Some(done) = self.leaving.take() {
                        let _ = done.send(());
                    }
                    self.set_state(ServiceState::Stopped);
                }
                _ => {
                    self.void_session("stopped");
                    self.set_state(ServiceState::Stopped);
                    let _ = reply.send(());
                }
            },
            Command::Acquire { lock, owner, mode, timeout, reply } => {
                let (Some(c), Some(me), true) = (c, self.me, self.accepts_ops()) else {
                    let _ = reply.send(Err(LockError::NotActive(self.state.to_string())));
                    return;
                };
                if self.holds.contains_key(&(lock.clone(), owner.clone())) {
                    let _ = reply.send(Err(LockError::Refused("already held by this owner".into())));
                    return;
                }
                let req = self.next_req;
                self.next_req += 1;
                let op = Op::Acquire {
                    lock: lock.clone(),
                    owner: Owner { client: me, name: owner.clone() },
                    mode,
                    req,
                };
                match self.send(c, &op, Purpose::Acquire { owner: owner.clone(), req }).await {
                    Ok(()) => {
                        let deadline = Instant::now() + timeout;
                        self.pending.insert((owner, req), Pending { lock, mode, deadline, reply });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(LockError::NotActive(format!("send failed: {e}"))));
                    }
                }
            }
            Command::Release { lock, owner, reply } => {
                let (Some(c), Some(me)) = (c, self.me) else {
                    let _ = reply.send(Err(LockError::NotActive(self.state.to_string())));
                    return;
                };
                let key = (lock.clone(), owner.clone());
                let in_table = self
                    .table
                    .lock(&lock)
                    .is_some_and(|l| l.holders.keys().any(|o| o.client == me && o.name == owner));
                if !in_table {
                    self.holds.remove(&key);
                    let _ = reply.send(Err(LockError::NotHeld));
                    return;
                }
                // From here on the owner must not rely on the lock.
                self.holds.remove(&key);
                let op = Op::Release { lock: lock.clone(), owner: Owner { client: me, name: owner.clone() } };
                match self.send(c, &op, Purpose::Release { lock, owner }).await {
                    Ok(()) => {
                        self.releasing.insert(key, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(LockError::NotActive(format!("send failed: {e}"))));
                    }
                }
            }
        }
    }

    /// Whether new acquires are taken: joined, with the table, and not blocked for a reason that takes
    /// the right to act away.
    fn accepts_ops(&self) -> bool {
        self.me.is_some()
            && matches!(self.state, ServiceState::Active | ServiceState::Blocked(_))
            && !self.blocked.iter().any(|r| revokes(r))
    }

    async fn on_timeouts(&mut self, c: &mut Client) -> Result<(), ClientError> {
        let now = Instant::now();
        let expired: Vec<(String, u64)> =
            self.pending.iter().filter(|(_, p)| p.deadline <= now).map(|(k, _)| k.clone()).collect();
        for (owner, req) in expired {
            let Some(p) = self.pending.remove(&(owner.clone(), req)) else { continue };
            let _ = p.reply.send(Err(LockError::Timeout));
            if let Some(me) = self.me {
                let op = Op::Cancel { lock: p.lock, owner: Owner { client: me, name: owner }, req };
                self.send(c, &op, Purpose::Other).await?;
            }
        }
        Ok(())
    }

    async fn on_event(&mut self, c: &mut Client, ev: ClientEvent) -> Result<(), ClientError> {
        match ev {
            ClientEvent::View { id, members, primary } => {
                self.view = Some((id, members.clone(), primary));
                self.notify(Notice::View { id, members: members.clone(), primary });
                if primary {
                    self.reconcile(c).await?;
                }
                // A removed member waits for its node's next incarnation, announced by a view of it.
                if let (ServiceState::Removed(_), Some(old)) = (&self.state, self.member) {
                    let next = members.iter().find(|m| m.node() == old.node() && m.epoch() > old.epoch());
                    if let Some(next) = next.copied() {
                        self.member = Some(next);
                        self.join(c).await?;
                    }
                }
            }
            ClientEvent::GroupView { group, members } if group == self.cfg.group => {
                let Some(member) = self.member else { return Ok(()) };
                if !self.joined && members.contains(&member) && self.state == ServiceState::Joining {
                    self.joined = true;
                    if members.len() == 1 {
                        // The first member of the group: the table starts empty.
                        self.have_state = true;
                    }
                    self.after_join_step(c).await?;
                }
            }
            ClientEvent::ApplyState { group, provider, state } if group == self.cfg.group => {
                if self.state != ServiceState::Joining {
                    return Ok(());
                }
                match LockTable::decode(&state) {
                    Some(t) => {
                        self.table = t;
                        self.have_state = true;
                        self.notify(Notice::StateApplied { provider, locks: self.table.locks().len() });
                        self.after_join_step(c).await?;
                    }
                    None => {
                        // Never act on a table we cannot read: drop the connection and join again.
                        return Err(ClientError::Unexpected(format!(
                            "the lock table transferred by {provider} does not decode ({} bytes)",
                            state.len()
                        )));
                    }
                }
            }
            ClientEvent::ProvideState { group, joiner, token } if group == self.cfg.group => {
                c.provide_state(&group, joiner, token, self.table.encode()).await?;
            }
            ClientEvent::Deliver { group, payload, sender, .. } if group == self.cfg.group => {
                if self.me.is_none() && !self.have_state {
                    return Ok(());
                }
                match Op::decode(&payload) {
                    Some(op) => self.apply(c, op).await?,
                    None => {
                        tracing::warn!(%sender, bytes = payload.len(), "ignoring a message that is not a lock operation")
                    }
                }
            }
            ClientEvent::Blocked { reason } => {
                self.blocked.insert(reason.clone());
                if revokes(&reason) {
                    self.lose_holds(&format!("node blocked: {reason}"));
                }
                self.refresh_state();
            }
            ClientEvent::Unblocked => {
                self.blocked.clear();
                self.refresh_state();
                self.reconcile(c).await?;
            }
            ClientEvent::Recovered { failed } => {
                self.notify(Notice::Recovered { failed: failed.clone() });
                self.recovered_seen.extend(failed);
                self.reconcile(c).await?;
            }
            ClientEvent::RemovedSelf { .. } => self.removed_self("removed from the primary view"),
            ClientEvent::SelfFenced { reason } => self.removed_self(&format!("self-fenced: {reason}")),
            ClientEvent::Sent { req, .. } => {
                self.sends.remove(&req);
            }
            ClientEvent::SendFailed { req, error } => match self.sends.remove(&req) {
                Some(Purpose::Acquire { owner, req }) => {
                    if let Some(p) = self.pending.remove(&(owner, req)) {
                        let _ = p.reply.send(Err(LockError::NotActive(format!("send failed: {error}"))));
                    }
                }
                Some(Purpose::Release { lock, owner }) => {
                    if let Some(r) = self.releasing.remove(&(lock.clone(), owner.clone())) {
                        let _ = r.send(Err(LockError::NotActive(format!("send failed: {error}"))));
                    }
                    // Not released yet: `reconcile` releases it once the node can act again.
                }
                Some(Purpose::Reconcile(op)) => {
                    self.reconciling.remove(&op);
                }
                _ => {}
            },
            _ => {}
        }
        Ok(())
    }

    fn removed_self(&mut self, why: &str) {
        if let Some(m) = self.member {
            self.removed.insert(m);
        }
        self.void_session(why);
        self.set_state(ServiceState::Removed(why.into()));
    }

    async fn after_join_step(&mut self, c: &mut Client) -> Result<(), ClientError> {
        if self.joined && self.have_state && self.me.is_none() {
            let Some(member) = self.member else { return Ok(()) };
            let me = ClientId { member, session: random_session() };
            self.me = Some(me);
            self.send(c, &Op::Hello { client: me }, Purpose::Other).await?;
            self.refresh_state();
            self.reconcile(c).await?;
        }
        Ok(())
    }

    /// Brings the table in line with what this session knows, by multicasting what is missing. Every
    /// step is idempotent and sent at most once while its reason lasts, and each is a plain ordered
    /// operation, so a send that failed or was lost with a view change is simply made again later:
    ///
    /// - a hold of this session that no local owner relies on (lost in a block, granted after its
    ///   requester gave up, or whose release was refused) is released;
    /// - a waiting request of this session that nobody waits for any more is cancelled;
    /// - holds and requests of members cohort announced `recovered` to this session, or whose node is
    ///   back in the primary view under a higher epoch (the old incarnation's agent is gone, and with it
    ///   every session that was connected to it, which reported its holds lost), are expired.
    async fn reconcile(&mut self, c: &mut Client) -> Result<(), ClientError> {
        let Some(me) = self.me else { return Ok(()) };
        if !self.accepts_ops() {
            return Ok(());
        }
        let newer: BTreeMap<NodeId, Epoch> = match &self.view {
            Some((_, members, true)) => members.iter().map(|m| (m.node(), m.epoch())).collect(),
            _ => BTreeMap::new(),
        };
        let mut want: BTreeSet<Op> = BTreeSet::new();
        let mut gone: BTreeSet<Member> = BTreeSet::new();
        for (name, l) in self.table.locks() {
            for o in l.holders.keys() {
                if o.client == me {
                    let key = (name.clone(), o.name.clone());
                    if !self.holds.contains_key(&key) && !self.releasing.contains_key(&key) {
                        want.insert(Op::Release { lock: name.clone(), owner: o.clone() });
                    }
                }
            }
            for w in &l.queue {
                if w.owner.client == me && !self.pending.contains_key(&(w.owner.name.clone(), w.req)) {
                    want.insert(Op::Cancel { lock: name.clone(), owner: w.owner.clone(), req: w.req });
                }
            }
            for o in l.holders.keys().chain(l.queue.iter().map(|w| &w.owner)) {
                let m = o.client.member;
                let superseded = newer.get(&m.node()).is_some_and(|e| *e > m.epoch());
                if superseded || self.recovered_seen.contains(&m) {
                    gone.insert(m);
                }
            }
        }
        if !gone.is_empty() {
            want.insert(Op::Expire { members: gone.into_iter().collect() });
        }
        // Forget what was done and is no longer wanted; send what is wanted and not yet sent.
        self.reconciling.retain(|op| want.contains(op));
        for op in want {
            if self.reconciling.insert(op.clone()) {
                self.send(c, &op, Purpose::Reconcile(op.clone())).await?;
            }
        }
        Ok(())
    }

    async fn apply(&mut self, c: &mut Client, op: Op) -> Result<(), ClientError> {
        let effects = self.table.apply(&op);
        let mine = |o: &Owner, me: Option<ClientId>| Some(o.client) == me;
        let mut cancels = Vec::new();
        for e in &effects {
            match e {
                Effect::Granted { lock, owner, mode, req } if mine(owner, self.me) => {
                    match self.pending.remove(&(owner.name.clone(), *req)) {
                        Some(p) if self.accepts_ops() => {
                            self.holds.insert((lock.clone(), owner.name.clone()), *req);
                            let grant = Grant {
                                lock: lock.clone(),
                                owner: owner.name.clone(),
                                mode: *mode,
                                member: owner.client.member,
                            };
                            debug_assert_eq!(p.mode, *mode);
                            if p.reply.send(Ok(grant)).is_err() {
                                // The requester went away: give the lock back.
                                self.holds.remove(&(lock.clone(), owner.name.clone()));
                                cancels.push(Op::Cancel {
                                    lock: lock.clone(),
                                    owner: owner.clone(),
                                    req: *req,
                                });
                            }
                        }
                        Some(p) => {
                            let _ = p.reply.send(Err(LockError::NotActive(self.state.to_string())));
                            cancels.push(Op::Cancel { lock: lock.clone(), owner: owner.clone(), req: *req });
                        }
                        None => {
                            cancels.push(Op::Cancel { lock: lock.clone(), owner: owner.clone(), req: *req })
                        }
                    }
                }
                Effect::Refused { owner, req, reason, .. } if mine(owner, self.me) => {
                    if let Some(p) = self.pending.remove(&(owner.name.clone(), *req)) {
                        let _ = p.reply.send(Err(LockError::Refused(reason.clone())));
                    }
                }
                Effect::Withdrawn { owner, req, .. } if mine(owner, self.me) => {
                    if let Some(p) = self.pending.remove(&(owner.name.clone(), *req)) {
                        let _ = p.reply.send(Err(LockError::Lost("request withdrawn".into())));
                    }
                }
                Effect::Released { lock, owner, cause } if mine(owner, self.me) => {
                    let key = (lock.clone(), owner.name.clone());
                    let own_leave = matches!(&op, Op::Leave { .. });
                    if self.holds.remove(&key).is_some() && *cause != ReleaseCause::Released && !own_leave {
                        let reason = match cause {
                            ReleaseCause::Cancelled => "its request was cancelled",
                            ReleaseCause::Left => "a newer session of this member took over",
                            _ => "released by the lock table",
                        };
                        self.notify(Notice::Lost {
                            lock: lock.clone(),
                            owner: owner.name.clone(),
                            reason: reason.into(),
                        });
                    }
                    if let Some(r) = self.releasing.remove(&key) {
                        let _ = r.send(Ok(()));
                    }
                }
                _ => {}
            }
        }
        // A release of ours that changed nothing (already released meanwhile) still gets its answer.
        if let Op::Release { lock, owner } = &op {
            if mine(owner, self.me) {
                if let Some(r) = self.releasing.remove(&(lock.clone(), owner.name.clone())) {
                    let _ = r.send(Err(LockError::NotHeld));
                }
            }
        }
        let left = matches!(&op, Op::Leave { client } if Some(*client) == self.me);
        self.notify(Notice::Applied { op, effects });
        for op in cancels {
            self.send(c, &op, Purpose::Other).await?;
        }
        if left {
            if let Some(done) = self.leaving.take() {
                let _ = done.send(());
            }
            return Ok(());
        }
        self.reconcile(c).await
    }

    /// Clean leave: multicast `Leave`, wait (bounded) for its delivery, leave the group.
    async fn leave(&mut self, c: &mut Client) {
        let Some(me) = self.me else { return };
        let (tx, mut rx) = oneshot::channel();
        let caller = self.leaving.replace(tx);
        if self.send(c, &Op::Leave { client: me }, Purpose::Other).await.is_ok() {
            let end = Instant::now() + LEAVE_DEADLINE;
            loop {
                if rx.try_recv().is_ok() {
                    break;
                }
                match tokio::time::timeout_at(end, c.next_event()).await {
                    Ok(Ok(ev)) => {
                        if self.on_event(c, ev).await.is_err() {
                            break;
                        }
                    }
                    _ => break,
                }
            }
        }
        let _ = c.leave(&self.cfg.group).await;
        self.void_session("left");
        self.leaving = caller;
    }
}

/// Whether a block reason takes the right to act on shared state away.
fn revokes(reason: &str) -> bool {
    matches!(reason, "no_quorum" | "stateful_merge_wait")
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A random session number (falls back to the clock if the OS has no randomness to give).
fn random_session() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::getrandom(&mut b).is_err() {
        let t =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        return t as u64 ^ u64::from(std::process::id());
    }
    u64::from_le_bytes(b)
}
