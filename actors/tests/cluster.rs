//! Multi-process tests on loopback: real `cohort agent` processes from configuration files, driven and
//! observed only from outside (the client socket, `kill -9`, SIGTERM, `cohort verify`).
//!
//! Every test ends by stopping the agents and running `cohort verify` over all event logs. Every process
//! and temporary directory is removed by [`support::Cluster`]'s `Drop`, also when a test fails.

mod support;

use cohort::{Delivery, Member};
use cohort_actors::client::{Client, ClientError, ClientEvent};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::{Cluster, Timing};

/// Generous deadline for a cluster to form from a cold start (loaded CI machines included).
const FORM_DEADLINE: Duration = Duration::from_secs(20);

#[test]
fn three_agents_form_one_primary_view() {
    let mut c = Cluster::new(3, Timing::FAST);
    c.start_all();
    let view = c.wait_for_view(&[1, 2, 3], FORM_DEADLINE);
    assert_eq!(view.iter().map(|m| m.0).collect::<Vec<_>>(), vec![1, 2, 3]);
    // Each member carries the epoch its own agent reports.
    for (node, epoch) in &view {
        let s = c.status(*node).expect("status");
        assert_eq!(s["member"], serde_json::json!([node, epoch]), "node {node} reports another member");
    }
    c.stop_and_verify();
}

#[test]
fn kill_minus_nine_shrinks_the_view_within_the_failure_timeout_plus_a_view_change() {
    let mut c = Cluster::new(3, Timing::FAST);
    c.start_all();
    c.wait_for_view(&[1, 2, 3], FORM_DEADLINE);

    let t = c.timing;
    let killed_at = Instant::now();
    c.kill9(3);
    // Generous waiting deadline; the bound is asserted on the measured time below.
    let view = c.wait_for_view(&[1, 2], Duration::from_secs(10));
    let detected = killed_at.elapsed();
    let bound = Duration::from_millis(t.failure_timeout_ms + 2 * t.view_change_timeout_ms + 500);
    println!(
        "kill -9 of node 3 -> primary view {view:?} at both survivors after {} ms (failure timeout {} ms, bound {} ms)",
        detected.as_millis(),
        t.failure_timeout_ms,
        bound.as_millis()
    );
    assert!(detected <= bound, "the view shrank after {detected:?}, more than {bound:?}");
    c.stop_and_verify();
}

#[test]
fn restarted_agent_rejoins_as_a_new_member() {
    let mut c = Cluster::new(3, Timing::FAST);
    c.start_all();
    let before = c.wait_for_view(&[1, 2, 3], FORM_DEADLINE);
    let old_epoch = before.iter().find(|m| m.0 == 3).expect("node 3 in the view").1;

    c.kill9(3);
    c.wait_for_view(&[1, 2], Duration::from_secs(10));
    c.start(3);
    let after = c.wait_for_view(&[1, 2, 3], FORM_DEADLINE);
    let new_epoch = after.iter().find(|m| m.0 == 3).expect("node 3 in the view").1;
    println!("node 3 was epoch {old_epoch}, rejoined as epoch {new_epoch}: view {after:?}");
    assert!(new_epoch > old_epoch, "node 3 rejoined with epoch {new_epoch}, not above {old_epoch}");
    for (node, epoch) in &before {
        if *node != 3 {
            assert!(after.contains(&(*node, *epoch)), "survivor {node} changed incarnation: {after:?}");
        }
    }
    c.stop_and_verify();
}

/// One delivery as every node must see it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    msg: String,
    sender: Member,
    payload: Vec<u8>,
}

