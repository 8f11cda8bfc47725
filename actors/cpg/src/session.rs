//! One CPG handle: a connection to the local agent, driven by a worker thread, and the queue of
//! callbacks that `cpg_dispatch` runs on the application's thread.
//!
//! The worker thread owns a [`cohort_actors::client::Client`] on a single-threaded tokio runtime. It
//! executes the application's requests (join, leave, multicast, status) in the order they were made,
//! turns the agent's events into CPG callbacks through [`GroupTracker`], queues them, and makes the
//! notification socket readable while any are queued (the descriptor `cpg_fd_get` returns). Every
//! method of [`Session`] takes `&self` and may be called from any thread, as corosync allows.

use crate::mapping::{GroupTracker, Header, Out, HEADER_BYTES, KIND_ANNOUNCE, KIND_DATA, KIND_LEAVE};
use crate::types::{CsError, DISPATCH_ALL, DISPATCH_BLOCKING, DISPATCH_ONE, DISPATCH_ONE_NONBLOCKING};
use crate::{Callback, CohortEvent, RingId};
use cohort::msg::TransferToken;
use cohort::{Delivery, Member};
use cohort_actors::client::{Client, ClientError, ClientEvent};
use cohort_actors::client_proto::{MAX_MESSAGE_BYTES, MAX_UNANSWERED_SENDS};
use std::collections::{BTreeSet, VecDeque};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use tokio::sync::{mpsc, oneshot};

/// The environment variable naming the agent's client socket.
pub const SOCKET_ENV: &str = "COHORT_CLIENT_SOCKET";
/// The client socket of a packaged agent (`node.data_dir` = `/var/lib/cohort`), used when
/// [`SOCKET_ENV`] is not set.
pub const DEFAULT_SOCKET: &str = "/var/lib/cohort/cohort.sock";

/// The largest application message: the protocol's message limit less the library's header.
pub const MAX_ATOMIC_MSG_BYTES: usize = MAX_MESSAGE_BYTES - HEADER_BYTES;

/// Multicasts accepted by `cpg_mcast_joined` and not yet answered by the agent, beyond which
/// `cpg_mcast_joined` says `CS_ERR_TRY_AGAIN`: the agent's pipeline ([`MAX_UNANSWERED_SENDS`]) and
/// a queue in front of it deep enough that a sender rarely waits (corosync's IPC blocks instead).
pub const MAX_IN_FLIGHT: usize = 16 * MAX_UNANSWERED_SENDS;

/// The same bound in bytes, so large messages queue no more than this much memory per handle.
pub const MAX_IN_FLIGHT_BYTES: usize = 4 * 1024 * 1024;

/// The agent's socket: `$COHORT_CLIENT_SOCKET`, else [`DEFAULT_SOCKET`].
pub fn socket_path() -> PathBuf {
    std::env::var_os(SOCKET_ENV).map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from)
}

/// What the application thread asks of the worker.
enum Cmd {
    Join { group: String, reply: oneshot::Sender<Result<(), CsError>> },
    Leave { group: String, reply: oneshot::Sender<Result<(), CsError>> },
    Send { payload: Vec<u8>, delivery: Delivery },
    Status { reply: oneshot::Sender<Result<serde_json::Value, CsError>> },
    Provide { group: String, joiner: Member, token: TransferToken, state: Vec<u8> },
}

/// The state shared by the application's threads and the worker.
struct Inner {
    queue: VecDeque<Callback>,
    /// A byte is in the notification socket (it polls readable).
    signalled: bool,
    /// The connection is gone (the agent stopped, or closed it).
    lost: bool,
    finalized: bool,
    /// The handle's group (corosync allows one per handle), from `cpg_join` until this process is seen
    /// leaving it.
    group: Option<GroupTracker>,
    /// A `cpg_leave` was made and its confchg has not arrived.
    leaving: bool,
    /// Multicasts accepted by `cpg_mcast_joined` that the worker has not yet written to the agent
    /// (on their way, or held until this process announced itself).
    queued: usize,
    /// Sizes of the multicasts written to the agent and not yet answered, in the order they were
    /// written (the agent answers a client's sends in order).
    unanswered: VecDeque<usize>,
    /// Bytes of both.
    in_flight_bytes: usize,
    /// Current cohort block reasons.
    blocked: BTreeSet<String>,
    view: Option<(RingId, BTreeSet<u32>)>,
    send_failures: u64,
    /// Totem confchg callbacks are wanted.
    totem: bool,
    /// The application provides and applies group states (`cohort_cpg_state_callbacks_set`).
    state_transfer: bool,
}

