//! Identity: nodes, epochs, members, view ids, views and message ids.
//!
//! Every identifier is a newtype so that a node id can never be passed where an epoch is expected.
//! The serde forms are the ones the event log (`shared/spec/event-log.md`) uses: a node id and an epoch
//! are bare integers, a member is `[node, epoch]`, a view id is `{"seq": S, "coord": C}`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A machine slot in the configured node list. Stable, taken from configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct NodeId(pub u32);

/// The incarnation of a node's agent. Strictly increases every time the agent starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Epoch(pub u64);

/// One incarnation of one node: two epochs of a node are two different members.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Member(pub NodeId, pub Epoch);

impl Member {
    /// The node this member runs on.
    pub fn node(self) -> NodeId {
        self.0
    }
    /// The member's epoch.
    pub fn epoch(self) -> Epoch {
        self.1
    }
}

/// A view id: ordered by `seq`, then by `coord` (the node that formed the view).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct ViewId {
    /// Sequence number; strictly increases along every member's history.
    pub seq: u64,
    /// The node that formed the view.
    pub coord: NodeId,
}

/// A position in the total order: the view and the sequence number within it (1-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Seq(pub u64);

/// An installed view: its id, its sorted member list and whether it holds quorum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    /// The view's id.
    pub id: ViewId,
    /// Members, sorted by node id (a node appears at most once).
    pub members: Vec<Member>,
    /// True when the members hold quorum: only primary views deliver application messages.
    pub primary: bool,
}

impl View {
    /// True when `m` is a member of this view.
    pub fn contains(&self, m: Member) -> bool {
        self.members.binary_search(&m).is_ok()
    }
    /// The member of this view that runs on `node`, if any.
    pub fn member_on(&self, node: NodeId) -> Option<Member> {
        self.members.iter().copied().find(|m| m.node() == node)
    }
    /// The sequencer and default coordinator of this view: the member with the lowest node id.
    pub fn leader(&self) -> Option<Member> {
        self.members.first().copied()
    }
}

/// Application-level delivery guarantee of a multicast.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Delivered in the total order as soon as the member has it and everything before it.
    Agreed,
    /// Delivered only once every member of the view has received it (G10).
    Safe,
}

/// A unique message id, written `"<node>.<epoch>.<n>"` in the event log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MsgId {
    /// The sending member.
    pub sender: Member,
    /// The sender's per-epoch counter, starting at 1.
    pub n: u64,
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.sender.0 .0, self.sender.1 .0, self.n)
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{},{}]", self.0 .0, self.1 .0)
    }
}

impl fmt::Display for ViewId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.seq, self.coord.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A hex digest of a payload, as written in `send` and `deliver` events (SHA-256, first 16 bytes).
pub fn digest(payload: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(payload);
    let mut s = String::with_capacity(32);
    for b in &d[..16] {
        s.push_str(&format!("{b:02x}"));
    }
    s
}
