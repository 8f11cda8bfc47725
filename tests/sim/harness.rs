//! The deterministic cluster simulator: many `cohort::Node` cores on a simulated network, driven by one
//! seeded random number generator.
//!
//! Everything that could make two runs differ is injected here: the clock (simulated milliseconds), the
//! network (delay, loss, duplication, reordering, symmetric and one-way partitions, flapping links), the
//! disks (one [`Durable`] per node that survives crashes), process scheduling (crashes, restarts with a
//! new epoch, pauses) and randomness (one `ChaCha8Rng`). Events wait in one priority queue ordered by
//! `(time, insertion counter)`, so equal times are broken by insertion order and one seed replays one run
//! exactly.
//!
//! After every step the records the cores emitted go to the guarantee checker (`cohort::checker`), and
//! the simulator adds the checks only it can make because it sees the bytes: the payload delivered is the
//! payload sent (G6), group state after a position in the total order is the same at every member that
//! delivered that position (G11, by content, over a hash chain the application model keeps), no datagram
//! exceeds `max_datagram_bytes`, and a persisted epoch never goes backwards (G12). The first violation
//! stops the run and becomes a [`Failure`] carrying the seed and a one-line-per-event trace.
//!
//! What this module deliberately does not contain: the scenarios (`scenario.rs`) and the random campaigns
//! (`campaign.rs`), which only drive a [`Sim`] through its public methods.
//!
//! The file is shared by the `sim` integration test and `examples/sim.rs` (through `#[path]`); each uses a
//! different subset, hence the `dead_code` allowance below.
#![allow(dead_code)]

use cohort::checker::Checker;
use cohort::inquiry::EpochInquiry;
use cohort::msg::TransferToken;
use cohort::node::{Durable, NewEpochReason, Node, Notification, Output, SendError, Status};
use cohort::record::{BlockReason, Event, FenceMethod, MergeAction, Record, TransferRole};
use cohort::{Config, Delivery, Epoch, FencingMode, Member, MergePolicy, MsgId, NodeId, View, ViewId};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::Ordering as CmpOrdering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::fmt;
use std::sync::Arc;

/// The group every application client joins.
pub const MAIN_GROUP: &str = "g";
/// A second group some clients join, leave and join again, to exercise state transfer repeatedly.
pub const SIDE_GROUP: &str = "h";

/// A paused node's socket receive buffer, in bytes: the agent asks the kernel for 4 MiB
/// (`actors/src/transport.rs`, `SOCKET_BUFFER_BYTES`). Datagrams that arrive while it is full are dropped,
/// as the kernel drops them; the ones already queued stay, in arrival order.
pub const HELD_BYTES_MAX: usize = 4 << 20;
/// The same buffer counted in datagrams (the kernel also charges per-packet overhead, so a buffer full
/// of small datagrams holds fewer than its byte size suggests).
pub const HELD_DATAGRAMS_MAX: usize = 16_384;
/// How many snapshots of each node's disk the backup model keeps (the oldest is dropped first).
const BACKUPS_MAX: usize = 16;

// ------------------------------------------------------------------------------------------------------
// Options
// ------------------------------------------------------------------------------------------------------

/// What the simulated fence agent does when a core asks it to fence a member.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FenceBehaviour {
    /// Power-cycle: the target's process dies after the agent's delay, the agent reports success, and the
    /// node boots again with a new epoch after `SimOptions::reboot_after_kill_ms` (if set).
    Kill,
    /// SIGSTOP-like: the target is paused for this many milliseconds and then resumes with its old state,
    /// while the agent reports success. This is the zombie a stateful merge must catch.
    Pause(u64),
    /// The agent reports failure.
    Fail,
    /// The agent never answers.
    Hang,
    /// The agent reports success but leaves the target running: a fence device wired to the wrong
    /// outlet, or a kill that cannot reach a stopped process. Whatever the target then does is a zombie's.
    Noop,
    /// The agent fails with this probability and otherwise kills, as [`FenceBehaviour::Kill`].
    Flaky(f64),
}

impl fmt::Display for FenceBehaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FenceBehaviour::Kill => write!(f, "kill"),
            FenceBehaviour::Pause(ms) => write!(f, "pause({ms}ms)"),
            FenceBehaviour::Fail => write!(f, "fail"),
            FenceBehaviour::Hang => write!(f, "hang"),
            FenceBehaviour::Noop => write!(f, "noop"),
            FenceBehaviour::Flaky(p) => write!(f, "flaky({p})"),
        }
    }
}

/// The network's current behaviour for every link that is not cut.
#[derive(Clone, Debug, PartialEq)]
pub struct NetParams {
    /// Smallest one-way delay.
    pub delay_min_ms: u64,
    /// Largest one-way delay; datagrams are reordered because each one draws its own delay.
    pub delay_max_ms: u64,
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a datagram is delivered twice.
    pub dup: f64,
}

impl NetParams {
    /// A healthy LAN: 1 to 10 ms, no loss, no duplication.
    pub fn calm() -> NetParams {
        NetParams { delay_min_ms: 1, delay_max_ms: 10, loss: 0.0, dup: 0.0 }
    }
}

/// The application client model run on every node.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientParams {
    /// Whether clients send random messages at all (they always answer state requests).
    pub enabled: bool,
    /// Range of the gap between two actions of one client.
    pub gap_ms: (u64, u64),
    /// Fraction of messages sent with `safe` delivery.
    pub safe_ratio: f64,
    /// Fraction of messages that are large (8 to `large_max` bytes, fragmented on the wire).
    pub large_ratio: f64,
    /// Largest payload.
    pub large_max: usize,
    /// Fraction of clients that also join [`SIDE_GROUP`] when they start.
    pub side_group_ratio: f64,
    /// Fraction of client actions that leave or rejoin [`SIDE_GROUP`] instead of sending.
    pub churn_ratio: f64,
}

impl ClientParams {
    /// The default client: a message every 10 to 80 ms, a third safe, a few large ones, group churn.
    pub fn standard() -> ClientParams {
        ClientParams {
            enabled: true,
            gap_ms: (10, 80),
            safe_ratio: 0.3,
            large_ratio: 0.03,
            large_max: 40 * 1024,
            side_group_ratio: 0.5,
            churn_ratio: 0.03,
        }
    }
}

/// What the service manager does with the node's data directory when it starts the agent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskOnRestart {
    /// Keep it (the normal case).
    Keep,
    /// Wipe it: the agent starts with a fresh `Durable` (epoch 0 on disk, so it boots as epoch 1).
    Wipe,
    /// Restore an older backup of it (a snapshot taken at an earlier start or persist).
    Backup,
}

impl fmt::Display for DiskOnRestart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskOnRestart::Keep => write!(f, "keep"),
            DiskOnRestart::Wipe => write!(f, "wipe"),
            DiskOnRestart::Backup => write!(f, "backup"),
        }
    }
}

/// A service manager like systemd with `Restart=always`: it starts the agent again after it exited.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceManager {
    /// Range of the delay between the exit and the new start (`RestartSec`, plus the host's boot time
    /// after a power-cycle).
    pub delay_ms: (u64, u64),
    /// Also restart after a clean exit (the agent left the cluster on SIGTERM, not stopped by the
    /// operator): `systemctl restart`, `Restart=always`.
    pub after_clean_exit: bool,
    /// Probability that a restart finds the data directory wiped.
    pub wipe_ratio: f64,
    /// Probability that a restart finds an older backup of the data directory restored.
    pub backup_ratio: f64,
}

impl ServiceManager {
    /// Restarts every exit after 50 to 400 ms, keeping the data directory.
    pub fn always() -> ServiceManager {
        ServiceManager { delay_ms: (50, 400), after_clean_exit: true, wipe_ratio: 0.0, backup_ratio: 0.0 }
    }
}

/// Why an agent's process ended (what a service manager sees).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Killed (`kill -9`, a crash, a power-cycle by a fence agent).
    Crash,
    /// The core asked for a new epoch (`NewEpoch` restart, move past a stale epoch).
    NewEpoch,
    /// A clean exit after a leave (SIGTERM): the service manager restarts it if `after_clean_exit`.
    Clean,
    /// The operator stopped the service (`systemctl stop`): never restarted by the service manager.
    Stopped,
}

/// Everything that defines one simulated run besides the steps driving it.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// The seed of the one random number generator.
    pub seed: u64,
    /// The core configuration shared by every node (node ids must be `1..=N`).
    pub cfg: Config,
    /// The fence agent's behaviour for members removed by failure (and the two-node race).
    pub fence: FenceBehaviour,
    /// The fence agent's behaviour for stateful merges (reason `stateful_merge`): a second fence of a
    /// zombie is a real power-cycle.
    pub merge_fence: FenceBehaviour,
    /// How long the fence agent takes, a range.
    pub fence_delay_ms: (u64, u64),
    /// After a [`FenceBehaviour::Kill`], the node boots again after this long (`None`: stays down).
    pub reboot_after_kill_ms: Option<u64>,
    /// How long a process restart takes when a core asks for a new epoch with `Restart` or `MovePast`.
    pub restart_delay_ms: u64,
    /// A service manager that starts agents again after they exit (`None`: only the cases above).
    pub service: Option<ServiceManager>,
    /// The network.
    pub net: NetParams,
    /// The application clients.
    pub client: ClientParams,
    /// How many control lines (records other than send/deliver, and simulator actions) a failure shows.
    pub trace_lines: usize,
    /// How many traffic lines (send, deliver, drops) a failure shows, interleaved with the control lines.
    pub traffic_lines: usize,
    /// Print every trace line as it happens.
    pub verbose: bool,
    /// Keep every `deliver` record's (time, member, view) for scenario assertions ([`Sim::deliveries`]).
    pub keep_deliveries: bool,
    /// Keep a readable timeline of the interesting events (for `--story`).
    pub timeline: bool,
    /// The command that replays this run: printed after `COHORT_SEED=<seed>` on failure, or with its
    /// `{seed}` placeholder replaced when it has one.
    pub replay_hint: String,
}

impl SimOptions {
    /// Fast timings for `nodes` nodes, a killing fence agent, a calm network and standard clients.
    pub fn new(seed: u64, nodes: u32) -> SimOptions {
        SimOptions {
            seed,
            cfg: sim_config(nodes),
            fence: FenceBehaviour::Kill,
            merge_fence: FenceBehaviour::Kill,
            fence_delay_ms: (10, 60),
            reboot_after_kill_ms: Some(300),
            restart_delay_ms: 30,
            service: None,
            net: NetParams::calm(),
            client: ClientParams::standard(),
            trace_lines: 200,
            traffic_lines: 40,
            // `COHORT_VERBOSE=1` prints every trace line of every run as it happens.
            verbose: std::env::var("COHORT_VERBOSE").is_ok_and(|v| v == "1"),
            keep_deliveries: false,
            timeline: false,
            replay_hint: "cargo test --test sim -- --nocapture".into(),
        }
    }
}

/// The simulator's core configuration: fast timings so that runs are short in simulated time, and a
/// small datagram limit so that large messages and states are fragmented.
pub fn sim_config(nodes: u32) -> Config {
    let ids: Vec<u32> = (1..=nodes).collect();
    let mut cfg = Config::new("sim", &ids);
    cfg.heartbeat_interval_ms = 20;
    cfg.failure_timeout_ms = 200;
    cfg.discovery_interval_ms = 100;
    cfg.view_change_timeout_ms = 150;
    cfg.retransmit_interval_ms = 20;
    cfg.max_datagram_bytes = 8192;
    cfg.window_msgs = 256;
    cfg
}

/// The bound of L1: how long after the faults stop the cluster must be one primary view.
pub fn convergence_bound_ms(cfg: &Config) -> u64 {
    20 * cfg.failure_timeout_ms + cfg.discovery_interval_ms
}

/// A generous bound on one view change (three phases, each possibly retried once).
pub fn view_change_bound_ms(cfg: &Config) -> u64 {
    6 * cfg.view_change_timeout_ms
}

// ------------------------------------------------------------------------------------------------------
// Failures
// ------------------------------------------------------------------------------------------------------

/// A broken guarantee (or scenario expectation), with everything needed to read and replay it.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The seed of the run.
    pub seed: u64,
    /// `G1`..`G13`, `L1`..`L4`, `wire`, `api` or `scenario`.
    pub guarantee: String,
    /// One line naming the members, views and messages involved.
    pub detail: String,
    /// Simulated time of the failure.
    pub at_ms: u64,
    /// The last events, one per line.
    pub trace: Vec<String>,
    /// The replay command.
    pub replay: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "VIOLATION of {} at t={} (seed {})", self.guarantee, self.at_ms, self.seed)?;
        writeln!(f, "  {}", self.detail)?;
        writeln!(f, "--- last {} trace lines ---", self.trace.len())?;
        for l in &self.trace {
            writeln!(f, "{l}")?;
        }
        writeln!(f, "--- end of trace ---")?;
        writeln!(f, "seed: {}", self.seed)?;
        writeln!(f, "{}: {}", self.guarantee, self.detail)?;
        write!(f, "replay: {}", self.replay)
    }
}

// ------------------------------------------------------------------------------------------------------
// Trace
// ------------------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum TraceWhat {
    Record(Record),
    Sim(String),
    Drop { from: u32, to: u32, bytes: usize, why: &'static str },
}

#[derive(Clone, Debug)]
struct TraceEntry {
    t: u64,
    n: u64,
    what: TraceWhat,
}

impl TraceEntry {
    fn line(&self) -> String {
        match &self.what {
            TraceWhat::Record(r) => format!("t={} {}", self.t, fmt_record(r)),
            TraceWhat::Sim(s) => format!("t={} sim: {s}", self.t),
            TraceWhat::Drop { from, to, bytes, why } => {
                format!("t={} drop n{from}->n{to} {bytes}B ({why})", self.t)
            }
        }
    }
}

/// `3e2`: node 3, epoch 2.
pub fn fmt_member(m: Member) -> String {
    format!("{}e{}", m.0 .0, m.1 .0)
}

/// `[1e1 2e1 3e2]`.
pub fn fmt_members(ms: &[Member]) -> String {
    let v: Vec<String> = ms.iter().map(|m| fmt_member(*m)).collect();
    format!("[{}]", v.join(" "))
}

fn block_name(r: BlockReason) -> &'static str {
    match r {
        BlockReason::NoQuorum => "no_quorum",
        BlockReason::Fencing => "fencing",
        BlockReason::StatefulMergeWait => "stateful_merge_wait",
        BlockReason::StateTransfer => "state_transfer",
    }
}

fn action_name(a: MergeAction) -> &'static str {
    match a {
        MergeAction::Refuse => "refuse",
        MergeAction::Fence => "fence",
        MergeAction::Kill => "kill",
        MergeAction::Wait => "wait",
    }
}

fn method_name(m: FenceMethod) -> &'static str {
    match m {
        FenceMethod::Agent => "agent",
        FenceMethod::Ack => "ack",
        FenceMethod::Watchdog => "watchdog",
        FenceMethod::Restarted => "restarted",
    }
}

fn delivery_name(d: Delivery) -> &'static str {
    match d {
        Delivery::Agreed => "agreed",
        Delivery::Safe => "safe",
    }
}

