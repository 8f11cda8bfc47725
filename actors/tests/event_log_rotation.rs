//! Event log rotation on real agents: three `cohort agent` processes on loopback configured with a tiny
//! `log.event_log_max_bytes` (through `COHORT__LOG__*`, as an operator's environment would), clients
//! coming and going on every node, and one node restarted in the middle. The logs rotate many times;
//! afterwards every node keeps exactly `event_log_keep_files + 1` files, and `cohort verify` over the
//! rotated sets passes, saying that each history begins mid-way.
//!
//! Every wait is on an observed event (a status, a delivery, a file's part) with a deadline; the agents
//! and the directory are removed by [`support::Cluster`]'s `Drop`, also when the test fails.

mod support;

use cohort_actors::event_log::{log_files, log_part_of};
use std::path::Path;
use std::time::{Duration, Instant};
use support::{Cluster, Timing};

const FORM_DEADLINE: Duration = Duration::from_secs(20);
const MAX_BYTES: &str = "4096";
const KEEP_FILES: usize = 3;
/// Rotations every node's log must have gone through before the test stops the traffic.
const ROTATIONS: u64 = 12;

#[test]
fn agents_rotate_their_event_logs_under_traffic_keep_the_configured_files_and_verify_passes() {
    let mut c = Cluster::new(3, Timing::FAST);
    let env = [("COHORT__LOG__EVENT_LOG_MAX_BYTES", MAX_BYTES), ("COHORT__LOG__EVENT_LOG_KEEP_FILES", "3")];
    for id in c.ids() {
        c.start_with(id, &env, &[]);
    }
    c.wait_for_view(&[1, 2, 3], FORM_DEADLINE);
    let live: Vec<_> = c.nodes.iter().map(|n| n.data_dir.join("events.jsonl")).collect();
    let part = |i: usize| log_part_of(&live[i]).unwrap_or(0);

    let end = Instant::now() + Duration::from_secs(120);
    let mut round = 0u32;
    let mut restarted = false;
    while (0..3).any(|i| part(i) < ROTATIONS) {
        assert!(
            Instant::now() < end,
            "logs rotated only to parts {:?}",
            (0..3).map(part).collect::<Vec<_>>()
        );
        // A client on each node in turn, so every node logs sends and deliveries.
        let id = round % 3 + 1;
        c.visit(round, id, "rot", 25, Duration::from_secs(20));
        for (i, l) in live.iter().enumerate() {
            let files = log_files(l).expect("list the log's files");
            assert!(files.len() <= KEEP_FILES + 1, "node {}: {files:?}", i + 1);
        }
        // Halfway, node 2 leaves cleanly and comes back: its agent reopens the live file and goes on
        // numbering the parts where it stopped (verify refuses files that do not follow one another).
        if !restarted && part(1) >= ROTATIONS / 2 {
            restarted = true;
            let before = part(1);
            assert!(c.stop(2, Duration::from_secs(10)), "node 2 did not stop cleanly");
            c.start_with(2, &env, &[]);
            c.wait_for_view(&[1, 2, 3], FORM_DEADLINE);
            assert!(part(1) >= before, "the restarted agent kept the part of its live file");
        }
        round += 1;
    }
    assert!(restarted, "node 2 was restarted during the traffic");
    let unclean = c.stop_all();
    assert!(unclean.is_empty(), "agents {unclean:?} did not exit cleanly");
    for (i, l) in live.iter().enumerate() {
        let files = log_files(l).expect("list the log's files");
        assert_eq!(files.len(), KEEP_FILES + 1, "node {}: {files:?}", i + 1);
        for f in &files {
            let text = std::fs::read_to_string(f).expect("read a log file");
            assert!(text.ends_with('\n'), "{} ends with a whole line", f.display());
            let longest = text.lines().map(str::len).max().unwrap_or(0) as u64;
            assert!(
                (text.len() as u64) <= 4096 || text.lines().count() == 1,
                "{} has {} bytes (longest line {longest})",
                f.display(),
                text.len()
            );
        }
    }
    let (ok, text) = c.verify();
    println!("cohort verify after {round} rounds:\n{text}");
    assert!(ok, "cohort verify failed:\n{text}");
    assert!(text.contains("verdict: OK ("), "{text}");
    assert!(text.contains(&format!("logs in {} files", 3 * (KEEP_FILES + 1))), "{text}");
    for node in 1..=3 {
        assert!(text.contains(&format!("the history of node {node} begins mid-way")), "{text}");
    }
}

/// What one agent uses at one moment: resident memory (KiB), open file descriptors, and bytes on disk
/// in its data directory (the event log's files included).
#[derive(Clone, Copy, Debug)]
struct Usage {
    rss_kib: u64,
    fds: u64,
    disk_bytes: u64,
}

