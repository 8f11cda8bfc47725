//! Unit tests of the engine on a tiny lossless in-memory network. The deterministic simulator in
//! `tests/sim` is the main correctness tool; these tests pin down single behaviours quickly.

use super::*;
use crate::config::Config;
use std::collections::BTreeMap;

/// A minimal cluster: every datagram arrives after `delay` ms unless its link is cut.
struct Net {
    cfg: Arc<Config>,
    now: u64,
    nodes: BTreeMap<u32, Node>,
    disks: BTreeMap<u32, Durable>,
    queue: Vec<(u64, u64, u32, Vec<u8>)>,
    counter: u64,
    cut: BTreeSet<(u32, u32)>,
    records: Vec<Record>,
    delivered: BTreeMap<Member, Vec<(ViewId, u64, MsgId)>>,
    fences: Vec<(u32, Member)>,
    /// When set, applications do not answer `ProvideState` (as one that is about to leave).
    withhold_state: bool,
}

impl Net {
    fn new(ids: &[u32], tune: impl FnOnce(&mut Config)) -> Net {
        let mut cfg = Config::new("t", ids);
        cfg.heartbeat_interval_ms = 20;
        cfg.failure_timeout_ms = 200;
        cfg.discovery_interval_ms = 100;
        cfg.view_change_timeout_ms = 150;
        cfg.retransmit_interval_ms = 20;
        cfg.max_datagram_bytes = 4096;
        tune(&mut cfg);
        cfg.validate().expect("valid config");
        let mut net = Net {
            cfg: Arc::new(cfg),
            now: 1000,
            nodes: BTreeMap::new(),
            disks: BTreeMap::new(),
            queue: Vec::new(),
            counter: 0,
            cut: BTreeSet::new(),
            records: Vec::new(),
            delivered: BTreeMap::new(),
            fences: Vec::new(),
            withhold_state: false,
        };
        for &id in ids {
            net.start(id);
        }
        net
    }

    fn start(&mut self, id: u32) {
        let mut d = self.disks.get(&id).cloned().unwrap_or_default();
        d.epoch = Epoch(d.epoch.0 + 1);
        self.disks.insert(id, d.clone());
        let mut out = Vec::new();
        let n = Node::new(self.cfg.clone(), NodeId(id), d, self.now, &mut out);
        self.nodes.insert(id, n);
        self.apply(id, out);
    }

    fn apply(&mut self, id: u32, out: Vec<Output>) {
        for o in out {
            match o {
                Output::Send { to, bytes } => {
                    self.counter += 1;
                    self.queue.push((self.now + 1, self.counter, to.0 * 1000 + id, bytes));
                }
                Output::Persist(d) => {
                    self.disks.insert(id, d);
                }
                Output::Record(r) => {
                    if let Event::Deliver { .. } = &r.event {}
                    self.records.push(r);
                }
                Output::Notify(Notification::Deliver { msg, view, seq, .. }) => {
                    let m = self.nodes.get(&id).map(|n| n.member());
                    if let Some(m) = m {
                        self.delivered.entry(m).or_default().push((view, seq, msg));
                    }
                }
                Output::Notify(Notification::ProvideState { .. }) if self.withhold_state => {}
                Output::Notify(Notification::ProvideState { group, joiner, token }) => {
                    let mut more = Vec::new();
                    if let Some(n) = self.nodes.get_mut(&id) {
                        n.provide_state(self.now, &group, joiner, token, b"state".to_vec(), &mut more);
                    }
                    self.apply(id, more);
                }
                Output::Notify(_) => {}
                Output::Fence { target, .. } => self.fences.push((id, target)),
                Output::SelfFence { .. } | Output::NewEpoch { .. } => {}
            }
        }
    }

