//! The CPG library as C programs see it: the programs of `tests/c/` are compiled with `cc` against
//! Debian's `<corosync/cpg.h>` (package `libcpg-dev`), linked with this crate's `libcohort_cpg.so`, and
//! run against real `cohort agent` processes on loopback ([`support::Cluster`], which kills every
//! agent it started, by PID, also when a test fails). Member processes are killed by PID on drop too.
//!
//! The agent binary is the workspace's `cohort` of the same profile (`target/<profile>/cohort`, or
//! `$COHORT_BIN`): the workspace's `cargo test` builds it; `cargo test -p cohort-cpg` alone does not,
//! and the tests then fail saying how to build it. A missing C compiler or missing headers fail the
//! tests with the command that installs them; nothing is skipped.
//!
//! Waits are on observable lines with deadlines, never fixed sleeps.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use support::{Cluster, Timing};

const FORM_DEADLINE: Duration = Duration::from_secs(20);
const EVENT_DEADLINE: Duration = Duration::from_secs(20);

/// `target/<profile>`: where cargo put this test's library and the agent.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/c_programs-<hash>
    exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf()
}

/// Compiles `tests/c/<name>.c` once per test process (tests run in parallel threads: one compiling a
/// program while another executes it would fail with "text file busy"); returns the executable.
fn build(name: &str) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(exe) = built.get(name) {
        return exe.clone();
    }
    let exe = compile(name);
    built.insert(name.to_string(), exe.clone());
    exe
}

fn compile(name: &str) -> PathBuf {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        let header = Path::new("/usr/include/corosync/cpg.h");
        let cc = Command::new("cc").arg("--version").output();
        assert!(
            header.exists() && cc.is_ok_and(|o| o.status.success()),
            "the CPG tests need a C compiler and Debian's CPG headers ({} {}): install them with \
             `apt-get install -y libcpg-dev gcc`",
            header.display(),
            if header.exists() { "present" } else { "missing" },
        );
        let agent =
            std::env::var_os("COHORT_BIN").map_or_else(|| profile_dir().join("cohort"), PathBuf::from);
        assert!(
            agent.exists(),
            "the agent binary {} is missing: build it with `cargo build -p cohort-actors --bin cohort` (add \
             --release for release tests), or run the workspace's `cargo test`",
            agent.display()
        );
        // support::cohort_bin() reads COHORT_BIN.
        std::env::set_var("COHORT_BIN", &agent);
    });
    // `cargo test` builds this crate's cdylib into deps/ and copies it up to target/<profile>/ only on
    // `cargo build`: the copy one level up may be stale, the one in deps/ is this build's.
    let lib_dir = profile_dir().join("deps");
    assert!(lib_dir.join("libcohort_cpg.so").exists(), "libcohort_cpg.so missing in {}", lib_dir.display());
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out_dir = profile_dir().join("cpg-c-tests");
    std::fs::create_dir_all(&out_dir).expect("create the C tests' output directory");
    // Compiled under a name of this process, then renamed into place: another test process may be
    // running the previous build (a rename does not disturb it), and nothing accumulates.
    let tmp = out_dir.join(format!("{name}.{}.tmp", std::process::id()));
    let exe = out_dir.join(name);
    let out = Command::new("cc")
        .args(["-O1", "-Wall", "-Wextra", "-Werror", "-std=gnu11"])
        .arg("-I")
        .arg(crate_dir.join("include"))
        .arg("-o")
        .arg(&tmp)
        .arg(crate_dir.join("tests/c").join(format!("{name}.c")))
        .arg("-L")
        .arg(&lib_dir)
        .arg("-lcohort_cpg")
        .arg("-lpthread")
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .output()
        .expect("run cc");
    assert!(
        out.status.success(),
        "cc failed on tests/c/{name}.c:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&tmp, &exe).expect("move the compiled program into place");
    exe
}

/// A running C program whose stdout lines are collected; killed by PID on drop.
struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    rx: Receiver<String>,
    lines: Vec<String>,
    /// Lines before this index were consumed by a wait.
    cursor: usize,
}

