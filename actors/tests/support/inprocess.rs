//! Agents started inside the test process with the composition root ([`start_node`]) the binary uses:
//! real data directories, real UDP sockets on loopback, real client sockets and event logs, and no
//! child processes. Tests that need to reach into a node (its supervisor, its transport, its metrics)
//! use this; tests of the `cohort` binary as a user runs it use `support/mod.rs`.
//!
//! A [`Nodes`] owns a temporary directory (configuration files, the cluster key, each node's data
//! directory) and removes it on drop, also when a test fails. Waits poll with a deadline.

#![allow(dead_code)]

use cohort::node::Status;
use cohort::Record;
use cohort_actors::messages::GetStatus;
use cohort_actors::settings::Settings;
use cohort_actors::settings_load::{self, LoadOptions};
use cohort_actors::supervisor::{start_node, NodeHandle};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Fast timings for in-process nodes on loopback (milliseconds).
pub const TIMING: &str = "[timing]\nheartbeat_interval_ms = 20\nfailure_timeout_ms = 300\n\
    discovery_interval_ms = 100\nview_change_timeout_ms = 150\nretransmit_interval_ms = 20\n";

/// The cluster's failure timeout in [`TIMING`].
pub const FAILURE_TIMEOUT: Duration = Duration::from_millis(300);

/// How long any wait of these tests may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The configuration and data of an in-process cluster.
pub struct Nodes {
    dir: PathBuf,
    ports: Vec<u16>,
    key: PathBuf,
}

impl Nodes {
    /// A cluster of `n` nodes (ids 1..=n) on free loopback ports, with `extra` TOML appended to the
    /// cluster configuration (for example an `[admin]` section; without one the endpoint is off).
    pub fn new(name: &str, n: u32, extra: &str) -> Nodes {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("cohort-inproc-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the test directory");
        let sockets: Vec<std::net::UdpSocket> =
            (0..n).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a free port")).collect();
        let ports: Vec<u16> = sockets.iter().map(|s| s.local_addr().expect("addr").port()).collect();
        drop(sockets);
        let key = dir.join("cluster.key");
        cohort_actors::crypto::generate_key_file(&key).expect("write the cluster key");
        let mut cluster = format!("[cluster]\nname = \"inproc-{name}\"\n");
        for (i, port) in ports.iter().enumerate() {
            cluster.push_str(&format!("\n[[cluster.nodes]]\nid = {}\naddr = \"127.0.0.1:{port}\"\n", i + 1));
        }
        cluster.push_str(&format!("\n{TIMING}\n{extra}\n"));
        if !extra.contains("[admin]") {
            // The built-in default is a fixed port; tests that want the endpoint say so.
            cluster.push_str("\n[admin]\nlisten = \"\"\n");
        }
        std::fs::write(dir.join("cluster.toml"), cluster).expect("write cluster.toml");
        Nodes { dir, ports, key }
    }

    /// The test directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Node `id`'s data directory.
    pub fn data_dir(&self, id: u32) -> PathBuf {
        self.dir.join(format!("node{id}"))
    }

    /// Node `id`'s event log.
    pub fn event_log(&self, id: u32) -> PathBuf {
        self.data_dir(id).join("events.jsonl")
    }

    /// Node `id`'s settings, loaded through the layered loader from the cluster file and a node file
    /// with `node_extra` appended (no system file, no environment).
    pub fn settings(&self, id: u32, node_extra: &str) -> Settings {
        let node = self.dir.join(format!("node{id}.toml"));
        let data = self.data_dir(id);
        std::fs::write(
            &node,
            format!(
                "[node]\nid = {id}\ndata_dir = \"{}\"\nkey_file = \"{}\"\n{node_extra}\n",
                data.display(),
                self.key.display()
            ),
        )
        .expect("write the node configuration");
        let opts = LoadOptions {
            config_files: vec![self.dir.join("cluster.toml"), node],
            system_file: None,
            env: vec![],
            overrides: vec![],
        };
        settings_load::load(&opts).unwrap_or_else(|e| panic!("settings of node {id}: {e}")).settings
    }

    /// Starts node `id` in this process (inside the test's actix system).
    pub async fn start(&self, id: u32) -> NodeHandle {
        self.start_with(id, "").await
    }

    /// Starts the nodes `ids` together: a node's start waits for a majority of the cluster to answer its
    /// epoch inquiry (G12), so nodes of one cluster cannot be started one after the other to completion.
    pub async fn start_all<const N: usize>(&self, ids: [u32; N]) -> [NodeHandle; N] {
        let tasks: Vec<_> = ids
            .iter()
            .map(|&id| {
                let settings = self.settings(id, "");
                actix_rt::spawn(async move {
                    start_node(settings).await.unwrap_or_else(|e| panic!("start node {id}: {e:#}"))
                })
            })
            .collect();
        let mut handles = Vec::with_capacity(N);
        for t in tasks {
            handles.push(t.await.expect("a node's start panicked"));
        }
        handles.try_into().unwrap_or_else(|_| unreachable!("one handle per id"))
    }

