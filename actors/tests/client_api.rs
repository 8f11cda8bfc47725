//! ClientApiActor against a mocked membership: a probe actor that records what the client API asks of
//! the membership and answers multicasts as scripted. Real Unix sockets in unique temporary
//! directories; every wait has a deadline, none is a fixed sleep (the two checks that something does
//! *not* happen wait a short bounded time, and say so).

#[path = "support/paused.rs"]
mod paused;
use paused::ManualClock;

use actix::prelude::*;
use cohort::msg::TransferToken;
use cohort::node::{SendError, Status};
use cohort::registry::Registry;
use cohort::{Delivery, Epoch, Member, MsgId, NodeId, Notification, View, ViewId};
use cohort_actors::client::{Client, ClientError, ClientEvent};
use cohort_actors::client_access::{class_of, Class, PeerPolicy};
use cohort_actors::client_api::{ClientApiActor, ClientApiConfig, MembershipLinks, SEND_RETRY_INTERVAL};
use cohort_actors::client_proto::{
    FrameCodec, Reply, Request, MAX_FRAME_BYTES, MAX_UNANSWERED_SENDS, PROTOCOL_VERSION,
};
use cohort_actors::messages::*;
use cohort_actors::metrics::Metrics;
use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio::time::timeout;

const DEADLINE: Duration = Duration::from_secs(10);
const ME: Member = Member(NodeId(1), Epoch(7));

/// What the probe membership received.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    Join(String),
    Leave(String),
    Multicast { group: String, payload: Vec<u8>, delivery: Delivery, accepted: bool },
    Provide { group: String, joiner: Member, state: Vec<u8> },
    AckFence(u32),
    Filter(Vec<u32>),
}

struct Probe {
    tx: mpsc::UnboundedSender<Got>,
    full: Arc<AtomicBool>,
    n: u64,
}

impl Actor for Probe {
    type Context = Context<Self>;
}

impl Handler<JoinGroup> for Probe {
    type Result = ();
    fn handle(&mut self, msg: JoinGroup, _: &mut Context<Self>) {
        let _ = self.tx.send(Got::Join(msg.group));
    }
}

impl Handler<LeaveGroup> for Probe {
    type Result = ();
    fn handle(&mut self, msg: LeaveGroup, _: &mut Context<Self>) {
        let _ = self.tx.send(Got::Leave(msg.group));
    }
}

impl Handler<Multicast> for Probe {
    type Result = MessageResult<Multicast>;
    fn handle(&mut self, msg: Multicast, _: &mut Context<Self>) -> MessageResult<Multicast> {
        let accepted = !self.full.load(Relaxed);
        let _ = self.tx.send(Got::Multicast {
            group: msg.group,
            payload: msg.payload,
            delivery: msg.delivery,
            accepted,
        });
        if accepted {
            self.n += 1;
            MessageResult(Ok(MsgId { sender: ME, n: self.n }))
        } else {
            MessageResult(Err(SendError::QueueFull))
        }
    }
}

impl Handler<ProvideState> for Probe {
    type Result = ();
    fn handle(&mut self, msg: ProvideState, _: &mut Context<Self>) {
        let _ = self.tx.send(Got::Provide { group: msg.group, joiner: msg.joiner, state: msg.state });
    }
}

impl Handler<AckFence> for Probe {
    type Result = ();
    fn handle(&mut self, msg: AckFence, _: &mut Context<Self>) {
        let _ = self.tx.send(Got::AckFence(msg.node.0));
    }
}

impl Handler<SetLinkFilter> for Probe {
    type Result = ();
    fn handle(&mut self, msg: SetLinkFilter, _: &mut Context<Self>) {
        let _ = self.tx.send(Got::Filter(msg.blocked.into_iter().map(|n| n.0).collect()));
    }
}

impl Handler<GetStatus> for Probe {
    type Result = MessageResult<GetStatus>;
    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> MessageResult<GetStatus> {
        MessageResult(canned_status())
    }
}

fn canned_status() -> Status {
    Status {
        member: ME,
        view: Some(view(3)),
        primary: true,
        blocked: vec![],
        removed_self: false,
        self_fenced: false,
        groups: BTreeMap::new(),
        pending_fences: vec![],
        stateful_merges: vec![],
        outbox: 0,
        held_msgs: 0,
        changing: false,
        peers: vec![(Member(NodeId(2), Epoch(1)), 12)],
        registry: Registry::default(),
        stalled: false,
        told_to_move_past: vec![],
        known_left: vec![],
        origin: None,
        epoch_inquiries: vec![],
        catching_up: false,
        timing: cohort::Config::new("t", &[1]).timing(),
    }
}

fn view(seq: u64) -> View {
    View {
        id: ViewId { seq, coord: NodeId(1) },
        members: vec![ME, Member(NodeId(2), Epoch(1))],
        primary: true,
    }
}

fn deliver(group: &str, n: u64, payload: Vec<u8>) -> Notification {
    Notification::Deliver {
        group: group.to_string(),
        msg: MsgId { sender: Member(NodeId(2), Epoch(1)), n },
        sender: Member(NodeId(2), Epoch(1)),
        delivery: Delivery::Agreed,
        view: ViewId { seq: 3, coord: NodeId(1) },
        seq: n,
        payload,
    }
}

