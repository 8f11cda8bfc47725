//! MembershipActor against probe actors (mocked peers and collaborators) on a paused tokio clock.
//!
//! The probe stands in for the transport, the epoch registry, the event log, the client API, the fencing
//! actor and the supervisor, and records every message it gets, in order. Time only moves when the test
//! advances it, so the core's timers (heartbeats, discovery, view changes) are exercised
//! deterministically.

use actix::prelude::*;
use cohort::{Config, Delivery, Durable, Epoch, Event, NodeId, Notification};
use cohort_actors::membership::{AgentClock, ExecuteOutputs, LeftCluster, MembershipActor, MembershipLinks};
use cohort_actors::messages::*;
use cohort_actors::metrics::Metrics;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Records every message as a short line: `send:N`, `persist`, `record:<event>`, `app:<kind>`...
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, s: String) {
        if let Ok(mut v) = self.0.lock() {
            v.push(s);
        }
    }
    fn lines(&self) -> Vec<String> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
    fn position(&self, line: &str) -> Option<usize> {
        self.lines().iter().position(|l| l == line)
    }
}

struct Probe(Log);

impl Actor for Probe {
    type Context = Context<Self>;
}

macro_rules! record {
    ($msg:ty, $ret:ty, $body:expr) => {
        impl Handler<$msg> for Probe {
            type Result = $ret;
            fn handle(&mut self, msg: $msg, _: &mut Context<Self>) -> $ret {
                let f: fn(&$msg) -> String = $body;
                self.0.push(f(&msg));
                Default::default()
            }
        }
    };
}

record!(SendFrame, (), |m| format!("send:{}", m.to.0));
record!(AppendRecord, (), |m| format!("record:{}", event_name(&m.0.event)));
record!(AppNotified, (), |m| format!("app:{}", notification_name(&m.0)));
record!(SelfFenced, (), |_| "self_fenced".to_string());
record!(Fence, (), |m| format!("fence:{}", m.target));
record!(NewEpochRequested, (), |_| "new_epoch".to_string());
record!(FatalError, (), |m| format!("fatal:{}", m.detail));
record!(LeftCluster, (), |_| "left".to_string());

impl Handler<PersistDurable> for Probe {
    type Result = std::io::Result<()>;
    fn handle(&mut self, _msg: PersistDurable, _: &mut Context<Self>) -> std::io::Result<()> {
        self.0.push("persist".to_string());
        Ok(())
    }
}

fn event_name(e: &Event) -> String {
    match e {
        Event::View { primary: true, .. } => "view(primary)".into(),
        Event::View { primary: false, .. } => "view(non-primary)".into(),
        Event::Start { .. } => "start".into(),
        Event::Blocked { .. } => "blocked".into(),
        Event::Unblocked {} => "unblocked".into(),
        Event::Send { .. } => "send".into(),
        Event::Deliver { .. } => "deliver".into(),
        Event::GroupView { .. } => "group_view".into(),
        other => format!("{other:?}").split_whitespace().next().unwrap_or("?").to_lowercase(),
    }
}

fn notification_name(n: &Notification) -> &'static str {
    match n {
        Notification::View(_) => "view",
        Notification::Deliver { .. } => "deliver",
        Notification::GroupView { .. } => "group_view",
        Notification::Blocked(_) => "blocked",
        Notification::Unblocked => "unblocked",
        _ => "other",
    }
}

fn config(nodes: &[u32]) -> Arc<Config> {
    let mut c = Config::new("test", nodes);
    c.heartbeat_interval_ms = 20;
    c.failure_timeout_ms = 200;
    c.discovery_interval_ms = 100;
    c.view_change_timeout_ms = 150;
    c.retransmit_interval_ms = 20;
    Arc::new(c)
}

