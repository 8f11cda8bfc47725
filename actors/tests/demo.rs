//! `cohort demo` end to end: the real binary, each merge policy, plain output. Each run must end with a
//! passing `cohort verify` verdict, tell every milestone of the story, and leave nothing behind (its
//! temporary directory removed, its agents gone).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const COHORT: &str = env!("CARGO_BIN_EXE_cohort");

/// One demo at a time: each starts five agents, and the machine has two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs the demo with `args`; kills it (by PID) if it has not ended within `deadline`.
fn run_demo(args: &[&str], deadline: Duration) -> (bool, String) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut child = Command::new(COHORT)
        .arg("demo")
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cohort demo");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let end = Instant::now() + deadline;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break Some(st);
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let out = reader.join().unwrap_or_default();
    let text = format!("{out}\n--- stderr ---\n{err}");
    (status.is_some_and(|s| s.success()), text)
}

/// The directory the demo announced in its first line.
fn demo_dir(out: &str) -> Option<PathBuf> {
    let start = out.find(" in /")? + 4;
    let rest = &out[start..];
    Some(PathBuf::from(&rest[..rest.find(',')?]))
}

fn check_story(policy: &str, extra: &[&str]) {
    let (ok, out) =
        run_demo(&["--policy", policy, "--speed", "0", "--color", "never"], Duration::from_secs(150));
    println!("{out}");
    assert!(ok, "cohort demo --policy {policy} failed:\n{out}");
    assert!(!out.contains('\x1b'), "plain output has escape codes");
    let milestones = [
        "== 1. the cluster forms: 5 agents",
        "cluster formed: one primary view of 5 members",
        "alice acquired `printer` (exclusive) as member (1, 1)",
        "carol waits for `printer`",
        "== 2. partition [1, 2] | [3, 4, 5]",
        "the majority [3, 4, 5] formed a primary view without the minority",
        "fenced (1, 1) by agent",
        "recovered (1, 1)",
        "`printer` of alice@(1, 1) released: its member was fenced and recovered",
        "carol acquired `printer`",
        "a view change alone released nothing",
        "== 3. the fenced nodes were only stopped",
        "STATEFUL MERGE: (1, 1) came back with its old epoch",
        "STATEFUL MERGE: (2, 1) came back with its old epoch",
        "== 4. the stale members come back",
        "is back as member (1, 2) (was (1, 1))",
        "is back as member (2, 2) (was (2, 1))",
        "one primary view of all 5 again",
        "lock table received by state transfer",
        "all 5 lock services hold the same table",
        "alice acquired `printer` (exclusive) as member (1, 2)",
        "== 5. every agent stops",
        "$ cohort verify",
        "verdict: OK",
    ];
    for m in milestones.iter().chain(extra) {
        assert!(out.contains(m), "policy {policy}: the output lacks `{m}`:\n{out}");
    }
    // The order of the story.
    let pos = |s: &str| out.find(s).unwrap_or(usize::MAX);
    assert!(
        pos("recovered (1, 1)") < pos("carol acquired `printer`"),
        "the grant came before recovery:\n{out}"
    );
    assert!(pos("STATEFUL MERGE") < pos("is back as member (1, 2)"));
    // The last act is clean stops only (L6): no stateful merge, no fence, no recovery, every agent
    // exits on SIGTERM.
    let last_act = &out[pos("== 5. every agent stops")..pos("$ cohort verify")];
    for bad in ["STATEFUL MERGE", "fence", "recovered", "not every agent exited cleanly"] {
        assert!(!last_act.contains(bad), "policy {policy}: the last act shows `{bad}`:\n{last_act}");
    }
    let dir = demo_dir(&out).expect("the demo names its directory");
    assert!(!dir.exists(), "the demo left {} behind", dir.display());
}

#[test]
fn demo_with_the_fence_policy_tells_the_whole_story_and_passes_verify() {
    check_story("fence", &["action fence", "fenced again; the demo power-cycles it"]);
}

#[test]
fn demo_with_the_restart_policy_tells_the_whole_story_and_passes_verify() {
    // Which member hears a zombie first is timing: the leader logs `action kill` only when it heard
    // the zombie before another member told it to restart; either way the zombie restarts.
    check_story("restart", &["learned it was removed from the primary view"]);
}

#[test]
fn demo_with_the_reset_policy_tells_the_whole_story_and_passes_verify() {
    // As with `restart`: the leader logs `action kill` only when it heard the zombie first.
    check_story("reset", &["learned it was removed from the primary view"]);
}

#[test]
fn demo_with_the_wait_policy_has_the_operator_acknowledge_and_passes_verify() {
    check_story(
        "wait",
        &["action wait", "blocked: stateful_merge_wait", "$ cohort fence ack 1", "fenced (1, 1) by ack"],
    );
}

#[test]
fn demo_refuses_a_bad_node_count_with_one_line() {
    let out = Command::new(COHORT).args(["demo", "--nodes", "2"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim(), "error: --nodes 2: expected 3 to 9");
}
