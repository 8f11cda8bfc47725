//! EventLogActor at the actor level: a real log file, a probe as the supervisor (it records
//! `FatalError`), and the real MembershipActor writing through it with probes for its other peers on a
//! paused tokio clock.
//!
//! What is checked: every kind of event of `shared/spec/event-log.md` is written as one line with
//! exactly the spec's field names and value shapes (members as `[node, epoch]`, view ids as
//! `{"seq", "coord"}`), plus only the documented additions; each line is in the file, whole, when the
//! append's reply arrives (a second reader sees it; nothing is buffered); an existing log is appended
//! to, never rewritten; `Flush` changes nothing in the content; a write that fails is reported to the
//! supervisor once; and the log a running membership writes passes the checker `cohort verify` runs.

#[path = "support/paused.rs"]
mod paused;
use paused::advance_until;

use actix::prelude::*;
use cohort::{
    BlockReason, Config, Delivery, Durable, Epoch, Event, FenceMethod, Member, MergeAction, NodeId, Record,
    TransferRole, ViewId,
};
use cohort_actors::event_log::{EventLogActor, Flush};
use cohort_actors::membership::{AgentClock, ExecuteOutputs, MembershipActor, MembershipLinks};
use cohort_actors::messages::*;
use cohort_actors::metrics::Metrics;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[path = "support/scratch.rs"]
mod scratch;
use scratch::Scratch;

impl Scratch {
    fn log(&self) -> PathBuf {
        self.0.join("events.jsonl")
    }
}

/// Records what reaches it as short lines; answers `PersistDurable` with success.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    fn push(&self, s: String) {
        if let Ok(mut v) = self.0.lock() {
            v.push(s);
        }
    }
    fn all(&self) -> Vec<String> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

struct Probe(Seen);

impl Actor for Probe {
    type Context = Context<Self>;
}

impl Handler<FatalError> for Probe {
    type Result = ();
    fn handle(&mut self, m: FatalError, _: &mut Context<Self>) {
        self.0.push(format!("fatal:{}", m.detail));
    }
}

impl Handler<PersistDurable> for Probe {
    type Result = std::io::Result<()>;
    fn handle(&mut self, _: PersistDurable, _: &mut Context<Self>) -> std::io::Result<()> {
        self.0.push("persist".into());
        Ok(())
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
ignore!(SendFrame, AppNotified, SelfFenced, Fence, NewEpochRequested);

fn m(node: u32, epoch: u64) -> Member {
    Member(NodeId(node), Epoch(epoch))
}

fn vid(seq: u64, coord: u32) -> ViewId {
    ViewId { seq, coord: NodeId(coord) }
}

/// One record of every kind in the spec, with the spec's further fields and the additions this
/// implementation may write for it.
fn every_kind() -> Vec<(Event, &'static [&'static str], &'static [&'static str])> {
    vec![
        (Event::Start { version: "0.1.0".into() }, &["version"], &[]),
        (
            Event::View {
                view: vid(7, 1),
                members: vec![m(1, 3), m(2, 5)],
                primary: true,
                joined: vec![m(2, 5)],
                left: vec![m(3, 1)],
                failed: vec![m(4, 2)],
                prev: Some(vid(6, 1)),
            },
            &["view", "members", "primary", "joined", "left", "failed"],
            &["prev"],
        ),
        (Event::Blocked { reason: BlockReason::NoQuorum }, &["reason"], &[]),
        (Event::Unblocked {}, &[], &[]),
        (
            Event::Send {
                group: "orders".into(),
                msg: "1.3.42".into(),
                bytes: 64,
                delivery: Delivery::Safe,
                digest: "ab12".into(),
            },
            &["group", "msg", "bytes", "delivery", "digest"],
            &[],
        ),
        (
            Event::Deliver {
                group: "orders".into(),
                msg: "2.5.9".into(),
                sender: m(2, 5),
                view: vid(7, 1),
                digest: "cd34".into(),
                seq: Some(12),
                delivery: Some(Delivery::Agreed),
                held: true,
            },
            &["group", "msg", "sender", "view", "digest"],
            &["seq", "delivery", "held"],
        ),
        (
            Event::GroupView { group: "orders".into(), view: vid(7, 1), members: vec![m(1, 3), m(2, 5)] },
            &["group", "view", "members"],
            &[],
        ),
        (
            Event::StatefulMerge {
                member: m(4, 2),
                view: vid(7, 1),
                action: MergeAction::Fence,
                policy: Some("fence".into()),
            },
            &["member", "view", "action"],
            &["policy"],
        ),
        (Event::RemovedSelf { view: vid(8, 2) }, &["view"], &[]),
        (Event::FenceRequest { target: m(4, 2), reason: "failed".into() }, &["target", "reason"], &[]),
        (
            Event::FenceResult {
                target: m(4, 2),
                ok: true,
                method: FenceMethod::Agent,
                detail: "level 1 ipmi: ok".into(),
            },
            &["target", "ok", "method", "detail"],
            &[],
        ),
        (Event::Recovered { view: vid(7, 1), failed: vec![m(4, 2)] }, &["view", "failed"], &[]),
        (
            Event::StateTransfer {
                group: "orders".into(),
                role: TransferRole::Provider,
                peer: m(2, 5),
                bytes: 4096,
                ok: true,
                point: Some("7.1#12".into()),
            },
            &["group", "role", "peer", "bytes", "ok"],
            &["point"],
        ),
        (Event::SelfFence { reason: "no primary view for 30 s".into() }, &["reason"], &[]),
        (Event::Stop { reason: "leave".into() }, &["reason"], &[]),
    ]
}

