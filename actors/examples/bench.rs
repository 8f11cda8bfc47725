//! The cohort benchmark: real agents on loopback, measured from client-library clients.
//!
//! Reports, for a 3-node cluster with the default timing:
//! - ordered (agreed) throughput, 64 B and 1 KiB, one sender and all senders: each node's delivered
//!   rate of the whole ordered stream, first to last delivery; the table shows the slowest node's rate
//!   (as the corosync anchor in `shared/anchors/corosync/` does), median over the repetitions;
//! - delivery latency p50/p99 at 1,000 msgs/s of 64 B from one sender: at the other nodes (remote) and
//!   at the sender (self);
//! - failover: `kill -9` of node 3 to a primary view without it at both survivors;
//! - idle resident memory of each agent of a 5-node cluster, and the peak resident memory of the agents
//!   of a 3-node cluster while every node floods 1 KiB messages.
//!
//! This is a benchmark, not a test: it asserts nothing (except that every node delivered the same
//! order, checked with a hash). Run it with a release build of the agent:
//! ```text
//! cargo build --release -p cohort-actors && cargo run --release -p cohort-actors --example bench -- [--reps N] [--only tput,lat,failover,rss]
//! ```
//! The agent binary is `COHORT_BIN`, or `target/release/cohort`.

#[path = "../tests/support/mod.rs"]
mod support;

use cohort::Delivery;
use cohort_actors::client::{Client, ClientError, ClientEvent};
use cohort_actors::client_proto::MAX_UNANSWERED_SENDS;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use support::{rss_kib, Cluster, Timing};

/// All clients are threads of this process, so one monotonic base serves as a shared clock.
static BASE: OnceLock<Instant> = OnceLock::new();

