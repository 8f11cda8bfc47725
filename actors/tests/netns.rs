//! The network-namespace test bed's scenarios: real `cohort agent` processes, each in its own network
//! namespace, real UDP through a bridge, a client in every namespace, faults made in the network and to
//! the processes. See `support/netns.rs` for the bed and docs/TESTING.md for how to run them.
//!
//! Every scenario ends with [`netns::Bed::finish`]: all nodes converge to one primary view within L1's
//! bound, `cohort verify` passes over every event log, and the measured detection, view-change and
//! merge times are printed (`NETNS-SUMMARY` lines; run with `--nocapture` to see them). When not root
//! or without `ip`/`nft`, each scenario prints a `SKIP` line and returns.

#[path = "support/netns.rs"]
mod netns;

use netns::{now_ms, Bed, Fence, Spec, TestLevel, Timing};
use serde_json::Value;
use std::time::{Duration, Instant};

netns_client_entry!();

/// Deadline of a single wait inside a scenario (the liveness bounds are asserted separately).
const D: Duration = Duration::from_secs(20);

/// True when event `e` is about node `node` in field `field` (a member `[node, epoch]`).
fn about(e: &Value, field: &str, node: u32) -> bool {
    e[field][0].as_u64() == Some(u64::from(node))
}

/// True when a `recovered` event lists node `node`.
fn recovers(e: &Value, node: u32) -> bool {
    e["failed"].as_array().is_some_and(|f| f.iter().any(|m| m[0].as_u64() == Some(u64::from(node))))
}

fn epoch_of(view: &[(u32, u64)], node: u32) -> u64 {
    view.iter().find(|m| m.0 == node).map(|m| m.1).unwrap_or_else(|| panic!("node {node} not in {view:?}"))
}

/// The fencing of the seed story: one level of `cohort-fence-test`.
fn one_test_level() -> Fence {
    Fence::TestAgent { levels: vec![TestLevel { timeout_ms: 3000, retries: 1 }], restart_counts: true }
}

/// The seed story on 5 nodes with merge policy `policy` (see the simulator's `seed_story`).
fn seed_story(name: &str, policy: &str) {
    if !Bed::available(name) {
        return;
    }
    let mut spec = Spec::new(5);
    spec.policy = policy.into();
    spec.fence = one_test_level();
    let mut bed = Bed::new(name, spec);
    // The first fence only pauses the minority: "fenced" nodes that come back with their old state.
    bed.set_fence_mode(1, "stop");
    bed.auto_restart = true;
    bed.start_all_and_form();
    let before = bed.common_view(&[1, 2, 3, 4, 5]).expect("the formed view");

    // Partition 2|3: the majority removes and fences the minority, then recovers.
    let t0 = now_ms();
    bed.partition(&[&[1, 2], &[3, 4, 5]]);
    bed.measure_failover("partition 2|3", t0, &[3, 4, 5], &[1, 2]);
    for n in [1, 2] {
        bed.wait_event(&[3], "fence_result", D, |e| {
            about(e, "target", n) && e["ok"] == true && e["method"] == "agent"
        });
        bed.wait_event(&[3, 4, 5], "recovered", D, |e| recovers(e, n));
    }
    // They were only paused: resume them, still cut off. They block.
    for n in [1, 2] {
        bed.resume(n);
    }
    bed.wait_blocked(&[1, 2], D);
    for n in [1, 2] {
        assert!(
            !bed.events_where(n, "blocked", |e| e["reason"] == "no_quorum").is_empty(),
            "node {n} never logged blocked/no_quorum"
        );
        assert_eq!(bed.epoch(n), Some(epoch_of(&before, n)), "node {n} changed epoch while cut off");
    }
    assert!(bed.common_view(&[3, 4, 5]).is_some(), "the majority lost its primary view");

    // A second fence (policy `fence`) is a real power-off.
    bed.set_fence_mode(1, "kill");
    let t1 = now_ms();
    bed.heal();
    let action = match policy {
        "fence" => "fence",
        "restart" | "reset" => "kill",
        _ => "wait",
    };
    for n in [1, 2] {
        // The resolver logs the policy's action; every other primary member logs `refuse`. The resolver
        // is the leader (lowest node) of the primary view at the moment of detection, which is not always
        // node 3: when one zombie restarted first (told it was removed) and rejoined as a new member, it
        // leads the primary view and resolves the other zombie (issue 9 item 7).
        // Under restart/reset the zombie obeys the first `Removed` any primary member sends it, so the
        // leader logs `kill` only if it heard the zombie before that; the node coming back as a newer
        // member (checked below) is the resolution itself. Under fence/wait the zombie keeps
        // heartbeating until the leader acts, so the leader's record is always there.
        let obeys_first = matches!(policy, "restart" | "reset");
        let ev = bed.wait_event(&[1, 2, 3, 4, 5], "stateful_merge", D, |e| {
            about(e, "member", n) && (e["action"] == action || (obeys_first && e["action"] == "refuse"))
        });
        assert_eq!(
            ev["member"][1].as_u64(),
            Some(epoch_of(&before, n)),
            "the stateful merge names the old member"
        );
        for m in [1, 2, 3, 4, 5] {
            for other in bed.events_where(m, "stateful_merge", |e| about(e, "member", n)) {
                assert!(
                    other["action"] == action || other["action"] == "refuse",
                    "node {m} logged a stateful merge of node {n} with an action outside the policy: {other}"
                );
            }
        }
    }
    let detected = now_ms();
    println!("NETNS [{name}] stateful merges of 1 and 2 detected {} ms after the heal", detected - t1);
    if policy == "fence" {
        bed.wait_event(&[1, 2, 3, 4, 5], "fence_request", D, |e| {
            about(e, "target", 1) && e["reason"] == "stateful_merge"
        });
    }
    if policy == "wait" {
        // The zombies stay refused and say so until the operator acts.
        for n in [1, 2] {
            bed.wait_event(&[n], "blocked", D, |e| e["reason"] == "stateful_merge_wait");
            assert_eq!(bed.epoch(n), Some(epoch_of(&before, n)), "node {n} changed epoch under policy wait");
        }
        assert!(bed.common_view(&[3, 4, 5]).is_some(), "the majority lost its primary view");
        for n in [1, 2] {
            let s = bed.status(n).expect("status");
            assert_eq!(s["stateful_merge"]["waiting_for_operator"], true, "node {n}: {s}");
        }
        // The operator: make sure the old processes are gone, acknowledge, restart them.
        bed.auto_restart = false;
        for n in [1, 2] {
            bed.kill9(n);
            bed.fence_ack(3, n);
        }
        for n in [1, 2] {
            bed.start(n);
        }
        bed.auto_restart = true;
    }
    let bound = bed.spec.timing.convergence_bound();
    let after = bed.measure_merge("heal -> stateful merge resolved -> all 5", t1, &[1, 2, 3, 4, 5], bound);
    for n in [1, 2] {
        assert!(
            epoch_of(&after, n) > epoch_of(&before, n),
            "node {n} rejoined without a new epoch: {after:?}"
        );
        let told = !bed.events_where(n, "removed_self", |_| true).is_empty();
        if policy == "fence" {
            // The refusal is sent, but the fence may kill the zombie before it reads it: then the
            // proof is the fence of its old member.
            let old = epoch_of(&before, n);
            let fenced = all_events_since(&bed, "fence_result", 0, |e| {
                about(e, "target", n) && e["target"][1].as_u64() == Some(old) && e["ok"] == true
            });
            assert!(told || fenced.len() >= 2, "node {n} was neither told it was removed nor fenced again");
            println!(
                "NETNS [{name}] zombie node {n}: {}",
                if told {
                    "logged removed_self before the fence"
                } else {
                    "fenced before it read the refusal"
                }
            );
        } else {
            assert!(told, "node {n} never logged removed_self");
        }
    }
    for n in [3, 4, 5] {
        assert_eq!(epoch_of(&after, n), epoch_of(&before, n), "majority node {n} changed epoch");
    }
    // The rejoined members' clients receive the group state by transfer.
    bed.wait_clients_joined(&[1, 2, 3, 4, 5], D);
    for n in [1, 2] {
        let e = epoch_of(&after, n);
        bed.wait_event(&[n], "state_transfer", D, |ev| {
            ev["epoch"].as_u64() == Some(e) && ev["role"] == "receiver" && ev["ok"] == true
        });
    }
    bed.finish(&[1, 2, 3, 4, 5]);
}

