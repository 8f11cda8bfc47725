//! FencingActor against real processes: shell-script agents written to a temporary directory, and the
//! `cohort-fence-test` agent of the test bed. A probe actor records every `FenceCompleted`; tests wait
//! for events with deadlines, never for fixed times.

#[path = "support/paused.rs"]
mod paused;
use paused::ManualClock;

use actix::prelude::*;
use cohort::{Epoch, Member, NodeId};
use cohort_actors::fencing::{FencingActor, NO_LEVELS_DETAIL};
use cohort_actors::messages::{Fence, FenceCompleted, ReplaceFenceLevels};
use cohort_actors::metrics::Metrics;
use cohort_actors::settings::{FenceAgent, FenceLevel};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const FENCE_TEST: &str = env!("CARGO_BIN_EXE_cohort-fence-test");

#[path = "support/scratch.rs"]
mod scratch;
use scratch::Scratch;

impl Scratch {
    /// Writes an executable `#!/bin/sh` script.
    fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.0.join(name);
        let mut f = std::fs::File::create(&path).expect("create script");
        f.write_all(format!("#!/bin/sh\n{body}\n").as_bytes()).expect("write script");
        f.sync_all().expect("sync script");
        drop(f);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod script");
        path
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.0.join(name)).unwrap_or_default()
    }
}

/// A child process killed and reaped on drop.
struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Records what the fencing actor reports.
struct Probe(mpsc::UnboundedSender<FenceCompleted>);

impl Actor for Probe {
    type Context = Context<Self>;
}

impl Handler<FenceCompleted> for Probe {
    type Result = ();
    fn handle(&mut self, msg: FenceCompleted, _ctx: &mut Self::Context) {
        let _ = self.0.send(msg);
    }
}

struct Harness {
    fencing: Addr<FencingActor>,
    reports: mpsc::UnboundedReceiver<FenceCompleted>,
    metrics: Arc<Metrics>,
}

impl Harness {
    fn start(levels: Vec<FenceLevel>) -> Self {
        let (tx, reports) = mpsc::unbounded_channel();
        let probe = Probe(tx).start();
        let metrics = Arc::new(Metrics::default());
        let fencing = FencingActor::new(levels, probe.recipient(), metrics.clone()).start();
        Harness { fencing, reports, metrics }
    }

    fn fence(&self, target: Member) {
        self.fencing.do_send(Fence { target, reason: "failed".into() });
    }

    async fn next(&mut self, within: Duration) -> FenceCompleted {
        tokio::time::timeout(within, self.reports.recv())
            .await
            .expect("a FenceCompleted within the deadline")
            .expect("probe alive")
    }
}

fn member(node: u32, epoch: u64) -> Member {
    Member(NodeId(node), Epoch(epoch))
}

fn agent(name: &str, command: &Path, timeout_ms: u64, retries: u32) -> FenceAgent {
    FenceAgent {
        name: name.into(),
        command: command.to_path_buf(),
        args: vec![],
        stdin: BTreeMap::new(),
        env: BTreeMap::new(),
        action: "off".into(),
        plugs: BTreeMap::new(),
        timeout_ms,
        retries,
    }
}

fn level(agents: Vec<FenceAgent>) -> FenceLevel {
    FenceLevel { agents }
}

/// True while `/proc/PID` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let state = stat.rfind(')').and_then(|i| stat[i + 1..].trim_start().chars().next());
    !matches!(state, None | Some('Z') | Some('X'))
}

/// Polls `cond` until it holds or the deadline passes.
async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

const DEADLINE: Duration = Duration::from_secs(10);

#[actix_rt::test]
async fn successful_agent_is_reported_with_its_level_and_name() {
    let dir = Scratch::new("success");
    let s = dir.script("ok.sh", "echo \"powered off $1\" >&2\nexit 0");
    let mut a = agent("ipmi", &s, 5_000, 0);
    a.args = vec!["{node}".into()];
    let mut h = Harness::start(vec![level(vec![a])]);
    h.fence(member(3, 7));
    let r = h.next(DEADLINE).await;
    assert_eq!(r.target, member(3, 7));
    assert!(r.ok, "{}", r.detail);
    assert_eq!(r.detail, "level 1 ipmi: ok: powered off 3");
    assert_eq!(h.metrics.fence_agent_requests.load(Relaxed), 1);
    assert_eq!(h.metrics.fence_agent_ok.load(Relaxed), 1);
    assert_eq!(h.metrics.fence_agent_failed.load(Relaxed), 0);
}

