//! `cargo run --release --example sim -- [OPTIONS]`: long random campaigns of the deterministic
//! simulator, and the seed story with a readable timeline.
//!
//! This is a thin command line over the simulator that the `sim` integration test uses
//! (`tests/sim/harness.rs`, `scenario.rs`, `campaign.rs`, included here by path so both share one copy).
//! Arguments are parsed by hand: the core crate has no command-line dependency. Run with `--help`.

#[path = "../tests/sim/campaign.rs"]
mod campaign;
#[path = "../tests/sim/harness.rs"]
mod harness;
#[path = "../tests/sim/scenario.rs"]
mod scenario;

use campaign::{class_of, run_random, CampaignOptions, WorldKinds};
use cohort::MergePolicy;
use harness::{Failure, FaultKinds};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HELP: &str = "\
cohort sim: the deterministic cluster simulator

Every run puts N protocol cores (cohort::Node) on a simulated network driven by ONE seed: message
delays, loss, duplication, partitions, crashes, restarts and pauses all come from it, so a seed
replays exactly. A random run has a safety phase (random faults for a few simulated seconds, every
guarantee G1-G13 checked after every step) and a liveness phase (faults off: the cluster must become
one primary view (L1), stateful merges must be resolved (L3), and messages sent then must reach every
member (L2)). The first violation stops the campaign and prints the seed, the guarantee, the last
events one per line, and the command that replays it.

USAGE
    cargo run --release --example sim -- [OPTIONS]

CAMPAIGN OPTIONS
    --seeds A..B      run seeds A through B, both included (default 1..1000); a single number runs one
                      seed; A..=B is accepted too
    --nodes N         cluster size (default 5; 3, 5, 7, 9 and 16 routinely, 64 with --scale)
    --faults KINDS    all (default), none, or a comma list of net,partition,oneway,flap,crash,pause
    --world KINDS     world events the seeds may draw: none (default), all, or a comma list of
                      service (a service manager restarts exited agents, half of the seeds),
                      disk (with service: some restarts find the data directory wiped or an older
                      backup restored), stop (clean stops of random subsets, half of the seeds),
                      stopall (a whole-cluster clean stop and cold start, a third of the seeds)
    --policy P        merge policy fence, restart, reset, wait, or mixed (default: each seed draws one)
    --safety-ms MS    length of the safety phase (faults on) in simulated ms (default 3000)
    --threads N       worker threads (default 2)
    --scale           slower timings for big clusters (use with --nodes 64)
    --verbose         print one line per finished run
    --keep-going      do not stop at the first violation: print one line per violating seed, count
                      them, and show the lowest failing seed in full at the end
    --trace           print every event of every run as it happens (use with one seed)

STORY
    --story           run the seed story (5 nodes, partition {1,2}|{3,4,5}, the majority fences the
                      minority with an agent that only pauses it, heal, the zombies' stateful merge is
                      caught and resolved) and print its timeline; --policy picks the merge policy
                      (default fence), --seeds N the seed (default 1)

EXAMPLES
    cargo run --release --example sim -- --seeds 1..5000 --nodes 5 --faults all
    cargo run --release --example sim -- --seeds 8817000..8817300 --nodes 9 --safety-ms 10000 --world all --keep-going
    cargo run --release --example sim -- --seeds 4242 --trace          # replay one seed, every event
    cargo run --release --example sim -- --faults partition,pause --policy wait --verbose
    cargo run --release --example sim -- --story --policy restart

EXIT STATUS
    0 when every run passed, 1 on the first violation, 2 on a bad argument.
";

#[derive(Debug)]
struct Args {
    from: u64,
    to: u64,
    seeds_given: bool,
    nodes: u32,
    faults: FaultKinds,
    world: WorldKinds,
    policy: Option<MergePolicy>,
    safety_ms: u64,
    threads: usize,
    scale: bool,
    verbose: bool,
    keep_going: bool,
    trace: bool,
    story: bool,
}

fn parse_policy(s: &str) -> Result<Option<MergePolicy>, String> {
    Ok(match s {
        "fence" => Some(MergePolicy::Fence),
        "restart" => Some(MergePolicy::Restart),
        "reset" => Some(MergePolicy::Reset),
        "wait" => Some(MergePolicy::Wait),
        "mixed" => None,
        other => return Err(format!("--policy {other}: expected fence, restart, reset, wait or mixed")),
    })
}

