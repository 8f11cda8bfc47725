//! The TransportActor: the agent's only socket, and the authentication of everything on it.
//!
//! **Owns:** one UDP socket bound to this node's configured address, the cluster keys (a
//! [`KeyRing`]), this process's datagram counter, the replay windows of every peer ([`ReplayGuard`]),
//! the map from configured peer addresses to node ids, and the in-agent link filter.
//!
//! - Outgoing ([`SendFrame`]): the core's datagram is sealed ([`crate::crypto`]) under the primary key,
//!   with this node, the sending incarnation's epoch and the receiver's next counter value in its header,
//!   into a buffer the actor reuses and sent at once with one non-blocking `sendto` from the handler itself: no task, queue or
//!   allocation per datagram. If the kernel's send buffer is full the datagram is dropped and counted:
//!   the protocol retransmits, and dropping is what a congested network would do anyway.
//! - Incoming: a readiness stream wakes the actor when the socket is readable; the handler drains up to
//!   [`RECV_BATCH`] datagrams into one reused buffer, so a burst costs one actor wake-up, not one per
//!   datagram. Each datagram is checked in this order, and dropped and counted at the first failure:
//!   its source address must be a configured peer (`bad_datagrams`), that peer must not be cut off by the
//!   link filter (`filtered_datagrams`), its header must name that same node (`bad_datagrams`), it must not
//!   be a replay by its epoch and counter (`replayed_datagrams{reason}`, checked before decryption and
//!   recorded only after), and it must authenticate under an installed key and the cluster name
//!   (`bad_datagrams`, and `unknown_key_datagrams` when it names a key not installed). Only then is the
//!   plaintext passed on as [`FrameReceived`], the one allocation of the receive path. Nothing received
//!   can make the actor panic. Every kind of drop is logged at its first and then every power-of-two
//!   occurrence.
//!
//! The counter of each receiver starts at 0 in each process and only grows (sealing refuses to wrap it);
//! the epoch only grows too, so no (node, receiver, epoch, counter) is ever sealed twice under a key: the nonce argument of
//! docs/adr/0007. The key ring is changed at run time by [`ChangeKeyRing`] (`cohort key ...` through the
//! operator socket, and a configuration reload's key steps as one [`KeyRingOp::Reload`]); every key
//! records whether the configuration or a command installed it.
//!
//! A peer is identified by its source address, so every node must bind the address the others have
//! configured for it (not a wildcard address that may answer from another interface).
//!
//! **Decides nothing:** what a datagram says, who is alive, whom to talk to: all the core's. The link
//! filter is an operator's tool for demos and tests without root; the transport applies it to both
//! directions and nothing else.
//!
//! **Supervision:** a hard error of the socket (anything but "would block" and the transient errors a
//! UDP socket reports for earlier ICMP messages) is logged and stops the actor; started under
//! [`actix::Supervisor`], it is then restarted and binds its address again. A bind that fails is retried
//! with a backoff (up to [`MAX_BIND_RETRY`]) rather than stopping, which would make the supervisor spin.

use crate::crypto::{self, CryptoError, KeyInfo, KeyRing, SEAL_OVERHEAD};
use crate::messages::{ChangeKeyRing, FrameReceived, KeyRingOp, SendFrame, SetLinkFilter};
use crate::metrics::Metrics;
use crate::replay::{Replay, ReplayGuard};
use actix::prelude::*;
use cohort::NodeId;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{self, Poll};
use std::time::Duration;
use tokio::net::UdpSocket;

/// Most datagrams handled per wake-up before the actor lets its mailbox and other futures run.
pub const RECV_BATCH: usize = 64;
/// Longest wait between two attempts to bind the socket.
pub const MAX_BIND_RETRY: Duration = Duration::from_secs(5);
const FIRST_BIND_RETRY: Duration = Duration::from_millis(100);

