//! Shared support for tests and benchmarks that run real `cohort agent` processes on loopback.
//!
//! A [`Cluster`] owns a temporary directory with `cluster.toml`, one `nodeN.toml` per node, the cluster
//! key (made with `cohort keygen`), each node's data directory, socket and event log, and the agents'
//! stderr. It starts agents as child processes, kills them with SIGKILL (`kill -9`), stops them with
//! SIGTERM (a clean leave), reads their status over the client socket, and runs `cohort verify` over
//! the event logs.
//!
//! **Cleanup is unconditional:** dropping a `Cluster` (also while a test panics) kills every agent it
//! started, by PID, and removes its directory. On a panic it first prints the tail of every agent's
//! stderr, so a failing run says what the agents saw; with `COHORT_TEST_KEEP=1` it keeps the directory of a
//! failed run (event logs, configuration) for a closer look, and says where it is.
//!
//! Waits are on events with deadlines ([`Cluster::wait_until`]), never fixed sleeps. Clusters of one
//! test binary run one at a time (a process-wide lock): the tests measure timing on a machine with two
//! cores, and agents of parallel tests would steal each other's CPU.
//!
//! The benchmark (`actors/examples/bench.rs`) includes this file with `#[path]`, so the binary is found
//! through `CARGO_BIN_EXE_cohort` in tests and through `COHORT_BIN` or `target/release/cohort` elsewhere.

#![allow(dead_code)]

use cohort::Delivery;
use cohort_actors::client::{Client, ClientError, ClientEvent};
use serde_json::Value;
use std::fmt::Write as _;
use std::fs;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Timing of a test cluster, in milliseconds.
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
    /// Fast timings for tests on loopback.
    pub const FAST: Timing = Timing {
        heartbeat_interval_ms: 50,
        failure_timeout_ms: 500,
        discovery_interval_ms: 250,
        view_change_timeout_ms: 300,
        retransmit_interval_ms: 20,
    };
    /// The built-in defaults (`config/default.toml`).
    pub const DEFAULT: Timing = Timing {
        heartbeat_interval_ms: 100,
        failure_timeout_ms: 1000,
        discovery_interval_ms: 500,
        view_change_timeout_ms: 400,
        retransmit_interval_ms: 20,
    };
}

/// The `cohort` binary under test.
pub fn cohort_bin() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_cohort") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("COHORT_BIN") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/cohort")
}

/// One cluster at a time per process (see the module documentation).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// One configured node and, while it runs, its agent process.
pub struct Node {
    /// The node id.
    pub id: u32,
    /// Its UDP address.
    pub port: u16,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its client socket.
    pub socket: PathBuf,
    /// Its operator socket (the link filter; `cohort fence ack`).
    pub operator_socket: PathBuf,
    /// Its node configuration file.
    pub config: PathBuf,
    /// The running agent, if any.
    pub child: Option<Child>,
    /// How many times it was started (stderr files are numbered by it).
    pub starts: u32,
}

/// A cluster of agents on loopback in a temporary directory. See the module documentation.
pub struct Cluster {
    /// The temporary directory.
    pub dir: PathBuf,
    /// The shared configuration file.
    pub cluster_toml: PathBuf,
    /// The nodes, index = id - 1.
    pub nodes: Vec<Node>,
    /// The timing written to the configuration.
    pub timing: Timing,
    rt: tokio::runtime::Runtime,
    _lock: MutexGuard<'static, ()>,
}

impl Cluster {
    /// Writes the configuration of an `n`-node cluster and its key; starts nothing.
    pub fn new(n: u32, timing: Timing) -> Cluster {
        Cluster::with_extra(n, timing, "")
    }

