//! ClientApiActor: the local Unix-socket API through which applications join process groups, multicast,
//! receive views and deliveries in order, and answer or receive state transfers. The protocol is in
//! [`crate::client_proto`]; the Rust client library in [`crate::client`].
//!
//! # Design
//! One actor holds every decision: which client owns which group, who gets which event, and each
//! client's queue of membership operations. Each connection has two small tasks that do only IO
//! ([`crate::client_conn`]):
//!
//! - a **reader** task reads frames, decodes them and hands each [`Request`] to the actor, waiting for
//!   the actor to have handled it before reading the next one (so replies come in request order). Before
//!   a `Send` it takes one of [`MAX_UNANSWERED_SENDS`] permits, which the actor returns when the send is
//!   answered: a client with that many unanswered sends is simply not read, and the kernel's socket
//!   buffer pushes back on it. A malformed or oversized frame ends the reader and, through the actor, the
//!   connection, with an `Error` reply.
//! - a **writer** task drains the client's bounded queue of encoded frames (`client_queue_msgs`),
//!   batching what is ready into one write. The actor only ever `try_send`s into that queue: a client
//!   whose queue is full is too slow, and is disconnected with a final `Error` written best-effort
//!   (the writer finishes the frame it was writing, then the error, within [`FINAL_WRITE_DEADLINE`]).
//!
//! So the agent never waits on a client and nothing grows without bound. A connection that has not
//! said hello may send one frame of at most 64 KiB and is closed with an `Error` when its hello has not
//! arrived within `limits.hello_timeout_ms`. After hello, per client at most `client_queue_msgs`
//! queued events and `client_queue_bytes` of them, [`MAX_UNANSWERED_SENDS`] pending sends of at most
//! `max_message_bytes` each (a larger one is answered `SendFailed` before it is queued), a bounded
//! number of joins and leaves waiting behind them, `max_groups_per_client` groups, and one frame being
//! read; agent-wide at most `max_clients` connections (and [`MAX_OPERATOR_CLIENTS`] operator ones) and
//! `client_frames_total_bytes` of large frames being read. Each limit's error names its key.
//!
//! # Groups
//! The core's process groups belong to the node's member, not to a connection. The actor therefore
//! multiplexes: the first local client that joins a group owns it; another local client joining the same
//! group gets `group G is already joined by another client on this node`. Deliveries, `ProvideState`
//! and `ApplyState` of a group go to its owner; `GroupView` to the owner and to watchers; `View`,
//! `Blocked`, `Unblocked`, `Recovered`, `RemovedSelf` and the watchdog's `SelfFenced` to every client.
//! A client that disconnects, for any reason, leaves its groups cleanly (`LeaveGroup`). After
//! `RemovedSelf` every group is forgotten: the removed member's groups are gone, and a client that joins
//! again reaches the membership (and the node's next incarnation).
//!
//! # Order and flow control
//! Joins, leaves and sends of one client pass through one FIFO queue per client and reach the membership
//! in the order the client made them, with at most one `Multicast` of a client outstanding. A send the
//! membership refuses with `QueueFull` stays at the head of the queue and is retried when the core says
//! `SendReady` (or a new view is installed, or after [`SEND_RETRY_INTERVAL`] as a safety net, e.g. after
//! the core was replaced by a new incarnation); the client sees nothing until it is accepted. Serialising
//! a client's multicasts costs one actor round trip per message (against a probe membership the path
//! carries about 300,000 sends/s, well above what the core orders) and buys per-client FIFO even when
//! the send queue fills and drains in between. A leave waits behind the client's earlier sends, so those are
//! sent as a member; until it reaches the membership, the group stays owned by the leaving client.
//!
//! # The sockets
//! The actor serves two sockets with the same protocol: the client socket for applications and the
//! operator socket for operators ([`crate::client_access`] says who may use which and classifies every
//! request). At start it removes a socket file left by an agent that is gone (only a socket, and only
//! when nothing answers a connect on it; a live socket or any other file at the path is an error naming
//! the path), binds each, and sets its file mode (`api.socket_mode`, 0660, and
//! `api.operator_socket_mode`, 0600, by default). It removes both files when it stops. A failure to
//! listen is logged and reported to the supervisor when one was given ([`ClientApiActor::with_fatal`]).
//!
//! Every accepted connection's peer credentials (`SO_PEERCRED`) are checked against its socket's
//! [`PeerPolicy`]; a refused peer gets an `Error` naming its uid and the socket and is closed. At most
//! `max_clients` connections are served on the client socket and [`MAX_OPERATOR_CLIENTS`] on the
//! operator socket, so that applications cannot crowd operators out; one more gets an `Error` and is
//! closed. An operator command on the client socket is answered by an `Error` naming the command and the
//! operator socket; the connection stays usable. Log lines about refused and misbehaving clients are
//! rate-limited ([`LogLimiter`]).
//!
//! **Deliberately absent:** several local clients sharing one group (see above), authentication beyond
//! the kernel's peer credentials and the sockets' file modes, and any protocol decision.

