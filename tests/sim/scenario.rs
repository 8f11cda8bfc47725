//! Scenarios as data: a list of [`Step`]s run by [`run`] against a [`Sim`].
//!
//! A scenario says what happens to the cluster (start, partition, crash, pause, heal...) and what must be
//! true at given points (who is primary, who is blocked, which records exist, which epochs run). Every
//! guarantee is checked after every simulator step while the scenario runs, exactly as in the random
//! campaigns; an expectation that does not hold fails the run as guarantee `scenario` (or `L1`..`L4` for
//! the liveness steps), with the seed, the trace and the replay command.
//!
//! Waiting is always on a condition with a deadline ([`Step::WaitUntil`]), never "sleep and hope";
//! [`Step::Wait`] exists for letting traffic flow or a fault last.
//!
//! The seed story, which both the test suite and `examples/sim.rs --story` run, is defined here too
//! ([`seed_story`]).
#![allow(dead_code)]

use crate::harness::{
    convergence_bound_ms, fmt_member, fmt_members, view_change_bound_ms, Failure, FenceBehaviour, Sim,
    SimOptions, MAIN_GROUP,
};
use cohort::record::{BlockReason, Event, FenceMethod, MergeAction, Record, TransferRole};
use cohort::{Delivery, Epoch, MergePolicy, View};
use std::collections::BTreeSet;
use std::fmt;

/// A pattern over event-log records.
#[derive(Clone, Debug, PartialEq)]
pub enum RecordPat {
    /// A `stateful_merge` naming a member of this node (with this action, if given).
    StatefulMerge { node: u32, action: Option<MergeAction> },
    /// A `fence_request` for a member of this node (with this reason, if given).
    FenceRequest { target: u32, reason: Option<&'static str> },
    /// A `fence_result` for a member of this node, with this outcome (and method, if given).
    FenceResult { target: u32, ok: bool, method: Option<FenceMethod> },
    /// A `recovered` listing a member of this node.
    Recovered { node: u32 },
    /// A `removed_self` written by this node.
    RemovedSelf { node: u32 },
    /// A `self_fence` written by this node.
    SelfFence { node: u32 },
    /// A `state_transfer` of `group` received by this node (ok).
    StateReceived { node: u32, group: &'static str },
    /// A `blocked` with this reason written by this node.
    Blocked { node: u32, reason: BlockReason },
    /// A `start` of this node at this epoch.
    Start { node: u32, epoch: u64 },
    /// Any `fence_request`, whoever the target.
    AnyFenceRequest,
    /// Any `recovered`, whoever it names.
    AnyRecovered,
    /// A `view` record listing a member of this node as failed.
    FailedInView { node: u32 },
}

impl RecordPat {
    /// True when `r` matches.
    pub fn matches(&self, r: &Record) -> bool {
        match (self, &r.event) {
            (RecordPat::StatefulMerge { node, action }, Event::StatefulMerge { member, action: a, .. }) => {
                member.node().0 == *node && action.is_none_or(|x| x == *a)
            }
            (RecordPat::FenceRequest { target, reason }, Event::FenceRequest { target: t, reason: why }) => {
                t.node().0 == *target && reason.is_none_or(|x| x == why)
            }
            (
                RecordPat::FenceResult { target, ok, method },
                Event::FenceResult { target: t, ok: o, method: m, .. },
            ) => t.node().0 == *target && o == ok && method.is_none_or(|x| x == *m),
            (RecordPat::Recovered { node }, Event::Recovered { failed, .. }) => {
                failed.iter().any(|m| m.node().0 == *node)
            }
            (RecordPat::RemovedSelf { node }, Event::RemovedSelf { .. }) => r.node.0 == *node,
            (RecordPat::SelfFence { node }, Event::SelfFence { .. }) => r.node.0 == *node,
            (RecordPat::StateReceived { node, group }, Event::StateTransfer { group: g, role, ok, .. }) => {
                r.node.0 == *node && g == group && *role == TransferRole::Receiver && *ok
            }
            (RecordPat::Blocked { node, reason }, Event::Blocked { reason: why }) => {
                r.node.0 == *node && why == reason
            }
            (RecordPat::Start { node, epoch }, Event::Start { .. }) => {
                r.node.0 == *node && r.epoch.0 == *epoch
            }
            (RecordPat::AnyFenceRequest, Event::FenceRequest { .. }) => true,
            (RecordPat::AnyRecovered, Event::Recovered { .. }) => true,
            (RecordPat::FailedInView { node }, Event::View { failed, .. }) => {
                failed.iter().any(|m| m.node().0 == *node)
            }
            _ => false,
        }
    }
}

impl fmt::Display for RecordPat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordPat::StatefulMerge { node, action } => {
                write!(f, "stateful_merge of node {node} (action {action:?})")
            }
            RecordPat::FenceRequest { target, reason } => {
                write!(f, "fence_request for node {target} (reason {reason:?})")
            }
            RecordPat::FenceResult { target, ok, method } => {
                write!(f, "fence_result for node {target} ok={ok} (method {method:?})")
            }
            RecordPat::Recovered { node } => write!(f, "recovered listing node {node}"),
            RecordPat::RemovedSelf { node } => write!(f, "removed_self by node {node}"),
            RecordPat::SelfFence { node } => write!(f, "self_fence by node {node}"),
            RecordPat::StateReceived { node, group } => {
                write!(f, "state_transfer of {group} received by node {node}")
            }
            RecordPat::Blocked { node, reason } => write!(f, "blocked {reason:?} by node {node}"),
            RecordPat::Start { node, epoch } => write!(f, "start of node {node} epoch {epoch}"),
            RecordPat::AnyFenceRequest => write!(f, "any fence_request"),
            RecordPat::AnyRecovered => write!(f, "any recovered"),
            RecordPat::FailedInView { node } => write!(f, "a view listing node {node} as failed"),
        }
    }
}