fn is_member(v: &Value) -> bool {
    v.as_array().is_some_and(|a| a.len() == 2 && a.iter().all(Value::is_u64))
}

fn is_view_id(v: &Value) -> bool {
    v.as_object().is_some_and(|o| o.len() == 2 && o["seq"].is_u64() && o["coord"].is_u64())
}

/// Checks the shape of one spec field.
fn check_field(kind: &str, name: &str, v: &Value) {
    let ok = match name {
        "members" | "joined" | "left" | "failed" => v.as_array().is_some_and(|a| a.iter().all(is_member)),
        "member" | "sender" | "target" | "peer" => is_member(v),
        "view" => is_view_id(v),
        "primary" | "ok" => v.is_boolean(),
        "bytes" => v.is_u64(),
        "delivery" => v == "agreed" || v == "safe",
        "reason" if kind == "blocked" => {
            ["no_quorum", "fencing", "stateful_merge_wait", "state_transfer"].iter().any(|r| v == *r)
        }
        "action" => ["refuse", "fence", "kill", "wait"].iter().any(|r| v == *r),
        "method" => ["agent", "ack", "watchdog", "restarted"].iter().any(|r| v == *r),
        "role" => v == "provider" || v == "receiver",
        _ => v.is_string(),
    };
    assert!(ok, "{kind}.{name} has the wrong shape: {v}");
}

#[actix_rt::test]
async fn every_event_kind_is_one_line_with_exactly_the_spec_fields() {
    let s = Scratch::new("spec");
    let seen = Seen::default();
    let fatal = Probe(seen.clone()).start();
    let log = EventLogActor::open(&s.log(), fatal.recipient()).expect("open").start();
    let kinds = every_kind();
    for (i, (event, _, _)) in kinds.iter().enumerate() {
        let r = Record {
            ts_ms: 1_700_000_000_000 + i as u64,
            node: NodeId(1),
            epoch: Epoch(3),
            event: event.clone(),
        };
        log.send(AppendRecord(r)).await.expect("mailbox");
        // The line is in the file, whole, as soon as the append was handled: a second reader sees it.
        let text = std::fs::read_to_string(s.log()).expect("read");
        assert_eq!(text.lines().count(), i + 1, "one line per record");
        assert!(text.ends_with('\n'), "no half line");
    }
    let text = std::fs::read_to_string(s.log()).expect("read");
    let names: BTreeSet<&str> = ["ts_ms", "node", "epoch", "event"].into();
    for (line, (event, further, additions)) in text.lines().zip(&kinds) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"));
        let obj = v.as_object().expect("a JSON object per line");
        let kind = obj["event"].as_str().expect("event is a string");
        assert!(obj["ts_ms"].is_u64() && obj["node"] == 1 && obj["epoch"] == 3, "{line}");
        let keys: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
        let required: BTreeSet<&str> = names.iter().copied().chain(further.iter().copied()).collect();
        let allowed: BTreeSet<&str> = required.iter().copied().chain(additions.iter().copied()).collect();
        assert!(keys.is_superset(&required), "{kind}: missing {:?} in {line}", &required - &keys);
        assert!(keys.is_subset(&allowed), "{kind}: unexpected {:?} in {line}", &keys - &allowed);
        for f in *further {
            check_field(kind, f, &obj[*f]);
        }
        // And it reads back as the record written.
        assert_eq!(&Record::from_json_line(line).expect("parses").event, event);
    }
    let kinds_written: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json")["event"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        kinds_written,
        [
            "start",
            "view",
            "blocked",
            "unblocked",
            "send",
            "deliver",
            "group_view",
            "stateful_merge",
            "removed_self",
            "fence_request",
            "fence_result",
            "recovered",
            "state_transfer",
            "self_fence",
            "stop"
        ],
        "the spec's event names"
    );
    log.send(Flush).await.expect("mailbox");
    assert_eq!(std::fs::read_to_string(s.log()).expect("read"), text, "a flush changes nothing");
    assert!(seen.all().is_empty(), "no fatal error: {:?}", seen.all());
}