impl Inner {
    fn flow_control(&self) -> bool {
        self.queued + self.unanswered.len() >= MAX_IN_FLIGHT
            || self.in_flight_bytes >= MAX_IN_FLIGHT_BYTES
            || !self.blocked.is_empty()
    }

    /// `cpg_mcast_joined` accepted `bytes`.
    fn accepted(&mut self, bytes: usize) {
        self.queued += 1;
        self.in_flight_bytes += bytes;
    }

    /// The worker dropped an accepted multicast without writing it (the group was left meanwhile).
    fn dropped(&mut self, bytes: usize) {
        self.queued = self.queued.saturating_sub(1);
        self.in_flight_bytes = self.in_flight_bytes.saturating_sub(bytes);
    }

    /// The worker wrote a multicast to the agent (`queued` is false for the library's own messages).
    fn written(&mut self, bytes: usize, queued: bool) {
        if queued {
            self.queued = self.queued.saturating_sub(1);
        } else {
            self.in_flight_bytes += bytes;
        }
        self.unanswered.push_back(bytes);
    }

    /// The agent answered the oldest written multicast.
    fn answered(&mut self) {
        if let Some(b) = self.unanswered.pop_front() {
            self.in_flight_bytes = self.in_flight_bytes.saturating_sub(b);
        }
    }
}

/// One handle. See the module documentation.
pub struct Session {
    inner: Mutex<Inner>,
    cv: Condvar,
    notify_rx: UnixStream,
    notify_tx: UnixStream,
    cmds: mpsc::UnboundedSender<Cmd>,
    shutdown: tokio::sync::Notify,
    worker: Mutex<Option<JoinHandle<()>>>,
    node: u32,
    pid: u32,
}