impl Proc {
    fn spawn(name: &str, exe: &Path, args: &[&str], socket: &Path) -> Proc {
        let mut child = Command::new(exe)
            .args(args)
            .env("COHORT_CLIENT_SOCKET", socket)
            // cargo's LD_LIBRARY_PATH names target/<profile> before deps/, where a stale copy of the
            // library may be: the program's rpath (deps/) must decide.
            .env_remove("LD_LIBRARY_PATH")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a C test program");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Proc { name: name.to_string(), child, stdin, rx, lines: Vec::new(), cursor: 0 }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn send(&mut self, cmd: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{cmd}").expect("write a command");
        stdin.flush().expect("flush a command");
    }

    /// Waits for the next line (after the cursor) that satisfies `pred`, moving the cursor past it.
    fn wait(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + EVENT_DEADLINE;
        loop {
            if let Some(i) = (self.cursor..self.lines.len()).find(|i| pred(&self.lines[*i])) {
                self.cursor = i + 1;
                return self.lines[i].clone();
            }
            let left = end.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => self.lines.push(line),
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{}: timed out after {EVENT_DEADLINE:?} waiting for {what}; its output:\n{}",
                    self.name,
                    self.lines.join("\n")
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "{}: exited while waiting for {what}; its output:\n{}",
                    self.name,
                    self.lines.join("\n")
                ),
            }
        }
    }

    /// Sends `cmd` and returns its `RC` line.
    fn call(&mut self, cmd: &str) -> String {
        self.send(cmd);
        let verb = cmd.split_whitespace().next().unwrap_or_default().to_string();
        self.wait(&format!("the answer to `{cmd}`"), |l| l.starts_with(&format!("RC cmd={verb} ")))
    }

    /// Waits until `n` DELIVER lines were received in all; returns them (from, data) in order.
    fn deliveries(&mut self, n: usize) -> Vec<(String, String)> {
        let end = Instant::now() + EVENT_DEADLINE;
        loop {
            let got: Vec<(String, String)> = self
                .lines
                .iter()
                .filter_map(|l| {
                    let rest = l.strip_prefix("DELIVER ")?;
                    let from = rest.split_whitespace().find_map(|w| w.strip_prefix("from="))?;
                    let data = rest.split_once(" data=")?.1;
                    Some((from.to_string(), data.to_string()))
                })
                .collect();
            if got.len() >= n {
                return got;
            }
            match self.rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
                Ok(line) => self.lines.push(line),
                Err(_) => panic!("{}: {} of {n} deliveries; its output ends:\n{}", self.name, got.len(), {
                    let tail = self.lines.len().saturating_sub(30);
                    self.lines[tail..].join("\n")
                }),
            }
        }
    }

    /// `kill -9` of this program.
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_cluster(n: u32) -> Cluster {
    // Build (and check the prerequisites) before any agent starts.
    let _ = build("member");
    let mut c = Cluster::new(n, Timing::FAST);
    c.start_all();
    let ids = c.ids();
    c.wait_for_view(&ids, FORM_DEADLINE);
    c
}

#[test]
fn api_contract_holds_call_by_call_against_one_agent() {
    let exe = build("api");
    let mut c = start_cluster(1);
    let started = Instant::now();
    let out = Command::new(&exe)
        .env("COHORT_CLIENT_SOCKET", &c.nodes[0].socket)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("run api");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    println!("{text}(api.c took {} ms)", started.elapsed().as_millis());
    let checks: Vec<&str> = text.lines().filter(|l| l.starts_with("CHECK ")).collect();
    let failed: Vec<&&str> = checks.iter().filter(|l| !l.ends_with(" ok")).collect();
    assert!(failed.is_empty(), "failed checks: {failed:#?}");
    // Every check of api.c ran: a check that silently went missing would change the count.
    assert_eq!(checks.len(), 62, "api.c ran {} checks, not 62", checks.len());
    assert!(text.contains("CHECKS 62 failed 0"), "no summary line:\n{text}");
    assert!(out.status.success(), "api.c exited with {:?}", out.status);
    c.stop_and_verify();
}

/// The member/left/joined lists of a CONFCHG line.
fn confchg(line: &str) -> (String, String, String) {
    let field =
        |k: &str| line.split_whitespace().find_map(|w| w.strip_prefix(k)).unwrap_or_default().to_string();
    (field("members="), field("left="), field("joined="))
}

