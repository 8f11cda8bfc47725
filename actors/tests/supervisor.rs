//! The NodeSupervisor and the composition root, with nodes started in this process by the same
//! `start_node` the binary uses (real data directories, UDP sockets, event logs; the peers of a node are
//! other in-process nodes), and the fail-stop of a real `cohort agent` process.
//!
//! What is checked: a transport whose socket failed is restarted on its address and the node carries
//! on; a fatal error and a watchdog with `watchdog = "exit"` fail-stop the node, `notify` does not; a
//! new-epoch request starts a new incarnation whose epoch is on disk before its `start` record; a
//! clean leave is recorded as `left` by the others; when every node shuts down at once, nobody waits
//! for a leave that cannot complete; an agent whose event log cannot be written exits non-zero; a
//! panic inside an actor's handler (injected) makes the agent process exit 70 within a second.
//! Waits are on events with deadlines.

#[path = "support/inprocess.rs"]
mod inprocess;

use cohort::node::NewEpochReason;
use cohort::{Delivery, Epoch, Event, Member};
use cohort_actors::messages::{FatalError, Multicast, NewEpochRequested, SelfFenced};
use cohort_actors::supervisor::{leave_deadline, ShutdownOutcome};
use cohort_actors::transport::{GetLocalAddr, InjectSocketFailure};
use inprocess::*;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// Waits until the node's fatal channel carries a reason.
async fn fatal_reason(h: &mut cohort_actors::supervisor::NodeHandle) -> String {
    let r = tokio::time::timeout(DEADLINE, h.fatal.wait_for(|f| f.is_some()))
        .await
        .expect("a fatal error within the deadline")
        .expect("the supervisor is alive");
    r.clone().unwrap_or_default()
}