/// Requested kernel send and receive buffer size of the UDP socket.
pub const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// What the transport needs to know.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// The address to bind: this node's configured address.
    pub bind: SocketAddr,
    /// This node (for logs).
    pub node: NodeId,
    /// Every node's address; datagrams from any other address are dropped.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// The cluster name, authenticated with every datagram.
    pub cluster: String,
    /// The cluster keys: every installed key is accepted, the primary seals.
    pub keys: KeyRing,
    /// Where every change of the ring is recorded for the next start (`<data_dir>/keyring.json`);
    /// `None` keeps the ring in memory only.
    pub ring_file: Option<std::path::PathBuf>,
    /// The largest plaintext datagram the core sends (`limits.max_datagram_bytes`).
    pub max_datagram_bytes: usize,
}

/// The socket's local address, once bound (tests bind port 0 and ask).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Option<SocketAddr>")]
pub struct GetLocalAddr;

/// The number of outgoing datagrams dropped so far (send buffer full, send error, oversized, not yet
/// bound), which no shared metric counts.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "u64")]
pub struct GetSendDrops;

/// Test and drill instrument: from now on a copy of every datagram received (before any check) goes to
/// this channel, with its source address; `None` stops it. Reachable only in-process (a test holding
/// the transport's address), never from a socket.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct TapDatagrams(pub Option<tokio::sync::mpsc::UnboundedSender<(SocketAddr, Vec<u8>)>>);

/// Fault injection for tests and drills: sends `bytes` as they are (not sealed) from the transport's
/// socket to `to`, as an attacker who can send with this node's source address would (replays of
/// captured datagrams). Reachable only in-process, like [`TapDatagrams`].
#[derive(Message, Debug, Clone)]
#[rtype(result = "std::io::Result<()>")]
pub struct InjectDatagram {
    /// The destination.
    pub to: SocketAddr,
    /// The datagram, sent unchanged.
    pub bytes: Vec<u8>,
}

/// Fault injection for tests and failure drills: the transport handles it exactly as a hard error of
/// its socket (logs it, closes the socket and stops, so its supervisor restarts it and it binds again).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct InjectSocketFailure;

/// The transport actor; see the module docs.
pub struct TransportActor {
    cfg: TransportConfig,
    ring: KeyRing,
    /// The highest epoch this process sealed under.
    epoch: u64,
    /// Per receiver, the counter of the next datagram sealed to it (per process, never reused).
    counters: BTreeMap<NodeId, u64>,
    replay: ReplayGuard,
    tap: Option<tokio::sync::mpsc::UnboundedSender<(SocketAddr, Vec<u8>)>>,
    /// Peers by canonical source address.
    by_addr: HashMap<SocketAddr, NodeId>,
    deliver: Recipient<FrameReceived>,
    metrics: Arc<Metrics>,
    blocked: BTreeSet<NodeId>,
    /// A socket bound by the caller, used by the first `started`.
    prebound: Option<std::net::UdpSocket>,
    /// The socket as tokio sees it: readiness and receiving.
    socket: Option<Arc<UdpSocket>>,
    /// A duplicate of the same socket's descriptor, for sending: a plain non-blocking `sendto`, with no
    /// readiness bookkeeping (tokio's `try_send_to` refuses to try until its reactor has seen the socket
    /// writable, which would drop the first datagrams after every bind).
    sender: Option<std::net::UdpSocket>,
    /// One byte more than the largest sealed datagram, so a longer one is seen as such.
    recv_buf: Box<[u8]>,
    send_buf: Vec<u8>,
    send_drops: u64,
    bind_retry: Duration,
}

impl std::fmt::Debug for TransportActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportActor")
            .field("bind", &self.cfg.bind)
            .field("node", &self.cfg.node)
            .field("blocked", &self.blocked)
            .finish_non_exhaustive()
    }
}

