//! The event log records of `shared/spec/event-log.md`, as typed values.
//!
//! The core emits these records as outputs; the agent appends them to `events.jsonl`, the simulator keeps
//! them in memory, and the checker (`crate::checker`) verifies the guarantees over them. Field names are
//! exactly the spec's; fields beyond the spec are additions (the spec allows adding, never renaming).

use crate::types::{Delivery, Epoch, Member, NodeId, ViewId};
use serde::{Deserialize, Serialize};

/// One line of the event log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Wall-clock time of the event, milliseconds since the Unix epoch (simulated time in the simulator).
    pub ts_ms: u64,
    /// The writer's node id.
    pub node: NodeId,
    /// The writer's epoch.
    pub epoch: Epoch,
    /// The event and its fields.
    #[serde(flatten)]
    pub event: Event,
}

impl Record {
    /// The member that wrote this record.
    pub fn member(&self) -> Member {
        Member(self.node, self.epoch)
    }
}

/// Why applications are blocked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockReason {
    /// The member is not in a primary view.
    NoQuorum,
    /// A failed member of the primary view has not been fenced yet, so its recovery is held back.
    Fencing,
    /// This member was caught as a stateful merge and waits for an operator (policy `wait`).
    StatefulMergeWait,
    /// A group this member joined waits for its state transfer.
    StateTransfer,
}

/// What was done about a stateful merge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergeAction {
    /// Refused admission (logged by members that detect it but do not resolve it).
    Refuse,
    /// Fencing was requested (policy `fence`).
    Fence,
    /// The member was told to drop its state: restart or reset with a new epoch (policies `restart`, `reset`).
    Kill,
    /// Left refused until an operator acts (policy `wait`).
    Wait,
}

/// How a fence attempt ended successfully or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FenceMethod {
    /// A fence agent ran and reported the result.
    Agent,
    /// An operator acknowledged the node as fenced (`cohort fence ack`).
    Ack,
    /// The watchdog deadline passed since the member was last heard.
    Watchdog,
    /// The node came back with a higher epoch (where the policy accepts that as proof).
    Restarted,
}

/// The role of this member in a state transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferRole {
    /// This member sent its state.
    Provider,
    /// This member received and applied the state.
    Receiver,
}

