//! Who may use the agent's local sockets, and for what: the principals, the classification of every
//! request, the `SO_PEERCRED` check, and rate-limited log lines about refused or misbehaving clients.
//!
//! # Principals and sockets
//! The agent serves two Unix sockets with the same protocol ([`crate::client_proto`]):
//!
//! - the **client socket** (`api.socket`, mode `api.socket_mode`, 0660 by default) for applications:
//!   any process the file mode lets connect, or, when `api.allowed_uids` or `api.allowed_gids` is set,
//!   only a peer whose uid or (primary, effective) gid is listed;
//! - the **operator socket** (`api.operator_socket`, beside the client socket by default, mode
//!   `api.operator_socket_mode`, 0600) for operators: root, the agent's own uid, and the uids and gids
//!   of `api.operator_allowed_uids` / `api.operator_allowed_gids`. Root and the agent's own user are
//!   always allowed because they can read the key and the agent's memory anyway.
//!
//! The peer's uid and gid come from the kernel (`SO_PEERCRED`, as of `connect`), not from anything the
//! peer says. A refused peer gets one `Error` frame naming its uid and the socket, and is closed.
//!
//! # Requests by class ([`class_of`])
//! | request | class | client socket | operator socket |
//! |---|---|---|---|
//! | `Hello` | session | yes | yes |
//! | `Status`, `Watch` | read-only | yes | yes |
//! | `Join`, `Leave`, `Send`, `ProvideState` | the application's own groups | yes | yes |
//! | `FenceAck` | operator: declares a node fenced, so the others recover its resources (G9) | refused | yes |
//! | `SetLinkFilter` | operator and testing: cuts this node off from peers | refused | only with `testing.link_filter = true` |
//! | `Keys` | operator: the cluster key ring (install, use, remove, list) | refused | yes |
//!
//! An operator command on the client socket gets an `Error` that names the command and the operator
//! socket; the connection stays usable (nothing about the stream is wrong).
//!
//! **Deliberately absent:** supplementary groups (`SO_PEERCRED` carries only the primary gid: list the
//! uid, or make the group the peer's primary one), and any authentication beyond the kernel's word on
//! the peer's identity.

use crate::client_proto::Request;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Which socket a connection came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Principal {
    /// The client socket: applications and the read-only `cohort` commands.
    Application,
    /// The operator socket: `cohort fence ack` and the test bed's link filter.
    Operator,
}

impl Principal {
    /// How logs and errors name the socket.
    pub fn socket_name(self) -> &'static str {
        match self {
            Principal::Application => "client socket",
            Principal::Operator => "operator socket",
        }
    }
}

/// What a request may do, which decides where it is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// `Hello`: opens the session.
    Session,
    /// `Status`, `Watch`: reads only.
    ReadOnly,
    /// `Join`, `Leave`, `Send`, `ProvideState`: the client's own process groups.
    Application,
    /// `FenceAck`: changes fencing (and so what the cluster may recover); `Keys`: the cluster key ring.
    Operator,
    /// `SetLinkFilter`: cuts links; an operator command that exists only when `testing.link_filter` is on.
    OperatorTesting,
}

/// The class of every request. A `match` without a wildcard, so that a new request must be classified.
pub fn class_of(req: &Request) -> Class {
    match req {
        Request::Hello { .. } => Class::Session,
        Request::Status | Request::Watch { .. } => Class::ReadOnly,
        Request::Join { .. }
        | Request::Leave { .. }
        | Request::Send { .. }
        | Request::ProvideState { .. } => Class::Application,
        Request::FenceAck { .. } | Request::Keys { .. } => Class::Operator,
        Request::SetLinkFilter { .. } => Class::OperatorTesting,
    }
}

/// The request's name on the wire, for errors and logs.
pub fn request_name(req: &Request) -> &'static str {
    match req {
        Request::Hello { .. } => "Hello",
        Request::Join { .. } => "Join",
        Request::Leave { .. } => "Leave",
        Request::Send { .. } => "Send",
        Request::ProvideState { .. } => "ProvideState",
        Request::Status => "Status",
        Request::FenceAck { .. } => "FenceAck",
        Request::SetLinkFilter { .. } => "SetLinkFilter",
        Request::Watch { .. } => "Watch",
        Request::Keys { .. } => "Keys",
    }
}

/// The `cohort` command that sends an operator request, for the error that points to it.
fn command_of(req: &Request) -> &'static str {
    match req {
        Request::FenceAck { .. } => " (`cohort fence ack` uses it)",
        Request::Keys { .. } => " (`cohort key` uses it)",
        _ => "",
    }
}