#[actix_rt::test]
async fn failed_agent_is_retried_until_it_succeeds() {
    let dir = Scratch::new("retry");
    let count = dir.path().join("count");
    let s = dir.script(
        "flaky.sh",
        &format!(
            "n=$(cat '{c}' 2>/dev/null || echo 0)\nn=$((n+1))\necho $n > '{c}'\n\
             if [ $n -lt 2 ]; then echo 'device busy' >&2; exit 1; fi\necho 'off now' >&2",
            c = count.display()
        ),
    );
    let mut h = Harness::start(vec![level(vec![agent("ipmi", &s, 5_000, 2)])]);
    h.fence(member(2, 1));
    let r = h.next(DEADLINE).await;
    assert!(r.ok, "{}", r.detail);
    assert_eq!(r.detail, "level 1 ipmi: ok: off now");
    assert_eq!(dir.read("count").trim(), "2", "one failure, one success, no third run");
}

#[actix_rt::test]
async fn agent_failing_every_attempt_reports_exit_status_stderr_and_attempts() {
    let dir = Scratch::new("exhaust");
    let runs = dir.path().join("runs");
    let s = dir
        .script("bad.sh", &format!("echo run >> '{}'\necho 'ipmi unreachable' >&2\nexit 3", runs.display()));
    let mut h = Harness::start(vec![level(vec![agent("ipmi", &s, 5_000, 2)])]);
    h.fence(member(2, 1));
    let r = h.next(DEADLINE).await;
    assert!(!r.ok);
    assert_eq!(r.detail, "level 1 ipmi: exit 3: ipmi unreachable (3 attempts)");
    assert_eq!(dir.read("runs").lines().count(), 3);
    assert_eq!(h.metrics.fence_agent_failed.load(Relaxed), 1);
}

#[actix_rt::test]
async fn timeout_kills_a_hanging_agent_and_its_children() {
    let dir = Scratch::new("timeout");
    let s = dir.script(
        "hang.sh",
        &format!(
            "echo $$ > '{d}/agent.pid'\nsleep 60 &\necho $! > '{d}/child.pid'\nwait",
            d = dir.path().display()
        ),
    );
    let timeout_ms = 500;
    let mut h = Harness::start(vec![level(vec![agent("pdu", &s, timeout_ms, 0)])]);
    let start = Instant::now();
    h.fence(member(4, 2));
    let r = h.next(DEADLINE).await;
    let elapsed = start.elapsed();
    assert!(!r.ok);
    assert_eq!(r.detail, "level 1 pdu: timed out after 500 ms");
    // Never before the timeout (the exact timing is checked on a paused clock below).
    assert!(elapsed >= Duration::from_millis(timeout_ms), "reported after {elapsed:?}");
    let agent_pid: u32 = dir.read("agent.pid").trim().parse().expect("agent wrote its pid");
    let child_pid: u32 = dir.read("child.pid").trim().parse().expect("agent wrote its child's pid");
    // The agent is reaped before the report; its `sleep` child was killed with the process group and
    // is reaped by init, which may take a moment.
    assert!(!alive(agent_pid), "the timed-out agent {agent_pid} still runs");
    assert!(
        eventually(Duration::from_secs(5), || !alive(child_pid)).await,
        "the agent's child {child_pid} still runs"
    );
    assert_eq!(h.metrics.fence_agent_failed.load(Relaxed), 1);
}

