//! Integration tests of the `cohort` binary: help texts, `config check`, the exit codes and one-line
//! errors of user mistakes, `keygen`, and `verify` over hand-written event logs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "support/scratch.rs"]
mod scratch;
use scratch::Scratch;

impl Scratch {
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write temp file");
        p
    }
}

/// The binary with no `COHORT__` variables inherited from the test's environment and `RUST_LOG` unset.
fn cohort() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cohort"));
    for (k, _) in std::env::vars() {
        if k.to_uppercase().starts_with("COHORT__") {
            cmd.env_remove(k);
        }
    }
    cmd.env_remove("RUST_LOG");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run the cohort binary")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh cluster key made by `cohort keygen` in `dir`, and the environment variable that points the
/// configuration at it (the examples name a key under /tmp that may not exist).
fn with_key(cmd: &mut Command, dir: &Scratch) -> PathBuf {
    let key = dir.0.join("cluster.key");
    if !key.exists() {
        let o = run(cohort().arg("keygen").arg("--out").arg(&key));
        assert_eq!(o.status.code(), Some(0), "keygen: {}", stderr(&o));
    }
    cmd.env("COHORT__NODE__KEY_FILE", &key);
    key
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples").join(name)
}

/// Asserts a user's mistake: exit code 2 and exactly one line on stderr that mentions every `needle`.
fn assert_one_line_usage_error(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "expected one line, got: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr does not mention {n}: {err}");
    }
}

#[test]
fn every_subcommand_help_has_an_examples_section() {
    let paths: &[&[&str]] = &[
        &[],
        &["agent"],
        &["config"],
        &["config", "check"],
        &["keygen"],
        &["verify"],
        &["status"],
        &["members"],
        &["watch"],
        &["send"],
        &["fence"],
        &["fence", "ack"],
        &["key"],
        &["key", "install"],
        &["key", "use"],
        &["key", "remove"],
        &["key", "list"],
    ];
    for path in paths {
        let o = run(cohort().args(*path).arg("--help"));
        assert_eq!(o.status.code(), Some(0), "{path:?}: {}", stderr(&o));
        let out = stdout(&o);
        assert!(out.contains("Examples:\n  "), "`cohort {}` --help has no examples:\n{out}", path.join(" "));
        assert!(out.contains("Usage: cohort"), "{out}");
    }
}

#[test]
fn config_check_prints_each_value_with_its_source() {
    let node2 = example("three-node/node2.toml");
    let dir = Scratch::new("cli");
    let mut cmd = cohort();
    let key = with_key(&mut cmd, &dir);
    let o = run(cmd
        .args(["config", "check", "--config"])
        .arg(example("three-node/cluster.toml"))
        .arg("--config")
        .arg(&node2));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let key_line = format!("# key file {}: ok (owner uid ", key.display());
    assert!(out.lines().any(|l| l.starts_with(&key_line) && l.contains("mode 0600")), "{out}");
    let line = out.lines().find(|l| l.starts_with("node.id = ")).expect("a node.id line");
    assert!(line.starts_with("node.id = 2 "), "{line}");
    assert!(line.ends_with(&format!("# from file:{}", node2.display())), "{line}");
    let hb = out.lines().find(|l| l.starts_with("timing.heartbeat_interval_ms = ")).expect("heartbeat line");
    assert!(hb.contains("cluster.toml"), "{hb}");
    let mode = out.lines().find(|l| l.starts_with("api.socket_mode = ")).expect("socket_mode line");
    assert!(mode.ends_with("# from default"), "{mode}");
}

#[test]
fn config_check_reports_environment_and_flags_as_sources() {
    let dir = Scratch::new("cli");
    let mut cmd = cohort();
    with_key(&mut cmd, &dir);
    let o = run(cmd
        .args(["config", "check", "--config"])
        .arg(example("five-node/cluster.toml"))
        .args(["--node-id", "4"])
        .env("COHORT__TIMING__FAILURE_TIMEOUT_MS", "2500"));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.lines().any(|l| l.starts_with("node.id = 4 ") && l.ends_with("# from flag:--node-id")),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("timing.failure_timeout_ms = 2500 ")
            && l.ends_with("# from env:COHORT__TIMING__FAILURE_TIMEOUT_MS")),
        "{out}"
    );
}

