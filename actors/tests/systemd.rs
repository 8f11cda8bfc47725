//! The agent under a service manager, with a real Unix datagram socket standing in for systemd's end
//! of `$NOTIFY_SOCKET`: readiness only after the first view, the status line, watchdog pings from a
//! running event loop and none from a stopped one, the stop notice; and a configuration reload
//! (SIGHUP) that changes the log level and the fence levels of a running agent without a restart.
//!
//! Real `cohort agent` processes on loopback (the harness in `support/`), stopped by PID even when a
//! test fails. Every wait is on an event (a datagram, a log line, a process state) with a deadline.

mod support;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{cohort_bin, Cluster, Timing};

/// Systemd's end of the notification socket.
struct Manager {
    socket: UnixDatagram,
    /// Every datagram received, in order.
    seen: Vec<String>,
}

impl Manager {
    fn bind(path: &Path) -> Manager {
        Manager { socket: UnixDatagram::bind(path).expect("bind the notification socket"), seen: Vec::new() }
    }

    /// The next datagram within `deadline`, or `None`.
    fn recv(&mut self, deadline: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(deadline.max(Duration::from_millis(1)))).expect("read timeout");
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push(text.clone());
                Some(text)
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                None
            }
            Err(e) => panic!("receive on the notification socket: {e}"),
        }
    }

    /// Receives until a datagram satisfies `pred`; panics after `deadline` with everything seen.
    fn wait_for(&mut self, what: &str, deadline: Duration, pred: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + deadline;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!("no {what} within {deadline:?}; received: {:#?}", self.seen);
            }
            if let Some(d) = self.recv(left) {
                if pred(&d) {
                    return d;
                }
            }
        }
    }

    /// Everything already queued on the socket.
    fn drain(&mut self) -> Vec<String> {
        self.socket.set_nonblocking(true).expect("nonblocking");
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.seen.push(text.clone());
            out.push(text);
        }
        self.socket.set_nonblocking(false).expect("blocking");
        out
    }
}

/// `cohort config check` of the two configuration files, as an operator runs it beside the agent.
fn config_check(cluster: &std::path::Path, node: &std::path::Path) -> std::process::Output {
    Command::new(cohort_bin())
        .args(["config", "check", "--config"])
        .arg(cluster)
        .arg("--config")
        .arg(node)
        .env_remove("RUST_LOG")
        .output()
        .expect("run cohort config check")
}

fn has_line(datagram: &str, line: &str) -> bool {
    datagram.lines().any(|l| l == line)
}

fn status_of(datagram: &str) -> Option<&str> {
    datagram.lines().find_map(|l| l.strip_prefix("STATUS="))
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().expect("run kill");
    assert!(ok.success(), "kill -{sig} {pid} failed");
}