#[test]
fn three_members_join_multicast_in_one_order_and_see_leave_procdown_and_nodedown() {
    let exe = build("member");
    let mut c = start_cluster(3);
    let started = Instant::now();
    // One member per node, each dispatching its own way (node 3's from a second thread).
    let modes = ["all", "one", "blocking"];
    let mut m: Vec<Proc> = (0..3)
        .map(|i| Proc::spawn(&format!("member{}", i + 1), &exe, &[modes[i]], &c.nodes[i].socket))
        .collect();
    let mut pid = Vec::new();
    for (i, p) in m.iter_mut().enumerate() {
        let ready = p.wait("READY", |l| l.starts_with("READY "));
        assert_eq!(ready, format!("READY node={} pid={}", i + 1, p.pid()));
        // CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF: the current view comes first.
        let totem = p.wait("the initial totem confchg", |l| l.starts_with("TOTEM "));
        assert!(totem.ends_with(" members=1,2,3"), "{totem}");
        pid.push(p.pid());
    }
    let a = |n: usize| format!("{}/{}", n + 1, pid[n]);

    // Joins one at a time: the joiner sees everyone with itself joined; the others see it joined.
    for j in 0..3 {
        assert_eq!(m[j].call("join g1"), "RC cmd=join rc=1");
        let members: Vec<String> = (0..=j).map(a).collect();
        let members = members.join(",");
        for (i, p) in m.iter_mut().enumerate().take(j + 1) {
            let line = p.wait(&format!("the confchg of member {} joining", j + 1), |l| {
                l.starts_with("CONFCHG group=g1 ") && confchg(l).0 == members
            });
            assert_eq!(
                confchg(&line),
                (members.clone(), String::new(), format!("{}:1", a(j))),
                "member {}",
                i + 1
            );
        }
    }
    for p in &mut m {
        let rc = p.call("members g1");
        assert_eq!(rc, format!("RC cmd=members rc=1 members={},{},{}", a(0), a(1), a(2)));
        assert_eq!(p.call("join g2"), "RC cmd=join rc=14", "a second join is CS_ERR_EXIST");
    }

    // All three multicast at once, agreed then safe: one total order at every member, FIFO per sender.
    const N: usize = 150;
    for (i, p) in m.iter_mut().enumerate() {
        p.send(&format!("burst agreed {N} a{}", i + 1));
        p.send(&format!("burst safe {N} s{}", i + 1));
    }
    for p in &mut m {
        p.wait("the agreed burst's answer", |l| l == "RC cmd=burst rc=1");
        p.wait("the safe burst's answer", |l| l == "RC cmd=burst rc=1");
    }
    let orders: Vec<Vec<(String, String)>> = m.iter_mut().map(|p| p.deliveries(6 * N)).collect();
    assert_eq!(orders[0].len(), 6 * N, "member 1 got more than was sent: {:?}", &orders[0][6 * N..]);
    assert_eq!(orders[0], orders[1], "members 1 and 2 delivered in different orders");
    assert_eq!(orders[0], orders[2], "members 1 and 3 delivered in different orders");
    for s in 0..3 {
        for kind in ["a", "s"] {
            let seq: Vec<&str> = orders[0]
                .iter()
                .filter(|(from, data)| *from == a(s) && data.starts_with(&format!("{kind}{}-", s + 1)))
                .map(|(_, d)| d.as_str())
                .collect();
            let want: Vec<String> = (0..N).map(|k| format!("{kind}{}-{k}", s + 1)).collect();
            assert_eq!(seq, want, "sender {} {kind} messages out of FIFO order or missing", s + 1);
        }
    }

    // cpg_leave: the others see LEAVE, the leaver its own confchg; it can join again.
    assert_eq!(m[1].call("leave g1"), "RC cmd=leave rc=1");
    let line = m[1].wait("its own leave", |l| l.starts_with("CONFCHG group=g1 ") && l.contains(&a(1)));
    assert_eq!(confchg(&line), (format!("{},{}", a(0), a(2)), format!("{}:2", a(1)), String::new()));
    for i in [0, 2] {
        let line = m[i].wait("member 2's leave", |l| l.starts_with("CONFCHG group=g1 "));
        assert_eq!(confchg(&line), (format!("{},{}", a(0), a(2)), format!("{}:2", a(1)), String::new()));
    }
    assert_eq!(m[1].call("join g1"), "RC cmd=join rc=1");
    for i in [0, 2, 1] {
        let line = m[i].wait("member 2's rejoin", |l| l.starts_with("CONFCHG group=g1 "));
        assert_eq!(confchg(&line).0, format!("{},{},{}", a(0), a(1), a(2)), "member {}", i + 1);
    }

    // kill -9 of member 2's process: PROCDOWN (its node stays).
    m[1].kill9();
    for i in [0, 2] {
        let line = m[i].wait("member 2's process going down", |l| l.starts_with("CONFCHG group=g1 "));
        assert_eq!(confchg(&line), (format!("{},{}", a(0), a(2)), format!("{}:5", a(1)), String::new()));
    }

    // kill -9 of node 3's agent: NODEDOWN at member 1, the totem confchg shows the new view, and the
    // member on node 3 sees its dispatch end with CS_ERR_LIBRARY.
    // As corosync does, the totem confchg comes before the CPG confchg it causes.
    c.kill9(3);
    let totem = m[0].wait("the view without node 3", |l| l.starts_with("TOTEM "));
    assert!(totem.ends_with(" members=1,2"), "{totem}");
    let line = m[0].wait("node 3 going down", |l| l.starts_with("CONFCHG group=g1 "));
    assert_eq!(confchg(&line), (a(0), format!("{}:3", a(2)), String::new()));
    m[2].wait("member 3's dispatch ending", |l| l == "DISPATCH_END rc=2");
    assert_eq!(m[2].call("send agreed late"), "RC cmd=send rc=2", "CS_ERR_LIBRARY once the agent is gone");

    // What CPG never said: cohort blocks until node 3 is fenced (the extension callback says so, and
    // multicasts are held back meanwhile); restarting its agent counts as fenced here
    // (fencing.restart_counts_as_fenced), so recovery of node 3 may proceed and the block lifts.
    m[0].wait("the fencing block", |l| l == "EVENT kind=1 reason=fencing nodes=");
    assert_eq!(m[0].call("flow"), "RC cmd=flow rc=1 state=1", "flow control is on while blocked");
    c.start(3);
    m[0].wait("the view with node 3's new incarnation", |l| {
        l.starts_with("TOTEM ") && l.ends_with(" members=1,2,3")
    });
    m[0].wait("the block lifting", |l| l == "EVENT kind=2 reason= nodes=");
    m[0].wait("node 3 recovered", |l| l == "EVENT kind=3 reason= nodes=3");
    assert_eq!(m[0].call("flow"), "RC cmd=flow rc=1 state=0");
    assert_eq!(m[0].call("send agreed after-recovery"), "RC cmd=send rc=1");
    m[0].wait("its own message", |l| l == format!("DELIVER group=g1 from={} data=after-recovery", a(0)));
    println!("three-member CPG scenario took {} ms", started.elapsed().as_millis());
    assert_eq!(m[0].call("quit"), "RC cmd=quit rc=1");
    drop(m);
    c.stop_all();
}