#[test]
fn a_bad_value_exits_2_with_one_line_naming_the_key() {
    let base = || {
        let mut c = cohort();
        c.args(["config", "check", "--config"]).arg(example("three-node/cluster.toml"));
        c
    };
    let o = run(base().env("COHORT__TIMING__FAILURE_TIMEOUT_MS", "abc"));
    assert_one_line_usage_error(
        &o,
        &["`timing.failure_timeout_ms`", "\"abc\"", "env:COHORT__TIMING__FAILURE_TIMEOUT_MS", "milliseconds"],
    );
    let o = run(base().args(["--node-id", "9"]));
    assert_one_line_usage_error(&o, &["`node.id`", "9", "flag:--node-id", "1, 2, 3"]);

    let dir = Scratch::new("cli");
    let typo = dir.file("typo.toml", "[timing]\nheartbeat_ms = 50\n");
    let o = run(base().arg("--config").arg(&typo));
    assert_one_line_usage_error(
        &o,
        &["unknown key `timing.heartbeat_ms`", "did you mean `timing.heartbeat_interval_ms`"],
    );

    let o = run(base().arg("--config").arg(dir.0.join("missing.toml")));
    assert_one_line_usage_error(&o, &["cannot read config file", "missing.toml"]);

    // The agent refuses the same mistakes before starting anything.
    let o = run(cohort()
        .args(["agent", "--config"])
        .arg(example("three-node/cluster.toml"))
        .args(["--node-id", "0"]));
    assert_one_line_usage_error(&o, &["`node.id`"]);
}

/// Writes `text` to `dir/name` with `mode`.
fn key_file(dir: &Scratch, name: &str, text: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.file(name, text);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    p
}

/// The bad key files of the tests below, each with what its error must say: absent, open to others or
/// to its group, too short, not hex, a directory.
fn bad_keys(dir: &Scratch) -> Vec<(PathBuf, Vec<String>)> {
    let hex = "ab".repeat(32);
    let missing = dir.0.join("absent.key");
    let open = key_file(dir, "open.key", &hex, 0o644);
    let group = key_file(dir, "group.key", &hex, 0o640);
    let short = key_file(dir, "short.key", "abcdef\n", 0o600);
    let junk = key_file(dir, "junk.key", &"zz".repeat(32), 0o600);
    let sub = dir.0.join("a-directory.key");
    std::fs::create_dir_all(&sub).expect("mkdir");
    vec![
        (
            missing.clone(),
            vec!["does not exist".to_string(), format!("cohort keygen --out {}", missing.display())],
        ),
        (
            open.clone(),
            vec![
                "mode 0644".into(),
                "group and others must have no access".into(),
                format!("chmod 600 {}", open.display()),
            ],
        ),
        (group.clone(), vec!["mode 0640".into()]),
        (short.clone(), vec!["malformed".into(), "6 characters".into(), "32-byte key".into()]),
        (junk.clone(), vec!["malformed".into(), "non-hex".into()]),
        (sub, vec!["not a regular file".into()]),
    ]
}

#[test]
fn config_check_refuses_a_bad_key_file_with_exit_2_naming_the_file_and_the_problem() {
    let dir = Scratch::new("cli-key");
    for (key, needles) in bad_keys(&dir) {
        let o = run(cohort()
            .args(["config", "check", "--config"])
            .arg(example("three-node/cluster.toml"))
            .arg("--config")
            .arg(example("three-node/node1.toml"))
            .env("COHORT__NODE__KEY_FILE", &key));
        let mut all: Vec<&str> = vec![key.to_str().expect("utf-8 path"), "node.key_file"];
        all.extend(needles.iter().map(String::as_str));
        assert_one_line_usage_error(&o, &all);
        assert_eq!(stdout(&o), "", "nothing is printed for a configuration that fails");
    }
}

#[test]
fn the_agent_refuses_a_bad_key_file_with_exit_2_before_it_creates_its_data_directory() {
    let dir = Scratch::new("cli-key");
    let mut cases = bad_keys(&dir);
    // Another user's key (as root: given to `nobody`). Root's `config check` accepts any owner (it
    // cannot know the agent's user), but the agent knows its own uid and refuses it.
    let foreign = key_file(&dir, "foreign.key", &"cd".repeat(32), 0o600);
    let me = cohort_actors::key_file::effective_uid();
    if me == 0 && std::os::unix::fs::chown(&foreign, Some(65534), None).is_ok() {
        cases.push((foreign, vec!["owned by uid 65534".into(), "expected uid 0".into(), "chown 0".into()]));
    }
    for (i, (key, needles)) in cases.into_iter().enumerate() {
        let data = dir.0.join(format!("data{i}"));
        let o = run(cohort()
            .args(["agent", "--config"])
            .arg(example("three-node/cluster.toml"))
            .arg("--config")
            .arg(example("three-node/node1.toml"))
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", ""])
            .env("COHORT__NODE__KEY_FILE", &key)
            .env("COHORT__API__SOCKET", dir.0.join(format!("s{i}.sock"))));
        let mut all: Vec<&str> = vec![key.to_str().expect("utf-8 path")];
        all.extend(needles.iter().map(String::as_str));
        assert_one_line_usage_error(&o, &all);
        // Nothing was written: no data directory, so no lock and no epoch.
        assert!(!data.exists(), "the agent created {} before refusing its key", data.display());
    }
}