impl Session {
    /// Connects to the agent at [`socket_path`]. `totem` queues a [`Callback::Totem`] for every view
    /// (model v1 with a totem confchg callback), and `initial_totem` the current view as the first
    /// callback (`CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF`). `Err(Library)` when no agent answers.
    pub fn connect(totem: bool, initial_totem: bool) -> Result<Arc<Session>, CsError> {
        let path = socket_path();
        let (notify_rx, notify_tx) = UnixStream::pair().map_err(|_| CsError::Library)?;
        notify_rx.set_nonblocking(true).map_err(|_| CsError::Library)?;
        notify_tx.set_nonblocking(true).map_err(|_| CsError::Library)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let pid = std::process::id();
        // The worker needs the session, the session needs the worker's first answer (the node id): the
        // worker is started with a slot it fills once the session exists.
        let (session_tx, session_rx) = std::sync::mpsc::channel::<Arc<Session>>();
        let worker = std::thread::Builder::new()
            .name("cohort-cpg".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                    let _ = ready_tx.send(Err(CsError::Library));
                    return;
                };
                rt.block_on(async move {
                    let mut client = match Client::connect(&path, "cpg").await {
                        Ok(c) => c,
                        Err(_) => {
                            let _ = ready_tx.send(Err(CsError::Library));
                            return;
                        }
                    };
                    let status = client.status().await.ok();
                    let _ = ready_tx.send(Ok((client.member().0 .0, status)));
                    let Ok(session) = session_rx.recv() else { return };
                    run(&session, &mut client, rx).await;
                    session.lose();
                });
            })
            .map_err(|_| CsError::Library)?;
        let (node, status) = match ready_rx.recv() {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                let _ = worker.join();
                return Err(e);
            }
            Err(_) => {
                let _ = worker.join();
                return Err(CsError::Library);
            }
        };
        let mut inner = Inner {
            queue: VecDeque::new(),
            signalled: false,
            lost: false,
            finalized: false,
            group: None,
            leaving: false,
            queued: 0,
            unanswered: VecDeque::new(),
            in_flight_bytes: 0,
            blocked: BTreeSet::new(),
            view: None,
            send_failures: 0,
            totem,
            state_transfer: false,
        };
        if let Some(s) = &status {
            inner.view = view_of_status(s);
            if let Some(b) = s.get("blocked").and_then(|b| b.as_array()) {
                inner.blocked =
                    b.iter().map(|r| r.as_str().map_or_else(|| r.to_string(), str::to_string)).collect();
            }
        }
        let session = Arc::new(Session {
            inner: Mutex::new(inner),
            cv: Condvar::new(),
            notify_rx,
            notify_tx,
            cmds: tx,
            shutdown: tokio::sync::Notify::new(),
            worker: Mutex::new(Some(worker)),
            node,
            pid,
        });
        if totem && initial_totem {
            let mut g = session.lock();
            if let Some((ring, nodes)) = g.view.clone() {
                session.push(&mut g, Callback::Totem { ring, members: nodes.into_iter().collect() });
            }
        }
        if session_tx.send(Arc::clone(&session)).is_err() {
            return Err(CsError::Library);
        }
        Ok(session)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This node's id (`cpg_local_get`).
    pub fn local_nodeid(&self) -> u32 {
        self.node
    }

    /// The descriptor that polls readable while callbacks are due or the connection is lost.
    pub fn fd(&self) -> RawFd {
        self.notify_rx.as_raw_fd()
    }

    fn push(&self, g: &mut Inner, cb: Callback) {
        g.queue.push_back(cb);
        self.signal(g);
    }

    fn signal(&self, g: &mut Inner) {
        if !g.signalled {
            // A full socket buffer cannot happen: at most one byte is ever in it.
            let _ = (&self.notify_tx).write(&[1]);
            g.signalled = true;
        }
        self.cv.notify_all();
    }

    /// The connection is gone: wake every waiter and keep the descriptor readable.
    fn lose(&self) {
        let mut g = self.lock();
        g.lost = true;
        self.signal(&mut g);
    }

    fn pop(&self, g: &mut Inner) -> Option<Callback> {
        let cb = g.queue.pop_front();
        if g.queue.is_empty() && !g.lost && !g.finalized && g.signalled {
            let mut buf = [0u8; 16];
            while matches!((&self.notify_rx).read(&mut buf), Ok(n) if n > 0) {}
            g.signalled = false;
        }
        cb
    }

    fn alive(&self, g: &Inner) -> Result<(), CsError> {
        if g.finalized {
            Err(CsError::BadHandle)
        } else if g.lost {
            Err(CsError::Library)
        } else {
            Ok(())
        }
    }

    /// Runs callbacks per `mode` (a `CS_DISPATCH_*`), calling `run` for each on this thread with no
    /// lock held (a callback may call any function of the handle, `cpg_finalize` included). `run`
    /// returns whether the application had a function for it: the `ONE` modes run one that it had.
    pub fn dispatch(&self, mode: u32, mut run: impl FnMut(Callback) -> bool) -> Result<(), CsError> {
        if ![DISPATCH_ONE, DISPATCH_ALL, DISPATCH_BLOCKING, DISPATCH_ONE_NONBLOCKING].contains(&mode) {
            return Err(CsError::InvalidParam);
        }
        let wait = mode == DISPATCH_ONE || mode == DISPATCH_BLOCKING;
        let mut ran = false;
        loop {
            let mut g = self.lock();
            if g.finalized {
                // Finalized from a callback of this dispatch: a normal end, as in corosync.
                return if ran { Ok(()) } else { Err(CsError::BadHandle) };
            }
            let cb = loop {
                if let Some(cb) = self.pop(&mut g) {
                    break Some(cb);
                }
                if g.lost || g.finalized || !wait {
                    break None;
                }
                g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner());
            };
            let lost = g.lost;
            drop(g);
            match cb {
                Some(cb) => {
                    let had = run(cb);
                    ran = true;
                    if had && (mode == DISPATCH_ONE || mode == DISPATCH_ONE_NONBLOCKING) {
                        return Ok(());
                    }
                }
                None if lost => return Err(CsError::Library),
                None => return Ok(()),
            }
        }
    }

    /// Joins `group` (`cpg_join`).
    pub fn join(&self, group: &str) -> Result<(), CsError> {
        {
            let mut g = self.lock();
            self.alive(&g)?;
            if g.leaving {
                return Err(CsError::TryAgain);
            }
            if g.group.is_some() {
                return Err(CsError::Exist);
            }
            let nodes = g.view.as_ref().map(|v| v.1.clone()).unwrap_or_default();
            g.group = Some(GroupTracker::new(group, self.node, self.pid, nodes));
        }
        let (reply, rx) = oneshot::channel();
        let res = self.ask(Cmd::Join { group: group.to_string(), reply }, rx);
        if res.is_err() {
            let mut g = self.lock();
            if g.group.as_ref().is_some_and(|t| t.name() == group && !t.announced()) {
                g.group = None;
            }
        }
        res
    }

    /// Leaves `group` (`cpg_leave`); this process's confchg with itself in the left list follows.
    pub fn leave(&self, group: &str) -> Result<(), CsError> {
        {
            let mut g = self.lock();
            self.alive(&g)?;
            if g.leaving || g.group.as_ref().is_none_or(|t| t.name() != group) {
                return Err(CsError::NotExist);
            }
            g.leaving = true;
        }
        let (reply, rx) = oneshot::channel();
        let res = self.ask(Cmd::Leave { group: group.to_string(), reply }, rx);
        if res.is_err() {
            self.lock().leaving = false;
        }
        res
    }

    fn ask<T>(&self, cmd: Cmd, rx: oneshot::Receiver<Result<T, CsError>>) -> Result<T, CsError> {
        self.cmds.send(cmd).map_err(|_| CsError::Library)?;
        rx.blocking_recv().map_err(|_| CsError::Library)?
    }

    /// Multicasts `data` to the joined group (`cpg_mcast_joined`): agreed, or safe when `safe`.
    /// Returns once the message is queued to the agent; `TryAgain` under flow control or while cohort
    /// blocks.
    pub fn mcast(&self, data: &[u8], safe: bool) -> Result<(), CsError> {
        if data.len() > MAX_ATOMIC_MSG_BYTES {
            return Err(CsError::TooBig);
        }
        {
            let mut g = self.lock();
            self.alive(&g)?;
            if g.group.is_none() || g.leaving {
                return Err(CsError::NotExist);
            }
            if g.flow_control() {
                return Err(CsError::TryAgain);
            }
            g.accepted(data.len());
        }
        let payload = Header { kind: KIND_DATA, pid: self.pid }.wrap(data);
        let delivery = if safe { Delivery::Safe } else { Delivery::Agreed };
        self.cmds.send(Cmd::Send { payload, delivery }).map_err(|_| CsError::Library)
    }

    /// True while `cpg_mcast_joined` would say `TryAgain` (`cpg_flow_control_state_get`).
    pub fn flow_control(&self) -> Result<bool, CsError> {
        let g = self.lock();
        self.alive(&g)?;
        Ok(g.flow_control())
    }

    /// The CPG membership of the joined `group` as last reported by a confchg (`cpg_membership_get`).
    pub fn membership(&self, group: &str) -> Result<Vec<crate::types::CpgAddress>, CsError> {
        let g = self.lock();
        self.alive(&g)?;
        match &g.group {
            Some(t) if t.name() == group => Ok(t.members()),
            _ => Err(CsError::NotExist),
        }
    }

    /// The joined group's name and CPG members, if the handle joined one.
    pub fn joined(&self) -> Result<Option<(String, Vec<crate::types::CpgAddress>)>, CsError> {
        let g = self.lock();
        self.alive(&g)?;
        Ok(g.group.as_ref().map(|t| (t.name().to_string(), t.members())))
    }

    /// The node's status document (the groups of every local member, for `cpg_iteration_*`).
    pub fn status(&self) -> Result<serde_json::Value, CsError> {
        self.alive(&self.lock())?;
        let (reply, rx) = oneshot::channel();
        self.ask(Cmd::Status { reply }, rx)
    }

    /// From now on, state transfers at joins go to the application (`ProvideState` and `ApplyState`
    /// callbacks) instead of being answered with an empty state by the library.
    pub fn set_state_transfer(&self, on: bool) -> Result<(), CsError> {
        let mut g = self.lock();
        self.alive(&g)?;
        g.state_transfer = on;
        Ok(())
    }

    /// Answers a [`Callback::ProvideState`] with the application's state.
    pub fn provide_state(
        &self,
        group: &str,
        joiner: Member,
        token: TransferToken,
        state: Vec<u8>,
    ) -> Result<(), CsError> {
        self.alive(&self.lock())?;
        self.cmds
            .send(Cmd::Provide { group: group.to_string(), joiner, token, state })
            .map_err(|_| CsError::Library)
    }

    /// Sends the agent refused after `cpg_mcast_joined` had returned `CS_OK`.
    pub fn send_failures(&self) -> u64 {
        self.lock().send_failures
    }

    /// Ends the session (`cpg_finalize`): the connection is closed, which leaves the group.
    pub fn finalize(&self) {
        {
            let mut g = self.lock();
            g.finalized = true;
            self.signal(&mut g);
        }
        // The worker stops at once, whatever it is waiting for; dropping its client closes the
        // connection, which leaves the group.
        self.shutdown.notify_one();
        let worker = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = worker {
            if w.thread().id() != std::thread::current().id() {
                let _ = w.join();
            }
        }
    }
}