/// A client API wired to a probe, on a socket in a fresh temporary directory.
struct Harness {
    dir: PathBuf,
    socket: PathBuf,
    operator: PathBuf,
    api: Addr<ClientApiActor>,
    got: mpsc::UnboundedReceiver<Got>,
    full: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

fn temp_dir(name: &str) -> PathBuf {
    let n = NEXT_DIR.fetch_add(1, Relaxed);
    let dir = std::env::temp_dir().join(format!("cohort-capi-{}-{n}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

impl Harness {
    async fn start(name: &str, client_queue_msgs: usize, max_clients: usize) -> Harness {
        let dir = temp_dir(name);
        let socket = dir.join("cohort.sock");
        Harness::start_at(dir, socket, client_queue_msgs, max_clients).await
    }

    async fn start_at(
        dir: PathBuf,
        socket: PathBuf,
        client_queue_msgs: usize,
        max_clients: usize,
    ) -> Harness {
        let mut cfg = ClientApiConfig::new(socket);
        cfg.client_queue_msgs = client_queue_msgs;
        cfg.max_clients = max_clients;
        Harness::start_with(dir, cfg, true).await
    }

    /// A client API with `cfg`; `link_filter` is `testing.link_filter`.
    async fn start_with(dir: PathBuf, cfg: ClientApiConfig, link_filter: bool) -> Harness {
        let (socket, operator) = (cfg.socket_path.clone(), cfg.operator_socket_path.clone());
        let (tx, got) = mpsc::unbounded_channel();
        let full = Arc::new(AtomicBool::new(false));
        let probe = Probe { tx, full: full.clone(), n: 0 }.start();
        let links = MembershipLinks {
            join: probe.clone().recipient(),
            leave: probe.clone().recipient(),
            multicast: probe.clone().recipient(),
            provide_state: probe.clone().recipient(),
            ack_fence: probe.clone().recipient(),
            get_status: probe.clone().recipient(),
            link_filter: link_filter.then(|| probe.recipient()),
            key_ring: None,
        };
        let metrics = Arc::new(Metrics::default());
        let api = ClientApiActor::new(cfg, links, metrics.clone()).start();
        // `started` (which binds the sockets) runs before the first message is handled.
        let _ = api.send(AppNotified(Notification::SendReady)).await;
        Harness { dir, socket, operator, api, got, full, metrics }
    }

    async fn operator(&self, name: &str) -> Client {
        timeout(DEADLINE, Client::connect(&self.operator, name))
            .await
            .expect("connect in time")
            .expect("connect to the operator socket")
    }

    async fn client(&self, name: &str) -> Client {
        timeout(DEADLINE, Client::connect(&self.socket, name))
            .await
            .expect("connect in time")
            .expect("connect")
    }

    fn notify(&self, n: Notification) {
        self.api.do_send(AppNotified(n));
    }

    async fn next_got(&mut self) -> Got {
        timeout(DEADLINE, self.got.recv()).await.expect("probe message in time").expect("probe alive")
    }

    /// Skips probe messages until one matches.
    async fn wait_got(&mut self, want: impl Fn(&Got) -> bool) -> Got {
        loop {
            let g = self.next_got().await;
            if want(&g) {
                return g;
            }
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn event(c: &mut Client) -> ClientEvent {
    timeout(DEADLINE, c.next_event()).await.expect("event in time").expect("event")
}

/// A client speaking raw frames, for what the library never sends.
struct Raw {
    stream: UnixStream,
    codec: FrameCodec,
}

impl Raw {
    async fn connect(h: &Harness) -> Raw {
        Raw::connect_to(&h.socket).await
    }
    async fn connect_to(socket: &std::path::Path) -> Raw {
        let stream = UnixStream::connect(socket).await.expect("connect");
        Raw { stream, codec: FrameCodec::default() }
    }
    async fn hello(h: &Harness) -> Raw {
        let mut r = Raw::connect(h).await;
        r.send(&Request::Hello { client_name: "raw".into(), version: PROTOCOL_VERSION }).await;
        assert!(matches!(r.recv().await, Some(Reply::Welcome { node: 1, epoch: 7, .. })));
        r
    }
    async fn send(&mut self, req: &Request) {
        self.codec.write(&mut self.stream, req).await.expect("write");
    }
    async fn recv(&mut self) -> Option<Reply> {
        timeout(DEADLINE, self.codec.read::<_, Reply>(&mut self.stream))
            .await
            .expect("reply in time")
            .expect("valid frame")
    }
}

#[actix_rt::test]
async fn join_and_send_reach_the_membership() {
    let mut h = Harness::start("join-send", 64, 8).await;
    let mut c = h.client("app").await;
    assert_eq!(c.member(), ME);
    c.join("orders").await.expect("join");
    assert_eq!(h.next_got().await, Got::Join("orders".into()));
    let id = timeout(DEADLINE, c.send("orders", b"hello".to_vec(), Delivery::Safe))
        .await
        .expect("in time")
        .expect("sent");
    assert_eq!(id, "1.7.1");
    assert_eq!(
        h.next_got().await,
        Got::Multicast {
            group: "orders".into(),
            payload: b"hello".to_vec(),
            delivery: Delivery::Safe,
            accepted: true
        }
    );
    assert_eq!(h.metrics.clients.load(Relaxed), 1);
}

#[actix_rt::test]
async fn pipelined_sends_are_answered_in_order() {
    let mut h = Harness::start("pipeline", 256, 8).await;
    let mut c = h.client("app").await;
    c.join("g").await.expect("join");
    let mut reqs = Vec::new();
    for i in 0..MAX_UNANSWERED_SENDS as u8 {
        reqs.push(c.send_nowait("g", vec![i], Delivery::Agreed).await.expect("send"));
    }
    for (i, req) in reqs.iter().enumerate() {
        assert_eq!(event(&mut c).await, ClientEvent::Sent { req: *req, msg: format!("1.7.{}", i + 1) });
    }
    assert_eq!(h.next_got().await, Got::Join("g".into()));
    for i in 0..MAX_UNANSWERED_SENDS as u8 {
        match h.next_got().await {
            Got::Multicast { payload, .. } => assert_eq!(payload, vec![i]),
            other => panic!("expected a multicast, got {other:?}"),
        }
    }
}

#[actix_rt::test]
async fn a_delivery_reaches_only_the_client_that_joined_the_group() {
    let h = Harness::start("deliver", 64, 8).await;
    let mut a = h.client("a").await;
    let mut b = h.client("b").await;
    a.join("g").await.expect("join g");
    b.join("h").await.expect("join h");
    h.notify(deliver("g", 1, b"for a".to_vec()));
    h.notify(deliver("h", 2, b"for b".to_vec()));
    match event(&mut a).await {
        ClientEvent::Deliver { group, msg, sender, seq, delivery, payload, .. } => {
            assert_eq!(
                (group.as_str(), msg.as_str(), sender, seq),
                ("g", "2.1.1", Member(NodeId(2), Epoch(1)), 1)
            );
            assert_eq!((delivery, payload), (Delivery::Agreed, b"for a".to_vec()));
        }
        other => panic!("expected a delivery, got {other:?}"),
    }
    // Events reach a client in the order they were notified: had b received g's delivery, it would
    // come before h's.
    match event(&mut b).await {
        ClientEvent::Deliver { group, payload, .. } => {
            assert_eq!((group.as_str(), payload), ("h", b"for b".to_vec()))
        }
        other => panic!("expected a delivery, got {other:?}"),
    }
}

#[actix_rt::test]
async fn a_second_client_joining_the_same_group_gets_an_error() {
    let mut h = Harness::start("second-join", 64, 8).await;
    let mut a = h.client("a").await;
    let mut b = h.client("b").await;
    a.join("g").await.expect("join");
    a.join("g").await.expect("joining again is a no-op");
    match b.join("g").await {
        Err(ClientError::Agent(m)) => {
            assert_eq!(m, "group g is already joined by another client on this node")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(h.next_got().await, Got::Join("g".into()));
    // Once a leaves, b can join.
    a.leave("g").await.expect("leave");
    assert_eq!(h.next_got().await, Got::Leave("g".into()));
    b.join("g").await.expect("join after leave");
    assert_eq!(h.next_got().await, Got::Join("g".into()));
    match a.leave("g").await {
        Err(ClientError::Agent(m)) => assert_eq!(m, "group g is not joined by this client"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    match a.send("g", vec![1], Delivery::Agreed).await {
        Err(ClientError::SendFailed(m)) => assert_eq!(m, "group g is not joined by this client"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    match b.join("").await {
        Err(ClientError::Agent(m)) => assert!(m.starts_with("invalid group name"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[actix_rt::test]
async fn a_disconnecting_client_leaves_its_groups() {
    let mut h = Harness::start("disconnect", 64, 8).await;
    let mut a = h.client("a").await;
    a.join("g").await.expect("join g");
    a.join("h").await.expect("join h");
    assert_eq!(h.next_got().await, Got::Join("g".into()));
    assert_eq!(h.next_got().await, Got::Join("h".into()));
    drop(a);
    let mut left = vec![h.next_got().await, h.next_got().await];
    left.sort_by_key(|g| format!("{g:?}"));
    assert_eq!(left, vec![Got::Leave("g".into()), Got::Leave("h".into())]);
    // The groups are free again.
    let mut b = h.client("b").await;
    b.join("g").await.expect("join");
    assert_eq!(h.metrics.clients.load(Relaxed), 1);
    assert_eq!(h.metrics.clients_dropped.load(Relaxed), 0);
}

#[actix_rt::test]
async fn a_malformed_frame_disconnects_only_that_client() {
    let mut h = Harness::start("malformed", 64, 8).await;
    let mut good = h.client("good").await;
    good.join("g").await.expect("join");
    let mut bad = Raw::hello(&h).await;
    bad.send(&Request::Join { group: "b".into() }).await;
    assert_eq!(bad.recv().await, Some(Reply::Ok));
    // A frame whose body is not a request.
    bad.stream.write_all(&[0, 0, 0, 3, 0xc1, 0xff, 0x00]).await.expect("write");
    match bad.recv().await {
        Some(Reply::Error { message }) => assert!(message.starts_with("malformed frame"), "{message}"),
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(bad.recv().await, None, "the connection is closed after the error");
    h.wait_got(|g| *g == Got::Leave("b".into())).await;
    // The other client goes on.
    let id =
        timeout(DEADLINE, good.send("g", vec![7], Delivery::Agreed)).await.expect("in time").expect("sent");
    assert_eq!(id, "1.7.1");
    h.notify(deliver("g", 1, vec![1]));
    assert!(matches!(event(&mut good).await, ClientEvent::Deliver { .. }));
    assert_eq!(h.metrics.clients_dropped.load(Relaxed), 1);
}

#[actix_rt::test]
async fn an_oversized_frame_gets_an_error_and_a_disconnect() {
    let h = Harness::start("oversized", 64, 8).await;
    let mut bad = Raw::hello(&h).await;
    let len = (MAX_FRAME_BYTES as u32 + 1).to_be_bytes();
    bad.stream.write_all(&len).await.expect("write");
    match bad.recv().await {
        Some(Reply::Error { message }) => {
            assert_eq!(
                message,
                format!(
                    "frame of {} bytes exceeds the limit of {MAX_FRAME_BYTES} bytes",
                    MAX_FRAME_BYTES + 1
                )
            )
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(bad.recv().await, None);
    let mut other = h.client("other").await;
    other.join("g").await.expect("the agent goes on");
}

#[actix_rt::test]
async fn hello_must_come_first_with_the_right_version() {
    let h = Harness::start("hello", 64, 8).await;
    let mut old = Raw::connect(&h).await;
    old.send(&Request::Hello { client_name: "old".into(), version: PROTOCOL_VERSION + 1 }).await;
    match old.recv().await {
        Some(Reply::Error { message }) => assert!(message.contains("is not supported"), "{message}"),
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(old.recv().await, None);
    let mut rude = Raw::connect(&h).await;
    rude.send(&Request::Join { group: "g".into() }).await;
    assert_eq!(rude.recv().await, Some(Reply::Error { message: "the first request must be hello".into() }));
    assert_eq!(rude.recv().await, None);
    assert_eq!(h.metrics.clients_dropped.load(Relaxed), 2);
}

#[actix_rt::test]
async fn a_full_send_queue_holds_sends_until_send_ready() {
    let mut h = Harness::start("queue-full", 64, 8).await;
    let mut c = h.client("app").await;
    c.join("g").await.expect("join");
    assert_eq!(h.next_got().await, Got::Join("g".into()));
    h.full.store(true, Relaxed);
    let r1 = c.send_nowait("g", vec![1], Delivery::Agreed).await.expect("send");
    let r2 = c.send_nowait("g", vec![2], Delivery::Agreed).await.expect("send");
    match h.next_got().await {
        Got::Multicast { payload, accepted: false, .. } => assert_eq!(payload, vec![1]),
        other => panic!("expected a refused multicast, got {other:?}"),
    }
    // A request after the sends is answered while they wait: the sends are held, not the connection.
    let status = timeout(DEADLINE, c.status()).await.expect("in time").expect("status");
    assert_eq!(status["member"], serde_json::json!([1, 7]));
    h.full.store(false, Relaxed);
    let ready_at = Instant::now();
    h.notify(Notification::SendReady);
    assert_eq!(event(&mut c).await, ClientEvent::Sent { req: r1, msg: "1.7.1".into() });
    assert!(ready_at.elapsed() < SEND_RETRY_INTERVAL / 2, "retried on SendReady, not by the fallback timer");
    assert_eq!(event(&mut c).await, ClientEvent::Sent { req: r2, msg: "1.7.2".into() });
    // The second send was only tried once the first was accepted: one client's sends keep their order.
    let tried: Vec<Got> = vec![h.next_got().await, h.next_got().await];
    assert_eq!(
        tried,
        vec![
            Got::Multicast {
                group: "g".into(),
                payload: vec![1],
                delivery: Delivery::Agreed,
                accepted: true
            },
            Got::Multicast {
                group: "g".into(),
                payload: vec![2],
                delivery: Delivery::Agreed,
                accepted: true
            },
        ]
    );
}

#[actix_rt::test]
async fn a_client_with_too_many_unanswered_sends_is_not_read() {
    let h = Harness::start("window", 256, 8).await;
    let mut raw = Raw::hello(&h).await;
    raw.send(&Request::Join { group: "g".into() }).await;
    assert_eq!(raw.recv().await, Some(Reply::Ok));
    h.full.store(true, Relaxed);
    for req in 1..=MAX_UNANSWERED_SENDS as u64 + 1 {
        raw.send(&Request::Send { group: "g".into(), payload: vec![0], safe: false, req }).await;
    }
    raw.send(&Request::Status).await;
    // Bounded negative check: with 64 sends unanswered the agent reads nothing more, so the status
    // request stays unanswered.
    let early = timeout(Duration::from_millis(300), raw.codec.read::<_, Reply>(&mut raw.stream)).await;
    assert!(early.is_err(), "nothing is answered while the sends wait: {early:?}");
    h.full.store(false, Relaxed);
    h.notify(Notification::SendReady);
    // Once sends are answered the rest is read: every send is answered, in order, and so is the status
    // request (as soon as it is read, while later sends may still wait).
    let (mut sent, mut status) = (Vec::new(), false);
    while sent.len() <= MAX_UNANSWERED_SENDS || !status {
        match raw.recv().await {
            Some(Reply::Sent { req, .. }) => sent.push(req),
            Some(Reply::Status { .. }) if !status => status = true,
            other => panic!("expected Sent or Status, got {other:?}"),
        }
    }
    assert_eq!(sent, (1..=MAX_UNANSWERED_SENDS as u64 + 1).collect::<Vec<_>>());
}

#[actix_rt::test]
async fn a_client_that_never_reads_is_disconnected_once_its_queue_overflows() {
    let mut h = Harness::start("slow", 4, 8).await;
    let mut slow = h.client("slow").await;
    slow.join("g").await.expect("join");
    let mut fine = h.client("fine").await;
    fine.join("h").await.expect("join");
    h.wait_got(|g| *g == Got::Join("h".into())).await;
    // Deliveries of 256 KiB: the socket buffer fills, then the 4-event queue.
    let started = Instant::now();
    let mut n = 0;
    while h.metrics.clients_dropped.load(Relaxed) == 0 {
        assert!(started.elapsed() < DEADLINE, "the slow client was never disconnected");
        n += 1;
        h.notify(deliver("g", n, vec![0; 256 * 1024]));
        let _ = h.api.send(AppNotified(Notification::SendReady)).await;
    }
    h.wait_got(|g| *g == Got::Leave("g".into())).await;
    assert_eq!(h.metrics.clients.load(Relaxed), 1);
    assert!(n < 1000, "disconnected after a bounded number of events ({n})");
    // The well-behaved client goes on.
    h.notify(deliver("h", 1, vec![1]));
    assert!(matches!(event(&mut fine).await, ClientEvent::Deliver { .. }));
    // The slow client sees what was queued, and then the end of the connection.
    let mut ended = None;
    for _ in 0..10_000 {
        match timeout(DEADLINE, slow.next_event()).await.expect("in time") {
            Ok(_) => {}
            Err(e) => {
                ended = Some(e);
                break;
            }
        }
    }
    match ended {
        Some(ClientError::Closed) => {}
        Some(ClientError::Agent(m)) => {
            assert_eq!(m, "client too slow: 4 events queued (limits.client_queue_msgs)")
        }
        other => panic!("expected the connection to end, got {other:?}"),
    }
}

#[actix_rt::test]
async fn state_transfer_requests_go_to_the_owner_and_answers_to_the_membership() {
    let mut h = Harness::start("state", 64, 8).await;
    let mut owner = h.client("owner").await;
    let mut other = h.client("other").await;
    owner.join("g").await.expect("join");
    let joiner = Member(NodeId(2), Epoch(1));
    let token = TransferToken { view: ViewId { seq: 3, coord: NodeId(1) }, seq: 9 };
    h.notify(Notification::ProvideState { group: "g".into(), joiner, token });
    assert_eq!(event(&mut owner).await, ClientEvent::ProvideState { group: "g".into(), joiner, token });
    owner.provide_state("g", joiner, token, b"state".to_vec()).await.expect("provide");
    let got = h.wait_got(|g| matches!(g, Got::Provide { .. })).await;
    assert_eq!(got, Got::Provide { group: "g".into(), joiner, state: b"state".to_vec() });
    match other.provide_state("g", joiner, token, vec![]).await {
        Err(ClientError::Agent(m)) => assert_eq!(m, "group g is not joined by this client"),
        r => panic!("expected a refusal, got {r:?}"),
    }
    h.notify(Notification::ApplyState { group: "g".into(), provider: joiner, state: vec![1, 2, 3] });
    assert_eq!(
        event(&mut owner).await,
        ClientEvent::ApplyState { group: "g".into(), provider: joiner, state: vec![1, 2, 3] }
    );
}

#[actix_rt::test]
async fn views_and_blocks_go_to_everyone_and_group_views_to_owner_and_watchers() {
    let h = Harness::start("watch", 64, 8).await;
    h.notify(Notification::View(view(3)));
    let mut owner = h.client("owner").await;
    owner.join("g").await.expect("join");
    let mut all = h.client("watch-all").await;
    all.watch(None).await.expect("watch");
    // The current view comes first.
    assert!(matches!(event(&mut all).await, ClientEvent::View { id, .. } if id.seq == 3));
    let mut only_h = h.client("watch-h").await;
    only_h.watch(Some("h")).await.expect("watch");
    assert!(matches!(event(&mut only_h).await, ClientEvent::View { .. }));

    h.notify(Notification::GroupView { group: "g".into(), members: vec![ME] });
    h.notify(deliver("g", 1, vec![1]));
    h.notify(Notification::Blocked(cohort::BlockReason::NoQuorum));
    h.notify(Notification::Unblocked);
    h.notify(Notification::GroupView { group: "h".into(), members: vec![ME] });
    h.api.do_send(SelfFenced { reason: "watchdog".into() });

    let gv = |g: &str| ClientEvent::GroupView { group: g.into(), members: vec![ME] };
    assert_eq!(event(&mut owner).await, gv("g"));
    assert!(matches!(event(&mut owner).await, ClientEvent::Deliver { .. }));
    assert_eq!(event(&mut owner).await, ClientEvent::Blocked { reason: "no_quorum".into() });
    assert_eq!(event(&mut owner).await, ClientEvent::Unblocked);
    assert_eq!(event(&mut owner).await, ClientEvent::SelfFenced { reason: "watchdog".into() });

    assert_eq!(event(&mut all).await, gv("g"));
    assert_eq!(event(&mut all).await, ClientEvent::Blocked { reason: "no_quorum".into() });
    assert_eq!(event(&mut all).await, ClientEvent::Unblocked);
    assert_eq!(event(&mut all).await, gv("h"));
    assert_eq!(event(&mut all).await, ClientEvent::SelfFenced { reason: "watchdog".into() });

    assert_eq!(event(&mut only_h).await, ClientEvent::Blocked { reason: "no_quorum".into() });
    assert_eq!(event(&mut only_h).await, ClientEvent::Unblocked);
    assert_eq!(event(&mut only_h).await, gv("h"));
    assert_eq!(event(&mut only_h).await, ClientEvent::SelfFenced { reason: "watchdog".into() });
}

#[actix_rt::test]
async fn status_on_the_client_socket_and_fence_ack_and_link_filter_on_the_operator_socket_reach_the_membership(
) {
    let mut h = Harness::start("admin", 64, 8).await;
    let mut c = h.client("admin").await;
    let s = c.status().await.expect("status");
    assert_eq!(s["primary"], serde_json::json!(true));
    assert_eq!(s["view"]["id"], serde_json::json!({"seq": 3, "coord": 1}));
    assert_eq!(s["peers"], serde_json::json!([[[2, 1], 12]]));
    let mut op = h.operator("operator").await;
    op.fence_ack(NodeId(3)).await.expect("fence ack");
    assert_eq!(h.next_got().await, Got::AckFence(3));
    op.set_link_filter(&[NodeId(2), NodeId(3)]).await.expect("filter");
    assert_eq!(h.next_got().await, Got::Filter(vec![2, 3]));
    assert_eq!(op.status().await.expect("status on the operator socket")["primary"], serde_json::json!(true));
    let md = std::fs::metadata(&h.operator).expect("stat the operator socket");
    assert!(md.file_type().is_socket());
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
}

/// Every operator command of the protocol (by [`class_of`], so a new one is covered), in its wire form.
fn operator_requests() -> Vec<Request> {
    let all = vec![
        Request::Hello { client_name: "x".into(), version: PROTOCOL_VERSION },
        Request::Join { group: "g".into() },
        Request::Leave { group: "g".into() },
        Request::Send { group: "g".into(), payload: vec![], safe: false, req: 1 },
        Request::ProvideState {
            group: "g".into(),
            joiner: Member(NodeId(2), Epoch(1)),
            token: TransferToken { view: ViewId { seq: 1, coord: NodeId(1) }, seq: 1 },
            state: vec![],
        },
        Request::Status,
        Request::FenceAck { node: 3 },
        Request::SetLinkFilter { blocked: vec![2, 3] },
        Request::Watch { group: None },
    ];
    let ops: Vec<Request> =
        all.into_iter().filter(|r| matches!(class_of(r), Class::Operator | Class::OperatorTesting)).collect();
    assert_eq!(ops.len(), 2, "FenceAck and SetLinkFilter");
    ops
}

#[actix_rt::test]
async fn an_application_connection_is_refused_every_operator_command_by_name_and_stays_usable() {
    let mut h = Harness::start("operator-refused", 64, 8).await;
    let mut app = Raw::connect_to(&h.socket).await;
    app.send(&Request::Hello { client_name: "app".into(), version: PROTOCOL_VERSION }).await;
    assert!(matches!(app.recv().await, Some(Reply::Welcome { .. })));
    for req in operator_requests() {
        let name = match req {
            Request::FenceAck { .. } => "FenceAck",
            _ => "SetLinkFilter",
        };
        app.send(&req).await;
        match app.recv().await {
            Some(Reply::Error { message }) => {
                assert!(message.starts_with(&format!("{name} is an operator command: ")), "{message}");
                assert!(
                    message.contains(&format!("send it on the operator socket {}", h.operator.display())),
                    "{message}"
                );
            }
            other => panic!("expected an error for {name}, got {other:?}"),
        }
        // The connection stays usable: the next request is answered.
        app.send(&Request::Status).await;
        assert!(matches!(app.recv().await, Some(Reply::Status { .. })), "{name}");
    }
    assert_eq!(h.metrics.requests_refused.load(Relaxed), 2);
    // Nothing reached the membership: the first thing the probe sees is this join.
    app.send(&Request::Join { group: "after".into() }).await;
    assert_eq!(app.recv().await, Some(Reply::Ok));
    assert_eq!(h.next_got().await, Got::Join("after".into()));
    // The library says the same through its error type.
    let mut c = h.client("lib").await;
    match c.fence_ack(NodeId(3)).await {
        Err(ClientError::Agent(m)) => assert!(m.starts_with("FenceAck is an operator command"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The operator socket serves both.
    let mut op = Raw::connect_to(&h.operator).await;
    op.send(&Request::Hello { client_name: "op".into(), version: PROTOCOL_VERSION }).await;
    assert!(matches!(op.recv().await, Some(Reply::Welcome { .. })));
    for req in operator_requests() {
        op.send(&req).await;
        assert_eq!(op.recv().await, Some(Reply::Ok), "{req:?} on the operator socket");
    }
    assert_eq!(h.next_got().await, Got::AckFence(3));
    assert_eq!(h.next_got().await, Got::Filter(vec![2, 3]));
}

#[actix_rt::test]
async fn without_the_testing_setting_the_link_filter_is_refused_on_the_operator_socket_too() {
    let dir = temp_dir("no-filter");
    let cfg = ClientApiConfig::new(dir.join("cohort.sock"));
    let mut h = Harness::start_with(dir, cfg, false).await;
    let mut op = h.operator("operator").await;
    match op.set_link_filter(&[NodeId(2)]).await {
        Err(ClientError::Agent(m)) => assert_eq!(
            m,
            "SetLinkFilter is disabled: the link filter exists only for tests and demos (testing.link_filter = true)"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
    op.fence_ack(NodeId(4)).await.expect("fence ack still served");
    assert_eq!(h.next_got().await, Got::AckFence(4));
}

#[actix_rt::test]
async fn peers_whose_uid_is_not_allowed_are_refused_by_their_kernel_credentials() {
    let me = cohort_actors::key_file::effective_uid();
    let other = if me == 65534 { 65533 } else { 65534 };
    let dir = temp_dir("peercred");
    let mut cfg = ClientApiConfig::new(dir.join("cohort.sock"));
    // Allow-lists that exclude this process's uid (root, when the tests run as root): on the client
    // socket through its configuration keys, and on the operator socket without the implicit root and
    // agent uid, so the refusal can be seen without a second user.
    cfg.client_policy = PeerPolicy::client(&[other], &[]);
    cfg.operator_policy = PeerPolicy { uids: [other].into(), ..PeerPolicy::default() };
    let h = Harness::start_with(dir, cfg, true).await;
    for (socket, name, keys) in [
        (&h.socket, "client socket", "api.allowed_uids, api.allowed_gids"),
        (&h.operator, "operator socket", "api.operator_allowed_uids, api.operator_allowed_gids"),
    ] {
        match timeout(DEADLINE, Client::connect(socket, "intruder")).await.expect("in time") {
            Err(ClientError::Agent(m)) => {
                assert!(m.starts_with(&format!("uid {me} gid ")), "{m}");
                assert!(m.ends_with(&format!("may not use the {name} {} ({keys})", socket.display())), "{m}");
            }
            Err(e) => panic!("expected a refusal on the {name}, got {e:?}"),
            Ok(_) => panic!("expected a refusal on the {name}, got a connection"),
        }
    }
    assert_eq!(h.metrics.clients_refused.load(Relaxed), 2);
    assert_eq!(h.metrics.clients.load(Relaxed), 0);
}

/// Reads what the agent says on a connection it closes: exactly one `Error`, then the end of the
/// stream. Waits on the close itself (with the deadline of [`Raw::recv`]), never on a timer.
async fn error_then_close(r: &mut Raw) -> String {
    let message = match r.recv().await {
        Some(Reply::Error { message }) => message,
        other => panic!("expected an error before the close, got {other:?}"),
    };
    assert_eq!(r.recv().await, None, "the connection is closed after the error");
    message
}

#[actix_rt::test]
async fn connections_that_never_say_hello_or_start_a_huge_frame_are_closed_with_an_error_while_a_good_client_is_served(
) {
    let dir = temp_dir("hello-deadline");
    let mut cfg = ClientApiConfig::new(dir.join("cohort.sock"));
    let hello_timeout = Duration::from_millis(400);
    cfg.hello_timeout = hello_timeout;
    let mut h = Harness::start_with(dir, cfg, true).await;
    let opened = Instant::now();
    // Three connections that say nothing, and one that sends half a length prefix and stalls there.
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(Raw::connect_to(&h.socket).await);
    }
    let mut half = Raw::connect_to(&h.socket).await;
    half.stream.write_all(&[0, 0]).await.expect("write half a length prefix");
    silent.push(half);
    // One that announces a 60 MiB frame (the agent's full limit is 64 MiB) and starts sending it.
    let mut huge = Raw::connect_to(&h.socket).await;
    huge.stream.write_all(&(60u32 << 20).to_be_bytes()).await.expect("write a length prefix");
    huge.stream.write_all(&[0x81; 4096]).await.expect("write the first bytes");
    assert_eq!(
        error_then_close(&mut huge).await,
        "frame of 62914560 bytes exceeds the limit of 65536 bytes before hello"
    );
    // A well-behaved client connects after them and is served while they wait.
    let mut good = h.client("good").await;
    good.join("g").await.expect("join");
    h.wait_got(|g| *g == Got::Join("g".into())).await;
    good.send("g", b"before".to_vec(), Delivery::Agreed).await.expect("send while the others idle");
    // Each silent connection is closed with an error at its deadline, not before.
    for r in &mut silent {
        let message = error_then_close(r).await;
        assert_eq!(message, "no hello within 400 ms (limits.hello_timeout_ms)");
        assert!(opened.elapsed() >= hello_timeout, "closed {:?} after opening", opened.elapsed());
    }
    assert_eq!(h.metrics.clients_dropped.load(Relaxed), 5);
    assert_eq!(h.metrics.clients.load(Relaxed), 1);
    // The good client, connected for longer than the deadline, keeps being served.
    assert!(opened.elapsed() >= hello_timeout);
    good.send("g", b"after".to_vec(), Delivery::Agreed).await.expect("send after the others were closed");
    assert_eq!(good.status().await.expect("status")["primary"], serde_json::json!(true));
}

#[actix_rt::test]
async fn a_message_larger_than_max_message_bytes_fails_before_it_is_queued() {
    let dir = temp_dir("message-size");
    let mut cfg = ClientApiConfig::new(dir.join("cohort.sock"));
    cfg.max_message_bytes = 100;
    let mut h = Harness::start_with(dir, cfg, true).await;
    let mut c = h.client("app").await;
    c.join("g").await.expect("join");
    assert_eq!(h.next_got().await, Got::Join("g".into()));
    match c.send("g", vec![7; 101], Delivery::Agreed).await {
        Err(ClientError::SendFailed(m)) => {
            assert_eq!(m, "message of 101 bytes exceeds limits.max_message_bytes (100)")
        }
        other => panic!("expected a refused send, got {other:?}"),
    }
    c.send("g", vec![7; 100], Delivery::Agreed).await.expect("a message at the limit");
    // The membership saw only the message within the limit.
    match h.next_got().await {
        Got::Multicast { payload, .. } => assert_eq!(payload.len(), 100),
        other => panic!("expected the 100-byte multicast, got {other:?}"),
    }
}

#[actix_rt::test]
async fn a_client_may_join_at_most_max_groups_per_client() {
    let dir = temp_dir("max-groups");
    let mut cfg = ClientApiConfig::new(dir.join("cohort.sock"));
    cfg.max_groups_per_client = 2;
    let h = Harness::start_with(dir, cfg, true).await;
    let mut c = h.client("app").await;
    c.join("a").await.expect("join a");
    c.join("b").await.expect("join b");
    match c.join("c").await {
        Err(ClientError::Agent(m)) => {
            assert_eq!(m, "too many groups: a client may join at most 2 (limits.max_groups_per_client)")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    c.join("a").await.expect("joining a group it has is not a new group");
    c.leave("b").await.expect("leave b");
    c.join("c").await.expect("room again after a leave");
}

#[actix_rt::test]
async fn a_client_whose_queued_events_exceed_client_queue_bytes_is_disconnected() {
    let dir = temp_dir("queue-bytes");
    let mut cfg = ClientApiConfig::new(dir.join("cohort.sock"));
    cfg.client_queue_bytes = 1 << 20;
    let mut h = Harness::start_with(dir, cfg, true).await;
    let mut slow = h.client("slow").await;
    slow.join("g").await.expect("join");
    h.wait_got(|g| *g == Got::Join("g".into())).await;
    // Deliveries of 256 KiB to a client that never reads: the socket buffer fills, then 1 MiB of queue
    // (far below the 16384 events of client_queue_msgs).
    let started = Instant::now();
    let mut n = 0;
    while h.metrics.clients_dropped.load(Relaxed) == 0 {
        assert!(started.elapsed() < DEADLINE, "the slow client was never disconnected");
        n += 1;
        h.notify(deliver("g", n, vec![0; 256 * 1024]));
        let _ = h.api.send(AppNotified(Notification::SendReady)).await;
    }
    h.wait_got(|g| *g == Got::Leave("g".into())).await;
    assert!(n < 200, "disconnected after a bounded number of events ({n})");
    let mut ended = None;
    for _ in 0..10_000 {
        match timeout(DEADLINE, slow.next_event()).await.expect("in time") {
            Ok(_) => {}
            Err(e) => {
                ended = Some(e);
                break;
            }
        }
    }
    match ended {
        Some(ClientError::Agent(m)) => {
            assert!(
                m.starts_with("client too slow: ") && m.ends_with("(limits.client_queue_bytes is 1048576)"),
                "{m}"
            )
        }
        other => panic!("expected the error that closes the connection, got {other:?}"),
    }
}

#[actix_rt::test]
async fn large_frames_being_read_share_one_budget_and_small_requests_never_wait_for_it() {
    let dir = temp_dir("frames-budget");
    let mut cfg = ClientApiConfig::new(dir.join("cohort.sock"));
    cfg.client_frames_total_bytes = 100 * 1024;
    let h = Harness::start_with(dir, cfg, true).await;
    let big = |req| Request::Send { group: "g".into(), payload: vec![5; 90 * 1024], safe: false, req };
    let codec = FrameCodec::default();
    // A announces a 90 KiB frame and sends only its first half: it holds 90 KiB of the 100 KiB budget.
    let mut a = Raw::hello(&h).await;
    let frame_a = codec.encode(&big(1)).expect("encode");
    a.stream.write_all(&frame_a[..frame_a.len() / 2]).await.expect("write half of A's frame");
    // B sends a whole 90 KiB frame; its reader waits for room in the budget.
    let mut b = Raw::hello(&h).await;
    b.send(&big(2)).await;
    // C's small requests are served meanwhile.
    let mut c = Raw::hello(&h).await;
    c.send(&Request::Status).await;
    assert!(matches!(c.recv().await, Some(Reply::Status { .. })));
    // B has no answer while A holds the budget (a bounded wait for something that must not happen).
    let early = timeout(Duration::from_millis(300), b.codec.read::<_, Reply>(&mut b.stream)).await;
    assert!(early.is_err(), "B's large frame was read while A held the budget: {early:?}");
    // A finishes its frame: A is answered, then B.
    a.stream.write_all(&frame_a[frame_a.len() / 2..]).await.expect("write the rest of A's frame");
    let not_joined = |req| Reply::SendFailed { req, error: "group g is not joined by this client".into() };
    assert_eq!(a.recv().await, Some(not_joined(1)));
    assert_eq!(b.recv().await, Some(not_joined(2)));
}

#[actix_rt::test]
async fn clients_beyond_the_limit_are_refused() {
    let h = Harness::start("max-clients", 64, 1).await;
    let _first = h.client("first").await;
    match timeout(DEADLINE, Client::connect(&h.socket, "second")).await.expect("in time") {
        Err(ClientError::Agent(m)) => {
            assert_eq!(m, "too many clients: this agent accepts at most 1 (limits.max_clients)")
        }
        Err(e) => panic!("expected a refusal, got {e:?}"),
        Ok(_) => panic!("expected a refusal, got a connection"),
    }
    // Operators have their own connections: a full client socket does not lock them out.
    let mut op = h.operator("operator").await;
    op.status().await.expect("the operator is served");
}

#[actix_rt::test]
async fn the_socket_has_mode_0660_and_replaces_a_stale_one() {
    let dir = temp_dir("mode");
    let socket = dir.join("cohort.sock");
    // A socket file nobody listens on any more.
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
    assert!(socket.exists());
    let h = Harness::start_at(dir, socket, 64, 8).await;
    let md = std::fs::metadata(&h.socket).expect("stat");
    assert!(md.file_type().is_socket());
    assert_eq!(md.permissions().mode() & 0o777, 0o660);
    let _c = h.client("app").await;
}

#[actix_rt::test]
async fn a_live_socket_or_a_regular_file_is_never_removed() {
    let h = Harness::start("live", 64, 8).await;
    // A second client API on the same path stops instead of stealing the socket.
    let second = Harness::start_at(temp_dir("live-2"), h.socket.clone(), 64, 8).await;
    assert!(!second.api.connected(), "the second actor stopped");
    let _c = h.client("still works").await;

    let dir = temp_dir("file");
    let path = dir.join("cohort.sock");
    std::fs::write(&path, b"not a socket").expect("write");
    let third = Harness::start_at(dir, path.clone(), 64, 8).await;
    assert!(!third.api.connected());
    assert_eq!(std::fs::read(&path).expect("read"), b"not a socket");
}

#[actix_rt::test]
async fn connecting_to_a_missing_socket_names_the_path() {
    let dir = temp_dir("missing");
    let path = dir.join("nobody.sock");
    match Client::connect(&path, "x").await {
        Err(e @ ClientError::Connect { .. }) => {
            let text = e.to_string();
            assert!(
                text.starts_with(&format!(
                    "cannot connect to the cohort agent at {}: is `cohort agent` running?",
                    path.display()
                )),
                "{text}"
            );
        }
        Err(e) => panic!("expected a connect error, got {e:?}"),
        Ok(_) => panic!("expected a connect error, got a connection"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[actix_rt::test]
async fn after_removed_self_groups_are_forgotten_and_can_be_joined_again() {
    let mut h = Harness::start("removed", 64, 8).await;
    let mut a = h.client("a").await;
    let mut b = h.client("b").await;
    a.join("g").await.expect("join");
    assert_eq!(h.next_got().await, Got::Join("g".into()));
    let removed = ViewId { seq: 9, coord: NodeId(2) };
    h.notify(Notification::RemovedSelf { view: removed });
    assert_eq!(event(&mut a).await, ClientEvent::RemovedSelf { view: removed });
    assert_eq!(event(&mut b).await, ClientEvent::RemovedSelf { view: removed });
    // Any client may join again, and the join reaches the membership.
    b.join("g").await.expect("join again");
    assert_eq!(h.next_got().await, Got::Join("g".into()));
    match a.send("g", vec![1], Delivery::Agreed).await {
        Err(ClientError::SendFailed(m)) => assert_eq!(m, "group g is not joined by this client"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[actix_rt::test]
async fn a_client_that_gives_up_behind_a_full_send_queue_still_leaves_its_groups() {
    let mut h = Harness::start("give-up", 64, 8).await;
    let mut raw = Raw::hello(&h).await;
    raw.send(&Request::Join { group: "g".into() }).await;
    assert_eq!(raw.recv().await, Some(Reply::Ok));
    assert_eq!(h.next_got().await, Got::Join("g".into()));
    h.full.store(true, Relaxed);
    for req in 1..=MAX_UNANSWERED_SENDS as u64 + 1 {
        raw.send(&Request::Send { group: "g".into(), payload: vec![0], safe: false, req }).await;
    }
    h.wait_got(|g| matches!(g, Got::Multicast { accepted: false, .. })).await;
    drop(raw);
    h.wait_got(|g| *g == Got::Leave("g".into())).await;
    assert_eq!(h.metrics.clients.load(Relaxed), 0);
}

#[actix_rt::test]
async fn joins_and_leaves_behind_a_blocked_send_keep_their_order_and_are_bounded() {
    let mut h = Harness::start("ops-bound", 1024, 8).await;
    let mut raw = Raw::hello(&h).await;
    raw.send(&Request::Join { group: "g".into() }).await;
    assert_eq!(raw.recv().await, Some(Reply::Ok));
    assert_eq!(h.next_got().await, Got::Join("g".into()));
    h.full.store(true, Relaxed);
    raw.send(&Request::Send { group: "g".into(), payload: vec![1], safe: false, req: 1 }).await;
    h.wait_got(|g| matches!(g, Got::Multicast { accepted: false, .. })).await;
    // Joins and leaves queue behind the blocked send, up to a bound.
    let mut refused = 0;
    for _ in 0..200 {
        for req in [Request::Join { group: "x".into() }, Request::Leave { group: "x".into() }] {
            raw.send(&req).await;
            match raw.recv().await {
                Some(Reply::Ok) => {}
                Some(Reply::Error { message }) => {
                    assert!(message.starts_with("too many joins and leaves"), "{message}");
                    refused += 1;
                }
                other => panic!("expected Ok or Error, got {other:?}"),
            }
        }
    }
    assert!(refused > 0, "the queue is bounded");
    h.full.store(false, Relaxed);
    h.notify(Notification::SendReady);
    assert!(matches!(raw.recv().await, Some(Reply::Sent { req: 1, .. })));
    // Nothing overtook the blocked send: the membership sees it first, then the joins and leaves.
    assert!(matches!(h.next_got().await, Got::Multicast { accepted: true, .. }));
    assert_eq!(h.next_got().await, Got::Join("x".into()));
    assert_eq!(h.next_got().await, Got::Leave("x".into()));
}

// ---------------------------------------------------------------------------------------------------
// The fallback retry timer on a paused clock
// ---------------------------------------------------------------------------------------------------

/// Drives `f` to completion with a deadline on the real clock (the tokio clock stands still).
async fn within_real<F: std::future::Future>(what: &str, f: F) -> F::Output {
    let end = Instant::now() + DEADLINE;
    tokio::pin!(f);
    loop {
        tokio::select! {
            biased;
            out = &mut f => return out,
            _ = tokio::task::yield_now() => {}
        }
        assert!(Instant::now() < end, "{what}: not within {DEADLINE:?} of real time");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[actix_rt::test]
async fn on_a_paused_clock_a_refused_send_is_retried_by_the_fallback_timer_and_not_before() {
    let _clock = ManualClock::start();
    let mut h = Harness::start("retry-timer", 64, 8).await;
    let mut c = within_real("connect", Client::connect(&h.socket, "app")).await.expect("connect");
    within_real("join", c.join("g")).await.expect("join");
    assert_eq!(within_real("join reaches the membership", h.got.recv()).await, Some(Got::Join("g".into())));
    h.full.store(true, Relaxed);
    let req = within_real("send", c.send_nowait("g", vec![9], Delivery::Agreed)).await.expect("send");
    assert_eq!(
        within_real("the refused attempt", h.got.recv()).await,
        Some(Got::Multicast {
            group: "g".into(),
            payload: vec![9],
            delivery: Delivery::Agreed,
            accepted: false
        })
    );
    // Room again, but nobody says so (no SendReady, no view): only the fallback timer retries.
    h.full.store(false, Relaxed);
    tokio::time::advance(SEND_RETRY_INTERVAL - Duration::from_millis(1)).await;
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    assert!(h.got.try_recv().is_err(), "retried before the fallback interval");
    // Tokio rounds a timer's deadline up to the next millisecond: 2 ms more is past it.
    tokio::time::advance(Duration::from_millis(2)).await;
    assert_eq!(
        within_real("the retry", h.got.recv()).await,
        Some(Got::Multicast {
            group: "g".into(),
            payload: vec![9],
            delivery: Delivery::Agreed,
            accepted: true
        })
    );
    assert_eq!(
        within_real("the reply", c.next_event()).await.expect("event"),
        ClientEvent::Sent { req, msg: "1.7.1".into() }
    );
}