#[actix_rt::test]
async fn level_one_failing_falls_back_to_level_two() {
    let dir = Scratch::new("levels");
    let bad = dir.script("ipmi.sh", "echo 'ipmi: no route to host' >&2\nexit 1");
    let good = dir.script("pdu.sh", "echo 'outlet 7 off'");
    let mut h = Harness::start(vec![
        level(vec![agent("ipmi", &bad, 5_000, 0)]),
        level(vec![agent("pdu", &good, 5_000, 0)]),
    ]);
    h.fence(member(5, 9));
    let r = h.next(DEADLINE).await;
    assert!(r.ok, "{}", r.detail);
    assert_eq!(
        r.detail,
        "level 2 pdu: ok: outlet 7 off (after level 1 ipmi: exit 1: ipmi: no route to host)"
    );
}

#[actix_rt::test]
async fn every_failure_is_listed_when_all_levels_fail() {
    let dir = Scratch::new("allfail");
    let bad = dir.script("ipmi.sh", "echo 'bad password' >&2\nexit 1");
    let hang = dir.script("pdu.sh", "exec sleep 60");
    let mut h = Harness::start(vec![
        level(vec![agent("ipmi", &bad, 5_000, 0)]),
        level(vec![agent("pdu", &hang, 300, 0)]),
    ]);
    h.fence(member(5, 9));
    let r = h.next(DEADLINE).await;
    assert!(!r.ok);
    assert_eq!(r.detail, "level 1 ipmi: exit 1: bad password; level 2 pdu: timed out after 300 ms");
}

#[actix_rt::test]
async fn a_level_needs_every_agent_to_succeed() {
    let dir = Scratch::new("allagents");
    let good = dir.script("psu-a.sh", "echo 'psu a off'");
    let bad = dir.script("psu-b.sh", "echo 'psu b stuck' >&2\nexit 1");
    let mut h =
        Harness::start(vec![level(vec![agent("psu-a", &good, 5_000, 0), agent("psu-b", &bad, 5_000, 0)])]);
    h.fence(member(1, 1));
    let r = h.next(DEADLINE).await;
    assert!(!r.ok);
    assert_eq!(r.detail, "level 1 psu-b: exit 1: psu b stuck");

    let good_b = dir.script("psu-b2.sh", "echo 'psu b off'");
    let mut h =
        Harness::start(vec![level(vec![agent("psu-a", &good, 5_000, 0), agent("psu-b", &good_b, 5_000, 0)])]);
    h.fence(member(1, 1));
    let r = h.next(DEADLINE).await;
    assert!(r.ok);
    assert_eq!(r.detail, "level 1 psu-a, psu-b: ok: psu a off / psu b off");
}

