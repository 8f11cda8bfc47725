//! The lock service's safety and liveness under faults, on real agents on loopback.
//!
//! Five nodes; a node is its `cohort agent` plus a *worker* process (this test binary re-executed
//! through [`lock_worker_process`]) that runs the lock service ([`cohort_actors::lock::service`]) with
//! three clients competing for two exclusive locks. Each client logs, with the shared machine clock,
//! when it got a lock, when it stopped using it (before releasing) and when it was told the lock was
//! lost (its node blocked, was removed, or lost its agent).
//!
//! Faults: partitions through the agents' link filters (minority and majority cuts), pauses of a
//! whole node (SIGSTOP of agent and worker), `kill -9` of a whole node, and restarts. Fencing is real:
//! the fence agent (a script written by the test) kills the node's agent *and* worker, as a power
//! switch would, and logs when; the merge policy is `fence`. The test plays the service manager:
//! a node whose agent or worker died is started again (new epoch).
//!
//! Checked from the clients' own logs:
//! - **safety**: no two clients ever hold the same exclusive lock at once. A hold runs from its
//!   `acquired` line to its `released` or `lost` line, or, when the worker died holding it, to the
//!   logged time of its death (the test's kill, or the fence agent's);
//! - **liveness**: once the faults stop, every client of every node acquires every lock again within a
//!   deadline (no client waits forever).
//!
//! The schedule runs twice: on loopback agents with link filters (support/mod.rs), and on the
//! network-namespace test bed (support/netns.rs: real UDP between namespaces, nftables partitions),
//! which needs root, `ip` and `nft` and says `SKIP` without them.

#[path = "support/netns.rs"]
mod netns;
mod support;

use cohort_actors::lock::service::{self, LockError, Notice};
use cohort_actors::lock::table::Mode;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::{Cluster, Timing};

/// The locks the clients compete for.
const LOCKS: [&str; 2] = ["alpha", "beta"];
/// Clients per node.
const CLIENTS: u32 = 3;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Appends one line with a single write (so lines of concurrent writers never interleave).
fn append(path: &Path, v: &Value) {
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = f.write_all(format!("{v}\n").as_bytes());
    }
}

// --------------------------------------------------------------------------------------------------
// The worker process
// --------------------------------------------------------------------------------------------------

/// Not a scenario: the entry point of the worker processes (the test binary re-executes itself with
/// this test's name and `LOCK_WORKER_*` variables). Does nothing in a normal run.
#[test]
fn lock_worker_process() {
    let (Some(socket), Some(log), Some(node)) = (
        std::env::var_os("LOCK_WORKER_SOCKET"),
        std::env::var_os("LOCK_WORKER_LOG"),
        std::env::var("LOCK_WORKER_NODE").ok(),
    ) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(worker(PathBuf::from(socket), PathBuf::from(log), node));
}