use crate::client_access::{self, LogLimiter, Peer, PeerPolicy, Principal};
use crate::client_conn::{
    remove_stale_socket, run_reader, run_writer, Accepted, ClientGone, ClientId, ClientRequest, Frame,
    Incoming, ReadLimits,
};
use crate::client_proto::{
    FrameCodec, KeyRequest, Reply, Request, MAX_FRAME_BYTES, MAX_GROUP_NAME_BYTES, MAX_UNANSWERED_SENDS,
    PROTOCOL_VERSION,
};
use crate::messages::*;
use crate::metrics::Metrics;
use actix::prelude::*;
use cohort::node::SendError;
use cohort::{BlockReason, Delivery, MsgId, NodeId, Notification, View};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// How long a disconnected client's writer may take to finish its current frame and the final `Error`.
pub const FINAL_WRITE_DEADLINE: Duration = Duration::from_secs(2);

/// Blocked sends are retried at least this often, in case a `SendReady` never comes.
pub const SEND_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// At most this many joins, leaves and sends of one client wait behind an unanswered send; sends are
/// bounded by [`MAX_UNANSWERED_SENDS`] already, this bounds joins and leaves too.
const MAX_QUEUED_OPS: usize = 4 * MAX_UNANSWERED_SENDS;

const QUEUE_FULL_ERROR: &str =
    "too many joins and leaves waiting behind unanswered sends: wait for a send to be answered";

/// Most connections served on the operator socket at once (beside `max_clients` on the client socket).
pub const MAX_OPERATOR_CLIENTS: usize = 8;

/// Log lines about refused or misbehaving clients: at most this many per [`LOG_WINDOW`] of each kind.
const LOG_BURST: u32 = 10;
const LOG_WINDOW: Duration = Duration::from_secs(60);

/// How a client API is set up: its two sockets, who may use them, and its limits.
#[derive(Clone, Debug)]
pub struct ClientApiConfig {
    /// The client socket.
    pub socket_path: PathBuf,
    /// Its file mode (e.g. `0o660`).
    pub socket_mode: u32,
    /// Who may use it.
    pub client_policy: PeerPolicy,
    /// The operator socket.
    pub operator_socket_path: PathBuf,
    /// Its file mode (e.g. `0o600`).
    pub operator_socket_mode: u32,
    /// Who may use it.
    pub operator_policy: PeerPolicy,
    /// The frame limit after hello (see [`crate::client_proto::frame_limit`]).
    pub max_frame: usize,
    /// Events queued for one client before it is disconnected as too slow.
    pub client_queue_msgs: usize,
    /// Bytes of events queued for one client before it is disconnected as too slow (one frame of any
    /// size is always accepted into an empty queue).
    pub client_queue_bytes: usize,
    /// Most connections on the client socket.
    pub max_clients: usize,
    /// How long a connection may take to say hello.
    pub hello_timeout: Duration,
    /// Most process groups one client may have joined.
    pub max_groups_per_client: usize,
    /// The largest payload of a `Send` (`limits.max_message_bytes`).
    pub max_message_bytes: usize,
    /// Bytes of large frames being read from all clients at once.
    pub client_frames_total_bytes: usize,
}

impl ClientApiConfig {
    /// The defaults of `config/default.toml` for a client socket at `socket_path`: mode 0660 open to
    /// every peer the mode lets in, the operator socket beside it with mode 0600 for root and this
    /// process's uid, a 1 MiB message frame limit, 16384 queued events or 16 MiB per client, 64
    /// clients, a 5 s hello deadline, 256 groups per client, 1 MiB messages and 128 MiB of large frames
    /// being read at once.
    pub fn new(socket_path: PathBuf) -> ClientApiConfig {
        let operator_socket_path = crate::settings::operator_socket_beside(&socket_path);
        ClientApiConfig {
            socket_path,
            socket_mode: 0o660,
            client_policy: PeerPolicy::client(&[], &[]),
            operator_socket_path,
            operator_socket_mode: 0o600,
            operator_policy: PeerPolicy::operator(crate::key_file::effective_uid(), &[], &[]),
            max_frame: MAX_FRAME_BYTES,
            client_queue_msgs: 16384,
            client_queue_bytes: 16 << 20,
            max_clients: 64,
            hello_timeout: Duration::from_secs(5),
            max_groups_per_client: 256,
            max_message_bytes: crate::client_proto::MAX_MESSAGE_BYTES,
            client_frames_total_bytes: 128 << 20,
        }
    }

    /// The configuration of `settings` (its `[api]` and `[limits]` sections).
    pub fn from_settings(settings: &crate::settings::Settings) -> ClientApiConfig {
        let api = &settings.api;
        let mode = |m: &str, default| crate::settings_load::parse_octal_mode(m).unwrap_or(default);
        let limits = &settings.limits;
        ClientApiConfig {
            socket_path: settings.socket_path(),
            socket_mode: mode(&api.socket_mode, 0o660),
            client_policy: PeerPolicy::client(&api.allowed_uids, &api.allowed_gids),
            operator_socket_path: settings.operator_socket_path(),
            operator_socket_mode: mode(&api.operator_socket_mode, 0o600),
            operator_policy: PeerPolicy::operator(
                crate::key_file::effective_uid(),
                &api.operator_allowed_uids,
                &api.operator_allowed_gids,
            ),
            max_frame: crate::client_proto::frame_limit(limits.max_message_bytes, limits.max_state_bytes),
            client_queue_msgs: limits.client_queue_msgs,
            client_queue_bytes: limits.client_queue_bytes,
            max_clients: limits.max_clients,
            hello_timeout: Duration::from_millis(limits.hello_timeout_ms),
            max_groups_per_client: limits.max_groups_per_client,
            max_message_bytes: limits.max_message_bytes,
            client_frames_total_bytes: limits.client_frames_total_bytes,
        }
    }
}

