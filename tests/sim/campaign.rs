//! Random runs: one seed draws a cluster's parameters (merge policy, fence agent, fencing mode) and a
//! safety phase of random faults, then the liveness phase stops the faults and checks L1, L3 and L2.
//!
//! Used by the `random` tests and by `examples/sim.rs`. One run is a few simulated seconds, so that a
//! thousand five-node runs with every fault take well under five minutes on two cores.
#![allow(dead_code)]

use crate::harness::{
    convergence_bound_ms, sim_config, Failure, FaultKinds, FenceBehaviour, ServiceManager, Sim, SimOptions,
    SimStats,
};
use cohort::{FencingMode, MergePolicy};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The events of the world agents live in that a campaign may draw, besides the network and process
/// faults of [`FaultKinds`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorldKinds {
    /// Half of the seeds run their agents under a service manager (`Restart=always`) with a drawn delay.
    pub service: bool,
    /// Some of those seeds also find a node's data directory wiped or restored from an older backup
    /// when the service manager starts it again.
    pub disk: bool,
    /// Half of the seeds also stop random subsets of nodes cleanly (`systemctl stop` or `restart`).
    pub stop: bool,
    /// A third of the seeds stop the whole cluster cleanly once (random order, all at once or spread
    /// out) and cold-start it; the cold start must request no fence and announce no `recovered` (L6).
    pub stopall: bool,
}

impl WorldKinds {
    /// None of them (the campaigns before issue 9).
    pub fn none() -> WorldKinds {
        WorldKinds { service: false, disk: false, stop: false, stopall: false }
    }
    /// All of them.
    pub fn all() -> WorldKinds {
        WorldKinds { service: true, disk: true, stop: true, stopall: true }
    }
    /// Parses `all`, `none` or a comma-separated list of `service,disk,stop,stopall`.
    pub fn parse(s: &str) -> Result<WorldKinds, String> {
        match s {
            "all" => return Ok(WorldKinds::all()),
            "none" => return Ok(WorldKinds::none()),
            _ => {}
        }
        let mut w = WorldKinds::none();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "service" => w.service = true,
                "disk" => {
                    w.service = true;
                    w.disk = true
                }
                "stop" => w.stop = true,
                "stopall" => w.stopall = true,
                other => {
                    return Err(format!(
                        "unknown world event `{other}`: expected all, none, or a list of service,disk,stop,stopall"
                    ))
                }
            }
        }
        Ok(w)
    }
}

impl std::fmt::Display for WorldKinds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut v = Vec::new();
        for (on, name) in
            [(self.service, "service"), (self.disk, "disk"), (self.stop, "stop"), (self.stopall, "stopall")]
        {
            if on {
                v.push(name);
            }
        }
        match v.len() {
            0 => write!(f, "none"),
            4 => write!(f, "all"),
            _ => write!(f, "{}", v.join(",")),
        }
    }
}

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
    /// World events (service manager, disks, clean stops, whole-cluster stops) the seeds may draw.
    pub world: WorldKinds,
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
            world: WorldKinds::none(),
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
    /// The run class: which world events the seed drew (`plain` when none).
    pub class: String,
    /// Simulated time at the end.
    pub sim_ms: u64,
    /// From the end of the faults to one primary view.
    pub convergence_ms: u64,
    /// The simulator's counters.
    pub stats: SimStats,
    /// The checker's counters.
    pub checked: cohort::checker::CheckStats,
}

/// What one seed drew besides its [`SimOptions`].
struct Drawn {
    /// The injector also stops nodes cleanly.
    stops: bool,
    /// When (into the safety phase) the whole cluster stops cleanly and cold-starts.
    stopall_at: Option<u64>,
    /// The run class.
    class: String,
}

/// The run class of a seed: which world events it drew (`plain` when none), e.g. `service+disk+stops`.
pub fn class_of(seed: u64, o: &CampaignOptions) -> String {
    draw(seed, o).2.class
}

