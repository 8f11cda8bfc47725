//! ServiceManagerActor: tells the service manager (systemd, `Type=notify`) how the agent is doing.
//!
//! It owns the [`Notifier`] and is the only sender of notifications:
//!
//! - while the agent starts (the epoch inquiry, which waits for a majority when this node ran before),
//!   `STATUS=starting: ...` and, every [`START_EXTEND_EVERY`], `EXTEND_TIMEOUT_USEC`, so the manager's
//!   start timeout runs out only when the agent stops making these calls, not while it legitimately
//!   waits;
//! - `READY=1` once the epoch is on disk (the composition root returned), the UDP socket is bound (the
//!   transport answers [`GetLocalAddr`] with an address), the client socket exists, and the core has
//!   installed its first view. A view without quorum counts: the agent is then *started, waiting for
//!   quorum*, which its `STATUS=` says (docs/OPERATIONS.md, "Run under systemd");
//! - `STATUS=` whenever the one-line summary changes: the view, whether it is primary, the votes
//!   present and needed, and why applications are blocked ([`status_line`]);
//! - `WATCHDOG=1` after every status answer from the membership, polled every half of the watchdog
//!   interval. The answer has to travel through the membership's mailbox on the agent's one event
//!   loop, so a stalled loop (or a stopped process) stops the pings and the manager kills and restarts
//!   the agent;
//! - `RELOADING=1` and then `READY=1` around a configuration reload, `STOPPING=1` on a clean leave.
//!
//! **Deliberately absent:** no decisions about the cluster, and nothing the agent does depends on the
//! manager receiving these datagrams: a failed send is logged once and ignored.

use crate::messages::{GetStatus, NotifyReloaded, NotifyReloading, NotifyStopping, WatchNode};
use crate::sd_notify::Notifier;
use crate::transport::GetLocalAddr;
use actix::prelude::*;
use cohort::node::Status;
use cohort::{BlockReason, Config, NodeId};
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How often the status is polled when there is no watchdog (or a slower one).
pub const STATUS_EVERY: Duration = Duration::from_secs(1);

/// How often the start timeout is extended while the agent starts.
pub const START_EXTEND_EVERY: Duration = Duration::from_secs(10);

/// By how much each extension moves the start timeout: three missed extensions in a row end it.
pub const START_EXTEND_BY: Duration = Duration::from_secs(30);

/// The status text while the agent starts.
pub const STARTING_STATUS: &str = "starting: asking the cluster which epochs of this node it has seen \
     (a node that ran before waits for a majority of the cluster)";

/// What the actor polls once the node runs.
#[derive(Clone)]
pub struct NodeLinks {
    /// The membership's status.
    pub get_status: Recipient<GetStatus>,
    /// The transport's bound address.
    pub transport: Recipient<GetLocalAddr>,
    /// The client socket, which must exist before `READY=1`.
    pub client_socket: PathBuf,
    /// The core's configuration (for the votes in the status line).
    pub cfg: Arc<Config>,
}

/// The actor. See the module documentation.
pub struct ServiceManagerActor {
    notifier: Arc<Notifier>,
    watchdog: Option<Duration>,
    node: Option<NodeLinks>,
    ready: bool,
    stopping: bool,
    polling: bool,
    last_status: String,
    send_failed: bool,
}

impl ServiceManagerActor {
    /// An actor that notifies through `notifier`, with the manager's watchdog interval if it set one.
    pub fn new(notifier: Notifier, watchdog: Option<Duration>) -> ServiceManagerActor {
        ServiceManagerActor {
            notifier: Arc::new(notifier),
            watchdog,
            node: None,
            ready: false,
            stopping: false,
            polling: false,
            last_status: String::new(),
            send_failed: false,
        }
    }

    fn poll_every(&self) -> Duration {
        self.watchdog.map_or(STATUS_EVERY, |w| (w / 2).clamp(Duration::from_millis(1), STATUS_EVERY))
    }

    fn send(&mut self, assignments: &[(&str, &str)]) {
        match self.notifier.notify(assignments) {
            Ok(()) => self.send_failed = false,
            Err(e) => {
                if !self.send_failed {
                    tracing::warn!(socket = %self.notifier.target(), "cannot notify the service manager: {e}");
                }
                self.send_failed = true;
            }
        }
    }