    fn run(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.now += 1;
            self.queue.sort_by_key(|q| (q.0, q.1));
            let due: Vec<_> = self.queue.iter().filter(|q| q.0 <= self.now).cloned().collect();
            self.queue.retain(|q| q.0 > self.now);
            for (_, _, key, bytes) in due {
                let (to, from) = (key / 1000, key % 1000);
                if self.cut.contains(&(from, to)) {
                    continue;
                }
                let mut out = Vec::new();
                if let Some(n) = self.nodes.get_mut(&to) {
                    n.receive(self.now, &bytes, &mut out);
                }
                self.apply(to, out);
            }
            let ids: Vec<u32> = self.nodes.keys().copied().collect();
            for id in ids {
                let mut out = Vec::new();
                if let Some(n) = self.nodes.get_mut(&id) {
                    if n.next_wakeup_ms() <= self.now {
                        n.tick(self.now, &mut out);
                    }
                }
                self.apply(id, out);
            }
        }
    }

    fn partition(&mut self, a: &[u32], b: &[u32]) {
        for &x in a {
            for &y in b {
                self.cut.insert((x, y));
                self.cut.insert((y, x));
            }
        }
    }

    fn view_of(&self, id: u32) -> Option<View> {
        self.nodes.get(&id).and_then(|n| n.view().cloned())
    }

    fn send(&mut self, id: u32, payload: &[u8], d: Delivery) -> MsgId {
        let mut out = Vec::new();
        let r =
            self.nodes.get_mut(&id).expect("node").multicast(self.now, "g", payload.to_vec(), d, &mut out);
        self.apply(id, out);
        r.expect("accepted")
    }
}

#[test]
fn three_nodes_form_one_primary_view() {
    let mut net = Net::new(&[1, 2, 3], |_| {});
    net.run(1000);
    let v = net.view_of(1).expect("view");
    assert!(v.primary);
    assert_eq!(v.members.len(), 3);
    assert_eq!(net.view_of(2), Some(v.clone()));
    assert_eq!(net.view_of(3), Some(v));
}

#[test]
fn messages_are_delivered_in_one_order_everywhere() {
    let mut net = Net::new(&[1, 2, 3], |_| {});
    net.run(1000);
    for id in 1..=3 {
        let mut out = Vec::new();
        net.nodes.get_mut(&id).expect("node").join_group(net.now, "g", &mut out);
        net.apply(id, out);
    }
    net.run(300);
    for i in 0..50u32 {
        let d = if i % 3 == 0 { Delivery::Safe } else { Delivery::Agreed };
        net.send(1 + i % 3, &i.to_le_bytes(), d);
    }
    net.run(500);
    let seqs: Vec<Vec<MsgId>> =
        net.delivered.values().map(|v| v.iter().map(|(_, _, m)| *m).collect()).collect();
    assert_eq!(seqs.len(), 3, "all three delivered: {:?}", net.delivered.keys());
    assert_eq!(seqs[0].len(), 50);
    assert_eq!(seqs[0], seqs[1]);
    assert_eq!(seqs[1], seqs[2]);
}