#[test]
fn seed_story_policy_fence() {
    seed_story("seed_story_policy_fence", "fence");
}

#[test]
fn seed_story_policy_restart() {
    seed_story("seed_story_policy_restart", "restart");
}

#[test]
fn seed_story_policy_reset() {
    seed_story("seed_story_policy_reset", "reset");
}

#[test]
fn seed_story_policy_wait_and_operator_action() {
    seed_story("seed_story_policy_wait_and_operator_action", "wait");
}

#[test]
fn paused_agent_is_caught_as_a_stateful_merge() {
    let name = "paused_agent_is_caught_as_a_stateful_merge";
    if !Bed::available(name) {
        return;
    }
    let mut bed = Bed::new(name, Spec::new(5));
    bed.start_all_and_form();
    let before = bed.common_view(&[1, 2, 3, 4, 5]).expect("view");
    let t0 = now_ms();
    bed.pause(5);
    bed.measure_failover("SIGSTOP of node 5", t0, &[1, 2, 3, 4], &[5]);
    let t1 = now_ms();
    bed.resume(5);
    let ev = bed.wait_event(&[1, 2, 3, 4], "stateful_merge", D, |e| about(e, "member", 5));
    assert_eq!(ev["member"][1].as_u64(), Some(epoch_of(&before, 5)));
    bed.wait_event(&[5], "removed_self", D, |_| true);
    let bound = bed.spec.timing.convergence_bound();
    let after = bed.measure_merge("SIGCONT -> stateful merge -> rejoin", t1, &[1, 2, 3, 4, 5], bound);
    assert!(epoch_of(&after, 5) > epoch_of(&before, 5), "node 5 came back without a new epoch");
    bed.finish(&[1, 2, 3, 4, 5]);
}

#[test]
fn coordinator_killed_during_a_view_change() {
    let name = "coordinator_killed_during_a_view_change";
    if !Bed::available(name) {
        return;
    }
    let mut spec = Spec::new(5);
    spec.fence = one_test_level();
    let mut bed = Bed::new(name, spec);
    bed.start_all_and_form();
    let t0 = now_ms();
    bed.kill9(5);
    // Node 1 (the lowest id) coordinates the change that removes 5. To kill it during that change
    // every time, the members' answers to it are cut just before it suspects 5 (a timed fault: shortly
    // before the failure timeout runs out), so the change it starts cannot finish; node 1 is killed
    // as soon as a member is seen in it.
    let ft = bed.spec.timing.failure_timeout_ms;
    std::thread::sleep(Duration::from_millis(ft.saturating_sub(3 * bed.spec.timing.heartbeat_interval_ms)));
    for n in [2, 3, 4] {
        bed.block_one_way(n, 1);
    }
    let caught = bed.wait_until("a member of node 1's view change", D, |b| {
        [2, 3, 4].into_iter().find(|n| b.status(*n).is_some_and(|s| s["changing"] == true))
    });
    bed.kill9(1);
    bed.heal();
    println!(
        "NETNS [{name}] node 1 killed {} ms after node 5, while node {caught} was in its view change",
        now_ms() - t0
    );
    bed.measure_failover("coordinator killed mid view change", t0, &[2, 3, 4], &[1, 5]);
    for n in [1, 5] {
        bed.wait_event(&[2, 3, 4], "recovered", D, |e| recovers(e, n)).to_string();
    }
    let t1 = now_ms();
    bed.start(1);
    bed.start(5);
    let bound = bed.spec.timing.convergence_bound();
    bed.measure_merge("restart of 1 and 5", t1, &[1, 2, 3, 4, 5], bound);
    bed.start_client(1);
    bed.start_client(5);
    bed.finish(&[1, 2, 3, 4, 5]);
}