/// One record as one readable line (without the time): `n3e2 view 5.1 [1e1 3e2] primary failed=[2e1]`.
pub fn fmt_record(r: &Record) -> String {
    let who = format!("n{}e{}", r.node.0, r.epoch.0);
    let body = match &r.event {
        Event::Start { version } => format!("start (version {version})"),
        Event::View { view, members, primary, joined, left, failed, .. } => {
            let mut s = format!(
                "view {view} {} {}",
                fmt_members(members),
                if *primary { "primary" } else { "non-primary" }
            );
            if !joined.is_empty() {
                s.push_str(&format!(" joined={}", fmt_members(joined)));
            }
            if !left.is_empty() {
                s.push_str(&format!(" left={}", fmt_members(left)));
            }
            if !failed.is_empty() {
                s.push_str(&format!(" failed={}", fmt_members(failed)));
            }
            s
        }
        Event::Blocked { reason } => format!("blocked {}", block_name(*reason)),
        Event::Unblocked {} => "unblocked".to_string(),
        Event::Send { group, msg, bytes, delivery, .. } => {
            format!("send {msg} to {group} {bytes}B {}", delivery_name(*delivery))
        }
        Event::Deliver { group, msg, view, seq, .. } => match seq {
            Some(s) => format!("deliver {msg} of {group} in {view} #{s}"),
            None => format!("deliver {msg} of {group} in {view}"),
        },
        Event::GroupView { group, view, members } => {
            format!("group_view {group} in {view} {}", fmt_members(members))
        }
        Event::StatefulMerge { member, view, action, policy } => format!(
            "stateful_merge {} refused by {view} action={} policy={}",
            fmt_member(*member),
            action_name(*action),
            policy.as_deref().unwrap_or("?")
        ),
        Event::RemovedSelf { view } => format!("removed_self (told by primary view {view})"),
        Event::FenceRequest { target, reason } => format!("fence_request {} ({reason})", fmt_member(*target)),
        Event::FenceResult { target, ok, method, detail } => {
            format!("fence_result {} ok={ok} method={} ({detail})", fmt_member(*target), method_name(*method))
        }
        Event::Recovered { view, failed } => format!("recovered {} in {view}", fmt_members(failed)),
        Event::StateTransfer { group, role, peer, bytes, ok, .. } => format!(
            "state_transfer {group} {} peer={} {bytes}B ok={ok}",
            match role {
                TransferRole::Provider => "provider",
                TransferRole::Receiver => "receiver",
            },
            fmt_member(*peer)
        ),
        Event::SelfFence { reason } => format!("self_fence ({reason})"),
        Event::Stop { reason } => format!("stop ({reason})"),
    };
    format!("{who} {body}")
}

// ------------------------------------------------------------------------------------------------------
// Events
// ------------------------------------------------------------------------------------------------------

#[derive(Debug)]
enum Ev {
    /// A datagram arrives at `to`.
    Datagram { from: u32, to: u32, bytes: Vec<u8> },
    /// The node's timer (see `Slot::timer_at`).
    Wake { node: u32 },
    /// The application client of one incarnation acts.
    Client { node: u32, inc: u64 },
    /// The fence agent of `requester` (incarnation `inc`) acts on `target`.
    FenceRun { requester: u32, inc: u64, target: Member, behaviour: FenceBehaviour },
    /// The fence agent's report reaches `requester`.
    FenceReport { requester: u32, inc: u64, target: Member, ok: bool, detail: String },
    /// The node boots (if it is down) with an epoch of at least `min_epoch`. `inquire`: it asks the
    /// cluster for its epochs first, as an agent starting from its data directory does; an agent whose
    /// running core asked for a new epoch (`NewEpoch`) knows it already and starts the new core at once.
    Boot { node: u32, min_epoch: Epoch, why: &'static str, inquire: bool },
    /// A pause ends (if `gen` is still the node's pause generation).
    Resume { node: u32, gen: u64 },
    /// A flapping link changes state.
    Flap { a: u32, b: u32, gen: u64 },
    /// The random fault injector acts (if `gen` is still the injector's generation).
    RandomFault { gen: u64 },
    /// The service manager starts the agent again (if `gen` is still the node's exit generation).
    ServiceStart { node: u32, gen: u64 },
    /// The host asks the agent to stop cleanly (SIGTERM); `restart`: `systemctl restart`, else `stop`.
    /// A stop the random injector scheduled (`random`) is void once the faults are off.
    Stop { node: u32, restart: bool, random: bool },
    /// The agent's shutdown deadline (`leave_deadline`, one failure timeout) passes for incarnation `inc`.
    LeaveDeadline { node: u32, inc: u64 },
    /// The epoch inquiry of a starting agent (incarnation `inc`) is due.
    Inquire { node: u32, inc: u64 },
}

struct Queued {
    at: u64,
    id: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.id) == (o.at, o.id)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the earliest event, ties by insertion order.
    fn cmp(&self, o: &Self) -> CmpOrdering {
        (o.at, o.id).cmp(&(self.at, self.id))
    }
}

// ------------------------------------------------------------------------------------------------------
// Nodes and the application model
// ------------------------------------------------------------------------------------------------------

/// The state of one group as the application model keeps it: a hash chain over the delivered messages
/// and their count. Two members that delivered the same history hold the same value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupState {
    /// FNV-1a chain over (message id, payload hash) of every delivered message.
    pub hash: u64,
    /// Messages delivered (or inherited through state transfer).
    pub count: u64,
}

impl GroupState {
    /// The bytes a provider sends: hash, count, and padding derived from both (a few hundred bytes, so
    /// that a corrupted or truncated state is noticed when it is applied).
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(300 + 20);
        v.extend_from_slice(&self.hash.to_le_bytes());
        v.extend_from_slice(&self.count.to_le_bytes());
        let pad = 200 + (self.hash % 200) as usize;
        v.extend_from_slice(&(pad as u32).to_le_bytes());
        v.extend((0..pad).map(|i| pad_byte(self.hash, self.count, i)));
        v
    }

    /// The inverse of [`GroupState::encode`]; an empty state is the empty group (no one held it).
    fn decode(b: &[u8]) -> Result<GroupState, String> {
        if b.is_empty() {
            return Ok(GroupState::default());
        }
        if b.len() < 20 {
            return Err(format!("state of {} bytes is shorter than its 20-byte header", b.len()));
        }
        let hash = u64::from_le_bytes(b[0..8].try_into().map_err(|_| "header".to_string())?);
        let count = u64::from_le_bytes(b[8..16].try_into().map_err(|_| "header".to_string())?);
        let pad = u32::from_le_bytes(b[16..20].try_into().map_err(|_| "header".to_string())?) as usize;
        if b.len() != 20 + pad {
            return Err(format!("state has {} bytes, its header says {}", b.len(), 20 + pad));
        }
        if let Some(i) = (0..pad).find(|&i| b[20 + i] != pad_byte(hash, count, i)) {
            return Err(format!("state padding corrupted at byte {}", 20 + i));
        }
        Ok(GroupState { hash, count })
    }
}

/// Parses `"<node>.<epoch>.<n>"`.
pub fn parse_msg_id(s: &str) -> Option<MsgId> {
    let mut it = s.split('.');
    let node = it.next()?.parse().ok()?;
    let epoch = it.next()?.parse().ok()?;
    let n = it.next()?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    Some(MsgId { sender: Member(NodeId(node), Epoch(epoch)), n })
}

fn pad_byte(hash: u64, count: u64, i: usize) -> u8 {
    ((hash >> ((i % 8) * 8)) as u8) ^ (i as u8) ^ (count as u8)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over bytes.
pub fn fnv64(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

fn fold(h: u64, x: u64) -> u64 {
    let mut h = if h == 0 { FNV_OFFSET } else { h };
    for b in x.to_le_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// The application client of one incarnation of a node.
#[derive(Clone, Debug, Default)]
struct App {
    /// Group states.
    groups: BTreeMap<String, GroupState>,
    /// Groups the client asked to join and did not leave.
    joined: BTreeSet<String>,
    /// The watchdog fired (`SelfFence`): the client stopped acting.
    stopped: bool,
    /// A multicast returned `QueueFull`; wait for `SendReady`.
    waiting_ready: bool,
}

/// Something that arrived for a paused node and is handed to it when it resumes.
#[derive(Debug)]
enum Held {
    Datagram(Vec<u8>),
    FenceReport { target: Member, ok: bool, detail: String },
}

struct Slot {
    id: u32,
    core: Option<Node>,
    /// Bumped at every start and crash: events of an earlier incarnation (client actions, fence agents)
    /// carry the incarnation they belong to and are dropped when it changed.
    inc: u64,
    /// The node's disk: survives crashes.
    disk: Durable,
    /// The operator restored the disk from a backup and says so at the next start (`after_restore`).
    restored: bool,
    paused: bool,
    pause_gen: u64,
    /// A fence agent paused it (a "fence" that only stops the process) until this time: the liveness
    /// phase does not cut that pause short, since the agent reported the member fenced on that promise.
    fence_pause_until: u64,
    /// What arrived while paused: the socket buffer's datagrams and the fence agent's reports.
    held: VecDeque<Held>,
    /// Bytes of the datagrams in `held` (bounded by [`HELD_BYTES_MAX`]).
    held_bytes: usize,
    /// Datagrams in `held`.
    held_datagrams: usize,
    /// Bumped at every exit: a service manager start scheduled for an earlier exit is void.
    exit_gen: u64,
    /// Snapshots of the disk (time taken, contents), oldest first, for restores from backup.
    backups: VecDeque<(u64, Durable)>,
    /// The host asked this incarnation to stop: restart it afterwards (`systemctl restart`) or not.
    stopping: Option<bool>,
    /// The operator stopped the service: the service manager leaves it down until someone starts it.
    stopped_by_operator: bool,
    /// When the armed `Wake` event fires (0: none armed).
    timer_at: u64,
    app: App,
    /// A core asked for a restart with a new epoch; the boot is scheduled.
    restarting: bool,
    /// The agent's member-local tripwire, fed the same records (it must never fire on a correct run).
    tripwire: Option<cohort::tripwire::Tripwire>,
    /// The agent is starting: it asks the cluster which epochs of its node were seen before it picks
    /// one (`cohort::inquiry`); the lowest acceptable epoch and why it boots.
    inquiry: Option<(EpochInquiry, Epoch, String)>,
}

/// A message whose delivery the liveness phase waits for (L2).
#[derive(Clone, Debug)]
struct Watched {
    /// The id `multicast` returned (the core may deliver it under a renewed id).
    id: Option<MsgId>,
    expected: BTreeSet<Member>,
    got: BTreeSet<Member>,
}

#[derive(Clone, Debug)]
struct Flap {
    gen: u64,
    period_ms: u64,
    until: u64,
    down: bool,
}

/// Which faults the random injector may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultKinds {
    /// Loss, duplication and delay changes.
    pub net: bool,
    /// Symmetric partitions into two or three sides.
    pub partition: bool,
    /// One-way partitions.
    pub oneway: bool,
    /// Flapping links.
    pub flap: bool,
    /// Crashes and restarts with a new epoch.
    pub crash: bool,
    /// Pauses (zombies).
    pub pause: bool,
}

impl FaultKinds {
    /// Every fault.
    pub fn all() -> FaultKinds {
        FaultKinds { net: true, partition: true, oneway: true, flap: true, crash: true, pause: true }
    }
    /// No fault.
    pub fn none() -> FaultKinds {
        FaultKinds { net: false, partition: false, oneway: false, flap: false, crash: false, pause: false }
    }
    /// Parses `all`, `none` or a comma-separated list of `net,partition,oneway,flap,crash,pause`.
    pub fn parse(s: &str) -> Result<FaultKinds, String> {
        match s {
            "all" => return Ok(FaultKinds::all()),
            "none" => return Ok(FaultKinds::none()),
            _ => {}
        }
        let mut k = FaultKinds::none();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "net" => k.net = true,
                "partition" => k.partition = true,
                "oneway" => k.oneway = true,
                "flap" => k.flap = true,
                "crash" => k.crash = true,
                "pause" => k.pause = true,
                other => {
                    return Err(format!(
                        "unknown fault kind `{other}`: expected all, none, or a list of net,partition,oneway,flap,crash,pause"
                    ))
                }
            }
        }
        Ok(k)
    }
    fn list(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        for (on, name) in [
            (self.net, "net"),
            (self.partition, "partition"),
            (self.oneway, "oneway"),
            (self.flap, "flap"),
            (self.crash, "crash"),
            (self.pause, "pause"),
        ] {
            if on {
                v.push(name);
            }
        }
        v
    }
}

impl fmt::Display for FaultKinds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = self.list();
        if l.len() == 6 {
            write!(f, "all")
        } else if l.is_empty() {
            write!(f, "none")
        } else {
            write!(f, "{}", l.join(","))
        }
    }
}

/// Counters of one run.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimStats {
    /// Datagrams the cores sent.
    pub datagrams: u64,
    /// Datagrams dropped (loss, partition, node down, full buffer).
    pub dropped: u64,
    /// Messages the clients multicast successfully.
    pub app_sends: u64,
    /// Multicasts refused with `QueueFull`.
    pub queue_full: u64,
    /// Application deliveries.
    pub app_deliveries: u64,
    /// State transfers applied.
    pub states_applied: u64,
    /// Crashes (including kills by the fence agent and process restarts).
    pub crashes: u64,
    /// Starts of a core (first boots and restarts).
    pub starts: u64,
    /// Pauses.
    pub pauses: u64,
    /// Fence requests.
    pub fence_requests: u64,
    /// Random faults injected.
    pub faults: u64,
}

// ------------------------------------------------------------------------------------------------------
// The simulator
// ------------------------------------------------------------------------------------------------------

/// A simulated cluster. See the module documentation.
pub struct Sim {
    /// The options this run was created with (the network and client parts change during the run).
    pub opts: SimOptions,
    cfg: Arc<Config>,
    rng: ChaCha8Rng,
    now: u64,
    queue: BinaryHeap<Queued>,
    next_event: u64,
    slots: Vec<Slot>,
    /// Directed links cut by partitions and one-way partitions.
    cut: BTreeSet<(u32, u32)>,
    /// `COHORT_SIM_MSGS=1` (or `2`) with `--trace`: a reassembler for printing view-change and
    /// state-transfer messages.
    msg_trace: Option<cohort::wire::Reassembler>,
    /// `COHORT_SIM_MSGS=2`: the ordering messages (`Data`, `Ordered`, `Ack`, `Nak`) too.
    msg_trace_ordering: bool,
    /// Flapping links, by (low node, high node).
    flaps: BTreeMap<(u32, u32), Flap>,
    flap_gen: u64,
    checker: Checker,
    /// The first violation; the run stops there.
    pub failure: Option<Failure>,
    /// Every record except `send` and `deliver`, in emission order.
    log: Vec<Record>,
    control: VecDeque<TraceEntry>,
    traffic: VecDeque<TraceEntry>,
    trace_n: u64,
    timeline: Vec<(u64, String)>,
    timeline_views: BTreeMap<ViewId, usize>,
    /// Digests of the payloads each member's application multicast (G6 by content: a `send` record
    /// must name one of them).
    app_sent: BTreeMap<Member, BTreeSet<String>>,
    /// The digest of every `send` record, by message id. The core may send a message again under a new
    /// id after a view change (with a new `send` record), so ids come from the records, not from
    /// `multicast`'s return value.
    sent: BTreeMap<MsgId, String>,
    /// Group state after each delivered position: (group, view, seq) -> (state, the first member seen).
    positions: BTreeMap<(String, ViewId, u64), (GroupState, Member)>,
    /// Final-round messages by the FNV hash of their (random, hence unique) payload.
    watched: BTreeMap<u64, Watched>,
    /// Random fault injection is on.
    faults_on: bool,
    /// The liveness phase began: every node must run (one still stopping then is booted when it exits).
    liveness: bool,
    fault_gen: u64,
    /// The random injector also stops nodes cleanly (`systemctl stop` or `restart`).
    pub random_stops: bool,
    fault_kinds: FaultKinds,
    fault_gap_ms: (u64, u64),
    /// Counters.
    pub stats: SimStats,
    /// When each member crashed (for L4 detection times).
    crashed_at: BTreeMap<Member, u64>,
    /// When the network was last healed (for L4 merge times).
    pub healed_at: Option<u64>,
    /// Members that left cleanly (L6): the host asked them to leave while they were in a view with other
    /// members and could reach at least one of them. See [`Sim::leave`].
    clean_leavers: BTreeSet<Member>,
    /// The cluster stopped cleanly (every node's last member a clean leaver, stopped from a settled
    /// cluster) and is cold-starting: no `fence_request` and no `recovered` may appear until the next fault.
    cold_start_clean: bool,
    /// The whole-cluster stop in progress began with the cluster settled.
    stop_all_from_settled: bool,
    /// `deliver` records as (time, member, view), when `opts.keep_deliveries`.
    deliveries: Vec<(u64, Member, ViewId)>,
    /// Nodes whose data directory was wiped or restored and that have not yet installed a primary view
    /// of every configured node since. The service manager loses one directory at a time: what a lost
    /// directory knew of other nodes' epochs is back on it only once such a view formed, and G12 rests
    /// on every epoch being known to a majority of surviving directories (PROTOCOL §1 and §11).
    lost_disks: BTreeSet<u32>,
    /// Clean leavers whose leave reached nobody (every node that could record it was down): they count
    /// for L6 once their node's next incarnation is in a primary view (it reports the leave there); a
    /// removal as failed before that is what the others must do, and ends their counting.
    unheard_leaves: BTreeSet<Member>,
    /// Clean leavers whose leave no primary view recorded yet, with the nodes that know of it: the
    /// leaver's own node and those that installed a non-primary view listing it as left. Only their
    /// disks hold the leave; while none of them runs, the others cannot know of it (see
    /// `excuse_leaves_known_only_to_down_nodes`).
    leave_witnesses: BTreeMap<Member, BTreeSet<u32>>,
}

