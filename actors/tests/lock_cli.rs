//! The lock service through its command-line front: `cohort lock serve` daemons beside real agents on
//! loopback, driven only with `cohort lock acquire|release|holders|status` and `cohort fence ack`.
//!
//! The cluster has no fence device, so a failed node is fenced only by an operator's acknowledgement:
//! that makes "a failed member's locks are released only after `recovered`, never on the view change"
//! directly observable.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{cohort_bin, Cluster, Timing};

/// Lock daemons, killed by PID when dropped (also when the test fails).
struct Daemons(Vec<(u32, Child)>);

impl Drop for Daemons {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Daemons {
    fn kill(&mut self, node: u32) {
        if let Some(i) = self.0.iter().position(|(n, _)| *n == node) {
            let (_, mut c) = self.0.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn serve(c: &Cluster, node: u32) -> Child {
    let socket = &c.nodes[node as usize - 1].socket;
    let stderr = std::fs::File::create(c.dir.join(format!("lock{node}.stderr"))).expect("stderr file");
    Command::new(cohort_bin())
        .args(["lock", "serve", "--socket"])
        .arg(socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr))
        .spawn()
        .expect("spawn cohort lock serve")
}

fn lock_cmd(socket: &Path, args: &[&str]) -> Output {
    Command::new(cohort_bin())
        .arg("lock")
        .args(args)
        .arg("--socket")
        .arg(socket)
        .output()
        .expect("run cohort lock")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn socket(c: &Cluster, node: u32) -> PathBuf {
    c.nodes[node as usize - 1].socket.clone()
}

/// Waits until `cohort lock status` on `node` says the service is active.
fn wait_active(c: &Cluster, node: u32) {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let o = lock_cmd(&socket(c, node), &["status"]);
        if o.status.success() && text(&o).contains("state: active") {
            return;
        }
        assert!(Instant::now() < end, "the lock daemon of node {node} did not become active: {}", text(&o));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn locks_move_between_nodes_and_a_failed_holders_lock_waits_for_recovery() {
    let mut c = Cluster::new(3, Timing::FAST);
    c.start_all();
    c.wait_for_view(&[1, 2, 3], Duration::from_secs(20));
    let mut d = Daemons(Vec::new());
    for id in 1..=3 {
        let child = serve(&c, id);
        d.0.push((id, child));
    }
    for id in 1..=3 {
        wait_active(&c, id);
    }

    // alice on node 1 takes the printer; node 3 sees her as the holder.
    let o = lock_cmd(&socket(&c, 1), &["acquire", "printer", "--owner", "alice"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("acquired printer (exclusive) for alice"), "{}", text(&o));
    // Node 3 applies the grant when its agent delivers it, a moment after node 1 may.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let o = lock_cmd(&socket(&c, 3), &["holders", "printer"]);
        if text(&o).contains("printer: held by [alice@(") {
            break;
        }
        assert!(Instant::now() < end, "node 3 never saw alice's lock: {}", text(&o));
        std::thread::sleep(Duration::from_millis(20));
    }

    // bob on node 2 cannot have it while alice holds it: his wait times out with exit code 1.
    let o = lock_cmd(&socket(&c, 2), &["acquire", "printer", "--owner", "bob", "--timeout-ms", "400"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("timed out waiting for the lock"), "{}", text(&o));
    // Shared holders share.
    for (node, owner) in [(2, "r1"), (3, "r2")] {
        let o = lock_cmd(&socket(&c, node), &["acquire", "ledger", "--owner", owner, "--shared"]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let o = lock_cmd(&socket(&c, 1), &["holders", "--json"]);
        let v: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).expect("json");
        let ledger = v["locks"].as_array().and_then(|ls| ls.iter().find(|l| l["lock"] == "ledger")).cloned();
        if ledger.map(|l| l["holders"].as_array().map_or(0, Vec::len)) == Some(2) {
            break;
        }
        assert!(Instant::now() < end, "node 1 never saw two shared holders of the ledger: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }

    // alice releases; bob gets it.
    let o = lock_cmd(&socket(&c, 1), &["release", "printer", "--owner", "alice"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = lock_cmd(&socket(&c, 1), &["release", "printer", "--owner", "alice"]);
    assert_eq!(o.status.code(), Some(1), "a second release must fail: {}", text(&o));
    let o = lock_cmd(&socket(&c, 2), &["acquire", "printer", "--owner", "bob"]);
    assert!(o.status.success(), "{}", text(&o));

    // Node 2 fails (agent and lock daemon, kill -9). The view shrinks, but with no fence device the
    // failed member is not fenced, so bob's lock stays held: carol's wait times out.
    d.kill(2);
    c.kill9(2);
    c.wait_for_view(&[1, 3], Duration::from_secs(10));
    let o = lock_cmd(&socket(&c, 1), &["acquire", "printer", "--owner", "carol", "--timeout-ms", "1500"]);
    assert_eq!(o.status.code(), Some(1), "the lock moved on a view change alone: {}", text(&o));
    let o = lock_cmd(&socket(&c, 3), &["holders", "printer"]);
    assert!(text(&o).contains("bob@("), "bob's hold vanished before recovery: {}", text(&o));

    // The operator confirms node 2 is down: cohort fences by acknowledgement, announces `recovered`,
    // and the lock service releases bob's locks; carol gets the printer.
    let ack = Command::new(cohort_bin())
        .args(["fence", "ack", "2", "--operator-socket"])
        .arg(&c.nodes[0].operator_socket)
        .output()
        .expect("cohort fence ack");
    assert!(ack.status.success(), "{}", text(&ack));
    let o = lock_cmd(&socket(&c, 1), &["acquire", "printer", "--owner", "carol", "--timeout-ms", "10000"]);
    assert!(o.status.success(), "carol did not get the printer after recovery: {}", text(&o));
    // Node 1 applied the expiry before carol's grant (node 3 may apply it a moment later).
    let o = lock_cmd(&socket(&c, 1), &["holders"]);
    assert!(!text(&o).contains("bob@("), "bob's holds survived recovery: {}", text(&o));
    assert!(!text(&o).contains("r1@("), "r1 (node 2) still shares the ledger: {}", text(&o));

    // Node 2 restarts as a new member; its new daemon gets the table by state transfer.
    c.start(2);
    c.wait_for_view(&[1, 2, 3], Duration::from_secs(20));
    d.0.push((2, serve(&c, 2)));
    wait_active(&c, 2);
    let o = lock_cmd(&socket(&c, 2), &["holders", "printer"]);
    assert!(text(&o).contains("printer: held by [carol@("), "{}", text(&o));

    // A clean daemon stop (SIGTERM) releases its holds at once.
    let pid = d.0.iter().find(|(n, _)| *n == 1).map(|(_, c)| c.id()).expect("daemon 1");
    let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let o = lock_cmd(&socket(&c, 3), &["holders", "printer"]);
        if text(&o).contains("no lock is held") || !text(&o).contains("carol@(") {
            break;
        }
        assert!(Instant::now() < end, "carol's lock was not released by the clean stop: {}", text(&o));
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(d);
    c.stop_and_verify();
}

#[test]
fn lock_commands_explain_a_missing_daemon_and_bad_input_in_one_line() {
    let dir = std::env::temp_dir().join(format!("cohort-lock-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let sock = dir.join("cohort.sock");
    let o = lock_cmd(&sock, &["status"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(err.contains("is `cohort lock serve` running?"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let o = Command::new(cohort_bin()).args(["lock", "acquire", "x"]).output().expect("run");
    assert_eq!(o.status.code(), Some(2), "missing --owner is a usage error");
    let o = Command::new(cohort_bin()).args(["lock", "--help"]).output().expect("run");
    assert!(String::from_utf8_lossy(&o.stdout).contains("Examples:"));
    let _ = std::fs::remove_dir_all(&dir);
}