/// A condition a scenario waits for or asserts.
#[derive(Clone, Debug, PartialEq)]
pub enum Cond {
    /// These nodes are in one primary view whose members are exactly these nodes.
    Primary(Vec<u32>),
    /// These nodes are up and not in a primary view.
    Blocked(Vec<u32>),
    /// L1 holds (see [`Sim::converged`]).
    Converged,
    /// A record matching the pattern exists.
    Record(RecordPat),
    /// The node is down.
    Down(u32),
    /// The node is up.
    Up(u32),
    /// The node's core knows it was removed.
    RemovedSelf(u32),
    /// Every node is down.
    AllDown,
    /// The node is up and not paused.
    Running(u32),
    /// One primary view of every running member, nobody blocked or changing views, every member in
    /// the main group (see [`Sim::settled`]).
    Settled,
    /// The node's core is in the middle of a view change.
    Changing(u32),
    /// Every running node other than this one is in a primary view without it.
    Excluded(u32),
}

impl fmt::Display for Cond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cond::Primary(ns) => write!(f, "nodes {ns:?} form a primary view by themselves"),
            Cond::Blocked(ns) => write!(f, "nodes {ns:?} are blocked outside any primary view"),
            Cond::Converged => write!(f, "all running members in one primary view (L1)"),
            Cond::Record(p) => write!(f, "a record: {p}"),
            Cond::Down(n) => write!(f, "node {n} is down"),
            Cond::Up(n) => write!(f, "node {n} is up"),
            Cond::RemovedSelf(n) => write!(f, "node {n} knows it was removed"),
            Cond::AllDown => write!(f, "every node is down"),
            Cond::Running(n) => write!(f, "node {n} is up and not paused"),
            Cond::Settled => write!(f, "the cluster is settled"),
            Cond::Changing(n) => write!(f, "node {n} is in a view change"),
            Cond::Excluded(n) => write!(f, "every other running node is in a primary view without node {n}"),
        }
    }
}

