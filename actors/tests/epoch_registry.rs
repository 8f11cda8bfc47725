//! EpochRegistryActor at the actor level: a real data directory, and the real MembershipActor wired to
//! it with probe actors standing in for every other peer (transport, event log, client API, fencing,
//! supervisor) on a paused tokio clock.
//!
//! What is checked: a reply to `OpenEpoch` or `PersistDurable` comes only once the state is on disk
//! (renamed into place, no temporary file left); nothing is sent or recorded under an epoch or a view
//! before the registry holds it (G12, observed by the probes reading the disk at the moment each message
//! reaches them); a persist that fails is an error, leaves the previous state alone, and makes the
//! membership fail-stop without installing the view; a second registry or a second `cohort agent` on the
//! same data directory is refused; a corrupt or truncated state file is an error naming the file and is
//! never reset.

#[path = "support/paused.rs"]
mod paused;
use paused::advance_until;

use actix::prelude::*;
use cohort::{Config, Durable, Epoch, Event, NodeId};
use cohort_actors::epoch_registry::{DataDirError, EpochRegistryActor, EPOCH_FILE, STATE_FILE};
use cohort_actors::membership::{AgentClock, ExecuteOutputs, MembershipActor, MembershipLinks};
use cohort_actors::messages::*;
use cohort_actors::metrics::Metrics;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[path = "support/scratch.rs"]
mod scratch;
use scratch::Scratch;

impl Scratch {
    fn data(&self) -> PathBuf {
        self.0.join("data")
    }
}

/// The durable state as it is on disk now, decoded independently of the actor.
fn on_disk(dir: &Path) -> Option<Durable> {
    let bytes = std::fs::read(dir.join(STATE_FILE)).ok()?;
    Some(rmp_serde::from_slice(&bytes).expect("state.rmp decodes"))
}

fn tmp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read data dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

#[actix_rt::test]
async fn the_reply_to_open_epoch_and_persist_comes_after_the_state_is_on_disk() {
    let s = Scratch::new("reply");
    let reg = EpochRegistryActor::open(&s.data()).expect("open").start();
    assert_eq!(on_disk(&s.data()), None, "a fresh directory has no state yet");

    let d = reg.send(OpenEpoch { min_epoch: Epoch(0) }).await.expect("mailbox").expect("open epoch");
    assert_eq!(d.epoch, Epoch(1));
    assert_eq!(on_disk(&s.data()), Some(d.clone()), "the new epoch is on disk when the reply arrives");
    assert_eq!(std::fs::read_to_string(s.data().join(EPOCH_FILE)).expect("epoch file"), "1\n");
    assert!(tmp_files(&s.data()).is_empty(), "renamed into place: {:?}", tmp_files(&s.data()));

    let mut next = d.clone();
    next.max_view_seq = 17;
    reg.send(PersistDurable(next.clone())).await.expect("mailbox").expect("persist");
    assert_eq!(on_disk(&s.data()), Some(next), "the snapshot is on disk when the reply arrives");
    assert!(tmp_files(&s.data()).is_empty());
}

#[actix_rt::test]
async fn a_persist_that_fails_is_an_error_naming_the_file_and_the_previous_state_stays() {
    let s = Scratch::new("fail");
    let reg = EpochRegistryActor::open(&s.data()).expect("open").start();
    let d = reg.send(OpenEpoch { min_epoch: Epoch(4) }).await.expect("mailbox").expect("open epoch");
    // A directory where the temporary file must go: creating the file fails, even for root.
    let tmp = s.data().join(format!("{STATE_FILE}.tmp"));
    std::fs::create_dir(&tmp).expect("block the temporary file");
    let mut next = d.clone();
    next.max_view_seq = 99;
    let err = reg.send(PersistDurable(next)).await.expect("mailbox").expect_err("the persist must fail");
    assert!(err.to_string().starts_with(&format!("cannot create {}: ", tmp.display())), "{err}");
    assert_eq!(on_disk(&s.data()), Some(d), "the previous state is untouched");
    // The actor is still there and answers once the obstacle is gone.
    std::fs::remove_dir(&tmp).expect("unblock");
    let later = reg.send(OpenEpoch { min_epoch: Epoch(0) }).await.expect("mailbox").expect("open epoch");
    assert_eq!(later.epoch, Epoch(5));
}

#[actix_rt::test]
async fn a_second_registry_on_a_data_dir_in_use_is_refused_and_changes_nothing() {
    let s = Scratch::new("lock");
    let reg = EpochRegistryActor::open(&s.data()).expect("open").start();
    let d = reg.send(OpenEpoch { min_epoch: Epoch(0) }).await.expect("mailbox").expect("open epoch");
    let err = EpochRegistryActor::open(&s.data()).expect_err("the directory is in use");
    assert!(matches!(err, DataDirError::InUse { .. }), "{err}");
    let io: io::Error = err.into();
    assert_eq!(io.kind(), io::ErrorKind::WouldBlock);
    assert_eq!(on_disk(&s.data()), Some(d), "the refused registry wrote nothing");
}

