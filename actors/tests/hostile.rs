//! Hostile input at a live cluster for 30 s (issue 11, fuzzing): three real `cohort agent` processes
//! on loopback while
//!
//! - a fourth configured node that never runs (so its address is a configured peer) sends datagrams of
//!   random content **sealed under the cluster key**, with fresh counters, as fast as one thread can
//!   seal them, to every running node: they pass the source check, the replay window and
//!   authentication, and reach the decoder;
//! - connections to node 2's client socket send malformed frames of every request type (after a good
//!   hello), garbage instead of a hello, and an oversized length before the hello;
//! - a well-behaved client on node 1 keeps sending agreed messages to a group all three nodes' clients
//!   joined.
//!
//! Afterwards: no agent exited or panicked, no node installed a view after the one formed before the
//! flood, every message the good client sent was delivered exactly once at every node, every hostile
//! connection got an `Error` reply and was closed, and `cohort verify` passes over the event logs.
//! Everything waits on events with deadlines; the flood's length is the test's subject, not a wait.

mod support;

use cohort::Event;
use cohort_actors::client::{Client, ClientError, ClientEvent};
use cohort_actors::client_proto::{Reply, Request, PROTOCOL_VERSION};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::UdpSocket;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{Cluster, Timing};

const FLOOD: Duration = Duration::from_secs(30);
const GROUP: &str = "steady";

/// A small deterministic generator (xorshift64*), seeded per run and printed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Seals random plaintexts as node `from` (epoch 1, rising counters) to every node in `to`, from
/// `socket`, until `stop`; returns how many were sent. Half of them start like a cohort packet (magic,
/// wire version, a kind byte), so they get past the first byte checks of the decoder.
fn keyed_flood(
    socket: UdpSocket,
    key: cohort_actors::crypto::ClusterKey,
    cluster: String,
    from: u32,
    to: Vec<(u32, std::net::SocketAddr)>,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> u64 {
    let mut rng = Rng(seed | 1);
    let mut counter = 0u64;
    let mut plain = vec![0u8; 1400];
    while !stop.load(Ordering::Relaxed) {
        for (id, addr) in &to {
            let len = 1 + (rng.next() % 1400) as usize;
            rng.fill(&mut plain[..len]);
            if rng.next().is_multiple_of(2) && len >= 3 {
                plain[0] = cohort::wire::MAGIC;
                plain[1] = cohort::wire::WIRE_VERSION;
                plain[2] = (rng.next() % 2) as u8;
            }
            counter += 1;
            let sealed = cohort_actors::crypto::seal(&key, &cluster, from, *id, 1, counter, &plain[..len])
                .expect("seal");
            // A full socket buffer at the receiver drops the datagram; that is part of a flood.
            let _ = socket.send_to(&sealed, addr);
        }
    }
    counter
}

/// MessagePack of a one-entry map `{name: content}` (serde's externally tagged enum form).
fn tagged(name: &str, content: &[u8]) -> Vec<u8> {
    let mut v = vec![0x81, 0xa0 | name.len() as u8];
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(content);
    v
}

/// The malformed frames: every request type with content of the wrong shape, an unknown type, a
/// request that is not a map, and a cut-off one. Each must fail to decode as a [`Request`].
fn malformed_frames() -> Vec<(String, Vec<u8>)> {
    let names = [
        "Hello",
        "Join",
        "Leave",
        "Send",
        "ProvideState",
        "Status",
        "FenceAck",
        "SetLinkFilter",
        "Keys",
        "Watch",
    ];
    // {"group": 7, "req": "x"}: known field names with the wrong types, required fields missing.
    let wrong_fields = [0x82, 0xa5, b'g', b'r', b'o', b'u', b'p', 0x07, 0xa3, b'r', b'e', b'q', 0xa1, b'x'];
    let mut frames = Vec::new();
    for name in names {
        frames.push((format!("{name} with an integer"), tagged(name, &[0x2a])));
        frames.push((format!("{name} with wrong fields"), tagged(name, &wrong_fields)));
    }
    frames.push(("Keys/Install with an integer".into(), tagged("Keys", &tagged("Install", &[0x2a]))));
    frames.push(("an unknown request type".into(), tagged("Bogus", &[0xc0])));
    frames.push(("an array instead of a request".into(), vec![0x93, 0x01, 0x02, 0x03]));
    frames.push(("a cut-off map".into(), vec![0x81, 0xa4, b'J', b'o']));
    frames.push(("a nested array 40 deep".into(), [0x91; 40].iter().copied().chain([0xc0]).collect()));
    for (what, bytes) in &frames {
        assert!(rmp_serde::from_slice::<Request>(bytes).is_err(), "test bug: {what} decodes as a request");
    }
    frames
}

fn write_frame(s: &mut UnixStream, body: &[u8]) -> std::io::Result<()> {
    s.write_all(&(body.len() as u32).to_be_bytes())?;
    s.write_all(body)
}

/// Reads one frame; `Ok(None)` at end of stream.
fn read_frame(s: &mut UnixStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match s.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body)?;
    Ok(Some(body))
}

