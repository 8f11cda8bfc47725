//! The network-namespace test bed: real `cohort agent` processes, each in its own network namespace,
//! talking real UDP through a bridge, with a client process inside every namespace.
//!
//! Include it from a test file with
//! ```ignore
//! #[path = "support/netns.rs"]
//! mod netns;
//! netns_client_entry!();   // the client processes re-execute the test binary through this test
//! ```
//!
//! # Topology
//! A [`Bed`] makes, under a unique prefix `cht<test pid>x<k>`:
//! - a *switch* namespace `<prefix>sw` holding a Linux bridge `br0`;
//! - one namespace `<prefix>n<i>` per node, joined to the bridge by a veth pair (`c<i>` in the node,
//!   `s<i>` in the switch), address `10.77.0.<i>/24`, the agent listening on UDP port 7400;
//! - a temporary directory with the shared `cluster.toml`, one `node<i>.toml` per node, the key, each
//!   node's data directory (event log, client socket) and the agents' and clients' stderr.
//!
//! The host's root namespace is never touched: no address, link or rule is added there.
//!
//! # Faults
//! Every fault lives in the switch namespace, so the agents never see an error from their own sockets:
//! - partitions and one-way partitions are `nftables` drop rules in a `bridge` table on the switch
//!   (`ip saddr A ip daddr B drop`), rewritten atomically with one `nft -f` per change;
//! - packet loss is a `numgen random` drop rule on the same table; delay is `tc netem` on the switch's
//!   ports when the kernel has `sch_netem` ([`Bed::set_link_quality`] says whether it could add delay);
//! - a link can go down and up (`ip link set s<i> down`), which is how a flapping link is made;
//! - processes: `kill -9` ([`Bed::kill9`]), `SIGSTOP`/`SIGCONT` ([`Bed::pause`], [`Bed::resume`]),
//!   clean stop ([`Bed::stop`]), start and restart (a new epoch, [`Bed::start`]).
//!
//! # Fencing
//! [`Fence::TestAgent`] configures `cohort-fence-test` as a real fence agent (stdin `key=value`
//! options as the `fence_*` agents take them). The bed writes every agent's pid to
//! `<dir>/fence<level>/node<i>.pid`; failures are injected with [`Bed::inject_fence_failure`], and
//! what `off` does (SIGKILL or SIGSTOP) is chosen at run time with [`Bed::set_fence_mode`].
//! [`Bed::auto_restart`] plays the service manager (systemd's `Restart=always`): an agent that exited by
//! itself (killed by a fence agent, a `NewEpoch` restart, a watchdog exit) is started again after
//! [`Bed::restart_delay`], with a new epoch. It keeps the data directory unless [`Bed::on_next_restart`]
//! says to wipe it or to restore a backup taken with [`Bed::backup_data_dir`]. Agents the test stops or
//! kills itself ([`Bed::stop`], [`Bed::kill9`]) are not restarted. The event log lives in the data
//! directory but is never wiped or restored: it is the bed's audit trail (as if shipped to a log host).
//!
//! # Waiting and checking
//! Waits poll the agents' status over their client sockets (a few ms apart) until a condition holds or
//! a deadline passes; a deadline failure prints every node's status. [`Bed::finish`] stops the
//! clients, checks convergence, stops the agents, runs `cohort verify` over every event log and
//! asserts it passes, and prints the measured times (lines starting with `NETNS`).
//!
//! # Cleanup
//! Dropping a `Bed` (also while a test panics) kills every process it started, by pid, deletes every
//! namespace (which removes the veth pairs and the bridge with them) and removes its directory
//! (`COHORT_TEST_KEEP=1` keeps the directory of a failed run). A test that was killed cannot run its
//! `Drop`: every new `Bed` first sweeps namespaces named `cht<pid>x…` whose test process is gone,
//! killing what still runs in them.
//!
//! Beds run one at a time per test binary (a process-wide lock), so scenarios do not steal each
//! other's CPU. When not root or when `ip`/`nft` is missing, [`Bed::available`] prints a `SKIP` line.

#![allow(dead_code)]

use cohort_actors::client::{Client, ClientEvent};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The UDP port every agent listens on (each in its own namespace, so they can all use it).
pub const AGENT_PORT: u16 = 7400;
/// The name of the test through which client processes re-enter the test binary.
pub const CLIENT_ENTRY_TEST: &str = "netns_client_process";
/// The process group every client joins.
pub const CLIENT_GROUP: &str = "app";

/// Defines the `#[test]` through which the bed's client processes run ([`client_process_main`]).
/// In a normal test run it does nothing.
#[macro_export]
macro_rules! netns_client_entry {
    () => {
        /// Not a scenario: the entry point of the client processes the bed starts in each namespace
        /// (the test binary re-executes itself with this test's name). Does nothing in a normal run.
        #[test]
        fn netns_client_process() {
            netns::client_process_main();
        }
    };
}

/// Timing of a bed's agents, in milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Interval between heartbeats.
    pub heartbeat_interval_ms: u64,
    /// Silence after which a member is suspected.
    pub failure_timeout_ms: u64,
    /// Interval between probes to nodes outside the view.
    pub discovery_interval_ms: u64,
    /// Per-phase timeout of a view change.
    pub view_change_timeout_ms: u64,
    /// Retransmission interval.
    pub retransmit_interval_ms: u64,
}

impl Timing {
    /// Fast timings for small beds (up to 7 nodes) on a 2-core machine.
    pub const FAST: Timing = Timing {
        heartbeat_interval_ms: 50,
        failure_timeout_ms: 500,
        discovery_interval_ms: 200,
        view_change_timeout_ms: 300,
        retransmit_interval_ms: 20,
    };
    /// Timings for 16 nodes on 2 cores.
    pub const LARGE: Timing = Timing {
        heartbeat_interval_ms: 100,
        failure_timeout_ms: 1000,
        discovery_interval_ms: 300,
        view_change_timeout_ms: 500,
        retransmit_interval_ms: 30,
    };

    /// L4's bound for a crash: the failure timeout plus one view change (two phases' timeouts), plus
    /// `slack_ms` for scheduling on a loaded machine.
    pub fn failover_bound(&self) -> Duration {
        Duration::from_millis(self.failure_timeout_ms + 2 * self.view_change_timeout_ms + slack_ms())
    }

    /// L4's bound for a healed partition: the discovery interval plus one view change, plus slack.
    pub fn merge_bound(&self) -> Duration {
        Duration::from_millis(self.discovery_interval_ms + 2 * self.view_change_timeout_ms + slack_ms())
    }

    /// L1's convergence bound once the network is whole: a small multiple of the failure timeout
    /// (room for a stateful merge, its resolution and a rejoin with state transfer).
    pub fn convergence_bound(&self) -> Duration {
        Duration::from_millis(8 * self.failure_timeout_ms + 4 * self.view_change_timeout_ms + slack_ms())
    }
}

/// Scheduling slack added to every liveness bound (ms): `COHORT_NETNS_SLACK_MS`, default 1000.
pub fn slack_ms() -> u64 {
    std::env::var("COHORT_NETNS_SLACK_MS").ok().and_then(|s| s.parse().ok()).unwrap_or(1000)
}

/// One level of `cohort-fence-test` agents.
#[derive(Clone, Debug)]
pub struct TestLevel {
    /// Kill the fence agent and count a failure after this long (ms).
    pub timeout_ms: u64,
    /// Extra attempts after a failure.
    pub retries: u32,
}