fn view_of_status(s: &serde_json::Value) -> Option<(RingId, BTreeSet<u32>)> {
    let view = s.get("view").filter(|v| !v.is_null())?;
    let id = view.get("id")?;
    let ring =
        RingId { nodeid: u32::try_from(id.get("coord")?.as_u64()?).ok()?, seq: id.get("seq")?.as_u64()? };
    let nodes = view
        .get("members")?
        .as_array()?
        .iter()
        .map(|m| u32::try_from(m.get(0)?.as_u64()?).ok())
        .collect::<Option<BTreeSet<u32>>>()?;
    Some((ring, nodes))
}

/// The worker: requests and events until the handle is finalized or the connection is lost.
async fn run(session: &Session, client: &mut Client, mut rx: mpsc::UnboundedReceiver<Cmd>) {
    // Application sends made before this process saw itself in the group (and announced its pid).
    let mut early: VecDeque<(Vec<u8>, Delivery)> = VecDeque::new();
    loop {
        if session.lock().finalized {
            return;
        }
        // `cpg_finalize` must not wait for the agent: a request or a send may wait for an answer
        // indefinitely while the agent blocks, so shutdown wins over whatever step is in progress.
        let result = tokio::select! {
            _ = session.shutdown.notified() => Err(()),
            r = step(session, client, &mut rx, &mut early) => r,
        };
        if result.is_err() {
            return;
        }
    }
}