/// Reads frames until one that answers a request (`Welcome`, `Ok`, `Error`, `Status`), skipping events.
fn next_answer(s: &mut UnixStream) -> Result<Reply, String> {
    loop {
        let f = read_frame(s).map_err(|e| e.to_string())?.ok_or("closed without an answer")?;
        let r = rmp_serde::from_slice::<Reply>(&f).map_err(|e| format!("undecodable reply: {e}"))?;
        if matches!(r, Reply::Welcome { .. } | Reply::Ok | Reply::Error { .. } | Reply::Status { .. }) {
            return Ok(r);
        }
    }
}

/// One hostile connection: optionally a good hello, then `frame` raw (`frame` is the whole byte string
/// to write, length prefix included). Ok when the agent answered `Error` and closed the connection.
fn hostile_connection(socket: &Path, hello: bool, raw: &[u8]) -> Result<(), String> {
    let mut s = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    if hello {
        let h = rmp_serde::to_vec_named(&Request::Hello {
            client_name: "hostile".into(),
            version: PROTOCOL_VERSION,
        })
        .map_err(|e| e.to_string())?;
        write_frame(&mut s, &h).map_err(|e| format!("write hello: {e}"))?;
        // Events may come before the answer (the protocol allows them between replies).
        match next_answer(&mut s).map_err(|e| format!("read welcome: {e}"))? {
            Reply::Welcome { .. } => {}
            other => return Err(format!("expected Welcome, got {other:?}")),
        }
    }
    s.write_all(raw).map_err(|e| format!("write: {e}"))?;
    match next_answer(&mut s).map_err(|e| format!("read answer: {e}"))? {
        Reply::Error { .. } => {}
        other => return Err(format!("expected Error, got {other:?}")),
    }
    // After the error: end of stream (events the agent had queued before it may still come first).
    loop {
        match read_frame(&mut s) {
            Ok(Some(f))
                if !matches!(
                    rmp_serde::from_slice::<Reply>(&f),
                    Ok(Reply::Welcome { .. } | Reply::Ok | Reply::Error { .. } | Reply::Status { .. })
                ) =>
            {
                continue
            }
            other => {
                break match other {
                    Ok(None) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
                    Ok(Some(f)) => Err(format!(
                        "not closed after the error: another answer {:?}",
                        rmp_serde::from_slice::<Reply>(&f)
                    )),
                    Err(e) => Err(format!("not closed after the error: {e}")),
                }
            }
        }
    }
}

/// Cycles through every hostile case on `socket` until `stop`; returns (cases run, failures).
fn hostile_clients(socket: PathBuf, stop: Arc<AtomicBool>) -> (u64, Vec<String>) {
    let frames = malformed_frames();
    let mut cases: Vec<(String, bool, Vec<u8>)> = Vec::new();
    for (what, body) in &frames {
        let mut raw = (body.len() as u32).to_be_bytes().to_vec();
        raw.extend_from_slice(body);
        cases.push((format!("after hello: {what}"), true, raw));
    }
    cases.push(("garbage instead of a hello".into(), false, {
        let body = tagged("Join", &[0x2a]);
        let mut raw = (body.len() as u32).to_be_bytes().to_vec();
        raw.extend_from_slice(&body);
        raw
    }));
    cases.push(("a 10 MiB length before the hello".into(), false, (10u32 << 20).to_be_bytes().to_vec()));
    let mut run = 0u64;
    let mut failures = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        for (what, hello, raw) in &cases {
            run += 1;
            if let Err(e) = hostile_connection(&socket, *hello, raw) {
                failures.push(format!("{what}: {e}"));
            }
        }
    }
    (run, failures)
}