/// Kills an agent during a state transfer to node 5's new member: the provider (`provider = true`)
/// or the receiver.
fn killed_during_state_transfer(name: &str, provider: bool) {
    if !Bed::available(name) {
        return;
    }
    let mut spec = Spec::new(5);
    // Providers answer after 1.5 s, so the transfer is in progress long enough to fault it.
    spec.client_provide_delay_ms = 1500;
    let mut bed = Bed::new(name, spec);
    bed.start_all_and_form();
    bed.kill9(5);
    bed.wait_for_view(&[1, 2, 3, 4], D);
    bed.start(5);
    let view = bed.wait_for_view(&[1, 2, 3, 4, 5], D);
    let joiner_epoch = epoch_of(&view, 5);
    // Node 5's client is the joiner; wait until a provider was asked.
    let asked = bed.wait_until("a provider asked for node 5's state", D, |b| {
        (1..=4).find(|n| {
            b.client_log(*n).iter().any(|l| {
                l["ev"] == "provide_state"
                    && l["joiner"][0] == 5
                    && l["joiner"][1].as_u64() == Some(joiner_epoch)
            })
        })
    });
    let t0 = now_ms();
    if provider {
        println!("NETNS [{name}] node {asked} provides node 5's state: killing it");
        bed.kill9(asked);
        let rest: Vec<u32> = (1..=5).filter(|n| *n != asked).collect();
        bed.measure_failover("provider killed during state transfer", t0, &rest, &[asked]);
        // The joiner gets the state from another provider.
        bed.wait_event(&[5], "state_transfer", D, |e| {
            e["epoch"].as_u64() == Some(joiner_epoch) && e["role"] == "receiver" && e["ok"] == true
        });
        let t1 = now_ms();
        bed.start(asked);
        let bound = bed.spec.timing.convergence_bound();
        bed.measure_merge("provider restarted", t1, &[1, 2, 3, 4, 5], bound);
    } else {
        println!("NETNS [{name}] node {asked} provides node 5's state: killing the receiver, node 5");
        bed.kill9(5);
        bed.measure_failover("receiver killed during state transfer", t0, &[1, 2, 3, 4], &[5]);
        let t1 = now_ms();
        bed.start(5);
        let bound = bed.spec.timing.convergence_bound();
        let after = bed.measure_merge("receiver restarted", t1, &[1, 2, 3, 4, 5], bound);
        let e = epoch_of(&after, 5);
        bed.wait_event(&[5], "state_transfer", D, |ev| {
            ev["epoch"].as_u64() == Some(e) && ev["role"] == "receiver" && ev["ok"] == true
        });
    }
    bed.wait_clients_joined(&[1, 2, 3, 4, 5], D);
    bed.finish(&[1, 2, 3, 4, 5]);
}

#[test]
fn provider_killed_during_state_transfer() {
    killed_during_state_transfer("provider_killed_during_state_transfer", true);
}

#[test]
fn receiver_killed_during_state_transfer() {
    killed_during_state_transfer("receiver_killed_during_state_transfer", false);
}

#[test]
fn three_way_split_of_seven_then_staged_heal() {
    let name = "three_way_split_of_seven_then_staged_heal";
    if !Bed::available(name) {
        return;
    }
    let mut bed = Bed::new(name, Spec::new(7));
    bed.start_all_and_form();
    let all: Vec<u32> = (1..=7).collect();
    bed.partition(&[&[1, 2, 3], &[4, 5], &[6, 7]]);
    // No side holds 4 of 7 votes: everyone blocks.
    bed.wait_blocked(&all, D);
    let t1 = now_ms();
    bed.partition(&[&[1, 2, 3, 4, 5], &[6, 7]]);
    let bound = bed.spec.timing.merge_bound();
    bed.measure_merge("stage 1: 3+2 heal into a majority of 5", t1, &[1, 2, 3, 4, 5], bound);
    bed.wait_blocked(&[6, 7], D);
    let t2 = now_ms();
    bed.heal();
    let bound = bed.spec.timing.convergence_bound();
    bed.measure_merge("stage 2: the last 2 merge (stateful merges, restart)", t2, &all, bound);
    bed.finish(&all);
}

#[test]
fn one_way_partition() {
    let name = "one_way_partition";
    if !Bed::available(name) {
        return;
    }
    let mut bed = Bed::new(name, Spec::new(5));
    bed.start_all_and_form();
    let t0 = now_ms();
    // Node 5 hears everyone, nobody hears node 5.
    for n in 1..=4 {
        bed.block_one_way(5, n);
    }
    bed.measure_failover("one-way partition 5 -> others", t0, &[1, 2, 3, 4], &[5]);
    let t1 = now_ms();
    bed.heal();
    let bound = bed.spec.timing.convergence_bound();
    bed.measure_merge("heal of the one-way partition", t1, &[1, 2, 3, 4, 5], bound);
    bed.finish(&[1, 2, 3, 4, 5]);
}

#[test]
fn flapping_link() {
    let name = "flapping_link";
    if !Bed::available(name) {
        return;
    }
    let mut bed = Bed::new(name, Spec::new(5));
    bed.start_all_and_form();
    // The fault itself is timed: node 3's link goes down and up every 300 ms for 5 s.
    let until = Instant::now() + Duration::from_secs(5);
    let mut up = true;
    while Instant::now() < until {
        up = !up;
        bed.set_link(3, up);
        std::thread::sleep(Duration::from_millis(300));
    }
    bed.set_link(3, true);
    let t1 = now_ms();
    let bound = bed.spec.timing.convergence_bound();
    bed.measure_merge("the link stops flapping", t1, &[1, 2, 3, 4, 5], bound);
    bed.finish(&[1, 2, 3, 4, 5]);
}

/// Deliveries logged by node `n` so far.
fn delivered(bed: &Bed, n: u32) -> usize {
    bed.events_where(n, "deliver", |_| true).len()
}