impl TransportActor {
    /// A transport that binds `cfg.bind` when it starts (and again after each restart). Frames from
    /// peers go to `deliver`; counters to `metrics`.
    pub fn new(
        cfg: TransportConfig,
        deliver: Recipient<FrameReceived>,
        metrics: Arc<Metrics>,
    ) -> TransportActor {
        let by_addr = cfg.peers.iter().map(|(&n, &a)| (canonical(a), n)).collect();
        TransportActor {
            ring: cfg.keys.clone(),
            epoch: 0,
            counters: BTreeMap::new(),
            replay: ReplayGuard::default(),
            tap: None,
            recv_buf: vec![0u8; cfg.max_datagram_bytes + SEAL_OVERHEAD + 1].into_boxed_slice(),
            send_buf: Vec::with_capacity(cfg.max_datagram_bytes + SEAL_OVERHEAD),
            cfg,
            by_addr,
            deliver,
            metrics,
            blocked: BTreeSet::new(),
            prebound: None,
            socket: None,
            sender: None,
            send_drops: 0,
            bind_retry: FIRST_BIND_RETRY,
        }
    }

    /// Like [`TransportActor::new`] but binds now, so a wrong or busy address is reported to the caller
    /// (naming the address) instead of being retried in the background.
    pub fn bind(
        cfg: TransportConfig,
        deliver: Recipient<FrameReceived>,
        metrics: Arc<Metrics>,
    ) -> io::Result<TransportActor> {
        let socket = std::net::UdpSocket::bind(cfg.bind)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot bind udp {}: {e}", cfg.bind)))?;
        TransportActor::with_socket(cfg, socket, deliver, metrics)
    }

    /// A transport on a socket the caller bound (tests bind port 0 first, so peers can know the
    /// address). A restart after an IO error binds the socket's address again.
    pub fn with_socket(
        mut cfg: TransportConfig,
        socket: std::net::UdpSocket,
        deliver: Recipient<FrameReceived>,
        metrics: Arc<Metrics>,
    ) -> io::Result<TransportActor> {
        cfg.bind = socket.local_addr()?;
        let mut t = TransportActor::new(cfg, deliver, metrics);
        t.prebound = Some(socket);
        Ok(t)
    }

    fn open_socket(&mut self) -> io::Result<(UdpSocket, std::net::UdpSocket)> {
        let std_socket = match self.prebound.take() {
            Some(s) => s,
            None => std::net::UdpSocket::bind(self.cfg.bind)?,
        };
        std_socket.set_nonblocking(true)?;
        // Large kernel buffers: a burst of batched datagrams must not overflow the 208 KiB default, or
        // sends fail with WouldBlock and receives are dropped, and every loss costs a retransmission
        // interval. The kernel caps the size at net.core.{w,r}mem_max; a smaller grant is fine.
        let sock = socket2::SockRef::from(&std_socket);
        if let Err(e) = sock.set_send_buffer_size(SOCKET_BUFFER_BYTES) {
            tracing::warn!("cannot set the UDP send buffer to {SOCKET_BUFFER_BYTES} bytes: {e}");
        }
        if let Err(e) = sock.set_recv_buffer_size(SOCKET_BUFFER_BYTES) {
            tracing::warn!("cannot set the UDP receive buffer to {SOCKET_BUFFER_BYTES} bytes: {e}");
        }
        let sender = std_socket.try_clone()?;
        Ok((UdpSocket::from_std(std_socket)?, sender))
    }

    fn bind_and_listen(&mut self, ctx: &mut Context<Self>) {
        match self.open_socket() {
            Ok((socket, sender)) => {
                let socket = Arc::new(socket);
                tracing::info!(node = self.cfg.node.0, addr = ?socket.local_addr().ok(), "transport listening");
                self.bind_retry = FIRST_BIND_RETRY;
                ctx.add_stream(Readable(Arc::clone(&socket)));
                self.socket = Some(socket);
                self.sender = Some(sender);
            }
            Err(e) => {
                let wait = self.bind_retry;
                tracing::error!(
                    node = self.cfg.node.0,
                    "cannot bind udp {}: {e}; retrying in {wait:?}",
                    self.cfg.bind
                );
                self.bind_retry = (wait * 2).min(MAX_BIND_RETRY);
                ctx.run_later(wait, |act, ctx| act.bind_and_listen(ctx));
            }
        }
    }

