//! The Rust client library for the local cohort agent: connect to the agent's Unix socket, join process
//! groups, multicast, and receive a stream of typed events (views, deliveries in the total order, state
//! transfers, blocks). The wire protocol is [`crate::client_proto`]; the `cohort` CLI's `status`, `watch`,
//! `send`, `members` and `fence ack` commands are built on this module. The same client connects to the
//! agent's operator socket for the operator commands ([`Client::fence_ack`], [`Client::set_link_filter`]).
//!
//! A [`Client`] is one connection, used from one task (`&mut self` everywhere). Requests that have a
//! reply ([`Client::join`], [`Client::status`], ...) wait for it; events that arrive meanwhile are kept
//! and returned, in order, by [`Client::next_event`]. [`Client::send`] waits until the agent accepted the
//! message into the total order and returns its id; [`Client::send_nowait`] returns at once, so up to
//! [`MAX_UNANSWERED_SENDS`] messages can be in flight, and their [`ClientEvent::Sent`] or
//! [`ClientEvent::SendFailed`] answers come out of [`Client::next_event`].
//!
//! Each local group has one owner: a second client on the same node joining a group already joined
//! there gets [`ClientError::Agent`]. A client must drain its events: the agent disconnects a client
//! whose unread events exceed its queue (`limits.client_queue_msgs`).
//!
//! # Example
//! A replicated counter: every member applies the same increments in the same order, and a joiner gets
//! the current value by state transfer.
//! ```no_run
//! use cohort::Delivery;
//! use cohort_actors::client::{Client, ClientEvent};
//!
//! # async fn run() -> Result<(), cohort_actors::client::ClientError> {
//! let mut client = Client::connect("/var/lib/cohort/cohort.sock", "counter").await?;
//! client.join("counter").await?;
//! let mut value: u64 = 0;
//! client.send("counter", 5u64.to_be_bytes().to_vec(), Delivery::Agreed).await?;
//! loop {
//!     match client.next_event().await? {
//!         ClientEvent::Deliver { payload, .. } => {
//!             let mut n = [0u8; 8];
//!             if payload.len() == 8 {
//!                 n.copy_from_slice(&payload);
//!                 value += u64::from_be_bytes(n);
//!                 println!("counter = {value}");
//!             }
//!         }
//!         ClientEvent::ProvideState { group, joiner, token } => {
//!             client.provide_state(&group, joiner, token, value.to_be_bytes().to_vec()).await?;
//!         }
//!         ClientEvent::ApplyState { state, .. } => {
//!             let mut n = [0u8; 8];
//!             if state.len() == 8 {
//!                 n.copy_from_slice(&state);
//!                 value = u64::from_be_bytes(n);
//!             }
//!         }
//!         ClientEvent::Blocked { reason } => println!("blocked: {reason}"),
//!         ClientEvent::SelfFenced { .. } | ClientEvent::RemovedSelf { .. } => break,
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```

use crate::client_proto::{
    FrameCodec, KeyRequest, ProtoError, Reply, Request, MAX_FRAME_BYTES, MAX_UNANSWERED_SENDS,
    PROTOCOL_VERSION,
};
use cohort::msg::TransferToken;
use cohort::{Delivery, Epoch, Member, NodeId, ViewId};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// How many bytes the client asks the socket for at a time.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Why a client operation failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The agent's socket could not be connected to; nothing was sent.
    #[error("cannot connect to the cohort agent at {}: is `cohort agent` running? ({cause})", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// What connect said (part of the message, so not also reported as the error's source).
        cause: std::io::Error,
    },
    /// Reading or writing the connection failed; the connection is unusable.
    #[error("connection to the cohort agent failed: {0}")]
    Io(#[from] std::io::Error),
    /// The agent closed the connection; the connection is unusable.
    #[error("the cohort agent closed the connection")]
    Closed,
    /// A frame from the agent was invalid; the connection is unusable.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtoError),
    /// The agent refused the request (the message says why); the connection still works unless the
    /// agent closes it next (after a protocol violation or when this client was too slow).
    #[error("the cohort agent refused: {0}")]
    Agent(String),
    /// The membership refused a send; nothing was sent; the connection still works.
    #[error("send failed: {0}")]
    SendFailed(String),
    /// The agent answered something this client did not ask for (a bug on one side).
    #[error("unexpected answer from the cohort agent: {0}")]
    Unexpected(String),
}

/// An event from the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// A view was installed.
    View {
        /// The view id.
        id: ViewId,
        /// The members, sorted.
        members: Vec<Member>,
        /// True when the view holds quorum.
        primary: bool,
    },
    /// A message of a joined group, in the total order.
    Deliver {
        /// The group.
        group: String,
        /// The message id, `"<node>.<epoch>.<n>"`.
        msg: String,
        /// The sender.
        sender: Member,
        /// The view it was delivered in.
        view: ViewId,
        /// Its position in the view's total order.
        seq: u64,
        /// Agreed or safe.
        delivery: Delivery,
        /// The message.
        payload: Vec<u8>,
    },
    /// A group's membership changed.
    GroupView {
        /// The group.
        group: String,
        /// The members, sorted.
        members: Vec<Member>,
    },
    /// Provide the group's state now with [`Client::provide_state`].
    ProvideState {
        /// The group.
        group: String,
        /// Who joins.
        joiner: Member,
        /// The transfer.
        token: TransferToken,
    },
    /// Replace the group's state with this one.
    ApplyState {
        /// The group.
        group: String,
        /// Who provided it.
        provider: Member,
        /// The state.
        state: Vec<u8>,
    },
    /// Stop changing shared state (`no_quorum`, `fencing`, `stateful_merge_wait`, `state_transfer`).
    Blocked {
        /// Why.
        reason: String,
    },
    /// No block remains.
    Unblocked,
    /// Recovery for these failed members may proceed: they are fenced.
    Recovered {
        /// The members.
        failed: Vec<Member>,
    },
    /// This member was removed from the primary view.
    RemovedSelf {
        /// The primary view.
        view: ViewId,
    },
    /// The node's watchdog fired: stop acting on shared state now.
    SelfFenced {
        /// Why.
        reason: String,
    },
    /// A [`Client::send_nowait`] was accepted into the total order.
    Sent {
        /// The request number `send_nowait` returned.
        req: u64,
        /// The message id.
        msg: String,
    },
    /// A [`Client::send_nowait`] was refused; nothing was sent.
    SendFailed {
        /// The request number `send_nowait` returned.
        req: u64,
        /// Why.
        error: String,
    },
}

/// What a frame from the agent is: an event, or the answer to the request being waited for.
enum Incoming {
    Event(ClientEvent),
    Answer(Reply),
}

fn classify(reply: Reply) -> Incoming {
    use ClientEvent as E;
    Incoming::Event(match reply {
        Reply::View { id, members, primary } => E::View { id, members, primary },
        Reply::Deliver { group, msg, sender, view, seq, safe, payload } => {
            let delivery = if safe { Delivery::Safe } else { Delivery::Agreed };
            E::Deliver { group, msg, sender, view, seq, delivery, payload }
        }
        Reply::GroupView { group, members } => E::GroupView { group, members },
        Reply::ProvideState { group, joiner, token } => E::ProvideState { group, joiner, token },
        Reply::ApplyState { group, provider, state } => E::ApplyState { group, provider, state },
        Reply::Blocked { reason } => E::Blocked { reason },
        Reply::Unblocked => E::Unblocked,
        Reply::Recovered { failed } => E::Recovered { failed },
        Reply::RemovedSelf { view } => E::RemovedSelf { view },
        Reply::SelfFenced { reason } => E::SelfFenced { reason },
        Reply::Sent { req, msg } => E::Sent { req, msg },
        Reply::SendFailed { req, error } => E::SendFailed { req, error },
        other @ (Reply::Welcome { .. }
        | Reply::Status { .. }
        | Reply::Keys { .. }
        | Reply::Ok
        | Reply::Error { .. }) => return Incoming::Answer(other),
    })
}

fn describe(reply: &Reply) -> String {
    match reply {
        Reply::Welcome { .. } => "welcome".into(),
        Reply::Status { .. } => "status".into(),
        Reply::Keys { .. } => "keys".into(),
        Reply::Ok => "ok".into(),
        Reply::Error { message } => format!("error: {message}"),
        other => format!("{other:?}"),
    }
}

/// One connection to the local agent. See the module documentation.
pub struct Client {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    codec: FrameCodec,
    /// Bytes read and not yet decoded, from `rpos`.
    rbuf: Vec<u8>,
    rpos: usize,
    /// Events read while waiting for an answer, in order.
    events: VecDeque<ClientEvent>,
    next_req: u64,
    unanswered: usize,
    member: Member,
    path: PathBuf,
}

impl Client {
    /// Connects to the agent's socket at `path` and introduces itself as `name` (shown in the agent's
    /// log). Fails with [`ClientError::Connect`] when no agent listens there.
    pub async fn connect(path: impl AsRef<Path>, name: &str) -> Result<Client, ClientError> {
        let path = path.as_ref().to_path_buf();
        let stream = UnixStream::connect(&path)
            .await
            .map_err(|cause| ClientError::Connect { path: path.clone(), cause })?;
        let (rd, wr) = stream.into_split();
        let mut client = Client {
            rd,
            wr,
            codec: FrameCodec::new(MAX_FRAME_BYTES),
            rbuf: Vec::new(),
            rpos: 0,
            events: VecDeque::new(),
            next_req: 1,
            unanswered: 0,
            member: Member(NodeId(0), Epoch(0)),
            path,
        };
        let hello = Request::Hello { client_name: name.to_string(), version: PROTOCOL_VERSION };
        match client.request(&hello).await? {
            Reply::Welcome { node, epoch, max_frame_bytes } => {
                client.member = Member(NodeId(node), Epoch(epoch));
                let max = usize::try_from(max_frame_bytes).unwrap_or(usize::MAX);
                client.codec = FrameCodec::new(max.max(MAX_FRAME_BYTES));
                Ok(client)
            }
            Reply::Error { message } => Err(ClientError::Agent(message)),
            other => Err(ClientError::Unexpected(describe(&other))),
        }
    }

    /// This node's member (node id and epoch) as of the connection.
    pub fn member(&self) -> Member {
        self.member
    }

    /// The socket this client is connected to.
    pub fn socket_path(&self) -> &Path {
        &self.path
    }

    /// Sends from [`Client::send_nowait`] not yet answered by `Sent` or `SendFailed`.
    pub fn unanswered_sends(&self) -> usize {
        self.unanswered
    }

    /// Joins `group`. Returns once the agent accepted the request; the join completes when a
    /// [`ClientEvent::GroupView`] listing this member arrives (and, when the group had members, a
    /// [`ClientEvent::ApplyState`]).
    pub async fn join(&mut self, group: &str) -> Result<(), ClientError> {
        self.expect_ok(&Request::Join { group: group.to_string() }).await
    }

    /// Leaves `group`, after this client's earlier sends to it.
    pub async fn leave(&mut self, group: &str) -> Result<(), ClientError> {
        self.expect_ok(&Request::Leave { group: group.to_string() }).await
    }

    /// Multicasts `payload` to `group` (which this client joined) and waits until the membership
    /// accepted it into the total order; returns the message id (`"<node>.<epoch>.<n>"`). When the send
    /// queue is full this waits (backpressure). Events that arrive meanwhile are kept for
    /// [`Client::next_event`].
    pub async fn send(
        &mut self,
        group: &str,
        payload: Vec<u8>,
        delivery: Delivery,
    ) -> Result<String, ClientError> {
        let req = self.send_nowait(group, payload, delivery).await?;
        loop {
            match self.read_incoming().await? {
                Incoming::Event(ClientEvent::Sent { req: r, msg }) if r == req => return Ok(msg),
                Incoming::Event(ClientEvent::SendFailed { req: r, error }) if r == req => {
                    return Err(ClientError::SendFailed(error))
                }
                Incoming::Event(e) => self.events.push_back(e),
                Incoming::Answer(Reply::Error { message }) => return Err(ClientError::Agent(message)),
                Incoming::Answer(other) => return Err(ClientError::Unexpected(describe(&other))),
            }
        }
    }

    /// Multicasts without waiting for the answer and returns the request number that the
    /// [`ClientEvent::Sent`] or [`ClientEvent::SendFailed`] answer will carry. When
    /// [`MAX_UNANSWERED_SENDS`] sends are already unanswered, first reads until one is answered (keeping
    /// what it reads for [`Client::next_event`]).
    pub async fn send_nowait(
        &mut self,
        group: &str,
        payload: Vec<u8>,
        delivery: Delivery,
    ) -> Result<u64, ClientError> {
        while self.unanswered >= MAX_UNANSWERED_SENDS {
            match self.read_incoming().await? {
                Incoming::Event(e) => self.events.push_back(e),
                Incoming::Answer(Reply::Error { message }) => return Err(ClientError::Agent(message)),
                Incoming::Answer(other) => return Err(ClientError::Unexpected(describe(&other))),
            }
        }
        let req = self.next_req;
        self.next_req += 1;
        let safe = delivery == Delivery::Safe;
        self.write(&Request::Send { group: group.to_string(), payload, safe, req }).await?;
        self.unanswered += 1;
        Ok(req)
    }

    /// Answers a [`ClientEvent::ProvideState`]: `state` is the group's state at the point of the delivery
    /// stream where the request arrived.
    pub async fn provide_state(
        &mut self,
        group: &str,
        joiner: Member,
        token: TransferToken,
        state: Vec<u8>,
    ) -> Result<(), ClientError> {
        self.expect_ok(&Request::ProvideState { group: group.to_string(), joiner, token, state }).await
    }

    /// The node's status: the same JSON document as the admin endpoint's `GET /status`.
    pub async fn status(&mut self) -> Result<serde_json::Value, ClientError> {
        match self.request(&Request::Status).await? {
            Reply::Status { json } => serde_json::from_str(&json).map_err(|e| {
                ClientError::Protocol(ProtoError::Malformed(format!("status is not JSON: {e}")))
            }),
            Reply::Error { message } => Err(ClientError::Agent(message)),
            other => Err(ClientError::Unexpected(describe(&other))),
        }
    }

    /// Acknowledges, as an operator, that `node` is fenced. Served only on the agent's operator socket
    /// (connect to it, not to the client socket; see [`crate::client_access`]).
    pub async fn fence_ack(&mut self, node: NodeId) -> Result<(), ClientError> {
        self.expect_ok(&Request::FenceAck { node: node.0 }).await
    }

    /// Changes or lists the agent's cluster key ring (`cohort key ...`), answering with the installed keys
    /// after the change. Served only on the operator socket.
    pub async fn keys(&mut self, op: KeyRequest) -> Result<Vec<crate::crypto::KeyInfo>, ClientError> {
        match self.request(&Request::Keys { op }).await? {
            Reply::Keys { keys } => Ok(keys),
            Reply::Error { message } => Err(ClientError::Agent(message)),
            other => Err(ClientError::Unexpected(describe(&other))),
        }
    }

    /// Cuts this agent off from `blocked` nodes (an empty list restores every link). For demos and tests:
    /// served only on the operator socket of an agent with `testing.link_filter = true`.
    pub async fn set_link_filter(&mut self, blocked: &[NodeId]) -> Result<(), ClientError> {
        self.expect_ok(&Request::SetLinkFilter { blocked: blocked.iter().map(|n| n.0).collect() }).await
    }

    /// Receives view, group-view and block events of one group (`Some`) or of all groups (`None`) without
    /// joining. The current view, when one is installed, follows as the next event.
    pub async fn watch(&mut self, group: Option<&str>) -> Result<(), ClientError> {
        self.expect_ok(&Request::Watch { group: group.map(str::to_string) }).await
    }

    /// The next event, waiting for it when none is buffered. An `Error` from the agent (it is about to
    /// close the connection) is returned as [`ClientError::Agent`], the end of the connection as
    /// [`ClientError::Closed`]. Cancel-safe: dropping the future loses nothing, so it can be used in
    /// `tokio::select!`.
    pub async fn next_event(&mut self) -> Result<ClientEvent, ClientError> {
        if let Some(e) = self.events.pop_front() {
            return Ok(e);
        }
        match self.read_incoming().await? {
            Incoming::Event(e) => Ok(e),
            Incoming::Answer(Reply::Error { message }) => Err(ClientError::Agent(message)),
            Incoming::Answer(other) => Err(ClientError::Unexpected(describe(&other))),
        }
    }

    async fn expect_ok(&mut self, req: &Request) -> Result<(), ClientError> {
        match self.request(req).await? {
            Reply::Ok => Ok(()),
            Reply::Error { message } => Err(ClientError::Agent(message)),
            other => Err(ClientError::Unexpected(describe(&other))),
        }
    }

    /// Writes a request and waits for its answer, keeping events that arrive meanwhile.
    async fn request(&mut self, req: &Request) -> Result<Reply, ClientError> {
        self.write(req).await?;
        loop {
            match self.read_incoming().await? {
                Incoming::Event(e) => self.events.push_back(e),
                Incoming::Answer(a) => return Ok(a),
            }
        }
    }

    async fn write(&mut self, req: &Request) -> Result<(), ClientError> {
        let frame = self.codec.encode(req)?;
        self.wr.write_all(&frame).await?;
        Ok(())
    }

    /// Reads the next frame. Cancel-safe: bytes are only consumed from the socket by a completed `read`,
    /// and appended to the buffer before the next await.
    async fn read_incoming(&mut self) -> Result<Incoming, ClientError> {
        loop {
            if let Some((reply, used)) = self.codec.decode_frame::<Reply>(&self.rbuf[self.rpos..])? {
                self.rpos += used;
                if self.rpos == self.rbuf.len() {
                    self.rbuf.clear();
                    self.rpos = 0;
                    // Do not keep a state transfer's worth of memory after a large frame.
                    if self.rbuf.capacity() > 16 * READ_CHUNK_BYTES {
                        self.rbuf.shrink_to(READ_CHUNK_BYTES);
                    }
                }
                if matches!(reply, Reply::Sent { .. } | Reply::SendFailed { .. }) {
                    self.unanswered = self.unanswered.saturating_sub(1);
                }
                return Ok(classify(reply));
            }
            if self.rpos > 0 {
                self.rbuf.drain(..self.rpos);
                self.rpos = 0;
            }
            self.rbuf.reserve(READ_CHUNK_BYTES);
            let n = self.rd.read_buf(&mut self.rbuf).await?;
            if n == 0 {
                return Err(if self.rbuf.is_empty() {
                    ClientError::Closed
                } else {
                    ProtoError::Truncated.into()
                });
            }
        }
    }
}