#[test]
fn loss_and_delay_on_all_links_while_messages_flow() {
    let name = "loss_and_delay_on_all_links_while_messages_flow";
    if !Bed::available(name) {
        return;
    }
    let mut spec = Spec::new(5);
    spec.client_send_interval_ms = 50;
    let mut bed = Bed::new(name, spec);
    bed.start_all_and_form();
    let delayed = bed.set_link_quality(20, 50);
    println!(
        "NETNS [{name}] 20% loss on every link{}",
        if delayed {
            " and 50 ms delay (tc netem)"
        } else {
            "; NO delay: this kernel has no sch_netem (tc netem), loss only"
        }
    );
    let base: Vec<usize> = (1..=5).map(|n| delivered(&bed, n)).collect();
    let t0 = Instant::now();
    // Messages keep flowing: every node delivers 200 more while the links are bad.
    bed.wait_until("200 more deliveries at every node under loss", Duration::from_secs(40), |b| {
        (1..=5).all(|n| delivered(b, n) >= base[n as usize - 1] + 200).then_some(())
    });
    println!("NETNS [{name}] 200 deliveries per node under loss took {} ms", t0.elapsed().as_millis());
    let t1 = now_ms();
    bed.set_link_quality(0, 0);
    let bound = bed.spec.timing.convergence_bound();
    bed.measure_merge("convergence check once the links are clean", t1, &[1, 2, 3, 4, 5], bound);
    bed.finish(&[1, 2, 3, 4, 5]);
}

#[test]
fn all_agents_restarted_at_once() {
    let name = "all_agents_restarted_at_once";
    if !Bed::available(name) {
        return;
    }
    let mut bed = Bed::new(name, Spec::new(5));
    bed.start_all_and_form();
    let before = bed.common_view(&[1, 2, 3, 4, 5]).expect("view");
    for n in 1..=5 {
        bed.kill9(n);
    }
    let t1 = now_ms();
    bed.start_all();
    let bound = bed.spec.timing.convergence_bound();
    let after = bed.measure_merge("all 5 restarted at once", t1, &[1, 2, 3, 4, 5], bound);
    for n in 1..=5 {
        assert!(epoch_of(&after, n) > epoch_of(&before, n), "node {n} did not take a new epoch");
    }
    bed.wait_clients_joined(&[1, 2, 3, 4, 5], D);
    bed.finish(&[1, 2, 3, 4, 5]);
}

#[test]
fn rolling_restart_while_clients_send() {
    let name = "rolling_restart_while_clients_send";
    if !Bed::available(name) {
        return;
    }
    let mut bed = Bed::new(name, Spec::new(5));
    bed.start_all_and_form();
    let all = [1, 2, 3, 4, 5];
    bed.wait_clients_joined(&all, D);
    for n in all {
        let rest: Vec<u32> = all.iter().copied().filter(|x| *x != n).collect();
        let base: Vec<usize> = rest.iter().map(|r| delivered(&bed, *r)).collect();
        assert!(bed.stop(n, Duration::from_secs(5)), "node {n} did not leave cleanly");
        bed.wait_for_view(&rest, D);
        let t1 = now_ms();
        bed.start(n);
        let bound = bed.spec.timing.convergence_bound();
        bed.measure_merge(&format!("node {n} restarted"), t1, &all, bound);
        bed.wait_clients_joined(&all, D);
        // The others' clients kept sending: every other node delivers more than before the stop. A
        // wait with a deadline, not one look: a restart can take 30 ms, and a client whose state
        // transfer was under way when node {n} left sends only once it holds the state.
        bed.wait_until(&format!("deliveries at {rest:?} beyond {base:?} after node {n} restarted"), D, |b| {
            rest.iter().zip(&base).all(|(r, before)| delivered(b, *r) > *before).then_some(())
        });
    }
    bed.finish(&all);
}

#[test]
fn two_node_fence_race_has_exactly_one_winner() {
    let name = "two_node_fence_race_has_exactly_one_winner";
    if !Bed::available(name) {
        return;
    }
    let mut spec = Spec::new(2);
    spec.two_node = true;
    spec.policy = "fence".into();
    spec.fence =
        Fence::TestAgent { levels: vec![TestLevel { timeout_ms: 3000, retries: 0 }], restart_counts: true };
    let mut bed = Bed::new(name, spec);
    // As two-node clusters are set up with real devices: fencing node 1 is delayed by a second, so
    // node 1's fence of node 2 lands first (and kills node 2's fence agent in flight with it).
    bed.set_fence_delay(1, 1, 1000);
    bed.start_all_and_form();
    let t0 = now_ms();
    bed.partition(&[&[1], &[2]]);
    // Both race to fence the other: exactly one agent survives, alone in a primary view.
    let winner = bed.wait_until("exactly one survivor of the fence race, primary alone", D, |b| {
        let alive: Vec<u32> = [1, 2].into_iter().filter(|n| b.running(*n)).collect();
        if alive.len() != 1 {
            return None;
        }
        let w = alive[0];
        b.view(w).is_some_and(|(m, p)| p && m.len() == 1).then_some(w)
    });
    assert_eq!(winner, 1, "node 2 won although fencing node 1 is delayed");
    let loser = 3 - winner;
    println!("NETNS [{name}] node {winner} won the fence race {} ms after the partition", now_ms() - t0);
    assert!(bed.exited(loser).is_some(), "the loser's agent still runs");
    let won = bed.events_where(winner, "fence_result", |e| about(e, "target", loser) && e["ok"] == true);
    assert!(!won.is_empty(), "the winner logged no successful fence of node {loser}");
    assert!(
        bed.events_where(loser, "view", |e| e["primary"] == true
            && e["members"].as_array().is_some_and(|m| m.len() == 1))
            .is_empty(),
        "the loser installed a primary view alone: both sides were primary"
    );
    bed.measures.detection.push(("fence race won".into(), now_ms() - t0));
    let t1 = now_ms();
    bed.heal();
    bed.start(loser);
    let bound = bed.spec.timing.convergence_bound();
    bed.measure_merge("the loser restarts and rejoins", t1, &[1, 2], bound);
    bed.start_client(loser);
    bed.finish(&[1, 2]);
}