fn parse_seeds(s: &str) -> Result<(u64, u64), String> {
    let bad = || format!("--seeds {s}: expected a seed (42) or an inclusive range (1..5000)");
    if let Some((a, b)) = s.split_once("..") {
        let b = b.strip_prefix('=').unwrap_or(b);
        let a: u64 = a.trim().parse().map_err(|_| bad())?;
        let b: u64 = b.trim().parse().map_err(|_| bad())?;
        if b < a {
            return Err(format!("--seeds {s}: the range is empty (the end is below the start)"));
        }
        Ok((a, b))
    } else {
        let a: u64 = s.trim().parse().map_err(|_| bad())?;
        Ok((a, a))
    }
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut a = Args {
        from: 1,
        to: 1000,
        seeds_given: false,
        nodes: 5,
        faults: FaultKinds::all(),
        world: WorldKinds::none(),
        policy: None,
        safety_ms: 3000,
        threads: 2,
        scale: false,
        verbose: false,
        keep_going: false,
        trace: false,
        story: false,
    };
    let mut policy_given = false;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value (see --help)"));
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--seeds" => {
                let (f, t) = parse_seeds(&value("--seeds")?)?;
                a.from = f;
                a.to = t;
                a.seeds_given = true;
            }
            "--nodes" => {
                let v = value("--nodes")?;
                a.nodes =
                    v.parse().map_err(|_| format!("--nodes {v}: expected a number of nodes from 2 to 64"))?;
                if !(2..=64).contains(&a.nodes) {
                    return Err(format!("--nodes {v}: expected a number of nodes from 2 to 64"));
                }
            }
            "--faults" => {
                a.faults = FaultKinds::parse(&value("--faults")?).map_err(|e| format!("--faults: {e}"))?
            }
            "--world" => {
                a.world = WorldKinds::parse(&value("--world")?).map_err(|e| format!("--world: {e}"))?
            }
            "--policy" => {
                a.policy = parse_policy(&value("--policy")?)?;
                policy_given = true;
            }
            "--safety-ms" => {
                let v = value("--safety-ms")?;
                a.safety_ms = v.parse().map_err(|_| format!("--safety-ms {v}: expected milliseconds"))?;
            }
            "--threads" => {
                let v = value("--threads")?;
                a.threads = v.parse().map_err(|_| format!("--threads {v}: expected a positive number"))?;
                if a.threads == 0 {
                    return Err("--threads 0: expected a positive number".into());
                }
            }
            "--scale" => a.scale = true,
            "--verbose" => a.verbose = true,
            "--keep-going" => a.keep_going = true,
            "--trace" => a.trace = true,
            "--story" => a.story = true,
            other => return Err(format!("unknown argument `{other}` (see --help)")),
        }
    }
    if a.story && !policy_given {
        a.policy = Some(MergePolicy::Fence);
    }
    if a.story && !a.seeds_given {
        a.from = 1;
        a.to = 1;
    }
    Ok(Some(a))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.story {
        story(&args)
    } else {
        campaign(&args)
    }
}

/// The seed story, printed as a timeline.
fn story(args: &Args) -> ExitCode {
    let policy = args.policy.unwrap_or(MergePolicy::Fence);
    let (mut opts, steps) = scenario::seed_story(policy, args.from);
    opts.timeline = true;
    opts.verbose = args.trace;
    opts.replay_hint = format!(
        "cargo run --release --example sim -- --story --trace --policy {} --seeds {{seed}}",
        policy.name()
    );
    println!(
        "cohort seed story (seed {}, merge policy {}, fence agent {})",
        args.from,
        policy.name(),
        opts.fence
    );
    println!("5 nodes; partition {{1,2}} | {{3,4,5}}; the fence agent only pauses its targets, so they come back as zombies\n");
    match scenario::run(opts, &steps) {
        Ok((report, _)) => {
            for l in &report.timeline {
                println!("{l}");
            }
            let c = report.checked;
            println!(
                "\nverdict: every guarantee held.\n  safety: G1-G13 checked after every step ({} views, {} of them primary, {} deliveries, \
                 {} stateful-merge records, {} successful fences, {} recovered records)\n  liveness: L1 all five in one primary \
                 view, L3 every stateful merge resolved by policy {}, L2 the final messages delivered by every member",
                c.views,
                c.primary_views,
                c.deliveries,
                c.stateful_merges,
                c.fences,
                c.recovered,
                policy.name()
            );
            ExitCode::SUCCESS
        }
        Err(b) => {
            let (failure, sim) = *b;
            for l in sim.timeline() {
                println!("{l}");
            }
            println!("\nverdict: FAILED\n{failure}");
            ExitCode::from(1)
        }
    }
}