/// How the bed's agents fence.
#[derive(Clone, Debug)]
pub enum Fence {
    /// `mode = "agent"` with no levels: only a restart (new epoch) or `cohort fence ack` fences.
    RestartOrAck,
    /// `mode = "agent"` with these levels of `cohort-fence-test` (level `i` uses `<dir>/fence<i>`).
    TestAgent {
        /// The levels, tried in order.
        levels: Vec<TestLevel>,
        /// Whether a restart with a new epoch also counts as fenced.
        restart_counts: bool,
    },
    /// `mode = "watchdog"`.
    Watchdog {
        /// Self-fence after this long outside a primary view (ms).
        self_fence_after_ms: u64,
        /// The primary side counts a silent member fenced after this long (ms).
        watchdog_wait_ms: u64,
        /// `watchdog = "exit"` when true, `"notify"` when false.
        exit: bool,
    },
}

/// What a bed is made of.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Number of nodes (1..=250).
    pub nodes: u32,
    /// Agent timing.
    pub timing: Timing,
    /// `[merge] policy`: `fence`, `restart`, `reset` or `wait`.
    pub policy: String,
    /// Fencing.
    pub fence: Fence,
    /// `[quorum] two_node`.
    pub two_node: bool,
    /// Interval between a client's sends (ms); 0: clients send nothing.
    pub client_send_interval_ms: u64,
    /// How long a client takes to answer a state request (ms): keeps a state transfer in progress
    /// long enough to fault it.
    pub client_provide_delay_ms: u64,
    /// Extra TOML appended to `cluster.toml`.
    pub extra_toml: String,
}

impl Spec {
    /// `n` nodes, [`Timing::FAST`], policy `restart`, [`Fence::RestartOrAck`], clients sending every 100 ms.
    pub fn new(n: u32) -> Spec {
        Spec {
            nodes: n,
            timing: Timing::FAST,
            policy: "restart".into(),
            fence: Fence::RestartOrAck,
            two_node: false,
            client_send_interval_ms: 100,
            client_provide_delay_ms: 0,
            extra_toml: String::new(),
        }
    }
}

/// One node of the bed.
pub struct BedNode {
    /// Node id (1-based).
    pub id: u32,
    /// Its network namespace.
    pub ns: String,
    /// Its address inside the namespace.
    pub ip: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its client socket.
    pub socket: PathBuf,
    /// Its node configuration file.
    pub config: PathBuf,
    /// The running agent.
    pub child: Option<Child>,
    /// The running client process.
    pub client: Option<Child>,
    /// How many times the agent was started.
    pub starts: u32,
    /// How many times the client was started.
    pub client_starts: u32,
    /// The agent is stopped with SIGSTOP (by [`Bed::pause`]).
    pub paused: bool,
    /// When the service manager saw the agent exit by itself; it starts it again `restart_delay` later.
    pub exited_at: Option<Instant>,
    /// What the service manager does to the data directory before its next restart of this agent.
    pub disk_on_restart: Disk,
    /// How many times the service manager restarted this agent.
    pub service_restarts: u32,
}

/// What happens to a node's data directory before the service manager starts its agent again (the
/// event log is always kept).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Disk {
    /// Keep it (a crash or a fence, the disk intact).
    #[default]
    Keep,
    /// Remove everything in it (a replaced disk, a reinstalled machine).
    Wipe,
    /// Replace it with this backup (taken with [`Bed::backup_data_dir`]).
    Restore(PathBuf),
}

/// Measured times of a scenario, printed by [`Bed::finish`].
#[derive(Clone, Debug, Default)]
pub struct Measures {
    /// (what, ms): time from a fault until some survivor started a view change (poll-based).
    pub detection: Vec<(String, u64)>,
    /// (what, ms): from the start of that view change until every survivor installed the new view.
    pub view_change: Vec<(String, u64)>,
    /// (what, ms): from a heal or restart until all named nodes were in one primary view.
    pub merge: Vec<(String, u64)>,
}

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
static NEXT_BED: AtomicU64 = AtomicU64::new(0);

/// Wall-clock milliseconds since the Unix epoch (the event log's `ts_ms` clock).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The `cohort` binary under test.
pub fn cohort_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cohort"))
}

/// The test fence agent.
pub fn fence_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cohort-fence-test"))
}

fn have(program: &str) -> bool {
    Command::new(program).arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// Runs a command, panicking with its output when it fails.
fn run(program: &str, args: &[&str]) {
    let out =
        Command::new(program).args(args).output().unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Runs a command, ignoring failures (cleanup).
fn run_quiet(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// True when process `pid` is stopped (SIGSTOP) per `/proc/PID/stat`.
pub fn process_stopped(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let Some(i) = stat.rfind(')') else { return false };
    matches!(stat[i + 1..].trim_start().chars().next(), Some('T' | 't'))
}

/// True while process `pid` exists and is not a zombie.
fn pid_alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let Some(i) = stat.rfind(')') else { return false };
    !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X'))
}

/// Removes namespaces of beds whose test process is gone (a test killed before its `Drop` ran),
/// killing the processes still inside them.
fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix("cht") else { continue };
        let Some((pid, _)) = rest.split_once('x') else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if pid_alive(pid) {
            continue;
        }
        if let Ok(p) = Command::new("ip").args(["netns", "pids", name]).output() {
            for q in String::from_utf8_lossy(&p.stdout).split_whitespace() {
                run_quiet("kill", &["-9", q]);
            }
        }
        eprintln!("netns bed: removing stale namespace {name} of dead test process {pid}");
        run_quiet("ip", &["netns", "delete", name]);
    }
}

/// A cluster of agents in network namespaces. See the module documentation.
pub struct Bed {
    /// The temporary directory.
    pub dir: PathBuf,
    /// The namespace name prefix.
    pub prefix: String,
    /// The switch namespace.
    pub switch_ns: String,
    /// The nodes, index = id - 1.
    pub nodes: Vec<BedNode>,
    /// What the bed is made of.
    pub spec: Spec,
    /// Start agents that exited again (a service manager's `Restart=always`), checked while waiting.
    pub auto_restart: bool,
    /// How long the service manager waits after an exit before it starts the agent again
    /// (`RestartSec`); 200 ms by default.
    pub restart_delay: Duration,
    /// Measured times.
    pub measures: Measures,
    /// Directed links (from, to) that drop everything.
    blocked: BTreeSet<(u32, u32)>,
    loss_pct: u32,
    delay_ms: u64,
    rt: tokio::runtime::Runtime,
    status_clients: std::cell::RefCell<BTreeMap<u32, Client>>,
    name: String,
    started: Instant,
    _lock: MutexGuard<'static, ()>,
}