impl Sim {
    /// A cluster with every node down; start them with [`Sim::start`].
    pub fn new(opts: SimOptions) -> Sim {
        let rng = ChaCha8Rng::seed_from_u64(opts.seed);
        Sim::with_rng(opts, rng)
    }

    /// Like [`Sim::new`] but continuing a generator the caller already drew from (a campaign draws the
    /// run's parameters from the same generator, so one seed still determines everything).
    pub fn with_rng(opts: SimOptions, rng: ChaCha8Rng) -> Sim {
        let n = opts.cfg.nodes.len() as u32;
        for (i, spec) in opts.cfg.nodes.iter().enumerate() {
            assert_eq!(spec.id.0, i as u32 + 1, "the simulator needs node ids 1..=N in order");
        }
        if let Err(e) = opts.cfg.validate() {
            panic!("invalid simulator configuration: {e}");
        }
        let slots = (1..=n)
            .map(|id| Slot {
                id,
                core: None,
                inc: 0,
                disk: Durable::fresh(Epoch(0)),
                restored: false,
                paused: false,
                pause_gen: 0,
                fence_pause_until: 0,
                held: VecDeque::new(),
                held_bytes: 0,
                held_datagrams: 0,
                exit_gen: 0,
                backups: VecDeque::new(),
                stopping: None,
                stopped_by_operator: false,
                timer_at: 0,
                app: App::default(),
                restarting: false,
                tripwire: None,
                inquiry: None,
            })
            .collect();
        Sim {
            cfg: Arc::new(opts.cfg.clone()),
            opts,
            rng,
            now: 0,
            queue: BinaryHeap::new(),
            next_event: 0,
            slots,
            cut: BTreeSet::new(),
            msg_trace: std::env::var("COHORT_SIM_MSGS")
                .is_ok_and(|v| v == "1" || v == "2")
                .then(|| cohort::wire::Reassembler::new(64 << 20, 1024, 1 << 30, 10_000)),
            msg_trace_ordering: std::env::var("COHORT_SIM_MSGS").is_ok_and(|v| v == "2"),
            flaps: BTreeMap::new(),
            flap_gen: 0,
            checker: Checker::new(),
            failure: None,
            log: Vec::new(),
            control: VecDeque::new(),
            traffic: VecDeque::new(),
            trace_n: 0,
            timeline: Vec::new(),
            timeline_views: BTreeMap::new(),
            app_sent: BTreeMap::new(),
            sent: BTreeMap::new(),
            positions: BTreeMap::new(),
            watched: BTreeMap::new(),
            faults_on: false,
            liveness: false,
            fault_gen: 0,
            random_stops: false,
            fault_kinds: FaultKinds::none(),
            fault_gap_ms: (100, 400),
            stats: SimStats::default(),
            crashed_at: BTreeMap::new(),
            healed_at: None,
            clean_leavers: BTreeSet::new(),
            cold_start_clean: false,
            stop_all_from_settled: false,
            lost_disks: BTreeSet::new(),
            unheard_leaves: BTreeSet::new(),
            leave_witnesses: BTreeMap::new(),
            deliveries: Vec::new(),
        }
    }

    // --------------------------------------------------------------------------------------------------
    // Accessors
    // --------------------------------------------------------------------------------------------------

    /// Simulated time.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// The core configuration.
    pub fn cfg(&self) -> &Config {
        &self.cfg
    }

    /// Number of configured nodes.
    pub fn node_count(&self) -> u32 {
        self.slots.len() as u32
    }

    /// The random number generator (for drivers that must stay on the one seeded stream).
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    fn slot(&self, n: u32) -> &Slot {
        &self.slots[(n - 1) as usize]
    }

    fn slot_mut(&mut self, n: u32) -> &mut Slot {
        &mut self.slots[(n - 1) as usize]
    }

    /// True when the node has a core (it may be paused).
    pub fn is_up(&self, n: u32) -> bool {
        self.slot(n).core.is_some()
    }

    /// True when the node is paused.
    pub fn is_paused(&self, n: u32) -> bool {
        self.slot(n).paused
    }

    /// The member the node currently runs, if it is up.
    pub fn member_of(&self, n: u32) -> Option<Member> {
        self.slot(n).core.as_ref().map(Node::member)
    }

    /// The epoch on the node's disk.
    pub fn disk_epoch(&self, n: u32) -> Epoch {
        self.slot(n).disk.epoch
    }

    /// The node's status, if it is up.
    pub fn status(&self, n: u32) -> Option<Status> {
        self.slot(n).core.as_ref().map(Node::status)
    }

    /// The application model's state of `group` at node `n`.
    pub fn group_state(&self, n: u32, group: &str) -> Option<GroupState> {
        self.slot(n).app.groups.get(group).copied()
    }

    /// True when the node's application client stopped because the watchdog fired.
    pub fn client_stopped(&self, n: u32) -> bool {
        self.slot(n).app.stopped
    }

    /// Every record except `send` and `deliver`, in emission order.
    pub fn log(&self) -> &[Record] {
        &self.log
    }

    /// The guarantee checker.
    pub fn checker(&self) -> &Checker {
        &self.checker
    }

    /// The readable timeline (when `opts.timeline`).
    pub fn timeline(&self) -> Vec<String> {
        self.timeline.iter().map(|(t, s)| format!("t={t:>5} {s}")).collect()
    }

    /// Nodes that are up and not paused.
    pub fn running(&self) -> Vec<u32> {
        self.slots.iter().filter(|s| s.core.is_some() && !s.paused).map(|s| s.id).collect()
    }

    /// Members named by `stateful_merge` records.
    pub fn stateful_merged(&self) -> BTreeSet<Member> {
        self.log
            .iter()
            .filter_map(|r| match &r.event {
                Event::StatefulMerge { member, .. } => Some(*member),
                _ => None,
            })
            .collect()
    }

    /// When `m` was last crashed or killed by the simulator.
    pub fn crashed_at(&self, m: Member) -> Option<u64> {
        self.crashed_at.get(&m).copied()
    }

    // --------------------------------------------------------------------------------------------------
    // Failure and trace
    // --------------------------------------------------------------------------------------------------

    /// Stops the run with a violation of `guarantee` (the first one wins).
    pub fn fail(&mut self, guarantee: &str, detail: String) {
        if self.failure.is_some() {
            return;
        }
        self.note(format!("VIOLATION {guarantee}: {detail}"));
        self.failure = Some(Failure {
            seed: self.opts.seed,
            guarantee: guarantee.to_string(),
            detail,
            at_ms: self.now,
            trace: self.trace_lines(),
            // A hint with a `{seed}` placeholder is a complete command; otherwise the seed goes in the
            // environment, as the test binary reads it.
            replay: if self.opts.replay_hint.contains("{seed}") {
                self.opts.replay_hint.replace("{seed}", &self.opts.seed.to_string())
            } else {
                format!("COHORT_SEED={} {}", self.opts.seed, self.opts.replay_hint)
            },
        });
    }

    /// True once a violation stopped the run.
    pub fn failed(&self) -> bool {
        self.failure.is_some()
    }

    /// The last control and traffic lines, interleaved in the order they happened.
    pub fn trace_lines(&self) -> Vec<String> {
        let mut all: Vec<&TraceEntry> = self.control.iter().chain(self.traffic.iter()).collect();
        all.sort_by_key(|e| e.n);
        all.into_iter().map(TraceEntry::line).collect()
    }

    fn push_trace(&mut self, what: TraceWhat) {
        let traffic = match &what {
            TraceWhat::Drop { .. } => true,
            TraceWhat::Record(r) => matches!(r.event, Event::Send { .. } | Event::Deliver { .. }),
            TraceWhat::Sim(_) => false,
        };
        let e = TraceEntry { t: self.now, n: self.trace_n, what };
        self.trace_n += 1;
        if self.opts.verbose {
            println!("{}", e.line());
        }
        let (ring, cap) = if traffic {
            (&mut self.traffic, self.opts.traffic_lines)
        } else {
            (&mut self.control, self.opts.trace_lines)
        };
        if ring.len() >= cap.max(1) {
            ring.pop_front();
        }
        ring.push_back(e);
    }

    /// Adds a simulator line to the trace (and to the timeline).
    pub fn note(&mut self, s: String) {
        if self.opts.timeline {
            self.timeline.push((self.now, format!("sim: {s}")));
        }
        self.push_trace(TraceWhat::Sim(s));
    }

    fn drop_dgram(&mut self, from: u32, to: u32, bytes: usize, why: &'static str) {
        self.stats.dropped += 1;
        self.push_trace(TraceWhat::Drop { from, to, bytes, why });
    }

    fn timeline_record(&mut self, r: &Record) {
        let who = format!("n{}e{}", r.node.0, r.epoch.0);
        // Routine lines a reader of the story does not need: the simulator's own `start` line says the
        // same as the core's, every core blocks on `no_quorum` when it starts, and a state transfer
        // blocks and unblocks its receiver around the `state_transfer` line.
        let quiet = match &r.event {
            Event::Send { .. } | Event::Deliver { .. } | Event::GroupView { .. } | Event::Start { .. } => {
                true
            }
            Event::Blocked { reason: BlockReason::StateTransfer } => true,
            Event::Blocked { reason: BlockReason::NoQuorum } => self.just_started(r),
            Event::Unblocked {} => {
                self.log.iter().rev().find(|l| l.member() == r.member()).is_some_and(|l| {
                    matches!(l.event, Event::StateTransfer { role: TransferRole::Receiver, .. })
                })
            }
            _ => false,
        };
        match &r.event {
            _ if quiet => {}
            Event::View { view, members, primary, failed, left, .. } => {
                if let Some(&i) = self.timeline_views.get(view) {
                    self.timeline[i].1.push_str(&format!(" {who}"));
                } else {
                    let mut s = format!(
                        "view {view} {} {}",
                        fmt_members(members),
                        if *primary { "PRIMARY" } else { "non-primary" }
                    );
                    if !failed.is_empty() {
                        s.push_str(&format!(" (failed {})", fmt_members(failed)));
                    }
                    if !left.is_empty() {
                        s.push_str(&format!(" (left {})", fmt_members(left)));
                    }
                    s.push_str(" installed by");
                    s.push_str(&format!(" {who}"));
                    self.timeline_views.insert(*view, self.timeline.len());
                    self.timeline.push((self.now, s));
                }
            }
            _ => {
                let line = fmt_record(r);
                self.timeline.push((self.now, line));
            }
        }
    }

    fn just_started(&self, r: &Record) -> bool {
        self.log
            .iter()
            .rev()
            .find(|l| l.member() == r.member())
            .is_some_and(|l| matches!(l.event, Event::Start { .. }))
    }

    // --------------------------------------------------------------------------------------------------
    // The event loop
    // --------------------------------------------------------------------------------------------------

    fn schedule(&mut self, at: u64, ev: Ev) {
        let id = self.next_event;
        self.next_event += 1;
        self.queue.push(Queued { at, id, ev });
    }

    /// Runs every event up to and including time `t` (or until a violation), then sets the clock to `t`.
    pub fn run_until(&mut self, t: u64) {
        while self.failure.is_none() {
            match self.queue.peek() {
                Some(q) if q.at <= t => {}
                _ => break,
            }
            let Some(q) = self.queue.pop() else { break };
            self.now = self.now.max(q.at);
            self.dispatch(q.ev);
        }
        if self.failure.is_none() {
            self.now = self.now.max(t);
        }
    }

    /// Runs for `ms` milliseconds.
    pub fn run_for(&mut self, ms: u64) {
        let t = self.now + ms;
        self.run_until(t);
    }

    /// Runs until `cond` holds (checked every `every_ms`) or `deadline` passes. Returns whether it held.
    pub fn run_until_cond(
        &mut self,
        deadline: u64,
        every_ms: u64,
        mut cond: impl FnMut(&mut Sim) -> bool,
    ) -> bool {
        loop {
            if self.failure.is_some() {
                return false;
            }
            if cond(self) {
                return true;
            }
            if self.now >= deadline {
                return false;
            }
            let next = (self.now + every_ms.max(1)).min(deadline);
            self.run_until(next);
        }
    }

    fn dispatch(&mut self, ev: Ev) {
        match ev {
            Ev::Datagram { from, to, bytes } => self.on_datagram(from, to, bytes),
            Ev::Wake { node } => self.on_wake(node),
            Ev::Client { node, inc } => self.on_client(node, inc),
            Ev::FenceRun { requester, inc, target, behaviour } => {
                self.on_fence_run(requester, inc, target, behaviour)
            }
            Ev::FenceReport { requester, inc, target, ok, detail } => {
                self.on_fence_report(requester, inc, target, ok, detail)
            }
            Ev::Boot { node, min_epoch, why, inquire } => {
                if self.slot(node).core.is_none() && inquire {
                    self.start_with(node, min_epoch, why);
                } else if self.slot(node).core.is_none() {
                    self.slot_mut(node).inquiry = None;
                    self.start_claim(node, min_epoch, why);
                }
            }
            Ev::Resume { node, gen } => {
                if self.slot(node).paused && self.slot(node).pause_gen == gen {
                    self.resume(node);
                }
            }
            Ev::Flap { a, b, gen } => self.on_flap(a, b, gen),
            Ev::ServiceStart { node, gen } => self.on_service_start(node, gen),
            Ev::Stop { node, restart, random } => {
                if !random || self.faults_on {
                    self.stop(node, restart)
                }
            }
            Ev::LeaveDeadline { node, inc } => self.on_leave_deadline(node, inc),
            Ev::Inquire { node, inc } => self.on_inquire(node, inc),
            Ev::RandomFault { gen } => {
                if self.faults_on && gen == self.fault_gen {
                    self.random_fault();
                    let (lo, hi) = self.fault_gap_ms;
                    let gap = self.rng.gen_range(lo..=hi.max(lo));
                    self.schedule(self.now + gap, Ev::RandomFault { gen });
                }
            }
        }
    }

    fn on_datagram(&mut self, from: u32, to: u32, bytes: Vec<u8>) {
        let slot = self.slot(to);
        if slot.core.is_none() && slot.inquiry.is_some() && !self.is_cut(from, to) {
            let now = self.now;
            let mut out = Vec::new();
            let decided = match self.slot_mut(to).inquiry.as_mut() {
                Some((q, _, _)) => q.receive(now, &bytes, &mut out),
                None => None,
            };
            self.carry_inquiry(to, out, decided);
            return;
        }
        if slot.core.is_none() {
            self.drop_dgram(from, to, bytes.len(), "down");
            return;
        }
        if self.is_cut(from, to) {
            // A partition that started while the datagram was in flight drops it too.
            self.drop_dgram(from, to, bytes.len(), "partition");
            return;
        }
        if slot.paused {
            if slot.held_datagrams >= HELD_DATAGRAMS_MAX || slot.held_bytes + bytes.len() > HELD_BYTES_MAX {
                self.drop_dgram(from, to, bytes.len(), "paused, socket buffer full");
            } else {
                let slot = self.slot_mut(to);
                slot.held_bytes += bytes.len();
                slot.held_datagrams += 1;
                slot.held.push_back(Held::Datagram(bytes));
            }
            return;
        }
        if self.opts.verbose && self.msg_trace.is_some() {
            self.print_protocol_message(from, to, &bytes);
        }
        self.step(to, |core, now, out| core.receive(now, &bytes, out));
    }

