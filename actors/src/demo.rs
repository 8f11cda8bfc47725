//! `cohort demo`: the story of why cohort exists, played by real agents on loopback with a live timeline.
//!
//! One command, no root: it writes a cluster configuration into a temporary directory, starts N agents
//! (`cohort agent`) as child processes, runs one lock service ([`crate::lock`]) per node in this process
//! through the public client API, and plays:
//!
//! 1. the cluster forms; clients on several nodes take locks (every lock operation is an agreed
//!    multicast in the `locks` process group);
//! 2. a partition minority|majority through the agents' link filters; the minority blocks and its lock
//!    holders are told their locks are lost; the majority fences the minority with the demo fence agent
//!    (`cohort-fence-test`, which stops the agent process with SIGSTOP) and only then, on `recovered`,
//!    releases the minority's locks, so a waiting client gets one;
//! 3. the stopped nodes resume with their old state, the partition heals, and cohort catches them as
//!    stateful merges and refuses them; the merge policy resolves them (`fence`: fenced again and
//!    power-cycled; `restart`/`reset`: a new incarnation in place; `wait`: the demo plays the operator,
//!    `cohort fence ack` and a restart);
//! 4. they come back with new epochs and receive the lock table by state transfer; all N agree;
//! 5. the agents stop and `cohort verify` checks every event log against the guarantees.
//!
//! Every wait is on an event (an event-log record, an agent's status, a lock-service notice) with a
//! deadline; `--speed` only changes the pauses that keep the timeline readable. Child processes are
//! killed by PID and the directory removed when the demo ends, fails, or is interrupted (Ctrl-C).

use crate::client::Client;
use crate::lock::service::{self, LockHandle, Notice, ServiceState};
use crate::lock::table::{Effect, Mode, ReleaseCause};
use anyhow::{anyhow, bail, Context as _};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Most nodes the demo starts.
pub const MAX_NODES: u32 = 9;
/// Fewest nodes (a minority of at least one beside a majority of at least two).
pub const MIN_NODES: u32 = 3;

/// Deadline for any single step of the story.
const STEP_DEADLINE: Duration = Duration::from_secs(30);

/// The merge policy the demo configures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Policy {
    /// Fence the stale member again (here: stop it, then the demo power-cycles it).
    Fence,
    /// Tell it to restart its agent with a new epoch.
    Restart,
    /// Tell it to reset its state in place and rejoin with a new epoch.
    Reset,
    /// Keep it refused until an operator acts (the demo plays the operator).
    Wait,
}

impl Policy {
    fn name(self) -> &'static str {
        match self {
            Policy::Fence => "fence",
            Policy::Restart => "restart",
            Policy::Reset => "reset",
            Policy::Wait => "wait",
        }
    }
}

/// When to colour the timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// When standard output is a terminal.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// The demo's options.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Number of agents.
    pub nodes: u32,
    /// The stateful-merge policy.
    pub policy: Policy,
    /// Pace of the readability pauses: 1.0 normal, 2.0 twice as fast, 0 no pauses.
    pub speed: f64,
    /// Colour.
    pub color: ColorChoice,
    /// Keep the directory (configuration, event logs, agent logs) instead of removing it.
    pub keep: bool,
}

// --------------------------------------------------------------------------------------------------
// The timeline
// --------------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tone {
    Step,
    Info,
    Good,
    Warn,
    Bad,
    Lock,
    Op,
}

struct Timeline {
    start: Instant,
    color: bool,
}

impl Timeline {
    fn line(&self, tone: Tone, who: &str, text: &str) {
        let t = self.start.elapsed().as_secs_f64();
        if tone == Tone::Step {
            if self.color {
                println!("\n\x1b[1;36m{text}\x1b[0m");
            } else {
                println!("\n{text}");
            }
            return;
        }
        let who = format!("{who:<8}");
        if self.color {
            let c = match tone {
                Tone::Good => "32",
                Tone::Warn => "33",
                Tone::Bad => "1;31",
                Tone::Lock => "35",
                Tone::Op => "1",
                _ => "0",
            };
            println!("\x1b[2m{t:7.2}s\x1b[0m  \x1b[34m{who}\x1b[0m \x1b[{c}m{text}\x1b[0m");
        } else {
            println!("{t:7.2}s  {who} {text}");
        }
    }
}

// --------------------------------------------------------------------------------------------------
// Processes and files, cleaned up by Drop
// --------------------------------------------------------------------------------------------------

struct Agent {
    config: PathBuf,
    data_dir: PathBuf,
    socket: PathBuf,
    /// The operator socket: the link filter and `cohort fence ack`.
    operator_socket: PathBuf,
    child: Option<Child>,
    starts: u32,
}

struct Bed {
    dir: PathBuf,
    cohort: PathBuf,
    cluster_toml: PathBuf,
    agents: Vec<Agent>,
    keep: bool,
}

