//! Total order within one view: the sequencer's window and every member's receive buffer.
//!
//! The view's leader is its sequencer: members send their messages to it, it numbers them (FIFO per
//! sender, at most `window_msgs`/`window_bytes` above the stable point) and multicasts them. Members
//! deliver in sequence order; a `safe` message waits until it is stable (every member holds it). Members
//! acknowledge cumulatively; the sequencer's stable point is the minimum of the acknowledgements.
//! Messages are kept until they are both stable and delivered, so a member can always serve a
//! retransmission or a flush up to what it acknowledged.

use crate::msg::{DataMsg, OrderedMsg};
use crate::types::{Delivery, Member, View, ViewId};
use std::collections::BTreeMap;

/// One view's ordering state at one member.
#[derive(Debug)]
pub struct Ordering {
    /// The view.
    pub view: ViewId,
    /// The sequencer.
    pub sequencer: Member,
    me: Member,
    members: Vec<Member>,
    msgs: BTreeMap<u64, OrderedMsg>,
    /// Every message up to here is held (or was delivered and trimmed).
    pub received: u64,
    /// Delivered up to here.
    pub delivered: u64,
    /// Known stable up to here.
    pub stable: u64,
    /// Highest sequence number known to exist.
    pub ordered_hint: u64,
    // Sequencer state.
    next_seq: u64,
    acks: BTreeMap<Member, u64>,
    expected: BTreeMap<Member, u64>,
    bytes_above_stable: usize,
    /// Newly ordered messages not yet multicast (sequencer only).
    pub unsent: Vec<OrderedMsg>,
    /// Sequencer only: until this member's first message is ordered, nothing else is.
    gate: Option<Member>,
    stable_moved: bool,
}

impl Ordering {
    /// Fresh ordering state for `view` at member `me`.
    pub fn new(view: &View, me: Member) -> Ordering {
        let sequencer = view.leader().unwrap_or(me);
        Ordering {
            view: view.id,
            sequencer,
            me,
            members: view.members.clone(),
            msgs: BTreeMap::new(),
            received: 0,
            delivered: 0,
            stable: 0,
            ordered_hint: 0,
            next_seq: 1,
            acks: view.members.iter().map(|&m| (m, 0)).collect(),
            expected: view.members.iter().map(|&m| (m, 1)).collect(),
            bytes_above_stable: 0,
            unsent: Vec::new(),
            gate: None,
            stable_moved: false,
        }
    }

    /// Sequencer: order nothing before `first`'s first message (the view's `Sync`).
    pub fn set_gate(&mut self, first: Option<Member>) {
        self.gate = first;
    }

    /// True at the sequencer.
    pub fn is_sequencer(&self) -> bool {
        self.sequencer == self.me
    }

    /// Sequencer: numbers `m` if it is the sender's next message and the window has room.
    /// Returns false when it was not ordered now (duplicate, gap, or full window).
    pub fn order(&mut self, m: DataMsg, window_msgs: usize, window_bytes: usize) -> bool {
        let sender = m.id.sender;
        if self.gate.is_some_and(|g| g != sender) {
            return false;
        }
        let Some(exp) = self.expected.get_mut(&sender) else { return false };
        if m.vseq != *exp {
            return false;
        }
        let size = m.op.size();
        let in_window = (self.next_seq - 1 - self.stable) as usize;
        if in_window >= window_msgs || (self.bytes_above_stable + size > window_bytes && in_window > 0) {
            return false;
        }
        *exp += 1;
        self.gate = None;
        let om = OrderedMsg { seq: self.next_seq, msg: m };
        self.next_seq += 1;
        self.bytes_above_stable += size;
        self.unsent.push(om.clone());
        self.insert(om);
        true
    }

    /// The next vseq the sequencer expects from `sender`.
    pub fn expected_from(&self, sender: Member) -> u64 {
        self.expected.get(&sender).copied().unwrap_or(1)
    }

    /// Inserts a received ordered message; returns true when it was new.
    pub fn insert(&mut self, om: OrderedMsg) -> bool {
        if om.seq <= self.received || self.msgs.contains_key(&om.seq) {
            return false;
        }
        self.ordered_hint = self.ordered_hint.max(om.seq);
        self.msgs.insert(om.seq, om);
        while self.msgs.contains_key(&(self.received + 1)) {
            self.received += 1;
        }
        if self.is_sequencer() {
            // The sequencer's own receipt counts like any member's acknowledgement (in a one-member
            // view it is the only one).
            let me = self.me;
            let received = self.received;
            if self.on_ack(me, received) {
                self.stable_moved = true;
            }
        }
        true
    }

    /// True (once) when the stable point moved without an acknowledgement from another member.
    pub fn take_stable_moved(&mut self) -> bool {
        std::mem::take(&mut self.stable_moved)
    }

    /// The next message that may be delivered now, if any (`limit` caps the sequence number, used by
    /// flushes).
    pub fn next_deliverable(&self, limit: Option<u64>) -> Option<&OrderedMsg> {
        let s = self.delivered + 1;
        if s > self.received || limit.is_some_and(|l| s > l) {
            return None;
        }
        let om = self.msgs.get(&s)?;
        if limit.is_none() && om.msg.delivery == Delivery::Safe && s > self.stable {
            return None;
        }
        Some(om)
    }