    fn fail(&mut self, e: io::Error, ctx: &mut Context<Self>) {
        tracing::error!(
            node = self.cfg.node.0,
            "udp socket {} failed: {e}; stopping the transport",
            self.cfg.bind
        );
        self.socket = None;
        self.sender = None;
        ctx.stop();
    }

    /// Handles one received datagram, `self.recv_buf[..len]` from `src`.
    fn on_datagram(&mut self, len: usize, src: SocketAddr) {
        let m = &*self.metrics;
        if let Some(tap) = &self.tap {
            let _ = tap.send((src, self.recv_buf[..len].to_vec()));
        }
        let Some(&from) = self.by_addr.get(&canonical(src)) else {
            let n = m.bad_datagrams.fetch_add(1, Relaxed) + 1;
            log_bad(n, src, "unknown source address");
            return;
        };
        if self.blocked.contains(&from) {
            m.filtered_datagrams.fetch_add(1, Relaxed);
            return;
        }
        if len == self.recv_buf.len() {
            let n = m.bad_datagrams.fetch_add(1, Relaxed) + 1;
            log_bad(n, src, "oversized datagram");
            return;
        }
        let header = match crypto::peek_header(&self.recv_buf[..len]) {
            Ok(h) => h,
            Err(e) => {
                let n = m.bad_datagrams.fetch_add(1, Relaxed) + 1;
                log_bad(n, src, &e.to_string());
                return;
            }
        };
        if header.node != from.0 {
            let n = m.bad_datagrams.fetch_add(1, Relaxed) + 1;
            log_bad(n, src, &format!("header names node {}, the address is node {}", header.node, from.0));
            return;
        }
        // Cheap first: a replay is dropped without spending a decryption. Nothing is recorded yet, so
        // a forged header cannot move the window.
        if let Err(r) = self.replay.check(header.node, header.epoch, header.counter) {
            return self.count_replay(r, src, header.epoch, header.counter);
        }
        let bytes = match self.ring.open(&self.recv_buf[..len], self.cfg.node.0) {
            Ok((_, bytes)) => bytes,
            Err(e) => {
                if matches!(e, CryptoError::UnknownKey(_)) {
                    m.unknown_key_datagrams.fetch_add(1, Relaxed);
                }
                let n = m.bad_datagrams.fetch_add(1, Relaxed) + 1;
                log_bad(n, src, &e.to_string());
                return;
            }
        };
        if let Err(r) = self.replay.accept(header.node, header.epoch, header.counter) {
            // Not reachable after a passing check in this single-threaded actor; counted all the same.
            return self.count_replay(r, src, header.epoch, header.counter);
        }
        m.datagrams_in.fetch_add(1, Relaxed);
        m.bytes_in.fetch_add(len as u64, Relaxed);
        self.deliver.do_send(FrameReceived { from, bytes });
    }

    fn count_replay(&self, r: Replay, src: SocketAddr, epoch: u64, counter: u64) {
        let n = self.metrics.count_replay(r);
        let known = self.replay.epoch_of(self.by_addr.get(&canonical(src)).map_or(0, |n| n.0));
        let why = format!(
            "replayed datagram ({}: epoch {epoch}, counter {counter}; epoch known for the sender {})",
            r.label(),
            known.map_or_else(|| "none".to_string(), |e| e.to_string())
        );
        log_bad(n, src, &why);
    }