#[test]
fn watchdog_minority_self_fences_and_exits() {
    let name = "watchdog_minority_self_fences_and_exits";
    if !Bed::available(name) {
        return;
    }
    let mut spec = Spec::new(5);
    spec.fence = Fence::Watchdog { self_fence_after_ms: 1000, watchdog_wait_ms: 2500, exit: true };
    let mut bed = Bed::new(name, spec);
    bed.start_all_and_form();
    let t0 = now_ms();
    bed.partition(&[&[1, 2], &[3, 4, 5]]);
    bed.measure_failover("partition 2|3 (watchdog mode)", t0, &[3, 4, 5], &[1, 2]);
    // The minority self-fences: its clients are told to stop, then the agents exit.
    for n in [1, 2] {
        bed.wait_until(&format!("node {n}'s agent exits after its watchdog fired"), D, |b| b.exited(n));
        let ev = bed.events_where(n, "self_fence", |_| true);
        assert!(!ev.is_empty(), "node {n} exited without a self_fence event");
        let at = ev[0]["ts_ms"].as_u64().unwrap_or(0);
        println!("NETNS [{name}] node {n} self-fenced {} ms after the partition", at.saturating_sub(t0));
        assert!(at >= t0 + 1000, "node {n} self-fenced before self_fence_after_ms");
        assert!(
            bed.client_log(n).iter().any(|l| l["ev"] == "self_fenced"),
            "node {n}'s client was not told to stop"
        );
    }
    // The majority counts them fenced after watchdog_wait_ms.
    for n in [1, 2] {
        let ev = bed.wait_event(&[3, 4, 5], "fence_result", D, |e| about(e, "target", n) && e["ok"] == true);
        assert_eq!(ev["method"], "watchdog", "{ev}");
        let at = ev["ts_ms"].as_u64().unwrap_or(0);
        println!(
            "NETNS [{name}] majority counted node {n} fenced by the watchdog {} ms after the partition",
            at.saturating_sub(t0)
        );
        assert!(at >= t0 + 2500, "node {n} counted fenced before watchdog_wait_ms");
        bed.wait_event(&[3, 4, 5], "recovered", D, |e| recovers(e, n));
    }
    let t1 = now_ms();
    bed.heal();
    bed.start(1);
    bed.start(2);
    let bound = bed.spec.timing.convergence_bound();
    bed.measure_merge("restarted minority rejoins", t1, &[1, 2, 3, 4, 5], bound);
    bed.finish(&[1, 2, 3, 4, 5]);
}

#[test]
fn failing_and_hanging_fence_agents_time_out_retry_escalate_and_yield_to_an_ack() {
    let name = "failing_and_hanging_fence_agents_time_out_retry_escalate_and_yield_to_an_ack";
    if !Bed::available(name) {
        return;
    }
    let mut spec = Spec::new(5);
    spec.policy = "fence".into();
    spec.fence = Fence::TestAgent {
        levels: vec![TestLevel { timeout_ms: 500, retries: 1 }, TestLevel { timeout_ms: 1000, retries: 0 }],
        restart_counts: false,
    };
    let mut bed = Bed::new(name, spec);
    bed.start_all_and_form();
    let all = [1, 2, 3, 4, 5];

    // 1. Level 1 fails once: the retry fences node 5.
    bed.inject_fence_failure(1, Some("fence-fail-once"));
    let t0 = now_ms();
    bed.partition(&[&[1, 2, 3, 4], &[5]]);
    bed.measure_failover("partition of node 5", t0, &[1, 2, 3, 4], &[5]);
    bed.wait_event(&[1], "fence_result", D, |e| {
        about(e, "target", 5) && e["ok"] == true && e["method"] == "agent"
    });
    bed.wait_until("node 5 killed by the fence agent", D, |b| b.exited(5));
    bed.wait_event(&[1, 2, 3, 4], "recovered", D, |e| recovers(e, 5));
    println!("NETNS [{name}] level 1 failed once, its retry fenced node 5 after {} ms", now_ms() - t0);
    bed.heal();
    bed.start(5);
    bed.wait_for_view(&all, D);

    // 2. Level 1 hangs (timeout, retry, timeout): level 2 fences node 4.
    bed.inject_fence_failure(1, Some("fence-hang"));
    let t1 = now_ms();
    bed.partition(&[&[1, 2, 3, 5], &[4]]);
    bed.wait_event(&[1], "fence_result", D, |e| about(e, "target", 4) && e["ok"] == true);
    bed.wait_until("node 4 killed by level 2", D, |b| b.exited(4));
    let took = now_ms() - t1;
    println!(
        "NETNS [{name}] level 1 hung twice (2 x 500 ms timeouts), level 2 fenced node 4 after {took} ms"
    );
    assert!(took >= 1000, "node 4 was fenced before level 1's two timeouts ran out");
    bed.wait_event(&[1, 2, 3, 5], "recovered", D, |e| recovers(e, 4));
    bed.heal();
    bed.start(4);
    bed.wait_for_view(&all, D);

    // 3. Both levels fail: the majority stays blocked on fencing until the operator acknowledges.
    bed.inject_fence_failure(1, Some("fence-fail"));
    bed.inject_fence_failure(2, Some("fence-fail"));
    bed.partition(&[&[1, 2, 4, 5], &[3]]);
    bed.wait_for_view(&[1, 2, 4, 5], D);
    bed.wait_event(&[1], "fence_result", D, |e| about(e, "target", 3) && e["ok"] == false);
    bed.wait_until("the majority blocked on fencing node 3", D, |b| {
        b.status(1).is_some_and(|s| s["fencing"]["blocked"] == true).then_some(())
    });
    assert!(bed.running(3), "node 3 was killed although every fence level fails");
    assert!(
        bed.events_where(1, "recovered", |e| recovers(e, 3)).is_empty(),
        "node 3 recovered without being fenced"
    );
    // The operator turns node 3 off by hand and acknowledges.
    bed.kill9(3);
    let t2 = now_ms();
    bed.fence_ack(1, 3);
    let ev = bed.wait_event(&[1, 2, 4, 5], "fence_result", D, |e| about(e, "target", 3) && e["ok"] == true);
    assert_eq!(ev["method"], "ack", "{ev}");
    bed.wait_event(&[1, 2, 4, 5], "recovered", D, |e| recovers(e, 3));
    println!("NETNS [{name}] recovery of node 3 {} ms after `cohort fence ack 3`", now_ms() - t2);
    bed.inject_fence_failure(1, None);
    bed.inject_fence_failure(2, None);
    bed.heal();
    let t3 = now_ms();
    bed.start(3);
    let bound = bed.spec.timing.convergence_bound();
    bed.measure_merge("node 3 restarted after the ack", t3, &all, bound);
    bed.finish(&all);
}