    /// With `--trace` and `COHORT_SIM_MSGS=1`: one line per view-change or state-transfer datagram a
    /// node receives (not heartbeats or data), for reading how a view was decided and how a transfer
    /// went; with `COHORT_SIM_MSGS=2`, the ordering messages too (`Data`, `Ordered`, `Ack`, `Nak`).
    fn print_protocol_message(&mut self, from: u32, to: u32, bytes: &[u8]) {
        use cohort::msg::Body;
        let now = self.now;
        let ordering = self.msg_trace_ordering;
        let Some(reasm) = self.msg_trace.as_mut() else { return };
        let Ok(Some(packet)) = reasm.accept(now, NodeId(from * 1000 + to), bytes) else { return };
        let Ok(env) = cohort::wire::decode::<Body>(&packet, usize::MAX, &self.cfg.cluster) else { return };
        let vid = |v: &Option<View>| v.as_ref().map_or("-".to_string(), |v| v.id.to_string());
        let what = match &env.body {
            Body::Prepare { ballot, members } => format!("Prepare {ballot} {members:?}"),
            Body::Promise { ballot, state } => format!(
                "Promise {ballot} view={} last_primary={} accepted={} inherited={:?} reg_last_primary={:?}",
                vid(&state.view),
                vid(&state.last_primary),
                state
                    .accepted
                    .as_ref()
                    .map_or("-".to_string(), |a| format!("{} {:?}", a.view.id, a.view.members)),
                state.inherited.as_ref().map(|a| a.view),
                state.registry.last_primary_view.as_ref().map(|v| v.id),
            ),
            Body::Reject { ballot, reason } => format!("Reject {ballot} {reason:?}"),
            Body::Accept { ballot, install } => format!(
                "Accept {ballot} {:?} primary={} prev_primary={:?} lineage={}",
                install.view.members,
                install.view.primary,
                install.prev_primary,
                fmt_members(&install.lineage)
            ),
            Body::Accepted { ballot } => format!("Accepted {ballot}"),
            Body::Commit { ballot } => format!("Commit {ballot}"),
            Body::State { group, joiner, token, state } => {
                format!("State {group} joiner={} token={token} {}B", fmt_member(*joiner), state.len())
            }
            Body::StateAck { group, token } => format!("StateAck {group} token={token}"),
            Body::Ack { view, received } if ordering => {
                format!("Ack {view} received={received}")
            }
            Body::Nak { view, from, to } if ordering => {
                format!("Nak {view} {from}..={to}")
            }
            Body::Ordered { view, msgs, stable, ordered } if ordering => format!(
                "Ordered {view} stable={stable} ordered={ordered} {:?}",
                msgs.iter().map(|m| (m.seq, m.msg.id.to_string(), m.msg.vseq)).collect::<Vec<_>>()
            ),
            Body::Data { view, msgs } if ordering => format!(
                "Data {view} {:?}",
                msgs.iter().map(|m| (m.id.to_string(), m.vseq, m.op.size())).collect::<Vec<_>>()
            ),
            Body::Heartbeat(h) if h.frozen || h.removed || h.leaving || h.probe != 0 => format!(
                "Heartbeat view={:?} frozen={} removed={} leaving={} probe={}",
                h.view.map(|v| v.to_string()),
                h.frozen,
                h.removed,
                h.leaving,
                h.probe
            ),
            _ => return,
        };
        println!("t={now} msg n{from}->n{to} {}: {what}", env.from);
    }

    fn on_wake(&mut self, n: u32) {
        let now = self.now;
        let slot = self.slot_mut(n);
        if slot.timer_at != now {
            return; // superseded by an earlier wake-up that re-armed the timer
        }
        slot.timer_at = 0;
        if slot.paused {
            return; // a paused process does not run its timers; `resume` re-arms
        }
        let due = slot.core.as_ref().is_some_and(|c| now >= c.next_wakeup_ms());
        if due {
            self.step(n, |core, now, out| core.tick(now, out));
        } else {
            self.arm(n);
        }
    }

    /// Arms the node's timer for its next wake-up if nothing earlier is armed.
    fn arm(&mut self, n: u32) {
        let now = self.now;
        let slot = self.slot_mut(n);
        if slot.paused {
            return;
        }
        let Some(core) = slot.core.as_ref() else { return };
        let w = core.next_wakeup_ms().max(now + 1);
        if slot.timer_at == 0 || slot.timer_at <= now || w < slot.timer_at {
            slot.timer_at = w;
            self.schedule(w, Ev::Wake { node: n });
        }
    }

    /// Runs one input on node `n`'s core and carries out its outputs.
    fn step(&mut self, n: u32, f: impl FnOnce(&mut Node, u64, &mut Vec<Output>)) {
        let now = self.now;
        let mut out = Vec::new();
        {
            let Some(core) = self.slot_mut(n).core.as_mut() else { return };
            f(core, now, &mut out);
        }
        self.carry_out(n, out);
        self.after_step(n);
    }

    fn after_step(&mut self, n: u32) {
        let left = self.slot(n).core.as_ref().is_some_and(Node::has_left);
        if left {
            self.exit(n, Exit::Clean, "left cleanly; the agent exits");
            return;
        }
        self.arm(n);
    }

    /// Carries out a batch of outputs of node `n`, in order. Notifications may call back into the core
    /// (`provide_state`); those outputs are carried out right there, before the rest of the batch.
    fn carry_out(&mut self, n: u32, out: Vec<Output>) {
        let mut work: VecDeque<Output> = out.into();
        let mut new_epoch: Option<(Epoch, NewEpochReason)> = None;
        while let Some(o) = work.pop_front() {
            if self.failure.is_some() {
                return;
            }
            match o {
                Output::Send { to, bytes } => self.net_send(n, to.0, bytes),
                Output::Persist(d) => {
                    let running = self.member_of(n).map(Member::epoch);
                    let disk = self.slot(n).disk.epoch;
                    if d.epoch < disk || Some(d.epoch) != running {
                        self.fail(
                            "G12",
                            format!(
                                "node {n} running epoch {:?} persisted epoch {} over disk epoch {}",
                                running.map(|e| e.0),
                                d.epoch.0,
                                disk.0
                            ),
                        );
                        return;
                    }
                    self.slot_mut(n).disk = d;
                    self.snapshot_disk(n, false);
                }
                Output::Record(r) => self.on_record(n, r),
                Output::Notify(nf) => {
                    let more = self.notify(n, nf);
                    for o in more.into_iter().rev() {
                        work.push_front(o);
                    }
                }
                Output::Fence { target, reason } => {
                    self.stats.fence_requests += 1;
                    let behaviour =
                        if reason == "stateful_merge" { self.opts.merge_fence } else { self.opts.fence };
                    let (lo, hi) = self.opts.fence_delay_ms;
                    let delay = self.rng.gen_range(lo..=hi.max(lo));
                    let inc = self.slot(n).inc;
                    self.schedule(self.now + delay, Ev::FenceRun { requester: n, inc, target, behaviour });
                }
                Output::SelfFence { reason } => {
                    self.slot_mut(n).app.stopped = true;
                    self.note(format!("n{n} client stops: self-fenced ({reason})"));
                }
                Output::NewEpoch { min_epoch, reason } => {
                    // Carried out after the batch: the rest of it still comes from the old member.
                    new_epoch = Some((min_epoch, reason));
                }
            }
        }
        if let Some((min_epoch, reason)) = new_epoch {
            if self.slot(n).core.is_none() {
                return;
            }
            match reason {
                NewEpochReason::Reset => {
                    self.exit(n, Exit::NewEpoch, "reset in place: state dropped");
                    // As the agent's `ReplaceCore`: the running core knew its epochs; it only claims
                    // the next one at a majority before it runs under it (G12).
                    self.start_claim(n, min_epoch, "reset with a new epoch");
                }
                NewEpochReason::Restart | NewEpochReason::MovePast => {
                    let why = if reason == NewEpochReason::Restart {
                        "restart requested by the core"
                    } else {
                        "restart to move past a stale epoch"
                    };
                    self.exit(n, Exit::NewEpoch, why);
                    self.slot_mut(n).restarting = true;
                    let at = self.now + self.opts.restart_delay_ms;
                    self.schedule(
                        at,
                        Ev::Boot { node: n, min_epoch, why: "restarted with a new epoch", inquire: false },
                    );
                }
            }
        }
    }

    fn on_record(&mut self, n: u32, r: Record) {
        if r.node.0 != n || Some(r.member()) != self.member_of(n) {
            self.fail(
                "G12",
                format!(
                    "node {n} running {:?} wrote a record as n{}e{}",
                    self.member_of(n),
                    r.node.0,
                    r.epoch.0
                ),
            );
            return;
        }
        {
            let me = r.member();
            let slot = &mut self.slots[n as usize - 1];
            let t = slot.tripwire.get_or_insert_with(|| cohort::tripwire::Tripwire::new(me));
            if matches!(r.event, Event::Start { .. }) {
                *t = cohort::tripwire::Tripwire::new(me);
            }
            if let Some(what) = t.observe(&r) {
                self.fail("tripwire", format!("the agent's tripwire fired on {}: {what}", fmt_member(me)));
                return;
            }
        }
        if let Event::Send { msg, digest, .. } = &r.event {
            // G6 by content: the core logs a send only for bytes its application multicast.
            let known = self.app_sent.get(&r.member()).is_some_and(|s| s.contains(digest));
            let id = parse_msg_id(msg);
            match id {
                Some(id) if known && id.sender == r.member() => {
                    self.sent.insert(id, digest.clone());
                }
                _ => {
                    self.fail("G6", format!("n{}e{} logged `send` of {msg} (digest {digest}), which its application never multicast", r.node.0, r.epoch.0));
                    return;
                }
            }
        }
        if self.opts.keep_deliveries {
            if let Event::Deliver { view, .. } = &r.event {
                self.deliveries.push((r.ts_ms, r.member(), *view));
            }
        }
        if let Event::View { members, primary: true, .. } = &r.event {
            if members.len() == self.slots.len() {
                self.lost_disks.remove(&n);
            }
            // The node's next incarnation takes part in a primary view: it reported the leave there.
            self.unheard_leaves
                .retain(|m| !members.iter().any(|x| x.node() == m.node() && x.epoch() > m.epoch()));
        }
        if let Event::SelfFence { .. } = &r.event {
            // A leaver whose watchdog fired before its leave completed (no `stop` yet) gave its state up
            // and dies as a reset, not as a clean leave: the others may rightly count it as failed.
            let m = r.member();
            let stopped = self.log.iter().any(|x| x.member() == m && matches!(x.event, Event::Stop { .. }));
            if self.clean_leavers.contains(&m) && !stopped {
                self.clean_leavers.remove(&m);
                self.unheard_leaves.remove(&m);
                self.note(format!(
                    "{} self-fenced before its leave completed: it no longer counts as a clean leave for L6",
                    fmt_member(m)
                ));
            }
        }
        if let Event::View { primary, left, .. } = &r.event {
            for m in left {
                if *primary {
                    self.leave_witnesses.remove(m);
                } else if let Some(w) = self.leave_witnesses.get_mut(m) {
                    w.insert(n);
                }
            }
        }
        let named: Vec<Member> = match &r.event {
            Event::View { primary: true, failed, .. } => failed.clone(),
            Event::FenceRequest { target, .. } => vec![*target],
            Event::Recovered { failed, .. } => failed.clone(),
            _ => Vec::new(),
        };
        self.excuse_leaves_known_only_to_down_nodes(&named);
        let unheard: Vec<Member> = named.into_iter().filter(|m| self.unheard_leaves.contains(m)).collect();
        for m in unheard {
            self.unheard_leaves.remove(&m);
            self.clean_leavers.remove(&m);
            self.note(format!(
                "{} is removed as failed before its node's next incarnation was in a primary view: its \
                 leave reached nobody, so it no longer counts for L6",
                fmt_member(m)
            ));
        }
        let violations = self.checker.observe(&r);
        if let Some(why) = self.l6_violation(&r) {
            self.push_trace(TraceWhat::Record(r.clone()));
            self.fail("L6", why);
            return;
        }
        if self.opts.timeline {
            self.timeline_record(&r);
        }
        let keep = !matches!(r.event, Event::Send { .. } | Event::Deliver { .. });
        self.push_trace(TraceWhat::Record(r.clone()));
        if keep {
            self.log.push(r);
        }
        if let Some(v) = violations.into_iter().next() {
            self.fail(v.guarantee, v.detail);
        }
    }

    /// The application model handles a notification; returns the outputs of any call back into the core.
    fn notify(&mut self, n: u32, nf: Notification) -> Vec<Output> {
        let now = self.now;
        match nf {
            Notification::Deliver { group, msg, sender, view, seq, payload, .. } => {
                let Some(me) = self.member_of(n) else { return Vec::new() };
                self.stats.app_deliveries += 1;
                let h = fnv64(&payload);
                let d = cohort::types::digest(&payload);
                match self.sent.get(&msg) {
                    None => {
                        self.fail(
                            "G6",
                            format!(
                                "{} delivered {msg} from {}, which was never sent (no `send` record)",
                                fmt_member(me),
                                fmt_member(sender)
                            ),
                        );
                        return Vec::new();
                    }
                    Some(sd) if *sd != d || msg.sender != sender => {
                        self.fail(
                            "G6",
                            format!("{} delivered {msg} from {} with other bytes than were sent ({} bytes delivered)", fmt_member(me), fmt_member(sender), payload.len()),
                        );
                        return Vec::new();
                    }
                    Some(_) => {}
                }
                let st = self.slot_mut(n).app.groups.entry(group.clone()).or_default();
                st.hash =
                    fold(fold(fold(fold(st.hash, u64::from(msg.sender.0 .0)), msg.sender.1 .0), msg.n), h);
                st.count += 1;
                let st = *st;
                match self.positions.get(&(group.clone(), view, seq)) {
                    Some((other, who)) if *other != st => {
                        let detail = format!(
                            "after delivering {msg} at {view} #{seq} of group {group}, {} holds state {:016x} ({} msgs) but {} held {:016x} ({} msgs)",
                            fmt_member(me),
                            st.hash,
                            st.count,
                            fmt_member(*who),
                            other.hash,
                            other.count
                        );
                        self.fail("G11", detail);
                        return Vec::new();
                    }
                    Some(_) => {}
                    None => {
                        self.positions.insert((group, view, seq), (st, me));
                    }
                }
                if let Some(w) = self.watched.get_mut(&h) {
                    w.got.insert(me);
                }
                Vec::new()
            }
            Notification::ProvideState { group, joiner, token } => {
                if self.opts.verbose && self.msg_trace.is_some() {
                    let me = self.member_of(n).map(fmt_member).unwrap_or_default();
                    println!(
                        "t={now} n{n} {me} asked to provide {group} to {} token={token}",
                        fmt_member(joiner)
                    );
                }
                let state = self.slot(n).app.groups.get(&group).copied().unwrap_or_default();
                self.provide(n, now, group, joiner, token, state)
            }
            Notification::ApplyState { group, provider, state } => {
                match GroupState::decode(&state) {
                    Ok(st) => {
                        self.stats.states_applied += 1;
                        self.slot_mut(n).app.groups.insert(group, st);
                    }
                    Err(e) => {
                        let me = self.member_of(n).map(fmt_member).unwrap_or_default();
                        self.fail(
                            "G11",
                            format!(
                                "{me} applied a state of group {group} from {}: {e}",
                                fmt_member(provider)
                            ),
                        );
                    }
                }
                Vec::new()
            }
            Notification::SendReady => {
                self.slot_mut(n).app.waiting_ready = false;
                Vec::new()
            }
            Notification::View(_)
            | Notification::GroupView { .. }
            | Notification::Blocked(_)
            | Notification::Unblocked
            | Notification::Recovered { .. }
            | Notification::RemovedSelf { .. } => Vec::new(),
        }
    }

