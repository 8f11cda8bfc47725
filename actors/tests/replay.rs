//! Replay protection on a running loopback cluster: datagrams captured from a node's earlier and
//! current incarnation (and its epoch inquiries) are replayed at the nodes that received them, from the
//! node's own address, as an attacker on the path would. Nothing may change: no view, no delivery;
//! `/metrics` counts every sequenced replay by reason.
//!
//! Nodes 2 and 3 run in the test's actix system with a tap on their transports (a copy of every
//! datagram received). Node 1 runs in its own actix system on its own thread, so it can be stopped for
//! good (sockets closed, data directory unlocked) and started again: a real restart, with its epoch
//! inquiry under epoch 0 and a new epoch. The replays are sent from node 1's current socket
//! ([`InjectDatagram`]), because receivers know a peer by its source address. Waits poll observable
//! state with deadlines; nothing sleeps to let things settle.

#[path = "support/inprocess.rs"]
mod inprocess;

use cohort::{Delivery, Event, Record};
use cohort_actors::admin::GetAdminAddr;
use cohort_actors::crypto::peek_header;
use cohort_actors::messages::{JoinGroup, Multicast};
use cohort_actors::replay::Replay;
use cohort_actors::supervisor::{leave_deadline, NodeHandle, ShutdownOutcome};
use cohort_actors::transport::{InjectDatagram, TapDatagrams};
use inprocess::*;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::UnboundedReceiver;

const GROUP: &str = "g";

async fn metrics_text(h: &NodeHandle) -> String {
    let admin = h.admin.as_ref().expect("admin endpoint configured");
    let addr = admin.send(GetAdminAddr).await.expect("admin alive").expect("bound");
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").await.expect("write");
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).await.expect("read");
        String::from_utf8(resp).expect("utf-8")
    };
    tokio::time::timeout(DEADLINE, exchange).await.expect("/metrics within the deadline")
}

/// The replay counters of `/metrics`, by reason.
async fn replays(h: &NodeHandle) -> BTreeMap<Replay, u64> {
    let text = metrics_text(h).await;
    Replay::ALL
        .into_iter()
        .map(|r| {
            let prefix = format!(
                "cohort_replayed_datagrams_total{{node=\"{}\",reason=\"{}\"}} ",
                h.member.node().0,
                r.label()
            );
            let v = text
                .lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .unwrap_or_else(|| panic!("no {prefix:?} in /metrics:\n{text}"))
                .parse()
                .expect("a count");
            (r, v)
        })
        .collect()
}