/// One request or one event.
async fn step(
    session: &Session,
    client: &mut Client,
    rx: &mut mpsc::UnboundedReceiver<Cmd>,
    early: &mut VecDeque<(Vec<u8>, Delivery)>,
) -> Result<(), ()> {
    tokio::select! {
        cmd = rx.recv() => match cmd {
            Some(cmd) => on_cmd(session, client, cmd, early).await,
            None => Err(()),
        },
        ev = client.next_event() => match ev {
            Ok(ev) => on_event(session, client, ev, early).await,
            Err(_) => Err(()),
        },
    }
}

/// Carries out a tracker's outputs; true when it asks for an announcement.
fn apply(session: &Session, g: &mut Inner, outs: Vec<Out>) -> bool {
    let mut announce = false;
    for o in outs {
        match o {
            Out::Announce => announce = true,
            Out::Emit(cb) => session.push(g, cb),
            Out::SelfGone => {
                g.group = None;
                g.leaving = false;
            }
        }
    }
    announce
}

fn agent_error(e: &ClientError) -> CsError {
    match e {
        ClientError::Agent(m) if m.contains("already joined") => CsError::Exist,
        ClientError::Agent(m) if m.contains("invalid group name") => CsError::InvalidParam,
        ClientError::Agent(m) if m.contains("too many groups") || m.contains("queue") => CsError::TryAgain,
        ClientError::Agent(m) if m.contains("not joined") => CsError::NotExist,
        _ => CsError::Library,
    }
}