    fn drop_outgoing(&mut self, to: NodeId, why: &dyn std::fmt::Display) {
        self.send_drops += 1;
        // The first drop and then every power of two: visible, but never a log flood.
        if self.send_drops.is_power_of_two() {
            tracing::warn!(
                node = self.cfg.node.0,
                "dropped a datagram to node {}: {why} ({} dropped so far)",
                to.0,
                self.send_drops
            );
        }
    }
}

/// Logs a dropped incoming datagram at the first and then every power-of-two count, so an attacker or a
/// misconfigured neighbour cannot flood the log.
fn log_bad(count: u64, src: SocketAddr, why: &str) {
    if count.is_power_of_two() {
        tracing::warn!("dropped a datagram from {src}: {why} ({count} bad datagrams so far)");
    } else {
        tracing::debug!("dropped a datagram from {src}: {why}");
    }
}

/// An IPv4-mapped IPv6 address (what a dual-stack socket reports for IPv4 peers) as plain IPv4.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// Errors a UDP socket reports because of an earlier ICMP message or a signal: the socket still works.
fn transient(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        Interrupted | ConnectionRefused | ConnectionReset | HostUnreachable | NetworkUnreachable
    )
}

/// Yields each time the socket becomes readable (or its readiness fails).
struct Readable(Arc<UdpSocket>);

impl Stream for Readable {
    type Item = io::Result<()>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<Option<io::Result<()>>> {
        self.0.poll_recv_ready(cx).map(Some)
    }
}

impl Actor for TransportActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.bind_and_listen(ctx);
    }
}

impl Supervised for TransportActor {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        // The readiness stream, which held the other reference, is already gone with the old context;
        // dropping this one and the sending duplicate closes the socket, so `started` can bind the
        // address again.
        self.socket = None;
        self.sender = None;
        tracing::info!(node = self.cfg.node.0, "restarting the transport on {}", self.cfg.bind);
    }
}

impl StreamHandler<io::Result<()>> for TransportActor {
    fn handle(&mut self, ready: io::Result<()>, ctx: &mut Context<Self>) {
        if let Err(e) = ready {
            return self.fail(e, ctx);
        }
        let Some(socket) = self.socket.clone() else { return };
        for _ in 0..RECV_BATCH {
            match socket.try_recv_from(&mut self.recv_buf) {
                Ok((len, src)) => self.on_datagram(len, src),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if transient(&e) => tracing::debug!("udp receive: {e}"),
                Err(e) => return self.fail(e, ctx),
            }
        }
        // More may be waiting: the socket is still marked readable, so the stream yields again at once,
        // after the mailbox has had its turn.
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        // The readiness stream never ends while the socket lives; if it does, start over.
        tracing::error!(node = self.cfg.node.0, "udp readiness stream ended; stopping the transport");
        self.socket = None;
        self.sender = None;
        ctx.stop();
    }
}

impl Handler<SendFrame> for TransportActor {
    type Result = ();

