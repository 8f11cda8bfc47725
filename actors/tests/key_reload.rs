//! Rotating the cluster key by file and SIGHUP (issues 11 and 14) on three real `cohort agent`
//! processes on loopback, with clients multicasting agreed messages on every node throughout: the new
//! key is added to `node.accept_key_files` and every agent reloaded, then `node.key_file` names it and
//! every agent reloaded, then the old key is dropped and every agent reloaded. No view changes, every
//! node delivers every accepted message exactly once, the agents count no bad, unknown-key or
//! replayed datagram in `/metrics`, and `cohort verify` passes over the event logs. A key file that
//! others may read is refused at a reload, naming the key and the file, while the rest of the reload
//! (the log level) is applied, and `cohort config check` exits with code 2 naming it.
//!
//! Every wait is on an event (a log line, a status document, an event log) with a deadline. The
//! clients run on their own threads with their own runtimes; [`Senders`] stops them when dropped, and
//! the [`Cluster`] kills its agents when dropped, also when an assertion fails.

mod support;

use cohort::{Event, Record};
use cohort_actors::client::{Client, ClientEvent};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use support::{cohort_bin, Cluster, Timing};

const GROUP: &str = "keyreload";
const DEADLINE: Duration = Duration::from_secs(30);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn records(path: &Path) -> Vec<Record> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            Record::from_json_line(l).unwrap_or_else(|e| panic!("{}: bad line {l:?}: {e}", path.display()))
        })
        .collect()
}

/// The message ids of the group's deliveries in an event log, in order.
fn delivered(r: &[Record]) -> Vec<String> {
    r.iter()
        .filter_map(|x| match &x.event {
            Event::Deliver { group, msg, .. } if group == GROUP => Some(msg.clone()),
            _ => None,
        })
        .collect()
}

fn views(r: &[Record]) -> usize {
    r.iter().filter(|x| matches!(x.event, Event::View { .. })).count()
}

/// A free TCP port on 127.0.0.1 for an admin endpoint.
fn free_tcp_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a TCP port");
    l.local_addr().expect("address").port()
}

/// `GET /metrics` from an admin endpoint.
fn metrics(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the admin endpoint");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("the metrics");
    out
}