impl Drop for Bed {
    fn drop(&mut self) {
        for a in &mut self.agents {
            if let Some(mut c) = a.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if self.keep {
            println!("kept {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(anyhow!("kill -{sig} {pid} failed"))
    }
}

/// The process state letter of `/proc/PID/stat` (`T` when stopped).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rfind(')').and_then(|i| stat[i + 1..].trim_start().chars().next())
}

impl Bed {
    fn agent(&self, id: u32) -> &Agent {
        &self.agents[id as usize - 1]
    }

    fn start(&mut self, id: u32) -> anyhow::Result<u32> {
        let dir = self.dir.clone();
        let cohort = self.cohort.clone();
        let cluster_toml = self.cluster_toml.clone();
        let a = &mut self.agents[id as usize - 1];
        a.starts += 1;
        let stderr = std::fs::File::create(dir.join(format!("node{id}.stderr.{}", a.starts)))?;
        let child = Command::new(cohort)
            .arg("agent")
            .arg("--config")
            .arg(&cluster_toml)
            .arg("--config")
            .arg(&a.config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .context("cannot start cohort agent")?;
        let pid = child.id();
        std::fs::write(dir.join(format!("node{id}.pid")), format!("{pid}\n"))?;
        a.child = Some(child);
        Ok(pid)
    }

    fn pid(&self, id: u32) -> Option<u32> {
        self.agent(id).child.as_ref().map(Child::id)
    }

    fn kill9(&mut self, id: u32) {
        if let Some(mut c) = self.agents[id as usize - 1].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the agents one after the other with SIGTERM (a clean leave each), waiting (bounded) for each
    /// to exit before the next; true when all exited cleanly.
    fn stop_all(&mut self, deadline: Duration) -> bool {
        let mut clean = true;
        for a in &mut self.agents {
            let Some(mut c) = a.child.take() else { continue };
            let _ = signal(c.id(), "CONT");
            let _ = signal(c.id(), "TERM");
            let end = Instant::now() + deadline;
            loop {
                match c.try_wait() {
                    Ok(Some(st)) => {
                        clean &= st.success();
                        break;
                    }
                    Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(10)),
                    _ => {
                        let _ = c.kill();
                        let _ = c.wait();
                        clean = false;
                        break;
                    }
                }
            }
        }
        clean
    }

    fn event_logs(&self) -> Vec<PathBuf> {
        self.agents.iter().map(|a| a.data_dir.join("events.jsonl")).filter(|p| p.exists()).collect()
    }
}

fn free_udp_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let socks = (0..n).map(|_| UdpSocket::bind("127.0.0.1:0")).collect::<Result<Vec<_>, _>>()?;
    socks.iter().map(|s| Ok(s.local_addr()?.port())).collect()
}

/// The fence agent: `cohort-fence-test` next to this binary, or else an equivalent shell script.
fn fence_agent(dir: &Path, cohort: &Path) -> anyhow::Result<(PathBuf, Vec<String>, String)> {
    let beside = cohort.with_file_name("cohort-fence-test");
    if beside.is_file() {
        return Ok((
            beside,
            vec![
                "-o".into(),
                "{action}".into(),
                "-n".into(),
                "{plug}".into(),
                "--mode".into(),
                "stop".into(),
            ],
            "cohort-fence-test --mode stop (SIGSTOP)".into(),
        ));
    }
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("fence-stop.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n# The demo's fence agent: stop (SIGSTOP) the agent of node $1.\npid=$(cat '{}/node'\"$1\"'.pid') || exit 1\nkill -STOP \"$pid\" && echo \"stopped node $1 (pid $pid)\" >&2\n",
            dir.display()
        ),
    )?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    Ok((script, vec!["{plug}".into()], "a shell script sending SIGSTOP (cohort-fence-test not found)".into()))
}

/// The demo's own diagnostic log (its lock services' `tracing` events) goes to `path`, beside the agents'
/// stderr files, so a run kept with `--keep` can be examined. `RUST_LOG` overrides the level (`info`).
fn diagnostics_to(path: &Path) {
    let Ok(file) = std::fs::File::create(path) else { return };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .with_env_filter(crate::telemetry::filter("info"))
        .try_init();
}

fn write_bed(opts: &DemoOptions) -> anyhow::Result<(Bed, String)> {
    let cohort = std::env::current_exe().context("cannot find the cohort binary")?;
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("cohort-demo-{}-{nanos:x}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut bed = Bed {
        cluster_toml: dir.join("cluster.toml"),
        dir: dir.clone(),
        cohort: cohort.clone(),
        agents: Vec::new(),
        keep: opts.keep,
    };
    let n = opts.nodes;
    let ports = free_udp_ports(n as usize)?;
    let (fence_cmd, fence_args, fence_desc) = fence_agent(&dir, &cohort)?;
    let mut toml = "[cluster]\nname = \"cohort-demo\"\n\n".to_string();
    for (i, port) in ports.iter().enumerate() {
        let _ = write!(toml, "[[cluster.nodes]]\nid = {}\naddr = \"127.0.0.1:{port}\"\n\n", i + 1);
    }
    let args = fence_args.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ");
    let _ = write!(
        toml,
        "[timing]\nheartbeat_interval_ms = 50\nfailure_timeout_ms = 600\ndiscovery_interval_ms = 250\n\
         view_change_timeout_ms = 300\nretransmit_interval_ms = 20\n\n\
         [merge]\npolicy = \"{}\"\n\n\
         [fencing]\nmode = \"agent\"\nrestart_counts_as_fenced = true\n\n\
         [[fencing.levels]]\n[[fencing.levels.agents]]\nname = \"demo-stop\"\ncommand = \"{}\"\nargs = [{args}]\n\
         action = \"off\"\ntimeout_ms = 5000\nretries = 1\n[fencing.levels.agents.stdin]\npidfile_dir = \"{}\"\n",
        opts.policy.name(),
        fence_cmd.display(),
        dir.display(),
    );
    std::fs::write(&bed.cluster_toml, toml)?;
    let key = dir.join("cluster.key");
    crate::crypto::generate_key_file(&key)?;
    for id in 1..=n {
        let data_dir = dir.join(format!("node{id}"));
        let socket = data_dir.join("cohort.sock");
        let operator_socket = crate::settings::operator_socket_beside(&socket);
        let config = dir.join(format!("node{id}.toml"));
        // The demo makes its partitions with the link filter, which only a testing setting enables.
        std::fs::write(
            &config,
            format!(
                "[node]\nid = {id}\ndata_dir = \"{}\"\nkey_file = \"{}\"\n\n[api]\nsocket = \"{}\"\n\n[admin]\nlisten = \"\"\n\n[testing]\nlink_filter = true\n",
                data_dir.display(),
                key.display(),
                socket.display()
            ),
        )?;
        bed.agents.push(Agent { config, data_dir, socket, operator_socket, child: None, starts: 0 });
    }
    Ok((bed, fence_desc))
}

// --------------------------------------------------------------------------------------------------
// Event logs, read as they grow
// --------------------------------------------------------------------------------------------------

/// One event-log record, as JSON, with the node that wrote it.
#[derive(Clone, Debug)]
struct Rec(Value);

impl Rec {
    fn event(&self) -> &str {
        self.0["event"].as_str().unwrap_or("")
    }
    fn node(&self) -> u32 {
        self.0["node"].as_u64().unwrap_or(0) as u32
    }
    fn epoch(&self) -> u64 {
        self.0["epoch"].as_u64().unwrap_or(0)
    }
    fn ts(&self) -> u64 {
        self.0["ts_ms"].as_u64().unwrap_or(0)
    }
    fn member_field(&self, key: &str) -> Option<(u32, u64)> {
        let v = &self.0[key];
        Some((v.get(0)?.as_u64()? as u32, v.get(1)?.as_u64()?))
    }
    fn members_field(&self, key: &str) -> Vec<(u32, u64)> {
        self.0[key]
            .as_array()
            .map(|a| {
                a.iter().filter_map(|m| Some((m.get(0)?.as_u64()? as u32, m.get(1)?.as_u64()?))).collect()
            })
            .unwrap_or_default()
    }
}

struct Tail {
    offsets: BTreeMap<PathBuf, u64>,
    partial: BTreeMap<PathBuf, String>,
    records: Vec<Rec>,
}

impl Tail {
    fn new() -> Tail {
        Tail { offsets: BTreeMap::new(), partial: BTreeMap::new(), records: Vec::new() }
    }

