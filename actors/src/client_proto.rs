//! The local client protocol: what an application and its node's agent say to each other over the
//! agent's Unix socket (`[api] socket`, mode 0660).
//!
//! # Framing
//! A connection carries frames in both directions. A frame is a 4-byte big-endian length followed by
//! that many bytes of MessagePack (rmp-serde, structs as maps with field names, so clients in other
//! languages can read it with any MessagePack library). The length is checked against the receiver's
//! limit *before* anything is allocated or decoded ([`FrameCodec`]); a frame over the limit, or one that
//! does not decode, gets an [`Reply::Error`] and the connection is closed, because the byte stream can no
//! longer be trusted. Decoding arbitrary bytes never panics (property-tested below).
//!
//! Limits: a message payload is at most 1 MiB ([`MAX_MESSAGE_BYTES`]) plus room for the envelope, so the
//! default frame limit is [`MAX_FRAME_BYTES`]. A state-transfer answer ([`Request::ProvideState`]) and its
//! delivery ([`Reply::ApplyState`]) carry a whole group state, up to the cluster's `max_state_bytes`
//! (64 MiB by default), so the limit is a parameter of the codec: the agent uses
//! [`frame_limit`]`(max_message_bytes, max_state_bytes)` in both directions and announces it in
//! [`Reply::Welcome`], and the client library adopts it.
//!
//! # Enums on the wire
//! Both enums are serde's externally tagged form: a unit variant is its name as a string (`"Status"`), any
//! other variant a one-entry map from its name to its fields (`{"Join": {"group": "orders"}}`). Payloads
//! and states are MessagePack `bin`. Members are `[node, epoch]`, view ids `{"seq": S, "coord": C}`,
//! transfer tokens `{"view": {...}, "seq": N}`: the serde forms of the core's types.
//!
//! # Conversation
//! 1. The client sends [`Request::Hello`] with [`PROTOCOL_VERSION`] in a frame of at most
//!    [`MAX_HELLO_FRAME_BYTES`], within `limits.hello_timeout_ms` of connecting; the agent answers
//!    [`Reply::Welcome`], or [`Reply::Error`] and closes the connection when the version differs, the
//!    first request is not a `Hello`, its frame is larger, or it does not arrive in time.
//! 2. Requests are handled in the order they are read. Every request except `Send` gets exactly one
//!    reply in that order: `Ok`, `Error`, `Status` or `Welcome`. A `Send` carries the client's `req`
//!    number and is answered by `Sent{req}` or `SendFailed{req}` when the membership accepted or refused
//!    it, so sends can be pipelined: up to [`MAX_UNANSWERED_SENDS`] may be unanswered; beyond that the
//!    agent stops reading the connection until one is answered (the socket buffer pushes back).
//! 3. Events ([`Reply::View`], [`Reply::Deliver`], ...) arrive at any time between replies.
//!
//! The same protocol runs on the agent's two sockets: the client socket for applications and the
//! operator socket for operators. Which requests each serves, and which peers (by `SO_PEERCRED`) may
//! connect to each, is [`crate::client_access`]; an operator request on the client socket is answered
//! by an `Error` naming it and the operator socket.
//!
//! **Deliberately absent:** authentication in the protocol (the kernel's peer credentials and the
//! sockets' file modes are the access control), and several
//! clients sharing one process group on one node: the core's process groups belong to the node's
//! member, so a group is owned by the one local client that joined it (a second local client's `Join`
//! gets an `Error`).