#[test]
fn a_second_cohort_agent_on_the_same_data_dir_exits_naming_the_lock() {
    let s = Scratch::new("agent-lock");
    // This test holds the directory as a running agent would.
    let _held = EpochRegistryActor::open(&s.data()).expect("open");
    let key = s.0.join("cluster.key");
    cohort_actors::crypto::generate_key_file(&key).expect("key");
    let port = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let config = s.0.join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[cluster]\nname = \"lock\"\n[[cluster.nodes]]\nid = 1\naddr = \"127.0.0.1:{port}\"\n\
             [node]\nid = 1\ndata_dir = \"{}\"\nkey_file = \"{}\"\n[admin]\nlisten = \"\"\n",
            s.data().display(),
            key.display()
        ),
    )
    .expect("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(["agent", "--config"])
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run cohort agent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let d = s.data().display().to_string();
    assert!(
        stderr.contains(&format!(
            "data directory {d} is in use by another cohort agent (lock held on {d}/lock)"
        )),
        "{stderr}"
    );
    assert_eq!(on_disk(&s.data()), None, "the refused agent took no epoch");
}

#[actix_rt::test]
async fn a_truncated_or_corrupt_state_file_is_an_error_naming_it_and_is_never_reset() {
    let s = Scratch::new("corrupt");
    let state = s.data().join(STATE_FILE);
    {
        let reg = EpochRegistryActor::open(&s.data()).expect("open").start();
        let mut d = reg.send(OpenEpoch { min_epoch: Epoch(6) }).await.expect("mailbox").expect("open epoch");
        d.max_view_seq = 1234;
        reg.send(PersistDurable(d)).await.expect("mailbox").expect("persist");
    }
    let good = std::fs::read(&state).expect("read state");
    for (what, bytes) in [
        ("truncated", good[..good.len() / 2].to_vec()),
        ("empty", Vec::new()),
        ("garbage", b"\xc1 not msgpack".to_vec()),
    ] {
        std::fs::write(&state, &bytes).expect("damage the state file");
        // Opening the directory works (the lock is the previous actor's until it is dropped: retry).
        let reg = loop {
            match EpochRegistryActor::open(&s.data()) {
                Ok(r) => break r,
                Err(DataDirError::InUse { .. }) => tokio::task::yield_now().await,
                Err(e) => panic!("{what}: open: {e}"),
            }
        };
        let err = reg.load().expect_err("a damaged state must not load");
        assert!(matches!(err, DataDirError::Corrupt { .. }), "{what}: {err}");
        let line = err.to_string();
        assert!(line.starts_with(&format!("corrupt state file {}: ", state.display())), "{what}: {line}");
        assert!(
            line.ends_with("(not reset automatically: move it aside to start this node as new)"),
            "{line}"
        );
        let addr = reg.start();
        let e = addr.send(OpenEpoch { min_epoch: Epoch(0) }).await.expect("mailbox").expect_err(what);
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{what}");
        assert_eq!(std::fs::read(&state).expect("read"), bytes, "{what}: left as it was for the operator");
        assert_eq!(std::fs::read_to_string(s.data().join(EPOCH_FILE)).expect("epoch"), "6\n", "{what}");
        drop(addr);
    }
}

// ---------------------------------------------------------------------------------------------------
// The registry under the real MembershipActor, every other peer a probe, on a paused clock.
// ---------------------------------------------------------------------------------------------------

/// One message a probe got, with the durable state on disk at the moment it arrived.
type Sighting = (String, Option<Durable>);

/// What the probes saw, in order.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Sighting>>>);

impl Seen {
    fn push(&self, what: String, disk: Option<Durable>) {
        if let Ok(mut v) = self.0.lock() {
            v.push((what, disk));
        }
    }
    fn all(&self) -> Vec<Sighting> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
    fn has(&self, what: &str) -> bool {
        self.all().iter().any(|(w, _)| w.starts_with(what))
    }
}

/// Stands in for the transport, event log, client API, fencing and supervisor; reads the disk as
/// each message arrives.
struct Probe {
    seen: Seen,
    dir: PathBuf,
}

impl Actor for Probe {
    type Context = Context<Self>;
}

impl Probe {
    fn saw(&self, what: String) {
        self.seen.push(what, on_disk(&self.dir));
    }
}

impl Handler<SendFrame> for Probe {
    type Result = ();
    fn handle(&mut self, m: SendFrame, _: &mut Context<Self>) {
        self.saw(format!("send:{}", m.to.0));
    }
}