    /// Reads what the logs gained since the last call; returns the index of the first new record.
    fn poll(&mut self, bed: &Bed) -> usize {
        use std::io::{Read, Seek, SeekFrom};
        let first = self.records.len();
        for path in bed.event_logs() {
            let off = self.offsets.get(&path).copied().unwrap_or(0);
            let Ok(mut f) = std::fs::File::open(&path) else { continue };
            if f.seek(SeekFrom::Start(off)).is_err() {
                continue;
            }
            let mut buf = String::new();
            let Ok(n) = f.read_to_string(&mut buf) else { continue };
            self.offsets.insert(path.clone(), off + n as u64);
            let mut text = self.partial.remove(&path).unwrap_or_default();
            text.push_str(&buf);
            let complete = text.rfind('\n').map_or(0, |i| i + 1);
            let (done, rest) = text.split_at(complete);
            for line in done.lines().filter(|l| !l.trim().is_empty()) {
                if let Ok(v) = serde_json::from_str::<Value>(line) {
                    self.records.push(Rec(v));
                }
            }
            self.partial.insert(path, rest.to_string());
        }
        first
    }
}

// --------------------------------------------------------------------------------------------------
// The story
// --------------------------------------------------------------------------------------------------

fn fmt_member(m: (u32, u64)) -> String {
    format!("({}, {})", m.0, m.1)
}

fn fmt_members(ms: &[(u32, u64)]) -> String {
    ms.iter().map(|m| fmt_member(*m)).collect::<Vec<_>>().join(" ")
}

fn fmt_cmember(m: &cohort::Member) -> String {
    format!("({}, {})", m.node().0, m.epoch().0)
}

/// What the lock-service notices said, shared with the printer task.
#[derive(Default)]
struct LockLog {
    /// Per node: the last service state.
    states: BTreeMap<u32, ServiceState>,
    /// Per node: how many state transfers it applied.
    transfers: BTreeMap<u32, usize>,
    /// Lost holds, (node, lock, owner).
    lost: Vec<(u32, String, String)>,
    /// Grants seen in the total order at node 1..n (deduplicated by the printer).
    recovered_releases: Vec<(String, String)>,
}

struct Story {
    opts: DemoOptions,
    tl: Arc<Timeline>,
    bed: Bed,
    tail: Tail,
    /// Records already narrated, to print each fact once.
    told: BTreeSet<String>,
    locks: BTreeMap<u32, LockHandle>,
    lock_log: Arc<Mutex<LockLog>>,
    minority: Vec<u32>,
    majority: Vec<u32>,
}

/// Runs the demo and returns its exit code (0 when the verdict passes).
pub fn run(opts: DemoOptions) -> anyhow::Result<ExitCode> {
    if !(MIN_NODES..=MAX_NODES).contains(&opts.nodes) {
        return Err(crate::cli::UserError(format!(
            "--nodes {}: expected {MIN_NODES} to {MAX_NODES}",
            opts.nodes
        ))
        .into());
    }
    if !(opts.speed >= 0.0 && opts.speed.is_finite()) {
        return Err(crate::cli::UserError(format!(
            "--speed {}: expected a number >= 0 (0: no pauses)",
            opts.speed
        ))
        .into());
    }
    let color = match opts.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let (bed, fence_desc) = write_bed(&opts)?;
        diagnostics_to(&bed.dir.join("demo.log"));
        let n = opts.nodes;
        let minority: Vec<u32> = (1..=(n - 1) / 2).collect();
        let majority: Vec<u32> = ((n - 1) / 2 + 1..=n).collect();
        let tl = Arc::new(Timeline { start: Instant::now(), color });
        let mut story = Story {
            opts: opts.clone(),
            tl,
            bed,
            tail: Tail::new(),
            told: BTreeSet::new(),
            locks: BTreeMap::new(),
            lock_log: Arc::new(Mutex::new(LockLog::default())),
            minority,
            majority,
        };
        story.tl.line(
            Tone::Info,
            "demo",
            &format!(
                "{n} agents on loopback in {}, merge policy `{}`, fence agent: {fence_desc}",
                story.bed.dir.display(),
                opts.policy.name()
            ),
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let result = tokio::select! {
            r = story.play() => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
            _ = term.recv() => Err(anyhow!("terminated")),
        };
        match result {
            Ok(code) => Ok(code),
            Err(e) => {
                story.tl.line(Tone::Bad, "demo", &format!("stopped: {e:#}"));
                story.bed.stop_all(Duration::from_secs(2));
                Err(e)
            }
        }
        // `story.bed` is dropped here: every agent killed by PID, the directory removed.
    })
}