use cohort::msg::TransferToken;
use cohort::{Member, ViewId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The protocol version a client announces in [`Request::Hello`]. Bumped on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest application message payload the protocol is sized for by default.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Room for the envelope around a payload or a state (group name, ids, MessagePack markers).
pub const FRAME_OVERHEAD_BYTES: usize = 64 * 1024;

/// The default frame limit: a 1 MiB message plus its envelope.
pub const MAX_FRAME_BYTES: usize = MAX_MESSAGE_BYTES + FRAME_OVERHEAD_BYTES;

/// The frame limit before a connection said hello: a hello is a name and a version, and a peer that
/// has not introduced itself gets no room for more (the agent's full limit applies after the hello).
pub const MAX_HELLO_FRAME_BYTES: usize = 64 * 1024;

/// At most this many `Send` requests of one client may be unanswered; the agent reads no further
/// requests of that client until one is answered.
pub const MAX_UNANSWERED_SENDS: usize = 64;

/// The longest group name accepted, in bytes.
pub const MAX_GROUP_NAME_BYTES: usize = 255;

/// The deepest MessagePack nesting accepted when decoding: the protocol needs fewer than ten levels, and
/// a low limit keeps hostile input from using the stack.
const MAX_DECODE_DEPTH: usize = 32;

/// The frame limit for a cluster's limits: large enough for its largest message and its largest state,
/// and never below [`MAX_FRAME_BYTES`].
pub fn frame_limit(max_message_bytes: usize, max_state_bytes: usize) -> usize {
    MAX_FRAME_BYTES
        .max(max_message_bytes.saturating_add(FRAME_OVERHEAD_BYTES))
        .max(max_state_bytes.saturating_add(FRAME_OVERHEAD_BYTES))
}

/// What a client asks of its agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// The first request of every connection. Answered by [`Reply::Welcome`], or by [`Reply::Error`] and
    /// a disconnect when `version` is not [`PROTOCOL_VERSION`].
    Hello {
        /// A name for logs (`cohort send`, `orders-service`).
        client_name: String,
        /// [`PROTOCOL_VERSION`] of the client.
        version: u32,
    },
    /// Join a process group. `Ok`, or `Error` when the name is invalid or another local client already
    /// joined the group. Joining a group this client already joined is `Ok` and changes nothing. The
    /// join itself completes asynchronously: a [`Reply::GroupView`] listing this member follows, and, when
    /// the group had members, a [`Reply::ApplyState`].
    Join {
        /// The group.
        group: String,
    },
    /// Leave a process group this client joined. `Ok`, or `Error` when it did not join it.
    Leave {
        /// The group.
        group: String,
    },
    /// Multicast to a group this client joined. Answered by [`Reply::Sent`] or [`Reply::SendFailed`]
    /// carrying the same `req`; sends of one client reach the total order in the order they were sent.
    Send {
        /// The group.
        group: String,
        /// The message.
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
        /// `true` for safe delivery (delivered once every member has it), `false` for agreed.
        safe: bool,
        /// The client's number for this send, echoed in the answer.
        req: u64,
    },
    /// The answer to [`Reply::ProvideState`]: the group's state at that point of the delivery stream.
    /// `Ok`, or `Error` when this client does not own the group.
    ProvideState {
        /// The group.
        group: String,
        /// The joiner, as in the request.
        joiner: Member,
        /// The transfer, as in the request.
        token: TransferToken,
        /// The state.
        #[serde(with = "serde_bytes")]
        state: Vec<u8>,
    },
    /// The node's status: answered by [`Reply::Status`].
    Status,
    /// An operator acknowledges that `node` is fenced (`cohort fence ack NODE`). `Ok`; only on the
    /// operator socket.
    FenceAck {
        /// The node id.
        node: u32,
    },
    /// Drop all traffic to and from these nodes, replacing the previous filter (demos and tests). `Ok`;
    /// only on the operator socket, and only when `testing.link_filter` is on.
    SetLinkFilter {
        /// Node ids cut off from this agent; empty restores every link.
        blocked: Vec<u32>,
    },
    /// The cluster key ring of this agent (`cohort key install|use|remove|list`): answered by
    /// [`Reply::Keys`] with the installed keys after the change, or `Error` naming the key file or key.
    /// Only on the operator socket.
    Keys {
        /// What to do.
        op: KeyRequest,
    },
    /// Receive every view, group-view and block event without joining a group: all groups the node
    /// takes part in (`None`) or one group. `Ok`, followed by the current view when one is installed.
    Watch {
        /// One group, or all.
        group: Option<String>,
    },
}

/// A key-ring command ([`Request::Keys`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyRequest {
    /// Read the key file at this path (absolute; checked like `node.key_file`) and accept its key.
    Install {
        /// The key file.
        path: String,
    },
    /// Seal with the installed key of this id (eight hex digits) from now on.
    Use {
        /// The key id.
        id: String,
    },
    /// Stop accepting the installed key of this id; refused for the primary key.
    Remove {
        /// The key id.
        id: String,
    },
    /// Change nothing.
    List,
}