fn now_ns() -> u64 {
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// What one node's client does in a run.
#[derive(Clone, Copy)]
struct Role {
    /// Messages this node sends (0: receive only).
    send: u64,
    /// Messages per second, or as fast as flow control allows.
    rate: Option<u64>,
    /// Messages every node must deliver in total.
    expect: u64,
    size: usize,
}

/// What one node's client saw.
#[derive(Default)]
struct Outcome {
    delivered: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    /// FNV-1a of the delivered message ids, in order: equal at every node iff the order is the same.
    order_hash: u64,
    lat_self_ns: Vec<u64>,
    lat_remote_ns: Vec<u64>,
}

impl Outcome {
    fn rate(&self) -> f64 {
        match (self.first, self.last) {
            (Some(f), Some(l)) if l > f => self.delivered.saturating_sub(1) as f64 / (l - f).as_secs_f64(),
            _ => 0.0,
        }
    }
}

fn payload(seq: u64, size: usize) -> Vec<u8> {
    let mut p = vec![0u8; size.max(16)];
    p[..8].copy_from_slice(&now_ns().to_be_bytes());
    p[8..16].copy_from_slice(&seq.to_be_bytes());
    p
}

/// Handles one event; returns an error for events that end the run.
async fn on_event(
    c: &mut Client,
    ev: ClientEvent,
    group: &str,
    me: u32,
    out: &mut Outcome,
) -> Result<(), ClientError> {
    match ev {
        ClientEvent::Deliver { group: g, msg, sender, payload, .. } if g == group => {
            let now = Instant::now();
            out.first.get_or_insert(now);
            out.last = Some(now);
            out.delivered += 1;
            for b in msg.bytes().chain(std::iter::once(b'|')) {
                out.order_hash = (out.order_hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
            }
            if payload.len() >= 16 {
                let sent = u64::from_be_bytes(payload[..8].try_into().unwrap_or([0; 8]));
                let lat = now_ns().saturating_sub(sent);
                if sender.node().0 == me {
                    out.lat_self_ns.push(lat);
                } else {
                    out.lat_remote_ns.push(lat);
                }
            }
        }
        ClientEvent::ProvideState { group: g, joiner, token } => {
            c.provide_state(&g, joiner, token, Vec::new()).await?
        }
        ClientEvent::SendFailed { error, .. } => return Err(ClientError::SendFailed(error)),
        ClientEvent::RemovedSelf { .. } | ClientEvent::SelfFenced { .. } => {
            return Err(ClientError::Unexpected(format!("{ev:?}")))
        }
        _ => {}
    }
    Ok(())
}

/// One node's client: join, wait for the whole group at every node, then send and collect.
async fn node_client(
    socket: PathBuf,
    group: String,
    nodes: usize,
    role: Role,
    ready: Arc<AtomicUsize>,
) -> Result<Outcome, ClientError> {
    let mut c = Client::connect(&socket, "bench").await?;
    let me = c.member().node().0;
    let mut out = Outcome { order_hash: 0xcbf2_9ce4_8422_2325, ..Outcome::default() };
    c.join(&group).await?;
    let mut counted = false;
    // Keep answering state requests until every node's client has the full group.
    while ready.load(Ordering::SeqCst) < nodes {
        match tokio::time::timeout(Duration::from_millis(5), c.next_event()).await {
            Ok(ev) => {
                let ev = ev?;
                if let ClientEvent::GroupView { group: g, members } = &ev {
                    if *g == group && members.len() == nodes && !counted {
                        counted = true;
                        ready.fetch_add(1, Ordering::SeqCst);
                    }
                }
                on_event(&mut c, ev, &group, me, &mut out).await?;
            }
            Err(_) => continue,
        }
    }
    let delivery = Delivery::Agreed;
    let start = Instant::now();
    let mut sent = 0u64;
    while out.delivered < role.expect {
        match role.rate {
            // Flood: keep the agent's window of unanswered sends full, then wait for what comes back.
            // (No zero timeouts to poll for events: tokio rounds timers up to the next millisecond.)
            None => {
                while sent < role.send && c.unanswered_sends() < MAX_UNANSWERED_SENDS {
                    c.send_nowait(&group, payload(sent, role.size), delivery).await?;
                    sent += 1;
                }
            }
            Some(r) if sent < role.send => {
                let due = start + Duration::from_secs_f64(sent as f64 / r as f64);
                if due <= Instant::now() {
                    c.send_nowait(&group, payload(sent, role.size), delivery).await?;
                    sent += 1;
                    continue;
                }
                if let Ok(ev) = tokio::time::timeout_at(due.into(), c.next_event()).await {
                    on_event(&mut c, ev?, &group, me, &mut out).await?;
                }
                continue;
            }
            Some(_) => {}
        }
        let ev = c.next_event().await?;
        on_event(&mut c, ev, &group, me, &mut out).await?;
    }
    let _ = c.leave(&group).await;
    Ok(out)
}

/// Runs one case on every node of `c` at once, one thread per node's client; `role(node index)`.
fn run_case(c: &Cluster, group: &str, role: impl Fn(usize) -> Role) -> Vec<Outcome> {
    let outcomes: Vec<Outcome> = run_case_results(c, group, role)
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.unwrap_or_else(|e| panic!("node {} client failed in {group}: {e}", i + 1)))
        .collect();
    let hashes: Vec<u64> = outcomes.iter().map(|o| o.order_hash).collect();
    assert!(
        hashes.windows(2).all(|w| w[0] == w[1]),
        "{group}: the delivery order differs between nodes: {hashes:x?}"
    );
    outcomes
}

/// Like `run_case`, but hands back each client's outcome or error (the overload case, where the agent
/// may disconnect a client that cannot keep up: that is its bound on memory, not a failure).
fn run_case_results(c: &Cluster, group: &str, role: impl Fn(usize) -> Role) -> Vec<Result<Outcome, String>> {
    let n = c.nodes.len();
    let ready = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = c
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let (socket, group, r, ready) = (node.socket.clone(), group.to_string(), role(i), ready.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                rt.block_on(async {
                    tokio::time::timeout(Duration::from_secs(180), node_client(socket, group, n, r, ready))
                        .await
                })
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| match h.join().expect("client thread") {
            Ok(Ok(o)) => Ok(o),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_string()),
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 0 => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        n => v[n / 2],
    }
}

fn pct(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn start_cluster(n: u32, timing: Timing) -> Cluster {
    let mut c = Cluster::new(n, timing);
    c.start_all();
    let ids = c.ids();
    c.wait_for_view(&ids, Duration::from_secs(30));
    c
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let reps: usize =
        args.iter().position(|a| a == "--reps").and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(3);
    let only: Vec<String> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_else(|| ["tput", "lat", "failover", "rss"].map(str::to_string).to_vec());
    let want = |s: &str| only.iter().any(|o| o == s);
    BASE.get_or_init(Instant::now);
    println!("cohort bench: agent {}, {reps} repetitions", support::cohort_bin().display());
    let mut table: Vec<(String, String)> = Vec::new();

    if want("tput") {
        let c = start_cluster(3, Timing::DEFAULT);
        // The corosync anchor's run lengths.
        let cases: [(usize, bool, u64); 4] =
            [(64, false, 50_000), (64, true, 20_000), (1024, false, 30_000), (1024, true, 12_000)];
        for (size, all, per_sender) in cases {
            let mut slowest = Vec::new();
            for rep in 0..reps {
                let senders = if all { 3 } else { 1 };
                let group = format!("t{size}{}{rep}", if all { "a" } else { "o" });
                let outs = run_case(&c, &group, |i| Role {
                    send: if all || i == 0 { per_sender } else { 0 },
                    rate: None,
                    expect: per_sender * senders,
                    size,
                });
                let rates: Vec<f64> = outs.iter().map(Outcome::rate).collect();
                let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
                println!(
                    "RESULT tput size={size} senders={} rep={rep} per_node_msgs_s={:?} slowest={min:.0}",
                    if all { "all" } else { "one" },
                    rates.iter().map(|r| r.round() as u64).collect::<Vec<_>>()
                );
                slowest.push(min);
            }
            let m = median(slowest);
            table.push((
                format!(
                    "throughput {size} B, {} sender(s), msgs/s (slowest node, median)",
                    if all { "all 3" } else { "1" }
                ),
                format!("{m:.0} ({:.2} MB/s)", m * size as f64 / 1e6),
            ));
        }
        drop(c);
    }

    if want("lat") {
        let c = start_cluster(3, Timing::DEFAULT);
        let (mut rp50, mut rp99, mut sp50, mut sp99) = (vec![], vec![], vec![], vec![]);
        for rep in 0..reps {
            let outs = run_case(&c, &format!("lat{rep}"), |i| Role {
                send: if i == 0 { 5000 } else { 0 },
                rate: Some(1000),
                expect: 5000,
                size: 64,
            });
            let mut remote_p50 = vec![];
            let mut remote_p99 = vec![];
            for o in &outs[1..] {
                let mut l = o.lat_remote_ns.clone();
                l.sort_unstable();
                remote_p50.push(pct(&l, 0.5));
                remote_p99.push(pct(&l, 0.99));
            }
            let mut s = outs[0].lat_self_ns.clone();
            s.sort_unstable();
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
            println!(
                "RESULT lat size=64 rate=1000 rep={rep} remote_p50_us={:.0} remote_p99_us={:.0} self_p50_us={:.0} self_p99_us={:.0} remote_max_us={:.0}",
                mean(&remote_p50), mean(&remote_p99), pct(&s, 0.5), pct(&s, 0.99),
                outs[1..].iter().flat_map(|o| o.lat_remote_ns.iter()).max().copied().unwrap_or(0) as f64 / 1000.0
            );
            rp50.push(mean(&remote_p50));
            rp99.push(mean(&remote_p99));
            sp50.push(pct(&s, 0.5));
            sp99.push(pct(&s, 0.99));
        }
        table.push((
            "latency 64 B at 1000/s, remote p50 / p99 (µs)".into(),
            format!("{:.0} / {:.0}", median(rp50), median(rp99)),
        ));
        table.push((
            "latency 64 B at 1000/s, self p50 / p99 (µs)".into(),
            format!("{:.0} / {:.0}", median(sp50), median(sp99)),
        ));
        drop(c);
    }

    if want("failover") {
        let t = Timing::DEFAULT;
        let mut times = Vec::new();
        for rep in 0..reps {
            let mut c = start_cluster(3, t);
            std::thread::sleep(Duration::from_millis(500));
            let at = Instant::now();
            c.kill9(3);
            c.wait_for_view(&[1, 2], Duration::from_secs(30));
            let ms = at.elapsed().as_secs_f64() * 1000.0;
            println!(
                "RESULT failover rep={rep} failure_timeout_ms={} detect_ms={ms:.0}",
                t.failure_timeout_ms
            );
            times.push(ms);
        }
        let (lo, hi) =
            (times.iter().copied().fold(f64::INFINITY, f64::min), times.iter().copied().fold(0.0, f64::max));
        table.push((
            format!(
                "failover kill -9 -> view without it (failure_timeout {} ms), median (min..max)",
                t.failure_timeout_ms
            ),
            format!("{:.0} ms ({lo:.0}..{hi:.0})", median(times)),
        ));
    }

    if want("rss") {
        let c = start_cluster(5, Timing::DEFAULT);
        // Let the cluster idle for a while: heartbeats only.
        std::thread::sleep(Duration::from_secs(5));
        let rss: Vec<u64> = c.ids().iter().map(|id| rss_kib(c.pid(*id)).unwrap_or(0)).collect();
        println!("RESULT idle_rss_5 kib={rss:?}");
        let max = rss.iter().copied().max().unwrap_or(0);
        table.push((
            "idle RSS per agent, 5-node cluster (max of 5)".into(),
            format!("{:.1} MiB", max as f64 / 1024.0),
        ));
        drop(c);

        let c = start_cluster(3, Timing::DEFAULT);
        let pids: Vec<u32> = c.ids().iter().map(|id| c.pid(*id)).collect();
        let idle: Vec<u64> = pids.iter().map(|p| rss_kib(*p).unwrap_or(0)).collect();
        let stop = Arc::new(AtomicUsize::new(0));
        let sampler = {
            let (pids, stop) = (pids.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut peak = vec![0u64; pids.len()];
                while stop.load(Ordering::SeqCst) == 0 {
                    for (i, p) in pids.iter().enumerate() {
                        peak[i] = peak[i].max(rss_kib(*p).unwrap_or(0));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                peak
            })
        };
        let outs =
            run_case_results(&c, "flood", |_| Role { send: 40_000, rate: None, expect: 120_000, size: 1024 });
        stop.store(1, Ordering::SeqCst);
        let peak = sampler.join().expect("sampler");
        let rates: Vec<String> = outs
            .iter()
            .map(|o| match o {
                Ok(o) => format!("{}", o.rate().round() as u64),
                Err(e) => format!("client disconnected ({e})"),
            })
            .collect();
        println!("RESULT overload_rss_3 idle_kib={idle:?} peak_kib={peak:?} clients={rates:?}");
        let max = peak.iter().copied().max().unwrap_or(0);
        table.push((
            "peak RSS per agent, 3 nodes all flooding 1 KiB (max of 3)".into(),
            format!(
                "{:.1} MiB (idle {:.1} MiB)",
                max as f64 / 1024.0,
                idle.iter().copied().max().unwrap_or(0) as f64 / 1024.0
            ),
        ));
    }

    println!("\n| measure | cohort |\n|---|---|");
    for (k, v) in table {
        println!("| {k} | {v} |");
    }
}