/// Where the client API sends what applications ask for.
#[derive(Clone)]
pub struct MembershipLinks {
    /// Joins, to the membership.
    pub join: Recipient<JoinGroup>,
    /// Leaves, to the membership.
    pub leave: Recipient<LeaveGroup>,
    /// Multicasts, to the membership (answered with the message id or why not).
    pub multicast: Recipient<Multicast>,
    /// State-transfer answers, to the membership.
    pub provide_state: Recipient<ProvideState>,
    /// Operator fence acknowledgements, to the membership.
    pub ack_fence: Recipient<AckFence>,
    /// Status queries, to the membership.
    pub get_status: Recipient<GetStatus>,
    /// The link filter, to the transport; `None` unless `testing.link_filter` is on, and then
    /// `SetLinkFilter` is refused.
    pub link_filter: Option<Recipient<SetLinkFilter>>,
    /// The key ring, to the transport (`cohort key ...`); `None` where there is none (tests of this actor
    /// alone), and then `Keys` is answered with an error.
    pub key_ring: Option<Recipient<ChangeKeyRing>>,
}

/// The actor. See the module documentation.
pub struct ClientApiActor {
    cfg: ClientApiConfig,
    codec: FrameCodec,
    links: MembershipLinks,
    metrics: Arc<Metrics>,
    fatal: Option<Recipient<FatalError>>,
    /// The socket files this actor created (it removes them when it stops).
    bound: Vec<PathBuf>,
    /// Rate limits of the log lines about refused connections and refused requests, and about clients
    /// dropped for misbehaving.
    refused_log: LogLimiter,
    misbehaving_log: LogLimiter,
    /// The agent-wide budget of bytes of large frames being read (see [`crate::client_conn`]).
    frames: Arc<Semaphore>,
    clients: BTreeMap<ClientId, ClientState>,
    /// Group → the local client that owns it.
    owners: BTreeMap<String, ClientId>,
    next_client: ClientId,
    /// The newest installed view, given to watchers when they start watching.
    view: Option<View>,
    /// Counts `SendReady`s and views: a `QueueFull` answer to a multicast issued before the count last
    /// changed is retried at once, because the `SendReady` it would wait for may already have passed.
    ready_gen: u64,
    retry_timer: Option<SpawnHandle>,
}

/// What a client watches without joining.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Watching {
    All,
    Group(String),
}

/// A membership operation waiting in a client's FIFO queue.
#[derive(Debug)]
enum Pending {
    Join(String),
    Leave(String),
    Send { req: u64, group: String, payload: Vec<u8>, delivery: Delivery },
}

/// The state of the `Send` at the head of a client's queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SendState {
    /// Nothing outstanding at the membership.
    Idle,
    /// A `Multicast` is outstanding.
    InFlight,
    /// Refused with `QueueFull`; waiting for `SendReady`.
    Blocked,
}

struct ClientState {
    name: String,
    greeted: bool,
    /// The socket it came in on.
    principal: Principal,
    peer: Peer,
    /// Encoded frames for the writer task; bounded by `client_queue_msgs`.
    out: mpsc::Sender<Frame>,
    /// Tells the writer to stop, with an optional final frame.
    kill: Option<oneshot::Sender<Option<Frame>>>,
    reader: Option<actix_rt::task::JoinHandle<()>>,
    /// Unanswered-send permits shared with the reader.
    permits: Arc<Semaphore>,
    /// Bytes of frames queued for the writer, shared with it (it subtracts what it wrote).
    queued_bytes: Arc<AtomicUsize>,
    /// Groups this client joined (and has not asked to leave).
    groups: BTreeSet<String>,
    watching: Option<Watching>,
    queue: VecDeque<Pending>,
    send_state: SendState,
}

impl ClientApiActor {
    /// A client API serving the sockets of `cfg`.
    pub fn new(cfg: ClientApiConfig, links: MembershipLinks, metrics: Arc<Metrics>) -> ClientApiActor {
        let mut cfg = cfg;
        cfg.client_queue_msgs = cfg.client_queue_msgs.max(1);
        cfg.client_frames_total_bytes = cfg.client_frames_total_bytes.clamp(1, Semaphore::MAX_PERMITS);
        ClientApiActor {
            frames: Arc::new(Semaphore::new(cfg.client_frames_total_bytes)),
            codec: FrameCodec::new(cfg.max_frame),
            cfg,
            links,
            metrics,
            fatal: None,
            bound: Vec::new(),
            refused_log: LogLimiter::new(LOG_BURST, LOG_WINDOW),
            misbehaving_log: LogLimiter::new(LOG_BURST, LOG_WINDOW),
            clients: BTreeMap::new(),
            owners: BTreeMap::new(),
            next_client: 1,
            view: None,
            ready_gen: 0,
            retry_timer: None,
        }
    }

    /// Reports a failure to listen on the socket as a fatal error to `fatal` (the supervisor) instead
    /// of only logging it.
    pub fn with_fatal(mut self, fatal: Recipient<FatalError>) -> ClientApiActor {
        self.fatal = Some(fatal);
        self
    }