#[test]
fn one_nonblocking_dispatch_delivers_everything_in_order() {
    let exe = build("member");
    let mut c = start_cluster(2);
    let mut p1 = Proc::spawn("nb1", &exe, &["nonblocking"], &c.nodes[0].socket);
    let mut p2 = Proc::spawn("nb2", &exe, &["nonblocking"], &c.nodes[1].socket);
    p1.wait("READY", |l| l.starts_with("READY "));
    p2.wait("READY", |l| l.starts_with("READY "));
    assert_eq!(p1.call("join nb"), "RC cmd=join rc=1");
    assert_eq!(p2.call("join nb"), "RC cmd=join rc=1");
    p1.wait("two members", |l| l.starts_with("CONFCHG ") && confchg(l).0.contains(','));
    p2.wait("two members", |l| l.starts_with("CONFCHG ") && confchg(l).0.contains(','));
    assert_eq!(p1.call("burst safe 200 x"), "RC cmd=burst rc=1");
    let d1 = p1.deliveries(200);
    let d2 = p2.deliveries(200);
    assert_eq!(d1, d2);
    let want: Vec<String> = (0..200).map(|k| format!("x-{k}")).collect();
    assert_eq!(d1.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(), want);
    let mut counts = BTreeMap::new();
    for (from, _) in &d1 {
        *counts.entry(from.clone()).or_insert(0) += 1;
    }
    assert_eq!(counts.len(), 1, "one sender: {counts:?}");
    drop((p1, p2));
    c.stop_and_verify();
}

/// Cuts node `id` off from `blocked` (an empty list restores every link), on its operator socket.
fn link_filter(c: &Cluster, id: u32, blocked: &[u32]) {
    let socket = c.nodes[id as usize - 1].operator_socket.clone();
    let blocked: Vec<cohort::NodeId> = blocked.iter().copied().map(cohort::NodeId).collect();
    c.block_on(async move {
        let mut op = cohort_actors::client::Client::connect(&socket, "cpg-test-operator")
            .await
            .expect("operator socket");
        op.set_link_filter(&blocked).await.expect("set the link filter");
    });
}