/// Why a request is refused on this connection, or `None` when it may be served.
///
/// `operator_socket` is named in the error of an operator command on the client socket;
/// `link_filter_enabled` is `testing.link_filter`.
pub fn refusal(
    principal: Principal,
    req: &Request,
    operator_socket: &std::path::Path,
    link_filter_enabled: bool,
) -> Option<String> {
    let name = request_name(req);
    match (class_of(req), principal) {
        (Class::Session | Class::ReadOnly | Class::Application, _) => None,
        (Class::Operator | Class::OperatorTesting, Principal::Application) => Some(format!(
            "{name} is an operator command: send it on the operator socket {}{}, not on the client socket",
            operator_socket.display(),
            command_of(req)
        )),
        (Class::Operator, Principal::Operator) => None,
        (Class::OperatorTesting, Principal::Operator) if link_filter_enabled => None,
        (Class::OperatorTesting, Principal::Operator) => Some(format!(
            "{name} is disabled: the link filter exists only for tests and demos (testing.link_filter = true)"
        )),
    }
}

/// The peer's identity as the kernel reports it (`SO_PEERCRED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Effective uid at `connect`.
    pub uid: u32,
    /// Effective (primary) gid at `connect`.
    pub gid: u32,
    /// Process id, when the kernel gave one.
    pub pid: Option<i32>,
}

impl Peer {
    /// The credentials of a connected Unix stream.
    pub fn of(stream: &tokio::net::UnixStream) -> std::io::Result<Peer> {
        let c = stream.peer_cred()?;
        Ok(Peer { uid: c.uid(), gid: c.gid(), pid: c.pid() })
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "uid {} gid {}", self.uid, self.gid)?;
        if let Some(pid) = self.pid {
            write!(f, " pid {pid}")?;
        }
        Ok(())
    }
}

/// Which peers a socket admits.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PeerPolicy {
    /// Always admitted (root and the agent's uid on the operator socket).
    pub always_uids: BTreeSet<u32>,
    /// Admitted uids.
    pub uids: BTreeSet<u32>,
    /// Admitted (primary) gids.
    pub gids: BTreeSet<u32>,
    /// With no uid or gid configured, admit every peer the file mode let connect (the client socket's
    /// default).
    pub open_when_unset: bool,
}

impl PeerPolicy {
    /// The client socket: every peer the file mode lets in, unless `uids` or `gids` is set.
    pub fn client(uids: &[u32], gids: &[u32]) -> PeerPolicy {
        PeerPolicy {
            always_uids: BTreeSet::new(),
            uids: uids.iter().copied().collect(),
            gids: gids.iter().copied().collect(),
            open_when_unset: true,
        }
    }

    /// The operator socket: root, `agent_uid`, and `uids` and `gids`.
    pub fn operator(agent_uid: u32, uids: &[u32], gids: &[u32]) -> PeerPolicy {
        PeerPolicy {
            always_uids: BTreeSet::from([0, agent_uid]),
            uids: uids.iter().copied().collect(),
            gids: gids.iter().copied().collect(),
            open_when_unset: false,
        }
    }

    /// True when `peer` may use the socket.
    pub fn admits(&self, peer: &Peer) -> bool {
        if self.open_when_unset && self.uids.is_empty() && self.gids.is_empty() {
            return true;
        }
        self.always_uids.contains(&peer.uid) || self.uids.contains(&peer.uid) || self.gids.contains(&peer.gid)
    }

    /// Who is admitted, for the refusal's message.
    pub fn describe(&self) -> String {
        let list = |s: &BTreeSet<u32>| s.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
        let mut parts = Vec::new();
        if !self.always_uids.is_empty() || !self.uids.is_empty() {
            let all: BTreeSet<u32> = self.always_uids.union(&self.uids).copied().collect();
            parts.push(format!("uids {}", list(&all)));
        }
        if !self.gids.is_empty() {
            parts.push(format!("gids {}", list(&self.gids)));
        }
        if parts.is_empty() {
            "nobody".to_string()
        } else {
            parts.join(" and ")
        }
    }
}