    fn listen(&mut self, path: &Path, mode: u32) -> io::Result<UnixListener> {
        remove_stale_socket(path)?;
        let listener = UnixListener::bind(path)?;
        self.bound.push(path.to_path_buf());
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        Ok(listener)
    }

    fn socket_of(&self, principal: Principal) -> &Path {
        match principal {
            Principal::Application => &self.cfg.socket_path,
            Principal::Operator => &self.cfg.operator_socket_path,
        }
    }

    /// Closes a connection that is not served, after one best-effort `Error` frame.
    fn refuse(&mut self, stream: UnixStream, message: String) {
        self.metrics.clients_refused.fetch_add(1, Relaxed);
        let frame = self.codec.encode(&Reply::Error { message });
        actix_rt::spawn(async move {
            let mut stream = stream;
            if let Ok(frame) = frame {
                let _ = tokio::time::timeout(FINAL_WRITE_DEADLINE, stream.write_all(&frame)).await;
            }
        });
    }

    fn accept(&mut self, principal: Principal, stream: UnixStream, ctx: &mut Context<Self>) {
        let socket = self.socket_of(principal).to_path_buf();
        let peer = match Peer::of(&stream) {
            Ok(p) => p,
            Err(e) => {
                if let Some(suppressed) = self.refused_log.allow(Instant::now()) {
                    tracing::warn!(socket = %socket.display(), error = %e, suppressed, "connection refused: no peer credentials");
                }
                return self.refuse(stream, "the agent cannot read this connection's credentials".into());
            }
        };
        let (policy, keys) = match principal {
            Principal::Application => (&self.cfg.client_policy, "api.allowed_uids, api.allowed_gids"),
            Principal::Operator => {
                (&self.cfg.operator_policy, "api.operator_allowed_uids, api.operator_allowed_gids")
            }
        };
        if !policy.admits(&peer) {
            let allowed = policy.describe();
            if let Some(suppressed) = self.refused_log.allow(Instant::now()) {
                tracing::warn!(
                    socket = %socket.display(), %peer, %allowed, suppressed,
                    "connection refused: peer not allowed on the {}", principal.socket_name()
                );
            }
            let message = format!(
                "uid {} gid {} may not use the {} {} ({keys})",
                peer.uid,
                peer.gid,
                principal.socket_name(),
                socket.display()
            );
            return self.refuse(stream, message);
        }
        let limit = match principal {
            Principal::Application => self.cfg.max_clients,
            Principal::Operator => MAX_OPERATOR_CLIENTS,
        };
        if self.clients.values().filter(|c| c.principal == principal).count() >= limit {
            if let Some(suppressed) = self.refused_log.allow(Instant::now()) {
                tracing::warn!(socket = %socket.display(), %peer, limit, suppressed, "connection refused: too many clients");
            }
            let message = match principal {
                Principal::Application => {
                    format!("too many clients: this agent accepts at most {limit} (limits.max_clients)")
                }
                Principal::Operator => {
                    format!("too many operator connections: this agent accepts at most {limit}")
                }
            };
            return self.refuse(stream, message);
        }
        let id = self.next_client;
        self.next_client += 1;
        let (rd, wr) = stream.into_split();
        let (out, rx) = mpsc::channel(self.cfg.client_queue_msgs);
        let (kill, kill_rx) = oneshot::channel();
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        actix_rt::spawn(run_writer(wr, rx, kill_rx, queued_bytes.clone()));
        let permits = Arc::new(Semaphore::new(MAX_UNANSWERED_SENDS));
        let limits = ReadLimits {
            codec: self.codec,
            frames: self.frames.clone(),
            frames_total: self.cfg.client_frames_total_bytes,
        };
        let reader = actix_rt::spawn(run_reader(id, rd, limits, ctx.address(), permits.clone()));
        // A connection that has not said hello by the deadline is closed, whatever its reader is doing
        // (it may be waiting in the middle of a frame).
        ctx.run_later(self.cfg.hello_timeout, move |act, _ctx| act.hello_deadline(id));
        self.clients.insert(
            id,
            ClientState {
                name: String::new(),
                greeted: false,
                principal,
                peer,
                out,
                kill: Some(kill),
                reader: Some(reader),
                permits,
                queued_bytes,
                groups: BTreeSet::new(),
                watching: None,
                queue: VecDeque::new(),
                send_state: SendState::Idle,
            },
        );
        self.metrics.clients.fetch_add(1, Relaxed);
        tracing::debug!(client = id, %peer, socket = principal.socket_name(), "client connected");
    }