    fn handle(&mut self, msg: SendFrame, _ctx: &mut Context<Self>) {
        let Some(&addr) = self.cfg.peers.get(&msg.to) else {
            tracing::debug!("no address for node {}: datagram ignored", msg.to.0);
            return;
        };
        if self.blocked.contains(&msg.to) {
            self.metrics.filtered_datagrams.fetch_add(1, Relaxed);
            return;
        }
        if msg.bytes.len() > self.cfg.max_datagram_bytes {
            let why = format!(
                "{} bytes exceed max_datagram_bytes {}",
                msg.bytes.len(),
                self.cfg.max_datagram_bytes
            );
            return self.drop_outgoing(msg.to, &why);
        }
        if self.sender.is_none() {
            return self.drop_outgoing(msg.to, &"socket not bound");
        }
        // The epoch never goes back: a frame of an incarnation already replaced is sealed under the
        // newer epoch (its receivers would drop it as stale otherwise, and an epoch's counters must
        // only grow).
        self.epoch = self.epoch.max(msg.epoch.0);
        let next = self.counters.entry(msg.to).or_insert(0);
        let counter = *next;
        let Some(after) = counter.checked_add(1) else {
            // 2^64 datagrams to one node in one process: never in practice; refusing keeps nonces unique.
            return self.drop_outgoing(msg.to, &"the datagram counter is exhausted: restart the agent");
        };
        *next = after;
        if let Err(e) = self.ring.seal_into(
            self.cfg.node.0,
            msg.to.0,
            self.epoch,
            counter,
            &msg.bytes,
            &mut self.send_buf,
        ) {
            return self.drop_outgoing(msg.to, &e);
        }
        let sent = match &self.sender {
            Some(sender) => sender.send_to(&self.send_buf, addr),
            None => return,
        };
        match sent {
            Ok(n) => {
                self.metrics.datagrams_out.fetch_add(1, Relaxed);
                self.metrics.bytes_out.fetch_add(n as u64, Relaxed);
            }
            // A full send buffer (WouldBlock) or a per-destination error (unreachable, refused by a
            // firewall): this datagram is lost, the socket is fine, the protocol retransmits.
            Err(e) => self.drop_outgoing(msg.to, &e),
        }
    }
}

impl Handler<SetLinkFilter> for TransportActor {
    type Result = ();

    fn handle(&mut self, msg: SetLinkFilter, _ctx: &mut Context<Self>) {
        tracing::info!(node = self.cfg.node.0, blocked = ?msg.blocked, "link filter set");
        self.blocked = msg.blocked;
    }
}

impl Handler<ChangeKeyRing> for TransportActor {
    type Result = Result<Vec<KeyInfo>, crypto::KeyRingError>;

    fn handle(&mut self, msg: ChangeKeyRing, _ctx: &mut Context<Self>) -> Self::Result {
        let node = self.cfg.node.0;
        let before = self.ring.clone();
        let what = match msg.0 {
            KeyRingOp::Install { key, source } => {
                let id = self.ring.install(&key, &source)?;
                format!(
                    "key {id} installed from {source}: datagrams sealed under it are accepted from now on"
                )
            }
            KeyRingOp::Use(id) => {
                let previous = self.ring.primary();
                self.ring.use_key(id)?;
                format!(
                    "primary key changed from {previous} to {id}: datagrams are sealed under it from now on"
                )
            }
            KeyRingOp::Remove(id) => {
                self.ring.remove(id)?;
                format!("key {id} removed: datagrams sealed under it are dropped from now on")
            }
            KeyRingOp::List => return Ok(self.ring.list()),
            KeyRingOp::Reload { install, primary, remove } => {
                let mut done = Vec::new();
                for (key, source) in &install {
                    if let Ok(id) = self.ring.install_from(key, source, crypto::KeyOrigin::Config) {
                        done.push(format!("key {id} installed from {source}"));
                    }
                }
                if let Some(id) = primary.filter(|id| *id != self.ring.primary()) {
                    if let Err(e) = self.ring.use_key(id) {
                        self.ring = before;
                        return Err(e);
                    }
                    done.push(format!("primary key now {id}"));
                }
                for id in remove {
                    match self.ring.remove(id) {
                        Ok(()) => done.push(format!("key {id} removed")),
                        Err(crypto::KeyRingError::Unknown(_)) => {}
                        Err(e) => {
                            self.ring = before;
                            return Err(e);
                        }
                    }
                }
                if done.is_empty() {
                    return Ok(self.ring.list());
                }
                format!("configuration reload: {}", done.join(", "))
            }
        };
        if let Some(file) = &self.cfg.ring_file {
            if let Err(e) = crate::key_file::save_ring(file, &self.ring.list()) {
                // Not kept: a change the next start would silently undo is worse than none.
                self.ring = before;
                return Err(crypto::KeyRingError::Save {
                    path: file.display().to_string(),
                    reason: e.to_string(),
                });
            }
        }
        tracing::warn!(node, "{what}");
        Ok(self.ring.list())
    }
}

