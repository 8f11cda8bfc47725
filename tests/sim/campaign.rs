//! Random runs: one seed draws a cluster's parameters (merge policy, fence agent, fencing mode) and a
//! safety phase of random faults, then the liveness phase stops the faults and checks L1, L3 and L2.
//!
//! Used by the `random` tests and by `examples/sim.rs`. One run is a few simulated seconds, so that a
//! thousand five-node runs with every fault take well under five minutes on two cores.
#![allow(dead_code)]

use crate::harness::{
    convergence_bound_ms, sim_config, Failure, FaultKinds, FenceBehaviour, Sim, SimOptions, SimStats,
};
use cohort::{FencingMode, MergePolicy};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What a campaign varies and what it keeps fixed.
#[derive(Clone, Debug)]
pub struct CampaignOptions {
    /// Cluster size.
    pub nodes: u32,
    /// Fault kinds the injector may use.
    pub faults: FaultKinds,
    /// A fixed merge policy, or `None` to draw one per seed.
    pub policy: Option<MergePolicy>,
    /// Length of the safety phase (faults on).
    pub safety_ms: u64,
    /// Range of the gap between two random faults.
    pub fault_gap_ms: (u64, u64),
    /// Slower timings for big clusters (the 64-node scale run).
    pub scale: bool,
    /// Print every trace line.
    pub verbose: bool,
    /// The replay command printed after `COHORT_SEED=<seed>`.
    pub replay_hint: String,
}

impl CampaignOptions {
    /// Five nodes, every fault, a mixed policy, three seconds of faults.
    pub fn standard() -> CampaignOptions {
        CampaignOptions {
            nodes: 5,
            faults: FaultKinds::all(),
            policy: None,
            safety_ms: 3000,
            fault_gap_ms: (80, 400),
            scale: false,
            verbose: false,
            replay_hint: "cargo test --test sim -- random::replay_seed --exact --nocapture".into(),
        }
    }
}

/// What one passing run did.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// The merge policy drawn.
    pub policy: MergePolicy,
    /// The fence agent drawn.
    pub fence: FenceBehaviour,
    /// Watchdog fencing instead of agents.
    pub watchdog: bool,
    /// Simulated time at the end.
    pub sim_ms: u64,
    /// From the end of the faults to one primary view.
    pub convergence_ms: u64,
    /// The simulator's counters.
    pub stats: SimStats,
    /// The checker's counters.
    pub checked: cohort::checker::CheckStats,
}

/// The parameters one seed draws, from the one generator of the run.
fn draw(seed: u64, o: &CampaignOptions) -> (SimOptions, ChaCha8Rng) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut so = SimOptions::new(seed, o.nodes);
    if o.scale {
        so.cfg = sim_config(o.nodes);
        so.cfg.heartbeat_interval_ms = 50;
        so.cfg.failure_timeout_ms = 600;
        so.cfg.discovery_interval_ms = 300;
        so.cfg.view_change_timeout_ms = 400;
        so.cfg.retransmit_interval_ms = 50;
        so.client.gap_ms = (100, 400);
    }
    so.cfg.merge_policy = o.policy.unwrap_or_else(|| {
        [MergePolicy::Fence, MergePolicy::Restart, MergePolicy::Reset, MergePolicy::Wait][rng.gen_range(0..4)]
    });
    so.fence = match rng.gen_range(0..20) {
        0..=7 => FenceBehaviour::Kill,
        8..=14 => FenceBehaviour::Pause(rng.gen_range(200..=1200)),
        _ => FenceBehaviour::Flaky(0.3),
    };
    so.reboot_after_kill_ms = Some(rng.gen_range(100..=600));
    if !o.scale && rng.gen_bool(0.15) {
        so.cfg.fencing = FencingMode::Watchdog;
        so.cfg.self_fence_after_ms = 300;
        so.cfg.watchdog_wait_ms = 700;
    }
    so.net.loss = [0.0, 0.01, 0.03][rng.gen_range(0..3)];
    so.verbose = o.verbose;
    so.replay_hint = o.replay_hint.clone();
    (so, rng)
}

/// One random run: safety phase with faults, then the liveness phase. Every guarantee is checked after
/// every step; the first violation is returned with its trace.
pub fn run_random(seed: u64, o: &CampaignOptions) -> Result<RunReport, Box<Failure>> {
    let (so, rng) = draw(seed, o);
    let (policy, fence, watchdog) = (so.cfg.merge_policy, so.fence, so.cfg.fencing == FencingMode::Watchdog);
    let mut sim = Sim::with_rng(so, rng);
    sim.note(format!(
        "random run: {} nodes, policy {}, fence agent {fence}, fencing {}, faults {}",
        o.nodes,
        policy.name(),
        if watchdog { "watchdog" } else { "agent" },
        o.faults
    ));
    // Nodes boot within the first 50 ms, in an order the seed decides.
    for n in 1..=o.nodes {
        let at = sim.rng().gen_range(0..=50);
        sim.start_at(n, at);
    }
    sim.run_until(200);
    sim.start_faults(o.faults, o.fault_gap_ms);
    sim.run_until(200 + o.safety_ms);
    let outcome = (|| {
        if sim.failed() {
            return None;
        }
        sim.end_faults();
        let bound = convergence_bound_ms(sim.cfg());
        let (_, took) = sim.await_convergence(bound)?;
        if !sim.check_merges_resolved() {
            return None;
        }
        if !sim.final_round(3, 3000) {
            return None;
        }
        if !sim.finish() {
            return None;
        }
        Some(took)
    })();
    match (outcome, sim.failure.take()) {
        (Some(took), None) => Ok(RunReport {
            seed,
            policy,
            fence,
            watchdog,
            sim_ms: sim.now(),
            convergence_ms: took,
            stats: sim.stats,
            checked: sim.checker().stats(),
        }),
        (_, Some(f)) => Err(Box::new(f)),
        (None, None) => {
            // Every path that returns early records a failure first; this is a harness bug if reached.
            sim.fail("harness", "the run stopped without a recorded failure".into());
            Err(Box::new(sim.failure.take().unwrap_or_else(|| unreachable_failure(seed))))
        }
    }
}

fn unreachable_failure(seed: u64) -> Failure {
    Failure {
        seed,
        guarantee: "harness".into(),
        detail: "no failure recorded".into(),
        at_ms: 0,
        trace: Vec::new(),
        replay: String::new(),
    }
}