    fn set_status(&mut self, line: String) {
        if line != self.last_status {
            self.send(&[("STATUS", &line)]);
            self.last_status = line;
        }
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        let Some(links) = self.node.clone() else {
            // Still starting: keep the start timeout from running out while the event loop runs.
            return;
        };
        if self.polling || self.stopping {
            return;
        }
        self.polling = true;
        let wait = self.poll_every();
        let fut = async move {
            let status = tokio::time::timeout(wait, links.get_status.send(GetStatus)).await.ok()?.ok()?;
            let bound = links.transport.send(GetLocalAddr).await.ok().flatten().is_some();
            let socket = std::fs::metadata(&links.client_socket).is_ok_and(|m| m.file_type().is_socket());
            Some((status, bound && socket, links.cfg))
        };
        ctx.spawn(fut.into_actor(self).map(|res, act, _ctx| {
            act.polling = false;
            let Some((status, sockets_bound, cfg)) = res else { return };
            if act.stopping {
                return;
            }
            if act.watchdog.is_some() {
                act.send(&[("WATCHDOG", "1")]);
            }
            let line = status_line(&status, &cfg);
            if !act.ready && sockets_bound && status.view.is_some() {
                act.ready = true;
                tracing::info!(status = %line, "ready: told the service manager");
                act.send(&[("READY", "1"), ("STATUS", &line)]);
                act.last_status = line;
            } else if act.ready {
                act.set_status(line);
            }
        }));
    }
}

impl Actor for ServiceManagerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.set_status(STARTING_STATUS.to_string());
        let extend = START_EXTEND_BY.as_micros().to_string();
        self.send(&[("EXTEND_TIMEOUT_USEC", &extend)]);
        ctx.run_interval(START_EXTEND_EVERY, move |act, _ctx| {
            if act.node.is_none() && !act.stopping {
                act.send(&[("EXTEND_TIMEOUT_USEC", &extend)]);
            }
        });
        ctx.run_interval(self.poll_every(), |act, ctx| act.poll(ctx));
    }
}

impl Handler<WatchNode> for ServiceManagerActor {
    type Result = ();
    fn handle(&mut self, msg: WatchNode, ctx: &mut Context<Self>) {
        self.node = Some(msg.0);
        self.poll(ctx);
    }
}

impl Handler<NotifyReloading> for ServiceManagerActor {
    type Result = ();
    fn handle(&mut self, _msg: NotifyReloading, _ctx: &mut Context<Self>) {
        self.send(&[("RELOADING", "1"), ("STATUS", "reloading the configuration")]);
        self.last_status = String::new();
    }
}

impl Handler<NotifyReloaded> for ServiceManagerActor {
    type Result = ();
    fn handle(&mut self, msg: NotifyReloaded, _ctx: &mut Context<Self>) {
        // The summary stays until the next change of the node's own status line.
        if self.ready {
            self.send(&[("READY", "1"), ("STATUS", &msg.summary)]);
        } else {
            self.send(&[("STATUS", &msg.summary)]);
        }
        self.last_status = msg.summary;
    }
}

impl Handler<NotifyStopping> for ServiceManagerActor {
    type Result = ();
    fn handle(&mut self, msg: NotifyStopping, _ctx: &mut Context<Self>) {
        self.stopping = true;
        self.send(&[("STOPPING", "1"), ("STATUS", &msg.reason)]);
    }
}

fn block_name(b: BlockReason) -> &'static str {
    match b {
        BlockReason::NoQuorum => "no_quorum",
        BlockReason::Fencing => "fencing",
        BlockReason::StatefulMergeWait => "stateful_merge_wait",
        BlockReason::StateTransfer => "state_transfer",
    }
}

/// The one-line status the manager shows (`systemctl status`): the view and its members, primary or
/// not, the votes present and needed, and why applications are blocked. A view without quorum ends
/// with "started, waiting for quorum".
pub fn status_line(status: &Status, cfg: &Config) -> String {
    let expected = cohort::quorum::expected_votes(cfg);
    let needed = if cfg.quorum.two_node { 1 } else { expected / 2 + 1 };
    let mut parts: Vec<String> = Vec::new();
    match &status.view {
        None => parts.push(format!("member {}: no view yet", status.member)),
        Some(v) => {
            let nodes: Vec<NodeId> = v.members.iter().map(|m| m.node()).collect();
            let shown: Vec<String> = nodes.iter().map(|n| n.0.to_string()).collect();
            let present = cohort::quorum::present_votes(cfg, &nodes);
            parts.push(format!(
                "view {} [{}], {}, quorum {present}/{expected} votes (needs {needed})",
                v.id,
                shown.join(" "),
                if status.primary { "primary" } else { "not primary" },
            ));
        }
    }
    if !status.blocked.is_empty() {
        let reasons: Vec<&str> = status.blocked.iter().map(|&b| block_name(b)).collect();
        parts.push(format!("blocked: {}", reasons.join(", ")));
    }
    if status.stalled {
        parts.push("stalled after a pause, waiting for its view to be confirmed".to_string());
    }
    if status.self_fenced {
        parts.push("self-fenced".to_string());
    }
    if !status.pending_fences.is_empty() {
        let pending: Vec<String> = status.pending_fences.iter().map(ToString::to_string).collect();
        parts.push(format!("fencing {}", pending.join(" ")));
    }
    if status.view.is_some() && !status.primary {
        parts.push("started, waiting for quorum".to_string());
    }
    parts.join("; ")
}