#[test]
fn a_bad_flag_exits_2_with_one_line() {
    let o = run(cohort().args(["config", "check", "--confg", "x.toml"]));
    assert_one_line_usage_error(&o, &["--confg"]);
    let o = run(cohort().args(["send", "--count", "10"]));
    assert_one_line_usage_error(&o, &["--group"]);
    let o = run(cohort().args(["send", "--group", "g", "--size", "8"]));
    assert_one_line_usage_error(&o, &["--size", "at least 16"]);
    let o = run(cohort().args(["fence", "ack", "node3"]));
    assert_one_line_usage_error(&o, &["NODE"]);
}

#[test]
fn client_commands_without_a_socket_say_how_to_name_one() {
    let dir = Scratch::new("cli");
    if Path::new("/etc/cohort/cohort.toml").exists() {
        return; // The system file names a socket on this machine.
    }
    let o = run(cohort().arg("members").current_dir(&dir.0));
    assert_one_line_usage_error(&o, &["./cohort.sock", "--socket"]);
}

#[test]
fn keygen_writes_a_private_key_and_replaces_it_only_with_force() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Scratch::new("cli");
    let key = dir.0.join("cluster.key");
    let o = run(cohort().arg("keygen").arg("--out").arg(&key));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let mode = std::fs::metadata(&key).expect("key written").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let first = std::fs::read(&key).expect("read key");

    let o = run(cohort().arg("keygen").arg("--out").arg(&key));
    assert_one_line_usage_error(&o, &["already exists", "--force"]);
    assert_eq!(std::fs::read(&key).expect("read key"), first, "the key must not change without --force");

    let o = run(cohort().arg("keygen").arg("--force").arg("--out").arg(&key));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_ne!(std::fs::read(&key).expect("read key"), first);

    let o = run(cohort().arg("keygen").arg("--out").arg(dir.0.join("no/such/dir/cluster.key")));
    assert_one_line_usage_error(&o, &["does not exist"]);
}

const V1: &str = r#"{"seq":1,"coord":1}"#;
const V2: &str = r#"{"seq":2,"coord":1}"#;

fn start(node: u32, ts: u64) -> String {
    format!(r#"{{"ts_ms":{ts},"node":{node},"epoch":1,"event":"start","version":"0.1.0"}}"#)
}

fn view(node: u32, ts: u64, view: &str, joined: &str) -> String {
    format!(
        r#"{{"ts_ms":{ts},"node":{node},"epoch":1,"event":"view","view":{view},"members":[[1,1],[2,1]],"primary":true,"joined":{joined},"left":[],"failed":[]}}"#
    )
}

fn deliver(node: u32, ts: u64, msg: &str, view: &str) -> String {
    format!(
        r#"{{"ts_ms":{ts},"node":{node},"epoch":1,"event":"deliver","group":"g","msg":"{msg}","sender":[1,1],"view":{view},"digest":"ab12"}}"#
    )
}

fn send(ts: u64, msg: &str) -> String {
    format!(
        r#"{{"ts_ms":{ts},"node":1,"epoch":1,"event":"send","group":"g","msg":"{msg}","bytes":5,"delivery":"agreed","digest":"ab12"}}"#
    )
}

/// Two nodes that form one primary view and both deliver two messages of node 1 in the same order.
fn good_logs(dir: &Scratch) -> (PathBuf, PathBuf) {
    let both = "[[1,1],[2,1]]";
    let n1 = [
        start(1, 1000),
        view(1, 1010, V1, both),
        send(1020, "1.1.1"),
        send(1021, "1.1.2"),
        deliver(1, 1030, "1.1.1", V1),
        deliver(1, 1031, "1.1.2", V1),
    ];
    let n2 = [
        start(2, 1001),
        view(2, 1011, V1, both),
        deliver(2, 1032, "1.1.1", V1),
        deliver(2, 1033, "1.1.2", V1),
    ];
    (dir.file("node1.jsonl", &(n1.join("\n") + "\n")), dir.file("node2.jsonl", &(n2.join("\n") + "\n")))
}

#[test]
fn verify_accepts_good_logs() {
    let dir = Scratch::new("cli");
    let (n1, n2) = good_logs(&dir);
    let o = run(cohort().arg("verify").arg(&n1).arg(&n2));
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "stdout: {out}\nstderr: {}", stderr(&o));
    assert!(out.contains("verdict: OK (10 records from 2 logs, all safety guarantees hold)"), "{out}");
    assert!(out.contains("members: 2, views: 1 (1 primary)"), "{out}");
    assert!(out.contains("deliveries: 4"), "{out}");
    assert!(!out.contains("VIOLATION"), "{out}");
}