impl Story {
    async fn pause(&self, ms: u64) {
        if self.opts.speed > 0.0 {
            tokio::time::sleep(Duration::from_millis((ms as f64 / self.opts.speed) as u64)).await;
        }
    }

    fn say(&self, tone: Tone, who: &str, text: &str) {
        self.tl.line(tone, who, text);
    }

    /// Narrates new event-log records once each.
    fn narrate(&mut self) {
        let first = self.tail.poll(&self.bed);
        let recs: Vec<Rec> = self.tail.records[first..].to_vec();
        for r in recs {
            let who = format!("node {}", r.node());
            let (key, tone, text) = match r.event() {
                "start" => (
                    format!("start {} {}", r.node(), r.epoch()),
                    Tone::Info,
                    format!("agent started as member {}", fmt_member((r.node(), r.epoch()))),
                ),
                "view" => {
                    let v = &r.0["view"];
                    let id = format!("{}.{}", v["seq"], v["coord"]);
                    let primary = r.0["primary"].as_bool().unwrap_or(false);
                    let members = r.members_field("members");
                    let kind = if primary { "primary view" } else { "non-primary view" };
                    (
                        format!("view {id}"),
                        if primary { Tone::Good } else { Tone::Warn },
                        format!("{kind} {id}: {}", fmt_members(&members)),
                    )
                }
                "blocked" => {
                    let reason = r.0["reason"].as_str().unwrap_or("").to_string();
                    (
                        format!("blocked {} {} {reason} {}", r.node(), r.epoch(), r.ts() / 200),
                        Tone::Warn,
                        format!("blocked: {reason}"),
                    )
                }
                "unblocked" => (
                    format!("unblocked {} {} {}", r.node(), r.epoch(), r.ts() / 200),
                    Tone::Good,
                    "unblocked".into(),
                ),
                "fence_request" => {
                    let t = r.member_field("target").unwrap_or_default();
                    let reason = r.0["reason"].as_str().unwrap_or("").to_string();
                    (
                        format!("fence_request {t:?} {reason}"),
                        Tone::Bad,
                        format!("fence request for {} ({reason})", fmt_member(t)),
                    )
                }
                "fence_result" => {
                    let t = r.member_field("target").unwrap_or_default();
                    let ok = r.0["ok"].as_bool().unwrap_or(false);
                    let method = r.0["method"].as_str().unwrap_or("").to_string();
                    let detail = r.0["detail"].as_str().unwrap_or("").to_string();
                    (
                        format!("fence_result {t:?} {ok} {method} {}", r.ts() / 1000),
                        if ok { Tone::Bad } else { Tone::Warn },
                        format!(
                            "fenced {} by {method}: {}",
                            fmt_member(t),
                            if ok { detail } else { format!("FAILED: {detail}") }
                        ),
                    )
                }
                "recovered" => {
                    let f = r.members_field("failed");
                    (
                        format!("recovered {f:?}"),
                        Tone::Good,
                        format!("recovered {}: their resources may be taken over", fmt_members(&f)),
                    )
                }
                "stateful_merge" => {
                    let m = r.member_field("member").unwrap_or_default();
                    let action = r.0["action"].as_str().unwrap_or("").to_string();
                    (format!("stateful_merge {m:?} {action}"), Tone::Bad, format!("STATEFUL MERGE: {} came back with its old epoch and old state: refused (action {action})", fmt_member(m)))
                }
                "removed_self" => (
                    format!("removed_self {} {}", r.node(), r.epoch()),
                    Tone::Bad,
                    "learned it was removed from the primary view: its state is stale".into(),
                ),
                "self_fence" => {
                    (format!("self_fence {} {}", r.node(), r.epoch()), Tone::Bad, "self-fenced".into())
                }
                "state_transfer" if r.0["role"].as_str() == Some("receiver") => {
                    let g = r.0["group"].as_str().unwrap_or("").to_string();
                    let peer = r.member_field("peer").unwrap_or_default();
                    (
                        format!("st {} {} {g}", r.node(), r.epoch()),
                        Tone::Good,
                        format!(
                            "received the `{g}` state from {} ({} bytes)",
                            fmt_member(peer),
                            r.0["bytes"]
                        ),
                    )
                }
                "stop" => (
                    format!("stop {} {}", r.node(), r.epoch()),
                    Tone::Info,
                    format!("stopped ({})", r.0["reason"].as_str().unwrap_or("")),
                ),
                _ => continue,
            };
            if self.told.insert(key) {
                self.say(tone, &who, &text);
            }
        }
    }