#[actix_rt::test]
async fn stdin_options_and_environment_reach_the_agent() {
    let dir = Scratch::new("stdin");
    let s = dir.script("cat.sh", "cat > \"$OUT_DIR/stdin.txt\"");
    let mut a = agent("pdu", &s, 5_000, 0);
    a.stdin = [("action", "{action}"), ("plug", "{plug}"), ("nodename", "node{node}"), ("login", "admin")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    a.plugs = [("3".to_string(), "port-7".to_string())].into_iter().collect();
    a.env = [("OUT_DIR".to_string(), dir.path().display().to_string())].into_iter().collect();
    let mut h = Harness::start(vec![level(vec![a])]);
    h.fence(member(3, 4));
    let r = h.next(DEADLINE).await;
    assert!(r.ok, "{}", r.detail);
    let got = dir.read("stdin.txt");
    assert!(got.contains("action=off\n"), "{got:?}");
    assert!(got.contains("plug=port-7\n"), "{got:?}");
    assert_eq!(got, "action=off\nlogin=admin\nnodename=node3\nplug=port-7\n");
}

#[actix_rt::test]
async fn arguments_are_substituted() {
    let dir = Scratch::new("args");
    let s = dir.script("args.sh", &format!("echo \"$@\" > '{}/args.txt'", dir.path().display()));
    let mut a = agent("ipmi", &s, 5_000, 0);
    a.action = "reboot".into();
    a.args = ["--plug={plug}", "-n", "{node}", "--epoch", "{epoch}", "-o", "{action}", "{other}"]
        .into_iter()
        .map(String::from)
        .collect();
    let mut h = Harness::start(vec![level(vec![a])]);
    h.fence(member(3, 7));
    let r = h.next(DEADLINE).await;
    assert!(r.ok, "{}", r.detail);
    assert_eq!(dir.read("args.txt"), "--plug=3 -n 3 --epoch 7 -o reboot {other}\n");
}

#[actix_rt::test]
async fn no_levels_reports_failure_with_the_manual_ack_hint() {
    let mut h = Harness::start(vec![]);
    h.fence(member(2, 3));
    let r = h.next(DEADLINE).await;
    assert!(!r.ok);
    assert_eq!(r.detail, NO_LEVELS_DETAIL);
    assert!(r.detail.contains("cohort fence ack NODE"));
    assert_eq!(h.metrics.fence_agent_failed.load(Relaxed), 1);
}

#[actix_rt::test]
async fn missing_program_is_a_failure_not_a_crash() {
    let mut h =
        Harness::start(vec![level(vec![agent("ghost", Path::new("/nonexistent/fence_ghost"), 1_000, 1)])]);
    h.fence(member(2, 3));
    let r = h.next(DEADLINE).await;
    assert!(!r.ok);
    assert!(
        r.detail.starts_with("level 1 ghost: could not start /nonexistent/fence_ghost: "),
        "{}",
        r.detail
    );
    assert!(r.detail.ends_with("(2 attempts)"), "{}", r.detail);
}

#[actix_rt::test]
async fn targets_are_fenced_concurrently_and_a_duplicate_runs_once() {
    let dir = Scratch::new("concurrent");
    let d = dir.path().display().to_string();
    // Each run records itself, then waits until the test releases it.
    let s = dir.script(
        "gate.sh",
        &format!("echo \"$1\" >> '{d}/runs'\nwhile [ ! -f '{d}/release' ]; do sleep 0.01; done\necho \"fenced $1\" >&2"),
    );
    let mut a = agent("gate", &s, 10_000, 0);
    a.args = vec!["{node}".into()];
    let mut h = Harness::start(vec![level(vec![a])]);
    h.fence(member(1, 1));
    h.fence(member(2, 1));
    h.fence(member(1, 1));
    // Both targets run at the same time: both are inside the agent before either is released.
    let both = eventually(DEADLINE, || dir.read("runs").lines().count() >= 2).await;
    assert!(both, "runs: {:?}", dir.read("runs"));
    h.fence(member(1, 1));
    std::fs::write(dir.path().join("release"), b"").expect("release");
    let mut done = [h.next(DEADLINE).await, h.next(DEADLINE).await];
    done.sort_by_key(|r| r.target);
    assert_eq!(
        done.iter().map(|r| (r.target, r.ok)).collect::<Vec<_>>(),
        vec![(member(1, 1), true), (member(2, 1), true)]
    );
    // A later request for another node is reported next: the duplicates of node 1 produced nothing.
    h.fence(member(3, 1));
    let r = h.next(DEADLINE).await;
    assert_eq!(r.target, member(3, 1));
    assert!(h.reports.try_recv().is_err(), "no further reports");
    let mut runs: Vec<String> = dir.read("runs").lines().map(String::from).collect();
    runs.sort();
    assert_eq!(runs, vec!["1", "2", "3"]);
    assert_eq!(h.metrics.fence_agent_requests.load(Relaxed), 3);
    // Once a request has been reported, the same member can be fenced again.
    h.fence(member(1, 1));
    assert!(h.next(DEADLINE).await.ok);
}

// --------------------------------------------------------------------------------------------------
// Timeouts and retries on a paused clock
// --------------------------------------------------------------------------------------------------

/// Waits on the real clock (the tokio clock is frozen) until `cond` holds or `within` passed, letting
/// the actors and the IO driver run in between.
/// The next fence report, waited for in real time (up to `DEADLINE`) while the paused clock stands.
async fn real_wait_report(h: &mut Harness) -> Option<FenceCompleted> {
    let mut report = None;
    real_wait(DEADLINE, || {
        report = report.take().or_else(|| h.reports.try_recv().ok());
        report.is_some()
    })
    .await;
    report
}

async fn real_wait(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// An agent run by `/bin/sh -c SCRIPT` (no script file, so no "text file busy" while other tests write
/// theirs).
fn sh_agent(name: &str, script: &str, timeout_ms: u64, retries: u32) -> FenceAgent {
    let mut a = agent(name, Path::new("/bin/sh"), timeout_ms, retries);
    a.args = vec!["-c".into(), script.into()];
    a
}

#[actix_rt::test]
async fn on_a_paused_clock_an_agent_is_killed_at_its_timeout_not_before_retried_then_level_two_runs() {
    let _clock = ManualClock::start();
    let dir = Scratch::new("paused");
    let runs = dir.path().join("runs");
    // Each attempt records its pid and then hangs (`exec` keeps the pid: it is the process group).
    let hang = sh_agent("ipmi", &format!("echo $$ >> '{}'; exec sleep 600", runs.display()), 30_000, 1);
    let good = sh_agent("pdu", "echo 'outlet 7 off' >&2", 30_000, 0);
    let mut h = Harness::start(vec![level(vec![hang]), level(vec![good])]);
    let pids = || -> Vec<u32> { dir.read("runs").lines().filter_map(|l| l.trim().parse().ok()).collect() };
    let t0 = tokio::time::Instant::now();
    h.fence(member(6, 1));

    assert!(real_wait(DEADLINE, || pids().len() == 1).await, "the first attempt did not start");
    let first = pids()[0];
    // A millisecond before its timeout the agent still runs and nothing is reported.
    tokio::time::advance(Duration::from_millis(29_999)).await;
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert!(alive(first), "killed before its timeout");
    assert!(h.reports.try_recv().is_err(), "reported before the timeout");
    assert_eq!(pids().len(), 1, "retried before the timeout");

    // At the timeout it is killed (and reaped) and the retry starts at once. (Tokio rounds a timer's
    // deadline up to the next millisecond, so the timeout fires within a millisecond after 30 s.)
    tokio::time::advance(Duration::from_millis(2)).await;
    assert!(real_wait(DEADLINE, || pids().len() == 2).await, "the retry did not start");
    assert!(!alive(first), "the timed-out attempt {first} still runs");
    let second = pids()[1];
    assert!(h.reports.try_recv().is_err(), "reported before the retry timed out");

    // The retry times out too; level 2 runs and succeeds.
    tokio::time::advance(Duration::from_millis(30_001)).await;
    let r = real_wait_report(&mut h).await.expect("no report");
    assert!(!alive(second), "the second attempt {second} still runs");
    assert!(r.ok, "{}", r.detail);
    assert_eq!(
        r.detail,
        "level 2 pdu: ok: outlet 7 off (after level 1 ipmi: timed out after 30000 ms (2 attempts))"
    );
    assert_eq!(t0.elapsed(), Duration::from_millis(60_002), "two timeouts of virtual time passed, no more");
    assert_eq!(pids().len(), 2, "no third attempt");
    assert_eq!(h.metrics.fence_agent_ok.load(Relaxed), 1);
}

#[actix_rt::test]
async fn on_a_paused_clock_failed_attempts_and_levels_follow_each_other_without_waiting() {
    let _clock = ManualClock::start();
    let dir = Scratch::new("paused-fast");
    let runs = dir.path().join("runs");
    let bad =
        sh_agent("ipmi", &format!("echo x >> '{}'; echo 'no route' >&2; exit 1", runs.display()), 30_000, 2);
    let good = sh_agent("pdu", "echo 'outlet 7 off' >&2", 30_000, 0);
    let mut h = Harness::start(vec![level(vec![bad]), level(vec![good])]);
    let t0 = tokio::time::Instant::now();
    h.fence(member(7, 3));
    let r = real_wait_report(&mut h).await.expect("no report while the clock stood still");
    assert_eq!(r.detail, "level 2 pdu: ok: outlet 7 off (after level 1 ipmi: exit 1: no route (3 attempts))");
    assert_eq!(dir.read("runs").lines().count(), 3, "three attempts of level 1");
    assert_eq!(t0.elapsed(), Duration::ZERO, "no timer is involved when agents fail fast");
}

// --------------------------------------------------------------------------------------------------
// The test bed's agent: cohort-fence-test
// --------------------------------------------------------------------------------------------------

fn spawn_sleep(dir: &Scratch, node: u32) -> Proc {
    let child = Command::new("sleep").arg("30").stdin(Stdio::null()).spawn().expect("spawn sleep");
    std::fs::write(dir.path().join(format!("node{node}.pid")), format!("{}\n", child.id()))
        .expect("pid file");
    Proc(child)
}

/// Runs the agent with `args` and `stdin`, returning (exit code, stderr).
fn run_fence_test(args: &[&str], stdin: &str) -> (Option<i32>, String) {
    let mut child = Command::new(FENCE_TEST)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cohort-fence-test");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    let out = child.wait_with_output().expect("wait cohort-fence-test");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Waits up to `within` for the process to exit and returns how it ended.
fn exit_of(p: &mut Proc, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(status)) = p.0.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn fence_test_agent_off_kills_the_node_process() {
    let dir = Scratch::new("bin-off");
    let mut node = spawn_sleep(&dir, 3);
    let stdin = format!("pidfile_dir={}\n", dir.path().display());
    let (code, stderr) = run_fence_test(&["-o", "off", "-n", "3"], &stdin);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("off node 3: sent SIGKILL"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    let status = exit_of(&mut node, Duration::from_secs(5)).expect("the node process is gone");
    assert_eq!(status.signal(), Some(9));
}

#[test]
fn fence_test_agent_reads_every_option_from_stdin() {
    let dir = Scratch::new("bin-stdin");
    let mut node = spawn_sleep(&dir, 4);
    let stdin = format!(
        "# from the FencingActor\naction=off\nport=4\npidfile_dir={}\nnodename=x\n",
        dir.path().display()
    );
    let (code, stderr) = run_fence_test(&[], &stdin);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(exit_of(&mut node, Duration::from_secs(5)).and_then(|s| s.signal()), Some(9));
}

#[test]
fn fence_test_agent_stop_status_and_on() {
    let dir = Scratch::new("bin-stop");
    let node = spawn_sleep(&dir, 2);
    let pid = node.0.id();
    let d = dir.path().display().to_string();
    let (code, stderr) = run_fence_test(&["-o", "status", "-n", "2", "-d", &d], "");
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = run_fence_test(&["-o", "stop", "-n", "2", "-d", &d], "");
    assert_eq!(code, Some(0), "{stderr}");
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(state.contains(") T "), "stopped: {state}");
    let (code, stderr) = run_fence_test(&["-o", "on", "-n", "2", "-d", &d], "");
    assert_eq!(code, Some(0), "{stderr}");
    drop(node);
    let (code, stderr) = run_fence_test(&["-o", "status", "-n", "2", "-d", &d], "");
    assert_eq!(code, Some(2), "status of a node that is off: {stderr}");
}

#[test]
fn fence_test_agent_fails_on_purpose_with_fence_fail() {
    let dir = Scratch::new("bin-fail");
    let mut node = spawn_sleep(&dir, 3);
    std::fs::write(dir.path().join("fence-fail"), b"").expect("fence-fail");
    let stdin = format!("pidfile_dir={}\n", dir.path().display());
    let (code, stderr) = run_fence_test(&["-o", "off", "-n", "3"], &stdin);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("fence-fail"), "{stderr}");
    assert!(exit_of(&mut node, Duration::ZERO).is_none(), "the node was left alone");
}

#[test]
fn fence_test_agent_refuses_bad_input() {
    let dir = Scratch::new("bin-bad");
    let d = dir.path().display().to_string();
    std::fs::write(dir.path().join("node5.pid"), b"1\n").expect("pid file");
    let (code, stderr) = run_fence_test(&["-o", "off", "-n", "5", "-d", &d], "");
    assert_eq!(code, Some(1));
    assert!(stderr.contains("not a process id"), "{stderr}");
    let (code, stderr) = run_fence_test(&["-o", "off", "-n", "6", "-d", &d], "");
    assert_eq!(code, Some(1));
    assert!(stderr.contains("cannot read pid file"), "{stderr}");
    let (code, stderr) = run_fence_test(&["--bogus"], "");
    assert_eq!(code, Some(1));
    assert!(stderr.contains("unknown option `--bogus`"), "{stderr}");
    let out = Command::new(FENCE_TEST).arg("--help").stdin(Stdio::null()).output().expect("help");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("test bed and demo (NOT for production)"));
}

fn fence_test_agent_config(dir: &Scratch, timeout_ms: u64, retries: u32) -> FenceAgent {
    let mut a = agent("testbed", Path::new(FENCE_TEST), timeout_ms, retries);
    a.args = ["-o", "{action}", "-n", "{plug}"].into_iter().map(String::from).collect();
    a.stdin = [("pidfile_dir".to_string(), dir.path().display().to_string())].into_iter().collect();
    a
}

#[actix_rt::test]
async fn fencing_actor_fences_with_the_test_bed_agent() {
    let dir = Scratch::new("bin-actor");
    let mut node = spawn_sleep(&dir, 3);
    std::fs::write(dir.path().join("fence-fail-once"), b"").expect("fence-fail-once");
    let mut h = Harness::start(vec![level(vec![fence_test_agent_config(&dir, 5_000, 1)])]);
    h.fence(member(3, 2));
    let r = h.next(DEADLINE).await;
    assert!(r.ok, "{}", r.detail);
    assert!(
        r.detail.starts_with("level 1 testbed: ok: cohort-fence-test: off node 3: sent SIGKILL"),
        "{}",
        r.detail
    );
    assert_eq!(exit_of(&mut node, Duration::from_secs(5)).and_then(|s| s.signal()), Some(9));
}

#[actix_rt::test]
async fn fencing_actor_times_out_a_hanging_test_bed_agent() {
    let dir = Scratch::new("bin-hang");
    let mut node = spawn_sleep(&dir, 3);
    std::fs::write(dir.path().join("fence-hang"), b"").expect("fence-hang");
    let mut h = Harness::start(vec![level(vec![fence_test_agent_config(&dir, 400, 0)])]);
    let start = Instant::now();
    h.fence(member(3, 2));
    let r = h.next(DEADLINE).await;
    assert!(!r.ok);
    assert_eq!(r.detail, "level 1 testbed: timed out after 400 ms");
    assert!(start.elapsed() < Duration::from_millis(400 + 2_000), "reported after {:?}", start.elapsed());
    assert!(exit_of(&mut node, Duration::ZERO).is_none(), "the node was not fenced");
}

#[actix_rt::test]
async fn replaced_levels_apply_to_the_next_request_and_a_running_one_keeps_its_own() {
    let dir = Scratch::new("replace");
    let gate = dir.path().join("gate");
    // The first request takes the levels when its Fence is handled, which is before the replacement
    // (one mailbox, in order); its agent waits for the gate file, so the request is still in flight
    // while the levels are replaced.
    let old =
        dir.script("old.sh", &format!("while [ ! -e '{}' ]; do sleep 0.01; done\nexit 0", gate.display()));
    let new = dir.script("new.sh", "exit 0");
    let mut h = Harness::start(vec![level(vec![agent("old", &old, 20_000, 0)])]);
    h.fence(member(2, 1));
    h.fencing.do_send(ReplaceFenceLevels { levels: vec![level(vec![agent("new", &new, 5_000, 0)])] });
    std::fs::write(&gate, b"").expect("open the gate");
    let first = h.next(DEADLINE).await;
    assert_eq!((first.target, first.ok, first.detail.as_str()), (member(2, 1), true, "level 1 old: ok"));
    h.fence(member(3, 1));
    let second = h.next(DEADLINE).await;
    assert_eq!((second.target, second.ok, second.detail.as_str()), (member(3, 1), true, "level 1 new: ok"));
}