#[test]
fn verify_reports_views_going_backwards_as_g2_and_exits_1() {
    let dir = Scratch::new("cli");
    let both = "[[1,1],[2,1]]";
    let n1 = [start(1, 1000), view(1, 1010, V2, both), view(1, 1020, V1, "[]")];
    let n2 = [start(2, 1001), view(2, 1011, V2, both)];
    let a = dir.file("node1.jsonl", &n1.join("\n"));
    let b = dir.file("node2.jsonl", &n2.join("\n"));
    let o = run(cohort().arg("verify").arg(&a).arg(&b));
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "stdout: {out}\nstderr: {}", stderr(&o));
    assert!(out.lines().any(|l| l.starts_with("VIOLATION G2: ")), "{out}");
    assert!(out.contains("verdict: FAIL ("), "{out}");
}

#[test]
fn verify_names_the_file_and_line_of_a_bad_record() {
    let dir = Scratch::new("cli");
    let (n1, _) = good_logs(&dir);
    let bad = dir.file("bad.jsonl", &format!("{}\n{{\"ts_ms\": \"soon\"}}\n", start(3, 1)));
    let o = run(cohort().arg("verify").arg(&n1).arg(&bad));
    assert_one_line_usage_error(&o, &[&format!("{}:2: ", bad.display())]);
    let o = run(cohort().arg("verify").arg(dir.0.join("absent.jsonl")));
    assert_one_line_usage_error(&o, &["cannot read event log", "absent.jsonl"]);
}

/// Node 2 paused in view 1, node 1 went on alone in view 2, fenced node 2 and logged `recovered` for it at
/// 1050; node 2 woke and delivered a message in view 1 at 1060 (G13, against one clock).
fn zombie_logs(dir: &Scratch) -> (PathBuf, PathBuf) {
    let both = "[[1,1],[2,1]]";
    let n1 = [
        start(1, 1000),
        view(1, 1010, V1, both),
        send(1020, "1.1.1"),
        send(1021, "1.1.2"),
        deliver(1, 1030, "1.1.1", V1),
        format!(
            r#"{{"ts_ms":1040,"node":1,"epoch":1,"event":"view","view":{V2},"members":[[1,1]],"primary":true,"joined":[],"left":[],"failed":[[2,1]]}}"#
        ),
        r#"{"ts_ms":1045,"node":1,"epoch":1,"event":"fence_result","target":[2,1],"ok":true,"method":"agent","detail":"killed"}"#.to_string(),
        format!(r#"{{"ts_ms":1050,"node":1,"epoch":1,"event":"recovered","view":{V2},"failed":[[2,1]]}}"#),
    ];
    let n2 = [
        start(2, 1001),
        view(2, 1011, V1, both),
        deliver(2, 1031, "1.1.1", V1),
        deliver(2, 1060, "1.1.2", V1),
    ];
    (dir.file("node1.jsonl", &(n1.join("\n") + "\n")), dir.file("node2.jsonl", &(n2.join("\n") + "\n")))
}

#[test]
fn verify_reports_a_zombie_delivering_after_its_recovery_as_g13_unless_clocks_are_independent() {
    let dir = Scratch::new("cli");
    let (n1, n2) = zombie_logs(&dir);
    let o = run(cohort().arg("verify").arg(&n1).arg(&n2));
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "stdout: {out}\nstderr: {}", stderr(&o));
    let violations: Vec<&str> = out.lines().filter(|l| l.starts_with("VIOLATION")).collect();
    assert_eq!(
        violations,
        ["VIOLATION G13: [2,1] delivered msg 1.1.2 in view 1.1 at 1060, 10 ms after [1,1] logged `recovered` for it \
          in view 2.1 at 1050: a zombie acting in an earlier view"],
        "{out}"
    );

    let o = run(cohort().arg("verify").arg("--independent-clocks").arg(&n1).arg(&n2));
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "stdout: {out}\nstderr: {}", stderr(&o));
    assert!(
        out.contains(
            "verdict: OK (12 records from 2 logs, G1-G12 hold; G13 not checked: independent clocks)"
        ),
        "{out}"
    );
}