    /// Waits (event-driven, with a deadline) until `check` finds what it looks for, narrating meanwhile.
    async fn wait_for<T>(
        &mut self,
        what: &str,
        mut check: impl FnMut(&Story) -> Option<T>,
    ) -> anyhow::Result<T> {
        let end = Instant::now() + STEP_DEADLINE;
        loop {
            self.narrate();
            if let Some(v) = check(self) {
                return Ok(v);
            }
            if Instant::now() >= end {
                bail!("timed out after {STEP_DEADLINE:?} waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The first record read since `mark` (an index into the records read so far) that matches.
    fn find(&self, mark: usize, pred: impl Fn(&Rec) -> bool) -> Option<Rec> {
        self.tail.records.get(mark..).and_then(|rs| rs.iter().find(|r| pred(r))).cloned()
    }

    /// Reads the logs and returns the position from which later waits look.
    fn mark(&mut self) -> usize {
        self.narrate();
        self.tail.records.len()
    }

    async fn status(&self, id: u32) -> Option<Value> {
        let socket = self.bed.agent(id).socket.clone();
        let fut = async {
            let mut c = Client::connect(&socket, "cohort-demo").await.ok()?;
            c.status().await.ok()
        };
        tokio::time::timeout(Duration::from_secs(1), fut).await.ok().flatten()
    }

    /// Waits until every node in `ids` reports the same primary view with exactly those nodes.
    async fn wait_primary(&mut self, ids: &[u32]) -> anyhow::Result<Vec<(u32, u64)>> {
        let end = Instant::now() + STEP_DEADLINE;
        loop {
            self.narrate();
            let mut agreed: Option<Vec<(u32, u64)>> = None;
            let mut ok = true;
            for id in ids {
                let Some(s) = self.status(*id).await else {
                    ok = false;
                    break;
                };
                let members: Vec<(u32, u64)> = s["view"]["members"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|m| Some((m.get(0)?.as_u64()? as u32, m.get(1)?.as_u64()?)))
                            .collect()
                    })
                    .unwrap_or_default();
                let primary = s["primary"].as_bool().unwrap_or(false);
                let nodes: Vec<u32> = members.iter().map(|m| m.0).collect();
                if !primary || nodes != ids || agreed.as_ref().is_some_and(|a| *a != members) {
                    ok = false;
                    break;
                }
                agreed = Some(members);
            }
            if ok {
                if let Some(a) = agreed {
                    return Ok(a);
                }
            }
            if Instant::now() >= end {
                bail!("timed out after {STEP_DEADLINE:?} waiting for one primary view of {ids:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn start_lock_service(&mut self, id: u32) {
        let cfg = service::ServiceConfig {
            client_name: format!("demo-locks-{id}"),
            ..service::ServiceConfig::new(&self.bed.agent(id).socket)
        };
        let (handle, _task) = service::spawn(cfg);
        let mut rx = handle.subscribe();
        let tl = self.tl.clone();
        let log = self.lock_log.clone();
        // Narrates this node's lock service. Ops are applied at every node; only node `printer`
        // narrates the total order, so each operation is told once.
        tokio::spawn(async move {
            loop {
                let n = match rx.recv().await {
                    Ok(n) => n,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                };
                let who = format!("locks {id}");
                match n {
                    Notice::State { state, member } => {
                        let m = member.map(|m| fmt_cmember(&m)).unwrap_or_else(|| "-".into());
                        let tone = match &state {
                            ServiceState::Active => Tone::Good,
                            ServiceState::Removed(_) => Tone::Bad,
                            ServiceState::Blocked(_) | ServiceState::Connecting => Tone::Warn,
                            _ => Tone::Info,
                        };
                        if let Ok(mut l) = log.lock() {
                            l.states.insert(id, state.clone());
                        }
                        if state == ServiceState::Blocked("state_transfer".into()) {
                            continue;
                        }
                        let extra = if matches!(state, ServiceState::Removed(_)) {
                            ": its lock table is thrown away, never used again"
                        } else {
                            ""
                        };
                        tl.line(tone, &who, &format!("lock service {state} as member {m}{extra}"));
                    }
                    Notice::Lost { lock, owner, reason } => {
                        if let Ok(mut l) = log.lock() {
                            l.lost.push((id, lock.clone(), owner.clone()));
                        }
                        tl.line(Tone::Warn, &who, &format!("{owner} must stop using `{lock}`: {reason}"));
                    }
                    Notice::StateApplied { provider, locks } => {
                        if let Ok(mut l) = log.lock() {
                            *l.transfers.entry(id).or_default() += 1;
                        }
                        tl.line(
                            Tone::Good,
                            &who,
                            &format!(
                                "lock table received by state transfer from {} ({locks} locks)",
                                fmt_cmember(&provider)
                            ),
                        );
                    }
                    Notice::Applied { effects, .. } => {
                        for e in effects {
                            if let Effect::Released { lock, owner, cause: ReleaseCause::Recovered } = &e {
                                if let Ok(mut l) = log.lock() {
                                    let key = (lock.clone(), owner.to_string());
                                    if l.recovered_releases.contains(&key) {
                                        continue;
                                    }
                                    l.recovered_releases.push(key);
                                }
                                tl.line(
                                    Tone::Lock,
                                    &who,
                                    &format!(
                                        "`{lock}` of {}@{} released: its member was fenced and recovered",
                                        owner.name,
                                        fmt_cmember(&owner.client.member)
                                    ),
                                );
                            }
                        }
                    }
                    _ => {}
                }
            }
        });
        self.locks.insert(id, handle);
    }

    async fn acquire(&mut self, node: u32, owner: &str, lock: &str, mode: Mode) -> anyhow::Result<()> {
        let h = self.locks.get(&node).ok_or_else(|| anyhow!("no lock service on node {node}"))?.clone();
        let g = h
            .acquire(lock, owner, mode, Duration::from_secs(10))
            .await
            .map_err(|e| anyhow!("{owner}@{node} acquire {lock}: {e}"))?;
        self.say(
            Tone::Lock,
            &format!("locks {node}"),
            &format!("{owner} acquired `{lock}` ({mode}) as member {}", fmt_cmember(&g.member)),
        );
        Ok(())
    }

    async fn wait_services_active(&mut self, ids: &[u32]) -> anyhow::Result<()> {
        let end = Instant::now() + STEP_DEADLINE;
        loop {
            self.narrate();
            let mut all = true;
            for id in ids {
                let s = self.locks[id].snapshot().await.map_err(|e| anyhow!("{e}"))?;
                all &= s.state == ServiceState::Active;
            }
            if all {
                return Ok(());
            }
            if Instant::now() >= end {
                bail!("timed out waiting for the lock services of {ids:?} to be active");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn holders_line(t: &crate::lock::table::LockTable) -> String {
        let mut parts = Vec::new();
        for (name, l) in t.locks() {
            let hs: Vec<String> =
                l.holders.keys().map(|o| format!("{}@{}", o.name, o.client.member.node().0)).collect();
            let ws: Vec<String> = l
                .queue
                .iter()
                .map(|w| format!("{}@{}", w.owner.name, w.owner.client.member.node().0))
                .collect();
            if ws.is_empty() {
                parts.push(format!("{name}: [{}]", hs.join(", ")));
            } else {
                parts.push(format!("{name}: [{}] waiting [{}]", hs.join(", "), ws.join(", ")));
            }
        }
        if parts.is_empty() {
            "no locks held".into()
        } else {
            parts.join("; ")
        }
    }

    async fn play(&mut self) -> anyhow::Result<ExitCode> {
        let n = self.opts.nodes;
        let all: Vec<u32> = (1..=n).collect();
        let minority = self.minority.clone();
        let majority = self.majority.clone();
        let m0 = minority[0];
        let waiter_node = majority[0];

        // 1. ------------------------------------------------------------------------------------
        self.say(Tone::Step, "", &format!("== 1. the cluster forms: {n} agents, one lock service per node"));
        for id in &all {
            let pid = self.bed.start(*id)?;
            self.say(Tone::Info, &format!("node {id}"), &format!("cohort agent started (pid {pid})"));
        }
        let view = self.wait_primary(&all).await?;
        self.say(
            Tone::Good,
            "demo",
            &format!("cluster formed: one primary view of {n} members {}", fmt_members(&view)),
        );
        for id in &all {
            self.start_lock_service(*id);
        }
        self.wait_services_active(&all).await?;
        self.pause(600).await;
        self.say(
            Tone::Info,
            "demo",
            "clients take locks; every lock operation is an agreed multicast in the `locks` group",
        );
        self.acquire(m0, "alice", "printer", Mode::Exclusive).await?;
        let shared_a = *minority.last().unwrap_or(&m0);
        self.acquire(shared_a, "bob", "ledger", Mode::Shared).await?;
        self.acquire(*majority.last().unwrap_or(&n), "dave", "ledger", Mode::Shared).await?;
        // carol waits for the printer on a majority node; her request stays queued through the partition.
        let carol = self.locks[&waiter_node].clone();
        let carol_wait = tokio::spawn(async move {
            carol.acquire("printer", "carol", Mode::Exclusive, Duration::from_secs(120)).await
        });
        let t = self
            .wait_table(waiter_node, "carol's request to wait behind alice", |t| {
                t.lock("printer").is_some_and(|l| l.queue.iter().any(|w| w.owner.name == "carol"))
            })
            .await?;
        self.say(Tone::Lock, &format!("locks {waiter_node}"), "carol waits for `printer`");
        self.say(
            Tone::Info,
            "demo",
            &format!("lock table, the same at every node: {}", Self::holders_line(&t)),
        );
        self.pause(1200).await;

        // 2. ------------------------------------------------------------------------------------
        self.say(
            Tone::Step,
            "",
            &format!("== 2. partition {minority:?} | {majority:?} through the agents' link filters"),
        );
        let mark = self.mark();
        let mark_time = SystemTime::now();
        for id in &all {
            let cut = if minority.contains(id) { &majority } else { &minority };
            self.set_link_filter(*id, cut).await?;
        }
        self.say(Tone::Op, "demo", &format!("links cut between {minority:?} and {majority:?}"));
        // Both sides notice the cut after the failure timeout. The minority blocks, unless the majority's
        // fence stops it first: then it blocks only when it resumes. Either is told as it happens.
        let mut blocked_first = Vec::new();
        for m in &minority {
            let m = *m;
            let r = self
                .wait_for(&format!("node {m} to block for lack of quorum or be fenced"), |s| {
                    s.find(mark, |r| {
                        (r.node() == m && r.event() == "blocked" && r.0["reason"] == "no_quorum")
                            || (r.event() == "fence_result"
                                && r.member_field("target").is_some_and(|t| t.0 == m))
                    })
                })
                .await?;
            if r.event() == "blocked" {
                blocked_first.push(m);
            }
        }
        if !blocked_first.is_empty() {
            self.say(
                Tone::Warn,
                "demo",
                &format!("{blocked_first:?} blocked for lack of quorum: no deliveries there, and their lock holders were told to stop"),
            );
        }
        self.wait_primary(&majority).await?;
        let cut_ms = now_ms_at(mark_time);
        let view_ts = self
            .wait_for("the majority's primary view record", |s| {
                s.find(mark, |r| {
                    r.event() == "view"
                        && r.0["primary"] == true
                        && r.members_field("members").iter().map(|m| m.0).collect::<Vec<_>>() == majority
                })
            })
            .await?
            .ts();
        self.say(
            Tone::Info,
            "demo",
            &format!("the majority {majority:?} formed a primary view without the minority"),
        );
        for m in &minority {
            let m = *m;
            self.wait_for(&format!("the majority to fence node {m}"), |s| {
                s.find(mark, |r| {
                    r.event() == "fence_result"
                        && r.member_field("target").is_some_and(|t| t.0 == m)
                        && r.0["ok"] == true
                })
            })
            .await?;
        }
        let mut recovered_ts = 0;
        for m in &minority {
            let m = *m;
            let r = self
                .wait_for(&format!("recovery of node {m}"), |s| {
                    s.find(mark, |r| {
                        r.event() == "recovered" && r.members_field("failed").iter().any(|f| f.0 == m)
                    })
                })
                .await?;
            recovered_ts = recovered_ts.max(r.ts());
        }
        let grant = tokio::time::timeout(STEP_DEADLINE, carol_wait)
            .await
            .map_err(|_| anyhow!("carol was not granted `printer` after the recovery"))?
            .map_err(|e| anyhow!("carol's task: {e}"))?
            .map_err(|e| anyhow!("carol acquire printer: {e}"))?;
        let granted_ms = now_ms();
        self.narrate();
        self.say(
            Tone::Lock,
            &format!("locks {waiter_node}"),
            &format!("carol acquired `printer` as member {}", fmt_cmember(&grant.member)),
        );
        self.say(
            Tone::Info,
            "demo",
            &format!(
                "after the cut: new primary view at +{} ms, `recovered` at +{} ms, carol's grant at +{} ms: \
                 a view change alone released nothing",
                view_ts.saturating_sub(cut_ms),
                recovered_ts.saturating_sub(cut_ms),
                granted_ms.saturating_sub(cut_ms)
            ),
        );
        self.pause(1200).await;

        // 3. ------------------------------------------------------------------------------------
        self.say(Tone::Step, "", "== 3. the fenced nodes were only stopped: they wake up with their old state, and the partition heals");
        let old: BTreeMap<u32, u64> = view.iter().copied().collect();
        // State transfers the lock services applied so far: a rejoin shows as one more.
        let transfers_before: BTreeMap<u32, usize> =
            self.lock_log.lock().map(|l| l.transfers.clone()).unwrap_or_default();
        for m in &minority {
            if let Some(pid) = self.bed.pid(*m) {
                signal(pid, "CONT")?;
                self.say(
                    Tone::Op,
                    &format!("node {m}"),
                    "resumed (SIGCONT): it still has its old epoch and its old lock table",
                );
            }
        }
        self.say(
            Tone::Info,
            "demo",
            "(a real fence device powers the node off, its lock clients with it; the demo's fence stopped only \
             the agent, so a lock client there may hear only now that its lock is gone)",
        );
        self.pause(600).await;
        let mark = self.mark();
        for id in &all {
            self.set_link_filter(*id, &[]).await?;
        }
        self.say(Tone::Op, "demo", "links restored: the partition heals");
        let mut merge_ts = BTreeMap::new();
        for m in &minority {
            let m = *m;
            let r = self
                .wait_for(&format!("node {m} to be caught as a stateful merge"), |s| {
                    s.find(mark, |r| {
                        r.event() == "stateful_merge" && r.member_field("member") == Some((m, old[&m]))
                    })
                })
                .await?;
            merge_ts.insert(m, r.ts());
        }
        // Under `fence` and `wait` the view's leader alone acts, and it logs that action once it hears
        // the zombie, which may be after another member refused it first: wait for that record too.
        let leader_action = match self.opts.policy {
            Policy::Fence => Some("fence"),
            Policy::Wait => Some("wait"),
            _ => None,
        };
        if let Some(action) = leader_action {
            for m in &minority {
                let m = *m;
                self.wait_for(&format!("the leader's `{action}` for node {m}"), |s| {
                    s.find(mark, |r| {
                        r.event() == "stateful_merge"
                            && r.member_field("member") == Some((m, old[&m]))
                            && r.0["action"] == action
                    })
                })
                .await?;
            }
        }
        match self.opts.policy {
            Policy::Fence => {
                for m in &minority {
                    let m = *m;
                    let since = merge_ts[&m];
                    self.wait_for(&format!("the stateful-merge fence of node {m}"), |s| {
                        s.find(mark, |r| {
                            r.event() == "fence_result"
                                && r.member_field("target") == Some((m, old[&m]))
                                && r.0["ok"] == true
                                && r.ts() >= since
                        })
                    })
                    .await?;
                    let pid = self.bed.pid(m).ok_or_else(|| anyhow!("node {m} is not running"))?;
                    self.wait_for(&format!("node {m}'s agent to be stopped by the fence"), |_| {
                        (proc_state(pid) == Some('T')).then_some(())
                    })
                    .await?;
                    self.pause(400).await;
                    self.bed.kill9(m);
                    self.bed.start(m)?;
                    self.say(
                        Tone::Op,
                        &format!("node {m}"),
                        "fenced again; the demo power-cycles it (kill -9, start the agent)",
                    );
                }
            }
            Policy::Restart | Policy::Reset => {
                for m in &minority {
                    let m = *m;
                    self.wait_for(&format!("node {m} to learn it was removed"), |s| {
                        s.find(mark, |r| r.node() == m && r.epoch() == old[&m] && r.event() == "removed_self")
                    })
                    .await?;
                }
            }
            Policy::Wait => {
                for m in &minority {
                    let m = *m;
                    self.wait_for(&format!("node {m} to wait for the operator"), |s| {
                        s.find(mark, |r| {
                            r.node() == m && r.event() == "blocked" && r.0["reason"] == "stateful_merge_wait"
                        })
                    })
                    .await?;
                }
                self.say(
                    Tone::Warn,
                    "demo",
                    "the stale members stay refused and say so in `cohort status` and the event log",
                );
                self.pause(1000).await;
                for m in &minority {
                    let m = *m;
                    let socket = self.bed.agent(majority[0]).operator_socket.clone();
                    self.say(
                        Tone::Op,
                        "operator",
                        &format!("$ cohort fence ack {m} --operator-socket {}", socket.display()),
                    );
                    let out = Command::new(&self.bed.cohort)
                        .args(["fence", "ack", &m.to_string(), "--operator-socket"])
                        .arg(&socket)
                        .output()
                        .context("run cohort fence ack")?;
                    if !out.status.success() {
                        bail!("cohort fence ack {m} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
                    }
                    self.bed.kill9(m);
                    self.bed.start(m)?;
                    self.say(Tone::Op, "operator", &format!("restarted node {m}'s agent"));
                }
            }
        }

        // 4. ------------------------------------------------------------------------------------
        self.say(
            Tone::Step,
            "",
            "== 4. the stale members come back as new members and receive the lock table by state transfer",
        );
        for m in &minority {
            let m = *m;
            let r = self
                .wait_for(&format!("node {m} to start a new incarnation"), |s| {
                    s.find(mark, |r| r.node() == m && r.event() == "start" && r.epoch() > old[&m])
                })
                .await?;
            self.say(
                Tone::Good,
                &format!("node {m}"),
                &format!(
                    "is back as member {} (was {})",
                    fmt_member((m, r.epoch())),
                    fmt_member((m, old[&m]))
                ),
            );
        }
        let view = self.wait_primary(&all).await?;
        self.say(Tone::Good, "demo", &format!("one primary view of all {n} again: {}", fmt_members(&view)));
        self.wait_services_active(&all).await?;
        for m in &minority {
            let m = *m;
            let before = transfers_before.get(&m).copied().unwrap_or(0);
            self.wait_for(&format!("node {m}'s lock service to receive the table"), |s| {
                s.lock_log
                    .lock()
                    .ok()
                    .and_then(|l| (l.transfers.get(&m).copied().unwrap_or(0) > before).then_some(()))
            })
            .await?;
        }
        let mut tables = Vec::new();
        for id in &all {
            tables.push(self.locks[id].snapshot().await.map_err(|e| anyhow!("{e}"))?.table);
        }
        let first = tables[0].locks().clone();
        if let Some(i) = tables.iter().position(|t| *t.locks() != first) {
            bail!(
                "node {} holds another lock table: {} vs {}",
                i + 1,
                Self::holders_line(&tables[i]),
                Self::holders_line(&tables[0])
            );
        }
        self.say(
            Tone::Good,
            "demo",
            &format!("all {n} lock services hold the same table: {}", Self::holders_line(&tables[0])),
        );
        let stale = first.values().flat_map(|l| l.holders.keys()).any(|o| {
            old.get(&o.client.member.node().0) == Some(&o.client.member.epoch().0)
                && minority.contains(&o.client.member.node().0)
        });
        if stale {
            bail!("a lock of a removed member survived: {}", Self::holders_line(&tables[0]));
        }
        self.pause(600).await;
        self.locks[&waiter_node]
            .release("printer", "carol")
            .await
            .map_err(|e| anyhow!("carol release: {e}"))?;
        self.say(Tone::Lock, &format!("locks {waiter_node}"), "carol released `printer`");
        self.acquire(m0, "alice", "printer", Mode::Exclusive).await?;
        self.pause(600).await;

        // 5. ------------------------------------------------------------------------------------
        self.say(
            Tone::Step,
            "",
            "== 5. every agent stops; `cohort verify` checks the event logs against the guarantees",
        );
        for h in self.locks.values() {
            h.shutdown().await;
        }
        self.narrate();
        let clean = self.bed.stop_all(Duration::from_secs(5));
        self.narrate();
        if !clean {
            self.say(Tone::Warn, "demo", "not every agent exited cleanly on SIGTERM");
        }
        let logs = self.bed.event_logs();
        let shown: Vec<String> = logs
            .iter()
            .map(|p| {
                p.strip_prefix(&self.bed.dir)
                    .map(|r| r.display().to_string())
                    .unwrap_or_else(|_| p.display().to_string())
            })
            .collect();
        println!("\n$ cohort verify {}", shown.join(" "));
        let report = crate::cli::verify_logs(&logs).map_err(|e| anyhow!("{e}"))?;
        print!("{}", report.render());
        Ok(if report.violations.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
    }

    async fn set_link_filter(&self, id: u32, cut: &[u32]) -> anyhow::Result<()> {
        let socket = self.bed.agent(id).operator_socket.clone();
        let mut c = Client::connect(&socket, "cohort-demo").await?;
        let nodes: Vec<cohort::NodeId> = cut.iter().map(|n| cohort::NodeId(*n)).collect();
        c.set_link_filter(&nodes).await?;
        Ok(())
    }

    async fn wait_table(
        &mut self,
        node: u32,
        what: &str,
        pred: impl Fn(&crate::lock::table::LockTable) -> bool,
    ) -> anyhow::Result<crate::lock::table::LockTable> {
        let end = Instant::now() + STEP_DEADLINE;
        loop {
            self.narrate();
            let t = self.locks[&node].snapshot().await.map_err(|e| anyhow!("{e}"))?.table;
            if pred(&t) {
                return Ok(t);
            }
            if Instant::now() >= end {
                bail!("timed out after {STEP_DEADLINE:?} waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn now_ms() -> u64 {
    now_ms_at(SystemTime::now())
}

fn now_ms_at(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
