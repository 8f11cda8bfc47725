//! TransportActor against real loopback sockets and probe actors: delivery with the sender's node id,
//! authentication failures, garbage, the link filter, a restart after a socket failure, and the bind
//! retry's backoff on a paused clock. Every wait is on an event or a counter, with a deadline; nothing
//! sleeps to "let it settle".

#[path = "support/paused.rs"]
mod paused;
use paused::ManualClock;

use actix::prelude::*;
use cohort::{Epoch, NodeId};
use cohort_actors::crypto::{self, ClusterKey, KeyInfo, KeyRing, KeyRingError};
use cohort_actors::messages::{ChangeKeyRing, FrameReceived, KeyRingOp, SendFrame, SetLinkFilter};
use cohort_actors::metrics::Metrics;
use cohort_actors::transport::{
    GetLocalAddr, GetSendDrops, InjectSocketFailure, TapDatagrams, TransportActor, TransportConfig,
};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

const CLUSTER: &str = "test-cluster";
const DEADLINE: Duration = Duration::from_secs(5);

fn key() -> ClusterKey {
    ClusterKey::from_bytes([42; 32])
}

/// Records every frame the transport delivers.
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

/// One transport under test, with its probe and metrics.
struct Node {
    addr: Addr<TransportActor>,
    metrics: Arc<Metrics>,
    frames: mpsc::UnboundedReceiver<FrameReceived>,
}

impl Node {
    async fn next_frame(&mut self) -> FrameReceived {
        tokio::time::timeout(DEADLINE, self.frames.recv())
            .await
            .expect("a frame within the deadline")
            .expect("probe alive")
    }

    fn assert_no_frame(&mut self) {
        assert!(self.frames.try_recv().is_err(), "no frame expected");
    }

    async fn send(&self, to: u32, bytes: &[u8]) {
        self.addr
            .send(SendFrame { to: NodeId(to), bytes: bytes.to_vec(), epoch: Epoch(1) })
            .await
            .expect("transport alive");
    }
}