    /// Starts node `id` with `node_extra` TOML in its node file.
    pub async fn start_with(&self, id: u32, node_extra: &str) -> NodeHandle {
        start_node(self.settings(id, node_extra)).await.unwrap_or_else(|e| panic!("start node {id}: {e:#}"))
    }

    /// Node `id`'s configuration files, for `cohort agent --config` (written by [`Nodes::settings`]).
    pub fn config_files(&self, id: u32) -> [PathBuf; 2] {
        [self.dir.join("cluster.toml"), self.dir.join(format!("node{id}.toml"))]
    }

    /// The ports of the nodes, by id - 1.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The node's status.
pub async fn status(h: &NodeHandle) -> Status {
    h.membership.send(GetStatus).await.expect("the membership answers")
}

/// Polls `h`'s status until `cond` holds; panics with the last status after [`DEADLINE`].
pub async fn wait_status(h: &NodeHandle, what: &str, cond: impl Fn(&Status) -> bool) -> Status {
    let end = Instant::now() + DEADLINE;
    loop {
        let s = status(h).await;
        if cond(&s) {
            return s;
        }
        assert!(Instant::now() < end, "{what}: not reached within {DEADLINE:?}; last status {s:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until every handle has installed one primary view with all of them as members.
pub async fn wait_primary_of_all(handles: &[&NodeHandle]) {
    let members: Vec<_> = handles.iter().map(|h| h.member).collect();
    for h in handles {
        let want = members.clone();
        wait_status(h, "a primary view of every node", move |s| {
            s.primary && s.view.as_ref().is_some_and(|v| v.members == want)
        })
        .await;
    }
}

/// The records of an event log (every line must parse).
pub fn records(path: &Path) -> Vec<Record> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            Record::from_json_line(l).unwrap_or_else(|e| panic!("{}: bad line {l:?}: {e}", path.display()))
        })
        .collect()
}

/// Polls the event log at `path` until `cond` holds for its records; panics after [`DEADLINE`].
pub async fn wait_records(path: &Path, what: &str, cond: impl Fn(&[Record]) -> bool) -> Vec<Record> {
    let end = Instant::now() + DEADLINE;
    loop {
        let r = records(path);
        if cond(&r) {
            return r;
        }
        assert!(Instant::now() < end, "{what}: not in {} within {DEADLINE:?}: {r:#?}", path.display());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A node running in its own actix system on its own thread, so that it can be stopped for good (its
/// sockets closed, its data directory unlocked) and started again in the same test: a real restart.
/// Dropping it stops that system.
pub struct Threaded {
    pub handle: NodeHandle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Threaded {
    pub async fn start(settings: Settings) -> Threaded {
        let (handle_tx, handle_rx) = tokio::sync::oneshot::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let system = actix::System::new();
            system.block_on(async move {
                let started = start_node(settings).await.map_err(|e| format!("{e:#}"));
                let _ = handle_tx.send(started);
                let _ = stop_rx.await;
            });
            // Dropping the system's runtime drops every actor: sockets and the data directory's lock go.
        });
        let handle = tokio::time::timeout(DEADLINE, handle_rx)
            .await
            .expect("the node started within the deadline")
            .expect("the node's thread alive")
            .unwrap_or_else(|e| panic!("start the node: {e}"));
        Threaded { handle, stop: Some(stop), thread: Some(thread) }
    }

    /// Stops the node's system and waits for its thread to end.
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Threaded {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Joins `group` at the agent whose client socket is `socket` the way an application does: through a
/// client connection that answers every `ProvideState` with an empty state and reads every other event,
/// so that members joining after it get their state (a joiner's own multicasts wait for it) and it
/// never falls behind. The connection lives until the test's runtime ends or the agent closes it.
pub async fn join_as_application(socket: &Path, group: &str) {
    use cohort_actors::client::{Client, ClientEvent};
    let mut client = Client::connect(socket, "inprocess-app").await.expect("connect to the client socket");
    client.join(group).await.expect("join through the client socket");
    actix_rt::spawn(async move {
        while let Ok(event) = client.next_event().await {
            if let ClientEvent::ProvideState { group, joiner, token } = event {
                if client.provide_state(&group, joiner, token, Vec::new()).await.is_err() {
                    break;
                }
            }
        }
    });
}