/// Why a condition does not hold (an explanation for the failure message), or `Ok`.
pub fn check(sim: &Sim, c: &Cond) -> Result<(), String> {
    match c {
        Cond::Primary(ns) => {
            let want: BTreeSet<u32> = ns.iter().copied().collect();
            let mut view: Option<View> = None;
            for &n in ns {
                let st = sim.status(n).ok_or(format!("node {n} is down"))?;
                let v = st.view.ok_or(format!("node {n} has no view"))?;
                if !v.primary {
                    return Err(format!(
                        "node {n} is in non-primary view {} {}",
                        v.id,
                        fmt_members(&v.members)
                    ));
                }
                if let Some(w) = &view {
                    if w.id != v.id {
                        return Err(format!("node {n} is in {} while others are in {}", v.id, w.id));
                    }
                }
                view = Some(v);
            }
            let v = view.ok_or("empty node list")?;
            let got: BTreeSet<u32> = v.members.iter().map(|m| m.node().0).collect();
            if got != want {
                return Err(format!("primary view {} has {}", v.id, fmt_members(&v.members)));
            }
            Ok(())
        }
        Cond::Blocked(ns) => {
            for &n in ns {
                let st = sim.status(n).ok_or(format!("node {n} is down"))?;
                if st.primary {
                    return Err(format!("node {n} is in primary view {:?}", st.view.map(|v| v.id)));
                }
                if st.blocked.is_empty() {
                    return Err(format!("node {n} is not primary but reports no block"));
                }
            }
            Ok(())
        }
        Cond::Converged => sim.converged().map(|_| ()),
        Cond::Record(p) => {
            if sim.log().iter().any(|r| p.matches(r)) {
                Ok(())
            } else {
                Err("no such record yet".into())
            }
        }
        Cond::Down(n) => {
            if sim.is_up(*n) {
                Err(format!("node {n} is up"))
            } else {
                Ok(())
            }
        }
        Cond::Up(n) => {
            if sim.is_up(*n) {
                Ok(())
            } else {
                Err(format!("node {n} is down"))
            }
        }
        Cond::Running(n) => {
            if sim.is_up(*n) && !sim.is_paused(*n) {
                Ok(())
            } else {
                Err(format!("node {n} is down or paused"))
            }
        }
        Cond::Settled => sim.settled(),
        Cond::AllDown => match (1..=sim.node_count()).find(|&n| sim.is_up(n)) {
            Some(n) => Err(format!("node {n} is up")),
            None => Ok(()),
        },
        Cond::RemovedSelf(n) => match sim.status(*n) {
            Some(st) if st.removed_self => Ok(()),
            Some(_) => Err(format!("node {n} does not know it was removed")),
            None => Err(format!("node {n} is down")),
        },
        Cond::Changing(n) => match sim.status(*n) {
            Some(st) if st.changing => Ok(()),
            _ => Err(format!("node {n} is not changing views")),
        },
        Cond::Excluded(x) => {
            for n in sim.running() {
                if n == *x {
                    continue;
                }
                let st = sim.status(n).ok_or("down")?;
                match st.view {
                    Some(v) if v.primary && v.members.iter().all(|m| m.node().0 != *x) => {}
                    Some(v) => {
                        return Err(format!("node {n} is in view {} {}", v.id, fmt_members(&v.members)))
                    }
                    None => return Err(format!("node {n} has no view")),
                }
            }
            Ok(())
        }
    }
}