async fn worker(socket: PathBuf, log: PathBuf, node: String) {
    let incarnation = std::process::id();
    let (handle, _task) = service::spawn(service::ServiceConfig::new(&socket));
    // The service's state changes go to the worker's stderr (kept with COHORT_TEST_KEEP=1).
    let mut states = handle.subscribe();
    tokio::spawn(async move {
        loop {
            match states.recv().await {
                Ok(Notice::State { state, member }) => {
                    eprintln!("{} state {state} member {member:?}", now_ms())
                }
                Ok(Notice::StateApplied { provider, locks }) => {
                    eprintln!("{} table from {provider} ({locks} locks)", now_ms())
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            }
        }
    });
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let handle = handle.clone();
        let log = log.clone();
        let client = format!("n{node}c{c}p{incarnation}");
        tasks.push(tokio::spawn(async move {
            let mut notices = handle.subscribe();
            let mut round: u64 = 0;
            loop {
                round += 1;
                let lock = LOCKS[((round + u64::from(c)) % LOCKS.len() as u64) as usize];
                match handle.acquire(lock, &client, Mode::Exclusive, Duration::from_millis(1500)).await {
                    Ok(_) => {
                        append(&log, &json!({"ts_ms": now_ms(), "client": client, "lock": lock, "ev": "acquired"}));
                        // Use the lock for a while, unless told it is lost.
                        // Mostly short holds, now and then a long one, so that some holds span a fault.
                        let hold = if round.is_multiple_of(8) {
                            Duration::from_millis(700)
                        } else {
                            Duration::from_millis(5 + (round * 7 + u64::from(c) * 13) % 40)
                        };
                        let end = tokio::time::Instant::now() + hold;
                        let lost = loop {
                            tokio::select! {
                                _ = tokio::time::sleep_until(end) => break false,
                                n = notices.recv() => match n {
                                    Ok(Notice::Lost { lock: l, owner, .. }) if l == lock && owner == client => break true,
                                    Ok(_) => {}
                                    // Lagging may have skipped a Lost: treat the lock as lost to be safe.
                                    Err(_) => break true,
                                },
                            }
                        };
                        if lost {
                            append(&log, &json!({"ts_ms": now_ms(), "client": client, "lock": lock, "ev": "lost"}));
                        } else {
                            append(&log, &json!({"ts_ms": now_ms(), "client": client, "lock": lock, "ev": "released"}));
                        }
                        let _ = handle.release(lock, &client).await;
                    }
                    Err(LockError::Timeout) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
                // Drain notices that piled up while not holding anything.
                while notices.try_recv().is_ok() {}
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

// --------------------------------------------------------------------------------------------------
// The beds: agents from support::Cluster (loopback, link filters) or from support/netns.rs (network
// namespaces, nftables partitions), plus workers and a fence script that kills both
// --------------------------------------------------------------------------------------------------

/// What the schedule needs from a test bed's agents.
trait Agents {
    /// The failure timeout of the agents (ms).
    fn failure_timeout_ms(&self) -> u64;
    /// Starts node `id`'s agent (not running).
    fn start_agent(&mut self, id: u32);
    /// The pid of node `id`'s agent, while it runs.
    fn agent_pid(&self, id: u32) -> Option<u32>;
    /// True when node `id`'s agent is not running (reaping it if it exited).
    fn agent_dead(&mut self, id: u32) -> bool;
    /// `kill -9` of node `id`'s agent if it runs.
    fn kill_agent(&mut self, id: u32);
    /// Node `id`'s client socket.
    fn socket(&self, id: u32) -> PathBuf;
    /// Cuts `a` off from `b` (both ways).
    fn partition(&mut self, a: &[u32], b: &[u32]);
    /// Restores every link.
    fn heal(&mut self);
    /// Node `id`'s view and whether it is primary.
    fn view(&self, id: u32) -> Option<(Vec<(u32, u64)>, bool)>;
    /// The command that runs a worker for node `id` (inside its namespace where there is one).
    fn worker_command(&self, id: u32) -> Command;
    /// Stops the agents and asserts that `cohort verify` passes over every event log.
    fn stop_and_verify(self);
}

impl Agents for Cluster {
    fn failure_timeout_ms(&self) -> u64 {
        self.timing.failure_timeout_ms
    }
    fn start_agent(&mut self, id: u32) {
        self.start(id);
    }
    fn agent_pid(&self, id: u32) -> Option<u32> {
        self.nodes[id as usize - 1].child.as_ref().map(Child::id)
    }
    fn agent_dead(&mut self, id: u32) -> bool {
        self.nodes[id as usize - 1].child.is_none() || self.exited(id).is_some()
    }
    fn kill_agent(&mut self, id: u32) {
        if self.nodes[id as usize - 1].child.is_some() {
            self.kill9(id);
        }
    }
    fn socket(&self, id: u32) -> PathBuf {
        self.nodes[id as usize - 1].socket.clone()
    }
    fn partition(&mut self, a: &[u32], b: &[u32]) {
        for id in a {
            link_filter(self, *id, b);
        }
        for id in b {
            link_filter(self, *id, a);
        }
    }
    fn heal(&mut self) {
        for id in self.ids() {
            link_filter(self, id, &[]);
        }
    }
    fn view(&self, id: u32) -> Option<(Vec<(u32, u64)>, bool)> {
        Cluster::view(self, id)
    }
    fn worker_command(&self, _id: u32) -> Command {
        Command::new(std::env::current_exe().expect("the test binary"))
    }
    fn stop_and_verify(mut self) {
        Cluster::stop_and_verify(&mut self);
    }
}

/// Sets node `id`'s link filter through its operator socket (a node that is down keeps none, so an
/// agent that cannot be reached is skipped; one that refuses the request fails the test).
fn link_filter(c: &Cluster, id: u32, cut: &[u32]) {
    let socket = c.nodes[id as usize - 1].operator_socket.clone();
    let nodes: Vec<cohort::NodeId> = cut.iter().map(|n| cohort::NodeId(*n)).collect();
    let result = c.block_on(async move {
        let mut client = cohort_actors::client::Client::connect(&socket, "lock-safety").await?;
        client.set_link_filter(&nodes).await
    });
    if let Err(e @ cohort_actors::client::ClientError::Agent(_)) = result {
        panic!("node {id} refused the link filter: {e}");
    }
}

impl Agents for netns::Bed {
    fn failure_timeout_ms(&self) -> u64 {
        self.spec.timing.failure_timeout_ms
    }
    fn start_agent(&mut self, id: u32) {
        self.start(id);
    }
    fn agent_pid(&self, id: u32) -> Option<u32> {
        self.node(id).child.as_ref().map(Child::id)
    }
    fn agent_dead(&mut self, id: u32) -> bool {
        self.node(id).child.is_none() || self.exited(id).is_some()
    }
    fn kill_agent(&mut self, id: u32) {
        if self.node(id).child.is_some() {
            self.kill9(id);
        }
    }
    fn socket(&self, id: u32) -> PathBuf {
        self.node(id).socket.clone()
    }
    fn partition(&mut self, a: &[u32], b: &[u32]) {
        netns::Bed::partition(self, &[a, b]);
    }
    fn heal(&mut self) {
        netns::Bed::heal(self);
    }
    fn view(&self, id: u32) -> Option<(Vec<(u32, u64)>, bool)> {
        netns::Bed::view(self, id)
    }
    fn worker_command(&self, id: u32) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.node(id).ns]).arg(std::env::current_exe().expect("the test binary"));
        c
    }
    fn stop_and_verify(self) {
        self.finish(&[]);
    }
}

/// The fence script and its configuration: `off` kills the node's agent and worker (a power switch)
/// and logs when; a file `fence-fail` in `dir` makes it fail (a broken fence device).
fn fence_script(dir: &Path) -> String {
    let script = dir.join("fence-kill.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n# Fences node $1: kills its agent and its worker (a power switch), then logs when.\n\
             d='{d}'\n[ -f \"$d/fence-fail\" ] && {{ echo 'fence device unreachable' >&2; exit 1; }}\n\
             for p in $(cat \"$d/node$1.pids\" 2>/dev/null); do kill -9 \"$p\" 2>/dev/null; done\n\
             for p in $(cat \"$d/node$1.pids\" 2>/dev/null); do\n  \
             while kill -0 \"$p\" 2>/dev/null && ! grep -q '^State:.*Z' /proc/$p/status 2>/dev/null; do sleep 0.01; done\n\
             done\necho \"{{\\\"node\\\": $1, \\\"ts_ms\\\": $(date +%s%3N)}}\" >> \"$d/fenced.jsonl\"\n\
             echo \"killed node $1\" >&2\n",
            d = dir.display()
        ),
    )
    .expect("write the fence script");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    format!(
        "[[fencing.levels]]\n[[fencing.levels.agents]]\nname = \"kill-node\"\ncommand = \"{}\"\nargs = [\"{{node}}\"]\n\
         action = \"off\"\ntimeout_ms = 5000\nretries = 2\n",
        script.display()
    )
}

/// A directory for the workers' logs, pid files and the fence script.
fn workers_dir(kind: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("cohort-lock-safety-{kind}-{}-{}", std::process::id(), now_ms()));
    std::fs::create_dir_all(&dir).expect("create the workers' directory");
    dir
}

struct Bed<A: Agents> {
    dir: PathBuf,
    workers: BTreeMap<u32, Child>,
    agents: Option<A>,
    n: u32,
}

impl<A: Agents> Bed<A> {
    fn a(&mut self) -> &mut A {
        self.agents.as_mut().expect("the agents")
    }

    fn dir(&self) -> &Path {
        &self.dir
    }

    fn write_pids(&mut self, id: u32) {
        let mut pids = Vec::new();
        if let Some(p) = self.a().agent_pid(id) {
            pids.push(p.to_string());
        }
        if let Some(c) = self.workers.get(&id) {
            pids.push(c.id().to_string());
        }
        std::fs::write(self.dir.join(format!("node{id}.pids")), pids.join(" ")).expect("pid file");
    }

    /// Starts node `id`: its agent and its worker.
    fn start(&mut self, id: u32) {
        self.a().start_agent(id);
        let socket = self.a().socket(id);
        let stderr = std::fs::File::create(self.dir.join(format!("worker{id}.stderr"))).expect("stderr");
        let child = self
            .a()
            .worker_command(id)
            .args(["lock_worker_process", "--exact", "--nocapture", "--test-threads=1", "-q"])
            .env("LOCK_WORKER_SOCKET", socket)
            .env("LOCK_WORKER_LOG", self.dir.join(format!("worker{id}.jsonl")))
            .env("LOCK_WORKER_NODE", id.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn a worker");
        self.workers.insert(id, child);
        self.write_pids(id);
    }

    /// `kill -9` of the whole node; the time is logged once both are gone.
    fn kill9(&mut self, id: u32) {
        if let Some(mut c) = self.workers.remove(&id) {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.a().kill_agent(id);
        append(&self.dir.join("fenced.jsonl"), &json!({"node": id, "ts_ms": now_ms()}));
    }

    fn signal_node(&mut self, id: u32, sig: &str) {
        let mut pids: Vec<u32> = self.a().agent_pid(id).into_iter().collect();
        if let Some(c) = self.workers.get(&id) {
            pids.push(c.id());
        }
        for p in pids {
            let _ = Command::new("kill").arg(format!("-{sig}")).arg(p.to_string()).status();
        }
    }

    /// The service manager: a node whose agent or worker died is restarted whole.
    fn supervise(&mut self) -> Vec<u32> {
        let mut restarted = Vec::new();
        for id in 1..=self.n {
            let agent_dead = self.a().agent_dead(id);
            let worker_dead = match self.workers.get_mut(&id) {
                Some(c) => c.try_wait().ok().flatten().is_some(),
                None => true,
            };
            if agent_dead || worker_dead {
                self.kill9(id);
                self.start(id);
                restarted.push(id);
            }
        }
        restarted
    }

    /// Waits `d` while supervising.
    fn run_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            for id in self.supervise() {
                println!("{:>13} node {id} restarted by the service manager", now_ms());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn read_jsonl(&self, name: &str) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join(name))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl<A: Agents> Drop for Bed<A> {
    fn drop(&mut self) {
        for (_, mut c) in std::mem::take(&mut self.workers) {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The agents (and their directory) are dropped with `agents`, by their own harness.
        self.agents.take();
        if std::thread::panicking() && std::env::var_os("COHORT_TEST_KEEP").is_some() {
            eprintln!("COHORT_TEST_KEEP is set: keeping {}", self.dir.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// --------------------------------------------------------------------------------------------------
// The checks
// --------------------------------------------------------------------------------------------------

/// One hold of an exclusive lock by a client: [start, end] in ms of the shared clock.
#[derive(Clone, Debug)]
struct Hold {
    client: String,
    lock: String,
    start: u64,
    end: u64,
}

/// Builds every client's holds from the worker logs; a hold still open when its worker died ends at
/// the first logged death of its node after it started (or at `end_ms` if the worker ran to the end).
fn holds(logs: &[Value], deaths: &[(u32, u64)], end_ms: u64) -> Vec<Hold> {
    let mut open: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut out = Vec::new();
    let mut lines: Vec<&Value> = logs.iter().collect();
    lines.sort_by_key(|v| v["ts_ms"].as_u64().unwrap_or(0));
    for v in lines {
        let client = v["client"].as_str().unwrap_or("").to_string();
        let lock = v["lock"].as_str().unwrap_or("").to_string();
        let ts = v["ts_ms"].as_u64().unwrap_or(0);
        match v["ev"].as_str() {
            Some("acquired") => {
                open.insert((client, lock), ts);
            }
            Some("released") | Some("lost") => {
                if let Some(start) = open.remove(&(client.clone(), lock.clone())) {
                    out.push(Hold { client, lock, start, end: ts });
                }
            }
            _ => {}
        }
    }
    for ((client, lock), start) in open {
        let node: u32 = client[1..client.find('c').unwrap_or(1)].parse().unwrap_or(0);
        let end =
            deaths.iter().filter(|(n, t)| *n == node && *t >= start).map(|(_, t)| *t).min().unwrap_or(end_ms);
        out.push(Hold { client, lock, start, end });
    }
    out
}

/// Every pair of holds of one lock by different clients that overlap in time.
fn overlaps(holds: &[Hold]) -> Vec<(Hold, Hold)> {
    let mut by_lock: BTreeMap<&str, Vec<&Hold>> = BTreeMap::new();
    for h in holds {
        by_lock.entry(&h.lock).or_default().push(h);
    }
    let mut bad = Vec::new();
    for hs in by_lock.values_mut() {
        hs.sort_by_key(|h| h.start);
        for (i, a) in hs.iter().enumerate() {
            for b in &hs[i + 1..] {
                if b.start >= a.end {
                    break;
                }
                if a.client != b.client {
                    bad.push(((*a).clone(), (*b).clone()));
                }
            }
        }
    }
    bad
}

#[test]
fn overlap_check_finds_a_double_holder_and_accepts_a_handover() {
    let log =
        |client: &str, ev: &str, ts: u64| json!({"client": client, "lock": "alpha", "ev": ev, "ts_ms": ts});
    // A handover in the same millisecond is not an overlap.
    let ok =
        vec![log("n1c0p1", "acquired", 10), log("n1c0p1", "released", 20), log("n2c0p1", "acquired", 20)];
    assert!(overlaps(&holds(&ok, &[], 30)).is_empty());
    // A holder whose worker died holds until its node's logged death.
    let bad =
        vec![log("n1c0p1", "acquired", 10), log("n2c0p1", "acquired", 25), log("n2c0p1", "released", 30)];
    assert_eq!(overlaps(&holds(&bad, &[(1, 40)], 50)).len(), 1);
    assert!(overlaps(&holds(&bad, &[(1, 24)], 50)).is_empty());
}

#[test]
fn exclusive_locks_are_never_held_twice_under_partitions_pauses_and_crashes() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = workers_dir("loopback");
    let extra = fence_script(&dir);
    let cluster = Cluster::with_extra(5, Timing::FAST, &extra);
    let bed = Bed { dir, workers: BTreeMap::new(), agents: Some(cluster), n: 5 };
    run_schedule(bed);
}

/// The same schedule on the network-namespace test bed (real UDP between namespaces, partitions as
/// nftables rules on a switch). Needs root, `ip` and `nft`; prints `SKIP` and passes without them.
#[test]
fn netns_exclusive_locks_are_never_held_twice_under_partitions_pauses_and_crashes() {
    const NAME: &str = "netns_exclusive_locks_are_never_held_twice_under_partitions_pauses_and_crashes";
    if !netns::Bed::available(NAME) {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = workers_dir("netns");
    let mut spec = netns::Spec::new(5);
    spec.policy = "fence".into();
    spec.client_send_interval_ms = 0;
    spec.extra_toml = fence_script(&dir);
    let nb = netns::Bed::new("lock-safety", spec);
    let bed = Bed { dir, workers: BTreeMap::new(), agents: Some(nb), n: 5 };
    run_schedule(bed);
}

/// One schedule at a time in this binary (the loopback and netns harnesses have separate locks).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run_schedule<A: Agents>(mut bed: Bed<A>) {
    let n = bed.n;
    for id in 1..=n {
        bed.start(id);
    }
    let form_end = Instant::now() + Duration::from_secs(30);
    while !(1..=n).all(|id| bed.a().view(id).is_some_and(|(ms, p)| p && ms.len() == n as usize)) {
        assert!(Instant::now() < form_end, "the cluster did not form");
        std::thread::sleep(Duration::from_millis(20));
    }
    let fail_ms = bed.a().failure_timeout_ms();
    let detect = Duration::from_millis(fail_ms * 4);
    bed.run_for(Duration::from_secs(2));

    let say = |what: &str| println!("{:>13} {what}", now_ms());
    // First with a broken fence device: the minority blocks and its clients are told their locks are
    // lost, while the majority may not recover them (no fence, no recovery). Then the device works.
    say("fence device broken; partition {1,2} | {3,4,5}");
    std::fs::write(bed.dir().join("fence-fail"), "").expect("fence-fail");
    bed.a().partition(&[1, 2], &[3, 4, 5]);
    bed.run_for(detect);
    std::fs::remove_file(bed.dir().join("fence-fail")).expect("remove fence-fail");
    say("fence device repaired");
    bed.run_for(Duration::from_secs(1));
    bed.a().heal();
    say("healed");
    bed.run_for(Duration::from_secs(2));

    // The fault schedule: each fault lasts long enough to be detected, fenced and recovered from.
    say("partition {1,2} | {3,4,5}");
    bed.a().partition(&[1, 2], &[3, 4, 5]);
    bed.run_for(detect);
    bed.a().heal();
    say("healed");
    bed.run_for(Duration::from_secs(2));

    say("pause node 3 (agent and worker)");
    bed.signal_node(3, "STOP");
    bed.run_for(detect);
    bed.signal_node(3, "CONT");
    say("resumed node 3");
    bed.run_for(Duration::from_secs(2));

    say("kill -9 node 4");
    bed.kill9(4);
    bed.run_for(Duration::from_millis(fail_ms * 2));

    say("partition {1,5} | {2,3,4} and a short pause of node 2");
    bed.a().partition(&[1, 5], &[2, 3, 4]);
    bed.signal_node(2, "STOP");
    bed.run_for(Duration::from_millis(fail_ms / 2));
    bed.signal_node(2, "CONT");
    bed.run_for(detect);
    bed.a().heal();
    say("healed");
    bed.run_for(Duration::from_secs(1));

    say("pause node 1 past the failure timeout, then kill -9 node 5 while node 1 is stopped");
    bed.signal_node(1, "STOP");
    bed.run_for(Duration::from_millis(fail_ms * 2));
    bed.kill9(5);
    bed.run_for(Duration::from_millis(fail_ms));
    bed.signal_node(1, "CONT");

    // Faults stop here.
    bed.a().heal();
    let quiet_since = now_ms();
    say("faults stopped");
    // The cluster converges (nodes restarted by the service manager rejoin).
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        bed.supervise();
        let views: Vec<_> = (1..=n).map(|id| bed.a().view(id)).collect();
        let all = views.iter().all(|v| {
            v.as_ref().is_some_and(|(ms, p)| *p && ms.len() == n as usize && Some(v) == views.first())
        });
        if all {
            break;
        }
        assert!(Instant::now() < end, "the cluster did not converge within 30 s after the faults stopped");
        std::thread::sleep(Duration::from_millis(20));
    }
    say("converged");

    // Liveness: every client of the current workers acquires every lock again.
    let liveness_deadline = Instant::now() + Duration::from_secs(30);
    let current: Vec<String> = bed
        .workers
        .iter()
        .flat_map(|(id, c)| (0..CLIENTS).map(move |k| format!("n{id}c{k}p{}", c.id())))
        .collect();
    let missing = loop {
        bed.supervise();
        let logs: Vec<Value> = (1..=n).flat_map(|id| bed.read_jsonl(&format!("worker{id}.jsonl"))).collect();
        let missing: Vec<(String, &str)> = current
            .iter()
            .flat_map(|c| LOCKS.iter().map(move |l| (c.clone(), *l)))
            .filter(|(c, l)| {
                !logs.iter().any(|v| {
                    v["client"] == c.as_str()
                        && v["lock"] == *l
                        && v["ev"] == "acquired"
                        && v["ts_ms"].as_u64().unwrap_or(0) >= quiet_since
                })
            })
            .collect();
        if missing.is_empty() || Instant::now() >= liveness_deadline {
            break missing;
        }
        std::thread::sleep(Duration::from_millis(50));
    };

    // Stop the workers first (their holds end now), then the agents.
    for (_, mut c) in std::mem::take(&mut bed.workers) {
        let _ = c.kill();
        let _ = c.wait();
    }
    let logs: Vec<Value> = (1..=n).flat_map(|id| bed.read_jsonl(&format!("worker{id}.jsonl"))).collect();
    let deaths: Vec<(u32, u64)> = bed
        .read_jsonl("fenced.jsonl")
        .iter()
        .filter_map(|v| Some((v["node"].as_u64()? as u32, v["ts_ms"].as_u64()?)))
        .collect();
    let hs = holds(&logs, &deaths, now_ms());
    let bad = overlaps(&hs);
    let lost = logs.iter().filter(|v| v["ev"] == "lost").count();
    let clients: std::collections::BTreeSet<&str> =
        logs.iter().filter_map(|v| v["client"].as_str()).collect();
    println!(
        "LOCKSAFETY holds: {}, lost: {lost}, clients (all incarnations): {}, node deaths (kills and fences): {}, \
         overlapping holds: {}, clients still waiting after the faults: {}",
        hs.len(),
        clients.len(),
        deaths.len(),
        bad.len(),
        missing.len()
    );
    for (a, b) in bad.iter().take(10) {
        println!("OVERLAP {a:?} and {b:?}");
    }
    assert!(bad.is_empty(), "{} overlapping exclusive holds, e.g. {:?}", bad.len(), bad.first());
    assert!(hs.len() > 100, "too few holds ({}) for the test to mean anything", hs.len());
    assert!(deaths.len() >= 2, "the schedule should have killed or fenced nodes, saw {deaths:?}");
    assert!(missing.is_empty(), "clients that never got a lock again after the faults stopped: {missing:?}");
    if let Some(a) = bed.agents.take() {
        a.stop_and_verify();
    }
}