#[test]
fn a_crashed_member_is_removed_and_fenced_before_recovery() {
    let mut net = Net::new(&[1, 2, 3], |_| {});
    net.run(1000);
    net.nodes.remove(&3);
    net.run(1000);
    let v = net.view_of(1).expect("view");
    assert!(v.primary);
    assert_eq!(v.members.iter().map(|m| m.node().0).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(net.fences.len(), 1, "one fence request: {:?}", net.fences);
    let (fencer, target) = net.fences[0];
    assert!(!net.records.iter().any(|r| matches!(r.event, Event::Recovered { .. })));
    let mut out = Vec::new();
    net.nodes.get_mut(&fencer).expect("fencer").fence_result(net.now, target, true, "test", &mut out);
    net.apply(fencer, out);
    net.run(200);
    let recovered: Vec<_> =
        net.records.iter().filter(|r| matches!(r.event, Event::Recovered { .. })).map(|r| r.node).collect();
    assert_eq!(recovered.len(), 2, "both survivors announce recovery: {recovered:?}");
}

#[test]
fn minority_blocks_and_stateful_merge_is_refused_after_heal() {
    let mut net = Net::new(&[1, 2, 3, 4, 5], |_| {});
    net.run(1000);
    net.partition(&[1, 2], &[3, 4, 5]);
    net.run(1500);
    let maj = net.view_of(3).expect("view");
    assert!(maj.primary);
    assert_eq!(maj.members.len(), 3);
    let min = net.view_of(1).expect("view");
    assert!(!min.primary);
    net.cut.clear();
    net.run(1500);
    let merges: Vec<_> =
        net.records.iter().filter(|r| matches!(r.event, Event::StatefulMerge { .. })).collect();
    assert!(!merges.is_empty(), "stateful merge detected");
    let removed: Vec<_> = net
        .records
        .iter()
        .filter(|r| matches!(r.event, Event::RemovedSelf { .. }))
        .map(|r| r.node.0)
        .collect();
    assert!(removed.contains(&1) && removed.contains(&2), "removed_self: {removed:?}");
    let maj = net.view_of(3).expect("view");
    assert_eq!(maj.members.len(), 3, "zombies not admitted");
}

#[test]
fn an_acceptance_is_durable_and_a_restarted_acceptor_keeps_its_removals() {
    let mut net = Net::new(&[1, 2, 3], |_| {});
    net.run(1000);
    let before = net.view_of(3).expect("the formed view");
    let old1 = before.members.iter().copied().find(|m| m.node() == NodeId(1)).expect("node 1's member");
    net.partition(&[1], &[2, 3]);
    // Step until node 3 has accepted the view without node 1 (its disk says so) but not installed it.
    let mut caught = None;
    for _ in 0..3000 {
        net.run(1);
        let installed = net.view_of(3).is_some_and(|v| v.id > before.id);
        if let Some(acc) = net.disks[&3].accepted.clone() {
            assert!(!installed || net.view_of(3).is_some_and(|v| v.id <= acc.view), "kept after install");
            if !installed {
                caught = Some(acc);
                break;
            }
        }
        assert!(!installed, "node 3 installed the new view without ever persisting its acceptance");
    }
    let acc = caught.expect("node 3 accepted the view without node 1 within 3 s");
    assert!(!acc.registry.admissible(old1), "the persisted acceptance carries the removal of {old1}");
    // Node 3 crashes right after sending its acceptance; its next incarnation starts from its disk.
    net.nodes.remove(&3);
    net.start(3);
    let n3 = &net.nodes[&3];
    assert_eq!(n3.me.epoch(), Epoch(2));
    assert_eq!(n3.flush_state().inherited, Some(acc.clone()), "the new incarnation does not offer it");
    assert!(n3.durable.max_installed_seq >= acc.view.seq, "it may promise a ballot below the acceptance");
    // A coordinator assumes the removal, unless a primary view newer than the install contains the member.
    assert!(!acc.assumed_removals(std::iter::empty()).admissible(old1));
    assert!(!acc.assumed_removals([&before]).admissible(old1), "an older primary view proves nothing");
    let mut newer = before.clone();
    newer.id = ViewId { seq: acc.view.seq + 1, coord: NodeId(1) };
    assert!(acc.assumed_removals([&newer]).admissible(old1));
    // The install is completed or superseded; once a view after it is installed the disk forgets it.
    net.run(3000);
    let v = net.view_of(3).expect("a view");
    assert!(v.id > acc.view, "node 3 installed nothing after the acceptance: {v:?}");
    assert!(net.disks[&3].accepted.is_none() && net.nodes[&3].inherited.is_none());
    assert!(!v.contains(old1), "{old1}, removed by the install node 3 accepted, is back: {v:?}");
}

#[test]
fn installing_a_view_clears_the_durable_acceptance() {
    let mut net = Net::new(&[1, 2, 3], |_| {});
    net.run(1000);
    net.partition(&[1], &[2, 3]);
    net.run(1500);
    let v = net.view_of(3).expect("view");
    assert_eq!(v.members.len(), 2, "the view without node 1: {v:?}");
    for id in [2, 3] {
        assert!(net.disks[&id].accepted.is_none(), "node {id} still has {:?}", net.disks[&id].accepted);
        assert!(net.disks[&id].max_installed_seq >= v.id.seq);
    }
}

#[test]
fn a_lone_member_delivers_its_safe_messages() {
    let mut net = Net::new(&[1], |_| {});
    net.run(500);
    assert!(net.view_of(1).is_some_and(|v| v.primary));
    let mut out = Vec::new();
    net.nodes.get_mut(&1).expect("node").join_group(net.now, "g", &mut out);
    net.apply(1, out);
    let id = net.send(1, b"safe", Delivery::Safe);
    net.run(100);
    let got: Vec<MsgId> = net.delivered.values().flatten().map(|(_, _, m)| *m).collect();
    assert_eq!(got, vec![id], "the only member holds it, so it is stable at once");
}

/// Cuts node 3 off for `cut_ms` after the three nodes formed their view; true when a node then
/// installed another view.
fn view_changes_after_a_cut(net: &mut Net, cut_ms: u64) -> bool {
    let before = net.view_of(1).expect("view").id;
    net.partition(&[3], &[1, 2]);
    net.run(cut_ms);
    net.cut.clear();
    net.run(1000);
    [1, 2, 3].iter().any(|n| net.view_of(*n).map(|v| v.id) != Some(before))
}

#[test]
fn a_new_failure_timeout_takes_effect_in_a_running_node() {
    // The same 300 ms silence: a view change under the configured 200 ms failure timeout, none once
    // every node runs with 400 ms.
    let mut net = Net::new(&[1, 2, 3], |_| {});
    net.run(1000);
    assert!(view_changes_after_a_cut(&mut net, 300), "300 ms of silence went unnoticed at 200 ms");

    let mut net = Net::new(&[1, 2, 3], |_| {});
    net.run(1000);
    for n in [1, 2, 3] {
        let node = net.nodes.get_mut(&n).expect("node");
        let t = Timing { failure_timeout_ms: 400, ..node.timing() };
        node.set_timing(t).expect("a step within bounds");
        assert_eq!(node.timing().failure_timeout_ms, 400);
    }
    assert!(!view_changes_after_a_cut(&mut net, 300), "a view change within the new failure timeout");
    // ...and a silence beyond it is still detected.
    assert!(view_changes_after_a_cut(&mut net, 600), "600 ms of silence went unnoticed at 400 ms");
}

#[test]
fn a_timing_step_too_far_for_peers_that_still_run_the_old_one_is_refused() {
    let mut net = Net::new(&[1, 2, 3], |_| {});
    net.run(500);
    let node = net.nodes.get_mut(&1).expect("node");
    let running = node.timing();
    // Peers still suspect a node after their 200 ms: heartbeats every 150 ms are too slow for them.
    let slow = Timing { heartbeat_interval_ms: 150, failure_timeout_ms: 400, ..running };
    let err = node.set_timing(slow).expect_err("too far in one step");
    assert!(err.to_string().starts_with("heartbeat_interval_ms = 150: at most half the running"), "{err}");
    // This node would suspect peers that still heartbeat every 20 ms after 30 ms.
    let eager = Timing { failure_timeout_ms: 30, ..running };
    let err = node.set_timing(eager).expect_err("too far in one step");
    assert!(err.to_string().starts_with("failure_timeout_ms = 30: at least twice the running"), "{err}");
    // An invalid timing is refused as a whole.
    let zero = Timing { discovery_interval_ms: 0, ..running };
    assert!(node.set_timing(zero).is_err());
    assert_eq!(node.timing(), running, "a refused timing changed the node");
    // Under watchdog fencing the failure timeout does not grow at run time.
    let mut net = Net::new(&[1, 2, 3], |c| {
        c.fencing = FencingMode::Watchdog;
        c.self_fence_after_ms = 1000;
        c.watchdog_wait_ms = 3000;
    });
    net.run(500);
    let node = net.nodes.get_mut(&1).expect("node");
    let longer = Timing { failure_timeout_ms: 300, ..node.timing() };
    let err = node.set_timing(longer).expect_err("watchdog");
    assert!(err.to_string().contains("under watchdog fencing"), "{err}");
    let shorter = Timing { failure_timeout_ms: 150, ..node.timing() };
    node.set_timing(shorter).expect("a shorter failure timeout is fine");
}

#[test]
fn nothing_is_kept_of_a_group_after_its_members_leave() {
    // The soak's churn: every client visit joins a group of a new name, is given state, and leaves.
    let mut net = Net::new(&[1, 2], |_| {});
    net.run(1000);
    for round in 0..40 {
        let group = format!("visit-{round}");
        for id in [1, 2] {
            let mut out = Vec::new();
            net.nodes.get_mut(&id).expect("node").join_group(net.now, &group, &mut out);
            net.apply(id, out);
            net.run(100);
        }
        let n2 = net.nodes.get(&2).expect("node");
        assert!(n2.applied_tokens.contains_key(&group), "round {round}: node 2 was given state");
        for id in [2, 1] {
            let mut out = Vec::new();
            net.nodes.get_mut(&id).expect("node").leave_group(net.now, &group, &mut out);
            net.apply(id, out);
            net.run(100);
        }
    }
    for (id, n) in &net.nodes {
        assert!(n.groups.is_empty(), "node {id} groups: {:?}", n.groups);
        assert!(n.my_groups.is_empty(), "node {id} my_groups: {:?}", n.my_groups.keys());
        assert!(n.local_group_op.is_empty(), "node {id} local_group_op: {:?}", n.local_group_op);
        assert!(n.applied_tokens.is_empty(), "node {id} applied_tokens: {:?}", n.applied_tokens);
        assert!(n.transfers.is_empty() && n.providing.is_empty() && n.early_states.is_empty(), "node {id}");
    }
}

#[test]
fn a_joiner_whose_provider_leaves_before_giving_state_loses_none_of_its_own_messages() {
    // The group's only member (node 1) is asked for its state, does not give it, and leaves: nobody
    // holds the state, so the joiner (node 2) starts from empty state at the leave. What its
    // application multicast while it waited must still reach it, after that empty state.
    let mut net = Net::new(&[1, 2, 3], |_| {});
    net.run(1000);
    let mut out = Vec::new();
    net.nodes.get_mut(&1).expect("node").join_group(net.now, "g", &mut out);
    net.apply(1, out);
    net.run(100);
    net.withhold_state = true;
    let mut out = Vec::new();
    net.nodes.get_mut(&2).expect("node").join_group(net.now, "g", &mut out);
    net.apply(2, out);
    net.run(100);
    let mine: Vec<MsgId> = (0..5u32).map(|i| net.send(2, &i.to_le_bytes(), Delivery::Agreed)).collect();
    net.run(100);
    let mut out = Vec::new();
    net.nodes.get_mut(&1).expect("node").leave_group(net.now, "g", &mut out);
    net.apply(1, out);
    net.run(300);
    let m2 = net.nodes.get(&2).expect("node").member();
    let got: Vec<MsgId> =
        net.delivered.get(&m2).map(|v| v.iter().map(|(_, _, m)| *m).collect()).unwrap_or_default();
    assert_eq!(got, mine, "node 2's application got its own messages, in order");
    assert!(matches!(net.nodes.get(&2).expect("node").my_groups.get("g"), Some(MyGroup::Member)));
}

#[test]
fn members_left_out_for_not_answering_a_change_rejoin_as_soon_as_the_cut_heals() {
    // Node 5 crashes; 150 ms later, before node 1 suspects it, {1, 2} are cut off from {3, 4}. Node 1's
    // change (without 5) still names 3 and 4, heard 50 ms earlier; they never answer and are left out
    // of its next try. The cut heals soon after: the four must be one view again within a discovery
    // interval and a view change, not only once the left-out members' refusal has expired.
    let mut net = Net::new(&[1, 2, 3, 4, 5], |_| {});
    net.run(1000);
    net.nodes.remove(&5);
    net.run(150);
    net.partition(&[1, 2], &[3, 4]);
    net.run(450);
    let cut_view = net.view_of(1).expect("a view");
    let nodes = |v: &View| v.members.iter().map(|m| m.node().0).collect::<Vec<_>>();
    assert_eq!(nodes(&cut_view), vec![1, 2], "node 1 left 3 and 4 out while cut off");
    assert!(
        net.nodes[&1].refused.keys().any(|m| m.node().0 == 3),
        "node 1 left 3 out for not answering its change: {:?}",
        net.nodes[&1].refused
    );
    net.cut.clear();
    let healed = net.now;
    let bound = net.cfg.discovery_interval_ms + 2 * net.cfg.view_change_timeout_ms;
    while net.now < healed + bound && net.view_of(1).map(|v| nodes(&v)) != Some(vec![1, 2, 3, 4]) {
        net.run(5);
    }
    assert_eq!(
        net.view_of(1).map(|v| nodes(&v)),
        Some(vec![1, 2, 3, 4]),
        "one view of the four within {bound} ms of the heal"
    );
}