    fn provide(
        &mut self,
        n: u32,
        now: u64,
        group: String,
        joiner: Member,
        token: TransferToken,
        st: GroupState,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        if let Some(core) = self.slot_mut(n).core.as_mut() {
            core.provide_state(now, &group, joiner, token, st.encode(), &mut out);
        }
        out
    }

    // --------------------------------------------------------------------------------------------------
    // Network
    // --------------------------------------------------------------------------------------------------

    fn is_cut(&self, from: u32, to: u32) -> bool {
        if self.cut.contains(&(from, to)) {
            return true;
        }
        let key = (from.min(to), from.max(to));
        self.flaps.get(&key).is_some_and(|f| f.down)
    }

    fn net_send(&mut self, from: u32, to: u32, bytes: Vec<u8>) {
        self.stats.datagrams += 1;
        if bytes.len() > self.cfg.max_datagram_bytes {
            self.fail(
                "wire",
                format!(
                    "n{from} sent a datagram of {} bytes to n{to}, over max_datagram_bytes={}",
                    bytes.len(),
                    self.cfg.max_datagram_bytes
                ),
            );
            return;
        }
        if to == 0 || to as usize > self.slots.len() {
            self.fail("wire", format!("n{from} sent a datagram to unconfigured node {to}"));
            return;
        }
        if self.is_cut(from, to) {
            self.drop_dgram(from, to, bytes.len(), "partition");
            return;
        }
        let p = &self.opts.net;
        let (loss, dup, lo, hi) = (
            p.loss.clamp(0.0, 1.0),
            p.dup.clamp(0.0, 1.0),
            p.delay_min_ms,
            p.delay_max_ms.max(p.delay_min_ms),
        );
        if loss > 0.0 && self.rng.gen_bool(loss) {
            self.drop_dgram(from, to, bytes.len(), "loss");
            return;
        }
        if dup > 0.0 && self.rng.gen_bool(dup) {
            let d2 = self.rng.gen_range(lo..=hi);
            self.schedule(self.now + d2, Ev::Datagram { from, to, bytes: bytes.clone() });
        }
        let d = self.rng.gen_range(lo..=hi);
        self.schedule(self.now + d, Ev::Datagram { from, to, bytes });
    }