    /// Like [`Cluster::new`], with `extra` TOML appended to `cluster.toml` (e.g. a `[limits]` section).
    pub fn with_extra(n: u32, timing: Timing, extra: &str) -> Cluster {
        let lock = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "cohort-it-{}-{}-{nanos:x}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).expect("create the cluster's temporary directory");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
        // From here on, Drop removes the directory whatever happens.
        let mut cluster = Cluster {
            cluster_toml: dir.join("cluster.toml"),
            dir,
            nodes: Vec::new(),
            timing,
            rt,
            _lock: lock,
        };
        let ports = free_udp_ports(n as usize);
        let mut toml = format!("[cluster]\nname = \"cohort-it-{n}\"\n\n");
        for (i, port) in ports.iter().enumerate() {
            let _ = write!(toml, "[[cluster.nodes]]\nid = {}\naddr = \"127.0.0.1:{port}\"\n\n", i + 1);
        }
        let t = timing;
        let _ = write!(
            toml,
            "[timing]\nheartbeat_interval_ms = {}\nfailure_timeout_ms = {}\ndiscovery_interval_ms = {}\n\
             view_change_timeout_ms = {}\nretransmit_interval_ms = {}\n\n\
             [merge]\npolicy = \"fence\"\n\n[fencing]\nmode = \"agent\"\nrestart_counts_as_fenced = true\n\n{extra}\n",
            t.heartbeat_interval_ms,
            t.failure_timeout_ms,
            t.discovery_interval_ms,
            t.view_change_timeout_ms,
            t.retransmit_interval_ms,
        );
        fs::write(&cluster.cluster_toml, toml).expect("write cluster.toml");
        let key = cluster.dir.join("cluster.key");
        let out = Command::new(cohort_bin())
            .arg("keygen")
            .arg("--out")
            .arg(&key)
            .output()
            .expect("run cohort keygen");
        assert!(out.status.success(), "cohort keygen failed: {}", String::from_utf8_lossy(&out.stderr));
        for (i, port) in ports.into_iter().enumerate() {
            let id = i as u32 + 1;
            let data_dir = cluster.dir.join(format!("node{id}"));
            let socket = data_dir.join("cohort.sock");
            let operator_socket = data_dir.join("operator.sock");
            let config = cluster.dir.join(format!("node{id}.toml"));
            // The tests make partitions with the link filter, which only a testing setting enables.
            let node_toml = format!(
                "[node]\nid = {id}\ndata_dir = \"{}\"\nkey_file = \"{}\"\n\n[api]\nsocket = \"{}\"\n\n\
                 [admin]\nlisten = \"\"\n\n[log]\nlevel = \"info\"\n\n[testing]\nlink_filter = true\n",
                data_dir.display(),
                key.display(),
                socket.display()
            );
            fs::write(&config, node_toml).expect("write the node configuration");
            cluster.nodes.push(Node {
                id,
                port,
                data_dir,
                socket,
                operator_socket,
                config,
                child: None,
                starts: 0,
            });
        }
        cluster
    }

    fn node(&self, id: u32) -> &Node {
        &self.nodes[id as usize - 1]
    }

    fn node_mut(&mut self, id: u32) -> &mut Node {
        &mut self.nodes[id as usize - 1]
    }