#[actix_rt::test]
async fn an_existing_log_is_appended_to_and_never_rewritten() {
    let s = Scratch::new("append");
    let before = "{\"ts_ms\":1,\"node\":1,\"epoch\":1,\"event\":\"start\",\"version\":\"old\"}\n";
    std::fs::write(s.log(), before).expect("seed the log");
    let seen = Seen::default();
    let log = EventLogActor::open(&s.log(), Probe(seen.clone()).start().recipient()).expect("open").start();
    let r =
        Record { ts_ms: 2, node: NodeId(1), epoch: Epoch(2), event: Event::Start { version: "new".into() } };
    log.send(AppendRecord(r.clone())).await.expect("mailbox");
    let text = std::fs::read_to_string(s.log()).expect("read");
    assert!(text.starts_with(before), "the old lines are kept byte for byte: {text}");
    assert_eq!(&text[before.len()..], format!("{}\n", r.to_json_line()));
}

#[actix_rt::test]
async fn a_write_that_fails_is_reported_to_the_supervisor_once() {
    let seen = Seen::default();
    let log = EventLogActor::open(Path::new("/dev/full"), Probe(seen.clone()).start().recipient())
        .expect("open")
        .start();
    for i in 0..3 {
        let r = Record { ts_ms: i, node: NodeId(1), epoch: Epoch(1), event: Event::Unblocked {} };
        log.send(AppendRecord(r)).await.expect("mailbox");
    }
    // The probe's mailbox is drained once a message sent after the reports has been handled.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.all().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all = seen.all();
    assert_eq!(all.len(), 1, "reported once: {all:?}");
    assert!(all[0].starts_with("fatal:cannot append to event log /dev/full: "), "{all:?}");
}

#[actix_rt::test]
async fn the_log_a_running_membership_writes_passes_the_checker() {
    tokio::time::pause();
    let s = Scratch::new("membership");
    let seen = Seen::default();
    let probe = Probe(seen.clone()).start();
    let log = EventLogActor::open(&s.log(), probe.clone().recipient()).expect("open").start();
    let links = MembershipLinks {
        send_frame: probe.clone().recipient(),
        persist: probe.clone().recipient(),
        record: log.clone().recipient(),
        app: probe.clone().recipient(),
        self_fenced: probe.clone().recipient(),
        fence: probe.clone().recipient(),
        new_epoch: probe.clone().recipient(),
        fatal: probe.clone().recipient(),
        left: None,
    };
    let mut cfg = Config::new("test", &[1]);
    cfg.heartbeat_interval_ms = 20;
    cfg.failure_timeout_ms = 200;
    cfg.discovery_interval_ms = 100;
    cfg.view_change_timeout_ms = 150;
    cfg.retransmit_interval_ms = 20;
    let (actor, first) = MembershipActor::new(
        Arc::new(cfg),
        NodeId(1),
        Durable::fresh(Epoch(4)),
        links,
        Arc::new(Metrics::default()),
        AgentClock::new(),
    );
    let membership = actor.start();
    membership.do_send(ExecuteOutputs(first));
    let path = s.log();
    let has = |kind: &str| {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains(&format!("\"event\":\"{kind}\"")))
    };
    assert!(advance_until(Duration::from_secs(2), || has("view")).await, "no view line");
    membership.send(JoinGroup { group: "g".into() }).await.expect("join");
    let id = membership
        .send(Multicast { group: "g".into(), payload: b"x".to_vec(), delivery: Delivery::Agreed })
        .await
        .expect("mailbox")
        .expect("accepted");
    assert!(advance_until(Duration::from_secs(2), || has("deliver")).await, "no deliver line");
    membership.send(LeaveCluster).await.expect("leave");
    assert!(advance_until(Duration::from_secs(1), || has("stop")).await, "no stop line");
    log.send(Flush).await.expect("mailbox");

    let text = std::fs::read_to_string(&path).expect("read");
    let records: Vec<Record> =
        text.lines().map(|l| Record::from_json_line(l).expect("a record per line")).collect();
    assert!(matches!(records.first().map(|r| &r.event), Some(Event::Start { .. })), "{text}");
    assert!(records.iter().all(|r| r.member() == m(1, 4)), "every line names the writer: {text}");
    let msg = format!("1.4.{}", id.n);
    assert!(
        records.iter().any(|r| matches!(&r.event, Event::Send { msg: x, .. } if *x == msg))
            && records.iter().any(|r| matches!(&r.event, Event::Deliver { msg: x, .. } if *x == msg)),
        "{text}"
    );
    assert!(records.windows(2).all(|w| w[0].ts_ms <= w[1].ts_ms), "timestamps never go back: {text}");
    let violations = cohort::checker::check_all(&records);
    assert!(violations.is_empty(), "{violations:#?}");
    assert!(!seen.all().iter().any(|s| s.starts_with("fatal:")), "{:?}", seen.all());
}