fn start(cfg: Arc<Config>, log: &Log) -> Addr<MembershipActor> {
    let probe = Probe(log.clone()).start();
    let links = MembershipLinks {
        send_frame: probe.clone().recipient(),
        persist: probe.clone().recipient(),
        record: probe.clone().recipient(),
        app: probe.clone().recipient(),
        self_fenced: probe.clone().recipient(),
        fence: probe.clone().recipient(),
        new_epoch: probe.clone().recipient(),
        fatal: probe.clone().recipient(),
        left: Some(probe.recipient()),
    };
    let (actor, first) = MembershipActor::new(
        cfg,
        NodeId(1),
        Durable::fresh(Epoch(1)),
        links,
        Arc::new(Metrics::default()),
        AgentClock::new(),
    );
    let addr = actor.start();
    addr.do_send(ExecuteOutputs(first));
    addr
}

/// Advances the paused clock in small steps until `cond` holds or `deadline` of virtual time passed.
async fn advance_until(log: &Log, deadline: Duration, cond: impl Fn(&Log) -> bool) -> bool {
    let step = Duration::from_millis(5);
    let mut waited = Duration::ZERO;
    while waited < deadline {
        if cond(log) {
            return true;
        }
        tokio::time::advance(step).await;
        tokio::task::yield_now().await;
        waited += step;
    }
    cond(log)
}

#[actix_rt::test]
async fn a_lone_node_forms_a_primary_view_after_persisting_and_delivers_its_own_messages() {
    tokio::time::pause();
    let log = Log::default();
    let addr = start(config(&[1]), &log);
    assert!(
        advance_until(&log, Duration::from_secs(2), |l| l.position("record:view(primary)").is_some()).await,
        "no primary view: {:?}",
        log.lines()
    );
    let lines = log.lines();
    assert_eq!(lines.first().map(String::as_str), Some("record:start"), "{lines:?}");
    let persist = log.position("persist").expect("the ballot is persisted");
    let view = log.position("record:view(primary)").expect("view");
    assert!(persist < view, "persisted before the view was installed: {lines:?}");
    assert!(!lines.iter().any(|l| l.starts_with("send:")), "a lone node sends nothing: {lines:?}");

    addr.send(JoinGroup { group: "g".into() }).await.expect("join");
    let id = addr
        .send(Multicast { group: "g".into(), payload: b"hello".to_vec(), delivery: Delivery::Safe })
        .await
        .expect("mailbox")
        .expect("accepted");
    assert_eq!(id.sender.node(), NodeId(1));
    assert!(
        advance_until(&log, Duration::from_secs(1), |l| l.position("app:deliver").is_some()).await,
        "own message not delivered: {:?}",
        log.lines()
    );
    let send = log.position("record:send").expect("send record");
    let deliver = log.position("record:deliver").expect("deliver record");
    assert!(send < deliver);
}

#[actix_rt::test]
async fn without_its_peer_a_node_of_two_probes_it_and_stays_blocked_without_quorum() {
    tokio::time::pause();
    let log = Log::default();
    let _addr = start(config(&[1, 2]), &log);
    assert!(
        advance_until(&log, Duration::from_secs(2), |l| l.position("record:view(non-primary)").is_some())
            .await,
        "no view: {:?}",
        log.lines()
    );
    let lines = log.lines();
    assert!(lines.iter().any(|l| l == "send:2"), "the absent peer is probed: {lines:?}");
    assert!(!lines.iter().any(|l| l == "record:view(primary)"), "one of two is not quorate: {lines:?}");
    assert!(!lines.iter().any(|l| l == "record:unblocked"), "stays blocked: {lines:?}");
}

#[actix_rt::test]
async fn a_clean_leave_of_a_lone_node_is_reported_to_the_supervisor() {
    tokio::time::pause();
    let log = Log::default();
    let addr = start(config(&[1]), &log);
    assert!(
        advance_until(&log, Duration::from_secs(2), |l| l.position("record:view(primary)").is_some()).await
    );
    addr.send(LeaveCluster).await.expect("leave");
    assert!(
        advance_until(&log, Duration::from_millis(500), |l| l.position("left").is_some()).await,
        "{:?}",
        log.lines()
    );
    assert!(log.position("record:stop").is_some(), "a stop record is written: {:?}", log.lines());
}