#[actix_rt::test]
async fn a_transport_whose_socket_failed_is_restarted_on_its_address_and_the_node_carries_on() {
    let nodes = Nodes::new("restart", 2, "");
    let [h1, h2] = nodes.start_all([1, 2]).await;
    wait_primary_of_all(&[&h1, &h2]).await;
    let before = h1.transport.send(GetLocalAddr).await.expect("transport alive").expect("bound");

    h1.transport.send(InjectSocketFailure).await.expect("transport alive");
    // A restarted actor handles its next message only after `started` bound the socket again.
    let after = h1.transport.send(GetLocalAddr).await.expect("the transport was restarted").expect("bound");
    assert_eq!(before, after, "the restarted transport listens on the same address");

    // The node still talks: a message multicast at node 2 after the restart is delivered at node 1.
    let group = "after-restart".to_string();
    // Both join as applications do, answering the other's request for the group's state.
    join_as_application(&nodes.settings(1, "").socket_path(), &group).await;
    join_as_application(&nodes.settings(2, "").socket_path(), &group).await;
    let in_before = h1.metrics.datagrams_in.load(Relaxed);
    let id = loop {
        // The join may still be on its way through the order: the core refuses a send to a group this
        // node is not in yet; try again until it is accepted.
        let r = h2
            .membership
            .send(Multicast {
                group: group.clone(),
                payload: b"still here".to_vec(),
                delivery: Delivery::Agreed,
            })
            .await
            .expect("mailbox");
        match r {
            Ok(id) => break id,
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    let msg = format!("{}.{}.{}", id.sender.node().0, id.sender.epoch().0, id.n);
    wait_records(&nodes.event_log(1), "node 1 delivers node 2's message after the restart", |r| {
        r.iter().any(|x| matches!(&x.event, Event::Deliver { msg: m, .. } if *m == msg))
    })
    .await;
    assert!(h1.metrics.datagrams_in.load(Relaxed) > in_before, "datagrams arrive on the new socket");
    assert_eq!(*h1.fatal.borrow(), None, "a restarted transport is not a fatal error");
    assert!(status(&h1).await.view.is_some_and(|v| v.members == vec![h1.member, h2.member]));
}

#[actix_rt::test]
async fn a_fatal_error_fail_stops_the_node() {
    let nodes = Nodes::new("fatal", 1, "");
    let mut h = nodes.start(1).await;
    assert_eq!(*h.fatal.borrow(), None);
    h.supervisor.do_send(FatalError { detail: "broken invariant: two primaries".into() });
    assert_eq!(fatal_reason(&mut h).await, "broken invariant: two primaries");
}

#[actix_rt::test]
async fn the_watchdog_exits_only_when_configured_to() {
    let nodes = Nodes::new("watchdog", 1, "");
    // `notify`: the clients are told, the agent stays up.
    let h = nodes.start_with(1, "[fencing]\nwatchdog = \"notify\"\n").await;
    h.supervisor.send(SelfFenced { reason: "no primary view for 30 s".into() }).await.expect("supervisor");
    // The supervisor handled it (the reply came after the handler ran): nothing was made fatal.
    assert_eq!(*h.fatal.borrow(), None, "watchdog = notify keeps the agent up");
    drop(h);

    let nodes = Nodes::new("watchdog-exit", 1, "");
    let mut h = nodes.start_with(1, "[fencing]\nwatchdog = \"exit\"\n").await;
    h.supervisor.do_send(SelfFenced { reason: "no primary view for 30 s".into() });
    assert_eq!(fatal_reason(&mut h).await, "watchdog self-fence: no primary view for 30 s");
}

#[actix_rt::test]
async fn a_new_epoch_request_starts_a_new_incarnation_persisted_before_its_start_record() {
    let nodes = Nodes::new("new-epoch", 1, "");
    let h = nodes.start(1).await;
    let first = h.member;
    wait_status(&h, "a primary view", |s| s.primary).await;
    h.supervisor
        .do_send(NewEpochRequested { min_epoch: Epoch(first.epoch().0 + 10), reason: NewEpochReason::Reset });
    let want = Member(first.node(), Epoch(first.epoch().0 + 10));
    let records = wait_records(&nodes.event_log(1), "a start record of the new incarnation", |r| {
        r.iter().any(|x| x.member() == want && matches!(x.event, Event::Start { .. }))
    })
    .await;
    // The new epoch is on disk (the operators' copy too) once its start record exists.
    let on_disk = std::fs::read_to_string(nodes.data_dir(1).join("epoch")).expect("epoch file");
    assert_eq!(on_disk, format!("{}\n", want.epoch().0));
    // Nothing is written under the new epoch before its `start`.
    let first_new = records.iter().position(|x| x.member() == want).expect("a record of the new epoch");
    assert!(matches!(records[first_new].event, Event::Start { .. }), "{:?}", records[first_new]);
    let s =
        wait_status(&h, "the new incarnation forms a primary view", |s| s.primary && s.member == want).await;
    assert_eq!(s.view.map(|v| v.members), Some(vec![want]));
    assert_eq!(*h.fatal.borrow(), None);
}

#[actix_rt::test]
async fn a_clean_leave_is_acknowledged_and_recorded_as_left_by_the_others() {
    let nodes = Nodes::new("leave", 3, "");
    let [h1, h2, mut h3] = nodes.start_all([1, 2, 3]).await;
    wait_primary_of_all(&[&h1, &h2, &h3]).await;
    let leaver = h3.member;
    let outcome = h3.shutdown("terminate", leave_deadline(&nodes.settings(3, "").timing)).await;
    assert_eq!(outcome, ShutdownOutcome::Left);
    let records = records(&nodes.event_log(3));
    assert!(
        matches!(&records.last().map(|r| &r.event), Some(Event::Stop { reason }) if reason == "leave"),
        "the leaver's log ends with stop(leave): {records:#?}"
    );
    for (id, h) in [(1, &h1), (2, &h2)] {
        let r = wait_records(&nodes.event_log(id), "a view without the leaver", |r| {
            r.iter().any(|x| matches!(&x.event, Event::View { members, .. } if !members.contains(&leaver) && members.len() == 2))
        })
        .await;
        let view = r
            .iter()
            .rev()
            .find_map(|x| match &x.event {
                Event::View { members, left, failed, primary, .. } if !members.contains(&leaver) => {
                    Some((left.clone(), failed.clone(), *primary))
                }
                _ => None,
            })
            .expect("a view without the leaver");
        assert_eq!(view, (vec![leaver], vec![], true), "node {id} records the leave as left, not failed");
        assert_eq!(*h.fatal.borrow(), None);
    }
}

#[actix_rt::test]
async fn when_every_node_shuts_down_at_once_each_leave_is_acknowledged_and_completes() {
    let nodes = Nodes::new("all-stop", 3, "");
    let [mut h1, mut h2, mut h3] = nodes.start_all([1, 2, 3]).await;
    wait_primary_of_all(&[&h1, &h2, &h3]).await;
    let bound = leave_deadline(&nodes.settings(1, "").timing);
    assert_eq!(bound, FAILURE_TIMEOUT, "a shutdown waits at most one failure timeout for its leave");
    let start = Instant::now();
    let (a, b, c) = tokio::join!(
        h1.shutdown("terminate", bound),
        h2.shutdown("terminate", bound),
        h3.shutdown("terminate", bound)
    );
    println!("three nodes stopped at once in {:?} (leave bound {bound:?})", start.elapsed());
    // Nobody is left to install a view without the leavers, but every leave is on the disk of every
    // other member (each acknowledged the others' `Leave` while leaving itself), so each leave
    // completes: the cluster can cold-start without fencing anyone (L6).
    for (id, outcome) in [(1, a), (2, b), (3, c)] {
        assert_eq!(outcome, ShutdownOutcome::Left, "node {id}");
        let r = records(&nodes.event_log(id));
        assert!(
            matches!(&r.last().map(|x| &x.event), Some(Event::Stop { reason }) if reason == "leave"),
            "node {id}'s log ends with stop(leave): {:#?}",
            r.last()
        );
    }
    // The three logs together pass the checker `cohort verify` runs.
    let all: Vec<_> = (1..=3).flat_map(|id| records(&nodes.event_log(id))).collect();
    let violations = cohort::checker::check_all(&all);
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn an_agent_whose_event_log_cannot_be_written_exits_non_zero_naming_it() {
    // Every write to /dev/full fails (ENOSPC): the audit log is broken from the first record on, which
    // is a fail-stop, not something to carry on from.
    let nodes = Nodes::new("devfull", 1, "");
    let _ = nodes.settings(1, "event_log = \"/dev/full\"\n");
    let [cluster, node] = nodes.config_files(1);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(["agent", "--config"])
        .arg(&cluster)
        .arg("--config")
        .arg(&node)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start cohort agent");
    /// Kills the agent if the test fails before it exits.
    struct Reap(Option<std::process::Child>);
    impl Drop for Reap {
        fn drop(&mut self) {
            if let Some(c) = self.0.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let end = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() >= end {
            let _guard = Reap(Some(child));
            panic!("the agent did not fail-stop within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    use std::io::Read as _;
    let _ = child.stderr.take().expect("stderr").read_to_string(&mut stderr);
    assert_eq!(status.code(), Some(1), "fail-stop exits with 1: {stderr}");
    assert!(stderr.contains("cannot append to event log /dev/full"), "{stderr}");
}

#[test]
fn a_panic_in_an_actor_handler_makes_the_agent_exit_non_zero_at_once() {
    // The runtime catches a panic inside an actor's handler and would leave the process up with its
    // sockets open; the agent's panic hook turns it into a fail-stop instead (exit 70, restarted by the
    // service manager as a new epoch). The panic is injected in the membership actor 1.5 s after start.
    let nodes = Nodes::new("panic", 1, "");
    let _ = nodes.settings(1, "");
    let [cluster, node] = nodes.config_files(1);
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(["agent", "--config"])
        .arg(&cluster)
        .arg("--config")
        .arg(&node)
        .env("COHORT_TEST_INJECT_PANIC_MS", "1500")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start cohort agent");
    /// Kills the agent if the test fails before it exits.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Reap(child);
    // stderr line by line, each with the instant it was read.
    let stderr = child.0.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, String)>();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let mut lines: Vec<(Instant, String)> = Vec::new();
    let end = Instant::now() + DEADLINE;
    let (status, exited_at) = loop {
        while let Ok(l) = rx.try_recv() {
            lines.push(l);
        }
        if let Some(s) = child.0.try_wait().expect("wait") {
            break (s, Instant::now());
        }
        if Instant::now() >= end {
            let tail: Vec<&str> = lines.iter().rev().take(12).rev().map(|(_, l)| l.as_str()).collect();
            panic!(
                "the agent did not exit within {DEADLINE:?} after the injected panic; stderr ends:\n{}",
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // The rest of stderr (the reader ends at EOF).
    while let Ok(l) = rx.recv_timeout(Duration::from_secs(2)) {
        lines.push(l);
    }
    let text: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    let panicked_at = lines
        .iter()
        .find(|(_, l)| l.contains("injected panic"))
        .map(|(t, _)| *t)
        .unwrap_or_else(|| panic!("no panic message on stderr: {text:#?}"));
    assert_eq!(
        status.code(),
        Some(cohort_actors::supervisor::EXIT_PANIC),
        "exit status after a panic: {text:#?}"
    );
    assert!(text.iter().any(|l| l.contains("fatal: the agent panicked")), "{text:#?}");
    let gap = exited_at.saturating_duration_since(panicked_at);
    println!("panic message read → exit seen: {gap:?}");
    assert!(gap < Duration::from_secs(1), "the agent took {gap:?} to exit after its panic");
    // It was a running agent when it panicked: its event log has its start.
    let records = records(&nodes.event_log(1));
    assert!(
        records.iter().any(|r| matches!(r.event, Event::Start { .. })),
        "no start record before the panic"
    );
}
