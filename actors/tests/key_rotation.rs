//! Rotating the cluster key on a running loopback cluster under traffic, with the operator's own
//! commands: `cohort key install|use|remove|list` (the real binary, through each agent's operator
//! socket) against agents started in this process by `start_node`. Every node multicasts without pause
//! while the key changes; afterwards every node has delivered exactly every accepted message, no view
//! changed, and no datagram was dropped for its key.
//!
//! The `cohort` commands run on blocking threads (`spawn_blocking`), so the agents' single-threaded
//! actix system keeps running while they wait. Waits poll observable state with deadlines.

#[path = "support/inprocess.rs"]
mod inprocess;

use cohort::{Delivery, Event, Record};
use cohort_actors::crypto::ClusterKey;
use cohort_actors::messages::Multicast;
use cohort_actors::supervisor::NodeHandle;
use inprocess::*;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

const GROUP: &str = "rotation";

/// Runs `cohort key ARGS... --operator-socket SOCKET` on a blocking thread.
async fn cohort_key(socket: &Path, args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cohort"));
    cmd.arg("key").args(args).arg("--operator-socket").arg(socket);
    tokio::task::spawn_blocking(move || cmd.output().expect("run cohort"))
        .await
        .expect("the command's thread")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs a `cohort key` command that must succeed and returns its standard output.
async fn ok(socket: &Path, args: &[&str]) -> String {
    let o = cohort_key(socket, args).await;
    assert!(o.status.success(), "cohort key {args:?}: {}{}", text(&o.stdout), text(&o.stderr));
    text(&o.stdout)
}

/// The `cohort key list` table as (id, primary) rows.
fn rows(listing: &str) -> Vec<(String, bool)> {
    listing
        .lines()
        .skip(1)
        .map(|l| {
            let mut cells = l.split_whitespace();
            let id = cells.next().expect("an id").to_string();
            (id, cells.next() == Some("yes"))
        })
        .collect()
}

fn delivers(r: &[Record]) -> usize {
    r.iter().filter(|x| matches!(&x.event, Event::Deliver { group, .. } if group == GROUP)).count()
}

fn views(r: &[Record]) -> usize {
    r.iter().filter(|x| matches!(x.event, Event::View { .. })).count()
}

/// Multicasts from `h` until `stop`, counting every message the core accepted into the order. A full
/// send queue is flow control: the sender tries again a little later.
fn spawn_sender(
    h: &NodeHandle,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> actix_rt::task::JoinHandle<()> {
    let m = h.membership.clone();
    actix_rt::spawn(async move {
        while !stop.load(Relaxed) {
            let n = sent.load(Relaxed);
            let r = m
                .send(Multicast {
                    group: GROUP.into(),
                    payload: n.to_be_bytes().to_vec(),
                    delivery: Delivery::Agreed,
                })
                .await
                .expect("membership alive");
            if r.is_ok() {
                sent.fetch_add(1, Relaxed);
            }
            // Pacing the load (a few hundred messages a second per node), not waiting for anything.
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    })
}

/// Waits until every node's event log has at least `want` deliveries of the group.
async fn wait_delivered(nodes: &Nodes, want: usize, what: &str) {
    for id in 1..=3 {
        wait_records(&nodes.event_log(id), what, |r| delivers(r) >= want).await;
    }
}

fn total(sent: &[Arc<AtomicU64>]) -> usize {
    sent.iter().map(|s| s.load(Relaxed) as usize).sum()
}

#[actix_rt::test]
async fn the_cluster_key_is_rotated_under_traffic_with_no_view_change_and_no_lost_delivery() {
    let nodes = Nodes::new("keyring", 3, "");
    let hs = nodes.start_all([1, 2, 3]).await;
    wait_primary_of_all(&hs.iter().collect::<Vec<_>>()).await;
    let sockets: Vec<PathBuf> = (1..=3).map(|id| nodes.settings(id, "").operator_socket_path()).collect();
    for id in 1..=3 {
        join_as_application(&nodes.settings(id, "").socket_path(), GROUP).await;
    }
    for h in &hs {
        let members = hs.iter().map(|x| x.member).collect::<Vec<_>>();
        wait_status(h, "every node in the group", move |s| s.groups.get(GROUP) == Some(&members)).await;
    }
    let views_before: Vec<usize> = (1..=3).map(|id| views(&records(&nodes.event_log(id)))).collect();
    let old_key = cohort_actors::crypto::load_key(&nodes.dir().join("cluster.key")).expect("the cluster key");
    let old_id = old_key.id().to_string();
    let new_file = nodes.dir().join("cluster.key.new");
    cohort_actors::crypto::generate_key_file(&new_file).expect("a new key file");
    let new_id = cohort_actors::crypto::load_key(&new_file).expect("the new key").id().to_string();
    let new_path = new_file.to_str().expect("utf-8 path");

    // Traffic from every node, all through the rotation.
    let stop = Arc::new(AtomicBool::new(false));
    let sent: Vec<Arc<AtomicU64>> = (0..3).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let senders: Vec<_> =
        hs.iter().zip(&sent).map(|(h, s)| spawn_sender(h, stop.clone(), s.clone())).collect();
    let progress = |what: &'static str| {
        let want = total(&sent) + 30;
        let nodes = &nodes;
        async move { wait_delivered(nodes, want, what).await }
    };
    progress("traffic before the rotation").await;

    // 1. Install the new key everywhere: accepted, not yet used.
    for s in &sockets {
        assert_eq!(rows(&ok(s, &["list"]).await), vec![(old_id.clone(), true)]);
        let listing = ok(s, &["install", new_path]).await;
        let mut want = vec![(old_id.clone(), true), (new_id.clone(), false)];
        want.sort();
        assert_eq!(rows(&listing), want, "{listing}");
        assert!(listing.contains(new_path), "{listing}");
    }
    progress("traffic with two keys installed").await;
    // 2. Use it everywhere: each node seals under the new key, the others still accept both.
    for s in &sockets {
        let listing = ok(s, &["use", &new_id]).await;
        assert!(rows(&listing).contains(&(new_id.clone(), true)), "{listing}");
        progress("traffic while the nodes switch keys").await;
    }
    // 3. The new key is primary, so it cannot be removed; the old one can, everywhere.
    let refused = cohort_key(&sockets[0], &["remove", &new_id]).await;
    assert!(!refused.status.success());
    let err = text(&refused.stderr);
    assert!(err.contains(&format!("key {new_id} is the primary key and cannot be removed")), "{err}");
    for s in &sockets {
        assert_eq!(rows(&ok(s, &["remove", &old_id]).await), vec![(new_id.clone(), true)]);
    }
    progress("traffic after the old key is gone").await;

    // Stop the traffic: every node delivers exactly every accepted message, once.
    stop.store(true, Relaxed);
    for t in senders {
        t.await.expect("a sender");
    }
    let all = total(&sent);
    wait_delivered(&nodes, all, "every accepted message").await;
    for (i, h) in hs.iter().enumerate() {
        let id = i as u32 + 1;
        let r = records(&nodes.event_log(id));
        assert_eq!(delivers(&r), all, "node {id} delivers exactly the {all} messages sent");
        assert_eq!(views(&r), views_before[i], "node {id}: no view change during the rotation");
        assert_eq!(
            h.metrics.unknown_key_datagrams.load(Relaxed),
            0,
            "node {id}: no datagram under a missing key"
        );
        assert_eq!(h.metrics.bad_datagrams.load(Relaxed), 0, "node {id}: no datagram failed to open");
        assert_eq!(*h.fatal.borrow(), None);
    }
    println!(
        "{all} messages multicast during the rotation ({:?} per node), each delivered once at every node",
        sent
    );
}

#[actix_rt::test]
async fn key_commands_refuse_bad_key_files_and_ids_naming_them() {
    let nodes = Nodes::new("keyring-refusals", 1, "");
    let h = nodes.start(1).await;
    wait_status(&h, "a primary view", |s| s.primary).await;
    let socket = nodes.settings(1, "").operator_socket_path();

    // A key file others may read: refused by the agent, naming the file and the fix.
    let open = nodes.dir().join("open.key");
    std::fs::write(&open, format!("{}\n", "ab".repeat(32))).expect("write");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let o = cohort_key(&socket, &["install", open.to_str().expect("utf-8")]).await;
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains(&format!("key file {} has mode 0644", open.display())), "{err}");
    assert!(err.contains("chmod 600"), "{err}");
    // Missing, and malformed.
    let missing = nodes.dir().join("absent.key");
    let err = text(&cohort_key(&socket, &["install", missing.to_str().expect("utf-8")]).await.stderr);
    assert!(err.contains(&format!("key file {} does not exist", missing.display())), "{err}");
    let short = nodes.dir().join("short.key");
    std::fs::write(&short, "abcd\n").expect("write");
    std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let err = text(&cohort_key(&socket, &["install", short.to_str().expect("utf-8")]).await.stderr);
    assert!(err.contains(&format!("key file {} is malformed", short.display())), "{err}");
    // The same key twice.
    let key = nodes.dir().join("cluster.key");
    let err = text(&cohort_key(&socket, &["install", key.to_str().expect("utf-8")]).await.stderr);
    let id = cohort_actors::crypto::load_key(&key).expect("key").id();
    assert!(err.contains(&format!("key {id} is already installed")), "{err}");
    // Unknown and malformed ids.
    let other = ClusterKey::from_bytes([9; 32]).id().to_string();
    let err = text(&cohort_key(&socket, &["use", &other]).await.stderr);
    assert!(err.contains(&format!("key {other} is not installed")), "{err}");
    let o = cohort_key(&socket, &["remove", "nothex"]).await;
    assert_eq!(o.status.code(), Some(2), "a usage error");
    assert!(text(&o.stderr).contains("key id \"nothex\" is not 8 hex digits"), "{}", text(&o.stderr));
    // Nothing changed.
    assert_eq!(rows(&ok(&socket, &["list"]).await), vec![(id.to_string(), true)]);

    // The operator socket only: the client socket refuses the command, naming the operator socket.
    let mut c = cohort_actors::client::Client::connect(&nodes.settings(1, "").socket_path(), "app")
        .await
        .expect("connect");
    let e = c.keys(cohort_actors::client_proto::KeyRequest::List).await.expect_err("refused");
    assert!(e.to_string().contains("Keys is an operator command"), "{e}");
}

#[actix_rt::test]
async fn a_node_restarted_after_a_rotation_keeps_its_key_ring_and_rejoins() {
    let nodes = Nodes::new("keyring-restart", 3, "");
    // Nodes 1 and 2 in this system; node 3 on its own thread, so it can really restart.
    let [h1, h2] = nodes.start_all([1, 2]).await;
    let mut n3 = Threaded::start(nodes.settings(3, "")).await;
    wait_primary_of_all(&[&h1, &h2, &n3.handle]).await;
    let sockets: Vec<PathBuf> = (1..=3).map(|id| nodes.settings(id, "").operator_socket_path()).collect();
    let old_file = nodes.dir().join("cluster.key");
    let old_id = cohort_actors::crypto::load_key(&old_file).expect("key").id().to_string();
    let new_file = nodes.dir().join("cluster.key.new");
    cohort_actors::crypto::generate_key_file(&new_file).expect("a new key file");
    let new_id = cohort_actors::crypto::load_key(&new_file).expect("key").id().to_string();
    for step in
        [vec!["install", new_file.to_str().expect("utf-8")], vec!["use", &new_id], vec!["remove", &old_id]]
    {
        for s in &sockets {
            ok(s, &step).await;
        }
    }
    // The ring is recorded in the data directory: ids and files, no key material.
    let recorded = std::fs::read_to_string(nodes.data_dir(3).join("keyring.json")).expect("the ring file");
    assert!(recorded.contains(&new_id) && recorded.contains("cluster.key.new"), "{recorded}");
    assert!(!recorded.contains(&old_id), "{recorded}");
    let new_key_hex = std::fs::read_to_string(&new_file).expect("read");
    assert!(!recorded.contains(new_key_hex.trim()), "no key material in the ring file");

    // Node 3 restarts with node.key_file still the old key: its ring comes back from the data directory,
    // so its epoch inquiry and everything after are sealed under the new key, which the others still
    // accept, and it rejoins.
    let before = n3.handle.member;
    n3.stop();
    let n3 = Threaded::start(nodes.settings(3, "")).await;
    assert!(n3.handle.member.epoch() > before.epoch());
    wait_primary_of_all(&[&h1, &h2, &n3.handle]).await;
    let mut want = vec![(old_id.clone(), false), (new_id.clone(), true)];
    want.sort();
    assert_eq!(rows(&ok(&sockets[2], &["list"]).await), want, "node.key_file's key is back, not primary");
    for h in [&h1, &h2] {
        assert_eq!(h.metrics.unknown_key_datagrams.load(Relaxed), 0, "nothing sealed under the removed key");
    }
    assert_eq!(*n3.handle.fatal.borrow(), None);
}