    /// Ends a client's session: leaves its groups, stops its reader, and lets its writer send
    /// `final_error` (best-effort) before closing. `dropped` counts it in `clients_dropped`.
    fn drop_client(&mut self, id: ClientId, final_error: Option<String>, dropped: bool) {
        let Some(mut c) = self.clients.remove(&id) else { return };
        let owned: Vec<String> =
            self.owners.iter().filter(|(_, o)| **o == id).map(|(g, _)| g.clone()).collect();
        for group in owned {
            self.owners.remove(&group);
            self.links.leave.do_send(LeaveGroup { group });
        }
        if let Some(r) = c.reader.take() {
            r.abort();
        }
        let frame =
            final_error.as_ref().and_then(|m| self.codec.encode(&Reply::Error { message: m.clone() }).ok());
        if let Some(k) = c.kill.take() {
            let _ = k.send(frame.map(Arc::new));
        }
        self.metrics.clients.fetch_sub(1, Relaxed);
        if dropped {
            self.metrics.clients_dropped.fetch_add(1, Relaxed);
        }
        match &final_error {
            Some(e) => {
                if let Some(suppressed) = self.misbehaving_log.allow(Instant::now()) {
                    tracing::warn!(client = id, name = %c.name, peer = %c.peer, error = %e, suppressed, "client disconnected");
                }
            }
            None => tracing::debug!(client = id, name = %c.name, "client disconnected"),
        }
    }

    /// Closes a connection that did not say hello within `limits.hello_timeout_ms`.
    fn hello_deadline(&mut self, id: ClientId) {
        if self.clients.get(&id).is_some_and(|c| !c.greeted) {
            let ms = self.cfg.hello_timeout.as_millis();
            self.drop_client(id, Some(format!("no hello within {ms} ms (limits.hello_timeout_ms)")), true);
        }
    }