    /// The node ids, 1..=n.
    pub fn ids(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// Starts node `id`'s agent.
    pub fn start(&mut self, id: u32) {
        self.start_with(id, &[], &[]);
    }

    /// Starts node `id`'s agent with extra environment variables and extra `cohort agent` arguments.
    pub fn start_with(&mut self, id: u32, env: &[(&str, &str)], args: &[&str]) {
        let cluster_toml = self.cluster_toml.clone();
        let dir = self.dir.clone();
        let node = self.node_mut(id);
        assert!(node.child.is_none(), "node {id} is already running");
        node.starts += 1;
        let stderr =
            fs::File::create(dir.join(format!("node{id}.stderr.{}", node.starts))).expect("stderr file");
        let child = Command::new(cohort_bin())
            .arg("agent")
            .arg("--config")
            .arg(&cluster_toml)
            .arg("--config")
            .arg(&node.config)
            .args(args)
            .envs(env.iter().copied())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn cohort agent");
        node.child = Some(child);
    }

    /// Starts every node.
    pub fn start_all(&mut self) {
        for id in self.ids() {
            self.start(id);
        }
    }

    /// The PID of node `id`'s agent.
    pub fn pid(&self, id: u32) -> u32 {
        self.node(id).child.as_ref().map(Child::id).unwrap_or_else(|| panic!("node {id} is not running"))
    }

    /// `kill -9` of node `id`'s agent; returns when the process is gone.
    pub fn kill9(&mut self, id: u32) {
        let node = self.node_mut(id);
        let mut child = node.child.take().unwrap_or_else(|| panic!("node {id} is not running"));
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stops node `id` with SIGTERM (a clean leave), waiting at most `deadline`, then SIGKILL.
    /// Returns true when it exited by itself with status 0.
    pub fn stop(&mut self, id: u32, deadline: Duration) -> bool {
        self.signal_term(id);
        self.reap(id, deadline)
    }

    fn signal_term(&self, id: u32) {
        if let Some(child) = &self.node(id).child {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        }
    }

    /// Waits at most `deadline` for node `id` to exit, then kills it; true when it exited with status 0.
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

    /// Stops every running node with SIGTERM, all at once; returns the ids that did not exit cleanly.
    pub fn stop_all(&mut self) -> Vec<u32> {
        let running: Vec<u32> = self.nodes.iter().filter(|n| n.child.is_some()).map(|n| n.id).collect();
        for id in &running {
            self.signal_term(*id);
        }
        let deadline = Duration::from_millis(self.timing.failure_timeout_ms * 3 + 2000);
        running.into_iter().filter(|id| !self.reap(*id, deadline)).collect()
    }

    /// The path of node `id`'s stderr file of its latest start.
    pub fn stderr_path(&self, id: u32) -> PathBuf {
        self.dir.join(format!("node{id}.stderr.{}", self.node(id).starts))
    }

    /// Whether node `id`'s agent has exited (reaping it if so).
    pub fn exited(&mut self, id: u32) -> Option<std::process::ExitStatus> {
        self.node_mut(id).child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Node `id`'s status document, or `None` while its socket does not answer.
    pub fn status(&self, id: u32) -> Option<Value> {
        let socket = self.node(id).socket.clone();
        self.rt.block_on(async move {
            let fut = async {
                let mut c = Client::connect(&socket, "test-status").await.ok()?;
                c.status().await.ok()
            };
            tokio::time::timeout(Duration::from_secs(2), fut).await.ok().flatten()
        })
    }

    /// Node `id`'s installed view as (members as (node, epoch), primary), when it has one.
    pub fn view(&self, id: u32) -> Option<(Vec<(u32, u64)>, bool)> {
        let s = self.status(id)?;
        view_of(&s)
    }

    /// Polls `check` every few milliseconds until it returns `Some`, or panics after `deadline` naming
    /// `what` and every node's last status.
    pub fn wait_until<T>(
        &self,
        what: &str,
        deadline: Duration,
        mut check: impl FnMut(&Cluster) -> Option<T>,
    ) -> T {
        let end = Instant::now() + deadline;
        loop {
            if let Some(v) = check(self) {
                return v;
            }
            if Instant::now() >= end {
                let mut report = String::new();
                for n in &self.nodes {
                    let _ = writeln!(
                        report,
                        "node {}: {}",
                        n.id,
                        self.status(n.id).map_or("no answer".into(), |s| s.to_string())
                    );
                }
                panic!("timed out after {deadline:?} waiting for {what}\n{report}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until every node in `ids` has installed the same primary view whose members are exactly
    /// `ids` (any epochs); returns that view's members.
    pub fn wait_for_view(&self, ids: &[u32], deadline: Duration) -> Vec<(u32, u64)> {
        let mut want: Vec<u32> = ids.to_vec();
        want.sort_unstable();
        self.wait_until(&format!("one primary view of {want:?} at all of them"), deadline, |c| {
            let mut first: Option<Vec<(u32, u64)>> = None;
            for id in &want {
                let (members, primary) = c.view(*id)?;
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
        })
    }

    /// Every node's event log path.
    pub fn event_logs(&self) -> Vec<PathBuf> {
        self.nodes.iter().map(|n| n.data_dir.join("events.jsonl")).filter(|p| p.exists()).collect()
    }

    /// Runs `cohort verify` over every event log; returns (exit success, output).
    pub fn verify(&self) -> (bool, String) {
        let out = Command::new(cohort_bin())
            .arg("verify")
            .args(self.event_logs())
            .output()
            .expect("run cohort verify");
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    /// Stops every agent cleanly, then asserts that `cohort verify` passes over all event logs.
    pub fn stop_and_verify(&mut self) {
        let unclean = self.stop_all();
        let (ok, text) = self.verify();
        println!("cohort verify:\n{text}");
        assert!(ok, "cohort verify failed:\n{text}");
        assert!(text.contains("verdict: OK"), "unexpected verify output:\n{text}");
        assert!(unclean.is_empty(), "agents {unclean:?} did not exit cleanly on SIGTERM");
    }

    /// Runs `f` on this cluster's tokio runtime (for tests that use the client library).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// One client [`visit`] to node `id` (join `group`, multicast `count` messages, get them all back,
    /// leave), which must finish within `deadline`; a visit that does not, or fails, panics naming
    /// `round`, how far it got and the node's status.
    pub fn visit(&self, round: u32, id: u32, group: &str, count: u32, deadline: Duration) {
        let socket = self.node(id).socket.clone();
        let stage = std::sync::atomic::AtomicU32::new(0);
        self.block_on(async { tokio::time::timeout(deadline, visit(&socket, group, count, &stage)).await })
            .unwrap_or_else(|_| {
                panic!(
                    "round {round}: the visit to node {id} did not finish in {deadline:?} (stage {}: 1 \
                     connected, 2 in the group, 3 + own messages back): {:?}",
                    stage.load(std::sync::atomic::Ordering::Relaxed),
                    self.status(id)
                )
            })
            .unwrap_or_else(|e| panic!("round {round}: the visit to node {id} failed: {e}"));
    }

    fn stderr_tails(&self) -> String {
        let mut out = String::new();
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.retain(|p| p.file_name().is_some_and(|n| n.to_string_lossy().contains(".stderr.")));
        files.sort();
        for f in files {
            let text = fs::read_to_string(&f).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            let _ = writeln!(out, "---- {} (last {} lines)\n{}", f.display(), tail.len(), tail.join("\n"));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("agent logs of the failed run:\n{}", self.stderr_tails());
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
    let primary = status["primary"].as_bool().or_else(|| view["primary"].as_bool()).unwrap_or(false);
    Some((members, primary))
}

/// `n` distinct free UDP ports on 127.0.0.1: all bound at once so they differ, then released.
pub fn free_udp_ports(n: usize) -> Vec<u16> {
    let sockets: Vec<UdpSocket> =
        (0..n).map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port on 127.0.0.1")).collect();
    sockets.iter().map(|s| s.local_addr().expect("local address").port()).collect()
}

/// Resident memory of process `pid` in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// One client's visit: connect to the agent at `socket`, join `group`, multicast `count` messages and
/// wait until all of them are delivered back to it, then leave by dropping the connection.
///
/// Visits in turn to one group on different nodes often meet the previous visitor still on its way
/// out: the new join is ordered first, the leaver is asked for its state and never gives it, and the
/// joiner starts from empty state when the leave is delivered (`actors/tests/group_churn.rs`).
///
/// It counts its progress in `stage`: 1 connected, 2 in the group, 3 sent, then 3 + own deliveries seen
/// (for a report when a visit does not finish).
pub async fn visit(
    socket: &Path,
    group: &str,
    count: u32,
    stage: &std::sync::atomic::AtomicU32,
) -> Result<(), ClientError> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut client = Client::connect(socket, "rotation-test").await?;
    let me = client.member();
    stage.store(1, Relaxed);
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
    stage.store(2, Relaxed);
    for i in 0..count {
        client.send_nowait(group, format!("visit {i}").into_bytes(), Delivery::Agreed).await?;
    }
    stage.store(3, Relaxed);
    let mut own = 0;
    while own < count {
        match client.next_event().await? {
            ClientEvent::Deliver { group: g, sender, .. } if g == group && sender == me => {
                own += 1;
                stage.store(3 + own, Relaxed);
            }
            ClientEvent::SendFailed { error, .. } => return Err(ClientError::SendFailed(error)),
            ClientEvent::ProvideState { group: g, joiner, token } => {
                client.provide_state(&g, joiner, token, Vec::new()).await?
            }
            _ => {}
        }
    }
    Ok(())
}