fn fatal(e: &ClientError) -> bool {
    !matches!(e, ClientError::Agent(_) | ClientError::SendFailed(_))
}

async fn send_own(session: &Session, client: &mut Client, group: &str, kind: u8) -> Result<(), ()> {
    session.lock().written(0, false);
    let payload = Header { kind, pid: session.pid }.wrap(&[]);
    client.send_nowait(group, payload, Delivery::Agreed).await.map(|_| ()).map_err(|_| ())
}

async fn on_cmd(
    session: &Session,
    client: &mut Client,
    cmd: Cmd,
    early: &mut VecDeque<(Vec<u8>, Delivery)>,
) -> Result<(), ()> {
    match cmd {
        Cmd::Join { group, reply } => {
            let res = client.join(&group).await;
            let fail = res.as_ref().err().is_some_and(fatal);
            let _ = reply.send(res.map_err(|e| agent_error(&e)));
            if fail {
                return Err(());
            }
        }
        Cmd::Leave { group, reply } => {
            {
                let mut g = session.lock();
                for (payload, _) in early.drain(..) {
                    g.dropped(payload.len().saturating_sub(HEADER_BYTES));
                }
            }
            if send_own(session, client, &group, KIND_LEAVE).await.is_err() {
                let _ = reply.send(Err(CsError::Library));
                return Err(());
            }
            let res = client.leave(&group).await;
            let fail = res.as_ref().err().is_some_and(fatal);
            if res.is_ok() {
                let mut g = session.lock();
                let outs = g.group.as_mut().map(GroupTracker::on_self_left).unwrap_or_default();
                apply(session, &mut g, outs);
            }
            let _ = reply.send(res.map_err(|e| agent_error(&e)));
            if fail {
                return Err(());
            }
        }
        Cmd::Send { payload, delivery } => {
            let group = {
                let g = session.lock();
                match &g.group {
                    Some(t) if t.announced() => Some(t.name().to_string()),
                    Some(_) => None,
                    None => {
                        drop(g);
                        // Left meanwhile: the message is dropped, as corosync drops it.
                        session.lock().dropped(payload.len().saturating_sub(HEADER_BYTES));
                        return Ok(());
                    }
                }
            };
            match group {
                Some(group) => write_send(session, client, &group, payload, delivery).await?,
                None => early.push_back((payload, delivery)),
            }
        }
        Cmd::Provide { group, joiner, token, state } => {
            let res = client.provide_state(&group, joiner, token, state).await;
            if res.as_ref().err().is_some_and(fatal) {
                return Err(());
            }
        }
        Cmd::Status { reply } => {
            if session.lock().finalized {
                return Err(());
            }
            let res = client.status().await;
            let fail = res.as_ref().err().is_some_and(fatal);
            let _ = reply.send(res.map_err(|e| agent_error(&e)));
            if fail {
                return Err(());
            }
        }
    }
    Ok(())
}