impl Bed {
    /// Whether the bed can run here (root, `ip netns`, `nft`); prints a `SKIP` line naming `test` if not.
    pub fn available(test: &str) -> bool {
        let root = fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0"))
            })
            .unwrap_or(false);
        let why = if !root {
            Some("not root")
        } else if !have("ip") || !run_quiet("ip", &["netns", "list"]) {
            Some("`ip netns` is unavailable (install iproute2)")
        } else if !have("nft") {
            Some("`nft` is unavailable (install nftables)")
        } else {
            None
        };
        if let Some(why) = why {
            println!("SKIP {test}: the network-namespace bed needs root, ip and nft: {why}");
            return false;
        }
        true
    }

    /// Builds the namespaces, the bridge and the configuration of `spec.nodes` nodes; starts nothing.
    /// `name` names the scenario in the output.
    pub fn new(name: &str, spec: Spec) -> Bed {
        let lock = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        sweep_stale();
        assert!((1..=250).contains(&spec.nodes), "a bed has 1..=250 nodes");
        let k = NEXT_BED.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("cht{}x{k}", std::process::id());
        let dir = std::env::temp_dir().join(format!("cohort-netns-{prefix}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the bed's directory");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
        let mut bed = Bed {
            switch_ns: format!("{prefix}sw"),
            prefix: prefix.clone(),
            dir,
            nodes: Vec::new(),
            spec,
            auto_restart: false,
            restart_delay: Duration::from_millis(200),
            measures: Measures::default(),
            blocked: BTreeSet::new(),
            loss_pct: 0,
            delay_ms: 0,
            rt,
            status_clients: std::cell::RefCell::new(BTreeMap::new()),
            name: name.to_string(),
            started: Instant::now(),
            _lock: lock,
        };
        // From here on Drop removes whatever exists.
        let sw = bed.switch_ns.clone();
        run("ip", &["netns", "add", &sw]);
        run("ip", &["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        run("ip", &["-n", &sw, "link", "set", "br0", "up"]);
        for i in 1..=bed.spec.nodes {
            let ns = format!("{prefix}n{i}");
            let ip = format!("10.77.0.{i}");
            run("ip", &["netns", "add", &ns]);
            bed.nodes.push(BedNode {
                id: i,
                ns: ns.clone(),
                ip: ip.clone(),
                data_dir: bed.dir.join(format!("node{i}")),
                socket: bed.dir.join(format!("node{i}/cohort.sock")),
                config: bed.dir.join(format!("node{i}.toml")),
                child: None,
                client: None,
                starts: 0,
                client_starts: 0,
                paused: false,
                exited_at: None,
                disk_on_restart: Disk::Keep,
                service_restarts: 0,
            });
            let (c, s) = (format!("c{i}"), format!("s{i}"));
            run("ip", &["link", "add", &c, "netns", &ns, "type", "veth", "peer", "name", &s, "netns", &sw]);
            run("ip", &["-n", &sw, "link", "set", &s, "master", "br0", "up"]);
            run("ip", &["-n", &ns, "link", "set", "lo", "up"]);
            run("ip", &["-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", &c]);
            run("ip", &["-n", &ns, "link", "set", &c, "up"]);
        }
        bed.apply_faults();
        bed.write_config();
        bed
    }

    fn write_config(&mut self) {
        let s = self.spec.clone();
        let t = s.timing;
        let mut toml = format!("[cluster]\nname = \"{}\"\n\n", self.prefix);
        for n in &self.nodes {
            let _ = write!(toml, "[[cluster.nodes]]\nid = {}\naddr = \"{}:{AGENT_PORT}\"\n\n", n.id, n.ip);
        }
        let _ = write!(
            toml,
            "[timing]\nheartbeat_interval_ms = {}\nfailure_timeout_ms = {}\ndiscovery_interval_ms = {}\n\
             view_change_timeout_ms = {}\nretransmit_interval_ms = {}\n\n[quorum]\ntwo_node = {}\n\n\
             [merge]\npolicy = \"{}\"\n\n",
            t.heartbeat_interval_ms,
            t.failure_timeout_ms,
            t.discovery_interval_ms,
            t.view_change_timeout_ms,
            t.retransmit_interval_ms,
            s.two_node,
            s.policy,
        );
        match &s.fence {
            Fence::RestartOrAck => {
                toml.push_str("[fencing]\nmode = \"agent\"\nrestart_counts_as_fenced = true\n\n");
            }
            Fence::Watchdog { self_fence_after_ms, watchdog_wait_ms, exit } => {
                let _ = write!(
                    toml,
                    "[fencing]\nmode = \"watchdog\"\nrestart_counts_as_fenced = true\nself_fence_after_ms = {}\n\
                     watchdog_wait_ms = {}\nwatchdog = \"{}\"\n\n",
                    self_fence_after_ms,
                    watchdog_wait_ms,
                    if *exit { "exit" } else { "notify" }
                );
            }
            Fence::TestAgent { levels, restart_counts } => {
                let _ = write!(
                    toml,
                    "[fencing]\nmode = \"agent\"\nrestart_counts_as_fenced = {restart_counts}\n\n"
                );
                for (i, level) in levels.iter().enumerate() {
                    let dir = self.fence_dir(i as u32 + 1);
                    fs::create_dir_all(&dir).expect("fence directory");
                    // The mode (SIGKILL or SIGSTOP for `off`) is read from a file at fencing time, so a
                    // scenario can change what a fence does while the agents run.
                    // A per-target delay file plays Pacemaker's `pcmk_delay_base`: fencing that node
                    // waits, so in a fence race the other side's fence lands first.
                    let script = format!(
                        "d=$(cat '{dir}/delay-node'\"$1\" 2>/dev/null || echo 0); [ \"$d\" = 0 ] || sleep \"$d\"; \
                         exec '{bin}' --mode \"$(cat '{dir}/mode' 2>/dev/null || echo kill)\"",
                        bin = fence_bin().display(),
                        dir = dir.display()
                    );
                    let _ = write!(
                        toml,
                        "[[fencing.levels]]\n[[fencing.levels.agents]]\nname = \"test-level-{}\"\n\
                         command = \"/bin/sh\"\nargs = [\"-c\", {}, \"fence-wrapper\", \"{{plug}}\"]\naction = \"off\"\ntimeout_ms = {}\n\
                         retries = {}\n[fencing.levels.agents.stdin]\naction = \"{{action}}\"\nplug = \"{{plug}}\"\n\
                         pidfile_dir = \"{}\"\n\n",
                        i + 1,
                        toml_str(&script),
                        level.timeout_ms,
                        level.retries,
                        dir.display()
                    );
                }
            }
        }
        toml.push_str(&s.extra_toml);
        fs::write(self.dir.join("cluster.toml"), toml).expect("write cluster.toml");
        let key = self.dir.join("cluster.key");
        run(
            cohort_bin().to_str().expect("utf-8 path"),
            &["keygen", "--out", key.to_str().expect("utf-8 path")],
        );
        for n in &self.nodes {
            let node_toml = format!(
                "[node]\nid = {}\ndata_dir = \"{}\"\nkey_file = \"{}\"\n\n[api]\nsocket = \"{}\"\n\n\
                 [admin]\nlisten = \"\"\n\n[log]\nlevel = \"info\"\n",
                n.id,
                n.data_dir.display(),
                key.display(),
                n.socket.display()
            );
            fs::write(&n.config, node_toml).expect("write a node configuration");
        }
    }

    /// The pid-file directory of fence level `level` (1-based).
    pub fn fence_dir(&self, level: u32) -> PathBuf {
        self.dir.join(format!("fence{level}"))
    }

    fn fence_levels(&self) -> u32 {
        match &self.spec.fence {
            Fence::TestAgent { levels, .. } => levels.len() as u32,
            _ => 0,
        }
    }

    /// Makes level `level`'s fence agent fail (`"fence-fail"`), fail once (`"fence-fail-once"`) or
    /// hang (`"fence-hang"`); `None` removes every injected failure of that level.
    pub fn inject_fence_failure(&self, level: u32, failure: Option<&str>) {
        let dir = self.fence_dir(level);
        for f in ["fence-fail", "fence-fail-once", "fence-hang"] {
            let _ = fs::remove_file(dir.join(f));
        }
        if let Some(f) = failure {
            fs::write(dir.join(f), "").expect("write the failure-injection file");
        }
    }

    /// What level `level`'s `off` does: `"kill"` (SIGKILL, the default) or `"stop"` (SIGSTOP: a
    /// "fenced" node that is only paused and may come back as a zombie).
    pub fn set_fence_mode(&self, level: u32, mode: &str) {
        fs::write(self.fence_dir(level).join("mode"), mode).expect("write the fence mode");
    }

    /// Makes level `level`'s agent wait `delay_ms` before fencing node `target` (a static fence delay
    /// as Pacemaker's `pcmk_delay_base`: in a two-node fence race, the delayed node survives).
    pub fn set_fence_delay(&self, level: u32, target: u32, delay_ms: u64) {
        let secs = format!("{}.{:03}", delay_ms / 1000, delay_ms % 1000);
        fs::write(self.fence_dir(level).join(format!("delay-node{target}")), secs)
            .expect("write the fence delay");
    }

    /// The node ids, 1..=n.
    pub fn ids(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// Node `id`.
    pub fn node(&self, id: u32) -> &BedNode {
        &self.nodes[id as usize - 1]
    }

    /// The path of node `id`'s stderr file of its latest start.
    pub fn stderr_path(&self, id: u32) -> PathBuf {
        self.dir.join(format!("node{id}.stderr.{}", self.node(id).starts))
    }

    fn node_mut(&mut self, id: u32) -> &mut BedNode {
        &mut self.nodes[id as usize - 1]
    }

    /// Starts node `id`'s agent inside its namespace (a new epoch when it ran before) and records its pid
    /// for the fence agents.
    pub fn start(&mut self, id: u32) {
        let cluster_toml = self.dir.join("cluster.toml");
        let dir = self.dir.clone();
        let levels = self.fence_levels();
        let node = self.node_mut(id);
        assert!(node.child.is_none(), "node {id} is already running");
        node.starts += 1;
        node.paused = false;
        let stderr =
            fs::File::create(dir.join(format!("node{id}.stderr.{}", node.starts))).expect("stderr file");
        // `ip netns exec` enters the namespace and execs the agent: the child's pid is the agent's.
        let child = Command::new("ip")
            .args(["netns", "exec", &node.ns])
            .arg(cohort_bin())
            .arg("agent")
            .arg("--config")
            .arg(&cluster_toml)
            .arg("--config")
            .arg(&node.config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn cohort agent");
        let pid = child.id();
        node.child = Some(child);
        for level in 1..=levels {
            fs::write(dir.join(format!("fence{level}/node{id}.pid")), pid.to_string()).expect("pid file");
        }
    }

    /// Starts every node's agent.
    pub fn start_all(&mut self) {
        for id in self.ids() {
            self.start(id);
        }
    }

    /// Starts every agent and every client, and waits until all nodes are in one primary view.
    pub fn start_all_and_form(&mut self) {
        self.start_all();
        let all = self.ids();
        let deadline = Duration::from_secs(20 + u64::from(self.spec.nodes));
        self.wait_for_view(&all, deadline);
        for id in self.ids() {
            self.start_client(id);
        }
        self.wait_clients_joined(&all, Duration::from_secs(20));
    }

    /// The pid of node `id`'s agent.
    pub fn pid(&self, id: u32) -> u32 {
        self.node(id).child.as_ref().map(Child::id).unwrap_or_else(|| panic!("node {id} is not running"))
    }

    /// Whether node `id`'s agent process is running (not exited; a paused agent is running).
    pub fn running(&mut self, id: u32) -> bool {
        let node = self.node_mut(id);
        match node.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => false,
            None => false,
        }
    }

    /// Reaps node `id`'s agent if it exited; returns its exit status then.
    pub fn exited(&mut self, id: u32) -> Option<std::process::ExitStatus> {
        let node = self.node_mut(id);
        let status = node.child.as_mut().and_then(|c| c.try_wait().ok().flatten())?;
        node.child = None;
        Some(status)
    }

    /// `kill -9` of node `id`'s agent; returns when the process is gone.
    pub fn kill9(&mut self, id: u32) {
        let node = self.node_mut(id);
        let mut child = node.child.take().unwrap_or_else(|| panic!("node {id} is not running"));
        let _ = child.kill();
        let _ = child.wait();
        node.paused = false;
    }

    /// `SIGSTOP` of node `id`'s agent.
    pub fn pause(&mut self, id: u32) {
        let pid = self.pid(id);
        run("kill", &["-STOP", &pid.to_string()]);
        self.node_mut(id).paused = true;
    }

    /// Marks node `id` as paused by someone else (a fence agent in `stop` mode).
    pub fn mark_paused(&mut self, id: u32) {
        self.node_mut(id).paused = true;
    }

    /// `SIGCONT` of node `id`'s agent.
    pub fn resume(&mut self, id: u32) {
        let pid = self.pid(id);
        run("kill", &["-CONT", &pid.to_string()]);
        self.node_mut(id).paused = false;
    }

    /// Stops node `id` with SIGTERM (a clean leave), waiting at most `deadline`, then SIGKILL. True when
    /// it exited by itself with status 0.
    pub fn stop(&mut self, id: u32, deadline: Duration) -> bool {
        if let Some(c) = &self.node(id).child {
            run_quiet("kill", &["-TERM", &c.id().to_string()]);
            if self.node(id).paused {
                run_quiet("kill", &["-CONT", &c.id().to_string()]);
            }
        }
        self.reap(id, deadline)
    }

    fn reap(&mut self, id: u32, deadline: Duration) -> bool {
        let Some(mut child) = self.node_mut(id).child.take() else { return true };
        let end = Instant::now() + deadline;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(10)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return false;
                }
            }
        }
    }

    /// Stops every running agent with SIGTERM, all at once; returns the ids that did not exit cleanly.
    pub fn stop_all(&mut self) -> Vec<u32> {
        let running: Vec<u32> = self.nodes.iter().filter(|n| n.child.is_some()).map(|n| n.id).collect();
        for id in &running {
            let pid = self.pid(*id);
            run_quiet("kill", &["-TERM", &pid.to_string()]);
            if self.node(*id).paused {
                run_quiet("kill", &["-CONT", &pid.to_string()]);
            }
        }
        let deadline = Duration::from_millis(self.spec.timing.failure_timeout_ms * 3 + 3000);
        running.into_iter().filter(|id| !self.reap(*id, deadline)).collect()
    }

    // ---------------------------------------------------------------------------------------------
    // Faults

    /// Splits the network into `sets` (every node not named stays with nobody): traffic between nodes
    /// of different sets is dropped both ways. Replaces the previous partition; keeps loss and delay.
    pub fn partition(&mut self, sets: &[&[u32]]) {
        let mut side: BTreeMap<u32, usize> = BTreeMap::new();
        for (i, set) in sets.iter().enumerate() {
            for id in *set {
                side.insert(*id, i);
            }
        }
        self.blocked.clear();
        for a in self.ids() {
            for b in self.ids() {
                if a != b && side.get(&a).is_none_or(|sa| side.get(&b) != Some(sa)) {
                    self.blocked.insert((a, b));
                }
            }
        }
        self.apply_faults();
    }

    /// Drops every datagram from `from` to `to` (one way), in addition to what is dropped already.
    pub fn block_one_way(&mut self, from: u32, to: u32) {
        self.blocked.insert((from, to));
        self.apply_faults();
    }

    /// Removes every partition and one-way block (loss, delay and links down stay).
    pub fn heal(&mut self) {
        self.blocked.clear();
        self.apply_faults();
    }

    /// Drops `loss_pct` % of all datagrams between nodes and, when the kernel has `sch_netem`, delays
    /// each by `delay_ms`. Returns whether the delay could be applied.
    pub fn set_link_quality(&mut self, loss_pct: u32, delay_ms: u64) -> bool {
        self.loss_pct = loss_pct;
        self.apply_faults();
        let sw = self.switch_ns.clone();
        let mut delayed = true;
        for id in self.ids() {
            let dev = format!("s{id}");
            run_quiet("ip", &["netns", "exec", &sw, "tc", "qdisc", "del", "dev", &dev, "root"]);
            if delay_ms > 0 {
                delayed &= run_quiet(
                    "ip",
                    &[
                        "netns",
                        "exec",
                        &sw,
                        "tc",
                        "qdisc",
                        "add",
                        "dev",
                        &dev,
                        "root",
                        "netem",
                        "delay",
                        &format!("{delay_ms}ms"),
                    ],
                );
            }
        }
        self.delay_ms = if delayed { delay_ms } else { 0 };
        delay_ms == 0 || delayed
    }

    /// Takes node `id`'s link to the switch down (`up = false`) or up.
    pub fn set_link(&mut self, id: u32, up: bool) {
        let sw = self.switch_ns.clone();
        run("ip", &["-n", &sw, "link", "set", &format!("s{id}"), if up { "up" } else { "down" }]);
    }

    /// Writes the switch's nftables table from the current partition and loss, atomically.
    fn apply_faults(&mut self) {
        let mut rules = String::new();
        for (a, b) in &self.blocked {
            let _ = writeln!(rules, "    ip saddr 10.77.0.{a} ip daddr 10.77.0.{b} drop");
        }
        if self.loss_pct > 0 {
            let _ = writeln!(rules, "    meta protocol ip numgen random mod 100 < {} drop", self.loss_pct);
        }
        let text = format!(
            "table bridge cohort_faults {{}}\ndelete table bridge cohort_faults\n\
             table bridge cohort_faults {{\n  chain faults {{\n    type filter hook forward priority 0; policy accept;\n{rules}  }}\n}}\n"
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.switch_ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nft");
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write the nft ruleset");
        let out = child.wait_with_output().expect("wait for nft");
        assert!(out.status.success(), "nft failed: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    }

    // ---------------------------------------------------------------------------------------------
    // Observing

    /// Node `id`'s status document, or `None` while its socket does not answer (within 1 s). The bed
    /// keeps one status connection per node and reconnects when it breaks.
    pub fn status(&self, id: u32) -> Option<Value> {
        // A stopped agent (paused by the bed or by a fence agent) cannot answer; do not wait for it.
        let pid = self.node(id).child.as_ref().map(Child::id)?;
        if self.node(id).paused || process_stopped(pid) {
            return None;
        }
        let socket = self.node(id).socket.clone();
        let cached = self.status_clients.borrow_mut().remove(&id);
        let (client, status) = self.rt.block_on(async move {
            let fut = async {
                let mut c = match cached {
                    Some(c) => c,
                    None => Client::connect(&socket, "netns-bed-status").await.ok()?,
                };
                let s = c.status().await.ok()?;
                Some((c, s))
            };
            match tokio::time::timeout(Duration::from_secs(1), fut).await.ok().flatten() {
                Some((c, s)) => (Some(c), Some(s)),
                None => (None, None),
            }
        });
        if let Some(c) = client {
            self.status_clients.borrow_mut().insert(id, c);
        }
        status
    }

    /// Node `id`'s view as (members as (node, epoch), primary).
    pub fn view(&self, id: u32) -> Option<(Vec<(u32, u64)>, bool)> {
        view_of(&self.status(id)?)
    }

    /// The service manager, when [`Bed::auto_restart`] is on (called by every wait): notes agents that
    /// exited by themselves and starts each again [`Bed::restart_delay`] after its exit, first doing to
    /// its data directory what [`Bed::on_next_restart`] asked (once).
    pub fn supervise(&mut self) {
        if !self.auto_restart {
            return;
        }
        for id in self.ids() {
            if self.node(id).child.is_some() {
                if let Some(status) = self.exited(id) {
                    eprintln!(
                        "netns bed: node {id}'s agent exited ({status}); the service manager restarts it"
                    );
                    self.node_mut(id).exited_at = Some(Instant::now());
                }
            }
            let due = self.node(id).exited_at.is_some_and(|t| t.elapsed() >= self.restart_delay);
            if due && self.node(id).child.is_none() {
                match std::mem::take(&mut self.node_mut(id).disk_on_restart) {
                    Disk::Keep => {}
                    Disk::Wipe => self.wipe_data_dir(id),
                    Disk::Restore(backup) => self.restore_data_dir(id, &backup),
                }
                let node = self.node_mut(id);
                node.exited_at = None;
                node.service_restarts += 1;
                self.start(id);
            }
        }
    }

    /// What the service manager does to node `id`'s data directory before it next restarts the agent.
    pub fn on_next_restart(&mut self, id: u32, disk: Disk) {
        self.node_mut(id).disk_on_restart = disk;
    }

    /// Copies node `id`'s data directory (without the event log and the socket) to
    /// `<bed>/backup-node<id>-<name>` and returns that path. Take it while the agent is stopped, as a
    /// consistent backup would be.
    pub fn backup_data_dir(&self, id: u32, name: &str) -> PathBuf {
        assert!(
            self.node(id).child.is_none(),
            "back up node {id}'s data directory while its agent is stopped"
        );
        let to = self.dir.join(format!("backup-node{id}-{name}"));
        let _ = fs::remove_dir_all(&to);
        copy_state(&self.node(id).data_dir, &to);
        to
    }

    /// Removes everything in node `id`'s data directory except the event log (a wiped disk). The agent
    /// must not be running.
    pub fn wipe_data_dir(&self, id: u32) {
        assert!(self.node(id).child.is_none(), "wipe node {id}'s data directory while its agent is stopped");
        let dir = &self.node(id).data_dir;
        for entry in fs::read_dir(dir).map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default() {
            if entry.file_name() == "events.jsonl" {
                continue;
            }
            let p = entry.path();
            let _ = if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
        }
    }

    /// Replaces node `id`'s data directory (except the event log) with `backup`. The agent must not be
    /// running.
    pub fn restore_data_dir(&self, id: u32, backup: &Path) {
        self.wipe_data_dir(id);
        copy_state(backup, &self.node(id).data_dir);
    }

    /// Polls `check` until it returns `Some` or `deadline` passes, then panics naming `what` with every
    /// node's status. Restarts exited agents when [`Bed::auto_restart`] is on.
    pub fn wait_until<T>(
        &mut self,
        what: &str,
        deadline: Duration,
        mut check: impl FnMut(&mut Bed) -> Option<T>,
    ) -> T {
        let end = Instant::now() + deadline;
        loop {
            self.supervise();
            if let Some(v) = check(self) {
                return v;
            }
            if Instant::now() >= end {
                let mut report = String::new();
                for id in self.ids() {
                    let _ = writeln!(
                        report,
                        "node {id}: {}",
                        self.status(id).map_or("no answer".into(), |s| brief_status(&s))
                    );
                }
                panic!("[{}] timed out after {deadline:?} waiting for {what}\n{report}", self.name);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The common primary view of exactly `ids` at every one of them, if they have one.
    pub fn common_view(&self, ids: &[u32]) -> Option<Vec<(u32, u64)>> {
        let mut want: Vec<u32> = ids.to_vec();
        want.sort_unstable();
        let mut first: Option<Vec<(u32, u64)>> = None;
        for id in &want {
            let (members, primary) = self.view(*id)?;
            let nodes: Vec<u32> = members.iter().map(|m| m.0).collect();
            if !primary || nodes != want {
                return None;
            }
            match &first {
                None => first = Some(members),
                Some(f) if *f != members => return None,
                Some(_) => {}
            }
        }
        first
    }

    /// Waits until every node in `ids` installed one primary view whose members are exactly `ids`.
    pub fn wait_for_view(&mut self, ids: &[u32], deadline: Duration) -> Vec<(u32, u64)> {
        let mut want = ids.to_vec();
        want.sort_unstable();
        self.wait_until(&format!("one primary view of {want:?} at all of them"), deadline, |b| {
            b.common_view(&want)
        })
    }

    /// Waits until every node in `ids` answers and is not in a primary view (blocked).
    pub fn wait_blocked(&mut self, ids: &[u32], deadline: Duration) {
        self.wait_until(&format!("{ids:?} blocked outside a primary view"), deadline, |b| {
            ids.iter().all(|id| b.view(*id).is_some_and(|(_, p)| !p)).then_some(())
        })
    }

    /// Measures a failover after a fault at `fault_ms` (wall clock) that removes `gone` from the view
    /// of `survivors`: detection (until some survivor is changing views or installed a view without
    /// `gone`) and the view change (until all survivors installed one primary view of exactly
    /// `survivors`). Records both under `what`, asserts L4's bound on their sum, and returns the view.
    pub fn measure_failover(
        &mut self,
        what: &str,
        fault_ms: u64,
        survivors: &[u32],
        gone: &[u32],
    ) -> Vec<(u32, u64)> {
        let t = self.spec.timing;
        let gone_set: BTreeSet<u32> = gone.iter().copied().collect();
        let detected_ms =
            self.wait_until(&format!("{what}: a survivor reacting"), Duration::from_secs(30), |b| {
                survivors
                    .iter()
                    .any(|id| {
                        b.status(*id).is_some_and(|s| {
                            s["changing"].as_bool() == Some(true)
                                || view_of(&s)
                                    .is_some_and(|(m, _)| m.iter().all(|x| !gone_set.contains(&x.0)))
                        })
                    })
                    .then(now_ms)
            });
        let view = self.wait_for_view(survivors, Duration::from_secs(30));
        let installed_ms = self.view_installed_ms(survivors, &view).unwrap_or_else(now_ms);
        let first_install = self.first_view_install_ms(survivors, &view, fault_ms).unwrap_or(detected_ms);
        let detected_ms = detected_ms.min(first_install);
        let detection = detected_ms.saturating_sub(fault_ms);
        let change = installed_ms.saturating_sub(detected_ms);
        self.measures.detection.push((what.to_string(), detection));
        self.measures.view_change.push((what.to_string(), change));
        let total = installed_ms.saturating_sub(fault_ms);
        println!(
            "NETNS [{}] {what}: detection {detection} ms, view change {change} ms, total {total} ms (failure timeout {} ms)",
            self.name, t.failure_timeout_ms
        );
        let bound = t.failover_bound();
        assert!(
            Duration::from_millis(total) <= bound,
            "[{}] {what}: the survivors' view was installed {total} ms after the fault, more than L4's {bound:?}",
            self.name
        );
        view
    }

    /// Records the time from `since_ms` until every one of `ids` was in one primary view of exactly
    /// `ids` (from the event logs), asserting it is within `bound`. Returns the view.
    pub fn measure_merge(
        &mut self,
        what: &str,
        since_ms: u64,
        ids: &[u32],
        bound: Duration,
    ) -> Vec<(u32, u64)> {
        let view = self.wait_for_view(ids, bound + Duration::from_secs(20));
        let at = self.view_installed_ms(ids, &view).unwrap_or_else(now_ms);
        let ms = at.saturating_sub(since_ms);
        self.measures.merge.push((what.to_string(), ms));
        println!(
            "NETNS [{}] {what}: one primary view of {} nodes after {ms} ms (bound {} ms)",
            self.name,
            ids.len(),
            bound.as_millis()
        );
        assert!(
            Duration::from_millis(ms) <= bound,
            "[{}] {what}: converged after {ms} ms, more than the bound {bound:?}",
            self.name
        );
        view
    }

    /// The wall-clock time at which the last of `ids` installed the view whose members are `members`
    /// (from the event logs).
    pub fn view_installed_ms(&self, ids: &[u32], members: &[(u32, u64)]) -> Option<u64> {
        let want: Vec<Value> = members.iter().map(|(n, e)| json!([n, e])).collect();
        let mut last = 0;
        for id in ids {
            let ts = self
                .events(*id)
                .iter()
                .rev()
                .find(|e| e["event"] == "view" && e["members"].as_array() == Some(&want))
                .and_then(|e| e["ts_ms"].as_u64())?;
            last = last.max(ts);
        }
        Some(last)
    }

    /// The wall-clock time at which the first of `ids` installed the view whose members are `members`,
    /// after `since_ms` (from the event logs).
    pub fn first_view_install_ms(&self, ids: &[u32], members: &[(u32, u64)], since_ms: u64) -> Option<u64> {
        let want: Vec<Value> = members.iter().map(|(n, e)| json!([n, e])).collect();
        ids.iter()
            .filter_map(|id| {
                self.events(*id)
                    .iter()
                    .filter(|e| e["event"] == "view" && e["members"].as_array() == Some(&want))
                    .filter_map(|e| e["ts_ms"].as_u64())
                    .find(|ts| *ts >= since_ms)
            })
            .min()
    }

    /// Node `id`'s event log as JSON values (every epoch; one file per node).
    pub fn events(&self, id: u32) -> Vec<Value> {
        let path = self.node(id).data_dir.join("events.jsonl");
        fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Events of node `id` with `event == kind` for which `pred` holds.
    pub fn events_where(&self, id: u32, kind: &str, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.events(id).into_iter().filter(|e| e["event"] == kind && pred(e)).collect()
    }

    /// Waits until some node in `on` logged an event `kind` for which `pred` holds; returns it.
    pub fn wait_event(
        &mut self,
        on: &[u32],
        kind: &str,
        deadline: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        self.wait_until(&format!("a `{kind}` event on {on:?}"), deadline, |b| {
            on.iter().find_map(|id| b.events_where(*id, kind, &pred).into_iter().next())
        })
    }

    /// Node `id`'s current epoch per its status.
    pub fn epoch(&self, id: u32) -> Option<u64> {
        self.status(id)?["epoch"].as_u64()
    }

    /// Runs `cohort fence ack target` inside node `on`'s namespace (the operator's command).
    pub fn fence_ack(&self, on: u32, target: u32) {
        let n = self.node(on);
        let out = Command::new("ip")
            .args(["netns", "exec", &n.ns])
            .arg(cohort_bin())
            .args(["fence", "ack", &target.to_string(), "--operator-socket"])
            .arg(n.socket.with_file_name("operator.sock"))
            .output()
            .expect("run cohort fence ack");
        assert!(
            out.status.success(),
            "cohort fence ack {target} on node {on} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // ---------------------------------------------------------------------------------------------
    // Clients

    /// Starts node `id`'s client process inside its namespace: it joins [`CLIENT_GROUP`], sends a
    /// message every `spec.client_send_interval_ms` while unblocked, keeps the group's state (a count and
    /// a hash chain of delivered messages) for state transfers, reconnects when its agent goes away, and
    /// logs what it sees to `<dir>/client<id>.jsonl`.
    pub fn start_client(&mut self, id: u32) {
        let exe = std::env::current_exe().expect("the test binary");
        let dir = self.dir.clone();
        let interval = self.spec.client_send_interval_ms;
        let provide_delay = self.spec.client_provide_delay_ms;
        let node = self.node_mut(id);
        if node.client.is_some() {
            return;
        }
        node.client_starts += 1;
        let stderr =
            fs::File::create(dir.join(format!("client{id}.stderr.{}", node.client_starts))).expect("stderr");
        let child = Command::new("ip")
            .args(["netns", "exec", &node.ns])
            .arg(exe)
            .args([CLIENT_ENTRY_TEST, "--exact", "--nocapture", "--test-threads=1", "-q"])
            .env("COHORT_NETNS_CLIENT_SOCKET", &node.socket)
            .env("COHORT_NETNS_CLIENT_LOG", dir.join(format!("client{id}.jsonl")))
            .env("COHORT_NETNS_CLIENT_STOP", dir.join("stop-clients"))
            .env("COHORT_NETNS_CLIENT_INTERVAL_MS", interval.to_string())
            .env("COHORT_NETNS_CLIENT_PROVIDE_DELAY_MS", provide_delay.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn a client process");
        node.client = Some(child);
    }

    /// Node `id`'s client log (JSON lines written by the client process).
    pub fn client_log(&self, id: u32) -> Vec<Value> {
        fs::read_to_string(self.dir.join(format!("client{id}.jsonl")))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until the clients of `ids` are members of [`CLIENT_GROUP`] at their current agents.
    pub fn wait_clients_joined(&mut self, ids: &[u32], deadline: Duration) {
        let n = ids.len();
        self.wait_until(&format!("the clients of {ids:?} in group {CLIENT_GROUP}"), deadline, |b| {
            ids.iter()
                .all(|id| {
                    b.status(*id)
                        .is_some_and(|s| s["groups"][CLIENT_GROUP].as_array().is_some_and(|m| m.len() == n))
                })
                .then_some(())
        })
    }

    /// Stops every client process (they exit when the stop file appears; then by SIGKILL).
    pub fn stop_clients(&mut self) {
        let _ = fs::write(self.dir.join("stop-clients"), "");
        let end = Instant::now() + Duration::from_secs(3);
        for n in &mut self.nodes {
            if let Some(mut c) = n.client.take() {
                loop {
                    match c.try_wait() {
                        Ok(Some(_)) => break,
                        Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(10)),
                        _ => {
                            let _ = c.kill();
                            let _ = c.wait();
                            break;
                        }
                    }
                }
            }
        }
    }

    // ---------------------------------------------------------------------------------------------
    // The end of a scenario

    /// Every node's event log path.
    pub fn event_logs(&self) -> Vec<PathBuf> {
        self.nodes.iter().map(|n| n.data_dir.join("events.jsonl")).filter(|p| p.exists()).collect()
    }

    /// Runs `cohort verify` over every event log; returns (success, output).
    pub fn verify(&self) -> (bool, String) {
        let out = Command::new(cohort_bin())
            .arg("verify")
            .args(self.event_logs())
            .output()
            .expect("run cohort verify");
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success() && text.contains("verdict: OK"), text)
    }

    /// Waits until, after now, every node in `ids` delivered a message from the client of every node in
    /// `ids`: the clients in all namespaces multicast through their agents and every member delivers
    /// them (L2 once the faults stopped). Prints the time it took.
    pub fn wait_messages_flow(&mut self, ids: &[u32]) {
        let since = now_ms();
        let want: BTreeSet<u64> = ids.iter().map(|n| u64::from(*n)).collect();
        let deadline =
            Duration::from_millis(20 * self.spec.client_send_interval_ms) + Duration::from_secs(15);
        self.wait_until("a delivery from every node's client at every node", deadline, |b| {
            ids.iter()
                .all(|id| {
                    let senders: BTreeSet<u64> = b
                        .events_where(*id, "deliver", |e| e["ts_ms"].as_u64().is_some_and(|t| t >= since))
                        .iter()
                        .filter_map(|e| e["sender"][0].as_u64())
                        .collect();
                    want.is_subset(&senders)
                })
                .then_some(())
        });
        println!(
            "NETNS [{}] after convergence every node delivered messages from every node's client within {} ms",
            self.name,
            now_ms() - since
        );
    }

    /// The end of every scenario: waits (L1) until every running node is in one primary view with all
    /// of `expect_all` and messages from every client reach every node, stops clients and agents,
    /// asserts `cohort verify` passes, and prints the measured times.
    pub fn finish(mut self, expect_all: &[u32]) {
        if !expect_all.is_empty() {
            let bound = self.spec.timing.convergence_bound();
            self.wait_for_view(expect_all, bound);
            if self.spec.client_send_interval_ms > 0 {
                self.wait_messages_flow(expect_all);
            }
        }
        self.stop_clients();
        let unclean = self.stop_all();
        let (ok, text) = self.verify();
        println!("NETNS [{}] cohort verify:\n{}", self.name, text.trim_end());
        assert!(ok, "[{}] cohort verify failed:\n{text}", self.name);
        if !unclean.is_empty() {
            println!("NETNS [{}] note: agents {unclean:?} did not exit cleanly on SIGTERM", self.name);
        }
        let m = &self.measures;
        let fmt = |v: &Vec<(String, u64)>| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.iter().map(|(w, ms)| format!("{w}={ms}ms")).collect::<Vec<_>>().join(", ")
            }
        };
        println!(
            "NETNS-SUMMARY [{}] nodes={} runtime={:.1}s detection: {} | view change: {} | merge: {}",
            self.name,
            self.spec.nodes,
            self.started.elapsed().as_secs_f64(),
            fmt(&m.detection),
            fmt(&m.view_change),
            fmt(&m.merge)
        );
        assert!(unclean.is_empty(), "[{}] agents {unclean:?} did not exit cleanly on SIGTERM", self.name);
    }

    fn tails(&self) -> String {
        let mut out = String::new();
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.retain(|p| p.file_name().is_some_and(|n| n.to_string_lossy().contains(".stderr.")));
        files.sort();
        for f in files {
            let text = fs::read_to_string(&f).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(25)..];
            if !tail.is_empty() {
                let _ =
                    writeln!(out, "---- {} (last {} lines)\n{}", f.display(), tail.len(), tail.join("\n"));
            }
        }
        out
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        self.status_clients.borrow_mut().clear();
        let _ = fs::write(self.dir.join("stop-clients"), "");
        for n in &mut self.nodes {
            for child in [n.child.take(), n.client.take()].into_iter().flatten() {
                let mut child = child;
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // Anything else still inside our namespaces (fence agents started by agents) goes too.
        for ns in self.nodes.iter().map(|n| n.ns.clone()).chain([self.switch_ns.clone()]) {
            if let Ok(p) = Command::new("ip").args(["netns", "pids", &ns]).output() {
                for q in String::from_utf8_lossy(&p.stdout).split_whitespace() {
                    run_quiet("kill", &["-9", q]);
                }
            }
            run_quiet("ip", &["netns", "delete", &ns]);
        }
        if std::env::var("COHORT_TEST_KEEP").as_deref() == Ok("always") {
            eprintln!("COHORT_TEST_KEEP=always: keeping {}", self.dir.display());
            return;
        }
        if std::thread::panicking() {
            eprintln!("[{}] agent and client logs of the failed run:\n{}", self.name, self.tails());
            if std::env::var_os("COHORT_TEST_KEEP").is_some() {
                eprintln!("COHORT_TEST_KEEP is set: keeping {}", self.dir.display());
                return;
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The view in a status document: members as (node, epoch), and whether it is primary.
pub fn view_of(status: &Value) -> Option<(Vec<(u32, u64)>, bool)> {
    let view = status.get("view").filter(|v| !v.is_null())?;
    let members = view["members"]
        .as_array()?
        .iter()
        .map(|m| Some((u32::try_from(m.get(0)?.as_u64()?).ok()?, m.get(1)?.as_u64()?)))
        .collect::<Option<Vec<_>>>()?;
    let primary = status["primary"].as_bool().unwrap_or(false);
    Some((members, primary))
}

/// A one-line summary of a status document for timeout reports.
pub fn brief_status(s: &Value) -> String {
    format!(
        "member={} view={} primary={} blocked={} changing={} pending_fences={} merges={} removed_self={} self_fenced={} groups={}",
        s["member"], s["view"]["members"], s["primary"], s["blocked"], s["changing"], s["pending_fences"],
        s["stateful_merges"], s["removed_self"], s["self_fenced"], s["groups"]
    )
}

/// Copies a data directory's state from `from` to `to` (created), recursively, without the event log
/// and the client socket.
fn copy_state(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create a data directory copy");
    for entry in fs::read_dir(from).expect("read a data directory").flatten() {
        let name = entry.file_name();
        if name == "events.jsonl" || name == "cohort.sock" || name == "operator.sock" {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        if src.is_dir() {
            copy_state(&src, &dst);
        } else if entry.file_type().is_ok_and(|t| t.is_file()) {
            fs::copy(&src, &dst).expect("copy a data directory file");
        }
    }
}

fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// -------------------------------------------------------------------------------------------------
// The client process

/// The client process's main function (see [`Bed::start_client`]); returns at once unless the bed
/// started this process as a client.
pub fn client_process_main() {
    let Ok(socket) = std::env::var("COHORT_NETNS_CLIENT_SOCKET") else { return };
    let log = std::env::var("COHORT_NETNS_CLIENT_LOG").expect("COHORT_NETNS_CLIENT_LOG");
    let stop = PathBuf::from(std::env::var("COHORT_NETNS_CLIENT_STOP").expect("COHORT_NETNS_CLIENT_STOP"));
    let interval: u64 =
        std::env::var("COHORT_NETNS_CLIENT_INTERVAL_MS").ok().and_then(|s| s.parse().ok()).unwrap_or(100);
    let provide_delay: u64 =
        std::env::var("COHORT_NETNS_CLIENT_PROVIDE_DELAY_MS").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let mut log = fs::OpenOptions::new().create(true).append(true).open(log).expect("client log");
    rt.block_on(client_loop(PathBuf::from(socket), &mut log, &stop, interval, provide_delay));
}

fn log_line(log: &mut fs::File, ev: &str, extra: Value) {
    let mut v = json!({ "t": now_ms(), "ev": ev });
    if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    let _ = writeln!(log, "{v}");
}

/// The group state the clients keep and transfer: how many messages were delivered and a hash chain
/// over their ids and payloads.
#[derive(Clone, Copy, Default)]
struct AppState {
    count: u64,
    hash: u64,
}

impl AppState {
    fn apply(&mut self, msg: &str, payload: &[u8]) {
        // FNV-1a over the previous hash, the id and the payload.
        let mut h = self.hash ^ 0xcbf2_9ce4_8422_2325;
        for b in msg.as_bytes().iter().chain(payload) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.hash = h;
        self.count += 1;
    }
    fn encode(&self) -> Vec<u8> {
        let mut v = self.count.to_le_bytes().to_vec();
        v.extend_from_slice(&self.hash.to_le_bytes());
        v
    }
    fn decode(b: &[u8]) -> AppState {
        if b.len() != 16 {
            return AppState::default();
        }
        let mut c = [0u8; 8];
        let mut h = [0u8; 8];
        c.copy_from_slice(&b[..8]);
        h.copy_from_slice(&b[8..]);
        AppState { count: u64::from_le_bytes(c), hash: u64::from_le_bytes(h) }
    }
}

async fn client_loop(
    socket: PathBuf,
    log: &mut fs::File,
    stop: &Path,
    interval_ms: u64,
    provide_delay_ms: u64,
) {
    let mut connected_once = false;
    // After `removed_self` the application's state is stale: it reconnects and joins again as the
    // agent's next member, which brings the group state by transfer.
    let mut removed: Option<cohort::Member> = None;
    let mut waited = 0u32;
    while !stop.exists() {
        let mut client = match Client::connect(&socket, "netns-client").await {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let me = client.member();
        if removed == Some(me) && waited < 200 {
            // The agent has not taken its new epoch yet.
            drop(client);
            waited += 1;
            tokio::time::sleep(Duration::from_millis(25)).await;
            continue;
        }
        removed = None;
        waited = 0;
        log_line(log, "connected", json!({ "member": [me.node().0, me.epoch().0], "again": connected_once }));
        connected_once = true;
        let end = client_session(&mut client, log, stop, interval_ms, provide_delay_ms).await;
        if end == "removed_self" {
            removed = Some(me);
        }
        log_line(log, "disconnected", json!({ "why": end }));
    }
}

/// One connection: join, keep state, send while unblocked. Returns why it ended.
async fn client_session(
    client: &mut Client,
    log: &mut fs::File,
    stop: &Path,
    interval_ms: u64,
    provide_delay_ms: u64,
) -> String {
    if let Err(e) = client.join(CLIENT_GROUP).await {
        return format!("join failed: {e}");
    }
    let me = client.member();
    let mut state = AppState::default();
    let mut blocked = false;
    let mut in_group = false;
    let mut stopped = false;
    let mut sent = 0u64;
    let mut send_failed = 0u64;
    let tick = Duration::from_millis(if interval_ms == 0 { 200 } else { interval_ms });
    let mut next_send = Instant::now() + tick;
    loop {
        if stop.exists() {
            log_line(
                log,
                "summary",
                json!({ "sent": sent, "send_failed": send_failed, "count": state.count, "hash": state.hash }),
            );
            return "stop".into();
        }
        let wait = next_send.saturating_duration_since(Instant::now());
        match tokio::time::timeout(wait, client.next_event()).await {
            Err(_) => {
                next_send = Instant::now() + tick;
                if interval_ms > 0 && in_group && !blocked && !stopped {
                    let payload = format!("{}.{}:{sent}", me.node().0, me.epoch().0).into_bytes();
                    match client.send_nowait(CLIENT_GROUP, payload, cohort::Delivery::Agreed).await {
                        Ok(_) => sent += 1,
                        Err(e) => return format!("send failed: {e}"),
                    }
                }
            }
            Ok(Err(e)) => {
                log_line(
                    log,
                    "summary",
                    json!({ "sent": sent, "send_failed": send_failed, "count": state.count, "hash": state.hash }),
                );
                return format!("{e}");
            }
            Ok(Ok(ev)) => match ev {
                ClientEvent::Deliver { group, msg, payload, .. } if group == CLIENT_GROUP => {
                    state.apply(&msg, &payload)
                }
                ClientEvent::ProvideState { group, joiner, token } => {
                    log_line(
                        log,
                        "provide_state",
                        json!({ "joiner": [joiner.node().0, joiner.epoch().0], "count": state.count }),
                    );
                    if provide_delay_ms > 0 {
                        tokio::time::sleep(Duration::from_millis(provide_delay_ms)).await;
                    }
                    if let Err(e) = client.provide_state(&group, joiner, token, state.encode()).await {
                        return format!("provide_state failed: {e}");
                    }
                }
                ClientEvent::ApplyState { provider, state: bytes, .. } => {
                    state = AppState::decode(&bytes);
                    log_line(
                        log,
                        "apply_state",
                        json!({ "provider": [provider.node().0, provider.epoch().0], "count": state.count, "hash": state.hash }),
                    );
                }
                ClientEvent::GroupView { group, members } if group == CLIENT_GROUP => {
                    in_group = members.contains(&me);
                    log_line(log, "group_view", json!({ "members": members.len(), "in_group": in_group }));
                }
                ClientEvent::View { members, primary, .. } => {
                    log_line(log, "view", json!({ "members": members.len(), "primary": primary }));
                }
                ClientEvent::Blocked { reason } => {
                    blocked = true;
                    log_line(log, "blocked", json!({ "reason": reason }));
                }
                ClientEvent::Unblocked => {
                    blocked = false;
                    stopped = false;
                    log_line(log, "unblocked", json!({}));
                }
                ClientEvent::RemovedSelf { .. } => {
                    log_line(log, "removed_self", json!({}));
                    log_line(
                        log,
                        "summary",
                        json!({ "sent": sent, "send_failed": send_failed, "count": state.count, "hash": state.hash }),
                    );
                    return "removed_self".into();
                }
                ClientEvent::SelfFenced { reason } => {
                    stopped = true;
                    log_line(log, "self_fenced", json!({ "reason": reason }));
                }
                ClientEvent::Recovered { failed } => {
                    let f: Vec<Value> = failed.iter().map(|m| json!([m.node().0, m.epoch().0])).collect();
                    log_line(log, "recovered", json!({ "failed": f }));
                }
                ClientEvent::SendFailed { .. } => send_failed += 1,
                _ => {}
            },
        }
    }
}