/// The kinds of event, with their fields (serde tag `event`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The agent has persisted its new epoch and is about to talk.
    Start {
        /// The software version.
        version: String,
    },
    /// The agent installed a view.
    View {
        /// The view id.
        view: ViewId,
        /// Members, sorted.
        members: Vec<Member>,
        /// True for a primary view.
        primary: bool,
        /// Members new in this view compared with this member's previous view.
        joined: Vec<Member>,
        /// Members of the previous view that left cleanly.
        left: Vec<Member>,
        /// Members of the previous view removed by failure or partition.
        failed: Vec<Member>,
        /// Addition: the view this member installed before this one, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prev: Option<ViewId>,
    },
    /// Applications are blocked from now on.
    Blocked {
        /// Why.
        reason: BlockReason,
    },
    /// The block ended.
    Unblocked {},
    /// An application multicast a message.
    Send {
        /// The process group.
        group: String,
        /// `"<node>.<epoch>.<n>"`.
        msg: String,
        /// Payload size.
        bytes: u64,
        /// `agreed` or `safe`.
        delivery: Delivery,
        /// Hex hash of the payload.
        digest: String,
    },
    /// A message was delivered to the applications on this node.
    Deliver {
        /// The process group.
        group: String,
        /// The message id.
        msg: String,
        /// The sending member.
        sender: Member,
        /// The view it was delivered in.
        view: ViewId,
        /// Hex hash of the delivered payload.
        digest: String,
        /// Addition: the message's position in the view's total order.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        /// Addition: the delivery guarantee it was sent with.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delivery: Option<Delivery>,
        /// Addition: true when the message is held back from this node's application because the
        /// application's state transfer for the group has not completed; it is handed over, in order,
        /// right after the state is applied.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        held: bool,
    },
    /// A process group's membership changed.
    GroupView {
        /// The process group.
        group: String,
        /// The node view in which the change was delivered.
        view: ViewId,
        /// The group's members, sorted.
        members: Vec<Member>,
    },
    /// A removed member came back with its old epoch.
    StatefulMerge {
        /// The stale member.
        member: Member,
        /// The primary view that refused it.
        view: ViewId,
        /// What was done.
        action: MergeAction,
        /// Addition: the configured policy (`fence`, `restart`, `reset`, `wait`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        policy: Option<String>,
    },
    /// This agent learned that it was removed from the primary view.
    RemovedSelf {
        /// The primary view that no longer contains it.
        view: ViewId,
    },
    /// Fencing of a member was requested.
    FenceRequest {
        /// The member to fence.
        target: Member,
        /// Why (`failed`, `stateful_merge`).
        reason: String,
    },
    /// A fence attempt ended.
    FenceResult {
        /// The member.
        target: Member,
        /// True when the member is now known fenced.
        ok: bool,
        /// How.
        method: FenceMethod,
        /// Free text from the agent or the core.
        detail: String,
    },
    /// Recovery for these failed members may proceed.
    Recovered {
        /// The view in which recovery was announced.
        view: ViewId,
        /// The recovered (fenced) members.
        failed: Vec<Member>,
    },
    /// A state transfer ended.
    StateTransfer {
        /// The process group.
        group: String,
        /// This member's role.
        role: TransferRole,
        /// The other side.
        peer: Member,
        /// State size.
        bytes: u64,
        /// True when the state was applied (receiver) or acknowledged (provider).
        ok: bool,
        /// Addition: the point of the total order the state was taken at, `"<view>#<seq>"` (absent
        /// for an empty state a member gives itself). It tells apart several transfers between the
        /// same two members.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        point: Option<String>,
    },
    /// The agent stopped acting on its state (watchdog).
    SelfFence {
        /// Why.
        reason: String,
    },
    /// Clean shutdown.
    Stop {
        /// Why.
        reason: String,
    },
}

impl Record {
    /// Serializes the record as one JSON line without the trailing newline.
    pub fn to_json_line(&self) -> String {
        // Records contain only strings, integers, booleans and sequences: serialization cannot fail.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Parses one JSON line of an event log.
    pub fn from_json_line(line: &str) -> Result<Record, serde_json::Error> {
        serde_json::from_str(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_record_matches_the_spec_field_names() {
        let r = Record {
            ts_ms: 5,
            node: NodeId(1),
            epoch: Epoch(2),
            event: Event::View {
                view: ViewId { seq: 3, coord: NodeId(1) },
                members: vec![Member(NodeId(1), Epoch(2)), Member(NodeId(2), Epoch(1))],
                primary: true,
                joined: vec![],
                left: vec![],
                failed: vec![Member(NodeId(3), Epoch(1))],
                prev: None,
            },
        };
        let line = r.to_json_line();
        assert_eq!(
            line,
            r#"{"ts_ms":5,"node":1,"epoch":2,"event":"view","view":{"seq":3,"coord":1},"members":[[1,2],[2,1]],"primary":true,"joined":[],"left":[],"failed":[[3,1]]}"#
        );
        assert_eq!(Record::from_json_line(&line).expect("parses"), r);
    }

    #[test]
    fn unblocked_is_a_bare_event() {
        let r = Record { ts_ms: 1, node: NodeId(4), epoch: Epoch(9), event: Event::Unblocked {} };
        assert_eq!(r.to_json_line(), r#"{"ts_ms":1,"node":4,"epoch":9,"event":"unblocked"}"#);
    }

    #[test]
    fn unknown_fields_are_ignored_when_reading() {
        let line = r#"{"ts_ms":1,"node":4,"epoch":9,"event":"stop","reason":"shutdown","extra":7}"#;
        let r = Record::from_json_line(line).expect("parses");
        assert_eq!(r.event, Event::Stop { reason: "shutdown".into() });
    }
}