/// Joins [`GROUP`], waits for the whole group, and collects deliveries until the payload `end`
/// arrives. Node 1's client also sends until `stop`, then sends `end`. Returns the delivered ids and,
/// for the sender, the ids it sent.
async fn steady_client(
    socket: PathBuf,
    sender: bool,
    stop: Arc<AtomicBool>,
    progress: Arc<std::sync::atomic::AtomicUsize>,
) -> Result<(Vec<String>, Vec<String>), ClientError> {
    let mut client = Client::connect(&socket, "steady").await?;
    client.join(GROUP).await?;
    loop {
        match client.next_event().await? {
            ClientEvent::GroupView { group, members } if group == GROUP && members.len() == 3 => break,
            ClientEvent::ProvideState { group, joiner, token } => {
                client.provide_state(&group, joiner, token, Vec::new()).await?
            }
            _ => {}
        }
    }
    let mut delivered = Vec::new();
    let mut sent = Vec::new();
    let mut n = 0u64;
    let mut end_sent = !sender;
    loop {
        if !end_sent {
            if stop.load(Ordering::Relaxed) {
                eprintln!("steady sender: {} sent, sending end", sent.len());
                client.send_nowait(GROUP, b"end".to_vec(), cohort::Delivery::Agreed).await?;
                end_sent = true;
            } else {
                n += 1;
                sent.push(client.send(GROUP, format!("m{n}").into_bytes(), cohort::Delivery::Agreed).await?);
            }
        }
        // Events that arrived meanwhile (kept by the client library), without waiting while sending;
        // once the end marker is out, wait for it.
        loop {
            let ev = if end_sent {
                client.next_event().await?
            } else {
                match tokio::time::timeout(Duration::ZERO, client.next_event()).await {
                    Ok(ev) => ev?,
                    Err(_) => break,
                }
            };
            match ev {
                ClientEvent::Deliver { group, msg, payload, .. } if group == GROUP => {
                    if payload == b"end" {
                        return Ok((delivered, sent));
                    }
                    delivered.push(msg);
                    progress.store(delivered.len(), Ordering::Relaxed);
                }
                ClientEvent::ProvideState { group, joiner, token } => {
                    client.provide_state(&group, joiner, token, Vec::new()).await?
                }
                _ => {}
            }
        }
        if !end_sent {
            // A steady trickle beside the flood, not a second flood.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[test]
fn authenticated_garbage_and_malformed_frames_for_30_s_change_nothing() {
    // Four configured nodes, three running: node 4's address is a peer's, and the test sends from it.
    let mut c = Cluster::new(4, Timing::DEFAULT);
    for id in [1, 2, 3] {
        c.start(id);
    }
    let view = c.wait_for_view(&[1, 2, 3], Duration::from_secs(20));
    println!("view before the flood: {view:?}");

    let key = cohort_actors::crypto::load_key(&c.dir.join("cluster.key")).expect("the cluster key");
    let cluster_name = "cohort-it-4".to_string();
    let flood_from = UdpSocket::bind(("127.0.0.1", c.nodes[3].port)).expect("bind node 4's address");
    let targets: Vec<(u32, std::net::SocketAddr)> = [1u32, 2, 3]
        .iter()
        .map(|id| (*id, ([127, 0, 0, 1], c.nodes[*id as usize - 1].port).into()))
        .collect();
    let seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    println!("flood seed {seed}");

    let stop = Arc::new(AtomicBool::new(false));
    let flood_started_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let sockets: Vec<PathBuf> = c.nodes.iter().take(3).map(|n| n.socket.clone()).collect();

    // The steady clients first (they wait for the whole group), then the flood.
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || keyed_flood(flood_from, key, cluster_name, 4, targets, seed, stop))
    };
    let hostile = {
        let stop = stop.clone();
        let socket = sockets[1].clone();
        std::thread::spawn(move || hostile_clients(socket, stop))
    };
    // Resident memory before the flood, then its peak during it, sampled every 100 ms.
    let pids: Vec<u32> = [1, 2, 3].iter().map(|id| c.pid(*id)).collect();
    let rss_before: Vec<u64> = pids.iter().map(|p| support::rss_kib(*p).unwrap_or(0)).collect();
    let timer = {
        let stop = stop.clone();
        let pids = pids.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut peak = vec![0u64; pids.len()];
            // The flood's length is the subject of the test; the period is the sampling rate.
            while started.elapsed() < FLOOD {
                for (i, p) in pids.iter().enumerate() {
                    peak[i] = peak[i].max(support::rss_kib(*p).unwrap_or(0));
                }
                std::thread::park_timeout(
                    FLOOD.saturating_sub(started.elapsed()).min(Duration::from_millis(100)),
                );
            }
            stop.store(true, Ordering::Relaxed);
            peak
        })
    };
    let progress: Vec<Arc<std::sync::atomic::AtomicUsize>> = (0..3).map(|_| Default::default()).collect();
    let results = c.block_on(async {
        let run =
            |s: PathBuf, sender: bool, i: usize| steady_client(s, sender, stop.clone(), progress[i].clone());
        let all = async {
            tokio::join!(
                run(sockets[0].clone(), true, 0),
                run(sockets[1].clone(), false, 1),
                run(sockets[2].clone(), false, 2)
            )
        };
        tokio::time::timeout(FLOOD + Duration::from_secs(60), all).await
    });
    stop.store(true, Ordering::Relaxed);
    let sent_datagrams = flood.join().expect("flood thread");
    let (hostile_cases, hostile_failures) = hostile.join().expect("hostile thread");
    let rss_peak = timer.join().expect("timer thread");

    let delivered_so_far: Vec<usize> = progress.iter().map(|p| p.load(Ordering::Relaxed)).collect();
    let (r1, r2, r3) = results.unwrap_or_else(|_| {
        let status: Vec<String> =
            [1, 2, 3].iter().map(|id| format!("node {id}: {:?}", c.status(*id))).collect();
        panic!(
            "the steady clients did not finish; delivered so far {delivered_so_far:?}\n{}",
            status.join("\n")
        )
    });
    let (d1, sent) = r1.expect("node 1's client");
    let d2 = r2.expect("node 2's client").0;
    let d3 = r3.expect("node 3's client").0;
    println!(
        "{sent_datagrams} sealed random datagrams in {FLOOD:?}; {hostile_cases} hostile connections; {} messages sent beside them",
        sent.len()
    );

    // Memory stays within the agent's bounded buffers: the flood is dropped, not queued.
    for (i, (before, peak)) in rss_before.iter().zip(&rss_peak).enumerate() {
        println!("node {}: RSS {before} KiB before the flood, peak {peak} KiB during it", i + 1);
        assert!(
            *peak <= before + 16 * 1024,
            "node {}: RSS rose from {before} KiB to {peak} KiB during the flood",
            i + 1
        );
    }
    // Every agent still runs and none panicked.
    for id in [1, 2, 3] {
        assert!(c.exited(id).is_none(), "node {id}'s agent exited during the flood");
        let err = std::fs::read_to_string(c.stderr_path(id)).unwrap_or_default();
        assert!(!err.contains("panicked"), "node {id} panicked:\n{err}");
    }
    // Every hostile connection got an error and was closed.
    assert!(hostile_cases > 0, "no hostile connection ran");
    assert!(
        hostile_failures.is_empty(),
        "{} of {hostile_cases} hostile connections misbehaved: {:#?}",
        hostile_failures.len(),
        &hostile_failures[..hostile_failures.len().min(10)]
    );
    // Every message delivered exactly once at every node, in one order.
    assert!(!sent.is_empty(), "the good client sent nothing");
    let want: BTreeSet<&String> = sent.iter().collect();
    for (id, d) in [(1, &d1), (2, &d2), (3, &d3)] {
        let got: BTreeSet<&String> = d.iter().collect();
        assert_eq!(got.len(), d.len(), "node {id} delivered a message twice");
        assert_eq!(got, want, "node {id} did not deliver exactly what was sent");
    }
    assert_eq!(d1, d2, "nodes 1 and 2 delivered in different orders");
    assert_eq!(d1, d3, "nodes 1 and 3 delivered in different orders");
    // No view change: no node installed a view after the flood began.
    for path in c.event_logs() {
        let text = std::fs::read_to_string(&path).expect("read an event log");
        for line in text.lines() {
            let r = cohort::Record::from_json_line(line).expect("an event-log line");
            if let Event::View { view, members, .. } = &r.event {
                assert!(
                    r.ts_ms < flood_started_ms,
                    "node {} installed view {view} {members:?} during the flood",
                    r.node.0
                );
            }
        }
    }
    c.stop_and_verify();
}