impl Handler<TapDatagrams> for TransportActor {
    type Result = ();

    fn handle(&mut self, msg: TapDatagrams, _ctx: &mut Context<Self>) {
        self.tap = msg.0;
    }
}

impl Handler<InjectDatagram> for TransportActor {
    type Result = io::Result<()>;

    fn handle(&mut self, msg: InjectDatagram, _ctx: &mut Context<Self>) -> io::Result<()> {
        let sender = self.sender.as_ref().ok_or_else(|| io::Error::other("socket not bound"))?;
        sender.send_to(&msg.bytes, msg.to).map(|_| ())
    }
}

impl Handler<GetLocalAddr> for TransportActor {
    type Result = Option<SocketAddr>;

    fn handle(&mut self, _: GetLocalAddr, _ctx: &mut Context<Self>) -> Option<SocketAddr> {
        self.socket.as_ref().and_then(|s| s.local_addr().ok())
    }
}

impl Handler<InjectSocketFailure> for TransportActor {
    type Result = ();

    fn handle(&mut self, _: InjectSocketFailure, ctx: &mut Context<Self>) {
        self.fail(io::Error::other("injected socket failure"), ctx);
    }
}

impl Handler<GetSendDrops> for TransportActor {
    type Result = u64;

    fn handle(&mut self, _: GetSendDrops, _ctx: &mut Context<Self>) -> u64 {
        self.send_drops
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    struct Probe(mpsc::UnboundedSender<FrameReceived>);
    impl Actor for Probe {
        type Context = Context<Self>;
    }
    impl Handler<FrameReceived> for Probe {
        type Result = ();
        fn handle(&mut self, m: FrameReceived, _: &mut Context<Self>) {
            let _ = self.0.send(m);
        }
    }

    #[actix_rt::test]
    async fn after_a_socket_failure_the_supervisor_restarts_it_on_the_same_address() {
        let key = crate::crypto::ClusterKey::from_bytes([1; 32]);
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let cfg = TransportConfig {
            bind: "127.0.0.1:0".parse().expect("addr"),
            node: NodeId(1),
            peers: BTreeMap::from([(NodeId(2), peer.local_addr().expect("addr"))]),
            cluster: "c".into(),
            keys: KeyRing::new(&key, "test", "c"),
            ring_file: None,
            max_datagram_bytes: 1024,
        };
        let (tx, mut frames) = mpsc::unbounded_channel();
        let probe = Probe(tx).start().recipient();
        let metrics = Arc::new(Metrics::default());
        let t = TransportActor::with_socket(cfg, socket, probe, metrics).expect("transport");
        let addr = actix::Supervisor::start(move |_| t);
        let before = addr.send(GetLocalAddr).await.expect("alive").expect("bound");

        addr.send(InjectSocketFailure).await.expect("alive");
        // The restarted actor handles the next message only after `started` bound the address again.
        let after = addr.send(GetLocalAddr).await.expect("restarted").expect("bound again");
        assert_eq!(before, after);
        peer.send_to(&crate::crypto::seal(&key, "c", 2, 1, 1, 0, b"after restart").expect("seal"), after)
            .expect("send");
        let f = tokio::time::timeout(Duration::from_secs(5), frames.recv())
            .await
            .expect("deadline")
            .expect("probe");
        assert_eq!((f.from, f.bytes.as_slice()), (NodeId(2), &b"after restart"[..]));
        addr.send(SendFrame { to: NodeId(2), bytes: b"reply".to_vec(), epoch: cohort::Epoch(1) })
            .await
            .expect("alive");
        let mut buf = [0u8; 128];
        peer.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let (n, _) = peer.recv_from(&mut buf).expect("reply within the deadline");
        assert_eq!(crate::crypto::open(&key, "c", 2, &buf[..n]).expect("open"), b"reply");
    }
}