fn usage(pid: u32, data_dir: &Path) -> Option<Usage> {
    let rss_kib = support::rss_kib(pid)?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    let disk_bytes = std::fs::read_dir(data_dir)
        .ok()?
        .filter_map(|e| e.ok()?.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    Some(Usage { rss_kib, fds, disk_bytes })
}

/// A compressed soak: churn on three agents for `COHORT_SOAK_SECS` seconds (default 120): clients
/// coming and going on every node, each visit in a group of a new name, node 3 restarted every few
/// rounds (not with `SOAK_NO_RESTART=1`, which keeps one view for the whole run), the event logs
/// rotating at 64 KiB with 4 files kept. Every few seconds it prints each agent's RSS, descriptors and
/// disk use, and at the end asserts that nodes 1 and 2 (never restarted, so their figures cover the
/// whole run) stay flat: the last third's maximum RSS within the first third's plus 5 % and 1 MiB,
/// descriptors within the first third's plus 16, and disk below the rotation's bound. It runs for
/// minutes, so it is left out of the normal suite; `scripts/soak [SECONDS]` runs it.
///
/// What it found, each fixed: the tripwire kept every delivered id of a view, the engine kept two
/// entries per group name ever left, and the latency clock kept every own send until 200,000 had
/// piled up.
#[test]
#[ignore = "soak: minutes of churn, run scripts/soak"]
fn a_compressed_soak_with_churn_keeps_memory_descriptors_and_disk_flat() {
    const MAX_BYTES: u64 = 64 * 1024;
    const KEEP: u64 = 4;
    let secs: u64 = std::env::var("COHORT_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(120);
    let mut c = Cluster::new(3, Timing::FAST);
    let max = MAX_BYTES.to_string();
    let keep = KEEP.to_string();
    let env = [
        ("COHORT__LOG__EVENT_LOG_MAX_BYTES", max.as_str()),
        ("COHORT__LOG__EVENT_LOG_KEEP_FILES", keep.as_str()),
    ];
    for id in c.ids() {
        c.start_with(id, &env, &[]);
    }
    c.wait_for_view(&[1, 2, 3], FORM_DEADLINE);
    let start = Instant::now();
    let mut samples: Vec<(Duration, [Option<Usage>; 3])> = Vec::new();
    let mut last_sample = Instant::now() - Duration::from_secs(60);
    let mut round = 0u32;
    let mut restarts = 0;
    while start.elapsed() < Duration::from_secs(secs) {
        let id = round % 3 + 1;
        c.visit(round, id, &format!("soak-{round}"), 50, Duration::from_secs(20));
        // SOAK_NO_RESTART=1 keeps one view for the whole run (the memory growth shows fastest then).
        if round % 12 == 11 && std::env::var_os("SOAK_NO_RESTART").is_none() {
            assert!(c.stop(3, Duration::from_secs(10)), "node 3 did not stop cleanly");
            c.start_with(3, &env, &[]);
            c.wait_for_view(&[1, 2, 3], FORM_DEADLINE);
            restarts += 1;
        }
        if last_sample.elapsed() >= Duration::from_secs(3) {
            last_sample = Instant::now();
            let u: [Option<Usage>; 3] =
                std::array::from_fn(|i| usage(c.pid(i as u32 + 1), &c.nodes[i].data_dir));
            let line: Vec<String> = u
                .iter()
                .enumerate()
                .map(|(i, u)| match u {
                    Some(u) => format!(
                        "node {}: rss {} KiB, fds {}, disk {} KiB",
                        i + 1,
                        u.rss_kib,
                        u.fds,
                        u.disk_bytes / 1024
                    ),
                    None => format!("node {}: -", i + 1),
                })
                .collect();
            println!("[{:>4}s, round {round}] {}", start.elapsed().as_secs(), line.join("; "));
            samples.push((start.elapsed(), u));
        }
        round += 1;
    }
    assert!(samples.len() >= 6, "too few samples ({}) for thirds: raise COHORT_SOAK_SECS", samples.len());
    let no_restart = std::env::var_os("SOAK_NO_RESTART").is_some();
    assert!(restarts >= 1 || no_restart, "node 3 was never restarted: raise COHORT_SOAK_SECS");
    let third = samples.len() / 3;
    for node in 0..2 {
        let series: Vec<Usage> = samples.iter().filter_map(|(_, u)| u[node]).collect();
        assert_eq!(series.len(), samples.len(), "node {} answered every sample", node + 1);
        let (first, last) = (&series[..third], &series[series.len() - third..]);
        let max_of = |s: &[Usage], f: fn(&Usage) -> u64| s.iter().map(f).max().unwrap_or(0);
        let (rss0, rss1) = (max_of(first, |u| u.rss_kib), max_of(last, |u| u.rss_kib));
        let (fd0, fd1) = (max_of(first, |u| u.fds), max_of(last, |u| u.fds));
        let disk = max_of(&series, |u| u.disk_bytes);
        println!(
            "node {}: rss max {rss0} -> {rss1} KiB, fds max {fd0} -> {fd1}, disk max {} KiB",
            node + 1,
            disk / 1024
        );
        // Flat to the KiB once the bounded windows (tripwire, send clock) have filled; 5 % and 1 MiB
        // of slack for the allocator. The leaks this caught grew 1 MiB every 15 s.
        assert!(rss1 <= rss0 + rss0 / 20 + 1024, "node {}: RSS grew from {rss0} to {rss1} KiB", node + 1);
        assert!(fd1 <= fd0 + 16, "node {}: descriptors grew from {fd0} to {fd1}", node + 1);
        // The log's files, a line over each, and the small files of the data directory.
        let bound = (KEEP + 1) * (MAX_BYTES + 4096) + 256 * 1024;
        assert!(disk <= bound, "node {}: {disk} bytes on disk, over {bound}", node + 1);
    }
    let unclean = c.stop_all();
    assert!(unclean.is_empty(), "agents {unclean:?} did not exit cleanly");
    let (ok, text) = c.verify();
    println!("cohort verify after {round} rounds and {restarts} restarts:\n{text}");
    assert!(ok, "cohort verify failed:\n{text}");
}