/// Figures of one run class (which world events the seeds drew).
#[derive(Default)]
struct ClassFigures {
    runs: u64,
    by_guarantee: BTreeMap<String, u64>,
    worst_convergence_ms: u64,
    /// The lowest failing seed and its replay command.
    lowest: Option<(u64, String)>,
}

/// A random campaign over a range of seeds on worker threads sharing one seed counter.
fn campaign(args: &Args) -> ExitCode {
    let total = (args.to - args.from).saturating_add(1);
    let mut o = CampaignOptions::standard();
    o.nodes = args.nodes;
    o.faults = args.faults;
    o.world = args.world;
    o.policy = args.policy;
    o.safety_ms = args.safety_ms;
    o.scale = args.scale;
    o.verbose = args.trace;
    let mut hint = format!(
        "cargo run --release --example sim -- --nodes {} --faults {} --world {} --policy {} --safety-ms {}",
        args.nodes,
        args.faults,
        args.world,
        args.policy.map_or("mixed", |p| p.name()),
        args.safety_ms
    );
    if args.scale {
        hint.push_str(" --scale");
    }
    hint.push_str(" --trace --threads 1 --seeds {seed}");
    o.replay_hint = hint;
    println!(
        "cohort sim: seeds {}..{} ({total} runs), {} nodes, faults {}, world {}, policy {}, safety phase {} ms, {} threads",
        args.from,
        args.to,
        args.nodes,
        args.faults,
        args.world,
        args.policy.map_or("mixed", |p| p.name()),
        args.safety_ms,
        args.threads
    );
    let o = Arc::new(o);
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let worst_convergence = Arc::new(AtomicU64::new(0));
    let sim_ms = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let failure: Arc<Mutex<Option<Failure>>> = Arc::new(Mutex::new(None));
    let start = Instant::now();
    let verbose = args.verbose;
    let keep_going = args.keep_going;
    let violations = Arc::new(AtomicU64::new(0));
    let from = args.from;
    let classes: Arc<Mutex<BTreeMap<String, ClassFigures>>> = Arc::new(Mutex::new(BTreeMap::new()));
    let workers: Vec<_> = (0..args.threads)
        .map(|_| {
            let violations = Arc::clone(&violations);
            let classes = Arc::clone(&classes);
            let (o, next, done, worst, sim_ms, stop, failure) = (
                Arc::clone(&o),
                Arc::clone(&next),
                Arc::clone(&done),
                Arc::clone(&worst_convergence),
                Arc::clone(&sim_ms),
                Arc::clone(&stop),
                Arc::clone(&failure),
            );
            std::thread::spawn(move || loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let seed = from + i;
                let result = run_random(seed, &o);
                if let Ok(mut c) = classes.lock() {
                    let class = match &result {
                        Ok(r) => r.class.clone(),
                        Err(_) => class_of(seed, &o),
                    };
                    let f = c.entry(class).or_default();
                    f.runs += 1;
                    match &result {
                        Ok(r) => f.worst_convergence_ms = f.worst_convergence_ms.max(r.convergence_ms),
                        Err(e) => {
                            *f.by_guarantee.entry(e.guarantee.clone()).or_default() += 1;
                            if f.lowest.as_ref().is_none_or(|(s, _)| seed < *s) {
                                f.lowest = Some((seed, e.replay.clone()));
                            }
                        }
                    }
                }
                match result {
                    Ok(r) => {
                        worst.fetch_max(r.convergence_ms, Ordering::Relaxed);
                        sim_ms.fetch_add(r.sim_ms, Ordering::Relaxed);
                        done.fetch_add(1, Ordering::Relaxed);
                        if verbose {
                            println!(
                                "seed {seed}: ok (policy {}, fence agent {}{}, {} ms simulated, converged {} ms after the faults, \
                                 {} sends, {} deliveries, {} views, {} stateful merges, {} faults)",
                                r.policy.name(),
                                r.fence,
                                if r.watchdog { ", watchdog fencing" } else { "" },
                                r.sim_ms,
                                r.convergence_ms,
                                r.stats.app_sends,
                                r.stats.app_deliveries,
                                r.checked.views,
                                r.checked.stateful_merges,
                                r.stats.faults
                            );
                        }
                    }
                    Err(f) => {
                        violations.fetch_add(1, Ordering::Relaxed);
                        sim_ms.fetch_add(f.at_ms, Ordering::Relaxed);
                        if keep_going {
                            println!("seed {seed}: VIOLATION of {} at t={}: {}", f.guarantee, f.at_ms, f.detail);
                        } else {
                            stop.store(true, Ordering::Relaxed);
                        }
                        // Keep the lowest failing seed among those seen: the report is then stable
                        // across thread interleavings as far as possible.
                        if let Ok(mut slot) = failure.lock() {
                            if slot.as_ref().is_none_or(|g| f.seed < g.seed) {
                                *slot = Some(*f);
                            }
                        }
                    }
                }
            })
        })
        .collect();
    let mut last = Instant::now();
    while workers.iter().any(|w| !w.is_finished()) {
        std::thread::sleep(Duration::from_millis(50));
        if last.elapsed() >= Duration::from_secs(2) {
            last = Instant::now();
            let d = done.load(Ordering::Relaxed);
            let secs = start.elapsed().as_secs_f64();
            let v = violations.load(Ordering::Relaxed);
            println!(
                "seeds {}/{total}, violations {v}, {:.1} runs/s, elapsed {secs:.1}s",
                d + v,
                (d + v) as f64 / secs.max(1e-9)
            );
        }
    }
    for w in workers {
        if w.join().is_err() {
            eprintln!("a worker thread panicked (a harness bug): see the message above");
            return ExitCode::from(1);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let d = done.load(Ordering::Relaxed);
    if let Ok(c) = classes.lock() {
        println!(
            "per run class ({} nodes, safety phase {} ms, world {}):",
            args.nodes, args.safety_ms, args.world
        );
        for (class, f) in c.iter() {
            let v: u64 = f.by_guarantee.values().sum();
            let by: Vec<String> = f.by_guarantee.iter().map(|(g, k)| format!("{g}: {k}")).collect();
            println!(
                "  {class:<28} {:>6} runs {:>5} violations{}  slowest convergence {} ms",
                f.runs,
                v,
                if by.is_empty() { String::new() } else { format!(" ({})", by.join(", ")) },
                f.worst_convergence_ms
            );
            if let Some((_, replay)) = &f.lowest {
                println!("  {:<28} replay: {replay}", "");
            }
        }
    }
    let taken = failure.lock().ok().and_then(|mut f| f.take());
    match taken {
        None => {
            println!(
                "{d} runs, 0 violations ({:.1} runs/s, {secs:.1}s elapsed, {:.0} s simulated; slowest convergence after the faults: {} ms)",
                d as f64 / secs.max(1e-9),
                sim_ms.load(Ordering::Relaxed) as f64 / 1000.0,
                worst_convergence.load(Ordering::Relaxed)
            );
            ExitCode::SUCCESS
        }
        Some(f) => {
            let v = violations.load(Ordering::Relaxed);
            println!("\n{f}");
            if keep_going {
                println!(
                    "\n{} runs, {v} violations ({:.1} runs/s, {secs:.1}s elapsed, {:.0} s simulated); the lowest failing seed is shown above",
                    d + v,
                    (d + v) as f64 / secs.max(1e-9),
                    sim_ms.load(Ordering::Relaxed) as f64 / 1000.0
                );
            } else {
                println!("\n{d} runs passed before the violation ({secs:.1}s elapsed)");
            }
            ExitCode::from(1)
        }
    }
}