    /// Queues a frame for one client; a full queue (in events or in bytes) disconnects it as too slow.
    fn push(&mut self, id: ClientId, frame: Frame) {
        let Some(c) = self.clients.get(&id) else { return };
        let queued = c.queued_bytes.load(Relaxed);
        if queued > 0 && queued.saturating_add(frame.len()) > self.cfg.client_queue_bytes {
            let msg = format!(
                "client too slow: {queued} bytes of events queued (limits.client_queue_bytes is {})",
                self.cfg.client_queue_bytes
            );
            return self.drop_client(id, Some(msg), true);
        }
        c.queued_bytes.fetch_add(frame.len(), Relaxed);
        match c.out.try_send(frame) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                let msg = format!(
                    "client too slow: {} events queued (limits.client_queue_msgs)",
                    self.cfg.client_queue_msgs
                );
                self.drop_client(id, Some(msg), true);
            }
            // The writer ended: the socket failed. The reader will see it too; end the session now.
            Err(mpsc::error::TrySendError::Closed(_)) => self.drop_client(id, None, false),
        }
    }

    fn reply(&mut self, id: ClientId, reply: &Reply) {
        match self.codec.encode(reply) {
            Ok(f) => self.push(id, Arc::new(f)),
            Err(e) => tracing::error!(client = id, error = %e, "cannot encode a reply"),
        }
    }

    fn error(&mut self, id: ClientId, message: String) {
        self.reply(id, &Reply::Error { message });
    }

    /// Sends one event to every greeted client matching `to`.
    fn broadcast(&mut self, reply: &Reply, to: impl Fn(ClientId, &ClientState) -> bool) {
        let ids: Vec<ClientId> =
            self.clients.iter().filter(|(id, c)| c.greeted && to(**id, c)).map(|(id, _)| *id).collect();
        if ids.is_empty() {
            return;
        }
        match self.codec.encode(reply) {
            Ok(f) => {
                let frame = Arc::new(f);
                for id in ids {
                    self.push(id, frame.clone());
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot encode an event"),
        }
    }

    fn send_to_owner(&mut self, group: &str, reply: &Reply) {
        match self.owners.get(group) {
            Some(&id) => self.reply(id, reply),
            None => tracing::debug!(group, "event for a group no local client owns: dropped"),
        }
    }

    fn on_notification(&mut self, n: Notification, ctx: &mut Context<Self>) {
        match n {
            Notification::View(v) => {
                let reply = Reply::View { id: v.id, members: v.members.clone(), primary: v.primary };
                self.view = Some(v);
                self.broadcast(&reply, |_, _| true);
                self.ready_gen += 1;
                self.retry_blocked(ctx);
            }
            Notification::Deliver { group, msg, sender, delivery, view, seq, payload } => {
                let owner_of = group.clone();
                let safe = delivery == Delivery::Safe;
                let reply = Reply::Deliver { group, msg: msg.to_string(), sender, view, seq, safe, payload };
                self.send_to_owner(&owner_of, &reply);
            }
            Notification::GroupView { group, members } => {
                let owner = self.owners.get(&group).copied();
                let reply = Reply::GroupView { group: group.clone(), members };
                self.broadcast(&reply, |id, c| {
                    Some(id) == owner
                        || match &c.watching {
                            Some(Watching::All) => true,
                            Some(Watching::Group(g)) => *g == group,
                            None => false,
                        }
                });
            }
            Notification::ProvideState { group, joiner, token } => {
                if !self.owners.contains_key(&group) {
                    tracing::warn!(group, %joiner, "state requested for a group no local client owns");
                }
                self.send_to_owner(&group.clone(), &Reply::ProvideState { group, joiner, token });
            }
            Notification::ApplyState { group, provider, state } => {
                self.send_to_owner(&group.clone(), &Reply::ApplyState { group, provider, state });
            }
            Notification::Blocked(reason) => {
                self.broadcast(&Reply::Blocked { reason: block_reason_name(reason) }, |_, _| true);
            }
            Notification::Unblocked => self.broadcast(&Reply::Unblocked, |_, _| true),
            Notification::Recovered { failed } => self.broadcast(&Reply::Recovered { failed }, |_, _| true),
            Notification::RemovedSelf { view } => {
                self.broadcast(&Reply::RemovedSelf { view }, |_, _| true);
                // A removed member never comes back under its epoch, so its groups are gone for good.
                // Forget who owned them, so that a client joining again reaches the membership (and the
                // next incarnation, if the node starts one) instead of being told it already joined.
                self.owners.clear();
                for c in self.clients.values_mut() {
                    c.groups.clear();
                }
            }
            Notification::SendReady => {
                self.ready_gen += 1;
                self.retry_blocked(ctx);
            }
        }
    }

    // -----------------------------------------------------------------------------------------------
    // Requests
    // -----------------------------------------------------------------------------------------------

    fn on_request(
        &mut self,
        id: ClientId,
        req: Request,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, ()> {
        let done = || -> ResponseActFuture<Self, ()> { Box::pin(actix::fut::ready(())) };
        let Some(c) = self.clients.get_mut(&id) else { return done() };
        if !c.greeted {
            match req {
                Request::Hello { client_name, version } if version == PROTOCOL_VERSION => {
                    c.name = client_name.chars().take(100).collect();
                    c.greeted = true;
                    tracing::info!(client = id, name = %c.name, "client connected");
                    let max_frame_bytes = self.codec.max_frame_bytes() as u64;
                    return Box::pin(self.links.get_status.send(GetStatus).into_actor(self).map(
                        move |res, act, _ctx| match res {
                            Ok(s) => act.reply(
                                id,
                                &Reply::Welcome {
                                    node: s.member.0 .0,
                                    epoch: s.member.1 .0,
                                    max_frame_bytes,
                                },
                            ),
                            Err(_) => {
                                act.drop_client(id, Some("the membership is not running".into()), false)
                            }
                        },
                    ));
                }
                Request::Hello { version, .. } => {
                    let msg = format!(
                        "protocol version {version} is not supported: this agent speaks version {PROTOCOL_VERSION}"
                    );
                    self.drop_client(id, Some(msg), true);
                }
                _ => self.drop_client(id, Some("the first request must be hello".into()), true),
            }
            return done();
        }
        let operator_socket = &self.cfg.operator_socket_path;
        if let Some(message) =
            client_access::refusal(c.principal, &req, operator_socket, self.links.link_filter.is_some())
        {
            self.metrics.requests_refused.fetch_add(1, Relaxed);
            if let Some(suppressed) = self.refused_log.allow(Instant::now()) {
                let request = client_access::request_name(&req);
                tracing::warn!(client = id, name = %c.name, peer = %c.peer, request, suppressed, "request refused: {message}");
            }
            self.error(id, message);
            return done();
        }
        match req {
            Request::Hello { .. } => self.error(id, "hello was already received on this connection".into()),
            Request::Join { group } => self.join(id, group, ctx),
            Request::Leave { group } => self.leave(id, group, ctx),
            Request::Send { group, payload, safe, req } => {
                let delivery = if safe { Delivery::Safe } else { Delivery::Agreed };
                if payload.len() > self.cfg.max_message_bytes {
                    // Refused before it is queued: a client cannot park 64 oversized payloads here.
                    let error = format!(
                        "message of {} bytes exceeds limits.max_message_bytes ({})",
                        payload.len(),
                        self.cfg.max_message_bytes
                    );
                    self.answer_send(id, &Reply::SendFailed { req, error });
                } else if c.groups.contains(&group) {
                    c.queue.push_back(Pending::Send { req, group, payload, delivery });
                    self.pump(id, ctx);
                } else {
                    let error = format!("group {group} is not joined by this client");
                    self.answer_send(id, &Reply::SendFailed { req, error });
                }
            }
            Request::ProvideState { group, joiner, token, state } => {
                if self.owners.get(&group) == Some(&id) {
                    self.links.provide_state.do_send(ProvideState { group, joiner, token, state });
                    self.reply(id, &Reply::Ok);
                } else {
                    self.error(id, format!("group {group} is not joined by this client"));
                }
            }
            Request::Status => {
                return Box::pin(self.links.get_status.send(GetStatus).into_actor(self).map(
                    // The same document as the admin endpoint's `GET /status`.
                    move |res, act, _ctx| match res.map(|s| {
                        crate::admin::status_json(s.member.node(), &s).and_then(|v| serde_json::to_string(&v))
                    }) {
                        Ok(Ok(json)) => act.reply(id, &Reply::Status { json }),
                        Ok(Err(e)) => act.error(id, format!("cannot render the status: {e}")),
                        Err(_) => act.error(id, "the membership is not running".into()),
                    },
                ));
            }
            Request::FenceAck { node } => {
                self.links.ack_fence.do_send(AckFence { node: NodeId(node) });
                self.reply(id, &Reply::Ok);
            }
            Request::SetLinkFilter { blocked } => {
                // Refused above when there is no link filter.
                if let Some(filter) = &self.links.link_filter {
                    filter.do_send(SetLinkFilter { blocked: blocked.into_iter().map(NodeId).collect() });
                }
                self.reply(id, &Reply::Ok);
            }
            Request::Keys { op } => {
                let Some(ring) = self.links.key_ring.clone() else {
                    self.error(id, "this agent has no key ring".into());
                    return done();
                };
                let op = match key_ring_op(op) {
                    Ok(op) => op,
                    Err(message) => {
                        self.error(id, message);
                        return done();
                    }
                };
                return Box::pin(ring.send(ChangeKeyRing(op)).into_actor(self).map(move |res, act, _ctx| {
                    match res {
                        Ok(Ok(keys)) => act.reply(id, &Reply::Keys { keys }),
                        Ok(Err(e)) => act.error(id, e.to_string()),
                        Err(_) => act.error(id, "the transport is not running".into()),
                    }
                }));
            }
            Request::Watch { group } => {
                c.watching = Some(group.map_or(Watching::All, Watching::Group));
                self.reply(id, &Reply::Ok);
                if let Some(v) = &self.view {
                    let view = Reply::View { id: v.id, members: v.members.clone(), primary: v.primary };
                    self.reply(id, &view);
                }
            }
        }
        done()
    }

    fn join(&mut self, id: ClientId, group: String, ctx: &mut Context<Self>) {
        if group.is_empty() || group.len() > MAX_GROUP_NAME_BYTES {
            let msg = format!("invalid group name: it must be 1 to {MAX_GROUP_NAME_BYTES} bytes");
            return self.error(id, msg);
        }
        match self.owners.get(&group) {
            Some(&owner) if owner != id => {
                return self
                    .error(id, format!("group {group} is already joined by another client on this node"));
            }
            _ => {}
        }
        let Some(c) = self.clients.get_mut(&id) else { return };
        if c.queue.len() >= MAX_QUEUED_OPS {
            return self.error(id, QUEUE_FULL_ERROR.into());
        }
        if !c.groups.contains(&group) && c.groups.len() >= self.cfg.max_groups_per_client {
            let max = self.cfg.max_groups_per_client;
            return self.error(
                id,
                format!("too many groups: a client may join at most {max} (limits.max_groups_per_client)"),
            );
        }
        if c.groups.insert(group.clone()) {
            self.owners.insert(group.clone(), id);
            c.queue.push_back(Pending::Join(group));
            self.pump(id, ctx);
        }
        self.reply(id, &Reply::Ok);
    }

    fn leave(&mut self, id: ClientId, group: String, ctx: &mut Context<Self>) {
        let Some(c) = self.clients.get_mut(&id) else { return };
        if c.queue.len() >= MAX_QUEUED_OPS {
            return self.error(id, QUEUE_FULL_ERROR.into());
        }
        if !c.groups.remove(&group) {
            return self.error(id, format!("group {group} is not joined by this client"));
        }
        c.queue.push_back(Pending::Leave(group));
        self.pump(id, ctx);
        self.reply(id, &Reply::Ok);
    }

    /// Carries out the head of a client's queue: joins and leaves at once, then at most one multicast.
    fn pump(&mut self, id: ClientId, ctx: &mut Context<Self>) {
        loop {
            let Some(c) = self.clients.get_mut(&id) else { return };
            if c.send_state != SendState::Idle {
                return;
            }
            match c.queue.front() {
                None => return,
                Some(Pending::Join(_)) => {
                    if let Some(Pending::Join(group)) = c.queue.pop_front() {
                        self.links.join.do_send(JoinGroup { group });
                    }
                }
                Some(Pending::Leave(_)) => {
                    if let Some(Pending::Leave(group)) = c.queue.pop_front() {
                        // A client that joined the group again after leaving it keeps owning it.
                        if !c.groups.contains(&group) && self.owners.get(&group) == Some(&id) {
                            self.owners.remove(&group);
                        }
                        self.links.leave.do_send(LeaveGroup { group });
                    }
                }
                Some(Pending::Send { group, payload, delivery, .. }) => {
                    // The payload is kept until the send is accepted: a `QueueFull` answer does not give
                    // it back.
                    let msg =
                        Multicast { group: group.clone(), payload: payload.clone(), delivery: *delivery };
                    c.send_state = SendState::InFlight;
                    let gen = self.ready_gen;
                    let fut = self.links.multicast.send(msg);
                    ctx.spawn(
                        fut.into_actor(self).map(move |res, act, ctx| act.on_multicast(id, gen, res, ctx)),
                    );
                    return;
                }
            }
        }
    }

    fn on_multicast(
        &mut self,
        id: ClientId,
        gen: u64,
        res: Result<Result<MsgId, SendError>, MailboxError>,
        ctx: &mut Context<Self>,
    ) {
        let Some(c) = self.clients.get_mut(&id) else { return };
        let outcome = match res {
            Ok(Ok(msg)) => Ok(msg.to_string()),
            Ok(Err(SendError::QueueFull)) => {
                if gen != self.ready_gen {
                    c.send_state = SendState::Idle;
                    self.pump(id, ctx);
                } else {
                    c.send_state = SendState::Blocked;
                    self.arm_retry(ctx);
                }
                return;
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the membership is not running".to_string()),
        };
        c.send_state = SendState::Idle;
        let Some(Pending::Send { req, .. }) = c.queue.pop_front() else { return };
        let reply = match outcome {
            Ok(msg) => Reply::Sent { req, msg },
            Err(error) => Reply::SendFailed { req, error },
        };
        self.answer_send(id, &reply);
        self.pump(id, ctx);
    }

    /// Sends a `Sent` or `SendFailed` and returns the client's unanswered-send permit.
    fn answer_send(&mut self, id: ClientId, reply: &Reply) {
        if let Some(c) = self.clients.get(&id) {
            c.permits.add_permits(1);
        }
        self.reply(id, reply);
    }

    fn retry_blocked(&mut self, ctx: &mut Context<Self>) {
        let blocked: Vec<ClientId> = self
            .clients
            .iter()
            .filter(|(_, c)| c.send_state == SendState::Blocked)
            .map(|(id, _)| *id)
            .collect();
        for id in blocked {
            if let Some(c) = self.clients.get_mut(&id) {
                c.send_state = SendState::Idle;
            }
            self.pump(id, ctx);
        }
    }

    fn arm_retry(&mut self, ctx: &mut Context<Self>) {
        if self.retry_timer.is_none() {
            self.retry_timer = Some(ctx.run_later(SEND_RETRY_INTERVAL, |act, ctx| {
                act.retry_timer = None;
                act.retry_blocked(ctx);
            }));
        }
    }
}

impl Actor for ClientApiActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let sockets = [
            (Principal::Application, self.cfg.socket_path.clone(), self.cfg.socket_mode),
            (Principal::Operator, self.cfg.operator_socket_path.clone(), self.cfg.operator_socket_mode),
        ];
        for (principal, path, mode) in sockets {
            match self.listen(&path, mode) {
                Ok(listener) => {
                    tracing::info!(path = %path.display(), mode = format!("{mode:o}"), "{} listening", principal.socket_name());
                    ctx.add_stream(Incoming::new(listener, principal));
                }
                Err(e) => {
                    let detail =
                        format!("cannot listen on the {} {}: {e}", principal.socket_name(), path.display());
                    tracing::error!("{detail}");
                    if let Some(f) = &self.fatal {
                        f.do_send(FatalError { detail });
                    }
                    ctx.stop();
                    return;
                }
            }
        }
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        for c in self.clients.values_mut() {
            if let Some(r) = c.reader.take() {
                r.abort();
            }
        }
        self.metrics.clients.fetch_sub(self.clients.len() as u64, Relaxed);
        self.clients.clear();
        for path in &self.bound {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn block_reason_name(reason: BlockReason) -> String {
    match serde_json::to_value(reason) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{reason:?}"),
    }
}

impl StreamHandler<Accepted> for ClientApiActor {
    fn handle(&mut self, Accepted(principal, item): Accepted, ctx: &mut Context<Self>) {
        match item {
            Ok(stream) => self.accept(principal, stream, ctx),
            Err(e) => {
                if let Some(suppressed) = self.refused_log.allow(Instant::now()) {
                    tracing::warn!(error = %e, suppressed, "cannot accept a connection on the {}", principal.socket_name());
                }
            }
        }
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {
        // The listener never ends by itself; keep serving the connected clients if it does.
        tracing::warn!("a socket of the client API stopped accepting connections");
    }
}

impl Handler<ClientRequest> for ClientApiActor {
    type Result = ResponseActFuture<Self, ()>;
    fn handle(&mut self, msg: ClientRequest, ctx: &mut Context<Self>) -> Self::Result {
        self.on_request(msg.client, msg.req, ctx)
    }
}

impl Handler<ClientGone> for ClientApiActor {
    type Result = ();
    fn handle(&mut self, msg: ClientGone, _ctx: &mut Context<Self>) {
        let dropped = msg.error.is_some();
        self.drop_client(msg.client, msg.error, dropped);
    }
}

impl Handler<AppNotified> for ClientApiActor {
    type Result = ();
    fn handle(&mut self, msg: AppNotified, ctx: &mut Context<Self>) {
        self.on_notification(msg.0, ctx);
    }
}

impl Handler<SelfFenced> for ClientApiActor {
    type Result = ();
    fn handle(&mut self, msg: SelfFenced, _ctx: &mut Context<Self>) {
        self.broadcast(&Reply::SelfFenced { reason: msg.reason }, |_, _| true);
    }
}

/// The transport's form of an operator's key-ring request. A key file is checked exactly as
/// `node.key_file` is (owner, mode, one 32-byte key), by the agent, as the agent's user; every refusal
/// names the file or the key id.
fn key_ring_op(op: KeyRequest) -> Result<KeyRingOp, String> {
    let id = |text: &str| text.parse::<crate::crypto::KeyId>();
    match op {
        KeyRequest::Install { path } => {
            let p = std::path::Path::new(&path);
            if !p.is_absolute() {
                return Err(format!("key file {path}: the path must be absolute (the agent runs elsewhere)"));
            }
            let rule = crate::key_file::OwnerRule::Agent(crate::key_file::effective_uid());
            match crate::key_file::check(p, rule) {
                Ok((key, _)) => Ok(KeyRingOp::Install { key, source: path }),
                // The checks are node.key_file's, and so are their words; this file is not that key.
                Err(e) => Err(e.to_string().replace(" (node.key_file)", "")),
            }
        }
        KeyRequest::Use { id: text } => id(&text).map(KeyRingOp::Use),
        KeyRequest::Remove { id: text } => id(&text).map(KeyRingOp::Remove),
        KeyRequest::List => Ok(KeyRingOp::List),
    }
}