/// What the agent tells a client: replies to requests, and events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The answer to [`Request::Hello`].
    Welcome {
        /// This node's id.
        node: u32,
        /// This node's current epoch (incarnation).
        epoch: u64,
        /// The frame limit of this agent in both directions (see [`frame_limit`]).
        max_frame_bytes: u64,
    },
    /// A send was accepted into the total order.
    Sent {
        /// The client's number for the send.
        req: u64,
        /// The message id, `"<node>.<epoch>.<n>"` as in the event log.
        msg: String,
    },
    /// A send was refused; nothing was sent.
    SendFailed {
        /// The client's number for the send.
        req: u64,
        /// Why (`message larger than max_message_bytes`, `member stopped`, ...).
        error: String,
    },
    /// A view was installed (sent to every client).
    View {
        /// The view id.
        id: ViewId,
        /// The members, sorted.
        members: Vec<Member>,
        /// True when the view holds quorum.
        primary: bool,
    },
    /// A message of a group this client joined, in the total order.
    Deliver {
        /// The group.
        group: String,
        /// The message id, `"<node>.<epoch>.<n>"`.
        msg: String,
        /// The sending member.
        sender: Member,
        /// The view it was delivered in.
        view: ViewId,
        /// Its position in that view's total order.
        seq: u64,
        /// True for safe delivery, false for agreed.
        safe: bool,
        /// The message.
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// A group's membership changed (to its local owner and to watchers).
    GroupView {
        /// The group.
        group: String,
        /// The members, sorted.
        members: Vec<Member>,
    },
    /// Provide the group's state as it is now, at this point of the delivery stream, with
    /// [`Request::ProvideState`].
    ProvideState {
        /// The group.
        group: String,
        /// Who joins.
        joiner: Member,
        /// The transfer.
        token: TransferToken,
    },
    /// Replace the group's state with this one; later deliveries of the group build on it.
    ApplyState {
        /// The group.
        group: String,
        /// Who provided it.
        provider: Member,
        /// The state.
        #[serde(with = "serde_bytes")]
        state: Vec<u8>,
    },
    /// Applications must stop changing shared state (`no_quorum`, `fencing`, `stateful_merge_wait`,
    /// `state_transfer`).
    Blocked {
        /// The block reason, snake_case as in the event log.
        reason: String,
    },
    /// No block remains.
    Unblocked,
    /// Recovery for these failed members may proceed: they are fenced.
    Recovered {
        /// The members.
        failed: Vec<Member>,
    },
    /// This member was removed from the primary view. Its groups are gone: the agent forgets which
    /// client owned them, and a client that wants to take part again joins again (in the node's next
    /// incarnation, when it starts one) and receives the state by transfer.
    RemovedSelf {
        /// The primary view.
        view: ViewId,
    },
    /// The node's watchdog fired: stop acting on shared state now.
    SelfFenced {
        /// Why.
        reason: String,
    },
    /// The answer to [`Request::Status`]: the same JSON document as the admin endpoint's `GET /status`,
    /// as text. JSON text rather than a MessagePack tree keeps the document's shape owned by the core's
    /// `Status` type and keeps a deeply nested hostile frame from reaching a recursive decoder.
    Status {
        /// The JSON document.
        json: String,
    },
    /// The answer to [`Request::Keys`]: the installed keys, in id order, after the change.
    Keys {
        /// The keys.
        keys: Vec<crate::crypto::KeyInfo>,
    },
    /// The request was carried out.
    Ok,
    /// The request was refused, or (followed by a disconnect) the connection is being closed.
    Error {
        /// Why, in one lowercase line.
        message: String,
    },
}

/// Why a frame could not be read, written, encoded or decoded.
#[derive(Debug, Error)]
pub enum ProtoError {
    /// The length prefix exceeds the receiver's limit; nothing was allocated; the sender's fault, and the
    /// connection must be closed because the stream cannot be resynchronised.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The body is not a valid message; the sender's fault.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The message could not be encoded (a bug, or a message over the limit); nothing was written.
    #[error("cannot encode a frame: {0}")]
    Encode(String),
    /// The connection ended in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// Reading or writing the socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Encodes and decodes frames under one size limit. Cheap to copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameCodec {
    max_frame_bytes: usize,
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(MAX_FRAME_BYTES)
    }
}

