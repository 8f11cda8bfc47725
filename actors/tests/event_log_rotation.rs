//! Event log rotation on real agents: three `cohort agent` processes on loopback configured with a tiny
//! `log.event_log_max_bytes` (through `COHORT__LOG__*`, as an operator's environment would), clients
//! coming and going on every node, and one node restarted in the middle. The logs rotate many times;
//! afterwards every node keeps exactly `event_log_keep_files + 1` files, and `cohort verify` over the
//! rotated sets passes, saying that each history begins mid-way.
//!
//! Every wait is on an observed event (a status, a delivery, a file's part) with a deadline; the agents
//! and the directory are removed by [`support::Cluster`]'s `Drop`, also when the test fails.

mod support;

use cohort::Delivery;
use cohort_actors::client::{Client, ClientError, ClientEvent};
use cohort_actors::event_log::{log_files, log_part_of};
use std::path::Path;
use std::time::{Duration, Instant};
use support::{Cluster, Timing};

const FORM_DEADLINE: Duration = Duration::from_secs(20);
const MAX_BYTES: &str = "4096";
const KEEP_FILES: usize = 3;
/// Rotations every node's log must have gone through before the test stops the traffic.
const ROTATIONS: u64 = 12;

/// One client's visit: connect to the agent at `socket`, join `group`, multicast `count` messages and
/// wait until all of them are delivered back to it, then leave by dropping the connection.
async fn visit(socket: &Path, group: &str, count: u32) -> Result<(), ClientError> {
    let mut client = Client::connect(socket, "rotation-test").await?;
    let me = client.member();
    client.join(group).await?;
    loop {
        match client.next_event().await? {
            ClientEvent::GroupView { group: g, members } if g == group && members.contains(&me) => break,
            ClientEvent::ProvideState { group: g, joiner, token } => {
                client.provide_state(&g, joiner, token, Vec::new()).await?
            }
            _ => {}
        }
    }
    for i in 0..count {
        client.send_nowait(group, format!("visit {i}").into_bytes(), Delivery::Agreed).await?;
    }
    let mut own = 0;
    while own < count {
        match client.next_event().await? {
            ClientEvent::Deliver { group: g, sender, .. } if g == group && sender == me => own += 1,
            ClientEvent::SendFailed { error, .. } => return Err(ClientError::SendFailed(error)),
            ClientEvent::ProvideState { group: g, joiner, token } => {
                client.provide_state(&g, joiner, token, Vec::new()).await?
            }
            _ => {}
        }
    }
    Ok(())
}

#[test]
fn agents_rotate_their_event_logs_under_traffic_keep_the_configured_files_and_verify_passes() {
    let mut c = Cluster::new(3, Timing::FAST);
    let env = [("COHORT__LOG__EVENT_LOG_MAX_BYTES", MAX_BYTES), ("COHORT__LOG__EVENT_LOG_KEEP_FILES", "3")];
    for id in c.ids() {
        c.start_with(id, &env, &[]);
    }
    c.wait_for_view(&[1, 2, 3], FORM_DEADLINE);
    let live: Vec<_> = c.nodes.iter().map(|n| n.data_dir.join("events.jsonl")).collect();
    let part = |i: usize| log_part_of(&live[i]).unwrap_or(0);

    let end = Instant::now() + Duration::from_secs(120);
    let mut round = 0u32;
    let mut restarted = false;
    while (0..3).any(|i| part(i) < ROTATIONS) {
        assert!(
            Instant::now() < end,
            "logs rotated only to parts {:?}",
            (0..3).map(part).collect::<Vec<_>>()
        );
        // A client on each node in turn, so every node logs sends and deliveries.
        let id = round % 3 + 1;
        let socket = c.nodes[id as usize - 1].socket.clone();
        c.block_on(async { tokio::time::timeout(Duration::from_secs(20), visit(&socket, "rot", 25)).await })
            .unwrap_or_else(|_| panic!("round {round}: the visit to node {id} did not finish in time"))
            .unwrap_or_else(|e| panic!("round {round}: the visit to node {id} failed: {e}"));
        for (i, l) in live.iter().enumerate() {
            let files = log_files(l).expect("list the log's files");
            assert!(files.len() <= KEEP_FILES + 1, "node {}: {files:?}", i + 1);
        }
        // Halfway, node 2 leaves cleanly and comes back: its agent reopens the live file and goes on
        // numbering the parts where it stopped (verify refuses files that do not follow one another).
        if !restarted && part(1) >= ROTATIONS / 2 {
            restarted = true;
            let before = part(1);
            assert!(c.stop(2, Duration::from_secs(10)), "node 2 did not stop cleanly");
            c.start_with(2, &env, &[]);
            c.wait_for_view(&[1, 2, 3], FORM_DEADLINE);
            assert!(part(1) >= before, "the restarted agent kept the part of its live file");
        }
        round += 1;
    }
    assert!(restarted, "node 2 was restarted during the traffic");
    let unclean = c.stop_all();
    assert!(unclean.is_empty(), "agents {unclean:?} did not exit cleanly");
    for (i, l) in live.iter().enumerate() {
        let files = log_files(l).expect("list the log's files");
        assert_eq!(files.len(), KEEP_FILES + 1, "node {}: {files:?}", i + 1);
        for f in &files {
            let text = std::fs::read_to_string(f).expect("read a log file");
            assert!(text.ends_with('\n'), "{} ends with a whole line", f.display());
            let longest = text.lines().map(str::len).max().unwrap_or(0) as u64;
            assert!(
                (text.len() as u64) <= 4096 || text.lines().count() == 1,
                "{} has {} bytes (longest line {longest})",
                f.display(),
                text.len()
            );
        }
    }
    let (ok, text) = c.verify();
    println!("cohort verify after {round} rounds:\n{text}");
    assert!(ok, "cohort verify failed:\n{text}");
    assert!(text.contains("verdict: OK ("), "{text}");
    assert!(text.contains(&format!("logs in {} files", 3 * (KEEP_FILES + 1))), "{text}");
    for node in 1..=3 {
        assert!(text.contains(&format!("the history of node {node} begins mid-way")), "{text}");
    }
}