/// The process state letter of `pid` (`/proc/PID/stat`, third field): `T` when stopped.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn wait_for_state(pid: u32, want: char, deadline: Duration) {
    let end = Instant::now() + deadline;
    while proc_state(pid) != Some(want) {
        assert!(
            Instant::now() < end,
            "process {pid} not in state {want} within {deadline:?}: {:?}",
            proc_state(pid)
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Polls `path` until its contents satisfy `pred`; panics after `deadline` showing the file.
fn wait_for_file(path: &Path, what: &str, deadline: Duration, pred: impl Fn(&str) -> bool) -> String {
    let end = Instant::now() + deadline;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if pred(&text) {
            return text;
        }
        assert!(Instant::now() < end, "{what} not in {} within {deadline:?}:\n{text}", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

const WATCHDOG: Duration = Duration::from_millis(300);

#[test]
fn ready_comes_after_the_first_view_and_watchdog_pings_stop_while_the_agent_is_stopped() {
    // Quorum needs three votes of five expected: two of the three nodes may start (a node picks its
    // epoch only once a majority of the configured nodes answered, G12) but have no quorum together.
    let mut c = Cluster::with_extra(3, Timing::FAST, "[quorum]\nexpected_votes = 5\n");
    let notify = c.dir.join("notify");
    let mut manager = Manager::bind(&notify);
    let usec = WATCHDOG.as_micros().to_string();
    let notify_s = notify.to_str().expect("utf-8 path").to_string();
    c.start_with(1, &[("NOTIFY_SOCKET", &notify_s), ("WATCHDOG_USEC", &usec)], &[]);
    c.start(2);
    let pid = c.pid(1);

    // Its first view has no quorum, so READY says "started, waiting for quorum".
    let ready = manager.wait_for("READY=1", Duration::from_secs(20), |d| has_line(d, "READY=1"));
    let before_ready = &manager.seen[..manager.seen.len() - 1];
    assert!(
        status_of(&manager.seen[0]).is_some_and(|s| s.starts_with("starting: ")),
        "the first notification says the agent is starting: {:?}",
        manager.seen
    );
    assert!(before_ready.iter().all(|d| !has_line(d, "READY=1")));
    let status = status_of(&ready).expect("READY carries a STATUS line");
    assert!(status.starts_with("view 1."), "{status}");
    assert!(status.contains("[1 2], not primary, quorum 2/5 votes (needs 3)"), "{status}");
    assert!(status.contains("blocked: no_quorum"), "{status}");
    assert!(status.ends_with("started, waiting for quorum"), "{status}");
    // What the agent reported is what it has: a view, installed before READY was sent.
    let (members, primary) = c.view(1).expect("node 1 has a view once it said READY");
    assert_eq!((members.len(), primary), (2, false));

    // Healthy: pings keep coming, at about twice the watchdog's rate.
    for _ in 0..3 {
        manager.wait_for("WATCHDOG=1", WATCHDOG * 2, |d| has_line(d, "WATCHDOG=1"));
    }

    // A third node gives the view quorum, and the status line says so.
    c.start(3);
    let primary = manager.wait_for("a primary view in STATUS", Duration::from_secs(20), |d| {
        status_of(d).is_some_and(|s| s.contains("[1 2 3], primary, quorum 3/5 votes"))
    });
    assert!(!status_of(&primary).unwrap_or_default().contains("blocked"), "{primary}");

    // Stopped: not a single ping for three watchdog intervals, which is when systemd would kill it.
    signal(pid, "STOP");
    wait_for_state(pid, 'T', Duration::from_secs(5));
    manager.drain();
    let silent = manager.recv(WATCHDOG * 3);
    assert_eq!(silent, None, "a stopped agent sent a notification");

    // Running again: the pings resume.
    signal(pid, "CONT");
    manager.wait_for("WATCHDOG=1 after SIGCONT", Duration::from_secs(5), |d| has_line(d, "WATCHDOG=1"));

    // A clean stop says STOPPING=1 before the agent exits with status 0.
    assert!(c.stop(1, Duration::from_secs(10)), "node 1 did not exit cleanly on SIGTERM");
    let after = manager.drain();
    let stopping = after.iter().position(|d| has_line(d, "STOPPING=1"));
    let stopping = stopping.unwrap_or_else(|| panic!("no STOPPING=1 after SIGTERM: {after:?}"));
    assert!(after[stopping..].iter().all(|d| !has_line(d, "READY=1") && !has_line(d, "WATCHDOG=1")));
    c.stop(2, Duration::from_secs(10));
    c.stop(3, Duration::from_secs(10));
}

#[test]
fn a_reload_changes_the_log_level_the_fence_levels_and_the_timing_of_a_running_agent() {
    // Level 1 fails; after the reload, level 1 succeeds and names itself in the fence result.
    let old_levels = "[[fencing.levels]]\n[[fencing.levels.agents]]\nname = \"old-level\"\n\
                      command = \"/bin/false\"\ntimeout_ms = 5000\n";
    let new_levels = "[[fencing.levels]]\n[[fencing.levels.agents]]\nname = \"new-level\"\n\
                      command = \"/bin/true\"\ntimeout_ms = 7000\n";
    let mut c = Cluster::with_extra(3, Timing::FAST, old_levels);
    let notify = c.dir.join("notify");
    let mut manager = Manager::bind(&notify);
    let notify_s = notify.to_str().expect("utf-8 path").to_string();
    c.start_with(1, &[("NOTIFY_SOCKET", &notify_s)], &["--log-format", "journal"]);
    c.start(2);
    c.start(3);
    let pid = c.pid(1);
    c.wait_for_view(&[1, 2, 3], Duration::from_secs(20));
    manager.wait_for("READY=1", Duration::from_secs(20), |d| has_line(d, "READY=1"));
    let member_before = c.status(1).expect("status")["member"].clone();

    // The journal format: a priority prefix, no timestamp.
    let stderr = c.stderr_path(1);
    let text = wait_for_file(&stderr, "an info line", Duration::from_secs(5), |t| t.contains("<6>"));
    let first = text.lines().next().unwrap_or_default();
    assert!(first.starts_with("<6>cohort_actors::"), "{first}");
    // At level info a status query logs its connection but not the debug line of its disconnection.
    c.status(1).expect("status");
    wait_for_file(&stderr, "a client connection", Duration::from_secs(5), |t| t.contains("name=test-status"));
    assert!(
        !std::fs::read_to_string(&stderr).unwrap_or_default().contains("<7>"),
        "debug lines at level info"
    );

    // New configuration: log level, fence levels and failure timeout (reloadable), merge policy (needs a
    // restart).
    let node1 = c.nodes[0].config.clone();
    let node_toml = std::fs::read_to_string(&node1).expect("node1.toml");
    std::fs::write(&node1, node_toml.replace("level = \"info\"", "level = \"debug\""))
        .expect("write node1.toml");
    let cluster_toml = std::fs::read_to_string(&c.cluster_toml).expect("cluster.toml");
    let changed = cluster_toml
        .replace(old_levels, new_levels)
        .replace("failure_timeout_ms = 500", "failure_timeout_ms = 600")
        .replace("policy = \"fence\"", "policy = \"restart\"");
    assert_ne!(changed, cluster_toml);
    std::fs::write(&c.cluster_toml, changed).expect("write cluster.toml");

    // `cohort config check` says beforehand what a reload will do.
    let check = config_check(&c.cluster_toml, &node1);
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{out}{}", String::from_utf8_lossy(&check.stderr));
    assert!(out.contains(&format!("# the running agent (pid {pid}) differs in 4 keys")), "{out}");
    assert!(out.contains("#   fencing.levels: "), "{out}");
    let line = |key: &str| {
        out.lines().find(|l| l.starts_with(&format!("#   {key}: "))).unwrap_or_default().to_string()
    };
    assert!(
        line("fencing.levels").ends_with("applied by a reload (SIGHUP, systemctl reload cohort)"),
        "{out}"
    );
    assert_eq!(
        line("log.level"),
        "#   log.level: \"info\" -> \"debug\"    applied by a reload (SIGHUP, systemctl reload cohort)"
    );
    assert_eq!(
        line("timing.failure_timeout_ms"),
        "#   timing.failure_timeout_ms: 500 -> 600    applied by a reload (SIGHUP, systemctl reload cohort)"
    );
    assert_eq!(line("merge.policy"), "#   merge.policy: \"fence\" -> \"restart\"    needs a restart");

    // The reload: RELOADING=1, then READY=1 with what was applied and what needs a restart.
    manager.drain();
    signal(pid, "HUP");
    manager.wait_for("RELOADING=1", Duration::from_secs(10), |d| has_line(d, "RELOADING=1"));
    let done =
        manager.wait_for("READY=1 after the reload", Duration::from_secs(10), |d| has_line(d, "READY=1"));
    assert_eq!(
        status_of(&done),
        Some(
            "configuration reloaded: applied timing.failure_timeout_ms, fencing.levels, log.level; changed but \
             needs a restart: merge.policy"
        )
    );
    let log = wait_for_file(&stderr, "the fencing actor's new levels", Duration::from_secs(5), |t| {
        t.contains("fence levels replaced")
    });
    assert!(log.contains("<4>cohort_actors::supervisor: configuration change needs a restart"), "{log}");

    // The same process, the same incarnation.
    assert_eq!(c.pid(1), pid);
    assert!(c.exited(1).is_none(), "node 1 exited");
    assert_eq!(c.status(1).expect("status")["member"], member_before);
    // The core runs with the new failure timeout (its status reports the timing it uses).
    let st = c.status(1).expect("status");
    assert_eq!(st["timing"]["failure_timeout_ms"], serde_json::json!(600), "{st}");
    assert_eq!(st["timing"]["heartbeat_interval_ms"], serde_json::json!(50), "{st}");

    // The log level took effect: the same status query now logs its disconnection at debug.
    c.status(1).expect("status");
    wait_for_file(&stderr, "a debug line", Duration::from_secs(5), |t| {
        t.lines().any(|l| l.starts_with("<7>") && l.contains("client disconnected"))
    });

    // The fence levels took effect: node 3 fails and node 1 (the leader) fences it with the new level.
    c.kill9(3);
    let events = c.nodes[0].data_dir.join("events.jsonl");
    let log = wait_for_file(&events, "a fence result for node 3", Duration::from_secs(20), |t| {
        t.lines().any(|l| l.contains("\"event\":\"fence_result\"") && l.contains("\"ok\":true"))
    });
    let result = log.lines().find(|l| l.contains("\"event\":\"fence_result\"")).unwrap_or_default();
    assert!(result.contains("level 1 new-level"), "the fence did not use the reloaded level: {result}");
    assert!(!log.contains("old-level"), "the replaced level ran: {log}");

    // A timing step too far for peers still on the running timing is refused as a whole, and `config
    // check` says so beforehand: heartbeats every 400 ms (valid with a failure timeout of 1000 ms) would
    // be suspected by peers that still run with 600 ms.
    let cluster_toml = std::fs::read_to_string(&c.cluster_toml).expect("cluster.toml");
    let too_far = cluster_toml
        .replace("heartbeat_interval_ms = 50", "heartbeat_interval_ms = 400")
        .replace("failure_timeout_ms = 600", "failure_timeout_ms = 1000");
    assert_ne!(too_far, cluster_toml);
    std::fs::write(&c.cluster_toml, &too_far).expect("write cluster.toml");
    let check = config_check(&c.cluster_toml, &node1);
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(
        out.contains(
            "#   timing.heartbeat_interval_ms: 50 -> 400    refused by a reload: timing.heartbeat_interval_ms \
             = 400: at most half the running failure_timeout_ms in one step"
        ),
        "{out}"
    );
    manager.drain();
    signal(pid, "HUP");
    let done = manager
        .wait_for("READY=1 after the refused reload", Duration::from_secs(10), |d| has_line(d, "READY=1"));
    let summary = status_of(&done).unwrap_or_default().to_string();
    assert!(
        summary.contains("refused timing.heartbeat_interval_ms, timing.failure_timeout_ms (timing.heartbeat_interval_ms = 400"),
        "{summary}"
    );
    let st = c.status(1).expect("status");
    assert_eq!(
        st["timing"]["heartbeat_interval_ms"],
        serde_json::json!(50),
        "a refused step was applied: {st}"
    );
    std::fs::write(&c.cluster_toml, &cluster_toml).expect("write cluster.toml");

    // `config check` now differs from the running agent only in the key that needs a restart.
    let check = config_check(&c.cluster_toml, &node1);
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(out.contains(&format!("# the running agent (pid {pid}) differs in 1 key;")), "{out}");
    assert!(out.contains("#   merge.policy: \"fence\" -> \"restart\"    needs a restart"), "{out}");

    assert!(c.stop(1, Duration::from_secs(10)), "node 1 did not exit cleanly");
    let running = c.nodes[0].socket.with_file_name("running-config.toml");
    assert!(!running.exists(), "{} is left after a clean exit", running.display());
    c.stop(2, Duration::from_secs(10));
}