/// Joins `group` at the agent behind `socket`, waits until the group has `members` members, sends
/// `count` messages (pipelined), and returns every delivery of the group until `members * count`
/// arrived.
async fn join_send_collect(
    socket: std::path::PathBuf,
    group: &str,
    members: usize,
    count: u32,
) -> Result<Vec<Seen>, ClientError> {
    let mut client = Client::connect(&socket, "cluster-test").await?;
    let me = client.member();
    client.join(group).await?;
    // Wait for the full group, answering state requests (the state is empty).
    loop {
        match client.next_event().await? {
            ClientEvent::GroupView { group: g, members: ms } if g == group && ms.len() == members => break,
            ClientEvent::ProvideState { group: g, joiner, token } => {
                client.provide_state(&g, joiner, token, Vec::new()).await?
            }
            _ => {}
        }
    }
    let mut seen = Vec::new();
    let mut sent = 0;
    let total = members * count as usize;
    while seen.len() < total {
        if sent < count {
            let payload = format!("{}:{sent}", me.node().0).into_bytes();
            client.send_nowait(group, payload, Delivery::Agreed).await?;
            sent += 1;
        }
        // Drain what is already buffered without blocking the next send; block once all are sent.
        loop {
            let ev = if sent < count {
                match tokio::time::timeout(Duration::from_millis(0), client.next_event()).await {
                    Ok(ev) => ev?,
                    Err(_) => break,
                }
            } else {
                client.next_event().await?
            };
            match ev {
                ClientEvent::Deliver { group: g, msg, sender, payload, .. } if g == group => {
                    seen.push(Seen { msg, sender, payload });
                }
                ClientEvent::SendFailed { error, .. } => return Err(ClientError::SendFailed(error)),
                ClientEvent::ProvideState { group: g, joiner, token } => {
                    client.provide_state(&g, joiner, token, Vec::new()).await?
                }
                _ => {}
            }
            if sent == count {
                break;
            }
        }
    }
    Ok(seen)
}

#[test]
fn messages_from_several_senders_are_delivered_in_one_order_everywhere() {
    const COUNT: u32 = 300;
    let mut c = Cluster::new(3, Timing::FAST);
    c.start_all();
    c.wait_for_view(&[1, 2, 3], FORM_DEADLINE);
    let sockets: Vec<_> = c.nodes.iter().map(|n| n.socket.clone()).collect();
    let results = c.block_on(async {
        let run = |s| join_send_collect(s, "order", 3, COUNT);
        let all =
            async { tokio::join!(run(sockets[0].clone()), run(sockets[1].clone()), run(sockets[2].clone())) };
        tokio::time::timeout(Duration::from_secs(60), all).await
    });
    let (a, b, d) = results.expect("deliveries did not complete within 60 s");
    let seqs = [a.expect("node 1 client"), b.expect("node 2 client"), d.expect("node 3 client")];

    // Every node delivered every message once, in the same order.
    assert_eq!(seqs[0].len(), 3 * COUNT as usize);
    for (i, s) in seqs.iter().enumerate().skip(1) {
        let first_diff = seqs[0].iter().zip(s).position(|(x, y)| x != y);
        assert_eq!(first_diff, None, "node {} differs from node 1 at delivery {first_diff:?}", i + 1);
        assert_eq!(s.len(), seqs[0].len());
    }
    // Each sender's messages in its sending order (FIFO), all of them.
    let mut next: BTreeMap<Member, u32> = BTreeMap::new();
    for d in &seqs[0] {
        let text = String::from_utf8(d.payload.clone()).expect("utf-8 payload");
        let (node, n) = text.split_once(':').expect("node:n payload");
        assert_eq!(node.parse::<u32>().ok(), Some(d.sender.node().0), "payload {text} from {}", d.sender);
        let expected = next.entry(d.sender).or_insert(0);
        assert_eq!(n.parse::<u32>().ok(), Some(*expected), "sender {} out of FIFO order", d.sender);
        *expected += 1;
    }
    assert_eq!(next.len(), 3, "not every sender was delivered: {next:?}");
    assert!(next.values().all(|n| *n == COUNT), "{next:?}");
    // Interleaved, not one sender after another (the order is a real merge of concurrent senders).
    let switches = seqs[0].windows(2).filter(|w| w[0].sender != w[1].sender).count();
    println!("{} deliveries in one order at 3 nodes, {switches} sender switches", seqs[0].len());
    c.stop_and_verify();
}

#[test]
fn five_agents_form_a_view_and_the_event_logs_pass_verify() {
    let mut c = Cluster::new(5, Timing::FAST);
    c.start_all();
    let view = c.wait_for_view(&[1, 2, 3, 4, 5], FORM_DEADLINE);
    println!("five-node view: {view:?}");
    c.stop_and_verify();
    let (_, text) = c.verify();
    assert!(text.contains("members: 5"), "verify saw another number of members:\n{text}");
}