    /// Cuts every link between different sides; nodes listed nowhere form one more side together.
    pub fn partition(&mut self, sides: &[Vec<u32>]) {
        let n = self.node_count();
        let mut side_of: BTreeMap<u32, usize> = BTreeMap::new();
        for (i, s) in sides.iter().enumerate() {
            for &x in s {
                side_of.insert(x, i);
            }
        }
        let rest = sides.len();
        self.fault_happened();
        self.cut.clear();
        for a in 1..=n {
            for b in 1..=n {
                if a != b && side_of.get(&a).unwrap_or(&rest) != side_of.get(&b).unwrap_or(&rest) {
                    self.cut.insert((a, b));
                }
            }
        }
        let desc: Vec<String> =
            sides.iter().map(|s| s.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")).collect();
        self.note(format!("partition {{{}}}", desc.join("} | {")));
    }

    /// Cuts the link from `a` to `b` only.
    pub fn one_way(&mut self, a: u32, b: u32) {
        self.fault_happened();
        self.cut.insert((a, b));
        self.note(format!("one-way partition: n{a} -> n{b} dropped, n{b} -> n{a} fine"));
    }

    /// Removes every partition and flapping link (loss, duplication and delay stay as they are).
    pub fn heal(&mut self) {
        self.cut.clear();
        self.flaps.clear();
        self.healed_at = Some(self.now);
        self.note("heal: every link up".into());
    }

    /// Makes the link between `a` and `b` go down and up every `period_ms` for `for_ms`.
    pub fn flap(&mut self, a: u32, b: u32, period_ms: u64, for_ms: u64) {
        self.fault_happened();
        self.flap_gen += 1;
        let key = (a.min(b), a.max(b));
        let gen = self.flap_gen;
        self.flaps
            .insert(key, Flap { gen, period_ms: period_ms.max(1), until: self.now + for_ms, down: false });
        self.note(format!("link n{a}<->n{b} flaps every {period_ms}ms for {for_ms}ms"));
        self.on_flap(key.0, key.1, gen);
    }

    fn on_flap(&mut self, a: u32, b: u32, gen: u64) {
        let now = self.now;
        let Some(f) = self.flaps.get_mut(&(a, b)) else { return };
        if f.gen != gen {
            return;
        }
        if now >= f.until {
            self.flaps.remove(&(a, b));
            return;
        }
        f.down = !f.down;
        let next = now + f.period_ms;
        self.schedule(next, Ev::Flap { a, b, gen });
    }

    /// Sets the loss probability.
    pub fn set_loss(&mut self, p: f64) {
        // Lost heartbeats may rightly remove members as failed: a cold start under loss is not a clean
        // one (L6's cold-start clause).
        if p > 0.0 {
            self.fault_happened();
        }
        self.opts.net.loss = p;
        self.note(format!("loss = {p}"));
    }

    /// Sets the duplication probability.
    pub fn set_dup(&mut self, p: f64) {
        self.opts.net.dup = p;
        self.note(format!("duplication = {p}"));
    }

    /// Sets the delay range.
    pub fn set_delay(&mut self, lo: u64, hi: u64) {
        self.opts.net.delay_min_ms = lo;
        self.opts.net.delay_max_ms = hi.max(lo);
        self.note(format!("delay = {lo}..={hi}ms"));
    }

    // --------------------------------------------------------------------------------------------------
    // Processes
    // --------------------------------------------------------------------------------------------------

    /// Boots node `n` (if it is down) with epoch `disk.epoch + 1`.
    pub fn start(&mut self, n: u32) {
        if self.slot(n).core.is_none() {
            self.start_with(n, Epoch(0), "boot");
        }
    }

    /// Boots node `n` at the given time (if it is down then).
    pub fn start_at(&mut self, n: u32, at: u64) {
        self.schedule(at, Ev::Boot { node: n, min_epoch: Epoch(0), why: "boot", inquire: true });
    }

    /// Boots node `n` with an epoch of at least `min_epoch`: the epoch is persisted before the core exists
    /// (G12), the application starts empty and joins its groups.
    fn start_with(&mut self, n: u32, min_epoch: Epoch, why: &str) {
        // Like the agent, first ask the cluster which epochs of this node it has seen (G12: a wiped or
        // restored data directory must not bring back an epoch that was used).
        let now = self.now;
        let disk = self.slot(n).disk.clone();
        let nonce = now + 1;
        let mut q = EpochInquiry::new(Arc::clone(&self.cfg), NodeId(n), disk, nonce, now);
        // The operator who restored a backup says so, as docs/OPERATIONS.md asks. Like the agent's
        // marker file, the word stays until an incarnation runs: a start that interrupts this inquiry
        // (the liveness phase boots every node) says it again.
        if self.slot(n).restored {
            q = q.after_restore();
        }
        let slot = self.slot_mut(n);
        slot.inc += 1;
        slot.inquiry = Some((q, min_epoch, why.to_string()));
        let inc = slot.inc;
        self.schedule(now, Ev::Inquire { node: n, inc });
    }

    /// A running core asked for a new epoch (`NewEpoch`): like the agent, the host claims it at a
    /// majority of the cluster ([`EpochInquiry::claim_only`]) and boots the new core once it holds.
    fn start_claim(&mut self, n: u32, min_epoch: Epoch, why: &str) {
        let now = self.now;
        let disk = self.slot(n).disk.clone();
        let nonce = now + 1;
        let q = EpochInquiry::claim_only(Arc::clone(&self.cfg), NodeId(n), disk, min_epoch, nonce, now);
        let slot = self.slot_mut(n);
        slot.inc += 1;
        slot.inquiry = Some((q, min_epoch, why.to_string()));
        let inc = slot.inc;
        self.schedule(now, Ev::Inquire { node: n, inc });
    }

    fn on_inquire(&mut self, n: u32, inc: u64) {
        if self.slot(n).inc != inc || self.slot(n).core.is_some() {
            return;
        }
        let now = self.now;
        let mut out = Vec::new();
        let (decided, next) = match self.slot_mut(n).inquiry.as_mut() {
            Some((q, _, _)) => (q.tick(now, &mut out), q.next_wakeup_ms()),
            None => return,
        };
        self.carry_inquiry(n, out, decided);
        if decided.is_none() {
            self.schedule(next.max(now + 1), Ev::Inquire { node: n, inc });
        }
    }

    /// Sends what the inquiry of node `n` asked to send; boots the node once the inquiry decided.
    fn carry_inquiry(&mut self, n: u32, out: Vec<Output>, decided: Option<Epoch>) {
        for o in out {
            match o {
                Output::Send { to, bytes } => self.net_send(n, to.0, bytes),
                // A claim of another node it granted: on disk before the answer goes out.
                Output::Persist(d) => {
                    if d.epoch != self.slot(n).disk.epoch {
                        self.fail("G12", format!("node {n} changed its epoch on disk while it inquired"));
                        return;
                    }
                    self.slot_mut(n).disk = d;
                    self.snapshot_disk(n, false);
                }
                _ => {}
            }
        }
        if let Some(learned) = decided {
            if let Some((q, min_epoch, why)) = self.slot_mut(n).inquiry.take() {
                let answers: Vec<String> =
                    q.answers().iter().map(|(k, e)| format!("n{}:{}", k.0, e.0)).collect();
                self.note(format!(
                    "n{n}: epoch inquiry decided at least {} (disk {}; answers {})",
                    learned.0,
                    self.slot(n).disk.epoch.0,
                    if answers.is_empty() { "none".to_string() } else { answers.join(" ") }
                ));
                // A data directory that lost its own highest view sequence number takes the cluster's
                // (and a wide gap above it when it is behind: its lost views were seen by nobody).
                let seen = q.view_seq_floor();
                let disk = &mut self.slot_mut(n).disk;
                disk.max_view_seq = disk.max_view_seq.max(seen);
                // ...and counts for no quorum until it installed a primary view, like the agent.
                disk.catching_up |= q.forgot();
                let epoch = Epoch((disk.epoch.0 + 1).max(min_epoch.0).max(learned.0));
                self.slot_mut(n).restored = false;
                if epoch != learned {
                    self.fail(
                        "G12",
                        format!("node {n} would run epoch {} but claimed {}", epoch.0, learned.0),
                    );
                    return;
                }
                // A clean leave of an earlier incarnation whose record this data directory lost (wiped or
                // restored) and that no answer gave back is known only to the nodes that acknowledged the
                // `Leave`: a primary view formed without them cannot tell it from a failure (PROTOCOL
                // §11), so it no longer counts for L6.
                let lost: Vec<Member> = self
                    .clean_leavers
                    .iter()
                    .copied()
                    .filter(|m| m.node().0 == n && !self.slot(n).disk.has_left(*m))
                    .collect();
                for m in lost {
                    self.clean_leavers.remove(&m);
                    self.note(format!(
                        "n{n}: the data directory lost the clean leave of {} and no answer gave it back: \
                         not counted for L6 any more",
                        fmt_member(m)
                    ));
                }
                self.boot_with(n, learned, &why);
            }
        }
    }

    fn boot_with(&mut self, n: u32, min_epoch: Epoch, why: &str) {
        let now = self.now;
        let cfg = Arc::clone(&self.cfg);
        let epoch = Epoch((self.slot(n).disk.epoch.0 + 1).max(min_epoch.0));
        if self.slots.iter().all(|s| s.core.is_none()) {
            // A cold start. It is a clean one when the cluster was stopped cleanly from a settled state and
            // every node's last member left cleanly: then L6 forbids any fence request or `recovered`.
            // Every member of the newest primary view must have left cleanly: those are the members a
            // cold start's first primary view removes. (A member that self-fenced, say, and whose node's
            // next incarnation then stopped cleanly was not a clean leave: its recovery is due.)
            let newest_primary = self
                .log
                .iter()
                .filter_map(|r| match &r.event {
                    Event::View { view, members, primary: true, .. } => Some((*view, members)),
                    _ => None,
                })
                .max_by_key(|(v, _)| *v)
                .map(|(_, m)| m.clone())
                .unwrap_or_default();
            let all_clean = newest_primary.iter().all(|m| self.clean_leavers.contains(m))
                && self
                    .slots
                    .iter()
                    .all(|s| self.clean_leavers.contains(&Member(NodeId(s.id), s.disk.epoch)));
            self.cold_start_clean = self.stop_all_from_settled && all_clean;
            self.note(format!(
                "cold start: every node is down{}",
                if self.cold_start_clean {
                    "; the cluster stopped cleanly, so no fence request and no `recovered` may follow (L6)"
                } else {
                    ""
                }
            ));
        }
        let side = self.rng.gen_bool(self.opts.client.side_group_ratio.clamp(0.0, 1.0));
        let slot = self.slot_mut(n);
        slot.disk.epoch = epoch;
        slot.inc += 1;
        slot.paused = false;
        slot.held.clear();
        slot.held_bytes = 0;
        slot.held_datagrams = 0;
        slot.restarting = false;
        slot.stopping = None;
        slot.stopped_by_operator = false;
        slot.app = App::default();
        let durable = slot.disk.clone();
        let inc = slot.inc;
        self.stats.starts += 1;
        self.note(format!("start n{n} epoch {} ({why})", epoch.0));
        self.snapshot_disk(n, true);
        let mut out = Vec::new();
        let core = Node::new(cfg, NodeId(n), durable, now, &mut out);
        self.slot_mut(n).core = Some(core);
        self.carry_out(n, out);
        // The application joins its groups as soon as it starts; the joins are ordered once the core is
        // in a primary view.
        self.client_join(n, MAIN_GROUP);
        if side {
            self.client_join(n, SIDE_GROUP);
        }
        let (lo, hi) = self.opts.client.gap_ms;
        let gap = self.rng.gen_range(lo..=hi.max(lo));
        self.schedule(now + gap, Ev::Client { node: n, inc });
        self.after_step(n);
    }

    /// Kills node `n`'s process: the core and the application are gone, the disk stays. A service
    /// manager, if configured, starts it again.
    pub fn crash(&mut self, n: u32, why: &str) {
        self.exit(n, Exit::Crash, why);
    }

    /// Node `n`'s process ends for the reason `kind`: the core and the application are gone, the disk
    /// stays. The service manager (if any) schedules a new start unless the operator stopped the service
    /// or the exit was clean and it does not restart clean exits; a `NewEpoch` exit is restarted by
    /// [`Sim::carry_out`] itself.
    pub fn exit(&mut self, n: u32, kind: Exit, why: &str) {
        let now = self.now;
        let slot = self.slot_mut(n);
        if slot.core.is_none() && slot.inquiry.take().is_some() {
            // It dies before it picked an epoch: nothing of it ran.
            slot.inc += 1;
            self.note(format!("n{n} stops while it asks for its epoch ({why})"));
            return;
        }
        let Some(core) = slot.core.take() else { return };
        let m = core.member();
        slot.inc += 1;
        slot.exit_gen += 1;
        let gen = slot.exit_gen;
        slot.paused = false;
        slot.held.clear();
        slot.held_bytes = 0;
        slot.held_datagrams = 0;
        slot.timer_at = 0;
        slot.app = App::default();
        let stopping = slot.stopping.take();
        let restart = match kind {
            Exit::Crash => true,
            Exit::NewEpoch | Exit::Stopped => false,
            Exit::Clean => stopping.unwrap_or(self.opts.service.as_ref().is_some_and(|s| s.after_clean_exit)),
        };
        if kind == Exit::Stopped || (kind == Exit::Clean && stopping == Some(false)) {
            self.slot_mut(n).stopped_by_operator = true;
        }
        self.stats.crashes += 1;
        self.checker.member_stopped(m, now);
        if kind == Exit::Crash {
            self.crashed_at.insert(m, now);
            self.fault_happened();
        }
        self.note(format!("crash n{n} ({} stops: {why})", fmt_member(m)));
        // `systemctl restart` restarts even without `Restart=always`.
        let delay = match (&self.opts.service, stopping) {
            (Some(svc), _) if restart => Some(svc.delay_ms),
            (None, Some(true)) => Some((self.opts.restart_delay_ms, self.opts.restart_delay_ms)),
            _ => None,
        };
        if let Some((lo, hi)) = delay {
            let d = self.rng.gen_range(lo..=hi.max(lo));
            self.schedule(now + d, Ev::ServiceStart { node: n, gen });
        } else if self.liveness && kind != Exit::NewEpoch {
            // A clean stop that began in the safety phase and ended after it: the liveness phase boots
            // every node, this one too. (A `NewEpoch` exit is restarted by `carry_out` already: a second
            // start would race it, with a data directory the service manager may have replaced.)
            self.slot_mut(n).stopped_by_operator = false;
            self.note(format!("n{n} stopped after the faults ended: booted again for the liveness phase"));
            self.schedule(now + self.opts.restart_delay_ms, Ev::ServiceStart { node: n, gen });
        }
    }

    /// The service manager starts node `n` again, with its data directory kept, wiped or restored from
    /// an older backup as the options draw.
    fn on_service_start(&mut self, n: u32, gen: u64) {
        let slot = self.slot(n);
        if slot.exit_gen != gen || slot.core.is_some() || slot.stopped_by_operator {
            return;
        }
        let Some(svc) = self.opts.service.clone() else {
            self.start_with(n, Epoch(0), "restarted (systemctl restart)");
            return;
        };
        let r: f64 = self.rng.gen();
        // Another node's lost directory has not caught up yet: this one is kept (one loss at a time).
        let another_lost = self.lost_disks.iter().any(|x| *x != n);
        let disk = if another_lost {
            DiskOnRestart::Keep
        } else if r < svc.wipe_ratio {
            DiskOnRestart::Wipe
        } else if r < svc.wipe_ratio + svc.backup_ratio {
            DiskOnRestart::Backup
        } else {
            DiskOnRestart::Keep
        };
        match disk {
            DiskOnRestart::Keep => {}
            DiskOnRestart::Wipe => self.wipe_disk(n),
            DiskOnRestart::Backup => {
                let cur = self.slot(n).disk.epoch;
                let older: Vec<Epoch> =
                    self.slot(n).backups.iter().map(|(_, d)| d.epoch).filter(|e| *e < cur).collect();
                if !older.is_empty() {
                    let e = older[self.rng.gen_range(0..older.len())];
                    self.restore_backup(n, e);
                }
            }
        }
        self.start_with(n, Epoch(0), "started again by the service manager");
    }

    /// Keeps a snapshot of node `n`'s disk for later restores: always at a start, and at most every
    /// 500 ms of persists otherwise.
    fn snapshot_disk(&mut self, n: u32, always: bool) {
        let now = self.now;
        let slot = self.slot_mut(n);
        if !always && slot.backups.back().is_some_and(|(t, _)| now < t + 500) {
            return;
        }
        if slot.backups.len() >= BACKUPS_MAX {
            slot.backups.pop_front();
        }
        let d = slot.disk.clone();
        slot.backups.push_back((now, d));
    }

    /// The operator wipes node `n`'s data directory (the node must be down): its next start is epoch 1.
    pub fn wipe_disk(&mut self, n: u32) {
        let was = self.slot(n).disk.epoch;
        self.slot_mut(n).disk = Durable::fresh(Epoch(0));
        self.lost_disks.insert(n);
        self.note(format!("n{n}: data directory wiped (it held epoch {})", was.0));
    }

    /// The operator restores the newest backup of node `n`'s data directory that holds `epoch`. Returns
    /// false when there is none.
    pub fn restore_backup(&mut self, n: u32, epoch: Epoch) -> bool {
        let was = self.slot(n).disk.epoch;
        let Some((t, d)) = self.slot(n).backups.iter().rev().find(|(_, d)| d.epoch == epoch).cloned() else {
            return false;
        };
        self.slot_mut(n).disk = d;
        self.slot_mut(n).restored = true;
        self.lost_disks.insert(n);
        self.note(format!(
            "n{n}: data directory restored from the backup of t={t} (epoch {}; it held epoch {})",
            epoch.0, was.0
        ));
        true
    }

    /// Epochs node `n` has started, in the order it started them.
    pub fn epochs_started(&self, n: u32) -> Vec<Epoch> {
        self.log
            .iter()
            .filter(|r| r.node.0 == n && matches!(r.event, Event::Start { .. }))
            .map(|r| r.epoch)
            .collect()
    }

    /// A fault (crash, pause, partition) happened: a clean cold start is over.
    fn fault_happened(&mut self) {
        self.cold_start_clean = false;
        self.stop_all_from_settled = false;
    }

    /// A clean leave that no primary view recorded lives only on the disks of the nodes that know of it
    /// (`leave_witnesses`). When a record names such a leaver as failed while none of those nodes runs,
    /// the ones that do could not have learnt of the leave: the leaver stops counting for L6, as an
    /// unheard leave does. (A leave recorded by a primary view is in the replicated registry and always
    /// counts.)
    fn excuse_leaves_known_only_to_down_nodes(&mut self, named: &[Member]) {
        for m in named {
            let Some(witnesses) = self.leave_witnesses.get(m) else { continue };
            if !self.clean_leavers.contains(m) || witnesses.iter().any(|j| self.slot(*j).core.is_some()) {
                continue;
            }
            let who = witnesses.iter().map(|j| format!("n{j}")).collect::<Vec<_>>().join(", ");
            self.note(format!(
                "{} is named as failed while its leave, which no primary view recorded, is known only to \
                 the disks of nodes that are down ({who}): it no longer counts for L6",
                fmt_member(*m)
            ));
            self.clean_leavers.remove(m);
            self.leave_witnesses.remove(m);
        }
    }

    /// L6, checked on every record: a member that left cleanly is never listed as failed in a primary
    /// view, never the target of a fence request and never `recovered`; and a cluster that stopped
    /// cleanly cold-starts with no fence request and no `recovered` at all. (A non-primary view's
    /// `failed` list is only what a cut-off member could not hear; it removes nobody.)
    fn l6_violation(&self, r: &Record) -> Option<String> {
        let who = format!("n{}e{}", r.node.0, r.epoch.0);
        match &r.event {
            Event::View { view, failed, primary: true, .. } => {
                failed.iter().find(|m| self.clean_leavers.contains(m)).map(|m| {
                    format!(
                        "{who} installed view {view} listing {} as failed, but it left cleanly",
                        fmt_member(*m)
                    )
                })
            }
            Event::FenceRequest { target, reason } => {
                if self.clean_leavers.contains(target) {
                    Some(format!(
                        "{who} requested a fence of {} ({reason}), which left cleanly",
                        fmt_member(*target)
                    ))
                } else if self.cold_start_clean {
                    Some(format!(
                        "{who} requested a fence of {} ({reason}) in a cold start after the whole cluster stopped cleanly",
                        fmt_member(*target)
                    ))
                } else {
                    None
                }
            }
            Event::Recovered { view, failed } => {
                if let Some(m) = failed.iter().find(|m| self.clean_leavers.contains(m)) {
                    Some(format!(
                        "{who} announced {} recovered in {view}, but it left cleanly",
                        fmt_member(*m)
                    ))
                } else if self.cold_start_clean {
                    Some(format!(
                        "{who} announced {} recovered in {view} in a cold start after the whole cluster stopped cleanly",
                        fmt_members(failed)
                    ))
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    /// Members the harness counts as clean leavers (L6).
    pub fn clean_leavers(&self) -> &BTreeSet<Member> {
        &self.clean_leavers
    }

    /// `deliver` records as (time, member, view), when `opts.keep_deliveries`.
    pub fn deliveries(&self) -> &[(u64, Member, ViewId)] {
        &self.deliveries
    }

    /// Restarts node `n`: a process restart if it runs (crash, then boot with a new epoch), a boot if not.
    pub fn restart(&mut self, n: u32, why: &str) {
        if self.slot(n).core.is_some() {
            self.crash(n, why);
        }
        self.start_with(n, Epoch(0), why);
    }

    /// Pauses node `n` for `ms` (SIGSTOP): it is not stepped, datagrams to it wait, its timers fire late.
    pub fn pause(&mut self, n: u32, ms: u64, why: &str) {
        let now = self.now;
        let slot = self.slot_mut(n);
        if slot.core.is_none() {
            return;
        }
        slot.paused = true;
        slot.pause_gen += 1;
        let gen = slot.pause_gen;
        self.fault_happened();
        self.stats.pauses += 1;
        self.note(format!("pause n{n} for {ms}ms ({why})"));
        self.schedule(now + ms, Ev::Resume { node: n, gen });
    }

    /// Resumes a paused node with its old state: its late timers fire first, then the datagrams that
    /// waited for it arrive in order.
    pub fn resume(&mut self, n: u32) {
        let slot = self.slot_mut(n);
        if !slot.paused {
            return;
        }
        slot.paused = false;
        slot.timer_at = 0;
        slot.held_bytes = 0;
        slot.held_datagrams = 0;
        let held: Vec<Held> = slot.held.drain(..).collect();
        // A real agent's runtime may read its socket before its late timer fires: the seed decides how
        // many of the first waiting datagrams come before the tick.
        let leading = held.iter().take_while(|h| matches!(h, Held::Datagram(_))).count();
        let before =
            if leading == 0 || self.rng.gen_bool(0.5) { 0 } else { self.rng.gen_range(1..=leading.min(16)) };
        self.note(format!(
            "resume n{n} ({} inputs waited; {before} datagrams read before the late timer)",
            held.len()
        ));
        let mut ticked = false;
        for (i, h) in held.into_iter().enumerate() {
            if !ticked && i == before {
                ticked = true;
                self.step(n, |core, now, out| core.tick(now, out));
            }
            if self.failure.is_some() || self.slot(n).core.is_none() || self.slot(n).paused {
                break;
            }
            match h {
                Held::Datagram(bytes) => self.step(n, |core, now, out| core.receive(now, &bytes, out)),
                Held::FenceReport { target, ok, detail } => {
                    self.step(n, |core, now, out| core.fence_result(now, target, ok, &detail, out))
                }
            }
        }
        if !ticked && self.failure.is_none() && self.slot(n).core.is_some() && !self.slot(n).paused {
            self.step(n, |core, now, out| core.tick(now, out));
        }
    }

    /// The operator acknowledges on node `on` that node `target` is fenced.
    pub fn fence_ack(&mut self, on: u32, target: u32) {
        self.note(format!("operator on n{on}: cohort fence ack {target}"));
        self.step(on, |core, now, out| core.fence_ack(now, NodeId(target), out));
    }

    /// Node `n` leaves the cluster cleanly (SIGTERM without a service manager's intent): the core's
    /// `leave`, the process exits when the core reports `has_left`, and like the real agent
    /// (`actors/src/supervisor.rs`, `leave_deadline`) it gives up after one failure timeout, writes a
    /// `stop` record and exits anyway.
    ///
    /// L6 then applies to the member when its leave could reach everyone who could remove it: the nodes
    /// of its last primary view (and of any newer install holding it that some node accepted, and any
    /// node whose current view holds it) that are up, none of them cut off from it at that moment, and no primary
    /// view removed it as failed already (or decided to: an install that records it as failed accepted
    /// somewhere). A member cut off from some of them when it is asked to stop may
    /// already be removed as failed by a view they are forming, and that removal is then correct; one
    /// that is cut off later, while it waits, still counts (its `Leave` went out before the cut, and a
    /// lost one must be retransmitted).
    pub fn leave(&mut self, n: u32) {
        let Some(core) = self.slot(n).core.as_ref() else { return };
        let me = core.member();
        // The nodes that could record its removal: those of its last primary view (they, or their next
        // incarnations, form the next primary view), else those of its current view. It must reach every
        // one of them that is up (running or paused, which holds the datagram in its buffer): one it is
        // cut off from may already be forming a view that removes it as failed, before any `Leave`
        // could reach it. One that is down must have left cleanly before it: then nobody needs telling
        // (the leave is on its own disk, and its next incarnation reports it), but one that crashed or
        // was fenced comes back as a new incarnation that knows nothing of this leave and may form the
        // next primary view without it (it has to fence a member whose fate it cannot know).
        let last_primary = self.log.iter().rev().find_map(|r| match &r.event {
            Event::View { view, members, primary: true, .. } if r.member() == me => {
                Some((*view, members.clone()))
            }
            _ => None,
        });
        let last_primary_id = last_primary.as_ref().map(|(v, _)| *v);
        let last_primary = last_primary.map(|(_, m)| m);
        // An install newer than that which holds this member and that some node accepted (in memory or
        // on its disk) may be taken as made by the next primary view's coordinator, which then removes
        // its absent members as failed: its members judge this member too.
        let mut accepted_with_me: Vec<u32> = Vec::new();
        for slot in &self.slots {
            let on_disk = slot.disk.accepted.as_ref();
            let in_core = slot.core.as_ref().and_then(|c| c.durable().accepted.as_ref());
            for acc in on_disk.into_iter().chain(in_core) {
                if acc.members.contains(&me) && Some(acc.view) > last_primary_id {
                    accepted_with_me.extend(acc.members.iter().map(|m| m.node().0));
                }
            }
        }
        let mut judges: Vec<u32> = last_primary
            .or_else(|| core.view().map(|v| v.members.clone()))
            .unwrap_or_default()
            .iter()
            .map(|m| m.node().0)
            .filter(|j| *j != n)
            .collect();
        // So is every node whose current view still holds it, whether or not this member still holds
        // that node: the primary view that node installs next lists it as gone, and as failed unless a
        // `Leave` reached it (a member never in a primary view has no last primary side to judge it, but
        // the non-primary view it was cut off from does).
        for (i, slot) in self.slots.iter().enumerate() {
            let j = i as u32 + 1;
            let holds = slot.core.as_ref().is_some_and(|c| c.view().is_some_and(|v| v.contains(me)));
            if j != n && (holds || accepted_with_me.contains(&j)) && !judges.contains(&j) {
                judges.push(j);
            }
        }
        let in_a_view = core.view().is_some();
        let reaches = judges.iter().all(|j| match self.member_of(*j) {
            Some(_) => !self.is_cut(n, *j),
            None => self.clean_leavers.contains(&Member(NodeId(*j), self.slot(*j).disk.epoch)),
        });
        // A member some primary view already removed as failed (it was cut off, or its heartbeats were
        // lost, before it was asked to stop) cannot turn that removal into a leave; nor one whose removal
        // as failed is already decided (an install some member accepted records it), which a coordinator
        // commits or completes whatever the leave says.
        let removed = self.log.iter().any(|r| match &r.event {
            Event::View { primary: true, failed, .. } => failed.contains(&me),
            Event::FenceRequest { target, .. } | Event::StatefulMerge { member: target, .. } => *target == me,
            _ => false,
        }) || self.slots.iter().filter_map(|s| s.core.as_ref()).any(|c| {
            // Decided in an install under way, or in the registry of a primary view installed already
            // (a member of an install that may have been made, removed as failed by the next primary
            // view although it never installed one itself).
            c.decided_registries().into_iter().chain([&c.durable().registry]).any(|reg| {
                reg.removal(me).is_some_and(|rm| rm.reason == cohort::registry::RemovalReason::Failed)
            })
        })
            // ...or whose failure a judge had detected already: the judge installed a view without it
            // (it was silent for the failure timeout, paused or cut off), and the primary view that
            // judge forms next may be decided before any `Leave` arrives.
            || judges.iter().any(|j| {
                self.slot(*j).core.as_ref().is_some_and(|c| {
                    c.view().is_some_and(|v| !v.contains(me))
                        && c.view().map(|v| v.id) > core.view().map(|v| v.id)
                })
            });
        // Every node that could record the leave is down (they left cleanly before it): the leave is on
        // this node's disk only, and a view the others form before this node starts again cannot know it.
        let heard_by_nobody = !judges.iter().any(|j| self.member_of(*j).is_some());
        if in_a_view && reaches && !removed {
            self.clean_leavers.insert(me);
            self.leave_witnesses.insert(me, BTreeSet::from([n]));
            if heard_by_nobody {
                self.unheard_leaves.insert(me);
                self.note(format!(
                    "n{n} leaves cleanly ({} counts as a clean leave for L6 once node {n}'s next \
                     incarnation is in a primary view: nobody who could record it is up)",
                    fmt_member(me)
                ));
            } else {
                self.note(format!("n{n} leaves cleanly ({} counts as a clean leave for L6)", fmt_member(me)));
            }
        } else {
            self.note(format!(
                "n{n} leaves cleanly, but {} may be removed as failed already (cut off from its primary \
                 side, or removed before): not counted for L6",
                fmt_member(me)
            ));
        }
        let inc = self.slot(n).inc;
        let deadline = self.now + self.cfg.failure_timeout_ms.max(1);
        self.schedule(deadline, Ev::LeaveDeadline { node: n, inc });
        self.step(n, |core, now, out| core.leave(now, out));
    }

    /// The host sends SIGTERM to node `n`'s agent: a clean leave ([`Sim::leave`]), then the process
    /// exits. `restart`: `systemctl restart` (the service manager starts it again); else `systemctl stop`
    /// (it stays down until started). A paused process handles the signal once it resumes.
    pub fn stop(&mut self, n: u32, restart: bool) {
        let slot = self.slot(n);
        if slot.core.is_none() || slot.stopping.is_some() {
            return;
        }
        if slot.paused {
            self.schedule(self.now + 10, Ev::Stop { node: n, restart, random: false });
            return;
        }
        self.slot_mut(n).stopping = Some(restart);
        self.note(format!("host: systemctl {} on n{n} (SIGTERM)", if restart { "restart" } else { "stop" }));
        self.leave(n);
    }

    /// The whole cluster stops cleanly: every node gets `systemctl stop`, in this order, each after a gap
    /// drawn from `gap_ms` (0 and 0: all at once). Whether the cluster was settled when the stop began
    /// decides whether the cold start that follows must be free of fencing (L6).
    pub fn stop_all(&mut self, order: &[u32], gap_ms: (u64, u64)) {
        self.stop_all_from_settled = self.settled().is_ok();
        self.note(format!(
            "operator stops the whole cluster in the order {order:?} (gaps {}..={} ms; cluster settled: {})",
            gap_ms.0, gap_ms.1, self.stop_all_from_settled
        ));
        let mut t = self.now;
        for &n in order {
            self.schedule(t, Ev::Stop { node: n, restart: false, random: false });
            t += self.rng.gen_range(gap_ms.0..=gap_ms.1.max(gap_ms.0));
        }
    }

    fn on_leave_deadline(&mut self, n: u32, inc: u64) {
        let slot = self.slot(n);
        if slot.inc != inc || slot.core.is_none() {
            return;
        }
        if slot.paused {
            // A stopped process does not run its shutdown timer.
            self.schedule(self.now + 10, Ev::LeaveDeadline { node: n, inc });
            return;
        }
        let Some(me) = self.member_of(n) else { return };
        // Not acknowledged by every node that could remove it: the `Leave`s may all be lost (a paused
        // judge that dies before it reads its buffer, a cut that came after the first one), and then
        // only this node's disk knows. It counts as an unheard leave (see `unheard_leaves`).
        if self.clean_leavers.contains(&me) && self.unheard_leaves.insert(me) {
            self.note(format!(
                "{}'s leave was not acknowledged in time: it counts for L6 once node {n}'s next \
                 incarnation is in a primary view",
                fmt_member(me)
            ));
        }
        let r = Record {
            ts_ms: self.now,
            node: NodeId(n),
            epoch: me.epoch(),
            event: Event::Stop { reason: "terminate: leave not acknowledged within the deadline".into() },
        };
        self.on_record(n, r);
        self.exit(n, Exit::Clean, "leave deadline passed; the agent exits anyway");
    }

    // --------------------------------------------------------------------------------------------------
    // Fence agent
    // --------------------------------------------------------------------------------------------------

    fn requester_alive(&self, requester: u32, inc: u64) -> bool {
        let s = self.slot(requester);
        s.inc == inc && s.core.is_some()
    }

    fn on_fence_run(&mut self, requester: u32, inc: u64, target: Member, behaviour: FenceBehaviour) {
        if !self.requester_alive(requester, inc) {
            // The agent ran on the requester's host, which died: nothing happens, nobody is told.
            self.note(format!("fence of {} by n{requester} lost: the requester is gone", fmt_member(target)));
            return;
        }
        let behaviour = match behaviour {
            FenceBehaviour::Flaky(p) => {
                if self.rng.gen_bool(p.clamp(0.0, 1.0)) {
                    FenceBehaviour::Fail
                } else {
                    FenceBehaviour::Kill
                }
            }
            b => b,
        };
        let t = target.node().0;
        let running = self.member_of(t);
        let report = |sim: &mut Sim, ok: bool, detail: String| {
            let d = sim.rng.gen_range(1..=5);
            sim.schedule(sim.now + d, Ev::FenceReport { requester, inc, target, ok, detail });
        };
        match behaviour {
            FenceBehaviour::Kill | FenceBehaviour::Flaky(_) => {
                match running {
                    Some(m) if m == target => {
                        self.crash(t, &format!("fenced by n{requester}: power-cycled"));
                        // With a service manager the host's boot starts the agent (see `exit`).
                        if let (Some(d), None) = (self.opts.reboot_after_kill_ms, &self.opts.service) {
                            self.schedule(
                                self.now + d,
                                Ev::Boot {
                                    node: t,
                                    min_epoch: Epoch(0),
                                    why: "reboot after fencing",
                                    inquire: true,
                                },
                            );
                        }
                        report(self, true, "power-cycled".into());
                    }
                    Some(m) if m.epoch() > target.epoch() => {
                        // The agent checks the boot id: the target incarnation is already gone.
                        self.note(format!(
                            "fence of {} by n{requester}: node runs {} already",
                            fmt_member(target),
                            fmt_member(m)
                        ));
                        report(self, true, format!("already restarted as epoch {}", m.epoch().0));
                    }
                    _ => {
                        self.note(format!("fence of {} by n{requester}: node is off", fmt_member(target)));
                        report(self, true, "node is powered off".into());
                    }
                }
            }
            FenceBehaviour::Pause(ms) => {
                if running == Some(target) {
                    self.pause(
                        t,
                        ms,
                        &format!("fenced by n{requester} with a pause: it will come back as a zombie"),
                    );
                    let until = self.now + ms;
                    let slot = self.slot_mut(t);
                    slot.fence_pause_until = slot.fence_pause_until.max(until);
                    report(self, true, format!("paused for {ms}ms"));
                } else {
                    report(self, true, "target not running".into());
                }
            }
            FenceBehaviour::Fail => {
                self.note(format!("fence of {} by n{requester} fails", fmt_member(target)));
                report(self, false, "fence device error".into());
            }
            FenceBehaviour::Hang => {
                self.note(format!("fence of {} by n{requester} hangs forever", fmt_member(target)));
            }
            FenceBehaviour::Noop => {
                self.note(format!(
                    "fence of {} by n{requester} reports success but does nothing",
                    fmt_member(target)
                ));
                report(self, true, "reported fenced (the target was not touched)".into());
            }
        }
    }

    fn on_fence_report(&mut self, requester: u32, inc: u64, target: Member, ok: bool, detail: String) {
        if !self.requester_alive(requester, inc) {
            self.note(format!(
                "fence report for {} dropped: requester n{requester} is gone",
                fmt_member(target)
            ));
            return;
        }
        if self.slot(requester).paused {
            self.slot_mut(requester).held.push_back(Held::FenceReport { target, ok, detail });
            return;
        }
        self.step(requester, |core, now, out| core.fence_result(now, target, ok, &detail, out));
    }

    // --------------------------------------------------------------------------------------------------
    // Application clients
    // --------------------------------------------------------------------------------------------------

    fn client_join(&mut self, n: u32, group: &str) {
        if self.slot(n).core.is_none() {
            return;
        }
        self.slot_mut(n).app.joined.insert(group.to_string());
        self.step(n, |core, now, out| core.join_group(now, group, out));
    }

    fn client_leave(&mut self, n: u32, group: &str) {
        if self.slot(n).core.is_none() {
            return;
        }
        // Leaving discards the local replica: a later join starts from the state it is given.
        let app = &mut self.slot_mut(n).app;
        app.joined.remove(group);
        app.groups.remove(group);
        self.step(n, |core, now, out| core.leave_group(now, group, out));
    }

    /// Joins `group` at node `n`'s client.
    pub fn join_group(&mut self, n: u32, group: &str) {
        self.note(format!("n{n} client joins group {group}"));
        self.client_join(n, group);
    }

    /// Leaves `group` at node `n`'s client.
    pub fn leave_group(&mut self, n: u32, group: &str) {
        self.note(format!("n{n} client leaves group {group}"));
        self.client_leave(n, group);
    }

    fn on_client(&mut self, n: u32, inc: u64) {
        let slot = self.slot(n);
        if slot.inc != inc || slot.core.is_none() {
            return; // that incarnation is gone; the new one has its own client
        }
        let (lo, hi) = self.opts.client.gap_ms;
        let gap = self.rng.gen_range(lo..=hi.max(lo));
        self.schedule(self.now + gap, Ev::Client { node: n, inc });
        let slot = self.slot(n);
        if !self.opts.client.enabled || slot.paused || slot.app.stopped || slot.app.waiting_ready {
            return;
        }
        if self.rng.gen_bool(self.opts.client.churn_ratio.clamp(0.0, 1.0)) {
            if self.slot(n).app.joined.contains(SIDE_GROUP) {
                self.leave_group(n, SIDE_GROUP);
            } else {
                self.join_group(n, SIDE_GROUP);
            }
            return;
        }
        let groups: Vec<String> = self.slot(n).app.joined.iter().cloned().collect();
        if groups.is_empty() {
            return;
        }
        let group = groups[self.rng.gen_range(0..groups.len())].clone();
        let delivery = if self.rng.gen_bool(self.opts.client.safe_ratio.clamp(0.0, 1.0)) {
            Delivery::Safe
        } else {
            Delivery::Agreed
        };
        let len = if self.rng.gen_bool(self.opts.client.large_ratio.clamp(0.0, 1.0)) {
            self.rng.gen_range(8 * 1024..=self.opts.client.large_max.max(8 * 1024))
        } else {
            self.rng.gen_range(1..=200)
        };
        let mut payload = vec![0u8; len];
        self.rng.fill_bytes(&mut payload);
        self.multicast(n, &group, payload, delivery);
    }

    /// Node `n`'s client multicasts `payload`; returns the message id when the core accepted it.
    pub fn multicast(&mut self, n: u32, group: &str, payload: Vec<u8>, delivery: Delivery) -> Option<MsgId> {
        let now = self.now;
        let me = self.member_of(n)?;
        self.app_sent.entry(me).or_default().insert(cohort::types::digest(&payload));
        let len = payload.len();
        let mut out = Vec::new();
        let res = {
            let core = self.slot_mut(n).core.as_mut()?;
            core.multicast(now, group, payload, delivery, &mut out)
        };
        // The id is registered before the outputs are carried out: a loopback delivery may be among them.
        let id = match res {
            Ok(id) => {
                self.stats.app_sends += 1;
                Some(id)
            }
            Err(SendError::QueueFull) => {
                self.stats.queue_full += 1;
                self.slot_mut(n).app.waiting_ready = true;
                None
            }
            Err(SendError::Stopped) => None,
            Err(SendError::TooLarge) => {
                self.fail(
                    "api",
                    format!(
                        "n{n}: multicast of {len} bytes refused as too large (max_message_bytes={})",
                        self.cfg.max_message_bytes
                    ),
                );
                None
            }
        };
        self.carry_out(n, out);
        self.after_step(n);
        id
    }

    /// Sends `count` messages from node `n`'s client to the main group right now.
    pub fn send_burst(&mut self, n: u32, count: usize, delivery: Delivery) -> usize {
        let mut ok = 0;
        for i in 0..count {
            let len = if i % 7 == 6 { 20_000 } else { 64 };
            let mut payload = vec![0u8; len];
            self.rng.fill_bytes(&mut payload);
            if self.multicast(n, MAIN_GROUP, payload, delivery).is_some() {
                ok += 1;
            }
        }
        self.note(format!("n{n} client sent {ok} of {count} {} messages", delivery_name(delivery)));
        ok
    }

    /// Switches random client traffic on or off.
    pub fn set_clients(&mut self, on: bool) {
        self.opts.client.enabled = on;
        self.note(format!("client traffic {}", if on { "on" } else { "off" }));
    }

    // --------------------------------------------------------------------------------------------------
    // Random faults (safety phase)
    // --------------------------------------------------------------------------------------------------

    /// Turns on random fault injection of the given kinds, one fault every `gap_ms` (a range).
    pub fn start_faults(&mut self, kinds: FaultKinds, gap_ms: (u64, u64)) {
        self.faults_on = true;
        self.fault_kinds = kinds;
        self.fault_gap_ms = gap_ms;
        let (lo, hi) = gap_ms;
        let first = self.rng.gen_range(lo..=hi.max(lo));
        self.fault_gen += 1;
        let gen = self.fault_gen;
        self.schedule(self.now + first, Ev::RandomFault { gen });
        self.note(format!("random faults on: {kinds}"));
    }

    fn random_fault(&mut self) {
        let k = self.fault_kinds;
        let mut menu: Vec<&'static str> = Vec::new();
        if k.net {
            menu.extend(["loss", "dup", "delay"]);
        }
        if k.partition {
            menu.extend(["partition", "partition", "heal"]);
        }
        if k.oneway {
            menu.push("oneway");
        }
        if k.flap {
            menu.push("flap");
        }
        if k.crash {
            menu.extend(["crash", "restart"]);
        }
        if k.pause {
            menu.extend(["pause", "pause"]);
        }
        if self.random_stops {
            menu.push("stop");
        }
        if menu.is_empty() {
            return;
        }
        self.stats.faults += 1;
        let n = self.node_count();
        let what = menu[self.rng.gen_range(0..menu.len())];
        match what {
            "loss" => {
                let p = [0.0, 0.01, 0.05, 0.15, 0.3][self.rng.gen_range(0..5)];
                self.set_loss(p);
            }
            "dup" => {
                let p = [0.0, 0.02, 0.1][self.rng.gen_range(0..3)];
                self.set_dup(p);
            }
            "delay" => {
                let hi = [5, 10, 30, 80][self.rng.gen_range(0..4)];
                self.set_delay(1, hi);
            }
            "partition" => {
                let sides = if n >= 5 && self.rng.gen_bool(0.3) { 3 } else { 2 };
                let mut groups: Vec<Vec<u32>> = vec![Vec::new(); sides];
                for x in 1..=n {
                    let i = self.rng.gen_range(0..sides);
                    groups[i].push(x);
                }
                groups.retain(|g| !g.is_empty());
                self.partition(&groups);
            }
            "heal" => self.heal(),
            "oneway" => {
                let a = self.rng.gen_range(1..=n);
                let b = self.rng.gen_range(1..=n);
                if a != b {
                    self.one_way(a, b);
                }
            }
            "flap" => {
                let a = self.rng.gen_range(1..=n);
                let b = self.rng.gen_range(1..=n);
                if a != b {
                    let period = self.rng.gen_range(30..=200);
                    let dur = self.rng.gen_range(300..=1500);
                    self.flap(a, b, period, dur);
                }
            }
            "crash" => {
                let up: Vec<u32> = (1..=n).filter(|&x| self.is_up(x)).collect();
                if up.len() > 1 {
                    let x = up[self.rng.gen_range(0..up.len())];
                    self.crash(x, "random fault");
                    // With a service manager the crash is restarted by it (see `exit`).
                    if self.opts.service.is_none() && self.rng.gen_bool(0.7) {
                        let after = self.rng.gen_range(100..=1500);
                        self.schedule(
                            self.now + after,
                            Ev::Boot {
                                node: x,
                                min_epoch: Epoch(0),
                                why: "restart after crash",
                                inquire: true,
                            },
                        );
                    }
                }
            }
            "restart" => {
                let down: Vec<u32> =
                    (1..=n).filter(|&x| !self.is_up(x) && !self.slot(x).restarting).collect();
                if !down.is_empty() {
                    let x = down[self.rng.gen_range(0..down.len())];
                    self.start_with(x, Epoch(0), "restart after crash");
                }
            }
            "stop" => {
                // A clean stop of one to half of the running nodes, each a little after the previous:
                // `systemctl restart` when a service manager runs the agents (half of the time), else
                // `systemctl stop` (the node stays down until a random restart or the liveness phase).
                let up: Vec<u32> =
                    (1..=n).filter(|&x| self.is_up(x) && self.slot(x).stopping.is_none()).collect();
                if !up.is_empty() {
                    let k = self.rng.gen_range(1..=(up.len() / 2).max(1));
                    let mut t = self.now;
                    for _ in 0..k {
                        let x = up[self.rng.gen_range(0..up.len())];
                        let restart = self.opts.service.is_some() && self.rng.gen_bool(0.5);
                        self.schedule(t, Ev::Stop { node: x, restart, random: true });
                        t += self.rng.gen_range(0..=100);
                    }
                }
            }
            "pause" => {
                let up: Vec<u32> = (1..=n).filter(|&x| self.is_up(x) && !self.is_paused(x)).collect();
                if !up.is_empty() {
                    let x = up[self.rng.gen_range(0..up.len())];
                    // Short pauses stay under the failure timeout; long ones make the node a zombie.
                    let ms = if self.rng.gen_bool(0.4) {
                        self.rng.gen_range(30..=self.cfg.failure_timeout_ms / 2)
                    } else {
                        self.rng.gen_range(self.cfg.failure_timeout_ms..=self.cfg.failure_timeout_ms * 6)
                    };
                    self.pause(x, ms, "random fault");
                }
            }
            _ => {}
        }
    }

    /// Ends the safety phase: no more random faults, every link healed, a calm network, every paused
    /// node resumed and every crashed node booted.
    pub fn end_faults(&mut self) {
        self.faults_on = false;
        self.liveness = true;
        self.note("faults off: liveness phase".into());
        // A fence device that fails at random is a fault too: from here on it works (a run of
        // failures would otherwise keep a pending fence, rightly blocking recovery, past L2's bound).
        for b in [&mut self.opts.fence, &mut self.opts.merge_fence] {
            if matches!(b, FenceBehaviour::Flaky(_)) {
                *b = FenceBehaviour::Kill;
            }
        }
        self.opts.net = NetParams::calm();
        self.heal();
        for n in 1..=self.node_count() {
            // A pause a fence agent reported as a fence runs to its end (its `Resume` is scheduled).
            if self.slot(n).paused && self.slot(n).fence_pause_until <= self.now {
                self.resume(n);
            }
        }
        for n in 1..=self.node_count() {
            if !self.is_up(n) {
                self.start_with(n, Epoch(0), "liveness phase: boot every node");
            }
        }
    }

    // --------------------------------------------------------------------------------------------------
    // Liveness
    // --------------------------------------------------------------------------------------------------

    /// L1: every running agent that does not know itself removed is in one primary view, and that view
    /// contains exactly those members. Returns the view, or why not.
    pub fn converged(&self) -> Result<View, String> {
        let mut running: Vec<Status> = Vec::new();
        for s in &self.slots {
            if s.paused {
                return Err(format!("n{} is paused", s.id));
            }
            if let (None, Some((q, _, _))) = (&s.core, &s.inquiry) {
                return Err(format!("n{} is starting: it waits for {}", s.id, q.waiting_for()));
            }
            if let Some(c) = &s.core {
                let st = c.status();
                if !st.removed_self {
                    running.push(st);
                }
            }
        }
        let Some(first) = running.first() else { return Err("no running member".into()) };
        let Some(v) = first.view.clone() else {
            return Err(format!("{} has no view", fmt_member(first.member)));
        };
        if !v.primary {
            return Err(format!(
                "{} is in non-primary view {} {}",
                fmt_member(first.member),
                v.id,
                fmt_members(&v.members)
            ));
        }
        for st in &running {
            match &st.view {
                Some(w) if w.id == v.id => {}
                Some(w) => {
                    return Err(format!(
                        "{} is in view {} {} while {} is in {} {}",
                        fmt_member(st.member),
                        w.id,
                        fmt_members(&w.members),
                        fmt_member(first.member),
                        v.id,
                        fmt_members(&v.members)
                    ))
                }
                None => return Err(format!("{} has no view", fmt_member(st.member))),
            }
        }
        let mut want: Vec<Member> = running.iter().map(|s| s.member).collect();
        want.sort();
        if want != v.members {
            return Err(format!(
                "view {} has {} but the running members are {}",
                v.id,
                fmt_members(&v.members),
                fmt_members(&want)
            ));
        }
        Ok(v)
    }

    /// Running nodes that know they were removed (stateful merges not resolved yet, or policy `wait`).
    pub fn removed_selves(&self) -> Vec<Member> {
        self.slots
            .iter()
            .filter(|s| !s.paused)
            .filter_map(|s| s.core.as_ref())
            .map(Node::status)
            .filter(|st| st.removed_self)
            .map(|st| st.member)
            .collect()
    }

    /// The operator acknowledges the fence of each refused member and restarts its node (when nobody else
    /// can resolve it: policy `wait`, or no quorum of members that remember).
    fn operator_resolves(&mut self, zombies: &[Member]) {
        let zombie_nodes: Vec<u32> = zombies.iter().map(|m| m.node().0).collect();
        let Some(on) = self
            .slots
            .iter()
            .filter(|s| s.core.is_some() && !s.paused && !zombie_nodes.contains(&s.id))
            .map(|s| s.id)
            .next()
        else {
            return;
        };
        self.note(format!(
            "operator: no primary view without the refused {}; acknowledging their fence and restarting them",
            fmt_members(zombies)
        ));
        for n in zombie_nodes {
            self.fence_ack(on, n);
            self.restart(n, "the operator restarts a refused member");
        }
    }

    /// Waits up to `bound_ms` for L1 (and, unless the policy is `wait`, for every stateful merge to be
    /// resolved: L3). Returns the view and how long it took, or records the violation.
    pub fn await_convergence(&mut self, bound_ms: u64) -> Option<(View, u64)> {
        let start = self.now;
        let wait_policy = self.cfg.merge_policy == MergePolicy::Wait;
        // Convergence must be stable, not a snapshot: right after a heal the members may still share
        // the view they had before the partition while their failure detectors are about to split it.
        // The view must stay the same for twice the failure timeout; the time reported is when it was
        // first reached.
        let stable_ms = 2 * self.cfg.failure_timeout_ms;
        let mut since: Option<(ViewId, u64)> = None;
        let mut operator_acted = false;
        let ok = self.run_until_cond(start + bound_ms + stable_ms, 5, |s| {
            // Refused members wait for the primary side (policy `fence`: its fence; `wait`: the operator).
            // When the rest cannot form a primary view without them, because a member's data directory
            // forgot what it knew and counts for no quorum (`Durable::catching_up`), or the policy is
            // `wait`, the operator acknowledges their fence and restarts them, as docs/OPERATIONS.md
            // says.
            if !operator_acted
                && s.now >= start + bound_ms / 2
                && (wait_policy || s.slots.iter().any(|x| x.core.is_some() && x.disk.catching_up))
                && s.converged().is_err()
            {
                let zombies = s.removed_selves();
                if !zombies.is_empty() {
                    operator_acted = true;
                    s.operator_resolves(&zombies);
                }
            }
            let good = match s.converged() {
                Ok(v) if wait_policy || s.removed_selves().is_empty() => Some(v.id),
                _ => None,
            };
            since = match (good, since) {
                (Some(id), Some((sid, t))) if sid == id => Some((sid, t)),
                (Some(id), _) => Some((id, s.now)),
                (None, _) => None,
            };
            since.is_some_and(|(_, t)| t <= start + bound_ms && s.now >= t + stable_ms)
        });
        if self.failure.is_some() {
            return None;
        }
        if !ok {
            match self.converged() {
                Err(why) => self.fail(
                    "L1",
                    format!("no single primary view {bound_ms}ms after the faults stopped: {why}"),
                ),
                Ok(_) => {
                    let z: Vec<Member> = self.removed_selves();
                    self.fail(
                        "L3",
                        format!(
                            "stateful merges {} still unresolved {bound_ms}ms after the faults stopped (policy {})",
                            fmt_members(&z),
                            self.cfg.merge_policy.name()
                        ),
                    );
                }
            }
            return None;
        }
        let v = self.converged().ok()?;
        let took = since.map_or(0, |(_, t)| t - start);
        self.note(format!(
            "converged: view {} {} reached {took}ms after the faults stopped, stable since",
            v.id,
            fmt_members(&v.members)
        ));
        Some((v, took))
    }

    /// L3: every stateful-merged member was resolved by the policy: its node runs a higher epoch now, or
    /// (policy `wait`) it is still refused, knows it, and shows the wait in its status.
    pub fn check_merges_resolved(&mut self) -> bool {
        let wait = self.cfg.merge_policy == MergePolicy::Wait;
        for m in self.stateful_merged() {
            let n = m.node().0;
            let Some(cur) = self.member_of(n) else { continue };
            if cur.epoch() > m.epoch() {
                continue;
            }
            if !wait {
                self.fail(
                    "L3",
                    format!(
                        "{} was caught as a stateful merge but node {n} still runs it (policy {})",
                        fmt_member(m),
                        self.cfg.merge_policy.name()
                    ),
                );
                return false;
            }
            let st = self.status(n);
            let visible = st
                .as_ref()
                .is_some_and(|s| s.removed_self && s.blocked.contains(&BlockReason::StatefulMergeWait));
            // Visible in the event log: the primary side's `stateful_merge` with action `wait`, or the
            // member's own `blocked stateful_merge_wait`.
            let logged = self.log.iter().any(|r| match &r.event {
                Event::StatefulMerge { member, action: MergeAction::Wait, .. } => *member == m,
                Event::Blocked { reason: BlockReason::StatefulMergeWait } => r.member() == m,
                _ => false,
            });
            if !visible || !logged {
                self.fail(
                    "L3",
                    format!("{} waits for an operator but that is not visible (status shows wait: {visible}; event log shows it, as `stateful_merge` action wait or `blocked stateful_merge_wait`: {logged})", fmt_member(m)),
                );
                return false;
            }
        }
        true
    }

    /// L2 in its simplest sound form: once the cluster converged and settled, every member of the view
    /// that is in the main group sends `per_member` messages to it, and every one of those members must
    /// deliver all of them, the sender included, within `bound_ms`.
    pub fn final_round(&mut self, per_member: usize, bound_ms: u64) -> bool {
        self.set_clients(false);
        let start = self.now;
        // Settled: one primary view, nobody blocked, and every member in the main group's view.
        let settled = self.run_until_cond(start + bound_ms, 5, |s| s.settled().is_ok());
        if self.failure.is_some() {
            return false;
        }
        if !settled {
            let why = self.settled().err().unwrap_or_default();
            self.fail("L2", format!("the converged cluster never settled within {bound_ms}ms, so messages cannot reach everyone: {why}"));
            return false;
        }
        let Ok(view) = self.converged() else { return false };
        let expected: BTreeSet<Member> = self.main_group_members(&view).into_iter().collect();
        let mut pending: VecDeque<(u32, Delivery, usize)> = VecDeque::new();
        for m in &expected {
            for i in 0..per_member {
                let d = if i % 2 == 0 { Delivery::Agreed } else { Delivery::Safe };
                let len = if i == 2 { 12_000 } else { 100 };
                pending.push_back((m.node().0, d, len));
            }
        }
        self.note(format!("final round: {} messages from every member of {}", per_member, view.id));
        let deadline = self.now + bound_ms;
        let done = self.run_until_cond(deadline, 5, |s| {
            // Sends that hit a full queue are retried here.
            let mut again = VecDeque::new();
            while let Some((n, d, len)) = pending.pop_front() {
                let mut payload = vec![0u8; len];
                s.rng.fill_bytes(&mut payload);
                let h = fnv64(&payload);
                // Watched before the call: the sender's own delivery may happen inside it.
                s.watched.insert(h, Watched { id: None, expected: expected.clone(), got: BTreeSet::new() });
                match s.multicast(n, MAIN_GROUP, payload, d) {
                    Some(id) => {
                        if let Some(w) = s.watched.get_mut(&h) {
                            w.id = Some(id);
                        }
                    }
                    None => {
                        s.watched.remove(&h);
                        again.push_back((n, d, len));
                    }
                }
            }
            pending = again;
            pending.is_empty() && s.watched.values().all(|w| w.expected.is_subset(&w.got))
        });
        if self.failure.is_some() {
            return false;
        }
        if !done {
            let mut missing: Vec<String> = self
                .watched
                .iter()
                .filter(|(_, w)| !w.expected.is_subset(&w.got))
                .take(5)
                .map(|(_, w)| {
                    let id = w.id.map(|i| i.to_string()).unwrap_or_default();
                    let miss: Vec<Member> = w.expected.difference(&w.got).copied().collect();
                    format!("{id} not delivered by {}", fmt_members(&miss))
                })
                .collect();
            if !pending.is_empty() {
                missing
                    .push(format!("{} messages could never be sent (queue full or stopped)", pending.len()));
            }
            self.fail("L2", format!("within {bound_ms}ms of the final sends: {}", missing.join("; ")));
            return false;
        }
        self.note(format!(
            "final round delivered everywhere after {}ms",
            (self.now + bound_ms).saturating_sub(deadline)
        ));
        true
    }

    /// Members of `view` whose application joined the main group (and did not leave it).
    fn main_group_members(&self, view: &View) -> Vec<Member> {
        view.members
            .iter()
            .copied()
            .filter(|m| self.slot(m.node().0).app.joined.contains(MAIN_GROUP))
            .collect()
    }

    /// The cluster is converged, nobody in the view is blocked, and every member whose application
    /// joined the main group is in that group's view everywhere.
    pub fn settled(&self) -> Result<(), String> {
        let v = self.converged()?;
        let in_main = self.main_group_members(&v);
        for m in &v.members {
            let Some(st) = self.status(m.node().0) else { return Err(format!("{} is down", fmt_member(*m))) };
            if !st.blocked.is_empty() {
                let b: Vec<&str> = st.blocked.iter().map(|b| block_name(*b)).collect();
                let pending = if st.pending_fences.is_empty() {
                    String::new()
                } else {
                    format!("; fences pending: {}", fmt_members(&st.pending_fences))
                };
                return Err(format!("{} is blocked ({}){pending}", fmt_member(*m), b.join(", ")));
            }
            // A view change still in progress (e.g. an install accepted before a pause, which must be
            // completed) may yet remove a member: L2 is about members that stay.
            if st.changing {
                return Err(format!("{} is in a view change", fmt_member(*m)));
            }
            let in_g = st.groups.get(MAIN_GROUP).cloned().unwrap_or_default();
            if let Some(x) = in_main.iter().find(|x| !in_g.contains(x)) {
                return Err(format!(
                    "{} sees group {MAIN_GROUP} as {} without {}",
                    fmt_member(*m),
                    fmt_members(&in_g),
                    fmt_member(*x)
                ));
            }
        }
        Ok(())
    }

    /// The checks that need the whole history (G3, G6, G9, G11 sizes), at the end of a run.
    pub fn finish(&mut self) -> bool {
        if self.failure.is_some() {
            return false;
        }
        let v = self.checker.finish();
        if let Some(v) = v.into_iter().next() {
            self.fail(v.guarantee, v.detail);
            return false;
        }
        true
    }

    /// Is the given failure-free run's fencing mode the watchdog?
    pub fn watchdog_mode(&self) -> bool {
        self.cfg.fencing == FencingMode::Watchdog
    }
}