/// The sum of a metric's samples (every label set) in a `/metrics` document.
fn metric(doc: &str, name: &str) -> u64 {
    doc.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Edits node `id`'s configuration file: `f` gets its text and returns the new one.
fn edit_config(c: &Cluster, id: u32, f: impl FnOnce(String) -> String) {
    let path = &c.nodes[id as usize - 1].config;
    let old = std::fs::read_to_string(path).expect("read the node configuration");
    std::fs::write(path, f(old)).expect("write the node configuration");
}

/// Sets `node.key_file` and `node.accept_key_files` in node `id`'s configuration.
fn set_keys(c: &Cluster, id: u32, key_file: &Path, accept: &[&Path]) {
    let accept: Vec<String> = accept.iter().map(|p| format!("\"{}\"", p.display())).collect();
    edit_config(c, id, |old| {
        let lines: Vec<String> = old
            .lines()
            .filter(|l| !l.starts_with("key_file =") && !l.starts_with("accept_key_files ="))
            .map(|l| {
                if l == "[node]" {
                    format!(
                        "[node]\nkey_file = \"{}\"\naccept_key_files = [{}]",
                        key_file.display(),
                        accept.join(", ")
                    )
                } else {
                    l.to_string()
                }
            })
            .collect();
        lines.join("\n") + "\n"
    });
}

/// How many reloads node `id`'s agent has finished (its "configuration reloaded" log lines).
fn reloads(c: &Cluster, id: u32) -> Vec<String> {
    let log = std::fs::read_to_string(c.stderr_path(id)).unwrap_or_default();
    log.lines().filter(|l| l.contains("configuration reloaded")).map(str::to_string).collect()
}

/// Sends SIGHUP to node `id`'s agent and waits for its reload summary; returns it.
fn reload(c: &Cluster, id: u32) -> String {
    let before = reloads(c, id).len();
    let ok = Command::new("kill").arg("-HUP").arg(c.pid(id).to_string()).status().expect("run kill");
    assert!(ok.success(), "kill -HUP of node {id}");
    c.wait_until(&format!("node {id}'s reload summary"), DEADLINE, |c| reloads(c, id).get(before).cloned())
}

/// `cohort key list` on node `id`: (id, primary, from) rows.
fn key_list(c: &Cluster, id: u32) -> Vec<(String, bool, String)> {
    let o = Command::new(cohort_bin())
        .args(["key", "list", "--operator-socket"])
        .arg(&c.nodes[id as usize - 1].operator_socket)
        .output()
        .expect("run cohort key list");
    assert!(o.status.success(), "cohort key list: {}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.starts_with("KEY       PRIMARY  FROM     SOURCE"), "{out}");
    let mut rows: Vec<(String, bool, String)> = out
        .lines()
        .skip(1)
        .map(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            let primary = cells.get(1) == Some(&"yes");
            let from = cells[if primary { 2 } else { 1 }].to_string();
            (cells[0].to_string(), primary, from)
        })
        .collect();
    rows.sort();
    rows
}

fn config_check(c: &Cluster, id: u32) -> Output {
    Command::new(cohort_bin())
        .args(["config", "check", "--config"])
        .arg(&c.cluster_toml)
        .arg("--config")
        .arg(&c.nodes[id as usize - 1].config)
        .env_remove("RUST_LOG")
        .output()
        .expect("run cohort config check")
}

fn key_id(path: &Path) -> String {
    cohort_actors::crypto::load_key(path).expect("a key file").id().to_string()
}

/// One client per node, each on its own thread: joins the group, answers state requests, and once
/// `go` is set multicasts agreed messages until `stop`, counting those the agent accepted. Dropping it
/// stops and joins the threads.
struct Senders {
    go: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    sent: Vec<Arc<AtomicU64>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Senders {
    fn start(sockets: Vec<PathBuf>) -> Senders {
        let go = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let sent: Vec<Arc<AtomicU64>> = sockets.iter().map(|_| Arc::new(AtomicU64::new(0))).collect();
        let threads = sockets
            .into_iter()
            .zip(&sent)
            .map(|(socket, sent)| {
                let (go, stop, sent) = (go.clone(), stop.clone(), sent.clone());
                std::thread::spawn(move || {
                    let rt =
                        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                    rt.block_on(send_loop(socket, go, stop, sent));
                })
            })
            .collect();
        Senders { go, stop, sent, threads }
    }

    fn total(&self) -> usize {
        self.sent.iter().map(|s| s.load(Relaxed) as usize).sum()
    }

    /// Stops the clients and returns how many messages the agents accepted.
    fn finish(mut self) -> usize {
        self.stop.store(true, Relaxed);
        for t in self.threads.drain(..) {
            t.join().expect("a sender thread");
        }
        self.total()
    }
}

impl Drop for Senders {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

async fn send_loop(socket: PathBuf, go: Arc<AtomicBool>, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) {
    let mut c = Client::connect(&socket, "key-reload-test").await.expect("connect");
    c.join(GROUP).await.expect("join");
    while !stop.load(Relaxed) {
        // Read what arrived (deliveries, views, state requests) without blocking the loop; reading the
        // socket is cancel-safe.
        while let Ok(ev) = tokio::time::timeout(Duration::from_millis(1), c.next_event()).await {
            match ev {
                Ok(ClientEvent::ProvideState { group, joiner, token }) => {
                    c.provide_state(&group, joiner, token, Vec::new()).await.expect("provide state")
                }
                Ok(_) => {}
                // The agent went away: the test fails on its own account.
                Err(_) => return,
            }
        }
        if go.load(Relaxed) {
            let n = sent.load(Relaxed);
            match c.send(GROUP, n.to_be_bytes().to_vec(), cohort::Delivery::Agreed).await {
                Ok(_) => {
                    sent.fetch_add(1, Relaxed);
                }
                Err(cohort_actors::client::ClientError::SendFailed(_)) => {}
                Err(_) => return,
            }
        }
        // Pacing the load (a few hundred messages a second per node), not waiting for anything.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

/// Waits until every node's event log has at least `want` deliveries of the group.
fn wait_delivered(c: &Cluster, want: usize, what: &str) {
    c.wait_until(what, DEADLINE, |c| {
        c.nodes
            .iter()
            .all(|n| delivered(&records(&n.data_dir.join("events.jsonl"))).len() >= want)
            .then_some(())
    });
}

#[test]
fn the_cluster_key_is_rotated_by_file_and_sighup_under_traffic_with_no_view_change() {
    let mut c = Cluster::new(3, Timing::FAST);
    let ports: Vec<u16> = (1..=3).map(|_| free_tcp_port()).collect();
    for id in 1..=3 {
        let port = ports[id as usize - 1];
        edit_config(&c, id, |t| t.replace("listen = \"\"", &format!("listen = \"127.0.0.1:{port}\"")));
    }
    c.start_all();
    c.wait_for_view(&[1, 2, 3], DEADLINE);
    let old_file = c.dir.join("cluster.key");
    let new_file = c.dir.join("cluster.key.new");
    cohort_actors::crypto::generate_key_file(&new_file).expect("a new key file");
    let (old_id, new_id) = (key_id(&old_file), key_id(&new_file));
    for id in 1..=3 {
        assert_eq!(key_list(&c, id), vec![(old_id.clone(), true, "config".to_string())]);
    }

    let senders = Senders::start(c.nodes.iter().map(|n| n.socket.clone()).collect());
    c.wait_until("every node's client in the group", DEADLINE, |c| {
        (1..=3)
            .all(|id| {
                c.status(id).is_some_and(|s| s["groups"][GROUP].as_array().is_some_and(|m| m.len() == 3))
            })
            .then_some(())
    });
    senders.go.store(true, Relaxed);
    let views_before: Vec<usize> =
        c.nodes.iter().map(|n| views(&records(&n.data_dir.join("events.jsonl")))).collect();
    let progress = |c: &Cluster, what: &str| wait_delivered(c, senders.total() + 30, what);
    progress(&c, "traffic before the rotation");

    // 1. The new key as an accept key everywhere: installed, not yet used. `cohort config check` says so
    //    beforehand.
    for id in 1..=3 {
        set_keys(&c, id, &old_file, &[&new_file]);
    }
    let check = config_check(&c, 1);
    assert!(check.status.success(), "{}", text(&check.stderr));
    let out = text(&check.stdout);
    assert!(
        out.contains(&format!("# keys at a reload: installed {new_id} from {}", new_file.display())),
        "{out}"
    );
    assert!(out.contains("node.accept_key_files: [] -> "), "{out}");
    for id in 1..=3 {
        let summary = reload(&c, id);
        assert!(
            summary.contains(&format!(
                "applied node.accept_key_files; keys: installed {new_id} from {}",
                new_file.display()
            )),
            "{summary}"
        );
        let mut want =
            vec![(old_id.clone(), true, "config".to_string()), (new_id.clone(), false, "config".to_string())];
        want.sort();
        assert_eq!(key_list(&c, id), want);
    }
    progress(&c, "traffic with two keys installed");

    // 2. node.key_file names the new key, the old one is still accepted: each node seals under the new
    //    key after its reload, the others accept both.
    for id in 1..=3 {
        set_keys(&c, id, &new_file, &[&old_file]);
        let summary = reload(&c, id);
        assert!(summary.contains(&format!("keys: primary now {new_id}")), "{summary}");
        assert!(key_list(&c, id).contains(&(new_id.clone(), true, "config".to_string())));
        progress(&c, "traffic while the nodes switch keys");
    }

    // 3. The old key dropped everywhere: removed from every ring.
    for id in 1..=3 {
        set_keys(&c, id, &new_file, &[]);
        let summary = reload(&c, id);
        assert!(summary.contains(&format!("keys: removed {old_id}")), "{summary}");
        assert_eq!(key_list(&c, id), vec![(new_id.clone(), true, "config".to_string())]);
    }
    progress(&c, "traffic after the old key is gone");

    // Every node delivers exactly every accepted message, once, with no view change.
    let all = senders.finish();
    wait_delivered(&c, all, "every accepted message");
    for (i, n) in c.nodes.iter().enumerate() {
        let r = records(&n.data_dir.join("events.jsonl"));
        let ids = delivered(&r);
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(ids.len(), all, "node {} delivers exactly the {all} messages sent", n.id);
        assert_eq!(unique.len(), all, "node {}: no message delivered twice", n.id);
        assert_eq!(views(&r), views_before[i], "node {}: no view change during the rotation", n.id);
        let doc = metrics(ports[i]);
        for name in [
            "cohort_bad_datagrams_total",
            "cohort_unknown_key_datagrams_total",
            "cohort_replayed_datagrams_total",
        ] {
            assert!(doc.contains(name), "{name} missing from /metrics:\n{doc}");
            assert_eq!(metric(&doc, name), 0, "node {}: {name}", n.id);
        }
    }
    println!("{all} messages multicast during the rotation, each delivered once at every node");
    c.stop_and_verify();
}

#[test]
fn a_reload_refuses_a_key_file_others_can_read_and_applies_the_rest() {
    let mut c = Cluster::new(1, Timing::FAST);
    c.start(1);
    c.wait_for_view(&[1], DEADLINE);
    let key = c.dir.join("cluster.key");
    let key_id = key_id(&key);
    let open = c.dir.join("open.key");
    cohort_actors::crypto::generate_key_file(&open).expect("a key file");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    set_keys(&c, 1, &key, &[&open]);
    edit_config(&c, 1, |t| t.replace("level = \"info\"", "level = \"debug\""));

    // `cohort config check` refuses it beforehand, naming the key and the file (exit code 2).
    let check = config_check(&c, 1);
    assert_eq!(check.status.code(), Some(2), "{}", text(&check.stdout));
    let err = text(&check.stderr);
    let why = format!("key file {} (node.accept_key_files) has mode 0644", open.display());
    assert!(err.contains(&why) && err.contains("chmod 600"), "{err}");

    // The reload applies the log level and refuses the key change with the same reason.
    let summary = reload(&c, 1);
    assert!(summary.contains("applied log.level"), "{summary}");
    assert!(
        summary.contains(&format!("refused the key change of node.accept_key_files ({why}")),
        "{summary}"
    );
    assert_eq!(key_list(&c, 1), vec![(key_id.clone(), true, "config".to_string())], "the ring is unchanged");
    let stderr = c.stderr_path(1);
    c.wait_until("a debug line after the reload", DEADLINE, |c| {
        // A client's connection is logged at debug level.
        let _ = c.status(1);
        std::fs::read_to_string(&stderr).unwrap_or_default().contains("DEBUG").then_some(())
    });

    // Fixed, the next reload installs it; the key is not in the log, only its id.
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let open_id = cohort_actors::crypto::load_key(&open).expect("key").id().to_string();
    let summary = reload(&c, 1);
    assert!(summary.contains(&format!("keys: installed {open_id} from {}", open.display())), "{summary}");
    let material = std::fs::read_to_string(&open).expect("read");
    let log = std::fs::read_to_string(&stderr).expect("read");
    assert!(!log.contains(material.trim()), "no key material in the log");
    c.stop_and_verify();
}