#[test]
fn sixteen_nodes_partition_heal_and_crash() {
    let name = "sixteen_nodes_partition_heal_and_crash";
    if !Bed::available(name) {
        return;
    }
    let mut spec = Spec::new(16);
    spec.timing = Timing::LARGE;
    spec.client_send_interval_ms = 500;
    let mut bed = Bed::new(name, spec);
    bed.start_all_and_form();
    let all: Vec<u32> = (1..=16).collect();
    let minority: Vec<u32> = (1..=7).collect();
    let majority: Vec<u32> = (8..=16).collect();
    let t0 = now_ms();
    bed.partition(&[&minority, &majority]);
    bed.measure_failover("partition 7|9", t0, &majority, &minority);
    bed.wait_blocked(&minority, D);
    let t1 = now_ms();
    bed.heal();
    let bound = bed.spec.timing.convergence_bound();
    bed.measure_merge("heal: 7 stateful merges resolved, all 16", t1, &all, bound);
    let t2 = now_ms();
    bed.kill9(12);
    let rest: Vec<u32> = all.iter().copied().filter(|n| *n != 12).collect();
    bed.measure_failover("kill -9 of node 12", t2, &rest, &[12]);
    let t3 = now_ms();
    bed.start(12);
    bed.measure_merge("node 12 restarted", t3, &all, bound);
    bed.finish(&all);
}

// -------------------------------------------------------------------------------------------------
// Issue 9: where real clusters break (G13, L5, L6, stale epochs). Agents run under the bed's service
// manager (`auto_restart`), as they would under systemd.

/// The epoch of node `node`'s last `start` record in its event log.
fn last_started_epoch(bed: &Bed, node: u32) -> u64 {
    bed.events_where(node, "start", |_| true)
        .last()
        .and_then(|e| e["epoch"].as_u64())
        .unwrap_or_else(|| panic!("node {node} never logged start"))
}

/// Every record of kind `kind` on every node of `bed`, with `ts_ms >= since_ms`, for which `pred` holds.
fn all_events_since(bed: &Bed, kind: &str, since_ms: u64, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    bed.ids()
        .into_iter()
        .flat_map(|n| {
            bed.events_where(n, kind, |e| e["ts_ms"].as_u64().is_some_and(|t| t >= since_ms) && pred(e))
        })
        .collect()
}

/// True when a `view` record's `members` or `failed` (per `field`) lists node `node`.
fn lists(e: &Value, field: &str, node: u32) -> bool {
    e[field].as_array().is_some_and(|f| f.iter().any(|m| m[0].as_u64() == Some(u64::from(node))))
}

/// Issue 9 item 1 on real agents: node `zombie`'s agent is SIGSTOPped while clients send on every node,
/// ~300 ms later node 5 is killed so the survivors are inside a view change, and `zombie` is resumed
/// ~3 s after its pause with the survivors' old heartbeats and messages waiting in its socket buffer.
/// It must deliver nothing in its old view after the survivors installed the next one (G13), and
/// `cohort verify` (G13 included: one host clock) must pass.
fn zombie_wakes_mid_view_change(name: &str, zombie: u32) {
    if !Bed::available(name) {
        return;
    }
    let mut spec = Spec::new(5);
    spec.fence = one_test_level();
    // Clients send often, so the zombie's socket buffer holds plenty when it wakes.
    spec.client_send_interval_ms = 20;
    let mut bed = Bed::new(name, spec);
    // The fence of the zombie only pauses it (it is paused already): it is declared `recovered` and
    // then wakes, as a node whose fence did not really power it off would.
    bed.set_fence_mode(1, "stop");
    bed.auto_restart = true;
    bed.start_all_and_form();
    bed.wait_messages_flow(&[1, 2, 3, 4, 5]);
    let before = bed.common_view(&[1, 2, 3, 4, 5]).expect("the formed view");
    let zombie_epoch = epoch_of(&before, zombie);
    let old_view = bed
        .events_where(zombie, "view", |e| e["epoch"].as_u64() == Some(zombie_epoch))
        .last()
        .map(|e| e["view"].clone())
        .expect("the zombie's view record");
    if zombie == 1 {
        assert_eq!(old_view["coord"].as_u64(), Some(1), "node 1 should be the sequencer of {old_view}");
    }
    let survivors: Vec<u32> = [1, 2, 3, 4].into_iter().filter(|n| *n != zombie).collect();

    let t_pause = now_ms();
    bed.pause(zombie);
    // The fault schedule of the run, not a wait for anything: node 5 dies 300 ms into the pause.
    std::thread::sleep(Duration::from_millis(300));
    bed.kill9(5);
    bed.wait_for_view(&survivors, D);
    bed.wait_event(&survivors, "recovered", D, |e| recovers(e, zombie));
    let next_install =
        all_events_since(&bed, "view", t_pause, |e| e["primary"] == true && !lists(e, "members", zombie))
            .iter()
            .filter_map(|e| e["ts_ms"].as_u64())
            .min()
            .expect("the survivors' next primary view");
    // The zombie wakes ~3 s after its pause (at once if the recovery took longer).
    let wake_at = t_pause + 3000;
    if let Some(rest) = wake_at.checked_sub(now_ms()) {
        std::thread::sleep(Duration::from_millis(rest));
    }
    bed.set_fence_mode(1, "kill");
    let t_resume = now_ms();
    bed.resume(zombie);
    println!(
        "NETNS [{name}] node {zombie} paused at +0, node 5 killed at +300 ms, next view installed at +{} ms, \
         resumed at +{} ms",
        next_install - t_pause,
        t_resume - t_pause
    );

    // It is removed: it learns so (refused as a stateful merge, or told it was removed) and comes
    // back, restarted by the service manager, as a new member.
    let back = bed.wait_until(&format!("node {zombie} back with a new epoch beside {survivors:?}"), D, |b| {
        let mut four = survivors.clone();
        four.push(zombie);
        b.common_view(&four).filter(|v| epoch_of(v, zombie) > zombie_epoch)
    });
    let zombie_acts: Vec<Value> = bed.events_where(zombie, "deliver", |e| {
        e["epoch"].as_u64() == Some(zombie_epoch)
            && e["view"] == old_view
            && e["ts_ms"].as_u64().is_some_and(|t| t > next_install)
    });
    println!(
        "NETNS [{name}] node {zombie} delivered {} messages in its old view {old_view} after the others installed \
         the next view; back as {back:?}",
        zombie_acts.len()
    );
    let (ok, text) = bed.verify();
    for line in text.lines().filter(|l| l.starts_with("VIOLATION") || l.starts_with("verdict")) {
        println!("NETNS [{name}] cohort verify: {line}");
    }
    assert!(
        zombie_acts.is_empty(),
        "node {zombie} delivered {} messages in its old view {old_view} after the survivors installed the next \
         view at {next_install} (resumed at {t_resume}), the first: {}",
        zombie_acts.len(),
        zombie_acts[0]
    );
    assert!(ok, "[{name}] cohort verify (G13 included) failed:\n{text}");
    bed.start(5);
    bed.finish(&[1, 2, 3, 4, 5]);
}