/// One step of a scenario.
#[derive(Clone, Debug)]
pub enum Step {
    /// Boot these nodes (each with its disk epoch + 1).
    Start(Vec<u32>),
    /// Let time pass.
    Wait(u64),
    /// Wait until the condition holds; fail if it does not within this many milliseconds.
    WaitUntil(Cond, u64),
    /// Cut the links between these sides (unlisted nodes form one more side).
    Partition(Vec<Vec<u32>>),
    /// Cut the link from the first node to the second only.
    OneWay(u32, u32),
    /// Remove every partition and flapping link.
    Heal,
    /// Kill the node's process.
    Crash(u32),
    /// Restart the node's process with a new epoch (boot it if it is down).
    Restart(u32),
    /// Pause the node for this many milliseconds.
    Pause(u32, u64),
    /// Resume a paused node now.
    Resume(u32),
    /// Make a link go down and up every `period_ms` for `for_ms`.
    Flap {
        /// One end.
        a: u32,
        /// The other end.
        b: u32,
        /// Half a cycle.
        period_ms: u64,
        /// How long it flaps.
        for_ms: u64,
    },
    /// Set the loss probability.
    Loss(f64),
    /// Set the duplication probability.
    Dup(f64),
    /// Send `n` messages from the node's client to the main group now.
    Send {
        /// The sender.
        node: u32,
        /// How many.
        n: usize,
        /// Agreed or safe.
        delivery: Delivery,
    },
    /// The node's client joins a group.
    JoinGroup {
        /// The node.
        node: u32,
        /// The group.
        group: &'static str,
    },
    /// The node's client leaves a group.
    LeaveGroup {
        /// The node.
        node: u32,
        /// The group.
        group: &'static str,
    },
    /// Random client traffic on or off.
    Clients(bool),
    /// Change the fence agent's behaviour for failed members.
    SetFence(FenceBehaviour),
    /// The operator runs `cohort fence ack TARGET` on node `on`.
    FenceAck {
        /// Where the command runs.
        on: u32,
        /// The node acknowledged as fenced.
        target: u32,
    },
    /// Assert: these nodes form a primary view by themselves.
    AssertPrimary(Vec<u32>),
    /// Assert: these nodes are blocked outside any primary view.
    AssertBlocked(Vec<u32>),
    /// Assert: a member of this node was caught as a stateful merge.
    AssertStatefulMerge(u32),
    /// Assert: a record matching the pattern exists.
    AssertRecord(RecordPat),
    /// Assert: no record matches the pattern.
    AssertNoRecord(RecordPat),
    /// Assert: the node runs exactly this epoch.
    AssertEpoch(u32, u64),
    /// Assert: the node is down.
    AssertDown(u32),
    /// Assert: the node's client stopped because of the watchdog.
    AssertClientStopped(u32),
    /// L4: wait until the last crashed member of this node is out of every survivor's primary view; fail
    /// if that takes longer than the failure timeout plus one view change.
    ExpectDetection(u32),
    /// L4: wait until the cluster is one primary view; fail if that takes longer than the discovery
    /// interval plus one view change counted from the last heal.
    ExpectMerge,
    /// The liveness phase: heal, resume, boot everything, then L1, L3, L2 within their bounds.
    Liveness,
    /// Only the liveness checks (L1, L3, L2), without healing or booting anything.
    CheckLiveness,
    /// The node leaves the cluster cleanly (its agent exits once the view without it is installed, or
    /// after the leave deadline).
    Leave(u32),
    /// `systemctl stop` on these nodes, all at once: each leaves cleanly and stays down.
    Stop(Vec<u32>),
    /// `systemctl stop` on every node, in this order, `gap_ms` apart (0: all at once).
    StopAll {
        /// The order.
        order: Vec<u32>,
        /// The gap between two stops.
        gap_ms: u64,
    },
    /// `systemctl restart` on the node: a clean leave, the exit, and a start by the service manager.
    SystemctlRestart(u32),
    /// The operator wipes the data directory of the (down) node.
    WipeDisk(u32),
    /// The operator restores the newest backup of the (down) node's data directory holding this epoch.
    RestoreBackup(u32, u64),
    /// Assert something no other step expresses; the function explains what is wrong.
    Custom(&'static str, fn(&Sim) -> Result<(), String>),
    /// A line in the trace.
    Note(&'static str),
}

/// What a passing scenario measured.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Detection times (crash to exclusion everywhere), ms.
    pub detection_ms: Vec<u64>,
    /// Merge times (heal to one primary view), ms.
    pub merge_ms: Vec<u64>,
    /// Convergence time of the liveness phase, ms.
    pub convergence_ms: Option<u64>,
    /// Simulated time at the end.
    pub end_ms: u64,
    /// The simulator's counters.
    pub stats: crate::harness::SimStats,
    /// The checker's counters.
    pub checked: cohort::checker::CheckStats,
    /// The timeline, when the options asked for one.
    pub timeline: Vec<String>,
}

/// The seed to use: `COHORT_SEED` when set (replaying a failure), else the scenario's own.
pub fn seed_or(default: u64) -> u64 {
    std::env::var("COHORT_SEED").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(default)
}

/// Runs the steps; returns what was measured, or the first failure. Guarantees are checked after every
/// simulator step; the checks that need the whole history run at the end.
pub fn run(opts: SimOptions, steps: &[Step]) -> Result<(Report, Sim), Box<(Failure, Sim)>> {
    let mut sim = Sim::new(opts);
    let mut report = Report::default();
    for (i, step) in steps.iter().enumerate() {
        if sim.failed() {
            break;
        }
        run_step(&mut sim, i, step, &mut report);
    }
    sim.finish();
    report.end_ms = sim.now();
    report.stats = sim.stats;
    report.checked = sim.checker().stats();
    report.timeline = sim.timeline();
    match sim.failure.clone() {
        Some(f) => Err(Box::new((f, sim))),
        None => Ok((report, sim)),
    }
}

/// Runs the steps and panics with the full failure report when anything fails (for `#[test]`s).
pub fn run_or_panic(opts: SimOptions, steps: &[Step]) -> (Report, Sim) {
    match run(opts, steps) {
        Ok(r) => r,
        Err(b) => panic!("\n{}\n", b.0),
    }
}

fn fail_step(sim: &mut Sim, i: usize, step: &Step, why: String) {
    sim.fail("scenario", format!("step {i} {step:?}: {why}"));
}

fn run_step(sim: &mut Sim, i: usize, step: &Step, report: &mut Report) {
    let cfg = sim.cfg().clone();
    match step {
        Step::Start(ns) => {
            for &n in ns {
                sim.start(n);
            }
        }
        Step::Wait(ms) => sim.run_for(*ms),
        Step::WaitUntil(c, ms) => {
            let deadline = sim.now() + ms;
            let ok = sim.run_until_cond(deadline, 1, |s| check(s, c).is_ok());
            if !ok && !sim.failed() {
                let why = check(sim, c).err().unwrap_or_default();
                fail_step(sim, i, step, format!("`{c}` did not happen within {ms}ms: {why}"));
            }
        }
        Step::Partition(sides) => sim.partition(sides),
        Step::OneWay(a, b) => sim.one_way(*a, *b),
        Step::Heal => sim.heal(),
        Step::Crash(n) => sim.crash(*n, "scenario"),
        Step::Restart(n) => sim.restart(*n, "scenario: process restart"),
        Step::Pause(n, ms) => sim.pause(*n, *ms, "scenario"),
        Step::Resume(n) => sim.resume(*n),
        Step::Flap { a, b, period_ms, for_ms } => sim.flap(*a, *b, *period_ms, *for_ms),
        Step::Loss(p) => sim.set_loss(*p),
        Step::Dup(p) => sim.set_dup(*p),
        Step::Send { node, n, delivery } => {
            sim.send_burst(*node, *n, *delivery);
        }
        Step::JoinGroup { node, group } => sim.join_group(*node, group),
        Step::LeaveGroup { node, group } => sim.leave_group(*node, group),
        Step::Clients(on) => sim.set_clients(*on),
        Step::SetFence(b) => {
            sim.opts.fence = *b;
            sim.note(format!("fence agent now: {b}"));
        }
        Step::FenceAck { on, target } => sim.fence_ack(*on, *target),
        Step::AssertPrimary(ns) => assert_cond(sim, i, step, &Cond::Primary(ns.clone())),
        Step::AssertBlocked(ns) => assert_cond(sim, i, step, &Cond::Blocked(ns.clone())),
        Step::AssertStatefulMerge(n) => {
            assert_cond(sim, i, step, &Cond::Record(RecordPat::StatefulMerge { node: *n, action: None }))
        }
        Step::AssertRecord(p) => assert_cond(sim, i, step, &Cond::Record(p.clone())),
        Step::AssertNoRecord(p) => {
            if let Some(r) = sim.log().iter().find(|r| p.matches(r)).cloned() {
                fail_step(sim, i, step, format!("unexpected record: {}", crate::harness::fmt_record(&r)));
            }
        }
        Step::AssertEpoch(n, e) => match sim.member_of(*n) {
            Some(m) if m.epoch() == Epoch(*e) => {}
            other => fail_step(sim, i, step, format!("node {n} runs {:?}", other.map(fmt_member))),
        },
        Step::AssertDown(n) => assert_cond(sim, i, step, &Cond::Down(*n)),
        Step::AssertClientStopped(n) => {
            if !sim.client_stopped(*n) {
                fail_step(sim, i, step, format!("node {n}'s client is still acting"));
            }
        }
        Step::ExpectDetection(n) => {
            let bound = cfg.failure_timeout_ms + view_change_bound_ms(&cfg);
            let crashed = sim
                .log()
                .iter()
                .filter(|r| r.node.0 == *n)
                .map(|r| r.member())
                .filter_map(|m| sim.crashed_at(m))
                .max();
            let Some(t0) = crashed else {
                fail_step(sim, i, step, format!("node {n} was never crashed"));
                return;
            };
            let ok = sim.run_until_cond(t0 + bound, 1, |s| check(s, &Cond::Excluded(*n)).is_ok());
            if sim.failed() {
                return;
            }
            let took = sim.now() - t0;
            if !ok {
                let why = check(sim, &Cond::Excluded(*n)).err().unwrap_or_default();
                sim.fail("L4", format!("crash of node {n} not detected within {bound}ms (failure timeout + view change): {why}"));
                return;
            }
            sim.note(format!("L4: crash of node {n} detected everywhere after {took}ms (bound {bound}ms)"));
            report.detection_ms.push(took);
        }
        Step::ExpectMerge => {
            let bound = cfg.discovery_interval_ms + view_change_bound_ms(&cfg);
            let t0 = sim.healed_at.unwrap_or(sim.now());
            let ok = sim.run_until_cond(t0 + bound, 1, |s| s.converged().is_ok());
            if sim.failed() {
                return;
            }
            let took = sim.now() - t0;
            if !ok {
                let why = sim.converged().err().unwrap_or_default();
                sim.fail(
                    "L4",
                    format!("healed partition not merged within {bound}ms (discovery + view change): {why}"),
                );
                return;
            }
            sim.note(format!("L4: merged {took}ms after the heal (bound {bound}ms)"));
            report.merge_ms.push(took);
        }
        Step::Liveness => {
            sim.end_faults();
            liveness_checks(sim, report);
        }
        Step::CheckLiveness => liveness_checks(sim, report),
        Step::Leave(n) => sim.leave(*n),
        Step::Stop(ns) => {
            for &n in ns {
                sim.stop(n, false);
            }
        }
        Step::StopAll { order, gap_ms } => sim.stop_all(order, (*gap_ms, *gap_ms)),
        Step::SystemctlRestart(n) => sim.stop(*n, true),
        Step::WipeDisk(n) => {
            if sim.is_up(*n) {
                fail_step(sim, i, step, format!("node {n} is up; wipe a stopped node"));
            } else {
                sim.wipe_disk(*n);
            }
        }
        Step::RestoreBackup(n, e) => {
            if sim.is_up(*n) {
                fail_step(sim, i, step, format!("node {n} is up; restore a stopped node"));
            } else if !sim.restore_backup(*n, Epoch(*e)) {
                fail_step(sim, i, step, format!("node {n} has no backup holding epoch {e}"));
            }
        }
        Step::Custom(what, f) => {
            if let Err(why) = f(sim) {
                fail_step(sim, i, step, format!("{what}: {why}"));
            }
        }
        Step::Note(s) => sim.note((*s).to_string()),
    }
}

fn assert_cond(sim: &mut Sim, i: usize, step: &Step, c: &Cond) {
    if let Err(why) = check(sim, c) {
        fail_step(sim, i, step, why);
    }
}

/// L1 within the convergence bound (and L3's resolution), then L3's final state, then L2.
pub fn liveness_checks(sim: &mut Sim, report: &mut Report) {
    let bound = convergence_bound_ms(sim.cfg());
    let Some((_, took)) = sim.await_convergence(bound) else { return };
    report.convergence_ms = Some(took);
    if !sim.check_merges_resolved() {
        return;
    }
    sim.final_round(3, 3000);
}

/// The seed story: five nodes, partition {1,2} | {3,4,5}. The majority installs a primary view without
/// 1 and 2 and fences them with a fence agent that only pauses them, so they come back later as zombies
/// with their old state; the minority blocks (no quorum). After the heal the zombies' stateful merge is
/// caught and resolved by `policy`; nodes 1 and 2 rejoin with higher epochs, receive the group state, and
/// all five converge. With policy `wait` an operator acknowledges the fence and restarts them.
pub fn seed_story(policy: MergePolicy, seed: u64) -> (SimOptions, Vec<Step>) {
    let mut o = SimOptions::new(seed, 5);
    o.cfg.merge_policy = policy;
    o.fence = FenceBehaviour::Pause(600);
    // The fence device takes a while, long enough for the minority to settle in its own non-primary
    // view first: the zombies then wake in that view and confirm it with each other (G13), which is the
    // story told here. (A zombie paused before it settled wakes unconfirmed and self-fences instead: the
    // fixed scenarios of G13 show that.)
    o.fence_delay_ms = (250, 300);
    // A second fence of a zombie (policy `fence`) is a real power-cycle.
    o.merge_fence = FenceBehaviour::Kill;
    o.reboot_after_kill_ms = Some(200);
    let mut steps = vec![
        Step::Note("the seed story: partition 2|3, the majority fences the minority, heal, stateful merge"),
        Step::Start(vec![1, 2, 3, 4, 5]),
        Step::WaitUntil(Cond::Primary(vec![1, 2, 3, 4, 5]), 2000),
        Step::Wait(300),
        Step::Partition(vec![vec![1, 2], vec![3, 4, 5]]),
        Step::WaitUntil(Cond::Primary(vec![3, 4, 5]), 1500),
        Step::WaitUntil(Cond::Blocked(vec![1, 2]), 1000),
        Step::AssertRecord(RecordPat::Blocked { node: 1, reason: BlockReason::NoQuorum }),
        Step::WaitUntil(
            Cond::Record(RecordPat::FenceResult { target: 1, ok: true, method: Some(FenceMethod::Agent) }),
            1000,
        ),
        Step::WaitUntil(
            Cond::Record(RecordPat::FenceResult { target: 2, ok: true, method: Some(FenceMethod::Agent) }),
            1000,
        ),
        Step::WaitUntil(Cond::Record(RecordPat::Recovered { node: 1 }), 1000),
        Step::WaitUntil(Cond::Record(RecordPat::Recovered { node: 2 }), 1000),
        Step::AssertPrimary(vec![3, 4, 5]),
        // The "fenced" nodes were only paused: they resume with their old state, still cut off.
        Step::Wait(800),
        Step::AssertEpoch(1, 1),
        Step::AssertEpoch(2, 1),
        Step::AssertBlocked(vec![1, 2]),
        Step::Heal,
        Step::WaitUntil(Cond::Record(RecordPat::StatefulMerge { node: 1, action: None }), 1000),
        Step::WaitUntil(Cond::Record(RecordPat::StatefulMerge { node: 2, action: None }), 1000),
        Step::WaitUntil(Cond::Record(RecordPat::RemovedSelf { node: 1 }), 1000),
        Step::WaitUntil(Cond::Record(RecordPat::RemovedSelf { node: 2 }), 1000),
    ];
    match policy {
        // Every primary member that hears a zombie refuses it and tells it the policy's action; the
        // zombie obeys the first such notice. The view's leader logs `kill` only if it heard the zombie
        // before that: which member hears it first is timing. The resolution itself is what L3 asks for:
        // each zombie's node comes back as a new member.
        MergePolicy::Restart | MergePolicy::Reset => {
            steps.push(Step::WaitUntil(Cond::Record(RecordPat::Start { node: 1, epoch: 2 }), 1000));
            steps.push(Step::WaitUntil(Cond::Record(RecordPat::Start { node: 2, epoch: 2 }), 1000));
        }
        // The leader alone fences, or waits for the operator, and logs that action: a zombie told by
        // another member keeps heartbeating until then, so the leader always hears it.
        MergePolicy::Fence | MergePolicy::Wait => {
            let action = if policy == MergePolicy::Fence { MergeAction::Fence } else { MergeAction::Wait };
            steps.push(Step::WaitUntil(
                Cond::Record(RecordPat::StatefulMerge { node: 1, action: Some(action) }),
                1000,
            ));
            steps.push(Step::WaitUntil(
                Cond::Record(RecordPat::StatefulMerge { node: 2, action: Some(action) }),
                1000,
            ));
        }
    }
    if policy == MergePolicy::Fence {
        steps.push(Step::WaitUntil(
            Cond::Record(RecordPat::FenceRequest { target: 1, reason: Some("stateful_merge") }),
            1000,
        ));
    }
    if policy == MergePolicy::Wait {
        // The zombies stay refused and say so; the operator acknowledges and restarts them.
        steps.extend([
            Step::Wait(1000),
            Step::AssertEpoch(1, 1),
            Step::AssertEpoch(2, 1),
            Step::AssertRecord(RecordPat::Blocked { node: 1, reason: BlockReason::StatefulMergeWait }),
            Step::AssertRecord(RecordPat::Blocked { node: 2, reason: BlockReason::StatefulMergeWait }),
            Step::AssertPrimary(vec![3, 4, 5]),
            Step::FenceAck { on: 3, target: 1 },
            Step::FenceAck { on: 3, target: 2 },
            Step::Restart(1),
            Step::Restart(2),
        ]);
    }
    steps.extend([
        // `Converged` alone would hold as soon as 3, 4 and 5 agree, since members that know they were
        // removed do not count for L1: wait for all five instead.
        Step::WaitUntil(Cond::Primary(vec![1, 2, 3, 4, 5]), 3000),
        Step::AssertRecord(RecordPat::RemovedSelf { node: 1 }),
        Step::WaitUntil(Cond::Record(RecordPat::StateReceived { node: 1, group: MAIN_GROUP }), 2000),
        Step::WaitUntil(Cond::Record(RecordPat::StateReceived { node: 2, group: MAIN_GROUP }), 2000),
        Step::AssertRecord(RecordPat::Start { node: 1, epoch: 2 }),
        Step::AssertRecord(RecordPat::Start { node: 2, epoch: 2 }),
        Step::AssertEpoch(3, 1),
        Step::AssertEpoch(4, 1),
        Step::AssertEpoch(5, 1),
        Step::CheckLiveness,
    ]);
    (o, steps)
}