impl FrameCodec {
    /// A codec accepting frame bodies of at most `max_frame_bytes` (clamped to what a 4-byte length can
    /// say).
    pub fn new(max_frame_bytes: usize) -> FrameCodec {
        FrameCodec { max_frame_bytes: max_frame_bytes.min(u32::MAX as usize) }
    }

    /// The limit.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// One whole frame (length prefix and body) for `msg`, in one allocation.
    pub fn encode<T: Serialize>(&self, msg: &T) -> Result<Vec<u8>, ProtoError> {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&[0; 4]);
        rmp_serde::encode::write_named(&mut buf, msg).map_err(|e| ProtoError::Encode(e.to_string()))?;
        let len = buf.len() - 4;
        if len > self.max_frame_bytes {
            return Err(ProtoError::Encode(format!(
                "frame of {len} bytes exceeds the limit of {} bytes",
                self.max_frame_bytes
            )));
        }
        // `len` fits: the limit is at most u32::MAX.
        buf[..4].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(buf)
    }

    /// Checks a length prefix against the limit.
    pub fn check_len(&self, header: [u8; 4]) -> Result<usize, ProtoError> {
        let len = u32::from_be_bytes(header) as usize;
        if len > self.max_frame_bytes {
            return Err(ProtoError::TooLarge { len, max: self.max_frame_bytes });
        }
        Ok(len)
    }

    /// Decodes a frame body (without its length prefix).
    pub fn decode_body<T: DeserializeOwned>(&self, body: &[u8]) -> Result<T, ProtoError> {
        if body.len() > self.max_frame_bytes {
            return Err(ProtoError::TooLarge { len: body.len(), max: self.max_frame_bytes });
        }
        let mut de = rmp_serde::Deserializer::from_read_ref(body);
        de.set_max_depth(MAX_DECODE_DEPTH);
        T::deserialize(&mut de).map_err(|e| ProtoError::Malformed(e.to_string()))
    }

    /// Decodes the first frame of `buf`: `Ok(None)` while the frame is incomplete, otherwise the message
    /// and the number of bytes it took.
    pub fn decode_frame<T: DeserializeOwned>(&self, buf: &[u8]) -> Result<Option<(T, usize)>, ProtoError> {
        let Some(header) = buf.get(..4) else { return Ok(None) };
        let mut h = [0u8; 4];
        h.copy_from_slice(header);
        let len = self.check_len(h)?;
        let Some(body) = buf.get(4..4 + len) else { return Ok(None) };
        Ok(Some((self.decode_body(body)?, 4 + len)))
    }

    /// Reads one frame body: `Ok(None)` on a clean end of stream before the first byte of a frame. The
    /// body buffer grows as bytes arrive, so a peer that announces a large frame and sends nothing costs
    /// nothing. Not cancel-safe: a frame interrupted halfway is lost.
    pub async fn read_frame<R: AsyncRead + Unpin>(&self, r: &mut R) -> Result<Option<Vec<u8>>, ProtoError> {
        let mut header = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            let n = r.read(&mut header[got..]).await?;
            if n == 0 {
                return if got == 0 { Ok(None) } else { Err(ProtoError::Truncated) };
            }
            got += n;
        }
        let len = self.check_len(header)?;
        let mut body = Vec::with_capacity(len.min(64 * 1024));
        let read = r.take(len as u64).read_to_end(&mut body).await?;
        if read != len {
            return Err(ProtoError::Truncated);
        }
        Ok(Some(body))
    }

    /// Reads and decodes one message; `Ok(None)` on a clean end of stream.
    pub async fn read<R: AsyncRead + Unpin, T: DeserializeOwned>(
        &self,
        r: &mut R,
    ) -> Result<Option<T>, ProtoError> {
        match self.read_frame(r).await? {
            Some(body) => Ok(Some(self.decode_body(&body)?)),
            None => Ok(None),
        }
    }

    /// Encodes and writes one message (not flushed beyond what `w` does itself).
    pub async fn write<W: AsyncWrite + Unpin, T: Serialize>(
        &self,
        w: &mut W,
        msg: &T,
    ) -> Result<(), ProtoError> {
        let frame = self.encode(msg)?;
        w.write_all(&frame).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort::{Epoch, NodeId};
    use proptest::prelude::*;

    fn member(n: u32, e: u64) -> Member {
        Member(NodeId(n), Epoch(e))
    }

    fn token() -> TransferToken {
        TransferToken { view: ViewId { seq: 7, coord: NodeId(2) }, seq: 41 }
    }

    fn sample_requests() -> Vec<Request> {
        vec![
            Request::Hello { client_name: "orders".into(), version: PROTOCOL_VERSION },
            Request::Join { group: "g".into() },
            Request::Leave { group: "g".into() },
            Request::Send { group: "g".into(), payload: vec![0, 1, 255], safe: true, req: u64::MAX },
            Request::ProvideState {
                group: "g".into(),
                joiner: member(3, 9),
                token: token(),
                state: vec![9; 100],
            },
            Request::Status,
            Request::FenceAck { node: 4 },
            Request::SetLinkFilter { blocked: vec![2, 3] },
            Request::Watch { group: None },
            Request::Watch { group: Some("g".into()) },
            Request::Keys { op: KeyRequest::Install { path: "/etc/cohort/new.key".into() } },
            Request::Keys { op: KeyRequest::Use { id: "0a1b2c3d".into() } },
            Request::Keys { op: KeyRequest::Remove { id: "0a1b2c3d".into() } },
            Request::Keys { op: KeyRequest::List },
        ]
    }

    fn sample_replies() -> Vec<Reply> {
        let view = ViewId { seq: 3, coord: NodeId(1) };
        vec![
            Reply::Welcome { node: 1, epoch: 5, max_frame_bytes: MAX_FRAME_BYTES as u64 },
            Reply::Sent { req: 1, msg: "1.5.1".into() },
            Reply::SendFailed { req: 2, error: "member stopped".into() },
            Reply::View { id: view, members: vec![member(1, 5), member(2, 1)], primary: true },
            Reply::Deliver {
                group: "g".into(),
                msg: "1.5.1".into(),
                sender: member(1, 5),
                view,
                seq: 12,
                safe: false,
                payload: b"hello".to_vec(),
            },
            Reply::GroupView { group: "g".into(), members: vec![member(1, 5)] },
            Reply::ProvideState { group: "g".into(), joiner: member(2, 1), token: token() },
            Reply::ApplyState { group: "g".into(), provider: member(1, 5), state: vec![] },
            Reply::Blocked { reason: "no_quorum".into() },
            Reply::Unblocked,
            Reply::Recovered { failed: vec![member(3, 2)] },
            Reply::RemovedSelf { view },
            Reply::SelfFenced { reason: "outside a primary view for 5000 ms".into() },
            Reply::Status { json: "{\"primary\":true}".into() },
            Reply::Keys {
                keys: vec![crate::crypto::KeyInfo {
                    id: "0a1b2c3d".into(),
                    primary: true,
                    source: "/k".into(),
                    from: crate::crypto::KeyOrigin::Config,
                }],
            },
            Reply::Ok,
            Reply::Error { message: "nope".into() },
        ]
    }

    #[test]
    fn every_request_and_reply_round_trips() {
        let codec = FrameCodec::default();
        for r in sample_requests() {
            let frame = codec.encode(&r).expect("encode");
            let (back, used): (Request, usize) =
                codec.decode_frame(&frame).expect("decode").expect("complete");
            assert_eq!(back, r);
            assert_eq!(used, frame.len());
        }
        for r in sample_replies() {
            let frame = codec.encode(&r).expect("encode");
            let (back, used): (Reply, usize) = codec.decode_frame(&frame).expect("decode").expect("complete");
            assert_eq!(back, r);
            assert_eq!(used, frame.len());
        }
    }

    #[test]
    fn wire_form_is_externally_tagged_with_named_fields() {
        let body = &FrameCodec::default().encode(&Request::Join { group: "g".into() }).expect("encode")[4..];
        // {"Join": {"group": "g"}}
        let expected =
            [0x81, 0xa4, b'J', b'o', b'i', b'n', 0x81, 0xa5, b'g', b'r', b'o', b'u', b'p', 0xa1, b'g'];
        assert_eq!(body, expected);
        let unit = &FrameCodec::default().encode(&Request::Status).expect("encode")[4..];
        assert_eq!(unit, [0xa6, b'S', b't', b'a', b't', b'u', b's']);
    }

    #[test]
    fn oversized_length_is_refused_before_reading_the_body() {
        let codec = FrameCodec::new(100);
        let mut frame = 101u32.to_be_bytes().to_vec();
        frame.extend_from_slice(&[0; 10]);
        match codec.decode_frame::<Request>(&frame) {
            Err(ProtoError::TooLarge { len: 101, max: 100 }) => {}
            other => panic!("expected TooLarge, got {other:?}"),
        }
        let big = Request::Send { group: "g".into(), payload: vec![0; 200], safe: false, req: 1 };
        assert!(matches!(codec.encode(&big), Err(ProtoError::Encode(_))));
    }

    #[test]
    fn incomplete_frames_wait_for_more_bytes() {
        let codec = FrameCodec::default();
        let frame = codec.encode(&Request::Status).expect("encode");
        for cut in 0..frame.len() {
            assert!(codec.decode_frame::<Request>(&frame[..cut]).expect("no error").is_none());
        }
    }

    #[test]
    fn deeply_nested_input_is_refused_not_overflowing_the_stack() {
        // {"Join": {"x": [[[[...]]]]}}: a million nested one-element arrays in an unknown field, which
        // serde skips by walking it (the recursive path), and the same where a string is expected.
        let codec = FrameCodec::new(usize::MAX);
        for field in [&b"x"[..], &b"group"[..]] {
            let mut body = vec![0x81, 0xa4, b'J', b'o', b'i', b'n', 0x81, 0xa0 | field.len() as u8];
            body.extend_from_slice(field);
            body.extend(std::iter::repeat_n(0x91u8, 1_000_000));
            assert!(matches!(codec.decode_body::<Request>(&body), Err(ProtoError::Malformed(_))));
            assert!(matches!(codec.decode_body::<Reply>(&body), Err(ProtoError::Malformed(_))));
        }
    }

    #[test]
    fn frame_limit_covers_messages_and_states() {
        assert_eq!(frame_limit(1024, 1024), MAX_FRAME_BYTES);
        assert_eq!(frame_limit(1 << 20, 64 << 20), (64 << 20) + FRAME_OVERHEAD_BYTES);
        assert_eq!(frame_limit(usize::MAX, 0), usize::MAX);
    }

    #[tokio::test]
    async fn async_read_and_write_agree_and_detect_truncation() {
        let codec = FrameCodec::default();
        let mut wire = Vec::new();
        for r in sample_requests() {
            codec.write(&mut wire, &r).await.expect("write");
        }
        let mut rd = &wire[..];
        for r in sample_requests() {
            let back: Request = codec.read(&mut rd).await.expect("read").expect("a frame");
            assert_eq!(back, r);
        }
        assert!(codec.read::<_, Request>(&mut rd).await.expect("clean end").is_none());
        let mut cut = &wire[..wire.len() - 1];
        let mut last = Ok(None);
        for _ in 0..sample_requests().len() {
            last = codec.read::<_, Request>(&mut cut).await;
        }
        assert!(matches!(last, Err(ProtoError::Truncated)));
        let mut half_header = &[0u8, 0][..];
        assert!(matches!(codec.read::<_, Request>(&mut half_header).await, Err(ProtoError::Truncated)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let codec = FrameCodec::new(4096);
            let _ = codec.decode_frame::<Request>(&bytes);
            let _ = codec.decode_frame::<Reply>(&bytes);
            let _ = codec.decode_body::<Request>(&bytes);
            let _ = codec.decode_body::<Reply>(&bytes);
        }

        #[test]
        fn mutated_valid_frames_never_panic(
            which in 0usize..10,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        ) {
            let codec = FrameCodec::default();
            let reqs = sample_requests();
            let mut frame = codec.encode(&reqs[which % reqs.len()]).expect("encode");
            for (pos, byte) in flips {
                let i = pos % frame.len();
                frame[i] = byte;
            }
            let _ = codec.decode_frame::<Request>(&frame);
            let _ = codec.decode_body::<Reply>(&frame[4..]);
        }

        #[test]
        fn sends_round_trip(
            group in "[a-z]{1,20}",
            payload in proptest::collection::vec(any::<u8>(), 0..2048),
            safe in any::<bool>(),
            req in any::<u64>(),
        ) {
            let codec = FrameCodec::default();
            let r = Request::Send { group, payload, safe, req };
            let frame = codec.encode(&r).expect("encode");
            let back: Option<(Request, usize)> = codec.decode_frame(&frame).expect("decode");
            prop_assert_eq!(back, Some((r, frame.len())));
        }
    }
}