impl Handler<AppendRecord> for Probe {
    type Result = ();
    fn handle(&mut self, m: AppendRecord, _: &mut Context<Self>) {
        let what = match &m.0.event {
            Event::View { view, .. } => format!("view:{}", view.seq),
            Event::Start { .. } => format!("start:{}", m.0.epoch.0),
            other => format!("record:{other:?}"),
        };
        self.saw(what);
    }
}

impl Handler<FatalError> for Probe {
    type Result = ();
    fn handle(&mut self, m: FatalError, _: &mut Context<Self>) {
        self.saw(format!("fatal:{}", m.detail));
    }
}

macro_rules! ignore {
    ($($msg:ty),*) => {$(
        impl Handler<$msg> for Probe {
            type Result = ();
            fn handle(&mut self, _: $msg, _: &mut Context<Self>) {}
        }
    )*};
}
ignore!(AppNotified, SelfFenced, Fence, NewEpochRequested);

fn config() -> Arc<Config> {
    let mut c = Config::new("test", &[1, 2]);
    c.heartbeat_interval_ms = 20;
    c.failure_timeout_ms = 200;
    c.discovery_interval_ms = 100;
    c.view_change_timeout_ms = 150;
    c.retransmit_interval_ms = 20;
    Arc::new(c)
}

/// Node 1 of two, its peer absent: it probes node 2, then forms a (non-primary) view of itself, which
/// takes a persisted ballot. The registry is real; everything else is the probe.
async fn start_membership(s: &Scratch, seen: &Seen) -> Addr<MembershipActor> {
    let reg = EpochRegistryActor::open(&s.data()).expect("open").start();
    let durable = reg.send(OpenEpoch { min_epoch: Epoch(0) }).await.expect("mailbox").expect("open epoch");
    let probe = Probe { seen: seen.clone(), dir: s.data() }.start();
    let links = MembershipLinks {
        send_frame: probe.clone().recipient(),
        persist: reg.recipient(),
        record: probe.clone().recipient(),
        app: probe.clone().recipient(),
        self_fenced: probe.clone().recipient(),
        fence: probe.clone().recipient(),
        new_epoch: probe.clone().recipient(),
        fatal: probe.clone().recipient(),
        left: None,
    };
    let (actor, first) = MembershipActor::new(
        config(),
        NodeId(1),
        durable,
        links,
        Arc::new(Metrics::default()),
        AgentClock::new(),
    );
    let addr = actor.start();
    addr.do_send(ExecuteOutputs(first));
    addr
}

#[actix_rt::test]
async fn nothing_is_sent_or_recorded_under_an_epoch_or_a_view_before_the_registry_holds_it() {
    tokio::time::pause();
    let s = Scratch::new("g12");
    let seen = Seen::default();
    let _m = start_membership(&s, &seen).await;
    assert!(
        advance_until(Duration::from_secs(3), || seen.has("view:")).await,
        "no view formed: {:?}",
        seen.all().iter().map(|(w, _)| w.clone()).collect::<Vec<_>>()
    );
    let all = seen.all();
    assert!(all.iter().any(|(w, _)| w == "send:2"), "the absent peer is probed");
    for (what, disk) in &all {
        let disk = disk.as_ref().unwrap_or_else(|| panic!("{what} before any state was on disk"));
        assert_eq!(disk.epoch, Epoch(1), "{what} under an epoch the disk holds");
        if let Some(seq) = what.strip_prefix("view:") {
            let seq: u64 = seq.parse().expect("seq");
            assert!(disk.max_view_seq >= seq, "view {seq} recorded before its ballot was on disk ({disk:?})");
        }
    }
    assert_eq!(all.first().map(|(w, _)| w.as_str()), Some("start:1"), "the start record comes first");
    assert!(!seen.has("fatal:"));
}

#[actix_rt::test]
async fn when_the_registry_cannot_persist_a_ballot_the_membership_fail_stops_without_the_view() {
    tokio::time::pause();
    let s = Scratch::new("g12-fail");
    let seen = Seen::default();
    let _m = start_membership(&s, &seen).await;
    // From now on every persist fails: the next ballot cannot be made durable.
    std::fs::create_dir(s.data().join(format!("{STATE_FILE}.tmp"))).expect("block the temporary file");
    assert!(
        advance_until(Duration::from_secs(3), || seen.has("fatal:")).await,
        "no fatal error: {:?}",
        seen.all().iter().map(|(w, _)| w.clone()).collect::<Vec<_>>()
    );
    let all: Vec<String> = seen.all().into_iter().map(|(w, _)| w).collect();
    let fatal = all.iter().find(|w| w.starts_with("fatal:")).expect("fatal");
    assert!(fatal.starts_with("fatal:cannot persist durable state: cannot create "), "{fatal}");
    assert!(
        !all.iter().any(|w| w.starts_with("view:")),
        "no view was installed on an unpersisted ballot: {all:?}"
    );
}