/// Waits until `counter` reaches `value`, failing after the deadline.
async fn wait_for(counter: &AtomicU64, value: u64) {
    let reached = tokio::time::timeout(DEADLINE, async {
        while counter.load(Relaxed) < value {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    assert!(reached.is_ok(), "counter stuck at {} (waiting for {value})", counter.load(Relaxed));
    assert_eq!(counter.load(Relaxed), value);
}

fn local_socket() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").expect("bind loopback")
}

fn start(node: u32, socket: UdpSocket, peers: &BTreeMap<NodeId, SocketAddr>) -> Node {
    let (tx, frames) = mpsc::unbounded_channel();
    let probe = Probe(tx).start();
    let metrics = Arc::new(Metrics::default());
    let cfg = TransportConfig {
        bind: "127.0.0.1:0".parse().expect("addr"),
        node: NodeId(node),
        peers: peers.clone(),
        cluster: CLUSTER.to_string(),
        keys: KeyRing::new(&key(), "test", CLUSTER),
        ring_file: None,
        max_datagram_bytes: 1400,
    };
    let addr = TransportActor::with_socket(cfg, socket, probe.recipient(), metrics.clone())
        .expect("transport")
        .start();
    Node { addr, metrics, frames }
}

/// Nodes 1 (A) and 2 (B) on loopback, plus `extra` peers (raw sockets the test drives by hand).
fn pair(extra: &[(u32, &UdpSocket)]) -> (Node, Node) {
    let (sa, sb) = (local_socket(), local_socket());
    let mut peers = BTreeMap::new();
    peers.insert(NodeId(1), sa.local_addr().expect("addr"));
    peers.insert(NodeId(2), sb.local_addr().expect("addr"));
    for (id, s) in extra {
        peers.insert(NodeId(*id), s.local_addr().expect("addr"));
    }
    (start(1, sa, &peers), start(2, sb, &peers))
}

async fn local_addr(n: &Node) -> SocketAddr {
    n.addr.send(GetLocalAddr).await.expect("transport alive").expect("bound")
}

#[actix_rt::test]
async fn a_frame_sent_by_a_arrives_at_b_from_a() {
    let (a, mut b) = pair(&[]);
    a.send(2, b"hello").await;
    let f = b.next_frame().await;
    assert_eq!((f.from, f.bytes.as_slice()), (NodeId(1), &b"hello"[..]));
    assert_eq!(a.metrics.datagrams_out.load(Relaxed), 1);
    assert_eq!(a.metrics.bytes_out.load(Relaxed), (5 + crypto::SEAL_OVERHEAD) as u64);
    assert_eq!(b.metrics.datagrams_in.load(Relaxed), 1);
    assert_eq!(b.metrics.bytes_in.load(Relaxed), (5 + crypto::SEAL_OVERHEAD) as u64);
    assert_eq!(b.metrics.bad_datagrams.load(Relaxed), 0);

    // Many frames, both ways, in order on loopback.
    for i in 0..100u32 {
        b.send(1, &i.to_be_bytes()).await;
    }
    let mut a = a;
    for i in 0..100u32 {
        let f = a.next_frame().await;
        assert_eq!((f.from, f.bytes), (NodeId(2), i.to_be_bytes().to_vec()));
    }
}

#[actix_rt::test]
async fn frames_to_unknown_nodes_are_ignored_and_oversized_ones_dropped() {
    let (a, mut b) = pair(&[]);
    a.send(9, b"nobody").await;
    a.send(2, &[0u8; 1401]).await;
    assert_eq!(a.metrics.datagrams_out.load(Relaxed), 0);
    assert_eq!(a.addr.send(GetSendDrops).await.expect("alive"), 1);
    a.send(2, &[7u8; 1400]).await;
    assert_eq!(b.next_frame().await.bytes, vec![7u8; 1400]);
}

#[actix_rt::test]
async fn datagrams_of_another_key_or_cluster_are_dropped_and_counted() {
    let c = local_socket();
    let (_a, mut b) = pair(&[(3, &c)]);
    let b_addr = local_addr(&b).await;
    let other_key =
        crypto::seal(&ClusterKey::from_bytes([7; 32]), CLUSTER, 3, 2, 1, 0, b"forged").expect("seal");
    c.send_to(&other_key, b_addr).expect("send");
    wait_for(&b.metrics.bad_datagrams, 1).await;
    let other_cluster = crypto::seal(&key(), "another-cluster", 3, 2, 1, 1, b"crosstalk").expect("seal");
    c.send_to(&other_cluster, b_addr).expect("send");
    wait_for(&b.metrics.bad_datagrams, 2).await;
    b.assert_no_frame();
    assert_eq!(b.metrics.datagrams_in.load(Relaxed), 0);

    // The same peer with the right key and cluster gets through.
    c.send_to(&crypto::seal(&key(), CLUSTER, 3, 2, 1, 2, b"genuine").expect("seal"), b_addr).expect("send");
    let f = b.next_frame().await;
    assert_eq!((f.from, f.bytes.as_slice()), (NodeId(3), &b"genuine"[..]));
}

#[actix_rt::test]
async fn garbage_is_dropped_and_counted_and_the_transport_keeps_working() {
    let c = local_socket();
    let stranger = local_socket();
    let (a, mut b) = pair(&[(3, &c)]);
    let b_addr = local_addr(&b).await;
    let mut garbage: Vec<Vec<u8>> = vec![vec![], vec![1], vec![0; 28], vec![1; 29], vec![0xff; 100]];
    garbage.push((0..2000u32).map(|i| (i * 31 % 251) as u8).collect());
    garbage.push(vec![crypto::SEAL_VERSION; 1400 + crypto::SEAL_OVERHEAD + 1]); // longer than any sealed datagram
    for g in &garbage {
        c.send_to(g, b_addr).expect("send");
    }
    // A genuine datagram from an address that is not a configured peer is dropped too.
    stranger
        .send_to(&crypto::seal(&key(), CLUSTER, 3, 2, 1, 0, b"who?").expect("seal"), b_addr)
        .expect("send");
    wait_for(&b.metrics.bad_datagrams, garbage.len() as u64 + 1).await;
    b.assert_no_frame();

    a.send(2, b"still here").await;
    let f = b.next_frame().await;
    assert_eq!((f.from, f.bytes.as_slice()), (NodeId(1), &b"still here"[..]));
}

#[actix_rt::test]
async fn the_link_filter_blocks_both_directions_and_counts() {
    let (mut a, mut b) = pair(&[]);
    a.addr.send(SetLinkFilter { blocked: BTreeSet::from([NodeId(2)]) }).await.expect("alive");

    // Outgoing: dropped before the socket.
    a.send(2, b"to b").await;
    assert_eq!(a.metrics.filtered_datagrams.load(Relaxed), 1);
    assert_eq!(a.metrics.datagrams_out.load(Relaxed), 0);

    // Incoming: B sends, A drops on receipt.
    b.send(1, b"to a").await;
    assert_eq!(b.metrics.datagrams_out.load(Relaxed), 1);
    wait_for(&a.metrics.filtered_datagrams, 2).await;
    a.assert_no_frame();
    b.assert_no_frame();
    assert_eq!(a.metrics.datagrams_in.load(Relaxed), 0);

    // Lifting the filter restores both directions.
    a.addr.send(SetLinkFilter::default()).await.expect("alive");
    b.send(1, b"again to a").await;
    assert_eq!(a.next_frame().await.bytes, b"again to a");
    a.send(2, b"again to b").await;
    assert_eq!(b.next_frame().await.bytes, b"again to b");
}

#[actix_rt::test]
async fn a_supervised_transport_binds_its_configured_address_when_it_starts() {
    let (tx, mut frames) = mpsc::unbounded_channel();
    let probe = Probe(tx).start();
    let sender = local_socket();
    let peers = BTreeMap::from([(NodeId(5), sender.local_addr().expect("addr"))]);
    let cfg = TransportConfig {
        bind: "127.0.0.1:0".parse().expect("addr"),
        node: NodeId(1),
        peers,
        cluster: CLUSTER.to_string(),
        keys: KeyRing::new(&key(), "test", CLUSTER),
        ring_file: None,
        max_datagram_bytes: 1400,
    };
    let metrics = Arc::new(Metrics::default());
    let recipient = probe.recipient();
    let addr = actix::Supervisor::start(move |_| TransportActor::new(cfg, recipient, metrics));
    let bound = addr.send(GetLocalAddr).await.expect("alive").expect("bound in started");
    assert_ne!(bound.port(), 0);
    sender.send_to(&crypto::seal(&key(), CLUSTER, 5, 1, 1, 0, b"hi").expect("seal"), bound).expect("send");
    let f = tokio::time::timeout(DEADLINE, frames.recv()).await.expect("deadline").expect("probe");
    assert_eq!((f.from, f.bytes.as_slice()), (NodeId(5), &b"hi"[..]));
}

#[actix_rt::test]
async fn binding_a_busy_address_is_an_error_naming_it() {
    let busy = local_socket();
    let at = busy.local_addr().expect("addr");
    let (tx, _frames) = mpsc::unbounded_channel();
    let cfg = TransportConfig {
        bind: at,
        node: NodeId(1),
        peers: BTreeMap::new(),
        cluster: CLUSTER.to_string(),
        keys: KeyRing::new(&key(), "test", CLUSTER),
        ring_file: None,
        max_datagram_bytes: 1400,
    };
    let err = TransportActor::bind(cfg, Probe(tx).start().recipient(), Arc::new(Metrics::default()))
        .expect_err("address in use");
    assert!(err.to_string().starts_with(&format!("cannot bind udp {at}: ")), "{err}");
}

#[actix_rt::test]
async fn a_supervised_transport_restarted_after_a_socket_failure_keeps_its_address_and_link_filter() {
    let (tx, mut frames) = mpsc::unbounded_channel();
    let probe = Probe(tx).start();
    let (s5, s6) = (local_socket(), local_socket());
    let socket = local_socket();
    let peers = BTreeMap::from([
        (NodeId(5), s5.local_addr().expect("addr")),
        (NodeId(6), s6.local_addr().expect("addr")),
    ]);
    let cfg = TransportConfig {
        bind: "127.0.0.1:0".parse().expect("addr"),
        node: NodeId(1),
        peers,
        cluster: CLUSTER.to_string(),
        keys: KeyRing::new(&key(), "test", CLUSTER),
        ring_file: None,
        max_datagram_bytes: 1400,
    };
    let metrics = Arc::new(Metrics::default());
    let t = TransportActor::with_socket(cfg, socket, probe.recipient(), metrics.clone()).expect("transport");
    let addr = actix::Supervisor::start(move |_| t);
    let before = addr.send(GetLocalAddr).await.expect("alive").expect("bound");
    addr.send(SetLinkFilter { blocked: BTreeSet::from([NodeId(6)]) }).await.expect("alive");

    addr.send(InjectSocketFailure).await.expect("alive");
    let after = addr.send(GetLocalAddr).await.expect("restarted").expect("bound again");
    assert_eq!(before, after);
    // Node 6 is still cut off after the restart; node 5 gets through.
    s6.send_to(&crypto::seal(&key(), CLUSTER, 6, 1, 1, 0, b"from 6").expect("seal"), after).expect("send");
    wait_for(&metrics.filtered_datagrams, 1).await;
    s5.send_to(&crypto::seal(&key(), CLUSTER, 5, 1, 1, 0, b"from 5").expect("seal"), after).expect("send");
    let f = tokio::time::timeout(DEADLINE, frames.recv()).await.expect("deadline").expect("probe");
    assert_eq!((f.from, f.bytes.as_slice()), (NodeId(5), &b"from 5"[..]));
    assert!(frames.try_recv().is_err(), "nothing from node 6");
}

#[actix_rt::test]
async fn on_a_paused_clock_a_busy_address_is_retried_with_a_doubling_backoff_until_it_binds() {
    let _clock = ManualClock::start();
    let busy = local_socket();
    let at = busy.local_addr().expect("addr");
    let sender = local_socket();
    let (tx, mut frames) = mpsc::unbounded_channel();
    let cfg = TransportConfig {
        bind: at,
        node: NodeId(1),
        peers: BTreeMap::from([(NodeId(5), sender.local_addr().expect("addr"))]),
        cluster: CLUSTER.to_string(),
        keys: KeyRing::new(&key(), "test", CLUSTER),
        ring_file: None,
        max_datagram_bytes: 1400,
    };
    let recipient = Probe(tx).start().recipient();
    let metrics = Arc::new(Metrics::default());
    let addr = actix::Supervisor::start(move |_| TransportActor::new(cfg, recipient, metrics));
    let bound = |a: &Addr<TransportActor>| a.send(GetLocalAddr);
    assert_eq!(bound(&addr).await.expect("alive"), None, "the address is busy");

    // First retry after 100 ms (still busy), the next 200 ms later.
    tokio::time::advance(Duration::from_millis(99)).await;
    assert_eq!(bound(&addr).await.expect("alive"), None);
    tokio::time::advance(Duration::from_millis(1)).await;
    // Let the first retry run (and fail) for sure before the address is freed.
    for _ in 0..50 {
        assert_eq!(bound(&addr).await.expect("alive"), None, "still busy at the first retry");
        tokio::task::yield_now().await;
    }
    drop(busy);
    tokio::time::advance(Duration::from_millis(199)).await;
    assert_eq!(bound(&addr).await.expect("alive"), None, "no retry before the doubled backoff");
    tokio::time::advance(Duration::from_millis(1)).await;
    let mut got = None;
    for _ in 0..100 {
        got = bound(&addr).await.expect("alive");
        if got.is_some() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(got, Some(at), "bound at the second retry");
    sender.send_to(&crypto::seal(&key(), CLUSTER, 5, 1, 1, 0, b"bound").expect("seal"), at).expect("send");
    let end = std::time::Instant::now() + DEADLINE;
    let f = loop {
        if let Ok(f) = frames.try_recv() {
            break f;
        }
        assert!(std::time::Instant::now() < end, "no frame after the bind");
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(1));
    };
    assert_eq!((f.from, f.bytes.as_slice()), (NodeId(5), &b"bound"[..]));
}

#[actix_rt::test]
async fn replayed_datagrams_are_dropped_before_the_core_and_counted_by_reason() {
    use cohort_actors::replay::Replay;
    let c = local_socket();
    let (_a, mut b) = pair(&[(3, &c)]);
    let b_addr = local_addr(&b).await;
    let seal = |epoch, counter, text: &[u8]| {
        crypto::seal(&key(), CLUSTER, 3, 2, epoch, counter, text).expect("seal")
    };
    let replays = |b: &Node| Replay::ALL.map(|r| b.metrics.replayed(r));
    let send = |d: &[u8]| {
        c.send_to(d, b_addr).expect("send");
    };

    let first = seal(5, 10, b"e5 c10");
    send(&first);
    assert_eq!(b.next_frame().await.bytes, b"e5 c10");
    // The same datagram again: a duplicate, dropped and counted, never delivered.
    send(&first);
    wait_for(&b.metrics.replayed_datagrams[Replay::Duplicate as usize], 1).await;
    // Out of order inside the window: fresh.
    send(&seal(5, 9, b"e5 c9"));
    assert_eq!(b.next_frame().await.bytes, b"e5 c9");
    // A forgery claiming a higher epoch fails to authenticate and moves nothing.
    c.send_to(&crypto::seal(&key(), "another-cluster", 3, 2, 100, 0, b"forged").expect("seal"), b_addr)
        .expect("send");
    wait_for(&b.metrics.bad_datagrams, 1).await;
    send(&seal(5, 11, b"e5 c11"));
    assert_eq!(b.next_frame().await.bytes, b"e5 c11");
    // A new incarnation: higher epoch, counter from 0; then the old epoch is stale.
    send(&seal(6, 0, b"e6 c0"));
    assert_eq!(b.next_frame().await.bytes, b"e6 c0");
    send(&seal(5, 12, b"e5 c12"));
    wait_for(&b.metrics.replayed_datagrams[Replay::StaleEpoch as usize], 1).await;
    // Far ahead, then below the window.
    send(&seal(6, 5000, b"e6 c5000"));
    assert_eq!(b.next_frame().await.bytes, b"e6 c5000");
    send(&seal(6, 1, b"e6 c1"));
    wait_for(&b.metrics.replayed_datagrams[Replay::TooOld as usize], 1).await;
    // Epoch 0 (the epoch inquiry, before an incarnation exists) is not windowed: its bodies carry nonces.
    let inquiry = seal(0, 77, b"e0");
    send(&inquiry);
    send(&inquiry);
    assert_eq!(b.next_frame().await.bytes, b"e0");
    assert_eq!(b.next_frame().await.bytes, b"e0");
    // A header naming another node than the source address is dropped.
    c.send_to(&crypto::seal(&key(), CLUSTER, 1, 2, 6, 6000, b"spoofed").expect("seal"), b_addr)
        .expect("send");
    wait_for(&b.metrics.bad_datagrams, 2).await;
    // A genuine datagram of node 3 sealed for node 1, replayed at node 2: the receiver is in the nonce.
    let for_node_1 = crypto::seal(&key(), CLUSTER, 3, 1, 6, 6001, b"for node 1").expect("seal");
    c.send_to(&for_node_1, b_addr).expect("send");
    wait_for(&b.metrics.bad_datagrams, 3).await;

    b.assert_no_frame();
    assert_eq!(replays(&b), [1, 1, 1], "stale epoch, duplicate, too old");
    assert_eq!(b.metrics.datagrams_in.load(Relaxed), 7);
}

#[actix_rt::test]
async fn a_sender_seals_under_a_growing_counter_and_never_goes_back_to_an_older_epoch() {
    let (a, mut b) = pair(&[]);
    let (tx, mut tapped) = mpsc::unbounded_channel();
    b.addr.send(TapDatagrams(Some(tx))).await.expect("alive");
    let header = |d: &[u8]| crypto::peek_header(d).expect("header");
    let mut seen = Vec::new();
    for (epoch, text) in [(3, "one"), (3, "two"), (4, "three"), (3, "late")] {
        a.addr
            .send(SendFrame { to: NodeId(2), bytes: text.as_bytes().to_vec(), epoch: Epoch(epoch) })
            .await
            .expect("alive");
        assert_eq!(b.next_frame().await.bytes, text.as_bytes());
        let (_, d) = tokio::time::timeout(DEADLINE, tapped.recv()).await.expect("deadline").expect("tap");
        let h = header(&d);
        seen.push((h.node, h.epoch, h.counter));
    }
    // A frame of a replaced incarnation is sealed under the newer epoch (its receivers would drop it).
    assert_eq!(seen, vec![(1, 3, 0), (1, 3, 1), (1, 4, 2), (1, 4, 3)]);
}

#[actix_rt::test]
async fn a_key_ring_accepts_every_installed_key_and_seals_with_the_primary() {
    let (mut a, mut b) = pair(&[]);
    let new = ClusterKey::from_bytes([43; 32]);
    let (old_id, new_id) = (key().id(), new.id());
    let ring = |n: &Node, op: KeyRingOp| n.addr.send(ChangeKeyRing(op));
    let install = || KeyRingOp::Install { key: new.clone(), source: "new.key".into() };
    let keys = ring(&b, install()).await.expect("alive").expect("install");
    assert_eq!(keys.iter().map(|k| (k.id.clone(), k.primary)).collect::<Vec<_>>(), {
        let mut want = vec![(old_id.to_string(), true), (new_id.to_string(), false)];
        want.sort();
        want
    });
    assert_eq!(ring(&b, install()).await.expect("alive"), Err(KeyRingError::Duplicate(new_id)));
    // B seals with the new key before A has it: A drops those as an unknown key.
    ring(&b, KeyRingOp::Use(new_id)).await.expect("alive").expect("use");
    b.send(1, b"too early").await;
    wait_for(&a.metrics.unknown_key_datagrams, 1).await;
    a.assert_no_frame();
    // Once A has it, both directions work, A still sealing with the old key B still accepts.
    ring(&a, install()).await.expect("alive").expect("install");
    b.send(1, b"new to a").await;
    assert_eq!(a.next_frame().await.bytes, b"new to a");
    a.send(2, b"old to b").await;
    assert_eq!(b.next_frame().await.bytes, b"old to b");
    // The primary cannot be removed; another key can, and is then refused.
    let e = ring(&b, KeyRingOp::Remove(new_id)).await.expect("alive").expect_err("primary");
    assert_eq!(e, KeyRingError::RemovePrimary(new_id));
    ring(&b, KeyRingOp::Remove(old_id)).await.expect("alive").expect("remove the old key");
    a.send(2, b"old again").await;
    wait_for(&b.metrics.unknown_key_datagrams, 1).await;
    b.assert_no_frame();
    ring(&a, KeyRingOp::Use(new_id)).await.expect("alive").expect("use");
    a.send(2, b"new to b").await;
    assert_eq!(b.next_frame().await.bytes, b"new to b");
    let keys = ring(&b, KeyRingOp::List).await.expect("alive").expect("list");
    let want = KeyInfo {
        id: new_id.to_string(),
        primary: true,
        source: "new.key".into(),
        from: cohort_actors::crypto::KeyOrigin::Command,
    };
    assert_eq!(keys, vec![want]);
}

#[actix_rt::test]
async fn a_reload_changes_the_ring_in_one_step_and_leaves_command_keys_alone() {
    use cohort_actors::crypto::KeyOrigin;
    let (a, _b) = pair(&[]);
    let ring = |op: KeyRingOp| a.addr.send(ChangeKeyRing(op));
    let (new, by_hand) = (ClusterKey::from_bytes([44; 32]), ClusterKey::from_bytes([45; 32]));
    ring(KeyRingOp::Install { key: by_hand.clone(), source: "hand.key".into() })
        .await
        .expect("alive")
        .expect("install by command");
    // Install the new key, make it primary and remove the old one, as one change.
    let op = KeyRingOp::Reload {
        install: vec![(new.clone(), "new.key".into())],
        primary: Some(new.id()),
        remove: vec![key().id()],
    };
    let mut keys = ring(op).await.expect("alive").expect("reload");
    keys.sort_by(|x, y| x.id.cmp(&y.id));
    let mut want = vec![
        KeyInfo {
            id: new.id().to_string(),
            primary: true,
            source: "new.key".into(),
            from: KeyOrigin::Config,
        },
        KeyInfo {
            id: by_hand.id().to_string(),
            primary: false,
            source: "hand.key".into(),
            from: KeyOrigin::Command,
        },
    ];
    want.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(keys, want);
    // A step that cannot be carried out (removing the primary) changes nothing at all.
    let other = ClusterKey::from_bytes([46; 32]);
    let op = KeyRingOp::Reload {
        install: vec![(other, "other.key".into())],
        primary: None,
        remove: vec![new.id()],
    };
    assert_eq!(ring(op).await.expect("alive"), Err(KeyRingError::RemovePrimary(new.id())));
    let mut after = ring(KeyRingOp::List).await.expect("alive").expect("list");
    after.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(after, want, "the refused reload installed nothing");
}