#[test]
fn zombie_member_woken_mid_view_change_delivers_nothing_in_its_old_view() {
    zombie_wakes_mid_view_change("zombie_member_woken_mid_view_change_delivers_nothing_in_its_old_view", 2);
}

#[test]
fn zombie_sequencer_woken_mid_view_change_orders_and_delivers_nothing_in_its_old_view() {
    zombie_wakes_mid_view_change(
        "zombie_sequencer_woken_mid_view_change_orders_and_delivers_nothing_in_its_old_view",
        1,
    );
}

/// Five agents with a real fence agent and a service manager that restarts exited agents (as systemd's
/// `Restart=always`), formed into one primary view; `None` where the bed cannot run (not root).
fn formed_bed_with_service_manager(name: &str) -> Option<Bed> {
    if !Bed::available(name) {
        return None;
    }
    let mut spec = Spec::new(5);
    spec.fence = one_test_level();
    let mut bed = Bed::new(name, spec);
    bed.auto_restart = true;
    bed.start_all_and_form();
    Some(bed)
}

/// Issue 9 item 2 (L5): the majority fences the minority of a partition, the service manager restarts
/// the fenced agents with new epochs, and the heal only adds them: no member of the majority is removed
/// or fenced.
#[test]
fn heal_after_fencing_with_restarted_agents_removes_and_fences_no_majority_member() {
    let name = "heal_after_fencing_with_restarted_agents_removes_and_fences_no_majority_member";
    let Some(mut bed) = formed_bed_with_service_manager(name) else { return };
    let before = bed.common_view(&[1, 2, 3, 4, 5]).expect("the formed view");
    let t0 = now_ms();
    bed.partition(&[&[1, 2], &[3, 4, 5]]);
    bed.wait_for_view(&[3, 4, 5], D);
    for n in [1, 2] {
        bed.wait_event(&[3, 4, 5], "fence_result", D, |e| about(e, "target", n) && e["ok"] == true);
    }
    // The partition lasts 5 s in all, as in the run (a fault's length, not a wait for an event).
    if let Some(rest) = (t0 + 5000).checked_sub(now_ms()) {
        std::thread::sleep(Duration::from_millis(rest));
    }
    // The service manager started the killed agents again; cut off from every majority, they wait to
    // learn which epochs of their nodes the cluster has seen before opening one (G12): no new epoch yet.
    for n in [1, 2] {
        assert!(
            bed.events_where(n, "start", |e| e["epoch"].as_u64() > Some(epoch_of(&before, n))).is_empty(),
            "node {n} opened a new epoch inside the minority"
        );
    }
    let t_heal = now_ms();
    bed.heal();
    let bound = bed.spec.timing.convergence_bound();
    let after = bed.measure_merge("heal after fencing -> all 5", t_heal, &[1, 2, 3, 4, 5], bound);
    for n in [1, 2] {
        assert!(
            epoch_of(&after, n) > epoch_of(&before, n),
            "node {n} rejoined without a new epoch: {after:?}"
        );
    }
    for n in [3, 4, 5] {
        assert_eq!(epoch_of(&after, n), epoch_of(&before, n), "majority node {n} changed epoch: {after:?}");
        let removed = all_events_since(&bed, "view", t_heal, |e| lists(e, "failed", n));
        assert!(
            removed.is_empty(),
            "healthy majority node {n} was removed as failed after the heal: {removed:?}"
        );
        let fenced = all_events_since(&bed, "fence_request", 0, |e| about(e, "target", n));
        assert!(fenced.is_empty(), "healthy majority node {n} was targeted by a fence request: {fenced:?}");
    }
    bed.finish(&[1, 2, 3, 4, 5]);
}

/// Issue 9 item 3 (L6): every agent stops on SIGTERM and exits 0; started again, the cluster forms one
/// primary view of all five without any fence request or `recovered`.
#[test]
fn stop_all_then_start_all_fences_and_recovers_nobody() {
    let name = "stop_all_then_start_all_fences_and_recovers_nobody";
    let Some(mut bed) = formed_bed_with_service_manager(name) else { return };
    let all = [1, 2, 3, 4, 5];
    bed.wait_messages_flow(&all);
    let before = bed.common_view(&all).expect("the formed view");
    let unclean = bed.stop_all();
    assert!(unclean.is_empty(), "agents {unclean:?} did not exit 0 on SIGTERM");
    let t_start = now_ms();
    bed.start_all();
    let bound = bed.spec.timing.convergence_bound();
    let after = bed.measure_merge("cold start after a clean stop of all 5", t_start, &all, bound);
    for n in all {
        assert_eq!(
            epoch_of(&after, n),
            epoch_of(&before, n) + 1,
            "node {n} is not its next epoch: {after:?}"
        );
    }
    bed.wait_messages_flow(&all);
    let fences = all_events_since(&bed, "fence_request", t_start, |_| true);
    let recovered = all_events_since(&bed, "recovered", t_start, |_| true);
    assert!(fences.is_empty(), "{} fence requests after a clean stop of all: {fences:?}", fences.len());
    assert!(recovered.is_empty(), "{} `recovered` after a clean stop of all: {recovered:?}", recovered.len());
    bed.finish(&all);
}