async fn on_event(
    session: &Session,
    client: &mut Client,
    ev: ClientEvent,
    early: &mut VecDeque<(Vec<u8>, Delivery)>,
) -> Result<(), ()> {
    let mut outs = Vec::new();
    let mut group_name = None;
    let mut answer_empty = None;
    let announce = {
        let mut g = session.lock();
        match ev {
            ClientEvent::View { id, members, .. } => {
                let nodes: BTreeSet<u32> = members.iter().map(|m| m.0 .0).collect();
                let ring = RingId { nodeid: id.coord.0, seq: id.seq };
                g.view = Some((ring, nodes.clone()));
                if let Some(t) = g.group.as_mut() {
                    t.on_view(nodes.clone());
                }
                if g.totem {
                    session.push(&mut g, Callback::Totem { ring, members: nodes.into_iter().collect() });
                }
            }
            ClientEvent::GroupView { group, members } => {
                if let Some(t) = g.group.as_mut().filter(|t| t.name() == group) {
                    let keys: Vec<_> = members.iter().map(|m| (m.0 .0, m.1 .0)).collect();
                    outs = t.on_group_view(&keys);
                    group_name = Some(group);
                }
            }
            ClientEvent::Deliver { group, sender, payload, .. } => {
                if let Some(t) = g.group.as_mut().filter(|t| t.name() == group) {
                    outs = t.on_deliver((sender.0 .0, sender.1 .0), &payload);
                    group_name = Some(group);
                }
            }
            ClientEvent::Sent { .. } => g.answered(),
            ClientEvent::SendFailed { .. } => {
                g.answered();
                g.send_failures += 1;
            }
            ClientEvent::Blocked { reason } => {
                g.blocked.insert(reason.clone());
                session.push(&mut g, Callback::Cohort(CohortEvent::Blocked { reason }));
            }
            ClientEvent::Unblocked => {
                g.blocked.clear();
                session.push(&mut g, Callback::Cohort(CohortEvent::Unblocked));
            }
            ClientEvent::Recovered { failed } => {
                let nodes = failed.iter().map(|m| m.0 .0).collect();
                session.push(&mut g, Callback::Cohort(CohortEvent::Recovered { nodes }));
            }
            ClientEvent::RemovedSelf { .. } => {
                session.push(&mut g, Callback::Cohort(CohortEvent::RemovedSelf));
            }
            ClientEvent::SelfFenced { reason } => {
                session.push(&mut g, Callback::Cohort(CohortEvent::SelfFenced { reason }));
            }
            ClientEvent::ApplyState { group, provider, state } => {
                let node = provider.0 .0;
                if g.state_transfer {
                    session
                        .push(&mut g, Callback::ApplyState { group: group.clone(), provider: node, state });
                }
                session.push(&mut g, Callback::Cohort(CohortEvent::StateApplied { group, provider: node }));
            }
            ClientEvent::ProvideState { group, joiner, token } => {
                if g.state_transfer {
                    // The application's state as of this point of the delivery stream: asked for by a
                    // callback queued here, after every delivery before this point and before any after.
                    session.push(&mut g, Callback::ProvideState { group, joiner, token });
                } else {
                    // Without state callbacks a CPG group has no state of the library's to transfer:
                    // answer at once so the join completes (the application keeps its own
                    // state-exchange protocol, as on corosync).
                    answer_empty = Some((group, joiner, token));
                }
            }
        }
        apply(session, &mut g, outs)
    };
    if let Some((group, joiner, token)) = answer_empty {
        return client.provide_state(&group, joiner, token, Vec::new()).await.map_err(|_| ());
    }
    if !announce {
        return Ok(());
    }
    // This process is in the group (or a newcomer is): announce the pid, then send what the
    // application multicast before.
    let Some(group) = group_name else { return Ok(()) };
    send_own(session, client, &group, KIND_ANNOUNCE).await?;
    while let Some((payload, delivery)) = early.pop_front() {
        write_send(session, client, &group, payload, delivery).await?;
    }
    Ok(())
}

/// Writes one of the application's multicasts to the agent.
async fn write_send(
    session: &Session,
    client: &mut Client,
    group: &str,
    payload: Vec<u8>,
    delivery: Delivery,
) -> Result<(), ()> {
    // Counted as written before the write: its answer may be read during the write itself (when the
    // agent's pipeline is full, send_nowait reads answers until one comes).
    session.lock().written(payload.len().saturating_sub(HEADER_BYTES), true);
    client.send_nowait(group, payload, delivery).await.map(|_| ()).map_err(|_| ())
}