/// Rate-limits one kind of log line: at most `burst` lines per `window`; the first line after a quiet
/// window says how many were suppressed. A flood of bad clients then costs a few lines a minute, not a
/// full disk.
#[derive(Debug)]
pub struct LogLimiter {
    window: Duration,
    burst: u32,
    start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogLimiter {
    /// At most `burst` lines per `window`.
    pub fn new(burst: u32, window: Duration) -> LogLimiter {
        LogLimiter { window, burst, start: None, logged: 0, suppressed: 0 }
    }

    /// Whether to log a line now; when it returns `Some(n)`, log it and mention the `n` lines suppressed
    /// since the last one logged.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        let fresh = self.start.is_none_or(|s| now.duration_since(s) >= self.window);
        if fresh {
            self.start = Some(now);
            self.logged = 0;
        }
        if self.logged < self.burst {
            self.logged += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn all_requests() -> Vec<Request> {
        use crate::client_proto::PROTOCOL_VERSION;
        use cohort::msg::TransferToken;
        use cohort::{Epoch, Member, NodeId, ViewId};
        vec![
            Request::Hello { client_name: "x".into(), version: PROTOCOL_VERSION },
            Request::Join { group: "g".into() },
            Request::Leave { group: "g".into() },
            Request::Send { group: "g".into(), payload: vec![], safe: false, req: 1 },
            Request::ProvideState {
                group: "g".into(),
                joiner: Member(NodeId(2), Epoch(1)),
                token: TransferToken { view: ViewId { seq: 1, coord: NodeId(1) }, seq: 1 },
                state: vec![],
            },
            Request::Status,
            Request::FenceAck { node: 3 },
            Request::SetLinkFilter { blocked: vec![2] },
            Request::Watch { group: None },
            Request::Keys { op: crate::client_proto::KeyRequest::List },
        ]
    }

    #[test]
    fn only_fence_ack_the_key_ring_and_the_link_filter_are_operator_commands() {
        let op = Path::new("/run/cohort/operator.sock");
        for req in all_requests() {
            let app = refusal(Principal::Application, &req, op, true);
            let operator = refusal(Principal::Operator, &req, op, true);
            assert_eq!(operator, None, "{req:?} on the operator socket");
            match req {
                Request::FenceAck { .. } => assert_eq!(
                    app.as_deref(),
                    Some(
                        "FenceAck is an operator command: send it on the operator socket \
                         /run/cohort/operator.sock (`cohort fence ack` uses it), not on the client socket"
                    )
                ),
                Request::Keys { .. } => assert_eq!(
                    app.as_deref(),
                    Some(
                        "Keys is an operator command: send it on the operator socket \
                         /run/cohort/operator.sock (`cohort key` uses it), not on the client socket"
                    )
                ),
                Request::SetLinkFilter { .. } => {
                    let m = app.expect("refused");
                    assert!(m.starts_with("SetLinkFilter is an operator command"), "{m}");
                    let off = refusal(Principal::Operator, &req, op, false).expect("disabled");
                    assert!(off.contains("testing.link_filter = true"), "{off}");
                }
                _ => assert_eq!(app, None, "{req:?} on the client socket"),
            }
        }
    }

    #[test]
    fn policies_admit_by_uid_or_primary_gid() {
        let peer = |uid, gid| Peer { uid, gid, pid: None };
        let open = PeerPolicy::client(&[], &[]);
        assert!(open.admits(&peer(1234, 1234)));
        let listed = PeerPolicy::client(&[1000], &[50]);
        assert!(listed.admits(&peer(1000, 1)));
        assert!(listed.admits(&peer(7, 50)));
        assert!(!listed.admits(&peer(0, 0)), "root is not implied on the client socket");
        assert_eq!(listed.describe(), "uids 1000 and gids 50");
        let op = PeerPolicy::operator(998, &[], &[]);
        assert!(op.admits(&peer(0, 0)) && op.admits(&peer(998, 998)));
        assert!(!op.admits(&peer(1000, 1000)));
        assert_eq!(op.describe(), "uids 0, 998");
        assert!(PeerPolicy::operator(998, &[1000], &[]).admits(&peer(1000, 1000)));
    }

    #[test]
    fn the_log_limiter_lets_a_burst_through_per_window_and_counts_the_rest() {
        let mut l = LogLimiter::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(l.allow(t0), Some(0));
        assert_eq!(l.allow(t0), Some(0));
        assert_eq!(l.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(l.allow(t0 + Duration::from_secs(2)), None);
        assert_eq!(l.allow(t0 + Duration::from_secs(61)), Some(2));
        assert_eq!(l.allow(t0 + Duration::from_secs(62)), Some(0));
    }
}