/// The parameters one seed draws, from the one generator of the run.
fn draw(seed: u64, o: &CampaignOptions) -> (SimOptions, ChaCha8Rng, Drawn) {
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
    // World events are drawn only when enabled, so campaigns without them draw what they drew before.
    let w = o.world;
    let mut class: Vec<&str> = Vec::new();
    if w.service && rng.gen_bool(0.5) {
        let lo = rng.gen_range(20..=200);
        let hi = rng.gen_range(lo..=1500);
        let mut svc = ServiceManager {
            delay_ms: (lo, hi),
            after_clean_exit: rng.gen_bool(0.7),
            ..ServiceManager::always()
        };
        class.push("service");
        if w.disk && rng.gen_bool(0.4) {
            svc.wipe_ratio = 0.1;
            svc.backup_ratio = 0.1;
            class.push("disk");
        }
        so.service = Some(svc);
    }
    let stops = w.stop && rng.gen_bool(0.5);
    if stops {
        class.push("stops");
    }
    let stopall_at =
        if w.stopall && rng.gen_bool(0.3) { Some(rng.gen_range(0..=o.safety_ms / 2)) } else { None };
    if stopall_at.is_some() {
        class.push("stopall");
    }
    let class = if class.is_empty() { "plain".to_string() } else { class.join("+") };
    (so, rng, Drawn { stops, stopall_at, class })
}

/// The whole cluster stops cleanly and cold-starts, in the middle of a safety phase: the faults pause
/// (heal, resume, boot every node), the cluster converges and settles, every node gets `systemctl stop`
/// in a random order (all at once or up to 300 ms apart), and once every node is down they all start
/// again within 50 ms. The harness checks L6 on every record meanwhile: no clean leaver failed, fenced
/// or recovered, and no fence request or `recovered` at all in the cold start. Returns false when a
/// violation stopped the run.
fn whole_cluster_stop_and_cold_start(sim: &mut Sim) -> bool {
    sim.end_faults();
    let bound = convergence_bound_ms(sim.cfg());
    if sim.await_convergence(bound).is_none() {
        return false;
    }
    let t = sim.now();
    sim.run_until_cond(t + 3000, 5, |s| s.settled().is_ok());
    if sim.failed() {
        return false;
    }
    let n = sim.node_count();
    let mut order: Vec<u32> = (1..=n).collect();
    for i in (1..order.len()).rev() {
        let j = sim.rng().gen_range(0..=i);
        order.swap(i, j);
    }
    let gaps = if sim.rng().gen_bool(0.3) { (0, 0) } else { (0, 300) };
    sim.stop_all(&order, gaps);
    let deadline = sim.now() + u64::from(n) * 300 + 3 * sim.cfg().failure_timeout_ms;
    let down = sim.run_until_cond(deadline, 5, |s| (1..=s.node_count()).all(|x| !s.is_up(x)));
    if sim.failed() {
        return false;
    }
    if !down {
        sim.note("not every node is down after the whole-cluster stop; starting the rest anyway".into());
    }
    let pause = sim.rng().gen_range(100..=1000);
    sim.run_for(pause);
    let now = sim.now();
    for x in 1..=n {
        let at = now + sim.rng().gen_range(0..=50);
        sim.start_at(x, at);
    }
    if sim.await_convergence(bound).is_none() {
        return false;
    }
    sim.run_for(500);
    !sim.failed()
}

/// One random run: safety phase with faults, then the liveness phase. Every guarantee is checked after
/// every step; the first violation is returned with its trace.
pub fn run_random(seed: u64, o: &CampaignOptions) -> Result<RunReport, Box<Failure>> {
    let (so, rng, drawn) = draw(seed, o);
    let (policy, fence, watchdog) = (so.cfg.merge_policy, so.fence, so.cfg.fencing == FencingMode::Watchdog);
    let service = so.service.clone();
    let mut sim = Sim::with_rng(so, rng);
    sim.random_stops = drawn.stops;
    sim.note(format!(
        "random run: {} nodes, policy {}, fence agent {fence}, fencing {}, faults {}, class {}, service manager {:?}",
        o.nodes,
        policy.name(),
        if watchdog { "watchdog" } else { "agent" },
        o.faults,
        drawn.class,
        service
    ));
    // Nodes boot within the first 50 ms, in an order the seed decides.
    for n in 1..=o.nodes {
        let at = sim.rng().gen_range(0..=50);
        sim.start_at(n, at);
    }
    sim.run_until(200);
    sim.start_faults(o.faults, o.fault_gap_ms);
    match drawn.stopall_at {
        Some(at) => {
            sim.run_until(200 + at);
            if !sim.failed() && whole_cluster_stop_and_cold_start(&mut sim) {
                sim.start_faults(o.faults, o.fault_gap_ms);
                let t = sim.now() + o.safety_ms - at;
                sim.run_until(t);
            }
        }
        None => sim.run_until(200 + o.safety_ms),
    }
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
            class: drawn.class,
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