/// Multicasts `payload` from `h`, retrying while its join is still on its way through the order.
async fn multicast(h: &NodeHandle, payload: &str) {
    let end = Instant::now() + DEADLINE;
    loop {
        let r = h
            .membership
            .send(Multicast {
                group: GROUP.into(),
                payload: payload.as_bytes().to_vec(),
                delivery: Delivery::Agreed,
            })
            .await
            .expect("membership alive");
        if r.is_ok() {
            return;
        }
        assert!(Instant::now() < end, "multicast refused: {r:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn delivers(r: &[Record]) -> usize {
    r.iter().filter(|x| matches!(&x.event, Event::Deliver { group, .. } if group == GROUP)).count()
}

fn views(r: &[Record]) -> usize {
    r.iter().filter(|x| matches!(x.event, Event::View { .. })).count()
}

/// Waits until each of `ids` has `want` deliveries of the group in its event log.
async fn wait_delivers(nodes: &Nodes, ids: &[u32], want: usize) {
    for &id in ids {
        wait_records(&nodes.event_log(id), &format!("{want} deliveries at node {id}"), |r| {
            delivers(r) >= want
        })
        .await;
        assert_eq!(delivers(&records(&nodes.event_log(id))), want, "node {id} delivered more than was sent");
    }
}

/// Node 1's datagrams copied by a tap so far (by source address), with their header's epoch.
fn drain_from(
    tap: &mut UnboundedReceiver<(SocketAddr, Vec<u8>)>,
    from: SocketAddr,
    into: &mut Vec<(u64, Vec<u8>)>,
) {
    while let Ok((src, d)) = tap.try_recv() {
        if src == from {
            let h = peek_header(&d).expect("node 1 sends sealed datagrams");
            assert_eq!(h.node, 1);
            into.push((h.epoch, d));
        }
    }
}

#[actix_rt::test]
async fn replayed_traffic_of_an_earlier_and_the_current_incarnation_changes_no_view_and_delivers_nothing() {
    let nodes = Nodes::new("replay", 3, "[admin]\nlisten = \"127.0.0.1:0\"\n");
    let node1: SocketAddr = format!("127.0.0.1:{}", nodes.ports()[0]).parse().expect("addr");
    // Nodes 2 and 3 form the cluster (a majority of three); node 1 joins later, so its epoch inquiries
    // reach their transports and are captured too.
    let [h2, h3] = nodes.start_all([2, 3]).await;
    wait_primary_of_all(&[&h2, &h3]).await;
    let (tx2, mut tap2) = tokio::sync::mpsc::unbounded_channel();
    let (tx3, mut tap3) = tokio::sync::mpsc::unbounded_channel();
    h2.transport.send(TapDatagrams(Some(tx2))).await.expect("transport alive");
    h3.transport.send(TapDatagrams(Some(tx3))).await.expect("transport alive");
    // Through client connections that answer state requests: node 1's incarnations join after them.
    for id in [2, 3] {
        join_as_application(&nodes.settings(id, "").socket_path(), GROUP).await;
    }

    // The earlier incarnation: joins, multicasts, leaves cleanly, and its process ends.
    let mut a = Threaded::start(nodes.settings(1, "")).await;
    let epoch_a = a.handle.member.epoch();
    wait_primary_of_all(&[&a.handle, &h2, &h3]).await;
    a.handle.membership.send(JoinGroup { group: GROUP.into() }).await.expect("join");
    for i in 0..10 {
        multicast(&a.handle, &format!("a{i}")).await;
    }
    wait_delivers(&nodes, &[1, 2, 3], 10).await;
    let leave = leave_deadline(&nodes.settings(1, "").timing);
    assert_eq!(a.handle.shutdown("terminate", leave).await, ShutdownOutcome::Left);
    a.stop();
    for h in [&h2, &h3] {
        wait_status(h, "a view without node 1", |s| {
            s.primary && s.view.as_ref().is_some_and(|v| v.members.iter().all(|m| m.node().0 != 1))
        })
        .await;
    }

    // The current incarnation: a real restart, a new epoch above the earlier one.
    let b = Threaded::start(nodes.settings(1, "")).await;
    let epoch_b = b.handle.member.epoch();
    assert!(epoch_b > epoch_a, "a restart runs under a higher epoch");
    wait_primary_of_all(&[&b.handle, &h2, &h3]).await;
    b.handle.membership.send(JoinGroup { group: GROUP.into() }).await.expect("join");
    for i in 0..10 {
        multicast(&b.handle, &format!("b{i}")).await;
    }
    // Node 1's earlier incarnation's log has its 10; the current one's 10 more (and the others 20).
    wait_delivers(&nodes, &[2, 3], 20).await;
    wait_records(&nodes.event_log(1), "the current incarnation's deliveries", |r| {
        r.iter().filter(|x| x.member().epoch() == epoch_b && matches!(x.event, Event::Deliver { .. })).count()
            == 10
    })
    .await;

    // What was captured from node 1, per receiver.
    let mut captured: BTreeMap<u32, Vec<(u64, Vec<u8>)>> = BTreeMap::new();
    drain_from(&mut tap2, node1, captured.entry(2).or_default());
    drain_from(&mut tap3, node1, captured.entry(3).or_default());
    for (id, c) in &captured {
        let count = |e: u64| c.iter().filter(|(x, _)| *x == e).count();
        println!(
            "captured from node 1 at node {id}: {} of epoch 0 (inquiries), {} of epoch {} (earlier), {} of epoch {} (current)",
            count(0),
            count(epoch_a.0),
            epoch_a.0,
            count(epoch_b.0),
            epoch_b.0
        );
        assert!(
            count(epoch_a.0) > 0 && count(epoch_b.0) > 0,
            "traffic of both incarnations captured at node {id}"
        );
        assert!(count(0) > 0, "epoch inquiries captured at node {id}");
    }

    // The state before the replay.
    let logs = |id: u32| records(&nodes.event_log(id));
    let before: BTreeMap<u32, (usize, usize)> =
        [1, 2, 3].map(|id| (id, (views(&logs(id)), delivers(&logs(id))))).into();
    let view_before = [&b.handle, &h2, &h3].map(|h| h.membership.clone());
    let mut view_ids = Vec::new();
    for m in &view_before {
        let s = m.send(cohort_actors::messages::GetStatus).await.expect("status");
        view_ids.push(s.view.map(|v| v.id));
    }
    let counts_before = [replays(&h2).await, replays(&h3).await];
    let suspicions_before =
        [&h2, &h3].map(|h| h.metrics.suspicions.load(std::sync::atomic::Ordering::Relaxed));

    // Replay everything, in capture order, from node 1's own address at the node that received it.
    let addr_of = |id: u32| -> SocketAddr {
        format!("127.0.0.1:{}", nodes.ports()[id as usize - 1]).parse().expect("addr")
    };
    for (id, c) in &captured {
        for (_, d) in c {
            b.handle
                .transport
                .send(InjectDatagram { to: addr_of(*id), bytes: d.clone() })
                .await
                .expect("transport alive")
                .expect("sent");
        }
    }

    // Every sequenced replay is dropped and counted: the earlier incarnation's as a stale epoch, the
    // current one's as duplicates (or too old, once the window moved past them).
    for (i, (id, h)) in [(2, &h2), (3, &h3)].into_iter().enumerate() {
        let c = &captured[&id];
        let stale = c.iter().filter(|(e, _)| *e == epoch_a.0).count() as u64;
        let current = c.iter().filter(|(e, _)| *e == epoch_b.0).count() as u64;
        let end = Instant::now() + DEADLINE;
        let after = loop {
            let now = replays(h).await;
            let delta = |r: Replay| now[&r] - counts_before[i][&r];
            if delta(Replay::StaleEpoch) >= stale
                && delta(Replay::Duplicate) + delta(Replay::TooOld) >= current
            {
                break now;
            }
            assert!(
                Instant::now() < end,
                "node {id}: replay counters {now:?}, before {:?}",
                counts_before[i]
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let delta = |r: Replay| after[&r] - counts_before[i][&r];
        println!(
            "node {id}: replayed {} sequenced datagrams; /metrics: stale_epoch +{}, duplicate +{}, too_old +{}",
            stale + current,
            delta(Replay::StaleEpoch),
            delta(Replay::Duplicate),
            delta(Replay::TooOld)
        );
        assert_eq!(delta(Replay::StaleEpoch), stale, "node {id}: every datagram of the earlier incarnation");
        assert_eq!(delta(Replay::Duplicate) + delta(Replay::TooOld), current, "node {id}: every current one");
    }

    // A marker sent after the replays: once every node delivered it, whatever the replays could have
    // done has been done. Exactly one delivery more everywhere, no view record more.
    multicast(&h2, "marker").await;
    let want = [(1, before[&1].1 + 1), (2, before[&2].1 + 1), (3, before[&3].1 + 1)];
    for (id, n) in want {
        wait_records(&nodes.event_log(id), "the marker's delivery", |r| delivers(r) >= n).await;
        let r = logs(id);
        assert_eq!(delivers(&r), n, "node {id}: only the marker was delivered after the replay");
        assert_eq!(views(&r), before[&id].0, "node {id}: no view change");
        let last = r.iter().rev().find_map(|x| match &x.event {
            Event::Deliver { msg, sender, .. } => Some((msg.clone(), *sender)),
            _ => None,
        });
        assert_eq!(last.map(|l| l.1), Some(h2.member), "node {id}: the last delivery is the marker");
    }
    for (m, want) in view_before.iter().zip(&view_ids) {
        let s = m.send(cohort_actors::messages::GetStatus).await.expect("status");
        assert_eq!(&s.view.map(|v| v.id), want, "the view is the one before the replay");
        assert!(s.primary);
    }
    for (h, before) in [&h2, &h3].into_iter().zip(suspicions_before) {
        assert_eq!(h.metrics.suspicions.load(std::sync::atomic::Ordering::Relaxed), before, "no suspicion");
    }
    assert_eq!(*b.handle.fatal.borrow(), None);
}