/// The seed story, told to CPG programs on three loopback agents (merge policy `wait`): node 1 is cut
/// off; the majority sees it go down and, once the operator acknowledges its fence, recovers it; node 1
/// keeps running alone (blocked, no quorum). When the partition heals, node 1 comes back with its old
/// state: a stateful merge, which corosync would report as an ordinary join. cohort refuses it, and the
/// CPG program on node 1 hears so through the extension callback.
#[test]
fn seed_story_stateful_merge_reaches_the_extension_callback() {
    let exe = build("member");
    let mut c = Cluster::new(3, Timing::FAST);
    for id in c.ids() {
        c.start_with(id, &[("COHORT__MERGE__POLICY", "wait")], &[]);
    }
    c.wait_for_view(&[1, 2, 3], FORM_DEADLINE);
    let mut m: Vec<Proc> =
        (0..3).map(|i| Proc::spawn(&format!("story{}", i + 1), &exe, &["all"], &c.nodes[i].socket)).collect();
    for p in &mut m {
        p.wait("READY", |l| l.starts_with("READY "));
        assert_eq!(p.call("join story"), "RC cmd=join rc=1");
    }
    let pid1 = m[0].pid();
    for p in &mut m {
        p.wait("three members", |l| l.starts_with("CONFCHG ") && confchg(l).0.matches('/').count() == 3);
    }

    // Partition {1} | {2, 3}.
    link_filter(&c, 1, &[2, 3]);
    link_filter(&c, 2, &[1]);
    link_filter(&c, 3, &[1]);
    for p in &mut m[1..] {
        let line = p.wait("node 1 going down", |l| l.starts_with("CONFCHG group=story "));
        assert_eq!(confchg(&line).1, format!("1/{pid1}:3"), "{line}");
        p.wait("the fencing block", |l| l == "EVENT kind=1 reason=fencing nodes=");
    }
    m[0].wait("node 1 blocked without quorum", |l| l == "EVENT kind=1 reason=no_quorum nodes=");

    // The operator acknowledges node 1's fence (as if it had been powered off): the majority recovers it.
    let socket = c.nodes[1].operator_socket.clone();
    c.block_on(async move {
        let mut op = cohort_actors::client::Client::connect(&socket, "cpg-test-operator")
            .await
            .expect("operator socket");
        op.fence_ack(cohort::NodeId(1)).await.expect("fence ack");
    });
    for p in &mut m[1..] {
        p.wait("node 1 recovered", |l| l == "EVENT kind=3 reason= nodes=1");
    }

    // Heal. Node 1 was never really fenced: it is back with its old state.
    for id in [1, 2, 3] {
        link_filter(&c, id, &[]);
    }
    let line = m[0].wait("the stateful merge", |l| l == "EVENT kind=1 reason=stateful_merge_wait nodes=");
    println!("member on node 1: {line}");
    // cpg_finalize returns while the agent still refuses this member.
    assert_eq!(m[0].call("quit"), "RC cmd=quit rc=1");
    drop(m);
    c.stop_all();
}

/// State transfer at join through cpg_ext.h: a joiner receives the state of a member that was there,
/// as of its join point, before any later delivery, and builds on it.
#[test]
fn state_transfer_at_join_reaches_the_joiner_before_later_deliveries() {
    let exe = build("member");
    let mut c = start_cluster(2);
    let mut p1 = Proc::spawn("st1", &exe, &["all", "state"], &c.nodes[0].socket);
    let mut p2 = Proc::spawn("st2", &exe, &["all", "state"], &c.nodes[1].socket);
    p1.wait("READY", |l| l.starts_with("READY "));
    p2.wait("READY", |l| l.starts_with("READY "));
    assert_eq!(p1.call("join st"), "RC cmd=join rc=1");
    p1.wait("its own join", |l| l.starts_with("CONFCHG "));
    assert_eq!(p1.call("burst agreed 5 before"), "RC cmd=burst rc=1");
    p1.deliveries(5);
    assert_eq!(p2.call("join st"), "RC cmd=join rc=1");
    p1.wait("the state request", |l| l == "PROVIDE to=2 state=delivered=5");
    p2.wait("the state", |l| l == "APPLY from=1 state=delivered=5");
    p2.wait("its first confchg", |l| l.starts_with("CONFCHG ") && confchg(l).0.contains(','));
    assert_eq!(p1.call("send agreed after"), "RC cmd=send rc=1");
    p2.wait("the next message", |l| l.starts_with("DELIVER ") && l.ends_with(" data=after"));
    // Nothing before the join point was delivered to the joiner; its count continues from the state.
    assert_eq!(p2.deliveries(1).len(), 1, "the joiner received messages from before its join");
    assert_eq!(p2.call("count"), "RC cmd=count rc=1 delivered=6");
    assert_eq!(p1.call("count"), "RC cmd=count rc=1 delivered=6");
    drop((p1, p2));
    c.stop_and_verify();
}