#[test]
fn verify_help_teaches_when_to_pass_independent_clocks() {
    let o = run(cohort().args(["verify", "--help"]));
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(out.contains("--independent-clocks"), "{out}");
    assert!(out.contains("several machines"), "{out}");
    assert!(out.contains("G13"), "{out}");
}

/// Two nodes' logs written through the agent's own rotating writer (`LogFile`) into `dir/node1` and
/// `dir/node2`: a primary view, then `msgs` messages of node 1 delivered by both. Returns the live files.
fn rotated_logs(dir: &Scratch, msgs: u64, keep_files: u32) -> (PathBuf, PathBuf) {
    use cohort_actors::event_log::{LogFile, Rotation};
    let both = "[[1,1],[2,1]]";
    let rotation = Rotation { max_bytes: 700, keep_files };
    let mut n1 = vec![start(1, 1000), view(1, 1010, V1, both)];
    let mut n2 = vec![start(2, 1001), view(2, 1011, V1, both)];
    for i in 1..=msgs {
        let id = format!("1.1.{i}");
        n1.push(send(1020 + 3 * i, &id));
        n1.push(deliver(1, 1021 + 3 * i, &id, V1));
        n2.push(deliver(2, 1022 + 3 * i, &id, V1));
    }
    let write = |name: &str, lines: &[String]| {
        let live = dir.0.join(name).join("events.jsonl");
        let mut log = LogFile::open(&live, rotation).expect("open");
        for l in lines {
            log.append(l).expect("append");
        }
        live
    };
    (write("node1", &n1), write("node2", &n2))
}

#[test]
fn verify_reads_rotated_files_oldest_first_as_one_log_per_agent() {
    let dir = Scratch::new("cli");
    let (n1, n2) = rotated_logs(&dir, 30, 100);
    assert!(n1.with_file_name("events.jsonl.3").exists(), "the writer rotated");
    // The live file of node 1, the directory of node 2: both name the whole rotated log.
    let o = run(cohort().arg("verify").arg(&n1).arg(n2.parent().expect("dir")));
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "stdout: {out}\nstderr: {}", stderr(&o));
    assert!(out.contains("records from 2 logs in "), "{out}");
    assert!(out.contains("(94 records from 2 logs in"), "every record of both logs is read: {out}");
    assert!(
        out.contains(&format!("{}: ", n1.display()))
            && out.contains(" files read, oldest first: events.jsonl."),
        "{out}"
    );
    assert!(out.contains("all safety guarantees hold)"), "{out}");
    assert!(!out.contains("mid-way"), "{out}");

    // A rotated file named on its own, or with its siblings by a glob, names the same log, read once.
    let o = run(cohort().arg("verify").arg(n1.with_file_name("events.jsonl.2")).arg(&n1).arg(&n2));
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "stdout: {out}\nstderr: {}", stderr(&o));
    assert!(out.contains("(94 records from 2 logs in"), "{out}");

    // Out of order, the same files would break G2/G7 (a view after its deliveries): they are read in
    // order, which the clean verdict shows. A file missing in the middle is refused, naming the files.
    let middle = n2.with_file_name("events.jsonl.2");
    std::fs::remove_file(&middle).expect("remove a middle file");
    let o = run(cohort().arg("verify").arg(&n1).arg(&n2));
    assert_one_line_usage_error(
        &o,
        &["do not follow one another", "events.jsonl.3", "events.jsonl.1", "missing"],
    );
}

#[test]
fn verify_says_when_a_history_begins_mid_way_and_reports_no_false_violation() {
    let dir = Scratch::new("cli");
    // Two files kept besides the live one: both nodes lost their start, their view and early messages.
    let (n1, n2) = rotated_logs(&dir, 30, 2);
    assert!(!n1.with_file_name("events.jsonl.3").exists(), "older files deleted");
    let o = run(cohort().arg("verify").arg(&n1).arg(&n2));
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "stdout: {out}\nstderr: {}", stderr(&o));
    assert!(!out.contains("VIOLATION"), "{out}");
    for node in [1, 2] {
        assert!(
            out.contains(&format!("the history of node {node} begins mid-way: its oldest file ")),
            "{out}"
        );
    }
    assert!(out.contains("earlier files were rotated away); the first record kept is [1,1]'s `"), "{out}");
    assert!(out.contains("not decided, because a history begins mid-way"), "{out}");
    assert!(out.contains("G12 (first record of a member is `start`): 2"), "{out}");
    assert!(out.contains("G7 (delivery before the first `view` left of a member)"), "{out}");
    assert!(
        out.contains("all safety guarantees hold over the records kept; some checks not decided, see above)"),
        "{out}"
    );
}