/// Issue 9 item 3 (L6) on one node: twenty `systemctl restart`s (SIGTERM, exit 0, start at once) of node
/// 3 while clients send; nobody ever classifies it as a stateful merge or asks to fence it.
#[test]
fn twenty_clean_restarts_of_one_node_cause_no_stateful_merge_and_no_fence() {
    let name = "twenty_clean_restarts_of_one_node_cause_no_stateful_merge_and_no_fence";
    let Some(mut bed) = formed_bed_with_service_manager(name) else { return };
    let all = [1, 2, 3, 4, 5];
    let mut epoch = epoch_of(&bed.common_view(&all).expect("the formed view"), 3);
    for round in 1..=20 {
        assert!(bed.stop(3, Duration::from_secs(5)), "round {round}: node 3 did not exit 0 on SIGTERM");
        bed.start(3);
        let view = bed.wait_until(&format!("round {round}: node 3 back with a new epoch"), D, |b| {
            b.common_view(&all).filter(|v| epoch_of(v, 3) > epoch)
        });
        epoch = epoch_of(&view, 3);
    }
    let merges = all_events_since(&bed, "stateful_merge", 0, |_| true);
    let fences = all_events_since(&bed, "fence_request", 0, |_| true);
    println!(
        "NETNS [{name}] 20 clean restarts: node 3 at epoch {epoch}, {} stateful merges, {} fence requests",
        merges.len(),
        fences.len()
    );
    assert!(merges.is_empty(), "{} stateful merges in 20 clean restarts: {merges:?}", merges.len());
    assert!(fences.is_empty(), "{} fence requests in 20 clean restarts: {fences:?}", fences.len());
    assert_eq!(epoch, 21, "node 3 took more than one epoch per restart");
    bed.finish(&all);
}

/// Issue 9 item 4: node 4's data directory is wiped and node 5's restored from an older backup after
/// each ran as epoch 3; each must rejoin the primary view without an operator, above every epoch it
/// used (it asks the cluster before opening one), with no fence, and `cohort status` on both sides must
/// say what happened.
#[test]
fn wiped_node_and_node_restored_from_an_old_backup_rejoin_with_a_higher_epoch() {
    let name = "wiped_node_and_node_restored_from_an_old_backup_rejoin_with_a_higher_epoch";
    let Some(mut bed) = formed_bed_with_service_manager(name) else { return };
    let all = [1, 2, 3, 4, 5];
    let mut backup = None;
    // Nodes 4 and 5 run as epochs 2 and 3; node 5's data directory is backed up at epoch 1.
    for n in [4, 5] {
        for _ in 0..2 {
            assert!(bed.stop(n, Duration::from_secs(5)), "node {n} did not exit 0 on SIGTERM");
            if n == 5 && backup.is_none() {
                backup = Some(bed.backup_data_dir(5, "epoch1"));
            }
            bed.start(n);
            let e = last_started_epoch(&bed, n);
            // At least that epoch: a clean restart misread as a stateful merge (issue 9 item 3) makes the
            // service manager start it once more; that is the other test's failure, not this one's.
            bed.wait_until(&format!("node {n} in the view as epoch {e} or later"), D, |b| {
                b.common_view(&all).filter(|v| epoch_of(v, n) >= e)
            });
        }
    }
    let backup = backup.expect("node 5's backup");
    for (n, disk) in [(4, "wiped"), (5, "restored from its epoch-1 backup")] {
        let used = last_started_epoch(&bed, n);
        assert!(used >= 2, "node {n} ran only as epoch {used}");
        let t = now_ms();
        assert!(bed.stop(n, Duration::from_secs(5)), "node {n} did not exit 0 on SIGTERM");
        let marker = bed.node(n).data_dir.join(cohort_actors::supervisor::RESTORED_MARKER);
        if n == 4 {
            bed.wipe_data_dir(4);
        } else {
            bed.restore_data_dir(5, &backup);
            // The operator says so, as docs/OPERATIONS.md asks after a restore.
            std::fs::write(&marker, b"").expect("write the restore marker");
        }
        bed.start(n);
        let bound = bed.spec.timing.convergence_bound();
        let view = bed.wait_until(
            &format!("node {n} ({disk}) back in the primary view above epoch {used}"),
            bound + D,
            |b| b.common_view(&all).filter(|v| epoch_of(v, n) > used),
        );
        println!(
            "NETNS [{name}] node {n} {disk}: rejoined as epoch {} after {} ms",
            epoch_of(&view, n),
            now_ms() - t
        );
        let fences = all_events_since(&bed, "fence_request", t, |_| true);
        assert!(fences.is_empty(), "node {n} ({disk}) came back with fence requests: {fences:?}");
        // It forgot what it knew, so it caught up before counting for a quorum; in a primary view now, it
        // has (the flag is on disk until then), and the operator's marker is consumed.
        assert!(!marker.exists(), "node {n}'s restore marker is still there after its start");
        let log = std::fs::read_to_string(bed.stderr_path(n)).unwrap_or_default();
        assert!(
            log.contains("this node catches up"),
            "node {n} ({disk}) did not start catching up (counting for no quorum until a primary view); its log:\n{log}"
        );
        let st = bed.status(n).expect("status");
        assert_eq!(
            st["catching_up"],
            serde_json::json!(false),
            "node {n} still catching up in a primary view: {st}"
        );
        // It asked the cluster before picking an epoch: no epoch it used before starts again (G12).
        let stale: Vec<u64> = bed
            .events_where(n, "start", |e| e["ts_ms"].as_u64().is_some_and(|ts| ts >= t))
            .iter()
            .filter_map(|e| e["epoch"].as_u64())
            .filter(|e| *e <= used)
            .collect();
        assert!(stale.is_empty(), "node {n} ({disk}) started used epochs again: {stale:?}");
        // What happened is visible on both sides: the node's own status says its data directory was
        // behind the cluster, and a majority node's names the node's inquiry and the epoch it knew (or,
        // once it granted the node's claim of the next one, that one).
        let own = bed.status(n).expect("status");
        let origin = own["origin"].as_str().unwrap_or_default();
        assert!(
            origin.contains(&format!("the cluster had seen epoch {used}")),
            "node {n}'s status does not say why it started above its disk ({disk}): {own}"
        );
        let majority = bed.status(1).expect("status");
        let asked = majority["epoch_inquiries"].as_array().cloned().unwrap_or_default();
        assert!(
            asked
                .iter()
                .any(|x| x[0].as_u64() == Some(u64::from(n)) && x[1].as_u64().is_some_and(|e| e >= used)),
            "node 1's status does not name node {n}'s inquiry with epoch {used} ({disk}): {majority}"
        );
    }
    bed.finish(&all);
}