    /// Marks the next message delivered and trims what is no longer needed.
    pub fn mark_delivered(&mut self, seq: u64) {
        if seq == self.delivered + 1 {
            self.delivered = seq;
            self.trim();
        }
    }

    /// Learns a stable point (from the sequencer).
    pub fn learn_stable(&mut self, stable: u64) {
        if stable > self.stable {
            self.stable = stable.min(self.ordered_hint.max(self.received));
            self.trim();
        }
    }

    /// Sequencer: records a member's acknowledgement; returns true when the stable point moved.
    pub fn on_ack(&mut self, from: Member, received: u64) -> bool {
        if let Some(a) = self.acks.get_mut(&from) {
            if received > *a {
                *a = received.min(self.next_seq - 1);
            }
        }
        let min = self.acks.values().copied().min().unwrap_or(0);
        if min > self.stable {
            for (_, om) in self.msgs.range(self.stable + 1..=min) {
                self.bytes_above_stable = self.bytes_above_stable.saturating_sub(om.msg.op.size());
            }
            self.stable = min;
            self.trim();
            return true;
        }
        false
    }

    fn trim(&mut self) {
        let upto = self.stable.min(self.delivered);
        while let Some((&s, _)) = self.msgs.first_key_value() {
            if s > upto {
                break;
            }
            self.msgs.remove(&s);
        }
    }

    /// The first gap this member should ask for, if any.
    pub fn missing(&self) -> Option<(u64, u64)> {
        let from = self.received + 1;
        if self.ordered_hint < from {
            return None;
        }
        let to = match self.msgs.range(from..).next() {
            Some((&s, _)) => s - 1,
            None => self.ordered_hint,
        };
        Some((from, to.max(from)))
    }

    /// Held messages in `from..=to` (for retransmission).
    pub fn range(&self, from: u64, to: u64) -> impl Iterator<Item = &OrderedMsg> {
        self.msgs.range(from..=to.max(from)).map(|(_, m)| m)
    }

    /// Sequence numbers of held safe messages above the stable point.
    pub fn safe_above_stable(&self) -> Vec<u64> {
        self.msgs
            .range(self.stable + 1..)
            .filter(|(_, m)| m.msg.delivery == Delivery::Safe)
            .map(|(&s, _)| s)
            .collect()
    }

    /// Highest sequence number ordered (sequencer).
    pub fn ordered(&self) -> u64 {
        self.next_seq - 1
    }

    /// Members of the view.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Messages held in memory (for status and bounds).
    pub fn held(&self) -> usize {
        self.msgs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::Op;
    use crate::types::{Epoch, MsgId, NodeId};

    fn m(n: u32) -> Member {
        Member(NodeId(n), Epoch(1))
    }
    fn view() -> View {
        View { id: ViewId { seq: 1, coord: NodeId(1) }, members: vec![m(1), m(2), m(3)], primary: true }
    }
    fn data(sender: Member, vseq: u64, d: Delivery) -> DataMsg {
        DataMsg {
            id: MsgId { sender, n: vseq },
            vseq,
            delivery: d,
            op: Op::App { group: "g".into(), payload: vec![1] },
        }
    }

    #[test]
    fn sequencer_orders_fifo_per_sender_and_rejects_gaps() {
        let mut o = Ordering::new(&view(), m(1));
        assert!(!o.order(data(m(2), 2, Delivery::Agreed), 10, 1000));
        assert!(o.order(data(m(2), 1, Delivery::Agreed), 10, 1000));
        assert!(o.order(data(m(2), 2, Delivery::Agreed), 10, 1000));
        assert!(!o.order(data(m(2), 2, Delivery::Agreed), 10, 1000), "duplicate");
        assert_eq!(o.ordered(), 2);
    }

    #[test]
    fn window_blocks_until_stable_advances() {
        let mut o = Ordering::new(&view(), m(1));
        assert!(o.order(data(m(2), 1, Delivery::Agreed), 2, 1000));
        assert!(o.order(data(m(2), 2, Delivery::Agreed), 2, 1000));
        assert!(!o.order(data(m(2), 3, Delivery::Agreed), 2, 1000));
        o.on_ack(m(2), 2);
        o.on_ack(m(3), 1);
        assert_eq!(o.stable, 1);
        assert!(o.order(data(m(2), 3, Delivery::Agreed), 2, 1000));
    }

    #[test]
    fn safe_message_waits_for_stability_and_blocks_later_ones() {
        let mut o = Ordering::new(&view(), m(2));
        let s1 = OrderedMsg { seq: 1, msg: data(m(3), 1, Delivery::Safe) };
        let s2 = OrderedMsg { seq: 2, msg: data(m(3), 2, Delivery::Agreed) };
        o.insert(s2);
        assert_eq!(o.received, 0);
        assert_eq!(o.missing(), Some((1, 1)));
        o.insert(s1);
        assert_eq!(o.received, 2);
        assert!(o.next_deliverable(None).is_none());
        o.learn_stable(1);
        assert_eq!(o.next_deliverable(None).map(|m| m.seq), Some(1));
        o.mark_delivered(1);
        assert_eq!(o.next_deliverable(None).map(|m| m.seq), Some(2));
    }
}
